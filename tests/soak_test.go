package tests

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/snitools/snitools/lib/handoff"
)

// soakPlan says how much a soak does: a short slice in `make test`, the
// long form under SNITOOLS_SOAK=1 (`make soak`).
type soakPlan struct {
	conns    int           // stop after this many connections...
	duration time.Duration // ...or this long, whichever comes first
	maxSize  int64         // largest transfer each way
	workers  int           // concurrent clients
}

func planSoak(t *testing.T, shortConns int, longDuration time.Duration) soakPlan {
	if !soakEnabled() {
		return soakPlan{conns: shortConns, duration: time.Minute, maxSize: 4 << 20, workers: 8}
	}
	if d, err := time.ParseDuration(os.Getenv("SNITOOLS_SOAK_DURATION")); err == nil {
		longDuration = d
	}
	return soakPlan{conns: 1 << 30, duration: longDuration, maxSize: 64 << 20, workers: 16}
}

// soakSize draws a transfer size: 0 one time in ten, else log-uniform
// from 1 byte to max, so that every order of magnitude is exercised.
func soakSize(r *rand.Rand, max int64) int64 {
	if r.IntN(10) == 0 {
		return 0
	}
	k := r.IntN(bits.Len64(uint64(max)))
	return min(int64(1)<<k+r.Int64N(int64(1)<<k), max)
}

// soakTarget is one place transfers go: a snilisten address, the name
// to ask for, and the backend behind it.
type soakTarget struct {
	name    string // for the report
	addr    string
	sni     string
	srv     *xferServer
	relayed bool   // bytes pass through snilisten (not a handoff)
	prefix  []byte // sent before the hello (a trusted front's header)
}

// soakTally collects what the clients did.
type soakTally struct {
	mu    sync.Mutex
	conns map[string]int
	wire  map[string]int64 // bytes sent up by clients, hello included
	down  map[string]int64
	// silent counts transfers with nothing to send down: snilisten logs
	// those no_answer (the backend never sent a byte), not ok.
	silent   map[string]int
	verified int64
	failures []string
}

func (s *soakTally) record(target string, o xferOutcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns, s.wire, s.down, s.silent = map[string]int{}, map[string]int64{}, map[string]int64{}, map[string]int{}
	}
	s.conns[target]++
	if o.Spec.Down == 0 {
		s.silent[target]++
	}
	s.wire[target] += o.Wire
	s.down[target] += o.Spec.Down
	s.verified += o.Verified
	if o.Err != nil && len(s.failures) < 20 {
		s.failures = append(s.failures, fmt.Sprintf("%s: transfer %d (up %d, down %d, order %d): %v", target, o.Spec.ID, o.Spec.Up, o.Spec.Down, o.Spec.Order, o.Err))
	}
}

// runSoak runs plan's transfers against targets from several clients at
// once, and returns the tally.
func runSoak(t *testing.T, plan soakPlan, targets []soakTarget, firstID uint32) *soakTally {
	t.Helper()
	tally := &soakTally{}
	var next atomic.Uint32
	next.Store(firstID)
	deadline := time.Now().Add(plan.duration)
	var started atomic.Int64
	var wg sync.WaitGroup
	for w := range plan.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(firstID)))
			for started.Add(1) <= int64(plan.conns) && time.Now().Before(deadline) {
				tg := targets[r.IntN(len(targets))]
				spec := xferSpec{ID: next.Add(1), Up: soakSize(r, plan.maxSize), Down: soakSize(r, plan.maxSize), Order: byte(r.IntN(numOrders)), Prefix: tg.prefix}
				tally.record(tg.name, runXfer(tg.addr, tg.sni, tg.srv, spec, 10*time.Minute))
			}
		}()
	}
	wg.Wait()
	return tally
}

// TestSoakUnix: many clients at once move random amounts both ways, with
// random half-close orders, through snilisten in unix mode: relayed
// streams (raw, PROXY v1, PROXY v2, behind a trusted front) and handoffs. Every byte is checked
// with SHA-256 in both directions, the log's byte counts must match, and
// afterwards snilisten's goroutines and descriptors are back at their
// baseline.
func TestSoakUnix(t *testing.T) {
	plan := planSoak(t, 300, 5*time.Minute)
	raw, v1, v2 := socketDir(t), socketDir(t), socketDir(t)
	srv := newXferServer()
	srv.listenUnix(t, raw, "stream.example.test", false)
	hl, err := handoff.Listen(filepath.Join(raw, "handoff.example.test"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Serve(t, hl)
	srv.listenUnix(t, v1, "v1.example.test", true)
	srv.listenUnix(t, v2, "v2.example.test", true)
	// Behind a trusted front (-accept-proxy): the front's header names
	// the client, and the backend's header must pass that on.
	front := socketDir(t)
	fsrv := newXferServer()
	fsrv.KeepPeers = true
	fsrv.listenUnix(t, front, "front.example.test", true)

	type instance struct {
		s       *snilisten
		metrics string
		base    soakBaseline
	}
	var insts []*instance
	startOne := func(args ...string) *instance {
		s := startSnilisten(t, append(args, "-metrics-listen", "127.0.0.1:0")...)
		in := &instance{s: s, metrics: metricsAddr(t, s.Proc)}
		insts = append(insts, in)
		return in
	}
	a := startOne("-unix-directory", raw)
	b := startOne("-unix-directory", v1, "-proxy-proto=v1")
	c := startOne("-unix-directory", v2, "-proxy-proto")
	d := startOne("-unix-directory", front, "-proxy-proto", "-accept-proxy", "127.0.0.1/32")
	targets := []soakTarget{
		{name: "raw", addr: a.s.Addr, sni: "stream.example.test", srv: srv, relayed: true},
		{name: "handoff", addr: a.s.Addr, sni: "handoff.example.test", srv: srv, relayed: false},
		{name: "proxy-v1", addr: b.s.Addr, sni: "v1.example.test", srv: srv, relayed: true},
		{name: "proxy-v2", addr: c.s.Addr, sni: "v2.example.test", srv: srv, relayed: true},
		{name: "front", addr: d.s.Addr, sni: "front.example.test", srv: fsrv, relayed: true},
	}
	targets[4].prefix = proxyHeaderBytes(t, 2, "198.51.100.77:5555", d.s.Addr)
	// Warm up every path, then take the baselines.
	warm := &soakTally{}
	for i, tg := range targets {
		for j := range 3 {
			warm.record(tg.name, runXfer(tg.addr, tg.sni, tg.srv, xferSpec{ID: uint32(10*i + j + 1), Up: 1 << 20, Down: 1 << 20, Order: byte(j), Prefix: tg.prefix}, time.Minute))
		}
	}
	if len(warm.failures) > 0 {
		t.Fatalf("warm-up: %s", strings.Join(warm.failures, "\n"))
	}
	for _, in := range insts {
		waitFor(t, 10*time.Second, "warm-up connections finished", func() bool {
			return metricValue(t, in.metrics, "snilisten_connections_active", "") == 0
		})
		in.base = takeBaseline(t, in.s, in.metrics)
	}

	start := time.Now()
	tally := runSoak(t, plan, targets, 1000)
	elapsed := time.Since(start)
	for _, f := range tally.failures {
		t.Error(f)
	}

	// The log's byte counts are the bytes that moved: up is the hello,
	// the control block and the payload; down is the payload.
	for _, tg := range targets {
		if !tg.relayed {
			continue
		}
		s := a.s
		switch tg.name {
		case "proxy-v1":
			s = b.s
		case "proxy-v2":
			s = c.s
		case "front":
			s = d.s
		}
		silent := tally.silent[tg.name] + warm.silent[tg.name]
		want := tally.conns[tg.name] + warmConns(warm, tg.name) - silent
		waitFor(t, 30*time.Second, "a log line per "+tg.name+" connection", func() bool {
			return len(logLines(s.Proc, "sni="+tg.sni, "outcome=ok")) >= want &&
				len(logLines(s.Proc, "sni="+tg.sni, "outcome=no_answer")) >= silent
		})
		if n := len(logLines(s.Proc, "sni="+tg.sni, "outcome=no_answer")); n != silent {
			t.Errorf("%s: %d connections logged no_answer, want %d (the transfers with nothing to send down)", tg.name, n, silent)
		}
		up := sumLogField(s.Proc, "up", "sni="+tg.sni, "outcome=ok") + sumLogField(s.Proc, "up", "sni="+tg.sni, "outcome=no_answer")
		down := sumLogField(s.Proc, "down", "sni="+tg.sni, "outcome=ok")
		if wantUp, wantDown := tally.wire[tg.name]+warm.wire[tg.name], tally.down[tg.name]+warm.down[tg.name]; up != wantUp || down != wantDown {
			t.Errorf("%s: log says up=%d down=%d, clients moved up=%d down=%d", tg.name, up, down, wantUp, wantDown)
		}
	}
	want := tally.conns["handoff"] + warmConns(warm, "handoff")
	waitFor(t, 30*time.Second, "a handoff log line per handoff", func() bool {
		return len(logLines(a.s.Proc, "sni=handoff.example.test", "outcome=handoff")) >= want
	})
	for _, in := range insts {
		if n := len(logLines(in.s.Proc, "outcome=")) - len(logLines(in.s.Proc, "outcome=ok")) - len(logLines(in.s.Proc, "outcome=handoff")) - len(logLines(in.s.Proc, "outcome=no_answer")); n != 0 {
			t.Errorf("%d connections ended otherwise than ok, no_answer or handoff:\n%s", n, strings.Join(logLines(in.s.Proc, "level=WARN"), "\n"))
		}
	}
	for _, p := range fsrv.Peers() {
		if p != "198.51.100.77:5555" {
			t.Errorf("behind the trusted front the backend saw client %s, want 198.51.100.77:5555 from the front's header", p)
			break
		}
	}
	var reports []string
	for i, in := range insts {
		reports = append(reports, fmt.Sprintf("snilisten %d: %s", i+1, checkBaseline(t, in.s, in.metrics, in.base)))
	}
	total := 0
	for _, n := range tally.conns {
		total += n
	}
	t.Logf("soak: %d connections (%v) in %v by %d clients, sizes 0 to %d bytes each way, %d bytes verified by SHA-256; failures %d",
		total, tally.conns, elapsed.Round(time.Millisecond), plan.workers, plan.maxSize, tally.verified, len(tally.failures))
	for _, r := range reports {
		t.Log(r)
	}
}

func warmConns(warm *soakTally, name string) int { return warm.conns[name] }

// TestSoakNetns is the soak in the DNS-routed modes, in a network
// namespace: tcp mode with a PROXY v2 header to an address found in DNS
// (here /etc/hosts), and nat46 mode, where the backend must see every
// client's IPv4 address embedded in its IPv6 source address.
func TestSoakNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	plan := planSoak(t, 200, 2*time.Minute) // the namespace run is bounded to 5 minutes
	netnsSetup(t, []string{"192.0.2.1/32", "198.51.100.10/32", "2001:db8:5ba7::10/128"},
		"127.0.0.1 localhost\n198.51.100.10 tcp.example.test\n2001:db8:5ba7::10 nat.example.test\n", "nameserver 127.0.0.53\n")
	tcpSrv, natSrv := newXferServer(), newXferServer()
	natSrv.KeepPeers = true
	ln, err := net.Listen("tcp", "198.51.100.10:443")
	if err != nil {
		t.Fatal(err)
	}
	tcpSrv.Serve(t, &proxyproto.Listener{Listener: ln, Policy: func(net.Addr) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }})
	ln6, err := net.Listen("tcp", "[2001:db8:5ba7::10]:443")
	if err != nil {
		t.Fatal(err)
	}
	natSrv.Serve(t, ln6)
	tcpMode := startSnilistenOn(t, "tcp:192.0.2.1:443", "-mode", "tcp", "-proxy-proto", "-backend-cidr", "198.51.100.0/24", "-metrics-listen", "127.0.0.1:0", "-q")
	natMode := startSnilistenOn(t, "tcp:127.0.0.1:443", "-mode", "nat46", "-nat46-prefix", "64:ff9b:1::/96", "-backend-cidr", "2001:db8:5ba7::/64", "-metrics-listen", "127.0.0.1:0", "-q")
	targets := []soakTarget{
		{name: "tcp", addr: tcpMode.Addr, sni: "tcp.example.test", srv: tcpSrv, relayed: true},
		{name: "nat46", addr: natMode.Addr, sni: "nat.example.test", srv: natSrv, relayed: true},
	}
	mTCP, mNAT := metricsAddr(t, tcpMode.Proc), metricsAddr(t, natMode.Proc)
	for i, tg := range targets {
		if o := runXfer(tg.addr, tg.sni, tg.srv, xferSpec{ID: uint32(i + 1), Up: 1 << 20, Down: 1 << 20}, time.Minute); o.Err != nil {
			t.Fatalf("warm-up %s: %v", tg.name, o.Err)
		}
	}
	baseTCP, baseNAT := takeBaseline(t, tcpMode, mTCP), takeBaseline(t, natMode, mNAT)

	start := time.Now()
	tally := runSoak(t, plan, targets, 1000)
	for _, f := range tally.failures {
		t.Error(f)
	}
	for name, m := range map[string]string{"tcp": mTCP, "nat46": mNAT} {
		want := float64(tally.conns[name] + 1)
		silent := float64(tally.silent[name])
		waitFor(t, 30*time.Second, name+" connections counted", func() bool {
			return metricValue(t, m, "snilisten_connections_finished_total", `outcome="ok"`) >= want-silent &&
				metricValue(t, m, "snilisten_connections_finished_total", `outcome="no_answer"`) >= silent
		})
		if got := metricValue(t, m, "snilisten_connections_finished_total", `outcome="no_answer"`); got != silent {
			t.Errorf("%s: %v connections counted no_answer, want %v (the transfers with nothing to send down)", name, got, silent)
		}
		if got := metricValue(t, m, "snilisten_connections_accepted_total", ""); got != want {
			t.Errorf("%s: %v connections accepted, want %v", name, got, want)
		}
	}
	for _, p := range natSrv.Peers() {
		if host, _, _ := net.SplitHostPort(p); host != "64:ff9b:1::7f00:1" {
			t.Errorf("nat46 backend saw client %s, want 64:ff9b:1::7f00:1 (127.0.0.1 embedded)", p)
			break
		}
	}
	r1, r2 := checkBaseline(t, tcpMode, mTCP, baseTCP), checkBaseline(t, natMode, mNAT, baseNAT)
	t.Logf("soak in a namespace: %d connections (%v) in %v, %d bytes verified by SHA-256; failures %d",
		tally.conns["tcp"]+tally.conns["nat46"], tally.conns, time.Since(start).Round(time.Millisecond), tally.verified, len(tally.failures))
	t.Logf("tcp mode: %s", r1)
	t.Logf("nat46 mode: %s", r2)
}
