/*
 * backend.c - the backend leg: portcullis as an SMTP client of the real MTA.
 *
 * Exports backend_connect, backend_command, backend_commandf,
 * backend_send_message, backend_starttls and backend_close. One command is
 * outstanding at a time; its reply (or a timeout, a lost connection, or
 * garbage) is handed to the callback given with the command. Every exchange runs against a deadline, not an idle timer, so a
 * backend that trickles bytes still times out. Replies are parsed, never
 * trusted: a malformed one is BACKEND_GARBLED and the leg is dead.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "log.h"
#include "session.h"

static void backend_read_cb(struct conn *c, void *arg);
static void backend_event_cb(struct conn *c, int what, void *arg);
static void backend_deadline_cb(evutil_socket_t fd, short what, void *arg);
static void backend_finish(struct session *s, enum backend_result res);
static void backend_arm(struct session *s, uint64_t timeout_ms, backend_cb cb);

/* backend_connect - open the backend leg; cb gets the banner */
int
backend_connect(struct session *s, backend_cb cb)
{
	struct backend *b = &s->be;
	struct server *srv = s->srv;
	evutil_socket_t fd;
	int one = 1;

	b->s = s;
	fd = socket(srv->backend_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* Commands and replies are small and latency-bound (DESIGN §2). */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	b->conn = conn_new(srv->base, fd, backend_read_cb, NULL, backend_event_cb, s);
	b->deadline = evtimer_new(srv->base, backend_deadline_cb, s);
	if (b->conn == NULL || b->deadline == NULL)
		return -1;
	smtp_reply_init(&b->reply);
	backend_arm(s, s->cfg->backend_connect_timeout_ms, cb);
	conn_connect(b->conn, (struct sockaddr *)&srv->backend_addr, srv->backend_addrlen);
	conn_read_start(b->conn);
	return 0;
}

/* backend_arm - wait for the next reply, with a deadline */
static void
backend_arm(struct session *s, uint64_t timeout_ms, backend_cb cb)
{
	struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};

	s->be.pending = cb;
	smtp_reply_init(&s->be.reply);
	s->be.reply_done = 0;
	evtimer_add(s->be.deadline, &tv);
}

/* backend_command - send one command line (without CRLF) and wait for its reply */
void
backend_command(struct session *s, const char *line, size_t len, uint64_t timeout_ms, backend_cb cb)
{
	struct backend *b = &s->be;

	if (b->dead || b->conn == NULL) {
		cb(s, BACKEND_LOST, NULL);
		return;
	}
	struct evbuffer *out = b->conn->out;
	evbuffer_add(out, line, len);
	evbuffer_add(out, "\r\n", 2);
	backend_arm(s, timeout_ms, cb);
	conn_flush(b->conn);
}

/* backend_commandf - backend_command with the line formatted straight into
 * the output buffer: no intermediate buffer whose size could cut (or
 * overrun) a command built from client input */
void
backend_commandf(struct session *s, uint64_t timeout_ms, backend_cb cb, const char *fmt, ...)
{
	struct backend *b = &s->be;
	va_list ap;
	int r;

	if (b->dead || b->conn == NULL) {
		cb(s, BACKEND_LOST, NULL);
		return;
	}
	va_start(ap, fmt);
	r = evbuffer_add_vprintf(b->conn->out, fmt, ap);
	va_end(ap);
	if (r < 0 || evbuffer_add(b->conn->out, "\r\n", 2) != 0) {
		/* Out of memory half-way: the line may be partial, so the
		 * leg is no longer usable. */
		b->dead = 1;
		cb(s, BACKEND_LOST, NULL);
		return;
	}
	backend_arm(s, timeout_ms, cb);
	conn_flush(b->conn);
}

/* backend_send_message - after the backend's 354: the headers filters
 * added, the message (less the header fields they removed), ".", and wait */
int
backend_send_message(struct session *s, struct transaction *tx, backend_cb cb)
{
	struct backend *b = &s->be;
	struct spool *sp = &tx->spool;
	struct evbuffer *out;

	if (b->dead || b->conn == NULL)
		return -1;
	out = b->conn->out;
	/* Header lines never start with ".": nothing to stuff. */
	if (s->cs.added != NULL && evbuffer_add_buffer(out, s->cs.added) != 0)
		return -1;
	if (s->cs.edited) {
		const struct message *m = &tx->msg;
		for (size_t i = 0; i < m->nh; i++) {
			if (!m->h[i].removed && spool_copy(sp, m->h[i].off, m->h[i].len, out) != 0)
				return -1;
		}
		/* The rest: the blank line (if any) and the body. */
		size_t rest = m->nh > 0 ? m->h[m->nh - 1].off + m->h[m->nh - 1].len : 0;
		if (spool_copy(sp, rest, sp->size - rest, out) != 0)
			return -1;
	} else if (spool_move(sp, out) != 0) {
		return -1;
	}
	/* The framer ended every line with CR LF, so this is CR LF "." CR LF. */
	evbuffer_add(out, ".\r\n", 3);
	backend_arm(s, s->cfg->backend_data_timeout_ms, cb);
	conn_flush(b->conn);
	return 0;
}

/* backend_starttls - after the backend's 220 to STARTTLS: the handshake;
 * cb gets BACKEND_REPLY with a NULL reply once TLS is up */
int
backend_starttls(struct session *s, backend_cb cb)
{
	const struct config *cfg = s->cfg;
	struct backend *b = &s->be;
	const char *name = cfg->backend_tls_name[0] ? cfg->backend_tls_name : cfg->backend.host;

	if (b->dead || b->conn == NULL || s->srv->tls_client == NULL)
		return -1;
	backend_arm(s, cfg->backend_timeout_ms, cb);
	if (conn_tls_start(b->conn, s->srv->tls_client, 0, name, cfg->backend_tls_verify) != 0) {
		b->pending = NULL;
		evtimer_del(b->deadline);
		return -1;
	}
	return 0;
}

/* backend_finish - an exchange is over: tell whoever waits */
static void
backend_finish(struct session *s, enum backend_result res)
{
	struct backend *b = &s->be;
	backend_cb cb = b->pending;

	evtimer_del(b->deadline);
	b->pending = NULL;
	if (res != BACKEND_REPLY) {
		b->dead = 1;
		if (b->conn != NULL)
			conn_read_stop(b->conn);
	}
	if (cb != NULL) {
		cb(s, res, res == BACKEND_REPLY ? &b->reply : NULL);
		return;
	}
	/* Nobody asked: a backend that talks out of turn (an idle 421, say)
	 * or goes away between commands is no longer in step with us. */
	b->dead = 1;
	if (b->conn != NULL)
		conn_read_stop(b->conn);
	session_backend_gone(s, res);
}

/* backend_read_cb - read reply lines */
static void
backend_read_cb(struct conn *c, void *arg)
{
	struct session *s = arg;
	struct backend *b = &s->be;
	struct evbuffer *in = c->in;

	while (!b->dead) {
		size_t n;
		char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
		int r;

		if (line == NULL) {
			if (evbuffer_get_length(in) > SMTP_REPLY_LINE_MAX + 2) {
				log_warn(s->id, "backend sent a reply line over %d octets",
				    SMTP_REPLY_LINE_MAX);
				backend_finish(s, BACKEND_GARBLED);
			}
			return;
		}
		if (b->reply_done) { /* a reply after the last one: on its own */
			smtp_reply_init(&b->reply);
			b->reply_done = 0;
		}
		r = smtp_reply_feed(&b->reply, line, n);
		if (r == PC_ERROR) {
			char q[200];
			log_warn(s->id, "backend sent garbage: \"%s\"",
			    log_quote(q, sizeof(q), line, n));
			free(line);
			backend_finish(s, BACKEND_GARBLED);
			return;
		}
		free(line);
		if (r == PC_DONE && evbuffer_get_length(in) > 0) {
			/* One command is outstanding at a time, so a complete
			 * reply is all the backend may have sent: anything after
			 * it (a second reply, bytes after a 220 to STARTTLS) would
			 * otherwise answer our next command. Where the segment
			 * boundaries fall must not matter (DESIGN §2). */
			char q[200];
			size_t l = evbuffer_get_length(in);
			const unsigned char *extra = evbuffer_pullup(in, l < 80 ? (ssize_t)l : 80);
			log_warn(s->id,
			    "backend sent %zu octets after its %d reply, before our next "
			    "command: \"%s\"; closing",
			    l, b->reply.code,
			    log_quote(q, sizeof(q), (const char *)extra, l < 80 ? l : 80));
			backend_finish(s, BACKEND_SURPLUS);
			return;
		}
		if (r == PC_DONE) {
			b->reply_done = 1;
			if (b->pending == NULL) {
				size_t l;
				const char *t = smtp_reply_line(&b->reply, 0, &l);
				char q[200];
				log_warn(s->id, "backend spoke out of turn: %d %s", b->reply.code,
				    log_quote(q, sizeof(q), t, l));
			}
			/* The callback may free the session: touch nothing after. */
			backend_finish(s, BACKEND_REPLY);
			return;
		}
	}
}

/* backend_event_cb - connected, closed, or failed */
static void
backend_event_cb(struct conn *c, int what, void *arg)
{
	struct session *s = arg;

	if (what == CONN_CONNECTED)
		return;
	if (what == CONN_TLS) {
		struct backend *b = &s->be;
		backend_cb cb = b->pending;
		b->pending = NULL;
		evtimer_del(b->deadline);
		if (cb != NULL)
			cb(s, BACKEND_REPLY, NULL); /* NULL: TLS is up */
		return;
	}
	if (c->tls_error[0] != '\0')
		log_warn(s->id, "backend %s", c->tls_error);
	else if (what == CONN_ERROR)
		log_warn(s->id, "backend connection error: %s", strerror(c->err));
	else
		log_warn(s->id, "backend closed the connection");
	backend_finish(s, BACKEND_LOST);
}

/* backend_deadline_cb - the backend did not answer in time */
static void
backend_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (what & EV_READ) { /* activated by a failed connect */
		log_warn(s->id, "cannot connect to the backend: %s", strerror(errno));
		backend_finish(s, BACKEND_LOST);
		return;
	}
	log_warn(s->id, "backend timed out");
	backend_finish(s, BACKEND_TIMEOUT);
}

/*
 * backend_close - end the leg. A healthy idle leg says QUIT first; anything
 * else (a message half sent, a dead leg) is cut, so the backend sees a closed
 * connection and never a "." for a message we did not finish.
 */
void
backend_close(struct session *s)
{
	struct backend *b = &s->be;

	if (b->deadline != NULL) {
		event_free(b->deadline);
		b->deadline = NULL;
	}
	if (b->conn == NULL)
		return;
	if (!b->dead && b->pending == NULL) {
		/* QUIT goes straight into the socket buffer, which close(2)
		 * still delivers; nothing waits for the 221. */
		evbuffer_add(b->conn->out, "QUIT\r\n", 6);
		conn_flush(b->conn);
	}
	conn_free(b->conn);
	b->conn = NULL;
}
