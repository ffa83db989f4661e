package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// With -perf DIR, perf record(1) samples each proxy while a phase measures
// it (connection mode's slices through the proxy, bulk mode's transfer):
// the profile that says where a row's CPU goes, for the goals a figure
// misses. Samples fall where the proxy runs, so the slices straight to the
// backend in between add next to none. Each recording is reported into
// DIR/profiles.md as soon as it stops, while the binaries it sampled still
// exist: the kernel's and the program's share of the samples, and the
// functions with the most.

// perfTop is how many functions each recording's report lists.
const perfTop = 25

// perfRecording is one perf record process attached to a proxy.
type perfRecording struct {
	cmd   *exec.Cmd
	ended chan struct{} // closed when perf has exited
	data  string        // the perf.data file
	title string        // row, phase and round, for the report
}

// startPerf attaches perf record to p and its descendants. It returns nil,
// which stop accepts, without -perf or without a proxy (the direct row);
// a recording that cannot start is a note on the row, not a failed round.
func (b *bench) startPerf(res *result, phase string, round int, p *proc) *perfRecording {
	if b.cfg.perfDir == "" || p == nil {
		return nil
	}
	var pids []string
	for _, pid := range tree(p.pid()) {
		pids = append(pids, strconv.Itoa(pid))
	}
	name := fmt.Sprintf("%s.%s.%d.data", fileSafe(res.row.name), phase, round+1)
	r := &perfRecording{
		data:  filepath.Join(b.cfg.perfDir, name),
		title: fmt.Sprintf("%s, %s mode, round %d", res.row.name, phase, round+1),
	}
	r.cmd = exec.Command("perf", "record", "--quiet", "-g", "-o", r.data, "-p", strings.Join(pids, ","))
	var out bytes.Buffer
	r.cmd.Stdout, r.cmd.Stderr = &out, &out
	if err := r.cmd.Start(); err != nil {
		res.note("round %d: perf record: %v", round+1, err)
		return nil
	}
	r.ended = make(chan struct{})
	go func() { r.cmd.Wait(); close(r.ended) }()
	// perf opens its events after it starts: a moment for that, so that
	// the first of the measured load is sampled too.
	select {
	case <-r.ended:
		res.note("round %d: perf record ended early: %s", round+1, strings.TrimSpace(out.String()))
		return nil
	case <-time.After(300 * time.Millisecond):
	}
	return r
}

// stop ends the recording (perf writes its file on SIGINT) and appends its
// report to DIR/profiles.md.
func (r *perfRecording) stop(ctx context.Context, res *result) {
	if r == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-r.ended:
	case <-time.After(30 * time.Second):
		r.cmd.Process.Kill()
		<-r.ended
		res.note("perf record for %s did not stop on SIGINT within 30s: killed", r.title)
		return
	}
	report, err := perfReport(ctx, r.data)
	if err != nil {
		res.note("%s: %v", r.title, err)
		return
	}
	f, err := os.OpenFile(filepath.Join(filepath.Dir(r.data), "profiles.md"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		res.note("%s: %v", r.title, err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "## %s\n\n%s\n", r.title, report)
}

// perfReport summarises a perf.data file: samples by program (the kernel,
// the proxy, its libraries) and the functions with the most samples of
// their own.
func perfReport(ctx context.Context, data string) (string, error) {
	report := func(sort string) ([]string, error) {
		cmd := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none", "--sort", sort)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("perf report -i %s --sort %s: %w: %s", data, sort, err, strings.TrimSpace(stderr.String()))
		}
		return perfLines(out), nil
	}
	byDSO, err := report("dso")
	if err != nil {
		return "", err
	}
	bySym, err := report("sym")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "`%s`\n\nSamples by program:\n\n```\n%s```\n\nFunctions with the most samples ([k] kernel, [.] user space):\n\n```\n",
		filepath.Base(data), strings.Join(byDSO, ""))
	for i, line := range bySym {
		if i == perfTop {
			break
		}
		b.WriteString(line)
	}
	b.WriteString("```\n")
	return b.String(), nil
}

// perfLines keeps the lines of a perf report that carry a share ("  12.34%
// ..."), without the comment header.
func perfLines(out []byte) []string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) > 1 && strings.HasSuffix(f[0], "%") {
			lines = append(lines, strings.TrimRight(line, " ")+"\n")
		}
	}
	return lines
}

// fileSafe turns a row's name into a file name: letters, digits, '-' and
// '=' are kept, runs of anything else become one '_'.
func fileSafe(name string) string {
	var b strings.Builder
	under := false
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '='
		switch {
		case ok:
			b.WriteRune(r)
			under = false
		case !under:
			b.WriteByte('_')
			under = true
		}
	}
	return strings.Trim(b.String(), "_")
}
