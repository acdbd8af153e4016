package localpg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pgUser is the OS account the server binaries run as when we are root.
type pgUser struct {
	name string
	uid  int
	gid  int
	gids []int // all groups, primary included
}

// runner runs Postgres server binaries, as the postgres OS user when we are
// root (Postgres refuses to run as root) and as ourselves otherwise.
type runner struct {
	binDir  string
	user    *pgUser // nil: run as the caller
	runuser string  // path of runuser(1) when user != nil
}

func newRunner(binDir string) (*runner, error) {
	if _, err := os.Stat(filepath.Join(binDir, "pg_ctl")); err != nil {
		return nil, fmt.Errorf("postgres server binaries not found in %s (set the bin dir): %w", binDir, err)
	}
	r := &runner{binDir: binDir}
	if os.Geteuid() != 0 {
		return r, nil
	}
	u, err := lookupPGUser("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, so the servers must run as the postgres OS user: %w", err)
	}
	ru, err := exec.LookPath("runuser")
	if err != nil {
		return nil, fmt.Errorf("running as root needs runuser(1) to start postgres as %s: %w", u.name, err)
	}
	r.user, r.runuser = u, ru
	return r, nil
}

func lookupPGUser(name string) (*pgUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	pu := &pgUser{name: name}
	if pu.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	if pu.gid, err = strconv.Atoi(u.Gid); err != nil {
		return nil, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
	}
	pu.gids = []int{pu.gid}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.Atoi(s); err == nil {
				pu.gids = append(pu.gids, g)
			}
		}
	}
	return pu, nil
}

// chown gives path to the postgres user (no-op when not root).
func (r *runner) chown(path string) error {
	if r.user == nil {
		return nil
	}
	if err := os.Chown(path, r.user.uid, r.user.gid); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, r.user.name, err)
	}
	return nil
}

// command builds the command for a server binary. It runs in its own
// process group, and cancelling ctx kills the whole group (initdb's
// bootstrap backends included). A postmaster started by pg_ctl escapes the
// group (pg_ctl calls setsid), so cancelling never kills a running server.
func (r *runner) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	path := filepath.Join(r.binDir, prog)
	var cmd *exec.Cmd
	if r.user != nil {
		cmd = exec.CommandContext(ctx, r.runuser, append([]string{"-u", r.user.name, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = "/" // the caller's cwd may be unreadable by postgres
	cmd.Env = serverEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs a server binary and returns its combined output. A failure is
// wrapped with the command line and output; the *exec.ExitError stays
// reachable with errors.As.
func (r *runner) run(ctx context.Context, prog string, args ...string) (string, error) {
	out, err := r.command(ctx, prog, args...).CombinedOutput()
	switch {
	case err == nil:
		return string(out), nil
	case ctx.Err() != nil:
		return string(out), fmt.Errorf("%s interrupted: %w", prog, context.Cause(ctx))
	}
	msg := lastLines(strings.TrimSpace(string(out)), 15)
	if msg != "" {
		msg = ":\n" + msg
	}
	return string(out), fmt.Errorf("%s %s: %w%s", prog, strings.Join(args, " "), err, msg)
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// serverEnv is our environment without PG* variables (PGDATA, PGPORT, ...
// would change what the binaries do) and with C messages, so output we
// parse is stable.
func serverEnv() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=")
	})
	return append(env, "LC_ALL=C")
}

// checkReachable fails, naming the first directory in the way, unless the
// postgres user can traverse every directory from / down to dir. Only
// meaningful when we are root and run the servers as that user.
func (r *runner) checkReachable(dir string) error {
	if r.user == nil {
		return nil
	}
	var chain []string
	for p := dir; ; p = filepath.Dir(p) {
		chain = append(chain, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	slices.Reverse(chain)
	for _, p := range chain {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		if !r.canTraverse(fi.Mode(), st) {
			return fmt.Errorf("%w: %s (mode %v, uid %d) cannot be traversed by the %s OS user that runs postgres; "+
				"chmod o+x %s, or choose a cluster dir elsewhere (e.g. under /tmp)",
				ErrUnreachable, p, fi.Mode().Perm(), st.Uid, r.user.name, p)
		}
	}
	return nil
}

func (r *runner) canTraverse(mode fs.FileMode, st *syscall.Stat_t) bool {
	perm := mode.Perm()
	switch {
	case int(st.Uid) == r.user.uid:
		return perm&0o100 != 0
	case slices.Contains(r.user.gids, int(st.Gid)):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

// prepareDir makes dir absolute (symlinks resolved), creates it, and makes
// the directories it created 0755 whatever the umask, so that the postgres
// user can reach the data dirs inside. created reports whether dir itself
// was created.
func prepareDir(dir string) (abs string, created bool, err error) {
	abs, err = filepath.Abs(dir)
	if err != nil {
		return "", false, err
	}
	var made []string
	for p := abs; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || !errors.Is(err, fs.ErrNotExist) {
			break
		}
		made = append(made, p)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", false, fmt.Errorf("create cluster dir: %w", err)
	}
	for _, p := range made {
		if err := os.Chmod(p, 0o755); err != nil {
			return "", false, err
		}
	}
	abs, err = filepath.EvalSymlinks(abs)
	return abs, len(made) > 0, err
}
