// Package nat46 embeds IPv4 addresses in IPv6 addresses and extracts them
// again, following RFC 6052 ("IPv6 Addressing of IPv4/IPv6 Translators").
//
// snilisten's nat46 mode forwards an IPv4 client to an IPv6 backend from a
// source address that carries the client's IPv4 address, so the backend logs
// the real client without any proxy protocol; nat46calc turns such addresses
// back into IPv4 for humans and scripts. Both sides must agree bit for bit on
// the layout, which is why it lives here and nowhere else.
//
// RFC 6052 allows prefixes of 32, 40, 48, 56, 64 and 96 bits. The IPv4
// address follows the prefix, except that bits 64 to 71 (the "u" octet) are
// always zero and skipped; the bits after the IPv4 address (the suffix) are
// zero:
//
//	/32: PL(32)      v4(32)   u  suffix
//	/40: PL(40)      v4(24)   u  v4(8)  suffix
//	/48: PL(48)      v4(16)   u  v4(16) suffix
//	/56: PL(56)      v4(8)    u  v4(24) suffix
//	/64: PL(64)               u  v4(32) suffix
//	/96: PL(96)                         v4(32)
package nat46

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// uOctet is the index of the byte holding bits 64 to 71, which RFC 6052
// reserves (they must be zero) and which the IPv4 address skips.
const uOctet = 8

// DefaultPrefix is 64:ff9b:1::/96, the local-use prefix RFC 8215 sets aside
// for translation inside one network, and snilisten's default: unlike the
// well-known 64:ff9b::/96 it may carry private IPv4 addresses.
var DefaultPrefix = Prefix{netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0x00, 1: 0x64, 2: 0xff, 3: 0x9b, 5: 0x01}), 96)}

// ErrPrefix is wrapped by every error ParsePrefix returns, so callers can
// tell a bad prefix from other failures.
var ErrPrefix = errors.New("invalid NAT46 prefix")

// Prefix is an RFC 6052 IPv6 prefix that IPv4 addresses are embedded in.
// The zero Prefix is invalid: Embed fails and Extract reports false.
// Prefix values are comparable.
type Prefix struct {
	p netip.Prefix // masked; Bits is one of 32, 40, 48, 56, 64, 96
}

// ParsePrefix parses an RFC 6052 prefix, such as "64:ff9b:1::/96" or
// "2001:db8:100::/40". A bare address such as "64:ff9b:1::" means a /96
// prefix, as snid's -nat46-prefix does. It refuses other lengths, bits set
// beyond the length (a typo more often than intent), zones, IPv4 and
// IPv4-mapped addresses, and a /96 prefix whose bits 64 to 71 are not zero,
// since RFC 6052 requires them to be zero in every embedded address.
func ParsePrefix(s string) (Prefix, error) {
	addrPart, _, hasBits := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addrPart)
	if err != nil {
		return Prefix{}, fmt.Errorf("%w %q: %v", ErrPrefix, s, err)
	}
	bits := 96
	if hasBits {
		pp, err := netip.ParsePrefix(s)
		if err != nil {
			return Prefix{}, fmt.Errorf("%w %q: %v", ErrPrefix, s, err)
		}
		bits = pp.Bits()
	}
	switch {
	case a.Zone() != "":
		return Prefix{}, fmt.Errorf("%w %q: has a zone", ErrPrefix, s)
	case !a.Is6():
		return Prefix{}, fmt.Errorf("%w %q: not an IPv6 address", ErrPrefix, s)
	case a.Is4In6():
		return Prefix{}, fmt.Errorf("%w %q: IPv4-mapped addresses (::ffff:0:0/96) are not a translation prefix", ErrPrefix, s)
	}
	switch bits {
	case 32, 40, 48, 56, 64, 96:
	default:
		return Prefix{}, fmt.Errorf("%w %q: length /%d: RFC 6052 allows /32, /40, /48, /56, /64 and /96", ErrPrefix, s, bits)
	}
	p := netip.PrefixFrom(a, bits)
	if p.Masked().Addr() != a {
		return Prefix{}, fmt.Errorf("%w %q: bits set after /%d (did you mean %s?)", ErrPrefix, s, bits, p.Masked())
	}
	if bits == 96 && a.As16()[uOctet] != 0 {
		return Prefix{}, fmt.Errorf("%w %q: bits 64 to 71 must be zero (RFC 6052 section 2.2)", ErrPrefix, s)
	}
	return Prefix{p}, nil
}

// IsValid reports whether p was made by ParsePrefix (or is DefaultPrefix).
func (p Prefix) IsValid() bool { return p.p.IsValid() }

// Addr returns the prefix's first address, the one with every embedded bit
// zero, as in netip.Prefix.
func (p Prefix) Addr() netip.Addr { return p.p.Addr() }

// Bits returns the prefix length: 32, 40, 48, 56, 64 or 96; -1 if p is
// invalid.
func (p Prefix) Bits() int { return p.p.Bits() }

// Prefix returns p as a netip.Prefix, for routes and allow-lists (the range
// it names includes addresses that are not valid embeddings; see Extract).
func (p Prefix) Prefix() netip.Prefix { return p.p }

// String returns the prefix in CIDR form, such as "64:ff9b:1::/96", or
// "invalid Prefix" for the zero Prefix.
func (p Prefix) String() string {
	if !p.IsValid() {
		return "invalid Prefix"
	}
	return p.p.String()
}

// MarshalText implements encoding.TextMarshaler, so a Prefix can be a flag
// (flag.TextVar) or a configuration value. The zero Prefix is "".
func (p Prefix) MarshalText() ([]byte, error) {
	if !p.IsValid() {
		return []byte{}, nil
	}
	return []byte(p.p.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParsePrefix.
func (p *Prefix) UnmarshalText(text []byte) error {
	q, err := ParsePrefix(string(text))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// Contains reports whether a lies inside the prefix's range, whether or not
// it is a valid embedding. A zone is ignored; IPv4 and IPv4-mapped addresses
// are never inside.
func (p Prefix) Contains(a netip.Addr) bool {
	return p.IsValid() && a.Is6() && !a.Is4In6() && p.p.Contains(a.WithZone(""))
}

// Embed returns the IPv6 address that carries v4 in the prefix: the address
// snilisten's nat46 mode connects from for an IPv4 client. It accepts an
// IPv4-mapped IPv6 address (::ffff:a.b.c.d, as a dual-stack socket reports
// IPv4 clients) as the IPv4 address it maps.
func (p Prefix) Embed(v4 netip.Addr) (netip.Addr, error) {
	if !p.IsValid() {
		return netip.Addr{}, fmt.Errorf("nat46: embed %s: invalid prefix", v4)
	}
	v4 = v4.Unmap()
	if !v4.Is4() {
		return netip.Addr{}, fmt.Errorf("nat46: embed %s: not an IPv4 address", v4)
	}
	return netip.AddrFrom16(embed(p.p.Addr().As16(), p.p.Bits(), v4.As4())), nil
}

// embed writes b4 into the prefix bytes a at prefix length bits.
func embed(a [16]byte, bits int, b4 [4]byte) [16]byte {
	i := bits / 8
	for _, b := range b4 {
		if i == uOctet {
			i++
		}
		a[i] = b
		i++
	}
	return a
}

// Extract returns the IPv4 address embedded in v6, and whether v6 is a valid
// embedding in the prefix: inside it, with bits 64 to 71 and the suffix
// zero. RFC 6052 lets a translator ignore a non-zero suffix, but an address
// with one was not made by Embed: treating it as an embedding would map two
// different hosts to one IPv4 address, so Extract refuses it. That makes
// Extract the exact inverse of Embed. A zone is ignored.
func (p Prefix) Extract(v6 netip.Addr) (netip.Addr, bool) {
	if !p.Contains(v6) {
		return netip.Addr{}, false
	}
	b4, ok := extract(v6.As16(), p.p.Bits())
	if !ok {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(b4), true
}

// extract reads the IPv4 address from a, an address inside a prefix of
// length bits, and checks that the u octet and the suffix are zero.
func extract(a [16]byte, bits int) (b4 [4]byte, ok bool) {
	i := bits / 8
	for k := range b4 {
		if i == uOctet {
			i++
		}
		b4[k] = a[i]
		i++
	}
	if bits < 96 && a[uOctet] != 0 {
		return b4, false
	}
	for ; i < 16; i++ {
		if a[i] != 0 {
			return b4, false
		}
	}
	return b4, true
}

// v6Bits returns the IPv6 prefix length that covers the first n bits of an
// embedded IPv4 address (0 <= n <= 32): the position after the n-th IPv4
// bit, counting the skipped u octet.
func (p Prefix) v6Bits(n int) int {
	bits := p.p.Bits()
	if n == 0 {
		return bits
	}
	start := bits
	if start == 64 {
		start = 72 // the IPv4 address begins after the u octet
	}
	last := start + n - 1 // position of the n-th IPv4 bit
	if start < 64 && last >= 64 {
		last += 8
	}
	return last + 1
}

// EmbedPrefix returns the IPv6 prefix holding exactly the embeddings of the
// addresses in v4, such as 64:ff9b:1::a00:0/104 for 10.0.0.0/8 in the
// default prefix: what an IPv6 backend's allow-list needs to admit those
// IPv4 clients. Host bits of v4 are kept, as netip.Prefix does.
func (p Prefix) EmbedPrefix(v4 netip.Prefix) (netip.Prefix, error) {
	if !v4.IsValid() || !v4.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("nat46: embed %s: not an IPv4 prefix", v4)
	}
	a, err := p.Embed(v4.Addr())
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, p.v6Bits(v4.Bits())), nil
}

// ExtractPrefix is the inverse of EmbedPrefix: the IPv4 prefix whose
// embeddings v6 holds. It reports false unless v6's address is a valid
// embedding (see Extract) and its length ends on an IPv4 bit inside the
// embedded address (for a /40 prefix, /65 to /71 fall in the u octet and a
// length past the IPv4 address would cut into the suffix).
func (p Prefix) ExtractPrefix(v6 netip.Prefix) (netip.Prefix, bool) {
	if !v6.IsValid() {
		return netip.Prefix{}, false
	}
	a, ok := p.Extract(v6.Addr())
	if !ok {
		return netip.Prefix{}, false
	}
	for n := 0; n <= 32; n++ {
		if p.v6Bits(n) == v6.Bits() {
			return netip.PrefixFrom(a, n), true
		}
	}
	return netip.Prefix{}, false
}

// Translate converts the text of one address or prefix in whichever
// direction applies: an IPv4 address or prefix becomes its embedding, an
// IPv6 address or prefix that is a valid embedding becomes the IPv4 one.
// It is nat46calc's argument mode, kept here so snilisten and scripts get
// the same answers. The error names s and why it cannot be translated.
func (p Prefix) Translate(s string) (string, error) {
	if strings.Contains(s, "/") {
		in, err := netip.ParsePrefix(s)
		if err != nil {
			return "", fmt.Errorf("translate %q: not an IP address or prefix", s)
		}
		if in.Addr().Is4() {
			out, err := p.EmbedPrefix(in)
			if err != nil {
				return "", fmt.Errorf("translate %q: %w", s, err)
			}
			return out.String(), nil
		}
		out, ok := p.ExtractPrefix(in)
		if !ok {
			return "", fmt.Errorf("translate %q: not a prefix of IPv4 addresses embedded in %s", s, p)
		}
		return out.String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", fmt.Errorf("translate %q: not an IP address or prefix", s)
	}
	if a.Is4() {
		out, err := p.Embed(a)
		if err != nil {
			return "", fmt.Errorf("translate %q: %w", s, err)
		}
		return out.String(), nil
	}
	out, ok := p.Extract(a)
	if !ok {
		return "", fmt.Errorf("translate %q: not an IPv4 address embedded in %s", s, p)
	}
	return out.String(), nil
}
