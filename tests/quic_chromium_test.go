package tests

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestQUICChromium has a real browser, headless Chromium forced onto
// QUIC, fetch pages through snilisten on UDP from quic-go HTTP/3
// backends, in tcp mode and in nat46 mode (where the backend sees the
// client's IPv4 address and port embedded in the NAT46 prefix). Nothing
// listens on TCP 443, so a fallback to TCP cannot pass: the page must
// come from the backend and snilisten must log the QUIC flow. It also
// records how many datagrams Chromium's (post-quantum) hello took.
// SNITOOLS_CHROMIUM_NETLOG=PREFIX keeps Chromium's net-logs as
// PREFIX.NAME.json.
func TestQUICChromium(t *testing.T) {
	need(t, "chromium")
	if !inNetns(t) {
		return
	}
	netnsSetup(t,
		[]string{"192.0.2.1/32", "192.0.2.2/32", "198.51.100.10/32", "2001:db8:5ba7::10/128"},
		"127.0.0.1 localhost\n"+
			"198.51.100.10 tcp.example.test\n"+
			"2001:db8:5ba7::10 nat.example.test\n",
		"nameserver 127.0.0.53\noptions timeout:1 attempts:1\n")
	h3Backend(t, "198.51.100.10:8443", "tcp")
	// nat46 mode has no -backend-port: its backends serve on 443.
	h3Backend(t, "[2001:db8:5ba7::10]:443", "nat46")
	tcpMode := startSnilistenOn(t, "udp:192.0.2.1:443", "-mode", "tcp", "-backend-cidr", "198.51.100.0/24", "-backend-port", "8443", "-quic-idle-timeout", "2s")
	natMode := startSnilistenOn(t, "udp:192.0.2.2:443", "-mode", "nat46", "-nat46-prefix", "64:ff9b:1::/96", "-backend-cidr", "2001:db8:5ba7::/64", "-quic-idle-timeout", "2s")

	for _, tc := range []struct {
		name, listen string
		s            *snilisten
		want         string // the backend's answer, up to the client port
	}{
		// tcp mode: the backend sees snilisten's flow socket.
		{"tcp.example.test", "192.0.2.1", tcpMode, `^backend=tcp remote=198\.51\.100\.10:\d+$`},
		// nat46: Chromium sends from 192.0.2.2 (to 192.0.2.2 on lo),
		// which the backend sees embedded in the prefix.
		{"nat.example.test", "192.0.2.2", natMode, `^backend=nat46 remote=\[64:ff9b:1::c000:202\]:\d+$`},
	} {
		sn := sniffUDP(t, 443)
		body := chromiumGet(t, tc.name, tc.listen)
		if !regexp.MustCompile(tc.want).MatchString(body) {
			t.Errorf("Chromium got https://%s/: %q, want %s\nsnilisten:\n%s", tc.name, body, tc.want, tc.s.Output())
			continue
		}
		waitFor(t, 10*time.Second, "the flow of "+tc.name+" to end idle", func() bool {
			return len(logLines(tc.s.Proc, `msg="quic flow"`, "sni="+tc.name)) > 0
		})
		line := logLines(tc.s.Proc, `msg="quic flow"`, "sni="+tc.name)[0]
		m := regexp.MustCompile(`client=` + regexp.QuoteMeta(tc.listen) + `:(\d+) .* outcome=ok`).FindStringSubmatch(line)
		if m == nil {
			t.Errorf("flow log line: %s", line)
			continue
		}
		// nat46 keeps the client's port when it is free, as it is here.
		if tc.s == natMode && !strings.HasSuffix(body, "]:"+m[1]) {
			t.Errorf("nat46: the backend saw %q, want the client port %s", body, m[1])
		}
		// Chromium's post-quantum (X25519MLKEM768) ClientHello is
		// about 2000 bytes of CRYPTO data, sent in two Initials and
		// out of order (Chromium 156: bytes 0-67 and 1057-1975 in the
		// first, 67-1057 in the second): the SNI is found only by
		// reassembling both datagrams.
		hello := sn.hello(t)
		if hello.initials < 2 {
			t.Errorf("Chromium's hello took %d Initial datagram(s) (%+v); its post-quantum hello should take 2", hello.initials, hello)
		}
		t.Logf("%s: %q; hello in %d datagram(s) (%d starting with an Initial, %d bytes) before the first answer; flow: %s",
			tc.name, body, hello.datagrams, hello.initials, hello.bytes, line)
	}
}

// chromiumGet fetches https://name/ with headless Chromium forced onto
// QUIC to listen:443 and returns the text of the page. The test leaf
// certificate is trusted by its public key hash, which Chromium honours
// only with a --user-data-dir. The background services are switched off,
// or they flood the closed network with lookups.
func chromiumGet(t *testing.T, name, listen string) string {
	t.Helper()
	leaf, err := x509.ParseCertificate(testPKI(t).Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	dir := t.TempDir()
	netlog := filepath.Join(dir, "netlog.json")
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile"),
		"--origin-to-force-quic-on=" + name + ":443",
		"--host-resolver-rules=MAP " + name + " " + listen,
		"--ignore-certificate-errors-spki-list=" + base64.StdEncoding.EncodeToString(spki[:]),
		"--log-net-log=" + netlog, "--net-log-capture-mode=Everything",
		"--dump-dom", "https://" + name + "/",
	}
	// Only against a hang: a fetch takes a second or two.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chromium", args...)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	// Chromium starts helper processes: kill them all if it hangs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	if keep := os.Getenv("SNITOOLS_CHROMIUM_NETLOG"); keep != "" {
		if b, err := os.ReadFile(netlog); err == nil {
			os.WriteFile(keep+"."+name+".json", b, 0o644)
		}
	}
	// A text/plain page is shown as <pre>TEXT</pre>.
	if m := regexp.MustCompile(`(?s)<pre[^>]*>(.*?)</pre>`).FindSubmatch(out); m != nil {
		return string(m[1])
	}
	// A failed load prints no page: the net-log says why.
	noise := regexp.MustCompile(`(?m)^.*(dbus|unexpected operator).*\n`)
	t.Logf("chromium printed no page: %.1000q\nnet errors: %s\nstderr:\n%.2000s", out, netLogErrors(netlog), noise.ReplaceAllString(stderr.String(), ""))
	return ""
}

// netLogErrors lists the distinct net errors (ERR_...) in a Chromium
// net-log, each with the first event that reported it.
func netLogErrors(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	var log struct {
		Constants struct {
			LogEventTypes map[string]int `json:"logEventTypes"`
			NetError      map[string]int `json:"netError"`
		} `json:"constants"`
		Events []struct {
			Type   int `json:"type"`
			Params struct {
				NetError int `json:"net_error"`
			} `json:"params"`
		} `json:"events"`
	}
	if err := json.Unmarshal(b, &log); err != nil {
		return "unreadable net-log: " + err.Error()
	}
	names := func(m map[string]int) map[int]string {
		r := map[int]string{}
		for k, v := range m {
			r[v] = k
		}
		return r
	}
	events, errs := names(log.Constants.LogEventTypes), names(log.Constants.NetError)
	var out []string
	seen := map[int]bool{}
	for _, e := range log.Events {
		if n := e.Params.NetError; n != 0 && !seen[n] {
			seen[n] = true
			out = append(out, fmt.Sprintf("%s (in %s)", errs[n], events[e.Type]))
		}
	}
	if out == nil {
		return "none"
	}
	return strings.Join(out, ", ")
}

// helloCount is what a sniffer saw of the first QUIC connection to a
// port: the datagrams the client sent before the first answer, how many
// of them start with an Initial packet, and their UDP payload bytes.
type helloCount struct {
	datagrams, initials, bytes int
}

// udpSniffer reads every IPv4 UDP datagram on the loopback interface
// (AF_PACKET) and counts the client's datagrams to port until the
// first one from port comes back. It only watches, so snilisten sees
// Chromium itself as its client, as a relay that counted would not let
// it (in nat46 mode the backend would see the relay).
type udpSniffer struct {
	mu       sync.Mutex
	count    helloCount
	answered bool
	client   string
	fd       int
	done     chan struct{}
}

// sniffUDP starts a udpSniffer for datagrams to and from port, on the
// namespace's loopback, until the test ends.
func sniffUDP(t *testing.T, port uint16) *udpSniffer {
	t.Helper()
	const ethPAll = 0x0003
	htons := func(v uint16) uint16 { return v<<8 | v>>8 }
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(htons(ethPAll)))
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(ethPAll), Ifindex: lo.Index}); err != nil {
		t.Fatalf("bind packet socket: %v", err)
	}
	tv := syscall.NsecToTimeval(int64(100 * time.Millisecond))
	syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	s := &udpSniffer{fd: fd, done: make(chan struct{})}
	stop := make(chan struct{})
	go s.run(port, stop)
	t.Cleanup(func() { close(stop); <-s.done; syscall.Close(fd) })
	return s
}

func (s *udpSniffer) run(port uint16, stop chan struct{}) {
	defer close(s.done)
	b := make([]byte, 65536)
	for {
		select {
		case <-stop:
			return
		default:
		}
		n, from, err := syscall.Recvfrom(s.fd, b, 0)
		if err != nil {
			continue
		}
		// Loopback shows each packet twice, going out and coming in.
		if ll, ok := from.(*syscall.SockaddrLinklayer); !ok || ll.Pkttype != syscall.PACKET_HOST {
			continue
		}
		p := b[:n]
		if len(p) < 28 || p[0]>>4 != 4 || p[9] != syscall.IPPROTO_UDP {
			continue
		}
		udp := p[int(p[0]&0xf)*4:]
		if len(udp) < 8 {
			continue
		}
		src := fmt.Sprintf("%s:%d", net.IP(p[12:16]), binary.BigEndian.Uint16(udp[0:2]))
		dst := fmt.Sprintf("%s:%d", net.IP(p[16:20]), binary.BigEndian.Uint16(udp[2:4]))
		sport, dport := binary.BigEndian.Uint16(udp[0:2]), binary.BigEndian.Uint16(udp[2:4])
		payload := udp[8:]
		s.mu.Lock()
		switch {
		case s.answered:
		case dport == port && (s.client == "" || s.client == src):
			s.client = src
			s.count.datagrams++
			s.count.bytes += len(payload)
			// A v1 long header Initial: form bit set, type 0.
			if len(payload) > 0 && payload[0]&0x80 != 0 && payload[0]&0x30 == 0 {
				s.count.initials++
			}
		case sport == port && dst == s.client:
			s.answered = true
		}
		s.mu.Unlock()
	}
}

// hello waits until the sniffer has read the first answer (Chromium has
// had it, but the sniffer may lag behind) and returns the count.
func (s *udpSniffer) hello(t *testing.T) helloCount {
	t.Helper()
	waitFor(t, 10*time.Second, "the sniffer to see the first answer", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.answered
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}
