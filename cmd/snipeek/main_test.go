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
		{[]string{"-h"}, 0, "usage: snipeek [-json] [FILE]", ""},
		{[]string{"-version"}, 0, "snipeek dev\n", ""},
		{[]string{"-bogus"}, 2, "", "snipeek: flag provided but not defined: -bogus\n"},
		{[]string{"-timeout", "soon"}, 2, "", "snipeek: invalid value \"soon\" for flag -timeout"},
		{[]string{"/nonexistent/hello.bin"}, 1, "", "snipeek: open /nonexistent/hello.bin: no such file or directory\n"},
	} {
		var stdout, stderr bytes.Buffer
		status := run(tc.args, &stdout, &stderr)
		if status != tc.status || !prefix(stdout.String(), tc.stdout) || !prefix(stderr.String(), tc.stderr) ||
			(tc.status == 2 && strings.Count(stderr.String(), "\n") != 1) {
			t.Errorf("snipeek %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q..., stderr %q...",
				tc.args, status, stdout.String(), stderr.String(), tc.status, tc.stdout, tc.stderr)
		}
	}
}

// prefix reports whether s begins with p, and is empty if p is.
func prefix(s, p string) bool { return strings.HasPrefix(s, p) && (p != "" || s == "") }
