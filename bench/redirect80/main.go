// Command redirect80 (the benchmark) measures requests per second through
// redirect80 and through nginx configured to do the same job,
//
//	return 301 https://$host$request_uri;
//
// under the same load tool (wrk, from Debian), on loopback, interleaved
// round by round so that both see the same machine, and prints the median
// of each and their ratio. Both run without request logs (-q, access_log
// off) unless -logs is given, when both log every request to a file.
//
//	make && go run ./bench/redirect80               # 3 rounds of 5 s each
//	go run ./bench/redirect80 -quick                # 1 round of 2 s
//	go run ./bench/redirect80 -json                 # one JSON object, for make bench
//
// wrk and nginx are installed with apt-get when missing and running as
// root; otherwise the command to run is printed.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// result is one server's measurements.
type result struct {
	Name   string    `json:"name"`
	Rounds []float64 `json:"rounds_rps"`
	Median float64   `json:"median_rps"`
}

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("bench/redirect80", flag.ContinueOnError)
	var (
		quick    = fs.Bool("quick", false, "one round of 2 s")
		rounds   = fs.Int("rounds", 3, "rounds, each measuring both servers once, interleaved")
		duration = fs.Duration("d", 5*time.Second, "wrk duration per server and round")
		conns    = fs.Int("c", 64, "wrk connections (kept alive)")
		threads  = fs.Int("t", 1, "wrk threads")
		logs     = fs.Bool("logs", false, "both servers log every request to a file")
		asJSON   = fs.Bool("json", false, "print one JSON object instead of a table")
		binary   = fs.String("redirect80", "bin/redirect80", "the redirect80 binary to measure (built with go build if missing)")
		workers  = fs.Int("nginx-workers", runtime.NumCPU(), "nginx worker_processes (redirect80 uses every CPU too)")
	)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *quick {
		*rounds, *duration = 1, 2*time.Second
	}
	if *rounds < 1 || *duration < time.Second || *conns < 1 || *threads < 1 || *threads > *conns {
		fmt.Fprintln(os.Stderr, "bench/redirect80: -rounds, -d (at least 1s), -c and -t (at most -c) must be positive")
		return 2
	}
	if err := install(map[string]string{"wrk": "wrk", "nginx": "nginx"}); err != nil {
		fmt.Fprintf(os.Stderr, "bench/redirect80: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "bench-redirect80-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/redirect80: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin, err := redirect80Binary(*binary, dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/redirect80: %v\n", err)
		return 1
	}

	servers := []*server{
		{name: "redirect80", start: func(addr string) (*exec.Cmd, error) { return startRedirect80(bin, addr, dir, *logs) }},
		{name: "nginx", start: func(addr string) (*exec.Cmd, error) { return startNginx(addr, dir, *workers, *logs) }},
	}
	for _, s := range servers {
		if err := s.run(); err != nil {
			fmt.Fprintf(os.Stderr, "bench/redirect80: start %s: %v\n", s.name, err)
			stopAll(servers)
			return 1
		}
	}
	defer stopAll(servers)

	results := make([]result, len(servers))
	for i, s := range servers {
		results[i].Name = s.name
	}
	for round := range *rounds {
		order := servers
		if round%2 == 1 {
			order = []*server{servers[1], servers[0]} // alternate who goes first
		}
		for _, s := range order {
			rps, err := runWrk(s.addr, *duration, *conns, *threads)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench/redirect80: wrk against %s: %v\n", s.name, err)
				return 1
			}
			i := slices.Index(servers, s)
			results[i].Rounds = append(results[i].Rounds, rps)
			if !*asJSON {
				fmt.Fprintf(os.Stderr, "round %d: %-10s %10.0f requests/s\n", round+1, s.name, rps)
			}
		}
	}
	for i := range results {
		results[i].Median = median(results[i].Rounds)
	}
	ratio := results[0].Median / results[1].Median
	if *asJSON {
		out, _ := json.Marshal(map[string]any{
			"servers": results, "ratio": ratio, "connections": *conns, "threads": *threads,
			"duration": duration.String(), "rounds": *rounds, "logs": *logs, "cpus": runtime.NumCPU(),
		})
		fmt.Println(string(out))
		return 0
	}
	fmt.Printf("| server | requests/s (median of %d × %s, wrk -c%d -t%d, logs %v) |\n|---|---:|\n", *rounds, *duration, *conns, *threads, *logs)
	for _, r := range results {
		fmt.Printf("| %s | %.0f |\n", r.Name, r.Median)
	}
	fmt.Printf("| redirect80 / nginx | %.2f |\n", ratio)
	return 0
}

// server is one measured server.
type server struct {
	name  string
	start func(addr string) (*exec.Cmd, error)
	addr  string
	cmd   *exec.Cmd
}

// run starts the server on a free loopback port and checks that it
// redirects before anything is measured.
func (s *server) run() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.addr = ln.Addr().String()
	ln.Close()
	if s.cmd, err = s.start(s.addr); err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+s.addr+path, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if want := "https://" + host + path; resp.StatusCode != 301 || resp.Header.Get("Location") != want {
				return fmt.Errorf("answers %d %q, want 301 %q", resp.StatusCode, resp.Header.Get("Location"), want)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not answering on %s: %w", s.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func stopAll(servers []*server) {
	for _, s := range servers {
		if s.cmd != nil && s.cmd.Process != nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { s.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				s.cmd.Process.Kill()
				<-done
			}
		}
	}
}

// The request wrk sends: a typical page with a query.
const (
	host = "bench.example.test"
	path = "/articles/2026/11/some-title?utm_source=feed&id=42"
)

func startRedirect80(bin, addr, dir string, logs bool) (*exec.Cmd, error) {
	args := []string{"-listen", "tcp:" + addr, "-max-conns-per-client", "0"}
	if !logs {
		args = append(args, "-q")
	}
	cmd := exec.Command(bin, args...)
	f, err := os.Create(filepath.Join(dir, "redirect80.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stderr = f
	return cmd, cmd.Start()
}

func startNginx(addr, dir string, workers int, logs bool) (*exec.Cmd, error) {
	accessLog := "off"
	if logs {
		accessLog = filepath.Join(dir, "nginx-access.log")
	}
	conf := fmt.Sprintf(`daemon off;
worker_processes %d;
pid %[2]s/nginx.pid;
error_log %[2]s/nginx-error.log;
events { worker_connections 4096; }
http {
	access_log %[3]s;
	client_body_temp_path %[2]s/body;
	proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
	keepalive_requests 1000000;
	server {
		listen %[4]s;
		return 301 https://$host$request_uri;
	}
}
`, workers, dir, accessLog, addr)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("nginx", "-p", dir, "-c", path, "-e", filepath.Join(dir, "nginx-error.log"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

var rpsRE = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

// runWrk loads addr for d and returns the requests per second wrk saw.
// Every response must be the redirect: wrk counts non-2xx/3xx answers and
// socket errors, and either makes the figure meaningless.
func runWrk(addr string, d time.Duration, conns, threads int) (float64, error) {
	out, err := exec.Command("wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(int(d.Seconds()))+"s", "-H", "Host: "+host, "http://"+addr+path).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%v\n%s", err, out)
	}
	if strings.Contains(string(out), "Non-2xx or 3xx") || strings.Contains(string(out), "Socket errors") {
		return 0, fmt.Errorf("errors during the run:\n%s", out)
	}
	m := rpsRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no Requests/sec in:\n%s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// redirect80Binary returns path if it exists, else builds the command
// into dir.
func redirect80Binary(path, dir string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return filepath.Abs(path)
	}
	out := filepath.Join(dir, "redirect80")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/redirect80")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s missing and go build ./cmd/redirect80 failed (run from the repository root, or make): %w", path, err)
	}
	return out, nil
}

// install makes sure the commands (command -> Debian package) exist,
// installing the missing packages with apt-get when running as root.
func install(need map[string]string) error {
	var missing []string
	for cmd, pkg := range need {
		if _, err := exec.LookPath(cmd); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing %s; run: sudo apt-get install %s", strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	fmt.Fprintf(os.Stderr, "bench/redirect80: installing %s\n", strings.Join(missing, " "))
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
	}
	return nil
}
