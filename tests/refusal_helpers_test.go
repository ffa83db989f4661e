package tests

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// tlsAnswer is what a TLS client reads from a server after sending it a
// ClientHello: the first record's kind, and how the connection ended.
type tlsAnswer struct {
	// Kind is "alert N" (a fatal or warning alert, N its description),
	// "handshake" (the server answered with a handshake record: it took
	// the hello), "close" (nothing, then end of stream), "reset"
	// (nothing, then ECONNRESET), "timeout" (nothing within the wait) or
	// "other" (some other record or bytes).
	Kind string
	// End says how the stream ended after an alert: "eof" (the client
	// can read the alert and then sees a clean close), "reset" or
	// "timeout"; "" for other kinds.
	End string
}

func (a tlsAnswer) String() string {
	if a.End == "" {
		return a.Kind
	}
	return a.Kind + " then " + a.End
}

// probeTLS sends payload to addr as a TLS client would, without
// half-closing (a real client keeps its side open and waits for an
// answer), and reads what comes back.
func probeTLS(addr string, payload []byte, wait time.Duration) (tlsAnswer, error) {
	network := "tcp"
	if filepath.IsAbs(addr) {
		network = "unix"
	}
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return tlsAnswer{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	go c.Write(payload) // a server may answer, and close, before reading it all
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if len(got) >= 5 {
			switch typ, n := got[0], int(binary.BigEndian.Uint16(got[3:5])); {
			case typ == 22:
				return tlsAnswer{Kind: "handshake"}, nil
			case typ == 21 && n == 2 && len(got) >= 7:
				a := tlsAnswer{Kind: fmt.Sprintf("alert %d", got[6])}
				if len(got) > 7 {
					a.End = fmt.Sprintf("%d more bytes", len(got)-7)
					return a, nil
				}
				if err == nil {
					_, err = io.ReadAll(c)
					if err == nil {
						err = io.EOF
					}
				}
				a.End = endOf(err)
				return a, nil
			case typ != 21:
				return tlsAnswer{Kind: fmt.Sprintf("other %x", got[:min(len(got), 8)])}, nil
			}
		}
		if err != nil {
			if len(got) > 0 {
				return tlsAnswer{Kind: fmt.Sprintf("other %x", got[:min(len(got), 8)]), End: endOf(err)}, nil
			}
			if k := endOf(err); k != "eof" {
				return tlsAnswer{Kind: k}, nil
			}
			return tlsAnswer{Kind: "close"}, nil
		}
	}
}

func endOf(err error) string {
	var ne net.Error
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return "eof"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}

// opensslServer runs openssl s_server with the test certificate on
// addr: a TCP address ("127.0.0.1:PORT") or a UNIX socket path. It
// answers one connection at a time, which suits probes sent one after
// another.
func opensslServer(t testing.TB, addr string) *Proc {
	t.Helper()
	pki := testPKI(t)
	args := []string{"s_server", "-cert", pki.CertFile, "-key", pki.KeyFile, "-www"}
	if filepath.IsAbs(addr) {
		args = append(args, "-unix", addr)
	} else {
		args = append(args, "-accept", addr)
	}
	p := start(t, exec.Command("openssl", args...))
	waitFor(t, 10*time.Second, "openssl s_server on "+addr, func() bool {
		if filepath.IsAbs(addr) {
			_, err := os.Stat(addr)
			return err == nil || p.Exited()
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil || p.Exited()
	})
	if p.Exited() {
		t.Fatalf("openssl s_server on %s exited: %s", addr, p.Output())
	}
	return p
}

// shortSocketDir is socketDir with a path short enough for openssl
// s_server -unix, which fails ("addr_strings: Unknown error") for socket
// paths of 32 bytes or more.
func shortSocketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "r")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// kib formats n bytes in KiB for figures.
func kib(n int) string { return strconv.FormatFloat(float64(n)/1024, 'f', 1, 64) + " KiB" }
