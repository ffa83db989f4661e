package logging

import (
	"net"
	"strings"
	"testing"
)

// TestAddrAndTruncate: the helpers snilisten and snipeek share for their
// log lines.
func TestAddrAndTruncate(t *testing.T) {
	if got := Addr(nil); got != "" {
		t.Errorf("Addr(nil) = %q, want \"\"", got)
	}
	if got := Addr(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 443}); got != "192.0.2.1:443" {
		t.Errorf("Addr(192.0.2.1:443) = %q", got)
	}
	long := strings.Repeat("a", 300)
	for _, tt := range []struct {
		in   string
		want string
	}{
		{"", ""},
		{"example.com", "example.com"},
		{long[:255], long[:255]},
		{long, long[:255] + "..."},
	} {
		if got := Truncate(tt.in, 255); got != tt.want {
			t.Errorf("Truncate(%d bytes, 255) = %d bytes %q..., want %d bytes", len(tt.in), len(got), got[:min(len(got), 8)], len(tt.want))
		}
	}
}
