/*
 * test_shmconn.c - unit tests for proxy/shmconn.c, the connection counts
 * shared by the workers.
 *
 * Limits per key and in total, summed over workers; releases, including
 * one for a key never counted; a worker's share forgotten; many distinct
 * keys coming and going through a small table (removal shifts the keys
 * back), the live counts kept; a full table; and across fork: a child's counts seen by
 * the parent, forgotten when it dies without releasing, and a child killed
 * while it may hold the lock does not block the parent (robust mutex).
 */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "shmconn.h"

static void
test_limits(void **state)
{
	struct shmconn *t = shmconn_create(16, 2);

	(void)state;
	assert_non_null(t);
	assert_int_equal(shmconn_acquire(t, 0, "192.0.2.1", 5, 2), SHMCONN_OK);
	assert_int_equal(shmconn_acquire(t, 1, "192.0.2.1", 5, 2), SHMCONN_OK);
	/* the per-key limit counts both workers */
	assert_int_equal(shmconn_acquire(t, 0, "192.0.2.1", 5, 2), SHMCONN_PER_KEY);
	assert_int_equal(shmconn_acquire(t, 1, "192.0.2.1", 5, 2), SHMCONN_PER_KEY);
	assert_int_equal(shmconn_acquire(t, 0, "192.0.2.2", 5, 2), SHMCONN_OK);
	assert_int_equal(shmconn_acquire(t, 1, "2001:db8::/64", 5, 2), SHMCONN_OK);
	assert_int_equal(shmconn_acquire(t, 1, "192.0.2.3", 5, 2), SHMCONN_OK);
	/* and the total too */
	assert_int_equal(shmconn_acquire(t, 0, "192.0.2.4", 5, 2), SHMCONN_TOTAL);
	assert_int_equal(shmconn_total(t), 5);
	assert_int_equal(shmconn_count(t, "192.0.2.1"), 2);
	shmconn_release(t, 1, "192.0.2.1");
	assert_int_equal(shmconn_count(t, "192.0.2.1"), 1);
	assert_int_equal(shmconn_acquire(t, 0, "192.0.2.1", 5, 2), SHMCONN_OK);
	/* a release that matches nothing changes nothing */
	shmconn_release(t, 1, "192.0.2.1"); /* worker 1 held none any more */
	shmconn_release(t, 0, "198.51.100.1");
	shmconn_release(t, 7, "192.0.2.1");
	assert_int_equal(shmconn_count(t, "192.0.2.1"), 2);
	assert_int_equal(shmconn_total(t), 5);
	/* bad arguments */
	assert_int_equal(shmconn_acquire(t, 2, "192.0.2.9", 50, 50), SHMCONN_FULL);
	char longkey[NETKEY_MAX + 1];
	memset(longkey, 'a', NETKEY_MAX);
	longkey[NETKEY_MAX] = '\0';
	assert_int_equal(shmconn_acquire(t, 0, longkey, 50, 50), SHMCONN_FULL);
	shmconn_destroy(t);
	assert_null(shmconn_create(1, 0));
	assert_null(shmconn_create(1, SHMCONN_WORKERS_MAX + 1));
}

static void
test_forget_worker(void **state)
{
	struct shmconn *t = shmconn_create(16, 3);

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(shmconn_acquire(t, 1, "192.0.2.1", 100, 100), SHMCONN_OK);
	assert_int_equal(shmconn_acquire(t, 2, "192.0.2.1", 100, 100), SHMCONN_OK);
	assert_int_equal(shmconn_acquire(t, 1, "192.0.2.2", 100, 100), SHMCONN_OK);
	shmconn_forget_worker(t, 1);
	assert_int_equal(shmconn_count(t, "192.0.2.1"), 1);
	assert_int_equal(shmconn_count(t, "192.0.2.2"), 0);
	assert_int_equal(shmconn_total(t), 1);
	/* the restarted worker starts from nothing: a late release is ignored */
	shmconn_release(t, 1, "192.0.2.1");
	assert_int_equal(shmconn_count(t, "192.0.2.1"), 1);
	shmconn_destroy(t);
}

/* Many more distinct keys than slots come and go, while a few stay: the
 * tombstones are reused or compacted away, and the live counts survive. */
static void
test_churn(void **state)
{
	struct shmconn *t = shmconn_create(8, 1); /* 64 slots */
	char key[32];

	(void)state;
	assert_int_equal(shmconn_acquire(t, 0, "keep-a", 1000, 1000), SHMCONN_OK);
	assert_int_equal(shmconn_acquire(t, 0, "keep-b", 1000, 1000), SHMCONN_OK);
	assert_int_equal(shmconn_acquire(t, 0, "keep-b", 1000, 1000), SHMCONN_OK);
	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "198.51.%d.%d", i / 250, i % 250);
		assert_int_equal(shmconn_acquire(t, 0, key, 1000, 1000), SHMCONN_OK);
		assert_int_equal(shmconn_count(t, key), 1);
		shmconn_release(t, 0, key);
		assert_int_equal(shmconn_count(t, key), 0);
	}
	assert_int_equal(shmconn_count(t, "keep-a"), 1);
	assert_int_equal(shmconn_count(t, "keep-b"), 2);
	assert_int_equal(shmconn_total(t), 3);
	shmconn_destroy(t);
}

/* Random acquires and releases over 48 keys in 64 slots (long probe runs,
 * removals shifting keys back across the wrap), checked after every step
 * against a plain array of counts. */
static void
test_model(void **state)
{
	struct shmconn *t = shmconn_create(8, 2); /* 64 slots */
	unsigned model[48][2] = {{0}}, seed = 12345, total = 0;
	char key[32];

	(void)state;
	for (int step = 0; step < 200000; step++) {
		unsigned k, w, sum;
		seed = seed * 1103515245u + 12345u;
		k = (seed >> 8) % 48;
		w = (seed >> 20) & 1;
		snprintf(key, sizeof(key), "k%u", k);
		if ((seed >> 24) % 3 != 0) {
			enum shmconn_result r = shmconn_acquire(t, w, key, 1000, 3);
			sum = model[k][0] + model[k][1];
			assert_int_equal(r, sum >= 3 ? SHMCONN_PER_KEY : SHMCONN_OK);
			if (r == SHMCONN_OK) {
				model[k][w]++;
				total++;
			}
		} else {
			shmconn_release(t, w, key);
			if (model[k][w] > 0) {
				model[k][w]--;
				total--;
			}
		}
		if (step % 97 == 0)
			for (unsigned j = 0; j < 48; j++) {
				snprintf(key, sizeof(key), "k%u", j);
				assert_int_equal(shmconn_count(t, key), model[j][0] + model[j][1]);
			}
		if (step % 50000 == 49999) { /* worker 1 dies */
			shmconn_forget_worker(t, 1);
			for (unsigned j = 0; j < 48; j++) {
				total -= model[j][1];
				model[j][1] = 0;
			}
		}
	}
	assert_int_equal(shmconn_total(t), total);
	shmconn_destroy(t);
}

/* Live keys fill the table: a new one is refused, not lost. */
static void
test_full(void **state)
{
	struct shmconn *t = shmconn_create(8, 1); /* 64 slots */
	char key[32];
	int i, ok = 0;

	(void)state;
	for (i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "10.0.0.%d", i);
		if (shmconn_acquire(t, 0, key, 1000, 1000) == SHMCONN_OK)
			ok++;
	}
	assert_int_equal(ok, 64);
	assert_int_equal(shmconn_acquire(t, 0, "10.0.0.1", 1000, 1000), SHMCONN_OK);
	assert_int_equal(shmconn_acquire(t, 0, "192.0.2.1", 1000, 1000), SHMCONN_FULL);
	shmconn_release(t, 0, "10.0.0.5");
	assert_int_equal(shmconn_acquire(t, 0, "192.0.2.1", 1000, 1000), SHMCONN_OK);
	shmconn_destroy(t);
}

/* Across fork: what a child counts, the parent sees; a child that dies
 * without releasing is forgotten by its worker number. */
static void
test_fork(void **state)
{
	struct shmconn *t = shmconn_create(16, 2);
	pid_t pid;
	int st;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (int i = 0; i < 5; i++)
			if (shmconn_acquire(t, 1, "192.0.2.1", 100, 5) != SHMCONN_OK)
				_exit(1);
		_exit(shmconn_acquire(t, 1, "192.0.2.1", 100, 5) == SHMCONN_PER_KEY ? 0 : 2);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(shmconn_count(t, "192.0.2.1"), 5);
	assert_int_equal(shmconn_acquire(t, 0, "192.0.2.1", 100, 5), SHMCONN_PER_KEY);
	shmconn_forget_worker(t, 1);
	assert_int_equal(shmconn_acquire(t, 0, "192.0.2.1", 100, 5), SHMCONN_OK);
	assert_int_equal(shmconn_total(t), 1);
	shmconn_destroy(t);
}

/* A child killed at any moment of a busy loop, perhaps holding the lock:
 * the parent still gets the lock (alarm() ends a deadlock as a failure),
 * and after forgetting the child the counts are exact. */
static void
test_killed_holding_the_lock(void **state)
{
	struct shmconn *t = shmconn_create(64, 2);

	(void)state;
	alarm(20);
	for (int round = 0; round < 30; round++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			for (;;) {
				shmconn_acquire(t, 1, "192.0.2.1", 1u << 30, 1u << 30);
				shmconn_acquire(t, 1, "192.0.2.2", 1u << 30, 1u << 30);
				shmconn_release(t, 1, "192.0.2.1");
			}
		}
		usleep((useconds_t)(200 + (round * 997) % 3000));
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, NULL, 0), pid);
		assert_int_equal(
		    shmconn_acquire(t, 0, "192.0.2.1", 1u << 30, 1u << 30), SHMCONN_OK);
		shmconn_forget_worker(t, 1);
		assert_int_equal(shmconn_count(t, "192.0.2.1"), 1);
		assert_int_equal(shmconn_count(t, "192.0.2.2"), 0);
		assert_int_equal(shmconn_total(t), 1);
		shmconn_release(t, 0, "192.0.2.1");
	}
	alarm(0);
	shmconn_destroy(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_forget_worker),
	    cmocka_unit_test(test_churn),
	    cmocka_unit_test(test_model),
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_fork),
	    cmocka_unit_test(test_killed_holding_the_lock),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
