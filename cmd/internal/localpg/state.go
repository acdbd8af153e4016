package localpg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

const (
	stateFile   = "cluster.json"
	configFile  = "pgshard.yaml"
	lockFile    = ".lock"
	stateFormat = 1
)

// clusterState is the content of DIR/cluster.json.
type clusterState struct {
	Version int    `json:"version"`
	BinDir  string `json:"bin_dir"`
	Listen  string `json:"listen"`
	Shards  int    `json:"shards"`
	PGPort  int    `json:"pg_port"`
	// Instances lists the shards first (in order), then any instance added
	// by AddInstance (Extra).
	Instances []instanceRecord `json:"instances"`
}

type instanceRecord struct {
	Name string `json:"name"`
	Port int    `json:"port"`
	// DataDir is relative to the cluster directory, so the directory can be
	// moved while the cluster is down.
	DataDir string `json:"data_dir"`
	// Extra marks an instance started by AddInstance: running and managed
	// like the others, but not a shard in pgshard.yaml.
	Extra bool `json:"extra,omitempty"`
}

func newState(o Options) *clusterState {
	st := &clusterState{
		Version: stateFormat,
		BinDir:  o.BinDir,
		Listen:  o.Listen,
		Shards:  o.Shards,
		PGPort:  o.PGPort,
	}
	for i := range o.Shards {
		name := fmt.Sprintf("s%d", i)
		st.Instances = append(st.Instances, instanceRecord{Name: name, Port: o.PGPort + i, DataDir: name})
	}
	return st
}

// loadState reads DIR/cluster.json; ErrNoCluster if there is none.
func loadState(dir string) (*clusterState, error) {
	path := filepath.Join(dir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s", ErrNoCluster, dir, stateFile)
	}
	if err != nil {
		return nil, fmt.Errorf("read cluster state: %w", err)
	}
	var st clusterState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if st.Version != stateFormat {
		return nil, fmt.Errorf("%s: unsupported format version %d (want %d)", path, st.Version, stateFormat)
	}
	return &st, nil
}

// save writes DIR/cluster.json atomically (write a temporary file, rename).
func (st *clusterState) save(dir string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, stateFile+".tmp*")
	if err != nil {
		return fmt.Errorf("save cluster state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save cluster state: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("save cluster state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save cluster state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("save cluster state: %w", err)
	}
	return nil
}

func (st *clusterState) instance(dir string, rec instanceRecord) Instance {
	return newInstance(rec.Name, rec.Port, filepath.Join(dir, rec.DataDir))
}

// cluster builds the public description of the cluster in dir.
func (st *clusterState) cluster(dir string) *Cluster {
	c := &Cluster{Dir: dir, ConfigPath: filepath.Join(dir, configFile)}
	for _, rec := range st.Instances {
		if rec.Extra {
			c.Extras = append(c.Extras, st.instance(dir, rec))
		} else {
			c.Instances = append(c.Instances, st.instance(dir, rec))
		}
	}
	return c
}

// all returns every instance, shards first.
func (st *clusterState) all(dir string) []Instance {
	out := make([]Instance, 0, len(st.Instances))
	for _, rec := range st.Instances {
		out = append(out, st.instance(dir, rec))
	}
	return out
}

// lockDir takes an exclusive flock on DIR/.lock, polling so that ctx can
// cancel the wait. The returned function releases it.
func lockDir(ctx context.Context, dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock cluster dir: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the flock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock cluster dir: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock cluster dir %s (held by another shardctl or test?): %w", dir, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
