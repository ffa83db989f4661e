package quicflow

import (
	"fmt"
	"net/netip"
	"testing"
)

// The benchmarks measure the three paths of a datagram:
//
//	go test -run '^$' -bench . -benchmem ./lib/quicflow/
//
// Forward is a datagram of a routed flow, the path nearly all traffic
// takes (goal: 0 allocs/op); NewFlow a whole flow of the two-datagram
// capture, from its first Initial to Routed and Close (key derivation and
// decryption included); Drop a short header packet from an unknown
// client, what a flood of garbage costs.
func BenchmarkForward(b *testing.B) {
	for _, n := range []int{1, 10000} {
		b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) {
			t, from := routedTable(b)
			for i := range n - 1 {
				t.flows[netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 1)] = &flow{state: routed}
			}
			d := make([]byte, 1200)
			b.ReportAllocs()
			b.SetBytes(int64(len(d)))
			for b.Loop() {
				if r := t.Handle(t0, from, d); r.Verdict != Forward {
					b.Fatal(r.Verdict, r.Err)
				}
			}
		})
	}
}

func BenchmarkNewFlow(b *testing.B) {
	c := twoDatagrams(b)
	t := New(Config{NewFlowsPerSecond: -1})
	b.ReportAllocs()
	port := 0
	for b.Loop() {
		port++
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(port >> 16)}), uint16(port))
		var r Result
		for _, d := range c.datagrams {
			r = t.Handle(t0, from, d)
		}
		if r.Verdict != Route {
			b.Fatal(r.Verdict, r.Err)
		}
		t.Routed(t0, from, nil)
		t.Close(from)
	}
}

func BenchmarkDrop(b *testing.B) {
	t := New(Config{})
	d := make([]byte, 1200)
	d[0] = 0x40
	from := netip.MustParseAddrPort("192.0.2.1:1")
	b.ReportAllocs()
	for b.Loop() {
		if r := t.Handle(t0, from, d); r.Verdict != Drop {
			b.Fatal(r.Verdict)
		}
	}
}
