package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// slowRows is a COPY source: chunks of about 64 kB of rows, one every
// 50 ms, the second holding a row the server refuses.
type slowRows struct {
	chunk, n int
	rest     []byte // of the current chunk, not read yet
}

func (r *slowRows) Read(p []byte) (int, error) {
	if len(r.rest) == 0 {
		if r.chunk >= r.n {
			return 0, io.EOF
		}
		time.Sleep(50 * time.Millisecond)
		var b strings.Builder
		for b.Len() < 64<<10 {
			fmt.Fprintf(&b, "%d\t%s\n", r.chunk, strings.Repeat("x", 100))
		}
		if r.chunk == 1 {
			b.WriteString("not a number\tbad\n")
		}
		r.chunk++
		r.rest = []byte(b.String())
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

// An error the server sends in the middle of COPY FROM STDIN reaches the
// client at once, as it does straight from Postgres: pgconn stops sending
// when it sees it. Before, pgshard passed it on only after the client had
// sent everything (pgx's TestConnCopyFromFailServerSideMidwayAbortsWithoutWaiting
// took 10 s through pgshard, against a second allowed).
func TestCopyErrorArrivesEarly(t *testing.T) {
	for _, loops := range []bool{false, true} {
		t.Run(fmt.Sprintf("loops=%v", loops), func(t *testing.T) {
			addr := startProxy(t, proxyOpts{loops: loops})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := pgconn.Connect(ctx, proxyURL(addr))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			table := fmt.Sprintf("copy_err_%v", loops)
			if err := c.Exec(ctx, fmt.Sprintf("DROP TABLE IF EXISTS %[1]s; CREATE TABLE %[1]s (n int, s text)", table)).Close(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Exec(context.Background(), "DROP TABLE "+table).Close() }()

			// 100 chunks at 50 ms: 5 s to send them all.
			start := time.Now()
			_, err = c.CopyFrom(ctx, &slowRows{n: 100}, "COPY "+table+" FROM STDIN")
			took := time.Since(start)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "22P02" {
				t.Fatalf("CopyFrom: %v, want the server's 22P02", err)
			}
			if took > 2*time.Second {
				t.Fatalf("the error came after %v: the client sent (nearly) everything first", took)
			}
			// The session goes on, and the copy left nothing.
			res := c.Exec(ctx, "SELECT count(*) FROM "+table)
			rs, err := res.ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if got := string(rs[0].Rows[0][0]); got != "0" {
				t.Fatalf("%s rows after the failed copy", got)
			}
		})
	}
}
