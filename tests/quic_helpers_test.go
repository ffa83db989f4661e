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
// server saw.
func h3Backend(t testing.TB, addr, name string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("h3 backend %s: %v", addr, err)
	}
	tc := testPKI(t).ServerConfig()
	tc.NextProtos = []string{http3.NextProtoH3}
	srv := &http3.Server{
		TLSConfig: http3.ConfigureTLSConfig(tc),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "backend=%s remote=%s", name, r.RemoteAddr)
		}),
	}
	go srv.Serve(pc)
	t.Cleanup(func() { srv.Close(); pc.Close() })
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

// h3Get makes one HTTP/3 request for https://sni/ to the UDP address
// to, from the address from ("" for any), with quic-go's client and its
// default (post-quantum, multi-datagram) ClientHello.
func h3Get(t testing.TB, from, to, sni string, timeout time.Duration) (h3Result, error) {
	t.Helper()
	var laddr *net.UDPAddr
	if from != "" {
		laddr = &net.UDPAddr{IP: net.ParseIP(from)}
	}
	raddr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		return h3Result{}, err
	}
	uc, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		return h3Result{}, err
	}
	cc := &countingConn{uc: uc}
	tr := &quic.Transport{Conn: cc}
	defer tr.Close()
	tc := testPKI(t).ClientConfig(sni)
	tc.NextProtos = []string{http3.NextProtoH3}
	rt := &http3.Transport{
		TLSClientConfig: tc,
		QUICConfig:      &quic.Config{HandshakeIdleTimeout: timeout},
		Dial: func(ctx context.Context, _ string, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
			return tr.DialEarly(ctx, raddr, tlsConf, conf)
		},
	}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+sni+"/", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return h3Result{Initials: cc.sentBeforeAnswer.Load()}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return h3Result{Body: string(body), Initials: cc.sentBeforeAnswer.Load(), Local: uc.LocalAddr().String()}, err
}

// udpAddrOf strips the "udp:" that snilisten logs before a UDP address.
func udpAddrOf(s *snilisten) string { return strings.TrimPrefix(s.Addr, "udp:") }
