package main

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// TestParseUDPTable reads ports and drops, IPv4 and IPv6, and skips the
// header: only sockets whose remote port is the backend's are
// snilisten's flows, not the backend's own socket bound to it.
func TestParseUDPTable(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:9C41 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1001 2 0000000000000000 0
  102: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1002 2 0000000000000000 0
  103: 0100007F:9C42 0100007F:1F91 01 00000000:00000000 00:00000000 00000000     0        0 1003 2 0000000000000000 17
  104: 0000000000000000FFFF00000100007F:9C43 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000 0 0 1004 2 0000000000000000 0
`
	want := []udpSocket{{0x9C41, 0x1F90, 0}, {0x1F90, 0, 0}, {0x9C42, 0x1F91, 17}, {0x9C43, 0x1F90, 0}}
	if got := parseUDPTable([]byte(table)); !slices.Equal(got, want) {
		t.Errorf("parseUDPTable = %v, want %v", got, want)
	}
}

func TestParseRcvbufErrors(t *testing.T) {
	snmp := `Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 100 2 5 90 7 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 9 0 0 0 0
`
	if n := parseRcvbufErrors([]byte(snmp)); n != 7 {
		t.Errorf("parseRcvbufErrors = %d, want 7", n)
	}
}

// TestQUICThroughSnilisten runs the QUIC row's command line (bin/snilisten)
// in front of the bench's HTTP/3 backend: a request and a bulk transfer go
// through it, a flow held open is one that udpFlowsTo counts, and once it
// is closed drainQUIC sees snilisten end it (what the CPU per flow waits
// for).
func TestQUICThroughSnilisten(t *testing.T) {
	bin, err := filepath.Abs("../bin/snilisten")
	if err != nil || !present(bin) {
		t.Skip("no bin/snilisten: run make all first")
	}
	dir := t.TempDir()
	pool, err := writeCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	go func() { t.Log(serveQUICBackend(dir)) }()
	var be *quicBackendInfo
	for i := 0; i < 1000 && be == nil; i++ {
		if b, err := os.ReadFile(filepath.Join(dir, "quic-backend.ready")); err == nil {
			addr := strings.TrimPrefix(strings.TrimSpace(string(b)), "udp=")
			be = &quicBackendInfo{addr: addr}
			_, port, _ := strings.Cut(addr, ":")
			if be.port, err = strconv.Atoi(port); err != nil {
				t.Fatalf("ready file %q: %v", b, err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if be == nil {
		t.Fatal("the HTTP/3 backend did not start")
	}
	e := &env{dir: dir, snilisten: bin, quic: be}
	b := &bench{env: e}
	b.quicTLS = &tls.Config{ServerName: sni, RootCAs: pool, MinVersion: tls.VersionTLS13, NextProtos: []string{http3.NextProtoH3}}
	b.h3 = &http3.Transport{}
	addr, err := freeUDPPort()
	if err != nil {
		t.Fatal(err)
	}
	p, err := quicRows[1].start(e, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	ctx := context.Background()
	tg := quicTarget{addr: addr, tls: b.quicTLS, h3: b.h3}
	if err := b.probeQUIC(ctx, p, tg); err != nil {
		t.Fatal(err)
	}
	got, err := quicBulk(ctx, tg, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got.datagrams < (1<<20)/1500 {
		t.Errorf("bulk of 1 MiB counted %d datagrams, want at least %d", got.datagrams, (1<<20)/1500)
	}

	res := &result{row: &quicRows[1]}
	if !b.drainQUIC(ctx, res, 0) {
		t.Fatalf("drainQUIC after the bulk transfer: %v", res.notes)
	}
	// A connection open (kept alive, should the machine stall) is a flow.
	conn, err := quic.DialAddr(ctx, addr, b.quicTLS, &quic.Config{KeepAlivePeriod: quicIdle / 5})
	if err != nil {
		t.Fatal(err)
	}
	if n := udpFlowsTo(be.port); n != 1 {
		t.Errorf("with one connection open, udpFlowsTo = %d, want 1", n)
	}
	conn.CloseWithError(0, "")
	if !b.drainQUIC(ctx, res, 0) {
		t.Errorf("drainQUIC: %v", res.notes)
	}
	if n := udpFlowsTo(be.port); n != 0 {
		t.Errorf("after drainQUIC, udpFlowsTo = %d, want 0", n)
	}
}
