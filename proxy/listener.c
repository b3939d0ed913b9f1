/*
 * listener.c - the listening sockets: accept, the connection limits, and the
 * PROXY protocol header; then the client is handed to a session.
 *
 * Exports listener_bind, listener_start and listener_stop. The sockets are
 * bound by the process that starts (listener_bind) and accepted on by the
 * one that serves: the same process with workers = 1, else every worker,
 * on the sockets the master bound. Connection limits are checked
 * before any allocation, so a flood costs one accept and one write per
 * connection; they count across workers (server_ip_acquire). On a proxy_protocol listener the header is read first (with
 * the client deadline), and the per-IP limit applies to the client it names.
 * When accept itself fails for want of descriptors or memory, every
 * listener pauses for LISTENER_PAUSE_MS.
 */
#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/listener.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "proxyproto.h"
#include "replies.h"
#include "server.h"
#include "session.h"

#define LISTENER_MAX CONFIG_LISTEN_MAX

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

static struct evconnlistener *listeners[LISTENER_MAX];
/* What a listener knows: the server and its listen entry (options), copied:
 * the configuration it came from goes at the next SIGHUP, the socket stays. */
static struct listener_ctx {
	struct server *srv;
	struct config_addr l;
} lctx[LISTENER_MAX];
static size_t nlisteners;

/* A client on a proxy_protocol listener whose header is not in yet. */
struct waiting {
	struct server *srv;
	struct client_info ci;
	char peer[80]; /* the balancer's "ip:port", for the log */
	struct event *ev, *deadline;
	TAILQ_ENTRY(waiting) entry;
};
static TAILQ_HEAD(, waiting) waiting_list = TAILQ_HEAD_INITIALIZER(waiting_list);
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
static void listener_refuse(evutil_socket_t fd, const struct reply *reply, const char *host);
static int listener_limits(struct server *srv, evutil_socket_t fd, const char *ip,
    struct client_info *ci, const char *peer);
static void proxy_wait(struct server *srv, struct client_info *ci, const char *peer);
static void proxy_read_cb(evutil_socket_t fd, short what, void *arg);
static void proxy_deadline_cb(evutil_socket_t fd, short what, void *arg);
static void proxy_done(struct waiting *w, int close_fd);

/* listener_bind - a listening socket for every listen address of cfg, in
 * fds (CONFIG_LISTEN_MAX); -1 (logged) if any fails, with none left open */
int
listener_bind(const struct config *cfg, int *fds, size_t *nfds)
{
	*nfds = 0;
	for (size_t i = 0; i < cfg->nlisten; i++) {
		struct addrinfo hints = {0}, *res;
		int r, fd, on = 1;

		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
		r = getaddrinfo(strcmp(cfg->listen[i].host, "*") ? cfg->listen[i].host : NULL,
		    cfg->listen[i].port, &hints, &res);
		if (r != 0) {
			log_err(NULL, "listen %s:%s: %s", cfg->listen[i].host, cfg->listen[i].port,
			    gai_strerror(r));
			goto fail;
		}
		fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
		    bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 511) != 0) {
			int e = errno;
			log_err(NULL, "listen %s:%s: %s", cfg->listen[i].host, cfg->listen[i].port,
			    strerror(e));
			if (fd >= 0)
				close(fd);
			freeaddrinfo(res);
			goto fail;
		}
		freeaddrinfo(res);
		fds[(*nfds)++] = fd;
		log_info(NULL, "listening on %s:%s%s%s", cfg->listen[i].host, cfg->listen[i].port,
		    cfg->listen[i].tls ? " tls" : "",
		    cfg->listen[i].proxy ? " proxy_protocol" : "");
	}
	return PC_OK;
fail:
	while (*nfds > 0)
		close(fds[--(*nfds)]);
	return PC_ERROR;
}

/* listener_start - accept on fds (listener_bind's, for srv->cfg's listen
 * entries, in order); they are closed by listener_stop */
int
listener_start(struct server *srv, const int *fds, size_t nfds)
{
	struct config *cfg = srv->cfg;

	if (server_ip_init(srv) != 0)
		return PC_ERROR;
	if ((resume_ev = evtimer_new(srv->base, listener_resume_cb, NULL)) == NULL)
		return PC_ERROR;
	for (size_t i = 0; i < nfds && i < cfg->nlisten; i++) {
		lctx[nlisteners].srv = srv;
		lctx[nlisteners].l = cfg->listen[i];
		listeners[nlisteners] = evconnlistener_new(srv->base, listener_accept_cb,
		    &lctx[nlisteners], LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fds[i]);
		if (listeners[nlisteners] == NULL) {
			log_err(NULL, "listen %s:%s: %s", cfg->listen[i].host, cfg->listen[i].port,
			    strerror(errno));
			return PC_ERROR;
		}
		evconnlistener_set_error_cb(listeners[nlisteners], listener_error_cb);
		nlisteners++;
	}
	return PC_OK;
}

/* listener_stop - close every listening socket (SIGTERM); a pause ends too */
void
listener_stop(void)
{
	for (size_t i = 0; i < nlisteners; i++)
		evconnlistener_free(listeners[i]);
	nlisteners = 0;
	while (!TAILQ_EMPTY(&waiting_list))
		proxy_done(TAILQ_FIRST(&waiting_list), 1);
	if (resume_ev != NULL) {
		event_free(resume_ev);
		resume_ev = NULL;
	}
}

/* listener_accept_cb - a client connected: the limits, then a session
 * (or, on a proxy_protocol listener, the header first) */
static void
listener_accept_cb(
    struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct listener_ctx *lc = arg;
	struct server *srv = lc->srv;
	const struct config *cfg = srv->cfg;
	struct client_info ci;
	char peer[80];

	memset(&ci, 0, sizeof(ci));
	ci.fd = fd;
	ci.listener = &lc->l;
	snprintf(ci.ip, sizeof(ci.ip), "?");
	snprintf(ci.port, sizeof(ci.port), "0");
	getnameinfo(sa, (socklen_t)salen, ci.ip, sizeof(ci.ip), ci.port, sizeof(ci.port),
	    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(peer, sizeof(peer), "%s:%s", ci.ip, ci.port);
	/* Refusals at accept cost one write and no allocation. */
	if (srv->draining) {
		log_warn(NULL, "refused client=%s: shutting down", peer);
		metrics_inc(M_CONN_REFUSED_DRAINING);
		listener_refuse(fd, R_SHUTDOWN, cfg->hostname);
		return;
	}
	/* The local address is looked up when a plugin may want it
	 * (session_view), unless a PROXY header names it. */
	if (lc->l.proxy) {
		if (!config_net_match(cfg->proxy_trusted, cfg->nproxy_trusted, sa)) {
			/* Only a trusted balancer may say who the client is. */
			log_warn(NULL,
			    "refused %s on a proxy_protocol listener: not in proxy_trusted", peer);
			metrics_inc(M_CONN_REFUSED_PROXY);
			close(fd);
			return;
		}
		/* It counts toward max_connections while it sends its header. */
		if (listener_limits(srv, fd, NULL, &ci, peer) != 0)
			return;
		server_session_id(srv, ci.id);
		proxy_wait(srv, &ci, peer);
		return;
	}
	if (listener_limits(srv, fd, ci.ip, &ci, peer) != 0)
		return;
	server_session_id(srv, ci.id);
	session_new(srv, &ci);
}

/* listener_limits - count the client (ip NULL: one waiting for its PROXY
 * header), or refuse it with the limit it is over; 0 when counted */
static int
listener_limits(struct server *srv, evutil_socket_t fd, const char *ip, struct client_info *ci,
    const char *peer)
{
	const struct config *cfg = srv->cfg;

	switch (server_ip_acquire(srv, ip, ci->ip_key, sizeof(ci->ip_key))) {
	case SHMCONN_OK:
		return 0;
	case SHMCONN_TOTAL:
		log_warn(
		    ci->id[0] ? ci->id : NULL, "refused client=%s: max_connections reached", peer);
		metrics_inc(M_CONN_REFUSED_LIMIT);
		listener_refuse(fd, R_TOO_MANY_CONN, cfg->hostname);
		break;
	case SHMCONN_FULL:
		log_warn(ci->id[0] ? ci->id : NULL,
		    "refused client=%s: the connection table is full (it holds the clients of "
		    "max_connections at start; raising it takes a restart)",
		    peer);
		metrics_inc(M_CONN_REFUSED_LIMIT);
		listener_refuse(fd, R_TOO_MANY_CONN, cfg->hostname);
		break;
	case SHMCONN_PER_KEY:
		log_warn(ci->id[0] ? ci->id : NULL,
		    "refused client=%s: max_connections_per_ip reached", peer);
		metrics_inc(M_CONN_REFUSED_IP_LIMIT);
		listener_refuse(fd, R_TOO_MANY_CONN_IP, cfg->hostname);
		break;
	}
	ci->ip_key[0] = '\0';
	return -1;
}

/* listener_refuse - one 421 straight into the socket, then close */
static void
listener_refuse(evutil_socket_t fd, const struct reply *reply, const char *host)
{
	char msg[600];

	reply_line(reply, host, msg, sizeof(msg) - 2);
	strcat(msg, "\r\n");
	if (write(fd, msg, strlen(msg)) < 0) {
		/* The client gets nothing; it was leaving anyway. */
	}
	close(fd);
}

/* proxy_wait - read the PROXY header before anything else. Edge-triggered:
 * the header is peeked at, so the socket stays readable until it is whole. */
static void
proxy_wait(struct server *srv, struct client_info *ci, const char *peer)
{
	struct waiting *w = calloc(1, sizeof(*w));
	uint64_t ms = srv->cfg->timeout_ms;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

	if (w == NULL) {
		log_err(ci->id, "out of memory accepting %s", peer);
		close(ci->fd);
		return;
	}
	w->srv = srv;
	w->ci = *ci;
	snprintf(w->peer, sizeof(w->peer), "%s", peer);
	w->ev = event_new(srv->base, ci->fd, EV_READ | EV_PERSIST | EV_ET, proxy_read_cb, w);
	w->deadline = evtimer_new(srv->base, proxy_deadline_cb, w);
	TAILQ_INSERT_TAIL(&waiting_list, w, entry);
	srv->nwaiting++;
	if (w->ev == NULL || w->deadline == NULL || event_add(w->ev, NULL) != 0) {
		log_err(ci->id, "out of memory accepting %s", peer);
		proxy_done(w, 1);
		return;
	}
	evtimer_add(w->deadline, &tv);
}

/* proxy_done - the wait is over (the fd is closed, or handed on) */
static void
proxy_done(struct waiting *w, int close_fd)
{
	struct server *srv = w->srv;

	TAILQ_REMOVE(&waiting_list, w, entry);
	srv->nwaiting--;
	if (w->ev != NULL)
		event_free(w->ev);
	if (w->deadline != NULL)
		event_free(w->deadline);
	if (close_fd) {
		server_ip_release(srv, w->ci.ip_key);
		close(w->ci.fd);
	}
	free(w);
	if (close_fd)
		server_session_gone(srv);
}

static void
proxy_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct waiting *w = arg;

	log_info(w->ci.id, "timeout waiting for the PROXY header from %s", w->peer);
	metrics_inc(M_CONN_REFUSED_PROXY);
	proxy_done(w, 1);
}

/* proxy_read_cb - the PROXY header, peeked at until complete, then read
 * exactly: what follows it (SMTP, or a TLS ClientHello) stays in the socket */
static void
proxy_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct waiting *w = arg;
	struct server *srv = w->srv;
	struct client_info ci = w->ci;
	unsigned char buf[PROXYPROTO_V2_MAX];
	struct proxyproto pp;
	char peer[80];
	size_t consumed = 0;
	const char *why = NULL;
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK);
	int r;

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		log_info(ci.id, "%s closed before its PROXY header", w->peer);
		metrics_inc(M_CONN_REFUSED_PROXY);
		proxy_done(w, 1);
		return;
	}
	r = proxyproto_parse(buf, (size_t)n, &pp, &consumed, &why);
	if (r == PC_AGAIN && (size_t)n < sizeof(buf))
		return;
	if (r != PC_OK) {
		log_warn(ci.id, "bad PROXY header from %s: %s; closing", w->peer,
		    why ? why : "too long");
		metrics_inc(M_CONN_REFUSED_PROXY);
		proxy_done(w, 1);
		return;
	}
	if (recv(fd, buf, consumed, 0) != (ssize_t)consumed) {
		proxy_done(w, 1);
		return;
	}
	if (!pp.local) {
		getnameinfo((struct sockaddr *)&pp.src, pp.src_len, ci.ip, sizeof(ci.ip), ci.port,
		    sizeof(ci.port), NI_NUMERICHOST | NI_NUMERICSERV);
		getnameinfo((struct sockaddr *)&pp.dst, pp.dst_len, ci.local_ip,
		    sizeof(ci.local_ip), ci.local_port, sizeof(ci.local_port),
		    NI_NUMERICHOST | NI_NUMERICSERV);
		log_info(ci.id, "PROXY v%d header from %s: client=%s:%s", pp.version, w->peer,
		    ci.ip, ci.port);
	}
	proxy_done(w, 0);
	/* Counted from now on as the client the header names. */
	server_ip_release(srv, ci.ip_key);
	snprintf(peer, sizeof(peer), "%s:%s", ci.ip, ci.port);
	if (listener_limits(srv, fd, ci.ip, &ci, peer) != 0) {
		server_session_gone(srv);
		return;
	}
	session_new(srv, &ci);
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
