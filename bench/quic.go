package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The QUIC part (issue #22) measures snilisten routing HTTP/3 on UDP
// against the same HTTP/3 server reached straight, in the same run: bulk
// throughput and snilisten's CPU per GiB relayed, the datagrams relayed a
// second during that transfer, and new flows a second with snilisten's
// CPU per new flow. It has rows and a table of its own because a QUIC
// flow is not a TCP connection: its figures are not columns of the TCP
// table, and nginx, HAProxy and sniproxy do not route QUIC by name.

// phaseQUIC is the -phases name of the QUIC part.
const phaseQUIC = "quic"

// Metric names of the QUIC rows, besides mP50, mP99, mBulk, mPairBulk and
// mCPUGiB, which mean the same as for TCP.
const (
	mFlowRate       = "flows/s"
	mCPUFlow        = "CPU s/10k flows"
	mDgramRate      = "datagrams/s"
	mBackendCPUFlow = "backend CPU s/10k flows"
	mPairFlowRate   = "paired direct flows/s"
	mPairDgramRate  = "paired direct datagrams/s"
)

// quicIdle is snilisten's -quic-idle-timeout in the bench. The default
// (5 minutes) would end the flows of a phase long after it: a second
// makes ending them, which is part of what a flow costs (as closing is
// part of a TCP connection's cost), happen inside the measurement. It is
// below the backend's QUIC idle timeout, which an operator must not do,
// but every bench connection is either busy or closed.
const quicIdle = time.Second

// tcpPhases reports whether any phase of the TCP rows runs: with
// -phases quic alone, the TCP rows are not even started.
func (c config) tcpPhases() bool {
	return c.phases[phaseConn] || c.phases[phaseBulk] || c.phases[phaseIdle]
}

// quicPart is the bench's state for the QUIC rows.
type quicPart struct {
	quic    []*result // the QUIC rows' results, the direct row first; none if the part does not run
	quicTLS *tls.Config
	quicKex string           // the key exchange the QUIC handshakes negotiated
	h3      *http3.Transport // the HTTP/3 client's settings (its defaults)
}

// quicRows are the QUIC part's rows, the direct one first. A snilisten
// row's start gets a UDP address; the backend is e.quic.
var quicRows = []row{
	{name: "quic direct"},
	{
		name:    "quic snilisten tcp",
		needs:   []string{"snilisten"},
		version: []string{"snilisten", "-version"},
		start: func(e *env, addr string) (*proc, error) {
			return e.run("snilisten", e.snilisten, "-listen", "udp:"+addr, "-q",
				"-mode", "tcp", "-backend-cidr", "127.0.0.0/8", "-backend-port", strconv.Itoa(e.quic.port),
				// All the load comes from one address, far above the
				// per-address defaults of 32 new flows a second and
				// 256 flows at once.
				"-quic-flow-rate", "0", "-quic-max-flows-per-client", "0",
				"-quic-idle-timeout", quicIdle.String())
		},
	},
}

// setupQUIC prepares the QUIC rows that -rows selects (with their
// -baseline twins) and starts the HTTP/3 backend. Without the quic phase,
// or with no snilisten row selected, it does nothing: the direct row
// alone compares nothing. The returned function stops the backend.
func (b *bench) setupQUIC(ctx context.Context) (stop func(), err error) {
	stop = func() {}
	if !b.cfg.phases[phaseQUIC] {
		return stop, nil
	}
	measured := slices.Clone(quicRows)
	if b.cfg.baseline != "" {
		for _, r := range quicRows {
			if slices.Contains(r.needs, "snilisten") {
				measured = append(measured, baselineTwin(r))
			}
		}
	}
	var results []*result
	proxies := 0
	for i := range measured {
		r := &measured[i]
		if r.start != nil && !b.cfg.rows.MatchString(r.name) {
			continue
		}
		res := &result{row: r, vals: map[string][]float64{}}
		for _, m := range []string{mFlowRate, mP50, mP99, mBulk, mDgramRate, mCPUFlow, mCPUGiB, mBackendCPUFlow, mPairFlowRate, mPairBulk, mPairDgramRate} {
			res.vals[m] = slices.Repeat([]float64{math.NaN()}, b.cfg.rounds)
		}
		if r.start != nil {
			bin := b.cfg.snilisten
			if r.twinOf != "" {
				bin = b.cfg.baseline
			}
			if !present(bin) {
				res.skipped = fmt.Sprintf("%s not found", bin)
			} else {
				res.version = versionOf(r.version, bin)
				proxies++
			}
		}
		results = append(results, res)
	}
	if proxies == 0 {
		return stop, nil
	}
	be, err := startQUICBackend(ctx, b.env.dir)
	if err != nil {
		return stop, err
	}
	b.env.quic = be
	b.quic = results
	b.quicTLS = b.tls.Clone()
	b.quicTLS.NextProtos = []string{http3.NextProtoH3}
	b.h3 = &http3.Transport{}
	return be.proc.stop, nil
}

// quicRound measures every QUIC row once: the direct row first, the
// others rotated round by round, as the TCP rows are.
func (b *bench) quicRound(ctx context.Context, round int) {
	n := len(b.quic)
	for k := range n {
		if ctx.Err() != nil {
			return
		}
		res := b.quic[0]
		if k > 0 {
			res = b.quic[1+(k-1+round)%(n-1)]
		}
		if res.skipped != "" {
			continue
		}
		t0 := time.Now()
		took := b.runQUICRow(ctx, res, round)
		fmt.Fprintf(os.Stderr, "bench: round %d/%d: %s: %v (%s)\n", round+1, b.cfg.rounds, res.row.name,
			time.Since(t0).Round(100*time.Millisecond), strings.Join(took, ", "))
	}
}

// runQUICRow starts the row's proxy once for both of its phases.
func (b *bench) runQUICRow(ctx context.Context, res *result, round int) (took []string) {
	timed := func(name string, f func()) {
		t0 := time.Now()
		f()
		took = append(took, fmt.Sprintf("%s %v", name, time.Since(t0).Round(100*time.Millisecond)))
	}
	var p *proc
	var t quicTarget
	var err error
	timed("start", func() { p, t, err = b.launchQUIC(ctx, res) })
	if err != nil {
		b.failed(res, round, err)
		return took
	}
	if p != nil {
		defer timed("stop", p.stop)
	}
	timed("flows", func() { b.flowPhase(ctx, res, round, p, t) })
	timed(phaseBulk, func() { b.quicBulkPhase(ctx, res, round, p, t) })
	return took
}

// launchQUIC starts the row's proxy on a free loopback UDP port and waits
// until a request through it succeeds. The direct row returns the
// backend.
func (b *bench) launchQUIC(ctx context.Context, res *result) (*proc, quicTarget, error) {
	return launchRow(res, b.env, b.quicDirect(), freeUDPPort,
		func(addr string) quicTarget { return quicTarget{addr: addr, tls: b.quicTLS, h3: b.h3} },
		func(p *proc, t quicTarget) error { return b.probeQUIC(ctx, p, t) })
}

// probeQUIC waits up to 10 s for one request through t to succeed, and
// gives up at once if the proxy exits. It records the key exchange.
func (b *bench) probeQUIC(ctx context.Context, p *proc, t quicTarget) error {
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited with status %d: %s", p.name, p.exitCode(), p.logTail())
		}
		var fl flowInfo
		if fl, err = t.get(ctx, "/", 2*time.Second, make([]byte, 512)); err == nil {
			b.quicKex = fl.kex
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p != nil && p.exited() {
		return fmt.Errorf("%s exited with status %d: %s", p.name, p.exitCode(), p.logTail())
	}
	return fmt.Errorf("not ready after 10s: %w", err)
}

// port is the target's UDP port.
func (t quicTarget) port() int {
	_, p, _ := net.SplitHostPort(t.addr)
	n, _ := strconv.Atoi(p)
	return n
}

func (b *bench) quicDirect() quicTarget {
	return quicTarget{addr: b.env.quic.addr, tls: b.quicTLS, h3: b.h3}
}

// flowPhase measures new flows: each is a new UDP socket and a new QUIC
// connection doing one small request. For a row with a proxy, the slices
// alternate with as many straight to the backend (D P P D), as TCP's
// connection mode does. snilisten's CPU is taken from before the first
// slice to the end of the last flow (quicIdle after its last datagram):
// it has nothing else to do meanwhile, and a flow's end is part of its
// cost.
func (b *bench) flowPhase(ctx context.Context, res *result, round int, p *proc, t quicTarget) {
	c, d := b.cfg.clients, b.cfg.duration
	connMode(ctx, t, c, b.cfg.warmup, maxConnsPerPhase)
	if p != nil && !b.drainQUIC(ctx, res, round) {
		return
	}
	var st, ref connStats
	cpu0, be0 := cpuOf(p), cpuOf(b.env.quic.proc)
	if p == nil {
		st = connMode(ctx, t, c, d, maxConnsPerPhase)
		ref = st
		res.set(mBackendCPUFlow, round, (cpuOf(b.env.quic.proc)-be0)/float64(max(st.conns, 1))*10000)
	} else {
		rec := b.startPerf(res, "quic-flows", round, p)
		for i := range pairSlices {
			paired := func() { ref.add(connMode(ctx, b.quicDirect(), c, d/pairSlices, maxConnsPerPhase)) }
			measure := func() { st.add(connMode(ctx, t, c, d/pairSlices, maxConnsPerPhase)) }
			if i%2 == 0 {
				paired()
				measure()
			} else {
				measure()
				paired()
			}
		}
		b.drainQUIC(ctx, res, round)
		rec.stop(ctx, res)
	}
	cpu := cpuOf(p) - cpu0
	slices.Sort(st.lat)
	if st.errs > 0 {
		res.note("round %d: %d of %d flows failed, first: %v", round+1, st.errs, st.errs+st.conns, st.err)
	}
	if ref.errs > 0 && p != nil {
		res.note("round %d: %d of %d flows straight to the backend failed, first: %v", round+1, ref.errs, ref.errs+ref.conns, ref.err)
	}
	if st.conns == 0 || ref.conns == 0 {
		return
	}
	res.set(mFlowRate, round, st.rate())
	res.set(mPairFlowRate, round, ref.rate())
	res.set(mP50, round, float64(percentile(st.lat, 50))/1e6)
	res.set(mP99, round, float64(percentile(st.lat, 99))/1e6)
	res.set(mCPUFlow, round, cpu/float64(st.conns)*10000)
}

// quicBulkPhase moves -bulk MiB down one HTTP/3 stream through the row
// and, for a row with a proxy, as much straight from the backend next to
// it (before it in even rounds, after it in odd ones), for the ratio.
func (b *bench) quicBulkPhase(ctx context.Context, res *result, round int, p *proc, t quicTarget) {
	var ref bulkResult
	paired := func() {
		if p == nil || ctx.Err() != nil {
			return
		}
		var err error
		if ref, err = quicBulk(ctx, b.quicDirect(), b.cfg.bulk); err != nil {
			res.note("round %d: bulk straight to the backend: %v", round+1, err)
		}
	}
	if round%2 == 0 {
		paired()
	}
	rec := b.startPerf(res, "quic-bulk", round, p)
	cpu0, drops0, listen0 := cpuOf(p), rcvbufErrors(), udpDrops(t.port(), 0)
	got, err := quicBulk(ctx, t, b.cfg.bulk)
	// Read while the transfer's flow is still open (quicIdle).
	cpu1, drops1, listen1, flow := cpuOf(p), rcvbufErrors(), udpDrops(t.port(), 0), udpDrops(0, b.env.quic.port)
	rec.stop(ctx, res)
	if round%2 == 1 {
		paired()
	}
	if err != nil {
		res.note("round %d: bulk: %v", round+1, err)
		return
	}
	if drops1 > drops0 {
		where := ""
		if p != nil {
			where = fmt.Sprintf(": %d at snilisten's socket for the clients, %d at its socket to the backend", listen1-listen0, flow)
		}
		res.note("round %d: bulk: the machine dropped %d UDP datagrams for want of receive buffer space meanwhile (RcvbufErrors in /proc/net/snmp)%s", round+1, drops1-drops0, where)
	}
	if p == nil {
		ref = got
	}
	mb := float64(b.cfg.bulk) / 1e6
	res.set(mBulk, round, mb/got.took.Seconds())
	res.set(mDgramRate, round, float64(got.datagrams)/got.took.Seconds())
	if ref.took > 0 {
		res.set(mPairBulk, round, mb/ref.took.Seconds())
		res.set(mPairDgramRate, round, float64(ref.datagrams)/ref.took.Seconds())
	}
	res.set(mCPUGiB, round, (cpu1-cpu0)/float64(b.cfg.bulk)*(1<<30))
}

// drainQUIC waits until snilisten has ended every flow, which it does
// quicIdle after a flow's last datagram, at its next once-a-second sweep.
// It reports false, with a note, if some are still open after 10 s more.
func (b *bench) drainQUIC(ctx context.Context, res *result, round int) bool {
	deadline := time.Now().Add(quicIdle + 10*time.Second)
	n := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if n = udpFlowsTo(b.env.quic.port); n == 0 {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.note("round %d: %d QUIC flows still open %v after their last use", round+1, n, quicIdle+10*time.Second)
	return false
}

// udpFlowsTo counts the UDP sockets on the machine connected to a
// loopback port: at the backend's port, snilisten's flows, each of which
// has one (the backend's own socket and the bench's clients are not
// connected).
func udpFlowsTo(port int) int {
	n := 0
	for _, s := range udpSockets() {
		if s.remotePort == port {
			n++
		}
	}
	return n
}

// udpDrops sums the datagrams the kernel dropped (a full receive buffer)
// at the UDP sockets bound to localPort or connected to remotePort (0:
// neither).
func udpDrops(localPort, remotePort int) uint64 {
	var n uint64
	for _, s := range udpSockets() {
		if localPort != 0 && s.localPort == localPort || remotePort != 0 && s.remotePort == remotePort {
			n += s.drops
		}
	}
	return n
}

// A udpSocket is a line of /proc/net/udp or udp6.
type udpSocket struct {
	localPort, remotePort int
	drops                 uint64
}

func udpSockets() []udpSocket {
	var socks []udpSocket
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		if b, err := os.ReadFile(f); err == nil {
			socks = append(socks, parseUDPTable(b)...)
		}
	}
	return socks
}

// parseUDPTable reads the ports (of HEXADDR:HEXPORT, the second and third
// fields) and the drops (the last field) of each socket in
// /proc/net/udp{,6}; it skips the header.
func parseUDPTable(table []byte) []udpSocket {
	var socks []udpSocket
	port := func(addr string) (int, bool) {
		i := strings.LastIndexByte(addr, ':')
		p, err := strconv.ParseUint(addr[i+1:], 16, 16)
		return int(p), i >= 0 && err == nil
	}
	for line := range strings.Lines(string(table)) {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		local, ok1 := port(f[1])
		remote, ok2 := port(f[2])
		drops, err := strconv.ParseUint(f[len(f)-1], 10, 64)
		if ok1 && ok2 && err == nil {
			socks = append(socks, udpSocket{localPort: local, remotePort: remote, drops: drops})
		}
	}
	return socks
}

// rcvbufErrors is the machine's count of UDP datagrams dropped for want
// of receive buffer space (Udp: RcvbufErrors in /proc/net/snmp), or 0.
// It counts every program's, so it only hints at where a slow transfer
// lost datagrams.
func rcvbufErrors() uint64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	return parseRcvbufErrors(b)
}

func parseRcvbufErrors(snmp []byte) uint64 {
	var header []string
	for line := range strings.Lines(string(snmp)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "Udp:" {
			continue
		}
		if header == nil {
			header = f
			continue
		}
		if i := slices.Index(header, "RcvbufErrors"); i > 0 && i < len(f) {
			n, _ := strconv.ParseUint(f[i], 10, 64)
			return n
		}
		return 0
	}
	return 0
}

// freeUDPPort returns a loopback address with a UDP port nothing is
// bound to now.
func freeUDPPort() (string, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free UDP port: %w", err)
	}
	defer pc.Close()
	return pc.LocalAddr().String(), nil
}

// A quicTarget is where the QUIC load generator sends: the HTTP/3 backend
// itself or snilisten in front of it.
type quicTarget struct {
	addr string // 127.0.0.1:PORT
	tls  *tls.Config
	h3   *http3.Transport // only its settings: each flow has its own ClientConn
}

// flowInfo is what one request learned of its connection.
type flowInfo struct {
	body  int64
	stats quic.ConnectionStats
	kex   string
}

// get makes one QUIC connection from a new UDP socket (a new flow for
// snilisten, which knows flows by their addresses and ports), sends one
// HTTP/3 GET path, reads the whole body into buf-sized reads and closes.
// The client is quic-go's with its defaults: its post-quantum
// ClientHello (X25519MLKEM768) spans two Initial datagrams.
func (t quicTarget) get(ctx context.Context, path string, timeout time.Duration, buf []byte) (flowInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := quic.DialAddr(ctx, t.addr, t.tls, nil)
	if err != nil {
		return flowInfo{}, fmt.Errorf("QUIC handshake with %s: %w", t.addr, err)
	}
	defer conn.CloseWithError(0, "")
	info := flowInfo{kex: conn.ConnectionState().TLS.CurveID.String()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+sni+path, nil)
	if err != nil {
		return info, err
	}
	resp, err := t.h3.NewClientConn(conn).RoundTrip(req)
	if err != nil {
		return info, fmt.Errorf("GET %s via %s: %w", path, t.addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return info, fmt.Errorf("GET %s via %s: %s", path, t.addr, resp.Status)
	}
	info.body, err = io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, buf)
	info.stats = conn.ConnectionStats()
	if err != nil {
		return info, fmt.Errorf("GET %s via %s: after %d bytes: %w", path, t.addr, info.body, err)
	}
	if info.body != resp.ContentLength {
		return info, fmt.Errorf("GET %s via %s: %d bytes, want %d", path, t.addr, info.body, resp.ContentLength)
	}
	return info, nil
}

// bulkResult is one bulk transfer: its time from the dial to the last
// byte, and the datagrams the client sent and received meanwhile.
type bulkResult struct {
	took      time.Duration
	datagrams uint64
}

// quicBulk downloads n bytes down one HTTP/3 stream. The datagrams are
// the QUIC packets the client's connection sent and received (quic-go's
// ConnectionStats): in a transfer every packet is a 1-RTT packet, which
// QUIC never puts two to a datagram, so each is a datagram that
// snilisten relays.
func quicBulk(ctx context.Context, t quicTarget, n int64) (bulkResult, error) {
	timeout := 30*time.Second + time.Duration(n/(10<<20))*time.Second
	t0 := time.Now()
	info, err := t.get(ctx, fmt.Sprintf("/bulk?n=%d", n), timeout, make([]byte, 256<<10))
	if err != nil {
		return bulkResult{}, err
	}
	if info.body != n {
		return bulkResult{}, fmt.Errorf("bulk: %d bytes, want %d", info.body, n)
	}
	return bulkResult{took: time.Since(t0), datagrams: info.stats.PacketsSent + info.stats.PacketsReceived}, nil
}

// quicBackendInfo is what the running HTTP/3 backend reported.
type quicBackendInfo struct {
	proc *proc
	addr string // 127.0.0.1:PORT, UDP
	port int
}

// serveQUICBackend is the HTTP/3 backend process, the TCP backend's twin
// (the same handler and certificate) on a UDP port of 127.0.0.1, with
// quic-go's server defaults. It writes dir/quic-backend.ready and serves
// until killed. It is a process of its own so that its CPU is mixed
// neither with the load generator's nor with the TCP backend's.
func serveQUICBackend(dir string) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		return fmt.Errorf("quic backend: %w", err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fmt.Errorf("quic backend: %w", err)
	}
	srv := &http3.Server{
		Handler: backendHandler(),
		TLSConfig: http3.ConfigureTLSConfig(&tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS13,
			// Every flow is a full handshake, as for TCP.
			SessionTicketsDisabled: true,
		}),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(pc) }()
	ready := filepath.Join(dir, "quic-backend.ready")
	if err := os.WriteFile(ready+".tmp", []byte("udp="+pc.LocalAddr().String()+"\n"), 0o644); err != nil {
		return fmt.Errorf("quic backend: %w", err)
	}
	if err := os.Rename(ready+".tmp", ready); err != nil {
		return fmt.Errorf("quic backend: %w", err)
	}
	return <-errc
}

// startQUICBackend starts the HTTP/3 backend from the bench's own binary
// and waits until it is listening.
func startQUICBackend(ctx context.Context, dir string) (*quicBackendInfo, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start quic backend: %w", err)
	}
	p, err := startProc(dir, "quic-backend", exe, "-serve-quic-backend", dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if p.exited() {
			return nil, fmt.Errorf("start quic backend: exited: %s", p.logTail())
		}
		b, err := os.ReadFile(filepath.Join(dir, "quic-backend.ready"))
		if err == nil {
			addr, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "udp=")
			_, portStr, err := net.SplitHostPort(addr)
			port, err2 := strconv.Atoi(portStr)
			if !ok || err != nil || err2 != nil {
				p.stop()
				return nil, fmt.Errorf("start quic backend: bad ready file %q", b)
			}
			return &quicBackendInfo{proc: p, addr: addr, port: port}, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.stop()
	return nil, errors.New("start quic backend: not ready after 30s")
}

// quicGoVersion is the version of quic-go built into the bench.
func quicGoVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/quic-go/quic-go" {
				return "quic-go " + m.Version
			}
		}
	}
	return "quic-go"
}

// reportQUIC renders the QUIC rows' table, if they ran.
func (b *bench) reportQUIC(w *strings.Builder) {
	if len(b.quic) == 0 {
		return
	}
	cfg := b.cfg
	fmt.Fprintf(w, "\nQUIC (HTTP/3 on UDP, %s client and server): flows: %d concurrent clients for %v per row (and as long straight to the backend, "+
		"in %d slices each, D P P D …) after %v of warm-up; each flow is a new UDP socket and QUIC connection, a full handshake "+
		"(%s, hello in 2 Initial datagrams, no resumption), one HTTP/3 GET / and a close. snilisten runs with -quic-flow-rate 0 "+
		"and -quic-max-flows-per-client 0 (no per-address limits: all the load comes from 127.0.0.1) and -quic-idle-timeout %v, and its CPU per flow runs until "+
		"it has ended every flow, so that it includes ending them. Bulk: %d MiB down one HTTP/3 stream, straight just before or after; "+
		"datagrams/s counts the client's QUIC packets sent and received during it (each one a datagram snilisten relays).\n\n",
		quicGoVersion(), cfg.clients, cfg.duration, pairSlices, cfg.warmup, b.quicKex, quicIdle, cfg.bulk>>20)
	fmt.Fprintln(w, "| row | flows/s | × direct | p50 ms | p99 ms | bulk MB/s | × direct | datagrams/s | × direct | proxy CPU s/10k flows | proxy CPU s/GiB |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range b.quic {
		if r.skipped != "" {
			fmt.Fprintf(w, "| %s | skipped | | | | | | | | | |\n", r.row.name)
			continue
		}
		v := r.vals
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.row.name,
			cell(v[mFlowRate], 0), cell(ratios(v[mFlowRate], v[mPairFlowRate]), 2),
			cell(v[mP50], 2), cell(v[mP99], 2),
			cell(v[mBulk], 0), cell(ratios(v[mBulk], v[mPairBulk]), 2),
			cell(v[mDgramRate], 0), cell(ratios(v[mDgramRate], v[mPairDgramRate]), 2),
			cell(v[mCPUFlow], 2), cell(v[mCPUGiB], 2))
	}
	if m := median(b.quic[0].vals[mBackendCPUFlow]); !math.IsNaN(m) {
		fmt.Fprintf(w, "\nFor scale: the HTTP/3 backend itself used %.2f CPU s per 10k flows in the direct row.\n", m)
	}
}
