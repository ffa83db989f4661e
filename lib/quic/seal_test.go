package quic

import (
	"encoding/hex"
	"strings"
	"testing"
)

// The sending side, for the tests: it builds protected client Initial
// packets as RFC 9001 says, and is checked against the RFC's own packet
// (TestRFCClientInitial) before the other tests rely on it.

// sealer protects client Initial packets of one connection.
type sealer struct {
	k             keys
	scid          []byte
	token         []byte
	clearFixedBit bool // RFC 9287
}

func newSealer(tb testing.TB, v *version, dcid []byte) *sealer {
	tb.Helper()
	s := &sealer{}
	if err := s.k.derive(v, dcid); err != nil {
		tb.Fatal(err)
	}
	return s
}

// packet returns a protected Initial packet with packet number pn in
// pnLen bytes, carrying frames padded with PADDING to make the packet at
// least size bytes; reserved goes into the reserved bits.
func (s *sealer) packet(pn uint64, pnLen int, frames []byte, size int, reserved byte) []byte {
	v, dcid := s.k.v, s.k.dcid[:s.k.dcidLen]
	hdr := []byte{0xc0 | v.initial<<4 | reserved<<2 | byte(pnLen-1)}
	if s.clearFixedBit {
		hdr[0] &^= 0x40
	}
	hdr = append(hdr, byte(v.number>>24), byte(v.number>>16), byte(v.number>>8), byte(v.number))
	hdr = append(hdr, byte(len(dcid)))
	hdr = append(hdr, dcid...)
	hdr = append(hdr, byte(len(s.scid)))
	hdr = append(hdr, s.scid...)
	hdr = appendVarint(hdr, uint64(len(s.token)))
	hdr = append(hdr, s.token...)
	payload := append([]byte(nil), frames...)
	// 2-byte Length field, packet number, payload, tag.
	if pad := size - (len(hdr) + 2 + pnLen + len(payload) + tagLen); pad > 0 {
		payload = append(payload, make([]byte, pad)...)
	}
	if pad := sampleOffset - pnLen - len(payload); pad > 0 {
		payload = append(payload, make([]byte, pad)...) // room for the sample
	}
	hdr = append(hdr, byte(0x40|(pnLen+len(payload)+tagLen)>>8), byte(pnLen+len(payload)+tagLen))
	pnOffset := len(hdr)
	for i := pnLen - 1; i >= 0; i-- {
		hdr = append(hdr, byte(pn>>(8*i)))
	}
	nonce := s.k.iv
	for i := range 8 {
		nonce[11-i] ^= byte(pn >> (8 * i))
	}
	pkt := s.k.aead.Seal(hdr, nonce[:], payload, hdr)
	var mask [16]byte
	s.k.hp.Encrypt(mask[:], pkt[pnOffset+sampleOffset:])
	pkt[0] ^= mask[0] & 0x0f
	for i := range pnLen {
		pkt[pnOffset+i] ^= mask[1+i]
	}
	return pkt
}

// datagram is one Initial packet carrying frames, padded to 1200 bytes.
func (s *sealer) datagram(pn uint64, frames ...[]byte) []byte {
	return s.packet(pn, 2, concat(frames...), MinDatagramSize, 0)
}

// halves is two datagrams, packet numbers pn and pn+1, carrying the
// first and the second half of stream: a 1.5 KiB hello does not fit in
// one datagram of at most MaxDatagramSize bytes.
func (s *sealer) halves(pn uint64, stream []byte) [][]byte {
	half := len(stream) / 2
	return [][]byte{s.datagram(pn, cryptoFrame(0, stream[:half])), s.datagram(pn+1, cryptoFrame(half, stream[half:]))}
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return append(b, 0x40|byte(v>>8), byte(v))
	case v < 1<<30:
		return append(b, 0x80|byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(b, 0xc0|byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// cryptoFrame is a CRYPTO frame carrying data at offset.
func cryptoFrame(offset int, data []byte) []byte {
	f := appendVarint([]byte{frameCrypto}, uint64(offset))
	f = appendVarint(f, uint64(len(data)))
	return append(f, data...)
}

// unhex decodes hex written with spaces and line breaks, as in the RFCs.
func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
