package tests

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The package test builds the Debian package with `make deb`, installs it
// into this machine with dpkg, checks what an operator relies on, and
// removes and purges it again. It changes the real system, so it runs
// only as root, only where snitools is not already installed and the
// socket directories do not exist yet, and it puts back what it changed
// (the group and user that purge keeps on purpose are deleted at the end
// if the test made them).

// pkgCommands are the commands the package ships in /usr/bin.
var pkgCommands = []string{"bindshim", "nat46calc", "redirect80", "snilisten", "snipeek"}

// pkgSocketDirs are the directories the tmpfiles.d entry creates.
var pkgSocketDirs = []string{"/var/tls", "/var/http"}

// pkgServer is a TLS server with python3's http.server that binds port 443
// like any unmodified server; under bindshim the bind becomes the socket.
// Its reply names the client address it was given.
const pkgServer = `import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("served-by=package-test client=%s\n" % self.client_address[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
srv = http.server.HTTPServer(("127.0.0.1", 443), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("serving", flush=True)
srv.serve_forever()
`

// pkgTry is a python3 program that does one file system or socket
// operation on a path and prints "ok" or the error's name.
const pkgTry = `import os, socket, sys
op, path = sys.argv[1], sys.argv[2]
try:
    if op == "bind":
        socket.socket(socket.AF_UNIX).bind(path)
    elif op == "connect":
        socket.socket(socket.AF_UNIX).connect(path)
    elif op == "unlink":
        os.unlink(path)
    print("ok")
except OSError as e:
    print(type(e).__name__)
`

func TestPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and installs the Debian package (not in -short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (installs the package with dpkg)")
	}
	need(t, "dpkg", "dpkg-buildpackage", "dh", "make", "cc", "git", "file", "man",
		"systemd-analyze", "systemd-tmpfiles", "systemd-sysusers", "python3")
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "snitools").Output(); strings.HasPrefix(string(out), "i") {
		t.Skip("snitools is installed on this machine; the test would replace and purge it")
	}
	for _, d := range pkgSocketDirs {
		if _, err := os.Lstat(d); err == nil {
			t.Skipf("%s exists; the test would change and remove it", d)
		}
	}
	hadGroup := pkgExists("group", "snitools")
	hadUser := pkgExists("passwd", "snilisten")

	// Everything the test may leave is undone, whatever fails.
	t.Cleanup(func() {
		if out, _ := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "snitools").Output(); len(out) > 0 && out[0] != 'u' && out[0] != 'p' {
			if out, err := exec.Command("dpkg", "-P", "snitools").CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg -P snitools: %v\n%s", err, out)
			}
		}
		for _, d := range pkgSocketDirs {
			os.RemoveAll(d)
		}
		if !hadUser && pkgExists("passwd", "snilisten") {
			exec.Command("userdel", "snilisten").Run()
		}
		if !hadGroup && pkgExists("group", "snitools") {
			exec.Command("groupdel", "snitools").Run()
		}
	})

	// Build. The version is git describe; the tree may change while the
	// package builds (others commit), so either end's description counts.
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	before := pkgDescribe(t, root)
	debDir := t.TempDir()
	if out, err := pkgRun(4*time.Minute, "make", "-C", root, "deb", "DEBDIR="+debDir); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	after := pkgDescribe(t, root)
	debs, _ := filepath.Glob(filepath.Join(debDir, "snitools_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v in %s, want one snitools_*.deb", debs, debDir)
	}
	deb := debs[0]

	// Lintian takes a while: it runs while the installed package is checked.
	lintDone := make(chan string, 1)
	if _, err := exec.LookPath("lintian"); err != nil {
		lintDone <- "skip"
	} else {
		go func() {
			out, err := pkgRun(3*time.Minute, "lintian", "--fail-on", "error", deb)
			if err != nil {
				out = fmt.Sprintf("%s\n(lintian: %v)", out, err)
			} else {
				out = ""
			}
			lintDone <- out
		}()
	}

	triplet := strings.TrimSpace(pkgMust(t, "dpkg-architecture", "-qDEB_HOST_MULTIARCH"))
	libPath := "/usr/lib/" + triplet + "/snitools/libbindshim.so"
	pkgCheckContents(t, deb, before, after, libPath)

	// Install. --path-include undoes a container's path-exclude of man
	// pages (docker's "minimize" images), which would hide them from man.
	if out, err := pkgRun(2*time.Minute, "dpkg", "--path-include=/usr/share/man/*", "-i", deb); err != nil {
		t.Fatalf("dpkg -i %s: %v\n%s", deb, err, out)
	}
	installed := strings.Fields(pkgMust(t, "dpkg", "-L", "snitools"))

	t.Run("ManPages", func(t *testing.T) {
		pages, _ := filepath.Glob("../man/*.[0-9]")
		if len(pages) == 0 {
			t.Fatal("no pages in ../man")
		}
		for _, p := range pages {
			base := filepath.Base(p)
			name, section := base[:len(base)-2], base[len(base)-1:]
			out, err := exec.Command("man", "-w", section, name).CombinedOutput()
			want := fmt.Sprintf("/usr/share/man/man%s/%s.gz", section, base)
			if err != nil || strings.TrimSpace(string(out)) != want {
				t.Errorf("man -w %s %s: %v %q, want %s", section, name, err, out, want)
			}
		}
	})

	t.Run("UnitsVerify", func(t *testing.T) {
		var units []string
		for _, f := range installed {
			if strings.Contains(f, "/systemd/system/") && (strings.HasSuffix(f, ".service") || strings.HasSuffix(f, ".socket")) {
				units = append(units, f)
			}
		}
		if len(units) != 4 {
			t.Fatalf("installed units %v, want snilisten and redirect80 .socket and .service", units)
		}
		out, err := exec.Command("systemd-analyze", append([]string{"verify"}, units...)...).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %v: %v\n%s", units, err, out)
		}
		for _, u := range units {
			for _, wants := range []string{"sockets.target.wants", "multi-user.target.wants"} {
				if _, err := os.Lstat(filepath.Join("/etc/systemd/system", wants, filepath.Base(u))); err == nil {
					t.Errorf("%s is enabled (%s): the package must leave that to the operator", u, wants)
				}
			}
		}
	})

	t.Run("StaticAndShared", func(t *testing.T) {
		for _, c := range pkgCommands {
			out := pkgMust(t, "file", "-L", "/usr/bin/"+c)
			if !strings.Contains(out, "ELF") || !strings.Contains(out, "statically linked") {
				t.Errorf("file /usr/bin/%s: %s, want a statically linked ELF executable", c, out)
			}
		}
		out := pkgMust(t, "file", "-L", libPath)
		if !strings.Contains(out, "ELF") || !strings.Contains(out, "shared object") || !strings.Contains(out, "dynamically linked") {
			t.Errorf("file %s: %s, want a dynamically linked ELF shared object", libPath, out)
		}
	})

	t.Run("Version", func(t *testing.T) {
		for _, c := range pkgCommands {
			out, err := exec.Command("/usr/bin/"+c, "-version").CombinedOutput()
			got := strings.TrimSpace(string(out))
			if err != nil || (got != c+" "+before && got != c+" "+after) {
				t.Errorf("%s -version: %v %q, want %q (git describe)", c, err, got, c+" "+after)
			}
		}
	})

	t.Run("BindshimFindsLibrary", func(t *testing.T) {
		dir := pkgOpenDir(t)
		cmd := exec.Command("/usr/bin/bindshim", "-d", dir, "lib.test", "--", "env")
		cmd.Env = bsEnvWithout(os.Environ(), "BINDSHIM_LIBRARY")
		out, err := cmd.CombinedOutput()
		if want := "LD_PRELOAD=" + libPath + "\n"; err != nil || !strings.Contains(string(out), want) {
			t.Errorf("installed bindshim without BINDSHIM_LIBRARY: %v, want %q in:\n%s", err, want, out)
		}
	})

	// The group, the user and the socket directories: what the model
	// rests on.
	grp, err := user.LookupGroup("snitools")
	if err != nil {
		t.Fatalf("group snitools after installation: %v", err)
	}
	gid := pkgAtoi(t, grp.Gid)
	snil, err := user.Lookup("snilisten")
	if err != nil {
		t.Fatalf("user snilisten after installation: %v", err)
	}
	if uid := pkgAtoi(t, snil.Uid); uid == 0 || uid >= 1000 {
		t.Errorf("user snilisten has uid %d, want a system uid (1-999)", uid)
	}

	t.Run("Tmpfiles", func(t *testing.T) {
		for _, d := range pkgSocketDirs {
			pkgCheckDir(t, d, gid) // made by the postinst
			if err := os.Remove(d); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := exec.Command("systemd-tmpfiles", "--create", "snitools.conf").CombinedOutput(); err != nil {
			t.Fatalf("systemd-tmpfiles --create snitools.conf: %v\n%s", err, out)
		}
		for _, d := range pkgSocketDirs {
			pkgCheckDir(t, d, gid)
		}
	})

	t.Run("PermissionModel", func(t *testing.T) {
		pkgPermissionModel(t, gid, snil)
	})

	// Remove, then purge.
	if out, err := pkgRun(time.Minute, "dpkg", "-r", "snitools"); err != nil {
		t.Fatalf("dpkg -r snitools: %v\n%s", err, out)
	}
	if st := pkgStatus(); strings.HasPrefix(st, "i") {
		t.Errorf("after dpkg -r: status %q, want not installed", st)
	}
	pkgCheckGone(t, installed, "dpkg -r")
	for _, d := range pkgSocketDirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("after dpkg -r: %v (remove keeps the socket directories)", err)
		}
	}
	// A socket directory still in use is kept on purge, an empty one goes.
	os.RemoveAll("/var/tls/pkg.test")
	marker := "/var/http/in-use.test"
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := pkgRun(time.Minute, "dpkg", "-P", "snitools"); err != nil {
		t.Fatalf("dpkg -P snitools: %v\n%s", err, out)
	}
	if st := pkgStatus(); st != "" && st[0] != 'u' && st[0] != 'p' {
		t.Errorf("after dpkg -P: status %q, want unknown or purged", st)
	}
	pkgCheckGone(t, installed, "dpkg -P")
	if _, err := os.Lstat("/var/tls"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after dpkg -P: /var/tls, empty, is still there (%v)", err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("after dpkg -P: /var/http, not empty, is gone: %v", err)
	}
	// Policy keeps system users and groups: files may still belong to them.
	if !pkgExists("group", "snitools") || !pkgExists("passwd", "snilisten") {
		t.Errorf("after dpkg -P: group snitools or user snilisten removed; purge must keep them")
	}

	if out := <-lintDone; out == "skip" {
		t.Log("lintian not installed: not run (tools/install-deps test installs it)")
	} else if out != "" {
		t.Errorf("lintian reports errors:\n%s", out)
	}
}

// pkgCheckContents checks the package's control fields and file list
// before it is installed.
func pkgCheckContents(t *testing.T, deb, before, after, libPath string) {
	t.Helper()
	version := strings.TrimSpace(pkgMust(t, "dpkg-deb", "-f", deb, "Version"))
	var want []string
	for _, v := range []string{before, after} {
		want = append(want, strings.TrimSpace(pkgMust(t, "../tools/debversion", v)))
	}
	if version != want[0] && version != want[1] {
		t.Errorf("package version %q, want %q (tools/debversion of git describe)", version, want[1])
	}
	list := pkgMust(t, "dpkg-deb", "-c", deb)
	files := map[string]bool{}
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) >= 6 {
			files[strings.TrimPrefix(f[5], ".")] = true
		}
	}
	expect := []string{
		libPath,
		"/usr/share/doc/snitools/copyright",
		"/usr/lib/tmpfiles.d/snitools.conf",
		"/usr/lib/sysusers.d/snitools.conf",
	}
	for _, c := range pkgCommands {
		expect = append(expect, "/usr/bin/"+c)
	}
	pages, _ := filepath.Glob("../man/*.[0-9]")
	for _, p := range pages {
		b := filepath.Base(p)
		expect = append(expect, "/usr/share/man/man"+b[len(b)-1:]+"/"+b+".gz")
	}
	rules, _ := filepath.Glob("../dist/prometheus/*.yml")
	for _, r := range rules {
		if !strings.HasSuffix(r, "_test.yml") {
			expect = append(expect, "/usr/share/snitools/"+filepath.Base(r))
		}
	}
	units, _ := filepath.Glob("../dist/systemd/*.s*")
	for _, u := range units {
		if !files["/lib/systemd/system/"+filepath.Base(u)] && !files["/usr/lib/systemd/system/"+filepath.Base(u)] {
			t.Errorf("package lacks the unit %s", filepath.Base(u))
		}
	}
	for _, f := range expect {
		if !files[f] {
			t.Errorf("package lacks %s", f)
		}
	}
	if t.Failed() {
		t.Logf("dpkg-deb -c %s:\n%s", deb, list)
	}
}

// pkgCheckDir checks that d is a directory of root and gid with mode
// 3770: group members create sockets, others may not even enter it,
// sockets take the directory's group, and only a socket's owner removes it.
func pkgCheckDir(t *testing.T, d string, gid int) {
	t.Helper()
	st, err := os.Lstat(d)
	if err != nil {
		t.Errorf("socket directory: %v", err)
		return
	}
	sys := st.Sys().(*syscall.Stat_t)
	mode := sys.Mode & 0o7777
	if !st.IsDir() || sys.Uid != 0 || int(sys.Gid) != gid || mode != 0o3770 {
		t.Errorf("%s: %v uid %d gid %d mode %#o, want a directory of root, gid %d (snitools), mode 03770", d, st.Mode(), sys.Uid, sys.Gid, mode, gid)
	}
}

// pkgPermissionModel runs the installed snilisten as the package's user
// with the group snitools (what snilisten.service does), a backend under
// the installed bindshim with its default flags as a member of the group,
// and checks that a request is served through /var/tls while non-members
// can neither create nor reach sockets there and members cannot remove
// each other's.
func pkgPermissionModel(t *testing.T, gid int, snil *user.User) {
	const member, member2, outsider = 61901, 61902, 61903
	const nogroup = 65534
	asMember := &syscall.Credential{Uid: member, Gid: nogroup, Groups: []uint32{uint32(gid)}}
	asMember2 := &syscall.Credential{Uid: member2, Gid: nogroup, Groups: []uint32{uint32(gid)}}
	asOutsider := &syscall.Credential{Uid: outsider, Gid: nogroup, Groups: []uint32{}}

	// The backend's certificate and script, readable by the member only.
	pki := testPKI(t)
	dir := pkgOpenDir(t)
	script := filepath.Join(dir, "server.py")
	try := filepath.Join(dir, "try.py")
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []struct{ from, to, text string }{
		{"", script, pkgServer}, {"", try, pkgTry}, {pki.CertFile, cert, ""}, {pki.KeyFile, key, ""},
	} {
		b := []byte(f.text)
		if f.from != "" {
			var err error
			if b, err = os.ReadFile(f.from); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(f.to, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(key, member, nogroup); err != nil {
		t.Fatal(err)
	}

	// python3 from a directory that every uid may enter (not a pyenv shim
	// under /root).
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skipf("%s not installed (tools/install-deps test installs python3)", python)
	}
	backend := exec.Command("/usr/bin/bindshim", "-trust-uid", "snilisten", "pkg.test", "--", python, script, cert, key)
	backend.Env = bsEnvWithout(os.Environ(), "BINDSHIM_LIBRARY")
	backend.Dir = "/"
	backend.SysProcAttr = &syscall.SysProcAttr{Credential: asMember}
	bp := start(t, backend)
	sock := "/var/tls/pkg.test"
	waitFor(t, 15*time.Second, "the backend's socket "+sock, func() bool {
		if bp.Exited() {
			t.Fatalf("backend exited:\n%s", bp.Output())
		}
		return strings.Contains(bp.Output(), "serving")
	})
	// bindshim's defaults (-m 0660, the directory's group) let snilisten in.
	if st, err := os.Lstat(sock); err != nil {
		t.Fatal(err)
	} else if sys := st.Sys().(*syscall.Stat_t); st.Mode()&fs.ModeSocket == 0 || sys.Uid != member || int(sys.Gid) != gid || sys.Mode&0o7777 != 0o660 {
		t.Errorf("%s: %v uid %d gid %d, want a socket of uid %d, gid %d (snitools), mode 0660", sock, st.Mode(), sys.Uid, sys.Gid, member, gid)
	}

	suid, sgid := pkgAtoi(t, snil.Uid), pkgAtoi(t, snil.Gid)
	listener := exec.Command("/usr/bin/snilisten", "-listen", "tcp:127.0.0.1:0", "-mode", "unix", "-unix-directory", "/var/tls", "-proxy-proto")
	listener.Dir = "/"
	listener.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(suid), Gid: uint32(sgid), Groups: []uint32{uint32(gid)}}}
	lp := start(t, listener)
	var addr string
	waitFor(t, 10*time.Second, "snilisten to listen", func() bool {
		if m := listeningRE.FindStringSubmatch(lp.Output()); m != nil {
			addr = m[1]
			return true
		}
		if lp.Exited() {
			t.Fatalf("snilisten exited:\n%s", lp.Output())
		}
		return false
	})
	body, err := httpsGet(t, addr, "pkg.test", "/")
	if err != nil || !strings.Contains(body, "served-by=package-test client=127.0.0.1\n") {
		t.Errorf("GET https://pkg.test/ through snilisten: %v %q, want the backend's reply naming client 127.0.0.1 (from the PROXY header)", err, body)
	}

	for _, c := range []struct {
		who       string
		cred      *syscall.Credential
		op, path  string
		want      string
		forbidden string
	}{
		{"a non-member", asOutsider, "bind", "/var/tls/intruder.test", "PermissionError", "create a socket in /var/tls"},
		{"a non-member", asOutsider, "connect", sock, "PermissionError", "connect to a socket in /var/tls"},
		{"a non-member", asOutsider, "bind", "/var/http/intruder.test", "PermissionError", "create a socket in /var/http"},
		{"another member", asMember2, "unlink", sock, "PermissionError", "remove another member's socket"},
		{"another member", asMember2, "bind", "/var/tls/other.test", "ok", ""},
	} {
		out, err := pkgAs(c.cred, python, try, c.op, c.path)
		if got := strings.TrimSpace(out); err != nil || got != c.want {
			if c.forbidden != "" {
				t.Errorf("%s could %s (%s %s: %v %q, want %s)", c.who, c.forbidden, c.op, c.path, err, got, c.want)
			} else {
				t.Errorf("%s: %s %s: %v %q, want %s", c.who, c.op, c.path, err, got, c.want)
			}
		}
	}
	if _, err := os.Lstat("/var/tls/intruder.test"); err == nil {
		t.Errorf("/var/tls/intruder.test exists")
	}
	os.Remove("/var/tls/other.test")

	lp.Signal(t, syscall.SIGTERM)
	lp.Wait(t, 45*time.Second)
	bp.Signal(t, syscall.SIGTERM)
	bp.Wait(t, 15*time.Second)
}

// pkgCheckGone checks that no file the package installed is left: its
// directories may stay only if they are shared with other packages.
func pkgCheckGone(t *testing.T, installed []string, after string) {
	t.Helper()
	for _, f := range installed {
		st, err := os.Lstat(f)
		if err != nil {
			continue
		}
		if (st.IsDir() || st.Mode()&fs.ModeSymlink != 0) && !strings.Contains(f, "snitools") {
			continue // /usr/bin, /lib -> usr/lib and the like
		}
		t.Errorf("after %s: %s is still there", after, f)
	}
}

// pkgOpenDir makes a directory under /tmp that every uid may enter.
func pkgOpenDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "snitools-pkg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pkgAs runs a command with cred and returns its output.
func pkgAs(cred *syscall.Credential, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pkgRun runs a command for at most d and returns its combined output.
func pkgRun(d time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// pkgMust runs a command and fails the test if it fails.
func pkgMust(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := pkgRun(time.Minute, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// pkgDescribe is the version the Makefile stamps into the commands.
func pkgDescribe(t *testing.T, root string) string {
	t.Helper()
	return strings.TrimSpace(pkgMust(t, "git", "-C", root, "describe", "--tags", "--always", "--dirty"))
}

// pkgStatus is dpkg's abbreviated status of snitools, "" if unknown.
func pkgStatus() string {
	out, _ := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "snitools").Output()
	return string(out)
}

// pkgExists tells whether getent finds name in database (group, passwd).
func pkgExists(database, name string) bool {
	return exec.Command("getent", database, name).Run() == nil
}

func pkgAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
