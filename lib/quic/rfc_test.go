package quic

import (
	"bytes"
	"encoding/hex"
	"slices"
	"testing"
)

var rfcVersions = []struct {
	v                          *version
	clientSecret, key, iv, hp  string
	unprotectedHeader, initial string
}{
	{&v1,
		"c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea",
		"1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c", "9f50449e04a0e810283a1e9933adedd2",
		rfcUnprotectedHeaderV1, rfcClientInitialV1},
	{&v2,
		"14ec9d6eb9fd7af83bf5a668bc17a7e283766aade7ecd0891f70f9ff7f4bf47b",
		"8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f", "45b95e15235d6f45a6b19cbcb0294ba9",
		rfcUnprotectedHeaderV2, rfcClientInitialV2},
}

// TestRFCKeys derives the client's Initial secrets of the RFC 9001 and
// RFC 9369 examples (appendix A.1 of both).
func TestRFCKeys(t *testing.T) {
	for _, tc := range rfcVersions {
		t.Run(tc.v.name, func(t *testing.T) {
			s, err := initialSecrets(tc.v, unhex(t, rfcDCID))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name      string
				got, want []byte
			}{
				{"client_initial_secret", s.client, unhex(t, tc.clientSecret)},
				{"key", s.key, unhex(t, tc.key)},
				{"iv", s.iv, unhex(t, tc.iv)},
				{"hp", s.hp, unhex(t, tc.hp)},
			} {
				if !bytes.Equal(c.got, c.want) {
					t.Errorf("%s = %x, want %x", c.name, c.got, c.want)
				}
			}
		})
	}
}

// TestRFCClientInitial decrypts the client Initial packet of the RFC
// examples (appendix A.2) and reads its ClientHello; and checks that the
// tests' own sender (seal_test.go) builds exactly that packet, so that
// the other tests' packets are what a client would send.
func TestRFCClientInitial(t *testing.T) {
	frame := unhex(t, rfcCryptoFrame)
	wantStream := frame[4:] // after type 0x06, offset 0x00, length 0x40f1
	for _, tc := range rfcVersions {
		t.Run(tc.v.name, func(t *testing.T) {
			pkt := unhex(t, tc.initial)
			if len(pkt) != MinDatagramSize {
				t.Fatalf("RFC packet is %d bytes", len(pkt))
			}
			h, err := ParseInitial(pkt)
			if err != nil {
				t.Fatalf("ParseInitial: %v", err)
			}
			if h.Version != tc.v.number || hex.EncodeToString(h.DCID) != rfcDCID || len(h.SCID) != 0 || len(h.Token) != 0 || h.Length != len(pkt) {
				t.Errorf("header %+v", h)
			}
			orig := slices.Clone(pkt)
			var a Assembler
			done, err := a.AddDatagram(pkt)
			if err != nil || !done {
				t.Fatalf("AddDatagram: done %v, %v", done, err)
			}
			if !bytes.Equal(pkt, orig) {
				t.Errorf("AddDatagram modified the datagram")
			}
			if a.largestPN != 2 {
				t.Errorf("packet number %d, want 2", a.largestPN)
			}
			if got := a.stream[:a.contiguous()]; !bytes.Equal(got, wantStream) {
				t.Errorf("CRYPTO stream\n%x\nwant\n%x", got, wantStream)
			}
			info, err := a.ClientHello()
			if err != nil {
				t.Fatalf("ClientHello: %v", err)
			}
			if info.ServerName() != "example.com" || !slices.Equal(info.ALPN(), []string{"alpn"}) || info.Length != len(wantStream) {
				t.Errorf("ClientHello: server name %q, ALPN %q, length %d", info.ServerName(), info.ALPN(), info.Length)
			}

			// The same packet from the tests' sender.
			s := newSealer(t, tc.v, unhex(t, rfcDCID))
			built := s.packet(2, 4, frame, MinDatagramSize, 0)
			if !bytes.Equal(built, pkt) {
				t.Errorf("sealer builds\n%x\nthe RFC says\n%x", built, pkt)
			}
			hdr := unhex(t, tc.unprotectedHeader)
			if hdr[0] != 0xc3|tc.v.initial<<4 {
				t.Errorf("unprotected first byte 0x%02x", hdr[0])
			}
		})
	}
}
