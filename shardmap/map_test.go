package shardmap

import (
	"errors"
	"testing"
)

func TestMoveToRoundTrip(t *testing.T) {
	m, err := Initial(Rules{Buckets: 8, Tables: map[string]Table{"t": {Key: "id", Type: KeyBigint}}}, []Shard{{Name: "s0"}, {Name: "s1"}})
	if err != nil {
		t.Fatal(err)
	}
	n := m.Next()
	n.Moving, n.MoveBuckets, n.MoveTo = 1, []int{2, 3}, "s1"
	b, err := n.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.MoveTo != "s1" || len(got.MoveBuckets) != 2 {
		t.Fatalf("round trip: %+v", got)
	}
	n.MoveTo = "s9"
	if err := n.Validate(); !errors.Is(err, ErrInvalidMap) {
		t.Fatalf("move to an unknown shard: %v", err)
	}
	// A map published before MoveTo existed still loads.
	old, err := Unmarshal([]byte(`{"version":3,"rules":{"buckets":2,"tables":{}},"shards":[{"name":"s0"}],"owner":[0,0],"state":[0,0],"default":0,"moving":4,"move_buckets":[1]}`))
	if err != nil || old.MoveTo != "" || old.Moving != 4 {
		t.Fatalf("old map: %+v, %v", old, err)
	}
}
