// Command nat46calc translates between IPv4 addresses and their NAT46
// (RFC 6052) IPv6 embeddings: the addresses given as arguments, or every
// address in the text on standard input, as a log filter.
package main

import (
	"bufio"
	"io"
	"os"

	"github.com/snitools/snitools/lib/cli"
	"github.com/snitools/snitools/lib/nat46"
	"github.com/snitools/snitools/lib/nat46/filter"
	"golang.org/x/sys/unix"
)

const synopsis = `usage: nat46calc [-p prefix] address|prefix ...
       nat46calc [-p prefix] [-4 | -6] [-u] < input > output

Translate IPv4 addresses to their NAT46 IPv6 embedding and back (RFC 6052).
With arguments, print one translation per argument; without, rewrite the
addresses in standard input (a log filter).

`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	var (
		c          = cli.New("nat46calc", synopsis, stdout, stderr)
		prefixFlag = c.Flags.String("p", "", "NAT46 `prefix`: /32, /40, /48, /56, /64 or /96, a bare address meaning /96 (default $NAT46_PREFIX, else "+nat46.DefaultPrefix.String()+")")
		to4        = c.Flags.Bool("4", false, "filter: rewrite IPv6 addresses inside the prefix to IPv4 (the default)")
		to6        = c.Flags.Bool("6", false, "filter: rewrite IPv4 addresses to their IPv6 embedding")
		unbuffered = c.Flags.Bool("u", false, "filter: write each line out as soon as it is read (the default when standard output is a terminal)")
	)
	if status, done := c.Parse(args); done {
		return status
	}

	prefix := nat46.DefaultPrefix
	if env := os.Getenv("NAT46_PREFIX"); env != "" {
		p, err := nat46.ParsePrefix(env)
		if err != nil && *prefixFlag == "" {
			return c.Usage("NAT46_PREFIX: %v", err)
		}
		prefix = p
	}
	if *prefixFlag != "" {
		p, err := nat46.ParsePrefix(*prefixFlag)
		if err != nil {
			return c.Usage("-p: %v", err)
		}
		prefix = p
	}

	if c.Flags.NArg() > 0 {
		switch {
		case *to4:
			return c.Usage("-4: only without address arguments (filter mode)")
		case *to6:
			return c.Usage("-6: only without address arguments (filter mode)")
		case *unbuffered:
			return c.Usage("-u: only without address arguments (filter mode)")
		}
		return translate(c, prefix, c.Flags.Args())
	}
	if *to4 && *to6 {
		return c.Usage("-4 and -6: give one direction")
	}
	dir := filter.ToIPv4
	if *to6 {
		dir = filter.ToIPv6
	}
	lineBuffered := *unbuffered || isTerminal(stdout)
	if _, err := filter.New(prefix, dir).Copy(stdout, os.Stdin, lineBuffered); err != nil {
		return c.Fail("%v", err)
	}
	return cli.ExitOK
}

// translate prints the translation of each argument, in order, and an
// error for each one that has none; it returns the exit status.
func translate(c *cli.Command, prefix nat46.Prefix, args []string) int {
	out := bufio.NewWriter(c.Stdout)
	status := cli.ExitOK
	for _, arg := range args {
		s, err := prefix.Translate(arg)
		if err != nil {
			out.Flush()
			status = c.Fail("%v", err)
			continue
		}
		out.WriteString(s + "\n")
	}
	if err := out.Flush(); err != nil {
		return c.Fail("write: %v", err)
	}
	return status
}

// isTerminal reports whether w is a terminal (TCGETS succeeds), as for
// stdio's line buffering.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
