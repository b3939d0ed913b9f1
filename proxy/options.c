/*
 * options.c - the value parsers of every configuration key (see options.h).
 *
 * Exports opt_size, opt_time, opt_bool, opt_list, opt_nets,
 * opt_nets_match, opt_nets_match_ip, opt_cidr, opt_cidr_match,
 * opt_cidr_free and opt_file. config.c parses the top-level keys with
 * them; chain.c hands them to plugins in struct pc_host, so a plugin's
 * "timeout = 5m" reads as the daemon's does. Numbers are checked for
 * overflow digit by digit: "99999999999999G" is an error, not a small
 * number.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "options.h"

/* An address with its prefix: INET6_ADDRSTRLEN, "/128" and the NUL. */
#define OPT_NET_TEXT_MAX (INET6_ADDRSTRLEN + 8)

/* The longest list quoted whole in a message. */
#define OPT_QUOTE_MAX 100

/* What plugins get from opt_cidr. */
struct pc_cidrs {
	size_t n;
	struct opt_net nets[];
};

static int opt_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int opt_number(const char *s, unsigned long long *out, const char **rest);
static int opt_scale(unsigned long long v, unsigned long long mult, unsigned long long *out);
static int opt_net_parse(const char *item, size_t len, struct opt_net *net, int *host_bits);
static int opt_net_contains(const struct opt_net *net, int family, const unsigned char *a);
static int opt_nets_match_addr(
    const struct opt_net *nets, size_t n, int family, const unsigned char *a);
static const char *opt_quote(const char *value, char *buf, size_t len);
static int opt_nets_bad(char *err, size_t errlen, const char *value, size_t max);
static int opt_nets_fill(const char *value, struct opt_net *nets, size_t max, size_t room,
    size_t *n, char *err, size_t errlen);

/* opt_err - format a message into err (which may be NULL); returns -1 */
static int
opt_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* opt_number - decimal digits, at least one, no sign; *rest after them */
static int
opt_number(const char *s, unsigned long long *out, const char **rest)
{
	unsigned long long v = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (ULLONG_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	*rest = p;
	return 0;
}

/* opt_scale - v * mult, or -1 if it does not fit */
static int
opt_scale(unsigned long long v, unsigned long long mult, unsigned long long *out)
{
	if (v != 0 && mult > ULLONG_MAX / v)
		return -1;
	*out = v * mult;
	return 0;
}

/* opt_size - 10, 10k, 10M, 10G */
int
opt_size(const char *value, unsigned long long *out, char *err, size_t errlen)
{
	unsigned long long v, mult = 1;
	const char *rest;

	if (opt_number(value, &v, &rest) != 0)
		goto bad;
	switch (*rest) {
	case '\0':
		break;
	case 'k':
	case 'K':
		mult = 1024ULL;
		rest++;
		break;
	case 'm':
	case 'M':
		mult = 1024ULL * 1024;
		rest++;
		break;
	case 'g':
	case 'G':
		mult = 1024ULL * 1024 * 1024;
		rest++;
		break;
	default:
		goto bad;
	}
	if (*rest != '\0' || opt_scale(v, mult, out) != 0)
		goto bad;
	return 0;
bad:
	return opt_err(err, errlen, "bad value \"%s\": expected %s", value, OPT_HELP_SIZE);
}

/* opt_time - 250ms, 30s, 5m, 1h, 2d; a bare number is seconds */
int
opt_time(const char *value, unsigned long long *ms, char *err, size_t errlen)
{
	unsigned long long v, mult;
	const char *rest;

	if (opt_number(value, &v, &rest) != 0)
		goto bad;
	if (strcmp(rest, "ms") == 0)
		mult = 1;
	else if (*rest == '\0' || strcmp(rest, "s") == 0)
		mult = 1000;
	else if (strcmp(rest, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(rest, "h") == 0)
		mult = 3600 * 1000;
	else if (strcmp(rest, "d") == 0)
		mult = 24ULL * 3600 * 1000;
	else
		goto bad;
	if (opt_scale(v, mult, ms) != 0)
		goto bad;
	return 0;
bad:
	return opt_err(err, errlen, "bad value \"%s\": expected %s", value, OPT_HELP_TIME);
}

/* opt_bool - yes/no and friends */
int
opt_bool(const char *value, int *out, char *err, size_t errlen)
{
	if (!strcasecmp(value, "yes") || !strcasecmp(value, "true") || !strcasecmp(value, "on") ||
	    !strcmp(value, "1"))
		*out = 1;
	else if (!strcasecmp(value, "no") || !strcasecmp(value, "false") ||
	    !strcasecmp(value, "off") || !strcmp(value, "0"))
		*out = 0;
	else
		return opt_err(err, errlen, "bad value \"%s\": expected %s", value, OPT_HELP_BOOL);
	return 0;
}

/* opt_list - the next item of a blank- or comma-separated list */
int
opt_list(const char **cursor, const char **item, size_t *len)
{
	const char *p = *cursor;

	p += strspn(p, OPT_LIST_SEPARATORS);
	if (*p == '\0') {
		*cursor = p;
		return 0;
	}
	*item = p;
	*len = strcspn(p, OPT_LIST_SEPARATORS);
	*cursor = p + *len;
	return 1;
}

/*
 * opt_net_parse - one item of a CIDR list (len octets): 0, or -1 if it is
 * no address or network; *host_bits tells a network with bits set past
 * its prefix apart (net then holds what was written).
 */
static int
opt_net_parse(const char *item, size_t len, struct opt_net *net, int *host_bits)
{
	char text[OPT_NET_TEXT_MAX];
	unsigned long long bits;
	const char *rest;
	char *slash;
	unsigned max;

	*host_bits = 0;
	if (len == 0 || len >= sizeof(text))
		return -1;
	memcpy(text, item, len);
	text[len] = '\0';
	if ((slash = strchr(text, '/')) != NULL)
		*slash = '\0';
	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, text, net->addr) == 1)
		net->family = AF_INET;
	else if (inet_pton(AF_INET6, text, net->addr) == 1)
		net->family = AF_INET6;
	else
		return -1;
	max = net->family == AF_INET ? 32 : 128;
	bits = max;
	if (slash != NULL &&
	    (opt_number(slash + 1, &bits, &rest) != 0 || *rest != '\0' || bits > max))
		return -1;
	net->bits = (unsigned)bits;
	for (unsigned i = net->bits; i < max; i++) {
		if (net->addr[i / 8] & (0x80u >> (i % 8)))
			*host_bits = 1;
	}
	return 0;
}

/* opt_quote - value as a message quotes it: a long list is cut, so that
 * the message still says what was wrong within a caller's buffer */
static const char *
opt_quote(const char *value, char *buf, size_t len)
{
	if (strlen(value) <= OPT_QUOTE_MAX)
		return value;
	snprintf(buf, len, "%.*s...", OPT_QUOTE_MAX - 3, value);
	return buf;
}

/* opt_nets_bad - the message for a list that is not one */
static int
opt_nets_bad(char *err, size_t errlen, const char *value, size_t max)
{
	char q[OPT_QUOTE_MAX + 1];

	if (max == SIZE_MAX)
		return opt_err(err, errlen, "bad value \"%s\": expected %s",
		    opt_quote(value, q, sizeof(q)), OPT_HELP_NETS);
	return opt_err(err, errlen, "bad value \"%s\": expected %s, at most %zu",
	    opt_quote(value, q, sizeof(q)), OPT_HELP_NETS, max);
}

/* opt_nets_fill - opt_nets, where max == SIZE_MAX means "no bound to tell" */
static int
opt_nets_fill(const char *value, struct opt_net *nets, size_t max, size_t room, size_t *n,
    char *err, size_t errlen)
{
	const char *cur = value, *item;
	size_t len, count = 0;

	while (opt_list(&cur, &item, &len)) {
		struct opt_net net;
		int host_bits;

		if (count >= room || opt_net_parse(item, len, &net, &host_bits) != 0)
			return opt_nets_bad(err, errlen, value, max);
		if (host_bits) {
			char fixed[INET6_ADDRSTRLEN], q[OPT_QUOTE_MAX + 1];
			struct opt_net masked = net;

			for (unsigned i = net.bits; i < 128; i++)
				masked.addr[i / 8] &= (unsigned char)~(0x80u >> (i % 8));
			inet_ntop(masked.family, masked.addr, fixed, sizeof(fixed));
			return opt_err(err, errlen,
			    "bad value \"%s\": %.*s has bits set past its /%u prefix (the network "
			    "is %s/%u)",
			    opt_quote(value, q, sizeof(q)), (int)len, item, net.bits, fixed,
			    net.bits);
		}
		nets[count++] = net;
	}
	if (count == 0)
		return opt_nets_bad(err, errlen, value, max);
	*n = count;
	return 0;
}

/* opt_nets - a CIDR list into a fixed array */
int
opt_nets(const char *value, struct opt_net *nets, size_t max, size_t *n, char *err, size_t errlen)
{
	return opt_nets_fill(value, nets, max, max, n, err, errlen);
}

/* opt_net_contains - is a (family's length, network order) in net? */
static int
opt_net_contains(const struct opt_net *net, int family, const unsigned char *a)
{
	unsigned full = net->bits / 8, rem = net->bits % 8;

	if (net->family != family || memcmp(a, net->addr, full) != 0)
		return 0;
	return rem == 0 || ((a[full] ^ net->addr[full]) & (0xff << (8 - rem))) == 0;
}

/* opt_nets_match_addr - an address (4 or 16 octets) against the list; an
 * IPv4 address also as ::ffff:a.b.c.d, a mapped one also as IPv4 */
static int
opt_nets_match_addr(const struct opt_net *nets, size_t n, int family, const unsigned char *a)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	unsigned char v4[4], v6[16];

	if (family == AF_INET6 && memcmp(a, mapped, sizeof(mapped)) == 0) {
		memcpy(v4, a + 12, 4);
		memcpy(v6, a, 16);
	} else if (family == AF_INET) {
		memcpy(v4, a, 4);
		memcpy(v6, mapped, sizeof(mapped));
		memcpy(v6 + 12, a, 4);
	} else {
		for (size_t i = 0; i < n; i++) {
			if (opt_net_contains(&nets[i], AF_INET6, a))
				return 1;
		}
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (opt_net_contains(&nets[i], AF_INET, v4) ||
		    opt_net_contains(&nets[i], AF_INET6, v6))
			return 1;
	}
	return 0;
}

/* opt_nets_match - a socket address against the list */
int
opt_nets_match(const struct opt_net *nets, size_t n, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return opt_nets_match_addr(nets, n, AF_INET,
		    (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr);
	if (sa->sa_family == AF_INET6)
		return opt_nets_match_addr(nets, n, AF_INET6,
		    (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return 0;
}

/* opt_nets_match_ip - a numeric address as text against the list */
int
opt_nets_match_ip(const struct opt_net *nets, size_t n, const char *ip)
{
	char text[INET6_ADDRSTRLEN];
	unsigned char a[16];
	/* A link-local address may carry its zone ("fe80::1%eth0"): it
	 * names our interface, and inet_pton refuses it. */
	size_t len = ip != NULL ? strcspn(ip, "%") : 0;

	if (len == 0 || len >= sizeof(text))
		return -1;
	memcpy(text, ip, len);
	text[len] = '\0';
	if (inet_pton(AF_INET, text, a) == 1)
		return opt_nets_match_addr(nets, n, AF_INET, a);
	if (inet_pton(AF_INET6, text, a) == 1)
		return opt_nets_match_addr(nets, n, AF_INET6, a);
	return -1;
}

/* opt_cidr - a CIDR list of any length, for a plugin */
int
opt_cidr(const char *value, struct pc_cidrs **out, char *err, size_t errlen)
{
	const char *cur = value, *item;
	size_t len, count = 0;
	struct pc_cidrs *c;

	*out = NULL;
	while (opt_list(&cur, &item, &len))
		count++;
	if (count == 0)
		return opt_nets_bad(err, errlen, value, SIZE_MAX);
	if ((c = malloc(sizeof(*c) + count * sizeof(c->nets[0]))) == NULL)
		return opt_err(err, errlen, "out of memory");
	if (opt_nets_fill(value, c->nets, SIZE_MAX, count, &c->n, err, errlen) != 0) {
		free(c);
		return -1;
	}
	*out = c;
	return 0;
}

/* opt_cidr_match - a plugin's list against an address as text */
int
opt_cidr_match(const struct pc_cidrs *cidrs, const char *ip)
{
	if (cidrs == NULL)
		return opt_nets_match_ip(NULL, 0, ip);
	return opt_nets_match_ip(cidrs->nets, cidrs->n, ip);
}

/* opt_cidr_free - what opt_cidr allocated; NULL is fine */
void
opt_cidr_free(struct pc_cidrs *cidrs)
{
	free(cidrs);
}

/* opt_file - can we read path now? */
int
opt_file(const char *path, char *err, size_t errlen)
{
	struct stat st;
	int fd, e;

	/* O_NONBLOCK: a FIFO must not hang the check. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) < 0)
		return opt_err(err, errlen, "cannot read \"%s\": %s", path, strerror(errno));
	e = fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
	close(fd);
	if (e != 0)
		return opt_err(err, errlen, "cannot read \"%s\": %s", path, strerror(e));
	return 0;
}
