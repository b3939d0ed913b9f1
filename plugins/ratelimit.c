/*
 * ratelimit.c - rate and concurrency limits per client network,
 * authenticated user and sender domain, counted in the host's store so the
 * counts hold across workers and, with Redis, across proxies (Postfix anvil
 * and Haraka's limit plugin are the behaviour anchors).
 *
 * Exports only the descriptor portcullis_plugin (see plugin.h). Section keys
 * (doc/ratelimit.md documents them for admins):
 *
 *	client_connection_rate = COUNT/WINDOW     at connect, per network
 *	client_concurrency = N                    at connect, per network
 *	client_message_rate = COUNT/WINDOW        at MAIL, per network
 *	client_recipient_rate = COUNT/WINDOW      at RCPT, per network
 *	user_message_rate = COUNT/WINDOW          at MAIL, per AUTH user
 *	user_recipient_rate = COUNT/WINDOW        at RCPT, per AUTH user
 *	sender_domain_message_rate = COUNT/WINDOW at MAIL, per sender domain
 *	ipv4_prefix, ipv6_prefix, concurrency_ttl, exempt_networks, store
 *
 * WINDOWS. Fixed windows aligned to multiples of the window since the
 * epoch, as anvil's rate time unit: the store key carries the window's
 * number, and store_incr with a ttl of one window makes the counter go
 * away on its own. Every attempt counts, refused or not (anvil does the
 * same): a client that keeps hammering stays refused until the next
 * window starts. Limits of one stage are checked in a fixed order and the
 * first one over decides; the ones after it are not counted.
 *
 * CONCURRENCY. One counter per network, incremented at connect and
 * decremented exactly once at close, only when the increment happened
 * (the session's data remembers the key). A connect refused for
 * concurrency gives its slot back at once. So that counts a crashed proxy
 * left behind drain away, the counter lives in buckets of concurrency_ttl:
 * a session counts in the bucket it started in, and the count is that
 * bucket's plus the one before. A bucket lives for two bucket lengths, so
 * a session is counted for at least concurrency_ttl, and a dead proxy's
 * counts are gone within twice that.
 *
 * ASYNCHRONY. The store's operations complete through a callback, at once
 * (memory, LMDB) or later (Redis). A stage's checks are one job: the hook
 * goes pending, then runs the store operations one after the other, each
 * started from the callback of the one before, and the last resumes the
 * call. The job's cancel function cancels the request in flight and frees
 * the job; a concurrency increment in flight is let finish instead (the
 * job becomes an orphan) so that the slot it took is given back.
 *
 * FAILURES. A store that fails makes the hook answer PC_FAIL, and the
 * section's on_error (accept by default) decides: an outage must not stop
 * mail. The plugin logs it loudly, but at most once per
 * RL_WARN_EVERY_MS per instance, with the count of the failures it kept
 * quiet about.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "portcullis/plugin.h"

/* The limits, in the order they are checked at their stage. */
enum rl_kind {
	RL_CONN = 0,
	RL_CONC,
	RL_CLIENT_MSG,
	RL_USER_MSG,
	RL_DOMAIN_MSG,
	RL_CLIENT_RCPT,
	RL_USER_RCPT,
	RL_NKINDS,
};

/* Who a limit counts. */
enum rl_subject {
	RL_NETWORK = 0,
	RL_USER,
	RL_DOMAIN,
};

/* Bounds of the configuration values. A count above a billion or a window
 * above 30 days is a typo, not a policy; a window below a second is
 * shorter than the time a store round trip may take across proxies. */
#define RL_COUNT_MAX 1000000000ULL
#define RL_WINDOW_MIN_MS 1000ULL
#define RL_WINDOW_MAX_MS (30ULL * 86400 * 1000)
#define RL_CONC_TTL_DEFAULT_MS (3600ULL * 1000)
#define RL_V4_DEFAULT 24
#define RL_V6_DEFAULT 64

/* Store failures are logged at most this often per instance: an outage
 * must be seen, but not once per message. */
#define RL_WARN_EVERY_MS 60000ULL

/* At most this many store operations in one stage's job: connect has the
 * connection rate and the concurrency pair (increment, previous bucket). */
#define RL_STEPS_MAX 4

/* The longest subject kept as it is in a key; a longer one (a user name
 * is whatever the client authenticated as) is hashed. */
#define RL_SUBJECT_MAX 256
#define RL_SUBJECT_SIZE (RL_SUBJECT_MAX + 1)

/* How each limit reads and answers. */
struct rl_kind_info {
	const char *key; /* the section key */
	const char *tag; /* in the store key */
	enum pc_stage stage;
	enum rl_subject subject;
	enum pc_action action;
	const char *reply;
};

static const struct rl_kind_info rl_kinds[RL_NKINDS] = {
    [RL_CONN] = {"client_connection_rate", "conn", PC_STAGE_CONNECT, RL_NETWORK, PC_DISCONNECT,
        "4.7.0 Too many connections from your network, try again later"},
    [RL_CONC] = {"client_concurrency", "conc", PC_STAGE_CONNECT, RL_NETWORK, PC_DISCONNECT,
        "4.7.0 Too many concurrent connections from your network, try again later"},
    [RL_CLIENT_MSG] = {"client_message_rate", "cmsg", PC_STAGE_MAIL, RL_NETWORK, PC_TEMPFAIL,
        "451 4.7.1 Too many messages from your network, try again later"},
    [RL_USER_MSG] = {"user_message_rate", "umsg", PC_STAGE_MAIL, RL_USER, PC_TEMPFAIL,
        "451 4.7.1 Too many messages from your account, try again later"},
    [RL_DOMAIN_MSG] = {"sender_domain_message_rate", "dmsg", PC_STAGE_MAIL, RL_DOMAIN, PC_TEMPFAIL,
        "451 4.7.1 Too many messages from your sender domain, try again later"},
    [RL_CLIENT_RCPT] = {"client_recipient_rate", "crcpt", PC_STAGE_RCPT, RL_NETWORK, PC_TEMPFAIL,
        "452 4.7.1 Too many recipients from your network, try again later"},
    [RL_USER_RCPT] = {"user_recipient_rate", "urcpt", PC_STAGE_RCPT, RL_USER, PC_TEMPFAIL,
        "452 4.7.1 Too many recipients from your account, try again later"},
};

static const char *const rl_subject_names[] = {"network", "user", "domain"};

static const char *const rl_keys[] = {
    "client_connection_rate",
    "client_concurrency",
    "client_message_rate",
    "client_recipient_rate",
    "user_message_rate",
    "user_recipient_rate",
    "sender_domain_message_rate",
    "ipv4_prefix",
    "ipv6_prefix",
    "concurrency_ttl",
    "exempt_networks",
    "store",
    NULL,
};

/* One limit: COUNT per WINDOW (concurrency: COUNT, window unused). */
struct rl_limit {
	int set;
	unsigned long long count;
	unsigned long long window_ms;
};

struct rl_job;

/* An instance: one [plugin ratelimit] section. */
struct ratelimit {
	const struct pc_host *host;
	struct pc_instance *self;
	char *name; /* the instance name, in every key */
	struct pc_store *store;
	struct rl_limit lim[RL_NKINDS];
	unsigned v4bits, v6bits;
	unsigned long long conc_ttl_ms;
	struct pc_cidrs *exempt;
	/* Store failures since the last warning, and when that was. */
	uint64_t warned_ms;
	int warned;
	unsigned long quiet;
	/* Concurrency increments whose session gave up while they were in
	 * flight: each gives its slot back when it completes. */
	struct rl_job *orphans;
};

/* A session's state: the concurrency slot it holds, if any. */
struct rl_session {
	int held;
	char key[PC_STORE_KEY_MAX + 1];
	size_t klen;
};

/* One store operation of a job. */
struct rl_step {
	enum rl_kind kind;
	int get; /* read the previous concurrency bucket instead of counting */
	char key[PC_STORE_KEY_MAX + 1];
	size_t klen;
	unsigned long long ttl_ms;
};

/* One stage's checks, from the hook to resume or cancel. */
struct rl_job {
	struct ratelimit *rl;
	struct pc_call *call; /* NULL once cancelled */
	struct rl_session *sess; /* connect only */
	struct rl_step steps[RL_STEPS_MAX];
	size_t n, i;
	char subject[3][RL_SUBJECT_SIZE]; /* for the log, per rl_subject */
	struct pc_store_req *req; /* in flight, or NULL */
	int inflight; /* a store operation has not called back yet */
	int sync; /* inside the store call that started it */
	int stop; /* decided: over a limit, or the store failed */
	enum pc_action action;
	const char *reply;
	char why[256]; /* PC_FAIL: the store's reason */
	long long conc_count; /* this bucket's count, before the previous is added */
	struct rl_job *next; /* in rl->orphans */
};

static int rl_init(struct pc_init *in, void **instance);
static void rl_fini(void *instance);
static int rl_option(struct ratelimit *rl, const struct pc_option *o, char *err, size_t errlen);
static int rl_parse_rate(const struct pc_host *host, const char *value, struct rl_limit *l);
static int rl_parse_uint(const char *value, unsigned long long max, unsigned long long *out);
static int rl_connect(void *instance, struct pc_call *call, struct pc_verdict *v);
static int rl_mail(void *instance, struct pc_call *call, struct pc_verdict *v);
static int rl_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v);
static void rl_close(void *instance, struct pc_call *call);
static int rl_exempt(struct ratelimit *rl, struct pc_call *call);
static int rl_subjects(struct ratelimit *rl, struct pc_call *call, struct rl_job *j);
static struct rl_job *rl_job_new(struct ratelimit *rl, struct pc_call *call, struct pc_verdict *v);
static void rl_subject_set(char *out, const char *text);
static int rl_network(const char *ip, unsigned v4bits, unsigned v6bits, char *out, size_t len);
static void rl_add_step(struct rl_job *j, enum rl_kind kind, uint64_t now_ms);
static void rl_add_conc(struct rl_job *j, struct rl_session *sess, uint64_t now_ms);
static int rl_key(struct rl_job *j, struct rl_step *s, const char *tag, unsigned long long len,
    unsigned long long number);
static int rl_start(struct rl_job *j, struct pc_call *call, struct pc_verdict *v);
static void rl_run(struct rl_job *j);
static void rl_done(void *arg, const struct pc_store_result *r);
static void rl_account(struct rl_job *j, const struct pc_store_result *r);
static void rl_check(struct rl_job *j, enum rl_kind kind, long long count);
static void rl_finish(struct rl_job *j);
static void rl_cancel(void *arg);
static void rl_orphan_done(struct rl_job *j, const struct pc_store_result *r);
static void rl_release(struct ratelimit *rl, const char *key, size_t klen);
static void rl_store_failed(struct rl_job *j, const char *error);
static const char *rl_window(unsigned long long ms, char *buf, size_t len);
static uint64_t rl_wall_ms(void);
static uint64_t rl_mono_ms(void);

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "ratelimit",
    .version = "1.0",
    .keys = rl_keys,
    .init = rl_init,
    .fini = rl_fini,
    .connect = rl_connect,
    .mail = rl_mail,
    .rcpt = rl_rcpt,
    .close = rl_close,
    /* A store outage must not stop mail (issue 14, §1). */
    .on_error = "accept",
};

/* ---- configuration ---- */

/* rl_init - read the section, open the store */
static int
rl_init(struct pc_init *in, void **instance)
{
	struct ratelimit *rl;
	const struct pc_option *o, *p;
	const char *spec = NULL;
	int kind, any = 0;

	if ((rl = calloc(1, sizeof(*rl))) == NULL || (rl->name = strdup(in->name)) == NULL) {
		free(rl);
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	rl->host = in->host;
	rl->self = in->self;
	rl->v4bits = RL_V4_DEFAULT;
	rl->v6bits = RL_V6_DEFAULT;
	rl->conc_ttl_ms = RL_CONC_TTL_DEFAULT_MS;
	for (o = in->options; o != NULL; o = o->next) {
		for (p = in->options; p != o; p = p->next) {
			if (strcmp(p->key, o->key) == 0) {
				snprintf(in->err, in->errlen, "%s given twice (first on line %d)",
				    o->key, p->line);
				goto fail_at;
			}
		}
		if (strcmp(o->key, "store") == 0) {
			spec = o->value;
			continue;
		}
		if (rl_option(rl, o, in->err, in->errlen) < 0)
			goto fail_at;
	}
	for (kind = 0; kind < RL_NKINDS; kind++)
		any |= rl->lim[kind].set;
	if (!any) {
		snprintf(in->err, in->errlen,
		    "no limit given: set at least one of client_connection_rate, "
		    "client_concurrency, client_message_rate, client_recipient_rate, "
		    "user_message_rate, user_recipient_rate, sender_domain_message_rate");
		in->err_line = in->line;
		rl_fini(rl);
		return -1;
	}
	if ((rl->store = rl->host->store_open(in->self, spec, in->err, in->errlen)) == NULL) {
		in->err_line = in->line;
		for (o = in->options; o != NULL; o = o->next)
			if (strcmp(o->key, "store") == 0)
				in->err_line = o->line;
		rl_fini(rl);
		return -1;
	}
	*instance = rl;
	return 0;

fail_at:
	in->err_line = o->line;
	rl_fini(rl);
	return -1;
}

/* rl_option - one key other than store; 0, or -1 with a message in err */
static int
rl_option(struct ratelimit *rl, const struct pc_option *o, char *err, size_t errlen)
{
	unsigned long long n;
	char why[256];
	int kind;

	for (kind = 0; kind < RL_NKINDS; kind++) {
		if (strcmp(o->key, rl_kinds[kind].key) != 0)
			continue;
		if (kind == RL_CONC) {
			if (rl_parse_uint(o->value, RL_COUNT_MAX, &n) < 0 || n == 0) {
				snprintf(err, errlen,
				    "%s: bad value \"%s\": expected a number of sessions from "
				    "1 to %llu",
				    o->key, o->value, RL_COUNT_MAX);
				return -1;
			}
			rl->lim[kind].set = 1;
			rl->lim[kind].count = n;
			return 0;
		}
		if (rl_parse_rate(rl->host, o->value, &rl->lim[kind]) < 0) {
			snprintf(err, errlen,
			    "%s: bad value \"%s\": expected COUNT/WINDOW (e.g. 60/1m), COUNT "
			    "from 1 to %llu, WINDOW from 1s to 30d (e.g. 30s, 10m, 1h, 1d)",
			    o->key, o->value, RL_COUNT_MAX);
			return -1;
		}
		return 0;
	}
	if (strcmp(o->key, "ipv4_prefix") == 0 || strcmp(o->key, "ipv6_prefix") == 0) {
		unsigned long long max = o->key[3] == '4' ? 32 : 128;

		if (rl_parse_uint(o->value, max, &n) < 0) {
			snprintf(err, errlen,
			    "%s: bad value \"%s\": expected a prefix length from 0 to %llu", o->key,
			    o->value, max);
			return -1;
		}
		if (max == 32)
			rl->v4bits = (unsigned)n;
		else
			rl->v6bits = (unsigned)n;
		return 0;
	}
	if (strcmp(o->key, "concurrency_ttl") == 0) {
		if (rl->host->opt_time(o->value, &n, NULL, 0) < 0 || n < 60 * 1000ULL ||
		    n > 86400 * 1000ULL) {
			snprintf(err, errlen,
			    "%s: bad value \"%s\": expected a time from 1m to 1d (e.g. 30m, 1h)",
			    o->key, o->value);
			return -1;
		}
		rl->conc_ttl_ms = n;
		return 0;
	}
	/* exempt_networks */
	if (rl->host->opt_cidr(o->value, &rl->exempt, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: %s", o->key, why);
		return -1;
	}
	return 0;
}

/* rl_parse_rate - "COUNT/WINDOW"; 0, or -1 */
static int
rl_parse_rate(const struct pc_host *host, const char *value, struct rl_limit *l)
{
	const char *slash = strchr(value, '/');
	char count[32];
	unsigned long long n, ms;

	if (slash == NULL || (size_t)(slash - value) >= sizeof(count))
		return -1;
	memcpy(count, value, (size_t)(slash - value));
	count[slash - value] = '\0';
	if (rl_parse_uint(count, RL_COUNT_MAX, &n) < 0 || n == 0)
		return -1;
	if (host->opt_time(slash + 1, &ms, NULL, 0) < 0 || ms < RL_WINDOW_MIN_MS ||
	    ms > RL_WINDOW_MAX_MS)
		return -1;
	l->set = 1;
	l->count = n;
	l->window_ms = ms;
	return 0;
}

/* rl_parse_uint - decimal digits only, at most max; 0, or -1 */
static int
rl_parse_uint(const char *value, unsigned long long max, unsigned long long *out)
{
	unsigned long long n = 0;
	const char *p;

	if (*value == '\0')
		return -1;
	for (p = value; *p != '\0'; p++) {
		if (!isdigit((unsigned char)*p))
			return -1;
		n = n * 10 + (unsigned long long)(*p - '0');
		if (n > max)
			return -1;
	}
	*out = n;
	return 0;
}

/* rl_fini - free an instance; orphans still in flight are cancelled (their
 * slots drain with the bucket) */
static void
rl_fini(void *instance)
{
	struct ratelimit *rl = instance;
	struct rl_job *j;

	while ((j = rl->orphans) != NULL) {
		rl->orphans = j->next;
		if (j->req != NULL)
			rl->host->store_cancel(j->req);
		free(j);
	}
	if (rl->exempt != NULL)
		rl->host->opt_cidr_free(rl->exempt);
	free(rl->name);
	free(rl);
}

/* ---- the hooks ---- */

/* rl_job_new - a job for this call's limits, its subjects filled in; NULL
 * when the client is exempt, or out of memory (then *v says PC_FAIL) */
static struct rl_job *
rl_job_new(struct ratelimit *rl, struct pc_call *call, struct pc_verdict *v)
{
	struct rl_job *j;

	if (rl_exempt(rl, call))
		return NULL;
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		v->action = PC_FAIL;
		v->reply = "out of memory";
		return NULL;
	}
	j->rl = rl;
	rl_subjects(rl, call, j);
	return j;
}

/* rl_connect - connection rate, then concurrency */
static int
rl_connect(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct ratelimit *rl = instance;
	struct rl_job *j;
	struct rl_session *sess = NULL;
	void **sd;
	uint64_t now = rl_wall_ms();

	if (!rl->lim[RL_CONN].set && !rl->lim[RL_CONC].set)
		return PC_HOOK_DONE;
	if ((j = rl_job_new(rl, call, v)) == NULL)
		return PC_HOOK_DONE;
	if (j->subject[RL_NETWORK][0] == '\0') {
		free(j);
		return PC_HOOK_DONE;
	}
	if (rl->lim[RL_CONN].set)
		rl_add_step(j, RL_CONN, now);
	if (rl->lim[RL_CONC].set) {
		sd = rl->host->session_data(call);
		if (*sd == NULL && (*sd = calloc(1, sizeof(struct rl_session))) == NULL) {
			free(j);
			v->action = PC_FAIL;
			v->reply = "out of memory";
			return PC_HOOK_DONE;
		}
		sess = *sd;
		rl_add_conc(j, sess, now);
	}
	return rl_start(j, call, v);
}

/* rl_mail - message rates: network, user, sender domain */
static int
rl_mail(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct ratelimit *rl = instance;
	struct rl_job *j;
	uint64_t now = rl_wall_ms();

	if (!rl->lim[RL_CLIENT_MSG].set && !rl->lim[RL_USER_MSG].set && !rl->lim[RL_DOMAIN_MSG].set)
		return PC_HOOK_DONE;
	if ((j = rl_job_new(rl, call, v)) == NULL)
		return PC_HOOK_DONE;
	rl_add_step(j, RL_CLIENT_MSG, now);
	rl_add_step(j, RL_USER_MSG, now);
	rl_add_step(j, RL_DOMAIN_MSG, now);
	return rl_start(j, call, v);
}

/* rl_rcpt - recipient rates: network, user */
static int
rl_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct ratelimit *rl = instance;
	struct rl_job *j;
	uint64_t now = rl_wall_ms();

	if (!rl->lim[RL_CLIENT_RCPT].set && !rl->lim[RL_USER_RCPT].set)
		return PC_HOOK_DONE;
	if ((j = rl_job_new(rl, call, v)) == NULL)
		return PC_HOOK_DONE;
	rl_add_step(j, RL_CLIENT_RCPT, now);
	rl_add_step(j, RL_USER_RCPT, now);
	return rl_start(j, call, v);
}

/* rl_close - give back the concurrency slot, exactly once, if one was
 * taken; whatever ended the session (QUIT, a refusal, a reset) */
static void
rl_close(void *instance, struct pc_call *call)
{
	struct ratelimit *rl = instance;
	void **sd = rl->host->session_data(call);
	struct rl_session *sess = *sd;

	if (sess == NULL)
		return;
	if (sess->held)
		rl_release(rl, sess->key, sess->klen);
	free(sess);
	*sd = NULL;
}

/* rl_exempt - trusted_networks and exempt_networks are neither counted nor
 * limited */
static int
rl_exempt(struct ratelimit *rl, struct pc_call *call)
{
	const char *ip;

	if (rl->host->get(call, PC_CLIENT_TRUSTED) != NULL)
		return 1;
	if (rl->exempt == NULL || (ip = rl->host->get(call, PC_CLIENT_IP)) == NULL)
		return 0;
	return rl->host->opt_cidr_match(rl->exempt, ip) == 1;
}

/* rl_subjects - the network, user and sender domain of the call, as they
 * go into keys ("" when there is none: that limit does not apply). -1 if
 * the client has no address we understand. */
static int
rl_subjects(struct ratelimit *rl, struct pc_call *call, struct rl_job *j)
{
	const char *ip = rl->host->get(call, PC_CLIENT_IP);
	const char *user = rl->host->get(call, PC_AUTH_USER);
	const char *domain;
	int r = 0;

	if (ip == NULL ||
	    rl_network(ip, rl->v4bits, rl->v6bits, j->subject[RL_NETWORK],
	        sizeof(j->subject[RL_NETWORK])) < 0) {
		j->subject[RL_NETWORK][0] = '\0';
		r = -1;
	}
	/* User names compare without case, as SASL mechanisms mostly do. */
	if (user != NULL)
		rl_subject_set(j->subject[RL_USER], user);
	/* The null sender has no domain: bounces are not counted per domain. */
	if (rl->host->stage(call) == PC_STAGE_MAIL &&
	    (domain = rl->host->get(call, PC_SENDER_DOMAIN)) != NULL)
		rl_subject_set(j->subject[RL_DOMAIN], domain);
	return r;
}

/* rl_subject_set - text in lower case into out (RL_SUBJECT_SIZE octets);
 * longer than RL_SUBJECT_MAX, its hash (FNV-1a, 64 bits), so that a user
 * name of any length makes a key of bounded length */
static void
rl_subject_set(char *out, const char *text)
{
	uint64_t h = 1469598103934665603ULL;
	size_t i;

	for (i = 0; text[i] != '\0' && i < RL_SUBJECT_MAX; i++)
		out[i] = (char)tolower((unsigned char)text[i]);
	out[i] = '\0';
	if (text[i] == '\0')
		return;
	for (i = 0; text[i] != '\0'; i++)
		h = (h ^ (unsigned char)tolower((unsigned char)text[i])) * 1099511628211ULL;
	snprintf(out, RL_SUBJECT_SIZE, "#%016llx", (unsigned long long)h);
}

/* rl_network - "192.0.2.0/24" or "2001:db8::/64" for ip; an IPv4-mapped
 * IPv6 address is the IPv4 address it carries. 0, or -1. */
static int
rl_network(const char *ip, unsigned v4bits, unsigned v6bits, char *out, size_t len)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	unsigned char a[16];
	char text[INET6_ADDRSTRLEN];
	int family = AF_INET6;
	unsigned bits, i, size;

	if (inet_pton(AF_INET, ip, a) == 1)
		family = AF_INET;
	else if (inet_pton(AF_INET6, ip, a) != 1)
		return -1;
	else if (memcmp(a, mapped, sizeof(mapped)) == 0) {
		memmove(a, a + 12, 4);
		family = AF_INET;
	}
	bits = family == AF_INET ? v4bits : v6bits;
	size = family == AF_INET ? 4 : 16;
	for (i = 0; i < size; i++) {
		if (bits >= 8 * (i + 1))
			continue;
		a[i] &= bits > 8 * i ? (unsigned char)(0xff << (8 - (bits - 8 * i))) : 0;
	}
	if (inet_ntop(family, a, text, sizeof(text)) == NULL)
		return -1;
	if ((size_t)snprintf(out, len, "%s/%u", text, bits) >= len)
		return -1;
	return 0;
}

/* rl_add_step - count one rate limit, if it is set and has a subject */
static void
rl_add_step(struct rl_job *j, enum rl_kind kind, uint64_t now_ms)
{
	const struct rl_limit *l = &j->rl->lim[kind];
	struct rl_step *s;

	if (!l->set || j->subject[rl_kinds[kind].subject][0] == '\0' || j->n >= RL_STEPS_MAX)
		return;
	s = &j->steps[j->n];
	s->kind = kind;
	s->ttl_ms = l->window_ms;
	if (rl_key(j, s, rl_kinds[kind].tag, l->window_ms, now_ms / l->window_ms) == 0)
		j->n++;
}

/* rl_add_conc - the concurrency pair: count this session in its bucket,
 * then read the bucket before */
static void
rl_add_conc(struct rl_job *j, struct rl_session *sess, uint64_t now_ms)
{
	unsigned long long len = j->rl->conc_ttl_ms, b = now_ms / len;
	struct rl_step *s = &j->steps[j->n];

	if (j->n + 2 > RL_STEPS_MAX)
		return;
	s->kind = RL_CONC;
	s->ttl_ms = 2 * len;
	if (rl_key(j, s, "conc", len, b) < 0)
		return;
	s[1] = s[0];
	s[1].get = 1;
	if (rl_key(j, &s[1], "conc", len, b - 1) < 0)
		return;
	j->sess = sess;
	j->n += 2;
}

/* rl_key - "ratelimit:INSTANCE:TAG:LENGTH:NUMBER:SUBJECT" into s->key; 0
 * or -1 (an instance name too long for a key) */
static int
rl_key(struct rl_job *j, struct rl_step *s, const char *tag, unsigned long long len,
    unsigned long long number)
{
	char key[sizeof(s->key)];
	int n;

	n = snprintf(key, sizeof(key), "ratelimit:%s:%s:%llu:%llu:%s", j->rl->name, tag, len,
	    number, j->subject[rl_kinds[s->kind].subject]);
	if (n < 0 || (size_t)n >= sizeof(key))
		return -1;
	memcpy(s->key, key, (size_t)n + 1);
	s->klen = (size_t)n;
	return 0;
}

/* ---- a job: the store operations of one stage, one after the other ---- */

/* rl_start - go pending and run the job; the hook's answer */
static int
rl_start(struct rl_job *j, struct pc_call *call, struct pc_verdict *v)
{
	if (j->n == 0) {
		free(j);
		return PC_HOOK_DONE;
	}
	if (j->rl->host->pending(call, rl_cancel, j) != 0) {
		free(j);
		v->action = PC_FAIL;
		v->reply = "the host refused to wait";
		return PC_HOOK_DONE;
	}
	j->call = call;
	/* With memory or LMDB this resumes before it returns, and that is
	 * allowed: the host then reads the verdict given to resume. */
	rl_run(j);
	return PC_HOOK_PENDING;
}

/* rl_run - start the next operation; when none is left (or one decided),
 * finish. A store that answers at once loops here; one that answers later
 * comes back through rl_done. */
static void
rl_run(struct rl_job *j)
{
	const struct pc_host *host = j->rl->host;
	struct pc_store *st = j->rl->store;
	struct pc_store_req *req;
	struct rl_step *s;

	while (j->i < j->n && !j->stop) {
		s = &j->steps[j->i];
		j->inflight = 1;
		j->sync = 1;
		if (s->get)
			req = host->store_get(st, s->key, s->klen, rl_done, j);
		else
			req = host->store_incr(st, s->key, s->klen, 1, s->ttl_ms, rl_done, j);
		j->sync = 0;
		if (j->inflight) {
			j->req = req;
			return;
		}
	}
	rl_finish(j);
}

/* rl_done - one operation completed */
static void
rl_done(void *arg, const struct pc_store_result *r)
{
	struct rl_job *j = arg;

	j->inflight = 0;
	j->req = NULL;
	if (j->call == NULL) {
		rl_orphan_done(j, r);
		return;
	}
	rl_account(j, r);
	if (!j->sync)
		rl_run(j);
}

/* rl_account - what one answer means for the job */
static void
rl_account(struct rl_job *j, const struct pc_store_result *r)
{
	struct rl_step *s = &j->steps[j->i];
	long long prev = 0;

	if (r->status == PC_STORE_FAILED ||
	    (r->status != PC_STORE_OK && !(s->get && r->status == PC_STORE_MISSING))) {
		rl_store_failed(j, r->error != NULL ? r->error : "unexpected answer");
		return;
	}
	j->i++;
	if (s->kind != RL_CONC) {
		rl_check(j, s->kind, r->number);
		return;
	}
	if (!s->get) {
		/* The slot is taken: from now on close gives it back. */
		j->conc_count = r->number;
		j->sess->held = 1;
		memcpy(j->sess->key, s->key, s->klen + 1);
		j->sess->klen = s->klen;
		return;
	}
	/* The bucket before: a number, or a decrement of a bucket that had
	 * expired (below zero), which counts nothing. */
	if (r->status == PC_STORE_OK && r->value != NULL) {
		char *end;
		prev = strtoll(r->value, &end, 10);
		if (end == r->value || prev < 0)
			prev = 0;
	}
	rl_check(j, RL_CONC, j->conc_count + prev);
	if (j->stop) {
		/* Refused: the slot was never used. */
		rl_release(j->rl, j->sess->key, j->sess->klen);
		j->sess->held = 0;
	}
}

/* rl_check - count is the new count for kind: over the limit stops the
 * job with that limit's refusal, logged */
static void
rl_check(struct rl_job *j, enum rl_kind kind, long long count)
{
	const struct rl_kind_info *k = &rl_kinds[kind];
	const struct rl_limit *l = &j->rl->lim[kind];
	char w[32];

	if (count <= 0 || (unsigned long long)count <= l->count)
		return;
	j->stop = 1;
	j->action = k->action;
	j->reply = k->reply;
	if (kind == RL_CONC)
		j->rl->host->log(j->rl->self, j->call, PC_LOG_INFO,
		    "ratelimit: refused: %s %s=%s count=%lld limit=%llu", k->key,
		    rl_subject_names[k->subject], j->subject[k->subject], count, l->count);
	else
		j->rl->host->log(j->rl->self, j->call, PC_LOG_INFO,
		    "ratelimit: refused: %s %s=%s count=%lld limit=%llu window=%s", k->key,
		    rl_subject_names[k->subject], j->subject[k->subject], count, l->count,
		    rl_window(l->window_ms, w, sizeof(w)));
}

/* rl_finish - answer the call and free the job */
static void
rl_finish(struct rl_job *j)
{
	const struct pc_host *host = j->rl->host;
	struct pc_call *call = j->call;
	struct pc_verdict v = {PC_CONTINUE, NULL};
	char why[sizeof(j->why)];

	if (j->stop) {
		v.action = j->action;
		v.reply = j->reply;
		if (j->action == PC_FAIL) {
			memcpy(why, j->why, sizeof(why));
			v.reply = why;
		}
	}
	free(j);
	host->resume(call, &v);
}

/* rl_cancel - the host gave up on the call: forget the request in flight,
 * unless it is the concurrency increment, which must finish so that its
 * slot is given back */
static void
rl_cancel(void *arg)
{
	struct rl_job *j = arg;
	struct ratelimit *rl = j->rl;

	j->call = NULL;
	if (j->inflight && j->steps[j->i].kind == RL_CONC && !j->steps[j->i].get) {
		j->sess = NULL; /* the session's data is freed at close */
		j->next = rl->orphans;
		rl->orphans = j;
		return;
	}
	if (j->req != NULL)
		rl->host->store_cancel(j->req);
	free(j);
}

/* rl_orphan_done - a cancelled session's concurrency increment completed:
 * give the slot straight back */
static void
rl_orphan_done(struct rl_job *j, const struct pc_store_result *r)
{
	struct ratelimit *rl = j->rl;
	struct rl_job **pp;

	for (pp = &rl->orphans; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	}
	if (r->status == PC_STORE_OK)
		rl_release(rl, j->steps[j->i].key, j->steps[j->i].klen);
	free(j);
}

/* rl_release - give a concurrency slot back; nobody waits for the answer */
static void
rl_release(struct ratelimit *rl, const char *key, size_t klen)
{
	/* No callback: a failure is logged by the store, and the bucket's
	 * ttl repairs the count. */
	rl->host->store_incr(rl->store, key, klen, -1, 2 * rl->conc_ttl_ms, NULL, NULL);
}

/* rl_store_failed - stop the job with PC_FAIL; warn at most once per
 * RL_WARN_EVERY_MS */
static void
rl_store_failed(struct rl_job *j, const char *error)
{
	struct ratelimit *rl = j->rl;
	uint64_t now = rl_mono_ms();

	j->stop = 1;
	j->action = PC_FAIL;
	snprintf(j->why, sizeof(j->why), "store %s: %s", rl->host->store_name(rl->store), error);
	if (rl->warned && now - rl->warned_ms < RL_WARN_EVERY_MS) {
		rl->quiet++;
		return;
	}
	if (rl->warned)
		rl->host->log(rl->self, j->call, PC_LOG_ERR,
		    "ratelimit: store %s failed: %s; limits are not enforced while it fails "
		    "(on_error decides; %lu more failures in the last %llus not logged)",
		    rl->host->store_name(rl->store), error, rl->quiet,
		    (unsigned long long)(now - rl->warned_ms) / 1000);
	else
		rl->host->log(rl->self, j->call, PC_LOG_ERR,
		    "ratelimit: store %s failed: %s; limits are not enforced while it fails "
		    "(on_error decides)",
		    rl->host->store_name(rl->store), error);
	rl->warned = 1;
	rl->warned_ms = now;
	rl->quiet = 0;
}

/* ---- small things ---- */

/* rl_window - a window for the log, in the largest unit that divides it */
static const char *
rl_window(unsigned long long ms, char *buf, size_t len)
{
	if (ms % (86400 * 1000ULL) == 0)
		snprintf(buf, len, "%llud", ms / (86400 * 1000ULL));
	else if (ms % (3600 * 1000ULL) == 0)
		snprintf(buf, len, "%lluh", ms / (3600 * 1000ULL));
	else if (ms % (60 * 1000ULL) == 0)
		snprintf(buf, len, "%llum", ms / (60 * 1000ULL));
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%llus", ms / 1000);
	else
		snprintf(buf, len, "%llums", ms);
	return buf;
}

/* rl_wall_ms - the wall clock: windows are aligned to the epoch so that
 * every proxy sharing a store agrees on them (keep clocks in sync: NTP) */
static uint64_t
rl_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* rl_mono_ms - for the warning interval, which a clock step must not skew */
static uint64_t
rl_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
