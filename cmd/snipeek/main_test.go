package main

import (
	"testing"

	"github.com/snitools/snitools/lib/cli/clitest"
)

// TestRunUsage runs the command in-process on command lines that stop
// before it does anything: the help, the version and usage errors go to
// the right stream with the exit status its man page gives.
func TestRunUsage(t *testing.T) {
	clitest.Run(t, "snipeek", run, []clitest.Case{
		{Args: []string{"-h"}, Status: 0, Stdout: "usage: snipeek [-json] [FILE]"},
		{Args: []string{"-version"}, Status: 0, Stdout: "snipeek dev\n"},
		{Args: []string{"-bogus"}, Status: 2, Stderr: "snipeek: flag provided but not defined: -bogus\n"},
		{Args: []string{"-timeout", "soon"}, Status: 2, Stderr: "snipeek: invalid value \"soon\" for flag -timeout"},
		{Args: []string{"/nonexistent/hello.bin"}, Status: 1, Stderr: "snipeek: open /nonexistent/hello.bin: no such file or directory\n"},
	})
}
