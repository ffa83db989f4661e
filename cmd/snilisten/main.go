// Command snilisten accepts TLS connections, reads the server name from
// each ClientHello without decrypting anything, and forwards the untouched
// stream to the backend named after the host. See snilisten(8).
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/snitools/snitools/lib/backend"
	"github.com/snitools/snitools/lib/cli"
	"github.com/snitools/snitools/lib/dispatch"
	"github.com/snitools/snitools/lib/hostname"
	"github.com/snitools/snitools/lib/listener"
	"github.com/snitools/snitools/lib/logging"
	"github.com/snitools/snitools/lib/metrics"
	"github.com/snitools/snitools/lib/nat46"
	"github.com/snitools/snitools/lib/proxyheader"
	"github.com/snitools/snitools/lib/quic"
	"github.com/snitools/snitools/lib/quicdispatch"
	"github.com/snitools/snitools/lib/quicflow"
)

// proxyFlag is -proxy-proto: alone it means version 2 (as in snid);
// -proxy-proto=v1 or =v2 choose.
type proxyFlag byte

func (p *proxyFlag) IsBoolFlag() bool { return true }
func (p *proxyFlag) String() string {
	if *p == 0 {
		return "off"
	}
	return fmt.Sprintf("v%d", *p)
}
func (p *proxyFlag) Set(s string) error {
	switch s {
	case "true", "v2", "2":
		*p = 2
	case "v1", "1":
		*p = 1
	case "false", "off":
		*p = 0
	default:
		return fmt.Errorf("want v1 or v2, not %q", s)
	}
	return nil
}

const synopsis = "usage: snilisten [-listen SPEC]... [-mode unix] [-unix-directory DIR] [-proxy-proto[=v1|v2]] [flags]\n"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	var (
		listens         listener.Specs
		allow           = &backend.AllowList{}
		fronts          proxyheader.Trusted
		proxy           proxyFlag
		c               = cli.New("snilisten", synopsis, stdout, stderr)
		fs              = c.Flags
		mode            = fs.String("mode", "unix", "how backends are found: unix, tcp or nat46")
		unixDir         = fs.String("unix-directory", "/var/tls", "directory of backend sockets, one per host name (unix mode)")
		backendPort     = fs.Int("backend-port", 0, "backend port in tcp mode (default: the port the client connected to)")
		nat46Prefix     = fs.String("nat46-prefix", "", "IPv6 prefix embedding client IPv4 addresses as source addresses (nat46 mode), e.g. 64:ff9b:1::/96")
		defaultHostname = fs.String("default-hostname", "", "host name to use for clients that send no SNI")
		peekTimeout     = fs.Duration("peek-timeout", 5*time.Second, "time a client has to send its whole ClientHello")
		connectTimeout  = fs.Duration("connect-timeout", 10*time.Second, "time to connect to a backend")
		idleTimeout     = fs.Duration("idle-timeout", 10*time.Minute, "close a connection silent in both directions for this long (0: never)")
		shutdownTimeout = fs.Duration("shutdown-timeout", 30*time.Second, "on SIGTERM, time open connections get to finish")
		maxConns        = fs.Int("max-conns", dispatch.DefaultMaxConns(), "concurrent connections; when all are taken, the one waiting longest for its hello is closed for a new one, else more wait in the kernel's queue (0: no bound)")
		perClient       = fs.Int("max-conns-per-client", dispatch.DefaultMaxConnsPerClient, "concurrent connections from one IPv4 address or IPv6 /64; more are closed at once (0: no bound)")
		logFormat       = fs.String("log-format", "text", "log format: text or json")
		quiet           = fs.Bool("q", false, "do not log connections")
	)
	fs.Var(&fronts, "accept-proxy", "`CIDR` of trusted load balancers whose connections begin with a PROXY header (repeatable)")
	peekBudget := cli.Size(dispatch.DefaultPeekBudget)
	fs.Var(&peekBudget, "peek-budget", "`SIZE` of memory all ClientHello peek buffers may take together beyond 16K each; a hello that needs more is refused (K, M, G suffixes)")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at /metrics on `ADDR` (HOST:PORT or unix:PATH; off by default)")
	metricsPerBackend := fs.Bool("metrics-per-backend", false, "also count connections by backend (socket name, or address in tcp modes)")
	fs.Var(allow, "backend-cidr", "`CIDR` backends may be in (tcp and nat46 modes; repeatable, at least one)")
	fs.Var(&listens, "listen", "`SPEC` to listen on: tcp:PORT, tcp:ADDR:PORT, udp:PORT, udp:ADDR:PORT (QUIC, tcp and nat46 modes), unix:PATH or fd:NAME (repeatable; default: sockets from systemd)")
	quicIdle := fs.Duration("quic-idle-timeout", quicflow.DefaultIdleTimeout, "end a QUIC flow unused in both directions for this long; at least the backends' QUIC idle timeout")
	quicMaxFlows := fs.Int("quic-max-flows", quicdispatch.DefaultMaxFlows(), "concurrent QUIC flows routed to backends, each holding a descriptor (0: no bound)")
	quicPerClient := fs.Int("quic-max-flows-per-client", quicflow.DefaultMaxFlowsPerClient, "concurrent QUIC flows from one IPv4 address or IPv6 /64; more are dropped (0: no bound)")
	quicAnswer := fs.Duration("quic-answer-timeout", quicflow.DefaultAnswerTimeout, "end a QUIC flow whose backend has not answered this long after it was routed (at most -quic-idle-timeout)")
	quicMaxPending := fs.Int("quic-max-pending", quicflow.DefaultMaxPending, "QUIC flows waiting for the rest of their ClientHello (0: no bound)")
	quicPendingBudget := cli.Size(quicflow.DefaultMaxHeldBytes)
	fs.Var(&quicPendingBudget, "quic-pending-budget", "`SIZE` of datagrams held for all QUIC flows waiting for their ClientHello (K, M, G suffixes)")
	quicRate := fs.Float64("quic-flow-rate", quicflow.DefaultNewFlowsPerSecond, "new QUIC flows a second from one IPv4 address or IPv6 /64 (0: no limit)")
	quicBurst := fs.Int("quic-flow-burst", quicflow.DefaultNewFlowBurst, "new QUIC flows one IPv4 address or IPv6 /64 may start at once, beyond -quic-flow-rate")
	fs.Var(&proxy, "proxy-proto", "send a PROXY protocol header to the backend: v2 (alone or =v2) or =v1")
	srvPorts := backend.Ports(backend.DefaultSRVPorts)
	fs.Var(&srvPorts, "srv-ports", "`PORTS` (comma-separated) an SRV target may have (tcp and nat46 modes; '' allows none)")
	if status, done := c.Parse(args); done {
		return status
	}
	if status, done := c.NoArgs(); done {
		return status
	}
	usage := c.Usage
	set := c.Given()
	dialer, err := newDialer(*mode, set, *unixDir, allow, *backendPort, *nat46Prefix)
	if err != nil {
		return usage("%v", err)
	}
	// tcp modes: SRV ports, and the set of our own connections that the
	// accept side refuses (a name leading back here).
	var outgoing *backend.Outgoing
	if d, ok := dialer.(backend.TCP); ok {
		outgoing = &backend.Outgoing{}
		d.SRVPorts, d.Outgoing = srvPorts, outgoing
		dialer = d
	} else if set["srv-ports"] {
		return usage("-srv-ports: not used in %s mode", *mode)
	}
	var defName string
	if *defaultHostname != "" {
		n, err := hostname.Canonical(*defaultHostname)
		if err != nil {
			return usage("-default-hostname: %v", err)
		}
		defName = n
	}
	if peekBudget < dispatch.PeekFree {
		return usage("-peek-budget %v: want at least %d bytes", &peekBudget, dispatch.PeekFree)
	}
	if *maxConns < 0 {
		return usage("-max-conns %d: must be 0 or more", *maxConns)
	}
	if *perClient < 0 {
		return usage("-max-conns-per-client %d: must be 0 or more", *perClient)
	}
	for _, spec := range listens {
		if strings.HasPrefix(spec, "udp:") && *mode == "unix" {
			return usage("-listen %s: QUIC is routed in tcp and nat46 modes only, not in unix mode", spec)
		}
	}
	switch {
	case *quicIdle <= 0:
		return usage("-quic-idle-timeout %v: must be above 0", *quicIdle)
	case *quicMaxFlows < 0:
		return usage("-quic-max-flows %d: must be 0 or more", *quicMaxFlows)
	case *quicPerClient < 0:
		return usage("-quic-max-flows-per-client %d: must be 0 or more", *quicPerClient)
	case *quicAnswer <= 0:
		return usage("-quic-answer-timeout %v: must be above 0", *quicAnswer)
	case *quicMaxPending < 0:
		return usage("-quic-max-pending %d: must be 0 or more", *quicMaxPending)
	case *quicRate < 0:
		return usage("-quic-flow-rate %v: must be 0 or more", *quicRate)
	case *quicBurst < 1:
		return usage("-quic-flow-burst %d: must be 1 or more", *quicBurst)
	case quicPendingBudget < quicflow.ReservedDatagrams*quic.MaxDatagramSize:
		return usage("-quic-pending-budget %v: want at least %d bytes (%d datagrams)", &quicPendingBudget, quicflow.ReservedDatagrams*quic.MaxDatagramSize, quicflow.ReservedDatagrams)
	}
	if *metricsListen != "" {
		if err := metrics.CheckAddress(*metricsListen); err != nil {
			return usage("-metrics-listen: %v", err)
		}
	} else if *metricsPerBackend {
		return usage("-metrics-per-backend: needs -metrics-listen")
	}
	log, err := logging.New(stderr, *logFormat, false)
	if err != nil {
		return usage("-log-format: %v", err)
	}

	// Signals are caught before READY=1 is sent: a stop right after
	// readiness must drain, not kill.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	socks, err := listener.OpenAll(listens)
	if err != nil {
		return c.Fail("%v", err)
	}
	lns, pcs := socks.Streams, socks.Datagrams
	if len(pcs) > 0 && *mode == "unix" {
		// Inherited from a socket unit with ListenDatagram= (the shipped
		// one has it, for tcp and nat46 modes): closed here. systemd
		// keeps its own copy open, so clients trying QUIC get no answer
		// and use TCP. One line at INFO: it is the default install.
		for _, pc := range pcs {
			log.Info("not serving QUIC: unix mode routes TCP only; use tcp or nat46 mode for QUIC", "address", "udp:"+pc.LocalAddr().String())
			pc.Close()
		}
		pcs = nil
		if len(lns) == 0 {
			return c.Fail("%v", listener.ErrNoListeners)
		}
	}
	allow.DenyListeners(lns)
	allow.DenyUDP(pcs)
	if len(pcs) > 0 && !set["max-conns"] && *maxConns > 0 && *quicMaxFlows > 0 {
		// The QUIC flows' descriptors come out of the TCP connections'
		// default share (two descriptors each).
		*maxConns = max(*maxConns-(*quicMaxFlows+1)/2, 16)
	}
	cfg := dispatch.Config{
		Dialer: dialer, ProxyHeader: byte(proxy), DefaultHostname: defName,
		PeekTimeout: *peekTimeout, ConnectTimeout: *connectTimeout, IdleTimeout: *idleTimeout,
		MaxConns: *maxConns, MaxConnsPerClient: *perClient, Log: log, Quiet: *quiet, TrustedFronts: fronts,
		PeekBudget: int64(peekBudget),
	}
	cfg.Outgoing = outgoing
	var qobs *metrics.QUIC
	if *metricsListen != "" {
		reg := metrics.NewRegistry()
		cfg.Observer = metrics.NewDispatcher(reg, *metricsPerBackend)
		if len(pcs) > 0 {
			qobs = metrics.NewQUIC(reg, *metricsPerBackend)
		}
		ms, err := metrics.Listen(*metricsListen, reg)
		if err != nil {
			return c.Fail("%v", err)
		}
		defer ms.Close()
		log.Info("metrics", "address", ms.Addr().String())
	}
	srv, err := dispatch.New(cfg)
	if err != nil {
		return c.Fail("%v", err)
	}
	defer srv.Close()
	if len(pcs) == 0 {
		return cli.Serve(srv, lns, signals, *shutdownTimeout, log, "mode", *mode)
	}
	noBound := func(n int) int {
		if n == 0 {
			return -1
		}
		return n
	}
	rate := *quicRate
	if rate == 0 {
		rate = -1
	}
	qcfg := quicdispatch.Config{
		Dialer: dialer.(quicdispatch.Dialer), DefaultHostname: defName, ConnectTimeout: *connectTimeout,
		Flows: quicflow.Config{MaxPending: noBound(*quicMaxPending), MaxHeldBytes: int(quicPendingBudget), MaxRouted: noBound(*quicMaxFlows),
			IdleTimeout: *quicIdle, NewFlowsPerSecond: rate, NewFlowBurst: *quicBurst,
			MaxFlowsPerClient: noBound(*quicPerClient), AnswerTimeout: *quicAnswer},
		Log: log, Quiet: *quiet, Outgoing: &backend.Outgoing{},
	}
	if qobs != nil {
		qcfg.Observer = qobs
	}
	qsrv, err := quicdispatch.New(qcfg)
	if err != nil {
		return c.Fail("%v", err)
	}
	if qobs != nil {
		qobs.WatchFlows(qsrv.Stats)
	}
	return cli.ServeDatagrams(srv, lns, qsrv, pcs, signals, *shutdownTimeout, log, "mode", *mode)
}

// newDialer builds the backend dialer for a mode from its flags; set says
// which flags were given, so that a flag of another mode is a usage error.
func newDialer(mode string, set map[string]bool, unixDir string, allow *backend.AllowList, port int, prefix string) (backend.Dialer, error) {
	notIn := func(mode string, flags ...string) error {
		for _, f := range flags {
			if set[f] {
				return fmt.Errorf("-%s: not used in %s mode", f, mode)
			}
		}
		return nil
	}
	switch mode {
	case "unix":
		if err := notIn(mode, "backend-cidr", "backend-port", "nat46-prefix"); err != nil {
			return nil, err
		}
		return backend.NewUnix(unixDir), nil
	case "tcp", "nat46":
		if allow.Empty() {
			return nil, fmt.Errorf("-backend-cidr: at least one is required in %s mode", mode)
		}
		if err := notIn(mode, "unix-directory"); err != nil {
			return nil, err
		}
		if port < 0 || port > 65535 {
			return nil, fmt.Errorf("-backend-port %d: want 1 to 65535", port)
		}
		d := backend.TCP{Allow: allow, Port: port}
		if mode == "tcp" {
			return d, notIn(mode, "nat46-prefix")
		}
		// nat46: the source address carries the client.
		if err := notIn(mode, "proxy-proto", "backend-port"); err != nil {
			return nil, err
		}
		p, err := nat46.ParsePrefix(prefix)
		if err != nil {
			return nil, fmt.Errorf("-nat46-prefix: %v", err)
		}
		d.NAT46 = p
		return d, nil
	}
	return nil, fmt.Errorf("-mode %q: want unix, tcp or nat46", mode)
}
