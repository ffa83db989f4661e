// Command bindshim runs an unmodified TCP server so that its bind() to the
// HTTPS port becomes a UNIX socket at /var/tls/<host>, and its accept() and
// getpeername() report the client address from the PROXY header that
// snilisten sends; with -handoff, its accept() receives the client's TCP
// socket itself from snilisten. See bindshim(1).
package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/snitools/snitools/lib/bindshim"
	"github.com/snitools/snitools/lib/cli"
)

const synopsis = `usage: bindshim [-d dir] [-p port] [-m mode] [-g group] [-trust-uid uid]...
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

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	var (
		cfg     = bindshim.Config{GID: -1}
		aliases listFlag
		trust   listFlag
		c       = cli.New("bindshim", synopsis, stdout, stderr)
		fs      = c.Flags
		mode    = fs.String("m", "0660", "octal `mode` of the socket file")
		group   = fs.String("g", "", "`group` (name or number) of the socket file (default: the directory's if set-group-ID, as /var/tls is; else the server's)")
	)
	fs.StringVar(&cfg.Dir, "d", "/var/tls", "`dir`ectory of the UNIX socket")
	fs.IntVar(&cfg.Port, "p", 443, "TCP `port` whose binds become the socket")
	fs.Var(&trust, "trust-uid", "`uid` (name or number) besides root allowed to send PROXY headers (with -handoff: to hand over connections, as the server's own uid may); repeatable")
	fs.BoolVar(&cfg.Replace, "replace", false, "take over a live socket and aliases, for a restart without downtime")
	fs.BoolVar(&cfg.Handoff, "handoff", false, "receive each client's TCP socket from snilisten over a SOCK_SEQPACKET socket, instead of a stream with a PROXY header")
	fs.DurationVar(&cfg.HeaderTimeout, "header-timeout", time.Second, "how long to wait for a connection's PROXY header or handoff message")
	fs.Var(&aliases, "alias", "another host `name` for the same server; repeatable, also after host")
	if status, done := c.Parse(args); done {
		return status
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return c.Usage("missing host (see -h)")
	}
	cfg.Host = rest[0]
	// -alias may follow the host: bindshim a.example -alias b.example -- cmd
	after := flag.NewFlagSet("bindshim", flag.ContinueOnError)
	after.Var(&aliases, "alias", "")
	if status, done := c.ParseMore(after, rest[1:]); done {
		return status
	}
	command := after.Args()
	if len(command) == 0 {
		return c.Usage("missing command to run (see -h)")
	}
	cfg.Aliases = aliases

	m, err := strconv.ParseUint(*mode, 8, 32)
	if err != nil {
		return c.Usage("-m %q: want an octal mode such as 0660", *mode)
	}
	cfg.Mode = os.FileMode(m)
	if *group != "" {
		if cfg.GID, err = bindshim.LookupGID(*group); err != nil {
			return c.Usage("-g %s: %v", *group, err)
		}
	}
	for _, u := range trust {
		uid, err := bindshim.LookupUID(u)
		if err != nil {
			return c.Usage("-trust-uid %s: %v", u, err)
		}
		cfg.TrustUIDs = append(cfg.TrustUIDs, uid)
	}
	if err := cfg.Check(); err != nil {
		return c.Usage("%v", err)
	}

	exe, err := os.Executable()
	if err != nil {
		return c.Fail("%v", err)
	}
	lib, err := bindshim.FindLibrary(exe, os.Getenv("BINDSHIM_LIBRARY"))
	if err != nil {
		return c.Fail("%v", err)
	}
	err = cfg.Exec(lib, command, os.Environ(), func(err error) { c.Warn("%v", err) })
	return c.Fail("%v", err)
}
