package main

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// pgbench15Output is the report of `pgbench -S -n -M prepared -c 16 -j 2
// -T 3` from pgbench 15.18.
const pgbench15Output = `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: prepared
number of clients: 16
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 61234
number of failed transactions: 0 (0.000%)
latency average = 0.781 ms
initial connection time = 45.120 ms
tps = 20478.123456 (without initial connection time)
`

func TestParsePgbench(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    pgbenchResult
		wantErr bool
	}{
		{"pgbench 15", pgbench15Output, pgbenchResult{TPS: 20478.123456, LatencyMS: 0.781, Transactions: 61234}, false},
		{"failed transactions", "number of transactions actually processed: 10\nnumber of failed transactions: 3 (23.077%)\nlatency average = 1.5 ms\ntps = 3.3 (without initial connection time)\n",
			pgbenchResult{TPS: 3.3, LatencyMS: 1.5, Transactions: 10, Failed: 3}, false},
		{"no tps line (aborted)", "pgbench: error: client 0 aborted in command 1\nlatency average = 1.0 ms\n", pgbenchResult{LatencyMS: 1}, true},
		{"empty", "", pgbenchResult{}, true},
		{"nothing completed", "duration: 2 s\nnumber of transactions actually processed: 0\nnumber of failed transactions: 0 (NaN%)\n", pgbenchResult{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePgbench(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name string
		stat string
		want float64
	}{
		{"plain", "1234 (pgshard) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0", 3.0},
		{"name with spaces and parens", "99 (a b) c)) R 1 99 99 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 0 0", 0.1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.stat), 100)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := parseStatCPU([]byte("1 (x) S 1 2"), 100); err == nil {
		t.Error("short line: want an error")
	}
}

func TestSummarise(t *testing.T) {
	mk := func(mode, target string, round int, tps, cpu float64, err string) sample {
		return sample{Mode: mode, PgbenchMode: pgbenchMode(target, mode), Clients: 16, Target: target, Round: round,
			pgbenchResult: pgbenchResult{TPS: tps, LatencyMS: 16 / tps * 1000, Transactions: int64(tps * 10)}, CPU: cpu, Err: err}
	}
	runs := []sample{
		mk("prepared", "direct", 1, 1000, -1, ""), mk("prepared", "pgbouncer", 1, 800, 1, ""), mk("prepared", "pgshard", 1, 400, 2, ""),
		mk("prepared", "direct", 2, 1200, -1, ""), mk("prepared", "pgbouncer", 2, 900, 1, ""), mk("prepared", "pgshard", 2, 0, 0, "boom"),
		mk("prepared", "direct", 3, 1100, -1, ""), mk("prepared", "pgbouncer", 3, 1000, 1, ""), mk("prepared", "pgshard", 3, 600, 4, ""),
	}
	sum := summarise(runs, options{rounds: 3, duration: 10 * time.Second})
	if len(sum) != 3 {
		t.Fatalf("%d rows, want 3", len(sum))
	}
	d, b, s := sum[0], sum[1], sum[2]
	if d.Target != "direct" || d.TPS != 1100 || !math.IsNaN(d.CPUPer1k) {
		t.Errorf("direct: %+v", d)
	}
	if b.PgbenchMode != "extended" || b.TPS != 900 || math.Abs(b.VsDirect-900.0/1100) > 1e-9 {
		t.Errorf("pgbouncer: %+v", b)
	}
	// pgshard: round 2 failed, so the median is over 400 and 600.
	if s.OK != 2 || s.TPS != 500 || s.VsBouncer != 500.0/900 || s.FirstErr != "boom" {
		t.Errorf("pgshard: %+v", s)
	}
	// CPU per 1k tx: 2 s / 4000 tx and 4 s / 6000 tx → 0.5 and 0.667.
	if want := (0.5 + 4.0/6000*1000) / 2; math.Abs(s.CPUPer1k-want) > 1e-9 {
		t.Errorf("pgshard CPU per 1k = %v, want %v", s.CPUPer1k, want)
	}
}

func TestParseFlagsQuick(t *testing.T) {
	o, err := parseFlags([]string{"-quick"})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 3*time.Second || o.rounds != 1 || len(o.clients) != 1 || o.clients[0] != 16 || len(o.modes) != 3 {
		t.Errorf("-quick: %+v", o)
	}
	o, err = parseFlags([]string{"-quick", "-clients", "1,64", "-duration", "5s"})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 5*time.Second || len(o.clients) != 2 {
		t.Errorf("-quick with explicit flags: %+v", o)
	}
	for _, bad := range [][]string{{"-modes", "fast"}, {"-clients", "0"}, {"-duration", "1500ms"}, {"-clients", "500"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v: want an error", bad)
		}
	}
}

func TestWriteChart(t *testing.T) {
	var sum []summary
	for _, mode := range []string{"simple", "prepared"} {
		for i, target := range []string{"direct", "pgbouncer", "pgshard-1", "pgshard-2"} {
			for j, c := range []int{1, 16, 64} {
				sum = append(sum, summary{Mode: mode, Clients: c, Target: target, TPS: float64(1000*(j+1)*(5+i)) + 123})
			}
		}
	}
	sum = append(sum, summary{Mode: "simple", Clients: 1, Target: "other", TPS: math.NaN()})
	dir := t.TempDir()
	if d := os.Getenv("BENCH_CHART_DIR"); d != "" {
		dir = d
	}
	path, err := writeChart(dir, time.Unix(0, 0), sum)
	if err != nil {
		t.Fatal(err)
	}
	img := renderChart(sum)
	if got, want := img.Bounds().Dx(), 2*panelW; got != want {
		t.Errorf("width %d, want %d (one panel per mode)", got, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() < 1000 {
		t.Errorf("chart %s: %v, %v", path, fi, err)
	}
}

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	writeTable(&b, [][]string{{"query", "mean µs", "ratio"}, {"count(*)", "1200", "2.10"}, {"x", "7", "-"}}, 1)
	want := "| query    | mean µs | ratio |\n" +
		"| -------- | ------- | ----- |\n" +
		"| count(*) |    1200 |  2.10 |\n" +
		"| x        |       7 |     - |\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}
