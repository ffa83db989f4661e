package quicflow

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// TestQuicGoThroughTable relays real QUIC connections through a Table, as
// snilisten will: a quic-go client connects, by way of a UDP socket of the
// test read as in Example, to two quic-go servers chosen by the server
// name of its hello (X25519MLKEM768, so the hello spans two datagrams
// that must both be replayed). Each server writes its name on a stream:
// the client must read the one it asked for, over a handshake completed
// through the relay. Nothing reaches the client but what a backend sent.
func TestQuicGoThroughTable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	names := []string{"a.example.test", "b.example.test"}
	backends := map[string]string{}
	for _, name := range names {
		ln, err := quicgo.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t, name)}, NextProtos: []string{"test"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		backends[name] = ln.Addr().String()
		go func() {
			for {
				conn, err := ln.Accept(ctx)
				if err != nil {
					return
				}
				go func() {
					s, err := conn.OpenStream()
					if err == nil {
						s.Write([]byte(name))
						s.Close()
					}
				}()
			}
		}()
	}

	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var (
		mu       sync.Mutex
		table    = New(Config{})
		verdicts = map[Verdict]int{}
		toClient int // datagrams sent to clients, all from backends
		conns    []net.Conn
		wg       sync.WaitGroup
	)
	defer wg.Wait()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	defer pc.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			mu.Lock()
			r := table.Handle(time.Now(), from, buf[:n])
			verdicts[r.Verdict]++
			switch r.Verdict {
			case Route:
				backend, err := net.Dial("udp", backends[r.ServerName])
				if err != nil {
					table.Close(from)
					break
				}
				conns = append(conns, backend)
				for _, d := range r.Datagrams {
					backend.Write(d)
				}
				late, _ := table.Routed(time.Now(), from, backend)
				for _, d := range late {
					backend.Write(d)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					b := make([]byte, 65536)
					for {
						n, err := backend.Read(b)
						if err != nil {
							return
						}
						mu.Lock()
						table.Touch(time.Now(), from)
						toClient++
						mu.Unlock()
						if _, err := pc.WriteToUDPAddrPort(b[:n], from); err != nil {
							return
						}
					}
				}()
			case Forward:
				r.Backend.(net.Conn).Write(buf[:n])
			}
			mu.Unlock()
		}
	}()

	for _, name := range names {
		conf := &tls.Config{ServerName: name, InsecureSkipVerify: true, NextProtos: []string{"test"},
			CurvePreferences: []tls.CurveID{tls.X25519MLKEM768}}
		conn, err := quicgo.DialAddr(ctx, pc.LocalAddr().String(), conf, nil)
		if err != nil {
			t.Fatalf("%s: dial through the table: %v", name, err)
		}
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := io.ReadAll(s)
		if err != nil || string(got) != name {
			t.Errorf("asked for %s, served by %q (%v)", name, got, err)
		}
		if cs := conn.ConnectionState().TLS; len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].Subject.CommonName != name {
			t.Errorf("asked for %s, handshake with another certificate", name)
		}
		conn.CloseWithError(0, "")
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("verdicts %v, %d datagrams to clients, stats %+v", verdicts, toClient, table.Stats())
	if verdicts[Route] != len(names) || verdicts[Wait] < len(names) || verdicts[Forward] == 0 {
		t.Errorf("verdicts %v: want %d Route, a Wait before each (two-datagram hellos) and Forward", verdicts, len(names))
	}
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
