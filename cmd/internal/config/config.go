// Package config loads pgshard's YAML configuration file, shared by pgshard
// and shardctl. It validates every key and names the offending one in its
// errors; unknown keys are refused so a typo never passes silently.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole file. Durations are Go durations ("5s", "250ms").
type Config struct {
	Listen        string   `yaml:"listen"`
	Pool          Pool     `yaml:"pool"`
	Users         []User   `yaml:"users"`
	Shards        []Shard  `yaml:"shards"`
	Sharding      Sharding `yaml:"sharding"`
	Catalog       string   `yaml:"catalog"`
	TLS           TLS      `yaml:"tls"`
	Auth          string   `yaml:"auth"`
	MaxClientConn int      `yaml:"max_client_conn"`
	MaxMessageLen int      `yaml:"max_message_len"`
	// MergeMemoryLimit (bytes) bounds what one cross-shard merge holds
	// (GROUP BY groups, DISTINCT sets); 0 keeps the default (64 MB).
	MergeMemoryLimit int64 `yaml:"merge_memory_limit"`

	ConnectTimeout    Duration `yaml:"connect_timeout"`
	ShutdownTimeout   Duration `yaml:"shutdown_timeout"`
	IdleClientTimeout Duration `yaml:"idle_client_timeout"`
	QueryTimeout      Duration `yaml:"query_timeout"`
	// FreezeTimeout bounds how long a write to a bucket that a move is
	// cutting over waits for the move's next map version before the
	// client gets SQLSTATE 55P03 (default 5s).
	FreezeTimeout  Duration `yaml:"freeze_timeout"`
	ServerLifetime Duration `yaml:"server_lifetime"`
	// HealthCheckInterval: how often each shard is probed; 0 keeps the
	// default, a negative value ("-1s") turns the checks off.
	HealthCheckInterval Duration `yaml:"health_check_interval"`

	// EventLoops is how many epoll loops run client sessions (wire/evloop):
	// 0 picks GOMAXPROCS/2, and none below GOMAXPROCS 2; -1 runs each
	// client on a goroutine of its own.
	EventLoops int `yaml:"event_loops"`

	LogLevel string `yaml:"log_level"`
	LogJSON  bool   `yaml:"log_json"`

	// TwoPhaseCommit lets transactions span shards, committed with
	// two-phase commit (PREPARE TRANSACTION on each shard, a decision in
	// the catalog, COMMIT PREPARED). The shards need
	// max_prepared_transactions > 0. Off (the default), a transaction
	// that needs a second shard is refused with 0A000.
	TwoPhaseCommit bool `yaml:"two_phase_commit"`

	// Databases are the database names clients may ask for in their
	// startup packet; another gets 3D000 after authentication, as from
	// Postgres. Empty (the default): any name, since pgshard serves one
	// database whatever the client calls it.
	Databases []string `yaml:"databases"`

	// MetricsListen is the HTTP address of /metrics, /healthz and /readyz
	// ("" = off).
	MetricsListen string `yaml:"metrics_listen"`

	// Rebalance tunes shardctl's bucket moves.
	Rebalance Rebalance `yaml:"rebalance"`

	// Path is where the file was read from (not a YAML key).
	Path string `yaml:"-"`
}

// Pool configures server connection pooling.
// Rebalance tunes shardctl's bucket moves.
type Rebalance struct {
	// CopyStreams is how many COPY streams a move runs at once per table
	// (page ranges of it). 0 means 1: on a small machine more streams
	// copied no faster and slowed the application's queries more.
	CopyStreams int `yaml:"copy_streams"`
}

type Pool struct {
	Mode        string   `yaml:"mode"` // transaction | session
	Size        int      `yaml:"size"` // per shard
	WaitTimeout Duration `yaml:"wait_timeout"`
	// PrepareUnnamed (default true) prepares an unnamed statement that
	// clients send again and again under a name on the server connections,
	// so the shards parse it once per connection; false keeps every
	// unnamed statement unnamed on the servers, as PgBouncer does.
	PrepareUnnamed *bool `yaml:"prepare_unnamed"`
	// PrepareSimple (default true) runs a simple-protocol query that
	// clients send again (with other constants) as a prepared statement
	// on the server connections, its constants as parameters; false sends
	// every simple query as written.
	PrepareSimple *bool `yaml:"prepare_simple"`
}

// User is a client login. Password may be plaintext, a SCRAM verifier or an
// md5 hash; pgshard keeps only verifiers in memory.
type User struct {
	Name     string `yaml:"name"`
	Password string `yaml:"password"`
	Admin    bool   `yaml:"admin"`
}

// Shard is one Postgres server.
type Shard struct {
	Name     string `yaml:"name"`
	DSN      string `yaml:"dsn"`
	AdminDSN string `yaml:"admin_dsn"`
}

// Sharding declares the sharding rules used to bootstrap the catalog.
type Sharding struct {
	Buckets   int      `yaml:"buckets"`
	Tables    []Table  `yaml:"tables"`
	Reference []string `yaml:"reference"`
}

// Table is a sharded table and its key column.
type Table struct {
	Name string `yaml:"name"`
	Key  string `yaml:"key"`
	Type string `yaml:"type"` // optional: smallint|integer|bigint|text|varchar|uuid
}

// TLS configures TLS towards clients.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Duration is a time.Duration read from a string like "5s".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: invalid duration %q (use e.g. 5s, 250ms)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Defaults documented in the README.
const (
	DefaultListen              = "127.0.0.1:6432"
	DefaultPoolMode            = "transaction"
	DefaultPoolSize            = 20
	DefaultWaitTimeout         = 5 * time.Second
	DefaultConnectTimeout      = 5 * time.Second
	DefaultShutdownTimeout     = 30 * time.Second
	DefaultHealthCheckInterval = 2 * time.Second
	DefaultFreezeTimeout       = 5 * time.Second
	DefaultBuckets             = 1024
	DefaultMaxClientConn       = 10000
	DefaultMaxMessageLen       = 64 << 20
	DefaultAuth                = "scram-sha-256"
)

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// Parse decodes and validates YAML, filling defaults.
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	c.fill()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) fill() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Pool.Mode == "" {
		c.Pool.Mode = DefaultPoolMode
	}
	if c.Pool.Size == 0 {
		c.Pool.Size = DefaultPoolSize
	}
	if c.Pool.WaitTimeout == 0 {
		c.Pool.WaitTimeout = Duration(DefaultWaitTimeout)
	}
	if c.Pool.PrepareUnnamed == nil {
		on := true
		c.Pool.PrepareUnnamed = &on
	}
	if c.Pool.PrepareSimple == nil {
		on := true
		c.Pool.PrepareSimple = &on
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = Duration(DefaultConnectTimeout)
	}
	if c.HealthCheckInterval == 0 {
		c.HealthCheckInterval = Duration(DefaultHealthCheckInterval)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(DefaultShutdownTimeout)
	}
	if c.FreezeTimeout == 0 {
		c.FreezeTimeout = Duration(DefaultFreezeTimeout)
	}
	if c.Sharding.Buckets == 0 {
		c.Sharding.Buckets = DefaultBuckets
	}
	if c.MaxClientConn == 0 {
		c.MaxClientConn = DefaultMaxClientConn
	}
	if c.MaxMessageLen == 0 {
		c.MaxMessageLen = DefaultMaxMessageLen
	}
	if c.Auth == "" {
		c.Auth = DefaultAuth
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

func (c *Config) validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: %q is not host:port", c.Listen)
	}
	if c.Rebalance.CopyStreams < 0 || c.Rebalance.CopyStreams > 16 {
		return fmt.Errorf("rebalance.copy_streams: %d is not between 1 and 16 (0: the default, 1)", c.Rebalance.CopyStreams)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fmt.Errorf("metrics_listen: %q is not host:port", c.MetricsListen)
		}
	}
	if c.FreezeTimeout < 0 {
		return fmt.Errorf("freeze_timeout: must be positive, got %v", c.FreezeTimeout.D())
	}
	switch c.Pool.Mode {
	case "transaction", "session":
	default:
		return fmt.Errorf("pool.mode: %q is not transaction or session", c.Pool.Mode)
	}
	if c.Pool.Size < 0 {
		return fmt.Errorf("pool.size: must be positive, got %d", c.Pool.Size)
	}
	switch c.Auth {
	case "scram-sha-256", "md5", "trust":
	default:
		return fmt.Errorf("auth: %q is not scram-sha-256, md5 or trust", c.Auth)
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("tls: cert and key must be set together")
	}
	seenU := map[string]bool{}
	for i, u := range c.Users {
		if u.Name == "" {
			return fmt.Errorf("users[%d].name: empty", i)
		}
		if seenU[u.Name] {
			return fmt.Errorf("users[%d].name: %q listed twice", i, u.Name)
		}
		seenU[u.Name] = true
	}
	if len(c.Shards) == 0 {
		return errors.New("shards: at least one shard is required")
	}
	seenS := map[string]bool{}
	for i, s := range c.Shards {
		if s.Name == "" {
			return fmt.Errorf("shards[%d].name: empty", i)
		}
		if seenS[s.Name] {
			return fmt.Errorf("shards[%d].name: %q listed twice", i, s.Name)
		}
		seenS[s.Name] = true
		if s.DSN == "" {
			return fmt.Errorf("shards[%d].dsn: empty", i)
		}
	}
	if c.Sharding.Buckets < 1 || c.Sharding.Buckets > 1<<20 {
		return fmt.Errorf("sharding.buckets: %d is out of range 1..1048576", c.Sharding.Buckets)
	}
	seenT := map[string]bool{}
	for i, t := range c.Sharding.Tables {
		if t.Name == "" || t.Key == "" {
			return fmt.Errorf("sharding.tables[%d]: name and key are required", i)
		}
		if seenT[t.Name] {
			return fmt.Errorf("sharding.tables[%d].name: %q listed twice", i, t.Name)
		}
		seenT[t.Name] = true
		switch t.Type {
		case "", "smallint", "integer", "int", "bigint", "text", "varchar", "uuid":
		default:
			return fmt.Errorf("sharding.tables[%d].type: %q is not one of smallint, integer, bigint, text, varchar, uuid", i, t.Type)
		}
	}
	for i, r := range c.Sharding.Reference {
		if seenT[r] {
			return fmt.Errorf("sharding.reference[%d]: %q is also a sharded table", i, r)
		}
	}
	return nil
}
