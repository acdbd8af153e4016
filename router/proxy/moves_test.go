package proxy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/shardmap"
)

func movesRules() shardmap.Rules {
	return shardmap.Rules{
		Buckets: 1024,
		Tables: map[string]shardmap.Table{
			"accounts": {Name: "accounts", Key: "id", Type: shardmap.KeyBigint},
			"orders":   {Name: "orders", Key: "account_id", Type: shardmap.KeyBigint},
		},
		Reference: map[string]bool{"countries": true},
	}
}

// keyPos answers KeyPosition for INSERT/COPY without a column list; it
// knows no aggregate beyond the ones the merge combines.
type keyPos int

func (k keyPos) KeyPosition(string, string) (int, error) { return int(k), nil }
func (keyPos) IsAggregate(string) (bool, error)          { return false, nil }

// TestResolveMoves pins how routes react to a frozen bucket and to a move
// in progress: writes that touch the frozen bucket are held, reads and
// other buckets are not; DDL that redefines a sharded table is refused
// while a move runs.
func TestResolveMoves(t *testing.T) {
	base, err := shardmap.Initial(movesRules(), []shardmap.Shard{{Name: "s0"}, {Name: "s1"}})
	if err != nil {
		t.Fatal(err)
	}
	fb := shardmap.BucketInt(42, 1024)
	other := int64(43)
	for shardmap.BucketInt(other, 1024) == fb {
		other++
	}
	frozen := base.Next()
	frozen.State[fb] = shardmap.Frozen
	moving := base.Next()
	moving.Moving = 3
	both := frozen.Next()
	both.Moving = 3

	type want struct {
		kind   RouteKind
		frozen bool // held for bucket fb
		all    bool // held as a write to every bucket
		code   string
	}
	held := want{kind: RouteRefuse, frozen: true, code: "55P03"}
	heldAll := want{kind: RouteRefuse, frozen: true, all: true, code: "55P03"}
	refusedMoving := want{kind: RouteRefuse, code: "55006"}
	for _, tc := range []struct {
		name   string
		m      *shardmap.Map
		sql    string
		params [][]byte // RouteBound when set
		want   want
	}{
		{"read of the frozen bucket", frozen, "select * from accounts where id = 42", nil, want{kind: RouteShard}},
		{"locking read of the frozen bucket", frozen, "select * from accounts where id = 42 for update", nil, want{kind: RouteShard}},
		{"write to the frozen bucket", frozen, "update accounts set name = 'x' where id = 42", nil, held},
		{"bound write to the frozen bucket", frozen, "update accounts set name = 'x' where id = $1", [][]byte{[]byte("42")}, held},
		{"co-located table, same bucket", frozen, "insert into orders (account_id, id) values (42, 1)", nil, held},
		{"write to another bucket", frozen, "update accounts set name = 'x' where id = 43", nil, want{kind: RouteShard}},
		{"multi-key write with one frozen key", frozen, "update accounts set name = 'x' where id in (43, 42)", nil, held},
		{"split insert with one frozen row", frozen, "insert into accounts (id, name) values (42, 'a'), (1, 'b'), (2, 'c'), (3, 'd')", nil, held},
		{"keyless write", frozen, "update accounts set name = 'x'", nil, heldAll},
		{"keyless delete", frozen, "delete from orders where id < 0", nil, heldAll},
		{"COPY FROM", frozen, "copy accounts (id, name) from stdin", nil, heldAll},
		{"DDL on a sharded table", frozen, "create index on accounts (name)", nil, heldAll},
		{"keyless read", frozen, "select id from accounts", nil, want{kind: RouteSplit}},
		{"reference write", frozen, "insert into countries values ('DE')", nil, want{kind: RouteAll}},
		{"unsharded write", frozen, "insert into audit values (1)", nil, want{kind: RouteShard}},

		{"ALTER while moving", moving, "alter table accounts add column note text", nil, refusedMoving},
		{"RENAME while moving", moving, "alter table orders rename to orders_old", nil, refusedMoving},
		{"DROP while moving", moving, "drop table accounts", nil, refusedMoving},
		{"TRUNCATE while moving", moving, "truncate orders", nil, refusedMoving},
		{"bound ALTER while moving", moving, "alter table accounts add column note text", [][]byte{}, refusedMoving},
		{"DDL string while moving", moving, "create index on accounts (id); alter table accounts drop column note", nil, refusedMoving},
		{"refused before held", both, "alter table accounts add column note text", nil, refusedMoving},
		{"CREATE INDEX CONCURRENTLY while moving", moving, "create index concurrently on accounts (name)", nil, want{kind: RouteAll}},
		{"ANALYZE while moving", moving, "analyze accounts", nil, want{kind: RouteAll}},
		{"ALTER unsharded while moving", moving, "alter table audit add column x int", nil, want{kind: RouteShard}},
		{"ALTER reference while moving", moving, "alter table countries add column x int", nil, want{kind: RouteAll}},
		{"writes while moving, nothing frozen", moving, "update accounts set name = 'x'", nil, want{kind: RouteSplit}},

		{"DDL on a sharded table runs on every shard with its own tag", base, "alter table accounts add column note text", nil, want{kind: RouteAll}},
		{"CREATE INDEX CONCURRENTLY outside a transaction", base, "create index concurrently on accounts (name)", nil, want{kind: RouteAll}},
		{"keyless write, nothing frozen", base, "update accounts set name = 'x'", nil, want{kind: RouteSplit}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := PlanRouter{Planner: plan.NewPlanner(100)}
			am := NewAppliedMap(tc.m)
			var rt Route
			if tc.params != nil {
				rt = r.RouteBound(tc.sql, nil, nil, tc.params, am, keyPos(1))
			} else {
				rt = r.RouteSimple(tc.sql, am, keyPos(1))
			}
			if rt.Kind != tc.want.kind {
				t.Fatalf("kind %v (%v), want %v", rt.Kind, rt.Err, tc.want.kind)
			}
			if (rt.Frozen != nil) != tc.want.frozen {
				t.Fatalf("frozen %+v, want %v", rt.Frozen, tc.want.frozen)
			}
			if rt.Frozen != nil && (rt.Frozen.Bucket != fb || rt.Frozen.All != tc.want.all || rt.Frozen.Table == "") {
				t.Errorf("frozen %+v, want bucket %d all %v", rt.Frozen, fb, tc.want.all)
			}
			if tc.want.code != "" && (rt.Err == nil || rt.Err.Code != tc.want.code) {
				t.Errorf("error %v, want %s", rt.Err, tc.want.code)
			}
			if tc.name == "CREATE INDEX CONCURRENTLY outside a transaction" && !rt.NoTxBlock {
				t.Errorf("CREATE INDEX CONCURRENTLY: NoTxBlock not set")
			}
		})
	}
	rt := PlanRouter{Planner: plan.NewPlanner(10)}.RouteSimple("truncate orders", NewAppliedMap(moving), nil)
	if rt.Err == nil || rt.Err.Message != "table orders is being moved by shardctl (move 3); DDL on sharded tables waits until the move ends" ||
		rt.Err.Hint != `Run "shardctl rebalance status" to follow the move, and run the DDL again once it is done.` {
		t.Errorf("55006: %+v", rt.Err)
	}
}

func TestAppliedMapAnyFrozen(t *testing.T) {
	m, err := shardmap.Initial(movesRules(), []shardmap.Shard{{Name: "s0"}})
	if err != nil {
		t.Fatal(err)
	}
	if am := NewAppliedMap(m); am.AnyFrozen() || am.firstFrozen() != -1 {
		t.Fatalf("fresh map: frozen %v first %d", am.AnyFrozen(), am.firstFrozen())
	}
	n := m.Next()
	n.State[700], n.State[9] = shardmap.Frozen, shardmap.Frozen
	if am := NewAppliedMap(n); !am.AnyFrozen() || am.firstFrozen() != 9 {
		t.Fatalf("frozen map: frozen %v first %d", am.AnyFrozen(), am.firstFrozen())
	}
}

// TestSetMapPools: shards that appear in the map get a pool with the
// first pool's options; shards that leave it have their pool closed;
// statements held on the previous map are woken.
func TestSetMapPools(t *testing.T) {
	newPool := func(name string) *pool.Pool {
		p, err := pool.New(pool.Options{Shard: name, DSN: "postgres://app@127.0.0.1:1/app?sslmode=disable", Size: 3,
			AcquireTimeout: 150 * time.Millisecond, ConnectTimeout: 200 * time.Millisecond, Lifetime: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	srv := New(Config{}, []*pool.Pool{newPool("s0"), newPool("cfg-only")}, nil)
	t.Cleanup(func() { _ = srv.Close() })
	v1, err := shardmap.Initial(movesRules(), []shardmap.Shard{{Name: "s0", DSN: "postgres://app@127.0.0.1:1/app"}})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetMap(v1)
	first := srv.applied()
	if got := len(srv.poolList()); got != 2 {
		t.Fatalf("%d pools after v1", got)
	}

	v2 := v1.Next()
	v2.Shards = append(v2.Shards, shardmap.Shard{Name: "s9", DSN: "postgres://other@127.0.0.1:2/app2?sslmode=disable"})
	v2.Owner[5] = 1
	srv.SetMap(v2)
	select {
	case <-first.Replaced():
	default:
		t.Fatal("v1's Replaced channel still open after SetMap(v2)")
	}
	p9 := srv.poolNamed("s9")
	if p9 == nil {
		t.Fatal("no pool for the shard v2 added")
	}
	o := p9.Options()
	if o.Shard != "s9" || o.DSN != "postgres://other@127.0.0.1:2/app2?sslmode=disable" || o.Size != 3 ||
		o.AcquireTimeout != 150*time.Millisecond || o.ConnectTimeout != 200*time.Millisecond || o.Lifetime != time.Hour {
		t.Errorf("new pool options %+v", o)
	}
	if got := srv.poolFor(srv.applied(), 1); got != p9 {
		t.Errorf("poolFor(v2, 1) = %v", got)
	}
	if names := snapshotNames(srv); len(names) != 3 || names[2] != "s9" {
		t.Errorf("Snapshot shards %v", names)
	}

	v3 := v2.Next()
	v3.Shards = v3.Shards[:1]
	v3.Owner[5] = 0
	srv.SetMap(v3)
	if srv.poolNamed("s9") != nil {
		t.Error("pool of the removed shard still listed")
	}
	if _, err := p9.Acquire(context.Background()); !errors.Is(err, pool.ErrClosed) {
		t.Errorf("Acquire on the removed shard's pool: %v, want ErrClosed", err)
	}
	if srv.poolNamed("cfg-only") == nil || srv.poolNamed("s0") == nil {
		t.Error("pools the maps never removed were closed")
	}
	if names := snapshotNames(srv); len(names) != 2 {
		t.Errorf("Snapshot shards %v", names)
	}
}

func snapshotNames(srv *Server) []string {
	var out []string
	for _, sh := range srv.Snapshot().Shards {
		out = append(out, sh.Name)
	}
	return out
}

// Route path with a frozen bucket elsewhere in the map: the check costs
// the hot path nothing measurable (compare with BenchmarkRouteBoundHit).
func BenchmarkRouteBoundHitFrozenElsewhere(b *testing.B) {
	m := benchMap(b).Map.Next()
	m.State[(shardmap.BucketInt(4242, 1024)+1)%1024] = shardmap.Frozen
	am := NewAppliedMap(m)
	r := PlanRouter{Planner: plan.NewPlanner(1000)}
	params := [][]byte{[]byte("4242")}
	const q = "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = $1;"
	r.RouteBound(q, nil, nil, params, am, nil)
	b.ReportAllocs()
	for b.Loop() {
		rt := r.RouteBound(q, nil, nil, params, am, nil)
		if rt.Kind != RouteShard {
			b.Fatal(rt)
		}
	}
}
