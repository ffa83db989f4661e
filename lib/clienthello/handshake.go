package clienthello

import "fmt"

// ParseHandshake parses a ClientHello handshake message that arrives
// without the TLS record layer: QUIC carries the TLS handshake in CRYPTO
// frames, not in records (RFC 9001, section 4), so lib/quic reassembles the
// CRYPTO stream and hands the bare message here. b starts at the 4-byte
// handshake header; bytes after the message are ignored (and not read).
//
// The errors are those of ParseLimit: ErrIncomplete while b is a proper
// prefix of the message, ErrUnexpectedMessage as soon as the first byte
// says it is not a ClientHello, ErrTooLarge as soon as the header announces
// more than limit bytes, ErrMalformed for a bad hello. In the Info returned,
// Length is the message's length (header included) and Records is 0.
func ParseHandshake(b []byte, limit int) (Info, error) {
	if len(b) > 0 && b[0] != typeClientHello {
		return Info{}, fmt.Errorf("%w: handshake message type %d, not ClientHello", ErrUnexpectedMessage, b[0])
	}
	if len(b) < handshakeHeaderLen {
		return Info{}, fmt.Errorf("%w: %d bytes of a 4-byte handshake header", ErrIncomplete, len(b))
	}
	n, err := messageLength(b, limit)
	if err != nil {
		return Info{}, err
	}
	if len(b) < n {
		return Info{}, fmt.Errorf("%w: handshake message of %d bytes, have %d", ErrIncomplete, n, len(b))
	}
	info, err := parseHello(b[:n])
	if err != nil {
		return Info{}, err
	}
	info.Length = n
	return info, nil
}
