package clienthello

import (
	"errors"
	"testing"
)

// TestPeekWaitsWithoutReparsing feeds Peek's parser a hello in one-byte
// records as it would arrive a few bytes at a time: it must parse in full
// once, when the last record is in, not at every arrival (which made a
// 16 KiB hello trickled by an attacker cost a third of a second of CPU),
// and must agree with ParseLimit on every prefix.
func TestPeekWaitsWithoutReparsing(t *testing.T) {
	msg := helloMessage(ext{extServerName, sni(0, "a.example.test")}, ext{21, make([]byte, 16<<10)})
	wire, _ := frame(msg, func() int { return 1 })
	h := &helloPeek{limit: DefaultLimit}
	for n := 1; n <= len(wire); n += 7 {
		done := h.enough(wire[:n])
		_, err := ParseLimit(wire[:n], DefaultLimit)
		if done == errors.Is(err, ErrIncomplete) {
			t.Fatalf("after %d of %d bytes: enough %v, ParseLimit says %v", n, len(wire), done, err)
		}
	}
	if !h.enough(wire) || h.parsed != nil || h.info.ServerName() != "a.example.test" {
		t.Fatalf("whole hello: %v, %q", h.parsed, h.info.ServerName())
	}
	if h.parses > 8 {
		t.Errorf("%d full parses for a hello arriving in %d pieces", h.parses, len(wire)/7)
	}

	// Whatever is wrong is still found as soon as it arrives.
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"too large", []byte{22, 3, 1, 0, 4, 1, 2, 0x10, 0}, ErrTooLarge},
		{"not a hello", []byte{22, 3, 1, 0, 4, 2, 0, 0, 10}, ErrMalformed},
		{"a record of another type", append(wire[:len(wire)/2:len(wire)/2], 23, 3, 3, 0, 1), ErrMalformed},
		{"too many empty records", append(wire[:30:30], []byte{22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0, 22, 3, 1, 0, 0}...), ErrMalformed},
	} {
		h := &helloPeek{limit: DefaultLimit}
		h.enough(tc.in[:len(tc.in)/2])
		if !h.enough(tc.in) || !errors.Is(h.parsed, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, h.parsed, tc.want)
		}
	}
}
