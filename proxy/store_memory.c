/*
 * store_memory.c - the "memory" store: a hash table in this process, for
 * tests and one-box setups. Gone at exit; not shared between processes.
 *
 * Exports store_memory_backend. Every request completes at once.
 *
 * Bounded like the rest of the daemon: what the table takes from malloc
 * (entries, keys, values, buckets) is counted against store_max_size, and
 * a write that would go over it, once expired entries are dropped, fails.
 * Expired entries go when they are read, and in a sweep every
 * store_purge_interval (a walk of the whole table: the memory store is
 * for small state; large state belongs in LMDB or Redis).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "store.h"

struct mem_entry {
	struct mem_entry *next;
	uint64_t expires_ms; /* 0: never */
	char *value;
	size_t vlen;
	size_t klen;
	char key[]; /* klen octets and a '\0' */
};

struct mem_store {
	struct mem_entry **tab;
	size_t buckets, count;
	size_t bytes; /* taken from malloc, all told */
	struct event *purge;
};

static size_t mem_hash(const char *k, size_t len);
static struct mem_entry *mem_find(
    struct mem_store *m, const char *key, size_t len, struct mem_entry ***slot, uint64_t now);
static void mem_remove(struct mem_store *m, struct mem_entry **slot);
static void mem_sweep(struct mem_store *m, uint64_t now);
static int mem_put(struct pc_store *st, struct pc_store_req *req, const char *value, size_t vlen,
    uint64_t expires, struct mem_entry *old, struct mem_entry **slot);

/* FNV-1a: keys come from clients (addresses, networks), so the table is
 * sized to keep chains short rather than trusting the hash alone. */
static size_t
mem_hash(const char *k, size_t len)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)k[i];
		h *= 1099511628211ULL;
	}
	return (size_t)(h ^ (h >> 29));
}

static size_t
entry_cost(size_t klen, size_t vlen)
{
	return sizeof(struct mem_entry) + klen + 1 + vlen + 1;
}

/* mem_find - the live entry for key, and the slot that points at it */
static struct mem_entry *
mem_find(struct mem_store *m, const char *key, size_t len, struct mem_entry ***slot, uint64_t now)
{
	struct mem_entry **p = &m->tab[mem_hash(key, len) % m->buckets];

	while (*p != NULL) {
		struct mem_entry *e = *p;

		if (e->klen == len && memcmp(e->key, key, len) == 0) {
			if (e->expires_ms != 0 && e->expires_ms <= now) {
				mem_remove(m, p);
				break;
			}
			*slot = p;
			return e;
		}
		p = &e->next;
	}
	*slot = &m->tab[mem_hash(key, len) % m->buckets];
	return NULL;
}

static void
mem_remove(struct mem_store *m, struct mem_entry **slot)
{
	struct mem_entry *e = *slot;

	*slot = e->next;
	m->bytes -= entry_cost(e->klen, e->vlen);
	m->count--;
	free(e->value);
	free(e);
}

static void
mem_sweep(struct mem_store *m, uint64_t now)
{
	for (size_t b = 0; b < m->buckets; b++) {
		struct mem_entry **p = &m->tab[b];

		while (*p != NULL)
			if ((*p)->expires_ms != 0 && (*p)->expires_ms <= now)
				mem_remove(m, p);
			else
				p = &(*p)->next;
	}
}

/* mem_grow - twice the buckets when chains get long (best effort) */
static void
mem_grow(struct mem_store *m, size_t max)
{
	size_t n = m->buckets * 2, cost = n * sizeof(*m->tab);
	struct mem_entry **tab;

	if (m->bytes - m->buckets * sizeof(*m->tab) + cost > max ||
	    (tab = calloc(n, sizeof(*tab))) == NULL)
		return;
	for (size_t b = 0; b < m->buckets; b++)
		while (m->tab[b] != NULL) {
			struct mem_entry *e = m->tab[b];
			size_t h = mem_hash(e->key, e->klen) % n;

			m->tab[b] = e->next;
			e->next = tab[h];
			tab[h] = e;
		}
	m->bytes += cost - m->buckets * sizeof(*m->tab);
	free(m->tab);
	m->tab = tab;
	m->buckets = n;
}

static void
purge_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pc_store *st = arg;

	mem_sweep(st->priv, store_now_ms());
}

static int
mem_open(struct pc_store *st, const char *rest, char *err, size_t errlen)
{
	struct mem_store *m;

	if ((m = calloc(1, sizeof(*m))) == NULL || (m->tab = calloc(64, sizeof(*m->tab))) == NULL) {
		free(m);
		snprintf(err, errlen, "store memory: out of memory");
		return -1;
	}
	m->buckets = 64;
	m->bytes = sizeof(*m) + 64 * sizeof(*m->tab);
	if (st->base != NULL && st->set.purge_ms > 0) {
		struct timeval tv = {(time_t)(st->set.purge_ms / 1000),
		    (suseconds_t)(st->set.purge_ms % 1000) * 1000};

		if ((m->purge = event_new(st->base, -1, EV_PERSIST, purge_cb, st)) == NULL ||
		    event_add(m->purge, &tv) != 0) {
			if (m->purge != NULL)
				event_free(m->purge);
			free(m->tab);
			free(m);
			snprintf(err, errlen, "store memory: cannot start the purge timer");
			return -1;
		}
	}
	st->priv = m;
	return 0;
}

static void
mem_close(struct pc_store *st)
{
	struct mem_store *m = st->priv;

	if (m == NULL)
		return;
	if (m->purge != NULL)
		event_free(m->purge);
	for (size_t b = 0; b < m->buckets; b++)
		while (m->tab[b] != NULL)
			mem_remove(m, &m->tab[b]);
	free(m->tab);
	free(m);
	st->priv = NULL;
}

/* mem_put - write value into old (replacing) or a new entry at slot */
static int
mem_put(struct pc_store *st, struct pc_store_req *req, const char *value, size_t vlen,
    uint64_t expires, struct mem_entry *old, struct mem_entry **slot)
{
	struct mem_store *m = st->priv;
	size_t cost = entry_cost(req->klen, vlen), was = old ? entry_cost(old->klen, old->vlen) : 0;
	struct mem_entry *e;
	char *v;

	if (m->bytes - was + cost > st->set.max_size) {
		mem_sweep(m, store_now_ms());
		/* The sweep may have taken old itself: look again. */
		old = mem_find(m, req->key, req->klen, &slot, store_now_ms());
		was = old ? entry_cost(old->klen, old->vlen) : 0;
		if (m->bytes - was + cost > st->set.max_size) {
			store_fail(
			    req, "full (store_max_size %" PRIu64 " octets)", st->set.max_size);
			return -1;
		}
	}
	if ((v = malloc(vlen + 1)) == NULL) {
		store_fail(req, "out of memory");
		return -1;
	}
	memcpy(v, value, vlen);
	v[vlen] = '\0';
	if (old != NULL) {
		free(old->value);
		old->value = v;
		m->bytes = m->bytes - was + cost;
		old->vlen = vlen;
		old->expires_ms = expires;
		return 0;
	}
	if ((e = malloc(sizeof(*e) + req->klen + 1)) == NULL) {
		free(v);
		store_fail(req, "out of memory");
		return -1;
	}
	memcpy(e->key, req->key, req->klen);
	e->key[req->klen] = '\0';
	e->klen = req->klen;
	e->value = v;
	e->vlen = vlen;
	e->expires_ms = expires;
	e->next = *slot;
	*slot = e;
	m->count++;
	m->bytes += cost;
	if (m->count > m->buckets * 2)
		mem_grow(m, st->set.max_size);
	return 0;
}

/* parse_integer - a decimal integer value (as Redis's INCRBY takes it) */
static int
parse_integer(const char *s, size_t len, long long *out)
{
	char buf[32], *end;

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	*out = strtoll(buf, &end, 10);
	if (errno != 0 || *end != '\0' || buf[0] == '+' || buf[0] == ' ')
		return -1;
	return 0;
}

static void
mem_submit(struct pc_store *st, struct pc_store_req *req)
{
	struct mem_store *m = st->priv;
	struct pc_store_result r = {.status = PC_STORE_OK};
	uint64_t now = store_now_ms();
	struct mem_entry **slot, *e = mem_find(m, req->key, req->klen, &slot, now);
	uint64_t expires = req->ttl_ms ? now + req->ttl_ms : 0;
	long long n = 0;
	char num[32];
	int len;

	switch (req->op) {
	case STORE_GET:
		if (e == NULL)
			r.status = PC_STORE_MISSING;
		else {
			r.value = e->value;
			r.len = e->vlen;
		}
		break;
	case STORE_SET:
		if (e != NULL && (req->flags & PC_STORE_NX)) {
			r.status = PC_STORE_EXISTS;
			break;
		}
		if (mem_put(st, req, req->value, req->vlen, expires, e, slot) != 0)
			return;
		break;
	case STORE_INCR:
		if (e != NULL && parse_integer(e->value, e->vlen, &n) != 0) {
			store_fail(req, "incr: the value of the key is not an integer");
			return;
		}
		if ((req->by > 0 && n > LLONG_MAX - req->by) ||
		    (req->by < 0 && n < LLONG_MIN - req->by)) {
			store_fail(req, "incr: the value would overflow");
			return;
		}
		n += req->by;
		len = snprintf(num, sizeof(num), "%lld", n);
		if (mem_put(st, req, num, (size_t)len, e != NULL ? e->expires_ms : expires, e,
		        slot) != 0)
			return;
		r.number = n;
		break;
	case STORE_DEL:
		if (e == NULL)
			r.status = PC_STORE_MISSING;
		else
			mem_remove(m, slot);
		break;
	case STORE_COMMAND:
		store_fail(req, "not a Redis store");
		return;
	}
	store_done(req, &r);
}

static void
mem_cancel(struct pc_store *st, struct pc_store_req *req)
{
	/* Nothing is ever in flight. */
}

static void
mem_scan(struct pc_store *st, const char *prefix, size_t plen, store_scan_fn each,
    store_scan_done_fn done, void *arg)
{
	struct mem_store *m = st->priv;
	uint64_t now = store_now_ms();

	for (size_t b = 0; b < m->buckets; b++)
		for (struct mem_entry *e = m->tab[b]; e != NULL; e = e->next) {
			if (e->expires_ms != 0 && e->expires_ms <= now)
				continue;
			if (e->klen < plen || memcmp(e->key, prefix, plen) != 0)
				continue;
			if (each(arg, e->key, e->klen, e->value, e->vlen,
			        e->expires_ms ? (int64_t)(e->expires_ms - now) : -1) != 0)
				goto out;
		}
out:
	done(arg, NULL);
}

const struct store_backend store_memory_backend = {
    .scheme = "memory",
    .async = 0,
    .open = mem_open,
    .close = mem_close,
    .submit = mem_submit,
    .cancel = mem_cancel,
    .scan = mem_scan,
};
