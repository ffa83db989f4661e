package quic

import (
	"bytes"
	"slices"
	"testing"
)

// rfcPacket returns the RFC 9001 client Initial (v1).
func rfcPacket(t *testing.T) []byte { return unhex(t, rfcClientInitialV1) }

// TestNotInitial checks what ParseInitial and AddDatagram say of
// datagrams that do not start a QUIC v1 or v2 connection; an unknown
// version has its own error, so that a caller drops it silently.
func TestNotInitial(t *testing.T) {
	set := func(b []byte, f func([]byte)) []byte { b = slices.Clone(b); f(b); return b }
	pkt := rfcPacket(t)
	s := newSealer(t, &v1, []byte("12345678"))
	short := newSealer(t, &v1, []byte("1234567"))
	long := slices.Concat(pkt[:5], []byte{21}, bytes.Repeat([]byte{1}, 21), pkt[14:])
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"unknown version", set(pkt, func(b []byte) { copy(b[1:5], []byte{0x1a, 0x2a, 0x3a, 0x4a}) }), ErrUnknownVersion},
		{"draft-29", set(pkt, func(b []byte) { copy(b[1:5], []byte{0xff, 0, 0, 29}) }), ErrUnknownVersion},
		{"version negotiation", set(pkt, func(b []byte) { copy(b[1:5], []byte{0, 0, 0, 0}) }), ErrNotInitial},
		{"short header", set(pkt, func(b []byte) { b[0] = 0x40 }), ErrNotInitial},
		{"handshake", set(pkt, func(b []byte) { b[0] = 0xe0 }), ErrNotInitial},
		{"retry", set(pkt, func(b []byte) { b[0] = 0xf0 }), ErrNotInitial},
		{"v2 type bits of a v1 Initial", set(unhex(t, rfcClientInitialV2), func(b []byte) { b[0] &^= 0x30 }), ErrNotInitial},
		{"1199 bytes", s.packet(0, 2, []byte{framePing}, MinDatagramSize-1, 0), ErrNotInitial},
		{"1453 bytes", s.packet(0, 2, []byte{framePing}, MaxDatagramSize+1, 0), ErrNotInitial},
		{"7-byte DCID", short.datagram(0, []byte{framePing}), ErrNotInitial},
		{"21-byte DCID", long, ErrMalformed},
		{"Length past the datagram", set(pkt, func(b []byte) { b[16], b[17] = 0x44, 0x9f }), ErrMalformed},
		{"Length below the sample", set(pkt, func(b []byte) { b[16], b[17] = 0x40, 19 }), ErrMalformed},
		{"token past the datagram", set(pkt, func(b []byte) { b[15] = 0x7f }), ErrMalformed},
		{"text", append([]byte("GET / HTTP/1.1\r\n"), make([]byte, 1200)...), ErrNotInitial},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseInitial(tc.b)
			checkKind(t, err, tc.want)
			var a Assembler
			_, err = a.AddDatagram(tc.b)
			checkKind(t, err, tc.want)
			if a.err != nil || a.started || a.nspans != 0 {
				t.Fatalf("the datagram changed the flow: err %v, started %v", a.err, a.started)
			}
		})
	}
}

// TestCorrupted flips every bit of the RFC client Initial, and cuts it
// at every length: each is an error (never a panic), none ends the flow,
// and the real packet still works afterwards: a forged datagram cannot
// end a flow.
func TestCorrupted(t *testing.T) {
	pkt := rfcPacket(t)
	var a Assembler
	try := func(b []byte, what string) {
		a.Reset()
		if done, err := a.AddDatagram(b); err == nil || done {
			t.Fatalf("%s: done %v, %v", what, done, err)
		} else {
			checkKind(t, err, err) // exactly one kind
		}
		if a.err != nil || a.started {
			t.Fatalf("%s: the flow changed", what)
		}
		if done, err := a.AddDatagram(pkt); err != nil || !done {
			t.Fatalf("%s, then the real packet: done %v, %v", what, done, err)
		}
	}
	for i := range len(pkt) * 8 {
		b := slices.Clone(pkt)
		b[i/8] ^= 1 << (i % 8)
		// The fixed bit (0x40) is not checked (RFC 9287 lets a client
		// clear it), but the first byte is authenticated: flipping it
		// too is an error.
		try(b, "bit "+itoa(i)+" flipped")
	}
	for n := range len(pkt) {
		try(pkt[:n], "cut at "+itoa(n))
	}
}

func itoa(n int) string { return string(appendInt(nil, n)) }

func appendInt(b []byte, n int) []byte {
	if n >= 10 {
		b = appendInt(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

// TestProtocolViolations sends decryptable Initial packets that break the
// rules of RFC 9000: each ends the flow with ErrProtocol (or ErrClosed),
// returned again for the next datagram.
func TestProtocolViolations(t *testing.T) {
	stream := helloStream(t)
	s := newSealer(t, &v1, []byte("violator"))
	for _, tc := range []struct {
		name  string
		first []byte // an earlier datagram, nil for none
		b     []byte
		want  error
	}{
		{"STREAM frame", nil, s.datagram(0, []byte{0x08, 0, 1, 'x'}), ErrProtocol},
		{"NEW_TOKEN frame", nil, s.datagram(0, []byte{0x07, 1, 'x'}), ErrProtocol},
		{"HANDSHAKE_DONE frame", nil, s.datagram(0, []byte{0x1e}), ErrProtocol},
		{"CONNECTION_CLOSE 0x1d", nil, s.datagram(0, []byte{0x1d, 0, 0}), ErrProtocol},
		{"PADDING as a 2-byte varint", nil, s.datagram(0, []byte{0x40, 0x00}), ErrProtocol},
		{"truncated CRYPTO", nil, append(s.packet(0, 2, []byte{framePing, frameCrypto, 0, 0x44}, 0, 0), make([]byte, 1200)...), ErrProtocol},
		{"CRYPTO longer than the packet", nil, append(s.packet(0, 2, []byte{frameCrypto, 0, 0x44, 0x00}, 0, 0), make([]byte, 1200)...), ErrProtocol},
		{"truncated ACK", nil, append(s.packet(0, 2, []byte{frameACK, 0, 0, 5}, 0, 0), make([]byte, 1200)...), ErrProtocol},
		{"no frames", nil, append(s.packet(0, 4, nil, 0, 0), make([]byte, 1200)...), ErrProtocol},
		{"reserved bits", nil, s.packet(0, 2, []byte{framePing}, MinDatagramSize, 1), ErrProtocol},
		{"conflicting CRYPTO data", s.datagram(0, cryptoFrame(0, stream[:200])),
			s.datagram(1, cryptoFrame(100, slices.Concat(stream[100:150], []byte("X"), stream[151:300]))), ErrProtocol},
		{"CONNECTION_CLOSE", s.datagram(0, cryptoFrame(0, stream[:200])),
			s.datagram(1, []byte{frameConnectionClose, 0x0a, 0x06, 2, 'n', 'o'}), ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a Assembler
			if tc.first != nil {
				if _, err := a.AddDatagram(tc.first); err != nil {
					t.Fatal(err)
				}
			}
			_, err := a.AddDatagram(tc.b)
			checkKind(t, err, tc.want)
			_, err = a.AddDatagram(s.datagram(9, cryptoFrame(0, stream)))
			checkKind(t, err, tc.want)
		})
	}
}

// TestAllowedFrames sends every frame allowed in an Initial packet,
// ACK ranges and ECN counts included, around the hello.
func TestAllowedFrames(t *testing.T) {
	stream := helloStream(t)
	s := newSealer(t, &v2, []byte("allowed frames"))
	ack := []byte{frameACK, 0x40, 100, 0x44, 0x00, 2, 3, 1, 2, 0x80, 0, 0, 1, 4}
	ackECN := append(slices.Clone(ack), 1, 0x40, 2, 0)
	ackECN[0] = frameACKECN
	var a Assembler
	done, err := a.AddDatagram(s.datagram(0, ack, []byte{framePing, 0, 0}, cryptoFrame(700, stream[700:]), ackECN))
	if err != nil || done {
		t.Fatalf("first: done %v, %v", done, err)
	}
	done, err = a.AddDatagram(s.datagram(1, cryptoFrame(0, nil), []byte{framePing}, cryptoFrame(0, stream[:700])))
	if err != nil || !done {
		t.Fatalf("second: done %v, %v", done, err)
	}
	if info, err := a.ClientHello(); err != nil || info.ServerName() != "quic-v1.example.test" {
		t.Fatalf("ClientHello: %q, %v", info.ServerName(), err)
	}
}

// TestOtherConnection sends, in the middle of a flow, a datagram of
// another connection ID and one of another version: each is refused
// without ending the flow.
func TestOtherConnection(t *testing.T) {
	stream := helloStream(t)
	s := newSealer(t, &v1, []byte("the flow"))
	for _, other := range []*sealer{newSealer(t, &v1, []byte("not the flow")), newSealer(t, &v2, []byte("the flow"))} {
		var a Assembler
		if _, err := a.AddDatagram(s.datagram(0, cryptoFrame(0, stream[:500]))); err != nil {
			t.Fatal(err)
		}
		_, err := a.AddDatagram(other.datagram(1, cryptoFrame(500, bytes.Repeat([]byte{'x'}, len(stream)-500))))
		checkKind(t, err, ErrMalformed)
		if done, err := a.AddDatagram(s.datagram(1, cryptoFrame(500, stream[500:]))); err != nil || !done {
			t.Fatalf("the flow's own datagram: done %v, %v", done, err)
		}
	}
}

// TestDroppedLikeAServer sends packets that a QUIC server drops and that
// carry a hello: this package must drop them too, and read the hello the
// server reads, or a client could be routed by one name and served by
// another.
func TestDroppedLikeAServer(t *testing.T) {
	stream := helloStream(t)
	other := slices.Clone(stream)
	i := bytes.Index(other, []byte("quic-v1.example.test"))
	copy(other[i:], "evil-v1.example.test")
	s := newSealer(t, &v1, []byte("drop like a server"))
	check := func(t *testing.T, a *Assembler) {
		t.Helper()
		info, err := a.ClientHello()
		if err != nil || info.ServerName() != "quic-v1.example.test" {
			t.Fatalf("ClientHello: %q, %v; want the hello the server reads", info.ServerName(), err)
		}
	}
	t.Run("duplicate packet number", func(t *testing.T) {
		var a Assembler
		for i, d := range slices.Concat([][]byte{
			s.datagram(0, []byte{framePing}),
			s.datagram(0, cryptoFrame(0, other[:len(other)/2])), // a server drops it
		}, s.halves(1, stream)) {
			if _, err := a.AddDatagram(d); err != nil {
				t.Fatalf("datagram %d: %v", i, err)
			}
		}
		check(t, &a)
	})
	t.Run("fixed bit cleared without a token", func(t *testing.T) {
		evil := newSealer(t, &v1, []byte("drop like a server"))
		evil.clearFixedBit = true
		var a Assembler
		_, err := a.AddDatagram(evil.datagram(0, cryptoFrame(0, other[:len(other)/2])))
		checkKind(t, err, ErrNotInitial)
		addAll(t, &a, s.halves(1, stream))
		check(t, &a)
	})
	t.Run("fixed bit cleared with a token", func(t *testing.T) {
		greased := newSealer(t, &v2, []byte("grease quic bit"))
		greased.clearFixedBit, greased.token = true, []byte("a NEW_TOKEN token")
		var a Assembler
		addAll(t, &a, greased.halves(0, stream))
		check(t, &a)
	})
	t.Run("packets", func(t *testing.T) {
		var a Assembler
		var err error
		for pn := uint64(0); pn <= MaxPackets && err == nil; {
			var d []byte
			for ; pn <= MaxPackets && len(d) < 1000; pn++ {
				d = append(d, s.packet(pn, 1, []byte{framePing}, 0, 0)...)
			}
			_, err = a.AddDatagram(append(d, make([]byte, max(0, MinDatagramSize-len(d)))...))
		}
		checkKind(t, err, ErrLimit)
	})
}

// addAll adds the datagrams and checks the hello is whole with the last.
func addAll(t *testing.T, a *Assembler, ds [][]byte) {
	t.Helper()
	for i, d := range ds {
		done, err := a.AddDatagram(d)
		if err != nil || done != (i == len(ds)-1) {
			t.Fatalf("datagram %d of %d: done %v, %v", i+1, len(ds), done, err)
		}
	}
}
