package filter

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/snitools/snitools/lib/nat46"
)

type rewriteCase struct{ in, want string }

var to4Cases = []rewriteCase{
	{"64:ff9b:1::c000:221", "192.0.2.33"},
	{"client 64:ff9b:1::c000:221 GET /", "client 192.0.2.33 GET /"},
	{"64:ff9b:1::c000:221 and 64:ff9b:1::a00:1", "192.0.2.33 and 10.0.0.1"},
	{"64:ff9b:1::192.0.2.33", "192.0.2.33"},
	{"64:FF9B:0001:0:0:0:C000:0221", "192.0.2.33"},
	{"[64:ff9b:1::c000:221]:443", "192.0.2.33:443"},
	{"[64:ff9b:1::c000:221]", "[192.0.2.33]"},
	{"https://[64:ff9b:1::c000:221]/path", "https://192.0.2.33/path"},
	{"64:ff9b:1::c000:221%eth0 x", "192.0.2.33%eth0 x"},
	{"64:ff9b:1::c000:200/120", "192.0.2.0/24"},
	{"64:ff9b:1::c000:221/128,", "192.0.2.33/32,"},
	{"64:ff9b:1::c000:221/ x", "192.0.2.33/ x"},
	{"64:ff9b:1::c000:221/path", "192.0.2.33/path"},
	{`{"remote":"64:ff9b:1::c000:221"}`, `{"remote":"192.0.2.33"}`},
	{"addr=64:ff9b:1::c000:221,", "addr=192.0.2.33,"},
	{"from 64:ff9b:1::c000:221: reset", "from 192.0.2.33: reset"},
	{"client:64:ff9b:1::c000:221", "client:192.0.2.33"},
	{"at 64:ff9b:1::c000:221.", "at 192.0.2.33."},
	{"(64:ff9b:1::c000:221)", "(192.0.2.33)"},
	{"<64:ff9b:1::c000:221>", "<192.0.2.33>"},
	{"\t64:ff9b:1::c000:221\r\n", "\t192.0.2.33\r\n"},
	{"64:ff9b:1::c000:221\x00\xff\xfe", "192.0.2.33\x00\xff\xfe"},
	{"\xff64:ff9b:1::c000:221\xff", "\xff192.0.2.33\xff"},
	{"é64:ff9b:1::c000:221é", "é192.0.2.33é"},
	// Apache's error log: address and port without brackets, which only
	// a port of five digits (or a full eight-group address) makes clear.
	{"[client 64:ff9b:1::c000:221:51234] AH01630", "[client 192.0.2.33:51234] AH01630"},
	{"64:ff9b:1:0:0:0:c000:221:443", "192.0.2.33:443"},
}

// lookAlikes must pass through both directions untouched.
var lookAlikes = []string{
	"",
	"12:34:56",
	"2024-01-02T12:34:56.789Z",
	"[10/Oct/2000:13:55:36 -0700]",
	"Jan  2 12:34:56",
	"aa:bb:cc:dd:ee:ff",
	"de:ad:be:ef:00:01",
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	"1.2.3.4.5",
	"v1.2.3.4",
	"::1.2.3.4",
	"ab:1.2.3.4",
	"64:ff9b::1.2.3.4",
	"version 1.2.3",
	"Chrome/120.0.0.0",
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
	"01.2.3.4",
	"256.1.2.3",
	"1.2.3.4567",
	"4.3.2.1.in-addr.arpa",
	"host.10.0.0.1",
	"0.0.0.0",
	"0.0.0.0:443",
	"0.0.0.0/0",
	"::1",
	"[::1]:443",
	"::",
	"fe80::1%eth0",
	"2001:db8::1",
	"::ffff:192.0.2.33",
	"[::ffff:127.0.0.1]:443",
	"64:ff9b::c000:221",   // the well-known prefix, not ours
	"64:ff9b:2::c000:221", // another prefix
	"64:ff9b:1::",         // the prefix itself
	"64:ff9b:1::/96",
	"64:ff9b:1:0:0:1:c000:221", // outside the /96
	"64:ff9b:1::c000:221:443",  // ambiguous: also an address outside the prefix
	"64:ff9b:1::c000:221:65536",
	"64:ff9b:1::c000:221:01234",
	"64:ff9b:1::c000:221:51234x",
	"64:ff9b:1::c000:221::51234",
	"64:ff9b:1::c000:221:51234/24",
	"x64:ff9b:1::c000:221",
	"64:ff9b:1::c000:221x",
	"64:ff9b:1::c000:221_",
	"64:ff9b:1::c000:221.example",
	"64:ff9b:1::c000:221/64",  // a length that means nothing in IPv4
	"64:ff9b:1::c000:221/96x", // not a length
	"64:ff9b:1::c000:221/0128",
	"ab:64:ff9b:1::c000:221",
	"64:ff9b:1::c000:221::1",
	"64:ff9b:1::c000:221%" + strings.Repeat("z", 40),
	"64:ff9b:1:::c000:221",
	"64:ff9b:00001::c000:221",
	"1:2:3:4:5:6:7:8",
	"a::b",
	"c000:221",
	"12:34:56.789",
	"1.3.6.1.4.1.2021",
	"\x00\xff\xfe\xc3\x28",
	strings.Repeat("64:ff9b:1::c000:221", 10), // one long run
	strings.Repeat("1.2.3.4", 10),
}

func TestToIPv4(t *testing.T) {
	f := New(nat46.DefaultPrefix, ToIPv4)
	for _, tc := range to4Cases {
		if got := string(f.Append(nil, []byte(tc.in))); got != tc.want {
			t.Errorf("-4 %q = %q, want %q", tc.in, got, tc.want)
		}
	}
}

var to6Cases = []rewriteCase{
	{"192.0.2.33", "64:ff9b:1::c000:221"},
	{"client 192.0.2.33 GET /", "client 64:ff9b:1::c000:221 GET /"},
	{"192.0.2.33:443", "[64:ff9b:1::c000:221]:443"},
	{"[192.0.2.33]:443", "[64:ff9b:1::c000:221]:443"},
	{"http://192.0.2.33/x", "http://[64:ff9b:1::c000:221]/x"},
	{"http://192.0.2.33:8080/x", "http://[64:ff9b:1::c000:221]:8080/x"},
	{"allow 10.0.0.0/8;", "allow 64:ff9b:1::a00:0/104;"},
	{"192.0.2.33/32", "64:ff9b:1::c000:221/128"},
	{"192.0.2.33/ x", "64:ff9b:1::c000:221/ x"},
	{"from 192.0.2.33.", "from 64:ff9b:1::c000:221."},
	{"from 192.0.2.33, 10.1.2.3", "from 64:ff9b:1::c000:221, 64:ff9b:1::a01:203"},
	{`{"ip":"192.0.2.33"}`, `{"ip":"64:ff9b:1::c000:221"}`},
	{"127.0.0.1", "64:ff9b:1::7f00:1"},
	{"255.255.255.255", "64:ff9b:1::ffff:ffff"},
	{" /10.0.0.1 ", " /64:ff9b:1::a00:1 "},
	{"client:192.0.2.33", "client:64:ff9b:1::c000:221"},
	{"\xff192.0.2.33\x00", "\xff64:ff9b:1::c000:221\x00"},
}

func TestToIPv6(t *testing.T) {
	f := New(nat46.DefaultPrefix, ToIPv6)
	for _, tc := range to6Cases {
		if got := string(f.Append(nil, []byte(tc.in))); got != tc.want {
			t.Errorf("-6 %q = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLookAlikes(t *testing.T) {
	for _, d := range []Direction{ToIPv4, ToIPv6} {
		f := New(nat46.DefaultPrefix, d)
		for _, in := range lookAlikes {
			if got := string(f.Append(nil, []byte(in))); got != in {
				t.Errorf("direction %d: %q became %q", d, in, got)
			}
			// Also inside a line.
			line := "x " + in + " y"
			if got := string(f.Append(nil, []byte(line))); got != line {
				t.Errorf("direction %d: %q became %q", d, line, got)
			}
		}
	}
}

func TestOtherPrefixes(t *testing.T) {
	for _, tc := range []struct{ prefix, v4, v6 string }{
		{"2001:db8::/32", "192.0.2.33", "2001:db8:c000:221::"},
		{"2001:db8:100::/40", "192.0.2.33", "2001:db8:1c0:2:21::"},
		{"2001:db8:122::/48", "192.0.2.33", "2001:db8:122:c000:2:2100::"},
		{"2001:db8:122:300::/56", "192.0.2.33", "2001:db8:122:3c0:0:221::"},
		{"2001:db8:122:344::/64", "192.0.2.33", "2001:db8:122:344:c0:2:2100:0"},
		{"64:ff9b::/96", "192.0.2.33", "64:ff9b::c000:221"},
	} {
		p, err := nat46.ParsePrefix(tc.prefix)
		if err != nil {
			t.Fatal(err)
		}
		to4, to6 := New(p, ToIPv4), New(p, ToIPv6)
		in6 := "a [" + tc.v6 + "]:80 b " + tc.v6 + "\n"
		in4 := "a " + tc.v4 + ":80 b " + tc.v4 + "\n"
		if got := string(to4.Append(nil, []byte(in6))); got != in4 {
			t.Errorf("%s: -4 %q = %q", p, in6, got)
		}
		if got := string(to6.Append(nil, []byte(in4))); got != in6 {
			t.Errorf("%s: -6 %q = %q", p, in4, got)
		}
	}
	// A real host in a /64 prefix is not an embedding.
	p, _ := nat46.ParsePrefix("2001:db8:122:344::/64")
	in := "2001:db8:122:344::10"
	if got := string(New(p, ToIPv4).Append(nil, []byte(in))); got != in {
		t.Errorf("host in /64 rewritten to %q", got)
	}
}

// TestRoundTrip: -6 then -4 gives back the original for text whose IPv4
// addresses appear in the forms -4 writes.
func TestRoundTrip(t *testing.T) {
	in := `192.0.2.33 - - [10/Oct/2000:13:55:36 -0700] "GET /x HTTP/1.1" 200 2326 "http://10.0.0.1:8080/" "Mozilla/5.0 Chrome/120.0.0.0"
peer 198.51.100.7:443 net 10.0.0.0/8 up 1.2.3.4.5 at 12:34:56
`
	mid := New(nat46.DefaultPrefix, ToIPv6).Append(nil, []byte(in))
	if bytes.Contains(mid, []byte("192.0.2.33")) || !bytes.Contains(mid, []byte("Chrome/120.0.0.0")) {
		t.Fatalf("-6 gave %s", mid)
	}
	back := New(nat46.DefaultPrefix, ToIPv4).Append(nil, mid)
	if string(back) != in {
		t.Fatalf("round trip:\n%s\nvia\n%s\ngave\n%s", in, mid, back)
	}
}

// oneShotReader returns its chunks one per Read.
type chunkReader struct {
	chunks [][]byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

// split cuts b into chunks at the given offsets (taken modulo len(b)).
func split(b []byte, cuts []int) [][]byte {
	var chunks [][]byte
	last := 0
	for _, c := range cuts {
		if len(b) == 0 {
			break
		}
		c %= len(b) + 1
		if c < last {
			continue
		}
		chunks = append(chunks, b[last:c])
		last = c
	}
	return append(chunks, b[last:])
}

// testCorpus is a mixture of everything above, as lines.
func testCorpus() []byte {
	var b bytes.Buffer
	for _, tc := range to4Cases {
		b.WriteString(tc.in + "\n")
	}
	for _, tc := range to6Cases {
		b.WriteString(tc.in + "\n")
	}
	for _, s := range lookAlikes {
		b.WriteString(s + "\n")
	}
	return b.Bytes()
}

// TestChunking: Copy gives the same output however the input is cut into
// reads, including one byte at a time, and whether or not it flushes.
func TestChunking(t *testing.T) {
	in := testCorpus()
	r := rand.New(rand.NewPCG(1, 2))
	for _, d := range []Direction{ToIPv4, ToIPv6} {
		f := New(nat46.DefaultPrefix, d)
		want := f.Append(nil, in)
		if bytes.Equal(want, in) {
			t.Fatalf("direction %d: corpus unchanged", d)
		}
		var out bytes.Buffer
		if _, err := f.Copy(&out, iotest.OneByteReader(bytes.NewReader(in)), true); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("direction %d: one byte at a time differs:\n%s", d, out.Bytes())
		}
		for range 200 {
			cuts := make([]int, r.IntN(20))
			for k := range cuts {
				cuts[k] = r.IntN(len(in))
			}
			out.Reset()
			if _, err := f.Copy(&out, &chunkReader{split(in, sortInts(cuts))}, r.IntN(2) == 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("direction %d: cut at %v differs", d, cuts)
			}
		}
	}
}

func sortInts(a []int) []int {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
	return a
}

// TestLongLines: lines far longer than the read buffer, with addresses
// across every buffer boundary, and a run of address characters longer
// than any address spanning reads.
func TestLongLines(t *testing.T) {
	var in, want bytes.Buffer
	for i := 0; in.Len() < 5*bufSize; i++ {
		in.WriteString("x 64:ff9b:1::c000:221 ")
		want.WriteString("x 192.0.2.33 ")
	}
	run := strings.Repeat("64:ff9b:1::c000:221:", bufSize/10)
	in.WriteString(run + " 64:ff9b:1::a00:1\n")
	want.WriteString(run + " 10.0.0.1\n")
	f := New(nat46.DefaultPrefix, ToIPv4)
	var out bytes.Buffer
	if _, err := f.Copy(&out, bytes.NewReader(in.Bytes()), false); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want.Bytes()) {
		t.Fatal("long line rewritten wrongly")
	}
}

// TestLineBuffered: with lineBuffered, each line is written as soon as it
// was read, before the next read.
func TestLineBuffered(t *testing.T) {
	pr, pw := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := New(nat46.DefaultPrefix, ToIPv4).Copy(outW, pr, true)
		outW.CloseWithError(err)
		done <- err
	}()
	buf := make([]byte, 100)
	for _, line := range []string{"a 64:ff9b:1::c000:221\n", "b [64:ff9b:1::a00:1]:80\n"} {
		go pw.Write([]byte(line))
		n, err := outR.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		want := New(nat46.DefaultPrefix, ToIPv4).Append(nil, []byte(line))
		if string(buf[:n]) != string(want) {
			t.Fatalf("got %q, want %q", buf[:n], want)
		}
	}
	pw.Close()
	if _, err := io.ReadAll(outR); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestErrors(t *testing.T) {
	f := New(nat46.DefaultPrefix, ToIPv4)
	if _, err := f.Copy(errWriter{}, strings.NewReader("x\n"), true); err == nil || !strings.Contains(err.Error(), "write") {
		t.Errorf("write error: %v", err)
	}
	var out bytes.Buffer
	r := io.MultiReader(strings.NewReader("64:ff9b:1::c000:221\n"), iotest.ErrReader(io.ErrUnexpectedEOF))
	if _, err := f.Copy(&out, r, false); err == nil || !strings.Contains(err.Error(), "read") {
		t.Errorf("read error: %v", err)
	}
	if out.String() != "192.0.2.33\n" {
		t.Errorf("output before the read error: %q", out.String())
	}
}

func TestAllocs(t *testing.T) {
	in := testCorpus()
	for _, d := range []Direction{ToIPv4, ToIPv6} {
		f := New(nat46.DefaultPrefix, d)
		out := make([]byte, 0, 4*len(in))
		if n := testing.AllocsPerRun(10, func() { out = f.Append(out[:0], in) }); n != 0 {
			t.Errorf("direction %d: %v allocations per run", d, n)
		}
	}
}

// containsEmbedding reports whether some substring of b is the text of an
// address the filter may rewrite in direction d.
func containsEmbedding(p nat46.Prefix, d Direction, b []byte) bool {
	for i := range b {
		for j := i + 1; j <= len(b) && j-i <= 45; j++ {
			if d == ToIPv4 {
				if ip, ok := parse6(b[i:j]); ok {
					if _, ok := p.Extract(netip.AddrFrom16(ip)); ok {
						return true
					}
				}
			} else if _, ok := parse4(b[i:j]); ok {
				return true
			}
		}
	}
	return false
}

// FuzzFilter checks, for both directions, that text without an address to
// rewrite passes through byte for byte, and that the output does not
// depend on how the input is cut into reads.
func FuzzFilter(f *testing.F) {
	for _, tc := range to4Cases {
		f.Add([]byte(tc.in), uint16(3), false)
	}
	for _, tc := range to6Cases {
		f.Add([]byte(tc.in), uint16(5), true)
	}
	for _, s := range lookAlikes {
		f.Add([]byte(s), uint16(1), false)
		f.Add([]byte(s), uint16(2), true)
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint16, to6 bool) {
		d := ToIPv4
		if to6 {
			d = ToIPv6
		}
		flt := New(nat46.DefaultPrefix, d)
		out := flt.Append(nil, in)
		if !bytes.Equal(out, in) && !containsEmbedding(nat46.DefaultPrefix, d, in) {
			t.Fatalf("direction %d: %q became %q with no address in it", d, in, out)
		}
		var got bytes.Buffer
		cuts := []int{int(cut), int(cut) * 7, int(cut) * 13}
		if _, err := flt.Copy(&got, &chunkReader{split(in, sortInts(cuts))}, cut%2 == 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), out) {
			t.Fatalf("direction %d: %q: cut at %v gave %q, whole %q", d, in, cuts, got.Bytes(), out)
		}
	})
}

// FuzzParse checks the byte parsers against net/netip.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "01.2.3.4", "::", "::1", "1::", "64:ff9b:1::192.0.2.33", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:1.2.3.4", "::ffff:1.2.3.4", "1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7", "00000::1", "1.2.3.04"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := netip.ParseAddr(s)
		if strings.Contains(s, "%") {
			return // the filter handles zones itself
		}
		ip6, ok6 := parse6([]byte(s))
		ip4, ok4 := parse4([]byte(s))
		switch {
		case err != nil:
			if ok6 || ok4 {
				t.Fatalf("%q: netip refuses (%v), parse6 %v parse4 %v", s, err, ok6, ok4)
			}
		case want.Is4():
			if !ok4 || ip4 != want.As4() || ok6 {
				t.Fatalf("%q: parse4 = %v %v, parse6 %v; netip %s", s, ip4, ok4, ok6, want)
			}
		default:
			if !ok6 || ip6 != want.As16() || ok4 {
				t.Fatalf("%q: parse6 = %v %v, parse4 %v; netip %s", s, ip6, ok6, ok4, want)
			}
		}
	})
}

// accessLog returns about size bytes of nginx combined log lines, 30% of
// them from a client inside the default prefix.
func accessLog(size int) []byte {
	r := rand.New(rand.NewPCG(30, 70))
	var b bytes.Buffer
	for b.Len() < size {
		if r.IntN(10) < 3 {
			fmt.Fprintf(&b, "64:ff9b:1::%x:%x", r.IntN(0xff00)+0x100, r.IntN(0x10000))
		} else {
			fmt.Fprintf(&b, "2001:db8:%x::%x", r.IntN(0x10000), r.IntN(0x10000))
		}
		fmt.Fprintf(&b, ` - - [10/Oct/2000:13:55:%02d -0700] "GET /index/%d.html HTTP/1.1" 200 %d "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"`+"\n",
			r.IntN(60), r.IntN(1e6), r.IntN(1e5))
	}
	return b.Bytes()
}

func BenchmarkCopy(b *testing.B) {
	in := accessLog(16 << 20)
	for _, d := range []Direction{ToIPv4, ToIPv6} {
		b.Run(fmt.Sprint("direction=", d), func(b *testing.B) {
			f := New(nat46.DefaultPrefix, d)
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, err := f.Copy(io.Discard, bytes.NewReader(in), false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAddresses is the densest input: one address per line.
func BenchmarkAddresses(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	var in bytes.Buffer
	n := 0
	for ; in.Len() < 8<<20; n++ {
		fmt.Fprintf(&in, "64:ff9b:1::%x:%x\n", 0x100+r.IntN(0xdf00), r.IntN(0x10000))
	}
	f := New(nat46.DefaultPrefix, ToIPv4)
	b.SetBytes(int64(in.Len()))
	for b.Loop() {
		if _, err := f.Copy(io.Discard, bytes.NewReader(in.Bytes()), false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "addrs/s")
}
