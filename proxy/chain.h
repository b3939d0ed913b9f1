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
#include "edit.h"
#include "message.h"
#include "portcullis/plugin.h"
#include "score.h"
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
	int on_error_set; /* the section gave on_error */
	uint64_t timeout_ms;
	struct pc_option *options;
	size_t index;
	int line; /* the section header's line */
	struct chain *chain;
	struct pc_store **stores; /* what it opened (host->store_open), released at fini */
	size_t nstores;
	/* Failures are logged at most once a CHAIN_WARN_EVERY_MS; the rest
	 * are counted (the transaction's summary line still shows each). */
	uint64_t fail_warned_ms;
	unsigned long fail_quiet;
	int mslot, mslot_set; /* its metrics slot (metrics_filter_slot) */
};

#define CHAIN_WARN_EVERY_MS 60000

struct chain {
	struct pc_instance *f;
	size_t n;
	unsigned stages; /* bit (1 << stage) when some instance hooks it */
	struct pc_host host;
	unsigned gens; /* configuration generations using it (main.c) */
	char *store_default; /* config's store: host->store_open(self, NULL) */
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
	size_t max_size; /* max_message_size: a replaced body's limit too */
};

/*
 * The per-call arena (plugin.h, LIFETIMES): strings the host builds for a
 * plugin, freed together when the stage ends (chain_run of the next stage,
 * chain_tx_end, chain_session_end), never one by one, so an answer stays
 * good however often a plugin asks again. Bounded: a plugin looping over
 * host functions cannot grow a session without limit in one stage.
 */
#define CHAIN_ARENA_MAX (4u * 1024 * 1024)
#define CHAIN_SPLIT_BUCKETS 64

struct chain_arena_block;
struct chain_split; /* an address split once, by its text */

struct chain_arena {
	struct chain_arena_block *head;
	size_t used; /* octets allocated in this stage */
	struct chain_split *split[CHAIN_SPLIT_BUCKETS];
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
	size_t body_pos; /* body_read position in the spool, plus 1; 0: start */
	int body_sol; /* at the start of a line (for un-stuffing) */
	size_t msg_pos; /* message_read's, likewise */
	int msg_sol;
	struct evbuffer *cur; /* message_read_current's rendering, being read */
	int cur_sol;
	unsigned long long wait_ms; /* the deadline of a pending call */
	double started; /* metrics_now() when the hook was called */
	int timed_out; /* chain_fail is for a deadline that passed */
	struct chain_arena arena;
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
	/* ABI 2: the other message and envelope changes (per transaction),
	 * and the scores: the session's (added outside a transaction, copied
	 * into each new one) and the transaction's. */
	struct edit edit;
	struct score_set score_session, score_tx;
	int in_tx; /* between chain_tx_begin and chain_tx_end */
};

/* plugin.c */
/* chain_load - every section of cfg, loaded and initialised in order.
 * Returns 0, or -1 with "file:line: [type name]: message" in err. */
int chain_load(struct chain **out, struct config *cfg, struct event_base *base,
    struct evdns_base *dns, int check_only, char *err, size_t errlen);
void chain_free(struct chain *c);

/* chainhost.c: the ABI 2 host services (address split, scores, message
 * and envelope changes) and the per-call arena */
void chain_host_abi2(struct pc_host *host);
/* chain_score_total - the transaction's total score (0 without symbols). */
double chain_score_total(const struct chain_session *cs);
/* chain_spam_headers - the daemon's own X-Spam-* fields for the score
 * thresholds (data.c): incoming ones of those names are left out, and with
 * flag the three are added (X-Spam-Flag: YES, X-Spam-Score, X-Spam-Symbols).
 * 0, or -1 (no memory). */
int chain_spam_headers(struct chain_session *cs, struct message *m, int flag);
/* chain_host_store - the ABI 2.1 store members (chainhost.c). */
void chain_host_store(struct pc_host *host);
/* chain_store_release - let go of the stores instance f opened. */
void chain_store_release(struct pc_instance *f);
void chain_arena_reset(struct chain_arena *a);

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
/* chain_waiting - the name of the filter whose answer the session waits
 * for, or NULL. */
const char *chain_waiting(const struct chain_session *cs);
/* chain_cancel - give up a pending hook (its done is never called). */
void chain_cancel(struct chain_session *cs);
/* chain_tx_end - the transaction ended: reset hooks, tx data, message and
 * envelope changes and the transaction's scores dropped. */
void chain_tx_end(struct chain_session *cs);
/* chain_tx_begin - a transaction starts: the trail's transaction part,
 * and the session's scores copied into the transaction's. */
void chain_tx_begin(struct chain_session *cs);
/* chain_session_end - cancel a pending hook, close hooks, free. */
void chain_session_end(struct chain_session *cs);
/* chain_message_changed - did filters change the message (header fields
 * added, removed, changed or inserted, or the body replaced)? When not, the
 * session may send the spool as it is (spool_move). */
int chain_message_changed(const struct chain_session *cs, const struct message *m);
/* chain_message_emit - after the backend's 354: the message as filters
 * left it, without the final "." (edit_emit in edit.h: exactly the old
 * output when only add_header and remove_header were used). The spool and
 * the changes stay as they are. 0 or -1. */
int chain_message_emit(
    struct chain_session *cs, struct spool *orig, const struct message *m, struct evbuffer *out);
/* chain_envelope - the envelope changes of the transaction: a new sender
 * (or NULL), recipients to add, recipients to leave out. Valid until
 * chain_tx_end. */
const struct chain_envelope *chain_envelope(const struct chain_session *cs);
/* chain_score_summary - "score=3.5 symbols=A(1.5),B(2)" of the
 * transaction (the session's outside one) for the summary line; "" (0)
 * when no filter scored. Cut with "..." to fit size; returns the length. */
size_t chain_score_summary(const struct chain_session *cs, char *buf, size_t size);
/* chain_split - an address's local part and domain (lower case), split at
 * the last '@' outside quotes; NULL domain for <> and postmaster. Strings
 * from call's arena. 0, or -1 (addr NULL, arena full). */
int chain_split(struct pc_call *call, const char *addr, const char **local, const char **domain);
/* path_params - a path's ESMTP parameters as one string (malloc'd). */
struct smtp_path;
char *path_params(const struct smtp_path *path);

#endif
