/*
 * test_replies.c - the replies table (proxy/replies.c): every entry is a
 * reply a client can take, and reply_line puts it together as RFC 5321 and
 * RFC 3463 say.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "replies.h"

/* Every entry: a code of 2xx..5xx, an enhanced code of the same class,
 * a text without CR or LF, a line that fits 512 octets with a long host
 * name, and "closes" exactly for 421 and the few that end the session. */
static void
test_table_well_formed(void **state)
{
	char host[254], line[1024];

	memset(host, 'h', sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	for (int i = 0; i < REPLY_COUNT; i++) {
		const struct reply *r = &replies[i];
		assert_true(r->code >= 200 && r->code <= 599);
		assert_non_null(r->text);
		assert_null(strpbrk(r->text, "\r\n"));
		if (r->status != NULL)
			assert_int_equal(r->status[0] - '0', r->code / 100);
		if (r->code == 421)
			assert_true(r->closes);
		reply_line(r, host, line, sizeof(line));
		assert_true(strlen(line) <= 510);
	}
}

static void
test_reply_line(void **state)
{
	char line[600];

	assert_string_equal(
	    reply_line(R_BANNER, "mx.test", line, sizeof(line)), "220 mx.test ESMTP");
	assert_string_equal(reply_line(R_BYE, "mx.test", line, sizeof(line)), "221 2.0.0 Bye");
	assert_string_equal(reply_line(R_TIMEOUT, "mx.test", line, sizeof(line)),
	    "421 4.4.2 mx.test Error: timeout exceeded");
	assert_string_equal(reply_line(R_TOO_BIG, "mx.test", line, sizeof(line)),
	    "552 5.3.4 Error: message too big");
	assert_true(R_BYE->closes && R_PIPELINING->closes && !R_OKAY->closes);
}

/* A buffer too small cuts, never overruns. */
static void
test_reply_line_short_buffer(void **state)
{
	char line[8];

	memset(line, 'x', sizeof(line));
	reply_line(R_TIMEOUT, "mx.test", line, 6);
	assert_string_equal(line, "421 4");
	assert_int_equal(line[6], 'x');
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table_well_formed),
	    cmocka_unit_test(test_reply_line),
	    cmocka_unit_test(test_reply_line_short_buffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
