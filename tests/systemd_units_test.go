package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnitsVerify runs systemd-analyze verify on every unit in
// dist/systemd, with ExecStart pointing at the built commands and the man
// pages of man/ on MANPATH, so that Documentation= is checked too.
func TestSystemdUnitsVerify(t *testing.T) {
	need(t, "systemd-analyze", "man")
	units, _ := filepath.Glob("../dist/systemd/*.s*")
	if len(units) == 0 {
		t.Fatal("no units in dist/systemd")
	}
	dir := t.TempDir()
	manDir := filepath.Join(dir, "man")
	pages, _ := filepath.Glob("../man/*.[0-9]")
	for _, page := range pages {
		section := "man" + page[len(page)-1:]
		os.MkdirAll(filepath.Join(manDir, section), 0o755)
		b, _ := os.ReadFile(page)
		os.WriteFile(filepath.Join(manDir, section, filepath.Base(page)), b, 0o644)
	}
	binDir, _ := filepath.Abs("../bin")
	var args []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/usr/bin/", binDir+"/")
		dst := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(dst, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, dst)
	}
	cmd := exec.Command("systemd-analyze", append([]string{"verify"}, args...)...)
	cmd.Env = append(os.Environ(), "MANPATH="+manDir)
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify %v: %v\n%s", units, err, out)
	}
}
