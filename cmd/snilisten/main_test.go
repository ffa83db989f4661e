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
		{Args: []string{"-listen", "udp:443"}, Status: 2, Stderr: "snilisten: -listen udp:443: QUIC is routed in tcp and nat46 modes only, not in unix mode\n"},
		{Args: []string{"-listen", "udp:x:443"}, Status: 2, Stderr: "snilisten: invalid value \"udp:x:443\" for flag -listen: listen spec \"udp:x:443\": address \"x\" is not an IP address\n"},
		{Args: []string{"-quic-idle-timeout", "0s"}, Status: 2, Stderr: "snilisten: -quic-idle-timeout 0s: must be above 0\n"},
		{Args: []string{"-quic-max-flows", "-1"}, Status: 2, Stderr: "snilisten: -quic-max-flows -1: must be 0 or more\n"},
		{Args: []string{"-quic-answer-timeout", "-1s"}, Status: 2, Stderr: "snilisten: -quic-answer-timeout -1s: must be above 0\n"},
		{Args: []string{"-quic-max-flows-per-client", "-2"}, Status: 2, Stderr: "snilisten: -quic-max-flows-per-client -2: must be 0 or more\n"},
		{Args: []string{"-quic-flow-burst", "0"}, Status: 2, Stderr: "snilisten: -quic-flow-burst 0: must be 1 or more\n"},
		{Args: []string{"-quic-pending-budget", "1K"}, Status: 2, Stderr: "snilisten: -quic-pending-budget 1K: want at least"},
	})
}
