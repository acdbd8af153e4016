package sqlparse

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

const warmProbe = "WITH x AS (SELECT a, count(*) FROM t1 JOIN t2 USING (a) WHERE a = ANY($1) GROUP BY a) " +
	"UPDATE t3 SET b = b + 1 FROM x WHERE t3.a = x.a AND t3.c IS NOT NULL RETURNING *"

// TestWarm times the first statement of a fresh process with and without
// Warm (in child processes: the set-up it avoids happens once a process).
func TestWarm(t *testing.T) {
	if mode := os.Getenv("PGSHARD_WARM_CHILD"); mode != "" {
		if mode == "warm" {
			Warm()
		}
		start := time.Now()
		if _, err := Analyze(warmProbe); err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("\nFIRST " + strconv.FormatInt(time.Since(start).Microseconds(), 10) + "\n")
		return
	}
	first := func(mode string) time.Duration {
		best := time.Hour
		for range 3 {
			cmd := exec.Command(os.Args[0], "-test.run=^TestWarm$", "-test.count=1")
			cmd.Env = append(os.Environ(), "PGSHARD_WARM_CHILD="+mode)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s child: %v\n%s", mode, err, out)
			}
			var us int64
			for _, line := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(line, "FIRST "); ok {
					us, _ = strconv.ParseInt(v, 10, 64)
				}
			}
			best = min(best, time.Duration(us)*time.Microsecond)
		}
		return best
	}
	cold, warm := first("cold"), first("warm")
	t.Logf("first statement of a process: %v cold, %v after Warm (best of 3)", cold, warm)
	if warm*3 > cold {
		t.Errorf("Warm saved too little: %v cold, %v warm", cold, warm)
	}
}
