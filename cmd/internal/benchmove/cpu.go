package main

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
)

// cpuMeter samples the CPU time of every process on the machine from
// /proc every 100 ms and adds each process's growth to its class: a
// Postgres server (the postmaster and its children, by the postmaster's
// pid), pgshard, pgbench, this process (the Mover and the probes), other.
// On 2 cores shared with the load the move's rate is set by the CPU it
// spends, so the bench prints how much each side of the comparison spent.
type cpuMeter struct {
	servers map[int]string // postmaster pid -> instance name

	mu     sync.Mutex
	last   map[int]uint64 // pid -> utime+stime, in clock ticks
	totals map[string]float64
	stop   chan struct{}
	done   chan struct{}
}

// clockTicks is USER_HZ, 100 on Linux.
const clockTicks = 100

func newCPUMeter(servers map[int]string) *cpuMeter {
	m := &cpuMeter{servers: servers, last: map[int]uint64{}, totals: map[string]float64{}, stop: make(chan struct{}), done: make(chan struct{})}
	m.sample()
	go func() {
		defer close(m.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
	return m
}

func (m *cpuMeter) close() {
	close(m.stop)
	<-m.done
}

// snapshot returns the CPU seconds per class so far (a sample first).
func (m *cpuMeter) snapshot() map[string]float64 {
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]float64, len(m.totals))
	for k, v := range m.totals {
		out[k] = v
	}
	return out
}

func (m *cpuMeter) sample() {
	procs := localpg.Processes()
	self := os.Getpid()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range procs {
		prev, seen := m.last[p.PID]
		m.last[p.PID] = p.Ticks
		if !seen || p.Ticks <= prev {
			continue // a process first seen counts from here
		}
		class := "other"
		switch {
		case m.servers[p.PID] != "":
			class = m.servers[p.PID]
		case m.servers[p.PPID] != "":
			class = m.servers[p.PPID]
		case p.PID == self:
			class = "bench-move"
		case p.Comm == "pgshard" || p.Comm == "pgbench":
			class = p.Comm
		}
		m.totals[class] += float64(p.Ticks-prev) / clockTicks
	}
}

// cpuColumns are the classes printed, in order (the servers first).
func cpuColumns(servers map[int]string) []string {
	var cols []string
	for _, name := range servers {
		cols = append(cols, name)
	}
	slices.Sort(cols)
	return append(cols, "pgshard", "pgbench", "bench-move", "other")
}

// cpuWindow is one interval's CPU seconds per class.
type cpuWindow struct {
	name string
	took time.Duration
	cpu  map[string]float64
}

func diffCPU(a, b map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range b {
		out[k] = v - a[k]
	}
	return out
}

// printCPU prints the windows; "above load" is a window's total less what
// the load window spent per second, times its length.
func printCPU(cols []string, load cpuWindow, ws []cpuWindow) {
	fmt.Printf("\nCPU seconds by process (sampled from /proc every 100 ms; 2 cores = 2 CPU-s per second):\n")
	fmt.Printf("%-36s", "")
	for _, c := range cols {
		fmt.Printf(" %10s", c)
	}
	fmt.Printf(" %8s %11s\n", "total", "above load")
	total := func(w cpuWindow) float64 {
		t := 0.0
		for _, v := range w.cpu {
			t += v
		}
		return t
	}
	rate := total(load) / load.took.Seconds()
	for _, w := range append([]cpuWindow{load}, ws...) {
		fmt.Printf("%-36s", fmt.Sprintf("%s (%.1f s)", w.name, w.took.Seconds()))
		for _, c := range cols {
			fmt.Printf(" %10.2f", w.cpu[c])
		}
		fmt.Printf(" %8.2f %11.2f\n", total(w), total(w)-rate*w.took.Seconds())
	}
}
