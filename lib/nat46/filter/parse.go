package filter

// The parsers work on byte slices so that the filter never converts a
// candidate to a string (an allocation per candidate): they accept exactly
// what netip.ParseAddr accepts for an IPv4 address and for an IPv6 address
// without a zone, which FuzzParse checks.

// hexValue maps a hex digit to its value and any other byte to 0xff.
var hexValue = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c >= '0' && c <= '9':
			t[c] = uint8(c - '0')
		case c >= 'a' && c <= 'f':
			t[c] = uint8(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			t[c] = uint8(c - 'A' + 10)
		default:
			t[c] = 0xff
		}
	}
	return t
}()

// parse4 parses a dotted-quad IPv4 address: four decimal fields of at most
// 255, without leading zeros (which some parsers read as octal).
func parse4(s []byte) (ip [4]byte, ok bool) {
	field, val, digits := 0, 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			if digits == 1 && val == 0 {
				return ip, false // leading zero
			}
			val = val*10 + int(c-'0')
			if val > 255 {
				return ip, false
			}
			digits++
		case c == '.':
			if digits == 0 || field == 3 {
				return ip, false
			}
			ip[field] = byte(val)
			field, val, digits = field+1, 0, 0
		default:
			return ip, false
		}
	}
	if field != 3 || digits == 0 {
		return ip, false
	}
	ip[3] = byte(val)
	return ip, true
}

// parse6 parses an IPv6 address without a zone, in any RFC 4291 text form:
// up to eight groups of at most four hex digits, at most one "::", and
// optionally a dotted-quad IPv4 address for the last 32 bits.
func parse6(s []byte) (ip [16]byte, ok bool) {
	ellipsis := -1 // byte position of "::" in ip, or -1
	if len(s) >= 2 && s[0] == ':' && s[1] == ':' {
		ellipsis = 0
		s = s[2:]
		if len(s) == 0 {
			return ip, true // "::"
		}
	}
	i := 0
	for i < 16 {
		off, acc := 0, uint32(0)
		for ; off < len(s); off++ {
			v := hexValue[s[off]]
			if v > 0xf {
				break
			}
			if off > 3 {
				return ip, false // more than four hex digits
			}
			acc = acc<<4 | uint32(v)
		}
		if off == 0 {
			return ip, false // empty group
		}
		if off < len(s) && s[off] == '.' {
			// The trailing IPv4 address replaces the last two groups.
			if ellipsis < 0 && i != 12 || i+4 > 16 {
				return ip, false
			}
			b4, ok := parse4(s)
			if !ok {
				return ip, false
			}
			copy(ip[i:], b4[:])
			i += 4
			s = nil
			break
		}
		ip[i] = byte(acc >> 8)
		ip[i+1] = byte(acc)
		i += 2
		s = s[off:]
		if len(s) == 0 {
			break
		}
		if s[0] != ':' || len(s) == 1 {
			return ip, false
		}
		s = s[1:]
		if s[0] == ':' {
			if ellipsis >= 0 {
				return ip, false // second "::"
			}
			ellipsis = i
			s = s[1:]
			if len(s) == 0 {
				break
			}
		}
	}
	if len(s) != 0 {
		return ip, false // trailing garbage or too many groups
	}
	if i < 16 {
		if ellipsis < 0 {
			return ip, false // too short
		}
		n := 16 - i
		for j := i - 1; j >= ellipsis; j-- {
			ip[j+n] = ip[j]
		}
		clear(ip[ellipsis : ellipsis+n])
	} else if ellipsis >= 0 {
		return ip, false // "::" must stand for at least one group
	}
	return ip, true
}
