package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/snitools/snitools/lib/dispatch"
)

// TestSnilistenMetricsCount: after a known sequence of connections the
// scraped counters say exactly what happened, and promtool accepts the
// scrape.
func TestSnilistenMetricsCount(t *testing.T) {
	dir := socketDir(t)
	echoBackend(t, dir, "echo.example.test")
	s, maddr := startSnilistenMetrics(t, "-unix-directory", dir, "-peek-timeout", "300ms", "-metrics-per-backend")

	before := scrapeMetrics(t, maddr)
	for _, o := range dispatch.Outcomes() {
		if v := before.outcome(string(o)); v != 0 {
			t.Errorf("outcome %q before any connection: %v, want a series at 0", o, v)
		}
	}
	if v := before.value("snilisten_connections_accepted_total"); v != 0 {
		t.Errorf("accepted before any connection: %v", v)
	}

	// Three successful connections through the echo backend, with a
	// known number of bytes each way.
	var relayed int64
	for i := range 3 {
		payload := append(rawHello("echo.example.test"), bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1))...)
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("echo %d: %v, %d of %d bytes back", i, err, len(got), len(payload))
		}
		relayed += int64(len(payload))
	}
	// Two names nobody serves.
	for _, name := range []string{"nobody.example.test", "nobody-else.example.test"} {
		reply, err := sendRaw(t, s.Addr, rawHello(name))
		if err != nil || alertOf(reply) != 112 {
			t.Fatalf("%s: want an unrecognized_name alert, got %v %x", name, err, reply)
		}
	}
	// One client that does not speak TLS.
	if reply := rawFrom(t, "127.0.0.1", s.Addr, []byte("GET / HTTP/1.0\r\n\r\n")); len(reply) != 0 {
		t.Fatalf("garbage: want a silent close, got %q", reply)
	}
	// One client that sends nothing, past the peek timeout.
	if reply, err := sendRaw(t, s.Addr, nil); err != nil || len(reply) != 0 {
		t.Fatalf("stalled client: want a silent close at the peek timeout, got %v %q", err, reply)
	}

	m := waitScrape(t, maddr, "7 finished connections", func(m *scrape) bool { return m.finished() == 7 })
	want := map[string]float64{"ok": 3, "unknown_name": 2, "not_tls": 1, "peek_timeout": 1}
	for _, o := range dispatch.Outcomes() {
		if got := m.outcome(string(o)); got != want[string(o)] {
			t.Errorf("snilisten_connections_finished_total{outcome=%q} = %v, want %v", o, got, want[string(o)])
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"snilisten_connections_accepted_total", nil, 7},
		{"snilisten_connections_active", nil, 0},
		{"snilisten_bytes_total", []string{"direction", "up"}, float64(relayed)},
		{"snilisten_bytes_total", []string{"direction", "down"}, float64(relayed)},
		{"snilisten_peek_seconds", nil, 7},            // every connection was peeked at
		{"snilisten_backend_connect_seconds", nil, 5}, // 3 served, 2 looked up in vain
		{"snilisten_connection_duration_seconds", nil, 7},
		{"snilisten_backend_connections_total", []string{"backend", "echo.example.test", "outcome", "ok"}, 3},
		{"snilisten_backend_connections_total", nil, 3}, // and nothing else
	} {
		if got := m.value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The stalled client waited the whole peek timeout: the histogram's
	// sum says at least that.
	if f := m.fams["snilisten_peek_seconds"]; f == nil || f.GetMetric()[0].GetHistogram().GetSampleSum() < 0.3 {
		t.Errorf("snilisten_peek_seconds_sum below the 300ms the stalled client took")
	}
	for _, name := range []string{"process_open_fds", "process_max_fds", "go_goroutines", "process_resident_memory_bytes"} {
		if m.value(name) <= 0 {
			t.Errorf("%s missing (Go and process collectors)", name)
		}
	}
	promtoolCheckMetrics(t, m.raw)
	if t.Failed() {
		t.Logf("scrape:\n%s", m.raw)
	}
}

// TestSnilistenMetricsUnixSocket serves the metrics on a UNIX socket.
func TestSnilistenMetricsUnixSocket(t *testing.T) {
	dir := socketDir(t)
	unixBackend(t, dir, "web.example.test", false)
	path := filepath.Join(socketDir(t), "metrics.sock")
	s := startSnilisten(t, "-unix-directory", dir, "-metrics-listen", "unix:"+path)
	if body, err := httpsGet(t, s.Addr, "web.example.test", "/"); err != nil || !strings.Contains(body, "backend=web.example.test") {
		t.Fatalf("request: %v %s", err, body)
	}
	waitScrape(t, "unix:"+path, "one connection counted, over the UNIX socket", func(m *scrape) bool { return m.finished() == 1 })

	// A file that is not a socket is never replaced: a typo in the path
	// must not delete it.
	file := filepath.Join(socketDir(t), "precious")
	os.WriteFile(file, []byte("keep me\n"), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t, "snilisten"), "-listen", "tcp:127.0.0.1:0", "-unix-directory", dir, "-metrics-listen", "unix:"+file)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("metrics on an existing file: exit %d, want 1\n%s", code, out)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me\n" {
		t.Errorf("the file at the metrics path was touched: %v %q", err, b)
	}
}

// TestSnilistenMetricsFlags: the metrics and trust flags are checked
// before anything starts.
func TestSnilistenMetricsFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"-metrics-per-backend"}, "-metrics-per-backend"},
		{[]string{"-metrics-listen", "9100"}, "-metrics-listen"},
		{[]string{"-metrics-listen", "unix:"}, "-metrics-listen"},
		{[]string{"-accept-proxy", "10.0.0.0/33"}, "-accept-proxy"},
		{[]string{"-accept-proxy", "haproxy.example.test"}, "-accept-proxy"},
	} {
		cmd := exec.Command(bin(t, "snilisten"), append([]string{"-listen", "tcp:127.0.0.1:0"}, c.args...)...)
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), c.flag) || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Errorf("snilisten %v: exit %d (%v), want 2 and one line naming %s:\n%s", c.args, code, err, c.flag, out)
		}
	}
}

// TestSnilistenMetricsNameFlood: 10,000 distinct names, as an attacker
// would send them, add no series: names are never labels.
func TestSnilistenMetricsNameFlood(t *testing.T) {
	dir := socketDir(t)
	unixBackend(t, dir, "real.example.test", false)
	s, maddr := startSnilistenMetrics(t, "-unix-directory", dir, "-metrics-per-backend", "-q")
	if body, err := httpsGet(t, s.Addr, "real.example.test", "/"); err != nil || !strings.Contains(body, "backend=real.example.test") {
		t.Fatalf("request: %v %s", err, body)
	}
	// Both counters: the observer updates them one after the other, and a
	// scrape may fall between.
	before := waitScrape(t, maddr, "the first connection counted", func(m *scrape) bool {
		return m.finished() == 1 && m.value("snilisten_backend_connections_total", "backend", "real.example.test") == 1
	})

	const flood, workers = 10000, 32
	names := make(chan string, flood)
	for range flood {
		var r [8]byte
		rand.Read(r[:])
		names <- "flood-" + hex.EncodeToString(r[:]) + ".example.test"
	}
	close(names)
	var alerts, failures atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for name := range names {
				c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
				if err != nil {
					failures.Add(1)
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write(rawHello(name))
				reply, _ := io.ReadAll(c)
				c.Close()
				if alertOf(reply) == 112 {
					alerts.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d connections with distinct names in %v", flood, time.Since(start).Round(time.Millisecond))
	if alerts.Load() != flood {
		t.Errorf("%d of %d flood connections got unrecognized_name (%d failed to connect)", alerts.Load(), flood, failures.Load())
	}
	after := waitScrape(t, maddr, "every flood connection counted", func(m *scrape) bool { return m.finished() == flood+1 })
	if got := after.outcome("unknown_name"); got != flood {
		t.Errorf("unknown_name = %v, want %d", got, flood)
	}
	if b, a := before.series(), after.series(); len(a) != len(b) {
		t.Errorf("series: %d before the flood, %d after; new: %q", len(b), len(a), slices.DeleteFunc(a, func(s string) bool { return slices.Contains(b, s) }))
	}
	if got := after.labelValues("snilisten_backend_connections_total", "backend"); !slices.Equal(got, []string{"real.example.test"}) {
		t.Errorf("backend label values %q, want only the backend that exists", got)
	}
	if bytes.Contains(after.raw, []byte("flood-")) {
		t.Errorf("a flood name appears in the scrape")
	}
}

// TestSnilistenMetricsPerBackend: -metrics-per-backend labels by the
// socket that served, the wildcard socket for every name under it, and
// never by a name without a socket.
func TestSnilistenMetricsPerBackend(t *testing.T) {
	dir := socketDir(t)
	unixBackend(t, dir, "a.example.test", false)
	unixBackend(t, dir, "_.sub.example.test", false)
	s, maddr := startSnilistenMetrics(t, "-unix-directory", dir, "-metrics-per-backend")
	for _, name := range []string{"a.example.test", "x.sub.example.test", "y.sub.example.test", "z.sub.example.test"} {
		if _, err := httpsGet(t, s.Addr, name, "/"); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for _, name := range []string{"nobody.example.test", "sub.example.test"} {
		if reply, _ := sendRaw(t, s.Addr, rawHello(name)); alertOf(reply) != 112 {
			t.Fatalf("%s: want unrecognized_name, got %x", name, reply)
		}
	}
	m := waitScrape(t, maddr, "6 finished connections", func(m *scrape) bool { return m.finished() == 6 })
	if got := m.labelValues("snilisten_backend_connections_total", "backend"); !slices.Equal(got, []string{"_.sub.example.test", "a.example.test"}) {
		t.Errorf("backend label values %q, want the two sockets", got)
	}
	for backend, want := range map[string]float64{"a.example.test": 1, "_.sub.example.test": 3} {
		if got := m.value("snilisten_backend_connections_total", "backend", backend); got != want {
			t.Errorf("backend %s: %v connections, want %v", backend, got, want)
		}
	}
	if got := m.value("snilisten_backend_connections_total"); got != 4 {
		t.Errorf("snilisten_backend_connections_total sums to %v, want 4", got)
	}
}

// TestSnilistenMetricsPerBackendWildcardDNS: in tcp mode a wildcard DNS
// record lets clients make up any number of names that reach the same
// backend; the per-backend label must stay one series per backend, not
// one per name.
func TestSnilistenMetricsPerBackendWildcardDNS(t *testing.T) {
	if !inNetns(t) {
		return
	}
	netnsSetup(t, []string{"192.0.2.1/32", "198.51.100.10/32"}, "127.0.0.1 localhost\n", "nameserver 127.0.0.53\noptions timeout:2 attempts:1\n")
	dnsServer(t, func(q dns.Question) []dns.RR {
		if strings.HasSuffix(q.Name, ".sub.example.test.") && q.Qtype == dns.TypeA {
			return []dns.RR{rr(t, q.Name+" 60 IN A 198.51.100.10")}
		}
		return nil
	})
	tcpBackend(t, "198.51.100.10:443", "wild", false)
	s := startSnilistenOn(t, "tcp:192.0.2.1:443", "-mode", "tcp", "-backend-cidr", "198.51.100.0/24",
		"-metrics-listen", "127.0.0.1:0", "-metrics-per-backend")
	maddr := metricsAddrRE.FindStringSubmatch(s.Output())[1]
	const names = 20
	for i := range names {
		name := fmt.Sprintf("n%d.sub.example.test", i)
		if body, err := getFrom(t, "", s.Addr, name); err != nil || !strings.Contains(body, "backend=wild") {
			t.Fatalf("%s: %v %s", name, err, body)
		}
	}
	// (Outcomes may vary: a backend's reset at close counts as relay_error.)
	m := waitScrape(t, maddr, "every connection counted", func(m *scrape) bool { return m.finished() == names })
	got := m.labelValues("snilisten_backend_connections_total", "backend")
	if len(got) != 1 || strings.Contains(got[0], "sub.example.test") {
		t.Errorf("backend label values %q: want one value naming the backend, not the names clients made up", got)
	}
	if v := m.value("snilisten_backend_connections_total"); v != names {
		t.Errorf("snilisten_backend_connections_total = %v, want %d", v, names)
	}
}

// TestPrometheusRules checks dist/prometheus/snitools-rules.yml with
// promtool, and unit-tests each alert: it fires on the series it is about
// and stays quiet on a healthy instance.
func TestPrometheusRules(t *testing.T) {
	need(t, "promtool")
	rules, err := filepath.Abs("../dist/prometheus/snitools-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "rules", rules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	test := filepath.Join(t.TempDir(), "rules_test.yml")
	if err := os.WriteFile(test, []byte(strings.Replace(rulesTest, "RULES", strconv.Quote(rules), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "test", "rules", test).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// rulesTest drives the alerting rules with two instances over an hour:
// "good" stays healthy; "bad" runs into each trouble from minute 11
// (backend errors, peek timeouts and evictions, file descriptors) and goes down at
// minute 41. Counters grow by the per-minute increments given.
const rulesTest = `rule_files: [RULES]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  - series: 'up{job="snilisten", instance="good"}'
    values: '1x60'
  - series: 'up{job="snilisten", instance="bad"}'
    values: '1x40 0x20'
  - series: 'snilisten_connections_finished_total{job="snilisten", instance="good", outcome="ok"}'
    values: '0+600x60'
  - series: 'snilisten_connections_finished_total{job="snilisten", instance="good", outcome="backend_error"}'
    values: '0+1x60'
  - series: 'snilisten_connections_finished_total{job="snilisten", instance="good", outcome="peek_timeout"}'
    values: '0+3x60'
  - series: 'snilisten_connections_finished_total{job="snilisten", instance="bad", outcome="ok"}'
    values: '0+600x60'
  - series: 'snilisten_connections_finished_total{job="snilisten", instance="bad", outcome="backend_error"}'
    values: '0+1x10 10+300x50'
  - series: 'snilisten_connections_finished_total{job="snilisten", instance="bad", outcome="peek_timeout"}'
    values: '0+3x60'
  # The slow clients are evicted for newcomers before their peek timeout
  # (-max-conns is full): the alert counts evictions too.
  - series: 'snilisten_connections_finished_total{job="snilisten", instance="bad", outcome="evicted"}'
    values: '0x10 0+1197x50'
  - series: 'process_open_fds{job="snilisten", instance="good"}'
    values: '100x60'
  - series: 'process_max_fds{job="snilisten", instance="good"}'
    values: '1024x60'
  - series: 'process_open_fds{job="snilisten", instance="bad"}'
    values: '100x10 1000x50'
  - series: 'process_max_fds{job="snilisten", instance="bad"}'
    values: '1024x60'
  - series: 'snilisten_connections_active{job="snilisten", instance="good"}'
    values: '10x60'
  - series: 'snilisten_connections_active{job="snilisten", instance="bad"}'
    values: '10x60'
  # A third instance whose backends close without answering (a PROXY
  # header they do not expect) and where a name loops back, from minute 11.
  - series: 'snilisten_connections_finished_total{job="snilisten", instance="quirky", outcome="ok"}'
    values: '0+600x60'
  - series: 'snilisten_connections_finished_total{job="snilisten", instance="quirky", outcome="no_answer"}'
    values: '0x10 0+60x50'
  - series: 'snilisten_connections_finished_total{job="snilisten", instance="quirky", outcome="loop"}'
    values: '0x10 0+2x50'
  # Something else on the same Prometheus with its descriptors near the
  # limit: not snilisten's business.
  - series: 'process_open_fds{job="other", instance="x"}'
    values: '1000x60'
  - series: 'process_max_fds{job="other", instance="x"}'
    values: '1024x60'
  alert_rule_test:
  - {eval_time: 10m, alertname: SnilistenBackendErrors, exp_alerts: []}
  - {eval_time: 10m, alertname: SnilistenPeekTimeouts, exp_alerts: []}
  - {eval_time: 10m, alertname: SnilistenFileDescriptorsNearLimit, exp_alerts: []}
  - {eval_time: 10m, alertname: SnilistenDown, exp_alerts: []}
  - {eval_time: 10m, alertname: SnilistenLoop, exp_alerts: []}
  - {eval_time: 10m, alertname: SnilistenBackendSilent, exp_alerts: []}
  - eval_time: 35m
    alertname: SnilistenLoop
    exp_alerts:
    - exp_labels: {severity: warning, instance: quirky, job: snilisten}
      exp_annotations:
        summary: "snilisten quirky: a name leads back to snilisten"
        description: "Connections were refused as loops in the last 10 minutes; see the log lines with outcome=loop for the name."
  - eval_time: 35m
    alertname: SnilistenBackendSilent
    exp_alerts:
    - exp_labels: {severity: warning, instance: quirky, job: snilisten}
      exp_annotations:
        summary: "snilisten quirky: backends close without answering"
        description: "9.063% of connections end in no_answer; see the log lines with outcome=no_answer for which backend (a PROXY header it does not expect?)."
  - eval_time: 35m
    alertname: SnilistenBackendErrors
    exp_alerts:
    - exp_labels: {severity: warning, instance: bad, job: snilisten}
      exp_annotations:
        summary: "snilisten bad: backend errors rising"
        description: "14.29% of connections end in backend_error; see the log lines with outcome=backend_error for which backend."
  - eval_time: 35m
    alertname: SnilistenPeekTimeouts
    exp_alerts:
    - exp_labels: {severity: warning, instance: bad, job: snilisten}
      exp_annotations:
        summary: "snilisten bad: peek timeouts rising (slowloris?)"
        description: "57.14% of connections time out or are evicted before a whole ClientHello."
  - eval_time: 35m
    alertname: SnilistenFileDescriptorsNearLimit
    exp_alerts:
    - exp_labels: {severity: critical, instance: bad, job: snilisten}
      exp_annotations:
        summary: "snilisten bad: file descriptors near the limit"
        description: "97.66% of the descriptor limit in use; raise LimitNOFILE or add instances."
  - {eval_time: 35m, alertname: SnilistenDown, exp_alerts: []}
  - eval_time: 45m
    alertname: SnilistenDown
    exp_alerts:
    - exp_labels: {severity: critical, instance: bad, job: snilisten}
      exp_annotations:
        summary: "snilisten bad is down"
        description: "Prometheus has not been able to scrape bad for 2 minutes."
`
