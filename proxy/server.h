/*
 * server.h - what the whole daemon shares (server.c): the event loop and
 * resolver, the TLS contexts, the backend's address, the configuration
 * generations, the sessions, and the per-client connection counts.
 */
#ifndef PORTCULLIS_SERVER_H
#define PORTCULLIS_SERVER_H

#include <stddef.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "chain.h"
#include "config.h"
#include "netkey.h"
#include "portcullis/status.h"
#include "shmconn.h"

struct event;
struct event_base;
struct evdns_base;
struct session;

TAILQ_HEAD(session_list, session);

/*
 * What a SIGHUP replaces. A session holds the generation it started with
 * (its configuration and chain) until it ends; the server holds the
 * current one. The last to let go frees it.
 */
struct generation {
	unsigned refs;
	struct config *cfg;
	struct chain *chain; /* may be shared with the next generation */
};

struct server {
	struct event_base *base;
	struct evdns_base *dns;
	SSL_CTX *tls_server; /* NULL: no TLS for clients */
	SSL_CTX *tls_client; /* NULL: backend_tls = no */
	struct generation *gen; /* the current configuration */
	struct config *cfg; /* gen->cfg */
	struct chain *chain; /* gen->chain */
	struct sockaddr_storage backend_addr;
	socklen_t backend_addrlen;
	struct session_list sessions;
	unsigned long nsessions;
	unsigned long nwaiting; /* accepted, PROXY header not yet read (listener.c) */
	/* The connection counts, per client key and in all (server_ip_*):
	 * this process's own, or the table the master shares with its
	 * workers, where this process counts as worker. */
	struct shmconn *conns;
	unsigned worker;
	int conns_own; /* made by server_ip_init, freed by server_free */
	int draining; /* SIGTERM: no new sessions */
	struct event *sig[4]; /* serve_signals' */
	size_t nsig;
	struct event *drain_timer;
	int retiring; /* a worker a reload replaced (SIGUSR2): no new sessions */
	struct event *retire_timer;
	unsigned long long sid_base;
	unsigned long long sid_next;
	int backend_xclient_name; /* the backend's last EHLO offered XCLIENT NAME
	                           * (1 until one says otherwise) */
};

/* generation_new - a generation of cfg and chain, with one reference. */
struct generation *generation_new(struct config *cfg, struct chain *chain);
/* generation_release - one holder fewer; the last frees it. */
void generation_release(struct generation *g);

/* The connection table holds at least this many client keys, or
 * max_connections at start if that is more. */
#define SERVER_CONN_KEYS_MIN 10000
/* The key of clients whose PROXY header is not in yet: no netkey looks so. */
#define SERVER_KEY_WAITING "-"

/* server_ip_init - the connection counts (unless the master gave its
 * shared table); PC_OK or PC_ERROR. */
int server_ip_init(struct server *srv);
/* server_ip_acquire - count one more connection from ip under its netkey
 * (written to key), or (ip NULL) one waiting for its PROXY header:
 * SHMCONN_OK, or the limit that refused it (SHMCONN_FULL: no room). */
enum shmconn_result server_ip_acquire(struct server *srv, const char *ip, char *key, size_t keylen);
/* server_ip_release - one connection counted under key ended. */
void server_ip_release(struct server *srv, const char *key);
/* server_session_id - a new session id ("%010llX") into id[16]. */
void server_session_id(struct server *srv, char id[16]);
/* server_session_gone - a session ended: stop the loop when draining and
 * nothing is left. */
void server_session_gone(struct server *srv);
void server_free(struct server *srv);

#endif
