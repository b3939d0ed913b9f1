/*
 * listener.c - the listening sockets and the per-client connection counts.
 *
 * Exports listener_start, listener_stop, server_ip_acquire and
 * server_ip_release. Connection limits are checked in session_new, before any
 * allocation, so a flood costs one accept and one write per connection. A
 * client is counted under its netkey (netkey.c): its IPv4 address, or its
 * IPv6 network of client_ipv6_prefix bits. When accept itself fails for want
 * of descriptors or memory, every listener pauses for LISTENER_PAUSE_MS.
 */
#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/listener.h>

#include "log.h"
#include "netkey.h"
#include "session.h"

#define LISTENER_MAX CONFIG_LISTEN_MAX
#define IP_BUCKETS 4096

/*
 * Out of descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM),
 * accept fails at once and leaves the connection queued: the socket stays
 * readable, and retrying at once spins the CPU and writes a log line per try.
 * nginx in this case disables its accept events for accept_mutex_delay
 * (500 ms); Postfix's master likewise throttles a service that keeps failing
 * (service_throttle_time) instead of retrying at once. We stop every listener
 * (they share one descriptor table) for this long. Meanwhile connections wait
 * in the listen backlog and ending sessions give descriptors back: short
 * enough that a waiting client hardly notices, long enough to stay idle.
 */
#define LISTENER_PAUSE_MS 500
/* At most one message about failed accepts per interval, with the count of
 * failures since the last one: a lasting shortage must not fill the disk. */
#define LISTENER_LOG_INTERVAL_MS 1000

struct ip_count {
	char ip[NETKEY_MAX]; /* the netkey: an address or an IPv6 network */
	unsigned long n;
	struct ip_count *next;
};

static struct evconnlistener *listeners[LISTENER_MAX];
/* What a listener knows: the server and its listen entry (options), copied:
 * the configuration it came from goes at the next SIGHUP, the socket stays. */
static struct listener_ctx {
	struct server *srv;
	struct config_addr l;
} lctx[LISTENER_MAX];
static size_t nlisteners;
/* Re-enables the listeners after a pause; pending while they are paused. */
static struct event *resume_ev;
/* Failed accepts not yet reported, and when the last report was written. */
static unsigned long accept_failures;
static uint64_t accept_logged_ms;
static int accept_logged;

static void listener_accept_cb(
    struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg);
static void listener_error_cb(struct evconnlistener *l, void *arg);
static int listener_error_transient(int err);
static void listener_pause(int err);
static void listener_resume_cb(evutil_socket_t fd, short what, void *arg);
static uint64_t listener_now_ms(void);
static size_t ip_hash(const char *ip);

/* listener_start - bind every listen address; -1 if any fails */
int
listener_start(struct server *srv)
{
	struct config *cfg = srv->cfg;

	srv->ip_buckets = IP_BUCKETS;
	srv->ip_table = calloc(IP_BUCKETS, sizeof(*srv->ip_table));
	if (srv->ip_table == NULL)
		return -1;
	if ((resume_ev = evtimer_new(srv->base, listener_resume_cb, NULL)) == NULL)
		return -1;
	for (size_t i = 0; i < cfg->nlisten; i++) {
		struct addrinfo hints = {0}, *res;
		int r;

		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
		r = getaddrinfo(strcmp(cfg->listen[i].host, "*") ? cfg->listen[i].host : NULL,
		    cfg->listen[i].port, &hints, &res);
		if (r != 0) {
			log_err(NULL, "listen %s:%s: %s", cfg->listen[i].host, cfg->listen[i].port,
			    gai_strerror(r));
			return -1;
		}
		lctx[nlisteners].srv = srv;
		lctx[nlisteners].l = cfg->listen[i];
		listeners[nlisteners] =
		    evconnlistener_new_bind(srv->base, listener_accept_cb, &lctx[nlisteners],
		        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 511,
		        res->ai_addr, (int)res->ai_addrlen);
		freeaddrinfo(res);
		if (listeners[nlisteners] == NULL) {
			log_err(NULL, "listen %s:%s: %s", cfg->listen[i].host, cfg->listen[i].port,
			    strerror(errno));
			return -1;
		}
		evconnlistener_set_error_cb(listeners[nlisteners], listener_error_cb);
		nlisteners++;
		log_info(NULL, "listening on %s:%s%s%s", cfg->listen[i].host, cfg->listen[i].port,
		    cfg->listen[i].tls ? " tls" : "",
		    cfg->listen[i].proxy ? " proxy_protocol" : "");
	}
	return 0;
}

/* listener_stop - close every listening socket (SIGTERM); a pause ends too */
void
listener_stop(void)
{
	for (size_t i = 0; i < nlisteners; i++)
		evconnlistener_free(listeners[i]);
	nlisteners = 0;
	if (resume_ev != NULL) {
		event_free(resume_ev);
		resume_ev = NULL;
	}
}

/* listener_accept_cb - a client connected: a session decides the rest */
static void
listener_accept_cb(
    struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct listener_ctx *lc = arg;

	session_new(lc->srv, &lc->l, fd, sa, salen);
}

/* listener_error_cb - accept failed; libevent already retries EINTR,
 * EAGAIN and ECONNABORTED itself */
static void
listener_error_cb(struct evconnlistener *l, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();

	if (listener_error_transient(err)) {
		log_debug(NULL, "accept: %s", strerror(err));
		return;
	}
	listener_pause(err);
}

/*
 * listener_error_transient - did accept fail for this one connection only?
 * accept(2) on Linux passes on network errors already pending on the new
 * connection (and EPERM when a firewall refuses it): the connection is gone,
 * the next one may be fine. Anything else, EMFILE, ENFILE, ENOBUFS, ENOMEM
 * above all, will fail again at once: a pause.
 */
static int
listener_error_transient(int err)
{
	switch (err) {
	case ECONNABORTED:
	case EPROTO:
	case EPERM:
	case ENETDOWN:
	case ENETUNREACH:
	case ENOPROTOOPT:
	case EHOSTDOWN:
	case EHOSTUNREACH:
	case EOPNOTSUPP:
#ifdef ENONET
	case ENONET:
#endif
		return 1;
	default:
		return 0;
	}
}

/* listener_pause - stop accepting on every listener for LISTENER_PAUSE_MS,
 * and say so at most once per LISTENER_LOG_INTERVAL_MS */
static void
listener_pause(int err)
{
	struct timeval tv = {LISTENER_PAUSE_MS / 1000, (LISTENER_PAUSE_MS % 1000) * 1000};
	uint64_t now = listener_now_ms();

	for (size_t i = 0; i < nlisteners; i++)
		evconnlistener_disable(listeners[i]);
	if (resume_ev != NULL)
		evtimer_add(resume_ev, &tv);
	accept_failures++;
	if (accept_logged && now - accept_logged_ms < LISTENER_LOG_INTERVAL_MS)
		return;
	log_err(NULL,
	    "accept: %s; pausing accepts for %d ms (failed accepts since the last message: %lu)",
	    strerror(err), LISTENER_PAUSE_MS, accept_failures);
	accept_failures = 0;
	accept_logged_ms = now;
	accept_logged = 1;
}

/* listener_resume_cb - the pause is over: try again (a failure pauses anew) */
static void
listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	for (size_t i = 0; i < nlisteners; i++)
		evconnlistener_enable(listeners[i]);
}

/* listener_now_ms - a clock for log intervals that no clock change moves */
static uint64_t
listener_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ip_hash - FNV-1a over the key */
static size_t
ip_hash(const char *ip)
{
	size_t h = 2166136261u;

	for (; *ip != '\0'; ip++)
		h = (h ^ (unsigned char)*ip) * 16777619u;
	return h % IP_BUCKETS;
}

/*
 * server_ip_acquire - count one more connection from ip (full address) under
 * its key, which goes into key (keylen bytes) for server_ip_release; -1 over
 * the limit. The caller keeps the key rather than the address: a SIGHUP may
 * change client_ipv6_prefix before the session ends.
 */
int
server_ip_acquire(struct server *srv, const char *ip, char *key, size_t keylen)
{
	struct ip_count **head, *c;

	netkey_client(ip, (unsigned)srv->cfg->client_ipv6_prefix, key, keylen);
	head = &srv->ip_table[ip_hash(key)];
	for (c = *head; c != NULL; c = c->next)
		if (strcmp(c->ip, key) == 0)
			break;
	if (c == NULL) {
		if ((c = calloc(1, sizeof(*c))) == NULL)
			return -1;
		strncpy(c->ip, key, sizeof(c->ip) - 1);
		c->next = *head;
		*head = c;
	}
	/* The per-address limit stops one host taking every slot. */
	if (c->n >= srv->cfg->max_connections_per_ip)
		return -1;
	c->n++;
	return 0;
}

/* server_ip_release - one connection counted under key (server_ip_acquire's) ended */
void
server_ip_release(struct server *srv, const char *key)
{
	struct ip_count **pp = &srv->ip_table[ip_hash(key)], *c;

	for (; (c = *pp) != NULL; pp = &c->next) {
		if (strcmp(c->ip, key) != 0)
			continue;
		if (--c->n == 0) {
			*pp = c->next;
			free(c);
		}
		return;
	}
}
