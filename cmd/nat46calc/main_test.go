package main

import (
	"testing"

	"github.com/snitools/snitools/lib/cli/clitest"
)

// TestRunUsage runs the command in-process on command lines that stop
// before it does anything: the help, the version and usage errors go to
// the right stream with the exit status its man page gives.
func TestRunUsage(t *testing.T) {
	clitest.Run(t, "nat46calc", run, []clitest.Case{
		{Args: []string{"-h"}, Status: 0, Stdout: "usage: nat46calc [-p prefix]"},
		{Args: []string{"-version"}, Status: 0, Stdout: "nat46calc dev\n"},
		{Args: []string{"-bogus"}, Status: 2, Stderr: "nat46calc: flag provided but not defined: -bogus\n"},
		{Args: []string{"-4", "-6"}, Status: 2, Stderr: "nat46calc: -4 and -6: give one direction\n"},
		{Args: []string{"-u", "192.0.2.33"}, Status: 2, Stderr: "nat46calc: -u: only without address arguments (filter mode)\n"},
		{Args: []string{"-p", "junk", "192.0.2.33"}, Status: 2, Stderr: "nat46calc: -p: "},
		{Args: []string{"-p", "64:ff9b::", "192.0.2.33", "junk"}, Status: 1, Stdout: "64:ff9b::c000:221\n", Stderr: "nat46calc: translate \"junk\""},
	})
}
