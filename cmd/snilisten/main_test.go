package main

import (
	"testing"

	"github.com/snitools/snitools/lib/cli/clitest"
)

// TestRunUsage runs the command in-process on command lines that stop
// before it does anything: the help, the version and usage errors go to
// the right stream with the exit status its man page gives.
func TestRunUsage(t *testing.T) {
	clitest.Run(t, "snilisten", run, []clitest.Case{
		{Args: []string{"-h"}, Status: 0, Stdout: "usage: snilisten [-listen SPEC]"},
		{Args: []string{"-version"}, Status: 0, Stdout: "snilisten dev\n"},
		{Args: []string{"-bogus"}, Status: 2, Stderr: "snilisten: flag provided but not defined: -bogus\n"},
		{Args: []string{"extra"}, Status: 2, Stderr: "snilisten: unexpected argument \"extra\"\n"},
		{Args: []string{"-mode", "x"}, Status: 2, Stderr: "snilisten: -mode \"x\": want unix, tcp or nat46\n"},
		{Args: []string{"-mode", "tcp"}, Status: 2, Stderr: "snilisten: -backend-cidr: at least one is required in tcp mode\n"},
		{Args: []string{"-backend-port", "80"}, Status: 2, Stderr: "snilisten: -backend-port: not used in unix mode\n"},
		{Args: []string{"-peek-budget", "1"}, Status: 2, Stderr: "snilisten: -peek-budget 1: want at least"},
		{Args: []string{"-metrics-per-backend"}, Status: 2, Stderr: "snilisten: -metrics-per-backend: needs -metrics-listen\n"},
		{Args: []string{"-log-format", "xml"}, Status: 2, Stderr: "snilisten: -log-format:"},
	})
}
