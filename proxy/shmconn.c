/*
 * shmconn.c - connection counts shared by the workers (shmconn.h).
 *
 * Layout of the one mapping: the header (the lock, the sizes, each worker's
 * total), then the slots of an open-addressing hash table with linear
 * probing (a key and the sum of its counts), then each slot's count per
 * worker. A key whose last connection ends is removed and the keys after
 * it shifted back, so there are no tombstones and a probe for a new key
 * stops at the first empty slot. A process killed half way through a
 * change is repaired by the next one to take the lock (repair).
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

/* hash - FNV-1a */
static uint32_t
hash(const char *key)
{
	uint32_t h = 2166136261u;

	for (; *key != '\0'; key++)
		h = (h ^ (unsigned char)*key) * 16777619u;
	return h;
}

/* find - key's slot, or -1; with create, a new one when it has none (the
 * empty slot that ends its probe) */
static int64_t
find(struct shmconn *t, const char *key, int create)
{
	uint32_t mask = t->nslots - 1, h = hash(key);

	for (uint32_t k = 0; k < t->nslots; k++) {
		uint32_t i = (h + k) & mask;
		struct shm_slot *s = &slots(t)[i];

		if (s->key[0] == '\0') {
			if (!create)
				return -1;
			strcpy(s->key, key);
			return i;
		}
		if (strcmp(s->key, key) == 0)
			return i;
	}
	return -1; /* every slot holds a live key */
}

/* move_slot - slot j into the empty slot i: the copy first, then j is
 * cleared, so a process killed in between leaves a duplicate (which
 * repair drops), never a lost count */
static void
move_slot(struct shmconn *t, uint32_t i, uint32_t j)
{
	slots(t)[i] = slots(t)[j];
	memcpy(counts(t, i), counts(t, j), t->nworkers * sizeof(uint32_t));
	memset(&slots(t)[j], 0, sizeof(struct shm_slot));
	memset(counts(t, j), 0, t->nworkers * sizeof(uint32_t));
}

/* remove - slot i's key has no connection left: empty it and shift the
 * keys after it back (linear probing without tombstones), so that a probe
 * for an absent key stops at the first empty slot, as short as ever */
static void
remove_slot(struct shmconn *t, uint32_t i)
{
	uint32_t mask = t->nslots - 1, j = i;

	memset(&slots(t)[i], 0, sizeof(struct shm_slot));
	memset(counts(t, i), 0, t->nworkers * sizeof(uint32_t));
	for (;;) {
		uint32_t home;

		j = (j + 1) & mask;
		if (slots(t)[j].key[0] == '\0')
			return;
		home = hash(slots(t)[j].key) & mask;
		/* j may move to the hole at i unless its home lies cyclically
		 * in (i, j]: then i is before where its probe starts */
		if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
			continue;
		move_slot(t, i, j);
		i = j;
	}
}

/* repair - a process died holding the lock, maybe half way through a
 * change: rebuild the table from what it holds, a duplicate key dropped
 * (a move cut short), each sum counted again from the per-worker counts */
static void
repair(struct shmconn *t)
{
	size_t nw = t->nworkers, row = sizeof(struct shm_slot) + nw * sizeof(uint32_t);
	uint32_t n = 0;
	char *save = malloc((size_t)t->nslots * row);

	if (save == NULL)
		return; /* the sums stay as they are: off by one at worst */
	for (uint32_t i = 0; i < t->nslots; i++) {
		if (slots(t)[i].key[0] == '\0')
			continue;
		slots(t)[i].key[NETKEY_MAX - 1] = '\0';
		memcpy(save + (size_t)n * row, &slots(t)[i], sizeof(struct shm_slot));
		memcpy(save + (size_t)n * row + sizeof(struct shm_slot), counts(t, i),
		    nw * sizeof(uint32_t));
		n++;
	}
	memset(slots(t), 0, (size_t)t->nslots * sizeof(struct shm_slot));
	memset(counts(t, 0), 0, (size_t)t->nslots * nw * sizeof(uint32_t));
	for (uint32_t k = 0; k < n; k++) {
		const struct shm_slot *s = (const struct shm_slot *)(save + (size_t)k * row);
		const uint32_t *c = (const uint32_t *)(save + (size_t)k * row + sizeof(*s));
		uint32_t sum = 0;
		int64_t i;

		if (find(t, s->key, 0) >= 0) /* the copy of a move cut short */
			continue;
		for (uint32_t w = 0; w < nw; w++)
			sum += c[w];
		if (sum == 0 || (i = find(t, s->key, 1)) < 0)
			continue;
		memcpy(counts(t, (uint32_t)i), c, nw * sizeof(uint32_t));
		slots(t)[i].sum = sum;
	}
	free(save);
}

static void
lock(struct shmconn *t)
{
	if (pthread_mutex_lock(&t->lock) == EOWNERDEAD) {
		repair(t);
		pthread_mutex_consistent(&t->lock);
	}
}

static void
unlock(struct shmconn *t)
{
	pthread_mutex_unlock(&t->lock);
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
		if (slots(t)[i].sum == 0) /* max_per_key 0: the new key goes */
			remove_slot(t, (uint32_t)i);
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
		t->total[worker]--;
		if (--slots(t)[i].sum == 0)
			remove_slot(t, (uint32_t)i);
	}
	unlock(t);
}

void
shmconn_forget_worker(struct shmconn *t, unsigned worker)
{
	if (worker >= t->nworkers)
		return;
	lock(t);
	for (uint32_t i = 0; i < t->nslots; i++)
		counts(t, i)[worker] = 0;
	t->total[worker] = 0;
	repair(t); /* the sums again, and the keys left with none dropped */
	unlock(t);
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
