// Command snipeek prints what a TLS ClientHello says, or peeks at the
// ClientHello on the connection it was started on (inetd, systemd
// Accept=yes) and executes the next program with TLS_SNI and TLS_ALPN in
// its environment and the connection untouched on standard input.
package main

import (
	"errors"
	"io"
	"os"
	"time"

	"github.com/snitools/snitools/lib/cli"
	"github.com/snitools/snitools/lib/hostname"
	"github.com/snitools/snitools/lib/logging"
	"github.com/snitools/snitools/lib/snipeek"
)

const synopsis = `usage: snipeek [-json] [FILE]
       snipeek [-timeout D] [-default-hostname H] PROGRAM [ARGS...]

Print what the TLS ClientHello in FILE (or standard input) says. Or, with
standard input a connected socket (inetd, systemd Accept=yes), peek at the
ClientHello without consuming it, set TLS_SNI and TLS_ALPN and execute
PROGRAM on the untouched connection.

`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	var (
		c           = cli.New("snipeek", synopsis, stdout, stderr)
		jsonOut     = c.Flags.Bool("json", false, "print one JSON object instead of key value lines")
		timeout     = c.Flags.Duration("timeout", 5*time.Second, "exec mode: how long to wait for the whole ClientHello (0: forever)")
		defaultHost = c.Flags.String("default-hostname", "", "exec mode: server `name` for a ClientHello without one (default: refuse it)")
	)
	if status, done := c.Parse(args); done {
		return status
	}
	set := c.Given()

	connFD, sockErr := snipeek.FindConn()
	if c.Flags.NArg() > 0 && sockErr == nil {
		if set["json"] {
			return c.Usage("-json: only when reading a ClientHello from a file")
		}
		if *timeout < 0 {
			return c.Usage("-timeout: %v is negative", *timeout)
		}
		cfg := snipeek.Config{Timeout: *timeout}
		if *defaultHost != "" {
			def, err := hostname.Canonical(*defaultHost)
			if err != nil {
				return c.Usage("-default-hostname: %v", err)
			}
			cfg.DefaultHostname = def
		}
		log, err := logging.New(stderr, "text", false)
		if err != nil {
			return c.Fail("%v", err)
		}
		cfg.Log = log
		snipeek.Run(connFD, c.Flags.Args(), os.Environ(), cfg) // returns only on failure, logged
		return cli.ExitFailure
	}

	for _, name := range []string{"timeout", "default-hostname"} {
		if set[name] {
			return c.Usage("-%s: only with PROGRAM and a connection to peek at (%v)", name, sockErr)
		}
	}
	switch c.Flags.NArg() {
	case 0:
		if err := snipeek.Describe(stdout, os.Stdin, "standard input", *jsonOut); err != nil {
			return c.Fail("%v", err)
		}
		return cli.ExitOK
	case 1:
		name := c.Flags.Arg(0)
		f, err := os.Open(name)
		if errors.Is(err, os.ErrNotExist) {
			if _, lerr := snipeek.LookPath(name); lerr == nil {
				return c.Usage("%s: no such file; as a PROGRAM it needs a connection to peek at (%v)", name, sockErr)
			}
		}
		if err != nil {
			return c.Fail("%v", err)
		}
		defer f.Close()
		if err := snipeek.Describe(stdout, f, name, *jsonOut); err != nil {
			return c.Fail("%v", err)
		}
		return cli.ExitOK
	default:
		return c.Usage("PROGRAM: no connection to peek at (%v); to read a file give just FILE", sockErr)
	}
}
