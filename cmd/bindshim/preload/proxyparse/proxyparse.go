//go:build cgo

package proxyparse

/*
#include <stdlib.h>
#include "handoff.h"
#include "proxy.h"
*/
import "C"

import (
	"net/netip"
	"unsafe"
)

// Status is the parser's verdict on a buffer.
type Status int

// The verdicts of bs_proxy_parse.
const (
	Bad  Status = C.BS_PROXY_BAD  // not a valid header, whatever follows
	More Status = C.BS_PROXY_MORE // a valid beginning: the header needs more bytes
	OK   Status = C.BS_PROXY_OK   // a complete valid header
)

func (s Status) String() string {
	switch s {
	case Bad:
		return "bad"
	case More:
		return "more"
	case OK:
		return "ok"
	}
	return "invalid"
}

// Max is the most bytes a header can take: the parser never answers More
// for a buffer this long.
const Max = C.BS_PROXY_MAX

// Header is what the C parser read from a complete header.
type Header struct {
	Version   int  // 1 or 2
	Command   byte // 0x20 LOCAL (and v1 UNKNOWN) or 0x21 PROXY
	Transport byte // the v2 family-and-protocol byte (v1: 0x11, 0x21 or 0)
	Source    netip.AddrPort
	Dest      netip.AddrPort
	Length    int // bytes of the header
}

// Parse runs the C parser on b.
func Parse(b []byte) (Header, Status) {
	var h C.struct_bs_proxy_header
	// The parser gets a C copy sized exactly (plus one byte, so that an
	// empty input still has an address), as it gets in the library.
	p := C.malloc(C.size_t(len(b) + 1))
	defer C.free(p)
	copy(unsafe.Slice((*byte)(p), len(b)), b)
	st := Status(C.bs_proxy_parse((*C.uchar)(p), C.size_t(len(b)), &h))
	if st != OK {
		return Header{}, st
	}
	out := Header{
		Version:   int(h.version),
		Command:   byte(h.command),
		Transport: byte(h.transport),
		Length:    int(h.length),
	}
	src := C.GoBytes(unsafe.Pointer(&h.src[0]), 16)
	dst := C.GoBytes(unsafe.Pointer(&h.dst[0]), 16)
	switch out.Transport & 0xF0 {
	case 0x10:
		out.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(src[:4])), uint16(h.src_port))
		out.Dest = netip.AddrPortFrom(netip.AddrFrom4([4]byte(dst[:4])), uint16(h.dst_port))
	case 0x20:
		out.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(src)), uint16(h.src_port))
		out.Dest = netip.AddrPortFrom(netip.AddrFrom16([16]byte(dst)), uint16(h.dst_port))
	}
	return out, OK
}

// Handoff is what the C parser read from a handoff message.
type Handoff struct {
	SNI    string
	Client netip.AddrPort // valid when the message announces the client
}

// HandoffMax is how many bytes of a message the library reads.
const HandoffMax = C.BS_HANDOFF_MAX

// ParseHandoff runs the C handoff message parser on b; ok is false when
// the library would drop the message.
func ParseHandoff(b []byte) (m Handoff, ok bool) {
	var h C.struct_bs_handoff
	p := C.malloc(C.size_t(len(b) + 1))
	defer C.free(p)
	in := unsafe.Slice((*byte)(p), len(b))
	copy(in, b)
	if C.bs_handoff_parse((*C.uchar)(p), C.size_t(len(b)), &h) != 0 {
		return Handoff{}, false
	}
	m.SNI = string(in[h.sni_offset : h.sni_offset+h.sni_length])
	if h.has_client != 0 {
		ip := C.GoBytes(unsafe.Pointer(&h.client[0]), 16)
		addr := netip.AddrFrom16([16]byte(ip))
		if h.v4 != 0 {
			addr = netip.AddrFrom4([4]byte(ip[:4]))
		}
		m.Client = netip.AddrPortFrom(addr, uint16(h.port))
	}
	return m, true
}
