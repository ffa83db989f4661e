package snipeek

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	var out bytes.Buffer
	if err := Describe(&out, bytes.NewReader(hello(ptr("a.test"), "h2")), "in", false); err != nil || !strings.Contains(out.String(), "sni a.test\n") {
		t.Errorf("text: %v, %q", err, out.String())
	}
	out.Reset()
	if err := Describe(&out, bytes.NewReader(hello(ptr("a.test"), "h2")), "in", true); err != nil || !strings.Contains(out.String(), `"sni":"a.test"`) {
		t.Errorf("json: %v, %q", err, out.String())
	}
	out.Reset()
	err := Describe(&out, strings.NewReader("GET / HTTP/1.1\r\n\r\n"), "req.txt", false)
	if err == nil || !strings.HasPrefix(err.Error(), "req.txt: ") || out.Len() != 0 {
		t.Errorf("not a hello: %v, %q; want an error naming req.txt and no output", err, out.String())
	}
}

// TestRunFails checks the two ways Run returns: a program that cannot be
// found (before peeking) and a refused connection (before executing).
func TestRunFails(t *testing.T) {
	fd, _ := socketFD(t)
	if err := Run(fd, []string{"/nonexistent/program"}, nil, Config{}); err == nil || !strings.Contains(err.Error(), "/nonexistent/program") {
		t.Errorf("missing program: %v", err)
	}
	fd, client := socketFD(t)
	if _, err := client.Write(hello(nil)); err != nil {
		t.Fatal(err)
	}
	var ref *Refusal
	if err := Run(fd, []string{"true"}, nil, Config{}); !errors.As(err, &ref) || ref.Reason != "no_sni" {
		t.Errorf("hello without SNI: %v, want a no_sni refusal", err)
	}
}
