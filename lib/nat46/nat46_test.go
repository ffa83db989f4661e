package nat46

import (
	"encoding/binary"
	"errors"
	"flag"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// rfc6052Examples is the table of RFC 6052 section 2.4, plus the
// well-known prefix example of the same section.
var rfc6052Examples = []struct {
	prefix, v4, v6 string
}{
	{"2001:db8::/32", "192.0.2.33", "2001:db8:c000:221::"},
	{"2001:db8:100::/40", "192.0.2.33", "2001:db8:1c0:2:21::"},
	{"2001:db8:122::/48", "192.0.2.33", "2001:db8:122:c000:2:2100::"},
	{"2001:db8:122:300::/56", "192.0.2.33", "2001:db8:122:3c0:0:221::"},
	{"2001:db8:122:344::/64", "192.0.2.33", "2001:db8:122:344:c0:2:2100:0"},
	{"2001:db8:122:344::/96", "192.0.2.33", "2001:db8:122:344::192.0.2.33"},
	{"64:ff9b::/96", "192.0.2.33", "64:ff9b::192.0.2.33"},
}

func mustPrefix(t testing.TB, s string) Prefix {
	t.Helper()
	p, err := ParsePrefix(s)
	if err != nil {
		t.Fatalf("ParsePrefix(%q): %v", s, err)
	}
	return p
}

func TestRFC6052Examples(t *testing.T) {
	for _, tc := range rfc6052Examples {
		p := mustPrefix(t, tc.prefix)
		v4 := netip.MustParseAddr(tc.v4)
		v6 := netip.MustParseAddr(tc.v6)
		got, err := p.Embed(v4)
		if err != nil || got != v6 {
			t.Errorf("%s: Embed(%s) = %v, %v; want %s", tc.prefix, tc.v4, got, err, v6)
		}
		back, ok := p.Extract(v6)
		if !ok || back != v4 {
			t.Errorf("%s: Extract(%s) = %v, %v; want %s", tc.prefix, tc.v6, back, ok, v4)
		}
		if !p.Contains(v6) {
			t.Errorf("%s: Contains(%s) = false", tc.prefix, tc.v6)
		}
	}
}

func TestDefaultPrefix(t *testing.T) {
	if got := DefaultPrefix.String(); got != "64:ff9b:1::/96" {
		t.Fatalf("DefaultPrefix = %s", got)
	}
	if DefaultPrefix != mustPrefix(t, "64:ff9b:1::/96") {
		t.Fatal("DefaultPrefix differs from the parsed 64:ff9b:1::/96")
	}
	got, err := DefaultPrefix.Embed(netip.MustParseAddr("192.0.2.33"))
	if err != nil || got.String() != "64:ff9b:1::c000:221" {
		t.Fatalf("Embed = %v, %v", got, err)
	}
}

func TestParsePrefix(t *testing.T) {
	good := []struct{ in, want string }{
		{"64:ff9b:1::", "64:ff9b:1::/96"}, // bare address means /96, as in snid
		{"64:ff9b:1::/96", "64:ff9b:1::/96"},
		{"64:FF9B:0001::/96", "64:ff9b:1::/96"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"2001:db8:100::/40", "2001:db8:100::/40"},
		{"2001:db8:122::/48", "2001:db8:122::/48"},
		{"2001:db8:122:300::/56", "2001:db8:122:300::/56"},
		{"2001:db8:122:344::/64", "2001:db8:122:344::/64"},
		{"2001:db8:122:344:0:ff::/96", "2001:db8:122:344:0:ff::/96"}, // bits 64-71 zero, 72-79 not
	}
	for _, tc := range good {
		p, err := ParsePrefix(tc.in)
		if err != nil {
			t.Errorf("ParsePrefix(%q): %v", tc.in, err)
			continue
		}
		if p.String() != tc.want {
			t.Errorf("ParsePrefix(%q) = %s, want %s", tc.in, p, tc.want)
		}
	}
	bad := []string{
		"",
		"64:ff9b:1::/95",           // not an RFC 6052 length
		"64:ff9b:1::/128",          // not an RFC 6052 length
		"2001:db8::/24",            // not an RFC 6052 length
		"64:ff9b:1::1",             // bare address means /96: host bits set
		"64:ff9b:1::/32",           // bits set after /32
		"2001:db8:0:0:100::/96",    // bits 64-71 set in a /96
		"192.0.2.0/24",             // IPv4
		"192.0.2.1",                // IPv4
		"::ffff:0:0/96",            // IPv4-mapped
		"fe80::%eth0",              // zone
		"fe80::%eth0/64",           // zone
		"64:ff9b:1::/",             // empty length
		"64:ff9b:1::/x",            // bad length
		"example.com",              // not an address
		"64:ff9b:1::/96/96",        // junk
		"64:ff9b:1:: /96",          // space
		"64:ff9b:1:0:0:0:0:0:0/96", // too many groups
	}
	for _, in := range bad {
		p, err := ParsePrefix(in)
		if err == nil {
			t.Errorf("ParsePrefix(%q) = %s, want error", in, p)
			continue
		}
		if !errors.Is(err, ErrPrefix) {
			t.Errorf("ParsePrefix(%q) error %v does not wrap ErrPrefix", in, err)
		}
	}
}

func TestZeroPrefix(t *testing.T) {
	var p Prefix
	if p.IsValid() || p.String() != "invalid Prefix" || p.Bits() != -1 {
		t.Fatalf("zero Prefix: valid %v, %q, %d bits", p.IsValid(), p, p.Bits())
	}
	if _, err := p.Embed(netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Error("zero Prefix embeds")
	}
	if _, ok := p.Extract(netip.MustParseAddr("::c000:201")); ok {
		t.Error("zero Prefix extracts")
	}
	if p.Contains(netip.MustParseAddr("::")) {
		t.Error("zero Prefix contains ::")
	}
}

func TestEmbedInput(t *testing.T) {
	p := DefaultPrefix
	// A dual-stack socket reports IPv4 clients as IPv4-mapped addresses.
	got, err := p.Embed(netip.MustParseAddr("::ffff:192.0.2.33"))
	if err != nil || got.String() != "64:ff9b:1::c000:221" {
		t.Errorf("Embed(::ffff:192.0.2.33) = %v, %v", got, err)
	}
	for _, in := range []netip.Addr{{}, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("64:ff9b:1::c000:221")} {
		if got, err := p.Embed(in); err == nil {
			t.Errorf("Embed(%v) = %v, want error", in, got)
		}
	}
}

func TestExtractRefuses(t *testing.T) {
	cases := []struct{ prefix, addr string }{
		{"64:ff9b:1::/96", "64:ff9b:2::c000:221"},         // other prefix
		{"64:ff9b:1::/96", "192.0.2.33"},                  // IPv4
		{"64:ff9b:1::/96", "::ffff:192.0.2.33"},           // IPv4-mapped
		{"2001:db8::/32", "2001:db8:c000:221:100::"},      // u octet set
		{"2001:db8::/32", "2001:db8:c000:221::1"},         // suffix set
		{"2001:db8:122:344::/64", "2001:db8:122:344::10"}, // a real host in the /64
		{"2001:db8:100::/40", "2001:db8:1c0:2:121::"},     // u octet set
		{"2001:db8:122::/48", "2001:db8:122:c000:2:2100::1"},
	}
	for _, tc := range cases {
		p := mustPrefix(t, tc.prefix)
		if got, ok := p.Extract(netip.MustParseAddr(tc.addr)); ok {
			t.Errorf("%s: Extract(%s) = %s, want refusal", tc.prefix, tc.addr, got)
		}
	}
	// Contains is about the range only: a host in the /64 is inside.
	p := mustPrefix(t, "2001:db8:122:344::/64")
	if !p.Contains(netip.MustParseAddr("2001:db8:122:344::10")) {
		t.Error("Contains(2001:db8:122:344::10) = false")
	}
	// A zone is ignored.
	if got, ok := DefaultPrefix.Extract(netip.MustParseAddr("64:ff9b:1::c000:221%eth0")); !ok || got.String() != "192.0.2.33" {
		t.Errorf("Extract with zone = %v, %v", got, ok)
	}
}

var lengths = []int{32, 40, 48, 56, 64, 96}

// randomPrefix returns a random valid prefix of the given length.
func randomPrefix(r *rand.Rand, bits int) Prefix {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], r.Uint64())
	binary.BigEndian.PutUint64(b[8:], r.Uint64())
	b[0] = 0x20 // keep clear of ::ffff:0:0/96
	b[uOctet] = 0
	a := netip.PrefixFrom(netip.AddrFrom16(b), bits).Masked()
	return Prefix{a}
}

func TestRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(6052, 46))
	for _, bits := range lengths {
		for range 200 {
			p := randomPrefix(r, bits)
			if q, err := ParsePrefix(p.String()); err != nil || q != p {
				t.Fatalf("ParsePrefix(%s) = %v, %v", p, q, err)
			}
			var b4 [4]byte
			binary.BigEndian.PutUint32(b4[:], r.Uint32())
			v4 := netip.AddrFrom4(b4)
			v6, err := p.Embed(v4)
			if err != nil {
				t.Fatalf("%s: Embed(%s): %v", p, v4, err)
			}
			if !p.Contains(v6) {
				t.Fatalf("%s: Embed(%s) = %s, outside the prefix", p, v4, v6)
			}
			if v6.As16()[uOctet] != 0 {
				t.Fatalf("%s: Embed(%s) = %s, u octet set", p, v4, v6)
			}
			back, ok := p.Extract(v6)
			if !ok || back != v4 {
				t.Fatalf("%s: Extract(Embed(%s)) = %v, %v", p, v4, back, ok)
			}
			// Through text, as nat46calc does.
			back, ok = p.Extract(netip.MustParseAddr(v6.String()))
			if !ok || back != v4 {
				t.Fatalf("%s: Extract(%s) = %v, %v", p, v6, back, ok)
			}
			// Every IPv4 prefix length round-trips too.
			n := r.IntN(33)
			v4p := netip.PrefixFrom(v4, n)
			v6p, err := p.EmbedPrefix(v4p)
			if err != nil {
				t.Fatalf("%s: EmbedPrefix(%s): %v", p, v4p, err)
			}
			if got, ok := p.ExtractPrefix(v6p); !ok || got != v4p {
				t.Fatalf("%s: ExtractPrefix(EmbedPrefix(%s) = %s) = %v, %v", p, v4p, v6p, got, ok)
			}
		}
	}
}

func TestEmbedPrefix(t *testing.T) {
	cases := []struct{ prefix, v4, v6 string }{
		{"64:ff9b:1::/96", "10.0.0.0/8", "64:ff9b:1::a00:0/104"},
		{"64:ff9b:1::/96", "192.0.2.33/32", "64:ff9b:1::c000:221/128"},
		{"64:ff9b:1::/96", "0.0.0.0/0", "64:ff9b:1::/96"},
		{"2001:db8::/32", "192.0.2.0/24", "2001:db8:c000:200::/56"},
		{"2001:db8::/32", "192.0.2.33/32", "2001:db8:c000:221::/64"},
		{"2001:db8:100::/40", "192.0.2.0/24", "2001:db8:1c0:2::/64"},
		{"2001:db8:100::/40", "192.0.2.33/32", "2001:db8:1c0:2:21::/80"},
		{"2001:db8:100::/40", "192.0.2.32/28", "2001:db8:1c0:2:20::/76"},
		{"2001:db8:122:344::/64", "192.0.0.0/8", "2001:db8:122:344:c0::/80"},
		{"2001:db8:122:344::/64", "0.0.0.0/0", "2001:db8:122:344::/64"},
	}
	for _, tc := range cases {
		p := mustPrefix(t, tc.prefix)
		v4 := netip.MustParsePrefix(tc.v4)
		v6 := netip.MustParsePrefix(tc.v6)
		got, err := p.EmbedPrefix(v4)
		if err != nil || got != v6 {
			t.Errorf("%s: EmbedPrefix(%s) = %v, %v; want %s", tc.prefix, v4, got, err, v6)
		}
		back, ok := p.ExtractPrefix(v6)
		if !ok || back != v4 {
			t.Errorf("%s: ExtractPrefix(%s) = %v, %v; want %s", tc.prefix, v6, back, ok, v4)
		}
	}
	refused := []struct{ prefix, v6 string }{
		{"2001:db8:100::/40", "2001:db8:1c0:2::/68"},       // ends inside the u octet
		{"2001:db8:122:344::/64", "2001:db8:122:344::/70"}, // ends inside the u octet
		{"64:ff9b:1::/96", "64:ff9b:1::/64"},               // shorter than the prefix
		{"2001:db8::/32", "2001:db8:c000:221::/72"},        // cuts into the suffix
		{"64:ff9b:1::/96", "64:ff9b:2::/104"},              // other prefix
	}
	for _, tc := range refused {
		p := mustPrefix(t, tc.prefix)
		if got, ok := p.ExtractPrefix(netip.MustParsePrefix(tc.v6)); ok {
			t.Errorf("%s: ExtractPrefix(%s) = %s, want refusal", tc.prefix, tc.v6, got)
		}
	}
	if got, err := DefaultPrefix.EmbedPrefix(netip.MustParsePrefix("2001:db8::/32")); err == nil {
		t.Errorf("EmbedPrefix(IPv6) = %s, want error", got)
	}
}

func TestTextVar(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var p Prefix
	fs.TextVar(&p, "p", DefaultPrefix, "prefix")
	if p != DefaultPrefix {
		t.Fatalf("default = %s", p)
	}
	if err := fs.Parse([]string{"-p", "2001:db8:100::/40"}); err != nil || p.String() != "2001:db8:100::/40" {
		t.Fatalf("-p = %s, %v", p, err)
	}
	fs.SetOutput(discard{})
	if err := fs.Parse([]string{"-p", "2001:db8:100::/44"}); err == nil {
		t.Fatal("-p /44 accepted")
	}
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// FuzzExtract checks that Extract and Embed are exact inverses on every
// address and prefix length, and that nothing panics.
func FuzzExtract(f *testing.F) {
	for _, tc := range rfc6052Examples {
		p := netip.MustParsePrefix(tc.prefix)
		f.Add(netip.MustParseAddr(tc.v6).AsSlice(), uint8(p.Bits()))
	}
	f.Add(make([]byte, 16), uint8(40))
	f.Fuzz(func(t *testing.T, raw []byte, l uint8) {
		if len(raw) != 16 {
			return
		}
		bits := lengths[int(l)%len(lengths)]
		a := netip.AddrFrom16([16]byte(raw))
		pfx := netip.PrefixFrom(a, bits).Masked()
		p, err := ParsePrefix(pfx.String())
		if err != nil {
			return // IPv4-mapped, or u octet set in a /96
		}
		v4, ok := p.Extract(a)
		if !ok {
			return
		}
		back, err := p.Embed(v4)
		if err != nil || back != a {
			t.Fatalf("%s: Embed(Extract(%s) = %s) = %v, %v", p, a, v4, back, err)
		}
	})
}

// FuzzParsePrefix checks that ParsePrefix never panics and that what it
// accepts prints in a form it parses back to the same prefix.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"64:ff9b:1::", "2001:db8:100::/40", "::ffff:0:0/96", "1.2.3.4/32", "fe80::%x/64"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			return
		}
		q, err := ParsePrefix(p.String())
		if err != nil || q != p {
			t.Fatalf("ParsePrefix(%q) = %s, reparsed %v, %v", s, p, q, err)
		}
	})
}

func TestTranslate(t *testing.T) {
	p := DefaultPrefix
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.33", "64:ff9b:1::c000:221"},
		{"64:ff9b:1::c000:221", "192.0.2.33"},
		{"64:ff9b:1::192.0.2.33", "192.0.2.33"},
		{"64:ff9b:1::c000:221%eth0", "192.0.2.33"},
		{"10.0.0.0/8", "64:ff9b:1::a00:0/104"},
		{"64:ff9b:1::a00:0/104", "10.0.0.0/8"},
		{"0.0.0.0", "64:ff9b:1::"},
		{"64:ff9b:1::", "0.0.0.0"},
	} {
		got, err := p.Translate(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Translate(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "x", "2001:db8::1", "::ffff:192.0.2.33", "64:ff9b:1::/64", "10.0.0.0/33", "1.2.3.4/", "64:ff9b:2::1", "01.2.3.4"} {
		got, err := p.Translate(in)
		if err == nil {
			t.Errorf("Translate(%q) = %q, want error", in, got)
		} else if !strings.Contains(err.Error(), strconv.Quote(in)) {
			t.Errorf("Translate(%q) error %q does not name the input", in, err)
		}
	}
}
