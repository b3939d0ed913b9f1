/*
 * rdns.h - the client's name, forward-confirmed (rdns.c).
 */
#ifndef PORTCULLIS_RDNS_H
#define PORTCULLIS_RDNS_H

struct session;

enum rdns_state {
	RDNS_NONE, /* not looked up (client_rdns = no, or not needed) */
	RDNS_PENDING, /* asked, no answer yet */
	RDNS_OK, /* s->client_name is the confirmed name */
	RDNS_UNKNOWN, /* no PTR, or a name that does not lead back */
	RDNS_TEMP, /* no answer within dns_timeout, or a DNS error */
};

void rdns_start(struct session *s);
void rdns_cancel(struct session *s);
const char *rdns_xclient_name(const struct session *s);

#endif
