/*
 * edit.h - what filters change in a message and its envelope at the end of
 * DATA (plugin.h, MESSAGE CHANGES; milter parity), and the renderer that
 * applies the changes when the message goes to the backend.
 *
 * The changes are recorded, never applied to the spool: filters keep
 * reading the message as it was received, and the backend gets the result
 * of one pure function, edit_emit. No session, no sockets.
 */
#ifndef PORTCULLIS_EDIT_H
#define PORTCULLIS_EDIT_H

#include <stddef.h>
#include <sys/types.h>

#include "message.h"
#include "spool.h"

struct evbuffer;
struct rcpt;

/* The longest header line a filter may write, without CR LF (RFC 5322
 * §2.1.1). */
#define EDIT_HEADER_MAX 998
/* The longest field a filter may write, folded lines and CR LFs counted. */
#define EDIT_FIELD_MAX 8192
/* Header changes and insertions in one transaction: a filter that loops
 * cannot grow the header section without bound. */
#define EDIT_MAX_HEADERS 1000
/* Recipients added, and deleted, in one transaction (like max_recipients). */
#define EDIT_MAX_RCPTS 1000
/* A line of a replacement body, without its CR LF (RFC 5322 §2.1.1): a
 * filter cannot make us send what a backend may refuse or cut. */
#define EDIT_BODY_LINE_MAX 998
/* An address a filter gives: RFC 5321 §4.5.3.1.3 allows 256 octets for a
 * path; a backend would refuse more. */
#define EDIT_ADDR_MAX 256
/* ESMTP parameters a filter gives for MAIL or RCPT. */
#define EDIT_PARAMS_MAX 512

/* One recipient added (with its parameters, "" for none) or deleted. */
struct edit_rcpt {
	char *addr;
	char *params;
	struct edit_rcpt *next;
};

/* The final envelope, as chain_envelope gives it to the session. */
struct chain_envelope {
	char *sender; /* the new sender, "" for the null sender; NULL: unchanged */
	char *sender_params; /* with sender: its parameters ("" for none; NULL:
	                      * the received MAIL's) */
	struct edit_rcpt *added; /* to add, in order, with their parameters */
	struct edit_rcpt *deleted; /* accepted recipients to leave out: their
	                            * addresses exactly as in struct rcpt */
};

/* A header field changed by change_header: a new line, or deleted. */
struct edit_field {
	int set;
	char *line; /* "Name: value\r\n"; NULL with set: deleted */
};

/* A field insert_header puts before the received field index. */
struct edit_insert {
	size_t index;
	char *line;
};

enum edit_body_state {
	EDIT_BODY_NONE = 0, /* the body as received */
	EDIT_BODY_OPEN, /* begun: being written */
	EDIT_BODY_DONE, /* ended: the new body goes to the backend */
	EDIT_BODY_FAILED, /* a bad write: the body as received */
};

struct edit {
	struct edit_field *field; /* m->nh of them, once one is changed */
	size_t nfield;
	struct edit_insert *ins; /* in the order inserted */
	size_t nins, capins;
	size_t nheaders; /* changes and insertions so far */
	struct spool body; /* the new body: wire form (CR LF, dot-stuffed) */
	enum edit_body_state body_state;
	int body_sol, body_cr; /* at a line's start; a CR waits for its LF */
	size_t body_max, body_size; /* RFC 1870 octets allowed, and so far */
	size_t body_line; /* octets of the line being written */
	struct chain_envelope env;
	size_t nadded, ndeleted;
};

/* edit_header_ok - a field a filter may write: a name of printable
 * characters without ':' (not starting with '.'), a value without control
 * characters but tabs, each line at most EDIT_HEADER_MAX octets (the first
 * counting "name: "), the whole at most EDIT_FIELD_MAX. The value may be
 * folded: a line end (LF or CR LF) followed by a line that starts with a
 * blank and has more than blanks on it (DKIM-Signature from a milter).
 * value NULL checks the name only. */
int edit_header_ok(const char *name, const char *value);
/* edit_header_line - "name: value\r\n" with every line end of a folded
 * value made CR LF; malloc'd, NULL if out of memory. Check first. */
char *edit_header_line(const char *name, const char *value);

/* edit_change_header - the n-th (0-based, as message_header counts)
 * received field called name gets value; value NULL deletes it. The last
 * change of a field wins, and it brings back a field remove_header marked.
 * 0, or -1: no such field, a bad name or value, EDIT_MAX_HEADERS, memory. */
int edit_change_header(
    struct edit *e, struct message *m, const char *name, size_t n, const char *value);

/* edit_insert_header - "name: value" before the received field index (0:
 * first; index >= m->nh: after the last). 0 or -1. */
int edit_insert_header(struct edit *e, size_t index, const char *name, const char *value);

/* edit_addr_ok - an address a backend accepts between < and >: at most
 * EDIT_ADDR_MAX octets, no control characters, no '<' '>', no blank outside
 * a quoted local part; "" only if empty_ok (the null sender). */
int edit_addr_ok(const char *addr, int empty_ok);
/* edit_params_ok - NULL or printable ASCII and blanks, at most
 * EDIT_PARAMS_MAX octets. */
int edit_params_ok(const char *params);
/* edit_addr_at - where an address splits into local part and domain: the
 * offset of the last '@' outside a quoted local part ("a@b"@example.com
 * splits before example.com), or -1 when there is none ("", postmaster,
 * "a@b"). */
ssize_t edit_addr_at(const char *addr);
/* edit_addr_eq - the same mailbox: local parts equal, domains equal in
 * any case. */
int edit_addr_eq(const char *a, const char *b);

/* edit_add_rcpt - add a recipient (orig: the accepted ones; dropped ones
 * do not count). Adding one already there is a no-op, adding one deleted
 * undoes the deletion. 0 or -1. */
int edit_add_rcpt(struct edit *e, const struct rcpt *orig, const char *addr, const char *params);
/* edit_delete_rcpt - leave a recipient out (an accepted one, or one added
 * before). 0, or -1 if there is no such recipient. */
int edit_delete_rcpt(struct edit *e, const struct rcpt *orig, const char *addr);
/* edit_change_sender - the sender becomes addr ("" the null sender). */
int edit_change_sender(struct edit *e, const char *addr, const char *params);

/* edit_body_begin - a new body replaces the received one (an earlier
 * replacement is dropped); threshold and dir as the received spool's, and
 * at most max octets (RFC 1870's count: max_message_size; 0: no limit). */
int edit_body_begin(struct edit *e, size_t threshold, const char *dir, size_t max);
/* edit_body_write - un-stuffed body octets: a bare LF becomes CR LF, a
 * line starting with '.' is stuffed; a bare CR, a NUL, a line over
 * EDIT_BODY_LINE_MAX octets or a body over the maximum fails the
 * replacement (-1; the received body stays). 0 or -1. */
int edit_body_write(struct edit *e, const char *buf, size_t len);
/* edit_body_end - the new body is complete (a last line without a line
 * end gets CR LF). 0 or -1. */
int edit_body_end(struct edit *e);

/* edit_changed - does the message differ from the spool (added is the
 * add_header buffer, or NULL)? */
int edit_changed(const struct edit *e, const struct evbuffer *added, const struct message *m);

/*
 * edit_emit - the message to send after the backend's 354, without the
 * final ".": the fields add_header prepended (added, copied, may be NULL),
 * then the received header fields in order with insertions before the
 * field they name, changed fields rewritten, removed and deleted ones left
 * out, then the blank line and the body as received, or the new body. With
 * only add_header and remove_header used, this is what backend.c sent
 * before ABI 2. The spools stay as they are. 0 or -1.
 */
int edit_emit(const struct edit *e, struct evbuffer *added, struct spool *orig,
    const struct message *m, struct evbuffer *out);

/* edit_free - forget every change (the transaction ended). */
void edit_free(struct edit *e);

#endif
