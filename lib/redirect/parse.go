package redirect

import (
	"bytes"
	"net/netip"

	"github.com/snitools/snitools/lib/hostname"
)

// httpError is a request the server refuses: the status it answers and a
// reason from a fixed list (never bytes the client chose), which goes both
// into the response body and into the log line.
type httpError struct {
	status int
	reason string
}

func (e *httpError) Error() string { return e.reason }

// The refusals. Each names the rule the request broke.
var (
	errRequestLine     = &httpError{400, "malformed request line"}
	errMethod          = &httpError{400, "method is not a token"}
	errTarget          = &httpError{400, "request target has a byte outside printable ASCII, a backslash or a '#'"}
	errTargetForm      = &httpError{400, "request target is neither a path nor an http(s) URL"}
	errNetworkPath     = &httpError{400, "path starts with // (network-path trick)"}
	errVersion         = &httpError{505, "HTTP version not supported"}
	errField           = &httpError{400, "malformed header field"}
	errFieldValue      = &httpError{400, "control character in a header field value"}
	errNoHost          = &httpError{400, "no Host header"}
	errTwoHosts        = &httpError{400, "more than one Host header"}
	errHost            = &httpError{400, "invalid host"}
	errUserinfo        = &httpError{400, "userinfo (@) in the host"}
	errPort            = &httpError{400, "invalid port in the host"}
	errContentLength   = &httpError{400, "invalid or repeated Content-Length"}
	errTransferCoding  = &httpError{400, "Transfer-Encoding without chunked last, with Content-Length, or in HTTP/1.0"}
	errHeaderTooLarge  = &httpError{431, "request header larger than the limit"}
	errRequestLineLong = &httpError{414, "request line longer than the header limit"}
	errHeaderTimeout   = &httpError{408, "request header not complete within the header timeout"}
)

// request is what the server needs to know about one request. Byte slices
// point into the connection's buffer and are valid until the next request.
type request struct {
	method []byte
	target []byte // the request-target exactly as received
	http10 bool
	// host is the host for Location: a canonical name (lib/hostname), a
	// dotted IPv4 address or a bracketed IPv6 address; never a port.
	host   string
	hostIP bool
	// pathQuery is the path and query for Location, byte for byte from
	// the target ("/" when an absolute-form target has no path).
	pathQuery []byte
	keepAlive bool
	// bodyLen is the Content-Length (0 without one); chunked means a body
	// of unknown length follows.
	bodyLen   int64
	chunked   bool
	expect100 bool
	// rawHost is the Host header as received, for the log line when it
	// is refused.
	rawHost   []byte
	userAgent []byte
	accept    []byte
}

// tokenChars marks the bytes allowed in a method or field name (RFC 9110
// token).
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

// nextLine splits off the first line of b, without its LF and without one
// CR before the LF. A CR anywhere else stays in the line, where every
// later check refuses it as a control byte.
func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		line, rest = b, nil
	} else {
		line, rest = b[:i], b[i+1:]
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// parseRequest parses a request header block: the request line and the
// fields, without the empty line that ends them. It is strict where
// leniency could let a request name a host it did not mean, or smuggle a
// second request past the framing: single spaces in the request line,
// no whitespace before a colon, no folded lines, no control bytes, exactly
// one valid Host, unambiguous body framing.
//
// cache, if not nil, remembers the last Host header validated, so that a
// kept-alive connection does not validate the same host again.
func parseRequest(head []byte, req *request, cache *hostCache) *httpError {
	*req = request{}
	line, rest := nextLine(head)
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 < 0 {
		return errRequestLine
	}
	req.method = line[:sp1]
	if !isToken(req.method) {
		return errMethod
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 < 0 {
		return errRequestLine // HTTP/0.9 ("GET /") or garbage
	}
	req.target = line[sp1+1 : sp1+1+sp2]
	version := line[sp1+1+sp2+1:]
	if len(version) != 8 || string(version[:5]) != "HTTP/" || version[6] != '.' ||
		!isDigit(version[5]) || !isDigit(version[7]) {
		return errRequestLine
	}
	if version[5] != '1' {
		return errVersion
	}
	req.http10 = version[7] == '0'
	if len(req.target) == 0 {
		return errRequestLine
	}
	for _, c := range req.target {
		if c < 0x21 || c > 0x7e || c == '\\' || c == '#' {
			return errTarget
		}
	}

	var (
		hostSeen, clSeen bool
		closeTok, kaTok  bool
		te               []byte
	)
	for len(rest) > 0 {
		line, rest = nextLine(rest)
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return errField // also folded lines, which start with a space
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range value {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return errFieldValue
			}
		}
		switch {
		case fieldIs(name, "host"):
			if hostSeen {
				return errTwoHosts
			}
			hostSeen, req.rawHost = true, value
		case fieldIs(name, "connection"):
			forEachToken(value, func(t []byte) {
				closeTok = closeTok || bytes.EqualFold(t, []byte("close"))
				kaTok = kaTok || bytes.EqualFold(t, []byte("keep-alive"))
			})
		case fieldIs(name, "content-length"):
			n, ok := parseContentLength(value)
			if clSeen || !ok {
				return errContentLength
			}
			clSeen, req.bodyLen = true, n
		case fieldIs(name, "transfer-encoding"):
			forEachToken(value, func(t []byte) { te = t })
			if te == nil {
				te = []byte{} // present but empty: refused below
			}
		case fieldIs(name, "expect"):
			req.expect100 = bytes.EqualFold(value, []byte("100-continue"))
		case fieldIs(name, "user-agent"):
			req.userAgent = value
		case fieldIs(name, "accept"):
			req.accept = value
		}
	}
	if te != nil {
		// RFC 9112 section 6.3: chunked must be last; with both framings
		// the request is a smuggling attempt or a broken client.
		if !bytes.EqualFold(te, []byte("chunked")) || clSeen || req.http10 {
			return errTransferCoding
		}
		req.chunked = true
	}
	req.keepAlive = !closeTok && (!req.http10 || kaTok)

	if !hostSeen {
		return errNoHost // HTTP/1.0 too: without a host there is nowhere to send the client
	}
	host, isIP, herr := cache.parse(req.rawHost)
	if herr != nil {
		return herr
	}
	switch {
	case req.target[0] == '/':
		if len(req.target) > 1 && req.target[1] == '/' {
			return errNetworkPath
		}
		req.pathQuery = req.target
	default:
		// Absolute form: its authority wins over Host (RFC 9112
		// section 3.2.2), though Host must still be valid.
		rest, ok := cutSchemePrefix(req.target)
		if !ok {
			return errTargetForm
		}
		end := bytes.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		host, isIP, herr = parseHost(rest[:end])
		if herr != nil {
			return herr
		}
		pq := rest[end:]
		switch {
		case len(pq) == 0:
			pq = []byte("/")
		case pq[0] == '?':
			pq = append([]byte("/"), pq...)
		case len(pq) > 1 && pq[1] == '/':
			return errNetworkPath
		}
		req.pathQuery = pq
	}
	req.host, req.hostIP = host, isIP
	return nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// fieldIs compares a field name with a lowercase name.
func fieldIs(name []byte, lower string) bool {
	return len(name) == len(lower) && bytes.EqualFold(name, []byte(lower))
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// forEachToken calls f with each non-empty element of a comma-separated
// list, trimmed.
func forEachToken(v []byte, f func([]byte)) {
	for len(v) > 0 {
		var t []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			t, v = v, nil
		}
		if t = trimOWS(t); len(t) > 0 {
			f(t)
		}
	}
}

// parseContentLength accepts 1 to 18 decimal digits and nothing else (no
// sign, no list: "5, 5" is refused rather than guessed at).
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// cutSchemePrefix removes "http://" or "https://" (any case).
func cutSchemePrefix(t []byte) ([]byte, bool) {
	for _, p := range []string{"http://", "https://"} {
		if len(t) >= len(p) && bytes.EqualFold(t[:len(p)], []byte(p)) {
			return t[len(p):], true
		}
	}
	return nil, false
}

// parseHost validates an authority, "host" or "host:port", and returns
// the host for Location: a canonical DNS name (lib/hostname rules), a
// dotted-quad IPv4 address, or an IPv6 address in brackets, in canonical
// form. The port, if any, must be a number up to 65535; it is dropped.
// Userinfo ("user@host"), zones, bare IPv6 and anything that is not one
// of these is refused.
func parseHost(a []byte) (host string, isIP bool, _ *httpError) {
	if bytes.IndexByte(a, '@') >= 0 {
		return "", false, errUserinfo
	}
	var name, port []byte
	hasPort := false
	if len(a) > 0 && a[0] == '[' {
		end := bytes.IndexByte(a, ']')
		if end < 0 {
			return "", false, errHost
		}
		name, a = a[1:end], a[end+1:]
		if len(a) > 0 {
			if a[0] != ':' {
				return "", false, errHost
			}
			port, hasPort = a[1:], true
		}
		addr, err := netip.ParseAddr(string(name))
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return "", false, errHost
		}
		if hasPort && !validPort(port) {
			return "", false, errPort
		}
		return "[" + addr.String() + "]", true, nil
	}
	name = a
	if bytes.Count(a, []byte(":")) > 1 {
		return "", false, errHost // a bare IPv6 address, or garbage
	}
	if i := bytes.IndexByte(a, ':'); i >= 0 {
		name, port, hasPort = a[:i], a[i+1:], true
	}
	if hasPort && !validPort(port) {
		return "", false, errPort
	}
	if len(name) == 0 {
		return "", false, errHost
	}
	if lastLabelDigits(name) {
		addr, err := netip.ParseAddr(string(name))
		if err != nil || !addr.Is4() {
			return "", false, errHost
		}
		return addr.String(), true, nil
	}
	canon, err := hostname.Canonical(string(name))
	if err != nil {
		return "", false, errHost
	}
	return canon, false, nil
}

// hostCache is the last valid Host header and what parseHost made of it.
type hostCache struct {
	raw    []byte
	host   string
	isIP   bool
	filled bool
}

// parse is parseHost, remembering the last valid result.
func (c *hostCache) parse(raw []byte) (string, bool, *httpError) {
	if c == nil {
		return parseHost(raw)
	}
	if c.filled && bytes.Equal(raw, c.raw) {
		return c.host, c.isIP, nil
	}
	host, isIP, err := parseHost(raw)
	if err == nil && len(raw) <= 255 {
		c.raw = append(c.raw[:0], raw...)
		c.host, c.isIP, c.filled = host, isIP, true
	}
	return host, isIP, err
}

// validPort accepts an empty port (RFC 3986 allows "host:") or up to five
// digits no greater than 65535.
func validPort(p []byte) bool {
	if len(p) > 5 {
		return false
	}
	n := 0
	for _, c := range p {
		if !isDigit(c) {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}

// lastLabelDigits reports whether the last label of name (ignoring one
// trailing dot) is all digits: the name is meant as an IPv4 address.
func lastLabelDigits(name []byte) bool {
	name = bytes.TrimSuffix(name, []byte("."))
	i := bytes.LastIndexByte(name, '.')
	label := name[i+1:]
	if len(label) == 0 {
		return false
	}
	for _, c := range label {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

// acmePrefix is where ACME HTTP-01 challenges live (RFC 8555 section 8.3).
const acmePrefix = "/.well-known/acme-challenge/"

// maxTokenLen bounds an ACME token; real ones are 43 bytes.
const maxTokenLen = 256

// isChallenge reports whether the request is an ACME HTTP-01 validation:
// GET of exactly acmePrefix + token, the token in the base64url alphabet
// (RFC 8555 section 8.1), no query. Nothing else is ever forwarded.
func (r *request) isChallenge() bool {
	if string(r.method) != "GET" || !bytes.HasPrefix(r.pathQuery, []byte(acmePrefix)) {
		return false
	}
	tok := r.pathQuery[len(acmePrefix):]
	if len(tok) == 0 || len(tok) > maxTokenLen {
		return false
	}
	for _, c := range tok {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || isDigit(c) || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
