// Command bench measures snilisten side by side with nginx, HAProxy,
// sniproxy and a direct connection to the same backend, under the same
// load, interleaved, and prints one markdown table of absolute figures
// and ratios (also written to bench/results/DATE.md). See README.md.
//
//	make bench                       # 10 to 13 minutes on 2 cores
//	make bench-quick                 # a minute and a half
//	go run ./bench -rows 'snilisten|haproxy' -phases idle -idle 20000
//	go run ./bench -phases conn -baseline /tmp/snilisten-before   # A/B a change
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

// config is the run's settings, from the flags.
type config struct {
	quick      bool
	rounds     int
	clients    int           // connection mode: concurrent clients
	duration   time.Duration // connection mode: measured time per row and round
	warmup     time.Duration // connection mode: unmeasured time before it
	bulk       int64         // bulk mode: bytes through one connection
	idle       int           // idle mode: connections held
	rows       *regexp.Regexp
	phases     map[string]bool
	resultsDir string
	snilisten  string
	baseline   string // another snilisten binary, measured as a row of its own
	keep       bool
	perfDir    string // where perf record's profiles of the proxies go ("": none)
}

// The phases a row goes through in each round.
const (
	phaseConn = "conn"
	phaseBulk = "bulk"
	phaseIdle = "idle"
)

// maxConnsPerPhase bounds connection mode by count as well as by time.
const maxConnsPerPhase = 2_000_000

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		quick      = fs.Bool("quick", false, "a short run (1 round, 1 s per row, 256 MiB bulk, 500 idle connections), results printed only")
		rounds     = fs.Int("rounds", 3, "rounds, each measuring every row once, interleaved")
		clients    = fs.Int("c", 8, "concurrent clients in connection mode")
		duration   = fs.Duration("d", 4*time.Second, "measured time of connection mode per row and round (as much again straight to the backend, for the ratio)")
		bulkMiB    = fs.Int64("bulk", 1024, "MiB through one connection in bulk mode")
		idle       = fs.Int("idle", 5000, "connections held open in idle mode")
		rowsRe     = fs.String("rows", "", "only the rows whose name matches this `regexp` (direct always runs)")
		phases     = fs.String("phases", "conn,bulk,idle,quic", "phases to run: conn, bulk, idle (TCP rows), quic (QUIC rows: new flows and bulk), comma-separated")
		resultsDir = fs.String("results", "bench/results", "write the table to DIR/DATE.md too (\"\": do not)")
		snilisten  = fs.String("snilisten", "bin/snilisten", "the snilisten binary to measure")
		baseline   = fs.String("baseline", "", "also measure this snilisten `binary` (a build from before a change): each snilisten row again as \"NAME (baseline)\", an A/B of the change in one interleaved run")
		keep       = fs.Bool("keep", false, "keep the temporary directory (configurations, logs) and print its name")
		perfDir    = fs.String("perf", "", "record each proxy with perf record -g while connection and bulk mode measure it, into `DIR` (one perf.data per row, phase and round, and their summaries in DIR/profiles.md)")
		backendDir = fs.String("serve-backend", "", "internal: serve as the bench's backend from `DIR`")
		quicDir    = fs.String("serve-quic-backend", "", "internal: serve as the bench's HTTP/3 backend from `DIR`")
	)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *backendDir != "" {
		if err := serveBackend(*backendDir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	if *quicDir != "" {
		if err := serveQUICBackend(*quicDir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg := config{
		quick: *quick, rounds: *rounds, clients: *clients, duration: *duration,
		warmup: time.Second, bulk: *bulkMiB << 20, idle: *idle,
		resultsDir: *resultsDir, snilisten: *snilisten, baseline: *baseline, keep: *keep, phases: map[string]bool{},
		perfDir: *perfDir,
	}
	if cfg.quick {
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("rounds", func() { cfg.rounds = 1 })
		def("d", func() { cfg.duration = time.Second })
		def("bulk", func() { cfg.bulk = 256 << 20 })
		def("idle", func() { cfg.idle = 500 })
		def("results", func() { cfg.resultsDir = "" })
		cfg.warmup = 300 * time.Millisecond
	}
	var err error
	if cfg.rows, err = regexp.Compile(*rowsRe); err != nil {
		return usage("-rows: %v", err)
	}
	for p := range strings.SplitSeq(*phases, ",") {
		switch p = strings.TrimSpace(p); p {
		case phaseConn, phaseBulk, phaseIdle, phaseQUIC:
			cfg.phases[p] = true
		default:
			return usage("-phases: %q: want conn, bulk, idle or quic", p)
		}
	}
	switch {
	case cfg.rounds < 1 || cfg.rounds > 100:
		return usage("-rounds %d: want 1 to 100", cfg.rounds)
	case cfg.clients < 1 || cfg.clients > 10000:
		return usage("-c %d: want 1 to 10000", cfg.clients)
	case cfg.duration <= 0 || cfg.duration > time.Hour:
		return usage("-d %v: want more than 0 and at most 1h", cfg.duration)
	case *bulkMiB < 1 || *bulkMiB > 64<<10:
		return usage("-bulk %d: want 1 to 65536 MiB", *bulkMiB)
	case cfg.idle < 1 || cfg.idle > 500000:
		return usage("-idle %d: want 1 to 500000", cfg.idle)
	}
	if abs, err := filepath.Abs(cfg.snilisten); err == nil {
		cfg.snilisten = abs
	}
	if cfg.baseline != "" {
		if !present(cfg.baseline) {
			return usage("-baseline %s: no such program", cfg.baseline)
		}
		if abs, err := filepath.Abs(cfg.baseline); err == nil {
			cfg.baseline = abs
		}
	}

	if cfg.perfDir != "" {
		if !present("perf") {
			return usage("-perf: perf(1) not found (Debian: apt-get install linux-perf)")
		}
		if err := os.MkdirAll(cfg.perfDir, 0o755); err != nil {
			return usage("-perf: %v", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runBench(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

// Metric names, the keys of result.vals.
const (
	mConnRate   = "conns/s"
	mP50        = "p50 ms"
	mP99        = "p99 ms"
	mBulk       = "bulk MB/s"
	mCPUConn    = "CPU s/10k conns"
	mCPUGiB     = "CPU s/GiB"
	mRSS        = "RSS KiB/conn"
	mBackendCPU = "backend CPU s/10k conns"
	// The direct figures measured next to a row's, for its ratios.
	mPairConnRate = "paired direct conns/s"
	mPairBulk     = "paired direct bulk MB/s"
)

// result collects one row's figures over the rounds.
type result struct {
	row     *row
	vals    map[string][]float64 // metric -> one value per round, NaN if not measured
	notes   []string
	skipped string // why the row did not run at all
	argv    string // the proxy's command line
	version string
}

func (r *result) set(metric string, round int, v float64) { r.vals[metric][round] = v }

func (r *result) note(format string, a ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, a...))
}

// bench is one run.
type bench struct {
	cfg     config
	env     *env
	tls     *tls.Config
	results []*result
	kex     string // the key exchange the handshakes negotiated
	fdLimit uint64
	quicPart
}

func runBench(ctx context.Context, cfg config) error {
	// The proxies inherit the limit. Each is told how many connections
	// to admit (e.maxConns); an idle connection holds two descriptors in
	// a proxy, a few more while bytes are in flight.
	limit, err := raiseFDLimit(max(65536, uint64(cfg.idle)*8+4096))
	if err != nil {
		return err
	}
	if need := uint64(cfg.idle)*3 + 4096; limit < need && cfg.phases[phaseIdle] {
		return fmt.Errorf("-idle %d needs a file descriptor limit of %d, the hard limit is %d: lower -idle or raise it (ulimit -Hn)", cfg.idle, need, limit)
	}
	dir, err := os.MkdirTemp("", "snitools-bench-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	if cfg.keep {
		fmt.Fprintf(os.Stderr, "bench: keeping %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	// Others may rebuild bin/ while the bench runs: measure one binary.
	if present(cfg.snilisten) {
		if cfg.snilisten, err = copyFile(cfg.snilisten, filepath.Join(dir, "snilisten")); err != nil {
			return err
		}
	}
	measured := slices.Clone(rows)
	if cfg.baseline != "" {
		if cfg.baseline, err = copyFile(cfg.baseline, filepath.Join(dir, "snilisten-baseline")); err != nil {
			return err
		}
		for _, r := range rows {
			if slices.Contains(r.needs, "snilisten") {
				measured = append(measured, baselineTwin(r))
			}
		}
	}
	pool, err := writeCert(dir)
	if err != nil {
		return err
	}
	be, err := startBackend(ctx, dir)
	if err != nil {
		return err
	}
	defer be.proc.stop()
	b := &bench{
		cfg: cfg,
		env: &env{dir: dir, backend: be, snilisten: cfg.snilisten, baseline: cfg.baseline, maxConns: cfg.idle + 1024},
		tls: &tls.Config{
			ServerName: sni,
			RootCAs:    pool,
			MinVersion: tls.VersionTLS13,
			NextProtos: []string{"http/1.1"},
		},
		fdLimit: limit,
	}
	stopQUIC, err := b.setupQUIC(ctx)
	if err != nil {
		return err
	}
	defer stopQUIC()
	start := time.Now()
	facts := machineFacts()
	for i := range measured {
		r := &measured[i]
		if r.start != nil && !cfg.rows.MatchString(r.name) {
			continue
		}
		res := &result{row: r, vals: map[string][]float64{}}
		for _, m := range []string{mConnRate, mP50, mP99, mBulk, mCPUConn, mCPUGiB, mRSS, mBackendCPU, mPairConnRate, mPairBulk} {
			res.vals[m] = slices.Repeat([]float64{math.NaN()}, cfg.rounds)
		}
		for _, need := range r.needs {
			if need == "snilisten" {
				need = cfg.snilisten
			}
			if !present(need) {
				res.skipped = fmt.Sprintf("%s not found (tools/install-deps bench installs it)", need)
				break
			}
		}
		if len(r.version) > 0 && res.skipped == "" {
			bin := cfg.snilisten
			if r.twinOf != "" {
				bin = cfg.baseline
			}
			res.version = versionOf(r.version, bin)
		}
		b.results = append(b.results, res)
	}
	for round := range cfg.rounds {
		n := len(b.results)
		if !cfg.tcpPhases() {
			n = 0
		}
		for k := range n {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The direct row first, the others rotated round by round.
			res := b.results[0]
			if k > 0 {
				res = b.results[1+(k-1+round)%(n-1)]
			}
			if res.skipped != "" {
				continue
			}
			t0 := time.Now()
			took := b.runRow(ctx, res, round)
			fmt.Fprintf(os.Stderr, "bench: round %d/%d: %s: %v (%s)\n", round+1, cfg.rounds, res.row.name,
				time.Since(t0).Round(100*time.Millisecond), strings.Join(took, ", "))
		}
		b.quicRound(ctx, round)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	report := b.report(facts, time.Since(start))
	fmt.Print(report)
	if cfg.resultsDir != "" {
		path, err := writeResults(cfg.resultsDir, report)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "bench: wrote %s\n", path)
	}
	return nil
}

// runRow measures one row for one round, each proxy freshly started for
// connection and bulk mode, and again for idle mode so that the memory it
// starts from is the same for every proxy. It returns how long each phase
// took, for the progress lines.
func (b *bench) runRow(ctx context.Context, res *result, round int) (took []string) {
	cfg := b.cfg
	timed := func(name string, f func()) {
		t0 := time.Now()
		f()
		took = append(took, fmt.Sprintf("%s %v", name, time.Since(t0).Round(100*time.Millisecond)))
	}
	if cfg.phases[phaseConn] || cfg.phases[phaseBulk] {
		var p *proc
		var t target
		var err error
		timed("start", func() { p, t, err = b.launch(ctx, res) })
		if err != nil {
			b.failed(res, round, err)
			return took
		}
		if cfg.phases[phaseConn] {
			timed(phaseConn, func() { b.connPhase(ctx, res, round, p, t) })
		}
		if cfg.phases[phaseBulk] {
			timed(phaseBulk, func() { b.bulkPhase(ctx, res, round, p, t) })
		}
		if p != nil {
			timed("stop", p.stop)
		}
	}
	if cfg.phases[phaseIdle] && res.row.start != nil && ctx.Err() == nil {
		var p *proc
		var t target
		var err error
		timed("start", func() { p, t, err = b.launch(ctx, res) })
		if err != nil {
			b.failed(res, round, err)
			return took
		}
		timed(phaseIdle, func() { b.idlePhase(ctx, res, round, p, t) })
		timed("stop", p.stop)
	}
	return took
}

// errUsage marks a proxy that refused its command line (exit status 2):
// the row is skipped for the rest of the run.
var errUsage = errors.New("refused its command line (exit status 2)")

func (b *bench) failed(res *result, round int, err error) {
	if errors.Is(err, errUsage) {
		res.skipped = err.Error()
		fmt.Fprintf(os.Stderr, "bench: %s: skipped: %v\n", res.row.name, err)
		return
	}
	res.note("round %d: %v", round+1, err)
	fmt.Fprintf(os.Stderr, "bench: %s: round %d: %v\n", res.row.name, round+1, err)
}

// launch starts the row's proxy on a free loopback port and waits until a
// request through it succeeds. The direct row returns the backend.
func (b *bench) launch(ctx context.Context, res *result) (*proc, target, error) {
	return launchRow(res, b.env, b.direct(), freePort,
		func(addr string) target { return target{addr: addr, tls: b.tls} },
		func(p *proc, t target) error { return b.probe(ctx, p, t) })
}

// launchRow is launch for targets of any kind (TLS, QUIC): direct is the
// backend's target, free finds a free port of the right protocol, at
// makes the target of a proxy on an address, probe waits for a request
// through a target to succeed (p nil for the direct row).
func launchRow[T any](res *result, e *env, direct T, free func() (string, error), at func(addr string) T, probe func(p *proc, t T) error) (*proc, T, error) {
	var none T
	if res.row.start == nil {
		return nil, direct, probe(nil, direct)
	}
	var lastErr error
	for range 3 { // another program may take the free port first
		addr, err := free()
		if err != nil {
			return nil, none, err
		}
		p, err := res.row.start(e, addr)
		if err != nil {
			return nil, none, err
		}
		if res.argv == "" {
			res.argv = strings.Join(p.cmd.Args, " ")
		}
		t := at(addr)
		if lastErr = probe(p, t); lastErr == nil {
			return p, t, nil
		}
		p.stop()
		if p.exitCode() == 2 {
			return nil, none, fmt.Errorf("%s %w: %s", p.name, errUsage, p.logTail())
		}
	}
	return nil, none, lastErr
}

// probe waits up to 10 s for one request through t to succeed, and gives
// up at once if the proxy exits.
func (b *bench) probe(ctx context.Context, p *proc, t target) error {
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited with status %d: %s", p.name, p.exitCode(), p.logTail())
		}
		var c *tls.Conn
		if _, err = t.get(ctx, "/", 2*time.Second, make([]byte, 512)); err == nil {
			if b.kex == "" {
				if c, err = t.handshake(ctx, 2*time.Second); err == nil {
					b.kex = c.ConnectionState().CurveID.String()
					c.Close()
				}
			}
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p != nil && p.exited() {
		return fmt.Errorf("%s exited with status %d: %s", p.name, p.exitCode(), p.logTail())
	}
	return fmt.Errorf("not ready after 10s: %w", err)
}

// cpuOf reads the CPU seconds of p and its children; NaN without a proxy.
func cpuOf(p *proc) float64 {
	if p == nil {
		return math.NaN()
	}
	s, err := cpuSeconds(p.pid())
	if err != nil {
		return math.NaN()
	}
	return s
}

// pairSlices is how many slices connection mode cuts -d into for a row
// with a proxy. The slices alternate with as many slices straight to the
// backend, in the order D P P D D P P D, so that what else the machine
// does at the time weighs on both alike and the ratio to direct is taken
// between neighbours.
const pairSlices = 4

// direct is the backend itself, for the slices paired with a proxy's.
func (b *bench) direct() target { return target{addr: b.env.backend.tcp, tls: b.tls} }

func (b *bench) connPhase(ctx context.Context, res *result, round int, p *proc, t target) {
	c, d := b.cfg.clients, b.cfg.duration
	connMode(ctx, t, c, b.cfg.warmup, maxConnsPerPhase)
	var st, ref connStats
	var cpu, be float64
	measure := func(slice time.Duration) {
		cpu0, be0 := cpuOf(p), cpuOf(b.env.backend.proc)
		st.add(connMode(ctx, t, c, slice, maxConnsPerPhase))
		cpu += cpuOf(p) - cpu0
		be += cpuOf(b.env.backend.proc) - be0
	}
	if p == nil {
		measure(d)
		ref = st
	} else {
		rec := b.startPerf(res, phaseConn, round, p)
		defer rec.stop(ctx, res)
		for i := range pairSlices {
			paired := func() { ref.add(connMode(ctx, b.direct(), c, d/pairSlices, maxConnsPerPhase)) }
			if i%2 == 0 {
				paired()
				measure(d / pairSlices)
			} else {
				measure(d / pairSlices)
				paired()
			}
		}
	}
	slices.Sort(st.lat)
	if st.errs > 0 {
		res.note("round %d: %d of %d connections failed, first: %v", round+1, st.errs, st.errs+st.conns, st.err)
	}
	if st.conns == 0 || ref.conns == 0 {
		return
	}
	res.set(mConnRate, round, st.rate())
	res.set(mPairConnRate, round, ref.rate())
	res.set(mP50, round, float64(percentile(st.lat, 50))/1e6)
	res.set(mP99, round, float64(percentile(st.lat, 99))/1e6)
	res.set(mCPUConn, round, cpu/float64(st.conns)*10000)
	res.set(mBackendCPU, round, be/float64(st.conns)*10000)
}

// bulkPhase moves -bulk MiB through the row and, for a row with a proxy,
// as much straight from the backend next to it (before it in even rounds,
// after it in odd ones), for the ratio.
func (b *bench) bulkPhase(ctx context.Context, res *result, round int, p *proc, t target) {
	var ref time.Duration
	paired := func() {
		if p == nil || ctx.Err() != nil {
			return
		}
		var err error
		if ref, err = bulkMode(ctx, b.direct(), b.cfg.bulk); err != nil {
			res.note("round %d: bulk straight to the backend: %v", round+1, err)
		}
	}
	if round%2 == 0 {
		paired()
	}
	rec := b.startPerf(res, phaseBulk, round, p)
	cpu0 := cpuOf(p)
	d, err := bulkMode(ctx, t, b.cfg.bulk)
	cpu1 := cpuOf(p)
	rec.stop(ctx, res)
	if round%2 == 1 {
		paired()
	}
	if err != nil {
		res.note("round %d: bulk: %v", round+1, err)
		return
	}
	if p == nil {
		ref = d
	}
	mb := float64(b.cfg.bulk) / 1e6
	res.set(mBulk, round, mb/d.Seconds())
	if ref > 0 {
		res.set(mPairBulk, round, mb/ref.Seconds())
	}
	res.set(mCPUGiB, round, (cpu1-cpu0)/float64(b.cfg.bulk)*(1<<30))
}

// idleWorkers is how many clients open the idle connections at once.
const idleWorkers = 16

func (b *bench) idlePhase(ctx context.Context, res *result, round int, p *proc, t target) {
	// A few connections first, so that what a proxy allocates once is
	// in the baseline rather than spread over the idle connections.
	connMode(ctx, t, 1, 100*time.Millisecond, 20)
	time.Sleep(200 * time.Millisecond)
	before, err := rssKiB(p.pid())
	if err != nil {
		res.note("round %d: idle: %v", round+1, err)
		return
	}
	conns, errs, err := idleConns(ctx, t, b.cfg.idle, idleWorkers)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		res.note("round %d: idle: %d of %d connections failed, first: %v", round+1, errs, b.cfg.idle, err)
	}
	if len(conns) == 0 {
		return
	}
	time.Sleep(time.Second) // let the last ones reach the backend
	after, err := rssKiB(p.pid())
	if err != nil {
		res.note("round %d: idle: %v", round+1, err)
		return
	}
	res.set(mRSS, round, float64(after-before)/float64(len(conns)))
}

// copyFile copies the program at src to dst and returns dst.
func copyFile(src, dst string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	return dst, nil
}

// present reports whether a program is in PATH or, for an absolute path,
// whether the file (a program or a module) exists.
func present(need string) bool {
	if filepath.IsAbs(need) {
		_, err := os.Stat(need)
		return err == nil
	}
	_, err := exec.LookPath(need)
	return err == nil
}

// freePort returns a loopback address with a port nothing listens on now.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// raiseFDLimit raises the bench's own file descriptor limit, which the
// proxies it starts inherit, to at least want if it can (root may raise
// the hard limit too). It returns the soft limit now in force.
func raiseFDLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	if lim.Max < want {
		try := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try) == nil {
			return want, nil
		}
	}
	lim.Cur = min(want, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("setrlimit: %w", err)
	}
	return lim.Cur, nil
}
