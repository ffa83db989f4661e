// Package filter rewrites NAT46 addresses inside arbitrary text, such as
// log lines, leaving every other byte as it was: IPv6 addresses inside an
// RFC 6052 prefix become the IPv4 addresses they carry, or IPv4 addresses
// become their embedded IPv6 form. It is the streaming half of nat46calc.
//
// A log filter that garbles a timestamp, a MAC address or a hash is worse
// than none, so the filter is conservative: it rewrites a run of address
// characters only when the whole run is an address (and, for IPv6, a valid
// embedding in the prefix), not glued to a word, and leaves everything
// ambiguous alone. It keeps up with the input by scanning bytes for the one
// character every candidate must hold (':' or '.'), parsing only candidates,
// and allocating nothing per line; lines may be of any length.
//
// Besides bare addresses it understands these contexts:
//
//	[v6]:port     <->  v4:port      (brackets dropped or added)
//	scheme://[v6] <->  scheme://v4  (URL hosts)
//	v6/len        <->  v4/len       (prefixes: the length is mapped too)
//	v6%zone        ->  v4%zone      (the zone is kept as it was)
//	v6:port        ->  v4:port      (only where v6:port is not itself an
//	                                 IPv6 address, as with 5-digit ports)
//
// The prefix's own address and 0.0.0.0, which it embeds, are left alone:
// they appear in configurations and listening sockets, never as a client.
package filter

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"

	"github.com/snitools/snitools/lib/nat46"
)

// Direction says which way a Filter rewrites.
type Direction int

const (
	// ToIPv4 rewrites IPv6 addresses that are valid embeddings in the
	// prefix to the IPv4 addresses they carry (nat46calc -4).
	ToIPv4 Direction = iota
	// ToIPv6 rewrites IPv4 addresses to their embedding in the prefix
	// (nat46calc -6).
	ToIPv6
)

const (
	// maxRun6 and maxRun4 bound a candidate run of address characters:
	// the longest IPv6 text is 45 bytes, the longest IPv4 text 15; the
	// slack covers a leading colon and trailing punctuation. Longer runs
	// are not addresses and are passed through as they stream by.
	maxRun6 = 64
	maxRun4 = 24
	// maxZone bounds a zone after '%' (interface names are at most 15
	// bytes; numeric zones are shorter).
	maxZone = 32
	// lookBehind is how many bytes before a candidate the rules look at
	// ("://" before a URL host), kept across reads.
	lookBehind = 3
	// bufSize is the read size and the output buffer's flush threshold.
	bufSize = 64 << 10
)

// Filter rewrites addresses in one direction for one prefix. A Filter is
// not safe for concurrent use (it reuses a scratch buffer); make one per
// goroutine.
type Filter struct {
	prefix  nat46.Prefix
	dir     Direction
	zero    netip.Addr // the prefix's own address, which embeds 0.0.0.0
	first   int        // the prefix's first 16 bits, for a quick test
	scratch []byte
}

// New returns a Filter for prefix p rewriting in direction d.
func New(p nat46.Prefix, d Direction) *Filter {
	a := p.Addr().As16()
	return &Filter{prefix: p, dir: d, zero: p.Addr(), first: int(a[0])<<8 | int(a[1]), scratch: make([]byte, 0, 64)}
}

// firstGroup returns the value of the first 16 bits of the IPv6 address
// text s, without parsing it all: every prefix is at least 32 bits long,
// so an address whose first group differs is outside it. It returns -1 if
// s does not start with a group of one to four hex digits or "::".
func firstGroup(s []byte) int {
	if len(s) >= 2 && s[0] == ':' && s[1] == ':' {
		return 0
	}
	g := 0
	for k, c := range s {
		switch {
		case c == ':' && k > 0:
			return g
		case k == 4:
			return -1
		case c >= '0' && c <= '9':
			g = g<<4 | int(c-'0')
		case c >= 'a' && c <= 'f':
			g = g<<4 | int(c-'a'+10)
		case c >= 'A' && c <= 'F':
			g = g<<4 | int(c-'A'+10)
		default:
			return -1
		}
	}
	return -1
}

// Append appends text, rewritten, to dst and returns the extended slice.
// The end of text ends any address in it.
func (f *Filter) Append(dst, text []byte) []byte {
	dst, _ = f.process(dst, text, 0, true)
	return dst
}

// Copy copies src to dst, rewriting, until src reports io.EOF or an error.
// With lineBuffered, what each read brought is written out at once (less a
// possible address that the next read may complete), so a filter between
// `tail -f` and a terminal adds no delay; otherwise output is written in
// large blocks. It returns the number of bytes written.
func (f *Filter) Copy(dst io.Writer, src io.Reader, lineBuffered bool) (written int64, err error) {
	buf := make([]byte, bufSize)
	// Room for a full output block plus one read grown by the longest
	// rewrites ("1.1.1.1:" becomes "[64:ff9b:1::101:101]:").
	out := make([]byte, 0, 4*bufSize)
	n, start := 0, 0 // buf[:n] holds data; buf[:start] is look-behind already written
	for {
		m, rerr := src.Read(buf[n:])
		n += m
		final := rerr != nil
		var done int
		out, done = f.process(out, buf[:n], start, final)
		if len(out) > 0 && (lineBuffered || final || len(out) >= bufSize) {
			w, werr := dst.Write(out)
			written += int64(w)
			out = out[:0]
			if werr != nil {
				return written, fmt.Errorf("filter: write: %w", werr)
			}
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, fmt.Errorf("filter: read: %w", rerr)
		}
		keep := max(done-lookBehind, 0)
		n = copy(buf, buf[keep:n])
		start = done - keep
	}
}

// process appends src[start:], rewritten, to out; src[:start] is
// look-behind that was written before. Unless final, it stops before a
// candidate whose decision needs bytes past the end of src, and returns
// how far it got (done >= start); the caller passes the rest again with
// more data appended.
func (f *Filter) process(out, src []byte, start int, final bool) (_ []byte, done int) {
	sep, run, maxRun := byte(':'), uint8(run6), maxRun6
	if f.dir == ToIPv6 {
		sep, run, maxRun = '.', run4, maxRun4
	}
	emitted := start // src[start:emitted] is in out
	i := start
	for {
		j := bytes.IndexByte(src[i:], sep)
		if j < 0 {
			break
		}
		c := i + j
		s := c
		for s > 0 && class[src[s-1]]&run != 0 {
			s--
		}
		e := c + 1
		for e < len(src) && class[src[e]]&run != 0 && e-s <= maxRun {
			e++
		}
		if s < emitted || e-s > maxRun {
			// Too long to be an address, continuing a run that was
			// already too long in the previous read (s < start), or glued
			// to what was just rewritten: skip all of it.
			for e < len(src) && class[src[e]]&run != 0 {
				e++
			}
			i = e
			continue
		}
		if e == len(src) && !final {
			return f.hold(out, src, emitted, s, start)
		}
		var rs, re int
		var more bool
		if f.dir == ToIPv6 {
			rs, re, more = f.try4(src, s, e, final)
		} else {
			rs, re, more = f.try6(src, s, e, emitted, final)
		}
		if more {
			return f.hold(out, src, emitted, s, start)
		}
		if re > rs {
			out = append(out, src[emitted:rs]...)
			out = append(out, f.scratch...)
			emitted = re
			e = max(e, re)
		}
		i = e
	}
	if !final {
		// A run of address characters at the very end may be the start of
		// an address: keep it for the next read unless it is already too
		// long to be one.
		t := len(src)
		for t > start && class[src[t-1]]&run != 0 && len(src)-t <= maxRun {
			t--
		}
		if n := len(src) - t; n > 0 && n <= maxRun && (t == 0 || class[src[t-1]]&run == 0) {
			return f.hold(out, src, emitted, t, start)
		}
		if len(src) > start && src[len(src)-1] == '[' {
			return f.hold(out, src, emitted, len(src), start)
		}
	}
	return append(out, src[emitted:]...), len(src)
}

// hold writes src up to the candidate at s and reports s as done. An
// opening bracket just before the candidate is held too, since rewriting
// "[v6]:port" drops it.
func (f *Filter) hold(out, src []byte, emitted, s, start int) ([]byte, int) {
	if s > start && s > emitted && src[s-1] == '[' {
		s--
	}
	s = max(s, emitted)
	return append(out, src[emitted:s]...), s
}

// try6 decides on the run src[s:e] of IPv6 address characters (ToIPv4).
// It returns the span of src to replace with f.scratch (empty to leave the
// run alone), or more if the decision needs bytes past the end of src.
// Bytes before lo are written already and cannot be replaced.
func (f *Filter) try6(src []byte, s, e, lo int, final bool) (rs, re int, more bool) {
	a, b := s, e
	if b-a >= 2 && src[a] == ':' && src[a+1] != ':' {
		a++ // "client:64:ff9b:1::c000:221": the colon belongs to the text
	}
	for b > a && src[b-1] == '.' {
		b--
	}
	if b < e && e < len(src) && isWord(src[e]) {
		return 0, 0, false // "...:221.example": part of a dotted name
	}
	if b-a >= 2 && src[b-1] == ':' && src[b-2] != ':' {
		b-- // "from 64:ff9b:1::c000:221: reset"
	}
	if a > 0 && isWord(src[a-1]) {
		return 0, 0, false
	}
	if firstGroup(src[a:b]) != f.first {
		return 0, 0, false // most addresses outside the prefix end here
	}
	ip, ok := parse6(src[a:b])
	if !ok {
		return f.tryPort(src, a, b)
	}
	v6 := netip.AddrFrom16(ip)
	v4, ok := f.prefix.Extract(v6)
	if !ok || v6 == f.zero {
		return 0, 0, false
	}
	if b == len(src) {
		return f.emit(v4, a, b)
	}
	switch src[b] {
	case '%':
		z := b + 1
		for z < len(src) && isZone(src[z]) && z-b <= maxZone {
			z++
		}
		if z == len(src) && !final {
			return 0, 0, true
		}
		if z-b > maxZone {
			return 0, 0, false
		}
		return f.emit(v4, a, b) // the zone stays as it was
	case '/':
		l, end, st := parseLen(src, b, 128, final)
		switch st {
		case lenMore:
			return 0, 0, true
		case lenBad:
			return 0, 0, false
		case lenOK:
			p4, ok := f.prefix.ExtractPrefix(netip.PrefixFrom(v6, l))
			if !ok {
				return 0, 0, false // a length that means nothing in IPv4
			}
			f.scratch = p4.AppendTo(f.scratch[:0])
			return a, end, false
		}
		return f.emit(v4, a, b) // a slash, not a length
	case ']':
		if a == s && a-1 >= lo && src[a-1] == '[' {
			if b+1 == len(src) && !final {
				return 0, 0, true
			}
			if b+1 < len(src) && src[b+1] == ':' || hasScheme(src, a-1) {
				return f.emit(v4, a-1, b+1) // "[v6]:port" -> "v4:port"
			}
		}
	}
	if isWord(src[b]) {
		return 0, 0, false
	}
	return f.emit(v4, a, b)
}

// tryPort decides on src[a:b], a run that is not an IPv6 address, as an
// address and a port without brackets, as Apache's error log writes them
// ("[client 64:ff9b:1::c000:221:51234]"). A run that reads as one IPv6
// address as a whole ("64:ff9b:1::c000:221:443") is ambiguous and never
// gets here: it is left alone unless it is an embedding itself.
func (f *Filter) tryPort(src []byte, a, b int) (rs, re int, more bool) {
	lc := bytes.LastIndexByte(src[a:b], ':')
	if lc < 2 || !isPort(src[a+lc+1:b]) || src[a+lc-1] == ':' {
		return 0, 0, false
	}
	if b < len(src) && (isWord(src[b]) || src[b] == '%' || src[b] == '/') {
		return 0, 0, false
	}
	ip, ok := parse6(src[a : a+lc])
	if !ok {
		return 0, 0, false
	}
	v6 := netip.AddrFrom16(ip)
	v4, ok := f.prefix.Extract(v6)
	if !ok || v6 == f.zero {
		return 0, 0, false
	}
	return f.emit(v4, a, a+lc)
}

// isPort reports whether s is a TCP or UDP port number in decimal, without
// a leading zero.
func isPort(s []byte) bool {
	if len(s) == 0 || len(s) > 5 || s[0] == '0' {
		return false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}

// try4 decides on the run src[s:e] of IPv4 address characters (ToIPv6),
// like try6.
func (f *Filter) try4(src []byte, s, e int, final bool) (rs, re int, more bool) {
	a, b := s, e
	for b > a && src[b-1] == '.' {
		b--
	}
	if b == a || src[a] == '.' {
		return 0, 0, false // ".10.0.0.1": part of a dotted name
	}
	if b < e && e < len(src) && isWord(src[e]) {
		return 0, 0, false // "4.3.2.1.in-addr.arpa"
	}
	if a > 0 {
		switch c := src[a-1]; {
		case isWord(c):
			return 0, 0, false // "v1.2.3.4"
		case c == ':' && a >= 2 && class[src[a-2]]&run6 != 0:
			return 0, 0, false // "::ffff:1.2.3.4", not "client:1.2.3.4"
		case c == '/' && a >= 2 && isWord(src[a-2]):
			return 0, 0, false // "Chrome/120.0.0.0"
		}
	}
	ip, ok := parse4(src[a:b])
	if !ok || ip == [4]byte{} {
		return 0, 0, false
	}
	v4 := netip.AddrFrom4(ip)
	if hasScheme(src, a) {
		return f.emit6(v4, a, b, true) // "http://1.2.3.4/" -> "http://[v6]/"
	}
	if b == len(src) {
		return f.emit6(v4, a, b, false)
	}
	bracketed := a > 0 && src[a-1] == '['
	switch src[b] {
	case '/':
		l, end, st := parseLen(src, b, 32, final)
		switch st {
		case lenMore:
			return 0, 0, true
		case lenBad:
			return 0, 0, false
		case lenOK:
			p6, err := f.prefix.EmbedPrefix(netip.PrefixFrom(v4, l))
			if err != nil {
				return 0, 0, false
			}
			f.scratch = p6.AppendTo(f.scratch[:0])
			return a, end, false
		}
	case ':':
		return f.emit6(v4, a, b, !bracketed) // "1.2.3.4:443" -> "[v6]:443"
	}
	if isWord(src[b]) {
		return 0, 0, false
	}
	return f.emit6(v4, a, b, false)
}

// emit puts v4 in the scratch buffer as the replacement for src[rs:re].
func (f *Filter) emit(v4 netip.Addr, rs, re int) (int, int, bool) {
	f.scratch = v4.AppendTo(f.scratch[:0])
	return rs, re, false
}

// emit6 puts v4's embedding, in brackets if asked, in the scratch buffer as
// the replacement for src[rs:re].
func (f *Filter) emit6(v4 netip.Addr, rs, re int, brackets bool) (int, int, bool) {
	v6, err := f.prefix.Embed(v4)
	if err != nil {
		return 0, 0, false
	}
	f.scratch = f.scratch[:0]
	if brackets {
		f.scratch = append(f.scratch, '[')
	}
	f.scratch = v6.AppendTo(f.scratch)
	if brackets {
		f.scratch = append(f.scratch, ']')
	}
	return rs, re, false
}

// Outcomes of parseLen.
const (
	lenNone = iota // no digits after the slash: an ordinary slash
	lenOK
	lenBad  // digits, but not a prefix length we can use
	lenMore // needs bytes past the end of the input
)

// parseLen reads a prefix length of at most max after the slash at
// src[slash]: one to three decimal digits without a leading zero, not
// followed by a word character, a dot or more digits.
func parseLen(src []byte, slash, max int, final bool) (l, end, status int) {
	d := slash + 1
	for d < len(src) && src[d] >= '0' && src[d] <= '9' && d-slash <= 4 {
		l = l*10 + int(src[d]-'0')
		d++
	}
	if d == len(src) && !final {
		return 0, 0, lenMore
	}
	n := d - slash - 1
	switch {
	case n == 0:
		return 0, 0, lenNone
	case n > 3, l > max, n > 1 && src[slash+1] == '0':
		return 0, 0, lenBad
	case d < len(src) && (isWord(src[d]) || src[d] == '.'):
		return 0, 0, lenBad
	}
	return l, d, lenOK
}

// hasScheme reports whether src[i] is preceded by "://", as a URL's host.
func hasScheme(src []byte, i int) bool {
	return i >= 3 && src[i-3] == ':' && src[i-2] == '/' && src[i-1] == '/'
}

// Character classes, as bits in class.
const (
	run6 = 1 << iota // can be part of an IPv6 address's text
	run4             // can be part of an IPv4 address's text
	word             // an ASCII letter, digit or underscore: text an address must not be glued to
	zone             // can be part of a zone (an interface name or index)
)

// class maps each byte to its character classes: one load per byte in the
// scanning loops.
var class = func() (t [256]uint8) {
	for c := range 256 {
		b := byte(c)
		if b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F' || b == ':' || b == '.' {
			t[c] |= run6
		}
		if b >= '0' && b <= '9' || b == '.' {
			t[c] |= run4
		}
		if b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' {
			t[c] |= word | zone
		}
		if b == '-' || b == '.' {
			t[c] |= zone
		}
	}
	return t
}()

// isWord reports whether c is an ASCII letter, digit or underscore.
func isWord(c byte) bool { return class[c]&word != 0 }

// isZone reports whether c can be part of a zone.
func isZone(c byte) bool { return class[c]&zone != 0 }
