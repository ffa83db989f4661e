package handoff

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

// FuzzUnmarshal checks the handoff message parser on any bytes a sender
// could put in a message: no panic, errors wrap ErrMessage, and whatever
// it accepts marshals back to the bytes it read (so no two readings of
// one message exist), but for the reserved second byte and anything after
// the message, which are ignored.
func FuzzUnmarshal(f *testing.F) {
	for _, m := range []Message{
		{SNI: "a.example.test"},
		{SNI: "a.example.test", Client: netip.MustParseAddrPort("192.0.2.1:4000")},
		{SNI: "a.example.test", Client: netip.MustParseAddrPort("[2001:db8::1]:443")},
		{},
	} {
		b, err := m.marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{Version, 0, 0, 0, 6})
	f.Add([]byte{Version, 0, 0xff, 0xff, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := unmarshal(b)
		if err != nil {
			if !errors.Is(err, ErrMessage) {
				t.Fatalf("error %v does not wrap ErrMessage", err)
			}
			return
		}
		again, err := m.marshal()
		if err != nil {
			t.Fatalf("%+v from %x does not marshal: %v", m, b, err)
		}
		if m.Client.IsValid() && m.Client.Addr().Is4In6() {
			return // an IPv4-mapped address is sent as IPv4
		}
		if b[0] != again[0] || !bytes.Equal(b[2:len(again)], again[2:]) {
			t.Fatalf("%x read as %+v, which marshals as %x", b, m, again)
		}
	})
}
