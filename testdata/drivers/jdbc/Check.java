// JDBC (pgjdbc, Debian's libpostgresql-jdbc-java) checks run through pgshard
// by the e2e test TestJDBC. Usage:
//
//	javac -cp /usr/share/java/postgresql.jar -d /tmp/check Check.java
//	PGSHARD_DSN=postgres://app:app@127.0.0.1:6432/app?sslmode=disable \
//	    java -cp /tmp/check:/usr/share/java/postgresql.jar Check
//
// prepareThreshold=1 makes pgjdbc use named server-side statements (S_1,
// S_2, ...) from a PreparedStatement's first execution. Every check prints
// PASS or FAIL with its reason; the exit status is 1 if any check failed.

import java.io.PrintWriter;
import java.io.StringReader;
import java.io.StringWriter;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;

import org.postgresql.PGConnection;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;
import org.postgresql.util.DriverInfo;

public class Check {
    static final String TABLE = "jdbc_t";
    static final int TRANSACTIONS = 150;

    static int failures = 0;
    static String url;
    static String user;
    static String password;

    interface Body {
        void run() throws Exception;
    }

    static void check(String name, Body body) {
        long start = System.nanoTime();
        try {
            body.run();
            System.out.printf("PASS %s (%d ms)%n", name, (System.nanoTime() - start) / 1_000_000);
        } catch (Throwable e) {
            failures++;
            StringWriter sw = new StringWriter();
            e.printStackTrace(new PrintWriter(sw));
            System.out.printf("FAIL %s: %s%n", name, sw);
        }
        System.out.flush();
    }

    static void require(boolean cond, String msg) {
        if (!cond) {
            throw new AssertionError(msg);
        }
    }

    static SQLException expectError(Body body, String code) throws Exception {
        try {
            body.run();
        } catch (SQLException e) {
            require(code.equals(e.getSQLState()), "want SQLSTATE " + code + ", got " + e.getSQLState() + ": " + e.getMessage());
            return e;
        }
        throw new AssertionError("want SQLSTATE " + code + ", got success");
    }

    static Connection connect(String pass) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", pass);
        p.setProperty("sslmode", "disable");
        p.setProperty("prepareThreshold", "1");
        return DriverManager.getConnection(url, p);
    }

    static int queryInt(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            require(rs.next(), "no row from " + sql);
            return rs.getInt(1);
        }
    }

    /**
     * Other clients kept busy so that, with a pool of 2 server connections, a
     * client's transactions land on different server connections.
     */
    static final class Churn implements AutoCloseable {
        final AtomicBoolean stop = new AtomicBoolean();
        final List<Thread> threads = new ArrayList<>();
        final List<Throwable> errors = java.util.Collections.synchronizedList(new ArrayList<>());

        Churn(int n) {
            for (int i = 0; i < n; i++) {
                Thread t = new Thread(() -> {
                    try (Connection c = connect(password)) {
                        while (!stop.get()) {
                            queryInt(c, "select pg_backend_pid()");
                        }
                    } catch (Throwable e) {
                        errors.add(e);
                    }
                });
                t.start();
                threads.add(t);
            }
        }

        @Override
        public void close() throws InterruptedException {
            stop.set(true);
            for (Thread t : threads) {
                t.join();
            }
            require(errors.isEmpty(), "churn clients failed: " + errors);
        }
    }

    public static void main(String[] args) throws Exception {
        String dsn = System.getenv("PGSHARD_DSN");
        if ((dsn == null || dsn.isEmpty()) && args.length > 0) {
            dsn = args[0];
        }
        if (dsn == null || dsn.isEmpty()) {
            System.err.println("usage: PGSHARD_DSN=postgres://user:pass@host:port/db java Check");
            System.exit(2);
        }
        URI u = new URI(dsn);
        String[] userInfo = u.getRawUserInfo().split(":", 2);
        user = URLDecoder.decode(userInfo[0], StandardCharsets.UTF_8);
        password = URLDecoder.decode(userInfo[1], StandardCharsets.UTF_8);
        url = "jdbc:postgresql://" + u.getHost() + ":" + u.getPort() + u.getPath();
        System.out.println(DriverInfo.DRIVER_FULL_NAME + ", " + url);

        try {
            run();
        } catch (Throwable e) {
            failures++;
            System.out.println("FAIL unexpected: " + e);
            e.printStackTrace(System.out);
        }
        System.out.println(failures > 0 ? failures + " check(s) failed" : "all checks passed");
        System.exit(failures > 0 ? 1 : 0);
    }

    static void run() throws Exception {
        Connection[] holder = new Connection[1];
        check("connect with SCRAM", () -> {
            holder[0] = connect(password);
            expectError(() -> connect("wrong-password").close(), "28P01");
        });
        Connection conn = holder[0];
        if (conn == null) {
            return;
        }

        check("bound parameters", () -> {
            try (PreparedStatement ps = conn.prepareStatement("select ?::int + ?::int, ?::text")) {
                ps.setInt(1, 40);
                ps.setInt(2, 2);
                ps.setString(3, "héllo");
                try (ResultSet rs = ps.executeQuery()) {
                    require(rs.next(), "no row");
                    require(rs.getInt(1) == 42 && "héllo".equals(rs.getString(2)), "got " + rs.getInt(1) + " " + rs.getString(2));
                }
            }
            try (Statement st = conn.createStatement()) {
                st.execute("drop table if exists " + TABLE);
                st.execute("create table " + TABLE + " (id int primary key, v text)");
            }
        });

        check("named prepared statement reused across " + TRANSACTIONS + " transactions", () -> {
            Set<Integer> pids = new HashSet<>();
            conn.setAutoCommit(false);
            try (Churn churn = new Churn(2);
                    PreparedStatement ins = conn.prepareStatement("insert into " + TABLE + " values (?, ?)");
                    PreparedStatement pid = conn.prepareStatement("select pg_backend_pid()")) {
                for (int i = 0; i < TRANSACTIONS; i++) {
                    ins.setInt(1, i);
                    ins.setString(2, "v" + i);
                    require(ins.executeUpdate() == 1, "insert #" + i);
                    try (ResultSet rs = pid.executeQuery()) {
                        rs.next();
                        pids.add(rs.getInt(1));
                    }
                    conn.commit();
                }
                require(ins.unwrap(PGStatement.class).isUseServerPrepare(), "pgjdbc did not use a server-prepared statement");
            } finally {
                conn.setAutoCommit(true);
            }
            int n = queryInt(conn, "select count(*) from " + TABLE);
            require(n == TRANSACTIONS, "want " + TRANSACTIONS + " rows, got " + n);
            require(pids.size() >= 2, "transactions ran on " + pids.size() + " server backend(s), want several");
            System.out.println("  transactions ran on " + pids.size() + " server backends");
        });

        check("COPY in and out (CopyManager)", () -> {
            CopyManager cm = conn.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder data = new StringBuilder();
            for (int i = 1000; i < 3000; i++) {
                data.append(i).append('\t').append('c').append(i).append('\n');
            }
            long n = cm.copyIn("copy " + TABLE + " (id, v) from stdin", new StringReader(data.toString()));
            require(n == 2000, "copy in: " + n + " rows");
            StringWriter out = new StringWriter();
            n = cm.copyOut("copy (select id, v from " + TABLE + " where id >= 1000 order by id) to stdout", out);
            require(n == 2000, "copy out: " + n + " rows");
            String got = out.toString();
            require(got.equals(data.toString()), "copy out: starts " + got.substring(0, Math.min(20, got.length())));
            // A bad row fails the COPY with 22P02 and the connection stays usable.
            expectError(() -> cm.copyIn("copy " + TABLE + " from stdin", new StringReader("5000\tok\nnot-a-number\tbad\n")), "22P02");
            require(queryInt(conn, "select count(*) from " + TABLE + " where id = 5000") == 0, "the failed COPY left rows");
        });

        check("syntax error then good query", () -> {
            try (Statement st = conn.createStatement()) {
                expectError(() -> st.execute("selec 1"), "42601");
            }
            require(queryInt(conn, "select 1") == 1, "query after the error");
            try (PreparedStatement ps = conn.prepareStatement("selec ?::int")) {
                ps.setInt(1, 1);
                expectError(ps::executeQuery, "42601");
            }
            try (PreparedStatement ps = conn.prepareStatement("select ?::int")) {
                ps.setInt(1, 7);
                try (ResultSet rs = ps.executeQuery()) {
                    require(rs.next() && rs.getInt(1) == 7, "prepared query after the error");
                }
            }
        });

        check("cancel (Statement.cancel sends a CancelRequest) of pg_sleep(10)", () -> {
            try (Statement st = conn.createStatement()) {
                Thread t = new Thread(() -> {
                    try {
                        Thread.sleep(200);
                        st.cancel();
                    } catch (Exception e) {
                        e.printStackTrace(System.out);
                    }
                });
                long start = System.nanoTime();
                t.start();
                try {
                    expectError(() -> st.execute("select pg_sleep(10)"), "57014");
                    long ms = (System.nanoTime() - start) / 1_000_000;
                    require(ms < 1000, "cancel took " + ms + " ms");
                } finally {
                    t.join();
                }
            }
            require(queryInt(conn, "select 1") == 1, "connection unusable after cancel");
        });

        check("cleanup", () -> {
            try (Statement st = conn.createStatement()) {
                st.execute("drop table if exists " + TABLE);
            }
            conn.close();
        });
    }
}
