/*
 * chainhost.c - the host services plugin ABI 2 added (plugin.h): address
 * split, scores, and message and envelope changes at the end of DATA; and
 * the per-call arena the strings they build come from.
 *
 * Exports chain_host_abi2 (fills those members of struct pc_host),
 * chain_host_store and chain_store_release (the ABI 2.1 store, store.h,
 * whose handles an instance holds until its fini), chain_arena_reset, chain_split, chain_message_changed,
 * chain_message_emit, chain_envelope, chain_score_summary, chain_score_total
 * and chain_spam_headers (the thresholds' header fields). The changes
 * themselves are recorded by edit.c and the scores kept by score.c; this
 * file checks that the call may make them (the stage) and finds the store
 * (the session's chain state).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "chain.h"
#include "log.h"
#include "store.h"

/* A block of the arena; a first one of this size serves most stages. */
#define ARENA_BLOCK 4096

struct chain_arena_block {
	struct chain_arena_block *next;
	size_t size, used;
	max_align_t data[];
};

/* An address split once in this stage, looked up by its text. */
struct chain_split {
	struct chain_split *next;
	const char *src, *local, *domain;
};

static void *arena_alloc(struct chain_arena *a, size_t n);
static char *arena_strndup(struct chain_arena *a, const char *s, size_t n);
static int call_data(struct pc_call *call);
static struct score_set *call_scores(struct pc_call *call);

static int host_split_address(
    struct pc_call *call, const char *addr, const char **local, const char **domain);
static int host_add_score(
    struct pc_call *call, const char *symbol, double points, const char *detail);
static double host_score(struct pc_call *call);
static int host_score_at(
    struct pc_call *call, size_t n, const char **symbol, double *points, const char **detail);
static int host_change_header_current(
    struct pc_call *call, const char *name, size_t n, const char *value);
static int host_insert_header_current(
    struct pc_call *call, size_t index, const char *name, const char *value);
static int host_change_header(struct pc_call *call, const char *name, size_t n, const char *value);
static int host_insert_header(
    struct pc_call *call, size_t index, const char *name, const char *value);
static int host_add_rcpt(struct pc_call *call, const char *addr, const char *params);
static int host_delete_rcpt(struct pc_call *call, const char *addr);
static int host_change_sender(struct pc_call *call, const char *addr, const char *params);
static int host_body_replace_begin(struct pc_call *call);
static int host_body_replace_write(struct pc_call *call, const char *buf, size_t len);
static int host_body_replace_end(struct pc_call *call);

/* chain_host_abi2 - the ABI 2 members of the service table */
void
chain_host_abi2(struct pc_host *host)
{
	host->split_address = host_split_address;
	host->add_score = host_add_score;
	host->score = host_score;
	host->score_at = host_score_at;
	host->change_header = host_change_header;
	host->insert_header = host_insert_header;
	/* 2.2 */
	host->change_header_current = host_change_header_current;
	host->insert_header_current = host_insert_header_current;
	host->add_rcpt = host_add_rcpt;
	host->delete_rcpt = host_delete_rcpt;
	host->change_sender = host_change_sender;
	host->body_replace_begin = host_body_replace_begin;
	host->body_replace_write = host_body_replace_write;
	host->body_replace_end = host_body_replace_end;
}

/* ---- the arena ---- */

/* arena_alloc - n octets, aligned for anything; NULL past CHAIN_ARENA_MAX */
static void *
arena_alloc(struct chain_arena *a, size_t n)
{
	struct chain_arena_block *b = a->head;
	size_t need = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
	void *p;

	if (need < n || need > CHAIN_ARENA_MAX - a->used)
		return NULL;
	if (b == NULL || b->size - b->used < need) {
		size_t size = need > ARENA_BLOCK ? need : ARENA_BLOCK;
		if ((b = malloc(sizeof(*b) + size)) == NULL)
			return NULL;
		b->size = size;
		b->used = 0;
		b->next = a->head;
		a->head = b;
	}
	p = (char *)b->data + b->used;
	b->used += need;
	a->used += need;
	return p;
}

static char *
arena_strndup(struct chain_arena *a, const char *s, size_t n)
{
	char *p = arena_alloc(a, n + 1);

	if (p != NULL) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

/* chain_arena_reset - the stage is over: every string it handed out goes */
void
chain_arena_reset(struct chain_arena *a)
{
	struct chain_arena_block *b, *next;

	for (b = a->head; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	memset(a, 0, sizeof(*a));
}

/* ---- addresses ---- */

/* chain_split - see chain.h. Each distinct address is split once per
 * stage: asking again (tx.recipients in a loop) costs no memory. */
int
chain_split(struct pc_call *call, const char *addr, const char **local, const char **domain)
{
	struct chain_arena *a = &call->arena;
	struct chain_split *sp;
	uint32_t h = 2166136261u; /* FNV-1a */
	size_t len;
	ssize_t at;

	if (addr == NULL)
		return -1;
	for (const char *p = addr; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	for (sp = a->split[h % CHAIN_SPLIT_BUCKETS]; sp != NULL; sp = sp->next) {
		if (strcmp(sp->src, addr) == 0)
			break;
	}
	if (sp == NULL) {
		len = strlen(addr);
		at = edit_addr_at(addr);
		if ((sp = arena_alloc(a, sizeof(*sp))) == NULL ||
		    (sp->src = arena_strndup(a, addr, len)) == NULL ||
		    (sp->local = arena_strndup(a, addr, at < 0 ? len : (size_t)at)) == NULL)
			return -1;
		sp->domain = NULL;
		if (at >= 0) {
			char *d = arena_strndup(a, addr + at + 1, len - (size_t)at - 1);
			if (d == NULL)
				return -1;
			for (char *p = d; *p != '\0'; p++) {
				if (*p >= 'A' && *p <= 'Z')
					*p = (char)(*p - 'A' + 'a');
			}
			sp->domain = d;
		}
		sp->next = a->split[h % CHAIN_SPLIT_BUCKETS];
		a->split[h % CHAIN_SPLIT_BUCKETS] = sp;
	}
	if (local != NULL)
		*local = sp->local;
	if (domain != NULL)
		*domain = sp->domain;
	return 0;
}

static int
host_split_address(struct pc_call *call, const char *addr, const char **local, const char **domain)
{
	return chain_split(call, addr, local, domain);
}

/* ---- scores ---- */

/* call_scores - the transaction's set in a transaction, else the session's */
static struct score_set *
call_scores(struct pc_call *call)
{
	return call->cs->in_tx ? &call->cs->score_tx : &call->cs->score_session;
}

static int
host_add_score(struct pc_call *call, const char *symbol, double points, const char *detail)
{
	if (!call->in_stage)
		return -1;
	return score_add(call_scores(call), symbol, points, detail);
}

static double
host_score(struct pc_call *call)
{
	return call_scores(call)->total;
}

static int
host_score_at(
    struct pc_call *call, size_t n, const char **symbol, double *points, const char **detail)
{
	return score_at(call_scores(call), n, symbol, points, detail);
}

/* chain_score_summary - see chain.h */
size_t
chain_score_summary(const struct chain_session *cs, char *buf, size_t size)
{
	return score_summary(cs->in_tx ? &cs->score_tx : &cs->score_session, buf, size);
}

/* chain_score_total - see chain.h */
double
chain_score_total(const struct chain_session *cs)
{
	return cs->in_tx ? cs->score_tx.total : cs->score_session.total;
}

/* The fields the thresholds write: senders must not bring their own. */
static const char *const spam_fields[] = {"X-Spam-Flag", "X-Spam-Score", "X-Spam-Symbols"};

/* chain_spam_headers - see chain.h */
int
chain_spam_headers(struct chain_session *cs, struct message *m, int flag)
{
	const struct score_set *set = cs->in_tx ? &cs->score_tx : &cs->score_session;
	char symbols[900];
	size_t len = 0;

	for (size_t i = 0; i < sizeof(spam_fields) / sizeof(spam_fields[0]); i++)
		if (message_remove(m, spam_fields[i]) > 0)
			cs->edited = 1;
	if (!flag)
		return 0;
	symbols[0] = '\0';
	for (size_t i = 0; i < set->n; i++) {
		const struct score_entry *e = set->e[i];
		int n = snprintf(symbols + len, sizeof(symbols) - len, "%s%s(%g)", i ? "," : "",
		    e->symbol, e->points);

		if (n < 0 || (size_t)n >= sizeof(symbols) - len - 4) {
			/* The rest would not fit one header line: say so. */
			snprintf(symbols + len, sizeof(symbols) - len, "%s...", i ? "," : "");
			break;
		}
		len += (size_t)n;
	}
	if (cs->added == NULL && (cs->added = evbuffer_new()) == NULL)
		return -1;
	if (evbuffer_add_printf(
	        cs->added, "X-Spam-Flag: YES\r\nX-Spam-Score: %.1f\r\n", set->total) < 0 ||
	    (symbols[0] != '\0' &&
	        evbuffer_add_printf(cs->added, "X-Spam-Symbols: %s\r\n", symbols) < 0))
		return -1;
	return 0;
}

/* ---- message and envelope changes ---- */

/* call_data - may this call change the message? (the DATA stage only) */
static int
call_data(struct pc_call *call)
{
	return call->in_stage && call->stage == PC_STAGE_DATA && call->v->spool != NULL &&
	    call->v->msg != NULL;
}

static int
host_change_header(struct pc_call *call, const char *name, size_t n, const char *value)
{
	if (!call_data(call))
		return -1;
	return edit_change_header(&call->cs->edit, call->v->msg, name, n, value);
}

static int
host_insert_header(struct pc_call *call, size_t index, const char *name, const char *value)
{
	if (!call_data(call))
		return -1;
	return edit_insert_header(&call->cs->edit, index, name, value);
}

static int
host_change_header_current(struct pc_call *call, const char *name, size_t n, const char *value)
{
	if (!call_data(call))
		return -1;
	return edit_change_current(&call->cs->edit, call->v->msg, name, n, value);
}

static int
host_insert_header_current(struct pc_call *call, size_t index, const char *name, const char *value)
{
	if (!call_data(call))
		return -1;
	return edit_insert_current(&call->cs->edit, call->v->msg, index, name, value);
}

static int
host_add_rcpt(struct pc_call *call, const char *addr, const char *params)
{
	if (!call_data(call))
		return -1;
	return edit_add_rcpt(&call->cs->edit, call->v->rcpts, addr, params);
}

static int
host_delete_rcpt(struct pc_call *call, const char *addr)
{
	if (!call_data(call))
		return -1;
	return edit_delete_rcpt(&call->cs->edit, call->v->rcpts, addr);
}

static int
host_change_sender(struct pc_call *call, const char *addr, const char *params)
{
	if (!call_data(call))
		return -1;
	return edit_change_sender(&call->cs->edit, addr, params);
}

static int
host_body_replace_begin(struct pc_call *call)
{
	const struct spool *sp = call->v->spool;

	if (!call_data(call))
		return -1;
	return edit_body_begin(&call->cs->edit, sp->threshold, sp->dir, call->v->max_size);
}

static int
host_body_replace_write(struct pc_call *call, const char *buf, size_t len)
{
	if (!call_data(call) || (buf == NULL && len > 0))
		return -1;
	if (edit_body_write(&call->cs->edit, buf, len) != 0) {
		log_info(call->v->tx_id != NULL ? call->v->tx_id : call->v->id,
		    "filter %s: body replacement refused (a bare CR or a NUL, a line over %d "
		    "octets, over max_message_size, or the spool failed)",
		    call->f != NULL ? call->f->name : "?", EDIT_BODY_LINE_MAX);
		return -1;
	}
	return 0;
}

static int
host_body_replace_end(struct pc_call *call)
{
	if (!call_data(call))
		return -1;
	return edit_body_end(&call->cs->edit);
}

/* chain_message_changed - see chain.h */
int
chain_message_changed(const struct chain_session *cs, const struct message *m)
{
	return edit_changed(&cs->edit, cs->added, m);
}

/* chain_message_emit - see chain.h */
int
chain_message_emit(
    struct chain_session *cs, struct spool *orig, const struct message *m, struct evbuffer *out)
{
	return edit_emit(&cs->edit, cs->added, orig, m, out);
}

/* chain_envelope - see chain.h */
const struct chain_envelope *
chain_envelope(const struct chain_session *cs)
{
	return &cs->edit.env;
}

/* host_store_open - open spec (NULL: the configuration's store) for self */
static struct pc_store *
host_store_open(struct pc_instance *self, const char *spec, char *err, size_t errlen)
{
	struct pc_store *st, **more;
	char msg[600];

	if (self == NULL) {
		snprintf(err, errlen, "store_open: no instance");
		return NULL;
	}
	if (spec == NULL)
		spec = self->chain != NULL ? self->chain->store_default : NULL;
	if ((st = store_open(spec, msg, sizeof(msg))) == NULL) {
		snprintf(err, errlen, "%s", msg);
		return NULL;
	}
	if ((more = realloc(self->stores, (self->nstores + 1) * sizeof(*more))) == NULL) {
		store_release(st);
		snprintf(err, errlen, "store %s: out of memory", spec);
		return NULL;
	}
	self->stores = more;
	self->stores[self->nstores++] = st;
	log_debug(NULL, "filter %s: store %s", self->name, store_name(st));
	return st;
}

/* chain_store_release - see chain.h */
void
chain_store_release(struct pc_instance *f)
{
	for (size_t i = 0; i < f->nstores; i++)
		store_release(f->stores[i]);
	free(f->stores);
	f->stores = NULL;
	f->nstores = 0;
}

/* chain_host_store - see chain.h */
void
chain_host_store(struct pc_host *host)
{
	host->store_open = host_store_open;
	host->store_name = store_name;
	host->store_get = store_get;
	host->store_set = store_set;
	host->store_incr = store_incr;
	host->store_del = store_del;
	host->store_command = store_command;
	host->store_cancel = store_cancel;
}
