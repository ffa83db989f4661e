// Package clitest checks a command's run function in-process: the help,
// the version and usage errors go to the right stream with the exit
// status its man page gives. Every main in cmd/ has the same shape
// (cli.Command), so one driver serves all five.
package clitest

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// Case is one command line and what it must give: Stdout and Stderr are
// prefixes of what is printed, "" meaning nothing at all.
type Case struct {
	Args           []string
	Status         int
	Stdout, Stderr string
}

// Run runs every case through run, the command's run(args, stdout,
// stderr). A usage error (status 2) must be exactly one line.
func Run(t *testing.T, name string, run func(args []string, stdout, stderr io.Writer) int, cases []Case) {
	t.Helper()
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		status := run(tc.Args, &stdout, &stderr)
		if status != tc.Status || !prefix(stdout.String(), tc.Stdout) || !prefix(stderr.String(), tc.Stderr) ||
			(tc.Status == 2 && strings.Count(stderr.String(), "\n") != 1) {
			t.Errorf("%s %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q..., stderr %q...",
				name, tc.Args, status, stdout.String(), stderr.String(), tc.Status, tc.Stdout, tc.Stderr)
		}
	}
}

// prefix reports whether s begins with p, and is empty if p is.
func prefix(s, p string) bool { return strings.HasPrefix(s, p) && (p != "" || s == "") }
