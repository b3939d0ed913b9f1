/*
 * tarpit.c - hold one stage's reply for a while, then answer: a tarpit, and
 * the worked example of an asynchronous hook (doc/plugins.md).
 *
 * Exports only the descriptor portcullis_plugin (see plugin.h). Section keys:
 *
 *	delay = 2s          how long to hold the reply, 1ms to 299s, written as the
 *	                    daemon's times are (500ms, 2s, 1m; default 2s)
 *	stage = rcpt        connect, helo, mail, rcpt or data (default rcpt)
 *	then = continue     the verdict once the delay is over: continue,
 *	                    tempfail or reject (default continue)
 *	reply = TEXT        the reply text for tempfail or reject
 *
 * A bulk sender that opens many sessions pays the delay on every one of
 * them; a real MTA waits and goes on. The delay must stay below the
 * section's filter_timeout (30s by default), or every held reply becomes
 * the on_error reply instead.
 *
 * HOW IT WAITS. A hook must never block the daemon's one event loop: a
 * sleep() here would stop every other session. So the hook registers the
 * call as pending, arms a libevent timer on the host's event base, and
 * returns PC_HOOK_PENDING at once. The loop goes on serving everybody
 * else; when the timer fires, tarpit_release answers with host->resume.
 * If the host gives up first (the client went away, filter_timeout), it
 * calls tarpit_cancel instead, which must stop the timer and free the
 * call's state: after cancel, the call is gone and the timer must never
 * fire into it. Exactly one of resume and cancel ends each pending call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

#include "portcullis/plugin.h"

/* The longest delay a section may ask for, 299s: below the 5 minutes after
 * which RFC 5321 §4.5.3.2 lets a client give up on a reply. A tarpit that
 * long only makes every sender time out, and holds a session slot all the
 * while. */
#define TARPIT_DELAY_MAX_MS (299 * 1000)
#define TARPIT_DELAY_DEFAULT_MS 2000

/* An instance: one [plugin tarpit] section, read once at init. */
struct tarpit {
	const struct pc_host *host;
	struct pc_instance *self;
	long delay_ms;
	enum pc_stage stage;
	enum pc_action then;
	char *reply; /* NULL: the host's default text for the verdict */
};

/* One held reply: everything a pending call owns. It is freed exactly once,
 * by whichever of tarpit_release and tarpit_cancel ends the call. */
struct tarpit_hold {
	struct tarpit *tp;
	struct pc_call *call; /* valid until resume or cancel */
	struct event *timer;
	/* The session id, copied: strings from host->get() last only until
	 * the hook returns, and cancel may not use the call to log with. */
	char session[32];
};

static int tarpit_init(struct pc_init *in, void **instance);
static void tarpit_fini(void *instance);
static int tarpit_option(struct tarpit *tp, const struct pc_option *o, char *err, size_t errlen);
static int tarpit_hook(void *instance, struct pc_call *call, struct pc_verdict *v);
static void tarpit_release(evutil_socket_t fd, short what, void *arg);
static void tarpit_cancel(void *arg);
static void tarpit_verdict(const struct tarpit *tp, struct pc_verdict *v);

static const char *const tarpit_stage_names[] = {"connect", "helo", "mail", "rcpt", "data"};
#define TARPIT_NSTAGES (sizeof(tarpit_stage_names) / sizeof(tarpit_stage_names[0]))

static const char *const tarpit_keys[] = {"delay", "stage", "then", "reply", NULL};

/* Every stage's hook is the same function: it asks host->stage() which one
 * it is, and holds only the configured one. */
const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "tarpit",
    .version = "1.0",
    .keys = tarpit_keys,
    .init = tarpit_init,
    .fini = tarpit_fini,
    .connect = tarpit_hook,
    .helo = tarpit_hook,
    .mail = tarpit_hook,
    .rcpt = tarpit_hook,
    .data = tarpit_hook,
};

/* ---- configuration: once, at start (and at portcullis -t) ---- */

/* tarpit_init - read the section's keys into a new instance */
static int
tarpit_init(struct pc_init *in, void **instance)
{
	struct tarpit *tp;
	const struct pc_option *o;

	if ((tp = calloc(1, sizeof(*tp))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	tp->host = in->host;
	tp->self = in->self;
	tp->delay_ms = TARPIT_DELAY_DEFAULT_MS;
	tp->stage = PC_STAGE_RCPT;
	tp->then = PC_CONTINUE;
	/* The host has already refused keys not in tarpit_keys; here only the
	 * values are checked, and a bad one names its own line. */
	for (o = in->options; o != NULL; o = o->next) {
		if (tarpit_option(tp, o, in->err, in->errlen) < 0) {
			in->err_line = o->line;
			tarpit_fini(tp);
			return -1;
		}
	}
	if (tp->reply != NULL && tp->then == PC_CONTINUE) {
		snprintf(in->err, in->errlen, "reply needs then = tempfail or reject");
		in->err_line = in->line;
		tarpit_fini(tp);
		return -1;
	}
	*instance = tp;
	return 0;
}

/* tarpit_option - one key; 0, or -1 with a message in err */
static int
tarpit_option(struct tarpit *tp, const struct pc_option *o, char *err, size_t errlen)
{
	unsigned long long ms;
	size_t i;

	if (strcmp(o->key, "delay") == 0) {
		/* The host's parser, so "delay = 500ms" reads as the daemon's own
		 * times do. Its message would offer "5m" and "1h", which are out
		 * of bounds here: one message says both what and how much. */
		if (tp->host->opt_time(o->value, &ms, NULL, 0) == 0 && ms >= 1 &&
		    ms <= TARPIT_DELAY_MAX_MS) {
			tp->delay_ms = (long)ms;
			return 0;
		}
		snprintf(err, errlen,
		    "delay: bad value \"%s\": expected a time from 1ms to 299s "
		    "(e.g. 500ms, 2s, 1m)",
		    o->value);
		return -1;
	}
	if (strcmp(o->key, "stage") == 0) {
		for (i = 0; i < TARPIT_NSTAGES; i++) {
			if (strcmp(o->value, tarpit_stage_names[i]) == 0) {
				tp->stage = (enum pc_stage)i;
				return 0;
			}
		}
		snprintf(err, errlen,
		    "stage: bad value \"%s\": want connect, helo, mail, rcpt or data", o->value);
		return -1;
	}
	if (strcmp(o->key, "then") == 0) {
		if (strcmp(o->value, "continue") == 0)
			tp->then = PC_CONTINUE;
		else if (strcmp(o->value, "tempfail") == 0)
			tp->then = PC_TEMPFAIL;
		else if (strcmp(o->value, "reject") == 0)
			tp->then = PC_REJECT;
		else {
			snprintf(err, errlen,
			    "then: bad value \"%s\": want continue, tempfail or reject", o->value);
			return -1;
		}
		return 0;
	}
	/* reply: the host validates the text when it is used (a bad one is the
	 * section's on_error action), so here it is only kept. */
	free(tp->reply);
	if ((tp->reply = strdup(o->value)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/* tarpit_fini - free an instance (no call of it is pending any more) */
static void
tarpit_fini(void *instance)
{
	struct tarpit *tp = instance;

	free(tp->reply);
	free(tp);
}

/* ---- the hook and its two endings ---- */

/* tarpit_hook - at the configured stage, hold the reply: go pending and
 * arm a timer. At any other stage, no opinion. */
static int
tarpit_hook(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct tarpit *tp = instance;
	struct tarpit_hold *h;
	struct timeval tv;
	const char *id;

	/* *v starts as "continue"; leaving it so is "no opinion". */
	if (tp->host->stage(call) != tp->stage)
		return PC_HOOK_DONE;

	/* Everything the wait needs, in one allocation that cancel can free. */
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		v->action = PC_FAIL; /* the host applies on_error */
		return PC_HOOK_DONE;
	}
	h->tp = tp;
	h->call = call;
	id = tp->host->get(call, PC_SESSION_ID);
	snprintf(h->session, sizeof(h->session), "%s", id != NULL ? id : "-");
	/* The timer runs on the host's event base: the daemon's one loop. */
	if ((h->timer = evtimer_new(tp->host->base, tarpit_release, h)) == NULL) {
		free(h);
		v->action = PC_FAIL;
		return PC_HOOK_DONE;
	}

	/* Tell the host an answer will follow. Should it refuse (a call that
	 * cannot wait), answer at once, without the delay. */
	if (tp->host->pending(call, tarpit_cancel, h) != 0) {
		event_free(h->timer);
		free(h);
		tarpit_verdict(tp, v);
		return PC_HOOK_DONE;
	}
	tv.tv_sec = tp->delay_ms / 1000;
	tv.tv_usec = (tp->delay_ms % 1000) * 1000;
	evtimer_add(h->timer, &tv);
	tp->host->log(tp->self, call, PC_LOG_INFO, "tarpit: holding %s for %ld ms",
	    tarpit_stage_names[tp->stage], tp->delay_ms);
	/* The session waits for resume or cancel; the event loop does not. */
	return PC_HOOK_PENDING;
}

/* tarpit_release - the timer fired: answer, and forget the call */
static void
tarpit_release(evutil_socket_t fd, short what, void *arg)
{
	struct tarpit_hold *h = arg;
	struct tarpit *tp = h->tp;
	struct pc_call *call = h->call;
	struct pc_verdict v = {PC_CONTINUE, NULL};

	tp->host->log(
	    tp->self, call, PC_LOG_INFO, "tarpit: released %s", tarpit_stage_names[tp->stage]);
	/* Free first: resume ends the call, and the host may go straight on
	 * to the next command and maybe this hook again, with a new hold. */
	event_free(h->timer);
	free(h);
	tarpit_verdict(tp, &v);
	/* The host copies v.reply before resume returns. */
	tp->host->resume(call, &v);
}

/* tarpit_cancel - the host gave up on the call (the client left, or
 * filter_timeout passed): stop the timer, free the hold, and never touch
 * the call again, not even to log with it. */
static void
tarpit_cancel(void *arg)
{
	struct tarpit_hold *h = arg;

	h->tp->host->log(h->tp->self, NULL, PC_LOG_INFO, "tarpit: session %s cancelled at %s",
	    h->session, tarpit_stage_names[h->tp->stage]);
	event_free(h->timer); /* event_free also removes a pending timer */
	free(h);
}

/* tarpit_verdict - the configured answer */
static void
tarpit_verdict(const struct tarpit *tp, struct pc_verdict *v)
{
	v->action = tp->then;
	v->reply = tp->reply;
}
