/*
 * host.c - the Lua 5.4 host: the plugin lua.so (DESIGN.md §6).
 *
 * Exports portcullis_plugin, and to the other files of lua.so lh_now_ms,
 * lh_current, lh_state_of, lh_wait_start, lh_wait_done, lh_charge,
 * lh_key_reserved and lh_log. The section keys the host reads are one
 * table (lh_keys[]), parsed with the daemon's option parsers
 * (host->opt_size, host->opt_time). Each [lua NAME] section loads its script
 * into a Lua state of its own; every hook call runs in a coroutine of
 * that state. A helper that waits (DNS, sleep) yields the coroutine and
 * the event loop goes on; its callback resumes it. A count hook enforces
 * an instruction slice (a forced yield, so a busy script cannot starve
 * other sessions) and the wall-clock hook_timeout; an allocator enforces
 * memory_limit. C code that works long without running Lua (the pattern
 * matcher) reports its work with lh_charge, which applies the same slice
 * and limits. SIGHUP builds a new state; sessions keep the one they
 * started with.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <lualib.h>

#include "luahost.h"

/* The count hook runs every LH_COUNT_EVERY instructions. instruction_slice:
 * after that many instructions without a wait, a hook call yields to the
 * event loop, so that one busy script cannot starve the other sessions
 * (the default is about a millisecond of work). Less than LH_COUNT_EVERY
 * cannot be told apart; over LH_MAX_SLICE the stall limit (LH_STALL_MS)
 * yields first anyway, so a bigger number would only pretend. */
#define LH_COUNT_EVERY 1000
#define LH_DEFAULT_SLICE 200000UL
#define LH_MAX_SLICE 100000000UL

/* Inside a metamethod, an iterator or a callback from C a script cannot be
 * made to yield; if it runs that long without a chance to, it is stopped,
 * so that it holds the other sessions up for this long at the most. */
#define LH_STALL_MS 250

#define LH_DEFAULT_MEM (64u * 1024 * 1024)
#define LH_DEFAULT_TIMEOUT_MS 5000

/* pattern_budget: the steps one string.find/match/gsub call (or one
 * gmatch iteration) may take. It stops backtracking patterns that would
 * hold the daemon for hours (".-.-.-.-b" on 3000 octets). An ordinary
 * search through a 1 MB body takes 1 to 3 million steps, a heavy one
 * ("[%w.]+@" through text) about 11 million; 20 million run in about
 * 40 ms, which is how long one call may hold the event loop. */
#define LH_DEFAULT_PATTERN_BUDGET 20000000UL
#define LH_MIN_PATTERN_BUDGET 1000UL

static const char *const hook_names[LH_NHOOKS] = {
    "on_connect", "on_helo", "on_mail", "on_rcpt", "on_data", "on_disconnect"};

/* Coroutines a script makes itself: when one waits for a helper (or is
 * preempted), the wait travels up to the hook's coroutine, which yields to
 * the host, and the answer travels back down. */
static const char prelude[] =
    "local blocked = ...\n"
    "local resume, yield, create, status = coroutine.resume, coroutine.yield, "
    "coroutine.create, coroutine.status\n"
    "local pack, unpack = table.pack, table.unpack\n"
    "local function pass(co, r)\n"
    "  while r[1] and status(co) == 'suspended' and blocked() do\n"
    "    r = pack(resume(co, yield()))\n"
    "  end\n"
    "  return r\n"
    "end\n"
    "coroutine.resume = function(co, ...)\n"
    "  local r = pass(co, pack(resume(co, ...)))\n"
    "  return unpack(r, 1, r.n)\n"
    "end\n"
    "coroutine.wrap = function(f)\n"
    "  local co = create(f)\n"
    "  return function(...)\n"
    "    local r = pass(co, pack(resume(co, ...)))\n"
    "    if not r[1] then error(r[2], 0) end\n"
    "    return unpack(r, 2, r.n)\n"
    "  end\n"
    "end\n";

static void *lh_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
static void lh_count_hook(lua_State *L, lua_Debug *ar);
static int lh_stop(lua_State *L, struct lh_run *run);
static const char *lh_stop_why(struct lh_run *run, char *buf, size_t len);
static int lh_blocked(lua_State *L);
static int lh_load(lua_State *L);
static struct lh_state *lh_state_new(struct lh_instance *in, char *err, size_t errlen);
static void lh_state_unref(struct lh_state *st);
static struct lh_session *lh_session_get(struct lh_instance *in, struct pc_call *call);
static int lh_hook(
    struct lh_instance *in, struct pc_call *call, struct pc_verdict *v, enum lh_hook hook);
static int lh_build(lua_State *L);
static int lh_step(struct lh_run *run, int nargs, struct pc_verdict *v);
static void lh_continue(struct lh_run *run, int nargs);
static void lh_run_free(struct lh_run *run, int cancel_wait);
static void lh_cancel_cb(void *arg);
static void lh_resume_cb(evutil_socket_t fd, short what, void *arg);
static void lh_deadline_cb(evutil_socket_t fd, short what, void *arg);
static void lh_script_error(struct lh_run *run, const char *what);
static int lh_apply(lua_State *L);
static int lh_traceback(lua_State *L);
static void lh_arm_deadline(struct lh_run *run);
struct lh_key;
static int lh_key_set(struct lh_instance *in, struct pc_init *init, const struct lh_key *k,
    const struct pc_option *o);

/* lh_now_ms - a monotonic clock for deadlines */
uint64_t
lh_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* lh_log - a log line for a state's section */
void
lh_log(struct lh_state *st, struct pc_call *call, enum pc_log_level level, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	st->in->host->log(st->in->self, call, level, "%s", buf);
}

/* lh_alloc - the state's allocator: memory_limit is enforced here */
static void *
lh_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct lh_state *st = ud;
	void *n;

	if (ptr == NULL)
		osize = 0;
	if (nsize == 0) {
		free(ptr);
		st->mem -= osize;
		return NULL;
	}
	if (nsize > osize && st->mem_limit != 0 && st->mem + (nsize - osize) > st->mem_limit)
		return NULL; /* Lua raises "not enough memory" */
	if ((n = realloc(ptr, nsize)) == NULL)
		return NULL;
	st->mem = st->mem - osize + nsize;
	return n;
}

/* lh_state_of - the lh_state every thread of a state carries */
struct lh_state *
lh_state_of(lua_State *L)
{
	return *(struct lh_state **)lua_getextraspace(L);
}

/* lh_current - the hook call running in L's state, or NULL */
struct lh_run *
lh_current(lua_State *L)
{
	return lh_state_of(L)->running;
}

/* lh_count_hook - every LH_COUNT_EVERY instructions: deadline and slice */
static void
lh_count_hook(lua_State *L, lua_Debug *ar)
{
	struct lh_state *st = lh_state_of(L);
	struct lh_run *run = st->running;

	if (run == NULL)
		return;
	if (run->killed) {
		/* In a hook, lua_yield only marks the yield; it happens
		 * when the hook returns, so return now. */
		if (lua_isyieldable(L)) {
			lua_yield(L, 0);
			return;
		}
		lh_stop(L, run);
	}
	if (lua_gethookcount(L) != LH_COUNT_EVERY)
		lua_sethook(L, lh_count_hook, LUA_MASKCOUNT, LH_COUNT_EVERY); /* see lh_stop */
	uint64_t now = lh_now_ms();

	run->count += LH_COUNT_EVERY;
	if (now >= run->slice_start_ms + LH_STALL_MS && now < run->deadline_ms &&
	    lua_isyieldable(L)) {
		/* A slow slice (allocations, a slow machine): give the
		 * others their turn now, whatever the count says. */
		run->count = 0;
		st->preempted = 1;
		lua_yield(L, 0);
		return;
	}
	if (now >= run->deadline_ms || now >= run->slice_start_ms + LH_STALL_MS) {
		/* Stopped for good: a yield cannot be caught by pcall, and the
		 * host never resumes a killed run. Where no yield is possible,
		 * an error (and the next yieldable point yields). */
		run->killed = now >= run->deadline_ms ? 1 : 2;
		if (lua_isyieldable(L)) {
			lua_yield(L, 0);
			return;
		}
		lh_stop(L, run);
	}
	if (run->count >= st->in->instruction_slice && lua_isyieldable(L)) {
		run->count = 0;
		st->preempted = 1;
		lua_yield(L, 0);
	}
}

/* lh_stop_why - why the count hook (or lh_charge) stopped run */
static const char *
lh_stop_why(struct lh_run *run, char *buf, size_t len)
{
	if (run->killed == 1)
		snprintf(buf, len, "hook timeout (%d ms)", (int)run->st->in->hook_timeout_ms);
	else
		snprintf(buf, len,
		    "ran %d ms without a chance to yield (in a metamethod, an iterator or a "
		    "callback)",
		    LH_STALL_MS);
	return buf;
}

/* lh_stop - raise the error of a stopped run where it cannot yield. A
 * pcall may catch it; so the count hook now runs at every instruction of
 * this thread and raises again, until the error has left every pcall and
 * reached a point that can yield (then the host drops the run). */
static int
lh_stop(lua_State *L, struct lh_run *run)
{
	char msg[160];

	lua_sethook(L, lh_count_hook, LUA_MASKCOUNT, 1);
	return luaL_error(L, "%s", lh_stop_why(run, msg, sizeof(msg)));
}

/* lh_charge - see luahost.h. The rules of the count hook, for work it
 * does not see: past the deadline, or holding the loop LH_STALL_MS where
 * no yield is possible, the hook call is stopped; a full slice yields. */
int
lh_charge(lua_State *L, unsigned long steps, int can_yield)
{
	struct lh_state *st = lh_state_of(L);
	struct lh_run *run = st->running;
	uint64_t now = lh_now_ms();
	int yieldable = can_yield && lua_isyieldable(L);

	if (run == NULL) {
		if (st->loading && now >= st->load_deadline_ms)
			luaL_error(L, "the script's top level ran over hook_timeout");
		return 0;
	}
	run->count += steps;
	if (!run->killed && now >= run->deadline_ms)
		run->killed = 1;
	if (!run->killed && !yieldable && now >= run->slice_start_ms + LH_STALL_MS)
		run->killed = 2;
	if (run->killed) {
		if (yieldable)
			return 1; /* the host sees killed and never resumes */
		return lh_stop(L, run);
	}
	if (yieldable &&
	    (run->count >= st->in->instruction_slice || now >= run->slice_start_ms + LH_STALL_MS)) {
		run->count = 0;
		st->preempted = 1;
		return 1;
	}
	return 0;
}

/* lh_blocked - for the coroutine wrappers: did this yield come from us? */
static int
lh_blocked(lua_State *L)
{
	struct lh_state *st = lh_state_of(L);

	lua_pushboolean(L,
	    st->preempted ||
	        (st->running != NULL && (st->running->waiting || st->running->killed)));
	return 1;
}

/* lh_load - load() for text chunks only, in the script's globals */
static int
lh_load(lua_State *L)
{
	int has_env = !lua_isnoneornil(L, 4);

	lua_settop(L, 4);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_pushliteral(L, "t");
	if (has_env)
		lua_pushvalue(L, 4);
	else
		lua_pushglobaltable(L);
	lua_call(L, 4, LUA_MULTRET);
	return lua_gettop(L) - 4;
}

/* lh_setmetatable - setmetatable, refusing finalizers */
static int
lh_setmetatable(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TTABLE) {
		lua_pushliteral(L, "__gc");
		if (lua_rawget(L, 2) != LUA_TNIL)
			return luaL_error(L, "setmetatable: __gc (finalizers) is not allowed");
		lua_pop(L, 1);
	}
	lua_settop(L, 2);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, 2, 1);
	return 1;
}

/* sandbox - what a script may use (DESIGN §6) */
static void
sandbox(lua_State *L, struct lh_instance *in)
{
	static const char *const gone[] = {"dofile", "loadfile", "collectgarbage", "require"};
	static const char *const os_gone[] = {
	    "execute", "exit", "remove", "rename", "getenv", "tmpname", "setlocale"};
	static const luaL_Reg libs[] = {
	    {LUA_GNAME, luaopen_base},
	    {LUA_STRLIBNAME, luaopen_string},
	    {LUA_TABLIBNAME, luaopen_table},
	    {LUA_MATHLIBNAME, luaopen_math},
	    {LUA_UTF8LIBNAME, luaopen_utf8},
	    {LUA_COLIBNAME, luaopen_coroutine},
	    {LUA_OSLIBNAME, luaopen_os},
	};

	for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
		luaL_requiref(L, libs[i].name, libs[i].func, 1);
		lua_pop(L, 1);
	}
	for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
		lua_pushnil(L);
		lua_setglobal(L, gone[i]);
	}
	lua_getglobal(L, "os");
	for (size_t i = 0; i < sizeof(os_gone) / sizeof(os_gone[0]); i++) {
		lua_pushnil(L);
		lua_setfield(L, -2, os_gone[i]);
	}
	lua_pop(L, 1);
	lua_getglobal(L, "string");
	lua_pushnil(L);
	lua_setfield(L, -2, "dump");
	lua_pop(L, 1);
	/* Lua's matcher cannot be interrupted: ours counts its steps. */
	lh_pattern_open(L, in->pattern_budget);
	/* setmetatable: no __gc (finalizers run with the count hook off, so a
	 * looping one would hang the daemon) */
	lua_getglobal(L, "setmetatable");
	lua_pushcclosure(L, lh_setmetatable, 1);
	lua_setglobal(L, "setmetatable");
	/* load: text only (no bytecode, which can break the VM) */
	lua_getglobal(L, "load");
	lua_pushcclosure(L, lh_load, 1);
	lua_setglobal(L, "load");
	/* The string metatable is shared by every string: not the script's
	 * to change. */
	lua_pushliteral(L, "");
	lua_getmetatable(L, -1);
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 2);
}

/* load_script - the protected part of making a state */
static int
load_script(lua_State *L)
{
	struct lh_state *st = lua_touserdata(L, 1);
	struct lh_instance *in = st->in;

	sandbox(L, in);
	lh_api_open(L, in);
	lh_dns_open(L);
	if (in->store == NULL)
		lh_kv_open(L);
	lh_store_open_lib(L, in);
	if (luaL_loadbufferx(L, prelude, sizeof(prelude) - 1, "=prelude", "t") != LUA_OK)
		return lua_error(L);
	lua_pushcfunction(L, lh_blocked);
	lua_call(L, 1, 0);
	if (luaL_loadfilex(L, in->script, "t") != LUA_OK)
		return lua_error(L);
	lua_call(L, 0, 0);
	for (int h = 0; h < LH_NHOOKS; h++) {
		int t = lua_getglobal(L, hook_names[h]);
		if (t == LUA_TFUNCTION) {
			st->hooks[h] = luaL_ref(L, LUA_REGISTRYINDEX);
			continue;
		}
		if (t != LUA_TNIL)
			return luaL_error(
			    L, "%s is a %s, not a function", hook_names[h], lua_typename(L, t));
		lua_pop(L, 1);
	}
	return 0;
}

/* load_hook - a top level that never ends must not hang the start */
static void
load_hook(lua_State *L, lua_Debug *ar)
{
	struct lh_state *st = lh_state_of(L);

	if (st->loading && lh_now_ms() >= st->load_deadline_ms)
		luaL_error(L, "the script's top level ran over hook_timeout");
}

/* lh_state_new - a state with the script loaded, or NULL with err */
static struct lh_state *
lh_state_new(struct lh_instance *in, char *err, size_t errlen)
{
	struct lh_state *st = calloc(1, sizeof(*st));
	lua_State *L;

	if (st == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	st->in = in;
	st->refs = 1;
	st->mem_limit = in->mem_limit;
	for (int h = 0; h < LH_NHOOKS; h++)
		st->hooks[h] = LUA_NOREF;
	if ((L = lua_newstate(lh_alloc, st)) == NULL) {
		free(st);
		snprintf(err, errlen, "cannot create a Lua state");
		return NULL;
	}
	st->L = L;
	*(struct lh_state **)lua_getextraspace(L) = st;
	st->loading = 1;
	st->load_deadline_ms = lh_now_ms() + in->hook_timeout_ms;
	lua_sethook(L, load_hook, LUA_MASKCOUNT, LH_COUNT_EVERY * 100);
	lua_pushcfunction(L, load_script);
	lua_pushlightuserdata(L, st);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		snprintf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
		lua_close(L);
		free(st);
		return NULL;
	}
	lua_sethook(L, NULL, 0, 0);
	st->loading = 0;
	lua_gc(L, LUA_GCCOLLECT);
	return st;
}

/* lh_state_unref - the last session (or the instance) lets go */
static void
lh_state_unref(struct lh_state *st)
{
	if (st == NULL || --st->refs > 0)
		return;
	lua_close(st->L);
	free(st);
}

/* ---- the plugin ---- */

/* The section keys the host reads (the script's `config` never sees them),
 * with their bounds. kv_max_memory and kv_max_entries bound the store
 * every section shares (kv.c says how); kv_store the store kv uses instead
 * (kvstore.c). */
enum lh_key_kind {
	LH_KEY_PATH,
	LH_KEY_STORE, /* kv_store: a store spec, opened by kvstore.c */
	LH_KEY_SIZE, /* host->opt_size: octets, or a count ("200k" too) */
	LH_KEY_TIME, /* host->opt_time: milliseconds */
};

struct lh_key {
	const char *name;
	enum lh_key_kind kind;
	size_t off; /* of the uint64_t in struct lh_instance; 0 for script, kv_store */
	unsigned long long min, max; /* max 0: none */
	const char *expect; /* for messages */
};

#define LH_OFF(field) offsetof(struct lh_instance, field)

static const struct lh_key lh_keys[] = {
    {"script", LH_KEY_PATH, 0, 0, 0, "a file"},
    {"memory_limit", LH_KEY_SIZE, LH_OFF(mem_limit), 1024 * 1024, 0,
        "a size of at least 1M (e.g. 64M)"},
    {"hook_timeout", LH_KEY_TIME, LH_OFF(hook_timeout_ms), 1, 0, "a time (e.g. 500ms, 5s), not 0"},
    {"pattern_budget", LH_KEY_SIZE, LH_OFF(pattern_budget), LH_MIN_PATTERN_BUDGET, 0,
        "a number of steps of at least 1000"},
    {"instruction_slice", LH_KEY_SIZE, LH_OFF(instruction_slice), LH_COUNT_EVERY, LH_MAX_SLICE,
        "a number of instructions from 1000 to 100000000"},
    {"kv_max_memory", LH_KEY_SIZE, LH_OFF(kv_max_memory), LH_KV_MIN_MEMORY, 0,
        "a size of at least 64K"},
    {"kv_max_entries", LH_KEY_SIZE, LH_OFF(kv_max_entries), 1, LH_KV_MAX_ENTRIES,
        "a number of entries from 1 to 10000000"},
    {"kv_store", LH_KEY_STORE, 0, 0, 0, "a store"},
};

#define LH_NKEYS (sizeof(lh_keys) / sizeof(lh_keys[0]))

/* lh_key_set - one key of the section into in; 0, or -1 with init->err */
static int
lh_key_set(
    struct lh_instance *in, struct pc_init *init, const struct lh_key *k, const struct pc_option *o)
{
	const struct pc_host *host = init->host;
	unsigned long long v;
	int r;

	if (k->kind == LH_KEY_PATH) {
		free(in->script);
		if ((in->script = strdup(o->value)) != NULL)
			return 0;
		snprintf(init->err, init->errlen, "out of memory");
		return -1;
	}
	if (k->kind == LH_KEY_STORE) {
		free(in->kv_spec);
		in->kv_spec_line = o->line;
		if ((in->kv_spec = strdup(o->value)) != NULL)
			return 0;
		snprintf(init->err, init->errlen, "out of memory");
		return -1;
	}
	r = k->kind == LH_KEY_TIME ? host->opt_time(o->value, &v, NULL, 0)
	                           : host->opt_size(o->value, &v, NULL, 0);
	if (r != 0 || v < k->min || (k->max != 0 && v > k->max)) {
		snprintf(init->err, init->errlen, "%s: bad value \"%s\": expected %s", k->name,
		    o->value, k->expect);
		init->err_line = o->line;
		return -1;
	}
	*(uint64_t *)((char *)in + k->off) = v;
	return 0;
}

static int
lh_init(struct pc_init *init, void **instance)
{
	struct lh_instance *in = calloc(1, sizeof(*in));
	const struct pc_option *o;

	if (in == NULL) {
		snprintf(init->err, init->errlen, "out of memory");
		return -1;
	}
	in->host = init->host;
	in->self = init->self;
	in->options = init->options;
	in->mem_limit = LH_DEFAULT_MEM;
	in->hook_timeout_ms = LH_DEFAULT_TIMEOUT_MS;
	in->pattern_budget = LH_DEFAULT_PATTERN_BUDGET;
	in->instruction_slice = LH_DEFAULT_SLICE;
	if ((in->name = strdup(init->name)) == NULL) {
		snprintf(init->err, init->errlen, "out of memory");
		goto fail;
	}
	for (o = init->options; o != NULL; o = o->next) {
		for (size_t i = 0; i < LH_NKEYS; i++) {
			if (strcmp(o->key, lh_keys[i].name) == 0 &&
			    lh_key_set(in, init, &lh_keys[i], o) != 0)
				goto fail;
		}
	}
	if (in->script == NULL) {
		snprintf(init->err, init->errlen, "no script = FILE given");
		goto fail;
	}
	if (lh_store_init(in, init) != 0)
		goto fail;
	if ((in->cur = lh_state_new(in, init->err, init->errlen)) == NULL)
		goto fail;
	lh_kv_attach(in);
	*instance = in;
	return 0;
fail:
	free(in->name);
	free(in->script);
	free(in->kv_spec);
	free(in);
	return -1;
}

static void
lh_fini(void *instance)
{
	struct lh_instance *in = instance;

	lh_kv_detach(in);
	lh_state_unref(in->cur);
	free(in->name);
	free(in->script);
	free(in->kv_spec);
	free(in);
}

/* lh_reload - SIGHUP: a new state if the script loads, else the old one */
static int
lh_reload(void *instance, char *err, size_t errlen)
{
	struct lh_instance *in = instance;
	struct lh_state *st = lh_state_new(in, err, errlen);

	if (st == NULL)
		return -1;
	lh_state_unref(in->cur);
	in->cur = st;
	return 0;
}

/* lh_session_get - this session's Lua side, made at its first hook */
static struct lh_session *
lh_session_get(struct lh_instance *in, struct pc_call *call)
{
	void **slot = in->host->session_data(call);
	struct lh_session *ls = *slot;

	if (ls == NULL) {
		if ((ls = calloc(1, sizeof(*ls))) == NULL)
			return NULL;
		ls->in = in;
		ls->st = in->cur;
		ls->st->refs++;
		ls->conn_ref = ls->notes_ref = ls->tx_ref = ls->txt_ref = LUA_NOREF;
		*slot = ls;
	}
	ls->call = call;
	return ls;
}

/* lh_build - protected: make the coroutine, push the hook and its arguments */
static int
lh_build(lua_State *L)
{
	struct lh_run *run = lua_touserdata(L, 1);
	struct lh_session *ls = run->ls;
	struct lh_instance *in = ls->in;
	struct pc_call *call = run->call;
	lua_State *co = lua_newthread(L);
	int nargs = 1;

	run->co = co;
	run->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_sethook(co, lh_count_hook, LUA_MASKCOUNT, LH_COUNT_EVERY);
	if (run->hook == LH_DATA)
		lh_tx_apply_headers(L, ls);
	lua_rawgeti(co, LUA_REGISTRYINDEX, run->st->hooks[run->hook]);
	switch (run->hook) {
	case LH_CONNECT:
	case LH_DISCONNECT:
		lh_push_conn(co, ls);
		break;
	case LH_HELO:
		lh_push_conn(co, ls);
		lua_pushstring(co, in->host->get(call, PC_HELO));
		nargs = 2;
		break;
	case LH_MAIL:
		lh_push_tx(co, ls);
		lh_push_address(
		    co, ls, in->host->get(call, PC_SENDER), in->host->get(call, PC_SENDER_PARAMS));
		nargs = 2;
		break;
	case LH_RCPT:
		lh_push_tx(co, ls);
		lh_push_address(
		    co, ls, in->host->get(call, PC_RCPT), in->host->get(call, PC_RCPT_PARAMS));
		nargs = 2;
		break;
	case LH_DATA:
		lh_push_tx(co, ls);
		lh_push_msg(co, ls);
		nargs = 2;
		break;
	case LH_NHOOKS:
		break;
	}
	lua_pushinteger(L, nargs);
	return 1;
}

/* lh_hook - one hook call: run the script's function in a coroutine */
static int
lh_hook(struct lh_instance *in, struct pc_call *call, struct pc_verdict *v, enum lh_hook hook)
{
	struct lh_session *ls = lh_session_get(in, call);
	struct lh_state *st;
	struct lh_run *run;
	lua_State *L;
	int nargs;

	if (ls == NULL) {
		v->action = PC_FAIL;
		return PC_HOOK_DONE;
	}
	st = ls->st;
	L = st->L;
	if (st->hooks[hook] == LUA_NOREF && hook != LH_DATA)
		return PC_HOOK_DONE;
	if ((run = calloc(1, sizeof(*run))) == NULL) {
		v->action = PC_FAIL;
		return PC_HOOK_DONE;
	}
	run->ls = ls;
	run->st = st;
	run->hook = hook;
	run->call = call;
	run->co_ref = LUA_NOREF;
	run->deadline_ms = lh_now_ms() + in->hook_timeout_ms;
	ls->run = run;
	if (st->hooks[hook] == LUA_NOREF) {
		/* No on_data: only the headers added earlier go out. */
		lua_pushcfunction(L, lh_apply);
		lua_pushlightuserdata(L, ls);
		if (lua_pcall(L, 1, 0, 0) != LUA_OK)
			lua_pop(L, 1);
		lh_run_free(run, 0);
		return PC_HOOK_DONE;
	}
	lua_pushcfunction(L, lh_build);
	lua_pushlightuserdata(L, run);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		lh_log(st, call, PC_LOG_ERR, "lua %s: %s: cannot start: %s", in->name,
		    hook_names[hook], lua_tostring(L, -1));
		lua_pop(L, 1);
		lua_gc(L, LUA_GCCOLLECT);
		lh_run_free(run, 0);
		v->action = PC_FAIL;
		return PC_HOOK_DONE;
	}
	nargs = (int)lua_tointeger(L, -1);
	lua_pop(L, 1);
	if (lh_step(run, nargs, v) == PC_HOOK_DONE) {
		lh_run_free(run, 0);
		return PC_HOOK_DONE;
	}
	if (in->host->pending(call, lh_cancel_cb, run) != 0) {
		lh_run_free(run, 1);
		v->action = PC_FAIL;
		return PC_HOOK_DONE;
	}
	run->pending = 1;
	lh_arm_deadline(run);
	return PC_HOOK_PENDING;
}

/* lh_apply - protected: the headers tx:add_header kept for the DATA stage */
static int
lh_apply(lua_State *L)
{
	lh_tx_apply_headers(L, lua_touserdata(L, 1));
	return 0;
}

/* lh_arm_deadline - the wall deadline covers the waits too */
static void
lh_arm_deadline(struct lh_run *run)
{
	uint64_t now = lh_now_ms(), left = run->deadline_ms > now ? run->deadline_ms - now : 0;
	struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};

	if (run->ev_deadline != NULL)
		return;
	run->ev_deadline = evtimer_new(run->st->in->host->base, lh_deadline_cb, run);
	if (run->ev_deadline != NULL)
		evtimer_add(run->ev_deadline, &tv);
}

/* lh_script_error - log a failed hook call with what Lua said */
static void
lh_script_error(struct lh_run *run, const char *what)
{
	struct lh_state *st = run->st;
	char buf[1500];
	size_t o = 0;

	/* One log line: the traceback's lines joined. */
	for (const char *p = what; *p != '\0' && o + 4 < sizeof(buf); p++) {
		if (*p == '\n') {
			memcpy(buf + o, " | ", 3);
			o += 3;
		} else if (*p != '\t') {
			buf[o++] = *p;
		}
	}
	buf[o] = '\0';
	lh_log(st, run->call, PC_LOG_ERR, "lua %s: %s (script %s): %s", st->in->name,
	    hook_names[run->hook], st->in->script, buf);
}

/* lh_step - resume the coroutine: DONE (v set) or PENDING */
static int
lh_step(struct lh_run *run, int nargs, struct pc_verdict *v)
{
	struct lh_state *st = run->st;
	lua_State *co = run->co;
	const char *why;
	int nres = 0, status;

	st->running = run;
	run->count = 0;
	run->slice_start_ms = lh_now_ms();
	status = lua_resume(co, NULL, nargs, &nres);
	st->running = NULL;
	if (run->killed && (status == LUA_YIELD || status == LUA_OK)) {
		/* The count hook (or lh_charge) stopped it; it is never
		 * resumed. Ended anyway: a pcall caught the error raised
		 * where it could not yield, and the hook returned before
		 * the next count; it still failed. */
		char msg[160];
		st->preempted = 0;
		lh_script_error(run, lh_stop_why(run, msg, sizeof(msg)));
		memset(v, 0, sizeof(*v));
		v->action = PC_FAIL;
		return PC_HOOK_DONE;
	}
	if (status == LUA_YIELD) {
		lua_pop(co, nres);
		if (run->waiting)
			return PC_HOOK_PENDING;
		/* Preempted (or a bare yield): run again after the loop has
		 * served everyone else. */
		st->preempted = 0;
		if (run->ev_resume == NULL)
			run->ev_resume = evtimer_new(st->in->host->base, lh_resume_cb, run);
		if (run->ev_resume != NULL) {
			struct timeval zero = {0, 0};
			evtimer_add(run->ev_resume, &zero);
			return PC_HOOK_PENDING;
		}
		lh_script_error(run, "out of memory scheduling the script");
		v->action = PC_FAIL;
		return PC_HOOK_DONE;
	}
	memset(v, 0, sizeof(*v));
	if (status == LUA_OK) {
		if (lh_verdict(co, nres, run->ls, v, &why) != 0) {
			lh_script_error(run, why);
			v->action = PC_FAIL;
		}
		return PC_HOOK_DONE;
	}
	/* The traceback needs memory, which a memory error may have left
	 * none of: build it protected, and fall back to the message. */
	lua_pushcfunction(st->L, lh_traceback);
	lua_pushlightuserdata(st->L, co);
	if (status != LUA_ERRMEM && lua_pcall(st->L, 1, 1, 0) == LUA_OK) {
		lh_script_error(run, lua_tostring(st->L, -1));
		lua_pop(st->L, 1);
	} else {
		if (status != LUA_ERRMEM)
			lua_pop(st->L, 1);
		else
			lua_pop(st->L, 2);
		lh_script_error(run,
		    lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1)
		                                    : "error (not a string)");
	}
	v->action = PC_FAIL;
	return PC_HOOK_DONE;
}

/* lh_traceback - protected: the error at the top of a coroutine, with
 * where it happened */
static int
lh_traceback(lua_State *L)
{
	lua_State *co = lua_touserdata(L, 1);
	const char *msg = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : NULL;

	luaL_traceback(L, co, msg != NULL ? msg : "error (not a string)", 0);
	return 1;
}

/* lh_continue - the coroutine may go on (nargs values on it) */
static void
lh_continue(struct lh_run *run, int nargs)
{
	struct pc_verdict v = {PC_CONTINUE, NULL};
	const struct pc_host *host = run->st->in->host;
	struct pc_call *call = run->call;

	if (lh_step(run, nargs, &v) == PC_HOOK_PENDING)
		return;
	lh_run_free(run, 0);
	host->resume(call, &v);
}

/* lh_resume_cb - after a forced yield, or an answer lh_wait_done_later
 * put on the coroutine */
static void
lh_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lh_run *run = arg;
	int n = run->resume_nargs;

	run->resume_nargs = 0;
	lh_continue(run, n);
}

/* lh_deadline_cb - hook_timeout passed while the script waited */
static void
lh_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lh_run *run = arg;
	struct pc_verdict v = {PC_FAIL, NULL};
	const struct pc_host *host = run->st->in->host;
	struct pc_call *call = run->call;
	char msg[96];

	snprintf(msg, sizeof(msg), "hook timeout (%d ms)", (int)run->st->in->hook_timeout_ms);
	lh_script_error(run, msg);
	lh_run_free(run, 1);
	host->resume(call, &v);
}

/* lh_wait_start - a helper waits: see luahost.h */
int
lh_wait_start(lua_State *L, void *w, lh_wait_cancel_fn cancel)
{
	struct lh_run *run = lh_current(L);

	run->waiting = 1;
	run->wait = w;
	run->wait_cancel = cancel;
	return lua_yield(L, 0);
}

/* lh_wait_done - a helper's answer is on run->co: go on */
void
lh_wait_done(struct lh_run *run, int n)
{
	run->waiting = 0;
	run->wait = NULL;
	run->wait_cancel = NULL;
	lh_continue(run, n);
}

/* lh_wait_done_later - see luahost.h */
void
lh_wait_done_later(struct lh_run *run, int n)
{
	struct timeval zero = {0, 0};

	run->waiting = 0;
	run->wait = NULL;
	run->wait_cancel = NULL;
	if (run->ev_resume == NULL)
		run->ev_resume = evtimer_new(run->st->in->host->base, lh_resume_cb, run);
	if (run->ev_resume == NULL) {
		lh_continue(run, n);
		return;
	}
	run->resume_nargs = n;
	evtimer_add(run->ev_resume, &zero);
}

/* lh_cancel_cb - the host gives up (session gone, filter_timeout) */
static void
lh_cancel_cb(void *arg)
{
	lh_run_free(arg, 1);
}

/* lh_run_free - the coroutine is dropped (the GC takes it) */
static void
lh_run_free(struct lh_run *run, int cancel_wait)
{
	struct lh_state *st = run->st;

	if (cancel_wait && run->wait != NULL && run->wait_cancel != NULL)
		run->wait_cancel(run->wait);
	if (run->ev_resume != NULL)
		event_free(run->ev_resume);
	if (run->ev_deadline != NULL)
		event_free(run->ev_deadline);
	if (run->co_ref != LUA_NOREF)
		luaL_unref(st->L, LUA_REGISTRYINDEX, run->co_ref);
	if (run->hook == LH_DATA)
		lh_invalidate_msg(st->L, run->ls);
	if (run->ls->run == run)
		run->ls->run = NULL;
	free(run);
	/* A call that ran out of memory leaves its garbage unreachable now:
	 * give it back before the next session needs it. */
	if (st->mem_limit != 0 && st->mem > st->mem_limit / 4 * 3)
		lua_gc(st->L, LUA_GCCOLLECT);
}

static int
lh_connect(void *inst, struct pc_call *call, struct pc_verdict *v)
{
	return lh_hook(inst, call, v, LH_CONNECT);
}

static int
lh_helo(void *inst, struct pc_call *call, struct pc_verdict *v)
{
	return lh_hook(inst, call, v, LH_HELO);
}

static int
lh_mail(void *inst, struct pc_call *call, struct pc_verdict *v)
{
	return lh_hook(inst, call, v, LH_MAIL);
}

static int
lh_rcpt(void *inst, struct pc_call *call, struct pc_verdict *v)
{
	return lh_hook(inst, call, v, LH_RCPT);
}

static int
lh_data(void *inst, struct pc_call *call, struct pc_verdict *v)
{
	return lh_hook(inst, call, v, LH_DATA);
}

/* lh_reset - the transaction ended: its tx object is over */
static void
lh_reset(void *inst, struct pc_call *call)
{
	struct lh_instance *in = inst;
	struct lh_session *ls = *in->host->session_data(call);

	if (ls == NULL)
		return;
	ls->tx_seq++;
	luaL_unref(ls->st->L, LUA_REGISTRYINDEX, ls->tx_ref);
	luaL_unref(ls->st->L, LUA_REGISTRYINDEX, ls->txt_ref);
	ls->tx_ref = ls->txt_ref = LUA_NOREF;
}

/* lh_close - on_disconnect (it may not wait), then let the session go */
static void
lh_close(void *inst, struct pc_call *call)
{
	struct lh_instance *in = inst;
	void **slot = in->host->session_data(call);
	struct lh_session *ls = *slot;
	struct pc_verdict v;

	if (ls == NULL)
		return;
	ls->call = call;
	if (ls->st->hooks[LH_DISCONNECT] != LUA_NOREF) {
		struct lh_run *run = calloc(1, sizeof(*run));
		if (run != NULL) {
			run->ls = ls;
			run->st = ls->st;
			run->hook = LH_DISCONNECT;
			run->call = call;
			run->co_ref = LUA_NOREF;
			run->deadline_ms = lh_now_ms() + in->hook_timeout_ms;
			lua_pushcfunction(ls->st->L, lh_build);
			lua_pushlightuserdata(ls->st->L, run);
			if (lua_pcall(ls->st->L, 1, 1, 0) == LUA_OK) {
				int nargs = (int)lua_tointeger(ls->st->L, -1);
				if (lh_step(run, nargs, &v) == PC_HOOK_PENDING)
					lh_log(ls->st, call, PC_LOG_WARN,
					    "lua %s: on_disconnect cannot wait; stopped", in->name);
			}
			lua_pop(ls->st->L, 1);
			lh_run_free(run, 1);
		}
	}
	lh_session_closed(ls->st->L, ls);
	lh_state_unref(ls->st);
	free(ls);
	*slot = NULL;
}

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "lua",
    .version = "1.0",
    .keys = NULL, /* any other key is the script's, in `config` */
    .init = lh_init,
    .fini = lh_fini,
    .connect = lh_connect,
    .helo = lh_helo,
    .mail = lh_mail,
    .rcpt = lh_rcpt,
    .data = lh_data,
    .reset = lh_reset,
    .close = lh_close,
    .reload = lh_reload,
};

/* lh_key_reserved - a section key the host reads, not the script's */
int
lh_key_reserved(const char *key)
{
	for (size_t i = 0; i < LH_NKEYS; i++) {
		if (strcmp(lh_keys[i].name, key) == 0)
			return 1;
	}
	return 0;
}
