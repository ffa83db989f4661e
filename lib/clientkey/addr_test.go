package clientkey

import (
	"net"
	"net/netip"
	"testing"
)

// TestOfAddr checks that OfAddr gives the key Of gives for the same
// address.
func TestOfAddr(t *testing.T) {
	for _, s := range []string{"192.0.2.7", "::ffff:192.0.2.7", "2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:3::1", "::1"} {
		ip := netip.MustParseAddr(s)
		want, ok := Of(&net.TCPAddr{IP: net.ParseIP(s), Port: 1})
		if got := OfAddr(ip); !ok || got != want {
			t.Errorf("OfAddr(%s) = %s, Of gives %s", s, got, want)
		}
	}
}
