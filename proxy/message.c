/*
 * message.c - the header index of a message (see message.h).
 *
 * Exports message_parse, message_header, message_remove and message_free.
 * RFC 5322 §2.2: a field is a name of printable characters other than ':',
 * a ':', and a body that continues on lines starting with a blank
 * (folding, §2.2.3); unfolding removes the CR LF before the blank.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "message.h"

static size_t line_end(const char *buf, size_t len, size_t off, int *complete);
static size_t field_name(const char *line, size_t len);
static int header_add(struct message *m, const char *line, size_t name_len, size_t off);
static int value_append(struct msg_header *h, const char *s, size_t len);

/* line_end - the offset after the line starting at off (after its LF) */
static size_t
line_end(const char *buf, size_t len, size_t off, int *complete)
{
	const char *nl = memchr(buf + off, '\n', len - off);

	*complete = nl != NULL;
	return nl != NULL ? (size_t)(nl - buf) + 1 : len;
}

/* field_name - the length of a field name that a ':' follows (blanks
 * allowed before it, RFC 5322 §4.5.3 obsolete syntax), or 0 */
static size_t
field_name(const char *line, size_t len)
{
	size_t i, n;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if (c == ':' || c <= ' ' || c > '~')
			break;
	}
	n = i;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (n == 0 || i >= len || line[i] != ':')
		return 0;
	return n;
}

/* value_append - add to the unfolded value */
static int
value_append(struct msg_header *h, const char *s, size_t len)
{
	size_t old = h->value ? strlen(h->value) : 0;
	char *v = realloc(h->value, old + len + 1);

	if (v == NULL)
		return -1;
	memcpy(v + old, s, len);
	v[old + len] = '\0';
	h->value = v;
	return 0;
}

/* header_add - a new field starting at off */
static int
header_add(struct message *m, const char *line, size_t name_len, size_t off)
{
	struct msg_header *h;

	if (m->nh == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 16;
		struct msg_header *t = realloc(m->h, cap * sizeof(*t));
		if (t == NULL)
			return -1;
		m->h = t;
		m->cap = cap;
	}
	h = &m->h[m->nh];
	memset(h, 0, sizeof(*h));
	if ((h->name = strndup(line, name_len)) == NULL)
		return -1;
	h->off = off;
	m->nh++;
	return 0;
}

/* message_parse - index the header section */
int
message_parse(struct message *m, const char *buf, size_t len, int whole)
{
	size_t off = 0;

	memset(m, 0, sizeof(*m));
	while (off < len) {
		int complete;
		size_t end = line_end(buf, len, off, &complete), n = end - off, name_len;
		const char *line = buf + off, *v;
		size_t vlen;

		if (!complete && !whole)
			break; /* cut by MESSAGE_HEADER_MAX: the rest is body */
		vlen = n;
		if (vlen > 0 && line[vlen - 1] == '\n')
			vlen--;
		if (vlen > 0 && line[vlen - 1] == '\r')
			vlen--;
		if (vlen == 0) { /* the blank line */
			m->body_off = end;
			return 0;
		}
		if ((line[0] == ' ' || line[0] == '\t') && m->nh > 0) {
			struct msg_header *h = &m->h[m->nh - 1];
			if (value_append(h, line, vlen) != 0)
				return -1;
			h->len = end - h->off;
			off = end;
			continue;
		}
		if ((name_len = field_name(line, vlen)) == 0)
			break; /* not a header field: the body starts here */
		if (header_add(m, line, name_len, off) != 0)
			return -1;
		v = (const char *)memchr(line, ':', vlen) + 1;
		while (v < line + vlen && (*v == ' ' || *v == '\t'))
			v++;
		if (value_append(&m->h[m->nh - 1], v, (size_t)(line + vlen - v)) != 0)
			return -1;
		m->h[m->nh - 1].len = n;
		off = end;
	}
	m->body_off = off;
	return 0;
}

/* message_header - look a field up by name */
const char *
message_header(const struct message *m, const char *name, size_t n)
{
	for (size_t i = 0; i < m->nh; i++) {
		if (strcasecmp(m->h[i].name, name) == 0 && n-- == 0)
			return m->h[i].value;
	}
	return NULL;
}

/* message_remove - mark fields for leaving out */
size_t
message_remove(struct message *m, const char *name)
{
	size_t count = 0;

	for (size_t i = 0; i < m->nh; i++) {
		if (strcasecmp(m->h[i].name, name) == 0) {
			m->h[i].removed = 1;
			count++;
		}
	}
	return count;
}

/* message_free - release the index */
void
message_free(struct message *m)
{
	for (size_t i = 0; i < m->nh; i++) {
		free(m->h[i].name);
		free(m->h[i].value);
	}
	free(m->h);
	memset(m, 0, sizeof(*m));
}
