/*
 * test_store.c - the store's front (store.c) and its memory backend:
 * the operations as plugin.h documents them, the limits every request
 * passes, and what a full store answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "store.h"

/* What the last done() saw. */
struct seen {
	int calls;
	enum pc_store_status status;
	char value[256];
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
