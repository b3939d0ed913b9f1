/*
 * greylist.c - greylisting, after postgrey and milter-greylist: mail from
 * a client network, sender and recipient never seen together before (a
 * "triplet") is answered "451 4.7.1, try again later". A real MTA queues
 * the message and retries; most spamware fires once and moves on. A retry
 * after `delay` and within `retry_window` passes, and the triplet then
 * passes at once for `max_age` (refreshed by each pass).
 *
 * Exports only the descriptor portcullis_plugin (see plugin.h). The keys
 * and what the log lines say are in doc/greylist.md; how a triplet is
 * named in the store is plugins/greylist_key.h, shared with the admin
 * tool (tools/portcullis-store.c).
 *
 * The triplet is checked at RCPT. The null sender (a bounce) is checked at
 * DATA instead, against every recipient: a bounce to many recipients is
 * deferred as one message, and passes when all its triplets do.
 *
 * THE STORE. State lives in the host's store (plugin.h, THE STORE): the
 * section's `store`, or the configuration's top-level one. A check is a
 * short chain of store requests - the network's auto-whitelist counter,
 * then each triplet, then the writes - each completed through
 * gl_op_done, at once for memory and LMDB, later for Redis. All of a
 * call's state is one struct gl_job on the heap; gl_job_drive runs the
 * chain until a request is in flight, and the callback goes on from
 * there, so a store that answers at once and one that answers later take
 * the same path. A store failure is PC_FAIL (the section's on_error, by
 * default accept: an outage must not stop mail), logged at most once a
 * minute with a count of the rest.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "portcullis/plugin.h"

#include "greylist_key.h"

/* Defaults: postgrey's delay and max age, milter-greylist's retry window. */
#define GL_DELAY_MS (300ULL * 1000)
#define GL_RETRY_MS (2ULL * 86400 * 1000)
#define GL_MAX_AGE_MS (35ULL * 86400 * 1000)
#define GL_AWL_DEFAULT 5
/* An auto_whitelist past this is a typo, not a policy. */
#define GL_AWL_MAX 1000000
/* Store failures are logged at most this often per instance (a Redis
 * outage would otherwise write a line per recipient). */
#define GL_WARN_EVERY_MS 60000
/* A whitelist entry: an address, a domain or a host name. */
#define GL_ITEM_MAX 512

/* The whitelists, in the order of gl_file_keys and gl_inline_keys. */
enum gl_kind {
	GL_CLIENTS = 0,
	GL_NAMES,
	GL_SENDERS,
	GL_RCPTS,
	GL_NKINDS,
};

/* What a matching whitelist entry was, for the log. */
enum gl_match {
	GL_NO_MATCH = 0,
	GL_MATCH_ADDRESS,
	GL_MATCH_LOCAL,
	GL_MATCH_DOMAIN,
};

/* A sorted list of lower-case entries: "user@example.com", "postmaster@",
 * "example.com" and ".example.com" (its subdomains). */
struct gl_names {
	char **v;
	size_t n, cap;
};

/* Everything the whitelist keys build, replaced whole by a reload. */
struct gl_lists {
	struct pc_cidrs *clients; /* NULL: none */
	struct gl_names names[GL_NKINDS]; /* [GL_CLIENTS]: only while loading */
};

/* An instance: one [plugin greylist] section. */
struct greylist {
	const struct pc_host *host;
	struct pc_instance *self;
	const struct pc_option *options; /* the section's; valid until fini */
	struct pc_store *st;
	unsigned long long delay_ms, retry_ms, max_age_ms;
	unsigned long long awl; /* 0: no auto-whitelisting */
	unsigned v4bits, v6bits;
	char *file[GL_NKINDS]; /* NULL: no such file */
	struct gl_lists *lists;
	unsigned long long warned_ms; /* the last store failure logged */
	unsigned long quiet; /* failures since, not logged */
};

/* One store request of a job, and its answer (copied: the result is
 * valid during the callback only). */
struct gl_op {
	struct gl_job *job;
	struct pc_store_req *req; /* in flight (Redis), for cancel */
	int busy;
	enum pc_store_status status;
	long long number;
	char value[GL_STATE_MAX];
	size_t vlen; /* GL_STATE_MAX or more: too long to be ours */
	char error[200];
};

enum gl_step {
	GL_AWL_GET = 0,
	GL_AWL_CHECK,
	GL_AWL_REFRESHED,
	GL_TRIPLET_GET,
	GL_TRIPLET_CHECK,
	GL_TRIPLET_WROTE,
	GL_END,
};

/* What the triplet being checked turned out to be. */
enum gl_outcome {
	GL_NEW = 0,
	GL_EXPIRED, /* retried after retry_window: a first sight again */
	GL_PASS_FIRST, /* retried in time: passes from now on */
	GL_PASS_KNOWN, /* passed before */
};

/* One pending check: a network and sender with one recipient (RCPT) or
 * all of them (DATA, null sender). */
struct gl_job {
	struct greylist *gl;
	struct pc_call *call;
	enum gl_step step;
	int driving; /* gl_job_drive is on the stack: callbacks only record */
	struct gl_op op[2]; /* [1]: the auto-whitelist increment of a pass */
	unsigned long long now_ms;
	char net[GL_NET_MAX];
	char sender[GL_ADDR_MAX]; /* normalised */
	char awl_key[GL_KEY_BUF];
	size_t awl_klen;
	char key[GL_KEY_BUF]; /* the triplet being checked */
	size_t klen;
	char val[GL_STATE_MAX]; /* what is being written */
	struct gl_state state;
	enum gl_outcome outcome;
	unsigned long long elapsed_ms;
	int incr; /* op[1] was started */
	size_t i, n;
	char **rcpt; /* n normalised recipients */
	int deferred;
	unsigned long long wait_ms; /* the longest wait of a deferred triplet */
	int failed;
	char why[300];
};

static int gl_init(struct pc_init *in, void **instance);
static int gl_option(struct greylist *gl, const struct pc_option *o, char *err, size_t errlen);
static int gl_time(struct greylist *gl, const char *key, const char *value, unsigned long long *ms,
    char *err, size_t errlen);
static int gl_number_opt(const char *key, const char *value, unsigned long long max,
    unsigned long long *out, char *err, size_t errlen);
static void gl_fini(void *instance);
static int gl_reload(void *instance, char *err, size_t errlen);
static struct gl_lists *gl_lists_load(struct greylist *gl, char *err, size_t errlen, int *line);
static int gl_lists_file(
    struct greylist *gl, struct gl_lists *l, enum gl_kind kind, char *err, size_t errlen);
static int gl_lists_items(struct greylist *gl, struct gl_lists *l, enum gl_kind kind,
    const char *text, char *err, size_t errlen);
static int gl_lists_add(
    struct greylist *gl, struct gl_lists *l, enum gl_kind kind, const char *item, size_t len);
static int gl_lists_finish(struct greylist *gl, struct gl_lists *l, char *err, size_t errlen);
static void gl_lists_free(struct greylist *gl, struct gl_lists *l);
static int gl_names_cmp(const void *a, const void *b);
static int gl_names_has(const struct gl_names *l, const char *s, size_t len);
static int gl_domain_listed(const struct gl_names *l, const char *d, size_t len);
static enum gl_match gl_addr_listed(const struct gl_names *l, const char *addr);
static const char *gl_client_exempt(struct greylist *gl, struct pc_call *call);
static const char *gl_match_name(enum gl_kind kind, enum gl_match m);
static int gl_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v);
static int gl_data(void *instance, struct pc_call *call, struct pc_verdict *v);
static struct gl_job *gl_job_new(
    struct greylist *gl, struct pc_call *call, const char *net, const char *sender, size_t n);
static void gl_job_free(struct gl_job *job);
static int gl_job_start(struct gl_job *job, struct pc_verdict *v);
static void gl_job_drive(struct gl_job *job);
static void gl_job_step(struct gl_job *job);
static void gl_job_check(struct gl_job *job);
static void gl_job_wrote(struct gl_job *job);
static void gl_job_finish(struct gl_job *job);
static void gl_job_cancel(void *arg);
static void gl_job_fail(struct gl_job *job, const char *why);
static void gl_job_defer(struct gl_job *job, unsigned long long wait_ms);
static void gl_op_get(struct gl_job *job, int i, const char *key, size_t klen);
static void gl_op_set(struct gl_job *job, int i, const char *key, size_t klen, const char *val,
    size_t vlen, unsigned long long ttl_ms);
static void gl_op_done(void *arg, const struct pc_store_result *r);
static void gl_warn(struct greylist *gl, struct pc_call *call, const char *net, const char *sender,
    const char *rcpt, const char *why);
static unsigned long long gl_now_ms(void);
static unsigned long long gl_secs(unsigned long long ms);

static const char *const gl_file_keys[GL_NKINDS] = {
    "whitelist_clients",
    "whitelist_client_names",
    "whitelist_senders",
    "whitelist_recipients",
};
static const char *const gl_inline_keys[GL_NKINDS] = {
    "whitelist_clients_inline",
    "whitelist_client_names_inline",
    "whitelist_senders_inline",
    "whitelist_recipients_inline",
};

static const char *const gl_keys[] = {
    "delay",
    "retry_window",
    "max_age",
    "auto_whitelist",
    "store",
    "ipv4_prefix",
    "ipv6_prefix",
    "whitelist_clients",
    "whitelist_client_names",
    "whitelist_senders",
    "whitelist_recipients",
    "whitelist_clients_inline",
    "whitelist_client_names_inline",
    "whitelist_senders_inline",
    "whitelist_recipients_inline",
    NULL,
};

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "greylist",
    .version = "1.0",
    .keys = gl_keys,
    .init = gl_init,
    .fini = gl_fini,
    .rcpt = gl_rcpt,
    .data = gl_data,
    .reload = gl_reload,
    .on_error = "accept",
};

/* ---- configuration ---- */

/* gl_init - read the section, load the whitelists, open the store */
static int
gl_init(struct pc_init *in, void **instance)
{
	struct greylist *gl;
	const struct pc_option *o;
	const char *spec = NULL;

	if ((gl = calloc(1, sizeof(*gl))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	gl->host = in->host;
	gl->self = in->self;
	gl->options = in->options;
	gl->delay_ms = GL_DELAY_MS;
	gl->retry_ms = GL_RETRY_MS;
	gl->max_age_ms = GL_MAX_AGE_MS;
	gl->awl = GL_AWL_DEFAULT;
	gl->v4bits = 24;
	gl->v6bits = 64;
	for (o = in->options; o != NULL; o = o->next) {
		if (strcmp(o->key, "store") == 0) {
			spec = o->value;
			continue;
		}
		if (gl_option(gl, o, in->err, in->errlen) < 0) {
			in->err_line = o->line;
			goto fail;
		}
	}
	if (gl->retry_ms <= gl->delay_ms) {
		snprintf(in->err, in->errlen,
		    "retry_window (%llus) must be longer than delay (%llus): no retry could pass",
		    gl_secs(gl->retry_ms), gl_secs(gl->delay_ms));
		in->err_line = in->line;
		goto fail;
	}
	if ((gl->lists = gl_lists_load(gl, in->err, in->errlen, &in->err_line)) == NULL)
		goto fail;
	/* NULL: the configuration's top-level store. */
	if ((gl->st = gl->host->store_open(gl->self, spec, in->err, in->errlen)) == NULL) {
		for (o = in->options; o != NULL; o = o->next)
			if (strcmp(o->key, "store") == 0)
				in->err_line = o->line;
		goto fail;
	}
	*instance = gl;
	return 0;
fail:
	gl_fini(gl);
	return -1;
}

/* gl_option - one key (but store); 0, or -1 with a message in err */
static int
gl_option(struct greylist *gl, const struct pc_option *o, char *err, size_t errlen)
{
	unsigned long long n;
	size_t k;
	char why[256];

	if (strcmp(o->key, "delay") == 0)
		return gl_time(gl, o->key, o->value, &gl->delay_ms, err, errlen);
	if (strcmp(o->key, "retry_window") == 0)
		return gl_time(gl, o->key, o->value, &gl->retry_ms, err, errlen);
	if (strcmp(o->key, "max_age") == 0)
		return gl_time(gl, o->key, o->value, &gl->max_age_ms, err, errlen);
	if (strcmp(o->key, "auto_whitelist") == 0)
		return gl_number_opt(o->key, o->value, GL_AWL_MAX, &gl->awl, err, errlen);
	if (strcmp(o->key, "ipv4_prefix") == 0 || strcmp(o->key, "ipv6_prefix") == 0) {
		int v4 = o->key[3] == '4';
		if (gl_number_opt(o->key, o->value, v4 ? 32 : 128, &n, err, errlen) < 0)
			return -1;
		*(v4 ? &gl->v4bits : &gl->v6bits) = (unsigned)n;
		return 0;
	}
	for (k = 0; k < GL_NKINDS; k++) {
		if (strcmp(o->key, gl_file_keys[k]) != 0)
			continue;
		if (gl->host->opt_file(o->value, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "%s: %s", o->key, why);
			return -1;
		}
		free(gl->file[k]);
		if ((gl->file[k] = strdup(o->value)) == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		return 0;
	}
	/* the *_inline keys: read by gl_lists_load */
	return 0;
}

/* gl_time - a time above 0, as the daemon reads them (300s, 5m, 1h, 2d) */
static int
gl_time(struct greylist *gl, const char *key, const char *value, unsigned long long *ms, char *err,
    size_t errlen)
{
	if (gl->host->opt_time(value, ms, NULL, 0) == 0 && *ms > 0)
		return 0;
	snprintf(err, errlen,
	    "%s: bad value \"%s\": expected a time above 0 (e.g. 300s, 5m, 1h, 2d)", key, value);
	return -1;
}

/* gl_number_opt - a decimal number from 0 to max */
static int
gl_number_opt(const char *key, const char *value, unsigned long long max, unsigned long long *out,
    char *err, size_t errlen)
{
	unsigned long long v = 0;
	const char *p;

	for (p = value; *p >= '0' && *p <= '9'; p++) {
		if (v > (max - (unsigned)(*p - '0')) / 10)
			break;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (p == value || *p != '\0') {
		if (err != NULL)
			snprintf(err, errlen,
			    "%s: bad value \"%s\": expected a number from 0 to %llu", key, value,
			    max);
		return -1;
	}
	*out = v;
	return 0;
}

/* gl_fini - free an instance (the host closes the store) */
static void
gl_fini(void *instance)
{
	struct greylist *gl = instance;
	size_t k;

	gl_lists_free(gl, gl->lists);
	for (k = 0; k < GL_NKINDS; k++)
		free(gl->file[k]);
	free(gl);
}

/* gl_reload - SIGHUP: read the whitelist files again; on an error keep
 * the lists we have */
static int
gl_reload(void *instance, char *err, size_t errlen)
{
	struct greylist *gl = instance;
	struct gl_lists *l;
	int line = 0;

	if ((l = gl_lists_load(gl, err, errlen, &line)) == NULL)
		return -1;
	gl_lists_free(gl, gl->lists);
	gl->lists = l;
	return 0;
}

/* ---- the whitelists ---- */

/* gl_lists_load - every whitelist from its file and inline key; NULL with
 * a message in err (and the key's line in *line) */
static struct gl_lists *
gl_lists_load(struct greylist *gl, char *err, size_t errlen, int *line)
{
	struct gl_lists *l;
	const struct pc_option *o;
	size_t k;

	if ((l = calloc(1, sizeof(*l))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (k = 0; k < GL_NKINDS; k++) {
		if (gl->file[k] != NULL && gl_lists_file(gl, l, (enum gl_kind)k, err, errlen) < 0) {
			for (o = gl->options; o != NULL; o = o->next)
				if (strcmp(o->key, gl_file_keys[k]) == 0)
					*line = o->line;
			goto fail;
		}
	}
	for (o = gl->options; o != NULL; o = o->next) {
		for (k = 0; k < GL_NKINDS; k++) {
			if (strcmp(o->key, gl_inline_keys[k]) != 0)
				continue;
			if (gl_lists_items(gl, l, (enum gl_kind)k, o->value, err, errlen) < 0) {
				*line = o->line;
				goto fail;
			}
		}
	}
	if (gl_lists_finish(gl, l, err, errlen) < 0)
		goto fail;
	return l;
fail:
	gl_lists_free(gl, l);
	return NULL;
}

/* gl_lists_file - one whitelist file: entries separated by blanks, commas
 * or lines; '#' starts a comment */
static int
gl_lists_file(struct greylist *gl, struct gl_lists *l, enum gl_kind kind, char *err, size_t errlen)
{
	FILE *fp;
	char *buf = NULL, *hash, why[GL_ITEM_MAX + 128];
	size_t cap = 0;
	int lineno = 0, rc = 0;

	if ((fp = fopen(gl->file[kind], "r")) == NULL) {
		snprintf(err, errlen, "%s: cannot open %s: %s", gl_file_keys[kind], gl->file[kind],
		    strerror(errno));
		return -1;
	}
	while (getline(&buf, &cap, fp) >= 0) {
		lineno++;
		if ((hash = strchr(buf, '#')) != NULL)
			*hash = '\0';
		if (gl_lists_items(gl, l, kind, buf, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "%s: %s:%d: %s", gl_file_keys[kind], gl->file[kind],
			    lineno, why);
			rc = -1;
			break;
		}
	}
	if (rc == 0 && ferror(fp)) {
		snprintf(err, errlen, "%s: cannot read %s", gl_file_keys[kind], gl->file[kind]);
		rc = -1;
	}
	free(buf);
	fclose(fp);
	return rc;
}

/* gl_lists_items - the entries of one line or inline value */
static int
gl_lists_items(struct greylist *gl, struct gl_lists *l, enum gl_kind kind, const char *text,
    char *err, size_t errlen)
{
	const char *cur = text, *item;
	char one[GL_ITEM_MAX], why[256];
	struct pc_cidrs *c;
	size_t len, i;

	while (gl->host->opt_list(&cur, &item, &len)) {
		/* opt_list splits at blanks and commas; a line end is a blank too */
		while (len > 0 && (item[len - 1] == '\n' || item[len - 1] == '\r'))
			len--;
		if (len == 0)
			continue;
		if (len >= sizeof(one)) {
			snprintf(err, errlen, "an entry longer than %d octets", GL_ITEM_MAX - 1);
			return -1;
		}
		for (i = 0; i < len; i++)
			one[i] = gl_lower(item[i]);
		one[len] = '\0';
		if (kind == GL_CLIENTS) {
			if (gl->host->opt_cidr(one, &c, why, sizeof(why)) < 0) {
				snprintf(err, errlen, "%s", why);
				return -1;
			}
			gl->host->opt_cidr_free(c);
		} else if (strcmp(one, "*") == 0 || strcmp(one, ".") == 0 ||
		    strcmp(one, "*.") == 0 || strcmp(one, "@") == 0) {
			snprintf(err, errlen, "\"%s\" would match everyone", one);
			return -1;
		} else if (kind == GL_NAMES && strchr(one, '@') != NULL) {
			snprintf(err, errlen, "\"%s\" is not a host name pattern", one);
			return -1;
		}
		/* "*.example.com" is ".example.com": its subdomains */
		if (one[0] == '*' && one[1] == '.')
			memmove(one, one + 1, len);
		if (gl_lists_add(gl, l, kind, one, strlen(one)) < 0) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	return 0;
}

/* gl_lists_add - keep one entry */
static int
gl_lists_add(
    struct greylist *gl, struct gl_lists *l, enum gl_kind kind, const char *item, size_t len)
{
	struct gl_names *nm = &l->names[kind];
	char **v;

	if (nm->n == nm->cap) {
		size_t cap = nm->cap ? nm->cap * 2 : 16;
		if ((v = realloc(nm->v, cap * sizeof(*v))) == NULL)
			return -1;
		nm->v = v;
		nm->cap = cap;
	}
	if ((nm->v[nm->n] = strndup(item, len)) == NULL)
		return -1;
	nm->n++;
	return 0;
}

/* gl_lists_finish - the client entries become one CIDR list; the others
 * are sorted for bsearch */
static int
gl_lists_finish(struct greylist *gl, struct gl_lists *l, char *err, size_t errlen)
{
	struct gl_names *c = &l->names[GL_CLIENTS];
	char *text, *p, why[256];
	size_t k, len = 1;

	for (k = 0; k < c->n; k++)
		len += strlen(c->v[k]) + 1;
	if (c->n > 0) {
		if ((text = malloc(len)) == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		for (p = text, k = 0; k < c->n; k++)
			p += sprintf(p, "%s ", c->v[k]);
		*p = '\0';
		if (gl->host->opt_cidr(text, &l->clients, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "whitelist_clients: %s", why);
			free(text);
			return -1;
		}
		free(text);
	}
	for (k = GL_NAMES; k < GL_NKINDS; k++)
		if (l->names[k].n > 0)
			qsort(l->names[k].v, l->names[k].n, sizeof(char *), gl_names_cmp);
	return 0;
}

/* gl_lists_free - free what gl_lists_load built (NULL is fine) */
static void
gl_lists_free(struct greylist *gl, struct gl_lists *l)
{
	size_t k, i;

	if (l == NULL)
		return;
	gl->host->opt_cidr_free(l->clients);
	for (k = 0; k < GL_NKINDS; k++) {
		for (i = 0; i < l->names[k].n; i++)
			free(l->names[k].v[i]);
		free(l->names[k].v);
	}
	free(l);
}

static int
gl_names_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* gl_names_has - is the len octets at s an entry? */
static int
gl_names_has(const struct gl_names *l, const char *s, size_t len)
{
	size_t lo = 0, hi = l->n, mid;
	int c;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = strncmp(s, l->v[mid], len);
		if (c == 0 && l->v[mid][len] != '\0')
			c = -1;
		if (c == 0)
			return 1;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return 0;
}

/* gl_domain_listed - d (lower case) is an entry, or a subdomain of a
 * ".example.com" entry */
static int
gl_domain_listed(const struct gl_names *l, const char *d, size_t len)
{
	size_t i;

	if (l->n == 0 || len == 0)
		return 0;
	if (gl_names_has(l, d, len))
		return 1;
	for (i = 1; i < len; i++)
		if (d[i] == '.' && gl_names_has(l, d + i, len - i))
			return 1;
	return 0;
}

/* gl_addr_listed - addr (lower case) is an entry, or its local part
 * ("postmaster@"), or its domain is */
static enum gl_match
gl_addr_listed(const struct gl_names *l, const char *addr)
{
	const char *at = strrchr(addr, '@');

	if (l->n == 0)
		return GL_NO_MATCH;
	if (gl_names_has(l, addr, strlen(addr)))
		return GL_MATCH_ADDRESS;
	if (at == NULL)
		return GL_NO_MATCH;
	if (gl_names_has(l, addr, (size_t)(at - addr) + 1))
		return GL_MATCH_LOCAL;
	if (gl_domain_listed(l, at + 1, strlen(at + 1)))
		return GL_MATCH_DOMAIN;
	return GL_NO_MATCH;
}

/* gl_match_name - "whitelisted sender domain" and friends */
static const char *
gl_match_name(enum gl_kind kind, enum gl_match m)
{
	static const char *const names[2][4] = {
	    {"", "whitelisted sender address", "whitelisted sender local part",
	        "whitelisted sender domain"},
	    {"", "whitelisted recipient address", "whitelisted recipient local part",
	        "whitelisted recipient domain"},
	};

	return names[kind == GL_RCPTS][m];
}

/* gl_client_exempt - why the client is never greylisted, or NULL */
static const char *
gl_client_exempt(struct greylist *gl, struct pc_call *call)
{
	const struct pc_host *h = gl->host;
	const char *ip = h->get(call, PC_CLIENT_IP), *name;
	char lname[256];
	size_t i;

	if (h->get(call, PC_CLIENT_TRUSTED) != NULL)
		return "trusted client";
	if (h->get(call, PC_AUTH_USER) != NULL)
		return "authenticated client";
	if (gl->lists->clients != NULL && ip != NULL &&
	    h->opt_cidr_match(gl->lists->clients, ip) == 1)
		return "whitelisted client network";
	if ((name = h->get(call, PC_CLIENT_NAME)) != NULL && gl->lists->names[GL_NAMES].n > 0) {
		for (i = 0; name[i] != '\0' && i + 1 < sizeof(lname); i++)
			lname[i] = gl_lower(name[i]);
		lname[i] = '\0';
		if (i > 0 && lname[i - 1] == '.')
			lname[--i] = '\0';
		if (gl_domain_listed(&gl->lists->names[GL_NAMES], lname, i))
			return "whitelisted client name";
	}
	return NULL;
}

/* ---- the hooks ---- */

/* gl_rcpt - the triplet of this recipient (the null sender waits for DATA) */
static int
gl_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct greylist *gl = instance;
	const struct pc_host *h = gl->host;
	const char *ip = h->get(call, PC_CLIENT_IP), *sender = h->get(call, PC_SENDER),
	           *rcpt = h->get(call, PC_RCPT), *why;
	char net[GL_NET_MAX], ns[GL_ADDR_MAX], ls[GL_ADDR_MAX], nr[GL_ADDR_MAX];
	enum gl_match m;
	struct gl_job *job;

	if (sender == NULL || rcpt == NULL || sender[0] == '\0')
		return PC_HOOK_DONE;
	if (ip == NULL || gl_network(ip, gl->v4bits, gl->v6bits, net, sizeof(net)) < 0) {
		h->log(gl->self, call, PC_LOG_INFO, "greylist: client address %s unusable: passed",
		    ip != NULL ? ip : "(none)");
		return PC_HOOK_DONE;
	}
	if (gl_normalise_sender(sender, ns, sizeof(ns)) < 0 ||
	    gl_normalise_rcpt(sender, ls, sizeof(ls)) < 0 ||
	    gl_normalise_rcpt(rcpt, nr, sizeof(nr)) < 0) {
		h->log(gl->self, call, PC_LOG_INFO, "greylist: %s: address too long: passed", net);
		return PC_HOOK_DONE;
	}
	why = gl_client_exempt(gl, call);
	if (why == NULL && (m = gl_addr_listed(&gl->lists->names[GL_RCPTS], nr)) != GL_NO_MATCH)
		why = gl_match_name(GL_RCPTS, m);
	if (why == NULL &&
	    ((m = gl_addr_listed(&gl->lists->names[GL_SENDERS], ns)) != GL_NO_MATCH ||
	        (m = gl_addr_listed(&gl->lists->names[GL_SENDERS], ls)) != GL_NO_MATCH))
		why = gl_match_name(GL_SENDERS, m);
	if (why != NULL) {
		h->log(gl->self, call, PC_LOG_INFO, "greylist: %s %s <%s> <%s>: passed", why, net,
		    ns, nr);
		return PC_HOOK_DONE;
	}
	if ((job = gl_job_new(gl, call, net, ns, 1)) == NULL ||
	    (job->rcpt[0] = strdup(nr)) == NULL) {
		if (job != NULL)
			gl_job_free(job);
		v->action = PC_FAIL;
		v->reply = "out of memory";
		return PC_HOOK_DONE;
	}
	return gl_job_start(job, v);
}

/* gl_data - a bounce (null sender): every recipient's triplet */
static int
gl_data(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct greylist *gl = instance;
	const struct pc_host *h = gl->host;
	const char *ip = h->get(call, PC_CLIENT_IP), *sender = h->get(call, PC_SENDER), *why, *r;
	char net[GL_NET_MAX], nr[GL_ADDR_MAX];
	size_t i, n = h->rcpt_count(call);
	enum gl_match m;
	struct gl_job *job;

	if (sender == NULL || sender[0] != '\0' || n == 0)
		return PC_HOOK_DONE;
	if (ip == NULL || gl_network(ip, gl->v4bits, gl->v6bits, net, sizeof(net)) < 0) {
		h->log(gl->self, call, PC_LOG_INFO, "greylist: client address %s unusable: passed",
		    ip != NULL ? ip : "(none)");
		return PC_HOOK_DONE;
	}
	if ((why = gl_client_exempt(gl, call)) != NULL) {
		h->log(gl->self, call, PC_LOG_INFO, "greylist: %s %s <> (%zu recipients): passed",
		    why, net, n);
		return PC_HOOK_DONE;
	}
	if ((job = gl_job_new(gl, call, net, "", n)) == NULL)
		goto nomem;
	for (i = 0; i < n; i++) {
		if ((r = h->rcpt(call, i)) == NULL || gl_normalise_rcpt(r, nr, sizeof(nr)) < 0)
			continue;
		if ((m = gl_addr_listed(&gl->lists->names[GL_RCPTS], nr)) != GL_NO_MATCH) {
			h->log(gl->self, call, PC_LOG_INFO, "greylist: %s %s <> <%s>: passed",
			    gl_match_name(GL_RCPTS, m), net, nr);
			continue;
		}
		if ((job->rcpt[job->n] = strdup(nr)) == NULL)
			goto nomem;
		job->n++;
	}
	if (job->n == 0) {
		gl_job_free(job);
		return PC_HOOK_DONE;
	}
	return gl_job_start(job, v);
nomem:
	if (job != NULL)
		gl_job_free(job);
	v->action = PC_FAIL;
	v->reply = "out of memory";
	return PC_HOOK_DONE;
}

/* ---- a check: the chain of store requests ---- */

/* gl_job_new - a job for net and sender with room for n recipients (its
 * count starts at 0 at DATA, where recipients are added; 1 at RCPT) */
static struct gl_job *
gl_job_new(struct greylist *gl, struct pc_call *call, const char *net, const char *sender, size_t n)
{
	struct gl_job *job;

	if ((job = calloc(1, sizeof(*job))) == NULL)
		return NULL;
	if ((job->rcpt = calloc(n, sizeof(char *))) == NULL) {
		free(job);
		return NULL;
	}
	job->gl = gl;
	job->call = call;
	job->n = gl->host->stage(call) == PC_STAGE_RCPT ? n : 0;
	job->op[0].job = job->op[1].job = job;
	job->now_ms = gl_now_ms();
	snprintf(job->net, sizeof(job->net), "%s", net);
	snprintf(job->sender, sizeof(job->sender), "%s", sender);
	job->awl_klen = gl_awl_key(net, job->awl_key, sizeof(job->awl_key));
	return job;
}

/* gl_job_free - a job and its recipients */
static void
gl_job_free(struct gl_job *job)
{
	size_t i;

	/* at RCPT, n is 1 before rcpt[0] is filled in */
	for (i = 0; i < job->n; i++)
		free(job->rcpt[i]);
	free(job->rcpt);
	free(job);
}

/* gl_job_start - go pending and run the chain; it may finish (resume)
 * before this returns */
static int
gl_job_start(struct gl_job *job, struct pc_verdict *v)
{
	struct greylist *gl = job->gl;

	if (gl->host->pending(job->call, gl_job_cancel, job) != 0) {
		gl_job_free(job);
		v->action = PC_FAIL;
		v->reply = "the call cannot wait for the store";
		return PC_HOOK_DONE;
	}
	job->step = GL_AWL_GET;
	gl_job_drive(job);
	return PC_HOOK_PENDING;
}

/* gl_job_drive - take steps until a request is in flight or the job ends.
 * A store that answers at once calls gl_op_done inside a step: it only
 * records the answer, and the loop goes on here (no recursion, and the
 * job is never freed under a caller). */
static void
gl_job_drive(struct gl_job *job)
{
	job->driving = 1;
	while (!job->op[0].busy && !job->op[1].busy) {
		if (job->step == GL_END) {
			gl_job_finish(job);
			return;
		}
		gl_job_step(job);
	}
	job->driving = 0;
}

/* gl_job_step - one step: look at the answers of the last, start the next */
static void
gl_job_step(struct gl_job *job)
{
	struct greylist *gl = job->gl;
	struct gl_op *op = &job->op[0];
	unsigned long long count;
	size_t i;
	int n;

	switch (job->step) {
	case GL_AWL_GET:
		job->step = GL_TRIPLET_GET;
		if (gl->awl > 0 && job->awl_klen > 0) {
			job->step = GL_AWL_CHECK;
			gl_op_get(job, 0, job->awl_key, job->awl_klen);
		}
		return;
	case GL_AWL_CHECK:
		if (op->status == PC_STORE_FAILED) {
			gl_job_fail(job, op->error);
			job->step = GL_END;
			return;
		}
		job->step = GL_TRIPLET_GET;
		if (op->status != PC_STORE_OK ||
		    gl_counter_parse(op->value, op->vlen, &count) < 0 || count < gl->awl)
			return;
		/* A whitelisted network stays so for max_age after its last mail. */
		for (i = 0; i < job->n; i++)
			gl->host->log(gl->self, job->call, PC_LOG_INFO,
			    "greylist: auto-whitelisted network %s <%s> <%s>: passed (%llu passes)",
			    job->net, job->sender, job->rcpt[i], count);
		n = snprintf(job->val, sizeof(job->val), "%llu", count + 1);
		job->step = GL_AWL_REFRESHED;
		gl_op_set(job, 0, job->awl_key, job->awl_klen, job->val, (size_t)n, gl->max_age_ms);
		return;
	case GL_AWL_REFRESHED:
		if (op->status == PC_STORE_FAILED)
			gl_warn(gl, job->call, job->net, job->sender, NULL, op->error);
		job->step = GL_END;
		return;
	case GL_TRIPLET_GET:
		if (job->i >= job->n) {
			job->step = GL_END;
			return;
		}
		job->klen = gl_triplet_key(
		    job->net, job->sender, job->rcpt[job->i], job->key, sizeof(job->key));
		job->step = GL_TRIPLET_CHECK;
		gl_op_get(job, 0, job->key, job->klen);
		return;
	case GL_TRIPLET_CHECK:
		gl_job_check(job);
		return;
	case GL_TRIPLET_WROTE:
		gl_job_wrote(job);
		return;
	case GL_END:
		return;
	}
}

/* gl_job_check - what the store knows of the triplet decides: a new one
 * is written down and deferred, an early retry deferred, a retry in time
 * or a known triplet passes (and is written back with a new ttl) */
static void
gl_job_check(struct gl_job *job)
{
	struct greylist *gl = job->gl;
	struct gl_op *op = &job->op[0];
	const char *rcpt = job->rcpt[job->i];
	struct gl_state *s = &job->state;
	unsigned long long ttl;
	size_t n;

	if (op->status == PC_STORE_FAILED) {
		gl_job_fail(job, op->error);
		job->step = GL_END;
		return;
	}
	job->outcome = GL_NEW;
	if (op->status == PC_STORE_OK && gl_state_parse(op->value, op->vlen, s) == 0) {
		/* Another proxy's clock may be ahead of ours. */
		job->elapsed_ms = s->first_ms < job->now_ms ? job->now_ms - s->first_ms : 0;
		if (s->passed)
			job->outcome = GL_PASS_KNOWN;
		else if (job->elapsed_ms > gl->retry_ms)
			job->outcome = GL_EXPIRED;
		else if (job->elapsed_ms >= gl->delay_ms)
			job->outcome = GL_PASS_FIRST;
		else {
			gl->host->log(gl->self, job->call, PC_LOG_INFO,
			    "greylist: early retry %s <%s> <%s>: deferred for %llus more "
			    "(first seen %llus ago)",
			    job->net, job->sender, rcpt, gl_secs(gl->delay_ms - job->elapsed_ms),
			    job->elapsed_ms / 1000);
			gl_job_defer(job, gl->delay_ms - job->elapsed_ms);
			job->i++;
			job->step = GL_TRIPLET_GET;
			return;
		}
	} else if (op->status == PC_STORE_OK) {
		gl->host->log(gl->self, job->call, PC_LOG_WARN,
		    "greylist: unreadable state for %s <%s> <%s>: treated as new", job->net,
		    job->sender, rcpt);
	}
	if (job->outcome == GL_NEW || job->outcome == GL_EXPIRED) {
		s->first_ms = job->now_ms;
		s->passed = 0;
		s->passes = 0;
		ttl = gl->retry_ms;
	} else {
		s->passed = 1;
		s->passes++;
		ttl = gl->max_age_ms;
	}
	n = gl_state_format(s, job->val, sizeof(job->val));
	job->step = GL_TRIPLET_WROTE;
	job->incr = 0;
	gl_op_set(job, 0, job->key, job->klen, job->val, n, ttl);
	if (s->passed && gl->awl > 0 && job->awl_klen > 0) {
		/* Counting starts at the first pass; the ttl is set once, so a
		 * network must make auto_whitelist passes within max_age. */
		struct gl_op *inc = &job->op[1];
		job->incr = 1;
		inc->busy = 1;
		inc->req = NULL;
		inc->req = gl->host->store_incr(
		    gl->st, job->awl_key, job->awl_klen, 1, gl->max_age_ms, gl_op_done, inc);
		if (!inc->busy)
			inc->req = NULL;
	}
}

/* gl_job_wrote - the triplet (and the counter) is written: say so */
static void
gl_job_wrote(struct gl_job *job)
{
	struct greylist *gl = job->gl;
	struct gl_op *set = &job->op[0], *inc = &job->op[1];
	const char *rcpt = job->rcpt[job->i];

	switch (job->outcome) {
	case GL_NEW:
	case GL_EXPIRED:
		if (set->status == PC_STORE_FAILED) {
			/* Unwritten, a deferral would repeat for ever: let on_error
			 * decide instead. */
			gl_job_fail(job, set->error);
			job->step = GL_END;
			return;
		}
		if (job->outcome == GL_NEW)
			gl->host->log(gl->self, job->call, PC_LOG_INFO,
			    "greylist: new triplet %s <%s> <%s>: deferred for %llus", job->net,
			    job->sender, rcpt, gl_secs(gl->delay_ms));
		else
			gl->host->log(gl->self, job->call, PC_LOG_INFO,
			    "greylist: expired triplet %s <%s> <%s> (first seen %llus ago, "
			    "retry_window %llus): deferred for %llus",
			    job->net, job->sender, rcpt, job->elapsed_ms / 1000,
			    gl_secs(gl->retry_ms), gl_secs(gl->delay_ms));
		gl_job_defer(job, gl->delay_ms);
		break;
	case GL_PASS_FIRST:
	case GL_PASS_KNOWN:
		if (job->outcome == GL_PASS_FIRST)
			gl->host->log(gl->self, job->call, PC_LOG_INFO,
			    "greylist: retried triplet %s <%s> <%s>: passed after %llus", job->net,
			    job->sender, rcpt, job->elapsed_ms / 1000);
		else
			gl->host->log(gl->self, job->call, PC_LOG_INFO,
			    "greylist: known triplet %s <%s> <%s>: passed (%llu passes)", job->net,
			    job->sender, rcpt, job->state.passes);
		/* The verdict does not need the writes: a failure is only told. */
		if (set->status == PC_STORE_FAILED)
			gl_warn(gl, job->call, job->net, job->sender, rcpt, set->error);
		if (job->incr && inc->status == PC_STORE_FAILED)
			gl_warn(gl, job->call, job->net, job->sender, rcpt, inc->error);
		else if (job->incr && inc->status == PC_STORE_OK &&
		    (unsigned long long)inc->number == gl->awl)
			gl->host->log(gl->self, job->call, PC_LOG_INFO,
			    "greylist: network %s auto-whitelisted after %llu passes", job->net,
			    gl->awl);
		break;
	}
	job->i++;
	job->step = GL_TRIPLET_GET;
}

/* gl_job_finish - answer, and forget the job: any deferred triplet defers
 * the stage; else a failure is the section's on_error */
static void
gl_job_finish(struct gl_job *job)
{
	struct greylist *gl = job->gl;
	struct pc_call *call = job->call;
	struct pc_verdict v = {PC_CONTINUE, NULL};
	char reply[PC_REPLY_MAX];

	if (job->deferred) {
		snprintf(reply, sizeof(reply),
		    "451 4.7.1 Greylisted, please retry in %llu second%s", gl_secs(job->wait_ms),
		    gl_secs(job->wait_ms) == 1 ? "" : "s");
		v.action = PC_TEMPFAIL;
		v.reply = reply;
	} else if (job->failed) {
		snprintf(reply, sizeof(reply), "greylist store failed: %s", job->why);
		v.action = PC_FAIL;
		v.reply = reply;
	}
	gl_job_free(job);
	/* The host copies the reply before resume returns. */
	gl->host->resume(call, &v);
}

/* gl_job_cancel - the host gave up on the call: forget the requests in
 * flight and the job; the call is not touched again */
static void
gl_job_cancel(void *arg)
{
	struct gl_job *job = arg;
	int i;

	for (i = 0; i < 2; i++)
		if (job->op[i].busy && job->op[i].req != NULL)
			job->gl->host->store_cancel(job->op[i].req);
	gl_job_free(job);
}

/* gl_job_fail - the store failed: log (rate-limited) and remember why */
static void
gl_job_fail(struct gl_job *job, const char *why)
{
	gl_warn(job->gl, job->call, job->net, job->sender,
	    job->i < job->n ? job->rcpt[job->i] : NULL, why);
	job->failed = 1;
	snprintf(job->why, sizeof(job->why), "%s", why);
}

/* gl_job_defer - a triplet must wait wait_ms more */
static void
gl_job_defer(struct gl_job *job, unsigned long long wait_ms)
{
	job->deferred = 1;
	if (wait_ms > job->wait_ms)
		job->wait_ms = wait_ms;
}

/* ---- store requests ---- */

/* gl_op_get - start a get on slot i */
static void
gl_op_get(struct gl_job *job, int i, const char *key, size_t klen)
{
	struct gl_op *op = &job->op[i];
	struct pc_store_req *req;

	op->busy = 1;
	op->req = NULL;
	req = job->gl->host->store_get(job->gl->st, key, klen, gl_op_done, op);
	/* done may have run already (memory, LMDB, a failure): then no handle */
	if (op->busy)
		op->req = req;
}

/* gl_op_set - start a set on slot i */
static void
gl_op_set(struct gl_job *job, int i, const char *key, size_t klen, const char *val, size_t vlen,
    unsigned long long ttl_ms)
{
	struct gl_op *op = &job->op[i];
	struct pc_store_req *req;

	op->busy = 1;
	op->req = NULL;
	req =
	    job->gl->host->store_set(job->gl->st, key, klen, val, vlen, ttl_ms, 0, gl_op_done, op);
	if (op->busy)
		op->req = req;
}

/* gl_op_done - a request's answer: copy it; go on unless the driver is
 * on the stack (it goes on itself) or the other request is in flight */
static void
gl_op_done(void *arg, const struct pc_store_result *r)
{
	struct gl_op *op = arg;
	struct gl_job *job = op->job;

	op->busy = 0;
	op->req = NULL;
	op->status = r->status;
	op->number = r->number;
	op->vlen = 0;
	op->value[0] = '\0';
	op->error[0] = '\0';
	if (r->status == PC_STORE_OK && r->value != NULL) {
		/* a value too long to be ours stays unparseable: vlen says so */
		op->vlen = r->len;
		memcpy(op->value, r->value, r->len < sizeof(op->value) ? r->len : 0);
		if (r->len < sizeof(op->value))
			op->value[r->len] = '\0';
	}
	if (r->status == PC_STORE_FAILED)
		snprintf(op->error, sizeof(op->error), "%s",
		    r->error != NULL ? r->error : "the store failed");
	if (job->driving || job->op[0].busy || job->op[1].busy)
		return;
	gl_job_drive(job);
}

/* ---- helpers ---- */

/* gl_warn - a store failure, logged at most once per GL_WARN_EVERY_MS per
 * instance with the count of those not logged in between */
static void
gl_warn(struct greylist *gl, struct pc_call *call, const char *net, const char *sender,
    const char *rcpt, const char *why)
{
	unsigned long long now = gl_now_ms();

	if (gl->warned_ms != 0 && now >= gl->warned_ms && now - gl->warned_ms < GL_WARN_EVERY_MS) {
		gl->quiet++;
		return;
	}
	if (gl->quiet > 0)
		gl->host->log(gl->self, call, PC_LOG_WARN,
		    "greylist: store failed for %s <%s>%s%s%s: %s (%lu more failures since the "
		    "last report)",
		    net, sender, rcpt ? " <" : "", rcpt ? rcpt : "", rcpt ? ">" : "", why,
		    gl->quiet);
	else
		gl->host->log(gl->self, call, PC_LOG_WARN,
		    "greylist: store failed for %s <%s>%s%s%s: %s", net, sender, rcpt ? " <" : "",
		    rcpt ? rcpt : "", rcpt ? ">" : "", why);
	gl->warned_ms = now;
	gl->quiet = 0;
}

/* gl_now_ms - wall-clock milliseconds: stored times must mean the same
 * after a restart and on another proxy */
static unsigned long long
gl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (unsigned long long)ts.tv_sec * 1000ULL +
	    (unsigned long long)ts.tv_nsec / 1000000ULL;
}

/* gl_secs - milliseconds as whole seconds, rounded up (at least 1) */
static unsigned long long
gl_secs(unsigned long long ms)
{
	return ms < 1000 ? 1 : (ms + 999) / 1000;
}
