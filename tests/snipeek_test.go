package tests

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// spCapture is one line of the capture manifest.
type spCapture struct {
	file, sni, alpn string
	versions        []string
	length          int
}

// spCaptures reads the ClientHello captures that lib/clienthello's tests
// also use, with their manifest.
func spCaptures(t *testing.T) (dir string, caps []spCapture) {
	t.Helper()
	dir, _ = filepath.Abs(filepath.Join("..", "lib", "clienthello", "testdata", "captures"))
	f, err := os.Open(filepath.Join(dir, "manifest.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fl := strings.Split(sc.Text(), "\t")
		if len(fl) != 7 {
			t.Fatalf("manifest line %q", sc.Text())
		}
		c := spCapture{file: fl[0], sni: fl[1], alpn: fl[2]}
		for _, v := range strings.Split(fl[3], ",") {
			n, _ := strconv.ParseUint(v, 0, 16)
			c.versions = append(c.versions, map[uint64]string{0x0304: "TLS1.3", 0x0303: "TLS1.2", 0x0302: "TLS1.1", 0x0301: "TLS1.0"}[n])
		}
		c.length, _ = strconv.Atoi(fl[4])
		caps = append(caps, c)
	}
	if len(caps) < 20 {
		t.Fatalf("only %d captures", len(caps))
	}
	return dir, caps
}

// spRun runs snipeek with stdin and returns stdout, stderr and the exit
// status.
func spRun(t *testing.T, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin(t, "snipeek"), args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("snipeek %q did not exit", args)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

func TestSnipeekFile(t *testing.T) {
	dir, caps := spCaptures(t)
	for _, c := range caps {
		t.Run(c.file, func(t *testing.T) {
			out, errOut, code := spRun(t, nil, filepath.Join(dir, c.file))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			for _, want := range []string{
				"sni " + c.sni, "alpn " + c.alpn, "versions " + strings.Join(c.versions, ","),
				"ech no", fmt.Sprintf("length %d", c.length), "records 1",
			} {
				if !slices.Contains(lines, want) {
					t.Errorf("no line %q in\n%s", want, out)
				}
			}

			// -json, reading standard input.
			f, err := os.Open(filepath.Join(dir, c.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			out, errOut, code = spRun(t, f, "-json")
			if code != 0 {
				t.Fatalf("-json: exit %d: %s", code, errOut)
			}
			var got struct {
				SNI      *string   `json:"sni"`
				ALPN     []string  `json:"alpn"`
				Versions []string  `json:"versions"`
				ECH      *bool     `json:"ech"`
				Length   int       `json:"length"`
				Suites   []float64 `json:"cipher_suites"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("-json output %q: %v", out, err)
			}
			wantSNI, wantALPN := c.sni, strings.Split(c.alpn, ",")
			if wantSNI == "-" {
				wantSNI = ""
			}
			if c.alpn == "-" {
				wantALPN = []string{}
			}
			if got.SNI == nil || *got.SNI != wantSNI || got.ALPN == nil || !slices.Equal(got.ALPN, wantALPN) ||
				!slices.Equal(got.Versions, c.versions) || got.ECH == nil || *got.ECH || got.Length != c.length || len(got.Suites) == 0 {
				t.Errorf("-json = %s", out)
			}
		})
	}
}

func TestSnipeekFileErrors(t *testing.T) {
	dir, _ := spCaptures(t)
	hello, err := os.ReadFile(filepath.Join(dir, "go-alpn.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		stdin []byte
		args  []string
		code  int
		msg   string
	}{
		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), nil, 1, "not a TLS handshake"},
		{"SSLv2", []byte{0x80, 0x2e, 0x01, 0x00, 0x02, 0, 0, 0}, nil, 1, "SSLv2"},
		{"garbage", []byte{0, 1, 2, 3, 4, 5}, nil, 1, "not a TLS handshake"},
		{"truncated", hello[:len(hello)-1], nil, 1, "incomplete"},
		{"empty", nil, nil, 1, "incomplete"},
		{"missing file", nil, []string{filepath.Join(dir, "nonexistent.bin")}, 1, "no such file"},
		{"program without socket", nil, []string{"sh", "-c", "true"}, 2, "no connection to peek at"},
		{"one program without socket", nil, []string{"sh"}, 2, "connection to peek at"},
		{"-timeout in file mode", hello, []string{"-timeout", "1s"}, 2, "-timeout"},
		{"-default-hostname in file mode", hello, []string{"-default-hostname", "a.test"}, 2, "-default-hostname"},
		{"unknown flag", hello, []string{"-bogus"}, 2, "bogus"},
		{"bad duration", hello, []string{"-timeout", "soon"}, 2, "timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := spRun(t, bytes.NewReader(tt.stdin), tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, errOut)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if !strings.Contains(errOut, tt.msg) {
				t.Errorf("stderr %q does not mention %q", errOut, tt.msg)
			}
			if code == 1 && strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr %q: want one line", errOut)
			}
		})
	}
	out, _, code := spRun(t, nil, "-version")
	if code != 0 || !strings.HasPrefix(out, "snipeek ") {
		t.Errorf("-version: exit %d, %q", code, out)
	}
	out, _, code = spRun(t, nil, "-h")
	if code != 0 || !strings.Contains(out, "-default-hostname") {
		t.Errorf("-h: exit %d, %q", code, out)
	}
}

// spActivate runs `systemd-socket-activate -l 127.0.0.1:PORT --accept
// [extra...] snipeek args...` and returns the address and the process.
func spActivate(t *testing.T, extra []string, env []string, args ...string) (string, *Proc) {
	t.Helper()
	need(t, "systemd-socket-activate", "socat")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmdArgs := append([]string{"-l", addr, "--accept"}, extra...)
	for _, kv := range env { // it passes only a few variables on
		cmdArgs = append(cmdArgs, "-E", kv)
	}
	cmdArgs = append(cmdArgs, bin(t, "snipeek"))
	cmd := exec.Command("systemd-socket-activate", append(cmdArgs, args...)...)
	p := start(t, cmd)
	waitFor(t, 10*time.Second, "systemd-socket-activate listening", func() bool {
		return strings.Contains(p.Output(), "Listening on")
	})
	return addr, p
}

// spBackends serves HTTPS on DIR/a.example.test and DIR/b.example.test.
func spBackends(t *testing.T) string {
	t.Helper()
	dir := socketDir(t)
	for _, name := range []string{"a.example.test", "b.example.test"} {
		unixBackend(t, dir, name, false)
	}
	return dir
}

// spDispatch is the composition snipeek exists for.
const spDispatch = `exec socat STDIO UNIX-CONNECT:"$DIR/$TLS_SNI"`

// TestSnipeekDispatch shows the composition: systemd-socket-activate
// accepts, snipeek peeks and execs a shell that connects the untouched
// stream to the UNIX socket named after the server, where a Go TLS server
// completes the handshake. With --accept the connection arrives as
// LISTEN_FDS on fd 3; with --inetd on standard input.
func TestSnipeekDispatch(t *testing.T) {
	need(t, "curl")
	pki := testPKI(t)
	dir := spBackends(t)
	for _, mode := range [][]string{nil, {"--inetd"}} {
		t.Run(strings.Join(append([]string{"accept"}, mode...), ""), func(t *testing.T) {
			addr, p := spActivate(t, mode, []string{"DIR=" + dir}, "-timeout", "5s", "sh", "-c", spDispatch)
			_, port, _ := net.SplitHostPort(addr)

			for _, name := range []string{"a.example.test", "b.example.test"} {
				// curl
				out, err := exec.Command("curl", "-sS", "--max-time", "20", "--cacert", pki.CAFile,
					"--resolve", name+":"+port+":127.0.0.1", "https://"+name+":"+port+"/").CombinedOutput()
				if err != nil || !strings.Contains(string(out), "backend="+name+"\n") || !strings.Contains(string(out), "sni="+name+"\n") {
					t.Errorf("curl %s: %v\n%s", name, err, out)
				}
				// crypto/tls, the name in upper case with a trailing
				// dot: routed by its canonical form.
				body, err := httpsGet(t, addr, strings.ToUpper(name), "/")
				if err != nil || !strings.Contains(body, "backend="+name+"\n") {
					t.Errorf("crypto/tls client %s: %v\n%s", strings.ToUpper(name), err, body)
				}
			}

			// No server name (curl to an IP address): unrecognized_name.
			out, err := exec.Command("curl", "-sS", "--max-time", "20", "--cacert", pki.CAFile, "https://"+addr+"/").CombinedOutput()
			if err == nil || !strings.Contains(string(out), "unrecognized name") {
				t.Errorf("curl without SNI: %v, %s; want an unrecognized name alert", err, out)
			}
			// An invalid name: unrecognized_name.
			for _, sni := range []string{"", "-bad-.example.test", "a_b..example.test"} {
				err := spTLSDial(addr, sni)
				if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
					t.Errorf("crypto/tls client, SNI %q: %v; want an unrecognized name alert", sni, err)
				}
			}
			// A valid name without a socket: the program fails, the
			// connection closes.
			if err := spTLSDial(addr, "c.example.test"); err == nil {
				t.Errorf("c.example.test (no socket) answered")
			}
			// Not TLS: closed without an answer.
			if got, err := spRaw(addr, []byte("GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n"), false); err != nil || len(got) != 0 {
				t.Errorf("HTTP request: got %q, %v; want the connection closed", got, err)
			}
			waitFor(t, 10*time.Second, "snipeek's log lines", func() bool {
				o := p.Output()
				return strings.Contains(o, `reason=no_sni`) && strings.Contains(o, `reason=invalid_name`) &&
					strings.Contains(o, `reason=not_tls`)
			})
		})
	}
}

// spTLSDial completes a TLS handshake with addr, sending sni (none if
// empty), and returns the error.
func spTLSDial(addr, sni string) error {
	cfg := &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

// spRaw sends b, half-closes if asked, and reads until the server closes.
func spRaw(addr string, b []byte, closeWrite bool) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	if closeWrite {
		c.(*net.TCPConn).CloseWrite()
	}
	return io.ReadAll(c)
}

// TestSnipeekProgramSees checks what the executed program gets: the
// canonical name and the protocols in the environment (inherited values
// replaced), the connection on standard input in blocking mode with the
// ClientHello unread, and no stale socket activation state.
func TestSnipeekProgramSees(t *testing.T) {
	out := filepath.Join(t.TempDir(), "seen")
	script := `{
echo "sni=$TLS_SNI"
echo "alpn=$TLS_ALPN"
echo "listen=${LISTEN_FDS:-unset}"
test -e /proc/$$/fd/3 && echo fd3=open || echo fd3=closed
grep ^flags: /proc/$$/fdinfo/0
head -c 5 | od -An -tx1
} > "$OUT" 2>&1`
	addr, _ := spActivate(t, nil, []string{"OUT=" + out, "TLS_SNI=forged.example.test", "TLS_ALPN=forged"}, "sh", "-c", script)

	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{ServerName: "Env.Example.TEST.", InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	tc.SetDeadline(time.Now().Add(20 * time.Second))
	tc.Handshake() // fails: the program does not answer

	var seen string
	waitFor(t, 10*time.Second, "the program's report", func() bool {
		b, _ := os.ReadFile(out)
		seen = string(b)
		return strings.Count(seen, "\n") >= 6
	})
	for _, want := range []string{"sni=env.example.test\n", "alpn=h2,http/1.1\n", "listen=unset\n", "fd3=closed\n", " 16 03 01 "} {
		if !strings.Contains(seen, want) {
			t.Errorf("program saw\n%s\nwant %q", seen, want)
		}
	}
	var flags uint64
	for _, l := range strings.Split(seen, "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			flags, err = strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if flags&0o4000 != 0 {
		t.Errorf("standard input flags %#o: O_NONBLOCK is set", flags)
	}
}

// TestSnipeekTimeoutAndDefault: a client that sends part of a hello and
// stalls is closed without an alert when -timeout passes (as snilisten and
// TLS servers do), its bytes read so that it sees a clean close, not a
// reset; one that sends nothing is closed; with -default-hostname a hello
// without a name is served by the default.
func TestSnipeekTimeoutAndDefault(t *testing.T) {
	dir := spBackends(t)
	addr, p := spActivate(t, nil, []string{"DIR=" + dir}, "-timeout", "300ms", "-default-hostname", "B.example.test", "sh", "-c", spDispatch)

	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write([]byte{22, 3, 1, 2, 0, 1, 0, 1})
	got, err := io.ReadAll(c)
	if err != nil || len(got) != 0 {
		t.Errorf("stalled hello: got % x, %v; want EOF", got, err)
	}

	c2, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(20 * time.Second))
	if got, err := io.ReadAll(c2); err != nil || len(got) != 0 {
		t.Errorf("silent client: got % x, %v; want EOF", got, err)
	}

	// A client without SNI: curl to the address would do, crypto/tls
	// does it when ServerName is empty.
	tr := testPKI(t).ClientConfig("")
	tr.InsecureSkipVerify = true
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, tr)
	if err != nil {
		t.Fatalf("no SNI with -default-hostname: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: b.example.test\r\nConnection: close\r\n\r\n")
	body, _ := io.ReadAll(conn)
	if !strings.Contains(string(body), "backend=b.example.test\n") {
		t.Errorf("no SNI with -default-hostname B.example.test: got\n%s", body)
	}
	if !strings.Contains(p.Output(), `reason=peek_timeout`) {
		waitFor(t, 10*time.Second, "the timeout log line", func() bool { return strings.Contains(p.Output(), "reason=peek_timeout") })
	}
}

// TestSnipeekUsageExec: flags of exec mode are checked before anything
// is peeked.
func TestSnipeekUsageExec(t *testing.T) {
	addr, p := spActivate(t, []string{"--inetd"}, nil, "-default-hostname", "../etc", "sh", "-c", "exit 0")
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFor(t, 10*time.Second, "the usage error", func() bool {
		return strings.Contains(p.Output(), "-default-hostname") && strings.Contains(p.Output(), "died with code 2")
	})
}
