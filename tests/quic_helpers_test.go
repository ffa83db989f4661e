package tests

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// h3Backend serves HTTP/3 on addr (UDP) with the test certificate: every
// answer is "backend=NAME remote=ADDR", ADDR being the client address the
// server saw. It returns a function that kills the server: its socket
// closes without a word to its clients, as when the process dies.
func h3Backend(t testing.TB, addr, name string) (kill func()) {
	t.Helper()
	return serveH3(t, addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend=%s remote=%s", name, r.RemoteAddr)
	}))
}

// serveH3 serves h with quic-go's HTTP/3 server on addr (UDP) and the
// test certificate until the test ends, and returns a function that
// closes its socket without a word to its clients.
func serveH3(t testing.TB, addr string, h http.Handler) (kill func()) {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("h3 backend %s: %v", addr, err)
	}
	tc := testPKI(t).ServerConfig()
	tc.NextProtos = []string{http3.NextProtoH3}
	srv := &http3.Server{TLSConfig: http3.ConfigureTLSConfig(tc), Handler: h}
	go srv.Serve(pc)
	t.Cleanup(func() { srv.Close(); pc.Close() })
	return func() { pc.Close() }
}

// countingConn is the client's UDP socket, connected to the address it
// sends to, so that the kernel drops any answer from another address (as
// a NAT between a real client and the server would): it counts the
// datagrams sent before the first one received.
// It has only net.PacketConn's methods, so that quic-go uses nothing
// else of the socket (its sendmsg with an address, refused on a
// connected socket).
type countingConn struct {
	uc               *net.UDPConn
	sentBeforeAnswer atomic.Int64
	answered         atomic.Bool
}

func (c *countingConn) Close() error                       { return c.uc.Close() }
func (c *countingConn) LocalAddr() net.Addr                { return c.uc.LocalAddr() }
func (c *countingConn) SetDeadline(t time.Time) error      { return c.uc.SetDeadline(t) }
func (c *countingConn) SetReadDeadline(t time.Time) error  { return c.uc.SetReadDeadline(t) }
func (c *countingConn) SetWriteDeadline(t time.Time) error { return c.uc.SetWriteDeadline(t) }
func (c *countingConn) SetReadBuffer(n int) error          { return c.uc.SetReadBuffer(n) }
func (c *countingConn) SetWriteBuffer(n int) error         { return c.uc.SetWriteBuffer(n) }

func (c *countingConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	if !c.answered.Load() {
		c.sentBeforeAnswer.Add(1)
	}
	return c.uc.Write(b)
}

func (c *countingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, err := c.uc.Read(b)
	if err == nil {
		c.answered.Store(true)
	}
	return n, c.uc.RemoteAddr(), err
}

// h3Result is what h3Get learned.
type h3Result struct {
	Body string
	// Initials is the number of datagrams the client sent before the
	// first answer: its ClientHello's Initial packets.
	Initials int64
	// Local is the client's address.
	Local string
}

// h3Client is quic-go's HTTP/3 client with its default (post-quantum,
// multi-datagram) ClientHello, sending from its own UDP socket connected
// to one address. Its requests share one QUIC connection.
type h3Client struct {
	t     testing.TB
	sni   string
	cc    *countingConn
	tr    *quic.Transport
	rt    *http3.Transport
	local string
}

// newH3Client makes a client for https://sni/ at the UDP address to,
// from the address from ("" for any); timeout bounds the handshake.
func newH3Client(t testing.TB, from, to, sni string, timeout time.Duration) (*h3Client, error) {
	t.Helper()
	var laddr *net.UDPAddr
	if from != "" {
		laddr = &net.UDPAddr{IP: net.ParseIP(from)}
	}
	raddr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		return nil, err
	}
	uc, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		return nil, err
	}
	c := &h3Client{t: t, sni: sni, cc: &countingConn{uc: uc}, local: uc.LocalAddr().String()}
	c.tr = &quic.Transport{Conn: c.cc}
	tc := testPKI(t).ClientConfig(sni)
	tc.NextProtos = []string{http3.NextProtoH3}
	c.rt = &http3.Transport{
		TLSClientConfig: tc,
		QUICConfig:      &quic.Config{HandshakeIdleTimeout: timeout, MaxIdleTimeout: timeout},
		Dial: func(ctx context.Context, _ string, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
			return c.tr.DialEarly(ctx, raddr, tlsConf, conf)
		},
	}
	return c, nil
}

// Get requests path ("/" if none) and returns the body, waiting at most
// timeout.
func (c *h3Client) Get(timeout time.Duration, path ...string) (string, error) {
	p := "/"
	if len(path) > 0 {
		p = path[0]
	}
	return c.do(timeout, "GET", p, nil)
}

// Post sends body to path and returns the answer, waiting at most
// timeout.
func (c *h3Client) Post(timeout time.Duration, path string, body io.Reader) (string, error) {
	return c.do(timeout, "POST", path, body)
}

func (c *h3Client) do(timeout time.Duration, method, path string, body io.Reader) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, "https://"+c.sni+path, body)
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	return string(answer), err
}

func (c *h3Client) Close() {
	c.rt.Close()
	c.tr.Close()
}

// h3Get makes one HTTP/3 request for https://sni/ to the UDP address
// to, from the address from ("" for any), on a new QUIC connection.
func h3Get(t testing.TB, from, to, sni string, timeout time.Duration) (h3Result, error) {
	t.Helper()
	c, err := newH3Client(t, from, to, sni, timeout)
	if err != nil {
		return h3Result{}, err
	}
	defer c.Close()
	body, err := c.Get(timeout + 5*time.Second)
	return h3Result{Body: body, Initials: c.cc.sentBeforeAnswer.Load(), Local: c.local}, err
}

// udpAddrOf strips the "udp:" that snilisten logs before a UDP address.
func udpAddrOf(s *snilisten) string { return strings.TrimPrefix(s.Addr, "udp:") }
