package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestRunUsage runs the command in-process on command lines that stop
// before it does anything: the help, the version and usage errors go to
// the right stream with the exit status its man page gives.
func TestRunUsage(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		status         int
		stdout, stderr string // a prefix of each; "" means empty
	}{
		{[]string{"-h"}, 0, "usage: snilisten [-listen SPEC]", ""},
		{[]string{"-version"}, 0, "snilisten dev\n", ""},
		{[]string{"-bogus"}, 2, "", "snilisten: flag provided but not defined: -bogus\n"},
		{[]string{"extra"}, 2, "", "snilisten: unexpected argument \"extra\"\n"},
		{[]string{"-mode", "x"}, 2, "", "snilisten: -mode \"x\": want unix, tcp or nat46\n"},
		{[]string{"-mode", "tcp"}, 2, "", "snilisten: -backend-cidr: at least one is required in tcp mode\n"},
		{[]string{"-backend-port", "80"}, 2, "", "snilisten: -backend-port: not used in unix mode\n"},
		{[]string{"-peek-budget", "1"}, 2, "", "snilisten: -peek-budget 1: want at least"},
		{[]string{"-metrics-per-backend"}, 2, "", "snilisten: -metrics-per-backend: needs -metrics-listen\n"},
		{[]string{"-log-format", "xml"}, 2, "", "snilisten: -log-format:"},
	} {
		var stdout, stderr bytes.Buffer
		status := run(tc.args, &stdout, &stderr)
		if status != tc.status || !prefix(stdout.String(), tc.stdout) || !prefix(stderr.String(), tc.stderr) ||
			(tc.status == 2 && strings.Count(stderr.String(), "\n") != 1) {
			t.Errorf("snilisten %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q..., stderr %q...",
				tc.args, status, stdout.String(), stderr.String(), tc.status, tc.stdout, tc.stderr)
		}
	}
}

// prefix reports whether s begins with p, and is empty if p is.
func prefix(s, p string) bool { return strings.HasPrefix(s, p) && (p != "" || s == "") }
