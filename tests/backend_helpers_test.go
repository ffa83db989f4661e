package tests

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/snitools/snitools/lib/handoff"
)

// The one configurable fake backend: what snilisten, snipeek and bindshim
// forward to in these tests. One implementation, so that "the backend
// saw X" means the same thing in every test; the presets below
// (serveHTTPS, unixBackend, tcpBackend, echoBackend, handoffHTTPS) are the shapes
// most tests want.

// backendMode is what a fake backend does with a connection once it has
// accepted it (and read its PROXY header, if it expects one).
type backendMode int

const (
	// modeHTTPS terminates TLS with the test PKI's server certificate
	// and answers every request with backendReply, followed by what
	// the PROXY header carried (authority=, proxy_version=) and
	// mode=handoff for a connection handed off.
	modeHTTPS backendMode = iota
	// modeEcho sends back every byte, the ClientHello included (it was
	// never consumed), and half-closes when the client does.
	modeEcho
	// modeRecord reads until the client half-closes (or
	// backendOpts.RecordFor passes) and records the bytes.
	modeRecord
)

// backendOpts configures a fake backend.
type backendOpts struct {
	Mode backendMode
	// Proxy requires a PROXY header, v1 or v2, before the stream
	// (go-proxyproto, policy REQUIRE): the address it announces is the
	// connection's remote address.
	Proxy bool
	// RecordFor bounds a modeRecord connection (10 s if zero).
	RecordFor time.Duration
}

// fakeBackend is a running fake backend.
type fakeBackend struct {
	Name string
	// Addr is where it listens: the socket path, or host:port.
	Addr string

	mu       sync.Mutex
	conns    []string // each connection's remote address, as accepted
	requests []string // each HTTPS request's remote address
	got      [][]byte // modeRecord: what each connection sent
}

// startBackend starts a fake backend called name on addr until the test
// ends. network is "unix" or "tcp" for a stream listener, "handoff" for a
// handoff socket (SOCK_SEQPACKET, lib/handoff: connections arrive as
// descriptors, with no header).
func startBackend(t testing.TB, network, addr, name string, o backendOpts) *fakeBackend {
	t.Helper()
	var ln net.Listener
	var err error
	if network == "handoff" {
		ln, err = handoff.Listen(addr)
	} else {
		ln, err = net.Listen(network, addr)
	}
	if err != nil {
		t.Fatalf("backend %s on %s %s: %v", name, network, addr, err)
	}
	if o.Proxy {
		ln = &proxyproto.Listener{Listener: ln, Policy: func(net.Addr) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }}
	}
	b := &fakeBackend{Name: name, Addr: addr}
	if o.Mode == modeHTTPS {
		b.serve(t, ln)
		return b
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				switch o.Mode {
				case modeEcho:
					io.Copy(c, c)
					closeWrite(c)
				case modeRecord:
					d := o.RecordFor
					if d == 0 {
						d = 10 * time.Second
					}
					c.SetDeadline(time.Now().Add(d))
					got, _ := io.ReadAll(c)
					b.mu.Lock()
					b.got = append(b.got, got)
					b.mu.Unlock()
				}
			}()
		}
	}()
	return b
}

// serve serves modeHTTPS on ln until the test ends. A PROXY header is
// read in http.Server's accept loop (ConnContext and ConnState ask for
// it), one connection at a time, as the separate fakes before this one
// did.
func (b *fakeBackend) serve(t testing.TB, ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.requests = append(b.requests, r.RemoteAddr)
		b.mu.Unlock()
		io.WriteString(w, backendReply(b.Name, r))
		if h, ok := r.Context().Value(headerKey{}).(*proxyproto.Header); ok && h != nil {
			tlvs, _ := h.TLVs()
			for _, tlv := range tlvs {
				if tlv.Type == proxyproto.PP2_TYPE_AUTHORITY {
					fmt.Fprintf(w, "authority=%s\n", tlv.Value)
				}
			}
			fmt.Fprintf(w, "proxy_version=%d\n", h.Version)
		}
		if r.Context().Value(handoffKey{}) != nil {
			fmt.Fprintf(w, "mode=handoff\n")
		}
	})
	srv := &http.Server{Handler: mux, TLSConfig: testPKI(t).ServerConfig(),
		ConnState: func(c net.Conn, st http.ConnState) {
			// Called as the connection is accepted, whether or
			// not a request follows; with a PROXY header, its
			// remote address is the one the header announced.
			if st == http.StateNew {
				b.mu.Lock()
				b.conns = append(b.conns, c.RemoteAddr().String())
				b.mu.Unlock()
			}
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				switch nc := tc.NetConn().(type) {
				case *proxyproto.Conn:
					return context.WithValue(ctx, headerKey{}, nc.ProxyHeader())
				case *handoff.Conn:
					return context.WithValue(ctx, handoffKey{}, true)
				}
			}
			return ctx
		}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
}

// Context keys for what an HTTPS request's connection carried.
type (
	headerKey  struct{}
	handoffKey struct{}
)

// Conns lists the remote address of each connection accepted (modeHTTPS),
// as its PROXY header announced it if one was expected.
func (b *fakeBackend) Conns() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.conns)
}

// Requests lists the remote address of each HTTPS request served.
func (b *fakeBackend) Requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.requests)
}

// Got lists what each modeRecord connection sent, in the order they
// ended.
func (b *fakeBackend) Got() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.got)
}

// serveHTTPS serves HTTPS (modeHTTPS) on a listener the test made, until
// the test ends.
func serveHTTPS(t testing.TB, ln net.Listener, name string) {
	t.Helper()
	(&fakeBackend{Name: name, Addr: ln.Addr().String()}).serve(t, ln)
}

// unixBackend serves HTTPS on the socket dir/name. With proxyHeader, the
// listener expects a PROXY header first (go-proxyproto) and the reply
// shows the address and the authority TLV it carried.
func unixBackend(t testing.TB, dir, name string, proxyHeader bool) string {
	t.Helper()
	return startBackend(t, "unix", filepath.Join(dir, name), name, backendOpts{Proxy: proxyHeader}).Addr
}

// tcpBackend serves HTTPS on addr (inside a namespace), answering
// backendReply; with proxyHeader it requires a PROXY header first.
func tcpBackend(t testing.TB, addr, name string, proxyHeader bool) {
	t.Helper()
	startBackend(t, "tcp", addr, name, backendOpts{Proxy: proxyHeader})
}

// echoBackend accepts raw (non-TLS) connections on dir/name and echoes
// every byte, the ClientHello included, half-closing when the client does.
func echoBackend(t testing.TB, dir, name string) {
	t.Helper()
	startBackend(t, "unix", filepath.Join(dir, name), name, backendOpts{Mode: modeEcho})
}

// handoffHTTPS serves HTTPS on a handoff socket dir/name: Go's http.Server
// adopts handoff with one line, the listener. Its replies end in
// mode=handoff.
func handoffHTTPS(t testing.TB, dir, name string) {
	t.Helper()
	startBackend(t, "handoff", filepath.Join(dir, name), name, backendOpts{})
}
