package clienthello

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/snitools/snitools/lib/sockpeek"
)

// wireLimit bounds the bytes Peek looks at for a hello whose handshake
// message may be limit bytes long: room for the record headers of a hello
// fragmented into small records, but not unbounded.
func wireLimit(limit int) int { return 2*limit + 1024 }

// Peek reads the ClientHello at the head of c's receive queue without
// consuming it (lib/sockpeek), so that afterwards the connection can be
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
	return PeekBudget(c, buf, limit, nil)
}

// PeekBudget is Peek with the buffer's growth drawn from budget (none if
// nil): when the budget cannot cover it, the error wraps sockpeek.ErrBudget.
func PeekBudget(c syscall.Conn, buf []byte, limit int, budget *sockpeek.Budget) (Info, []byte, error) {
	h := &helloPeek{limit: limit}
	b, err := budget.Until(c, buf, wireLimit(limit), h.enough)
	switch {
	case err == nil:
		return h.info, b, h.parsed
	case errors.Is(err, sockpeek.ErrBudget):
		return Info{}, b, err
	case errors.Is(err, sockpeek.ErrFull):
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
	parses int // full parses, for tests

	// The records walked so far, to wait without parsing everything
	// again at each arrival: a hello sent in tiny records a few bytes at
	// a time would otherwise cost time quadratic in its length.
	walked  int     // wire bytes of the complete records walked
	payload int     // their payload bytes
	empty   int     // empty records among them
	head    [4]byte // the first payload bytes: the handshake header
}

func (h *helloPeek) enough(b []byte) bool {
	if h.incomplete(b) {
		return false
	}
	h.parses++
	h.info, h.parsed = ParseLimit(b, h.limit)
	return !errors.Is(h.parsed, ErrIncomplete)
}

// incomplete walks the records of b not walked before and reports whether
// their payloads certainly do not hold the whole handshake message yet.
// The bytes peeked before never change, so each record is walked once.
// Anything unusual is left to ParseLimit, which says what is wrong.
func (h *helloPeek) incomplete(b []byte) bool {
	for len(b)-h.walked >= recordHeaderLen {
		rec := b[h.walked:]
		vers, n := uint16(rec[1])<<8|uint16(rec[2]), int(rec[3])<<8|int(rec[4])
		if rec[0] != recordTypeHandshake || vers >= 0x1000 || n > maxPlaintext {
			return false
		}
		if n == 0 {
			if h.empty++; h.empty > maxEmptyRecords {
				return false
			}
		}
		if len(rec)-recordHeaderLen < n {
			break
		}
		for i := 0; i < n && h.payload+i < len(h.head); i++ {
			h.head[h.payload+i] = rec[recordHeaderLen+i]
		}
		h.payload += n
		h.walked += recordHeaderLen + n
	}
	if h.payload < len(h.head) {
		return false // the message's length is not known yet: parsing is cheap
	}
	msgLen := handshakeHeaderLen + (int(h.head[1])<<16 | int(h.head[2])<<8 | int(h.head[3]))
	if h.head[0] != typeClientHello || msgLen-handshakeHeaderLen > h.limit {
		return false
	}
	return h.payload < msgLen
}

// ErrNotYet means PeekNow found only part of a hello (or nothing): more
// may arrive, so wait for it with Peek.
var ErrNotYet = sockpeek.ErrNotYet

// PeekNow is Peek without waiting, for a non-blocking socket descriptor
// outside the Go runtime (straight from accept4): it looks once at the
// bytes that have arrived, in buf's capacity, and returns ErrNotYet unless
// a whole hello, or something certainly not one, is there. A hello is
// usually whole when the connection is accepted, and more so with
// TCP_DEFER_ACCEPT, so that most connections never wait.
func PeekNow(fd int, buf []byte, limit int) (Info, []byte, error) {
	h := &helloPeek{limit: limit}
	b, err := sockpeek.Once(fd, buf, h.enough)
	if err != nil {
		return Info{}, b, err
	}
	return h.info, b, h.parsed
}
