/*
 * spamd_reply.h - the parser of spamd's answer to SYMBOLS (the spamc/spamd
 * protocol, SPAMC/1.5): shared by the spamd plugin (plugins/spamd.c) and
 * its unit test (tests/unit/test_spamd_reply.c).
 *
 * Static inline functions only (a header, not a plugin: the Makefile makes
 * a plugin of every .c file in plugins/):
 *
 *	spamd_reply_init    a fresh parser state
 *	spamd_reply_parse   what the bytes so far say: SPAMD_AGAIN (more
 *	                    needed), SPAMD_DONE (r holds the answer) or
 *	                    SPAMD_BAD (r->error says why)
 *
 * The answer spamd writes (spamd's check(), SpamAssassin 3.x and 4.x):
 *
 *	SPAMD/1.1 0 EX_OK\r\n
 *	Content-length: 33\r\n
 *	Spam: False ; -0.0 / 5.0\r\n
 *	\r\n
 *	MSGID_SHORT,NO_RECEIVED,NO_RELAYS
 *
 * and, when it refuses a request, only a status line with another code
 * ("SPAMD/1.0 76 Bad header line: ...") before it closes. spamd is a peer:
 * a broken or hostile one must not make us read without bound or accept
 * garbage as a verdict. So every part has a named limit, the grammar is
 * strict (one status line, Content-length and Spam exactly once, a body of
 * exactly Content-length octets and nothing after it, rule names of
 * [A-Za-z0-9_] separated by commas), and anything else is SPAMD_BAD.
 *
 * The parser is pure (bytes in, a verdict out) and resumable: the caller
 * keeps all the bytes received in one buffer and calls it again with the
 * longer buffer after each read; it remembers how far it has looked, so a
 * server that sends one octet at a time costs linear work, not quadratic.
 */
#ifndef PORTCULLIS_SPAMD_REPLY_H
#define PORTCULLIS_SPAMD_REPLY_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The status line and each header line, without CR LF: spamd's are under
 * 80 octets; a longer one is garbage, and we stop reading there. */
#define SPAMD_LINE_MAX 512
/* Header lines after the status line: spamd sends two or four. */
#define SPAMD_HEADERS_MAX 32
/* The whole head: status line, headers and the blank line. */
#define SPAMD_HEAD_MAX ((SPAMD_HEADERS_MAX + 2) * (SPAMD_LINE_MAX + 2))
/* The rule list (Content-length): SpamAssassin 4 has about 2000 rules of
 * at most ~30 characters, so even all of them at once fit. */
#define SPAMD_SYMBOLS_MAX 65536
/* The most a whole answer may take: what the caller may buffer. */
#define SPAMD_REPLY_MAX (SPAMD_HEAD_MAX + SPAMD_SYMBOLS_MAX)
/* A score as written: "-12345.678". Scores past that are garbage. */
#define SPAMD_NUMBER_MAX 16
/* The status text kept for the log. */
#define SPAMD_MESSAGE_MAX 128

enum spamd_parse {
	SPAMD_AGAIN = 0,
	SPAMD_DONE,
	SPAMD_BAD,
};

struct spamd_reply {
	/* parser state */
	size_t scanned; /* octets searched for the end of the head */
	size_t status_len; /* the status line with its CR LF, once seen */
	size_t head_len; /* the head with its blank line, once parsed */
	size_t clen; /* Content-length */
	/* the answer */
	int code; /* the status code: 0 is EX_OK; anything else is spamd's error */
	char message[SPAMD_MESSAGE_MAX]; /* the status text ("EX_OK") */
	int spam; /* Spam: True/Yes */
	char score[SPAMD_NUMBER_MAX + 1], required[SPAMD_NUMBER_MAX + 1]; /* as written */
	double score_v, required_v;
	const char *symbols; /* into the caller's buffer, symbols_len octets */
	size_t symbols_len;
	const char *error; /* SPAMD_BAD: why, for the log */
};

static inline void
spamd_reply_init(struct spamd_reply *r)
{
	memset(r, 0, sizeof(*r));
	r->code = -1;
}

/* spamd_find_crlf - the offset of the first CR LF in buf[from, len), or -1 */
static inline long
spamd_find_crlf(const char *buf, size_t from, size_t len)
{
	for (size_t i = from; i + 1 < len; i++)
		if (buf[i] == '\r' && buf[i + 1] == '\n')
			return (long)i;
	return -1;
}

/* spamd_digits - the count of decimal digits at s (up to n octets) */
static inline size_t
spamd_digits(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	return i;
}

/* spamd_status - "SPAMD/1.1 0 EX_OK": 0, or -1 with r->error */
static inline int
spamd_status(const char *s, size_t n, struct spamd_reply *r)
{
	size_t i = 6, d, j;
	long code = 0;

	if (n < 6 || memcmp(s, "SPAMD/", 6) != 0)
		return r->error = "the answer does not start with SPAMD/", -1;
	if ((d = spamd_digits(s + i, n - i)) == 0 || d > 3)
		return r->error = "bad protocol version in the status line", -1;
	i += d;
	if (i >= n || s[i++] != '.' || (d = spamd_digits(s + i, n - i)) == 0 || d > 3)
		return r->error = "bad protocol version in the status line", -1;
	i += d;
	if (i >= n || s[i++] != ' ' || (d = spamd_digits(s + i, n - i)) == 0 || d > 3)
		return r->error = "bad status code", -1;
	for (j = 0; j < d; j++)
		code = code * 10 + (s[i + j] - '0');
	i += d;
	if (i >= n || s[i++] != ' ')
		return r->error = "bad status code", -1;
	for (j = 0; i + j < n; j++) {
		unsigned char c = (unsigned char)s[i + j];
		if (c < 0x20 || c > 0x7e)
			return r->error = "control or 8-bit octets in the status line", -1;
		if (j + 1 < sizeof(r->message))
			r->message[j] = (char)c;
	}
	r->message[j < sizeof(r->message) ? j : sizeof(r->message) - 1] = '\0';
	r->code = (int)code;
	return 0;
}

/* spamd_number - "-0.0", "1000.0", "5": a score, copied to out; the
 * length taken, or 0 */
static inline size_t
spamd_number(const char *s, size_t n, char *out, double *v)
{
	size_t i = 0, d;

	if (i < n && s[i] == '-')
		i++;
	if ((d = spamd_digits(s + i, n - i)) == 0 || d > 9)
		return 0;
	i += d;
	if (i < n && s[i] == '.') {
		i++;
		if ((d = spamd_digits(s + i, n - i)) == 0 || d > 5)
			return 0;
		i += d;
	}
	if (i > SPAMD_NUMBER_MAX)
		return 0;
	memcpy(out, s, i);
	out[i] = '\0';
	*v = strtod(out, NULL);
	return isfinite(*v) ? i : 0;
}

/* spamd_blanks - skip spaces */
static inline size_t
spamd_blanks(const char *s, size_t n, size_t i)
{
	while (i < n && s[i] == ' ')
		i++;
	return i;
}

/* spamd_spam - "True ; 15.0 / 5.0": 0, or -1 with r->error */
static inline int
spamd_spam(const char *s, size_t n, struct spamd_reply *r)
{
	static const struct {
		const char *word;
		int spam;
	} words[] = {{"True", 1}, {"False", 0}, {"Yes", 1}, {"No", 0}};
	size_t i = n, k, len;

	for (k = 0; k < sizeof(words) / sizeof(words[0]); k++) {
		len = strlen(words[k].word);
		if (n >= len && memcmp(s, words[k].word, len) == 0 &&
		    (n == len || s[len] == ' ' || s[len] == ';')) {
			r->spam = words[k].spam;
			i = len;
			break;
		}
	}
	if (i == n)
		return r->error = "bad Spam header: want True or False", -1;
	i = spamd_blanks(s, n, i);
	if (i >= n || s[i++] != ';')
		return r->error = "bad Spam header: no ';'", -1;
	i = spamd_blanks(s, n, i);
	if ((len = spamd_number(s + i, n - i, r->score, &r->score_v)) == 0)
		return r->error = "bad Spam header: bad score", -1;
	i = spamd_blanks(s, n, i + len);
	if (i >= n || s[i++] != '/')
		return r->error = "bad Spam header: no '/'", -1;
	i = spamd_blanks(s, n, i);
	if ((len = spamd_number(s + i, n - i, r->required, &r->required_v)) == 0)
		return r->error = "bad Spam header: bad threshold", -1;
	if (spamd_blanks(s, n, i + len) != n)
		return r->error = "bad Spam header: trailing octets", -1;
	return 0;
}

/* spamd_header - one "Name: value" line of the head; *seen counts
 * Content-length (1) and Spam (2) */
static inline int
spamd_header(const char *s, size_t n, struct spamd_reply *r, int *seen)
{
	size_t i = 0, d;

	while (i < n &&
	    (s[i] == '-' || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
	        (s[i] >= '0' && s[i] <= '9')))
		i++;
	if (i == 0 || i >= n || s[i] != ':')
		return r->error = "a header line is not \"Name: value\"", -1;
	for (d = i + 1; d < n; d++)
		if ((unsigned char)s[d] < 0x20 || (unsigned char)s[d] > 0x7e)
			return r->error = "control or 8-bit octets in a header line", -1;
	if (i == 14 && strncasecmp(s, "Content-length", 14) == 0) {
		if (*seen & 1)
			return r->error = "Content-length twice", -1;
		*seen |= 1;
		i = spamd_blanks(s, n, i + 1);
		if ((d = spamd_digits(s + i, n - i)) == 0 || d > 6 || i + d != n)
			return r->error = "bad Content-length", -1;
		r->clen = (size_t)strtoul(s + i, NULL, 10);
		if (r->clen > SPAMD_SYMBOLS_MAX)
			return r->error = "Content-length too large", -1;
		return 0;
	}
	if (i == 4 && strncasecmp(s, "Spam", 4) == 0) {
		if (*seen & 2)
			return r->error = "Spam header twice", -1;
		*seen |= 2;
		i = spamd_blanks(s, n, i + 1);
		return spamd_spam(s + i, n - i, r);
	}
	return 0; /* another header: ignored */
}

/* spamd_head - the header lines from the status line's end to the blank
 * line at head_end: 0, or -1 with r->error */
static inline int
spamd_head(const char *buf, size_t head_end, struct spamd_reply *r)
{
	size_t pos = r->status_len, count = 0;
	int seen = 0;
	long e;

	while (pos < head_end) {
		if ((e = spamd_find_crlf(buf, pos, head_end + 2)) < 0)
			return r->error = "a header line without CR LF", -1;
		if ((size_t)e - pos > SPAMD_LINE_MAX)
			return r->error = "a header line too long", -1;
		if (++count > SPAMD_HEADERS_MAX)
			return r->error = "too many header lines", -1;
		if (spamd_header(buf + pos, (size_t)e - pos, r, &seen) < 0)
			return -1;
		pos = (size_t)e + 2;
	}
	if (!(seen & 1))
		return r->error = "no Content-length", -1;
	if (!(seen & 2))
		return r->error = "no Spam header", -1;
	return 0;
}

/* spamd_symbols - "GTUBE,NO_RECEIVED" (a CR LF at the end is allowed, as
 * spamd sends for protocol 1.2): 0, or -1 with r->error */
static inline int
spamd_symbols(const char *s, size_t n, struct spamd_reply *r)
{
	size_t i, item = 0;

	if (n >= 2 && s[n - 2] == '\r' && s[n - 1] == '\n')
		n -= 2;
	r->symbols = s;
	r->symbols_len = n;
	for (i = 0; i < n; i++) {
		char c = s[i];
		if (c == ',') {
			if (item == 0)
				return r->error = "an empty rule name", -1;
			item = 0;
		} else if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '_') {
			if (++item > 128)
				return r->error = "a rule name too long", -1;
		} else {
			return r->error = "a rule name with a character not in [A-Za-z0-9_]", -1;
		}
	}
	if (n > 0 && item == 0)
		return r->error = "an empty rule name", -1;
	return 0;
}

/* spamd_reply_parse - see the file header. buf holds everything received
 * so far (len octets); eof says the server closed. After SPAMD_DONE or
 * SPAMD_BAD the state is final. */
static inline enum spamd_parse
spamd_reply_parse(const char *buf, size_t len, int eof, struct spamd_reply *r)
{
	long e;
	size_t from;

	if (len > SPAMD_REPLY_MAX)
		return r->error = "the answer is too long", SPAMD_BAD;
	if (r->status_len == 0) {
		from = r->scanned > 0 ? r->scanned - 1 : 0;
		if ((e = spamd_find_crlf(buf, from, len)) < 0) {
			r->scanned = len;
			if (len > SPAMD_LINE_MAX + 1)
				return r->error = "the status line is too long", SPAMD_BAD;
			if (eof)
				return r->error = len ? "the status line was cut short"
				                      : "the server closed without an answer",
				       SPAMD_BAD;
			return SPAMD_AGAIN;
		}
		if ((size_t)e > SPAMD_LINE_MAX)
			return r->error = "the status line is too long", SPAMD_BAD;
		if (spamd_status(buf, (size_t)e, r) < 0)
			return SPAMD_BAD;
		r->status_len = (size_t)e + 2;
		r->scanned = r->status_len;
		/* An error is a status line alone: no need to wait for more. */
		if (r->code != 0)
			return SPAMD_DONE;
	}
	if (r->head_len == 0) {
		/* The blank line: a CR LF right after the previous one. */
		from = r->scanned >= 2 ? r->scanned - 2 : 0;
		for (;;) {
			if ((e = spamd_find_crlf(buf, from, len)) < 0) {
				r->scanned = len;
				if (len > SPAMD_HEAD_MAX)
					return r->error = "the header section is too long",
					       SPAMD_BAD;
				if (eof)
					return r->error = "the header section was cut short",
					       SPAMD_BAD;
				return SPAMD_AGAIN;
			}
			if ((size_t)e >= 2 && buf[e - 2] == '\r' && buf[e - 1] == '\n' &&
			    (size_t)e >= r->status_len)
				break;
			if ((size_t)e == r->status_len)
				break; /* no header lines at all */
			from = (size_t)e + 2;
		}
		if ((size_t)e + 2 > SPAMD_HEAD_MAX)
			return r->error = "the header section is too long", SPAMD_BAD;
		if (spamd_head(buf, (size_t)e, r) < 0)
			return SPAMD_BAD;
		r->head_len = (size_t)e + 2;
	}
	if (len - r->head_len < r->clen) {
		if (eof)
			return r->error = "the rule list was cut short", SPAMD_BAD;
		return SPAMD_AGAIN;
	}
	if (len - r->head_len > r->clen)
		return r->error = "octets after the rule list", SPAMD_BAD;
	if (spamd_symbols(buf + r->head_len, r->clen, r) < 0)
		return SPAMD_BAD;
	return SPAMD_DONE;
}

#endif
