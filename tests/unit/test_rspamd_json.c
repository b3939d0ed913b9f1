/*
 * test_rspamd_json.c - unit tests for plugins/rspamd_json.h, the bounded
 * JSON reader the rspamd plugin reads /checkv2 replies with.
 *
 * A real rspamd reply read back (action, score, symbols, milter), the
 * scalar grammar (numbers, escapes, surrogate pairs to UTF-8), every kind
 * of malformed text refused with an offset, the depth and value bounds,
 * and every prefix of a valid reply refused (a reply cut anywhere is never
 * half-read).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/rspamd_json.h"

static const char reply[] =
    "{\"is_skipped\": false, \"score\": 3.5, \"required_score\": 15.0, \"action\": \"no "
    "action\", \"symbols\": {\"MISSING_MID\": {\"name\": \"MISSING_MID\", \"score\": 2.5, "
    "\"options\": [\"0\"]}, \"MISSING_DATE\": {\"score\": 1.0}}, \"messages\": {}, "
    "\"milter\": {\"remove_headers\": {\"X-Spam\": 0}, \"add_headers\": {\"X-A\": "
    "{\"value\": \"v\", \"order\": -1}}}, \"time_real\": 1.2e-3, \"n\": null, \"t\": true}";

static void
test_reply(void **state)
{
	struct rj_doc d;
	const struct rj_value *r, *s;
	double x = -1;

	(void)state;
	r = rj_parse(&d, reply, strlen(reply));
	assert_non_null(r);
	assert_string_equal(rj_str(rj_get(r, "action")), "no action");
	assert_int_equal(rj_num(rj_get(r, "score"), &x), 0);
	assert_true(x == 3.5);
	s = rj_get(r, "symbols");
	assert_int_equal(s->type, RJ_OBJECT);
	assert_int_equal(s->count, 2);
	assert_string_equal(s->first->key, "MISSING_MID");
	assert_int_equal(rj_num(rj_get(&s->first->v, "score"), &x), 0);
	assert_true(x == 2.5);
	assert_int_equal(rj_get(rj_get(&s->first->v, "options"), "x") == NULL, 1);
	assert_int_equal(rj_get(rj_get(r, "milter"), "remove_headers")->first->v.num, 0);
	assert_int_equal(rj_num(rj_get(r, "time_real"), &x), 0);
	assert_true(x > 0.0011 && x < 0.0013);
	assert_int_equal(rj_get(r, "n")->type, RJ_NULL);
	assert_int_equal(rj_get(r, "t")->type, RJ_TRUE);
	assert_null(rj_get(r, "absent"));
	assert_null(rj_str(rj_get(r, "score")));
	assert_int_equal(rj_num(rj_get(r, "action"), &x), -1);
	rj_doc_free(&d);
}

static void
test_strings(void **state)
{
	static const char text[] = "[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", \"\\u00e9\\u20ac\", "
	                           "\"\\ud83d\\ude00\", \"\"]";
	struct rj_doc d;
	const struct rj_value *r;
	const struct rj_member *m;

	(void)state;
	r = rj_parse(&d, text, strlen(text));
	assert_non_null(r);
	m = r->first;
	assert_string_equal(m->v.str, "a\"b\\c/d\b\f\n\r\t");
	m = m->next;
	assert_string_equal(m->v.str, "\xc3\xa9\xe2\x82\xac");
	m = m->next;
	assert_string_equal(m->v.str, "\xf0\x9f\x98\x80");
	assert_int_equal(m->v.len, 4);
	m = m->next;
	assert_string_equal(m->v.str, "");
	rj_doc_free(&d);
}

static void
test_numbers(void **state)
{
	static const struct {
		const char *text;
		double want;
	} good[] = {{"0", 0}, {"-0", 0}, {"12", 12}, {"-1.5", -1.5}, {"1e2", 100}, {"2E-1", 0.2},
	    {"1.25e+1", 12.5}};
	static const char *const bad[] = {"01", "+1", ".5", "1.", "1e", "1e+", "-", "0x10", "1e999",
	    "NaN", "Infinity", "--1", "1.2.3"};
	struct rj_doc d;
	const struct rj_value *r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		r = rj_parse(&d, good[i].text, strlen(good[i].text));
		assert_non_null(r);
		assert_true(r->num == good[i].want);
		rj_doc_free(&d);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = rj_parse(&d, bad[i], strlen(bad[i]));
		if (r != NULL)
			fail_msg("accepted %s", bad[i]);
		assert_true(d.err[0] != '\0');
		rj_doc_free(&d);
	}
}

static void
test_malformed(void **state)
{
	static const char *const bad[] = {"", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}",
	    "{a:1}", "[1 2]", "tru", "nul", "\"abc", "\"a\x01\"", "\"\\x\"", "\"\\u12\"",
	    "\"\\u12g4\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\u0000\"",
	    "{} {}", "[] x", "{\"a\":}", "[,1]", "'a'"};
	struct rj_doc d;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (rj_parse(&d, bad[i], strlen(bad[i])) != NULL)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_non_null(strstr(d.err, "at offset"));
		rj_doc_free(&d);
	}
	/* a NUL inside the text is no character JSON allows */
	if (rj_parse(&d, "[1,\0 2]", 7) != NULL)
		fail_msg("accepted a NUL");
	rj_doc_free(&d);
}

static void
test_bounds(void **state)
{
	char *deep, *wide;
	size_t i, n;
	struct rj_doc d;

	(void)state;
	/* RJ_DEPTH_MAX nested arrays are fine; one more is not */
	deep = malloc(2 * (RJ_DEPTH_MAX + 2));
	for (n = RJ_DEPTH_MAX + 1, i = 0; i < n; i++) {
		deep[i] = '[';
		deep[2 * n - 1 - i] = ']';
	}
	assert_non_null(rj_parse(&d, deep, 2 * n));
	rj_doc_free(&d);
	for (n = RJ_DEPTH_MAX + 2, i = 0; i < n; i++) {
		deep[i] = '[';
		deep[2 * n - 1 - i] = ']';
	}
	assert_null(rj_parse(&d, deep, 2 * n));
	assert_non_null(strstr(d.err, "nested too deep"));
	rj_doc_free(&d);
	free(deep);
	/* more than RJ_NODES_MAX values */
	n = RJ_NODES_MAX + 1;
	wide = malloc(2 * n + 2);
	wide[0] = '[';
	for (i = 0; i < n; i++) {
		wide[1 + 2 * i] = '0';
		wide[2 + 2 * i] = ',';
	}
	wide[2 * n] = ']';
	assert_null(rj_parse(&d, wide, 2 * n + 1));
	assert_non_null(strstr(d.err, "too many values"));
	rj_doc_free(&d);
	free(wide);
}

static void
test_every_prefix_refused(void **state)
{
	struct rj_doc d;
	size_t n;

	(void)state;
	for (n = 0; n < strlen(reply); n++) {
		if (rj_parse(&d, reply, n) != NULL)
			fail_msg("accepted the first %zu octets", n);
		rj_doc_free(&d);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reply),
	    cmocka_unit_test(test_strings),
	    cmocka_unit_test(test_numbers),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_every_prefix_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
