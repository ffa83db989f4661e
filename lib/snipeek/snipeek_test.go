package snipeek

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snitools/snitools/lib/clienthello"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/sys/unix"
)

func readCapture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "clienthello", "testdata", "captures", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hello builds a one-record ClientHello with the given server name (none
// if nil) and ALPN protocols.
func hello(sni *string, alpn ...string) []byte {
	var b cryptobyte.Builder
	b.AddUint8(22)
	b.AddUint16(0x0301)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(1)
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16(0x0303)
			b.AddBytes(make([]byte, 32))
			b.AddUint8(0)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(0x1301) })
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				if sni != nil {
					b.AddUint16(0)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
							b.AddUint8(0)
							b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(*sni)) })
						})
					})
				}
				if alpn != nil {
					b.AddUint16(16)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
							for _, p := range alpn {
								b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
							}
						})
					})
				}
			})
		})
	})
	return b.BytesOrPanic()
}

func ptr(s string) *string { return &s }

func TestWriteText(t *testing.T) {
	tests := []struct {
		in   []byte
		want []string // lines that must appear
	}{
		{readCapture(t, "curl-default.bin"), []string{
			"sni curl-default.example.test", "alpn h2,http/1.1", "versions TLS1.3,TLS1.2,TLS1.1,TLS1.0",
			"ech no", "legacy_version TLS1.2", "length 517", "records 1",
		}},
		{readCapture(t, "openssl-nosni.bin"), []string{"sni -", "alpn -", "length 297"}},
		{readCapture(t, "openssl-xmpp.bin"), []string{"sni openssl-xmpp.example.test", "alpn xmpp-client"}},
		{readCapture(t, "openssl-tls12.bin"), []string{"versions TLS1.2,TLS1.1,TLS1.0"}},
		// What the client chose cannot forge lines or reach a terminal raw.
		{hello(ptr("evil\nalpn h2\x1b[2J"), "a,b", "sp ace", "-", "h2"), []string{
			`sni "evil\nalpn h2\x1b[2J"`, `alpn "a,b","sp ace","-",h2`,
		}},
		{hello(ptr("-")), []string{`sni "-"`}},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			info, err := clienthello.Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			s := Summarize(&info)
			var out bytes.Buffer
			if err := s.WriteText(&out); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if len(lines) != 9 {
				t.Errorf("%d lines, want 9:\n%s", len(lines), out.String())
			}
			for _, w := range tt.want {
				if !slices.Contains(lines, w) {
					t.Errorf("no line %q in:\n%s", w, out.String())
				}
			}
			for _, l := range lines {
				if k, v, ok := strings.Cut(l, " "); !ok || k == "" || v == "" {
					t.Errorf("line %q is not key value", l)
				}
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	for name, want := range map[string]map[string]any{
		"go-alpn.bin": {"sni": "go-alpn.example.test", "alpn": []any{"h2", "http/1.1"},
			"versions": []any{"TLS1.3", "TLS1.2"}, "ech": false, "length": 1530.0, "records": 1.0},
		"curl-iplit.bin": {"sni": "", "alpn": []any{"h2", "http/1.1"}},
		"go-default.bin": {"alpn": []any{}},
	} {
		t.Run(name, func(t *testing.T) {
			info, err := clienthello.Parse(readCapture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			s := Summarize(&info)
			var out bytes.Buffer
			if err := s.WriteJSON(&out); err != nil {
				t.Fatal(err)
			}
			if strings.Count(out.String(), "\n") != 1 {
				t.Errorf("not one line: %q", out.String())
			}
			var got map[string]any
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range want {
				if fmt.Sprint(got[k]) != fmt.Sprint(v) {
					t.Errorf("%s = %#v, want %#v", k, got[k], v)
				}
			}
			for _, k := range []string{"sni", "alpn", "versions", "ech", "legacy_version", "cipher_suites", "extensions"} {
				if _, ok := got[k]; !ok {
					t.Errorf("no key %q", k)
				}
			}
		})
	}
}

// slowReader hands out its bytes a few at a time and then blocks, as a
// pipe from a capture tool that stays open would.
type slowReader struct {
	b     []byte
	n     int
	block chan struct{}
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		<-r.block
		return 0, io.EOF
	}
	n := copy(p, r.b[:min(len(r.b), r.n)])
	r.b = r.b[n:]
	return n, nil
}

func TestReadHello(t *testing.T) {
	c := readCapture(t, "go-alpn.bin")
	r := &slowReader{b: c, n: 100, block: make(chan struct{})}
	defer close(r.block)
	done := make(chan error, 1)
	go func() {
		info, err := ReadHello(r, clienthello.DefaultLimit)
		if err == nil && info.ServerName() != "go-alpn.example.test" {
			err = fmt.Errorf("server name %q", info.ServerName())
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadHello waited for more input after a whole hello")
	}

	for name, tt := range map[string]struct {
		in   io.Reader
		want error
	}{
		"empty":     {bytes.NewReader(nil), clienthello.ErrIncomplete},
		"truncated": {bytes.NewReader(c[:len(c)-1]), clienthello.ErrIncomplete},
		"HTTP":      {strings.NewReader("GET / HTTP/1.0\r\n\r\n"), clienthello.ErrNotTLS},
		"trailing":  {io.MultiReader(bytes.NewReader(c), strings.NewReader("more")), nil},
		// An endless stream of tiny records stops at the limit.
		"endless": {io.MultiReader(bytes.NewReader([]byte{22, 3, 1, 0, 4, 1, 0, 0xff, 0xff}), &endless{b: []byte{22, 3, 1, 0, 1, 0}}), clienthello.ErrTooLarge},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ReadHello(tt.in, clienthello.DefaultLimit)
			if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// endless repeats its bytes forever.
type endless struct {
	b   []byte
	off int
}

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = e.b[e.off%len(e.b)]
		e.off++
	}
	return len(p), nil
}

func TestDecide(t *testing.T) {
	parse := func(b []byte) clienthello.Info {
		info, err := clienthello.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	tests := []struct {
		name      string
		info      clienthello.Info
		err       error
		def       string
		wantName  string
		wantALPN  []string
		wantAlert clienthello.Alert
		reason    string
	}{
		{name: "name", info: parse(hello(ptr("WWW.Example.Test."), "h2", "http/1.1")), wantName: "www.example.test", wantALPN: []string{"h2", "http/1.1"}},
		{name: "unsafe protocols dropped", info: parse(hello(ptr("a.test"), "h2", "x,y", "nul\x00", "sp ace", "é", `q"`, "\xff", "-")), wantName: "a.test", wantALPN: []string{"h2", "-"}},
		{name: "no name", info: parse(hello(nil)), wantAlert: clienthello.AlertUnrecognizedName, reason: "no_sni"},
		{name: "no name, default", info: parse(hello(nil, "h2")), def: "default.test", wantName: "default.test", wantALPN: []string{"h2"}},
		// Routed by -default-hostname as a TLS server would answer it
		// with its default certificate; never a path.
		{name: "traversal", info: parse(hello(ptr("../etc"))), def: "default.test", wantName: "default.test"},
		{name: "traversal, no default", info: parse(hello(ptr("../etc"))), wantAlert: clienthello.AlertUnrecognizedName, reason: "invalid_name"},
		{name: "IP literal", info: parse(hello(ptr("127.0.0.1"))), wantAlert: clienthello.AlertUnrecognizedName, reason: "invalid_name"},
		{name: "slash", info: parse(hello(ptr("a/b.test"))), wantAlert: clienthello.AlertUnrecognizedName, reason: "invalid_name"},
		{name: "NUL, default", info: parse(hello(ptr("a.test\x00"))), def: "default.test", wantAlert: clienthello.AlertUnrecognizedName, reason: "invalid_name"},
		{name: "timeout", err: fmt.Errorf("peek: %w", os.ErrDeadlineExceeded), reason: "peek_timeout"},
		{name: "HTTP", err: fmt.Errorf("x: %w", clienthello.ErrNotTLS), reason: "not_tls"},
		{name: "malformed", err: fmt.Errorf("x: %w", clienthello.ErrMalformed), wantAlert: clienthello.AlertDecodeError, reason: "bad_hello"},
		{name: "too large", err: fmt.Errorf("x: %w", clienthello.ErrTooLarge), wantAlert: clienthello.AlertIllegalParameter, reason: "bad_hello"},
		{name: "EOF", err: io.EOF, reason: "client_closed"},
		{name: "half", err: fmt.Errorf("x: %w", io.ErrUnexpectedEOF), reason: "client_closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ref := decide(&tt.info, tt.err, tt.def)
			if tt.reason != "" {
				if ref == nil {
					t.Fatalf("served as %q, want refused", d.Name)
				}
				if ref.Reason != tt.reason || ref.Alert != tt.wantAlert {
					t.Errorf("refused: %q alert %v, want %q alert %v", ref.Reason, ref.Alert, tt.reason, tt.wantAlert)
				}
				if tt.err != nil && !errors.Is(ref, tt.err) {
					t.Errorf("refusal %v does not wrap %v", ref, tt.err)
				}
				return
			}
			if ref != nil {
				t.Fatalf("refused: %v", ref)
			}
			if d.Name != tt.wantName || !slices.Equal(d.ALPN, tt.wantALPN) {
				t.Errorf("decision %q %q, want %q %q", d.Name, d.ALPN, tt.wantName, tt.wantALPN)
			}
		})
	}
}

func TestEnviron(t *testing.T) {
	env := Environ([]string{"PATH=/bin", "TLS_SNI=forged.test", "TLS_ALPN=forged", "TLS_SNIX=kept"}, Decision{Name: "a.test", ALPN: []string{"h2", "http/1.1"}})
	want := []string{"PATH=/bin", "TLS_SNIX=kept", "TLS_SNI=a.test", "TLS_ALPN=h2,http/1.1"}
	if !slices.Equal(env, want) {
		t.Errorf("Environ = %q, want %q", env, want)
	}
	env = Environ(nil, Decision{Name: "b.test"})
	if !slices.Equal(env, []string{"TLS_SNI=b.test", "TLS_ALPN="}) {
		t.Errorf("Environ without ALPN = %q", env)
	}
}

// socketFD returns a blocking file descriptor for the server end of a
// fresh loopback TCP connection, as inetd would pass it, and the client.
func socketFD(t *testing.T) (int, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	f, err := server.File() // a blocking duplicate
	server.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd); client.Close() })
	return fd, client
}

func TestCheckSocket(t *testing.T) {
	fd, _ := socketFD(t)
	if err := CheckSocket(fd); err != nil {
		t.Errorf("connected TCP socket: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := CheckSocket(int(r.Fd())); !errors.Is(err, ErrNotSocket) {
		t.Errorf("pipe: %v, want ErrNotSocket", err)
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, _ := ln.File()
	defer lf.Close()
	if err := CheckSocket(int(lf.Fd())); !errors.Is(err, ErrNotSocket) {
		t.Errorf("listening socket: %v, want ErrNotSocket", err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	uf, _ := udp.File()
	defer uf.Close()
	if err := CheckSocket(int(uf.Fd())); !errors.Is(err, ErrNotSocket) {
		t.Errorf("UDP socket: %v, want ErrNotSocket", err)
	}
}

// PeekFD leaves the descriptor as the next program expects it: the hello
// unread, blocking mode.
func TestPeekFD(t *testing.T) {
	fd, client := socketFD(t)
	c := readCapture(t, "openssl-upper.bin")
	client.Write(c)
	d, err := PeekFD(fd, Config{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "openssl-upper.example.test" {
		t.Errorf("Name = %q", d.Name)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_NONBLOCK != 0 {
		t.Errorf("fd flags %#x, %v: want blocking", flags, err)
	}
	got := make([]byte, len(c))
	if _, err := io.ReadFull(fdReader(fd), got); err != nil || !bytes.Equal(got, c) {
		t.Errorf("read after PeekFD: %v, bytes equal %v", err, bytes.Equal(got, c))
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Errorf("fd closed: %v", err)
	}
}

type fdReader int

func (f fdReader) Read(p []byte) (int, error) {
	n, err := unix.Read(int(f), p)
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	return max(n, 0), err
}

func TestPeekFDRefuses(t *testing.T) {
	tests := []struct {
		name   string
		send   []byte
		close  bool
		want   []byte // what the client reads back before EOF
		reason string
	}{
		{"no server name", hello(nil), false, []byte{21, 3, 3, 0, 2, 2, 112}, "no_sni"},
		{"invalid name", hello(ptr("a..b")), false, []byte{21, 3, 3, 0, 2, 2, 112}, "invalid_name"},
		{"not a ClientHello", []byte{22, 3, 1, 0, 6, 2, 0, 0, 2, 3, 3}, false, []byte{21, 3, 3, 0, 2, 2, 10}, "bad_hello"},
		{"malformed", []byte{22, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3}, false, []byte{21, 3, 3, 0, 2, 2, 50}, "bad_hello"},
		{"HTTP", []byte("GET / HTTP/1.1\r\n\r\n"), false, nil, "not_tls"},
		// As snilisten and TLS servers: a timeout closes without an alert.
		{"timeout", hello(nil)[:20], false, nil, "peek_timeout"},
		{"half then close", hello(nil)[:20], true, nil, "client_closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, client := socketFD(t)
			client.Write(tt.send)
			if tt.close {
				client.CloseWrite()
			}
			// The client reads until the server half-closes, then closes,
			// as a TLS client does after an alert.
			type result struct {
				got []byte
				err error
			}
			read := make(chan result, 1)
			go func() {
				client.SetReadDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(client)
				client.Close()
				read <- result{got, err}
			}()
			var logBuf bytes.Buffer
			_, err := PeekFD(fd, Config{Timeout: 200 * time.Millisecond, Log: slog.New(slog.NewTextHandler(&logBuf, nil))})
			var ref *Refusal
			if !errors.As(err, &ref) || ref.Reason != tt.reason {
				t.Fatalf("err = %v, want refusal %q", err, tt.reason)
			}
			if n := strings.Count(logBuf.String(), "\n"); n != 1 || !strings.Contains(logBuf.String(), "reason=\""+tt.reason+"\"") && !strings.Contains(logBuf.String(), "reason="+tt.reason) {
				t.Errorf("log: %q: want one line with the reason", logBuf.String())
			}
			unix.Close(fd) // as the exiting process would
			r := <-read
			if r.err != nil {
				t.Fatalf("client read: %v (want the alert, then EOF)", r.err)
			}
			if !bytes.Equal(r.got, tt.want) {
				t.Errorf("client got % x, want % x", r.got, tt.want)
			}
		})
	}
}
