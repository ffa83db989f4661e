/*
 * proxy.h: a parser for PROXY protocol headers, versions 1 and 2
 * (https://www.haproxy.org/download/3.0/doc/proxy-protocol.txt).
 *
 * The parser is a pure function of its input: no allocation, no system
 * call, no global state, so it is safe inside accept() of any program,
 * across fork and in signal handlers. It is kept apart from the
 * interposers so that tests can compile it alone (see proxyparse/).
 *
 * It accepts exactly what github.com/pires/go-proxyproto accepts, so that
 * what snilisten writes, the library reads, and the two are checked against
 * each other by a differential test.
 */
#ifndef BINDSHIM_PROXY_H
#define BINDSHIM_PROXY_H

#include <stddef.h>

/* Results of bs_proxy_parse. */
#define BS_PROXY_OK 1    /* a complete, valid header: see length */
#define BS_PROXY_MORE 0  /* valid so far; the header needs more bytes */
#define BS_PROXY_BAD -1  /* not a valid header, whatever follows */

/* Commands (the v2 version-and-command byte). */
#define BS_PROXY_LOCAL 0x20 /* v2 LOCAL, or v1 UNKNOWN: no address to use */
#define BS_PROXY_PROXY 0x21 /* addresses of a proxied connection */

/* Transports (the v2 family-and-protocol byte); v1 TCP4/TCP6 map to the
 * stream ones and UNKNOWN to UNSPEC. */
#define BS_PROXY_UNSPEC 0x00
#define BS_PROXY_TCP4 0x11
#define BS_PROXY_UDP4 0x12
#define BS_PROXY_TCP6 0x21
#define BS_PROXY_UDP6 0x22
#define BS_PROXY_UNIX_STREAM 0x31
#define BS_PROXY_UNIX_DGRAM 0x32

/* The longest header the parser accepts: a v2 header declares at most
 * BS_PROXY_V2_MAX bytes after its 16-byte prefix (as go-proxyproto's
 * MaxV2HeaderSize); a v1 header is at most 107 bytes. */
#define BS_PROXY_V2_MAX 4096
#define BS_PROXY_MAX (16 + BS_PROXY_V2_MAX)

/* A parsed header. Addresses are in network byte order; an IPv4 address
 * fills the first 4 bytes of its array. For UNSPEC and UNIX transports the
 * address fields are zero. */
struct bs_proxy_header {
	int version;             /* 1 or 2 */
	int command;             /* BS_PROXY_LOCAL or BS_PROXY_PROXY */
	int transport;           /* BS_PROXY_UNSPEC, BS_PROXY_TCP4, ... */
	unsigned char src[16];   /* source (client) address */
	unsigned char dst[16];   /* destination (proxy's local) address */
	unsigned int src_port;   /* host byte order */
	unsigned int dst_port;   /* host byte order */
	size_t length;           /* bytes of the header, on BS_PROXY_OK */
};

/*
 * bs_proxy_parse reads a header at the start of buf[0..n). It returns
 * BS_PROXY_OK and fills *h when buf holds a complete valid header (bytes
 * past h->length are not looked at), BS_PROXY_MORE when the bytes so far
 * are a valid beginning of a header and none of them is past its end (so
 * the caller may consume all n bytes and wait for more), and BS_PROXY_BAD
 * otherwise. It never returns BS_PROXY_MORE for n >= BS_PROXY_MAX.
 */
#if defined(__GNUC__)
__attribute__((visibility("hidden")))
#endif
int bs_proxy_parse(const unsigned char *buf, size_t n, struct bs_proxy_header *h);

#endif
