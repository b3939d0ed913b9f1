/*
 * store_redis.c - the Redis store (DESIGN.md §7): "redis://" and "unix:"
 * specs, one hiredis asynchronous connection per store on the daemon's
 * libevent loop.
 *
 * Exports store_redis_backend and store_unix_backend. The name in logs is
 * st->name, which store.c makes from the spec with the user part before
 * '@' replaced by three stars.
 *
 * Specs, parsed strictly at open (portcullis -t reports the error):
 *
 *	redis://HOST[:PORT][/DB]                 port 6379, db 0
 *	redis://:PASSWORD@HOST[:PORT][/DB]       AUTH PASSWORD
 *	redis://USER:PASSWORD@HOST[:PORT][/DB]   AUTH USER PASSWORD (ACLs)
 *	unix:/PATH[?db=N]
 *
 * HOST is an IPv4 address, an IPv6 address in brackets or a name; a name
 * is resolved once, when the store opens (hiredis would resolve it with a
 * blocking getaddrinfo on every reconnect, on the loop). USER and PASSWORD
 * may hold %XX escapes, and must for '@' (%40) and '/' (%2F): the part
 * before the first '@' of what precedes the first '/' is what store.c
 * hides in logs, so nothing of a password may fall outside it.
 *
 * The loop never blocks: redisAsyncConnect, then AUTH and SELECT go first
 * on every connection, pipelined; commands sent while it connects queue
 * behind them. "connected" is logged when SELECT succeeds, and the backoff
 * is reset then. A connection that fails or is lost is logged once, loudly,
 * and retried after a backoff of 100 ms doubling to 10 s; while it is down a
 * request fails at once (the plugin's on_error decides), nothing queues.
 *
 * Every command has a deadline, store_timeout (st->set.timeout_ms) after it
 * was sent. Redis answers in order, so the commands in flight sit in one
 * list, oldest first, and one timer watches the oldest. When it expires the
 * connection is dropped: every request on it fails ("timed out after
 * 1000ms") and a new connection starts after the backoff. Dropping is the
 * simple correct choice: a late reply can then never be matched to the
 * wrong request, and a server too slow for one command is too slow for
 * those queued behind it.
 *
 * A request's hiredis privdata is a struct redis_cmd, never the request.
 * Cancelling, or dropping the connection, detaches the request from its
 * cmd; hiredis still calls back once per command (with the reply, or NULL
 * when the context is freed) and that callback frees the cmd. Requests are
 * failed only after the connection is detached from the store, so a done
 * callback may submit again (it fails at once) or even close the store:
 * close inside a hiredis callback waits for the callback to return (busy).
 *
 * What a hostile or broken server can make us hold is bounded here, not
 * by hiredis 0.14 (whose reader maxbuf only decides when an idle buffer is
 * released): the reader's object functions are wrapped to refuse a reply
 * nobody asked for (hiredis would assert), an array longer than
 * REDIS_REPLY_MAX_ELEMENTS and a reply of more objects than that in all;
 * the libevent adapter's read event is wrapped to drop a connection whose
 * unparsed input passes REDIS_READ_MAX (a huge bulk length); hiredis
 * itself refuses arrays nested deeper than 7, and the conversion for
 * store_command checks REDIS_REPLY_MAX_DEPTH again.
 *
 * store_command refuses the commands that would break the shared
 * connection for everyone: (P|S)SUBSCRIBE and friends, MONITOR, SYNC,
 * PSYNC, HELLO, RESET, SELECT, AUTH, QUIT, CLIENT REPLY, MULTI/EXEC/
 * DISCARD/WATCH/UNWATCH (other requests would land in the transaction)
 * and the blocking ones (BLPOP..., WAIT, XREAD BLOCK).
 */
#include <sys/socket.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#include "log.h"
#include "store.h"

#define REDIS_DEFAULT_PORT 6379
#define REDIS_DEFAULT_TIMEOUT_MS 1000
/* Reconnect backoff: first retry, then doubling up to the cap. */
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 10000
/* A hostile server must not make us allocate without bound: objects in one
 * reply, nesting of a converted reply, unparsed octets buffered. */
#define REDIS_REPLY_MAX_ELEMENTS 100000
#define REDIS_REPLY_MAX_DEPTH 8
#define REDIS_READ_MAX (16 * 1024 * 1024)
/* store_scan: keys asked of each SCAN step. */
#define REDIS_SCAN_COUNT "1000"
/* Redis error texts quoted into a failure, at most. */
#define REDIS_ERR_QUOTE 200

/* incr with a ttl: the ttl is set only when this call creates the key (a
 * key that exists with 0, or by = 0, must not get a fresh window). */
static const char redis_incr_script[] = "local new = redis.call('EXISTS', KEYS[1]) == 0\n"
                                        "local n = redis.call('INCRBY', KEYS[1], ARGV[1])\n"
                                        "if new then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
                                        "return n\n";

enum redis_state {
	RDS_DOWN = 0, /* waiting for the retry timer */
	RDS_CONNECTING, /* connecting, AUTH and SELECT in flight */
	RDS_UP,
};

enum redis_cmd_kind {
	CMD_AUTH,
	CMD_SELECT,
	CMD_REQ,
	CMD_SCAN,
	CMD_SCAN_GET,
	CMD_SCAN_PTTL,
};

struct redis_store;
struct redis_scan;

/* One command sent: hiredis's privdata for it. */
struct redis_cmd {
	struct redis_cmd *next, *prev; /* rs's commands in flight, oldest first */
	struct redis_store *rs; /* NULL once detached: the reply is dropped */
	enum redis_cmd_kind kind;
	struct pc_store_req *req; /* CMD_REQ; NULL once cancelled */
	struct redis_scan *scan; /* CMD_SCAN* */
	size_t idx; /* CMD_SCAN_GET, _PTTL: the key in the batch */
	uint64_t deadline; /* monotonic milliseconds */
};

struct redis_scan_key {
	char *key, *value;
	size_t klen, vlen;
	int64_t ttl_ms; /* -1: none; -2: gone */
	int have_value;
};

struct redis_scan {
	struct redis_store *rs; /* NULL once failed */
	struct redis_scan *next; /* a list of scans to fail */
	char *pattern;
	size_t patlen;
	char cursor[32];
	store_scan_fn each;
	store_scan_done_fn done;
	void *arg;
	struct redis_scan_key *keys;
	size_t nkeys;
	size_t waiting; /* replies of this batch still due */
};

struct redis_store {
	char *name; /* a copy of st->name: the store may outlive st in close */
	struct event_base *base;
	/* the spec */
	int is_unix;
	char addr[INET6_ADDRSTRLEN]; /* HOST, resolved */
	int port;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	long db;
	char *user, *pass; /* NULL: none */
	/* the connection */
	redisAsyncContext *ac; /* NULL while down */
	enum redis_state state;
	struct redis_cmd *head, *tail;
	struct event *timer; /* the oldest command's deadline */
	struct event *retry; /* the next connection attempt */
	uint64_t timeout_ms;
	uint64_t backoff_ms; /* the next retry's delay */
	uint64_t retry_in_ms; /* the pending retry's delay, for messages */
	char last_error[256]; /* why it is down */
	int down_logged; /* the outage is in the log already */
	int ever_up;
	const char *why; /* our reason for a reader error */
	size_t reply_objects; /* in the reply being read */
	redisReplyObjectFunctions fn; /* the reader's, behind our limits */
	redisReplyObjectFunctions *orig_fn;
	unsigned busy; /* inside a callback of ours: close waits */
	int closing;
};

/* spec parsing */
static int redis_parse_tcp(struct redis_store *rs, const char *rest, char *err, size_t errlen);
static int redis_parse_unix(struct redis_store *rs, const char *rest, char *err, size_t errlen);
static int redis_decode(const char *s, size_t len, char **out);
static int redis_number(const char *s, size_t len, long max, long *out);
static int redis_resolve(
    struct redis_store *rs, const char *host, size_t hlen, char *err, size_t errlen);
/* the connection */
static void redis_connect(struct redis_store *rs);
static void redis_attach_events(struct redis_store *rs, redisAsyncContext *ac);
static void redis_read_cb(evutil_socket_t fd, short what, void *arg);
static void redis_write_cb(evutil_socket_t fd, short what, void *arg);
static void redis_connect_cb(const redisAsyncContext *ac, int status);
static void redis_disconnect_cb(const redisAsyncContext *ac, int status);
static void redis_drop(struct redis_store *rs, int freeing, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void redis_fail(struct redis_store *rs, struct pc_store_req *req, const char *why);
static void redis_retry_cb(evutil_socket_t fd, short what, void *arg);
static void redis_timer_cb(evutil_socket_t fd, short what, void *arg);
static void redis_arm_timer(struct redis_store *rs);
static void redis_enter(struct redis_store *rs);
static int redis_leave(struct redis_store *rs);
static void redis_free(struct redis_store *rs);
/* the reader's limits */
static int redis_admit(const redisReadTask *task, long long elements);
static void *redis_create_string(const redisReadTask *task, char *s, size_t len);
static void *redis_create_array(const redisReadTask *task, int elements);
static void *redis_create_integer(const redisReadTask *task, long long v);
static void *redis_create_nil(const redisReadTask *task);
/* commands */
static struct redis_cmd *redis_send(struct redis_store *rs, enum redis_cmd_kind kind, int argc,
    const char **argv, const size_t *argvlen);
static void redis_reply_cb(redisAsyncContext *ac, void *reply, void *privdata);
static void redis_handshake_reply(struct redis_store *rs, struct redis_cmd *c, redisReply *r);
static void redis_complete(struct pc_store_req *req, const redisReply *r);
static void redis_complete_command(struct pc_store_req *req, const redisReply *r);
static int redis_count(const redisReply *r, int depth, size_t *n);
static const struct pc_store_reply *redis_convert(const redisReply *r, struct pc_store_reply *nodes,
    const struct pc_store_reply **ptrs, size_t *ni, size_t *pi);
static const char *redis_refused(size_t argc, const char *const *argv, const size_t *argvlen);
static uint64_t redis_now(void);
/* scan */
static void redis_scan_next(struct redis_scan *sc);
static void redis_scan_reply(struct redis_cmd *c, redisReply *r);
static void redis_scan_batch(struct redis_scan *sc, const redisReply *keys);
static void redis_scan_emit(struct redis_scan *sc);
static void redis_scan_finish(struct redis_scan *sc, const char *error);
static void redis_scan_free_keys(struct redis_scan *sc);
static char *redis_glob_escape(const char *prefix, size_t plen, size_t *outlen);
/* the backend */
static int redis_open_tcp(struct pc_store *st, const char *rest, char *err, size_t errlen);
static int redis_open_unix(struct pc_store *st, const char *rest, char *err, size_t errlen);
static int redis_open(struct pc_store *st, struct redis_store *rs, char *err, size_t errlen);
static void redis_close(struct pc_store *st);
static void redis_submit(struct pc_store *st, struct pc_store_req *req);
static void redis_cancel(struct pc_store *st, struct pc_store_req *req);
static void redis_scan(struct pc_store *st, const char *prefix, size_t plen, store_scan_fn each,
    store_scan_done_fn done, void *arg);

const struct store_backend store_redis_backend = {
    .scheme = "redis",
    .async = 1,
    .open = redis_open_tcp,
    .close = redis_close,
    .submit = redis_submit,
    .cancel = redis_cancel,
    .scan = redis_scan,
};

const struct store_backend store_unix_backend = {
    .scheme = "unix",
    .async = 1,
    .open = redis_open_unix,
    .close = redis_close,
    .submit = redis_submit,
    .cancel = redis_cancel,
    .scan = redis_scan,
};

/* ---- specs ---- */

/* redis_number - len decimal digits, at most max: 0, or -1 */
static int
redis_number(const char *s, size_t len, long max, long *out)
{
	long v = 0;
	size_t i;

	if (len == 0 || len > 10)
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

static int
redis_hex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* redis_decode - a %XX-escaped copy (no NUL, no control octets): 0, or -1 */
static int
redis_decode(const char *s, size_t len, char **out)
{
	char *d;
	size_t i, n = 0;
	int hi, lo;
	unsigned char c;

	if ((d = malloc(len + 1)) == NULL)
		return -1;
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c == '%') {
			if (i + 2 >= len)
				goto bad;
			if ((hi = redis_hex(s[i + 1])) < 0 || (lo = redis_hex(s[i + 2])) < 0)
				goto bad;
			c = (unsigned char)(hi * 16 + lo);
			i += 2;
		}
		if (c < 0x20 || c == 0x7f)
			goto bad;
		d[n++] = (char)c;
	}
	d[n] = '\0';
	*out = d;
	return 0;
bad:
	free(d);
	return -1;
}

/* redis_resolve - HOST (a literal, or a name resolved now, once) into rs->addr */
static int
redis_resolve(struct redis_store *rs, const char *host, size_t hlen, char *err, size_t errlen)
{
	char name[256];
	unsigned char buf[16];
	struct addrinfo hints, *res = NULL;
	size_t i;
	int rc;

	if (hlen == 0 || hlen >= sizeof(name)) {
		snprintf(err, errlen, "a missing or too long host");
		return -1;
	}
	memcpy(name, host, hlen);
	name[hlen] = '\0';
	if (inet_pton(AF_INET, name, buf) == 1) {
		inet_ntop(AF_INET, buf, rs->addr, sizeof(rs->addr));
		return 0;
	}
	if (inet_pton(AF_INET6, name, buf) == 1) {
		inet_ntop(AF_INET6, buf, rs->addr, sizeof(rs->addr));
		return 0;
	}
	for (i = 0; i < hlen; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		        c == '-' || c == '.' || c == '_')) {
			snprintf(err, errlen, "a bad host name");
			return -1;
		}
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(name, NULL, &hints, &res)) != 0 || res == NULL) {
		snprintf(err, errlen, "cannot resolve %s: %s", name, gai_strerror(rc));
		return -1;
	}
	if (res->ai_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr,
		    rs->addr, sizeof(rs->addr));
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)res->ai_addr)->sin6_addr,
		    rs->addr, sizeof(rs->addr));
	freeaddrinfo(res);
	return 0;
}

/* redis_parse_tcp - "//[USER:PASSWORD@]HOST[:PORT][/DB]" */
static int
redis_parse_tcp(struct redis_store *rs, const char *rest, char *err, size_t errlen)
{
	const char *s, *at, *colon, *host, *p;
	size_t hlen;
	long v;

	if (strncmp(rest, "//", 2) != 0) {
		snprintf(err, errlen, "expected redis://HOST:PORT/DB");
		return -1;
	}
	s = rest + 2;
	if ((at = memchr(s, '@', strcspn(s, "/"))) != NULL) {
		if ((colon = memchr(s, ':', (size_t)(at - s))) == NULL) {
			snprintf(
			    err, errlen, "expected :PASSWORD@ or USER:PASSWORD@ before the host");
			return -1;
		}
		if (colon + 1 == at) {
			snprintf(err, errlen, "an empty password");
			return -1;
		}
		if ((colon > s && redis_decode(s, (size_t)(colon - s), &rs->user) < 0) ||
		    redis_decode(colon + 1, (size_t)(at - colon - 1), &rs->pass) < 0) {
			snprintf(err, errlen,
			    "a bad user or password (%%XX escapes, no control octets)");
			return -1;
		}
		s = at + 1;
	}
	if (strchr(s, '@') != NULL) {
		snprintf(
		    err, errlen, "an '@' or '/' in the password (write them as %%40 and %%2F)");
		return -1;
	}
	if (*s == '[') {
		unsigned char buf[16];
		char tmp[INET6_ADDRSTRLEN];

		host = s + 1;
		hlen = strcspn(host, "]");
		p = host + hlen;
		if (*p != ']' || hlen == 0 || hlen >= sizeof(tmp)) {
			snprintf(err, errlen, "a bad IPv6 address (expected [ADDRESS])");
			return -1;
		}
		memcpy(tmp, host, hlen);
		tmp[hlen] = '\0';
		if (inet_pton(AF_INET6, tmp, buf) != 1) {
			snprintf(err, errlen, "a bad IPv6 address");
			return -1;
		}
		p++;
	} else {
		host = s;
		hlen = strcspn(s, ":/");
		p = s + hlen;
	}
	if (redis_resolve(rs, host, hlen, err, errlen) < 0)
		return -1;
	rs->port = REDIS_DEFAULT_PORT;
	if (*p == ':') {
		size_t n = strcspn(p + 1, "/");

		if (redis_number(p + 1, n, 65535, &v) < 0 || v == 0) {
			snprintf(err, errlen, "a bad port (1 to 65535)");
			return -1;
		}
		rs->port = (int)v;
		p += 1 + n;
	}
	if (*p == '/') {
		p++;
		if (*p != '\0' && redis_number(p, strlen(p), INT_MAX, &rs->db) < 0) {
			snprintf(err, errlen, "a bad database number");
			return -1;
		}
		p += strlen(p);
	}
	if (*p != '\0') {
		snprintf(err, errlen, "unexpected text after the host");
		return -1;
	}
	return 0;
}

/* redis_parse_unix - "/PATH[?db=N]" */
static int
redis_parse_unix(struct redis_store *rs, const char *rest, char *err, size_t errlen)
{
	size_t n = strcspn(rest, "?");

	if (rest[0] != '/') {
		snprintf(err, errlen, "expected unix:/PATH[?db=N], an absolute path");
		return -1;
	}
	if (n >= sizeof(rs->path)) {
		snprintf(err, errlen, "a socket path longer than %zu octets", sizeof(rs->path) - 1);
		return -1;
	}
	memcpy(rs->path, rest, n);
	rs->path[n] = '\0';
	rs->is_unix = 1;
	if (rest[n] == '?') {
		const char *q = rest + n + 1;

		if (strncmp(q, "db=", 3) != 0 ||
		    redis_number(q + 3, strlen(q + 3), INT_MAX, &rs->db) < 0) {
			snprintf(err, errlen, "expected ?db=N after the path");
			return -1;
		}
	}
	return 0;
}

/* ---- the backend ---- */

static int
redis_open_tcp(struct pc_store *st, const char *rest, char *err, size_t errlen)
{
	struct redis_store *rs;

	if ((rs = calloc(1, sizeof(*rs))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (redis_parse_tcp(rs, rest, err, errlen) < 0) {
		redis_free(rs);
		return -1;
	}
	return redis_open(st, rs, err, errlen);
}

static int
redis_open_unix(struct pc_store *st, const char *rest, char *err, size_t errlen)
{
	struct redis_store *rs;

	if ((rs = calloc(1, sizeof(*rs))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (redis_parse_unix(rs, rest, err, errlen) < 0) {
		redis_free(rs);
		return -1;
	}
	return redis_open(st, rs, err, errlen);
}

/* redis_open - the spec is good: start connecting (a server that is down
 * is not an error: requests fail until it is up) */
static int
redis_open(struct pc_store *st, struct redis_store *rs, char *err, size_t errlen)
{
	rs->base = st->base;
	rs->timeout_ms = st->set.timeout_ms != 0 ? st->set.timeout_ms : REDIS_DEFAULT_TIMEOUT_MS;
	rs->backoff_ms = REDIS_BACKOFF_MIN_MS;
	rs->fn.createString = redis_create_string;
	rs->fn.createArray = redis_create_array;
	rs->fn.createInteger = redis_create_integer;
	rs->fn.createNil = redis_create_nil;
	if ((rs->name = strdup(st->name != NULL ? st->name : "redis")) == NULL ||
	    (rs->timer = evtimer_new(rs->base, redis_timer_cb, rs)) == NULL ||
	    (rs->retry = evtimer_new(rs->base, redis_retry_cb, rs)) == NULL) {
		snprintf(err, errlen, "out of memory");
		redis_free(rs);
		return -1;
	}
	st->priv = rs;
	redis_connect(rs);
	return 0;
}

static void
redis_free(struct redis_store *rs)
{
	if (rs->timer != NULL)
		event_free(rs->timer);
	if (rs->retry != NULL)
		event_free(rs->retry);
	free(rs->user);
	if (rs->pass != NULL) {
		explicit_bzero(rs->pass, strlen(rs->pass));
		free(rs->pass);
	}
	free(rs->name);
	free(rs);
}

/* redis_close - the last user let go: the connection goes, and requests
 * still in flight complete with PC_STORE_FAILED "store closed" (through
 * store_done, which frees them; not logged) */
static void
redis_close(struct pc_store *st)
{
	struct redis_store *rs = st->priv;

	if (rs == NULL)
		return;
	st->priv = NULL;
	rs->closing = 1;
	evtimer_del(rs->retry);
	if (rs->ac != NULL)
		redis_drop(rs, 0, "store closed");
	if (rs->busy == 0)
		redis_free(rs);
}

static void
redis_enter(struct redis_store *rs)
{
	rs->busy++;
}

/* redis_leave - 1 if rs is gone (closed from a callback) */
static int
redis_leave(struct redis_store *rs)
{
	if (--rs->busy == 0 && rs->closing) {
		redis_free(rs);
		return 1;
	}
	return 0;
}

static uint64_t
redis_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the connection ---- */

/* redis_connect - a new connection, AUTH and SELECT queued first */
static void
redis_connect(struct redis_store *rs)
{
	redisAsyncContext *ac;
	char db[24];
	const char *argv[3];
	size_t argvlen[3];
	int argc = 0;

	ac = rs->is_unix ? redisAsyncConnectUnix(rs->path) : redisAsyncConnect(rs->addr, rs->port);
	if (ac == NULL || ac->err) {
		rs->ac = NULL;
		redis_drop(rs, 0, "%s", ac != NULL ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		return;
	}
	ac->data = rs;
	rs->why = NULL;
	rs->orig_fn = ac->c.reader->fn;
	rs->fn.freeObject = rs->orig_fn->freeObject;
	ac->c.reader->fn = &rs->fn;
	/* Not redisReaderSetPrivdata: the macro casts a pointer to int. */
	ac->c.reader->privdata = rs;
	redis_attach_events(rs, ac);
	redisAsyncSetConnectCallback(ac, redis_connect_cb);
	redisAsyncSetDisconnectCallback(ac, redis_disconnect_cb);
	rs->ac = ac;
	rs->state = RDS_CONNECTING;
	if (rs->pass != NULL) {
		argv[argc] = "AUTH";
		argvlen[argc++] = 4;
		if (rs->user != NULL) {
			argv[argc] = rs->user;
			argvlen[argc++] = strlen(rs->user);
		}
		argv[argc] = rs->pass;
		argvlen[argc++] = strlen(rs->pass);
		if (redis_send(rs, CMD_AUTH, argc, argv, argvlen) == NULL) {
			redis_drop(rs, 0, "cannot send AUTH");
			return;
		}
	}
	snprintf(db, sizeof(db), "%ld", rs->db);
	argv[0] = "SELECT";
	argvlen[0] = 6;
	argv[1] = db;
	argvlen[1] = strlen(db);
	if (redis_send(rs, CMD_SELECT, 2, argv, argvlen) == NULL)
		redis_drop(rs, 0, "cannot send SELECT");
}

/* redis_attach_events - hiredis's libevent adapter, its two events replaced
 * by ones that run the same hiredis handlers inside our busy guard (and
 * check the read buffer): the adapter's hooks then add and delete ours */
static void
redis_attach_events(struct redis_store *rs, redisAsyncContext *ac)
{
	redisLibeventEvents *e;

	redisLibeventAttach(ac, rs->base);
	e = ac->ev.data;
	event_free(e->rev);
	event_free(e->wev);
	e->rev = event_new(rs->base, ac->c.fd, EV_READ, redis_read_cb, e);
	e->wev = event_new(rs->base, ac->c.fd, EV_WRITE, redis_write_cb, e);
	event_add(e->rev, NULL);
	event_add(e->wev, NULL);
}

static void
redis_read_cb(evutil_socket_t fd, short what, void *arg)
{
	redisLibeventEvents *e = arg;
	redisAsyncContext *ac = e->context;
	struct redis_store *rs = ac->data;
	redisReader *rd;

	if (rs == NULL) {
		redisAsyncHandleRead(ac);
		return;
	}
	redis_enter(rs);
	redisAsyncHandleRead(ac);
	/* ac may be gone now; it is ours still only if rs holds it. */
	if (rs->ac == ac && !rs->closing) {
		rd = ac->c.reader;
		if (rd->len - rd->pos > REDIS_READ_MAX)
			redis_drop(rs, 0, "a reply longer than %d octets", REDIS_READ_MAX);
	}
	redis_leave(rs);
}

static void
redis_write_cb(evutil_socket_t fd, short what, void *arg)
{
	redisLibeventEvents *e = arg;
	redisAsyncContext *ac = e->context;
	struct redis_store *rs = ac->data;

	if (rs != NULL)
		redis_enter(rs);
	redisAsyncHandleWrite(ac);
	if (rs != NULL)
		redis_leave(rs);
}

static void
redis_connect_cb(const redisAsyncContext *ac, int status)
{
	struct redis_store *rs = ac->data;

	/* On failure hiredis frees ac after this returns. */
	if (status != REDIS_OK && rs != NULL)
		redis_drop(rs, 1, "%s", ac->errstr);
}

static void
redis_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct redis_store *rs = ac->data;

	if (rs != NULL)
		redis_drop(rs, 1, "%s",
		    status == REDIS_OK ? "closed" : (rs->why != NULL ? rs->why : ac->errstr));
}

/* redis_drop - the connection is unusable: detach it and every command on
 * it, free it (unless hiredis is freeing it: freeing), schedule the next
 * attempt, log the outage once, then fail the requests and scans that were
 * on it. The caller must not touch rs afterwards unless it holds busy. */
static void
redis_drop(struct redis_store *rs, int freeing, const char *fmt, ...)
{
	redisAsyncContext *ac = rs->ac;
	struct pc_store_req *failed = NULL, *req;
	struct redis_scan *scans = NULL, *sc;
	struct redis_cmd *c, *next;
	struct timeval tv;
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	rs->ac = NULL;
	rs->state = RDS_DOWN;
	evtimer_del(rs->timer);
	for (c = rs->head; c != NULL; c = next) {
		next = c->next;
		c->rs = NULL;
		c->next = c->prev = NULL;
		if ((req = c->req) != NULL) {
			req->backend = NULL;
			req->next = failed;
			failed = req;
			c->req = NULL;
		}
		if ((sc = c->scan) != NULL && sc->rs != NULL) {
			sc->rs = NULL;
			sc->next = scans;
			scans = sc;
		}
		c->scan = NULL;
	}
	rs->head = rs->tail = NULL;
	if (ac != NULL) {
		ac->data = NULL;
		if (!freeing)
			redisAsyncFree(ac);
	}
	snprintf(rs->last_error, sizeof(rs->last_error), "%s", why);
	if (!rs->closing) {
		rs->retry_in_ms = rs->backoff_ms;
		rs->backoff_ms *= 2;
		if (rs->backoff_ms > REDIS_BACKOFF_MAX_MS)
			rs->backoff_ms = REDIS_BACKOFF_MAX_MS;
		tv.tv_sec = (time_t)(rs->retry_in_ms / 1000);
		tv.tv_usec = (suseconds_t)(rs->retry_in_ms % 1000) * 1000;
		evtimer_add(rs->retry, &tv);
		if (!rs->down_logged) {
			log_warn(NULL, "store %s: %s (%s), retrying in %llums", rs->name,
			    rs->ever_up ? "connection lost" : "cannot connect", why,
			    (unsigned long long)rs->retry_in_ms);
			rs->down_logged = 1;
		} else {
			log_debug(NULL, "store %s: still down (%s), retrying in %llums", rs->name,
			    why, (unsigned long long)rs->retry_in_ms);
		}
	}
	/* Requests were pushed newest first: fail them oldest first. */
	{
		struct pc_store_req *rev = NULL;

		while ((req = failed) != NULL) {
			failed = req->next;
			req->next = rev;
			rev = req;
		}
		while ((req = rev) != NULL) {
			rev = req->next;
			req->next = NULL;
			redis_fail(rs, req, why);
		}
	}
	while ((sc = scans) != NULL) {
		scans = sc->next;
		sc->done(sc->arg, why);
		redis_scan_free_keys(sc);
		free(sc->pattern);
		free(sc);
	}
}

/* redis_fail - fail req; once a done closed the store (rs->closing: st is
 * gone, rs lives while busy) without store_fail, which logs through st */
static void
redis_fail(struct redis_store *rs, struct pc_store_req *req, const char *why)
{
	struct pc_store_result res;

	if (!rs->closing) {
		store_fail(req, "%s", why);
		return;
	}
	memset(&res, 0, sizeof(res));
	res.status = PC_STORE_FAILED;
	res.error = why;
	store_done(req, &res);
}

static void
redis_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct redis_store *rs = arg;

	redis_enter(rs);
	redis_connect(rs);
	redis_leave(rs);
}

/* redis_timer_cb - the oldest command is late: the connection goes */
static void
redis_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct redis_store *rs = arg;

	if (rs->head == NULL)
		return;
	if (rs->head->deadline > redis_now()) {
		redis_arm_timer(rs);
		return;
	}
	redis_enter(rs);
	redis_drop(rs, 0, "timed out after %llums", (unsigned long long)rs->timeout_ms);
	redis_leave(rs);
}

static void
redis_arm_timer(struct redis_store *rs)
{
	struct timeval tv;
	uint64_t now, left;

	if (rs->head == NULL) {
		evtimer_del(rs->timer);
		return;
	}
	now = redis_now();
	left = rs->head->deadline > now ? rs->head->deadline - now : 0;
	tv.tv_sec = (time_t)(left / 1000);
	tv.tv_usec = (suseconds_t)(left % 1000) * 1000;
	evtimer_add(rs->timer, &tv);
}

/* ---- the reader's limits ---- */

/* redis_admit - may the reader make one more object? Not for a reply that
 * no command waits for (hiredis 0.14 asserts on one), nor past the limits */
static int
redis_admit(const redisReadTask *task, long long elements)
{
	struct redis_store *rs = task->privdata;

	if (task->parent == NULL) {
		rs->reply_objects = 0;
		if (rs->ac == NULL || rs->ac->replies.head == NULL) {
			rs->why = "a reply to no command";
			return 0;
		}
	}
	if (elements < 0 || elements > REDIS_REPLY_MAX_ELEMENTS ||
	    ++rs->reply_objects > REDIS_REPLY_MAX_ELEMENTS) {
		rs->why = "a reply of more than 100000 elements";
		return 0;
	}
	return 1;
}

static void *
redis_create_string(const redisReadTask *task, char *s, size_t len)
{
	struct redis_store *rs = task->privdata;

	return redis_admit(task, 0) ? rs->orig_fn->createString(task, s, len) : NULL;
}

static void *
redis_create_array(const redisReadTask *task, int elements)
{
	struct redis_store *rs = task->privdata;

	return redis_admit(task, elements) ? rs->orig_fn->createArray(task, elements) : NULL;
}

static void *
redis_create_integer(const redisReadTask *task, long long v)
{
	struct redis_store *rs = task->privdata;

	return redis_admit(task, 0) ? rs->orig_fn->createInteger(task, v) : NULL;
}

static void *
redis_create_nil(const redisReadTask *task)
{
	struct redis_store *rs = task->privdata;

	return redis_admit(task, 0) ? rs->orig_fn->createNil(task) : NULL;
}

/* ---- commands ---- */

/* redis_send - one command on the connection, with its deadline */
static struct redis_cmd *
redis_send(struct redis_store *rs, enum redis_cmd_kind kind, int argc, const char **argv,
    const size_t *argvlen)
{
	struct redis_cmd *c;

	if (rs->ac == NULL || (c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->rs = rs;
	c->kind = kind;
	if (redisAsyncCommandArgv(rs->ac, redis_reply_cb, c, argc, argv, argvlen) != REDIS_OK) {
		free(c);
		return NULL;
	}
	c->deadline = redis_now() + rs->timeout_ms;
	c->prev = rs->tail;
	if (rs->tail != NULL)
		rs->tail->next = c;
	else
		rs->head = c;
	rs->tail = c;
	if (rs->head == c)
		redis_arm_timer(rs);
	return c;
}

/* redis_reply_cb - hiredis's callback for every command, exactly once */
static void
redis_reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct redis_cmd *c = privdata;
	struct redis_store *rs = c->rs;
	redisReply *r = reply;

	if (rs == NULL) {
		free(c);
		return;
	}
	if (r == NULL) {
		/* hiredis is freeing the connection (an error, EOF, a reply
		 * over our limits): this drops every command, c included. */
		redis_drop(rs, 1, "%s", rs->why != NULL ? rs->why : ac->errstr);
		free(c);
		return;
	}
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		rs->head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	else
		rs->tail = c->prev;
	if (rs->head == NULL)
		evtimer_del(rs->timer);
	else if (c->prev == NULL)
		redis_arm_timer(rs);
	switch (c->kind) {
	case CMD_AUTH:
	case CMD_SELECT:
		redis_handshake_reply(rs, c, r);
		break;
	case CMD_REQ:
		if (c->req != NULL) {
			c->req->backend = NULL;
			redis_complete(c->req, r);
		}
		break;
	case CMD_SCAN:
	case CMD_SCAN_GET:
	case CMD_SCAN_PTTL:
		if (c->scan != NULL)
			redis_scan_reply(c, r);
		break;
	}
	free(c);
}

/* redis_handshake_reply - AUTH or SELECT answered; SELECT's +OK: up */
static void
redis_handshake_reply(struct redis_store *rs, struct redis_cmd *c, redisReply *r)
{
	char q[REDIS_ERR_QUOTE + 8];
	const char *what = c->kind == CMD_AUTH ? "AUTH" : "SELECT";

	if (r->type != REDIS_REPLY_STATUS) {
		redis_drop(rs, 0, "%s failed: %s", what,
		    r->type == REDIS_REPLY_ERROR ? log_quote(q, sizeof(q), r->str, r->len)
		                                 : "an unexpected reply");
		return;
	}
	if (c->kind == CMD_SELECT) {
		rs->state = RDS_UP;
		rs->backoff_ms = REDIS_BACKOFF_MIN_MS;
		rs->down_logged = 0;
		rs->ever_up = 1;
		log_info(NULL, "store %s: connected", rs->name);
	}
}

/* redis_complete - a request's reply, as store.h's result */
static void
redis_complete(struct pc_store_req *req, const redisReply *r)
{
	struct pc_store_result res;
	char q[REDIS_ERR_QUOTE + 8];

	if (req->op == STORE_COMMAND) {
		redis_complete_command(req, r);
		return;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		store_fail(req, "%s", log_quote(q, sizeof(q), r->str, r->len));
		return;
	}
	memset(&res, 0, sizeof(res));
	switch (req->op) {
	case STORE_GET:
		if (r->type == REDIS_REPLY_NIL) {
			res.status = PC_STORE_MISSING;
		} else if (r->type == REDIS_REPLY_STRING) {
			res.status = PC_STORE_OK;
			res.value = r->str;
			res.len = r->len;
		} else {
			goto unexpected;
		}
		break;
	case STORE_SET:
		if (r->type == REDIS_REPLY_NIL && (req->flags & PC_STORE_NX))
			res.status = PC_STORE_EXISTS;
		else if (r->type == REDIS_REPLY_STATUS)
			res.status = PC_STORE_OK;
		else
			goto unexpected;
		break;
	case STORE_INCR:
		if (r->type != REDIS_REPLY_INTEGER)
			goto unexpected;
		res.status = PC_STORE_OK;
		res.number = r->integer;
		break;
	case STORE_DEL:
		if (r->type != REDIS_REPLY_INTEGER)
			goto unexpected;
		res.status = r->integer > 0 ? PC_STORE_OK : PC_STORE_MISSING;
		break;
	default:
		goto unexpected;
	}
	store_done(req, &res);
	return;
unexpected:
	store_fail(req, "an unexpected reply (type %d)", r->type);
}

/* redis_complete_command - store_command's reply, converted whole into one
 * allocation that lives while done runs */
static void
redis_complete_command(struct pc_store_req *req, const redisReply *r)
{
	struct pc_store_result res;
	struct pc_store_reply *nodes;
	const struct pc_store_reply **ptrs;
	size_t n = 0, ni = 0, pi = 0;

	if (redis_count(r, 0, &n) < 0) {
		store_fail(req, "a reply nested deeper than %d or of more than %d elements",
		    REDIS_REPLY_MAX_DEPTH, REDIS_REPLY_MAX_ELEMENTS);
		return;
	}
	nodes = calloc(n, sizeof(*nodes));
	ptrs = calloc(n, sizeof(*ptrs));
	if (nodes == NULL || ptrs == NULL) {
		free(nodes);
		free(ptrs);
		store_fail(req, "out of memory");
		return;
	}
	memset(&res, 0, sizeof(res));
	res.status = PC_STORE_OK;
	res.reply = redis_convert(r, nodes, ptrs, &ni, &pi);
	store_done(req, &res);
	free(nodes);
	free(ptrs);
}

/* redis_count - the nodes of r's tree into n; -1 past the limits */
static int
redis_count(const redisReply *r, int depth, size_t *n)
{
	size_t i;

	if (depth >= REDIS_REPLY_MAX_DEPTH || ++*n > REDIS_REPLY_MAX_ELEMENTS)
		return -1;
	if (r->type == REDIS_REPLY_ARRAY)
		for (i = 0; i < r->elements; i++)
			if (r->element[i] == NULL || redis_count(r->element[i], depth + 1, n) < 0)
				return -1;
	return 0;
}

static const struct pc_store_reply *
redis_convert(const redisReply *r, struct pc_store_reply *nodes, const struct pc_store_reply **ptrs,
    size_t *ni, size_t *pi)
{
	struct pc_store_reply *p = &nodes[(*ni)++];
	size_t i, first;

	switch (r->type) {
	case REDIS_REPLY_INTEGER:
		p->type = PC_REPLY_INTEGER;
		p->integer = r->integer;
		break;
	case REDIS_REPLY_STRING:
	case REDIS_REPLY_STATUS:
	case REDIS_REPLY_ERROR:
		p->type = r->type == REDIS_REPLY_STRING ? PC_REPLY_STRING
		    : r->type == REDIS_REPLY_STATUS     ? PC_REPLY_STATUS
		                                        : PC_REPLY_ERROR;
		p->str = r->str;
		p->len = r->len;
		break;
	case REDIS_REPLY_ARRAY:
		p->type = PC_REPLY_ARRAY;
		p->elements = r->elements;
		first = *pi;
		*pi += r->elements;
		p->element = &ptrs[first];
		for (i = 0; i < r->elements; i++)
			ptrs[first + i] = redis_convert(r->element[i], nodes, ptrs, ni, pi);
		break;
	default:
		p->type = PC_REPLY_NIL;
		break;
	}
	return p;
}

/* redis_refused - why argv may not run on the shared connection, or NULL */
static const char *
redis_refused(size_t argc, const char *const *argv, const size_t *argvlen)
{
	static const char *const never[] = {"subscribe", "psubscribe", "ssubscribe", "unsubscribe",
	    "punsubscribe", "sunsubscribe", "monitor", "sync", "psync", "hello", "reset", "select",
	    "auth", "quit", "multi", "exec", "discard", "watch", "unwatch", "blpop", "brpop",
	    "brpoplpush", "blmove", "blmpop", "bzpopmin", "bzpopmax", "bzmpop", "wait", "waitaof",
	    NULL};
	size_t i;

#define ARG_IS(i, s) (argvlen[i] == strlen(s) && strncasecmp(argv[i], s, argvlen[i]) == 0)
	for (i = 0; never[i] != NULL; i++)
		if (ARG_IS(0, never[i]))
			return "it would break the connection the store shares";
	if (ARG_IS(0, "client") && argc > 1 && ARG_IS(1, "reply"))
		return "it would break the connection the store shares";
	if (ARG_IS(0, "xread") || ARG_IS(0, "xreadgroup"))
		for (i = 1; i < argc; i++)
			if (ARG_IS(i, "block"))
				return "it would block the connection the store shares";
#undef ARG_IS
	return NULL;
}

static void
redis_submit(struct pc_store *st, struct pc_store_req *req)
{
	struct redis_store *rs = st->priv;
	const char *argv[6];
	size_t argvlen[6];
	char by[32], ttl[32];
	const char *why;
	struct redis_cmd *c;
	int argc = 0;

	if (rs->ac == NULL) {
		store_fail(req, "not connected (%s; next attempt within %llums)", rs->last_error,
		    (unsigned long long)rs->retry_in_ms);
		return;
	}
	snprintf(by, sizeof(by), "%lld", req->by);
	snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)req->ttl_ms);
#define ARG(s, l) (argv[argc] = (s), argvlen[argc++] = (l))
	switch (req->op) {
	case STORE_GET:
		ARG("GET", 3);
		ARG(req->key, req->klen);
		break;
	case STORE_SET:
		ARG("SET", 3);
		ARG(req->key, req->klen);
		ARG(req->value, req->vlen);
		if (req->ttl_ms != 0) {
			ARG("PX", 2);
			ARG(ttl, strlen(ttl));
		}
		if (req->flags & PC_STORE_NX)
			ARG("NX", 2);
		break;
	case STORE_INCR:
		if (req->ttl_ms == 0) {
			ARG("INCRBY", 6);
			ARG(req->key, req->klen);
			ARG(by, strlen(by));
		} else {
			ARG("EVAL", 4);
			ARG(redis_incr_script, sizeof(redis_incr_script) - 1);
			ARG("1", 1);
			ARG(req->key, req->klen);
			ARG(by, strlen(by));
			ARG(ttl, strlen(ttl));
		}
		break;
	case STORE_DEL:
		ARG("DEL", 3);
		ARG(req->key, req->klen);
		break;
	case STORE_COMMAND:
		if (req->argc == 0 || req->argc > INT_MAX) {
			store_fail(req, "a command needs 1 to %d arguments", INT_MAX);
			return;
		}
		if ((why = redis_refused(req->argc, req->argv, req->argvlen)) != NULL) {
			char q[64];

			store_fail(req, "%s refused: %s",
			    log_quote(q, sizeof(q), req->argv[0], req->argvlen[0]), why);
			return;
		}
		c = redis_send(rs, CMD_REQ, (int)req->argc, (const char **)req->argv, req->argvlen);
		goto sent;
	}
#undef ARG
	c = redis_send(rs, CMD_REQ, argc, argv, argvlen);
sent:
	if (c == NULL) {
		store_fail(req, "cannot send the command (out of memory?)");
		return;
	}
	c->req = req;
	req->backend = c;
}

/* redis_cancel - req's done must never run: its cmd lets go of it and the
 * reply, when it comes, is dropped */
static void
redis_cancel(struct pc_store *st, struct pc_store_req *req)
{
	struct redis_cmd *c = req->backend;

	if (c != NULL)
		c->req = NULL;
	req->backend = NULL;
}

/* ---- scan ---- */

/* redis_glob_escape - "prefix*" for MATCH, prefix's glob octets escaped */
static char *
redis_glob_escape(const char *prefix, size_t plen, size_t *outlen)
{
	char *p;
	size_t i, n = 0;

	if ((p = malloc(plen * 2 + 2)) == NULL)
		return NULL;
	for (i = 0; i < plen; i++) {
		if (strchr("*?[]\\", prefix[i]) != NULL && prefix[i] != '\0')
			p[n++] = '\\';
		p[n++] = prefix[i];
	}
	p[n++] = '*';
	p[n] = '\0';
	*outlen = n;
	return p;
}

static void
redis_scan(struct pc_store *st, const char *prefix, size_t plen, store_scan_fn each,
    store_scan_done_fn done, void *arg)
{
	struct redis_store *rs = st->priv;
	struct redis_scan *sc;
	char why[300];

	if (rs->ac == NULL) {
		snprintf(why, sizeof(why), "not connected (%s)", rs->last_error);
		done(arg, why);
		return;
	}
	if ((sc = calloc(1, sizeof(*sc))) == NULL ||
	    (sc->pattern = redis_glob_escape(prefix, plen, &sc->patlen)) == NULL) {
		free(sc);
		done(arg, "out of memory");
		return;
	}
	sc->rs = rs;
	sc->each = each;
	sc->done = done;
	sc->arg = arg;
	snprintf(sc->cursor, sizeof(sc->cursor), "0");
	redis_scan_next(sc);
}

/* redis_scan_next - SCAN from the cursor */
static void
redis_scan_next(struct redis_scan *sc)
{
	const char *argv[6] = {"SCAN", sc->cursor, "MATCH", sc->pattern, "COUNT", REDIS_SCAN_COUNT};
	size_t argvlen[6] = {4, strlen(sc->cursor), 5, sc->patlen, 5, strlen(REDIS_SCAN_COUNT)};
	struct redis_cmd *c;

	if ((c = redis_send(sc->rs, CMD_SCAN, 6, argv, argvlen)) == NULL) {
		redis_scan_finish(sc, "cannot send SCAN");
		return;
	}
	c->scan = sc;
}

static void
redis_scan_reply(struct redis_cmd *c, redisReply *r)
{
	struct redis_scan *sc = c->scan;
	struct redis_scan_key *k;

	if (c->kind == CMD_SCAN) {
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len == 0 ||
		    r->element[0]->len >= sizeof(sc->cursor) ||
		    r->element[1]->type != REDIS_REPLY_ARRAY) {
			redis_scan_finish(sc, "SCAN failed or answered oddly");
			return;
		}
		memcpy(sc->cursor, r->element[0]->str, r->element[0]->len);
		sc->cursor[r->element[0]->len] = '\0';
		redis_scan_batch(sc, r->element[1]);
		return;
	}
	k = &sc->keys[c->idx];
	if (c->kind == CMD_SCAN_GET && r->type == REDIS_REPLY_STRING) {
		if ((k->value = malloc(r->len + 1)) != NULL) {
			memcpy(k->value, r->str, r->len);
			k->value[r->len] = '\0';
			k->vlen = r->len;
			k->have_value = 1;
		}
	} else if (c->kind == CMD_SCAN_PTTL && r->type == REDIS_REPLY_INTEGER) {
		k->ttl_ms = r->integer;
	}
	if (--sc->waiting == 0)
		redis_scan_emit(sc);
}

/* redis_scan_batch - GET and PTTL each key SCAN gave, pipelined */
static void
redis_scan_batch(struct redis_scan *sc, const redisReply *keys)
{
	const char *argv[2];
	size_t argvlen[2], i, n = 0;
	struct redis_cmd *c;

	redis_scan_free_keys(sc);
	if (keys->elements > 0 && (sc->keys = calloc(keys->elements, sizeof(*sc->keys))) == NULL) {
		redis_scan_finish(sc, "out of memory");
		return;
	}
	for (i = 0; i < keys->elements; i++) {
		const redisReply *k = keys->element[i];
		struct redis_scan_key *sk = &sc->keys[n];

		if (k->type != REDIS_REPLY_STRING)
			continue;
		if ((sk->key = malloc(k->len + 1)) == NULL) {
			redis_scan_finish(sc, "out of memory");
			return;
		}
		memcpy(sk->key, k->str, k->len);
		sk->key[k->len] = '\0';
		sk->klen = k->len;
		sk->ttl_ms = -2;
		n++;
	}
	sc->nkeys = n;
	if (n == 0) {
		redis_scan_emit(sc);
		return;
	}
	for (i = 0; i < n; i++) {
		argv[1] = sc->keys[i].key;
		argvlen[1] = sc->keys[i].klen;
		argv[0] = "GET";
		argvlen[0] = 3;
		if ((c = redis_send(sc->rs, CMD_SCAN_GET, 2, argv, argvlen)) == NULL)
			goto fail;
		c->scan = sc;
		c->idx = i;
		sc->waiting++;
		argv[0] = "PTTL";
		argvlen[0] = 4;
		if ((c = redis_send(sc->rs, CMD_SCAN_PTTL, 2, argv, argvlen)) == NULL)
			goto fail;
		c->scan = sc;
		c->idx = i;
		sc->waiting++;
	}
	return;
fail:
	/* Commands already sent would still point at sc: drop the connection,
	 * which fails the scan once. */
	redis_drop(sc->rs, 0, "cannot send a command for SCAN");
}

/* redis_scan_emit - the batch is complete: each live key, then the next step */
static void
redis_scan_emit(struct redis_scan *sc)
{
	size_t i;

	for (i = 0; i < sc->nkeys; i++) {
		struct redis_scan_key *k = &sc->keys[i];

		if (!k->have_value || k->ttl_ms == -2)
			continue;
		if (sc->each(sc->arg, k->key, k->klen, k->value, k->vlen, k->ttl_ms) != 0) {
			redis_scan_finish(sc, NULL);
			return;
		}
	}
	if (strcmp(sc->cursor, "0") == 0)
		redis_scan_finish(sc, NULL);
	else
		redis_scan_next(sc);
}

static void
redis_scan_finish(struct redis_scan *sc, const char *error)
{
	sc->rs = NULL;
	sc->done(sc->arg, error);
	redis_scan_free_keys(sc);
	free(sc->pattern);
	free(sc);
}

static void
redis_scan_free_keys(struct redis_scan *sc)
{
	size_t i;

	for (i = 0; i < sc->nkeys; i++) {
		free(sc->keys[i].key);
		free(sc->keys[i].value);
	}
	free(sc->keys);
	sc->keys = NULL;
	sc->nkeys = 0;
}
