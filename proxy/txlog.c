/*
 * txlog.c - the transaction: its beginning at MAIL, its recipients, its end
 * (delivered, refused, aborted), and the one summary line that says what
 * happened to it (STYLE.md, 8).
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

static const char *quote_field(char *buf, size_t size, const char *p, char **heap);
static const struct rcpt *rcpt_list(const struct rcpt *r, int dropped, char *buf, size_t size);
static void tx_log_more(const char *id, const char *key, const char *list, int more);

/* The recipients that go on the summary line; the rest follow on lines
 * of their own, so the line is never cut (log.c's LOG_LINE_MAX). */
#define TX_LOG_RCPTS_MAX 1024

/* tx_metrics - a transaction ended with this summary status: the metrics */
static void
tx_metrics(const char *status, double seconds)
{
	static const struct {
		const char *status;
		enum metric m;
	} map[] = {{"sent", M_TX_SENT}, {"rejected", M_TX_REJECTED}, {"tempfail", M_TX_TEMPFAILED},
	    {"dropped", M_TX_DROPPED}, {"aborted", M_TX_ABORTED}};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(status, map[i].status) == 0) {
			metrics_inc(map[i].m);
			break;
		}
	metrics_observe(H_TX_DURATION, seconds);
}

/* tx_log - the one summary line of a transaction (STYLE.md, 8), Postfix-like:
 * who, from, how many to whom, size, delay, TLS, Message-ID, the verdict
 * trail and the final reply; recipients past TX_LOG_RCPTS_MAX octets go on
 * "more to=" lines, so nothing is ever cut silently */
void
tx_log(struct session *s, const char *status, const char *reply)
{
	struct transaction *tx = &s->tx;
	char to[TX_LOG_RCPTS_MAX + LOG_ADDR_MAX], dropped[TX_LOG_RCPTS_MAX + LOG_ADDR_MAX];
	const struct rcpt *next_to, *next_dropped;
	const char *m = tx->msg_parsed ? message_header(&tx->msg, "Message-ID", 0) : NULL;
	char from_b[LOG_ADDR_MAX], helo_b[512], mid_b[512], q_b[600], from_qb[LOG_ADDR_MAX + 2];
	char *heap[5];
	const char *from = quote_field(from_b, sizeof(from_b), tx->sender, &heap[0]),
	           *helo = quote_field(helo_b, sizeof(helo_b), s->helo, &heap[1]),
	           *mid = quote_field(mid_b, sizeof(mid_b), m, &heap[2]),
	           *q = quote_field(q_b, sizeof(q_b), reply, &heap[3]);
	struct timeval now, d;
	char score[512], nrcpt[24], size[24], delay[40], to_all[sizeof(to) + 8];
	char *symbols = NULL;

	/* trail= when a filter decided, observed or failed: what happened to
	 * the message, even when on_error let it through. */
	const char *trail = s->cs.trail;

	/* score= and symbols= when a filter scored: chain_score_summary's
	 * "score=N symbols=LIST", one pair each. */
	chain_score_summary(&s->cs, score, sizeof(score));
	if (strncmp(score, "score=", 6) == 0 && (symbols = strstr(score, " symbols=")) != NULL) {
		*symbols = '\0';
		symbols += strlen(" symbols=");
	}
	next_to = rcpt_list(tx->rcpts, 0, to, sizeof(to));
	next_dropped = rcpt_list(tx->rcpts, 1, dropped, sizeof(dropped));
	event_base_gettimeofday_cached(s->srv->base, &now);
	timersub(&now, &tx->start, &d);
	if (tx->start.tv_sec == 0 || d.tv_sec < 0)
		d.tv_sec = 0, d.tv_usec = 0;
	tx_metrics(status, (double)d.tv_sec + (double)d.tv_usec / 1e6);
	snprintf(nrcpt, sizeof(nrcpt), "%u", tx->nrcpt);
	snprintf(size, sizeof(size), "%zu", tx->size);
	snprintf(delay, sizeof(delay), "%ld.%03ld", (long)d.tv_sec, (long)(d.tv_usec / 1000));
	snprintf(to_all, sizeof(to_all), "%s%s", to[0] ? to : "<>", next_to ? ",..." : "");
	/* from=<...> whole, however long the quoted address grew. */
	size_t from_len = strlen(from) + 3;
	char *from_q = from_qb;
	heap[4] = NULL;
	if (from_len > sizeof(from_qb) && (heap[4] = malloc(from_len)) != NULL) {
		from_q = heap[4];
	} else if (from_len > sizeof(from_qb)) {
		from = "...";
		from_len = 6;
	}
	snprintf(from_q, from_len, "<%s>", from);
	/* The pairs in the order of the text line; with log_format = json
	 * each is a member too (log_kv). */
	const struct log_kv kv[] = {
	    {"client", s->peer, LOG_KV_TEXT},
	    {"helo", helo, LOG_KV_TEXT},
	    {"tls", s->tls_proto ? s->tls_proto : "no", LOG_KV_TEXT},
	    {"user", s->auth_user, LOG_KV_TEXT},
	    {"from", from_q, LOG_KV_TEXT},
	    {"nrcpt", nrcpt, LOG_KV_NUMBER},
	    {"to", to_all, LOG_KV_TEXT},
	    {"dropped_to", dropped[0] ? dropped : NULL, LOG_KV_TEXT},
	    {"size", size, LOG_KV_NUMBER},
	    {"delay", delay, LOG_KV_NUMBER},
	    {"message-id", m != NULL ? mid : NULL, LOG_KV_TEXT},
	    {"score", symbols != NULL ? score + 6 : NULL, LOG_KV_NUMBER},
	    {"symbols", symbols, LOG_KV_TEXT},
	    {"trail", trail[0] ? trail : NULL, LOG_KV_TEXT},
	    {"status", status, LOG_KV_TEXT},
	    {"stage", tx->by ? tx->stage : NULL, LOG_KV_TEXT},
	    {"by", tx->by, LOG_KV_TEXT},
	    {"reply", q, LOG_KV_QUOTED},
	};
	log_kv(LOG_INFO, tx->id, NULL, kv, sizeof(kv) / sizeof(kv[0]));
	for (size_t i = 0; i < sizeof(heap) / sizeof(heap[0]); i++)
		free(heap[i]);
	/* The rest of a long list, a bounded line at a time. */
	while (next_to != NULL) {
		next_to = rcpt_list(next_to, 0, to, sizeof(to));
		tx_log_more(tx->id, "to", to, next_to != NULL);
	}
	while (next_dropped != NULL) {
		next_dropped = rcpt_list(next_dropped, 1, dropped, sizeof(dropped));
		tx_log_more(tx->id, "dropped_to", dropped, next_dropped != NULL);
	}
}

/* tx_log_more - "more to=LIST" (key "to" or "dropped_to"), ",..." after
 * LIST when yet more follow */
static void
tx_log_more(const char *id, const char *key, const char *list, int more)
{
	char all[TX_LOG_RCPTS_MAX + LOG_ADDR_MAX + 8];
	const struct log_kv kv[] = {{key, all, LOG_KV_TEXT}};

	snprintf(all, sizeof(all), "%s%s", list, more ? ",..." : "");
	log_kv(LOG_INFO, id, "more", kv, 1);
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
size_t
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
void
tx_add_rcpt(struct session *s, const char *addr, int dropped)
{
	struct rcpt *rc = calloc(1, sizeof(*rc));

	metrics_inc(M_RCPT_ACCEPTED); /* the client had its 250 */

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
void
tx_end(struct session *s, const char *status, const char *reply)
{
	struct transaction *tx = &s->tx;
	struct rcpt *r, *next;

	if (tx->active || tx->by != NULL)
		tx_log(s, status, reply);
	if (tx->id[0] != '\0') {
		if (s->chain != NULL && s->chain->n > 0)
			session_view(s, NULL, NULL); /* for the reset hooks */
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
	free(tx->mail_refused);
	message_free(&tx->msg);
	free(tx->framer);
	tx->framer = NULL;
	unsigned seq = tx->seq;
	memset(tx, 0, offsetof(struct transaction, framer));
	tx->spool_open = 0;
	tx->seq = seq;
	tx->rcpt_tail = &tx->rcpts;
}

/* tx_begin - MAIL passed its checks: a transaction id, before the hooks */
void
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
