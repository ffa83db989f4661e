package quic

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/snitools/snitools/lib/quic/quictest"
)

var updateCaptures = flag.Bool("update-captures", false, "rewrite testdata/*.hex from a live quic-go client (see testdata/README.md)")

// quicGoHello makes a real QUIC client (quic-go) connect to a UDP socket
// of the test, which reads its datagrams into an Assembler until the
// ClientHello is whole; nothing is ever answered. It returns the
// datagrams read, in order, and the Assembler.
func quicGoHello(t *testing.T, v quicgo.Version, serverName string, alpn []string, curves []tls.CurveID) ([][]byte, *Assembler) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		conf := &tls.Config{
			ServerName:       serverName,
			NextProtos:       alpn,
			CurvePreferences: curves,
		}
		conn, err := quicgo.DialAddr(ctx, pc.LocalAddr().String(), conf, &quicgo.Config{Versions: []quicgo.Version{v}})
		if err == nil {
			conn.CloseWithError(0, "")
		}
	}()
	var a Assembler
	var datagrams [][]byte
	buf := make([]byte, 65536)
	// Generous: the client sends its whole hello at once, and resends
	// it on its probe timeout if anything were lost.
	pc.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(datagrams), err)
		}
		d := slices.Clone(buf[:n])
		datagrams = append(datagrams, d)
		done, err := a.AddDatagram(d)
		if err != nil {
			t.Fatalf("datagram %d (%d bytes): %v", len(datagrams), n, err)
		}
		if done {
			return datagrams, &a
		}
	}
}

var quicGoCases = []struct {
	file       string
	version    quicgo.Version
	serverName string
	alpn       []string
	curves     []tls.CurveID
	datagrams  int // at least
}{
	{"quicgo-v1-h3.hex", quicgo.Version1, "quic-v1.example.test", []string{"h3"}, []tls.CurveID{tls.X25519MLKEM768, tls.X25519}, 2},
	{"quicgo-v2-h3.hex", quicgo.Version2, "quic-v2.example.test", []string{"h3", "h3-29"}, []tls.CurveID{tls.X25519MLKEM768, tls.X25519}, 2},
	{"quicgo-v1-x25519.hex", quicgo.Version1, "classic.example.test", []string{"hq-interop"}, []tls.CurveID{tls.X25519}, 1},
}

// TestQuicGoClient reads the hello of a live quic-go client, QUIC v1 and
// v2, with an X25519MLKEM768 key share: the hello (about 1.5 KiB) spans
// two Initial datagrams; and with X25519 alone, in one. With -update-captures it rewrites the captures
// in testdata.
func TestQuicGoClient(t *testing.T) {
	for _, tc := range quicGoCases {
		t.Run(tc.file, func(t *testing.T) {
			datagrams, a := quicGoHello(t, tc.version, tc.serverName, tc.alpn, tc.curves)
			info, err := a.ClientHello()
			if err != nil {
				t.Fatalf("ClientHello: %v", err)
			}
			if info.ServerName() != tc.serverName || !slices.Equal(info.ALPN(), tc.alpn) {
				t.Errorf("server name %q, ALPN %q; want %q, %q", info.ServerName(), info.ALPN(), tc.serverName, tc.alpn)
			}
			if len(datagrams) < tc.datagrams {
				t.Errorf("hello of %d bytes in %d datagram(s), want at least %d", info.Length, len(datagrams), tc.datagrams)
			}
			if a.v.number != uint32(tc.version) {
				t.Errorf("version 0x%08x, want 0x%08x", a.v.number, uint32(tc.version))
			}
			t.Logf("%s: %d-byte hello in %d datagrams of %d bytes", tc.file, info.Length, len(datagrams), lens(datagrams))
			if *updateCaptures {
				writeCapture(t, tc.file, datagrams, info.Length, tc.serverName, tc.alpn)
			}
		})
	}
}

func lens(ds [][]byte) []int {
	var n []int
	for _, d := range ds {
		n = append(n, len(d))
	}
	return n
}

// A capture is the datagrams a real client sent until its hello was
// whole: testdata/NAME.hex, one datagram in hex per line, lines starting
// with # are comments; testdata/manifest.tsv says what the hello says.
type capture struct {
	file       string
	version    uint32
	serverName string
	alpn       []string
	helloLen   int
	datagrams  [][]byte
}

func writeCapture(t *testing.T, file string, datagrams [][]byte, helloLen int, serverName string, alpn []string) {
	var b strings.Builder
	fmt.Fprintf(&b, "# quic-go v0.65.0 client, %s, ALPN %s: %d datagrams until the %d-byte hello was whole\n",
		serverName, strings.Join(alpn, ","), len(datagrams), helloLen)
	for _, d := range datagrams {
		b.WriteString(hex.EncodeToString(d))
		b.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join("testdata", file), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote testdata/%s; manifest.tsv line:\n%s\t0x%08x\t%s\t%s\t%d\t%d", file, file,
		versionOf(datagrams[0]), serverName, strings.Join(alpn, ","), len(datagrams), helloLen)
}

func versionOf(d []byte) uint32 {
	return uint32(d[1])<<24 | uint32(d[2])<<16 | uint32(d[3])<<8 | uint32(d[4])
}

// loadCaptures reads testdata/manifest.tsv and the captures it names
// (quictest, shared with the packages built on this one).
func loadCaptures(tb testing.TB) []capture {
	tb.Helper()
	var caps []capture
	for _, c := range quictest.Captures(tb) {
		caps = append(caps, capture{file: c.File, version: c.Version, serverName: c.ServerName,
			alpn: c.ALPN, helloLen: c.HelloLen, datagrams: c.Datagrams})
	}
	return caps
}
