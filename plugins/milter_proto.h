/*
 * milter_proto.h - the milter protocol, version 6, as the MTA side speaks
 * it (Sendmail's libmilter and Postfix's milter8 on the other side): the
 * constants, and the pure parsers the milter plugin (plugins/milter.c),
 * its unit test (tests/unit/test_milter_proto.c) and the fuzzer share.
 *
 * Static inline functions only (a header, not a plugin: the Makefile makes
 * a plugin of every .c file in plugins/):
 *
 *	mp_frame          where the next packet in a buffer is, if complete
 *	mp_optneg_parse   the milter's answer to SMFIC_OPTNEG
 *	mp_reply_parse    any other reply packet, checked for its shape
 *	mp_socket_parse   "inet:HOST:PORT", "inet:PORT@HOST", "inet6:...",
 *	                  "unix:PATH", "local:PATH" or "/PATH"
 *	mp_macro_name     a macro name as configured, as it goes on the wire
 *	mp_field_name     the length of a header field's name (as message.c)
 *
 * THE WIRE. Every packet, both ways, is a 4-octet length in network order
 * (counting the command octet and the data), one command octet and the
 * data. Strings are NUL-terminated; numbers are 4 octets (the connect
 * port is 2) in network order. The milter is a peer: a broken or hostile
 * one must not make us read without bound or take garbage as a verdict,
 * so every length has a limit and every reply's shape is checked exactly
 * (the strings it must have, NUL-terminated, nothing after them).
 */
#ifndef PORTCULLIS_MILTER_PROTO_H
#define PORTCULLIS_MILTER_PROTO_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The version we speak. A milter may answer 2 to 6. */
#define MP_VERSION 6
#define MP_VERSION_MIN 2

/* Commands (MTA to milter). */
#define SMFIC_ABORT 'A'
#define SMFIC_BODY 'B'
#define SMFIC_CONNECT 'C'
#define SMFIC_MACRO 'D'
#define SMFIC_BODYEOB 'E'
#define SMFIC_HELO 'H'
#define SMFIC_HEADER 'L'
#define SMFIC_MAIL 'M'
#define SMFIC_EOH 'N'
#define SMFIC_OPTNEG 'O'
#define SMFIC_QUIT 'Q'
#define SMFIC_RCPT 'R'
#define SMFIC_DATA 'T'

/* Replies (milter to MTA). */
#define SMFIR_ADDRCPT '+'
#define SMFIR_DELRCPT '-'
#define SMFIR_ADDRCPT_PAR '2'
#define SMFIR_SHUTDOWN '4'
#define SMFIR_ACCEPT 'a'
#define SMFIR_REPLBODY 'b'
#define SMFIR_CONTINUE 'c'
#define SMFIR_DISCARD 'd'
#define SMFIR_CHGFROM 'e'
#define SMFIR_CONN_FAIL 'f'
#define SMFIR_ADDHEADER 'h'
#define SMFIR_INSHEADER 'i'
#define SMFIR_SETSYMLIST 'l'
#define SMFIR_CHGHEADER 'm'
#define SMFIR_PROGRESS 'p'
#define SMFIR_QUARANTINE 'q'
#define SMFIR_REJECT 'r'
#define SMFIR_SKIP 's'
#define SMFIR_TEMPFAIL 't'
#define SMFIR_REPLYCODE 'y'

/* Actions: the changes a milter may make (negotiated). */
#define SMFIF_ADDHDRS 0x01u
#define SMFIF_CHGBODY 0x02u
#define SMFIF_ADDRCPT 0x04u
#define SMFIF_DELRCPT 0x08u
#define SMFIF_CHGHDRS 0x10u
#define SMFIF_QUARANTINE 0x20u
#define SMFIF_CHGFROM 0x40u
#define SMFIF_ADDRCPT_PAR 0x80u
#define SMFIF_SETSYMLIST 0x100u
#define MP_ACTIONS_ALL 0x1ffu

/* Protocol steps: what the milter does not want sent (NO*), what it will
 * not answer (NR_*), and the rest. */
#define SMFIP_NOCONNECT 0x01u
#define SMFIP_NOHELO 0x02u
#define SMFIP_NOMAIL 0x04u
#define SMFIP_NORCPT 0x08u
#define SMFIP_NOBODY 0x10u
#define SMFIP_NOHDRS 0x20u
#define SMFIP_NOEOH 0x40u
#define SMFIP_NR_HDR 0x80u
#define SMFIP_NOUNKNOWN 0x100u
#define SMFIP_NODATA 0x200u
#define SMFIP_SKIP 0x400u
#define SMFIP_RCPT_REJ 0x800u
#define SMFIP_NR_CONN 0x1000u
#define SMFIP_NR_HELO 0x2000u
#define SMFIP_NR_MAIL 0x4000u
#define SMFIP_NR_RCPT 0x8000u
#define SMFIP_NR_DATA 0x10000u
#define SMFIP_NR_UNKN 0x20000u
#define SMFIP_NR_EOH 0x40000u
#define SMFIP_NR_BODY 0x80000u
#define SMFIP_HDR_LEADSPC 0x100000u
/* What we offer: every step may be left out or left unanswered, SKIP and
 * the leading space; not RCPT_REJ (a recipient another filter refused is
 * never asked about) and not the larger data sizes (our chunks are
 * MP_CHUNK_MAX, which every milter takes). */
#define MP_PROTO_OFFER                                                                             \
	(SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT | SMFIP_NOBODY |             \
	    SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NR_HDR | SMFIP_NOUNKNOWN | SMFIP_NODATA |           \
	    SMFIP_SKIP | SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_RCPT |           \
	    SMFIP_NR_DATA | SMFIP_NR_UNKN | SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_HDR_LEADSPC)

/* The stages a milter may ask macros for (SMFIM_*), in the wire's order. */
enum mp_mstage {
	MP_M_CONNECT = 0,
	MP_M_HELO,
	MP_M_ENVFROM,
	MP_M_ENVRCPT,
	MP_M_DATA,
	MP_M_EOM,
	MP_M_EOH,
	MP_M_COUNT
};

/* A body chunk: libmilter's MILTER_CHUNK_SIZE. */
#define MP_CHUNK_MAX 65535
/* The longest packet we take from a milter (the command octet and data):
 * a body replacement chunk of 1 MB (SMFIP_MDS_1M) and room to spare. A
 * length past it, or 0, is a broken milter. */
#define MP_PACKET_MAX (1024u * 1024u + 64u)
/* The longest macro list a milter may ask for at one stage. */
#define MP_SYMLIST_MAX 4096

/* mp_get32 - a 4-octet number in network order */
static inline uint32_t
mp_get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* mp_put32 - write one */
static inline void
mp_put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/*
 * mp_frame - the packet at the start of buf (len octets so far): 1 with
 * *cmd, *data and *dlen set and *total the octets it takes; 0 if more is
 * needed; -1 (a length of 0 or past MP_PACKET_MAX) with err filled in.
 */
static inline int
mp_frame(const unsigned char *buf, size_t len, unsigned char *cmd, const unsigned char **data,
    size_t *dlen, size_t *total, char *err, size_t errlen)
{
	uint32_t n;

	if (len < 4)
		return 0;
	n = mp_get32(buf);
	if (n == 0 || n > MP_PACKET_MAX) {
		snprintf(err, errlen, "a packet of length %lu (at most %u)", (unsigned long)n,
		    MP_PACKET_MAX);
		return -1;
	}
	if (len - 4 < n)
		return 0;
	*cmd = buf[4];
	*data = buf + 5;
	*dlen = n - 1;
	*total = (size_t)n + 4;
	return 1;
}

/* mp_strings - split data into exactly want NUL-terminated strings (the
 * last want - need of them optional); the count found, or -1 (a string
 * not terminated, too few, more after them) */
static inline int
mp_strings(const unsigned char *d, size_t n, const char **out, int need, int want)
{
	int k = 0;
	size_t off = 0;

	while (off < n) {
		const unsigned char *z = memchr(d + off, '\0', n - off);
		if (z == NULL || k == want)
			return -1;
		out[k++] = (const char *)d + off;
		off = (size_t)(z - d) + 1;
	}
	for (int i = k; i < want; i++)
		out[i] = NULL;
	return k >= need ? k : -1;
}

/* What the milter answered to SMFIC_OPTNEG. The macro lists point into the
 * packet (symlen octets each, not NUL-terminated); NULL where it asked for
 * nothing. */
struct mp_optneg {
	uint32_t version, actions, protocol;
	uint32_t dropped_actions, dropped_protocol; /* asked for, not offered */
	const char *symlist[MP_M_COUNT];
	size_t symlen[MP_M_COUNT];
};

/*
 * mp_optneg_parse - the answer to our SMFIC_OPTNEG (version 6, offered
 * actions and protocol steps). The version must be MP_VERSION_MIN to
 * MP_VERSION; actions or steps we did not offer are left out (and said
 * in dropped_*). Version 6 may append macro lists:
 * a stage number and a NUL-terminated list, each. 0, or -1 with err.
 */
static inline int
mp_optneg_parse(const unsigned char *d, size_t n, uint32_t offer_actions, uint32_t offer_protocol,
    struct mp_optneg *o, char *err, size_t errlen)
{
	size_t off = 12;

	memset(o, 0, sizeof(*o));
	if (n < 12) {
		snprintf(err, errlen, "option negotiation of %zu octets (at least 12)", n);
		return -1;
	}
	o->version = mp_get32(d);
	o->actions = mp_get32(d + 4);
	o->protocol = mp_get32(d + 8);
	if (o->version < MP_VERSION_MIN || o->version > MP_VERSION) {
		snprintf(err, errlen, "milter protocol version %lu (we speak %d to %d)",
		    (unsigned long)o->version, MP_VERSION_MIN, MP_VERSION);
		return -1;
	}
	/* What we did not offer is left out, as Postfix does: a milter built
	 * for a newer MTA asks for more than it needs (a larger data size,
	 * rejected recipients), and works without it. */
	o->dropped_actions = o->actions & ~offer_actions;
	o->dropped_protocol = o->protocol & ~offer_protocol;
	o->actions &= offer_actions;
	o->protocol &= offer_protocol;
	while (off < n) {
		uint32_t stage;
		const unsigned char *z;

		if (n - off < 5) {
			snprintf(err, errlen, "a macro list cut short");
			return -1;
		}
		stage = mp_get32(d + off);
		off += 4;
		z = memchr(d + off, '\0', n - off);
		if (z == NULL || stage >= MP_M_COUNT || o->symlist[stage] != NULL ||
		    (size_t)(z - (d + off)) > MP_SYMLIST_MAX) {
			snprintf(err, errlen, "a bad macro list (stage %lu)", (unsigned long)stage);
			return -1;
		}
		o->symlist[stage] = (const char *)d + off;
		o->symlen[stage] = (size_t)(z - (d + off));
		off = (size_t)(z - d) + 1;
	}
	return 0;
}

/* One reply, checked. s[0..2] are its strings (NUL-terminated, inside the
 * packet), index its number (INSHEADER, CHGHEADER), data/dlen the octets
 * of REPLBODY. */
struct mp_reply {
	unsigned char code;
	uint32_t index;
	const char *s[2];
	int ns;
	const unsigned char *data;
	size_t dlen;
};

/*
 * mp_reply_parse - a reply packet other than the negotiation's: its
 * command octet known and its data of the shape that command has. 0, or
 * -1 with err ("an unknown reply 'x'", "a malformed 'h' reply").
 */
static inline int
mp_reply_parse(unsigned char cmd, const unsigned char *d, size_t n, struct mp_reply *r, char *err,
    size_t errlen)
{
	memset(r, 0, sizeof(*r));
	r->code = cmd;
	switch (cmd) {
	case SMFIR_ACCEPT:
	case SMFIR_CONTINUE:
	case SMFIR_DISCARD:
	case SMFIR_REJECT:
	case SMFIR_TEMPFAIL:
	case SMFIR_PROGRESS:
	case SMFIR_SKIP:
	case SMFIR_SHUTDOWN:
	case SMFIR_CONN_FAIL:
		/* No data; libmilter sends none. */
		if (n == 0)
			return 0;
		break;
	case SMFIR_REPLBODY:
		r->data = d;
		r->dlen = n;
		return 0;
	case SMFIR_REPLYCODE:
	case SMFIR_QUARANTINE:
	case SMFIR_ADDRCPT:
	case SMFIR_DELRCPT:
		if ((r->ns = mp_strings(d, n, r->s, 1, 1)) == 1)
			return 0;
		break;
	case SMFIR_ADDRCPT_PAR:
	case SMFIR_CHGFROM:
		if ((r->ns = mp_strings(d, n, r->s, 1, 2)) >= 1)
			return 0;
		break;
	case SMFIR_ADDHEADER:
		if ((r->ns = mp_strings(d, n, r->s, 2, 2)) == 2)
			return 0;
		break;
	case SMFIR_INSHEADER:
	case SMFIR_CHGHEADER:
		if (n >= 4) {
			r->index = mp_get32(d);
			if ((r->ns = mp_strings(d + 4, n - 4, r->s, 2, 2)) == 2)
				return 0;
		}
		break;
	default:
		if (cmd >= 0x21 && cmd <= 0x7e)
			snprintf(err, errlen, "an unknown reply '%c'", cmd);
		else
			snprintf(err, errlen, "an unknown reply 0x%02x", cmd);
		return -1;
	}
	snprintf(err, errlen, "a malformed '%c' reply (%zu octets)", cmd, n);
	return -1;
}

/* Where a milter listens. */
struct mp_socket {
	int family; /* 4, 6 or 0 for a UNIX socket */
	char host[64]; /* the address, for 4 and 6 */
	unsigned port;
	char path[108]; /* for a UNIX socket (sun_path's size) */
};

/* mp_port - a port number 1..65535 of digits only; 0 if it is not one */
static inline unsigned
mp_port(const char *s, size_t n)
{
	unsigned long v = 0;

	if (n == 0 || n > 5)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	return v >= 1 && v <= 65535 ? (unsigned)v : 0;
}

/*
 * mp_socket_parse - a socket as Postfix's smtpd_milters and Sendmail's
 * X= write it: "inet:PORT@HOST", "inet6:PORT@HOST", and also
 * "inet:HOST:PORT", "inet:[HOST]:PORT", "inet6:[HOST]:PORT"; "unix:PATH",
 * "local:PATH" or "/PATH" (absolute). HOST is an address or a name (the
 * caller looks it up once, at start: a session never waits for DNS);
 * a HOST with a ':' is IPv6. 0, or -1 with err.
 */
static inline int
mp_socket_parse(const char *v, struct mp_socket *s, char *err, size_t errlen)
{
	const char *rest, *at, *colon, *host;
	size_t hlen, plen;
	const char *port;

	memset(s, 0, sizeof(*s));
	if (strncmp(v, "unix:", 5) == 0 || strncmp(v, "local:", 6) == 0 || v[0] == '/') {
		const char *path = v[0] == '/' ? v : strchr(v, ':') + 1;
		if (path[0] != '/' || strlen(path) >= sizeof(s->path)) {
			snprintf(err, errlen,
			    "bad value \"%s\": a UNIX socket needs an absolute path of at most %zu "
			    "octets",
			    v, sizeof(s->path) - 1);
			return -1;
		}
		memcpy(s->path, path, strlen(path) + 1);
		return 0;
	}
	if (strncmp(v, "inet:", 5) == 0) {
		s->family = 4;
		rest = v + 5;
	} else if (strncmp(v, "inet6:", 6) == 0) {
		s->family = 6;
		rest = v + 6;
	} else {
		goto bad;
	}
	if ((at = strchr(rest, '@')) != NULL) { /* PORT@HOST */
		port = rest;
		plen = (size_t)(at - rest);
		host = at + 1;
		hlen = strlen(host);
	} else if (rest[0] == '[') { /* [HOST]:PORT */
		const char *close = strchr(rest, ']');
		if (close == NULL || close[1] != ':')
			goto bad;
		host = rest + 1;
		hlen = (size_t)(close - host);
		port = close + 2;
		plen = strlen(port);
	} else { /* HOST:PORT, the last colon */
		if ((colon = strrchr(rest, ':')) == NULL)
			goto bad;
		host = rest;
		hlen = (size_t)(colon - rest);
		port = colon + 1;
		plen = strlen(port);
	}
	if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
		host++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(s->host) || (s->port = mp_port(port, plen)) == 0)
		goto bad;
	memcpy(s->host, host, hlen);
	s->host[hlen] = '\0';
	if (strchr(s->host, ':') != NULL)
		s->family = 6;
	return 0;
bad:
	snprintf(err, errlen,
	    "bad value \"%s\": expected inet:HOST:PORT, inet:PORT@HOST, inet6:[HOST]:PORT, "
	    "unix:/PATH or local:/PATH",
	    v);
	return -1;
}

/*
 * mp_macro_name - a macro name as configured ("j", "_", "client_addr" or
 * "{client_addr}") as it goes on the wire: one character bare, longer ones
 * in braces. Names are letters, digits and '_' (a single character may
 * also be any printable one). 0, or -1 (bad, too long for out).
 */
static inline int
mp_macro_name(const char *name, size_t n, char *out, size_t outlen)
{
	if (n >= 2 && name[0] == '{' && name[n - 1] == '}') {
		name++;
		n -= 2;
	}
	if (n == 0 || n + 3 > outlen)
		return -1;
	if (n == 1) {
		if (name[0] <= ' ' || name[0] > '~' || name[0] == '{' || name[0] == '}')
			return -1;
		out[0] = name[0];
		out[1] = '\0';
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		        c == '_'))
			return -1;
	}
	out[0] = '{';
	memcpy(out + 1, name, n);
	out[n + 1] = '}';
	out[n + 2] = '\0';
	return 0;
}

/* mp_field_name - the length of the name of the header field that line
 * (len octets, no line end) starts, up to the ':' (blanks before it
 * allowed, as message.c takes them), or 0 if the line starts none */
static inline size_t
mp_field_name(const char *line, size_t len)
{
	size_t i, n;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if (c == ':' || c <= ' ' || c > '~')
			break;
	}
	n = i;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (n == 0 || i >= len || line[i] != ':')
		return 0;
	return n;
}

#endif
