package tests

// ClientHellos for the tests to send: built by hand (hello, rawHello,
// sslv2Hello), framed into records of any size (frameRecords), or taken
// from a real client's capture and modified (captureMessage,
// withExtensions, filterExtensions, withSuites), so that a test can
// send what no TLS library would.

import (
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// hello is a ClientHello under construction, for inputs no TLS library
// would send.
type hello struct {
	recordVersion uint16 // 0x0301 if 0
	legacyVersion uint16 // 0x0303 if 0
	exts          []helloExt
	recordSize    int // split the handshake message into records of this size (16384 if 0)
}

type helloExt struct {
	typ  uint16
	body []byte
}

// sniExt is a server_name extension with the given entries, each a
// name type (byte) followed by a name (string).
func sniExt(entries ...any) helloExt {
	var list []byte
	for i := 0; i+1 < len(entries); i += 2 {
		name := entries[i+1].(string)
		list = append(list, entries[i].(byte))
		list = binary.BigEndian.AppendUint16(list, uint16(len(name)))
		list = append(list, name...)
	}
	body := binary.BigEndian.AppendUint16(nil, uint16(len(list)))
	return helloExt{typ: 0, body: append(body, list...)}
}

// message is the handshake message: type, length, body.
func (h hello) message() []byte {
	lv := h.legacyVersion
	if lv == 0 {
		lv = 0x0303
	}
	body := binary.BigEndian.AppendUint16(nil, lv)
	body = append(body, make([]byte, 32)...)          // random
	body = append(body, 0)                            // session id
	body = append(body, 0, 4, 0x13, 0x01, 0xc0, 0x2f) // cipher suites
	body = append(body, 1, 0)                         // compression
	if h.exts != nil {
		var exts []byte
		for _, e := range h.exts {
			exts = binary.BigEndian.AppendUint16(exts, e.typ)
			exts = binary.BigEndian.AppendUint16(exts, uint16(len(e.body)))
			exts = append(exts, e.body...)
		}
		body = binary.BigEndian.AppendUint16(body, uint16(len(exts)))
		body = append(body, exts...)
	}
	msg := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	return append(msg, body...)
}

// bytes frames the message in records.
func (h hello) bytes() []byte { return frameRecords(h.message(), h.recordVersion, h.recordSize) }

func frameRecords(msg []byte, version uint16, size int) []byte {
	if version == 0 {
		version = 0x0301
	}
	if size == 0 {
		size = 16384
	}
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 22, byte(version>>8), byte(version))
		out = binary.BigEndian.AppendUint16(out, uint16(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// rawHello builds a minimal but well-formed TLS 1.3 ClientHello record
// carrying sni as its host name exactly as given (nothing checked), so
// that tests can send names no TLS library would.
func rawHello(sni string) []byte {
	var b cryptobyte.Builder
	b.AddUint8(22)
	b.AddUint16(0x0301)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(1)
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16(0x0303)
			random := make([]byte, 32)
			rand.Read(random)
			b.AddBytes(random)
			b.AddUint8(0)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(0x1301) })
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				if sni != "" {
					b.AddUint16(0) // server_name
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
							b.AddUint8(0)
							b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(sni)) })
						})
					})
				}
				b.AddUint16(43) // supported_versions
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(0x0304) })
				})
			})
		})
	})
	return b.BytesOrPanic()
}

// captureMessage returns the handshake message of a ClientHello captured in
// one record (lib/clienthello/testdata/captures).
func captureMessage(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "lib", "clienthello", "testdata", "captures", file))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 9 || b[0] != 22 || int(binary.BigEndian.Uint16(b[3:5])) != len(b)-5 {
		t.Fatalf("%s: not a ClientHello in one record", file)
	}
	return b[5:]
}

// withExtensions returns the ClientHello message msg with extra
// extensions appended to its own (before pre_shared_key, which must stay
// last) and its lengths fixed. The extensions block holds at most 64 KiB:
// a caller that wants a larger hello splits the bytes over several
// extensions.
func withExtensions(t testing.TB, msg []byte, extra []helloExt) []byte {
	t.Helper()
	body := msg[4:]
	// legacy_version, random, session_id, cipher_suites, compression
	off := 2 + 32
	off += 1 + int(body[off])
	off += 2 + int(binary.BigEndian.Uint16(body[off:]))
	off += 1 + int(body[off])
	extLen := int(binary.BigEndian.Uint16(body[off:]))
	exts := body[off+2 : off+2+extLen]
	var out []byte
	var psk []byte
	for e := exts; len(e) >= 4; {
		n := 4 + int(binary.BigEndian.Uint16(e[2:4]))
		if binary.BigEndian.Uint16(e) == 41 {
			psk = e[:n]
		} else {
			out = append(out, e[:n]...)
		}
		e = e[n:]
	}
	for _, x := range extra {
		out = binary.BigEndian.AppendUint16(out, x.typ)
		out = binary.BigEndian.AppendUint16(out, uint16(len(x.body)))
		out = append(out, x.body...)
	}
	out = append(out, psk...)
	if len(out) > 0xffff {
		t.Fatalf("extensions block of %d bytes does not fit its 16-bit length", len(out))
	}
	nb := append([]byte(nil), body[:off]...)
	nb = binary.BigEndian.AppendUint16(nb, uint16(len(out)))
	nb = append(nb, out...)
	return append([]byte{1, byte(len(nb) >> 16), byte(len(nb) >> 8), byte(len(nb))}, nb...)
}

// sslv2Hello is an SSLv2-compatible ClientHello (RFC 5246, appendix
// E.2) offering TLS up to version and the cipher suites given (each
// sent as a 3-byte SSLv2 cipher spec 0x00XXXX), with a 32-byte challenge.
func sslv2Hello(version uint16, suites ...uint16) []byte {
	var specs []byte
	for _, s := range suites {
		specs = append(specs, 0, byte(s>>8), byte(s))
	}
	body := []byte{1, byte(version >> 8), byte(version)}
	body = binary.BigEndian.AppendUint16(body, uint16(len(specs)))
	body = binary.BigEndian.AppendUint16(body, 0)  // session id
	body = binary.BigEndian.AppendUint16(body, 32) // challenge
	body = append(body, specs...)
	for i := range 32 {
		body = append(body, byte(i))
	}
	return append([]byte{0x80 | byte(len(body)>>8), byte(len(body))}, body...)
}

// filterExtensions returns the ClientHello message msg with only the
// extensions keep says yes to.
func filterExtensions(t testing.TB, msg []byte, keep func(typ uint16) bool) []byte {
	t.Helper()
	body := msg[4:]
	off := 2 + 32
	off += 1 + int(body[off])
	off += 2 + int(binary.BigEndian.Uint16(body[off:]))
	off += 1 + int(body[off])
	extLen := int(binary.BigEndian.Uint16(body[off:]))
	var out []byte
	for e := body[off+2 : off+2+extLen]; len(e) >= 4; {
		n := 4 + int(binary.BigEndian.Uint16(e[2:4]))
		if keep(binary.BigEndian.Uint16(e)) {
			out = append(out, e[:n]...)
		}
		e = e[n:]
	}
	nb := append([]byte(nil), body[:off]...)
	nb = binary.BigEndian.AppendUint16(nb, uint16(len(out)))
	nb = append(nb, out...)
	return append([]byte{1, byte(len(nb) >> 16), byte(len(nb) >> 8), byte(len(nb))}, nb...)
}

// withSuites returns the ClientHello message msg with n more cipher
// suites offered after its own, all the GREASE value 0x0a0a, which a
// server ignores: with the extensions, the cipher suite list is the other
// field that can make a hello larger than 64 KiB.
func withSuites(t testing.TB, msg []byte, n int) []byte {
	t.Helper()
	body := msg[4:]
	off := 2 + 32
	off += 1 + int(body[off])
	suites := int(binary.BigEndian.Uint16(body[off:]))
	if suites+2*n > 0xfffe {
		t.Fatalf("%d cipher suites do not fit their 16-bit length", suites/2+n)
	}
	nb := append([]byte(nil), body[:off]...)
	nb = binary.BigEndian.AppendUint16(nb, uint16(suites+2*n))
	nb = append(nb, body[off+2:off+2+suites]...)
	for range n {
		nb = append(nb, 0x0a, 0x0a)
	}
	nb = append(nb, body[off+2+suites:]...)
	return append([]byte{1, byte(len(nb) >> 16), byte(len(nb) >> 8), byte(len(nb))}, nb...)
}

// versionsExt is supported_versions offering TLS 1.3 and 1.2.
var versionsExt = helloExt{43, []byte{4, 3, 4, 3, 3}}
