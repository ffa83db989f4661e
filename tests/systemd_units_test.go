package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSystemdUnitsVerify runs systemd-analyze verify on every unit in
// dist/systemd, with ExecStart pointing at the built commands and the man
// pages of man/ on MANPATH, so that Documentation= is checked too.
func TestSystemdUnitsVerify(t *testing.T) {
	need(t, "systemd-analyze", "man")
	units, _ := filepath.Glob("../dist/systemd/*.s*")
	if len(units) == 0 {
		t.Fatal("no units in dist/systemd")
	}
	dir := t.TempDir()
	manDir := filepath.Join(dir, "man")
	pages, _ := filepath.Glob("../man/*.[0-9]")
	for _, page := range pages {
		section := "man" + page[len(page)-1:]
		os.MkdirAll(filepath.Join(manDir, section), 0o755)
		b, _ := os.ReadFile(page)
		os.WriteFile(filepath.Join(manDir, section, filepath.Base(page)), b, 0o644)
	}
	binDir, _ := filepath.Abs("../bin")
	var args []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/usr/bin/", binDir+"/")
		dst := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(dst, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, dst)
	}
	cmd := exec.Command("systemd-analyze", append([]string{"verify"}, args...)...)
	cmd.Env = append(os.Environ(), "MANPATH="+manDir)
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify %v: %v\n%s", units, err, out)
	}
}

// TestSystemdSocketQUIC checks what dist/systemd/snilisten.socket gives
// snilisten.service: a TCP and a UDP socket on port 443 under one name,
// both of which the service's `-listen fd:NAME` takes. It then runs the
// shipped ExecStart on such a pair, passed as systemd passes them
// (systemd-socket-activate twice, for the stream and the datagram
// socket): in unix mode, the shipped one, snilisten serves TCP and says
// once that it does not serve QUIC; with the mode changed to tcp, as an
// operator's override would, it routes a real HTTP/3 request through the
// inherited UDP socket.
func TestSystemdSocketQUIC(t *testing.T) {
	need(t, "systemd-socket-activate")
	sock := unitSection(t, "../dist/systemd/snilisten.socket", "Socket")
	for key, want := range map[string]string{"ListenStream": "443", "ListenDatagram": "443"} {
		if got := sock[key]; len(got) != 1 || got[0] != want {
			t.Errorf("snilisten.socket: %s=%q, want %s=%s", key, got, key, want)
		}
	}
	names := sock["FileDescriptorName"]
	if len(names) != 1 || names[0] == "" {
		t.Fatalf("snilisten.socket: FileDescriptorName=%q, want one name for both sockets", names)
	}
	name := names[0]
	execStart := unitSection(t, "../dist/systemd/snilisten.service", "Service")["ExecStart"]
	if len(execStart) != 1 {
		t.Fatalf("snilisten.service: ExecStart=%q, want one", execStart)
	}
	args := strings.Fields(execStart[0])
	if args[0] != "/usr/bin/snilisten" || !strings.Contains(execStart[0], " -listen fd:"+name+" ") || !strings.Contains(execStart[0], " -mode unix ") {
		t.Fatalf("snilisten.service: ExecStart=%s, want /usr/bin/snilisten -listen fd:%s -mode unix ...", execStart[0], name)
	}
	args = args[1:]
	// activate runs snilisten with args on a TCP and a UDP socket bound
	// to the same address, both named name, and starts it with a TCP
	// connection: systemd-socket-activate execs its program at the first
	// one.
	activate := func(t *testing.T, args []string) (*Proc, string) {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		p := start(t, exec.Command("systemd-socket-activate", append([]string{"-l", addr, "--fdname=" + name,
			"systemd-socket-activate", "--datagram", "-l", addr, "--fdname=" + name + ":" + name,
			bin(t, "snilisten")}, args...)...))
		waitListening(t, addr)
		return p, addr
	}

	t.Run("unix", func(t *testing.T) {
		dir := socketDir(t)
		unixBackend(t, dir, "web.example.test", slices.Contains(args, "-proxy-proto"))
		p, addr := activate(t, replaceArg(t, args, "-unix-directory", dir))
		if body, err := httpsGet(t, addr, "web.example.test", "/"); err != nil || !strings.Contains(body, "backend=web.example.test") {
			t.Fatalf("TCP through the inherited socket: %v %q\n%s", err, body, p.Output())
		}
		waitLog(t, p, "not serving QUIC", "address=udp:"+addr)
		if res, err := h3Get(t, "127.0.0.1", addr, "web.example.test", 2*time.Second); err == nil {
			t.Errorf("HTTP/3 in unix mode answered %q, want no answer", res.Body)
		}
		if p.Exited() || len(logLines(p, "not serving QUIC")) != 1 {
			t.Errorf("want snilisten running and one line about it:\n%s", p.Output())
		}
	})

	t.Run("tcp", func(t *testing.T) {
		backend := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		h3Backend(t, backend, "h3")
		tcpArgs := replaceArg(t, args, "-mode", "tcp")
		for i := 0; i < len(tcpArgs); i++ {
			if tcpArgs[i] == "-unix-directory" {
				tcpArgs = slices.Delete(tcpArgs, i, i+2)
			}
		}
		tcpArgs = append(tcpArgs, "-backend-cidr", "127.0.0.0/8", "-backend-port", strings.TrimPrefix(backend, "127.0.0.1:"))
		p, addr := activate(t, tcpArgs)
		waitLog(t, p, "listening", "address=udp:"+addr, "mode=tcp")
		res, err := h3Get(t, "127.0.0.1", addr, "localhost", 5*time.Second)
		if err != nil || !strings.HasPrefix(res.Body, "backend=h3 ") {
			t.Fatalf("HTTP/3 through the inherited UDP socket: %v %q\n%s", err, res.Body, p.Output())
		}
		if n := len(logLines(p, "not serving QUIC")); n != 0 {
			t.Errorf("%d warnings about QUIC in tcp mode:\n%s", n, p.Output())
		}
	})
}

// unitSection returns the settings of one section of a systemd unit
// file, each key with its values in order; comments and blank lines are
// skipped.
func unitSection(t *testing.T, path, section string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			in = line == "["+section+"]"
		case in:
			key, value, _ := strings.Cut(line, "=")
			out[key] = append(out[key], value)
		}
	}
	return out
}

// replaceArg returns a copy of args with the value after flag replaced.
func replaceArg(t *testing.T, args []string, flag, value string) []string {
	t.Helper()
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("%s not in %q", flag, args)
	}
	out := slices.Clone(args)
	out[i+1] = value
	return out
}
