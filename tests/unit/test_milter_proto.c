/*
 * test_milter_proto.c - unit tests for plugins/milter_proto.h: the milter
 * protocol's framing, the negotiation answer, the replies and their exact
 * shapes, the socket syntax and the macro names.
 *
 * Packets are written as libmilter writes them (a 4-octet length, the
 * command, the data); each is checked whole, cut short at every length
 * (need more, never a packet), and broken: a length of 0 or past the
 * limit, strings without their NUL, too few or too many strings, octets
 * after the last one, unknown replies.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/milter_proto.h"

/* pkt - a packet of cmd with n octets of data into out; its length */
static size_t
pkt(unsigned char *out, unsigned char cmd, const void *data, size_t n)
{
	mp_put32(out, (uint32_t)(n + 1));
	out[4] = cmd;
	memcpy(out + 5, data, n);
	return n + 5;
}

static void
test_frame(void **state)
{
	unsigned char buf[64], cmd;
	const unsigned char *d;
	size_t dlen, total, n = pkt(buf, 'h', "X-A\0v\0", 6);
	char err[128];

	(void)state;
	for (size_t i = 0; i < n; i++)
		assert_int_equal(mp_frame(buf, i, &cmd, &d, &dlen, &total, err, sizeof(err)), 0);
	assert_int_equal(mp_frame(buf, n, &cmd, &d, &dlen, &total, err, sizeof(err)), 1);
	assert_int_equal(cmd, 'h');
	assert_int_equal(dlen, 6);
	assert_int_equal(total, n);
	assert_memory_equal(d, "X-A\0v\0", 6);
	/* Two packets back to back: the first only. */
	n += pkt(buf + n, 'c', "", 0);
	assert_int_equal(mp_frame(buf, n, &cmd, &d, &dlen, &total, err, sizeof(err)), 1);
	assert_int_equal(total, 11);
	/* Lengths that are no packet. */
	mp_put32(buf, 0);
	assert_int_equal(mp_frame(buf, 5, &cmd, &d, &dlen, &total, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "length 0"));
	mp_put32(buf, MP_PACKET_MAX + 1);
	assert_int_equal(mp_frame(buf, 5, &cmd, &d, &dlen, &total, err, sizeof(err)), -1);
	mp_put32(buf, 0x80000000u);
	assert_int_equal(mp_frame(buf, 5, &cmd, &d, &dlen, &total, err, sizeof(err)), -1);
	/* The largest allowed length needs all of its octets. */
	mp_put32(buf, MP_PACKET_MAX);
	assert_int_equal(mp_frame(buf, 64, &cmd, &d, &dlen, &total, err, sizeof(err)), 0);
}

static void
test_optneg(void **state)
{
	unsigned char d[256];
	struct mp_optneg o;
	char err[200];
	size_t n;

	(void)state;
	mp_put32(d, 6);
	mp_put32(d + 4, SMFIF_ADDHDRS | SMFIF_CHGHDRS);
	mp_put32(d + 8, SMFIP_NOHELO | SMFIP_NR_HDR);
	assert_int_equal(mp_optneg_parse(d, 12, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err, 200), 0);
	assert_int_equal(o.version, 6);
	assert_int_equal(o.actions, SMFIF_ADDHDRS | SMFIF_CHGHDRS);
	assert_int_equal(o.protocol, SMFIP_NOHELO | SMFIP_NR_HDR);
	assert_null(o.symlist[MP_M_CONNECT]);
	/* Macro lists for two stages. */
	n = 12;
	mp_put32(d + n, MP_M_CONNECT);
	memcpy(d + n + 4, "j {client_addr}", 16);
	n += 20;
	mp_put32(d + n, MP_M_EOM);
	memcpy(d + n + 4, "i", 2);
	n += 6;
	assert_int_equal(mp_optneg_parse(d, n, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err, 200), 0);
	assert_int_equal(o.symlen[MP_M_CONNECT], 15);
	assert_memory_equal(o.symlist[MP_M_CONNECT], "j {client_addr}", 15);
	assert_int_equal(o.symlen[MP_M_EOM], 1);
	/* A list cut short, without its NUL, for a stage that is none, twice. */
	for (size_t cut = 13; cut < n; cut++) {
		if (cut == 32)
			continue; /* a whole first list */
		assert_int_equal(
		    mp_optneg_parse(d, cut, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err, 200), -1);
	}
	mp_put32(d + 32, MP_M_COUNT);
	assert_int_equal(mp_optneg_parse(d, n, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err, 200), -1);
	mp_put32(d + 32, MP_M_CONNECT);
	assert_int_equal(mp_optneg_parse(d, n, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err, 200), -1);
	/* Versions out of range; too short. */
	mp_put32(d, 1);
	assert_int_equal(mp_optneg_parse(d, 12, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err, 200), -1);
	assert_non_null(strstr(err, "version 1"));
	mp_put32(d, 7);
	assert_int_equal(mp_optneg_parse(d, 12, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err, 200), -1);
	mp_put32(d, 2);
	assert_int_equal(mp_optneg_parse(d, 12, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err, 200), 0);
	assert_int_equal(mp_optneg_parse(d, 11, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err, 200), -1);
	/* What we did not offer is left out and said. */
	mp_put32(d, 6);
	mp_put32(d + 4, 0xffffffffu);
	mp_put32(d + 8, SMFIP_RCPT_REJ | SMFIP_NOBODY | 0x10000000u);
	assert_int_equal(mp_optneg_parse(d, 12, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err, 200), 0);
	assert_int_equal(o.actions, MP_ACTIONS_ALL);
	assert_int_equal(o.dropped_actions, ~MP_ACTIONS_ALL);
	assert_int_equal(o.protocol, SMFIP_NOBODY);
	assert_int_equal(o.dropped_protocol, SMFIP_RCPT_REJ | 0x10000000u);
}

/* reply - parse cmd with data; the result */
static int
reply(unsigned char cmd, const void *data, size_t n, struct mp_reply *r)
{
	char err[160];

	return mp_reply_parse(cmd, data, n, r, err, sizeof(err));
}

static void
test_replies(void **state)
{
	struct mp_reply r;
	unsigned char ins[32];

	(void)state;
	for (const char *c = "acdrtps4f"; *c != '\0'; c++) {
		assert_int_equal(reply((unsigned char)*c, "", 0, &r), 0);
		assert_int_equal(r.code, (unsigned char)*c);
		assert_int_equal(reply((unsigned char)*c, "x", 1, &r), -1);
	}
	assert_int_equal(reply('y', "550 5.7.1 No\0", 13, &r), 0);
	assert_string_equal(r.s[0], "550 5.7.1 No");
	assert_int_equal(reply('y', "550 5.7.1 No", 12, &r), -1);
	assert_int_equal(reply('y', "550\0extra\0", 10, &r), -1);
	assert_int_equal(reply('y', "", 0, &r), -1);
	assert_int_equal(reply('h', "X-A\0v\0", 6, &r), 0);
	assert_string_equal(r.s[0], "X-A");
	assert_string_equal(r.s[1], "v");
	assert_int_equal(reply('h', "X-A\0v", 5, &r), -1);
	assert_int_equal(reply('h', "X-A\0", 4, &r), -1);
	assert_int_equal(reply('h', "X-A\0v\0w\0", 8, &r), -1);
	mp_put32(ins, 3);
	memcpy(ins + 4, "X-B\0w\0", 6);
	assert_int_equal(reply('i', ins, 10, &r), 0);
	assert_int_equal(r.index, 3);
	assert_string_equal(r.s[1], "w");
	assert_int_equal(reply('m', ins, 10, &r), 0);
	for (size_t cut = 0; cut < 10; cut++)
		assert_int_equal(reply('i', ins, cut, &r), -1);
	assert_int_equal(reply('+', "<a@b>\0", 6, &r), 0);
	assert_int_equal(reply('-', "<a@b>\0", 6, &r), 0);
	assert_int_equal(reply('2', "<a@b>\0NOTIFY=NEVER\0", 19, &r), 0);
	assert_int_equal(r.ns, 2);
	assert_int_equal(reply('2', "<a@b>\0", 6, &r), 0);
	assert_int_equal(r.ns, 1);
	assert_null(r.s[1]);
	assert_int_equal(reply('e', "<s@x>\0", 6, &r), 0);
	assert_int_equal(reply('e', "<s@x>\0A=1\0B\0", 12, &r), -1);
	assert_int_equal(reply('q', "virus\0", 6, &r), 0);
	assert_int_equal(reply('b', "any\0thing\r\n", 11, &r), 0);
	assert_int_equal(r.dlen, 11);
	assert_int_equal(reply('b', "", 0, &r), 0);
	assert_int_equal(reply('Z', "", 0, &r), -1);
	assert_int_equal(reply(0x00, "", 0, &r), -1);
	assert_int_equal(reply('O', "", 0, &r), -1);
}

static void
test_socket(void **state)
{
	struct mp_socket s;
	char err[300];

	(void)state;
	assert_int_equal(mp_socket_parse("inet:127.0.0.1:8891", &s, err, 300), 0);
	assert_int_equal(s.family, 4);
	assert_string_equal(s.host, "127.0.0.1");
	assert_int_equal(s.port, 8891);
	assert_int_equal(mp_socket_parse("inet:8891@127.0.0.1", &s, err, 300), 0);
	assert_string_equal(s.host, "127.0.0.1");
	assert_int_equal(s.port, 8891);
	assert_int_equal(mp_socket_parse("inet:8891@[127.0.0.1]", &s, err, 300), 0);
	assert_string_equal(s.host, "127.0.0.1");
	assert_int_equal(mp_socket_parse("inet6:[::1]:8891", &s, err, 300), 0);
	assert_int_equal(s.family, 6);
	assert_string_equal(s.host, "::1");
	assert_int_equal(mp_socket_parse("inet6:8891@::1", &s, err, 300), 0);
	assert_string_equal(s.host, "::1");
	assert_int_equal(mp_socket_parse("inet:[::1]:25", &s, err, 300), 0);
	assert_int_equal(s.family, 6);
	assert_int_equal(mp_socket_parse("unix:/run/o.sock", &s, err, 300), 0);
	assert_string_equal(s.path, "/run/o.sock");
	assert_int_equal(mp_socket_parse("local:/run/o.sock", &s, err, 300), 0);
	assert_int_equal(mp_socket_parse("/run/o.sock", &s, err, 300), 0);
	const char *bad[] = {"", "inet:", "inet:127.0.0.1", "inet:127.0.0.1:0",
	    "inet:127.0.0.1:65536", "inet:127.0.0.1:8x", "inet::8891", "inet:@127.0.0.1",
	    "inet:8891@", "unix:relative", "tcp:127.0.0.1:1", "inet:[::1:8891", "inet:127.0.0.1:-1",
	    "unix:/" /* fine */};
	for (size_t i = 0; i + 1 < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(mp_socket_parse(bad[i], &s, err, 300), -1);
		assert_non_null(strstr(err, "bad value"));
	}
	char longpath[200] = "unix:/";
	memset(longpath + 6, 'a', 150);
	longpath[156] = '\0';
	assert_int_equal(mp_socket_parse(longpath, &s, err, 300), -1);
}

static void
test_macro_names(void **state)
{
	char out[72];

	(void)state;
	assert_int_equal(mp_macro_name("j", 1, out, sizeof(out)), 0);
	assert_string_equal(out, "j");
	assert_int_equal(mp_macro_name("_", 1, out, sizeof(out)), 0);
	assert_string_equal(out, "_");
	assert_int_equal(mp_macro_name("client_addr", 11, out, sizeof(out)), 0);
	assert_string_equal(out, "{client_addr}");
	assert_int_equal(mp_macro_name("{client_addr}", 13, out, sizeof(out)), 0);
	assert_string_equal(out, "{client_addr}");
	assert_int_equal(mp_macro_name("{i}", 3, out, sizeof(out)), 0);
	assert_string_equal(out, "i");
	assert_int_equal(mp_macro_name("{}", 2, out, sizeof(out)), -1);
	assert_int_equal(mp_macro_name("", 0, out, sizeof(out)), -1);
	assert_int_equal(mp_macro_name("a b", 3, out, sizeof(out)), -1);
	assert_int_equal(mp_macro_name("{a}b}", 5, out, sizeof(out)), -1);
	assert_int_equal(mp_macro_name("{", 1, out, sizeof(out)), -1);
	assert_int_equal(mp_macro_name("a\0b", 3, out, sizeof(out)), -1);
	assert_int_equal(mp_macro_name("abcdefghij", 10, out, 12), -1);
	assert_int_equal(mp_macro_name("abcdefghi", 9, out, 12), 0);
}

static void
test_field_name(void **state)
{
	(void)state;
	assert_int_equal(mp_field_name("Subject: x", 10), 7);
	assert_int_equal(mp_field_name("Subject :x", 10), 7);
	assert_int_equal(mp_field_name("Subject:", 8), 7);
	assert_int_equal(mp_field_name(": x", 3), 0);
	assert_int_equal(mp_field_name(" Subject: x", 11), 0);
	assert_int_equal(mp_field_name("Sub ject: x", 11), 0);
	assert_int_equal(mp_field_name("no colon", 8), 0);
	assert_int_equal(mp_field_name("Subject", 7), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_frame),
	    cmocka_unit_test(test_optneg),
	    cmocka_unit_test(test_replies),
	    cmocka_unit_test(test_socket),
	    cmocka_unit_test(test_macro_names),
	    cmocka_unit_test(test_field_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
