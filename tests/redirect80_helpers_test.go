package tests

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// redirect80 is a running redirect80 with the addresses it listens on.
type redirect80 struct {
	*Proc
	Addrs []string
}

// Addr is the first listening address.
func (r *redirect80) Addr() string { return r.Addrs[0] }

var r80ListeningRE = regexp.MustCompile(`msg=listening address=(\S+)|"msg":"listening","address":"([^"]+)"`)

// startRedirect80 runs bin/redirect80 with args (which should include at
// least one -listen) and waits until it has logged every listener.
func startRedirect80(t testing.TB, args ...string) *redirect80 {
	t.Helper()
	want := 0
	for _, a := range args {
		if a == "-listen" {
			want++
		}
	}
	return startRedirect80Cmd(t, exec.Command(bin(t, "redirect80"), args...), max(want, 1))
}

// startRedirect80Cmd starts cmd, which runs redirect80 in some way, and
// waits for n listening lines.
func startRedirect80Cmd(t testing.TB, cmd *exec.Cmd, n int) *redirect80 {
	t.Helper()
	p := start(t, cmd)
	var addrs []string
	waitFor(t, 10*time.Second, "redirect80 to listen", func() bool {
		addrs = addrs[:0]
		for _, m := range r80ListeningRE.FindAllStringSubmatch(p.Output(), -1) {
			addrs = append(addrs, m[1]+m[2])
		}
		return len(addrs) >= n || p.Exited()
	})
	if len(addrs) < n {
		t.Fatalf("redirect80 exited: %s", p.Output())
	}
	return &redirect80{Proc: p, Addrs: addrs}
}

// rawExchange sends payload on a fresh connection to addr and reads one
// response to a request with method (HEAD responses have no body).
func rawExchange(t testing.TB, addr, payload, method string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatal(err)
	}
	resp, body, err := readResponse(bufio.NewReader(c), method)
	if err != nil {
		t.Fatalf("%q: read response: %v", payload, err)
	}
	return resp, body
}

// readResponse reads one response and its whole body.
func readResponse(br *bufio.Reader, method string) (*http.Response, []byte, error) {
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// rawResponse sends payload on a fresh connection and returns every byte
// the server sent until it closed or 10 seconds passed.
func rawResponse(t testing.TB, addr, payload string) []byte {
	t.Helper()
	out, err := sendRaw(t, addr, []byte(payload))
	if err != nil && len(out) == 0 {
		t.Fatalf("%q: %v", payload, err)
	}
	return out
}

// acmeBackend serves HTTP on ln: challenges answer "<token>.<name>",
// anything else 404; each request is counted and its headers recorded.
type acmeBackend struct {
	name string
	hits atomic.Int32
	mu   sync.Mutex
	last http.Header
	host string
}

func serveACME(t testing.TB, ln net.Listener, name string) *acmeBackend {
	t.Helper()
	b := &acmeBackend{name: name}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/acme-challenge/{token}", func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.mu.Lock()
		b.last, b.host = r.Header.Clone(), r.Host
		b.mu.Unlock()
		if r.PathValue("token") == "slow" {
			time.Sleep(3 * time.Second)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Backend", name)
		io.WriteString(w, r.PathValue("token")+"."+name)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		http.NotFound(w, r)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

func unixACME(t testing.TB, dir, name string) *acmeBackend {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return serveACME(t, ln, name)
}

// get sends one GET for path with Host host and returns status, the
// Location and the body.
func get(t testing.TB, addr, host, path string) (int, string, string) {
	t.Helper()
	resp, body := rawExchange(t, addr, fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: acme-test\r\nConnection: close\r\n\r\n", path, host), "GET")
	return resp.StatusCode, resp.Header.Get("Location"), string(body)
}
