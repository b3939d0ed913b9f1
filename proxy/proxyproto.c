/*
 * proxyproto.c - the PROXY protocol header parser (see proxyproto.h).
 *
 * Exports proxyproto_parse. It reads the whole header again on every call, so
 * it holds no state; the header is at most PROXYPROTO_V2_MAX bytes. The rules
 * follow HAProxy's proxy-protocol.txt: §2.1 for the v1 text line, §2.2 for
 * the v2 binary header. Every byte comes from the network and is checked
 * before use; a peer that is not a load balancer speaking the protocol gets
 * PC_ERROR as soon as its bytes cannot begin a header.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <netinet/in.h>
#include <string.h>

#include "proxyproto.h"

/* §2.1: "PROXY" and one space open a v1 header. */
static const char pp_v1_sig[] = "PROXY ";
#define PP_V1_SIG_LEN (sizeof(pp_v1_sig) - 1)

/* §2.2: the 12 bytes that open a v2 header; they cannot begin an SMTP command. */
static const unsigned char pp_v2_sig[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, /* CR LF CR LF NUL CR LF */
    0x51, 0x55, 0x49, 0x54, 0x0A, /* "QUIT" LF */
};
#define PP_V2_SIG_LEN sizeof(pp_v2_sig)

/* §2.2: the 13th byte is version (high nibble) and command (low nibble). */
#define PP_V2_VERSION 0x2
#define PP_V2_CMD_LOCAL 0x0
#define PP_V2_CMD_PROXY 0x1

/* §2.2: the 14th byte is address family (high nibble) and transport (low). */
#define PP_V2_UNSPEC 0x00
#define PP_V2_TCP4 0x11
#define PP_V2_UDP4 0x12
#define PP_V2_TCP6 0x21
#define PP_V2_UDP6 0x22
#define PP_V2_UNIX_STREAM 0x31
#define PP_V2_UNIX_DGRAM 0x32

/* §2.2: the address blocks: two addresses, then two ports. */
#define PP_V2_INET_LEN (4 + 4 + 2 + 2)
#define PP_V2_INET6_LEN (16 + 16 + 2 + 2)

/* §2.2.7: a TLV is one type byte and a two-byte length before its value. */
#define PP_V2_TLV_HDR 3

/* The longest textual forms inet_pton may be given, without the NUL. */
#define PP_V1_INET_MAX (INET_ADDRSTRLEN - 1)
#define PP_V1_INET6_MAX (INET6_ADDRSTRLEN - 1)
#define PP_V1_PORT_MAX 5

/* The fields of a v1 line, in order. */
enum {
	PP_V1_PROTO,
	PP_V1_SRC,
	PP_V1_DST,
	PP_V1_SPORT,
	PP_V1_DPORT,
};

/* What a v1 line says, gathered field by field. */
struct pp_v1_line {
	int family; /* AF_INET, AF_INET6, or AF_UNSPEC for UNKNOWN */
	unsigned char addr[2][sizeof(struct in6_addr)]; /* src, dst */
	unsigned port[2]; /* sport, dport */
};

static const struct {
	const char *name;
	int family;
} pp_v1_protos[] = {
    {"TCP4", AF_INET},
    {"TCP6", AF_INET6},
    {"UNKNOWN", AF_UNSPEC},
};

static int pp_v1(const unsigned char *buf, size_t len, struct proxyproto *out, size_t *consumed,
    const char **why);
static int pp_v1_fields(
    const unsigned char *line, size_t n, int final, struct pp_v1_line *v, const char **why);
static int pp_v1_field(int field, const unsigned char *tok, size_t n, int partial,
    struct pp_v1_line *v, const char **why);
static int pp_v1_proto(
    const unsigned char *tok, size_t n, int partial, int *family, const char **why);
static int pp_v1_addr(const unsigned char *tok, size_t n, int partial, int family,
    unsigned char *addr, const char **why);
static int pp_v1_port(
    const unsigned char *tok, size_t n, int partial, unsigned *port, const char **why);
static int pp_v2(const unsigned char *buf, size_t len, struct proxyproto *out, size_t *consumed,
    const char **why);
static int pp_v2_family(unsigned char fam, size_t *need, const char **why);
static int pp_v2_tlvs(const unsigned char *p, size_t n, const char **why);
static void pp_sockaddr(struct sockaddr_storage *ss, socklen_t *sslen, int family,
    const unsigned char *addr, unsigned port);
static int pp_fail(const char **why, const char *reason);

/* proxyproto_parse - recognise the signature and hand over to v1 or v2 */
int
proxyproto_parse(const unsigned char *buf, size_t len, struct proxyproto *out, size_t *consumed,
    const char **why)
{
	size_t n;

	if (len == 0)
		return PC_AGAIN;
	n = len < PP_V1_SIG_LEN ? len : PP_V1_SIG_LEN;
	if (memcmp(buf, pp_v1_sig, n) == 0)
		return len < PP_V1_SIG_LEN ? PC_AGAIN : pp_v1(buf, len, out, consumed, why);
	n = len < PP_V2_SIG_LEN ? len : PP_V2_SIG_LEN;
	if (memcmp(buf, pp_v2_sig, n) == 0)
		return len < PP_V2_SIG_LEN ? PC_AGAIN : pp_v2(buf, len, out, consumed, why);
	return pp_fail(why, "not a PROXY protocol header");
}

/*
 * pp_v1 - the v1 text line (§2.1). The line ends at the first LF, which must
 * be preceded by CR and fall within PROXYPROTO_V1_MAX bytes. A line not yet
 * ended is checked as far as it goes, so garbage is refused early; a line
 * waiting only for its LF is checked as complete.
 */
static int
pp_v1(const unsigned char *buf, size_t len, struct proxyproto *out, size_t *consumed,
    const char **why)
{
	struct pp_v1_line v;
	const unsigned char *lf;
	size_t lim, end;
	int final, rc;

	lim = len < PROXYPROTO_V1_MAX ? len : PROXYPROTO_V1_MAX;
	lf = memchr(buf, '\n', lim);
	if (lf != NULL) {
		end = (size_t)(lf - buf);
		if (buf[end - 1] != '\r')
			return pp_fail(why, "bare LF in v1 header");
		end--;
		final = 1;
	} else if (len >= PROXYPROTO_V1_MAX) {
		return pp_fail(why, "v1 header too long");
	} else {
		end = len;
		final = 0;
		if (buf[end - 1] == '\r') {
			end--;
			final = 1;
		}
	}

	memset(&v, 0, sizeof(v));
	rc = pp_v1_fields(buf + PP_V1_SIG_LEN, end - PP_V1_SIG_LEN, final, &v, why);
	if (rc == PC_ERROR)
		return PC_ERROR;
	if (lf == NULL)
		return PC_AGAIN;

	memset(out, 0, sizeof(*out));
	out->version = 1;
	if (v.family == AF_UNSPEC) {
		out->local = 1;
	} else {
		pp_sockaddr(&out->src, &out->src_len, v.family, v.addr[0], v.port[0]);
		pp_sockaddr(&out->dst, &out->dst_len, v.family, v.addr[1], v.port[1]);
	}
	*consumed = (size_t)(lf - buf) + 1;
	return PC_OK;
}

/*
 * pp_v1_fields - split the line after "PROXY " at single spaces and check
 * each field. final says the line ends at n; otherwise the last field may
 * still grow. PC_OK: a complete valid line; PC_AGAIN: a valid beginning.
 */
static int
pp_v1_fields(const unsigned char *line, size_t n, int final, struct pp_v1_line *v, const char **why)
{
	size_t i = 0, start;
	int field, last, partial;

	for (field = PP_V1_PROTO;; field++) {
		start = i;
		while (i < n && line[i] != ' ')
			i++;
		last = i == n;
		partial = last && !final;
		if (!partial && i == start)
			return pp_fail(why, "empty field in v1 header");
		if (pp_v1_field(field, line + start, i - start, partial, v, why) != PC_OK)
			return PC_ERROR;
		if (partial)
			return PC_AGAIN;
		/* §2.1: after "UNKNOWN" anything may follow up to the CR LF. */
		if (field == PP_V1_PROTO && v->family == AF_UNSPEC)
			return final ? PC_OK : PC_AGAIN;
		if (last) {
			if (field != PP_V1_DPORT)
				return pp_fail(why, "missing field in v1 header");
			return PC_OK;
		}
		if (field == PP_V1_DPORT)
			return pp_fail(why, "trailing data in v1 header");
		i++; /* the single space */
	}
}

/* pp_v1_field - check one field of a v1 line, or the beginning of one */
static int
pp_v1_field(int field, const unsigned char *tok, size_t n, int partial, struct pp_v1_line *v,
    const char **why)
{
	switch (field) {
	case PP_V1_PROTO:
		return pp_v1_proto(tok, n, partial, &v->family, why);
	case PP_V1_SRC:
	case PP_V1_DST:
		return pp_v1_addr(tok, n, partial, v->family, v->addr[field - PP_V1_SRC], why);
	default:
		return pp_v1_port(tok, n, partial, &v->port[field - PP_V1_SPORT], why);
	}
}

/* pp_v1_proto - "TCP4", "TCP6" or "UNKNOWN"; a partial one must begin one */
static int
pp_v1_proto(const unsigned char *tok, size_t n, int partial, int *family, const char **why)
{
	size_t k, plen;

	for (k = 0; k < sizeof(pp_v1_protos) / sizeof(pp_v1_protos[0]); k++) {
		plen = strlen(pp_v1_protos[k].name);
		if (n > plen || memcmp(tok, pp_v1_protos[k].name, n) != 0)
			continue;
		if (partial)
			return PC_OK;
		if (n == plen) {
			*family = pp_v1_protos[k].family;
			return PC_OK;
		}
	}
	return pp_fail(why, "bad protocol in v1 header");
}

/*
 * pp_v1_addr - an address of the family the line stated. A partial one is
 * only checked for length and characters; a complete one must parse.
 */
static int
pp_v1_addr(const unsigned char *tok, size_t n, int partial, int family, unsigned char *addr,
    const char **why)
{
	char text[INET6_ADDRSTRLEN];
	size_t max, i;
	int c, ok;

	max = family == AF_INET ? PP_V1_INET_MAX : PP_V1_INET6_MAX;
	if (n > max)
		return pp_fail(why, "bad address in v1 header");
	for (i = 0; i < n; i++) {
		c = tok[i];
		ok = (c >= '0' && c <= '9') || c == '.';
		if (family == AF_INET6)
			ok = ok || c == ':' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
		if (!ok)
			return pp_fail(why, "bad address in v1 header");
	}
	if (partial)
		return PC_OK;
	memcpy(text, tok, n);
	text[n] = '\0';
	if (inet_pton(family, text, addr) != 1)
		return pp_fail(why, "bad address in v1 header");
	return PC_OK;
}

/* pp_v1_port - decimal 0 to 65535, no leading zero (§2.1) */
static int
pp_v1_port(const unsigned char *tok, size_t n, int partial, unsigned *port, const char **why)
{
	unsigned long value = 0;
	size_t i;

	if (n > PP_V1_PORT_MAX || (n > 1 && tok[0] == '0'))
		return pp_fail(why, "bad port in v1 header");
	for (i = 0; i < n; i++) {
		if (tok[i] < '0' || tok[i] > '9')
			return pp_fail(why, "bad port in v1 header");
		value = value * 10 + (unsigned long)(tok[i] - '0');
	}
	if (value > 65535)
		return pp_fail(why, "bad port in v1 header");
	if (!partial)
		*port = (unsigned)value;
	return PC_OK;
}

/*
 * pp_v2 - the v2 binary header (§2.2): signature, ver/cmd, family, a length
 * in network order, then that many bytes of addresses and TLVs. Each byte is
 * checked as soon as it has arrived.
 */
static int
pp_v2(const unsigned char *buf, size_t len, struct proxyproto *out, size_t *consumed,
    const char **why)
{
	const unsigned char *body;
	size_t blen, need = 0;
	int cmd, local;

	if (len < PP_V2_SIG_LEN + 1)
		return PC_AGAIN;
	if (buf[12] >> 4 != PP_V2_VERSION)
		return pp_fail(why, "bad v2 version");
	cmd = buf[12] & 0x0f;
	if (cmd != PP_V2_CMD_LOCAL && cmd != PP_V2_CMD_PROXY)
		return pp_fail(why, "bad v2 command");
	if (len < PP_V2_SIG_LEN + 2)
		return PC_AGAIN;
	/*
	 * §2.2: with LOCAL (a health check from the balancer itself) the
	 * family and addresses are ignored and the socket's endpoints used.
	 * With PROXY and UNSPEC the balancer does not know them: do the same.
	 */
	local = 1;
	if (cmd == PP_V2_CMD_PROXY) {
		if (pp_v2_family(buf[13], &need, why) != PC_OK)
			return PC_ERROR;
		local = need == 0;
	}
	if (len < PROXYPROTO_V2_HDR)
		return PC_AGAIN;
	blen = (size_t)buf[14] << 8 | buf[15];
	if (blen > PROXYPROTO_V2_MAX_BODY)
		return pp_fail(why, "v2 header too long");
	if (blen < need)
		return pp_fail(why, "v2 length too short for addresses");
	if (len < PROXYPROTO_V2_HDR + blen)
		return PC_AGAIN;

	body = buf + PROXYPROTO_V2_HDR;
	if (!local && pp_v2_tlvs(body + need, blen - need, why) != PC_OK)
		return PC_ERROR;
	memset(out, 0, sizeof(*out));
	out->version = 2;
	out->local = local;
	if (need == PP_V2_INET_LEN) {
		pp_sockaddr(&out->src, &out->src_len, AF_INET, body, body[8] << 8 | body[9]);
		pp_sockaddr(&out->dst, &out->dst_len, AF_INET, body + 4, body[10] << 8 | body[11]);
	} else if (need == PP_V2_INET6_LEN) {
		pp_sockaddr(&out->src, &out->src_len, AF_INET6, body, body[32] << 8 | body[33]);
		pp_sockaddr(
		    &out->dst, &out->dst_len, AF_INET6, body + 16, body[34] << 8 | body[35]);
	}
	*consumed = PROXYPROTO_V2_HDR + blen;
	return PC_OK;
}

/*
 * pp_v2_family - the family byte of a PROXY command: how many address bytes
 * it carries (0 for UNSPEC). We relay TCP only; UDP and UNIX sockets cannot
 * be an SMTP client, and other values are invalid (§2.2).
 */
static int
pp_v2_family(unsigned char fam, size_t *need, const char **why)
{
	switch (fam) {
	case PP_V2_UNSPEC:
		*need = 0;
		return PC_OK;
	case PP_V2_TCP4:
		*need = PP_V2_INET_LEN;
		return PC_OK;
	case PP_V2_TCP6:
		*need = PP_V2_INET6_LEN;
		return PC_OK;
	case PP_V2_UDP4:
	case PP_V2_UDP6:
	case PP_V2_UNIX_STREAM:
	case PP_V2_UNIX_DGRAM:
		return pp_fail(why, "unsupported family in v2 header");
	default:
		return pp_fail(why, "bad family in v2 header");
	}
}

/*
 * pp_v2_tlvs - walk the TLVs after the addresses (§2.2.7) without reading
 * them: each must fit inside the length the header declared.
 */
static int
pp_v2_tlvs(const unsigned char *p, size_t n, const char **why)
{
	size_t step;

	while (n > 0) {
		if (n < PP_V2_TLV_HDR)
			return pp_fail(why, "truncated TLV in v2 header");
		step = PP_V2_TLV_HDR + ((size_t)p[1] << 8 | p[2]);
		if (step > n)
			return pp_fail(why, "TLV overruns v2 header");
		p += step;
		n -= step;
	}
	return PC_OK;
}

/* pp_sockaddr - fill a sockaddr from an address in network order and a port */
static void
pp_sockaddr(struct sockaddr_storage *ss, socklen_t *sslen, int family, const unsigned char *addr,
    unsigned port)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)port);
		memcpy(&sin.sin_addr, addr, sizeof(sin.sin_addr));
		memcpy(ss, &sin, sizeof(sin));
		*sslen = sizeof(sin);
	} else {
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons((uint16_t)port);
		memcpy(&sin6.sin6_addr, addr, sizeof(sin6.sin6_addr));
		memcpy(ss, &sin6, sizeof(sin6));
		*sslen = sizeof(sin6);
	}
}

/* pp_fail - record why the header was refused */
static int
pp_fail(const char **why, const char *reason)
{
	*why = reason;
	return PC_ERROR;
}
