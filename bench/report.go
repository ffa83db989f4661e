package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// facts describe the machine at the start of a run.
type facts struct {
	date    time.Time
	cores   int
	cpu     string
	kernel  string
	memGiB  float64
	loadavg string
}

func machineFacts() facts {
	f := facts{date: time.Now().UTC(), cores: runtime.NumCPU(), loadavg: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				f.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		f.kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			f.memGiB = kb / (1 << 20)
		}
	}
	return f
}

// loadavg is the 1, 5 and 15 minute load average, a hint of how much else
// the machine was doing.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// versionOf runs a version command and returns the first line it prints.
func versionOf(argv []string, snilisten string) string {
	if argv[0] == "snilisten" {
		argv = append([]string{snilisten}, argv[1:]...)
	}
	out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	line, _, _ = strings.Cut(line, " - ") // HAProxy's release date and URL
	line = strings.TrimPrefix(line, "nginx version: ")
	if line == "" {
		return strings.Join(argv, " ") + ": ?"
	}
	return line
}

// report renders the run as markdown.
func (b *bench) report(f facts, took time.Duration) string {
	cfg := b.cfg
	var w strings.Builder
	title := "snitools bench"
	if cfg.quick {
		title += " (quick)"
	}
	fmt.Fprintf(&w, "# %s, %s\n\n", title, f.date.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&w, "- Machine: %d cores (%s), %.0f GiB, Linux %s; load average %s at the start, %s at the end.\n",
		f.cores, f.cpu, f.memGiB, f.kernel, f.loadavg, loadavg())
	var vers []string
	for _, r := range b.results {
		if r.version != "" && !slices.Contains(vers, r.version) {
			vers = append(vers, r.version)
		}
	}
	fmt.Fprintf(&w, "- Software: %s (bench, backend); %s.\n", runtime.Version(), strings.Join(vers, "; "))
	fmt.Fprintf(&w, "- Load: %d round(s), rows interleaved. Connection mode: %d concurrent clients for %v per row (and as long straight to the backend) after %v of warm-up; "+
		"each connection is a full TLS 1.3 handshake (%s, ECDSA P-256, SNI %q, no resumption), one GET / and a close. "+
		"Bulk: %d MiB down one connection. Idle: %d connections held open after the handshake. "+
		"Each proxy admits %d connections at once (its maxconn), with a file descriptor limit of %d.\n",
		cfg.rounds, cfg.clients, cfg.duration, cfg.warmup, b.kex, sni, cfg.bulk>>20, cfg.idle, b.env.maxConns, b.fdLimit)
	fmt.Fprintf(&w, "- The load generator, the backend (Go, one process) and the proxy share the machine's %d cores, "+
		"so a proxy's CPU lowers every row's rate; the ratio to direct shows it. Proxy CPU is utime+stime of the proxy "+
		"and its children (/proc/PID/stat); RSS is VmRSS of the same processes with the idle connections open, "+
		"minus before, per connection. Figures are medians over the rounds, ± half their range. A row's × direct "+
		"divides it by the backend measured straight next to it: connection mode alternates %d slices of the row with "+
		"as many straight to the backend (D P P D …), bulk runs straight just before or after; the ratio's median "+
		"over the rounds is shown. The machine is shared: expect noise.\n", f.cores, pairSlices)
	fmt.Fprintf(&w, "- Took %v.\n\n", took.Round(time.Second))

	direct := b.results[0]
	// With -phases quic alone the TCP rows did not run.
	if cfg.tcpPhases() {
		fmt.Fprintln(&w, "| row | conns/s | × direct | p50 ms | p99 ms | bulk MB/s | × direct | proxy CPU s/10k conns | proxy CPU s/GiB | proxy RSS KiB/idle conn |")
		fmt.Fprintln(&w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
		for _, r := range b.results {
			if r.skipped != "" {
				fmt.Fprintf(&w, "| %s | skipped | | | | | | | | |\n", r.row.name)
				continue
			}
			v := r.vals
			fmt.Fprintf(&w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.row.name,
				cell(v[mConnRate], 0), cell(ratios(v[mConnRate], v[mPairConnRate]), 2),
				cell(v[mP50], 2), cell(v[mP99], 2),
				cell(v[mBulk], 0), cell(ratios(v[mBulk], v[mPairBulk]), 2),
				cell(v[mCPUConn], 2), cell(v[mCPUGiB], 2), cell(v[mRSS], 1))
		}

		if ref := b.find("haproxy"); ref != nil && ref.skipped == "" {
			fmt.Fprintf(&w, "\nAgainst HAProxy (each round's figure divided by HAProxy's in the same round):\n\n")
			fmt.Fprintln(&w, "| row | CPU/10k conns × HAProxy | CPU/GiB × HAProxy | RSS/idle conn × HAProxy |")
			fmt.Fprintln(&w, "|---|--:|--:|--:|")
			for _, r := range b.results {
				if r.row.start == nil || r.skipped != "" || r == ref {
					continue
				}
				fmt.Fprintf(&w, "| %s | %s | %s | %s |\n", r.row.name,
					cell(ratios(r.vals[mCPUConn], ref.vals[mCPUConn]), 2),
					cell(ratios(r.vals[mCPUGiB], ref.vals[mCPUGiB]), 2),
					cell(ratios(r.vals[mRSS], ref.vals[mRSS]), 2))
			}
		}
	}

	b.reportBaseline(&w)
	b.reportQUIC(&w)

	fmt.Fprintf(&w, "\nNotes:\n\n")
	if cfg.perfDir != "" {
		fmt.Fprintf(&w, "- Recorded with -perf (profiles in %s): the proxies' CPU figures include what sampling them cost; compare them with a run without it only as shares.\n", cfg.perfDir)
	}
	if m := median(direct.vals[mBackendCPU]); !math.IsNaN(m) {
		fmt.Fprintf(&w, "- For scale: the backend itself (TLS termination and HTTP) used %.2f CPU s per 10k connections in the direct row.\n", m)
	}
	for _, r := range append(slices.Clone(b.results), b.quic...) {
		if r.skipped != "" {
			fmt.Fprintf(&w, "- %s: skipped: %s\n", r.row.name, r.skipped)
		}
		for _, n := range r.notes {
			fmt.Fprintf(&w, "- %s: %s\n", r.row.name, n)
		}
	}
	fmt.Fprintf(&w, "\nCommand lines (configurations in bench/rows.go):\n\n")
	for _, r := range append(slices.Clone(b.results), b.quic...) {
		if r.argv != "" {
			fmt.Fprintf(&w, "- %s: `%s`\n", r.row.name, r.argv)
		}
	}
	return w.String()
}

// reportBaseline compares each row measured with -baseline to its twin,
// round by round: a change of a few percent shows in these paired ratios
// before it shows between medians, which the machine's drift from round to
// round moves by more (a build with one event loop read 13% less CPU per
// connection than main's as medians of six rounds, and 2% more in the
// next run of the same six).
func (b *bench) reportBaseline(w *strings.Builder) {
	header := false
	for _, twin := range b.results {
		if twin.row.twinOf == "" || twin.skipped != "" {
			continue
		}
		r := b.find(twin.row.twinOf)
		if r == nil || r.skipped != "" {
			continue
		}
		if !header {
			fmt.Fprintf(w, "\nAgainst the baseline (each round's figure divided by its baseline twin's in the same round):\n\n")
			fmt.Fprintln(w, "| row | conns/s × baseline | CPU/10k conns × baseline | CPU/GiB × baseline | RSS/idle conn × baseline |")
			fmt.Fprintln(w, "|---|--:|--:|--:|--:|")
			header = true
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.row.name,
			cell(ratios(r.vals[mConnRate], twin.vals[mConnRate]), 2),
			cell(ratios(r.vals[mCPUConn], twin.vals[mCPUConn]), 2),
			cell(ratios(r.vals[mCPUGiB], twin.vals[mCPUGiB]), 2),
			cell(ratios(r.vals[mRSS], twin.vals[mRSS]), 2))
	}
}

func (b *bench) find(name string) *result {
	for _, r := range b.results {
		if r.row.name == name {
			return r
		}
	}
	return nil
}

// writeResults writes the report to dir/DATE.md, or DATE-HHMMSS.md if a
// run of the same day is already there.
func writeResults(dir, report string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("write results: %w", err)
	}
	now := time.Now().UTC()
	path := filepath.Join(dir, now.Format("2006-01-02")+".md")
	if _, err := os.Stat(path); err == nil {
		path = filepath.Join(dir, now.Format("2006-01-02-150405")+".md")
	}
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		return "", fmt.Errorf("write results: %w", err)
	}
	return path, nil
}
