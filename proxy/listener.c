/*
 * listener.c - the listening sockets and the per-address connection counts.
 *
 * Exports listener_start, listener_stop, server_ip_acquire and
 * server_ip_release. Connection limits are checked in session_new, before any
 * allocation, so a flood costs one accept and one write per connection.
 */
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include <event2/listener.h>

#include "log.h"
#include "session.h"

#define LISTENER_MAX CONFIG_LISTEN_MAX
#define IP_BUCKETS 4096

struct ip_count {
	char ip[64];
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

static void listener_accept_cb(
    struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg);
static void listener_error_cb(struct evconnlistener *l, void *arg);
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

/* listener_stop - close every listening socket (SIGTERM) */
void
listener_stop(void)
{
	for (size_t i = 0; i < nlisteners; i++)
		evconnlistener_free(listeners[i]);
	nlisteners = 0;
}

static void
listener_accept_cb(
    struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct listener_ctx *lc = arg;

	session_new(lc->srv, &lc->l, fd, sa, salen);
}

/* listener_error_cb - accept failed (EMFILE and friends): log, keep going */
static void
listener_error_cb(struct evconnlistener *l, void *arg)
{
	log_err(NULL, "accept: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

/* ip_hash - FNV-1a over the textual address */
static size_t
ip_hash(const char *ip)
{
	size_t h = 2166136261u;

	for (; *ip != '\0'; ip++)
		h = (h ^ (unsigned char)*ip) * 16777619u;
	return h % IP_BUCKETS;
}

/* server_ip_acquire - count one more connection from ip; -1 over the limit */
int
server_ip_acquire(struct server *srv, const char *ip)
{
	struct ip_count **head = &srv->ip_table[ip_hash(ip)], *c;

	for (c = *head; c != NULL; c = c->next)
		if (strcmp(c->ip, ip) == 0)
			break;
	if (c == NULL) {
		if ((c = calloc(1, sizeof(*c))) == NULL)
			return -1;
		strncpy(c->ip, ip, sizeof(c->ip) - 1);
		c->next = *head;
		*head = c;
	}
	/* The per-address limit stops one host taking every slot. */
	if (c->n >= srv->cfg->max_connections_per_ip)
		return -1;
	c->n++;
	return 0;
}

/* server_ip_release - one connection from ip ended */
void
server_ip_release(struct server *srv, const char *ip)
{
	struct ip_count **pp = &srv->ip_table[ip_hash(ip)], *c;

	for (; (c = *pp) != NULL; pp = &c->next) {
		if (strcmp(c->ip, ip) != 0)
			continue;
		if (--c->n == 0) {
			*pp = c->next;
			free(c);
		}
		return;
	}
}
