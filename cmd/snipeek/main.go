// Command snipeek prints what a TLS ClientHello says, or peeks at the
// ClientHello on the connection it was started on (inetd, systemd
// Accept=yes) and executes the next program with TLS_SNI and TLS_ALPN in
// its environment and the connection untouched on standard input.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/snitools/snitools/lib/clienthello"
	"github.com/snitools/snitools/lib/hostname"
	"github.com/snitools/snitools/lib/logging"
	"github.com/snitools/snitools/lib/peekexec"
	"github.com/snitools/snitools/lib/version"
)

const usage = `usage: snipeek [-json] [FILE]
       snipeek [-timeout D] [-default-hostname H] PROGRAM [ARGS...]

Print what the TLS ClientHello in FILE (or standard input) says. Or, with
standard input a connected socket (inetd, systemd Accept=yes), peek at the
ClientHello without consuming it, set TLS_SNI and TLS_ALPN and execute
PROGRAM on the untouched connection.

`

func main() {
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
	}
	jsonOut := flag.Bool("json", false, "print one JSON object instead of key value lines")
	timeout := flag.Duration("timeout", 5*time.Second, "exec mode: how long to wait for the whole ClientHello (0: forever)")
	defaultHost := flag.String("default-hostname", "", "exec mode: server `name` for a ClientHello without one (default: refuse it)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		version.Print()
		return
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })

	connFD, sockErr := peekexec.FindConn()
	if flag.NArg() > 0 && sockErr == nil {
		if set["json"] {
			usageError("-json: only when reading a ClientHello from a file")
		}
		if *timeout < 0 {
			usageError("-timeout: %v is negative", *timeout)
		}
		var def string
		if *defaultHost != "" {
			var err error
			if def, err = hostname.Canonical(*defaultHost); err != nil {
				usageError("-default-hostname: %v", err)
			}
		}
		os.Exit(execMode(connFD, flag.Args(), peekexec.Config{Timeout: *timeout, DefaultHostname: def}))
	}

	for _, name := range []string{"timeout", "default-hostname"} {
		if set[name] {
			usageError("-%s: only with PROGRAM and a connection to peek at (%v)", name, sockErr)
		}
	}
	switch flag.NArg() {
	case 0:
		os.Exit(fileMode(os.Stdin, "standard input", *jsonOut))
	case 1:
		f, err := os.Open(flag.Arg(0))
		if errors.Is(err, os.ErrNotExist) {
			if _, lerr := peekexec.LookPath(flag.Arg(0)); lerr == nil {
				usageError("%s: no such file; as a PROGRAM it needs a connection to peek at (%v)", flag.Arg(0), sockErr)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "snipeek: %v\n", err)
			os.Exit(1)
		}
		defer f.Close()
		os.Exit(fileMode(f, flag.Arg(0), *jsonOut))
	default:
		usageError("PROGRAM: no connection to peek at (%v); to read a file give just FILE", sockErr)
	}
}

// fileMode prints the ClientHello read from r and returns the exit status.
func fileMode(r io.Reader, name string, jsonOut bool) int {
	info, err := peekexec.ReadHello(r, clienthello.DefaultLimit)
	if err != nil {
		fmt.Fprintf(os.Stderr, "snipeek: %s: %v\n", name, err)
		return 1
	}
	s := peekexec.Summarize(&info)
	if jsonOut {
		err = s.WriteJSON(os.Stdout)
	} else {
		err = s.WriteText(os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "snipeek: %v\n", err)
		return 1
	}
	return 0
}

// execMode peeks at the connection on fd and executes args with the
// result in the environment and the connection on standard input and
// output; it returns only on failure.
func execMode(fd int, args []string, cfg peekexec.Config) int {
	log, err := logging.New(os.Stderr, "text", false)
	if err != nil {
		fmt.Fprintf(os.Stderr, "snipeek: %v\n", err)
		return 1
	}
	path, err := peekexec.LookPath(args[0])
	if err != nil {
		log.Error("cannot run program", "error", err.Error())
		return 1
	}
	cfg.Log = log
	d, err := peekexec.PeekFD(fd, cfg)
	if err != nil {
		var ref *peekexec.Refusal
		if !errors.As(err, &ref) {
			log.Error("peek failed", "error", err.Error())
		}
		return 1
	}
	env, err := peekexec.AsStdio(fd, peekexec.Environ(os.Environ(), d))
	if err == nil {
		err = peekexec.Exec(path, args, env)
	}
	log.Error("cannot run program", "error", err.Error())
	return 1
}

func usageError(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "snipeek: "+format+"\n", args...)
	os.Exit(2)
}
