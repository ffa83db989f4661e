package tests

// Helpers of the reliability, hostile-input and soak tests: a backend and
// a client that move random amounts of data both ways and check every
// byte with SHA-256, and readings of a process's resources (descriptors
// by kind, resident memory, CPU time, goroutines from its metrics).

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// soakEnabled reports whether the long forms run (make soak).
func soakEnabled() bool { return os.Getenv("SNITOOLS_SOAK") != "" }

// Orders in which an xfer's two directions end: both at once, the
// client's end first (the backend answers only after the client's EOF:
// a half-closed client keeps receiving), or the backend's end first (it
// sends everything and half-closes before reading: a half-closed backend
// keeps receiving).
const (
	orderConcurrent = iota
	orderClientFirst
	orderBackendFirst
	numOrders
)

// xferSpec is one transfer: after its ClientHello the client sends a
// control block saying how many bytes go each way, then up bytes; the
// backend sends down bytes. Both streams are pseudo-random, seeded by ID.
type xferSpec struct {
	ID       uint32
	Up, Down int64
	Order    byte
	// Hold, if set, keeps the client from reading until it is closed:
	// the down direction backs up into snilisten.
	Hold <-chan struct{}
	// Prefix, if set, is sent before the hello: a trusted front's PROXY
	// header.
	Prefix []byte
}

const xferMagic = "SNIX"

func (s xferSpec) control() []byte {
	b := make([]byte, 0, 32)
	b = append(b, xferMagic...)
	b = binary.BigEndian.AppendUint32(b, s.ID)
	b = binary.BigEndian.AppendUint64(b, uint64(s.Up))
	b = binary.BigEndian.AppendUint64(b, uint64(s.Down))
	b = append(b, s.Order)
	return append(b, make([]byte, 32-len(b))...)
}

func parseControl(b []byte) (xferSpec, error) {
	if len(b) != 32 || string(b[:4]) != xferMagic {
		return xferSpec{}, fmt.Errorf("bad control block %q", b)
	}
	return xferSpec{ID: binary.BigEndian.Uint32(b[4:]), Up: int64(binary.BigEndian.Uint64(b[8:])),
		Down: int64(binary.BigEndian.Uint64(b[16:])), Order: b[24] % numOrders}, nil
}

// stream returns the pseudo-random bytes of one direction of transfer id.
func stream(id uint32, dir byte, n int64) io.Reader {
	var seed [32]byte
	binary.BigEndian.PutUint32(seed[:], id)
	seed[4] = dir
	return io.LimitReader(rand.NewChaCha8(seed), n)
}

// xferResult is what the backend saw of one transfer.
type xferResult struct {
	UpBytes    int64
	UpSum      [32]byte // of the bytes received after the control block
	DownSum    [32]byte // of the bytes sent
	HelloBytes int      // the ClientHello as received
	Err        error
}

// xferServer is a backend for xfer clients. It serves any net.Listener:
// a UNIX stream socket, one behind a PROXY header, a TCP socket, or a
// handoff socket (lib/handoff), and records what it saw per transfer.
type xferServer struct {
	mu       sync.Mutex
	results  map[uint32]chan xferResult
	accepted atomic.Int64
	// Peers records the client addresses the backend saw (RemoteAddr,
	// which a PROXY header or a handoff message sets), if KeepPeers.
	KeepPeers bool
	peers     []string
	// Gate, if set, holds every transfer after its control block until
	// it is closed: connections pile up open and idle.
	Gate chan struct{}
}

func newXferServer() *xferServer { return &xferServer{results: map[uint32]chan xferResult{}} }

func (s *xferServer) slot(id uint32) chan xferResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.results[id]
	if !ok {
		ch = make(chan xferResult, 1)
		s.results[id] = ch
	}
	return ch
}

// Serve accepts on ln until it is closed (when the test ends).
func (s *xferServer) Serve(t testing.TB, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					continue
				}
				return
			}
			s.accepted.Add(1)
			go s.handle(c)
		}
	}()
}

// listenUnix serves xfers on a new UNIX stream socket dir/name; with
// proxyHeader, connections must begin with a PROXY header.
func (s *xferServer) listenUnix(t testing.TB, dir, name string, proxyHeader bool) string {
	t.Helper()
	path := filepath.Join(dir, name)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if proxyHeader {
		ln = &proxyproto.Listener{Listener: ln, Policy: func(net.Addr) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }}
	}
	s.Serve(t, ln)
	return path
}

func closeWrite(c net.Conn) error {
	if pc, ok := c.(*proxyproto.Conn); ok {
		c = pc.Raw()
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("%T cannot half-close", c)
}

// readHello reads one TLS record, the ClientHello of rawHello, from r.
func readHello(r io.Reader) (int, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, fmt.Errorf("hello record header: %w", err)
	}
	if h[0] != 22 {
		return 0, fmt.Errorf("hello starts with %#x", h[0])
	}
	n := int(binary.BigEndian.Uint16(h[3:]))
	if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
		return 0, fmt.Errorf("hello body: %w", err)
	}
	return 5 + n, nil
}

func (s *xferServer) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Minute))
	if s.KeepPeers {
		s.mu.Lock()
		s.peers = append(s.peers, c.RemoteAddr().String())
		s.mu.Unlock()
	}
	br := bufio.NewReaderSize(c, 64<<10)
	helloLen, err := readHello(br)
	if err != nil {
		return
	}
	ctl := make([]byte, 32)
	if _, err := io.ReadFull(br, ctl); err != nil {
		return
	}
	spec, err := parseControl(ctl)
	if err != nil {
		return
	}
	if g := s.Gate; g != nil {
		<-g
	}
	res := xferResult{HelloBytes: helloLen}
	send := func() error {
		h := sha256.New()
		_, err := io.Copy(io.MultiWriter(c, h), stream(spec.ID, 1, spec.Down))
		copy(res.DownSum[:], h.Sum(nil))
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
		return closeWrite(c)
	}
	recv := func() error {
		h := sha256.New()
		n, err := io.Copy(h, br)
		res.UpBytes = n
		copy(res.UpSum[:], h.Sum(nil))
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		return nil
	}
	switch spec.Order {
	case orderConcurrent:
		errc := make(chan error, 1)
		go func() { errc <- send() }()
		err = errors.Join(recv(), <-errc)
	case orderClientFirst:
		err = recv()
		if err == nil {
			err = send()
		}
	case orderBackendFirst:
		err = send()
		if err == nil {
			err = recv()
		}
	}
	res.Err = err
	s.slot(spec.ID) <- res
}

// Result waits up to d for the backend's record of transfer id.
func (s *xferServer) Result(id uint32, d time.Duration) (xferResult, bool) {
	select {
	case r := <-s.slot(id):
		return r, true
	case <-time.After(d):
		return xferResult{}, false
	}
}

// Peers returns the client addresses seen so far.
func (s *xferServer) Peers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.peers...)
}

// xferOutcome is what a client learnt of one transfer.
type xferOutcome struct {
	Spec       xferSpec
	Verified   int64 // bytes checked, both directions
	Wire       int64 // bytes the client sent (hello and control included)
	Err        error
	Connected  bool
	BackendErr error
}

// runXfer makes transfer spec through addr with sni and checks both
// directions against what srv recorded.
func runXfer(addr, sni string, srv *xferServer, spec xferSpec, timeout time.Duration) xferOutcome {
	out := xferOutcome{Spec: spec}
	d := net.Dialer{Timeout: 10 * time.Second}
	if spec.Hold != nil {
		// A small receive buffer, so that what the client does not read
		// backs up into snilisten at once.
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		out.Err = fmt.Errorf("dial: %w", err)
		return out
	}
	out.Connected = true
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	hello := rawHello(sni)
	upSum := sha256.New()
	sendErr := make(chan error, 1)
	go func() {
		if _, err := c.Write(append(append(append([]byte(nil), spec.Prefix...), hello...), spec.control()...)); err != nil {
			sendErr <- fmt.Errorf("send hello: %w", err)
			return
		}
		_, err := io.Copy(io.MultiWriter(c, upSum), stream(spec.ID, 0, spec.Up))
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		if err != nil {
			err = fmt.Errorf("send: %w", err)
		}
		sendErr <- err
	}()
	if spec.Hold != nil {
		<-spec.Hold
	}
	downSum := sha256.New()
	head := &headWriter{max: 7}
	n, rerr := io.Copy(io.MultiWriter(downSum, head), c)
	serr := <-sendErr
	out.Wire = int64(len(hello)) + 32 + spec.Up // the prefix is consumed, not relayed
	if rerr != nil || serr != nil {
		out.Err = errors.Join(serr, rerr)
		return out
	}
	if n != spec.Down {
		if a := alertOf(head.b); a >= 0 && n == 7 {
			out.Err = fmt.Errorf("TLS alert %d from snilisten", a)
		} else {
			out.Err = fmt.Errorf("received %d bytes, want %d", n, spec.Down)
		}
		return out
	}
	res, ok := srv.Result(spec.ID, 30*time.Second)
	switch {
	case !ok:
		out.Err = errors.New("the backend never finished")
	case res.Err != nil:
		out.Err = fmt.Errorf("backend: %w", res.Err)
	case res.HelloBytes != len(hello):
		out.Err = fmt.Errorf("backend got a %d-byte hello, sent %d", res.HelloBytes, len(hello))
	case res.UpBytes != spec.Up:
		out.Err = fmt.Errorf("backend received %d bytes, sent %d", res.UpBytes, spec.Up)
	case [32]byte(upSum.Sum(nil)) != res.UpSum:
		out.Err = errors.New("SHA-256 of the bytes sent up differs")
	case [32]byte(downSum.Sum(nil)) != res.DownSum:
		out.Err = errors.New("SHA-256 of the bytes sent down differs")
	default:
		out.Verified = spec.Up + spec.Down
	}
	return out
}

// headWriter keeps the first max bytes written to it.
type headWriter struct {
	b   []byte
	max int
}

func (h *headWriter) Write(p []byte) (int, error) {
	if k := min(len(p), h.max-len(h.b)); k > 0 {
		h.b = append(h.b, p[:k]...)
	}
	return len(p), nil
}

// fdKinds counts the open descriptors of pid by kind: "socket", "pipe",
// "anon_inode:[eventpoll]" and so on; files count as "file".
func fdKinds(t testing.TB, pid int) map[string]int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("descriptors of %d: %v", pid, err)
	}
	kinds := map[string]int{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		switch {
		case strings.HasPrefix(target, "socket:"):
			kinds["socket"]++
		case strings.HasPrefix(target, "pipe:"):
			kinds["pipe"]++
		case strings.HasPrefix(target, "anon_inode:"):
			kinds[target]++
		default:
			kinds["file"]++
		}
	}
	return kinds
}

// rssKiB is the resident memory of pid in KiB.
func rssKiB(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}

// cpuTime is the CPU time pid has used, user and system.
func cpuTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	user, sys := cpuTimes(t, pid)
	return user + sys
}

// cpuTimes is the CPU time pid has used in user space and in the kernel.
func cpuTimes(t testing.TB, pid int) (user, sys time.Duration) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("stat of %d: %v", pid, err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime) * tick, time.Duration(stime) * tick
}

// sumLogField adds up the integer field (up= or down=) of the log lines of
// p that contain every one of words.
func sumLogField(p *Proc, field string, words ...string) int64 {
	var total int64
	re := regexp.MustCompile(`\b` + field + `=(\d+)`)
	for _, l := range logLines(p, words...) {
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			total += n
		}
	}
	return total
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(10 * time.Microsecond)
}

// soakBaseline is what a snilisten holds when idle.
type soakBaseline struct {
	goroutines float64
	fds        map[string]int
}

// takeBaseline records what s holds now, idle. go_goroutines counts the
// scrape's own goroutines too (the connection's, and the registry's
// collecting workers, started as collection goes), so one idle snilisten
// reads 10 or 11 from one scrape to the next: the baseline is the most of
// several scrapes, or a low one would fail a later check at the usual
// value.
func takeBaseline(t *testing.T, s *snilisten, metrics string) soakBaseline {
	var goroutines float64
	for range 10 {
		goroutines = max(goroutines, metricValue(t, metrics, "go_goroutines", ""))
		time.Sleep(20 * time.Millisecond)
	}
	return soakBaseline{goroutines: goroutines, fds: fdKinds(t, s.Pid())}
}

// checkBaseline waits until s is back at its baseline: as many goroutines
// and sockets and other descriptors as before, and no more splice pipes
// than the relay's pools hold (64 per event loop, one loop per CPU).
func checkBaseline(t *testing.T, s *snilisten, metrics string, base soakBaseline) string {
	t.Helper()
	pipeBound := 2 * 64 * runtime.NumCPU()
	var g float64
	var fds map[string]int
	ok := false
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		g, fds = metricValue(t, metrics, "go_goroutines", ""), fdKinds(t, s.Pid())
		ok = g <= base.goroutines && fds["pipe"] <= pipeBound
		for k, n := range fds {
			if k != "pipe" && n > base.fds[k] {
				ok = false
			}
		}
		if ok {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	report := fmt.Sprintf("goroutines %v (baseline %v), descriptors %v (baseline %v; pipes bounded by %d)", g, base.goroutines, fds, base.fds, pipeBound)
	if !ok {
		t.Errorf("not back at the baseline: %s", report)
		// Its goroutines, in its output: which one is left over.
		syscall.Kill(s.Pid(), syscall.SIGQUIT)
		time.Sleep(300 * time.Millisecond)
	}
	return report
}
