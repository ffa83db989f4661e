package bindshim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExecFails checks that a command that cannot run is reported before
// any alias is linked, and that Exec returns.
func TestExecFails(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, LibraryName)
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := Config{Dir: dir, Host: "a.test", Aliases: []string{"b.test"}, Port: 443, Mode: 0o660, GID: -1, HeaderTimeout: time.Second}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	warned := 0
	err := c.Exec(lib, []string{"/nonexistent/server"}, nil, func(error) { warned++ })
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/server") || warned != 0 {
		t.Errorf("Exec of a missing program: %v, %d warnings; want an error naming it", err, warned)
	}
	if _, err := os.Lstat(filepath.Join(dir, "b.test")); !os.IsNotExist(err) {
		t.Errorf("alias b.test: %v; want none linked for a command that cannot run", err)
	}
}
