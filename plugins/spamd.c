/*
 * spamd.c - SpamAssassin's spamd as a content scanner at the end of DATA:
 * the message goes to spamd (the spamc/spamd protocol, SYMBOLS SPAMC/1.5)
 * over TCP or a UNIX socket, and its score becomes the transaction's score.
 *
 * Exports only the descriptor portcullis_plugin (see plugin.h). The keys,
 * the headers and the log lines are in doc/spamd.md; spamd's answer is
 * parsed by plugins/spamd_reply.h.
 *
 * WHAT IT DOES with each message:
 *  - incoming X-Spam-* header fields are left out of what is delivered,
 *    whatever happens next, so a sender cannot forge a verdict;
 *  - a message larger than max_scan_size passes unscanned (as spamc's -s
 *    does), marked "X-Spam-Status: unscanned (too large)";
 *  - otherwise the message exactly as received (host->message_read: the
 *    header section, folded as it came, and the body) goes to spamd; its
 *    total score is added under one symbol
 *    (SPAMD, with the rules that hit as the detail), and X-Spam-Status
 *    ("Yes, score=1000.0 required=5.0 tests=GTUBE,...", SpamAssassin's own
 *    format) is added. The global thresholds (reject_score and friends)
 *    decide; with use_spamd_threshold, spamd's own verdict does
 *    (spam_action);
 *  - spamd down, refusing, slow (timeout) or answering garbage: the message
 *    passes marked "X-Spam-Status: unscanned (spamd unavailable)", as spamc
 *    passes mail through, or, with on_failure = on_error, the section's
 *    on_error decides. Failures are logged at most once a minute, with a
 *    count of the rest.
 *
 * HOW IT WAITS. The hook goes pending and opens a non-blocking connection
 * on the host's event base (a bufferevent with deferred callbacks, so no
 * callback runs inside the hook). The request goes out at once, and the
 * message is streamed from host->message_read as the socket drains, so a
 * scan holds at most SPAMD_FILL_HIGH octets of it in memory. spamd needs
 * Content-length first: one pass of message_read counts the octets (at
 * most about max_scan_size), message_rewind starts it again.
 * One timer bounds the whole scan. Exactly one of spamd_finish (answer,
 * failure, timeout: it resumes) and spamd_cancel (the host gave up) ends
 * each scan, and both free everything.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "portcullis/plugin.h"

#include "spamd_reply.h"

/* spamd's port (/etc/services: spamd is not listed; spamc's default). */
#define SPAMD_PORT 783
/* Below filter_timeout's default (30s), so that a slow spamd is our
 * failure (unscanned, passed) rather than the host's (on_error). */
#define SPAMD_TIMEOUT_MS (20ULL * 1000)
#define SPAMD_TIMEOUT_MAX_MS (10ULL * 60 * 1000)
/* spamc's default max size is 500 KB; spamd takes minutes on megabytes. */
#define SPAMD_MAX_SCAN (512ULL * 1024)
/* A message is streamed from the spool; past this nobody should scan it
 * with SpamAssassin, and the counting pass stays bounded. */
#define SPAMD_MAX_SCAN_LIMIT (64ULL * 1024 * 1024)
/* The body is read in these pieces, and the output buffer refilled when
 * it drains below FILL_LOW, up to FILL_HIGH. */
#define SPAMD_CHUNK 16384
#define SPAMD_FILL_LOW 16384
#define SPAMD_FILL_HIGH 65536
/* The User: header's value (spamc -u): a user name. */
#define SPAMD_USER_MAX 64
/* X-Spam-Status must fit one header line (EDIT_HEADER_MAX, 998 octets with
 * the name): the rule list is cut at a comma past this. */
#define SPAMD_STATUS_MAX 900
/* Failures are logged at most this often per instance. */
#define SPAMD_WARN_EVERY_MS 60000

#define SPAMD_UNSCANNED_SIZE "unscanned (too large)"
#define SPAMD_UNSCANNED_FAIL "unscanned (spamd unavailable)"
#define SPAMD_REPLY_REJECT "550 5.7.1 Message rejected as spam"
#define SPAMD_REPLY_TEMPFAIL "451 4.7.1 Message looks like spam, try again later"

enum spamd_spam_action {
	SPAMD_SPAM_REJECT = 0,
	SPAMD_SPAM_TEMPFAIL,
	SPAMD_SPAM_HEADER,
};

/* An instance: one [plugin spamd] section, read once at init. */
struct spamd {
	const struct pc_host *host;
	struct pc_instance *self;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char where[sizeof(((struct sockaddr_un *)0)->sun_path) + 8]; /* for logs */
	unsigned long long timeout_ms, max_scan;
	int add_header, use_threshold, fail_pass;
	enum spamd_spam_action spam_action;
	char *reply; /* NULL: the default for spam_action */
	char user[SPAMD_USER_MAX + 1]; /* "": no User: header */
	char symbol[65];
	unsigned long long warned_ms; /* the last failure logged */
	unsigned long quiet; /* failures since, not logged */
	/* A PC_FAIL's reason: the host copies it when the hook returns or
	 * resume is called, and there is one loop thread. */
	char why[300];
};

/* One scan in flight: everything a pending call owns. */
struct spamd_scan {
	struct spamd *sd;
	struct pc_call *call; /* valid until resume or cancel */
	struct bufferevent *bev;
	struct event *timer;
	unsigned long long start_ms;
	size_t clen, sent; /* Content-length: the message's octets; sent so far */
	int connected, msg_done, shut;
	char *rbuf; /* the answer so far, rlen octets */
	size_t rlen, rcap;
	struct spamd_reply reply;
};

static int spamd_init(struct pc_init *in, void **instance);
static int spamd_option(struct spamd *sd, const struct pc_option *o, char *err, size_t errlen);
static int spamd_socket_opt(struct spamd *sd, const char *value, char *err, size_t errlen);
static int spamd_bool_opt(
    struct spamd *sd, const struct pc_option *o, int *out, char *err, size_t errlen);
static void spamd_fini(void *instance);
static int spamd_data(void *instance, struct pc_call *call, struct pc_verdict *v);
static void spamd_strip(struct spamd *sd, struct pc_call *call);
static int spamd_count_message(struct spamd *sd, struct pc_call *call, size_t *len);
static int spamd_request(struct spamd_scan *s, struct evbuffer *out);
static int spamd_fill(struct spamd_scan *s);
static void spamd_readcb(struct bufferevent *bev, void *arg);
static void spamd_writecb(struct bufferevent *bev, void *arg);
static void spamd_eventcb(struct bufferevent *bev, short what, void *arg);
static void spamd_timeoutcb(evutil_socket_t fd, short what, void *arg);
static int spamd_take(struct spamd_scan *s);
static void spamd_parse(struct spamd_scan *s, int eof);
static void spamd_finish(struct spamd_scan *s, const char *failure);
static void spamd_cancel(void *arg);
static void spamd_scan_free(struct spamd_scan *s);
static void spamd_result(
    struct spamd *sd, struct pc_call *call, const struct spamd_reply *r, struct pc_verdict *v);
static void spamd_failed(struct spamd *sd, struct pc_call *call, const char *why,
    unsigned long long ms, struct pc_verdict *v);
static void spamd_status_header(
    struct spamd *sd, struct pc_call *call, const struct spamd_reply *r);
static void spamd_rules(const struct spamd_reply *r, size_t max, char *out, size_t outlen);
static unsigned long long spamd_now_ms(void);

static const char *const spamd_keys[] = {
    "socket",
    "timeout",
    "max_scan_size",
    "add_header",
    "use_spamd_threshold",
    "spam_action",
    "reply",
    "on_failure",
    "user",
    "symbol",
    NULL,
};

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "spamd",
    .version = "1.0",
    .keys = spamd_keys,
    .init = spamd_init,
    .fini = spamd_fini,
    .data = spamd_data,
    /* on_failure = on_error hands failures to on_error: by default they
     * must not stop mail, as spamc passes mail when spamd is away. */
    .on_error = "accept",
};

/* ---- configuration ---- */

/* spamd_init - read the section into a new instance */
static int
spamd_init(struct pc_init *in, void **instance)
{
	struct spamd *sd;
	const struct pc_option *o;
	char err[200];

	if ((sd = calloc(1, sizeof(*sd))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	sd->host = in->host;
	sd->self = in->self;
	sd->timeout_ms = SPAMD_TIMEOUT_MS;
	sd->max_scan = SPAMD_MAX_SCAN;
	sd->add_header = 1;
	sd->fail_pass = 1;
	sd->spam_action = SPAMD_SPAM_REJECT;
	snprintf(sd->symbol, sizeof(sd->symbol), "SPAMD");
	if (!PC_HOST_HAS(sd->host, message_rewind)) {
		/* An early 2.1 host, without the message as received. */
		snprintf(in->err, in->errlen,
		    "this portcullis has no message_read (ABI 2.1 with content scanning)");
		in->err_line = in->line;
		spamd_fini(sd);
		return -1;
	}
	if (spamd_socket_opt(sd, "127.0.0.1:783", err, sizeof(err)) < 0)
		abort(); /* the default is a constant */
	for (o = in->options; o != NULL; o = o->next) {
		if (spamd_option(sd, o, in->err, in->errlen) < 0) {
			in->err_line = o->line;
			spamd_fini(sd);
			return -1;
		}
	}
	*instance = sd;
	return 0;
}

/* spamd_option - one key; 0, or -1 with a message in err */
static int
spamd_option(struct spamd *sd, const struct pc_option *o, char *err, size_t errlen)
{
	unsigned long long n;
	size_t i, len;

	if (strcmp(o->key, "socket") == 0)
		return spamd_socket_opt(sd, o->value, err, errlen);
	if (strcmp(o->key, "timeout") == 0) {
		if (sd->host->opt_time(o->value, &n, NULL, 0) == 0 && n >= 1 &&
		    n <= SPAMD_TIMEOUT_MAX_MS) {
			sd->timeout_ms = n;
			return 0;
		}
		snprintf(err, errlen,
		    "timeout: bad value \"%s\": expected a time from 1ms to 10m (e.g. 20s)",
		    o->value);
		return -1;
	}
	if (strcmp(o->key, "max_scan_size") == 0) {
		if (sd->host->opt_size(o->value, &n, NULL, 0) == 0 && n >= 1 &&
		    n <= SPAMD_MAX_SCAN_LIMIT) {
			sd->max_scan = n;
			return 0;
		}
		snprintf(err, errlen,
		    "max_scan_size: bad value \"%s\": expected a size from 1 to 64M (e.g. 512k)",
		    o->value);
		return -1;
	}
	if (strcmp(o->key, "add_header") == 0)
		return spamd_bool_opt(sd, o, &sd->add_header, err, errlen);
	if (strcmp(o->key, "use_spamd_threshold") == 0)
		return spamd_bool_opt(sd, o, &sd->use_threshold, err, errlen);
	if (strcmp(o->key, "spam_action") == 0) {
		if (strcmp(o->value, "reject") == 0)
			sd->spam_action = SPAMD_SPAM_REJECT;
		else if (strcmp(o->value, "tempfail") == 0)
			sd->spam_action = SPAMD_SPAM_TEMPFAIL;
		else if (strcmp(o->value, "header") == 0)
			sd->spam_action = SPAMD_SPAM_HEADER;
		else {
			snprintf(err, errlen,
			    "spam_action: bad value \"%s\": want reject, tempfail or header",
			    o->value);
			return -1;
		}
		return 0;
	}
	if (strcmp(o->key, "on_failure") == 0) {
		if (strcmp(o->value, "pass") == 0)
			sd->fail_pass = 1;
		else if (strcmp(o->value, "on_error") == 0)
			sd->fail_pass = 0;
		else {
			snprintf(err, errlen, "on_failure: bad value \"%s\": want pass or on_error",
			    o->value);
			return -1;
		}
		return 0;
	}
	if (strcmp(o->key, "user") == 0) {
		/* It goes into spamd's request head: one printable word. */
		len = strlen(o->value);
		for (i = 0; i < len; i++)
			if (o->value[i] <= 0x20 || o->value[i] >= 0x7f)
				break;
		if (len == 0 || len > SPAMD_USER_MAX || i < len) {
			snprintf(err, errlen,
			    "user: bad value \"%s\": expected a user name of 1 to %d printable "
			    "characters without blanks",
			    o->value, SPAMD_USER_MAX);
			return -1;
		}
		memcpy(sd->user, o->value, len + 1);
		return 0;
	}
	if (strcmp(o->key, "symbol") == 0) {
		len = strlen(o->value);
		for (i = 0; i < len; i++) {
			char c = o->value[i];
			if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
				break;
		}
		if (len == 0 || len >= sizeof(sd->symbol) || i < len) {
			snprintf(err, errlen,
			    "symbol: bad value \"%s\": expected 1 to 64 characters of [A-Z0-9_]",
			    o->value);
			return -1;
		}
		memcpy(sd->symbol, o->value, len + 1);
		return 0;
	}
	/* reply: the host validates it when it is used */
	free(sd->reply);
	if ((sd->reply = strdup(o->value)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/* spamd_socket_opt - "127.0.0.1:783", "[::1]:783", "127.0.0.1" (port 783)
 * or "/run/spamd.sock": numeric addresses only, so that no lookup ever
 * blocks (or fails) at a scan */
static int
spamd_socket_opt(struct spamd *sd, const char *value, char *err, size_t errlen)
{
	struct sockaddr_un *un = (struct sockaddr_un *)&sd->addr;
	struct sockaddr_storage ss;
	int len = (int)sizeof(ss);
	char host[INET6_ADDRSTRLEN];

	memset(&ss, 0, sizeof(ss));
	if (value[0] == '/') {
		if (strlen(value) >= sizeof(un->sun_path)) {
			snprintf(err, errlen, "socket: path \"%s\" too long (at most %zu octets)",
			    value, sizeof(un->sun_path) - 1);
			return -1;
		}
		memset(&sd->addr, 0, sizeof(sd->addr));
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, value, strlen(value) + 1);
		sd->addrlen = (socklen_t)sizeof(*un);
		snprintf(sd->where, sizeof(sd->where), "%s", value);
		return 0;
	}
	if (evutil_parse_sockaddr_port(value, (struct sockaddr *)&ss, &len) < 0 ||
	    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
		snprintf(err, errlen,
		    "socket: bad value \"%s\": expected an address and port (127.0.0.1:783, "
		    "[::1]:783) or the absolute path of a UNIX socket",
		    value);
		return -1;
	}
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		if (sin->sin_port == 0)
			sin->sin_port = htons(SPAMD_PORT);
		evutil_inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(sd->where, sizeof(sd->where), "%s:%u", host, ntohs(sin->sin_port));
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		if (sin6->sin6_port == 0)
			sin6->sin6_port = htons(SPAMD_PORT);
		evutil_inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(sd->where, sizeof(sd->where), "[%s]:%u", host, ntohs(sin6->sin6_port));
	}
	memcpy(&sd->addr, &ss, sizeof(ss));
	sd->addrlen = (socklen_t)len;
	return 0;
}

/* spamd_bool_opt - yes/no */
static int
spamd_bool_opt(struct spamd *sd, const struct pc_option *o, int *out, char *err, size_t errlen)
{
	if (sd->host->opt_bool(o->value, out, NULL, 0) == 0)
		return 0;
	snprintf(err, errlen, "%s: bad value \"%s\": want yes or no", o->key, o->value);
	return -1;
}

/* spamd_fini - free an instance (no scan of it is in flight any more) */
static void
spamd_fini(void *instance)
{
	struct spamd *sd = instance;

	free(sd->reply);
	free(sd);
}

/* ---- the hook ---- */

/* spamd_data - strip forged X-Spam-* fields, then scan (pending) or pass
 * a message too large */
static int
spamd_data(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct spamd *sd = instance;
	const struct pc_host *h = sd->host;
	struct spamd_scan *s;
	struct evbuffer *out;
	size_t size = h->msg_size(call), len;
	struct timeval tv;
	char why[200];

	spamd_strip(sd, call);
	if (size > sd->max_scan) {
		h->log(sd->self, call, PC_LOG_INFO,
		    "spamd: not scanned: %zu octets, more than max_scan_size %llu: passed", size,
		    sd->max_scan);
		if (sd->add_header)
			h->add_header(call, "X-Spam-Status", SPAMD_UNSCANNED_SIZE);
		return PC_HOOK_DONE;
	}
	if (spamd_count_message(sd, call, &len) < 0) {
		spamd_failed(sd, call, "the message could not be read", 0, v);
		return PC_HOOK_DONE;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		spamd_failed(sd, call, "out of memory", 0, v);
		return PC_HOOK_DONE;
	}
	s->sd = sd;
	s->call = call;
	s->clen = len;
	s->start_ms = spamd_now_ms();
	spamd_reply_init(&s->reply);
	/* Deferred callbacks: none runs inside this hook, not even a connect
	 * that fails at once. */
	s->bev =
	    bufferevent_socket_new(h->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	s->timer = evtimer_new(h->base, spamd_timeoutcb, s);
	if (s->bev == NULL || s->timer == NULL) {
		spamd_scan_free(s);
		spamd_failed(sd, call, "out of memory", 0, v);
		return PC_HOOK_DONE;
	}
	out = bufferevent_get_output(s->bev);
	if (spamd_request(s, out) < 0 || spamd_fill(s) < 0) {
		spamd_scan_free(s);
		spamd_failed(sd, call, "the message could not be read", 0, v);
		return PC_HOOK_DONE;
	}
	bufferevent_setcb(s->bev, spamd_readcb, spamd_writecb, spamd_eventcb, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, s->msg_done ? 0 : SPAMD_FILL_LOW, 0);
	/* A failure libevent sees at once (no such UNIX socket) is answered
	 * here; a refused connection usually comes later, to spamd_eventcb. */
	if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&sd->addr, (int)sd->addrlen) <
	    0) {
		snprintf(why, sizeof(why), "connect: %s",
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		spamd_scan_free(s);
		spamd_failed(sd, call, why, 0, v);
		return PC_HOOK_DONE;
	}
	if (h->pending(call, spamd_cancel, s) != 0) {
		spamd_scan_free(s);
		spamd_failed(sd, call, "the call cannot wait", 0, v);
		return PC_HOOK_DONE;
	}
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	tv.tv_sec = (time_t)(sd->timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(sd->timeout_ms % 1000) * 1000;
	evtimer_add(s->timer, &tv);
	/* The session waits for resume or cancel; the event loop does not. */
	return PC_HOOK_PENDING;
}

/* spamd_strip - leave out every incoming X-Spam-* field: only our own
 * (added with add_header, which remove_header does not touch) may reach
 * the backend */
static void
spamd_strip(struct spamd *sd, struct pc_call *call)
{
	const char *name, *value;
	size_t n;

	for (n = 0; sd->host->header_at(call, n, &name, &value) == 0; n++)
		if (strncasecmp(name, "X-Spam-", 7) == 0)
			sd->host->remove_header(call, name);
}

/* spamd_count_message - the message's length as message_read gives it
 * (at most about max_scan_size: msg_size said so), then back to its
 * start. Counted rather than taken from msg_size: Content-length must be
 * exactly what is sent, whatever the message holds. */
static int
spamd_count_message(struct spamd *sd, struct pc_call *call, size_t *len)
{
	char buf[SPAMD_CHUNK];
	ssize_t n;

	*len = 0;
	sd->host->message_rewind(call);
	while ((n = sd->host->message_read(call, buf, sizeof(buf))) > 0)
		*len += (size_t)n;
	sd->host->message_rewind(call);
	return n < 0 ? -1 : 0;
}

/* spamd_request - the request line and its headers; the message follows */
static int
spamd_request(struct spamd_scan *s, struct evbuffer *out)
{
	struct spamd *sd = s->sd;

	if (evbuffer_add_printf(out, "SYMBOLS SPAMC/1.5\r\nContent-length: %zu\r\n", s->clen) < 0 ||
	    (sd->user[0] != '\0' && evbuffer_add_printf(out, "User: %s\r\n", sd->user) < 0) ||
	    evbuffer_add(out, "\r\n", 2) < 0)
		return -1;
	return 0;
}

/* spamd_fill - more of the message into the output buffer, up to
 * SPAMD_FILL_HIGH; at the end, the write watermark drops to 0 so that the
 * write callback says when all is sent */
static int
spamd_fill(struct spamd_scan *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	char buf[SPAMD_CHUNK];
	ssize_t n;

	while (!s->msg_done && evbuffer_get_length(out) < SPAMD_FILL_HIGH) {
		if ((n = s->sd->host->message_read(s->call, buf, sizeof(buf))) < 0)
			return -1;
		if (n == 0) {
			s->msg_done = 1;
			break;
		}
		/* The spool does not change under us; if it did, the
		 * Content-length we sent would lie. */
		if ((size_t)n > s->clen - s->sent)
			return -1;
		s->sent += (size_t)n;
		if (evbuffer_add(out, buf, (size_t)n) < 0)
			return -1;
	}
	if (s->msg_done && s->sent != s->clen)
		return -1;
	return 0;
}

/* ---- the connection's callbacks ---- */

/* spamd_writecb - the output drained to the watermark: more body, or,
 * once everything is sent, a half-close (spamd reads to Content-length
 * anyway; a server that reads to EOF gets one) */
static void
spamd_writecb(struct bufferevent *bev, void *arg)
{
	struct spamd_scan *s = arg;

	if (!s->msg_done) {
		if (spamd_fill(s) < 0) {
			spamd_finish(s, "the message could not be read");
			return;
		}
		if (s->msg_done)
			bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		return;
	}
	if (!s->shut && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		s->shut = 1;
		shutdown(bufferevent_getfd(bev), SHUT_WR);
	}
}

/* spamd_readcb - more of the answer */
static void
spamd_readcb(struct bufferevent *bev, void *arg)
{
	spamd_parse(arg, 0);
}

/* spamd_eventcb - connected, closed or failed */
static void
spamd_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct spamd_scan *s = arg;
	int err = EVUTIL_SOCKET_ERROR();
	char why[256];

	if (what & BEV_EVENT_CONNECTED) {
		s->connected = 1;
		return;
	}
	if (what & BEV_EVENT_EOF) {
		spamd_parse(s, 1);
		return;
	}
	/* An error. An answer complete already (spamd refusing the request
	 * and closing while we still write) still counts. */
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0 && spamd_take(s) == 0 &&
	    spamd_reply_parse(s->rbuf, s->rlen, 1, &s->reply) == SPAMD_DONE) {
		spamd_finish(s, NULL);
		return;
	}
	snprintf(why, sizeof(why), "%s: %s",
	    !s->connected                  ? "connect"
	        : what & BEV_EVENT_READING ? "read"
	                                   : "write",
	    err != 0 ? evutil_socket_error_to_string(err) : "failed");
	spamd_finish(s, why);
}

/* spamd_timeoutcb - the scan took longer than timeout */
static void
spamd_timeoutcb(evutil_socket_t fd, short what, void *arg)
{
	struct spamd_scan *s = arg;
	char why[128];

	snprintf(why, sizeof(why), "no answer within timeout (%llu ms)", s->sd->timeout_ms);
	spamd_finish(s, why);
}

/* spamd_take - move what arrived into rbuf (one flat buffer for the
 * parser, grown by doubling up to SPAMD_REPLY_MAX + 1: linear work
 * whatever the reads' sizes). 0, or -1: too long, out of memory. */
static int
spamd_take(struct spamd_scan *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t avail = evbuffer_get_length(in), cap;
	char *p;

	if (avail > SPAMD_REPLY_MAX + 1 - s->rlen)
		return -1;
	if (s->rlen + avail > s->rcap) {
		cap = s->rcap ? s->rcap : 1024;
		while (cap < s->rlen + avail)
			cap *= 2;
		if (cap > SPAMD_REPLY_MAX + 1)
			cap = SPAMD_REPLY_MAX + 1;
		if ((p = realloc(s->rbuf, cap)) == NULL)
			return -1;
		s->rbuf = p;
		s->rcap = cap;
	}
	if (evbuffer_remove(in, s->rbuf + s->rlen, avail) != (int)avail)
		return -1;
	s->rlen += avail;
	return 0;
}

/* spamd_parse - what the answer says so far */
static void
spamd_parse(struct spamd_scan *s, int eof)
{
	char why[200];

	if (spamd_take(s) < 0) {
		spamd_finish(s, "bad answer: the answer is too long");
		return;
	}
	switch (spamd_reply_parse(s->rbuf != NULL ? s->rbuf : "", s->rlen, eof, &s->reply)) {
	case SPAMD_AGAIN:
		return;
	case SPAMD_DONE:
		spamd_finish(s, NULL);
		return;
	case SPAMD_BAD:
		snprintf(why, sizeof(why), "bad answer: %s", s->reply.error);
		spamd_finish(s, why);
		return;
	}
}

/* ---- the end of a scan ---- */

/* spamd_finish - the answer (failure NULL) or a failure: score, headers,
 * the verdict; free the scan and resume */
static void
spamd_finish(struct spamd_scan *s, const char *failure)
{
	struct spamd *sd = s->sd;
	struct pc_call *call = s->call;
	struct pc_verdict v = {PC_CONTINUE, NULL};
	unsigned long long ms = spamd_now_ms() - s->start_ms;
	char why[300], rules[SPAMD_STATUS_MAX];

	if (failure == NULL && s->reply.code != 0) {
		snprintf(why, sizeof(why), "spamd answered %d %s", s->reply.code, s->reply.message);
		failure = why;
	}
	if (failure != NULL) {
		spamd_failed(sd, call, failure, ms, &v);
	} else {
		/* The rule list points into the input buffer: use it first. */
		spamd_rules(&s->reply, sizeof(rules) - 1, rules, sizeof(rules));
		sd->host->log(sd->self, call, PC_LOG_INFO,
		    "spamd: %s score=%s required=%s tests=%s (%zu octets in %llu ms)",
		    s->reply.spam ? "Yes" : "No", s->reply.score, s->reply.required, rules, s->clen,
		    ms);
		spamd_result(sd, call, &s->reply, &v);
	}
	spamd_scan_free(s);
	/* The host copies v.reply before resume returns. */
	sd->host->resume(call, &v);
}

/* spamd_cancel - the host gave up on the call (the client left, or
 * filter_timeout passed): close, free, never touch the call again */
static void
spamd_cancel(void *arg)
{
	struct spamd_scan *s = arg;

	s->sd->host->log(s->sd->self, NULL, PC_LOG_INFO,
	    "spamd: scan at %s cancelled after %llu ms", s->sd->where,
	    spamd_now_ms() - s->start_ms);
	spamd_scan_free(s);
}

/* spamd_scan_free - the connection, the timer and the scan */
static void
spamd_scan_free(struct spamd_scan *s)
{
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	if (s->timer != NULL)
		event_free(s->timer);
	free(s->rbuf);
	free(s);
}

/* spamd_result - spamd's answer: the score, X-Spam-Status, and with
 * use_spamd_threshold spamd's own verdict */
static void
spamd_result(
    struct spamd *sd, struct pc_call *call, const struct spamd_reply *r, struct pc_verdict *v)
{
	char detail[257];

	spamd_rules(r, sizeof(detail) - 1, detail, sizeof(detail));
	if (sd->host->add_score(call, sd->symbol, r->score_v, detail) < 0)
		sd->host->log(sd->self, call, PC_LOG_WARN, "spamd: the score %s could not be added",
		    r->score);
	if (sd->add_header)
		spamd_status_header(sd, call, r);
	if (!sd->use_threshold || !r->spam)
		return;
	switch (sd->spam_action) {
	case SPAMD_SPAM_REJECT:
		v->action = PC_REJECT;
		v->reply = sd->reply != NULL ? sd->reply : SPAMD_REPLY_REJECT;
		break;
	case SPAMD_SPAM_TEMPFAIL:
		v->action = PC_TEMPFAIL;
		v->reply = sd->reply != NULL ? sd->reply : SPAMD_REPLY_TEMPFAIL;
		break;
	case SPAMD_SPAM_HEADER:
		sd->host->add_header(call, "X-Spam-Flag", "YES");
		break;
	}
}

/* spamd_failed - no answer to use: log (rate-limited), then pass marked
 * unscanned, or PC_FAIL for the section's on_error */
static void
spamd_failed(struct spamd *sd, struct pc_call *call, const char *why, unsigned long long ms,
    struct pc_verdict *v)
{
	unsigned long long now = spamd_now_ms();
	const char *then = sd->fail_pass ? "passed unscanned" : "on_error decides";

	if (sd->warned_ms != 0 && now - sd->warned_ms < SPAMD_WARN_EVERY_MS) {
		sd->quiet++;
		sd->host->log(sd->self, call, PC_LOG_DEBUG,
		    "spamd: scan failed at %s: %s (after %llu ms): %s", sd->where, why, ms, then);
	} else {
		if (sd->quiet > 0)
			sd->host->log(sd->self, call, PC_LOG_WARN,
			    "spamd: scan failed at %s: %s (after %llu ms): %s (%lu more failures "
			    "since the last report)",
			    sd->where, why, ms, then, sd->quiet);
		else
			sd->host->log(sd->self, call, PC_LOG_WARN,
			    "spamd: scan failed at %s: %s (after %llu ms): %s", sd->where, why, ms,
			    then);
		sd->warned_ms = now;
		sd->quiet = 0;
	}
	if (!sd->fail_pass) {
		snprintf(sd->why, sizeof(sd->why), "%s", why);
		v->action = PC_FAIL;
		v->reply = sd->why;
		return;
	}
	if (sd->add_header)
		sd->host->add_header(call, "X-Spam-Status", SPAMD_UNSCANNED_FAIL);
}

/* spamd_status_header - X-Spam-Status as SpamAssassin writes it (without
 * its autolearn and version parts), on one line */
static void
spamd_status_header(struct spamd *sd, struct pc_call *call, const struct spamd_reply *r)
{
	char value[SPAMD_STATUS_MAX + 1], rules[SPAMD_STATUS_MAX];
	int n;

	n = snprintf(value, sizeof(value),
	    "%s, score=%s required=%s tests=", r->spam ? "Yes" : "No", r->score, r->required);
	spamd_rules(r, sizeof(value) - 1 - (size_t)n, rules, sizeof(rules));
	snprintf(value + n, sizeof(value) - (size_t)n, "%s", rules);
	if (sd->host->add_header(call, "X-Spam-Status", value) < 0)
		sd->host->log(
		    sd->self, call, PC_LOG_WARN, "spamd: X-Spam-Status could not be added");
}

/* spamd_rules - the rule list, "none" if empty, cut after the last whole
 * rule that fits in max octets with ",..." after it */
static void
spamd_rules(const struct spamd_reply *r, size_t max, char *out, size_t outlen)
{
	size_t n = r->symbols_len, cut;

	if (outlen == 0)
		return;
	if (max >= outlen)
		max = outlen - 1;
	if (n == 0) {
		snprintf(out, outlen, "%s", max >= 4 ? "none" : "");
		return;
	}
	if (n <= max) {
		memcpy(out, r->symbols, n);
		out[n] = '\0';
		return;
	}
	/* keep whole rules and room for ",..." */
	cut = max >= 4 ? max - 4 : 0;
	while (cut > 0 && r->symbols[cut] != ',')
		cut--;
	memcpy(out, r->symbols, cut);
	snprintf(out + cut, outlen - cut, "%s", cut > 0 ? ",..." : "...");
}

/* spamd_now_ms - the monotonic clock, for durations and the warning
 * interval */
static unsigned long long
spamd_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000ULL +
	    (unsigned long long)ts.tv_nsec / 1000000ULL;
}
