package main

import (
	"testing"

	"github.com/snitools/snitools/lib/cli/clitest"
)

// TestRunUsage runs the command in-process on command lines that stop
// before it does anything: the help, the version and usage errors go to
// the right stream with the exit status its man page gives.
func TestRunUsage(t *testing.T) {
	clitest.Run(t, "bindshim", run, []clitest.Case{
		{Args: []string{"-h"}, Status: 0, Stdout: "usage: bindshim [-d dir]"},
		{Args: []string{"-version"}, Status: 0, Stdout: "bindshim dev\n"},
		{Args: []string{"-bogus"}, Status: 2, Stderr: "bindshim: flag provided but not defined: -bogus\n"},
		{Args: []string{}, Status: 2, Stderr: "bindshim: missing host (see -h)\n"},
		{Args: []string{"a.test"}, Status: 2, Stderr: "bindshim: missing command to run (see -h)\n"},
		{Args: []string{"a.test", "-h"}, Status: 0, Stdout: "usage: bindshim [-d dir]"},
		{Args: []string{"a.test", "-version", "--", "true"}, Status: 2, Stderr: "bindshim: flag provided but not defined: -version\n"},
		{Args: []string{"-m", "99", "a.test", "--", "true"}, Status: 2, Stderr: "bindshim: -m \"99\": want an octal mode such as 0660\n"},
		{Args: []string{"-g", "no-such-group-here", "a.test", "--", "true"}, Status: 2, Stderr: "bindshim: -g no-such-group-here:"},
	})
}
