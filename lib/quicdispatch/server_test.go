package quicdispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snitools/snitools/lib/backend"
	"github.com/snitools/snitools/lib/quic/quictest"
	"github.com/snitools/snitools/lib/quicflow"
	"golang.org/x/sys/unix"
)

// echoDialer is a Dialer whose backend is a UDP socket on 127.0.0.1 that
// records every datagram and answers each with "echo:" and its first
// byte. Names starting with "unknown" have no backend.
type echoDialer struct {
	t       *testing.T
	backend *net.UDPConn
	mu      sync.Mutex
	reqs    []backend.Request
	got     [][]byte
}

func newEchoDialer(t *testing.T) *echoDialer {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	d := &echoDialer{t: t, backend: pc}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			d.mu.Lock()
			d.got = append(d.got, bytes.Clone(buf[:n]))
			d.mu.Unlock()
			pc.WriteToUDPAddrPort([]byte{'e', 'c', 'h', 'o', ':', buf[0]}, from)
		}
	}()
	return d
}

func (d *echoDialer) DialUDP(ctx context.Context, req backend.Request) (*net.UDPConn, backend.Conn, error) {
	d.mu.Lock()
	d.reqs = append(d.reqs, req)
	d.mu.Unlock()
	if strings.HasPrefix(req.Name, "unknown") {
		return nil, backend.Conn{}, fmt.Errorf("%w: %s", backend.ErrUnknownName, req.Name)
	}
	c, err := net.DialUDP("udp", nil, d.backend.LocalAddr().(*net.UDPAddr))
	return c, backend.Conn{Backend: c.RemoteAddr().String(), Name: "echo"}, err
}

func (d *echoDialer) requests() []backend.Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]backend.Request(nil), d.reqs...)
}

func (d *echoDialer) received() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([][]byte(nil), d.got...)
}

// logBuffer collects log lines from many goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) lines(words ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, line := range strings.Split(l.b.String(), "\n") {
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		n++
	}
	return n
}

// serve runs a Server on a UDP socket on 127.0.0.1 and returns it, its
// port and its log.
func serve(t *testing.T, d Dialer, flows quicflow.Config) (*Server, int, *logBuffer) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, pc, d, flows)
}

// serveLoopbackWildcard is serve on a wildcard dual-stack socket that
// only loopback reaches (SO_BINDTODEVICE lo): a wildcard for the answers'
// source address, and nothing listening beyond this machine. It skips
// the test where binding to a device is not allowed.
func serveLoopbackWildcard(t *testing.T, d Dialer, flows quicflow.Config) (*Server, int, *logBuffer) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), "lo") }); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", ":0")
	if err != nil {
		t.Skipf("a wildcard socket bound to lo: %v", err)
	}
	return serveOn(t, pc.(*net.UDPConn), d, flows)
}

func serveOn(t *testing.T, pc *net.UDPConn, d Dialer, flows quicflow.Config) (*Server, int, *logBuffer) {
	logs := &logBuffer{}
	s, err := New(Config{Dialer: d, Flows: flows, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(pc) }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, pc.LocalAddr().(*net.UDPAddr).Port, logs
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestRelay replays a real client's two-datagram hello to a wildcard
// socket at 127.0.0.2 from a socket connected there: the backend gets the
// name, the client's address and both datagrams in order, then the
// client's later datagram; the client gets the backend's answers from
// 127.0.0.2 (IP_PKTINFO), or its connected socket would drop them. The
// flow ends idle, with one log line.
func TestRelay(t *testing.T) {
	d := newEchoDialer(t)
	s, port, logs := serveLoopbackWildcard(t, d, quicflow.Config{IdleTimeout: time.Millisecond})
	capture := quictest.Captures(t)[0]
	client, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, dg := range capture.Datagrams {
		client.Write(dg)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer := make([]byte, 100)
	for _, dg := range capture.Datagrams {
		n, err := client.Read(answer)
		if err != nil {
			t.Fatalf("answer to the hello: %v (sent from another address than 127.0.0.2?)", err)
		}
		if want := "echo:" + string(dg[:1]); string(answer[:n]) != want {
			t.Errorf("answer %q, want %q", answer[:n], want)
		}
	}
	client.Write([]byte{0x42, 1, 2, 3}) // a short header packet of the routed flow
	if n, err := client.Read(answer); err != nil || string(answer[:n]) != "echo:\x42" {
		t.Fatalf("answer to a later datagram: %q %v", answer[:n], err)
	}
	reqs := d.requests()
	if len(reqs) != 1 || reqs[0].Name != capture.ServerName || reqs[0].Client.String() != client.LocalAddr().String() ||
		reqs[0].Local.String() != fmt.Sprintf("127.0.0.2:%d", port) || strings.Join(reqs[0].ALPN, ",") != strings.Join(capture.ALPN, ",") {
		t.Errorf("requests %+v, want one for %s from %s to 127.0.0.2:%d", reqs, capture.ServerName, client.LocalAddr(), port)
	}
	got := d.received()
	for i, dg := range capture.Datagrams {
		if i >= len(got) || !bytes.Equal(got[i], dg) {
			t.Fatalf("the backend did not get the hello's datagram %d first, in order", i)
		}
	}
	waitUntil(t, "the idle flow's log line", func() bool { return logs.lines(`msg="quic flow"`, "outcome=ok") == 1 })
	if s.Active() != 0 {
		t.Errorf("%d flows active after the idle timeout", s.Active())
	}
	wantLine := fmt.Sprintf("client=%s sni=%s backend=%s up=", client.LocalAddr(), capture.ServerName, d.backend.LocalAddr())
	if logs.lines(wantLine, "datagrams_up=3 datagrams_down=3") != 1 {
		t.Errorf("log, want a line with %q and 3 datagrams each way:\n%s", wantLine, logs.b.String())
	}
}

// TestRefusedOnce: a name without a backend is looked up once however
// often the client sends its hello again, logged once, and the client
// is sent nothing.
func TestRefusedOnce(t *testing.T) {
	d := newEchoDialer(t)
	_, port, logs := serve(t, unknownNames{d}, quicflow.Config{})
	client, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	capture := quictest.Captures(t)[0]
	for range 5 {
		for _, dg := range capture.Datagrams {
			client.Write(dg)
		}
	}
	waitUntil(t, "the refusal's log line", func() bool { return logs.lines("outcome=unknown_name") == 1 })
	client.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := client.Read(make([]byte, 100)); !errors.Is(err, errTimeout(err)) {
		t.Errorf("the refused client got %d bytes (%v), want nothing", n, err)
	}
	if n := len(d.requests()); n != 1 || logs.lines("outcome=unknown_name") != 1 {
		t.Errorf("%d lookups and %d log lines for one client sending its hello 5 times, want 1 and 1", n, logs.lines("outcome=unknown_name"))
	}
}

// unknownNames is a Dialer that finds no backend for any name.
type unknownNames struct{ d *echoDialer }

func (u unknownNames) DialUDP(ctx context.Context, req backend.Request) (*net.UDPConn, backend.Conn, error) {
	req.Name = "unknown." + req.Name
	return u.d.DialUDP(ctx, req)
}

// errTimeout returns err if it is a timeout, so that errors.Is matches
// exactly timeouts.
func errTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errors.New("not a timeout")
}

// TestShutdownEndsFlows: Shutdown ends a routed flow at once, with
// outcome shutdown, and Serve returns.
func TestShutdownEndsFlows(t *testing.T) {
	d := newEchoDialer(t)
	s, port, logs := serve(t, d, quicflow.Config{})
	client, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, dg := range quictest.Captures(t)[0].Datagrams {
		client.Write(dg)
	}
	waitUntil(t, "a routed flow", func() bool { return s.Active() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if logs.lines(`msg="quic flow"`, "outcome=shutdown") != 1 {
		t.Errorf("log:\n%s", logs.b.String())
	}
}

// TestDropReason names every error the table gives for a dropped
// datagram by one of DropReasons.
func TestDropReason(t *testing.T) {
	known := map[string]bool{}
	for _, r := range DropReasons() {
		known[r] = true
	}
	for _, err := range []error{quicflow.ErrRate, quicflow.ErrPendingFull, quicflow.ErrBudget, quicflow.ErrRoutedFull, quicflow.ErrDuplicate, quicflow.ErrClientFlows} {
		if r := DropReason(fmt.Errorf("wrapped: %w", err)); !known[r] || r == "other" {
			t.Errorf("DropReason(%v) = %q", err, r)
		}
	}
	if got := DropReason(errors.New("unrelated")); got != "other" {
		t.Errorf("DropReason of an unrelated error = %q, want other", got)
	}
}

// TestShutdownWhileReading: Shutdown returns while datagrams keep
// coming, however it meets the read loop. (It held the table's lock
// while closing the socket, and Close waits for the read loop, which
// takes that lock for each datagram: a deadlock, now and then.)
func TestShutdownWhileReading(t *testing.T) {
	for round := range 30 {
		d := newEchoDialer(t)
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Config{Dialer: d})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve(pc) }()
		stop := make(chan struct{})
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
			if err != nil {
				return
			}
			defer c.Close()
			garbage := make([]byte, 1200)
			garbage[0] = 0x40
			for {
				select {
				case <-stop:
					return
				default:
					c.Write(garbage)
				}
			}
		}()
		time.Sleep(20 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		done := make(chan error, 1)
		go func() { done <- s.Shutdown(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: Shutdown: %v", round, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Shutdown did not return while datagrams came", round)
		}
		cancel()
		close(stop)
		<-sent
		if err := <-served; err != nil {
			t.Fatalf("round %d: Serve: %v", round, err)
		}
	}
}
