package clienthello

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snitools/snitools/lib/sockpeek"
)

// TestPeekVerdict is the one mapping from what a peek found to the outcome
// logged and the alert sent, shared by snilisten and snipeek; the alerts
// are those openssl s_server sends for the same bytes (tests/refusal_test.go
// compares them on the wire).
func TestPeekVerdict(t *testing.T) {
	for _, tt := range []struct {
		name  string
		in    []byte // parsed for the error, unless err is set
		err   error
		want  Verdict
		alert string
	}{
		{name: "whole hello", in: hello(ext{extServerName, sni(0, "a.test")}), want: Verdict{OutcomeOK, 0}},
		{name: "ServerHello", in: record([]byte{2, 0, 0, 0}), want: Verdict{OutcomeBadHello, AlertUnexpectedMessage}, alert: "unexpected_message"},
		{name: "ChangeCipherSpec first", in: []byte{20, 3, 3, 0, 1, 1}, want: Verdict{OutcomeBadHello, AlertUnexpectedMessage}},
		{name: "application data inside", in: func() []byte {
			b, _ := frame(helloMessage(), func() int { return 10 })
			return append(b[:15:15], 23, 3, 3, 0, 1, 0)
		}(), want: Verdict{OutcomeBadHello, AlertUnexpectedMessage}},
		{name: "alert first", in: []byte{21, 3, 3, 0, 2, 2, 40}, want: Verdict{OutcomeBadHello, AlertUnexpectedMessage}},
		{name: "record over 2^14", in: []byte{22, 3, 1, 0x40, 0x01}, want: Verdict{OutcomeBadHello, AlertRecordOverflow}, alert: "record_overflow"},
		{name: "over the limit", in: record([]byte{1, 0x02, 0x10, 0x00}), want: Verdict{OutcomeBadHello, AlertIllegalParameter}, alert: "illegal_parameter"},
		{name: "malformed", in: hello(ext{extALPN, alpn()}), want: Verdict{OutcomeBadHello, AlertDecodeError}, alert: "decode_error"},
		{name: "HTTP", in: []byte("GET / HTTP/1.1\r\n"), want: Verdict{OutcomeNotTLS, 0}},
		{name: "true SSLv2", in: []byte{0x80, 0x2e, 0x01, 0x00, 0x02}, want: Verdict{OutcomeNotTLS, 0}},
		{name: "timeout", err: fmt.Errorf("peek: %w", os.ErrDeadlineExceeded), want: Verdict{OutcomePeekTimeout, 0}},
		{name: "budget", err: fmt.Errorf("x: %w", sockpeek.ErrBudget), want: Verdict{OutcomePeekBudget, AlertInternalError}, alert: "internal_error"},
		{name: "closed", err: io.ErrUnexpectedEOF, want: Verdict{OutcomeClientClosed, 0}},
		{name: "silent", err: io.EOF, want: Verdict{OutcomeClientClosed, 0}},
		{name: "reset", err: fmt.Errorf("peek: %w", syscall.ECONNRESET), want: Verdict{OutcomeClientClosed, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err
			if err == nil {
				_, err = Parse(tt.in)
			}
			if got := PeekVerdict(err); got != tt.want {
				t.Errorf("PeekVerdict(%v) = %+v, want %+v", err, got, tt.want)
			}
			if tt.alert != "" && tt.want.Alert.String() != tt.alert {
				t.Errorf("alert %d is named %q, want %q", tt.want.Alert, tt.want.Alert, tt.alert)
			}
		})
	}
}

// TestRoute: which name a parsed hello is routed by, per case of server
// name, with and without a default host name.
func TestRoute(t *testing.T) {
	v2, err := Parse([]byte{0x80, 0x1c, 1, 3, 3, 0, 3, 0, 0, 0, 16, 0, 0xc0, 0x2b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	if err != nil || !v2.SSLv2 {
		t.Fatalf("SSLv2-compatible hello: %+v, %v", v2, err)
	}
	for _, tt := range []struct {
		name string
		info Info
		def  string
		want string // the name routed by, or the refusal's outcome
	}{
		{"valid", parsed(t, "WWW.Example.TEST."), "", "www.example.test"},
		{"valid, default", parsed(t, "a.test"), "d.test", "a.test"},
		{"underscore (a valid name)", parsed(t, "a_b.example"), "d.test", "a_b.example"},
		{"absent", parsed(t, ""), "", "refused no_sni"},
		{"absent, default", parsed(t, ""), "d.test", "d.test"},
		{"empty", parsedEmpty(t), "", "refused no_sni"},
		{"empty, default", parsedEmpty(t), "d.test", "d.test"},
		{"SSLv2", v2, "", "refused no_sni"},
		{"SSLv2, default", v2, "d.test", "d.test"},
		{"traversal", parsed(t, "../../etc/passwd"), "", "refused invalid_name"},
		{"traversal, default", parsed(t, "../../etc/passwd"), "d.test", "d.test"},
		{"IP literal, default", parsed(t, "127.0.0.1"), "d.test", "d.test"},
		{"NUL, default", parsed(t, "a.test\x00.evil"), "d.test", "refused invalid_name"},
		{"255 bytes, default", parsed(t, strings.Repeat("a.", 127)+"a"), "d.test", "d.test"},
		{"256 bytes, default", parsed(t, strings.Repeat("a", 256)), "d.test", "refused invalid_name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name, v, err := Route(&tt.info, tt.def)
			got := name
			if err != nil {
				got = "refused " + v.Outcome
				if v.Alert != AlertUnrecognizedName || name != "" {
					t.Errorf("refusal %+v, name %q; want unrecognized_name and no name", v, name)
				}
			} else if v.Outcome != OutcomeOK {
				t.Errorf("routed with verdict %+v", v)
			}
			if got != tt.want {
				t.Errorf("Route = %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

func parsed(t *testing.T, name string) Info {
	t.Helper()
	var exts []ext
	if name != "" {
		exts = append(exts, ext{extServerName, sni(0, name)})
	}
	info, err := Parse(hello(exts...))
	if err != nil {
		t.Fatalf("hello with %q: %v", name, err)
	}
	return info
}

func parsedEmpty(t *testing.T) Info {
	t.Helper()
	info, err := Parse(hello(ext{extServerName, sni(0, "")}))
	if err != nil || !info.HasServerName() || info.ServerName() != "" {
		t.Fatalf("empty host name: has %v %q, %v; want an empty name", info.HasServerName(), info.ServerName(), err)
	}
	return info
}

func TestParseSSLv2(t *testing.T) {
	// An SSLv2-compatible hello offering TLS 1.2, two TLS suites and an
	// SSLv2 one, a 32-byte challenge.
	b := []byte{0x80, 0x32, 1, 3, 3, 0, 9, 0, 0, 0, 32, 0, 0xc0, 0x2b, 0x07, 0x00, 0xc0, 0, 0, 0x2f}
	b = append(b, make([]byte, 32)...)
	info, err := Parse(b)
	if err != nil || !info.SSLv2 || info.Length != len(b) || info.LegacyVersion != 0x0303 || info.HasServerName() {
		t.Fatalf("Parse = %+v, %v", info, err)
	}
	if got := info.CipherSuites(); len(got) != 2 || got[0] != 0xc02b || got[1] != 0x002f {
		t.Errorf("CipherSuites = %#04x, want the TLS ones", got)
	}
	if _, err := Parse(b[:20]); !errors.Is(err, ErrIncomplete) {
		t.Errorf("truncated: %v, want ErrIncomplete", err)
	}
	for name, bad := range map[string][]byte{
		"no cipher specs":  {0x80, 0x29, 1, 3, 3, 0, 0, 0, 0, 0, 32},
		"short challenge":  {0x80, 0x10, 1, 3, 3, 0, 3, 0, 0, 0, 4, 0, 0xc0, 0x2b, 1, 2, 3, 4},
		"lengths disagree": {0x80, 0x0d, 1, 3, 3, 0, 3, 0, 0, 0, 16, 0, 0xc0, 0x2b, 1},
	} {
		if len(bad) < 2+int(bad[1]) {
			bad = append(bad, make([]byte, 2+int(bad[1])-len(bad))...)
		}
		if _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// TestRefuseDrains: a client refused while it is still sending a large
// hello reads the alert and then a clean end of stream, not a reset.
func TestRefuseDrains(t *testing.T) {
	server, client := tcpPair(t)
	big := append([]byte{22, 3, 1, 0x40, 0x01}, make([]byte, 0x4001)...) // a record over 2^14
	big = append(big, make([]byte, 100<<10)...)                          // and more on the way
	go client.Write(big)
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, buf, err := Peek(server, nil, DefaultLimit)
	v := PeekVerdict(err)
	if v.Alert != AlertRecordOverflow {
		t.Fatalf("Peek: %v, verdict %+v", err, v)
	}
	done := make(chan struct{})
	go func() {
		Refuse(server, len(buf), v.Alert)
		server.Close()
		close(done)
	}()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, []byte{21, 3, 3, 0, 2, 2, 22}) {
		t.Errorf("client read % x, %v; want the record_overflow alert, then EOF", got, err)
	}
	client.Close()
	<-done
}
