/*
 * chain.h - the filter chain: the configured instances in order, and one
 * run of a stage's hooks for a session (DESIGN.md §3, §5).
 *
 * plugin.c builds a chain from the configuration (dlopen, ABI check, init);
 * chain.c runs it: each instance's hook in order, pending hooks waited for
 * without blocking, verdicts validated, failures turned into on_error.
 */
#ifndef PORTCULLIS_CHAIN_H
#define PORTCULLIS_CHAIN_H

#include <stdint.h>

#include "config.h"
#include "message.h"
#include "portcullis/plugin.h"
#include "spool.h"
#include "verdict.h"

struct event;
struct evbuffer;

/* One configured section: a plugin instance. (The ABI's opaque handle.) */
struct pc_instance {
	char *name; /* the section name: "by=" in logs */
	char *type;
	char *path; /* the shared object */
	const struct pc_plugin *pl; /* &desc, or a test's own descriptor */
	struct pc_plugin desc; /* the plugin's, up to its struct_size; zeroes after */
	void *dl;
	void *inst; /* what init returned */
	int inited;
	int observe;
	enum config_on_error on_error;
	uint64_t timeout_ms;
	struct pc_option *options;
	size_t index;
	int line; /* the section header's line */
};

struct chain {
	struct pc_instance *f;
	size_t n;
	unsigned stages; /* bit (1 << stage) when some instance hooks it */
	struct pc_host host;
	unsigned gens; /* configuration generations using it (main.c) */
};

/* The outcome of a stage. */
struct chain_result {
	enum pc_action action; /* continue, accept, or what the session must do */
	char reply[VERDICT_LINE_MAX + 64];
	const char *by; /* the deciding instance, NULL if none */
	int failed; /* on_error decided */
};

typedef void (*chain_done_fn)(void *arg, const struct chain_result *r);

/* One recipient of the transaction, in the order the client gave them. */
struct rcpt {
	char *addr;
	int dropped; /* answered 250 by a drop, never forwarded */
	struct rcpt *next;
};

/*
 * What plugins may read of a session: all the chain ever sees of it. The
 * session owns the strings and refreshes the view before it runs a stage
 * or ends a transaction or the session (session_view in session.c); the
 * chain only reads it, so it knows nothing of struct session.
 */
struct chain_view {
	const char *id; /* session id */
	const char *tx_id; /* NULL outside a transaction */
	const char *client_ip, *client_port;
	const char *local_ip, *local_port;
	const char *client_name; /* forward-confirmed name, or NULL */
	int trusted; /* the client is in trusted_networks */
	const char *hostname; /* ours */
	const char *helo; /* the client's last HELO/EHLO argument, or NULL */
	const char *tls_proto, *tls_cipher; /* NULL without TLS */
	const char *auth_user;
	const char *sender, *sender_params; /* NULL outside a transaction */
	const struct rcpt *rcpts; /* accepted (and dropped) recipients */
	size_t nrcpt; /* accepted, not dropped */
	/* The stage's own argument: the new HELO name at HELO, the recipient
	 * and its parameters at RCPT. */
	const char *arg, *arg_params;
	/* At the end of DATA: the spooled message and its header index. */
	struct spool *spool;
	struct message *msg; /* NULL until indexed */
	size_t size; /* RFC 1870 octets */
};

/* One hook call in flight, and what the host services read. */
struct pc_call {
	const struct chain_view *v;
	struct chain_session *cs;
	struct chain *chain;
	struct pc_instance *f; /* the instance being asked */
	enum pc_stage stage;
	int in_stage; /* a stage hook, not reset/close */
	size_t next; /* the next instance to ask */
	int state; /* CALL_* in chain.c */
	int resumed; /* resume came while the hook ran */
	enum pc_action r_action;
	char r_reply[PC_REPLY_MAX + 2];
	int r_has_reply;
	pc_cancel_fn cancel;
	void *cancel_arg;
	struct event *timer;
	chain_done_fn done;
	void *done_arg;
	size_t body_pos; /* body_read position in the spool */
	int body_sol; /* at the start of a line (for un-stuffing) */
};

/* Per-session state of the chain. */
struct chain_session {
	struct pc_call call;
	void **sdata, **tdata; /* per instance */
	char trail[1024];
	size_t trail_tx; /* where the transaction's part of trail starts */
	/* What filters did to the message at the end of DATA: header fields to
	 * prepend (removals are marked in the view's message index). */
	struct evbuffer *added;
	int edited; /* some incoming field is to be left out */
};

/* plugin.c */
/* chain_load - every section of cfg, loaded and initialised in order.
 * Returns 0, or -1 with "file:line: [type name]: message" in err. */
int chain_load(struct chain **out, struct config *cfg, struct event_base *base,
    struct evdns_base *dns, int check_only, char *err, size_t errlen);
void chain_free(struct chain *c);

/* chain.c */
void chain_host_init(struct pc_host *host, struct event_base *base, struct evdns_base *dns);
/* chain_session_init - per-session state, reading v (which outlives cs). */
int chain_session_init(struct chain *c, struct chain_session *cs, const struct chain_view *v);
/* chain_has - does any instance hook this stage? */
int chain_has(const struct chain *c, enum pc_stage stage);
/* chain_run - ask the stage's hooks; done is called once, maybe at once. */
void chain_run(struct chain_session *cs, enum pc_stage stage, chain_done_fn done, void *arg);
/* chain_stage - the stage being run (or last run). */
enum pc_stage chain_stage(const struct chain_session *cs);
/* chain_cancel - give up a pending hook (its done is never called). */
void chain_cancel(struct chain_session *cs);
/* chain_tx_end - the transaction ended: reset hooks, tx data and message
 * changes dropped. */
void chain_tx_end(struct chain_session *cs);
/* chain_tx_begin - a transaction starts: the trail's transaction part. */
void chain_tx_begin(struct chain_session *cs);
/* chain_session_end - cancel a pending hook, close hooks, free. */
void chain_session_end(struct chain_session *cs);
/* path_params - a path's ESMTP parameters as one string (malloc'd). */
struct smtp_path;
char *path_params(const struct smtp_path *path);

#endif
