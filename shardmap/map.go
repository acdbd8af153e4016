package shardmap

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Shard is one Postgres server of the cluster.
type Shard struct {
	Name string `json:"name"`
	DSN  string `json:"dsn"`
	// AdminDSN is the role that moves data (optional).
	AdminDSN string `json:"admin_dsn,omitempty"`
}

// Admin returns the DSN that moves and verifies data: AdminDSN, or DSN
// when none is set.
func (s Shard) Admin() string {
	if s.AdminDSN != "" {
		return s.AdminDSN
	}
	return s.DSN
}

// Table is a sharded table: its rows are spread over buckets by Key.
type Table struct {
	Name string  `json:"name"`
	Key  string  `json:"key"`
	Type KeyType `json:"type"`
}

// Rules are the sharding rules: fixed bucket count, sharded tables,
// reference tables. Table names are lower-case, unqualified (schema public).
type Rules struct {
	Buckets   int              `json:"buckets"`
	Tables    map[string]Table `json:"tables"`
	Reference map[string]bool  `json:"reference"`
}

// BucketState says whether a bucket serves statements.
type BucketState uint8

const (
	// Serving buckets route normally.
	Serving BucketState = iota
	// Frozen buckets are being cut over by a move: statements that touch
	// them wait (bounded) for the next map version.
	Frozen
)

// Map is one immutable version of the shard map. Build a new Map for every
// change; never modify one that has been published.
type Map struct {
	Version int64         `json:"version"`
	Rules   Rules         `json:"rules"`
	Shards  []Shard       `json:"shards"`
	Owner   []int         `json:"owner"` // bucket -> index in Shards
	State   []BucketState `json:"state"`
	Default int           `json:"default"` // shard index of unsharded tables
	// Moving is the id of the bucket move in progress (0: none). While a
	// move runs, DDL on sharded tables is refused (the subscription that
	// copies them needs the same columns on both shards).
	Moving int64 `json:"moving,omitempty"`
	// MoveBuckets are the buckets of that move. From the copy until the
	// cleanup, their rows are on two shards; the shard that does not own
	// them (the target before the switch, the source after it) must not
	// show them to statements that read every shard (HiddenOn).
	MoveBuckets []int `json:"move_buckets,omitempty"`
	// MoveTo is the shard the move's buckets go to (the one that holds
	// them without owning them until the switch): proxies open
	// connections to it ahead of the cutover. Empty in maps published
	// before it existed.
	MoveTo string `json:"move_to,omitempty"`
}

// Next returns a deep copy of m with Version+1, ready to be changed and
// published.
func (m *Map) Next() *Map {
	n := *m
	n.Version++
	n.Shards = append([]Shard(nil), m.Shards...)
	n.Owner = append([]int(nil), m.Owner...)
	n.State = append([]BucketState(nil), m.State...)
	n.MoveBuckets = append([]int(nil), m.MoveBuckets...)
	return &n
}

// HiddenOn returns the buckets whose rows shard i holds without owning
// them: those of the running move that i does not own (nil: none).
func (m *Map) HiddenOn(i int) []int {
	var out []int
	for _, b := range m.MoveBuckets {
		if b >= 0 && b < len(m.Owner) && m.Owner[b] != i {
			out = append(out, b)
		}
	}
	return out
}

// Frozen reports whether bucket b is frozen by a cutover.
func (m *Map) Frozen(b int) bool { return b >= 0 && b < len(m.State) && m.State[b] == Frozen }

// AnyFrozen reports whether some bucket is frozen.
func (m *Map) AnyFrozen() bool {
	for _, s := range m.State {
		if s == Frozen {
			return true
		}
	}
	return false
}

// ErrInvalidMap reports a map that breaks an invariant.
var ErrInvalidMap = errors.New("invalid shard map")

// Initial returns version 1 of a map: buckets split into contiguous, even
// ranges over the shards in order; unsharded tables on the first shard.
func Initial(rules Rules, shards []Shard) (*Map, error) {
	if len(shards) == 0 {
		return nil, fmt.Errorf("%w: no shards", ErrInvalidMap)
	}
	m := &Map{Version: 1, Rules: rules, Shards: shards, Owner: make([]int, rules.Buckets), State: make([]BucketState, rules.Buckets)}
	for b := range m.Owner {
		m.Owner[b] = b * len(shards) / rules.Buckets
	}
	return m, m.Validate()
}

// Validate checks the map's invariants.
func (m *Map) Validate() error {
	if m.Rules.Buckets < 1 {
		return fmt.Errorf("%w: %d buckets", ErrInvalidMap, m.Rules.Buckets)
	}
	if len(m.Owner) != m.Rules.Buckets || len(m.State) != m.Rules.Buckets {
		return fmt.Errorf("%w: %d owners and %d states for %d buckets", ErrInvalidMap, len(m.Owner), len(m.State), m.Rules.Buckets)
	}
	seen := map[string]bool{}
	for _, s := range m.Shards {
		if s.Name == "" || seen[s.Name] {
			return fmt.Errorf("%w: shard name %q empty or repeated", ErrInvalidMap, s.Name)
		}
		seen[s.Name] = true
	}
	for b, o := range m.Owner {
		if o < 0 || o >= len(m.Shards) {
			return fmt.Errorf("%w: bucket %d owned by shard #%d of %d", ErrInvalidMap, b, o, len(m.Shards))
		}
	}
	if m.Default < 0 || m.Default >= len(m.Shards) {
		return fmt.Errorf("%w: default shard #%d of %d", ErrInvalidMap, m.Default, len(m.Shards))
	}
	if m.MoveTo != "" && !seen[m.MoveTo] {
		return fmt.Errorf("%w: move to unknown shard %q", ErrInvalidMap, m.MoveTo)
	}
	for name, t := range m.Rules.Tables {
		if m.Rules.Reference[name] {
			return fmt.Errorf("%w: table %s is both sharded and reference", ErrInvalidMap, name)
		}
		if t.Key == "" {
			return fmt.Errorf("%w: table %s has no key column", ErrInvalidMap, name)
		}
	}
	return nil
}

// ShardOf returns the index of the shard that owns bucket b.
func (m *Map) ShardOf(b int) int { return m.Owner[b] }

// ShardIndex returns the index of the named shard, or -1.
func (m *Map) ShardIndex(name string) int {
	for i, s := range m.Shards {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// BucketsPerShard counts owned buckets per shard, in Shards order.
func (m *Map) BucketsPerShard() []int {
	n := make([]int, len(m.Shards))
	for _, o := range m.Owner {
		n[o]++
	}
	return n
}

// Table returns the sharding rule of a table, if it is sharded.
func (m *Map) Table(name string) (Table, bool) {
	t, ok := m.Rules.Tables[name]
	return t, ok
}

// IsReference reports whether name is a reference table.
func (m *Map) IsReference(name string) bool { return m.Rules.Reference[name] }

// TableNames returns the sharded table names, sorted.
func (m *Map) TableNames() []string {
	names := make([]string, 0, len(m.Rules.Tables))
	for n := range m.Rules.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Marshal encodes the map as JSON (the catalog's storage form).
func (m *Map) Marshal() ([]byte, error) { return json.Marshal(m) }

// Unmarshal decodes and validates a map.
func Unmarshal(b []byte) (*Map, error) {
	var m Map
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidMap, err)
	}
	if m.Rules.Tables == nil {
		m.Rules.Tables = map[string]Table{}
	}
	if m.Rules.Reference == nil {
		m.Rules.Reference = map[string]bool{}
	}
	return &m, m.Validate()
}

// MarshalText writes the type's SQL name, so maps read well as JSON.
func (t KeyType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText parses a type name.
func (t *KeyType) UnmarshalText(b []byte) error {
	v, err := ParseKeyType(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// KeyTypeForOID maps a Postgres type OID to the key type whose hash it
// uses: int2, int4, int8, text and varchar, uuid.
func KeyTypeForOID(oid uint32) (KeyType, bool) {
	switch oid {
	case 21:
		return KeySmallint, true
	case 23:
		return KeyInteger, true
	case 20:
		return KeyBigint, true
	case 25, 1043:
		return KeyText, true
	case 2950:
		return KeyUUID, true
	}
	return 0, false
}

// RegclassText is the name of a table of the rules as regclass (and
// to_regclass) reads it: a name that is not all lower case (declared in
// double quotes, '"Customers"') quoted; a schema-qualified one as it is.
func RegclassText(name string) string {
	if strings.Contains(name, ".") || name == strings.ToLower(name) {
		return name
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}
