package snipeek

import (
	"errors"
	"fmt"
	"io"

	"github.com/snitools/snitools/lib/clienthello"
)

// Describe reads the ClientHello in r (named name in errors) and writes
// what it says to w: key value lines, or one JSON object if jsonOut. It is
// snipeek's file mode.
func Describe(w io.Writer, r io.Reader, name string, jsonOut bool) error {
	info, err := ReadHello(r, clienthello.DefaultLimit)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	s := Summarize(&info)
	if jsonOut {
		return s.WriteJSON(w)
	}
	return s.WriteText(w)
}

// Run is snipeek's exec mode: it peeks at the connection on fd and
// executes the program args[0] (found in PATH) with argv args, environ
// plus TLS_SNI and TLS_ALPN (Environ) as its environment, and the
// connection on its standard input and output. The program is looked up
// first, so that a connection is not peeked at for a program that cannot
// run. Run returns only on failure, which it has logged on cfg.Log (a
// refusal by PeekFD's line, anything else by one error line).
func Run(fd int, args, environ []string, cfg Config) error {
	path, err := LookPath(args[0])
	if err != nil {
		logError(cfg, "cannot run program", err)
		return err
	}
	d, err := PeekFD(fd, cfg)
	if err != nil {
		var ref *Refusal
		if !errors.As(err, &ref) {
			logError(cfg, "peek failed", err)
		}
		return err
	}
	env, err := AsStdio(fd, Environ(environ, d))
	if err == nil {
		err = Exec(path, args, env)
	}
	logError(cfg, "cannot run program", err)
	return err
}

func logError(cfg Config, msg string, err error) {
	if cfg.Log != nil {
		cfg.Log.Error(msg, "error", err.Error())
	}
}
