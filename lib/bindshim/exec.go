package bindshim

import (
	"fmt"
	"os/exec"
	"syscall"
)

// Exec runs command in place of the calling process with the preload
// library lib (FindLibrary) and c in its environment, after linking c's
// aliases: bindshim's last step. command[0] is looked up in PATH first,
// so that a name that cannot run leaves no alias behind. warn gets a
// problem that does not stop the command: a program the library cannot
// reach (Preloadable). Exec returns only on failure.
func (c *Config) Exec(lib string, command, environ []string, warn func(error)) error {
	env, err := c.Environ(environ, lib)
	if err != nil {
		return err
	}
	path, err := exec.LookPath(command[0])
	if err != nil {
		return err
	}
	if err := Preloadable(path); err != nil {
		warn(err)
	}
	if err := c.LinkAliases(); err != nil {
		return err
	}
	err = syscall.Exec(path, command, env)
	return fmt.Errorf("exec %s: %w", path, err)
}
