// Package logging builds the toolkit's loggers: log/slog to standard error,
// text or JSON, without timestamps when standard error is the systemd
// journal (which stamps every line itself).
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// New returns a logger writing to w in format "text" or "json"; quiet
// discards everything.
func New(w io.Writer, format string, quiet bool) (*slog.Logger, error) {
	if quiet {
		return slog.New(slog.DiscardHandler), nil
	}
	opts := &slog.HandlerOptions{}
	if f, ok := w.(*os.File); ok && toJournal(f) {
		opts.ReplaceAttr = dropTime
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// toJournal reports whether f is the stream systemd connected to the
// journal: $JOURNAL_STREAM holds its "device:inode".
func toJournal(f *os.File) bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	return err1 == nil && err2 == nil && d == uint64(st.Dev) && i == st.Ino
}

// Addr is a's String for a log line, "" for no address (a nil net.Addr
// has no String to call).
func Addr(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// Truncate cuts s to n bytes, marked with "...", so that a string a
// client chose (an invalid server name) cannot make a log line as long
// as it likes.
func Truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
