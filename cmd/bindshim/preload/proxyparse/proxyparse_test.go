//go:build cgo

package proxyparse

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"
)

// goParse runs go-proxyproto on b the way a server reading a stream does,
// and says how many bytes it took.
func goParse(b []byte) (*proxyproto.Header, int, error) {
	r := bytes.NewReader(b)
	br := bufio.NewReader(r)
	h, err := proxyproto.Read(br)
	return h, len(b) - r.Len() - br.Buffered(), err
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return netip.AddrPortFrom(ip, uint16(a.Port)), ok
	case *net.UDPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return netip.AddrPortFrom(ip, uint16(a.Port)), ok
	}
	return netip.AddrPort{}, false
}

// differ returns why the C parser and go-proxyproto disagree on b, or "".
// On top of the verdict and the addresses, it checks the properties the
// library's accept() relies on: a header's every prefix is More, the
// bytes after a header are never looked at, and nothing long is More.
func differ(b []byte) string {
	gh, gn, gerr := goParse(b)
	ch, st := Parse(b)
	if len(b) >= Max && st == More {
		return fmt.Sprintf("C says More for %d bytes", len(b))
	}
	if gerr != nil {
		if st == OK {
			return fmt.Sprintf("C accepts (%+v), go-proxyproto refuses: %v", ch, gerr)
		}
		return ""
	}
	if st != OK {
		return fmt.Sprintf("C says %v, go-proxyproto accepts %+v", st, gh)
	}
	if ch.Length != gn {
		return fmt.Sprintf("C header length %d, go-proxyproto read %d bytes", ch.Length, gn)
	}
	if ch.Version != int(gh.Version) || ch.Command != byte(gh.Command) || ch.Transport != byte(gh.TransportProtocol) {
		return fmt.Sprintf("C v%d cmd %#x transport %#x, go-proxyproto v%d cmd %#x transport %#x",
			ch.Version, ch.Command, ch.Transport, gh.Version, byte(gh.Command), byte(gh.TransportProtocol))
	}
	if f := ch.Transport & 0xF0; f == 0x10 || f == 0x20 {
		src, ok1 := addrPort(gh.SourceAddr)
		dst, ok2 := addrPort(gh.DestinationAddr)
		if !ok1 || !ok2 {
			return fmt.Sprintf("go-proxyproto gave addresses %v %v", gh.SourceAddr, gh.DestinationAddr)
		}
		if src != ch.Source || dst != ch.Dest {
			return fmt.Sprintf("C %v -> %v, go-proxyproto %v -> %v", ch.Source, ch.Dest, src, dst)
		}
	}
	if again, st := Parse(b[:ch.Length]); st != OK || again != ch {
		return fmt.Sprintf("the header alone parses as %v %+v", st, again)
	}
	for k := 0; k < ch.Length; k++ {
		if _, st := Parse(b[:k]); st != More {
			return fmt.Sprintf("prefix of %d bytes of a %d-byte header: %v, want More", k, ch.Length, st)
		}
	}
	return ""
}

func v2(cmd, transport byte, payload []byte) []byte {
	b := append([]byte(nil), proxyproto.SIGV2...)
	b = append(b, cmd, transport)
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

// cases are headers picked to hit every rule of both parsers; tail is
// what a TLS client sends next.
var tail = []byte("\x16\x03\x01\x00\x05hello")

var cases = []struct {
	in string
	ok bool
}{
	{"PROXY TCP4 192.0.2.1 198.51.100.2 40000 443\r\n", true},
	{"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", true},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 40000 443\n", false},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 40000 443 \r\n", false},
	{"PROXY  TCP4 192.0.2.1 198.51.100.2 40000 443\r\n", false},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 40000\r\n", false},
	{"PROXY TCP4 192.0.2.01 198.51.100.2 40000 443\r\n", false},
	{"PROXY TCP4 192.0.2.256 198.51.100.2 40000 443\r\n", false},
	{"PROXY TCP4 192.0.2 198.51.100.2 40000 443\r\n", false},
	{"PROXY TCP4 192.0.2.1.5 198.51.100.2 40000 443\r\n", false},
	{"PROXY TCP4 192..2.1 198.51.100.2 40000 443\r\n", false},
	{"PROXY TCP4 ::ffff:192.0.2.1 198.51.100.2 40000 443\r\n", false},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 040000 443\r\n", false},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n", false},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 +4000 443\r\n", false},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 4000 \r\n", false},
	{"PROXY TCP6 2001:db8::1 2001:db8::2 40000 443\r\n", true},
	{"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.2 40000 443\r\n", true},
	{"PROXY TCP6 ::192.0.2.1 :: 1 2\r\n", true},
	{"PROXY TCP6 1:2:3:4:5:6:7:8 1:2:3:4:5:6:192.0.2.1 1 2\r\n", true},
	{"PROXY TCP6 1:2:3:4:5:6:7:: ::2:3:4:5:6:7:8 1 2\r\n", true},
	{"PROXY TCP6 1:2:3:4:5:6:7:8:: ::1 1 2\r\n", false},
	{"PROXY TCP6 1:2:3:4:5:192.0.2.1 ::1 1 2\r\n", false},
	{"PROXY TCP6 1::2::3 ::1 1 2\r\n", false},
	{"PROXY TCP6 12345:: ::1 1 2\r\n", false},
	{"PROXY TCP6 ABCD:ef01::1 ::1 1 2\r\n", true},
	{"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", false},
	{"PROXY TCP6 192.0.2.1 ::1 1 2\r\n", false},
	{"PROXY TCP6 :1 ::1 1 2\r\n", false},
	{"PROXY TCP6 1: ::1 1 2\r\n", false},
	{"PROXY TCP6 ::ffff:1.2.3.04 ::1 1 2\r\n", false},
	{"PROXY UNKNOWN\r\n", true},
	{"PROXY UNKNOWN 192.0.2.1 anything at all\r\n", true},
	{"PROXY UNKNOWNX\r\n", false},
	{"PROXY\r\n", false},
	{"PROXY \r\n", false},
	{"PROXYX TCP4 192.0.2.1 198.51.100.2 1 2\r\n", false},
	{"PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n", false},
	{"PROXY UNKNOWN " + strings.Repeat("x", 91) + "\r\n", true},  // 107 bytes
	{"PROXY UNKNOWN " + strings.Repeat("x", 92) + "\r\n", false}, // 108 bytes
	{"GET / HTTP/1.1\r\n", false},
	{"\x16\x03\x01\x02\x00", false},
	{string(v2(0x21, 0x11, []byte{192, 0, 2, 1, 198, 51, 100, 2, 0x9c, 0x40, 1, 0xbb})), true},
	{string(v2(0x21, 0x11, []byte{192, 0, 2, 1, 198, 51, 100, 2, 0x9c, 0x40, 1})), false},
	{string(v2(0x21, 0x21, make([]byte, 36))), true},
	{string(v2(0x21, 0x21, make([]byte, 35))), false},
	{string(v2(0x21, 0x12, make([]byte, 12))), true},
	{string(v2(0x21, 0x31, make([]byte, 216))), true},
	{string(v2(0x21, 0x32, make([]byte, 215))), false},
	{string(v2(0x21, 0x00, nil)), false},
	{string(v2(0x20, 0x00, nil)), true},
	{string(v2(0x20, 0x00, make([]byte, 4096))), true},
	{string(v2(0x20, 0x00, make([]byte, 4097))), false},
	{string(v2(0x20, 0x11, nil)), true},
	{string(v2(0x20, 0x21, make([]byte, 12))), true},
	{string(v2(0x22, 0x11, make([]byte, 12))), false},
	{string(v2(0x11, 0x11, make([]byte, 12))), false},
	{string(v2(0x21, 0x13, make([]byte, 12))), false},
	{string(v2(0x21, 0x41, make([]byte, 12))), false},
	{string(v2(0x21, 0x11, make([]byte, 4097))), false},
	{"\r\n\r\n\x00\r\nQUIT\n", false},
	{"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c", false},
}

func TestCases(t *testing.T) {
	for _, c := range cases {
		for _, in := range [][]byte{[]byte(c.in), append([]byte(c.in), tail...)} {
			if d := differ(in); d != "" {
				t.Errorf("%q: %s", in, d)
			}
			h, st := Parse(in)
			if (st == OK) != c.ok {
				t.Errorf("%q: %v %+v, want ok=%v", in, st, h, c.ok)
			}
			if st == OK && h.Length != len(c.in) {
				t.Errorf("%q: length %d, want %d", in, h.Length, len(c.in))
			}
		}
	}
}

// TestAddresses pins what the library will report for the headers
// snilisten writes.
func TestAddresses(t *testing.T) {
	for _, c := range []struct{ src, dst string }{
		{"203.0.113.7:40000", "192.0.2.1:443"},
		{"[2001:db8::7]:40000", "[2001:db8::1]:443"},
		{"[::ffff:203.0.113.7]:1", "[::1]:443"},
	} {
		src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
		for _, ver := range []byte{1, 2} {
			h := proxyproto.HeaderProxyFromAddrs(ver, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
			if ver == 2 {
				if err := h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("www.example.test")}}); err != nil {
					t.Fatal(err)
				}
			}
			b, err := h.Format()
			if err != nil {
				t.Fatal(err)
			}
			got, st := Parse(append(b, tail...))
			if st != OK || got.Source != src || got.Dest != dst || got.Length != len(b) {
				t.Errorf("v%d %v -> %v: %v %+v", ver, src, dst, st, got)
			}
		}
	}
}

func randAddr(r *rand.Rand, v4 bool) netip.Addr {
	if v4 {
		var a [4]byte
		for i := range a {
			a[i] = byte(r.IntN(256))
		}
		return netip.AddrFrom4(a)
	}
	var a [16]byte
	switch r.IntN(4) {
	case 0: // v4-mapped
		a[10], a[11] = 0xff, 0xff
		for i := 12; i < 16; i++ {
			a[i] = byte(r.IntN(256))
		}
	case 1: // runs of zeros, so v1 text has "::"
		for i := 0; i < 16; i += 2 {
			if r.IntN(2) == 0 {
				a[i], a[i+1] = byte(r.IntN(256)), byte(r.IntN(256))
			}
		}
	default:
		for i := range a {
			a[i] = byte(r.IntN(256))
		}
	}
	return netip.AddrFrom16(a)
}

// generate makes a valid header with go-proxyproto's writer.
func generate(r *rand.Rand) []byte {
	if r.IntN(10) == 0 {
		return []byte("PROXY UNKNOWN\r\n")
	}
	ver := byte(1 + r.IntN(2))
	v4 := r.IntN(2) == 0
	h := &proxyproto.Header{Version: ver, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv6}
	if v4 {
		h.TransportProtocol = proxyproto.TCPv4
	}
	src := net.TCPAddrFromAddrPort(netip.AddrPortFrom(randAddr(r, v4), uint16(r.IntN(65536))))
	dst := net.TCPAddrFromAddrPort(netip.AddrPortFrom(randAddr(r, v4), uint16(r.IntN(65536))))
	h.SourceAddr, h.DestinationAddr = src, dst
	if ver == 2 {
		switch r.IntN(6) {
		case 0:
			h.Command = proxyproto.LOCAL
		case 1:
			h.TransportProtocol = proxyproto.UDPv4
			if !v4 {
				h.TransportProtocol = proxyproto.UDPv6
			}
			h.SourceAddr = &net.UDPAddr{IP: src.IP, Port: src.Port}
			h.DestinationAddr = &net.UDPAddr{IP: dst.IP, Port: dst.Port}
		}
		var tlvs []proxyproto.TLV
		for range r.IntN(4) {
			v := make([]byte, r.IntN(300))
			for i := range v {
				v[i] = byte('a' + r.IntN(26))
			}
			typ := proxyproto.PP2_TYPE_AUTHORITY
			if r.IntN(2) == 0 {
				typ = proxyproto.PP2Type(0xE0 + r.IntN(16))
			}
			tlvs = append(tlvs, proxyproto.TLV{Type: typ, Value: v})
		}
		if err := h.SetTLVs(tlvs); err != nil {
			panic(err)
		}
	}
	b, err := h.Format()
	if err != nil {
		panic(fmt.Sprintf("format %+v: %v", h, err))
	}
	return b
}

// mutate damages a header the way a broken or hostile sender would.
func mutate(r *rand.Rand, b []byte) []byte {
	b = append([]byte(nil), b...)
	for range 1 + r.IntN(3) {
		if len(b) == 0 {
			break
		}
		i := r.IntN(len(b))
		switch r.IntN(5) {
		case 0:
			b[i] ^= byte(1 << r.IntN(8))
		case 1:
			const alphabet = " .:%\r\n0123456789abcdefABCDEF"
			b[i] = alphabet[r.IntN(len(alphabet))]
		case 2:
			b = b[:i]
		case 3:
			b = append(b[:i], b[i+1:]...)
		case 4:
			b = append(b[:i], append([]byte{b[i]}, b[i:]...)...)
		}
	}
	return b
}

func TestGenerated(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		b := generate(r)
		in := append(b, tail...)
		if d := differ(in); d != "" {
			t.Fatalf("generated header %d %q: %s", i, in, d)
		}
		if h, st := Parse(in); st != OK || h.Length != len(b) {
			t.Fatalf("generated header %d %q: %v %+v", i, in, st, h)
		}
	}
}

func TestMutated(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 20000 {
		in := mutate(r, append(generate(r), tail...))
		if d := differ(in); d != "" {
			t.Fatalf("mutated header %d %q: %s", i, in, d)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, c := range cases {
		f.Add([]byte(c.in))
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 20 {
		f.Add(append(generate(r), tail...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if d := differ(b); d != "" {
			t.Fatalf("%q: %s", b, d)
		}
	})
}

// BenchmarkParse measures the C parser on the headers snilisten writes,
// cgo call and copy included (the library pays neither).
func BenchmarkParse(b *testing.B) {
	for _, c := range []struct{ name, src, dst string }{
		{"v1/tcp4", "203.0.113.7:40000", "192.0.2.1:443"},
		{"v1/tcp6", "[2001:db8::7]:40000", "[2001:db8::1]:443"},
		{"v2/tcp4", "203.0.113.7:40000", "192.0.2.1:443"},
		{"v2/tcp6", "[2001:db8::7]:40000", "[2001:db8::1]:443"},
	} {
		ver := byte(c.name[1] - '0')
		h := proxyproto.HeaderProxyFromAddrs(ver, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(c.src)),
			net.TCPAddrFromAddrPort(netip.MustParseAddrPort(c.dst)))
		if ver == 2 {
			h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("www.example.test")}})
		}
		in, err := h.Format()
		if err != nil {
			b.Fatal(err)
		}
		in = append(in, tail...)
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, st := Parse(in); st != OK {
					b.Fatal(st)
				}
			}
		})
	}
}
