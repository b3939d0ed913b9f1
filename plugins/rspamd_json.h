/*
 * rspamd_json.h - a small, bounded JSON reader for rspamd's /checkv2 reply
 * (plugins/rspamd.c), in a header so the unit test
 * (tests/unit/test_rspamd_json.c) compiles the same code.
 *
 * rj_parse(doc, text, len) reads one JSON text (RFC 8259) into a tree of
 * struct rj_value whose memory belongs to doc; rj_doc_free frees it all.
 * rj_get(object, key) finds a member, rj_num / rj_str read scalars.
 *
 * The reply comes from the network: everything is bounded. The input is
 * at most what the caller read (the plugin caps the HTTP body), nesting at
 * most RJ_DEPTH_MAX, values at most RJ_NODES_MAX, and anything that is not
 * exactly JSON - a trailing comma, a bare word, a control character in a
 * string, a lone surrogate, text after the value - is an error with an
 * offset, never a guess. Strings are decoded (escapes, \u with surrogate
 * pairs, to UTF-8) and NUL-terminated; a string holding \u0000 is refused,
 * so every string is a C string.
 */
#ifndef PORTCULLIS_RSPAMD_JSON_H
#define PORTCULLIS_RSPAMD_JSON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nesting deeper than this is no rspamd reply: it only costs stack. */
#define RJ_DEPTH_MAX 32
/* Values in one reply: rspamd's, with every symbol and its options, are a
 * few thousand at most; a reply of a million tiny values is an attack. */
#define RJ_NODES_MAX 100000
/* Memory comes in blocks of this size (a larger string gets its own). */
#define RJ_BLOCK 16384

enum rj_type {
	RJ_NULL = 0,
	RJ_FALSE,
	RJ_TRUE,
	RJ_NUMBER,
	RJ_STRING,
	RJ_ARRAY,
	RJ_OBJECT,
};

struct rj_member;

struct rj_value {
	enum rj_type type;
	double num; /* RJ_NUMBER */
	const char *str; /* RJ_STRING: NUL-terminated, len octets */
	size_t len;
	struct rj_member *first; /* RJ_ARRAY, RJ_OBJECT: in document order */
	size_t count;
};

struct rj_member {
	const char *key; /* RJ_OBJECT: the member's name; RJ_ARRAY: NULL */
	struct rj_value v;
	struct rj_member *next;
};

struct rj_block {
	struct rj_block *next;
	size_t size, used;
	max_align_t data[];
};

struct rj_doc {
	struct rj_block *blocks;
	size_t nodes;
	const char *p, *end, *start;
	char err[128];
};

struct rj_buf {
	char *s;
	size_t len, cap;
};

static void *rj_alloc(struct rj_doc *d, size_t n) __attribute__((unused));
static void rj_doc_free(struct rj_doc *d) __attribute__((unused));
static int rj_fail(struct rj_doc *d, const char *what) __attribute__((unused));
static void rj_ws(struct rj_doc *d) __attribute__((unused));
static int rj_value(struct rj_doc *d, struct rj_value *v, int depth) __attribute__((unused));
static int rj_string(struct rj_doc *d, const char **out, size_t *outlen) __attribute__((unused));
static int rj_hex4(struct rj_doc *d, unsigned *u) __attribute__((unused));
static int rj_number(struct rj_doc *d, double *out) __attribute__((unused));
static int rj_container(struct rj_doc *d, struct rj_value *v, int depth, int object)
    __attribute__((unused));
static const struct rj_value *rj_parse(struct rj_doc *d, const char *text, size_t len)
    __attribute__((unused));
static const struct rj_value *rj_get(const struct rj_value *obj, const char *key)
    __attribute__((unused));
static int rj_num(const struct rj_value *v, double *out) __attribute__((unused));
static const char *rj_str(const struct rj_value *v) __attribute__((unused));

/* rj_alloc - n octets from the document's blocks, aligned; NULL when out
 * of memory */
static void *
rj_alloc(struct rj_doc *d, size_t n)
{
	struct rj_block *b = d->blocks;
	size_t a = sizeof(max_align_t), size;
	void *p;

	n = (n + a - 1) / a * a;
	if (b == NULL || b->size - b->used < n) {
		size = n > RJ_BLOCK ? n : RJ_BLOCK;
		if ((b = malloc(sizeof(*b) + size)) == NULL)
			return NULL;
		b->size = size;
		b->used = 0;
		b->next = d->blocks;
		d->blocks = b;
	}
	p = (char *)b->data + b->used;
	b->used += n;
	return p;
}

/* rj_doc_free - everything a parse allocated */
static void
rj_doc_free(struct rj_doc *d)
{
	struct rj_block *b, *next;

	for (b = d->blocks; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	d->blocks = NULL;
	d->nodes = 0;
}

/* rj_fail - note what went wrong where; always -1 */
static int
rj_fail(struct rj_doc *d, const char *what)
{
	if (d->err[0] == '\0')
		snprintf(
		    d->err, sizeof(d->err), "%s at offset %zu", what, (size_t)(d->p - d->start));
	return -1;
}

/* rj_ws - skip blanks (RFC 8259 §2: space, tab, LF, CR) */
static void
rj_ws(struct rj_doc *d)
{
	while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
		d->p++;
}

/* rj_hex4 - four hex digits of a \u escape */
static int
rj_hex4(struct rj_doc *d, unsigned *u)
{
	int i;

	*u = 0;
	if (d->end - d->p < 4)
		return rj_fail(d, "short \\u escape");
	for (i = 0; i < 4; i++) {
		char c = *d->p++;
		unsigned x;
		if (c >= '0' && c <= '9')
			x = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			x = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			x = (unsigned)(c - 'A' + 10);
		else
			return rj_fail(d, "bad \\u escape");
		*u = *u << 4 | x;
	}
	return 0;
}

/* rj_put - append octets to a growing buffer (it never outgrows the input) */
static int
rj_put(struct rj_buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		char *t;
		while (cap < b->len + n + 1)
			cap *= 2;
		if ((t = realloc(b->s, cap)) == NULL)
			return -1;
		b->s = t;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
	return 0;
}

/* rj_utf8 - code point u as UTF-8 into out; the octet count */
static size_t
rj_utf8(unsigned u, char *out)
{
	if (u < 0x80) {
		out[0] = (char)u;
		return 1;
	}
	if (u < 0x800) {
		out[0] = (char)(0xc0 | u >> 6);
		out[1] = (char)(0x80 | (u & 0x3f));
		return 2;
	}
	if (u < 0x10000) {
		out[0] = (char)(0xe0 | u >> 12);
		out[1] = (char)(0x80 | (u >> 6 & 0x3f));
		out[2] = (char)(0x80 | (u & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | u >> 18);
	out[1] = (char)(0x80 | (u >> 12 & 0x3f));
	out[2] = (char)(0x80 | (u >> 6 & 0x3f));
	out[3] = (char)(0x80 | (u & 0x3f));
	return 4;
}

/* rj_escape - one escape after the backslash, decoded into b */
static int
rj_escape(struct rj_doc *d, struct rj_buf *b)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *k;
	unsigned u, lo;
	char out[4];

	if (d->p >= d->end)
		return rj_fail(d, "unterminated string");
	if (*d->p != 'u') {
		if (*d->p == '\0' || (k = strchr(from, *d->p)) == NULL)
			return rj_fail(d, "bad escape");
		d->p++;
		return rj_put(b, &to[k - from], 1) < 0 ? rj_fail(d, "out of memory") : 0;
	}
	d->p++;
	if (rj_hex4(d, &u) < 0)
		return -1;
	if (u >= 0xdc00 && u <= 0xdfff)
		return rj_fail(d, "lone low surrogate");
	if (u >= 0xd800 && u <= 0xdbff) {
		if (d->end - d->p < 2 || d->p[0] != '\\' || d->p[1] != 'u')
			return rj_fail(d, "lone high surrogate");
		d->p += 2;
		if (rj_hex4(d, &lo) < 0)
			return -1;
		if (lo < 0xdc00 || lo > 0xdfff)
			return rj_fail(d, "bad surrogate pair");
		u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
	}
	if (u == 0)
		return rj_fail(d, "\\u0000 in a string");
	return rj_put(b, out, rj_utf8(u, out)) < 0 ? rj_fail(d, "out of memory") : 0;
}

/* rj_string - a string at d->p (the opening quote), decoded into the doc */
static int
rj_string(struct rj_doc *d, const char **out, size_t *outlen)
{
	struct rj_buf b = {NULL, 0, 0};
	const char *run;
	char *s;

	d->p++; /* the quote */
	if (rj_put(&b, "", 0) < 0)
		return rj_fail(d, "out of memory");
	for (;;) {
		run = d->p;
		while (
		    d->p < d->end && *d->p != '"' && *d->p != '\\' && (unsigned char)*d->p >= 0x20)
			d->p++;
		if (d->p > run && rj_put(&b, run, (size_t)(d->p - run)) < 0)
			goto nomem;
		if (d->p >= d->end) {
			rj_fail(d, "unterminated string");
			goto fail;
		}
		if (*d->p == '"')
			break;
		if (*d->p != '\\') {
			rj_fail(d, "control character in a string");
			goto fail;
		}
		d->p++;
		if (rj_escape(d, &b) < 0)
			goto fail;
	}
	d->p++;
	if ((s = rj_alloc(d, b.len + 1)) == NULL)
		goto nomem;
	memcpy(s, b.s, b.len + 1);
	*out = s;
	*outlen = b.len;
	free(b.s);
	return 0;
nomem:
	rj_fail(d, "out of memory");
fail:
	free(b.s);
	return -1;
}

/* rj_number - a number as RFC 8259 §6 writes it (no '+', no leading
 * zeros, no bare '.', no hex, no inf or nan) */
static int
rj_number(struct rj_doc *d, double *out)
{
	const char *s = d->p, *p = d->p;
	char buf[64], *end;
	size_t n;

	if (p < d->end && *p == '-')
		p++;
	if (p < d->end && *p == '0')
		p++;
	else if (p < d->end && *p >= '1' && *p <= '9')
		while (p < d->end && *p >= '0' && *p <= '9')
			p++;
	else
		return rj_fail(d, "bad number");
	if (p < d->end && *p == '.') {
		p++;
		if (p >= d->end || *p < '0' || *p > '9')
			return rj_fail(d, "bad number");
		while (p < d->end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < d->end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < d->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= d->end || *p < '0' || *p > '9')
			return rj_fail(d, "bad number");
		while (p < d->end && *p >= '0' && *p <= '9')
			p++;
	}
	n = (size_t)(p - s);
	if (n >= sizeof(buf))
		return rj_fail(d, "number too long");
	memcpy(buf, s, n);
	buf[n] = '\0';
	*out = strtod(buf, &end);
	if (end != buf + n || !(*out - *out == 0)) /* overflow gives inf */
		return rj_fail(d, "number out of range");
	d->p = p;
	return 0;
}

/* rj_container - an array or an object at d->p ('[' or '{') */
static int
rj_container(struct rj_doc *d, struct rj_value *v, int depth, int object)
{
	struct rj_member **tail = &v->first, *m;
	char close = object ? '}' : ']';

	v->type = object ? RJ_OBJECT : RJ_ARRAY;
	d->p++;
	rj_ws(d);
	if (d->p < d->end && *d->p == close) {
		d->p++;
		return 0;
	}
	for (;;) {
		if ((m = rj_alloc(d, sizeof(*m))) == NULL)
			return rj_fail(d, "out of memory");
		memset(m, 0, sizeof(*m));
		rj_ws(d);
		if (object) {
			size_t klen;
			if (d->p >= d->end || *d->p != '"')
				return rj_fail(d, "expected a member name");
			if (rj_string(d, &m->key, &klen) < 0)
				return -1;
			rj_ws(d);
			if (d->p >= d->end || *d->p != ':')
				return rj_fail(d, "expected ':'");
			d->p++;
		}
		if (rj_value(d, &m->v, depth + 1) < 0)
			return -1;
		*tail = m;
		tail = &m->next;
		v->count++;
		rj_ws(d);
		if (d->p < d->end && *d->p == ',') {
			d->p++;
			continue;
		}
		if (d->p < d->end && *d->p == close) {
			d->p++;
			return 0;
		}
		return rj_fail(d, object ? "expected ',' or '}'" : "expected ',' or ']'");
	}
}

/* rj_literal - true, false or null */
static int
rj_literal(struct rj_doc *d, const char *word, struct rj_value *v, enum rj_type t)
{
	size_t n = strlen(word);

	if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
		return rj_fail(d, "unexpected character");
	d->p += n;
	v->type = t;
	return 0;
}

/* rj_value - one value of any type */
static int
rj_value(struct rj_doc *d, struct rj_value *v, int depth)
{
	if (depth > RJ_DEPTH_MAX)
		return rj_fail(d, "nested too deep");
	if (++d->nodes > RJ_NODES_MAX)
		return rj_fail(d, "too many values");
	rj_ws(d);
	if (d->p >= d->end)
		return rj_fail(d, "unexpected end");
	switch (*d->p) {
	case '{':
		return rj_container(d, v, depth, 1);
	case '[':
		return rj_container(d, v, depth, 0);
	case '"':
		v->type = RJ_STRING;
		return rj_string(d, &v->str, &v->len);
	case 't':
		return rj_literal(d, "true", v, RJ_TRUE);
	case 'f':
		return rj_literal(d, "false", v, RJ_FALSE);
	case 'n':
		return rj_literal(d, "null", v, RJ_NULL);
	default:
		v->type = RJ_NUMBER;
		return rj_number(d, &v->num);
	}
}

/* rj_parse - text (len octets) as one JSON value; NULL with d->err set.
 * Free with rj_doc_free either way. */
static const struct rj_value *
rj_parse(struct rj_doc *d, const char *text, size_t len)
{
	struct rj_value *root;

	memset(d, 0, sizeof(*d));
	d->p = d->start = text;
	d->end = text + len;
	if ((root = rj_alloc(d, sizeof(*root))) == NULL) {
		rj_fail(d, "out of memory");
		return NULL;
	}
	memset(root, 0, sizeof(*root));
	if (rj_value(d, root, 0) < 0)
		return NULL;
	rj_ws(d);
	if (d->p != d->end) {
		rj_fail(d, "text after the value");
		return NULL;
	}
	return root;
}

/* rj_get - the member key of an object (the first of that name); NULL if
 * obj is no object or has none */
static const struct rj_value *
rj_get(const struct rj_value *obj, const char *key)
{
	const struct rj_member *m;

	if (obj == NULL || obj->type != RJ_OBJECT)
		return NULL;
	for (m = obj->first; m != NULL; m = m->next)
		if (strcmp(m->key, key) == 0)
			return &m->v;
	return NULL;
}

/* rj_num - a number's value: 0, or -1 if v is no number */
static int
rj_num(const struct rj_value *v, double *out)
{
	if (v == NULL || v->type != RJ_NUMBER)
		return -1;
	*out = v->num;
	return 0;
}

/* rj_str - a string's text, or NULL if v is no string */
static const char *
rj_str(const struct rj_value *v)
{
	return v != NULL && v->type == RJ_STRING ? v->str : NULL;
}

#endif
