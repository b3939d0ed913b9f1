/*
 * test_dataread.c - unit tests for proxy/dataread.c, the DATA framer.
 *
 * This is the smuggling defence (DESIGN.md §2, CVE-2023-51764), so every input
 * is fed whole, split in two at every position, and one byte at a time, and
 * every way of feeding it must give the same output, the same end, the same
 * consumed count, the same error bits and the same counters.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dataread.h"

#define S(lit) lit, sizeof(lit) - 1

/* ------------------------------------------------------------------ */
/* the harness */

struct sink {
	char *buf;
	size_t len, cap;
	size_t calls;
};

static void
sink_emit(void *arg, const char *bytes, size_t len)
{
	struct sink *s = arg;

	if (len == 0)
		return;
	if (s->len + len > s->cap) {
		s->cap = (s->len + len) * 2 + 64;
		s->buf = realloc(s->buf, s->cap);
		assert_non_null(s->buf);
	}
	memcpy(s->buf + s->len, bytes, len);
	s->len += len;
	s->calls++;
}

/* What one run produced. */
struct run {
	int rc; /* PC_OK, or PC_AGAIN when all input went in without the end */
	size_t consumed; /* bytes of the input that belonged to the message */
	struct sink out;
	unsigned errors;
	unsigned long bare_lf, bare_cr, nul;
	size_t size;
};

struct params {
	enum dataread_mode mode;
	size_t max_size;
	size_t max_line;
};

static void
run_free(struct run *r)
{
	free(r->out.buf);
	memset(r, 0, sizeof(*r));
}

/*
 * Feed in pieces: cuts[] are the positions where a feed ends (ascending, the
 * last one is len). Stops at the first PC_OK.
 */
static void
run_pieces(const struct params *p, const char *in, size_t len, const size_t *cuts, size_t ncuts,
    struct run *r)
{
	struct dataread *d;
	size_t pos = 0, i;

	memset(r, 0, sizeof(*r));
	d = calloc(1, sizeof(*d));
	assert_non_null(d);
	dataread_init(d, p->mode, p->max_size, p->max_line, sink_emit, &r->out);
	r->rc = PC_AGAIN;
	for (i = 0; i < ncuts; i++) {
		size_t n = cuts[i] - pos, used = (size_t)-1;
		int rc = dataread_feed(d, in + pos, n, &used);

		if (rc == PC_OK) {
			if (used > n)
				fail_msg("PC_OK with consumed %zu > fed %zu", used, n);
			r->rc = PC_OK;
			r->consumed = pos + used;
			break;
		}
		if (rc != PC_AGAIN)
			fail_msg("dataread_feed returned %d", rc);
		pos = cuts[i];
		r->consumed = pos;
	}
	r->errors = d->errors;
	r->bare_lf = d->bare_lf;
	r->bare_cr = d->bare_cr;
	r->nul = d->nul;
	r->size = d->size;
	free(d);
}

static void
run_whole(const struct params *p, const char *in, size_t len, struct run *r)
{
	run_pieces(p, in, len, &len, 1, r);
}

static void
printable(char *dst, size_t dstlen, const char *s, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len && n + 5 < dstlen; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r')
			n += (size_t)snprintf(dst + n, dstlen - n, "\\r");
		else if (c == '\n')
			n += (size_t)snprintf(dst + n, dstlen - n, "\\n");
		else if (c < 0x20 || c >= 0x7f)
			n += (size_t)snprintf(dst + n, dstlen - n, "\\x%02x", c);
		else
			dst[n++] = (char)c;
	}
	dst[n] = '\0';
}

/* Two runs must agree on everything. */
static void
run_same(const struct run *want, const struct run *got, const char *how, size_t at)
{
	char a[512], b[512];

	if (got->rc != want->rc)
		fail_msg("%s %zu: rc %d, whole gave %d", how, at, got->rc, want->rc);
	if (got->consumed != want->consumed)
		fail_msg(
		    "%s %zu: consumed %zu, whole gave %zu", how, at, got->consumed, want->consumed);
	if (got->out.len != want->out.len ||
	    (got->out.len && memcmp(got->out.buf, want->out.buf, got->out.len) != 0)) {
		printable(a, sizeof(a), want->out.buf, want->out.len);
		printable(b, sizeof(b), got->out.buf, got->out.len);
		fail_msg("%s %zu: output \"%s\", whole gave \"%s\"", how, at, b, a);
	}
	if (got->errors != want->errors)
		fail_msg(
		    "%s %zu: errors 0x%x, whole gave 0x%x", how, at, got->errors, want->errors);
	if (got->bare_lf != want->bare_lf || got->bare_cr != want->bare_cr || got->nul != want->nul)
		fail_msg("%s %zu: counters lf %lu cr %lu nul %lu, whole gave %lu %lu %lu", how, at,
		    got->bare_lf, got->bare_cr, got->nul, want->bare_lf, want->bare_cr, want->nul);
	if (got->size != want->size)
		fail_msg("%s %zu: size %zu, whole gave %zu", how, at, got->size, want->size);
}

/*
 * Long inputs (over SPLIT_ALL) are split at every SPLIT_STEP-th position and
 * at every position near a multiple of the output buffer, to keep the
 * quadratic cost down; short inputs at every position.
 */
#define SPLIT_ALL 2048
#define SPLIT_STEP 7

static int
split_here(size_t i, size_t len)
{
	size_t off = i % DATAREAD_OUTBUF;

	return len <= SPLIT_ALL || i % SPLIT_STEP == 0 || off < 8 || off > DATAREAD_OUTBUF - 8 ||
	    i + 8 > len;
}

/* Feed at every split point and byte by byte; all must equal the whole feed. */
static void
run_all_ways(const struct params *p, const char *in, size_t len, struct run *whole)
{
	struct run r;
	size_t i, cuts[2], *bytes;

	run_whole(p, in, len, whole);
	for (i = 0; i <= len; i++) {
		if (!split_here(i, len))
			continue;
		cuts[0] = i;
		cuts[1] = len;
		run_pieces(p, in, len, cuts, 2, &r);
		run_same(whole, &r, "split at", i);
		run_free(&r);
	}
	bytes = malloc((len + 1) * sizeof(*bytes));
	assert_non_null(bytes);
	for (i = 0; i < len; i++)
		bytes[i] = i + 1;
	run_pieces(p, in, len, bytes, len, &r);
	run_same(whole, &r, "byte by byte, len", len);
	run_free(&r);
	/* three pieces around every position, to cross two boundaries */
	for (i = 1; i + 1 < len; i++) {
		size_t c3[3] = {i - 1, i + 1, len};
		if (!split_here(i, len))
			continue;
		run_pieces(p, in, len, c3, 3, &r);
		run_same(whole, &r, "three pieces around", i);
		run_free(&r);
	}
	free(bytes);
}

/* An expected result; fields left out are zero. */
struct expect {
	int rc;
	size_t consumed;
	const char *out; /* NULL: output not checked here (see check_out_prefix) */
	size_t out_len;
	unsigned errors;
	unsigned long bare_lf, bare_cr, nul;
	int check_size;
	size_t size;
};

#define OUT(lit) .out = (lit), .out_len = sizeof(lit) - 1
#define SIZE(n) .check_size = 1, .size = (n)
#define EXPECT(...) (&(struct expect){__VA_ARGS__})

static void
check_expect(const struct run *r, const struct expect *e)
{
	char a[512], b[512];

	if (r->rc != e->rc)
		fail_msg("rc %d, want %d", r->rc, e->rc);
	if (r->consumed != e->consumed)
		fail_msg("consumed %zu, want %zu", r->consumed, e->consumed);
	if (e->out != NULL &&
	    (r->out.len != e->out_len || (e->out_len && memcmp(r->out.buf, e->out, e->out_len)))) {
		printable(a, sizeof(a), e->out, e->out_len);
		printable(b, sizeof(b), r->out.buf, r->out.len);
		fail_msg("output \"%s\", want \"%s\"", b, a);
	}
	if (r->errors != e->errors)
		fail_msg("errors 0x%x, want 0x%x", r->errors, e->errors);
	if (r->bare_lf != e->bare_lf)
		fail_msg("bare_lf %lu, want %lu", r->bare_lf, e->bare_lf);
	if (r->bare_cr != e->bare_cr)
		fail_msg("bare_cr %lu, want %lu", r->bare_cr, e->bare_cr);
	if (r->nul != e->nul)
		fail_msg("nul %lu, want %lu", r->nul, e->nul);
	if (e->check_size && r->size != e->size)
		fail_msg("size %zu, want %zu", r->size, e->size);
}

/* Once bad, the output stops: it is a prefix of the good part before the bad byte. */
static void
check_out_prefix(const struct run *r, const char *good, size_t good_len)
{
	char a[512], b[512];

	if (r->out.len > good_len || (r->out.len && memcmp(r->out.buf, good, r->out.len))) {
		printable(a, sizeof(a), good, good_len);
		printable(b, sizeof(b), r->out.buf, r->out.len);
		fail_msg("output \"%s\" is not a prefix of \"%s\"", b, a);
	}
}

/* Run in every way, check the expectation; whole gets the whole-input run. */
static void
check_case(enum dataread_mode mode, size_t max_size, size_t max_line, const char *in, size_t len,
    const struct expect *e, struct run *whole)
{
	struct params p = {mode, max_size, max_line};
	char shown[256];

	printable(shown, sizeof(shown), in, len > 60 ? 60 : len);
	print_message("input \"%s\" mode %d\n", shown, (int)mode);
	run_all_ways(&p, in, len, whole);
	check_expect(whole, e);
}

/*
 * msg is a whole message, ending with its terminator: append a pipelined
 * command, and expect PC_OK with exactly msg consumed.
 */
#define NEXT_CMD "QUIT\r\n"

static void
check_msg(enum dataread_mode mode, size_t max_size, size_t max_line, const char *msg, size_t len,
    const struct expect *e, struct run *whole)
{
	char *in = malloc(len + sizeof(NEXT_CMD));
	struct expect e2 = *e;

	assert_non_null(in);
	memcpy(in, msg, len);
	memcpy(in + len, NEXT_CMD, sizeof(NEXT_CMD) - 1);
	e2.rc = PC_OK;
	e2.consumed = len;
	check_case(mode, max_size, max_line, in, len + sizeof(NEXT_CMD) - 1, &e2, whole);
	free(in);
}

/* ------------------------------------------------------------------ */
/* clean input */

static void
test_clean(void **state)
{
	static const char in[] = "Subject: x\r\n\r\nbody\r\n.\r\n";
	const struct expect *e = EXPECT(OUT("Subject: x\r\n\r\nbody\r\n"), SIZE(20));
	struct run r;

	(void)state;
	check_case(DATAREAD_REJECT, 0, 0, S(in),
	    EXPECT(.rc = PC_OK, .consumed = 23, OUT("Subject: x\r\n\r\nbody\r\n"), SIZE(20)), &r);
	run_free(&r);
	check_case(DATAREAD_NORMALIZE, 0, 0, S(in),
	    EXPECT(.rc = PC_OK, .consumed = 23, OUT("Subject: x\r\n\r\nbody\r\n"), SIZE(20)), &r);
	run_free(&r);
	/* generous limits change nothing */
	check_msg(DATAREAD_REJECT, 1000, 100, S(in), e, &r);
	run_free(&r);
	check_msg(DATAREAD_NORMALIZE, 20, 10, S(in), e, &r);
	run_free(&r);
}

static void
test_empty_message(void **state)
{
	const struct expect *e = EXPECT(OUT(""), SIZE(0));
	struct run r;

	(void)state;
	check_case(DATAREAD_REJECT, 0, 0, S(".\r\n"),
	    EXPECT(.rc = PC_OK, .consumed = 3, OUT(""), SIZE(0)), &r);
	run_free(&r);
	check_msg(DATAREAD_REJECT, 0, 0, S(".\r\n"), e, &r);
	assert_int_equal(r.out.len, 0);
	run_free(&r);
	check_msg(DATAREAD_NORMALIZE, 0, 0, S(".\r\n"), e, &r);
	run_free(&r);
	check_msg(DATAREAD_REJECT, 1, 1, S(".\r\n"), e, &r);
	run_free(&r);
}

static void
test_pipelined_after_end(void **state)
{
	static const char in[] = "a\r\n.\r\nMAIL FROM:<b@c>\r\nRCPT TO:<d@e>\r\nDATA\r\n"
	                         "x\r\n.\r\n";
	struct run r;
	int m;

	(void)state;
	for (m = DATAREAD_REJECT; m <= DATAREAD_NORMALIZE; m++) {
		check_case(
		    m, 0, 0, S(in), EXPECT(.rc = PC_OK, .consumed = 6, OUT("a\r\n"), SIZE(3)), &r);
		run_free(&r);
		/* the whole next message pipelined after the end */
		check_case(m, 0, 0, S("b\r\n..c\r\n.\r\nd\r\n.\r\n"),
		    EXPECT(.rc = PC_OK, .consumed = 11, OUT("b\r\n..c\r\n"), SIZE(7)), &r);
		run_free(&r);
	}
}

/* Input without the end: all consumed, PC_AGAIN, the finished lines out. */
static void
test_no_end(void **state)
{
	struct run r;

	(void)state;
	check_case(DATAREAD_REJECT, 0, 0, S("a\r\n..b\r\n.\r"),
	    EXPECT(.rc = PC_AGAIN, .consumed = 10, OUT("a\r\n..b\r\n")), &r);
	run_free(&r);
	check_case(DATAREAD_REJECT, 0, 0, S("a\r\n.\r"),
	    EXPECT(.rc = PC_AGAIN, .consumed = 5, OUT("a\r\n")), &r);
	run_free(&r);
	check_case(DATAREAD_REJECT, 0, 0, S("a\r\n."),
	    EXPECT(.rc = PC_AGAIN, .consumed = 4, OUT("a\r\n")), &r);
	run_free(&r);
	check_case(DATAREAD_NORMALIZE, 0, 0, S("a\r\n"),
	    EXPECT(.rc = PC_AGAIN, .consumed = 3, OUT("a\r\n")), &r);
	run_free(&r);
	check_case(
	    DATAREAD_REJECT, 0, 0, S(""), EXPECT(.rc = PC_AGAIN, .consumed = 0, OUT("")), &r);
	run_free(&r);
}

/* A message bigger than the output buffer is flushed in pieces, unchanged. */
static void
test_large(void **state)
{
	size_t nlines = 130, i, j, n = 0, m = 0, u = 0;
	char *in = malloc(nlines * 80 + 16);
	char *canon = malloc(nlines * 81 + 16);
	char *un = malloc(nlines * 80 + 16);
	struct run r;

	(void)state;
	assert_non_null(in);
	assert_non_null(canon);
	assert_non_null(un);
	/* every 10th line begins with a dot */
	for (i = 0; i < nlines; i++)
		n +=
		    (size_t)snprintf(in + n, 80, "%s%04zu %066d\r\n", i % 10 == 3 ? "." : "", i, 0);
	assert_true(n > DATAREAD_OUTBUF);
	memcpy(in + n, ".\r\n", 3);
	/* canonical form: those lines stuffed, "..NNNN", passes through as is */
	for (j = 0; j < n;) {
		if (in[j] == '.')
			canon[m++] = '.';
		while (in[j] != '\n')
			canon[m++] = in[j++];
		canon[m++] = in[j++];
	}
	memcpy(canon + m, ".\r\n", 3);
	/* non-canonical form: the ".NNNN" lines are unstuffed to "NNNN" */
	for (j = 0; j < n; j++)
		if (!(in[j] == '.' && (j == 0 || in[j - 1] == '\n')))
			un[u++] = in[j];

	check_msg(
	    DATAREAD_REJECT, 0, 0, canon, m + 3, EXPECT(.out = canon, .out_len = m, SIZE(n)), &r);
	run_free(&r);
	check_msg(DATAREAD_NORMALIZE, 0, 998, canon, m + 3,
	    EXPECT(.out = canon, .out_len = m, SIZE(n)), &r);
	run_free(&r);
	check_msg(DATAREAD_REJECT, 0, 0, in, n + 3, EXPECT(.out = un, .out_len = u), &r);
	run_free(&r);
	free(in);
	free(canon);
	free(un);
}

/* ------------------------------------------------------------------ */
/* dot-stuffing, RFC 5321 §4.5.2 */

static void
test_dot_stuffing(void **state)
{
	struct run r;
	int m;

	(void)state;
	for (m = DATAREAD_REJECT; m <= DATAREAD_NORMALIZE; m++) {
		/* "..line" is the stuffed ".line": sent to the backend as sent to us */
		check_msg(m, 0, 0, S("a\r\n..line\r\n.\r\n"),
		    EXPECT(OUT("a\r\n..line\r\n"), SIZE(10)), &r);
		run_free(&r);
		/* at the very start */
		check_msg(m, 0, 0, S("..line\r\n.\r\n"), EXPECT(OUT("..line\r\n"), SIZE(7)), &r);
		run_free(&r);
		/* ".." alone is a line holding one dot, not the end */
		check_msg(m, 0, 0, S("a\r\n..\r\nb\r\n.\r\n"),
		    EXPECT(OUT("a\r\n..\r\nb\r\n"), SIZE(9)), &r);
		run_free(&r);
		check_msg(m, 0, 0, S("..\r\n.\r\n"), EXPECT(OUT("..\r\n"), SIZE(3)), &r);
		run_free(&r);
		/* "...x" is "..x" stuffed */
		check_msg(m, 0, 0, S("...x\r\n.\r\n"), EXPECT(OUT("...x\r\n"), SIZE(5)), &r);
		run_free(&r);
		/* ".foo" was not stuffed: the dot is removed, as RFC 5321 says */
		check_msg(
		    m, 0, 0, S("a\r\n.foo\r\nb\r\n.\r\n"), EXPECT(OUT("a\r\nfoo\r\nb\r\n")), &r);
		run_free(&r);
		check_msg(m, 0, 0, S(".foo\r\n.\r\n"), EXPECT(OUT("foo\r\n")), &r);
		run_free(&r);
		/* ". " is not the end: a line holding a space */
		check_msg(m, 0, 0, S("a\r\n. \r\n.\r\n"), EXPECT(OUT("a\r\n \r\n")), &r);
		run_free(&r);
		/* ".\t" neither */
		check_msg(m, 0, 0, S(".\t\r\n.\r\n"), EXPECT(OUT("\t\r\n")), &r);
		run_free(&r);
		/* a dot not at the start of a line is content */
		check_msg(
		    m, 0, 0, S("a.\r\nb.c\r\n.\r\n"), EXPECT(OUT("a.\r\nb.c\r\n"), SIZE(9)), &r);
		run_free(&r);
		/* an empty line before the end, and lines that are only dots */
		check_msg(m, 0, 0, S("\r\n...\r\n....\r\n\r\n.\r\n"),
		    EXPECT(OUT("\r\n...\r\n....\r\n\r\n"), SIZE(13)), &r);
		run_free(&r);
	}
}

/* A lone "." ends the data only with a real CR LF before and after it. */
static void
test_lone_dot(void **state)
{
	struct run r;

	(void)state;
	/* "\r\r\n.\r\n": the stray CR does not stop the CR LF after it being real */
	check_msg(DATAREAD_REJECT, 0, 0, S("a\r\r\n.\r\n"),
	    EXPECT(.errors = DATAREAD_EBARE_CR, .bare_cr = 1), &r);
	check_out_prefix(&r, "a", 1);
	run_free(&r);
	check_msg(
	    DATAREAD_NORMALIZE, 0, 0, S("a\r\r\n.\r\n"), EXPECT(OUT("a \r\n"), .bare_cr = 1), &r);
	run_free(&r);
	/* "\n\r\n.\r\n": the empty line after the bare LF ends with a real CR LF */
	check_msg(DATAREAD_REJECT, 0, 0, S("a\n\r\n.\r\n"),
	    EXPECT(.errors = DATAREAD_EBARE_LF, .bare_lf = 1), &r);
	check_out_prefix(&r, "a", 1);
	run_free(&r);
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\n\r\n.\r\n"),
	    EXPECT(OUT("a\r\n\r\n"), .bare_lf = 1), &r);
	run_free(&r);
	/* a bare LF as the very first byte: the "." line after it is not the end */
	check_msg(DATAREAD_REJECT, 0, 0, S("\n.\r\nx\r\n.\r\n"),
	    EXPECT(.errors = DATAREAD_EBARE_LF, .bare_lf = 1), &r);
	assert_int_equal(r.out.len, 0);
	run_free(&r);
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("\n.\r\nx\r\n.\r\n"),
	    EXPECT(OUT("\r\n..\r\nx\r\n"), .bare_lf = 1), &r);
	run_free(&r);
	/* a "." after content on the same line never ends */
	check_case(DATAREAD_REJECT, 0, 0, S("a\r\nb.\r\n."),
	    EXPECT(.rc = PC_AGAIN, .consumed = 8, OUT("a\r\nb.\r\n")), &r);
	run_free(&r);
	check_case(DATAREAD_REJECT, 0, 0, S("a\r\n .\r\nb\r\n"),
	    EXPECT(.rc = PC_AGAIN, .consumed = 10, OUT("a\r\n .\r\nb\r\n")), &r);
	run_free(&r);
}

/* ------------------------------------------------------------------ */
/* SMTP smuggling */

#define SMUG_HEAD "Subject: x\r\n\r\nhello"
#define SMUG_TAIL "MAIL FROM:<evil@x>\r\nRCPT TO:<v@x>\r\nDATA\r\nsmuggled\r\n"

struct smug {
	const char *name;
	const char *pattern;
	unsigned reject_err;
	unsigned long lf, cr;
	const char *norm_out; /* NORMALIZE output between SMUG_HEAD and SMUG_TAIL */
	const char *reject_good; /* the good output before the first bad byte */
};

static const struct smug smugs[] = {
    {"\\n.\\n", "\n.\n", DATAREAD_EBARE_LF, 2, 0, "\r\n..\r\n", ""},
    {"\\n.\\r\\n", "\n.\r\n", DATAREAD_EBARE_LF, 1, 0, "\r\n..\r\n", ""},
    {"\\r\\n.\\n", "\r\n.\n", DATAREAD_EBARE_LF, 1, 0, "\r\n..\r\n", "\r\n.."},
    {"\\r.\\r", "\r.\r", DATAREAD_EBARE_CR, 0, 2, " . ", ""},
    {"\\r\\n.\\r\\r\\n", "\r\n.\r\r\n", DATAREAD_EBARE_CR, 0, 1, "\r\n.. \r\n", "\r\n.."},
    {"\\r.\\r\\n", "\r.\r\n", DATAREAD_EBARE_CR, 0, 1, " .\r\n", ""},
    {"\\n.\\r", "\n.\r", DATAREAD_EBARE_LF | DATAREAD_EBARE_CR, 1, 1, "\r\n.. ", ""},
    {"\\n\\n.\\n\\n", "\n\n.\n\n", DATAREAD_EBARE_LF, 4, 0, "\r\n\r\n..\r\n\r\n", ""},
    {"\\r\\n.\\n\\r\\n", "\r\n.\n\r\n", DATAREAD_EBARE_LF, 1, 0, "\r\n..\r\n\r\n", "\r\n.."},
    {"\\r\\n.\\r", "\r\n.\r", DATAREAD_EBARE_CR, 0, 1, "\r\n.. ", "\r\n.."},
};

static void
test_smuggling(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(smugs) / sizeof(smugs[0]); i++) {
		const struct smug *s = &smugs[i];
		char in[512], want[512];
		size_t n, w;
		struct run r;

		n = (size_t)snprintf(
		    in, sizeof(in), "%s%s%s.\r\n", SMUG_HEAD, s->pattern, SMUG_TAIL);
		print_message("pattern %s\n", s->name);

		/* REJECT: read to the real end, marked bad, nothing after the bad byte */
		check_msg(DATAREAD_REJECT, 0, 0, in, n,
		    EXPECT(.errors = s->reject_err, .bare_lf = s->lf, .bare_cr = s->cr), &r);
		w = (size_t)snprintf(want, sizeof(want), "%s%s", SMUG_HEAD, s->reject_good);
		check_out_prefix(&r, want, w);
		run_free(&r);

		/* NORMALIZE: canonical CRLF lines, the "." never a line of its own */
		w = (size_t)snprintf(
		    want, sizeof(want), "%s%s%s", SMUG_HEAD, s->norm_out, SMUG_TAIL);
		check_msg(DATAREAD_NORMALIZE, 0, 0, in, n,
		    EXPECT(.out = want, .out_len = w, .bare_lf = s->lf, .bare_cr = s->cr), &r);
		assert_null(memmem(r.out.buf, r.out.len, "\r\n.\r\n", 5));
		run_free(&r);
	}
}

/* The smuggled "end" arrives in a packet of its own, as an attacker sends it. */
static void
test_smuggling_packets(void **state)
{
	static const char in[] = "hello\n.\nMAIL FROM:<evil@x>\r\n.\r\n";
	struct params p = {DATAREAD_REJECT, 0, 0};
	size_t cuts[] = {5, 8, sizeof(in) - 1};
	struct run r;

	(void)state;
	run_pieces(&p, S(in), cuts, 3, &r);
	assert_int_equal(r.rc, PC_OK);
	assert_int_equal(r.consumed, sizeof(in) - 1);
	assert_int_equal(r.errors, DATAREAD_EBARE_LF);
	check_out_prefix(&r, "hello", 5);
	run_free(&r);
}

/* ------------------------------------------------------------------ */
/* bare LF, bare CR, NUL */

static void
test_lf_only(void **state)
{
	static const char in[] = "Subject: x\nFrom: a@b\n\nbody\nmore\r\n.\r\n";
	struct run r;

	(void)state;
	check_msg(
	    DATAREAD_REJECT, 0, 0, S(in), EXPECT(.errors = DATAREAD_EBARE_LF, .bare_lf = 4), &r);
	check_out_prefix(&r, "Subject: x", 10);
	run_free(&r);
	check_msg(DATAREAD_NORMALIZE, 0, 0, S(in),
	    EXPECT(OUT("Subject: x\r\nFrom: a@b\r\n\r\nbody\r\nmore\r\n"), .bare_lf = 4), &r);
	run_free(&r);

	/* LF-only all the way: ".\n" is never the end */
	check_case(DATAREAD_REJECT, 0, 0, S("a\nb\n\n.\nQUIT\n"),
	    EXPECT(.rc = PC_AGAIN, .consumed = 12, .errors = DATAREAD_EBARE_LF, .bare_lf = 5), &r);
	check_out_prefix(&r, "a", 1);
	run_free(&r);
	check_case(DATAREAD_NORMALIZE, 0, 0, S("a\nb\n\n.\nQUIT\n"),
	    EXPECT(.rc = PC_AGAIN, .consumed = 12, OUT("a\r\nb\r\n\r\n..\r\nQUIT\r\n"),
	        .bare_lf = 5),
	    &r);
	run_free(&r);
}

static void
test_nul(void **state)
{
	struct run r;

	(void)state;
	check_msg(DATAREAD_REJECT, 0, 0, S("a\r\nb\0c\0\r\nd\r\n.\r\n"),
	    EXPECT(.errors = DATAREAD_ENUL, .nul = 2), &r);
	check_out_prefix(&r, "a\r\nb", 4);
	run_free(&r);
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\r\nb\0c\0\r\nd\r\n.\r\n"),
	    EXPECT(OUT("a\r\nbc\r\nd\r\n"), .nul = 2), &r);
	run_free(&r);
	/* a line of NULs only becomes an empty line */
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\r\n\0\0\0\r\n.\r\n"),
	    EXPECT(OUT("a\r\n\r\n"), .nul = 3), &r);
	run_free(&r);
	/* a NUL between CR and LF: the CR is stray and the LF bare */
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\r\0\nb\r\n.\r\n"),
	    EXPECT(OUT("a \r\nb\r\n"), .bare_lf = 1, .bare_cr = 1, .nul = 1), &r);
	run_free(&r);
	check_msg(DATAREAD_REJECT, 0, 0, S("a\r\0\nb\r\n.\r\n"),
	    EXPECT(.errors = DATAREAD_ENUL | DATAREAD_EBARE_CR | DATAREAD_EBARE_LF, .bare_lf = 1,
	        .bare_cr = 1, .nul = 1),
	    &r);
	check_out_prefix(&r, "a", 1);
	run_free(&r);
}

/* "\r\n\0.\r\n" is no end; normalised, the line is "." and must be stuffed. */
static void
test_nul_dot(void **state)
{
	static const char in[] = "hello\r\n\0.\r\n" SMUG_TAIL ".\r\n";
	struct run r;

	(void)state;
	check_msg(DATAREAD_REJECT, 0, 0, S(in), EXPECT(.errors = DATAREAD_ENUL, .nul = 1), &r);
	check_out_prefix(&r, "hello\r\n", 7);
	run_free(&r);
	check_msg(DATAREAD_NORMALIZE, 0, 0, S(in),
	    EXPECT(OUT("hello\r\n..\r\n" SMUG_TAIL), .nul = 1), &r);
	run_free(&r);
	/* "\0.x": the wire line had no leading dot to remove; ".x" is restuffed */
	check_msg(
	    DATAREAD_NORMALIZE, 0, 0, S("\0.x\r\n.\r\n"), EXPECT(OUT("..x\r\n"), .nul = 1), &r);
	run_free(&r);
	/* ".\0" after CRLF: unstuffed, the NUL removed, an empty line */
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\r\n.\0\r\n.\r\n"),
	    EXPECT(OUT("a\r\n\r\n"), .nul = 1), &r);
	run_free(&r);
}

static void
test_stray_cr(void **state)
{
	struct run r;

	(void)state;
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\rb\r\nc\r\rd\r\n.\r\n"),
	    EXPECT(OUT("a b\r\nc  d\r\n"), .bare_cr = 3), &r);
	run_free(&r);
	check_msg(DATAREAD_REJECT, 0, 0, S("a\rb\r\nc\r\rd\r\n.\r\n"),
	    EXPECT(.errors = DATAREAD_EBARE_CR, .bare_cr = 3), &r);
	check_out_prefix(&r, "a", 1);
	run_free(&r);
	/* a CR at the start of a line, before a dot: " ." is no dot line */
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\r\n\r.\r\n.\r\n"),
	    EXPECT(OUT("a\r\n .\r\n"), .bare_cr = 1), &r);
	run_free(&r);
	/* CR CR LF: one stray CR, then a real line end */
	check_msg(
	    DATAREAD_NORMALIZE, 0, 0, S("\r\r\n.\r\n"), EXPECT(OUT(" \r\n"), .bare_cr = 1), &r);
	run_free(&r);
}

/* NORMALIZE: a line is unstuffed by one leading dot, then restuffed if it begins with one. */
static void
test_normalize_restuff(void **state)
{
	struct run r;

	(void)state;
	/* "..b" after a bare LF: unstuffed ".b", restuffed "..b" */
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\n..b\r\n.\r\n"),
	    EXPECT(OUT("a\r\n..b\r\n"), .bare_lf = 1), &r);
	run_free(&r);
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\n..b\n\r\n.\r\n"),
	    EXPECT(OUT("a\r\n..b\r\n\r\n"), .bare_lf = 2), &r);
	run_free(&r);
	/* ".b" after a bare LF: unstuffed to "b" */
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\n.b\r\n.\r\n"),
	    EXPECT(OUT("a\r\nb\r\n"), .bare_lf = 1), &r);
	run_free(&r);
	/* "...\n": "..", restuffed "..." */
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\r\n...\n\r\n.\r\n"),
	    EXPECT(OUT("a\r\n...\r\n\r\n"), .bare_lf = 1), &r);
	run_free(&r);
	/* "." then a bare CR: a lone dot that did not end the data, kept (stuffed) */
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\r\n.\r\r\n.\r\n"),
	    EXPECT(OUT("a\r\n.. \r\n"), .bare_cr = 1), &r);
	run_free(&r);
	/* "..\n": "." restuffed ".." and never the end */
	check_msg(DATAREAD_NORMALIZE, 0, 0, S("a\r\n..\n\r\n.\r\n"),
	    EXPECT(OUT("a\r\n..\r\n\r\n"), .bare_lf = 1), &r);
	run_free(&r);
	/* ".\n" first thing: the lone dot is content, stuffed again */
	check_msg(DATAREAD_NORMALIZE, 0, 0, S(".\n\r\n.\r\n"),
	    EXPECT(OUT("..\r\n\r\n"), .bare_lf = 1), &r);
	run_free(&r);
}

/* REJECT mode: after the first bad byte nothing at all is emitted. */
static void
test_reject_stops_output(void **state)
{
	struct run r;

	(void)state;
	check_msg(DATAREAD_REJECT, 0, 0, S("line1\r\nline2\r\nbad\nline3\r\nline4\r\n.\r\n"),
	    EXPECT(.errors = DATAREAD_EBARE_LF, .bare_lf = 1), &r);
	check_out_prefix(&r, "line1\r\nline2\r\nbad", 17);
	run_free(&r);
	check_msg(DATAREAD_REJECT, 0, 0, S("line1\r\nli\0ne2\r\nline3\r\n.\r\n"),
	    EXPECT(.errors = DATAREAD_ENUL, .nul = 1), &r);
	check_out_prefix(&r, "line1\r\nli", 9);
	run_free(&r);
	check_msg(DATAREAD_REJECT, 0, 0, S("line1\r\nline2\rline3\r\nline4\r\n.\r\n"),
	    EXPECT(.errors = DATAREAD_EBARE_CR, .bare_cr = 1), &r);
	check_out_prefix(&r, "line1\r\nline2", 12);
	run_free(&r);
	/* all kinds at once */
	check_msg(DATAREAD_REJECT, 0, 0, S("\0a\nb\rc\r\nd\r\n.\r\n"),
	    EXPECT(.errors = DATAREAD_EBARE_LF | DATAREAD_EBARE_CR | DATAREAD_ENUL, .bare_lf = 1,
	        .bare_cr = 1, .nul = 1),
	    &r);
	assert_int_equal(r.out.len, 0);
	run_free(&r);
}

/* ------------------------------------------------------------------ */
/* limits */

static void
test_max_size(void **state)
{
	static const char in[] = "0123456789\r\n0123456789\r\n.\r\n";
	static const char body[] = "0123456789\r\n0123456789\r\n";
	size_t n = 100000, i;
	char *big;
	struct run r;
	int m;

	(void)state;
	for (m = DATAREAD_REJECT; m <= DATAREAD_NORMALIZE; m++) {
		/* exactly the limit is fine */
		check_msg(m, 24, 0, S(in), EXPECT(OUT(body), SIZE(24)), &r);
		run_free(&r);
		/* one over: bad, read to the end, output stops */
		check_msg(m, 23, 0, S(in), EXPECT(.errors = DATAREAD_ETOOBIG), &r);
		check_out_prefix(&r, body, 23);
		run_free(&r);
		/* far over */
		check_msg(m, 5, 0, S(in), EXPECT(.errors = DATAREAD_ETOOBIG), &r);
		check_out_prefix(&r, body, 5);
		run_free(&r);
		/* an over-size message with bare LFs: both bits in REJECT mode */
		check_msg(m, 5, 0, S("0123456789\n0123\r\n.\r\n"),
		    EXPECT(.errors =
		               DATAREAD_ETOOBIG | (m == DATAREAD_REJECT ? DATAREAD_EBARE_LF : 0),
		        .bare_lf = 1),
		    &r);
		check_out_prefix(&r, "01234", 5);
		run_free(&r);
	}
	/* a big message far over the limit still finds its end */
	big = malloc(n + 16);
	assert_non_null(big);
	for (i = 0; i < n; i++)
		big[i] = (i % 100 == 98) ? '\r' : (i % 100 == 99) ? '\n' : 'x';
	memcpy(big + n, ".\r\nQUIT\r\n", 9);
	run_whole(&(struct params){DATAREAD_REJECT, 1000, 0}, big, n + 9, &r);
	assert_int_equal(r.rc, PC_OK);
	assert_int_equal(r.consumed, n + 3);
	assert_int_equal(r.errors, DATAREAD_ETOOBIG);
	check_out_prefix(&r, big, 1000);
	run_free(&r);
	free(big);
}

static void
test_max_line(void **state)
{
	size_t n = 50000;
	char *big;
	struct run r;
	int m;

	(void)state;
	for (m = DATAREAD_REJECT; m <= DATAREAD_NORMALIZE; m++) {
		/* a line of exactly max_line octets is fine */
		check_msg(m, 0, 10, S("short\r\n0123456789\r\nend\r\n.\r\n"),
		    EXPECT(OUT("short\r\n0123456789\r\nend\r\n"), SIZE(24)), &r);
		run_free(&r);
		/* one more: bad, read to the end, nothing of the long line past max_line */
		check_msg(m, 0, 10, S("short\r\n0123456789A\r\nend\r\n.\r\n"),
		    EXPECT(.errors = DATAREAD_ELONGLINE), &r);
		check_out_prefix(&r, "short\r\n0123456789", 17);
		run_free(&r);
		/* a long last line that then meets the end */
		check_msg(m, 0, 10, S("ok\r\n0123456789ABCDEF\r\n.\r\n"),
		    EXPECT(.errors = DATAREAD_ELONGLINE), &r);
		check_out_prefix(&r, "ok\r\n0123456789", 14);
		run_free(&r);
	}
	/* a stuffed line counts its wire octets: "..23456789" is 10 */
	check_msg(
	    DATAREAD_REJECT, 0, 10, S("..23456789\r\n.\r\n"), EXPECT(OUT("..23456789\r\n")), &r);
	run_free(&r);
	check_msg(DATAREAD_REJECT, 0, 10, S("..234567890\r\n.\r\n"),
	    EXPECT(.errors = DATAREAD_ELONGLINE), &r);
	check_out_prefix(&r, "..23456789", 10);
	run_free(&r);
	/* a huge line without any line end: bad, and no end until CRLF.CRLF */
	big = malloc(n + 16);
	assert_non_null(big);
	memset(big, 'z', n);
	memcpy(big + n, "\r\n.\r\nQUIT\r\n", 11);
	run_whole(&(struct params){DATAREAD_REJECT, 0, 998}, big, n + 11, &r);
	assert_int_equal(r.rc, PC_OK);
	assert_int_equal(r.consumed, n + 5);
	assert_int_equal(r.errors, DATAREAD_ELONGLINE);
	check_out_prefix(&r, big, 998);
	run_free(&r);
	free(big);
}

/* ------------------------------------------------------------------ */
/* random inputs against an independent model of the rules */

static uint32_t rnd_state = 12345;

static uint32_t
rnd(void)
{
	rnd_state = rnd_state * 1103515245u + 12345u;
	return (rnd_state >> 16) & 0x7fff;
}

/* Where the data ends: after the first "." CR LF at the start of the input or after CR LF. */
static size_t
model_end(const char *in, size_t len)
{
	size_t k;

	for (k = 0; k + 3 <= len; k++)
		if (memcmp(in + k, ".\r\n", 3) == 0 &&
		    (k == 0 || (k >= 2 && in[k - 2] == '\r' && in[k - 1] == '\n')))
			return k + 3;
	return 0;
}

/*
 * The NORMALIZE output of in[0..end) (end is just past the terminating
 * ".\r\n"): each line loses one leading wire dot, NULs go, stray CRs become
 * spaces, a line that then begins with "." gets one more, and every line
 * ends in CR LF. Counts the bare LFs, bare CRs and NULs.
 */
static size_t
model_normalize(
    const char *in, size_t end, char *out, unsigned long *lf, unsigned long *cr, unsigned long *nul)
{
	size_t i = 0, n = 0, msg_end = end - 3;
	char line[256];

	*lf = *cr = *nul = 0;
	while (i < msg_end) {
		size_t l = 0;
		int first = 1;

		for (;;) {
			char c = in[i];
			if (c == '\r' && i + 1 < msg_end && in[i + 1] == '\n') {
				i += 2;
				break;
			}
			if (c == '\n') {
				(*lf)++;
				i++;
				break;
			}
			/* A leading dot is a stuffing dot, unless the line
			 * ends right after it: then it is a lone "." that did
			 * not end the data, kept as content. */
			if (!(first && c == '.' && in[i + 1] != '\r' && in[i + 1] != '\n')) {
				if (c == '\0')
					(*nul)++;
				else if (c == '\r')
					(*cr)++, line[l++] = ' ';
				else
					line[l++] = c;
			}
			first = 0;
			i++;
		}
		if (l > 0 && line[0] == '.')
			out[n++] = '.';
		memcpy(out + n, line, l);
		n += l;
		out[n++] = '\r';
		out[n++] = '\n';
	}
	return n;
}

/* RFC 1870 §4: the size limit excludes the dots that stuff lines. */
static void
test_size_excludes_stuffing(void **state)
{
	char in[1200];
	size_t n = 0;
	struct run r;

	(void)state;
	/* 100 lines ".xxxxxxx" CR LF: 10 octets each in the message, 11 on the wire */
	for (int i = 0; i < 100; i++)
		n += (size_t)snprintf(in + n, sizeof(in) - n, "..xxxxxxx\r\n");
	memcpy(in + n, ".\r\n", 3);
	check_msg(
	    DATAREAD_REJECT, 1000, 0, in, n + 3, EXPECT(.out = in, .out_len = n, SIZE(1000)), &r);
	run_free(&r);
	/* one octet more is over */
	memcpy(in + n, "x\r\n.\r\n", 6);
	check_msg(DATAREAD_REJECT, 1002, 0, in, n + 6,
	    EXPECT(.errors = DATAREAD_ETOOBIG, SIZE(1003)), &r);
	run_free(&r);
}

/* unstuff_pieces - dataread_unstuff over in, cut after every cut-th octet
 * (0: whole), into out; the octets left */
static size_t
unstuff_pieces(const char *in, size_t n, size_t cut, char *out)
{
	size_t o = 0;
	int sol = 1;

	for (size_t i = 0; i < n;) {
		size_t k = cut == 0 || n - i < cut ? n - i : cut;
		memcpy(out + o, in + i, k);
		o += dataread_unstuff(out + o, k, &sol);
		i += k;
	}
	return o;
}

static void
test_unstuff(void **state)
{
	/* Only a dot that begins a line goes, one per line; a line that is
	 * just ".." keeps one; a dot after CR LF inside a piece or across
	 * pieces alike. */
	static const char in[] = "..a\r\nb.c\r\n...\r\n..\r\n\r\n.\r\nx.\r\n";
	static const char want[] = ".a\r\nb.c\r\n..\r\n.\r\n\r\n\r\nx.\r\n";
	char out[sizeof(in)];

	(void)state;
	for (size_t cut = 0; cut < sizeof(in); cut++) {
		size_t n = unstuff_pieces(in, sizeof(in) - 1, cut, out);
		assert_int_equal(n, sizeof(want) - 1);
		assert_memory_equal(out, want, n);
	}
}

static void
test_random_model(void **state)
{
	static const char alphabet[] = {'a', '.', '.', '\r', '\n', '\r', '\n', '\0', 'b'};
	char in[64], want[256];
	size_t iter;

	(void)state;
	for (iter = 0; iter < 20000; iter++) {
		size_t len = rnd() % 24, i, end, wlen, cuts[3];
		unsigned long lf, cr, nul;
		unsigned bad;
		struct params pn = {DATAREAD_NORMALIZE, 0, 0}, pr = {DATAREAD_REJECT, 0, 0};
		struct run r, r2;

		for (i = 0; i < len; i++)
			in[i] = alphabet[rnd() % sizeof(alphabet)];
		memcpy(in + len, "\r\n.\r\nQUIT\r\n", 11);
		len += 11;
		end = model_end(in, len);
		assert_true(end > 0);
		wlen = model_normalize(in, end, want, &lf, &cr, &nul);
		bad = (lf ? DATAREAD_EBARE_LF : 0) | (cr ? DATAREAD_EBARE_CR : 0) |
		    (nul ? DATAREAD_ENUL : 0);

		/* NORMALIZE: exactly the model */
		run_whole(&pn, in, len, &r);
		if (r.rc != PC_OK || r.consumed != end || r.out.len != wlen ||
		    (wlen > 0 && memcmp(r.out.buf, want, wlen) != 0) || r.errors != 0 ||
		    r.bare_lf != lf || r.bare_cr != cr || r.nul != nul) {
			char a[256], b[256], c[256];
			printable(a, sizeof(a), in, len);
			printable(b, sizeof(b), r.out.buf, r.out.len);
			printable(c, sizeof(c), want, wlen);
			fail_msg("normalize \"%s\": rc %d consumed %zu (want %zu) errors 0x%x "
			         "lf %lu/%lu cr %lu/%lu nul %lu/%lu\n  out  \"%s\"\n  want \"%s\"",
			    a, r.rc, r.consumed, end, r.errors, r.bare_lf, lf, r.bare_cr, cr, r.nul,
			    nul, b, c);
		}
		/* Un-stuffed, the output is the message, as long as size says:
		 * BDAT n carries exactly that. */
		{
			char u[256];
			int sol = 1;
			assert_true(r.out.len <= sizeof(u));
			if (r.out.len > 0)
				memcpy(u, r.out.buf, r.out.len);
			assert_int_equal(dataread_unstuff(u, r.out.len, &sol), r.size);
		}
		/* the same byte by byte and at two random cuts */
		cuts[0] = rnd() % (len + 1);
		cuts[1] = cuts[0] + rnd() % (len + 1 - cuts[0]);
		cuts[2] = len;
		run_pieces(&pn, in, len, cuts, 3, &r2);
		run_same(&r, &r2, "random cuts, first", cuts[0]);
		run_free(&r2);
		run_free(&r);

		/* REJECT: the same end and counts; the bad bits; a prefix of the model */
		run_whole(&pr, in, len, &r);
		if (r.rc != PC_OK || r.consumed != end || r.errors != bad || r.bare_lf != lf ||
		    r.bare_cr != cr || r.nul != nul) {
			char a[256];
			printable(a, sizeof(a), in, len);
			fail_msg("reject \"%s\": rc %d consumed %zu (want %zu) errors 0x%x (want "
			         "0x%x) lf %lu/%lu cr %lu/%lu nul %lu/%lu",
			    a, r.rc, r.consumed, end, r.errors, bad, r.bare_lf, lf, r.bare_cr, cr,
			    r.nul, nul);
		}
		if (bad == 0) {
			assert_int_equal(r.out.len, wlen);
			if (wlen > 0)
				assert_memory_equal(r.out.buf, want, wlen);
		} else {
			check_out_prefix(&r, want, wlen);
		}
		run_pieces(&pr, in, len, cuts, 3, &r2);
		run_same(&r, &r2, "random cuts, first", cuts[0]);
		run_free(&r2);
		run_free(&r);
	}
}

/* A feed of zero bytes is harmless, before and after data. */
static void
test_zero_feed(void **state)
{
	struct sink out = {0};
	struct dataread d;
	size_t used = 77;

	(void)state;
	dataread_init(&d, DATAREAD_REJECT, 0, 0, sink_emit, &out);
	assert_int_equal(dataread_feed(&d, "", 0, &used), PC_AGAIN);
	assert_int_equal(dataread_feed(&d, "ab\r\n", 4, &used), PC_AGAIN);
	assert_int_equal(dataread_feed(&d, "", 0, &used), PC_AGAIN);
	used = 77;
	assert_int_equal(dataread_feed(&d, ".\r\nX", 4, &used), PC_OK);
	assert_int_equal(used, 3);
	assert_int_equal(out.len, 4);
	assert_memory_equal(out.buf, "ab\r\n", 4);
	assert_int_equal(d.size, 4);
	assert_int_equal(d.errors, 0);
	free(out.buf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_clean),
	    cmocka_unit_test(test_empty_message),
	    cmocka_unit_test(test_pipelined_after_end),
	    cmocka_unit_test(test_no_end),
	    cmocka_unit_test(test_large),
	    cmocka_unit_test(test_dot_stuffing),
	    cmocka_unit_test(test_lone_dot),
	    cmocka_unit_test(test_smuggling),
	    cmocka_unit_test(test_smuggling_packets),
	    cmocka_unit_test(test_lf_only),
	    cmocka_unit_test(test_nul),
	    cmocka_unit_test(test_nul_dot),
	    cmocka_unit_test(test_stray_cr),
	    cmocka_unit_test(test_normalize_restuff),
	    cmocka_unit_test(test_reject_stops_output),
	    cmocka_unit_test(test_max_size),
	    cmocka_unit_test(test_max_line),
	    cmocka_unit_test(test_size_excludes_stuffing),
	    cmocka_unit_test(test_unstuff),
	    cmocka_unit_test(test_random_model),
	    cmocka_unit_test(test_zero_feed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
