package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// rawLogin opens a connection to addr and completes startup and SCRAM
// authentication with pgconn, then hands back the raw protocol connection.
func rawLogin(t *testing.T, addr string) *pgconn.HijackedConn {
	t.Helper()
	h := rawLoginURL(t, proxyURL(addr))
	_ = h.Conn.SetDeadline(time.Now().Add(15 * time.Second))
	return h
}

// readUntilClose reads backend messages until the connection closes and
// returns the first ErrorResponse seen, if any.
func readUntilClose(t *testing.T, c net.Conn) *pgproto3.ErrorResponse {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	var first *pgproto3.ErrorResponse
	for {
		m, err := fe.Receive()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("connection was not closed")
			}
			return first
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok && first == nil {
			c := *e
			first = &c
		}
	}
}

func TestBadInput(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 3})
	ctx := context.Background()
	good := connect(t, proxyURL(addr))
	check := func(t *testing.T) {
		t.Helper()
		var one int
		if err := good.QueryRow(ctx, "select 1").Scan(&one); err != nil {
			t.Fatalf("other client disturbed: %v", err)
		}
	}

	t.Run("malformed startup length", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0})
		// Postgres closes without an answer ("invalid length of startup packet").
		if e := readUntilClose(t, c); e != nil {
			t.Fatalf("unexpected error response %+v", e)
		}
		check(t)
	})
	t.Run("unsupported protocol version", func(t *testing.T) {
		ask := func(addr string) *pgproto3.ErrorResponse {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			b := binary.BigEndian.AppendUint32(nil, 8)
			b = binary.BigEndian.AppendUint32(b, 4<<16|1)
			_, _ = c.Write(b)
			return readUntilClose(t, c)
		}
		want := ask(fmt.Sprintf("127.0.0.1:%d", cluster.Instances[0].Port))
		got := ask(addr)
		if want == nil || got == nil || got.Code != want.Code || got.Message != want.Message || got.Severity != "FATAL" {
			t.Fatalf("postgres said %+v\npgshard said %+v", want, got)
		}
		check(t)
	})
	t.Run("garbage instead of startup", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		readUntilClose(t, c)
		check(t)
	})
	t.Run("message length over the limit", func(t *testing.T) {
		h := rawLogin(t, addr)
		b := []byte{'Q'}
		b = binary.BigEndian.AppendUint32(b, 0x7fffffff)
		_, _ = h.Conn.Write(b)
		e := readUntilClose(t, h.Conn)
		if e == nil || e.Code != "08P01" || e.Severity != "FATAL" {
			t.Fatalf("got %+v", e)
		}
		check(t)
	})
	t.Run("unknown message type", func(t *testing.T) {
		h := rawLogin(t, addr)
		_, _ = h.Conn.Write([]byte{'z', 0, 0, 0, 4})
		e := readUntilClose(t, h.Conn)
		// Postgres: FATAL 08P01 invalid frontend message type 122
		if e == nil || e.Code != "08P01" || e.Message != "invalid frontend message type 122" {
			t.Fatalf("got %+v", e)
		}
		check(t)
	})
	t.Run("wrong password", func(t *testing.T) {
		_, err := pgconn.Connect(ctx, "postgres://app:wrong@"+addr+"/app?sslmode=disable")
		if pgCode(err) != "28P01" {
			t.Fatalf("want 28P01, got %v", err)
		}
		_, err = pgconn.Connect(ctx, "postgres://nobody:wrong@"+addr+"/app?sslmode=disable")
		if pgCode(err) != "28P01" {
			t.Fatalf("unknown user: want 28P01, got %v", err)
		}
		check(t)
	})
	t.Run("client vanishes mid-query and mid-transaction", func(t *testing.T) {
		before := serverConns(t, cluster.Instances[0])
		var wg sync.WaitGroup
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				h := rawLogin(t, addr)
				if i == 0 {
					h.Frontend.Send(&pgproto3.Query{String: "select pg_sleep(0.5)"})
				} else {
					h.Frontend.Send(&pgproto3.Query{String: "begin; select 1"})
				}
				_ = h.Frontend.Flush()
				time.Sleep(100 * time.Millisecond)
				_ = h.Conn.Close()
			}(i)
		}
		wg.Wait()
		check(t)
		// The pool holds at most its size; sessions that vanished inside a
		// transaction must not keep a server connection busy.
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := serverConns(t, cluster.Instances[0])
			busy := busyServerConns(t)
			if n <= max(before, 3) && busy == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("server connections: %d (before %d), busy %d", n, before, busy)
			}
			time.Sleep(100 * time.Millisecond)
		}
		check(t)
	})
}

// busyServerConns counts app-user backends that are not idle (running a
// query or inside a transaction).
func busyServerConns(t *testing.T) int {
	c := connect(t, cluster.Instances[0].AdminDSN)
	var n int
	if err := c.QueryRow(context.Background(), "select count(*) from pg_stat_activity where usename = 'app' and backend_type = 'client backend' and state <> 'idle'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
