// Package proxyheader reads the PROXY protocol header (v1 or v2) that a
// trusted load balancer puts before a connection's own bytes, and consumes
// exactly that header: what follows, such as a ClientHello, stays unread in
// the socket so that it can still be peeked, spliced or handed off. A
// buffered reader that reads ahead, as go-proxyproto's listener does, would
// swallow it. Parsing itself is go-proxyproto's.
package proxyheader

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/pires/go-proxyproto"

	"github.com/snitools/snitools/lib/sockpeek"
)

// Errors, wrapped with detail.
var (
	// ErrNoHeader means the connection does not begin with a PROXY header.
	ErrNoHeader = errors.New("no PROXY protocol header")
	// ErrMalformed means the header is not well formed.
	ErrMalformed = errors.New("malformed PROXY protocol header")
	// ErrLocal means the header is a LOCAL command (a health check): it
	// names no client.
	ErrLocal = errors.New("PROXY header with the LOCAL command where a client was expected")
)

var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	v1Prefix = "PROXY "
	v1Max    = 107 // the longest v1 line, CRLF included
	// v2Max bounds a v2 header: 16 bytes and the addresses and TLVs that a
	// balancer sends in practice (the format allows 64 KiB).
	v2Max = 16 + 4096
)

// Read reads the PROXY header at the start of c, consuming exactly its
// bytes, and returns it. It waits on the runtime's poller for the header's
// bytes, so c's read deadline bounds it. A LOCAL command gives ErrLocal.
func Read(c net.Conn) (*proxyproto.Header, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("read PROXY header: %T cannot be peeked", c)
	}
	raw, err := peekHeader(sc)
	if err != nil {
		return nil, err
	}
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(raw), len(raw)+16))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(raw))); err != nil {
		return nil, fmt.Errorf("consume PROXY header: %w", err)
	}
	if h.Command.IsLocal() {
		return nil, ErrLocal
	}
	if _, _, ok := h.TCPAddrs(); !ok {
		return nil, fmt.Errorf("%w: not a TCP client (%v)", ErrMalformed, h.TransportProtocol)
	}
	return h, nil
}

// headerLength returns the length of the header at the start of b, or 0
// if more bytes are needed to tell.
func headerLength(b []byte) (int, error) {
	switch {
	case len(b) >= len(v2Signature) && bytes.Equal(b[:len(v2Signature)], v2Signature):
		if len(b) < 16 {
			return 0, nil
		}
		n := 16 + int(binary.BigEndian.Uint16(b[14:16]))
		if n > v2Max {
			return 0, fmt.Errorf("%w: v2 header of %d bytes, more than %d", ErrMalformed, n, v2Max)
		}
		return n, nil
	case len(b) >= len(v1Prefix) && string(b[:len(v1Prefix)]) == v1Prefix:
		if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
			if i+2 > v1Max {
				return 0, fmt.Errorf("%w: v1 line longer than %d bytes", ErrMalformed, v1Max)
			}
			return i + 2, nil
		}
		if len(b) >= v1Max {
			return 0, fmt.Errorf("%w: v1 line longer than %d bytes", ErrMalformed, v1Max)
		}
		return 0, nil
	}
	// Not a header, or too short to tell: compare what there is.
	if isPrefix(b, v2Signature) || isPrefix(b, []byte(v1Prefix)) {
		return 0, nil
	}
	return 0, ErrNoHeader
}

func isPrefix(b, of []byte) bool { return len(b) < len(of) && bytes.Equal(b, of[:len(b)]) }

// peekHeader peeks at c until a whole header is in sight and returns its
// bytes, unconsumed.
func peekHeader(c syscall.Conn) ([]byte, error) {
	var want int
	var perr error
	b, err := sockpeek.Until(c, make([]byte, 0, 256), v2Max, func(b []byte) bool {
		want, perr = headerLength(b)
		return perr != nil || want > 0 && len(b) >= want
	})
	switch {
	case errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%w: connection closed", ErrNoHeader)
	case err != nil:
		return nil, fmt.Errorf("read PROXY header: %w", err)
	case perr != nil:
		return nil, perr
	}
	return b[:want], nil
}
