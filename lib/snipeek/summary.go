// Package snipeek is the ClientHello peek as a command (cmd/snipeek).
// It describes a ClientHello for people and scripts (Summary, ReadHello),
// and it chain-loads a program on a connection whose ClientHello it peeked
// without consuming it, with the server name and the offered protocols in
// the environment (PeekFD, Environ, Exec): the inetd and systemd Accept=yes
// way of dispatching by name, one process per connection.
package snipeek

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/snitools/snitools/lib/clienthello"
)

// Summary is what a ClientHello says, in the form snipeek prints it. The
// JSON keys are part of snipeek's interface: scripts read them.
type Summary struct {
	// SNI is the server name exactly as sent, "" if none.
	SNI    string `json:"sni"`
	HasSNI bool   `json:"-"`
	// ALPN lists the offered application protocols in order (never null).
	ALPN []string `json:"alpn"`
	// Versions lists the supported versions by name ("TLS1.3").
	Versions []string `json:"versions"`
	// ECH reports an encrypted_client_hello extension: SNI is then the
	// public name of the ECH configuration.
	ECH           bool     `json:"ech"`
	LegacyVersion string   `json:"legacy_version"`
	CipherSuites  []uint16 `json:"cipher_suites"`
	Extensions    []uint16 `json:"extensions"`
	// Length is the hello's size on the wire, record headers included.
	Length  int `json:"length"`
	Records int `json:"records"`
}

// Summarize copies what info says into a Summary, which stays valid after
// the parsed bytes are reused.
func Summarize(info *clienthello.Info) Summary {
	s := Summary{
		SNI:           info.ServerName(),
		HasSNI:        info.HasServerName(),
		ALPN:          info.ALPN(),
		ECH:           info.ECH,
		LegacyVersion: clienthello.VersionName(info.LegacyVersion),
		CipherSuites:  info.CipherSuites(),
		Extensions:    info.Extensions(),
		Length:        info.Length,
		Records:       info.Records,
	}
	if s.ALPN == nil {
		s.ALPN = []string{}
	}
	for _, v := range info.SupportedVersions() {
		s.Versions = append(s.Versions, clienthello.VersionName(v))
	}
	if s.CipherSuites == nil {
		s.CipherSuites = []uint16{}
	}
	if s.Extensions == nil {
		s.Extensions = []uint16{}
	}
	return s
}

// WriteText writes one "key value" line per field. Values a client chose
// (the server name, the protocols) are printed as they are when they are
// plain printable ASCII, and quoted Go-style otherwise, so that a hostile
// hello can neither forge a line nor send escape sequences to a terminal.
// An absent server name or ALPN list prints as "-".
func (s *Summary) WriteText(w io.Writer) error {
	sni := "-"
	if s.HasSNI {
		sni = textValue(s.SNI)
	}
	alpn := "-"
	if len(s.ALPN) > 0 {
		quoted := make([]string, len(s.ALPN))
		for i, p := range s.ALPN {
			quoted[i] = textValue(p)
		}
		alpn = strings.Join(quoted, ",")
	}
	ech := "no"
	if s.ECH {
		ech = "yes"
	}
	_, err := fmt.Fprintf(w, "sni %s\nalpn %s\nversions %s\nech %s\nlegacy_version %s\ncipher_suites %s\nextensions %s\nlength %d\nrecords %d\n",
		sni, alpn, strings.Join(s.Versions, ","), ech, s.LegacyVersion,
		hexList(s.CipherSuites), hexList(s.Extensions), s.Length, s.Records)
	if err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

// WriteJSON writes the summary as one JSON object on one line.
func (s *Summary) WriteJSON(w io.Writer) error {
	if err := json.NewEncoder(w).Encode(s); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

// textValue returns v as is if every byte is printable ASCII other than
// space, comma and double quote and v is neither empty nor "-", and
// quoted otherwise.
func textValue(v string) string {
	if v == "" || v == "-" {
		return strconv.Quote(v)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' || c == ',' || c == '"' {
			return strconv.Quote(v)
		}
	}
	return v
}

func hexList(vs []uint16) string {
	if len(vs) == 0 {
		return "-"
	}
	var b strings.Builder
	for i, v := range vs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "0x%04x", v)
	}
	return b.String()
}

// ReadHello reads one ClientHello from r and parses it. It stops reading as
// soon as the hello is complete, so that it works on a stream that stays
// open after the hello (a pipe from a capture tool, a socket), and it never
// reads more than the hello's limit allows. Input that ends inside the hello
// gives an error wrapping clienthello.ErrIncomplete.
func ReadHello(r io.Reader, limit int) (clienthello.Info, error) {
	maxWire := 2*limit + 1024 // as clienthello.Peek: room for small records
	buf := make([]byte, 0, 2048)
	for empty := 0; ; {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(cap(buf), maxWire-len(buf)+1))...)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 || err != nil {
			empty = 0
		} else if empty++; empty >= 100 {
			return clienthello.Info{}, fmt.Errorf("read ClientHello: %w", io.ErrNoProgress)
		}
		info, perr := clienthello.ParseLimit(buf, limit)
		if !errors.Is(perr, clienthello.ErrIncomplete) {
			return info, perr
		}
		switch {
		case len(buf) > maxWire:
			return clienthello.Info{}, fmt.Errorf("%w: more than %d bytes of records", clienthello.ErrTooLarge, maxWire)
		case err == io.EOF && len(buf) == 0:
			return clienthello.Info{}, fmt.Errorf("read ClientHello: %w: empty input", clienthello.ErrIncomplete)
		case err == io.EOF:
			return clienthello.Info{}, fmt.Errorf("read ClientHello: input ends after %d bytes: %w", len(buf), perr)
		case err != nil:
			return clienthello.Info{}, fmt.Errorf("read ClientHello: %w", err)
		}
	}
}
