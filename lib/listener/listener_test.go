package listener

import (
	"net"
	"strings"
	"testing"
)

// TestCheckSpec: every kind of spec, well and badly formed.
func TestCheckSpec(t *testing.T) {
	for _, tc := range []struct{ spec, err string }{
		{"tcp:443", ""},
		{"tcp:[2001:db8::1]:443", ""},
		{"udp:443", ""},
		{"udp:192.0.2.1:443", ""},
		{"unix:/run/x", ""},
		{"fd:https", ""},
		{"udp:x:443", `address "x" is not an IP address`},
		{"udp:65536", `port "65536" is not a number from 0 to 65535`},
		{"sctp:443", "want tcp:PORT, tcp:ADDR:PORT, udp:PORT, udp:ADDR:PORT, unix:PATH or fd:NAME"},
		{"fd:", "empty name"},
	} {
		err := CheckSpec(tc.spec)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("CheckSpec(%q) = %v, want %q", tc.spec, err, tc.err)
		}
	}
}

// TestOpenAll opens stream and UDP specs together, and Open refuses the
// UDP ones for a command that serves streams only.
func TestOpenAll(t *testing.T) {
	s, err := OpenAll([]string{"tcp:127.0.0.1:0", "udp:127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Streams) != 1 || len(s.Datagrams) != 1 {
		t.Fatalf("got %d streams and %d UDP sockets, want 1 and 1", len(s.Streams), len(s.Datagrams))
	}
	if _, ok := s.Datagrams[0].LocalAddr().(*net.UDPAddr); !ok {
		t.Errorf("UDP socket at %v", s.Datagrams[0].LocalAddr())
	}
	if _, err := Open([]string{"udp:127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "serves streams only") {
		t.Errorf("Open(udp:) = %v, want a refusal", err)
	}
}
