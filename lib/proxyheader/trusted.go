package proxyheader

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Trusted is the set of networks whose connections must begin with a
// PROXY header: the load balancers in front. It is a repeatable flag
// (-accept-proxy); a bare address means that one address.
type Trusted []netip.Prefix

// String implements flag.Value.
func (t *Trusted) String() string {
	s := make([]string, len(*t))
	for i, p := range *t {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Set implements flag.Value.
func (t *Trusted) Set(cidr string) error {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		a, aerr := netip.ParseAddr(cidr)
		if aerr != nil {
			return fmt.Errorf("%q is neither a CIDR nor an address", cidr)
		}
		p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	}
	*t = append(*t, p.Masked())
	return nil
}

// Contains reports whether a connection from a comes from a trusted front.
func (t Trusted) Contains(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok || len(t) == 0 {
		return false
	}
	ip, _ := netip.AddrFromSlice(ta.IP)
	ip = ip.Unmap()
	for _, p := range t {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
