/*
 * store.h - the store service (DESIGN.md §7; plugin.h, THE STORE): string
 * keys and values with a time to live, in memory, in LMDB or in Redis,
 * behind one asynchronous interface.
 *
 * store.c keeps the registry (one store per spec per process, counted
 * references), checks requests and hands them to a backend:
 * store_memory.c, store_lmdb.c and store_redis.c. A backend completes a
 * request with store_done, at once (memory, LMDB) or later (Redis).
 * The admin tool (tools/portcullis-store.c) uses the same functions.
 */
#ifndef PORTCULLIS_STORE_H
#define PORTCULLIS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <portcullis/plugin.h>

struct event_base;

/* What every store takes from the configuration (config.c: store_*). */
struct store_settings {
	uint64_t timeout_ms; /* store_timeout: each Redis command */
	uint64_t max_size; /* store_max_size: an LMDB map, a memory store */
	uint64_t purge_ms; /* store_purge_interval: LMDB's expiry sweep */
	unsigned workers; /* processes sharing the work: memory is refused above 1 */
};

enum store_op {
	STORE_GET = 0,
	STORE_SET,
	STORE_INCR,
	STORE_DEL,
	STORE_COMMAND,
};

/* One request. For a synchronous backend it lives on the caller's stack
 * and points at the caller's strings; an asynchronous one (Redis) gets a
 * heap copy from store.c and must call store_done exactly once, unless
 * the backend's cancel ran first. */
struct pc_store_req {
	struct pc_store *st;
	enum store_op op;
	const char *key;
	size_t klen;
	const char *value; /* set */
	size_t vlen;
	long long by; /* incr */
	uint64_t ttl_ms; /* set, incr; 0: none */
	unsigned flags; /* set: PC_STORE_NX */
	size_t argc; /* command */
	const char *const *argv;
	const size_t *argvlen;
	pc_store_fn done;
	void *arg;
	void *backend; /* the backend's own per-request state */
	struct pc_store_req *next, *prev; /* the backend's list of requests in flight */
	int life; /* store.c's: REQ_* */
};

/* A request's life (store.c): on the caller's stack, being submitted, in
 * flight, or completed while being submitted. */
enum { REQ_STACK = 0, REQ_SUBMITTING, REQ_FLIGHT, REQ_DONE_EARLY };

/* scan - one key of store_scan: its value and the milliseconds it has
 * left (-1: no ttl). Return 0 to go on, 1 to stop. */
typedef int (*store_scan_fn)(
    void *arg, const char *key, size_t klen, const char *value, size_t vlen, int64_t ttl_ms);
/* scan_done - the scan ended: error NULL, or why it failed. */
typedef void (*store_scan_done_fn)(void *arg, const char *error);

struct store_backend {
	const char *scheme; /* "memory", "lmdb", "redis", "unix" */
	int async; /* requests complete later: store.c copies them */
	/* open - rest is the spec after "scheme:" (memory: ""); set
	 * st->priv. 0, or -1 with a message in err. */
	int (*open)(struct pc_store *st, const char *rest, char *err, size_t errlen);
	void (*close)(struct pc_store *st);
	/* submit - do req; call store_done(req, ...) now or later. */
	void (*submit)(struct pc_store *st, struct pc_store_req *req);
	/* cancel - (async only) req's done must not be called; store.c frees req
	 * after this returns, so the backend lets go of it. */
	void (*cancel)(struct pc_store *st, struct pc_store_req *req);
	/* scan - every live key starting with prefix (the admin tool):
	 * each(), then done() once, now or later. */
	void (*scan)(struct pc_store *st, const char *prefix, size_t plen, store_scan_fn each,
	    store_scan_done_fn done, void *arg);
};

struct pc_store {
	char *spec; /* as configured */
	char *name; /* for logs: the spec without a password */
	const struct store_backend *be;
	struct event_base *base;
	struct store_settings set;
	void *priv; /* the backend's */
	unsigned refs;
	struct pc_store *next; /* the registry */
	/* Failures, logged once per STORE_WARN_EVERY_MS (store_failed). */
	uint64_t warned_ms;
	unsigned long failed_since_warn;
};

/* Errors are logged at most this often per store; the rest are counted. */
#define STORE_WARN_EVERY_MS 60000

/* store_configure - the base and settings stores opened from now on use. */
void store_configure(struct event_base *base, const struct store_settings *set);
/* store_open - the store spec names, shared if it is open already; NULL
 * with a message in err. */
struct pc_store *store_open(const char *spec, char *err, size_t errlen);
/* store_check_spec - is spec well-formed (portcullis -t, config)? 0 or -1. */
int store_check_spec(const char *spec, char *err, size_t errlen);
void store_release(struct pc_store *st);
/* store_close_all - at exit: every store, whatever its references. */
void store_close_all(void);

/* The operations (plugin.h documents them). NULL: done already ran. */
struct pc_store_req *store_get(
    struct pc_store *st, const char *key, size_t klen, pc_store_fn done, void *arg);
struct pc_store_req *store_set(struct pc_store *st, const char *key, size_t klen, const char *value,
    size_t vlen, unsigned long long ttl_ms, unsigned flags, pc_store_fn done, void *arg);
struct pc_store_req *store_incr(struct pc_store *st, const char *key, size_t klen, long long by,
    unsigned long long ttl_ms, pc_store_fn done, void *arg);
struct pc_store_req *store_del(
    struct pc_store *st, const char *key, size_t klen, pc_store_fn done, void *arg);
struct pc_store_req *store_command(struct pc_store *st, size_t argc, const char *const *argv,
    const size_t *argvlen, pc_store_fn done, void *arg);
void store_cancel(struct pc_store_req *req);
const char *store_name(const struct pc_store *st);
void store_scan(struct pc_store *st, const char *prefix, size_t plen, store_scan_fn each,
    store_scan_done_fn done, void *arg);

/* For backends. */
/* store_done - complete req with r (and free it when store.c copied it). */
void store_done(struct pc_store_req *req, const struct pc_store_result *r);
/* store_fail - complete req with PC_STORE_FAILED and why; logs it, at most
 * once per STORE_WARN_EVERY_MS per store (then how many were not). */
void store_fail(struct pc_store_req *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* store_now_ms - wall-clock milliseconds (TTLs that survive a restart). */
uint64_t store_now_ms(void);
/* store_mono_ms - monotonic milliseconds (intervals a clock step must not
 * skew: how often a failure is warned about). */
uint64_t store_mono_ms(void);

extern const struct store_backend store_memory_backend;
extern const struct store_backend store_lmdb_backend;
extern const struct store_backend store_redis_backend;
extern const struct store_backend store_unix_backend;

#endif
