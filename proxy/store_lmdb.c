/*
 * store_lmdb.c - the lmdb:PATH store (store.h; doc/store.md, "LMDB").
 *
 * Exports store_lmdb_backend. PATH, absolute, is a directory holding one
 * LMDB environment (data.mdb and lock.mdb). It is created, mode 0700,
 * when it is missing, and so are its missing parents (0755, as mkdir -p
 * makes them): the default store's /var/lib/portcullis need not exist. Every
 * process that opens the directory gets its own MDB_env; LMDB's lock file
 * makes them safe together, and MDB_NOTLS lets a read transaction (a scan)
 * stay open while the same thread writes.
 *
 * An entry's value is an 8-octet expiry (wall-clock milliseconds, big
 * endian, 0 for none: store_now_ms, so a ttl survives a restart) followed
 * by the value's octets. An expired entry reads as missing; a timer sweeps
 * them out (st->set.purge_ms), a slice at a time so that the event loop is
 * never held for the whole map. The map's size is st->set.max_size: a
 * write that finds it full purges the expired entries once and retries,
 * then fails and says which setting to raise.
 *
 * Commits do not fsync (MDB_NOSYNC): a store write happens on the event
 * loop, inside an SMTP command, and an fsync there would stall every
 * session of the process. A crash of the process loses nothing (the pages
 * are in the kernel's cache); the map is flushed to disk at each end of a
 * purge sweep and at close, so a power loss loses at most the writes since
 * then. Greylisting and rate counters are soft state: losing a minute of
 * them costs a retry, not mail.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <event2/event.h>
#include <lmdb.h>

#include "log.h"
#include "store.h"

/* store_max_size 0: the map LMDB gets. */
#define LMDB_DEFAULT_SIZE (64ULL * 1024 * 1024)
/* The smallest map accepted, in pages: LMDB needs its two meta pages and
 * a few more for the tree and its free list before the first entry. */
#define LMDB_MIN_PAGES 16
/* store_purge_interval 0: how often the sweep starts. */
#define LMDB_DEFAULT_PURGE_MS 60000
/* Entries one purge slice looks at: a slice takes milliseconds, and the
 * next one waits for the loop's other events. */
#define LMDB_PURGE_SLICE 10000
/* A map that is full of live entries must not make each write a sweep of
 * the whole map: after a sweep that freed nothing, the next waits until
 * the soonest expiry it saw, or this long at most (another process may
 * have written entries that expire sooner). */
#define LMDB_FULL_PURGE_EVERY_MS 1000
/* Deleting copies pages too (LMDB never writes in place), so a map that
 * is full could not even be emptied. A delete that finds it full gets
 * this much more map for its transaction: a 32nd of it, at least this
 * many pages. */
#define LMDB_ROOM_DIV 32
#define LMDB_ROOM_MIN_PAGES 16
/* The expiry in front of each value. */
#define LMDB_HDR 8
/* get: values up to this size are copied on the stack, larger ones to
 * the heap (a result's value needs a NUL after it, which the map lacks). */
#define LMDB_SMALL_VALUE 512
/* The longest decimal long long, with its sign. */
#define LMDB_NUM_MAX 21

struct lmdb_store {
	MDB_env *env;
	MDB_dbi dbi;
	char *path;
	dev_t dev; /* the directory, to refuse a second env on it */
	ino_t ino;
	pid_t pid; /* the process that opened the env */
	uint64_t map_size;
	uint64_t page;
	unsigned scanning; /* a scan's read transaction is open: no remapping */
	uint64_t purge_ms;
	struct event *purge_ev;
	/* Where the sweep goes on: the first key the last slice did not look at. */
	char resume[PC_STORE_KEY_MAX];
	size_t resume_len; /* 0: from the first key */
	uint64_t full_purge_ms; /* when a full map last made us sweep */
	uint64_t full_soonest; /* the soonest expiry that sweep saw */
	struct lmdb_store *next; /* open in this process */
};

/* The result of one write, filled inside its transaction. */
struct lmdb_write {
	struct pc_store_result r;
	int commit; /* something changed */
	char why[128]; /* a failure that is not LMDB's */
};

typedef int (*lmdb_write_fn)(
    struct lmdb_store *, MDB_txn *, const struct pc_store_req *, struct lmdb_write *);

static int lmdb_open(struct pc_store *st, const char *rest, char *err, size_t errlen);
static int lmdb_dir(const char *path, struct stat *sb, char *err, size_t errlen);
static int lmdb_env(struct lmdb_store *ls, char *err, size_t errlen);
static void lmdb_close(struct pc_store *st);
static void lmdb_submit(struct pc_store *st, struct pc_store_req *req);
static void lmdb_scan(struct pc_store *st, const char *prefix, size_t plen, store_scan_fn each,
    store_scan_done_fn done, void *arg);
static int lmdb_txn(struct lmdb_store *ls, unsigned flags, MDB_txn **txn);
static void lmdb_get(struct pc_store *st, struct pc_store_req *req);
static void lmdb_write(struct pc_store *st, struct pc_store_req *req, lmdb_write_fn fn);
static int lmdb_set(
    struct lmdb_store *ls, MDB_txn *txn, const struct pc_store_req *req, struct lmdb_write *w);
static int lmdb_incr(
    struct lmdb_store *ls, MDB_txn *txn, const struct pc_store_req *req, struct lmdb_write *w);
static int lmdb_del(
    struct lmdb_store *ls, MDB_txn *txn, const struct pc_store_req *req, struct lmdb_write *w);
static int lmdb_put(struct lmdb_store *ls, MDB_txn *txn, MDB_val *key, uint64_t expiry,
    const char *value, size_t vlen);
static int lmdb_live(const MDB_val *v, uint64_t now, uint64_t *expiry);
static uint64_t lmdb_expiry(uint64_t ttl_ms);
static int lmdb_parse_int(const char *s, size_t len, long long *out);
static int lmdb_purge_slice(
    struct lmdb_store *ls, size_t limit, size_t *deleted, int *finished, uint64_t *soonest);
static int lmdb_purge_step(
    struct lmdb_store *ls, size_t *limit, size_t *deleted, int *finished, uint64_t *soonest);
static size_t lmdb_purge_all(struct pc_store *st);
static int lmdb_room(struct lmdb_store *ls, int grow);
static void lmdb_purge_tick(evutil_socket_t fd, short what, void *arg);
static void lmdb_purge_arm(struct lmdb_store *ls, uint64_t ms);
static int64_t lmdb_ttl_left(uint64_t expiry, uint64_t now);
static const char *lmdb_size(char *buf, size_t len, uint64_t n);

const struct store_backend store_lmdb_backend = {
    .scheme = "lmdb",
    .async = 0,
    .open = lmdb_open,
    .close = lmdb_close,
    .submit = lmdb_submit,
    .cancel = NULL,
    .scan = lmdb_scan,
};

/* LMDB forbids two envs on one directory in one process (closing one
 * drops the other's file locks); store.c shares a store per spec, and
 * this catches two specs naming one directory ("lmdb:/x", "lmdb:/x/"). */
static struct lmdb_store *lmdb_stores;

/* lmdb_open - the environment in directory rest */
static int
lmdb_open(struct pc_store *st, const char *rest, char *err, size_t errlen)
{
	struct lmdb_store *ls, *o;
	struct stat sb;
	long page = sysconf(_SC_PAGESIZE);
	char a[32], b[32];

	if (page <= 0)
		page = 4096;
	if (rest == NULL || *rest == '\0') {
		snprintf(
		    err, errlen, "store lmdb: needs a directory (lmdb:/var/lib/portcullis/NAME)");
		return -1;
	}
	if (lmdb_dir(rest, &sb, err, errlen) != 0)
		return -1;
	for (o = lmdb_stores; o != NULL; o = o->next)
		if (o->pid == getpid() && o->dev == sb.st_dev && o->ino == sb.st_ino) {
			snprintf(
			    err, errlen, "store lmdb:%s is open already as lmdb:%s", rest, o->path);
			return -1;
		}
	if ((ls = calloc(1, sizeof(*ls))) == NULL || (ls->path = strdup(rest)) == NULL) {
		free(ls);
		snprintf(err, errlen, "store lmdb:%s: out of memory", rest);
		return -1;
	}
	ls->dev = sb.st_dev;
	ls->ino = sb.st_ino;
	ls->pid = getpid();
	ls->page = (uint64_t)page;
	ls->map_size = st->set.max_size ? st->set.max_size : LMDB_DEFAULT_SIZE;
	/* A map is whole pages; round up, so that "64k" means at least that. */
	ls->map_size = (ls->map_size + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;
	ls->purge_ms = st->set.purge_ms ? st->set.purge_ms : LMDB_DEFAULT_PURGE_MS;
	if (ls->map_size < LMDB_MIN_PAGES * (uint64_t)page) {
		snprintf(err, errlen,
		    "store lmdb:%s: store_max_size %s is below LMDB's minimum, %s", rest,
		    lmdb_size(a, sizeof(a), st->set.max_size),
		    lmdb_size(b, sizeof(b), LMDB_MIN_PAGES * (uint64_t)page));
		goto fail;
	}
	if (lmdb_env(ls, err, errlen) != 0)
		goto fail;
	if (st->base != NULL) {
		if ((ls->purge_ev = evtimer_new(st->base, lmdb_purge_tick, st)) == NULL) {
			snprintf(err, errlen, "store lmdb:%s: out of memory", rest);
			mdb_env_close(ls->env);
			goto fail;
		}
		lmdb_purge_arm(ls, ls->purge_ms);
	}
	ls->next = lmdb_stores;
	lmdb_stores = ls;
	st->priv = ls;
	return 0;
fail:
	free(ls->path);
	free(ls);
	return -1;
}

/* lmdb_dir - path is a directory we may write, made if missing: mode
 * 0700, its missing parents 0755 as mkdir -p makes them (the default
 * store's /var/lib/portcullis may not exist yet) */
static int
lmdb_dir(const char *path, struct stat *sb, char *err, size_t errlen)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (path[0] != '/') {
		/* The daemon's and the admin tool's working directories
		 * differ: a relative path would be two stores. */
		snprintf(err, errlen, "store lmdb:%s: the path must be absolute", path);
		return -1;
	}
	if (len >= sizeof(buf)) {
		snprintf(
		    err, errlen, "store lmdb: the path is longer than %zu octets", sizeof(buf) - 1);
		return -1;
	}
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; (p = strchr(p, '/')) != NULL; *p++ = '/') {
		*p = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
			snprintf(err, errlen, "store lmdb:%s: cannot create %s: %s", path, buf,
			    strerror(errno));
			return -1;
		}
	}
	if (mkdir(path, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "store lmdb:%s: cannot create the directory: %s", path,
		    strerror(errno));
		return -1;
	}
	if (stat(path, sb) != 0) {
		snprintf(err, errlen, "store lmdb:%s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(sb->st_mode)) {
		snprintf(err, errlen, "store lmdb:%s: not a directory", path);
		return -1;
	}
	/* The effective ids are the ones LMDB opens its files with. */
	if (faccessat(AT_FDCWD, path, R_OK | W_OK | X_OK, AT_EACCESS) != 0) {
		snprintf(err, errlen, "store lmdb:%s: the directory is not writable by uid %u: %s",
		    path, (unsigned)geteuid(), strerror(errno));
		return -1;
	}
	return 0;
}

/* lmdb_env - open ls's environment and its database */
static int
lmdb_env(struct lmdb_store *ls, char *err, size_t errlen)
{
	MDB_txn *txn;
	int rc, dead = 0;
	const char *what = "create an environment";

	if ((rc = mdb_env_create(&ls->env)) != 0)
		goto fail;
	what = "set the map size";
	if ((rc = mdb_env_set_mapsize(ls->env, (size_t)ls->map_size)) != 0)
		goto close;
	what = "open";
	if ((rc = mdb_env_open(ls->env, ls->path, MDB_NOTLS | MDB_NOSYNC, 0600)) != 0)
		goto close;
	/* A process that died inside a read transaction (kill -9, a crash)
	 * leaves its reader slot behind, and the pages it saw can never be
	 * reused while it is there: the map would fill up for good. */
	what = "check the reader table";
	if ((rc = mdb_reader_check(ls->env, &dead)) != 0)
		goto close;
	if (dead > 0)
		log_info(NULL, "store lmdb:%s: cleared %d stale reader slot%s", ls->path, dead,
		    dead == 1 ? "" : "s");
	what = "open the database";
	if ((rc = lmdb_txn(ls, MDB_RDONLY, &txn)) != 0)
		goto close;
	if ((rc = mdb_dbi_open(txn, NULL, 0, &ls->dbi)) != 0) {
		mdb_txn_abort(txn);
		goto close;
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		goto close;
	return 0;
close:
	mdb_env_close(ls->env);
fail:
	ls->env = NULL;
	snprintf(err, errlen, "store lmdb:%s: cannot %s: %s", ls->path, what, mdb_strerror(rc));
	return -1;
}

/* lmdb_close - stop the sweep, flush and close */
static void
lmdb_close(struct pc_store *st)
{
	struct lmdb_store *ls = st->priv, **pp;

	if (ls == NULL)
		return;
	for (pp = &lmdb_stores; *pp != NULL; pp = &(*pp)->next)
		if (*pp == ls) {
			*pp = ls->next;
			break;
		}
	if (ls->purge_ev != NULL)
		event_free(ls->purge_ev);
	if (ls->pid == getpid()) {
		mdb_env_sync(ls->env, 1);
		mdb_env_close(ls->env);
	}
	free(ls->path);
	free(ls);
	st->priv = NULL;
}

/* lmdb_submit - do req now */
static void
lmdb_submit(struct pc_store *st, struct pc_store_req *req)
{
	struct lmdb_store *ls = st->priv;

	/* An env must not cross fork(2): its locks belong to the parent. */
	if (ls->pid != getpid()) {
		store_fail(req, "opened by process %ld, used by %ld: open stores after fork",
		    (long)ls->pid, (long)getpid());
		return;
	}
	if (req->op != STORE_COMMAND &&
	    (req->klen == 0 || req->klen > PC_STORE_KEY_MAX ||
	        req->klen > (size_t)mdb_env_get_maxkeysize(ls->env))) {
		store_fail(req, "a key of %zu octets", req->klen);
		return;
	}
	switch (req->op) {
	case STORE_GET:
		lmdb_get(st, req);
		break;
	case STORE_SET:
		if (req->vlen > PC_STORE_VALUE_MAX)
			store_fail(req, "a value of %zu octets", req->vlen);
		else
			lmdb_write(st, req, lmdb_set);
		break;
	case STORE_INCR:
		lmdb_write(st, req, lmdb_incr);
		break;
	case STORE_DEL:
		lmdb_write(st, req, lmdb_del);
		break;
	default:
		store_fail(req, "not a Redis store");
		break;
	}
}

/* lmdb_txn - begin a transaction, adopting a map another process grew */
static int
lmdb_txn(struct lmdb_store *ls, unsigned flags, MDB_txn **txn)
{
	int rc = mdb_txn_begin(ls->env, NULL, flags, txn);

	if (rc == MDB_MAP_RESIZED && ls->scanning == 0) {
		if ((rc = mdb_env_set_mapsize(ls->env, 0)) != 0)
			return rc;
		rc = mdb_txn_begin(ls->env, NULL, flags, txn);
	}
	return rc;
}

/* lmdb_live - is v a well-formed entry that has not expired? */
static int
lmdb_live(const MDB_val *v, uint64_t now, uint64_t *expiry)
{
	const unsigned char *p = v->mv_data;
	uint64_t e = 0;

	if (v->mv_size < LMDB_HDR)
		return 0;
	for (int i = 0; i < LMDB_HDR; i++)
		e = e << 8 | p[i];
	if (expiry != NULL)
		*expiry = e;
	return e == 0 || e > now;
}

/* lmdb_expiry - when an entry made now with ttl_ms expires (0: never) */
static uint64_t
lmdb_expiry(uint64_t ttl_ms)
{
	uint64_t now = store_now_ms();

	if (ttl_ms == 0)
		return 0;
	return ttl_ms > UINT64_MAX - now ? UINT64_MAX : now + ttl_ms;
}

/* lmdb_get - the value of req->key, copied out of the map */
static void
lmdb_get(struct pc_store *st, struct pc_store_req *req)
{
	struct lmdb_store *ls = st->priv;
	struct pc_store_result r = {.status = PC_STORE_MISSING};
	char small[LMDB_SMALL_VALUE + 1], *copy = small;
	MDB_txn *txn;
	MDB_val k = {.mv_size = req->klen, .mv_data = (void *)req->key}, v;
	int rc;

	if ((rc = lmdb_txn(ls, MDB_RDONLY, &txn)) != 0) {
		store_fail(req, "get: %s", mdb_strerror(rc));
		return;
	}
	rc = mdb_get(txn, ls->dbi, &k, &v);
	if (rc == 0 && lmdb_live(&v, store_now_ms(), NULL)) {
		r.len = v.mv_size - LMDB_HDR;
		if (r.len > LMDB_SMALL_VALUE && (copy = malloc(r.len + 1)) == NULL) {
			mdb_txn_abort(txn);
			store_fail(req, "get: out of memory");
			return;
		}
		memcpy(copy, (char *)v.mv_data + LMDB_HDR, r.len);
		copy[r.len] = '\0';
		r.value = copy;
		r.status = PC_STORE_OK;
	}
	/* No transaction may be open while done runs: it may write. */
	mdb_txn_abort(txn);
	if (rc != 0 && rc != MDB_NOTFOUND)
		store_fail(req, "get: %s", mdb_strerror(rc));
	else
		store_done(req, &r);
	if (copy != small)
		free(copy);
}

/* lmdb_write - run fn in a write transaction; a full map purges once */
static void
lmdb_write(struct pc_store *st, struct pc_store_req *req, lmdb_write_fn fn)
{
	struct lmdb_store *ls = st->priv;
	struct lmdb_write w;
	MDB_txn *txn;
	char size[32];
	int rc, roomy = 0;

	for (int attempt = 0;; attempt++) {
		memset(&w, 0, sizeof(w));
		if ((rc = lmdb_txn(ls, 0, &txn)) != 0)
			break;
		rc = fn(ls, txn, req, &w);
		if (rc == 0 && w.why[0] == '\0' && w.commit)
			rc = mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
		if (rc != MDB_MAP_FULL || attempt > 0)
			break;
		if (fn == lmdb_del) {
			if (lmdb_room(ls, 1) != 0)
				break;
			roomy = 1;
		} else if (lmdb_purge_all(st) == 0)
			break;
	}
	if (roomy)
		lmdb_room(ls, 0);
	if (rc == MDB_MAP_FULL)
		store_fail(req, "map full (max %s): raise store_max_size",
		    lmdb_size(size, sizeof(size), ls->map_size));
	else if (rc != 0)
		store_fail(req, "%s: %s",
		    req->op == STORE_SET        ? "set"
		        : req->op == STORE_INCR ? "incr"
		                                : "del",
		    mdb_strerror(rc));
	else if (w.why[0] != '\0')
		store_fail(req, "%s", w.why);
	else
		store_done(req, &w.r);
}

/* lmdb_put - key = expiry and value, written in place */
static int
lmdb_put(struct lmdb_store *ls, MDB_txn *txn, MDB_val *key, uint64_t expiry, const char *value,
    size_t vlen)
{
	MDB_val v = {.mv_size = LMDB_HDR + vlen, .mv_data = NULL};
	unsigned char *p;
	int rc;

	if ((rc = mdb_put(txn, ls->dbi, key, &v, MDB_RESERVE)) != 0)
		return rc;
	p = v.mv_data;
	for (int i = LMDB_HDR - 1; i >= 0; i--) {
		p[i] = expiry & 0xff;
		expiry >>= 8;
	}
	if (vlen > 0)
		memcpy(p + LMDB_HDR, value, vlen);
	return 0;
}

/* lmdb_set - key = value; with PC_STORE_NX, only if there is no live key */
static int
lmdb_set(struct lmdb_store *ls, MDB_txn *txn, const struct pc_store_req *req, struct lmdb_write *w)
{
	MDB_val k = {.mv_size = req->klen, .mv_data = (void *)req->key}, v;
	int rc;

	if (req->flags & PC_STORE_NX) {
		rc = mdb_get(txn, ls->dbi, &k, &v);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
		if (rc == 0 && lmdb_live(&v, store_now_ms(), NULL)) {
			w->r.status = PC_STORE_EXISTS;
			return 0;
		}
	}
	if ((rc = lmdb_put(ls, txn, &k, lmdb_expiry(req->ttl_ms), req->value, req->vlen)) != 0)
		return rc;
	w->r.status = PC_STORE_OK;
	w->commit = 1;
	return 0;
}

/* lmdb_incr - key += by; a new key gets the ttl, an old one keeps its own */
static int
lmdb_incr(struct lmdb_store *ls, MDB_txn *txn, const struct pc_store_req *req, struct lmdb_write *w)
{
	MDB_val k = {.mv_size = req->klen, .mv_data = (void *)req->key}, v;
	char num[LMDB_NUM_MAX + 1];
	long long cur = 0, sum;
	uint64_t expiry;
	int rc, n;

	rc = mdb_get(txn, ls->dbi, &k, &v);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;
	if (rc == 0 && lmdb_live(&v, store_now_ms(), &expiry)) {
		if (lmdb_parse_int((char *)v.mv_data + LMDB_HDR, v.mv_size - LMDB_HDR, &cur) != 0) {
			snprintf(w->why, sizeof(w->why), "incr: the value is not an integer");
			return 0;
		}
	} else
		expiry = lmdb_expiry(req->ttl_ms);
	if (__builtin_add_overflow(cur, req->by, &sum)) {
		snprintf(w->why, sizeof(w->why), "incr: %lld + %lld overflows", cur, req->by);
		return 0;
	}
	n = snprintf(num, sizeof(num), "%lld", sum);
	if ((rc = lmdb_put(ls, txn, &k, expiry, num, (size_t)n)) != 0)
		return rc;
	w->r.status = PC_STORE_OK;
	w->r.number = sum;
	w->commit = 1;
	return 0;
}

/* lmdb_parse_int - a decimal integer as Redis's INCRBY takes it: "0" or
 * an optional '-' and digits without a leading zero, in range */
static int
lmdb_parse_int(const char *s, size_t len, long long *out)
{
	unsigned long long v = 0, limit;
	size_t i = 0;
	int neg = 0;

	if (len == 1 && s[0] == '0') {
		*out = 0;
		return 0;
	}
	if (len > 0 && s[0] == '-') {
		neg = 1;
		i = 1;
	}
	if (i >= len || len > LMDB_NUM_MAX || s[i] < '1' || s[i] > '9')
		return -1;
	limit = neg ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (v > (limit - (unsigned)(s[i] - '0')) / 10)
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (neg)
		*out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
	else
		*out = (long long)v;
	return 0;
}

/* lmdb_del - remove key; an expired one goes too, and counts as missing */
static int
lmdb_del(struct lmdb_store *ls, MDB_txn *txn, const struct pc_store_req *req, struct lmdb_write *w)
{
	MDB_val k = {.mv_size = req->klen, .mv_data = (void *)req->key}, v;
	int rc;

	rc = mdb_get(txn, ls->dbi, &k, &v);
	if (rc == MDB_NOTFOUND) {
		w->r.status = PC_STORE_MISSING;
		return 0;
	}
	if (rc != 0)
		return rc;
	w->r.status = lmdb_live(&v, store_now_ms(), NULL) ? PC_STORE_OK : PC_STORE_MISSING;
	if ((rc = mdb_del(txn, ls->dbi, &k, NULL)) != 0)
		return rc;
	w->commit = 1;
	return 0;
}

/* lmdb_purge_slice - delete the expired entries among the next limit
 * from ls->resume; finished: the slice reached the last key; soonest: the
 * earliest expiry of an entry left, if earlier than it was */
static int
lmdb_purge_slice(
    struct lmdb_store *ls, size_t limit, size_t *deleted, int *finished, uint64_t *soonest)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k = {.mv_size = ls->resume_len, .mv_data = ls->resume}, v;
	uint64_t now = store_now_ms(), expiry;
	size_t n = 0, gone = 0;
	int rc;

	*deleted = 0;
	*finished = 0;
	if ((rc = lmdb_txn(ls, 0, &txn)) != 0)
		return rc;
	if ((rc = mdb_cursor_open(txn, ls->dbi, &cur)) != 0) {
		mdb_txn_abort(txn);
		return rc;
	}
	rc = mdb_cursor_get(cur, &k, &v, ls->resume_len > 0 ? MDB_SET_RANGE : MDB_FIRST);
	for (; rc == 0 && n < limit; n++) {
		if (lmdb_live(&v, now, &expiry)) {
			if (expiry != 0 && expiry < *soonest)
				*soonest = expiry;
		} else {
			/* After a delete the cursor stands on the next entry,
			 * and MDB_NEXT returns it rather than skipping it. */
			if ((rc = mdb_cursor_del(cur, 0)) != 0)
				break;
			gone++;
		}
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	if (rc == 0) {
		/* k is the first entry this slice did not look at. */
		memcpy(ls->resume, k.mv_data, k.mv_size);
		ls->resume_len = k.mv_size;
	} else if (rc == MDB_NOTFOUND) {
		ls->resume_len = 0;
		*finished = 1;
		rc = 0;
	}
	mdb_cursor_close(cur);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return rc;
	}
	if ((rc = mdb_txn_commit(txn)) == 0)
		*deleted = gone;
	return rc;
}

/* lmdb_purge_step - one slice of at most *limit entries; a full map
 * gets room for it, then smaller slices (each commit frees pages) */
static int
lmdb_purge_step(
    struct lmdb_store *ls, size_t *limit, size_t *deleted, int *finished, uint64_t *soonest)
{
	int rc, roomy = 0;

	for (;;) {
		rc = lmdb_purge_slice(ls, *limit, deleted, finished, soonest);
		if (rc != MDB_MAP_FULL)
			break;
		if (!roomy && lmdb_room(ls, 1) == 0)
			roomy = 1;
		else if (*limit > 1)
			*limit /= 2;
		else
			break;
	}
	if (roomy)
		lmdb_room(ls, 0);
	return rc;
}

/* lmdb_room - the map a delete in a full map needs (grow), or back to
 * store_max_size: LMDB keeps it no smaller than the pages in use */
static int
lmdb_room(struct lmdb_store *ls, int grow)
{
	uint64_t room = ls->map_size / LMDB_ROOM_DIV / ls->page * ls->page;

	/* Remapping under an open read transaction would pull the map
	 * from under its cursor (a scan's callback that deletes). */
	if (ls->scanning)
		return MDB_MAP_FULL;
	if (room < LMDB_ROOM_MIN_PAGES * ls->page)
		room = LMDB_ROOM_MIN_PAGES * ls->page;
	return mdb_env_set_mapsize(ls->env, (size_t)(ls->map_size + (grow ? room : 0)));
}

/* lmdb_purge_all - a whole sweep now, because the map is full: the
 * entries it deleted (0: nothing to gain from a retry) */
static size_t
lmdb_purge_all(struct pc_store *st)
{
	struct lmdb_store *ls = st->priv;
	uint64_t now = store_now_ms(), soonest = UINT64_MAX;
	size_t total = 0, gone, limit = LMDB_PURGE_SLICE;
	int finished = 0, rc;

	if (ls->full_purge_ms != 0 && now < ls->full_soonest &&
	    now - ls->full_purge_ms < LMDB_FULL_PURGE_EVERY_MS)
		return 0;
	ls->resume_len = 0;
	while (!finished) {
		if ((rc = lmdb_purge_step(ls, &limit, &gone, &finished, &soonest)) != 0) {
			log_warn(NULL, "store %s: purge: %s", st->name, mdb_strerror(rc));
			break;
		}
		total += gone;
	}
	ls->resume_len = 0;
	/* Only a sweep that freed nothing holds the next one back. */
	ls->full_purge_ms = total == 0 ? now : 0;
	ls->full_soonest = soonest;
	return total;
}

/* lmdb_purge_tick - one slice of the sweep; the next slice soon, or the
 * next sweep after purge_ms */
static void
lmdb_purge_tick(evutil_socket_t fd, short what, void *arg)
{
	struct pc_store *st = arg;
	struct lmdb_store *ls = st->priv;
	uint64_t soonest = UINT64_MAX;
	size_t gone, limit = LMDB_PURGE_SLICE;
	int finished = 0, dead = 0, rc;

	if (ls->pid != getpid())
		return;
	if (ls->resume_len == 0)
		mdb_reader_check(ls->env, &dead);
	if (dead > 0)
		log_info(NULL, "store %s: cleared %d stale reader slot%s", st->name, dead,
		    dead == 1 ? "" : "s");
	if ((rc = lmdb_purge_step(ls, &limit, &gone, &finished, &soonest)) != 0) {
		log_warn(NULL, "store %s: purge: %s", st->name, mdb_strerror(rc));
		ls->resume_len = 0;
		finished = 1;
	}
	if (finished)
		mdb_env_sync(ls->env, 1);
	lmdb_purge_arm(ls, finished ? ls->purge_ms : 0);
}

/* lmdb_purge_arm - the next purge slice in ms */
static void
lmdb_purge_arm(struct lmdb_store *ls, uint64_t ms)
{
	struct timeval tv = {
	    .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000 * 1000)};

	evtimer_add(ls->purge_ev, &tv);
}

/* lmdb_scan - each live key that starts with prefix, in key order */
static void
lmdb_scan(struct pc_store *st, const char *prefix, size_t plen, store_scan_fn each,
    store_scan_done_fn done, void *arg)
{
	struct lmdb_store *ls = st->priv;
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	MDB_val k = {.mv_size = plen, .mv_data = (void *)prefix}, v;
	char key[PC_STORE_KEY_MAX + 1], why[256], *buf = NULL, *nb;
	size_t cap = 0, vlen;
	uint64_t now = store_now_ms(), expiry;
	int rc;

	if (ls->pid != getpid() || plen > PC_STORE_KEY_MAX) {
		snprintf(why, sizeof(why), "store %s: %s", st->name,
		    plen > PC_STORE_KEY_MAX ? "the prefix is too long"
		                            : "opened by another process");
		done(arg, why);
		return;
	}
	if ((rc = lmdb_txn(ls, MDB_RDONLY, &txn)) != 0) {
		snprintf(why, sizeof(why), "store %s: scan: %s", st->name, mdb_strerror(rc));
		done(arg, why);
		return;
	}
	ls->scanning++;
	if ((rc = mdb_cursor_open(txn, ls->dbi, &cur)) == 0)
		rc = mdb_cursor_get(cur, &k, &v, plen > 0 ? MDB_SET_RANGE : MDB_FIRST);
	for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
			break;
		if (!lmdb_live(&v, now, &expiry) || k.mv_size > PC_STORE_KEY_MAX)
			continue;
		vlen = v.mv_size - LMDB_HDR;
		if (vlen + 1 > cap) {
			if ((nb = realloc(buf, vlen + 1)) == NULL) {
				rc = ENOMEM;
				break;
			}
			buf = nb;
			cap = vlen + 1;
		}
		memcpy(key, k.mv_data, k.mv_size);
		key[k.mv_size] = '\0';
		memcpy(buf, (char *)v.mv_data + LMDB_HDR, vlen);
		buf[vlen] = '\0';
		if (each(arg, key, k.mv_size, buf, vlen, lmdb_ttl_left(expiry, now)))
			break;
	}
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	ls->scanning--;
	free(buf);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		snprintf(why, sizeof(why), "store %s: scan: %s", st->name, mdb_strerror(rc));
		done(arg, why);
	} else
		done(arg, NULL);
}

/* lmdb_ttl_left - what scan reports: milliseconds until expiry, -1: none */
static int64_t
lmdb_ttl_left(uint64_t expiry, uint64_t now)
{
	if (expiry == 0)
		return -1;
	return expiry - now > INT64_MAX ? INT64_MAX : (int64_t)(expiry - now);
}

/* lmdb_size - n as store_max_size would be written: 64M, 512k, 1000 */
static const char *
lmdb_size(char *buf, size_t len, uint64_t n)
{
	if (n != 0 && n % (1ULL << 30) == 0)
		snprintf(buf, len, "%" PRIu64 "G", n >> 30);
	else if (n != 0 && n % (1ULL << 20) == 0)
		snprintf(buf, len, "%" PRIu64 "M", n >> 20);
	else if (n != 0 && n % 1024 == 0)
		snprintf(buf, len, "%" PRIu64 "k", n >> 10);
	else
		snprintf(buf, len, "%" PRIu64, n);
	return buf;
}
