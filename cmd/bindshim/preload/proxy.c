/*
 * proxy.c: the PROXY protocol header parser; see proxy.h.
 *
 * Plain C99, no allocation, no system call. Every rule here mirrors one of
 * github.com/pires/go-proxyproto v0.15 (v1.go, v2.go) or of Go's
 * net/netip.ParseAddr, which that library uses for v1 addresses; the
 * differential test in proxyparse/ holds the two together.
 */
#include <string.h>

#include "proxy.h"

static const unsigned char sig_v1[5] = {'P', 'R', 'O', 'X', 'Y'};
static const unsigned char sig_v2[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};

/* The longest v1 header, CRLF included. */
#define V1_MAX 107

/* token_is reports whether s[0..n) is the NUL-terminated word w. */
static int token_is(const unsigned char *s, size_t n, const char *w)
{
	return strlen(w) == n && memcmp(s, w, n) == 0;
}

/*
 * parse_ipv4 parses s[0..n) as dotted-quad IPv4 into out[0..4), with the
 * rules of netip's parseIPv4Fields: four decimal fields, each 0-255, no
 * empty field and no leading zero.
 */
static int parse_ipv4(const unsigned char *s, size_t n, unsigned char *out)
{
	unsigned int val = 0, pos = 0, digits = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] >= '0' && s[i] <= '9') {
			if (digits == 1 && val == 0)
				return -1; /* leading zero */
			val = val * 10 + (unsigned int)(s[i] - '0');
			digits++;
			if (val > 255)
				return -1;
		} else if (s[i] == '.') {
			if (i == 0 || i == n - 1 || s[i - 1] == '.')
				return -1; /* empty field */
			if (pos == 3)
				return -1; /* too long */
			out[pos++] = (unsigned char)val;
			val = 0;
			digits = 0;
		} else {
			return -1;
		}
	}
	if (pos < 3)
		return -1;
	out[3] = (unsigned char)val;
	return 0;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * parse_ipv6 parses s[0..n) as an IPv6 address into out[0..16), with the
 * rules of netip's parseIPv6: groups of one to four hex digits, at most
 * one "::" standing for at least one zero group, an optional embedded
 * IPv4 address in the last 32 bits. Zones are refused (go-proxyproto
 * refuses them after parsing).
 */
static int parse_ipv6(const unsigned char *s, size_t n, unsigned char *out)
{
	unsigned char ip[16];
	int ellipsis = -1;
	int i = 0, j, shift;
	size_t k;

	for (k = 0; k < n; k++)
		if (s[k] == '%')
			return -1;
	memset(ip, 0, sizeof ip);
	if (n >= 2 && s[0] == ':' && s[1] == ':') {
		ellipsis = 0;
		s += 2;
		n -= 2;
		if (n == 0) {
			memcpy(out, ip, 16);
			return 0;
		}
	}
	while (i < 16) {
		size_t off = 0;
		unsigned int acc = 0;

		for (; off < n; off++) {
			int v = hexval(s[off]);
			if (v < 0)
				break;
			acc = (acc << 4) + (unsigned int)v;
			if (off > 3)
				return -1; /* more than four digits */
		}
		if (off == 0)
			return -1;
		if (off < n && s[off] == '.') {
			if (ellipsis < 0 && i != 12)
				return -1;
			if (i + 4 > 16)
				return -1;
			if (parse_ipv4(s, n, ip + i) != 0)
				return -1;
			n = 0;
			i += 4;
			break;
		}
		ip[i] = (unsigned char)(acc >> 8);
		ip[i + 1] = (unsigned char)acc;
		i += 2;
		s += off;
		n -= off;
		if (n == 0)
			break;
		if (s[0] != ':' || n == 1)
			return -1;
		s++;
		n--;
		if (s[0] == ':') {
			if (ellipsis >= 0)
				return -1; /* two "::" */
			ellipsis = i;
			s++;
			n--;
			if (n == 0)
				break;
		}
	}
	if (n != 0)
		return -1; /* trailing garbage */
	if (i < 16) {
		if (ellipsis < 0)
			return -1; /* too short */
		shift = 16 - i;
		for (j = i - 1; j >= ellipsis; j--)
			ip[j + shift] = ip[j];
		memset(ip + ellipsis, 0, (size_t)shift);
	} else if (ellipsis >= 0) {
		return -1; /* "::" standing for no group */
	}
	memcpy(out, ip, 16);
	return 0;
}

/* first_special returns the first of '.', ':' or '%' in s[0..n), or 0;
 * netip.ParseAddr picks the address family by it. */
static unsigned char first_special(const unsigned char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] == '.' || s[i] == ':' || s[i] == '%')
			return s[i];
	return 0;
}

/* parse_port parses a v1 port: decimal 0-65535, no sign, no leading zero. */
static int parse_port(const unsigned char *s, size_t n, unsigned int *port)
{
	unsigned long v = 0;
	size_t i;

	if (n == 0 || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
		if (v > 65535)
			return -1;
	}
	*port = (unsigned int)v;
	return 0;
}

static int parse_v1(const unsigned char *buf, size_t n, struct bs_proxy_header *h)
{
	const unsigned char *tok[7];
	size_t toklen[7];
	size_t end, i, start, ntok;
	const unsigned char *nl;
	size_t lim = n < V1_MAX ? n : V1_MAX;

	nl = memchr(buf, '\n', lim);
	if (nl == NULL)
		return n >= V1_MAX ? BS_PROXY_BAD : BS_PROXY_MORE;
	end = (size_t)(nl - buf); /* index of '\n' */
	if (end < 1 || buf[end - 1] != '\r')
		return BS_PROXY_BAD;

	/* Split buf[0..end-1) on single spaces, as strings.Split does; only
	 * the first six tokens matter and a seventh means "too many". */
	ntok = 0;
	start = 0;
	for (i = 0; i <= end - 1; i++) {
		if (i == end - 1 || buf[i] == ' ') {
			if (ntok < 7) {
				tok[ntok] = buf + start;
				toklen[ntok] = i - start;
			}
			ntok++;
			start = i + 1;
		}
	}
	if (!token_is(tok[0], toklen[0], "PROXY"))
		return BS_PROXY_BAD;
	if (ntok < 2)
		return BS_PROXY_BAD;

	memset(h, 0, sizeof *h);
	h->version = 1;
	h->length = end + 1;
	if (token_is(tok[1], toklen[1], "UNKNOWN")) {
		h->command = BS_PROXY_LOCAL;
		h->transport = BS_PROXY_UNSPEC;
		return BS_PROXY_OK;
	}
	h->command = BS_PROXY_PROXY;
	if (token_is(tok[1], toklen[1], "TCP4"))
		h->transport = BS_PROXY_TCP4;
	else if (token_is(tok[1], toklen[1], "TCP6"))
		h->transport = BS_PROXY_TCP6;
	else
		return BS_PROXY_BAD;
	if (ntok != 6)
		return BS_PROXY_BAD;

	for (i = 2; i <= 3; i++) {
		unsigned char *out = i == 2 ? h->src : h->dst;
		unsigned char first = first_special(tok[i], toklen[i]);

		if (h->transport == BS_PROXY_TCP4) {
			if (first != '.' || parse_ipv4(tok[i], toklen[i], out) != 0)
				return BS_PROXY_BAD;
		} else {
			if (first != ':' || parse_ipv6(tok[i], toklen[i], out) != 0)
				return BS_PROXY_BAD;
		}
	}
	if (parse_port(tok[4], toklen[4], &h->src_port) != 0)
		return BS_PROXY_BAD;
	if (parse_port(tok[5], toklen[5], &h->dst_port) != 0)
		return BS_PROXY_BAD;
	return BS_PROXY_OK;
}

/* The smallest address block of each v2 family. */
static size_t v2_min_length(int transport)
{
	switch (transport & 0xF0) {
	case 0x10:
		return 12;
	case 0x20:
		return 36;
	case 0x30:
		return 216;
	}
	return 0;
}

static int parse_v2(const unsigned char *buf, size_t n, struct bs_proxy_header *h)
{
	int command, transport;
	size_t length, min;

	if (n < 16) {
		/* Refuse as early as the bytes allow. */
		if (n > 12 && buf[12] != BS_PROXY_LOCAL && buf[12] != BS_PROXY_PROXY)
			return BS_PROXY_BAD;
		return BS_PROXY_MORE;
	}
	command = buf[12];
	transport = buf[13];
	if (command != BS_PROXY_LOCAL && command != BS_PROXY_PROXY)
		return BS_PROXY_BAD;
	switch (transport) {
	case BS_PROXY_UNSPEC:
		if (command != BS_PROXY_LOCAL)
			return BS_PROXY_BAD;
		break;
	case BS_PROXY_TCP4:
	case BS_PROXY_UDP4:
	case BS_PROXY_TCP6:
	case BS_PROXY_UDP6:
	case BS_PROXY_UNIX_STREAM:
	case BS_PROXY_UNIX_DGRAM:
		break;
	default:
		return BS_PROXY_BAD;
	}
	length = ((size_t)buf[14] << 8) | buf[15];
	if (length > BS_PROXY_V2_MAX)
		return BS_PROXY_BAD;
	min = v2_min_length(transport);
	if (length < min) {
		/* A LOCAL header whose block does not fit its family: the
		 * block is skipped and the family forgotten. */
		if (command != BS_PROXY_LOCAL)
			return BS_PROXY_BAD;
		transport = BS_PROXY_UNSPEC;
	}
	if (n < 16 + length)
		return BS_PROXY_MORE;

	memset(h, 0, sizeof *h);
	h->version = 2;
	h->command = command;
	h->transport = transport;
	h->length = 16 + length;
	switch (transport & 0xF0) {
	case 0x10:
		memcpy(h->src, buf + 16, 4);
		memcpy(h->dst, buf + 20, 4);
		h->src_port = ((unsigned int)buf[24] << 8) | buf[25];
		h->dst_port = ((unsigned int)buf[26] << 8) | buf[27];
		break;
	case 0x20:
		memcpy(h->src, buf + 16, 16);
		memcpy(h->dst, buf + 32, 16);
		h->src_port = ((unsigned int)buf[48] << 8) | buf[49];
		h->dst_port = ((unsigned int)buf[50] << 8) | buf[51];
		break;
	}
	return BS_PROXY_OK;
}

int bs_proxy_parse(const unsigned char *buf, size_t n, struct bs_proxy_header *h)
{
	size_t m;

	if (n == 0)
		return BS_PROXY_MORE;
	if (buf[0] == sig_v1[0]) {
		m = n < sizeof sig_v1 ? n : sizeof sig_v1;
		if (memcmp(buf, sig_v1, m) != 0)
			return BS_PROXY_BAD;
		if (n < sizeof sig_v1)
			return BS_PROXY_MORE;
		return parse_v1(buf, n, h);
	}
	if (buf[0] == sig_v2[0]) {
		m = n < sizeof sig_v2 ? n : sizeof sig_v2;
		if (memcmp(buf, sig_v2, m) != 0)
			return BS_PROXY_BAD;
		if (n < sizeof sig_v2)
			return BS_PROXY_MORE;
		return parse_v2(buf, n, h);
	}
	return BS_PROXY_BAD;
}
