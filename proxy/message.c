/*
 * message.c - the header index of a message (see message.h).
 *
 * Exports message_parse, message_header, message_find, message_remove and
 * message_free.
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
static int byname_build(struct message *m);
static size_t byname_first(const struct message *m, const char *name);
static int byname_cmp(const void *a, const void *b, void *arg);

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

/* value_append - add to the unfolded value; the buffer grows by doubling,
 * so a field folded over thousands of lines costs linear time */
static int
value_append(struct msg_header *h, const char *s, size_t len)
{
	if (h->vlen + len + 1 > h->vcap) {
		size_t cap = h->vcap ? h->vcap : 64;
		char *v;
		while (cap < h->vlen + len + 1)
			cap *= 2;
		if ((v = realloc(h->value, cap)) == NULL)
			return -1;
		h->value = v;
		h->vcap = cap;
	}
	memcpy(h->value + h->vlen, s, len);
	h->vlen += len;
	h->value[h->vlen] = '\0';
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
			break;
		vlen = n;
		if (vlen > 0 && line[vlen - 1] == '\n')
			vlen--;
		if (vlen > 0 && line[vlen - 1] == '\r')
			vlen--;
		if (vlen == 0) { /* the blank line */
			m->body_off = end;
			return byname_build(m);
		}
		if ((line[0] == ' ' || line[0] == '\t') && m->nh > 0) {
			struct msg_header *h = &m->h[m->nh - 1];
			if (value_append(h, line, vlen) != 0)
				return -1;
			h->len = end - h->off;
			off = end;
			continue;
		}
		if ((name_len = field_name(line, vlen)) == 0) {
			m->body_off = off; /* not a header field: the body starts here */
			return byname_build(m);
		}
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
	/* The end of buf, inside the header section: all of it, if buf
	 * is the whole message; if not, the section goes on past it. */
	m->body_off = off;
	m->truncated = !whole;
	return byname_build(m);
}

/* byname_cmp - qsort_r order of the name index: name (any case), then place */
static int
byname_cmp(const void *a, const void *b, void *arg)
{
	const struct message *m = arg;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	int c = strcasecmp(m->h[x].name, m->h[y].name);

	return c != 0 ? c : (x > y) - (x < y);
}

/* byname_build - sort the fields by name, once per message */
static int
byname_build(struct message *m)
{
	if (m->nh == 0)
		return 0;
	if ((m->byname = malloc(m->nh * sizeof(*m->byname))) == NULL)
		return -1;
	for (size_t i = 0; i < m->nh; i++)
		m->byname[i] = i;
	qsort_r(m->byname, m->nh, sizeof(*m->byname), byname_cmp, m);
	return 0;
}

/* byname_first - where the fields called name start in byname (nh: none) */
static size_t
byname_first(const struct message *m, const char *name)
{
	size_t lo = 0, hi = m->nh;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcasecmp(m->h[m->byname[mid]].name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < m->nh && strcasecmp(m->h[m->byname[lo]].name, name) == 0 ? lo : m->nh;
}

/* message_header - look a field up by name: a binary search, not a scan */
const char *
message_header(const struct message *m, const char *name, size_t n)
{
	size_t i;

	if (m->byname == NULL || (i = byname_first(m, name)) == m->nh || n >= m->nh - i)
		return NULL;
	i += n;
	return strcasecmp(m->h[m->byname[i]].name, name) == 0 ? m->h[m->byname[i]].value : NULL;
}

/* message_find - where the n-th field of a name is */
ssize_t
message_find(const struct message *m, const char *name, size_t n)
{
	size_t i;

	if (m->byname == NULL || (i = byname_first(m, name)) == m->nh || n >= m->nh - i)
		return -1;
	i += n;
	return strcasecmp(m->h[m->byname[i]].name, name) == 0 ? (ssize_t)m->byname[i] : -1;
}

/* message_remove - mark fields for leaving out */
size_t
message_remove(struct message *m, const char *name)
{
	size_t count = 0;

	if (m->byname == NULL)
		return 0;
	for (size_t i = byname_first(m, name);
	     i < m->nh && strcasecmp(m->h[m->byname[i]].name, name) == 0; i++) {
		m->h[m->byname[i]].removed = 1;
		count++;
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
	free(m->byname);
	memset(m, 0, sizeof(*m));
}
