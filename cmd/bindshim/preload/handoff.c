/*
 * handoff.c: the handoff message parser; see handoff.h.
 */
#include <string.h>

#include "handoff.h"

int bs_handoff_parse(const unsigned char *b, size_t n, struct bs_handoff *m)
{
	size_t name, alen;

	memset(m, 0, sizeof *m);
	if (n < 5 || b[0] != BS_HANDOFF_VERSION)
		return -1;
	name = (size_t)b[2] << 8 | b[3];
	if (name > 255 || n - 5 < name) /* as lib/handoff: no name is longer */
		return -1;
	m->sni_offset = 4;
	m->sni_length = name;
	alen = b[4 + name];
	if (alen == 0)
		return 0;
	if ((alen != 6 && alen != 18) || n - 5 - name < alen)
		return -1;
	b += 5 + name;
	m->has_client = 1;
	m->v4 = alen == 6;
	memcpy(m->client, b, alen - 2);
	m->port = (unsigned int)b[alen - 2] << 8 | b[alen - 1];
	return 0;
}
