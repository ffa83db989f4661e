package quic

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/snitools/snitools/lib/clienthello"
)

// FuzzAssembler is a differential test: it makes a CRYPTO stream (a
// handshake message whose body is the fuzzer's), cuts it into at most
// MaxFragments pieces of random sizes, shuffles and duplicates some,
// interleaves PING, PADDING and ACK, encrypts them as a client would with
// the real Initial keys (v1 or v2), and feeds the datagrams to an
// Assembler. It must then hold exactly that stream, and report what
// clienthello.ParseHandshake says of it.
func FuzzAssembler(f *testing.F) {
	// The RFC examples' hello, not the larger quic-go one: the fuzzer
	// minimizes every new input, which takes minutes for a large one.
	f.Add(unhex(f, rfcCryptoFrame)[8:], []byte{1, 2, 3, 4, 5, 6, 7, 8, 2}, false)
	f.Add(unhex(f, rfcCryptoFrame)[8:], []byte{0xff, 0, 0xff, 0, 0xff}, true)
	f.Add(unhex(f, rfcCryptoFrame)[8:], []byte{}, false)
	f.Add([]byte("not a hello"), []byte{9}, true)
	f.Fuzz(func(t *testing.T, body, plan []byte, useV2 bool) {
		if len(body) > 4000 {
			body = body[:4000]
		}
		msg := append([]byte{1, 0, byte(len(body) >> 8), byte(len(body))}, body...)
		var seed [8]byte
		n := copy(seed[:], plan)
		maxLen := 1200 // a piece must fit in a datagram
		if len(plan) > n {
			maxLen = min(maxLen, 1+int(plan[n])*8)
		}
		rng := rand.New(rand.NewPCG(binary.BigEndian.Uint64(seed[:]), uint64(len(plan))))
		ps := cut(rng, msg, maxLen)
		if len(ps) > MaxFragments {
			// More pieces could leave more gaps than allowed: cut the
			// stream into MaxFragments equal pieces instead (of at most
			// 126 bytes, each fits in a datagram).
			size := (len(msg) + MaxFragments - 1) / MaxFragments
			ps = ps[:0]
			for off := 0; off < len(msg); off += size {
				ps = append(ps, piece{off, msg[off:min(off+size, len(msg))]})
			}
		}
		for i := range len(ps) / 4 {
			ps = append(ps, ps[rng.IntN(len(ps)-i)])
		}
		rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		v := &v1
		if useV2 {
			v = &v2
		}
		s := newSealer(t, v, seed[:])
		var pn uint64
		var a Assembler
		for i, d := range pack(rng, s, &pn, ps) {
			if _, err := a.AddDatagram(d); err != nil {
				t.Fatalf("datagram %d: %v", i, err)
			}
		}
		if !a.done || a.contiguous() < len(msg) || !bytes.Equal(a.stream[:len(msg)], msg) {
			t.Fatalf("done %v, %d contiguous bytes of %d; the stream differs: %v", a.done, a.contiguous(), len(msg), !bytes.Equal(a.stream[:min(len(msg), a.contiguous())], msg[:min(len(msg), a.contiguous())]))
		}
		got, err := a.ClientHello()
		want, wantErr := clienthello.ParseHandshake(msg, MaxCryptoBytes-4)
		if (err == nil) != (wantErr == nil) || got.ServerName() != want.ServerName() || got.Length != want.Length {
			t.Fatalf("ClientHello: %q, %d, %v; ParseHandshake of the stream: %q, %d, %v",
				got.ServerName(), got.Length, err, want.ServerName(), want.Length, wantErr)
		}
	})
}

// FuzzDatagram feeds the input to an Assembler as the frames of an
// Initial packet encrypted with the real keys (so that the fuzzer reaches
// the frame parser), and as the start of a raw datagram padded with
// zeros to 1200 bytes (so that it reaches the header parser). Neither may
// panic; every error is of exactly one kind; what is accepted keeps the
// reassembly state consistent. The seeds are small on purpose: the fuzzer
// minimizes every new input, which takes minutes for a 1200-byte one.
func FuzzDatagram(f *testing.F) {
	f.Add(unhex(f, rfcClientInitialV1)[:64])
	f.Add(unhex(f, rfcClientInitialV2)[:64])
	f.Add(unhex(f, rfcCryptoFrame)[:48])
	f.Add([]byte{frameACKECN, 1, 0, 1, 0, 0, 0, 0, framePing, frameCrypto, 0x80, 0, 0xff, 0xf0, 0})
	f.Add([]byte{frameConnectionClose, 0, 0, 0})
	f.Add([]byte{frameCrypto, 0, 4, 1, 0, 0, 0, 0})
	s := newSealer(f, &v1, []byte("fuzz dcid"))
	f.Fuzz(func(t *testing.T, b []byte) {
		raw := append(slices.Clone(b), make([]byte, max(0, MinDatagramSize-len(b)))...)
		var a Assembler
		for _, d := range [][]byte{s.datagram(0, b), raw, s.datagram(1, b)} {
			_, err := a.AddDatagram(d)
			kinds := 0
			for _, k := range errorKinds {
				if errors.Is(err, k) {
					kinds++
				}
			}
			if err != nil && kinds != 1 {
				t.Fatalf("error %q is %d kinds", err, kinds)
			}
			checkSpans(t, &a)
		}
	})
}

// checkSpans checks the reassembly state: spans sorted, disjoint, not
// touching, inside the stream buffer, within the bounds.
func checkSpans(t *testing.T, a *Assembler) {
	t.Helper()
	if a.nspans > MaxFragments || len(a.stream) > MaxCryptoBytes || cap(a.stream) > MaxCryptoBytes {
		t.Fatalf("%d spans, stream %d/%d", a.nspans, len(a.stream), cap(a.stream))
	}
	prev := -1
	for _, s := range a.spans[:a.nspans] {
		if s.start <= prev || s.end <= s.start || s.end > len(a.stream) {
			t.Fatalf("spans %v, stream %d bytes", a.spans[:a.nspans], len(a.stream))
		}
		prev = s.end
	}
}
