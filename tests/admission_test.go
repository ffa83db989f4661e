package tests

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// httpsGetFrom makes one GET / through addr with sni over a connection
// from the local address src (127.0.0.2, 127.0.0.3, ... are different
// clients on loopback), and checks the backend's answer.
func httpsGetFrom(t testing.TB, src, addr, sni string, timeout time.Duration) (time.Duration, error) {
	t0 := time.Now()
	d := &net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := tls.DialWithDialer(d, "tcp", addr, testPKI(t).ClientConfig(sni))
	if err != nil {
		return time.Since(t0), fmt.Errorf("handshake from %s: %w", src, err)
	}
	defer c.Close()
	c.SetDeadline(t0.Add(timeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: "+sni+"\r\n\r\n"); err != nil {
		return time.Since(t0), fmt.Errorf("request from %s: %w", src, err)
	}
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, io.EOF) {
		return time.Since(t0), fmt.Errorf("response to %s: %w", src, err)
	}
	if !strings.Contains(string(b), "backend="+sni) || !strings.Contains(string(b), "remote=") {
		return time.Since(t0), fmt.Errorf("response to %s: %q", src, b)
	}
	return time.Since(t0), nil
}

// dribbler connects from src and sends hello one byte every interval
// until the server closes the connection or stop is closed; closed
// reports whether the server closed it.
func dribbler(src, addr string, hello []byte, interval time.Duration, stop <-chan struct{}, connected *sync.WaitGroup) (closed bool, err error) {
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	connected.Done()
	if err != nil {
		return false, err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for i := 0; i < len(hello)-1; i++ {
		if _, err := c.Write(hello[i : i+1]); err != nil {
			return true, nil
		}
		c.SetReadDeadline(time.Now().Add(interval))
		_, err := c.Read(buf)
		switch {
		case err == nil:
			return false, errors.New("snilisten sent bytes to a client with half a hello")
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), isReset(err):
			return true, nil
		}
		select {
		case <-stop:
			return false, nil
		default:
		}
	}
	return false, errors.New("sent all but the last byte of the hello without being closed")
}

// TestAdmissionDribblers: 330 clients from three addresses dribble their
// hellos a byte a second into a snilisten with -max-conns 64, so that
// every slot is held by a connection peeking and 266 more wait in the
// kernel's queue. Clients from another address must be served while that
// goes on, before any dribbler reaches its peek timeout: the oldest
// peeking connections are evicted for them (outcome evicted, counted in
// the metrics), never the four connections relayed since before. Without
// eviction they waited behind the queue, one peek timeout per 64
// dribblers.
func TestAdmissionDribblers(t *testing.T) {
	const (
		dribblers   = 330
		maxConns    = 64
		peekTimeout = 30 * time.Second
		normals     = 10
	)
	sources := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	const normalSrc = "127.0.0.9"
	dir := socketDir(t)
	unixBackend(t, dir, "app.example.test", false)
	s := startSnilisten(t, "-unix-directory", dir, "-max-conns", fmt.Sprint(maxConns),
		"-peek-timeout", peekTimeout.String(), "-metrics-listen", "127.0.0.1:0")
	m := metricsAddr(t, s.Proc)
	var before []time.Duration
	for range normals {
		d, err := httpsGetFrom(t, normalSrc, s.Addr, "app.example.test", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, d)
	}

	// Relayed connections, open through it all: never evicted.
	const relayedSrc = "127.0.0.8"
	var relayed []*tls.Conn
	for range 4 {
		d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(relayedSrc)}}
		c, err := tls.DialWithDialer(d, "tcp", s.Addr, testPKI(t).ClientConfig("app.example.test"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		relayed = append(relayed, c)
	}

	stop := make(chan struct{})
	var stopOnce sync.Once
	stopAll := func() { stopOnce.Do(func() { close(stop) }) }
	defer stopAll()
	hello := rawHello("app.example.test")
	var connected, finished sync.WaitGroup
	var closedByServer atomic.Int64
	errs := make(chan error, dribblers)
	for i := range dribblers {
		connected.Add(1)
		finished.Add(1)
		go func() {
			defer finished.Done()
			closed, err := dribbler(sources[i%len(sources)], s.Addr, hello, time.Second, stop, &connected)
			if err != nil {
				errs <- err
			}
			if closed {
				closedByServer.Add(1)
			}
		}()
	}
	connected.Wait()
	waitFor(t, 30*time.Second, "every slot held by a dribbler", func() bool {
		return metricValue(t, m, "snilisten_connections_active", "") >= maxConns
	})

	var during []time.Duration
	for range normals {
		d, err := httpsGetFrom(t, normalSrc, s.Addr, "app.example.test", 2*peekTimeout)
		during = append(during, d)
		if err != nil {
			t.Errorf("a client from %s while %d dribble, after %v: %v", normalSrc, dribblers, d.Round(time.Millisecond), err)
			break
		}
	}
	timedOut := metricValue(t, m, "snilisten_connections_finished_total", `outcome="peek_timeout"`)
	evicted := metricValue(t, m, "snilisten_connections_finished_total", `outcome="evicted"`)
	active := metricValue(t, m, "snilisten_connections_active", "")
	if timedOut != 0 {
		t.Errorf("the normal clients were served only after %v dribblers reached the peek timeout (latency during: median %v, longest %v)",
			timedOut, median(during), slicesMax(during))
	}
	if active < maxConns-normals {
		t.Errorf("only %v connections held after the normal clients: the dribblers were dropped wholesale, not one per newcomer", active)
	}
	// The accept queue is first in, first out: before the first normal
	// client, every dribbler queued was let in at the expense of an
	// older one, and that client too.
	if evicted < dribblers-maxConns+1 {
		t.Errorf("%v connections evicted, want at least %d (one per dribbler queued, one for the first normal client)", evicted, dribblers-maxConns+1)
	}
	for i, c := range relayed {
		c.SetDeadline(time.Now().Add(time.Minute))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: app.example.test\r\nConnection: close\r\n\r\n")
		if b, _ := io.ReadAll(c); !strings.Contains(string(b), "backend=app.example.test") {
			t.Errorf("relayed connection %d, open since before the dribblers: answer %q", i, b)
		}
	}
	stopAll()
	finished.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("dribbler: %v", err)
	}
	if float64(closedByServer.Load()) != evicted {
		t.Errorf("%d dribblers saw snilisten close their connection, %v evictions counted", closedByServer.Load(), evicted)
	}
	if n := len(logLines(s.Proc, "outcome=evicted")); float64(n) != evicted {
		t.Errorf("%d log lines with outcome=evicted, metrics say %v", n, evicted)
	}
	if n := len(logLines(s.Proc, "client="+normalSrc, "outcome=evicted")) + len(logLines(s.Proc, "client="+relayedSrc, "outcome=evicted")); n != 0 {
		t.Errorf("%d normal or relayed clients evicted", n)
	}
	t.Logf("dribblers: %d from %d addresses, -max-conns %d, peek timeout %v: %d normal clients from %s served, latency median %v (longest %v) before, median %v (longest %v) during; %v dribblers evicted (%d saw the close), %v reached the peek timeout, %v connections held afterwards",
		dribblers, len(sources), maxConns, peekTimeout, normals, normalSrc, median(before), slicesMax(before), median(during), slicesMax(during),
		evicted, closedByServer.Load(), timedOut, active)
}

func slicesMax(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m.Round(10 * time.Microsecond)
}

// TestAdmissionPerClient: one address opens 100 TLS connections to a
// real backend and keeps them open (relayed: never evicted) against
// -max-conns 64 and -max-conns-per-client 16. It gets 16; the rest are
// closed at once (outcome client_limit), and a client from another
// address is served. Without the bound, the one address held all 64
// slots and the other waited in the kernel's queue.
func TestAdmissionPerClient(t *testing.T) {
	const (
		tries     = 100
		maxConns  = 64
		perClient = 16
	)
	const greedy, other = "127.0.0.5", "127.0.0.6"
	dir := socketDir(t)
	unixBackend(t, dir, "app.example.test", false)
	s := startSnilisten(t, "-unix-directory", dir, "-max-conns", fmt.Sprint(maxConns),
		"-max-conns-per-client", fmt.Sprint(perClient), "-metrics-listen", "127.0.0.1:0")
	m := metricsAddr(t, s.Proc)
	var mu sync.Mutex
	var open []*tls.Conn
	var wg sync.WaitGroup
	refused := 0
	for range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(greedy)}}
			c, err := tls.DialWithDialer(d, "tcp", s.Addr, testPKI(t).ClientConfig("app.example.test"))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused++
				return
			}
			open = append(open, c)
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	active := metricValue(t, m, "snilisten_connections_active", "")
	d, err := httpsGetFrom(t, other, s.Addr, "app.example.test", 20*time.Second)
	if err != nil {
		t.Errorf("a client from %s while %s holds %d connections: %v", other, greedy, len(open), err)
	}
	limited := metricValue(t, m, "snilisten_connections_finished_total", `outcome="client_limit"`)
	if len(open) != perClient || active != perClient {
		t.Errorf("%s holds %d connections (%v active in snilisten), want its share, %d", greedy, len(open), active, perClient)
	}
	if limited != tries-perClient || refused != tries-perClient {
		t.Errorf("%v connections counted client_limit and %d refused, want %d", limited, refused, tries-perClient)
	}
	if n := len(logLines(s.Proc, "client="+greedy, "outcome=client_limit")); n != tries-perClient {
		t.Errorf("%d log lines with outcome=client_limit, want %d", n, tries-perClient)
	}
	t.Logf("per client: %s tried %d connections with -max-conns %d -max-conns-per-client %d: %d open (%v active), %d refused (%v counted client_limit); a client from %s served in %v",
		greedy, tries, maxConns, perClient, len(open), active, refused, limited, other, d.Round(10*time.Microsecond))
}

// TestAdmissionIdleAtFDLimit: under `prlimit --nofile=20000`, with the
// default -max-conns, 5000 clients (250 each from 20 loopback addresses,
// within the default -max-conns-per-client) send a hello and then sit
// idle, held open by their backend. Every one must reach the backend:
// a relayed connection holds its two sockets, the relay's pipes are
// bounded in all, and the default counts that. It counted six
// descriptors per connection before (3280 at 20,000), and the rest waited
// in the kernel's queue, where HAProxy admitted them all.
func TestAdmissionIdleAtFDLimit(t *testing.T) {
	need(t, "prlimit")
	const clients, sources = 5000, 20
	dir := socketDir(t)
	ln, err := net.Listen("unix", dir+"/app.example.test")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	backendHeld := func() int { mu.Lock(); defer mu.Unlock(); return len(held) }
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	s := startSnilistenCmd(t, exec.Command("prlimit", "--nofile=20000:20000", bin(t, "snilisten"),
		"-listen", "tcp:127.0.0.1:0", "-unix-directory", dir, "-metrics-listen", "127.0.0.1:0", "-q"))
	m := metricsAddr(t, s.Proc)
	defaultMax := "?"
	usage, _ := exec.Command("prlimit", "--nofile=20000:20000", bin(t, "snilisten"), "-h").CombinedOutput()
	if m := regexp.MustCompile(`-max-conns int\n.*\(default (\d+)\)`).FindSubmatch(usage); m != nil {
		defaultMax = string(m[1])
	}
	hello := rawHello("app.example.test")
	conns := make(chan net.Conn, clients)
	var failed atomic.Int64
	var wg sync.WaitGroup
	next := make(chan int, clients)
	for i := range clients {
		next <- i
	}
	close(next)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				src := fmt.Sprintf("127.0.1.%d", 1+i%sources)
				d := &net.Dialer{Timeout: time.Minute, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
				c, err := d.Dial("tcp", s.Addr)
				if err != nil {
					failed.Add(1)
					continue
				}
				if _, err := c.Write(hello); err != nil {
					failed.Add(1)
				}
				conns <- c
			}
		}()
	}
	wg.Wait()
	close(conns)
	defer func() {
		for c := range conns {
			c.Close()
		}
	}()
	reached := 0
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if reached = backendHeld(); reached >= clients {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	active := metricValue(t, m, "snilisten_connections_active", "")
	fds := fdCount(t, s.Pid())
	if failed.Load() != 0 || reached != clients || active != clients {
		t.Errorf("%d idle clients at -max-conns %s (default at 20,000 descriptors): %d reached the backend, %v active in snilisten, %d failed to connect",
			clients, defaultMax, reached, active, failed.Load())
	}
	if s.Exited() {
		t.Fatalf("snilisten exited: %s", s.Output())
	}
	t.Logf("idle at the limit: default -max-conns %s at 20,000 descriptors; %d idle clients from %d addresses: %d reached the backend, %v active, snilisten holding %d descriptors",
		defaultMax, clients, sources, reached, active, fds)
}

// TestAdmissionPerClientIPv6: in a network namespace with addresses in
// two /64s on loopback, connections from three addresses of one /64 share
// one -max-conns-per-client (4): 4 of 6 kept-open TLS connections are
// admitted, and a client from the other /64 is served.
func TestAdmissionPerClientIPv6(t *testing.T) {
	if !inNetns(t) {
		return
	}
	sameNet := []string{"2001:db8:1::1", "2001:db8:1::2", "2001:db8:1:0:ffff:ffff:ffff:3"}
	const other = "2001:db8:2::1"
	netnsSetup(t, []string{sameNet[0] + "/128", sameNet[1] + "/128", sameNet[2] + "/128", other + "/128"}, "127.0.0.1 localhost\n", "nameserver 127.0.0.1\n")
	dir := socketDir(t)
	unixBackend(t, dir, "app.example.test", false)
	s := startSnilistenCmd(t, exec.Command(bin(t, "snilisten"), "-listen", "tcp:[::1]:0", "-unix-directory", dir,
		"-max-conns-per-client", "4", "-metrics-listen", "127.0.0.1:0"))
	m := metricsAddr(t, s.Proc)
	open, refused := 0, 0
	for i := range 6 {
		src := sameNet[i%len(sameNet)]
		d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := tls.DialWithDialer(d, "tcp", s.Addr, testPKI(t).ClientConfig("app.example.test"))
		if err != nil {
			refused++
			continue
		}
		defer c.Close()
		open++
	}
	if _, err := httpsGetFrom(t, other, s.Addr, "app.example.test", 20*time.Second); err != nil {
		t.Errorf("a client from another /64: %v", err)
	}
	limited := metricValue(t, m, "snilisten_connections_finished_total", `outcome="client_limit"`)
	if open != 4 || refused != 2 || limited != 2 {
		t.Errorf("from one /64: %d open, %d refused, %v counted client_limit; want 4, 2, 2", open, refused, limited)
	}
	if n := len(logLines(s.Proc, "client=[2001:db8:1:", "outcome=client_limit")); n != 2 {
		t.Errorf("%d client_limit log lines for the /64, want 2", n)
	}
	t.Logf("per /64: 6 connections from 3 addresses of 2001:db8:1::/64 with -max-conns-per-client 4: %d open, %d refused; a client from 2001:db8:2::/64 served", open, refused)
}
