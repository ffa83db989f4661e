// Package bindshim prepares what bindshim needs to run an unmodified TCP server
// on a UNIX socket: it finds the preload library, writes the environment
// the library reads, and links alias names to the server's socket.
//
// The library (libbindshim.so, from cmd/bindshim/preload) does the work
// inside the server; this package only checks the configuration up front,
// so that a mistake is a clear message from the launcher rather than a
// failed bind() deep inside someone else's program.
package bindshim

import (
	"crypto/rand"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/snitools/snitools/lib/hostname"
	"github.com/snitools/snitools/lib/version"
)

// LibraryName is the file name of the preload library.
const LibraryName = "libbindshim.so"

// maxSocketPath is the longest socket path bind() takes: sun_path holds
// 108 bytes with the terminating NUL.
const maxSocketPath = 107

// replaceSuffix is the room a replacing server needs for its temporary
// socket name beside the real one: "~" and 7 random characters (the
// preload library's temp_name).
const replaceSuffix = len("~abcdefg")

// Config is what the launcher's flags say. The zero value is not useful:
// Dir and Host are required.
type Config struct {
	Dir           string        // socket directory, such as /var/tls
	Host          string        // the server's name; its socket is Dir/Host
	Aliases       []string      // more names, linked to Host's socket
	Port          int           // TCP port whose binds become the socket
	Mode          fs.FileMode   // permission bits of the socket file
	GID           int           // group of the socket file; -1 leaves it
	TrustUIDs     []int         // uids besides root allowed to send PROXY headers or hand over connections
	Replace       bool          // take over a live socket and aliases
	HeaderTimeout time.Duration // how long to wait for a PROXY header or handoff message
	// Handoff makes the socket a SOCK_SEQPACKET one to which snilisten
	// passes each client's TCP socket itself (lib/handoff), instead of a
	// stream socket with a PROXY header on each connection: the socket
	// type is how snilisten knows which to do.
	Handoff bool
}

// Check validates c and puts its names in canonical form: the host and
// aliases must be DNS names (lib/hostname), the directory must exist, and
// the socket path must fit in a sockaddr_un. Errors name the launcher's
// flag for the field at fault.
func (c *Config) Check() error {
	host, err := hostname.Canonical(c.Host)
	if err != nil {
		return fmt.Errorf("host: %w", err)
	}
	c.Host = host
	seen := map[string]bool{host: true}
	aliases := c.Aliases[:0:0]
	for _, a := range c.Aliases {
		name, err := hostname.Canonical(a)
		if err != nil {
			return fmt.Errorf("-alias: %w", err)
		}
		if !seen[name] {
			seen[name] = true
			aliases = append(aliases, name)
		}
	}
	c.Aliases = aliases
	if c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("-p %d: want a port from 1 to 65535", c.Port)
	}
	if c.Mode&^fs.ModePerm != 0 {
		return fmt.Errorf("-m %#o: want permission bits only (at most 0777)", uint32(c.Mode))
	}
	if c.HeaderTimeout < time.Millisecond || c.HeaderTimeout > time.Hour {
		return fmt.Errorf("-header-timeout %v: want 1ms to 1h", c.HeaderTimeout)
	}
	for _, u := range c.TrustUIDs {
		if u < 0 || u >= 1<<32-1 {
			return fmt.Errorf("-trust-uid %d: out of range", u)
		}
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return fmt.Errorf("-d: socket directory %q: %w", c.Dir, err)
	}
	c.Dir = dir
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("-d: socket directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("-d: socket directory %s: not a directory", dir)
	}
	limit := maxSocketPath
	if c.Replace {
		limit -= replaceSuffix
	}
	if p := c.SocketPath(); len(p) > limit {
		return fmt.Errorf("socket path %s: %d bytes, longer than the %d a UNIX socket address holds", p, len(p), limit)
	}
	return nil
}

// SocketPath is where the server's socket is bound: Dir/Host.
func (c *Config) SocketPath() string { return filepath.Join(c.Dir, c.Host) }

// Environ returns env with LD_PRELOAD naming lib first and the BINDSHIM_*
// variables the library reads set from c. Variables of an outer bindshim
// are dropped, so nesting does not leak settings.
func (c *Config) Environ(env []string, lib string) ([]string, error) {
	if strings.ContainsAny(lib, ": \t\n") {
		return nil, fmt.Errorf("preload library path %q: LD_PRELOAD cannot hold a path with a colon or blank", lib)
	}
	preload := lib
	out := make([]string, 0, len(env)+8)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "LD_PRELOAD":
			for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == ':' || r == ' ' }) {
				if p != lib {
					preload += ":" + p
				}
			}
			continue
		case strings.HasPrefix(k, "BINDSHIM_") && k != "BINDSHIM_LIBRARY":
			continue
		}
		out = append(out, kv)
	}
	uids := make([]string, len(c.TrustUIDs))
	for i, u := range c.TrustUIDs {
		uids[i] = strconv.Itoa(u)
	}
	ms := c.HeaderTimeout.Milliseconds()
	out = append(out,
		"LD_PRELOAD="+preload,
		"BINDSHIM_SOCKET="+c.SocketPath(),
		"BINDSHIM_PORT="+strconv.Itoa(c.Port),
		"BINDSHIM_MODE="+strconv.FormatUint(uint64(c.Mode), 8),
		"BINDSHIM_TRUST_UIDS="+strings.Join(uids, ","),
		"BINDSHIM_HEADER_TIMEOUT_MS="+strconv.FormatInt(ms, 10),
	)
	if c.GID >= 0 {
		out = append(out, "BINDSHIM_GID="+strconv.Itoa(c.GID))
	}
	if c.Replace {
		out = append(out, "BINDSHIM_REPLACE=1")
	}
	if c.Handoff {
		out = append(out, "BINDSHIM_HANDOFF=1")
	}
	return out, nil
}

// LinkAliases makes each alias a symbolic link to the host's socket, in the
// same directory, so that a dispatcher looking for Dir/alias reaches the
// server. A link that already points to Host is kept; one that points
// elsewhere is an error unless it dangles or Replace is set, and is then
// replaced atomically. Anything else at an alias's path is never touched.
func (c *Config) LinkAliases() error {
	for _, a := range c.Aliases {
		if err := c.link(a); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) link(alias string) error {
	path := filepath.Join(c.Dir, alias)
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Symlink(c.Host, path); err != nil {
			return fmt.Errorf("link alias: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("link alias: %w", err)
	case st.Mode()&fs.ModeSymlink == 0:
		return fmt.Errorf("link alias %s: exists and is not a symbolic link", path)
	}
	target, err := os.Readlink(path)
	if err != nil {
		return fmt.Errorf("link alias: %w", err)
	}
	if target == c.Host {
		return nil
	}
	if _, err := os.Stat(path); err == nil && !c.Replace {
		return fmt.Errorf("link alias %s: already points to %s (-replace takes it over)", path, target)
	}
	tmp, err := tempSymlink(c.Host, path)
	if err != nil {
		return fmt.Errorf("link alias: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link alias: %w", err)
	}
	return nil
}

// tempSymlinkTries is how many random names tempSymlink tries: one taken
// by chance is already unlikely.
const tempSymlinkTries = 8

// tempSymlink makes a symbolic link to target at a random name beside
// path ("~" and random characters, which no host name has) and returns
// that name. The name must not be guessable: in a shared sticky directory
// such as /var/tls, another member of the group could otherwise create it
// first, and the server could neither remove it nor link there. A name
// that is taken is left alone and another tried.
func tempSymlink(target, path string) (string, error) {
	var err error
	for range tempSymlinkTries {
		tmp := path + "~" + rand.Text()[:12]
		if err = os.Symlink(target, tmp); err == nil {
			return tmp, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	return "", err
}

// FindLibrary returns the path of the preload library. override, from
// $BINDSHIM_LIBRARY, wins when set; otherwise the library is looked for
// beside exe (a build tree's bin/), in the directory `make install` uses
// (version.LibDir), and in the Debian multiarch directory.
func FindLibrary(exe, override string) (string, error) {
	if override != "" {
		p, err := filepath.Abs(override)
		if err == nil {
			err = isFile(p)
		}
		if err != nil {
			return "", fmt.Errorf("BINDSHIM_LIBRARY: %w", err)
		}
		return p, nil
	}
	dirs := []string{filepath.Dir(exe), version.LibDir}
	if t := Triplet(runtime.GOARCH); t != "" {
		dirs = append(dirs, filepath.Join("/usr/lib", t, "snitools"))
	}
	var tried []string
	for _, d := range dirs {
		p := filepath.Join(d, LibraryName)
		if isFile(p) == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", fmt.Errorf("find %s: not in %s (install it, or set BINDSHIM_LIBRARY)", LibraryName, strings.Join(tried, ", "))
}

func isFile(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", p)
	}
	return nil
}

// Triplet is the Debian multiarch name of a Go architecture, as in
// /usr/lib/x86_64-linux-gnu; "" for one it does not know.
func Triplet(goarch string) string {
	return map[string]string{
		"amd64":    "x86_64-linux-gnu",
		"arm64":    "aarch64-linux-gnu",
		"386":      "i386-linux-gnu",
		"arm":      "arm-linux-gnueabihf",
		"ppc64le":  "powerpc64le-linux-gnu",
		"s390x":    "s390x-linux-gnu",
		"riscv64":  "riscv64-linux-gnu",
		"mips64le": "mips64el-linux-gnuabi64",
		"loong64":  "loongarch64-linux-gnu",
	}[goarch]
}

// ErrNotPreloadable is wrapped by Preloadable's errors.
var ErrNotPreloadable = errors.New("LD_PRELOAD cannot reach it")

// Preloadable tells whether the dynamic loader will load the library into
// the program at path: not if it is statically linked, and not in effect if
// it is a Go program, which makes its own system calls instead of calling
// libc's bind. Anything that is not ELF (a script) is given the benefit of
// the doubt.
func Preloadable(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	interp := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp = true
		}
	}
	if !interp {
		return fmt.Errorf("%s is statically linked: %w", path, ErrNotPreloadable)
	}
	if _, err := buildinfo.ReadFile(path); err == nil {
		return fmt.Errorf("%s is a Go program, which binds without libc: %w", path, ErrNotPreloadable)
	}
	return nil
}

// LookupUID returns the uid a user name or number stands for.
func LookupUID(s string) (int, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return int(n), nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, fmt.Errorf("look up user: %w", err)
	}
	return strconv.Atoi(u.Uid)
}

// LookupGID returns the gid a group name or number stands for.
func LookupGID(s string) (int, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return int(n), nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("look up group: %w", err)
	}
	return strconv.Atoi(g.Gid)
}
