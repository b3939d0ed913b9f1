/*
 * fakemx.c - a scripted fake backend MTA for the unit tests, on the test's
 * own event loop (see fakemx.h). Exports fakemx_new, fakemx_free,
 * fakemx_script, fakemx_send, fakemx_close, fakemx_seen, fakemx_run_until
 * and fakemx_run.
 *
 * It is deliberately simple and deterministic: replies go out in one
 * write (so two replies in one script entry reach the proxy in one read),
 * or, in trickle mode, one octet a loop turn, the next only once the peer
 * has read the last.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "fakemx.h"

const char FAKEMX_SILENT[] = "(silent)";
const char FAKEMX_CLOSE[] = "(close)";

static void fakemx_accept_cb(evutil_socket_t fd, short what, void *arg);
static void fakemx_read_cb(evutil_socket_t fd, short what, void *arg);
static void fakemx_tick_cb(evutil_socket_t fd, short what, void *arg);
static void fakemx_record(struct fakemx *m, const char *p, size_t n);
static void fakemx_lines(struct fakemx *m);
static void fakemx_line(struct fakemx *m, const char *l, size_t len);
static void fakemx_arm_tick(struct fakemx *m);

struct fakemx *
fakemx_new(struct event_base *base)
{
	struct fakemx *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return NULL;
	m->base = base;
	m->fd = -1;
	m->peer_fd = -1;
	m->addr.sin_family = AF_INET;
	m->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	m->addrlen = sizeof(m->addr);
	m->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	m->out = evbuffer_new();
	m->tick = evtimer_new(base, fakemx_tick_cb, m);
	if (m->lfd < 0 || m->out == NULL || m->tick == NULL ||
	    bind(m->lfd, (struct sockaddr *)&m->addr, sizeof(m->addr)) != 0 ||
	    listen(m->lfd, 8) != 0 ||
	    getsockname(m->lfd, (struct sockaddr *)&m->addr, &m->addrlen) != 0 ||
	    (m->lev = event_new(base, m->lfd, EV_READ | EV_PERSIST, fakemx_accept_cb, m)) == NULL ||
	    event_add(m->lev, NULL) != 0) {
		fakemx_free(m);
		return NULL;
	}
	return m;
}

void
fakemx_free(struct fakemx *m)
{
	if (m == NULL)
		return;
	fakemx_close(m);
	if (m->lev != NULL)
		event_free(m->lev);
	if (m->lfd >= 0)
		close(m->lfd);
	if (m->tick != NULL)
		event_free(m->tick);
	if (m->out != NULL)
		evbuffer_free(m->out);
	free(m->got);
	free(m);
}

void
fakemx_script(struct fakemx *m, const char *const *replies, size_t n)
{
	for (size_t i = 0; i < n && m->nscript < FAKEMX_SCRIPT_MAX; i++)
		m->script[m->nscript++] = replies[i];
}

/* fakemx_close - the connection goes; what was left to trickle with it */
void
fakemx_close(struct fakemx *m)
{
	if (m->rev != NULL) {
		event_free(m->rev);
		m->rev = NULL;
	}
	if (m->fd >= 0) {
		close(m->fd);
		m->fd = -1;
	}
	if (m->tick != NULL)
		evtimer_del(m->tick);
	if (m->out != NULL)
		evbuffer_drain(m->out, evbuffer_get_length(m->out));
}

void
fakemx_send(struct fakemx *m, const char *bytes)
{
	size_t n = strlen(bytes);

	if (m->fd < 0)
		return;
	if (m->trickle) {
		evbuffer_add(m->out, bytes, n);
		fakemx_arm_tick(m);
		return;
	}
	/* Small, on loopback: one write takes it all. */
	if (send(m->fd, bytes, n, MSG_NOSIGNAL) != (ssize_t)n)
		fprintf(stderr, "fakemx: short send: %s\n", strerror(errno));
}

int
fakemx_seen(const struct fakemx *m, const char *s)
{
	return m->got != NULL && strstr(m->got, s) != NULL;
}

static void
fakemx_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct fakemx *m = arg;
	int one = 1, fd;

	if ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0)
		return;
	fakemx_close(m); /* one connection at a time */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	m->fd = fd;
	m->eof = 0;
	m->in_data = 0;
	m->accepts++;
	m->rev = event_new(m->base, fd, EV_READ | EV_PERSIST, fakemx_read_cb, m);
	if (m->rev == NULL || event_add(m->rev, NULL) != 0) {
		fakemx_close(m);
		return;
	}
	if (m->banner != NULL)
		fakemx_send(m, m->banner);
}

static void
fakemx_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fakemx *m = arg;
	char buf[16384];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);

	if (n > 0) {
		fakemx_record(m, buf, (size_t)n);
		fakemx_lines(m);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	m->eof = 1;
	fakemx_close(m);
}

/* fakemx_record - keep every octet, NUL-terminated for strstr */
static void
fakemx_record(struct fakemx *m, const char *p, size_t n)
{
	if (m->got_len + n + 1 > m->got_cap) {
		size_t cap = (m->got_len + n + 1) * 2;
		char *g = realloc(m->got, cap);
		if (g == NULL)
			abort();
		m->got = g;
		m->got_cap = cap;
	}
	memcpy(m->got + m->got_len, p, n);
	m->got_len += n;
	m->got[m->got_len] = '\0';
}

/* fakemx_lines - handle the complete lines not handled yet */
static void
fakemx_lines(struct fakemx *m)
{
	char *lf;

	while (m->fd >= 0 && (lf = memchr(m->got + m->scanned, '\n', m->got_len - m->scanned))) {
		const char *l = m->got + m->scanned;
		size_t len = (size_t)(lf - l);
		m->scanned += len + 1;
		if (len > 0 && l[len - 1] == '\r')
			len--;
		fakemx_line(m, l, len);
	}
}

/* fakemx_line - one line: a message line, or the next scripted answer */
static void
fakemx_line(struct fakemx *m, const char *l, size_t len)
{
	const char *r;

	m->lines++;
	if (m->in_data) {
		if (!(len == 1 && l[0] == '.'))
			return;
		m->in_data = 0;
	}
	if (m->next >= m->nscript)
		return; /* the script is over: silence */
	r = m->script[m->next++];
	if (r == FAKEMX_SILENT)
		return;
	if (r == FAKEMX_CLOSE) {
		fakemx_close(m);
		return;
	}
	if (strncmp(r, "354", 3) == 0)
		m->in_data = 1;
	fakemx_send(m, r);
}

static void
fakemx_arm_tick(struct fakemx *m)
{
	struct timeval tv = {0, 0};

	if (!evtimer_pending(m->tick, NULL))
		evtimer_add(m->tick, &tv);
}

/* fakemx_tick_cb - trickle one octet, once the peer has read the last */
static void
fakemx_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fakemx *m = arg;
	int unread = 0;
	char c;

	if (m->fd < 0 || evbuffer_get_length(m->out) == 0)
		return;
	if (m->peer_fd >= 0 && ioctl(m->peer_fd, FIONREAD, &unread) == 0 && unread > 0) {
		fakemx_arm_tick(m);
		return;
	}
	evbuffer_remove(m->out, &c, 1);
	if (send(m->fd, &c, 1, MSG_NOSIGNAL) != 1)
		fprintf(stderr, "fakemx: trickle send: %s\n", strerror(errno));
	if (evbuffer_get_length(m->out) > 0)
		fakemx_arm_tick(m);
}

int
fakemx_run_until(struct event_base *base, int (*done)(void *), void *arg, int max)
{
	for (int i = 0; i < max; i++) {
		if (done(arg))
			return 1;
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		if (done(arg))
			return 1;
		poll(NULL, 0, 1);
	}
	return done(arg);
}

void
fakemx_run(struct event_base *base, int max)
{
	for (int i = 0; i < max; i++) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		poll(NULL, 0, 1);
	}
}
