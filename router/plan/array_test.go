package plan

import (
	"encoding/binary"
	"testing"
)

// arrayBytes builds an int4 array in binary format with the given
// dimensions; nil elements are NULL.
func arrayBytes(dims []int, elems []*int32) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(dims)))
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, 23)
	for _, d := range dims {
		b = binary.BigEndian.AppendUint32(b, uint32(d))
		b = binary.BigEndian.AppendUint32(b, 1)
	}
	for _, e := range elems {
		if e == nil {
			b = binary.BigEndian.AppendUint32(b, ^uint32(0))
			continue
		}
		b = binary.BigEndian.AppendUint32(b, 4)
		b = binary.BigEndian.AppendUint32(b, uint32(*e))
	}
	return b
}

func TestArrayReader(t *testing.T) {
	one, two, three := int32(1), int32(2), int32(3)
	read := func(v []byte) ([]string, error) {
		r, err := NewArrayReader(v)
		if err != nil {
			return nil, err
		}
		if r.Elem != 23 {
			t.Fatalf("element OID %d", r.Elem)
		}
		var out []string
		for {
			e, done, err := r.Next()
			if err != nil {
				return out, err
			}
			if done {
				return out, nil
			}
			if e == nil {
				out = append(out, "NULL")
			} else {
				out = append(out, string(rune('0'+int32(binary.BigEndian.Uint32(e)))))
			}
		}
	}
	for _, tc := range []struct {
		name string
		v    []byte
		want string // elements joined, or "error"
	}{
		{"empty", arrayBytes(nil, nil), ""},
		{"one dimension", arrayBytes([]int{3}, []*int32{&one, nil, &three}), "1,NULL,3"},
		{"two dimensions", arrayBytes([]int{2, 2}, []*int32{&one, &two, &three, &one}), "1,2,3,1"},
		{"trailing bytes", append(arrayBytes([]int{1}, []*int32{&one}), 0), "error"},
		{"short element", arrayBytes([]int{1}, []*int32{&one})[:25], "error"},
		{"fewer elements than dimensions say", arrayBytes([]int{2}, []*int32{&one}), "error"},
		{"short header", []byte{0, 0, 0, 1}, "error"},
		{"negative dimension count", append(binary.BigEndian.AppendUint32(nil, ^uint32(0)), make([]byte, 16)...), "error"},
		{"huge dimensions", arrayBytes([]int{1 << 30, 1 << 30, 1 << 30}, []*int32{&one}), "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := read(tc.v)
			s := ""
			for i, e := range got {
				if i > 0 {
					s += ","
				}
				s += e
			}
			if err != nil {
				s = "error"
			}
			if s != tc.want {
				t.Fatalf("got %q (%v), want %q", s, err, tc.want)
			}
		})
	}
}
