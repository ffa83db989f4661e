package quicflow_test

import (
	"net"
	"time"

	"github.com/snitools/snitools/lib/quicflow"
)

// The read loop of a UDP listener: one goroutine owns the table (a
// caller whose backends answer from other goroutines, through Touch,
// locks it). lookup stands for choosing a backend by name and ALPN, as
// for TCP.
func Example() {
	var (
		pc     *net.UDPConn                                           // the listening socket
		lookup func(name string, alpn []string) (*net.UDPConn, error) // a connected socket to the backend
	)
	table := quicflow.New(quicflow.Config{})
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		now := time.Now()
		r := table.Handle(now, from, buf[:n])
		switch r.Verdict {
		case quicflow.Route:
			backend, err := lookup(r.ServerName, r.ALPN)
			if err != nil {
				table.Close(from) // nothing is sent to the client
				continue
			}
			for _, d := range r.Datagrams {
				backend.Write(d)
			}
			late, _ := table.Routed(now, from, backend)
			for _, d := range late {
				backend.Write(d)
			}
		case quicflow.Forward:
			r.Backend.(*net.UDPConn).Write(buf[:n])
		}
		// Drop and Wait: nothing to do; r.Err says why a datagram was
		// dropped, for a counter.
	}
}
