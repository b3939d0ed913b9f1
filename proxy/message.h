/*
 * message.h - the header section of a spooled message, indexed for filters:
 * each field's name, unfolded value and where its raw lines sit, and where
 * the body starts. Pure: it parses a buffer and never reads a file.
 */
#ifndef PORTCULLIS_MESSAGE_H
#define PORTCULLIS_MESSAGE_H

#include <stddef.h>

/* How much of a message is read to find its header section. A header
 * section larger than this is indexed up to here; the rest counts as body.
 * It bounds what one message can make us hold in memory for filters. */
#define MESSAGE_HEADER_MAX (256 * 1024)

struct msg_header {
	char *name; /* as written */
	char *value; /* unfolded, without leading blanks or the final CR LF */
	size_t off, len; /* the raw field, continuation lines and CR LFs included */
	int removed; /* a filter asked to leave it out */
};

struct message {
	struct msg_header *h;
	size_t nh, cap;
	size_t body_off; /* the first octet after the blank line (or of the body) */
};

/*
 * message_parse - index the header fields at the start of buf (len octets,
 * whole when buf holds the entire message). The header section ends at an
 * empty line, at a line that is not a header field (then the body starts
 * with that line), or at the end of what is in buf. Returns 0 or -1 (out of
 * memory).
 */
int message_parse(struct message *m, const char *buf, size_t len, int whole);

/* message_header - the n-th (0-based) field called name (any case), or NULL. */
const char *message_header(const struct message *m, const char *name, size_t n);

/* message_remove - mark every field called name removed; returns how many. */
size_t message_remove(struct message *m, const char *name);

void message_free(struct message *m);

#endif
