package localpg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
)

// Defaults for Options fields left zero.
const (
	DefaultShards = 2
	DefaultPGPort = 15432
	DefaultListen = "127.0.0.1:6432"
	DefaultBinDir = "/usr/lib/postgresql/15/bin"
)

var (
	// ErrNoCluster: the directory holds no cluster.json.
	ErrNoCluster = errors.New("no local cluster")
	// ErrPortInUse: a port the cluster needs is taken by a process that is
	// not one of its instances.
	ErrPortInUse = errors.New("port in use")
	// ErrUnreachable: the postgres OS user cannot reach the cluster dir.
	ErrUnreachable = errors.New("cluster dir unreachable by postgres")
	// ErrMismatch: Up was asked for a shape other than the existing cluster's.
	ErrMismatch = errors.New("cluster exists with other options")
)

// Options describe a cluster for Up. Zero fields take the defaults for a
// new cluster; for an existing one they mean "whatever it already has", and
// a non-zero field that differs from it is an error (ErrMismatch).
type Options struct {
	Dir    string       // cluster directory, e.g. ".pgshard"
	Shards int          // number of instances (default 2)
	PGPort int          // first port; instance i listens on PGPort+i (default 15432)
	Listen string       // where pgshard will listen, written into pgshard.yaml (default 127.0.0.1:6432)
	BinDir string       // Postgres server binaries (default /usr/lib/postgresql/15/bin)
	Log    *slog.Logger // progress; may be nil
}

// Instance is one Postgres server of the cluster.
type Instance struct {
	Name     string `json:"name"`      // s0, s1, ... (or the name given to AddInstance)
	Port     int    `json:"port"`      // on 127.0.0.1; there is no Unix socket
	DataDir  string `json:"data_dir"`  // absolute
	DSN      string `json:"dsn"`       // postgres://app:app@127.0.0.1:PORT/app?sslmode=disable (SCRAM)
	AdminDSN string `json:"admin_dsn"` // postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable (trust)
}

// Cluster is a running local cluster.
type Cluster struct {
	Dir        string // absolute
	ConfigPath string // DIR/pgshard.yaml
	// Instances are the shards, in order: the ones listed in pgshard.yaml.
	Instances []Instance
	// Extras are instances started by AddInstance: same directory, managed
	// by Up/Status/Down, but not in pgshard.yaml.
	Extras []Instance
}

// InstanceStatus is an instance and whether its server is running.
type InstanceStatus struct {
	Instance
	Extra   bool `json:"extra"` // started by AddInstance, not a shard in pgshard.yaml
	Running bool `json:"running"`
	PID     int  `json:"pid,omitempty"` // postmaster PID when running
}

// Up creates and starts the cluster described by o in o.Dir, or starts the
// stopped instances of the cluster already there. It is idempotent: on a
// running cluster it changes nothing and returns the same Cluster. It writes
// DIR/pgshard.yaml only if that file does not exist.
func Up(ctx context.Context, o Options) (*Cluster, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Dir == "" {
		return nil, errors.New("cluster dir is empty")
	}
	dir, created, err := prepareDir(o.Dir)
	if err != nil {
		return nil, err
	}
	// A dir we created for a cluster that failed before being described in
	// cluster.json holds nothing but .lock: remove it, leave no litter.
	described := false
	defer func() {
		if created && !described {
			os.RemoveAll(dir)
		}
	}()
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	st, err := loadState(dir)
	fresh := errors.Is(err, ErrNoCluster)
	switch {
	case fresh:
		if st, err = newClusterState(o); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		described = true
		if err := st.check(dir, o); err != nil {
			return nil, err
		}
	}
	binDir := st.BinDir
	if o.BinDir != "" {
		binDir = o.BinDir
	}
	r, err := newRunner(binDir)
	if err != nil {
		return nil, err
	}
	if err := r.checkReachable(dir); err != nil {
		return nil, err
	}

	all := st.all(dir)
	running := make([]bool, len(all))
	if err := forEach(all, func(i int, in Instance) error {
		var err error
		running[i], _, err = r.status(ctx, in)
		return err
	}); err != nil {
		return nil, err
	}
	// Fail fast, before any initdb, if a port we are about to take is busy.
	for i, in := range all {
		if !running[i] {
			if err := checkPortFree(in.Port); err != nil {
				return nil, fmt.Errorf("instance %s: %w", in.Name, err)
			}
		}
	}
	if fresh {
		if err := st.save(dir); err != nil {
			return nil, err
		}
		described = true
		log.Info("new cluster", "dir", dir, "shards", st.Shards, "first_port", st.PGPort)
	}

	if err := forEach(all, func(i int, in Instance) error {
		return r.ensureUp(ctx, log, in, running[i])
	}); err != nil {
		return nil, err
	}

	c := st.cluster(dir)
	written, err := writeConfigOnce(c.ConfigPath, renderConfig(st.Listen, c.Instances))
	if err != nil {
		return nil, err
	}
	if written {
		log.Info("wrote config", "path", c.ConfigPath)
	}
	return c, nil
}

// ensureUp initialises (if needed) and starts (if stopped) one instance,
// then makes sure its app role and database exist.
func (r *runner) ensureUp(ctx context.Context, log *slog.Logger, in Instance, running bool) error {
	if !running {
		created, err := r.initInstance(ctx, in)
		if err != nil {
			return fmt.Errorf("init %s: %w", in.Name, err)
		}
		if created {
			log.Info("initdb done", "shard", in.Name, "data_dir", in.DataDir)
		}
		if err := r.start(ctx, in); err != nil {
			return err
		}
		log.Info("started", "shard", in.Name, "port", in.Port)
	} else {
		log.Debug("already running", "shard", in.Name, "port", in.Port)
	}
	return ensureAppRole(ctx, in)
}

// Status reports every instance of the cluster in dir (shards first) and
// whether it is running. ErrNoCluster if dir holds no cluster.
func Status(ctx context.Context, dir string) ([]InstanceStatus, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := loadState(abs)
	if err != nil {
		return nil, err
	}
	r, err := newRunner(st.BinDir)
	if err != nil {
		return nil, err
	}
	all := st.all(abs)
	out := make([]InstanceStatus, len(all))
	err = forEach(all, func(i int, in Instance) error {
		running, pid, err := r.status(ctx, in)
		out[i] = InstanceStatus{Instance: in, Extra: st.Instances[i].Extra, Running: running, PID: pid}
		return err
	})
	return out, err
}

// Down stops every running instance of the cluster in dir (fast shutdown),
// then, with purge, removes dir entirely. A dir that does not exist is
// already down. A dir without cluster.json is refused (ErrNoCluster) rather
// than purged: it is not ours.
func Down(ctx context.Context, dir string, purge bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	unlock, err := lockDir(ctx, abs)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := loadState(abs)
	if errors.Is(err, ErrNoCluster) && onlyLock(abs) {
		// Left by an Up that failed before describing the cluster.
		if purge {
			return os.RemoveAll(abs)
		}
		return nil
	}
	if err != nil {
		return err
	}
	r, err := newRunner(st.BinDir)
	if err != nil {
		return err
	}
	if err := forEach(st.all(abs), func(_ int, in Instance) error {
		running, _, err := r.status(ctx, in)
		if err != nil || !running {
			return err
		}
		return r.stop(ctx, in)
	}); err != nil {
		return err
	}
	if purge {
		if err := os.RemoveAll(abs); err != nil {
			return fmt.Errorf("purge %s: %w", abs, err)
		}
	}
	return nil
}

var instanceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

// AddInstance starts one more instance, named name on port, in the cluster
// in dir (for tests that add a shard later). It is recorded in cluster.json,
// so Status and Down see it, but not added to pgshard.yaml. Calling it again
// with the same name and port starts it if stopped and returns it.
func AddInstance(ctx context.Context, dir string, name string, port int) (*Instance, error) {
	if !instanceName.MatchString(name) {
		return nil, fmt.Errorf("instance name %q: want letters, digits, _ or -", name)
	}
	if err := validPorts(port, 1); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoCluster, err)
	}
	unlock, err := lockDir(ctx, abs)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := loadState(abs)
	if err != nil {
		return nil, err
	}
	r, err := newRunner(st.BinDir)
	if err != nil {
		return nil, err
	}
	if err := r.checkReachable(abs); err != nil {
		return nil, err
	}
	found := false
	for _, rec := range st.Instances {
		switch {
		case rec.Name == name && rec.Port == port:
			found = true
		case rec.Name == name:
			return nil, fmt.Errorf("instance %s already exists on port %d", name, rec.Port)
		case rec.Port == port:
			return nil, fmt.Errorf("port %d is already used by instance %s", port, rec.Name)
		}
	}
	rec := instanceRecord{Name: name, Port: port, DataDir: name, Extra: true}
	in := st.instance(abs, rec)
	running, _, err := r.status(ctx, in)
	if err != nil {
		return nil, err
	}
	if !running {
		if err := checkPortFree(port); err != nil {
			return nil, fmt.Errorf("instance %s: %w", name, err)
		}
	}
	if !found {
		st.Instances = append(st.Instances, rec)
		if err := st.save(abs); err != nil {
			return nil, err
		}
	}
	if err := r.ensureUp(ctx, slog.New(slog.DiscardHandler), in, running); err != nil {
		return nil, err
	}
	return &in, nil
}

// newClusterState describes a new cluster from o, defaults applied.
func newClusterState(o Options) (*clusterState, error) {
	if o.Shards == 0 {
		o.Shards = DefaultShards
	}
	if o.PGPort == 0 {
		o.PGPort = DefaultPGPort
	}
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.BinDir == "" {
		o.BinDir = DefaultBinDir
	}
	if o.Shards < 1 || o.Shards > 256 {
		return nil, fmt.Errorf("shards: %d is out of range 1..256", o.Shards)
	}
	if err := validPorts(o.PGPort, o.Shards); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		return nil, fmt.Errorf("listen %q: want HOST:PORT: %w", o.Listen, err)
	}
	return newState(o), nil
}

// validPorts checks the n ports from first.
func validPorts(first, n int) error {
	last := first + n - 1
	switch {
	case first < 1024 || last > 65535:
		return fmt.Errorf("ports %d..%d: want 1024..65535", first, last)
	case first <= 5432 && 5432 <= last:
		return fmt.Errorf("ports %d..%d include 5432, the system PostgreSQL's port: choose another range", first, last)
	}
	return nil
}

// check fails with ErrMismatch if o asks for another shape than st's.
func (st *clusterState) check(dir string, o Options) error {
	var what string
	switch {
	case o.Shards != 0 && o.Shards != st.Shards:
		what = fmt.Sprintf("%d shards, not %d", st.Shards, o.Shards)
	case o.PGPort != 0 && o.PGPort != st.PGPort:
		what = fmt.Sprintf("first port %d, not %d", st.PGPort, o.PGPort)
	case o.Listen != "" && o.Listen != st.Listen:
		what = fmt.Sprintf("listen %s, not %s", st.Listen, o.Listen)
	default:
		return nil
	}
	return fmt.Errorf("%w: %s has %s; run `shardctl cluster down --purge --dir %s` first, or leave the option out",
		ErrMismatch, dir, what, dir)
}

// onlyLock reports whether dir holds nothing but our lock file.
func onlyLock(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if e.Name() != lockFile {
			return false
		}
	}
	return true
}

// forEach runs fn on every instance in parallel and joins the errors.
func forEach(all []Instance, fn func(i int, in Instance) error) error {
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, in := range all {
		wg.Go(func() { errs[i] = fn(i, in) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
