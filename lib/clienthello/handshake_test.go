package clienthello

import (
	"errors"
	"testing"
)

// TestParseHandshake parses the bare handshake message of every capture,
// as QUIC delivers it, and checks it says what the manifest says; every
// proper prefix is incomplete, and the limit and message type are checked
// from the header alone.
func TestParseHandshake(t *testing.T) {
	for _, c := range loadCaptures(t) {
		t.Run(c.file, func(t *testing.T) {
			if c.records == 0 {
				t.Skip("not a record-framed hello")
			}
			msg := handshakeOf(t, c.data)
			info, err := ParseHandshake(msg, DefaultLimit)
			if err != nil {
				t.Fatalf("ParseHandshake: %v", err)
			}
			c.check(t, info, len(msg), 0)
			// Bytes after the message (a QUIC CRYPTO stream may carry
			// more) change nothing.
			info, err = ParseHandshake(append(msg[:len(msg):len(msg)], 20, 0, 0, 1), DefaultLimit)
			if err != nil {
				t.Fatalf("ParseHandshake with trailing bytes: %v", err)
			}
			c.check(t, info, len(msg), 0)
			for n := 0; n < len(msg); n++ {
				if _, err := ParseHandshake(msg[:n], DefaultLimit); !errors.Is(err, ErrIncomplete) {
					t.Fatalf("ParseHandshake of %d of %d bytes: %v, want ErrIncomplete", n, len(msg), err)
				}
			}
			if _, err := ParseHandshake(msg[:4], len(msg)-5); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("ParseHandshake of the header with limit %d: %v, want ErrTooLarge", len(msg)-5, err)
			}
		})
	}
	for _, b := range [][]byte{{2}, {2, 0, 0, 40}, {0x16, 3, 1, 0, 40}} {
		if _, err := ParseHandshake(b, DefaultLimit); !errors.Is(err, ErrUnexpectedMessage) {
			t.Errorf("ParseHandshake(% x): %v, want ErrUnexpectedMessage", b, err)
		}
	}
	msg := helloMessage(ext{extServerName, sni(0, "a.example.test", 0, "b.example.test")})
	if _, err := ParseHandshake(msg, DefaultLimit); !errors.Is(err, ErrMalformed) {
		t.Errorf("ParseHandshake of a hello with two host names: %v, want ErrMalformed", err)
	}
}

// BenchmarkParseHandshake parses a bare handshake message. Goal: 0 allocs/op.
func BenchmarkParseHandshake(b *testing.B) {
	msg := handshakeOf(b, benchCapture(b, "go-default.bin").data)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseHandshake(msg, DefaultLimit); err != nil {
			b.Fatal(err)
		}
	}
}
