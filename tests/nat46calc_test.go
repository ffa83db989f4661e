package tests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// n46run runs bin/nat46calc with stdin, extra environment and args, and
// returns its output and exit status. NAT46_PREFIX from the test's own
// environment is removed so that the default prefix applies.
func n46run(t *testing.T, stdin []byte, env []string, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t, "nat46calc"), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NAT46_PREFIX=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		status = exit.ExitCode()
	default:
		t.Fatalf("nat46calc %v: %v (%s)", args, err, errb.String())
	}
	return out.String(), errb.String(), status
}

func TestNat46calcArgs(t *testing.T) {
	out, errs, st := n46run(t, nil, nil, "192.0.2.33", "64:ff9b:1::c000:221", "bogus", "64:ff9b:1::192.0.2.33",
		"2001:db8::1", "10.0.0.0/8", "64:ff9b:1::a00:0/104", "64:ff9b:1::c000:221/64", "198.51.100.7")
	want := "64:ff9b:1::c000:221\n192.0.2.33\n192.0.2.33\n64:ff9b:1::a00:0/104\n10.0.0.0/8\n64:ff9b:1::c633:6407\n"
	if out != want || st != 1 {
		t.Errorf("stdout %q, status %d; want %q, 1", out, st, want)
	}
	for _, bad := range []string{`"bogus"`, `"2001:db8::1"`, `"64:ff9b:1::c000:221/64"`} {
		if !strings.Contains(errs, bad) {
			t.Errorf("stderr does not name %s:\n%s", bad, errs)
		}
	}
	if n := strings.Count(errs, "\n"); n != 3 {
		t.Errorf("%d error lines, want 3:\n%s", n, errs)
	}

	// All good: status 0, nothing on stderr.
	out, errs, st = n46run(t, nil, nil, "192.0.2.1", "64:ff9b:1::c000:201")
	if out != "64:ff9b:1::c000:201\n192.0.2.1\n" || errs != "" || st != 0 {
		t.Errorf("good args: %q %q %d", out, errs, st)
	}

	// The prefix from -p, from NAT46_PREFIX, and -p winning.
	out, _, _ = n46run(t, nil, []string{"NAT46_PREFIX=2001:db8:100::/40"}, "192.0.2.33")
	if out != "2001:db8:1c0:2:21::\n" {
		t.Errorf("NAT46_PREFIX: %q", out)
	}
	out, _, _ = n46run(t, nil, []string{"NAT46_PREFIX=2001:db8:100::/40"}, "-p", "64:ff9b::", "192.0.2.33")
	if out != "64:ff9b::c000:221\n" {
		t.Errorf("-p over NAT46_PREFIX: %q", out)
	}
	out, _, st = n46run(t, nil, []string{"NAT46_PREFIX=junk"}, "-p", "64:ff9b::", "192.0.2.33")
	if out != "64:ff9b::c000:221\n" || st != 0 {
		t.Errorf("-p over an invalid NAT46_PREFIX: %q, %d", out, st)
	}
}

func TestNat46calcUsage(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		args []string
		name string // what the message must name
	}{
		{nil, []string{"-p", "64:ff9b:1::/95", "1.2.3.4"}, "-p"},
		{nil, []string{"-p", "64:ff9b:1::1"}, "-p"},
		{[]string{"NAT46_PREFIX=10.0.0.0/8"}, []string{"1.2.3.4"}, "NAT46_PREFIX"},
		{nil, []string{"-4", "-6"}, "-4"},
		{nil, []string{"-4", "1.2.3.4"}, "-4"},
		{nil, []string{"-6", "1.2.3.4"}, "-6"},
		{nil, []string{"-u", "1.2.3.4"}, "-u"},
		{nil, []string{"-bogus"}, "-bogus"},
	} {
		out, errs, st := n46run(t, nil, tc.env, tc.args...)
		if st != 2 || out != "" || !strings.Contains(errs, tc.name) {
			t.Errorf("%v %v: status %d, stdout %q, stderr %q; want 2 naming %s", tc.env, tc.args, st, out, errs, tc.name)
		}
	}
	out, errs, st := n46run(t, nil, nil, "-h")
	if st != 0 || !strings.Contains(out+errs, "usage: nat46calc") || !strings.Contains(out+errs, "-p prefix") {
		t.Errorf("-h: status %d, %q %q", st, out, errs)
	}
	out, _, st = n46run(t, nil, nil, "-version")
	if st != 0 || !strings.HasPrefix(out, "nat46calc ") {
		t.Errorf("-version: status %d, %q", st, out)
	}
}

// The table of RFC 6052 section 2.4, both ways, through the command.
func TestNat46calcRFC6052(t *testing.T) {
	for _, tc := range []struct{ prefix, v6 string }{
		{"2001:db8::/32", "2001:db8:c000:221::"},
		{"2001:db8:100::/40", "2001:db8:1c0:2:21::"},
		{"2001:db8:122::/48", "2001:db8:122:c000:2:2100::"},
		{"2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"},
		{"2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"},
		{"2001:db8:122:344::/96", "2001:db8:122:344::c000:221"},
		{"64:ff9b::/96", "64:ff9b::c000:221"},
	} {
		out, errs, st := n46run(t, nil, nil, "-p", tc.prefix, "192.0.2.33", tc.v6)
		if want := tc.v6 + "\n192.0.2.33\n"; out != want || st != 0 {
			t.Errorf("-p %s: %q (%s), status %d; want %q", tc.prefix, out, errs, st, want)
		}
		// The filter, both ways, with the prefix from the environment.
		env := []string{"NAT46_PREFIX=" + tc.prefix}
		out, _, _ = n46run(t, []byte("peer ["+tc.v6+"]:443\n"), env)
		if out != "peer 192.0.2.33:443\n" {
			t.Errorf("%s: -4 filter gave %q", tc.prefix, out)
		}
		out, _, _ = n46run(t, []byte("peer 192.0.2.33:443\n"), env, "-6")
		if out != "peer ["+tc.v6+"]:443\n" {
			t.Errorf("%s: -6 filter gave %q", tc.prefix, out)
		}
	}
}

// Real log formats, as the programs write them, and what nat46calc makes
// of them.
var n46LogFormats = []struct {
	name     string
	args     []string
	in, want string
}{
	{"nginx combined", nil,
		`64:ff9b:1::c000:221 - - [22/Nov/2026:18:11:25 +0000] "GET /index.html HTTP/1.1" 200 615 "https://www.example.com/" "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
2001:db8:1::7 - - [22/Nov/2026:18:11:26 +0000] "GET /favicon.ico HTTP/1.1" 404 153 "-" "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
64:ff9b:1::a00:1 - alice [22/Nov/2026:18:11:27 +0000] "POST /api/v1.2.3.4/items?from=12:34:56 HTTP/2.0" 201 0 "http://[64:ff9b:1::a00:1]:8080/form" "curl/8.5.0"
`,
		`192.0.2.33 - - [22/Nov/2026:18:11:25 +0000] "GET /index.html HTTP/1.1" 200 615 "https://www.example.com/" "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
2001:db8:1::7 - - [22/Nov/2026:18:11:26 +0000] "GET /favicon.ico HTTP/1.1" 404 153 "-" "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
10.0.0.1 - alice [22/Nov/2026:18:11:27 +0000] "POST /api/v1.2.3.4/items?from=12:34:56 HTTP/2.0" 201 0 "http://10.0.0.1:8080/form" "curl/8.5.0"
`},
	{"Apache combined and error", nil,
		`64:ff9b:1::c633:6407 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"
[Sun Nov 22 18:11:25.123456 2026] [authz_core:error] [pid 4242:tid 140245061650176] [client 64:ff9b:1::c000:221:51234] AH01630: client denied by server configuration: /var/www/private
[Sun Nov 22 18:11:26.000001 2026] [ssl:info] [pid 4242:tid 140245061650176] [client 2001:db8::7:40000] AH01964: Connection to child 3 established (server www.example.com:443)
`,
		`198.51.100.7 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"
[Sun Nov 22 18:11:25.123456 2026] [authz_core:error] [pid 4242:tid 140245061650176] [client 192.0.2.33:51234] AH01630: client denied by server configuration: /var/www/private
[Sun Nov 22 18:11:26.000001 2026] [ssl:info] [pid 4242:tid 140245061650176] [client 2001:db8::7:40000] AH01964: Connection to child 3 established (server www.example.com:443)
`},
	{"journald short", nil,
		`Nov 22 18:11:25 web1 sshd[4242]: Accepted publickey for alice from 64:ff9b:1::c000:221 port 51234 ssh2: ED25519 SHA256:Qk0x5tFTHYJ4c3m4hP1nF0dNNb0iBnmGCkbXyPrm8Zg
Nov 22 18:11:26 web1 kernel: IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd SRC=64:ff9b:0001:0000:0000:0000:c000:0221 DST=2001:0db8:5ba7:0000:0000:0000:0000:0010 LEN=80 TC=0 HOPLIMIT=63 FLOWLBL=0 PROTO=TCP SPT=51234 DPT=443 WINDOW=64800 RES=0x00 SYN URGP=0
Nov 22 18:11:27 web1 snilisten[99]: level=INFO msg=connection client=192.0.2.33:51234 sni=app.example.com backend=[2001:db8:5ba7::10]:443 duration=1.204s outcome=ok
Nov 22 18:11:28 web1 systemd[1]: Started app.service - App 1.2.3.4.5 (pid 4243, MAC de:ad:be:ef:00:01).
`,
		`Nov 22 18:11:25 web1 sshd[4242]: Accepted publickey for alice from 192.0.2.33 port 51234 ssh2: ED25519 SHA256:Qk0x5tFTHYJ4c3m4hP1nF0dNNb0iBnmGCkbXyPrm8Zg
Nov 22 18:11:26 web1 kernel: IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd SRC=192.0.2.33 DST=2001:0db8:5ba7:0000:0000:0000:0000:0010 LEN=80 TC=0 HOPLIMIT=63 FLOWLBL=0 PROTO=TCP SPT=51234 DPT=443 WINDOW=64800 RES=0x00 SYN URGP=0
Nov 22 18:11:27 web1 snilisten[99]: level=INFO msg=connection client=192.0.2.33:51234 sni=app.example.com backend=[2001:db8:5ba7::10]:443 duration=1.204s outcome=ok
Nov 22 18:11:28 web1 systemd[1]: Started app.service - App 1.2.3.4.5 (pid 4243, MAC de:ad:be:ef:00:01).
`},
	{"journald short, -6", []string{"-6"},
		`Nov 22 18:11:27 web1 snilisten[99]: level=INFO msg=connection client=192.0.2.33:51234 sni=app.example.com backend=[2001:db8:5ba7::10]:443 duration=1.204s outcome=ok
Nov 22 18:11:28 web1 systemd[1]: Started app.service - App 1.2.3.4.5 listening on 0.0.0.0:80.
`,
		`Nov 22 18:11:27 web1 snilisten[99]: level=INFO msg=connection client=[64:ff9b:1::c000:221]:51234 sni=app.example.com backend=[2001:db8:5ba7::10]:443 duration=1.204s outcome=ok
Nov 22 18:11:28 web1 systemd[1]: Started app.service - App 1.2.3.4.5 listening on 0.0.0.0:80.
`},
	{"ss -tn", nil,
		`State Recv-Q Send-Q        Local Address:Port          Peer Address:Port Process
ESTAB 0      0      [2001:db8:5ba7::10]:443  [64:ff9b:1::c000:221]:51234
ESTAB 0      0      [2001:db8:5ba7::10]:443        [2001:db8:1::7]:40000
ESTAB 0      36     [::ffff:127.0.0.1]:5432  [::ffff:127.0.0.1]:33012
`,
		`State Recv-Q Send-Q        Local Address:Port          Peer Address:Port Process
ESTAB 0      0      [2001:db8:5ba7::10]:443  192.0.2.33:51234
ESTAB 0      0      [2001:db8:5ba7::10]:443        [2001:db8:1::7]:40000
ESTAB 0      36     [::ffff:127.0.0.1]:5432  [::ffff:127.0.0.1]:33012
`},
	{"JSON", nil,
		`{"time":"2026-11-22T18:11:25.123456789Z","level":"INFO","msg":"request","remote_addr":"64:ff9b:1::c000:221","remote":"[64:ff9b:1::c000:221]:51234","request_id":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","ua":"curl/8.5.0"}
{"time":"2026-11-22T18:11:26Z","level":"WARN","msg":"denied","remote_addr":"2001:db8::7","net":"64:ff9b:1::c000:200/120","nat46_prefix":"64:ff9b:1::/96"}
`,
		`{"time":"2026-11-22T18:11:25.123456789Z","level":"INFO","msg":"request","remote_addr":"192.0.2.33","remote":"192.0.2.33:51234","request_id":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","ua":"curl/8.5.0"}
{"time":"2026-11-22T18:11:26Z","level":"WARN","msg":"denied","remote_addr":"2001:db8::7","net":"192.0.2.0/24","nat46_prefix":"64:ff9b:1::/96"}
`},
	{"allow-list, -6", []string{"-6"},
		"allow 192.0.2.0/24;\nallow 198.51.100.7;\nallow 0.0.0.0/0; # never\ndeny all;\n",
		"allow 64:ff9b:1::c000:200/120;\nallow 64:ff9b:1::c633:6407;\nallow 0.0.0.0/0; # never\ndeny all;\n"},
	{"no final newline", nil, "last 64:ff9b:1::c000:221", "last 192.0.2.33"},
}

func TestNat46calcLogFormats(t *testing.T) {
	for _, tc := range n46LogFormats {
		out, errs, st := n46run(t, []byte(tc.in), nil, tc.args...)
		if out != tc.want || st != 0 || errs != "" {
			t.Errorf("%s: status %d, stderr %q, output:\n%s\nwant:\n%s", tc.name, st, errs, out, tc.want)
		}
	}
}

// n46LookAlikes must pass through the filter untouched in both directions.
var n46LookAlikes = []string{
	"12:34:56",
	"2026-11-22T18:11:25.123+01:00",
	"[22/Nov/2026:18:11:25 +0000]",
	"aa:bb:cc:dd:ee:ff",
	"52:54:00:12:34:56:52:54:00:65:43:21:86:dd",
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	"sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709",
	"1.2.3.4.5",
	"v1.2.3.4",
	"Chrome/120.0.0.0",
	"01.02.03.04",
	"256.256.256.256",
	"4.3.2.1.in-addr.arpa",
	"0.0.0.0:443",
	"0.0.0.0/0",
	"::1",
	"[::]:443",
	"fe80::1%eth0",
	"2001:db8::1",
	"::ffff:192.0.2.33",
	"64:ff9b::c000:221",
	"64:ff9b:2::c000:221",
	"64:ff9b:1::",
	"64:ff9b:1::/96",
	"64:ff9b:1::c000:221:443",
	"x64:ff9b:1::c000:221",
	"64:ff9b:1::c000:221z",
	"64:ff9b:1::c000:221/64",
	"f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
	"1:2:3:4:5:6:7:8",
	"OID 1.3.6.1.4.1.2021.10.1.3.1",
	"::",
}

func TestNat46calcLookAlikes(t *testing.T) {
	var in bytes.Buffer
	for _, s := range n46LookAlikes {
		fmt.Fprintf(&in, "%s\nx %s y\n\"%s\",\n", s, s, s)
	}
	for _, dir := range []string{"-4", "-6"} {
		out, errs, st := n46run(t, in.Bytes(), nil, dir)
		if st != 0 || errs != "" {
			t.Fatalf("%s: status %d, %s", dir, st, errs)
		}
		if out != in.String() {
			got := strings.Split(out, "\n")
			for i, want := range strings.Split(in.String(), "\n") {
				if i < len(got) && got[i] != want {
					t.Errorf("%s: %q became %q", dir, want, got[i])
				}
			}
		}
	}
}

// n46WriteNoAddresses writes about size bytes of text that holds no address
// the filter may rewrite in either direction, but plenty that looks like
// one, long lines, NUL bytes and invalid UTF-8.
func n46WriteNoAddresses(t *testing.T, path string, size int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	r := rand.New(rand.NewPCG(46, 6052))
	n := 0
	line := func(format string, args ...any) {
		k, _ := fmt.Fprintf(w, format, args...)
		n += k
	}
	// randomBytes writes k bytes of anything but '.' and ':', so no
	// address can form in them.
	randomBytes := func(k int) {
		for range k {
			c := byte(r.IntN(256))
			if c == '.' || c == ':' {
				c = '\x00'
			}
			w.WriteByte(c)
		}
		n += k
	}
	for i := 0; n < size; i++ {
		switch i % 8 {
		case 0:
			line("%s - - [22/Nov/2026:%02d:%02d:%02d +0000] \"GET /x/%d HTTP/1.1\" 200 %d \"-\" \"Mozilla/5.0 Chrome/120.0.0.0\"\n",
				n46LookAlikes[r.IntN(len(n46LookAlikes))], r.IntN(24), r.IntN(60), r.IntN(60), r.Uint32(), r.IntN(1e6))
		case 1:
			line("mac %02x:%02x:%02x:%02x:%02x:%02x hash %016x%016x ver %d.%d.%d.%d.%d\n",
				r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256), r.Uint64(), r.Uint64(),
				r.IntN(300), r.IntN(300), r.IntN(300), r.IntN(300), r.IntN(300))
		case 2:
			line("peer [2001:db8:%x::%x]:%d, 64:ff9b:2::%x:%x, ::ffff:10.%d.%d.%d\n",
				r.IntN(65536), r.IntN(65536), r.IntN(65536), r.IntN(65536), r.IntN(65536), r.IntN(256), r.IntN(256), r.IntN(256))
		case 3:
			randomBytes(r.IntN(400))
			line("\n")
		case 4:
			if i%800 == 4 {
				// A line of several megabytes: many read buffers long.
				for range 3 << 16 {
					line("%02d:%02d:%02d.%03d ", r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1000))
				}
				line("\n")
			}
		default:
			line("%s\n", strings.Repeat("é\xff\x00", r.IntN(50)))
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// Input without addresses comes out byte for byte, compared with cmp.
func TestNat46calcPassThrough(t *testing.T) {
	need(t, "cmp")
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	n46WriteNoAddresses(t, in, 24<<20)
	for _, flag := range []string{"-4", "-6"} {
		out := filepath.Join(dir, "out"+flag)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, "sh", "-c", `"$0" "$1" < "$2" > "$3" && cmp "$2" "$3"`, bin(t, "nat46calc"), flag, in, out)
		msg, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("nat46calc %s changed input without addresses: %v\n%s", flag, err, msg)
		}
	}
}

func TestNat46calcWriteError(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t, "nat46calc"))
	cmd.Stdin = strings.NewReader("64:ff9b:1::c000:221\n")
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	cmd.Stdout = full
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(errb.String(), "write") {
		t.Errorf("writing to /dev/full: %v, stderr %q; want status 1 naming the write", err, errb.String())
	}
}

// n46Interactive starts nat46calc with args and its standard output on
// out, feeds it one line at a time and checks that each translated line
// arrives, from read, before the next line is written or input ends.
func n46Interactive(t *testing.T, out *os.File, read io.Reader, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t, "nat46calc"), args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out.Close() // the child has its copy
	lines := make(chan string)
	go func() {
		defer close(lines)
		br := bufio.NewReader(read)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			lines <- strings.TrimRight(l, "\r\n")
		}
	}()
	for _, tc := range [][2]string{
		{"a 64:ff9b:1::c000:221\n", "a 192.0.2.33"},
		{"b [64:ff9b:1::a00:1]:443 12:34:56\n", "b 10.0.0.1:443 12:34:56"},
	} {
		if _, err := io.WriteString(stdin, tc[0]); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-lines:
			if got != tc[1] {
				t.Fatalf("got %q, want %q", got, tc[1])
			}
		case <-ctx.Done():
			t.Fatalf("%q: no output while input stays open", tc[0])
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

// With -u, each line is written as soon as it is read, into a pipe.
func TestNat46calcUnbuffered(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n46Interactive(t, w, r, "-u")
}

// Without -u, when standard output is a terminal, each line is written as
// soon as it is read.
func TestNat46calcTerminal(t *testing.T) {
	master, slave, err := n46OpenPTY()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	n46Interactive(t, slave, master)
}

// n46OpenPTY opens a pseudo-terminal pair (posix_openpt, unlockpt,
// ptsname).
func n46OpenPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		master.Close()
		return nil, nil, e
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		master.Close()
		return nil, nil, e
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// n46LiveScript runs inside a new network namespace (unshare -n): it
// routes the prefix locally, lets sockets bind to any address in it (as
// snilisten's nat46 mode does with IPV6_FREEBIND), serves HTTP with nginx
// on [::1], makes requests from embedded and other source addresses with
// curl, and records `ss -tan` while connections from both families are
// open. $1 is the working directory.
const n46LiveScript = `set -eu
d=$1
ip link set lo up
ip -6 route add local 64:ff9b:1::/96 dev lo
ip -6 route add local 2001:db8:1::/64 dev lo
sysctl -qw net.ipv6.ip_nonlocal_bind=1
nginx -c "$d/nginx.conf" -p "$d" &
nginx=$!
trap 'kill $nginx 2>/dev/null; wait $nginx 2>/dev/null || true' EXIT
i=0
until curl -s -o /dev/null http://[::1]:8080/ready; do
	i=$((i+1)); [ $i -lt 200 ] || { echo "nginx did not start"; cat "$d/error.log"; exit 1; }
	sleep 0.05
done
get() { curl -sS -o /dev/null --max-time 10 --interface "$1" -A "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0" -e "$2" "http://[::1]:8080$3"; }
get 64:ff9b:1::c000:221 'http://[64:ff9b:1::c000:221]:8080/from' '/index.html?t=12:34:56&v=1.2.3.4.5'
get 64:ff9b:1::a00:1 'https://www.example.com/' /a
get 2001:db8:1::7 '-' /b
python3 - "$d/ss.txt" <<'PY'
import socket, subprocess, sys
def pair(family, server, client):
    s = socket.socket(family); s.bind((server, 0)); s.listen()
    c = socket.socket(family); c.bind((client, 0)); c.connect(s.getsockname()[:2])
    a, _ = s.accept()
    return s, c, a
keep = [pair(socket.AF_INET6, "::1", "64:ff9b:1::c000:221"),
        pair(socket.AF_INET6, "::1", "2001:db8:1::7"),
        pair(socket.AF_INET, "127.0.0.1", "127.0.0.1")]
w = socket.socket(socket.AF_INET); w.bind(("0.0.0.0", 0)); w.listen()
open(sys.argv[1], "w").write(subprocess.run(["ss", "-tan"], capture_output=True, text=True, check=True).stdout)
PY
`

// TestNat46calcLive translates logs that real programs wrote about real
// connections from embedded addresses: nginx's combined and JSON access
// logs and ss's socket list, inside a network namespace.
func TestNat46calcLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	need(t, "unshare", "ip", "sysctl", "nginx", "curl", "python3", "ss")
	d := t.TempDir()
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
	client_body_temp_path %[1]s/tmp;
	proxy_temp_path %[1]s/tmp;
	fastcgi_temp_path %[1]s/tmp;
	uwsgi_temp_path %[1]s/tmp;
	scgi_temp_path %[1]s/tmp;
	log_format json escape=json '{"time":"$time_iso8601","remote_addr":"$remote_addr","remote_port":"$remote_port","request":"$request","status":$status}';
	server {
		listen [::1]:8080;
		access_log %[1]s/access.log combined;
		access_log %[1]s/access.json json;
		location / { return 200 "ok\n"; }
	}
}
`, d)
	if err := os.WriteFile(filepath.Join(d, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "unshare", "-n", "sh", "-c", n46LiveScript, "sh", d).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("unshare failed")) || bytes.Contains(out, []byte("Operation not permitted")) {
			t.Skipf("cannot create a network namespace: %s", out)
		}
		t.Fatalf("live script: %v\n%s", err, out)
	}

	to4 := strings.NewReplacer(
		"[64:ff9b:1::c000:221]:", "192.0.2.33:",
		"64:ff9b:1::c000:221", "192.0.2.33",
		"[64:ff9b:1::a00:1]:", "10.0.0.1:",
		"64:ff9b:1::a00:1", "10.0.0.1",
	)
	for _, name := range []string{"access.log", "access.json", "ss.txt"} {
		raw, err := os.ReadFile(filepath.Join(d, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, must := range []string{"64:ff9b:1::c000:221", "2001:db8:1::7"} {
			if !bytes.Contains(raw, []byte(must)) {
				t.Fatalf("%s does not mention %s, the test is broken:\n%s", name, must, raw)
			}
		}
		got, errs, st := n46run(t, raw, nil)
		if want := to4.Replace(string(raw)); got != want || st != 0 {
			t.Errorf("%s: status %d %s\ngot:\n%s\nwant:\n%s", name, st, errs, got, want)
		}
	}

	// -6 on the socket list: IPv4 peers get their embedding in brackets,
	// the wildcard listener stays.
	raw, err := os.ReadFile(filepath.Join(d, "ss.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("127.0.0.1:")) || !bytes.Contains(raw, []byte("0.0.0.0:")) {
		t.Fatalf("ss.txt lacks IPv4 sockets:\n%s", raw)
	}
	got, _, _ := n46run(t, raw, nil, "-6")
	if want := strings.ReplaceAll(string(raw), "127.0.0.1:", "[64:ff9b:1::7f00:1]:"); got != want {
		t.Errorf("ss -6:\ngot:\n%s\nwant:\n%s", got, want)
	}
}

// TestNat46calcAgainstIpv6calc compares nat46calc with ipv6calc, an
// independent implementation, on random addresses in the well-known
// prefix 64:ff9b::/96 (the only one ipv6calc knows), both ways.
func TestNat46calcAgainstIpv6calc(t *testing.T) {
	need(t, "ipv6calc")
	r := rand.New(rand.NewPCG(6052, 1))
	var v4 bytes.Buffer
	for range 2000 {
		fmt.Fprintf(&v4, "%d.%d.%d.%d\n", r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256))
	}
	ipv6calc := func(in []byte) string {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ipv6calc", "-A", "convnat64")
		cmd.Stdin = bytes.NewReader(in)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ipv6calc: %v", err)
		}
		return string(out)
	}
	v6 := ipv6calc(v4.Bytes())
	if n := strings.Count(v6, "\n"); n != 2000 {
		t.Fatalf("ipv6calc printed %d lines", n)
	}
	// Argument mode and both filter directions.
	got, errs, st := n46run(t, nil, nil, append([]string{"-p", "64:ff9b::"}, strings.Fields(v4.String())...)...)
	if got != v6 || st != 0 {
		t.Errorf("arguments differ from ipv6calc (status %d, %s)", st, errs)
	}
	if got, _, _ := n46run(t, v4.Bytes(), nil, "-p", "64:ff9b::", "-6"); got != strings.Replace(v6, "64:ff9b::\n", "0.0.0.0\n", -1) {
		t.Errorf("-6 filter differs from ipv6calc")
	}
	back := ipv6calc([]byte(v6))
	if back != v4.String() {
		t.Fatal("ipv6calc does not round-trip")
	}
	if got, _, _ := n46run(t, []byte(v6), nil, "-p", "64:ff9b::"); got != strings.Replace(back, "0.0.0.0\n", "64:ff9b::\n", -1) {
		t.Errorf("-4 filter differs from ipv6calc")
	}
}
