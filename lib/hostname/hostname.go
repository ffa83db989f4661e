// Package hostname validates and canonicalizes the server names that TLS
// clients send, and lists the backend names a server name may be served by.
//
// Canonical is the only gate between bytes a client chose and a filesystem
// path under the socket directory, so it accepts a deliberately narrow
// alphabet: a name that passes can never contain a path separator, a dot
// segment, a NUL or anything outside printable ASCII.
package hostname

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// MaxLength is the longest canonical name in bytes, as in DNS (RFC 1035).
const MaxLength = 253

// maxLabel is the longest label in bytes, as in DNS.
const maxLabel = 63

// ErrInvalid is wrapped by every error Canonical returns.
var ErrInvalid = errors.New("invalid host name")

// Canonical returns the canonical form of a server name: lowercase, one
// trailing dot removed. It refuses anything that is not a DNS host name:
// empty labels (so "..", ".", "a..b"), labels longer than 63 bytes or
// starting or ending with a hyphen, names longer than 253 bytes, any byte
// other than ASCII letters, digits, hyphen and underscore, and IP literals
// (a name whose last label is all digits, or that parses as an address).
// Internationalized names arrive as punycode ("xn--..."), which passes.
func Canonical(name string) (string, error) {
	n := strings.TrimSuffix(name, ".")
	if n == "" {
		return "", fmt.Errorf("%w %q: empty", ErrInvalid, name)
	}
	if len(n) > MaxLength {
		return "", fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalid, len(n), MaxLength)
	}
	var b strings.Builder
	b.Grow(len(n))
	labelStart := 0
	for i := 0; i <= len(n); i++ {
		if i == len(n) || n[i] == '.' {
			if err := checkLabel(n[labelStart:i]); err != nil {
				return "", fmt.Errorf("%w %q: %v", ErrInvalid, name, err)
			}
			labelStart = i + 1
			if i < len(n) {
				b.WriteByte('.')
			}
			continue
		}
		c := n[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		case 'A' <= c && c <= 'Z':
			b.WriteByte(c + ('a' - 'A'))
		default:
			return "", fmt.Errorf("%w %q: byte 0x%02x at offset %d is not a letter, digit, '-' or '_'", ErrInvalid, name, c, i)
		}
	}
	canon := b.String()
	if _, err := netip.ParseAddr(canon); err == nil || allDigits(canon[strings.LastIndexByte(canon, '.')+1:]) {
		return "", fmt.Errorf("%w %q: an IP address literal, not a name", ErrInvalid, name)
	}
	return canon, nil
}

func checkLabel(l string) error {
	switch {
	case l == "":
		return errors.New("empty label")
	case len(l) > maxLabel:
		return fmt.Errorf("label of %d bytes, longer than %d", len(l), maxLabel)
	case l[0] == '-' || l[len(l)-1] == '-':
		return fmt.Errorf("label %q starts or ends with '-'", l)
	}
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// Candidates lists, in order of preference, the backend names that may serve
// a canonical name: the name itself, then the wildcard "_.<parent>" that
// stands for "*.<parent>". A single-label name has no wildcard, so that one
// socket cannot claim every top-level name.
func Candidates(canonical string) []string {
	dot := strings.IndexByte(canonical, '.')
	if dot < 0 {
		return []string{canonical}
	}
	return []string{canonical, "_" + canonical[dot:]}
}
