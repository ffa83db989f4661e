package clienthello

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/snitools/snitools/lib/peek"
)

// wireLimit bounds the bytes Peek looks at for a hello whose handshake
// message may be limit bytes long: room for the record headers of a hello
// fragmented into small records, but not unbounded.
func wireLimit(limit int) int { return 2*limit + 1024 }

// Peek reads the ClientHello at the head of c's receive queue without
// consuming it (lib/peek), so that afterwards the connection can be
// spliced to a backend or handed to another process with the hello still
// unread. While the hello is incomplete it waits for more bytes on the
// runtime's poller, and so honours c's read deadline (the error then
// wraps os.ErrDeadlineExceeded).
//
// buf is scratch space: Peek uses it (grown as needed, up to twice limit
// plus room for record headers) and returns it, so that callers can keep
// buffers in a pool. The returned Info reads from the returned buffer,
// which holds the bytes peeked, also when the hello is refused or the
// deadline passes (so that a caller can tell a stalled TLS client from
// a silent one and knows how many bytes wait unread).
// A peer that closes before a whole hello arrived gives io.ErrUnexpectedEOF,
// or io.EOF if it sent nothing; a reset gives the socket's error
// (syscall.ECONNRESET).
func Peek(c syscall.Conn, buf []byte, limit int) (Info, []byte, error) {
	h := &helloPeek{limit: limit}
	b, err := peek.Until(c, buf, wireLimit(limit), h.enough)
	switch {
	case err == nil:
		return h.info, b, h.parsed
	case errors.Is(err, peek.ErrFull):
		return Info{}, b, fmt.Errorf("%w: more than %d bytes of records", ErrTooLarge, len(b))
	case err == io.EOF:
		return Info{}, b, io.EOF
	}
	return Info{}, b, fmt.Errorf("peek ClientHello: %w", err)
}

// helloPeek parses what Peek has seen so far.
type helloPeek struct {
	limit  int
	info   Info
	parsed error
}

func (h *helloPeek) enough(b []byte) bool {
	h.info, h.parsed = ParseLimit(b, h.limit)
	return !errors.Is(h.parsed, ErrIncomplete)
}
