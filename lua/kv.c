/*
 * kv.c - kv.get/set/add/incr/del (DESIGN.md §6): an in-process store of
 * strings, numbers and booleans with an optional time to live.
 *
 * Exports lh_kv_open. The table lives in lua.so itself, not in a Lua
 * state, so every [lua] section shares it and it survives a reload.
 * Expired entries are dropped when met, and swept when the table grows;
 * KV_MAX_ENTRIES bounds it, so a script keyed on client input cannot eat
 * the machine's memory.
 */
#include <stdlib.h>
#include <string.h>

#include "luahost.h"

#define KV_MAX_ENTRIES (1u << 20)
#define KV_MAX_VALUE (64 * 1024)

struct kv_entry {
	char *key;
	int type; /* LUA_TSTRING, LUA_TNUMBER, LUA_TBOOLEAN */
	char *s;
	size_t slen;
	lua_Number n;
	int b;
	uint64_t expires_ms; /* 0: never */
	struct kv_entry *next;
};

static struct kv_entry **kv_tab;
static size_t kv_buckets, kv_count;

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

static void
kv_entry_free(struct kv_entry *e)
{
	free(e->key);
	free(e->s);
	free(e);
}

/* kv_sweep - drop what has expired */
static void
kv_sweep(uint64_t now)
{
	for (size_t i = 0; i < kv_buckets; i++) {
		struct kv_entry **pp = &kv_tab[i];
		while (*pp != NULL) {
			struct kv_entry *e = *pp;
			if (e->expires_ms != 0 && e->expires_ms <= now) {
				*pp = e->next;
				kv_entry_free(e);
				kv_count--;
			} else {
				pp = &e->next;
			}
		}
	}
}

/* kv_grow - double the buckets (and sweep while we are at it) */
static void
kv_grow(void)
{
	size_t nb = kv_buckets ? kv_buckets * 2 : 1024;
	struct kv_entry **nt = calloc(nb, sizeof(*nt));

	if (nt == NULL)
		return;
	kv_sweep(lh_now_ms());
	for (size_t i = 0; i < kv_buckets; i++) {
		struct kv_entry *e = kv_tab[i], *next;
		for (; e != NULL; e = next) {
			size_t h = kv_hash(e->key, strlen(e->key)) % nb;
			next = e->next;
			e->next = nt[h];
			nt[h] = e;
		}
	}
	free(kv_tab);
	kv_tab = nt;
	kv_buckets = nb;
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
		if (strcmp(e->key, key) != 0)
			continue;
		if (e->expires_ms != 0 && e->expires_ms <= now) {
			*pp = e->next;
			kv_entry_free(e);
			kv_count--;
			return NULL;
		}
		return e;
	}
	return NULL;
}

/* kv_value - store the Lua value at idx into e */
static void
kv_value(lua_State *L, int idx, struct kv_entry *e)
{
	int t = lua_type(L, idx);
	size_t len;
	const char *s;

	free(e->s);
	e->s = NULL;
	e->type = t;
	switch (t) {
	case LUA_TSTRING:
		s = lua_tolstring(L, idx, &len);
		if (len > KV_MAX_VALUE)
			luaL_argerror(L, idx, "value longer than 64 KB");
		if ((e->s = malloc(len + 1)) == NULL)
			luaL_error(L, "out of memory");
		memcpy(e->s, s, len + 1);
		e->slen = len;
		break;
	case LUA_TNUMBER:
		e->n = lua_tonumber(L, idx);
		break;
	case LUA_TBOOLEAN:
		e->b = lua_toboolean(L, idx);
		break;
	default:
		luaL_argerror(L, idx, "kv stores strings, numbers and booleans");
	}
}

/* check_value - only what kv can store, before anything changes */
static void
check_value(lua_State *L, int idx)
{
	int t = lua_type(L, idx);
	size_t len;

	if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
		luaL_argerror(L, idx, "kv stores strings, numbers and booleans");
	if (t == LUA_TSTRING && (lua_tolstring(L, idx, &len), len > KV_MAX_VALUE))
		luaL_argerror(L, idx, "value longer than 64 KB");
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

/* kv_insert - a new entry for key, or raises when full */
static struct kv_entry *
kv_insert(lua_State *L, const char *key, size_t len)
{
	struct kv_entry **slot, *e;

	if (kv_count >= KV_MAX_ENTRIES) {
		kv_sweep(lh_now_ms());
		if (kv_count >= KV_MAX_ENTRIES)
			luaL_error(L, "kv store full (%d entries)", (int)KV_MAX_ENTRIES);
	}
	if (kv_count >= kv_buckets)
		kv_grow();
	kv_find(key, len, &slot);
	if ((e = calloc(1, sizeof(*e))) == NULL || (e->key = strdup(key)) == NULL) {
		free(e);
		luaL_error(L, "out of memory");
	}
	e->next = *slot;
	*slot = e;
	kv_count++;
	return e;
}

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
	size_t len;
	const char *key = luaL_checklstring(L, 1, &len);
	uint64_t exp = ttl_ms(L, 3);
	struct kv_entry *e;

	check_value(L, 2);
	if ((e = kv_find(key, len, NULL)) != NULL && !replace) {
		lua_pushboolean(L, 0);
		return 1;
	}
	if (e == NULL)
		e = kv_insert(L, key, len);
	kv_value(L, 2, e);
	e->expires_ms = exp;
	lua_pushboolean(L, 1);
	return 1;
}

static int
kv_set(lua_State *L)
{
	return kv_store(L, 1);
}

static int
kv_add(lua_State *L)
{
	return kv_store(L, 0);
}

static int
kv_incr(lua_State *L)
{
	size_t len;
	const char *key = luaL_checklstring(L, 1, &len);
	lua_Number by = luaL_optnumber(L, 2, 1);
	uint64_t exp = ttl_ms(L, 3);
	struct kv_entry *e = kv_find(key, len, NULL);

	if (e == NULL) {
		e = kv_insert(L, key, len);
		e->type = LUA_TNUMBER;
		e->n = 0;
		e->expires_ms = exp; /* the ttl counts from the first incr */
	} else if (e->type != LUA_TNUMBER) {
		return luaL_error(L, "kv.incr: \"%s\" does not hold a number", key);
	}
	e->n += by;
	lua_pushnumber(L, e->n);
	return 1;
}

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
		kv_count--;
	}
	lua_pushboolean(L, e != NULL);
	return 1;
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
