package dispatch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"

	"github.com/snitools/snitools/lib/backend"
	"github.com/snitools/snitools/lib/clienthello"
	"github.com/snitools/snitools/lib/handoff"
)

// These tests drive Server.Serve on a loopback listener with a fake
// backend.Dialer whose backends are socket pairs served by the test
// itself, so that they run without root, without bin/ and without a
// namespace. Every case runs on each path a connection can take (see the
// package doc): the general accept loop, the descriptor accept loop
// falling back to the general path, and the fast path with each of the
// dialer's descriptor forms. The outcome each path reports, and the bytes
// the client and the backend read, must be the same.

// wait bounds every wait of these tests; it is never reached unless
// something is broken.
const wait = 20 * time.Second

// A fakeBackend serves the far end of a backend connection.
type fakeBackend func(c net.Conn)

// fakeDialer connects a name to the fakeBackend registered for it, over
// a socket pair, or fails as errs says; handoffs name a handoff socket.
type fakeDialer struct {
	backends map[string]fakeBackend
	errs     map[string]error
	handoffs map[string]string // name -> path of a SOCK_SEQPACKET socket

	mu    sync.Mutex
	calls []string // the methods called, in order
}

func (d *fakeDialer) called(method string) {
	d.mu.Lock()
	d.calls = append(d.calls, method)
	d.mu.Unlock()
}

// Calls returns the methods called so far.
func (d *fakeDialer) Calls() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.calls, ",")
}

// pair connects to req's backend and returns the proxy's end as a
// non-blocking descriptor, as the descriptor dialers do.
func (d *fakeDialer) pair(req backend.Request) (int, backend.Conn, error) {
	if err, ok := d.errs[req.Name]; ok {
		return -1, backend.Conn{}, err
	}
	if path, ok := d.handoffs[req.Name]; ok {
		return -1, backend.Conn{Backend: path, Name: req.Name, Handoff: true}, nil
	}
	serve, ok := d.backends[req.Name]
	if !ok {
		return -1, backend.Conn{}, fmt.Errorf("%w: %q", backend.ErrUnknownName, req.Name)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, backend.Conn{}, fmt.Errorf("%w: socketpair: %w", backend.ErrRefused, err)
	}
	far, err := fileConn(fds[1], "backend")
	if err != nil {
		unix.Close(fds[0])
		return -1, backend.Conn{}, fmt.Errorf("%w: %w", backend.ErrRefused, err)
	}
	go serve(far)
	return fds[0], backend.Conn{Backend: "fake/" + req.Name, Name: req.Name}, nil
}

func (d *fakeDialer) Dial(ctx context.Context, req backend.Request) (backend.Conn, error) {
	d.called("Dial")
	fd, b, err := d.pair(req)
	if err != nil || b.Handoff {
		return b, err
	}
	if b.Conn, err = fileConn(fd, "proxy"); err != nil {
		return backend.Conn{}, fmt.Errorf("%w: %w", backend.ErrRefused, err)
	}
	return b, nil
}

// nowDialer adds the descriptor form that never waits (fast path in the
// accept loop).
type nowDialer struct{ *fakeDialer }

func (d nowDialer) DialNow(req backend.Request) (int, backend.Conn, error) {
	d.called("DialNow")
	return d.pair(req)
}

// fdDialer adds the descriptor form that may wait (fast path in a
// goroutine, as in tcp mode).
type fdDialer struct{ *fakeDialer }

func (d fdDialer) DialFD(ctx context.Context, req backend.Request) (int, backend.Conn, error) {
	d.called("DialFD")
	return d.pair(req)
}

var (
	_ backend.FDDialer     = nowDialer{}
	_ backend.ConnFDDialer = fdDialer{}
)

func fileConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return net.FileConn(f)
}

// A path is a way through the server, chosen by the listener's type and
// the dialer's forms.
type path struct {
	name   string
	plain  bool // hide the *net.TCPListener: Serve's general accept loop
	dialer func(*fakeDialer) backend.Dialer
	// dial is the dialer's method that connects a hello that arrived
	// whole with the connection: which one says the path taken.
	dial string
}

var paths = []path{
	{"general", true, func(d *fakeDialer) backend.Dialer { return d }, "Dial"},
	{"fdloop", false, func(d *fakeDialer) backend.Dialer { return d }, "Dial"},
	{"fast-now", false, func(d *fakeDialer) backend.Dialer { return nowDialer{d} }, "DialNow"},
	{"fast-fd", false, func(d *fakeDialer) backend.Dialer { return fdDialer{d} }, "DialFD"},
}

// observer collects what a Server tells its Observer.
type observer struct {
	mu       sync.Mutex
	accepted int
	reports  chan Report
}

func newObserver() *observer { return &observer{reports: make(chan Report, 64)} }

func (o *observer) Accepted() { o.mu.Lock(); o.accepted++; o.mu.Unlock() }

func (o *observer) Finished(r Report) { o.reports <- r }

func (o *observer) Accepts() int { o.mu.Lock(); defer o.mu.Unlock(); return o.accepted }

// next returns the next finished connection's report.
func (o *observer) next(t *testing.T) Report {
	t.Helper()
	select {
	case r := <-o.reports:
		return r
	case <-time.After(wait):
		t.Fatal("no connection finished")
		return Report{}
	}
}

// testServer is a Server serving a loopback listener on one path.
type testServer struct {
	*Server
	addr   string
	obs    *observer
	served chan error
}

func startServer(t *testing.T, p path, d *fakeDialer, cfg Config) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	obs := newObserver()
	cfg.Dialer, cfg.Observer = p.dialer(d), obs
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, addr: ln.Addr().String(), obs: obs, served: make(chan error, 1)}
	var l net.Listener = ln
	if p.plain {
		l = struct{ net.Listener }{ln}
	} else {
		// Serve sets TCP_DEFER_ACCEPT itself, but in its goroutine: the
		// test's client may connect before, and be accepted before its
		// hello arrives, which would send it down the general path.
		tuneListener(ln.(*net.TCPListener))
	}
	go func() { ts.served <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := recv(t, ts.served, "Serve's return"); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		s.Close()
	})
	return ts
}

// dial connects to the server and sends hello.
func (ts *testServer) dial(t *testing.T, hello []byte) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ts.addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	if hello != nil {
		if _, err := c.Write(hello); err != nil {
			t.Fatalf("send hello: %v", err)
		}
	}
	return c.(*net.TCPConn)
}

// recorded is what a recording backend read, sent when its client
// half-closed.
type recorded struct {
	got []byte
	err error
}

// recorder is a backend that reads everything up to the client's
// half-close, reports it on ch, then answers "reply <n>" and closes.
func recorder(ch chan<- recorded) fakeBackend {
	return func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		got, err := io.ReadAll(c)
		ch <- recorded{got, err}
		fmt.Fprintf(c, "reply %d", len(got))
	}
}

// helloFor returns the first flight of a real crypto/tls client asking
// for name, captured over a pipe.
func helloFor(t *testing.T, name string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		tls.Client(a, &tls.Config{ServerName: name, InsecureSkipVerify: true}).Handshake()
		a.Close()
	}()
	b.SetDeadline(time.Now().Add(wait))
	var hdr [5]byte
	if _, err := io.ReadFull(b, hdr[:]); err != nil {
		t.Fatalf("hello for %q: %v", name, err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatalf("hello for %q: %v", name, err)
	}
	return append(hdr[:], body...)
}

// capture returns a real client's hello from lib/clienthello's captures.
func capture(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "clienthello", "testdata", "captures", file))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readAlert reads what a refused client gets: exactly one alert record,
// then the end of the stream.
func readAlert(t *testing.T, c net.Conn) []byte {
	t.Helper()
	got, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("reading the refusal: %v (after %x)", err, got)
	}
	return got
}

// TestServeRelaysBothWays: a hello for a known name reaches its backend
// byte for byte, the backend's answer reaches the client, half-closes
// pass both ways, and the connection ends "ok" with its bytes counted,
// on every path.
func TestServeRelaysBothWays(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			ch := make(chan recorded, 1)
			hello := capture(t, "go-alpn.bin")
			name := "go-alpn.example.test"
			d := &fakeDialer{backends: map[string]fakeBackend{name: recorder(ch)}}
			ts := startServer(t, p, d, Config{})
			c := ts.dial(t, hello)
			c.Write([]byte("after the hello"))
			c.CloseWrite()
			reply, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("client read: %v", err)
			}
			rec := recv(t, ch, "the backend's bytes")
			want := append(append([]byte{}, hello...), "after the hello"...)
			if rec.err != nil || !bytes.Equal(rec.got, want) {
				t.Errorf("backend read %d bytes (%v), want the hello and the rest, %d bytes", len(rec.got), rec.err, len(want))
			}
			if string(reply) != fmt.Sprintf("reply %d", len(want)) {
				t.Errorf("client read %q", reply)
			}
			r := ts.obs.next(t)
			if r.Outcome != OutcomeOK || r.Up != int64(len(want)) || r.Down != int64(len(reply)) || r.Backend != name {
				t.Errorf("report %+v, want ok, up %d, down %d, backend %s", r, len(want), len(reply), name)
			}
			if n := ts.obs.Accepts(); n != 1 {
				t.Errorf("Accepted %d times, want 1", n)
			}
			if calls := d.Calls(); calls != p.dial {
				t.Errorf("dialer called %s, want %s", calls, p.dial)
			}
		})
	}
}

// TestServeRealTLS: a crypto/tls client completes a handshake with a
// crypto/tls backend through the server and exchanges data both ways.
func TestServeRealTLS(t *testing.T) {
	cert := selfSigned(t, "tls.example.test")
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			echo := func(c net.Conn) {
				defer c.Close()
				c.SetDeadline(time.Now().Add(wait))
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
				io.Copy(tc, tc)
				tc.CloseWrite()
			}
			ts := startServer(t, p, &fakeDialer{backends: map[string]fakeBackend{"tls.example.test": echo}}, Config{})
			raw := ts.dial(t, nil)
			c := tls.Client(raw, &tls.Config{ServerName: "TLS.example.test.", InsecureSkipVerify: true})
			msg := strings.Repeat("ping ", 10000)
			go func() { io.WriteString(c, msg); c.CloseWrite() }()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != msg {
				t.Errorf("echo: %d bytes back of %d, %v", len(got), len(msg), err)
			}
			if st := c.ConnectionState(); st.PeerCertificates[0].Subject.CommonName != "tls.example.test" {
				t.Errorf("served by %q", st.PeerCertificates[0].Subject.CommonName)
			}
			c.Close()
			if r := ts.obs.next(t); r.Outcome != OutcomeOK || r.Backend != "tls.example.test" || r.Up < int64(len(msg)) || r.Down < int64(len(msg)) {
				t.Errorf("report %+v", r)
			}
		})
	}
}

// TestServeRefusals: each hello that cannot be served gets the alert a
// TLS server would send, and its outcome, the same on every path; the
// backend is never reached except where the name was routed.
func TestServeRefusals(t *testing.T) {
	unrecognized := clienthello.AlertUnrecognizedName.Record()
	internal := clienthello.AlertInternalError.Record()
	for _, tt := range []struct {
		name         string
		hello        func(t *testing.T) []byte
		defaultHost  string
		outcome      Outcome
		alert        []byte // nil: relayed to the default backend
		wantBackend  string
		wantInHeader string
	}{
		{"no SNI", func(t *testing.T) []byte { return capture(t, "openssl-nosni.bin") }, "", OutcomeNoSNI, unrecognized[:], "", ""},
		{"no SNI with default", func(t *testing.T) []byte { return capture(t, "openssl-nosni.bin") }, "default.test", OutcomeOK, nil, "default.test", ""},
		{"invalid name", func(t *testing.T) []byte { return helloFor(t, "bad!name.test") }, "", OutcomeInvalidName, unrecognized[:], "", ""},
		{"invalid name with default", func(t *testing.T) []byte { return helloFor(t, "bad!name.test") }, "default.test", OutcomeOK, nil, "default.test", ""},
		{"unknown name", func(t *testing.T) []byte { return helloFor(t, "nobody.test") }, "", OutcomeUnknownName, unrecognized[:], "", ""},
		{"dial failure", func(t *testing.T) []byte { return helloFor(t, "down.test") }, "", OutcomeBackendError, internal[:], "", ""},
		{"outside the allowed networks", func(t *testing.T) []byte { return helloFor(t, "outside.test") }, "", OutcomeRefusedCIDR, unrecognized[:], "", ""},
	} {
		for _, p := range paths {
			t.Run(tt.name+"/"+p.name, func(t *testing.T) {
				ch := make(chan recorded, 1)
				d := &fakeDialer{
					backends: map[string]fakeBackend{"default.test": recorder(ch)},
					errs: map[string]error{
						"down.test":    fmt.Errorf("%w: connect: %w", backend.ErrRefused, syscall.ECONNREFUSED),
						"outside.test": fmt.Errorf("%w: 192.0.2.1", backend.ErrNotAllowed),
					},
				}
				ts := startServer(t, p, d, Config{DefaultHostname: tt.defaultHost})
				hello := tt.hello(t)
				c := ts.dial(t, hello)
				if tt.alert != nil {
					if got := readAlert(t, c); !bytes.Equal(got, tt.alert) {
						t.Errorf("client read %x, want the alert %x", got, tt.alert)
					}
				} else {
					c.CloseWrite()
					reply, _ := io.ReadAll(c)
					if rec := recv(t, ch, "the backend's bytes"); !bytes.Equal(rec.got, hello) || string(reply) != fmt.Sprintf("reply %d", len(hello)) {
						t.Errorf("default backend read %d bytes of %d, client %q", len(rec.got), len(hello), reply)
					}
				}
				c.Close()
				if r := ts.obs.next(t); r.Outcome != tt.outcome || r.Backend != tt.wantBackend {
					t.Errorf("report %+v, want %s, backend %q", r, tt.outcome, tt.wantBackend)
				}
			})
		}
	}
}

// TestServeProxyHeader: with -proxy-header 2 the backend reads a PROXY v2
// header naming the client's address and the server name, then the hello
// untouched; the general path writes it with go-proxyproto, the fast path
// in the same write as the hello.
func TestServeProxyHeader(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			ch := make(chan recorded, 1)
			name := "proxied.example.test"
			hello := helloFor(t, name)
			d := &fakeDialer{backends: map[string]fakeBackend{name: recorder(ch)}}
			ts := startServer(t, p, d, Config{ProxyHeader: 2})
			c := ts.dial(t, hello)
			c.CloseWrite()
			io.ReadAll(c)
			rec := recv(t, ch, "the backend's bytes")
			br := bufio.NewReader(bytes.NewReader(rec.got))
			h, err := proxyproto.Read(br)
			if err != nil {
				t.Fatalf("backend read no PROXY header: %v (%q)", err, rec.got[:min(len(rec.got), 32)])
			}
			if h.Version != 2 || h.SourceAddr.String() != c.LocalAddr().String() || h.DestinationAddr.String() != ts.addr {
				t.Errorf("header v%d %s -> %s, want v2 %s -> %s", h.Version, h.SourceAddr, h.DestinationAddr, c.LocalAddr(), ts.addr)
			}
			if tlvs, err := h.TLVs(); err != nil || len(tlvs) != 1 || tlvs[0].Type != proxyproto.PP2_TYPE_AUTHORITY || string(tlvs[0].Value) != name {
				t.Errorf("TLVs %v (%v), want authority %s", tlvs, err, name)
			}
			if rest, _ := io.ReadAll(br); !bytes.Equal(rest, hello) {
				t.Errorf("after the header %d bytes, want the hello's %d", len(rest), len(hello))
			}
			if r := ts.obs.next(t); r.Outcome != OutcomeOK || r.Up != int64(len(hello)) {
				t.Errorf("report %+v, want ok, up %d (the header not counted)", r, len(hello))
			}
			if calls := d.Calls(); calls != p.dial {
				t.Errorf("dialer called %s, want %s", calls, p.dial)
			}
		})
	}
}

// TestServeHandoff: a name whose backend takes the socket itself gets the
// client's TCP socket, the hello still unread in it, and the server
// forgets the connection (handoff).
func TestServeHandoff(t *testing.T) {
	for _, p := range paths {
		if p.name == "fast-fd" {
			// Only the unix dialer hands off, and it never waits
			// (FDDialer); ConnFDDialer's contract is a connected socket.
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "handoff.example.test")
			hl, err := handoff.Listen(sock)
			if err != nil {
				t.Fatal(err)
			}
			defer hl.Close()
			d := &fakeDialer{handoffs: map[string]string{"handoff.example.test": sock}}
			ts := startServer(t, p, d, Config{})
			hello := helloFor(t, "handoff.example.test")
			c := ts.dial(t, hello)
			got, err := hl.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			got.SetDeadline(time.Now().Add(wait))
			if sni, _ := handoff.SNI(got); sni != "handoff.example.test" || got.RemoteAddr().String() != c.LocalAddr().String() {
				t.Errorf("handed off: sni %q, peer %s; want %s", sni, got.RemoteAddr(), c.LocalAddr())
			}
			buf := make([]byte, len(hello))
			if _, err := io.ReadFull(got, buf); err != nil || !bytes.Equal(buf, hello) {
				t.Errorf("hello in the handed-off socket: %v", err)
			}
			io.WriteString(got, "from the new owner")
			got.Close()
			if b, _ := io.ReadAll(c); string(b) != "from the new owner" {
				t.Errorf("client read %q", b)
			}
			if r := ts.obs.next(t); r.Outcome != OutcomeHandoff || r.Backend != "handoff.example.test" {
				t.Errorf("report %+v", r)
			}
			if calls := d.Calls(); calls != p.dial {
				t.Errorf("dialer called %s, want %s", calls, p.dial)
			}
		})
	}
}

// holder is a backend that answers "hi" at once and then holds the
// connection until its client closes.
func holder(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	io.WriteString(c, "hi")
	io.Copy(io.Discard, c)
}

// TestServeShutdown: Shutdown closes the listener at once and waits for a
// relayed connection while its context lasts, and when the context ends
// cuts it: the client's stream ends, the outcome is "shutdown", and
// Serve returns ErrServerClosed.
func TestServeShutdown(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			ts := startServer(t, p, &fakeDialer{backends: map[string]fakeBackend{"held.test": holder}}, Config{})
			c := ts.dial(t, helloFor(t, "held.test"))
			hi := make([]byte, 2)
			if _, err := io.ReadFull(c, hi); err != nil {
				t.Fatalf("client read: %v", err)
			}
			ctx, cut := context.WithCancel(context.Background())
			shut := make(chan error, 1)
			go func() { shut <- ts.Shutdown(ctx) }()
			// The listener closes at once, which ends Serve.
			if err := recv(t, ts.served, "Serve's return"); !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v", err)
			}
			ts.served <- ErrServerClosed // for the cleanup
			select {
			case err := <-shut:
				t.Fatalf("Shutdown returned %v with a connection open", err)
			default:
			}
			if n := ts.Active(); n != 1 {
				t.Errorf("%d connections active, want the relayed one", n)
			}
			cut()
			if err := recv(t, shut, "Shutdown's return"); !errors.Is(err, context.Canceled) {
				t.Errorf("Shutdown returned %v, want context.Canceled", err)
			}
			if b, err := io.ReadAll(c); len(b) != 0 && err == nil {
				t.Errorf("client read %q after the cut", b)
			}
			if r := ts.obs.next(t); r.Outcome != OutcomeShutdown || r.Down != 2 {
				t.Errorf("report %+v, want shutdown, down 2", r)
			}
			if n := ts.Active(); n != 0 {
				t.Errorf("%d connections active after Shutdown", n)
			}
		})
	}
}

// TestServeAdmission: with one slot, a connection still waiting for its
// hello is evicted for one that came later; a client over its share is
// closed at once.
func TestServeAdmission(t *testing.T) {
	// TCP_DEFER_ACCEPT (descriptor loop) would keep a silent connection
	// from being accepted at all, so admission is tested on the general
	// loop, which both loops share (admitConn).
	p := paths[0]
	t.Run("evict", func(t *testing.T) {
		ch := make(chan recorded, 1)
		ts := startServer(t, p, &fakeDialer{backends: map[string]fakeBackend{"late.test": recorder(ch)}}, Config{MaxConns: 1})
		silent := ts.dial(t, nil)
		waitAccepts(t, ts, 1)
		late := ts.dial(t, helloFor(t, "late.test"))
		late.CloseWrite()
		if r := ts.obs.next(t); r.Outcome != OutcomeEvicted {
			t.Errorf("first report %+v, want evicted", r)
		}
		if b, err := io.ReadAll(silent); len(b) != 0 {
			t.Errorf("evicted client read %q, %v", b, err)
		}
		if b, _ := io.ReadAll(late); !strings.HasPrefix(string(b), "reply ") {
			t.Errorf("late client read %q", b)
		}
		recv(t, ch, "the backend's bytes")
		if r := ts.obs.next(t); r.Outcome != OutcomeOK {
			t.Errorf("second report %+v, want ok", r)
		}
	})
	t.Run("per client", func(t *testing.T) {
		ts := startServer(t, p, &fakeDialer{}, Config{MaxConnsPerClient: 1})
		first := ts.dial(t, nil)
		waitAccepts(t, ts, 1)
		second := ts.dial(t, nil)
		if b, err := io.ReadAll(second); len(b) != 0 {
			t.Errorf("client over its share read %q, %v", b, err)
		}
		if r := ts.obs.next(t); r.Outcome != OutcomeClientLimit {
			t.Errorf("report %+v, want client_limit", r)
		}
		first.Close()
		if r := ts.obs.next(t); r.Outcome != OutcomeClientClosed {
			t.Errorf("report %+v, want client_closed", r)
		}
	})
}

// recv receives from ch, or fails the test after the bound of every wait.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		var zero T
		t.Fatalf("no %s after %v", what, wait)
		return zero
	}
}

// waitAccepts waits, bounded, until the server has counted n accepted
// connections (and so registered them as peeking).
func waitAccepts(t *testing.T, ts *testServer, n int) {
	t.Helper()
	for range 20000 {
		if ts.obs.Accepts() >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d connections accepted, want %d", ts.obs.Accepts(), n)
}

// selfSigned makes a certificate for name.
func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
