/*
 * session.h - one client connection and its backend leg, and the daemon-wide
 * state they share. session.c runs the client leg (the SMTP server side),
 * backend.c the backend leg (the SMTP client side), listener.c accepts.
 */
#ifndef PORTCULLIS_SESSION_H
#define PORTCULLIS_SESSION_H

#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/event.h>

#include "chain.h"
#include "config.h"
#include "conn.h"
#include "dataread.h"
#include "netkey.h"
#include "rdns.h"
#include "smtp_parse.h"
#include "spool.h"

struct session;

/* How a backend exchange ended. */
enum backend_result {
	BACKEND_REPLY = 0, /* a complete, well-formed reply is in the callback's reply */
	BACKEND_TIMEOUT, /* the deadline passed first */
	BACKEND_LOST, /* the connection closed or failed */
	BACKEND_GARBLED, /* the backend sent something that is not a reply */
	BACKEND_SURPLUS, /* it sent more than the one reply we waited for */
};

typedef void (*backend_cb)(
    struct session *s, enum backend_result res, const struct smtp_reply *reply);

struct backend {
	struct session *s;
	struct conn *conn;
	struct event *deadline;
	struct smtp_reply reply; /* the reply being read */
	backend_cb pending; /* who waits for the next reply; NULL: nobody */
	struct smtp_caps caps; /* from the last EHLO reply */
	int dead; /* lost, timed out or garbled: no more use */
	int reply_done; /* reply holds a complete reply: start afresh */
};

/* Where the client leg is. */
enum session_state {
	SESSION_CONNECTING, /* waiting for the backend's banner */
	SESSION_COMMAND, /* reading command lines */
	SESSION_DATA, /* reading the message after our 354 */
	SESSION_CLOSING, /* flushing a last reply, then free */
	SESSION_PROXY, /* waiting for the PROXY protocol header */
	SESSION_TLS, /* in a TLS handshake (implicit TLS or after STARTTLS) */
	SESSION_AUTH, /* relaying an AUTH exchange: lines are answers, not commands */
};

/* The transaction: from MAIL to the end of data, RSET, or the end. */
struct transaction {
	unsigned seq; /* 1, 2, ... within the session */
	char id[32]; /* session id "." seq, for logs */
	struct timeval start; /* MAIL: delay= on the summary line counts from here */
	int active; /* MAIL was accepted */
	char *sender; /* accepted MAIL FROM address, "" for <> */
	char *sender_params; /* its ESMTP parameters, "KEY=value ..." */
	int smtputf8; /* MAIL said SMTPUTF8: non-ASCII addresses are fine */
	struct rcpt *rcpts; /* accepted (and dropped) recipients, in order */
	struct rcpt **rcpt_tail;
	unsigned nrcpt; /* accepted */
	unsigned rcpt_tried; /* RCPT commands seen */
	unsigned nrcpt_dropped; /* answered 250 by a drop, not forwarded */
	size_t size; /* message octets, once read */
	int forwarded; /* the backend has our MAIL */
	int dropped; /* a drop verdict: nothing is delivered */
	const char *by; /* the filter that decided, for the summary line */
	const char *stage; /* and at which stage */
	const char *rcpt_drop_by; /* the last filter that dropped a recipient */
	struct message msg; /* the header index, for filters */
	int msg_parsed;
	struct dataread framer;
	struct spool spool;
	int spool_open;
};

struct session {
	struct server *srv;
	struct generation *gen; /* the configuration it started with */
	struct config *cfg; /* gen->cfg */
	char id[16];
	char client_ip[64];
	char client_port[8];
	char peer[80]; /* "ip:port" for logs */
	char local_ip[64];
	char local_port[8];
	const struct config_addr *listener; /* the listen entry it came in on */
	int ip_held; /* counted in the per-IP table */
	char ip_key[NETKEY_MAX]; /* under this key (listener.c): the address or its IPv6 network */
	struct event *proxy_ev; /* reading the PROXY header */
	const char *tls_proto; /* "TLSv1.3" once TLS is up */
	int tls_implicit; /* the handshake comes before our banner */
	char *auth_user; /* after the backend's 235 */
	char auth_mech[24]; /* the AUTH exchange in progress */
	char *auth_candidate; /* the user it names, until 235 */
	unsigned auth_step; /* client answers so far */
	const char *auth_refusal; /* our reply once a cancelled exchange ends */
	unsigned xclient_next; /* XCLIENT commands sent for this EHLO */
	int xclient_failed; /* XCLIENT is done for this EHLO (sent, or not to be) */
	int be_tls_started; /* STARTTLS sent to the backend */
	struct rdns_query *rdns; /* the client's name being looked up */
	enum rdns_state rdns_state;
	char *client_name; /* forward-confirmed, once rdns_state is RDNS_OK */
	void (*rdns_wait)(struct session *s); /* called when the name is known */
	struct conn *client;
	struct backend be;
	struct event *timer; /* the client's deadline */
	enum session_state state;
	int busy; /* a command is being processed (waiting on backend or hooks) */
	int discarding; /* inside an over-long command line */
	int draining; /* shutting down: close after this transaction */
	int eof; /* the client half-closed: finish what is buffered */
	int in_process; /* inside session_process: free later, not now */
	int free_pending;
	char refusal[VERDICT_LINE_MAX + 64]; /* our reply to a message refused at the end of DATA */
	const char *refusal_status; /* its status for the summary line */
	char refused[VERDICT_LINE_MAX + 64]; /* a connect reject: the reply to every command */
	int blackhole; /* a drop at connect or HELO: nothing is delivered */
	const char *bh_by, *bh_stage; /* who dropped the session, where */
	struct chain *chain;
	struct chain_session cs;
	struct chain_view view; /* what the chain reads (session_view) */
	char *stage_arg, *stage_params; /* the view's arg and arg_params */
	void (*proceed)(struct session *s); /* after the hooks */
	int ehlo; /* the client greeted with EHLO (not HELO) */
	char *helo; /* the client's HELO/EHLO argument */
	unsigned errors; /* error replies sent */
	unsigned long ncommands;
	unsigned tx_count;
	struct transaction tx;
	struct smtp_cmd cmd; /* the command being processed */
	char *line; /* its bytes (owned) */
	struct smtp_path path; /* MAIL/RCPT argument being processed */
	TAILQ_ENTRY(session) entry;
};

TAILQ_HEAD(session_list, session);

struct ip_count;

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
	struct ip_count **ip_table; /* per-IP connection counts */
	size_t ip_buckets;
	int draining; /* SIGTERM: no new sessions */
	struct event *drain_timer;
	unsigned long long sid_base;
	unsigned long long sid_next;
	int backend_xclient_name; /* the backend's last EHLO offered XCLIENT NAME
	                           * (1 until one says otherwise) */
};

/* main.c */
void generation_release(struct generation *g);

/* listener.c */
int listener_start(struct server *srv);
void listener_stop(void);
int server_ip_acquire(struct server *srv, const char *ip, char *key, size_t keylen);
void server_ip_release(struct server *srv, const char *key);

/* session.c */
void session_new(struct server *srv, const struct config_addr *l, evutil_socket_t fd,
    const struct sockaddr *sa, int salen);
void session_drain(struct session *s);
void session_destroy(struct session *s);
void session_drain_all(struct server *srv);
void session_shutdown_all(struct server *srv);
void session_backend_gone(struct session *s, enum backend_result res);

/* backend.c */
int backend_connect(struct session *s, backend_cb cb);
void backend_command(
    struct session *s, const char *line, size_t len, uint64_t timeout_ms, backend_cb cb);
void backend_commandf(struct session *s, uint64_t timeout_ms, backend_cb cb, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int backend_send_message(struct session *s, struct transaction *tx, backend_cb cb);
int backend_starttls(struct session *s, backend_cb cb);
void backend_close(struct session *s);

#endif
