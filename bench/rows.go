package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// sni is the server name every client sends and every proxy routes. It is
// "localhost" so that the DNS-routed modes (snilisten -mode tcp) resolve
// it to the loopback backend from /etc/hosts on any machine.
const sni = "localhost"

// A row is one way for the clients to reach the backend: straight, or
// through one proxy that routes sni to it. Adding a row is adding an entry
// to rows; start writes whatever configuration the proxy needs into
// e.dir and runs it.
type row struct {
	name string
	// needs lists the programs (a name looked up in PATH, or an absolute
	// path) the row runs; a row whose program is missing is skipped with a
	// note.
	needs []string
	// version is the command that prints the proxy's version; its first
	// line goes into the results.
	version []string
	// start runs the proxy listening on addr (127.0.0.1:PORT) with one
	// worker or thread where it has the knob. nil means no proxy: the
	// clients connect to the backend's TCP address (the direct row).
	start func(e *env, addr string) (*proc, error)
	// twinOf is, for a row run with the -baseline binary (baselineTwin),
	// the name of the row it repeats; "" for the others.
	twinOf string
}

// env is what a row's start needs to know about this run.
type env struct {
	dir       string // a fresh temporary directory
	backend   *backendInfo
	snilisten string           // path of bin/snilisten
	baseline  string           // path of the -baseline binary, if any
	maxConns  int              // connections a proxy must admit at once (its maxconn)
	quic      *quicBackendInfo // the HTTP/3 backend, for the QUIC rows
}

// run starts argv with its output in e.dir/name.log.
func (e *env) run(name string, argv ...string) (*proc, error) {
	return startProc(e.dir, name, argv...)
}

// write puts a configuration file into e.dir and returns its path.
func (e *env) write(name, text string) (string, error) {
	path := filepath.Join(e.dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return path, nil
}

// snilistenRow is a row running bin/snilisten with args after -listen.
func snilistenRow(name string, args func(e *env) []string) row {
	return snilistenRowEnv(name, nil, args)
}

// snilistenRowEnv is snilistenRow with environment variables (NAME=value)
// set for snilisten, through env(1) so that the process measured is
// snilisten itself and the command line in the report shows them.
func snilistenRowEnv(name string, environ []string, args func(e *env) []string) row {
	return row{
		name:    name,
		needs:   []string{"snilisten"},
		version: []string{"snilisten", "-version"},
		start: func(e *env, addr string) (*proc, error) {
			var argv []string
			if len(environ) > 0 {
				argv = append(append([]string{"env"}, environ...), argv...)
			}
			argv = append(argv, e.snilisten, "-listen", "tcp:"+addr, "-q", "-max-conns", strconv.Itoa(e.maxConns))
			if hasFlag(e.snilisten, "max-conns-per-client") {
				// Every load comes from one address: no share, as
				// in the other proxies.
				argv = append(argv, "-max-conns-per-client", "0")
			}
			return e.run("snilisten", append(argv, args(e)...)...)
		},
	}
}

var (
	flagsMu sync.Mutex
	flags   = map[string]string{} // a binary's -h output
)

// hasFlag reports whether the program at path lists -name in its usage:
// a -baseline binary may predate a flag.
func hasFlag(path, name string) bool {
	flagsMu.Lock()
	defer flagsMu.Unlock()
	usage, ok := flags[path]
	if !ok {
		out, _ := exec.Command(path, "-h").CombinedOutput()
		usage = string(out)
		flags[path] = usage
	}
	return strings.Contains(usage, "-"+name+" ")
}

// baselineTwin is r (a snilisten row) run with the -baseline binary, as
// the row "NAME (baseline)".
func baselineTwin(r row) row {
	twin := r
	twin.name = r.name + " (baseline)"
	twin.twinOf = r.name
	twin.start = func(e *env, addr string) (*proc, error) {
		withBaseline := *e
		withBaseline.snilisten = e.baseline
		return r.start(&withBaseline, addr)
	}
	return twin
}

// rows are measured in this order in the first round; later rounds rotate
// it. The direct row comes first: the others are compared to it.
var rows = []row{
	{name: "direct"},
	snilistenRow("snilisten unix", func(e *env) []string {
		return []string{"-mode", "unix", "-unix-directory", filepath.Join(e.dir, "unix")}
	}),
	// The row above on one processor, as HAProxy and nginx run here with
	// one thread or worker: like for like with them, and what an operator
	// sharing a small machine with its backends can choose (GOMAXPROCS).
	snilistenRowEnv("snilisten unix GOMAXPROCS=1", []string{"GOMAXPROCS=1"}, func(e *env) []string {
		return []string{"-mode", "unix", "-unix-directory", filepath.Join(e.dir, "unix")}
	}),
	snilistenRow("snilisten unix +PROXY v2", func(e *env) []string {
		return []string{"-mode", "unix", "-unix-directory", filepath.Join(e.dir, "unix-proxy"), "-proxy-proto"}
	}),
	// The same as the row above with metrics recorded and served: what
	// -metrics-listen costs (goal: connection rate within 2%).
	snilistenRow("snilisten unix +PROXY v2 +metrics", func(e *env) []string {
		return []string{"-mode", "unix", "-unix-directory", filepath.Join(e.dir, "unix-proxy"), "-proxy-proto",
			"-metrics-listen", "127.0.0.1:0", "-metrics-per-backend"}
	}),
	snilistenRow("snilisten handoff", func(e *env) []string {
		return []string{"-mode", "unix", "-unix-directory", filepath.Join(e.dir, "handoff")}
	}),
	snilistenRow("snilisten tcp", func(e *env) []string {
		return []string{"-mode", "tcp", "-backend-cidr", "127.0.0.0/8", "-backend-port", strconv.Itoa(e.backend.port)}
	}),
	{
		name:    "nginx",
		needs:   []string{"nginx", nginxStream},
		version: []string{"nginx", "-v"},
		start:   startNginx,
	},
	{
		name:    "haproxy",
		needs:   []string{"haproxy"},
		version: []string{"haproxy", "-v"},
		start:   func(e *env, addr string) (*proc, error) { return startHAProxy(e, addr, "") },
	},
	// HAProxy with TCP_DEFER_ACCEPT, which snilisten always sets: how
	// much of the difference that option makes.
	{
		name:    "haproxy defer-accept",
		needs:   []string{"haproxy"},
		version: []string{"haproxy", "-v"},
		start:   func(e *env, addr string) (*proc, error) { return startHAProxy(e, addr, " defer-accept") },
	},
	{
		name:    "sniproxy",
		needs:   []string{"sniproxy"},
		version: []string{"sniproxy", "-V"},
		start:   startSniproxy,
	},
}

// nginxStream is where Debian's libnginx-mod-stream puts the module.
const nginxStream = "/usr/lib/nginx/modules/ngx_stream_module.so"

// startNginx runs nginx with ssl_preread and a map from the server name to
// the backend, in the foreground, one worker.
func startNginx(e *env, addr string) (*proc, error) {
	conf, err := e.write("nginx.conf", fmt.Sprintf(`load_module %s;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile %d;
pid %s/nginx.pid;
error_log stderr warn;
events {
	worker_connections %d;
}
stream {
	map $ssl_preread_server_name $backend {
		%s %s;
		default 127.0.0.1:9;
	}
	server {
		listen %s;
		ssl_preread on;
		proxy_pass $backend;
	}
}
`, nginxStream, 2*e.maxConns+64, e.dir, 2*e.maxConns+32, sni, e.backend.tcp, addr))
	if err != nil {
		return nil, err
	}
	return e.run("nginx", "nginx", "-e", "stderr", "-p", e.dir, "-c", conf)
}

// startHAProxy runs HAProxy in TCP mode, routing on req.ssl_sni after
// waiting for the ClientHello, one thread, in the foreground.
// bindOptions is appended to the bind line.
func startHAProxy(e *env, addr, bindOptions string) (*proc, error) {
	conf, err := e.write("haproxy.cfg", fmt.Sprintf(`global
	nbthread 1
	maxconn %d

defaults
	mode tcp
	timeout connect 10s
	timeout client 10m
	timeout server 10m

frontend sni
	bind %s%s
	tcp-request inspect-delay 5s
	tcp-request content accept if { req.ssl_hello_type 1 }
	use_backend bench if { req.ssl_sni -i %s }

backend bench
	server backend %s
`, e.maxConns, addr, bindOptions, sni, e.backend.tcp))
	if err != nil {
		return nil, err
	}
	return e.run("haproxy", "haproxy", "-db", "-f", conf)
}

// startSniproxy runs sniproxy with a table mapping the name to the
// backend, in the foreground.
func startSniproxy(e *env, addr string) (*proc, error) {
	// As root, sniproxy drops to a user ("daemon" by default) that could
	// not write into the bench's private directory; stay root.
	user := ""
	if os.Geteuid() == 0 {
		user = "user root\n"
	}
	conf, err := e.write("sniproxy.conf", fmt.Sprintf(`%spidfile %s/sniproxy.pid
error_log {
	filename %s/sniproxy-error.log
	priority warning
}
listener %s {
	protocol tls
	table bench
}
table bench {
	^%s$ %s
}
`, user, e.dir, e.dir, addr, sni, e.backend.tcp))
	if err != nil {
		return nil, err
	}
	return e.run("sniproxy", "sniproxy", "-f", "-c", conf)
}
