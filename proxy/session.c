/*
 * session.c - the client leg: portcullis as the SMTP server the world sees.
 *
 * Exports session_new, session_drain, session_drain_all, session_shutdown_all
 * and session_destroy; to the other session files, the machinery they share
 * (session.h, "between the session's files"). A session is the client's
 * connection, TLS, line framing, dispatch, the stage runner and closing. Every
 * command goes through one table (commands.c): check (state and syntax; our
 * own error replies) -> hooks (the filter chain's stage) -> proceed (usually
 * one backend command, whose reply is relayed). The connection and the end of
 * DATA run through the same three steps (session_run), and every verdict
 * other than continue or accept through session_verdict (DESIGN.md §3).
 * Commands are processed one at a time, so replies stay in order under
 * PIPELINING (RFC 2920 §3.1); input that arrives meanwhile waits in the
 * buffer. A MAIL or RCPT sent to a backend that offers PIPELINING does not
 * wait for its reply: the next MAIL or RCPT the client pipelined is checked,
 * filtered and sent behind it (a flight), and the group goes out in one
 * write; every other command waits until the replies are in. Our own
 * replies to commands behind a flight wait behind it (session_out).
 * Deadlines, not idle timers, bound every wait on the client.
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "log.h"
#include "metrics.h"
#include "replies.h"
#include "session.h"

static void session_start(struct session *s);
static void session_begin(struct session *s);
static void session_tls_done(struct session *s);
static void session_forget(struct session *s);
static void backend_renew(struct session *s, backend_cb cb);
static void on_forget_banner(void *arg, enum backend_result res, const struct smtp_reply *r);
static void session_connect_backend(struct session *s);
static int backend_greeted(struct session *s, enum backend_result res, const struct smtp_reply *r);
static void session_greet(struct session *s);
static void session_hangup(struct session *s, const struct reply *reply, const char *why);
static const char *input_quote(struct session *s, char *buf, size_t size);
static void on_banner(void *arg, enum backend_result res, const struct smtp_reply *r);
static void session_read_cb(struct conn *c, void *arg);
static void session_write_cb(struct conn *c, void *arg);
static void session_event_cb(struct conn *c, int what, void *arg);
static void session_timer_cb(evutil_socket_t fd, short what, void *arg);
static void session_process(struct session *s);
static void session_command(struct session *s, char *line, size_t len);
static int command_forbidden(const char *line, size_t len);
static void session_hooks(
    struct session *s, enum hook_stage stage, void (*proceed)(struct session *));
static void on_hooks_done(void *arg, const struct chain_result *r);
static void session_verdict(struct session *s, enum pc_stage stage, const struct chain_result *r);
static void session_connect_verdict(struct session *s, const struct chain_result *r);
static void session_free(struct session *s);
static void session_backend_gone(void *arg, enum backend_result res);
static void session_named(void *arg);
static struct evbuffer *session_out(struct session *s);
static void fly_clear(struct session *s);
static int session_may_pipeline(struct session *s, struct evbuffer *in);
static void tx_mail_refused(struct session *s);

/* session_new - a client the listener accepted */
void
session_new(struct server *srv, const struct client_info *ci)
{
	struct session *s;
	int one = 1;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		server_ip_release(srv, ci->ip_key);
		log_err(ci->id, "out of memory accepting client=%s:%s", ci->ip, ci->port);
		close(ci->fd);
		return;
	}
	s->srv = srv;
	/* The configuration it starts with is the one it ends with, whatever
	 * a SIGHUP brings meanwhile. */
	s->gen = srv->gen;
	s->gen->refs++;
	s->cfg = s->gen->cfg;
	memcpy(s->id, ci->id, sizeof(s->id));
	snprintf(s->client_ip, sizeof(s->client_ip), "%s", ci->ip);
	snprintf(s->client_port, sizeof(s->client_port), "%s", ci->port);
	snprintf(s->local_ip, sizeof(s->local_ip), "%s", ci->local_ip);
	snprintf(s->local_port, sizeof(s->local_port), "%s", ci->local_port);
	snprintf(s->peer, sizeof(s->peer), "%s:%s", ci->ip, ci->port);
	snprintf(s->ip_key, sizeof(s->ip_key), "%s", ci->ip_key);
	s->trusted = config_trusted(s->cfg, s->client_ip);
	s->chain = s->gen->chain;
	backend_init(&s->be,
	    &(struct backend_conf){.cfg = s->cfg,
	        .base = srv->base,
	        .addr = (const struct sockaddr *)&srv->backend_addr,
	        .addrlen = srv->backend_addrlen,
	        .tls = srv->tls_client},
	    s->id, s, session_backend_gone);
	rdns_init(
	    &s->rdns, srv->base, srv->dns, s->cfg->dns_timeout_ms, s->client_ip, s->id, s->peer);
	s->listener = ci->listener;
	s->tls_implicit = ci->listener->tls;
	s->state = SESSION_CONNECTING;
	s->tx.rcpt_tail = &s->tx.rcpts;
	TAILQ_INSERT_TAIL(&srv->sessions, s, entry);
	srv->nsessions++;
	s->started = metrics_now();
	metrics_inc(M_CONN_ACCEPTED);
	metrics_gauge_add(G_SESSIONS, 1);

	setsockopt(ci->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->client =
	    conn_new(srv->base, ci->fd, session_read_cb, session_write_cb, session_event_cb, s);
	if (s->client != NULL) {
		s->client->m_in = M_OCTETS_CLIENT_IN;
		s->client->m_out = M_OCTETS_CLIENT_OUT;
		s->client->log_first = 1;
	}
	s->timer = evtimer_new(srv->base, session_timer_cb, s);
	if (s->client == NULL || s->timer == NULL ||
	    chain_session_init(s->chain, &s->cs, &s->view) != 0) {
		log_err(s->id, "out of memory for client=%s", s->peer);
		if (s->client == NULL)
			close(ci->fd);
		session_free(s);
		return;
	}
	/* Input held while one command is processed before we stop reading:
	 * a pipelining client cannot make us buffer without bound. */
	s->client->in_max = (size_t)s->cfg->max_client_buffer;
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
		rdns_start(&s->rdns);
	conn_read_start(s->client);
	if (s->tls_implicit) {
		s->state = SESSION_TLS;
		session_arm(s, s->cfg->timeout_ms);
		if (conn_tls_start(s->client, s->srv->tls_server, 1, NULL, 0) != 0) {
			log_err(s->id, "cannot start TLS for client=%s: %s", s->peer,
			    s->client->tls_error);
			metrics_inc(M_TLS_CLIENT_FAILED);
			metrics_inc(M_CONN_REFUSED_TLS);
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
	log_info(s->id, "connect from client=%s%s%s%s", s->peer, s->tls_proto ? " tls=" : "",
	    s->tls_proto ? s->tls_proto : "", s->trusted ? " trusted" : "");
	s->state = SESSION_CONNECTING;
	s->busy = 1;
	/* Filters may read the client's name (PC_CLIENT_NAME, conn.rdns) from
	 * the connect stage on: with client_rdns, it is known (or known not to
	 * be) before they run, within dns_timeout, as Postfix's smtpd looks its
	 * client up before any restriction. */
	if (s->cfg->client_rdns && s->chain != NULL && s->chain->n > 0) {
		rdns_start(&s->rdns);
		if (rdns_wait(&s->rdns, session_named, s))
			return;
	}
	session_run(s, command_event(HOOK_CONNECT));
}

/* session_named - the client's name is in: the connect stage */
static void
session_named(void *arg)
{
	struct session *s = arg;

	session_run(s, command_event(HOOK_CONNECT));
}

/* proceed_connect - the connect hooks let the client in: the backend */
void
proceed_connect(struct session *s)
{
	s->busy = 0;
	session_connect_backend(s);
}

/* session_tls_done - a handshake finished */
static void
session_tls_done(struct session *s)
{
	s->tls_proto = conn_tls_version(s->client);
	evtimer_del(s->timer);
	metrics_inc(M_TLS_CLIENT_OK);
	if (conn_tls_resumed(s->client))
		metrics_inc(M_TLS_CLIENT_RESUMED);
	log_info(s->id, "TLS %s with client=%s cipher=%s%s", s->tls_proto, s->peer,
	    SSL_get_cipher_name(s->client->ssl), conn_tls_resumed(s->client) ? " resumed" : "");
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
	if (had_auth && !s->blackhole) {
		/* The backend leg is still logged in, and an MTA forgets AUTH
		 * only with the connection: a new leg, so nothing relays on
		 * credentials this client no longer holds. */
		log_info(s->id, "client=%s: STARTTLS after AUTH: new backend connection", s->peer);
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
	if (backend_reconnect(&s->be, cb) != 0) {
		log_err(s->id, "cannot create the backend connection: %s", strerror(errno));
		session_close(s, R_BACKEND_DOWN);
		s->busy = 0;
	}
}

/* on_forget_banner - the new backend leg after STARTTLS greeted */
static void
on_forget_banner(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
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
	if (backend_connect(&s->be, on_banner) != 0) {
		log_err(s->id, "cannot create the backend connection: %s", strerror(errno));
		metrics_inc(M_CONN_REFUSED_BACKEND);
		session_close(s, R_BACKEND_DOWN);
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
	session_say(s, R_BANNER);
	session_process(s);
}

/* session_hangup - a last reply of ours, then close: what the client sent
 * can no longer be read as commands */
static void
session_hangup(struct session *s, const struct reply *reply, const char *why)
{
	tx_end(s, "aborted", why);
	session_close(s, reply);
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
on_banner(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
	if (!backend_greeted(s, res, r)) {
		metrics_inc(M_CONN_REFUSED_BACKEND);
		return;
	}
	session_greet(s);
}

/* session_reply - send one reply line we wrote ourselves; 4xx/5xx count as errors */
void
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
	evbuffer_add(session_out(s), line, (size_t)n + 2);
	if ((line[0] == '4' || line[0] == '5') && strncmp(line, "421", 3) != 0)
		s->errors++;
}

/* session_say - one of our own replies (replies.h); one that closes the
 * connection (RFC 5321 §3.8: 421, and our 221) closes it */
void
session_say(struct session *s, const struct reply *r)
{
	char line[600];

	session_reply(s, "%s", reply_line(r, s->cfg->hostname, line, sizeof(line)));
	if (r->closes)
		session_close(s, NULL);
}

/* session_relay - send the backend's reply to the client, line by line */
void
session_relay(struct session *s, const struct smtp_reply *r)
{
	struct evbuffer *out = session_out(s);
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
void
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
		metrics_inc(M_TLS_CLIENT_FAILED);
		if (s->tls_implicit) /* smtps: the client never got in */
			metrics_inc(M_CONN_REFUSED_TLS);
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
	if (s->state == SESSION_TLS) {
		log_info(s->id, "timeout waiting for the TLS handshake from %s", s->peer);
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

	int hold = s->hold_flush;

	s->hold_flush = 0; /* an outer call flushes at its end */
	if (s->in_process)
		return;
	s->in_process = 1;
	s->be.cork = 1; /* what the commands send goes out in one write */
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
			if (s->nfly > 0)
				break; /* the replies first; then the client's deadline */
			if (s->eof) {
				log_info(s->id, "disconnect from client=%s commands=%lu", s->peer,
				    s->ncommands);
				tx_end(s, "aborted", "client disconnected");
				session_close(s, NULL);
				break;
			}
			if (!s->tx.active && !s->tx.mail_pending)
				backend_idle(&s->be);
			if (!evtimer_pending(s->timer, NULL))
				session_arm(s, cfg->timeout_ms);
			break;
		}
		evtimer_del(s->timer);
		if (s->nfly > 0 && !session_may_pipeline(s, in))
			break; /* resumed when the replies are in (fly_land) */
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
			session_say(s, R_LINE_TOO_LONG);
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
	s->be.cork = 0;
	if (s->state == SESSION_CLOSING && s->free_pending) {
		session_free(s);
		return;
	}
	backend_flush(&s->be);
	conn_consumed(s->client);
	if (!hold)
		conn_flush(s->client);
}

/*
 * session_may_pipeline - with commands in flight, may the next line go now?
 * A MAIL or RCPT may (RFC 2920 §3.1: they may appear anywhere in a group),
 * to a backend that offers PIPELINING, while the group has room and our
 * held replies stay bounded; anything else waits for the replies.
 */
static int
session_may_pipeline(struct session *s, struct evbuffer *in)
{
	const struct flight *tail = &s->fly[(s->fly_head + s->nfly - 1) % SESSION_FLIGHT_MAX];
	char verb[5];

	if (s->state != SESSION_COMMAND || !s->be.caps.pipelining ||
	    s->nfly >= SESSION_FLIGHT_MAX || !backend_room(&s->be) ||
	    (tail->after != NULL && evbuffer_get_length(tail->after) > SESSION_OUTPUT_MAX))
		return 0;
	if (evbuffer_copyout(in, verb, sizeof(verb)) != (ev_ssize_t)sizeof(verb) || verb[4] != ' ')
		return 0;
	return strncasecmp(verb, "MAIL", 4) == 0 || strncasecmp(verb, "RCPT", 4) == 0;
}

/* session_out - where our next reply goes: after the replies of the
 * commands in flight, or straight to the client */
static struct evbuffer *
session_out(struct session *s)
{
	struct flight *tail;

	if (s->nfly == 0 || s->landing != NULL)
		return s->client->out;
	tail = &s->fly[(s->fly_head + s->nfly - 1) % SESSION_FLIGHT_MAX];
	if (tail->after == NULL && (tail->after = evbuffer_new()) == NULL)
		return s->client->out; /* out of memory: out of order beats lost */
	return tail->after;
}

/* fly_push - a command went to the backend; its reply relays later.
 * PC_ERROR: out of memory. */
int
fly_push(struct session *s, enum smtp_verb verb, const char *addr)
{
	struct flight *f = &s->fly[(s->fly_head + s->nfly) % SESSION_FLIGHT_MAX];

	*f = (struct flight){.verb = verb};
	if (addr != NULL && (f->addr = strdup(addr)) == NULL)
		return PC_ERROR;
	s->nfly++;
	return PC_OK;
}

/* fly_pop - the oldest flight's reply is in: it is relayed now, straight
 * to the client (until fly_land) */
void
fly_pop(struct session *s, struct flight *f)
{
	*f = s->fly[s->fly_head];
	s->fly_head = (s->fly_head + 1) % SESSION_FLIGHT_MAX;
	s->nfly--;
	s->landing = f;
}

/*
 * fly_land - its reply was relayed: then our replies held behind it, and
 * the session goes on (the next command may have waited for this). When
 * the backend's next reply is already read whole, the client's write waits
 * for it (it is handed over in this same pass): the replies of one group
 * reach the client in one write. Half a reply holds nothing back.
 */
void
fly_land(struct session *s, struct flight *f)
{
	s->landing = NULL;
	if (f->after != NULL) {
		if (s->state != SESSION_CLOSING)
			evbuffer_add_buffer(s->client->out, f->after);
		evbuffer_free(f->after);
	}
	free(f->addr);
	if (s->state == SESSION_CLOSING)
		return;
	s->hold_flush = backend_reply_ready(&s->be);
	if (!s->busy) {
		session_done(s); /* s may be gone after this */
		return;
	}
	if (!s->hold_flush)
		conn_flush(s->client);
	s->hold_flush = 0;
}

/* fly_clear - the session ends: replies still in flight will not come */
static void
fly_clear(struct session *s)
{
	for (; s->nfly > 0; s->nfly--) {
		struct flight *f = &s->fly[s->fly_head];
		free(f->addr);
		if (f->after != NULL)
			evbuffer_free(f->after);
		s->fly_head = (s->fly_head + 1) % SESSION_FLIGHT_MAX;
	}
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
		session_say(s, R_BAD_UTF8);
		session_done(s);
		return;
	}
	if (smtp_parse_command(line, len, &s->cmd) != PC_OK) {
		char q[120];
		log_info(s->id, "bad command line from client=%s: \"%s\"", s->peer,
		    log_quote(q, sizeof(q), line, len));
		session_say(s, R_BAD_SYNTAX);
		session_done(s);
		return;
	}
	c = command_find(s->cmd.verb);
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
	if (s->draining && !s->tx.active && !s->tx.mail_pending && c->verb != SMTP_VERB_QUIT) {
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
	session_run(s, c);
}

/*
 * session_run - one command (or event) through the table's three steps:
 * check (PC_OK: go on; PC_ERROR: it replied, the command is done;
 * PC_AGAIN: it answers later itself), the stage's hooks, proceed.
 */
void
session_run(struct session *s, const struct command *c)
{
	switch (c->check(s)) {
	case PC_OK:
		session_hooks(s, c->stage, c->proceed);
		return;
	case PC_AGAIN:
		return;
	default:
		session_done(s);
		return;
	}
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
	    [HOOK_CONNECT] = PC_STAGE_CONNECT,
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
	free(s->stage_params);
	s->stage_params = NULL;
	if (stage == HOOK_HELO) {
		/* The name ends the command line, which is ours until the next
		 * command (check_helo refused an empty one): end the string
		 * there instead of copying it. */
		s->line[(size_t)(s->cmd.arg - s->line) + s->cmd.arg_len] = '\0';
		session_view(s, s->cmd.arg, NULL);
	} else if (stage == HOOK_RCPT) {
		/* check_rcpt takes no parameters today: "" without an allocation. */
		if (s->path.nparams > 0 && (s->stage_params = path_params(&s->path)) == NULL) {
			session_say(s, R_LOCAL_ERROR);
			session_done(s);
			return;
		}
		session_view(s, s->path.addr, s->stage_params != NULL ? s->stage_params : "");
	} else {
		session_view(s, NULL, NULL);
	}
	chain_run(&s->cs, stages[stage], on_hooks_done, s);
}

/*
 * session_view - refresh what the chain may read, before it runs. arg and
 * params are the stage's own strings (HELO's name, RCPT's address and
 * parameters); they live in the command line, s->path and s->stage_params
 * until the next command, longer than any hook of this stage.
 */
void
session_view(struct session *s, const char *arg, const char *params)
{
	struct chain_view *v = &s->view;
	struct transaction *tx = &s->tx;
	int in_tx = tx->id[0] != '\0';

	if (s->local_ip[0] == '\0') {
		/* Asked for once, and only when a filter may read it. */
		struct sockaddr_storage local;
		socklen_t len = sizeof(local);
		if (getsockname(s->client->fd, (struct sockaddr *)&local, &len) != 0 ||
		    getnameinfo((struct sockaddr *)&local, len, s->local_ip, sizeof(s->local_ip),
		        s->local_port, sizeof(s->local_port),
		        NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
			snprintf(s->local_ip, sizeof(s->local_ip), "?");
			snprintf(s->local_port, sizeof(s->local_port), "0");
		}
	}
	v->id = s->id;
	v->tx_id = in_tx ? tx->id : NULL;
	v->client_ip = s->client_ip;
	v->client_port = s->client_port;
	v->local_ip = s->local_ip;
	v->local_port = s->local_port;
	v->client_name = rdns_name(&s->rdns);
	v->trusted = s->trusted;
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
	v->max_size = (size_t)s->cfg->max_message_size;
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
	char q[LOG_ADDR_MAX > 600 ? LOG_ADDR_MAX : 600], drop[64];
	const char *said;

	/* The summary line names who decided the transaction; a refused
	 * recipient does not decide it (its own line says who refused it). */
	if (tx->id[0] != '\0' && tx->by == NULL && stage != PC_STAGE_RCPT) {
		tx->by = r->by;
		tx->stage = verdict_stage_name(stage);
	}
	if (r->action == PC_DISCONNECT) {
		log_info(s->id, "client=%s disconnected at %s by=%s", s->peer,
		    verdict_stage_name(stage), r->by);
		if (stage == PC_STAGE_CONNECT)
			metrics_inc(M_CONN_REFUSED_FILTER);
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
			backend_close(&s->be);
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
			session_say(s, R_DROP_MAIL);
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
		said = r->action == PC_DROP
		    ? reply_line(R_DROP_RCPT, s->cfg->hostname, drop, sizeof(drop))
		    : r->reply;
		if (r->action != PC_DROP)
			metrics_inc(M_RCPT_REFUSED_PROXY);
		log_info(tx->id, "to=<%s> %s at rcpt by=%s reply=\"%s\"",
		    log_quote(q, sizeof(q), s->path.addr, strlen(s->path.addr)), status, r->by,
		    said);
		session_reply(s, "%s", said);
		break;
	case PC_STAGE_DATA:
		if (r->action == PC_DROP)
			data_refuse_r(s, R_DROP_DATA, "dropped");
		else
			data_refuse(s, r->reply, status);
		return;
	case PC_STAGE_CONNECT:
		session_connect_verdict(s, r);
		return;
	}
	session_done(s);
}

/* session_connect_verdict - the connect hooks refused, dropped or
 * disconnected (a disconnect was handled above) */
static void
session_connect_verdict(struct session *s, const struct chain_result *r)
{
	char q[600];

	s->busy = 0;
	switch (r->action) {
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
		metrics_inc(M_CONN_REFUSED_FILTER);
		snprintf(s->refused, sizeof(s->refused), "%s", r->reply);
		s->state = SESSION_COMMAND;
		session_reply(s, "%s", r->reply);
		session_process(s);
		return;
	default:
		log_info(s->id, "client=%s %s at connect by=%s reply=\"%s\"", s->peer,
		    verdict_action_name(r->action), r->by,
		    log_quote(q, sizeof(q), r->reply, strlen(r->reply)));
		metrics_inc(M_CONN_REFUSED_FILTER);
		session_reply(s, "%s", r->reply);
		session_close(s, NULL);
		return;
	}
}

/* session_done - the current command has its reply */
void
session_done(struct session *s)
{
	s->busy = 0;
	if (s->state == SESSION_CLOSING)
		return;
	if (s->tx.mail_refused != NULL)
		tx_mail_refused(s);
	if (s->errors >= s->cfg->max_errors) {
		log_info(s->id, "too many errors (%u) from client=%s", s->errors, s->peer);
		tx_end(s, "aborted", "too many errors");
		session_close(s, R_TOO_MANY_ERRORS);
		return;
	}
	session_process(s);
}

/* tx_mail_refused - the backend refused a pipelined MAIL while a later
 * command was busy in its hooks: the transaction ends now they are done */
static void
tx_mail_refused(struct session *s)
{
	char *text = s->tx.mail_refused;
	const char *status = text[0] == '4' ? "tempfail" : "rejected";

	s->tx.mail_refused = NULL;
	tx_log(s, status, text); /* never active: tx_end would not log it */
	tx_end(s, status, text);
	free(text);
}

/*
 * session_close - send a last reply (NULL: none), then free the session
 * once the client has it, or after a linger. Replies still in flight never
 * come (the backend leg is cut), so the last reply answers the first
 * command without one (RFC 5321 §3.8), and our replies held behind the
 * flights go unsent.
 */
void
session_close(struct session *s, const struct reply *reply)
{
	if (s->state == SESSION_CLOSING)
		return;
	fly_clear(s);
	chain_cancel(&s->cs);
	if (reply != NULL) {
		char line[600];
		session_reply(s, "%s", reply_line(reply, s->cfg->hostname, line, sizeof(line)));
	}
	s->state = SESSION_CLOSING;
	conn_read_stop(s->client);
	backend_close(&s->be);
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
	if (s->chain != NULL && s->chain->n > 0 && s->client != NULL)
		session_view(s, NULL, NULL); /* for the close hooks */
	chain_session_end(&s->cs);
	fly_clear(s);
	free(s->stage_params);
	rdns_free(&s->rdns);
	backend_close(&s->be);
	if (s->timer != NULL)
		event_free(s->timer);
	conn_free(s->client);
	TAILQ_REMOVE(&srv->sessions, s, entry);
	srv->nsessions--;
	metrics_gauge_add(G_SESSIONS, -1);
	server_ip_release(srv, s->ip_key);
	free(s->auth_user);
	free(s->auth_candidate);
	free(s->line);
	free(s->helo);
	generation_release(s->gen);
	free(s);
	server_session_gone(srv);
}

/*
 * session_backend_ok - is this a reply of one of the expected classes
 * ("245": 2xx, 4xx or 5xx)? If not, the client gets a 451, then a 421, and
 * the session ends: a backend out of step cannot be trusted with more.
 */
int
session_backend_ok(
    struct session *s, enum backend_result res, const struct smtp_reply *r, const char *classes)
{
	const struct reply *reply;
	char line[600];

	switch (res) {
	case BACKEND_REPLY:
		if (strchr(classes, '0' + r->code / 100) != NULL)
			return 1;
		log_warn(s->id, "backend answered %s with unexpected %d",
		    smtp_verb_name(s->landing != NULL ? s->landing->verb : s->cmd.verb), r->code);
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
	session_say(s, reply);
	tx_end(s, "tempfail", reply_line(reply, s->cfg->hostname, line, sizeof(line)));
	session_close(s, R_BACKEND_LOST_CLOSE);
	s->busy = 0;
	return 0;
}

/* session_backend_gone - the backend left, or spoke, between commands */
static void
session_backend_gone(void *arg, enum backend_result res)
{
	struct session *s = arg;

	if (s->state == SESSION_COMMAND && !s->busy) {
		/* A reply nobody asked for is a protocol error (DESIGN §2). */
		tx_end(s, "aborted",
		    res == BACKEND_REPLY ? "backend protocol error" : "backend connection lost");
		session_close(s, res == BACKEND_REPLY ? R_BACKEND_PROTOCOL : R_BACKEND_LOST_CLOSE);
	}
	/* Otherwise the next backend command finds the leg dead. */
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
	if (!s->busy && !s->tx.active && !s->tx.mail_pending && s->nfly == 0 &&
	    s->state == SESSION_COMMAND)
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
