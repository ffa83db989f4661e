// Command demo is `make demo`: it runs snilisten for real on this machine
// with no configuration. It makes a throwaway certificate authority, starts
// two HTTPS backends on UNIX sockets in a temporary directory, starts
// bin/snilisten on a loopback port in front of them, asks for both names
// with curl, shows snilisten's log lines, routes an HTTP/3 request over
// QUIC through a second snilisten (tcp mode, on UDP), shows what snipeek reads from
// the bundled ClientHello captures, and cleans everything up.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	dir, err := os.MkdirTemp("/tmp", "snitools-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	socks := filepath.Join(dir, "tls")
	if err := os.Mkdir(socks, 0o750); err != nil {
		return err
	}
	caFile, cert, err := makeCertificates(dir)
	if err != nil {
		return fmt.Errorf("make certificates: %w", err)
	}

	step("1. Two HTTPS servers, each on a UNIX socket named after its host, in " + socks)
	for _, name := range []string{"blog.demo.test", "shop.demo.test"} {
		if err := serveBackend(filepath.Join(socks, name), name, cert); err != nil {
			return err
		}
		fmt.Printf("   %s\n", filepath.Join(socks, name))
	}

	step("2. snilisten in front of them, on a loopback port")
	cmdline := []string{"bin/snilisten", "-listen", "tcp:127.0.0.1:0", "-mode", "unix", "-unix-directory", socks, "-proxy-proto"}
	snilisten, lines, addr, err := startSnilisten(cmdline)
	if err != nil {
		return err
	}
	defer snilisten.Process.Kill()
	port := addr[strings.LastIndexByte(addr, ':')+1:]

	step("3. curl asks for each name through snilisten; each backend answers for itself")
	for _, name := range []string{"blog.demo.test", "shop.demo.test", "nobody.demo.test"} {
		args := []string{"-sS", "--cacert", caFile, "--resolve", name + ":" + port + ":127.0.0.1", "https://" + name + ":" + port + "/"}
		fmt.Printf("   $ curl %s\n", strings.Join(args, " "))
		out, err := exec.Command("curl", args...).CombinedOutput()
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			fmt.Printf("     %s\n", l)
		}
		if err != nil && name != "nobody.demo.test" {
			return fmt.Errorf("curl %s: %v", name, err)
		}
	}

	step("4. snilisten's log: one line per connection")
	snilisten.Process.Signal(syscall.SIGTERM)
	for l := range lines {
		fmt.Printf("   %s\n", l)
	}
	snilisten.Wait()

	step("5. HTTP/3: snilisten routes QUIC on UDP too (tcp mode: to the name's address)")
	if err := demoQUIC(cert, caFile); err != nil {
		return err
	}

	step("6. snipeek reads what real clients' ClientHellos say")
	captures, _ := filepath.Glob("lib/clienthello/testdata/captures/*.bin")
	for _, c := range captures {
		for _, want := range []string{"curl-default", "go-alpn", "openssl-upper"} {
			if strings.Contains(c, want) {
				out, err := exec.Command("bin/snipeek", "-json", c).CombinedOutput()
				if err != nil {
					return fmt.Errorf("snipeek %s: %v\n%s", c, err, out)
				}
				fmt.Printf("   $ snipeek -json %s\n     %s\n", c, strings.TrimSpace(string(out)))
			}
		}
	}
	fmt.Println("\nDone; everything the demo made is removed. Next: make test, and man/snilisten.8.")
	return nil
}

func step(s string) { fmt.Printf("\n== %s\n", s) }

// startSnilisten prints and runs cmdline, and returns the process, its
// log lines as they come, and the address it listens on once it says so.
func startSnilisten(cmdline []string) (*exec.Cmd, <-chan string, string, error) {
	fmt.Printf("   $ %s\n", strings.Join(cmdline, " "))
	cmd := exec.Command(cmdline[0], cmdline[1:]...)
	logs, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, "", fmt.Errorf("start snilisten (run make first): %w", err)
	}
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(logs)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	addr, err := listeningAddress(lines)
	if err != nil {
		cmd.Process.Kill()
		return nil, nil, "", err
	}
	return cmd, lines, addr, nil
}

var listeningRE = regexp.MustCompile(`msg=listening address=(\S+)`)

func listeningAddress(lines <-chan string) (string, error) {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return "", fmt.Errorf("snilisten exited before listening")
			}
			fmt.Printf("   %s\n", l)
			if m := listeningRE.FindStringSubmatch(l); m != nil {
				return m[1], nil
			}
		case <-timeout:
			return "", fmt.Errorf("snilisten did not listen within 10s")
		}
	}
}

// serveBackend serves HTTPS on a UNIX socket, reading the PROXY header
// snilisten sends so that it can show the real client address.
func serveBackend(path, name string, cert tls.Certificate) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	pl := &proxyproto.Listener{Listener: ln}
	srv := &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "Hello from %s: you are %s, you asked for %q over %s\n", name, r.RemoteAddr, r.TLS.ServerName, tlsVersion(r.TLS.Version))
		}),
		ErrorLog: nil,
	}
	go srv.ServeTLS(pl, "", "")
	return nil
}

func tlsVersion(v uint16) string {
	if v == tls.VersionTLS13 {
		return "TLS 1.3"
	}
	return fmt.Sprintf("TLS 0x%04x", v)
}

// makeCertificates writes a demo CA to dir/ca.pem and returns a server
// certificate for *.demo.test signed by it.
func makeCertificates(dir string) (string, tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", tls.Certificate{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "snitools demo CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", tls.Certificate{}, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", tls.Certificate{}, err
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "demo"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: []string{"*.demo.test", "localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", tls.Certificate{}, err
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return "", tls.Certificate{}, err
	}
	return caFile, tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}, nil
}
