package nat46calc

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// files are generated once per run: the access log, the address list,
// and how many addresses each holds.
var (
	dir                 string
	accessLog, addrList string
	logAddrs, listAddrs int
	logSize, listSize   int64
)

func TestMain(m *testing.M) {
	var err error
	dir, err = os.MkdirTemp("", "nat46calc-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// generate writes the benchmark inputs on first use.
func generate(b *testing.B) {
	b.Helper()
	if accessLog != "" {
		return
	}
	r := rand.New(rand.NewPCG(46, 30))
	var err error
	accessLog = filepath.Join(dir, "access.log")
	logSize, logAddrs, err = writeFile(accessLog, 64<<20, func(w *bufio.Writer) int {
		switch k := r.IntN(10); {
		case k < 3:
			fmt.Fprintf(w, "64:ff9b:1::%x:%x", 0x100+r.IntN(0xdf00), r.IntN(0x10000))
		case k < 6:
			fmt.Fprintf(w, "2001:db8:%x::%x", r.IntN(0x10000), r.IntN(0x10000))
		default:
			fmt.Fprintf(w, "Nov 22 18:%02d:%02d web1 app[%d]: job %016x done in %d.%03ds, queue 12:34:56 v1.2.3.4.5\n",
				r.IntN(60), r.IntN(60), r.IntN(1<<16), r.Uint64(), r.IntN(10), r.IntN(1000))
			return 0
		}
		fmt.Fprintf(w, ` - - [22/Nov/2026:18:%02d:%02d +0000] "GET /static/%d.js HTTP/1.1" 200 %d "https://www.example.com/page/%d" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"`+"\n",
			r.IntN(60), r.IntN(60), r.IntN(1e6), r.IntN(1e5), r.IntN(1e4))
		return 1
	})
	if err != nil {
		b.Fatal(err)
	}
	addrList = filepath.Join(dir, "addrs.txt")
	listSize, listAddrs, err = writeFile(addrList, 8<<20, func(w *bufio.Writer) int {
		fmt.Fprintf(w, "64:ff9b::%x:%x\n", 0x100+r.IntN(0xdf00), r.IntN(0x10000))
		return 1
	})
	if err != nil {
		b.Fatal(err)
	}
}

// writeFile writes lines until the file holds size bytes and returns its
// size and the sum of what line returned (addresses written).
func writeFile(path string, size int64, line func(*bufio.Writer) int) (int64, int, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	w := bufio.NewWriter(f)
	addrs := 0
	for w.Size() > 0 {
		addrs += line(w)
		if st, _ := f.Stat(); st != nil && st.Size()+int64(w.Buffered()) >= size {
			break
		}
	}
	if err := w.Flush(); err != nil {
		return 0, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	return st.Size(), addrs, f.Close()
}

// command returns the path of a program the benchmark runs, or skips.
func command(b *testing.B, name string) string {
	b.Helper()
	if name == "nat46calc" {
		p, err := filepath.Abs(filepath.Join("..", "..", "bin", "nat46calc"))
		if err == nil {
			if _, err = os.Stat(p); err == nil {
				return p
			}
		}
		b.Skipf("bin/nat46calc not built (run make): %v", err)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		b.Skipf("%s not installed (tools/install-deps bench installs it)", name)
	}
	return p
}

// run runs the command once per iteration with input on stdin and
// stdout to /dev/null, and reports MB/s and addrs/s.
func run(b *testing.B, input string, size int64, addrs int, name string, args ...string) {
	path := command(b, name)
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	b.SetBytes(size)
	for b.Loop() {
		in, err := os.Open(input)
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(path, args...)
		cmd.Stdin, cmd.Stdout = in, null
		out, err := cmd.StderrPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		msg := make([]byte, 512)
		n, _ := out.Read(msg)
		err = cmd.Wait()
		in.Close()
		if err != nil || n > 0 {
			b.Fatalf("%s %v: %v %s", name, args, err, msg[:n])
		}
	}
	b.ReportMetric(float64(addrs)*float64(b.N)/b.Elapsed().Seconds(), "addrs/s")
}

// BenchmarkFilter compares the filter with the sed floor on the access
// log, then nat46calc with ipv6calc on the address list.
func BenchmarkFilter(b *testing.B) {
	generate(b)
	b.Run("log/sed", func(b *testing.B) { run(b, accessLog, logSize, logAddrs, "sed", "") })
	b.Run("log/nat46calc", func(b *testing.B) { run(b, accessLog, logSize, logAddrs, "nat46calc") })
	b.Run("addrs/sed", func(b *testing.B) { run(b, addrList, listSize, listAddrs, "sed", "") })
	b.Run("addrs/nat46calc", func(b *testing.B) { run(b, addrList, listSize, listAddrs, "nat46calc", "-p", "64:ff9b::/96") })
	b.Run("addrs/ipv6calc", func(b *testing.B) { run(b, addrList, listSize, listAddrs, "ipv6calc", "-A", "convnat64") })
}
