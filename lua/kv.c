/*
 * kv.c - kv.get/set/add/incr/del (DESIGN.md §6): an in-process store of
 * strings, numbers and booleans with an optional time to live.
 *
 * Exports lh_kv_open, lh_kv_attach and lh_kv_detach. The table lives in
 * lua.so itself, not in a Lua state, so every [lua] section shares it and
 * it survives a reload; for the same reason no state's memory_limit
 * covers it. kv_max_memory does: the store counts what its entries take
 * from malloc (keys, values, the entries and the bucket array), and a
 * write that would go over the limit, once expired entries are dropped,
 * fails with nil, "kv store full". Without it a script keyed on client
 * input (one entry per address, per sender) grows the daemon without end.
 * kv_max_entries bounds the number of entries the same way: millions of
 * tiny entries fit in the memory a few large values take, and cost what
 * memory does not show (see KV_DEFAULT_ENTRIES). Each limit is the
 * largest of the [lua] sections loaded (sections that do not give it do
 * not count), or its default.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luahost.h"

/* The longest string value. Not a key: every [lua] section reads the
 * one store, so a value must fit in the smallest Lua state that may
 * kv.get it (memory_limit is at least 1M) and be cheap to copy on each
 * get; kv_max_memory already bounds what all values take together, and
 * bigger state belongs in a file or Redis, not in a shared cache. */
#define KV_MAX_VALUE (64 * 1024)
#define KV_DEFAULT_LIMIT ((size_t)64 * 1024 * 1024)
/* A full store walks every entry to drop the expired ones (at most once
 * a KV_SWEEP_EVERY_MS, and at each doubling of the table), holding the
 * event loop meanwhile: about 20 ms for a million entries on a current
 * x86 server, a second for ten million (LH_KV_MAX_ENTRIES, the largest
 * value allowed). A million is more than the default 64M holds anyway
 * (an entry costs 96 octets at least), so the default bites only when
 * kv_max_memory is raised, which is when it is needed. */
#define KV_DEFAULT_ENTRIES ((size_t)1000000)

/* A full store sweeps expired entries at most this often (a sweep walks
 * every entry: doing it on each refused write would let a loop of writes
 * stall the daemon), and says so in the log at most this often. */
#define KV_SWEEP_EVERY_MS 1000
#define KV_WARN_EVERY_MS 60000

struct kv_entry {
	struct kv_entry *next;
	int type; /* LUA_TSTRING, LUA_TNUMBER, LUA_TBOOLEAN */
	char *s;
	size_t slen;
	lua_Number n;
	int b;
	uint64_t expires_ms; /* 0: never */
	size_t klen;
	char key[]; /* klen octets and a '\0' */
};

static struct kv_entry **kv_tab;
static size_t kv_buckets, kv_count;
static size_t kv_bytes; /* what the store takes from malloc, all told */
static size_t kv_limit = KV_DEFAULT_LIMIT;
static size_t kv_max_entries = KV_DEFAULT_ENTRIES;
static uint64_t kv_next_expiry; /* no entry expires before this; 0: none has a ttl */
static uint64_t kv_last_sweep_ms, kv_last_warn_ms;
static unsigned long kv_refused; /* writes refused since the last warning */
static struct lh_instance *kv_users; /* the loaded sections, for kv_limit */

static size_t kv_cost(size_t n);
static size_t kv_entry_cost(const struct kv_entry *e);
static size_t kv_hash(const char *k, size_t len);
static void kv_entry_free(struct kv_entry *e);
static void kv_sweep(uint64_t now);
static void kv_grow(void);
static struct kv_entry *kv_find(const char *key, size_t len, struct kv_entry ***slot);
static int kv_fits(size_t need, size_t entries);
static int kv_room(size_t need, size_t entries);
static int kv_fail(lua_State *L, const char *what, const char *why);
static int check_value(lua_State *L, int idx);
static uint64_t ttl_ms(lua_State *L, int idx);
static struct kv_entry *kv_insert(const char *key, size_t len);
static void kv_push(lua_State *L, const struct kv_entry *e);
static int kv_get(lua_State *L);
static int kv_store(lua_State *L, int replace);
static int kv_set(lua_State *L);
static int kv_add(lua_State *L);
static int kv_incr(lua_State *L);
static int kv_del(lua_State *L);
static void kv_relimit(void);

/* kv_cost - what an n-octet malloc really takes: glibc's chunks carry an
 * 8-octet header and come in multiples of 16, 32 at the least. Other
 * allocators are in the same range. */
static size_t
kv_cost(size_t n)
{
	size_t c = (n + 8 + 15) & ~(size_t)15;

	return c < 32 ? 32 : c;
}

/* kv_entry_cost - an entry with its key and its value */
static size_t
kv_entry_cost(const struct kv_entry *e)
{
	size_t c = kv_cost(sizeof(*e) + e->klen + 1);

	if (e->type == LUA_TSTRING)
		c += kv_cost(e->slen + 1);
	return c;
}

/* kv_hash - FNV-1a */
static size_t
kv_hash(const char *k, size_t len)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)k[i];
		h *= 1099511628211ULL;
	}
	return (size_t)h;
}

/* kv_entry_free - an entry that is out of the table */
static void
kv_entry_free(struct kv_entry *e)
{
	kv_bytes -= kv_entry_cost(e);
	kv_count--;
	free(e->s);
	free(e);
}

/* kv_sweep - drop what has expired, and note when the next one will */
static void
kv_sweep(uint64_t now)
{
	uint64_t next = 0;

	kv_last_sweep_ms = now;
	for (size_t i = 0; i < kv_buckets; i++) {
		struct kv_entry **pp = &kv_tab[i];
		while (*pp != NULL) {
			struct kv_entry *e = *pp;
			if (e->expires_ms != 0 && e->expires_ms <= now) {
				*pp = e->next;
				kv_entry_free(e);
				continue;
			}
			if (e->expires_ms != 0 && (next == 0 || e->expires_ms < next))
				next = e->expires_ms;
			pp = &e->next;
		}
	}
	kv_next_expiry = next;
}

/* kv_grow - double the buckets (and sweep while we are at it); the table
 * stays as it is when the new array does not fit in the limit */
static void
kv_grow(void)
{
	size_t nb = kv_buckets ? kv_buckets * 2 : 1024;
	size_t more = kv_cost(nb * sizeof(struct kv_entry *)) -
	    (kv_buckets ? kv_cost(kv_buckets * sizeof(struct kv_entry *)) : 0);
	struct kv_entry **nt;

	if (kv_bytes + more > kv_limit && kv_buckets != 0)
		return; /* longer chains, still correct */
	if ((nt = calloc(nb, sizeof(*nt))) == NULL)
		return;
	kv_sweep(lh_now_ms());
	for (size_t i = 0; i < kv_buckets; i++) {
		struct kv_entry *e = kv_tab[i], *next;
		for (; e != NULL; e = next) {
			size_t h = kv_hash(e->key, e->klen) % nb;
			next = e->next;
			e->next = nt[h];
			nt[h] = e;
		}
	}
	free(kv_tab);
	kv_tab = nt;
	kv_buckets = nb;
	kv_bytes += more;
}

/* kv_find - the live entry for key, or NULL (an expired one is dropped);
 * *slot is where a new one goes */
static struct kv_entry *
kv_find(const char *key, size_t len, struct kv_entry ***slot)
{
	uint64_t now = lh_now_ms();
	struct kv_entry **pp;

	if (kv_buckets == 0)
		kv_grow();
	if (kv_buckets == 0)
		return NULL;
	pp = &kv_tab[kv_hash(key, len) % kv_buckets];
	if (slot != NULL)
		*slot = pp;
	for (; *pp != NULL; pp = &(*pp)->next) {
		struct kv_entry *e = *pp;
		if (e->klen != len || memcmp(e->key, key, len) != 0)
			continue;
		if (e->expires_ms != 0 && e->expires_ms <= now) {
			*pp = e->next;
			kv_entry_free(e);
			return NULL;
		}
		return e;
	}
	return NULL;
}

/* kv_fits - would need more octets and entries more entries stay within
 * the limits? (Taking nothing always fits, even over a limit a reload
 * lowered.) */
static int
kv_fits(size_t need, size_t entries)
{
	return (need == 0 || kv_bytes + need <= kv_limit) &&
	    (entries == 0 || kv_count + entries <= kv_max_entries);
}

/* kv_room - may the store take need more octets and entries more entries?
 * A full store first drops what has expired (at most once a
 * KV_SWEEP_EVERY_MS). */
static int
kv_room(size_t need, size_t entries)
{
	uint64_t now;

	if (kv_fits(need, entries))
		return 1;
	now = lh_now_ms();
	if (kv_next_expiry != 0 && kv_next_expiry <= now &&
	    now >= kv_last_sweep_ms + KV_SWEEP_EVERY_MS)
		kv_sweep(now);
	return kv_fits(need, entries);
}

/* kv_fail - a write the store cannot take: nil, why (not an error, so a
 * script that counts with kv carries on without its counter). A full
 * store is logged once a KV_WARN_EVERY_MS, not once a write. */
static int
kv_fail(lua_State *L, const char *what, const char *why)
{
	struct lh_state *st = lh_state_of(L);
	struct lh_run *run = lh_current(L);
	uint64_t now = lh_now_ms();

	kv_refused++;
	if (kv_last_warn_ms == 0 || now >= kv_last_warn_ms + KV_WARN_EVERY_MS) {
		lh_log(st, run != NULL ? run->call : NULL, PC_LOG_WARN,
		    "%s: %s (%zu of kv_max_entries %zu entries, %zu of kv_max_memory %zu octets); "
		    "%lu write(s) refused; the next refusals are logged in %d s",
		    what, why, kv_count, kv_max_entries, kv_bytes, kv_limit, kv_refused,
		    KV_WARN_EVERY_MS / 1000);
		kv_last_warn_ms = now;
		kv_refused = 0;
	}
	lua_pushnil(L);
	lua_pushstring(L, why);
	return 2;
}

/* check_value - only what kv can store, before anything changes; the
 * octets a string value adds */
static int
check_value(lua_State *L, int idx)
{
	int t = lua_type(L, idx);
	size_t len;

	if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
		luaL_argerror(L, idx, "kv stores strings, numbers and booleans");
	if (t == LUA_TSTRING && (lua_tolstring(L, idx, &len), len > KV_MAX_VALUE))
		luaL_argerror(L, idx, "value longer than 64 KB");
	return t;
}

/* ttl_ms - an optional ttl in seconds at idx; 0 means none */
static uint64_t
ttl_ms(lua_State *L, int idx)
{
	lua_Number ttl = luaL_optnumber(L, idx, 0);

	if (ttl <= 0)
		return 0;
	return lh_now_ms() + (uint64_t)(ttl * 1000.0 + 0.5);
}

/* kv_insert - a new (number) entry for key, or NULL when malloc fails;
 * the caller made room */
static struct kv_entry *
kv_insert(const char *key, size_t len)
{
	struct kv_entry **slot, *e;

	if (kv_count >= kv_buckets)
		kv_grow();
	kv_find(key, len, &slot);
	if ((e = calloc(1, sizeof(*e) + len + 1)) == NULL)
		return NULL;
	memcpy(e->key, key, len);
	e->klen = len;
	e->type = LUA_TNUMBER;
	e->next = *slot;
	*slot = e;
	kv_count++;
	kv_bytes += kv_entry_cost(e);
	return e;
}

/* kv_push - an entry's value, or nil */
static void
kv_push(lua_State *L, const struct kv_entry *e)
{
	if (e == NULL)
		lua_pushnil(L);
	else if (e->type == LUA_TSTRING)
		lua_pushlstring(L, e->s, e->slen);
	else if (e->type == LUA_TNUMBER)
		lua_pushnumber(L, e->n);
	else
		lua_pushboolean(L, e->b);
}

/* kv_get - kv.get(key) */
static int
kv_get(lua_State *L)
{
	size_t len;
	const char *key = luaL_checklstring(L, 1, &len);

	kv_push(L, kv_find(key, len, NULL));
	return 1;
}

/* kv_store - set (replace) or add (only if absent) key = value [ttl] */
static int
kv_store(lua_State *L, int replace)
{
	const char *what = replace ? "kv.set" : "kv.add";
	size_t len, slen = 0, old, need;
	const char *key = luaL_checklstring(L, 1, &len);
	uint64_t exp = ttl_ms(L, 3);
	int t = check_value(L, 2);
	const char *s = t == LUA_TSTRING ? lua_tolstring(L, 2, &slen) : NULL;
	struct kv_entry *e;
	char *copy = NULL;

	if ((e = kv_find(key, len, NULL)) != NULL && !replace) {
		lua_pushboolean(L, 0);
		return 1;
	}
	old = e != NULL ? kv_entry_cost(e) : 0;
	need = kv_cost(sizeof(*e) + len + 1) + (s != NULL ? kv_cost(slen + 1) : 0);
	if (!kv_fits(need > old ? need - old : 0, e == NULL)) {
		if (!kv_room(need > old ? need - old : 0, e == NULL))
			return kv_fail(L, what, "kv store full");
		/* The sweep may have dropped e, if it expired just now. */
		if (e != NULL && (e = kv_find(key, len, NULL)) == NULL && !kv_room(need, 1))
			return kv_fail(L, what, "kv store full");
	}
	if (s != NULL && (copy = malloc(slen + 1)) == NULL)
		return kv_fail(L, what, "out of memory");
	if (e == NULL && (e = kv_insert(key, len)) == NULL) {
		free(copy);
		return kv_fail(L, what, "out of memory");
	}
	kv_bytes -= kv_entry_cost(e);
	free(e->s);
	e->s = copy;
	e->type = t;
	if (copy != NULL) {
		memcpy(copy, s, slen + 1);
		e->slen = slen;
	} else if (t == LUA_TNUMBER) {
		e->n = lua_tonumber(L, 2);
	} else {
		e->b = lua_toboolean(L, 2);
	}
	kv_bytes += kv_entry_cost(e);
	e->expires_ms = exp;
	if (exp != 0 && (kv_next_expiry == 0 || exp < kv_next_expiry))
		kv_next_expiry = exp;
	lua_pushboolean(L, 1);
	return 1;
}

/* kv_set - kv.set(key, value [, ttl]) */
static int
kv_set(lua_State *L)
{
	return kv_store(L, 1);
}

/* kv_add - kv.add(key, value [, ttl]) */
static int
kv_add(lua_State *L)
{
	return kv_store(L, 0);
}

/* kv_incr - kv.incr(key [, n [, ttl]]): a new key takes room, a number
 * that changes does not */
static int
kv_incr(lua_State *L)
{
	size_t len;
	const char *key = luaL_checklstring(L, 1, &len);
	lua_Number by = luaL_optnumber(L, 2, 1);
	uint64_t exp = ttl_ms(L, 3);
	struct kv_entry *e = kv_find(key, len, NULL);

	if (e == NULL) {
		if (!kv_room(kv_cost(sizeof(*e) + len + 1), 1))
			return kv_fail(L, "kv.incr", "kv store full");
		if ((e = kv_insert(key, len)) == NULL)
			return kv_fail(L, "kv.incr", "out of memory");
		e->n = 0;
		e->expires_ms = exp; /* the ttl counts from the first incr */
		if (exp != 0 && (kv_next_expiry == 0 || exp < kv_next_expiry))
			kv_next_expiry = exp;
	} else if (e->type != LUA_TNUMBER) {
		return luaL_error(L, "kv.incr: \"%s\" does not hold a number", key);
	}
	e->n += by;
	lua_pushnumber(L, e->n);
	return 1;
}

/* kv_del - kv.del(key) */
static int
kv_del(lua_State *L)
{
	size_t len;
	const char *key = luaL_checklstring(L, 1, &len);
	struct kv_entry **slot, *e = kv_find(key, len, &slot);

	if (e != NULL) {
		for (; *slot != e; slot = &(*slot)->next)
			;
		*slot = e->next;
		kv_entry_free(e);
	}
	lua_pushboolean(L, e != NULL);
	return 1;
}

/* kv_relimit - the largest kv_max_memory and kv_max_entries of the loaded
 * sections */
static void
kv_relimit(void)
{
	uint64_t limit = 0, entries = 0;

	for (struct lh_instance *in = kv_users; in != NULL; in = in->kv_next) {
		if (in->kv_max_memory > limit)
			limit = in->kv_max_memory;
		if (in->kv_max_entries > entries)
			entries = in->kv_max_entries;
	}
	kv_limit = limit != 0 ? (size_t)limit : KV_DEFAULT_LIMIT;
	kv_max_entries = entries != 0 ? (size_t)entries : KV_DEFAULT_ENTRIES;
}

/* lh_kv_attach - a section is loaded: its kv_max_memory and kv_max_entries
 * count. During a reload the old sections count until they are gone. */
void
lh_kv_attach(struct lh_instance *in)
{
	in->kv_next = kv_users;
	kv_users = in;
	kv_relimit();
}

/* lh_kv_detach - a section is gone */
void
lh_kv_detach(struct lh_instance *in)
{
	for (struct lh_instance **pp = &kv_users; *pp != NULL; pp = &(*pp)->kv_next) {
		if (*pp == in) {
			*pp = in->kv_next;
			break;
		}
	}
	kv_relimit();
}

/* lh_kv_open - the kv global */
void
lh_kv_open(lua_State *L)
{
	static const luaL_Reg fns[] = {
	    {"get", kv_get},
	    {"set", kv_set},
	    {"add", kv_add},
	    {"incr", kv_incr},
	    {"del", kv_del},
	    {NULL, NULL},
	};

	luaL_newlib(L, fns);
	lua_setglobal(L, "kv");
}
