package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// scriptLine is one frontend message of a testdata/wire script.
type scriptLine struct {
	Type          string
	String        string
	Name          string
	Query         string
	OIDs          []uint32
	Portal        string
	Stmt          string
	Params        []*string
	ResultFormats []int16
	Kind          string
	MaxRows       uint32
	Data          string
	Message       string
}

func (l scriptLine) message() (pgproto3.FrontendMessage, error) {
	switch l.Type {
	case "Query":
		return &pgproto3.Query{String: l.String}, nil
	case "Parse":
		return &pgproto3.Parse{Name: l.Name, Query: l.Query, ParameterOIDs: l.OIDs}, nil
	case "Bind":
		var ps [][]byte
		for _, p := range l.Params {
			if p == nil {
				ps = append(ps, nil)
			} else {
				ps = append(ps, []byte(*p))
			}
		}
		return &pgproto3.Bind{DestinationPortal: l.Portal, PreparedStatement: l.Stmt, Parameters: ps, ResultFormatCodes: l.ResultFormats}, nil
	case "Describe":
		return &pgproto3.Describe{ObjectType: l.Kind[0], Name: l.Name}, nil
	case "Execute":
		return &pgproto3.Execute{Portal: l.Portal, MaxRows: l.MaxRows}, nil
	case "Close":
		return &pgproto3.Close{ObjectType: l.Kind[0], Name: l.Name}, nil
	case "Sync":
		return &pgproto3.Sync{}, nil
	case "Flush":
		return &pgproto3.Flush{}, nil
	case "CopyData":
		return &pgproto3.CopyData{Data: []byte(l.Data)}, nil
	case "CopyDone":
		return &pgproto3.CopyDone{}, nil
	case "CopyFail":
		return &pgproto3.CopyFail{Message: l.Message}, nil
	}
	return nil, fmt.Errorf("unknown message type %q", l.Type)
}

func readScript(t *testing.T, path string) []scriptLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []scriptLine
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var l scriptLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("%s:%d: %v", path, n, err)
		}
		out = append(out, l)
	}
	return out
}

// runScript sends the script on a fresh connection to url and returns the
// backend messages it got, one JSON text per message.
func runScript(t *testing.T, url string, script []scriptLine) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	h, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Conn.Close()
	_ = h.Conn.SetDeadline(time.Now().Add(20 * time.Second))
	fe := h.Frontend
	var got []string
	syncs := 0 // ReadyForQuery messages still expected
	inCopyIn := false
	read := func(untilIdle bool) {
		for {
			if !untilIdle && syncs == 0 {
				return
			}
			m, err := fe.Receive()
			if err != nil {
				t.Fatalf("receive: %v (after %d messages)", err, len(got))
			}
			got = append(got, normalise(m))
			switch m.(type) {
			case *pgproto3.ReadyForQuery:
				syncs--
				if syncs == 0 {
					return
				}
			case *pgproto3.CopyInResponse:
				inCopyIn = true
				return
			}
		}
	}
	// readFor sends what is buffered and reads what arrives within d.
	readFor := func(d time.Duration) {
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		_ = h.Conn.SetReadDeadline(time.Now().Add(d))
		for {
			m, err := fe.Receive()
			if err != nil {
				break
			}
			got = append(got, normalise(m))
		}
		_ = h.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	}
	for i, l := range script {
		if l.Type == "Wait" {
			// Send what is buffered and read what comes within a moment,
			// with no Sync or Flush: Postgres sends an error at once.
			readFor(500 * time.Millisecond)
			got = append(got, "(end of wait)")
			continue
		}
		m, err := l.message()
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		fe.Send(m)
		switch l.Type {
		case "Query":
			syncs++
		case "Sync":
			if !inCopyIn {
				syncs++
			}
		case "CopyDone", "CopyFail":
			inCopyIn = false
		}
		switch l.Type {
		case "Query", "Sync", "CopyDone", "CopyFail":
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			if !inCopyIn {
				read(true)
			} else if l.Type == "Query" {
				read(true)
			}
		case "Flush":
			// Answers to a Flush: read with a short deadline, there is no
			// ReadyForQuery to wait for.
			readFor(300 * time.Millisecond)
			// A timed-out read may leave the frontend mid-message; the
			// answers to a Flush are small and complete, so it is not.
		}
	}
	return got
}

func normalise(m pgproto3.BackendMessage) string {
	if rd, ok := m.(*pgproto3.RowDescription); ok {
		// Scripts create their tables afresh, so table OIDs differ run to run.
		c := pgproto3.RowDescription{Fields: append([]pgproto3.FieldDescription(nil), rd.Fields...)}
		for i := range c.Fields {
			c.Fields[i].TableOID = 0
		}
		m = &c
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Sprintf("%T(unmarshalable: %v)", m, err)
	}
	return string(b)
}

// TestWireComparison sends the scripts under testdata/wire to Postgres and
// to pgshard and requires the same answers.
func TestWireComparison(t *testing.T) {
	files, err := filepath.Glob("../../../testdata/wire/*.jsonl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, mode := range []struct {
		name string
		o    proxyOpts
	}{
		{"transaction", proxyOpts{poolSize: 2}},
		{"session", proxyOpts{mode: 1, poolSize: 2}},
		{"transaction-loop", proxyOpts{poolSize: 2, loops: true}},
		{"session-loop", proxyOpts{mode: 1, poolSize: 2, loops: true}},
	} {
		addr := startProxy(t, mode.o)
		for _, f := range files {
			t.Run(mode.name+"/"+strings.TrimSuffix(filepath.Base(f), ".jsonl"), func(t *testing.T) {
				script := readScript(t, f)
				want := runScript(t, cluster.Instances[0].DSN, script)
				got := runScript(t, proxyURL(addr), script)
				n := max(len(want), len(got))
				for i := 0; i < n; i++ {
					var w, g string
					if i < len(want) {
						w = want[i]
					}
					if i < len(got) {
						g = got[i]
					}
					if w != g && !sameProxyError(w, g) {
						t.Errorf("message %d differs:\n postgres: %s\n  pgshard: %s", i, w, g)
					}
				}
			})
		}
	}
}

// sameProxyError accepts an ErrorResponse that pgshard raised itself (no C
// source location) for the same error from Postgres: the documented difference.
func sameProxyError(w, g string) bool {
	var we, ge pgproto3.ErrorResponse
	if !strings.Contains(w, `"Type":"ErrorResponse"`) || json.Unmarshal([]byte(w), &we) != nil || json.Unmarshal([]byte(g), &ge) != nil {
		return false
	}
	if ge.File != "" || ge.Line != 0 || ge.Routine != "" {
		return false
	}
	we.File, we.Line, we.Routine = "", 0, ""
	a, _ := json.Marshal(&we)
	b, _ := json.Marshal(&ge)
	return string(a) == string(b)
}
