/*
 * rdns.c - the client's name: a PTR lookup confirmed by a forward lookup
 * (forward-confirmed reverse DNS, as Postfix's smtpd does).
 *
 * Exports rdns_configure, rdns_resolver_changed, rdns_init, rdns_start, rdns_wait, rdns_unwait,
 * rdns_free, rdns_name and rdns_xclient_name. The name goes to
 * the backend as XCLIENT NAME, so that checks such as Postfix's
 * reject_unknown_client_hostname see the real client instead of a proxy
 * with no name. The lookup starts when the client is known and runs while
 * the banner and HELO are exchanged; only an XCLIENT that needs the answer
 * waits for it, and never longer than dns_timeout.
 *
 * A lookup the resolver fails (no answer within dns_timeout, SERVFAIL,
 * REFUSED...: not NXDOMAIN or no data, which are answers) is counted
 * (M_DNS_FAILED). It may be the resolver's fault, or only the client's
 * zone's: a client controls its own reverse zone and can make it time out
 * at will, and must not switch lookups off for everyone. So the resolver
 * is then checked (probe_start): the PTR of 127.0.0.1, which any working
 * resolver answers at once from a locally served zone (RFC 6303). While
 * the check runs, lookups are skipped; if it is answered (a name or
 * NXDOMAIN alike) the resolver is up and the failure was the zone's; if
 * not, the resolver is down, and for dns_retry_interval the lookups fail
 * at once, without asking, so that sessions do not each wait dns_timeout;
 * the first one after the interval asks again. One line says it went down,
 * one that it is back, not one per session.
 *
 * A query belongs to its struct rdns until it finishes. One freed first
 * detaches it and cancels the DNS request; libevent still calls back once,
 * and that callback frees the query.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "log.h"
#include "metrics.h"
#include "rdns.h"
#include "smtp_parse.h"

struct rdns_query {
	struct rdns *r; /* NULL once detached */
	struct evdns_base *dns;
	struct evdns_request *req; /* the DNS request in flight */
	struct event *deadline;
	int v6;
	unsigned char addr[16]; /* the client's address, to confirm against */
	char name[SMTP_HOSTNAME_MAX + 1]; /* what the PTR said */
};

/* The check of the resolver after a failed lookup (one at a time). */
struct rdns_probe {
	struct evdns_base *dns;
	struct evdns_request *req; /* in flight; NULL once its callback ran */
	struct event *deadline;
	int over; /* decided (deadline or answer): the callback only frees */
	char why[128]; /* the failure that started it */
};

/* The resolver as client-name lookups found it: one per process. */
static struct {
	uint64_t retry_ms; /* dns_retry_interval; 0: never skip */
	uint64_t timeout_ms; /* the probe's deadline: the last dns_timeout seen */
	int down; /* it failed the last lookup that finished */
	uint64_t retry_at; /* while down: skip lookups until then (now_ms) */
	unsigned long skipped; /* lookups skipped since it went down */
	struct rdns_probe *probe; /* a check in flight, or NULL */
} resolver;

static uint64_t now_ms(void);
static int resolver_skip(void);
static void resolver_failed(struct event_base *base, struct evdns_base *dns, const char *why);
static void resolver_answered(void);
static void resolver_down(const char *why);
static void probe_start(struct event_base *base, struct evdns_base *dns, const char *why);
static void query_free(struct rdns_query *q);
static void rdns_finish(struct rdns_query *q, enum rdns_state state, const char *failed);
static const char *rdns_failure(int result);
static int rdns_detached(struct rdns_query *q);
static void rdns_ptr_cb(int result, char type, int count, int ttl, void *addresses, void *arg);
static void rdns_addr_cb(int result, char type, int count, int ttl, void *addresses, void *arg);
static void rdns_deadline_cb(evutil_socket_t fd, short what, void *arg);

/* query_free - the query is over and nobody refers to it */
static void
query_free(struct rdns_query *q)
{
	if (q->deadline != NULL)
		event_free(q->deadline);
	free(q);
}

/* now_ms - a monotonic clock, in milliseconds */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* rdns_configure - dns_retry_interval (at start and at each reload) */
void
rdns_configure(uint64_t retry_ms)
{
	resolver.retry_ms = retry_ms;
}

/* rdns_resolver_changed - other name servers: what the old ones did
 * says nothing about them, the next lookup asks */
void
rdns_resolver_changed(void)
{
	if (resolver.down)
		log_info(NULL, "resolver changed: client names are looked up again (%lu skipped)",
		    resolver.skipped);
	resolver.down = 0;
	rdns_shutdown(); /* a check of the old resolver says nothing */
}

/* resolver_skip - 1: the resolver is down, do not ask it. The first
 * lookup after the interval asks; the others keep skipping while it does. */
static int
resolver_skip(void)
{
	uint64_t now;

	if (resolver.probe != NULL && !resolver.probe->over) {
		resolver.skipped++; /* being checked: a moment, at most dns_timeout */
		return 1;
	}
	if (!resolver.down || resolver.retry_ms == 0)
		return 0;
	now = now_ms();
	if (now >= resolver.retry_at) {
		resolver.retry_at = now + resolver.retry_ms;
		return 0;
	}
	resolver.skipped++;
	return 1;
}

/* resolver_failed - a lookup failed for the resolver's sake, or for its
 * zone's: counted, and the resolver checked */
static void
resolver_failed(struct event_base *base, struct evdns_base *dns, const char *why)
{
	metrics_inc(M_DNS_FAILED);
	if (resolver.retry_ms == 0) {
		resolver_down(why); /* never skipped: no need to check */
		return;
	}
	probe_start(base, dns, why);
}

/* resolver_down - the check failed too: skip lookups for a while */
static void
resolver_down(const char *why)
{
	resolver.retry_at = now_ms() + resolver.retry_ms;
	if (resolver.down)
		return;
	resolver.down = 1;
	resolver.skipped = 0;
	if (resolver.retry_ms > 0)
		log_warn(NULL,
		    "resolver down (%s): client names are not looked up for the next %llu ms "
		    "(dns_retry_interval); XCLIENT NAME is [TEMPUNAVAIL] meanwhile",
		    why, (unsigned long long)resolver.retry_ms);
	else
		log_warn(NULL, "resolver down (%s)", why);
}

/* probe_free - the check is over and its request gone */
static void
probe_free(struct rdns_probe *p)
{
	if (p->deadline != NULL)
		event_free(p->deadline);
	free(p);
}

/* probe_decide - the check's outcome: up (answered) or down (why) */
static void
probe_decide(struct rdns_probe *p, const char *down)
{
	p->over = 1;
	evtimer_del(p->deadline);
	if (resolver.probe == p)
		resolver.probe = NULL;
	if (down != NULL) {
		char why[300];
		snprintf(why, sizeof(why), "%s; a check of 127.0.0.1's PTR: %s", p->why, down);
		resolver_down(why);
		return;
	}
	if (resolver.down)
		resolver_answered();
	else
		log_info(NULL,
		    "a client name lookup failed (%s) but the resolver answers: the client's zone is "
		    "at fault, lookups go on (%lu skipped meanwhile)",
		    p->why, resolver.skipped);
	resolver.skipped = 0;
}

static void
probe_cb(int result, char type, int count, int ttl, void *addresses, void *arg)
{
	struct rdns_probe *p = arg;
	const char *why;

	(void)type;
	(void)count;
	(void)ttl;
	(void)addresses;
	p->req = NULL;
	if (p->over) { /* the deadline decided, or the daemon is stopping */
		probe_free(p);
		return;
	}
	why = result == DNS_ERR_CANCEL ? NULL : rdns_failure(result);
	if (result == DNS_ERR_CANCEL)
		why = "cancelled";
	probe_decide(p, why);
	probe_free(p);
}

static void
probe_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rdns_probe *p = arg;

	(void)fd;
	(void)what;
	probe_decide(p, "no answer within dns_timeout");
	if (p->req != NULL)
		evdns_cancel_request(p->dns, p->req); /* its callback frees p */
	else
		probe_free(p);
}

/* probe_start - is the resolver up? Ask it what any resolver knows. One
 * check at a time: failures meanwhile wait for its outcome. */
static void
probe_start(struct event_base *base, struct evdns_base *dns, const char *why)
{
	struct in_addr loopback = {htonl(INADDR_LOOPBACK)};
	struct timeval tv = {
	    (time_t)(resolver.timeout_ms / 1000), (suseconds_t)(resolver.timeout_ms % 1000) * 1000};
	struct rdns_probe *p;

	if (resolver.probe != NULL)
		return;
	if ((p = calloc(1, sizeof(*p))) == NULL ||
	    (p->deadline = evtimer_new(base, probe_deadline_cb, p)) == NULL) {
		if (p != NULL)
			free(p);
		resolver_down(why);
		return;
	}
	p->dns = dns;
	snprintf(p->why, sizeof(p->why), "%s", why);
	p->req = evdns_base_resolve_reverse(dns, &loopback, 0, probe_cb, p);
	if (p->req == NULL) {
		probe_free(p);
		resolver_down(why);
		return;
	}
	resolver.probe = p;
	evtimer_add(p->deadline, &tv);
}

/* rdns_shutdown - the daemon stops: a check in flight is given up (its
 * callback, which libevent still calls, frees it) */
void
rdns_shutdown(void)
{
	struct rdns_probe *p = resolver.probe;

	if (p == NULL)
		return;
	resolver.probe = NULL;
	p->over = 1;
	evtimer_del(p->deadline);
	if (p->req != NULL)
		evdns_cancel_request(p->dns, p->req);
	else
		probe_free(p);
}

/* resolver_answered - the resolver answered (a name, or that there is none) */
static void
resolver_answered(void)
{
	if (!resolver.down)
		return;
	resolver.down = 0;
	log_info(NULL, "resolver is back: client names are looked up again (%lu skipped)",
	    resolver.skipped);
}

/* rdns_finish - the answer is known: record it, wake the waiter, drop the
 * query; failed says why the resolver failed, NULL if it did not */
static void
rdns_finish(struct rdns_query *q, enum rdns_state state, const char *failed)
{
	struct rdns *r = q->r;
	void (*wait)(void *) = r->wait;

	if (failed != NULL)
		resolver_failed(r->base, q->dns, failed);
	else if (state != RDNS_TEMP)
		resolver_answered();
	r->q = NULL;
	r->state = state;
	if (state == RDNS_OK && (r->name = strdup(q->name)) == NULL)
		r->state = RDNS_TEMP;
	if (r->state == RDNS_OK)
		log_info(r->id, "client=%s name=%s", r->peer, r->name);
	else
		log_info(r->id, "client=%s name=unknown%s", r->peer,
		    r->state == RDNS_TEMP ? " (temporary DNS failure)" : "");
	evtimer_del(q->deadline);
	if (q->req != NULL) {
		/* The deadline passed first: the request's callback frees q. */
		q->r = NULL;
		evdns_cancel_request(q->dns, q->req);
	} else {
		query_free(q);
	}
	r->wait = NULL;
	if (wait != NULL)
		wait(r->wait_arg);
}

/* rdns_failure - what a failed lookup means: NULL, the name does not
 * exist (an answer); else the resolver's failure, in words */
static const char *
rdns_failure(int result)
{
	if (result == DNS_ERR_NOTEXIST || result == DNS_ERR_NODATA || result == DNS_ERR_NONE)
		return NULL;
	return evdns_err_to_string(result);
}

/* rdns_detached - a callback for a query whose session is gone (or whose
 * deadline passed): 1 if it was, and the query is freed */
static int
rdns_detached(struct rdns_query *q)
{
	q->req = NULL;
	if (q->r != NULL)
		return 0;
	query_free(q);
	return 1;
}

static void
rdns_ptr_cb(int result, char type, int count, int ttl, void *addresses, void *arg)
{
	struct rdns_query *q = arg;
	const char *name, *why;

	(void)ttl;
	if (rdns_detached(q))
		return;
	if (result != DNS_ERR_NONE || type != DNS_PTR || count < 1) {
		why = rdns_failure(result);
		rdns_finish(q, why ? RDNS_TEMP : RDNS_UNKNOWN, why);
		return;
	}
	/* evdns gives one PTR name. One that is not a host name (a forged
	 * answer carrying spaces or brackets, say) is no name at all. */
	name = ((const char *const *)addresses)[0];
	if (name == NULL || !smtp_valid_hostname(name, strlen(name))) {
		rdns_finish(q, RDNS_UNKNOWN, NULL);
		return;
	}
	snprintf(q->name, sizeof(q->name), "%s", name);
	q->req = q->v6
	    ? evdns_base_resolve_ipv6(q->dns, q->name, DNS_QUERY_NO_SEARCH, rdns_addr_cb, q)
	    : evdns_base_resolve_ipv4(q->dns, q->name, DNS_QUERY_NO_SEARCH, rdns_addr_cb, q);
	if (q->req == NULL)
		rdns_finish(q, RDNS_TEMP, "the lookup could not be sent");
}

static void
rdns_addr_cb(int result, char type, int count, int ttl, void *addresses, void *arg)
{
	struct rdns_query *q = arg;
	size_t len = q->v6 ? 16 : 4;
	const char *why;

	(void)ttl;
	if (rdns_detached(q))
		return;
	if (result != DNS_ERR_NONE || type != (q->v6 ? DNS_IPv6_AAAA : DNS_IPv4_A)) {
		why = rdns_failure(result);
		rdns_finish(q, why ? RDNS_TEMP : RDNS_UNKNOWN, why);
		return;
	}
	for (int i = 0; i < count; i++) {
		if (memcmp((const unsigned char *)addresses + (size_t)i * len, q->addr, len) == 0) {
			rdns_finish(q, RDNS_OK, NULL);
			return;
		}
	}
	/* The name does not lead back: it is not the client's. */
	rdns_finish(q, RDNS_UNKNOWN, NULL);
}

/* rdns_deadline_cb - dns_timeout passed with no answer */
static void
rdns_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rdns_query *q = arg;

	(void)fd;
	(void)what;
	rdns_finish(q, RDNS_TEMP, "no answer within dns_timeout");
}

/* rdns_init - a client whose name may be wanted */
void
rdns_init(struct rdns *r, struct event_base *base, struct evdns_base *dns, uint64_t timeout_ms,
    const char *ip, const char *id, const char *peer)
{
	memset(r, 0, sizeof(*r));
	r->base = base;
	r->dns = dns;
	r->timeout_ms = timeout_ms;
	r->ip = ip;
	r->id = id;
	r->peer = peer;
}

/* rdns_start - look the client up; the answer lands in r->state */
void
rdns_start(struct rdns *r)
{
	struct rdns_query *q;
	struct timeval tv = {
	    (time_t)(r->timeout_ms / 1000), (suseconds_t)(r->timeout_ms % 1000) * 1000};

	if (r->state != RDNS_NONE || r->dns == NULL)
		return;
	resolver.timeout_ms = r->timeout_ms;
	if (resolver_skip()) {
		r->state = RDNS_TEMP;
		log_info(r->id, "client=%s name=unknown (resolver down: not asked)", r->peer);
		return;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL) {
		r->state = RDNS_TEMP;
		return;
	}
	q->r = r;
	q->dns = r->dns;
	q->v6 = strchr(r->ip, ':') != NULL;
	if (inet_pton(q->v6 ? AF_INET6 : AF_INET, r->ip, q->addr) != 1) {
		free(q);
		r->state = RDNS_UNKNOWN;
		return;
	}
	q->deadline = evtimer_new(r->base, rdns_deadline_cb, q);
	if (q->deadline == NULL) {
		free(q);
		r->state = RDNS_TEMP;
		return;
	}
	q->req = q->v6 ? evdns_base_resolve_reverse_ipv6(
	                     q->dns, (const struct in6_addr *)q->addr, 0, rdns_ptr_cb, q)
	               : evdns_base_resolve_reverse(
	                     q->dns, (const struct in_addr *)q->addr, 0, rdns_ptr_cb, q);
	if (q->req == NULL) {
		query_free(q);
		r->state = RDNS_TEMP;
		resolver_failed(r->base, r->dns, "the lookup could not be sent");
		return;
	}
	r->q = q;
	r->state = RDNS_PENDING;
	evtimer_add(q->deadline, &tv);
}

/* rdns_wait - be told when the answer is in */
int
rdns_wait(struct rdns *r, void (*cb)(void *arg), void *arg)
{
	if (r->state != RDNS_PENDING)
		return 0;
	r->wait = cb;
	r->wait_arg = arg;
	return 1;
}

void
rdns_unwait(struct rdns *r)
{
	r->wait = NULL;
	r->wait_arg = NULL;
}

/* rdns_free - the client is gone: forget the lookup */
void
rdns_free(struct rdns *r)
{
	struct rdns_query *q = r->q;

	r->wait = NULL;
	free(r->name);
	r->name = NULL;
	if (q == NULL)
		return;
	r->q = NULL;
	q->r = NULL;
	evtimer_del(q->deadline);
	if (q->req != NULL)
		evdns_cancel_request(q->dns, q->req); /* its callback frees q */
	else
		query_free(q);
}

const char *
rdns_name(const struct rdns *r)
{
	return r->state == RDNS_OK ? r->name : NULL;
}

/* rdns_xclient_name - NAME= for XCLIENT, as Postfix's XCLIENT_README has it */
const char *
rdns_xclient_name(const struct rdns *r)
{
	switch (r->state) {
	case RDNS_OK:
		return r->name;
	case RDNS_TEMP:
	case RDNS_PENDING:
		return "[TEMPUNAVAIL]";
	default:
		return "[UNAVAILABLE]";
	}
}
