/*
 * dns.c - the DNS helpers scripts call (DESIGN.md §6): dns.a, dns.aaaa,
 * dns.ptr, dns.rbl and dns.rhsbl, on the daemon's shared evdns resolver.
 *
 * Exports lh_dns_open. Each call starts its queries at once (all zones of
 * a dns.rbl in parallel), yields the hook's coroutine, and is resumed when
 * the last answer is in. A cancelled call (the session went away) cancels
 * its queries; libevent still calls back for each, and the last callback
 * frees the wait.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>

#include "luahost.h"

/* A name we build: reversed address (72 octets for IPv6) plus a zone. */
#define DNS_NAME_MAX 256
/* Zones one dns.rbl may ask at once. */
#define DNS_ZONES_MAX 32

enum dns_kind {
	DNS_LIST, /* dns.a, dns.aaaa, dns.ptr: a list of answers */
	DNS_RBL, /* dns.rbl, dns.rhsbl: listed and errors per zone */
};

struct dns_wait;

struct dns_q {
	struct dns_wait *w;
	struct evdns_request *req;
	char zone[DNS_NAME_MAX];
	int done;
	int result; /* DNS_ERR_* */
	int count;
	char (*answers)[INET6_ADDRSTRLEN + DNS_NAME_MAX];
};

struct dns_wait {
	struct lh_run *run; /* NULL once the call was cancelled */
	struct evdns_base *dns;
	enum dns_kind kind;
	int outstanding;
	int nq;
	struct dns_q q[];
};

static void dns_answer(int result, char type, int count, int ttl, void *addrs, void *arg);

/* dns_error - a short word for a failure */
static const char *
dns_error(int result)
{
	switch (result) {
	case DNS_ERR_TIMEOUT:
		return "timeout";
	case DNS_ERR_SERVERFAILED:
		return "servfail";
	case DNS_ERR_REFUSED:
		return "refused";
	case DNS_ERR_FORMAT:
		return "format error";
	case DNS_ERR_TRUNCATED:
		return "truncated";
	case DNS_ERR_SHUTDOWN:
	case DNS_ERR_CANCEL:
		return "cancelled";
	default:
		return evdns_err_to_string(result);
	}
}

static int
not_found(const struct dns_q *q)
{
	return q->result == DNS_ERR_NOTEXIST || q->result == DNS_ERR_NODATA ||
	    (q->result == DNS_ERR_NONE && q->count == 0);
}

/* dns_push - protected: the results, on the main thread's stack */
static int
dns_push(lua_State *L)
{
	struct dns_wait *w = lua_touserdata(L, 1);
	int nerr = 0;

	lua_settop(L, 0);
	if (w->kind == DNS_LIST) {
		struct dns_q *q = &w->q[0];
		if (q->result != DNS_ERR_NONE && !not_found(q)) {
			lua_pushnil(L);
			lua_pushstring(L, dns_error(q->result));
			return 2;
		}
		lua_createtable(L, q->count, 0);
		for (int i = 0; i < q->count; i++) {
			lua_pushstring(L, q->answers[i]);
			lua_rawseti(L, -2, i + 1);
		}
		return 1;
	}
	lua_newtable(L); /* listed */
	lua_newtable(L); /* errors */
	for (int i = 0; i < w->nq; i++) {
		struct dns_q *q = &w->q[i];
		if (not_found(q))
			continue;
		if (q->result != DNS_ERR_NONE) {
			lua_pushstring(L, dns_error(q->result));
			lua_setfield(L, 2, q->zone);
			nerr++;
		} else if (strncmp(q->answers[0], "127.255.255.", 12) == 0) {
			/* RFC 5782 §2.1: the list says it cannot answer (over
			 * quota, open resolver...): an error, not a listing. */
			lua_pushstring(L, q->answers[0]);
			lua_setfield(L, 2, q->zone);
			nerr++;
		} else {
			lua_pushstring(L, q->answers[0]);
			lua_setfield(L, 1, q->zone);
		}
	}
	if (nerr == 0) {
		lua_pop(L, 1);
		lua_pushnil(L);
	}
	return 2;
}

/* dns_free - the wait and what its queries found */
static void
dns_free(struct dns_wait *w)
{
	for (int i = 0; i < w->nq; i++)
		free(w->q[i].answers);
	free(w);
}

/* dns_finish - every query answered: resume the script */
static void
dns_finish(struct dns_wait *w)
{
	struct lh_run *run = w->run;
	lua_State *L = run->st->L;
	int top = lua_gettop(L), n;

	lua_pushcfunction(L, dns_push);
	lua_pushlightuserdata(L, w);
	if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) {
		lua_settop(L, top);
		lua_pushnil(L);
	}
	n = lua_gettop(L) - top;
	dns_free(w);
	lua_xmove(L, run->co, n);
	lh_wait_done(run, n);
}

/* dns_answer - evdns calls back, for an answer, a failure or a cancel */
static void
dns_answer(int result, char type, int count, int ttl, void *addrs, void *arg)
{
	struct dns_q *q = arg;
	struct dns_wait *w = q->w;

	q->req = NULL;
	q->done = 1;
	q->result = result;
	if (result == DNS_ERR_NONE && count > 0 && addrs != NULL &&
	    (q->answers = calloc((size_t)count, sizeof(*q->answers))) != NULL) {
		for (int i = 0; i < count; i++) {
			if (type == DNS_IPv4_A)
				inet_ntop(AF_INET, (struct in_addr *)addrs + i, q->answers[i],
				    sizeof(q->answers[i]));
			else if (type == DNS_IPv6_AAAA)
				inet_ntop(AF_INET6, (struct in6_addr *)addrs + i, q->answers[i],
				    sizeof(q->answers[i]));
			else if (type == DNS_PTR)
				snprintf(q->answers[i], sizeof(q->answers[i]), "%s",
				    ((char **)addrs)[i]);
		}
		q->count = count;
	}
	if (--w->outstanding > 0)
		return;
	if (w->run == NULL)
		dns_free(w);
	else
		dns_finish(w);
}

/* dns_cancel - the script will not be resumed: drop the queries */
static void
dns_cancel(struct lh_wait *arg)
{
	struct dns_wait *w = (struct dns_wait *)arg;

	w->run = NULL;
	for (int i = 0; i < w->nq; i++) {
		struct evdns_request *req = w->q[i].req;
		if (req != NULL && !w->q[i].done) {
			w->q[i].req = NULL;
			evdns_cancel_request(w->dns, req); /* dns_answer follows */
		}
	}
}

/* dns_new - a wait for n queries of the running hook call */
static struct dns_wait *
dns_new(lua_State *L, enum dns_kind kind, int n)
{
	struct lh_run *run = lh_current(L);
	struct dns_wait *w;

	if (run == NULL || !lua_isyieldable(L))
		luaL_error(L, "DNS lookups cannot wait here (only inside a hook)");
	if ((w = calloc(1, sizeof(*w) + (size_t)n * sizeof(struct dns_q))) == NULL)
		luaL_error(L, "out of memory");
	w->run = run;
	w->dns = run->st->in->host->dns;
	w->kind = kind;
	w->nq = n;
	for (int i = 0; i < n; i++)
		w->q[i].w = w;
	return w;
}

/* dns_start - send the queries and wait; a query that cannot even start
 * counts as failed */
static int
dns_start(lua_State *L, struct dns_wait *w, const char *const *names, int type, const void *rev)
{
	w->outstanding = w->nq;
	for (int i = 0; i < w->nq; i++) {
		struct dns_q *q = &w->q[i];
		if (type == DNS_PTR && rev != NULL && strchr(names[0], ':') == NULL)
			q->req = evdns_base_resolve_reverse(
			    w->dns, rev, DNS_QUERY_NO_SEARCH, dns_answer, q);
		else if (type == DNS_PTR && rev != NULL)
			q->req = evdns_base_resolve_reverse_ipv6(
			    w->dns, rev, DNS_QUERY_NO_SEARCH, dns_answer, q);
		else if (type == DNS_IPv6_AAAA)
			q->req = evdns_base_resolve_ipv6(
			    w->dns, names[i], DNS_QUERY_NO_SEARCH, dns_answer, q);
		else
			q->req = evdns_base_resolve_ipv4(
			    w->dns, names[i], DNS_QUERY_NO_SEARCH, dns_answer, q);
		if (q->req == NULL && !q->done) {
			q->done = 1;
			q->result = DNS_ERR_UNKNOWN;
			w->outstanding--;
		}
	}
	if (w->outstanding == 0) {
		/* Nothing went out: answer at once, without waiting. */
		int top = lua_gettop(L), ok;
		lua_pushcfunction(L, dns_push);
		lua_pushlightuserdata(L, w);
		ok = lua_pcall(L, 1, LUA_MULTRET, 0) == LUA_OK;
		dns_free(w);
		if (!ok)
			return lua_error(L);
		return lua_gettop(L) - top;
	}
	return lh_wait_start(L, w, dns_cancel);
}

/* check_name - a domain name we will ask about */
static const char *
check_name(lua_State *L, int idx)
{
	size_t len;
	const char *name = luaL_checklstring(L, idx, &len);

	if (len == 0 || len >= DNS_NAME_MAX - 80)
		luaL_argerror(L, idx, "not a domain name");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!(isalnum(c) || c == '.' || c == '-' || c == '_'))
			luaL_argerror(L, idx, "not a domain name");
	}
	return name;
}

static int
dns_list(lua_State *L, int type)
{
	const char *name = check_name(L, 1);
	struct dns_wait *w = dns_new(L, DNS_LIST, 1);

	return dns_start(L, w, &name, type, NULL);
}

static int
dns_a(lua_State *L)
{
	return dns_list(L, DNS_IPv4_A);
}

static int
dns_aaaa(lua_State *L)
{
	return dns_list(L, DNS_IPv6_AAAA);
}

static int
dns_ptr(lua_State *L)
{
	const char *ip = luaL_checkstring(L, 1);
	static unsigned char addr[16]; /* evdns copies it at once */
	struct dns_wait *w;

	if (inet_pton(strchr(ip, ':') ? AF_INET6 : AF_INET, ip, addr) != 1) {
		lua_pushnil(L);
		lua_pushfstring(L, "not an IP address: %s", ip);
		return 2;
	}
	w = dns_new(L, DNS_LIST, 1);
	return dns_start(L, w, &ip, DNS_PTR, addr);
}

/* reverse_ip - RFC 5782 §2.1/§2.4: 4.3.2.1 or the nibbles of an IPv6 */
static int
reverse_ip(const char *ip, char *out, size_t size)
{
	unsigned char a[16];
	size_t o = 0;

	if (inet_pton(AF_INET, ip, a) == 1 ||
	    (strncasecmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, '.') != NULL &&
	        inet_pton(AF_INET, ip + 7, a) == 1)) {
		snprintf(out, size, "%u.%u.%u.%u", a[3], a[2], a[1], a[0]);
		return 0;
	}
	if (inet_pton(AF_INET6, ip, a) != 1)
		return -1;
	for (int i = 15; i >= 0 && o + 4 < size; i--)
		o += (size_t)snprintf(
		    out + o, size - o, "%x.%x%s", a[i] & 0xf, a[i] >> 4, i > 0 ? "." : "");
	return 0;
}

/* dns_lists - ask prefix.zone for every zone (a string or an array of up
 * to DNS_ZONES_MAX) */
static int
dns_lists(lua_State *L, const char *prefix, int zones_idx)
{
	char names[DNS_ZONES_MAX][DNS_NAME_MAX];
	const char *ptrs[DNS_ZONES_MAX];
	const char *zones[DNS_ZONES_MAX];
	int n = 0;
	struct dns_wait *w;

	if (lua_type(L, zones_idx) == LUA_TSTRING) {
		lua_pushvalue(L, zones_idx);
		lua_newtable(L);
		lua_insert(L, -2);
		lua_rawseti(L, -2, 1);
		lua_replace(L, zones_idx);
	}
	luaL_checktype(L, zones_idx, LUA_TTABLE);
	if (lua_rawlen(L, zones_idx) > DNS_ZONES_MAX)
		return luaL_argerror(L, zones_idx, "more than 32 zones");
	for (lua_Integer i = 1; n < DNS_ZONES_MAX; i++) {
		if (lua_rawgeti(L, zones_idx, i) == LUA_TNIL) {
			lua_pop(L, 1);
			break;
		}
		zones[n] = lua_tostring(L, -1);
		if (zones[n] == NULL)
			luaL_argerror(L, zones_idx, "zones must be strings");
		lua_pop(L, 1); /* the table keeps the string alive */
		n++;
	}
	if (n == 0) {
		lua_newtable(L);
		lua_pushnil(L);
		return 2;
	}
	w = dns_new(L, DNS_RBL, n);
	for (int i = 0; i < n; i++) {
		snprintf(w->q[i].zone, sizeof(w->q[i].zone), "%s", zones[i]);
		snprintf(names[i], sizeof(names[i]), "%s.%s", prefix, zones[i]);
		ptrs[i] = names[i];
	}
	return dns_start(L, w, ptrs, DNS_IPv4_A, NULL);
}

static int
dns_rbl(lua_State *L)
{
	const char *ip = luaL_checkstring(L, 1);
	char rev[80];

	if (reverse_ip(ip, rev, sizeof(rev)) != 0) {
		lua_pushnil(L);
		lua_pushfstring(L, "not an IP address: %s", ip);
		return 2;
	}
	return dns_lists(L, rev, 2);
}

static int
dns_rhsbl(lua_State *L)
{
	return dns_lists(L, check_name(L, 1), 2);
}

/* lh_dns_open - the dns global */
void
lh_dns_open(lua_State *L)
{
	static const luaL_Reg fns[] = {
	    {"a", dns_a},
	    {"aaaa", dns_aaaa},
	    {"ptr", dns_ptr},
	    {"rbl", dns_rbl},
	    {"rhsbl", dns_rhsbl},
	    {NULL, NULL},
	};

	luaL_newlib(L, fns);
	lua_setglobal(L, "dns");
}
