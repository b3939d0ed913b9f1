/*
 * test_edit.c - unit tests for the ABI 2 stores: the message renderer and
 * the changes it applies (proxy/edit.c), the envelope changes, the address
 * split, the score sets and their summary (proxy/score.c), and the
 * per-call arena (proxy/chainhost.c). Every renderer test builds a spool
 * as the DATA framer leaves it (CR LF, dot-stuffed) and compares the bytes
 * that would go to the backend.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "chain.h"
#include "log.h"

/* One message under test: its spool, index and changes. */
struct fixture {
	struct spool sp;
	struct message m;
	struct edit e;
	struct evbuffer *added;
	char out[65536];
};

static struct fixture fx;

static void
load(const char *msg)
{
	memset(&fx, 0, sizeof(fx));
	assert_int_equal(spool_open(&fx.sp, 1 << 20, "/tmp"), 0);
	spool_write(&fx.sp, msg, strlen(msg));
	assert_int_equal(message_parse(&fx.m, msg, strlen(msg), 1), 0);
}

static void
unload(void)
{
	edit_free(&fx.e);
	message_free(&fx.m);
	spool_close(&fx.sp);
	if (fx.added != NULL)
		evbuffer_free(fx.added);
}

/* render - edit_emit into fx.out, as a string */
static const char *
render(void)
{
	struct evbuffer *out = evbuffer_new();
	size_t len;

	assert_int_equal(edit_emit(&fx.e, fx.added, &fx.sp, &fx.m, out), 0);
	len = evbuffer_get_length(out);
	assert_true(len < sizeof(fx.out));
	evbuffer_remove(out, fx.out, len);
	fx.out[len] = '\0';
	evbuffer_free(out);
	return fx.out;
}

static void
add(const char *line)
{
	if (fx.added == NULL)
		fx.added = evbuffer_new();
	evbuffer_add(fx.added, line, strlen(line));
}

#define MSG                                                                                        \
	"From: a@x\r\nSubject: hi\r\nReceived: one\r\n\tfolded\r\nReceived: two\r\n\r\nbody\r\n..dot\r\n"

static void
test_unchanged(void **state)
{
	load(MSG);
	assert_false(edit_changed(&fx.e, NULL, &fx.m));
	assert_string_equal(render(), MSG);
	unload();
}

/* What backend_send_message sent before ABI 2: added, then the fields
 * not removed, then the rest. */
static void
test_add_and_remove_as_before(void **state)
{
	load(MSG);
	add("X-A: 1\r\n");
	add("X-B: 2\r\n");
	assert_int_equal(message_remove(&fx.m, "received"), 2);
	assert_true(edit_changed(&fx.e, fx.added, &fx.m));
	assert_string_equal(
	    render(), "X-A: 1\r\nX-B: 2\r\nFrom: a@x\r\nSubject: hi\r\n\r\nbody\r\n..dot\r\n");
	/* the added buffer is copied, not drained: rendering twice is the same */
	assert_string_equal(
	    render(), "X-A: 1\r\nX-B: 2\r\nFrom: a@x\r\nSubject: hi\r\n\r\nbody\r\n..dot\r\n");
	unload();
}

static void
test_change_nth(void **state)
{
	load(MSG);
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "RECEIVED", 1, "new two"), 0);
	assert_string_equal(render(),
	    "From: a@x\r\nSubject: hi\r\nReceived: one\r\n\tfolded\r\nReceived: new two\r\n\r\nbody\r\n..dot\r\n");
	unload();
}

static void
test_change_folded_and_delete(void **state)
{
	load(MSG);
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "Received", 0, "flat"), 0);
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "subject", 0, NULL), 0);
	assert_string_equal(
	    render(), "From: a@x\r\nReceived: flat\r\nReceived: two\r\n\r\nbody\r\n..dot\r\n");
	unload();
}

static void
test_change_missing_is_error(void **state)
{
	load(MSG);
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "Received", 2, "x"), -1);
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "X-None", 0, "x"), -1);
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "Subject", 0, "bad\r\nInjected: 1"), -1);
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "Bad Name", 0, "x"), -1);
	assert_false(edit_changed(&fx.e, NULL, &fx.m));
	assert_string_equal(render(), MSG);
	unload();
}

/* A folded value (a milter's DKIM-Signature) reaches the backend with
 * CR LF folding; a line end that would start a field or end the header
 * section, a blank-only line and an over-long line are refused. */
static void
test_folded_values(void **state)
{
	char *line;
	char longline[1100];

	(void)state;
	assert_true(edit_header_ok("DKIM-Signature", "v=1; a=rsa-sha256;\n\tb=abc"));
	assert_true(edit_header_ok("X-A", "one\r\n two"));
	assert_false(edit_header_ok("X-A", "one\nInjected: 1"));
	assert_false(edit_header_ok("X-A", "one\r\n\r\nbody"));
	assert_false(edit_header_ok("X-A", "one\n \t\n two"));
	assert_false(edit_header_ok("X-A", "one\n "));
	assert_false(edit_header_ok("X-A", "one\n"));
	assert_false(edit_header_ok("X-A", "one\rtwo"));
	memset(longline, 'x', sizeof(longline) - 1);
	longline[sizeof(longline) - 1] = '\0';
	assert_false(edit_header_ok("X-A", longline));
	longline[900] = '\n';
	longline[901] = '\t';
	assert_true(edit_header_ok("X-A", longline));
	line = edit_header_line("X-A", "one\n\ttwo\r\n three");
	assert_non_null(line);
	assert_string_equal(line, "X-A: one\r\n\ttwo\r\n three\r\n");
	free(line);
	load(MSG);
	assert_int_equal(edit_insert_header(&fx.e, 0, "X-Folded", "a;\n\tb"), 0);
	assert_non_null(strstr(render(), "X-Folded: a;\r\n\tb\r\n"));
	unload();
}

static void
test_change_last_wins_over_remove(void **state)
{
	load(MSG);
	message_remove(&fx.m, "Received");
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "Received", 0, "back"), 0);
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "Received", 0, "again"), 0);
	assert_string_equal(
	    render(), "From: a@x\r\nSubject: hi\r\nReceived: again\r\n\r\nbody\r\n..dot\r\n");
	unload();
}

static void
test_insert_positions(void **state)
{
	load(MSG);
	add("X-Added: 1\r\n");
	assert_int_equal(edit_insert_header(&fx.e, 0, "X-First", "a"), 0);
	assert_int_equal(edit_insert_header(&fx.e, 0, "X-First2", "b"), 0);
	assert_int_equal(edit_insert_header(&fx.e, 2, "X-Mid", "c"), 0);
	assert_int_equal(edit_insert_header(&fx.e, 4, "X-End", "d"), 0);
	assert_int_equal(edit_insert_header(&fx.e, 99, "X-End2", "e"), 0);
	assert_string_equal(render(),
	    "X-Added: 1\r\nX-First: a\r\nX-First2: b\r\nFrom: a@x\r\nSubject: hi\r\nX-Mid: c\r\n"
	    "Received: one\r\n\tfolded\r\nReceived: two\r\nX-End: d\r\nX-End2: e\r\n\r\nbody\r\n..dot\r\n");
	unload();
}

static void
test_insert_before_removed(void **state)
{
	load(MSG);
	message_remove(&fx.m, "subject");
	assert_int_equal(edit_insert_header(&fx.e, 1, "Subject", "replaced"), 0);
	assert_string_equal(render(),
	    "From: a@x\r\nSubject: replaced\r\nReceived: one\r\n\tfolded\r\nReceived: two\r\n\r\nbody\r\n..dot\r\n");
	unload();
}

static void
test_no_header_section(void **state)
{
	/* The first line is no field: the body starts at once. */
	load("just text\r\n.\r\n");
	assert_int_equal(fx.m.nh, 0);
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "Subject", 0, "x"), -1);
	assert_int_equal(edit_insert_header(&fx.e, 0, "X-New", "1"), 0);
	assert_string_equal(render(), "X-New: 1\r\njust text\r\n.\r\n");
	unload();
}

static void
test_no_body(void **state)
{
	load("Subject: only\r\n");
	assert_int_equal(edit_insert_header(&fx.e, 5, "X-New", "1"), 0);
	assert_string_equal(render(), "Subject: only\r\nX-New: 1\r\n");
	unload();
	load("Subject: only\r\n\r\n");
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "Subject", 0, "new"), 0);
	assert_string_equal(render(), "Subject: new\r\n\r\n");
	unload();
}

static void
replace(const char *text)
{
	assert_int_equal(edit_body_begin(&fx.e, 1 << 20, "/tmp", 0), 0);
	assert_int_equal(edit_body_write(&fx.e, text, strlen(text)), 0);
	assert_int_equal(edit_body_end(&fx.e), 0);
}

static void
test_body_replace_dots_and_lf(void **state)
{
	load(MSG);
	replace(".leading\nmiddle\r\n..two\n.\nlast");
	assert_string_equal(render(),
	    "From: a@x\r\nSubject: hi\r\nReceived: one\r\n\tfolded\r\nReceived: two\r\n\r\n"
	    "..leading\r\nmiddle\r\n...two\r\n..\r\nlast\r\n");
	unload();
}

static void
test_body_replace_split_writes(void **state)
{
	/* CR and LF in different writes, a dot at a write's start mid-line */
	load("Subject: s\r\n\r\nold\r\n");
	assert_int_equal(edit_body_begin(&fx.e, 16, "/tmp", 0), 0); /* spills to a file */
	assert_int_equal(edit_body_write(&fx.e, "a\r", 2), 0);
	assert_int_equal(edit_body_write(&fx.e, "\n.b", 3), 0);
	assert_int_equal(edit_body_write(&fx.e, ".c\r\n", 4), 0);
	for (int i = 0; i < 10; i++)
		assert_int_equal(edit_body_write(&fx.e, "0123456789\n", 11), 0);
	assert_int_equal(edit_body_end(&fx.e), 0);
	assert_true(fx.e.body.fd >= 0);
	const char *got = render();
	assert_true(strncmp(got, "Subject: s\r\n\r\na\r\n..b.c\r\n0123456789\r\n", 36) == 0);
	assert_int_equal(strlen(got), 14 + 3 + 7 + 10 * 12);
	unload();
}

static void
test_body_replace_empty(void **state)
{
	load(MSG);
	replace("");
	assert_string_equal(render(),
	    "From: a@x\r\nSubject: hi\r\nReceived: one\r\n\tfolded\r\nReceived: two\r\n\r\n");
	unload();
	/* no blank line in the message: one is added before the new body */
	load("Subject: only\r\n");
	replace("new\n");
	assert_string_equal(render(), "Subject: only\r\n\r\nnew\r\n");
	unload();
	load("not a field\r\n");
	replace("new\n");
	assert_string_equal(render(), "\r\nnew\r\n");
	unload();
}

static void
test_body_replace_bare_cr_refused(void **state)
{
	load(MSG);
	assert_int_equal(edit_body_begin(&fx.e, 1 << 20, "/tmp", 0), 0);
	assert_int_equal(edit_body_write(&fx.e, "a\rb\n", 4), -1);
	assert_int_equal(edit_body_write(&fx.e, "more\n", 5), -1);
	assert_int_equal(edit_body_end(&fx.e), -1);
	assert_string_equal(render(), MSG); /* the received body */
	unload();
	load(MSG);
	assert_int_equal(edit_body_begin(&fx.e, 1 << 20, "/tmp", 0), 0);
	assert_int_equal(edit_body_write(&fx.e, "end\r", 4), 0);
	assert_int_equal(edit_body_end(&fx.e), -1); /* a CR at the very end */
	assert_int_equal(edit_body_begin(&fx.e, 1 << 20, "/tmp", 0), 0);
	assert_int_equal(edit_body_write(&fx.e, "nul\0", 4), -1);
	assert_string_equal(render(), MSG);
	unload();
}

/* A replacement may not be larger than max_message_size (RFC 1870 count:
 * CR LF counted, stuffing dots not), nor hold a line over 998 octets:
 * either fails it, and the received body is sent. */
static void
test_body_replace_limits(void **state)
{
	char line[1001];

	load(MSG);
	assert_int_equal(edit_body_begin(&fx.e, 1 << 20, "/tmp", 10), 0);
	assert_int_equal(edit_body_write(&fx.e, ".1234567\n", 9), 0); /* 10 octets: fits */
	assert_int_equal(edit_body_write(&fx.e, "x", 1), -1);
	assert_int_equal(edit_body_end(&fx.e), -1);
	assert_string_equal(render(), MSG);
	unload();
	memset(line, 'a', sizeof(line));
	load(MSG);
	assert_int_equal(edit_body_begin(&fx.e, 1 << 20, "/tmp", 0), 0);
	assert_int_equal(edit_body_write(&fx.e, line, 998), 0);
	assert_int_equal(edit_body_write(&fx.e, "\n", 1), 0); /* 998 and CR LF: fits */
	assert_int_equal(edit_body_write(&fx.e, line, 999), -1);
	assert_string_equal(render(), MSG);
	unload();
}

static void
test_body_unended_not_used(void **state)
{
	load(MSG);
	assert_int_equal(edit_body_begin(&fx.e, 1 << 20, "/tmp", 0), 0);
	assert_int_equal(edit_body_write(&fx.e, "x\n", 2), 0);
	assert_string_equal(render(), MSG);
	unload();
}

static void
test_everything_combined(void **state)
{
	load(MSG);
	add("X-Added: 1\r\n");
	message_remove(&fx.m, "From");
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "Received", 1, "changed"), 0);
	assert_int_equal(edit_insert_header(&fx.e, 1, "X-Ins", "i"), 0);
	replace("new body\n");
	assert_string_equal(render(),
	    "X-Added: 1\r\nX-Ins: i\r\nSubject: hi\r\nReceived: one\r\n\tfolded\r\nReceived: changed\r\n"
	    "\r\nnew body\r\n");
	unload();
}

static void
test_header_bound(void **state)
{
	load(MSG);
	for (int i = 0; i < EDIT_MAX_HEADERS; i++)
		assert_int_equal(edit_insert_header(&fx.e, 0, "X-N", "v"), 0);
	assert_int_equal(edit_insert_header(&fx.e, 0, "X-N", "v"), -1);
	assert_int_equal(edit_change_header(&fx.e, &fx.m, "Subject", 0, "v"), -1);
	unload();
}

/* ---- the envelope ---- */

static void
test_envelope(void **state)
{
	struct rcpt r3 = {"c@z.test", 1, NULL}, r2 = {"B@Y.test", 0, &r3},
	            r1 = {"a@x.test", 0, &r2};
	struct edit e = {0};

	assert_int_equal(edit_add_rcpt(&e, &r1, "new@n.test", "NOTIFY=NEVER"), 0);
	assert_int_equal(edit_add_rcpt(&e, &r1, "A@X.TEST", NULL), 0); /* local part differs: new */
	assert_int_equal(edit_add_rcpt(&e, &r1, "a@X.Test", NULL), 0); /* already there: no-op */
	assert_int_equal(edit_delete_rcpt(&e, &r1, "B@y.TEST"), 0);
	assert_int_equal(edit_delete_rcpt(&e, &r1, "c@z.test"), -1); /* dropped: not a recipient */
	assert_int_equal(edit_delete_rcpt(&e, &r1, "nobody@x.test"), -1);
	assert_int_equal(edit_delete_rcpt(&e, &r1, "A@x.test"), 0); /* the added one goes again */
	assert_string_equal(e.env.added->addr, "new@n.test");
	assert_string_equal(e.env.added->params, "NOTIFY=NEVER");
	assert_null(e.env.added->next);
	assert_string_equal(e.env.deleted->addr, "B@Y.test"); /* as the client wrote it */
	assert_null(e.env.deleted->next);
	assert_int_equal(edit_add_rcpt(&e, &r1, "B@y.TEST", NULL), 0); /* undoes the deletion */
	assert_null(e.env.deleted);
	assert_int_equal(edit_add_rcpt(&e, &r1, "bad<@x", NULL), -1);
	assert_int_equal(edit_add_rcpt(&e, &r1, "a\r\nRCPT TO:<x>", NULL), -1);
	assert_int_equal(edit_add_rcpt(&e, &r1, "sp ace@x", NULL), -1);
	assert_int_equal(edit_add_rcpt(&e, &r1, "\"sp ace\"@x", NULL), 0);
	assert_int_equal(edit_add_rcpt(&e, &r1, "", NULL), -1);
	assert_int_equal(edit_add_rcpt(&e, &r1, "ok@x", "BAD\r\n"), -1);
	char big[EDIT_ADDR_MAX + 2];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(edit_add_rcpt(&e, &r1, big, NULL), -1);
	big[EDIT_ADDR_MAX] = '\0';
	assert_int_equal(edit_add_rcpt(&e, &r1, big, NULL), 0);
	assert_null(e.env.sender);
	assert_int_equal(edit_change_sender(&e, "", NULL), 0);
	assert_string_equal(e.env.sender, "");
	assert_int_equal(edit_change_sender(&e, "s@x.test", "BODY=8BITMIME"), 0);
	assert_string_equal(e.env.sender, "s@x.test");
	assert_string_equal(e.env.sender_params, "BODY=8BITMIME");
	assert_int_equal(edit_change_sender(&e, "s>@x", NULL), -1);
	edit_free(&e);
}

/* ---- addresses ---- */

static void
test_addr_at(void **state)
{
	assert_int_equal(edit_addr_at("user@example.com"), 4);
	assert_int_equal(edit_addr_at("a@b@example.com"), 3);
	assert_int_equal(edit_addr_at("\"a@b\"@example.com"), 5);
	assert_int_equal(edit_addr_at("\"a@b\""), -1);
	assert_int_equal(edit_addr_at("\"a\\\"@b\"@x"), 7);
	assert_int_equal(edit_addr_at("postmaster"), -1);
	assert_int_equal(edit_addr_at(""), -1);
	assert_int_equal(edit_addr_at(NULL), -1);
	assert_true(edit_addr_eq("Joe@EXAMPLE.com", "Joe@example.COM"));
	assert_false(edit_addr_eq("joe@example.com", "Joe@example.com"));
	assert_true(edit_addr_eq("postmaster", "postmaster"));
	assert_false(edit_addr_eq("postmaster", "postmaster@x"));
}

static void
test_split_arena(void **state)
{
	struct chain_view v = {0};
	struct chain_session cs;
	const char *l1, *d1, *l2, *d2, *l3, *d3;

	assert_int_equal(chain_session_init(NULL, &cs, &v), 0);
	assert_int_equal(chain_split(&cs.call, "Joe.Bloggs@Example.COM", &l1, &d1), 0);
	assert_string_equal(l1, "Joe.Bloggs");
	assert_string_equal(d1, "example.com");
	/* asked again: the same strings, nothing new allocated */
	size_t used = cs.call.arena.used;
	for (int i = 0; i < 1000; i++)
		assert_int_equal(chain_split(&cs.call, "Joe.Bloggs@Example.COM", &l2, &d2), 0);
	assert_ptr_equal(l1, l2);
	assert_ptr_equal(d1, d2);
	assert_int_equal(cs.call.arena.used, used);
	assert_int_equal(chain_split(&cs.call, "\"a@b\"@Example.com", &l3, &d3), 0);
	assert_string_equal(l3, "\"a@b\"");
	assert_string_equal(d3, "example.com");
	assert_string_equal(l1, "Joe.Bloggs"); /* earlier answers still good */
	assert_int_equal(chain_split(&cs.call, "", &l3, &d3), 0);
	assert_string_equal(l3, "");
	assert_null(d3);
	assert_int_equal(chain_split(&cs.call, "postmaster", &l3, &d3), 0);
	assert_string_equal(l3, "postmaster");
	assert_null(d3);
	assert_int_equal(chain_split(&cs.call, NULL, &l3, &d3), -1);
	/* bounded: distinct addresses until the arena is full */
	char addr[300];
	int i, r = 0;
	for (i = 0; i < 100000 && r == 0; i++) {
		snprintf(addr, sizeof(addr), "user%d-%0200d@example.com", i, 0);
		r = chain_split(&cs.call, addr, &l3, &d3);
	}
	assert_int_equal(r, -1);
	assert_true(cs.call.arena.used <= CHAIN_ARENA_MAX);
	chain_session_end(&cs);
}

/* ---- scores ---- */

static void
test_scores(void **state)
{
	struct score_set s = {0}, t = {0};
	const char *sym, *detail;
	double pts;
	char buf[256];

	assert_int_equal(score_summary(&s, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	assert_int_equal(score_add(&s, "RBL", 1.5, "listed in zen"), 0);
	assert_int_equal(score_add(&s, "NO_PTR", 2, NULL), 0);
	assert_int_equal(score_add(&s, "RBL", 1.5, "second detail"), 0);
	assert_true(s.total == 5.0);
	assert_int_equal(score_at(&s, 0, &sym, &pts, &detail), 0);
	assert_string_equal(sym, "RBL");
	assert_true(pts == 3.0);
	assert_string_equal(detail, "listed in zen");
	assert_int_equal(score_at(&s, 1, &sym, &pts, &detail), 0);
	assert_null(detail);
	assert_int_equal(score_at(&s, 2, &sym, &pts, &detail), -1);
	assert_int_equal(score_add(&s, "lower", 1, NULL), -1);
	assert_int_equal(score_add(&s, "", 1, NULL), -1);
	assert_int_equal(score_add(&s, "A-B", 1, NULL), -1);
	assert_int_equal(score_add(&s, "X", 1.0 / 0.0, NULL), -1);
	assert_int_equal(score_add(&s, "X", 1, "bad\ndetail"), -1);
	char sym65[66];
	memset(sym65, 'A', 65);
	sym65[65] = '\0';
	assert_int_equal(score_add(&s, sym65, 1, NULL), -1);
	sym65[64] = '\0';
	assert_int_equal(score_add(&s, sym65, 0, NULL), 0);
	assert_int_equal(score_copy(&t, &s), 0);
	assert_true(t.total == 5.0);
	assert_int_equal(t.n, 3);
	score_clear(&t);
	assert_int_equal(t.n, 0);
	score_clear(&s);
	for (int i = 0; i < SCORE_MAX_SYMBOLS; i++) {
		snprintf(buf, sizeof(buf), "S%d", i);
		assert_int_equal(score_add(&s, buf, 0.5, NULL), 0);
	}
	assert_int_equal(score_add(&s, "ONE_MORE", 1, NULL), -1);
	assert_int_equal(score_add(&s, "S0", 1, NULL), 0); /* an old one still adds */
	score_clear(&s);
}

static void
test_score_summary(void **state)
{
	struct score_set s = {0};
	char buf[64];
	size_t n;

	score_add(&s, "A", 1.5, NULL);
	score_add(&s, "B", 2, NULL);
	n = score_summary(&s, buf, sizeof(buf));
	assert_string_equal(buf, "score=3.5 symbols=A(1.5),B(2)");
	assert_int_equal(n, strlen(buf));
	score_add(&s, "NEGATIVE", -0.25, NULL);
	score_summary(&s, buf, sizeof(buf));
	assert_string_equal(buf, "score=3.25 symbols=A(1.5),B(2),NEGATIVE(-0.25)");
	for (int i = 0; i < 20; i++) {
		char sym[32];
		snprintf(sym, sizeof(sym), "LONG_%d", i);
		score_add(&s, sym, 1, NULL);
	}
	n = score_summary(&s, buf, sizeof(buf));
	assert_true(n < sizeof(buf));
	assert_int_equal(strlen(buf), n);
	assert_true(n >= 3 && strcmp(buf + n - 3, "...") == 0);
	assert_true(strncmp(buf, "score=23.25 symbols=A(1.5),B(2),", 32) == 0);
	score_clear(&s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unchanged),
	    cmocka_unit_test(test_add_and_remove_as_before),
	    cmocka_unit_test(test_change_nth),
	    cmocka_unit_test(test_change_folded_and_delete),
	    cmocka_unit_test(test_change_missing_is_error),
	    cmocka_unit_test(test_change_last_wins_over_remove),
	    cmocka_unit_test(test_folded_values),
	    cmocka_unit_test(test_insert_positions),
	    cmocka_unit_test(test_insert_before_removed),
	    cmocka_unit_test(test_no_header_section),
	    cmocka_unit_test(test_no_body),
	    cmocka_unit_test(test_body_replace_dots_and_lf),
	    cmocka_unit_test(test_body_replace_split_writes),
	    cmocka_unit_test(test_body_replace_empty),
	    cmocka_unit_test(test_body_replace_bare_cr_refused),
	    cmocka_unit_test(test_body_replace_limits),
	    cmocka_unit_test(test_body_unended_not_used),
	    cmocka_unit_test(test_everything_combined),
	    cmocka_unit_test(test_header_bound),
	    cmocka_unit_test(test_envelope),
	    cmocka_unit_test(test_addr_at),
	    cmocka_unit_test(test_split_arena),
	    cmocka_unit_test(test_scores),
	    cmocka_unit_test(test_score_summary),
	};
	log_init(CONFIG_LOG_STDERR, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
