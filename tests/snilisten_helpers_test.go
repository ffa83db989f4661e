package tests

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// snilisten is a running snilisten with the address it listens on.
type snilisten struct {
	*Proc
	Addr string
}

var listeningRE = regexp.MustCompile(`msg=listening address=(\S+)`)

// startSnilisten runs bin/snilisten on a free loopback port with args
// added, and waits until it listens.
func startSnilisten(t testing.TB, args ...string) *snilisten {
	t.Helper()
	all := append([]string{"-listen", "tcp:127.0.0.1:0"}, args...)
	return startSnilistenCmd(t, exec.Command(bin(t, "snilisten"), all...))
}

// startSnilistenCmd starts cmd, which runs snilisten somehow (under a
// shell that lowers a limit, as another user), and waits until it logs
// that it listens.
func startSnilistenCmd(t testing.TB, cmd *exec.Cmd) *snilisten {
	t.Helper()
	p := start(t, cmd)
	var addr string
	waitFor(t, 10*time.Second, "snilisten to listen", func() bool {
		if m := listeningRE.FindStringSubmatch(p.Output()); m != nil {
			addr = m[1]
			return true
		}
		return p.Exited()
	})
	if addr == "" {
		t.Fatalf("snilisten exited: %s", p.Output())
	}
	return &snilisten{Proc: p, Addr: addr}
}

// socketDir makes a directory for backend sockets. UNIX socket paths are
// short (108 bytes), so it lives under /tmp rather than t.TempDir's deep path.
func socketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "snit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// logLines returns the log lines of p that contain every one of words.
func logLines(p *Proc, words ...string) []string {
	var out []string
next:
	for _, l := range strings.Split(p.Output(), "\n") {
		for _, w := range words {
			if !strings.Contains(l, w) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// waitLog waits for a log line of p containing every one of words.
func waitLog(t testing.TB, p *Proc, words ...string) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("a log line with %q", words), func() bool { return len(logLines(p, words...)) > 0 })
}

// startSnilistenOn is startSnilisten on a given listen spec.
func startSnilistenOn(t *testing.T, spec string, args ...string) *snilisten {
	t.Helper()
	return startSnilistenCmd(t, exec.Command(bin(t, "snilisten"), append([]string{"-listen", spec}, args...)...))
}
