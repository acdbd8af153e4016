package sqlparse

import (
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	pg "github.com/pganalyze/pg_query_go/v5"
)

// Warm prepares the parser's parse-tree decoding ahead of the first client.
// pg_query returns trees as protobuf, and the protobuf runtime sets up each
// node type's decoder the first time it meets one: on a fresh process the
// first statements took 10 ms and more, which a client on an event loop
// (wire/evloop) makes every other client on that loop wait for. Warm sets
// every pg_query node type up at once (about 20 ms, at start).
func Warm() {
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		if strings.HasPrefix(string(mt.Descriptor().FullName()), "pg_query.") {
			// Sets the type's decoder up (an empty Unmarshal returns
			// before it does).
			_ = mt.New().ProtoMethods()
		}
		return true
	})
	_, _ = pg.Parse("SELECT 1") // and the C parser's own first-use set-up
}
