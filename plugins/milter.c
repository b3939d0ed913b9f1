/*
 * milter.c - the milter client: any Sendmail/Postfix milter (OpenDKIM,
 * clamav-milter, spamass-milter, rspamd's proxy, OpenDMARC) as a filter in
 * the chain, spoken to with the milter protocol version 6 (libmilter's,
 * as Postfix's milter8 client speaks it).
 *
 * Exports only the descriptor portcullis_plugin (see plugin.h). A section
 * "[milter NAME]" loads it; its keys, the recipes for the common milters
 * and the log lines are in doc/milter.md. The wire format and its parsers
 * are in plugins/milter_proto.h.
 *
 * ONE CONNECTION PER SESSION. The connect hook opens it (or, if an earlier
 * filter accepted the connect stage so ours never ran, the first hook that
 * runs), negotiates, and sends SMFIC_CONNECT; each stage then sends its
 * command: HELO, MAIL, RCPT, and at the end of DATA the whole message
 * (SMFIC_DATA, each header field, SMFIC_EOH, the body in chunks,
 * SMFIC_BODYEOB). A command the milter switched off (SMFIP_NO*) is not
 * sent; one it will not answer (SMFIP_NR_*) is not waited for. A
 * transaction that ends before the milter's end-of-message answer gets
 * SMFIC_ABORT; the session's end gets SMFIC_QUIT. The milter sees MAIL
 * before RCPT and RCPT before DATA even when another filter's accept
 * skipped our hook at a stage (those commands are sent late).
 *
 * THE MESSAGE it sees is the one the backend would get now: with the
 * changes of the filters before it in the chain (host->message_read_
 * current), so a signing milter signs what is delivered. Its own changes
 * (only in its end-of-message answer) become the host's message changes.
 *
 * HOW IT WAITS. Every hook that needs an answer goes pending, and the
 * milter's deadline for that answer (timeout_connect, timeout_command,
 * timeout_eom; a progress answer restarts it) is the host's deadline for
 * the call (host->pending_deadline): when it passes, the host cancels the
 * call, we close the connection, and the section's on_error decides. The
 * bufferevent has deferred callbacks, so none runs inside a hook.
 *
 * FAILURE. A milter that cannot be reached, does not answer in time,
 * answers garbage or closes is closed, and every later stage of that
 * session is a failure too (PC_FAIL: on_error); the next session connects
 * afresh.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "portcullis/plugin.h"

#include "milter_proto.h"

/* Postfix's defaults (milter_connect_timeout and friends, but a shorter
 * end-of-message wait than its 120 s: the client is waiting for "."). */
#define MILTER_T_CONNECT (5ULL * 1000)
#define MILTER_T_COMMAND (30ULL * 1000)
#define MILTER_T_EOM (60ULL * 1000)
#define MILTER_T_MAX (60ULL * 60 * 1000)
/* The message is read in these pieces. */
#define MILTER_READ 16384
/* The pump stops adding to the socket's output past this and goes on
 * when it drains below it (a milter that answers nothing still reads at
 * its own pace). */
#define MILTER_OUT_HIGH (256 * 1024)
/* A header field sent to the milter: libmilter takes packets up to 64 KB.
 * A longer (folded) field is cut there, and the log says so. */
#define MILTER_FIELD_MAX (MP_CHUNK_MAX - 256)
/* A line of the header section longer than this ends the section: what
 * follows is sent as body (the proxy's own line limit is far below). */
#define MILTER_LINE_MAX (1024 * 1024)

/* The default macros per stage (MP_M_* order), after Postfix's
 * milter_*_macros, with the client's own at connect. */
static const char *const milter_default_macros[MP_M_COUNT] = {
    "j _ {daemon_name} {daemon_addr} {daemon_port} {client_addr} {client_port} "
    "{client_name} v",
    "{tls_version} {cipher}",
    "i {auth_authen} {mail_addr}",
    "i {rcpt_addr}",
    "i",
    "i",
    "i",
};

/* The stage names of the macros key, in MP_M_* order. */
static const char *const milter_stage_names[MP_M_COUNT] = {
    "connect", "helo", "mail", "rcpt", "data", "eom", "eoh"};

static const char *const milter_keys[] = {"socket", "timeout_connect", "timeout_command",
    "timeout_eom", "macros", "daemon_name", "quarantine_header", NULL};

/* One section. */
struct milter {
	const struct pc_host *host;
	struct pc_instance *self;
	char name[64];
	char where[200]; /* the socket as configured, for logs */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	unsigned long long t_connect, t_command, t_eom;
	char *macros[MP_M_COUNT]; /* wire names, blank-separated */
	char *daemon_name; /* NULL: the hostname */
	char *quarantine_header;
};

/* The steps one hook may need, in order. */
enum step {
	STEP_OPEN = 1, /* connect and negotiate */
	STEP_CONNECT, /* SMFIC_CONNECT */
	STEP_HELO,
	STEP_MAIL,
	STEP_RCPT, /* the stage's recipient */
	STEP_RCPTS, /* every accepted recipient, late */
	STEP_MESSAGE, /* DATA, headers, EOH, body, EOM */
};

/* Where the message pump is. */
enum phase { PH_DATA = 0, PH_HEADERS, PH_EOH, PH_BODY, PH_EOM, PH_DONE };

enum conn_state {
	CS_NONE = 0, /* not opened yet */
	CS_OPEN, /* negotiated, talking */
	CS_ACCEPTED, /* the milter accepted the session: nothing more to ask */
	CS_FAILED, /* closed after a failure: every stage fails */
};

/* One session's milter connection (session_data). */
struct mconn {
	struct milter *m;
	struct bufferevent *bev;
	enum conn_state state;
	char why[300]; /* why it failed, for the later stages */
	uint32_t actions, proto;
	char *symlist[MP_M_COUNT]; /* the milter's own macro lists */
	int helo_sent, mail_sent, nrcpt_sent;
	int in_tx; /* MAIL went out and no end-of-message answer came */
	int tx_accepted, tx_discard;
	/* The hook in flight. */
	struct pc_call *call;
	int pending; /* host->pending was called for call */
	enum pc_stage stage;
	enum step steps[8];
	int nsteps, cur;
	size_t rcpt_i; /* STEP_RCPTS: the next recipient */
	unsigned char await; /* the command whose answer we wait for; 0: none */
	unsigned long long wait_ms; /* its timeout */
	unsigned long long deadline_at; /* when it passes (monotonic ms) */
	struct pc_verdict v; /* the answer, when done */
	char reply[PC_REPLY_MAX + 2];
	/* The message pump. */
	enum phase phase;
	struct evbuffer *in; /* message octets read, not yet sent */
	int eof; /* message_read_current said 0 */
	int write_wait; /* waiting for the output to drain */
	int body_started; /* SMFIR_REPLBODY began a replacement */
	int cut_logged;
	/* A callback of ours is running (busy): the close hook, which a
	 * resume may reach, leaves the freeing to it (closed). */
	int busy, closed;
	char sid[32]; /* the session's id, for a log line without the call */
};

static int milter_init(struct pc_init *in, void **instance);
static int milter_option(struct milter *m, const struct pc_option *o, char *err, size_t errlen);
static int milter_socket(struct milter *m, const char *value, char *err, size_t errlen);
static int milter_macros_opt(struct milter *m, const char *value, char *err, size_t errlen);
static char *macro_list(
    const struct pc_host *h, const char *list, size_t len, char *bad, size_t badlen);
static void milter_fini(void *instance);
static int milter_connect(void *instance, struct pc_call *call, struct pc_verdict *v);
static int milter_helo(void *instance, struct pc_call *call, struct pc_verdict *v);
static int milter_mail(void *instance, struct pc_call *call, struct pc_verdict *v);
static int milter_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v);
static int milter_data(void *instance, struct pc_call *call, struct pc_verdict *v);
static void milter_reset(void *instance, struct pc_call *call);
static void milter_close(void *instance, struct pc_call *call);
static int mc_hook(struct milter *m, struct pc_call *call, struct pc_verdict *v);
static int mc_run(struct mconn *mc);
static int mc_step(struct mconn *mc, enum step st);
static int mc_open(struct mconn *mc);
static int mc_command(struct mconn *mc, unsigned char cmd, struct evbuffer *args, uint32_t no,
    uint32_t nr, int mstage);
static int mc_pump(struct mconn *mc);
static int mc_field(struct mconn *mc, struct evbuffer *out);
static int mc_line(struct mconn *mc, size_t *len, size_t *eol);
static int mc_fill(struct mconn *mc);
static int mc_body_chunk(struct mconn *mc, struct evbuffer *out);
static void mc_send(struct mconn *mc, unsigned char cmd, struct evbuffer *data);
static void mc_macros(struct mconn *mc, int mstage, unsigned char cmd);
static const char *mc_macro_value(struct mconn *mc, const char *name, char *buf, size_t len);
static void mc_add_str(struct evbuffer *b, const char *s);
static void mc_add_params(struct evbuffer *b, const char *params);
static void mc_wait(struct mconn *mc, unsigned char cmd, unsigned long long ms);
static void mc_readcb(struct bufferevent *bev, void *arg);
static void mc_writecb(struct bufferevent *bev, void *arg);
static void mc_eventcb(struct bufferevent *bev, short what, void *arg);
static int mc_packet(struct mconn *mc, unsigned char cmd, const unsigned char *d, size_t n);
static int mc_optneg(struct mconn *mc, const unsigned char *d, size_t n);
static int mc_answer(struct mconn *mc, const struct mp_reply *r);
static int mc_change(struct mconn *mc, const struct mp_reply *r);
static int mc_verdict(struct mconn *mc, enum pc_action a, const char *reply);
static int mc_fail(struct mconn *mc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mc_done(struct mconn *mc);
static void mc_cancel(void *arg);
static void mc_close_conn(struct mconn *mc, int quit);
static void mc_tx_clear(struct mconn *mc);
static void mc_free(struct mconn *mc);
static const char *mc_cmd_name(unsigned char cmd);
static char *mc_addr(const char *s, char *buf, size_t len);
static unsigned long long mc_now_ms(void);

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "milter",
    .version = "1.0",
    .keys = milter_keys,
    .init = milter_init,
    .fini = milter_fini,
    .connect = milter_connect,
    .helo = milter_helo,
    .mail = milter_mail,
    .rcpt = milter_rcpt,
    .data = milter_data,
    .reset = milter_reset,
    .close = milter_close,
};

/* ---- configuration ---- */

static int
milter_init(struct pc_init *in, void **instance)
{
	struct milter *m;
	const struct pc_option *o;
	int have_socket = 0;

	if (!PC_HOST_HAS(in->host, insert_header_current)) {
		snprintf(in->err, in->errlen,
		    "this portcullis has no message_read_current (ABI 2.2, the milter client)");
		in->err_line = in->line;
		return -1;
	}
	if ((m = calloc(1, sizeof(*m))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	m->host = in->host;
	m->self = in->self;
	snprintf(m->name, sizeof(m->name), "%s", in->name);
	m->t_connect = MILTER_T_CONNECT;
	m->t_command = MILTER_T_COMMAND;
	m->t_eom = MILTER_T_EOM;
	for (o = in->options; o != NULL; o = o->next) {
		if (milter_option(m, o, in->err, in->errlen) < 0) {
			in->err_line = o->line;
			milter_fini(m);
			return -1;
		}
		have_socket |= strcmp(o->key, "socket") == 0;
	}
	if (!have_socket) {
		snprintf(in->err, in->errlen,
		    "socket is required (e.g. socket = inet:127.0.0.1:8891 or "
		    "unix:/run/opendkim/opendkim.sock)");
		in->err_line = in->line;
		milter_fini(m);
		return -1;
	}
	for (int i = 0; i < MP_M_COUNT; i++) {
		char bad[80];
		if (m->macros[i] == NULL &&
		    (m->macros[i] = macro_list(m->host, milter_default_macros[i],
		         strlen(milter_default_macros[i]), bad, sizeof(bad))) == NULL)
			abort(); /* the defaults are constants */
	}
	if (m->quarantine_header == NULL &&
	    (m->quarantine_header = strdup("X-Quarantine")) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		milter_fini(m);
		return -1;
	}
	*instance = m;
	return 0;
}

/* milter_option - one key; 0, or -1 with a message in err */
static int
milter_option(struct milter *m, const struct pc_option *o, char *err, size_t errlen)
{
	const struct pc_host *h = m->host;
	unsigned long long *t = NULL;
	char msg[200];

	if (strcmp(o->key, "socket") == 0)
		return milter_socket(m, o->value, err, errlen);
	if (strcmp(o->key, "macros") == 0)
		return milter_macros_opt(m, o->value, err, errlen);
	if (strcmp(o->key, "timeout_connect") == 0)
		t = &m->t_connect;
	else if (strcmp(o->key, "timeout_command") == 0)
		t = &m->t_command;
	else if (strcmp(o->key, "timeout_eom") == 0)
		t = &m->t_eom;
	if (t != NULL) {
		if (h->opt_time(o->value, t, msg, sizeof(msg)) < 0) {
			snprintf(err, errlen, "%s: %s", o->key, msg);
			return -1;
		}
		if (*t == 0 || *t > MILTER_T_MAX) {
			snprintf(err, errlen, "%s: bad value \"%s\": expected 1ms to 1h", o->key,
			    o->value);
			return -1;
		}
		return 0;
	}
	if (strcmp(o->key, "daemon_name") == 0 || strcmp(o->key, "quarantine_header") == 0) {
		int header = o->key[0] == 'q';
		char **out = header ? &m->quarantine_header : &m->daemon_name;
		size_t n = strlen(o->value);
		int ok = n > 0 && n <= 76;

		for (size_t i = 0; ok && i < n; i++) {
			unsigned char c = (unsigned char)o->value[i];
			ok = c > ' ' && c <= '~' && (!header || c != ':');
		}
		if (!ok) {
			snprintf(err, errlen, "%s: bad value \"%s\": expected %s", o->key, o->value,
			    header ? "a header field name" : "a name without blanks");
			return -1;
		}
		free(*out);
		if ((*out = strdup(o->value)) == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		return 0;
	}
	snprintf(err, errlen, "unknown key %s", o->key);
	return -1;
}

/* milter_socket - where the milter listens, as a socket address */
static int
milter_socket(struct milter *m, const char *value, char *err, size_t errlen)
{
	struct mp_socket s;
	char msg[300];

	if (mp_socket_parse(value, &s, msg, sizeof(msg)) < 0) {
		snprintf(err, errlen, "socket: %s", msg);
		return -1;
	}
	memset(&m->addr, 0, sizeof(m->addr));
	if (s.path[0] != '\0') {
		struct sockaddr_un *un = (struct sockaddr_un *)&m->addr;
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, s.path, strlen(s.path) + 1);
		m->addrlen = (socklen_t)sizeof(*un);
	} else {
		/* A numeric address, or a name (inet:8891@localhost, as
		 * Postfix and Sendmail write it) looked up here, once, at
		 * start and reload: a session never waits for a lookup. */
		struct evutil_addrinfo hints, *ai = NULL;
		char port[8];
		int r;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = s.family == 4 ? AF_INET : AF_INET6;
		hints.ai_socktype = SOCK_STREAM;
		snprintf(port, sizeof(port), "%u", s.port);
		if ((r = evutil_getaddrinfo(s.host, port, &hints, &ai)) != 0 || ai == NULL ||
		    ai->ai_addrlen > sizeof(m->addr)) {
			snprintf(err, errlen,
			    "socket: bad value \"%s\": no IPv%d address for \"%s\" (%s)", value,
			    s.family, s.host, r != 0 ? evutil_gai_strerror(r) : "none");
			if (ai != NULL)
				evutil_freeaddrinfo(ai);
			return -1;
		}
		memcpy(&m->addr, ai->ai_addr, ai->ai_addrlen);
		m->addrlen = (socklen_t)ai->ai_addrlen;
		evutil_freeaddrinfo(ai);
	}
	snprintf(m->where, sizeof(m->where), "%s", value);
	return 0;
}

/*
 * milter_macros_opt - "connect: j _ {client_addr}; mail: i {mail_addr}":
 * the macros to send at the stages named (the others keep the default).
 */
static int
milter_macros_opt(struct milter *m, const char *value, char *err, size_t errlen)
{
	const char *p = value;

	if (strchr(value, ':') == NULL) {
		/* A plain list: these macros at every stage, each where it
		 * has a value ({rcpt_addr} at RCPT, i in a transaction). */
		char bad[80];
		for (int i = 0; i < MP_M_COUNT; i++) {
			char *list = macro_list(m->host, value, strlen(value), bad, sizeof(bad));
			if (list == NULL) {
				snprintf(err, errlen, "macros: bad macro name \"%s\" in \"%s\"",
				    bad, value);
				return -1;
			}
			free(m->macros[i]);
			m->macros[i] = list;
		}
		return 0;
	}
	while (*p != '\0') {
		const char *end = strchr(p, ';'), *colon;
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
		int stage = -1;
		char *list, bad[80];

		while (n > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			n--;
		}
		if (n == 0) {
			p += end != NULL ? 1 : 0;
			continue;
		}
		colon = memchr(p, ':', n);
		for (int i = 0; colon != NULL && i < MP_M_COUNT; i++) {
			size_t sl = strlen(milter_stage_names[i]);
			size_t name_len = (size_t)(colon - p);
			while (name_len > 0 && (p[name_len - 1] == ' ' || p[name_len - 1] == '\t'))
				name_len--;
			if (name_len == sl && strncasecmp(p, milter_stage_names[i], sl) == 0)
				stage = i;
		}
		if (stage < 0) {
			snprintf(err, errlen,
			    "macros: bad value \"%s\": expected STAGE: NAME ...; STAGE: ... with "
			    "STAGE one of connect, helo, mail, rcpt, data, eoh, eom",
			    value);
			return -1;
		}
		list =
		    macro_list(m->host, colon + 1, (size_t)(p + n - (colon + 1)), bad, sizeof(bad));
		if (list == NULL) {
			snprintf(
			    err, errlen, "macros: bad macro name \"%s\" in \"%s\"", bad, value);
			return -1;
		}
		free(m->macros[stage]);
		m->macros[stage] = list;
		p += n + (end != NULL ? 1 : 0);
	}
	return 0;
}

/* macro_list - names as configured (blanks or commas between) into wire
 * names separated by one blank; NULL with the bad name in bad (or "" when
 * out of memory) */
static char *
macro_list(const struct pc_host *h, const char *list, size_t len, char *bad, size_t badlen)
{
	char *copy, *out;
	const char *cur, *item;
	size_t n, o = 0;

	bad[0] = '\0';
	if ((copy = strndup(list, len)) == NULL || (out = malloc(len * 2 + 8)) == NULL) {
		free(copy);
		return NULL;
	}
	out[0] = '\0';
	cur = copy;
	while (h->opt_list(&cur, &item, &n)) {
		char wire[72];
		if (mp_macro_name(item, n, wire, sizeof(wire)) < 0) {
			snprintf(bad, badlen, "%.*s", (int)(n < 60 ? n : 60), item);
			free(copy);
			free(out);
			return NULL;
		}
		o += (size_t)sprintf(out + o, "%s%s", o ? " " : "", wire);
	}
	free(copy);
	return out;
}

static void
milter_fini(void *instance)
{
	struct milter *m = instance;

	for (int i = 0; i < MP_M_COUNT; i++)
		free(m->macros[i]);
	free(m->daemon_name);
	free(m->quarantine_header);
	free(m);
}

/* ---- the hooks ---- */

static int
milter_connect(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return mc_hook(instance, call, v);
}

static int
milter_helo(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return mc_hook(instance, call, v);
}

static int
milter_mail(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return mc_hook(instance, call, v);
}

static int
milter_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return mc_hook(instance, call, v);
}

static int
milter_data(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return mc_hook(instance, call, v);
}

/*
 * mc_hook - every stage: the steps this stage needs (the connection first
 * if there is none yet, commands another filter's accept made us miss),
 * run until one needs an answer (pending) or all are done.
 */
static int
mc_hook(struct milter *m, struct pc_call *call, struct pc_verdict *v)
{
	const struct pc_host *h = m->host;
	void **slot = h->session_data(call);
	struct mconn *mc = *slot;
	enum pc_stage stage = h->stage(call);

	if (mc == NULL) {
		const char *sid = h->get(call, PC_SESSION_ID);
		if ((mc = calloc(1, sizeof(*mc))) == NULL) {
			v->action = PC_FAIL;
			v->reply = "out of memory";
			return PC_HOOK_DONE;
		}
		mc->m = m;
		snprintf(mc->sid, sizeof(mc->sid), "%s", sid != NULL ? sid : "?");
		*slot = mc;
	}
	if (mc->state == CS_FAILED) {
		v->action = PC_FAIL;
		v->reply = mc->why;
		return PC_HOOK_DONE;
	}
	if (mc->state == CS_ACCEPTED || (stage >= PC_STAGE_RCPT && mc->tx_accepted))
		return PC_HOOK_DONE;
	if (stage >= PC_STAGE_RCPT && mc->tx_discard) {
		v->action = PC_DROP;
		return PC_HOOK_DONE;
	}
	mc->call = call;
	mc->pending = 0;
	mc->stage = stage;
	mc->nsteps = mc->cur = 0;
	mc->v.action = PC_CONTINUE;
	mc->v.reply = NULL;
	if (mc->state == CS_NONE) {
		mc->steps[mc->nsteps++] = STEP_OPEN;
		mc->steps[mc->nsteps++] = STEP_CONNECT;
	}
	/* HELO, also late: the milter gets it before MAIL even when another
	 * filter's accept skipped our HELO hook. */
	if (stage == PC_STAGE_HELO ||
	    (stage > PC_STAGE_HELO && !mc->helo_sent && h->get(call, PC_HELO) != NULL))
		mc->steps[mc->nsteps++] = STEP_HELO;
	if (stage == PC_STAGE_MAIL) {
		mc_tx_clear(mc);
		mc->steps[mc->nsteps++] = STEP_MAIL;
	}
	if (stage >= PC_STAGE_RCPT && !mc->mail_sent)
		mc->steps[mc->nsteps++] = STEP_MAIL;
	if (stage == PC_STAGE_RCPT)
		mc->steps[mc->nsteps++] = STEP_RCPT;
	if (stage == PC_STAGE_DATA) {
		if (mc->nrcpt_sent == 0) {
			mc->rcpt_i = 0;
			mc->steps[mc->nsteps++] = STEP_RCPTS;
		}
		mc->steps[mc->nsteps++] = STEP_MESSAGE;
	}
	if (mc->nsteps == 0)
		return PC_HOOK_DONE;
	if (mc_run(mc) == 0) {
		/* Done without waiting (every answer switched off). */
		*v = mc->v;
		mc->call = NULL;
		return PC_HOOK_DONE;
	}
	if (h->pending(call, mc_cancel, mc) != 0) {
		mc_close_conn(mc, 0);
		snprintf(mc->why, sizeof(mc->why), "the call cannot wait for the milter");
		mc->state = CS_FAILED;
		mc->call = NULL;
		v->action = PC_FAIL;
		v->reply = mc->why;
		return PC_HOOK_DONE;
	}
	mc->pending = 1;
	h->pending_deadline(call, mc->wait_ms);
	return PC_HOOK_PENDING;
}

/*
 * mc_run - go on with the hook's steps: 1 if an answer is awaited (or the
 * output must drain), 0 when the hook is decided (mc->v: the end of the
 * steps is continue, a verdict ends them early, a failure is PC_FAIL).
 */
static int
mc_run(struct mconn *mc)
{
	while (mc->cur < mc->nsteps) {
		int r = mc_step(mc, mc->steps[mc->cur]);
		if (r != 0)
			return r > 0 ? 1 : 0;
		mc->cur++;
	}
	return 0;
}

/*
 * mc_step - one step: 1 waiting, 0 done (go on), -1 the hook is decided
 * (mc->v). Steps that send several commands (the recipients, the
 * message) keep their place in mc and are called again after each answer.
 */
static int
mc_step(struct mconn *mc, enum step st)
{
	const struct pc_host *h = mc->m->host;
	struct pc_call *call = mc->call;
	struct evbuffer *b;
	const char *s;
	char addr[600];
	int r;

	switch (st) {
	case STEP_OPEN:
		if (mc->state == CS_OPEN)
			return 0;
		return mc_open(mc);
	case STEP_CONNECT: {
		const char *ip = h->get(call, PC_CLIENT_IP), *port = h->get(call, PC_CLIENT_PORT);
		const char *name = h->get(call, PC_CLIENT_NAME);
		unsigned char p2[2];
		unsigned long pn = port != NULL ? strtoul(port, NULL, 10) : 0;

		if (mc->await == SMFIC_CONNECT) { /* answered */
			mc->await = 0;
			return 0;
		}
		if ((b = evbuffer_new()) == NULL)
			return mc_fail(mc, "out of memory");
		if (name != NULL)
			mc_add_str(b, name);
		else {
			snprintf(addr, sizeof(addr), "[%s]", ip != NULL ? ip : "unknown");
			mc_add_str(b, addr);
		}
		if (ip == NULL) {
			evbuffer_add(b, "U", 1);
		} else {
			evbuffer_add(b, strchr(ip, ':') != NULL ? "6" : "4", 1);
			p2[0] = (unsigned char)(pn >> 8);
			p2[1] = (unsigned char)pn;
			evbuffer_add(b, p2, 2);
			mc_add_str(b, ip);
		}
		r = mc_command(mc, SMFIC_CONNECT, b, SMFIP_NOCONNECT, SMFIP_NR_CONN, MP_M_CONNECT);
		evbuffer_free(b);
		return r;
	}
	case STEP_HELO:
		if (mc->await == SMFIC_HELO) {
			mc->await = 0;
			return 0;
		}
		if ((s = h->get(call, PC_HELO)) == NULL)
			return 0;
		if ((b = evbuffer_new()) == NULL)
			return mc_fail(mc, "out of memory");
		mc_add_str(b, s);
		mc->helo_sent = 1;
		r = mc_command(mc, SMFIC_HELO, b, SMFIP_NOHELO, SMFIP_NR_HELO, MP_M_HELO);
		evbuffer_free(b);
		return r;
	case STEP_MAIL:
		if (mc->await == SMFIC_MAIL) {
			mc->await = 0;
			return 0;
		}
		if ((s = h->get(call, PC_SENDER)) == NULL)
			return 0;
		if ((b = evbuffer_new()) == NULL)
			return mc_fail(mc, "out of memory");
		snprintf(addr, sizeof(addr), "<%s>", s);
		mc_add_str(b, addr);
		mc_add_params(b, h->get(call, PC_SENDER_PARAMS));
		mc->mail_sent = 1;
		mc->in_tx = 1;
		r = mc_command(mc, SMFIC_MAIL, b, SMFIP_NOMAIL, SMFIP_NR_MAIL, MP_M_ENVFROM);
		evbuffer_free(b);
		return r;
	case STEP_RCPT:
	case STEP_RCPTS:
		if (mc->await == SMFIC_RCPT) {
			mc->await = 0;
			if (st == STEP_RCPT)
				return 0;
		}
		if (st == STEP_RCPT) {
			s = h->get(call, PC_RCPT);
		} else {
			if ((s = h->rcpt(call, mc->rcpt_i)) == NULL)
				return 0;
			mc->rcpt_i++;
		}
		if (s == NULL)
			return 0;
		if ((b = evbuffer_new()) == NULL)
			return mc_fail(mc, "out of memory");
		snprintf(addr, sizeof(addr), "<%s>", s);
		mc_add_str(b, addr);
		if (st == STEP_RCPT)
			mc_add_params(b, h->get(call, PC_RCPT_PARAMS));
		mc->nrcpt_sent++;
		r = mc_command(mc, SMFIC_RCPT, b, SMFIP_NORCPT, SMFIP_NR_RCPT, MP_M_ENVRCPT);
		evbuffer_free(b);
		/* The next recipient, when this one needs no answer. */
		if (r == 0 && st == STEP_RCPTS)
			return mc_step(mc, st);
		return r;
	case STEP_MESSAGE:
		return mc_pump(mc);
	}
	return 0;
}

/* mc_open - connect (deferred callbacks: the answer comes to mc_eventcb
 * or mc_readcb) and send our option negotiation */
static int
mc_open(struct mconn *mc)
{
	struct milter *m = mc->m;
	const struct pc_host *h = m->host;
	unsigned char neg[12];
	struct evbuffer *b;

	mc->bev =
	    bufferevent_socket_new(h->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (mc->bev == NULL || (b = evbuffer_new()) == NULL)
		return mc_fail(mc, "out of memory");
	bufferevent_setcb(mc->bev, mc_readcb, mc_writecb, mc_eventcb, mc);
	bufferevent_setwatermark(mc->bev, EV_WRITE, MILTER_OUT_HIGH / 2, 0);
	if (bufferevent_socket_connect(mc->bev, (struct sockaddr *)&m->addr, (int)m->addrlen) < 0) {
		int e = EVUTIL_SOCKET_ERROR();
		evbuffer_free(b);
		return mc_fail(mc, "cannot connect to %s: %s", m->where,
		    e != 0 ? evutil_socket_error_to_string(e) : "failed");
	}
	/* Our packets are small and each waits for an answer: without
	 * TCP_NODELAY, Nagle's algorithm holds the next one until the
	 * milter's delayed ACK (~40 ms per message on Linux loopback). */
	if (m->addr.ss_family == AF_INET || m->addr.ss_family == AF_INET6) {
		int one = 1;
		setsockopt(bufferevent_getfd(mc->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	bufferevent_enable(mc->bev, EV_READ | EV_WRITE);
	mp_put32(neg, MP_VERSION);
	mp_put32(neg + 4, MP_ACTIONS_ALL);
	mp_put32(neg + 8, MP_PROTO_OFFER);
	evbuffer_add(b, neg, sizeof(neg));
	mc_send(mc, SMFIC_OPTNEG, b);
	evbuffer_free(b);
	mc->state = CS_OPEN;
	mc->proto = 0;
	mc_wait(mc, SMFIC_OPTNEG, m->t_connect);
	return 1;
}

/*
 * mc_command - send cmd (after the stage's macros) unless the milter
 * switched it off (no); wait for its answer unless it will not give one
 * (nr). 1 waiting, 0 done.
 */
static int
mc_command(struct mconn *mc, unsigned char cmd, struct evbuffer *args, uint32_t no, uint32_t nr,
    int mstage)
{
	if ((mc->proto & no) != 0)
		return 0;
	if (mstage >= 0)
		mc_macros(mc, mstage, cmd);
	mc_send(mc, cmd, args);
	if ((mc->proto & nr) != 0)
		return 0;
	mc_wait(mc, cmd, cmd == SMFIC_BODYEOB ? mc->m->t_eom : mc->m->t_command);
	return 1;
}

/* ---- the message ---- */

/*
 * mc_pump - the message step: DATA, each header field, EOH, the body in
 * chunks, end of message, each sent when the last answer (if one was
 * awaited) came. 1 waiting, 0 done (the end-of-message answer came), -1
 * decided or failed.
 */
static int
mc_pump(struct mconn *mc)
{
	const struct pc_host *h = mc->m->host;
	struct evbuffer *b;
	int r;

	/* The answer to the last command came (to end of message: done). */
	if (mc->await == SMFIC_BODYEOB)
		mc->phase = PH_DONE;
	mc->await = 0;
	if (mc->phase == PH_DATA && mc->in == NULL) {
		h->message_rewind(mc->call);
		if ((mc->in = evbuffer_new()) == NULL)
			return mc_fail(mc, "out of memory");
		mc->eof = 0;
	}
	for (;;) {
		if (mc->phase == PH_DONE) {
			if (mc->in != NULL)
				evbuffer_free(mc->in);
			mc->in = NULL;
			return 0;
		}
		if (evbuffer_get_length(bufferevent_get_output(mc->bev)) > MILTER_OUT_HIGH) {
			/* The milter reads the message at its own pace, within
			 * timeout_command for each part. */
			mc_wait(mc, 0, mc->m->t_command);
			mc->write_wait = 1;
			return 1;
		}
		if ((b = evbuffer_new()) == NULL)
			return mc_fail(mc, "out of memory");
		switch (mc->phase) {
		case PH_DATA:
			mc->phase = PH_HEADERS;
			r = mc_command(mc, SMFIC_DATA, b, SMFIP_NODATA, SMFIP_NR_DATA, MP_M_DATA);
			break;
		case PH_HEADERS:
			if ((r = mc_field(mc, b)) < 0)
				break;
			if (r == 0) {
				mc->phase = PH_EOH;
				break;
			}
			r = mc_command(mc, SMFIC_HEADER, b, SMFIP_NOHDRS, SMFIP_NR_HDR, -1);
			break;
		case PH_EOH:
			mc->phase = PH_BODY;
			r = mc_command(mc, SMFIC_EOH, b, SMFIP_NOEOH, SMFIP_NR_EOH, MP_M_EOH);
			break;
		case PH_BODY:
			if ((mc->proto & SMFIP_NOBODY) != 0 || (r = mc_body_chunk(mc, b)) == 0) {
				mc->phase = PH_EOM;
				r = 0;
				break;
			}
			if (r < 0)
				break;
			r = mc_command(mc, SMFIC_BODY, b, 0, SMFIP_NR_BODY, -1);
			break;
		case PH_EOM:
		default:
			/* Always answered: the verdict and the changes. */
			mc_macros(mc, MP_M_EOM, SMFIC_BODYEOB);
			mc_send(mc, SMFIC_BODYEOB, b);
			mc_wait(mc, SMFIC_BODYEOB, mc->m->t_eom);
			r = 1;
			break;
		}
		evbuffer_free(b);
		if (r != 0)
			return r;
	}
}

/*
 * mc_field - the next header field of the message into out as name\0
 * value\0: the value as written after the colon (one leading blank left
 * out unless the milter asked for SMFIP_HDR_LEADSPC), folded lines joined
 * by LF as Sendmail and Postfix send them. 1 a field, 0 the header section
 * is over (the blank line taken; a line that is no field stays, as body),
 * -1 failed.
 */
static int
mc_field(struct mconn *mc, struct evbuffer *out)
{
	size_t len, eol, nlen, vlen = 0;
	char *line;
	int r, cut = 0;

	if ((r = mc_line(mc, &len, &eol)) <= 0)
		return r;
	line = (char *)evbuffer_pullup(mc->in, (ev_ssize_t)(len + eol));
	if (len == 0) {
		evbuffer_drain(mc->in, eol);
		return 0;
	}
	if ((nlen = mp_field_name(line, len)) == 0)
		return 0; /* not a field: the body starts here */
	evbuffer_add(out, line, nlen);
	evbuffer_add(out, "", 1);
	{
		const char *v = (const char *)memchr(line, ':', len) + 1;
		size_t n = (size_t)(line + len - v);
		if ((mc->proto & SMFIP_HDR_LEADSPC) == 0 && n > 0 && *v == ' ') {
			v++;
			n--;
		}
		evbuffer_add(out, v, n);
		vlen = n;
	}
	evbuffer_drain(mc->in, len + eol);
	/* Continuation lines. */
	while ((r = mc_line(mc, &len, &eol)) > 0) {
		line = (char *)evbuffer_pullup(mc->in, (ev_ssize_t)(len + eol));
		if (len == 0 || (line[0] != ' ' && line[0] != '\t'))
			break;
		if (vlen + 1 + len <= MILTER_FIELD_MAX) {
			evbuffer_add(out, "\n", 1);
			evbuffer_add(out, line, len);
			vlen += 1 + len;
		} else {
			cut = 1;
		}
		evbuffer_drain(mc->in, len + eol);
	}
	if (r < 0)
		return -1;
	if (cut && !mc->cut_logged) {
		mc->cut_logged = 1;
		mc->m->host->log(mc->m->self, mc->call, PC_LOG_INFO,
		    "milter %s: a header field longer than %d octets was cut for the milter "
		    "(the backend gets it whole)",
		    mc->m->name, MILTER_FIELD_MAX);
	}
	evbuffer_add(out, "", 1);
	return 1;
}

/*
 * mc_line - make sure mc->in starts with a whole line: *len its octets
 * without the line end, *eol the line end's (2, 1, or 0 for a last line
 * without one). 1, 0 at the end of the message, -1 failed. A line longer
 * than MILTER_LINE_MAX counts as a line of that length without an end.
 */
static int
mc_line(struct mconn *mc, size_t *len, size_t *eol)
{
	for (;;) {
		struct evbuffer_ptr p = evbuffer_search(mc->in, "\n", 1, NULL);
		size_t have = evbuffer_get_length(mc->in);

		if (p.pos >= 0) {
			unsigned char cr = 0;
			struct evbuffer_ptr q;
			*len = (size_t)p.pos;
			*eol = 1;
			if (*len > 0) {
				evbuffer_ptr_set(mc->in, &q, *len - 1, EVBUFFER_PTR_SET);
				evbuffer_copyout_from(mc->in, &q, &cr, 1);
				if (cr == '\r') {
					(*len)--;
					*eol = 2;
				}
			}
			return 1;
		}
		if (mc->eof || have >= MILTER_LINE_MAX) {
			*len = have;
			*eol = 0;
			return have > 0 ? 1 : 0;
		}
		if (mc_fill(mc) < 0)
			return -1;
	}
}

/* mc_fill - read more of the message into mc->in; 0 or -1 */
static int
mc_fill(struct mconn *mc)
{
	char buf[MILTER_READ];
	ssize_t n = mc->m->host->message_read_current(mc->call, buf, sizeof(buf));

	if (n < 0) {
		mc_fail(mc, "the message could not be read");
		return -1;
	}
	if (n == 0)
		mc->eof = 1;
	else if (evbuffer_add(mc->in, buf, (size_t)n) != 0) {
		mc_fail(mc, "out of memory");
		return -1;
	}
	return 0;
}

/* mc_body_chunk - up to MP_CHUNK_MAX octets of the body into out: 1, 0 at
 * the end, -1 failed */
static int
mc_body_chunk(struct mconn *mc, struct evbuffer *out)
{
	while (evbuffer_get_length(mc->in) < MP_CHUNK_MAX && !mc->eof) {
		if (mc_fill(mc) < 0)
			return -1;
	}
	if (evbuffer_get_length(mc->in) == 0)
		return 0;
	evbuffer_remove_buffer(mc->in, out, MP_CHUNK_MAX);
	return 1;
}

/* ---- the wire ---- */

/* mc_send - one packet: length, command, data (moved out of data) */
static void
mc_send(struct mconn *mc, unsigned char cmd, struct evbuffer *data)
{
	struct evbuffer *out = bufferevent_get_output(mc->bev);
	size_t n = data != NULL ? evbuffer_get_length(data) : 0;
	unsigned char hdr[5];

	mp_put32(hdr, (uint32_t)(n + 1));
	hdr[4] = cmd;
	evbuffer_add(out, hdr, sizeof(hdr));
	if (n > 0)
		evbuffer_add_buffer(out, data);
}

/*
 * mc_macros - SMFIC_MACRO for the command cmd: the milter's own list for
 * the stage if it gave one, else the section's (configured or default);
 * macros without a value now are left out, and no packet goes when none
 * has one.
 */
static void
mc_macros(struct mconn *mc, int mstage, unsigned char cmd)
{
	const char *list =
	    mc->symlist[mstage] != NULL ? mc->symlist[mstage] : mc->m->macros[mstage];
	struct evbuffer *b;
	const char *cur = list, *item;
	size_t n;
	int any = 0;

	if (list == NULL || (b = evbuffer_new()) == NULL)
		return;
	evbuffer_add(b, &cmd, 1);
	while (mc->m->host->opt_list(&cur, &item, &n)) {
		char name[72], buf[600];
		const char *val;
		if (n >= sizeof(name))
			continue;
		memcpy(name, item, n);
		name[n] = '\0';
		if ((val = mc_macro_value(mc, name, buf, sizeof(buf))) == NULL)
			continue;
		mc_add_str(b, name);
		mc_add_str(b, val);
		any = 1;
	}
	if (any)
		mc_send(mc, SMFIC_MACRO, b);
	evbuffer_free(b);
}

/* mc_macro_value - a macro's value now, or NULL if it has none */
static const char *
mc_macro_value(struct mconn *mc, const char *name, char *buf, size_t len)
{
	const struct pc_host *h = mc->m->host;
	struct pc_call *call = mc->call;
	const char *s;

	if (strcmp(name, "j") == 0)
		return h->get(call, PC_HOSTNAME);
	if (strcmp(name, "_") == 0) {
		const char *ip = h->get(call, PC_CLIENT_IP);
		s = h->get(call, PC_CLIENT_NAME);
		snprintf(
		    buf, len, "%s [%s]", s != NULL ? s : "unknown", ip != NULL ? ip : "unknown");
		return buf;
	}
	if (strcmp(name, "i") == 0)
		return h->get(call, PC_TX_ID);
	if (strcmp(name, "v") == 0)
		return "portcullis";
	if (strcmp(name, "{daemon_name}") == 0)
		return mc->m->daemon_name != NULL ? mc->m->daemon_name : h->get(call, PC_HOSTNAME);
	if (strcmp(name, "{daemon_addr}") == 0 || strcmp(name, "{if_addr}") == 0)
		return h->get(call, PC_LOCAL_IP);
	if (strcmp(name, "{daemon_port}") == 0)
		return h->get(call, PC_LOCAL_PORT);
	if (strcmp(name, "{client_addr}") == 0)
		return h->get(call, PC_CLIENT_IP);
	if (strcmp(name, "{client_port}") == 0)
		return h->get(call, PC_CLIENT_PORT);
	if (strcmp(name, "{client_name}") == 0 || strcmp(name, "{client_ptr}") == 0)
		return (s = h->get(call, PC_CLIENT_NAME)) != NULL ? s : "unknown";
	if (strcmp(name, "{tls_version}") == 0)
		return h->get(call, PC_TLS);
	if (strcmp(name, "{cipher}") == 0)
		return h->get(call, PC_TLS_CIPHER);
	if (strcmp(name, "{auth_authen}") == 0)
		return h->get(call, PC_AUTH_USER);
	if (strcmp(name, "{mail_addr}") == 0)
		return h->get(call, PC_SENDER);
	if (strcmp(name, "{rcpt_addr}") == 0)
		return mc->stage == PC_STAGE_RCPT ? h->get(call, PC_RCPT) : NULL;
	return NULL;
}

/* mc_add_str - a string and its NUL */
static void
mc_add_str(struct evbuffer *b, const char *s)
{
	evbuffer_add(b, s, strlen(s) + 1);
}

/* mc_add_params - ESMTP parameters, one string each */
static void
mc_add_params(struct evbuffer *b, const char *params)
{
	const char *p = params;

	while (p != NULL && *p != '\0') {
		size_t n;
		while (*p == ' ')
			p++;
		n = strcspn(p, " ");
		if (n > 0) {
			evbuffer_add(b, p, n);
			evbuffer_add(b, "", 1);
		}
		p += n;
	}
}

/* mc_wait - the answer to cmd is due within ms */
static void
mc_wait(struct mconn *mc, unsigned char cmd, unsigned long long ms)
{
	mc->await = cmd;
	mc->wait_ms = ms;
	mc->deadline_at = mc_now_ms() + ms;
	if (mc->pending)
		mc->m->host->pending_deadline(mc->call, ms);
}

/* mc_readcb - packets from the milter; a hook decided by one is resumed,
 * and the next packet, if any, is for whatever comes after */
static void
mc_readcb(struct bufferevent *bev, void *arg)
{
	struct mconn *mc = arg;

#ifdef TCP_QUICKACK
	/* libmilter writes each change, then the verdict, as packets of their
	 * own with Nagle on: the verdict waits for our ACK of the change,
	 * which Linux delays ~40 ms unless quick ACKs are on (the kernel
	 * turns them off again by itself: set them after every read). */
	if (mc->m->addr.ss_family == AF_INET || mc->m->addr.ss_family == AF_INET6) {
		int one = 1;
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
	}
#endif
	mc->busy++;
	while (mc->bev != NULL && !mc->closed) {
		struct evbuffer *in = bufferevent_get_input(mc->bev);
		unsigned char hdr[5], cmd, *p;
		const unsigned char *d;
		size_t have = evbuffer_get_length(in), dlen, total;
		char err[160];
		int r;

		/* The length alone can be wrong (0): judge it before the
		 * command octet comes, which a broken milter may never send. */
		if (have < 4)
			break;
		evbuffer_copyout(in, hdr, have < 5 ? have : 5);
		if (mp_frame(hdr, have < 5 ? have : 5, &cmd, &d, &dlen, &total, err, sizeof(err)) <
		    0) {
			mc_fail(mc, "protocol error: %s", err);
			mc_done(mc);
			break;
		}
		total = (size_t)mp_get32(hdr) + 4;
		if (have < total)
			break;
		if ((p = evbuffer_pullup(in, (ev_ssize_t)total)) == NULL) {
			mc_fail(mc, "out of memory");
			mc_done(mc);
			break;
		}
		r = mc_packet(mc, p[4], p + 5, total - 5);
		if (mc->bev != NULL)
			evbuffer_drain(in, total);
		if (r != 0)
			mc_done(mc);
	}
	if (--mc->busy == 0 && mc->closed)
		mc_free(mc);
}

/* mc_writecb - the output drained below the mark: the pump goes on */
static void
mc_writecb(struct bufferevent *bev, void *arg)
{
	struct mconn *mc = arg;

	if (!mc->write_wait || mc->call == NULL || mc->closed)
		return;
	mc->busy++;
	mc->write_wait = 0;
	if (mc_run(mc) == 0)
		mc_done(mc);
	if (--mc->busy == 0 && mc->closed)
		mc_free(mc);
}

/* mc_eventcb - connected, closed or failed */
static void
mc_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct mconn *mc = arg;
	int e = EVUTIL_SOCKET_ERROR();

	if ((what & BEV_EVENT_CONNECTED) || mc->closed)
		return;
	mc->busy++;
	if (mc->await == SMFIC_OPTNEG && !(what & BEV_EVENT_EOF))
		mc_fail(mc, "cannot connect to %s: %s", mc->m->where,
		    e != 0 ? evutil_socket_error_to_string(e) : "failed");
	else if (what & BEV_EVENT_EOF)
		mc_fail(mc, "the milter closed the connection%s%s",
		    mc->await != 0 ? " while we waited for the answer to " : "",
		    mc->await != 0 ? mc_cmd_name(mc->await) : "");
	else
		mc_fail(mc, "%s error: %s", what & BEV_EVENT_READING ? "read" : "write",
		    e != 0 ? evutil_socket_error_to_string(e) : "failed");
	mc_done(mc);
	if (--mc->busy == 0 && mc->closed)
		mc_free(mc);
}

/*
 * mc_packet - one packet from the milter: 0 the hook goes on waiting (or
 * there is none), 1 the hook is decided (mc->v) and mc_done resumes it.
 */
static int
mc_packet(struct mconn *mc, unsigned char cmd, const unsigned char *d, size_t n)
{
	struct mp_reply r;
	char err[160];

	if (mc->await == 0 || mc->write_wait)
		return mc_fail(mc, "protocol error: an answer ('%c') nobody asked for",
		           cmd > 0x20 && cmd < 0x7f ? cmd : '?') < 0;
	if (mc->await == SMFIC_OPTNEG) {
		if (cmd != SMFIC_OPTNEG)
			return mc_fail(mc,
			           "protocol error: an answer ('%c') to option negotiation "
			           "that is no negotiation",
			           cmd > 0x20 && cmd < 0x7f ? cmd : '?') < 0;
		return mc_optneg(mc, d, n);
	}
	if (mp_reply_parse(cmd, d, n, &r, err, sizeof(err)) < 0)
		return mc_fail(mc, "protocol error: %s", err) < 0;
	return mc_answer(mc, &r);
}

/* mc_optneg - the milter's negotiation: keep what it wants, go on */
static int
mc_optneg(struct mconn *mc, const unsigned char *d, size_t n)
{
	struct mp_optneg o;
	char err[200];

	if (mp_optneg_parse(d, n, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err, sizeof(err)) < 0)
		return mc_fail(mc, "protocol error: %s", err) < 0;
	if (o.dropped_actions != 0 || o.dropped_protocol != 0)
		mc->m->host->log(mc->m->self, mc->call, PC_LOG_DEBUG,
		    "milter %s: asked for actions 0x%lx and steps 0x%lx we do not offer: left out",
		    mc->m->name, (unsigned long)o.dropped_actions,
		    (unsigned long)o.dropped_protocol);
	mc->actions = o.actions;
	mc->proto = o.protocol;
	for (int i = 0; i < MP_M_COUNT; i++) {
		char bad[80];
		if (o.symlist[i] == NULL)
			continue;
		free(mc->symlist[i]);
		mc->symlist[i] =
		    macro_list(mc->m->host, o.symlist[i], o.symlen[i], bad, sizeof(bad));
		if (mc->symlist[i] == NULL)
			return mc_fail(mc, "protocol error: a bad macro name \"%s\" in its list",
			           bad) < 0;
	}
	mc->await = 0;
	mc->cur++; /* STEP_OPEN is done */
	return mc_run(mc) == 0;
}

/*
 * mc_answer - an answer to the command awaited: a change (only to end of
 * message), progress, skip, or the verdict that ends the command.
 */
static int
mc_answer(struct mconn *mc, const struct mp_reply *r)
{
	unsigned char cmd = mc->await;
	int eom = cmd == SMFIC_BODYEOB;
	char reply[PC_REPLY_MAX + 2];
	size_t n;

	switch (r->code) {
	case SMFIR_PROGRESS:
		mc_wait(mc, cmd, mc->wait_ms);
		return 0;
	case SMFIR_SKIP:
		if (cmd != SMFIC_BODY)
			return mc_fail(mc, "protocol error: skip in answer to %s",
			           mc_cmd_name(cmd)) < 0;
		mc->phase = PH_EOM;
		mc->await = 0;
		return mc_run(mc) == 0;
	case SMFIR_CONTINUE:
		if (eom)
			mc->in_tx = 0;
		return mc_run(mc) == 0;
	case SMFIR_ACCEPT:
		/* Nothing more to ask this milter: in this session at connect
		 * and HELO, in this transaction after. The chain goes on. */
		if (cmd == SMFIC_CONNECT || cmd == SMFIC_HELO)
			mc->state = CS_ACCEPTED;
		else
			mc->tx_accepted = 1;
		return mc_verdict(mc, PC_CONTINUE, NULL);
	case SMFIR_REJECT:
		return mc_verdict(mc, PC_REJECT, "550 5.7.1 Command rejected");
	case SMFIR_TEMPFAIL:
		return mc_verdict(
		    mc, PC_TEMPFAIL, "451 4.7.1 Service unavailable - try again later");
	case SMFIR_DISCARD:
		/* At RCPT it is about the message, not the recipient. */
		if (cmd == SMFIC_RCPT)
			mc->tx_discard = 1;
		return mc_verdict(mc, PC_DROP, NULL);
	case SMFIR_SHUTDOWN:
	case SMFIR_CONN_FAIL:
		return mc_verdict(mc, PC_DISCONNECT, NULL);
	case SMFIR_REPLYCODE:
		/* "550 5.7.1 text", perhaps several lines (smfi_setmlreply,
		 * CR LF between them): the first line, as one final line. A
		 * bare CR or LF in it stays, and the host refuses the reply
		 * (on_error): it is no reply a milter library writes. */
		{
			const char *crlf = strstr(r->s[0], "\r\n");
			n = crlf != NULL ? (size_t)(crlf - r->s[0]) : strlen(r->s[0]);
		}
		if (n > PC_REPLY_MAX)
			n = PC_REPLY_MAX + 1;
		memcpy(reply, r->s[0], n);
		reply[n] = '\0';
		if (n > 3 && reply[3] == '-')
			reply[3] = ' ';
		if (reply[0] == '4')
			return mc_verdict(mc, PC_TEMPFAIL, reply);
		if (reply[0] == '5')
			return mc_verdict(mc, PC_REJECT, reply);
		return mc_fail(
		           mc, "protocol error: reply code \"%.40s\" is not 4xx or 5xx", reply) < 0;
	default:
		if (!eom)
			return mc_fail(mc, "protocol error: a change ('%c') in answer to %s",
			           r->code, mc_cmd_name(cmd)) < 0;
		return mc_change(mc, r) < 0;
	}
}

/* mc_change - a change at end of message, as the host's message changes;
 * 0, or -1 (failed: the milter asked for what it did not negotiate, or
 * for a change the host refuses) */
static int
mc_change(struct mconn *mc, const struct mp_reply *r)
{
	static const struct {
		unsigned char code;
		uint32_t action;
	} need[] = {{SMFIR_ADDHEADER, SMFIF_ADDHDRS}, {SMFIR_INSHEADER, SMFIF_ADDHDRS},
	    {SMFIR_CHGHEADER, SMFIF_CHGHDRS}, {SMFIR_ADDRCPT, SMFIF_ADDRCPT},
	    {SMFIR_ADDRCPT_PAR, SMFIF_ADDRCPT_PAR}, {SMFIR_DELRCPT, SMFIF_DELRCPT},
	    {SMFIR_CHGFROM, SMFIF_CHGFROM}, {SMFIR_REPLBODY, SMFIF_CHGBODY},
	    {SMFIR_QUARANTINE, SMFIF_QUARANTINE}};
	const struct pc_host *h = mc->m->host;
	struct pc_call *call = mc->call;
	const char *value = r->ns >= 2 ? r->s[1] : NULL;
	char addr[600];
	int rc = 0;

	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		if (need[i].code == r->code && (mc->actions & need[i].action) == 0)
			return mc_fail(
			    mc, "protocol error: a change ('%c') it did not negotiate", r->code);
	}
	/* Without SMFIP_HDR_LEADSPC the milter writes the value without the
	 * blank after the colon, and we put one there; with it, the value
	 * brings its own. */
	if (value != NULL && (mc->proto & SMFIP_HDR_LEADSPC) != 0 && value[0] == ' ')
		value++;
	switch (r->code) {
	/* Indices count the fields the milter saw: the message as it stands,
	 * with the changes of the filters before it and its own so far. */
	case SMFIR_ADDHEADER:
		rc = h->insert_header_current(call, (size_t)-1, r->s[0], value);
		break;
	case SMFIR_INSHEADER:
		rc = h->insert_header_current(call, r->index, r->s[0], value);
		break;
	case SMFIR_CHGHEADER: {
		size_t idx = r->index > 0 ? r->index - 1 : 0;
		if (value[0] == '\0') {
			/* Deleting a field that is not there is nothing. */
			h->change_header_current(call, r->s[0], idx, NULL);
			return 0;
		}
		if (h->change_header_current(call, r->s[0], idx, value) != 0) {
			/* No such field (Sendmail and Postfix add it), or a
			 * value the host refuses (which adding fails on too). */
			rc = h->insert_header_current(call, (size_t)-1, r->s[0], value);
		}
		break;
	}
	case SMFIR_ADDRCPT:
	case SMFIR_ADDRCPT_PAR:
		if (mc_addr(r->s[0], addr, sizeof(addr)) == NULL)
			rc = -1;
		else
			rc = h->add_rcpt(
			    call, addr, value != NULL && value[0] != '\0' ? value : NULL);
		break;
	case SMFIR_DELRCPT:
		if (mc_addr(r->s[0], addr, sizeof(addr)) == NULL || h->delete_rcpt(call, addr) != 0)
			h->log(mc->m->self, call, PC_LOG_INFO,
			    "milter %s: delete recipient %.300s: no such recipient (ignored)",
			    mc->m->name, r->s[0]);
		return 0;
	case SMFIR_CHGFROM:
		if (mc_addr(r->s[0], addr, sizeof(addr)) == NULL)
			rc = -1;
		else
			rc = h->change_sender(call, addr, value);
		break;
	case SMFIR_REPLBODY:
		if (!mc->body_started) {
			if (h->body_replace_begin(call) != 0)
				return mc_fail(mc, "the body could not be replaced");
			mc->body_started = 1;
		}
		if (r->dlen > 0 && h->body_replace_write(call, (const char *)r->data, r->dlen) != 0)
			return mc_fail(mc,
			    "the new body was refused (a bare CR or NUL, or too "
			    "large)");
		return 0;
	case SMFIR_QUARANTINE:
		h->log(mc->m->self, call, PC_LOG_INFO, "milter %s: quarantined: %.300s",
		    mc->m->name, r->s[0]);
		rc = h->add_header(
		    call, mc->m->quarantine_header, r->s[0][0] != '\0' ? r->s[0] : "quarantined");
		if (rc != 0)
			rc = h->add_header(call, mc->m->quarantine_header, "quarantined");
		break;
	}
	if (rc != 0)
		return mc_fail(mc,
		    "the change ('%c' %.100s) was refused: a bad name, value or "
		    "address, or too many changes",
		    r->code, r->s[0] != NULL ? r->s[0] : "");
	return 0;
}

/* mc_verdict - the hook is decided: 1 (mc_done resumes) */
static int
mc_verdict(struct mconn *mc, enum pc_action a, const char *reply)
{
	if (mc->await == SMFIC_BODYEOB)
		mc->in_tx = 0;
	mc->await = 0;
	mc->v.action = a;
	if (reply != NULL) {
		snprintf(mc->reply, sizeof(mc->reply), "%s", reply);
		mc->v.reply = mc->reply;
	} else {
		mc->v.reply = NULL;
	}
	mc->cur = mc->nsteps;
	if (mc->in != NULL)
		evbuffer_free(mc->in);
	mc->in = NULL;
	return 1;
}

/* mc_fail - close the connection, fail this stage and every later one;
 * returns -1 */
static int
mc_fail(struct mconn *mc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(mc->why, sizeof(mc->why), fmt, ap);
	va_end(ap);
	mc->m->host->log(mc->m->self, mc->call, PC_LOG_DEBUG, "milter %s: %s; connection closed",
	    mc->m->name, mc->why);
	mc_close_conn(mc, 0);
	mc->state = CS_FAILED;
	mc->v.action = PC_FAIL;
	mc->v.reply = mc->why;
	mc->cur = mc->nsteps;
	mc->await = 0;
	return -1;
}

/* mc_done - from a callback: the hook in flight, if any, is decided */
static void
mc_done(struct mconn *mc)
{
	struct pc_call *call = mc->call;
	struct pc_verdict v = mc->v;

	if (call == NULL || !mc->pending)
		return;
	if (v.action == PC_CONTINUE && mc->stage == PC_STAGE_DATA && mc->body_started) {
		if (mc->m->host->body_replace_end(call) != 0) {
			mc_fail(mc, "the new body could not be completed");
			v = mc->v;
		}
	}
	mc->body_started = 0;
	mc->call = NULL;
	mc->pending = 0;
	mc->m->host->resume(call, &v);
}

/* mc_cancel - the host gave up on the call (our deadline passed, or the
 * session is going away): the conversation is mid-command, so it ends */
static void
mc_cancel(void *arg)
{
	struct mconn *mc = arg;
	unsigned long long now = mc_now_ms();

	if (mc->await != 0 && now + 50 >= mc->deadline_at)
		snprintf(mc->why, sizeof(mc->why), "no answer to %s within %llu ms",
		    mc_cmd_name(mc->await), mc->wait_ms);
	else
		snprintf(mc->why, sizeof(mc->why), "the session stopped waiting for the milter");
	/* The call is dead here (plugin.h): no logging with it. */
	mc->m->host->log(mc->m->self, NULL, PC_LOG_INFO,
	    "milter %s: %s; connection closed (session %s)", mc->m->name, mc->why, mc->sid);
	mc->call = NULL;
	mc->pending = 0;
	mc->body_started = 0;
	mc_close_conn(mc, 0);
	mc->state = CS_FAILED;
	mc->await = 0;
}

/* mc_close_conn - close the connection (after SMFIC_QUIT, when quit and
 * the output is empty, written at once without waiting) */
static void
mc_close_conn(struct mconn *mc, int quit)
{
	if (mc->bev == NULL)
		return;
	if (quit) {
		/* What is queued (an ABORT) and QUIT, written once without
		 * waiting: a milter that does not read sees the close. */
		struct evbuffer *out = bufferevent_get_output(mc->bev);
		evutil_socket_t fd = bufferevent_getfd(mc->bev);

		mc_send(mc, SMFIC_QUIT, NULL);
		/* A bufferevent keeps the start of its output frozen outside
		 * its own write callback: evbuffer_write would fail untried. */
		evbuffer_unfreeze(out, 1);
		if (fd >= 0)
			(void)evbuffer_write(out, fd);
	}
	bufferevent_free(mc->bev);
	mc->bev = NULL;
	if (mc->in != NULL)
		evbuffer_free(mc->in);
	mc->in = NULL;
}

/* mc_tx_clear - a new transaction */
static void
mc_tx_clear(struct mconn *mc)
{
	mc->mail_sent = 0;
	mc->nrcpt_sent = 0;
	mc->tx_accepted = 0;
	mc->tx_discard = 0;
	mc->phase = PH_DATA;
	mc->cut_logged = 0;
}

/* milter_reset - the transaction ended: SMFIC_ABORT if the milter is in
 * the middle of one (MAIL went out, no end-of-message answer came) */
static void
milter_reset(void *instance, struct pc_call *call)
{
	struct milter *m = instance;
	struct mconn *mc = *m->host->session_data(call);

	if (mc == NULL)
		return;
	if (mc->in_tx && mc->state == CS_OPEN && mc->bev != NULL)
		mc_send(mc, SMFIC_ABORT, NULL);
	mc->in_tx = 0;
	mc_tx_clear(mc);
}

/* milter_close - the session ended: SMFIC_QUIT, close, free (later, if a
 * callback of ours is still on the stack) */
static void
milter_close(void *instance, struct pc_call *call)
{
	struct milter *m = instance;
	void **slot = m->host->session_data(call);
	struct mconn *mc = *slot;

	*slot = NULL;
	if (mc == NULL)
		return;
	mc_close_conn(mc, mc->state == CS_OPEN || mc->state == CS_ACCEPTED);
	mc->call = NULL;
	mc->pending = 0;
	mc->closed = 1;
	if (mc->busy == 0)
		mc_free(mc);
}

/* mc_free - the session's connection state */
static void
mc_free(struct mconn *mc)
{
	for (int i = 0; i < MP_M_COUNT; i++)
		free(mc->symlist[i]);
	free(mc);
}

/* ---- small things ---- */

/* mc_cmd_name - a command, for logs */
static const char *
mc_cmd_name(unsigned char cmd)
{
	switch (cmd) {
	case SMFIC_OPTNEG:
		return "option negotiation";
	case SMFIC_CONNECT:
		return "connect";
	case SMFIC_HELO:
		return "HELO";
	case SMFIC_MAIL:
		return "MAIL";
	case SMFIC_RCPT:
		return "RCPT";
	case SMFIC_DATA:
		return "DATA";
	case SMFIC_HEADER:
		return "a header field";
	case SMFIC_EOH:
		return "end of headers";
	case SMFIC_BODY:
		return "a body chunk";
	case SMFIC_BODYEOB:
		return "end of message";
	}
	return "a command";
}

/* mc_addr - an address a milter wrote ("<a@b>" or "a@b") without the
 * angle brackets, or NULL if it does not fit */
static char *
mc_addr(const char *s, char *buf, size_t len)
{
	size_t n = strlen(s);

	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
		s++;
		n -= 2;
	}
	if (n >= len)
		return NULL;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return buf;
}

/* mc_now_ms - a monotonic clock */
static unsigned long long
mc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000 + (unsigned long long)ts.tv_nsec / 1000000;
}
