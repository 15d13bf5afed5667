package history

import (
	"fmt"
	"strconv"
)

// propWriter sets history-stream properties of typed fields, leaving out
// zero values.
type propWriter func(k, v string)

// str sets k to v unless v is empty.
func (set propWriter) str(k, v string) {
	if v != "" {
		set(k, v)
	}
}

// num sets k to v in decimal unless v is zero.
func (set propWriter) num(k string, v uint64) {
	if v != 0 {
		set(k, strconv.FormatUint(v, 10))
	}
}

// propReader moves history-stream properties back into typed fields,
// deleting each one it reads from props and keeping the first parse error.
type propReader struct {
	props map[string]string
	err   error
}

// take returns k's value, "" when absent.
func (r *propReader) take(k string) string {
	v := r.props[k]
	delete(r.props, k)
	return v
}

// num returns k's value parsed as an unsigned number of the given bit
// size, 0 when absent; a bad value records an ErrStream error.
func (r *propReader) num(k string, bits int) uint64 {
	v, ok := r.props[k]
	if !ok {
		return 0
	}
	delete(r.props, k)
	n, e := strconv.ParseUint(v, 10, bits)
	if e != nil && r.err == nil {
		r.err = fmt.Errorf("%w: property %s: %v", ErrStream, k, e)
	}
	return n
}

// flag reports whether k is present.
func (r *propReader) flag(k string) bool {
	_, ok := r.props[k]
	delete(r.props, k)
	return ok
}
