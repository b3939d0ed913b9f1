/*
 * luahost.h - the Lua 5.4 host (the plugin lua.so): shared types of its
 * files. host.c is the plugin (sections, states, hook calls, coroutines,
 * limits, reload), api.c the objects and helpers scripts see (smtp, log,
 * conn, tx, msg, addresses, verdicts), dns.c the DNS helpers, kv.c the
 * in-process key-value store, kvstore.c kv on the host's store and
 * redis.call, pattern.c string.find/match/gmatch/gsub with a step budget.
 */
#ifndef PORTCULLIS_LUAHOST_H
#define PORTCULLIS_LUAHOST_H

#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#include <portcullis/plugin.h>

struct event;

/* The hooks a script may define, in this order in struct lh_state.hooks. */
enum lh_hook {
	LH_CONNECT = 0,
	LH_HELO,
	LH_MAIL,
	LH_RCPT,
	LH_DATA,
	LH_DISCONNECT,
	LH_NHOOKS,
};

struct lh_run;

/* One [lua NAME] section. The numbers are its keys (host.c lh_keys[]). */
struct lh_instance {
	const struct pc_host *host;
	struct pc_instance *self;
	char *name;
	char *script; /* path */
	uint64_t mem_limit; /* memory_limit, octets */
	uint64_t hook_timeout_ms;
	uint64_t pattern_budget; /* steps per pattern call */
	uint64_t instruction_slice; /* instructions before a forced yield */
	uint64_t kv_max_memory; /* 0: the section did not say */
	uint64_t kv_max_entries; /* 0: the section did not say */
	struct lh_instance *kv_next; /* kv.c's list of loaded sections */
	char *kv_spec; /* kv_store as given, or NULL */
	int kv_spec_line;
	struct pc_store *store; /* kv's store; NULL: kv.c's table */
	int store_redis; /* a Redis store: it answers later (kv yields); redis.call */
	const struct pc_option *options; /* the section's keys, for `config` */
	struct lh_state *cur; /* what new sessions use */
};

/* One loaded script: a Lua state. Sessions hold a reference, so a reload
 * can swap in a new one while running sessions finish on theirs. */
struct lh_state {
	lua_State *L;
	struct lh_instance *in;
	unsigned refs;
	size_t mem, mem_limit;
	int hooks[LH_NHOOKS]; /* registry refs of the on_* functions, or LUA_NOREF */
	struct lh_run *running; /* the hook call being resumed now */
	int preempted; /* the count hook forced a yield */
	int loading; /* the top level is running: helpers cannot wait */
	uint64_t load_deadline_ms;
};

/* Per session: what the script's objects point at. */
struct lh_session {
	struct lh_instance *in;
	struct lh_state *st;
	struct pc_call *call; /* the latest hook call of this session */
	int conn_ref; /* the conn object */
	int notes_ref; /* conn.notes */
	int tx_ref; /* the tx object of this transaction, or LUA_NOREF */
	int txt_ref; /* its Lua table: notes, headers (scores are the host's) */
	unsigned tx_seq; /* bumped when a transaction ends */
	struct lh_run *run; /* the hook call in progress */
	struct lh_uconn *conn_ud; /* the conn object, told when the session ends */
	unsigned msg_gen; /* a msg object is good while its gen is this */
	char reply[PC_REPLY_MAX + 2]; /* a verdict's reply, for the host to copy */
};

/* The userdata behind conn, tx and msg. tx and msg keep their conn alive
 * (uservalue), so they can always ask it whether the session still is. */
struct lh_uconn {
	struct lh_session *ls; /* NULL once the session ended */
};
struct lh_utx {
	struct lh_uconn *c;
	unsigned seq;
};
struct lh_umsg {
	struct lh_uconn *c;
	unsigned gen;
};

/* A helper waiting for something (DNS, a timer). */
struct lh_wait;
typedef void (*lh_wait_cancel_fn)(struct lh_wait *w);

/* One hook call: a coroutine and where it stands. */
struct lh_run {
	struct lh_session *ls;
	struct lh_state *st;
	lua_State *co;
	int co_ref;
	enum lh_hook hook;
	struct pc_call *call;
	int pending; /* host->pending() was called */
	int waiting; /* a helper yielded for a result */
	int killed; /* 1: hook_timeout, 2: ran too long where it could not yield */
	uint64_t slice_start_ms; /* when this resume began */
	unsigned long count; /* instructions in this slice */
	uint64_t deadline_ms; /* monotonic */
	struct event *ev_resume; /* runs the coroutine again after a forced yield */
	int resume_nargs; /* values ev_resume resumes it with */
	struct event *ev_deadline;
	void *wait; /* the helper's state while waiting */
	lh_wait_cancel_fn wait_cancel;
};

/* host.c */
uint64_t lh_now_ms(void);
int lh_key_reserved(const char *key);
/* lh_wait_start - a helper yields for a result: call as "return
 * lh_wait_start(L, w, cancel)"; lh_wait_done resumes with the n values
 * pushed on run->co. */
int lh_wait_start(lua_State *L, void *w, lh_wait_cancel_fn cancel);
struct lh_run *lh_current(lua_State *L);
struct lh_state *lh_state_of(lua_State *L);
void lh_wait_done(struct lh_run *run, int n);
/* lh_wait_done_later - the same, at the event loop's next turn: for an
 * answer that may come while other code runs (a store's callback may run
 * inside another request, another session's hook, another plugin's). */
void lh_wait_done_later(struct lh_run *run, int n);
/* lh_charge - C code (the pattern matcher) did steps of work the count
 * hook cannot see. Raises when the hook call must stop and the caller
 * cannot yield; returns 1 when the caller should yield now, which it may
 * only if can_yield (it is about to return to Lua). */
int lh_charge(lua_State *L, unsigned long steps, int can_yield);
void lh_log(struct lh_state *st, struct pc_call *call, enum pc_log_level level, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));

/* api.c */
void lh_api_open(lua_State *L, struct lh_instance *in);
int lh_push_conn(lua_State *L, struct lh_session *ls);
int lh_push_tx(lua_State *L, struct lh_session *ls);
void lh_push_address(lua_State *L, struct lh_session *ls, const char *addr, const char *params);
void lh_push_msg(lua_State *L, struct lh_session *ls);
void lh_invalidate_msg(lua_State *L, struct lh_session *ls);
/* lh_verdict - the verdict a hook returned: 0 and *v, or -1 with why. */
int lh_verdict(
    lua_State *co, int nres, struct lh_session *ls, struct pc_verdict *v, const char **why);
void lh_tx_apply_headers(lua_State *L, struct lh_session *ls);
void lh_session_closed(lua_State *L, struct lh_session *ls);

/* dns.c */
void lh_dns_open(lua_State *L);

/* kv.c: the bounds of kv_max_memory and kv_max_entries (see kv.c) */
#define LH_KV_MIN_MEMORY (64u * 1024)
#define LH_KV_MAX_ENTRIES 10000000u
void lh_kv_open(lua_State *L);
void lh_kv_attach(struct lh_instance *in);
void lh_kv_detach(struct lh_instance *in);

/* kvstore.c: kv on the host's store (kv_store = lmdb:, redis://, ...) and
 * redis.call. lh_store_init opens the section's store in init (0, or -1
 * with init->err); lh_store_open_lib makes the kv global (when the section
 * has a store) and the redis global. */
int lh_store_init(struct lh_instance *in, struct pc_init *init);
void lh_store_open_lib(lua_State *L, struct lh_instance *in);

/* pattern.c */
void lh_pattern_open(lua_State *L, unsigned long budget);

#endif
