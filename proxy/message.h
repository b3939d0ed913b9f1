/*
 * message.h - the header section of a spooled message, indexed for filters:
 * each field's name, unfolded value and where its raw lines sit, and where
 * the body starts. Pure: it parses a buffer and never reads a file.
 */
#ifndef PORTCULLIS_MESSAGE_H
#define PORTCULLIS_MESSAGE_H

#include <stddef.h>
#include <sys/types.h>

struct msg_header {
	char *name; /* as written */
	char *value; /* unfolded, without leading blanks or the final CR LF */
	size_t vlen, vcap; /* its length, and what is allocated */
	size_t off, len; /* the raw field, continuation lines and CR LFs included */
	int removed; /* a filter asked to leave it out */
};

struct message {
	struct msg_header *h;
	size_t nh, cap;
	size_t body_off; /* the first octet after the blank line (or of the body) */
	int truncated; /* buf ended inside the header section (not whole) */
	size_t *byname; /* field indexes sorted by name (any case), then order */
};

/*
 * message_parse - index the header fields at the start of buf (len octets,
 * whole when buf holds the entire message). The header section ends at an
 * empty line, at a line that is not a header field (then the body starts
 * with that line), or at the end of what is in buf; when buf is not the
 * whole message and ends before the section does, truncated is set (the
 * caller refuses such a message: filters and the backend must agree on
 * where the headers end). Lookups by name are O(log n), so a message with
 * thousands of fields of one name costs no more than it must. Returns 0 or
 * -1 (out of memory).
 */
int message_parse(struct message *m, const char *buf, size_t len, int whole);

/* message_header - the n-th (0-based) field called name (any case), or NULL. */
const char *message_header(const struct message *m, const char *name, size_t n);

/* message_find - the index in m->h of the n-th (0-based) field called name
 * (any case), or -1. */
ssize_t message_find(const struct message *m, const char *name, size_t n);

/* message_remove - mark every field called name removed; returns how many. */
size_t message_remove(struct message *m, const char *name);

void message_free(struct message *m);

#endif
