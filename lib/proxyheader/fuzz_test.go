package proxyheader

import (
	"bufio"
	"bytes"
	"errors"
	"testing"

	"github.com/pires/go-proxyproto"
)

// FuzzHeaderLength checks headerLength against go-proxyproto, which
// parses the header once its bytes are known: Read consumes exactly
// headerLength's bytes, so wherever go-proxyproto accepts a header at the
// start of a stream, headerLength must say exactly how many bytes it read
// (or refuse it); a proper prefix of a header gives 0 (more bytes needed)
// or, once a v2 header's length is in sight, the same length; and nothing
// panics.
func FuzzHeaderLength(f *testing.F) {
	seeds := [][]byte{
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.2 40000 443\r\n\x16\x03\x01"),
		[]byte("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\nPROXY TCP4 6.6.6.6 1.1.1.1 1 2\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY TCP4 1.2.3.4"),
		[]byte("GET / HTTP/1.1\r\n"),
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"),
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x02\x9c\x40\x01\xbb\x16\x03"),
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x10\x01"),
	}
	for _, tlvs := range [][]proxyproto.TLV{nil, {{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("a.example.test")}}} {
		h := proxyproto.HeaderProxyFromAddrs(2, mustTCP("[2001:db8::2]:4000"), mustTCP("[2001:db8::1]:443"))
		h.SetTLVs(tlvs)
		if b, err := h.Format(); err == nil {
			seeds = append(seeds, append(b, "\x16\x03\x01\x00\x05hello"...))
		}
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := headerLength(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with length %d", err, n)
			}
			if !errors.Is(err, ErrNoHeader) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is neither ErrNoHeader nor ErrMalformed", err)
			}
		}
		if n < 0 || n > 16+0xffff {
			t.Fatalf("length %d for %d bytes", n, len(b))
		}
		r := bytes.NewReader(b)
		br := bufio.NewReader(r)
		h, gerr := proxyproto.Read(br)
		consumed := len(b) - r.Len() - br.Buffered()
		if gerr == nil && h != nil && err == nil {
			if n != consumed && n <= len(b) {
				t.Fatalf("go-proxyproto read a %d-byte header, headerLength says %d", consumed, n)
			}
		}
		if err == nil && n > 0 && n <= len(b) {
			for k := 0; k < n; k++ {
				if m, err := headerLength(b[:k]); m != 0 && m != n || err != nil {
					t.Fatalf("prefix of %d bytes of a %d-byte header: %d, %v; want 0 or %d, nil", k, n, m, err, n)
				}
			}
		}
	})
}
