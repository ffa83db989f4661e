package cli

import (
	"bytes"
	"flag"
	"strings"
	"testing"

	"github.com/snitools/snitools/lib/version"
)

func newTest() (*Command, *bytes.Buffer, *bytes.Buffer, *int) {
	var stdout, stderr bytes.Buffer
	c := New("cmd", "usage: cmd [-n N]\n", &stdout, &stderr)
	n := c.Flags.Int("n", 7, "a `N`")
	return c, &stdout, &stderr, n
}

// TestParse checks what every command does with -h, -version, a bad flag
// and a stray argument: the stream, the exit status and the one line.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		status     int
		done       bool
		out, err   string // what stdout and stderr must contain
		noOut      bool   // stdout must be empty
		stderrLine bool   // stderr must be exactly one line
	}{
		{[]string{"-h"}, ExitOK, true, "usage: cmd [-n N]\n", "", false, false},
		{[]string{"-help"}, ExitOK, true, "-n N", "", false, false},
		{[]string{"-version"}, ExitOK, true, "cmd " + version.Version + "\n", "", false, false},
		{[]string{"-bogus"}, ExitUsage, true, "", "cmd: flag provided but not defined: -bogus\n", true, true},
		{[]string{"-n", "x"}, ExitUsage, true, "", "cmd: invalid value \"x\" for flag -n", true, true},
		{[]string{"-n", "3", "arg"}, ExitOK, false, "", "", true, false},
	} {
		c, stdout, stderr, _ := newTest()
		status, done := c.Parse(tc.args)
		if status != tc.status || done != tc.done || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.err) ||
			(tc.noOut && stdout.Len() > 0) || (tc.stderrLine && strings.Count(stderr.String(), "\n") != 1) {
			t.Errorf("Parse(%q) = %d, %v; stdout %q, stderr %q; want %d, %v, stdout with %q, stderr with %q",
				tc.args, status, done, stdout, stderr, tc.status, tc.done, tc.out, tc.err)
		}
	}
	// -h lists the flags after the synopsis, -version among them.
	c, stdout, _, _ := newTest()
	c.Parse([]string{"-h"})
	if s := stdout.String(); !strings.HasPrefix(s, "usage: cmd") || !strings.Contains(s, "-version") || !strings.Contains(s, "(default 7)") {
		t.Errorf("-h printed %q", s)
	}
}

func TestNoArgs(t *testing.T) {
	c, _, stderr, n := newTest()
	if _, done := c.Parse([]string{"-n", "3"}); done || *n != 3 {
		t.Fatalf("Parse: done %v, n %d", done, *n)
	}
	if status, done := c.NoArgs(); done || status != ExitOK {
		t.Errorf("NoArgs without arguments: %d, %v", status, done)
	}
	c, _, stderr, _ = newTest()
	c.Parse([]string{"extra", "more"})
	if status, done := c.NoArgs(); !done || status != ExitUsage || stderr.String() != "cmd: unexpected argument \"extra\"\n" {
		t.Errorf("NoArgs with arguments: %d, %v, %q", status, done, stderr)
	}
}

// TestParseMore checks flags after an argument (bindshim's -alias).
func TestParseMore(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		status int
		done   bool
		stdout string
		stderr string
	}{
		{[]string{"-a", "x", "--", "prog"}, ExitOK, false, "", ""},
		{[]string{"-h"}, ExitOK, true, "usage: cmd", ""},
		{[]string{"-version"}, ExitUsage, true, "", "cmd: flag provided but not defined: -version\n"},
	} {
		c, stdout, stderr, _ := newTest()
		more := flag.NewFlagSet("cmd", flag.ContinueOnError)
		a := more.String("a", "", "")
		status, done := c.ParseMore(more, tc.args)
		if status != tc.status || done != tc.done || !strings.Contains(stdout.String(), tc.stdout) || stderr.String() != tc.stderr {
			t.Errorf("ParseMore(%q) = %d, %v; stdout %q, stderr %q", tc.args, status, done, stdout, stderr)
		}
		if !done && (*a != "x" || more.Arg(0) != "prog") {
			t.Errorf("ParseMore(%q): -a %q, args %q", tc.args, *a, more.Args())
		}
	}
}

func TestReport(t *testing.T) {
	c, stdout, stderr, _ := newTest()
	if s := c.Usage("-n %d: must be 0 or more", -1); s != ExitUsage {
		t.Errorf("Usage returned %d", s)
	}
	if s := c.Fail("open %s: %v\n", "x", "denied"); s != ExitFailure {
		t.Errorf("Fail returned %d", s)
	}
	c.Warn("%s is odd", "y")
	want := "cmd: -n -1: must be 0 or more\ncmd: open x: denied\ncmd: warning: y is odd\n"
	if stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("stderr %q, stdout %q; want stderr %q", stderr, stdout, want)
	}
}

func TestGiven(t *testing.T) {
	c, _, _, _ := newTest()
	c.Parse([]string{"-n", "7"})
	if g := c.Given(); !g["n"] || g["version"] || len(g) != 1 {
		t.Errorf("Given() = %v, want n only (given at its default)", g)
	}
}
