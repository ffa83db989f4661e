package sockpeek

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
)

// ErrBudget means a peek needed a larger buffer and the Budget it draws
// from had no room left.
var ErrBudget = errors.New("peek: memory budget spent")

// Budget bounds the memory of the peek buffers of a whole process. A
// ClientHello may lawfully be 128 KiB, so its peek may need a buffer of a
// few hundred KiB; a bound per connection alone would let a few thousand
// clients that each stall one byte short of such a hello take gigabytes.
// The first Free bytes of every buffer are not counted (a connection
// bound such as -max-conns bounds them, and every hello a real client
// sends fits), the rest is: a peek that would grow its buffer beyond what
// the Budget has left fails with ErrBudget rather than wait, so that the
// client is answered at once and the memory stays bounded. Bytes are
// returned when the peek ends. A nil *Budget bounds nothing.
type Budget struct {
	limit int64
	free  int
	used  atomic.Int64
}

// NewBudget returns a Budget of limit bytes shared by every peek that uses
// it, of which each may use free bytes without counting them.
func NewBudget(limit int64, free int) *Budget {
	return &Budget{limit: limit, free: free}
}

// Used returns the bytes taken from the budget now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Limit returns the budget's size in bytes.
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// Until is the package's Until drawing the buffer's growth beyond the
// free bytes from b: it fails with an error wrapping ErrBudget (and the
// bytes peeked so far) when b cannot cover it.
func (b *Budget) Until(c syscall.Conn, buf []byte, max int, enough func(b []byte) bool) ([]byte, error) {
	if b == nil {
		return Until(c, buf, max, enough)
	}
	p := &peeker{budget: b}
	if b.charge(&p.charged, cap(buf)) != nil {
		buf = make([]byte, 0, min(b.free, max)) // a large pooled buffer costs as much as a grown one
	}
	out, err := until(c, buf, max, enough, p)
	b.used.Add(-p.charged)
	return out, err
}

// charge takes from b what growing a peek's buffer to size bytes costs
// beyond what that peek holds already, and reports whether it could.
func (b *Budget) charge(charged *int64, size int) error {
	need := int64(max(size-b.free, 0)) - *charged
	if need <= 0 {
		return nil
	}
	for {
		used := b.used.Load()
		if used+need > b.limit {
			return fmt.Errorf("%w: a buffer of %d bytes needs %d more, %d of %d in use", ErrBudget, size, need, used, b.limit)
		}
		if b.used.CompareAndSwap(used, used+need) {
			*charged += need
			return nil
		}
	}
}
