/*
 * handoff.h: a parser for the handoff message that snilisten(8) sends with
 * a client's TCP socket over a SOCK_SEQPACKET socket (lib/handoff), so that
 * bindshim -handoff can take the socket in accept().
 *
 * The message, version 1, is the payload of one SOCK_SEQPACKET message
 * whose ancillary data holds the descriptor:
 *
 *   offset  size  field
 *   0       1     version, 1
 *   1       1     flags, 0
 *   2       2     length N of the server name, big endian
 *   4       N     canonical server name
 *   4+N     1     length M of the client address: 0, 6 or 18
 *   5+N     M     client address (4 or 16 bytes) and port (2, big endian)
 *
 * Bytes after these fields are ignored, so later versions may append; the
 * flags are ignored too, as lib/handoff's receiver does. Like proxy.h, the
 * parser is a pure function of its input, kept apart from the interposers
 * so that tests can compile it alone (see proxyparse/).
 */
#ifndef BINDSHIM_HANDOFF_H
#define BINDSHIM_HANDOFF_H

#include <stddef.h>

/* The version this parser reads. */
#define BS_HANDOFF_VERSION 1

/* The longest message worth reading: a name of 255 bytes and an IPv6
 * address take 278; lib/handoff reads 512. */
#define BS_HANDOFF_MAX 512

/* A parsed message. */
struct bs_handoff {
	size_t sni_offset;        /* where the server name starts in the buffer */
	size_t sni_length;        /* its length */
	int has_client;           /* a client address was announced */
	int v4;                   /* it is IPv4: client[0..4) */
	unsigned char client[16]; /* network byte order */
	unsigned int port;        /* host byte order */
};

/*
 * bs_handoff_parse reads a message from buf[0..n). It returns 0 and fills
 * *m when the message is well formed, -1 otherwise.
 */
#if defined(__GNUC__)
__attribute__((visibility("hidden")))
#endif
int bs_handoff_parse(const unsigned char *buf, size_t n, struct bs_handoff *m);

#endif
