package cli

import (
	"fmt"
	"strconv"
	"strings"
)

// Size is a flag value for a number of bytes: a whole number, optionally
// followed by K, M or G (powers of 1024, as in the man pages: 64M is
// 64 MiB).
type Size int64

// String formats s as Set reads it, in the largest unit that divides it.
func (s *Size) String() string {
	n := int64(*s)
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"G", 30}, {"M", 20}, {"K", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// Set parses a size such as 65536, 64K or 64M.
func (s *Size) Set(v string) error {
	num, shift := v, uint(0)
	switch {
	case strings.HasSuffix(v, "K"):
		num, shift = v[:len(v)-1], 10
	case strings.HasSuffix(v, "M"):
		num, shift = v[:len(v)-1], 20
	case strings.HasSuffix(v, "G"):
		num, shift = v[:len(v)-1], 30
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return fmt.Errorf("%q: want a size in bytes, such as 65536, 64K or 64M", v)
	}
	*s = Size(n << shift)
	return nil
}
