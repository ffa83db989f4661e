package bindshim

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func valid(dir string) Config {
	return Config{Dir: dir, Host: "Example.COM.", Port: 443, Mode: 0o660, GID: -1, HeaderTimeout: time.Second}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	c := valid(dir)
	c.Aliases = []string{"WWW.example.com", "www.example.com.", "example.com"}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	if c.Host != "example.com" || !slices.Equal(c.Aliases, []string{"www.example.com"}) {
		t.Errorf("canonical names: host %q aliases %q", c.Host, c.Aliases)
	}
	if c.SocketPath() != filepath.Join(dir, "example.com") {
		t.Errorf("socket path %q", c.SocketPath())
	}

	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	long := strings.Repeat("a", 50) + "." + strings.Repeat("b", 50) // fits alone, not beside /tmp/...
	for _, c := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.Host = "../etc" }, "host"},
		{func(c *Config) { c.Host = "192.0.2.1" }, "host"},
		{func(c *Config) { c.Aliases = []string{"a/b"} }, "-alias"},
		{func(c *Config) { c.Port = 0 }, "-p"},
		{func(c *Config) { c.Port = 65536 }, "-p"},
		{func(c *Config) { c.Mode = 0o4755 }, "-m"},
		{func(c *Config) { c.HeaderTimeout = 0 }, "-header-timeout"},
		{func(c *Config) { c.TrustUIDs = []int{-1} }, "-trust-uid"},
		{func(c *Config) { c.Dir = filepath.Join(dir, "missing") }, "-d: socket directory"},
		{func(c *Config) { c.Dir = file }, "not a directory"},
		{func(c *Config) { c.Host = long }, "longer than"},
	} {
		cfg := valid(dir)
		c.change(&cfg)
		if err := cfg.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("config %+v: %v, want an error about %q", cfg, err, c.want)
		}
	}

	// -replace needs room for the temporary name beside the socket.
	c = valid(dir)
	n := maxSocketPath - len(dir) - 1 - replaceSuffix + 1
	c.Host = strings.TrimRight(strings.Repeat("hhhhhhhhh.", n)[:n-1], ".") + "h"
	c.Host += strings.Repeat("h", n-len(c.Host))
	if err := c.Check(); err != nil {
		t.Fatalf("host of %d bytes without -replace: %v", len(c.Host), err)
	}
	c.Replace = true
	if err := c.Check(); err == nil {
		t.Errorf("host of %d bytes with -replace: no error", len(c.Host))
	}
}

func TestEnviron(t *testing.T) {
	c := valid(t.TempDir())
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	c.TrustUIDs = []int{65534, 7}
	c.GID = 33
	c.HeaderTimeout = 1500 * time.Millisecond
	env, err := c.Environ([]string{
		"PATH=/bin", "LD_PRELOAD=/lib/other.so /lib/libbindshim.so:/lib/third.so",
		"BINDSHIM_REPLACE=1", "BINDSHIM_LIBRARY=/lib/libbindshim.so",
	}, "/lib/libbindshim.so")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"PATH=/bin", "BINDSHIM_LIBRARY=/lib/libbindshim.so",
		"LD_PRELOAD=/lib/libbindshim.so:/lib/other.so:/lib/third.so",
		"BINDSHIM_SOCKET=" + c.SocketPath(), "BINDSHIM_PORT=443", "BINDSHIM_MODE=660",
		"BINDSHIM_TRUST_UIDS=65534,7", "BINDSHIM_HEADER_TIMEOUT_MS=1500", "BINDSHIM_GID=33",
	}
	if !slices.Equal(env, want) {
		t.Errorf("environment:\n got %q\nwant %q", env, want)
	}
	if _, err := c.Environ(nil, "/a b/libbindshim.so"); err == nil {
		t.Error("a library path with a blank was accepted")
	}
	// -handoff, and an inherited BINDSHIM_HANDOFF dropped without it.
	c.Handoff = true
	env, _ = c.Environ(nil, "/lib/libbindshim.so")
	if !slices.Contains(env, "BINDSHIM_HANDOFF=1") {
		t.Errorf("environment with Handoff: %q", env)
	}
	c.Handoff = false
	env, _ = c.Environ([]string{"BINDSHIM_HANDOFF=1"}, "/lib/libbindshim.so")
	if slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "BINDSHIM_HANDOFF=") }) {
		t.Errorf("environment without Handoff: %q", env)
	}
}

func TestFindLibrary(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "bindshim")
	lib := filepath.Join(dir, LibraryName)

	if _, err := FindLibrary(exe, ""); err == nil || !strings.Contains(err.Error(), lib) {
		if _, e := os.Stat(filepath.Join("/usr/local/lib/snitools", LibraryName)); e != nil {
			t.Errorf("no library anywhere: %v, want an error naming %s", err, lib)
		}
	}
	os.WriteFile(lib, nil, 0o644)
	if got, err := FindLibrary(exe, ""); err != nil || got != lib {
		t.Errorf("library beside the binary: %q, %v", got, err)
	}
	other := filepath.Join(t.TempDir(), "custom.so")
	if _, err := FindLibrary(exe, other); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing override: %v", err)
	}
	os.WriteFile(other, nil, 0o644)
	if got, err := FindLibrary(exe, other); err != nil || got != other {
		t.Errorf("override: %q, %v", got, err)
	}
	if _, err := FindLibrary(exe, dir); err == nil {
		t.Error("a directory as the library was accepted")
	}
	if Triplet("amd64") != "x86_64-linux-gnu" || Triplet("plan9") != "" {
		t.Error("Triplet")
	}
}

func TestLinkAliases(t *testing.T) {
	dir := t.TempDir()
	c := valid(dir)
	c.Aliases = []string{"a.example.com", "b.example.com", "c.example.com", "d.example.com"}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	link := func(name string) string { s, _ := os.Readlink(filepath.Join(dir, name)); return s }
	os.Symlink("example.com", filepath.Join(dir, "b.example.com"))  // already right
	os.Symlink("gone.example", filepath.Join(dir, "c.example.com")) // dangling
	c2 := c
	c2.Aliases = c.Aliases[:3]
	if err := c2.LinkAliases(); err != nil {
		t.Fatal(err)
	}
	for _, a := range c2.Aliases {
		if link(a) != "example.com" {
			t.Errorf("alias %s -> %q", a, link(a))
		}
	}

	// One that belongs to a live name is not taken without Replace.
	os.WriteFile(filepath.Join(dir, "live.example"), nil, 0o644)
	os.Symlink("live.example", filepath.Join(dir, "d.example.com"))
	if err := c.LinkAliases(); err == nil || !strings.Contains(err.Error(), "already points to live.example") {
		t.Errorf("alias of a live name: %v", err)
	}
	c.Replace = true
	if err := c.LinkAliases(); err != nil || link("d.example.com") != "example.com" {
		t.Errorf("alias taken with Replace: %v, -> %q", err, link("d.example.com"))
	}

	// Anything but a symbolic link is never touched, even with Replace.
	os.WriteFile(filepath.Join(dir, "e.example.com"), []byte("keep"), 0o644)
	c.Aliases = []string{"e.example.com"}
	if err := c.LinkAliases(); err == nil {
		t.Error("a regular file at an alias's path was replaced")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "e.example.com")); string(b) != "keep" {
		t.Error("the file at an alias's path changed")
	}
}

func TestPreloadable(t *testing.T) {
	// This test binary is Go: LD_PRELOAD cannot reach its binds.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := Preloadable(self); !errors.Is(err, ErrNotPreloadable) {
		t.Errorf("Go test binary: %v", err)
	}
	script := filepath.Join(t.TempDir(), "script")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	if err := Preloadable(script); err != nil {
		t.Errorf("script: %v", err)
	}
	if sh, err := exec.LookPath("sh"); err == nil {
		if err := Preloadable(sh); err != nil {
			t.Errorf("%s: %v", sh, err)
		}
	}
}

func TestLookup(t *testing.T) {
	if uid, err := LookupUID("0"); err != nil || uid != 0 {
		t.Errorf("uid 0: %d, %v", uid, err)
	}
	if uid, err := LookupUID("root"); err != nil || uid != 0 {
		t.Errorf("user root: %d, %v", uid, err)
	}
	if gid, err := LookupGID("65534"); err != nil || gid != 65534 {
		t.Errorf("gid 65534: %d, %v", gid, err)
	}
	if _, err := LookupGID("no-such-group-here"); err == nil {
		t.Error("unknown group accepted")
	}
	if _, err := LookupUID("no-such-user-here"); err == nil {
		t.Error("unknown user accepted")
	}
}
