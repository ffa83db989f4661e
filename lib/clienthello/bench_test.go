package clienthello

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// The benchmarks come in pairs: this package, and side by side the
// crypto/tls-based way other Go SNI proxies read a hello (cryptotls_test.go).
//
//	go test -run '^$' -bench . -benchmem ./lib/clienthello/

// BenchmarkParse parses each capture from memory. Goal: 0 allocs/op.
func BenchmarkParse(b *testing.B) {
	for _, c := range loadCaptures(b) {
		b.Run(strings.TrimSuffix(c.file, ".bin"), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				info, err := Parse(c.data)
				if err != nil || info.Length != c.bytes {
					b.Fatalf("Parse: %v", err)
				}
			}
		})
	}
}

// BenchmarkCryptoTLSParse reads each capture from memory with crypto/tls.
func BenchmarkCryptoTLSParse(b *testing.B) {
	for _, c := range loadCaptures(b) {
		b.Run(strings.TrimSuffix(c.file, ".bin"), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			r := bytes.NewReader(c.data)
			for b.Loop() {
				r.Reset(c.data)
				hello, err := cryptoTLSHello(r)
				if hello == nil || hello.ServerName != c.sni {
					b.Fatalf("crypto/tls: %v", err)
				}
			}
		})
	}
}

// benchCaptures are the hellos the socket benchmarks send: a typical
// OpenSSL-based client and a post-quantum Go client.
var benchCaptures = []string{"curl-default.bin", "go-alpn.bin"}

func benchCapture(b *testing.B, file string) capture {
	for _, c := range loadCaptures(b) {
		if c.file == file {
			return c
		}
	}
	b.Fatalf("no capture %s", file)
	return capture{}
}

// BenchmarkPeekLoopback sends a hello over loopback TCP, peeks it, then
// reads it off the socket as a relay would.
func BenchmarkPeekLoopback(b *testing.B) {
	for _, file := range benchCaptures {
		c := benchCapture(b, file)
		b.Run(strings.TrimSuffix(file, ".bin"), func(b *testing.B) {
			server, client := tcpPair(b)
			buf := make([]byte, 0, 4096)
			drain := make([]byte, len(c.data))
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				if _, err := client.Write(c.data); err != nil {
					b.Fatal(err)
				}
				var info Info
				var err error
				info, buf, err = Peek(server, buf, DefaultLimit)
				if err != nil || info.Length != c.bytes {
					b.Fatalf("Peek: %v", err)
				}
				if _, err := io.ReadFull(server, drain); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCryptoTLSPeekLoopback sends a hello over loopback TCP and reads
// it with crypto/tls, recording the bytes for the backend.
func BenchmarkCryptoTLSPeekLoopback(b *testing.B) {
	for _, file := range benchCaptures {
		c := benchCapture(b, file)
		b.Run(strings.TrimSuffix(file, ".bin"), func(b *testing.B) {
			server, client := tcpPair(b)
			var recorded bytes.Buffer
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				if _, err := client.Write(c.data); err != nil {
					b.Fatal(err)
				}
				recorded.Reset()
				hello, err := cryptoTLSPeek(server, &recorded)
				if hello == nil || hello.ServerName != c.sni || recorded.Len() != c.bytes {
					b.Fatalf("crypto/tls peek: %v", err)
				}
			}
		})
	}
}
