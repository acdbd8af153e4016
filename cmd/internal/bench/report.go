package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// summary is one row of the table: the medians of one target's rounds.
type summary struct {
	Mode        string
	PgbenchMode string
	Clients     int
	Target      string
	Runs, OK    int     // rounds run, rounds that succeeded
	TPS         float64 // median over the successful rounds
	LatencyMS   float64 // median of the rounds' mean latencies
	Spread      float64 // (max-min)/median TPS: the rounds' disagreement
	VsDirect    float64 // TPS / direct's TPS; NaN if unknown
	VsBouncer   float64 // TPS / pgbouncer's TPS; NaN if unknown
	CPUPer1k    float64 // median CPU s per 1,000 transactions; NaN if not measured
	FirstErr    string
}

type rowKey struct {
	mode    string
	clients int
	target  string
}

// summarise groups runs by mode, clients and target, in the order they ran,
// takes medians and computes the ratios.
func summarise(runs []sample, o options) []summary {
	var order []rowKey
	groups := map[rowKey][]sample{}
	for _, r := range runs {
		k := rowKey{r.Mode, r.Clients, r.Target}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	var out []summary
	byKey := map[rowKey]*summary{}
	for _, k := range order {
		g := groups[k]
		s := summary{Mode: k.mode, PgbenchMode: g[0].PgbenchMode, Clients: k.clients, Target: k.target,
			Runs: len(g), TPS: math.NaN(), LatencyMS: math.NaN(), Spread: math.NaN(), CPUPer1k: math.NaN()}
		var tps, lat, cpu []float64
		for _, r := range g {
			if r.Err != "" {
				if s.FirstErr == "" {
					s.FirstErr = r.Err
				}
				continue
			}
			s.OK++
			tps = append(tps, r.TPS)
			lat = append(lat, r.LatencyMS)
			if c := r.CPUPer1k(); c >= 0 {
				cpu = append(cpu, c)
			}
		}
		if len(tps) > 0 {
			s.TPS, s.LatencyMS = median(tps), median(lat)
			if s.TPS > 0 {
				s.Spread = (slices.Max(tps) - slices.Min(tps)) / s.TPS
			}
		}
		if len(cpu) > 0 {
			s.CPUPer1k = median(cpu)
		}
		out = append(out, s)
	}
	for i := range out {
		byKey[rowKey{out[i].Mode, out[i].Clients, out[i].Target}] = &out[i]
	}
	for i := range out {
		s := &out[i]
		s.VsDirect, s.VsBouncer = math.NaN(), math.NaN()
		if d := byKey[rowKey{s.Mode, s.Clients, "direct"}]; d != nil && d.TPS > 0 {
			s.VsDirect = s.TPS / d.TPS
		}
		if b := byKey[rowKey{s.Mode, s.Clients, "pgbouncer"}]; b != nil && b.TPS > 0 {
			s.VsBouncer = s.TPS / b.TPS
		}
	}
	return out
}

// median of a non-empty slice (the mean of the middle two for even sizes).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// printTable writes the summary as a Markdown table, aligned for terminals.
func printTable(w io.Writer, sum []summary, o options, loadStart, loadEnd string) {
	fmt.Fprintf(w, "pgbench -S (select-only), scale %d, -T %d s, -j %d, %d round(s) per cell, targets interleaved; medians.\n",
		o.scale, int(o.duration.Seconds()), o.jobs, o.rounds)
	fmt.Fprintf(w, "Pool size %d for PgBouncer (transaction mode) and pgshard (transaction mode). Load average %s at start, %s at end.\n\n",
		poolSize, loadStart, loadEnd)
	header := []string{"mode", "clients", "target", "TPS", "latency ms", "spread", "vs direct", "vs pgbouncer", "CPU s/1k tx"}
	rows := [][]string{header}
	footnote, failed := false, false
	for _, s := range sum {
		target := s.Target
		if s.PgbenchMode != s.Mode {
			target += " *"
			footnote = true
		}
		ok := ""
		if s.OK < s.Runs {
			ok = fmt.Sprintf(" (%d/%d ok)", s.OK, s.Runs)
			failed = true
		}
		rows = append(rows, []string{
			s.Mode, strconv.Itoa(s.Clients), target,
			num(s.TPS, 0) + ok, num(s.LatencyMS, 3), pct(s.Spread),
			ratio(s.VsDirect, s.Target == "direct"), ratio(s.VsBouncer, s.Target == "pgbouncer"),
			num(s.CPUPer1k, 3),
		})
	}
	writeTable(w, rows, 3)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "spread: (max-min)/median TPS over the rounds. CPU s/1k tx: user+system CPU seconds of the pooler process per 1,000 transactions (connection setup included).")
	if footnote {
		fmt.Fprintln(w, "* PgBouncer 1.18 does not support -M prepared in transaction mode (1.21+ does): its prepared rows are -M extended runs, and \"vs pgbouncer\" in prepared mode compares with that.")
	}
	if failed {
		fmt.Fprintln(w, "Some runs failed; the medians are over the rounds that succeeded. First error per cell:")
		for _, s := range sum {
			if s.FirstErr != "" {
				fmt.Fprintf(w, "  %s c=%d %s: %s\n", s.Mode, s.Clients, s.Target, firstLine(s.FirstErr))
			}
		}
	}
}

func num(v float64, prec int) string {
	if math.IsNaN(v) || v < 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", v*100)
}

func ratio(v float64, self bool) string {
	if self || math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// writeCSV writes DIR/pgbench-<timestamp>.csv (the summary) and the raw
// runs next to it, and returns the summary's path.
func writeCSV(dir string, now time.Time, sum []summary, runs []sample) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "pgbench-"+now.Format("20060102-150405")+".csv")
	sumRows := [][]string{{"mode", "pgbench_mode", "clients", "target", "rounds", "ok_rounds",
		"median_tps", "median_latency_ms", "tps_spread", "ratio_to_direct", "ratio_to_pgbouncer",
		"cpu_s_per_1k_tx", "first_error"}}
	for _, s := range sum {
		sumRows = append(sumRows, []string{s.Mode, s.PgbenchMode, strconv.Itoa(s.Clients), s.Target,
			strconv.Itoa(s.Runs), strconv.Itoa(s.OK), csvNum(s.TPS, 2), csvNum(s.LatencyMS, 4),
			csvNum(s.Spread, 4), csvNum(s.VsDirect, 4), csvNum(s.VsBouncer, 4), csvNum(s.CPUPer1k, 5),
			firstLine(s.FirstErr)})
	}
	runRows := [][]string{{"mode", "pgbench_mode", "clients", "target", "round", "tps", "latency_ms",
		"transactions", "failed", "cpu_s", "cpu_s_per_1k_tx", "error"}}
	for _, r := range runs {
		runRows = append(runRows, []string{r.Mode, r.PgbenchMode, strconv.Itoa(r.Clients), r.Target,
			strconv.Itoa(r.Round), csvNum(r.TPS, 2), csvNum(r.LatencyMS, 4),
			strconv.FormatInt(r.Transactions, 10), strconv.FormatInt(r.Failed, 10),
			csvNum(r.CPU, 2), csvNum(r.CPUPer1k(), 5), firstLine(r.Err)})
	}
	if err := writeCSVFile(path, sumRows); err != nil {
		return "", err
	}
	return path, writeCSVFile(runsPath(path), runRows)
}

func runsPath(summaryPath string) string {
	return strings.TrimSuffix(summaryPath, ".csv") + "-runs.csv"
}

// csvNum leaves unknown values (NaN, negative) empty.
func csvNum(v float64, prec int) string {
	if math.IsNaN(v) || v < 0 {
		return ""
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func writeCSVFile(path string, rows [][]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	if err := w.WriteAll(rows); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// writeTable prints rows (the first is the header) as a Markdown table,
// the first left columns left-aligned and the others (numbers)
// right-aligned, widths counted in runes.
func writeTable(w io.Writer, rows [][]string, left int) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i >= left {
				fmt.Fprintf(&b, " %s%s |", pad, c)
			} else {
				fmt.Fprintf(&b, " %s%s |", c, pad)
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(rows[0])
	sep := make([]string, len(widths))
	for i := range sep {
		sep[i] = strings.Repeat("-", widths[i])
	}
	line(sep)
	for _, r := range rows[1:] {
		line(r)
	}
}
