package relay

import (
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkRelay moves bytes one way through the relay between two UNIX
// socket pairs: b.N is in bytes moved (see the MB/s column), allocations
// per op are per 1 MiB chunk.
func BenchmarkRelay(b *testing.B) { benchmarkRelay(b, unixPair) }

// benchmarkRelay measures the relay between two connections made by pair.
func benchmarkRelay(b *testing.B, pair func(testing.TB) (net.Conn, net.Conn)) {
	e := newEngine(b)
	client, in := pair(b)
	out, server := pair(b)
	done := make(chan error, 1)
	if _, err := e.Start(in, out, 0, func(_ Stats, err error) { done <- err }); err != nil {
		b.Fatal(err)
	}
	benchmarkPipe(b, client, server)
	client.Close()
	server.Close()
	<-done
}

// BenchmarkIOCopy is the same path through a goroutine running io.Copy
// (the design the relay replaced), for comparison in the same run.
func BenchmarkIOCopy(b *testing.B) {
	client, in := unixPair(b)
	out, server := unixPair(b)
	go func() { io.Copy(out, in); out.Close() }()
	benchmarkPipe(b, client, server)
	client.Close()
	server.Close()
}

// BenchmarkRelayTCP is BenchmarkRelay over loopback TCP on both sides,
// where the relay splices.
func BenchmarkRelayTCP(b *testing.B) { benchmarkRelay(b, tcpPair) }

func benchmarkPipe(b *testing.B, client, server net.Conn) {
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ReportAllocs()
	read := make(chan error, 1)
	go func() {
		rbuf := make([]byte, chunk)
		for range b.N {
			if _, err := io.ReadFull(server, rbuf); err != nil {
				read <- err
				return
			}
		}
		read <- nil
	}()
	b.ResetTimer()
	for range b.N {
		if _, err := client.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case err := <-read:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(time.Minute):
		b.Fatal("reader stuck")
	}
}
