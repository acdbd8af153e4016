package proxy

import (
	"fmt"
	"math/rand"
	"testing"
)

// Rows kept in memory and then in the file read back the same, in any
// order (a scrollable cursor), NULLs and empty values included.
func TestRowStore(t *testing.T) {
	st := &rowStore{}
	defer st.close()
	const inMem, total = 10, 1000
	want := make([][][]byte, total)
	for i := range want {
		row := [][]byte{[]byte(fmt.Sprint(i)), nil, {}, []byte(fmt.Sprintf("value %d %s", i, make([]byte, i%7)))}
		if i%5 == 0 {
			row[3] = nil
		}
		want[i] = row
		if i == inMem {
			if err := st.spill(); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.add(row); err != nil {
			t.Fatal(err)
		}
	}
	if st.len() != total {
		t.Fatalf("len %d, want %d", st.len(), total)
	}
	check := func(i int) {
		t.Helper()
		got, err := st.get(i)
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want[i]) {
			t.Fatalf("row %d: %q, want %q", i, got, want[i])
		}
		for k := range got {
			if (got[k] == nil) != (want[i][k] == nil) {
				t.Fatalf("row %d value %d: NULL %v, want %v", i, k, got[k] == nil, want[i][k] == nil)
			}
		}
	}
	for i := range total { // forward
		check(i)
	}
	for i := total - 1; i >= 0; i-- { // backward
		check(i)
	}
	r := rand.New(rand.NewSource(1))
	for range 2000 {
		check(r.Intn(total))
	}
	if _, err := st.get(total); err == nil {
		t.Fatal("a row past the end was read")
	}
}
