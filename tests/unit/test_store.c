/*
 * test_store.c - the store's front (store.c) and its memory backend:
 * the operations as plugin.h documents them, the limits every request
 * passes, and what a full store answers.
 *
 * The LMDB backend (store_lmdb.c): each case runs in a fresh directory
 * under /tmp, on a real event loop where the purge timer matters. Expiry
 * is tested with short ttls (50 ms) and a wait just past them; these cases
 * check behaviour, not timing. Several processes are real ones (fork),
 * each with its own environment, as worker processes would have.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <lmdb.h>

#include "log.h"
#include "store.h"

/* What the last done() saw. */
struct seen {
	int calls;
	enum pc_store_status status;
	char value[1024];
	size_t len;
	long long number;
	char error[512];
};

static void
record(void *arg, const struct pc_store_result *r)
{
	struct seen *s = arg;

	s->calls++;
	s->status = r->status;
	s->len = r->len;
	s->number = r->number;
	s->value[0] = s->error[0] = '\0';
	if (r->value != NULL)
		snprintf(s->value, sizeof(s->value), "%.*s", (int)r->len, r->value);
	if (r->error != NULL)
		snprintf(s->error, sizeof(s->error), "%s", r->error);
}

static struct pc_store *
open_memory(size_t max)
{
	struct store_settings set = {.timeout_ms = 1000, .max_size = max, .purge_ms = 0};
	char err[256];
	struct pc_store *st;

	store_configure(NULL, &set);
	st = store_open("memory", err, sizeof(err));
	if (st == NULL)
		fail_msg("open: %s", err);
	return st;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

#define K(s) (s), strlen(s)

static void
test_round_trip(void **state)
{
	struct pc_store *st = open_memory(1 << 20);
	struct seen s = {0};

	assert_null(store_get(st, K("a"), record, &s));
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.status, PC_STORE_MISSING);
	assert_null(store_set(st, K("a"), "hello", 5, 0, 0, record, &s));
	assert_int_equal(s.status, PC_STORE_OK);
	store_get(st, K("a"), record, &s);
	assert_int_equal(s.status, PC_STORE_OK);
	assert_string_equal(s.value, "hello");
	assert_int_equal(s.len, 5);
	/* Binary values keep their length. */
	store_set(st, K("b"), "x\0y", 3, 0, 0, record, &s);
	store_get(st, K("b"), record, &s);
	assert_int_equal(s.len, 3);
	store_del(st, K("a"), record, &s);
	assert_int_equal(s.status, PC_STORE_OK);
	store_del(st, K("a"), record, &s);
	assert_int_equal(s.status, PC_STORE_MISSING);
	assert_int_equal(s.calls, 7);
	store_release(st);
}

static void
test_nx(void **state)
{
	struct pc_store *st = open_memory(1 << 20);
	struct seen s = {0};

	store_set(st, K("k"), "1", 1, 0, PC_STORE_NX, record, &s);
	assert_int_equal(s.status, PC_STORE_OK);
	store_set(st, K("k"), "2", 1, 0, PC_STORE_NX, record, &s);
	assert_int_equal(s.status, PC_STORE_EXISTS);
	store_get(st, K("k"), record, &s);
	assert_string_equal(s.value, "1");
	store_release(st);
}

static void
test_ttl(void **state)
{
	struct pc_store *st = open_memory(1 << 20);
	struct seen s = {0};

	store_set(st, K("t"), "v", 1, 30, 0, record, &s);
	store_get(st, K("t"), record, &s);
	assert_int_equal(s.status, PC_STORE_OK);
	sleep_ms(60);
	store_get(st, K("t"), record, &s);
	assert_int_equal(s.status, PC_STORE_MISSING);
	/* NX sees an expired key as absent. */
	store_set(st, K("n"), "v", 1, 30, PC_STORE_NX, record, &s);
	sleep_ms(60);
	store_set(st, K("n"), "w", 1, 0, PC_STORE_NX, record, &s);
	assert_int_equal(s.status, PC_STORE_OK);
	store_release(st);
}

static void
test_incr(void **state)
{
	struct pc_store *st = open_memory(1 << 20);
	struct seen s = {0};

	store_incr(st, K("c"), 1, 40, record, &s);
	assert_int_equal(s.status, PC_STORE_OK);
	assert_int_equal(s.number, 1);
	store_incr(st, K("c"), 5, 0, record, &s);
	assert_int_equal(s.number, 6);
	store_incr(st, K("c"), -10, 0, record, &s);
	assert_int_equal(s.number, -4);
	store_get(st, K("c"), record, &s);
	assert_string_equal(s.value, "-4");
	/* The ttl counts from the first increment: later ones keep it. */
	sleep_ms(60);
	store_incr(st, K("c"), 1, 40, record, &s);
	assert_int_equal(s.number, 1);
	/* Not an integer; overflow. */
	store_set(st, K("s"), "abc", 3, 0, 0, record, &s);
	store_incr(st, K("s"), 1, 0, record, &s);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "not an integer"));
	store_set(st, K("big"), "9223372036854775807", 19, 0, 0, record, &s);
	store_incr(st, K("big"), 1, 0, record, &s);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "overflow"));
	store_get(st, K("big"), record, &s);
	assert_string_equal(s.value, "9223372036854775807");
	store_release(st);
}

static void
test_limits(void **state)
{
	struct pc_store *st = open_memory(1 << 20);
	struct seen s = {0};
	char key[PC_STORE_KEY_MAX + 2];

	memset(key, 'k', sizeof(key));
	store_set(st, key, PC_STORE_KEY_MAX, "v", 1, 0, 0, record, &s);
	assert_int_equal(s.status, PC_STORE_OK);
	store_set(st, key, PC_STORE_KEY_MAX + 1, "v", 1, 0, 0, record, &s);
	assert_int_equal(s.status, PC_STORE_FAILED);
	store_get(st, "", 0, record, &s);
	assert_int_equal(s.status, PC_STORE_FAILED);
	store_get(st, NULL, 3, record, &s);
	assert_int_equal(s.status, PC_STORE_FAILED);
	store_set(st, K("v"), "x", PC_STORE_VALUE_MAX + 1, 0, 0, record, &s);
	assert_int_equal(s.status, PC_STORE_FAILED);
	/* A command needs Redis. */
	{
		const char *argv[] = {"PING"};
		size_t lens[] = {4};

		assert_null(store_command(st, 1, argv, lens, record, &s));
		assert_int_equal(s.status, PC_STORE_FAILED);
		assert_non_null(strstr(s.error, "not a Redis store"));
	}
	store_release(st);
}

static void
test_full(void **state)
{
	struct pc_store *st = open_memory(16 * 1024);
	struct seen s = {0};
	char key[32], val[200];
	int i, ok = 0;

	memset(val, 'v', sizeof(val));
	for (i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "key%d", i);
		store_set(st, K(key), val, sizeof(val), 20, 0, record, &s);
		if (s.status != PC_STORE_OK)
			break;
		ok++;
	}
	assert_true(ok > 10 && ok < 1000);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "full"));
	/* Once the entries expire, writes fit again. */
	sleep_ms(40);
	store_set(st, K("after"), val, sizeof(val), 0, 0, record, &s);
	assert_int_equal(s.status, PC_STORE_OK);
	store_release(st);
}

static int
count_each(void *arg, const char *key, size_t klen, const char *value, size_t vlen, int64_t ttl)
{
	(*(int *)arg)++;
	return 0;
}

static void
scan_done(void *arg, const char *error)
{
	assert_null(error);
}

static void
test_scan_and_share(void **state)
{
	struct pc_store *st = open_memory(1 << 20), *again;
	struct seen s = {0};
	char err[128];
	int n = 0;

	store_set(st, K("gl:a"), "1", 1, 0, 0, record, &s);
	store_set(st, K("gl:b"), "1", 1, 0, 0, record, &s);
	store_set(st, K("rl:a"), "1", 1, 0, 0, record, &s);
	store_scan(st, "gl:", 3, count_each, scan_done, &n);
	assert_int_equal(n, 2);
	/* The same spec is the same store. */
	again = store_open("memory", err, sizeof(err));
	assert_ptr_equal(again, st);
	store_release(again);
	store_get(st, K("gl:a"), record, &s);
	assert_int_equal(s.status, PC_STORE_OK);
	store_release(st);
}

static void
test_specs(void **state)
{
	char err[256];

	assert_int_equal(store_check_spec("memory", err, sizeof(err)), 0);
	assert_int_equal(store_check_spec("memory:x", err, sizeof(err)), -1);
	assert_int_equal(store_check_spec("", err, sizeof(err)), -1);
	assert_int_equal(store_check_spec("mysql://x", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "unknown store \"mysql://x\""));
	assert_null(store_open("nope", err, sizeof(err)));
}

/* ---- LMDB ---- */

/* A wait past a short ttl: the ttls below are TTL_MS. */
#define TTL_MS 50
#define PAST_TTL_MS 80

/* One scan's keys. */
struct scanned {
	int keys;
	char names[16][64];
	int64_t ttl[16];
	int stop_after; /* 0: never */
	int done_calls;
	char error[256];
};

struct fixture {
	char dir[64]; /* the case's directory */
	char spec[128]; /* lmdb:DIR/db */
	struct event_base *base;
};

/* on_done - record, and the NUL the result promises after a value */
static void
on_done(void *arg, const struct pc_store_result *r)
{
	record(arg, r);
	if (r->value != NULL)
		assert_int_equal(r->value[r->len], '\0');
}

static int
on_scan(void *arg, const char *key, size_t klen, const char *value, size_t vlen, int64_t ttl)
{
	struct scanned *sc = arg;

	assert_int_equal(key[klen], '\0');
	assert_int_equal(value[vlen], '\0');
	if (sc->keys < 16) {
		snprintf(sc->names[sc->keys], sizeof(sc->names[0]), "%s", key);
		sc->ttl[sc->keys] = ttl;
	}
	sc->keys++;
	return sc->stop_after != 0 && sc->keys >= sc->stop_after;
}

static void
on_scan_done(void *arg, const char *error)
{
	struct scanned *sc = arg;

	sc->done_calls++;
	sc->error[0] = '\0';
	if (error != NULL)
		snprintf(sc->error, sizeof(sc->error), "%s", error);
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	chmod(path, 0700);
	return remove(path);
}

/* run_loop - the event loop for ms: the purge timer's turn */
static void
run_loop(struct event_base *base, long ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = ms % 1000 * 1000};

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static void
configure(struct fixture *f, uint64_t max_size, uint64_t purge_ms)
{
	struct store_settings set = {
	    .timeout_ms = 1000, .max_size = max_size, .purge_ms = purge_ms};

	store_configure(f->base, &set);
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_store.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->spec, sizeof(f->spec), "lmdb:%s/db", f->dir);
	assert_non_null(f->base = event_base_new());
	configure(f, 64ULL * 1024 * 1024, 60000);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	store_close_all();
	event_base_free(f->base);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static struct pc_store *
open_ok(const char *spec)
{
	char err[512] = "";
	struct pc_store *st = store_open(spec, err, sizeof(err));

	if (st == NULL)
		fail_msg("store_open(%s): %s", spec, err);
	return st;
}

static struct seen
get(struct pc_store *st, const char *key)
{
	struct seen s = {0};

	assert_null(store_get(st, key, strlen(key), on_done, &s));
	assert_int_equal(s.calls, 1);
	return s;
}

static struct seen
set(struct pc_store *st, const char *key, const char *value, uint64_t ttl, unsigned flags)
{
	struct seen s = {0};

	assert_null(store_set(st, key, strlen(key), value, strlen(value), ttl, flags, on_done, &s));
	assert_int_equal(s.calls, 1);
	return s;
}

static struct seen
incr(struct pc_store *st, const char *key, long long by, uint64_t ttl)
{
	struct seen s = {0};

	assert_null(store_incr(st, key, strlen(key), by, ttl, on_done, &s));
	assert_int_equal(s.calls, 1);
	return s;
}

static struct seen
del(struct pc_store *st, const char *key)
{
	struct seen s = {0};

	assert_null(store_del(st, key, strlen(key), on_done, &s));
	assert_int_equal(s.calls, 1);
	return s;
}

static struct scanned
scan(struct pc_store *st, const char *prefix, int stop_after)
{
	struct scanned sc = {.stop_after = stop_after};

	store_scan(st, prefix, strlen(prefix), on_scan, on_scan_done, &sc);
	assert_int_equal(sc.done_calls, 1);
	return sc;
}

/* raw_count - entries in the directory's map, read with LMDB itself once
 * the store is closed (one environment per directory per process) */
static size_t
raw_count(const char *dir)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_stat ms;

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_open(env, dir, MDB_NOTLS | MDB_RDONLY, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
	assert_int_equal(mdb_stat(txn, dbi, &ms), 0);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return ms.ms_entries;
}

static void
lmdb_round_trip(void **state)
{
	struct fixture *f = *state;
	struct pc_store *st = open_ok(f->spec);
	struct seen s;
	struct stat sb;
	char dir[128], big[PC_STORE_KEY_MAX + 2];

	/* The directory was made, for its owner only. */
	snprintf(dir, sizeof(dir), "%s/db", f->dir);
	assert_int_equal(stat(dir, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0700);

	assert_int_equal(get(st, "k").status, PC_STORE_MISSING);
	assert_int_equal(set(st, "k", "v1", 0, 0).status, PC_STORE_OK);
	s = get(st, "k");
	assert_int_equal(s.status, PC_STORE_OK);
	assert_string_equal(s.value, "v1");
	assert_int_equal(s.len, 2);
	assert_int_equal(set(st, "k", "", 0, 0).status, PC_STORE_OK);
	s = get(st, "k");
	assert_int_equal(s.status, PC_STORE_OK);
	assert_int_equal(s.len, 0);

	s = incr(st, "n", 5, 0);
	assert_int_equal(s.status, PC_STORE_OK);
	assert_int_equal(s.number, 5);
	assert_int_equal(incr(st, "n", -7, 0).number, -2);
	assert_string_equal(get(st, "n").value, "-2");

	assert_int_equal(del(st, "k").status, PC_STORE_OK);
	assert_int_equal(del(st, "k").status, PC_STORE_MISSING);
	assert_int_equal(get(st, "k").status, PC_STORE_MISSING);

	/* Keys outside 1 to PC_STORE_KEY_MAX octets are refused. */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(get(st, big).status, PC_STORE_FAILED);
	big[PC_STORE_KEY_MAX] = '\0';
	assert_int_equal(set(st, big, "max", 0, 0).status, PC_STORE_OK);
	assert_string_equal(get(st, big).value, "max");

	/* A value larger than the small copy on the stack. */
	char value[900];
	memset(value, 'v', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	assert_int_equal(set(st, "large", value, 0, 0).status, PC_STORE_OK);
	assert_string_equal(get(st, "large").value, value);

	/* Not a Redis store. */
	const char *argv[] = {"PING"};
	size_t argvlen[] = {4};
	s = (struct seen){0};
	assert_null(store_command(st, 1, argv, argvlen, on_done, &s));
	assert_int_equal(s.status, PC_STORE_FAILED);
}

static void
lmdb_nx(void **state)
{
	struct fixture *f = *state;
	struct pc_store *st = open_ok(f->spec);

	assert_int_equal(set(st, "k", "first", 0, PC_STORE_NX).status, PC_STORE_OK);
	assert_int_equal(set(st, "k", "second", 0, PC_STORE_NX).status, PC_STORE_EXISTS);
	assert_string_equal(get(st, "k").value, "first");
	/* An expired key does not exist for NX. */
	assert_int_equal(set(st, "t", "old", TTL_MS, PC_STORE_NX).status, PC_STORE_OK);
	assert_int_equal(set(st, "t", "new", 0, PC_STORE_NX).status, PC_STORE_EXISTS);
	sleep_ms(PAST_TTL_MS);
	assert_int_equal(set(st, "t", "new", 0, PC_STORE_NX).status, PC_STORE_OK);
	assert_string_equal(get(st, "t").value, "new");
}

static void
lmdb_ttl(void **state)
{
	struct fixture *f = *state;
	struct pc_store *st = open_ok(f->spec);
	struct scanned sc;

	assert_int_equal(set(st, "t", "v", TTL_MS, 0).status, PC_STORE_OK);
	assert_int_equal(set(st, "forever", "v", 0, 0).status, PC_STORE_OK);
	assert_int_equal(incr(st, "c", 1, TTL_MS).number, 1);
	assert_int_equal(incr(st, "c", 1, 3600000).number, 2);
	/* The ttl belongs to the incr that made the key: a later ttl is
	 * ignored, so the counter still goes with the first one. */
	assert_int_equal(incr(st, "w", 1, 10000).number, 1);
	assert_int_equal(incr(st, "w", 1, 3600000).number, 2);
	sc = scan(st, "w", 0);
	assert_int_equal(sc.keys, 1);
	assert_true(sc.ttl[0] > 0 && sc.ttl[0] <= 10000);
	assert_string_equal(get(st, "t").value, "v");

	sleep_ms(PAST_TTL_MS);
	assert_int_equal(get(st, "t").status, PC_STORE_MISSING);
	assert_int_equal(get(st, "c").status, PC_STORE_MISSING);
	assert_int_equal(get(st, "forever").status, PC_STORE_OK);
	/* An expired counter counts as 0, and takes the new ttl. */
	assert_int_equal(incr(st, "c", 3, 0).number, 3);
	sc = scan(st, "c", 0);
	assert_int_equal(sc.ttl[0], -1);
	/* Deleting an expired key: missing (and gone). */
	assert_int_equal(set(st, "t2", "v", TTL_MS, 0).status, PC_STORE_OK);
	sleep_ms(PAST_TTL_MS);
	assert_int_equal(del(st, "t2").status, PC_STORE_MISSING);
}

static void
lmdb_incr_not_integer(void **state)
{
	struct fixture *f = *state;
	struct pc_store *st = open_ok(f->spec);
	const char *bad[] = {
	    "abc", "12a", " 1", "1 ", "", "+1", "007", "-0", "-", "1.5", "99999999999999999999"};
	struct seen s;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(set(st, "k", bad[i], 0, 0).status, PC_STORE_OK);
		s = incr(st, "k", 1, 0);
		assert_int_equal(s.status, PC_STORE_FAILED);
		assert_non_null(strstr(s.error, "not an integer"));
		/* Nothing changed. */
		assert_string_equal(get(st, "k").value, bad[i]);
	}
	assert_int_equal(set(st, "k", "0", 0, 0).status, PC_STORE_OK);
	assert_int_equal(incr(st, "k", 0, 0).number, 0);
	assert_int_equal(set(st, "k", "-5", 0, 0).status, PC_STORE_OK);
	assert_int_equal(incr(st, "k", 2, 0).number, -3);
}

static void
lmdb_incr_overflow(void **state)
{
	struct fixture *f = *state;
	struct pc_store *st = open_ok(f->spec);
	struct seen s;

	assert_int_equal(set(st, "max", "9223372036854775807", 0, 0).status, PC_STORE_OK);
	s = incr(st, "max", 1, 0);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "overflow"));
	assert_string_equal(get(st, "max").value, "9223372036854775807");
	assert_int_equal(incr(st, "max", -1, 0).number, LLONG_MAX - 1);

	assert_int_equal(set(st, "min", "-9223372036854775808", 0, 0).status, PC_STORE_OK);
	assert_int_equal(incr(st, "min", -1, 0).status, PC_STORE_FAILED);
	assert_int_equal(incr(st, "min", 0, 0).number, LLONG_MIN);
	/* From a missing key too. */
	assert_int_equal(incr(st, "new", LLONG_MIN, 0).number, LLONG_MIN);
	assert_int_equal(incr(st, "new", -1, 0).status, PC_STORE_FAILED);
}

static void
lmdb_reopen(void **state)
{
	struct fixture *f = *state;
	struct pc_store *st = open_ok(f->spec);
	char err[256], alias[160];
	struct scanned sc;

	assert_int_equal(set(st, "kept", "v", 0, 0).status, PC_STORE_OK);
	assert_int_equal(set(st, "ttl", "v", 3600000, 0).status, PC_STORE_OK);
	assert_int_equal(incr(st, "n", 41, 0).number, 41);
	/* Another spec for the same directory would be a second environment
	 * in this process: refused. */
	snprintf(alias, sizeof(alias), "%s/", f->spec);
	assert_null(store_open(alias, err, sizeof(err)));
	assert_non_null(strstr(err, "open already"));

	store_release(st);
	st = open_ok(f->spec);
	assert_string_equal(get(st, "kept").value, "v");
	assert_string_equal(get(st, "ttl").value, "v");
	assert_int_equal(incr(st, "n", 1, 0).number, 42);
	sc = scan(st, "ttl", 0);
	assert_int_equal(sc.keys, 1);
	assert_true(sc.ttl[0] > 3500000 && sc.ttl[0] <= 3600000);
}

/* child_writer - what a second process does with its own environment */
static int
child_writer(const char *spec, const char *key, int rounds)
{
	char err[256];
	struct pc_store *st;
	struct seen s;

	/* The store the parent opened is useless here: refused cleanly. */
	st = store_open(spec, err, sizeof(err));
	if (st == NULL)
		return 10;
	s = (struct seen){0};
	store_get(st, "parent", 6, on_done, &s);
	if (s.status != PC_STORE_FAILED || strstr(s.error, "fork") == NULL)
		return 11;
	/* A process of its own would start without the parent's stores. */
	store_close_all();
	if ((st = store_open(spec, err, sizeof(err))) == NULL)
		return 12;
	s = (struct seen){0};
	store_get(st, "parent", 6, on_done, &s);
	if (s.status != PC_STORE_OK || strcmp(s.value, "p") != 0)
		return 13;
	for (int i = 0; i < rounds; i++) {
		s = (struct seen){0};
		store_incr(st, "count", 5, 1, 0, on_done, &s);
		if (s.status != PC_STORE_OK)
			return 14;
	}
	s = (struct seen){0};
	store_set(st, key, strlen(key), "c", 1, 0, 0, on_done, &s);
	if (s.status != PC_STORE_OK)
		return 15;
	store_close_all();
	return 0;
}

static void
lmdb_two_processes(void **state)
{
	struct fixture *f = *state;
	struct pc_store *st = open_ok(f->spec);
	const int rounds = 500;
	int status;
	pid_t pid;

	assert_int_equal(set(st, "parent", "p", 0, 0).status, PC_STORE_OK);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child_writer(f->spec, "child", rounds));
	/* Both count at once, each in its own process and environment. */
	for (int i = 0; i < rounds; i++)
		assert_int_equal(incr(st, "count", 1, 0).status, PC_STORE_OK);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_string_equal(get(st, "child").value, "c");
	assert_int_equal(incr(st, "count", 0, 0).number, 2 * rounds);
}

static void
lmdb_full(void **state)
{
	struct fixture *f = *state;
	struct pc_store *st;
	char key[32], value[200];
	struct seen s;
	int n;

	configure(f, 64 * 1024, 60000);
	st = open_ok(f->spec);
	memset(value, 'x', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	/* Fill the map with entries that expire soon. */
	for (n = 0; n < 10000; n++) {
		snprintf(key, sizeof(key), "short:%05d", n);
		s = set(st, key, value, TTL_MS, 0);
		if (s.status != PC_STORE_OK)
			break;
	}
	assert_true(n > 10 && n < 10000);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "full (max 64k)"));
	assert_non_null(strstr(s.error, "store_max_size"));
	/* Nothing has expired yet: the same write fails the same way. */
	assert_int_equal(set(st, key, value, TTL_MS, 0).status, PC_STORE_FAILED);

	/* Once they have, the full map purges them and the write goes in. */
	sleep_ms(PAST_TTL_MS);
	assert_int_equal(set(st, "after", value, 0, 0).status, PC_STORE_OK);
	assert_string_equal(get(st, "after").value, value);
	assert_int_equal(scan(st, "short:", 0).keys, 0);

	/* Full of live entries: the error, and what there is stays readable. */
	for (n = 0; n < 10000; n++) {
		snprintf(key, sizeof(key), "live:%05d", n);
		if ((s = set(st, key, value, 0, 0)).status != PC_STORE_OK)
			break;
	}
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "full"));
	assert_int_equal(set(st, key, value, 0, 0).status, PC_STORE_FAILED);
	assert_string_equal(get(st, "live:00000").value, value);
	/* Deleting works in a full map (LMDB copies pages even to delete),
	 * and makes room again. */
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "live:%05d", i);
		assert_int_equal(del(st, key).status, PC_STORE_OK);
	}
	assert_int_equal(scan(st, "", 0).keys, 1);
	for (int i = 0; i < n / 2; i++) {
		snprintf(key, sizeof(key), "again:%05d", i);
		assert_int_equal(set(st, key, value, 0, 0).status, PC_STORE_OK);
	}
}

static void
lmdb_purge_timer(void **state)
{
	struct fixture *f = *state;
	struct pc_store *st;
	char key[32], dir[128];
	const int expiring = 25000, live = 10;

	/* More expired entries than one slice takes: the sweep resumes. */
	configure(f, 64ULL * 1024 * 1024, 20);
	st = open_ok(f->spec);
	for (int i = 0; i < expiring; i++) {
		snprintf(key, sizeof(key), "gone:%05d", i);
		assert_int_equal(set(st, key, "v", TTL_MS, 0).status, PC_STORE_OK);
	}
	for (int i = 0; i < live; i++) {
		snprintf(key, sizeof(key), "live:%d", i);
		assert_int_equal(set(st, key, "v", i % 2 ? 3600000 : 0, 0).status, PC_STORE_OK);
	}
	sleep_ms(PAST_TTL_MS);
	run_loop(f->base, 300);
	assert_int_equal(scan(st, "gone:", 0).keys, 0);
	assert_int_equal(scan(st, "live:", 0).keys, live);
	store_close_all();
	/* Not only hidden: deleted from the map. */
	snprintf(dir, sizeof(dir), "%s/db", f->dir);
	assert_int_equal(raw_count(dir), live);
}

static void
lmdb_bad_paths(void **state)
{
	struct fixture *f = *state;
	char spec[256], path[200], err[512];
	struct stat sb;
	int fd;

	/* Missing parents are made, as mkdir -p would. */
	snprintf(spec, sizeof(spec), "lmdb:%s/missing/db", f->dir);
	assert_non_null(store_open(spec, err, sizeof(err)));
	snprintf(path, sizeof(path), "%s/missing", f->dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	snprintf(path, sizeof(path), "%s/missing/db", f->dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	store_close_all();
	/* A relative path would be another store from another directory. */
	assert_null(store_open("lmdb:relative/db", err, sizeof(err)));
	assert_non_null(strstr(err, "absolute"));

	/* A file where the directory should be, or above it. */
	snprintf(path, sizeof(path), "%s/file", f->dir);
	assert_true((fd = open(path, O_CREAT | O_WRONLY, 0600)) >= 0);
	close(fd);
	snprintf(spec, sizeof(spec), "lmdb:%s", path);
	assert_null(store_open(spec, err, sizeof(err)));
	assert_non_null(strstr(err, "not a directory"));
	snprintf(spec, sizeof(spec), "lmdb:%s/db", path);
	assert_null(store_open(spec, err, sizeof(err)));
	assert_non_null(strstr(err, "Not a directory"));
	snprintf(spec, sizeof(spec), "lmdb:%s/sub/db", path);
	assert_null(store_open(spec, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot create"));
	assert_non_null(strstr(err, "Not a directory"));

	assert_null(store_open("lmdb:", err, sizeof(err)));
	assert_non_null(strstr(err, "needs a directory"));

	/* A map smaller than LMDB can work with. */
	configure(f, 4096, 60000);
	assert_null(store_open(f->spec, err, sizeof(err)));
	assert_non_null(strstr(err, "store_max_size"));
	configure(f, 64ULL * 1024 * 1024, 60000);

	/* A directory this user may not write (root may write anything). */
	if (geteuid() != 0) {
		snprintf(path, sizeof(path), "%s/ro", f->dir);
		assert_int_equal(mkdir(path, 0500), 0);
		snprintf(spec, sizeof(spec), "lmdb:%s", path);
		assert_null(store_open(spec, err, sizeof(err)));
		assert_non_null(strstr(err, "not writable"));
	}
}

static void
lmdb_scan_prefix(void **state)
{
	struct fixture *f = *state;
	struct pc_store *st = open_ok(f->spec);
	struct scanned sc;

	assert_int_equal(set(st, "b:1", "v", 0, 0).status, PC_STORE_OK);
	assert_int_equal(set(st, "a:2", "v", 3600000, 0).status, PC_STORE_OK);
	assert_int_equal(set(st, "a:1", "v", 0, 0).status, PC_STORE_OK);
	assert_int_equal(set(st, "a", "v", 0, 0).status, PC_STORE_OK);
	assert_int_equal(set(st, "a:3", "v", TTL_MS, 0).status, PC_STORE_OK);
	assert_int_equal(set(st, "a;", "v", 0, 0).status, PC_STORE_OK);
	sleep_ms(PAST_TTL_MS);

	sc = scan(st, "a:", 0);
	assert_string_equal(sc.error, "");
	assert_int_equal(sc.keys, 2);
	assert_string_equal(sc.names[0], "a:1");
	assert_int_equal(sc.ttl[0], -1);
	assert_string_equal(sc.names[1], "a:2");
	assert_true(sc.ttl[1] > 0 && sc.ttl[1] <= 3600000);

	assert_int_equal(scan(st, "", 0).keys, 5);
	assert_int_equal(scan(st, "a", 2).keys, 2);
	assert_int_equal(scan(st, "c", 0).keys, 0);
	assert_int_equal(scan(st, "zzz", 0).keys, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_nx),
	    cmocka_unit_test(test_ttl),
	    cmocka_unit_test(test_incr),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_scan_and_share),
	    cmocka_unit_test(test_specs),
	    cmocka_unit_test_setup_teardown(lmdb_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(lmdb_nx, setup, teardown),
	    cmocka_unit_test_setup_teardown(lmdb_ttl, setup, teardown),
	    cmocka_unit_test_setup_teardown(lmdb_incr_not_integer, setup, teardown),
	    cmocka_unit_test_setup_teardown(lmdb_incr_overflow, setup, teardown),
	    cmocka_unit_test_setup_teardown(lmdb_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(lmdb_two_processes, setup, teardown),
	    cmocka_unit_test_setup_teardown(lmdb_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(lmdb_purge_timer, setup, teardown),
	    cmocka_unit_test_setup_teardown(lmdb_bad_paths, setup, teardown),
	    cmocka_unit_test_setup_teardown(lmdb_scan_prefix, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
