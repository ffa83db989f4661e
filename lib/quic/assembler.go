package quic

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/snitools/snitools/lib/clienthello"
)

// Bounds of one flow (see the package documentation).
const (
	// MaxDatagrams is how many datagrams an Assembler takes, whatever
	// they hold. A real client's hello fits in one to three; Chrome's
	// and quic-go's, with a post-quantum key share, in two.
	MaxDatagrams = 16
	// MaxCryptoBytes bounds the CRYPTO stream: data is accepted only at
	// offsets below it, so it also bounds the ClientHello (its 4-byte
	// header included) and the buffer that holds it.
	MaxCryptoBytes = 64 << 10
	// MaxFragments is how many disjoint pieces of the CRYPTO stream are
	// kept at once while the gaps between them are not yet filled.
	MaxFragments = 32
	// MaxPackets is how many Initial packets of a flow are decrypted; it
	// bounds the record of their packet numbers. Real clients send two
	// or three before the hello is whole.
	MaxPackets = 64
	// MaxAge is how long after its first datagram a flow may take
	// more: long enough for a client's retransmissions of a lost part
	// of the hello (its probe timeout starts near 1 s and doubles).
	MaxAge = 10 * time.Second
)

// span is a received piece [start, end) of the CRYPTO stream.
type span struct{ start, end int }

// An Assembler reads the client's Initial datagrams of one flow, as they
// come, until their CRYPTO frames hold the whole ClientHello. The zero
// value is ready to use; Reset readies it for another flow, keeping its
// buffers and, while the next flow has the same connection ID, its keys.
//
// The datagrams given to it are never modified nor retained: the caller
// forwards them as they are.
type Assembler struct {
	keys
	started   bool // a packet of the flow decrypted: v and dcid are the flow's
	largestPN int64
	pns       [MaxPackets]int64 // packet numbers received, to drop duplicates
	npns      int
	datagrams int
	first     time.Time

	spans  [MaxFragments]span // sorted, disjoint, not adjacent
	nspans int
	stream []byte // CRYPTO stream; valid where spans say
	packet []byte // one packet, decrypted in place
	nonce  [12]byte
	mask   [16]byte

	done     bool
	hello    clienthello.Info
	helloErr error
	err      error // sticky: the flow is over
}

// Reset readies a for a new flow.
func (a *Assembler) Reset() {
	*a = Assembler{keys: a.keys, stream: a.stream[:0], packet: a.packet[:0]}
}

// AddDatagram is AddDatagramAt at the current time.
func (a *Assembler) AddDatagram(datagram []byte) (done bool, err error) {
	return a.AddDatagramAt(time.Now(), datagram)
}

// AddDatagramAt adds one UDP payload the client sent, received at time
// now, and reports whether the ClientHello is now whole (ClientHello then
// tells what it says). After done, further datagrams are not read.
//
// An error about this datagram alone (ErrUnknownVersion, ErrNotInitial,
// ErrMalformed, ErrDecrypt) leaves the Assembler as it was, except that
// the datagram counts against MaxDatagrams (and the first one starts the
// MaxAge clock): a forged or corrupted datagram does not end the flow. ErrProtocol, ErrLimit,
// ErrExpired and ErrClosed end it: they are returned by every later call.
func (a *Assembler) AddDatagramAt(now time.Time, datagram []byte) (done bool, err error) {
	if a.err != nil {
		return false, a.err
	}
	if a.done {
		return true, nil
	}
	if a.datagrams++; a.datagrams > MaxDatagrams {
		return false, a.fail(fmt.Errorf("%w: more than %d datagrams without a whole ClientHello", ErrLimit, MaxDatagrams))
	}
	if a.first.IsZero() {
		a.first = now
	} else if age := now.Sub(a.first); age > MaxAge {
		return false, a.fail(fmt.Errorf("%w: datagram %v after the first, limit %v", ErrExpired, age, MaxAge))
	}
	h, err := ParseInitial(datagram)
	if err != nil {
		return false, err
	}
	if a.started && (h.v != a.v || string(h.DCID) != string(a.dcid[:a.dcidLen])) {
		return false, fmt.Errorf("%w: %s datagram for connection ID %x, the flow is %s %x", ErrMalformed,
			h.v.name, h.DCID, a.v.name, a.dcid[:a.dcidLen])
	}
	if err := a.derive(h.v, h.DCID); err != nil {
		return false, err
	}
	grew := false
	for off, n := 0, 0; off < len(datagram); off, n = off+h.Length, n+1 {
		if n > 0 {
			// A coalesced packet (RFC 9000, section 12.2). One of another
			// connection, type or version is skipped; bytes that are no
			// packet at all (some clients pad datagrams so) end the walk.
			var err error
			if h, err = parseLong(datagram[off:]); err != nil {
				break
			}
			if h.v != a.v || h.typ != a.v.initial || string(h.DCID) != string(a.dcid[:a.dcidLen]) {
				continue
			}
		}
		payload, err := a.open(datagram[off:off+h.Length], h)
		if err == errDuplicate {
			continue
		}
		if errors.Is(err, ErrProtocol) || errors.Is(err, ErrLimit) {
			return false, a.fail(err)
		}
		if err != nil {
			if n == 0 {
				return false, err
			}
			continue // a server drops the packet and reads on
		}
		a.started = true
		g, err := a.frames(payload)
		if err != nil {
			return false, a.fail(err)
		}
		grew = grew || g
	}
	if grew {
		a.checkDone()
	}
	return a.done, nil
}

func (a *Assembler) fail(err error) error {
	a.err = err
	return err
}

// open removes the header protection of the Initial packet pkt, decrypts
// a copy of it and returns the plaintext payload (RFC 9001, section 5).
func (a *Assembler) open(pkt []byte, h Header) ([]byte, error) {
	a.hp.Encrypt(a.mask[:], pkt[h.pnOffset+sampleOffset:h.pnOffset+sampleOffset+sampleLen])
	first := pkt[0] ^ a.mask[0]&0x0f
	pnLen := int(first&3) + 1
	hdrLen := h.pnOffset + pnLen
	if len(pkt)-hdrLen < tagLen {
		return nil, fmt.Errorf("%w: %d bytes after the header, shorter than the AEAD tag", ErrMalformed, len(pkt)-hdrLen)
	}
	if cap(a.packet) < len(pkt) {
		a.packet = make([]byte, len(pkt), max(len(pkt), 1500))
	}
	p := a.packet[:len(pkt)]
	copy(p, pkt)
	p[0] = first
	var truncated uint64
	for i := range pnLen {
		p[h.pnOffset+i] ^= a.mask[1+i]
		truncated = truncated<<8 | uint64(p[h.pnOffset+i])
	}
	pn := decodePacketNumber(a.largestPN, a.started, truncated, pnLen)
	a.nonce = a.iv
	for i := range 8 {
		a.nonce[len(a.nonce)-1-i] ^= byte(pn >> (8 * i))
	}
	payload, err := a.aead.Open(p[hdrLen:hdrLen], a.nonce[:], p[hdrLen:], p[:hdrLen])
	if err != nil {
		return nil, fmt.Errorf("%w: %s packet %d for connection ID %x: %v", ErrDecrypt, h.v.name, pn, h.DCID, err)
	}
	// The reserved bits are checked only now, after authentication, so
	// that they cannot be used to tell a forged packet (section 17.2).
	if first&0x0c != 0 {
		return nil, fmt.Errorf("%w: reserved bits 0x%x set in packet %d", ErrProtocol, first&0x0c, pn)
	}
	// A packet number received before is a duplicate, which a QUIC
	// server drops (RFC 9000, section 12.3); so must this package, or a
	// client could show it a hello in a packet the backend drops, and
	// the backend another hello.
	if slices.Contains(a.pns[:a.npns], pn) {
		return nil, errDuplicate
	}
	if a.npns == len(a.pns) {
		return nil, fmt.Errorf("%w: more than %d Initial packets", ErrLimit, MaxPackets)
	}
	a.pns[a.npns] = pn
	a.npns++
	if !a.started || pn > a.largestPN {
		a.largestPN = pn
	}
	return payload, nil
}

// errDuplicate is a packet whose number was received before: dropped
// silently.
var errDuplicate = errors.New("quic: duplicate packet number")

// decodePacketNumber recovers a full packet number from its truncated
// form (RFC 9000, appendix A.3).
func decodePacketNumber(largest int64, any bool, truncated uint64, pnLen int) int64 {
	expected := int64(0)
	if any {
		expected = largest + 1
	}
	win := int64(1) << (8 * pnLen)
	hwin, mask := win/2, win-1
	candidate := expected&^mask | int64(truncated)
	switch {
	case candidate <= expected-hwin && candidate < 1<<62-win:
		return candidate + win
	case candidate > expected+hwin && candidate >= win:
		return candidate - win
	}
	return candidate
}

// Frame types allowed in an Initial packet (RFC 9000, section 12.4).
const (
	framePadding         = 0x00
	framePing            = 0x01
	frameACK             = 0x02
	frameACKECN          = 0x03
	frameCrypto          = 0x06
	frameConnectionClose = 0x1c
)

// frames reads the frames of a decrypted Initial packet and reports
// whether the CRYPTO stream received new data.
func (a *Assembler) frames(p []byte) (grew bool, err error) {
	if len(p) == 0 {
		return false, fmt.Errorf("%w: packet without frames", ErrProtocol)
	}
	for off := 0; off < len(p); {
		typ, at := p[off], off
		off++
		switch typ {
		case framePadding:
			for off < len(p) && p[off] == framePadding {
				off++
			}
		case framePing:
		case frameACK, frameACKECN:
			// Largest Acknowledged, ACK Delay, ACK Range Count, First ACK
			// Range, then the ranges (two varints each) and, for 0x03,
			// three ECN counts (section 19.3). Each varint takes a byte
			// at least, so a huge count runs out of bytes quickly.
			var count uint64
			ok := true
			for i := 0; i < 4 && ok; i++ {
				var v uint64
				v, off, ok = readVarint(p, off)
				if i == 2 {
					count = v
				}
			}
			for ; ok && count > 0; count-- {
				_, off, ok = readVarint(p, off)
				if ok {
					_, off, ok = readVarint(p, off)
				}
			}
			for i := 0; ok && typ == frameACKECN && i < 3; i++ {
				_, off, ok = readVarint(p, off)
			}
			if !ok {
				return grew, fmt.Errorf("%w: truncated ACK frame at offset %d", ErrProtocol, at)
			}
		case frameCrypto:
			offset, o, ok := readVarint(p, off)
			var length uint64
			if ok {
				length, o, ok = readVarint(p, o)
			}
			if !ok || length > uint64(len(p)-o) {
				return grew, fmt.Errorf("%w: truncated CRYPTO frame at offset %d", ErrProtocol, at)
			}
			off = o + int(length)
			if offset > MaxCryptoBytes || length > MaxCryptoBytes-offset {
				return grew, fmt.Errorf("%w: CRYPTO data at offsets %d to %d, limit %d", ErrLimit, offset, offset+length, MaxCryptoBytes)
			}
			g, err := a.addCrypto(int(offset), p[o:off])
			if err != nil {
				return grew, err
			}
			grew = grew || g
		case frameConnectionClose:
			code, o, ok := readVarint(p, off)
			var n uint64
			if ok {
				_, o, ok = readVarint(p, o) // frame type
			}
			if ok {
				n, o, ok = readVarint(p, o)
			}
			if !ok || n > uint64(len(p)-o) {
				return grew, fmt.Errorf("%w: truncated CONNECTION_CLOSE frame at offset %d", ErrProtocol, at)
			}
			return grew, fmt.Errorf("%w: error code 0x%x", ErrClosed, code)
		default:
			return grew, fmt.Errorf("%w: frame type 0x%02x at offset %d is not allowed in an Initial packet", ErrProtocol, typ, at)
		}
	}
	return grew, nil
}

// readVarint reads a variable-length integer at off.
func readVarint(p []byte, off int) (v uint64, next int, ok bool) {
	v, w := varint(p[off:])
	return v, off + w, w > 0
}

// addCrypto stores CRYPTO data at offset and reports whether the stream
// holds bytes it did not have. Data for offsets received before must be
// the same as before: if it were not, which copy a QUIC stack keeps is up
// to its implementation, and a client could show this package one server
// name and the backend another.
func (a *Assembler) addCrypto(offset int, data []byte) (bool, error) {
	start, end := offset, offset+len(data)
	if start == end {
		return false, nil
	}
	// Compare with what overlaps, and find where [start, end) goes.
	i := 0
	for ; i < a.nspans && a.spans[i].end < start; i++ {
	}
	j := i // spans i..j-1 overlap or touch [start, end)
	covered := 0
	for ; j < a.nspans && a.spans[j].start <= end; j++ {
		s, e := max(a.spans[j].start, start), min(a.spans[j].end, end)
		if s < e {
			if string(a.stream[s:e]) != string(data[s-offset:e-offset]) {
				return false, fmt.Errorf("%w: CRYPTO data at offsets %d to %d differs from what was received before", ErrProtocol, s, e)
			}
			covered += e - s
		}
	}
	if covered == len(data) {
		return false, nil // a duplicate
	}
	if j == i && a.nspans == MaxFragments {
		return false, fmt.Errorf("%w: more than %d disjoint pieces of CRYPTO data", ErrLimit, MaxFragments)
	}
	if end > len(a.stream) {
		if end > cap(a.stream) {
			grown := make([]byte, len(a.stream), min(max(end, 2*cap(a.stream), 2048), MaxCryptoBytes))
			copy(grown, a.stream)
			a.stream = grown
		}
		a.stream = a.stream[:end]
	}
	copy(a.stream[start:end], data)
	merged := span{start, end}
	if j > i {
		merged.start = min(start, a.spans[i].start)
		merged.end = max(end, a.spans[j-1].end)
	}
	// Replace spans i..j-1 by merged.
	n := copy(a.spans[i+1:], a.spans[j:a.nspans])
	a.spans[i] = merged
	a.nspans = i + 1 + n
	return true, nil
}

// contiguous is how many bytes of the CRYPTO stream are known from offset 0.
func (a *Assembler) contiguous() int {
	if a.nspans == 0 || a.spans[0].start != 0 {
		return 0
	}
	return a.spans[0].end
}

// checkDone parses the start of the CRYPTO stream, the ClientHello, once
// it may be whole.
func (a *Assembler) checkDone() {
	b := a.stream[:a.contiguous()]
	// While a hello within the bound is not whole yet, skip the parser:
	// its ErrIncomplete allocates.
	const typeClientHello = 1
	switch {
	case len(b) == 0:
		return
	case b[0] != typeClientHello:
		// not a hello: the parser says so
	case len(b) < 4:
		return
	default:
		if n := 4 + (int(b[1])<<16 | int(b[2])<<8 | int(b[3])); n <= MaxCryptoBytes && len(b) < n {
			return
		}
	}
	info, err := clienthello.ParseHandshake(b, MaxCryptoBytes-4)
	if errors.Is(err, clienthello.ErrIncomplete) {
		return
	}
	a.done, a.hello, a.helloErr = true, info, err
}

// ClientHello returns what the ClientHello says once AddDatagram reported
// it whole, or the error lib/clienthello found in it (which wraps
// clienthello.ErrMalformed, ErrUnexpectedMessage or ErrTooLarge). The
// Info reads from the Assembler's buffer: it stays valid until Reset.
func (a *Assembler) ClientHello() (clienthello.Info, error) {
	if !a.done {
		return clienthello.Info{}, fmt.Errorf("%w: %d bytes of the CRYPTO stream so far", clienthello.ErrIncomplete, a.contiguous())
	}
	return a.hello, a.helloErr
}
