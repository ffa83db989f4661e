// Command redirect80 answers every HTTP request with a permanent redirect
// to https:// the same host, path and query, and forwards ACME HTTP-01
// challenges to the backend that owns the host. See redirect80(8).
package main

import (
	"errors"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/snitools/snitools/lib/backend"
	"github.com/snitools/snitools/lib/cli"
	"github.com/snitools/snitools/lib/listener"
	"github.com/snitools/snitools/lib/logging"
	"github.com/snitools/snitools/lib/metrics"
	"github.com/snitools/snitools/lib/proxyheader"
	"github.com/snitools/snitools/lib/redirect"
)

const synopsis = "usage: redirect80 [-listen SPEC]... [-acme unix:DIR | -acme tcp -backend-cidr CIDR...] [flags]\n"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	var (
		listens           listener.Specs
		allow             = &backend.AllowList{}
		fronts            proxyheader.Trusted
		c                 = cli.New("redirect80", synopsis, stdout, stderr)
		fs                = c.Flags
		acme              = fs.String("acme", "", "forward ACME HTTP-01 challenges: unix:DIR (socket DIR/<host>) or tcp (the host's own address, within -backend-cidr)")
		acmePort          = fs.Int("acme-port", 80, "port of the backends' HTTP servers (-acme tcp)")
		acmeTimeout       = fs.Duration("acme-timeout", redirect.DefaultACMETimeout, "time a backend has to answer a challenge")
		headerTimeout     = fs.Duration("header-timeout", redirect.DefaultHeaderTimeout, "time a client has to send a whole request header")
		idleTimeout       = fs.Duration("idle-timeout", redirect.DefaultIdleTimeout, "close a kept-alive connection with no new request for this long")
		maxHeaderBytes    = fs.Int("max-header-bytes", redirect.DefaultMaxHeaderBytes, "largest request header (request line and fields) in bytes")
		maxConns          = fs.Int("max-conns", redirect.DefaultMaxConns(), "concurrent connections; more wait in the kernel's queue (0: no bound)")
		maxConnsPerClient = fs.Int("max-conns-per-client", redirect.DefaultMaxConnsPerClient, "concurrent connections from one IPv4 address or IPv6 /64 (0: no bound)")
		shutdownTimeout   = fs.Duration("shutdown-timeout", 10*time.Second, "on SIGTERM, time requests being answered get to finish")
		logFormat         = fs.String("log-format", "text", "log format: text or json")
		quiet             = fs.Bool("q", false, "do not log requests")
		metricsListen     = fs.String("metrics-listen", "", "serve Prometheus metrics at /metrics on `ADDR` (HOST:PORT or unix:PATH; off by default)")
	)
	fs.Var(&listens, "listen", "`SPEC` to listen on: tcp:PORT, tcp:ADDR:PORT, unix:PATH or fd:NAME (repeatable; default: sockets from systemd, else tcp:80)")
	fs.Var(&fronts, "accept-proxy", "`CIDR` of trusted load balancers whose connections begin with a PROXY header (repeatable)")
	fs.Var(allow, "backend-cidr", "`CIDR` an -acme tcp backend address must lie in (repeatable)")
	if status, done := c.Parse(args); done {
		return status
	}
	if status, done := c.NoArgs(); done {
		return status
	}
	usage := c.Usage
	for name, d := range map[string]time.Duration{"-header-timeout": *headerTimeout, "-idle-timeout": *idleTimeout, "-acme-timeout": *acmeTimeout, "-shutdown-timeout": *shutdownTimeout} {
		if d <= 0 {
			return usage("%s %v: must be more than 0", name, d)
		}
	}
	if *maxHeaderBytes < 256 || *maxHeaderBytes > 1<<20 {
		return usage("-max-header-bytes %d: must be from 256 to 1048576", *maxHeaderBytes)
	}
	if *maxConns < 0 {
		return usage("-max-conns %d: must be 0 or more", *maxConns)
	}
	if *maxConnsPerClient < 0 {
		return usage("-max-conns-per-client %d: must be 0 or more", *maxConnsPerClient)
	}
	if *acmePort < 1 || *acmePort > 65535 {
		return usage("-acme-port %d: must be from 1 to 65535", *acmePort)
	}
	var forwarder *redirect.ACME
	switch kind, dir, _ := strings.Cut(*acme, ":"); {
	case *acme == "":
	case kind == "unix" && dir != "":
		forwarder = redirect.UnixACME(dir, *acmeTimeout)
	case *acme == "tcp":
		if allow.Empty() {
			return usage("-acme tcp: needs at least one -backend-cidr")
		}
		forwarder = redirect.TCPACME(allow, *acmePort, *acmeTimeout)
	default:
		return usage("-acme %q: want unix:DIR or tcp", *acme)
	}
	if !allow.Empty() && *acme != "tcp" {
		return usage("-backend-cidr: only with -acme tcp")
	}
	if *metricsListen != "" {
		if err := metrics.CheckAddress(*metricsListen); err != nil {
			return usage("-metrics-listen: %v", err)
		}
	}
	log, err := logging.New(stderr, *logFormat, false)
	if err != nil {
		return usage("-log-format: %v", err)
	}

	// Signals are caught before READY=1 is sent: a manager may stop the
	// service as soon as it is ready.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	lns, err := listener.Open(listens)
	if errors.Is(err, listener.ErrNoListeners) {
		lns, err = listener.Open([]string{"tcp:80"})
	}
	if err != nil {
		return c.Fail("%v", err)
	}
	allow.DenyListeners(lns)
	cfg := redirect.Config{
		HeaderTimeout: *headerTimeout, IdleTimeout: *idleTimeout, MaxHeaderBytes: *maxHeaderBytes,
		MaxConns: *maxConns, MaxConnsPerClient: *maxConnsPerClient, ACME: forwarder, Log: log, Quiet: *quiet,
		TrustedFronts: fronts,
	}
	if *metricsListen != "" {
		reg := metrics.NewRegistry()
		cfg.Observer = metrics.NewRedirect(reg)
		ms, err := metrics.Listen(*metricsListen, reg)
		if err != nil {
			return c.Fail("%v", err)
		}
		defer ms.Close()
		log.Info("metrics", "address", ms.Addr().String())
	}
	srv := redirect.New(cfg)
	return cli.Serve(srv, lns, signals, *shutdownTimeout, log, "acme", *acme)
}
