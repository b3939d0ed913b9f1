/*
 * api.c - what a script sees (DESIGN.md §6): the conn, tx, msg and address
 * objects, verdicts, and the smtp, log and config globals.
 *
 * Exports lh_api_open, lh_push_conn, lh_push_tx, lh_push_address,
 * lh_push_msg, lh_invalidate_msg, lh_verdict, lh_tx_apply_headers and
 * lh_session_closed. Objects read the session through the host at the
 * moment they are asked, so they are never stale; one used after its
 * session, transaction or DATA stage is over raises an error.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

#include "luahost.h"

#define MT_CONN "portcullis.conn"
#define MT_TX "portcullis.tx"
#define MT_MSG "portcullis.msg"
#define MT_VERDICT "portcullis.verdict"

/* msg:body() reads at most this much unless asked for less. */
#define LH_BODY_DEFAULT (1024 * 1024)

static struct lh_instance *instance_of(lua_State *L);
static struct pc_call *call_of(lua_State *L);

/* ---- conn ---- */

/* check_conn - a conn whose session is still there */
static struct lh_session *
check_conn(lua_State *L, int idx)
{
	struct lh_uconn *c = luaL_checkudata(L, idx, MT_CONN);

	if (c->ls == NULL)
		luaL_error(L, "the session is over");
	return c->ls;
}

/* push_field - a host field as a string, or nil */
static void
push_field(lua_State *L, struct lh_session *ls, enum pc_field f)
{
	const char *v = ls->in->host->get(ls->call, f);

	if (v != NULL)
		lua_pushstring(L, v);
	else
		lua_pushnil(L);
}

/* log_line - format with string.format (upvalue 1) and log at level */
static int
log_line(lua_State *L, int first, struct pc_call *call, enum pc_log_level level)
{
	struct lh_instance *in = instance_of(L);
	int n = lua_gettop(L);

	lua_pushvalue(L, lua_upvalueindex(1));
	for (int i = first; i <= n; i++)
		lua_pushvalue(L, i);
	lua_call(L, n - first + 1, 1);
	in->host->log(in->self, call, level, "%s", lua_tostring(L, -1));
	return 0;
}

static int
conn_log(lua_State *L)
{
	struct lh_session *ls = check_conn(L, 1);

	return log_line(L, 2, ls->call, PC_LOG_INFO);
}

/* add_score - tx:add_score(n, SYMBOL [, detail]) and conn:add_score: the
 * host's store (plugin.h SCORES), shared with every other filter; returns
 * the new total */
static int
add_score(lua_State *L, struct lh_session *ls, const char *what)
{
	lua_Number n = luaL_checknumber(L, 2);
	size_t len, dlen = 0;
	const char *sym = luaL_checklstring(L, 3, &len);
	const char *detail = luaL_optlstring(L, 4, NULL, &dlen);
	const struct pc_host *host = ls->in->host;

	if (strlen(sym) != len || (detail != NULL && strlen(detail) != dlen) ||
	    host->add_score(ls->call, sym, (double)n, detail) != 0)
		return luaL_error(L,
		    "%s: refused (SYMBOL is A-Z, 0-9 and _, at most 64; a detail at most 256 "
		    "octets without control characters; at most 256 symbols)",
		    what);
	lua_pushnumber(L, (lua_Number)host->score(ls->call));
	return 1;
}

static int
conn_add_score(lua_State *L)
{
	return add_score(L, check_conn(L, 1), "conn:add_score");
}

static int
conn_index(lua_State *L)
{
	struct lh_session *ls = check_conn(L, 1);
	const char *k = luaL_checkstring(L, 2);

	if (strcmp(k, "client_ip") == 0)
		push_field(L, ls, PC_CLIENT_IP);
	else if (strcmp(k, "client_port") == 0)
		lua_pushinteger(L, atoi(ls->in->host->get(ls->call, PC_CLIENT_PORT)));
	else if (strcmp(k, "local_ip") == 0)
		push_field(L, ls, PC_LOCAL_IP);
	else if (strcmp(k, "helo") == 0)
		push_field(L, ls, PC_HELO);
	else if (strcmp(k, "tls") == 0)
		push_field(L, ls, PC_TLS);
	else if (strcmp(k, "auth_user") == 0)
		push_field(L, ls, PC_AUTH_USER);
	else if (strcmp(k, "id") == 0)
		push_field(L, ls, PC_SESSION_ID);
	else if (strcmp(k, "trusted") == 0)
		lua_pushboolean(L, ls->in->host->get(ls->call, PC_CLIENT_TRUSTED) != NULL);
	else if (strcmp(k, "rdns") == 0)
		push_field(L, ls, PC_CLIENT_NAME);
	else if (strcmp(k, "tls_cipher") == 0)
		push_field(L, ls, PC_TLS_CIPHER);
	else if (strcmp(k, "add_score") == 0)
		lua_pushcfunction(L, conn_add_score);
	else if (strcmp(k, "notes") == 0)
		lua_rawgeti(L, LUA_REGISTRYINDEX, ls->notes_ref);
	else if (strcmp(k, "log") == 0) {
		lua_getglobal(L, "string");
		lua_getfield(L, -1, "format");
		lua_pushcclosure(L, conn_log, 1);
	} else
		lua_pushnil(L);
	return 1;
}

static int
readonly(lua_State *L)
{
	return luaL_error(L, "this object is read-only (keep your own fields in notes)");
}

/* lh_push_conn - the session's conn object */
int
lh_push_conn(lua_State *L, struct lh_session *ls)
{
	if (ls->conn_ref == LUA_NOREF) {
		struct lh_uconn *c = lua_newuserdatauv(L, sizeof(*c), 0);
		c->ls = ls;
		luaL_setmetatable(L, MT_CONN);
		ls->conn_ud = c;
		ls->conn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		lua_newtable(L);
		ls->notes_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, ls->conn_ref);
	return 1;
}

/* lh_session_closed - conn, tx and msg objects of the session go stale */
void
lh_session_closed(lua_State *L, struct lh_session *ls)
{
	if (ls->conn_ud != NULL)
		ls->conn_ud->ls = NULL;
	luaL_unref(L, LUA_REGISTRYINDEX, ls->conn_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, ls->notes_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, ls->tx_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, ls->txt_ref);
	ls->conn_ref = ls->notes_ref = ls->tx_ref = ls->txt_ref = LUA_NOREF;
}

/* ---- addresses ---- */

/* lh_push_address - {addr, user, domain, params, raw} (DESIGN §6). The
 * split is the host's (plugin.h ADDRESSES), the same for every filter. */
void
lh_push_address(lua_State *L, struct lh_session *ls, const char *addr, const char *params)
{
	const char *local, *domain;
	luaL_Buffer b;

	if (addr == NULL)
		addr = "";
	if (params == NULL)
		params = "";
	if (ls->in->host->split_address(ls->call, addr, &local, &domain) != 0)
		luaL_error(L, "cannot split the address (out of memory)");
	lua_createtable(L, 0, 5);
	/* addr: the domain in lower case, the local part as written */
	if (domain != NULL)
		lua_pushfstring(L, "%s@%s", local, domain);
	else
		lua_pushstring(L, local);
	lua_setfield(L, -2, "addr");
	lua_pushstring(L, local);
	lua_setfield(L, -2, "user");
	if (domain != NULL) {
		lua_pushstring(L, domain);
		lua_setfield(L, -2, "domain");
	}
	/* params: KEY (upper case) = value, or true without one */
	lua_newtable(L);
	for (const char *p = params; *p != '\0';) {
		const char *end = strchr(p, ' '), *eq;
		size_t len = end ? (size_t)(end - p) : strlen(p);
		eq = memchr(p, '=', len);
		luaL_buffinit(L, &b);
		for (const char *k = p; k < (eq ? eq : p + len); k++)
			luaL_addchar(&b, (char)toupper((unsigned char)*k));
		luaL_pushresult(&b);
		if (eq != NULL)
			lua_pushlstring(L, eq + 1, (size_t)(p + len - eq - 1));
		else
			lua_pushboolean(L, 1);
		lua_settable(L, -3);
		p += len;
		while (*p == ' ')
			p++;
	}
	lua_setfield(L, -2, "params");
	lua_pushfstring(L, "<%s>%s%s", addr, params[0] ? " " : "", params);
	lua_setfield(L, -2, "raw");
}

/* ---- tx ---- */

/* check_tx - a tx whose transaction is still going */
static struct lh_session *
check_tx(lua_State *L, int idx)
{
	struct lh_utx *t = luaL_checkudata(L, idx, MT_TX);

	if (t->c->ls == NULL || t->seq != t->c->ls->tx_seq)
		luaL_error(L, "the transaction is over");
	return t->c->ls;
}

/* push_txt - the transaction's own table: notes, headers (scores are the
 * host's) */
static void
push_txt(lua_State *L, struct lh_session *ls)
{
	if (ls->txt_ref == LUA_NOREF) {
		lua_createtable(L, 0, 2);
		lua_newtable(L);
		lua_setfield(L, -2, "notes");
		lua_newtable(L);
		lua_setfield(L, -2, "headers");
		ls->txt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, ls->txt_ref);
}

static int
tx_add_score(lua_State *L)
{
	return add_score(L, check_tx(L, 1), "tx:add_score");
}

/* push_symbols - tx.symbols: SYMBOL -> points, from the host's store */
static void
push_symbols(lua_State *L, struct lh_session *ls)
{
	const struct pc_host *host = ls->in->host;
	const char *sym;
	double points;

	lua_newtable(L);
	for (size_t i = 0; host->score_at(ls->call, i, &sym, &points, NULL) == 0; i++) {
		lua_pushnumber(L, (lua_Number)points);
		lua_setfield(L, -2, sym);
	}
}

/* check_data - the transaction's on_data is running: changes are allowed */
static struct lh_session *
check_data(lua_State *L, const char *what)
{
	struct lh_session *ls = check_tx(L, 1);

	if (ls->run == NULL || ls->run->hook != LH_DATA)
		luaL_error(L, "%s: only in on_data", what);
	return ls;
}

/* opt_string - an optional string argument without NUL, or NULL */
static const char *
opt_string(lua_State *L, int idx, const char *what)
{
	size_t len;
	const char *s = luaL_optlstring(L, idx, NULL, &len);

	if (s != NULL && strlen(s) != len)
		luaL_error(L, "%s: NUL in an argument", what);
	return s;
}

static int
tx_add_rcpt(lua_State *L)
{
	struct lh_session *ls = check_data(L, "tx:add_rcpt");
	const char *addr = opt_string(L, 2, "tx:add_rcpt"),
	           *params = opt_string(L, 3, "tx:add_rcpt");

	if (addr == NULL || ls->in->host->add_rcpt(ls->call, addr, params) != 0)
		return luaL_error(L, "tx:add_rcpt: refused (a bad address or parameters)");
	return 0;
}

static int
tx_del_rcpt(lua_State *L)
{
	struct lh_session *ls = check_data(L, "tx:del_rcpt");
	const char *addr = opt_string(L, 2, "tx:del_rcpt");

	if (addr == NULL || ls->in->host->delete_rcpt(ls->call, addr) != 0)
		return luaL_error(L, "tx:del_rcpt: no such recipient");
	return 0;
}

static int
tx_change_sender(lua_State *L)
{
	struct lh_session *ls = check_data(L, "tx:change_sender");
	const char *addr = opt_string(L, 2, "tx:change_sender");
	const char *params = opt_string(L, 3, "tx:change_sender");

	if (addr == NULL || ls->in->host->change_sender(ls->call, addr, params) != 0)
		return luaL_error(L, "tx:change_sender: refused (a bad address or parameters)");
	return 0;
}

/* header_ok - a header we can send: a field name, a one-line value */
static const char *
header_ok(const char *name, const char *value)
{
	if (name[0] == '\0')
		return "empty header name";
	for (const char *p = name; *p != '\0'; p++) {
		if ((unsigned char)*p <= ' ' || (unsigned char)*p > '~' || *p == ':')
			return "bad character in the header name";
	}
	for (const char *p = value; *p != '\0'; p++) {
		if (*p == '\r' || *p == '\n' || (*p != '\t' && (unsigned char)*p < ' '))
			return "control character in the header value";
	}
	if (strlen(name) + strlen(value) + 2 > 998)
		return "header longer than 998 octets";
	return NULL;
}

static int
tx_add_header(lua_State *L)
{
	struct lh_session *ls = check_tx(L, 1);
	size_t nlen, vlen;
	const char *name = luaL_checklstring(L, 2, &nlen), *value = luaL_checklstring(L, 3, &vlen);
	const struct pc_host *host = ls->in->host;
	const char *bad = strlen(name) != nlen || strlen(value) != vlen ? "NUL in the header"
	                                                                : header_ok(name, value);

	if (bad != NULL)
		return luaL_error(L, "tx:add_header: %s", bad);
	if (ls->run != NULL && ls->run->hook == LH_DATA) {
		if (host->add_header(ls->call, name, value) != 0)
			return luaL_error(L, "tx:add_header: refused");
		return 0;
	}
	/* Before the end of DATA: kept, and added when the message is there. */
	push_txt(L, ls);
	lua_getfield(L, -1, "headers");
	lua_createtable(L, 2, 0);
	lua_pushvalue(L, 2);
	lua_rawseti(L, -2, 1);
	lua_pushvalue(L, 3);
	lua_rawseti(L, -2, 2);
	lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
	return 0;
}

/* lh_tx_apply_headers - at the DATA stage: what tx:add_header kept */
void
lh_tx_apply_headers(lua_State *L, struct lh_session *ls)
{
	const struct pc_host *host = ls->in->host;
	lua_Integer n;

	if (ls->txt_ref == LUA_NOREF)
		return;
	push_txt(L, ls);
	lua_getfield(L, -1, "headers");
	n = (lua_Integer)lua_rawlen(L, -1);
	for (lua_Integer i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, i);
		lua_rawgeti(L, -1, 1);
		lua_rawgeti(L, -2, 2);
		host->add_header(ls->call, lua_tostring(L, -2), lua_tostring(L, -1));
		lua_pop(L, 3);
	}
	lua_newtable(L);
	lua_setfield(L, -3, "headers");
	lua_pop(L, 2);
}

static int
tx_index(lua_State *L)
{
	struct lh_session *ls = check_tx(L, 1);
	const struct pc_host *host = ls->in->host;
	const char *k = luaL_checkstring(L, 2);

	if (strcmp(k, "id") == 0) {
		push_field(L, ls, PC_TX_ID);
	} else if (strcmp(k, "conn") == 0) {
		lh_push_conn(L, ls);
	} else if (strcmp(k, "sender") == 0) {
		lh_push_address(
		    L, ls, host->get(ls->call, PC_SENDER), host->get(ls->call, PC_SENDER_PARAMS));
	} else if (strcmp(k, "recipients") == 0) {
		size_t n = host->rcpt_count(ls->call);
		lua_createtable(L, (int)n, 0);
		for (size_t i = 0; i < n; i++) {
			lh_push_address(L, ls, host->rcpt(ls->call, i), NULL);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
	} else if (strcmp(k, "notes") == 0) {
		push_txt(L, ls);
		lua_getfield(L, -1, k);
	} else if (strcmp(k, "score") == 0) {
		lua_pushnumber(L, (lua_Number)host->score(ls->call));
	} else if (strcmp(k, "symbols") == 0) {
		push_symbols(L, ls);
	} else if (strcmp(k, "add_score") == 0) {
		lua_pushcfunction(L, tx_add_score);
	} else if (strcmp(k, "add_rcpt") == 0) {
		lua_pushcfunction(L, tx_add_rcpt);
	} else if (strcmp(k, "del_rcpt") == 0) {
		lua_pushcfunction(L, tx_del_rcpt);
	} else if (strcmp(k, "change_sender") == 0) {
		lua_pushcfunction(L, tx_change_sender);
	} else if (strcmp(k, "add_header") == 0) {
		lua_pushcfunction(L, tx_add_header);
	} else {
		lua_pushnil(L);
	}
	return 1;
}

/* lh_push_tx - the transaction's tx object */
int
lh_push_tx(lua_State *L, struct lh_session *ls)
{
	if (ls->tx_ref == LUA_NOREF) {
		struct lh_utx *t;
		lh_push_conn(L, ls);
		t = lua_newuserdatauv(L, sizeof(*t), 1);
		t->c = ls->conn_ud;
		t->seq = ls->tx_seq;
		lua_pushvalue(L, -2);
		lua_setiuservalue(L, -2, 1);
		luaL_setmetatable(L, MT_TX);
		ls->tx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		lua_pop(L, 1);
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, ls->tx_ref);
	return 1;
}

/* ---- msg ---- */

static struct lh_session *
check_msg(lua_State *L, int idx)
{
	struct lh_umsg *m = luaL_checkudata(L, idx, MT_MSG);

	if (m->c->ls == NULL || m->gen != m->c->ls->msg_gen)
		luaL_error(L, "the message is only there during on_data");
	return m->c->ls;
}

static int
msg_header(lua_State *L)
{
	struct lh_session *ls = check_msg(L, 1);
	const char *name = luaL_checkstring(L, 2);
	lua_Integer n = luaL_optinteger(L, 3, 1);
	const char *v = n >= 1 ? ls->in->host->header(ls->call, name, (size_t)(n - 1)) : NULL;

	if (v != NULL)
		lua_pushstring(L, v);
	else
		lua_pushnil(L);
	return 1;
}

static int
msg_headers(lua_State *L)
{
	struct lh_session *ls = check_msg(L, 1);
	const char *name = luaL_checkstring(L, 2), *v;

	lua_newtable(L);
	for (size_t i = 0; (v = ls->in->host->header(ls->call, name, i)) != NULL; i++) {
		lua_pushstring(L, v);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	return 1;
}

static int
msg_body(lua_State *L)
{
	struct lh_session *ls = check_msg(L, 1);
	lua_Integer max = luaL_optinteger(L, 2, LH_BODY_DEFAULT);
	const struct pc_host *host = ls->in->host;
	luaL_Buffer b;
	size_t got = 0;
	char extra;

	if (max < 0)
		max = 0;
	/* Every msg:body() reads from the start of the body. */
	host->body_rewind(ls->call);
	luaL_buffinit(L, &b);
	while (got < (size_t)max) {
		size_t want = (size_t)max - got;
		char *p = luaL_prepbuffsize(&b, want < 16384 ? want : 16384);
		ssize_t n = host->body_read(ls->call, p, want < 16384 ? want : 16384);
		if (n < 0)
			return luaL_error(L, "msg:body: cannot read the message");
		if (n == 0)
			break;
		luaL_addsize(&b, (size_t)n);
		got += (size_t)n;
	}
	luaL_pushresult(&b);
	lua_pushboolean(L, got >= (size_t)max && host->body_read(ls->call, &extra, 1) > 0);
	return 2;
}

/* msg:change_header(name, n, value) - the n-th (1-based) field called
 * name gets value; nil deletes it */
static int
msg_change_header(lua_State *L)
{
	struct lh_session *ls = check_msg(L, 1);
	const char *name = luaL_checkstring(L, 2);
	lua_Integer n = luaL_checkinteger(L, 3);
	const char *value = lua_isnoneornil(L, 4) ? NULL : luaL_checkstring(L, 4);

	if (value != NULL && strlen(value) != lua_rawlen(L, 4))
		return luaL_error(L, "msg:change_header: NUL in the value");
	if (n < 1 || ls->in->host->change_header(ls->call, name, (size_t)(n - 1), value) != 0)
		return luaL_error(L,
		    "msg:change_header: refused (no field %s number %d, or a bad value)", name,
		    (int)n);
	return 0;
}

/* msg:insert_header(i, name, value) - the new field becomes the i-th
 * (1-based) of the received ones; past the last: at the end */
static int
msg_insert_header(lua_State *L)
{
	struct lh_session *ls = check_msg(L, 1);
	lua_Integer i = luaL_checkinteger(L, 2);
	size_t nlen, vlen;
	const char *name = luaL_checklstring(L, 3, &nlen), *value = luaL_checklstring(L, 4, &vlen);

	if (i < 1 || strlen(name) != nlen || strlen(value) != vlen ||
	    ls->in->host->insert_header(ls->call, (size_t)(i - 1), name, value) != 0)
		return luaL_error(L, "msg:insert_header: refused (a bad index, name or value)");
	return 0;
}

/* msg:remove_header(name) - leave out every received field called name */
static int
msg_remove_header(lua_State *L)
{
	struct lh_session *ls = check_msg(L, 1);
	size_t len;
	const char *name = luaL_checklstring(L, 2, &len);

	if (strlen(name) != len || ls->in->host->remove_header(ls->call, name) != 0)
		return luaL_error(L, "msg:remove_header: refused (a bad name)");
	return 0;
}

/* msg:replace_body(text) - streamed to the host in chunks (plugin.h
 * body_replace_*): plain text, LF or CR LF line ends, no dot-stuffing */
static int
msg_replace_body(lua_State *L)
{
	struct lh_session *ls = check_msg(L, 1);
	size_t len;
	const char *text = luaL_checklstring(L, 2, &len);
	const struct pc_host *host = ls->in->host;

	if (host->body_replace_begin(ls->call) != 0)
		return luaL_error(L, "msg:replace_body: refused");
	for (size_t o = 0; o < len; o += 65536) {
		size_t n = len - o < 65536 ? len - o : 65536;
		if (host->body_replace_write(ls->call, text + o, n) != 0)
			return luaL_error(L, "msg:replace_body: refused (a bare CR or a NUL)");
	}
	if (host->body_replace_end(ls->call) != 0)
		return luaL_error(L, "msg:replace_body: refused (a bare CR at the end)");
	return 0;
}

static int
msg_index(lua_State *L)
{
	struct lh_session *ls = check_msg(L, 1);
	const char *k = luaL_checkstring(L, 2);

	if (strcmp(k, "size") == 0)
		lua_pushinteger(L, (lua_Integer)ls->in->host->msg_size(ls->call));
	else if (strcmp(k, "header") == 0)
		lua_pushcfunction(L, msg_header);
	else if (strcmp(k, "headers") == 0)
		lua_pushcfunction(L, msg_headers);
	else if (strcmp(k, "body") == 0)
		lua_pushcfunction(L, msg_body);
	else if (strcmp(k, "change_header") == 0)
		lua_pushcfunction(L, msg_change_header);
	else if (strcmp(k, "insert_header") == 0)
		lua_pushcfunction(L, msg_insert_header);
	else if (strcmp(k, "remove_header") == 0)
		lua_pushcfunction(L, msg_remove_header);
	else if (strcmp(k, "replace_body") == 0)
		lua_pushcfunction(L, msg_replace_body);
	else
		lua_pushnil(L);
	return 1;
}

/* lh_push_msg - the message object for one on_data call */
void
lh_push_msg(lua_State *L, struct lh_session *ls)
{
	struct lh_umsg *m;

	lh_push_conn(L, ls);
	m = lua_newuserdatauv(L, sizeof(*m), 1);
	m->c = ls->conn_ud;
	m->gen = ls->msg_gen;
	lua_pushvalue(L, -2);
	lua_setiuservalue(L, -2, 1);
	luaL_setmetatable(L, MT_MSG);
	lua_remove(L, -2);
}

/* lh_invalidate_msg - on_data returned: msg objects go stale */
void
lh_invalidate_msg(lua_State *L, struct lh_session *ls)
{
	ls->msg_gen++;
}

/* ---- verdicts ---- */

static int
verdict_new(lua_State *L, enum pc_action action, const char *reply)
{
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, action);
	lua_setfield(L, -2, "action");
	if (reply != NULL) {
		lua_pushstring(L, reply);
		lua_setfield(L, -2, "reply");
	}
	luaL_setmetatable(L, MT_VERDICT);
	return 1;
}

/* check_code - "550" or "550 5.7.1" of the right class; raises if not */
static void
check_code(lua_State *L, const char *code, char cls, const char *what)
{
	const char *p = code;
	char msg[160];

	msg[0] = '\0';
	if (!(isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[1]) &&
	        isdigit((unsigned char)p[2])) ||
	    (p[3] != '\0' && p[3] != ' '))
		snprintf(msg, sizeof(msg), "smtp.%s: \"%.40s\" is not a reply code", what, code);
	else if (p[0] != cls)
		snprintf(msg, sizeof(msg), "smtp.%s needs a %cxx code, not %.3s", what, cls, code);
	else if (p[3] == ' ' && !(p[4] == cls && p[5] == '.'))
		snprintf(msg, sizeof(msg), "smtp.%s: enhanced code \"%.20s\" must start with %c.",
		    what, p + 4, cls);
	if (msg[0] != '\0')
		luaL_error(L, "%s", msg);
}

/* reply_verdict - smtp.reject / smtp.tempfail ([code], [text]) */
static int
reply_verdict(lua_State *L, enum pc_action action, char cls, const char *what)
{
	const char *code = NULL, *text = NULL;
	char num[32];

	if (lua_type(L, 1) == LUA_TNUMBER) {
		snprintf(num, sizeof(num), "%lld", (long long)luaL_checkinteger(L, 1));
		code = num;
		text = luaL_optstring(L, 2, NULL);
	} else if (lua_type(L, 1) == LUA_TSTRING) {
		const char *s = lua_tostring(L, 1);
		if (isdigit((unsigned char)s[0])) {
			code = s;
			text = luaL_optstring(L, 2, NULL);
		} else {
			text = s;
			if (!lua_isnoneornil(L, 2))
				return luaL_error(L, "smtp.%s(text) takes one text", what);
		}
	} else if (lua_isnoneornil(L, 1)) {
		text = luaL_optstring(L, 2, NULL); /* smtp.reject(nil, "text") */
	} else {
		return luaL_argerror(L, 1, "expected a reply code or a text");
	}
	if (code != NULL)
		check_code(L, code, cls, what);
	if (code != NULL && text != NULL)
		lua_pushfstring(L, "%s %s", code, text);
	else if (code != NULL || text != NULL)
		lua_pushstring(L, code != NULL ? code : text);
	else
		return verdict_new(L, action, NULL);
	return verdict_new(L, action, lua_tostring(L, -1));
}

static int
smtp_accept(lua_State *L)
{
	return verdict_new(L, PC_ACCEPT, NULL);
}

static int
smtp_drop(lua_State *L)
{
	return verdict_new(L, PC_DROP, NULL);
}

static int
smtp_reject(lua_State *L)
{
	return reply_verdict(L, PC_REJECT, '5', "reject");
}

static int
smtp_tempfail(lua_State *L)
{
	return reply_verdict(L, PC_TEMPFAIL, '4', "tempfail");
}

static int
smtp_disconnect(lua_State *L)
{
	return verdict_new(L, PC_DISCONNECT, luaL_optstring(L, 1, NULL));
}

/* lh_verdict - what a hook returned (see luahost.h) */
int
lh_verdict(lua_State *co, int nres, struct lh_session *ls, struct pc_verdict *v, const char **why)
{
	static char msg[96];
	lua_Integer action;
	int is_verdict;

	v->action = PC_CONTINUE;
	v->reply = NULL;
	if (nres == 0)
		return 0;
	if (nres > 1) {
		snprintf(
		    msg, sizeof(msg), "bad return value: %d values (return one verdict)", nres);
		*why = msg;
		return -1;
	}
	is_verdict = lua_type(co, -1) == LUA_TTABLE && lua_getmetatable(co, -1);
	if (is_verdict) {
		luaL_getmetatable(co, MT_VERDICT);
		is_verdict = lua_rawequal(co, -1, -2);
		lua_pop(co, 2);
	}
	if (!is_verdict) {
		snprintf(msg, sizeof(msg), "bad return value (%s): return nothing or a verdict",
		    luaL_typename(co, -1));
		*why = msg;
		return -1;
	}
	lua_getfield(co, -1, "action");
	action = lua_tointeger(co, -1);
	lua_getfield(co, -2, "reply");
	if (lua_isstring(co, -1)) {
		snprintf(ls->reply, sizeof(ls->reply), "%s", lua_tostring(co, -1));
		v->reply = ls->reply;
	}
	lua_pop(co, 2);
	v->action = (enum pc_action)action;
	return 0;
}

/* ---- smtp, log, print, config ---- */

struct sleep_wait {
	struct event *ev;
	struct lh_run *run;
};

static void
sleep_done(evutil_socket_t fd, short what, void *arg)
{
	struct sleep_wait *w = arg;
	struct lh_run *run = w->run;

	event_free(w->ev);
	free(w);
	lua_pushboolean(run->co, 1);
	lh_wait_done(run, 1);
}

static void
sleep_cancel(struct lh_wait *arg)
{
	struct sleep_wait *w = (struct sleep_wait *)arg;

	event_free(w->ev);
	free(w);
}

static int
smtp_sleep(lua_State *L)
{
	lua_Number s = luaL_checknumber(L, 1);
	struct lh_run *run = lh_current(L);
	struct sleep_wait *w;
	struct timeval tv;

	if (run == NULL || !lua_isyieldable(L))
		return luaL_error(L, "smtp.sleep cannot wait here");
	if (s < 0)
		s = 0;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return luaL_error(L, "out of memory");
	w->run = run;
	w->ev = evtimer_new(instance_of(L)->host->base, sleep_done, w);
	if (w->ev == NULL) {
		free(w);
		return luaL_error(L, "out of memory");
	}
	tv.tv_sec = (time_t)s;
	tv.tv_usec = (suseconds_t)((s - (lua_Number)tv.tv_sec) * 1e6);
	evtimer_add(w->ev, &tv);
	return lh_wait_start(L, w, sleep_cancel);
}

/* A list file read at load time is at most this big. */
#define LH_LINES_MAX (16 * 1024 * 1024)

/* smtp_lines - the lines of a file, at load time only: reading a file in a
 * hook would stop every session while the disk answers */
static int
smtp_lines(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	char line[8192];
	size_t total = 0;
	lua_Integer n = 0;
	FILE *fp;

	if (!lh_state_of(L)->loading)
		return luaL_error(L, "smtp.lines: files can only be read when the script loads");
	if ((fp = fopen(path, "r")) == NULL) {
		lua_pushnil(L);
		lua_pushfstring(L, "%s: %s", path, strerror(errno));
		return 2;
	}
	lua_newtable(L);
	while (fgets(line, sizeof(line), fp) != NULL) {
		size_t len = strlen(line);
		total += len;
		if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
			fclose(fp);
			return luaL_error(L, "smtp.lines: %s has a line longer than 8 KB", path);
		}
		if (total > LH_LINES_MAX) {
			fclose(fp);
			return luaL_error(L, "smtp.lines: %s is larger than 16 MB", path);
		}
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		lua_pushlstring(L, line, len);
		lua_rawseti(L, -2, ++n);
	}
	fclose(fp);
	return 1;
}

static int
smtp_now(lua_State *L)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	lua_pushnumber(L, (lua_Number)tv.tv_sec + (lua_Number)tv.tv_usec / 1e6);
	return 1;
}

/* smtp_net - the network of ip with v4bits or v6bits: "192.0.2.0/24" */
static int
smtp_net(lua_State *L)
{
	const char *ip = luaL_checkstring(L, 1);
	lua_Integer b4 = luaL_optinteger(L, 2, 32), b6 = luaL_optinteger(L, 3, 128), bits;
	unsigned char a[16];
	char out[INET6_ADDRSTRLEN];
	int family = strchr(ip, ':') ? AF_INET6 : AF_INET;
	int len = family == AF_INET ? 4 : 16;

	if (inet_pton(family, ip, a) != 1) {
		lua_pushnil(L);
		lua_pushfstring(L, "not an IP address: %s", ip);
		return 2;
	}
	bits = family == AF_INET ? b4 : b6;
	if (bits < 0 || bits > len * 8)
		return luaL_error(L, "smtp.net: %d bits for an IPv%d address", (int)bits,
		    family == AF_INET ? 4 : 6);
	for (int i = 0; i < len; i++) {
		int keep = (int)bits - i * 8;
		if (keep <= 0)
			a[i] = 0;
		else if (keep < 8)
			a[i] &= (unsigned char)(0xff << (8 - keep));
	}
	inet_ntop(family, a, out, sizeof(out));
	lua_pushfstring(L, "%s/%d", out, (int)bits);
	return 1;
}

static int
log_info(lua_State *L)
{
	return log_line(L, 1, call_of(L), PC_LOG_INFO);
}

static int
log_warn(lua_State *L)
{
	return log_line(L, 1, call_of(L), PC_LOG_WARN);
}

static int
log_err(lua_State *L)
{
	return log_line(L, 1, call_of(L), PC_LOG_ERR);
}

static int
lh_print(lua_State *L)
{
	struct lh_instance *in = instance_of(L);
	int n = lua_gettop(L);
	luaL_Buffer b;

	luaL_buffinit(L, &b);
	for (int i = 1; i <= n; i++) {
		if (i > 1)
			luaL_addchar(&b, '\t');
		luaL_tolstring(L, i, NULL);
		luaL_addvalue(&b);
	}
	luaL_pushresult(&b);
	in->host->log(in->self, call_of(L), PC_LOG_INFO, "%s", lua_tostring(L, -1));
	return 0;
}

/* instance_of - the section a state belongs to (registry) */
static struct lh_instance *
instance_of(lua_State *L)
{
	struct lh_instance *in;

	lua_getfield(L, LUA_REGISTRYINDEX, "portcullis.instance");
	in = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return in;
}

/* call_of - the hook call running now, for log lines */
static struct pc_call *
call_of(lua_State *L)
{
	struct lh_run *run = lh_current(L);

	return run != NULL ? run->call : NULL;
}

/* object_mt - a metatable for objects scripts read and cannot change */
static void
object_mt(lua_State *L, const char *name, lua_CFunction index)
{
	luaL_newmetatable(L, name);
	if (index != NULL) {
		lua_pushcfunction(L, index);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, readonly);
		lua_setfield(L, -2, "__newindex");
	}
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);
}

/* lh_api_open - the globals and metatables of a new state */
void
lh_api_open(lua_State *L, struct lh_instance *in)
{
	static const luaL_Reg smtp[] = {
	    {"accept", smtp_accept},
	    {"reject", smtp_reject},
	    {"tempfail", smtp_tempfail},
	    {"drop", smtp_drop},
	    {"disconnect", smtp_disconnect},
	    {"sleep", smtp_sleep},
	    {"now", smtp_now},
	    {"net", smtp_net},
	    {"lines", smtp_lines},
	    {NULL, NULL},
	};
	static const luaL_Reg logf[] = {
	    {"info", log_info},
	    {"warn", log_warn},
	    {"err", log_err},
	    {NULL, NULL},
	};

	lua_pushlightuserdata(L, in);
	lua_setfield(L, LUA_REGISTRYINDEX, "portcullis.instance");
	object_mt(L, MT_CONN, conn_index);
	object_mt(L, MT_TX, tx_index);
	object_mt(L, MT_MSG, msg_index);
	object_mt(L, MT_VERDICT, NULL);

	luaL_newlib(L, smtp);
	lua_setglobal(L, "smtp");
	lua_getglobal(L, "string");
	lua_getfield(L, -1, "format");
	luaL_newlibtable(L, logf);
	lua_pushvalue(L, -2);
	luaL_setfuncs(L, logf, 1);
	lua_setglobal(L, "log");
	lua_pop(L, 2);
	lua_pushcfunction(L, lh_print);
	lua_setglobal(L, "print");
	/* config: the section's own keys, as strings */
	lua_newtable(L);
	for (const struct pc_option *o = in->options; o != NULL; o = o->next) {
		if (lh_key_reserved(o->key))
			continue;
		lua_pushstring(L, o->value);
		lua_setfield(L, -2, o->key);
	}
	lua_setglobal(L, "config");
}
