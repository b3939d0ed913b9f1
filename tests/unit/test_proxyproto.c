/*
 * test_proxyproto.c - unit tests for proxy/proxyproto.c, the PROXY protocol
 * header parser (HAProxy proxy-protocol.txt, v1 and v2).
 *
 * Every header is followed by SMTP bytes and fed as every prefix of the
 * whole, each in a heap block of exactly that size (so ASan sees any read
 * past it): a valid header must give PC_AGAIN until it is complete, then
 * PC_OK with the same consumed count and result however much SMTP follows;
 * a malformed one must give PC_AGAIN exactly while its bytes can still begin
 * a header, then PC_ERROR with the expected reason.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "proxyproto.h"

#define S(lit) (const unsigned char *)(lit), sizeof(lit) - 1
#define AT(lit) (sizeof(lit) - 1)

/* What follows the header: the SMTP stream, which must be left alone. */
static const char smtp_tail[] = "EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n";

static const unsigned char v2_sig[12] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, /* CR LF CR LF NUL CR LF */
    0x51, 0x55, 0x49, 0x54, 0x0A, /* "QUIT" LF */
};

/* The result a valid header must give. */
struct want {
	int version;
	int local;
	int family; /* AF_INET or AF_INET6 unless local */
	const char *src, *dst; /* as inet_ntop writes them */
	unsigned sport, dport;
};

/* ------------------------------------------------------------------ */
/* the harness */

/* parse_copy - parse the first len bytes of buf from a heap block of exactly len bytes */
static int
parse_copy(const unsigned char *buf, size_t len, struct proxyproto *out, size_t *consumed,
    const char **why)
{
	unsigned char *copy;
	int rc;

	copy = malloc(len > 0 ? len : 1);
	assert_non_null(copy);
	if (len > 0)
		memcpy(copy, buf, len);
	rc = proxyproto_parse(copy, len, out, consumed, why);
	assert_memory_equal(copy, buf, len);
	free(copy);
	return rc;
}

/* addr_text - the address and port in a sockaddr, as text */
static unsigned
addr_text(const struct sockaddr_storage *ss, socklen_t len, int family, char *text, size_t size)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	assert_int_equal(ss->ss_family, family);
	if (family == AF_INET) {
		assert_int_equal(len, sizeof(sin));
		memcpy(&sin, ss, sizeof(sin));
		assert_non_null(inet_ntop(AF_INET, &sin.sin_addr, text, (socklen_t)size));
		return ntohs(sin.sin_port);
	}
	assert_int_equal(len, sizeof(sin6));
	memcpy(&sin6, ss, sizeof(sin6));
	assert_non_null(inet_ntop(AF_INET6, &sin6.sin6_addr, text, (socklen_t)size));
	return ntohs(sin6.sin6_port);
}

/* check_result - the parsed header is the one wanted */
static void
check_result(const struct proxyproto *pp, const struct want *w)
{
	char text[INET6_ADDRSTRLEN];
	unsigned port;

	assert_int_equal(pp->version, w->version);
	assert_int_equal(pp->local, w->local);
	if (w->local) {
		assert_int_equal(pp->src_len, 0);
		assert_int_equal(pp->dst_len, 0);
		assert_int_equal(pp->src.ss_family, AF_UNSPEC);
		assert_int_equal(pp->dst.ss_family, AF_UNSPEC);
		return;
	}
	port = addr_text(&pp->src, pp->src_len, w->family, text, sizeof(text));
	assert_string_equal(text, w->src);
	assert_int_equal(port, w->sport);
	port = addr_text(&pp->dst, pp->dst_len, w->family, text, sizeof(text));
	assert_string_equal(text, w->dst);
	assert_int_equal(port, w->dport);
}

/*
 * check_valid - hdr is one complete valid header. Feed every prefix of hdr
 * followed by tail: PC_AGAIN before the end of the header, then PC_OK
 * consuming exactly hlen bytes. *out and *consumed must not be written until
 * then, nor *why ever.
 */
static void
check_valid_tail(const unsigned char *hdr, size_t hlen, const unsigned char *tail, size_t tlen,
    const struct want *w)
{
	unsigned char *buf;
	struct proxyproto pp, blank;
	size_t k, consumed;
	const char *why;
	int rc;

	buf = malloc(hlen + tlen);
	assert_non_null(buf);
	memcpy(buf, hdr, hlen);
	memcpy(buf + hlen, tail, tlen);
	memset(&blank, 0xA5, sizeof(blank));
	for (k = 0; k <= hlen + tlen; k++) {
		pp = blank;
		consumed = (size_t)-1;
		why = NULL;
		rc = parse_copy(buf, k, &pp, &consumed, &why);
		assert_null(why);
		if (k < hlen) {
			if (rc != PC_AGAIN)
				fail_msg("prefix of %zu/%zu bytes: rc %d (%s), want PC_AGAIN", k,
				    hlen, rc, why != NULL ? why : "-");
			assert_int_equal(consumed, (size_t)-1);
			assert_memory_equal(&pp, &blank, sizeof(pp));
			continue;
		}
		if (rc != PC_OK)
			fail_msg("%zu bytes (header %zu): rc %d, want PC_OK", k, hlen, rc);
		assert_int_equal(consumed, hlen);
		check_result(&pp, w);
	}
	/* The bytes after the header are the SMTP stream, untouched. */
	assert_memory_equal(buf + hlen, tail, tlen);
	free(buf);
}

static void
check_valid(const unsigned char *hdr, size_t hlen, const struct want *w)
{
	check_valid_tail(hdr, hlen, (const unsigned char *)smtp_tail, sizeof(smtp_tail) - 1, w);
}

/*
 * check_error - in is malformed, and its first at bytes are the shortest
 * prefix that shows it: every shorter prefix is PC_AGAIN, every longer one
 * (and the whole, with SMTP after it) PC_ERROR with reason why.
 */
static void
check_error(const unsigned char *in, size_t len, size_t at, const char *reason)
{
	unsigned char *buf;
	struct proxyproto pp, blank;
	size_t k, total, consumed;
	const char *why;
	int rc;

	assert_true(at >= 1 && at <= len);
	total = len + sizeof(smtp_tail) - 1;
	buf = malloc(total);
	assert_non_null(buf);
	memcpy(buf, in, len);
	memcpy(buf + len, smtp_tail, sizeof(smtp_tail) - 1);
	memset(&blank, 0xA5, sizeof(blank));
	for (k = 0; k <= total; k++) {
		pp = blank;
		consumed = (size_t)-1;
		why = NULL;
		rc = parse_copy(buf, k, &pp, &consumed, &why);
		assert_int_equal(consumed, (size_t)-1);
		assert_memory_equal(&pp, &blank, sizeof(pp));
		if (k < at) {
			if (rc != PC_AGAIN)
				fail_msg(
				    "prefix of %zu bytes (error at %zu): rc %d (%s), want PC_AGAIN",
				    k, at, rc, why != NULL ? why : "-");
			assert_null(why);
			continue;
		}
		if (rc != PC_ERROR)
			fail_msg("%zu bytes (error at %zu): rc %d, want PC_ERROR", k, at, rc);
		assert_non_null(why);
		assert_string_equal(why, reason);
	}
	free(buf);
}

/* v2_build - a v2 header: signature, ver/cmd, family, declared length, body */
static size_t
v2_build(unsigned char *dst, unsigned vercmd, unsigned fam, size_t declared,
    const unsigned char *body, size_t blen)
{
	memcpy(dst, v2_sig, sizeof(v2_sig));
	dst[12] = (unsigned char)vercmd;
	dst[13] = (unsigned char)fam;
	dst[14] = (unsigned char)(declared >> 8);
	dst[15] = (unsigned char)declared;
	if (blen > 0)
		memcpy(dst + 16, body, blen);
	return 16 + blen;
}

/* The v4 address block: 192.0.2.1:56324 -> 198.51.100.2:25. */
static const unsigned char v4_block[12] = {
    192, 0, 2, 1, 198, 51, 100, 2, /* src, dst */
    0xDC, 0x04, 0x00, 0x19, /* ports */
};
static const struct want v4_want = {2, 0, AF_INET, "192.0.2.1", "198.51.100.2", 56324, 25};

/* The v6 address block: [2001:db8::1]:65535 -> [2001:db8::2]:587. */
static const unsigned char v6_block[36] = {
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, /* src */
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, /* dst */
    0xFF, 0xFF, 0x02, 0x4B, /* ports */
};
static const struct want v6_want = {2, 0, AF_INET6, "2001:db8::1", "2001:db8::2", 65535, 587};

static const struct want v1_local = {1, 1, 0, NULL, NULL, 0, 0};
static const struct want v2_local = {2, 1, 0, NULL, NULL, 0, 0};

/* ------------------------------------------------------------------ */
/* v1: valid */

static void
test_v1_tcp4(void **state)
{
	static const struct want w = {1, 0, AF_INET, "192.0.2.1", "198.51.100.2", 56324, 25};
	static const struct want edge = {1, 0, AF_INET, "0.0.0.0", "255.255.255.255", 0, 65535};

	(void)state;
	check_valid(S("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n"), &w);
	check_valid(S("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"), &edge);
}

static void
test_v1_tcp6(void **state)
{
	static const struct want w = {1, 0, AF_INET6, "2001:db8::1", "2001:db8::2", 65535, 0};
	static const struct want full = {1, 0, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535, 65535};
	static const struct want mapped = {1, 0, AF_INET6, "::ffff:192.0.2.1", "::1", 1, 25};
	static const struct want upper = {1, 0, AF_INET6, "2001:db8::a", "::", 10, 2};

	(void)state;
	check_valid(S("PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n"), &w);
	/* The longest TCP6 line the spec counts: 104 bytes. */
	check_valid(S("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535\r\n"),
	    &full);
	check_valid(S("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 25\r\n"), &mapped);
	check_valid(S("PROXY TCP6 2001:DB8::A :: 10 2\r\n"), &upper);
}

static void
test_v1_unknown(void **state)
{
	unsigned char line[PROXYPROTO_V1_MAX];

	(void)state;
	check_valid(S("PROXY UNKNOWN\r\n"), &v1_local);
	check_valid(S("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"), &v1_local);
	check_valid(S("PROXY UNKNOWN 192.0.2.1 198.51.100.2 56324 25\r\n"), &v1_local);
	check_valid(S("PROXY UNKNOWN \r\n"), &v1_local);

	/* Exactly PROXYPROTO_V1_MAX bytes, CR LF included. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	line[sizeof(line) - 2] = '\r';
	line[sizeof(line) - 1] = '\n';
	check_valid(line, sizeof(line), &v1_local);
}

static void
test_v1_tail(void **state)
{
	static const struct want w = {1, 0, AF_INET, "192.0.2.1", "198.51.100.2", 1, 25};

	(void)state;
	/* Whatever follows is the stream's, even a second header or a bare LF. */
	check_valid_tail(S("PROXY TCP4 192.0.2.1 198.51.100.2 1 25\r\n"),
	    S("PROXY TCP4 10.0.0.1 10.0.0.2 3 4\r\n"), &w);
	check_valid_tail(S("PROXY TCP4 192.0.2.1 198.51.100.2 1 25\r\n"), S("\n\r\n\0"), &w);
	check_valid_tail(S("PROXY UNKNOWN\r\n"), S("PROXY UNKNOWN\n"), &v1_local);
}

/* ------------------------------------------------------------------ */
/* v1: malformed */

static void
test_v1_bad_protocol(void **state)
{
	(void)state;
	check_error(
	    S("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), AT("PROXY TCP5"), "bad protocol in v1 header");
	check_error(
	    S("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), AT("PROXY UD"), "bad protocol in v1 header");
	check_error(
	    S("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), AT("PROXY t"), "bad protocol in v1 header");
	check_error(
	    S("PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n"), AT("PROXY TCP "), "bad protocol in v1 header");
	check_error(S("PROXY UNKNOWNX\r\n"), AT("PROXY UNKNOWNX"), "bad protocol in v1 header");
	check_error(S("PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n"), AT("PROXY TCP44"),
	    "bad protocol in v1 header");
	check_error(S("PROXY \r\n"), AT("PROXY \r"), "empty field in v1 header");
}

static void
test_v1_bad_spacing(void **state)
{
	(void)state;
	check_error(
	    S("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), AT("PROXY  "), "empty field in v1 header");
	check_error(S("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), AT("PROXY TCP4  "),
	    "empty field in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n"), AT("PROXY TCP4 1.2.3.4 5.6.7.8 1  "),
	    "empty field in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), AT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 "),
	    "trailing data in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),
	    AT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 "), "trailing data in v1 header");
	check_error(S("PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"), AT("PROXY TCP4\t"),
	    "bad protocol in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n"), AT("PROXY TCP4 1.2.3.4\t"),
	    "bad address in v1 header");
}

static void
test_v1_missing_fields(void **state)
{
	(void)state;
	check_error(S("PROXY TCP4\r\n"), AT("PROXY TCP4\r"), "missing field in v1 header");
	check_error(
	    S("PROXY TCP4 1.2.3.4\r\n"), AT("PROXY TCP4 1.2.3.4\r"), "missing field in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8\r\n"), AT("PROXY TCP4 1.2.3.4 5.6.7.8\r"),
	    "missing field in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 25\r\n"), AT("PROXY TCP4 1.2.3.4 5.6.7.8 25\r"),
	    "missing field in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 25 \r\n"), AT("PROXY TCP4 1.2.3.4 5.6.7.8 25 \r"),
	    "empty field in v1 header");
}

static void
test_v1_wrong_family(void **state)
{
	(void)state;
	/* An IPv6 address in a TCP4 line fails at its first ':' or hex letter. */
	check_error(S("PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n"), AT("PROXY TCP4 2001:"),
	    "bad address in v1 header");
	check_error(
	    S("PROXY TCP4 ::1 ::1 1 2\r\n"), AT("PROXY TCP4 :"), "bad address in v1 header");
	check_error(
	    S("PROXY TCP4 fe80::1 ::1 1 2\r\n"), AT("PROXY TCP4 f"), "bad address in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 ::1 1 2\r\n"), AT("PROXY TCP4 1.2.3.4 :"),
	    "bad address in v1 header");
	/* An IPv4 address in a TCP6 line fails when it ends. */
	check_error(S("PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n"), AT("PROXY TCP6 192.0.2.1 "),
	    "bad address in v1 header");
	check_error(S("PROXY TCP6 2001:db8::1 192.0.2.1 1 2\r\n"),
	    AT("PROXY TCP6 2001:db8::1 192.0.2.1 "), "bad address in v1 header");
}

static void
test_v1_bad_address(void **state)
{
	(void)state;
	check_error(S("PROXY TCP4 192.0.2.256 1.2.3.4 1 2\r\n"), AT("PROXY TCP4 192.0.2.256 "),
	    "bad address in v1 header");
	check_error(S("PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n"), AT("PROXY TCP4 1.2.3 "),
	    "bad address in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4. 1.2.3.4 1 2\r\n"), AT("PROXY TCP4 1.2.3.4. "),
	    "bad address in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 1.2.3.4.5 1 2\r\n"), AT("PROXY TCP4 1.2.3.4 1.2.3.4.5 "),
	    "bad address in v1 header");
	check_error(S("PROXY TCP4 localhost 1.2.3.4 1 2\r\n"), AT("PROXY TCP4 l"),
	    "bad address in v1 header");
	/* Longer than any dotted quad: refused before the space. */
	check_error(S("PROXY TCP4 1111111111111111 1.2.3.4 1 2\r\n"),
	    AT("PROXY TCP4 1111111111111111"), "bad address in v1 header");
	check_error(S("PROXY TCP6 2001:db8:::1 ::1 1 2\r\n"), AT("PROXY TCP6 2001:db8:::1 "),
	    "bad address in v1 header");
	check_error(S("PROXY TCP6 2001:db8::g ::1 1 2\r\n"), AT("PROXY TCP6 2001:db8::g"),
	    "bad address in v1 header");
	check_error(
	    S("PROXY TCP6 [::1] ::1 1 2\r\n"), AT("PROXY TCP6 ["), "bad address in v1 header");
	check_error(S("PROXY TCP6 ::1%eth0 ::1 1 2\r\n"), AT("PROXY TCP6 ::1%"),
	    "bad address in v1 header");
}

static void
test_v1_bad_ports(void **state)
{
	(void)state;
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 65536 25\r\n"),
	    AT("PROXY TCP4 1.2.3.4 5.6.7.8 65536"), "bad port in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 25 99999\r\n"),
	    AT("PROXY TCP4 1.2.3.4 5.6.7.8 25 99999"), "bad port in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 123456 25\r\n"),
	    AT("PROXY TCP4 1.2.3.4 5.6.7.8 123456"), "bad port in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 025 25\r\n"), AT("PROXY TCP4 1.2.3.4 5.6.7.8 02"),
	    "bad port in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n"), AT("PROXY TCP4 1.2.3.4 5.6.7.8 1 00"),
	    "bad port in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 -1 25\r\n"), AT("PROXY TCP4 1.2.3.4 5.6.7.8 -"),
	    "bad port in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 +1 25\r\n"), AT("PROXY TCP4 1.2.3.4 5.6.7.8 +"),
	    "bad port in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 1a 25\r\n"), AT("PROXY TCP4 1.2.3.4 5.6.7.8 1a"),
	    "bad port in v1 header");
	check_error(S("PROXY TCP6 ::1 ::2 0x19 25\r\n"), AT("PROXY TCP6 ::1 ::2 0x"),
	    "bad port in v1 header");
}

static void
test_v1_line_end(void **state)
{
	(void)state;
	/* RFC-style CR LF is required: a bare LF is refused where it stands. */
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), AT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
	    "bare LF in v1 header");
	check_error(S("PROXY UNKNOWN\n"), AT("PROXY UNKNOWN\n"), "bare LF in v1 header");
	check_error(S("PROXY UNKNOWN 1.2.3.4\n\r\n"), AT("PROXY UNKNOWN 1.2.3.4\n"),
	    "bare LF in v1 header");
	check_error(S("PROXY \n"), AT("PROXY \n"), "bare LF in v1 header");
	/* A CR not followed by LF. */
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n"),
	    AT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r"), "bad port in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), AT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"),
	    "bad port in v1 header");
	check_error(S("PROXY UNKNOWN\rX\r\n"), AT("PROXY UNKNOWN\rX"), "bad protocol in v1 header");
	/* No line end at all: the SMTP stream runs into the last port. */
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 1 25EHLO"),
	    AT("PROXY TCP4 1.2.3.4 5.6.7.8 1 25E"), "bad port in v1 header");
	check_error(S("PROXY TCP4 1.2.3.4 5.6.7.8 1 25 EHLO x\r\n"),
	    AT("PROXY TCP4 1.2.3.4 5.6.7.8 1 25 "), "trailing data in v1 header");
}

static void
test_v1_overlong(void **state)
{
	unsigned char line[300];

	(void)state;
	/* UNKNOWN accepts anything up to CR LF, but only 107 bytes of it. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	check_error(line, sizeof(line), PROXYPROTO_V1_MAX, "v1 header too long");
	/* CR LF one byte too late. */
	line[PROXYPROTO_V1_MAX - 1] = '\r';
	line[PROXYPROTO_V1_MAX] = '\n';
	check_error(line, PROXYPROTO_V1_MAX + 1, PROXYPROTO_V1_MAX, "v1 header too long");
	/* CR in place, LF one byte too late. */
	line[PROXYPROTO_V1_MAX - 2] = '\r';
	line[PROXYPROTO_V1_MAX - 1] = '\r';
	check_error(line, PROXYPROTO_V1_MAX + 1, PROXYPROTO_V1_MAX, "v1 header too long");
	/* Valid fields, but IPv4-mapped addresses in full make it 116 bytes. */
	check_error(S("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
	              "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n"),
	    PROXYPROTO_V1_MAX, "v1 header too long");
}

/* ------------------------------------------------------------------ */
/* v2: valid */

static void
test_v2_proxy_v4(void **state)
{
	unsigned char h[64];
	size_t n;

	(void)state;
	n = v2_build(h, 0x21, 0x11, sizeof(v4_block), v4_block, sizeof(v4_block));
	check_valid(h, n, &v4_want);
}

static void
test_v2_proxy_v6(void **state)
{
	unsigned char h[64];
	size_t n;

	(void)state;
	n = v2_build(h, 0x21, 0x21, sizeof(v6_block), v6_block, sizeof(v6_block));
	check_valid(h, n, &v6_want);
}

static void
test_v2_local(void **state)
{
	unsigned char h[64], body[40];
	size_t n;

	(void)state;
	/* What HAProxy sends for a health check. */
	n = v2_build(h, 0x20, 0x00, 0, NULL, 0);
	check_valid(h, n, &v2_local);
	/* LOCAL ignores the family and whatever block comes with it (§2.2). */
	n = v2_build(h, 0x20, 0x11, sizeof(v4_block), v4_block, sizeof(v4_block));
	check_valid(h, n, &v2_local);
	n = v2_build(h, 0x20, 0x31, 3, (const unsigned char *)"abc", 3);
	check_valid(h, n, &v2_local);
	n = v2_build(h, 0x20, 0x11, 0, NULL, 0);
	check_valid(h, n, &v2_local);
	n = v2_build(h, 0x20, 0xFF, 2, (const unsigned char *)"\x01\x02", 2);
	check_valid(h, n, &v2_local);
	/* A LOCAL block is not walked as TLVs. */
	memset(body, 0xFF, sizeof(body));
	n = v2_build(h, 0x20, 0x00, sizeof(body), body, sizeof(body));
	check_valid(h, n, &v2_local);
}

static void
test_v2_proxy_unspec(void **state)
{
	unsigned char h[64];
	size_t n;

	(void)state;
	/* PROXY with UNSPEC: the balancer does not know; use the socket's. */
	n = v2_build(h, 0x21, 0x00, 0, NULL, 0);
	check_valid(h, n, &v2_local);
	n = v2_build(h, 0x21, 0x00, 5, (const unsigned char *)"\xFF\xFF\xFF\xFF\xFF", 5);
	check_valid(h, n, &v2_local);
}

static void
test_v2_tlvs(void **state)
{
	static const unsigned char tlvs[] = {
	    0x01, 0x00, 0x04, 's', 'm', 't', 'p', /* ALPN */
	    0x02, 0x00, 0x0B, 'm', 'x', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', /* AUTHORITY */
	    0x04, 0x00, 0x00, /* NOOP, empty */
	    0x20, 0x00, 0x05, 0x01, 0x00, 0x00, 0x00, 0x00, /* SSL */
	    0x03, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF, /* CRC32C, not checked */
	};
	unsigned char body[64], h[128];
	size_t n;

	(void)state;
	memcpy(body, v4_block, sizeof(v4_block));
	memcpy(body + sizeof(v4_block), tlvs, sizeof(tlvs));
	n = v2_build(
	    h, 0x21, 0x11, sizeof(v4_block) + sizeof(tlvs), body, sizeof(v4_block) + sizeof(tlvs));
	check_valid(h, n, &v4_want);

	memcpy(body, v6_block, sizeof(v6_block));
	memcpy(body + sizeof(v6_block), "\x04\x00\x00", 3);
	n = v2_build(h, 0x21, 0x21, sizeof(v6_block) + 3, body, sizeof(v6_block) + 3);
	check_valid(h, n, &v6_want);
}

static void
test_v2_at_max(void **state)
{
	unsigned char *h, body[PROXYPROTO_V2_MAX_BODY];
	size_t n, pad;

	(void)state;
	h = malloc(PROXYPROTO_V2_MAX);
	assert_non_null(h);
	/* The addresses, then one NOOP TLV that fills the body to the limit. */
	memset(body, 'p', sizeof(body));
	memcpy(body, v4_block, sizeof(v4_block));
	pad = sizeof(body) - sizeof(v4_block) - 3;
	body[12] = 0x04;
	body[13] = (unsigned char)(pad >> 8);
	body[14] = (unsigned char)pad;
	n = v2_build(h, 0x21, 0x11, sizeof(body), body, sizeof(body));
	assert_int_equal(n, PROXYPROTO_V2_MAX);
	check_valid(h, n, &v4_want);
	/* A LOCAL header as long as allowed. */
	n = v2_build(h, 0x20, 0x00, sizeof(body), body, sizeof(body));
	check_valid(h, n, &v2_local);
	free(h);
}

static void
test_v2_tail(void **state)
{
	unsigned char h[64], t[64];
	size_t n, m;

	(void)state;
	/* A second header after the first belongs to the stream. */
	n = v2_build(h, 0x21, 0x11, sizeof(v4_block), v4_block, sizeof(v4_block));
	m = v2_build(t, 0x21, 0x21, sizeof(v6_block), v6_block, sizeof(v6_block));
	check_valid_tail(h, n, t, m, &v4_want);
	check_valid_tail(h, n, S("\0\0\0\r\n"), &v4_want);
}

/* ------------------------------------------------------------------ */
/* v2: malformed */

static void
test_v2_bad_signature(void **state)
{
	unsigned char h[64];
	size_t n, i;

	(void)state;
	/* Every signature byte matters, and fails as soon as it arrives. */
	for (i = 0; i < sizeof(v2_sig); i++) {
		n = v2_build(h, 0x21, 0x11, sizeof(v4_block), v4_block, sizeof(v4_block));
		h[i] ^= 0x20;
		check_error(h, n, i + 1, "not a PROXY protocol header");
	}
	check_error(S("\r\nQUIT\r\n"), AT("\r\nQ"), "not a PROXY protocol header");
	check_error(
	    S("\r\n\r\n\0\r\nQUIX\n"), AT("\r\n\r\n\0\r\nQUIX"), "not a PROXY protocol header");
}

static void
test_v2_bad_version(void **state)
{
	static const unsigned vers[] = {0x01, 0x11, 0x31, 0xF1, 0x10, 0x00};
	unsigned char h[64];
	size_t n, i;

	(void)state;
	for (i = 0; i < sizeof(vers) / sizeof(vers[0]); i++) {
		n = v2_build(h, vers[i], 0x11, sizeof(v4_block), v4_block, sizeof(v4_block));
		check_error(h, n, 13, "bad v2 version");
	}
}

static void
test_v2_bad_command(void **state)
{
	static const unsigned cmds[] = {0x22, 0x23, 0x2F};
	unsigned char h[64];
	size_t n, i;

	(void)state;
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		n = v2_build(h, cmds[i], 0x11, sizeof(v4_block), v4_block, sizeof(v4_block));
		check_error(h, n, 13, "bad v2 command");
	}
}

static void
test_v2_bad_family(void **state)
{
	static const unsigned bad[] = {0x01, 0x02, 0x10, 0x13, 0x20, 0x23, 0x30, 0x41, 0xFF};
	static const unsigned unsupported[] = {0x12, 0x22, 0x31, 0x32};
	unsigned char h[512], body[216];
	size_t n, i;

	(void)state;
	memset(body, 0, sizeof(body));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = v2_build(h, 0x21, bad[i], sizeof(v4_block), v4_block, sizeof(v4_block));
		check_error(h, n, 14, "bad family in v2 header");
	}
	/* UDP and UNIX sockets are valid v2 but cannot carry an SMTP client. */
	for (i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
		n = v2_build(h, 0x21, unsupported[i], sizeof(body), body, sizeof(body));
		check_error(h, n, 14, "unsupported family in v2 header");
	}
}

static void
test_v2_short_length(void **state)
{
	unsigned char h[64];
	size_t n;

	(void)state;
	n = v2_build(h, 0x21, 0x11, 11, v4_block, sizeof(v4_block));
	check_error(h, n, 16, "v2 length too short for addresses");
	n = v2_build(h, 0x21, 0x11, 0, NULL, 0);
	check_error(h, n, 16, "v2 length too short for addresses");
	n = v2_build(h, 0x21, 0x21, 35, v6_block, sizeof(v6_block));
	check_error(h, n, 16, "v2 length too short for addresses");
	n = v2_build(h, 0x21, 0x21, 12, v6_block, sizeof(v6_block));
	check_error(h, n, 16, "v2 length too short for addresses");
}

static void
test_v2_over_max(void **state)
{
	unsigned char h[64];
	size_t n;

	(void)state;
	/* Refused from the length field alone, before any of the body. */
	n = v2_build(h, 0x21, 0x11, PROXYPROTO_V2_MAX_BODY + 1, v4_block, sizeof(v4_block));
	check_error(h, n, 16, "v2 header too long");
	n = v2_build(h, 0x21, 0x21, 0xFFFF, v6_block, sizeof(v6_block));
	check_error(h, n, 16, "v2 header too long");
	n = v2_build(h, 0x20, 0x00, 0x8000, NULL, 0);
	check_error(h, n, 16, "v2 header too long");
	n = v2_build(h, 0x21, 0x00, 0x0900, NULL, 0);
	check_error(h, n, 16, "v2 header too long");
}

static void
test_v2_bad_tlvs(void **state)
{
	unsigned char body[64], h[128];
	size_t n;

	(void)state;
	memcpy(body, v4_block, sizeof(v4_block));
	/* Two bytes after the addresses: not even a TLV header. */
	memcpy(body + 12, "\x04\x00", 2);
	n = v2_build(h, 0x21, 0x11, 14, body, 14);
	check_error(h, n, n, "truncated TLV in v2 header");
	/* A TLV that claims more than the header holds. */
	memcpy(body + 12, "\x01\x00\x05smt", 6);
	n = v2_build(h, 0x21, 0x11, 18, body, 18);
	check_error(h, n, n, "TLV overruns v2 header");
	/* A good TLV, then one that overruns. */
	memcpy(body + 12, "\x04\x00\x00\x02\xFF\xFF", 6);
	n = v2_build(h, 0x21, 0x11, 18, body, 18);
	check_error(h, n, n, "TLV overruns v2 header");
	memcpy(body, v6_block, sizeof(v6_block));
	memcpy(body + 36, "\x01", 1);
	n = v2_build(h, 0x21, 0x21, 37, body, 37);
	check_error(h, n, n, "truncated TLV in v2 header");
}

/* ------------------------------------------------------------------ */
/* neither */

static void
test_garbage(void **state)
{
	static const unsigned char tls[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
	static const unsigned char nul[] = {0x00, 'P', 'R', 'O', 'X', 'Y', ' '};

	(void)state;
	check_error(S("EHLO client.example\r\n"), 1, "not a PROXY protocol header");
	check_error(S("HELO x\r\n"), 1, "not a PROXY protocol header");
	check_error(S("GET / HTTP/1.0\r\n\r\n"), 1, "not a PROXY protocol header");
	check_error(S("\n"), 1, "not a PROXY protocol header");
	check_error(S(" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 1, "not a PROXY protocol header");
	check_error(tls, sizeof(tls), 1, "not a PROXY protocol header");
	check_error(nul, sizeof(nul), 1, "not a PROXY protocol header");
	check_error(S("PROXX TCP4\r\n"), AT("PROXX"), "not a PROXY protocol header");
	check_error(S("proxy TCP4\r\n"), 1, "not a PROXY protocol header");
	check_error(S("PROXY\r\n"), AT("PROXY\r"), "not a PROXY protocol header");
	check_error(S("PROXY\tTCP4\r\n"), AT("PROXY\t"), "not a PROXY protocol header");
	/* A v1 signature followed by a v2 one is neither. */
	check_error(S("PROXY \r\n\r\n\0\r\nQUIT\n"), AT("PROXY \r"), "empty field in v1 header");
}

static void
test_empty(void **state)
{
	struct proxyproto pp;
	size_t consumed = 99;
	const char *why = NULL;

	(void)state;
	assert_int_equal(
	    proxyproto_parse((const unsigned char *)"", 0, &pp, &consumed, &why), PC_AGAIN);
	assert_int_equal(consumed, 99);
	assert_null(why);
}

/* ------------------------------------------------------------------ */
/* robustness: mutated and random input never crashes or contradicts itself */

static uint32_t rng_state = 0x12345678u;

static uint32_t
rng(void)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return rng_state >> 8;
}

/*
 * check_consistent - feed every prefix of in: the answers must be PC_AGAIN
 * for a while, then all PC_OK with one consumed count, or all PC_ERROR;
 * PC_AGAIN never beyond the longest header.
 */
static void
check_consistent(const unsigned char *in, size_t len)
{
	struct proxyproto pp;
	size_t k, consumed, first = 0;
	const char *why;
	int rc, settled = PC_AGAIN;

	for (k = 0; k <= len; k++) {
		why = NULL;
		rc = parse_copy(in, k, &pp, &consumed, &why);
		if (settled != PC_AGAIN) {
			assert_int_equal(rc, settled);
		}
		switch (rc) {
		case PC_AGAIN:
			assert_true(k < PROXYPROTO_V2_MAX);
			break;
		case PC_OK:
			assert_true(consumed >= 1 && consumed <= k);
			assert_true(consumed <= PROXYPROTO_V2_MAX);
			if (settled == PC_OK)
				assert_int_equal(consumed, first);
			first = consumed;
			assert_true(pp.version == 1 || pp.version == 2);
			if (!pp.local) {
				assert_true(
				    pp.src.ss_family == AF_INET || pp.src.ss_family == AF_INET6);
				assert_int_equal(pp.src.ss_family, pp.dst.ss_family);
			}
			break;
		case PC_ERROR:
			assert_non_null(why);
			break;
		default:
			fail_msg("unexpected rc %d", rc);
		}
		settled = rc;
	}
}

static void
test_mutations(void **state)
{
	static const char *v1[] = {
	    "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO x\r\n",
	    "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\nEHLO x\r\n",
	    "PROXY UNKNOWN\r\nEHLO x\r\n",
	};
	static const unsigned char vals[] = {
	    0x00, 0x01, 0x0A, 0x0D, 0x11, 0x20, 0x21, '0', '9', ':', '.', 'a', 0x7F, 0x80, 0xFF};
	unsigned char buf[128], orig[128];
	size_t len, i, j, k;

	(void)state;
	for (k = 0; k < sizeof(v1) / sizeof(v1[0]) + 2; k++) {
		if (k < sizeof(v1) / sizeof(v1[0])) {
			len = strlen(v1[k]);
			memcpy(orig, v1[k], len);
		} else if (k == sizeof(v1) / sizeof(v1[0])) {
			len = v2_build(orig, 0x21, 0x11, 19, v4_block, sizeof(v4_block));
			memcpy(orig + len, "\x04\x00\x04xyzwEHLO", 11);
			len += 11;
		} else {
			len = v2_build(
			    orig, 0x21, 0x21, sizeof(v6_block), v6_block, sizeof(v6_block));
			memcpy(orig + len, "EHLO x\r\n", 8);
			len += 8;
		}
		check_consistent(orig, len);
		for (i = 0; i < len; i++) {
			for (j = 0; j < sizeof(vals); j++) {
				memcpy(buf, orig, len);
				buf[i] = vals[j];
				check_consistent(buf, len);
			}
		}
	}
}

static void
test_random(void **state)
{
	unsigned char buf[200];
	size_t len, i, round;

	(void)state;
	for (round = 0; round < 3000; round++) {
		len = rng() % sizeof(buf);
		/* Start with a signature often, so the parsers get exercised. */
		for (i = 0; i < len; i++)
			buf[i] = (unsigned char)rng();
		if (round % 3 == 0 && len >= 6)
			memcpy(buf, "PROXY ", 6);
		else if (round % 3 == 1 && len >= 16) {
			memcpy(buf, v2_sig, sizeof(v2_sig));
			buf[12] = (unsigned char)(0x20 | (rng() % 2));
			buf[13] = (rng() % 2) ? 0x11 : 0x21;
			buf[14] = 0;
			buf[15] = (unsigned char)(rng() % 80);
		}
		check_consistent(buf, len);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_v1_tcp4),
	    cmocka_unit_test(test_v1_tcp6),
	    cmocka_unit_test(test_v1_unknown),
	    cmocka_unit_test(test_v1_tail),
	    cmocka_unit_test(test_v1_bad_protocol),
	    cmocka_unit_test(test_v1_bad_spacing),
	    cmocka_unit_test(test_v1_missing_fields),
	    cmocka_unit_test(test_v1_wrong_family),
	    cmocka_unit_test(test_v1_bad_address),
	    cmocka_unit_test(test_v1_bad_ports),
	    cmocka_unit_test(test_v1_line_end),
	    cmocka_unit_test(test_v1_overlong),
	    cmocka_unit_test(test_v2_proxy_v4),
	    cmocka_unit_test(test_v2_proxy_v6),
	    cmocka_unit_test(test_v2_local),
	    cmocka_unit_test(test_v2_proxy_unspec),
	    cmocka_unit_test(test_v2_tlvs),
	    cmocka_unit_test(test_v2_at_max),
	    cmocka_unit_test(test_v2_tail),
	    cmocka_unit_test(test_v2_bad_signature),
	    cmocka_unit_test(test_v2_bad_version),
	    cmocka_unit_test(test_v2_bad_command),
	    cmocka_unit_test(test_v2_bad_family),
	    cmocka_unit_test(test_v2_short_length),
	    cmocka_unit_test(test_v2_over_max),
	    cmocka_unit_test(test_v2_bad_tlvs),
	    cmocka_unit_test(test_garbage),
	    cmocka_unit_test(test_empty),
	    cmocka_unit_test(test_mutations),
	    cmocka_unit_test(test_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
