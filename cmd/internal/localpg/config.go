package localpg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// renderConfig returns the starter pgshard.yaml for the given shards.
func renderConfig(listen string, shards []Instance) string {
	var b strings.Builder
	b.WriteString("# Written by `shardctl cluster up`. Edit freely: pgshard and shardctl both read it.\n")
	fmt.Fprintf(&b, "listen: %s\n", yamlScalar(listen))
	b.WriteString("pool: {mode: transaction, size: 20}\n")
	// These servers allow prepared transactions (max_prepared_transactions
	// = 100), so transactions and pipelines may span shards, as on one
	// Postgres (and as Citus does by default); without it they are refused.
	b.WriteString("# Transactions may span shards, committed with two-phase commit (these servers\n# have max_prepared_transactions = 100; Postgres's default, 0, needs it off).\n")
	b.WriteString("two_phase_commit: true\n")
	fmt.Fprintf(&b, "users: [{name: %s, password: %s}]\n", appUser, appPassword)
	fmt.Fprintf(&b, "databases: [%s]\n", appDatabase)
	b.WriteString("shards:\n")
	for _, in := range shards {
		fmt.Fprintf(&b, "  - {name: %s, dsn: %q, admin_dsn: %q}\n", in.Name,
			fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", appUser, appPassword, in.Port, appDatabase),
			fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", in.Port, appDatabase))
	}
	b.WriteString("sharding:\n")
	b.WriteString("  buckets: 1024\n")
	b.WriteString("  tables: [{name: accounts, key: id, type: bigint}, {name: orders, key: account_id, type: bigint}]\n")
	b.WriteString("  reference: [countries]\n")
	return b.String()
}

var plainScalar = regexp.MustCompile(`^[A-Za-z0-9._-][A-Za-z0-9._:-]*$`)

// yamlScalar leaves host:port plain and double-quotes anything else (an
// IPv6 "[::1]:6432" would otherwise read as a YAML flow sequence).
func yamlScalar(s string) string {
	if plainScalar.MatchString(s) {
		return s
	}
	return strconv.Quote(s)
}

// writeConfigOnce writes path only if it does not exist: a user's edits win.
func writeConfigOnce(path, content string) (written bool, err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := f.WriteString(content)
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(path) // leave no half-written file that would never be rewritten
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, nil
}
