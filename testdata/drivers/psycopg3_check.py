"""psycopg 3 checks run through pgshard by the e2e test TestPsycopg3.

Usage (Debian's python3-psycopg; run /usr/bin/python3):

    PGSHARD_DSN=postgres://app:app@127.0.0.1:6432/app?sslmode=disable \
        /usr/bin/python3 psycopg3_check.py

psycopg 3 binds parameters on the server (extended protocol) and, with
prepare=True, uses named protocol-level prepared statements: PQsendPrepare
(Parse, Sync) once per connection, then PQsendQueryPrepared (Bind, Describe,
Execute, Sync) on each use. Every check prints PASS or FAIL with its reason;
the exit status is 1 if any check failed.
"""

import os
import sys
import threading
import time
import traceback
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors

TABLE = "psycopg3_t"
TRANSACTIONS = 150

failures = 0


def check(name):
    def run(fn):
        global failures
        start = time.monotonic()
        try:
            fn()
            print(f"PASS {name} ({(time.monotonic() - start) * 1000:.0f} ms)", flush=True)
        except Exception:
            failures += 1
            print(f"FAIL {name}: {traceback.format_exc()}", flush=True)
        return fn

    return run


def expect_error(fn, code):
    try:
        fn()
    except psycopg.Error as e:
        if e.sqlstate != code:
            raise AssertionError(f"want SQLSTATE {code}, got {e.sqlstate}: {e}") from e
        return e
    raise AssertionError(f"want SQLSTATE {code}, got success")


def with_password(dsn, password):
    u = urlsplit(dsn)
    host = u.netloc.rsplit("@", 1)[-1]
    return urlunsplit(u._replace(netloc=f"{u.username}:{password}@{host}"))


class Churn:
    """Other clients kept busy so that, with a pool of 2 server connections,
    a client's transactions land on different server connections."""

    def __init__(self, dsn, n):
        self.stop = threading.Event()
        self.errors = []
        self.threads = [threading.Thread(target=self.loop, args=(dsn,)) for _ in range(n)]
        for t in self.threads:
            t.start()

    def loop(self, dsn):
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                while not self.stop.is_set():
                    # Holding its server connection a little while: on a
                    # loaded machine a quick query rarely overlapped the
                    # main client's transactions, which then all ran on
                    # the pool's last released connection (the check
                    # failed once, in 1 of about 10 CI runs, with 1
                    # backend).
                    c.execute("select pg_backend_pid(), pg_sleep(0.003)").fetchone()
        except Exception as e:  # reported by close()
            self.errors.append(e)

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        if self.errors:
            raise AssertionError(f"churn clients failed: {self.errors}")


def main(dsn):
    conn = None

    @check("connect with SCRAM")
    def _():
        nonlocal conn
        conn = psycopg.connect(dsn, autocommit=True)
        # libpq reports no SQLSTATE for a failed connection (28P01 from
        # Postgres too); the message is what it passes on.
        try:
            psycopg.connect(with_password(dsn, "wrong-password"))
        except psycopg.OperationalError as e:
            assert "password authentication failed" in str(e), e
        else:
            raise AssertionError("a wrong password was accepted")

    if conn is None:
        return

    @check("bound parameters (server-side binding)")
    def _():
        row = conn.execute("select %s::int + %s::int, %s::text", (40, 2, "héllo")).fetchone()
        assert row == (42, "héllo"), row
        conn.execute(f"drop table if exists {TABLE}")
        conn.execute(f"create table {TABLE} (id int primary key, v text)")

    @check(f"named prepared statement reused across {TRANSACTIONS} transactions")
    def _():
        ins = f"insert into {TABLE} values (%s, %s)"
        churn = Churn(dsn, 2)
        pids, pids_outside = set(), set()
        try:
            for i in range(TRANSACTIONS):
                with conn.transaction():
                    conn.execute(ins, (i, f"v{i}"), prepare=True)
                    pids.add(conn.execute("select pg_backend_pid()", prepare=True).fetchone()[0])
                # Outside a transaction the Parse and the Bind/Execute of a
                # statement's first use are separate Syncs, free to run on
                # different server connections.
                row = conn.execute("select %s::int * 2, pg_backend_pid()", (i,), prepare=True).fetchone()
                assert row[0] == 2 * i, row
                pids_outside.add(row[1])
        finally:
            churn.close()
        n = conn.execute(f"select count(*) from {TABLE}").fetchone()[0]
        assert n == TRANSACTIONS, f"want {TRANSACTIONS} rows, got {n}"
        assert len(pids) >= 2, f"transactions ran on {len(pids)} server backend(s), want several"
        assert len(pids_outside) >= 2, f"autocommit statements ran on {len(pids_outside)} server backend(s)"
        print(f"  transactions ran on {len(pids)} server backends, autocommit statements on {len(pids_outside)}")

    @check("pipeline mode (executemany and a pipeline block)")
    def _():
        with conn.cursor() as cur:
            cur.executemany(f"insert into {TABLE} values (%s, %s)", [(i, f"p{i}") for i in range(500, 600)])
        with conn.pipeline():
            curs = [conn.execute("select v from " + TABLE + " where id = %s", (i,)) for i in range(500, 520)]
        got = [c.fetchone()[0] for c in curs]
        assert got == [f"p{i}" for i in range(500, 520)], got
        conn.execute(f"delete from {TABLE} where id between 500 and 599")

    @check("COPY in and out")
    def _():
        with conn.cursor() as cur:
            with cur.copy(f"copy {TABLE} (id, v) from stdin") as cp:
                for i in range(1000, 3000):
                    cp.write_row((i, f"c{i}"))
            assert cur.rowcount == 2000, f"copy from: rowcount {cur.rowcount}"
            out = bytearray()
            with cur.copy(f"copy (select id, v from {TABLE} where id >= 1000 order by id) to stdout") as cp:
                for data in cp:
                    out += data
            want = "".join(f"{i}\tc{i}\n" for i in range(1000, 3000)).encode()
            nl = out.count(b"\n")
            assert bytes(out) == want, f"copy to: {nl} lines, starts {bytes(out[:20])!r}"

            def bad_copy():
                with cur.copy(f"copy {TABLE} from stdin") as cp:
                    cp.write(b"5000\tok\nnot-a-number\tbad\n")

            expect_error(bad_copy, "22P02")
            n = conn.execute(f"select count(*) from {TABLE} where id = 5000").fetchone()[0]
            assert n == 0, "the failed COPY left rows"

    @check("syntax error then good query")
    def _():
        expect_error(lambda: conn.execute("selec 1"), "42601")
        assert conn.execute("select 1").fetchone() == (1,)
        # With parameters: the extended protocol's Parse fails.
        expect_error(lambda: conn.execute("selec %s::int", (1,)), "42601")
        assert conn.execute("select %s::int", (1,)).fetchone() == (1,)

    @check("cancel (CancelRequest) of pg_sleep(10)")
    def _():
        def cancel():
            time.sleep(0.2)
            conn.cancel()  # PQcancel: a CancelRequest on a new connection

        t = threading.Thread(target=cancel)
        start = time.monotonic()
        t.start()
        try:
            expect_error(lambda: conn.execute("select pg_sleep(10)"), "57014")
            elapsed = time.monotonic() - start
            assert elapsed < 1.0, f"cancel took {elapsed:.2f}s"
        finally:
            t.join()
        assert conn.execute("select %s::int", (1,)).fetchone() == (1,), "connection unusable after cancel"

    @check("cleanup")
    def _():
        conn.execute(f"drop table if exists {TABLE}")
        conn.close()


if __name__ == "__main__":
    dsn = os.environ.get("PGSHARD_DSN") or (sys.argv[1] if len(sys.argv) > 1 else "")
    if not dsn:
        sys.exit("usage: PGSHARD_DSN=postgres://user:pass@host:port/db /usr/bin/python3 psycopg3_check.py")
    print(f"psycopg {psycopg.__version__}, libpq {psycopg.pq.version()}", flush=True)
    try:
        main(dsn)
    except Exception:
        failures += 1
        print(f"FAIL unexpected: {traceback.format_exc()}", flush=True)
    print(f"{failures} check(s) failed" if failures else "all checks passed", flush=True)
    sys.exit(1 if failures else 0)
