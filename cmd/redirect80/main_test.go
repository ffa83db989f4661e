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
		{[]string{"-h"}, 0, "usage: redirect80 [-listen SPEC]", ""},
		{[]string{"-version"}, 0, "redirect80 dev\n", ""},
		{[]string{"-bogus"}, 2, "", "redirect80: flag provided but not defined: -bogus\n"},
		{[]string{"extra"}, 2, "", "redirect80: unexpected argument \"extra\"\n"},
		{[]string{"-acme", "ftp"}, 2, "", "redirect80: -acme \"ftp\": want unix:DIR or tcp\n"},
		{[]string{"-header-timeout", "0s"}, 2, "", "redirect80: -header-timeout 0s: must be more than 0\n"},
		{[]string{"-log-format", "xml"}, 2, "", "redirect80: -log-format:"},
	} {
		var stdout, stderr bytes.Buffer
		status := run(tc.args, &stdout, &stderr)
		if status != tc.status || !prefix(stdout.String(), tc.stdout) || !prefix(stderr.String(), tc.stderr) ||
			(tc.status == 2 && strings.Count(stderr.String(), "\n") != 1) {
			t.Errorf("redirect80 %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q..., stderr %q...",
				tc.args, status, stdout.String(), stderr.String(), tc.status, tc.stdout, tc.stderr)
		}
	}
}

// prefix reports whether s begins with p, and is empty if p is.
func prefix(s, p string) bool { return strings.HasPrefix(s, p) && (p != "" || s == "") }
