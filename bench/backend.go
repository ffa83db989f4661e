package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/snitools/snitools/lib/handoff"
)

// The backend is one TLS 1.3 HTTP/1.1 server reachable several ways, so
// every row ends at the same program:
//
//	tcp                127.0.0.1:PORT (written to DIR/backend.ready)
//	DIR/unix/NAME      a UNIX stream socket
//	DIR/unix-proxy/NAME a UNIX stream socket that requires a PROXY header
//	DIR/handoff/NAME   a SOCK_SEQPACKET socket receiving the client's TCP
//	                   socket itself (lib/handoff)
//
// It runs as a process of its own (the bench binary started again with
// -serve-backend DIR) so that its CPU is not mixed with the load
// generator's.

// maxBulk bounds /bulk?n=: no request makes the backend stream forever.
const maxBulk = 64 << 30

// backendHandler serves / (a tiny response) and /bulk?n=BYTES.
func backendHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/bulk", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > maxBulk {
			http.Error(w, "n: want 0 to 64 GiB", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		buf := make([]byte, 64<<10)
		for n > 0 {
			k := int(min(n, int64(len(buf))))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			n -= int64(k)
		}
	})
	return mux
}

// serveBackend is the backend process: it listens in dir, writes
// dir/backend.ready, and serves until killed.
func serveBackend(dir string) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		// No tickets: the client keeps no session cache anyway, and
		// every connection is a full handshake.
		SessionTicketsDisabled: true,
	}
	srv := &http.Server{
		Handler:   backendHandler(),
		TLSConfig: cfg,
		ErrorLog:  log.New(os.Stderr, "backend: ", 0),
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	lns := []net.Listener{tcp}
	for _, sub := range []string{"unix", "unix-proxy", "handoff"} {
		path := filepath.Join(dir, sub, sni)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("backend: %w", err)
		}
		var ln net.Listener
		switch sub {
		case "handoff":
			ln, err = handoff.Listen(path)
		default:
			ln, err = net.Listen("unix", path)
		}
		if err != nil {
			return fmt.Errorf("backend: %w", err)
		}
		if sub == "unix-proxy" {
			// The default policy requires the header: a connection
			// without one fails, so the row cannot pass by accident.
			ln = &proxyproto.Listener{Listener: ln, ReadHeaderTimeout: 10 * time.Second}
		}
		lns = append(lns, ln)
	}
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errs <- srv.Serve(tls.NewListener(ln, cfg)) }()
	}
	ready := filepath.Join(dir, "backend.ready")
	if err := os.WriteFile(ready+".tmp", []byte("tcp="+tcp.Addr().String()+"\n"), 0o644); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	if err := os.Rename(ready+".tmp", ready); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	return <-errs
}

// backendInfo is what the running backend reported.
type backendInfo struct {
	proc *proc
	tcp  string // host:port
	port int
}

// startBackend starts the backend process from the bench's own binary and
// waits until it is listening.
func startBackend(ctx context.Context, dir string) (*backendInfo, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start backend: %w", err)
	}
	p, err := startProc(dir, "backend", exe, "-serve-backend", dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if p.exited() {
			return nil, fmt.Errorf("start backend: exited: %s", p.logTail())
		}
		b, err := os.ReadFile(filepath.Join(dir, "backend.ready"))
		if err == nil {
			addr, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "tcp=")
			_, portStr, err := net.SplitHostPort(addr)
			port, err2 := strconv.Atoi(portStr)
			if !ok || err != nil || err2 != nil {
				p.stop()
				return nil, fmt.Errorf("start backend: bad ready file %q", b)
			}
			return &backendInfo{proc: p, tcp: addr, port: port}, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.stop()
	return nil, errors.New("start backend: not ready after 30s")
}

// writeCert writes a fresh self-signed ECDSA P-256 certificate for sni
// to dir/cert.pem and dir/key.pem and returns a pool that trusts it.
func writeCert(dir string) (*x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: sni},
		DNSNames:              []string{sni},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, fmt.Errorf("write certificate: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return pool, nil
}
