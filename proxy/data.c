/*
 * data.c - DATA: our own 354, the message read through the framer
 * (dataread.c) into the spool, the end-of-DATA stage, and the message sent
 * to the backend, or refused with RSET so the backend never sees a partial
 * one (DESIGN.md §2). A backend that offers CHUNKING gets the message as
 * one "BDAT n LAST" (RFC 3030) in the same write as the command: one round
 * trip, not two. BDAT carries the message as it is, without dot-stuffing:
 * the spool holds the wire form, which is the message itself unless a line
 * began with "." (the framer counts those dots), so the spool is handed over
 * as it is (one copy) and un-stuffed only when it has to be.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "edit.h"
#include "log.h"
#include "metrics.h"
#include "replies.h"
#include "session.h"

static void data_emit(void *arg, const char *bytes, size_t len);
static const struct reply *tx_index(struct session *s);
static void on_data_refused(void *arg, enum backend_result res, const struct smtp_reply *r);
static void on_data_go(void *arg, enum backend_result res, const struct smtp_reply *r);
static int data_emit_message(struct session *s, struct evbuffer *out);
static void on_data_final(void *arg, enum backend_result res, const struct smtp_reply *r);
static void data_send(struct session *s);
static int data_unstuffed(struct session *s, struct evbuffer *out);
static void on_bdat_final(void *arg, enum backend_result res, const struct smtp_reply *r);
static void on_bdat_rset(void *arg, enum backend_result res, const struct smtp_reply *r);
static int data_thresholds(struct session *s);
static int replay_deleted(const struct chain_envelope *e, const char *addr);
static void replay_fail(struct session *s, const char *what, const struct smtp_reply *r);
static void replay_next(struct session *s);
static void on_replay_rset(void *arg, enum backend_result res, const struct smtp_reply *r);
static void on_replay_mail(void *arg, enum backend_result res, const struct smtp_reply *r);
static void on_replay_rcpt(void *arg, enum backend_result res, const struct smtp_reply *r);

/* line_has_cr - does the line of len octets before the LF end in CR? */
int
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
int
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
			int r = dataread_feed(s->tx.framer, vec[i].iov_base, vec[i].iov_len, &used);
			evbuffer_drain(in, used);
			if (r == PC_OK) {
				evtimer_del(s->timer);
				data_end(s);
				return PC_OK;
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

/* ---- DATA ---- */

/* data_refusal - why DATA would not get our 354; NULL if it would */
const struct reply *
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

int
check_data(struct session *s)
{
	const struct reply *refuse = data_refusal(s);

	if (refuse != NULL) {
		session_say(s, refuse);
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
void
proceed_data(struct session *s)
{
	struct config *cfg = s->cfg;
	struct transaction *tx = &s->tx;

	free(tx->framer);
	if ((tx->framer = malloc(sizeof(*tx->framer))) == NULL ||
	    spool_open(&tx->spool, cfg->spool_memory, cfg->spool_dir) != 0) {
		log_err(tx->id, "out of memory opening the spool");
		session_say(s, R_LOCAL_ERROR);
		session_done(s);
		return;
	}
	tx->spool_open = 1;
	dataread_init(tx->framer,
	    cfg->bare_lf == CONFIG_BARE_LF_NORMALIZE ? DATAREAD_NORMALIZE : DATAREAD_REJECT,
	    cfg->max_message_size, cfg->max_data_line_length, data_emit, s);
	session_say(s, R_DATA_GO);
	s->state = SESSION_DATA;
	evtimer_del(s->timer);
	session_arm(s, cfg->data_timeout_ms);
	session_done(s);
}

/* data_end - the client sent CR LF "." CR LF: the end-of-DATA stage */
void
data_end(struct session *s)
{
	s->busy = 1;
	s->state = SESSION_COMMAND;
	session_run(s, command_event(HOOK_DATA));
}

/* check_data_end - is the message fit for the hooks and the backend?
 * If not, it is refused (PC_AGAIN: data_refuse answers) */
int
check_data_end(struct session *s)
{
	struct transaction *tx = &s->tx;
	struct dataread *d = tx->framer;
	const struct reply *refuse = NULL;

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
	/* Each kind a refused message had counts once: bytes that could end
	 * the message early at a backend, or hide content from filters. */
	if (d->errors & DATAREAD_ENUL)
		metrics_inc(M_SMUGGLE_NUL);
	if (d->errors & DATAREAD_EBARE_LF)
		metrics_inc(M_SMUGGLE_BARE_LF);
	if (d->errors & DATAREAD_EBARE_CR)
		metrics_inc(M_SMUGGLE_BARE_CR);
	if (refuse != NULL) {
		if (tx->spool.failed)
			log_err(tx->id, "spool write failed: %s", strerror(tx->spool.err));
		data_refuse_r(s, refuse, "rejected");
		return PC_AGAIN;
	}
	if (tx->dropped || tx->nrcpt == 0) {
		/* Dropped at MAIL, or every recipient was: 250, deliver nothing. */
		if (tx->by == NULL && tx->rcpt_drop_by != NULL) {
			tx->by = tx->rcpt_drop_by;
			tx->stage = "rcpt";
		}
		data_refuse_r(s, R_DROP_DATA, "dropped");
		return PC_AGAIN;
	}
	return PC_OK;
}

/*
 * tx_index - index the header section at the end of DATA, for filters and
 * the log. Filters and the backend must agree on where the headers end, so
 * a section that does not end within max_header_size is refused (552 5.3.4,
 * like Postfix's header_size_limit) rather than half indexed. Most sections
 * fit the first read; it doubles until the section ends. NULL, or the reply.
 */
static const struct reply *
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
void
data_refuse(struct session *s, const char *reply, const char *status)
{
	snprintf(s->refusal, sizeof(s->refusal), "%s", reply);
	s->refusal_status = status;
	if (s->tx.forwarded && !s->be.dead) {
		backend_command(&s->be, "RSET", 4, s->cfg->backend_timeout_ms, on_data_refused);
		return;
	}
	session_reply(s, "%s", s->refusal);
	tx_end(s, status, s->refusal);
	session_done(s);
}

/* data_refuse_r - data_refuse with one of our own replies */
void
data_refuse_r(struct session *s, const struct reply *r, const char *status)
{
	char line[600];

	data_refuse(s, reply_line(r, s->cfg->hostname, line, sizeof(line)), status);
}

static void
on_data_refused(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
	if (!session_backend_ok(s, res, r, "245"))
		return;
	session_reply(s, "%s", s->refusal);
	tx_end(s, s->refusal_status, s->refusal);
	session_done(s);
}

/*
 * data_proceed - the end-of-DATA hooks let the message through. If they
 * changed the envelope (milter parity: a new sender, recipients added or
 * left out), the backend hears it first: RSET, MAIL and every recipient
 * again when the sender changed or a recipient went (an RCPT cannot be
 * taken back), or only the added RCPTs; then DATA.
 */
void
data_proceed(struct session *s)
{
	const struct chain_envelope *e = chain_envelope(&s->cs);
	struct transaction *tx = &s->tx;
	unsigned nadd = 0, ndel = 0;
	char q[LOG_ADDR_MAX];

	if (data_thresholds(s))
		return;

	if (e == NULL || (e->sender == NULL && e->added == NULL && e->deleted == NULL)) {
		data_send(s);
		return;
	}
	for (const struct edit_rcpt *a = e->added; a != NULL; a = a->next)
		nadd++;
	for (const struct edit_rcpt *d = e->deleted; d != NULL; d = d->next)
		ndel++;
	log_info(tx->id, "filters changed the envelope:%s%s%s added=%u deleted=%u",
	    e->sender != NULL ? " from=<" : "",
	    e->sender != NULL ? log_quote(q, sizeof(q), e->sender, strlen(e->sender)) : "",
	    e->sender != NULL ? ">" : "", nadd, ndel);
	tx->replay_rcpt = tx->rcpts;
	tx->replay_added = e->added;
	tx->replay_ok = 0;
	tx->replay_full = e->sender != NULL || e->deleted != NULL;
	if (tx->replay_full) {
		backend_command(&s->be, "RSET", 4, s->cfg->backend_timeout_ms, on_replay_rset);
		return;
	}
	tx->replay_rcpt = NULL; /* the backend has them already */
	tx->replay_ok = tx->nrcpt;
	replay_next(s);
}

/*
 * data_thresholds - the score thresholds, after the end-of-DATA filters
 * let the message through: reject_score and tempfail_score refuse it,
 * header_score marks it (X-Spam-Flag, X-Spam-Score, X-Spam-Symbols).
 * With any threshold set, incoming fields of those names never reach the
 * backend. 1 if the message was refused.
 */
static int
data_thresholds(struct session *s)
{
	const struct config *cfg = s->cfg;
	struct transaction *tx = &s->tx;
	double score = chain_score_total(&s->cs);
	char line[256];
	int flag;

	if (!cfg->have_reject_score && !cfg->have_tempfail_score && !cfg->have_header_score)
		return 0;
	if (cfg->have_reject_score && score >= cfg->reject_score) {
		snprintf(line, sizeof(line),
		    "550 5.7.1 Message refused as spam (score %.1f, limit %g)", score,
		    cfg->reject_score);
	} else if (cfg->have_tempfail_score && score >= cfg->tempfail_score) {
		snprintf(line, sizeof(line),
		    "451 4.7.1 Message deferred as likely spam (score %.1f, limit %g), try again later",
		    score, cfg->tempfail_score);
	} else {
		flag = cfg->have_header_score && score >= cfg->header_score;
		if (chain_spam_headers(&s->cs, &tx->msg, flag) != 0) {
			log_err(tx->id, "out of memory adding the spam header fields");
			data_refuse_r(s, R_LOCAL_ERROR, "tempfail");
			return 1;
		}
		if (flag)
			log_info(tx->id, "score %.1f reaches header_score %g: marked as spam",
			    score, cfg->header_score);
		return 0;
	}
	log_info(tx->id, "score %.1f: %s", score, line);
	tx->by = "score";
	tx->stage = "data";
	data_refuse(s, line, line[0] == '5' ? "rejected" : "tempfail");
	return 1;
}

/* data_send - the message to the backend: BDAT when it offers CHUNKING
 * (and backend_chunking is on), else DATA and, after its 354, the message */
static void
data_send(struct session *s)
{
	struct transaction *tx = &s->tx;
	struct evbuffer *body = NULL, *out;
	int r;

	if (!s->be.caps.chunking || !s->cfg->backend_chunking) {
		backend_command(&s->be, "DATA", 4, s->cfg->backend_timeout_ms, on_data_go);
		return;
	}
	if (!chain_message_changed(&s->cs, &tx->msg) && tx->spool.size == tx->framer->size) {
		/* No line began with ".": the spool is the message, moved
		 * as it is (a spilled one goes by sendfile). */
		out = backend_bdat(&s->be, tx->spool.size);
		r = out != NULL ? spool_move(&tx->spool, out) : -1;
	} else {
		r = (body = evbuffer_new()) != NULL ? data_unstuffed(s, body) : -1;
		out = r == 0 ? backend_bdat(&s->be, evbuffer_get_length(body)) : NULL;
		r = out != NULL ? evbuffer_add_buffer(out, body) : -1;
		if (body != NULL)
			evbuffer_free(body);
	}
	if (r != 0) {
		/* A chunk cut short would be read as commands: the leg goes. */
		log_err(tx->id, "cannot read the message back from the spool");
		session_backend_ok(s, BACKEND_LOST, NULL, "");
		return;
	}
	backend_data_sent(&s->be, on_bdat_final);
}

/* data_unstuffed - the message as BDAT carries it, into out: what filters
 * made of it, or the spool, without the stuffing dots (a copy) */
static int
data_unstuffed(struct session *s, struct evbuffer *out)
{
	struct transaction *tx = &s->tx;
	struct spool *sp = &tx->spool;
	struct evbuffer *wire = NULL;
	size_t off = 0;
	int sol = 1, r = -1;

	/* The changed message is emitted whole (wire form), then read back
	 * like the spool. */
	if (chain_message_changed(&s->cs, &tx->msg) &&
	    ((wire = evbuffer_new()) == NULL ||
	        chain_message_emit(&s->cs, sp, &tx->msg, wire) != 0))
		goto done;
	for (;;) {
		char buf[16384];
		size_t want = wire != NULL
		    ? sizeof(buf)
		    : (sp->size - off < sizeof(buf) ? sp->size - off : sizeof(buf));
		ssize_t n = wire != NULL ? evbuffer_remove(wire, buf, want)
		                         : (want > 0 ? spool_pread(sp, off, buf, want) : 0);

		if (n < 0 || (wire == NULL && (size_t)n != want))
			goto done;
		if (n == 0)
			break;
		off += (size_t)n;
		if (evbuffer_add(out, buf, dataread_unstuff(buf, (size_t)n, &sol)) != 0)
			goto done;
	}
	r = 0;
done:
	if (wire != NULL)
		evbuffer_free(wire);
	return r;
}

/* on_bdat_final - the reply to BDAT LAST: the message's fate */
static void
on_bdat_final(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
	char reply[SMTP_REPLY_LINE_MAX + 8];

	if (res != BACKEND_REPLY || r->code / 100 == 2) {
		on_data_final(arg, res, r);
		return;
	}
	if (!session_backend_ok(s, res, r, "45"))
		return;
	session_relay(s, r);
	reply_text(r, reply, sizeof(reply));
	tx_end(s, r->code / 100 == 4 ? "tempfail" : "rejected", reply);
	/* RFC 3030 §4.2: a refused BDAT fails the transaction, but whether the
	 * backend has forgotten MAIL and RCPT is not said: RSET, so the next
	 * MAIL starts clean. The client has its answer meanwhile. */
	conn_flush(s->client);
	backend_command(&s->be, "RSET", 4, s->cfg->backend_timeout_ms, on_bdat_rset);
}

/* on_bdat_rset - the RSET after a refused BDAT: a backend that does not
 * take it is out of step, and the next command finds the leg dead */
static void
on_bdat_rset(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;

	if (res != BACKEND_REPLY || r->code / 100 != 2) {
		log_warn(s->id, "backend did not take RSET after a refused BDAT");
		s->be.dead = 1;
	}
	session_done(s);
}

/* replay_deleted - did a filter leave this recipient out? */
static int
replay_deleted(const struct chain_envelope *e, const char *addr)
{
	for (const struct edit_rcpt *d = e->deleted; d != NULL; d = d->next) {
		if (strcmp(d->addr, addr) == 0)
			return 1;
	}
	return 0;
}

/* replay_fail - the backend would not take the changed envelope: the
 * client may try again, and the backend forgets what it has */
static void
replay_fail(struct session *s, const char *what, const struct smtp_reply *r)
{
	size_t len;
	const char *t = smtp_reply_line(r, 0, &len);
	char q[200];

	log_warn(s->tx.id, "backend refused the filters' %s: %d %s", what, r->code,
	    log_quote(q, sizeof(q), t, len));
	data_refuse_r(s, R_BACKEND_ERROR, "tempfail");
}

static void
on_replay_rset(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
	const struct chain_envelope *e = chain_envelope(&s->cs);
	const struct transaction *tx = &s->tx;
	const char *sender = e->sender != NULL ? e->sender : tx->sender;
	const char *params =
	    e->sender != NULL && e->sender_params != NULL ? e->sender_params : tx->sender_params;

	if (!session_backend_ok(s, res, r, "245"))
		return;
	if (r->code / 100 != 2) {
		replay_fail(s, "RSET", r);
		return;
	}
	if (params == NULL)
		params = "";
	backend_commandf(&s->be, s->cfg->backend_timeout_ms, on_replay_mail, "MAIL FROM:<%s>%s%s",
	    sender, params[0] ? " " : "", params);
}

static void
on_replay_mail(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;

	if (!session_backend_ok(s, res, r, "245"))
		return;
	if (r->code / 100 != 2) {
		replay_fail(s, "sender", r);
		return;
	}
	replay_next(s);
}

/* replay_next - the next recipient to send (accepted ones a filter kept,
 * then added ones), or DATA when none is left and the backend took one */
static void
replay_next(struct session *s)
{
	const struct chain_envelope *e = chain_envelope(&s->cs);
	struct transaction *tx = &s->tx;

	while (tx->replay_rcpt != NULL) {
		const struct rcpt *r = tx->replay_rcpt;
		tx->replay_rcpt = r->next;
		if (r->dropped || replay_deleted(e, r->addr))
			continue;
		backend_commandf(
		    &s->be, s->cfg->backend_timeout_ms, on_replay_rcpt, "RCPT TO:<%s>", r->addr);
		return;
	}
	if (tx->replay_added != NULL) {
		const struct edit_rcpt *a = tx->replay_added;
		tx->replay_added = a->next;
		backend_commandf(&s->be, s->cfg->backend_timeout_ms, on_replay_rcpt,
		    "RCPT TO:<%s>%s%s", a->addr, a->params[0] ? " " : "", a->params);
		return;
	}
	if (tx->replay_ok == 0) {
		/* Filters left no recipient the backend takes: nothing to
		 * deliver. Every one left out by a filter is a drop (250);
		 * every one the backend refused, the client may retry. */
		int left = e->added != NULL || !tx->replay_full;
		for (const struct rcpt *r = tx->rcpts; r != NULL && !left; r = r->next)
			left = !r->dropped && !replay_deleted(e, r->addr);
		if (left) {
			log_warn(tx->id, "the backend took none of the filters' recipients");
			data_refuse_r(s, R_BACKEND_ERROR, "tempfail");
			return;
		}
		log_info(tx->id, "filters left out every recipient: nothing is delivered");
		data_refuse_r(s, R_DROP_DATA, "dropped");
		return;
	}
	data_send(s);
}

static void
on_replay_rcpt(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;

	if (!session_backend_ok(s, res, r, "245"))
		return;
	if (r->code / 100 == 2) {
		s->tx.replay_ok++;
	} else {
		size_t len;
		const char *t = smtp_reply_line(r, 0, &len);
		char q[200];
		log_warn(s->tx.id, "backend refused a recipient of the filters' envelope: %d %s",
		    r->code, log_quote(q, sizeof(q), t, len));
	}
	replay_next(s);
}

static void
on_data_go(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
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
	if (r->code != 354 || data_emit_message(s, backend_output(&s->be)) != 0) {
		session_backend_ok(s, BACKEND_LOST, NULL, "");
		return;
	}
	backend_data_end(&s->be, on_data_final);
}

/* data_emit_message - after the backend's 354: the header fields filters
 * added, the message less the fields they removed. Header lines never
 * start with ".": nothing to stuff; the spool holds the rest stuffed. */
static int
data_emit_message(struct session *s, struct evbuffer *out)
{
	struct transaction *tx = &s->tx;
	struct spool *sp = &tx->spool;

	if (out == NULL)
		return PC_ERROR;
	if (!chain_message_changed(&s->cs, &tx->msg))
		return spool_move(sp, out);
	return chain_message_emit(&s->cs, sp, &tx->msg, out);
}

static void
on_data_final(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
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
