package tests

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// transfer is a slow echo transfer through snilisten: the client sends a
// hello for sni and then chunks of random bytes at a steady pace, and
// reads everything back.
type transfer struct {
	started chan struct{} // closed after the first quarter went out
	done    chan error
}

// startTransfer runs one transfer on c.
func startTransfer(c net.Conn, sni string, seed byte, chunks, chunk int, pace time.Duration) *transfer {
	tr := &transfer{started: make(chan struct{}), done: make(chan error, 1)}
	sent, got := sha256.New(), sha256.New()
	hello := rawHello(sni)
	writeErr := make(chan error, 1)
	go func() {
		w := io.MultiWriter(c, sent)
		if _, err := w.Write(hello); err != nil {
			close(tr.started)
			writeErr <- err
			return
		}
		rng := rand.NewChaCha8([32]byte{seed})
		buf := make([]byte, chunk)
		for i := range chunks {
			rng.Read(buf)
			if _, err := w.Write(buf); err != nil {
				if i <= chunks/4 {
					close(tr.started)
				}
				writeErr <- err
				return
			}
			if i == chunks/4 {
				close(tr.started)
			}
			time.Sleep(pace)
		}
		writeErr <- c.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		n, rerr := io.Copy(got, c)
		werr := <-writeErr
		want := int64(len(hello) + chunks*chunk)
		switch {
		case werr != nil:
			tr.done <- fmt.Errorf("write: %w", werr)
		case rerr != nil:
			tr.done <- fmt.Errorf("read after %d bytes: %w", n, rerr)
		case n != want || !bytes.Equal(sent.Sum(nil), got.Sum(nil)):
			tr.done <- fmt.Errorf("echoed %d of %d bytes, hashes equal %v", n, want, bytes.Equal(sent.Sum(nil), got.Sum(nil)))
		default:
			tr.done <- nil
		}
	}()
	return tr
}

// haproxy is a running HAProxy with its admin socket.
type haproxy struct {
	*Proc
	Front string
	stats string
}

// startHAProxy runs HAProxy in the foreground in TCP mode: a frontend on
// front, balancing round robin over servers (name -> address), each sent a
// PROXY v2 header and health-checked as check says ("inter 100ms fall 2",
// say). A connection refused by a server is retried on another. This is
// the configuration snitools(7) shows.
func startHAProxy(t testing.TB, front string, servers map[string]string, check string) *haproxy {
	t.Helper()
	need(t, "haproxy")
	dir := socketDir(t)
	h := &haproxy{Front: front, stats: filepath.Join(dir, "admin.sock")}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `global
	stats socket %s mode 600 level admin
defaults
	mode tcp
	timeout connect 2s
	timeout client 60s
	timeout server 60s
	retries 2
	option redispatch 1
frontend https
	bind %s
	default_backend snilisten
backend snilisten
	balance roundrobin
	default-server send-proxy-v2 check %s rise 1
`, h.stats, front, check)
	names := make([]string, 0, len(servers))
	for name := range servers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&cfg, "\tserver %s %s\n", name, servers[name])
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-q", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c rejects the configuration: %v\n%s\n%s", err, out, cfg.String())
	}
	h.Proc = start(t, exec.Command("haproxy", "-db", "-f", path))
	waitListening(t, front)
	for _, name := range names {
		h.waitStatus(t, name, "UP")
	}
	return h
}

// status returns HAProxy's view of server name: UP, DOWN, ...
func (h *haproxy) status(t testing.TB, name string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", h.stats, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	io.WriteString(c, "show stat\n")
	r := csv.NewReader(bufio.NewReader(c))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return ""
	}
	head := rows[0]
	col := slices.Index(head, "status")
	sv := slices.Index(head, "svname")
	if col < 0 || sv < 0 {
		t.Fatalf("haproxy show stat: no status column in %q", head)
	}
	for _, row := range rows[1:] {
		if len(row) > col && row[sv] == name {
			return row[col]
		}
	}
	return ""
}

// waitStatus waits until HAProxy says server name is want.
func (h *haproxy) waitStatus(t testing.TB, name, want string) {
	t.Helper()
	var last string
	waitFor(t, 15*time.Second, fmt.Sprintf("haproxy to see %s %s", name, want), func() bool {
		last = h.status(t, name)
		return strings.HasPrefix(last, want)
	})
}
