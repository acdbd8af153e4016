// Package localpg launches and tears down a local cluster of throwaway
// PostgreSQL instances for development and integration tests: the engine
// behind `shardctl cluster up|status|down`, and a library for tests in other
// packages that need real shards.
//
// # What it owns
//
// One cluster directory (DIR, ".pgshard" by default) laid out as
//
//	DIR/cluster.json   the cluster's description: instances, ports, bin dir
//	DIR/pgshard.yaml   a starter pgshard config (written once, never clobbered)
//	DIR/s0/            data directory of instance s0 (owned by the postgres user)
//	DIR/s0.log         its server log (pg_ctl -l)
//	DIR/.lock          flock serialising Up, Down and AddInstance
//
// cluster.json is written before any instance is created, so Status, Down
// and AddInstance work from the directory alone, and a half-finished Up can
// be finished by running Up again or cleaned away with Down(purge).
//
// # Imports
//
// Only the standard library and pgx/v5/pgconn (to create the app role and
// database). It knows nothing of the rest of pgshard; cmd/shardctl and
// integration tests import it, nothing below cmd does.
//
// # Life of Up
//
//  1. Resolve DIR, create it, and check that the postgres OS user can reach
//     it (every parent must be traversable); take DIR/.lock.
//  2. Load cluster.json, or describe a new cluster from Options and save it.
//  3. For every instance that is not running, check its port is free, so a
//     clash fails fast with the port's number instead of deep in a log.
//  4. In parallel, per instance: initdb into DIR/sN.initdb, write
//     postgresql.conf and pg_hba.conf, rename to DIR/sN (so DIR/sN exists
//     only when complete); `pg_ctl -w start`; as superuser, create role
//     app/app (SCRAM) and database app if missing.
//  5. Write DIR/pgshard.yaml if it does not exist.
//
// Postgres refuses to run as root, so when the caller is root every server
// binary runs as the postgres OS user through runuser(1); otherwise it runs
// as the caller. Instances listen on 127.0.0.1 only, with no Unix socket
// (socket paths must stay under ~100 bytes, which a deep DIR would break).
//
// These are test clusters: fsync, full_page_writes and synchronous_commit
// are off. A crash of the machine can corrupt them; never keep data in one.
package localpg
