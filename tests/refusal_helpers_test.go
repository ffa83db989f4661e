package tests

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// tlsAnswer is what a TLS client reads from a server after sending it a
// ClientHello: the first record's kind, and how the connection ended.
type tlsAnswer struct {
	// Kind is "alert N" (a fatal or warning alert, N its description),
	// "handshake" (the server answered with a handshake record: it took
	// the hello), "close" (nothing, then end of stream), "reset"
	// (nothing, then ECONNRESET), "timeout" (nothing within the wait) or
	// "other" (some other record or bytes).
	Kind string
	// End says how the stream ended after an alert: "eof" (the client
	// can read the alert and then sees a clean close), "reset" or
	// "timeout"; "" for other kinds.
	End string
}

func (a tlsAnswer) String() string {
	if a.End == "" {
		return a.Kind
	}
	return a.Kind + " then " + a.End
}

// probeTLS sends payload to addr as a TLS client would, without
// half-closing (a real client keeps its side open and waits for an
// answer), and reads what comes back.
func probeTLS(addr string, payload []byte, wait time.Duration) (tlsAnswer, error) {
	network := "tcp"
	if filepath.IsAbs(addr) {
		network = "unix"
	}
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return tlsAnswer{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	go c.Write(payload) // a server may answer, and close, before reading it all
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if len(got) >= 5 {
			switch typ, n := got[0], int(binary.BigEndian.Uint16(got[3:5])); {
			case typ == 22:
				return tlsAnswer{Kind: "handshake"}, nil
			case typ == 21 && n == 2 && len(got) >= 7:
				a := tlsAnswer{Kind: fmt.Sprintf("alert %d", got[6])}
				if len(got) > 7 {
					a.End = fmt.Sprintf("%d more bytes", len(got)-7)
					return a, nil
				}
				if err == nil {
					_, err = io.ReadAll(c)
					if err == nil {
						err = io.EOF
					}
				}
				a.End = endOf(err)
				return a, nil
			case typ != 21:
				return tlsAnswer{Kind: fmt.Sprintf("other %x", got[:min(len(got), 8)])}, nil
			}
		}
		if err != nil {
			if len(got) > 0 {
				return tlsAnswer{Kind: fmt.Sprintf("other %x", got[:min(len(got), 8)]), End: endOf(err)}, nil
			}
			if k := endOf(err); k != "eof" {
				return tlsAnswer{Kind: k}, nil
			}
			return tlsAnswer{Kind: "close"}, nil
		}
	}
}

func endOf(err error) string {
	var ne net.Error
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return "eof"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}

// opensslServer runs openssl s_server with the test certificate on
// addr: a TCP address ("127.0.0.1:PORT") or a UNIX socket path. It
// answers one connection at a time, which suits probes sent one after
// another.
func opensslServer(t testing.TB, addr string) *Proc {
	t.Helper()
	pki := testPKI(t)
	args := []string{"s_server", "-cert", pki.CertFile, "-key", pki.KeyFile, "-www"}
	if filepath.IsAbs(addr) {
		args = append(args, "-unix", addr)
	} else {
		args = append(args, "-accept", addr)
	}
	p := start(t, exec.Command("openssl", args...))
	waitFor(t, 10*time.Second, "openssl s_server on "+addr, func() bool {
		if filepath.IsAbs(addr) {
			_, err := os.Stat(addr)
			return err == nil || p.Exited()
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil || p.Exited()
	})
	if p.Exited() {
		t.Fatalf("openssl s_server on %s exited: %s", addr, p.Output())
	}
	return p
}

// shortSocketDir is socketDir with a path short enough for openssl
// s_server -unix, which fails ("addr_strings: Unknown error") for socket
// paths of 32 bytes or more.
func shortSocketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "r")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// captureMessage returns the handshake message of a ClientHello captured in
// one record (lib/clienthello/testdata/captures).
func captureMessage(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "lib", "clienthello", "testdata", "captures", file))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 9 || b[0] != 22 || int(binary.BigEndian.Uint16(b[3:5])) != len(b)-5 {
		t.Fatalf("%s: not a ClientHello in one record", file)
	}
	return b[5:]
}

// withExtensions returns the ClientHello message msg with extra
// extensions appended to its own (before pre_shared_key, which must stay
// last) and its lengths fixed. The extensions block holds at most 64 KiB:
// a caller that wants a larger hello splits the bytes over several
// extensions.
func withExtensions(t testing.TB, msg []byte, extra []helloExt) []byte {
	t.Helper()
	body := msg[4:]
	// legacy_version, random, session_id, cipher_suites, compression
	off := 2 + 32
	off += 1 + int(body[off])
	off += 2 + int(binary.BigEndian.Uint16(body[off:]))
	off += 1 + int(body[off])
	extLen := int(binary.BigEndian.Uint16(body[off:]))
	exts := body[off+2 : off+2+extLen]
	var out []byte
	var psk []byte
	for e := exts; len(e) >= 4; {
		n := 4 + int(binary.BigEndian.Uint16(e[2:4]))
		if binary.BigEndian.Uint16(e) == 41 {
			psk = e[:n]
		} else {
			out = append(out, e[:n]...)
		}
		e = e[n:]
	}
	for _, x := range extra {
		out = binary.BigEndian.AppendUint16(out, x.typ)
		out = binary.BigEndian.AppendUint16(out, uint16(len(x.body)))
		out = append(out, x.body...)
	}
	out = append(out, psk...)
	if len(out) > 0xffff {
		t.Fatalf("extensions block of %d bytes does not fit its 16-bit length", len(out))
	}
	nb := append([]byte(nil), body[:off]...)
	nb = binary.BigEndian.AppendUint16(nb, uint16(len(out)))
	nb = append(nb, out...)
	return append([]byte{1, byte(len(nb) >> 16), byte(len(nb) >> 8), byte(len(nb))}, nb...)
}

// sslv2Hello is an SSLv2-compatible ClientHello (RFC 5246, appendix
// E.2) offering TLS up to version and the cipher suites given (each
// sent as a 3-byte SSLv2 cipher spec 0x00XXXX), with a 32-byte challenge.
func sslv2Hello(version uint16, suites ...uint16) []byte {
	var specs []byte
	for _, s := range suites {
		specs = append(specs, 0, byte(s>>8), byte(s))
	}
	body := []byte{1, byte(version >> 8), byte(version)}
	body = binary.BigEndian.AppendUint16(body, uint16(len(specs)))
	body = binary.BigEndian.AppendUint16(body, 0)  // session id
	body = binary.BigEndian.AppendUint16(body, 32) // challenge
	body = append(body, specs...)
	for i := range 32 {
		body = append(body, byte(i))
	}
	return append([]byte{0x80 | byte(len(body)>>8), byte(len(body))}, body...)
}

// kib formats n bytes in KiB for figures.
func kib(n int) string { return strconv.FormatFloat(float64(n)/1024, 'f', 1, 64) + " KiB" }

// filterExtensions returns the ClientHello message msg with only the
// extensions keep says yes to.
func filterExtensions(t testing.TB, msg []byte, keep func(typ uint16) bool) []byte {
	t.Helper()
	body := msg[4:]
	off := 2 + 32
	off += 1 + int(body[off])
	off += 2 + int(binary.BigEndian.Uint16(body[off:]))
	off += 1 + int(body[off])
	extLen := int(binary.BigEndian.Uint16(body[off:]))
	var out []byte
	for e := body[off+2 : off+2+extLen]; len(e) >= 4; {
		n := 4 + int(binary.BigEndian.Uint16(e[2:4]))
		if keep(binary.BigEndian.Uint16(e)) {
			out = append(out, e[:n]...)
		}
		e = e[n:]
	}
	nb := append([]byte(nil), body[:off]...)
	nb = binary.BigEndian.AppendUint16(nb, uint16(len(out)))
	nb = append(nb, out...)
	return append([]byte{1, byte(len(nb) >> 16), byte(len(nb) >> 8), byte(len(nb))}, nb...)
}

// withSuites returns the ClientHello message msg with n more cipher
// suites offered after its own, all the GREASE value 0x0a0a, which a
// server ignores: with the extensions, the cipher suite list is the other
// field that can make a hello larger than 64 KiB.
func withSuites(t testing.TB, msg []byte, n int) []byte {
	t.Helper()
	body := msg[4:]
	off := 2 + 32
	off += 1 + int(body[off])
	suites := int(binary.BigEndian.Uint16(body[off:]))
	if suites+2*n > 0xfffe {
		t.Fatalf("%d cipher suites do not fit their 16-bit length", suites/2+n)
	}
	nb := append([]byte(nil), body[:off]...)
	nb = binary.BigEndian.AppendUint16(nb, uint16(suites+2*n))
	nb = append(nb, body[off+2:off+2+suites]...)
	for range n {
		nb = append(nb, 0x0a, 0x0a)
	}
	nb = append(nb, body[off+2+suites:]...)
	return append([]byte{1, byte(len(nb) >> 16), byte(len(nb) >> 8), byte(len(nb))}, nb...)
}
