package pool

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPauseIsNotShardDown: a probe whose deadline passes while the process
// is stopped (SIGSTOP) does not mark the shard down; one whose deadline
// passes while the process runs does. The probe runs in a child process
// (this test binary again) that the test stops and continues.
func TestPauseIsNotShardDown(t *testing.T) {
	if os.Getenv("PGSHARD_PAUSE_CHILD") == "1" {
		pauseChild()
		return
	}
	for _, tc := range []struct {
		freeze bool
		want   string
	}{
		{true, "unknown"},
		{false, "down"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPauseIsNotShardDown$")
		cmd.Env = append(os.Environ(), "PGSHARD_PAUSE_CHILD=1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewScanner(out)
		var health string
		for r.Scan() {
			line := r.Text()
			if line == "probing" && tc.freeze {
				// The probe's 1 s deadline passes while the child is stopped.
				_ = cmd.Process.Signal(syscall.SIGSTOP)
				time.Sleep(2500 * time.Millisecond)
				_ = cmd.Process.Signal(syscall.SIGCONT)
			}
			if s, ok := strings.CutPrefix(line, "health "); ok {
				health = s
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("freeze %v: child: %v", tc.freeze, err)
		}
		if health != tc.want {
			t.Errorf("freeze %v: shard %q after the probe timed out, want %q", tc.freeze, health, tc.want)
		}
	}
}

// pauseChild probes a listener that never answers, with a 1 s timeout,
// and prints the pool's view of the shard.
func pauseChild() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	p, err := New(Options{Shard: "s0", DSN: fmt.Sprintf("postgres://app:app@%s/app?sslmode=disable", l.Addr()), Size: 1, ConnectTimeout: time.Second})
	if err != nil {
		panic(err)
	}
	time.Sleep(3 * pauseTick) // the pause watcher has ticked
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		done <- p.Probe(ctx)
	}()
	time.Sleep(20 * time.Millisecond) // dialled: the server hangs
	fmt.Println("probing")
	if err := <-done; err == nil {
		panic("probe of a silent server succeeded")
	}
	fmt.Println("health", p.Health().State)
}
