/*
 * dataread.h - the DATA framer: turns the bytes a client sends after our 354
 * into the dot-stuffed CRLF lines we send to the backend, and finds the end.
 *
 * Pure and resumable: feed it any split of the input, one byte at a time if you
 * like, and it emits the same output and stops at the same place. The rules
 * (DESIGN.md §2 invariants, SMTP smuggling, CVE-2023-51764):
 *  - only CR LF "." CR LF ends the data; ".\n", "\n.\n", "\r.\r" and friends
 *    never do;
 *  - in REJECT mode a bare LF, a bare CR or a NUL marks the message bad (the
 *    caller refuses it once the end is seen); nothing more is emitted;
 *  - in NORMALIZE mode a bare LF becomes CR LF, a stray CR a space, a NUL is
 *    removed, and a line that then begins with "." is stuffed again;
 *  - a line of mail is unstuffed (RFC 5321 §4.5.2: a leading "." is removed)
 *    and restuffed on output, so what the backend gets is canonical;
 *  - a message over max_size, or a line over max_line octets, marks the
 *    message bad; the rest is read to the end and not emitted.
 * The emitted bytes are exactly what goes to the backend between its 354 and
 * our final ".\r\n"; for clean input they equal the input.
 */
#ifndef PORTCULLIS_DATAREAD_H
#define PORTCULLIS_DATAREAD_H

#include <stddef.h>

#include "portcullis/status.h"

enum dataread_mode {
	DATAREAD_REJECT = 0,
	DATAREAD_NORMALIZE,
};

/* Error bits in struct dataread.errors. */
#define DATAREAD_EBARE_LF 0x01u
#define DATAREAD_EBARE_CR 0x02u
#define DATAREAD_ENUL 0x04u
#define DATAREAD_ETOOBIG 0x08u
#define DATAREAD_ELONGLINE 0x10u

#define DATAREAD_OUTBUF 8192

typedef void (*dataread_emit_fn)(void *arg, const char *bytes, size_t len);

struct dataread {
	enum dataread_mode mode;
	size_t max_size; /* octets of emitted message; 0 = no limit */
	size_t max_line; /* octets of one line without its CRLF; 0 = no limit */
	dataread_emit_fn emit;
	void *emit_arg;

	int state;
	int crlf_sol; /* this line began after a real CR LF */
	size_t line_len; /* octets of the current line so far (wire form) */
	size_t size; /* octets of the message: CR LF counted, stuffing dots not
	              * (RFC 1870 §4); max_size applies to this */
	unsigned errors; /* DATAREAD_E* bits */
	unsigned long bare_lf, bare_cr, nul; /* counts, for the log */
	char out[DATAREAD_OUTBUF];
	size_t out_len;
};

void dataread_init(struct dataread *d, enum dataread_mode mode, size_t max_size, size_t max_line,
    dataread_emit_fn emit, void *emit_arg);

/*
 * dataread_feed - frame len bytes. Returns PC_AGAIN when all bytes were
 * consumed and the end was not seen, or PC_OK when the end was seen; then
 * *consumed tells how many bytes belonged to the message (the rest is the
 * next command, pipelined). Output is flushed to emit before returning.
 */
int dataread_feed(struct dataread *d, const char *buf, size_t len, size_t *consumed);

/*
 * dataread_unstuff - n octets of what the framer emitted (wire form), in
 * place, without the dots that stuff a line beginning with "." (RFC 5321
 * §4.5.2): the message itself, as filters read it and BDAT carries it.
 * *sol says the next octet starts a line: 1 before the first piece, then
 * carried from one piece to the next. Returns the octets left.
 */
size_t dataread_unstuff(char *p, size_t n, int *sol);

#endif
