/*
 * edits.c - a test plugin that changes the message and its envelope at the
 * DATA stage (plugin.h, MESSAGE CHANGES), as its keys say, in key order.
 *
 * Exports portcullis_plugin. For end-to-end tests of the milter-parity
 * changes (through the recorder or a real Postfix). Keys, all repeatable:
 *
 *	change_header = Name:N:value     the N-th (0-based) Name gets value
 *	delete_header = Name:N           the N-th Name is deleted
 *	insert_header = INDEX:Name:value before received field INDEX
 *	add_header = Name: value         prepended
 *	remove_header = Name             every received Name left out
 *	add_rcpt = addr [PARAMS]
 *	delete_rcpt = addr
 *	change_sender = addr [PARAMS]    "<>" for the null sender
 *	replace_body = TEXT              \n, \r, \t, \\ and \xHH escapes
 *	replace_body_file = PATH         streamed in 1000-octet writes
 *
 * Each change logs "edits: KEY VALUE -> 0" (or -1). The verdict is always
 * continue.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <portcullis/plugin.h>

struct ed_op {
	char *key;
	char *value;
};

struct ed {
	const struct pc_host *host;
	struct pc_instance *self;
	struct ed_op *ops;
	size_t nops;
};

static const char *const ed_keys[] = {
    "change_header",
    "delete_header",
    "insert_header",
    "add_header",
    "remove_header",
    "add_rcpt",
    "delete_rcpt",
    "change_sender",
    "replace_body",
    "replace_body_file",
    NULL,
};

static int ed_init(struct pc_init *, void **);
static void ed_fini(void *);
static int ed_data(void *, struct pc_call *, struct pc_verdict *);

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "edits",
    .version = "1.0",
    .keys = ed_keys,
    .init = ed_init,
    .fini = ed_fini,
    .data = ed_data,
};

static int
ed_init(struct pc_init *in, void **instance)
{
	struct ed *ed = calloc(1, sizeof(*ed));
	size_t n = 0;

	if (ed == NULL)
		return -1;
	ed->host = in->host;
	ed->self = in->self;
	for (const struct pc_option *o = in->options; o != NULL; o = o->next)
		n++;
	if (n > 0 && (ed->ops = calloc(n, sizeof(*ed->ops))) == NULL) {
		free(ed);
		return -1;
	}
	for (const struct pc_option *o = in->options; o != NULL; o = o->next) {
		ed->ops[ed->nops].key = strdup(o->key);
		ed->ops[ed->nops].value = strdup(o->value);
		ed->nops++;
	}
	*instance = ed;
	return 0;
}

static void
ed_fini(void *instance)
{
	struct ed *ed = instance;

	for (size_t i = 0; i < ed->nops; i++) {
		free(ed->ops[i].key);
		free(ed->ops[i].value);
	}
	free(ed->ops);
	free(ed);
}

/* ed_unescape - \n \r \t \\ \xHH, in place; the new length */
static size_t
ed_unescape(char *s)
{
	char *o = s;

	for (char *p = s; *p != '\0'; p++) {
		if (*p != '\\' || p[1] == '\0') {
			*o++ = *p;
			continue;
		}
		p++;
		if (*p == 'n')
			*o++ = '\n';
		else if (*p == 'r')
			*o++ = '\r';
		else if (*p == 't')
			*o++ = '\t';
		else if (*p == 'x' && p[1] != '\0' && p[2] != '\0') {
			char hex[3] = {p[1], p[2], '\0'};
			*o++ = (char)strtol(hex, NULL, 16);
			p += 2;
		} else
			*o++ = *p;
	}
	*o = '\0';
	return (size_t)(o - s);
}

/* ed_split - cut s at the first sep: s is the part before, the rest returned */
static char *
ed_split(char *s, char sep)
{
	char *p = strchr(s, sep);

	if (p == NULL)
		return NULL;
	*p = '\0';
	return p + 1;
}

/* ed_body - a new body from text (len octets) */
static int
ed_body(const struct pc_host *h, struct pc_call *call, const char *text, size_t len)
{
	if (h->body_replace_begin(call) != 0)
		return -1;
	for (size_t o = 0; o < len; o += 1000) {
		if (h->body_replace_write(call, text + o, len - o < 1000 ? len - o : 1000) != 0)
			return -1;
	}
	return h->body_replace_end(call);
}

/* ed_body_file - a new body from a file */
static int
ed_body_file(const struct pc_host *h, struct pc_call *call, const char *path)
{
	char buf[1000];
	size_t n;
	FILE *f = fopen(path, "rb");

	if (f == NULL || h->body_replace_begin(call) != 0) {
		if (f != NULL)
			fclose(f);
		return -1;
	}
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		if (h->body_replace_write(call, buf, n) != 0) {
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return h->body_replace_end(call);
}

/* ed_apply - one key; its host function's answer */
static int
ed_apply(struct ed *ed, struct pc_call *call, const char *key, char *v)
{
	const struct pc_host *h = ed->host;
	char *rest;

	if (strcmp(key, "change_header") == 0 || strcmp(key, "delete_header") == 0) {
		char *n = ed_split(v, ':'), *value = NULL;
		if (n == NULL)
			return -1;
		if (key[0] == 'c' && (value = ed_split(n, ':')) == NULL)
			return -1;
		return h->change_header(call, v, strtoul(n, NULL, 10), value);
	}
	if (strcmp(key, "insert_header") == 0) {
		char *name = ed_split(v, ':'), *value = name ? ed_split(name, ':') : NULL;
		if (value == NULL)
			return -1;
		return h->insert_header(call, strtoul(v, NULL, 10), name, value);
	}
	if (strcmp(key, "add_header") == 0) {
		if ((rest = ed_split(v, ':')) == NULL)
			return -1;
		rest += strspn(rest, " ");
		return h->add_header(call, v, rest);
	}
	if (strcmp(key, "remove_header") == 0)
		return h->remove_header(call, v);
	if (strcmp(key, "delete_rcpt") == 0)
		return h->delete_rcpt(call, v);
	if (strcmp(key, "add_rcpt") == 0 || strcmp(key, "change_sender") == 0) {
		rest = ed_split(v, ' ');
		if (key[0] == 'a')
			return h->add_rcpt(call, v, rest);
		return h->change_sender(call, strcmp(v, "<>") == 0 ? "" : v, rest);
	}
	if (strcmp(key, "replace_body") == 0)
		return ed_body(h, call, v, ed_unescape(v));
	if (strcmp(key, "replace_body_file") == 0)
		return ed_body_file(h, call, v);
	return -1;
}

/* ed_data - every configured change, in order */
static int
ed_data(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct ed *ed = instance;

	for (size_t i = 0; i < ed->nops; i++) {
		char *copy = strdup(ed->ops[i].value);
		int r = copy != NULL ? ed_apply(ed, call, ed->ops[i].key, copy) : -1;
		ed->host->log(ed->self, call, PC_LOG_INFO, "edits: %s %s -> %d", ed->ops[i].key,
		    ed->ops[i].value, r);
		free(copy);
	}
	return PC_HOOK_DONE;
}
