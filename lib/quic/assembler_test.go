package quic

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/snitools/snitools/lib/clienthello"
)

// errorKinds are the errors of this package; every error is exactly one.
var errorKinds = []error{ErrUnknownVersion, ErrNotInitial, ErrMalformed, ErrDecrypt, ErrProtocol, ErrLimit, ErrExpired, ErrClosed}

func checkKind(t *testing.T, err, want error) {
	t.Helper()
	n := 0
	for _, k := range errorKinds {
		if errors.Is(err, k) {
			n++
		}
	}
	if err != nil && n != 1 {
		t.Fatalf("error %q is %d of the package's kinds, want exactly one", err, n)
	}
	if !errors.Is(err, want) || (want == nil) != (err == nil) {
		t.Fatalf("error %v, want %v", err, want)
	}
}

// TestCaptures replays the real clients' datagrams: in order, the hello is
// whole with the last one and not before; in reverse order and with every
// datagram sent twice it is the same hello.
func TestCaptures(t *testing.T) {
	for _, c := range loadCaptures(t) {
		t.Run(c.file, func(t *testing.T) {
			orders := map[string][][]byte{
				"in order": c.datagrams,
				"reversed": reversed(c.datagrams),
				"twice":    twice(c.datagrams),
			}
			for name, ds := range orders {
				var a Assembler
				for i, d := range ds {
					orig := slices.Clone(d)
					done, err := a.AddDatagram(d)
					if err != nil {
						t.Fatalf("%s: datagram %d: %v", name, i, err)
					}
					if !bytes.Equal(d, orig) {
						t.Fatalf("%s: datagram %d modified", name, i)
					}
					if want := allIn(ds[:i+1], c.datagrams); done != want {
						t.Fatalf("%s: done %v after datagram %d, want %v", name, done, i, want)
					}
				}
				checkHello(t, &a, c)
			}
		})
	}
}

// allIn reports whether every datagram of all is among got.
func allIn(got, all [][]byte) bool {
	for _, d := range all {
		if !slices.ContainsFunc(got, func(g []byte) bool { return bytes.Equal(g, d) }) {
			return false
		}
	}
	return true
}

func reversed(ds [][]byte) [][]byte {
	out := slices.Clone(ds)
	slices.Reverse(out)
	return out
}

func twice(ds [][]byte) [][]byte {
	var out [][]byte
	for _, d := range ds {
		out = append(out, d, d)
	}
	return out
}

func checkHello(t *testing.T, a *Assembler, c capture) {
	t.Helper()
	info, err := a.ClientHello()
	if err != nil {
		t.Fatalf("ClientHello: %v", err)
	}
	if info.ServerName() != c.serverName || !slices.Equal(info.ALPN(), c.alpn) || info.Length != c.helloLen || a.v.number != c.version {
		t.Fatalf("server name %q, ALPN %q, %d bytes, version 0x%08x; manifest says %q, %q, %d, 0x%08x",
			info.ServerName(), info.ALPN(), info.Length, a.v.number, c.serverName, c.alpn, c.helloLen, c.version)
	}
}

// helloStream returns the CRYPTO stream (the hello) of the first capture.
func helloStream(tb testing.TB) []byte {
	tb.Helper()
	c := loadCaptures(tb)[0]
	var a Assembler
	for _, d := range c.datagrams {
		if _, err := a.AddDatagram(d); err != nil {
			tb.Fatal(err)
		}
	}
	return slices.Clone(a.stream[:c.helloLen])
}

// piece is a CRYPTO frame's data and offset.
type piece struct {
	off  int
	data []byte
}

// cut cuts stream into pieces of 1 to maxLen bytes.
func cut(rng *rand.Rand, stream []byte, maxLen int) []piece {
	var ps []piece
	for off := 0; off < len(stream); {
		n := min(1+rng.IntN(maxLen), len(stream)-off)
		ps = append(ps, piece{off, stream[off : off+n]})
		off += n
	}
	return ps
}

// pack puts the pieces (at most 1200 bytes each) into CRYPTO frames, with
// PING, PADDING and ACK frames between them, in datagrams of 1200 to
// about 1400 bytes.
func pack(rng *rand.Rand, s *sealer, pn *uint64, ps []piece) [][]byte {
	var ds [][]byte
	var frames []byte
	for i, p := range ps {
		if len(frames)+len(p.data) > 1300 { // keep the datagram within MaxDatagramSize
			ds = append(ds, s.datagram(*pn, frames))
			*pn++
			frames = nil
		}
		switch rng.IntN(4) {
		case 0:
			frames = append(frames, framePing)
		case 1:
			frames = append(frames, make([]byte, 1+rng.IntN(20))...)
		case 2:
			frames = append(frames, frameACK, 0, 0, 0, 0)
		}
		frames = append(frames, cryptoFrame(p.off, p.data)...)
		if len(frames) > 1000 || i == len(ps)-1 {
			ds = append(ds, s.datagram(*pn, frames))
			*pn++
			frames = nil
		}
	}
	return ds
}

// TestReassembly sends a real hello cut into pieces of random sizes, in
// random order, some sent twice (cut differently, so that they overlap),
// with PING, PADDING and ACK frames between them: the Assembler says the
// hello is whole exactly when every byte has come, and it is the hello.
func TestReassembly(t *testing.T) {
	stream := helloStream(t)
	dcid := []byte("reassemble")
	completed, limited := 0, 0
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 22))
		ps := cut(rng, stream, []int{8, 100, 400, 1200}[seed%4])
		if seed%2 == 1 { // overlapping duplicates
			ps = append(ps, cut(rng, stream, 300)...)
		}
		rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		for len(ps) > 200 { // pieces of up to 8 bytes: keep the datagram count small
			ps = ps[:len(ps)-1]
		}
		v := []*version{&v1, &v2}[seed%2]
		s := newSealer(t, v, dcid)
		var pn uint64
		ds := pack(rng, s, &pn, ps)
		var a Assembler
		have := make([]bool, len(stream))
		for i, d := range ds {
			if i >= MaxDatagrams {
				break
			}
			done, err := a.AddDatagram(d)
			if errors.Is(err, ErrLimit) && a.nspans == MaxFragments {
				limited++
				break // many small pieces out of order: a bound, checked below
			}
			if err != nil {
				t.Fatalf("seed %d: datagram %d: %v", seed, i, err)
			}
			for _, p := range piecesOf(t, s, d) {
				for k := range p.data {
					have[p.off+k] = true
				}
			}
			if want := !slices.Contains(have, false); done != want {
				t.Fatalf("seed %d: done %v after datagram %d, every byte in: %v", seed, done, i, want)
			}
			if done {
				if !bytes.Equal(a.stream[:len(stream)], stream) {
					t.Fatalf("seed %d: reassembled stream differs", seed)
				}
				info, err := a.ClientHello()
				if err != nil || info.ServerName() != "quic-v1.example.test" {
					t.Fatalf("seed %d: ClientHello: %q, %v", seed, info.ServerName(), err)
				}
				completed++
				break
			}
		}
	}
	// Most flows complete; the rest stop at MaxFragments or MaxDatagrams.
	t.Logf("%d of 200 flows complete, %d stopped at MaxFragments", completed, limited)
	if completed < 100 || limited == 0 {
		t.Errorf("%d flows complete, %d stopped at MaxFragments: the test no longer tests both", completed, limited)
	}
}

// piecesOf decrypts a test datagram with its sealer's keys and returns its
// CRYPTO pieces.
func piecesOf(t *testing.T, s *sealer, d []byte) []piece {
	t.Helper()
	var a Assembler
	a.keys = s.k
	h, err := ParseInitial(d)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.open(d[:h.Length], h)
	if err != nil {
		t.Fatal(err)
	}
	var ps []piece
	for off := 0; off < len(p); {
		switch p[off] {
		case frameCrypto:
			o, x, _ := readVarint(p, off+1)
			n, y, _ := readVarint(p, x)
			ps = append(ps, piece{int(o), p[y : y+int(n)]})
			off = y + int(n)
		case frameACK:
			off += 5
		default:
			off++
		}
	}
	return ps
}

// TestCoalesced puts the hello in two Initial packets of one datagram,
// with a 0-RTT packet, an Initial of another connection and trailing
// junk around them, as RFC 9000 (section 12.2) allows.
func TestCoalesced(t *testing.T) {
	stream := helloStream(t)
	dcid := []byte("coalesce")
	for _, v := range []*version{&v1, &v2} {
		t.Run(v.name, func(t *testing.T) {
			s := newSealer(t, v, dcid)
			other := newSealer(t, v, []byte("another-connection"))
			p1 := s.packet(0, 1, cryptoFrame(500, stream[500:1000]), 0, 0)
			p2 := s.packet(1, 4, cryptoFrame(0, stream[:500]), 0, 0)
			// A 0-RTT packet: long header, type 0-RTT, opaque payload.
			zeroRTT := []byte{0xc0 | v.zeroRTT<<4, byte(v.number >> 24), byte(v.number >> 16), byte(v.number >> 8), byte(v.number)}
			zeroRTT = append(append(append(zeroRTT, byte(len(dcid))), dcid...), 0)
			zeroRTT = append(zeroRTT, 0x40, 40)
			zeroRTT = append(zeroRTT, bytes.Repeat([]byte{0xee}, 40)...)
			foreign := other.packet(1, 1, cryptoFrame(0, bytes.Repeat([]byte{'x'}, 100)), 0, 0)
			d := concat(p1, zeroRTT, foreign, p2)
			d = append(d, make([]byte, max(0, MinDatagramSize-len(d)))...) // junk: zeros
			var a Assembler
			done, err := a.AddDatagram(d)
			if err != nil || done || a.contiguous() != 1000 {
				t.Fatalf("AddDatagram: done %v, %v, %d bytes", done, err, a.contiguous())
			}
			done, err = a.AddDatagram(s.datagram(2, cryptoFrame(1000, stream[1000:])))
			if err != nil || !done {
				t.Fatalf("AddDatagram: done %v, %v", done, err)
			}
			if !bytes.Equal(a.stream[:len(stream)], stream) {
				t.Fatalf("reassembled stream differs")
			}
		})
	}
}

// TestBounds drives each bound of a flow past its limit.
func TestBounds(t *testing.T) {
	dcid := []byte("bounded!")
	s := newSealer(t, &v1, dcid)
	add := func(t *testing.T, a *Assembler, frames ...[]byte) (bool, error) {
		t.Helper()
		return a.AddDatagram(s.datagram(uint64(a.datagrams), frames...))
	}
	t.Run("fragments", func(t *testing.T) {
		var a Assembler
		var frames [][]byte
		for i := range MaxFragments {
			frames = append(frames, cryptoFrame(10+2*i, []byte{byte(i)}))
		}
		if _, err := add(t, &a, frames...); err != nil {
			t.Fatalf("%d disjoint pieces: %v", MaxFragments, err)
		}
		_, err := add(t, &a, cryptoFrame(1000, []byte{1}))
		checkKind(t, err, ErrLimit)
		// Filling a gap would have merged two pieces, but the flow is over.
		_, err = add(t, &a, cryptoFrame(11, []byte{1}))
		checkKind(t, err, ErrLimit)
	})
	t.Run("bytes", func(t *testing.T) {
		var a Assembler
		if _, err := add(t, &a, cryptoFrame(MaxCryptoBytes-2, []byte{1, 2})); err != nil {
			t.Fatalf("CRYPTO data ending at %d: %v", MaxCryptoBytes, err)
		}
		if len(a.stream) != MaxCryptoBytes || cap(a.stream) != MaxCryptoBytes {
			t.Fatalf("stream buffer %d/%d bytes", len(a.stream), cap(a.stream))
		}
		_, err := add(t, &a, cryptoFrame(MaxCryptoBytes-1, []byte{2, 3}))
		checkKind(t, err, ErrLimit)
		var b Assembler
		_, err = add(t, &b, cryptoFrame(1<<62-1, nil))
		checkKind(t, err, ErrLimit)
	})
	t.Run("datagrams", func(t *testing.T) {
		var a Assembler
		for i := range MaxDatagrams {
			if done, err := add(t, &a, []byte{framePing}); err != nil || done {
				t.Fatalf("datagram %d: done %v, %v", i, done, err)
			}
		}
		_, err := add(t, &a, cryptoFrame(0, helloStream(t)))
		checkKind(t, err, ErrLimit)
	})
	t.Run("gap", func(t *testing.T) {
		stream := helloStream(t)
		var a Assembler
		done, err := add(t, &a, cryptoFrame(0, stream[:100]), cryptoFrame(101, stream[101:800]))
		if err == nil && !done {
			done, err = add(t, &a, cryptoFrame(800, stream[800:]))
		}
		if err != nil || done {
			t.Fatalf("hello less one byte: done %v, %v", done, err)
		}
		if _, err := a.ClientHello(); !errors.Is(err, clienthello.ErrIncomplete) {
			t.Fatalf("ClientHello: %v, want clienthello.ErrIncomplete", err)
		}
		if done, err := add(t, &a, cryptoFrame(100, stream[100:101])); err != nil || !done {
			t.Fatalf("the missing byte: done %v, %v", done, err)
		}
	})
	t.Run("age", func(t *testing.T) {
		stream := helloStream(t)
		t0 := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
		var a Assembler
		if _, err := a.AddDatagramAt(t0, s.datagram(0, cryptoFrame(0, stream[:10]))); err != nil {
			t.Fatal(err)
		}
		if _, err := a.AddDatagramAt(t0.Add(MaxAge), s.datagram(1, cryptoFrame(10, stream[10:20]))); err != nil {
			t.Fatalf("at MaxAge: %v", err)
		}
		_, err := a.AddDatagramAt(t0.Add(MaxAge+time.Nanosecond), s.datagram(2, cryptoFrame(20, stream[20:])))
		checkKind(t, err, ErrExpired)
	})
	t.Run("hello too large", func(t *testing.T) {
		var a Assembler
		done, err := add(t, &a, cryptoFrame(0, []byte{1, 0, 0xff, 0xff}))
		if err != nil || !done {
			t.Fatalf("done %v, %v", done, err)
		}
		if _, err := a.ClientHello(); !errors.Is(err, clienthello.ErrTooLarge) {
			t.Fatalf("ClientHello: %v, want clienthello.ErrTooLarge", err)
		}
	})
}
