package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat; Linux
// reports them in hundredths of a second on every architecture.
const clockTicks = 100

// statFields holds what the bench reads from /proc/PID/stat.
type statFields struct {
	ppid  int
	pgrp  int
	ticks uint64 // utime+stime, plus cutime+cstime of children already reaped
}

// parseStat reads /proc/PID/stat. The command name (field 2) is in
// parentheses and may itself hold spaces and parentheses, so the fields
// are counted from the last ')'.
func parseStat(b []byte) (statFields, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return statFields{}, errors.New("parse /proc stat: no ')' after the command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime..cstime 14..17.
	if len(f) < 15 {
		return statFields{}, fmt.Errorf("parse /proc stat: %d fields after the command name, want at least 15", len(f))
	}
	var s statFields
	var err error
	if s.ppid, err = strconv.Atoi(f[1]); err != nil {
		return statFields{}, fmt.Errorf("parse /proc stat ppid %q: %w", f[1], err)
	}
	if s.pgrp, err = strconv.Atoi(f[2]); err != nil {
		return statFields{}, fmt.Errorf("parse /proc stat pgrp %q: %w", f[2], err)
	}
	for _, x := range f[11:15] {
		n, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return statFields{}, fmt.Errorf("parse /proc stat times %q: %w", x, err)
		}
		s.ticks += n
	}
	return s, nil
}

// parseVmRSS returns the VmRSS line of /proc/PID/status in KiB.
func parseVmRSS(b []byte) (int64, error) {
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parse /proc status VmRSS %q: want \"N kB\"", strings.TrimSpace(rest))
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, errors.New("parse /proc status: no VmRSS line (a zombie or kernel thread?)")
}

// tree returns root and every live descendant of it (nginx's worker,
// sniproxy's binder, anything a proxy forks).
func tree(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		if s, err := parseStat(b); err == nil {
			children[s.ppid] = append(children[s.ppid], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out) && i < 10000; i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// cpuSeconds is the CPU time (user and system) that root and its
// descendants have used so far.
func cpuSeconds(root int) (float64, error) {
	var ticks uint64
	for _, pid := range tree(root) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			if pid == root {
				return 0, fmt.Errorf("read CPU time of %d: %w", pid, err)
			}
			continue
		}
		s, err := parseStat(b)
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", pid, err)
		}
		ticks += s.ticks
	}
	return float64(ticks) / clockTicks, nil
}

// rssKiB is the resident memory of root and its descendants.
func rssKiB(root int) (int64, error) {
	var sum int64
	for _, pid := range tree(root) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			if pid == root {
				return 0, fmt.Errorf("read RSS of %d: %w", pid, err)
			}
			continue
		}
		n, err := parseVmRSS(b)
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", pid, err)
		}
		sum += n
	}
	return sum, nil
}

// A proc is a program the bench started: a proxy or the backend.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // stdout and stderr
	done chan struct{}
	err  error // from Wait, once done is closed
}

// startProc runs argv in its own process group, with its output in
// dir/name.log. The kernel kills it if the bench dies first.
func startProc(dir, name string, argv ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close()
	fmt.Fprintf(f, "# %s\n", strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the status the process ended with, -1 if it was killed or
// has not ended.
func (p *proc) exitCode() int {
	if !p.exited() || p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// logTail returns the last non-empty line of the process's output, to
// explain a failure in one line.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "# ") {
			return l
		}
	}
	return "(no output)"
}

// stop ends the process: SIGTERM, then after 5 s SIGKILL. Descendants
// still in its process group afterwards (an nginx worker that outlived
// its master) are killed by PID.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	family := tree(p.pid())
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	for _, pid := range family[1:] {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		if s, err := parseStat(b); err == nil && s.pgrp == p.pid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
