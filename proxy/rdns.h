/*
 * rdns.h - the client's name, forward-confirmed (rdns.c). A struct rdns
 * belongs to one client; the session starts the lookup early, the backend
 * leg waits for it when XCLIENT NAME wants the answer, plugins read it.
 */
#ifndef PORTCULLIS_RDNS_H
#define PORTCULLIS_RDNS_H

#include <stdint.h>

struct event_base;
struct evdns_base;
struct rdns_query;

enum rdns_state {
	RDNS_NONE, /* not looked up (client_rdns = no, or not needed) */
	RDNS_PENDING, /* asked, no answer yet */
	RDNS_OK, /* name is the confirmed name */
	RDNS_UNKNOWN, /* no PTR, or a name that does not lead back */
	RDNS_TEMP, /* no answer within dns_timeout, or a DNS error */
};

struct rdns {
	enum rdns_state state;
	char *name; /* once state is RDNS_OK */
	/* Set by rdns_init; the strings outlive the struct. */
	struct event_base *base;
	struct evdns_base *dns; /* NULL: no lookups */
	const char *ip; /* the client's address */
	const char *id, *peer; /* for the log line */
	uint64_t timeout_ms;
	struct rdns_query *q; /* in flight */
	void (*wait)(void *arg); /* rdns_wait's callback */
	void *wait_arg;
};

/* rdns_configure - dns_retry_interval: after the resolver failed a lookup,
 * lookups fail at once for that long (0: never). */
void rdns_configure(uint64_t retry_ms);
/* rdns_resolver_changed - dns_server changed: a resolver that was down is
 * asked again at once. */
void rdns_resolver_changed(void);
/* rdns_shutdown - give up a check of the resolver in flight (at exit). */
void rdns_shutdown(void);
void rdns_init(struct rdns *r, struct event_base *base, struct evdns_base *dns, uint64_t timeout_ms,
    const char *ip, const char *id, const char *peer);
/* rdns_start - look the client up (once; later calls do nothing). */
void rdns_start(struct rdns *r);
/* rdns_wait - 1: the answer is not in yet, cb(arg) comes when it is (one
 * waiter at a time); 0: it is known (or will never be) now. */
int rdns_wait(struct rdns *r, void (*cb)(void *arg), void *arg);
/* rdns_unwait - the waiter is going away. */
void rdns_unwait(struct rdns *r);
/* rdns_free - cancel the lookup and free the name. */
void rdns_free(struct rdns *r);
/* rdns_name - the confirmed name, or NULL. */
const char *rdns_name(const struct rdns *r);
/* rdns_xclient_name - NAME= for XCLIENT: the name, [TEMPUNAVAIL] or [UNAVAILABLE]. */
const char *rdns_xclient_name(const struct rdns *r);

#endif
