package clienthello

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/snitools/snitools/lib/hostname"
	"github.com/snitools/snitools/lib/sockpeek"
)

// Outcomes of a peek, as snilisten logs and counts them and snipeek logs
// them: one fixed list, so that both commands name a case alike.
const (
	OutcomeOK           = "ok"
	OutcomeClientClosed = "client_closed" // closed (or reset) before a whole hello
	OutcomePeekTimeout  = "peek_timeout"
	OutcomePeekBudget   = "peek_budget" // the peek buffers' memory budget was spent
	OutcomeNotTLS       = "not_tls"
	OutcomeBadHello     = "bad_hello"
	OutcomeNoSNI        = "no_sni"
	OutcomeInvalidName  = "invalid_name"
)

// Verdict is how a dispatcher ends a connection whose hello it will not
// pass on: the outcome it logs, and the alert the client is sent (0 for
// none).
type Verdict struct {
	Outcome string
	Alert   Alert
}

// PeekVerdict maps the error of Peek (or Parse) to the verdict. The alerts
// are those a TLS server sends for the same bytes (RFC 8446, section 6.2,
// and OpenSSL, reached directly, as the reference): a proxy must not
// answer differently from the server it stands in front of.
//
//   - a record other than handshake before the hello is whole, or another
//     handshake message first: unexpected_message;
//   - a record longer than 2^14 bytes: record_overflow;
//   - a hello longer than the limit: illegal_parameter, as OpenSSL;
//   - anything else malformed: decode_error;
//   - not TLS at all (HTTP, garbage, a true SSLv2 hello), a client that
//     closed, or a peek timeout: no alert. A server closes quietly on the
//     first two, and a timeout ends a handshake without an alert in
//     OpenSSL, Go and nginx alike;
//   - the peek memory budget spent: internal_error, what a server out
//     of memory sends.
func PeekVerdict(err error) Verdict {
	switch {
	case err == nil:
		return Verdict{Outcome: OutcomeOK}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Verdict{Outcome: OutcomePeekTimeout}
	case errors.Is(err, sockpeek.ErrBudget):
		return Verdict{Outcome: OutcomePeekBudget, Alert: AlertInternalError}
	case errors.Is(err, ErrNotTLS):
		return Verdict{Outcome: OutcomeNotTLS}
	case errors.Is(err, ErrUnexpectedMessage):
		return Verdict{Outcome: OutcomeBadHello, Alert: AlertUnexpectedMessage}
	case errors.Is(err, ErrRecordOverflow):
		return Verdict{Outcome: OutcomeBadHello, Alert: AlertRecordOverflow}
	case errors.Is(err, ErrTooLarge):
		return Verdict{Outcome: OutcomeBadHello, Alert: AlertIllegalParameter}
	case errors.Is(err, ErrMalformed):
		return Verdict{Outcome: OutcomeBadHello, Alert: AlertDecodeError}
	}
	// io.EOF, io.ErrUnexpectedEOF, a reset, any other receive error.
	return Verdict{Outcome: OutcomeClientClosed}
}

// maxServerName is the longest host name OpenSSL accepts in server_name
// (TLSEXT_MAXLEN_host_name); it answers a longer one, or one holding a
// NUL byte, with unrecognized_name.
const maxServerName = 255

// Route returns the canonical name to route a parsed hello by, or the
// verdict that refuses it and an error saying why. defaultHost
// (canonical, or "") stands in where the hello names no usable host:
//
//   - no server name, an empty one (OpenSSL accepts it), or an
//     SSLv2-compatible hello (which cannot carry one): defaultHost, else
//     no_sni;
//   - a name that is not a valid DNS host name (not letters, digits and
//     hyphens, an IP address, a path such as "../../etc/passwd"): no
//     socket or address can be named after it, but a TLS server
//     would still answer it with its default certificate, so defaultHost,
//     else invalid_name;
//   - a name with a NUL byte or longer than 255 bytes: invalid_name even
//     with a defaultHost, as OpenSSL refuses these itself.
//
// A refusal's alert is unrecognized_name (RFC 6066, section 3). The
// name chosen is never built from an invalid name: defaultHost is the
// operator's.
func Route(info *Info, defaultHost string) (string, Verdict, error) {
	raw := info.ServerName()
	if !info.HasServerName() || raw == "" {
		if defaultHost != "" {
			return defaultHost, Verdict{Outcome: OutcomeOK}, nil
		}
		why := "no server name in ClientHello"
		switch {
		case info.SSLv2:
			why = "SSLv2-compatible ClientHello, which cannot carry a server name,"
		case info.HasServerName():
			why = "empty server name in ClientHello"
		}
		return "", Verdict{Outcome: OutcomeNoSNI, Alert: AlertUnrecognizedName}, fmt.Errorf("%s and no default host name", why)
	}
	name, err := hostname.Canonical(raw)
	if err == nil {
		return name, Verdict{Outcome: OutcomeOK}, nil
	}
	if defaultHost != "" && len(raw) <= maxServerName && !strings.ContainsRune(raw, 0) {
		return defaultHost, Verdict{Outcome: OutcomeOK}, nil
	}
	return "", Verdict{Outcome: OutcomeInvalidName, Alert: AlertUnrecognizedName}, err
}

// RefuseWait bounds how long Refuse waits for a client to read its alert
// and close.
const RefuseWait = time.Second

// drainLimit bounds the bytes Refuse reads after its alert while it waits
// for the client to close: what a hello of the largest size may still
// have on the way.
var drainLimit = int64(wireLimit(DefaultLimit))

// Refuse ends a connection that is not served, so that the client reads
// the alert (if any; 0 sends none) rather than a reset. Closing a socket
// whose receive queue holds unread bytes makes the kernel send a reset,
// which can destroy the alert before the client reads it: so Refuse first
// reads the peeked bytes, sends the alert, half-closes, and then reads
// what the client still sends until it closes (at most RefuseWait). Without
// an alert it only reads the peeked bytes, so that closing sends a FIN:
// a client that stalled (a peek timeout) is not waited for once more.
func Refuse(c net.Conn, peeked int, alert Alert) {
	c.SetDeadline(time.Now().Add(RefuseWait))
	discard(c, int64(peeked))
	if alert != 0 {
		if WriteAlert(c, alert) != nil {
			return
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	if alert != 0 {
		discard(c, drainLimit) // until the client closes, or the deadline
	}
}

func discard(c net.Conn, n int64) {
	var buf [4096]byte
	for n > 0 {
		m, err := c.Read(buf[:min(int64(len(buf)), n)])
		n -= int64(m)
		if err != nil {
			return
		}
	}
}
