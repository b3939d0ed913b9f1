/*
 * dnsbl.c - the client's address against DNS blocklists (RFC 5782), the
 * way Postfix's reject_rbl_client does it: every zone of the section is
 * asked at once, on evdns, and a listing adds points to the message's
 * score, refuses the client's RCPTs (postmaster excepted), or refuses
 * the connection.
 *
 * Exports only the descriptor portcullis_plugin (see plugin.h). The keys,
 * reply texts and log lines are in doc/dnsbl.md; doc/plugins.md ("A model
 * asynchronous plugin") walks through this file.
 *
 *	[plugin dnsbl]
 *	zone = zen.spamhaus.org weight=5 action=rcpt codes=127.0.0.2-127.0.0.11
 *	zone = bl.example.net weight=2 action=score
 *
 * WHEN IT ASKS. Once per session: at connect if some zone has
 * action=reject (the verdict is due there), else at the first MAIL, so
 * that a client who authenticated first costs no query. The answers are
 * kept in session data (struct dnsbl_sess) for every later transaction
 * and RCPT, and in the instance's cache (dnsbl_common.h) for other
 * sessions of the same client, for the answer's TTL.
 *
 * HOW IT WAITS. dnsbl_lookup makes a job (struct bl_job) of one query per
 * zone, registers it with host->pending and starts the queries; the hook
 * returns PC_HOOK_PENDING. The job calls dnsbl_done when the last answer
 * is in or its deadline (timeout) passed, and dnsbl_done resumes the
 * call. If the host gives up first, bl_job_cancel cancels each query.
 *
 * Trusted clients (trusted_networks) are never looked up; authenticated
 * ones are never scored or refused (AUTH comes after connect, so an
 * action=reject zone still refuses them before they can log in).
 * A lookup that fails or times out counts as "not listed": mail passes,
 * and the log says so at most once a minute.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "portcullis/plugin.h"

#include "dnsbl_common.h"

/* Reply texts: Postfix's wording, so that a sender's postmaster who
 * knows one knows the other. */
#define DNSBL_REPLY_CONNECT "554 5.7.1 Service unavailable; client [%s] blocked using %s"
#define DNSBL_REPLY_RCPT "550 5.7.1 Service unavailable; client [%s] blocked using %s"

/* An instance: one section. */
struct dnsbl {
	struct bl_conf conf;
	int at_connect; /* some zone has action=reject: look up at connect */
};

/* What one session learnt: allocated at its first lookup, freed at close. */
struct dnsbl_sess {
	int looked_up; /* the answers below are in */
	int logged_exempt; /* the "authenticated: not checked" line went out */
	enum pc_stage stage; /* where the lookup was made */
	char ip[INET6_ADDRSTRLEN];
	enum bl_result result[BL_ZONES_MAX];
	uint32_t code[BL_ZONES_MAX];
	char reply[PC_REPLY_MAX];
};

static int dnsbl_init(struct pc_init *in, void **instance);
static void dnsbl_fini(void *instance);
static int dnsbl_connect(void *instance, struct pc_call *call, struct pc_verdict *v);
static int dnsbl_mail(void *instance, struct pc_call *call, struct pc_verdict *v);
static int dnsbl_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v);
static void dnsbl_close(void *instance, struct pc_call *call);
static struct dnsbl_sess *dnsbl_sess(struct pc_call *call, const struct pc_host *h);
static int dnsbl_reverse(const char *ip, char *out, size_t size);
static int dnsbl_lookup(
    struct dnsbl *d, struct pc_call *call, struct dnsbl_sess *s, struct pc_verdict *v);
static void dnsbl_done(struct bl_job *job);
static void dnsbl_decide(
    struct dnsbl *d, struct pc_call *call, struct dnsbl_sess *s, struct pc_verdict *v);
static int dnsbl_exempt_client(struct dnsbl *d, struct pc_call *call, struct dnsbl_sess *s);

static const char *const dnsbl_keys[] = {"zone", "dns_server", "timeout", "cache_size",
    "negative_ttl", "max_ttl", "exempt_recipients", NULL};

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "dnsbl",
    .version = "1.0",
    .keys = dnsbl_keys,
    .init = dnsbl_init,
    .fini = dnsbl_fini,
    .connect = dnsbl_connect,
    .mail = dnsbl_mail,
    .rcpt = dnsbl_rcpt,
    .close = dnsbl_close,
    /* A failure of ours (out of memory) must not stop mail: a lookup
     * that cannot be made is a client that is not listed. */
    .on_error = "accept",
};

/* ---- configuration ---- */

/* dnsbl_init - the section's zones and keys */
static int
dnsbl_init(struct pc_init *in, void **instance)
{
	struct dnsbl *d;
	const struct pc_option *o;
	size_t i;
	int rc;

	if ((d = calloc(1, sizeof(*d))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	bl_conf_init(&d->conf, in, "dnsbl", NULL);
	for (o = in->options; o != NULL; o = o->next) {
		/* dnsbl_keys are all common keys: the host refused others. */
		if (bl_conf_option(&d->conf, o, in->err, in->errlen, &rc) && rc != 0) {
			in->err_line = o->line;
			dnsbl_fini(d);
			return -1;
		}
	}
	if (bl_conf_finish(&d->conf, in, in->err, in->errlen) != 0) {
		in->err_line = in->line;
		dnsbl_fini(d);
		return -1;
	}
	for (i = 0; i < d->conf.nzones; i++)
		if (d->conf.zones[i].action == BL_ACT_REJECT)
			d->at_connect = 1;
	*instance = d;
	return 0;
}

/* dnsbl_fini - every session is closed; cancelled jobs never touch d */
static void
dnsbl_fini(void *instance)
{
	struct dnsbl *d = instance;

	bl_conf_free(&d->conf);
	free(d);
}

/* ---- the hooks ---- */

/* dnsbl_connect - look up now if a zone must be able to refuse now */
static int
dnsbl_connect(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct dnsbl *d = instance;
	struct dnsbl_sess *s;

	if (!d->at_connect || d->conf.host->get(call, PC_CLIENT_TRUSTED) != NULL)
		return PC_HOOK_DONE;
	if ((s = dnsbl_sess(call, d->conf.host)) == NULL) {
		v->action = PC_FAIL;
		return PC_HOOK_DONE;
	}
	return dnsbl_lookup(d, call, s, v);
}

/* dnsbl_mail - score this transaction; the first MAIL of a session that
 * was not looked up at connect looks up now */
static int
dnsbl_mail(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct dnsbl *d = instance;
	struct dnsbl_sess *s;

	if ((s = dnsbl_sess(call, d->conf.host)) == NULL) {
		v->action = PC_FAIL;
		return PC_HOOK_DONE;
	}
	if (dnsbl_exempt_client(d, call, s))
		return PC_HOOK_DONE;
	if (!s->looked_up)
		return dnsbl_lookup(d, call, s, v);
	dnsbl_decide(d, call, s, v);
	return PC_HOOK_DONE;
}

/* dnsbl_rcpt - refuse the recipient if an action=rcpt zone lists the
 * client, unless it is one of exempt_recipients */
static int
dnsbl_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct dnsbl *d = instance;
	const struct pc_host *h = d->conf.host;
	struct dnsbl_sess *s;
	const char *rcpt;
	size_t i;

	if ((s = *h->session_data(call)) == NULL || !s->looked_up ||
	    dnsbl_exempt_client(d, call, s))
		return PC_HOOK_DONE;
	for (i = 0; i < d->conf.nzones; i++) {
		const struct bl_zone *z = &d->conf.zones[i];

		if (s->result[i] != BL_LISTED || z->action != BL_ACT_RCPT)
			continue;
		rcpt = h->get(call, PC_RCPT);
		if (bl_exempt_rcpt(&d->conf, rcpt)) {
			h->log(d->conf.self, call, PC_LOG_INFO,
			    "dnsbl: client %s listed in %s, but <%s> is exempt: passed", s->ip,
			    z->name, rcpt);
			return PC_HOOK_DONE;
		}
		snprintf(s->reply, sizeof(s->reply), DNSBL_REPLY_RCPT, s->ip, z->name);
		v->action = PC_REJECT;
		v->reply = s->reply;
		return PC_HOOK_DONE;
	}
	return PC_HOOK_DONE;
}

/* dnsbl_close - the session is over */
static void
dnsbl_close(void *instance, struct pc_call *call)
{
	struct dnsbl *d = instance;
	void **slot = d->conf.host->session_data(call);

	free(*slot);
	*slot = NULL;
}

/* ---- helpers ---- */

/* dnsbl_sess - the session's state, made on first use */
static struct dnsbl_sess *
dnsbl_sess(struct pc_call *call, const struct pc_host *h)
{
	void **slot = h->session_data(call);

	if (*slot == NULL)
		*slot = calloc(1, sizeof(struct dnsbl_sess));
	return *slot;
}

/* dnsbl_exempt_client - an authenticated client is never scored or
 * refused after AUTH (trusted ones are never even looked up) */
static int
dnsbl_exempt_client(struct dnsbl *d, struct pc_call *call, struct dnsbl_sess *s)
{
	const struct pc_host *h = d->conf.host;
	const char *user;

	if (h->get(call, PC_CLIENT_TRUSTED) != NULL)
		return 1;
	if ((user = h->get(call, PC_AUTH_USER)) == NULL)
		return 0;
	if (!s->logged_exempt) {
		h->log(d->conf.self, call, PC_LOG_INFO,
		    "dnsbl: authenticated client (%s): not checked", user);
		s->logged_exempt = 1;
	}
	return 1;
}

/* dnsbl_reverse - the RFC 5782 name of an address, without the zone:
 * 7.2.0.192 for 192.0.2.7 (§2.1), 32 nibbles, lowest first, for IPv6
 * (§2.4); an IPv4-mapped IPv6 address is its IPv4 address. 0 or -1. */
static int
dnsbl_reverse(const char *ip, char *out, size_t size)
{
	unsigned char a[16];
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	int i;

	if (inet_pton(AF_INET, ip, a) == 1) {
		snprintf(out, size, "%u.%u.%u.%u", a[3], a[2], a[1], a[0]);
		return 0;
	}
	if (inet_pton(AF_INET6, ip, a) != 1 || size < 64)
		return -1;
	if (memcmp(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
		snprintf(out, size, "%u.%u.%u.%u", a[15], a[14], a[13], a[12]);
		return 0;
	}
	for (i = 15; i >= 0; i--) {
		out[o++] = hex[a[i] & 0xf];
		out[o++] = '.';
		out[o++] = hex[a[i] >> 4];
		out[o++] = i > 0 ? '.' : '\0';
	}
	return 0;
}

/*
 * dnsbl_lookup - ask every zone about the client, in parallel: one job
 * with one query per zone. The call goes pending first; bl_job_run then
 * answers from the cache what it can (and if that is everything, the
 * job finishes and resumes the call before we even return) and sends
 * the rest. Either way the hook returns PC_HOOK_PENDING, and
 * dnsbl_done, called once per job, resumes the call.
 */
static int
dnsbl_lookup(struct dnsbl *d, struct pc_call *call, struct dnsbl_sess *s, struct pc_verdict *v)
{
	const struct pc_host *h = d->conf.host;
	const char *ip = h->get(call, PC_CLIENT_IP);
	char rev[80];
	struct bl_job *job;
	size_t i;

	s->looked_up = 1; /* once per session, whatever comes of it */
	s->stage = h->stage(call);
	snprintf(s->ip, sizeof(s->ip), "%s", ip != NULL ? ip : "");
	if (ip == NULL || dnsbl_reverse(ip, rev, sizeof(rev)) != 0)
		return PC_HOOK_DONE; /* no address (a UNIX socket?): nothing to ask */
	if ((job = bl_job_new(&d->conf, call, d->conf.nzones, dnsbl_done, s)) == NULL) {
		v->action = PC_FAIL;
		v->reply = "out of memory";
		return PC_HOOK_DONE;
	}
	for (i = 0; i < d->conf.nzones; i++) {
		job->q[i].zone = i;
		snprintf(
		    job->q[i].name, sizeof(job->q[i].name), "%s.%s", rev, d->conf.zones[i].name);
	}
	if (h->pending(call, bl_job_cancel, job) != 0) {
		/* This call cannot wait: no answer is no listing. */
		free(job);
		h->log(d->conf.self, call, PC_LOG_WARN, "dnsbl: cannot wait here: not checked");
		return PC_HOOK_DONE;
	}
	bl_job_run(job);
	return PC_HOOK_PENDING;
}

/* dnsbl_done - the job is over (every zone answered, or the deadline
 * passed): keep the answers in the session, log, decide, resume */
static void
dnsbl_done(struct bl_job *job)
{
	struct dnsbl_sess *s = job->arg;
	struct dnsbl *d = (struct dnsbl *)job->conf; /* conf is d's first member */
	const struct pc_host *h = d->conf.host;
	struct pc_verdict v = {PC_CONTINUE, NULL};
	char code[INET_ADDRSTRLEN];
	size_t i;

	for (i = 0; i < job->n; i++) {
		const struct bl_query *q = &job->q[i];
		const struct bl_zone *z = &d->conf.zones[q->zone];

		s->result[q->zone] = q->result;
		s->code[q->zone] = q->code;
		if (q->result == BL_LISTED)
			h->log(d->conf.self, job->call, PC_LOG_INFO,
			    "dnsbl: client %s listed in %s (%s%s), weight %g, action %s", s->ip,
			    z->name, bl_code_str(q->code, code, sizeof(code)),
			    q->cached ? ", cached" : "", z->weight, bl_action_names[z->action]);
	}
	bl_report(&d->conf, job->call, job, "the client");
	dnsbl_decide(d, job->call, s, &v);
	/* The host copies v.reply (s->reply) before resume returns. */
	h->resume(job->call, &v);
}

/* dnsbl_decide - at connect: refuse if an action=reject zone lists the
 * client. At MAIL: add every listing zone's weight to the transaction. */
static void
dnsbl_decide(struct dnsbl *d, struct pc_call *call, struct dnsbl_sess *s, struct pc_verdict *v)
{
	const struct pc_host *h = d->conf.host;
	char detail[300], code[INET_ADDRSTRLEN];
	size_t i;

	for (i = 0; i < d->conf.nzones; i++) {
		const struct bl_zone *z = &d->conf.zones[i];

		if (s->result[i] != BL_LISTED)
			continue;
		if (h->stage(call) == PC_STAGE_CONNECT) {
			if (z->action != BL_ACT_REJECT)
				continue;
			snprintf(s->reply, sizeof(s->reply), DNSBL_REPLY_CONNECT, s->ip, z->name);
			v->action = PC_REJECT;
			v->reply = s->reply;
			return;
		}
		/* Scores belong to the transaction: an authenticated
		 * client never gets here, and each MAIL starts afresh. */
		snprintf(detail, sizeof(detail), "%s listed in %s (%s)", s->ip, z->name,
		    bl_code_str(s->code[i], code, sizeof(code)));
		if (h->add_score(call, z->symbol, z->weight, detail) != 0)
			h->log(d->conf.self, call, PC_LOG_WARN, "dnsbl: could not add score %s",
			    z->symbol);
	}
}
