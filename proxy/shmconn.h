/*
 * shmconn.h - connection counts that hold across worker processes (issue
 * 18): the total, for max_connections, and one count per client key (a
 * netkey: the address, or its IPv6 prefix), for max_connections_per_ip.
 *
 * The table lives in shared memory the master maps before it forks, like
 * nginx's limit_conn_zone. Every count is kept per worker, so that when a
 * worker dies the master clears that worker's share (shmconn_forget_worker)
 * and the connections it held stop counting; the limits are checked
 * against the sum. One process-shared, robust mutex guards the table: the
 * critical sections are a hash probe and a few additions, and a worker that
 * dies holding it does not block the others (EOWNERDEAD is recovered).
 */
#ifndef PORTCULLIS_SHMCONN_H
#define PORTCULLIS_SHMCONN_H

#include <stddef.h>
#include <stdint.h>

#include "netkey.h"

#define SHMCONN_WORKERS_MAX 64

struct shmconn;

enum shmconn_result {
	SHMCONN_OK = 0,
	SHMCONN_TOTAL, /* max_connections reached */
	SHMCONN_PER_KEY, /* max_connections_per_ip reached for this key */
	SHMCONN_FULL, /* no slot left for a new key: refused like a limit */
};

/* shmconn_create - a table for keys distinct client keys at once, shared by
 * nworkers workers (1 to SHMCONN_WORKERS_MAX), in memory that a fork
 * shares. NULL on failure (errno). */
struct shmconn *shmconn_create(size_t keys, unsigned nworkers);
void shmconn_destroy(struct shmconn *t);

/* shmconn_acquire - count one more connection of worker under key, unless
 * that would pass max_total (all keys, all workers) or max_per_key. */
enum shmconn_result shmconn_acquire(
    struct shmconn *t, unsigned worker, const char *key, uint64_t max_total, uint64_t max_per_key);
/* shmconn_release - one connection worker counted under key ended. */
void shmconn_release(struct shmconn *t, unsigned worker, const char *key);
/* shmconn_forget_worker - worker is gone: none of its connections count. */
void shmconn_forget_worker(struct shmconn *t, unsigned worker);

/* shmconn_total / shmconn_count - the sums, for tests and the metrics. */
uint64_t shmconn_total(struct shmconn *t);
uint64_t shmconn_count(struct shmconn *t, const char *key);

#endif
