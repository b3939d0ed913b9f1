/*
 * headers.c - add header fields to every message and strip incoming ones.
 *
 * Exports only the descriptor portcullis_plugin (see plugin.h). Section keys,
 * both repeatable: "add = Name: template" prepends a header field whose value
 * is the template with %{tx_id}, %{session_id}, %{client_ip}, %{client_port},
 * %{helo}, %{sender}, %{hostname}, %{trail} and %% expanded; "remove = Name"
 * leaves out every incoming header field of that name (any case). Both act at
 * the data stage, removals first, then additions in configuration order; the
 * verdict is always continue. Templates are parsed once, at init, so an
 * unknown %{name} shows at -t.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portcullis/plugin.h"

/* A template part: literal text, or a field of the session. */
struct headers_part {
	int is_field;
	enum pc_field field;
	char *text; /* the literal, or the field's name (for logs) */
};

/* One "add" key: the name and the parsed value template. */
struct headers_add {
	char *name;
	struct headers_part *parts;
	size_t nparts;
};

/* An instance: one [plugin headers] section. */
struct headers {
	const struct pc_host *host;
	struct pc_instance *self;
	char **remove;
	size_t nremove;
	struct headers_add *add;
	size_t nadd;
};

/* A growing string for one expanded value. */
struct headers_buf {
	char *p;
	size_t len, cap;
};

static int headers_init(struct pc_init *in, void **instance);
static void headers_fini(void *instance);
static int headers_data(void *instance, struct pc_call *call, struct pc_verdict *v);
static int headers_option(struct headers *h, struct pc_init *in, const struct pc_option *o);
static int headers_add_key(struct headers *h, struct pc_init *in, const char *value);
static int headers_remove_key(struct headers *h, struct pc_init *in, const char *value);
static const char *headers_check_name(const char *name, size_t len);
static int headers_parse(struct pc_init *in, struct headers_add *add, const char *tmpl);
static int headers_part(
    struct headers_add *add, int is_field, enum pc_field field, const char *text, size_t len);
static int headers_lookup(const char *name, size_t len, enum pc_field *field);
static char *headers_expand(struct headers *h, struct pc_call *call, const struct headers_add *add);
static const char *headers_value(struct headers *h, struct pc_call *call, enum pc_field field);
static int headers_append(struct headers_buf *b, const char *s, size_t len);

/* The template fields: %{name} -> host->get(call, field). */
static const struct {
	const char *name;
	enum pc_field field;
} headers_fields[] = {
    {"tx_id", PC_TX_ID},
    {"session_id", PC_SESSION_ID},
    {"client_ip", PC_CLIENT_IP},
    {"client_port", PC_CLIENT_PORT},
    {"helo", PC_HELO},
    {"sender", PC_SENDER},
    {"hostname", PC_HOSTNAME},
    {"trail", PC_TRAIL},
    {"tls", PC_TLS},
    {"auth_user", PC_AUTH_USER},
};

static const char *const headers_keys[] = {"add", "remove", NULL};

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "headers",
    .version = "1.0",
    .keys = headers_keys,
    .init = headers_init,
    .fini = headers_fini,
    .data = headers_data,
};

/* headers_init - parse every add and remove key of the section */
static int
headers_init(struct pc_init *in, void **instance)
{
	struct headers *h;
	const struct pc_option *o;

	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	h->host = in->host;
	h->self = in->self;
	for (o = in->options; o != NULL; o = o->next) {
		in->err_line = o->line;
		if (headers_option(h, in, o) < 0) {
			headers_fini(h);
			return -1;
		}
	}
	if (h->nadd == 0 && h->nremove == 0) {
		snprintf(in->err, in->errlen, "nothing to do: give at least one add or remove key");
		in->err_line = in->line;
		headers_fini(h);
		return -1;
	}
	*instance = h;
	return 0;
}

/* headers_fini - free an instance */
static void
headers_fini(void *instance)
{
	struct headers *h = instance;
	size_t i, j;

	if (h == NULL)
		return;
	for (i = 0; i < h->nremove; i++)
		free(h->remove[i]);
	for (i = 0; i < h->nadd; i++) {
		for (j = 0; j < h->add[i].nparts; j++)
			free(h->add[i].parts[j].text);
		free(h->add[i].parts);
		free(h->add[i].name);
	}
	free(h->remove);
	free(h->add);
	free(h);
}

/* headers_option - one key of the section */
static int
headers_option(struct headers *h, struct pc_init *in, const struct pc_option *o)
{
	const char *value = o->value != NULL ? o->value : "";

	if (strcmp(o->key, "add") == 0)
		return headers_add_key(h, in, value);
	if (strcmp(o->key, "remove") == 0)
		return headers_remove_key(h, in, value);
	snprintf(in->err, in->errlen, "unknown key \"%s\"", o->key);
	return -1;
}

/* headers_check_name - why name (len octets) is no header field name, or
 * NULL: RFC 5322 §3.6.8, printable US-ASCII except ":" (so no blanks) */
static const char *
headers_check_name(const char *name, size_t len)
{
	size_t i;

	if (len == 0)
		return "empty header name";
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c == ' ' || c == '\t')
			return "blank in a header name";
		if (c == ':')
			return "\":\" in a header name";
		if (c < 33 || c > 126)
			return "header names are printable US-ASCII";
	}
	return NULL;
}

/* headers_add_key - "add = Name: template" */
static int
headers_add_key(struct headers *h, struct pc_init *in, const char *value)
{
	const char *colon = strchr(value, ':'), *why, *tmpl;
	struct headers_add *add;

	if (colon == NULL) {
		snprintf(in->err, in->errlen, "add \"%s\": want \"Name: value\"", value);
		return -1;
	}
	if ((why = headers_check_name(value, (size_t)(colon - value))) != NULL) {
		snprintf(in->err, in->errlen, "add \"%s\": %s", value, why);
		return -1;
	}
	if ((add = realloc(h->add, (h->nadd + 1) * sizeof(*add))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	h->add = add;
	add = &h->add[h->nadd++];
	memset(add, 0, sizeof(*add));
	if ((add->name = strndup(value, (size_t)(colon - value))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	tmpl = colon + 1;
	tmpl += strspn(tmpl, " \t");
	return headers_parse(in, add, tmpl);
}

/* headers_remove_key - "remove = Name" */
static int
headers_remove_key(struct headers *h, struct pc_init *in, const char *value)
{
	const char *why;
	char **r;

	if ((why = headers_check_name(value, strlen(value))) != NULL) {
		snprintf(in->err, in->errlen, "remove \"%s\": %s", value, why);
		return -1;
	}
	if ((r = realloc(h->remove, (h->nremove + 1) * sizeof(*r))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	h->remove = r;
	if ((h->remove[h->nremove] = strdup(value)) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	h->nremove++;
	return 0;
}

/* headers_parse - split a value template into literals and %{fields} */
static int
headers_parse(struct pc_init *in, struct headers_add *add, const char *tmpl)
{
	const char *p = tmpl, *lit = tmpl, *end;
	enum pc_field field;

	while ((p = strchr(p, '%')) != NULL) {
		if (headers_part(add, 0, 0, lit, (size_t)(p - lit)) < 0)
			goto nomem;
		if (p[1] == '%') {
			if (headers_part(add, 0, 0, "%", 1) < 0)
				goto nomem;
			lit = p += 2;
			continue;
		}
		if (p[1] != '{') {
			snprintf(in->err, in->errlen,
			    "add %s: stray \"%%\" in \"%s\" (write %%%% for a percent sign)",
			    add->name, tmpl);
			return -1;
		}
		if ((end = strchr(p + 2, '}')) == NULL) {
			snprintf(in->err, in->errlen, "add %s: unterminated %%{ in \"%s\"",
			    add->name, tmpl);
			return -1;
		}
		if (headers_lookup(p + 2, (size_t)(end - p - 2), &field) < 0) {
			snprintf(in->err, in->errlen,
			    "add %s: unknown field %%{%.*s} (known: tx_id, session_id, "
			    "client_ip, client_port, helo, sender, hostname, trail, tls, auth_user)",
			    add->name, (int)(end - p - 2), p + 2);
			return -1;
		}
		if (headers_part(add, 1, field, p + 2, (size_t)(end - p - 2)) < 0)
			goto nomem;
		lit = p = end + 1;
	}
	if (headers_part(add, 0, 0, lit, strlen(lit)) < 0)
		goto nomem;
	return 0;
nomem:
	snprintf(in->err, in->errlen, "out of memory");
	return -1;
}

/* headers_part - append a template part (an empty literal is left out) */
static int
headers_part(
    struct headers_add *add, int is_field, enum pc_field field, const char *text, size_t len)
{
	struct headers_part *parts;

	if (!is_field && len == 0)
		return 0;
	if ((parts = realloc(add->parts, (add->nparts + 1) * sizeof(*parts))) == NULL)
		return -1;
	add->parts = parts;
	if ((parts[add->nparts].text = strndup(text, len)) == NULL)
		return -1;
	parts[add->nparts].is_field = is_field;
	parts[add->nparts].field = field;
	add->nparts++;
	return 0;
}

/* headers_lookup - the field called name (len octets); -1 if none */
static int
headers_lookup(const char *name, size_t len, enum pc_field *field)
{
	size_t i;

	for (i = 0; i < sizeof(headers_fields) / sizeof(headers_fields[0]); i++) {
		if (strlen(headers_fields[i].name) == len &&
		    memcmp(headers_fields[i].name, name, len) == 0) {
			*field = headers_fields[i].field;
			return 0;
		}
	}
	return -1;
}

/* headers_append - add len octets of s to b */
static int
headers_append(struct headers_buf *b, const char *s, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 128;
		char *p;

		while (cap < b->len + len + 1)
			cap *= 2;
		if ((p = realloc(b->p, cap)) == NULL)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, len);
	b->len += len;
	b->p[b->len] = '\0';
	return 0;
}

/* headers_value - what a field expands to: "<>" for the null sender, "none"
 * for an empty trail, "unknown" for anything the host does not know */
static const char *
headers_value(struct headers *h, struct pc_call *call, enum pc_field field)
{
	const char *s = h->host->get(call, field);

	if (field == PC_TRAIL && (s == NULL || *s == '\0'))
		return "none";
	if (field == PC_SENDER && s != NULL && *s == '\0')
		return "<>";
	return s != NULL ? s : "unknown";
}

/* headers_expand - the value of one add key for this message (malloc'd) */
static char *
headers_expand(struct headers *h, struct pc_call *call, const struct headers_add *add)
{
	struct headers_buf b = {NULL, 0, 0};
	const char *s;
	size_t i;

	if (headers_append(&b, "", 0) < 0)
		return NULL;
	for (i = 0; i < add->nparts; i++) {
		s = add->parts[i].is_field ? headers_value(h, call, add->parts[i].field)
		                           : add->parts[i].text;
		if (headers_append(&b, s, strlen(s)) < 0) {
			free(b.p);
			return NULL;
		}
	}
	return b.p;
}

/* headers_data - strip, then add; a header the host refuses (a value made
 * too long by the client's HELO, say) is logged and left out rather than
 * costing the message */
static int
headers_data(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct headers *h = instance;
	char *value;
	size_t i;

	for (i = 0; i < h->nremove; i++)
		if (h->host->remove_header(call, h->remove[i]) < 0)
			h->host->log(
			    h->self, call, PC_LOG_WARN, "headers: cannot remove %s", h->remove[i]);
	for (i = 0; i < h->nadd; i++) {
		if ((value = headers_expand(h, call, &h->add[i])) == NULL) {
			h->host->log(h->self, call, PC_LOG_ERR, "headers: out of memory");
			v->action = PC_FAIL;
			return PC_HOOK_DONE;
		}
		if (h->host->add_header(call, h->add[i].name, value) < 0)
			h->host->log(h->self, call, PC_LOG_WARN,
			    "headers: host refused %s: %.200s (left out)", h->add[i].name, value);
		free(value);
	}
	v->action = PC_CONTINUE;
	return PC_HOOK_DONE;
}
