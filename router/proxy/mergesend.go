package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// Sending a merge's statement to its shards.
//
// The merge must know the shard columns before it binds (result formats:
// binary for compared twins and partial aggregates, the client's for
// passed-through columns; with a '*' the column count) and before it
// compares a row (types; the collations of compared text, which may need
// a catalog query on an idle connection). The first time a statement is
// merged it costs two round trips per shard: Parse+Describe+Sync, the
// checks, then Bind+Execute+Sync. The description is then kept (descCache,
// by the shard statement, its parameter types and the first shard, until
// the next DDL through pgshard), and later runs check it before sending
// anything and take one round trip: Parse+Bind+Describe portal+Execute+
// Sync. The RowDescription the first shard sends back must equal the kept
// one; if DDL from elsewhere changed it, the run fails with 0A000 as a
// changed prepared statement does in Postgres, and the next run describes
// again.
//
// On a repeat the statement is also prepared under a name on each server
// connection (pgm_<hash>, like the client statements' pgs_<hash>), so a
// shard parses and plans it once per connection, not once per run. The
// name includes the catalog generation and the described columns, so DDL
// makes new names (a shard that refuses a stale statement, "cached plan
// must not change result type", fails that one run, which drops the kept
// description); a connection keeps at most maxConnStmts named statements
// beyond which merges parse unnamed.

const (
	descCacheSize = 1024
	maxConnStmts  = 256
)

// mergeDesc is what a shard said about a merge statement.
type mergeDesc struct {
	fields []pgproto3.FieldDescription
	pdesc  *pgproto3.ParameterDescription
	name   string // server statement name for repeats
	gen    uint64
}

// descCache keeps mergeDescs, dropped wholesale when full (merges of
// ever-new texts, e.g. literals, only ever cost the two round trips).
type descCache struct {
	mu sync.Mutex
	m  map[string]*mergeDesc
}

func (c *descCache) get(key string, gen uint64) *mergeDesc {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.m[key]
	if d == nil || d.gen != gen {
		return nil
	}
	return d
}

func (c *descCache) put(key string, d *mergeDesc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= descCacheSize {
		c.m = map[string]*mergeDesc{}
	}
	c.m[key] = d
}

func (c *descCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

func (c *descCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
}

// descKey identifies a merge statement as described by its first shard.
func descKey(shard, sql string, oids []uint32) string {
	b := make([]byte, 0, len(shard)+len(sql)+1+4*len(oids))
	b = append(b, shard...)
	b = append(b, 0)
	for _, o := range oids {
		b = binary.BigEndian.AppendUint32(b, o)
	}
	b = append(b, 0)
	b = append(b, sql...)
	return string(b)
}

// mergeStmtName is the server-side name of a merge statement as described
// by fields: after DDL that changes the columns (through pgshard: gen; from
// elsewhere: fields, described anew after the run that failed) the name
// changes, so a stale statement left on other connections is never bound.
func mergeStmtName(sql string, oids []uint32, gen uint64, fields []pgproto3.FieldDescription) string {
	h := sha256.New()
	b := binary.BigEndian.AppendUint64(nil, gen)
	for _, o := range oids {
		b = binary.BigEndian.AppendUint32(b, o)
	}
	for _, f := range fields {
		b = binary.BigEndian.AppendUint32(b, f.TableOID)
		b = binary.BigEndian.AppendUint16(b, f.TableAttributeNumber)
		b = binary.BigEndian.AppendUint32(b, f.DataTypeOID)
		b = binary.BigEndian.AppendUint32(b, uint32(f.TypeModifier))
	}
	h.Write(b)
	h.Write([]byte(sql))
	return "pgm_" + hex.EncodeToString(h.Sum(nil)[:12])
}

// sameFields reports whether two descriptions of the same statement
// agree on everything the merge checked (not the formats).
func sameFields(a, b []pgproto3.FieldDescription) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if !bytes.Equal(x.Name, y.Name) || x.TableOID != y.TableOID || x.TableAttributeNumber != y.TableAttributeNumber ||
			x.DataTypeOID != y.DataTypeOID || x.DataTypeSize != y.DataTypeSize || x.TypeModifier != y.TypeModifier {
			return false
		}
	}
	return true
}

// shardErr turns a shard's ErrorResponse into the client's error, with
// every field the shard sent (as wire.FromServer keeps them).
func shardErr(x *pgproto3.ErrorResponse) *wire.Error {
	return wire.FromServer(x)
}

// shardErrAt is shardErr with the error's position set to pos (0: none),
// for a statement the shards ran rewritten: a position into its text
// would point the client at the wrong place of its own.
func shardErrAt(x *pgproto3.ErrorResponse, pos int32) *wire.Error {
	e := wire.FromServer(x)
	e.Position = pos
	return e
}

// send prepares the shards' streams: after it returns without error every
// source is executing the statement and its next message is a row or the
// end of its rows; m.fields, m.pdesc, the formats and the collation checks
// are set.
func (m *merge) send(bind *pgproto3.Bind, ext bool, oids []uint32) *wire.Error {
	s := m.s
	if m.r.ShardSQL != nil {
		// A move's rows are left out on some shards, with a statement
		// that lasts as long as the move: described each time, run
		// unnamed, never cached.
		if werr := m.describe(oids); werr != nil {
			return werr
		}
		if werr := m.check(bind, ext); werr != nil {
			return werr
		}
		return m.execute(bind, oids)
	}
	gen := s.srv.catGen.Load()
	key := descKey(m.srcs[0].c.sc.Shard, m.r.SQL, oids)
	if d := s.srv.mergeDescs.get(key, gen); d != nil {
		return m.sendOnce(bind, ext, oids, key, d)
	}
	if werr := m.describe(oids); werr != nil {
		return werr
	}
	s.srv.mergeDescs.put(key, &mergeDesc{fields: m.fields, pdesc: m.pdesc, gen: gen, name: mergeStmtName(m.r.SQL, oids, gen, m.fields)})
	if werr := m.check(bind, ext); werr != nil {
		return werr
	}
	return m.execute(bind, oids)
}

// check validates the layout and collations of m.fields; it may query the
// first shard's catalog, so the connections must be idle.
func (m *merge) check(bind *pgproto3.Bind, ext bool) *wire.Error {
	if werr := m.layout(bind, ext); werr != nil {
		return werr
	}
	if werr := m.checkCollations(); werr != nil {
		return werr
	}
	return m.prepareRowChecks()
}

// describe is the first round trip of an unknown statement: Parse and
// Describe on every shard.
func (m *merge) describe(oids []uint32) *wire.Error {
	for _, src := range m.srcs {
		fe := src.c.sc.FE
		fe.Send(&pgproto3.Parse{Query: m.sqlFor(src), ParameterOIDs: oids})
		fe.Send(&pgproto3.Describe{ObjectType: 'S'})
		fe.Send(&pgproto3.Sync{})
		src.c.sc.Unnamed = mergeUnnamed
		if err := fe.Flush(); err != nil {
			src.c.sc.Broken = true
			return asWireErr(fmt.Errorf("shard %s: %w", src.c.sc.Shard, err))
		}
		src.c.inflight = true
	}
	var first *wire.Error
	for i, src := range m.srcs {
		for src.c.inflight {
			msg, err := src.c.sc.FE.Receive()
			if err != nil {
				src.c.sc.Broken = true
				return asWireErr(fmt.Errorf("shard %s: %w", src.c.sc.Shard, err))
			}
			switch x := msg.(type) {
			case *pgproto3.ParameterDescription:
				if i == 0 {
					m.pdesc = &pgproto3.ParameterDescription{ParameterOIDs: append([]uint32(nil), x.ParameterOIDs...)}
				}
			case *pgproto3.RowDescription:
				if i == 0 {
					m.fields = copyFields(x.Fields)
				}
			case *pgproto3.ErrorResponse:
				if first == nil {
					first = shardErr(x)
				}
			case *pgproto3.ReadyForQuery:
				src.c.sc.TxStatus = x.TxStatus
				src.c.inflight = false
			}
		}
	}
	return first
}

func copyFields(fs []pgproto3.FieldDescription) []pgproto3.FieldDescription {
	out := append([]pgproto3.FieldDescription(nil), fs...)
	for j := range out {
		out[j].Name = append([]byte(nil), fs[j].Name...)
	}
	return out
}

// execute is the second round trip: Bind and Execute the described
// statement.
func (m *merge) execute(bind *pgproto3.Bind, oids []uint32) *wire.Error {
	for _, src := range m.srcs {
		fe := src.c.sc.FE
		if src.c.sc.Unnamed != mergeUnnamed {
			// A catalog query (collation checks) dropped the statement.
			fe.Send(&pgproto3.Parse{Query: m.sqlFor(src), ParameterOIDs: oids})
		}
		src.c.sc.Unnamed = 0
		fe.Send(m.shardBind(bind, ""))
		fe.Send(&pgproto3.Execute{})
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			src.c.sc.Broken = true
			return asWireErr(fmt.Errorf("shard %s: %w", src.c.sc.Shard, err))
		}
		src.c.inflight = true
	}
	return nil
}

// sqlFor is the statement src's shard runs.
func (m *merge) sqlFor(src *mergeSrc) string {
	if q, ok := m.r.ShardSQL[src.c.shard]; ok {
		return q
	}
	return m.r.SQL
}

func (m *merge) shardBind(bind *pgproto3.Bind, name string) *pgproto3.Bind {
	b := &pgproto3.Bind{PreparedStatement: name, ResultFormatCodes: m.sfmt}
	if bind != nil {
		b.Parameters, b.ParameterFormatCodes = bind.Parameters, bind.ParameterFormatCodes
	}
	return b
}

// sendOnce runs a statement described before in one round trip, under
// its server name where the connection has room for it.
func (m *merge) sendOnce(bind *pgproto3.Bind, ext bool, oids []uint32, key string, d *mergeDesc) *wire.Error {
	s := m.s
	m.fields, m.pdesc = d.fields, d.pdesc
	if werr := m.check(bind, ext); werr != nil {
		return werr
	}
	names := make([]string, len(m.srcs))
	for i, src := range m.srcs {
		sc := src.c.sc
		fe := sc.FE
		name := d.name
		if _, ok := sc.Prepared[name]; !ok {
			if len(sc.Prepared) < maxConnStmts {
				// Close first: a failed run may have left it on the server.
				fe.Send(&pgproto3.Close{ObjectType: 'S', Name: name})
				fe.Send(&pgproto3.Parse{Name: name, Query: m.r.SQL, ParameterOIDs: oids})
				sc.Prepared[name] = struct{}{}
			} else {
				name = ""
				fe.Send(&pgproto3.Parse{Query: m.r.SQL, ParameterOIDs: oids})
				sc.Unnamed = 0
			}
		}
		names[i] = name
		fe.Send(m.shardBind(bind, name))
		fe.Send(&pgproto3.Describe{ObjectType: 'P'})
		fe.Send(&pgproto3.Execute{})
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			sc.Broken = true
			return asWireErr(fmt.Errorf("shard %s: %w", sc.Shard, err))
		}
		src.c.inflight = true
	}
	// Read each shard up to its RowDescription; its rows follow.
	var first *wire.Error
	for i, src := range m.srcs {
		sc := src.c.sc
	read:
		for src.c.inflight {
			msg, err := sc.FE.Receive()
			if err != nil {
				sc.Broken = true
				return asWireErr(fmt.Errorf("shard %s: %w", sc.Shard, err))
			}
			switch x := msg.(type) {
			case *pgproto3.RowDescription:
				if i == 0 && !sameFields(x.Fields, d.fields) {
					s.srv.mergeDescs.drop(key)
					if first == nil {
						first = wire.Errorf(pgcode.FeatureNotSupported, "the result columns of this cross-shard query changed on shard %s since pgshard last ran it", sc.Shard).
							WithHint("Retry the query: table definitions changed without pgshard (DDL sent to a shard directly).")
					}
				}
				break read
			case *pgproto3.NoData:
				break read
			case *pgproto3.ErrorResponse:
				if first == nil {
					first = shardErr(x)
				}
				if names[i] != "" {
					// The statement may be gone or stale on this server
					// (DEALLOCATE, a changed result type): parse it anew.
					delete(sc.Prepared, names[i])
				}
				s.srv.mergeDescs.drop(key)
			case *pgproto3.ReadyForQuery:
				sc.TxStatus = x.TxStatus
				src.c.inflight = false
			}
		}
	}
	return first
}
