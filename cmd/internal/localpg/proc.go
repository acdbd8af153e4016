package localpg

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Process is one line of /proc: what the bench's CPU accounting and the
// tests' crash tools need of a process.
type Process struct {
	PID, PPID int
	Comm      string
	// Ticks is its user and system CPU time, in clock ticks (USER_HZ,
	// 100 on Linux).
	Ticks uint64
}

// Processes lists the processes running now (Linux /proc); those that end
// while it reads are left out.
func Processes() []Process {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]Process, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime stime: comm may hold spaces
		// and parentheses, so the fields start after the last ')'.
		s := string(st)
		i := strings.LastIndexByte(s, ')')
		j := strings.IndexByte(s, '(')
		if i < 0 || j < 0 || j > i {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		p := Process{PID: pid, Comm: s[j+1 : i]}
		p.PPID, _ = strconv.Atoi(f[1])
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		stime, _ := strconv.ParseUint(f[12], 10, 64)
		p.Ticks = ut + stime
		out = append(out, p)
	}
	return out
}

// PostmasterPID is the pid in a data directory's postmaster.pid (0 if
// there is none).
func PostmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	return pid
}
