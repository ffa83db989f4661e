/*
 * bindshim.c: the LD_PRELOAD library behind bindshim(1).
 *
 * A server's bind() of a TCP socket to the mapped port becomes a bind of a
 * UNIX stream socket at the mapped path, moved onto the same descriptor.
 * Every connection accepted from that socket must begin with a PROXY
 * protocol header from a trusted peer (root, or a uid in
 * BINDSHIM_TRUST_UIDS); the header is read off the stream, exactly its
 * bytes, and its source address is what accept(), getpeername() and
 * getsockname() report from then on. Anything else is closed before the
 * application sees it.
 *
 * With BINDSHIM_HANDOFF=1 the socket is a UNIX SOCK_SEQPACKET socket
 * instead, to which snilisten hands the client's TCP socket itself
 * (SCM_RIGHTS, lib/handoff): accept() receives one message per sender
 * connection and returns the TCP socket in it, whose addresses are the
 * kernel's own. Senders must be trusted too (root, a trusted uid, or the
 * server's own user), checked before anything is read. Only a client
 * address announced in the message is kept in the table, for
 * getpeername().
 *
 * A connection dropped by a blocking accept() that the application had
 * polled for (poll, ppoll, select, pselect are watched for that) makes it
 * return ECONNABORTED instead of waiting for another.
 *
 * The library keeps one table entry per mapped descriptor, in chunks that
 * are mapped on first use and never freed; it has no lock, no thread and
 * no allocation while accepting, so it is safe across fork() (nginx's
 * workers) and in threaded servers. Everything it does not recognise goes
 * straight to the next definition (dlsym RTLD_NEXT).
 *
 * The environment contract, set by the bindshim launcher:
 *   BINDSHIM_SOCKET            absolute path of the UNIX socket (required)
 *   BINDSHIM_PORT              TCP port whose binds are mapped (443)
 *   BINDSHIM_MODE              octal mode of the socket file (0660)
 *   BINDSHIM_GID               group of the socket file (unchanged)
 *   BINDSHIM_TRUST_UIDS        comma-separated uids trusted besides root
 *   BINDSHIM_REPLACE           1: take over a live socket (rename at listen)
 *   BINDSHIM_HEADER_TIMEOUT_MS how long to wait for a header or message (1000)
 *   BINDSHIM_HANDOFF           1: receive handed-off sockets (SOCK_SEQPACKET)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "handoff.h"
#include "proxy.h"

#define EXPORT __attribute__((visibility("default")))

/* ---- real functions ---------------------------------------------------- */

static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static int (*real_listen)(int, int);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_getpeername)(int, struct sockaddr *, socklen_t *);
static int (*real_getsockname)(int, struct sockaddr *, socklen_t *);
static int (*real_setsockopt)(int, int, int, const void *, socklen_t);
static int (*real_getsockopt)(int, int, int, void *, socklen_t *);
static int (*real_close)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_poll)(struct pollfd *, nfds_t, int);
static int (*real_ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
static int (*real_select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
static int (*real_pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *);

#define RESOLVE(name) (*(void **)(&real_##name) = dlsym(RTLD_NEXT, #name))

static void resolve(void)
{
	RESOLVE(bind);
	RESOLVE(listen);
	RESOLVE(accept);
	RESOLVE(accept4);
	RESOLVE(getpeername);
	RESOLVE(getsockname);
	RESOLVE(setsockopt);
	RESOLVE(getsockopt);
	RESOLVE(close);
	RESOLVE(dup);
	RESOLVE(dup2);
	RESOLVE(dup3);
	RESOLVE(poll);
	RESOLVE(ppoll);
	RESOLVE(select);
	RESOLVE(pselect);
}

/* REAL(f) is the next definition of f, resolved on first use when a call
 * comes before the constructor ran (another library's constructor). */
#define REAL(f) (real_##f != NULL ? real_##f : (resolve(), real_##f))

/* ---- configuration ----------------------------------------------------- */

#define MAX_TRUST 64

static struct {
	int active;            /* BINDSHIM_SOCKET is set */
	int broken;            /* the environment is invalid: mapped binds fail */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	unsigned int port;
	mode_t mode;
	long gid;              /* -1: leave the group alone */
	unsigned int trust[MAX_TRUST];
	int ntrust;
	int replace;
	int timeout_ms;
	int handoff;           /* a SOCK_SEQPACKET socket receiving TCP sockets */
} cfg;

static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof buf - 2)
		n = (int)sizeof buf - 2;
	buf[n++] = '\n';
	if (write(2, buf, (size_t)n) < 0) {
		/* nothing more to do */
	}
}

/* parse_ulong parses all of s in base, up to max. */
static int parse_ulong(const char *s, int base, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (s == NULL || *s == '\0' || *s == '-' || *s == '+' || *s == ' ')
		return -1;
	errno = 0;
	v = strtoul(s, &end, base);
	if (errno != 0 || *end != '\0' || v > max)
		return -1;
	*out = v;
	return 0;
}

static void configure(void)
{
	const char *s;
	unsigned long v;

	s = getenv("BINDSHIM_SOCKET");
	if (s == NULL || *s == '\0')
		return;
	cfg.active = 1;
	cfg.port = 443;
	cfg.mode = 0660;
	cfg.gid = -1;
	cfg.timeout_ms = 1000;
	if (s[0] != '/' || strlen(s) >= sizeof cfg.path) {
		say("bindshim: BINDSHIM_SOCKET %s: want an absolute path shorter than %zu bytes",
		    s, sizeof cfg.path);
		cfg.broken = 1;
		return;
	}
	memcpy(cfg.path, s, strlen(s) + 1);

	if ((s = getenv("BINDSHIM_PORT")) != NULL) {
		if (parse_ulong(s, 10, 65535, &v) != 0 || v == 0) {
			say("bindshim: BINDSHIM_PORT %s: want a port from 1 to 65535", s);
			cfg.broken = 1;
		}
		cfg.port = (unsigned int)v;
	}
	if ((s = getenv("BINDSHIM_MODE")) != NULL) {
		if (parse_ulong(s, 8, 07777, &v) != 0) {
			say("bindshim: BINDSHIM_MODE %s: want an octal mode", s);
			cfg.broken = 1;
		}
		cfg.mode = (mode_t)v;
	}
	if ((s = getenv("BINDSHIM_GID")) != NULL && *s != '\0') {
		if (parse_ulong(s, 10, 0x7fffffffUL, &v) != 0) {
			say("bindshim: BINDSHIM_GID %s: want a numeric group id", s);
			cfg.broken = 1;
		}
		cfg.gid = (long)v;
	}
	if ((s = getenv("BINDSHIM_TRUST_UIDS")) != NULL) {
		char one[16];

		while (*s != '\0') {
			size_t n = strcspn(s, ",");

			if (n == 0 || n >= sizeof one || cfg.ntrust == MAX_TRUST) {
				say("bindshim: BINDSHIM_TRUST_UIDS: want at most %d comma-separated uids", MAX_TRUST);
				cfg.broken = 1;
				break;
			}
			memcpy(one, s, n);
			one[n] = '\0';
			if (parse_ulong(one, 10, 0xfffffffeUL, &v) != 0) {
				say("bindshim: BINDSHIM_TRUST_UIDS: %s is not a numeric uid", one);
				cfg.broken = 1;
				break;
			}
			cfg.trust[cfg.ntrust++] = (unsigned int)v;
			s += n;
			if (*s == ',')
				s++;
		}
	}
	if ((s = getenv("BINDSHIM_REPLACE")) != NULL)
		cfg.replace = strcmp(s, "1") == 0;
	if ((s = getenv("BINDSHIM_HANDOFF")) != NULL)
		cfg.handoff = strcmp(s, "1") == 0;
	if ((s = getenv("BINDSHIM_HEADER_TIMEOUT_MS")) != NULL) {
		if (parse_ulong(s, 10, 3600000, &v) != 0 || v == 0) {
			say("bindshim: BINDSHIM_HEADER_TIMEOUT_MS %s: want milliseconds from 1 to 3600000", s);
			cfg.broken = 1;
		}
		cfg.timeout_ms = (int)v;
	}
}

__attribute__((constructor)) static void init(void)
{
	resolve();
	configure();
}

/* ---- the descriptor table ---------------------------------------------- */

/* KIND_LISTENER: the mapped UNIX socket the application takes for its TCP
 * listener. KIND_CONN: a connection accepted from it with a PROXY header;
 * every address is the table's. KIND_PEER: a handed-off TCP socket whose
 * client was announced by a trusted front: only getpeername is the
 * table's, everything else is the real socket's. */
enum { KIND_NONE, KIND_LISTENER, KIND_CONN, KIND_PEER };

union addr {
	struct sockaddr sa;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
};

struct entry {
	unsigned char kind;
	unsigned char v6only;  /* an AF_INET6 socket that would not see IPv4 */
	unsigned char polled;  /* a listener a poll or select said was readable */
	sa_family_t family;    /* the family the application bound */
	ino_t ino;             /* the socket's inode, to notice a closed fd */
	socklen_t local_len;
	socklen_t peer_len;
	union addr local;      /* getsockname: what the application bound,
	                          or the header's destination */
	union addr peer;       /* getpeername and accept: the header's source,
	                          or the client a handoff message announced */
};

#define CHUNK_BITS 10
#define CHUNK (1 << CHUNK_BITS)
#define NCHUNKS 1024 /* descriptors up to 2^20, Linux's default nr_open */

static struct entry *chunks[NCHUNKS];

/* lookup returns fd's entry, or NULL when it has none. */
static struct entry *lookup(int fd)
{
	struct entry *c;

	if (fd < 0 || fd >= CHUNK * NCHUNKS)
		return NULL;
	c = __atomic_load_n(&chunks[fd >> CHUNK_BITS], __ATOMIC_ACQUIRE);
	return c == NULL ? NULL : &c[fd & (CHUNK - 1)];
}

/* slot returns fd's entry, mapping its chunk on first use; NULL when fd is
 * out of range or memory is short. */
static struct entry *slot(int fd)
{
	struct entry *c, *expect = NULL;

	if (fd < 0 || fd >= CHUNK * NCHUNKS)
		return NULL;
	c = __atomic_load_n(&chunks[fd >> CHUNK_BITS], __ATOMIC_ACQUIRE);
	if (c == NULL) {
		c = mmap(NULL, sizeof(struct entry) * CHUNK, PROT_READ | PROT_WRITE,
		         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (c == MAP_FAILED)
			return NULL;
		if (!__atomic_compare_exchange_n(&chunks[fd >> CHUNK_BITS], &expect, c, 0,
		                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			munmap(c, sizeof(struct entry) * CHUNK);
			c = expect;
		}
	}
	return &c[fd & (CHUNK - 1)];
}

/* mapped returns fd's entry if fd is still the socket the entry was made
 * for: a descriptor closed behind the library's back (close_range, exec,
 * a libc-internal close) and reused is forgotten here. */
static struct entry *mapped(int fd)
{
	struct entry *e = lookup(fd);
	struct stat st;
	int saved = errno;

	if (e == NULL || e->kind == KIND_NONE)
		return NULL;
	if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_ino != e->ino) {
		e->kind = KIND_NONE;
		errno = saved;
		return NULL;
	}
	errno = saved;
	return e;
}

static void forget(int fd)
{
	struct entry *e = lookup(fd);

	if (e != NULL)
		e->kind = KIND_NONE;
}

/* The descriptor of this process's mapped listening socket, and the
 * temporary path it is bound at until listen() when replacing. */
static int primary = -1;
static int pending;
static char pending_path[sizeof cfg.path];

/* ---- addresses --------------------------------------------------------- */

/* make_addr builds the sockaddr an application bound to family would get
 * for an address from a header. IPv4 becomes v4-mapped IPv6 for a
 * dual-stack IPv6 socket, as Linux does, and stays IPv4 for an IPv6-only
 * one (which the kernel would never have given an IPv4 client); a
 * v4-mapped IPv6 address becomes IPv4 for an IPv4 socket. An IPv6 address
 * for an IPv4 socket stays IPv6: it cannot be told any other way. */
static socklen_t make_addr(int family, int v6only, int v4, const unsigned char *ip, unsigned int port,
                           union addr *out)
{
	static const unsigned char mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(out, 0, sizeof *out);
	if (!v4 && family == AF_INET && memcmp(ip, mapped_prefix, 12) == 0) {
		ip += 12;
		v4 = 1;
	}
	if (v4 && (family != AF_INET6 || v6only)) {
		out->sin.sin_family = AF_INET;
		memcpy(&out->sin.sin_addr, ip, 4);
		out->sin.sin_port = htons((unsigned short)port);
		return sizeof out->sin;
	}
	out->sin6.sin6_family = AF_INET6;
	if (v4) {
		memcpy(out->sin6.sin6_addr.s6_addr, mapped_prefix, 12);
		memcpy(out->sin6.sin6_addr.s6_addr + 12, ip, 4);
	} else {
		memcpy(out->sin6.sin6_addr.s6_addr, ip, 16);
	}
	out->sin6.sin6_port = htons((unsigned short)port);
	return sizeof out->sin6;
}

/* copy_out stores an address the way the kernel does: truncated to the
 * caller's *len, which then holds the full length. */
static void copy_out(struct sockaddr *addr, socklen_t *len, const union addr *a, socklen_t alen)
{
	if (addr == NULL)
		return;
	memcpy(addr, a, *len < alen ? *len : alen);
	*len = alen;
}

/* check_out refuses what the kernel refuses before touching the address. */
static int check_out(struct sockaddr *addr, socklen_t *len)
{
	if (addr == NULL)
		return 0;
	if (len == NULL) {
		errno = EFAULT;
		return -1;
	}
	if ((int)*len < 0) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

/* ---- bind and listen --------------------------------------------------- */

/* unix_type is the type of the UNIX socket a mapped bind makes. */
static int unix_type(void)
{
	return cfg.handoff ? SOCK_SEQPACKET : SOCK_STREAM;
}

static int bind_path(int s, const char *path)
{
	struct sockaddr_un sun;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	return REAL(bind)(s, (struct sockaddr *)&sun, sizeof sun);
}

/* path_state tells what is at path: 0 nothing, 1 a socket nobody listens
 * on (stale), 2 a live socket or something that is not a socket. A live
 * socket of the other type (SOCK_SEQPACKET) refuses the stream probe with
 * EPROTOTYPE: live too. */
static int path_state(const char *path)
{
	struct sockaddr_un sun;
	struct stat st;
	int s, r, err;

	if (lstat(path, &st) != 0)
		return errno == ENOENT ? 0 : 2;
	if (!S_ISSOCK(st.st_mode))
		return 2;
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		return 2;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	r = connect(s, (struct sockaddr *)&sun, sizeof sun);
	err = errno;
	REAL(close)(s);
	if (r != 0 && err == ECONNREFUSED)
		return 1;
	if (r != 0 && err == ENOENT)
		return 0;
	return 2;
}

/*
 * temp_name writes into out (of size bytes) prefix, "~" and 7 characters
 * from the kernel's random source: a temporary name beside a socket that
 * another member of the directory's group cannot guess and take first
 * (a name made of the pid could be, and the sticky directory would then
 * keep the server from removing it). '~' keeps the name out of reach of
 * any server name. -1 with errno set when it does not fit or no random
 * bytes came.
 */
static int temp_name(char *out, size_t size, const char *prefix)
{
	static const char abc[] = "abcdefghijklmnopqrstuvwxyz234567";
	unsigned char r[7];
	size_t i, n = strlen(prefix);
	ssize_t got;

	if (n + 1 + sizeof r >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	do
		got = getrandom(r, sizeof r, 0);
	while (got < 0 && errno == EINTR);
	if (got != (ssize_t)sizeof r) {
		if (got >= 0)
			errno = EIO;
		return -1;
	}
	memcpy(out, prefix, n);
	out[n] = '~';
	for (i = 0; i < sizeof r; i++)
		out[n + 1 + i] = abc[r[i] & 31];
	out[n + 1 + sizeof r] = '\0';
	return 0;
}

/* TEMP_TRIES is how many random names a bind tries before giving up: one
 * taken by chance is already unlikely. */
#define TEMP_TRIES 8

/* bind_temp binds s at a fresh temporary name beside prefix, written into
 * out, retrying while a name is taken; never removes anything. */
static int bind_temp(int s, char *out, size_t size, const char *prefix)
{
	int i;

	for (i = 0; i < TEMP_TRIES; i++) {
		if (temp_name(out, size, prefix) != 0)
			return -1;
		if (bind_path(s, out) == 0)
			return 0;
		if (errno != EADDRINUSE)
			return -1;
	}
	return -1;
}

/* setup_path gives the socket file its mode and group; the socket does not
 * listen yet, so nobody could connect before this. */
static int setup_path(const char *path)
{
	if (cfg.gid >= 0 && chown(path, (uid_t)-1, (gid_t)cfg.gid) != 0)
		return -1;
	return chmod(path, cfg.mode);
}

/*
 * idle_socket puts on fd a listening UNIX socket that nobody can connect
 * to, with the given status and descriptor flags, and records its inode
 * in e. It listens, so that poll does not report it hung up; it must not
 * be reachable, because whoever connects would be accepted by the
 * application as a client of its own choosing (a handoff of any TCP
 * socket). An abstract name, which any local user may connect to
 * whatever the directory's permissions, will not do: the socket is bound
 * at a random name beside the real one, which is removed before it
 * listens. Until then a connection is refused; after, no path leads to
 * it.
 */
static int idle_socket(int fd, int fl, int fdfl, struct entry *e)
{
	struct stat st;
	char dir[sizeof cfg.path], name[sizeof cfg.path];
	char *slash;
	int err, u = socket(AF_UNIX, unix_type() | SOCK_CLOEXEC | ((fl & O_NONBLOCK) ? SOCK_NONBLOCK : 0), 0);

	if (u < 0)
		return -1;
	/* The directory, with its slash: the name is dir/~XXXXXXX. */
	memcpy(dir, cfg.path, sizeof dir);
	slash = strrchr(dir, '/');
	slash[1] = '\0';
	if (bind_temp(u, name, sizeof name, dir) != 0) {
		err = errno;
		say("bindshim: a second bind of port %u: no unreachable socket beside %s: %s", cfg.port, cfg.path,
		    strerror(err));
		goto fail;
	}
	if (unlink(name) != 0 || REAL(listen)(u, 1) != 0 || fstat(u, &st) != 0 ||
	    REAL(dup3)(u, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
		err = errno;
		unlink(name);
		goto fail;
	}
	REAL(close)(u);
	e->ino = st.st_ino;
	return 0;

fail:
	REAL(close)(u);
	errno = err;
	return -1;
}

/* map_bind turns fd, a TCP socket the application binds to the mapped
 * port, into a UNIX socket bound at cfg.path. */
static int map_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct entry *e = slot(fd), *p;
	struct stat st;
	int fl, fdfl, u, r, err, v6only;
	const char *at = cfg.path;

	if (e == NULL) {
		errno = EMFILE;
		return -1;
	}
	fl = fcntl(fd, F_GETFL);
	fdfl = fcntl(fd, F_GETFD);
	if (fl < 0 || fdfl < 0)
		return -1;
	/* Whether the application asked for an IPv6-only socket (nginx does
	 * for [::]:443) is only known to the TCP socket about to go. */
	v6only = 0;
	if (addr->sa_family == AF_INET6) {
		socklen_t olen = sizeof v6only;
		if (REAL(getsockopt)(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &olen) != 0)
			v6only = 0;
	}

	/* A second bind in the same process ("listen 443; listen [::]:443;")
	 * shares the socket the first one made, of the same family, and the
	 * IPv6 descriptor gets it when there is one: an IPv4 descriptor could
	 * not tell an application about an IPv6 client (nginx drops such a
	 * connection), an IPv6-only one can be told about an IPv4 client as
	 * IPv4. The IPv4 descriptor then holds a socket nobody connects to. */
	p = primary >= 0 ? mapped(primary) : NULL;
	if (p != NULL && p->kind == KIND_LISTENER) {
		int pfl = fcntl(primary, F_GETFD);

		if (addr->sa_family == p->family) {
			if (REAL(dup3)(primary, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)
				return -1;
			e->ino = p->ino;
		} else if (addr->sa_family == AF_INET6) {
			int pst = fcntl(primary, F_GETFL);

			if (pfl < 0 || pst < 0 || REAL(dup3)(primary, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)
				return -1;
			e->ino = p->ino;
			if (idle_socket(primary, pst, pfl, p) != 0)
				return -1;
			primary = fd;
		} else if (idle_socket(fd, fl, fdfl, e) != 0) {
			return -1;
		}
		goto record;
	}

	u = socket(AF_UNIX, unix_type() | SOCK_CLOEXEC | ((fl & O_NONBLOCK) ? SOCK_NONBLOCK : 0), 0);
	if (u < 0)
		return -1;
	if (cfg.replace) {
		/* Bind beside the old socket, and rename over it once this one
		 * listens: new connections go here, the old server drains. */
		if (lstat(cfg.path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
			say("bindshim: %s exists and is not a socket: not replacing it", cfg.path);
			err = EADDRINUSE;
			goto fail;
		}
		at = pending_path;
		r = bind_temp(u, pending_path, sizeof pending_path, cfg.path);
		if (r != 0 && errno == ENAMETOOLONG)
			say("bindshim: %s: too long for a temporary name beside it", cfg.path);
	} else {
		r = bind_path(u, at);
		if (r != 0 && errno == EADDRINUSE) {
			switch (path_state(at)) {
			case 0:
			case 1:
				/* Stale: a socket file nobody listens on. */
				unlink(at);
				r = bind_path(u, at);
				break;
			default:
				say("bindshim: %s: a server is listening there already (use -replace to take over)", at);
				errno = EADDRINUSE;
			}
		}
	}
	if (r != 0) {
		err = errno;
		goto fail;
	}
	if (setup_path(at) != 0 || fstat(u, &st) != 0) {
		err = errno;
		say("bindshim: %s: set mode and group: %s", at, strerror(err));
		unlink(at);
		goto fail;
	}
	if (REAL(dup3)(u, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
		err = errno;
		unlink(at);
		goto fail;
	}
	REAL(close)(u);
	e->ino = st.st_ino;
	primary = fd;
	pending = cfg.replace;

record:
	memset(&e->local, 0, sizeof e->local);
	memcpy(&e->local, addr, len < sizeof e->local ? len : sizeof e->local);
	e->local_len = addr->sa_family == AF_INET ? sizeof e->local.sin : sizeof e->local.sin6;
	e->family = addr->sa_family;
	e->v6only = v6only != 0;
	e->peer_len = 0;
	e->polled = 0;
	e->kind = KIND_LISTENER;
	return 0;

fail:
	REAL(close)(u);
	errno = err;
	return -1;
}

EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	unsigned int port;
	int type = 0;
	socklen_t tlen = sizeof type;
	int saved = errno;

	if (!cfg.active || addr == NULL)
		return REAL(bind)(fd, addr, len);
	if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		struct sockaddr_in sin;
		memcpy(&sin, addr, sizeof sin);
		port = ntohs(sin.sin_port);
	} else if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 sin6;
		memcpy(&sin6, addr, sizeof sin6);
		port = ntohs(sin6.sin6_port);
	} else {
		return REAL(bind)(fd, addr, len);
	}
	if (port != cfg.port || REAL(getsockopt)(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 ||
	    type != SOCK_STREAM) {
		errno = saved;
		return REAL(bind)(fd, addr, len);
	}
	if (cfg.broken) {
		errno = EINVAL;
		return -1;
	}
	return map_bind(fd, addr, len);
}

EXPORT int listen(int fd, int backlog)
{
	struct entry *e, *p;
	int r = REAL(listen)(fd, backlog);

	if (r != 0 || !pending)
		return r;
	e = mapped(fd);
	p = mapped(primary);
	if (e == NULL || e->kind != KIND_LISTENER || p == NULL || p->ino != e->ino)
		return r; /* not the socket to rename */
	if (rename(pending_path, cfg.path) != 0) {
		int err = errno;
		say("bindshim: rename %s to %s: %s", pending_path, cfg.path, strerror(err));
		errno = err;
		return -1;
	}
	pending = 0;
	return 0;
}

/* ---- trust and PROXY headers ------------------------------------------- */

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int trusted(int c)
{
	struct ucred cr;
	socklen_t l = sizeof cr;
	int i;

	if (REAL(getsockopt)(c, SOL_SOCKET, SO_PEERCRED, &cr, &l) != 0 || l != sizeof cr)
		return 0;
	if (cr.uid == 0)
		return 1;
	for (i = 0; i < cfg.ntrust; i++)
		if (cfg.trust[i] == cr.uid)
			return 1;
	return 0;
}

/*
 * handoff_trusted says whether the sender on c may hand over connections
 * at all: root, a uid in BINDSHIM_TRUST_UIDS, or the server's own user
 * (who could as well act inside the server). Anyone else could pass a TCP
 * socket they made themselves, from any address (in a network namespace
 * of their own), and the application would take it for a client.
 */
static int handoff_trusted(int c)
{
	struct ucred cr;
	socklen_t l = sizeof cr;

	if (trusted(c))
		return 1;
	return REAL(getsockopt)(c, SOL_SOCKET, SO_PEERCRED, &cr, &l) == 0 && l == sizeof cr && cr.uid == geteuid();
}

/*
 * aborted is what accept does after dropping a connection on listener
 * fd; polled says whether the application's last poll or select (since
 * its last accept) told it that fd was readable. A non-blocking listener
 * goes on to the next connection (EAGAIN when there is none). A blocking
 * one that was polled returns ECONNABORTED, as POSIX has accept do for a
 * connection aborted in the queue, and servers retry: it must not block
 * until another connection comes, which may be never, while the
 * application, told a connection was there, has other work waiting. A
 * blocking one that was not polled waits on, as the kernel's accept
 * would: a program that calls it directly expects that, and may take
 * an error as fatal (openssl s_server exits on ECONNABORTED, socat on
 * EAGAIN). 1 says accept returns -1 with errno set.
 */
static int aborted(int fd, int polled)
{
	int fl;

	if (!polled)
		return 0;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_NONBLOCK))
		return 0;
	errno = ECONNABORTED;
	return 1;
}

/* wait_in waits until c is readable or the deadline (now_ms) passes: 0
 * when it is readable, -1 otherwise. */
static int wait_in(int c, long deadline)
{
	for (;;) {
		struct pollfd pfd;
		long left = deadline - now_ms();
		int pr;

		if (left <= 0)
			return -1;
		pfd.fd = c;
		pfd.events = POLLIN;
		pfd.revents = 0;
		pr = REAL(poll)(&pfd, 1, (int)left);
		if (pr > 0)
			return 0;
		if (pr == 0 || errno != EINTR)
			return -1;
	}
}

/* consume reads exactly n bytes that a peek has shown are there. */
static int consume(int c, unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t r = recv(c, p, n, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/*
 * take_header reads the PROXY header at the start of c and nothing after
 * it, waiting up to the header timeout even if c does not block. Bytes
 * are peeked first, and only those the parser says belong to the header
 * are read.
 */
static int take_header(int c, struct bs_proxy_header *h)
{
	unsigned char buf[BS_PROXY_MAX];
	size_t have = 0;
	long deadline = now_ms() + cfg.timeout_ms;

	for (;;) {
		ssize_t n = recv(c, buf + have, sizeof buf - have, MSG_PEEK | MSG_DONTWAIT);

		if (n > 0) {
			int r = bs_proxy_parse(buf, have + (size_t)n, h);

			if (r == BS_PROXY_OK)
				return consume(c, buf + have, h->length - have);
			if (r == BS_PROXY_BAD)
				return -1;
			/* Every byte so far belongs to the header. */
			if (consume(c, buf + have, (size_t)n) != 0)
				return -1;
			have += (size_t)n;
			continue;
		}
		if (n == 0)
			return -1;
		if (errno == EINTR)
			continue;
		if ((errno != EAGAIN && errno != EWOULDBLOCK) || wait_in(c, deadline) != 0)
			return -1;
	}
}

/* usable says whether a header names a client the application can be told
 * about: a TCP connection, or a LOCAL one (the proxy's own, such as a
 * health check). UDP and UNIX sources make no sense for a TCP server. */
static int usable(const struct bs_proxy_header *h)
{
	if (h->command == BS_PROXY_LOCAL)
		return 1;
	return h->transport == BS_PROXY_TCP4 || h->transport == BS_PROXY_TCP6;
}

/* ---- accept in handoff mode -------------------------------------------- */

/* The most descriptors taken from one message; the kernel discards any
 * beyond them (MSG_CTRUNC), and the message is dropped either way. */
#define HANDOFF_FDS 8

/* tcp_socket says whether c is a connected TCP socket: what a handoff
 * message must carry, and not a listener, a UNIX socket or a file. */
static int tcp_socket(int c)
{
	int domain = 0, type = 0, proto = 0, listening = 1;
	socklen_t l1 = sizeof domain, l2 = sizeof type, l3 = sizeof proto, l4 = sizeof listening;

	if (REAL(getsockopt)(c, SOL_SOCKET, SO_DOMAIN, &domain, &l1) != 0 ||
	    REAL(getsockopt)(c, SOL_SOCKET, SO_TYPE, &type, &l2) != 0 ||
	    REAL(getsockopt)(c, SOL_SOCKET, SO_PROTOCOL, &proto, &l3) != 0 ||
	    REAL(getsockopt)(c, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l4) != 0)
		return 0;
	return (domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM && proto == IPPROTO_TCP &&
	       !listening;
}

/*
 * take_handoff receives the one message that the sender connection s
 * carries, waiting up to the header timeout for it, and returns the TCP
 * socket in it (with FD_CLOEXEC, so that a fork and exec in another thread
 * cannot leak it), with the message in *m. The sender is a trusted one
 * (handoff_accept checks before anything waits). A message without
 * exactly one descriptor, with a malformed payload, or with something
 * else than a connected TCP socket is dropped: every descriptor it
 * brought is closed, and -1 returned. -2 says the process had no
 * descriptor free for the socket: the kernel discarded it.
 */
static int take_handoff(int s, struct bs_handoff *m)
{
	unsigned char buf[BS_HANDOFF_MAX];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * HANDOFF_FDS)];
	} ctl;
	struct iovec iov;
	struct msghdr msg;
	struct cmsghdr *cm;
	long deadline = now_ms() + cfg.timeout_ms;
	ssize_t n;
	int fd = -1, nfds = 0;

	for (;;) {
		memset(&msg, 0, sizeof msg);
		iov.iov_base = buf;
		iov.iov_len = sizeof buf;
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof ctl.buf;
		n = recvmsg(s, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if ((errno != EAGAIN && errno != EWOULDBLOCK) || wait_in(s, deadline) != 0)
			return -1;
	}
	for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
		size_t i, k;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < k; i++) {
			int one;

			memcpy(&one, CMSG_DATA(cm) + i * sizeof(int), sizeof one);
			if (nfds++ == 0)
				fd = one;
			else
				REAL(close)(one);
		}
	}
	if (nfds == 0 && (msg.msg_flags & MSG_CTRUNC))
		return -2;
	/* A payload longer than buf (MSG_TRUNC) is read as far as buf goes:
	 * receivers ignore what follows the fields they know. */
	if (nfds != 1 || (msg.msg_flags & MSG_CTRUNC) || bs_handoff_parse(buf, (size_t)n, m) != 0 ||
	    !tcp_socket(fd)) {
		if (fd >= 0)
			REAL(close)(fd);
		return -1;
	}
	return fd;
}

/* set_flags gives a received socket the flags accept4 would have given a
 * new one: O_NONBLOCK and FD_CLOEXEC set or cleared. O_NONBLOCK belongs to
 * the open file, which the sender shares until it closes its copy. */
static int set_flags(int c, int flags)
{
	int fl = fcntl(c, F_GETFL);

	if (fl < 0)
		return -1;
	if (!!(fl & O_NONBLOCK) != !!(flags & SOCK_NONBLOCK) &&
	    fcntl(c, F_SETFL, (flags & SOCK_NONBLOCK) ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) != 0)
		return -1;
	if (!(flags & SOCK_CLOEXEC) && fcntl(c, F_SETFD, 0) != 0)
		return -1;
	return 0;
}

/* announce records the client a trusted handoff message announced as c's
 * peer, in the family of the real socket (a dual-stack IPv6 socket sees an
 * IPv4 client v4-mapped, as the kernel would have shown it). */
static int announce(int c, const struct bs_handoff *m, union addr *peer, socklen_t *peer_len)
{
	struct entry *e;
	struct stat st;
	int family = 0, v6only = 0;
	socklen_t l = sizeof family;

	if (REAL(getsockopt)(c, SOL_SOCKET, SO_DOMAIN, &family, &l) != 0 || fstat(c, &st) != 0)
		return -1;
	l = sizeof v6only;
	if (family == AF_INET6 && REAL(getsockopt)(c, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &l) != 0)
		v6only = 0;
	*peer_len = make_addr(family, v6only != 0, m->v4, m->client, m->port, peer);
	e = slot(c);
	if (e == NULL)
		return -1; /* getpeername could not tell the same story */
	e->family = (sa_family_t)family;
	e->v6only = v6only != 0;
	e->ino = st.st_ino;
	e->peer = *peer;
	e->peer_len = *peer_len;
	e->local_len = 0;
	e->kind = KIND_PEER;
	return 0;
}

/*
 * handoff_accept is accept4 on a handoff listener: each connection to it
 * is a sender with one message, whose TCP socket is returned with the
 * caller's flags and its peer's address. A sender that is not trusted
 * is closed before anything is read or waited for, so that neither it
 * nor its silence delays the senders behind it. After a dropped message
 * accept goes on to the next sender, or returns ECONNABORTED (aborted),
 * as with PROXY headers.
 */
static int handoff_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags, int polled)
{
	int saved = errno;

	if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) {
		errno = EINVAL;
		return -1;
	}
	if (check_out(addr, addrlen) != 0)
		return -1;
	for (;;) {
		struct bs_handoff m;
		union addr peer;
		socklen_t peer_len = sizeof peer;
		int c, s, err;
		/* Hold a descriptor for the one to receive: when the process
		 * has too few, accept says EMFILE and the sender stays queued,
		 * as a connection stays queued for the kernel's accept. */
		int spare = fcntl(fd, F_DUPFD_CLOEXEC, 0);

		if (spare < 0)
			return -1;
		s = REAL(accept4)(fd, NULL, NULL, SOCK_CLOEXEC);
		err = errno;
		REAL(close)(spare);
		if (s < 0) {
			errno = err;
			return -1;
		}
		forget(s);
		c = handoff_trusted(s) ? take_handoff(s, &m) : -1;
		REAL(close)(s);
		if (c == -2) {
			/* Another thread took the spare descriptor. */
			errno = EMFILE;
			return -1;
		}
		if (c < 0) {
			if (aborted(fd, polled))
				return -1;
			continue;
		}
		forget(c);
		if (set_flags(c, flags) != 0 ||
		    (m.has_client ? announce(c, &m, &peer, &peer_len) : REAL(getpeername)(c, &peer.sa, &peer_len)) != 0) {
			/* Not connected any more (reset), or no memory. */
			forget(c);
			REAL(close)(c);
			continue;
		}
		copy_out(addr, addrlen, &peer, peer_len);
		errno = saved;
		return c;
	}
}

/* ---- accept and accept4 ------------------------------------------------ */

static int shim_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags, int four)
{
	static const unsigned char lo4[16] = {127, 0, 0, 1};
	static const unsigned char lo6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	struct entry *l = mapped(fd);
	int saved = errno, polled;

	if (l == NULL || l->kind != KIND_LISTENER) {
		if (four)
			return REAL(accept4)(fd, addr, addrlen, flags);
		return REAL(accept)(fd, addr, addrlen);
	}
	/* What the application's poll said is used once. */
	polled = l->polled;
	l->polled = 0;
	if (cfg.handoff)
		return handoff_accept(fd, addr, addrlen, four ? flags : 0, polled);
	if (check_out(addr, addrlen) != 0)
		return -1;
	for (;;) {
		struct bs_proxy_header h;
		struct entry *e;
		struct stat st;
		union addr peer, local;
		socklen_t peer_len, local_len;
		int c = four ? REAL(accept4)(fd, NULL, NULL, flags) : REAL(accept)(fd, NULL, NULL);

		if (c < 0)
			return -1;
		forget(c);
		if (!trusted(c) || take_header(c, &h) != 0 || !usable(&h) || fstat(c, &st) != 0) {
			/* Never reaches the application; accept goes on to
			 * the next connection, or says ECONNABORTED (aborted). */
			REAL(close)(c);
			if (aborted(fd, polled))
				return -1;
			continue;
		}
		if (h.command == BS_PROXY_LOCAL) {
			int v4 = l->family == AF_INET;
			peer_len = make_addr(l->family, l->v6only, v4, v4 ? lo4 : lo6, 0, &peer);
			local_len = make_addr(l->family, l->v6only, v4, v4 ? lo4 : lo6, cfg.port, &local);
		} else {
			int v4 = h.transport == BS_PROXY_TCP4;
			peer_len = make_addr(l->family, l->v6only, v4, h.src, h.src_port, &peer);
			local_len = make_addr(l->family, l->v6only, v4, h.dst, h.dst_port, &local);
		}
		e = slot(c);
		if (e != NULL) {
			e->family = peer.sa.sa_family;
			e->v6only = l->v6only;
			e->ino = st.st_ino;
			e->peer = peer;
			e->peer_len = peer_len;
			e->local = local;
			e->local_len = local_len;
			e->kind = KIND_CONN;
		}
		copy_out(addr, addrlen, &peer, peer_len);
		errno = saved;
		return c;
	}
}

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	return shim_accept(fd, addr, addrlen, 0, 0);
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	return shim_accept(fd, addr, addrlen, flags, 1);
}

/* ---- poll and select --------------------------------------------------- */

/* note_polled marks fd, if it is a mapped listener, as one the
 * application was told is readable (see aborted). It reads the table
 * only: no system call, errno untouched. */
static void note_polled(int fd)
{
	struct entry *e = lookup(fd);

	if (e != NULL && e->kind == KIND_LISTENER)
		e->polled = 1;
}

static void note_pollfds(const struct pollfd *fds, nfds_t n)
{
	nfds_t i;

	for (i = 0; i < n; i++)
		if (fds[i].revents & POLLIN)
			note_polled(fds[i].fd);
}

/* note_fdset is note_polled for each descriptor below n in set, read by
 * hand: FD_ISSET checks against FD_SETSIZE, which a program may exceed
 * with a larger set. */
static void note_fdset(int n, const fd_set *set)
{
	const unsigned long *w = (const unsigned long *)(const void *)set;
	const int bits = (int)(8 * sizeof *w);
	int fd;

	if (set == NULL)
		return;
	for (fd = 0; fd < n; fd++)
		if ((w[fd / bits] >> (fd % bits)) & 1UL)
			note_polled(fd);
}

EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	int r = REAL(poll)(fds, n, timeout);

	if (r > 0)
		note_pollfds(fds, n);
	return r;
}

EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout, const sigset_t *mask)
{
	int r = REAL(ppoll)(fds, n, timeout, mask);

	if (r > 0)
		note_pollfds(fds, n);
	return r;
}

EXPORT int select(int n, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *timeout)
{
	int r = REAL(select)(n, rd, wr, ex, timeout);

	if (r > 0)
		note_fdset(n, rd);
	return r;
}

EXPORT int pselect(int n, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *timeout, const sigset_t *mask)
{
	int r = REAL(pselect)(n, rd, wr, ex, timeout, mask);

	if (r > 0)
		note_fdset(n, rd);
	return r;
}

/* ---- addresses of mapped sockets --------------------------------------- */

EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
	struct entry *e = mapped(fd);

	if (e == NULL || (e->kind != KIND_CONN && e->kind != KIND_PEER))
		return REAL(getpeername)(fd, addr, len);
	if (addr == NULL || len == NULL) {
		errno = EFAULT;
		return -1;
	}
	if (check_out(addr, len) != 0)
		return -1;
	copy_out(addr, len, &e->peer, e->peer_len);
	return 0;
}

EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
	struct entry *e = mapped(fd);

	if (e == NULL || e->kind == KIND_PEER)
		return REAL(getsockname)(fd, addr, len);
	if (addr == NULL || len == NULL) {
		errno = EFAULT;
		return -1;
	}
	if (check_out(addr, len) != 0)
		return -1;
	copy_out(addr, len, &e->local, e->local_len);
	return 0;
}

/* ---- socket options ---------------------------------------------------- */

static int ip_level(int level)
{
	return level == IPPROTO_TCP || level == IPPROTO_IP || level == IPPROTO_IPV6;
}

/* unix_mapped returns fd's entry if fd is one of the UNIX sockets standing
 * in for TCP ones (a listener, or a connection with a PROXY header); a
 * handed-off socket is real TCP and answers for itself. */
static struct entry *unix_mapped(int fd)
{
	struct entry *e = mapped(fd);

	return e != NULL && e->kind != KIND_PEER ? e : NULL;
}

EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	/* TCP_NODELAY, TCP_DEFER_ACCEPT, IPV6_V6ONLY, IP_TOS...: meaningless
	 * on a UNIX socket, and harmless to pretend. */
	if (ip_level(level) && unix_mapped(fd) != NULL)
		return 0;
	return REAL(setsockopt)(fd, level, name, val, len);
}

EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct entry *e;

	if (!ip_level(level) && !(level == SOL_SOCKET && (name == SO_DOMAIN || name == SO_PROTOCOL || name == SO_TYPE)))
		return REAL(getsockopt)(fd, level, name, val, len);
	e = unix_mapped(fd);
	if (e == NULL)
		return REAL(getsockopt)(fd, level, name, val, len);
	if (val == NULL || len == NULL) {
		errno = EFAULT;
		return -1;
	}
	if ((int)*len < 0) {
		errno = EINVAL;
		return -1;
	}
	memset(val, 0, *len);
	if (level == SOL_SOCKET && *len >= sizeof(int)) {
		/* A handoff listener is SOCK_SEQPACKET underneath. */
		int v = name == SO_DOMAIN ? e->family : name == SO_TYPE ? SOCK_STREAM : IPPROTO_TCP;
		memcpy(val, &v, sizeof v);
		*len = sizeof v;
	}
	return 0;
}

/* ---- descriptor bookkeeping -------------------------------------------- */

EXPORT int close(int fd)
{
	struct entry *e = lookup(fd);

	/* Forget before closing: once closed, another thread may get the
	 * same number from accept. */
	if (e != NULL && e->kind != KIND_NONE) {
		e->kind = KIND_NONE;
		if (fd == primary) {
			primary = -1;
			if (pending) {
				unlink(pending_path);
				pending = 0;
			}
		}
	}
	return REAL(close)(fd);
}

/* copy_entry makes newfd's entry a copy of oldfd's, or empty. */
static void copy_entry(int oldfd, int newfd)
{
	struct entry *o = mapped(oldfd), *n;

	if (o == NULL) {
		forget(newfd);
		return;
	}
	n = slot(newfd);
	if (n == NULL)
		return;
	*n = *o;
}

EXPORT int dup(int fd)
{
	int r = REAL(dup)(fd);

	if (r >= 0)
		copy_entry(fd, r);
	return r;
}

EXPORT int dup2(int oldfd, int newfd)
{
	int r;

	if (oldfd != newfd)
		forget(newfd);
	r = REAL(dup2)(oldfd, newfd);
	if (r >= 0 && oldfd != newfd)
		copy_entry(oldfd, r);
	return r;
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
	int r;

	if (oldfd != newfd)
		forget(newfd);
	r = REAL(dup3)(oldfd, newfd, flags);
	if (r >= 0)
		copy_entry(oldfd, r);
	return r;
}
