package tests

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snitools/snitools/lib/handoff"
)

// TestReliabilitySlowloris: many clients trickle their ClientHello one
// byte a second. Normal clients keep being served meanwhile; every slow
// one is closed at the peek timeout, not before, without reaching a
// backend; afterwards nothing is left behind.
func TestReliabilitySlowloris(t *testing.T) {
	slow, peekTimeout := 200, 3*time.Second
	if soakEnabled() {
		slow = 1000
	}
	dir := socketDir(t)
	srv := newXferServer()
	srv.listenUnix(t, dir, "app.example.test", false)
	s := startSnilisten(t, "-unix-directory", dir, "-peek-timeout", peekTimeout.String(), "-metrics-listen", "127.0.0.1:0", "-q")
	m := metricsAddr(t, s.Proc)
	id := uint32(0)
	normal := func() (time.Duration, error) {
		id++
		t0 := time.Now()
		o := runXfer(s.Addr, "app.example.test", srv, xferSpec{ID: id, Up: 16 << 10, Down: 16 << 10, Order: byte(id % numOrders)}, time.Minute)
		return time.Since(t0), o.Err
	}
	var before []time.Duration
	for range 10 {
		d, err := normal()
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, d)
	}
	// One connection through the general path too (not TLS: refused
	// there), so that the baseline holds whatever the runtime starts the
	// first time that path runs.
	if c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second); err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		io.Copy(io.Discard, c)
		c.Close()
	}
	waitFor(t, 10*time.Second, "idle", func() bool { return metricValue(t, m, "snilisten_connections_active", "") == 0 })
	base := takeBaseline(t, s, m)
	rssBefore := rssKiB(t, s.Pid())

	type slowResult struct {
		held  time.Duration // from connect to the server's close
		sent  int
		reply int
		err   error
	}
	results := make(chan slowResult, slow)
	hello := rawHello("app.example.test")
	var connected sync.WaitGroup
	for i := range slow {
		connected.Add(1)
		go func() {
			// From eight addresses, each within the default
			// -max-conns-per-client (256) also in the long form.
			d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, byte(1+i%8))}}
			c, err := d.Dial("tcp", s.Addr)
			connected.Done()
			if err != nil {
				results <- slowResult{err: err}
				return
			}
			defer c.Close()
			t0 := time.Now()
			var r slowResult
			buf := make([]byte, 512)
			for r.sent < len(hello) && time.Since(t0) < 10*peekTimeout {
				if _, err := c.Write(hello[r.sent : r.sent+1]); err != nil {
					break // closed by the server
				}
				r.sent++
				c.SetReadDeadline(time.Now().Add(time.Second))
				n, err := c.Read(buf)
				r.reply += n
				if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
			}
			r.held = time.Since(t0)
			results <- r
		}()
	}
	connected.Wait()
	waitFor(t, 20*time.Second, "every slow client accepted", func() bool {
		return metricValue(t, m, "snilisten_connections_active", "") >= float64(slow)
	})
	rssHeld := rssKiB(t, s.Pid())
	var during []time.Duration
	for range 10 {
		d, err := normal()
		if err != nil {
			t.Fatalf("a normal client while %d slow ones are connected: %v", slow, err)
		}
		during = append(during, d)
	}
	stillHeld := metricValue(t, m, "snilisten_connections_active", "")
	closedEarly := 0
	var longest time.Duration
	for range slow {
		r := <-results
		switch {
		case r.err != nil:
			t.Errorf("slow client: %v", r.err)
		case r.reply != 0:
			t.Errorf("slow client got %d bytes back, want a plain close", r.reply)
		case r.sent == len(hello):
			t.Errorf("slow client sent its whole hello in %v: never closed at the peek timeout", r.held)
		case r.held < peekTimeout-100*time.Millisecond:
			closedEarly++
		}
		longest = max(longest, r.held)
	}
	if closedEarly > 0 {
		t.Errorf("%d slow clients were closed before the peek timeout %v", closedEarly, peekTimeout)
	}
	if stillHeld < float64(slow) {
		t.Errorf("only %v slow clients were still connected after the normal clients were served: they waited behind them", stillHeld)
	}
	waitFor(t, 10*time.Second, "peek timeouts counted", func() bool {
		return metricValue(t, m, "snilisten_connections_finished_total", `outcome="peek_timeout"`) == float64(slow)
	})
	if got := srv.accepted.Load(); got != int64(id) {
		t.Errorf("the backend saw %d connections, want %d (slow clients must never reach it)", got, id)
	}
	report := checkBaseline(t, s, m, base)
	t.Logf("slowloris: %d slow clients, all closed at the peek timeout %v (longest held %v), none reached the backend; normal transfers before: median %v, during: median %v; RSS %d KiB idle, %d KiB holding them (%d bytes each); %s",
		slow, peekTimeout, longest.Round(time.Millisecond), median(before), median(during), rssBefore, rssHeld, (rssHeld-rssBefore)*1024/slow, report)
}

// TestReliabilityFDExhaustion runs snilisten with 256 descriptors and
// offers 1000 connections at once, each held open by its backend until
// all have arrived. With the default -max-conns (derived from the limit)
// the excess waits in the kernel's queue and every connection is served;
// with -max-conns 0 snilisten runs out of descriptors, and must neither
// crash nor spin, close what it cannot serve cleanly, and serve fully
// again once the load is gone.
func TestReliabilityFDExhaustion(t *testing.T) {
	need(t, "prlimit")
	for _, tc := range []struct {
		name     string
		args     []string
		allServe bool
		// backpressure: the clients do not read until released, so
		// every relayed connection has bytes in flight both ways.
		backpressure bool
	}{
		{"default-max-conns", nil, true, false},
		{"default-max-conns-backpressure", nil, true, true},
		{"unbounded", []string{"-max-conns", "0"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clients := 1000
			dir := socketDir(t)
			srv := newXferServer()
			gate := make(chan struct{})
			var hold chan struct{}
			size, order := int64(32<<10), -1
			if tc.backpressure {
				// More than snilisten's socket buffers absorb (up to
				// 4 MiB of send buffer towards the client), so that
				// the relay's pipes (16 at 256 descriptors) are all
				// full while the clients wait, and the other
				// connections leave bytes in their sockets.
				clients, hold, size, order = 40, gate, 8<<20, orderBackendFirst
			} else {
				srv.Gate = gate
			}
			srv.listenUnix(t, dir, "app.example.test", false)
			args := append([]string{"--nofile=256:256", bin(t, "snilisten"), "-listen", "tcp:127.0.0.1:0", "-unix-directory", dir, "-metrics-listen", "127.0.0.1:0", "-q"}, tc.args...)
			s := startSnilistenCmd(t, exec.Command("prlimit", args...))
			m := metricsAddr(t, s.Proc)
			outcomes := make(chan xferOutcome, clients)
			for i := range clients {
				spec := xferSpec{ID: uint32(i + 1), Up: size, Down: size, Order: byte(i % numOrders), Hold: hold}
				if order >= 0 {
					spec.Order = byte(order)
				}
				go func() { outcomes <- runXfer(s.Addr, "app.example.test", srv, spec, 2*time.Minute) }()
			}
			// Saturated: connections held open by the backend, the rest
			// queued or refused. CPU use must stay low.
			waitFor(t, 30*time.Second, "snilisten saturated", func() bool {
				return metricValue(t, m, "snilisten_connections_active", "") >= 16 || metricValue(t, m, "snilisten_connections_accepted_total", "") >= float64(clients)
			})
			time.Sleep(500 * time.Millisecond)
			cpu0, t0 := cpuTime(t, s.Pid()), time.Now()
			time.Sleep(2 * time.Second)
			cpu, wall := cpuTime(t, s.Pid())-cpu0, time.Since(t0)
			active := metricValue(t, m, "snilisten_connections_active", "")
			fds := fdCount(t, s.Pid())
			if cpu > wall/2 {
				t.Errorf("snilisten used %v of CPU in %v while saturated: a busy loop", cpu, wall)
			}
			close(gate)
			served, failed := 0, map[string]int{}
			for range clients {
				o := <-outcomes
				if o.Err == nil {
					served++
					continue
				}
				failed[classify(o.Err)]++
			}
			if s.Exited() {
				t.Fatalf("snilisten exited: %s", s.Output())
			}
			if tc.allServe && served != clients {
				t.Errorf("%d of %d connections served; failures: %v", served, clients, failed)
			}
			for kind, n := range failed {
				// Unbounded, a relay may find no descriptor for a pipe
				// halfway through and can only cut the connection, and
				// a client refused for want of descriptors is closed at
				// once after its alert: if it goes on writing, the
				// close becomes a reset, which its write may report as
				// a broken pipe.
				if kind != "closed" && kind != "alert" && (tc.allServe || (kind != "reset" && kind != "broken pipe")) {
					t.Errorf("%d connections ended uncleanly (%s)", n, kind)
				}
			}
			// Full service once the load is gone.
			for i := range 50 {
				if o := runXfer(s.Addr, "app.example.test", srv, xferSpec{ID: uint32(clients + 1 + i), Up: 1 << 20, Down: 1 << 20}, time.Minute); o.Err != nil {
					t.Fatalf("after the load: %v", o.Err)
				}
			}
			t.Logf("%s: %d clients at once with 256 descriptors: %v active and %d descriptors while saturated, CPU %v in %v; %d served, failures %v; then 50 of 50 served",
				tc.name, clients, active, fds, cpu, wall.Round(time.Millisecond), served, failed)
		})
	}
}

// classify names how a failed transfer ended, for the report.
func classify(err error) string {
	s := err.Error()
	switch {
	case strings.Contains(s, "alert"):
		return "alert"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ENOTCONN):
		// ENOTCONN: the client's own shutdown after the reset.
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case strings.Contains(s, "received 0 bytes"), strings.Contains(s, "never finished"):
		return "closed"
	}
	return fmt.Sprintf("other: %v", err)
}

// startHeld starts a transfer through addr that the backend srv (whose
// Gate must be set) holds open after its control block; the outcome
// arrives on the returned channel once the gate opens.
func startHeld(t *testing.T, addr, sni string, srv *xferServer, spec xferSpec) <-chan xferOutcome {
	t.Helper()
	before := srv.accepted.Load()
	ch := make(chan xferOutcome, 1)
	go func() { ch <- runXfer(addr, sni, srv, spec, time.Minute) }()
	waitFor(t, 10*time.Second, "the held transfer at its backend", func() bool { return srv.accepted.Load() > before })
	return ch
}

// TestReliabilityBackendFaults: what clients see and the log says when a
// backend misbehaves, and that nothing is left behind.
func TestReliabilityBackendFaults(t *testing.T) {
	dir := socketDir(t)
	s := startSnilisten(t, "-unix-directory", dir, "-idle-timeout", "2s", "-metrics-listen", "127.0.0.1:0")
	m := metricsAddr(t, s.Proc)
	warm := newXferServer()
	warm.listenUnix(t, dir, "warm.example.test", false)
	for i := range 3 {
		if o := runXfer(s.Addr, "warm.example.test", warm, xferSpec{ID: uint32(i + 1), Up: 1 << 20, Down: 1 << 20, Order: byte(i)}, time.Minute); o.Err != nil {
			t.Fatal(o.Err)
		}
	}
	waitFor(t, 10*time.Second, "idle", func() bool { return metricValue(t, m, "snilisten_connections_active", "") == 0 })
	base := takeBaseline(t, s, m)
	faults := 0

	t.Run("dies-mid-upload", func(t *testing.T) {
		// The backend reads 1 MiB of a 64 MiB upload and dies: its
		// socket closes with bytes unread.
		ln, err := net.Listen("unix", dir+"/dies.example.test")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				io.CopyN(io.Discard, c, 1<<20)
				c.Close()
			}
		}()
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		c.Write(rawHello("dies.example.test"))
		n, werr := io.Copy(c, stream(1, 0, 64<<20))
		_, rerr := io.ReadAll(c)
		faults++
		if n >= 64<<20 || errors.Is(werr, os.ErrDeadlineExceeded) || errors.Is(rerr, os.ErrDeadlineExceeded) {
			t.Fatalf("client wrote %d bytes (%v), read: %v; want the connection cut soon after the backend died", n, werr, rerr)
		}
		// Either the relay wrote to the dead socket first (relay_error,
		// broken pipe), or it saw the backend's end of stream first, and
		// a backend that ends its stream and closes is a normal end, but
		// one that never sent a byte (no_answer): the byte count tells.
		waitLog(t, s.Proc, "sni=dies.example.test", "outcome=")
		if l := logLines(s.Proc, "sni=dies.example.test")[0]; !strings.Contains(l, "outcome=relay_error") && !strings.Contains(l, "outcome=no_answer") || sumLogField(s.Proc, "up", "sni=dies.example.test") >= 64<<20 {
			t.Errorf("log line for a backend that died mid-upload: %s", l)
		}
		t.Logf("client wrote %d bytes before the cut (%v), then read: %v", n, werr, rerr)
	})

	t.Run("dies-mid-download", func(t *testing.T) {
		// The backend sends 1 MiB of a download and dies: the client
		// gets exactly that much and an end of stream.
		ln, err := net.Listen("unix", dir+"/dies2.example.test")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				readHello(c)
				io.Copy(c, stream(2, 1, 1<<20))
				c.Close()
			}
		}()
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		c.Write(rawHello("dies2.example.test"))
		n, err := io.Copy(io.Discard, c)
		faults++
		if n != 1<<20 || err != nil {
			t.Fatalf("client read %d bytes, %v; want 1 MiB and end of stream", n, err)
		}
		c.Close()
		waitLog(t, s.Proc, "sni=dies2.example.test", fmt.Sprintf("down=%d", 1<<20), "outcome=ok")
	})

	t.Run("never-reads", func(t *testing.T) {
		// The backend accepts and never reads: the client is held back
		// (snilisten buffers no more than its pipe), and the idle
		// timeout ends it.
		ln, err := net.Listen("unix", dir+"/deaf.example.test")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		held := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				held <- c
			}
		}()
		rss0 := rssKiB(t, s.Pid())
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		c.Write(rawHello("deaf.example.test"))
		var wrote int64
		done := make(chan error, 1)
		go func() {
			var err error
			wrote, err = io.Copy(c, stream(3, 0, 256<<20))
			done <- err
		}()
		err = <-done
		faults++
		rss1 := rssKiB(t, s.Pid())
		if b := <-held; b != nil {
			b.Close()
		}
		if wrote >= 256<<20 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("client wrote %d bytes to a backend that never reads: %v; want it held back and cut at the idle timeout", wrote, err)
		}
		if rss1-rss0 > 16<<10 {
			t.Errorf("snilisten grew by %d KiB while its backend did not read", rss1-rss0)
		}
		waitLog(t, s.Proc, "sni=deaf.example.test", "outcome=idle_timeout")
		t.Logf("client wrote %d bytes before being held back and cut at the idle timeout; snilisten RSS %d -> %d KiB", wrote, rss0, rss1)
	})

	t.Run("deleted-and-replaced-in-use", func(t *testing.T) {
		old := newXferServer()
		old.Gate = make(chan struct{})
		path := old.listenUnix(t, dir, "moving.example.test", false)
		inFlight := startHeld(t, s.Addr, "moving.example.test", old, xferSpec{ID: 100, Up: 4 << 20, Down: 4 << 20})
		// Deleted: the transfer goes on, new clients hear
		// unrecognized_name.
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		faults++
		reply, _ := sendRaw(t, s.Addr, rawHello("moving.example.test"))
		if alertOf(reply) != 112 {
			t.Errorf("after the socket was deleted: %x, want alert 112 (unrecognized_name)", reply)
		}
		waitLog(t, s.Proc, "sni=moving.example.test", "outcome=unknown_name")
		// Replaced by another server: new clients go there, the
		// transfer in flight stays with the old one.
		repl := newXferServer()
		repl.listenUnix(t, dir, "moving.example.test", false)
		faults++
		if o := runXfer(s.Addr, "moving.example.test", repl, xferSpec{ID: 101, Up: 1 << 20, Down: 1 << 20}, time.Minute); o.Err != nil {
			t.Errorf("new connection to the replacement: %v", o.Err)
		}
		close(old.Gate)
		if o := <-inFlight; o.Err != nil {
			t.Errorf("the transfer in flight when its socket was deleted and replaced: %v", o.Err)
		}
		if old.accepted.Load() != 1 || repl.accepted.Load() != 1 {
			t.Errorf("old server accepted %d, replacement %d; want 1 and 1", old.accepted.Load(), repl.accepted.Load())
		}
	})

	t.Run("stream-and-handoff-swapped", func(t *testing.T) {
		// A stream socket replaced by a handoff one and back: each
		// client reaches whatever listens at the path now.
		path := dir + "/swap.example.test"
		srv := newXferServer()
		srv.listenUnix(t, dir, "swap.example.test", false)
		check := func(what string, id uint32) {
			t.Helper()
			if o := runXfer(s.Addr, "swap.example.test", srv, xferSpec{ID: id, Up: 64 << 10, Down: 64 << 10}, time.Minute); o.Err != nil {
				t.Errorf("%s: %v", what, o.Err)
			}
		}
		check("stream socket", 200)
		os.Remove(path)
		hl, err := handoff.Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		faults++
		srv.Serve(t, hl)
		check("stream socket replaced by a handoff socket", 201)
		hl.Close()
		os.Remove(path)
		srv.listenUnix(t, dir, "swap.example.test", false)
		faults++
		check("handoff socket replaced by a stream socket", 202)
	})

	// Nothing left behind by any of it.
	report := checkBaseline(t, s, m, base)
	t.Logf("backend faults: %d injected; %s", faults, report)
}

// TestReliabilityUnreadableDirectory runs snilisten as an unprivileged
// user (root ignores permissions) against a socket directory and socket
// whose permissions change under it: refused clients get internal_error,
// the log says permission denied, and service returns with the
// permission.
func TestReliabilityUnreadableDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run snilisten as another user")
	}
	root := socketDir(t)
	dir := root + "/tls"
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o755)
	srv := newXferServer()
	sock := srv.listenUnix(t, dir, "app.example.test", false)
	os.Chmod(sock, 0o666)
	cmd := exec.Command(bin(t, "snilisten"), "-listen", "tcp:127.0.0.1:0", "-unix-directory", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: true}}
	s := startSnilistenCmd(t, cmd)
	id := uint32(0)
	served := func(what string) {
		t.Helper()
		id++
		if o := runXfer(s.Addr, "app.example.test", srv, xferSpec{ID: id, Up: 64 << 10, Down: 64 << 10}, time.Minute); o.Err != nil {
			t.Errorf("%s: %v", what, o.Err)
		}
	}
	refused := func(what, sni string) {
		t.Helper()
		before := len(logLines(s.Proc, "permission denied"))
		reply, _ := sendRaw(t, s.Addr, rawHello(sni))
		if alertOf(reply) != 80 {
			t.Errorf("%s: %x, want alert 80 (internal_error)", what, reply)
		}
		waitFor(t, 5*time.Second, what+": a log line saying permission denied", func() bool {
			return len(logLines(s.Proc, "permission denied", "outcome=backend_error")) > before
		})
	}
	served("directory 0755, socket 0666")
	for _, tc := range []struct {
		what      string
		dir, sock os.FileMode
		ok        bool
	}{
		{"directory 0700 (root only)", 0o700, 0o666, false},
		{"directory 0000", 0o000, 0o666, false},
		{"directory 0711 (searchable, not readable)", 0o711, 0o666, true},
		{"socket 0600 (root only)", 0o755, 0o600, false},
		{"socket 0644 (not writable)", 0o755, 0o644, false},
		{"permissions restored", 0o755, 0o666, true},
	} {
		os.Chmod(dir, tc.dir)
		os.Chmod(sock, tc.sock)
		if tc.ok {
			served(tc.what)
		} else {
			refused(tc.what, "app.example.test")
		}
	}
	os.Chmod(dir, 0o700)
	refused("an unknown name in an unsearchable directory", "nobody.example.test")
	os.Chmod(dir, 0o755)
	if got := srv.accepted.Load(); got != int64(id) {
		t.Errorf("the backend saw %d connections, want %d", got, id)
	}
	if s.Exited() {
		t.Fatalf("snilisten exited: %s", s.Output())
	}
}

// TestReliabilitySIGTERMInFlight extends the socket activation test:
// at SIGTERM, transfers of every half-close order are in flight, held by
// their backend, and two clients are halfway through their hello. New
// connections are refused at once; snilisten waits for all of them to
// finish, byte for byte, then exits 0.
func TestReliabilitySIGTERMInFlight(t *testing.T) {
	dir := socketDir(t)
	srv := newXferServer()
	srv.Gate = make(chan struct{})
	srv.listenUnix(t, dir, "app.example.test", false)
	s := startSnilisten(t, "-unix-directory", dir, "-shutdown-timeout", "60s", "-metrics-listen", "127.0.0.1:0")
	m := metricsAddr(t, s.Proc)
	var inFlight []<-chan xferOutcome
	for i := range 9 {
		inFlight = append(inFlight, startHeld(t, s.Addr, "app.example.test", srv, xferSpec{ID: uint32(i + 1), Up: 8 << 20, Down: 8 << 20, Order: byte(i % numOrders)}))
	}
	// Two clients send half a hello and wait.
	hello := rawHello("app.example.test")
	var halves []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hello[:len(hello)/2])
		halves = append(halves, c)
	}
	waitFor(t, 10*time.Second, "the half hellos accepted", func() bool {
		return metricValue(t, m, "snilisten_connections_active", "") == float64(len(inFlight)+len(halves))
	})
	s.Signal(t, syscall.SIGTERM)
	waitLog(t, s.Proc, "shutting down")
	if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		c.Close()
		t.Errorf("a new connection was accepted after SIGTERM")
	}
	// The halves finish their hellos and are relayed to the end.
	ctl := xferSpec{ID: 100, Up: 0, Down: 1 << 20}
	halfDone := make(chan error, len(halves))
	for i, c := range halves {
		spec := ctl
		spec.ID += uint32(i)
		go func() {
			c.SetDeadline(time.Now().Add(time.Minute))
			c.Write(append(hello[len(hello)/2:], spec.control()...))
			c.(*net.TCPConn).CloseWrite()
			n, err := io.Copy(io.Discard, c)
			if err == nil && n != spec.Down {
				err = fmt.Errorf("got %d bytes, want %d", n, spec.Down)
			}
			halfDone <- err
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if s.Exited() {
		t.Fatalf("snilisten exited with connections open: %s", s.Output())
	}
	close(srv.Gate)
	var verified int64
	for _, ch := range inFlight {
		o := <-ch
		if o.Err != nil {
			t.Errorf("transfer %d (order %d) in flight at SIGTERM: %v", o.Spec.ID, o.Spec.Order, o.Err)
		}
		verified += o.Verified
	}
	for range halves {
		if err := <-halfDone; err != nil {
			t.Errorf("client halfway through its hello at SIGTERM: %v", err)
		}
	}
	if err := s.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", err)
	}
	if n := len(logLines(s.Proc, "outcome=ok")); n != 11 {
		t.Errorf("%d ok log lines, want 11:\n%s", n, s.Output())
	}
	t.Logf("SIGTERM with 9 transfers and 2 half-sent hellos in flight: all completed, %d bytes verified, exit 0", verified)
}

// TestReliabilityRestartKeepsQueue plays systemd's part for a .socket
// unit: the test holds the listening socket and passes it to each
// snilisten it starts (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), while
// clients keep connecting. snilisten is stopped with SIGTERM and started
// again several times; connections made while none runs wait in the
// kernel's queue. Not one may fail.
func TestReliabilityRestartKeepsQueue(t *testing.T) {
	dir := socketDir(t)
	srv := newXferServer()
	srv.listenUnix(t, dir, "app.example.test", false)
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	addr := ln.Addr().String()
	startGen := func() *snilisten {
		cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin(t, "snilisten"), "-listen", "fd:https", "-unix-directory", dir, "-shutdown-timeout", "30s")
		cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=https")
		cmd.ExtraFiles = []*os.File{f}
		return startSnilistenCmd(t, cmd)
	}
	restarts := 3
	if soakEnabled() {
		restarts = 20
	}
	gen := startGen()
	stop := make(chan struct{})
	tally := &soakTally{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	nextID := uint32(0)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				nextID++
				spec := xferSpec{ID: nextID, Up: int64(w+1) << 14, Down: int64(i%8+1) << 14, Order: byte(i % numOrders)}
				mu.Unlock()
				tally.record("restart", runXfer(addr, "app.example.test", srv, spec, time.Minute))
			}
		}()
	}
	var gens []*snilisten
	for range restarts {
		time.Sleep(300 * time.Millisecond)
		gen.Signal(t, syscall.SIGTERM)
		if err := gen.Wait(t, 30*time.Second); err != nil {
			t.Errorf("snilisten exit after SIGTERM: %v", err)
		}
		gens = append(gens, gen)
		time.Sleep(200 * time.Millisecond) // nobody accepts: connections queue
		gen = startGen()
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	gens = append(gens, gen)
	for _, f := range tally.failures {
		t.Error(f)
	}
	per := make([]int, len(gens))
	served := 0
	count := func() int {
		served = 0
		for i, g := range gens {
			per[i] = len(logLines(g.Proc, "outcome=ok"))
			served += per[i]
		}
		return served
	}
	// The running generation logs its last connections a moment after
	// their clients saw them end.
	waitFor(t, 10*time.Second, "a log line per connection", func() bool { return count() >= tally.conns["restart"] })
	if served != tally.conns["restart"] {
		t.Errorf("%d ok log lines over all generations, %d connections made", served, tally.conns["restart"])
	}
	t.Logf("restarts: %d connections across %d restarts of snilisten, %d bytes verified, failures %d; served per generation %v",
		tally.conns["restart"], restarts, tally.verified, len(tally.failures), per)
}
