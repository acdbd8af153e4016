package proxy

import (
	"fmt"
	"testing"
)

func TestSessionCharacteristics(t *testing.T) {
	for q, want := range map[string]string{
		"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY":                                   "[{default_transaction_read_only SET default_transaction_read_only = 'on'}]",
		"set session characteristics as transaction isolation level read committed, read write":  "[{default_transaction_isolation SET default_transaction_isolation = 'read committed'} {default_transaction_read_only SET default_transaction_read_only = 'off'}]",
		"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE NOT DEFERRABLE": "[{default_transaction_isolation SET default_transaction_isolation = 'serializable'} {default_transaction_deferrable SET default_transaction_deferrable = 'off'}]",
		"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ DEFERRABLE":  "[{default_transaction_isolation SET default_transaction_isolation = 'repeatable read'} {default_transaction_deferrable SET default_transaction_deferrable = 'on'}]",
		"SET SESSION CHARACTERISTICS AS TRANSACTION READ SIDEWAYS":                               "[]",
		"SET TRANSACTION READ ONLY":              "[]",
		"SET default_transaction_read_only = on": "[]",
	} {
		if got := fmt.Sprint(sessionCharacteristics(q)); got != want {
			t.Errorf("%s:\n got  %s\n want %s", q, got, want)
		}
	}
}
