/*
 * spool.c - the message store for one transaction (see spool.h).
 *
 * Exports spool_pin, spool_open, spool_write, spool_pread, spool_copy,
 * spool_move and spool_close. The file has no name (O_TMPFILE), or is
 * unlinked the moment it is created where the file system cannot do that:
 * a crash, a client that goes away, or a refused message leaves nothing in
 * spool_dir.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool.h"

/* spool_pin's directory: its name as configured, and a descriptor that
 * still reaches it from inside a chroot. */
static char pinned_dir[1024];
static int pinned_fd = -1;

static int spool_spill(struct spool *sp);
static int write_all(int fd, const char *p, size_t n);

/* spool_open - an empty spool */
int
spool_open(struct spool *sp, size_t threshold, const char *dir)
{
	memset(sp, 0, sizeof(*sp));
	sp->fd = -1;
	sp->threshold = threshold;
	sp->dir = dir;
	if ((sp->mem = evbuffer_new()) == NULL)
		return -1;
	return 0;
}

/* spool_pin - see spool.h */
int
spool_pin(const char *dir)
{
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	if (pinned_fd >= 0)
		close(pinned_fd);
	pinned_fd = fd;
	snprintf(pinned_dir, sizeof(pinned_dir), "%s", dir);
	return 0;
}

/* write_all - write(2) until done */
static int
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* spool_spill - move what is in memory to a fresh unlinked file */
static int
spool_spill(struct spool *sp)
{
	char path[1100];
	struct evbuffer_iovec vec[16];
	int n;

	/* A file without a name (O_TMPFILE): no moment when another process
	 * could see it, nothing left behind by a crash between making it and
	 * unlinking it. In the pinned directory (a worker in a chroot) it is
	 * made through the descriptor. A file system without O_TMPFILE gets a
	 * named file, unlinked at once. */
	if (pinned_fd >= 0 && strcmp(sp->dir, pinned_dir) == 0)
		sp->fd = openat(pinned_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	else
		sp->fd = open(sp->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (sp->fd < 0) {
		snprintf(path, sizeof(path), "%s/portcullis.XXXXXX", sp->dir);
		if ((sp->fd = mkostemp(path, O_CLOEXEC)) < 0)
			return -1;
		unlink(path);
	}
	while (evbuffer_get_length(sp->mem) > 0) {
		n = evbuffer_peek(sp->mem, -1, NULL, vec, 16);
		for (int i = 0; i < n && i < 16; i++) {
			if (write_all(sp->fd, vec[i].iov_base, vec[i].iov_len) != 0)
				return -1;
			evbuffer_drain(sp->mem, vec[i].iov_len);
		}
	}
	return 0;
}

/* spool_write - append message octets */
void
spool_write(struct spool *sp, const char *bytes, size_t len)
{
	if (sp->failed)
		return;
	sp->size += len;
	if (sp->fd < 0 && sp->size > sp->threshold && spool_spill(sp) != 0)
		goto fail;
	if (sp->fd >= 0) {
		if (write_all(sp->fd, bytes, len) != 0)
			goto fail;
		return;
	}
	if (evbuffer_add(sp->mem, bytes, len) != 0)
		goto fail;
	return;
fail:
	sp->err = errno;
	sp->failed = 1;
}

/* spool_move - hand the message to an output buffer */
int
spool_move(struct spool *sp, struct evbuffer *out)
{
	if (sp->fd < 0)
		return evbuffer_add_buffer(out, sp->mem);
	/* evbuffer_add_file takes the descriptor and closes it when sent. */
	if (evbuffer_add_file(out, sp->fd, 0, (ev_off_t)sp->size) != 0)
		return -1;
	sp->fd = -1;
	return 0;
}

/* spool_pread - read back part of the message */
ssize_t
spool_pread(struct spool *sp, size_t off, char *buf, size_t len)
{
	struct evbuffer_ptr pos;

	if (off >= sp->size)
		return 0;
	if (len > sp->size - off)
		len = sp->size - off;
	if (sp->fd >= 0) {
		ssize_t n;
		do
			n = pread(sp->fd, buf, len, (off_t)off);
		while (n < 0 && errno == EINTR);
		return n;
	}
	if (sp->mem == NULL || evbuffer_ptr_set(sp->mem, &pos, off, EVBUFFER_PTR_SET) != 0)
		return -1;
	return evbuffer_copyout_from(sp->mem, &pos, buf, len);
}

/* spool_copy - a range of the message into an output buffer */
int
spool_copy(struct spool *sp, size_t off, size_t len, struct evbuffer *out)
{
	char chunk[16384];

	if (off > sp->size || len > sp->size - off)
		return -1;
	if (sp->fd >= 0) {
		/* One segment over a duplicate of the file: every range added
		 * holds a reference, so the bytes stay readable until sent
		 * even if the transaction ends first. */
		if (sp->seg == NULL) {
			int fd = dup(sp->fd);
			if (fd < 0)
				return -1;
			sp->seg = evbuffer_file_segment_new(
			    fd, 0, (ev_off_t)sp->size, EVBUF_FS_CLOSE_ON_FREE);
			if (sp->seg == NULL) {
				close(fd);
				return -1;
			}
		}
		return evbuffer_add_file_segment(out, sp->seg, (ev_off_t)off, (ev_off_t)len);
	}
	while (len > 0) {
		size_t n = len < sizeof(chunk) ? len : sizeof(chunk);
		ssize_t got = spool_pread(sp, off, chunk, n);
		if (got <= 0 || evbuffer_add(out, chunk, (size_t)got) != 0)
			return -1;
		off += (size_t)got;
		len -= (size_t)got;
	}
	return 0;
}

/* spool_close - release everything */
void
spool_close(struct spool *sp)
{
	if (sp->seg != NULL)
		evbuffer_file_segment_free(sp->seg);
	sp->seg = NULL;
	if (sp->mem != NULL)
		evbuffer_free(sp->mem);
	sp->mem = NULL;
	if (sp->fd >= 0)
		close(sp->fd);
	sp->fd = -1;
	sp->size = 0;
}
