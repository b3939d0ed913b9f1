/*
 * io.c - write now, wait only if the kernel will not take it all.
 *
 * Exports io_flush. Both legs keep EV_WRITE disabled on their bufferevents
 * and call io_flush before returning to the loop: a short reply leaves in one
 * write(2), with no write interest added to and removed from epoll around it
 * (that was a third of the proxy's syscalls). Only a reply or message that
 * does not fit enables EV_WRITE, and the write callback disables it again.
 */
#include <event2/buffer.h>

#include "session.h"

/* io_flush - send what bev holds; leave the rest to the loop */
void
io_flush(struct bufferevent *bev)
{
	struct evbuffer *out = bufferevent_get_output(bev);

	if (evbuffer_get_length(out) == 0 || (bufferevent_get_enabled(bev) & EV_WRITE))
		return;
	/* An error leaves the bytes in place; the loop's own write then
	 * reports it through the event callback. */
	/* bufferevent_socket keeps the start of its output frozen except
	 * while it writes itself; we do the same. */
	evbuffer_unfreeze(out, 1);
	evbuffer_write(out, bufferevent_getfd(bev));
	evbuffer_freeze(out, 1);
	if (evbuffer_get_length(out) > 0)
		bufferevent_enable(bev, EV_WRITE);
}
