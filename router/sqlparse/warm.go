package sqlparse

import pg_query "github.com/pganalyze/pg_query_go/v5"

// Parse parses sql with the Postgres parser.
func Parse(sql string) (*pg_query.ParseResult, error) { return pg_query.Parse(sql) }
