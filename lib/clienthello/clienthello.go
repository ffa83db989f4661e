// Package clienthello reads the first message a TLS client sends, the
// ClientHello, without decrypting anything: the server name (SNI), the
// offered application protocols (ALPN) and the protocol versions are all in
// clear text. It parses raw bytes as they come off the wire (Parse), or
// peeks them from a socket without consuming them (Peek), so that the
// untouched stream can afterwards be relayed, spliced or handed to another
// process.
//
// Parsing allocates nothing when the hello arrives in one TLS record, the
// usual case: Info's accessors read from the bytes that were parsed.
package clienthello

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// DefaultLimit is the largest ClientHello handshake message (its body,
// after the 4-byte header) accepted unless the caller asks otherwise: the
// largest its fields can make it (version 2, random 32, session ID 1+32,
// cipher suites 2+65534, compression methods 1+255, extensions 2+65535
// bytes), which is also OpenSSL's limit (CLIENT_HELLO_MAX_LENGTH). A proxy
// must not refuse what the server behind it would accept: crypto/tls's
// own limit (64 KiB) refuses legal hellos, such as one whose padding fills
// the extensions block and which offers a few more cipher suites.
// Post-quantum key shares make hellos of 1.5–2 KiB common; the memory of
// the rare large one is bounded per process (lib/sockpeek's Budget), not by
// refusing it.
const DefaultLimit = 131396

// Errors returned by Parse and Peek. Each is wrapped with detail; test with
// errors.Is.
var (
	// ErrIncomplete means the bytes so far are a valid beginning of a
	// ClientHello and more are needed.
	ErrIncomplete = errors.New("incomplete ClientHello")
	// ErrNotTLS means the bytes are not a TLS handshake at all (an HTTP
	// request, SSLv2, garbage). The peer does not speak TLS, so no alert
	// is worth sending.
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrMalformed means the bytes are TLS records but not a well-formed
	// ClientHello.
	ErrMalformed = errors.New("malformed ClientHello")
	// ErrUnexpectedMessage (an ErrMalformed) means a record other than a
	// handshake record (ChangeCipherSpec, alert, application data) came
	// before the hello was whole, or the first handshake message is not a
	// ClientHello: the TLS answer is unexpected_message.
	ErrUnexpectedMessage = fmt.Errorf("%w: unexpected message", ErrMalformed)
	// ErrRecordOverflow (an ErrMalformed) means a record of the hello is
	// longer than 2^14 bytes: the TLS answer is record_overflow.
	ErrRecordOverflow = fmt.Errorf("%w: record overflow", ErrMalformed)
	// ErrTooLarge means the hello is longer than the limit.
	ErrTooLarge = errors.New("ClientHello too large")
)

// TLS wire constants (RFC 8446).
const (
	recordTypeHandshake        = 22
	recordTypeChangeCipherSpec = 20
	recordTypeApplicationData  = 23
	recordHeaderLen            = 5
	maxPlaintext               = 16384 // largest record payload
	maxEmptyRecords            = 16    // as crypto/tls, tolerate a few empty records
	handshakeHeaderLen         = 4
	typeClientHello            = 1
	extServerName              = 0
	extALPN                    = 16
	extSupportedVersions       = 43
	extEncryptedHello          = 0xfe0d
	sniHostName                = 0
	smallExtensionsLength      = 32 // extensions tracked without allocation for duplicate checks
)

// Info is what a ClientHello says. Its accessors read from the bytes that
// were parsed: they stay valid only while those bytes are not modified.
type Info struct {
	// Length is the number of bytes the hello occupied on the wire,
	// record headers included.
	Length int
	// Records is the number of TLS records the hello was split into.
	Records int
	// LegacyVersion is the client_version field (0x0303 for TLS 1.2 and 1.3).
	LegacyVersion uint16
	// ECH reports whether an encrypted_client_hello extension is present:
	// the server name is then the public (outer) name.
	ECH bool
	// SSLv2 reports an SSLv2-compatible ClientHello (RFC 5246, appendix
	// E.2): a client offering TLS in the old format, which carries no
	// extensions and so no server name.
	SSLv2 bool

	serverName   []byte // host_name as sent, nil if absent
	alpn         []byte // protocol_name_list contents, nil if absent
	versions     []byte // supported_versions list contents, nil if absent
	cipherSuites []byte // cipher_suites contents
	extensions   []byte // extensions block contents
}

// ServerName returns the host name from the server_name extension exactly
// as sent (case and trailing dot preserved), or "" if there is none.
func (i *Info) ServerName() string { return string(i.serverName) }

// HasServerName reports whether the hello carries a host name.
func (i *Info) HasServerName() bool { return i.serverName != nil }

// ALPN returns the application protocols offered, in the client's order.
func (i *Info) ALPN() []string {
	var protos []string
	i.eachALPN(func(p []byte) { protos = append(protos, string(p)) })
	return protos
}

// SoleALPN returns the only application protocol offered, if exactly one was.
func (i *Info) SoleALPN() (string, bool) {
	n, last := 0, []byte(nil)
	i.eachALPN(func(p []byte) { n++; last = p })
	if n != 1 {
		return "", false
	}
	return string(last), true
}

func (i *Info) eachALPN(f func([]byte)) {
	s := cryptobyte.String(i.alpn)
	for !s.Empty() {
		var p cryptobyte.String
		if !s.ReadUint8LengthPrefixed(&p) {
			return // validated by Parse; unreachable
		}
		f(p)
	}
}

// SupportedVersions returns the versions from the supported_versions
// extension in the client's order, GREASE values left out. Without the
// extension (TLS 1.2 and older clients) LegacyVersion is the highest version
// the client speaks and it offers every version below it (RFC 5246,
// appendix E), so SupportedVersions returns the TLS versions from
// LegacyVersion down to TLS 1.0, as crypto/tls reports them; for a client
// older than TLS 1.0 it returns LegacyVersion alone.
func (i *Info) SupportedVersions() []uint16 {
	if i.versions == nil {
		var vs []uint16
		for v := uint16(0x0304); v >= 0x0301; v-- {
			if v <= i.LegacyVersion {
				vs = append(vs, v)
			}
		}
		if vs == nil {
			vs = []uint16{i.LegacyVersion}
		}
		return vs
	}
	return appendUint16s(nil, i.versions, true)
}

// CipherSuites returns the offered cipher suites in order, GREASE included.
func (i *Info) CipherSuites() []uint16 { return appendUint16s(nil, i.cipherSuites, false) }

// Extensions returns the extension types in the order sent, GREASE included.
func (i *Info) Extensions() []uint16 {
	var types []uint16
	s := cryptobyte.String(i.extensions)
	for !s.Empty() {
		var typ uint16
		var body cryptobyte.String
		if !s.ReadUint16(&typ) || !s.ReadUint16LengthPrefixed(&body) {
			break
		}
		types = append(types, typ)
	}
	return types
}

func appendUint16s(dst []uint16, b []byte, skipGREASE bool) []uint16 {
	for ; len(b) >= 2; b = b[2:] {
		v := uint16(b[0])<<8 | uint16(b[1])
		if skipGREASE && IsGREASE(v) {
			continue
		}
		dst = append(dst, v)
	}
	return dst
}

// IsGREASE reports whether v is one of the reserved GREASE values of
// RFC 8701 (0x0a0a, 0x1a1a, ..., 0xfafa), which clients sprinkle into lists
// to keep servers tolerant and which carry no meaning.
func IsGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

// VersionName returns a TLS protocol version's usual name ("TLS1.3"), or
// its hex value for anything else.
func VersionName(v uint16) string {
	switch v {
	case 0x0304:
		return "TLS1.3"
	case 0x0303:
		return "TLS1.2"
	case 0x0302:
		return "TLS1.1"
	case 0x0301:
		return "TLS1.0"
	case 0x0300:
		return "SSL3.0"
	}
	return fmt.Sprintf("0x%04x", v)
}

// Parse parses a ClientHello from b, the bytes a client sent, starting at
// the first TLS record header (or an SSLv2-compatible hello, see
// Info.SSLv2). It accepts hellos up to DefaultLimit.
func Parse(b []byte) (Info, error) { return ParseLimit(b, DefaultLimit) }

// ParseLimit is Parse with a limit on the handshake message's length.
//
// It returns an error wrapping ErrIncomplete when b is a valid but proper
// prefix of a hello (read more and call again), ErrNotTLS when b does not
// begin with a TLS handshake record, ErrTooLarge when the hello is longer
// than limit, ErrUnexpectedMessage or ErrRecordOverflow for those TLS
// errors, and ErrMalformed for anything else that is wrong. The hello
// may be split over any number of records, down to one byte each.
func ParseLimit(b []byte, limit int) (Info, error) {
	if isSSLv2Hello(b) {
		return parseSSLv2(b, limit)
	}
	msg, consumed, records, err := handshakeMessage(b, limit)
	if err != nil {
		return Info{}, err
	}
	info, err := parseHello(msg)
	info.Length, info.Records = consumed, records
	return info, err
}

// handshakeMessage reassembles the first handshake message from the TLS
// records at the start of b. When the message lies within the first record
// it is returned as a sub-slice of b; otherwise it is copied.
func handshakeMessage(b []byte, limit int) (msg []byte, consumed, records int, err error) {
	if err := sniff(b); err != nil {
		return nil, 0, 0, err
	}
	var assembled []byte // nil while the message lies in the first record
	msgLen := -1         // total message length once the header is known
	empty := 0
	for off := 0; ; {
		if len(b)-off < recordHeaderLen {
			return nil, 0, 0, fmt.Errorf("%w: %d bytes, need a record header at offset %d", ErrIncomplete, len(b), off)
		}
		typ, vers := b[off], uint16(b[off+1])<<8|uint16(b[off+2])
		n := int(b[off+3])<<8 | int(b[off+4])
		switch {
		case typ != recordTypeHandshake:
			return nil, 0, 0, fmt.Errorf("%w: record type %d at offset %d inside the hello", ErrUnexpectedMessage, typ, off)
		case vers >= 0x1000:
			return nil, 0, 0, fmt.Errorf("%w: record version 0x%04x at offset %d", ErrMalformed, vers, off)
		case n > maxPlaintext:
			return nil, 0, 0, fmt.Errorf("%w: record of %d bytes at offset %d exceeds %d", ErrRecordOverflow, n, off, maxPlaintext)
		case n == 0:
			if empty++; empty > maxEmptyRecords {
				return nil, 0, 0, fmt.Errorf("%w: more than %d empty records", ErrMalformed, maxEmptyRecords)
			}
		}
		off += recordHeaderLen
		if len(b)-off < n {
			// Refuse a hello that announces itself too large, or not a
			// hello at all, as soon as its header is here rather than
			// waiting for bytes that will never be accepted.
			if msgLen < 0 && len(assembled) == 0 && min(n, len(b)-off) >= handshakeHeaderLen {
				if _, err := messageLength(b[off:], limit); err != nil {
					return nil, 0, 0, err
				}
			}
			return nil, 0, 0, fmt.Errorf("%w: record at offset %d needs %d bytes, have %d", ErrIncomplete, off-recordHeaderLen, n, len(b)-off)
		}
		payload := b[off : off+n]
		off += n
		records++
		if records == 1 && len(payload) >= handshakeHeaderLen {
			// Common case: the header, maybe the whole message, in one record.
			if msgLen, err = messageLength(payload, limit); err != nil {
				return nil, 0, 0, err
			}
			if len(payload) >= msgLen {
				return payload[:msgLen], off, records, nil
			}
		}
		if assembled == nil {
			assembled = make([]byte, 0, 512)
		}
		assembled = append(assembled, payload...)
		if msgLen < 0 && len(assembled) >= handshakeHeaderLen {
			if msgLen, err = messageLength(assembled, limit); err != nil {
				return nil, 0, 0, err
			}
		}
		if msgLen >= 0 && len(assembled) >= msgLen {
			return assembled[:msgLen], off, records, nil
		}
	}
}

// sniff tells a TLS handshake apart from other things that arrive on port
// 443, to give a useful error for each.
func sniff(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: no bytes yet", ErrIncomplete)
	}
	switch c := b[0]; {
	case c == recordTypeHandshake:
		return nil
	case c == recordTypeChangeCipherSpec || c == recordTypeAlert || c == recordTypeApplicationData:
		// A TLS record, but not the handshake that must come first.
		if len(b) < 2 {
			return fmt.Errorf("%w: 1 byte of a record", ErrIncomplete)
		}
		if b[1] == 3 {
			return fmt.Errorf("%w: record type %d before any ClientHello", ErrUnexpectedMessage, c)
		}
		return fmt.Errorf("%w: first byte 0x%02x, then 0x%02x: not a TLS record", ErrNotTLS, c, b[1])
	case c&0x80 != 0 && len(b) >= 3 && b[2] == 1:
		return fmt.Errorf("%w: an SSLv2 ClientHello (SSLv2 is not supported)", ErrNotTLS)
	case 'A' <= c && c <= 'Z':
		return fmt.Errorf("%w: looks like plain text (%q), e.g. HTTP", ErrNotTLS, printable(b, 16))
	default:
		return fmt.Errorf("%w: first byte 0x%02x is not a handshake record", ErrNotTLS, c)
	}
}

func printable(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		out[i] = c
	}
	return string(out)
}

// messageLength checks the handshake header at the start of b and returns
// the length of the whole message, header included.
func messageLength(b []byte, limit int) (int, error) {
	if b[0] != typeClientHello {
		return 0, fmt.Errorf("%w: handshake message type %d, not ClientHello", ErrUnexpectedMessage, b[0])
	}
	n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	if n > limit {
		return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, limit)
	}
	return handshakeHeaderLen + n, nil
}

// parseHello parses a complete ClientHello handshake message. It checks
// what a server relying on the result needs and what crypto/tls also
// enforces, no less: that every length is consistent, that no extension
// appears twice, and that server_name, ALPN and supported_versions are
// well formed.
func parseHello(msg []byte) (Info, error) {
	var info Info
	s := cryptobyte.String(msg[handshakeHeaderLen:])
	var sessionID, suites, compression cryptobyte.String
	if !s.ReadUint16(&info.LegacyVersion) || !s.Skip(32) ||
		!s.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > 32 ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites)%2 != 0 ||
		!s.ReadUint8LengthPrefixed(&compression) {
		return Info{}, fmt.Errorf("%w: bad fixed fields", ErrMalformed)
	}
	info.cipherSuites = suites
	if s.Empty() {
		return info, nil // no extensions: a TLS 1.0-era hello
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return Info{}, fmt.Errorf("%w: bad extensions length", ErrMalformed)
	}
	info.extensions = exts

	var seenSmall [smallExtensionsLength]uint16
	var seenMany map[uint16]bool
	for count := 0; !exts.Empty(); count++ {
		var typ uint16
		var body cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&body) {
			return Info{}, fmt.Errorf("%w: truncated extension %d", ErrMalformed, count)
		}
		if duplicate(typ, count, &seenSmall, &seenMany) {
			return Info{}, fmt.Errorf("%w: extension 0x%04x appears twice", ErrMalformed, typ)
		}
		var err error
		switch typ {
		case extServerName:
			info.serverName, err = parseServerName(body)
		case extALPN:
			info.alpn, err = parseALPN(body)
		case extSupportedVersions:
			info.versions, err = parseVersions(body)
		case extEncryptedHello:
			info.ECH = true
		}
		if err != nil {
			return Info{}, err
		}
	}
	return info, nil
}

// duplicate records typ as seen and reports whether it was seen before,
// without allocating for the usual few dozen extensions.
func duplicate(typ uint16, count int, small *[smallExtensionsLength]uint16, many *map[uint16]bool) bool {
	if count < len(small) {
		for _, t := range small[:count] {
			if t == typ {
				return true
			}
		}
		small[count] = typ
		return false
	}
	if *many == nil {
		*many = make(map[uint16]bool, 2*len(small))
		for _, t := range small {
			(*many)[t] = true
		}
	}
	if (*many)[typ] {
		return true
	}
	(*many)[typ] = true
	return false
}

// parseServerName parses the server_name extension (RFC 6066, section 3).
// Entries of unknown name types are skipped, as crypto/tls does; a second
// host_name entry is an error. An empty host name is returned as such
// (empty, not nil): OpenSSL accepts it, crypto/tls does not, and what it
// means is for the caller to decide.
func parseServerName(body cryptobyte.String) ([]byte, error) {
	var list cryptobyte.String
	if !body.ReadUint16LengthPrefixed(&list) || list.Empty() || !body.Empty() {
		return nil, fmt.Errorf("%w: bad server_name list", ErrMalformed)
	}
	var name []byte
	for !list.Empty() {
		var typ uint8
		var entry cryptobyte.String
		if !list.ReadUint8(&typ) || !list.ReadUint16LengthPrefixed(&entry) {
			return nil, fmt.Errorf("%w: bad server_name entry", ErrMalformed)
		}
		if typ != sniHostName {
			continue
		}
		if name != nil {
			return nil, fmt.Errorf("%w: two host names in server_name", ErrMalformed)
		}
		name = entry[:len(entry):len(entry)] // not nil when empty
	}
	return name, nil
}

// parseALPN parses the application_layer_protocol_negotiation extension
// (RFC 7301, section 3.1) and returns the protocol list's contents.
func parseALPN(body cryptobyte.String) ([]byte, error) {
	var list cryptobyte.String
	if !body.ReadUint16LengthPrefixed(&list) || list.Empty() || !body.Empty() {
		return nil, fmt.Errorf("%w: bad ALPN list", ErrMalformed)
	}
	for rest := list; !rest.Empty(); {
		var proto cryptobyte.String
		if !rest.ReadUint8LengthPrefixed(&proto) || proto.Empty() {
			return nil, fmt.Errorf("%w: bad ALPN protocol name", ErrMalformed)
		}
	}
	return list, nil
}

// parseVersions parses the supported_versions extension (RFC 8446,
// section 4.2.1) and returns the version list's contents.
func parseVersions(body cryptobyte.String) ([]byte, error) {
	var list cryptobyte.String
	if !body.ReadUint8LengthPrefixed(&list) || list.Empty() || len(list)%2 != 0 || !body.Empty() {
		return nil, fmt.Errorf("%w: bad supported_versions list", ErrMalformed)
	}
	return list, nil
}
