package redirect

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/snitools/snitools/lib/backend"
)

// DefaultACMETimeout bounds one forwarded challenge, connect to last byte.
const DefaultACMETimeout = 10 * time.Second

// maxChallengeBody bounds the backend's answer to a challenge. A key
// authorization is 87 bytes; anything near this bound is not one.
const maxChallengeBody = 64 << 10

// ACME forwards ACME HTTP-01 challenges (GET
// /.well-known/acme-challenge/<token>) to the HTTP server that owns the
// host, found by the same convention as snilisten, so that backends behind
// a redirect-only port 80 can still prove they own their names. Nothing but
// a challenge is ever forwarded, and the request sent on is rebuilt from
// the parsed parts, never copied.
type ACME struct {
	dialer  backend.Dialer
	ipHosts bool // whether IP-literal hosts can be forwarded at all
	timeout time.Duration
	// outgoing holds the local addresses of the connections to
	// backends being made (-acme tcp): a challenge arriving on one of
	// them is our own, led back here, and is answered 502.
	outgoing *backend.Outgoing
}

// UnixACME forwards a challenge for host H to the HTTP server on the UNIX
// stream socket dir/H, or the wildcard dir/_.<parent> (backend.Unix).
// Challenges for IP-literal hosts have no socket name and are redirected
// instead; a SOCK_SEQPACKET (handoff) socket cannot take an HTTP request
// and answers 502.
func UnixACME(dir string, timeout time.Duration) *ACME {
	return &ACME{dialer: backend.NewUnix(dir), timeout: timeout}
}

// TCPACME forwards a challenge for host H to port of H's own addresses
// (A and AAAA; an IP-literal host is its own address), dialling only
// addresses inside allow (backend.TCP). The check runs on each address as
// it is dialled, so a DNS answer cannot lead the connection anywhere else.
// Call allow.DenyListeners too, so that a name pointing back here cannot loop.
func TCPACME(allow *backend.AllowList, port int, timeout time.Duration) *ACME {
	out := &backend.Outgoing{}
	return &ACME{dialer: backend.TCP{Allow: allow, Port: port, Outgoing: out}, ipHosts: true, timeout: timeout, outgoing: out}
}

// errLoop is a challenge that came from one of our own connections.
var errLoop = errors.New("challenge from this server's own connection to a backend (a name that leads back here)")

// dial connects to the backend for host (as in Location: a canonical name,
// an IPv4 address or a bracketed IPv6 address) and names it for the log.
// The connection's local address is in a.outgoing until it is closed.
func (a *ACME) dial(ctx context.Context, host string) (net.Conn, string, error) {
	name := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	c, err := a.dialer.Dial(ctx, backend.Request{Name: name})
	if err != nil {
		return nil, "", err
	}
	if c.Conn == nil {
		return nil, c.Backend, fmt.Errorf("%s takes handed-off sockets (SOCK_SEQPACKET), not HTTP requests", c.Backend)
	}
	if c.Local.IsValid() {
		return outgoingConn{c.Conn, a.outgoing, c.Local}, c.Backend, nil
	}
	return c.Conn, c.Backend, nil
}

// outgoingConn is a connection to a backend that leaves a.outgoing when
// it is closed (once: fetch closes it once).
type outgoingConn struct {
	net.Conn
	set   *backend.Outgoing
	local netip.AddrPort
}

func (c outgoingConn) Close() error {
	c.set.Remove(c.local)
	return c.Conn.Close()
}

// challengeResponse is a backend's answer, read whole.
type challengeResponse struct {
	status int
	header http.Header
	body   []byte
}

// errBodyTooLarge is a backend answer longer than maxChallengeBody.
var errBodyTooLarge = errors.New("answer longer than 64 KiB")

// fetch sends req's challenge to its backend and reads the answer.
func (a *ACME) fetch(ctx context.Context, req *request, clientIP string) (challengeResponse, string, error) {
	if a.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	nc, name, err := a.dial(ctx, req.host)
	if err != nil {
		return challengeResponse{}, "", fmt.Errorf("acme: connect to the backend of %s: %w", req.host, err)
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	out, err := http.NewRequestWithContext(ctx, "GET", "http://"+req.host+string(req.pathQuery), nil)
	if err != nil {
		return challengeResponse{}, name, fmt.Errorf("acme: build request for %s: %w", req.host, err)
	}
	out.Close = true
	out.Header.Set("User-Agent", string(req.userAgent))
	if len(req.accept) > 0 {
		out.Header.Set("Accept", string(req.accept))
	}
	if clientIP != "" {
		out.Header.Set("X-Forwarded-For", clientIP)
	}
	out.Header.Set("X-Forwarded-Proto", "http")
	bw := bufio.NewWriter(nc)
	if err := out.Write(bw); err != nil {
		return challengeResponse{}, name, fmt.Errorf("acme: send to %s: %w", name, err)
	}
	if err := bw.Flush(); err != nil {
		return challengeResponse{}, name, fmt.Errorf("acme: send to %s: %w", name, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), out)
	if err != nil {
		return challengeResponse{}, name, fmt.Errorf("acme: read answer from %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 {
		return challengeResponse{}, name, fmt.Errorf("acme: %s answered %d", name, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxChallengeBody+1))
	if err != nil {
		return challengeResponse{}, name, fmt.Errorf("acme: read answer from %s: %w", name, err)
	}
	if len(body) > maxChallengeBody {
		return challengeResponse{}, name, fmt.Errorf("acme: %s: %w", name, errBodyTooLarge)
	}
	return challengeResponse{status: resp.StatusCode, header: resp.Header, body: body}, name, nil
}

// hopByHop are the fields that describe one connection, not the answer;
// they are not passed on. Content-Length and Date are set afresh.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Date": true,
}

// forward answers a challenge request with its backend's answer, or with
// 502 (no backend, refused, broken answer) or 504 (no answer in time). It
// returns the status, an error text for the log and the backend's name.
func (c *conn) forward(a *ACME, req *request, keep bool) (int, string, string) {
	clientIP := ""
	if ta, ok := c.client.(*net.TCPAddr); ok {
		clientIP = ta.IP.String()
	}
	var resp challengeResponse
	var name string
	var err error
	if a.outgoing.ContainsAddr(c.nc.RemoteAddr()) {
		// Asked once the request is here: our dialer adds a
		// connection to the set before it sends on it.
		err = fmt.Errorf("acme: %s: %w", c.nc.RemoteAddr(), errLoop)
	} else {
		resp, name, err = a.fetch(context.Background(), req, clientIP)
	}
	c.setDeadline(c.s.cfg.HeaderTimeout) // the fetch may have used it up
	date := c.s.clock.date()
	if err != nil {
		status := 502
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			status = 504
		}
		reason := "no answer from the backend for this host"
		if status == 504 {
			reason = "the backend for this host did not answer in time"
		}
		c.out = appendErrorKeep(c.out, status, reason, date, keep, req.http10)
		return status, err.Error(), name
	}
	c.out = append(c.out, statusLine(resp.status)...)
	c.out = append(c.out, "\r\n"...)
	for k, vs := range resp.header {
		if hopByHop[k] {
			continue
		}
		for _, v := range vs {
			if !cleanValue(v) {
				continue
			}
			c.out = append(c.out, k...)
			c.out = append(c.out, ": "...)
			c.out = append(c.out, v...)
			c.out = append(c.out, "\r\n"...)
		}
	}
	c.out = appendHeaderTail(c.out, date, len(resp.body), keep, req.http10)
	c.out = append(c.out, resp.body...)
	return resp.status, "", name
}

// cleanValue reports whether a backend's field value may be passed on:
// no control bytes, whatever the backend's HTTP library let through.
func cleanValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
