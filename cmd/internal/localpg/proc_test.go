package localpg

import (
	"os"
	"testing"
)

// TestProcesses: the test process is listed with its parent, and its CPU
// time grows as it works.
func TestProcesses(t *testing.T) {
	find := func() Process {
		for _, p := range Processes() {
			if p.PID == os.Getpid() {
				return p
			}
		}
		t.Fatal("this process is not listed")
		return Process{}
	}
	before := find()
	if before.PPID != os.Getppid() || before.Comm == "" {
		t.Fatalf("this process: %+v, want parent %d and a name", before, os.Getppid())
	}
	x := 0
	for i := 0; i < 300_000_000; i++ { // about 0.1-0.3 s of CPU
		x += i ^ (x >> 3)
	}
	if after := find(); after.Ticks <= before.Ticks {
		t.Fatalf("CPU ticks %d then %d (x=%d), want growth", before.Ticks, after.Ticks, x)
	}
}
