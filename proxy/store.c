/*
 * store.c - the store service's front (store.h): the registry of open
 * stores, the checks every request passes, and the completion path.
 *
 * Exports store_configure, store_open, store_check_spec, store_release,
 * store_close_all, store_get/set/incr/del/command, store_cancel,
 * store_name, store_scan, store_done, store_fail and store_now_ms.
 *
 * One store per spec per process: every instance naming "lmdb:/x" shares
 * one LMDB environment (LMDB wants exactly one per process) and every
 * instance naming one Redis URL one connection. A request to a
 * synchronous backend (memory, LMDB) lives on this file's stack and is
 * done before the call returns; one to an asynchronous backend (Redis)
 * is copied to the heap with its strings, so the caller's buffers may go,
 * and freed after its done() or its cancel.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "store.h"

static const struct store_backend *const backends[] = {
    &store_memory_backend,
    &store_lmdb_backend,
    &store_redis_backend,
    &store_unix_backend,
};

#define NBACKENDS (sizeof(backends) / sizeof(backends[0]))

static struct pc_store *stores;
static struct event_base *store_base;
static struct store_settings store_defaults = {
    .timeout_ms = 1000,
    .max_size = 64ULL * 1024 * 1024,
    .purge_ms = 60 * 1000,
};

static const struct store_backend *backend_for(const char *spec, const char **rest);
static char *spec_name(const char *spec);
static int check_key(struct pc_store_req *req);
static struct pc_store_req *submit(struct pc_store_req *req);
static struct pc_store_req *req_copy(const struct pc_store_req *req);

/* store_configure - see store.h */
void
store_configure(struct event_base *base, const struct store_settings *set)
{
	store_base = base;
	if (set != NULL)
		store_defaults = *set;
}

/* store_mono_ms - see store.h */
uint64_t
store_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* store_now_ms - see store.h */
uint64_t
store_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* backend_for - the backend whose scheme starts spec; *rest is what follows */
static const struct store_backend *
backend_for(const char *spec, const char **rest)
{
	for (size_t i = 0; i < NBACKENDS; i++) {
		size_t n = strlen(backends[i]->scheme);

		if (strncmp(spec, backends[i]->scheme, n) != 0)
			continue;
		if (spec[n] == '\0') {
			*rest = spec + n;
			return backends[i];
		}
		if (spec[n] == ':') {
			*rest = spec + n + 1;
			return backends[i];
		}
	}
	return NULL;
}

/* store_check_spec - see store.h */
int
store_check_spec(const char *spec, char *err, size_t errlen)
{
	const char *rest;
	const struct store_backend *be;
	if (spec == NULL || spec[0] == '\0') {
		snprintf(err, errlen,
		    "no store given: expected memory, lmdb:PATH, "
		    "redis://HOST:PORT/DB or unix:PATH");
		return -1;
	}
	if ((be = backend_for(spec, &rest)) == NULL) {
		snprintf(err, errlen,
		    "unknown store \"%s\": expected memory, lmdb:PATH, redis://HOST:PORT/DB or "
		    "unix:PATH",
		    spec);
		return -1;
	}
	if (strcmp(be->scheme, "memory") == 0 && rest[0] != '\0') {
		snprintf(err, errlen, "bad store \"%s\": memory takes nothing after it", spec);
		return -1;
	}
	return 0;
}

/* spec_name - spec for logs: a password in a URL's user part left out */
static char *
spec_name(const char *spec)
{
	const char *auth = strstr(spec, "://"), *at, *slash;
	char *name;

	if (auth == NULL)
		return strdup(spec);
	auth += 3;
	slash = strchr(auth, '/');
	at = memchr(auth, '@', slash != NULL ? (size_t)(slash - auth) : strlen(auth));
	if (at == NULL)
		return strdup(spec);
	/* A user part "user:secret@" becomes "***@". */
	if (asprintf(&name, "%.*s***%s", (int)(auth - spec), spec, at) < 0)
		return NULL;
	return name;
}

/* store_open - see store.h */
struct pc_store *
store_open(const char *spec, char *err, size_t errlen)
{
	const struct store_backend *be;
	struct pc_store *st;
	const char *rest;

	if (store_check_spec(spec, err, errlen) != 0)
		return NULL;
	for (st = stores; st != NULL; st = st->next)
		if (strcmp(st->spec, spec) == 0) {
			st->refs++;
			return st;
		}
	be = backend_for(spec, &rest);
	/* Each worker would keep a store of its own: a greylisted retry or a
	 * rate counted in another worker would not be seen. */
	if (strcmp(be->scheme, "memory") == 0 && store_defaults.workers > 1) {
		snprintf(err, errlen,
		    "store memory is per process: with workers = %u each worker would keep its own; "
		    "use lmdb:PATH or redis://HOST:PORT/DB",
		    store_defaults.workers);
		return NULL;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL || (st->spec = strdup(spec)) == NULL ||
	    (st->name = spec_name(spec)) == NULL) {
		snprintf(err, errlen, "store %s: out of memory", spec);
		goto fail;
	}
	st->be = be;
	st->base = store_base;
	st->set = store_defaults;
	if (be->open(st, rest, err, errlen) != 0)
		goto fail;
	st->refs = 1;
	st->next = stores;
	stores = st;
	return st;
fail:
	if (st != NULL) {
		free(st->spec);
		free(st->name);
		free(st);
	}
	return NULL;
}

/* store_free - close one store and take it out of the registry */
static void
store_free(struct pc_store *st)
{
	for (struct pc_store **p = &stores; *p != NULL; p = &(*p)->next)
		if (*p == st) {
			*p = st->next;
			break;
		}
	st->be->close(st);
	free(st->spec);
	free(st->name);
	free(st);
}

/* store_release - see store.h */
void
store_release(struct pc_store *st)
{
	if (st != NULL && --st->refs == 0)
		store_free(st);
}

/* store_close_all - see store.h */
void
store_close_all(void)
{
	while (stores != NULL)
		store_free(stores);
}

/* store_name - see store.h */
const char *
store_name(const struct pc_store *st)
{
	return st != NULL ? st->name : "(none)";
}

/* check_key - is the request's key (and value) within the limits? */
static int
check_key(struct pc_store_req *req)
{
	if (req->st == NULL) {
		struct pc_store_result r = {.status = PC_STORE_FAILED, .error = "no store"};

		if (req->done != NULL)
			req->done(req->arg, &r);
		return -1;
	}
	if (req->op == STORE_COMMAND)
		return 0;
	if (req->key == NULL || req->klen == 0 || req->klen > PC_STORE_KEY_MAX) {
		store_fail(req, "key of %zu octets (1 to %d allowed)", req->key ? req->klen : 0,
		    PC_STORE_KEY_MAX);
		return -1;
	}
	if (req->op == STORE_SET &&
	    ((req->value == NULL && req->vlen > 0) || req->vlen > PC_STORE_VALUE_MAX)) {
		store_fail(
		    req, "value of %zu octets (at most %d allowed)", req->vlen, PC_STORE_VALUE_MAX);
		return -1;
	}
	return 0;
}

/* req_copy - a heap copy of req and everything it points to */
static struct pc_store_req *
req_copy(const struct pc_store_req *req)
{
	size_t need = sizeof(*req) + req->klen + 1 + req->vlen + 1;
	struct pc_store_req *c;
	char *p;

	if (req->op == STORE_COMMAND) {
		need += req->argc * (sizeof(char *) + sizeof(size_t));
		for (size_t i = 0; i < req->argc; i++)
			need += req->argvlen[i] + 1;
	}
	if ((c = malloc(need)) == NULL)
		return NULL;
	*c = *req;
	p = (char *)(c + 1);
	if (req->op == STORE_COMMAND) {
		const char **argv = (const char **)p;
		size_t *lens = (size_t *)(argv + req->argc);

		p = (char *)(lens + req->argc);
		for (size_t i = 0; i < req->argc; i++) {
			memcpy(p, req->argv[i], req->argvlen[i]);
			p[req->argvlen[i]] = '\0';
			argv[i] = p;
			lens[i] = req->argvlen[i];
			p += req->argvlen[i] + 1;
		}
		c->argv = argv;
		c->argvlen = lens;
	}
	if (req->key != NULL)
		memcpy(p, req->key, req->klen);
	p[req->klen] = '\0';
	c->key = p;
	p += req->klen + 1;
	if (req->value != NULL)
		memcpy(p, req->value, req->vlen);
	p[req->vlen] = '\0';
	c->value = p;
	c->backend = NULL;
	c->next = c->prev = NULL;
	c->life = REQ_STACK;
	return c;
}

/* submit - hand a checked request to its backend */
static struct pc_store_req *
submit(struct pc_store_req *req)
{
	struct pc_store *st = req->st;
	struct pc_store_req *c;

	if (check_key(req) != 0)
		return NULL;
	if (!st->be->async) {
		st->be->submit(st, req);
		return NULL;
	}
	if ((c = req_copy(req)) == NULL) {
		store_fail(req, "out of memory");
		return NULL;
	}
	/* The backend may complete it at once (the server is down): then
	 * the caller must not get it, and it is freed here. */
	c->life = REQ_SUBMITTING;
	st->be->submit(st, c);
	if (c->life == REQ_DONE_EARLY) {
		free(c);
		return NULL;
	}
	c->life = REQ_FLIGHT;
	return c;
}

struct pc_store_req *
store_get(struct pc_store *st, const char *key, size_t klen, pc_store_fn done, void *arg)
{
	struct pc_store_req req = {
	    .st = st, .op = STORE_GET, .key = key, .klen = klen, .done = done, .arg = arg};

	return submit(&req);
}

struct pc_store_req *
store_set(struct pc_store *st, const char *key, size_t klen, const char *value, size_t vlen,
    unsigned long long ttl_ms, unsigned flags, pc_store_fn done, void *arg)
{
	struct pc_store_req req = {.st = st,
	    .op = STORE_SET,
	    .key = key,
	    .klen = klen,
	    .value = value,
	    .vlen = vlen,
	    .ttl_ms = ttl_ms,
	    .flags = flags,
	    .done = done,
	    .arg = arg};

	return submit(&req);
}

struct pc_store_req *
store_incr(struct pc_store *st, const char *key, size_t klen, long long by,
    unsigned long long ttl_ms, pc_store_fn done, void *arg)
{
	struct pc_store_req req = {.st = st,
	    .op = STORE_INCR,
	    .key = key,
	    .klen = klen,
	    .by = by,
	    .ttl_ms = ttl_ms,
	    .done = done,
	    .arg = arg};

	return submit(&req);
}

struct pc_store_req *
store_del(struct pc_store *st, const char *key, size_t klen, pc_store_fn done, void *arg)
{
	struct pc_store_req req = {
	    .st = st, .op = STORE_DEL, .key = key, .klen = klen, .done = done, .arg = arg};

	return submit(&req);
}

struct pc_store_req *
store_command(struct pc_store *st, size_t argc, const char *const *argv, const size_t *argvlen,
    pc_store_fn done, void *arg)
{
	struct pc_store_req req = {.st = st,
	    .op = STORE_COMMAND,
	    .argc = argc,
	    .argv = argv,
	    .argvlen = argvlen,
	    .done = done,
	    .arg = arg};

	if (st != NULL && !st->be->async) {
		struct pc_store_result r = {.status = PC_STORE_FAILED};

		r.error = "not a Redis store";
		if (done != NULL)
			done(arg, &r);
		return NULL;
	}
	if (st != NULL && (argc == 0 || argv == NULL || argvlen == NULL)) {
		store_fail(&req, "a command needs at least its name");
		return NULL;
	}
	return submit(&req);
}

/* store_cancel - see store.h */
void
store_cancel(struct pc_store_req *req)
{
	if (req == NULL)
		return;
	req->st->be->cancel(req->st, req);
	free(req);
}

/* store_scan - see store.h */
void
store_scan(struct pc_store *st, const char *prefix, size_t plen, store_scan_fn each,
    store_scan_done_fn done, void *arg)
{
	st->be->scan(st, prefix, plen, each, done, arg);
}

/* store_done - see store.h */
void
store_done(struct pc_store_req *req, const struct pc_store_result *r)
{
	if (req->done != NULL)
		req->done(req->arg, r);
	if (req->life == REQ_SUBMITTING)
		req->life = REQ_DONE_EARLY; /* submit() frees it */
	else if (req->life == REQ_FLIGHT)
		free(req);
}

/* store_fail - see store.h */
void
store_fail(struct pc_store_req *req, const char *fmt, ...)
{
	struct pc_store *st = req->st;
	struct pc_store_result r = {.status = PC_STORE_FAILED};
	char why[512];
	uint64_t now = store_mono_ms();
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (st->warned_ms == 0 || now - st->warned_ms >= STORE_WARN_EVERY_MS) {
		if (st->failed_since_warn > 0)
			log_warn(NULL,
			    "store %s: %s (and %lu more failed requests in the last %us)", st->name,
			    why, st->failed_since_warn, STORE_WARN_EVERY_MS / 1000);
		else
			log_warn(NULL, "store %s: %s", st->name, why);
		st->warned_ms = now;
		st->failed_since_warn = 0;
	} else
		st->failed_since_warn++;
	r.error = why;
	store_done(req, &r);
}
