package wire

import (
	"errors"
	"fmt"
	"maps"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire/pgcode"
)

// Severities used by pgshard. Postgres also has PANIC, WARNING, NOTICE and
// friends; pgshard only ever ends a statement (ERROR) or a session (FATAL).
const (
	SeverityError = "ERROR"
	SeverityFatal = "FATAL"
)

// Error is an error meant for the client: it becomes one ErrorResponse.
//
// Build one with Errorf or Fatalf and refine it with WithHint and WithDetail;
// both return a copy, so an *Error kept in a variable can be shared safely.
type Error struct {
	Severity string // SeverityError or SeverityFatal
	Code     string // SQLSTATE, one of the pgcode constants
	Message  string
	Detail   string
	Hint     string
	// Position is the 1-based character offset of a syntax error in the
	// statement text (0: none).
	Position int32
	// Where is the error's context ("COPY t, line 2, column id: ..."),
	// when pgshard raises it where Postgres would give one.
	Where string

	// cause is the error wrapped with %w in the format, if any; it stays
	// visible to errors.Is and errors.As but never reaches the client.
	cause error
	// server is the shard's ErrorResponse the Error relays (FromServer):
	// its other fields (context, schema, table, column, constraint, source
	// location) reach the client with it.
	server *pgproto3.ErrorResponse
}

// FromServer returns an ERROR that relays a shard's ErrorResponse with all
// its fields, as the client would have had it from Postgres (a FATAL or
// PANIC lowered to ERROR: it ended the server connection, not the
// client's session). m is copied: pgproto3 reuses it.
func FromServer(m *pgproto3.ErrorResponse) *Error {
	c := *m
	c.UnknownFields = maps.Clone(m.UnknownFields)
	return &Error{Severity: SeverityError, Code: m.Code, Message: m.Message, Detail: m.Detail, Hint: m.Hint, Position: m.Position, server: &c}
}

// Errorf returns an ERROR with the given SQLSTATE. The format is that of
// fmt.Errorf: an operand formatted with %w is kept as the cause (reachable with
// errors.Is and errors.As) and its text becomes part of the message.
func Errorf(code, format string, args ...any) *Error {
	return newError(SeverityError, code, format, args...)
}

// Fatalf is Errorf for an error that ends the session (severity FATAL).
func Fatalf(code, format string, args ...any) *Error {
	return newError(SeverityFatal, code, format, args...)
}

func newError(severity, code, format string, args ...any) *Error {
	formatted := fmt.Errorf(format, args...)
	e := &Error{Severity: severity, Code: code, Message: formatted.Error()}
	switch formatted.(type) {
	case interface{ Unwrap() error }, interface{ Unwrap() []error }:
		e.cause = formatted
	}
	return e
}

// Error implements error with the same shape as pgconn.PgError:
// "FATAL: message (SQLSTATE 28P01)".
func (e *Error) Error() string {
	return e.Severity + ": " + e.Message + " (SQLSTATE " + e.Code + ")"
}

// Unwrap returns the error wrapped with %w when the Error was built, or nil.
func (e *Error) Unwrap() error { return e.cause }

// WithHint returns a copy of e with its hint set.
func (e *Error) WithHint(hint string) *Error {
	c := *e
	c.Hint = hint
	return &c
}

// WithDetail returns a copy of e with its detail set.
func (e *Error) WithDetail(detail string) *Error {
	c := *e
	c.Detail = detail
	return &c
}

// Response returns the ErrorResponse that carries e to the client.
func (e *Error) Response() *pgproto3.ErrorResponse {
	if e.server != nil {
		r := *e.server
		r.UnknownFields = maps.Clone(e.server.UnknownFields)
		r.Severity, r.SeverityUnlocalized = e.Severity, e.Severity
		r.Code, r.Message, r.Detail, r.Hint, r.Position = e.Code, e.Message, e.Detail, e.Hint, e.Position
		if e.Where != "" {
			r.Where = e.Where
		}
		return &r
	}
	return &pgproto3.ErrorResponse{
		Severity:            e.Severity,
		SeverityUnlocalized: e.Severity,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
		Position:            e.Position,
		Where:               e.Where,
	}
}

// ToResponse turns any error into the ErrorResponse to send to the client:
//
//   - an error that is or wraps a *Error is sent as that Error;
//   - one that wraps a *pgconn.PgError (an error from a shard) is passed
//     through with all its fields, severity included: a caller relaying a
//     shard's FATAL that does not end the client's session should lower it to
//     ERROR first;
//   - anything else is an internal error (XX000) carrying err's text.
//
// ToResponse(nil) returns nil.
func ToResponse(err error) *pgproto3.ErrorResponse {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Response()
	}
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok {
		return &pgproto3.ErrorResponse{
			Severity:            pe.Severity,
			SeverityUnlocalized: pe.SeverityUnlocalized,
			Code:                pe.Code,
			Message:             pe.Message,
			Detail:              pe.Detail,
			Hint:                pe.Hint,
			Position:            pe.Position,
			InternalPosition:    pe.InternalPosition,
			InternalQuery:       pe.InternalQuery,
			Where:               pe.Where,
			SchemaName:          pe.SchemaName,
			TableName:           pe.TableName,
			ColumnName:          pe.ColumnName,
			DataTypeName:        pe.DataTypeName,
			ConstraintName:      pe.ConstraintName,
			File:                pe.File,
			Line:                pe.Line,
			Routine:             pe.Routine,
		}
	}
	return &pgproto3.ErrorResponse{
		Severity:            SeverityError,
		SeverityUnlocalized: SeverityError,
		Code:                pgcode.InternalError,
		Message:             err.Error(),
	}
}
