/*
 * test_log.c - unit tests for proxy/log.c: the JSON encoder
 * (log_json_escape) and the lines log_kv and log_msg write, as text and
 * as JSON, stderr captured in a temporary file.
 *
 * Plain text kept; quotes, backslashes and control bytes escaped; valid
 * UTF-8 kept, every kind of invalid UTF-8 (lone continuation, overlong,
 * surrogate, past U+10FFFF, truncated) as the text \xNN; a cut never in
 * the middle of an escape; every byte value alone; the members of a
 * log_kv line; a line too long cut with "cut": N.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

static char out[4096];

/* esc - s (len octets) escaped, in out */
static const char *
esc(const char *s, size_t len)
{
	size_t used;

	log_json_escape(out, sizeof(out), s, len, &used);
	assert_int_equal(used, len);
	return out;
}

#define ESC(lit) esc(lit, sizeof(lit) - 1)

static void
test_plain(void **state)
{
	(void)state;
	assert_string_equal(ESC("client=1.2.3.4:25 <a@b.test>"), "client=1.2.3.4:25 <a@b.test>");
	assert_string_equal(ESC(""), "");
}

static void
test_escapes(void **state)
{
	(void)state;
	assert_string_equal(ESC("a\"b\\c"), "a\\\"b\\\\c");
	assert_string_equal(ESC("\n\r\t"), "\\n\\r\\t");
	assert_string_equal(ESC("\x01\x1f\x7f"), "\\u0001\\u001f\\u007f");
	assert_string_equal(esc("a\0b", 3), "a\\u0000b");
	/* log_quote's own escapes stay text: a backslash, then xNN. */
	assert_string_equal(ESC("\\x01"), "\\\\x01");
}

static void
test_utf8_kept(void **state)
{
	(void)state;
	assert_string_equal(ESC("caf\xc3\xa9"), "caf\xc3\xa9");
	assert_string_equal(ESC("\xe2\x82\xac"), "\xe2\x82\xac"); /* U+20AC */
	assert_string_equal(ESC("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80"); /* U+1F600 */
	assert_string_equal(ESC("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf"); /* U+10FFFF */
	assert_string_equal(ESC("\xed\x9f\xbf"), "\xed\x9f\xbf"); /* U+D7FF */
}

static void
test_utf8_invalid(void **state)
{
	(void)state;
	assert_string_equal(ESC("\xff"), "\\\\xff");
	assert_string_equal(ESC("\x80z"), "\\\\x80z"); /* lone continuation */
	assert_string_equal(ESC("\xc0\xaf"), "\\\\xc0\\\\xaf"); /* overlong '/' */
	assert_string_equal(ESC("\xe0\x80\xaf"), "\\\\xe0\\\\x80\\\\xaf");
	assert_string_equal(ESC("\xed\xa0\x80"), "\\\\xed\\\\xa0\\\\x80"); /* surrogate */
	assert_string_equal(ESC("\xf4\x90\x80\x80"), "\\\\xf4\\\\x90\\\\x80\\\\x80");
	assert_string_equal(ESC("\xf5\x80"), "\\\\xf5\\\\x80");
	assert_string_equal(ESC("\xe2\x82"), "\\\\xe2\\\\x82"); /* cut short */
	assert_string_equal(ESC("\xc3\xc3\xa9"), "\\\\xc3\xc3\xa9");
}

static void
test_cut_between_escapes(void **state)
{
	size_t used, n;

	(void)state;
	/* Room for "a" only: the escaped quote does not fit, so it is left out whole. */
	n = log_json_escape(out, 3, "a\"b", 3, &used);
	assert_int_equal(n, 1);
	assert_int_equal(used, 1);
	assert_string_equal(out, "a");
	/* A UTF-8 character is not split either. */
	n = log_json_escape(out, 4, "a\xe2\x82\xac", 4, &used);
	assert_int_equal(used, 1);
	assert_string_equal(out, "a");
	n = log_json_escape(out, 5, "a\xe2\x82\xac", 4, &used);
	assert_int_equal(used, 4);
	assert_int_equal(n, 4);
	/* Size 0 writes nothing, not even the NUL. */
	out[0] = 'X';
	assert_int_equal(log_json_escape(out, 0, "abc", 3, &used), 0);
	assert_int_equal(used, 0);
	assert_int_equal(out[0], 'X');
}

static void
test_every_byte(void **state)
{
	(void)state;
	for (int b = 0; b < 256; b++) {
		char in[3] = {'<', (char)b, '>'};
		const char *e = esc(in, 3);
		size_t len = strlen(e);

		assert_true(e[0] == '<' && e[len - 1] == '>');
		for (size_t i = 1; i + 1 < len; i++) {
			unsigned char c = (unsigned char)e[i];
			/* Nothing raw that JSON forbids or that is not ASCII. */
			assert_true(c >= 0x20 && c < 0x7f);
			if (c == '"')
				assert_int_equal(e[i - 1], '\\');
		}
		if (b >= 0x20 && b < 0x7f && b != '"' && b != '\\')
			assert_int_equal(len, 3);
	}
}

/* capture - what fn wrote to stderr, in out */
static const char *
capture(void (*fn)(void))
{
	FILE *t = tmpfile();
	int saved = dup(STDERR_FILENO);
	size_t n;

	assert_non_null(t);
	assert_true(saved >= 0);
	assert_true(dup2(fileno(t), STDERR_FILENO) >= 0);
	fn();
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	rewind(t);
	n = fread(out, 1, sizeof(out) - 1, t);
	out[n] = '\0';
	fclose(t);
	return out;
}

static void
kv_line(void)
{
	const struct log_kv kv[] = {
	    {"a", "x", LOG_KV_TEXT},
	    {"gone", NULL, LOG_KV_TEXT},
	    {"b", "q r", LOG_KV_QUOTED},
	    {"n", "3", LOG_KV_NUMBER},
	    {"d", "0.250", LOG_KV_NUMBER},
	};

	log_kv(LOG_INFO, "SID.1", "head", kv, sizeof(kv) / sizeof(kv[0]));
}

static void
test_kv_text(void **state)
{
	(void)state;
	log_set_json(0);
	capture(kv_line);
	assert_non_null(strstr(out, " portcullis["));
	assert_non_null(strstr(out, "]: info: id=SID.1 head a=x b=\"q r\" n=3 d=0.250\n"));
}

static void
test_kv_json(void **state)
{
	const char *p;

	(void)state;
	log_set_json(1);
	capture(kv_line);
	log_set_json(0);
	assert_memory_equal(out, "{\"time\":\"", 9);
	/* 2026-11-23T07:46:00.123Z */
	assert_int_equal(out[9 + 10], 'T');
	assert_memory_equal(out + 9 + 19, ".", 1);
	assert_memory_equal(out + 9 + 23, "Z\",\"level\":\"info\",\"pid\":", 24);
	p = strstr(out, ",\"id\":");
	assert_non_null(p);
	assert_string_equal(p,
	    ",\"id\":\"SID.1\",\"msg\":\"head a=x b=\\\"q r\\\" n=3 d=0.250\","
	    "\"a\":\"x\",\"b\":\"q r\",\"n\":3,\"d\":0.250}\n");
}

static void
msg_line(void)
{
	log_msg(LOG_WARNING, NULL, "x \x01 \xff \xc3\xa9 \"y\"");
}

static void
test_msg_json(void **state)
{
	const char *p;

	(void)state;
	log_set_json(1);
	capture(msg_line);
	log_set_json(0);
	assert_non_null(strstr(out, "\"level\":\"warning\""));
	assert_null(strstr(out, "\"id\""));
	p = strstr(out, ",\"msg\":");
	assert_non_null(p);
	assert_string_equal(p, ",\"msg\":\"x \\u0001 \\\\xff \xc3\xa9 \\\"y\\\"\"}\n");
}

static char *big;

static void
long_line(void)
{
	const struct log_kv kv[] = {
	    {"big", big, LOG_KV_TEXT},
	    {"after", "lost", LOG_KV_TEXT},
	};

	log_kv(LOG_INFO, NULL, NULL, kv, 2);
}

static void
test_json_cut(void **state)
{
	static char line[LOG_JSON_MAX + 64];
	size_t n = 3 * LOG_JSON_MAX, kept, cut;
	const char *m, *end;
	FILE *t = tmpfile();
	int saved = dup(STDERR_FILENO);

	(void)state;
	big = malloc(n + 1);
	assert_non_null(big);
	memset(big, 'a', n);
	big[n] = '\0';
	log_set_json(1);
	dup2(fileno(t), STDERR_FILENO);
	long_line();
	dup2(saved, STDERR_FILENO);
	close(saved);
	log_set_json(0);
	rewind(t);
	line[fread(line, 1, sizeof(line) - 1, t)] = '\0';
	fclose(t);
	free(big);
	assert_true(strlen(line) < LOG_JSON_MAX);
	/* msg was cut at LOG_LINE_MAX and says so; big is cut in the JSON. */
	assert_non_null(strstr(line, "...[cut "));
	m = strstr(line, ",\"big\":\"");
	assert_non_null(m);
	m += strlen(",\"big\":\"");
	end = strchr(m, '"');
	assert_non_null(end);
	kept = (size_t)(end - m);
	assert_true(kept > 0 && kept < n);
	assert_null(strstr(line, "\"after\""));
	assert_int_equal(sscanf(end, "\",\"cut\":%zu}", &cut), 1);
	/* Every octet left out is counted: big's rest and "lost". */
	assert_int_equal(cut, n - kept + strlen("lost"));
	assert_string_equal(line + strlen(line) - 2, "}\n");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain),
	    cmocka_unit_test(test_escapes),
	    cmocka_unit_test(test_utf8_kept),
	    cmocka_unit_test(test_utf8_invalid),
	    cmocka_unit_test(test_cut_between_escapes),
	    cmocka_unit_test(test_every_byte),
	    cmocka_unit_test(test_kv_text),
	    cmocka_unit_test(test_kv_json),
	    cmocka_unit_test(test_msg_json),
	    cmocka_unit_test(test_json_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
