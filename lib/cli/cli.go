// Package cli gives the toolkit's commands one way to read their command
// line, so that all five behave alike: -h prints the whole usage to
// standard output and exits 0, -version prints "<command> <version>" and
// exits 0, a usage error is one line "command: message" naming the flag on
// standard error and exit status 2, a failure at run time is one such line
// and exit status 1.
//
// Every main has the same shape:
//
//	func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
//
//	func run(args []string, stdout, stderr io.Writer) int {
//		c := cli.New("name", synopsis, stdout, stderr)
//		flagX := c.Flags.String(...)
//		if status, done := c.Parse(args); done {
//			return status
//		}
//		...
//		return c.Usage("-x %q: want ...", *flagX)
//	}
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/snitools/snitools/lib/version"
)

// Exit statuses, as every command's man page documents them.
const (
	ExitOK      = 0 // done: served until a signal, printed, or -h, -version
	ExitFailure = 1 // a failure at run time
	ExitUsage   = 2 // a usage error: a bad flag, value or argument
)

// Command is one command's command line: its flags, its usage text and
// where it writes.
type Command struct {
	// Flags are the command's flags; callers define theirs on it before
	// Parse. -version is already defined.
	Flags *flag.FlagSet
	// Stdout and Stderr are where help and version, and errors, go.
	Stdout, Stderr io.Writer

	name        string
	synopsis    string
	showVersion *bool
}

// New returns the command line of the command name. synopsis is printed by
// -h before the list of flags; it says "usage: name ..." and what the
// command does, and ends in a newline. The flag set reports nothing itself
// (ContinueOnError, output discarded): Parse turns its errors into one line.
func New(name, synopsis string, stdout, stderr io.Writer) *Command {
	c := &Command{Flags: flag.NewFlagSet(name, flag.ContinueOnError), Stdout: stdout, Stderr: stderr, name: name, synopsis: synopsis}
	c.Flags.SetOutput(io.Discard)
	c.Flags.Usage = func() {}
	c.showVersion = c.Flags.Bool("version", false, "print the version and exit")
	return c
}

// Parse parses args with the command's flags. When the command should stop
// at once (-h, -version, a usage error) it returns done and the exit
// status; otherwise the caller goes on with c.Flags.Args(). Use NoArgs
// after it for a command that takes no arguments.
func (c *Command) Parse(args []string) (status int, done bool) {
	if status, done := c.ParseMore(c.Flags, args); done {
		return status, true
	}
	if *c.showVersion {
		fmt.Fprintf(c.Stdout, "%s %s\n", c.name, version.Version)
		return ExitOK, true
	}
	return ExitOK, false
}

// ParseMore parses args with a further flag set fs, for flags that may
// follow an argument (bindshim's -alias after the host), reporting -h and
// errors as Parse does.
func (c *Command) ParseMore(fs *flag.FlagSet, args []string) (status int, done bool) {
	fs.SetOutput(io.Discard) // errors are reported below, in one line
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.PrintUsage()
			return ExitOK, true
		}
		return c.Usage("%v", err), true
	}
	return ExitOK, false
}

// NoArgs reports a usage error for the first argument left after the
// flags, for a command that takes none.
func (c *Command) NoArgs() (status int, done bool) {
	if c.Flags.NArg() > 0 {
		return c.Usage("unexpected argument %q", c.Flags.Arg(0)), true
	}
	return ExitOK, false
}

// PrintUsage writes the synopsis and the flags with their defaults to
// standard output, as -h does.
func (c *Command) PrintUsage() {
	fmt.Fprint(c.Stdout, c.synopsis)
	c.Flags.SetOutput(c.Stdout)
	c.Flags.PrintDefaults()
	c.Flags.SetOutput(io.Discard)
}

// Given returns the names of the flags given on the command line, for
// flags that are an error in some modes even when given their default.
func (c *Command) Given() map[string]bool {
	set := map[string]bool{}
	c.Flags.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// Usage reports a usage error on standard error as "command: message" and
// returns its exit status, ExitUsage.
func (c *Command) Usage(format string, a ...any) int {
	c.report(format, a...)
	return ExitUsage
}

// Fail reports a failure at run time on standard error as
// "command: message" and returns its exit status, ExitFailure.
func (c *Command) Fail(format string, a ...any) int {
	c.report(format, a...)
	return ExitFailure
}

// Warn reports a problem that does not stop the command, as
// "command: warning: message".
func (c *Command) Warn(format string, a ...any) {
	c.report("warning: "+format, a...)
}

func (c *Command) report(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	fmt.Fprintf(c.Stderr, "%s: %s\n", c.name, strings.TrimSuffix(msg, "\n"))
}
