// Command bindshim runs an unmodified TCP server so that its bind() to the
// HTTPS port becomes a UNIX socket at /var/tls/<host>, and its accept() and
// getpeername() report the client address from the PROXY header that
// snilisten sends; with -handoff, its accept() receives the client's TCP
// socket itself from snilisten. See bindshim(1).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/snitools/snitools/lib/shim"
	"github.com/snitools/snitools/lib/version"
)

const usage = `usage: bindshim [-d dir] [-p port] [-m mode] [-g group] [-trust-uid uid]...
                [-replace] [-handoff] [-header-timeout duration] host
                [-alias name]... [--] command [arg...]

Runs command with its bind() to TCP port (443) turned into a UNIX socket at
dir/host, accepting only connections that begin with a PROXY header from
root or a trusted uid; with -handoff, a SOCK_SEQPACKET socket on which
accept() receives each client's TCP socket from snilisten (root, the
server's uid or a trusted uid). Flags:
`

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v == "" {
			return errors.New("empty value")
		}
		*l = append(*l, v)
	}
	return nil
}

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	var (
		cfg      = shim.Config{GID: -1}
		aliases  listFlag
		trust    listFlag
		mode     string
		group    string
		showVers bool
	)
	fs := flag.NewFlagSet("bindshim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Dir, "d", "/var/tls", "`dir`ectory of the UNIX socket")
	fs.IntVar(&cfg.Port, "p", 443, "TCP `port` whose binds become the socket")
	fs.StringVar(&mode, "m", "0660", "octal `mode` of the socket file")
	fs.StringVar(&group, "g", "", "`group` (name or number) of the socket file (default: the directory's if set-group-ID, as /var/tls is; else the server's)")
	fs.Var(&trust, "trust-uid", "`uid` (name or number) besides root allowed to send PROXY headers (with -handoff: to hand over connections, as the server's own uid may); repeatable")
	fs.BoolVar(&cfg.Replace, "replace", false, "take over a live socket and aliases, for a restart without downtime")
	fs.BoolVar(&cfg.Handoff, "handoff", false, "receive each client's TCP socket from snilisten over a SOCK_SEQPACKET socket, instead of a stream with a PROXY header")
	fs.DurationVar(&cfg.HeaderTimeout, "header-timeout", time.Second, "how long to wait for a connection's PROXY header or handoff message")
	fs.Var(&aliases, "alias", "another host `name` for the same server; repeatable, also after host")
	fs.BoolVar(&showVers, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if showVers {
		version.Print()
		return 0
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "bindshim: missing host (see -h)")
		return 2
	}
	cfg.Host = rest[0]
	// -alias may follow the host: bindshim a.example -alias b.example -- cmd
	after := flag.NewFlagSet("bindshim", flag.ContinueOnError)
	after.SetOutput(stderr)
	after.Usage = fs.Usage
	after.Var(&aliases, "alias", "")
	if err := after.Parse(rest[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	command := after.Args()
	if len(command) == 0 {
		fmt.Fprintln(stderr, "bindshim: missing command to run (see -h)")
		return 2
	}
	cfg.Aliases = aliases

	m, err := strconv.ParseUint(mode, 8, 32)
	if err != nil {
		fmt.Fprintf(stderr, "bindshim: -m %q: want an octal mode such as 0660\n", mode)
		return 2
	}
	cfg.Mode = os.FileMode(m)
	if group != "" {
		if cfg.GID, err = shim.LookupGID(group); err != nil {
			fmt.Fprintf(stderr, "bindshim: -g %s: %v\n", group, err)
			return 2
		}
	}
	for _, u := range trust {
		uid, err := shim.LookupUID(u)
		if err != nil {
			fmt.Fprintf(stderr, "bindshim: -trust-uid %s: %v\n", u, err)
			return 2
		}
		cfg.TrustUIDs = append(cfg.TrustUIDs, uid)
	}
	if err := cfg.Check(); err != nil {
		fmt.Fprintf(stderr, "bindshim: %v\n", err)
		return 2
	}

	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "bindshim: %v\n", err)
		return 1
	}
	lib, err := shim.FindLibrary(exe, os.Getenv("BINDSHIM_LIBRARY"))
	if err != nil {
		fmt.Fprintf(stderr, "bindshim: %v\n", err)
		return 1
	}
	env, err := cfg.Environ(os.Environ(), lib)
	if err != nil {
		fmt.Fprintf(stderr, "bindshim: %v\n", err)
		return 1
	}
	path, err := exec.LookPath(command[0])
	if err != nil {
		fmt.Fprintf(stderr, "bindshim: %v\n", err)
		return 1
	}
	if err := shim.Preloadable(path); err != nil {
		fmt.Fprintf(stderr, "bindshim: warning: %v\n", err)
	}
	if err := cfg.LinkAliases(); err != nil {
		fmt.Fprintf(stderr, "bindshim: %v\n", err)
		return 1
	}
	err = syscall.Exec(path, command, env)
	fmt.Fprintf(stderr, "bindshim: exec %s: %v\n", path, err)
	return 1
}
