/*
 * backend.h - the backend leg: portcullis as an SMTP client of the real MTA
 * (backend.c). Self-contained: it knows the configuration, the client's
 * identity it is told, and nothing of the session that owns it. Every
 * callback gets the arg given to backend_init.
 */
#ifndef PORTCULLIS_BACKEND_H
#define PORTCULLIS_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "config.h"
#include "conn.h"
#include "rdns.h"
#include "smtp_parse.h"

struct event;
struct event_base;
struct evbuffer;

/* How a backend exchange ended. */
enum backend_result {
	BACKEND_REPLY = 0, /* a complete, well-formed reply is in the callback's reply */
	BACKEND_TIMEOUT, /* the deadline passed first */
	BACKEND_LOST, /* the connection closed or failed */
	BACKEND_GARBLED, /* the backend sent something that is not a reply */
	BACKEND_SURPLUS, /* it sent more than the one reply we waited for */
	BACKEND_TLS_FAILED, /* greeting: backend_tls = required and TLS did not come up */
	BACKEND_XCLIENT_REFUSED, /* greeting: the backend refused our XCLIENT */
};

typedef void (*backend_cb)(void *arg, enum backend_result res, const struct smtp_reply *reply);

/* What the daemon gives every leg: where the backend is, and how to talk. */
struct backend_conf {
	const struct config *cfg;
	struct event_base *base;
	const struct sockaddr *addr;
	socklen_t addrlen;
	SSL_CTX *tls; /* NULL: backend_tls = no */
};

/* Who the client is, for XCLIENT (the owner keeps the strings alive). */
struct backend_client {
	const char *ip, *port;
	struct rdns *rdns; /* its name; waited for when XCLIENT NAME wants it */
	const char *helo; /* the client's HELO/EHLO argument, helo_len octets */
	size_t helo_len;
	int esmtp; /* it said EHLO */
	const char *login; /* the AUTH user, or NULL */
};

/* Commands in flight at once, at most: a longer group waits for replies. */
#define BACKEND_PIPELINE_MAX 16

/* One command waiting for its reply. */
struct backend_wait {
	backend_cb cb;
	void *arg; /* the owner's arg, or the leg itself (the greeting) */
	uint64_t timeout_ms; /* its deadline, counted once it heads the queue */
	double sent_at; /* metrics_now() when it went out; 0: a banner */
};

struct backend {
	struct backend_conf conf;
	const char *id; /* for log lines */
	void *arg; /* for every callback */
	/* gone - the leg failed, or spoke, while no command was waiting */
	void (*gone)(void *arg, enum backend_result res);
	struct conn *conn;
	struct event *deadline;
	/* The reply being read: allocated with the first reply line, let go
	 * by backend_idle and backend_close. */
	struct smtp_reply *reply;
	/* Who waits for a reply, oldest first: one entry, or a pipelined
	 * group (RFC 2920) whose replies come back in the order sent. */
	struct backend_wait wait[BACKEND_PIPELINE_MAX];
	unsigned whead, nwait;
	int *alive; /* cleared by backend_close: a reply loop stops */
	int cork; /* commands wait in the output until backend_flush */
	struct smtp_caps caps; /* from the last EHLO reply */
	int dead; /* lost, timed out or garbled: no more use */
	int reply_done; /* reply holds a complete reply: start afresh */
	/* The greeting (backend_greet). */
	const struct backend_client *client;
	backend_cb greeted;
	int tls_started; /* STARTTLS sent on this connection */
	unsigned xclient_next; /* the next XCLIENT attribute (1-based); 0: none sent */
	int xclient_done; /* XCLIENT is over for this EHLO */
	int rdns_waiting; /* waiting for client->rdns */
	int connecting; /* waiting for the banner of a new connection */
};

void backend_init(struct backend *b, const struct backend_conf *conf, const char *id, void *arg,
    void (*gone)(void *arg, enum backend_result res));
/* backend_connect - open the leg; cb gets the banner. PC_OK or PC_ERROR (errno). */
int backend_connect(struct backend *b, backend_cb cb);
/* backend_reconnect - close the leg and open a fresh one: TLS and the
 * capabilities are forgotten. PC_OK or PC_ERROR (errno). */
int backend_reconnect(struct backend *b, backend_cb cb);
/* backend_greet - EHLO with the client's name; STARTTLS and EHLO again
 * when backend_tls says so; XCLIENT (after the client's name is known, if
 * the backend takes NAME) and EHLO again when the backend offers XCLIENT and
 * backend_xclient is on. cb gets the last EHLO reply (b->caps holds what it
 * offers) or the reply that ended the sequence (a non-2xx EHLO), or an error:
 * BACKEND_TLS_FAILED and BACKEND_XCLIENT_REFUSED leave the leg dead. */
void backend_greet(struct backend *b, const struct backend_client *client, backend_cb cb);
/* backend_command - one command line (without CR LF); cb gets its reply.
 * Sent at once, unless the leg is corked (then at backend_flush). Commands
 * may be sent before earlier ones have their replies (backend_room says
 * whether one more fits): each callback gets its own reply, in order. When
 * the leg fails, the oldest waiting callback is told, and the rest are
 * forgotten (their owner is closing the session). */
void backend_command(
    struct backend *b, const char *line, size_t len, uint64_t timeout_ms, backend_cb cb);
/* backend_commandf - the same, formatted straight into the output buffer. */
void backend_commandf(struct backend *b, uint64_t timeout_ms, backend_cb cb, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* backend_output - where the message goes after the backend's 354 (NULL:
 * the leg is dead); backend_data_end - ".", then cb gets the final reply. */
struct evbuffer *backend_output(struct backend *b);
void backend_data_end(struct backend *b, backend_cb cb);
/* backend_bdat - RFC 3030: "BDAT n LAST" into the output, where the caller
 * puts exactly n octets of message (NULL: the leg is dead); then
 * backend_data_sent, and all of it goes in one write. */
struct evbuffer *backend_bdat(struct backend *b, size_t n);
/* backend_data_sent - the message is in the output: cb gets the final reply. */
void backend_data_sent(struct backend *b, backend_cb cb);
/* backend_idle - the owner waits for its client outside a transaction: with
 * no reply due and no greeting running, the reply buffer goes (an idle
 * session holds no 8 KB; one in a transaction keeps it, not one
 * allocation a command). */
void backend_idle(struct backend *b);
/* backend_flush - send what a cork held back. */
void backend_flush(struct backend *b);
/* backend_waiting - commands sent whose replies have not come. */
unsigned backend_waiting(const struct backend *b);
/* backend_reply_ready - is the next reply already read, whole (its last
 * line in the input)? It is handed over in this same pass. */
int backend_reply_ready(const struct backend *b);
/* backend_room - may one more command go before the replies come? */
int backend_room(const struct backend *b);
/* backend_usable - connected and not dead. */
int backend_usable(const struct backend *b);
/* backend_close - end the leg: QUIT when idle and healthy, else cut. */
void backend_close(struct backend *b);
/* xclient_has - does an EHLO's XCLIENT line name this attribute? */
int xclient_has(const struct smtp_caps *caps, const char *attr);

#endif
