package proxyheader

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	server.SetReadDeadline(time.Now().Add(2 * time.Second))
	return client, server
}

func header(t *testing.T, version byte, src, dst string, tlvs ...proxyproto.TLV) []byte {
	h := proxyproto.HeaderProxyFromAddrs(version, mustTCP(src), mustTCP(dst))
	if len(tlvs) > 0 {
		h.SetTLVs(tlvs)
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustTCP(s string) *net.TCPAddr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

func TestReadConsumesExactlyTheHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  []byte
		src  string
	}{
		{"v1 IPv4", header(t, 1, "192.0.2.7:1234", "198.51.100.1:443"), "192.0.2.7:1234"},
		{"v1 IPv6", header(t, 1, "[2001:db8::7]:1234", "[2001:db8::1]:443"), "[2001:db8::7]:1234"},
		{"v2 IPv4", header(t, 2, "192.0.2.7:1234", "198.51.100.1:443"), "192.0.2.7:1234"},
		{"v2 with TLVs", header(t, 2, "192.0.2.8:999", "198.51.100.1:443", proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("example.com")}), "192.0.2.8:999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := pair(t)
			after := []byte("\x16\x03\x01 the ClientHello follows")
			// Split the header over two writes to exercise waiting.
			client.Write(tc.hdr[:5])
			go func() {
				time.Sleep(20 * time.Millisecond)
				client.Write(append(append([]byte{}, tc.hdr[5:]...), after...))
			}()
			h, err := Read(server)
			if err != nil {
				t.Fatal(err)
			}
			if h.SourceAddr.String() != tc.src {
				t.Errorf("source %v, want %s", h.SourceAddr, tc.src)
			}
			rest := make([]byte, len(after))
			if _, err := io.ReadFull(server, rest); err != nil || !bytes.Equal(rest, after) {
				t.Errorf("bytes after the header: %q, %v; want %q", rest, err, after)
			}
		})
	}
}

func TestReadRefuses(t *testing.T) {
	local := proxyproto.HeaderProxyFromAddrs(2, nil, nil) // LOCAL
	localBytes, _ := local.Format()
	for _, tc := range []struct {
		name  string
		input []byte
		want  error
	}{
		{"no header, a ClientHello", []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), ErrNoHeader},
		{"no header, HTTP", []byte("GET / HTTP/1.1\r\n\r\n"), ErrNoHeader},
		{"LOCAL command", localBytes, ErrLocal},
		{"v1 overlong", []byte("PROXY TCP4 " + strings.Repeat("1", 200) + "\r\n"), ErrMalformed},
		{"v1 garbage", []byte("PROXY TCP4 x y z w\r\n"), ErrMalformed},
		{"v2 absurd length", append(append([]byte{}, v2Signature...), 0x21, 0x11, 0xff, 0xff), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := pair(t)
			client.Write(tc.input)
			if _, err := Read(server); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReadHonoursDeadline(t *testing.T) {
	client, server := pair(t)
	// A v2 header whose length runs past what is sent, then silence.
	h := header(t, 2, "192.0.2.7:1234", "198.51.100.1:443")
	client.Write(h[:len(h)-3])
	server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := Read(server); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("got %v, want a deadline error", err)
	}
}
