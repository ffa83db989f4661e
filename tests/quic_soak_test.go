package tests

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoakQUIC moves pseudo-random bytes both ways over many HTTP/3
// connections through snilisten on UDP, each checked by SHA-256, with
// several clients at once, some connections making many requests: every
// byte arrives, every flow ends ok, and afterwards snilisten is back at
// its idle baseline of goroutines and descriptors. Short slice in
// make test; the long form under SNITOOLS_SOAK=1 (make soak).
func TestSoakQUIC(t *testing.T) {
	plan := planSoak(t, 48, 5*time.Minute)
	backendAddr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	h3XferBackend(t, backendAddr)
	_, backendPort, _ := net.SplitHostPort(backendAddr)
	s := startSnilistenOn(t, "udp:127.0.0.1:0", "-mode", "tcp", "-backend-cidr", "127.0.0.0/8", "-backend-port", backendPort,
		"-quic-idle-timeout", "2s", "-quic-flow-rate", "0", "-quic-max-flows-per-client", "0", "-metrics-listen", "127.0.0.1:0")
	metrics := metricsAddr(t, s.Proc)
	base := takeBaseline(t, s, metrics)

	var (
		flows, requests, up, down atomic.Int64
		failures                  = make(chan error, plan.workers)
		stop                      = time.Now().Add(plan.duration)
		wg                        sync.WaitGroup
	)
	for w := range plan.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 22))
			for time.Now().Before(stop) && flows.Add(1) <= int64(plan.conns) {
				c, err := newH3Client(t, "", udpAddrOf(s), "localhost", 5*time.Second)
				if err != nil {
					failures <- err
					return
				}
				for range 1 + r.IntN(4) { // requests on this one connection
					if err := soakQUICRequest(c, r, plan.maxSize, &up, &down); err != nil {
						c.Close()
						failures <- fmt.Errorf("flow %s: %w", c.local, err)
						return
					}
					requests.Add(1)
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	n := min(flows.Load(), int64(plan.conns))
	t.Logf("%d flows, %d requests, %d bytes up, %d down", n, requests.Load(), up.Load(), down.Load())
	waitFor(t, 30*time.Second, "every flow to end", func() bool {
		return metricValue(t, metrics, "snilisten_quic_flows_active", "") == 0
	})
	if ok := len(logLines(s.Proc, `msg="quic flow"`, "outcome=ok")); int64(ok) != n || len(logLines(s.Proc, `msg="quic flow"`)) != ok {
		t.Errorf("%d flows logged ok of %d logged, want all %d ok", ok, len(logLines(s.Proc, `msg="quic flow"`)), n)
	}
	// The metrics say the same: every flow ok, its hello timed, and at
	// least the bodies' bytes relayed each way (QUIC adds its own).
	for _, m := range []struct {
		name, labels string
		min, max     float64
	}{
		{"snilisten_quic_flows_finished_total", `outcome="ok"`, float64(n), float64(n)},
		{"snilisten_quic_hello_seconds_count", "", float64(n), float64(n)},
		{"snilisten_quic_bytes_total", `direction="up"`, float64(up.Load()), 2 * float64(up.Load()+down.Load()+1<<20)},
		{"snilisten_quic_bytes_total", `direction="down"`, float64(down.Load()), 2 * float64(up.Load()+down.Load()+1<<20)},
	} {
		if v := metricValue(t, metrics, m.name, m.labels); v < m.min || v > m.max {
			t.Errorf("%s{%s} = %v, want %v to %v", m.name, m.labels, v, m.min, m.max)
		}
	}
	t.Log(checkBaseline(t, s, metrics, base))
}

// soakQUICRequest makes one GET of a random size, or one POST of a
// random body, and checks the bytes by SHA-256.
func soakQUICRequest(c *h3Client, r *rand.Rand, maxSize int64, up, down *atomic.Int64) error {
	size, seed := soakSize(r, maxSize), r.Uint64()
	want := sha256.New()
	io.Copy(want, io.LimitReader(rand.NewChaCha8(seedBytes(seed)), size))
	if r.IntN(2) == 0 {
		body, err := c.Get(60*time.Second, fmt.Sprintf("/bytes?n=%d&seed=%d", size, seed))
		if err != nil {
			return fmt.Errorf("GET %d bytes: %w", size, err)
		}
		if got := sha256.Sum256([]byte(body)); !bytes.Equal(got[:], want.Sum(nil)) || int64(len(body)) != size {
			return fmt.Errorf("GET %d bytes: got %d, hashes differ", size, len(body))
		}
		down.Add(size)
		return nil
	}
	body, err := c.Post(60*time.Second, "/sha256", io.LimitReader(rand.NewChaCha8(seedBytes(seed)), size))
	if err != nil {
		return fmt.Errorf("POST %d bytes: %w", size, err)
	}
	if body != fmt.Sprintf("%d %x", size, want.Sum(nil)) {
		return fmt.Errorf("POST %d bytes: the backend read %q", size, body)
	}
	up.Add(size)
	return nil
}

func seedBytes(seed uint64) [32]byte {
	var b [32]byte
	copy(b[:], strconv.FormatUint(seed, 16))
	return b
}

// h3XferBackend serves HTTP/3 on addr: GET /bytes?n=N&seed=S answers N
// pseudo-random bytes (ChaCha8 from seedBytes(S)); POST /sha256 answers
// "LENGTH HEX" of the body it read.
func h3XferBackend(t testing.TB, addr string) {
	t.Helper()
	serveH3(t, addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == "GET" && r.URL.Path == "/bytes":
			n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
			seed, _ := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			io.Copy(w, io.LimitReader(rand.NewChaCha8(seedBytes(seed)), n))
		case r.Method == "POST" && r.URL.Path == "/sha256":
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
		default:
			http.NotFound(w, r)
		}
	}))
}
