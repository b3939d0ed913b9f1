/*
 * shmconn.c - connection counts shared by the workers (shmconn.h).
 *
 * Layout of the one mapping: the header (the lock, the sizes, each worker's
 * total), then the slots of an open-addressing hash table (a key and the
 * sum of its counts), then each slot's count per worker. A slot whose sum
 * fell to 0 keeps its key as a tombstone, so that probes for the keys
 * after it still find them; a new key takes the first tombstone on its
 * path. Tombstones pile up, and probes for absent keys grow long (never
 * wrong): the master rebuilds the table from time to time (shmconn_compact).
 * Only the master: a worker killed half way through a rebuild would take
 * the other workers' counts with it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "shmconn.h"

struct shm_slot {
	char key[NETKEY_MAX]; /* "" while never used */
	uint32_t sum; /* its counts over the workers */
};

struct shmconn {
	pthread_mutex_t lock; /* process-shared, robust */
	size_t mapsize;
	uint32_t nslots; /* a power of two */
	uint32_t nworkers;
	uint32_t used; /* slots that have a key (live or tombstone) */
	uint32_t total[SHMCONN_WORKERS_MAX];
};

static struct shm_slot *
slots(struct shmconn *t)
{
	return (struct shm_slot *)(t + 1);
}

/* counts - slot i's count per worker */
static uint32_t *
counts(struct shmconn *t, uint32_t i)
{
	return (uint32_t *)(slots(t) + t->nslots) + (size_t)i * t->nworkers;
}

struct shmconn *
shmconn_create(size_t keys, unsigned nworkers)
{
	pthread_mutexattr_t ma;
	struct shmconn *t;
	uint32_t n = 64;
	size_t size;

	if (nworkers == 0 || nworkers > SHMCONN_WORKERS_MAX || keys > (1u << 28)) {
		errno = EINVAL;
		return NULL;
	}
	while (n < 2 * keys) /* at most half full with live keys */
		n <<= 1;
	size = sizeof(*t) + (size_t)n * sizeof(struct shm_slot) +
	    (size_t)n * nworkers * sizeof(uint32_t);
	t = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (t == MAP_FAILED)
		return NULL;
	/* The mapping is zeroed: every slot is never used, every count 0. */
	t->mapsize = size;
	t->nslots = n;
	t->nworkers = nworkers;
	if (pthread_mutexattr_init(&ma) != 0 ||
	    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED) != 0 ||
	    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST) != 0 ||
	    pthread_mutex_init(&t->lock, &ma) != 0) {
		munmap(t, size);
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutexattr_destroy(&ma);
	return t;
}

void
shmconn_destroy(struct shmconn *t)
{
	if (t == NULL)
		return;
	pthread_mutex_destroy(&t->lock);
	munmap(t, t->mapsize);
}

/* resync - the sums again from the per-worker counts: a process that died
 * holding the lock may have changed one and not the other */
static void
resync(struct shmconn *t)
{
	for (uint32_t i = 0; i < t->nslots; i++) {
		uint32_t sum = 0, *c = counts(t, i);
		for (uint32_t w = 0; w < t->nworkers; w++)
			sum += c[w];
		slots(t)[i].sum = sum;
	}
}

static void
lock(struct shmconn *t)
{
	if (pthread_mutex_lock(&t->lock) == EOWNERDEAD) {
		resync(t);
		pthread_mutex_consistent(&t->lock);
	}
}

static void
unlock(struct shmconn *t)
{
	pthread_mutex_unlock(&t->lock);
}

/* hash - FNV-1a */
static uint32_t
hash(const char *key)
{
	uint32_t h = 2166136261u;

	for (; *key != '\0'; key++)
		h = (h ^ (unsigned char)*key) * 16777619u;
	return h;
}

/* find - key's slot; with create, a new one when it has none (the first
 * tombstone on its path, else the never-used slot that ends it); -1 */
static int64_t
find(struct shmconn *t, const char *key, int create)
{
	uint32_t mask = t->nslots - 1, h = hash(key);
	int64_t reuse = -1;

	for (uint32_t k = 0; k < t->nslots; k++) {
		uint32_t i = (h + k) & mask;
		struct shm_slot *s = &slots(t)[i];

		if (s->key[0] == '\0') {
			if (!create)
				return -1;
			if (reuse < 0) {
				reuse = i;
				t->used++;
			}
			break;
		}
		if (strcmp(s->key, key) == 0)
			return i;
		if (s->sum == 0 && reuse < 0)
			reuse = i;
	}
	if (reuse >= 0)
		strcpy(slots(t)[reuse].key, key);
	return reuse;
}

/* compact - rebuild the table with its live keys only, so that probes end
 * soon again; skipped (tried again later) without memory */
static void
compact(struct shmconn *t)
{
	size_t nw = t->nworkers, row = sizeof(struct shm_slot) + nw * sizeof(uint32_t);
	uint32_t live = 0;
	char *save;

	for (uint32_t i = 0; i < t->nslots; i++)
		live += slots(t)[i].sum > 0;
	if ((save = malloc((size_t)live * row + 1)) == NULL)
		return;
	live = 0;
	for (uint32_t i = 0; i < t->nslots; i++) {
		if (slots(t)[i].sum == 0)
			continue;
		memcpy(save + (size_t)live * row, &slots(t)[i], sizeof(struct shm_slot));
		memcpy(save + (size_t)live * row + sizeof(struct shm_slot), counts(t, i),
		    nw * sizeof(uint32_t));
		live++;
	}
	memset(slots(t), 0, (size_t)t->nslots * sizeof(struct shm_slot));
	memset(counts(t, 0), 0, (size_t)t->nslots * nw * sizeof(uint32_t));
	t->used = 0;
	for (uint32_t j = 0; j < live; j++) {
		const struct shm_slot *s = (const struct shm_slot *)(save + (size_t)j * row);
		int64_t i = find(t, s->key, 1);
		slots(t)[i].sum = s->sum;
		memcpy(counts(t, (uint32_t)i), save + (size_t)j * row + sizeof(struct shm_slot),
		    nw * sizeof(uint32_t));
	}
	free(save);
}

enum shmconn_result
shmconn_acquire(
    struct shmconn *t, unsigned worker, const char *key, uint64_t max_total, uint64_t max_per_key)
{
	enum shmconn_result r = SHMCONN_OK;
	uint64_t total = 0;
	int64_t i;

	if (worker >= t->nworkers || strlen(key) >= NETKEY_MAX)
		return SHMCONN_FULL;
	lock(t);
	for (uint32_t w = 0; w < t->nworkers; w++)
		total += t->total[w];
	if (total >= max_total) {
		r = SHMCONN_TOTAL;
		goto out;
	}
	if ((i = find(t, key, 1)) < 0) {
		r = SHMCONN_FULL;
		goto out;
	}
	if (slots(t)[i].sum >= max_per_key) {
		r = SHMCONN_PER_KEY;
		goto out;
	}
	counts(t, (uint32_t)i)[worker]++;
	slots(t)[i].sum++;
	t->total[worker]++;
out:
	unlock(t);
	return r;
}

void
shmconn_release(struct shmconn *t, unsigned worker, const char *key)
{
	int64_t i;

	if (worker >= t->nworkers)
		return;
	lock(t);
	if ((i = find(t, key, 0)) >= 0 && counts(t, (uint32_t)i)[worker] > 0) {
		counts(t, (uint32_t)i)[worker]--;
		slots(t)[i].sum--;
		t->total[worker]--;
	}
	unlock(t);
}

void
shmconn_forget_worker(struct shmconn *t, unsigned worker)
{
	if (worker >= t->nworkers)
		return;
	lock(t);
	for (uint32_t i = 0; i < t->nslots; i++) {
		uint32_t *c = counts(t, i);
		slots(t)[i].sum -= c[worker];
		c[worker] = 0;
	}
	t->total[worker] = 0;
	unlock(t);
}

int
shmconn_compact(struct shmconn *t)
{
	int done = 0;

	lock(t);
	if (t->used >= t->nslots / 2) {
		compact(t);
		done = 1;
	}
	unlock(t);
	return done;
}

uint64_t
shmconn_total(struct shmconn *t)
{
	uint64_t total = 0;

	lock(t);
	for (uint32_t w = 0; w < t->nworkers; w++)
		total += t->total[w];
	unlock(t);
	return total;
}

uint64_t
shmconn_count(struct shmconn *t, const char *key)
{
	uint64_t n = 0;
	int64_t i;

	lock(t);
	if ((i = find(t, key, 0)) >= 0)
		n = slots(t)[i].sum;
	unlock(t);
	return n;
}
