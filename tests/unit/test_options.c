/*
 * test_options.c - unit tests for proxy/options.c, the value parsers of the
 * daemon's keys and of every plugin's (through struct pc_host).
 *
 * Good values of every kind; every message, word for word; overflow,
 * empty strings, signs, blanks and trailing garbage refused; lists split
 * on blanks and commas; CIDR lists with /0, /32, /128, bad prefixes and
 * host bits; IPv4-mapped IPv6 addresses matching IPv4 networks (and the
 * other way round); the plugin's allocated CIDR list; opt_file on a file,
 * a missing path and a directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "options.h"

#define KB 1024ULL
/* Longer than any address with its prefix. */
#define LONG_ITEM "0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000/128"
#define MB (1024ULL * 1024)
#define GB (1024ULL * 1024 * 1024)

#define SIZE_MSG "bad value \"%s\": expected a size (e.g. 10, 64k, 50M, 1G)"
#define TIME_MSG "bad value \"%s\": expected a time (e.g. 500ms, 30s, 5m, 1h, 2d)"
#define BOOL_MSG "bad value \"%s\": expected yes or no"
#define NETS_MSG                                                                                   \
	"bad value \"%s\": expected addresses or networks (e.g. 127.0.0.1/32 ::1 10.0.0.0/8)"

/* ------------------------------------------------------------------ */
/* helpers */

static void check_msg(const char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad_nets(const char *value, size_t max, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* check_msg - err must read as fmt formats */
static void
check_msg(const char *err, const char *fmt, ...)
{
	char want[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(want, sizeof(want), fmt, ap);
	va_end(ap);
	assert_string_equal(err, want);
}

static void
good_size(const char *s, unsigned long long want)
{
	unsigned long long v = 12345;
	char err[256] = "";

	if (opt_size(s, &v, err, sizeof(err)) != 0)
		fail_msg("size \"%s\" refused: %s", s, err);
	if (v != want)
		fail_msg("size \"%s\" = %llu, want %llu", s, v, want);
}

static void
bad_size(const char *s)
{
	unsigned long long v = 12345;
	char err[256] = "";

	if (opt_size(s, &v, err, sizeof(err)) != -1)
		fail_msg("size \"%s\" accepted", s);
	assert_true(v == 12345);
	check_msg(err, SIZE_MSG, s);
}

static void
good_time(const char *s, unsigned long long want)
{
	unsigned long long v = 12345;
	char err[256] = "";

	if (opt_time(s, &v, err, sizeof(err)) != 0)
		fail_msg("time \"%s\" refused: %s", s, err);
	if (v != want)
		fail_msg("time \"%s\" = %llu ms, want %llu", s, v, want);
}

static void
bad_time(const char *s)
{
	unsigned long long v = 12345;
	char err[256] = "";

	if (opt_time(s, &v, err, sizeof(err)) != -1)
		fail_msg("time \"%s\" accepted", s);
	assert_true(v == 12345);
	check_msg(err, TIME_MSG, s);
}

/* nets - parse value into a list of at most max; returns the count */
static size_t
nets(const char *value, struct opt_net *out, size_t max)
{
	char err[512] = "";
	size_t n = 999;

	if (opt_nets(value, out, max, &n, err, sizeof(err)) != 0)
		fail_msg("\"%s\" refused: %s", value, err);
	return n;
}

/* bad_nets - value must be refused with exactly the message fmt formats */
static void
bad_nets(const char *value, size_t max, const char *fmt, ...)
{
	/* Room for every list below (max SIZE_MAX: a short one). */
	struct opt_net out[64];
	char err[512] = "", want[512];
	size_t n = 999;
	va_list ap;

	if (opt_nets(value, out, max, &n, err, sizeof(err)) != -1)
		fail_msg("\"%s\" accepted", value);
	assert_true(n == 999);
	va_start(ap, fmt);
	vsnprintf(want, sizeof(want), fmt, ap);
	va_end(ap);
	assert_string_equal(err, want);
}

/* in - is ip in the list value? */
static int
in(const char *value, const char *ip)
{
	struct opt_net out[16];
	size_t n = nets(value, out, 16);

	return opt_nets_match_ip(out, n, ip);
}

/* ------------------------------------------------------------------ */
/* sizes */

static void
test_size_good(void **state)
{
	good_size("0", 0);
	good_size("1", 1);
	good_size("512", 512);
	good_size("64k", 64 * KB);
	good_size("64K", 64 * KB);
	good_size("50m", 50 * MB);
	good_size("50M", 50 * MB);
	good_size("1g", GB);
	good_size("1G", GB);
	good_size("0G", 0);
	good_size("007", 7);
	good_size("18446744073709551615", 18446744073709551615ULL);
	good_size("17179869183G", 17179869183ULL * GB);
	good_size("18014398509481983k", 18014398509481983ULL * KB);
}

static void
test_size_bad(void **state)
{
	static const char *const bad[] = {
	    "",
	    " ",
	    "k",
	    "M",
	    "-1",
	    "+1",
	    " 1",
	    "1 ",
	    "1.5M",
	    "10 M",
	    "10kk",
	    "10MB",
	    "10X",
	    "0x10",
	    "1e3",
	    "lots",
	    /* overflow: never wrapped to a small number */
	    "18446744073709551616",
	    "99999999999999999999",
	    "99999999999999G",
	    "17179869184G",
	    "18014398509481984k",
	    "17592186044416M",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		bad_size(bad[i]);
}

/* ------------------------------------------------------------------ */
/* times */

static void
test_time_good(void **state)
{
	good_time("0", 0);
	good_time("0s", 0);
	good_time("1ms", 1);
	good_time("2d", 2ULL * 86400 * 1000);
	good_time("35d", 35ULL * 86400 * 1000);
	good_time("250ms", 250);
	good_time("30", 30000);
	good_time("30s", 30000);
	good_time("5m", 300000);
	good_time("90m", 5400000);
	good_time("1h", 3600000);
	good_time("48h", 172800000);
	good_time("18446744073709551615ms", 18446744073709551615ULL);
}

static void
test_time_bad(void **state)
{
	static const char *const bad[] = {
	    "",
	    "s",
	    "ms",
	    "5x",
	    "-1s",
	    "-1",
	    "+1s",
	    "1.5s",
	    "5 s",
	    " 5s",
	    "5s ",
	    "5mss",
	    "5sm",
	    "5S",
	    "5MS",
	    "10y",
	    "1D",
	    "99999999999999999999",
	    "99999999999999999999ms",
	    "18446744073709552s",
	    "5124095576030432h",
	    "213503982334602d",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		bad_time(bad[i]);
}

/* ------------------------------------------------------------------ */
/* booleans */

static void
test_bool(void **state)
{
	static const char *const yes[] = {"yes", "true", "on", "1", "YES", "True", "On"};
	static const char *const no[] = {"no", "false", "off", "0", "NO", "False", "OFF"};
	static const char *const bad[] = {
	    "", "maybe", "2", "yess", "of", "y e s", "10", " yes", "yes ", "y", "n", "01"};
	char err[256];
	int v;

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		v = 7;
		assert_int_equal(opt_bool(yes[i], &v, err, sizeof(err)), 0);
		assert_int_equal(v, 1);
		v = 7;
		assert_int_equal(opt_bool(no[i], &v, err, sizeof(err)), 0);
		assert_int_equal(v, 0);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 7;
		err[0] = '\0';
		if (opt_bool(bad[i], &v, err, sizeof(err)) != -1)
			fail_msg("bool \"%s\" accepted", bad[i]);
		assert_int_equal(v, 7);
		check_msg(err, BOOL_MSG, bad[i]);
	}
}

/* Without a buffer, or with a short one: -1 all the same, never an
 * overflow, always terminated. */
static void
test_err_buffer(void **state)
{
	unsigned long long v;
	char err[8];
	int b;

	assert_int_equal(opt_size("x", &v, NULL, 0), -1);
	assert_int_equal(opt_time("x", &v, NULL, 0), -1);
	assert_int_equal(opt_bool("x", &b, NULL, 0), -1);
	memset(err, 'z', sizeof(err));
	assert_int_equal(opt_size("x", &v, err, sizeof(err)), -1);
	assert_string_equal(err, "bad val");
	memset(err, 'z', sizeof(err));
	assert_int_equal(opt_size("x", &v, err, 0), -1);
	assert_int_equal(err[0], 'z');
}

/* ------------------------------------------------------------------ */
/* lists */

/* split - the items of value joined by '|' */
static const char *
split(const char *value)
{
	static char out[256];
	const char *cur = value, *item;
	size_t len, used = 0;

	out[0] = '\0';
	while (opt_list(&cur, &item, &len)) {
		assert_true(len > 0);
		assert_true(item >= value && item + len <= value + strlen(value));
		used += (size_t)snprintf(
		    out + used, sizeof(out) - used, "%s%.*s", used ? "|" : "", (int)len, item);
	}
	/* The end stays the end. */
	assert_int_equal(opt_list(&cur, &item, &len), 0);
	return out;
}

static void
test_list(void **state)
{
	assert_string_equal(split("a"), "a");
	assert_string_equal(split("a b"), "a|b");
	assert_string_equal(split("a,b"), "a|b");
	assert_string_equal(split("a, b"), "a|b");
	assert_string_equal(split("  a ,, b\tc,d,  "), "a|b|c|d");
	assert_string_equal(split("10.0.0.0/8,::1"), "10.0.0.0/8|::1");
	assert_string_equal(split(""), "");
	assert_string_equal(split(" , \t,"), "");
}

/* ------------------------------------------------------------------ */
/* CIDR lists */

static void
test_nets_parse(void **state)
{
	struct opt_net out[8];
	unsigned char a[16];

	assert_int_equal(nets("192.0.2.7", out, 8), 1);
	assert_int_equal(out[0].family, AF_INET);
	assert_int_equal(out[0].bits, 32);
	inet_pton(AF_INET, "192.0.2.7", a);
	assert_memory_equal(out[0].addr, a, 4);

	assert_int_equal(nets("2001:db8::/32, ::1 10.0.0.0/8,0.0.0.0/0", out, 8), 4);
	assert_int_equal(out[0].family, AF_INET6);
	assert_int_equal(out[0].bits, 32);
	assert_int_equal(out[1].family, AF_INET6);
	assert_int_equal(out[1].bits, 128);
	assert_int_equal(out[2].family, AF_INET);
	assert_int_equal(out[2].bits, 8);
	assert_int_equal(out[3].bits, 0);

	/* The edges: /0, /32, /128, and "/08" is 8. */
	assert_int_equal(nets("::/0 ::1/128 1.2.3.4/32 10.0.0.0/08", out, 8), 4);
	assert_int_equal(out[0].bits, 0);
	assert_int_equal(out[1].bits, 128);
	assert_int_equal(out[2].bits, 32);
	assert_int_equal(out[3].bits, 8);
	/* Exactly max items. */
	assert_int_equal(nets("1.1.1.1 2.2.2.2", out, 2), 2);
}

static void
test_nets_bad(void **state)
{
	static const char *const bad[] = {
	    "",
	    " ",
	    ",",
	    "x",
	    "10.0.0.0/33",
	    "::/129",
	    "10.0.0.0/",
	    "/8",
	    "10.0.0.0/-1",
	    "10.0.0.0/+8",
	    "10.0.0.0/8x",
	    "10.0.0.0/ 8",
	    "10.0.0.0/8/8",
	    "10.0.0.0/99999999999999999999",
	    "10.0.0",
	    "256.0.0.0",
	    "1.2.3.4.5",
	    "2001:db8:::1",
	    "fe80::1%eth0",
	    "[::1]",
	    "1.2.3.4 x",
	    "localhost",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("nets \"%s\"\n", bad[i]);
		bad_nets(bad[i], SIZE_MAX, NETS_MSG, bad[i]);
		bad_nets(bad[i], 8, NETS_MSG ", at most 8", bad[i]);
	}
	/* One more than max. */
	bad_nets("1.1.1.1 2.2.2.2 3.3.3.3", 2, NETS_MSG ", at most 2", "1.1.1.1 2.2.2.2 3.3.3.3");
	/* An item longer than any address. */
	bad_nets(LONG_ITEM, 8, NETS_MSG ", at most 8", LONG_ITEM);
	/* A long list is cut in the quote: the message still says why. */
	bad_nets("1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4 5.5.5.5 6.6.6.6 7.7.7.7 8.8.8.8 9.9.9.9 "
	         "10.10.10.10 11.11.11.11 12.12.12.12",
	    3, NETS_MSG ", at most 3",
	    "1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4 5.5.5.5 6.6.6.6 7.7.7.7 8.8.8.8 9.9.9.9 10.10.10.10 "
	    "11.11.11.11 1...");
	bad_nets(LONG_ITEM LONG_ITEM, SIZE_MAX, NETS_MSG,
	    LONG_ITEM "0000:0000:0000:0000:0000:0000:0000...");
}

/* Bits set past the prefix: refused, the message names the item and the
 * network it probably meant. */
static void
test_nets_host_bits(void **state)
{
	bad_nets("10.0.0.1/8", 8,
	    "bad value \"%s\": 10.0.0.1/8 has bits set past its /8 prefix (the network is "
	    "10.0.0.0/8)",
	    "10.0.0.1/8");
	bad_nets("::1 192.168.1.1/24", 8,
	    "bad value \"%s\": 192.168.1.1/24 has bits set past its /24 prefix (the network is "
	    "192.168.1.0/24)",
	    "::1 192.168.1.1/24");
	bad_nets("1.2.3.4/0", 8,
	    "bad value \"%s\": 1.2.3.4/0 has bits set past its /0 prefix (the network is "
	    "0.0.0.0/0)",
	    "1.2.3.4/0");
	bad_nets("2001:db8::1/64", 8,
	    "bad value \"%s\": 2001:db8::1/64 has bits set past its /64 prefix (the network is "
	    "2001:db8::/64)",
	    "2001:db8::1/64");
	bad_nets("::1/0", 8,
	    "bad value \"%s\": ::1/0 has bits set past its /0 prefix (the network is ::/0)",
	    "::1/0");
	/* In a long list, the quote is cut; the item is whole. */
	bad_nets("1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4 5.5.5.5 6.6.6.6 7.7.7.7 8.8.8.8 9.9.9.9 "
	         "10.10.10.10 11.11.11.11 12.12.12.12/8",
	    20,
	    "bad value \"%s\": 12.12.12.12/8 has bits set past its /8 prefix (the network is "
	    "12.0.0.0/8)",
	    "1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4 5.5.5.5 6.6.6.6 7.7.7.7 8.8.8.8 9.9.9.9 10.10.10.10 "
	    "11.11.11.11 1...");
	bad_nets("10.0.0.128/25,10.0.0.129/25", 8,
	    "bad value \"%s\": 10.0.0.129/25 has bits set past its /25 prefix (the network is "
	    "10.0.0.128/25)",
	    "10.0.0.128/25,10.0.0.129/25");
}

static void
test_nets_match_ipv4(void **state)
{
	assert_int_equal(in("10.0.0.0/8", "10.1.2.3"), 1);
	assert_int_equal(in("10.0.0.0/8", "10.255.255.255"), 1);
	assert_int_equal(in("10.0.0.0/8", "11.0.0.0"), 0);
	assert_int_equal(in("10.0.0.0/8", "9.255.255.255"), 0);
	assert_int_equal(in("192.0.2.128/25", "192.0.2.128"), 1);
	assert_int_equal(in("192.0.2.128/25", "192.0.2.127"), 0);
	assert_int_equal(in("192.0.2.7", "192.0.2.7"), 1);
	assert_int_equal(in("192.0.2.7/32", "192.0.2.8"), 0);
	assert_int_equal(in("0.0.0.0/0", "255.255.255.255"), 1);
	assert_int_equal(in("0.0.0.0/0", "0.0.0.0"), 1);
	/* An IPv4 network holds no IPv6 address. */
	assert_int_equal(in("0.0.0.0/0", "2001:db8::1"), 0);
	assert_int_equal(in("0.0.0.0/0", "::"), 0);
	/* the last of several */
	assert_int_equal(in("127.0.0.1 ::1 10.0.0.0/8", "10.9.9.9"), 1);
}

static void
test_nets_match_ipv6(void **state)
{
	assert_int_equal(in("2001:db8::/32", "2001:db8::1"), 1);
	assert_int_equal(in("2001:db8::/32", "2001:DB8:ffff::1"), 1);
	assert_int_equal(in("2001:db8::/32", "2001:db9::1"), 0);
	assert_int_equal(in("2001:db8::/33", "2001:db8:8000::"), 0);
	assert_int_equal(in("2001:db8::/33", "2001:db8:7fff::"), 1);
	assert_int_equal(in("::1", "::1"), 1);
	assert_int_equal(in("::1/128", "::2"), 0);
	assert_int_equal(in("::/0", "2001:db8::1"), 1);
	assert_int_equal(in("::/0", "::"), 1);
	/* An IPv6 network holds no IPv4 address (but see the mapped ones). */
	assert_int_equal(in("2001:db8::/32", "10.0.0.1"), 0);
	/* The zone of a link-local address is not the address. */
	assert_int_equal(in("fe80::/10", "fe80::1%eth0"), 1);
}

/* ::ffff:a.b.c.d is how a dual-stack socket shows an IPv4 client: it is
 * that client, for IPv4 networks and for IPv6 networks alike. */
static void
test_nets_match_mapped(void **state)
{
	assert_int_equal(in("10.0.0.0/8", "::ffff:10.1.2.3"), 1);
	assert_int_equal(in("10.0.0.0/8", "::FFFF:10.1.2.3"), 1);
	assert_int_equal(in("10.0.0.0/8", "::ffff:a01:203"), 1);
	assert_int_equal(in("10.0.0.0/8", "::ffff:11.1.2.3"), 0);
	assert_int_equal(in("192.0.2.7", "::ffff:192.0.2.7"), 1);
	assert_int_equal(in("0.0.0.0/0", "::ffff:1.2.3.4"), 1);
	/* Not mapped: the IPv4-compatible form and NAT64 are IPv6. */
	assert_int_equal(in("10.0.0.0/8", "::10.1.2.3"), 0);
	assert_int_equal(in("10.0.0.0/8", "64:ff9b::10.1.2.3"), 0);
	/* A mapped network holds the IPv4 addresses it maps, either way. */
	assert_int_equal(in("::ffff:10.0.0.0/104", "10.1.2.3"), 1);
	assert_int_equal(in("::ffff:10.0.0.0/104", "::ffff:10.1.2.3"), 1);
	assert_int_equal(in("::ffff:10.0.0.0/104", "11.1.2.3"), 0);
	assert_int_equal(in("::ffff:0:0/96", "203.0.113.9"), 1);
	assert_int_equal(in("::/0", "203.0.113.9"), 1);
}

static void
test_nets_match_not_an_address(void **state)
{
	assert_int_equal(in("0.0.0.0/0 ::/0", ""), -1);
	assert_int_equal(in("0.0.0.0/0 ::/0", "unknown"), -1);
	assert_int_equal(in("0.0.0.0/0 ::/0", "10.0.0.1/8"), -1);
	assert_int_equal(in("0.0.0.0/0 ::/0", " 10.0.0.1"), -1);
	assert_int_equal(in("0.0.0.0/0 ::/0", "0000:0000:0000:0000:0000:0000:0000:0000:0000"), -1);
	assert_int_equal(opt_nets_match_ip(NULL, 0, NULL), -1);
	assert_int_equal(opt_nets_match_ip(NULL, 0, "10.0.0.1"), 0);
}

static void
test_nets_match_sockaddr(void **state)
{
	struct opt_net out[4];
	size_t n = nets("10.0.0.0/8 2001:db8::/32", out, 4);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
	struct sockaddr sun = {.sa_family = AF_UNIX};

	inet_pton(AF_INET, "10.2.3.4", &sin.sin_addr);
	assert_int_equal(opt_nets_match(out, n, (struct sockaddr *)&sin), 1);
	inet_pton(AF_INET, "11.2.3.4", &sin.sin_addr);
	assert_int_equal(opt_nets_match(out, n, (struct sockaddr *)&sin), 0);
	inet_pton(AF_INET6, "2001:db8::5", &sin6.sin6_addr);
	assert_int_equal(opt_nets_match(out, n, (struct sockaddr *)&sin6), 1);
	inet_pton(AF_INET6, "::ffff:10.9.9.9", &sin6.sin6_addr);
	assert_int_equal(opt_nets_match(out, n, (struct sockaddr *)&sin6), 1);
	inet_pton(AF_INET6, "::ffff:11.9.9.9", &sin6.sin6_addr);
	assert_int_equal(opt_nets_match(out, n, (struct sockaddr *)&sin6), 0);
	assert_int_equal(opt_nets_match(out, n, &sun), 0);
}

/* ------------------------------------------------------------------ */
/* the plugin's CIDR list */

static void
test_cidr(void **state)
{
	struct pc_cidrs *c = (struct pc_cidrs *)1;
	char err[512] = "", big[8192];
	size_t used = 0;

	assert_int_equal(opt_cidr("10.0.0.0/8, 2001:db8::/32 192.0.2.7", &c, err, sizeof(err)), 0);
	assert_non_null(c);
	assert_int_equal(opt_cidr_match(c, "10.1.1.1"), 1);
	assert_int_equal(opt_cidr_match(c, "::ffff:10.1.1.1"), 1);
	assert_int_equal(opt_cidr_match(c, "2001:db8::1"), 1);
	assert_int_equal(opt_cidr_match(c, "192.0.2.7"), 1);
	assert_int_equal(opt_cidr_match(c, "192.0.2.8"), 0);
	assert_int_equal(opt_cidr_match(c, "not-an-ip"), -1);
	opt_cidr_free(c);
	opt_cidr_free(NULL);
	assert_int_equal(opt_cidr_match(NULL, "10.1.1.1"), 0);

	/* No "at most" for a plugin's list: it takes any number. */
	for (int i = 0; i < 500; i++)
		used += (size_t)snprintf(
		    big + used, sizeof(big) - used, "10.%d.%d.0/24 ", i / 256, i % 256);
	assert_int_equal(opt_cidr(big, &c, err, sizeof(err)), 0);
	assert_int_equal(opt_cidr_match(c, "10.1.243.9"), 1);
	assert_int_equal(opt_cidr_match(c, "10.1.244.9"), 0);
	opt_cidr_free(c);

	/* Refused: *out is NULL, the message is opt_nets's without a bound. */
	c = (struct pc_cidrs *)1;
	assert_int_equal(opt_cidr("10.0.0.0/8 nope", &c, err, sizeof(err)), -1);
	assert_null(c);
	check_msg(err, NETS_MSG, "10.0.0.0/8 nope");
	c = (struct pc_cidrs *)1;
	assert_int_equal(opt_cidr("", &c, err, sizeof(err)), -1);
	assert_null(c);
	check_msg(err, NETS_MSG, "");
	assert_int_equal(opt_cidr(" , ", &c, err, sizeof(err)), -1);
	check_msg(err, NETS_MSG, " , ");
	assert_int_equal(opt_cidr("10.0.0.1/8", &c, err, sizeof(err)), -1);
	assert_null(c);
	check_msg(err,
	    "bad value \"%s\": 10.0.0.1/8 has bits set past its /8 prefix (the network is "
	    "10.0.0.0/8)",
	    "10.0.0.1/8");
}

/* ------------------------------------------------------------------ */
/* files */

static void
test_file(void **state)
{
	char dir[] = "/tmp/test_options.XXXXXX", path[64], err[512];
	FILE *fp;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/list", dir);
	assert_non_null(fp = fopen(path, "w"));
	fputs("10.0.0.0/8\n", fp);
	fclose(fp);
	assert_int_equal(opt_file(path, err, sizeof(err)), 0);
	assert_int_equal(opt_file(path, NULL, 0), 0);
	/* /dev/null is readable: not only regular files */
	assert_int_equal(opt_file("/dev/null", err, sizeof(err)), 0);

	assert_int_equal(opt_file(dir, err, sizeof(err)), -1);
	check_msg(err, "cannot read \"%s\": Is a directory", dir);
	snprintf(path, sizeof(path), "%s/missing", dir);
	assert_int_equal(opt_file(path, err, sizeof(err)), -1);
	check_msg(err, "cannot read \"%s\": No such file or directory", path);
	snprintf(path, sizeof(path), "%s/list/under", dir);
	assert_int_equal(opt_file(path, err, sizeof(err)), -1);
	check_msg(err, "cannot read \"%s\": Not a directory", path);
	assert_int_equal(opt_file("", err, sizeof(err)), -1);
	check_msg(err, "cannot read \"%s\": No such file or directory", "");

	snprintf(path, sizeof(path), "%s/list", dir);
	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_size_good),
	    cmocka_unit_test(test_size_bad),
	    cmocka_unit_test(test_time_good),
	    cmocka_unit_test(test_time_bad),
	    cmocka_unit_test(test_bool),
	    cmocka_unit_test(test_err_buffer),
	    cmocka_unit_test(test_list),
	    cmocka_unit_test(test_nets_parse),
	    cmocka_unit_test(test_nets_bad),
	    cmocka_unit_test(test_nets_host_bits),
	    cmocka_unit_test(test_nets_match_ipv4),
	    cmocka_unit_test(test_nets_match_ipv6),
	    cmocka_unit_test(test_nets_match_mapped),
	    cmocka_unit_test(test_nets_match_not_an_address),
	    cmocka_unit_test(test_nets_match_sockaddr),
	    cmocka_unit_test(test_cidr),
	    cmocka_unit_test(test_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
