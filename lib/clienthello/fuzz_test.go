package clienthello

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// FuzzParse checks Parse against crypto/tls, an independent parser: for
// every input that crypto/tls accepts as a ClientHello (it reaches
// GetConfigForClient), Parse must accept it too and report the same server
// name, ALPN protocols, versions, cipher suites and extensions. For every
// input it must not panic, must not claim more bytes than it was given, and
// must agree with itself on prefixes and limits.
func FuzzParse(f *testing.F) {
	for _, c := range loadCaptures(f) {
		f.Add(c.data)
		b, _ := frame(handshakeOf(f, c.data), func() int { return 7 })
		f.Add(b)
	}
	f.Add(hello(ext{extServerName, sni(0, "a.example.test")}, ext{extALPN, alpn("h2", "http/1.1")}, ext{extSupportedVersions, versions(0x0304, 0x0303)}))
	f.Add(hello(ext{extServerName, sni(0, "a.example.test", 0, "b.example.test")}))
	f.Add(hello())
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x80, 0x2e, 0x01, 0x00, 0x02})

	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := Parse(b)
		checkSelf(t, b, info, err)

		ref, _ := cryptoTLSHello(bytes.NewReader(b))
		if ref == nil {
			return // crypto/tls refused it: Parse may be more lenient
		}
		if err != nil {
			if stricterThanCryptoTLS(b) {
				return
			}
			t.Fatalf("crypto/tls accepts the hello (server name %q), Parse says %v", ref.ServerName, err)
		}
		if got := info.ServerName(); got != ref.ServerName {
			t.Errorf("ServerName = %q, crypto/tls says %q", got, ref.ServerName)
		}
		if got := info.ALPN(); !slices.Equal(got, ref.SupportedProtos) {
			t.Errorf("ALPN = %q, crypto/tls says %q", got, ref.SupportedProtos)
		}
		refVersions := slices.DeleteFunc(slices.Clone(ref.SupportedVersions), IsGREASE)
		if got := info.SupportedVersions(); !slices.Equal(got, refVersions) && !(len(refVersions) == 0 && info.LegacyVersion < 0x0301) {
			t.Errorf("SupportedVersions = %#04x, crypto/tls says %#04x", got, refVersions)
		}
		if got := info.CipherSuites(); !slices.Equal(got, ref.CipherSuites) {
			t.Errorf("CipherSuites = %#04x, crypto/tls says %#04x", got, ref.CipherSuites)
		}
		if got := info.Extensions(); !slices.Equal(got, ref.Extensions) {
			t.Errorf("Extensions = %#04x, crypto/tls says %#04x", got, ref.Extensions)
		}
	})
}

// checkSelf checks what must hold of Parse's result whatever the input.
func checkSelf(t *testing.T, b []byte, info Info, err error) {
	t.Helper()
	kinds := 0
	for _, e := range []error{ErrIncomplete, ErrNotTLS, ErrMalformed, ErrTooLarge} {
		if errors.Is(err, e) {
			kinds++
		}
	}
	if err != nil {
		if kinds != 1 {
			t.Fatalf("error %v is %d of the four kinds, want exactly one", err, kinds)
		}
		return
	}
	if info.Length < recordHeaderLen+handshakeHeaderLen || info.Length > len(b) || info.Records < 1 {
		t.Fatalf("Length %d, Records %d for %d bytes of input", info.Length, info.Records, len(b))
	}
	// The accessors read only what Parse validated.
	_, _ = info.SoleALPN()
	if !info.HasServerName() && info.ServerName() != "" || len(info.SupportedVersions()) == 0 {
		t.Fatalf("HasServerName %v with ServerName %q; versions %v", info.HasServerName(), info.ServerName(), info.SupportedVersions())
	}
	_, _, _ = info.ALPN(), info.CipherSuites(), info.Extensions()
	// The hello is exactly the first Length bytes: without what follows it
	// parses the same, and one byte fewer is incomplete.
	again, err := Parse(b[:info.Length])
	if err != nil || again.ServerName() != info.ServerName() || again.Length != info.Length {
		t.Fatalf("Parse of the hello alone: %v, %q, %d", err, again.ServerName(), again.Length)
	}
	if _, err := Parse(b[:info.Length-1]); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Parse of the hello less its last byte: %v, want ErrIncomplete", err)
	}
	// The limit is a limit.
	msgLen := 0
	if msg, _, _, err := handshakeMessage(b, DefaultLimit); err == nil {
		msgLen = len(msg) - handshakeHeaderLen
	} else if info.SSLv2 {
		msgLen = info.Length - sslv2HeaderLen
	}
	if _, err := ParseLimit(b, msgLen-1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ParseLimit(%d) of a %d-byte hello: %v, want ErrTooLarge", msgLen-1, msgLen, err)
	}
}

// stricterThanCryptoTLS reports whether b is refused by Parse on purpose
// although crypto/tls gets as far as GetConfigForClient with it:
// crypto/tls leaves the 32-byte cap on legacy_session_id (RFC 8446,
// section 4.1.2) to later, and tolerates warning alerts before the hello.
func stricterThanCryptoTLS(b []byte) bool {
	if len(b) > 0 && b[0] == recordTypeAlert {
		return true
	}
	msg, _, _, err := handshakeMessage(b, DefaultLimit)
	const sessionIDAt = handshakeHeaderLen + 2 + 32
	return err == nil && len(msg) > sessionIDAt && msg[sessionIDAt] > 32
}
