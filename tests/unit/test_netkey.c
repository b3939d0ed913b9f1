/*
 * test_netkey.c - unit tests for proxy/netkey.c, the key a client address is
 * counted under by max_connections_per_ip.
 *
 * IPv4 stays per address; IPv6 is masked to client_ipv6_prefix bits (every
 * address of one /64 shares a key, the next /64 has its own); an IPv4-mapped
 * IPv6 address counts as its IPv4 address; spellings of one address give one
 * key; anything that is not an address is its own key, and a short buffer
 * gets a cut, terminated key, never an overflow.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "netkey.h"

/* key - the key of ip with prefix6, asserting netkey_client returned want */
static const char *
key(const char *ip, unsigned prefix6, int want)
{
	static char out[NETKEY_MAX];

	memset(out, 'x', sizeof(out));
	assert_int_equal(netkey_client(ip, prefix6, out, sizeof(out)), want);
	assert_non_null(memchr(out, '\0', sizeof(out)));
	return out;
}

static void
test_ipv4_per_address(void **state)
{
	assert_string_equal(key("192.0.2.1", 64, 0), "192.0.2.1");
	assert_string_equal(key("192.0.2.2", 64, 0), "192.0.2.2");
	/* The prefix is for IPv6 only. */
	assert_string_equal(key("192.0.2.1", 1, 0), "192.0.2.1");
	assert_string_equal(key("255.255.255.255", 128, 0), "255.255.255.255");
}

static void
test_ipv6_one_64_one_key(void **state)
{
	assert_string_equal(key("2001:db8::1", 64, 0), "2001:db8::/64");
	assert_string_equal(key("2001:db8::2", 64, 0), "2001:db8::/64");
	assert_string_equal(key("2001:db8::ffff:ffff:ffff:ffff", 64, 0), "2001:db8::/64");
	/* The next /64 is another network. */
	assert_string_equal(key("2001:db8:0:1::1", 64, 0), "2001:db8:0:1::/64");
	assert_string_equal(key("::1", 64, 0), "::/64");
}

static void
test_ipv6_other_prefixes(void **state)
{
	assert_string_equal(key("2001:db8::1", 128, 0), "2001:db8::1/128");
	assert_string_equal(key("2001:db8::2", 128, 0), "2001:db8::2/128");
	assert_string_equal(key("2001:db8:abcd:12ff::1", 48, 0), "2001:db8:abcd::/48");
	/* Prefixes that end inside a byte keep only the bits before the end. */
	assert_string_equal(key("2001:db8:abcd:12ff::1", 55, 0), "2001:db8:abcd:1200::/55");
	assert_string_equal(key("2001:db8::ffff:0:0:1", 65, 0), "2001:db8:0:0:8000::/65");
	assert_string_equal(key("2001:db8::ffff:ffff", 127, 0), "2001:db8::ffff:fffe/127");
	assert_string_equal(key("ffff:ffff::1", 1, 0), "8000::/1");
	/* Over 128 (config.c refuses it) is the whole address. */
	assert_string_equal(key("2001:db8::1", 200, 0), "2001:db8::1/128");
}

static void
test_ipv4_mapped_is_ipv4(void **state)
{
	assert_string_equal(key("::ffff:192.0.2.1", 64, 0), "192.0.2.1");
	assert_string_equal(key("::ffff:192.0.2.1", 128, 0), "192.0.2.1");
	assert_string_equal(key("::ffff:c000:201", 64, 0), "192.0.2.1");
	/* Two mapped clients are two clients, not one ::/64. */
	assert_string_equal(key("::ffff:192.0.2.2", 64, 0), "192.0.2.2");
}

static void
test_spellings_meet(void **state)
{
	assert_string_equal(key("2001:DB8::1", 64, 0), "2001:db8::/64");
	assert_string_equal(key("2001:0db8:0000:0000::0001", 64, 0), "2001:db8::/64");
	assert_string_equal(key("2001:db8:0:0:0:0:0:1", 128, 0), "2001:db8::1/128");
}

static void
test_zone_ignored(void **state)
{
	assert_string_equal(key("fe80::1%eth0", 64, 0), "fe80::/64");
	assert_string_equal(key("fe80::1%eth0", 128, 0), "fe80::1/128");
}

static void
test_not_an_address(void **state)
{
	/* session_new's ip when getnameinfo fails */
	assert_string_equal(key("?", 64, -1), "?");
	assert_string_equal(key("", 64, -1), "");
	assert_string_equal(key("192.0.2", 64, -1), "192.0.2");
	assert_string_equal(key("2001:db8::1::2", 64, -1), "2001:db8::1::2");
	assert_string_equal(key("client.example", 64, -1), "client.example");
	/* Longer than any address: itself, cut to the buffer. */
	char longer[200];
	memset(longer, 'a', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	assert_int_equal(strlen(key(longer, 64, -1)), NETKEY_MAX - 1);
}

static void
test_short_buffer(void **state)
{
	char out[8];

	memset(out, 'x', sizeof(out));
	assert_int_equal(netkey_client("2001:db8::1", 64, out, sizeof(out)), 0);
	assert_string_equal(out, "2001:db");
	memset(out, 'x', sizeof(out));
	assert_int_equal(netkey_client("192.0.2.1", 64, out, 1), 0);
	assert_int_equal(out[0], '\0');
	assert_int_equal(out[1], 'x');
	assert_int_equal(netkey_client("192.0.2.1", 64, out, 0), -1);
	assert_int_equal(out[1], 'x');
}

static void
test_longest_key_fits(void **state)
{
	/* The longest IPv6 text with the longest suffix. */
	assert_string_equal(key("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 128, 0),
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ipv4_per_address),
	    cmocka_unit_test(test_ipv6_one_64_one_key),
	    cmocka_unit_test(test_ipv6_other_prefixes),
	    cmocka_unit_test(test_ipv4_mapped_is_ipv4),
	    cmocka_unit_test(test_spellings_meet),
	    cmocka_unit_test(test_zone_ignored),
	    cmocka_unit_test(test_not_an_address),
	    cmocka_unit_test(test_short_buffer),
	    cmocka_unit_test(test_longest_key_fits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
