package main

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedianSpread(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		in             []float64
		median, spread float64
	}{
		{[]float64{3, 1, 2}, 2, 0.5},
		{[]float64{4, 1, 3, 2}, 2.5, 0.6},
		{[]float64{7}, 7, 0},
		{[]float64{nan, 10, nan, 12}, 11, 1.0 / 11},
		{[]float64{nan}, nan, nan},
		{nil, nan, nan},
	} {
		m, s := median(tc.in), spread(tc.in)
		if !same(m, tc.median) || !same(s, tc.spread) {
			t.Errorf("median, spread of %v = %v, %v; want %v, %v", tc.in, m, s, tc.median, tc.spread)
		}
	}
	in := []float64{3, 1, 2}
	median(in)
	if !slices.Equal(in, []float64{3, 1, 2}) {
		t.Errorf("median reordered its argument: %v", in)
	}
}

func same(a, b float64) bool {
	return math.IsNaN(a) && math.IsNaN(b) || math.Abs(a-b) < 1e-9
}

func TestCell(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		prec int
		want string
	}{
		{[]float64{100, 110, 90}, 0, "100 ±10%"},
		{[]float64{1.234}, 2, "1.23"},
		{[]float64{math.NaN(), math.NaN()}, 1, "—"},
		{[]float64{0, 0}, 1, "0.0"},
	} {
		if got := cell(tc.in, tc.prec); got != tc.want {
			t.Errorf("cell(%v, %d) = %q, want %q", tc.in, tc.prec, got, tc.want)
		}
	}
}

func TestRatios(t *testing.T) {
	got := ratios([]float64{10, 20, math.NaN(), 5}, []float64{20, 0, 1, 10})
	want := []float64{0.5, math.NaN(), math.NaN(), 0.5}
	for i := range want {
		if !same(got[i], want[i]) {
			t.Errorf("ratios = %v, want %v", got, want)
			break
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {0.1, 1}} {
		if got := percentile(d, tc.p); got != tc.want {
			t.Errorf("percentile(1..100, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
}

func TestParseStat(t *testing.T) {
	// A command name may hold spaces and parentheses.
	line := "4242 (a) b (c) S 17 4242 4242 0 -1 4194560 1234 0 0 0 150 25 3 2 20 0 4 0 123456 1000000 500 18446744073709551615\n"
	s, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s.ppid != 17 || s.pgrp != 4242 || s.ticks != 150+25+3+2 {
		t.Errorf("parseStat = %+v, want ppid 17, pgrp 4242, ticks 180", s)
	}
	for _, bad := range []string{"", "1 (x S 1", "1 (x) S 1 2 3", "1 (x) S z 1 1 0 -1 0 0 0 0 0 1 1 1 1"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tnginx\nVmPeak:\t  12000 kB\nVmRSS:\t    8524 kB\nRssAnon:\t 1000 kB\n"
	if n, err := parseVmRSS([]byte(status)); err != nil || n != 8524 {
		t.Errorf("parseVmRSS = %d, %v; want 8524", n, err)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\n", "VmRSS:\tx kB\n"} {
		if _, err := parseVmRSS([]byte(bad)); err == nil {
			t.Errorf("parseVmRSS(%q) succeeded", bad)
		}
	}
}

// TestProcTree reads the real /proc: a child shows up in our tree, and
// our CPU time and RSS are plausible.
func TestProcTree(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("sleep: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if pids := tree(os.Getpid()); !slices.Contains(pids, cmd.Process.Pid) || pids[0] != os.Getpid() {
		t.Errorf("tree(%d) = %v, want it to start with us and hold %d", os.Getpid(), pids, cmd.Process.Pid)
	}
	before, err := cpuSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		x += len(strings.Repeat("x", 100))
	}
	after, err := cpuSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("CPU seconds did not grow over 300 ms of work: %v then %v (%d)", before, after, x)
	}
	rss, err := rssKiB(os.Getpid())
	if err != nil || rss < 1024 {
		t.Errorf("rssKiB = %d, %v; want at least 1 MiB for a Go test binary", rss, err)
	}
}

// TestBaselineRow: a -baseline twin runs the baseline binary, its row the
// binary under test, with the same arguments.
func TestBaselineRow(t *testing.T) {
	dir := t.TempDir()
	e := &env{dir: dir, snilisten: "/bin/true", baseline: "/bin/false", maxConns: 10}
	argvOf := func(r row) string {
		t.Helper()
		p, err := r.start(e, "127.0.0.1:1")
		if err != nil {
			t.Fatal(err)
		}
		<-p.done
		log, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(p.log)
		first, _, _ := strings.Cut(string(log), "\n")
		return strings.TrimPrefix(first, "# ")
	}
	var unixRow row
	for _, r := range rows {
		if r.name == "snilisten unix" {
			unixRow = r
		}
	}
	got, want := argvOf(baselineTwin(unixRow)), argvOf(unixRow)
	if !strings.HasPrefix(got, "/bin/false ") || !strings.HasPrefix(want, "/bin/true ") {
		t.Fatalf("baseline row runs %q, unix row %q", got, want)
	}
	if strings.TrimPrefix(got, "/bin/false") != strings.TrimPrefix(want, "/bin/true") {
		t.Errorf("arguments differ: baseline %q, unix %q", got, want)
	}
	if twin := baselineTwin(unixRow); twin.name != "snilisten unix (baseline)" || twin.twinOf != "snilisten unix" {
		t.Errorf("twin named %q, of %q", twin.name, twin.twinOf)
	}
}

// TestReportBaseline: the table against the baseline divides each round's
// figure of a row by its twin's in the same round, and takes the median
// of those ratios (not the ratio of the medians, which rounds at
// different loads would skew).
func TestReportBaseline(t *testing.T) {
	unix := &row{name: "snilisten unix", start: func(*env, string) (*proc, error) { return nil, nil }}
	twin := baselineTwin(*unix)
	vals := func(conns, cpu []float64) map[string][]float64 {
		nan := []float64{math.NaN(), math.NaN(), math.NaN()}
		return map[string][]float64{mConnRate: conns, mCPUConn: cpu, mCPUGiB: nan, mRSS: nan}
	}
	b := &bench{results: []*result{
		{row: unix, vals: vals([]float64{110, 90, 100}, []float64{1.0, 2.0, 1.2})},
		{row: &twin, vals: vals([]float64{100, 100, 100}, []float64{1.1, 2.5, 1.0})},
	}}
	var w strings.Builder
	b.reportBaseline(&w)
	// CPU ratios per round: 0.91, 0.80, 1.20, median 0.91 ± half the
	// range; the ratio of the medians would read 1.2/1.1 = 1.09.
	want := "| snilisten unix | 1.00 ±10% | 0.91 ±22% | — | — |"
	if !strings.Contains(w.String(), want) {
		t.Errorf("report:\n%s\nwant the line %q", w.String(), want)
	}
	b.results = b.results[:1]
	w.Reset()
	if b.reportBaseline(&w); w.Len() != 0 {
		t.Errorf("without a twin, report %q, want nothing", w.String())
	}
}

// TestPerfNames checks that -perf's file names keep a row's name readable
// and safe (no spaces, parentheses or slashes), so that two rows never
// share a file: a twin keeps its "baseline".
func TestPerfNames(t *testing.T) {
	for name, want := range map[string]string{
		"snilisten unix":              "snilisten_unix",
		"snilisten unix (baseline)":   "snilisten_unix_baseline",
		"snilisten unix GOMAXPROCS=1": "snilisten_unix_GOMAXPROCS=1",
		"snilisten unix +PROXY v2":    "snilisten_unix_PROXY_v2",
		"../etc/passwd":               "etc_passwd",
	} {
		if got := fileSafe(name); got != want {
			t.Errorf("fileSafe(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestPerfLines checks that a perf report's header and blank lines are
// dropped and its share lines kept, in order.
func TestPerfLines(t *testing.T) {
	out := `# To display the perf.data header info, please use --header/--header-only options.
#
# Samples: 10K of event 'cpu-clock:ppp'
# Overhead  Shared Object
# ........  .................
#
    83.77%  [kernel.kallsyms]
    15.99%  snilisten
     0.24%  [vdso]


#
# (Tip: ...)
#
`
	got := perfLines([]byte(out))
	want := []string{"    83.77%  [kernel.kallsyms]\n", "    15.99%  snilisten\n", "     0.24%  [vdso]\n"}
	if !slices.Equal(got, want) {
		t.Errorf("perfLines = %q, want %q", got, want)
	}
}

// TestPerfRecording runs -perf's recording with the real perf(1) on a
// busy child process: its samples must reach the data file and a summary
// under the recording's title in profiles.md, and the child's own program
// must be among the programs sampled (the recording followed the right
// process, not the bench).
func TestPerfRecording(t *testing.T) {
	if !present("perf") {
		t.Skip("perf not installed (apt-get install linux-perf)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("perf", "record", "--quiet", "-o", dir+"/probe.data", "--", "true").CombinedOutput(); err != nil {
		t.Skipf("perf cannot record here: %v: %s", err, out)
	}
	busy, err := startProc(dir, "busy", "sh", "-c", "while :; do :; done")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.stop()
	b := &bench{cfg: config{perfDir: dir}}
	res := &result{row: &row{name: "busy loop (test)"}}
	rec := b.startPerf(res, phaseConn, 0, busy)
	if rec == nil {
		t.Fatalf("no recording: %v", res.notes)
	}
	time.Sleep(500 * time.Millisecond)
	rec.stop(context.Background(), res)
	if len(res.notes) > 0 {
		t.Fatalf("notes: %v", res.notes)
	}
	if _, err := os.Stat(filepath.Join(dir, "busy_loop_test.conn.1.data")); err != nil {
		t.Error(err)
	}
	report, err := os.ReadFile(filepath.Join(dir, "profiles.md"))
	if err != nil {
		t.Fatal(err)
	}
	shell, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## busy loop (test), conn mode, round 1\n", "Samples by program:", "  " + filepath.Base(shell) + "\n"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("profiles.md lacks %q:\n%s", want, report)
		}
	}
}
