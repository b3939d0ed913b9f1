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
 *
 * The batch (issue 19): with a loop attached, the lines of a loop pass in
 * one write at its end, in order, none before; at once without a loop;
 * at once past the bound, whole lines only; on a pipe no write above
 * PIPE_BUF; written at detach, before a fork (the child writes none of
 * them) and by the signal path; lines a full pipe refused counted and
 * said. Writes to stderr are counted by wrapping write(2) (--wrap=write).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>
#include <limits.h>

#include <cmocka.h>
#include <event2/event.h>

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

/* ---- the batch ---- */

ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);

static int nwrites; /* write(2) calls on stderr */
static size_t wmax; /* the longest */
static int wsplit; /* those that did not end a line */

/* __wrap_write - every write(2) of this program: stderr's counted */
ssize_t
__wrap_write(int fd, const void *buf, size_t n)
{
	if (fd == STDERR_FILENO) {
		nwrites++;
		if (n > wmax)
			wmax = n;
		if (n == 0 || ((const char *)buf)[n - 1] != '\n')
			wsplit++;
	}
	return __real_write(fd, buf, n);
}

static int saved_err = -1;
static FILE *err_file;
static char got[LOG_BATCH_MAX * 5];

/* err_to_file - stderr into a new temporary file, the counts at 0 */
static void
err_to_file(void)
{
	err_file = tmpfile();
	assert_non_null(err_file);
	saved_err = dup(STDERR_FILENO);
	assert_true(saved_err >= 0);
	assert_true(dup2(fileno(err_file), STDERR_FILENO) >= 0);
	nwrites = wsplit = 0;
	wmax = 0;
}

/* written - what stderr's file holds so far, in got (pread: the offset
 * is stderr's too) */
static const char *
written(void)
{
	ssize_t n = pread(fileno(err_file), got, sizeof(got) - 1, 0);

	assert_true(n >= 0);
	got[n] = '\0';
	return got;
}

static void
err_back(void)
{
	assert_true(dup2(saved_err, STDERR_FILENO) >= 0);
	close(saved_err);
	saved_err = -1;
	if (err_file != NULL)
		fclose(err_file);
	err_file = NULL;
}

/* restore - after each batch test, even a failed one: no loop, stderr
 * back, so the next test starts clean */
static int
restore(void **state)
{
	(void)state;
	log_attach(NULL);
	if (saved_err >= 0)
		err_back();
	return 0;
}

/* count - lines in s */
static int
count(const char *s, const char *what)
{
	int n = 0;

	for (const char *p = s; (p = strstr(p, what)) != NULL; p += strlen(what))
		n++;
	return n;
}

/* in_order - each of want[] once in s, in that order */
static void
in_order(const char *s, const char *const *want, size_t n)
{
	const char *at = s;

	for (size_t i = 0; i < n; i++) {
		const char *p = strstr(at, want[i]);
		assert_non_null(p);
		assert_int_equal(count(s, want[i]), 1);
		at = p + strlen(want[i]);
	}
}

static void
test_batch_one_write(void **state)
{
	static const char *const want[] = {
	    "]: info: one\n", "]: warning: two\n", "]: error: three\n"};
	struct event_base *base = event_base_new();

	(void)state;
	assert_non_null(base);
	log_init(CONFIG_LOG_STDERR, 0);
	err_to_file();
	log_attach(base);
	log_info(NULL, "one");
	log_warn(NULL, "two");
	log_err(NULL, "three");
	/* Nothing yet: the pass has not ended. */
	assert_int_equal(nwrites, 0);
	assert_string_equal(written(), "");
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(nwrites, 1);
	assert_int_equal(count(written(), "\n"), 3);
	in_order(got, want, 3);
	/* The next pass's lines are a batch of their own. */
	log_info(NULL, "four");
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(nwrites, 2);
	assert_int_equal(count(written(), "\n"), 4);
	log_attach(NULL);
	assert_int_equal(nwrites, 2);
	assert_int_equal(wsplit, 0);
	err_back();
	event_base_free(base);
}

static void
test_no_loop_at_once(void **state)
{
	(void)state;
	err_to_file();
	log_info(NULL, "alone");
	assert_int_equal(nwrites, 1);
	assert_non_null(strstr(written(), "]: info: alone\n"));
	log_info(NULL, "again");
	assert_int_equal(nwrites, 2);
	err_back();
}

static void
test_detach_writes(void **state)
{
	struct event_base *base = event_base_new();

	(void)state;
	err_to_file();
	log_attach(base);
	log_info(NULL, "waiting");
	assert_int_equal(nwrites, 0);
	/* The loop is left without the pass's end, as loopbreak does. */
	log_attach(NULL);
	assert_int_equal(nwrites, 1);
	assert_non_null(strstr(written(), "]: info: waiting\n"));
	/* Nothing left for the loop, which is no longer ours. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(nwrites, 1);
	log_info(NULL, "after");
	assert_int_equal(nwrites, 2);
	err_back();
	event_base_free(base);
}

static int second_done;

static void
log_second(evutil_socket_t fd, short what, void *arg)
{
	log_info(NULL, "second");
	second_done = 1;
}

static void
log_first(evutil_socket_t fd, short what, void *arg)
{
	log_info(NULL, "first");
	event_active(arg, EV_TIMEOUT, 1);
}

static void
test_order_in_one_pass(void **state)
{
	static const char *const want[] = {": zero\n", ": first\n", ": second\n", ": third\n"};
	struct event_base *base = event_base_new();
	struct event *e1, *e2;

	(void)state;
	e2 = event_new(base, -1, 0, log_second, NULL);
	e1 = event_new(base, -1, 0, log_first, e2);
	err_to_file();
	log_attach(base);
	/* The flush is queued before e1, e2 after both: three batches,
	 * all of them written within the one pass, in order. */
	log_info(NULL, "zero");
	event_active(e1, EV_TIMEOUT, 1);
	event_base_loop(base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
	assert_true(second_done);
	log_info(NULL, "third");
	event_base_loop(base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
	assert_int_equal(count(written(), "\n"), 4);
	in_order(got, want, 4);
	assert_int_equal(wsplit, 0);
	log_attach(NULL);
	err_back();
	event_free(e1);
	event_free(e2);
	event_base_free(base);
}

static void
test_bound(void **state)
{
	char line[1000], key[32];
	struct event_base *base = event_base_new();
	int lines = 3 * LOG_BATCH_MAX / (int)sizeof(line);

	(void)state;
	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	err_to_file();
	log_attach(base);
	for (int i = 0; i < lines; i++)
		log_info(NULL, "n=%05d %s", i, line);
	/* Past the bound, written without waiting for the loop, whole lines
	 * only, none above the bound. */
	assert_true(nwrites >= 2);
	assert_true(nwrites <= lines * (int)sizeof(line) / LOG_BATCH_MAX + 1);
	assert_true(wmax <= LOG_BATCH_MAX);
	assert_int_equal(wsplit, 0);
	event_base_loop(base, EVLOOP_NONBLOCK);
	log_attach(NULL);
	written();
	assert_int_equal(count(got, "\n"), lines);
	/* Every line, each after the one before. */
	for (int i = 1; i < lines; i++) {
		char prev[32];
		snprintf(prev, sizeof(prev), ": n=%05d x", i - 1);
		snprintf(key, sizeof(key), ": n=%05d x", i);
		assert_non_null(strstr(got, prev));
		assert_non_null(strstr(got, key));
		assert_true(strstr(got, prev) < strstr(got, key));
	}
	err_back();
	event_base_free(base);
}

static void
test_pipe_atomic(void **state)
{
	char line[600], buf[32768];
	struct event_base *base = event_base_new();
	int fds[2], lines = 20;
	ssize_t n;

	(void)state;
	memset(line, 'p', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	assert_int_equal(pipe(fds), 0);
	saved_err = dup(STDERR_FILENO);
	assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
	nwrites = wsplit = 0;
	wmax = 0;
	log_attach(base);
	for (int i = 0; i < lines; i++)
		log_info(NULL, "%s", line);
	event_base_loop(base, EVLOOP_NONBLOCK);
	log_attach(NULL);
	/* 12 KB of lines: in writes the pipe keeps whole among writers. */
	assert_true(nwrites >= 3);
	assert_true(wmax <= PIPE_BUF);
	assert_int_equal(wsplit, 0);
	err_back();
	close(fds[1]);
	n = read(fds[0], buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_int_equal(count(buf, "\n"), lines);
	close(fds[0]);
	event_base_free(base);
}

static void
test_fork_writes_first(void **state)
{
	static const char *const want[] = {": before fork\n", ": child\n", ": after fork\n"};
	struct event_base *base = event_base_new();
	pid_t pid;
	int st;

	(void)state;
	log_init(CONFIG_LOG_STDERR, 0);
	err_to_file();
	log_attach(base);
	log_info(NULL, "before fork");
	assert_int_equal(nwrites, 0);
	if ((pid = fork()) == 0) {
		/* Unattached here: at once, and the parent's line not again. */
		log_info(NULL, "child");
		_exit(0);
	}
	assert_true(pid > 0);
	assert_int_equal(nwrites, 1);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	log_info(NULL, "after fork");
	event_base_loop(base, EVLOOP_NONBLOCK);
	log_attach(NULL);
	in_order(written(), want, 3);
	assert_int_equal(count(got, "\n"), 3);
	err_back();
	event_base_free(base);
}

static void
test_signal_path(void **state)
{
	struct event_base *base = event_base_new();

	(void)state;
	err_to_file();
	log_attach(base);
	log_info(NULL, "last words");
	log_flush_signal();
	assert_int_equal(nwrites, 1);
	assert_non_null(strstr(written(), "]: info: last words\n"));
	/* A dying process stops here; this one goes on: the batch was left
	 * as it was, and leaves again at detach. */
	log_attach(NULL);
	assert_int_equal(count(written(), "last words"), 2);
	err_back();
	event_base_free(base);
}

static void
test_lost_said(void **state)
{
	char fill[4096], buf[65536];
	int fds[2];
	ssize_t n;

	(void)state;
	memset(fill, 'f', sizeof(fill));
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
	while (write(fds[1], fill, sizeof(fill)) > 0)
		;
	saved_err = dup(STDERR_FILENO);
	assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
	log_info(NULL, "refused one");
	log_info(NULL, "refused two");
	/* Room again: the next line says what was lost, then itself. */
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	while (read(fds[0], buf, sizeof(buf)) > 0)
		;
	log_info(NULL, "through");
	err_back();
	close(fds[1]);
	n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_null(strstr(buf, ": refused one"));
	assert_null(strstr(buf, ": refused two"));
	assert_non_null(strstr(buf, "]: warning: 2 log line(s) lost: stderr refused them\n"));
	assert_true(strstr(buf, "lost") < strstr(buf, ": through\n"));
}

int
main(void)
{
	/* cmocka reports through stdio's stderr: keep that on the real one
	 * while the tests point descriptor 2 elsewhere. */
	FILE *report = fdopen(dup(STDERR_FILENO), "w");
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
	    cmocka_unit_test_teardown(test_batch_one_write, restore),
	    cmocka_unit_test_teardown(test_no_loop_at_once, restore),
	    cmocka_unit_test_teardown(test_detach_writes, restore),
	    cmocka_unit_test_teardown(test_order_in_one_pass, restore),
	    cmocka_unit_test_teardown(test_bound, restore),
	    cmocka_unit_test_teardown(test_pipe_atomic, restore),
	    cmocka_unit_test_teardown(test_fork_writes_first, restore),
	    cmocka_unit_test_teardown(test_signal_path, restore),
	    cmocka_unit_test_teardown(test_lost_said, restore),
	};

	if (report != NULL) {
		setvbuf(report, NULL, _IONBF, 0);
		stderr = report;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
