// Command nat46calc translates between IPv4 addresses and their NAT46
// (RFC 6052) IPv6 embeddings: the addresses given as arguments, or every
// address in the text on standard input, as a log filter.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"github.com/snitools/snitools/lib/nat46"
	"github.com/snitools/snitools/lib/nat46/filter"
	"github.com/snitools/snitools/lib/version"
)

const usage = `usage: nat46calc [-p prefix] address|prefix ...
       nat46calc [-p prefix] [-4 | -6] [-u] < input > output

Translate IPv4 addresses to their NAT46 IPv6 embedding and back (RFC 6052).
With arguments, print one translation per argument; without, rewrite the
addresses in standard input (a log filter).

`

func main() {
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
	}
	prefixFlag := flag.String("p", "", "NAT46 `prefix`: /32, /40, /48, /56, /64 or /96, a bare address meaning /96 (default $NAT46_PREFIX, else "+nat46.DefaultPrefix.String()+")")
	to4 := flag.Bool("4", false, "filter: rewrite IPv6 addresses inside the prefix to IPv4 (the default)")
	to6 := flag.Bool("6", false, "filter: rewrite IPv4 addresses to their IPv6 embedding")
	unbuffered := flag.Bool("u", false, "filter: write each line out as soon as it is read (the default when standard output is a terminal)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		version.Print()
		return
	}

	prefix := nat46.DefaultPrefix
	if env := os.Getenv("NAT46_PREFIX"); env != "" {
		p, err := nat46.ParsePrefix(env)
		if err != nil && *prefixFlag == "" {
			usageError("NAT46_PREFIX: %v", err)
		}
		prefix = p
	}
	if *prefixFlag != "" {
		p, err := nat46.ParsePrefix(*prefixFlag)
		if err != nil {
			usageError("-p: %v", err)
		}
		prefix = p
	}

	if flag.NArg() > 0 {
		switch {
		case *to4:
			usageError("-4: only without address arguments (filter mode)")
		case *to6:
			usageError("-6: only without address arguments (filter mode)")
		case *unbuffered:
			usageError("-u: only without address arguments (filter mode)")
		}
		os.Exit(translate(prefix, flag.Args()))
	}
	if *to4 && *to6 {
		usageError("-4 and -6: give one direction")
	}
	dir := filter.ToIPv4
	if *to6 {
		dir = filter.ToIPv6
	}
	lineBuffered := *unbuffered || isTerminal(os.Stdout)
	if _, err := filter.New(prefix, dir).Copy(os.Stdout, os.Stdin, lineBuffered); err != nil {
		fmt.Fprintf(os.Stderr, "nat46calc: %v\n", err)
		os.Exit(1)
	}
}

// translate prints the translation of each argument, in order, and an
// error for each one that has none; it returns the exit status.
func translate(prefix nat46.Prefix, args []string) int {
	out := bufio.NewWriter(os.Stdout)
	status := 0
	for _, arg := range args {
		s, err := prefix.Translate(arg)
		if err != nil {
			out.Flush()
			fmt.Fprintf(os.Stderr, "nat46calc: %v\n", err)
			status = 1
			continue
		}
		out.WriteString(s + "\n")
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintf(os.Stderr, "nat46calc: write: %v\n", err)
		return 1
	}
	return status
}

// isTerminal reports whether f is a terminal (TCGETS succeeds), as for
// stdio's line buffering.
func isTerminal(f *os.File) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

func usageError(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "nat46calc: "+format+"\n", args...)
	os.Exit(2)
}
