package main

import (
	"testing"

	"github.com/snitools/snitools/lib/cli/clitest"
)

// TestRunUsage runs the command in-process on command lines that stop
// before it does anything: the help, the version and usage errors go to
// the right stream with the exit status its man page gives.
func TestRunUsage(t *testing.T) {
	clitest.Run(t, "redirect80", run, []clitest.Case{
		{Args: []string{"-h"}, Status: 0, Stdout: "usage: redirect80 [-listen SPEC]"},
		{Args: []string{"-version"}, Status: 0, Stdout: "redirect80 dev\n"},
		{Args: []string{"-bogus"}, Status: 2, Stderr: "redirect80: flag provided but not defined: -bogus\n"},
		{Args: []string{"extra"}, Status: 2, Stderr: "redirect80: unexpected argument \"extra\"\n"},
		{Args: []string{"-acme", "ftp"}, Status: 2, Stderr: "redirect80: -acme \"ftp\": want unix:DIR or tcp\n"},
		{Args: []string{"-header-timeout", "0s"}, Status: 2, Stderr: "redirect80: -header-timeout 0s: must be more than 0\n"},
		{Args: []string{"-log-format", "xml"}, Status: 2, Stderr: "redirect80: -log-format:"},
	})
}
