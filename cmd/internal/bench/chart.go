package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The chart is drawn with the standard library only (image, image/png):
// one panel per mode, TPS (y, from 0) by client count (x, the measured
// counts evenly spaced), one coloured line per target, and a legend. Text
// uses the 3x5 pixel font below, upper case, drawn at fontScale.

const (
	panelW, panelH = 420, 300
	marginL        = 70 // room for the y labels
	marginR        = 15
	marginT        = 40 // room for the panel title
	marginB        = 45 // room for the x labels
	legendH        = 40
	fontScale      = 2
)

// targetColour is each target's line colour; other targets get grey.
func targetColour(name string) color.RGBA {
	switch name {
	case "direct":
		return color.RGBA{0x44, 0x44, 0x44, 0xff}
	case "pgbouncer":
		return color.RGBA{0x1f, 0x77, 0xb4, 0xff}
	case "pgshard-1":
		return color.RGBA{0xd6, 0x27, 0x28, 0xff}
	case "pgshard-2":
		return color.RGBA{0x2c, 0xa0, 0x2c, 0xff}
	}
	return color.RGBA{0x99, 0x99, 0x99, 0xff}
}

// writeChart writes DIR/pgbench-<timestamp>.png and returns its path.
func writeChart(dir string, now time.Time, sum []summary) (string, error) {
	img := renderChart(sum)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "pgbench-"+now.Format("20060102-150405")+".png")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, f.Close()
}

// renderChart draws the summary; modes, client counts and targets appear
// in the order they ran.
func renderChart(sum []summary) *image.RGBA {
	var modes, targets []string
	var clients []int
	for _, s := range sum {
		if !slices.Contains(modes, s.Mode) {
			modes = append(modes, s.Mode)
		}
		if !slices.Contains(targets, s.Target) {
			targets = append(targets, s.Target)
		}
		if !slices.Contains(clients, s.Clients) {
			clients = append(clients, s.Clients)
		}
	}
	slices.Sort(clients)
	w := max(1, len(modes)) * panelW
	h := panelH + legendH
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	for i, m := range modes {
		drawPanel(img, image.Rect(i*panelW, 0, (i+1)*panelW, panelH), m, clients, targets, sum)
	}
	// Legend: a short line and the name of each target.
	x := marginL
	y := panelH + legendH/2
	for _, t := range targets {
		c := targetColour(t)
		for dy := -1; dy <= 1; dy++ {
			line(img, x, y+dy, x+24, y+dy, c)
		}
		x += 32
		x = text(img, x, y-5*fontScale/2, t, color.Black) + 24
	}
	return img
}

func drawPanel(img *image.RGBA, r image.Rectangle, mode string, clients []int, targets []string, sum []summary) {
	plot := image.Rect(r.Min.X+marginL, r.Min.Y+marginT, r.Max.X-marginR, r.Max.Y-marginB)
	grey := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	text(img, plot.Min.X, r.Min.Y+12, mode+" - TPS by clients", color.Black)

	top := 0.0
	for _, s := range sum {
		if s.Mode == mode && !math.IsNaN(s.TPS) {
			top = max(top, s.TPS)
		}
	}
	step := niceStep(top / 4)
	top = math.Ceil(top/step) * step
	if top <= 0 {
		top, step = 1, 1
	}
	yOf := func(v float64) int { return plot.Max.Y - int(v/top*float64(plot.Dy())) }
	xOf := func(i int) int {
		if len(clients) == 1 {
			return plot.Min.X + plot.Dx()/2
		}
		return plot.Min.X + 20 + i*(plot.Dx()-40)/(len(clients)-1)
	}
	// Grid and y labels.
	for v := 0.0; v <= top+step/2; v += step {
		y := yOf(v)
		line(img, plot.Min.X, y, plot.Max.X, y, grey)
		lbl := strconv.FormatFloat(v, 'f', 0, 64)
		text(img, plot.Min.X-6-textWidth(lbl), y-5*fontScale/2, lbl, color.Black)
	}
	// Axes and x labels.
	line(img, plot.Min.X, plot.Min.Y, plot.Min.X, plot.Max.Y, color.Black)
	line(img, plot.Min.X, plot.Max.Y, plot.Max.X, plot.Max.Y, color.Black)
	for i, c := range clients {
		x := xOf(i)
		line(img, x, plot.Max.Y, x, plot.Max.Y+4, color.Black)
		lbl := strconv.Itoa(c)
		text(img, x-textWidth(lbl)/2, plot.Max.Y+8, lbl, color.Black)
	}
	text(img, plot.Min.X+plot.Dx()/2-textWidth("clients")/2, plot.Max.Y+26, "clients", color.Black)
	// One line per target, with a square on each point.
	for _, t := range targets {
		c := targetColour(t)
		px, py := -1, -1
		for i, n := range clients {
			var tps = math.NaN()
			for _, s := range sum {
				if s.Mode == mode && s.Target == t && s.Clients == n {
					tps = s.TPS
				}
			}
			if math.IsNaN(tps) {
				px = -1
				continue
			}
			x, y := xOf(i), yOf(tps)
			if px >= 0 {
				for d := -1; d <= 1; d++ {
					line(img, px, py+d, x, y+d, c)
				}
			}
			draw.Draw(img, image.Rect(x-3, y-3, x+4, y+4), image.NewUniform(c), image.Point{}, draw.Src)
			px, py = x, y
		}
	}
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// line draws a straight line from (x0,y0) to (x1,y1) (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			x0 += sx
		} else {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// font3x5 is a 3-wide, 5-high pixel font: each glyph is 5 rows of 3 bits,
// most significant bit on the left. Lower-case text is drawn upper case;
// characters it lacks are drawn as blanks.
var font3x5 = map[rune][5]uint8{
	'0': {7, 5, 5, 5, 7}, '1': {2, 6, 2, 2, 7}, '2': {7, 1, 7, 4, 7}, '3': {7, 1, 3, 1, 7},
	'4': {5, 5, 7, 1, 1}, '5': {7, 4, 7, 1, 7}, '6': {7, 4, 7, 5, 7}, '7': {7, 1, 1, 2, 2},
	'8': {7, 5, 7, 5, 7}, '9': {7, 5, 7, 1, 7},
	'A': {2, 5, 7, 5, 5}, 'B': {6, 5, 6, 5, 6}, 'C': {3, 4, 4, 4, 3}, 'D': {6, 5, 5, 5, 6},
	'E': {7, 4, 6, 4, 7}, 'F': {7, 4, 6, 4, 4}, 'G': {3, 4, 5, 5, 3}, 'H': {5, 5, 7, 5, 5},
	'I': {7, 2, 2, 2, 7}, 'J': {1, 1, 1, 5, 2}, 'K': {5, 5, 6, 5, 5}, 'L': {4, 4, 4, 4, 7},
	'M': {5, 7, 7, 5, 5}, 'N': {6, 5, 5, 5, 5}, 'O': {2, 5, 5, 5, 2}, 'P': {6, 5, 6, 4, 4},
	'Q': {2, 5, 5, 6, 3}, 'R': {6, 5, 6, 5, 5}, 'S': {3, 4, 2, 1, 6}, 'T': {7, 2, 2, 2, 2},
	'U': {5, 5, 5, 5, 7}, 'V': {5, 5, 5, 5, 2}, 'W': {5, 5, 7, 7, 5}, 'X': {5, 5, 2, 5, 5},
	'Y': {5, 5, 2, 2, 2}, 'Z': {7, 1, 2, 4, 7},
	'-': {0, 0, 7, 0, 0}, '.': {0, 0, 0, 0, 2}, ':': {0, 2, 0, 2, 0}, '/': {1, 1, 2, 4, 4},
	'(': {1, 2, 2, 2, 1}, ')': {4, 2, 2, 2, 4}, '_': {0, 0, 0, 0, 7}, ',': {0, 0, 0, 2, 4},
}

// glyphAdvance is the width of one character and its gap, in pixels.
const glyphAdvance = 4 * fontScale

func textWidth(s string) int { return len([]rune(s))*glyphAdvance - fontScale }

// text draws s with its top-left corner at (x, y) and returns the x after it.
func text(img *image.RGBA, x, y int, s string, c color.Color) int {
	u := image.NewUniform(c)
	for _, r := range strings.ToUpper(s) {
		g := font3x5[r]
		for row, bits := range g {
			for col := 0; col < 3; col++ {
				if bits&(4>>col) != 0 {
					px, py := x+col*fontScale, y+row*fontScale
					draw.Draw(img, image.Rect(px, py, px+fontScale, py+fontScale), u, image.Point{}, draw.Src)
				}
			}
		}
		x += glyphAdvance
	}
	return x
}
