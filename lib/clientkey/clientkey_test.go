package clientkey

import (
	"net"
	"testing"
)

func TestOf(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string // "" for not counted
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7").To4(), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), Port: 1}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::1"), Port: 1}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1"), Port: 1}, "2001:db8:1:3::"},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 1}, "::"},
		{&net.UnixAddr{Name: "/run/x", Net: "unix"}, ""},
		{(*net.TCPAddr)(nil), ""},
		{&net.TCPAddr{}, ""},
		{nil, ""},
	} {
		k, ok := Of(tc.addr)
		got := ""
		if ok {
			got = k.String()
		}
		if got != tc.want {
			t.Errorf("Of(%v) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}
