package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// A target is where the load generator connects: the backend itself or a
// proxy in front of it. Every connection is a full TLS 1.3 handshake with
// SNI: the client keeps no session cache.
type target struct {
	addr string
	tls  *tls.Config
}

// connTimeout bounds everything one connection of the load generator
// does, except a bulk transfer.
const connTimeout = 10 * time.Second

// handshake dials and completes the TLS handshake.
func (t target) handshake(ctx context.Context, timeout time.Duration) (*tls.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
	tc := tls.Client(c, t.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("handshake with %s: %w", t.addr, err)
	}
	return tc, nil
}

// get makes one connection, sends GET path, reads the whole response body
// into buf-sized reads and closes. It returns the body's length.
func (t target) get(ctx context.Context, path string, timeout time.Duration, buf []byte) (int64, error) {
	c, err := t.handshake(ctx, timeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+sni+"\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, fmt.Errorf("GET %s via %s: %w", path, t.addr, err)
	}
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, fmt.Errorf("GET %s via %s: %w", path, t.addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s via %s: %s", path, t.addr, resp.Status)
	}
	n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, buf)
	if err != nil {
		return n, fmt.Errorf("GET %s via %s: after %d bytes: %w", path, t.addr, n, err)
	}
	if n != resp.ContentLength {
		return n, fmt.Errorf("GET %s via %s: %d bytes, want %d", path, t.addr, n, resp.ContentLength)
	}
	return n, nil
}

// connStats is what connection mode measured.
type connStats struct {
	conns   int // completed
	errs    int
	err     error // the first error
	elapsed time.Duration
	lat     []time.Duration // sorted
}

func (s connStats) rate() float64 { return float64(s.conns) / s.elapsed.Seconds() }

// add merges o, another measurement of the same target, into s. The
// latencies need sorting again afterwards.
func (s *connStats) add(o connStats) {
	s.conns += o.conns
	s.errs += o.errs
	if s.err == nil {
		s.err = o.err
	}
	s.elapsed += o.elapsed
	s.lat = append(s.lat, o.lat...)
}

// getter makes one request on a new connection: a TLS target's, or a
// QUIC target's (a new flow).
type getter[R any] interface {
	get(ctx context.Context, path string, timeout time.Duration, buf []byte) (R, error)
}

// connMode runs c clients for d: each connects, does a full handshake,
// GET /, reads the response and closes, over and over (for a QUIC
// target, each time a new flow). It stops early after maxConns
// connections or when ctx ends.
func connMode[R any](ctx context.Context, t getter[R], c int, d time.Duration, maxConns int) connStats {
	var (
		mu     sync.Mutex
		st     connStats
		wg     sync.WaitGroup
		issued int
	)
	start := time.Now()
	deadline := start.Add(d)
	for range c {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1024)
			buf := make([]byte, 512)
			var errs int
			var first error
			for time.Now().Before(deadline) && ctx.Err() == nil {
				mu.Lock()
				issued++
				over := issued > maxConns
				mu.Unlock()
				if over {
					break
				}
				t0 := time.Now()
				if _, err := t.get(ctx, "/", connTimeout, buf); err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			st.lat = append(st.lat, lat...)
			st.errs += errs
			if st.err == nil {
				st.err = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	st.elapsed = time.Since(start)
	st.conns = len(st.lat)
	slices.Sort(st.lat)
	return st
}

// bulkMode downloads n bytes through one connection and returns how long
// it took from the dial to the last byte.
func bulkMode(ctx context.Context, t target, n int64) (time.Duration, error) {
	// Bounded: even 1 GiB at 10 MB/s fits.
	timeout := 30*time.Second + time.Duration(n/(10<<20))*time.Second
	buf := make([]byte, 256<<10)
	t0 := time.Now()
	got, err := t.get(ctx, fmt.Sprintf("/bulk?n=%d", n), timeout, buf)
	if err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("bulk: %d bytes, want %d", got, n)
	}
	return time.Since(t0), nil
}

// idleConns opens k TLS connections with w workers and leaves them open
// after the handshake. It returns the connections it could open and the
// first error, if any connection failed.
func idleConns(ctx context.Context, t target, k, w int) ([]*tls.Conn, int, error) {
	var (
		mu    sync.Mutex
		conns = make([]*tls.Conn, 0, k)
		next  int
		errs  int
		first error
		wg    sync.WaitGroup
	)
	// 5 ms a connection is 200 handshakes a second, several times slower
	// than a loaded 2-core machine: a deadline for stalls, not for speed.
	deadline := time.Now().Add(time.Duration(k)*5*time.Millisecond + 20*time.Second)
	for range w {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				mu.Lock()
				if next >= k {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				c, err := t.handshake(ctx, connTimeout)
				mu.Lock()
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
				} else {
					c.SetDeadline(time.Time{})
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(conns) < k && first == nil {
		first = errors.New("idle: deadline before all connections were open")
	}
	return conns, errs, first
}
