package cli

import "testing"

func TestSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "65536": 65536, "64K": 64 << 10, "64M": 64 << 20, "2G": 2 << 30} {
		var s Size
		if err := s.Set(in); err != nil || int64(s) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, s, err, want)
		}
		if back := s.String(); back != in && in != "65536" {
			t.Errorf("String() of %q = %q", in, back)
		}
	}
	for _, in := range []string{"", "K", "-1", "1.5M", "64k", "64 M", "1T", "9999999999G"} {
		var s Size
		if err := s.Set(in); err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, s)
		}
	}
}
