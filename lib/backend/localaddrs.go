package backend

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// addrSet is a snapshot of this machine's interface addresses.
type addrSet struct {
	addrs []netip.Addr
	taken time.Time
}

func (s *addrSet) contains(a netip.Addr) bool { return slices.Contains(s.addrs, a) }

var (
	localMu   sync.Mutex
	localSnap *addrSet
)

// localAddrs returns the machine's interface addresses, refreshed at most
// every few seconds: it is consulted on every dial to a wildcard-listener
// port, and addresses change rarely.
func localAddrs() *addrSet {
	localMu.Lock()
	defer localMu.Unlock()
	if localSnap != nil && time.Since(localSnap.taken) < 5*time.Second {
		return localSnap
	}
	s := &addrSet{taken: time.Now()}
	if ifaddrs, err := net.InterfaceAddrs(); err == nil {
		for _, ia := range ifaddrs {
			if n, ok := ia.(*net.IPNet); ok {
				if a, ok := netip.AddrFromSlice(n.IP); ok {
					s.addrs = append(s.addrs, a.Unmap())
				}
			}
		}
	}
	localSnap = s
	return s
}
