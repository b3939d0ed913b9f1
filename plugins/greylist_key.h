/*
 * greylist_key.h - how a greylisting triplet is named and stored: shared by
 * the greylist plugin (plugins/greylist.c) and the admin tool
 * (tools/portcullis-store.c), so the two cannot disagree on a key.
 *
 * Static inline functions only (a header, not a plugin: the Makefile makes
 * a plugin of every .c file in plugins/):
 *
 *	gl_normalise_sender  lower case; BATV, SRS, +extension and VERP
 *	                     numbers taken out (doc/greylist.md)
 *	gl_normalise_rcpt    lower case
 *	gl_network           "192.0.2.0/24", "2001:db8::/64" for a client
 *	gl_triplet_key       "greylist:t:NET,SENDER,RCPT" (hashed past 511)
 *	gl_awl_key           "greylist:a:NET", the auto-whitelist counter
 *	gl_state_format/_parse   a triplet's value: "FIRST_MS,STATE,PASSES"
 *	gl_fnv1a64           the hash of an over-long key's tail
 *
 * A triplet's value: FIRST_MS is when it was first seen (wall-clock
 * milliseconds, so it means the same after a restart and on another
 * proxy), STATE 0 while it waits for a retry and 1 once it has passed,
 * PASSES how many recipients it let through since. The auto-whitelist
 * key holds a decimal counter (store_incr).
 */
#ifndef PORTCULLIS_GREYLIST_KEY_H
#define PORTCULLIS_GREYLIST_KEY_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portcullis/plugin.h"

#define GL_KEY_PREFIX "greylist:"
#define GL_TRIPLET_PREFIX "greylist:t:"
#define GL_AWL_PREFIX "greylist:a:"

/* A normalised address: RFC 5321 §4.5.3.1.3 allows a 256-octet path; the
 * proxy's line limit bounds it anyway. Longer ones are refused (-1). */
#define GL_ADDR_MAX 1024
/* "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128" and a NUL. */
#define GL_NET_MAX 64
/* A key buffer: PC_STORE_KEY_MAX octets and a NUL. */
#define GL_KEY_BUF (PC_STORE_KEY_MAX + 1)
/* An over-long key keeps its head and ends in "~" and 16 hex digits. */
#define GL_HASH_TAIL 17
/* A state value: "18446744073709551615,1,18446744073709551615". */
#define GL_STATE_MAX 64

#define GL_FNV_OFFSET 0xcbf29ce484222325ULL
#define GL_FNV_PRIME 0x100000001b3ULL

struct gl_state {
	unsigned long long first_ms; /* first seen, wall clock */
	int passed; /* 0: waiting for a retry, 1: passed */
	unsigned long long passes; /* recipients let through since */
};

/* gl_fnv1a64 - FNV-1a, 64 bits, continuing from h (GL_FNV_OFFSET to start) */
static inline uint64_t
gl_fnv1a64(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= GL_FNV_PRIME;
	}
	return h;
}

/* gl_lower - ASCII lower case, whatever the locale */
static inline char
gl_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* gl_batv_tag - a BATV tag-val (draft-levine-smtp-batv §4.1: K DDD SSSSSS):
 * four digits and six letters or digits, as postgrey recognises it */
static inline int
gl_batv_tag(const char *p, size_t len)
{
	size_t i;

	if (len != 10)
		return 0;
	for (i = 0; i < len; i++) {
		int digit = p[i] >= '0' && p[i] <= '9';
		int alpha = p[i] >= 'a' && p[i] <= 'z';
		if (i < 4 ? !digit : !(digit || alpha))
			return 0;
	}
	return 1;
}

/* gl_strip_batv - the local part inside a BATV one: "prvs=TAG=user",
 * "prvs=user=TAG" (the older order) or "btv1==TAG==user". Lower case in. */
static inline void
gl_strip_batv(const char **lp, size_t *ll)
{
	const char *l = *lp, *r, *end, *first, *last;
	size_t i, n = *ll;

	if (n > 5 && memcmp(l, "prvs=", 5) == 0) {
		r = l + 5;
		end = l + n;
		if ((first = memchr(r, '=', (size_t)(end - r))) == NULL)
			return;
		for (last = end - 1; *last != '='; last--)
			;
		/* prvs=user=TAG: a tag last and none first */
		if (!gl_batv_tag(r, (size_t)(first - r)) &&
		    gl_batv_tag(last + 1, (size_t)(end - last - 1)) && last > r) {
			*lp = r;
			*ll = (size_t)(last - r);
			return;
		}
		/* prvs=TAG=user */
		if (first + 1 < end) {
			*lp = first + 1;
			*ll = (size_t)(end - first - 1);
		}
		return;
	}
	if (n > 6 && memcmp(l, "btv1==", 6) == 0) {
		for (i = 6; i + 2 < n; i++) {
			if (l[i] == '=' && l[i + 1] == '=') {
				*lp = l + i + 2;
				*ll = n - i - 2;
				return;
			}
		}
	}
}

/* gl_field - the text up to the next '=' in [p, end): its end, or NULL */
static inline const char *
gl_field(const char *p, const char *end)
{
	const char *eq = memchr(p, '=', (size_t)(end - p));

	return eq != NULL && eq > p ? eq : NULL;
}

/* gl_srs0_tail - "HHH=TT=domain=user" of an SRS0 address: the original
 * user and domain; 0, or -1 if it is not that shape */
static inline int
gl_srs0_tail(
    const char *p, const char *end, const char **lp, size_t *ll, const char **dp, size_t *dl)
{
	const char *hash, *tt, *dom;

	if ((hash = gl_field(p, end)) == NULL || (tt = gl_field(hash + 1, end)) == NULL ||
	    (dom = gl_field(tt + 1, end)) == NULL || dom + 1 >= end)
		return -1;
	*dp = tt + 1;
	*dl = (size_t)(dom - tt - 1);
	*lp = dom + 1;
	*ll = (size_t)(end - dom - 1);
	return 0;
}

/* gl_srs_sep - a separator libsrs2 and postsrsd write after SRS0/SRS1 */
static inline int
gl_srs_sep(char c)
{
	return c == '=' || c == '+' || c == '-';
}

/* gl_strip_srs - the original address inside an SRS one (the Sender
 * Rewriting Scheme): "srs0=HHH=TT=domain=user" is user@domain, and so is
 * "srs1=HHH=forwarder==HHH=TT=domain=user". The separator after srs0 or
 * srs1 may be '=', '+' or '-'. Lower case in. */
static inline void
gl_strip_srs(const char **lp, size_t *ll, const char **dp, size_t *dl)
{
	const char *l = *lp, *end = *lp + *ll, *p, *f;

	if (*ll < 6 || memcmp(l, "srs", 3) != 0 || (l[3] != '0' && l[3] != '1') ||
	    !gl_srs_sep(l[4]))
		return;
	p = l + 5;
	if (l[3] == '1') {
		/* the first forwarder's hash and name, then SRS0's separator */
		if ((f = gl_field(p, end)) == NULL || (f = gl_field(f + 1, end)) == NULL ||
		    f + 2 >= end || !gl_srs_sep(f[1]))
			return;
		p = f + 2;
	}
	(void)gl_srs0_tail(p, end, lp, ll, dp, dl);
}

/* gl_put - append len octets to out; -1 if they do not fit (with a NUL) */
static inline int
gl_put(char *out, size_t outlen, size_t *at, const char *s, size_t len)
{
	if (*at + len >= outlen)
		return -1;
	memcpy(out + *at, s, len);
	*at += len;
	out[*at] = '\0';
	return 0;
}

/* gl_word - is c a Perl \w character (a word boundary's other side)? */
static inline int
gl_word(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '_';
}

/* gl_put_local - append a local part with every number that is a word of
 * its own ("bounce-1234", "list.2024.07") as '#', as postgrey does: a VERP
 * sender that numbers each message is one sender */
static inline int
gl_put_local(char *out, size_t outlen, size_t *at, const char *l, size_t n)
{
	size_t i = 0, j;

	while (i < n) {
		if (l[i] >= '0' && l[i] <= '9' && (i == 0 || !gl_word(l[i - 1]))) {
			for (j = i; j < n && l[j] >= '0' && l[j] <= '9'; j++)
				;
			if (j == n || !gl_word(l[j])) {
				if (gl_put(out, outlen, at, "#", 1) < 0)
					return -1;
				i = j;
				continue;
			}
			if (gl_put(out, outlen, at, l + i, j - i) < 0)
				return -1;
			i = j;
			continue;
		}
		if (gl_put(out, outlen, at, l + i, 1) < 0)
			return -1;
		i++;
	}
	return 0;
}

/*
 * gl_normalise_sender - the sender as the greylist keys it: lower case,
 * then the BATV wrapping, SRS rewriting, "+extension" and VERP numbers
 * taken off the local part, so that a retry with a new tag is the same
 * sender. A quoted local part is only lower-cased. "" (the null sender)
 * stays "". 0, or -1 if it does not fit in outlen.
 */
static inline int
gl_normalise_sender(const char *in, char *out, size_t outlen)
{
	char buf[GL_ADDR_MAX];
	const char *lp, *dp = NULL, *at, *plus;
	size_t i, n = strlen(in), ll, dl = 0, o = 0;

	if (n >= sizeof(buf) || n >= outlen)
		return -1;
	for (i = 0; i <= n; i++)
		buf[i] = gl_lower(in[i]);
	if (buf[0] == '"' || n == 0) {
		memcpy(out, buf, n + 1);
		return 0;
	}
	lp = buf;
	ll = n;
	if ((at = strrchr(buf, '@')) != NULL) {
		ll = (size_t)(at - buf);
		dp = at + 1;
		dl = n - ll - 1;
	}
	gl_strip_batv(&lp, &ll);
	gl_strip_srs(&lp, &ll, &dp, &dl);
	gl_strip_batv(&lp, &ll);
	if ((plus = memchr(lp, '+', ll)) != NULL && plus > lp)
		ll = (size_t)(plus - lp);
	out[0] = '\0';
	if (gl_put_local(out, outlen, &o, lp, ll) < 0)
		return -1;
	if (dp != NULL &&
	    (gl_put(out, outlen, &o, "@", 1) < 0 || gl_put(out, outlen, &o, dp, dl) < 0))
		return -1;
	return 0;
}

/* gl_normalise_rcpt - a recipient as the greylist keys it: lower case */
static inline int
gl_normalise_rcpt(const char *in, char *out, size_t outlen)
{
	size_t i, n = strlen(in);

	if (n >= outlen)
		return -1;
	for (i = 0; i <= n; i++)
		out[i] = gl_lower(in[i]);
	return 0;
}

/* gl_network - the client's network: ip masked to v4bits (IPv4, and an
 * IPv4-mapped IPv6 address) or v6bits, as "192.0.2.0/24" or
 * "2001:db8::/64". 0, or -1 if ip is no address. */
static inline int
gl_network(const char *ip, unsigned v4bits, unsigned v6bits, char *out, size_t outlen)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	unsigned char a[16];
	char text[INET6_ADDRSTRLEN];
	unsigned bits, i;
	int family, len;

	if (inet_pton(AF_INET, ip, a) == 1) {
		family = AF_INET;
	} else if (inet_pton(AF_INET6, ip, a) == 1) {
		family = AF_INET6;
		if (memcmp(a, mapped, sizeof(mapped)) == 0) {
			memmove(a, a + 12, 4);
			family = AF_INET;
		}
	} else
		return -1;
	bits = family == AF_INET ? (v4bits > 32 ? 32 : v4bits) : (v6bits > 128 ? 128 : v6bits);
	len = family == AF_INET ? 4 : 16;
	for (i = 0; i < (unsigned)len; i++) {
		if (i * 8 >= bits)
			a[i] = 0;
		else if (i * 8 + 8 > bits)
			a[i] &= (unsigned char)(0xff << (8 - (bits - i * 8)));
	}
	if (inet_ntop(family, a, text, sizeof(text)) == NULL)
		return -1;
	len = snprintf(out, outlen, "%s/%u", text, bits);
	return len < 0 || (size_t)len >= outlen ? -1 : 0;
}

/*
 * gl_triplet_key - "greylist:t:NET,SENDER,RCPT" (normalised sender and
 * recipient) into out (GL_KEY_BUF octets at least). A key longer than
 * PC_STORE_KEY_MAX keeps its first octets and ends in "~" and the FNV-1a
 * 64 hash of the whole triplet in hex, so it is still one key per triplet.
 * Returns the key's length, or 0 if out is too small.
 */
static inline size_t
gl_triplet_key(const char *net, const char *sender, const char *rcpt, char *out, size_t outlen)
{
	size_t pl = strlen(GL_TRIPLET_PREFIX), nl = strlen(net), sl = strlen(sender),
	       rl = strlen(rcpt), total = pl + nl + 1 + sl + 1 + rl, at = 0, keep;
	const char *parts[] = {GL_TRIPLET_PREFIX, net, ",", sender, ",", rcpt};
	size_t lens[] = {pl, nl, 1, sl, 1, rl}, i, take;
	uint64_t h = GL_FNV_OFFSET;

	if (outlen < GL_KEY_BUF)
		return 0;
	keep = total <= PC_STORE_KEY_MAX ? total : PC_STORE_KEY_MAX - GL_HASH_TAIL;
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		h = gl_fnv1a64(h, parts[i], lens[i]);
		take = at >= keep ? 0 : (lens[i] < keep - at ? lens[i] : keep - at);
		memcpy(out + at, parts[i], take);
		at += take;
	}
	if (total > PC_STORE_KEY_MAX)
		at += (size_t)snprintf(out + at, outlen - at, "~%016llx", (unsigned long long)h);
	out[at] = '\0';
	return at;
}

/* gl_awl_key - "greylist:a:NET": the network's auto-whitelist counter */
static inline size_t
gl_awl_key(const char *net, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%s%s", GL_AWL_PREFIX, net);

	return n < 0 || (size_t)n >= outlen ? 0 : (size_t)n;
}

/* gl_state_format - a triplet's value */
static inline size_t
gl_state_format(const struct gl_state *s, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%llu,%d,%llu", s->first_ms, s->passed ? 1 : 0, s->passes);

	return n < 0 || (size_t)n >= outlen ? 0 : (size_t)n;
}

/* gl_number - decimal digits of [p, end) up to sep; the position after
 * sep (or end), or NULL */
static inline const char *
gl_number(const char *p, const char *end, char sep, unsigned long long *out)
{
	unsigned long long v = 0;
	const char *s = p;

	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		if (v > (~0ULL - (unsigned)(*p - '0')) / 10)
			return NULL;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (p == s || (p < end && *p != sep) || (p == end && sep != '\0'))
		return NULL;
	*out = v;
	return p < end ? p + 1 : p;
}

/* gl_state_parse - a triplet's value, strictly: 0, or -1 (not ours) */
static inline int
gl_state_parse(const char *v, size_t len, struct gl_state *s)
{
	const char *end = v + len, *p;
	unsigned long long state;

	if ((p = gl_number(v, end, ',', &s->first_ms)) == NULL ||
	    (p = gl_number(p, end, ',', &state)) == NULL || state > 1 ||
	    gl_number(p, end, '\0', &s->passes) == NULL)
		return -1;
	s->passed = (int)state;
	return 0;
}

/* gl_counter_parse - the auto-whitelist counter: 0, or -1 */
static inline int
gl_counter_parse(const char *v, size_t len, unsigned long long *out)
{
	return gl_number(v, v + len, '\0', out) == NULL ? -1 : 0;
}

#endif
