package clienthello

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// capture is one real client's first flight from testdata/captures, with
// what the manifest says an independent parser (crypto/tls) read from it.
type capture struct {
	file     string
	data     []byte
	sni      string // "" for none
	alpn     []string
	versions []uint16
	bytes    int
	records  int
	ech      bool
}

// loadCaptures reads testdata/captures/manifest.tsv and every file it
// names. It fails the test if the manifest and the directory disagree, so
// that a capture cannot be added without a manifest line (or vice versa).
func loadCaptures(tb testing.TB) []capture {
	tb.Helper()
	dir := filepath.Join("testdata", "captures")
	f, err := os.Open(filepath.Join(dir, "manifest.tsv"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var caps []capture
	sc := bufio.NewScanner(f)
	for line := 0; sc.Scan(); line++ {
		if line == 0 {
			continue // header
		}
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) != 7 {
			tb.Fatalf("manifest.tsv line %d: %d fields, want 7", line+1, len(fields))
		}
		c := capture{file: fields[0], sni: fields[1], ech: fields[6] == "yes"}
		if c.sni == "-" {
			c.sni = ""
		}
		if fields[2] != "-" {
			c.alpn = strings.Split(fields[2], ",")
		}
		for _, v := range strings.Split(fields[3], ",") {
			n, err := strconv.ParseUint(v, 0, 16)
			if err != nil {
				tb.Fatalf("manifest.tsv line %d: version %q: %v", line+1, v, err)
			}
			c.versions = append(c.versions, uint16(n))
		}
		if c.bytes, err = strconv.Atoi(fields[4]); err != nil {
			tb.Fatalf("manifest.tsv line %d: bytes: %v", line+1, err)
		}
		if c.records, err = strconv.Atoi(fields[5]); err != nil {
			tb.Fatalf("manifest.tsv line %d: records: %v", line+1, err)
		}
		if c.data, err = os.ReadFile(filepath.Join(dir, c.file)); err != nil {
			tb.Fatal(err)
		}
		caps = append(caps, c)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.bin"))
	if len(files) != len(caps) || len(caps) < 20 {
		tb.Fatalf("manifest lists %d captures, directory holds %d .bin files", len(caps), len(files))
	}
	return caps
}

// check compares what Parse found with what the manifest says.
func (c *capture) check(t *testing.T, info Info, wantLength, wantRecords int) {
	t.Helper()
	if got := info.ServerName(); got != c.sni {
		t.Errorf("ServerName = %q, want %q", got, c.sni)
	}
	if info.HasServerName() != (c.sni != "") {
		t.Errorf("HasServerName = %v, want %v", info.HasServerName(), c.sni != "")
	}
	if got := info.ALPN(); !slices.Equal(got, c.alpn) {
		t.Errorf("ALPN = %q, want %q", got, c.alpn)
	}
	if got := info.SupportedVersions(); !slices.Equal(got, c.versions) {
		t.Errorf("SupportedVersions = %#04x, want %#04x", got, c.versions)
	}
	if info.ECH != c.ech {
		t.Errorf("ECH = %v, want %v", info.ECH, c.ech)
	}
	if info.Length != wantLength {
		t.Errorf("Length = %d, want %d", info.Length, wantLength)
	}
	if info.Records != wantRecords {
		t.Errorf("Records = %d, want %d", info.Records, wantRecords)
	}
}

func TestCapturesMatchManifest(t *testing.T) {
	for _, c := range loadCaptures(t) {
		t.Run(c.file, func(t *testing.T) {
			if len(c.data) != c.bytes {
				t.Fatalf("file holds %d bytes, manifest says %d", len(c.data), c.bytes)
			}
			info, err := Parse(c.data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			c.check(t, info, c.bytes, c.records)
			if info.LegacyVersion != 0x0303 && info.LegacyVersion != 0x0301 {
				t.Errorf("LegacyVersion = %#04x", info.LegacyVersion)
			}
			if len(info.CipherSuites()) == 0 || len(info.Extensions()) == 0 {
				t.Errorf("CipherSuites %d, Extensions %d: want some of each", len(info.CipherSuites()), len(info.Extensions()))
			}
			// A hello followed by the start of the next flight (early
			// data, a pipelined record) parses the same and says where it
			// ended.
			more := append(slices.Clip(c.data), 23, 3, 3, 0, 5, 'x')
			info, err = Parse(more)
			if err != nil {
				t.Fatalf("Parse with trailing bytes: %v", err)
			}
			c.check(t, info, c.bytes, c.records)
		})
	}
}

// handshakeOf returns the handshake message carried by the records in b.
func handshakeOf(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var msg []byte
	for s := cryptobyte.String(b); !s.Empty(); {
		var typ uint8
		var vers uint16
		var payload cryptobyte.String
		if !s.ReadUint8(&typ) || !s.ReadUint16(&vers) || !s.ReadUint16LengthPrefixed(&payload) || typ != recordTypeHandshake {
			tb.Fatalf("bad record framing in test input")
		}
		msg = append(msg, payload...)
	}
	return msg
}

// frame splits a handshake message into handshake records whose payload
// sizes come from size (called once per record, returns at least 1).
func frame(msg []byte, size func() int) (out []byte, records int) {
	for len(msg) > 0 {
		n := min(size(), len(msg), maxPlaintext)
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
		records++
	}
	return out, records
}

func TestCapturesReframed(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []struct {
		name string
		size func() int
	}{
		{"1-byte", func() int { return 1 }},
		{"3-byte", func() int { return 3 }}, // splits the 4-byte handshake header
		{"7-byte", func() int { return 7 }},
		{"random", func() int { return 1 + rng.IntN(300) }},
		{"one-record", func() int { return maxPlaintext }},
	}
	for _, c := range loadCaptures(t) {
		msg := handshakeOf(t, c.data)
		for _, sz := range sizes {
			t.Run(c.file+"/"+sz.name, func(t *testing.T) {
				b, records := frame(msg, sz.size)
				info, err := Parse(b)
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				c.check(t, info, len(b), records)
			})
		}
	}
}

// Empty records between fragments are legal (crypto/tls tolerates a few);
// too many of them are a cheap way to make a server loop.
func TestEmptyRecords(t *testing.T) {
	c := loadCaptures(t)[0]
	empty := []byte{recordTypeHandshake, 3, 1, 0, 0}
	var some []byte
	for range 3 {
		some = append(some, empty...)
	}
	some = append(some, c.data...)
	info, err := Parse(some)
	if err != nil {
		t.Fatalf("3 empty records first: %v", err)
	}
	c.check(t, info, len(some), c.records+3)

	var many []byte
	for range maxEmptyRecords + 1 {
		many = append(many, empty...)
	}
	many = append(many, c.data...)
	if _, err := Parse(many); !errors.Is(err, ErrMalformed) {
		t.Errorf("%d empty records: err = %v, want ErrMalformed", maxEmptyRecords+1, err)
	}
}

func TestCapturePrefixesIncomplete(t *testing.T) {
	caps := loadCaptures(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range caps {
		inputs := map[string][]byte{"as-captured": c.data}
		inputs["7-byte"], _ = frame(handshakeOf(t, c.data), func() int { return 7 })
		inputs["random"], _ = frame(handshakeOf(t, c.data), func() int { return 1 + rng.IntN(200) })
		for name, b := range inputs {
			t.Run(c.file+"/"+name, func(t *testing.T) {
				for n := range len(b) {
					_, err := Parse(b[:n])
					if !errors.Is(err, ErrIncomplete) {
						t.Fatalf("Parse of the first %d of %d bytes: err = %v, want ErrIncomplete", n, len(b), err)
					}
				}
			})
		}
	}
}

// hello builds a ClientHello handshake message with the given extensions
// (type, body pairs), in one record.
type ext struct {
	typ  uint16
	body []byte
}

func helloMessage(exts ...ext) []byte {
	var b cryptobyte.Builder
	b.AddUint8(typeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(0x0303)
		b.AddBytes(make([]byte, 32)) // random
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {})
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(0x1301); b.AddUint16(0xc02f) })
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		if exts != nil {
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for _, e := range exts {
					b.AddUint16(e.typ)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.body) })
				}
			})
		}
	})
	return b.BytesOrPanic()
}

func record(msg []byte) []byte {
	b, _ := frame(msg, func() int { return maxPlaintext })
	return b
}

func hello(exts ...ext) []byte { return record(helloMessage(exts...)) }

// sni builds a server_name extension body from (type, name) entries.
func sni(entries ...any) []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for i := 0; i < len(entries); i += 2 {
			b.AddUint8(uint8(entries[i].(int)))
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(entries[i+1].(string))) })
		}
	})
	return b.BytesOrPanic()
}

func alpn(protos ...string) []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, p := range protos {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
		}
	})
	return b.BytesOrPanic()
}

func versions(vs ...uint16) []byte {
	var b cryptobyte.Builder
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, v := range vs {
			b.AddUint16(v)
		}
	})
	return b.BytesOrPanic()
}

func TestSynthetic(t *testing.T) {
	b := hello(
		ext{0x0a0a, nil}, // GREASE
		ext{extServerName, sni(1, "ignored-type", 0, "Example.TEST.")},
		ext{extALPN, alpn("h2", "http/1.1")},
		ext{extSupportedVersions, versions(0x3a3a, 0x0304, 0x0303)},
		ext{extEncryptedHello, []byte{0, 1, 2}},
	)
	info, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.ServerName(); got != "Example.TEST." {
		t.Errorf("ServerName = %q: want it exactly as sent", got)
	}
	if got := info.ALPN(); !slices.Equal(got, []string{"h2", "http/1.1"}) {
		t.Errorf("ALPN = %q", got)
	}
	if _, ok := info.SoleALPN(); ok {
		t.Errorf("SoleALPN reports one protocol of two")
	}
	if got := info.SupportedVersions(); !slices.Equal(got, []uint16{0x0304, 0x0303}) {
		t.Errorf("SupportedVersions = %#04x: want GREASE left out", got)
	}
	if !info.ECH {
		t.Errorf("ECH = false with an encrypted_client_hello extension")
	}
	if got := info.Extensions(); !slices.Equal(got, []uint16{0x0a0a, 0, 16, 43, 0xfe0d}) {
		t.Errorf("Extensions = %#04x", got)
	}
	if got := info.CipherSuites(); !slices.Equal(got, []uint16{0x1301, 0xc02f}) {
		t.Errorf("CipherSuites = %#04x", got)
	}

	info, err = Parse(hello(ext{extALPN, alpn("xmpp-client")}))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := info.SoleALPN(); !ok || p != "xmpp-client" {
		t.Errorf("SoleALPN = %q, %v", p, ok)
	}
	if info.HasServerName() || info.ServerName() != "" || info.ALPN() == nil {
		t.Errorf("no server_name: HasServerName %v, ServerName %q", info.HasServerName(), info.ServerName())
	}

	// A hello with no extensions at all (TLS 1.0 era) is still a hello.
	info, err = Parse(hello())
	if err != nil {
		t.Fatal(err)
	}
	if info.HasServerName() || info.ALPN() != nil || info.ECH {
		t.Errorf("extension-less hello reports extensions: %+v", info)
	}
	if _, ok := info.SoleALPN(); ok {
		t.Errorf("SoleALPN without ALPN")
	}
	// Without supported_versions, legacy_version is the client's highest.
	if got := info.SupportedVersions(); !slices.Equal(got, []uint16{0x0303, 0x0302, 0x0301}) {
		t.Errorf("SupportedVersions of a TLS 1.2 hello = %#04x", got)
	}
	info.LegacyVersion = 0x0300
	if got := info.SupportedVersions(); !slices.Equal(got, []uint16{0x0300}) {
		t.Errorf("SupportedVersions of an SSL 3.0 hello = %#04x", got)
	}
}

// More extensions than the allocation-free duplicate check tracks.
func TestManyExtensions(t *testing.T) {
	var exts []ext
	for i := range 3 * smallExtensionsLength {
		exts = append(exts, ext{uint16(0x1000 + i), nil})
	}
	exts = append(exts, ext{extServerName, sni(0, "many.example.test")})
	info, err := Parse(hello(exts...))
	if err != nil {
		t.Fatal(err)
	}
	if info.ServerName() != "many.example.test" || len(info.Extensions()) != len(exts) {
		t.Errorf("ServerName %q, %d extensions", info.ServerName(), len(info.Extensions()))
	}
	// Duplicates are caught on either side of the switch to a map.
	for _, dup := range []int{1, smallExtensionsLength - 1, smallExtensionsLength, 2 * smallExtensionsLength} {
		d := append(slices.Clone(exts), ext{exts[dup].typ, nil})
		if _, err := Parse(hello(d...)); !errors.Is(err, ErrMalformed) {
			t.Errorf("duplicate of extension #%d: err = %v, want ErrMalformed", dup, err)
		}
	}
}

func TestNotAHello(t *testing.T) {
	okSNI := ext{extServerName, sni(0, "ok.example.test")}
	long := helloMessage(okSNI, ext{0x1234, make([]byte, 2000)})
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"HTTP GET", []byte("GET / HTTP/1.1\r\nHost: example.test\r\n\r\n"), ErrNotTLS},
		{"HTTP CONNECT", []byte("CONNECT example.test:443 HTTP/1.1\r\n\r\n"), ErrNotTLS},
		{"SSLv2", []byte{0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10}, ErrNotTLS},
		{"garbage", []byte{0x00, 0xff, 0x13, 0x37}, ErrNotTLS},
		{"PROXY header", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrNotTLS},
		{"SSH", []byte("SSH-2.0-OpenSSH_9.2\r\n"), ErrNotTLS},
		{"application data record", []byte{23, 3, 3, 0, 5, 1, 2, 3, 4, 5}, ErrUnexpectedMessage},
		{"alert record", []byte{21, 3, 3, 0, 2, 2, 40}, ErrUnexpectedMessage},
		{"ChangeCipherSpec record", []byte{20, 3, 3, 0, 1, 1}, ErrUnexpectedMessage},
		{"alert type, not a record", []byte{21, 0x42, 0x42}, ErrNotTLS},
		{"true SSLv2", []byte{0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10}, ErrNotTLS},
		{"record version 0x1603", []byte{22, 0x16, 0x03, 0, 4, 1, 0, 0, 0}, ErrMalformed},
		{"oversized record", []byte{22, 3, 1, 0x40, 0x01}, ErrRecordOverflow},
		{"ServerHello", record([]byte{2, 0, 0, 2, 3, 3}), ErrUnexpectedMessage},
		{"second record not handshake", append(record(long[:10])[:15:15], 23, 3, 3, 0, 1, 0), ErrUnexpectedMessage},
		{"ChangeCipherSpec inside", append(record(long[:10])[:15:15], 20, 3, 3, 0, 1, 1), ErrUnexpectedMessage},
		{"too large", record([]byte{1, 0x02, 0x10, 0x00}), ErrTooLarge},
		{"too large reassembled", append([]byte{22, 3, 1, 0, 2, 1, 0x7f}, 22, 3, 1, 0, 2, 0xff, 0xff), ErrTooLarge},
		{"truncated fixed fields", record([]byte{1, 0, 0, 2, 3, 3}), ErrMalformed},
		{"session ID over 32", record(func() []byte {
			m := helloMessage()
			m[4+2+32] = 33
			return m
		}()), ErrMalformed},
		{"odd cipher suites length", record(func() []byte {
			var b cryptobyte.Builder
			b.AddUint8(1)
			b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
				b.AddUint16(0x0303)
				b.AddBytes(make([]byte, 32))
				b.AddUint8(0)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte{0x13, 0x01, 0x13}) })
				b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
			})
			return b.BytesOrPanic()
		}()), ErrMalformed},
		{"trailing bytes after extensions", record(func() []byte {
			m := helloMessage(okSNI)
			m = append(m, 0)
			m[3]++
			return m
		}()), ErrMalformed},
		{"extension body overruns", record(func() []byte {
			m := helloMessage(ext{0x1234, []byte{1, 2}})
			m[len(m)-3]++ // extension length 2 -> 3
			return m
		}()), ErrMalformed},
		{"duplicate extension", hello(okSNI, ext{0x0017, nil}, ext{0x0017, nil}), ErrMalformed},
		{"duplicate server_name extension", hello(okSNI, okSNI), ErrMalformed},
		{"duplicate ALPN extension", hello(ext{extALPN, alpn("h2")}, ext{extALPN, alpn("h2")}), ErrMalformed},
		{"two host names", hello(ext{extServerName, sni(0, "a.example.test", 0, "b.example.test")}), ErrMalformed},
		{"same host name twice", hello(ext{extServerName, sni(0, "a.example.test", 0, "a.example.test")}), ErrMalformed},
		{"empty server_name list", hello(ext{extServerName, sni()}), ErrMalformed},
		{"empty server_name body", hello(ext{extServerName, nil}), ErrMalformed},
		{"server_name trailing byte", hello(ext{extServerName, append(sni(0, "a.example.test"), 0)}), ErrMalformed},
		{"server_name entry overruns", hello(ext{extServerName, []byte{0, 5, 0, 0, 9, 'a', 'b'}}), ErrMalformed},
		{"empty ALPN list", hello(ext{extALPN, alpn()}), ErrMalformed},
		{"empty ALPN protocol", hello(ext{extALPN, alpn("h2", "")}), ErrMalformed},
		{"ALPN trailing byte", hello(ext{extALPN, append(alpn("h2"), 0)}), ErrMalformed},
		{"empty supported_versions", hello(ext{extSupportedVersions, versions()}), ErrMalformed},
		{"odd supported_versions", hello(ext{extSupportedVersions, []byte{3, 3, 4, 3}}), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			for _, other := range []error{ErrIncomplete, ErrNotTLS, ErrMalformed, ErrTooLarge, ErrUnexpectedMessage, ErrRecordOverflow} {
				if other != tt.want && errors.Is(err, other) && !(other == ErrMalformed && errors.Is(tt.want, ErrMalformed)) {
					t.Errorf("err = %v is also %v", err, other)
				}
			}
		})
	}
}

func TestLimit(t *testing.T) {
	msg := helloMessage(ext{extServerName, sni(0, "big.example.test")}, ext{0x1234, make([]byte, 3000)})
	b := record(msg)
	if _, err := ParseLimit(b, len(msg)-4); err != nil {
		t.Errorf("limit = body length: %v", err)
	}
	if _, err := ParseLimit(b, len(msg)-5); !errors.Is(err, ErrTooLarge) {
		t.Errorf("limit one byte short: err = %v, want ErrTooLarge", err)
	}
	// The limit is checked from the handshake header, before the body
	// arrives: a server need not wait for 16 MiB to refuse them.
	if _, err := ParseLimit(b[:9], 100); !errors.Is(err, ErrTooLarge) {
		t.Errorf("header only: err = %v, want ErrTooLarge", err)
	}
	// The largest message the default allows, in many records.
	big := helloMessage(ext{extServerName, sni(0, "big.example.test")}, ext{0x1234, make([]byte, 60000)})
	b, records := frame(big, func() int { return 16000 })
	info, err := Parse(b)
	if err != nil || info.ServerName() != "big.example.test" || info.Records != records {
		t.Errorf("60 KB hello: %v, %q, %d records", err, info.ServerName(), info.Records)
	}
}

func TestIsGREASE(t *testing.T) {
	var n int
	for v := range 1 << 16 {
		if IsGREASE(uint16(v)) {
			n++
			if v>>8 != v&0xff || v&0x0f != 0x0a {
				t.Errorf("IsGREASE(%#04x) = true", v)
			}
		}
	}
	if n != 16 {
		t.Errorf("%d GREASE values, want 16", n)
	}
}

func TestVersionName(t *testing.T) {
	for v, want := range map[uint16]string{0x0304: "TLS1.3", 0x0303: "TLS1.2", 0x0302: "TLS1.1", 0x0301: "TLS1.0", 0x0300: "SSL3.0", 0x7f1c: "0x7f1c"} {
		if got := VersionName(v); got != want {
			t.Errorf("VersionName(%#04x) = %q, want %q", v, got, want)
		}
	}
}

func TestAlert(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteAlert(&buf, AlertUnrecognizedName); err != nil {
		t.Fatal(err)
	}
	if want := []byte{21, 3, 3, 0, 2, 2, 112}; !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("alert record % x, want % x", buf.Bytes(), want)
	}
	if s := fmt.Sprint(AlertUnrecognizedName, AlertDecodeError, Alert(99)); s != "unrecognized_name decode_error alert(99)" {
		t.Errorf("names: %s", s)
	}
}
