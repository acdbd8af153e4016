package plan

import (
	"encoding/binary"
	"errors"
)

// errArrayFormat: a value that is not a Postgres array in binary format.
var errArrayFormat = errors.New("malformed binary array")

// ArrayReader reads a Postgres array in binary format (array_send): the
// number of dimensions, a has-NULL flag, the element type's OID, a length
// and lower bound per dimension, then each element as a length (-1 for
// NULL) and its bytes. A multi-dimensional array's elements come in
// storage order. It does not allocate.
type ArrayReader struct {
	Elem uint32 // element type OID
	Len  int    // number of elements
	read int
	rest []byte
}

// NewArrayReader reads v's header.
func NewArrayReader(v []byte) (ArrayReader, error) {
	if len(v) < 12 {
		return ArrayReader{}, errArrayFormat
	}
	ndim := int(int32(binary.BigEndian.Uint32(v)))
	r := ArrayReader{Elem: binary.BigEndian.Uint32(v[8:])}
	v = v[12:]
	if ndim < 0 || ndim > 6 || len(v) < 8*ndim {
		return ArrayReader{}, errArrayFormat
	}
	if ndim > 0 {
		r.Len = 1
	}
	for d := range ndim {
		l := int(int32(binary.BigEndian.Uint32(v[8*d:])))
		if l < 0 || l > len(v) {
			return ArrayReader{}, errArrayFormat
		}
		// Each element takes 4 bytes at least: bounding the count as it
		// grows also keeps the product from overflowing.
		if r.Len *= l; r.Len > len(v)/4 {
			return ArrayReader{}, errArrayFormat
		}
	}
	r.rest = v[8*ndim:]
	return r, nil
}

// Next returns the next element (nil for NULL), or done after the last
// one; an error if the value ends early or has bytes after its elements.
func (r *ArrayReader) Next() (elem []byte, done bool, err error) {
	if r.read == r.Len {
		if len(r.rest) != 0 {
			return nil, true, errArrayFormat
		}
		return nil, true, nil
	}
	if len(r.rest) < 4 {
		return nil, false, errArrayFormat
	}
	l := int(int32(binary.BigEndian.Uint32(r.rest)))
	r.rest = r.rest[4:]
	r.read++
	if l < 0 {
		return nil, false, nil
	}
	if len(r.rest) < l {
		return nil, false, errArrayFormat
	}
	elem, r.rest = r.rest[:l:l], r.rest[l:]
	return elem, false, nil
}
