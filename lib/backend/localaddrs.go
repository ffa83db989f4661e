package backend

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// localAddrs caches this machine's interface addresses. It is consulted on
// dials that a wildcard listener could loop back to; addresses change
// rarely, so a snapshot a few seconds old is good enough.
type localAddrs struct {
	mu    sync.Mutex
	addrs []netip.Addr
	taken time.Time
}

const localAddrsMaxAge = 5 * time.Second

func (l *localAddrs) contains(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.taken) > localAddrsMaxAge {
		l.addrs, l.taken = l.addrs[:0], time.Now()
		if ifaddrs, err := net.InterfaceAddrs(); err == nil {
			for _, ia := range ifaddrs {
				if n, ok := ia.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok {
						l.addrs = append(l.addrs, ip.Unmap())
					}
				}
			}
		}
	}
	return slices.Contains(l.addrs, a)
}
