package quic

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// TestSameHelloAsQuicGoServer is a differential test against a real QUIC
// server: each sequence of datagrams goes to an Assembler and to a
// quic-go server, which records the server name of the hello it reads.
// Where the Assembler reads a hello, it must be the one the server reads:
// otherwise a client could be routed by one name and served by another.
// The sequences mix a hello with another one (for evil-v1.example.test,
// or evil-ex.com) in packets that a server drops or reads differently.
func TestSameHelloAsQuicGoServer(t *testing.T) {
	stream := helloStream(t)
	evil := slices.Clone(stream)
	i := bytes.Index(evil, []byte("quic-v1.example.test"))
	copy(evil[i:], "evil-v1.example.test")
	half := len(stream) / 2
	// A small hello (the RFC examples', for example.com) fits in one
	// packet: a client can then show a whole hello in a packet that one
	// side drops, and the other hello afterwards.
	small := unhex(t, rfcCryptoFrame)[4:]
	smallEvil := bytes.Replace(small, []byte("example.com"), []byte("evil-ex.com"), 1)
	// The name lies in the first 100 bytes of the quic-go hello.
	cutAt := i - 10

	for _, tc := range []struct {
		name       string
		incomplete bool // lib/quic drops a part of the hello: it does not route
		datagrams  func(s, clear *sealer) [][]byte
	}{
		{"in order", false, func(s, _ *sealer) [][]byte { return s.halves(0, stream) }},
		{"reversed", false, func(s, _ *sealer) [][]byte { return reversed(s.halves(0, stream)) }},
		{"duplicate packet number", false, func(s, _ *sealer) [][]byte {
			return [][]byte{s.datagram(0, []byte{framePing}), s.datagram(0, cryptoFrame(0, smallEvil)), s.datagram(1, cryptoFrame(0, small))}
		}},
		{"fixed bit cleared", false, func(s, clear *sealer) [][]byte {
			return [][]byte{clear.datagram(0, cryptoFrame(0, smallEvil)), s.datagram(1, cryptoFrame(0, small))}
		}},
		{"conflicting retransmission", false, func(s, _ *sealer) [][]byte {
			return [][]byte{s.datagram(0, cryptoFrame(0, stream[:half])), s.datagram(1, cryptoFrame(0, evil[:half])), s.datagram(2, cryptoFrame(half, stream[half:]))}
		}},
		{"reserved bits", false, func(s, _ *sealer) [][]byte {
			return [][]byte{s.packet(0, 2, cryptoFrame(0, smallEvil), MinDatagramSize, 2), s.datagram(1, cryptoFrame(0, small))}
		}},
		{"past byte 1452", true, func(s, _ *sealer) [][]byte {
			// The start of the hello, then past byte 1452, which a
			// quic-go server never reads, the rest of a hello for
			// evil-v1.example.test; then the rest of the real hello.
			first := s.packet(0, 1, cryptoFrame(0, stream[:cutAt]), 0, 0)
			d := concat(first, s.packet(0x40, 1, []byte{framePing}, 1460-len(first), 0), s.packet(1, 2, cryptoFrame(cutAt, evil[cutAt:]), 0, 0))
			return [][]byte{d, s.datagram(2, cryptoFrame(cutAt, stream[cutAt:700])), s.datagram(3, cryptoFrame(700, stream[700:]))}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, names := quicGoServer(t)
			dcid := []byte(tc.name + "........")[:8]
			s := newSealer(t, &v1, dcid)
			clear := newSealer(t, &v1, dcid)
			clear.clearFixedBit = true
			ds := tc.datagrams(s, clear)

			var a Assembler
			var ours string
			var refused error
			for _, d := range ds {
				done, err := a.AddDatagram(d)
				if err != nil && !errors.Is(err, ErrNotInitial) && !errors.Is(err, ErrDecrypt) {
					refused = err
					break
				}
				if done {
					info, err := a.ClientHello()
					if err != nil {
						t.Fatal(err)
					}
					ours = info.ServerName()
					break
				}
			}

			c, err := net.DialUDP("udp", nil, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, d := range ds {
				if _, err := c.Write(d); err != nil {
					t.Fatal(err)
				}
			}
			// A server that refuses the flow reads no hello: wait a little
			// to log what it did, but require a hello only where this
			// package read one.
			wait := 3 * time.Second
			if ours != "" {
				wait = 60 * time.Second // generous: only a hung server is this slow
			}
			var theirs string
			select {
			case theirs = <-names:
			case <-time.After(wait):
			}
			t.Logf("quic-go server read %q; lib/quic read %q, refused: %v", theirs, ours, refused)
			if ours != "" && ours != theirs {
				t.Fatalf("lib/quic read %q, the quic-go server %q", ours, theirs)
			}
			if ours == "" && refused == nil && !tc.incomplete {
				t.Fatalf("lib/quic read no hello")
			}
		})
	}
}

// quicGoServer starts a quic-go server that records the server name of
// every hello it reads, and refuses the connection then.
func quicGoServer(t *testing.T) (*net.UDPAddr, <-chan string) {
	names := make(chan string, 16)
	tlsConf := &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		names <- chi.ServerName
		return nil, errors.New("test server: hello read, that is all")
	}}
	ln, err := quicgo.ListenAddr("127.0.0.1:0", tlsConf, &quicgo.Config{Versions: []quicgo.Version{quicgo.Version1, quicgo.Version2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			if _, err := ln.Accept(context.Background()); err != nil {
				return
			}
		}
	}()
	return ln.Addr().(*net.UDPAddr), names
}
