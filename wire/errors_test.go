package wire

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire/pgcode"
)

func TestErrorConstructors(t *testing.T) {
	base := Errorf(pgcode.SyntaxError, "syntax error at or near %q", "SELEC")
	hinted := base.WithHint("Check the spelling.").WithDetail("at position 1")

	tests := []struct {
		name string
		err  *Error
		want Error
		text string
	}{
		{
			name: "errorf",
			err:  base,
			want: Error{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "SELEC"`},
			text: `ERROR: syntax error at or near "SELEC" (SQLSTATE 42601)`,
		},
		{
			name: "with hint and detail",
			err:  hinted,
			want: Error{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "SELEC"`,
				Hint: "Check the spelling.", Detail: "at position 1"},
			text: `ERROR: syntax error at or near "SELEC" (SQLSTATE 42601)`,
		},
		{
			name: "fatalf",
			err:  Fatalf(pgcode.AdminShutdown, "terminating connection due to administrator command"),
			want: Error{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"},
			text: "FATAL: terminating connection due to administrator command (SQLSTATE 57P01)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := *tt.err
			got.cause = nil
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if s := tt.err.Error(); s != tt.text {
				t.Errorf("Error() = %q, want %q", s, tt.text)
			}
		})
	}

	t.Run("WithHint copies", func(t *testing.T) {
		if base.Hint != "" || base.Detail != "" {
			t.Errorf("WithHint/WithDetail changed the original: %+v", base)
		}
	})
	t.Run("wrapped cause", func(t *testing.T) {
		e := Errorf(pgcode.ConnectionFailure, "shard %s: %w", "s1", io.ErrUnexpectedEOF)
		if !errors.Is(e, io.ErrUnexpectedEOF) {
			t.Error("errors.Is does not find the %w operand")
		}
		if want := "shard s1: unexpected EOF"; e.Message != want {
			t.Errorf("Message = %q, want %q", e.Message, want)
		}
		if !errors.Is(e.WithHint("h"), io.ErrUnexpectedEOF) {
			t.Error("WithHint lost the cause")
		}
		if Errorf(pgcode.InternalError, "plain").Unwrap() != nil {
			t.Error("an Error without %w has a cause")
		}
	})
}

func TestErrorResponse(t *testing.T) {
	e := Fatalf(pgcode.TooManyConnections, "sorry, too many clients already").WithHint("h").WithDetail("d")
	want := &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "53300",
		Message: "sorry, too many clients already", Detail: "d", Hint: "h"}
	if got := e.Response(); !reflect.DeepEqual(got, want) {
		t.Errorf("Response() = %+v, want %+v", got, want)
	}
}

func TestToResponse(t *testing.T) {
	pgErr := &pgconn.PgError{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "23505",
		Message: "duplicate key value violates unique constraint \"t_pkey\"", Detail: "Key (id)=(1) already exists.",
		Hint: "hint", Position: 3, InternalPosition: 4, InternalQuery: "iq", Where: "w",
		SchemaName: "public", TableName: "t", ColumnName: "id", DataTypeName: "int4",
		ConstraintName: "t_pkey", File: "nbtinsert.c", Line: 666, Routine: "_bt_check_unique",
	}
	pgResp := &pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "23505",
		Message: "duplicate key value violates unique constraint \"t_pkey\"", Detail: "Key (id)=(1) already exists.",
		Hint: "hint", Position: 3, InternalPosition: 4, InternalQuery: "iq", Where: "w",
		SchemaName: "public", TableName: "t", ColumnName: "id", DataTypeName: "int4",
		ConstraintName: "t_pkey", File: "nbtinsert.c", Line: 666, Routine: "_bt_check_unique",
	}
	wireErr := Errorf(pgcode.FeatureNotSupported, "cross-shard foreign keys are not supported").WithHint("Use a reference table.")

	tests := []struct {
		name string
		err  error
		want *pgproto3.ErrorResponse
	}{
		{name: "nil", err: nil, want: nil},
		{name: "wire error", err: wireErr, want: wireErr.Response()},
		{name: "wrapped wire error", err: fmt.Errorf("route: %w", wireErr), want: wireErr.Response()},
		{name: "shard error", err: fmt.Errorf("shard s1: %w", pgErr), want: pgResp},
		{
			name: "wire error wrapping a shard error wins",
			err:  Errorf(pgcode.ConnectionFailure, "shard s1 failed: %w", pgErr),
			want: &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "08006",
				Message: "shard s1 failed: " + pgErr.Error()},
		},
		{
			name: "anything else",
			err:  errors.New("boom"),
			want: &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "XX000", Message: "boom"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ToResponse(tt.err); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ToResponse() = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
