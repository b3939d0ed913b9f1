/*
 * test_verdict.c - unit tests for proxy/verdict.c: the reply line a verdict
 * becomes, defaults per action and stage, and every bad reply shape a
 * filter could hand us (DESIGN.md §3).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "verdict.h"

static void
check_ok(enum pc_action a, enum pc_stage st, const char *given, const char *want)
{
	char out[VERDICT_LINE_MAX];
	const char *why = "unset";

	if (verdict_reply(a, st, given, "mx.test", out, sizeof(out), &why) != 0)
		fail_msg(
		    "refused %s \"%s\": %s", verdict_action_name(a), given ? given : "(null)", why);
	if (strcmp(out, want) != 0)
		fail_msg("%s \"%s\": got \"%s\", want \"%s\"", verdict_action_name(a),
		    given ? given : "(null)", out, want);
	assert_null(why);
}

static void
check_bad(enum pc_action a, const char *given)
{
	char out[VERDICT_LINE_MAX];
	const char *why = NULL;

	if (verdict_reply(a, PC_STAGE_MAIL, given, "mx.test", out, sizeof(out), &why) == 0)
		fail_msg("accepted %s \"%s\" as \"%s\"", verdict_action_name(a), given, out);
	assert_non_null(why);
}

static void
test_defaults(void **state)
{
	check_ok(PC_REJECT, PC_STAGE_MAIL, NULL, "550 5.7.1 Rejected by policy");
	check_ok(PC_REJECT, PC_STAGE_RCPT, "", "550 5.7.1 Rejected by policy");
	check_ok(PC_REJECT, PC_STAGE_CONNECT, NULL, "554 5.7.1 Rejected by policy");
	check_ok(PC_TEMPFAIL, PC_STAGE_DATA, NULL, "451 4.7.1 Try again later");
	check_ok(PC_TEMPFAIL, PC_STAGE_CONNECT, NULL, "421 4.7.1 mx.test Try again later");
	check_ok(PC_DISCONNECT, PC_STAGE_HELO, NULL, "421 4.7.0 mx.test Closing connection");
}

static void
test_partial_replies(void **state)
{
	check_ok(PC_REJECT, PC_STAGE_MAIL, "554 5.7.1 go away", "554 5.7.1 go away");
	check_ok(PC_REJECT, PC_STAGE_MAIL, "5.7.9 go away", "550 5.7.9 go away");
	check_ok(PC_REJECT, PC_STAGE_MAIL, "go away", "550 5.7.1 go away");
	check_ok(PC_REJECT, PC_STAGE_MAIL, "553", "553 5.7.1 Rejected by policy");
	check_ok(PC_REJECT, PC_STAGE_MAIL, "553 nope", "553 5.7.1 nope");
	check_ok(PC_REJECT, PC_STAGE_MAIL, "553 5.1.8", "553 5.1.8 Rejected by policy");
	check_ok(PC_TEMPFAIL, PC_STAGE_RCPT, "450 4.2.0 greylisted", "450 4.2.0 greylisted");
	check_ok(PC_TEMPFAIL, PC_STAGE_RCPT, "greylisted", "451 4.7.1 greylisted");
	check_ok(PC_DISCONNECT, PC_STAGE_MAIL, "421 4.7.0 bye now", "421 4.7.0 bye now");
	/* RFC 5321 §3.8: a 421 we make up names the host. */
	check_ok(PC_DISCONNECT, PC_STAGE_MAIL, "bye now", "421 4.7.0 mx.test bye now");
	check_ok(PC_TEMPFAIL, PC_STAGE_CONNECT, "busy", "421 4.7.1 mx.test busy");
	/* A number that is not a code is text. */
	check_ok(PC_REJECT, PC_STAGE_MAIL, "5 apples", "550 5.7.1 5 apples");
	/* UTF-8 text passes. */
	check_ok(PC_REJECT, PC_STAGE_MAIL, "nein \xc3\xa4", "550 5.7.1 nein \xc3\xa4");
}

static void
test_no_reply_actions(void **state)
{
	char out[VERDICT_LINE_MAX] = "x";
	const char *why = "unset";

	/* continue, accept, drop and fail send nothing of their own: any text
	 * is ignored, even a bad one. */
	assert_int_equal(
	    verdict_reply(PC_DROP, PC_STAGE_MAIL, "250\r\nMAIL", "h", out, sizeof(out), &why), 0);
	assert_string_equal(out, "");
	assert_int_equal(
	    verdict_reply(PC_ACCEPT, PC_STAGE_MAIL, NULL, "h", out, sizeof(out), &why), 0);
	assert_int_equal(
	    verdict_reply(PC_CONTINUE, PC_STAGE_MAIL, NULL, "h", out, sizeof(out), &why), 0);
}

static void
test_bad_shapes(void **state)
{
	char big[600];

	/* the code's class */
	check_bad(PC_REJECT, "250 ok");
	check_bad(PC_REJECT, "451 4.7.1 not a reject");
	check_bad(PC_TEMPFAIL, "550 5.7.1 not a tempfail");
	check_bad(PC_TEMPFAIL, "354 go ahead");
	check_bad(PC_DISCONNECT, "450 4.7.0 not 421");
	check_bad(PC_DISCONNECT, "554 5.7.0 not 421");
	/* impossible codes */
	check_bad(PC_REJECT, "560 5.7.1 second digit");
	check_bad(PC_REJECT, "55 short");
	check_bad(PC_REJECT, "5500 long");
	check_bad(PC_REJECT, "55x 5.7.1 letters");
	/* enhanced code class and shape */
	check_bad(PC_REJECT, "550 4.7.1 mismatched");
	check_bad(PC_TEMPFAIL, "451 5.7.1 mismatched");
	check_bad(PC_REJECT, "5.7 short");
	check_bad(PC_REJECT, "550 5.7. empty");
	check_bad(PC_REJECT, "550 5.1234.1 long subject");
	check_bad(PC_REJECT, "550 5.7.1234 long detail");
	check_bad(PC_REJECT, "550 3.7.1 class 3");
	check_bad(PC_REJECT, "4.7.1 wrong class without code");
	/* injection */
	check_bad(PC_REJECT, "550 5.7.1 a\r\n250 2.0.0 Ok");
	check_bad(PC_REJECT, "a\nb");
	check_bad(PC_REJECT, "a\rb");
	check_bad(PC_REJECT, "tab\there");
	check_bad(PC_REJECT, "bell\x07");
	check_bad(PC_REJECT, "del\x7f");
	/* length */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	check_bad(PC_REJECT, big);
	big[510] = '\0'; /* fits alone, not with the default code in front */
	check_bad(PC_REJECT, big);
}

/* The longest text that still fits with the default code in front. */
static void
test_long_ok(void **state)
{
	char big[501], want[600], out[VERDICT_LINE_MAX];
	const char *why;

	memset(big, 'a', 500);
	big[500] = '\0';
	snprintf(want, sizeof(want), "550 5.7.1 %s", big);
	assert_int_equal(
	    verdict_reply(PC_REJECT, PC_STAGE_MAIL, big, "h", out, sizeof(out), &why), 0);
	assert_string_equal(out, want);
}

static void
test_names(void **state)
{
	assert_string_equal(verdict_action_name(PC_REJECT), "reject");
	assert_string_equal(verdict_action_name(99), "invalid");
	assert_string_equal(verdict_action_name(-1), "invalid");
	assert_string_equal(verdict_stage_name(PC_STAGE_RCPT), "rcpt");
	assert_string_equal(verdict_stage_name(42), "none");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_partial_replies),
	    cmocka_unit_test(test_no_reply_actions),
	    cmocka_unit_test(test_bad_shapes),
	    cmocka_unit_test(test_long_ok),
	    cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
