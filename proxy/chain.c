/*
 * chain.c - running the filter chain for a session (see chain.h), and the
 * services the host offers plugins (struct pc_host).
 *
 * Exports chain_host_init, chain_session_init, chain_has, chain_run,
 * chain_stage, chain_cancel, chain_tx_begin, chain_tx_end,
 * chain_session_end and path_params (the ABI 2 services are in
 * chainhost.c). A session asks one
 * stage at a time (commands are processed one at a time), so each session
 * has one struct pc_call, reused. The rules (DESIGN.md §3): instances are
 * asked in configuration order; the first verdict that is not continue
 * decides; accept ends the stage; observe logs and enforces nothing; a bad
 * verdict, a failure or a timeout is the instance's on_error.
 */
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "chain.h"
#include "dataread.h"
#include "log.h"
#include "metrics.h"
#include "options.h"
#include "replies.h"
#include "smtp_parse.h"
#include "store.h"

enum call_state {
	CALL_IDLE = 0,
	CALL_IN_HOOK, /* inside the plugin's hook function */
	CALL_PENDING, /* the hook answered pending: waiting for resume */
};

static pc_hook_fn stage_hook(const struct pc_plugin *pl, enum pc_stage stage);
static void chain_step(struct pc_call *call);
static int chain_verdict(struct pc_call *call, int action, const char *reply);
static int chain_fail(struct pc_call *call, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void chain_finish(struct pc_call *call, enum pc_action action, const char *line, int failed);
static void chain_trail(struct pc_call *call, const char *what);
static void chain_timeout_cb(evutil_socket_t fd, short what, void *arg);
static int call_message(struct pc_call *call);

static void host_log(struct pc_instance *self, struct pc_call *call, enum pc_log_level level,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static const char *host_get(struct pc_call *call, enum pc_field field);
static const char *field_split(struct pc_call *call, const char *addr, int local_part);
static const char *host_rcpt(struct pc_call *call, size_t n);
static size_t host_rcpt_count(struct pc_call *call);
static enum pc_stage host_stage(struct pc_call *call);
static void **host_session_data(struct pc_call *call);
static void **host_tx_data(struct pc_call *call);
static int host_pending(struct pc_call *call, pc_cancel_fn cancel, void *arg);
static void host_resume(struct pc_call *call, const struct pc_verdict *v);
static size_t host_msg_size(struct pc_call *call);
static const char *host_header(struct pc_call *call, const char *name, size_t n);
static int host_header_at(struct pc_call *call, size_t n, const char **name, const char **value);
static ssize_t host_body_read(struct pc_call *call, char *buf, size_t len);
static void host_body_rewind(struct pc_call *call);
static ssize_t host_message_read(struct pc_call *call, char *buf, size_t len);
static void host_message_rewind(struct pc_call *call);
static int host_pending_deadline(struct pc_call *call, unsigned long long ms);
static ssize_t host_message_read_current(struct pc_call *call, char *buf, size_t len);
static void call_cur_free(struct pc_call *call);
static int host_add_header(struct pc_call *call, const char *name, const char *value);
static int host_remove_header(struct pc_call *call, const char *name);

/* chain_host_init - the service table every plugin gets */
void
chain_host_init(struct pc_host *host, struct event_base *base, struct evdns_base *dns)
{
	host->abi_major = PC_ABI_MAJOR;
	host->abi_minor = PC_ABI_MINOR;
	host->struct_size = sizeof(*host);
	host->base = base;
	host->dns = dns;
	host->log = host_log;
	host->get = host_get;
	host->rcpt = host_rcpt;
	host->rcpt_count = host_rcpt_count;
	host->stage = host_stage;
	host->session_data = host_session_data;
	host->tx_data = host_tx_data;
	host->pending = host_pending;
	host->resume = host_resume;
	host->msg_size = host_msg_size;
	host->header = host_header;
	host->header_at = host_header_at;
	host->body_read = host_body_read;
	host->body_rewind = host_body_rewind;
	host->add_header = host_add_header;
	host->remove_header = host_remove_header;
	chain_host_abi2(host);
	host->opt_size = opt_size;
	host->opt_time = opt_time;
	host->opt_bool = opt_bool;
	host->opt_list = opt_list;
	host->opt_cidr = opt_cidr;
	host->opt_cidr_match = opt_cidr_match;
	host->opt_cidr_free = opt_cidr_free;
	host->opt_file = opt_file;
	chain_host_store(host);
	host->message_read = host_message_read;
	host->message_rewind = host_message_rewind;
	host->pending_deadline = host_pending_deadline;
	host->message_read_current = host_message_read_current;
}

/* chain_session_init - per-session state; 0 or -1 (out of memory) */
int
chain_session_init(struct chain *c, struct chain_session *cs, const struct chain_view *v)
{
	memset(cs, 0, sizeof(*cs));
	cs->call.v = v;
	cs->call.cs = cs;
	cs->call.chain = c;
	if (c == NULL || c->n == 0)
		return 0;
	cs->sdata = calloc(c->n, sizeof(void *));
	cs->tdata = calloc(c->n, sizeof(void *));
	cs->call.timer = evtimer_new(c->host.base, chain_timeout_cb, &cs->call);
	if (cs->sdata == NULL || cs->tdata == NULL || cs->call.timer == NULL)
		return -1;
	return 0;
}

/* chain_has - is there anyone to ask at this stage? */
int
chain_has(const struct chain *c, enum pc_stage stage)
{
	return c != NULL && (c->stages & (1u << stage)) != 0;
}

/* stage_hook - the plugin's function for a stage */
static pc_hook_fn
stage_hook(const struct pc_plugin *pl, enum pc_stage stage)
{
	switch (stage) {
	case PC_STAGE_CONNECT:
		return pl->connect;
	case PC_STAGE_HELO:
		return pl->helo;
	case PC_STAGE_MAIL:
		return pl->mail;
	case PC_STAGE_RCPT:
		return pl->rcpt;
	case PC_STAGE_DATA:
		return pl->data;
	}
	return NULL;
}

/* filter_slot - the instance's metrics slot, found once */
static int
filter_slot(struct pc_instance *f)
{
	if (!f->mslot_set) {
		f->mslot = metrics_filter_slot(f->name);
		f->mslot_set = 1;
	}
	return f->mslot;
}

/* call_counted - a valid verdict: the filter's metrics */
static void
call_counted(struct pc_call *call, enum pc_action action)
{
	int slot = filter_slot(call->f);

	metrics_verdict(slot, call->stage, action);
	metrics_filter_time(slot, metrics_now() - call->started);
}

/* chain_waiting - see chain.h */
const char *
chain_waiting(const struct chain_session *cs)
{
	return cs->call.state == CALL_PENDING && cs->call.f != NULL ? cs->call.f->name : NULL;
}

/* call_id - the id for a log line: the transaction's, else the session's */
static const char *
call_id(const struct pc_call *call)
{
	return call->v->tx_id != NULL ? call->v->tx_id : call->v->id;
}

/* chain_run - ask this stage's hooks, in order */
void
chain_run(struct chain_session *cs, enum pc_stage stage, chain_done_fn done, void *arg)
{
	struct pc_call *call = &cs->call;

	/* The strings handed out in the last stage go now (plugin.h). */
	chain_arena_reset(&call->arena);
	call->stage = stage;
	call->in_stage = 1;
	call->next = 0;
	call->done = done;
	call->done_arg = arg;
	chain_step(call);
}

enum pc_stage
chain_stage(const struct chain_session *cs)
{
	return cs->call.stage;
}

/* chain_step - ask instances from call->next on, until one decides or waits */
static void
chain_step(struct pc_call *call)
{
	struct chain *c = call->chain;

	while (call->next < c->n) {
		struct pc_instance *f = &c->f[call->next++];
		pc_hook_fn hook = stage_hook(f->pl, call->stage);
		struct pc_verdict v = {PC_CONTINUE, NULL};
		int r;

		if (hook == NULL)
			continue;
		call->f = f;
		call->state = CALL_IN_HOOK;
		call->resumed = 0;
		call->cancel = NULL;
		call->body_pos = 0;
		call->msg_pos = 0;
		call_cur_free(call);
		call->wait_ms = f->timeout_ms;
		call->started = metrics_now();
		r = hook(f->inst, call, &v);
		if (r == PC_HOOK_DONE) {
			call->state = CALL_IDLE;
			if (chain_verdict(call, (int)v.action, v.reply))
				return;
		} else if (r == PC_HOOK_PENDING && call->resumed) {
			call->state = CALL_IDLE;
			if (chain_verdict(call, (int)call->r_action,
			        call->r_has_reply ? call->r_reply : NULL))
				return;
		} else if (r == PC_HOOK_PENDING && call->cancel != NULL) {
			struct timeval tv = {(time_t)(call->wait_ms / 1000),
			    (suseconds_t)(call->wait_ms % 1000) * 1000};
			call->state = CALL_PENDING;
			metrics_gauge_add(G_PENDING, 1);
			evtimer_add(call->timer, &tv);
			return;
		} else {
			call->state = CALL_IDLE;
			if (r == PC_HOOK_PENDING ? chain_fail(call,
			                               "answered pending without "
			                               "calling host->pending()")
			                         : chain_fail(call, "hook returned %d", r))
				return;
		}
	}
	call->f = NULL;
	chain_finish(call, PC_CONTINUE, "", 0);
}

/* chain_verdict - judge one answer; 1 if the stage is decided (done called) */
static int
chain_verdict(struct pc_call *call, int action, const char *reply)
{
	struct pc_instance *f = call->f;
	char line[VERDICT_LINE_MAX], q[600], what[64];
	const char *why;

	if (action < PC_CONTINUE || action > PC_FAIL)
		return chain_fail(call, "invalid verdict %d", action);
	if (action == PC_FAIL) {
		/* The filter's reason, if it gave one, is for the log only. */
		if (reply != NULL && reply[0] != '\0')
			return chain_fail(
			    call, "%s", log_quote(q, sizeof(q), reply, strnlen(reply, 512)));
		return chain_fail(call, "the filter failed");
	}
	if (action == PC_CONTINUE) {
		call_counted(call, PC_CONTINUE);
		return 0;
	}
	if (verdict_reply((enum pc_action)action, call->stage, reply, call->v->hostname, line,
	        sizeof(line), &why) != 0)
		return chain_fail(call, "invalid reply \"%s\" for %s: %s",
		    log_quote(q, sizeof(q), reply, strlen(reply)), verdict_action_name(action),
		    why);
	call_counted(call, (enum pc_action)action); /* enforced or (observe) not */
	if (f->observe) {
		log_info(call_id(call), "observe: %s would %s at %s%s%s%s (not enforced)", f->name,
		    verdict_action_name(action), verdict_stage_name(call->stage),
		    line[0] ? " \"" : "", line, line[0] ? "\"" : "");
		snprintf(what, sizeof(what), "observe-%s", verdict_action_name(action));
		chain_trail(call, what);
		return 0;
	}
	chain_trail(call, verdict_action_name(action));
	chain_finish(call, (enum pc_action)action, line, 0);
	return 1;
}

/* chain_fail - the instance failed: log why, then its on_error */
static int
chain_fail(struct pc_call *call, const char *fmt, ...)
{
	struct pc_instance *f = call->f;
	static const char *const names[] = {"tempfail", "accept", "reject"};
	char why[600], line[VERDICT_LINE_MAX + 64];
	int connect = call->stage == PC_STAGE_CONNECT;
	uint64_t now;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	metrics_filter_failed(filter_slot(f), call->timed_out);
	metrics_filter_time(filter_slot(f), metrics_now() - call->started);
	call->timed_out = 0;
	now = store_mono_ms();
	if (f->fail_warned_ms == 0 || now - f->fail_warned_ms >= CHAIN_WARN_EVERY_MS) {
		if (f->fail_quiet > 0)
			log_warn(call_id(call),
			    "filter %s failed at %s: %s (on_error=%s; %lu more failures in the "
			    "last %ds not logged)",
			    f->name, verdict_stage_name(call->stage), why, names[f->on_error],
			    f->fail_quiet, CHAIN_WARN_EVERY_MS / 1000);
		else
			log_warn(call_id(call), "filter %s failed at %s: %s (on_error=%s)", f->name,
			    verdict_stage_name(call->stage), why, names[f->on_error]);
		f->fail_warned_ms = now;
		f->fail_quiet = 0;
	} else {
		/* Counted for the next warning; log_level = debug shows each. */
		f->fail_quiet++;
		log_debug(call_id(call), "filter %s failed at %s: %s (on_error=%s)", f->name,
		    verdict_stage_name(call->stage), why, names[f->on_error]);
	}
	chain_trail(call, "error");
	switch (f->on_error) {
	case CONFIG_ON_ERROR_ACCEPT:
		return 0;
	case CONFIG_ON_ERROR_REJECT:
		reply_line(connect ? R_FILTER_ERROR_REJECT_CONNECT : R_FILTER_ERROR_REJECT,
		    call->v->hostname, line, sizeof(line));
		chain_finish(call, PC_REJECT, line, 1);
		return 1;
	case CONFIG_ON_ERROR_TEMPFAIL:
		break;
	}
	reply_line(connect ? R_FILTER_ERROR_TEMPFAIL_CONNECT : R_FILTER_ERROR_TEMPFAIL,
	    call->v->hostname, line, sizeof(line));
	chain_finish(call, PC_TEMPFAIL, line, 1);
	return 1;
}

/* chain_finish - the stage is decided: tell the session */
static void
chain_finish(struct pc_call *call, enum pc_action action, const char *line, int failed)
{
	struct chain_result r;

	r.action = action;
	snprintf(r.reply, sizeof(r.reply), "%s", line);
	r.by = call->f != NULL ? call->f->name : NULL;
	r.failed = failed;
	call->state = CALL_IDLE;
	call->f = NULL;
	call->in_stage = 0;
	/* The session may end in here: nothing touches call afterwards. */
	call->done(call->done_arg, &r);
}

/* chain_trail - "name:what@stage" for PC_TRAIL and the headers plugin */
static void
chain_trail(struct pc_call *call, const char *what)
{
	struct chain_session *cs = call->cs;
	size_t len = strlen(cs->trail);

	snprintf(cs->trail + len, sizeof(cs->trail) - len, "%s%s:%s@%s", len ? "," : "",
	    call->f->name, what, verdict_stage_name(call->stage));
}

/* chain_timeout_cb - filter_timeout passed while a hook was pending */
static void
chain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pc_call *call = arg;
	pc_cancel_fn cancel = call->cancel;

	if (call->state != CALL_PENDING)
		return;
	call->state = CALL_IDLE;
	metrics_gauge_add(G_PENDING, -1);
	call->cancel = NULL;
	cancel(call->cancel_arg);
	call->timed_out = 1;
	if (!(call->wait_ms == call->f->timeout_ms
	            ? chain_fail(call, "no verdict within filter_timeout (%llu ms)", call->wait_ms)
	            : chain_fail(call, "no verdict within the filter's deadline (%llu ms)",
	                  call->wait_ms)))
		chain_step(call);
}

/* chain_cancel - give up a pending hook: the session is going away */
void
chain_cancel(struct chain_session *cs)
{
	struct pc_call *call = &cs->call;
	pc_cancel_fn cancel = call->cancel;

	if (call->state != CALL_PENDING)
		return;
	log_info(call->v->id, "filter %s cancelled at %s", call->f->name,
	    verdict_stage_name(call->stage));
	evtimer_del(call->timer);
	call->state = CALL_IDLE;
	metrics_gauge_add(G_PENDING, -1);
	call->cancel = NULL;
	call->f = NULL;
	call->in_stage = 0;
	cancel(call->cancel_arg);
}

/* chain_tx_end - reset hooks; transaction data is gone */
void
chain_tx_end(struct chain_session *cs)
{
	struct pc_call *call = &cs->call;
	struct chain *c = call->chain;

	if (c != NULL && c->n > 0 && cs->tdata != NULL) {
		chain_cancel(cs);
		for (size_t i = 0; i < c->n; i++) {
			struct pc_instance *f = &c->f[i];
			if (f->pl->reset != NULL) {
				call->f = f;
				f->pl->reset(f->inst, call);
			}
			cs->tdata[i] = NULL;
		}
		call->f = NULL;
		cs->trail[cs->trail_tx] = '\0';
	}
	/* After the reset hooks, which may still read them. */
	if (cs->added != NULL)
		evbuffer_free(cs->added);
	cs->added = NULL;
	cs->edited = 0;
	edit_free(&cs->edit);
	score_clear(&cs->score_tx);
	cs->in_tx = 0;
	call_cur_free(call);
	chain_arena_reset(&call->arena);
}

/* chain_tx_begin - a transaction starts with the session's scores */
void
chain_tx_begin(struct chain_session *cs)
{
	cs->trail_tx = strlen(cs->trail);
	score_clear(&cs->score_tx);
	if (score_copy(&cs->score_tx, &cs->score_session) != 0)
		log_err(cs->call.v->id, "out of memory copying the session's scores");
	cs->in_tx = 1;
}

/* chain_session_end - the session is over */
void
chain_session_end(struct chain_session *cs)
{
	struct pc_call *call = &cs->call;
	struct chain *c = call->chain;

	chain_cancel(cs);
	if (c != NULL && cs->sdata != NULL) {
		for (size_t i = 0; i < c->n; i++) {
			struct pc_instance *f = &c->f[i];
			if (f->pl->close != NULL) {
				call->f = f;
				f->pl->close(f->inst, call);
			}
			cs->sdata[i] = NULL;
		}
	}
	call->f = NULL;
	if (call->timer != NULL)
		event_free(call->timer);
	call->timer = NULL;
	free(cs->sdata);
	free(cs->tdata);
	if (cs->added != NULL)
		evbuffer_free(cs->added);
	cs->added = NULL;
	cs->sdata = cs->tdata = NULL;
	edit_free(&cs->edit);
	score_clear(&cs->score_tx);
	score_clear(&cs->score_session);
	cs->in_tx = 0;
	call_cur_free(call);
	chain_arena_reset(&call->arena);
}

/* ---- host services ---- */

static const int log_prio[] = {
    [PC_LOG_DEBUG] = LOG_DEBUG,
    [PC_LOG_INFO] = LOG_INFO,
    [PC_LOG_WARN] = LOG_WARNING,
    [PC_LOG_ERR] = LOG_ERR,
};

/* host_log - a plugin's log line, with the session (or transaction) id */
static void
host_log(
    struct pc_instance *self, struct pc_call *call, enum pc_log_level level, const char *fmt, ...)
{
	char buf[2048], q[4096];
	const char *sid = NULL, *name;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (call != NULL)
		sid = call_id(call);
	name = self != NULL                   ? self->name
	    : call != NULL && call->f != NULL ? call->f->name
	                                      : "plugin";
	if ((unsigned)level > PC_LOG_ERR)
		level = PC_LOG_ERR;
	/* A plugin logs what clients sent it: one line, no control bytes. */
	log_msg(log_prio[level], sid, "[%s] %s", name, log_clean(q, sizeof(q), buf));
}

/* host_get - read access to the session and transaction */
static const char *
host_get(struct pc_call *call, enum pc_field field)
{
	const struct chain_view *v = call->v;
	int helo = call->in_stage && call->stage == PC_STAGE_HELO;
	int rcpt = call->in_stage && call->stage == PC_STAGE_RCPT;

	switch (field) {
	case PC_SESSION_ID:
		return v->id;
	case PC_CLIENT_IP:
		return v->client_ip;
	case PC_CLIENT_PORT:
		return v->client_port;
	case PC_LOCAL_IP:
		return v->local_ip;
	case PC_LOCAL_PORT:
		return v->local_port;
	case PC_HOSTNAME:
		return v->hostname;
	case PC_HELO:
		return helo ? v->arg : v->helo;
	case PC_TLS:
		return v->tls_proto;
	case PC_AUTH_USER:
		return v->auth_user;
	case PC_TX_ID:
		return v->tx_id;
	case PC_SENDER:
		return v->sender;
	case PC_RCPT:
		return rcpt ? v->arg : NULL;
	case PC_TRAIL:
		return call->cs->trail;
	case PC_STAGE_NAME:
		return call->in_stage ? verdict_stage_name(call->stage) : NULL;
	case PC_SENDER_PARAMS:
		return v->sender != NULL ? v->sender_params : NULL;
	case PC_RCPT_PARAMS:
		return rcpt ? v->arg_params : NULL;
	case PC_CLIENT_NAME:
		return v->client_name;
	case PC_TLS_CIPHER:
		return v->tls_cipher;
	case PC_CLIENT_TRUSTED:
		return v->trusted ? "1" : NULL;
	case PC_SENDER_LOCAL:
	case PC_SENDER_DOMAIN:
		return field_split(call, v->sender, field == PC_SENDER_LOCAL);
	case PC_RCPT_LOCAL:
	case PC_RCPT_DOMAIN:
		return rcpt ? field_split(call, v->arg, field == PC_RCPT_LOCAL) : NULL;
	}
	return NULL;
}

/* field_split - one half of an address (chain_split), or NULL */
static const char *
field_split(struct pc_call *call, const char *addr, int local_part)
{
	const char *local, *domain;

	if (addr == NULL || chain_split(call, addr, &local, &domain) != 0)
		return NULL;
	return local_part ? local : domain;
}

/* path_params - "KEY=value KEY" of a MAIL or RCPT path, malloc'd */
char *
path_params(const struct smtp_path *path)
{
	size_t size = 1, o = 0;
	char *buf;

	for (size_t i = 0; i < path->nparams; i++)
		size += path->params[i].key_len + path->params[i].value_len + 2;
	if ((buf = malloc(size)) == NULL)
		return NULL;
	buf[0] = '\0';
	for (size_t i = 0; i < path->nparams; i++) {
		const struct smtp_param *p = &path->params[i];
		o += (size_t)snprintf(buf + o, size - o, "%s%.*s%s%.*s", i ? " " : "",
		    (int)p->key_len, p->key, p->value ? "=" : "", p->value ? (int)p->value_len : 0,
		    p->value ? p->value : "");
	}
	return buf;
}

/* host_rcpt - recipients the backend accepted so far */
static const char *
host_rcpt(struct pc_call *call, size_t n)
{
	for (const struct rcpt *r = call->v->rcpts; r != NULL; r = r->next) {
		if (!r->dropped && n-- == 0)
			return r->addr;
	}
	return NULL;
}

static size_t
host_rcpt_count(struct pc_call *call)
{
	return call->v->nrcpt;
}

static enum pc_stage
host_stage(struct pc_call *call)
{
	return call->stage;
}

/* host_session_data / host_tx_data - the instance's own slots */
static void **
host_session_data(struct pc_call *call)
{
	return &call->cs->sdata[call->f->index];
}

static void **
host_tx_data(struct pc_call *call)
{
	return &call->cs->tdata[call->f->index];
}

/* host_pending - the hook will answer later */
static int
host_pending(struct pc_call *call, pc_cancel_fn cancel, void *arg)
{
	if (call->state != CALL_IN_HOOK || cancel == NULL)
		return -1;
	call->cancel = cancel;
	call->cancel_arg = arg;
	return 0;
}

/* host_resume - a pending hook's answer */
static void
host_resume(struct pc_call *call, const struct pc_verdict *v)
{
	size_t len;

	if (call->state == CALL_IDLE || call->cancel == NULL || call->resumed) {
		log_err(call->v->id, "filter %s: resume without a pending call (ignored)",
		    call->f ? call->f->name : "?");
		return;
	}
	call->r_action = v->action;
	call->r_has_reply = v->reply != NULL;
	if (v->reply != NULL) {
		/* One octet over the limit is enough for verdict_reply to say
		 * it is too long. */
		len = strnlen(v->reply, PC_REPLY_MAX + 1);
		memcpy(call->r_reply, v->reply, len);
		call->r_reply[len] = '\0';
	}
	if (call->state == CALL_IN_HOOK) {
		call->resumed = 1; /* chain_step takes it when the hook returns */
		return;
	}
	evtimer_del(call->timer);
	call->state = CALL_IDLE;
	metrics_gauge_add(G_PENDING, -1);
	call->cancel = NULL;
	if (!chain_verdict(call, (int)call->r_action, call->r_has_reply ? call->r_reply : NULL))
		chain_step(call);
}

/* call_message - the header index session.c built at the end of DATA
 * (tx_index): the same one the backend's copy is cut by */
static int
call_message(struct pc_call *call)
{
	if (!call->in_stage || call->stage != PC_STAGE_DATA || call->v->spool == NULL ||
	    call->v->msg == NULL)
		return -1;
	return 0;
}

static size_t
host_msg_size(struct pc_call *call)
{
	if (!call->in_stage || call->stage != PC_STAGE_DATA)
		return 0;
	return call->v->size;
}

static const char *
host_header(struct pc_call *call, const char *name, size_t n)
{
	if (name == NULL || call_message(call) != 0)
		return NULL;
	return message_header(call->v->msg, name, n);
}

static int
host_header_at(struct pc_call *call, size_t n, const char **name, const char **value)
{
	const struct message *m = call->v->msg;

	if (call_message(call) != 0 || n >= m->nh)
		return -1;
	*name = m->h[n].name;
	*value = m->h[n].value;
	return 0;
}

/* spool_unstuffed - the next octets of the spool from *pos (plus 1; 0:
 * from start), dots un-stuffed (RFC 5321 §4.5.2): for body_read and
 * message_read */
static ssize_t
spool_unstuffed(struct pc_call *call, size_t *pos, int *sol, size_t start, char *buf, size_t len)
{
	const struct chain_view *v = call->v;

	if (call_message(call) != 0)
		return -1;
	if (*pos == 0) { /* a new hook call: from the start */
		*pos = start + 1;
		*sol = 1;
	}
	while (len > 0) {
		size_t off = *pos - 1, o;
		ssize_t n = spool_pread(v->spool, off, buf, len);

		if (n <= 0)
			return n;
		*pos += (size_t)n;
		o = dataread_unstuff(buf, (size_t)n, sol);
		if (o > 0)
			return (ssize_t)o;
	}
	return 0;
}

/* host_body_read - the body as a stream */
static ssize_t
host_body_read(struct pc_call *call, char *buf, size_t len)
{
	if (call_message(call) != 0)
		return -1;
	return spool_unstuffed(
	    call, &call->body_pos, &call->body_sol, call->v->msg->body_off, buf, len);
}

/* host_message_read - the whole message as received, as a stream */
static ssize_t
host_message_read(struct pc_call *call, char *buf, size_t len)
{
	return spool_unstuffed(call, &call->msg_pos, &call->msg_sol, 0, buf, len);
}

/* call_cur_free - forget message_read_current's rendering */
static void
call_cur_free(struct pc_call *call)
{
	if (call->cur != NULL)
		evbuffer_free(call->cur);
	call->cur = NULL;
}

/* host_message_read_current - the message as the backend would get it now:
 * rendered once (edit_emit; a file spool's octets are referenced, not
 * copied) at the first read, then read out with the dots un-stuffed */
static ssize_t
host_message_read_current(struct pc_call *call, char *buf, size_t len)
{
	const struct chain_view *v = call->v;
	struct chain_session *cs = call->cs;
	int n;

	if (call_message(call) != 0)
		return -1;
	if (call->cur == NULL) {
		if ((call->cur = evbuffer_new()) == NULL)
			return -1;
		call->cur_sol = 1;
		if ((edit_changed(&cs->edit, cs->added, v->msg)
		            ? edit_emit(&cs->edit, cs->added, v->spool, v->msg, call->cur)
		            : spool_copy(v->spool, 0, v->spool->size, call->cur)) != 0) {
			call_cur_free(call);
			return -1;
		}
	}
	if (len > INT32_MAX)
		len = INT32_MAX;
	while ((n = evbuffer_remove(call->cur, buf, len)) > 0) {
		size_t o = 0;
		for (int i = 0; i < n; i++) {
			char c = buf[i];
			if (call->cur_sol && c == '.') {
				call->cur_sol = 0;
				continue;
			}
			call->cur_sol = c == '\n';
			buf[o++] = c;
		}
		if (o > 0)
			return (ssize_t)o;
	}
	return n < 0 ? -1 : 0;
}

/* host_pending_deadline - a pending call's own deadline, from now */
static int
host_pending_deadline(struct pc_call *call, unsigned long long ms)
{
	if (call->state == CALL_IDLE || call->cancel == NULL || call->resumed)
		return -1;
	call->wait_ms = ms != 0 ? ms : call->f->timeout_ms;
	if (call->state == CALL_PENDING) {
		struct timeval tv = {
		    (time_t)(call->wait_ms / 1000), (suseconds_t)(call->wait_ms % 1000) * 1000};
		evtimer_add(call->timer, &tv);
	}
	return 0;
}

/* host_message_rewind - message_read from the start again */
static void
host_message_rewind(struct pc_call *call)
{
	call->msg_pos = 0;
	call_cur_free(call);
}

/* host_body_rewind - body_read from the start again */
static void
host_body_rewind(struct pc_call *call)
{
	call->body_pos = 0;
}

/* host_add_header - prepended when the message goes to the backend */
static int
host_add_header(struct pc_call *call, const char *name, const char *value)
{
	if (!call->in_stage || call->stage != PC_STAGE_DATA || value == NULL)
		return -1;
	return edit_add_header(&call->cs->edit, name, value);
}

/* host_remove_header - leave out incoming fields of that name */
static int
host_remove_header(struct pc_call *call, const char *name)
{
	if (!edit_header_ok(name, NULL) || call_message(call) != 0)
		return -1;
	if (message_remove(call->v->msg, name) > 0)
		call->cs->edited = 1;
	return 0;
}
