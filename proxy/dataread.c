/*
 * dataread.c - the DATA framer (see dataread.h for the rules it enforces).
 *
 * Exports dataread_init and dataread_feed. One byte-at-a-time state machine,
 * with a fast path that copies runs of ordinary octets inside a line. The
 * states describe what has been seen but not yet emitted, so any split of the
 * input gives the same output.
 */
#include <string.h>

#include "dataread.h"

enum {
	DR_SOL, /* at the start of a line */
	DR_DOT, /* "." at the start of a line, held */
	DR_DOT_CR, /* "." CR at the start of a line, held (the end, if LF follows) */
	DR_CSTART, /* start of line content, nothing emitted yet: stuff a "." */
	DR_MID, /* inside a line */
	DR_CR, /* CR inside a line, held */
};

static void dr_flush(struct dataread *d);
static void dr_put(struct dataread *d, const char *p, size_t n);
static void dr_stage(struct dataread *d, const char *p, size_t n);
static void dr_stuff(struct dataread *d);
static void dr_lone_dot(struct dataread *d);
static void dr_content(struct dataread *d, const char *p, size_t n);
static void dr_eol(struct dataread *d, int real_crlf);
static void dr_flag(struct dataread *d, unsigned bit);
static void dr_bare_cr(struct dataread *d);
static size_t dr_mid(struct dataread *d, const char *buf, size_t len, size_t i);

/* dataread_init - prepare to frame one message */
void
dataread_init(struct dataread *d, enum dataread_mode mode, size_t max_size, size_t max_line,
    dataread_emit_fn emit, void *emit_arg)
{
	memset(d, 0, offsetof(struct dataread, out));
	d->mode = mode;
	d->max_size = max_size;
	d->max_line = max_line;
	d->emit = emit;
	d->emit_arg = emit_arg;
	d->state = DR_SOL;
	d->crlf_sol = 1; /* the DATA command line ended with CR LF */
	d->out_len = 0;
}

/* dr_flush - hand what is staged to the emitter */
static void
dr_flush(struct dataread *d)
{
	if (d->out_len > 0 && d->emit != NULL)
		d->emit(d->emit_arg, d->out, d->out_len);
	d->out_len = 0;
}

/*
 * dr_put - stage output octets. Past max_size only the part within the limit
 * is staged, and nothing after: the output never depends on how the input
 * was split.
 */
static void
dr_put(struct dataread *d, const char *p, size_t n)
{
	size_t keep = n;

	if (d->max_size != 0 && d->size + n > d->max_size)
		keep = d->size < d->max_size ? d->max_size - d->size : 0;
	d->size += n;
	dr_stage(d, p, keep);
	if (d->max_size != 0 && d->size > d->max_size)
		d->errors |= DATAREAD_ETOOBIG;
}

/* dr_stuff - the dot that stuffs a line beginning with "." (RFC 5321
 * §4.5.2): emitted, but not part of the message, so not counted in its
 * size (RFC 1870 §4: the size excludes the quoting dots) */
static void
dr_stuff(struct dataread *d)
{
	if (d->max_size == 0 || d->size < d->max_size)
		dr_stage(d, ".", 1);
}

/* dr_lone_dot - a "." right before a line end that is not the end of the
 * data (a bare CR or LF, or a line that began after one): content, not a
 * stuffing dot, so it is kept, and stuffed again */
static void
dr_lone_dot(struct dataread *d)
{
	dr_stuff(d);
	d->line_len = 0;
	dr_content(d, ".", 1);
	d->state = DR_MID;
}

/* dr_stage - octets for the emitter, unless the message is already refused
 * (it need not be kept: nothing is emitted after an error) */
static void
dr_stage(struct dataread *d, const char *p, size_t keep)
{
	if (d->errors == 0) {
		while (keep > 0) {
			size_t room = sizeof(d->out) - d->out_len;
			size_t k = keep < room ? keep : room;
			memcpy(d->out + d->out_len, p, k);
			d->out_len += k;
			p += k;
			keep -= k;
			if (d->out_len == sizeof(d->out))
				dr_flush(d);
		}
	}
}

/* dr_content - octets of line content, counted against the line limit */
static void
dr_content(struct dataread *d, const char *p, size_t n)
{
	size_t keep = n;

	if (d->max_line != 0 && d->line_len + n > d->max_line)
		keep = d->line_len < d->max_line ? d->max_line - d->line_len : 0;
	d->line_len += n;
	dr_put(d, p, keep);
	if (keep < n) {
		d->errors |= DATAREAD_ELONGLINE;
		dr_put(d, p + keep, n - keep); /* counted, not emitted */
	}
}

/* dr_flag - a framing fault: an error in REJECT mode */
static void
dr_flag(struct dataread *d, unsigned bit)
{
	if (bit == DATAREAD_EBARE_LF)
		d->bare_lf++;
	else if (bit == DATAREAD_EBARE_CR)
		d->bare_cr++;
	else
		d->nul++;
	if (d->mode == DATAREAD_REJECT)
		d->errors |= bit;
}

/* dr_eol - end a line; real_crlf says whether the client sent CR LF */
static void
dr_eol(struct dataread *d, int real_crlf)
{
	if (!real_crlf)
		dr_flag(d, DATAREAD_EBARE_LF);
	dr_put(d, "\r\n", 2);
	d->line_len = 0;
	d->state = DR_SOL;
	d->crlf_sol = real_crlf;
}

/* dr_bare_cr - a CR not followed by LF: a space when normalising */
static void
dr_bare_cr(struct dataread *d)
{
	dr_flag(d, DATAREAD_EBARE_CR);
	dr_content(d, " ", 1);
	d->state = DR_MID;
}

/*
 * dr_mid - consume octets of line content from buf[i]: the fast path. Returns
 * the index of the first octet it did not consume (a CR, LF or NUL).
 */
static size_t
dr_mid(struct dataread *d, const char *buf, size_t len, size_t i)
{
	size_t j = i;

	while (j < len && buf[j] != '\r' && buf[j] != '\n' && buf[j] != '\0')
		j++;
	if (j > i)
		dr_content(d, buf + i, j - i);
	return j;
}

/* dataread_feed - frame len octets of the message */
int
dataread_feed(struct dataread *d, const char *buf, size_t len, size_t *consumed)
{
	size_t i = 0;

	while (i < len) {
		char c = buf[i];

		switch (d->state) {
		case DR_SOL:
			if (c == '.') {
				d->state = DR_DOT;
				i++;
				continue;
			}
			d->state = DR_CSTART;
			continue;
		case DR_DOT:
			if (c == '\r' && d->crlf_sol) {
				d->state = DR_DOT_CR;
				i++;
				continue;
			}
			if (c == '\r' || c == '\n') {
				dr_lone_dot(d);
				continue;
			}
			/* RFC 5321 §4.5.2: the leading dot is removed. */
			d->line_len = 1; /* the dot was on the wire */
			d->state = DR_CSTART;
			continue;
		case DR_CSTART:
			/* A removed NUL must not turn "\0.\r\n" into a lone dot:
			 * the line is no longer a candidate for the end, and
			 * content that begins with a dot is stuffed again. */
			if (c == '\0') {
				dr_flag(d, DATAREAD_ENUL);
				i++;
				continue;
			}
			if (c == '.')
				dr_stuff(d);
			d->state = DR_MID;
			continue;
		case DR_DOT_CR:
			if (c == '\n') {
				i++;
				dr_flush(d);
				*consumed = i;
				return PC_OK;
			}
			/* "." and a bare CR: as a line of its own, kept. */
			dr_lone_dot(d);
			dr_bare_cr(d);
			continue;
		case DR_CR:
			if (c == '\n') {
				i++;
				dr_eol(d, 1);
				continue;
			}
			dr_bare_cr(d);
			continue;
		case DR_MID:
			if (c == '\r') {
				d->state = DR_CR;
				i++;
			} else if (c == '\n') {
				i++;
				dr_eol(d, 0);
			} else if (c == '\0') {
				dr_flag(d, DATAREAD_ENUL);
				i++;
			} else {
				i = dr_mid(d, buf, len, i);
			}
			continue;
		}
	}
	dr_flush(d);
	*consumed = len;
	return PC_AGAIN;
}

/* dataread_unstuff - see dataread.h */
size_t
dataread_unstuff(char *p, size_t n, int *sol)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (*sol && p[i] == '.') {
			*sol = 0;
			continue;
		}
		*sol = p[i] == '\n';
		p[o++] = p[i];
	}
	return o;
}
