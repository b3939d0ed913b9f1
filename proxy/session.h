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

#include "backend.h"
#include "chain.h"
#include "config.h"
#include "conn.h"
#include "dataread.h"
#include "netkey.h"
#include "rdns.h"
#include "replies.h"
#include "server.h"
#include "smtp_parse.h"
#include "spool.h"

struct edit_rcpt;

/* An accepted client, as the listener hands it over. */
struct client_info {
	evutil_socket_t fd;
	const struct config_addr *listener; /* the listen entry it came in on */
	char id[16]; /* the session id */
	char ip[64], port[8]; /* the client (as a PROXY header names it) */
	char local_ip[64], local_port[8]; /* the address it connected to */
	char ip_key[NETKEY_MAX]; /* counted in the per-IP table under this key */
};

/* Where the client leg is. */
enum session_state {
	SESSION_CONNECTING, /* waiting for the backend's banner */
	SESSION_COMMAND, /* reading command lines */
	SESSION_DATA, /* reading the message after our 354 */
	SESSION_CLOSING, /* flushing a last reply, then free */
	SESSION_TLS, /* in a TLS handshake (implicit TLS or after STARTTLS) */
	SESSION_AUTH, /* relaying an AUTH exchange: lines are answers, not commands */
};

/* The transaction: from MAIL to the end of data, RSET, or the end. */
struct transaction {
	unsigned seq; /* 1, 2, ... within the session */
	char id[32]; /* session id "." seq, for logs */
	struct timeval start; /* MAIL: delay= on the summary line counts from here */
	int active; /* MAIL was accepted */
	int mail_pending; /* MAIL is at the backend, its reply not in yet */
	char *mail_refused; /* the backend's refusal of a pipelined MAIL, while
	                     * a later command is still busy: tx_end then */
	unsigned rcpt_inflight; /* RCPTs at the backend, their replies not in */
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
	/* Filters changed the envelope: it is sent again before DATA (data.c). */
	int replay_full; /* RSET and MAIL again, not only the added RCPTs */
	const struct rcpt *replay_rcpt; /* the next accepted recipient to send again */
	const struct edit_rcpt *replay_added; /* the next recipient a filter added */
	unsigned replay_ok; /* recipients the backend took this time */
	/* From our 354 to the end of the transaction: an idle session does
	 * not carry the framer's buffer. */
	struct dataread *framer;
	struct spool spool;
	int spool_open;
};

/* A command the backend has, whose reply the client has not had yet (a
 * pipelined MAIL or RCPT, RFC 2920). Our own replies to the commands
 * after it wait in after, so the client reads every reply in order. */
struct flight {
	char *addr; /* RCPT: its recipient */
	struct evbuffer *after;
	enum smtp_verb verb;
};
#define SESSION_FLIGHT_MAX BACKEND_PIPELINE_MAX

struct session {
	struct server *srv;
	struct generation *gen; /* the configuration it started with */
	struct config *cfg; /* gen->cfg */
	char id[16];
	double started; /* metrics_now() at accept: the live view's age */
	char client_ip[64];
	char client_port[8];
	char peer[80]; /* "ip:port" for logs */
	char local_ip[64];
	char local_port[8];
	const struct config_addr *listener; /* the listen entry it came in on */
	char ip_key[NETKEY_MAX]; /* counted in the per-IP table under this key */
	int trusted; /* in trusted_networks */
	const char *tls_proto; /* "TLSv1.3" once TLS is up */
	int tls_implicit; /* the handshake comes before our banner */
	char *auth_user; /* after the backend's 235 */
	char auth_mech[24]; /* the AUTH exchange in progress */
	char *auth_candidate; /* the user it names, until 235 */
	unsigned auth_step; /* client answers so far */
	const struct reply *auth_refusal; /* our reply once a cancelled exchange ends */
	struct rdns rdns; /* the client's name */
	struct conn *client;
	struct backend be;
	struct backend_client be_client; /* what XCLIENT tells the backend */
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
	char *stage_params; /* RCPT's parameters for the view (path_params) */
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
	struct flight fly[SESSION_FLIGHT_MAX]; /* oldest first, from fly_head */
	unsigned fly_head, nfly;
	const struct flight *landing; /* its reply is being relayed */
	int hold_flush; /* the client's write waits for the next backend reply */
	TAILQ_ENTRY(session) entry;
};

/* session.c */
/* session_new - a session for an accepted client (it owns ci->fd, and the
 * per-IP count under ci->ip_key, from now on) */
void session_new(struct server *srv, const struct client_info *ci);
void session_drain(struct session *s);
void session_destroy(struct session *s);
void session_drain_all(struct server *srv);
void session_shutdown_all(struct server *srv);

/* ---- between the session's files (session.c, commands.c, data.c, auth.c,
 * txlog.c); nothing else calls these ---- */

/* Replies held for a client that does not read them before we stop
 * processing its commands. */
#define SESSION_OUTPUT_MAX (64 * 1024)
/* RFC 4954 §4: an AUTH line may be 12288 octets. */
#define SESSION_AUTH_LINE_MAX 12288
/* An address quoted for the log: a path of SMTP_PATH_MAX octets, each
 * escaped as \xNN at worst, never cut. */
#define LOG_ADDR_MAX (4 * SMTP_PATH_MAX + 8)
/* How long a closing session waits for its last reply to be read. */
#define SESSION_LINGER_MS 10000

enum hook_stage {
	HOOK_NONE = 0,
	HOOK_CONNECT,
	HOOK_HELO,
	HOOK_MAIL,
	HOOK_RCPT,
	HOOK_DATA,
};

/* One row of the command table: check -> the stage's hooks -> proceed. */
struct command {
	enum smtp_verb verb;
	int (*check)(struct session *s); /* PC_OK, PC_ERROR (replied) or PC_AGAIN (answers later) */
	enum hook_stage stage;
	void (*proceed)(struct session *s);
};

const struct command *command_find(enum smtp_verb verb);
const struct command *command_event(enum hook_stage stage);
void proceed_connect(struct session *s);
int check_data_end(struct session *s);
void data_proceed(struct session *s);
int check_data(struct session *s);
void proceed_data(struct session *s);
int check_auth(struct session *s);
void proceed_auth(struct session *s);
void session_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int fly_push(struct session *s, enum smtp_verb verb, const char *addr);
void fly_pop(struct session *s, struct flight *f);
void fly_land(struct session *s, struct flight *f);
void session_relay(struct session *s, const struct smtp_reply *r);
void session_arm(struct session *s, uint64_t ms);
int line_has_cr(struct evbuffer *in, size_t len);
int session_data_input(struct session *s);
void session_run(struct session *s, const struct command *c);
void session_view(struct session *s, const char *arg, const char *params);
void session_done(struct session *s);
void session_close(struct session *s, const struct reply *reply);
void session_say(struct session *s, const struct reply *r);
int session_backend_ok(
    struct session *s, enum backend_result res, const struct smtp_reply *r, const char *classes);
void tx_log(struct session *s, const char *status, const char *reply);
size_t reply_text(const struct smtp_reply *r, char *buf, size_t size);
void tx_add_rcpt(struct session *s, const char *addr, int dropped);
void tx_end(struct session *s, const char *status, const char *reply);
void tx_begin(struct session *s);
void proceed_helo(struct session *s);
const struct reply *data_refusal(const struct session *s);
void data_end(struct session *s);
void data_refuse(struct session *s, const char *reply, const char *status);
void data_refuse_r(struct session *s, const struct reply *r, const char *status);
void session_auth_line(struct session *s, char *line, size_t len);
void auth_cancel(struct session *s, const struct reply *reply);
int check_any(struct session *s);

#endif
