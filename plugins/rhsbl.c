/*
 * rhsbl.c - domain names against right-hand-side blocklists (RFC 5782
 * §2.3, such as Spamhaus DBL): the MAIL FROM domain, the HELO name and
 * the domain of the From: header field. Same shape as dnsbl.c, and the
 * same shared code (dnsbl_common.h): every zone asked at once, weights
 * added as scores, answers cached for their TTL, lookups that fail pass.
 *
 * Exports only the descriptor portcullis_plugin (see plugin.h). Keys,
 * reply texts and log lines are in doc/dnsbl.md.
 *
 *	[plugin rhsbl]
 *	zone = dbl.spamhaus.org weight=4 action=rcpt codes=127.0.1.2-127.0.1.99
 *	zone = rhsbl.example.net weight=1 action=score check=sender,from
 *
 * WHEN IT ASKS. At MAIL, the sender's domain and the HELO name together
 * (one job); at the end of DATA, the From: domain. A zone's check= says
 * which of the three it is asked about (default all). The name asked is
 * the domain as written (lower case) followed by the zone: the list
 * decides what it lists (whole domains, host names).
 *
 * WHAT A LISTING DOES (a zone's action=):
 *	reject  the sender or HELO name: 550 at MAIL; the From: domain: 550
 *	        at the end of DATA
 *	rcpt    the sender or HELO name: 550 to each RCPT except the exempt
 *	        recipients (postmaster); the From: domain: 550 at DATA,
 *	        unless every recipient is exempt (the default)
 *	score   nothing but the weight
 * A zone's weight is added once per transaction, at its first listing.
 * Trusted and authenticated clients are never checked.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portcullis/plugin.h"

#include "dnsbl_common.h"

/* What is checked: bit numbers of a zone's checks, and index of the
 * names in rhsbl_items (for check=). */
enum rhsbl_item {
	RHSBL_SENDER = 0,
	RHSBL_HELO,
	RHSBL_FROM,
	RHSBL_NITEMS,
};

static const char *const rhsbl_items[] = {"sender", "helo", "from", NULL};
/* How a name is called in replies and logs. */
static const char *const rhsbl_item_text[] = {"sender domain", "HELO name", "From: domain"};

/* Postfix's wording, as dnsbl's: "sender domain spam.example blocked using dbl.example". */
#define RHSBL_REPLY "550 5.7.1 Service unavailable; %s %.*s blocked using %s"

/* An instance: one section. */
struct rhsbl {
	struct bl_conf conf; /* first: dnsbl_common.h's jobs point at it */
};

/* One transaction's state: made at MAIL, freed by reset. */
struct rhsbl_tx {
	uint64_t scored; /* zones whose weight is in the transaction */
	int rcpt_zone; /* an action=rcpt zone lists the sender or HELO: -1 none */
	enum rhsbl_item rcpt_item;
	char rcpt_name[BL_NAME_MAX];
	char reply[PC_REPLY_MAX];
};

static int rhsbl_init(struct pc_init *in, void **instance);
static void rhsbl_fini(void *instance);
static int rhsbl_mail(void *instance, struct pc_call *call, struct pc_verdict *v);
static int rhsbl_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v);
static int rhsbl_data(void *instance, struct pc_call *call, struct pc_verdict *v);
static void rhsbl_reset(void *instance, struct pc_call *call);
static int rhsbl_exempt_client(struct rhsbl *r, struct pc_call *call);
static int rhsbl_from_domain(const char *value, char *out, size_t size);
static size_t rhsbl_add(
    struct rhsbl *r, struct bl_job *job, size_t n, enum rhsbl_item item, const char *domain);
static int rhsbl_lookup(struct rhsbl *r, struct pc_call *call, struct rhsbl_tx *tx,
    const char *names[RHSBL_NITEMS], struct pc_verdict *v);
static void rhsbl_done(struct bl_job *job);
static int rhsbl_all_exempt(struct rhsbl *r, struct pc_call *call);

static const char *const rhsbl_keys[] = {"zone", "dns_server", "timeout", "cache_size",
    "negative_ttl", "max_ttl", "exempt_recipients", NULL};

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "rhsbl",
    .version = "1.0",
    .keys = rhsbl_keys,
    .init = rhsbl_init,
    .fini = rhsbl_fini,
    .mail = rhsbl_mail,
    .rcpt = rhsbl_rcpt,
    .data = rhsbl_data,
    .reset = rhsbl_reset,
    /* A failure of ours must not stop mail (as for dnsbl). */
    .on_error = "accept",
};

/* ---- configuration ---- */

static int
rhsbl_init(struct pc_init *in, void **instance)
{
	struct rhsbl *r;
	const struct pc_option *o;
	int rc;

	if ((r = calloc(1, sizeof(*r))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	bl_conf_init(&r->conf, in, "rhsbl", rhsbl_items);
	for (o = in->options; o != NULL; o = o->next) {
		if (bl_conf_option(&r->conf, o, in->err, in->errlen, &rc) && rc != 0) {
			in->err_line = o->line;
			rhsbl_fini(r);
			return -1;
		}
	}
	if (bl_conf_finish(&r->conf, in, in->err, in->errlen) != 0) {
		in->err_line = in->line;
		rhsbl_fini(r);
		return -1;
	}
	*instance = r;
	return 0;
}

static void
rhsbl_fini(void *instance)
{
	struct rhsbl *r = instance;

	bl_conf_free(&r->conf);
	free(r);
}

/* ---- the hooks ---- */

/* rhsbl_mail - the sender's domain and the HELO name, every zone at once */
static int
rhsbl_mail(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct rhsbl *r = instance;
	const struct pc_host *h = r->conf.host;
	const char *names[RHSBL_NITEMS] = {NULL, NULL, NULL};
	struct rhsbl_tx *tx;
	void **slot;

	if (rhsbl_exempt_client(r, call))
		return PC_HOOK_DONE;
	slot = h->tx_data(call);
	if (*slot == NULL && (*slot = calloc(1, sizeof(struct rhsbl_tx))) == NULL) {
		v->action = PC_FAIL;
		return PC_HOOK_DONE;
	}
	tx = *slot;
	tx->rcpt_zone = -1;
	names[RHSBL_SENDER] = h->get(call, PC_SENDER_DOMAIN); /* NULL for <> */
	names[RHSBL_HELO] = h->get(call, PC_HELO);
	return rhsbl_lookup(r, call, tx, names, v);
}

/* rhsbl_rcpt - refuse the recipient if an action=rcpt zone listed the
 * sender's domain or the HELO name, unless it is exempt (postmaster) */
static int
rhsbl_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct rhsbl *r = instance;
	const struct pc_host *h = r->conf.host;
	struct rhsbl_tx *tx = *h->tx_data(call);
	const char *rcpt;

	if (tx == NULL || tx->rcpt_zone < 0 || rhsbl_exempt_client(r, call))
		return PC_HOOK_DONE;
	rcpt = h->get(call, PC_RCPT);
	if (bl_exempt_rcpt(&r->conf, rcpt)) {
		h->log(r->conf.self, call, PC_LOG_INFO,
		    "rhsbl: %s %s listed in %s, but <%s> is exempt: passed",
		    rhsbl_item_text[tx->rcpt_item], tx->rcpt_name,
		    r->conf.zones[tx->rcpt_zone].name, rcpt);
		return PC_HOOK_DONE;
	}
	snprintf(tx->reply, sizeof(tx->reply), RHSBL_REPLY, rhsbl_item_text[tx->rcpt_item],
	    (int)strlen(tx->rcpt_name), tx->rcpt_name, r->conf.zones[tx->rcpt_zone].name);
	v->action = PC_REJECT;
	v->reply = tx->reply;
	return PC_HOOK_DONE;
}

/* rhsbl_data - the From: header field's domain */
static int
rhsbl_data(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct rhsbl *r = instance;
	const struct pc_host *h = r->conf.host;
	const char *names[RHSBL_NITEMS] = {NULL, NULL, NULL};
	const char *from;
	char domain[BL_NAME_MAX];
	struct rhsbl_tx *tx;

	if (rhsbl_exempt_client(r, call) || (tx = *h->tx_data(call)) == NULL)
		return PC_HOOK_DONE;
	if ((from = h->header(call, "From", 0)) == NULL ||
	    rhsbl_from_domain(from, domain, sizeof(domain)) != 0)
		return PC_HOOK_DONE; /* no From:, or no domain in it we could ask */
	names[RHSBL_FROM] = domain;
	return rhsbl_lookup(r, call, tx, names, v);
}

/* rhsbl_reset - the transaction is over */
static void
rhsbl_reset(void *instance, struct pc_call *call)
{
	struct rhsbl *r = instance;
	void **slot = r->conf.host->tx_data(call);

	free(*slot);
	*slot = NULL;
}

/* ---- helpers ---- */

/* rhsbl_exempt_client - trusted and authenticated clients are not checked */
static int
rhsbl_exempt_client(struct rhsbl *r, struct pc_call *call)
{
	const struct pc_host *h = r->conf.host;

	return h->get(call, PC_CLIENT_TRUSTED) != NULL || h->get(call, PC_AUTH_USER) != NULL;
}

/*
 * rhsbl_from_domain - the domain of the first address in a From: value
 * (RFC 5322 §3.6.2): "Name <user@example.org>", "user@example.org
 * (Name)", "\"a <b>\" <user@example.org>". Comments and quoted strings
 * are skipped; the address is the first one in angle brackets, else the
 * first word with an '@'. 0, or -1 when there is no domain we could ask
 * about (an address literal, a group with no address, garbage).
 */
static int
rhsbl_from_domain(const char *value, char *out, size_t size)
{
	char addr[512];
	size_t n = 0;
	int quoted = 0, depth = 0, angle = 0;
	const char *p, *at;

	for (p = value; *p != '\0' && n + 1 < sizeof(addr); p++) {
		if (*p == '\\' && p[1] != '\0' && (quoted || depth > 0)) {
			p++;
			continue;
		}
		if (quoted) {
			quoted = *p != '"';
			continue;
		}
		if (depth > 0) {
			depth += *p == '(' ? 1 : *p == ')' ? -1 : 0;
			continue;
		}
		if (*p == '"' && !angle) {
			quoted = 1;
		} else if (*p == '(') {
			depth = 1;
		} else if (*p == '<') {
			n = 0; /* the bracketed address wins over what came before */
			angle = 1;
		} else if (*p == '>' && angle) {
			break;
		} else if (*p == ',' && !angle) {
			break; /* the first address of a list */
		} else if (*p != ' ' && *p != '\t') {
			addr[n++] = *p;
		}
	}
	addr[n] = '\0';
	if ((at = strrchr(addr, '@')) == NULL)
		return -1;
	return bl_domain(at + 1, strlen(at + 1), 1, out, size);
}

/* rhsbl_add - queries for domain at every zone that checks item: the
 * next free slots of job from n on; the new count */
static size_t
rhsbl_add(struct rhsbl *r, struct bl_job *job, size_t n, enum rhsbl_item item, const char *domain)
{
	char d[BL_NAME_MAX];
	size_t i;

	/* Client-supplied: an IP literal, a name without a dot or with odd
	 * characters is not asked about. */
	if (domain == NULL || domain[0] == '[' ||
	    bl_domain(domain, strlen(domain), 1, d, sizeof(d)) != 0)
		return n;
	for (i = 0; i < r->conf.nzones; i++) {
		const struct bl_zone *z = &r->conf.zones[i];

		if (!(z->checks & (1u << item)))
			continue;
		/* A name past 253 octets cannot be asked, nor listed. */
		if (snprintf(job->q[n].name, sizeof(job->q[n].name), "%s.%s", d, z->name) > 253)
			continue;
		job->q[n].zone = i;
		job->q[n].item = (int)item;
		n++;
	}
	return n;
}

/*
 * rhsbl_lookup - ask every zone about every name given (NULL: not
 * asked), in one job; as dnsbl_lookup: pending first, then
 * bl_job_run, and rhsbl_done resumes the call.
 */
static int
rhsbl_lookup(struct rhsbl *r, struct pc_call *call, struct rhsbl_tx *tx,
    const char *names[RHSBL_NITEMS], struct pc_verdict *v)
{
	const struct pc_host *h = r->conf.host;
	struct bl_job *job;
	size_t n = 0;
	int i;

	job = bl_job_new(&r->conf, call, r->conf.nzones * RHSBL_NITEMS, rhsbl_done, tx);
	if (job == NULL) {
		v->action = PC_FAIL;
		v->reply = "out of memory";
		return PC_HOOK_DONE;
	}
	for (i = 0; i < RHSBL_NITEMS; i++)
		n = rhsbl_add(r, job, n, (enum rhsbl_item)i, names[i]);
	job->n = n;
	if (n == 0 || h->pending(call, bl_job_cancel, job) != 0) {
		free(job); /* nothing to ask (or no way to wait): not listed */
		return PC_HOOK_DONE;
	}
	bl_job_run(job);
	return PC_HOOK_PENDING;
}

/* rhsbl_all_exempt - every accepted recipient is exempt (postmaster) */
static int
rhsbl_all_exempt(struct rhsbl *r, struct pc_call *call)
{
	const struct pc_host *h = r->conf.host;
	size_t i, n = h->rcpt_count(call);

	for (i = 0; i < n; i++)
		if (!bl_exempt_rcpt(&r->conf, h->rcpt(call, i)))
			return 0;
	return n > 0;
}

/* rhsbl_done - the job is over: log and score the listings, decide,
 * resume. At MAIL, an action=reject listing refuses the sender and an
 * action=rcpt one is kept for the RCPTs; at DATA, either refuses the
 * message (rcpt: unless every recipient is exempt). */
static void
rhsbl_done(struct bl_job *job)
{
	struct rhsbl_tx *tx = job->arg;
	struct rhsbl *r = (struct rhsbl *)job->conf;
	const struct pc_host *h = r->conf.host;
	struct pc_call *call = job->call;
	int at_data = h->stage(call) == PC_STAGE_DATA;
	struct pc_verdict v = {PC_CONTINUE, NULL};
	char code[INET_ADDRSTRLEN], detail[300];
	size_t i;

	for (i = 0; i < job->n; i++) {
		const struct bl_query *q = &job->q[i];
		const struct bl_zone *z = &r->conf.zones[q->zone];
		const char *what = rhsbl_item_text[q->item];
		size_t dlen = strlen(q->name) - strlen(z->name) - 1; /* the domain asked */

		if (q->result != BL_LISTED)
			continue;
		bl_code_str(q->code, code, sizeof(code));
		h->log(r->conf.self, call, PC_LOG_INFO,
		    "rhsbl: %s %.*s listed in %s (%s%s), weight %g, action %s", what, (int)dlen,
		    q->name, z->name, code, q->cached ? ", cached" : "", z->weight,
		    bl_action_names[z->action]);
		if (!(tx->scored & (1ULL << q->zone))) {
			tx->scored |= 1ULL << q->zone;
			snprintf(detail, sizeof(detail), "%s %.*s listed in %s (%s)", what,
			    (int)dlen, q->name, z->name, code);
			if (h->add_score(call, z->symbol, z->weight, detail) != 0)
				h->log(r->conf.self, call, PC_LOG_WARN,
				    "rhsbl: could not add score %s", z->symbol);
		}
		if (v.action != PC_CONTINUE || z->action == BL_ACT_SCORE)
			continue;
		if (z->action == BL_ACT_RCPT && !at_data) {
			if (tx->rcpt_zone < 0) {
				tx->rcpt_zone = (int)q->zone;
				tx->rcpt_item = (enum rhsbl_item)q->item;
				snprintf(tx->rcpt_name, sizeof(tx->rcpt_name), "%.*s", (int)dlen,
				    q->name);
			}
			continue;
		}
		if (z->action == BL_ACT_RCPT && rhsbl_all_exempt(r, call)) {
			h->log(r->conf.self, call, PC_LOG_INFO,
			    "rhsbl: every recipient is exempt: the message passes");
			continue;
		}
		snprintf(
		    tx->reply, sizeof(tx->reply), RHSBL_REPLY, what, (int)dlen, q->name, z->name);
		v.action = PC_REJECT;
		v.reply = tx->reply;
	}
	bl_report(
	    &r->conf, call, job, at_data ? "the From: domain" : "the sender domain and HELO name");
	h->resume(call, &v);
}
