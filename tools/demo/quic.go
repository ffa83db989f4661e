package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// demoQUIC starts an HTTP/3 server on a loopback UDP port, a second
// snilisten in tcp mode on another UDP port in front of it, asks for
// https://localhost/ over HTTP/3 through snilisten with quic-go's client,
// and shows snilisten's line for the flow.
func demoQUIC(cert tls.Certificate, caFile string) error {
	backend, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer backend.Close()
	srv := &http3.Server{
		TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "Hello over %s from the HTTP/3 server at %s: you are %s\n", r.Proto, backend.LocalAddr(), r.RemoteAddr)
		}),
	}
	go srv.Serve(backend)
	defer srv.Close()
	backendPort := strconv.Itoa(backend.LocalAddr().(*net.UDPAddr).Port)
	fmt.Printf("   an HTTP/3 server (quic-go) on udp %s\n", backend.LocalAddr())

	cmdline := []string{"bin/snilisten", "-listen", "udp:127.0.0.1:0", "-mode", "tcp", "-backend-cidr", "127.0.0.0/8", "-backend-port", backendPort}
	snilisten, lines, addr, err := startSnilisten(cmdline)
	if err != nil {
		return err
	}
	defer snilisten.Process.Kill()
	addr = strings.TrimPrefix(addr, "udp:")

	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) // loopback only
	if err != nil {
		return err
	}
	tr := &quic.Transport{Conn: client}
	defer tr.Close()
	rt := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			return tr.DialEarly(ctx, raddr, tc, qc)
		},
	}
	defer rt.Close()
	fmt.Printf("   GET https://localhost/ over HTTP/3, to snilisten at udp %s (quic-go's client)\n", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://localhost/", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("HTTP/3 through snilisten: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("     %s\n", strings.TrimSpace(string(body)))
	fmt.Printf("   (tcp mode: the server sees snilisten's address; in nat46 mode it would see the client's, embedded in IPv6)\n")
	rt.Close()

	// A QUIC flow has no visible end (its close is encrypted): it is
	// logged when it ends, here at the shutdown.
	snilisten.Process.Signal(syscall.SIGTERM)
	for l := range lines {
		fmt.Printf("   %s\n", l)
	}
	snilisten.Wait()
	return nil
}
