// Package pgcode holds the SQLSTATE codes that pgshard sends to clients.
//
// It is the one place where error codes live (house style: every error that
// reaches a client is an ErrorResponse with a SQLSTATE). The values are the
// five-character codes of PostgreSQL's errcodes.txt, as untyped string
// constants so they fit straight into pgproto3.ErrorResponse.Code and
// wire.Error.Code. Add a code here, with the same name Postgres gives it in
// CamelCase, before using it anywhere else.
//
// This package imports nothing and is imported by anything that builds a
// client-facing error.
package pgcode
