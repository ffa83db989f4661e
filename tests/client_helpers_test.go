package tests

// Clients for the commands under test: TLS and HTTPS requests with a
// given SNI, raw bytes (hand-built ClientHellos, PROXY headers), and
// connections from a chosen source address inside a namespace.

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// httpsGet makes one GET request to url through a TLS connection to addr
// with the given SNI (whatever the URL's host says), and returns the body.
func httpsGet(t testing.TB, addr, sni, path string) (string, error) {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   testPKI(t).ClientConfig(sni),
		DialContext:       nil,
		DisableKeepAlives: true,
	}
	tr.Dial = func(network, _ string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	resp, err := client.Get("https://" + sni + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// tlsDial completes a TLS handshake with sni through addr.
func tlsDial(t testing.TB, addr, sni string) (*tls.Conn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	cfg := testPKI(t).ClientConfig(sni)
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// sendRaw connects to addr, writes payload and returns everything the
// server sent until it closed (or 5 seconds passed).
func sendRaw(t testing.TB, addr string, payload []byte) ([]byte, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(payload); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

// getFrom makes one HTTPS request for sni through addr from the local
// address src (any if empty), offering alpn if given.
func getFrom(t *testing.T, src, addr, sni string, alpn ...string) (string, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	cfg := testPKI(t).ClientConfig(sni)
	if len(alpn) > 0 {
		cfg.NextProtos = alpn
	}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
	b, err := io.ReadAll(c)
	return string(b), err
}

// dialFrom connects to addr from the local address src.
func dialFrom(t testing.TB, src, addr string) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("connect from %s to %s: %v", src, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawFrom connects to addr from src, writes payload and returns what the
// server sent until it closed (5 seconds at most).
func rawFrom(t testing.TB, src, addr string, payload []byte) []byte {
	t.Helper()
	c := dialFrom(t, src, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if len(payload) > 0 {
		if _, err := c.Write(payload); err != nil {
			t.Fatalf("write to %s: %v", addr, err)
		}
	}
	reply, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("read from %s: %v (want the connection closed)", addr, err)
	}
	return reply
}

// isReset reports whether err is the kernel's reset of a connection.
func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "connection reset") }

// proxyHeaderBytes formats a PROXY header of the given version claiming
// that the connection comes from src and was made to dst.
func proxyHeaderBytes(t testing.TB, version byte, src, dst string) []byte {
	t.Helper()
	s, err := net.ResolveTCPAddr("tcp", src)
	if err != nil {
		t.Fatal(err)
	}
	d, err := net.ResolveTCPAddr("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proxyproto.HeaderProxyFromAddrs(version, s, d).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// alertOf returns the TLS alert description in a server's reply, or -1.
func alertOf(reply []byte) int {
	if len(reply) >= 7 && reply[0] == 21 && reply[3] == 0 && reply[4] == 2 {
		return int(reply[6])
	}
	return -1
}
