package clienthello

import "fmt"

// SSLv2-compatible ClientHello (RFC 5246, appendix E.2; RFC 6101,
// appendix E.1): a two-byte record header with the high bit set and a
// 15-bit length, then the message.
const (
	sslv2HeaderLen    = 2
	sslv2FixedLen     = 9 // msg_type, version, three lengths
	sslv2TypeHello    = 1
	sslv2SpecLen      = 3
	sslv2MaxChallenge = 32
	sslv2MinChallenge = 16
)

// isSSLv2Hello reports whether b begins like an SSLv2-format
// ClientHello: such a hello never begins with a TLS record type.
func isSSLv2Hello(b []byte) bool {
	return len(b) >= 3 && b[0]&0x80 != 0 && b[2] == sslv2TypeHello
}

// parseSSLv2 parses an SSLv2-compatible ClientHello. Old clients sent
// their hello in this format to reach SSLv2 and SSLv3/TLS servers alike;
// OpenSSL still answers one that offers TLS, so a proxy must pass it on
// rather than refuse it. It has no extensions, hence no server name: the
// caller routes it as a hello without one. A true SSLv2 hello (version
// 0x0002) is not TLS.
func parseSSLv2(b []byte, limit int) (Info, error) {
	n := int(b[0]&0x7f)<<8 | int(b[1])
	if len(b) >= 4 && b[3] != 3 {
		return Info{}, fmt.Errorf("%w: an SSLv2 ClientHello, version 0x%02x%02x (SSLv2 is not supported)", ErrNotTLS, b[3], b[min(4, len(b)-1)])
	}
	if n > limit {
		return Info{}, fmt.Errorf("%w: SSLv2-compatible hello of %d bytes, limit %d", ErrTooLarge, n, limit)
	}
	if len(b) < sslv2HeaderLen+n {
		return Info{}, fmt.Errorf("%w: SSLv2-compatible hello of %d bytes, have %d", ErrIncomplete, sslv2HeaderLen+n, len(b))
	}
	msg := b[sslv2HeaderLen : sslv2HeaderLen+n]
	if n < sslv2FixedLen {
		return Info{}, fmt.Errorf("%w: SSLv2-compatible hello of %d bytes", ErrMalformed, n)
	}
	specs := int(msg[3])<<8 | int(msg[4])
	session := int(msg[5])<<8 | int(msg[6])
	challenge := int(msg[7])<<8 | int(msg[8])
	switch {
	case specs == 0 || specs%sslv2SpecLen != 0:
		return Info{}, fmt.Errorf("%w: SSLv2-compatible hello with cipher specs of %d bytes", ErrMalformed, specs)
	case session > 32:
		return Info{}, fmt.Errorf("%w: SSLv2-compatible hello with a session ID of %d bytes", ErrMalformed, session)
	case challenge < sslv2MinChallenge || challenge > sslv2MaxChallenge:
		return Info{}, fmt.Errorf("%w: SSLv2-compatible hello with a challenge of %d bytes", ErrMalformed, challenge)
	case sslv2FixedLen+specs+session+challenge != n:
		return Info{}, fmt.Errorf("%w: SSLv2-compatible hello of %d bytes holds %d", ErrMalformed, n, sslv2FixedLen+specs+session+challenge)
	}
	info := Info{Length: sslv2HeaderLen + n, Records: 1, LegacyVersion: uint16(msg[1])<<8 | uint16(msg[2]), SSLv2: true}
	// Cipher specs 0x00XXXX are the TLS cipher suite XXXX; the others
	// are SSLv2's own.
	for s := msg[sslv2FixedLen : sslv2FixedLen+specs]; len(s) >= sslv2SpecLen; s = s[sslv2SpecLen:] {
		if s[0] == 0 {
			info.cipherSuites = append(info.cipherSuites, s[1], s[2])
		}
	}
	return info, nil
}
