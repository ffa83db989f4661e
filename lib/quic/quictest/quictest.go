// Package quictest reads the Initial datagrams real QUIC clients sent,
// kept in lib/quic/testdata (see its README), for the tests of lib/quic
// and of what is built on it: one reader, so that a capture means the same
// thing to every test.
package quictest

import (
	"bufio"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// A Capture is the datagrams a real client sent until its hello was
// whole: testdata/NAME.hex, one datagram in hex per line, lines starting
// with # are comments; testdata/manifest.tsv says what the hello says.
type Capture struct {
	File       string
	Version    uint32
	ServerName string
	ALPN       []string
	HelloLen   int
	Datagrams  [][]byte
}

// Dir is lib/quic/testdata, wherever the test runs from.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata")
}

// Captures reads Dir()/manifest.tsv and the captures it names, and fails
// tb if a line or a capture does not match what the manifest says.
func Captures(tb testing.TB) []Capture {
	tb.Helper()
	m, err := os.ReadFile(filepath.Join(Dir(), "manifest.tsv"))
	if err != nil {
		tb.Fatal(err)
	}
	var caps []Capture
	for i, line := range strings.Split(strings.TrimSpace(string(m)), "\n")[1:] {
		f := strings.Split(line, "\t")
		if len(f) != 6 {
			tb.Fatalf("manifest.tsv line %d: %d fields, want 6", i+2, len(f))
		}
		c := Capture{File: f[0], ServerName: f[2], ALPN: strings.Split(f[3], ",")}
		v, err1 := strconv.ParseUint(f[1], 0, 32)
		n, err2 := strconv.Atoi(f[4])
		l, err3 := strconv.Atoi(f[5])
		if err := errors.Join(err1, err2, err3); err != nil {
			tb.Fatalf("manifest.tsv line %d: %v", i+2, err)
		}
		c.Version, c.HelloLen = uint32(v), l
		c.Datagrams = readHex(tb, c.File)
		if len(c.Datagrams) != n {
			tb.Fatalf("%s: %d datagrams, manifest says %d", c.File, len(c.Datagrams), n)
		}
		caps = append(caps, c)
	}
	return caps
}

// readHex reads the datagrams of one capture file.
func readHex(tb testing.TB, file string) [][]byte {
	tb.Helper()
	fh, err := os.Open(filepath.Join(Dir(), file))
	if err != nil {
		tb.Fatal(err)
	}
	defer fh.Close()
	var datagrams [][]byte
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if s := sc.Text(); s != "" && !strings.HasPrefix(s, "#") {
			d, err := hex.DecodeString(s)
			if err != nil {
				tb.Fatalf("%s: %v", file, err)
			}
			datagrams = append(datagrams, d)
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("%s: %v", file, err)
	}
	return datagrams
}
