package tests

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// refusalCase is a hello sent to an OpenSSL server directly and through
// snilisten, and what the client reads back.
type refusalCase struct {
	name    string
	payload []byte
	// openssl is what openssl s_server answers (a premise, checked).
	openssl string
	// snilisten is what snilisten answers where that differs on
	// purpose; "" means the same as openssl.
	snilisten string
}

// refusalCases are legal or merely odd hellos, and hellos a server must
// refuse, built by hand: the inputs of issue 21, part 4.
func refusalCases(t testing.TB) []refusalCase {
	base := captureMessage(t, "openssl-default.bin")
	withSNI := func(name string) []byte {
		return withExtensions(t, stripSNI(t, base), []helloExt{sniExt(byte(0), name)})
	}
	app := withSNI("app.test")
	var cs []refusalCase
	add := func(name string, b []byte, openssl string) { cs = append(cs, refusalCase{name, b, openssl, ""}) }
	const hs, unexpected = "handshake", "alert 10 then eof"

	add("well-formed", frameRecords(app, 0x0301, 0), hs)
	// 100 KiB: padding fills the extensions block (64 KiB at most), the
	// rest is cipher suites. About 128 KiB is the most these two fields
	// allow, and what OpenSSL accepts.
	for _, size := range []int{100 << 10, 127 << 10} {
		padded := withExtensions(t, app, []helloExt{{21, make([]byte, 65000)}})
		big := withSuites(t, padded, (size-len(padded))/2)
		add(fmt.Sprintf("%s hello (padding, cipher suites)", kib(len(big))), frameRecords(big, 0x0301, 0), hs)
	}
	var many []helloExt
	for i := range 16000 {
		many = append(many, helloExt{typ: uint16(1000 + i)})
	}
	add("16,000 extensions", frameRecords(withExtensions(t, app, many), 0x0301, 0), hs)
	add("hello announcing 140 KiB", frameRecords(append([]byte{1, 0x02, 0x30, 0x00}, make([]byte, 140<<10)...), 0x0301, 0), "alert 47 then eof")
	add("hello announcing 16 MiB", []byte{22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}, "alert 47 then eof")

	add("ServerHello handshake message", frameRecords([]byte{2, 0, 0, 0}, 0x0303, 0), unexpected)
	add("Certificate handshake message", frameRecords([]byte{11, 0, 0, 3, 0, 0, 0}, 0x0303, 0), unexpected)
	split := func(mid []byte) []byte {
		r := frameRecords(app[:40], 0x0301, 0)
		r = append(r, mid...)
		return append(r, frameRecords(app[40:], 0x0301, 0)...)
	}
	add("ChangeCipherSpec inside the hello", split([]byte{20, 3, 3, 0, 1, 1}), unexpected)
	add("application data inside the hello", split([]byte{23, 3, 3, 0, 3, 1, 2, 3}), unexpected)
	add("warning alert inside the hello", split([]byte{21, 3, 3, 0, 2, 1, 0}), unexpected)
	add("fatal alert inside the hello", split([]byte{21, 3, 3, 0, 2, 2, 40}), unexpected)
	add("ChangeCipherSpec first", append([]byte{20, 3, 3, 0, 1, 1}, frameRecords(app, 0x0301, 0)...), unexpected)
	add("application data first", []byte{23, 3, 3, 0, 3, 1, 2, 3}, unexpected)
	add("fatal alert first", []byte{21, 3, 3, 0, 2, 2, 40}, unexpected)
	padded := withExtensions(t, app, []helloExt{{21, make([]byte, 20000)}})
	add("hello in a record of 2^14+1 bytes", frameRecords(padded, 0x0301, 0x4001), "alert 22 then eof")
	add("record of 2^14+2048+1 bytes", append([]byte{22, 3, 1, 0x48, 0x01}, make([]byte, 0x4801)...), "alert 22 then eof")
	// OpenSSL takes SSLv2-compatible hellos; with nothing in common with
	// these it says handshake_failure, through snilisten too.
	add("SSLv2-compatible hello, TLS 1.0", sslv2Hello(0x0301, 0xc00a, 0xc009, 0x002f), "alert 40 then eof")
	add("SSLv2-compatible hello, TLS 1.2", sslv2Hello(0x0303, 0xc02b, 0xc02c, 0xc009, 0xc00a, 0xc02f), "alert 40 then eof")
	add("empty host name", withSNIBytes(t, base, []byte{0, 3, 0, 0, 0}), hs)
	add("no server name", frameRecords(stripSNI(t, base), 0x0301, 0), hs)
	add(`name "../../etc/passwd"`, frameRecords(withSNI("../../etc/passwd"), 0x0301, 0), hs)
	add(`name "127.0.0.1"`, frameRecords(withSNI("127.0.0.1"), 0x0301, 0), hs)
	// A valid name (hostname.Canonical takes '_', as DNS does) without a
	// socket: unknown, refused as every unknown name is, where OpenSSL,
	// having one certificate, answers every name.
	cs = append(cs, refusalCase{`name "a_b.example" (no such socket)`, frameRecords(withSNI("a_b.example"), 0x0301, 0), hs, "alert 112 then eof"})
	add(`name with a NUL byte`, frameRecords(withSNI("app.test\x00.evil"), 0x0301, 0), "alert 112 then eof")
	add("name of 256 bytes", frameRecords(withSNI(strings.Repeat("a", 256)), 0x0301, 0), "alert 112 then eof")
	add("HTTP request", []byte("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"), "close")
	add("garbage", bytes.Repeat([]byte{0x42}, 100), "close")
	return cs
}

// stripSNI returns msg without its server_name extension.
func stripSNI(t testing.TB, msg []byte) []byte {
	t.Helper()
	return filterExtensions(t, msg, func(typ uint16) bool { return typ != 0 })
}

// withSNIBytes frames base with a server_name extension of the given raw
// body, for bodies sniExt cannot make.
func withSNIBytes(t testing.TB, base, body []byte) []byte {
	return frameRecords(withExtensions(t, stripSNI(t, base), []helloExt{{0, body}}), 0x0301, 0)
}

// TestRefusalsAsOpenSSL sends each hand-built hello to openssl s_server
// directly and through snilisten (to the same s_server on a UNIX socket)
// and compares what the client reads: snilisten must answer as the
// server would have, and where it refuses by itself the client must read
// the alert and then a clean close, not a reset.
func TestRefusalsAsOpenSSL(t *testing.T) {
	need(t, "openssl")
	direct := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	opensslServer(t, direct)
	dir := shortSocketDir(t)
	opensslServer(t, filepath.Join(dir, "app.test"))
	opensslServer(t, filepath.Join(dir, "dflt.test"))
	s := startSnilisten(t, "-unix-directory", dir, "-default-hostname", "dflt.test", "-peek-timeout", "5s")
	var table []string
	for _, c := range refusalCases(t) {
		d, err := probeTLS(direct, c.payload, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: direct: %v", c.name, err)
		}
		v, err := probeTLS(s.Addr, c.payload, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: through snilisten: %v", c.name, err)
		}
		table = append(table, fmt.Sprintf("%-42s %7d B  openssl: %-18s snilisten: %s", c.name, len(c.payload), d, v))
		if d.String() != c.openssl {
			t.Errorf("%s: openssl s_server answers %s, the test expects %s", c.name, d, c.openssl)
		}
		want := c.snilisten
		if want == "" {
			want = c.openssl
		}
		if v.String() != want {
			t.Errorf("%s: through snilisten: %s, want %s", c.name, v, want)
		}
	}
	t.Logf("what a client reads:\n%s", strings.Join(table, "\n"))
}

// TestRefusalsWithoutDefault: without -default-hostname, the hellos that
// name no usable host are refused with unrecognized_name, read as such
// (not a reset), and logged saying why.
func TestRefusalsWithoutDefault(t *testing.T) {
	need(t, "openssl")
	dir := shortSocketDir(t)
	opensslServer(t, filepath.Join(dir, "app.test"))
	s := startSnilisten(t, "-unix-directory", dir, "-peek-timeout", "5s")
	base := captureMessage(t, "openssl-default.bin")
	for _, c := range []struct {
		name    string
		payload []byte
		log     []string
	}{
		{"SSLv2-compatible hello", sslv2Hello(0x0303, 0xc02b, 0xc02f), []string{"outcome=no_sni", "SSLv2-compatible ClientHello"}},
		{"empty host name", withSNIBytes(t, base, []byte{0, 3, 0, 0, 0}), []string{"outcome=no_sni", "empty server name"}},
		{"no server name", frameRecords(stripSNI(t, base), 0x0301, 0), []string{"outcome=no_sni", "no server name"}},
		{`name "../../etc/passwd"`, frameRecords(withExtensions(t, stripSNI(t, base), []helloExt{sniExt(byte(0), "../../etc/passwd")}), 0x0301, 0), []string{"outcome=invalid_name", `sni=../../etc/passwd`}},
	} {
		v, err := probeTLS(s.Addr, c.payload, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if v.String() != "alert 112 then eof" {
			t.Errorf("%s: %s, want alert 112 then eof", c.name, v)
		}
		waitLog(t, s.Proc, c.log...)
	}
}

// TestRefusalPeekBudget: hellos up to 128 KiB are accepted, and the
// memory of their peek buffers is bounded for the whole process by
// -peek-budget. Clients that stall just short of the largest hello take
// the budget up to its limit; the next large one is refused at once with
// internal_error (outcome peek_budget) while small hellos, within the
// free part of every buffer, are still served; when the stalled clients
// go, the budget is whole again.
func TestRefusalPeekBudget(t *testing.T) {
	need(t, "openssl")
	dir := shortSocketDir(t)
	opensslServer(t, filepath.Join(dir, "app.test"))
	const budget = 2 << 20
	s := startSnilisten(t, "-unix-directory", dir, "-peek-budget", "2M", "-peek-timeout", "60s", "-metrics-listen", "127.0.0.1:0", "-q")
	m := metricsAddr(t, s.Proc)
	if got := metricValue(t, m, "snilisten_peek_budget_bytes", ""); got != budget {
		t.Fatalf("snilisten_peek_budget_bytes = %v, want %d", got, budget)
	}
	base := captureMessage(t, "openssl-default.bin")
	app := withExtensions(t, stripSNI(t, base), []helloExt{sniExt(byte(0), "app.test")})
	padded := withExtensions(t, app, []helloExt{{21, make([]byte, 65000)}})
	big := frameRecords(withSuites(t, padded, (127<<10-len(padded))/2), 0x0301, 0)
	stalled := big[:len(big)-1024]
	const peekFree = 16 << 10 // dispatch.PeekFree

	idle := rssKiB(t, s.Pid())
	var held []net.Conn
	refused := 0
	for i := range 60 {
		c, err := net.DialTimeout("tcp", s.Addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(60 * time.Second))
		before := metricValue(t, m, "snilisten_peek_budget_used_bytes", "")
		go c.Write(stalled)
		answer := make(chan tlsAnswer, 1)
		go func() {
			buf := make([]byte, 7)
			n, err := io.ReadFull(c, buf)
			a := tlsAnswer{Kind: fmt.Sprintf("%x", buf[:n])}
			if n == 7 && buf[0] == 21 {
				a.Kind = fmt.Sprintf("alert %d", buf[6])
				_, err = io.ReadAll(c)
			}
			a.End = endOf(err)
			answer <- a
		}()
		// Held (its buffer counted: at least the bytes it peeked beyond
		// the free part), or refused.
		var a tlsAnswer
		waitFor(t, 20*time.Second, fmt.Sprintf("stalled client %d held or refused", i), func() bool {
			select {
			case a = <-answer:
				return true
			default:
			}
			return metricValue(t, m, "snilisten_peek_budget_used_bytes", "") >= before+float64(len(stalled)-peekFree)
		})
		if a.Kind == "" {
			held = append(held, c)
		} else {
			if a.String() != "alert 80 then eof" {
				t.Errorf("stalled client %d: %s, want alert 80 (internal_error) then eof", i, a)
			}
			refused++
		}
		if used := metricValue(t, m, "snilisten_peek_budget_used_bytes", ""); used > budget {
			t.Fatalf("budget overdrawn: %v bytes used of %d", used, budget)
		}
	}
	spent := rssKiB(t, s.Pid())
	if len(held) == 0 || refused == 0 {
		t.Fatalf("%d clients held, %d refused: want the budget spent, and refusals after", len(held), refused)
	}
	if max := budget / (len(stalled) - peekFree); len(held) > max {
		t.Errorf("%d clients held with %d bytes each beyond the free part: more than a %d-byte budget holds (%d)", len(held), len(stalled)-peekFree, budget, max)
	}
	waitFor(t, 10*time.Second, "the refusals counted", func() bool {
		return metricValue(t, m, "snilisten_connections_finished_total", `outcome="peek_budget"`) == float64(refused)
	})
	// A small hello is served while the budget is spent.
	if a, err := probeTLS(s.Addr, frameRecords(app, 0x0301, 0), 10*time.Second); err != nil || a.Kind != "handshake" {
		t.Errorf("small hello with the budget spent: %v, %v; want a handshake", a, err)
	}
	for _, c := range held {
		c.Close()
	}
	waitFor(t, 20*time.Second, "the budget back", func() bool {
		return metricValue(t, m, "snilisten_peek_budget_used_bytes", "") == 0
	})
	if a, err := probeTLS(s.Addr, big, 10*time.Second); err != nil || a.Kind != "handshake" {
		t.Errorf("%s hello with the budget back: %v, %v; want a handshake", kib(len(big)), a, err)
	}
	t.Logf("-peek-budget 2M: 60 clients stalled 1 KiB short of a %s hello: %d held, %d refused with internal_error; RSS %d KiB idle, %d KiB with the budget spent",
		kib(len(big)), len(held), refused, idle, spent)
}

// TestRefusalBackendSilent: a connection whose backend never sends a
// byte (here openssl s_server, which does not expect the PROXY header it
// is sent, takes it for garbage and closes without a word) is logged as
// outcome=no_answer at warning level and counted as such, not as ok with
// down=0.
func TestRefusalBackendSilent(t *testing.T) {
	need(t, "openssl")
	dir := shortSocketDir(t)
	opensslServer(t, filepath.Join(dir, "silent.test")) // no PROXY header expected
	unixBackend(t, dir, "ok.example.test", true)
	s := startSnilisten(t, "-unix-directory", dir, "-proxy-proto", "-metrics-listen", "127.0.0.1:0")
	m := metricsAddr(t, s.Proc)
	if c, err := tlsDial(t, s.Addr, "silent.test"); err == nil {
		c.Close()
		t.Fatalf("silent.test answered a handshake")
	}
	// The answering backend's client reads to the end before it closes,
	// and closes without a close_notify of its own: a socket closed with
	// bytes unread (net/http's client closes as soon as it has the body,
	// before the server's close_notify; the server closes before the
	// client's) resets the connection, which snilisten rightly logs as
	// relay_error, now and then, by timing.
	c, err := tlsDial(t, s.Addr, "ok.example.test")
	if err != nil {
		t.Fatalf("ok.example.test: %v", err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: ok.example.test\r\nConnection: close\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if answer, err := io.ReadAll(c); err != nil || !strings.Contains(string(answer), "backend=ok.example.test") {
		t.Fatalf("ok.example.test: %v %q", err, answer)
	}
	c.NetConn().Close()
	waitLog(t, s.Proc, "sni=silent.test", "outcome=")
	waitLog(t, s.Proc, "sni=ok.example.test", "outcome=")
	line := logLines(s.Proc, "sni=silent.test")[0]
	if !strings.Contains(line, "outcome=no_answer") || !strings.Contains(line, "down=0") || !strings.Contains(line, "level=WARN") {
		t.Errorf("silent backend logged as: %s\nwant level=WARN, down=0, outcome=no_answer", line)
	}
	if l := logLines(s.Proc, "sni=ok.example.test")[0]; !strings.Contains(l, "outcome=ok") {
		t.Errorf("answering backend logged as: %s", l)
	}
	for outcome, want := range map[string]float64{"no_answer": 1, "ok": 1} {
		if got := metricValue(t, m, "snilisten_connections_finished_total", `outcome="`+outcome+`"`); got != want {
			t.Errorf("snilisten_connections_finished_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}
	t.Logf("silent backend: %s", line)
}

// TestRefusalPeekBudgetUsage: -peek-budget is checked before anything
// starts.
func TestRefusalPeekBudgetUsage(t *testing.T) {
	for _, v := range []string{"1K", "lots", "-1", "64k"} {
		cmd := exec.Command(bin(t, "snilisten"), "-listen", "tcp:127.0.0.1:0", "-peek-budget", v)
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "-peek-budget") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Errorf("snilisten -peek-budget %s: exit %d (%v), want 2 and one line naming -peek-budget:\n%s", v, code, err, out)
		}
	}
}
