package tests

// Helpers for snilisten's metrics: where they are served, and two ways
// to read them (a parsed scrape with label matching, and metricValue's
// single sample by name and label text).

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsAddrRE finds the address snilisten logs for its metrics.
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

// metricsAddr returns the address snilisten serves metrics on.
func metricsAddr(t testing.TB, p *Proc) string {
	t.Helper()
	var addr string
	waitFor(t, 10*time.Second, "the metrics address in the log", func() bool {
		m := metricsAddrRE.FindStringSubmatch(p.Output())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return addr
}

// metricValue scrapes http://addr/metrics and returns the value of the
// unlabelled sample name (or the one whose labels contain labels).
func metricValue(t testing.TB, addr, name, labels string) float64 {
	t.Helper()
	client := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name) {
			continue
		}
		rest := l[len(name):]
		if labels == "" && !strings.HasPrefix(rest, " ") || labels != "" && !(strings.HasPrefix(rest, "{") && strings.Contains(rest, labels)) {
			continue
		}
		f, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", l, err)
		}
		return f
	}
	t.Fatalf("no metric %s%s at %s", name, labels, addr)
	return 0
}

// promtoolCheckMetrics runs `promtool check metrics` on a scrape: the
// format and the naming conventions.
func promtoolCheckMetrics(t *testing.T, raw []byte) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Log("promtool not installed (Debian package prometheus): scrape not linted")
		return
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(raw)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
