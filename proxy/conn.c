/*
 * conn.c - the transport under both legs (see conn.h).
 *
 * Exports conn_new, conn_connect, conn_read_start, conn_read_stop,
 * conn_consumed, conn_flush and conn_free. Callbacks are the last thing a
 * handler does, so a callback may free the conn.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "conn.h"

/* One read takes at most this much; level-triggered epoll brings us back
 * for more, so a fast sender cannot starve the other sessions. */
#define CONN_READ_CHUNK (16 * 1024)

static void conn_read_ev(evutil_socket_t fd, short what, void *arg);
static void conn_write_ev(evutil_socket_t fd, short what, void *arg);
static int conn_write_some(struct conn *c);

/* conn_new - wrap a socket */
struct conn *
conn_new(struct event_base *base, evutil_socket_t fd, conn_fn on_read, conn_fn on_drain,
    conn_event_fn on_event, void *arg)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	c->on_read = on_read;
	c->on_drain = on_drain;
	c->on_event = on_event;
	c->arg = arg;
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, conn_read_ev, c);
	c->wev = event_new(base, fd, EV_WRITE, conn_write_ev, c);
	if (c->in == NULL || c->out == NULL || c->rev == NULL || c->wev == NULL) {
		conn_free(c);
		return NULL;
	}
	return c;
}

/* conn_connect - non-blocking connect; the write event says how it went */
int
conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len)
{
	if (connect(c->fd, sa, len) != 0 && errno != EINPROGRESS)
		c->err = errno; /* reported from the loop, like any other failure */
	c->connecting = 1;
	if (c->err != 0)
		event_active(c->wev, EV_WRITE, 0);
	else
		event_add(c->wev, NULL);
	return 0;
}

void
conn_read_start(struct conn *c)
{
	c->reading = 1;
	if (!c->paused)
		event_add(c->rev, NULL);
}

void
conn_read_stop(struct conn *c)
{
	c->reading = 0;
	event_del(c->rev);
}

/* conn_consumed - resume after a pause at in_max */
void
conn_consumed(struct conn *c)
{
	if (c->paused && evbuffer_get_length(c->in) < c->in_max) {
		c->paused = 0;
		if (c->reading)
			event_add(c->rev, NULL);
	}
}

/* conn_read_ev - the socket is readable */
static void
conn_read_ev(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct evbuffer_iovec vec[2];
	int nvec;
	ssize_t n;

	nvec = evbuffer_reserve_space(c->in, CONN_READ_CHUNK, vec, 2);
	if (nvec <= 0) {
		c->err = ENOMEM;
		goto error;
	}
	n = readv(fd, (struct iovec *)vec, nvec);
	if (n < 0) {
		evbuffer_commit_space(c->in, vec, 0);
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		c->err = errno;
		goto error;
	}
	/* Tell commit how much of each reserved extent was filled. */
	size_t left = (size_t)n;
	for (int i = 0; i < nvec; i++) {
		if (vec[i].iov_len > left)
			vec[i].iov_len = left;
		left -= vec[i].iov_len;
	}
	evbuffer_commit_space(c->in, vec, nvec);
	if (n == 0) {
		conn_read_stop(c);
		c->on_event(c, CONN_EOF, c->arg);
		return;
	}
	if (c->in_max != 0 && evbuffer_get_length(c->in) >= c->in_max) {
		c->paused = 1;
		event_del(c->rev);
	}
	c->on_read(c, c->arg);
	return;
error:
	conn_read_stop(c);
	c->on_event(c, CONN_ERROR, c->arg);
}

/* conn_write_some - one write; -1 on a hard error (in c->err) */
static int
conn_write_some(struct conn *c)
{
	if (evbuffer_write(c->out, c->fd) < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
	    errno != EINTR) {
		c->err = errno;
		return -1;
	}
	return 0;
}

/* conn_flush - write now; only what the kernel refuses waits for the loop */
void
conn_flush(struct conn *c)
{
	if (c->connecting || evbuffer_get_length(c->out) == 0 ||
	    event_pending(c->wev, EV_WRITE, NULL))
		return;
	if (conn_write_some(c) != 0) {
		/* Report from the loop: the caller is in the middle of things. */
		event_active(c->wev, EV_WRITE, 0);
		return;
	}
	if (evbuffer_get_length(c->out) > 0)
		event_add(c->wev, NULL);
}

/* conn_write_ev - writable again (or a connect finished) */
static void
conn_write_ev(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	socklen_t len = sizeof(int);

	if (c->connecting) {
		c->connecting = 0;
		if (c->err == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &c->err, &len) != 0)
			c->err = errno;
		if (c->err != 0) {
			c->on_event(c, CONN_ERROR, c->arg);
			return;
		}
		if (evbuffer_get_length(c->out) > 0)
			conn_flush(c);
		c->on_event(c, CONN_CONNECTED, c->arg);
		return;
	}
	if (c->err != 0 || conn_write_some(c) != 0) {
		c->on_event(c, CONN_ERROR, c->arg);
		return;
	}
	if (evbuffer_get_length(c->out) > 0) {
		event_add(c->wev, NULL);
		return;
	}
	if (c->on_drain != NULL)
		c->on_drain(c, c->arg);
}

/* conn_free - close the socket, drop the buffers */
void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	if (c->rev != NULL)
		event_free(c->rev);
	if (c->wev != NULL)
		event_free(c->wev);
	if (c->in != NULL)
		evbuffer_free(c->in);
	if (c->out != NULL)
		evbuffer_free(c->out);
	close(c->fd);
	free(c);
}
