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
		{[]string{"-h"}, 0, "usage: nat46calc [-p prefix]", ""},
		{[]string{"-version"}, 0, "nat46calc dev\n", ""},
		{[]string{"-bogus"}, 2, "", "nat46calc: flag provided but not defined: -bogus\n"},
		{[]string{"-4", "-6"}, 2, "", "nat46calc: -4 and -6: give one direction\n"},
		{[]string{"-u", "192.0.2.33"}, 2, "", "nat46calc: -u: only without address arguments (filter mode)\n"},
		{[]string{"-p", "junk", "192.0.2.33"}, 2, "", "nat46calc: -p: "},
		{[]string{"-p", "64:ff9b::", "192.0.2.33", "junk"}, 1, "64:ff9b::c000:221\n", "nat46calc: translate \"junk\""},
	} {
		var stdout, stderr bytes.Buffer
		status := run(tc.args, &stdout, &stderr)
		if status != tc.status || !prefix(stdout.String(), tc.stdout) || !prefix(stderr.String(), tc.stderr) ||
			(tc.status == 2 && strings.Count(stderr.String(), "\n") != 1) {
			t.Errorf("nat46calc %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q..., stderr %q...",
				tc.args, status, stdout.String(), stderr.String(), tc.status, tc.stdout, tc.stderr)
		}
	}
}

// prefix reports whether s begins with p, and is empty if p is.
func prefix(s, p string) bool { return strings.HasPrefix(s, p) && (p != "" || s == "") }
