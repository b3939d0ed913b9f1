/*
 * backend.c - the backend leg: portcullis as an SMTP client of the real MTA.
 *
 * Exports backend_init, backend_connect, backend_reconnect, backend_greet,
 * backend_command, backend_commandf, backend_output, backend_data_end,
 * backend_bdat, backend_data_sent, backend_idle, backend_flush, backend_waiting, backend_room,
 * backend_usable, backend_close and xclient_has. Commands wait for their
 * replies in a queue: one at a time, or a pipelined group (RFC 2920) sent in
 * one write whose replies come back in order, each (or a timeout, a lost
 * connection, or garbage) handed to the callback given with its command.
 * Every exchange runs against a deadline, not an idle timer, so a backend
 * that trickles bytes still times out. Replies are parsed, never trusted: a
 * malformed one is BACKEND_GARBLED and the leg is dead; a reply nobody waits
 * for is a backend out of step.
 *
 * The leg also owns its greeting (backend_greet): EHLO, STARTTLS, XCLIENT
 * and EHLO again, so the session asks for "a greeted backend" and gets the
 * capabilities, whatever it took.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "backend.h"
#include "log.h"
#include "metrics.h"

/* An XCLIENT line, without CR LF (Postfix's XCLIENT_README: 512 octets). */
#define XCLIENT_LINE_MAX 510
/* A HELO, NAME or LOGIN value Postfix takes (its VALID_HOSTNAME_LEN). */
#define XCLIENT_VALUE_MAX 255
/* One attribute, xtext-encoded (three octets an octet at worst). */
#define XCLIENT_ATTR_MAX (3 * XCLIENT_VALUE_MAX + 32)
/* ADDR PORT NAME HELO PROTO LOGIN */
#define XCLIENT_ATTRS 6

static void backend_read_cb(struct conn *c, void *arg);
static void backend_event_cb(struct conn *c, int what, void *arg);
static void backend_deadline_cb(evutil_socket_t fd, short what, void *arg);
static void backend_finish(struct backend *b, enum backend_result res);
static struct backend_wait *backend_arm(
    struct backend *b, uint64_t timeout_ms, backend_cb cb, void *arg);
static struct backend_wait backend_pop(struct backend *b);
static void backend_deadline(struct backend *b, uint64_t timeout_ms);
static void backend_push(struct backend *b);
static void backend_replies(struct backend *b, struct conn *c, const int *alive);
static int backend_open(struct backend *b, backend_cb cb, void *arg);
static void backend_send(struct backend *b, uint64_t timeout_ms, backend_cb cb, void *arg,
    const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
static void greet_command(struct backend *b, backend_cb cb, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void greet_ehlo(struct backend *b);
static void greet_next(struct backend *b, const struct smtp_reply *r);
static void greet_end(struct backend *b, enum backend_result res, const struct smtp_reply *r);
static void on_greet_ehlo(void *arg, enum backend_result res, const struct smtp_reply *r);
static void on_greet_starttls(void *arg, enum backend_result res, const struct smtp_reply *r);
static void on_greet_tls(void *arg, enum backend_result res, const struct smtp_reply *r);
static void on_greet_plain_banner(void *arg, enum backend_result res, const struct smtp_reply *r);
static void on_greet_xclient(void *arg, enum backend_result res, const struct smtp_reply *r);

/* backend_init - a leg, not yet connected */
void
backend_init(struct backend *b, const struct backend_conf *conf, const char *id, void *arg,
    void (*gone)(void *arg, enum backend_result res))
{
	memset(b, 0, sizeof(*b));
	b->conf = *conf;
	b->id = id;
	b->arg = arg;
	b->gone = gone;
}

/* backend_connect - open the backend leg; cb gets the banner */
int
backend_connect(struct backend *b, backend_cb cb)
{
	return backend_open(b, cb, b->arg);
}

/* backend_open - connect; cb(arg) gets the banner */
static int
backend_open(struct backend *b, backend_cb cb, void *arg)
{
	const struct backend_conf *bc = &b->conf;
	evutil_socket_t fd;
	int one = 1;

	b->dead = 0;
	fd = socket(bc->addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		metrics_inc(M_BACKEND_CONNECT_FAILED);
		return PC_ERROR;
	}
	/* Commands and replies are small and latency-bound (DESIGN §2). */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	b->conn = conn_new(bc->base, fd, backend_read_cb, NULL, backend_event_cb, b);
	if (b->conn == NULL) {
		close(fd);
		metrics_inc(M_BACKEND_CONNECT_FAILED);
		return PC_ERROR;
	}
	b->conn->m_in = M_OCTETS_BACKEND_IN;
	b->conn->m_out = M_OCTETS_BACKEND_OUT;
	if (b->deadline == NULL &&
	    (b->deadline = evtimer_new(bc->base, backend_deadline_cb, b)) == NULL)
		return PC_ERROR;
	b->nwait = 0;
	backend_arm(b, bc->cfg->backend_connect_timeout_ms, cb, arg)->sent_at =
	    0; /* a banner is not a reply to a command */
	b->connecting = 1;
	conn_connect(b->conn, bc->addr, bc->addrlen);
	conn_read_start(b->conn);
	return PC_OK;
}

/* backend_reconnect - a fresh leg in place of this one */
int
backend_reconnect(struct backend *b, backend_cb cb)
{
	backend_close(b);
	b->tls_started = 0;
	memset(&b->caps, 0, sizeof(b->caps));
	return backend_connect(b, cb);
}

/* backend_deadline - the head of the queue has this long for its reply */
static void
backend_deadline(struct backend *b, uint64_t timeout_ms)
{
	struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};

	evtimer_add(b->deadline, &tv);
}

/* backend_arm - one more command waits for its reply (the caller made sure
 * there is room: backend_room); the first one starts the deadline and a
 * fresh reply */
static struct backend_wait *
backend_arm(struct backend *b, uint64_t timeout_ms, backend_cb cb, void *arg)
{
	struct backend_wait *w = &b->wait[(b->whead + b->nwait) % BACKEND_PIPELINE_MAX];

	*w = (struct backend_wait){cb, arg, timeout_ms, metrics_now()};
	if (b->nwait++ == 0) {
		if (b->reply != NULL)
			smtp_reply_init(b->reply);
		b->reply_done = 0;
		backend_deadline(b, timeout_ms);
	}
	return w;
}

/* backend_pop - the oldest waiting command leaves the queue */
static struct backend_wait
backend_pop(struct backend *b)
{
	struct backend_wait w = {0};

	if (b->nwait > 0) {
		w = b->wait[b->whead];
		b->whead = (b->whead + 1) % BACKEND_PIPELINE_MAX;
		b->nwait--;
	}
	return w;
}

/* backend_push - a command went into the output: write it now, unless
 * the leg is corked (a pipelined group is being built) */
static void
backend_push(struct backend *b)
{
	if (!b->cork)
		conn_flush(b->conn);
}

void
backend_flush(struct backend *b)
{
	if (backend_usable(b))
		conn_flush(b->conn);
}

unsigned
backend_waiting(const struct backend *b)
{
	return b->nwait;
}

int
backend_reply_ready(const struct backend *b)
{
	struct evbuffer *in;
	struct evbuffer_ptr p;
	size_t eol_len;

	if (b->nwait == 0 || b->conn == NULL || b->dead)
		return 0;
	in = b->conn->in;
	evbuffer_ptr_set(in, &p, 0, EVBUFFER_PTR_SET);
	/* A reply's last line is "ddd" or "ddd text"; "ddd-" goes on. A
	 * multi-line reply is at most SMTP_REPLY_LINES_MAX lines. */
	for (int n = 0; n <= SMTP_REPLY_LINES_MAX; n++) {
		struct evbuffer_ptr eol = evbuffer_search_eol(in, &p, &eol_len, EVBUFFER_EOL_CRLF);
		char head[4];

		if (eol.pos < 0)
			return 0;
		if (eol.pos - p.pos < 4 ||
		    (evbuffer_copyout_from(in, &p, head, 4) == 4 && head[3] != '-'))
			return 1;
		if (evbuffer_ptr_set(in, &eol, eol_len, EVBUFFER_PTR_ADD) != 0)
			return 0;
		p = eol;
	}
	return 0;
}

int
backend_room(const struct backend *b)
{
	return b->nwait < BACKEND_PIPELINE_MAX;
}

int
backend_usable(const struct backend *b)
{
	return !b->dead && b->conn != NULL;
}

/* backend_command - send one command line (without CRLF) and wait for its reply */
void
backend_command(struct backend *b, const char *line, size_t len, uint64_t timeout_ms, backend_cb cb)
{
	if (!backend_usable(b)) {
		cb(b->arg, BACKEND_LOST, NULL);
		return;
	}
	evbuffer_add(b->conn->out, line, len);
	evbuffer_add(b->conn->out, "\r\n", 2);
	backend_arm(b, timeout_ms, cb, b->arg);
	backend_push(b);
}

/* backend_commandf - backend_command with the line formatted straight into
 * the output buffer: no intermediate buffer whose size could cut (or
 * overrun) a command built from client input */
void
backend_commandf(struct backend *b, uint64_t timeout_ms, backend_cb cb, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	backend_send(b, timeout_ms, cb, b->arg, fmt, ap);
	va_end(ap);
}

/* backend_send - a formatted command line; cb(arg) gets the reply */
static void
backend_send(
    struct backend *b, uint64_t timeout_ms, backend_cb cb, void *arg, const char *fmt, va_list ap)
{
	if (!backend_usable(b)) {
		cb(arg, BACKEND_LOST, NULL);
		return;
	}
	if (evbuffer_add_vprintf(b->conn->out, fmt, ap) < 0 ||
	    evbuffer_add(b->conn->out, "\r\n", 2) != 0) {
		/* Out of memory half-way: the line may be partial, so the
		 * leg is no longer usable. */
		b->dead = 1;
		cb(arg, BACKEND_LOST, NULL);
		return;
	}
	backend_arm(b, timeout_ms, cb, arg);
	backend_push(b);
}

/* greet_command - a command of the greeting: its callback gets the leg */
static void
greet_command(struct backend *b, backend_cb cb, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	backend_send(b, b->conf.cfg->backend_timeout_ms, cb, b, fmt, ap);
	va_end(ap);
}

/* backend_output - after the backend's 354: the message goes here */
struct evbuffer *
backend_output(struct backend *b)
{
	return backend_usable(b) ? b->conn->out : NULL;
}

/* backend_data_end - the message is in the output: "." and wait */
void
backend_data_end(struct backend *b, backend_cb cb)
{
	if (!backend_usable(b)) {
		cb(b->arg, BACKEND_LOST, NULL);
		return;
	}
	/* Every message ends its last line with CR LF, so this is CR LF "." CR LF. */
	evbuffer_add(b->conn->out, ".\r\n", 3);
	backend_data_sent(b, cb);
}

/* backend_bdat - see backend.h */
struct evbuffer *
backend_bdat(struct backend *b, size_t n)
{
	if (!backend_usable(b))
		return NULL;
	if (evbuffer_add_printf(b->conn->out, "BDAT %zu LAST\r\n", n) < 0) {
		b->dead = 1;
		return NULL;
	}
	return b->conn->out;
}

/* backend_data_sent - see backend.h */
void
backend_data_sent(struct backend *b, backend_cb cb)
{
	if (!backend_usable(b)) {
		cb(b->arg, BACKEND_LOST, NULL);
		return;
	}
	backend_arm(b, b->conf.cfg->backend_data_timeout_ms, cb, b->arg);
	backend_push(b);
}

/* backend_starttls - after the backend's 220 to STARTTLS: the handshake;
 * cb gets BACKEND_REPLY with a NULL reply once TLS is up */
static int
backend_starttls(struct backend *b, backend_cb cb)
{
	const struct config *cfg = b->conf.cfg;
	const char *name = cfg->backend_tls_name[0] ? cfg->backend_tls_name : cfg->backend.host;

	if (!backend_usable(b) || b->conf.tls == NULL)
		return PC_ERROR;
	backend_arm(b, cfg->backend_timeout_ms, cb, b);
	if (conn_tls_start(b->conn, b->conf.tls, 0, name, cfg->backend_tls_verify) != 0) {
		backend_pop(b);
		evtimer_del(b->deadline);
		return PC_ERROR;
	}
	return PC_OK;
}

/* backend_finish - an exchange is over: tell whoever waits. On a failure
 * only the oldest is told; the rest of a pipelined group is forgotten (its
 * owner closes the session). */
static void
backend_finish(struct backend *b, enum backend_result res)
{
	struct backend_wait w = backend_pop(b);

	evtimer_del(b->deadline);
	if (b->connecting) {
		/* The banner, or why there is none: a 220 is a connection made. */
		b->connecting = 0;
		if (res != BACKEND_REPLY || b->reply->code != 220)
			metrics_inc(M_BACKEND_CONNECT_FAILED);
	} else if (res == BACKEND_REPLY && w.cb != NULL && w.sent_at > 0) {
		metrics_observe(H_BACKEND_REPLY, metrics_now() - w.sent_at);
	}
	if (res != BACKEND_REPLY) {
		b->dead = 1;
		b->nwait = 0;
		if (b->conn != NULL)
			conn_read_stop(b->conn);
	} else if (b->nwait > 0) {
		/* The next reply's deadline counts from this one. */
		backend_deadline(b, b->wait[b->whead].timeout_ms);
	}
	if (w.cb != NULL) {
		w.cb(w.arg, res, res == BACKEND_REPLY ? b->reply : NULL);
		return;
	}
	/* Nobody asked: a backend that talks out of turn (an idle 421, say)
	 * or goes away between commands is no longer in step with us. */
	b->dead = 1;
	if (b->conn != NULL)
		conn_read_stop(b->conn);
	if (b->gone != NULL)
		b->gone(b->arg, res);
}

/* backend_read_cb - read reply lines: every complete reply the input
 * holds goes to its waiting command, in order */
static void
backend_read_cb(struct conn *c, void *arg)
{
	struct backend *b = arg;
	int alive = 1;

	/* A callback may close the leg, or free the session that holds it:
	 * backend_close clears alive, and nothing here touches b after. */
	b->alive = &alive;
	backend_replies(b, c, &alive);
	if (alive)
		b->alive = NULL;
}

/* backend_idle - see backend.h */
void
backend_idle(struct backend *b)
{
	if (b->nwait == 0 && b->greeted == NULL && b->reply != NULL) {
		free(b->reply);
		b->reply = NULL;
	}
}

/* backend_replies - the loop of backend_read_cb */
static void
backend_replies(struct backend *b, struct conn *c, const int *alive)
{
	struct evbuffer *in = c->in;

	while (!b->dead && b->conn == c) {
		size_t n;
		char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
		int r;

		if (line == NULL) {
			if (evbuffer_get_length(in) > SMTP_REPLY_LINE_MAX + 2) {
				log_warn(b->id, "backend sent a reply line over %d octets",
				    SMTP_REPLY_LINE_MAX);
				backend_finish(b, BACKEND_GARBLED);
			}
			return;
		}
		if (b->reply == NULL) {
			if ((b->reply = malloc(sizeof(*b->reply))) == NULL) {
				free(line);
				log_err(b->id, "out of memory reading a backend reply");
				backend_finish(b, BACKEND_LOST);
				return;
			}
			b->reply_done = 1;
		}
		if (b->reply_done) { /* a reply after the last one: on its own */
			smtp_reply_init(b->reply);
			b->reply_done = 0;
		}
		r = smtp_reply_feed(b->reply, line, n);
		if (r == PC_ERROR) {
			char q[200];
			log_warn(b->id, "backend sent garbage: \"%s\"",
			    log_quote(q, sizeof(q), line, n));
			free(line);
			backend_finish(b, BACKEND_GARBLED);
			return;
		}
		free(line);
		if (r == PC_OK && b->nwait <= 1 && evbuffer_get_length(in) > 0) {
			/* Only the commands in flight have replies coming: anything
			 * after the last one's (a second reply, bytes after a 220
			 * to STARTTLS) would otherwise answer our next command.
			 * Where the segment boundaries fall must not matter
			 * (DESIGN §2). */
			char q[200];
			size_t l = evbuffer_get_length(in);
			const unsigned char *extra = evbuffer_pullup(in, l < 80 ? (ssize_t)l : 80);
			log_warn(b->id,
			    "backend sent %zu octets after its %d reply, before our next "
			    "command: \"%s\"; closing",
			    l, b->reply->code,
			    log_quote(q, sizeof(q), (const char *)extra, l < 80 ? l : 80));
			backend_finish(b, BACKEND_SURPLUS);
			return;
		}
		if (r == PC_OK) {
			b->reply_done = 1;
			if (b->nwait == 0) {
				size_t l;
				const char *t = smtp_reply_line(b->reply, 0, &l);
				char q[200];
				log_warn(b->id, "backend spoke out of turn: %d %s", b->reply->code,
				    log_quote(q, sizeof(q), t, l));
			}
			backend_finish(b, BACKEND_REPLY);
			if (!*alive)
				return;
		}
	}
}

/* backend_event_cb - connected, closed, or failed */
static void
backend_event_cb(struct conn *c, int what, void *arg)
{
	struct backend *b = arg;

	if (what == CONN_CONNECTED)
		return;
	if (what == CONN_TLS) {
		struct backend_wait w = backend_pop(b);
		evtimer_del(b->deadline);
		if (w.cb != NULL)
			w.cb(w.arg, BACKEND_REPLY, NULL); /* NULL: TLS is up */
		return;
	}
	/* A failure is reported once: a refused connect makes both the read
	 * and the (connecting) write event fail, and the second one must not
	 * reach gone as a new loss the owner was already told about. */
	if (b->dead)
		return;
	if (c->tls_error[0] != '\0')
		log_warn(b->id, "backend %s", c->tls_error);
	else if (what == CONN_ERROR)
		log_warn(b->id, "backend connection error: %s", strerror(c->err));
	else
		log_warn(b->id, "backend closed the connection");
	backend_finish(b, BACKEND_LOST);
}

/* backend_deadline_cb - the backend did not answer in time */
static void
backend_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct backend *b = arg;

	if (what & EV_READ) { /* activated by a failed connect */
		log_warn(b->id, "cannot connect to the backend: %s", strerror(errno));
		backend_finish(b, BACKEND_LOST);
		return;
	}
	log_warn(b->id, "backend timed out");
	backend_finish(b, BACKEND_TIMEOUT);
}

/*
 * backend_close - end the leg. A healthy idle leg says QUIT first; anything
 * else (a message half sent, a dead leg) is cut, so the backend sees a closed
 * connection and never a "." for a message we did not finish.
 */
void
backend_close(struct backend *b)
{
	if (b->alive != NULL) {
		*b->alive = 0;
		b->alive = NULL;
	}
	if (b->rdns_waiting) {
		rdns_unwait(b->client->rdns);
		b->rdns_waiting = 0;
	}
	if (b->deadline != NULL) {
		event_free(b->deadline);
		b->deadline = NULL;
	}
	if (b->conn != NULL && !b->dead && b->nwait == 0) {
		/* QUIT goes straight into the socket buffer, which close(2)
		 * still delivers; nothing waits for the 221. A leg with a
		 * command outstanding (DATA's 354, say) is cut instead. */
		evbuffer_add(b->conn->out, "QUIT\r\n", 6);
		conn_flush(b->conn);
	}
	b->nwait = 0;
	free(b->reply);
	b->reply = NULL;
	if (b->conn == NULL)
		return;
	conn_free(b->conn);
	b->conn = NULL;
}

/* ---- the greeting: EHLO, STARTTLS, XCLIENT, EHLO ---- */

/* backend_greet - see backend.h */
void
backend_greet(struct backend *b, const struct backend_client *client, backend_cb cb)
{
	b->client = client;
	b->greeted = cb;
	b->xclient_next = 0;
	b->xclient_done = 0;
	greet_ehlo(b);
}

/* greet_ehlo - EHLO with the client's own name, exactly, so the backend's
 * logs and checks see it (and we learn what it offers) */
static void
greet_ehlo(struct backend *b)
{
	greet_command(b, on_greet_ehlo, "EHLO %.*s", (int)b->client->helo_len, b->client->helo);
}

/* greet_end - the sequence is over: tell the owner */
static void
greet_end(struct backend *b, enum backend_result res, const struct smtp_reply *r)
{
	backend_cb cb = b->greeted;

	b->greeted = NULL;
	if (res == BACKEND_TLS_FAILED || res == BACKEND_XCLIENT_REFUSED)
		b->dead = 1;
	cb(b->arg, res, r);
}

static void
on_greet_ehlo(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct backend *b = arg;

	if (res != BACKEND_REPLY || r->code / 100 != 2) {
		greet_end(b, res, r);
		return;
	}
	smtp_caps_parse(r, &b->caps);
	greet_next(b, r);
}

/* greet_tls_down - backend TLS did not work out and is required */
static void
greet_tls_down(struct backend *b, const char *why)
{
	log_warn(b->id, "backend TLS: %s", why);
	greet_end(b, BACKEND_TLS_FAILED, NULL);
}

/* greet_rdns_done - the client's name is known: on with XCLIENT */
static void
greet_rdns_done(void *arg)
{
	struct backend *b = arg;

	b->rdns_waiting = 0;
	greet_next(b, b->reply);
}

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
int
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
xclient_attrs(struct backend *b, char attrs[XCLIENT_ATTRS][XCLIENT_ATTR_MAX])
{
	const struct smtp_caps *caps = &b->caps;
	const struct backend_client *c = b->client;
	size_t n = 0;

	if (xclient_has(caps, "ADDR"))
		snprintf(attrs[n++], XCLIENT_ATTR_MAX, "ADDR=%s%s",
		    strchr(c->ip, ':') ? "IPV6:" : "", c->ip);
	if (xclient_has(caps, "PORT"))
		snprintf(attrs[n++], XCLIENT_ATTR_MAX, "PORT=%s", c->port);
	if (xclient_has(caps, "NAME")) {
		const char *name = c->rdns != NULL ? rdns_xclient_name(c->rdns) : "[UNAVAILABLE]";
		xclient_attr(attrs[n++], XCLIENT_ATTR_MAX, "NAME", name, strlen(name));
	}
	/* A HELO name that cannot be sent is unknown, never cut. */
	if (xclient_has(caps, "HELO"))
		xclient_attr(attrs[n++], XCLIENT_ATTR_MAX, "HELO", c->helo, c->helo_len);
	if (xclient_has(caps, "PROTO"))
		snprintf(attrs[n++], XCLIENT_ATTR_MAX, "PROTO=%s", c->esmtp ? "ESMTP" : "SMTP");
	if (xclient_has(caps, "LOGIN") && c->login != NULL)
		xclient_attr(attrs[n++], XCLIENT_ATTR_MAX, "LOGIN", c->login, strlen(c->login));
	return n;
}

/* xclient_send - the next XCLIENT command, within 512 octets (Postfix's
 * XCLIENT_README), never without an attribute; 0 when every attribute went */
static int
xclient_send(struct backend *b)
{
	char attrs[XCLIENT_ATTRS][XCLIENT_ATTR_MAX], line[XCLIENT_LINE_MAX + 8];
	size_t n = xclient_attrs(b, attrs), i = b->xclient_next - 1, o;

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
	b->xclient_next = (unsigned)i + 1;
	greet_command(b, on_greet_xclient, "%.*s", (int)o, line);
	return 1;
}

/* greet_next - after an EHLO reply r (a 2xx), what the backend needs
 * before the client gets its answer: STARTTLS, then XCLIENT */
static void
greet_next(struct backend *b, const struct smtp_reply *r)
{
	const struct config *cfg = b->conf.cfg;
	const struct smtp_caps *caps = &b->caps;

	if (cfg->backend_tls != CONFIG_BACKEND_TLS_NO && b->conn->ssl == NULL && !b->tls_started) {
		if (caps->starttls) {
			b->tls_started = 1;
			greet_command(b, on_greet_starttls, "STARTTLS");
			return;
		}
		if (cfg->backend_tls == CONFIG_BACKEND_TLS_REQUIRED) {
			greet_tls_down(
			    b, "the backend does not offer STARTTLS (backend_tls = required)");
			return;
		}
	}
	if (caps->xclient && cfg->backend_xclient && !b->xclient_done) {
		if (b->xclient_next == 0 && b->client->rdns != NULL && cfg->client_rdns &&
		    xclient_has(caps, "NAME")) {
			rdns_start(b->client->rdns); /* if it was not asked at connect */
			if (rdns_wait(b->client->rdns, greet_rdns_done, b)) {
				b->rdns_waiting = 1;
				return;
			}
		}
		if (b->xclient_next == 0)
			b->xclient_next = 1;
		if (xclient_send(b))
			return;
	}
	greet_end(b, BACKEND_REPLY, r);
}

static void
on_greet_starttls(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct backend *b = arg;
	const struct config *cfg = b->conf.cfg;

	if (res != BACKEND_REPLY) {
		greet_end(b, res, r);
		return;
	}
	if (r->code != 220) {
		if (cfg->backend_tls == CONFIG_BACKEND_TLS_REQUIRED) {
			greet_tls_down(b, "the backend refused STARTTLS");
			return;
		}
		log_info(b->id, "backend refused STARTTLS (%d): going on without TLS", r->code);
		greet_next(b, r);
		return;
	}
	if (backend_starttls(b, on_greet_tls) != 0) {
		metrics_inc(M_TLS_BACKEND_FAILED);
		greet_tls_down(b, b->conn != NULL ? b->conn->tls_error : "no TLS context");
	}
}

static void
on_greet_tls(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct backend *b = arg;

	if (res != BACKEND_REPLY) {
		/* The detail is already in the log (backend_event_cb). */
		const char *why =
		    res == BACKEND_TIMEOUT ? "handshake timed out" : "handshake failed";
		if (b->conf.cfg->backend_tls != CONFIG_BACKEND_TLS_OPPORTUNISTIC) {
			metrics_inc(M_TLS_BACKEND_FAILED);
			greet_tls_down(b, why);
			return;
		}
		/* A handshake cannot be taken back: a new leg without TLS,
		 * as Postfix's "may" level does. STARTTLS is not tried again
		 * on it (tls_started stays set). */
		metrics_inc(M_TLS_BACKEND_FAILED);
		log_warn(b->id,
		    "backend TLS: %s; reconnecting without TLS (backend_tls = opportunistic)", why);
		backend_close(b);
		memset(&b->caps, 0, sizeof(b->caps));
		if (backend_open(b, on_greet_plain_banner, b) != 0) {
			log_err(b->id, "cannot create the backend connection: %s", strerror(errno));
			greet_end(b, BACKEND_LOST, NULL);
			return;
		}
		b->tls_started = 1;
		return;
	}
	metrics_inc(M_TLS_BACKEND_OK);
	log_info(b->id, "TLS %s with the backend", conn_tls_version(b->conn));
	greet_ehlo(b);
}

/* on_greet_plain_banner - the new plaintext leg greeted: EHLO again */
static void
on_greet_plain_banner(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct backend *b = arg;

	if (res != BACKEND_REPLY || r->code != 220) {
		if (res == BACKEND_REPLY)
			log_warn(b->id, "backend greeted with %d, not 220", r->code);
		greet_end(b, BACKEND_LOST, NULL);
		return;
	}
	greet_ehlo(b);
}

static void
on_greet_xclient(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct backend *b = arg;

	if (res != BACKEND_REPLY) {
		greet_end(b, res, r);
		return;
	}
	if (r->code / 100 != 2) { /* Postfix says 220; test sinks say 250 */
		/* Going on would fail open: the backend would take every
		 * client for this host (its relay and rate rules with it). */
		size_t len;
		const char *t = smtp_reply_line(r, 0, &len);
		char q[200];
		log_err(b->id,
		    "backend refused XCLIENT: %d %s; closing (is this host in its "
		    "smtpd_authorized_xclient_hosts?)",
		    r->code, log_quote(q, sizeof(q), t, len));
		greet_end(b, BACKEND_XCLIENT_REFUSED, r);
		return;
	}
	if (!xclient_send(b)) {
		b->xclient_done = 1; /* done for this EHLO: not again */
		greet_ehlo(b);
	}
}
