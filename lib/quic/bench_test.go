package quic

import (
	"strings"
	"testing"
)

// The benchmarks read each capture's datagrams, as a flow would:
//
//	go test -run '^$' -bench . -benchmem ./lib/quic/
//
// "derive" derives the Initial keys for each flow, as every new client
// needs (each has its own connection ID); "cached" reuses an Assembler
// whose keys match (Reset keeps them), so that it measures the header
// protection, decryption, frames and reassembly alone. Goal of "cached":
// 0 allocs/op.
func BenchmarkAssembler(b *testing.B) {
	for _, c := range loadCaptures(b) {
		name := strings.TrimSuffix(c.file, ".hex")
		bytes := 0
		for _, d := range c.datagrams {
			bytes += len(d)
		}
		for _, mode := range []string{"derive", "cached"} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(bytes))
				var a Assembler
				for b.Loop() {
					a.Reset()
					if mode == "derive" {
						a.keys = keys{}
					}
					var done bool
					var err error
					for _, d := range c.datagrams {
						if done, err = a.AddDatagram(d); err != nil {
							b.Fatal(err)
						}
					}
					info, err := a.ClientHello()
					if !done || err != nil || info.ServerName() != c.serverName {
						b.Fatalf("done %v, %v, %q", done, err, info.ServerName())
					}
				}
			})
		}
	}
}

// BenchmarkParseInitial reads the first datagram's header, what a caller
// does for every datagram of an unknown client. Goal: 0 allocs/op.
func BenchmarkParseInitial(b *testing.B) {
	d := loadCaptures(b)[0].datagrams[0]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseInitial(d); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAllocs pins the allocation counts the benchmarks report: none for
// a flow once the Assembler's keys and buffers are there, none for
// ParseInitial.
func TestAllocs(t *testing.T) {
	c := loadCaptures(t)[0]
	var a Assembler
	flow := func() {
		a.Reset()
		for _, d := range c.datagrams {
			if _, err := a.AddDatagram(d); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := a.ClientHello(); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(50, flow); n != 0 {
		t.Errorf("a flow with cached keys: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(50, func() { ParseInitial(c.datagrams[0]) }); n != 0 {
		t.Errorf("ParseInitial: %v allocs, want 0", n)
	}
}
