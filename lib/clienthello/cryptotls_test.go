package clienthello

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// This file holds the way other Go SNI proxies read a ClientHello: run
// crypto/tls's server handshake over a connection that only reads, capture
// ClientHelloInfo in GetConfigForClient and abort there. The fuzz target
// uses it as an independent oracle, the benchmarks as the baseline.

// readOnlyConn is a net.Conn that reads from r and refuses to write, so
// that the aborted handshake cannot answer the client.
type readOnlyConn struct{ r io.Reader }

func (c readOnlyConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c readOnlyConn) Write(p []byte) (int, error)        { return 0, io.ErrClosedPipe }
func (c readOnlyConn) Close() error                       { return nil }
func (c readOnlyConn) LocalAddr() net.Addr                { return nil }
func (c readOnlyConn) RemoteAddr() net.Addr               { return nil }
func (c readOnlyConn) SetDeadline(t time.Time) error      { return nil }
func (c readOnlyConn) SetReadDeadline(t time.Time) error  { return nil }
func (c readOnlyConn) SetWriteDeadline(t time.Time) error { return nil }

var errHelloCaptured = errors.New("ClientHello captured")

// cryptoTLSHello reads one ClientHello from r with crypto/tls. It returns
// nil if crypto/tls did not get as far as GetConfigForClient.
func cryptoTLSHello(r io.Reader) (*tls.ClientHelloInfo, error) {
	var hello *tls.ClientHelloInfo
	err := tls.Server(readOnlyConn{r}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hello = h
			return nil, errHelloCaptured
		},
	}).Handshake()
	if hello == nil {
		return nil, err
	}
	return hello, nil
}

// cryptoTLSPeek is the crypto/tls-based peek: it records the bytes the
// handshake read so that they can be replayed to the backend.
func cryptoTLSPeek(r io.Reader, recorded *bytes.Buffer) (*tls.ClientHelloInfo, error) {
	return cryptoTLSHello(io.TeeReader(r, recorded))
}
