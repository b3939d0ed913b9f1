/*
 * session.c - the client leg: portcullis as the SMTP server the world sees.
 *
 * Exports session_new, session_drain, session_drain_all, session_shutdown_all,
 * session_destroy and session_backend_gone. Every command goes through one
 * table: check (state and syntax; our own error replies) -> hooks (the filter chain's
 * stage, chain.c) -> proceed (usually one backend command, whose reply is
 * relayed). A verdict other than continue or accept answers instead of
 * proceed (session_verdict, DESIGN.md §3).
 * Commands are processed one at a time, so replies stay in order under
 * PIPELINING (RFC 2920 §3.1); input that arrives meanwhile waits in the
 * buffer. Deadlines, not idle timers, bound every wait on the client.
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>

#include <openssl/evp.h>

#include "log.h"
#include "proxyproto.h"
#include "replies.h"
#include "session.h"

/* Input held while one command is processed before we stop reading: a
 * pipelining client cannot make us buffer without bound. */
#define SESSION_INPUT_MAX (256 * 1024)
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
	HOOK_HELO,
	HOOK_MAIL,
	HOOK_RCPT,
	HOOK_DATA,
};

struct command {
	enum smtp_verb verb;
	int (*check)(struct session *s);
	enum hook_stage stage;
	void (*proceed)(struct session *s);
};

static void session_read_cb(struct conn *c, void *arg);
static void session_write_cb(struct conn *c, void *arg);
static void session_event_cb(struct conn *c, int what, void *arg);
static void session_timer_cb(evutil_socket_t fd, short what, void *arg);
static void session_process(struct session *s);
static int session_data_input(struct session *s);
static int line_has_cr(struct evbuffer *in, size_t len);
static void session_command(struct session *s, char *line, size_t len);
static int command_forbidden(const char *line, size_t len);
static const char *data_refusal(const struct session *s);
static void session_hooks(
    struct session *s, enum hook_stage stage, void (*proceed)(struct session *));
static void session_done(struct session *s);
static void session_start(struct session *s);
static void session_begin(struct session *s);
static void session_greet(struct session *s);
static void session_hangup(struct session *s, const char *reply, const char *why);
static const char *input_quote(struct session *s, char *buf, size_t size);
static void session_proxy_cb(evutil_socket_t fd, short what, void *arg);
static void session_tls_done(struct session *s);
static void session_forget(struct session *s);
static void backend_renew(struct session *s, backend_cb cb);
static void on_forget_banner(
    struct session *s, enum backend_result res, const struct smtp_reply *r);
static int backend_greeted(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void session_auth_line(struct session *s, char *line, size_t len);
static int check_starttls(struct session *s);
static void proceed_starttls(struct session *s);
static int check_auth(struct session *s);
static void proceed_auth(struct session *s);
static void on_auth(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void auth_cancel(struct session *s, const char *reply);
static const char *auth_syntax(const char *arg, size_t len);
static int auth_answer_ok(const char *line, size_t len);
static void on_auth_cancelled(
    struct session *s, enum backend_result res, const struct smtp_reply *r);
static void on_xclient(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void on_be_tls(struct session *s, enum backend_result res, const struct smtp_reply *r);
static int xclient_has(const struct smtp_caps *caps, const char *attr);
static int helo_backend_next(struct session *s);
static void on_be_starttls(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void on_be_plain_banner(
    struct session *s, enum backend_result res, const struct smtp_reply *r);
static int helo_backend_next(struct session *s);
static void session_connect_backend(struct session *s);
static void on_connect_verdict(void *arg, const struct chain_result *r);
static void on_hooks_done(void *arg, const struct chain_result *r);
static void session_view(struct session *s, const char *arg, const char *params);
static void session_local_addr(struct session *s, evutil_socket_t fd);
static void session_verdict(struct session *s, enum pc_stage stage, const struct chain_result *r);
static void helo_reply(struct session *s, const struct smtp_caps *caps);
static void tx_begin(struct session *s);
static void tx_add_rcpt(struct session *s, const char *addr, int dropped);
static const struct rcpt *rcpt_list(const struct rcpt *r, int dropped, char *buf, size_t size);
static void data_refuse(struct session *s, const char *reply, const char *status);
static const char *tx_index(struct session *s);
static void session_reply(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void session_relay(struct session *s, const struct smtp_reply *r);
static void session_close(struct session *s, const char *reply);
static void session_free(struct session *s);
static void session_arm(struct session *s, uint64_t ms);
static int session_backend_ok(
    struct session *s, enum backend_result res, const struct smtp_reply *r, const char *classes);
static void tx_end(struct session *s, const char *status, const char *reply);
static void tx_log(struct session *s, const char *status, const char *reply);
static size_t reply_text(const struct smtp_reply *r, char *buf, size_t size);
static const char *quote_field(char *buf, size_t size, const char *p, char **heap);
static void data_emit(void *arg, const char *bytes, size_t len);

static int check_helo(struct session *s);
static int mail_params_check(struct session *s);
static int xtext_valid(const char *v, size_t len);
static unsigned long long mail_size_limit(struct session *s);
static int check_mail(struct session *s);
static int check_rcpt(struct session *s);
static int check_data(struct session *s);
static int check_noargs(struct session *s);
static int check_any(struct session *s);
static void proceed_helo(struct session *s);
static void helo_ehlo_again(struct session *s);
static void proceed_mail(struct session *s);
static void proceed_rcpt(struct session *s);
static void proceed_data(struct session *s);
static void proceed_rset(struct session *s);
static void proceed_noop(struct session *s);
static void proceed_quit(struct session *s);
static void proceed_help(struct session *s);
static void proceed_vrfy(struct session *s);
static void proceed_not_impl(struct session *s);
static void proceed_refused(struct session *s);
static void proceed_unknown(struct session *s);
static void data_end(struct session *s);
static void data_proceed(struct session *s);
static void on_banner(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void on_helo(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void on_mail(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void on_rcpt(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void on_rset(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void on_data_refused(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void on_data_go(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void on_data_final(struct session *s, enum backend_result res, const struct smtp_reply *r);

/* The command table (STYLE.md, 3). Verbs not listed are "unknown". */
static const struct command commands[] = {
    {SMTP_VERB_HELO, check_helo, HOOK_HELO, proceed_helo},
    {SMTP_VERB_EHLO, check_helo, HOOK_HELO, proceed_helo},
    {SMTP_VERB_MAIL, check_mail, HOOK_MAIL, proceed_mail},
    {SMTP_VERB_RCPT, check_rcpt, HOOK_RCPT, proceed_rcpt},
    {SMTP_VERB_DATA, check_data, HOOK_NONE, proceed_data},
    {SMTP_VERB_RSET, check_noargs, HOOK_NONE, proceed_rset},
    {SMTP_VERB_NOOP, check_any, HOOK_NONE, proceed_noop},
    {SMTP_VERB_QUIT, check_noargs, HOOK_NONE, proceed_quit},
    {SMTP_VERB_HELP, check_any, HOOK_NONE, proceed_help},
    {SMTP_VERB_VRFY, check_any, HOOK_NONE, proceed_vrfy},
    {SMTP_VERB_EXPN, check_any, HOOK_NONE, proceed_not_impl},
    {SMTP_VERB_ETRN, check_any, HOOK_NONE, proceed_not_impl},
    {SMTP_VERB_STARTTLS, check_starttls, HOOK_NONE, proceed_starttls},
    {SMTP_VERB_AUTH, check_auth, HOOK_NONE, proceed_auth},
    /* Only a trusted proxy may say who the client is: never the client. */
    {SMTP_VERB_XCLIENT, check_any, HOOK_NONE, proceed_refused},
    {SMTP_VERB_XFORWARD, check_any, HOOK_NONE, proceed_refused},
    {SMTP_VERB_UNKNOWN, check_any, HOOK_NONE, proceed_unknown},
};

/* session_new - a client connected */
void
session_new(struct server *srv, const struct config_addr *l, evutil_socket_t fd,
    const struct sockaddr *sa, int salen)
{
	struct config *cfg = srv->cfg;
	struct session *s;
	char ip[64] = "?", port[8] = "0", key[NETKEY_MAX] = "", msg[600];
	int one = 1;

	getnameinfo(sa, (socklen_t)salen, ip, sizeof(ip), port, sizeof(port),
	    NI_NUMERICHOST | NI_NUMERICSERV);
	/* Refusals at accept cost one write and no allocation. */
	if (srv->draining || srv->nsessions >= cfg->max_connections) {
		log_warn(NULL, "refused client=%s:%s: %s", ip, port,
		    srv->draining ? "shutting down" : "max_connections reached");
		if (srv->draining)
			snprintf(msg, sizeof(msg), R_SHUTDOWN "\r\n", cfg->hostname);
		else
			snprintf(msg, sizeof(msg), R_TOO_MANY_CONN "\r\n", cfg->hostname);
		goto refuse;
	}
	if (l->proxy && !config_net_match(cfg->proxy_trusted, cfg->nproxy_trusted, sa)) {
		/* Only a trusted balancer may say who the client is. */
		log_warn(NULL, "refused %s:%s on a proxy_protocol listener: not in proxy_trusted",
		    ip, port);
		close(fd);
		return;
	}
	if (!l->proxy && server_ip_acquire(srv, ip, key, sizeof(key)) != 0) {
		log_warn(NULL, "refused client=%s:%s: max_connections_per_ip reached", ip, port);
		snprintf(msg, sizeof(msg), R_TOO_MANY_CONN_IP "\r\n", cfg->hostname);
		goto refuse;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		if (!l->proxy)
			server_ip_release(srv, key);
		log_err(NULL, "out of memory accepting client=%s:%s", ip, port);
		close(fd);
		return;
	}
	s->srv = srv;
	/* The configuration it starts with is the one it ends with, whatever
	 * a SIGHUP brings meanwhile. */
	s->gen = srv->gen;
	s->gen->refs++;
	s->cfg = s->gen->cfg;
	snprintf(
	    s->id, sizeof(s->id), "%010llX", (srv->sid_base + srv->sid_next++) & 0xFFFFFFFFFFULL);
	snprintf(s->client_ip, sizeof(s->client_ip), "%s", ip);
	snprintf(s->client_port, sizeof(s->client_port), "%s", port);
	snprintf(s->peer, sizeof(s->peer), "%s:%s", ip, port);
	s->chain = s->gen->chain;
	s->listener = l;
	s->ip_held = !l->proxy;
	snprintf(s->ip_key, sizeof(s->ip_key), "%s", key);
	s->tls_implicit = l->tls;
	s->state = SESSION_CONNECTING;
	s->tx.rcpt_tail = &s->tx.rcpts;
	TAILQ_INSERT_TAIL(&srv->sessions, s, entry);
	srv->nsessions++;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	session_local_addr(s, fd);
	s->client = conn_new(srv->base, fd, session_read_cb, session_write_cb, session_event_cb, s);
	s->timer = evtimer_new(srv->base, session_timer_cb, s);
	if (s->client == NULL || s->timer == NULL ||
	    chain_session_init(s->chain, &s->cs, &s->view) != 0) {
		log_err(s->id, "out of memory for client=%s", s->peer);
		session_free(s);
		return;
	}
	s->client->in_max = SESSION_INPUT_MAX;
	if (l->proxy) {
		/* Edge-triggered: the header is peeked at, so the socket stays
		 * readable until it is complete. */
		s->state = SESSION_PROXY;
		s->proxy_ev =
		    event_new(srv->base, fd, EV_READ | EV_PERSIST | EV_ET, session_proxy_cb, s);
		if (s->proxy_ev == NULL || event_add(s->proxy_ev, NULL) != 0) {
			session_free(s);
			return;
		}
		session_arm(s, cfg->timeout_ms);
		return;
	}
	session_start(s);
	return;
refuse:
	if (write(fd, msg, strlen(msg)) < 0) {
		/* The client gets nothing; it was leaving anyway. */
	}
	close(fd);
}

/* session_local_addr - the address the client connected to (a PROXY
 * header may say another) */
static void
session_local_addr(struct session *s, evutil_socket_t fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);

	if (getsockname(fd, (struct sockaddr *)&local, &len) != 0 ||
	    getnameinfo((struct sockaddr *)&local, len, s->local_ip, sizeof(s->local_ip),
	        s->local_port, sizeof(s->local_port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(s->local_ip, sizeof(s->local_ip), "?");
		snprintf(s->local_port, sizeof(s->local_port), "0");
	}
}

/* session_proxy_cb - the PROXY header, peeked at until complete, then read
 * exactly: what follows it (SMTP, or a TLS ClientHello) stays in the socket */
static void
session_proxy_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	unsigned char buf[PROXYPROTO_V2_MAX];
	struct proxyproto pp;
	size_t consumed = 0;
	const char *why = NULL;
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK);
	int r;

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		log_info(s->id, "%s closed before its PROXY header", s->peer);
		session_close(s, NULL);
		return;
	}
	r = proxyproto_parse(buf, (size_t)n, &pp, &consumed, &why);
	if (r == PC_AGAIN && (size_t)n < sizeof(buf))
		return;
	if (r != PC_DONE) {
		log_warn(s->id, "bad PROXY header from %s: %s; closing", s->peer,
		    why ? why : "too long");
		session_close(s, NULL);
		return;
	}
	if (recv(fd, buf, consumed, 0) != (ssize_t)consumed) {
		session_close(s, NULL);
		return;
	}
	event_free(s->proxy_ev);
	s->proxy_ev = NULL;
	evtimer_del(s->timer);
	if (!pp.local) {
		char via[80];
		snprintf(via, sizeof(via), "%s", s->peer);
		getnameinfo((struct sockaddr *)&pp.src, pp.src_len, s->client_ip,
		    sizeof(s->client_ip), s->client_port, sizeof(s->client_port),
		    NI_NUMERICHOST | NI_NUMERICSERV);
		getnameinfo((struct sockaddr *)&pp.dst, pp.dst_len, s->local_ip,
		    sizeof(s->local_ip), s->local_port, sizeof(s->local_port),
		    NI_NUMERICHOST | NI_NUMERICSERV);
		snprintf(s->peer, sizeof(s->peer), "%s:%s", s->client_ip, s->client_port);
		log_info(s->id, "PROXY v%d header from %s: client=%s", pp.version, via, s->peer);
	}
	if (server_ip_acquire(s->srv, s->client_ip, s->ip_key, sizeof(s->ip_key)) != 0) {
		log_warn(s->id, "refused client=%s: max_connections_per_ip reached", s->peer);
		session_close(s, R_TOO_MANY_CONN_IP);
		return;
	}
	s->ip_held = 1;
	s->state = SESSION_CONNECTING;
	session_start(s);
}

/* session_start - the client is known: TLS first on a tls listener */
static void
session_start(struct session *s)
{
	const struct config *cfg = s->cfg;

	/* The name is wanted for XCLIENT after EHLO: ask now, so the answer
	 * is usually in by then. */
	if (cfg->client_rdns && cfg->backend_xclient && s->srv->backend_xclient_name)
		rdns_start(s);
	conn_read_start(s->client);
	if (s->tls_implicit) {
		s->state = SESSION_TLS;
		session_arm(s, s->cfg->timeout_ms);
		if (conn_tls_start(s->client, s->srv->tls_server, 1, NULL, 0) != 0) {
			log_err(s->id, "cannot start TLS for client=%s: %s", s->peer,
			    s->client->tls_error);
			session_close(s, NULL);
		}
		return;
	}
	session_begin(s);
}

/* session_begin - connect hooks, then the backend */
static void
session_begin(struct session *s)
{
	log_info(s->id, "connect from client=%s%s%s", s->peer, s->tls_proto ? " tls=" : "",
	    s->tls_proto ? s->tls_proto : "");
	s->state = SESSION_CONNECTING;
	if (chain_has(s->chain, PC_STAGE_CONNECT)) {
		s->busy = 1;
		session_view(s, NULL, NULL);
		chain_run(&s->cs, PC_STAGE_CONNECT, on_connect_verdict, s);
		return;
	}
	session_connect_backend(s);
}

/* session_tls_done - a handshake finished */
static void
session_tls_done(struct session *s)
{
	s->tls_proto = conn_tls_version(s->client);
	evtimer_del(s->timer);
	log_info(s->id, "TLS %s with client=%s cipher=%s", s->tls_proto, s->peer,
	    SSL_get_cipher_name(s->client->ssl));
	if (s->tls_implicit) {
		s->tls_implicit = 0;
		session_begin(s);
		return;
	}
	s->state = SESSION_COMMAND;
	session_forget(s);
}

/*
 * session_forget - RFC 3207 §4.2: after STARTTLS, forget everything the
 * client said before it (EHLO, AUTH, the transaction), as if it had just
 * connected; only the TLS layer's own facts stay. The one place that does
 * this: the transport has already dropped the plaintext it buffered.
 */
static void
session_forget(struct session *s)
{
	int had_auth = s->auth_user != NULL;

	tx_end(s, "aborted", "STARTTLS");
	free(s->helo);
	s->helo = NULL;
	s->ehlo = 0;
	free(s->auth_user);
	s->auth_user = NULL;
	free(s->auth_candidate);
	s->auth_candidate = NULL;
	s->auth_mech[0] = '\0';
	s->auth_step = 0;
	s->xclient_next = 0;
	s->xclient_failed = 0;
	if (had_auth && !s->blackhole) {
		/* The backend leg is still logged in, and an MTA forgets AUTH
		 * only with the connection: a new leg, so nothing relays on
		 * credentials this client no longer holds. */
		log_info(s->id, "client=%s: STARTTLS after AUTH: new backend connection", s->peer);
		s->be_tls_started = 0;
		memset(&s->be.caps, 0, sizeof(s->be.caps));
		backend_renew(s, on_forget_banner);
		return;
	}
	session_done(s);
}

/* backend_renew - close the backend leg and open a new one; cb gets its
 * banner. A failure to even start is the client's 421 at once. */
static void
backend_renew(struct session *s, backend_cb cb)
{
	backend_close(s);
	s->be.dead = 0;
	if (backend_connect(s, cb) != 0) {
		log_err(s->id, "cannot create the backend connection: %s", strerror(errno));
		session_close(s, R_BACKEND_DOWN);
		s->busy = 0;
	}
}

/* on_forget_banner - the new backend leg after STARTTLS greeted */
static void
on_forget_banner(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (!backend_greeted(s, res, r)) {
		s->busy = 0;
		return;
	}
	session_done(s);
}

/* session_connect_backend - connect hooks passed: now the backend */
static void
session_connect_backend(struct session *s)
{
	if (backend_connect(s, on_banner) != 0) {
		log_err(s->id, "cannot create the backend connection: %s", strerror(errno));
		session_close(s, R_BACKEND_DOWN);
	}
}

/* on_connect_verdict - what the connect hooks said */
static void
on_connect_verdict(void *arg, const struct chain_result *r)
{
	struct session *s = arg;
	char q[600];

	s->busy = 0;
	switch (r->action) {
	case PC_CONTINUE:
	case PC_ACCEPT:
		session_connect_backend(s);
		return;
	case PC_DROP:
		/* A black hole: the session goes on, nothing is delivered and
		 * the backend is never bothered. */
		log_info(s->id, "client=%s dropped at connect by=%s: nothing will be delivered",
		    s->peer, r->by);
		s->blackhole = 1;
		s->bh_by = r->by;
		s->bh_stage = "connect";
		session_greet(s);
		return;
	case PC_REJECT:
		/* RFC 5321 §3.1: a 554 greeting; the client should QUIT, and
		 * whatever else it says gets the same answer. */
		log_info(s->id, "client=%s rejected at connect by=%s reply=\"%s\"", s->peer, r->by,
		    log_quote(q, sizeof(q), r->reply, strlen(r->reply)));
		snprintf(s->refused, sizeof(s->refused), "%s", r->reply);
		s->state = SESSION_COMMAND;
		session_reply(s, "%s", r->reply);
		session_process(s);
		return;
	default:
		log_info(s->id, "client=%s %s at connect by=%s reply=\"%s\"", s->peer,
		    verdict_action_name(r->action), r->by,
		    log_quote(q, sizeof(q), r->reply, strlen(r->reply)));
		session_reply(s, "%s", r->reply);
		session_close(s, NULL);
		return;
	}
}

/* backend_greeted - a 220 from a new backend leg? If not, the client is
 * told the service is down and the session ends. */
static int
backend_greeted(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (res == BACKEND_REPLY && r->code == 220)
		return 1;
	if (res == BACKEND_REPLY)
		log_warn(s->id, "backend greeted with %d, not 220", r->code);
	session_close(s, R_BACKEND_DOWN);
	return 0;
}

/* session_greet - our banner, unless the client spoke first: a client
 * that talks before the greeting is not waiting for replies, and its
 * commands must not run (RFC 5321 §3.1; Postfix's pregreet test) */
static void
session_greet(struct session *s)
{
	s->state = SESSION_COMMAND;
	if (evbuffer_get_length(s->client->in) > 0) {
		char q[120];
		log_warn(s->id,
		    "client=%s sent %zu octets before the greeting: \"%s\"; disconnecting", s->peer,
		    evbuffer_get_length(s->client->in), input_quote(s, q, sizeof(q)));
		session_hangup(s, R_PIPELINING, "spoke before the greeting");
		return;
	}
	session_reply(s, R_BANNER, s->cfg->hostname);
	session_process(s);
}

/* session_hangup - a last reply of ours, then close: what the client sent
 * can no longer be read as commands */
static void
session_hangup(struct session *s, const char *reply, const char *why)
{
	tx_end(s, "aborted", why);
	session_reply(s, "%s", reply);
	session_close(s, NULL);
	s->busy = 0;
}

/* input_quote - the start of what the client has sent and we have not
 * read yet, quoted for the log */
static const char *
input_quote(struct session *s, char *buf, size_t size)
{
	size_t l = evbuffer_get_length(s->client->in), n = l < 60 ? l : 60;
	const char *p = (const char *)evbuffer_pullup(s->client->in, (ssize_t)n);

	return log_quote(buf, size, p ? p : "", p ? n : 0);
}

/* on_banner - the backend greeted (or did not): greet the client */
static void
on_banner(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (!backend_greeted(s, res, r))
		return;
	session_greet(s);
}

/* session_reply - send one reply line we wrote ourselves; 4xx/5xx count as errors */
static void
session_reply(struct session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	memcpy(line + n, "\r\n", 2);
	evbuffer_add(s->client->out, line, (size_t)n + 2);
	if ((line[0] == '4' || line[0] == '5') && strncmp(line, "421", 3) != 0)
		s->errors++;
}

/* session_relay - send the backend's reply to the client, line by line */
static void
session_relay(struct session *s, const struct smtp_reply *r)
{
	struct evbuffer *out = s->client->out;
	const char *t;
	size_t len, n;

	for (n = 0; (t = smtp_reply_line(r, n, &len)) != NULL; n++) {
		char sep = n + 1 == r->nlines ? ' ' : '-';
		evbuffer_add_printf(out, "%03d%c%.*s\r\n", r->code, sep, (int)len, t);
	}
	if (r->code >= 400)
		s->errors++;
}

/* session_arm - (re)start the client's deadline */
static void
session_arm(struct session *s, uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

	evtimer_add(s->timer, &tv);
}

/* session_read_cb - bytes from the client */
static void
session_read_cb(struct conn *c, void *arg)
{
	session_process(arg);
}

/* session_write_cb - the client read everything we sent */
static void
session_write_cb(struct conn *c, void *arg)
{
	struct session *s = arg;

	if (s->state == SESSION_CLOSING) {
		session_free(s);
		return;
	}
	session_process(s);
}

/* session_event_cb - the client closed or failed */
static void
session_event_cb(struct conn *c, int what, void *arg)
{
	struct session *s = arg;

	if (what == CONN_TLS) {
		session_tls_done(s);
		return;
	}
	if (s->state == SESSION_TLS) {
		log_info(s->id, "TLS handshake with client=%s failed: %s", s->peer,
		    s->client->tls_error[0] ? s->client->tls_error : "connection closed");
		session_free(s);
		return;
	}
	if (what == CONN_EOF && s->state != SESSION_CLOSING) {
		/* A client may half-close after its last command and still
		 * read the replies: finish what is buffered first. */
		s->eof = 1;
		session_process(s);
		return;
	}
	if (s->state != SESSION_CLOSING) {
		log_info(s->id, "lost connection with client=%s%s", s->peer,
		    s->state == SESSION_DATA ? " in the middle of DATA" : "");
		tx_end(s, "aborted", "client disconnected");
	}
	session_free(s);
}

/* session_timer_cb - the client's deadline passed, or a closing linger ended */
static void
session_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->state == SESSION_CLOSING) {
		session_free(s);
		return;
	}
	if (s->state == SESSION_PROXY || s->state == SESSION_TLS) {
		log_info(s->id, "timeout waiting for %s from %s",
		    s->state == SESSION_PROXY ? "the PROXY header" : "the TLS handshake", s->peer);
		session_free(s);
		return;
	}
	log_info(s->id, "timeout %s client=%s",
	    evbuffer_get_length(s->client->out) > SESSION_OUTPUT_MAX
	        ? "waiting for the client to read its replies:"
	        : s->state == SESSION_DATA ? "during DATA from"
	                                   : "waiting for a command from",
	    s->peer);
	tx_end(s, "aborted", "timeout");
	session_close(s, R_TIMEOUT);
}

/*
 * session_process - handle buffered client input: one command (or the
 * message) at a time, until input runs out or a command has to wait.
 */
static void
session_process(struct session *s)
{
	struct config *cfg = s->cfg;
	struct evbuffer *in = s->client->in;

	if (s->in_process)
		return;
	s->in_process = 1;
	while (!s->busy &&
	    (s->state == SESSION_COMMAND || s->state == SESSION_DATA || s->state == SESSION_AUTH)) {
		struct evbuffer_ptr eol;
		size_t len;
		char *line;

		if (evbuffer_get_length(s->client->out) > SESSION_OUTPUT_MAX) {
			/* Resumed by session_write_cb, if the client reads in
			 * time: a client that never reads must not keep its
			 * session and backend connection. */
			if (!evtimer_pending(s->timer, NULL))
				session_arm(s, cfg->timeout_ms);
			break;
		}
		if (s->state == SESSION_DATA) {
			if (session_data_input(s) == PC_AGAIN)
				break;
			continue;
		}
		eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
		size_t max =
		    s->state == SESSION_AUTH && cfg->max_line_length < SESSION_AUTH_LINE_MAX
		    ? SESSION_AUTH_LINE_MAX
		    : cfg->max_line_length;
		if (eol.pos < 0) {
			len = evbuffer_get_length(in);
			/* RFC 5321 §4.5.3.1.4: an over-long line is refused,
			 * not cut; what we hold of it is bounded. */
			if (len > max + 2) {
				if (!s->discarding)
					log_info(s->id,
					    "command line over %llu octets from client=%s",
					    (unsigned long long)cfg->max_line_length, s->peer);
				s->discarding = 1;
				evbuffer_drain(in, len);
			}
			if (s->eof) {
				log_info(s->id, "disconnect from client=%s commands=%lu", s->peer,
				    s->ncommands);
				tx_end(s, "aborted", "client disconnected");
				session_close(s, NULL);
				break;
			}
			if (!evtimer_pending(s->timer, NULL))
				session_arm(s, cfg->timeout_ms);
			break;
		}
		evtimer_del(s->timer);
		len = (size_t)eol.pos;
		/* max counts the line without its CR LF (or bare LF). */
		if (s->discarding || len > max + line_has_cr(in, len)) {
			evbuffer_drain(in, len + 1);
			s->discarding = 0;
			s->busy = 1;
			if (s->state == SESSION_AUTH) {
				log_info(s->id,
				    "auth: client=%s mechanism=%s: answer over %d octets, "
				    "cancelled",
				    s->peer, s->auth_mech, SESSION_AUTH_LINE_MAX);
				auth_cancel(s, R_LINE_TOO_LONG);
				continue;
			}
			session_reply(s, R_LINE_TOO_LONG);
			session_done(s);
			continue;
		}
		if ((line = malloc(len + 1)) == NULL) {
			session_close(s, NULL);
			break;
		}
		evbuffer_remove(in, line, len + 1);
		if (len > 0 && line[len - 1] == '\r')
			len--;
		line[len] = '\0';
		if (s->state == SESSION_AUTH)
			session_auth_line(s, line, len);
		else
			session_command(s, line, len);
	}
	s->in_process = 0;
	if (s->state == SESSION_CLOSING && s->free_pending) {
		session_free(s);
		return;
	}
	conn_consumed(s->client);
	conn_flush(s->client);
}

/* line_has_cr - does the line of len octets before the LF end in CR? */
static int
line_has_cr(struct evbuffer *in, size_t len)
{
	struct evbuffer_ptr p;
	char c;

	if (len == 0 || evbuffer_ptr_set(in, &p, len - 1, EVBUFFER_PTR_SET) != 0 ||
	    evbuffer_copyout_from(in, &p, &c, 1) != 1)
		return 0;
	return c == '\r';
}

/* session_data_input - feed the message to the framer; PC_AGAIN: need more */
static int
session_data_input(struct session *s)
{
	struct evbuffer *in = s->client->in;
	struct evbuffer_iovec vec[8];
	int n, i;

	while (evbuffer_get_length(in) > 0) {
		n = evbuffer_peek(in, -1, NULL, vec, 8);
		if (n > 8)
			n = 8;
		for (i = 0; i < n; i++) {
			size_t used;
			int r =
			    dataread_feed(&s->tx.framer, vec[i].iov_base, vec[i].iov_len, &used);
			evbuffer_drain(in, used);
			if (r == PC_DONE) {
				evtimer_del(s->timer);
				data_end(s);
				return PC_DONE;
			}
		}
	}
	if (s->eof) {
		log_info(s->id, "client=%s disconnected in the middle of DATA", s->peer);
		tx_end(s, "aborted", "client disconnected in DATA");
		session_close(s, NULL);
		return PC_AGAIN;
	}
	return PC_AGAIN;
}

/* session_command - dispatch one command line through the table */
static void
session_command(struct session *s, char *line, size_t len)
{
	const struct command *c = NULL;

	free(s->line);
	s->line = line;
	s->busy = 1;
	s->ncommands++;
	if (command_forbidden(line, len)) {
		/* Postfix's smtpd_forbidden_commands: an HTTP request (or a
		 * TLS hello, or worse) is no SMTP client; what follows it
		 * must never run as commands. */
		char q[120];
		log_warn(s->id, "forbidden command from client=%s: \"%s\"; disconnecting", s->peer,
		    log_quote(q, sizeof(q), line, len));
		session_hangup(s, R_FORBIDDEN_CMD, "forbidden command");
		return;
	}
	if (smtp_utf8_check(line, len) < 0) {
		char q[120];
		log_info(s->id, "bad UTF-8 in a command from client=%s: \"%s\"", s->peer,
		    log_quote(q, sizeof(q), line, len));
		session_reply(s, R_BAD_UTF8);
		session_done(s);
		return;
	}
	if (smtp_parse_command(line, len, &s->cmd) != PC_OK) {
		char q[120];
		log_info(s->id, "bad command line from client=%s: \"%s\"", s->peer,
		    log_quote(q, sizeof(q), line, len));
		session_reply(s, R_BAD_SYNTAX);
		session_done(s);
		return;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (commands[i].verb == s->cmd.verb) {
			c = &commands[i];
			break;
		}
	}
	if (c == NULL) /* a verb we parse but do not serve */
		c = &commands[sizeof(commands) / sizeof(commands[0]) - 1];
	if (s->cmd.verb == SMTP_VERB_BDAT) {
		/* We never offer CHUNKING (DESIGN §2): a chunk follows BDAT
		 * whatever we answer, and must not run as commands. */
		log_warn(s->id, "client=%s sent BDAT without CHUNKING; closing", s->peer);
		session_hangup(s, R_NOT_IMPL, "BDAT");
		return;
	}
	if (c->verb == SMTP_VERB_DATA && evbuffer_get_length(s->client->in) > 0 &&
	    (s->refused[0] != '\0' || data_refusal(s) != NULL)) {
		/* RFC 2920 §3.1: DATA ends a pipelined group. What a client
		 * sent behind a DATA we refuse is its message, and must not
		 * run as commands (Postfix's smtpd_forbid_unauth_pipelining). */
		char q[120];
		log_warn(s->id,
		    "improper command pipelining after %s from client=%s: \"%s\"; disconnecting",
		    smtp_verb_name(c->verb), s->peer, input_quote(s, q, sizeof(q)));
		session_hangup(s, R_PIPELINING, "improper pipelining");
		return;
	}
	if (s->draining && !s->tx.active && c->verb != SMTP_VERB_QUIT) {
		/* Shutting down: the transaction is over; QUIT still gets its
		 * 221, anything else the 421. */
		session_close(s, R_SHUTDOWN);
		s->busy = 0;
		return;
	}
	if (s->refused[0] != '\0' && c->verb != SMTP_VERB_QUIT && c->verb != SMTP_VERB_NOOP) {
		session_reply(s, "%s", s->refused);
		session_done(s);
		return;
	}
	if (c->check(s) != PC_OK) {
		session_done(s);
		return;
	}
	session_hooks(s, c->stage, c->proceed);
}

/* command_forbidden - a line no SMTP client sends: CONNECT, GET or POST
 * (an HTTP request), or one that does not start with a letter (Postfix's
 * smtpd_forbidden_commands default, "CONNECT GET POST regexp:^[^A-Z]") */
static int
command_forbidden(const char *line, size_t len)
{
	static const char *const verbs[] = {"CONNECT", "GET", "POST"};

	if (len == 0)
		return 0; /* an empty line is a syntax error, not an attack */
	if (!((line[0] >= 'A' && line[0] <= 'Z') || (line[0] >= 'a' && line[0] <= 'z')))
		return 1;
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		size_t n = strlen(verbs[i]);
		if (len >= n && strncasecmp(line, verbs[i], n) == 0 && (len == n || line[n] == ' '))
			return 1;
	}
	return 0;
}

/* session_hooks - ask the filter chain about this stage, then proceed */
static void
session_hooks(struct session *s, enum hook_stage stage, void (*proceed)(struct session *))
{
	static const enum pc_stage stages[] = {
	    [HOOK_HELO] = PC_STAGE_HELO,
	    [HOOK_MAIL] = PC_STAGE_MAIL,
	    [HOOK_RCPT] = PC_STAGE_RCPT,
	    [HOOK_DATA] = PC_STAGE_DATA,
	};

	/* Nothing to ask: no stage, no filter, or nothing will be delivered
	 * anyway (a drop already decided). */
	if (stage == HOOK_NONE || s->blackhole || s->tx.dropped ||
	    !chain_has(s->chain, stages[stage])) {
		proceed(s);
		return;
	}
	s->proceed = proceed;
	if (stage == HOOK_HELO) {
		char *helo = strndup(s->cmd.arg, s->cmd.arg_len);
		if (helo == NULL) {
			session_reply(s, R_LOCAL_ERROR);
			session_done(s);
			return;
		}
		session_view(s, helo, NULL);
	} else if (stage == HOOK_RCPT) {
		char *params = path_params(&s->path);
		if (params == NULL) {
			session_reply(s, R_LOCAL_ERROR);
			session_done(s);
			return;
		}
		session_view(s, s->path.addr, params);
	} else {
		session_view(s, NULL, NULL);
	}
	chain_run(&s->cs, stages[stage], on_hooks_done, s);
}

/*
 * session_view - refresh what the chain may read, before it runs. arg and
 * params are the stage's own strings (HELO's name, RCPT's address and
 * parameters): helo and params are taken over (freed at the next stage),
 * a RCPT address lives in s->path until the next command.
 */
static void
session_view(struct session *s, const char *arg, const char *params)
{
	struct chain_view *v = &s->view;
	struct transaction *tx = &s->tx;
	int in_tx = tx->id[0] != '\0';

	free(s->stage_arg);
	free(s->stage_params);
	s->stage_arg = s->stage_params = NULL;
	if (arg != NULL && arg != s->path.addr)
		s->stage_arg = (char *)arg;
	s->stage_params = (char *)params;
	v->id = s->id;
	v->tx_id = in_tx ? tx->id : NULL;
	v->client_ip = s->client_ip;
	v->client_port = s->client_port;
	v->local_ip = s->local_ip;
	v->local_port = s->local_port;
	v->client_name = s->rdns_state == RDNS_OK ? s->client_name : NULL;
	v->hostname = s->cfg->hostname;
	v->helo = s->helo;
	v->tls_proto = s->tls_proto;
	v->tls_cipher = s->tls_proto != NULL ? conn_tls_cipher(s->client) : NULL;
	v->auth_user = s->auth_user;
	v->sender = in_tx ? tx->sender : NULL;
	v->sender_params = in_tx ? tx->sender_params : NULL;
	v->rcpts = tx->rcpts;
	v->nrcpt = tx->nrcpt;
	v->arg = arg;
	v->arg_params = params;
	v->spool = tx->spool_open ? &tx->spool : NULL;
	v->msg = tx->msg_parsed ? &tx->msg : NULL;
	v->size = tx->size;
}

/* on_hooks_done - the stage is decided: proceed, or answer the verdict */
static void
on_hooks_done(void *arg, const struct chain_result *r)
{
	struct session *s = arg;

	if (r->action == PC_CONTINUE || r->action == PC_ACCEPT) {
		s->proceed(s);
		return;
	}
	session_verdict(s, chain_stage(&s->cs), r);
}

/* session_verdict - reject, tempfail, drop or disconnect at a stage */
static void
session_verdict(struct session *s, enum pc_stage stage, const struct chain_result *r)
{
	struct transaction *tx = &s->tx;
	const char *status = r->action == PC_REJECT ? "rejected" : "tempfail";
	char q[LOG_ADDR_MAX > 600 ? LOG_ADDR_MAX : 600];

	/* The summary line names who decided the transaction; a refused
	 * recipient does not decide it (its own line says who refused it). */
	if (tx->id[0] != '\0' && tx->by == NULL && stage != PC_STAGE_RCPT) {
		tx->by = r->by;
		tx->stage = verdict_stage_name(stage);
	}
	if (r->action == PC_DISCONNECT) {
		log_info(s->id, "client=%s disconnected at %s by=%s", s->peer,
		    verdict_stage_name(stage), r->by);
		session_reply(s, "%s", r->reply);
		tx_end(s, "aborted", r->reply);
		session_close(s, NULL);
		s->busy = 0;
		return;
	}
	switch (stage) {
	case PC_STAGE_HELO:
		if (r->action == PC_DROP) {
			log_info(s->id,
			    "client=%s dropped at helo by=%s: nothing will be delivered", s->peer,
			    r->by);
			s->blackhole = 1;
			s->bh_by = r->by;
			s->bh_stage = "helo";
			backend_close(s);
			proceed_helo(s);
			return;
		}
		log_info(s->id, "%s from client=%s %s by=%s reply=\"%s\"",
		    smtp_verb_name(s->cmd.verb), s->peer, status, r->by,
		    log_quote(q, sizeof(q), r->reply, strlen(r->reply)));
		session_reply(s, "%s", r->reply);
		break;
	case PC_STAGE_MAIL:
		if (r->action == PC_DROP) {
			tx->active = 1;
			tx->dropped = 1;
			session_reply(s, R_DROP_MAIL);
			break;
		}
		session_reply(s, "%s", r->reply);
		tx_end(s, status, r->reply);
		break;
	case PC_STAGE_RCPT:
		tx->rcpt_tried++;
		if (r->action == PC_DROP) {
			tx->nrcpt_dropped++;
			tx->rcpt_drop_by = r->by;
			tx_add_rcpt(s, s->path.addr, 1);
			status = "dropped";
		}
		log_info(tx->id, "to=<%s> %s at rcpt by=%s reply=\"%s\"",
		    log_quote(q, sizeof(q), s->path.addr, strlen(s->path.addr)), status, r->by,
		    r->action == PC_DROP ? R_DROP_RCPT : r->reply);
		session_reply(s, "%s", r->action == PC_DROP ? R_DROP_RCPT : r->reply);
		break;
	case PC_STAGE_DATA:
		if (r->action == PC_DROP)
			data_refuse(s, R_DROP_DATA, "dropped");
		else
			data_refuse(s, r->reply, status);
		return;
	case PC_STAGE_CONNECT:
		break; /* on_connect_verdict */
	}
	session_done(s);
}

/* session_done - the current command has its reply */
static void
session_done(struct session *s)
{
	s->busy = 0;
	if (s->state == SESSION_CLOSING)
		return;
	if (s->errors >= s->cfg->max_errors) {
		log_info(s->id, "too many errors (%u) from client=%s", s->errors, s->peer);
		tx_end(s, "aborted", "too many errors");
		session_close(s, R_TOO_MANY_ERRORS);
		return;
	}
	session_process(s);
}

/*
 * session_close - send a last reply (NULL: none), then free the session
 * once the client has it, or after a linger.
 */
static void
session_close(struct session *s, const char *reply)
{
	if (s->state == SESSION_CLOSING)
		return;
	chain_cancel(&s->cs);
	/* reply is one of the 421 constants of replies.h, whose one %s is
	 * the host name. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	if (reply != NULL)
		session_reply(s, reply, s->cfg->hostname);
#pragma GCC diagnostic pop
	s->state = SESSION_CLOSING;
	conn_read_stop(s->client);
	backend_close(s);
	conn_flush(s->client);
	if (evbuffer_get_length(s->client->out) == 0) {
		if (s->in_process)
			s->free_pending = 1;
		else
			session_arm(s, 0);
		return;
	}
	/* A client that does not read gets no longer than any other wait. */
	session_arm(
	    s, s->cfg->timeout_ms < SESSION_LINGER_MS ? s->cfg->timeout_ms : SESSION_LINGER_MS);
}

/* session_free - release everything */
static void
session_free(struct session *s)
{
	struct server *srv = s->srv;

	if (s->in_process) {
		s->free_pending = 1;
		s->state = SESSION_CLOSING;
		return;
	}
	tx_end(s, "aborted", "session ended");
	session_view(s, NULL, NULL);
	chain_session_end(&s->cs);
	free(s->stage_arg);
	free(s->stage_params);
	rdns_cancel(s);
	backend_close(s);
	if (s->timer != NULL)
		event_free(s->timer);
	conn_free(s->client);
	TAILQ_REMOVE(&srv->sessions, s, entry);
	srv->nsessions--;
	if (s->ip_held)
		server_ip_release(srv, s->ip_key);
	if (s->proxy_ev != NULL)
		event_free(s->proxy_ev);
	free(s->auth_user);
	free(s->auth_candidate);
	free(s->line);
	free(s->helo);
	free(s->client_name);
	generation_release(s->gen);
	free(s);
	if (srv->draining && srv->nsessions == 0)
		event_base_loopexit(srv->base, NULL);
}

/*
 * session_backend_ok - is this a reply of one of the expected classes
 * ("245": 2xx, 4xx or 5xx)? If not, the client gets a 451, then a 421, and
 * the session ends: a backend out of step cannot be trusted with more.
 */
static int
session_backend_ok(
    struct session *s, enum backend_result res, const struct smtp_reply *r, const char *classes)
{
	const char *reply;

	switch (res) {
	case BACKEND_REPLY:
		if (strchr(classes, '0' + r->code / 100) != NULL)
			return 1;
		log_warn(s->id, "backend answered %s with unexpected %d",
		    smtp_verb_name(s->cmd.verb), r->code);
		reply = R_BACKEND_ERROR;
		break;
	case BACKEND_TIMEOUT:
		reply = R_BACKEND_TIMEOUT;
		break;
	case BACKEND_SURPLUS:
		/* Which reply answers this command is unknown: the client
		 * gets no answer to it but the 421 (RFC 5321 §3.8). */
		s->be.dead = 1;
		tx_end(s, "tempfail", "backend protocol error");
		session_close(s, R_BACKEND_PROTOCOL);
		s->busy = 0;
		return 0;
	default:
		reply = R_BACKEND_LOST;
		break;
	}
	s->be.dead = 1;
	session_reply(s, "%s", reply);
	tx_end(s, "tempfail", reply);
	session_close(s, R_BACKEND_LOST_CLOSE);
	s->busy = 0;
	return 0;
}

/* session_backend_gone - the backend left between commands */
void
session_backend_gone(struct session *s, enum backend_result res)
{
	if (s->state == SESSION_COMMAND && !s->busy) {
		/* A reply nobody asked for is a protocol error (DESIGN §2). */
		tx_end(s, "aborted",
		    res == BACKEND_REPLY ? "backend protocol error" : "backend connection lost");
		session_close(s, res == BACKEND_REPLY ? R_BACKEND_PROTOCOL : R_BACKEND_LOST_CLOSE);
	}
	/* Otherwise the next backend command finds the leg dead. */
}

/* The recipients that go on the summary line; the rest follow on lines
 * of their own, so the line is never cut (log.c's LOG_LINE_MAX). */
#define TX_LOG_RCPTS_MAX 1024

/* tx_log - the one summary line of a transaction (STYLE.md, 8), Postfix-like:
 * who, from, how many to whom, size, delay, TLS, Message-ID, the verdict
 * trail and the final reply; recipients past TX_LOG_RCPTS_MAX octets go on
 * "more to=" lines, so nothing is ever cut silently */
static void
tx_log(struct session *s, const char *status, const char *reply)
{
	struct transaction *tx = &s->tx;
	char to[TX_LOG_RCPTS_MAX + LOG_ADDR_MAX], dropped[TX_LOG_RCPTS_MAX + LOG_ADDR_MAX];
	const struct rcpt *next_to, *next_dropped;
	const char *m = tx->msg_parsed ? message_header(&tx->msg, "Message-ID", 0) : NULL;
	char from_b[LOG_ADDR_MAX], helo_b[512], mid_b[512], q_b[600];
	char *heap[4];
	const char *from = quote_field(from_b, sizeof(from_b), tx->sender, &heap[0]),
	           *helo = quote_field(helo_b, sizeof(helo_b), s->helo, &heap[1]),
	           *mid = quote_field(mid_b, sizeof(mid_b), m, &heap[2]),
	           *q = quote_field(q_b, sizeof(q_b), reply, &heap[3]);
	struct timeval now, d;

	next_to = rcpt_list(tx->rcpts, 0, to, sizeof(to));
	next_dropped = rcpt_list(tx->rcpts, 1, dropped, sizeof(dropped));
	event_base_gettimeofday_cached(s->srv->base, &now);
	timersub(&now, &tx->start, &d);
	if (tx->start.tv_sec == 0 || d.tv_sec < 0)
		d.tv_sec = 0, d.tv_usec = 0;
	log_info(tx->id,
	    "client=%s helo=%s tls=%s%s%s from=<%s> nrcpt=%u to=%s%s%s%s size=%zu delay=%ld.%03ld%s%s "
	    "status=%s%s%s%s%s reply=\"%s\"",
	    s->peer, helo, s->tls_proto ? s->tls_proto : "no", s->auth_user ? " user=" : "",
	    s->auth_user ? s->auth_user : "", from, tx->nrcpt, to[0] ? to : "<>",
	    next_to ? ",..." : "", dropped[0] ? " dropped_to=" : "", dropped, tx->size,
	    (long)d.tv_sec, (long)(d.tv_usec / 1000), m != NULL ? " message-id=" : "", mid, status,
	    tx->by ? " stage=" : "", tx->by ? tx->stage : "", tx->by ? " by=" : "",
	    tx->by ? tx->by : "", q);
	for (size_t i = 0; i < sizeof(heap) / sizeof(heap[0]); i++)
		free(heap[i]);
	/* The rest of a long list, a bounded line at a time. */
	while (next_to != NULL) {
		next_to = rcpt_list(next_to, 0, to, sizeof(to));
		log_info(tx->id, "more to=%s%s", to, next_to ? ",..." : "");
	}
	while (next_dropped != NULL) {
		next_dropped = rcpt_list(next_dropped, 1, dropped, sizeof(dropped));
		log_info(tx->id, "more dropped_to=%s%s", dropped, next_dropped ? ",..." : "");
	}
}

/* quote_field - a log-safe copy of all of p (NULL: "") for the summary
 * line: in buf when it fits (the usual case, no allocation), else in memory
 * of its own that *heap holds for the caller to free. Never cut but when
 * that memory cannot be had, and then marked by log_quote's "...". */
static const char *
quote_field(char *buf, size_t size, const char *p, char **heap)
{
	size_t len = p ? strlen(p) : 0, need = 4 * len + 8;

	*heap = NULL;
	if (need > size && (*heap = malloc(need)) != NULL) {
		buf = *heap;
		size = need;
	}
	return log_quote(buf, size, p ? p : "", len);
}

/* reply_text - "code text" of a reply's last line, for the log; its length */
static size_t
reply_text(const struct smtp_reply *r, char *buf, size_t size)
{
	size_t len;
	const char *t = smtp_reply_line(r, r->nlines - 1, &len);
	int n = snprintf(buf, size, "%d %.*s", r->code, (int)len, t ? t : "");

	return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

/* rcpt_list - "<a>,<b>" of the forwarded (or dropped) recipients from r on,
 * up to TX_LOG_RCPTS_MAX octets; the first recipient left out, or NULL */
static const struct rcpt *
rcpt_list(const struct rcpt *r, int dropped, char *buf, size_t size)
{
	size_t o = 0;

	buf[0] = '\0';
	for (; r != NULL; r = r->next) {
		char a[LOG_ADDR_MAX];
		int n;
		if (r->dropped != dropped)
			continue;
		if (o > 0 && o >= TX_LOG_RCPTS_MAX)
			return r;
		n = snprintf(buf + o, size - o, "%s<%s>", o ? "," : "",
		    log_quote(a, sizeof(a), r->addr, strlen(r->addr)));
		if (n < 0 || (size_t)n >= size - o)
			return r; /* cannot happen: size leaves room for one more */
		o += (size_t)n;
	}
	return NULL;
}

/* tx_add_rcpt - remember an accepted (or dropped) recipient */
static void
tx_add_rcpt(struct session *s, const char *addr, int dropped)
{
	struct rcpt *rc = calloc(1, sizeof(*rc));

	if (rc == NULL || (rc->addr = strdup(addr)) == NULL) {
		free(rc);
		log_err(s->tx.id, "out of memory recording a recipient");
		return;
	}
	rc->dropped = dropped;
	*s->tx.rcpt_tail = rc;
	s->tx.rcpt_tail = &rc->next;
	if (!dropped)
		s->tx.nrcpt++;
}

/* tx_end - the transaction is over (if there was one): log it, forget it */
static void
tx_end(struct session *s, const char *status, const char *reply)
{
	struct transaction *tx = &s->tx;
	struct rcpt *r, *next;

	if (tx->active || tx->by != NULL)
		tx_log(s, status, reply);
	if (tx->id[0] != '\0') {
		session_view(s, NULL, NULL);
		chain_tx_end(&s->cs);
	}
	for (r = tx->rcpts; r != NULL; r = next) {
		next = r->next;
		free(r->addr);
		free(r);
	}
	if (tx->spool_open)
		spool_close(&tx->spool);
	free(tx->sender);
	free(tx->sender_params);
	message_free(&tx->msg);
	unsigned seq = tx->seq;
	memset(tx, 0, offsetof(struct transaction, framer));
	tx->spool_open = 0;
	tx->seq = seq;
	tx->rcpt_tail = &tx->rcpts;
}

/* tx_begin - MAIL passed its checks: a transaction id, before the hooks */
static void
tx_begin(struct session *s)
{
	struct transaction *tx = &s->tx;

	tx->seq = ++s->tx_count;
	snprintf(tx->id, sizeof(tx->id), "%s.%u", s->id, tx->seq);
	event_base_gettimeofday_cached(s->srv->base, &tx->start);
	free(tx->sender);
	free(tx->sender_params);
	tx->sender = strdup(s->path.addr);
	tx->sender_params = path_params(&s->path);
	tx->smtputf8 = smtp_path_param(&s->path, "SMTPUTF8") != NULL;
	chain_tx_begin(&s->cs);
	if (s->blackhole) {
		tx->by = s->bh_by;
		tx->stage = s->bh_stage;
	}
}

/* ---- HELO / EHLO ---- */

static int
check_helo(struct session *s)
{
	if (s->cmd.arg_len == 0) {
		session_reply(s, s->cmd.verb == SMTP_VERB_EHLO ? R_EHLO_SYNTAX : R_HELO_SYNTAX);
		return PC_ERROR;
	}
	return PC_OK;
}

static void
proceed_helo(struct session *s)
{
	/* RFC 5321 §4.1.4: a new EHLO resets the transaction, here and there. */
	tx_end(s, "aborted", "new HELO/EHLO");
	s->xclient_next = 0; /* XCLIENT again, with this HELO */
	s->xclient_failed = 0;
	if (s->blackhole) {
		static const struct smtp_caps local = {.eightbitmime = 1, .enhancedstatuscodes = 1};
		free(s->helo);
		s->helo = strndup(s->cmd.arg, s->cmd.arg_len);
		s->ehlo = s->cmd.verb == SMTP_VERB_EHLO;
		helo_reply(s, &local);
		session_done(s);
		return;
	}
	/* The backend always gets EHLO, so we learn what it offers; it gets
	 * the client's own name, exactly, so its logs and checks see it. */
	helo_ehlo_again(s);
}

static void
on_helo(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	struct smtp_caps *caps = &s->be.caps;

	if (!session_backend_ok(s, res, r, "245"))
		return;
	if (r->code / 100 != 2) {
		session_relay(s, r);
		session_done(s);
		return;
	}
	smtp_caps_parse(r, caps);
	/* Whether later sessions should look their client up at connect. */
	s->srv->backend_xclient_name = caps->xclient && xclient_has(caps, "NAME");
	free(s->helo);
	s->helo = strndup(s->cmd.arg, s->cmd.arg_len);
	s->ehlo = s->cmd.verb == SMTP_VERB_EHLO;
	if (helo_backend_next(s))
		return;
	helo_reply(s, caps);
	session_done(s);
}

/* helo_reply - our 250 to HELO, or to EHLO with what we honour */
static void
helo_reply(struct session *s, const struct smtp_caps *caps)
{
	struct config *cfg = s->cfg;
	struct evbuffer *out;
	unsigned long long size;

	if (!s->ehlo) {
		session_reply(s, "250 %s", cfg->hostname);
		return;
	}
	/* Only what the proxy itself honours (DESIGN §2). */
	size = cfg->max_message_size;
	if (caps->size && caps->size_limit != 0 && caps->size_limit < size)
		size = caps->size_limit;
	out = s->client->out;
	evbuffer_add_printf(
	    out, "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n", cfg->hostname, size);
	if (caps->eightbitmime)
		evbuffer_add_printf(out, "250-8BITMIME\r\n");
	if (caps->smtputf8)
		evbuffer_add_printf(out, "250-SMTPUTF8\r\n");
	if (caps->enhancedstatuscodes)
		evbuffer_add_printf(out, "250-ENHANCEDSTATUSCODES\r\n");
	if (s->srv->tls_server != NULL && s->tls_proto == NULL)
		evbuffer_add_printf(out, "250-STARTTLS\r\n");
	if (caps->auth && caps->auth_mechs[0] != '\0' && s->auth_user == NULL &&
	    (s->tls_proto != NULL || cfg->auth_plaintext))
		evbuffer_add_printf(out, "250-AUTH %s\r\n", caps->auth_mechs);
	evbuffer_add_printf(out, "250 HELP\r\n");
}

/* ---- MAIL ---- */

/* size_param - RFC 1870 §3: "SIZE=" 1*20DIGIT; the value, or -1 */
static long long
size_param(const struct smtp_param *p)
{
	unsigned long long n = 0;

	if (p->value == NULL || p->value_len == 0 || p->value_len > 20)
		return -1;
	for (size_t i = 0; i < p->value_len; i++) {
		if (p->value[i] < '0' || p->value[i] > '9')
			return -1;
		if (n > (unsigned long long)LLONG_MAX / 10)
			return LLONG_MAX; /* more than any limit: too big, not bad */
		n = n * 10 + (unsigned long long)(p->value[i] - '0');
	}
	return n > (unsigned long long)LLONG_MAX ? LLONG_MAX : (long long)n;
}

/* xtext_valid - RFC 3461 §4 xtext (printable ASCII but "+" and "=", or
 * "+" and two upper-case hex digits), or "<>" */
static int
xtext_valid(const char *v, size_t len)
{
	if (len == 2 && v[0] == '<' && v[1] == '>')
		return 1;
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c == '+') {
			for (size_t k = i + 1; k <= i + 2; k++)
				if (k >= len ||
				    !((v[k] >= '0' && v[k] <= '9') || (v[k] >= 'A' && v[k] <= 'F')))
					return 0;
			i += 2;
		} else if (c < 0x21 || c > 0x7e || c == '=') {
			return 0;
		}
	}
	return 1;
}

/* param_is - is p the keyword kw (any case)? */
static int
param_is(const struct smtp_param *p, const char *kw)
{
	return p->key_len == strlen(kw) && strncasecmp(p->key, kw, p->key_len) == 0;
}

/*
 * mail_params_check - MAIL's parameters: only those of extensions we
 * advertised (RFC 5321 §4.1.1.11: 555 for the rest), each once, each with
 * a well-formed value (501): SIZE digits only (RFC 1870), BODY 7BIT or
 * 8BITMIME (RFC 6152), SMTPUTF8 without a value (RFC 6531). They go on to
 * the backend as written, so nothing malformed may pass.
 */
static int
mail_params_check(struct session *s)
{
	const struct smtp_caps *caps = &s->be.caps;

	for (size_t i = 0; i < s->path.nparams; i++) {
		const struct smtp_param *p = &s->path.params[i];
		const char *reply = NULL;

		for (size_t k = 0; k < i && reply == NULL; k++) {
			const struct smtp_param *q = &s->path.params[k];
			if (q->key_len == p->key_len &&
			    strncasecmp(q->key, p->key, p->key_len) == 0)
				reply = R_DUP_PARAM;
		}
		if (reply != NULL) {
		} else if (param_is(p, "SIZE")) {
			long long n = size_param(p);
			if (n < 0) {
				reply = R_BAD_PARAM;
			} else if ((unsigned long long)n > mail_size_limit(s)) {
				log_info(s->id, "declared SIZE=%lld over the limit %llu", n,
				    mail_size_limit(s));
				reply = R_TOO_BIG;
			}
		} else if (param_is(p, "BODY")) {
			if (p->value == NULL)
				reply = R_BAD_PARAM;
			else if (!(p->value_len == 4 && strncasecmp(p->value, "7BIT", 4) == 0) &&
			    !(p->value_len == 8 && strncasecmp(p->value, "8BITMIME", 8) == 0 &&
			        caps->eightbitmime))
				reply = R_PARAM_UNSUPPORTED;
		} else if (param_is(p, "AUTH")) {
			/* RFC 4954 §5: "<>" or an xtext mailbox, when we offered
			 * AUTH (helo_reply's rule). */
			if (!caps->auth || (s->tls_proto == NULL && !s->cfg->auth_plaintext))
				reply = R_PARAM_UNSUPPORTED;
			else if (p->value == NULL || !xtext_valid(p->value, p->value_len))
				reply = R_BAD_PARAM;
		} else if (param_is(p, "SMTPUTF8")) {
			if (!caps->smtputf8)
				reply = R_PARAM_UNSUPPORTED;
			else if (p->value != NULL)
				reply = R_BAD_PARAM;
		} else {
			reply = R_PARAM_UNSUPPORTED;
		}
		if (reply != NULL) {
			char q[120];
			log_info(s->id, "MAIL parameter refused from client=%s: \"%s\"", s->peer,
			    log_quote(q, sizeof(q), p->key,
			        (size_t)((p->value ? p->value + p->value_len
			                           : p->key + p->key_len) -
			            p->key)));
			session_reply(s, "%s", reply);
			return PC_ERROR;
		}
	}
	return PC_OK;
}

/* path_error - the reply for a path that did not parse */
static int
path_error(struct session *s, enum smtp_path_result r, const char *syntax, const char *bad)
{
	char q[200];

	switch (r) {
	case SMTP_PATH_ETOOLONG:
		session_reply(s, R_PATH_TOO_LONG);
		break;
	case SMTP_PATH_EPARAM:
	case SMTP_PATH_ETOOMANY:
		session_reply(s, R_BAD_PARAM);
		break;
	default:
		session_reply(
		    s, "%s", s->cmd.arg_len < 3 || !strchr(s->cmd.arg, ':') ? syntax : bad);
		break;
	}
	log_info(s->id, "bad %s argument from client=%s: \"%s\"", smtp_verb_name(s->cmd.verb),
	    s->peer, log_quote(q, sizeof(q), s->cmd.arg, s->cmd.arg_len));
	return PC_ERROR;
}

/* mail_size_limit - what we advertised as SIZE */
static unsigned long long
mail_size_limit(struct session *s)
{
	unsigned long long size = s->cfg->max_message_size;
	const struct smtp_caps *caps = &s->be.caps;

	if (caps->size && caps->size_limit != 0 && caps->size_limit < size)
		size = caps->size_limit;
	return size;
}

static int
check_mail(struct session *s)
{
	enum smtp_path_result r;

	if (s->helo == NULL) {
		session_reply(s, R_NEED_HELO);
		return PC_ERROR;
	}
	if (s->tx.active) {
		session_reply(s, R_NESTED_MAIL);
		return PC_ERROR;
	}
	if (s->cfg->tls_required && s->tls_proto == NULL) {
		session_reply(s, R_NEED_TLS);
		return PC_ERROR;
	}
	r = smtp_parse_path(s->cmd.arg, s->cmd.arg_len, "FROM:", 1, 0, &s->path);
	if (r != SMTP_PATH_OK)
		return path_error(s, r, R_MAIL_SYNTAX, R_BAD_SENDER);
	if (mail_params_check(s) != PC_OK)
		return PC_ERROR;
	/* RFC 6531 §3.2: a non-ASCII address only in an SMTPUTF8 transaction. */
	if (smtp_utf8_check(s->path.addr, s->path.addr_len) > 0 &&
	    smtp_path_param(&s->path, "SMTPUTF8") == NULL) {
		session_reply(s, R_NEED_SMTPUTF8);
		return PC_ERROR;
	}
	tx_begin(s);
	return PC_OK;
}

static void
proceed_mail(struct session *s)
{
	const char *params = s->tx.sender_params ? s->tx.sender_params : "";

	if (s->blackhole) {
		s->tx.active = 1;
		s->tx.dropped = 1;
		session_reply(s, R_DROP_MAIL);
		session_done(s);
		return;
	}
	if (s->tx.sender == NULL || s->tx.sender_params == NULL) {
		log_err(s->id, "out of memory recording the sender");
		session_reply(s, R_LOCAL_ERROR);
		tx_end(s, "tempfail", R_LOCAL_ERROR);
		session_done(s);
		return;
	}
	/* The canonical form of what the client sent, whatever its length
	 * (within max_line_length): never cut, never padded. */
	backend_commandf(s, s->cfg->backend_timeout_ms, on_mail, "MAIL FROM:<%s>%s%s", s->path.addr,
	    params[0] ? " " : "", params);
}

static void
on_mail(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	struct transaction *tx = &s->tx;

	if (!session_backend_ok(s, res, r, "245"))
		return;
	session_relay(s, r);
	if (r->code / 100 == 2) {
		tx->active = 1;
		tx->forwarded = 1;
	} else {
		char text[SMTP_REPLY_LINE_MAX + 8];
		const char *status = r->code / 100 == 4 ? "tempfail" : "rejected";
		reply_text(r, text, sizeof(text));
		tx_log(s, status, text); /* never active: tx_end would not log it */
		tx_end(s, status, text);
	}
	session_done(s);
}

/* ---- RCPT ---- */

static int
check_rcpt(struct session *s)
{
	enum smtp_path_result r;

	if (!s->tx.active) {
		session_reply(s, R_NEED_MAIL);
		return PC_ERROR;
	}
	r = smtp_parse_path(s->cmd.arg, s->cmd.arg_len, "TO:", 0, 1, &s->path);
	if (r != SMTP_PATH_OK)
		return path_error(s, r, R_RCPT_SYNTAX, R_BAD_RCPT);
	if (smtp_utf8_check(s->path.addr, s->path.addr_len) > 0 && !s->tx.smtputf8) {
		session_reply(s, R_NEED_SMTPUTF8);
		return PC_ERROR;
	}
	/* We advertise no RCPT extension (no DSN): refuse their parameters. */
	if (s->path.nparams > 0) {
		session_reply(s, R_PARAM_UNSUPPORTED);
		return PC_ERROR;
	}
	/* The recipient limit stops one message fanning out without bound. */
	if (s->tx.nrcpt + s->tx.nrcpt_dropped >= s->cfg->max_recipients) {
		log_info(s->tx.id, "max_recipients (%llu) reached",
		    (unsigned long long)s->cfg->max_recipients);
		session_reply(s, R_TOO_MANY_RCPT);
		return PC_ERROR;
	}
	return PC_OK;
}

static void
proceed_rcpt(struct session *s)
{
	s->tx.rcpt_tried++;
	if (s->tx.dropped) { /* a drop at MAIL or before: 250 and forget */
		s->tx.nrcpt_dropped++;
		tx_add_rcpt(s, s->path.addr, 1);
		session_reply(s, R_DROP_RCPT);
		session_done(s);
		return;
	}
	/* check_rcpt refused every parameter: the path alone. */
	backend_commandf(s, s->cfg->backend_timeout_ms, on_rcpt, "RCPT TO:<%s>", s->path.addr);
}

static void
on_rcpt(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (!session_backend_ok(s, res, r, "245"))
		return;
	session_relay(s, r);
	if (r->code / 100 == 2) {
		tx_add_rcpt(s, s->path.addr, 0);
	} else {
		/* Postfix's "NOQUEUE: reject: RCPT": the refusal is part of
		 * what happened to this message. */
		char a[LOG_ADDR_MAX], q[600], text[SMTP_REPLY_LINE_MAX + 8];
		log_info(s->tx.id, "to=<%s> %s by the backend reply=\"%s\"",
		    log_quote(a, sizeof(a), s->path.addr, strlen(s->path.addr)),
		    r->code / 100 == 4 ? "tempfail" : "rejected",
		    log_quote(q, sizeof(q), text, reply_text(r, text, sizeof(text))));
	}
	session_done(s);
}

/* ---- DATA ---- */

/* data_refusal - why DATA would not get our 354; NULL if it would */
static const char *
data_refusal(const struct session *s)
{
	if (s->cmd.arg_len != 0)
		return R_NO_ARGS;
	if (!s->tx.active)
		return R_NEED_MAIL;
	/* RFC 5321 §3.3: 554 when every recipient was refused. */
	if (s->tx.nrcpt + s->tx.nrcpt_dropped == 0)
		return s->tx.rcpt_tried ? R_NO_VALID_RCPT : R_NEED_RCPT;
	return NULL;
}

static int
check_data(struct session *s)
{
	const char *refuse = data_refusal(s);

	if (refuse != NULL) {
		session_reply(s, "%s", refuse);
		return PC_ERROR;
	}
	return PC_OK;
}

/* data_emit - the framer's output goes to the spool */
static void
data_emit(void *arg, const char *bytes, size_t len)
{
	struct session *s = arg;

	spool_write(&s->tx.spool, bytes, len);
}

/* proceed_data - our own 354: the message is read before the backend sees DATA */
static void
proceed_data(struct session *s)
{
	struct config *cfg = s->cfg;
	struct transaction *tx = &s->tx;

	if (spool_open(&tx->spool, cfg->spool_memory, cfg->spool_dir) != 0) {
		log_err(tx->id, "out of memory opening the spool");
		session_reply(s, R_LOCAL_ERROR);
		session_done(s);
		return;
	}
	tx->spool_open = 1;
	dataread_init(&tx->framer,
	    cfg->bare_lf == CONFIG_BARE_LF_NORMALIZE ? DATAREAD_NORMALIZE : DATAREAD_REJECT,
	    cfg->max_message_size, cfg->max_data_line_length, data_emit, s);
	session_reply(s, R_DATA_GO);
	s->state = SESSION_DATA;
	evtimer_del(s->timer);
	session_arm(s, cfg->data_timeout_ms);
	session_done(s);
}

/* data_end - the client sent CR LF "." CR LF */
static void
data_end(struct session *s)
{
	struct transaction *tx = &s->tx;
	struct dataread *d = &tx->framer;
	const char *refuse = NULL;

	s->busy = 1;
	s->state = SESSION_COMMAND;
	tx->size = d->size;
	if (d->errors & DATAREAD_ETOOBIG)
		refuse = R_TOO_BIG;
	else if (d->errors & DATAREAD_ENUL)
		refuse = R_NUL_IN_MESSAGE;
	else if (d->errors & (DATAREAD_EBARE_LF | DATAREAD_EBARE_CR))
		refuse = R_BAD_LINE_ENDS;
	else if (d->errors & DATAREAD_ELONGLINE)
		refuse = R_LONG_DATA_LINE;
	else if (tx->spool.failed)
		refuse = R_LOCAL_ERROR;

	if (refuse == NULL)
		refuse = tx_index(s); /* the header section is too big, or no memory */
	if (d->bare_lf || d->bare_cr || d->nul)
		log_info(tx->id, "message had bare_lf=%lu bare_cr=%lu nul=%lu (%s)", d->bare_lf,
		    d->bare_cr, d->nul, d->errors ? "refused" : "normalized");
	if (refuse != NULL) {
		if (tx->spool.failed)
			log_err(tx->id, "spool write failed: %s", strerror(tx->spool.err));
		data_refuse(s, refuse, "rejected");
		return;
	}
	if (tx->dropped || tx->nrcpt == 0) {
		/* Dropped at MAIL, or every recipient was: 250, deliver nothing. */
		if (tx->by == NULL && tx->rcpt_drop_by != NULL) {
			tx->by = tx->rcpt_drop_by;
			tx->stage = "rcpt";
		}
		data_refuse(s, R_DROP_DATA, "dropped");
		return;
	}
	session_hooks(s, HOOK_DATA, data_proceed);
}

/*
 * tx_index - index the header section at the end of DATA, for filters and
 * the log. Filters and the backend must agree on where the headers end, so
 * a section that does not end within max_header_size is refused (552 5.3.4,
 * like Postfix's header_size_limit) rather than half indexed. Most sections
 * fit the first read; it doubles until the section ends. NULL, or the reply.
 */
static const char *
tx_index(struct session *s)
{
	struct transaction *tx = &s->tx;
	size_t max = s->cfg->max_header_size, want = 8192;

	for (;;) {
		size_t n = tx->spool.size < want ? tx->spool.size : want;
		char *buf = malloc(n + 1);
		ssize_t got;
		int r;

		if (buf == NULL || (got = spool_pread(&tx->spool, 0, buf, n)) != (ssize_t)n) {
			free(buf);
			log_err(tx->id, "cannot read the spool to index the headers");
			return R_LOCAL_ERROR;
		}
		message_free(&tx->msg);
		r = message_parse(&tx->msg, buf, n, n == tx->spool.size);
		free(buf);
		if (r != 0) {
			message_free(&tx->msg);
			log_err(tx->id, "out of memory indexing the headers");
			return R_LOCAL_ERROR;
		}
		if (!tx->msg.truncated) {
			tx->msg_parsed = 1;
			return NULL;
		}
		if (n >= max) {
			log_info(tx->id, "header section over max_header_size (%zu octets)", max);
			message_free(&tx->msg);
			return R_HEADERS_TOO_BIG;
		}
		want = want * 2 < max ? want * 2 : max;
	}
}

/*
 * data_refuse - the message is not delivered: reply (a refusal, or a drop's
 * 250) once the backend has forgotten MAIL and RCPT, if it had them.
 */
static void
data_refuse(struct session *s, const char *reply, const char *status)
{
	snprintf(s->refusal, sizeof(s->refusal), "%s", reply);
	s->refusal_status = status;
	if (s->tx.forwarded && !s->be.dead) {
		backend_command(s, "RSET", 4, s->cfg->backend_timeout_ms, on_data_refused);
		return;
	}
	session_reply(s, "%s", s->refusal);
	tx_end(s, status, s->refusal);
	session_done(s);
}

static void
on_data_refused(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (!session_backend_ok(s, res, r, "245"))
		return;
	session_reply(s, "%s", s->refusal);
	tx_end(s, s->refusal_status, s->refusal);
	session_done(s);
}

static void
data_proceed(struct session *s)
{
	backend_command(s, "DATA", 4, s->cfg->backend_timeout_ms, on_data_go);
}

static void
on_data_go(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (!session_backend_ok(s, res, r, "345"))
		return;
	if (r->code / 100 != 3) {
		char text[SMTP_REPLY_LINE_MAX + 8];
		session_relay(s, r);
		reply_text(r, text, sizeof(text));
		tx_end(s, r->code / 100 == 4 ? "tempfail" : "rejected", text);
		session_done(s);
		return;
	}
	if (r->code != 354 || backend_send_message(s, &s->tx, on_data_final) != 0) {
		session_backend_ok(s, BACKEND_LOST, NULL, "");
		return;
	}
}

static void
on_data_final(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	char reply[SMTP_REPLY_LINE_MAX + 8];

	if (!session_backend_ok(s, res, r, "245"))
		return;
	session_relay(s, r);
	reply_text(r, reply, sizeof(reply));
	tx_end(s,
	    r->code / 100 == 2       ? "sent"
	        : r->code / 100 == 4 ? "tempfail"
	                             : "rejected",
	    reply);
	session_done(s);
}

/* ---- STARTTLS (RFC 3207) ---- */

static int
check_starttls(struct session *s)
{
	if (s->cmd.arg_len != 0) {
		session_reply(s, R_NO_ARGS);
		return PC_ERROR;
	}
	if (s->tls_proto != NULL) {
		session_reply(s, R_TLS_ACTIVE);
		return PC_ERROR;
	}
	if (s->srv->tls_server == NULL) {
		session_reply(s, R_NOT_IMPL);
		return PC_ERROR;
	}
	return PC_OK;
}

static void
proceed_starttls(struct session *s)
{
	size_t early = evbuffer_get_length(s->client->in);

	session_reply(s, R_TLS_GO);
	conn_flush(s->client);
	if (evbuffer_get_length(s->client->out) > 0) {
		log_info(s->id, "client=%s does not read its replies; closing", s->peer);
		session_close(s, NULL);
		s->busy = 0;
		return;
	}
	/* RFC 3207 §4.2, CVE-2011-0411: what came with STARTTLS is not
	 * trusted; conn_tls_start drops it. */
	if (early > 0)
		log_warn(s->id,
		    "client=%s sent %zu octets after STARTTLS, before the handshake: discarded",
		    s->peer, early);
	s->state = SESSION_TLS;
	session_arm(s, s->cfg->timeout_ms);
	if (conn_tls_start(s->client, s->srv->tls_server, 1, NULL, 0) != 0) {
		log_err(s->id, "cannot start TLS: %s", s->client->tls_error);
		session_close(s, NULL);
		s->busy = 0;
	}
}

/* ---- AUTH passthrough (RFC 4954) ---- */

static int
check_auth(struct session *s)
{
	const char *refuse = NULL;

	if (s->cmd.arg_len == 0)
		refuse = R_AUTH_SYNTAX;
	else if (s->helo == NULL)
		refuse = R_NEED_HELO;
	else if (s->auth_user != NULL)
		refuse = R_AUTH_TWICE;
	else if (s->tx.active)
		refuse = R_AUTH_IN_TX;
	else if (!s->be.caps.auth || s->blackhole || s->be.conn == NULL)
		refuse = R_AUTH_NOT_ENABLED;
	else if (s->tls_proto == NULL && !s->cfg->auth_plaintext)
		refuse = R_NEED_TLS; /* credentials never travel in the clear */
	else
		refuse = auth_syntax(s->cmd.arg, s->cmd.arg_len);
	if (refuse != NULL) {
		session_reply(s, "%s", refuse);
		return PC_ERROR;
	}
	return PC_OK;
}

/* auth_answer_ok - RFC 4954 §4: an answer to a 334 is base64, or "*" to
 * cancel; an empty line is an empty answer. Nothing else reaches the
 * backend, which trusts us with it (a CR, NUL or command hidden inside). */
static int
auth_answer_ok(const char *line, size_t len)
{
	return len == 0 || (len == 1 && line[0] == '*') || smtp_base64_valid(line, len);
}

/* auth_syntax - "mechanism [initial-response]": NULL when well-formed, else
 * the reply; the initial response is base64 or "=" (empty, RFC 4954 §4) */
static const char *
auth_syntax(const char *arg, size_t len)
{
	const char *sp = memchr(arg, ' ', len);
	size_t mlen = sp ? (size_t)(sp - arg) : len;

	if (!smtp_sasl_mech_valid(arg, mlen))
		return R_AUTH_BAD_MECH;
	if (sp == NULL)
		return NULL;
	sp++;
	len -= mlen + 1;
	if ((len == 1 && sp[0] == '=') || smtp_base64_valid(sp, len))
		return NULL;
	return R_AUTH_BAD_B64;
}

/* auth_name - the user an AUTH answer names (PLAIN's authcid, LOGIN's
 * user), printable only; NULL if it does not decode */
static char *
auth_name(const char *mech, const char *b64, size_t len)
{
	unsigned char out[1024];
	const unsigned char *u;
	char name[256];
	size_t o = 0;
	int n;

	if (len == 0 || len > 1360 || len % 4 != 0)
		return NULL;
	n = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)len);
	if (n < 0)
		return NULL;
	n -= (b64[len - 1] == '=') + (len > 1 && b64[len - 2] == '=');
	u = out;
	if (strcasecmp(mech, "PLAIN") == 0) { /* authzid NUL authcid NUL password */
		const unsigned char *nul = memchr(out, '\0', (size_t)n);
		if (nul == NULL)
			return NULL;
		u = nul + 1;
		n -= (int)(u - out);
		nul = memchr(u, '\0', (size_t)n);
		if (nul == NULL)
			return NULL;
		n = (int)(nul - u);
	} else if (strcasecmp(mech, "LOGIN") != 0) {
		return NULL;
	}
	for (int i = 0; i < n && o + 1 < sizeof(name); i++)
		name[o++] = u[i] > ' ' && u[i] < 0x7f ? (char)u[i] : '?';
	name[o] = '\0';
	return o > 0 ? strdup(name) : NULL;
}

static void
proceed_auth(struct session *s)
{
	const char *arg = s->cmd.arg, *sp = memchr(arg, ' ', s->cmd.arg_len);
	size_t mlen = sp ? (size_t)(sp - arg) : s->cmd.arg_len;

	snprintf(s->auth_mech, sizeof(s->auth_mech), "%.*s", (int)mlen, arg);
	s->auth_step = 0;
	free(s->auth_candidate);
	s->auth_candidate = NULL;
	if (sp != NULL)
		s->auth_candidate = auth_name(s->auth_mech, sp + 1, s->cmd.arg_len - mlen - 1);
	backend_commandf(
	    s, s->cfg->backend_timeout_ms, on_auth, "AUTH %.*s", (int)s->cmd.arg_len, arg);
}

/* session_auth_line - the client's answer to a 334: to the backend, never
 * to the log */
static void
session_auth_line(struct session *s, char *line, size_t len)
{
	free(s->line);
	s->line = line;
	s->busy = 1;
	if (!auth_answer_ok(line, len)) {
		/* The backend still waits for an answer: cancel the exchange
		 * there (RFC 4954 §4), and tell the client why. */
		log_info(s->id, "auth: client=%s mechanism=%s: answer is not base64; cancelled",
		    s->peer, s->auth_mech);
		auth_cancel(s, R_AUTH_BAD_B64);
		return;
	}
	if (s->auth_step++ == 0 && s->auth_candidate == NULL)
		s->auth_candidate = auth_name(s->auth_mech, line, len);
	backend_command(s, line, len, s->cfg->backend_timeout_ms, on_auth);
}

static void
on_auth(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (!session_backend_ok(s, res, r, "2345"))
		return;
	session_relay(s, r);
	if (r->code == 334) {
		s->state = SESSION_AUTH;
		session_done(s);
		return;
	}
	s->state = SESSION_COMMAND;
	log_info(s->id, "auth: client=%s user=%s mechanism=%s result=%d", s->peer,
	    s->auth_candidate ? s->auth_candidate : "unknown", s->auth_mech, r->code);
	if (r->code == 235) {
		s->auth_user = s->auth_candidate ? s->auth_candidate : strdup("unknown");
		s->auth_candidate = NULL;
	}
	free(s->auth_candidate);
	s->auth_candidate = NULL;
	session_done(s);
}

/* auth_cancel - the client's answer cannot go to the backend: "*" goes
 * instead (RFC 4954 §4), and the client gets reply once the backend has
 * dropped the exchange */
static void
auth_cancel(struct session *s, const char *reply)
{
	s->state = SESSION_COMMAND;
	s->auth_refusal = reply;
	backend_command(s, "*", 1, s->cfg->backend_timeout_ms, on_auth_cancelled);
}

/* on_auth_cancelled - the backend's answer to our "*" */
static void
on_auth_cancelled(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (!session_backend_ok(s, res, r, "2345"))
		return;
	free(s->auth_candidate);
	s->auth_candidate = NULL;
	session_reply(s, "%s", s->auth_refusal);
	session_done(s);
}

/* ---- the backend's side of EHLO: STARTTLS, then XCLIENT ---- */

/* An XCLIENT line, without CR LF (Postfix's XCLIENT_README: 512 octets). */
#define XCLIENT_LINE_MAX 510
/* A HELO, NAME or LOGIN value Postfix takes (its VALID_HOSTNAME_LEN). */
#define XCLIENT_VALUE_MAX 255
/* One attribute, xtext-encoded (three octets an octet at worst). */
#define XCLIENT_ATTR_MAX (3 * XCLIENT_VALUE_MAX + 32)

/* xtext - RFC 3461 §4 encoding for XCLIENT values */
static void
xtext(char *out, size_t size, const char *in, size_t len)
{
	size_t o = 0;

	for (const char *end = in + len; in < end && o + 4 < size; in++) {
		unsigned char c = (unsigned char)*in;
		if (c > ' ' && c < 0x7f && c != '+' && c != '=')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, size - o, "+%02X", c);
	}
	out[o] = '\0';
}

/* xclient_has - does the backend take this XCLIENT attribute? */
static int
xclient_has(const struct smtp_caps *caps, const char *attr)
{
	size_t n = strlen(attr);

	for (const char *p = caps->xclient_attrs; (p = strcasestr(p, attr)) != NULL; p += n) {
		if ((p == caps->xclient_attrs || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return 1;
	}
	return 0;
}

/* xclient_attr - "NAME=xtext(value)" (len octets) into out, or
 * NAME=[UNAVAILABLE] when the value is longer than the backend takes
 * (Postfix refuses a HELO or NAME over 255 octets with 501) or would not
 * fit one XCLIENT line. */
static void
xclient_attr(char *out, size_t size, const char *name, const char *value, size_t len)
{
	char v[XCLIENT_ATTR_MAX];

	if (len > XCLIENT_VALUE_MAX) {
		snprintf(out, size, "%s=[UNAVAILABLE]", name);
		return;
	}
	xtext(v, sizeof(v), value, len);
	if (strlen(name) + 1 + strlen(v) > XCLIENT_LINE_MAX - 8 ||
	    snprintf(out, size, "%s=%s", name, v) >= (int)size)
		snprintf(out, size, "%s=[UNAVAILABLE]", name);
}

/* xclient_attrs - "ADDR=..." and friends the backend takes, in attrs[];
 * each one fits an XCLIENT line on its own */
static size_t
xclient_attrs(struct session *s, char attrs[6][XCLIENT_ATTR_MAX])
{
	const struct smtp_caps *caps = &s->be.caps;
	size_t n = 0;

	if (xclient_has(caps, "ADDR"))
		snprintf(attrs[n++], XCLIENT_ATTR_MAX, "ADDR=%s%s",
		    strchr(s->client_ip, ':') ? "IPV6:" : "", s->client_ip);
	if (xclient_has(caps, "PORT"))
		snprintf(attrs[n++], XCLIENT_ATTR_MAX, "PORT=%s", s->client_port);
	if (xclient_has(caps, "NAME")) {
		const char *name = rdns_xclient_name(s);
		xclient_attr(attrs[n++], XCLIENT_ATTR_MAX, "NAME", name, strlen(name));
	}
	/* A HELO name that cannot be sent is unknown, never cut. */
	if (xclient_has(caps, "HELO"))
		xclient_attr(attrs[n++], XCLIENT_ATTR_MAX, "HELO", s->cmd.arg, s->cmd.arg_len);
	if (xclient_has(caps, "PROTO"))
		snprintf(attrs[n++], XCLIENT_ATTR_MAX, "PROTO=%s",
		    s->cmd.verb == SMTP_VERB_EHLO ? "ESMTP" : "SMTP");
	if (xclient_has(caps, "LOGIN") && s->auth_user != NULL)
		xclient_attr(
		    attrs[n++], XCLIENT_ATTR_MAX, "LOGIN", s->auth_user, strlen(s->auth_user));
	return n;
}

/* xclient_send - the next XCLIENT command, within 512 octets (Postfix's
 * XCLIENT_README), never without an attribute; 0 when every attribute went */
static int
xclient_send(struct session *s)
{
	char attrs[6][XCLIENT_ATTR_MAX], line[XCLIENT_LINE_MAX + 8];
	size_t n = xclient_attrs(s, attrs), i = s->xclient_next - 1, o;

	if (i >= n)
		return 0;
	memcpy(line, "XCLIENT", 7);
	o = 7;
	/* xclient_attr keeps each attribute short enough to go alone. */
	for (; i < n && o + 1 + strlen(attrs[i]) <= XCLIENT_LINE_MAX; i++) {
		line[o++] = ' ';
		memcpy(line + o, attrs[i], strlen(attrs[i]));
		o += strlen(attrs[i]);
	}
	s->xclient_next = (unsigned)i + 1;
	backend_command(s, line, o, s->cfg->backend_timeout_ms, on_xclient);
	return 1;
}

/* helo_ehlo_again - EHLO to the backend after STARTTLS or XCLIENT */
static void
helo_ehlo_again(struct session *s)
{
	backend_commandf(
	    s, s->cfg->backend_timeout_ms, on_helo, "EHLO %.*s", (int)s->cmd.arg_len, s->cmd.arg);
}

/* helo_backend_down - backend TLS did not work out: the client is told */
static void
helo_backend_down(struct session *s, const char *why)
{
	log_warn(s->id, "backend TLS: %s", why);
	session_close(s, R_BACKEND_DOWN);
	s->busy = 0;
}

/*
 * helo_backend_plaintext - opportunistic TLS failed half-way: the leg is
 * unusable (a handshake cannot be taken back), so it is closed and a new one
 * opened without TLS, as Postfix's "may" level does. STARTTLS is not tried
 * again in this session (be_tls_started stays set).
 */
static void
helo_backend_plaintext(struct session *s, const char *why)
{
	log_warn(
	    s->id, "backend TLS: %s; reconnecting without TLS (backend_tls = opportunistic)", why);
	backend_renew(s, on_be_plain_banner);
}

/* on_be_plain_banner - the new plaintext leg greeted: EHLO again */
static void
on_be_plain_banner(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (!backend_greeted(s, res, r)) {
		s->busy = 0;
		return;
	}
	helo_ehlo_again(s);
}

/* helo_rdns_done - the client's name is known: on with XCLIENT */
static void
helo_rdns_done(struct session *s)
{
	if (!helo_backend_next(s)) {
		helo_reply(s, &s->be.caps);
		session_done(s);
	}
}

/* helo_backend_next - what the backend needs before we answer EHLO; 1 if
 * something was sent (its callback carries on), 0 to answer now */
static int
helo_backend_next(struct session *s)
{
	const struct config *cfg = s->cfg;
	const struct smtp_caps *caps = &s->be.caps;

	if (cfg->backend_tls != CONFIG_BACKEND_TLS_NO && s->be.conn->ssl == NULL &&
	    !s->be_tls_started) {
		if (caps->starttls) {
			s->be_tls_started = 1;
			backend_command(s, "STARTTLS", 8, cfg->backend_timeout_ms, on_be_starttls);
			return 1;
		}
		if (cfg->backend_tls == CONFIG_BACKEND_TLS_REQUIRED) {
			helo_backend_down(
			    s, "the backend does not offer STARTTLS (backend_tls = required)");
			return 1;
		}
	}
	if (caps->xclient && cfg->backend_xclient && !s->xclient_failed) {
		if (s->xclient_next == 0 && cfg->client_rdns && xclient_has(caps, "NAME")) {
			rdns_start(s); /* if it was not asked at connect */
			if (s->rdns_state == RDNS_PENDING) {
				s->rdns_wait = helo_rdns_done;
				return 1;
			}
		}
		if (s->xclient_next == 0)
			s->xclient_next = 1;
		if (xclient_send(s))
			return 1;
	}
	return 0;
}

static void
on_be_starttls(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (!session_backend_ok(s, res, r, "2345"))
		return;
	if (r->code != 220) {
		if (s->cfg->backend_tls == CONFIG_BACKEND_TLS_REQUIRED) {
			helo_backend_down(s, "the backend refused STARTTLS");
			return;
		}
		log_info(s->id, "backend refused STARTTLS (%d): going on without TLS", r->code);
		if (!helo_backend_next(s)) {
			helo_reply(s, &s->be.caps);
			session_done(s);
		}
		return;
	}
	if (backend_starttls(s, on_be_tls) != 0)
		helo_backend_down(s, s->be.conn->tls_error);
}

static void
on_be_tls(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (res != BACKEND_REPLY) {
		/* The detail is already in the log (backend_event_cb). */
		const char *why =
		    res == BACKEND_TIMEOUT ? "handshake timed out" : "handshake failed";
		if (s->cfg->backend_tls == CONFIG_BACKEND_TLS_OPPORTUNISTIC) {
			helo_backend_plaintext(s, why);
			return;
		}
		helo_backend_down(s, why);
		return;
	}
	log_info(s->id, "TLS %s with the backend", conn_tls_version(s->be.conn));
	helo_ehlo_again(s);
}

static void
on_xclient(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (!session_backend_ok(s, res, r, "2345"))
		return;
	if (r->code / 100 != 2) { /* Postfix says 220; test sinks say 250 */
		/* Going on would fail open: the backend would take every
		 * client for this host (its relay and rate rules with it). */
		size_t len;
		const char *t = smtp_reply_line(r, 0, &len);
		char q[200];
		log_err(s->id,
		    "backend refused XCLIENT: %d %s; closing (is this host in its "
		    "smtpd_authorized_xclient_hosts?)",
		    r->code, log_quote(q, sizeof(q), t, len));
		s->be.dead = 1;
		tx_end(s, "tempfail", "backend refused XCLIENT");
		session_close(s, R_BACKEND_XCLIENT);
		s->busy = 0;
		return;
	}
	if (!xclient_send(s)) {
		s->xclient_failed = 1; /* done for this EHLO: not again */
		helo_ehlo_again(s);
	}
}

/* ---- the rest ---- */

static int
check_noargs(struct session *s)
{
	if (s->cmd.arg_len != 0) {
		session_reply(s, R_NO_ARGS);
		return PC_ERROR;
	}
	return PC_OK;
}

static int
check_any(struct session *s)
{
	return PC_OK;
}

static void
proceed_rset(struct session *s)
{
	tx_end(s, "aborted", "RSET");
	if (s->blackhole) {
		session_reply(s, R_OKAY);
		session_done(s);
		return;
	}
	backend_command(s, "RSET", 4, s->cfg->backend_timeout_ms, on_rset);
}

static void
on_rset(struct session *s, enum backend_result res, const struct smtp_reply *r)
{
	if (!session_backend_ok(s, res, r, "245"))
		return;
	session_relay(s, r);
	session_done(s);
}

static void
proceed_noop(struct session *s)
{
	session_reply(s, R_OKAY);
	session_done(s);
}

static void
proceed_quit(struct session *s)
{
	tx_end(s, "aborted", "QUIT");
	log_info(s->id, "disconnect from client=%s commands=%lu", s->peer, s->ncommands);
	session_reply(s, R_BYE);
	session_close(s, NULL);
	s->busy = 0;
}

static void
proceed_help(struct session *s)
{
	session_reply(s, R_HELP);
	session_done(s);
}

static void
proceed_vrfy(struct session *s)
{
	session_reply(s, s->cmd.arg_len ? R_VRFY : R_VRFY_SYNTAX);
	session_done(s);
}

static void
proceed_not_impl(struct session *s)
{
	session_reply(s, R_NOT_IMPL);
	session_done(s);
}

static void
proceed_refused(struct session *s)
{
	log_warn(s->id, "client=%s sent %s: refused", s->peer, smtp_verb_name(s->cmd.verb));
	session_reply(s, R_REFUSED_CMD);
	session_done(s);
}

static void
proceed_unknown(struct session *s)
{
	char q[64];

	log_info(s->id, "unknown command from client=%s: \"%s\"", s->peer,
	    log_quote(q, sizeof(q), s->cmd.verb_text, s->cmd.verb_len));
	session_reply(s, R_UNKNOWN);
	session_done(s);
}

/* session_destroy - free a session now (at exit) */
void
session_destroy(struct session *s)
{
	s->in_process = 0;
	session_free(s);
}

/* session_drain - SIGTERM: finish the transaction in progress, then 421 */
void
session_drain(struct session *s)
{
	if (s->state == SESSION_CLOSING)
		return;
	s->draining = 1;
	if (!s->busy && !s->tx.active && s->state == SESSION_COMMAND)
		session_close(s, R_SHUTDOWN);
}

void
session_drain_all(struct server *srv)
{
	struct session *s, *next;

	for (s = TAILQ_FIRST(&srv->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		session_drain(s);
	}
}

/* session_shutdown_all - the grace period is over: 421 to everyone left */
void
session_shutdown_all(struct server *srv)
{
	struct session *s, *next;

	for (s = TAILQ_FIRST(&srv->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		if (s->state == SESSION_CLOSING)
			continue;
		log_info(s->id, "shutdown grace period over for client=%s", s->peer);
		tx_end(s, "aborted", "shutdown");
		session_close(s, R_SHUTDOWN);
	}
}
