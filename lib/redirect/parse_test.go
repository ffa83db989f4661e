package redirect

import (
	"net/url"
	"strings"
	"testing"
)

// sharedCache is used by every parse in a test binary, so that the
// tables also check that a remembered host never changes an answer.
var sharedCache hostCache

func parse(t testing.TB, head string) (request, *httpError) {
	t.Helper()
	var req, cached request
	err := parseRequest([]byte(head), &req, nil)
	cerr := parseRequest([]byte(head), &cached, &sharedCache)
	if cerr != err || cached.host != req.host || string(cached.pathQuery) != string(req.pathQuery) {
		t.Errorf("%q: with the host cache %v %q, without %v %q", head, cerr, cached.host, err, req.host)
	}
	return req, err
}

func TestParseRedirects(t *testing.T) {
	for _, tc := range []struct{ head, location string }{
		{"GET / HTTP/1.1\r\nHost: a.test\r\n", "https://a.test/"},
		{"GET / HTTP/1.1\nHost: a.test\n", "https://a.test/"},
		{"GET /x HTTP/1.1\r\nHost: WWW.Example.TEST.:8080\r\n", "https://www.example.test/x"},
		{"GET /x HTTP/1.1\r\nHost: a.test:\r\n", "https://a.test/x"},
		{"GET /x HTTP/1.1\r\nhOsT:\ta.test \t\r\n", "https://a.test/x"},
		{"GET /a%zz/./b/../%2e%2E//c;p=1?x=%41%2f&y=&&z=<>\"'{}|^`~ HTTP/1.1\r\nHost: a.test\r\n",
			"https://a.test/a%zz/./b/../%2e%2E//c;p=1?x=%41%2f&y=&&z=<>\"'{}|^`~"},
		{"GET /@user HTTP/1.1\r\nHost: a.test\r\n", "https://a.test/@user"},
		{"GET /?next=//evil.test HTTP/1.1\r\nHost: a.test\r\n", "https://a.test/?next=//evil.test"},
		{"GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\n", "https://192.0.2.1/"},
		{"GET /v6 HTTP/1.1\r\nHost: [2001:DB8:0::1]:8080\r\n", "https://[2001:db8::1]/v6"},
		{"GET / HTTP/1.1\r\nHost: [::1]\r\n", "https://[::1]/"},
		{"GET http://Other.test:81/p?q HTTP/1.1\r\nHost: a.test\r\n", "https://other.test/p?q"},
		{"GET HTTPS://b.test HTTP/1.1\r\nHost: a.test\r\n", "https://b.test/"},
		{"GET http://b.test?q=1 HTTP/1.1\r\nHost: a.test\r\n", "https://b.test/?q=1"},
		{"GET http://[::1]:80/x HTTP/1.1\r\nHost: a.test\r\n", "https://[::1]/x"},
		{"DELETE /d HTTP/1.0\r\nHost: a.test\r\n", "https://a.test/d"},
		{"GET / HTTP/1.1\r\nHost: _.a.test\r\n", "https://_.a.test/"},
		{"GET / HTTP/1.1\r\nHost: xn--bcher-kva.test\r\n", "https://xn--bcher-kva.test/"},
	} {
		req, err := parse(t, tc.head)
		if err != nil {
			t.Errorf("%q: refused: %v", tc.head, err)
			continue
		}
		if got := "https://" + req.host + string(req.pathQuery); got != tc.location {
			t.Errorf("%q: Location %q, want %q", tc.head, got, tc.location)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		head string
		want *httpError
	}{
		{"GET / HTTP/1.1\r\n", errNoHost},
		{"GET / HTTP/1.0\r\n", errNoHost},
		{"GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n", errTwoHosts},
		{"GET / HTTP/1.1\r\nHost: \r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: evil.test@a.test\r\n", errUserinfo},
		{"GET / HTTP/1.1\r\nHost: a.test\\evil.test\r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: a.test/evil\r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: a..test\r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: -a.test\r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: a.test:99999\r\n", errPort},
		{"GET / HTTP/1.1\r\nHost: a.test:8o\r\n", errPort},
		{"GET / HTTP/1.1\r\nHost: a.test:80:80\r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: ::1\r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: [::1%25lo]\r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: [192.0.2.1]\r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: [::1]x\r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: 1.2.3\r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: 010.0.0.1\r\n", errHost},
		{"GET / HTTP/1.1\r\nHost: a.test\rLocation: x\r\n", errFieldValue},
		{"GET / HTTP/1.1\r\nHost: a.test\x00\r\n", errFieldValue},
		{"GET / HTTP/1.1\r\nHost : a.test\r\n", errField},
		{"GET / HTTP/1.1\r\nHost: a.test\r\n folded\r\n", errField},
		{"GET / HTTP/1.1\r\nX\r\nHost: a.test\r\n", errField},
		{"GET //evil.test/ HTTP/1.1\r\nHost: a.test\r\n", errNetworkPath},
		{"GET /\\evil.test/ HTTP/1.1\r\nHost: a.test\r\n", errTarget},
		{"GET /a#frag HTTP/1.1\r\nHost: a.test\r\n", errTarget},
		{"GET /\x80 HTTP/1.1\r\nHost: a.test\r\n", errTarget},
		{"GET /a\rb HTTP/1.1\r\nHost: a.test\r\n", errTarget},
		{"GET http://a.test@evil.test/ HTTP/1.1\r\nHost: a.test\r\n", errUserinfo},
		{"GET http://a.test//evil.test HTTP/1.1\r\nHost: a.test\r\n", errNetworkPath},
		{"GET http:///x HTTP/1.1\r\nHost: a.test\r\n", errHost},
		{"GET ftp://a.test/ HTTP/1.1\r\nHost: a.test\r\n", errTargetForm},
		{"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n", errTargetForm},
		{"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n", errTargetForm},
		{"GET /\r\nHost: a.test\r\n", errRequestLine},
		{"GET  / HTTP/1.1\r\nHost: a.test\r\n", errRequestLine},
		{"GET / HTTP/1.1 \r\nHost: a.test\r\n", errRequestLine},
		{"GET / HTTP/1.1\r\r\nHost: a.test\r\n", errRequestLine},
		{"G(T / HTTP/1.1\r\nHost: a.test\r\n", errMethod},
		{"GET / HTTP/2.0\r\nHost: a.test\r\n", errVersion},
		{"PRI * HTTP/2.0\r\n", errVersion},
		{"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 1\r\n", errContentLength},
		{"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: -1\r\n", errContentLength},
		{"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1, 1\r\n", errContentLength},
		{"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n", errTransferCoding},
		{"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, gzip\r\n", errTransferCoding},
		{"POST / HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n", errTransferCoding},
	} {
		req, err := parse(t, tc.head)
		if err != tc.want {
			t.Errorf("%q: got %v (Location host %q), want %v", tc.head, err, req.host, tc.want)
		}
	}
}

func TestParseConnection(t *testing.T) {
	for _, tc := range []struct {
		head      string
		keepAlive bool
	}{
		{"GET / HTTP/1.1\r\nHost: a.test\r\n", true},
		{"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: Close\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: x, close\r\n", false},
		{"GET / HTTP/1.0\r\nHost: a.test\r\n", false},
		{"GET / HTTP/1.0\r\nHost: a.test\r\nConnection: Keep-Alive\r\n", true},
	} {
		req, err := parse(t, tc.head)
		if err != nil || req.keepAlive != tc.keepAlive {
			t.Errorf("%q: keepAlive %v (err %v), want %v", tc.head, req.keepAlive, err, tc.keepAlive)
		}
	}
}

func TestIsChallenge(t *testing.T) {
	for _, tc := range []struct {
		head string
		want bool
	}{
		{"GET /.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0 HTTP/1.1\r\nHost: a.test\r\n", true},
		{"GET http://a.test/.well-known/acme-challenge/tok_-9 HTTP/1.1\r\nHost: a.test\r\n", true},
		{"HEAD /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a.test\r\n", false},
		{"POST /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a.test\r\n", false},
		{"GET /.well-known/acme-challenge/ HTTP/1.1\r\nHost: a.test\r\n", false},
		{"GET /.well-known/acme-challenge/tok?x HTTP/1.1\r\nHost: a.test\r\n", false},
		{"GET /.well-known/acme-challenge/../../etc HTTP/1.1\r\nHost: a.test\r\n", false},
		{"GET /.well-known/acme-challenge/a/b HTTP/1.1\r\nHost: a.test\r\n", false},
		{"GET /.well-known/acme-challenge/a%2fb HTTP/1.1\r\nHost: a.test\r\n", false},
		{"GET /.well-known/ACME-challenge/tok HTTP/1.1\r\nHost: a.test\r\n", false},
	} {
		req, err := parse(t, tc.head)
		if err != nil {
			t.Fatalf("%q: %v", tc.head, err)
		}
		if got := req.isChallenge(); got != tc.want {
			t.Errorf("%q: isChallenge %v, want %v", tc.head, got, tc.want)
		}
	}
}

// FuzzParse checks that no header block makes the parser panic, and that
// every Location it would send names exactly the host it validated: an
// https URL whose host a standard URL parser reads back unchanged, whose
// path starts with a single slash and holds only printable ASCII.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a.test\r\n",
		"GET http://b.test:8/x?y HTTP/1.1\r\nHost: a.test\r\n",
		"POST /p HTTP/1.0\r\nHost: [::1]:80\r\nContent-Length: 3\r\n",
		"GET /a@b\\c HTTP/1.1\r\nHost: a.test@evil\r\n",
		"GET /.well-known/acme-challenge/x HTTP/1.1\r\nHost: 192.0.2.1\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		var req request
		if parseRequest(head, &req, nil) != nil {
			return
		}
		loc := "https://" + req.host + string(req.pathQuery)
		u, err := url.Parse(loc)
		if err != nil {
			// net/url refuses some escapes (%zz) the target may keep
			// byte for byte; the host part must still be exact.
			u, err = url.Parse("https://" + req.host + "/")
			if err != nil {
				t.Fatalf("Location host %q does not parse: %v", req.host, err)
			}
		}
		if want := strings.Trim(req.host, "[]"); u.Hostname() != want || u.Port() != "" || u.User != nil {
			t.Fatalf("Location %q points at host %q port %q user %v, want %q", loc, u.Hostname(), u.Port(), u.User, want)
		}
		pq := req.pathQuery
		if len(pq) == 0 || pq[0] != '/' || len(pq) > 1 && pq[1] == '/' {
			t.Fatalf("Location %q: path %q does not start with a single slash", loc, pq)
		}
		for _, c := range pq {
			if c <= ' ' || c >= 0x7f || c == '\\' || c == '#' {
				t.Fatalf("Location %q: byte 0x%02x in the path", loc, c)
			}
		}
		if strings.ToLower(req.host) != req.host {
			t.Fatalf("host %q is not lowercase", req.host)
		}
	})
}
