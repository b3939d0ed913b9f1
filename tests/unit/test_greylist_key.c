/*
 * test_greylist_key.c - unit tests for plugins/greylist_key.h: how the
 * greylist plugin and portcullis-store name a triplet.
 *
 * The sender normalisation table (case, +extension, BATV in both orders
 * and btv1, SRS0 and SRS1 with each separator, VERP numbers, what must be
 * left alone), the client network for IPv4, IPv6 and IPv4-mapped
 * addresses at several prefixes, keys at and past PC_STORE_KEY_MAX (the
 * hashed tail is deterministic and differs for different triplets), and
 * the state value's strict parser.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/greylist_key.h"

struct sender_case {
	const char *in, *want;
};

static const struct sender_case sender_cases[] = {
    /* case */
    {"Joe.Bloggs@Example.COM", "joe.bloggs@example.com"},
    {"", ""},
    {"postmaster", "postmaster"},
    /* +extension */
    {"user+tag@example.com", "user@example.com"},
    {"User+Tag+More@example.com", "user@example.com"},
    {"+only@example.com", "+only@example.com"},
    {"user+@example.com", "user@example.com"},
    /* BATV, draft-levine-smtp-batv: prvs=TAG=user, and the older order */
    {"prvs=1234abcdef=user@example.com", "user@example.com"},
    {"PRVS=0123456789=User@Example.com", "user@example.com"},
    {"prvs=user=1234abcdef@example.com", "user@example.com"},
    {"prvs=xyz=user@example.com", "user@example.com"},
    {"prvs=1234abcdef=user+ext@example.com", "user@example.com"},
    {"btv1==357cafe55e==user@example.com", "user@example.com"},
    {"prvs=@example.com", "prvs=@example.com"},
    {"prvs=1234abcdef=@example.com", "prvs=1234abcdef=@example.com"},
    {"prvsuser@example.com", "prvsuser@example.com"},
    /* SRS */
    {"SRS0=HHH=TT=orig.example=alice@forwarder.example", "alice@orig.example"},
    {"srs0+hash=tt=orig.example=alice@fwd.example", "alice@orig.example"},
    {"SRS0-hash=tt=orig.example=alice@fwd.example", "alice@orig.example"},
    {"SRS0=HHH=TT=orig.example=a=b@fwd.example", "a=b@orig.example"},
    {"SRS1=XXX=fwd1.example==HHH=TT=orig.example=bob@fwd2.example", "bob@orig.example"},
    {"SRS1=XXX=fwd1.example=+HHH=TT=orig.example=bob@fwd2.example", "bob@orig.example"},
    {"SRS0=HHH=TT=orig.example=prvs=1234abcdef=carol@fwd.example", "carol@orig.example"},
    {"SRS0=HHH=TT=orig.example=dave+list@fwd.example", "dave@orig.example"},
    /* not SRS: left as they are */
    {"srs0=only=two@fwd.example", "srs0=only=two@fwd.example"},
    {"SRS0=HHH=TT==user@fwd.example", "srs0=hhh=tt==user@fwd.example"},
    {"srs2=a=b=c=d@x.example", "srs2=a=b=c=d@x.example"},
    /* VERP numbers, as postgrey: a number that is a word of its own */
    {"bounce-12345@list.example", "bounce-#@list.example"},
    {"list.2024.07@list.example", "list.#.#@list.example"},
    {"user123@example.com", "user123@example.com"},
    {"123@example.com", "#@example.com"},
    /* a quoted local part is only lower-cased */
    {"\"A+B\"@Example.com", "\"a+b\"@example.com"},
    /* the domain is never touched beyond case */
    {"a@123.example", "a@123.example"},
};

static void
test_sender_table(void **state)
{
	char out[GL_ADDR_MAX];
	size_t i;

	for (i = 0; i < sizeof(sender_cases) / sizeof(sender_cases[0]); i++) {
		memset(out, 'x', sizeof(out));
		assert_int_equal(gl_normalise_sender(sender_cases[i].in, out, sizeof(out)), 0);
		if (strcmp(out, sender_cases[i].want) != 0)
			fail_msg("\"%s\": got \"%s\", want \"%s\"", sender_cases[i].in, out,
			    sender_cases[i].want);
	}
}

static void
test_sender_too_long(void **state)
{
	char in[GL_ADDR_MAX + 10], out[GL_ADDR_MAX], small[8];

	memset(in, 'a', sizeof(in) - 1);
	in[sizeof(in) - 1] = '\0';
	assert_int_equal(gl_normalise_sender(in, out, sizeof(out)), -1);
	assert_int_equal(gl_normalise_sender("a@example.com", small, sizeof(small)), -1);
	assert_int_equal(gl_normalise_rcpt("a@example.com", small, sizeof(small)), -1);
}

static void
test_rcpt_lower_case(void **state)
{
	char out[GL_ADDR_MAX];

	assert_int_equal(gl_normalise_rcpt("Postmaster+Tag@Example.COM", out, sizeof(out)), 0);
	/* a recipient is who it is: only the case goes */
	assert_string_equal(out, "postmaster+tag@example.com");
}

static const char *
net(const char *ip, unsigned v4, unsigned v6)
{
	static char out[GL_NET_MAX];

	if (gl_network(ip, v4, v6, out, sizeof(out)) != 0)
		return "ERR";
	return out;
}

static void
test_network(void **state)
{
	assert_string_equal(net("192.0.2.77", 24, 64), "192.0.2.0/24");
	assert_string_equal(net("192.0.2.77", 32, 64), "192.0.2.77/32");
	assert_string_equal(net("192.0.2.77", 20, 64), "192.0.0.0/20");
	assert_string_equal(net("192.0.2.77", 0, 64), "0.0.0.0/0");
	assert_string_equal(net("::ffff:192.0.2.77", 24, 64), "192.0.2.0/24");
	assert_string_equal(net("2001:db8::1", 24, 64), "2001:db8::/64");
	assert_string_equal(net("2001:db8::ffff:1", 24, 64), "2001:db8::/64");
	assert_string_equal(net("2001:db8:0:1::1", 24, 64), "2001:db8:0:1::/64");
	assert_string_equal(net("2001:db8:abcd:12ff::1", 24, 52), "2001:db8:abcd:1000::/52");
	assert_string_equal(net("::1", 24, 128), "::1/128");
	assert_string_equal(net("::1", 24, 64), "::/64");
	assert_string_equal(net("not an address", 24, 64), "ERR");
	assert_string_equal(net("", 24, 64), "ERR");
	assert_string_equal(net("192.0.2.1/24", 24, 64), "ERR");
}

static void
test_keys(void **state)
{
	char k[GL_KEY_BUF];

	assert_int_equal(gl_triplet_key("192.0.2.0/24", "a@b", "c@d", k, sizeof(k)),
	    strlen("greylist:t:192.0.2.0/24,a@b,c@d"));
	assert_string_equal(k, "greylist:t:192.0.2.0/24,a@b,c@d");
	gl_triplet_key("2001:db8::/64", "", "c@d", k, sizeof(k));
	assert_string_equal(k, "greylist:t:2001:db8::/64,,c@d");
	assert_int_equal(
	    gl_awl_key("192.0.2.0/24", k, sizeof(k)), strlen("greylist:a:192.0.2.0/24"));
	assert_string_equal(k, "greylist:a:192.0.2.0/24");
	/* a buffer too small for any key */
	assert_int_equal(gl_triplet_key("n", "s", "r", k, 10), 0);
}

/* key_of - the key of a triplet whose recipient is n octets long */
static size_t
key_of(size_t n, char fill, char *k)
{
	char rcpt[GL_ADDR_MAX];

	memset(rcpt, fill, n);
	rcpt[n] = '\0';
	return gl_triplet_key("192.0.2.0/24", "sender@example.com", rcpt, k, GL_KEY_BUF);
}

static void
test_long_keys(void **state)
{
	char a[GL_KEY_BUF], b[GL_KEY_BUF], c[GL_KEY_BUF];
	size_t fixed = strlen("greylist:t:192.0.2.0/24,sender@example.com,");

	/* exactly at the limit: kept whole */
	assert_int_equal(key_of(PC_STORE_KEY_MAX - fixed, 'r', a), PC_STORE_KEY_MAX);
	assert_null(strchr(a, '~'));
	/* one past: the head, "~" and 16 hex digits, at the limit */
	assert_int_equal(key_of(PC_STORE_KEY_MAX - fixed + 1, 'r', a), PC_STORE_KEY_MAX);
	assert_int_equal(a[PC_STORE_KEY_MAX - GL_HASH_TAIL], '~');
	assert_int_equal(strspn(a + PC_STORE_KEY_MAX - 16, "0123456789abcdef"), 16);
	/* the same triplet, the same key; another tail, another key */
	assert_int_equal(key_of(PC_STORE_KEY_MAX - fixed + 1, 'r', b), PC_STORE_KEY_MAX);
	assert_string_equal(a, b);
	assert_int_equal(key_of(PC_STORE_KEY_MAX - fixed + 2, 'r', c), PC_STORE_KEY_MAX);
	assert_string_not_equal(a, c);
	assert_int_equal(strncmp(a, c, PC_STORE_KEY_MAX - GL_HASH_TAIL), 0);
	/* far past the limit */
	assert_int_equal(key_of(GL_ADDR_MAX - 1, 'z', c), PC_STORE_KEY_MAX);
	assert_int_equal(strlen(c), PC_STORE_KEY_MAX);
}

static void
test_fnv(void **state)
{
	/* the published FNV-1a 64 test vectors */
	assert_true(gl_fnv1a64(GL_FNV_OFFSET, "", 0) == 0xcbf29ce484222325ULL);
	assert_true(gl_fnv1a64(GL_FNV_OFFSET, "a", 1) == 0xaf63dc4c8601ec8cULL);
	assert_true(gl_fnv1a64(GL_FNV_OFFSET, "foobar", 6) == 0x85944171f73967e8ULL);
}

static void
test_state(void **state)
{
	struct gl_state s = {1700000000123ULL, 1, 42}, t;
	char v[GL_STATE_MAX];
	size_t n;
	unsigned long long c;

	n = gl_state_format(&s, v, sizeof(v));
	assert_string_equal(v, "1700000000123,1,42");
	assert_int_equal(gl_state_parse(v, n, &t), 0);
	assert_true(t.first_ms == s.first_ms && t.passed == 1 && t.passes == 42);
	assert_int_equal(gl_state_parse("5,0,0", 5, &t), 0);
	assert_int_equal(t.passed, 0);
	/* anything else is not ours */
	assert_int_equal(gl_state_parse("", 0, &t), -1);
	assert_int_equal(gl_state_parse("5,2,0", 5, &t), -1);
	assert_int_equal(gl_state_parse("5,0", 3, &t), -1);
	assert_int_equal(gl_state_parse("5,0,", 4, &t), -1);
	assert_int_equal(gl_state_parse("5,0,1,", 6, &t), -1);
	assert_int_equal(gl_state_parse("-5,0,1", 6, &t), -1);
	assert_int_equal(gl_state_parse("x,0,1", 5, &t), -1);
	assert_int_equal(gl_state_parse("99999999999999999999,0,1", 24, &t), -1);
	/* the length counts, not a NUL */
	assert_int_equal(gl_state_parse("5,0,17", 5, &t), 0);
	assert_true(t.passes == 1);
	assert_int_equal(gl_counter_parse("17", 2, &c), 0);
	assert_true(c == 17);
	assert_int_equal(gl_counter_parse("", 0, &c), -1);
	assert_int_equal(gl_counter_parse("1x", 2, &c), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sender_table),
	    cmocka_unit_test(test_sender_too_long),
	    cmocka_unit_test(test_rcpt_lower_case),
	    cmocka_unit_test(test_network),
	    cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_long_keys),
	    cmocka_unit_test(test_fnv),
	    cmocka_unit_test(test_state),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
