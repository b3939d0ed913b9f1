/*
 * kvstore.c - kv on the host's store, and redis.call (DESIGN.md §6, §7).
 *
 * Exports lh_store_init and lh_store_open_lib. A [lua] section whose
 * kv_store names a store other than memory (lmdb:PATH, redis://...,
 * unix:..., or default: the top-level store) gets its kv.get/set/add/
 * incr/del from here instead of kv.c: each is one request to the host's
 * store (plugin.h, THE STORE). Such a store holds octet strings, so kv
 * stores strings and numbers as text and gives strings back; booleans are
 * refused rather than turned into "false", which a script would read as
 * true. Keys are not prefixed, so kv and redis.call see the same keys.
 *
 * Memory and LMDB answer before the request returns: kv returns at once.
 * Redis answers later: kv (and redis.call, which needs Redis) yields the
 * hook's coroutine as the DNS helpers do; the store's callback puts the
 * answer on it and has it resumed at the loop's next turn (the callback
 * may run inside other code: another request, another hook). A Redis
 * request may also be answered at once (the server is down); the
 * callback tells which by whether the request is still being made. A
 * hook the host gives up on (filter_timeout, hook_timeout, the client
 * gone) cancels the request with store_cancel, and the callback never
 * comes. Failures are nil, err, never errors: a script keyed on
 * client input must be able to carry on without its counter.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "luahost.h"

/* redis.call: at most this many arguments (the command's name counts) and
 * this many octets in them all. A script that builds a command from
 * client input (every recipient, say) is stopped here, not in Redis. */
#define KS_CALL_MAX_ARGS 1000
#define KS_CALL_MAX_OCTETS (2 * PC_STORE_VALUE_MAX)
/* Commands redis.call refuses: the store's one connection per process
 * is shared by every section and plugin on it, so a command that blocks
 * it (BLPOP waits for a push) or changes its state (SELECT, MULTI, CLIENT
 * REPLY OFF, SUBSCRIBE) would hold up or garble everyone's requests. For
 * a transaction, use EVAL; XREAD and XREADGROUP are refused with BLOCK. */
static const char *const ks_refused[] = {"ASKING", "AUTH", "BLMOVE", "BLMPOP", "BLPOP", "BRPOP",
    "BRPOPLPUSH", "BZMPOP", "BZPOPMAX", "BZPOPMIN", "CLIENT", "DISCARD", "EXEC", "HELLO", "MONITOR",
    "MULTI", "PSUBSCRIBE", "PSYNC", "PUNSUBSCRIBE", "QUIT", "READONLY", "READWRITE", "REPLCONF",
    "RESET", "SELECT", "SSUBSCRIBE", "SUBSCRIBE", "SUNSUBSCRIBE", "SYNC", "UNSUBSCRIBE", "UNWATCH",
    "WAIT", "WAITAOF", "WATCH"};
/* A TTL longer than this (about 31 years) counts as this, so that the
 * milliseconds cannot overflow. */
#define KS_TTL_MAX_S 1e9
/* Arrays in a Redis reply nest this deep at most (hiredis stops sooner). */
#define KS_REPLY_DEPTH 16

enum ks_op {
	KS_GET = 0,
	KS_SET,
	KS_ADD,
	KS_INCR,
	KS_DEL,
	KS_CALL,
};

/* One request. While the store function runs, calling is set and an
 * answer that comes at once is pushed on L; one that comes later resumes
 * run. */
struct ks_wait {
	struct lh_run *run; /* the hook call, or NULL at the top level */
	lua_State *L; /* the calling thread, while calling */
	const struct pc_host *host;
	struct pc_store_req *req; /* while waiting */
	enum ks_op op;
	int calling;
	int nres; /* calling: the values pushed on L; -1: none yet */
};

/* What ks_push pushes: one answer. */
struct ks_answer {
	struct ks_wait *w;
	const struct pc_store_result *r;
};

static int ks_fail(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ks_fail - nil, err */
static int
ks_fail(lua_State *L, const char *fmt, ...)
{
	va_list ap;

	lua_pushnil(L);
	va_start(ap, fmt);
	lua_pushvfstring(L, fmt, ap);
	va_end(ap);
	return 2;
}

/* ks_reply - a Redis reply as Redis's own Lua scripting converts it:
 * integer, string, false for nil, {ok = status}, {err = error} (inside an
 * array; redis_push handles one on its own), a table for an array */
static void
ks_reply(lua_State *L, const struct pc_store_reply *rp, int depth)
{
	luaL_checkstack(L, 4, "Redis reply nested too deep");
	if (rp == NULL) {
		lua_pushboolean(L, 0);
		return;
	}
	switch (rp->type) {
	case PC_REPLY_NIL:
		lua_pushboolean(L, 0);
		break;
	case PC_REPLY_INTEGER:
		lua_pushinteger(L, (lua_Integer)rp->integer);
		break;
	case PC_REPLY_STRING:
		lua_pushlstring(L, rp->str != NULL ? rp->str : "", rp->str != NULL ? rp->len : 0);
		break;
	case PC_REPLY_STATUS:
	case PC_REPLY_ERROR:
		lua_createtable(L, 0, 1);
		lua_pushlstring(L, rp->str != NULL ? rp->str : "", rp->str != NULL ? rp->len : 0);
		lua_setfield(L, -2, rp->type == PC_REPLY_STATUS ? "ok" : "err");
		break;
	case PC_REPLY_ARRAY:
		if (depth >= KS_REPLY_DEPTH)
			luaL_error(L, "Redis reply nested too deep");
		/* The size is only a hint: memory_limit stops a huge reply
		 * as the elements come in. */
		lua_createtable(L, rp->elements > 1024 ? 1024 : (int)rp->elements, 0);
		for (size_t i = 0; i < rp->elements; i++) {
			ks_reply(L, rp->element != NULL ? rp->element[i] : NULL, depth + 1);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		break;
	default:
		lua_pushboolean(L, 0);
		break;
	}
}

/* ks_push - protected: an answer as the script gets it */
static int
ks_push(lua_State *L)
{
	const struct ks_answer *a = lua_touserdata(L, 1);
	const struct pc_store_result *r = a->r;

	lua_settop(L, 0);
	if (r->status == PC_STORE_FAILED)
		return ks_fail(
		    L, "store failed: %s", r->error != NULL ? r->error : "unknown error");
	switch (a->w->op) {
	case KS_GET:
		if (r->status == PC_STORE_MISSING || r->value == NULL)
			lua_pushnil(L);
		else
			lua_pushlstring(L, r->value, r->len);
		return 1;
	case KS_SET:
	case KS_ADD:
		lua_pushboolean(L, r->status == PC_STORE_OK);
		return 1;
	case KS_INCR:
		lua_pushinteger(L, (lua_Integer)r->number);
		return 1;
	case KS_DEL:
		lua_pushboolean(L, r->status == PC_STORE_OK);
		return 1;
	case KS_CALL:
		if (r->reply == NULL)
			return ks_fail(L, "store failed: no reply");
		if (r->reply->type == PC_REPLY_ERROR) {
			lua_pushnil(L);
			lua_pushlstring(L, r->reply->str != NULL ? r->reply->str : "",
			    r->reply->str != NULL ? r->reply->len : 0);
			return 2;
		}
		ks_reply(L, r->reply, 0);
		return 1;
	}
	return ks_fail(L, "store failed: unexpected answer");
}

/* ks_oom - protected: the message when an answer did not fit */
static int
ks_oom(lua_State *L)
{
	lua_pushliteral(L, "the answer does not fit in memory_limit");
	return 1;
}

/* ks_results - push w's answer r on L (the results of the call): its
 * values, or nil, err when it cannot be built (a reply nested too deep,
 * one that does not fit in the state's memory) */
static int
ks_results(lua_State *L, struct ks_wait *w, const struct pc_store_result *r)
{
	struct ks_answer a = {w, r};
	int top = lua_gettop(L), status;

	lua_pushcfunction(L, ks_push);
	lua_pushlightuserdata(L, &a);
	if ((status = lua_pcall(L, 1, LUA_MULTRET, 0)) == LUA_OK)
		return lua_gettop(L) - top;
	if (status != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
		lua_pushnil(L);
		lua_insert(L, -2);
		return 2;
	}
	lua_settop(L, top);
	lua_pushnil(L);
	lua_pushcfunction(L, ks_oom);
	if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
		lua_pop(L, 1);
		return 1;
	}
	return 2;
}

/* ks_done - the store answers: at once (calling) or later, from the loop */
static void
ks_done(void *arg, const struct pc_store_result *r)
{
	struct ks_wait *w = arg;
	struct lh_run *run = w->run;
	lua_State *L;
	int n;

	w->req = NULL;
	if (w->calling) {
		w->nres = ks_results(w->L, w, r);
		return;
	}
	/* The answer waits on the suspended coroutine; it is resumed from
	 * the loop, not from inside whatever called us. */
	L = run->st->L;
	n = ks_results(L, w, r);
	free(w);
	if (!lua_checkstack(run->co, n)) {
		lua_pop(L, n); /* no room: the call returns nothing */
		n = 0;
	}
	lua_xmove(L, run->co, n);
	lh_wait_done_later(run, n);
}

/* ks_cancel - the hook call is dropped: forget the request; the dead
 * coroutine is not touched */
static void
ks_cancel(struct lh_wait *arg)
{
	struct ks_wait *w = (struct ks_wait *)arg;

	if (w->req != NULL)
		w->host->store_cancel(w->req);
	free(w);
}

/* ks_begin - a request of the calling thread, before the store is asked.
 * A store that answers later (Redis) needs a hook's coroutine to yield:
 * at the top level, or where Lua cannot yield, that is a script error, as
 * for the DNS helpers; in on_disconnect (which cannot wait) nil, err.
 * NULL: *nret values are pushed (the error). */
static struct ks_wait *
ks_begin(lua_State *L, enum ks_op op, const char *what, int *nret)
{
	struct lh_state *st = lh_state_of(L);
	struct lh_instance *in = st->in;
	struct lh_run *run = lh_current(L);
	struct ks_wait *w;

	if (in->store_redis) {
		if (run == NULL)
			luaL_error(L,
			    "%s: kv_store %s waits for its answers, which the script's top level "
			    "cannot: use it in hooks",
			    what, in->host->store_name(in->store));
		if (run->hook == LH_DISCONNECT) {
			*nret = ks_fail(L, "%s cannot wait in on_disconnect", what);
			return NULL;
		}
		if (!lua_isyieldable(L))
			luaL_error(L,
			    "%s cannot wait here (in a metamethod, an iterator or a callback)",
			    what);
	}
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		*nret = ks_fail(L, "%s: out of memory", what);
		return NULL;
	}
	w->run = run;
	w->L = L;
	w->host = in->host;
	w->op = op;
	w->calling = 1;
	w->nres = -1;
	return w;
}

/* ks_end - the store function returned req: the answer that came at
 * once, or yield until it comes */
static int
ks_end(lua_State *L, struct ks_wait *w, struct pc_store_req *req, const char *what)
{
	int n = w->nres;

	w->calling = 0;
	if (n >= 0 || req == NULL) {
		free(w);
		if (n < 0)
			return ks_fail(L, "store failed: %s got no answer", what);
		return n;
	}
	if (w->run == NULL || !lua_isyieldable(L)) {
		/* A store that answers later, which ks_begin did not know:
		 * it cannot be waited for here. */
		w->host->store_cancel(req);
		free(w);
		return ks_fail(L, "%s cannot wait here", what);
	}
	w->req = req;
	return lh_wait_start(L, w, ks_cancel);
}

/* ks_key - the key argument; NULL with nil, err pushed when it is empty
 * or longer than the store takes (a key made of client input may be) */
static const char *
ks_key(lua_State *L, const char *what, size_t *len)
{
	const char *key = luaL_checklstring(L, 1, len);

	if (*len == 0 || *len > PC_STORE_KEY_MAX) {
		/* lua_pushfstring knows no %zu */
		ks_fail(L, "%s: a key is 1 to %d octets, not %d", what, PC_STORE_KEY_MAX,
		    (int)(*len < INT_MAX ? *len : INT_MAX));
		return NULL;
	}
	return key;
}

/* ks_ttl - an optional ttl in seconds (fractions too) at idx, in
 * milliseconds; 0 (none) for nothing or <= 0 */
static unsigned long long
ks_ttl(lua_State *L, int idx)
{
	lua_Number t = luaL_optnumber(L, idx, 0);
	unsigned long long ms;

	if (!(t > 0))
		return 0;
	if (t > KS_TTL_MAX_S)
		t = KS_TTL_MAX_S;
	ms = (unsigned long long)(t * 1000.0 + 0.5);
	return ms != 0 ? ms : 1;
}

/* ks_number - the number at idx as the store keeps it: an integer (or a
 * float with an integral value) as one ("5", not "5.0"), else the
 * shortest text that reads back the same */
static size_t
ks_number(lua_State *L, int idx, char *buf, size_t len)
{
	lua_Integer i;
	lua_Number d;

	if (lua_isinteger(L, idx))
		return (size_t)snprintf(buf, len, LUA_INTEGER_FMT, lua_tointeger(L, idx));
	d = lua_tonumber(L, idx);
	if (lua_numbertointeger(d, &i) && (lua_Number)i == d)
		return (size_t)snprintf(buf, len, LUA_INTEGER_FMT, i);
	snprintf(buf, len, "%.15g", d);
	if (strtod(buf, NULL) != d)
		snprintf(buf, len, "%.17g", d);
	return strlen(buf);
}

/* ks_value - the value argument at idx: a string, or a number as text */
static const char *
ks_value(lua_State *L, int idx, size_t *len, char *buf, size_t buflen)
{
	int t = lua_type(L, idx);

	if (t == LUA_TNUMBER) {
		*len = ks_number(L, idx, buf, buflen);
		return buf;
	}
	if (t != LUA_TSTRING)
		luaL_argerror(L, idx,
		    t == LUA_TBOOLEAN ? "kv on a store holds strings and numbers, not booleans "
		                        "(store 1 or 0)"
		                      : "kv on a store holds strings and numbers");
	return lua_tolstring(L, idx, len);
}

/* ks_get - kv.get(key): the string, nil, or nil, err */
static int
ks_get(lua_State *L)
{
	struct lh_instance *in = lh_state_of(L)->in;
	size_t len;
	const char *key = ks_key(L, "kv.get", &len);
	struct ks_wait *w;
	int n;

	if (key == NULL)
		return 2;
	if ((w = ks_begin(L, KS_GET, "kv.get", &n)) == NULL)
		return n;
	return ks_end(L, w, in->host->store_get(in->store, key, len, ks_done, w), "kv.get");
}

/* ks_write - kv.set and kv.add (key, value [, ttl]) */
static int
ks_write(lua_State *L, enum ks_op op)
{
	const char *what = op == KS_SET ? "kv.set" : "kv.add";
	struct lh_instance *in = lh_state_of(L)->in;
	char num[64];
	size_t klen, vlen;
	const char *key = ks_key(L, what, &klen);
	const char *value;
	unsigned long long ttl;
	struct ks_wait *w;
	int n;

	if (key == NULL)
		return 2;
	value = ks_value(L, 2, &vlen, num, sizeof(num));
	ttl = ks_ttl(L, 3);
	if (vlen > PC_STORE_VALUE_MAX)
		return ks_fail(L, "%s: value longer than %d octets", what, PC_STORE_VALUE_MAX);
	if ((w = ks_begin(L, op, what, &n)) == NULL)
		return n;
	return ks_end(L, w,
	    in->host->store_set(
	        in->store, key, klen, value, vlen, ttl, op == KS_ADD ? PC_STORE_NX : 0, ks_done, w),
	    what);
}

static int
ks_set(lua_State *L)
{
	return ks_write(L, KS_SET);
}

static int
ks_add(lua_State *L)
{
	return ks_write(L, KS_ADD);
}

/* ks_incr - kv.incr(key [, n [, ttl]]): the new number; n is an integer
 * (the store counts in integers); the ttl is set by the increment that
 * makes the key */
static int
ks_incr(lua_State *L)
{
	struct lh_instance *in = lh_state_of(L)->in;
	size_t len;
	const char *key = ks_key(L, "kv.incr", &len);
	lua_Integer by;
	unsigned long long ttl;
	struct ks_wait *w;
	int n;

	if (key == NULL)
		return 2;
	by = luaL_optinteger(L, 2, 1);
	ttl = ks_ttl(L, 3);
	if ((w = ks_begin(L, KS_INCR, "kv.incr", &n)) == NULL)
		return n;
	return ks_end(L, w,
	    in->host->store_incr(in->store, key, len, (long long)by, ttl, ks_done, w), "kv.incr");
}

/* ks_del - kv.del(key): true if it was there */
static int
ks_del(lua_State *L)
{
	struct lh_instance *in = lh_state_of(L)->in;
	size_t len;
	const char *key = ks_key(L, "kv.del", &len);
	struct ks_wait *w;
	int n;

	if (key == NULL)
		return 2;
	if ((w = ks_begin(L, KS_DEL, "kv.del", &n)) == NULL)
		return n;
	return ks_end(L, w, in->host->store_del(in->store, key, len, ks_done, w), "kv.del");
}

/* ks_allowed - may redis.call send this command (its arguments on the
 * stack from 1)? See ks_refused. */
static int
ks_allowed(lua_State *L, int argc)
{
	const char *cmd = lua_tostring(L, 1);

	for (size_t i = 0; i < sizeof(ks_refused) / sizeof(ks_refused[0]); i++) {
		if (strcasecmp(cmd, ks_refused[i]) == 0)
			return 0;
	}
	if (strcasecmp(cmd, "XREAD") == 0 || strcasecmp(cmd, "XREADGROUP") == 0) {
		for (int i = 2; i <= argc; i++) {
			if (strcasecmp(lua_tostring(L, i), "BLOCK") == 0)
				return 0;
		}
	}
	return 1;
}

/* redis_call - redis.call(cmd, ...): the reply (see ks_reply), or nil,
 * err (an error reply's text, or why the store failed) */
static int
redis_call(lua_State *L)
{
	struct lh_instance *in = lh_state_of(L)->in;
	int argc = lua_gettop(L), n;
	size_t total = 0;
	const char **argv;
	size_t *argvlen;
	struct pc_store_req *req;
	struct ks_wait *w;

	if (!in->store_redis)
		return ks_fail(L, "redis.call needs kv_store = redis://... (or unix:...)");
	luaL_checktype(L, 1, LUA_TSTRING);
	if (argc > KS_CALL_MAX_ARGS)
		return ks_fail(L, "redis.call: %d arguments, more than %d", argc, KS_CALL_MAX_ARGS);
	/* Every argument as a string on the stack: numbers as kv stores them. */
	for (int i = 1; i <= argc; i++) {
		int t = lua_type(L, i);
		size_t len;
		if (t == LUA_TNUMBER) {
			char num[64];
			len = ks_number(L, i, num, sizeof(num));
			lua_pushlstring(L, num, len);
			lua_replace(L, i);
		} else if (t != LUA_TSTRING) {
			return luaL_argerror(L, i, "redis.call takes strings and numbers");
		}
		lua_tolstring(L, i, &len);
		total += len;
		if (total > KS_CALL_MAX_OCTETS)
			return ks_fail(L, "redis.call: arguments longer than %d octets in all",
			    KS_CALL_MAX_OCTETS);
	}
	if (!ks_allowed(L, argc))
		return ks_fail(L,
		    "redis.call: %s is not allowed (it blocks or changes the connection every "
		    "user of the store shares)",
		    lua_tostring(L, 1));
	if ((w = ks_begin(L, KS_CALL, "redis.call", &n)) == NULL)
		return n;
	/* The store copies what it keeps (plugin.h): the arguments may
	 * point into the stack, and the arrays go when the call returns. */
	if ((argv = malloc((size_t)argc * (sizeof(*argv) + sizeof(*argvlen)))) == NULL) {
		free(w);
		return ks_fail(L, "redis.call: out of memory");
	}
	argvlen = (size_t *)(void *)(argv + argc);
	for (int i = 1; i <= argc; i++)
		argv[i - 1] = lua_tolstring(L, i, &argvlen[i - 1]);
	req = in->host->store_command(in->store, (size_t)argc, argv, argvlen, ks_done, w);
	free(argv);
	return ks_end(L, w, req, "redis.call");
}

/* lh_store_init - kv_store: the store kv uses, opened in init. memory (or
 * none given, or a top-level store that is memory) leaves kv to kv.c. */
int
lh_store_init(struct lh_instance *in, struct pc_init *init)
{
	const struct pc_host *host = init->host;
	const char *spec = in->kv_spec, *name;
	struct pc_store *st;

	if (spec == NULL || strcmp(spec, "memory") == 0)
		return 0;
	if (strcmp(spec, "default") == 0)
		spec = NULL;
	if ((st = host->store_open(in->self, spec, init->err, init->errlen)) == NULL) {
		if (init->err[0] == '\0')
			snprintf(
			    init->err, init->errlen, "kv_store: cannot open \"%s\"", in->kv_spec);
		init->err_line = in->kv_spec_line;
		return -1;
	}
	name = host->store_name(st);
	if (name == NULL || strcmp(name, "memory") == 0)
		return 0;
	in->store = st;
	in->store_redis = strncmp(name, "redis://", 8) == 0 || strncmp(name, "unix:", 5) == 0;
	return 0;
}

/* lh_store_open_lib - the kv global for a section on a store, and the
 * redis global for every section */
void
lh_store_open_lib(lua_State *L, struct lh_instance *in)
{
	static const luaL_Reg kv_fns[] = {
	    {"get", ks_get},
	    {"set", ks_set},
	    {"add", ks_add},
	    {"incr", ks_incr},
	    {"del", ks_del},
	    {NULL, NULL},
	};
	static const luaL_Reg redis_fns[] = {
	    {"call", redis_call},
	    {NULL, NULL},
	};

	if (in->store != NULL) {
		luaL_newlib(L, kv_fns);
		lua_setglobal(L, "kv");
	}
	luaL_newlib(L, redis_fns);
	lua_setglobal(L, "redis");
}
