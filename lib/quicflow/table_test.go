package quicflow

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/snitools/snitools/lib/quic"
	"github.com/snitools/snitools/lib/quic/quictest"
)

// The tests replay the Initial datagrams real quic-go clients sent
// (lib/quic/testdata, see its README) with a fake clock: t0 and offsets
// from it.
var t0 = time.Unix(1_800_000_000, 0)

type capture struct {
	file, serverName string
	alpn             []string
	datagrams        [][]byte
}

// loadCaptures reads lib/quic/testdata/manifest.tsv and the captures it
// names (quictest).
func loadCaptures(tb testing.TB) []capture {
	tb.Helper()
	var caps []capture
	for _, c := range quictest.Captures(tb) {
		caps = append(caps, capture{file: c.File, serverName: c.ServerName, alpn: c.ALPN, datagrams: c.Datagrams})
	}
	return caps
}

// twoDatagrams returns the v1 capture whose hello spans two datagrams.
func twoDatagrams(tb testing.TB) capture {
	for _, c := range loadCaptures(tb) {
		if c.file == "quicgo-v1-h3.hex" {
			return c
		}
	}
	tb.Fatal("quicgo-v1-h3.hex not in the manifest")
	return capture{}
}

func addr(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func wantVerdict(t *testing.T, r Result, v Verdict, what string) {
	t.Helper()
	if r.Verdict != v {
		t.Fatalf("%s: verdict %v (%v), want %v", what, r.Verdict, r.Err, v)
	}
}

func wantStats(t *testing.T, tb *Table, want Stats, what string) {
	t.Helper()
	if got := tb.Stats(); got != want {
		t.Fatalf("%s: stats %+v, want %+v", what, got, want)
	}
}

// TestCapturesRoute: a hello in one or two datagrams, in the order sent
// and reversed, routes once, with every datagram held and handed over in
// the order received; the datagrams that come before Routed are held and
// returned by it; then the flow's datagrams, whatever they hold, are
// forwarded to the backend given.
func TestCapturesRoute(t *testing.T) {
	for _, c := range loadCaptures(t) {
		for _, reversed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/reversed=%v", c.file, reversed), func(t *testing.T) {
				ds := slices.Clone(c.datagrams)
				if reversed {
					slices.Reverse(ds)
				}
				tb := New(Config{})
				from := addr("192.0.2.1:4433")
				var r Result
				for i, d := range ds {
					buf := slices.Clone(d)
					r = tb.Handle(t0.Add(time.Duration(i)*time.Millisecond), from, buf)
					clear(buf) // the table must have copied what it holds
					if i < len(ds)-1 {
						wantVerdict(t, r, Wait, fmt.Sprintf("datagram %d", i))
					}
				}
				wantVerdict(t, r, Route, "last datagram")
				if r.ServerName != c.serverName || !slices.Equal(r.ALPN, c.alpn) {
					t.Errorf("routed by %q %q, want %q %q", r.ServerName, r.ALPN, c.serverName, c.alpn)
				}
				if !slices.EqualFunc(r.Datagrams, ds, bytes.Equal) {
					t.Errorf("Route gave %d datagrams, not the %d received in order", len(r.Datagrams), len(ds))
				}
				if !r.First.Equal(t0) {
					t.Errorf("Route says the first datagram came at %v, want %v", r.First, t0)
				}
				// A retransmission before the backend is known: held.
				wantVerdict(t, tb.Handle(t0.Add(time.Second), from, ds[0]), Wait, "datagram before Routed")
				late, err := tb.Routed(t0.Add(time.Second), from, "backend-1")
				if err != nil {
					t.Fatal(err)
				}
				if len(late) != 1 || !bytes.Equal(late[0], ds[0]) {
					t.Errorf("Routed returned %d datagrams, want the 1 sent after Route", len(late))
				}
				wantStats(t, tb, Stats{Routed: 1, Clients: 1}, "after Routed")
				for _, d := range [][]byte{{0x40, 1, 2, 3}, ds[0]} {
					r := tb.Handle(t0.Add(2*time.Second), from, d)
					wantVerdict(t, r, Forward, "datagram after Routed")
					if r.Backend != "backend-1" {
						t.Errorf("forwarded to %v, want backend-1", r.Backend)
					}
				}
				if _, err := tb.Routed(t0, from, "again"); !errors.Is(err, ErrNoFlow) {
					t.Errorf("Routed twice: %v, want ErrNoFlow", err)
				}
			})
		}
	}
}

// TestDropWithoutState: what does not start a QUIC connection is dropped
// for an unknown client without creating a flow.
func TestDropWithoutState(t *testing.T) {
	d := twoDatagrams(t).datagrams[0]
	set := func(f func(b []byte)) []byte { b := slices.Clone(d); f(b); return b }
	for _, tc := range []struct {
		name     string
		datagram []byte
		want     error
	}{
		{"garbage", bytes.Repeat([]byte{0xde, 0xad}, 700), quic.ErrUnknownVersion},
		{"empty", nil, quic.ErrNotInitial},
		{"unknown version", set(func(b []byte) { copy(b[1:5], []byte{0x1a, 0x2a, 0x3a, 0x4a}) }), quic.ErrUnknownVersion},
		{"short header", set(func(b []byte) { b[0] = 0x40 }), quic.ErrNotInitial},
		{"Handshake packet", set(func(b []byte) { b[0] = b[0]&^0x30 | 0x20 }), quic.ErrNotInitial},
		{"small datagram", d[:1000], quic.ErrNotInitial},
		{"truncated header", set(func(b []byte) { b[5] = 200 }), quic.ErrMalformed},
		{"does not decrypt", set(func(b []byte) { b[len(b)-1] ^= 1 }), quic.ErrDecrypt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := New(Config{})
			r := tb.Handle(t0, addr("192.0.2.1:1"), tc.datagram)
			wantVerdict(t, r, Drop, tc.name)
			if !errors.Is(r.Err, tc.want) {
				t.Errorf("dropped for %v, want %v", r.Err, tc.want)
			}
			if s := tb.Stats(); s.Pending != 0 || s.Routed != 0 || s.HeldBytes != 0 || len(tb.flows) != 0 {
				t.Errorf("state after the drop: %+v, %d flows", s, len(tb.flows))
			}
		})
	}
}

// TestPendingDrops: in a pending flow a datagram of another connection or
// that does not decrypt is dropped and not held, and the flow goes on; an
// exact duplicate is not held twice.
func TestPendingDrops(t *testing.T) {
	c := twoDatagrams(t)
	other := loadCaptures(t)[1] // another connection ID
	tb := New(Config{})
	from := addr("192.0.2.1:1")
	wantVerdict(t, tb.Handle(t0, from, c.datagrams[0]), Wait, "first datagram")
	bad := slices.Clone(c.datagrams[1])
	bad[len(bad)-1] ^= 1
	for _, d := range [][]byte{other.datagrams[0], bad, c.datagrams[0]} {
		wantVerdict(t, tb.Handle(t0, from, d), Drop, "datagram not held")
	}
	r := tb.Handle(t0, from, c.datagrams[1])
	wantVerdict(t, r, Route, "second datagram")
	if !slices.EqualFunc(r.Datagrams, c.datagrams, bytes.Equal) {
		t.Errorf("Route gave %d datagrams, want the capture's %d", len(r.Datagrams), len(c.datagrams))
	}
}

// TestRateLimitPerPrefix: a flood of Initials from many ports of one
// client prefix (an IPv4 address, an IPv6 /64) starts flows at the
// token bucket's rate; other prefixes still get in.
func TestRateLimitPerPrefix(t *testing.T) {
	d := twoDatagrams(t).datagrams[0]
	tb := New(Config{NewFlowsPerSecond: 10, NewFlowBurst: 5, MaxPending: -1, MaxHeldBytes: -1})
	port := 1024
	flood := func(now time.Time, prefix string) (started int) {
		for range 1000 {
			port++ // each a new flow
			r := tb.Handle(now, addr(fmt.Sprintf("%s:%d", prefix, port)), d)
			switch {
			case r.Verdict == Wait:
				started++
			case !errors.Is(r.Err, ErrRate):
				t.Fatalf("port %d: %v (%v), want Wait or ErrRate", port, r.Verdict, r.Err)
			}
		}
		return started
	}
	for _, step := range []struct {
		at     time.Duration
		prefix string
		want   int
	}{
		{0, "192.0.2.1", 5},                      // the burst
		{0, "[2001:db8:1:2::1]", 5},              // another prefix: its own burst
		{0, "[2001:db8:1:2:ffff::9]", 0},         // same /64: spent
		{0, "198.51.100.7", 5},                   // another client still gets in
		{100 * time.Millisecond, "192.0.2.1", 1}, // 10 a second
		{10 * time.Second, "192.0.2.1", 5},       // refilled to the burst, no more
		{10 * time.Second, "[2001:db8:1:3::1]", 5},
	} {
		if got := flood(t0.Add(step.at), step.prefix); got != step.want {
			t.Errorf("at %v, 1000 Initials from %s started %d flows, want %d", step.at, step.prefix, got, step.want)
		}
	}
	if s := tb.Stats(); s.Pending != 26 || s.Clients != 4 {
		t.Errorf("stats %+v, want 26 pending flows of 4 prefixes", s)
	}
}

// TestClientsBounded: the token buckets are bounded, the least recently
// used evicted; Expire forgets those that refilled.
func TestClientsBounded(t *testing.T) {
	d := twoDatagrams(t).datagrams[0]
	tb := New(Config{MaxClients: 3, NewFlowsPerSecond: 1, NewFlowBurst: 1})
	for i := range 10 {
		tb.Handle(t0, addr(fmt.Sprintf("192.0.2.%d:1", i)), d)
		if n := tb.Stats().Clients; n > 3 {
			t.Fatalf("%d buckets after %d prefixes, limit 3", n, i+1)
		}
	}
	tb.Expire(t0.Add(500*time.Millisecond), nil)
	if n := tb.Stats().Clients; n != 3 {
		t.Errorf("%d buckets before they refilled, want 3", n)
	}
	tb.Expire(t0.Add(time.Second), nil)
	if n := tb.Stats().Clients; n != 0 {
		t.Errorf("%d buckets after they refilled, want 0", n)
	}
}

// TestByteBudget: once the held bytes reach MaxHeldBytes new flows are
// refused, while the flows already pending finish their hello; routing
// them frees the budget.
func TestByteBudget(t *testing.T) {
	c := twoDatagrams(t)
	tb := New(Config{MaxHeldBytes: 3 * ReservedDatagrams * quic.MaxDatagramSize})
	for port := range 3 {
		wantVerdict(t, tb.Handle(t0, addr(fmt.Sprintf("192.0.2.1:%d", port)), c.datagrams[0]), Wait, "flow within the budget")
	}
	for port := 3; port < 100; port++ {
		r := tb.Handle(t0, addr(fmt.Sprintf("198.51.100.%d:%d", port, port)), c.datagrams[0])
		if !errors.Is(r.Err, ErrBudget) {
			t.Fatalf("new flow %d with the budget spent: %v (%v), want ErrBudget", port, r.Verdict, r.Err)
		}
	}
	wantStats(t, tb, Stats{Pending: 3, HeldBytes: 3 * ReservedDatagrams * quic.MaxDatagramSize, Clients: 1}, "budget spent")
	for port := range 3 {
		from := addr(fmt.Sprintf("192.0.2.1:%d", port))
		r := tb.Handle(t0, from, c.datagrams[1])
		wantVerdict(t, r, Route, "old flow with the budget spent")
		if r.ServerName != c.serverName {
			t.Errorf("routed by %q, want %q", r.ServerName, c.serverName)
		}
		if _, err := tb.Routed(t0, from, port); err != nil {
			t.Fatal(err)
		}
	}
	wantStats(t, tb, Stats{Routed: 3, Clients: 1}, "all routed")
	wantVerdict(t, tb.Handle(t0, addr("198.51.100.1:1"), c.datagrams[0]), Wait, "new flow with the budget free")
}

// TestMaxPending and MaxRouted refuse flows beyond them.
func TestMaxPendingRouted(t *testing.T) {
	c := twoDatagrams(t)
	tb := New(Config{MaxPending: 2, MaxRouted: 1})
	a, b, x := addr("192.0.2.1:1"), addr("192.0.2.2:1"), addr("192.0.2.3:1")
	wantVerdict(t, tb.Handle(t0, a, c.datagrams[0]), Wait, "flow 1")
	wantVerdict(t, tb.Handle(t0, b, c.datagrams[0]), Wait, "flow 2")
	if r := tb.Handle(t0, x, c.datagrams[0]); !errors.Is(r.Err, ErrPendingFull) {
		t.Errorf("flow 3: %v (%v), want ErrPendingFull", r.Verdict, r.Err)
	}
	wantVerdict(t, tb.Handle(t0, a, c.datagrams[1]), Route, "flow 1 hello")
	if r := tb.Handle(t0, b, c.datagrams[1]); !errors.Is(r.Err, ErrRoutedFull) {
		t.Errorf("flow 2 hello: %v (%v), want ErrRoutedFull", r.Verdict, r.Err)
	}
	// Flow 1 waits for its backend: charged its two datagrams, no
	// longer a reservation, and out of the MaxPending slots, so that a
	// new flow may start while its backend is found (a slow DNS answer
	// must not keep other clients' hellos out).
	wantStats(t, tb, Stats{Routing: 1, Routed: 1, HeldBytes: len(c.datagrams[0]) + len(c.datagrams[1]), Clients: 2}, "flow 2 refused")
	wantVerdict(t, tb.Handle(t0, x, c.datagrams[0]), Wait, "flow 3 while flow 1 is routing")
	if _, ok := tb.Close(a); ok {
		t.Error("Close of a flow not routed yet reported a backend")
	}
	wantStats(t, tb, Stats{Pending: 1, HeldBytes: ReservedDatagrams * quic.MaxDatagramSize, Clients: 3}, "flow 1 closed")
}

// TestExpiry: pending flows end quic.MaxAge after their first datagram,
// routed ones after IdleTimeout without use (either way), freeing their
// state and budget; the caller learns of the routed ones.
func TestExpiry(t *testing.T) {
	c := twoDatagrams(t)
	tb := New(Config{IdleTimeout: time.Minute})
	p, r := addr("[2001:db8::1]:1"), addr("192.0.2.1:1")
	wantVerdict(t, tb.Handle(t0, p, c.datagrams[0]), Wait, "pending flow")
	tb.Handle(t0, r, c.datagrams[0])
	wantVerdict(t, tb.Handle(t0, r, c.datagrams[1]), Route, "routed flow")
	tb.Routed(t0, r, "b")
	var closed []string
	expire := func(at time.Duration) {
		tb.Expire(t0.Add(at), func(from netip.AddrPort, backend any) {
			closed = append(closed, fmt.Sprint(from, " ", backend))
		})
	}
	expire(quic.MaxAge)
	wantStats(t, tb, Stats{Pending: 1, Routed: 1, HeldBytes: ReservedDatagrams * quic.MaxDatagramSize}, "at MaxAge")
	expire(quic.MaxAge + time.Nanosecond)
	wantStats(t, tb, Stats{Routed: 1}, "after MaxAge")
	tb.Handle(t0.Add(30*time.Second), r, []byte{0x40}) // client to backend
	tb.Touch(t0.Add(80*time.Second), r)                // backend to client
	expire(140 * time.Second)
	if len(closed) != 0 || tb.Stats().Routed != 1 {
		t.Fatalf("flow used 60 s ago expired: %q", closed)
	}
	expire(140*time.Second + time.Nanosecond)
	if !slices.Equal(closed, []string{"192.0.2.1:1 b"}) {
		t.Errorf("expired %q, want the routed flow", closed)
	}
	wantStats(t, tb, Stats{}, "all expired")
	if res := tb.Handle(t0.Add(150*time.Second), r, []byte{0x40, 1, 2}); res.Verdict != Drop || len(tb.flows) != 0 {
		t.Errorf("short header packet after expiry: %v, %d flows; want Drop and none", res.Verdict, len(tb.flows))
	}
}

// TestMappedAddress: an IPv4 client seen through a dual-stack socket, as
// an IPv4-mapped address, is the same flow.
func TestMappedAddress(t *testing.T) {
	c := twoDatagrams(t)
	tb := New(Config{})
	wantVerdict(t, tb.Handle(t0, addr("[::ffff:192.0.2.1]:443"), c.datagrams[0]), Wait, "mapped")
	wantVerdict(t, tb.Handle(t0, addr("192.0.2.1:443"), c.datagrams[1]), Route, "unmapped")
}

// TestFlowLimit: a flow that sends quic.MaxDatagrams datagrams without
// a whole hello is dropped.
func TestFlowLimit(t *testing.T) {
	c := twoDatagrams(t)
	tb := New(Config{})
	from := addr("192.0.2.1:1")
	wantVerdict(t, tb.Handle(t0, from, c.datagrams[0]), Wait, "first")
	bad := slices.Clone(c.datagrams[1])
	bad[len(bad)-1] ^= 1
	var r Result
	for range quic.MaxDatagrams {
		r = tb.Handle(t0, from, bad)
	}
	if !errors.Is(r.Err, quic.ErrLimit) || tb.Stats().Pending != 0 {
		t.Errorf("after %d datagrams: %v, %+v; want ErrLimit and no flow", quic.MaxDatagrams+1, r.Err, tb.Stats())
	}
}

// TestForwardAllocs pins the goal: no allocation per datagram of a
// routed flow, either way, nor for a stray short header packet.
func TestForwardAllocs(t *testing.T) {
	tb, from := routedTable(t)
	d := make([]byte, 1200)
	if n := testing.AllocsPerRun(100, func() { tb.Handle(t0, from, d) }); n != 0 {
		t.Errorf("Handle on a routed flow: %v allocs, want 0", n)
	}
	stray := addr("192.0.2.2:1")
	if n := testing.AllocsPerRun(100, func() { tb.Handle(t0, stray, d[:100]) }); n != 0 {
		t.Errorf("Handle of a short datagram from an unknown client: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { tb.Touch(t0, from) }); n != 0 {
		t.Errorf("Touch: %v allocs, want 0", n)
	}
}

// routedTable returns a table with one routed flow, and its client.
func routedTable(tb testing.TB) (*Table, netip.AddrPort) {
	c := twoDatagrams(tb)
	t := New(Config{})
	from := addr("192.0.2.1:1")
	for _, d := range c.datagrams {
		t.Handle(t0, from, d)
	}
	if _, err := t.Routed(t0, from, "backend"); err != nil {
		tb.Fatal(err)
	}
	return t, from
}

// TestAnswerTimeout: a routed flow whose backend never answers ends
// AnswerTimeout after it was routed, however often its client sends
// (retransmitted hellos); one that was answered lasts IdleTimeout.
func TestAnswerTimeout(t *testing.T) {
	c := twoDatagrams(t)
	tb := New(Config{IdleTimeout: time.Minute, AnswerTimeout: 10 * time.Second})
	silent, answered := addr("192.0.2.1:1"), addr("192.0.2.2:1")
	for _, from := range []netip.AddrPort{silent, answered} {
		tb.Handle(t0, from, c.datagrams[0])
		wantVerdict(t, tb.Handle(t0, from, c.datagrams[1]), Route, "hello")
		tb.Routed(t0, from, from.Addr().String())
	}
	tb.Touch(t0.Add(time.Second), answered)
	var closed []string
	for s := 1; s <= 20; s++ {
		now := t0.Add(time.Duration(s) * time.Second)
		if s <= 10 {
			wantVerdict(t, tb.Handle(now, silent, []byte{0x40, 1}), Forward, "the silent flow's client")
		}
		tb.Expire(now.Add(time.Millisecond), func(_ netip.AddrPort, b any) { closed = append(closed, b.(string)) })
		if s == 10 && len(closed) != 1 {
			t.Fatalf("expired %q at 10 s, want the flow its backend never answered", closed)
		}
	}
	if !slices.Equal(closed, []string{"192.0.2.1"}) || tb.Stats().Routed != 1 {
		t.Errorf("expired %q, %d routed left; want only the unanswered flow gone", closed, tb.Stats().Routed)
	}
	tb.Expire(t0.Add(61*time.Second+time.Millisecond), func(_ netip.AddrPort, b any) { closed = append(closed, b.(string)) })
	if !slices.Equal(closed, []string{"192.0.2.1", "192.0.2.2"}) {
		t.Errorf("after the idle timeout: expired %q", closed)
	}
}

// TestFlowsPerClient: one client prefix holds at most MaxFlowsPerClient
// flows, whatever the rate allows; another prefix still starts flows,
// and a flow that ends frees its place.
func TestFlowsPerClient(t *testing.T) {
	c := twoDatagrams(t)
	tb := New(Config{MaxFlowsPerClient: 3, NewFlowsPerSecond: -1})
	var last Result
	for port := 1; port <= 10; port++ {
		last = tb.Handle(t0, addr(fmt.Sprintf("[2001:db8::%x]:%d", port, port)), c.datagrams[0])
	}
	if st := tb.Stats(); st.Pending != 3 || !errors.Is(last.Err, ErrClientFlows) {
		t.Fatalf("10 flows from one /64: %d pending, last %v; want 3 and ErrClientFlows", st.Pending, last.Err)
	}
	wantVerdict(t, tb.Handle(t0, addr("[2001:db8:0:1::1]:1"), c.datagrams[0]), Wait, "another /64")
	tb.Close(addr("[2001:db8::1]:1"))
	wantVerdict(t, tb.Handle(t0, addr("[2001:db8::ff]:1"), c.datagrams[0]), Wait, "after one ended")
	if len(tb.perClient) != 2 {
		t.Errorf("%d prefixes counted, want 2", len(tb.perClient))
	}
	for from := range tb.flows {
		tb.Close(from)
	}
	if len(tb.perClient) != 0 {
		t.Errorf("%d prefixes still counted with no flow", len(tb.perClient))
	}
}
