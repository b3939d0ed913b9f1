/*
 * metrics_http.c - the metrics_listen endpoint, served by libevent's evhttp
 * on the daemon's own loop: /metrics (Prometheus text), /healthz (200, or
 * 503 while draining) and /sessions (the live view). And the client side of
 * the live view, portcullis -s, which asks a running daemon for /sessions.
 *
 * The endpoint is for a scraper and an admin, not for the world: it should
 * listen on a loopback or management address. Even so a peer there is not
 * trusted: only GET and HEAD, small request headers, no body, and a
 * connection that says nothing is closed after METRICS_HTTP_TIMEOUT_S.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "session.h"

#define METRICS_HTTP_TIMEOUT_S 10
#define METRICS_HTTP_HEADERS_MAX 8192

static struct evhttp *http;
static struct evhttp_bound_socket *bound, *next_bound;
static struct config_addr bound_addr, next_addr;
static int have_bound, have_next;
static struct server *http_srv;
/* The master answers /sessions by asking its workers. */
static void (*sessions_fn)(struct evhttp_request *req, void *arg);
static void *sessions_arg;

static void on_metrics(struct evhttp_request *req, void *arg);
static void on_healthz(struct evhttp_request *req, void *arg);
static void on_sessions(struct evhttp_request *req, void *arg);
static void on_other(struct evhttp_request *req, void *arg);

static int
addr_equal(const struct config_addr *a, const struct config_addr *b)
{
	return strcmp(a->host, b->host) == 0 && strcmp(a->port, b->port) == 0;
}

/* bind_one - a listening socket for a on the endpoint; NULL with err */
static struct evhttp_bound_socket *
bind_one(const struct config_addr *a, char *err, size_t errlen)
{
	struct evhttp_bound_socket *h;
	char *end;
	unsigned long port = strtoul(a->port, &end, 10);

	if (*end != '\0' || port == 0 || port > 65535) {
		snprintf(err, errlen, "metrics_listen %s:%s: the port must be a number (1-65535)",
		    a->host, a->port);
		return NULL;
	}
	errno = 0;
	h = evhttp_bind_socket_with_handle(http, a->host, (ev_uint16_t)port);
	if (h == NULL)
		snprintf(err, errlen, "metrics_listen %s:%s: %s", a->host, a->port,
		    errno ? strerror(errno) : "cannot listen");
	return h;
}

static int
http_create(struct server *srv, char *err, size_t errlen)
{
	if (http != NULL)
		return 0;
	if ((http = evhttp_new(srv->base)) == NULL) {
		snprintf(err, errlen, "metrics_listen: out of memory");
		return -1;
	}
	http_srv = srv;
	evhttp_set_timeout(http, METRICS_HTTP_TIMEOUT_S);
	evhttp_set_max_headers_size(http, METRICS_HTTP_HEADERS_MAX);
	evhttp_set_max_body_size(http, 0);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_cb(http, "/metrics", on_metrics, srv);
	evhttp_set_cb(http, "/healthz", on_healthz, srv);
	evhttp_set_cb(http, "/sessions", on_sessions, srv);
	evhttp_set_gencb(http, on_other, srv);
	return 0;
}

/* metrics_http_start - see metrics_http.h */
int
metrics_http_start(struct server *srv, char *err, size_t errlen)
{
	/* At start as at a reload, from nothing bound. */
	if (metrics_http_prepare(srv, srv->cfg, err, errlen) != 0)
		return -1;
	metrics_http_commit();
	return 0;
}

/* metrics_http_prepare - see metrics_http.h */
int
metrics_http_prepare(struct server *srv, const struct config *cfg, char *err, size_t errlen)
{
	have_next = cfg->have_metrics_listen;
	next_bound = NULL;
	if (!have_next || (have_bound && addr_equal(&bound_addr, &cfg->metrics_listen)))
		return 0;
	if (http_create(srv, err, errlen) != 0)
		return -1;
	if ((next_bound = bind_one(&cfg->metrics_listen, err, errlen)) == NULL)
		return -1;
	next_addr = cfg->metrics_listen;
	return 0;
}

/* metrics_http_commit - see metrics_http.h */
void
metrics_http_commit(void)
{
	if (have_next && next_bound == NULL)
		return; /* the same address: the socket stays */
	if (have_bound) {
		evhttp_del_accept_socket(http, bound);
		log_info(NULL, "metrics no longer on %s:%s", bound_addr.host, bound_addr.port);
	}
	bound = next_bound;
	have_bound = have_next;
	next_bound = NULL;
	if (have_bound) {
		bound_addr = next_addr;
		log_info(NULL, "metrics on http://%s%s%s:%s/metrics",
		    strchr(bound_addr.host, ':') ? "[" : "", bound_addr.host,
		    strchr(bound_addr.host, ':') ? "]" : "", bound_addr.port);
	}
}

/* metrics_http_abort - see metrics_http.h */
void
metrics_http_abort(void)
{
	if (next_bound != NULL)
		evhttp_del_accept_socket(http, next_bound);
	next_bound = NULL;
}

/* metrics_http_stop - see metrics_http.h */
void
metrics_http_stop(void)
{
	if (http != NULL)
		evhttp_free(http);
	http = NULL;
	bound = next_bound = NULL;
	have_bound = have_next = 0;
}

static void
reply(struct evhttp_request *req, int code, const char *reason, const char *type,
    struct evbuffer *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply(req, code, reason, body);
}

static void
on_metrics(struct evhttp_request *req, void *arg)
{
	struct evbuffer *out = evbuffer_new();

	const struct metrics_shard *sh;
	size_t n;

	(void)arg;
	sh = metrics_source(&n);
	if (out == NULL || metrics_render(out, sh, n) != 0) {
		evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
		if (out != NULL)
			evbuffer_free(out);
		return;
	}
	reply(req, HTTP_OK, "OK", "text/plain; version=0.0.4; charset=utf-8", out);
	evbuffer_free(out);
}

static void
on_healthz(struct evhttp_request *req, void *arg)
{
	struct server *srv = arg;
	struct evbuffer *out = evbuffer_new();

	if (out == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
		return;
	}
	if (srv->draining) {
		evbuffer_add_printf(out, "draining\n");
		reply(req, 503, "Service Unavailable", "text/plain; charset=utf-8", out);
	} else {
		evbuffer_add_printf(out, "ok\n");
		reply(req, HTTP_OK, "OK", "text/plain; charset=utf-8", out);
	}
	evbuffer_free(out);
}

static const char *
state_name(const struct session *s)
{
	static const char *const names[] = {
	    [SESSION_CONNECTING] = "connecting",
	    [SESSION_COMMAND] = "command",
	    [SESSION_DATA] = "data",
	    [SESSION_CLOSING] = "closing",
	    [SESSION_TLS] = "tls-handshake",
	    [SESSION_AUTH] = "auth",
	};

	return (size_t)s->state < sizeof(names) / sizeof(names[0]) && names[s->state]
	    ? names[s->state]
	    : "?";
}

/* session_waits - what a busy session waits for: "filter:NAME", "backend",
 * "dns", or "-" */
static const char *
session_waits(const struct session *s, char *buf, size_t size)
{
	const char *f = chain_waiting(&s->cs);

	if (f != NULL) {
		snprintf(buf, size, "filter:%s", f);
		return buf;
	}
	if (backend_waiting(&s->be) > 0)
		return "backend";
	if (s->be.rdns_waiting ||
	    (s->busy && s->state == SESSION_CONNECTING && s->rdns.wait != NULL))
		return "dns";
	return "-";
}

/* metrics_sessions_header - see metrics_http.h */
void
metrics_sessions_header(struct evbuffer *out, unsigned long n)
{
	evbuffer_add_printf(out, "# %lu session(s)\n", n);
	evbuffer_add_printf(out, "%-12s %-47s %-13s %8s %-6s %-9s %s\n", "ID", "CLIENT", "STATE",
	    "AGE", "TX", "TLS", "WAITING");
}

/* metrics_sessions_rows - see metrics_http.h */
void
metrics_sessions_rows(struct server *srv, struct evbuffer *out)
{
	const struct session *s;
	double now = metrics_now();
	char wait[METRICS_NAME_MAX + 16];

	TAILQ_FOREACH(s, &srv->sessions, entry)
	{
		char tx[16];
		if (s->tx.id[0] != '\0')
			snprintf(tx, sizeof(tx), "%u", s->tx.seq);
		else
			snprintf(tx, sizeof(tx), "-");
		evbuffer_add_printf(out, "%-12s %-47s %-13s %7.1fs %-6s %-9s %s\n", s->id, s->peer,
		    state_name(s), now - s->started, tx, s->tls_proto ? s->tls_proto : "-",
		    session_waits(s, wait, sizeof(wait)));
	}
}

/* metrics_sessions - the live view: one line a session (see metrics_http.h) */
void
metrics_sessions(struct server *srv, struct evbuffer *out)
{
	metrics_sessions_header(out, srv->nsessions);
	metrics_sessions_rows(srv, out);
}

void
metrics_http_sessions_hook(void (*fn)(struct evhttp_request *req, void *arg), void *arg)
{
	sessions_fn = fn;
	sessions_arg = arg;
}

/* metrics_http_reply - see metrics_http.h */
void
metrics_http_reply(struct evhttp_request *req, struct evbuffer *body)
{
	reply(req, HTTP_OK, "OK", "text/plain; charset=utf-8", body);
}

static void
on_sessions(struct evhttp_request *req, void *arg)
{
	struct evbuffer *out;

	if (sessions_fn != NULL) {
		sessions_fn(req, sessions_arg);
		return;
	}
	out = evbuffer_new();

	if (out == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
		return;
	}
	metrics_sessions(arg, out);
	reply(req, HTTP_OK, "OK", "text/plain; charset=utf-8", out);
	evbuffer_free(out);
}

static void
on_other(struct evhttp_request *req, void *arg)
{
	(void)arg;
	evhttp_send_error(req, HTTP_NOTFOUND, "try /metrics, /healthz or /sessions");
}

/* ---- portcullis -s ---- */

/* io_wait - poll one fd for what; 0, or -1 when ms passed or it failed */
static int
io_wait(int fd, short what, int ms)
{
	struct pollfd p = {.fd = fd, .events = what};
	int n;

	while ((n = poll(&p, 1, ms)) < 0 && errno == EINTR)
		;
	if (n == 0)
		errno = ETIMEDOUT;
	return n == 1 ? 0 : -1;
}

/* metrics_http_fetch - see metrics_http.h */
int
metrics_http_fetch(
    const struct config_addr *a, const char *path, FILE *out, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	char req[512], buf[16384];
	int fd = -1, rc = -1, gai, code = 0;
	size_t have = 0, sent = 0, len;
	char *body;
	ssize_t n;

	if ((gai = getaddrinfo(a->host, a->port, &hints, &res)) != 0) {
		snprintf(
		    err, errlen, "metrics_listen %s:%s: %s", a->host, a->port, gai_strerror(gai));
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || (connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS) ||
	    io_wait(fd, POLLOUT, 5000) != 0) {
		snprintf(err, errlen,
		    "cannot connect to metrics_listen %s:%s: %s (is portcullis "
		    "running with this configuration?)",
		    a->host, a->port, errno ? strerror(errno) : "timed out");
		goto out;
	}
	{
		int e = 0;
		socklen_t el = sizeof(e);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e != 0) {
			snprintf(err, errlen,
			    "cannot connect to metrics_listen %s:%s: %s (is portcullis running "
			    "with this configuration?)",
			    a->host, a->port, strerror(e));
			goto out;
		}
	}
	len = (size_t)snprintf(req, sizeof(req),
	    "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: portcullis\r\n\r\n", path, a->host);
	while (sent < len) {
		n = io_wait(fd, POLLOUT, 5000) == 0 ? send(fd, req + sent, len - sent, MSG_NOSIGNAL)
		                                    : (errno = ETIMEDOUT, -1);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0) {
			snprintf(err, errlen, "metrics_listen %s:%s: cannot send the request: %s",
			    a->host, a->port, strerror(errno));
			goto out;
		}
		sent += (size_t)n;
	}
	/* The answer: the status line and headers (kept), then the body,
	 * streamed to out. */
	body = NULL;
	for (;;) {
		if (io_wait(fd, POLLIN, 10000) != 0) {
			snprintf(err, errlen, "metrics_listen %s:%s: no answer within 10 s",
			    a->host, a->port);
			goto out;
		}
		n = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = '\0';
		if (body == NULL && (body = strstr(buf, "\r\n\r\n")) != NULL) {
			if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1)
				code = 0;
			body += 4;
			fwrite(body, 1, have - (size_t)(body - buf), out);
			have = 0;
			continue;
		}
		if (body != NULL) {
			fwrite(buf, 1, have, out);
			have = 0;
		} else if (have == sizeof(buf) - 1) {
			break;
		}
	}
	if (body == NULL) {
		snprintf(err, errlen, "metrics_listen %s:%s: no HTTP answer for %s", a->host,
		    a->port, path);
		goto out;
	}
	if (code != 200) {
		snprintf(err, errlen, "metrics_listen %s:%s: HTTP %d for %s", a->host, a->port,
		    code, path);
		goto out;
	}
	rc = fflush(out) == 0 ? 0 : -1;
	if (rc != 0)
		snprintf(err, errlen, "cannot write the answer: %s", strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return rc;
}
