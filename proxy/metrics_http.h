/*
 * metrics_http.h - the metrics_listen endpoint (/metrics, /healthz,
 * /sessions) on the daemon's loop, and portcullis -s's client for it.
 */
#ifndef PORTCULLIS_METRICS_HTTP_H
#define PORTCULLIS_METRICS_HTTP_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

struct server;
struct evbuffer;

/* metrics_http_start - serve srv->cfg's metrics_listen (nothing when it is
 * not set). 0, or -1 with the reason in err. */
int metrics_http_start(struct server *srv, char *err, size_t errlen);

/* A SIGHUP that changes metrics_listen: prepare binds the new address (the
 * old one still serves) and fails with err if it cannot; commit then closes
 * the old one, abort the new one. */
int metrics_http_prepare(struct server *srv, const struct config *cfg, char *err, size_t errlen);
void metrics_http_commit(void);
void metrics_http_abort(void);

/* metrics_http_stop - close the endpoint (at exit). */
void metrics_http_stop(void);

/* metrics_sessions - the live view of srv's sessions into out: a count,
 * a header, then "ID CLIENT STATE AGE TX TLS WAITING", one line each. */
void metrics_sessions(struct server *srv, struct evbuffer *out);
/* The two halves of it: the count and the header; the rows (a worker's,
 * which the master puts under one header). */
void metrics_sessions_header(struct evbuffer *out, unsigned long n);
void metrics_sessions_rows(struct server *srv, struct evbuffer *out);

/* metrics_http_sessions_hook - /sessions calls fn instead (the master,
 * which asks its workers); fn answers, later, with metrics_http_reply. */
struct evhttp_request;
void metrics_http_sessions_hook(void (*fn)(struct evhttp_request *req, void *arg), void *arg);
/* metrics_http_reply - 200 with body (text/plain). */
void metrics_http_reply(struct evhttp_request *req, struct evbuffer *body);

/* metrics_http_fetch - GET path from a running daemon's endpoint at a and
 * write the body to out (portcullis -s). 0, or -1 with err. */
int metrics_http_fetch(
    const struct config_addr *a, const char *path, FILE *out, char *err, size_t errlen);

#endif
