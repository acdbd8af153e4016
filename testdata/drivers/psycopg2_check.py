"""psycopg2 checks run through pgshard by the e2e test TestPsycopg2.

Usage (Debian's python3-psycopg2; run /usr/bin/python3):

    PGSHARD_DSN=postgres://app:app@127.0.0.1:6432/app?sslmode=disable \
        /usr/bin/python3 psycopg2_check.py

psycopg2 interpolates parameters on the client and uses only the simple
query protocol, so it has no protocol-level prepared statements to check
(SQL-level PREPARE does not survive transaction pooling). Every check prints
PASS or FAIL with its reason; the exit status is 1 if any check failed.
"""

import io
import os
import sys
import threading
import time
import traceback
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.errors

TABLE = "psycopg2_t"
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
    except psycopg2.Error as e:
        if e.pgcode != code:
            raise AssertionError(f"want SQLSTATE {code}, got {e.pgcode}: {e}") from e
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
            c = psycopg2.connect(dsn)
            c.autocommit = True
            with c.cursor() as cur:
                while not self.stop.is_set():
                    cur.execute("select pg_backend_pid()")
                    cur.fetchone()
            c.close()
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
        conn = psycopg2.connect(dsn)
        # libpq reports no SQLSTATE for a failed connection (28P01 from
        # Postgres too); the message is what it passes on.
        try:
            psycopg2.connect(with_password(dsn, "wrong-password"))
        except psycopg2.OperationalError as e:
            assert "password authentication failed" in str(e), e
        else:
            raise AssertionError("a wrong password was accepted")

    if conn is None:
        return

    @check("bound parameters")
    def _():
        with conn.cursor() as cur:
            cur.execute("select %s::int + %s::int, %s::text", (40, 2, "héllo"))
            row = cur.fetchone()
            assert row == (42, "héllo"), row
            cur.execute(f"drop table if exists {TABLE}; create table {TABLE} (id int primary key, v text)")
        conn.commit()

    @check(f"parameters in {TRANSACTIONS} transactions on changing server connections")
    def _():
        churn = Churn(dsn, 2)
        pids = set()
        try:
            with conn.cursor() as cur:
                for i in range(TRANSACTIONS):
                    # psycopg2 opens a transaction (BEGIN) before the first statement.
                    cur.execute(f"insert into {TABLE} values (%s, %s)", (i, f"v{i}"))
                    cur.execute("select pg_backend_pid()")
                    pids.add(cur.fetchone()[0])
                    conn.commit()
        finally:
            churn.close()
        with conn.cursor() as cur:
            cur.execute(f"select count(*) from {TABLE}")
            n = cur.fetchone()[0]
        conn.commit()
        assert n == TRANSACTIONS, f"want {TRANSACTIONS} rows, got {n}"
        assert len(pids) >= 2, f"transactions ran on {len(pids)} server backend(s), want several"
        print(f"  transactions ran on {len(pids)} server backends")

    @check("COPY in and out")
    def _():
        data = "".join(f"{i}\tc{i}\n" for i in range(1000, 3000))
        with conn.cursor() as cur:
            cur.copy_expert(f"copy {TABLE} (id, v) from stdin", io.StringIO(data))
            assert cur.rowcount == 2000, f"copy from: rowcount {cur.rowcount}"
            conn.commit()
            out = io.StringIO()
            cur.copy_expert(f"copy (select id, v from {TABLE} where id >= 1000 order by id) to stdout", out)
            conn.commit()
            got = out.getvalue()
            assert got == data, f"copy to: {got.count(chr(10))} lines, starts {got[:20]!r}"
            # A bad row fails the COPY with 22P02; after rollback the
            # connection is usable and nothing was copied.
            expect_error(lambda: cur.copy_expert(f"copy {TABLE} from stdin", io.StringIO("5000\tok\nnot-a-number\tbad\n")), "22P02")
            conn.rollback()
            cur.execute(f"select count(*) from {TABLE} where id = 5000")
            assert cur.fetchone()[0] == 0, "the failed COPY left rows"
        conn.commit()

    @check("syntax error then good query")
    def _():
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                expect_error(lambda: cur.execute("selec 1"), "42601")
                cur.execute("select 1")
                assert cur.fetchone() == (1,)
        finally:
            conn.autocommit = False
        # Inside a transaction the error aborts it (25P02) until ROLLBACK.
        with conn.cursor() as cur:
            expect_error(lambda: cur.execute("selec 1"), "42601")
            expect_error(lambda: cur.execute("select 1"), "25P02")
            conn.rollback()
            cur.execute("select 1")
            assert cur.fetchone() == (1,)
        conn.commit()

    @check("cancel (CancelRequest) of pg_sleep(10)")
    def _():
        conn.autocommit = True

        def cancel():
            time.sleep(0.2)
            conn.cancel()  # PQcancel: a CancelRequest on a new connection

        t = threading.Thread(target=cancel)
        start = time.monotonic()
        t.start()
        try:
            with conn.cursor() as cur:
                expect_error(lambda: cur.execute("select pg_sleep(10)"), "57014")
                elapsed = time.monotonic() - start
                assert elapsed < 1.0, f"cancel took {elapsed:.2f}s"
                cur.execute("select 1")
                assert cur.fetchone() == (1,), "connection unusable after cancel"
        finally:
            t.join()

    @check("cleanup")
    def _():
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"drop table if exists {TABLE}")
        conn.close()


if __name__ == "__main__":
    dsn = os.environ.get("PGSHARD_DSN") or (sys.argv[1] if len(sys.argv) > 1 else "")
    if not dsn:
        sys.exit("usage: PGSHARD_DSN=postgres://user:pass@host:port/db /usr/bin/python3 psycopg2_check.py")
    print(f"psycopg2 {psycopg2.__version__}, libpq {psycopg2.extensions.libpq_version()}", flush=True)
    try:
        main(dsn)
    except Exception:
        failures += 1
        print(f"FAIL unexpected: {traceback.format_exc()}", flush=True)
    print(f"{failures} check(s) failed" if failures else "all checks passed", flush=True)
    sys.exit(1 if failures else 0)
