package quic

import (
	"errors"
	"fmt"
)

// Errors returned by ParseInitial, AddDatagram and ClientHello. Each is
// wrapped with detail; test with errors.Is. Those that describe one
// datagram (ErrUnknownVersion, ErrNotInitial, ErrMalformed, ErrDecrypt)
// leave an Assembler as it was: a QUIC server drops such a datagram and
// carries on. The others end the flow: AddDatagram returns them again on
// every later call.
var (
	// ErrUnknownVersion means a long header packet of a QUIC version
	// other than 1 and 2 (or not QUIC at all): drop it silently.
	ErrUnknownVersion = errors.New("quic: unknown version")
	// ErrNotInitial means the datagram does not begin with a client's
	// Initial packet that a server would accept: a short header packet, a
	// Version Negotiation, 0-RTT, Handshake or Retry packet, a datagram
	// shorter than 1200 or longer than 1452 bytes, a Destination
	// Connection ID shorter than 8 bytes, or the fixed bit cleared
	// without a token.
	ErrNotInitial = errors.New("quic: not a client Initial")
	// ErrMalformed means the packet headers are truncated or inconsistent,
	// or the datagram belongs to another connection (version or
	// Destination Connection ID differ from the flow's).
	ErrMalformed = errors.New("quic: malformed packet")
	// ErrDecrypt means an Initial packet did not authenticate with the
	// keys of its Destination Connection ID.
	ErrDecrypt = errors.New("quic: Initial packet does not decrypt")
	// ErrProtocol means a decrypted Initial packet breaks the rules
	// (RFC 9000, sections 12.4 and 17.2): a frame not allowed in it, a
	// malformed frame, non-zero reserved bits, no frame at all, or CRYPTO
	// data that contradicts data already received for the same offsets.
	ErrProtocol = errors.New("quic: protocol violation")
	// ErrLimit means the flow went past a bound: MaxDatagrams,
	// MaxPackets, MaxCryptoBytes or MaxFragments.
	ErrLimit = errors.New("quic: limit exceeded")
	// ErrExpired means a datagram came more than MaxAge after the flow's
	// first.
	ErrExpired = errors.New("quic: flow expired")
	// ErrClosed means the client sent CONNECTION_CLOSE.
	ErrClosed = errors.New("quic: client closed the connection")
)

// Wire constants (RFC 9000).
const (
	// MinDatagramSize is the smallest UDP payload that may carry a
	// client's Initial packet (RFC 9000, section 14.1).
	MinDatagramSize = 1200
	// MaxDatagramSize is the largest datagram read. quic-go servers read
	// at most 1452 bytes of a datagram (protocol.MaxPacketBufferSize) and
	// lose the rest: reading more than a backend reads would let a client
	// show this package a hello (in a packet coalesced past byte 1452)
	// that the backend never sees. Clients send their Initials in
	// datagrams of 1200 to about 1350 bytes, the path MTU being unknown.
	MaxDatagramSize = 1452
	maxCIDLen       = 20 // connection IDs of versions 1 and 2
	minInitialDCID  = 8  // first Destination Connection ID (section 7.2)
	sampleOffset    = 4  // header protection sample, after the packet number field
	sampleLen       = 16
	tagLen          = 16 // AEAD_AES_128_GCM
)

// Header is the long header of a client's Initial packet, read without
// decrypting anything. Its slices point into the datagram.
type Header struct {
	Version uint32
	// DCID and SCID are the Destination and Source Connection IDs.
	DCID, SCID []byte
	// Token is the Initial packet's token (empty unless the client got
	// one from the server before, in a Retry or NEW_TOKEN frame).
	Token []byte
	// Length is the number of bytes of the datagram that the packet
	// occupies; another packet may be coalesced after it.
	Length int

	typ      byte // long header packet type bits
	pnOffset int  // where the packet number field starts
	v        *version
}

// ParseInitial reads the header of the first packet of a datagram that a
// client sent to a server, and checks that a server would take it as the
// start of a connection: a long header Initial packet of QUIC version 1 or
// 2, in a datagram of MinDatagramSize to MaxDatagramSize bytes, with a Destination
// Connection ID of 8 to 20 bytes. It decrypts nothing; it is what a caller
// runs on a datagram from an unknown client to decide whether to start a
// flow (and an Assembler) for it, dropping it silently on
// ErrUnknownVersion or ErrNotInitial.
func ParseInitial(datagram []byte) (Header, error) {
	if len(datagram) >= 5 && datagram[0]&0x80 != 0 {
		// Only an Initial has a token field: say what the packet is
		// before its header is misread as one.
		if v := lookupVersion(uint32(datagram[1])<<24 | uint32(datagram[2])<<16 | uint32(datagram[3])<<8 | uint32(datagram[4])); v != nil && datagram[0]>>4&3 != v.initial {
			return Header{}, fmt.Errorf("%w: %s long header packet type %d", ErrNotInitial, v.name, datagram[0]>>4&3)
		}
	}
	h, err := parseLong(datagram)
	if err != nil {
		return Header{}, err
	}
	if len(datagram) < MinDatagramSize {
		return Header{}, fmt.Errorf("%w: datagram of %d bytes, an Initial needs at least %d", ErrNotInitial, len(datagram), MinDatagramSize)
	}
	if len(datagram) > MaxDatagramSize {
		return Header{}, fmt.Errorf("%w: datagram of %d bytes, more than the %d a QUIC server may read", ErrNotInitial, len(datagram), MaxDatagramSize)
	}
	if len(h.DCID) < minInitialDCID {
		return Header{}, fmt.Errorf("%w: Destination Connection ID of %d bytes, at least %d needed", ErrNotInitial, len(h.DCID), minInitialDCID)
	}
	return h, nil
}

// parseLong reads the long header of a packet of a known version at the
// start of b (RFC 9000, section 17.2; RFC 8999 for the invariant part).
// A Retry packet, which has no Length field, is ErrNotInitial.
func parseLong(b []byte) (Header, error) {
	var h Header
	if len(b) < 6 {
		return h, fmt.Errorf("%w: %d bytes, too short for a long header", ErrMalformed, len(b))
	}
	if b[0]&0x80 == 0 {
		return h, fmt.Errorf("%w: short header packet (first byte 0x%02x)", ErrNotInitial, b[0])
	}
	h.Version = uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4])
	if h.Version == 0 {
		return h, fmt.Errorf("%w: Version Negotiation packet", ErrNotInitial)
	}
	if h.v = lookupVersion(h.Version); h.v == nil {
		return h, fmt.Errorf("%w: 0x%08x", ErrUnknownVersion, h.Version)
	}
	h.typ = b[0] >> 4 & 3
	if h.typ == h.v.retry {
		return h, fmt.Errorf("%w: Retry packet", ErrNotInitial)
	}
	off := 5
	var ok bool
	if h.DCID, off, ok = connectionID(b, off); !ok {
		return h, fmt.Errorf("%w: bad Destination Connection ID", ErrMalformed)
	}
	if h.SCID, off, ok = connectionID(b, off); !ok {
		return h, fmt.Errorf("%w: bad Source Connection ID", ErrMalformed)
	}
	if h.typ == h.v.initial {
		n, w := varint(b[off:])
		if w == 0 || n > uint64(len(b)-off-w) {
			return h, fmt.Errorf("%w: token length at offset %d overruns the %d-byte datagram", ErrMalformed, off, len(b))
		}
		off += w
		h.Token = b[off : off+int(n) : off+int(n)]
		off += int(n)
	}
	// The fixed bit may be 0 only in an Initial with a token from a
	// server that allows it (RFC 9287, section 3); elsewhere servers drop
	// the packet (RFC 9000, section 17.2), and so must this package, or it
	// could read a hello that the backend never sees.
	if b[0]&0x40 == 0 && (h.typ != h.v.initial || len(h.Token) == 0) {
		return h, fmt.Errorf("%w: fixed bit 0 in a packet without a token", ErrNotInitial)
	}
	n, w := varint(b[off:])
	if w == 0 {
		return h, fmt.Errorf("%w: truncated Length field at offset %d", ErrMalformed, off)
	}
	off += w
	switch {
	case n > uint64(len(b)-off):
		return h, fmt.Errorf("%w: packet Length %d at offset %d overruns the %d-byte datagram", ErrMalformed, n, off, len(b))
	case n < sampleOffset+sampleLen:
		// Too short to hold the header protection sample (RFC 9001,
		// section 5.4.2): a receiver cannot even unmask it.
		return h, fmt.Errorf("%w: packet Length %d is less than %d", ErrMalformed, n, sampleOffset+sampleLen)
	}
	h.pnOffset = off
	h.Length = off + int(n)
	return h, nil
}

// connectionID reads a length-prefixed connection ID of at most 20 bytes.
func connectionID(b []byte, off int) (id []byte, next int, ok bool) {
	if off >= len(b) {
		return nil, off, false
	}
	n := int(b[off])
	off++
	if n > maxCIDLen || n > len(b)-off {
		return nil, off, false
	}
	return b[off : off+n : off+n], off + n, true
}

// varint reads a QUIC variable-length integer (RFC 9000, section 16) and
// returns it with its width, 0 if b is too short.
func varint(b []byte) (uint64, int) {
	if len(b) == 0 {
		return 0, 0
	}
	w := 1 << (b[0] >> 6)
	if len(b) < w {
		return 0, 0
	}
	v := uint64(b[0] & 0x3f)
	for _, c := range b[1:w] {
		v = v<<8 | uint64(c)
	}
	return v, w
}
