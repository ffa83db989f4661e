package hostname

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestCanonicalAccepts(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	for _, tc := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"localhost", "localhost"},
		{"_.example.com", "_.example.com"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"a-b.c_d.example", "a-b.c_d.example"},
		{"1.2.3.example", "1.2.3.example"},
		{long63 + ".test", long63 + ".test"},
		{strings.Repeat(long63+".", 3) + strings.Repeat("d", 61), strings.Repeat(long63+".", 3) + strings.Repeat("d", 61)},
	} {
		got, err := Canonical(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestCanonicalRefuses(t *testing.T) {
	for _, in := range []string{
		"", ".", "..", "../x", "..example.com", "a/../../etc", "../../etc/passwd",
		"a/b", `a\b`, "%2f", "a%2fb", "example..com", ".example.com", "example.com..",
		"a\x00b", "exa mple.com", "ex\u00e4mple.com", "\xff\xfe", "-a.com", "a-.com",
		strings.Repeat("a", 64) + ".com",
		strings.Repeat("abcdefghi.", 30), // 300 bytes
		"127.0.0.1", "10.1", "::1", "[::1]", "fe80::1%lo", "1.2.3.4.",
		"a:b", "a@b", "a;b", "*.example.com", "a\nb", "a\rb", "a\tb",
	} {
		got, err := Canonical(in)
		if err == nil {
			t.Errorf("Canonical(%q) = %q, want an error", in, got)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Canonical(%q) error %v does not wrap ErrInvalid", in, err)
		}
	}
}

func TestCandidates(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"www.example.com", []string{"www.example.com", "_.example.com"}},
		{"example.com", []string{"example.com", "_.com"}},
		{"localhost", []string{"localhost"}},
	} {
		if got := Candidates(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Candidates(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzCanonical checks the property the socket directory relies on: whatever
// the input, an accepted name is a single path element that is not a dot
// segment, and canonicalization is idempotent.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"example.com", "../etc/passwd", "A.B.", "..", "a/b", "_.x.y", "1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Canonical(in)
		if err != nil {
			return
		}
		if got == "" || got == "." || got == ".." || strings.ContainsAny(got, "/\\\x00") || strings.Contains(got, "..") || len(got) > MaxLength {
			t.Fatalf("Canonical(%q) = %q: not a safe path element", in, got)
		}
		again, err := Canonical(got)
		if err != nil || again != got {
			t.Fatalf("Canonical not idempotent: %q -> %q -> %q, %v", in, got, again, err)
		}
	})
}
