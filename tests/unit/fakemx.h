/*
 * fakemx.h - a scripted fake backend MTA for the unit tests (fakemx.c): a
 * TCP listener on 127.0.0.1:0 on the test's own event loop. It accepts one
 * connection at a time, sends a banner, records every octet it receives,
 * and answers each line with the next scripted reply. Lines after a 354 it
 * sent are a message: recorded, not answered, until ".".
 */
#ifndef PORTCULLIS_FAKEMX_H
#define PORTCULLIS_FAKEMX_H

#include <stddef.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct event;
struct event_base;
struct evbuffer;

/* Script entries that are no reply. */
extern const char FAKEMX_SILENT[]; /* say nothing to this line */
extern const char FAKEMX_CLOSE[]; /* close the connection on this line */

#define FAKEMX_SCRIPT_MAX 32

struct fakemx {
	struct event_base *base;
	int lfd;
	struct event *lev;
	struct sockaddr_in addr;
	socklen_t addrlen;
	int fd; /* the accepted connection; -1: none or closed */
	struct event *rev;
	struct event *tick; /* trickle: one octet per loop turn */
	struct evbuffer *out; /* what is left to trickle */
	int trickle; /* replies go one octet a write */
	int peer_fd; /* trickle: wait until this socket has read the last octet */
	const char *banner; /* NULL: none */
	const char *script[FAKEMX_SCRIPT_MAX];
	size_t nscript, next; /* script[next] answers the next line */
	char *got; /* every octet received, NUL-terminated */
	size_t got_len, got_cap;
	size_t scanned; /* lines before this are handled */
	unsigned lines; /* lines received, message lines included */
	unsigned accepts;
	int eof; /* the peer closed */
	int in_data; /* after our 354: message lines */
};

/* fakemx_new - listening, on base; NULL on failure */
struct fakemx *fakemx_new(struct event_base *base);
void fakemx_free(struct fakemx *m);
/* fakemx_script - the replies to the next lines, in order (n at most
 * FAKEMX_SCRIPT_MAX), after the ones already used */
void fakemx_script(struct fakemx *m, const char *const *replies, size_t n);
/* fakemx_send - send bytes now, asked or not (trickled if trickle is on) */
void fakemx_send(struct fakemx *m, const char *bytes);
/* fakemx_close - close the accepted connection */
void fakemx_close(struct fakemx *m);
/* fakemx_seen - has it received this string? */
int fakemx_seen(const struct fakemx *m, const char *s);

/* fakemx_run_until - turn base (one non-blocking round, then a 1 ms nap)
 * until done(arg) holds: 1, or 0 after max rounds. Tests fail on 0, so no
 * wait is unbounded; the rounds, not the clock, are the bound. */
int fakemx_run_until(struct event_base *base, int (*done)(void *), void *arg, int max);
/* fakemx_run - max rounds, whatever happens (to see that nothing does) */
void fakemx_run(struct event_base *base, int max);

#endif
