package redirect

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// appendRedirect appends the redirect for req to b: 301 for GET and HEAD,
// 308 (which keeps the method and body) for every other method, with a
// short HTML body for humans (none for HEAD, with the same length).
func appendRedirect(b []byte, req *request, date string, keepAlive bool) []byte {
	text := "308 Permanent Redirect"
	head := string(req.method) == "HEAD"
	if head || string(req.method) == "GET" {
		text = "301 Moved Permanently"
	}
	b = append(b, "HTTP/1.1 "...)
	b = append(b, text...)
	b = append(b, "\r\nLocation: https://"...)
	b = append(b, req.host...)
	b = append(b, req.pathQuery...)
	b = append(b, "\r\nContent-Type: text/html; charset=utf-8\r\n"...)
	// The URL goes into the body HTML-escaped: a target may hold '<',
	// '"' or '&', harmless in Location but not in markup. The host never
	// needs escaping.
	urlLen := len("https://") + len(req.host) + escapedLen(req.pathQuery)
	bodyLen := len(bodyStart) + len(text) + len(bodyHref) + urlLen + len(bodyText) + urlLen + len(bodyEnd)
	b = appendHeaderTail(b, date, bodyLen, keepAlive, req.http10)
	if head {
		return b
	}
	b = append(b, bodyStart...)
	b = append(b, text...)
	b = append(b, bodyHref...)
	b = appendURL(b, req)
	b = append(b, bodyText...)
	b = appendURL(b, req)
	b = append(b, bodyEnd...)
	return b
}

func appendURL(b []byte, req *request) []byte {
	b = append(b, "https://"...)
	b = append(b, req.host...)
	return appendEscaped(b, req.pathQuery)
}

// htmlEscapes are the replacements html.EscapeString makes.
var htmlEscapes = [256]string{'<': "&lt;", '>': "&gt;", '&': "&amp;", '\'': "&#39;", '"': "&#34;"}

func escapedLen(s []byte) int {
	n := len(s)
	for _, c := range s {
		if e := htmlEscapes[c]; e != "" {
			n += len(e) - 1
		}
	}
	return n
}

func appendEscaped(b, s []byte) []byte {
	for _, c := range s {
		if e := htmlEscapes[c]; e != "" {
			b = append(b, e...)
		} else {
			b = append(b, c)
		}
	}
	return b
}

const (
	bodyStart = "<!DOCTYPE html>\n<title>"
	bodyHref  = "</title>\n<p>This site is at <a href=\""
	bodyText  = "\">"
	bodyEnd   = "</a>.</p>\n"
)

// statusLine is "HTTP/1.1 <code> <reason>" for the statuses this server
// sends itself.
func statusLine(code int) string {
	return "HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code)
}

// appendError appends a response with status code and a plain-text body
// naming the reason, and always closes the connection: after a refused
// request the framing of whatever follows cannot be trusted.
func appendError(b []byte, code int, reason, date string) []byte {
	return appendErrorKeep(b, code, reason, date, false, false)
}

// appendHeaderTail appends Date, Content-Length, Connection when it
// differs from the protocol's default, and the empty line.
func appendHeaderTail(b []byte, date string, contentLength int, keepAlive, http10 bool) []byte {
	b = append(b, "Date: "...)
	b = append(b, date...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(contentLength), 10)
	switch {
	case !keepAlive:
		b = append(b, "\r\nConnection: close"...)
	case http10:
		b = append(b, "\r\nConnection: keep-alive"...)
	}
	return append(b, "\r\n\r\n"...)
}

// clock caches the Date header value, which changes once a second.
type clock struct {
	cur atomic.Pointer[dateValue]
}

type dateValue struct {
	unix int64
	text string
}

func (c *clock) date() string {
	now := time.Now()
	if d := c.cur.Load(); d != nil && d.unix == now.Unix() {
		return d.text
	}
	d := &dateValue{unix: now.Unix(), text: now.UTC().Format(http.TimeFormat)}
	c.cur.Store(d)
	return d.text
}

// appendErrorKeep appends a response with status code and a plain-text
// body naming the reason; after a valid request the connection may stay
// open.
func appendErrorKeep(b []byte, code int, reason, date string, keep, http10 bool) []byte {
	body := strconv.Itoa(code) + " " + http.StatusText(code) + ": " + reason + "\n"
	b = append(b, statusLine(code)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\n"...)
	b = appendHeaderTail(b, date, len(body), keep, http10)
	return append(b, body...)
}
