/*
 * test_spamd_reply.c - unit tests for plugins/spamd_reply.h: the parser of
 * spamd's answer to SYMBOLS.
 *
 * Real answers of spamd 4.0 (spam, ham, an error status), each fed whole,
 * then split at every position and fed octet by octet as a slow server
 * would send it (every prefix is SPAMD_AGAIN, the whole SPAMD_DONE with the
 * same fields, and a prefix at EOF SPAMD_BAD); then a table of garbage:
 * bad status lines, bad or missing or doubled headers, bad numbers, bad
 * rule lists, lengths past every limit, octets after the rule list.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/spamd_reply.h"

static const char spam_reply[] = "SPAMD/1.1 0 EX_OK\r\n"
                                 "Content-length: 27\r\n"
                                 "Spam: True ; 1000.0 / 5.0\r\n"
                                 "\r\n"
                                 "GTUBE,NO_RECEIVED,NO_RELAYS";

static const char ham_reply[] = "SPAMD/1.1 0 EX_OK\r\n"
                                "Content-length: 33\r\n"
                                "Spam: False ; -0.0 / 5.0\r\n"
                                "\r\n"
                                "MSGID_SHORT,NO_RECEIVED,NO_RELAYS";

static enum spamd_parse
parse_all(const char *s, size_t len, int eof, struct spamd_reply *r)
{
	spamd_reply_init(r);
	return spamd_reply_parse(s, len, eof, r);
}

static void
test_spam(void **state)
{
	struct spamd_reply r;

	assert_int_equal(parse_all(spam_reply, strlen(spam_reply), 0, &r), SPAMD_DONE);
	assert_int_equal(r.code, 0);
	assert_string_equal(r.message, "EX_OK");
	assert_int_equal(r.spam, 1);
	assert_string_equal(r.score, "1000.0");
	assert_string_equal(r.required, "5.0");
	assert_true(r.score_v == 1000.0 && r.required_v == 5.0);
	assert_int_equal(r.symbols_len, 27);
	assert_memory_equal(r.symbols, "GTUBE,NO_RECEIVED,NO_RELAYS", 27);
	/* at EOF too */
	assert_int_equal(parse_all(spam_reply, strlen(spam_reply), 1, &r), SPAMD_DONE);
}

static void
test_ham(void **state)
{
	struct spamd_reply r;

	assert_int_equal(parse_all(ham_reply, strlen(ham_reply), 1, &r), SPAMD_DONE);
	assert_int_equal(r.spam, 0);
	assert_string_equal(r.score, "-0.0");
	assert_true(r.score_v == 0.0);
}

static void
test_no_rules_and_other_headers(void **state)
{
	static const char s[] = "SPAMD/1.5 0 EX_OK\r\n"
	                        "DidSet: local\r\n"
	                        "Content-length: 0\r\n"
	                        "Spam: No;3/5\r\n"
	                        "\r\n";
	static const char crlf[] = "SPAMD/1.1 0 EX_OK\r\n"
	                           "content-length: 8\r\n"
	                           "spam: Yes ; 12.5 / 5.0\r\n"
	                           "\r\n"
	                           "A_RULE\r\n";
	struct spamd_reply r;

	assert_int_equal(parse_all(s, strlen(s), 0, &r), SPAMD_DONE);
	assert_int_equal(r.symbols_len, 0);
	assert_int_equal(r.spam, 0);
	assert_string_equal(r.score, "3");
	assert_int_equal(parse_all(crlf, strlen(crlf), 0, &r), SPAMD_DONE);
	assert_int_equal(r.spam, 1);
	assert_int_equal(r.symbols_len, 6);
}

static void
test_error_status(void **state)
{
	static const char s[] = "SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n";
	struct spamd_reply r;

	/* decided at the end of the status line, before EOF */
	assert_int_equal(parse_all(s, strlen(s), 0, &r), SPAMD_DONE);
	assert_int_equal(r.code, 76);
	assert_string_equal(r.message, "Bad header line: (Content-Length mismatch)");
}

/* every split: the first part, then the whole */
static void
check_splits(const char *s)
{
	size_t len = strlen(s), cut, i;
	struct spamd_reply whole, r;

	assert_int_equal(parse_all(s, len, 0, &whole), SPAMD_DONE);
	for (cut = 0; cut < len; cut++) {
		spamd_reply_init(&r);
		assert_int_equal(spamd_reply_parse(s, cut, 0, &r), SPAMD_AGAIN);
		assert_int_equal(spamd_reply_parse(s, len, 0, &r), SPAMD_DONE);
		assert_int_equal(r.spam, whole.spam);
		assert_string_equal(r.score, whole.score);
		assert_int_equal(r.symbols_len, whole.symbols_len);
		/* a prefix at EOF is a cut answer */
		spamd_reply_init(&r);
		assert_int_equal(spamd_reply_parse(s, cut, 1, &r), SPAMD_BAD);
		assert_non_null(r.error);
	}
	/* octet by octet, one state */
	spamd_reply_init(&r);
	for (i = 0; i < len; i++)
		assert_int_equal(spamd_reply_parse(s, i, 0, &r), SPAMD_AGAIN);
	assert_int_equal(spamd_reply_parse(s, len, 0, &r), SPAMD_DONE);
	assert_string_equal(r.required, whole.required);
	assert_memory_equal(r.symbols, whole.symbols, whole.symbols_len);
}

static void
test_splits(void **state)
{
	check_splits(spam_reply);
	check_splits(ham_reply);
}

static const char *const garbage[] = {
    "HTTP/1.1 200 OK\r\n",
    "SPAMD/1.1 0\r\n",
    "SPAMD/1.1  0 EX_OK\r\n",
    "SPAMD/x.1 0 EX_OK\r\n",
    "SPAMD/1. 0 EX_OK\r\n",
    "SPAMD/1.1 1234 EX_OK\r\n",
    "SPAMD/1.1 0 EX\x01OK\r\n",
    "SPAMD/1.1 0 EX\xc3\xa9OK\r\n",
    /* no Content-length, no Spam */
    "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\n\r\n",
    /* twice */
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nContent-length: 0\r\nSpam: No ; 1 / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; 1 / 5\r\nSpam: Yes ; 9 / 5\r\n\r\n",
    /* bad values */
    "SPAMD/1.1 0 EX_OK\r\nContent-length: -1\r\nSpam: No ; 1 / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 1x\r\nSpam: No ; 1 / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 65537\r\nSpam: No ; 1 / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: Maybe ; 1 / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: Truex ; 1 / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No 1 / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; 1 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; 1e9 / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; nan / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; 1234567890 / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; 1. / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; 1 / 5 x\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; 1 / \r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nNo colon here\r\nSpam: No ; 1 / 5\r\n\r\n",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nX: a\x7f\r\nSpam: No ; 1 / 5\r\n\r\n",
    /* rule lists */
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 4\r\nSpam: No ; 1 / 5\r\n\r\nA,,B",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 2\r\nSpam: No ; 1 / 5\r\n\r\nA,",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 2\r\nSpam: No ; 1 / 5\r\n\r\n,A",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 3\r\nSpam: No ; 1 / 5\r\n\r\nA B",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 3\r\nSpam: No ; 1 / 5\r\n\r\nA-B",
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 3\r\nSpam: No ; 1 / 5\r\n\r\nA\nB",
    /* octets after the rule list */
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 1\r\nSpam: No ; 1 / 5\r\n\r\nAB",
};

static void
test_garbage(void **state)
{
	struct spamd_reply r;
	size_t i;

	for (i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
		enum spamd_parse p = parse_all(garbage[i], strlen(garbage[i]), 1, &r);
		if (p != SPAMD_BAD)
			fail_msg("garbage %zu accepted: %s", i, garbage[i]);
		assert_non_null(r.error);
	}
}

static void
test_limits(void **state)
{
	static char buf[SPAMD_REPLY_MAX + 64];
	struct spamd_reply r;
	size_t n, i;

	/* a status line that never ends: refused past the limit, before EOF */
	memset(buf, 'A', sizeof(buf));
	memcpy(buf, "SPAMD/1.1 0 ", 12);
	assert_int_equal(parse_all(buf, SPAMD_LINE_MAX, 0, &r), SPAMD_AGAIN);
	assert_int_equal(parse_all(buf, SPAMD_LINE_MAX + 2, 0, &r), SPAMD_BAD);
	/* a long line with its CR LF, still too long */
	memcpy(buf + SPAMD_LINE_MAX + 1, "\r\n", 2);
	assert_int_equal(parse_all(buf, SPAMD_LINE_MAX + 3, 0, &r), SPAMD_BAD);
	/* headers that never end */
	n = (size_t)snprintf(buf, sizeof(buf), "SPAMD/1.1 0 EX_OK\r\n");
	while (n + 10 < SPAMD_HEAD_MAX + 20)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-A: b\r\n");
	assert_int_equal(parse_all(buf, n, 0, &r), SPAMD_BAD);
	/* too many header lines, though short */
	n = (size_t)snprintf(buf, sizeof(buf), "SPAMD/1.1 0 EX_OK\r\n");
	for (i = 0; i <= SPAMD_HEADERS_MAX; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-A: b\r\n");
	n += (size_t)snprintf(
	    buf + n, sizeof(buf) - n, "Content-length: 0\r\nSpam: No ; 1 / 5\r\n\r\n");
	assert_int_equal(parse_all(buf, n, 0, &r), SPAMD_BAD);
	/* a header line past SPAMD_LINE_MAX */
	n = (size_t)snprintf(buf, sizeof(buf), "SPAMD/1.1 0 EX_OK\r\nX-A: ");
	memset(buf + n, 'b', SPAMD_LINE_MAX);
	n += SPAMD_LINE_MAX;
	n += (size_t)snprintf(
	    buf + n, sizeof(buf) - n, "\r\nContent-length: 0\r\nSpam: No ; 1 / 5\r\n\r\n");
	assert_int_equal(parse_all(buf, n, 0, &r), SPAMD_BAD);
	/* the whole answer */
	assert_int_equal(parse_all(buf, SPAMD_REPLY_MAX + 1, 0, &r), SPAMD_BAD);
	/* the longest rule list is fine */
	n = (size_t)snprintf(buf, sizeof(buf),
	    "SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: Yes ; 1 / 5\r\n\r\n",
	    SPAMD_SYMBOLS_MAX);
	for (i = 0; i < SPAMD_SYMBOLS_MAX; i += 8)
		memcpy(buf + n + i, "ABCDEFG,", 8);
	buf[n + SPAMD_SYMBOLS_MAX - 1] = 'H';
	assert_int_equal(parse_all(buf, n + SPAMD_SYMBOLS_MAX, 0, &r), SPAMD_DONE);
	assert_int_equal(r.symbols_len, SPAMD_SYMBOLS_MAX);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_spam),
	    cmocka_unit_test(test_ham),
	    cmocka_unit_test(test_no_rules_and_other_headers),
	    cmocka_unit_test(test_error_status),
	    cmocka_unit_test(test_splits),
	    cmocka_unit_test(test_garbage),
	    cmocka_unit_test(test_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
