package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var metricsAddrRE = regexp.MustCompile(`msg=metrics address=(\S+)`)

// startSnilistenMetrics is startSnilisten with metrics served on a free
// loopback port; it returns the metrics address too.
func startSnilistenMetrics(t testing.TB, args ...string) (*snilisten, string) {
	t.Helper()
	s := startSnilisten(t, append([]string{"-metrics-listen", "127.0.0.1:0"}, args...)...)
	m := metricsAddrRE.FindStringSubmatch(s.Output())
	if m == nil {
		t.Fatalf("snilisten logged no metrics address:\n%s", s.Output())
	}
	return s, m[1]
}

// scrape is one scrape of a /metrics endpoint: the raw text and the
// parsed families.
type scrape struct {
	raw  []byte
	fams map[string]*dto.MetricFamily
}

// scrapeMetrics fetches /metrics from addr (HOST:PORT, or unix:PATH) and
// parses it with the Prometheus text parser.
func scrapeMetrics(t testing.TB, addr string) *scrape {
	t.Helper()
	s, err := tryScrape(addr)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return s
}

func tryScrape(addr string) (*scrape, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}
		addr = "unix"
	}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s: %s", resp.Status, raw)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse: %w\n%s", err, raw)
	}
	return &scrape{raw: raw, fams: fams}, nil
}

// matches reports whether m has every label in pairs (name, value, ...).
func matches(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// value returns the value of the series of name with the given labels
// (name, value pairs), summed if several match; for a histogram, its
// count. A missing series is -1, so that "absent" never reads as zero.
func (s *scrape) value(name string, labels ...string) float64 {
	f := s.fams[name]
	if f == nil {
		return -1
	}
	sum, n := 0.0, 0
	for _, m := range f.GetMetric() {
		if !matches(m, labels) {
			continue
		}
		n++
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	if n == 0 {
		return -1
	}
	return sum
}

// outcome is the number of connections finished with outcome o.
func (s *scrape) outcome(o string) float64 {
	return s.value("snilisten_connections_finished_total", "outcome", o)
}

// finished is the number of finished connections, every outcome.
func (s *scrape) finished() float64 { return s.value("snilisten_connections_finished_total") }

// labelValues lists the values of label across the series of name.
func (s *scrape) labelValues(name, label string) []string {
	var out []string
	for _, m := range s.fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && !slices.Contains(out, l.GetValue()) {
				out = append(out, l.GetValue())
			}
		}
	}
	slices.Sort(out)
	return out
}

// series lists the samples in the scrape by name and labels: one line
// each in the text format, the buckets of histograms included.
func (s *scrape) series() []string {
	var out []string
	for _, l := range strings.Split(string(s.raw), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l[:strings.LastIndexByte(l, ' ')])
		}
	}
	return out
}

// waitScrape scrapes addr until cond holds (10 seconds at most) and
// returns that scrape.
func waitScrape(t testing.TB, addr, what string, cond func(*scrape) bool) *scrape {
	t.Helper()
	var last *scrape
	waitFor(t, 10*time.Second, what, func() bool {
		s, err := tryScrape(addr)
		if err != nil {
			return false
		}
		last = s
		return cond(s)
	})
	return last
}

// proxyHeaderBytes formats a PROXY header of the given version claiming
// that the connection comes from src and was made to dst.
func proxyHeaderBytes(t testing.TB, version byte, src, dst string) []byte {
	t.Helper()
	s, err := net.ResolveTCPAddr("tcp", src)
	if err != nil {
		t.Fatal(err)
	}
	d, err := net.ResolveTCPAddr("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proxyproto.HeaderProxyFromAddrs(version, s, d).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dialFrom connects to addr from the local address src.
func dialFrom(t testing.TB, src, addr string) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("connect from %s to %s: %v", src, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawFrom connects to addr from src, writes payload and returns what the
// server sent until it closed (5 seconds at most).
func rawFrom(t testing.TB, src, addr string, payload []byte) []byte {
	t.Helper()
	c := dialFrom(t, src, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if len(payload) > 0 {
		if _, err := c.Write(payload); err != nil {
			t.Fatalf("write to %s: %v", addr, err)
		}
	}
	reply, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("read from %s: %v (want the connection closed)", addr, err)
	}
	return reply
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "connection reset") }

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
