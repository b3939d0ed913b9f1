/*
 * commands.c - the SMTP commands a session serves: the command table, and
 * each command's check and proceed steps (HELO/EHLO, MAIL, RCPT, RSET, NOOP,
 * QUIT, HELP, VRFY, STARTTLS, and the ones we refuse). DATA is in data.c,
 * AUTH in auth.c. A check answers errors itself; proceed usually sends one
 * backend command and relays its reply. MAIL and RCPT do not wait for theirs
 * (a flight, session.c): the next MAIL or RCPT the client pipelined may go
 * behind them.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "log.h"
#include "metrics.h"
#include "replies.h"
#include "session.h"

static int check_helo(struct session *s);
static void on_helo(void *arg, enum backend_result res, const struct smtp_reply *r);
static void helo_reply(struct session *s, const struct smtp_caps *caps);
static long long size_param(const struct smtp_param *p);
static int xtext_valid(const char *v, size_t len);
static int param_is(const struct smtp_param *p, const char *kw);
static int mail_params_check(struct session *s);
static int path_error(struct session *s, enum smtp_path_result r, const struct reply *syntax,
    const struct reply *bad);
static unsigned long long mail_size_limit(struct session *s);
static int check_mail(struct session *s);
static void proceed_mail(struct session *s);
static void on_mail(void *arg, enum backend_result res, const struct smtp_reply *r);
static int check_rcpt(struct session *s);
static int rcpt_refused(struct session *s);
static void proceed_rcpt(struct session *s);
static void on_rcpt(void *arg, enum backend_result res, const struct smtp_reply *r);
static int check_starttls(struct session *s);
static void proceed_starttls(struct session *s);
static int check_noargs(struct session *s);
static void proceed_rset(struct session *s);
static void on_rset(void *arg, enum backend_result res, const struct smtp_reply *r);
static void proceed_noop(struct session *s);
static void proceed_quit(struct session *s);
static void proceed_help(struct session *s);
static void proceed_vrfy(struct session *s);
static void proceed_not_impl(struct session *s);
static void proceed_refused(struct session *s);
static void proceed_unknown(struct session *s);

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

/* Not commands, but stages all the same: the connection, and the end of
 * DATA. They run through the same check -> hooks -> proceed (session_run)
 * as the commands above, and their verdicts through the same
 * session_verdict. */
static const struct command events[] = {
    {SMTP_VERB_UNKNOWN, check_any, HOOK_CONNECT, proceed_connect},
    {SMTP_VERB_DATA, check_data_end, HOOK_DATA, data_proceed},
};

/* command_event - the row for the connection (HOOK_CONNECT) or the end of
 * DATA (HOOK_DATA) */
const struct command *
command_event(enum hook_stage stage)
{
	return stage == HOOK_CONNECT ? &events[0] : &events[1];
}

/* command_find - the table's entry for a verb ("unknown" for any verb we
 * parse but do not serve) */
const struct command *
command_find(enum smtp_verb verb)
{
	size_t n = sizeof(commands) / sizeof(commands[0]);

	for (size_t i = 0; i < n; i++) {
		if (commands[i].verb == verb)
			return &commands[i];
	}
	return &commands[n - 1];
}

/* ---- HELO / EHLO ---- */

static int
check_helo(struct session *s)
{
	if (s->cmd.arg_len == 0) {
		session_say(s, s->cmd.verb == SMTP_VERB_EHLO ? R_EHLO_SYNTAX : R_HELO_SYNTAX);
		return PC_ERROR;
	}
	return PC_OK;
}

void
proceed_helo(struct session *s)
{
	/* RFC 5321 §4.1.4: a new EHLO resets the transaction, here and there. */
	tx_end(s, "aborted", "new HELO/EHLO");
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
	s->be_client = (struct backend_client){
	    .ip = s->client_ip,
	    .port = s->client_port,
	    .rdns = &s->rdns,
	    .helo = s->cmd.arg,
	    .helo_len = s->cmd.arg_len,
	    .esmtp = s->cmd.verb == SMTP_VERB_EHLO,
	    .login = s->auth_user,
	};
	backend_greet(&s->be, &s->be_client, on_helo);
}

static void
on_helo(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
	const struct smtp_caps *caps = &s->be.caps;

	if (res == BACKEND_TLS_FAILED) {
		session_close(s, R_BACKEND_DOWN);
		s->busy = 0;
		return;
	}
	if (res == BACKEND_XCLIENT_REFUSED) {
		tx_end(s, "tempfail", "backend refused XCLIENT");
		session_close(s, R_BACKEND_XCLIENT);
		s->busy = 0;
		return;
	}
	if (!session_backend_ok(s, res, r, "245"))
		return;
	if (r->code / 100 != 2) {
		session_relay(s, r);
		session_done(s);
		return;
	}
	/* Whether later sessions should look their client up at connect. */
	s->srv->backend_xclient_name = caps->xclient && xclient_has(caps, "NAME");
	free(s->helo);
	s->helo = strndup(s->cmd.arg, s->cmd.arg_len);
	s->ehlo = s->cmd.verb == SMTP_VERB_EHLO;
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
		const struct reply *reply = NULL;

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
			session_say(s, reply);
			return PC_ERROR;
		}
	}
	return PC_OK;
}

/* path_error - the reply for a path that did not parse */
static int
path_error(
    struct session *s, enum smtp_path_result r, const struct reply *syntax, const struct reply *bad)
{
	char q[200];

	switch (r) {
	case SMTP_PATH_ETOOLONG:
		session_say(s, R_PATH_TOO_LONG);
		break;
	case SMTP_PATH_EPARAM:
	case SMTP_PATH_ETOOMANY:
		session_say(s, R_BAD_PARAM);
		break;
	default:
		session_say(s, s->cmd.arg_len < 3 || !strchr(s->cmd.arg, ':') ? syntax : bad);
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
		session_say(s, R_NEED_HELO);
		return PC_ERROR;
	}
	if (s->tx.active || s->tx.mail_pending) {
		session_say(s, R_NESTED_MAIL);
		return PC_ERROR;
	}
	if (s->cfg->tls_required && s->tls_proto == NULL) {
		session_say(s, R_NEED_TLS);
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
		session_say(s, R_NEED_SMTPUTF8);
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
		session_say(s, R_DROP_MAIL);
		session_done(s);
		return;
	}
	if (s->tx.sender == NULL || s->tx.sender_params == NULL) {
		log_err(s->id, "out of memory recording the sender");
		session_say(s, R_LOCAL_ERROR);
		tx_end(s, "tempfail", "out of memory");
		session_done(s);
		return;
	}
	if (fly_push(s, SMTP_VERB_MAIL, NULL) != PC_OK) {
		log_err(s->id, "out of memory sending MAIL");
		session_say(s, R_LOCAL_ERROR);
		tx_end(s, "tempfail", "out of memory");
		session_done(s);
		return;
	}
	s->tx.mail_pending = 1;
	/* The canonical form of what the client sent, whatever its length
	 * (within max_line_length): never cut, never padded. */
	backend_commandf(&s->be, s->cfg->backend_timeout_ms, on_mail, "MAIL FROM:<%s>%s%s",
	    s->path.addr, params[0] ? " " : "", params);
	session_done(s); /* the reply relays when it comes: on_mail */
}

static void
on_mail(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
	struct transaction *tx = &s->tx;
	struct flight f;

	fly_pop(s, &f);
	tx->mail_pending = 0;
	if (!session_backend_ok(s, res, r, "245")) {
		fly_land(s, &f);
		return;
	}
	session_relay(s, r);
	if (r->code / 100 == 2) {
		tx->active = 1;
		tx->forwarded = 1;
	} else {
		char text[SMTP_REPLY_LINE_MAX + 8];
		const char *status = r->code / 100 == 4 ? "tempfail" : "rejected";
		reply_text(r, text, sizeof(text));
		if (s->busy) {
			/* A pipelined RCPT is in its hooks, which still read this
			 * transaction: it ends when they are done (session_done). */
			if ((tx->mail_refused = strdup(text)) == NULL)
				tx_log(s, status, text);
		} else {
			tx_log(s, status, text); /* never active: tx_end would not log it */
			tx_end(s, status, text);
		}
	}
	fly_land(s, &f);
}

/* ---- RCPT ---- */

static int
check_rcpt(struct session *s)
{
	if (!s->tx.active && !s->tx.mail_pending) {
		session_say(s, R_NEED_MAIL);
		return PC_ERROR;
	}
	/* In a transaction, a recipient we refuse ourselves is counted as one
	 * refused here (a filter's refusal is counted in session_verdict). */
	if (rcpt_refused(s)) {
		metrics_inc(M_RCPT_REFUSED_PROXY);
		return PC_ERROR;
	}
	return PC_OK;
}

/* rcpt_refused - our own checks of an RCPT in a transaction: 1 when one
 * failed (its reply said), else 0 */
static int
rcpt_refused(struct session *s)
{
	enum smtp_path_result r;

	r = smtp_parse_path(s->cmd.arg, s->cmd.arg_len, "TO:", 0, 1, &s->path);
	if (r != SMTP_PATH_OK) {
		path_error(s, r, R_RCPT_SYNTAX, R_BAD_RCPT);
		return 1;
	}
	if (smtp_utf8_check(s->path.addr, s->path.addr_len) > 0 && !s->tx.smtputf8) {
		session_say(s, R_NEED_SMTPUTF8);
		return 1;
	}
	/* We advertise no RCPT extension (no DSN): refuse their parameters. */
	if (s->path.nparams > 0) {
		session_say(s, R_PARAM_UNSUPPORTED);
		return 1;
	}
	/* The recipient limit stops one message fanning out without bound. */
	if (s->tx.nrcpt + s->tx.nrcpt_dropped + s->tx.rcpt_inflight >= s->cfg->max_recipients) {
		log_info(s->tx.id, "max_recipients (%llu) reached",
		    (unsigned long long)s->cfg->max_recipients);
		session_say(s, R_TOO_MANY_RCPT);
		return 1;
	}
	return 0;
}

static void
proceed_rcpt(struct session *s)
{
	s->tx.rcpt_tried++;
	if (s->tx.dropped) { /* a drop at MAIL or before: 250 and forget */
		s->tx.nrcpt_dropped++;
		tx_add_rcpt(s, s->path.addr, 1);
		session_say(s, R_DROP_RCPT);
		session_done(s);
		return;
	}
	if (fly_push(s, SMTP_VERB_RCPT, s->path.addr) != PC_OK) {
		log_err(s->id, "out of memory sending RCPT");
		session_say(s, R_LOCAL_ERROR);
		session_done(s);
		return;
	}
	s->tx.rcpt_inflight++;
	/* check_rcpt refused every parameter: the path alone. */
	backend_commandf(&s->be, s->cfg->backend_timeout_ms, on_rcpt, "RCPT TO:<%s>", s->path.addr);
	session_done(s); /* the reply relays when it comes: on_rcpt */
}

static void
on_rcpt(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
	struct transaction *tx = &s->tx;
	const char *id = tx->id[0] != '\0' ? tx->id : s->id;
	struct flight f;
	char a[LOG_ADDR_MAX];

	fly_pop(s, &f);
	if (tx->rcpt_inflight > 0)
		tx->rcpt_inflight--;
	if (!session_backend_ok(s, res, r, "245")) {
		fly_land(s, &f);
		return;
	}
	session_relay(s, r);
	if (r->code / 100 == 2 && tx->active) {
		tx_add_rcpt(s, f.addr, 0);
	} else if (r->code / 100 == 2) {
		/* The backend refused the MAIL before it, yet took this. */
		log_warn(id, "to=<%s> accepted by the backend after it refused MAIL",
		    log_quote(a, sizeof(a), f.addr, strlen(f.addr)));
	} else {
		/* Postfix's "NOQUEUE: reject: RCPT": the refusal is part of
		 * what happened to this message. */
		char q[600], text[SMTP_REPLY_LINE_MAX + 8];
		metrics_inc(M_RCPT_REFUSED_BACKEND);
		log_info(id, "to=<%s> %s by the backend reply=\"%s\"",
		    log_quote(a, sizeof(a), f.addr, strlen(f.addr)),
		    r->code / 100 == 4 ? "tempfail" : "rejected",
		    log_quote(q, sizeof(q), text, reply_text(r, text, sizeof(text))));
	}
	fly_land(s, &f);
}

/* ---- STARTTLS (RFC 3207) ---- */

static int
check_starttls(struct session *s)
{
	if (s->cmd.arg_len != 0) {
		session_say(s, R_NO_ARGS);
		return PC_ERROR;
	}
	if (s->tls_proto != NULL) {
		session_say(s, R_TLS_ACTIVE);
		return PC_ERROR;
	}
	if (s->srv->tls_server == NULL) {
		session_say(s, R_NOT_IMPL);
		return PC_ERROR;
	}
	return PC_OK;
}

static void
proceed_starttls(struct session *s)
{
	size_t early = evbuffer_get_length(s->client->in);

	session_say(s, R_TLS_GO);
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

/* ---- the rest ---- */

static int
check_noargs(struct session *s)
{
	if (s->cmd.arg_len != 0) {
		session_say(s, R_NO_ARGS);
		return PC_ERROR;
	}
	return PC_OK;
}

int
check_any(struct session *s)
{
	return PC_OK;
}

static void
proceed_rset(struct session *s)
{
	tx_end(s, "aborted", "RSET");
	if (s->blackhole) {
		session_say(s, R_OKAY);
		session_done(s);
		return;
	}
	backend_command(&s->be, "RSET", 4, s->cfg->backend_timeout_ms, on_rset);
}

static void
on_rset(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
	if (!session_backend_ok(s, res, r, "245"))
		return;
	session_relay(s, r);
	session_done(s);
}

static void
proceed_noop(struct session *s)
{
	session_say(s, R_OKAY);
	session_done(s);
}

static void
proceed_quit(struct session *s)
{
	tx_end(s, "aborted", "QUIT");
	log_info(s->id, "disconnect from client=%s commands=%lu", s->peer, s->ncommands);
	session_say(s, R_BYE); /* and close: R_BYE closes */
	s->busy = 0;
}

static void
proceed_help(struct session *s)
{
	session_say(s, R_HELP);
	session_done(s);
}

static void
proceed_vrfy(struct session *s)
{
	session_say(s, s->cmd.arg_len ? R_VRFY : R_VRFY_SYNTAX);
	session_done(s);
}

static void
proceed_not_impl(struct session *s)
{
	session_say(s, R_NOT_IMPL);
	session_done(s);
}

static void
proceed_refused(struct session *s)
{
	log_warn(s->id, "client=%s sent %s: refused", s->peer, smtp_verb_name(s->cmd.verb));
	session_say(s, R_REFUSED_CMD);
	session_done(s);
}

static void
proceed_unknown(struct session *s)
{
	char q[64];

	log_info(s->id, "unknown command from client=%s: \"%s\"", s->peer,
	    log_quote(q, sizeof(q), s->cmd.verb_text, s->cmd.verb_len));
	session_say(s, R_UNKNOWN);
	session_done(s);
}
