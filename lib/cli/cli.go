// Package cli gives the toolkit's daemons one way to read their command
// line: a usage error is one line naming the flag and exit status 2, -h
// prints the whole usage to standard output, -version prints the version.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/snitools/snitools/lib/version"
)

// Parse defines -version on fs and parses args. When the command should
// stop at once (help, version, a usage error) it returns done and the
// exit status; otherwise the caller goes on.
func Parse(fs *flag.FlagSet, args []string) (status int, done bool) {
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.SetOutput(io.Discard) // errors are reported below, in one line
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fs.Usage()
			return 0, true
		}
		return Usage(fs.Name(), "%v", err), true
	}
	if *showVersion {
		version.Print()
		return 0, true
	}
	if fs.NArg() > 0 {
		return Usage(fs.Name(), "unexpected argument %q", fs.Arg(0)), true
	}
	return 0, false
}

// Usage reports a usage error on standard error as "command: message" and
// returns the exit status for it, 2.
func Usage(command, format string, a ...any) int {
	fmt.Fprintf(os.Stderr, command+": "+format+"\n", a...)
	return 2
}
