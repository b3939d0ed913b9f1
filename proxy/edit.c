/*
 * edit.c - message and envelope changes, and the renderer (see edit.h).
 *
 * Exports edit_header_ok, edit_change_header, edit_insert_header,
 * edit_addr_ok, edit_params_ok, edit_addr_at, edit_addr_eq, edit_add_rcpt,
 * edit_delete_rcpt, edit_change_sender, edit_body_begin, edit_body_write,
 * edit_body_end, edit_changed, edit_emit and edit_free. The new body is
 * kept as the received one is (dataread.c): CR LF line ends, lines that
 * start with '.' stuffed (RFC 5321 §4.5.2), in a spool (memory, then an
 * unlinked file), so a large replacement costs disk, not RAM.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "chain.h"
#include "edit.h"

static int header_count(struct edit *e);
static struct edit_rcpt **rcpt_find(struct edit_rcpt **list, const char *addr);
static int rcpt_push(struct edit_rcpt **list, const char *addr, const char *params);
static void rcpt_free(struct edit_rcpt *r);
static const struct rcpt *orig_find(const struct rcpt *orig, const char *addr);
static int outside_quotes(int *quoted, int *escaped, char c);
static void body_put(struct edit *e, char *buf, size_t *o, char c);
static int emit_inserts(const struct edit *e, size_t at, size_t nh, struct evbuffer *out);
static int emit_body(const struct edit *e, struct spool *orig, const struct message *m, size_t rest,
    struct evbuffer *out);

/* ---- header fields ---- */

/* edit_header_ok - see edit.h */
int
edit_header_ok(const char *name, const char *value)
{
	size_t n = 0, line, total;

	if (name == NULL || name[0] == '.')
		return 0;
	for (; name[n] != '\0'; n++) {
		unsigned char c = (unsigned char)name[n];
		if (c <= ' ' || c > '~' || c == ':')
			return 0;
	}
	if (n == 0 || n > 76)
		return 0;
	if (value == NULL)
		return 1;
	line = total = n + 2;
	for (const char *p = value; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '\r' && p[1] == '\n')
			c = (unsigned char)*++p;
		if (c == '\n') {
			/* Folding (RFC 5322 §2.2.3): the next line starts with
			 * a blank and has more than blanks on it, so it can
			 * neither end the header section nor start a field. */
			const char *q = p + 1;
			if (*q != ' ' && *q != '\t')
				return 0;
			while (*q == ' ' || *q == '\t')
				q++;
			if (*q == '\0' || *q == '\r' || *q == '\n')
				return 0;
			line = 0;
			total += 2;
			continue;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 0;
		if (++line > EDIT_HEADER_MAX || ++total > EDIT_FIELD_MAX)
			return 0;
	}
	return 1;
}

/* edit_header_line - see edit.h */
char *
edit_header_line(const char *name, const char *value)
{
	size_t nl = 0, len;
	char *line, *o;

	for (const char *p = value; *p != '\0'; p++)
		nl += *p == '\n' && (p == value || p[-1] != '\r');
	len = strlen(name) + 2 + strlen(value) + nl + 2;
	if ((line = malloc(len + 1)) == NULL)
		return NULL;
	o = line + sprintf(line, "%s: ", name);
	for (const char *p = value; *p != '\0'; p++) {
		if (*p == '\n' && (p == value || p[-1] != '\r'))
			*o++ = '\r';
		*o++ = *p;
	}
	memcpy(o, "\r\n", 3);
	return line;
}

/* header_count - one more change or insertion, within EDIT_MAX_HEADERS */
static int
header_count(struct edit *e)
{
	if (e->nheaders >= EDIT_MAX_HEADERS)
		return -1;
	e->nheaders++;
	return 0;
}

/* edit_change_header - see edit.h */
int
edit_change_header(struct edit *e, struct message *m, const char *name, size_t n, const char *value)
{
	ssize_t i;
	char *line = NULL;

	if (!edit_header_ok(name, value) || (i = message_find(m, name, n)) < 0)
		return -1;
	if (value != NULL && (line = edit_header_line(m->h[i].name, value)) == NULL)
		return -1;
	if (e->field == NULL) {
		if ((e->field = calloc(m->nh, sizeof(*e->field))) == NULL) {
			free(line);
			return -1;
		}
		e->nfield = m->nh;
	}
	if ((size_t)i >= e->nfield || header_count(e) != 0) {
		free(line);
		return -1;
	}
	free(e->field[i].line);
	e->field[i].set = 1;
	e->field[i].line = line;
	/* The last change of a field wins, even over remove_header. */
	m->h[i].removed = 0;
	return 0;
}

/* edit_insert_header - see edit.h */
int
edit_insert_header(struct edit *e, size_t index, const char *name, const char *value)
{
	char *line;

	if (!edit_header_ok(name, value) || value == NULL)
		return -1;
	if (e->nins == e->capins) {
		size_t cap = e->capins ? e->capins * 2 : 8;
		struct edit_insert *t = realloc(e->ins, cap * sizeof(*t));
		if (t == NULL)
			return -1;
		e->ins = t;
		e->capins = cap;
	}
	if ((line = edit_header_line(name, value)) == NULL)
		return -1;
	if (header_count(e) != 0) {
		free(line);
		return -1;
	}
	e->ins[e->nins].index = index;
	e->ins[e->nins].line = line;
	e->nins++;
	return 0;
}

/* ---- the envelope ---- */

/* outside_quotes - step a quoted-string scan (RFC 5321 §4.1.2
 * Quoted-string: '"' opens and closes, '\\' escapes inside) over c; 1 if
 * c stands outside quotes and is not itself a quote */
static int
outside_quotes(int *quoted, int *escaped, char c)
{
	if (*escaped) {
		*escaped = 0;
		return 0;
	}
	if (*quoted && c == '\\') {
		*escaped = 1;
		return 0;
	}
	if (c == '"') {
		*quoted = !*quoted;
		return 0;
	}
	return !*quoted;
}

/* edit_addr_ok - see edit.h */
int
edit_addr_ok(const char *addr, int empty_ok)
{
	int quoted = 0, escaped = 0;
	size_t n;

	if (addr == NULL)
		return 0;
	for (n = 0; addr[n] != '\0'; n++) {
		unsigned char c = (unsigned char)addr[n];
		if (n >= EDIT_ADDR_MAX || c < 0x20 || c == 0x7f || c == '<' || c == '>')
			return 0;
		if (outside_quotes(&quoted, &escaped, (char)c) && c == ' ')
			return 0;
	}
	return !quoted && (n > 0 || empty_ok);
}

/* edit_params_ok - see edit.h */
int
edit_params_ok(const char *params)
{
	size_t n;

	if (params == NULL)
		return 1;
	for (n = 0; params[n] != '\0'; n++) {
		unsigned char c = (unsigned char)params[n];
		if (n >= EDIT_PARAMS_MAX || c < ' ' || c > '~')
			return 0;
	}
	return 1;
}

/* edit_addr_at - see edit.h. A quoted local part may hold '@' and
 * escaped quotes (RFC 5321 §4.1.2 Quoted-string). */
ssize_t
edit_addr_at(const char *addr)
{
	ssize_t at = -1;
	int quoted = 0, escaped = 0;

	if (addr == NULL)
		return -1;
	for (ssize_t i = 0; addr[i] != '\0'; i++) {
		if (outside_quotes(&quoted, &escaped, addr[i]) && addr[i] == '@')
			at = i;
	}
	return at;
}

/* edit_addr_eq - see edit.h */
int
edit_addr_eq(const char *a, const char *b)
{
	ssize_t x = edit_addr_at(a), y = edit_addr_at(b);

	if (x != y)
		return 0;
	if (x < 0)
		return strcmp(a, b) == 0;
	return strncmp(a, b, (size_t)x) == 0 && strcasecmp(a + x, b + y) == 0;
}

static struct edit_rcpt **
rcpt_find(struct edit_rcpt **list, const char *addr)
{
	for (; *list != NULL; list = &(*list)->next) {
		if (edit_addr_eq((*list)->addr, addr))
			return list;
	}
	return NULL;
}

/* rcpt_push - append to a list */
static int
rcpt_push(struct edit_rcpt **list, const char *addr, const char *params)
{
	struct edit_rcpt *r = calloc(1, sizeof(*r));

	if (r == NULL || (r->addr = strdup(addr)) == NULL ||
	    (r->params = strdup(params ? params : "")) == NULL) {
		rcpt_free(r);
		return -1;
	}
	while (*list != NULL)
		list = &(*list)->next;
	*list = r;
	return 0;
}

static void
rcpt_free(struct edit_rcpt *r)
{
	if (r == NULL)
		return;
	free(r->addr);
	free(r->params);
	free(r);
}

/* orig_find - an accepted (not dropped) recipient */
static const struct rcpt *
orig_find(const struct rcpt *orig, const char *addr)
{
	for (; orig != NULL; orig = orig->next) {
		if (!orig->dropped && edit_addr_eq(orig->addr, addr))
			return orig;
	}
	return NULL;
}

/* edit_add_rcpt - see edit.h */
int
edit_add_rcpt(struct edit *e, const struct rcpt *orig, const char *addr, const char *params)
{
	struct edit_rcpt **d;

	if (!edit_addr_ok(addr, 0) || !edit_params_ok(params))
		return -1;
	if ((d = rcpt_find(&e->env.deleted, addr)) != NULL) {
		struct edit_rcpt *r = *d;
		*d = r->next;
		rcpt_free(r);
		e->ndeleted--;
		return 0;
	}
	if (orig_find(orig, addr) != NULL || rcpt_find(&e->env.added, addr) != NULL)
		return 0;
	if (e->nadded >= EDIT_MAX_RCPTS || rcpt_push(&e->env.added, addr, params) != 0)
		return -1;
	e->nadded++;
	return 0;
}

/* edit_delete_rcpt - see edit.h */
int
edit_delete_rcpt(struct edit *e, const struct rcpt *orig, const char *addr)
{
	const struct rcpt *o;
	struct edit_rcpt **a;

	if (addr == NULL)
		return -1;
	if ((a = rcpt_find(&e->env.added, addr)) != NULL) {
		struct edit_rcpt *r = *a;
		*a = r->next;
		rcpt_free(r);
		e->nadded--;
		return 0;
	}
	if ((o = orig_find(orig, addr)) == NULL)
		return -1;
	if (rcpt_find(&e->env.deleted, o->addr) != NULL)
		return 0;
	if (e->ndeleted >= EDIT_MAX_RCPTS || rcpt_push(&e->env.deleted, o->addr, NULL) != 0)
		return -1;
	e->ndeleted++;
	return 0;
}

/* edit_change_sender - see edit.h */
int
edit_change_sender(struct edit *e, const char *addr, const char *params)
{
	char *a, *p;

	if (!edit_addr_ok(addr, 1) || !edit_params_ok(params))
		return -1;
	/* No parameters: the received MAIL's stay (BODY=, SMTPUTF8 and SIZE
	 * describe the message, whoever sends it). */
	a = strdup(addr);
	p = params != NULL ? strdup(params) : NULL;
	if (a == NULL || (params != NULL && p == NULL)) {
		free(a);
		free(p);
		return -1;
	}
	free(e->env.sender);
	free(e->env.sender_params);
	e->env.sender = a;
	e->env.sender_params = p;
	return 0;
}

/* ---- the body ---- */

/* edit_body_begin - see edit.h */
int
edit_body_begin(struct edit *e, size_t threshold, const char *dir, size_t max)
{
	if (e->body_state != EDIT_BODY_NONE)
		spool_close(&e->body);
	e->body_state = EDIT_BODY_NONE;
	if (spool_open(&e->body, threshold, dir) != 0)
		return -1;
	e->body_state = EDIT_BODY_OPEN;
	e->body_sol = 1;
	e->body_cr = 0;
	e->body_max = max;
	e->body_size = 0;
	e->body_line = 0;
	return 0;
}

/* body_put - one octet of wire form into buf, flushed to the spool when full */
static void
body_put(struct edit *e, char *buf, size_t *o, char c)
{
	if (*o == 4096) {
		spool_write(&e->body, buf, *o);
		*o = 0;
	}
	buf[(*o)++] = c;
}

/* edit_body_write - see edit.h */
int
edit_body_write(struct edit *e, const char *in, size_t len)
{
	char buf[4096];
	size_t o = 0;

	if (e->body_state != EDIT_BODY_OPEN)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (e->body_cr && c != '\n')
			goto fail; /* a bare CR: no line end we could guess */
		if (c == '\r') {
			e->body_cr = 1;
			continue;
		}
		if (c == '\0')
			goto fail;
		/* RFC 1870 counts CR LF and not the stuffing dots. */
		e->body_size += c == '\n' ? 2 : 1;
		if (e->body_max != 0 && e->body_size > e->body_max)
			goto fail;
		if (c == '\n') {
			body_put(e, buf, &o, '\r');
			body_put(e, buf, &o, '\n');
			e->body_cr = 0;
			e->body_sol = 1;
			e->body_line = 0;
			continue;
		}
		if (++e->body_line > EDIT_BODY_LINE_MAX)
			goto fail;
		if (e->body_sol && c == '.')
			body_put(e, buf, &o, '.');
		body_put(e, buf, &o, c);
		e->body_sol = 0;
	}
	spool_write(&e->body, buf, o);
	if (e->body.failed)
		goto fail_spool;
	return 0;
fail:
	spool_write(&e->body, buf, o);
fail_spool:
	e->body_state = EDIT_BODY_FAILED;
	spool_close(&e->body);
	return -1;
}

/* edit_body_end - see edit.h */
int
edit_body_end(struct edit *e)
{
	if (e->body_state != EDIT_BODY_OPEN)
		return -1;
	if (e->body_cr) {
		e->body_state = EDIT_BODY_FAILED;
		spool_close(&e->body);
		return -1;
	}
	if (!e->body_sol)
		spool_write(&e->body, "\r\n", 2);
	if (e->body.failed) {
		e->body_state = EDIT_BODY_FAILED;
		spool_close(&e->body);
		return -1;
	}
	e->body_state = EDIT_BODY_DONE;
	return 0;
}

/* ---- the renderer ---- */

/* edit_changed - see edit.h */
int
edit_changed(const struct edit *e, const struct evbuffer *added, const struct message *m)
{
	if ((added != NULL && evbuffer_get_length(added) > 0) || e->field != NULL || e->nins > 0 ||
	    e->body_state == EDIT_BODY_DONE)
		return 1;
	for (size_t i = 0; i < m->nh; i++) {
		if (m->h[i].removed)
			return 1;
	}
	return 0;
}

/* emit_inserts - the fields inserted before received field at (at == nh:
 * at the end, with every index past it), in the order inserted */
static int
emit_inserts(const struct edit *e, size_t at, size_t nh, struct evbuffer *out)
{
	for (size_t k = 0; k < e->nins; k++) {
		size_t idx = e->ins[k].index < nh ? e->ins[k].index : nh;
		if (idx == at && evbuffer_add(out, e->ins[k].line, strlen(e->ins[k].line)) != 0)
			return -1;
	}
	return 0;
}

/* emit_body - from the end of the last field (rest): the blank line and
 * the received body, or the blank line and the new one */
static int
emit_body(const struct edit *e, struct spool *orig, const struct message *m, size_t rest,
    struct evbuffer *out)
{
	struct spool *body = (struct spool *)&e->body;

	if (e->body_state != EDIT_BODY_DONE)
		return spool_copy(orig, rest, orig->size - rest, out);
	/* The blank line as received; a message without one (the header
	 * section ran to the end, or into a line that is no field) gets
	 * one, or the new body would read as header fields. */
	if (m->body_off > rest) {
		if (spool_copy(orig, rest, m->body_off - rest, out) != 0)
			return -1;
	} else if (evbuffer_add(out, "\r\n", 2) != 0) {
		return -1;
	}
	return body->size > 0 ? spool_copy(body, 0, body->size, out) : 0;
}

/* edit_emit - see edit.h */
int
edit_emit(const struct edit *e, struct evbuffer *added, struct spool *orig, const struct message *m,
    struct evbuffer *out)
{
	size_t rest;

	/* Header lines never start with ".": nothing to stuff. */
	if (added != NULL && evbuffer_get_length(added) > 0) {
		size_t len = evbuffer_get_length(added);
		unsigned char *p = evbuffer_pullup(added, -1);
		if (p == NULL || evbuffer_add(out, p, len) != 0)
			return -1;
	}
	if (!edit_changed(e, NULL, m))
		return spool_copy(orig, 0, orig->size, out);
	for (size_t i = 0; i < m->nh; i++) {
		const struct msg_header *h = &m->h[i];
		const struct edit_field *f =
		    i < e->nfield && e->field != NULL ? &e->field[i] : NULL;

		if (emit_inserts(e, i, m->nh, out) != 0)
			return -1;
		if (f != NULL && f->set) {
			if (f->line != NULL && evbuffer_add(out, f->line, strlen(f->line)) != 0)
				return -1;
		} else if (!h->removed && spool_copy(orig, h->off, h->len, out) != 0) {
			return -1;
		}
	}
	if (emit_inserts(e, m->nh, m->nh, out) != 0)
		return -1;
	rest = m->nh > 0 ? m->h[m->nh - 1].off + m->h[m->nh - 1].len : 0;
	return emit_body(e, orig, m, rest, out);
}

/* edit_free - see edit.h */
void
edit_free(struct edit *e)
{
	struct edit_rcpt *r, *next;

	for (size_t i = 0; i < e->nfield; i++)
		free(e->field[i].line);
	free(e->field);
	for (size_t i = 0; i < e->nins; i++)
		free(e->ins[i].line);
	free(e->ins);
	if (e->body_state == EDIT_BODY_OPEN || e->body_state == EDIT_BODY_DONE)
		spool_close(&e->body);
	for (r = e->env.added; r != NULL; r = next) {
		next = r->next;
		rcpt_free(r);
	}
	for (r = e->env.deleted; r != NULL; r = next) {
		next = r->next;
		rcpt_free(r);
	}
	free(e->env.sender);
	free(e->env.sender_params);
	memset(e, 0, sizeof(*e));
}
