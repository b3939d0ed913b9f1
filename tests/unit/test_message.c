/*
 * test_message.c - unit tests for proxy/message.c: the header index filters
 * read (names, unfolded values, raw extents for removal, the body offset),
 * on well-formed, folded, odd and truncated header sections.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "message.h"

static void
parse(struct message *m, const char *text, int whole)
{
	assert_int_equal(message_parse(m, text, strlen(text), whole), 0);
}

static void
test_simple(void **state)
{
	const char *t = "From: a@b\r\nSubject: hi there\r\n\r\nbody\r\n";
	struct message m;

	parse(&m, t, 1);
	assert_int_equal(m.nh, 2);
	assert_string_equal(m.h[0].name, "From");
	assert_string_equal(m.h[0].value, "a@b");
	assert_string_equal(m.h[1].value, "hi there");
	assert_int_equal(m.h[0].off, 0);
	assert_int_equal(m.h[0].len, strlen("From: a@b\r\n"));
	assert_int_equal(m.h[1].off, strlen("From: a@b\r\n"));
	assert_string_equal(t + m.body_off, "body\r\n");
	message_free(&m);
}

static void
test_folded(void **state)
{
	const char *t =
	    "Subject: one\r\n two\r\n\tthree\r\nX-Spam-Status: Yes,\r\n  score=9\r\n\r\nb";
	struct message m;

	parse(&m, t, 1);
	assert_int_equal(m.nh, 2);
	/* Unfolding removes the CR LF, keeps the blank (RFC 5322 §2.2.3). */
	assert_string_equal(m.h[0].value, "one two\tthree");
	assert_int_equal(m.h[0].len, strlen("Subject: one\r\n two\r\n\tthree\r\n"));
	assert_string_equal(m.h[1].value, "Yes,  score=9");
	assert_string_equal(t + m.body_off, "b");
	message_free(&m);
}

static void
test_lookup_and_remove(void **state)
{
	const char *t = "Received: 1\r\nreceived: 2\r\nX-Spam-Flag: YES\r\nRECEIVED: 3\r\n\r\n";
	struct message m;

	parse(&m, t, 1);
	assert_string_equal(message_header(&m, "RECEIVED", 0), "1");
	assert_string_equal(message_header(&m, "Received", 1), "2");
	assert_string_equal(message_header(&m, "received", 2), "3");
	assert_null(message_header(&m, "received", 3));
	assert_null(message_header(&m, "Subject", 0));
	assert_int_equal(message_remove(&m, "x-spam-flag"), 1);
	assert_true(m.h[2].removed);
	assert_false(m.h[0].removed);
	assert_int_equal(message_remove(&m, "nothing"), 0);
	message_free(&m);
}

static void
test_odd_shapes(void **state)
{
	struct message m;

	/* No header at all: the body starts at once. */
	parse(&m, "just text\r\nmore\r\n", 1);
	assert_int_equal(m.nh, 0);
	assert_int_equal(m.body_off, 0);
	message_free(&m);
	/* A blank first line: empty header section. */
	parse(&m, "\r\nbody\r\n", 1);
	assert_int_equal(m.nh, 0);
	assert_int_equal(m.body_off, 2);
	message_free(&m);
	/* No blank line: the first non-field line starts the body. */
	parse(&m, "A: 1\r\nnot a field\r\n", 1);
	assert_int_equal(m.nh, 1);
	assert_int_equal(m.body_off, strlen("A: 1\r\n"));
	message_free(&m);
	/* Obsolete "Name :" form, empty value, a leading continuation line. */
	parse(&m, "Old : x\r\nEmpty:\r\n\r\n", 1);
	assert_int_equal(m.nh, 2);
	assert_string_equal(m.h[0].name, "Old");
	assert_string_equal(m.h[0].value, "x");
	assert_string_equal(m.h[1].value, "");
	message_free(&m);
	parse(&m, " folded first\r\nA: b\r\n\r\n", 1);
	assert_int_equal(m.nh, 0);
	assert_int_equal(m.body_off, 0);
	message_free(&m);
	/* Only headers, no body. */
	parse(&m, "A: 1\r\nB: 2\r\n", 1);
	assert_int_equal(m.nh, 2);
	assert_int_equal(m.body_off, strlen("A: 1\r\nB: 2\r\n"));
	message_free(&m);
	/* Empty message. */
	parse(&m, "", 1);
	assert_int_equal(m.nh, 0);
	assert_int_equal(m.body_off, 0);
	message_free(&m);
	/* Bytes that are not field names. */
	parse(&m, "Bad Name: x\r\n\r\n", 1);
	assert_int_equal(m.nh, 0);
	message_free(&m);
}

static void
test_truncated(void **state)
{
	struct message m;

	/* Cut mid-line at max_header_size: the section goes on past what was
	 * read, and the caller is told (it refuses the message). */
	parse(&m, "A: 1\r\nB: tr", 0);
	assert_int_equal(m.nh, 1);
	assert_true(m.truncated);
	message_free(&m);
	/* Cut right after a complete field: still inside the section. */
	parse(&m, "A: 1\r\nB: 2\r\n", 0);
	assert_true(m.truncated);
	message_free(&m);
	/* The section ends within what was read: not truncated. */
	parse(&m, "A: 1\r\n\r\nbo", 0);
	assert_false(m.truncated);
	message_free(&m);
	parse(&m, "A: 1\r\nnot a field\r\nbo", 0);
	assert_false(m.truncated);
	assert_int_equal(m.body_off, strlen("A: 1\r\n"));
	message_free(&m);
	/* The same bytes as a whole message: the last line counts. */
	parse(&m, "A: 1\r\nB: tr", 1);
	assert_int_equal(m.nh, 2);
	assert_false(m.truncated);
	assert_string_equal(m.h[1].value, "tr");
	message_free(&m);
}

/* Thousands of fields of one name, and one field folded over thousands of
 * lines: every lookup by name answers, in order, and nothing is quadratic
 * (the folded value grows by doubling; lookups are a binary search). */
static void
test_many_fields(void **state)
{
	enum { N = 30000 };
	size_t cap = (size_t)N * 24 + 64, o = 0;
	char *t = malloc(cap);
	struct message m;

	assert_non_null(t);
	for (int i = 0; i < N; i++)
		o += (size_t)snprintf(t + o, cap - o, "%s: %d\r\n", i % 2 ? "Subject" : "x-a", i);
	o += (size_t)snprintf(t + o, cap - o, "Fold: a\r\n");
	for (int i = 0; i < N; i++)
		o += (size_t)snprintf(t + o, cap - o, " b\r\n");
	snprintf(t + o, cap - o, "\r\nbody\r\n");
	parse(&m, t, 1);
	assert_int_equal(m.nh, N + 1);
	for (size_t n = 0; n < N / 2; n++) {
		char want[16];
		snprintf(want, sizeof(want), "%zu", 2 * n + 1);
		assert_string_equal(message_header(&m, "SUBJECT", n), want);
	}
	assert_null(message_header(&m, "subject", N / 2));
	assert_string_equal(message_header(&m, "X-A", 0), "0");
	assert_null(message_header(&m, "x-b", 0));
	assert_int_equal(strlen(message_header(&m, "fold", 0)), 1 + 2 * N);
	assert_int_equal(message_remove(&m, "subject"), N / 2);
	assert_true(m.h[1].removed && !m.h[0].removed);
	message_free(&m);
	free(t);
}

static void
test_lf_only(void **state)
{
	struct message m;

	parse(&m, "A: 1\nB: 2\n x\n\nbody", 1);
	assert_int_equal(m.nh, 2);
	assert_string_equal(m.h[1].value, "2 x");
	assert_string_equal("A: 1\nB: 2\n x\n\nbody" + m.body_off, "body");
	message_free(&m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_simple),
	    cmocka_unit_test(test_folded),
	    cmocka_unit_test(test_lookup_and_remove),
	    cmocka_unit_test(test_odd_shapes),
	    cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_many_fields),
	    cmocka_unit_test(test_lf_only),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
