/*
 * rspamd.c - scan each message with rspamd over its HTTP protocol
 * (POST /checkv2) at the end of DATA, and turn rspamd's answer into ours:
 * its action into a verdict, its symbols into scores, and the header
 * changes it asks for into message changes.
 *
 * Exports only the descriptor portcullis_plugin (see plugin.h). The keys,
 * the action table, the headers and the log lines are in doc/rspamd.md.
 *
 * THE REQUEST. The message goes exactly as received (host->message_read:
 * the header section byte for byte, then the body) with the envelope in rspamd's
 * request headers: IP, Helo, From, one Rcpt per recipient, User,
 * Hostname (the client's forward-confirmed name, or "unknown", which also
 * spares rspamd its own rDNS lookup), Queue-Id and Password. Messages
 * larger than max_scan_size are not sent: they pass with a header saying
 * they were not scanned.
 *
 * HTTP is libevent's evhttp client on the host's event base and evdns:
 * one connection per scan ("Connection: close"), a timer for the whole
 * scan (evhttp's own timeouts restart with every read), and a reply body
 * capped at RS_REPLY_MAX. The reply is read by the bounded JSON reader in
 * rspamd_json.h; anything unexpected in it is a failed scan.
 *
 * LIFETIMES. A scan's state is one struct rs_job. It ends in one of
 * three ways: the reply (or an error) arrives, our timer fires, or the
 * host cancels the call. evhttp must not see its connection freed from
 * inside its own callback, so the reply path answers at once and frees
 * the connection from a zero timer (the job's reaper) on the next turn
 * of the loop; the timer and cancel paths run outside evhttp and cancel
 * the request and free the connection directly.
 *
 * FAILURES. rspamd down, slow (past timeout), answering with an HTTP
 * error or with a reply we cannot read: by default the message passes,
 * marked X-Rspamd-Unscanned (scan_failure = pass); with scan_failure =
 * on_error the hook fails and the section's on_error decides (this
 * plugin's default is accept; on_error = tempfail defers the message).
 * Failures are logged at most once a minute with a count of the rest.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "portcullis/plugin.h"

#include "rspamd_json.h"

#define RS_PORT_DEFAULT 11333
#define RS_PATH "/checkv2"
#define RS_TIMEOUT_MS (15ULL * 1000)
/* Below the default filter_timeout (30s), so our failure path runs
 * before the host gives up on the call. */
#define RS_TIMEOUT_MAX_MS (3600ULL * 1000)
#define RS_MAX_SCAN_DEFAULT (1024ULL * 1024)
/* A reply larger than this is no rspamd reply (a normal one is a few
 * kilobytes): it is refused before it is parsed. */
#define RS_REPLY_MAX (1024 * 1024)
/* The reply's HTTP header section. */
#define RS_REPLY_HEADERS_MAX (64 * 1024)
/* Header changes taken from one reply's "milter" object: a broken or
 * hostile scanner cannot make us queue thousands. */
#define RS_MILTER_CHANGES_MAX 100
/* The host keeps at most this many symbols per transaction (plugin.h). */
#define RS_HOST_SYMBOLS 256
#define RS_SYMBOL_MAX 64
/* A header line's value we build (X-Spamd-Result), below RFC 5322's 998
 * octets with the name. */
#define RS_HEADER_VALUE_MAX 900
/* Failures are logged at most this often per instance. */
#define RS_WARN_EVERY_MS 60000
#define RS_TEXT_MAX 400

#define RS_REJECT_DEFAULT "550 5.7.1 Spam message rejected"
#define RS_SOFT_REJECT_DEFAULT "451 4.7.1 Try again later"
#define RS_GREYLIST_DEFAULT "451 4.7.1 Greylisted, please try again later"
#define RS_SUBJECT_DEFAULT "*** SPAM *** %s"

enum rs_headers {
	RS_HEADERS_ALWAYS = 0,
	RS_HEADERS_SPAM,
	RS_HEADERS_NEVER,
};

/* An instance: one [plugin rspamd] section. */
struct rspamd {
	const struct pc_host *host;
	struct pc_instance *self;
	char *addr; /* host name or address, without brackets */
	unsigned short port;
	char *hostport; /* for Host: and the log */
	unsigned long long timeout_ms, max_scan_size;
	char *password;
	char *reject_reply, *soft_reject_reply, *greylist_reply, *subject;
	char *prefix; /* symbol_prefix */
	int scores_total; /* scores = total */
	enum rs_headers headers;
	int strip, milter, fail_on_error;
	unsigned long long warned_ms;
	unsigned long quiet;
};

enum rs_state {
	RS_FLIGHT = 0, /* the request is out; the call waits */
	RS_DONE, /* answered; the reaper frees the connection */
};

/* One scan. */
struct rs_job {
	struct rspamd *rs;
	struct pc_call *call;
	struct evhttp_connection *conn;
	struct evhttp_request *req; /* NULL once evhttp has freed it */
	struct event *timer; /* the scan's timeout, then the reaper */
	enum rs_state state;
	int http_error; /* -1, or an enum evhttp_request_error */
	unsigned long long start_ms;
	size_t size;
};

/* A symbol of the reply, for scores and X-Spamd-Result. */
struct rs_sym {
	const char *name;
	double score;
};

static int rs_init(struct pc_init *in, void **instance);
static int rs_option(struct rspamd *rs, const struct pc_option *o, char *err, size_t errlen);
static int rs_url(struct rspamd *rs, const char *url, char *err, size_t errlen);
static int rs_reply_opt(
    const char *key, const char *value, char cls, char **out, char *err, size_t errlen);
static int rs_strdup(char **out, const char *s, char *err, size_t errlen);
static void rs_fini(void *instance);
static int rs_data(void *instance, struct pc_call *call, struct pc_verdict *v);
static void rs_strip(struct rspamd *rs, struct pc_call *call);
static int rs_forgeable(const char *name);
static int rs_unscanned(struct rspamd *rs, struct pc_call *call, struct pc_verdict *v,
    const char *what, const char *why);
static struct rs_job *rs_job_new(struct rspamd *rs, struct pc_call *call, char *err, size_t errlen);
static int rs_request_headers(struct rs_job *job, char *err, size_t errlen);
static int rs_request_body(struct rs_job *job, char *err, size_t errlen);
static void rs_job_free(struct rs_job *job);
static void rs_cancel(void *arg);
static void rs_timer(evutil_socket_t fd, short what, void *arg);
static void rs_http_error(enum evhttp_request_error e, void *arg);
static void rs_http_done(struct evhttp_request *req, void *arg);
static void rs_finish(struct rs_job *job, const struct pc_verdict *v);
static void rs_fail(struct rs_job *job, const char *why);
static void rs_reply(struct rs_job *job, struct evhttp_request *req);
static int rs_apply(struct rs_job *job, const struct rj_value *root, char *why, size_t whylen);
static int rs_action(
    struct rspamd *rs, const char *action, struct pc_verdict *v, int *spam, const char **done);
static size_t rs_symbols(const struct rj_value *root, struct rs_sym **out);
static void rs_scores(
    struct rs_job *job, struct rs_sym *syms, size_t n, double score, const char *action);
static void rs_result_headers(struct rs_job *job, struct rs_sym *syms, size_t n, double score,
    double required, const char *action);
static void rs_subject(struct rs_job *job, const struct rj_value *root);
static void rs_milter(struct rs_job *job, const struct rj_value *milter);
static int rs_milter_add(struct rs_job *job, const char *name, const struct rj_value *v, int *left);
static void rs_milter_remove(struct rs_job *job, const char *name, double n);
static void rs_clean(char *s);
static void rs_warn(struct rspamd *rs, struct pc_call *call, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static unsigned long long rs_now_ms(void);
static const char *rs_error_name(int e);
static int rs_sym_cmp(const void *a, const void *b);

static const char *const rs_keys[] = {
    "url",
    "timeout",
    "max_scan_size",
    "password",
    "reject_reply",
    "soft_reject_reply",
    "greylist_reply",
    "subject",
    "scores",
    "symbol_prefix",
    "headers",
    "strip_headers",
    "milter_headers",
    "scan_failure",
    NULL,
};

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "rspamd",
    .version = "1.0",
    .keys = rs_keys,
    .init = rs_init,
    .fini = rs_fini,
    .data = rs_data,
    .on_error = "accept",
};

/* ---- configuration ---- */

/* rs_init - read the section */
static int
rs_init(struct pc_init *in, void **instance)
{
	struct rspamd *rs;
	const struct pc_option *o;

	if ((rs = calloc(1, sizeof(*rs))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	rs->host = in->host;
	rs->self = in->self;
	rs->timeout_ms = RS_TIMEOUT_MS;
	rs->max_scan_size = RS_MAX_SCAN_DEFAULT;
	rs->strip = 1;
	rs->milter = 1;
	if (rs_url(rs, "http://127.0.0.1:11333", in->err, in->errlen) < 0 ||
	    rs_strdup(&rs->reject_reply, RS_REJECT_DEFAULT, in->err, in->errlen) < 0 ||
	    rs_strdup(&rs->soft_reject_reply, RS_SOFT_REJECT_DEFAULT, in->err, in->errlen) < 0 ||
	    rs_strdup(&rs->greylist_reply, RS_GREYLIST_DEFAULT, in->err, in->errlen) < 0 ||
	    rs_strdup(&rs->subject, RS_SUBJECT_DEFAULT, in->err, in->errlen) < 0 ||
	    rs_strdup(&rs->prefix, "", in->err, in->errlen) < 0)
		goto fail;
	for (o = in->options; o != NULL; o = o->next) {
		if (rs_option(rs, o, in->err, in->errlen) < 0) {
			in->err_line = o->line;
			goto fail;
		}
	}
	*instance = rs;
	return 0;
fail:
	rs_fini(rs);
	return -1;
}

/* rs_option - one key; 0, or -1 with a message in err */
static int
rs_option(struct rspamd *rs, const struct pc_option *o, char *err, size_t errlen)
{
	const struct pc_host *h = rs->host;
	const char *v = o->value, *p;
	int b;

	if (strcmp(o->key, "url") == 0)
		return rs_url(rs, v, err, errlen);
	if (strcmp(o->key, "timeout") == 0) {
		if (h->opt_time(v, &rs->timeout_ms, NULL, 0) == 0 && rs->timeout_ms > 0 &&
		    rs->timeout_ms <= RS_TIMEOUT_MAX_MS)
			return 0;
		snprintf(err, errlen,
		    "timeout: bad value \"%s\": expected a time from 1ms to 1h (e.g. 500ms, 15s)",
		    v);
		return -1;
	}
	if (strcmp(o->key, "max_scan_size") == 0) {
		if (h->opt_size(v, &rs->max_scan_size, NULL, 0) == 0 && rs->max_scan_size > 0)
			return 0;
		snprintf(err, errlen,
		    "max_scan_size: bad value \"%s\": expected a size above 0 (e.g. 512k, 1M)", v);
		return -1;
	}
	if (strcmp(o->key, "password") == 0) {
		for (p = v; *p != '\0'; p++)
			if ((unsigned char)*p < 0x21 || *p == 0x7f)
				break;
		if (*p != '\0' || p == v || p - v > RS_TEXT_MAX) {
			snprintf(err, errlen,
			    "password: expected 1 to %d printable characters without blanks",
			    RS_TEXT_MAX);
			return -1;
		}
		return rs_strdup(&rs->password, v, err, errlen);
	}
	if (strcmp(o->key, "reject_reply") == 0)
		return rs_reply_opt(o->key, v, '5', &rs->reject_reply, err, errlen);
	if (strcmp(o->key, "soft_reject_reply") == 0)
		return rs_reply_opt(o->key, v, '4', &rs->soft_reject_reply, err, errlen);
	if (strcmp(o->key, "greylist_reply") == 0)
		return rs_reply_opt(o->key, v, '4', &rs->greylist_reply, err, errlen);
	if (strcmp(o->key, "subject") == 0) {
		p = strstr(v, "%s");
		if (rs_reply_opt(o->key, v, 0, &rs->subject, err, errlen) < 0)
			return -1;
		if (p == NULL || strchr(v, '%') != p || strchr(p + 1, '%') != NULL) {
			snprintf(err, errlen,
			    "subject: bad value \"%s\": expected a text with one %%s for the "
			    "subject (e.g. *** SPAM *** %%s)",
			    v);
			return -1;
		}
		return 0;
	}
	if (strcmp(o->key, "scores") == 0) {
		if (strcmp(v, "symbols") == 0 || strcmp(v, "total") == 0) {
			rs->scores_total = v[0] == 't';
			return 0;
		}
		snprintf(err, errlen, "scores: bad value \"%s\": expected symbols or total", v);
		return -1;
	}
	if (strcmp(o->key, "symbol_prefix") == 0) {
		for (p = v; *p != '\0'; p++)
			if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
				break;
		if (*p != '\0' || p - v > 32) {
			snprintf(err, errlen,
			    "symbol_prefix: bad value \"%s\": expected up to 32 of A-Z, 0-9 and _",
			    v);
			return -1;
		}
		return rs_strdup(&rs->prefix, v, err, errlen);
	}
	if (strcmp(o->key, "headers") == 0) {
		if (strcmp(v, "always") == 0)
			rs->headers = RS_HEADERS_ALWAYS;
		else if (strcmp(v, "spam") == 0)
			rs->headers = RS_HEADERS_SPAM;
		else if (strcmp(v, "never") == 0)
			rs->headers = RS_HEADERS_NEVER;
		else {
			snprintf(err, errlen,
			    "headers: bad value \"%s\": expected always, spam or never", v);
			return -1;
		}
		return 0;
	}
	if (strcmp(o->key, "scan_failure") == 0) {
		if (strcmp(v, "pass") == 0 || strcmp(v, "on_error") == 0) {
			rs->fail_on_error = v[0] == 'o';
			return 0;
		}
		snprintf(
		    err, errlen, "scan_failure: bad value \"%s\": expected pass or on_error", v);
		return -1;
	}
	/* strip_headers, milter_headers */
	if (h->opt_bool(v, &b, err, errlen) < 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "%s: %s", o->key, why);
		return -1;
	}
	if (strcmp(o->key, "strip_headers") == 0)
		rs->strip = b;
	else
		rs->milter = b;
	return 0;
}

/* rs_url - http://HOST[:PORT][/]: a name, an IPv4 address or [IPv6] */
static int
rs_url(struct rspamd *rs, const char *url, char *err, size_t errlen)
{
	const char *p, *host, *hend, *q;
	unsigned long port = RS_PORT_DEFAULT;
	char *end;
	size_t n;

	if (strncmp(url, "http://", 7) != 0) {
		snprintf(err, errlen,
		    "url: bad value \"%s\": expected http://HOST:PORT (rspamd's normal worker "
		    "speaks plain HTTP)",
		    url);
		return -1;
	}
	p = url + 7;
	if (*p == '[') {
		host = p + 1;
		if ((hend = strchr(host, ']')) == NULL)
			goto bad;
		p = hend + 1;
	} else {
		host = p;
		hend = p + strcspn(p, ":/");
		p = hend;
	}
	if (hend == host || hend - host > 253)
		goto bad;
	for (q = host; q < hend; q++)
		if (!isalnum((unsigned char)*q) && *q != '.' && *q != '-' &&
		    !(*q == ':' && host[-1] == '['))
			goto bad;
	if (*p == ':') {
		port = strtoul(p + 1, &end, 10);
		if (end == p + 1 || port == 0 || port > 65535 || !isdigit((unsigned char)p[1]))
			goto bad;
		p = end;
	}
	if (*p == '/')
		p++;
	if (*p != '\0')
		goto bad;
	n = (size_t)(hend - host);
	free(rs->addr);
	free(rs->hostport);
	rs->addr = rs->hostport = NULL;
	if ((rs->addr = malloc(n + 1)) == NULL || (rs->hostport = malloc(n + 16)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	memcpy(rs->addr, host, n);
	rs->addr[n] = '\0';
	snprintf(rs->hostport, n + 16, "%s%s%s:%lu", host[-1] == '[' ? "[" : "", rs->addr,
	    host[-1] == '[' ? "]" : "", port);
	rs->port = (unsigned short)port;
	return 0;
bad:
	snprintf(err, errlen,
	    "url: bad value \"%s\": expected http://HOST:PORT, e.g. http://127.0.0.1:11333 (the "
	    "path is always " RS_PATH ")",
	    url);
	return -1;
}

/* rs_reply_opt - a reply text: printable, at most RS_TEXT_MAX octets, and
 * if it starts with a code, a code of class cls (0: any text) */
static int
rs_reply_opt(const char *key, const char *value, char cls, char **out, char *err, size_t errlen)
{
	const char *p;

	for (p = value; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			break;
	if (*p != '\0' || p == value || p - value > RS_TEXT_MAX) {
		snprintf(
		    err, errlen, "%s: expected 1 to %d printable characters", key, RS_TEXT_MAX);
		return -1;
	}
	if (cls != 0 && isdigit((unsigned char)value[0]) && value[0] != cls) {
		snprintf(
		    err, errlen, "%s: bad value \"%s\": the code must be %cxx", key, value, cls);
		return -1;
	}
	return rs_strdup(out, value, err, errlen);
}

static int
rs_strdup(char **out, const char *s, char *err, size_t errlen)
{
	char *t;

	if ((t = strdup(s)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	free(*out);
	*out = t;
	return 0;
}

/* rs_fini - free an instance */
static void
rs_fini(void *instance)
{
	struct rspamd *rs = instance;

	free(rs->addr);
	free(rs->hostport);
	free(rs->password);
	free(rs->reject_reply);
	free(rs->soft_reject_reply);
	free(rs->greylist_reply);
	free(rs->subject);
	free(rs->prefix);
	free(rs);
}

/* ---- the DATA hook ---- */

/* rs_data - strip forgeable fields, then scan (or pass a message too
 * large to scan) */
static int
rs_data(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct rspamd *rs = instance;
	const struct pc_host *h = rs->host;
	struct rs_job *job;
	size_t size = h->msg_size(call);
	char why[300];

	if (rs->strip)
		rs_strip(rs, call);
	if (size > rs->max_scan_size) {
		char what[120];
		snprintf(what, sizeof(what), "message too large (%zu > max_scan_size %llu)", size,
		    rs->max_scan_size);
		h->log(rs->self, call, PC_LOG_INFO, "rspamd: not scanned: %s: passed", what);
		h->add_header(call, "X-Rspamd-Unscanned", what);
		return PC_HOOK_DONE;
	}
	if ((job = rs_job_new(rs, call, why, sizeof(why))) == NULL)
		return rs_unscanned(rs, call, v, "scan failed", why);
	job->size = size;
	if (h->pending(call, rs_cancel, job) != 0) {
		rs_job_free(job);
		v->action = PC_FAIL;
		v->reply = "the call cannot wait for rspamd";
		return PC_HOOK_DONE;
	}
	if (evhttp_make_request(job->conn, job->req, EVHTTP_REQ_POST, RS_PATH) != 0) {
		/* no socket: the request is ours again (not queued) */
		if (job->state == RS_FLIGHT) {
			if (job->req != NULL)
				evhttp_request_free(job->req);
			job->req = NULL;
			rs_fail(job, "cannot connect");
		}
		return PC_HOOK_PENDING;
	}
	return PC_HOOK_PENDING;
}

/* rs_strip - leave out every incoming X-Spam, X-Spam-*, X-Spamd-* and
 * X-Rspamd-* field: only we (and rspamd) may say what a scan found */
static void
rs_strip(struct rspamd *rs, struct pc_call *call)
{
	const char *name, *value;
	size_t i;

	for (i = 0; rs->host->header_at(call, i, &name, &value) == 0; i++)
		if (rs_forgeable(name))
			rs->host->remove_header(call, name);
}

static int
rs_forgeable(const char *name)
{
	return strcasecmp(name, "X-Spam") == 0 || strncasecmp(name, "X-Spam-", 7) == 0 ||
	    strncasecmp(name, "X-Spamd-", 8) == 0 || strncasecmp(name, "X-Rspamd-", 9) == 0;
}

/* rs_unscanned - a failure before the request left: as after it */
static int
rs_unscanned(struct rspamd *rs, struct pc_call *call, struct pc_verdict *v, const char *what,
    const char *why)
{
	rs_warn(rs, call, "rspamd: %s: %s", what, why);
	if (rs->fail_on_error) {
		v->action = PC_FAIL;
		v->reply = why;
		return PC_HOOK_DONE;
	}
	rs->host->add_header(call, "X-Rspamd-Unscanned", "scan failed");
	return PC_HOOK_DONE;
}

/* ---- the request ---- */

/* rs_job_new - a job with its connection, timer and request ready to send */
static struct rs_job *
rs_job_new(struct rspamd *rs, struct pc_call *call, char *err, size_t errlen)
{
	const struct pc_host *h = rs->host;
	struct rs_job *job;
	struct timeval tv;

	if ((job = calloc(1, sizeof(*job))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	job->rs = rs;
	job->call = call;
	job->http_error = -1;
	job->start_ms = rs_now_ms();
	if ((job->timer = evtimer_new(h->base, rs_timer, job)) == NULL ||
	    (job->conn = evhttp_connection_base_new(h->base, h->dns, rs->addr, rs->port)) == NULL ||
	    (job->req = evhttp_request_new(rs_http_done, job)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	tv.tv_sec = (time_t)(rs->timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(rs->timeout_ms % 1000 * 1000);
	evhttp_connection_set_timeout_tv(job->conn, &tv);
	evhttp_connection_set_retries(job->conn, 0);
	evhttp_connection_set_max_body_size(job->conn, RS_REPLY_MAX);
	evhttp_connection_set_max_headers_size(job->conn, RS_REPLY_HEADERS_MAX);
	evhttp_request_set_error_cb(job->req, rs_http_error);
	if (rs_request_headers(job, err, errlen) < 0 || rs_request_body(job, err, errlen) < 0)
		goto fail;
	evtimer_add(job->timer, &tv);
	return job;
fail:
	if (job->req != NULL) {
		evhttp_request_free(job->req);
		job->req = NULL;
	}
	rs_job_free(job);
	return NULL;
}

/* rs_request_headers - the envelope, as rspamd's protocol names it */
static int
rs_request_headers(struct rs_job *job, char *err, size_t errlen)
{
	struct rspamd *rs = job->rs;
	const struct pc_host *h = rs->host;
	struct pc_call *call = job->call;
	struct evkeyvalq *hd = evhttp_request_get_output_headers(job->req);
	const char *s, *name;
	size_t i, n = h->rcpt_count(call);
	int bad = 0;

	bad |= evhttp_add_header(hd, "Host", rs->hostport);
	bad |= evhttp_add_header(hd, "Connection", "close");
	if ((s = h->get(call, PC_CLIENT_IP)) != NULL)
		bad |= evhttp_add_header(hd, "IP", s);
	if ((s = h->get(call, PC_HELO)) != NULL && s[0] != '\0')
		bad |= evhttp_add_header(hd, "Helo", s);
	name = h->get(call, PC_CLIENT_NAME);
	bad |= evhttp_add_header(hd, "Hostname", name != NULL && name[0] ? name : "unknown");
	if ((s = h->get(call, PC_SENDER)) != NULL)
		bad |= evhttp_add_header(hd, "From", s[0] != '\0' ? s : "<>");
	for (i = 0; i < n; i++)
		if ((s = h->rcpt(call, i)) != NULL)
			bad |= evhttp_add_header(hd, "Rcpt", s);
	if ((s = h->get(call, PC_AUTH_USER)) != NULL)
		bad |= evhttp_add_header(hd, "User", s);
	if ((s = h->get(call, PC_TX_ID)) != NULL)
		bad |= evhttp_add_header(hd, "Queue-Id", s);
	if (rs->password != NULL)
		bad |= evhttp_add_header(hd, "Password", rs->password);
	if (bad) {
		snprintf(err, errlen, "cannot build the request headers");
		return -1;
	}
	return 0;
}

/* rs_request_body - the message exactly as received (host->message_read:
 * folded fields stay folded, so rspamd's DKIM and ARC checks see what was
 * signed), CR LF line ends, dots un-stuffed */
static int
rs_request_body(struct rs_job *job, char *err, size_t errlen)
{
	const struct pc_host *h = job->rs->host;
	struct evbuffer *out = evhttp_request_get_output_buffer(job->req);
	char buf[16384];
	ssize_t n;

	h->message_rewind(job->call);
	while ((n = h->message_read(job->call, buf, sizeof(buf))) > 0) {
		if (evbuffer_get_length(out) + (size_t)n > job->rs->max_scan_size + 4096) {
			snprintf(err, errlen, "the message grew past max_scan_size while read");
			return -1;
		}
		if (evbuffer_add(out, buf, (size_t)n) < 0)
			goto nomem;
	}
	if (n < 0) {
		snprintf(err, errlen, "cannot read the message");
		return -1;
	}
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	return -1;
}

/* rs_job_free - everything a job holds; a request still in flight is
 * cancelled (never called from inside an evhttp callback) */
static void
rs_job_free(struct rs_job *job)
{
	if (job->req != NULL && job->state == RS_FLIGHT)
		evhttp_cancel_request(job->req);
	job->req = NULL;
	if (job->conn != NULL)
		evhttp_connection_free(job->conn);
	if (job->timer != NULL)
		event_free(job->timer);
	free(job);
}

/* rs_cancel - the host gave up on the call (client gone, filter_timeout):
 * cancel the request, free the connection; the call is not touched */
static void
rs_cancel(void *arg)
{
	rs_job_free(arg);
}

/* rs_timer - the scan took longer than timeout; or, once answered, the
 * reaper that frees the connection outside evhttp's callback */
static void
rs_timer(evutil_socket_t fd, short what, void *arg)
{
	struct rs_job *job = arg;
	char why[64];

	if (job->state == RS_DONE) {
		rs_job_free(job);
		return;
	}
	if (job->req != NULL)
		evhttp_cancel_request(job->req);
	job->req = NULL;
	evhttp_connection_free(job->conn);
	job->conn = NULL;
	snprintf(why, sizeof(why), "timeout after %llums", job->rs->timeout_ms);
	rs_fail(job, why);
}

/* rs_http_error - evhttp's reason, told before rs_http_done(NULL) */
static void
rs_http_error(enum evhttp_request_error e, void *arg)
{
	struct rs_job *job = arg;

	job->http_error = (int)e;
}

/* rs_http_done - the reply, or NULL after an error */
static void
rs_http_done(struct evhttp_request *req, void *arg)
{
	struct rs_job *job = arg;
	char why[120];

	job->req = NULL; /* evhttp frees it when we return */
	if (job->state != RS_FLIGHT)
		return;
	if (req == NULL || evhttp_request_get_response_code(req) == 0) {
		snprintf(why, sizeof(why), "%s", rs_error_name(job->http_error));
		rs_fail(job, why);
		return;
	}
	rs_reply(job, req);
}

/* rs_finish - answer the call; the connection is freed by the reaper */
static void
rs_finish(struct rs_job *job, const struct pc_verdict *v)
{
	static const struct timeval now = {0, 0};

	job->state = RS_DONE;
	evtimer_del(job->timer);
	evtimer_add(job->timer, &now);
	job->rs->host->resume(job->call, v);
}

/* rs_fail - the scan failed: pass marked, or on_error */
static void
rs_fail(struct rs_job *job, const char *why)
{
	struct rspamd *rs = job->rs;
	struct pc_verdict v = {PC_CONTINUE, NULL};
	char text[200];

	rs_warn(rs, job->call, "rspamd: scan failed after %llums: %s: %s",
	    rs_now_ms() - job->start_ms, why,
	    rs->fail_on_error ? "on_error decides" : "passed unscanned");
	if (rs->fail_on_error) {
		snprintf(text, sizeof(text), "rspamd scan failed: %s", why);
		v.action = PC_FAIL;
		v.reply = text;
	} else {
		rs->host->add_header(job->call, "X-Rspamd-Unscanned", "scan failed");
	}
	rs_finish(job, &v);
}

/* ---- the reply ---- */

/* rs_reply - an HTTP reply: 200 with rspamd's JSON, else a failure */
static void
rs_reply(struct rs_job *job, struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	int code = evhttp_request_get_response_code(req);
	struct rj_doc doc;
	const struct rj_value *root;
	size_t len = evbuffer_get_length(in);
	const char *text;
	char why[200];

	if (code != 200) {
		snprintf(why, sizeof(why), "HTTP status %d", code);
		rs_fail(job, why);
		return;
	}
	if (len == 0 || len > RS_REPLY_MAX ||
	    (text = (const char *)evbuffer_pullup(in, (ev_ssize_t)len)) == NULL) {
		snprintf(why, sizeof(why), "reply of %zu octets", len);
		rs_fail(job, why);
		return;
	}
	root = rj_parse(&doc, text, len);
	if (root == NULL) {
		snprintf(why, sizeof(why), "unreadable reply: %s", doc.err);
		rj_doc_free(&doc);
		rs_fail(job, why);
		return;
	}
	if (rs_apply(job, root, why, sizeof(why)) < 0) {
		rj_doc_free(&doc);
		rs_fail(job, why);
		return;
	}
	rj_doc_free(&doc);
}

/* rs_apply - rspamd's answer: scores, headers and the verdict; -1 with
 * why if the reply is not one */
static int
rs_apply(struct rs_job *job, const struct rj_value *root, char *why, size_t whylen)
{
	struct rspamd *rs = job->rs;
	const struct pc_host *h = rs->host;
	const char *action = rj_str(rj_get(root, "action")), *done = NULL;
	double score, required = 0;
	struct pc_verdict v = {PC_CONTINUE, NULL};
	struct rs_sym *syms = NULL;
	size_t n;
	int spam = 0;

	if (root->type != RJ_OBJECT || action == NULL ||
	    rj_num(rj_get(root, "score"), &score) < 0) {
		snprintf(why, whylen, "reply without action or score");
		return -1;
	}
	rj_num(rj_get(root, "required_score"), &required);
	if (rs_action(rs, action, &v, &spam, &done) < 0) {
		snprintf(why, whylen, "unknown action \"%.60s\"", action);
		return -1;
	}
	n = rs_symbols(root, &syms);
	rs_scores(job, syms, n, score, action);
	if (v.action == PC_CONTINUE || v.action == PC_ACCEPT) {
		if (rs->milter)
			rs_milter(job, rj_get(root, "milter"));
		if (strcmp(action, "rewrite subject") == 0)
			rs_subject(job, root);
		if (spam)
			h->add_header(job->call, "X-Spam", "Yes");
		if (rs->headers == RS_HEADERS_ALWAYS || (rs->headers == RS_HEADERS_SPAM && spam))
			rs_result_headers(job, syms, n, score, required, action);
	}
	h->log(rs->self, job->call, PC_LOG_INFO,
	    "rspamd: action=\"%s\" score=%.2f/%.2f symbols=%zu size=%zu time=%llums: %s", action,
	    score, required, n, job->size, rs_now_ms() - job->start_ms, done);
	free(syms);
	rs_finish(job, &v);
	return 0;
}

/* rs_action - rspamd's action as our verdict (doc/rspamd.md, the table);
 * -1 for an action we do not know */
static int
rs_action(struct rspamd *rs, const char *action, struct pc_verdict *v, int *spam, const char **done)
{
	if (strcmp(action, "no action") == 0) {
		*done = "passed";
	} else if (strcmp(action, "add header") == 0 || strcmp(action, "quarantine") == 0) {
		*spam = 1;
		*done = "marked";
	} else if (strcmp(action, "rewrite subject") == 0) {
		*spam = 1;
		*done = "subject rewritten";
	} else if (strcmp(action, "reject") == 0) {
		v->action = PC_REJECT;
		v->reply = rs->reject_reply;
		*done = "rejected";
	} else if (strcmp(action, "soft reject") == 0) {
		v->action = PC_TEMPFAIL;
		v->reply = rs->soft_reject_reply;
		*done = "deferred";
	} else if (strcmp(action, "greylist") == 0) {
		v->action = PC_TEMPFAIL;
		v->reply = rs->greylist_reply;
		*done = "greylisted";
	} else if (strcmp(action, "discard") == 0) {
		v->action = PC_DROP;
		*done = "discarded";
	} else {
		return -1;
	}
	return 0;
}

/* rs_symbols - the reply's symbols with a score other than 0, highest
 * first; *out is NULL or an array to free */
static size_t
rs_symbols(const struct rj_value *root, struct rs_sym **out)
{
	const struct rj_value *syms = rj_get(root, "symbols");
	const struct rj_member *m;
	struct rs_sym *v;
	size_t n = 0;
	double s;

	*out = NULL;
	if (syms == NULL || syms->type != RJ_OBJECT || syms->count == 0)
		return 0;
	if ((v = calloc(syms->count, sizeof(*v))) == NULL)
		return 0;
	for (m = syms->first; m != NULL; m = m->next) {
		if (rj_num(rj_get(&m->v, "score"), &s) < 0 || s == 0 || m->key[0] == '\0')
			continue;
		v[n].name = m->key;
		v[n].score = s;
		n++;
	}
	qsort(v, n, sizeof(*v), rs_sym_cmp);
	*out = v;
	return n;
}

/* rs_sym_cmp - by descending score, then by name (a stable order) */
static int
rs_sym_cmp(const void *a, const void *b)
{
	const struct rs_sym *x = a, *y = b;

	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* rs_scores - add rspamd's result to the transaction's score: each symbol
 * under its own name (while the host has room, keeping one place for the
 * rest), and what rspamd's total holds beyond them (a forced action like
 * GTUBE's, group limits) under RSPAMD; or the total alone under RSPAMD */
static void
rs_scores(struct rs_job *job, struct rs_sym *syms, size_t n, double score, const char *action)
{
	struct rspamd *rs = job->rs;
	const struct pc_host *h = rs->host;
	char name[RS_SYMBOL_MAX + 1], detail[120], total[RS_SYMBOL_MAX + 1];
	size_t i, k, used = 0, room;
	double sum = 0;

	snprintf(total, sizeof(total), "%sRSPAMD", rs->prefix);
	snprintf(detail, sizeof(detail), "rspamd: %s", action);
	rs_clean(detail);
	if (!rs->scores_total) {
		while (h->score_at(job->call, used, NULL, NULL, NULL) == 0)
			used++;
		room = used + 1 < RS_HOST_SYMBOLS ? RS_HOST_SYMBOLS - used - 1 : 0;
		for (i = 0; i < n && i < room; i++) {
			int len = snprintf(name, sizeof(name), "%s%s", rs->prefix, syms[i].name);
			if (len <= 0)
				continue;
			for (k = 0; name[k] != '\0'; k++) {
				unsigned char c = (unsigned char)name[k];
				name[k] = (char)(isalnum(c) && c < 0x80 ? toupper(c) : '_');
			}
			if (h->add_score(job->call, name, syms[i].score, NULL) == 0)
				sum += syms[i].score;
		}
	}
	/* rspamd rounds; a residue below a hundredth is no signal */
	if (fabs(score - sum) >= 0.005)
		h->add_score(job->call, total, score - sum, detail);
}

/* rs_result_headers - X-Rspamd-Action, X-Rspamd-Score, X-Spamd-Result */
static void
rs_result_headers(struct rs_job *job, struct rs_sym *syms, size_t n, double score, double required,
    const char *action)
{
	const struct pc_host *h = job->rs->host;
	char buf[RS_HEADER_VALUE_MAX + 1], act[64];
	size_t i, len;
	int w;

	snprintf(act, sizeof(act), "%s", action);
	rs_clean(act);
	h->add_header(job->call, "X-Rspamd-Action", act);
	snprintf(buf, sizeof(buf), "%.2f / %.2f", score, required);
	h->add_header(job->call, "X-Rspamd-Score", buf);
	w = snprintf(buf, sizeof(buf), "default: %s [%.2f / %.2f]",
	    strcmp(action, "no action") == 0 ? "False" : "True", score, required);
	len = (size_t)w;
	for (i = 0; i < n && len < sizeof(buf); i++) {
		w = snprintf(
		    buf + len, sizeof(buf) - len, "; %s(%.2f)", syms[i].name, syms[i].score);
		if (w < 0 || (size_t)w >= sizeof(buf) - len - 5) {
			snprintf(buf + len, sizeof(buf) - len, "; ...");
			break;
		}
		len += (size_t)w;
	}
	rs_clean(buf);
	h->add_header(job->call, "X-Spamd-Result", buf);
}

/* rs_subject - "rewrite subject": rspamd's new subject, or ours */
static void
rs_subject(struct rs_job *job, const struct rj_value *root)
{
	struct rspamd *rs = job->rs;
	const struct pc_host *h = rs->host;
	const char *given = rj_str(rj_get(root, "subject"));
	const char *old = h->header(job->call, "Subject", 0);
	char buf[RS_HEADER_VALUE_MAX + 1];
	const char *pct = strstr(rs->subject, "%s");

	if (given != NULL && given[0] != '\0')
		snprintf(buf, sizeof(buf), "%s", given);
	else
		snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(pct - rs->subject), rs->subject,
		    old != NULL ? old : "", pct + 2);
	rs_clean(buf);
	if (old != NULL ? h->change_header(job->call, "Subject", 0, buf) < 0
	                : h->insert_header(job->call, (size_t)-1, "Subject", buf) < 0)
		h->log(rs->self, job->call, PC_LOG_WARN, "rspamd: cannot rewrite the subject");
}

/* rs_milter - the header changes rspamd asks for ("milter": add_headers
 * {name: value | {value, order} | [...]}, remove_headers {name: n | [n]}) */
static void
rs_milter(struct rs_job *job, const struct rj_value *milter)
{
	const struct rj_value *add = rj_get(milter, "add_headers");
	const struct rj_value *rem = rj_get(milter, "remove_headers");
	const struct rj_member *m, *e;
	int left = RS_MILTER_CHANGES_MAX;
	double n;

	if (rem != NULL && rem->type == RJ_OBJECT) {
		for (m = rem->first; m != NULL && left > 0; m = m->next) {
			if (m->v.type == RJ_ARRAY) {
				for (e = m->v.first; e != NULL && left > 0; e = e->next)
					if (rj_num(&e->v, &n) == 0) {
						rs_milter_remove(job, m->key, n);
						left--;
					}
			} else if (rj_num(&m->v, &n) == 0) {
				rs_milter_remove(job, m->key, n);
				left--;
			}
		}
	}
	if (add != NULL && add->type == RJ_OBJECT)
		for (m = add->first; m != NULL && left > 0; m = m->next)
			rs_milter_add(job, m->key, &m->v, &left);
}

/* rs_milter_add - one add_headers entry; rspamd's order is milter's
 * insert index (0: first), -1 or none: at the end of the header */
static int
rs_milter_add(struct rs_job *job, const char *name, const struct rj_value *v, int *left)
{
	const struct pc_host *h = job->rs->host;
	const struct rj_member *e;
	const char *value = NULL;
	double order = -1;
	char buf[RS_HEADER_VALUE_MAX + 1];

	if (v->type == RJ_ARRAY) {
		for (e = v->first; e != NULL && *left > 0; e = e->next)
			if (e->v.type != RJ_ARRAY)
				rs_milter_add(job, name, &e->v, left);
		return 0;
	}
	if (v->type == RJ_STRING)
		value = v->str;
	else if (v->type == RJ_OBJECT) {
		value = rj_str(rj_get(v, "value"));
		rj_num(rj_get(v, "order"), &order);
	}
	if (value == NULL)
		return -1;
	(*left)--;
	snprintf(buf, sizeof(buf), "%s", value);
	rs_clean(buf);
	if (h->insert_header(job->call, order >= 0 && order < 100000 ? (size_t)order : (size_t)-1,
	        name, buf) < 0) {
		h->log(job->rs->self, job->call, PC_LOG_WARN,
		    "rspamd: refused the header rspamd asked for: %.60s", name);
		return -1;
	}
	return 0;
}

/* rs_milter_remove - milter's numbering: 0 every field called name, n > 0
 * the n-th, n < 0 the n-th from the last */
static void
rs_milter_remove(struct rs_job *job, const char *name, double n)
{
	const struct pc_host *h = job->rs->host;
	size_t count = 0;

	if (n == 0) {
		h->remove_header(job->call, name);
		return;
	}
	if (n != floor(n) || fabs(n) > 10000)
		return;
	if (n > 0) {
		h->change_header(job->call, name, (size_t)n - 1, NULL);
		return;
	}
	while (count < 10000 && h->header(job->call, name, count) != NULL)
		count++;
	if ((size_t)-n <= count)
		h->change_header(job->call, name, count - (size_t)-n, NULL);
}

/* rs_clean - a header value of ours: folding and control characters
 * become blanks (rspamd folds long values; the host wants one line) */
static void
rs_clean(char *s)
{
	char *w = s, *r;
	int gap = 0;

	for (r = s; *r != '\0'; r++) {
		unsigned char c = (unsigned char)*r;
		if (c < 0x20 || c == 0x7f) {
			gap = 1;
			continue;
		}
		if (gap && w > s && c != ' ' && w[-1] != ' ')
			*w++ = ' ';
		gap = 0;
		*w++ = (char)c;
	}
	*w = '\0';
}

/* ---- helpers ---- */

/* rs_warn - a failure, logged at most once per RS_WARN_EVERY_MS per
 * instance with the count of those not logged in between */
static void
rs_warn(struct rspamd *rs, struct pc_call *call, const char *fmt, ...)
{
	unsigned long long now = rs_now_ms();
	char line[600];
	va_list ap;

	if (rs->warned_ms != 0 && now - rs->warned_ms < RS_WARN_EVERY_MS) {
		rs->quiet++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (rs->quiet > 0)
		rs->host->log(rs->self, call, PC_LOG_WARN,
		    "%s (%lu more failures since the last report)", line, rs->quiet);
	else
		rs->host->log(rs->self, call, PC_LOG_WARN, "%s", line);
	rs->warned_ms = now;
	rs->quiet = 0;
}

static unsigned long long
rs_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000ULL +
	    (unsigned long long)ts.tv_nsec / 1000000ULL;
}

/* rs_error_name - evhttp's reason for a failed request, for the log */
static const char *
rs_error_name(int e)
{
	switch (e) {
	case EVREQ_HTTP_TIMEOUT:
		return "timeout";
	case EVREQ_HTTP_EOF:
		return "connection closed before the reply";
	case EVREQ_HTTP_INVALID_HEADER:
		return "invalid HTTP reply";
	case EVREQ_HTTP_BUFFER_ERROR:
		return "connection failed";
	case EVREQ_HTTP_REQUEST_CANCEL:
		return "cancelled";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "reply too long";
	default:
		return "connection failed";
	}
}
