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
		{[]string{"-h"}, 0, "usage: bindshim [-d dir]", ""},
		{[]string{"-version"}, 0, "bindshim dev\n", ""},
		{[]string{"-bogus"}, 2, "", "bindshim: flag provided but not defined: -bogus\n"},
		{[]string{}, 2, "", "bindshim: missing host (see -h)\n"},
		{[]string{"a.test"}, 2, "", "bindshim: missing command to run (see -h)\n"},
		{[]string{"a.test", "-h"}, 0, "usage: bindshim [-d dir]", ""},
		{[]string{"a.test", "-version", "--", "true"}, 2, "", "bindshim: flag provided but not defined: -version\n"},
		{[]string{"-m", "99", "a.test", "--", "true"}, 2, "", "bindshim: -m \"99\": want an octal mode such as 0660\n"},
		{[]string{"-g", "no-such-group-here", "a.test", "--", "true"}, 2, "", "bindshim: -g no-such-group-here:"},
	} {
		var stdout, stderr bytes.Buffer
		status := run(tc.args, &stdout, &stderr)
		if status != tc.status || !prefix(stdout.String(), tc.stdout) || !prefix(stderr.String(), tc.stderr) ||
			(tc.status == 2 && strings.Count(stderr.String(), "\n") != 1) {
			t.Errorf("bindshim %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q..., stderr %q...",
				tc.args, status, stdout.String(), stderr.String(), tc.status, tc.stdout, tc.stderr)
		}
	}
}

// prefix reports whether s begins with p, and is empty if p is.
func prefix(s, p string) bool { return strings.HasPrefix(s, p) && (p != "" || s == "") }
