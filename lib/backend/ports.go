package backend

import (
	"fmt"
	"strconv"
	"strings"
)

// Ports is a list of TCP ports given as one comma-separated flag value,
// such as -srv-ports 5223,5269. Set replaces the list; an empty value is
// an empty list, which allows no port at all.
type Ports []uint16

// String implements flag.Value.
func (p *Ports) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(*p))
	for i, port := range *p {
		s[i] = strconv.Itoa(int(port))
	}
	return strings.Join(s, ",")
}

// Set implements flag.Value.
func (p *Ports) Set(v string) error {
	out := Ports{}
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("port %q in %q: want 1 to 65535", f, v)
		}
		out = append(out, uint16(n))
	}
	*p = out
	return nil
}
