/*
 * spool.h - where a message waits between our 354 and the backend's DATA:
 * memory up to a threshold, then an unlinked temporary file, so a large
 * message costs disk, not RAM, and nothing is left behind if we die.
 */
#ifndef PORTCULLIS_SPOOL_H
#define PORTCULLIS_SPOOL_H

#include <stddef.h>
#include <sys/types.h>

#include <event2/buffer.h>

struct spool {
	struct evbuffer *mem; /* the message while it is small */
	int fd; /* -1 until it spills to spool_dir */
	size_t size; /* octets written so far */
	size_t threshold; /* spool_memory */
	const char *dir; /* spool_dir */
	struct evbuffer_file_segment *seg; /* the file, for spool_copy */
	int failed; /* a write failed (errno kept in err) */
	int err;
};

/* spool_pin - keep a descriptor of dir (spool_dir) for spools to use:
 * a worker pins it before its chroot, which would hide the path. 0, or -1
 * (errno) when dir cannot be opened. */
int spool_pin(const char *dir);

/* spool_open - start an empty spool. Returns 0 or -1 (out of memory). */
int spool_open(struct spool *sp, size_t threshold, const char *dir);

/* spool_write - append; a failure sets sp->failed and later writes are ignored. */
void spool_write(struct spool *sp, const char *bytes, size_t len);

/* spool_move - append the whole message to out (zero-copy where it can) and
 * leave the spool empty. Returns 0 or -1. */
int spool_move(struct spool *sp, struct evbuffer *out);

/* spool_pread - copy up to len octets from offset off into buf; returns the
 * count (0 at the end) or -1. */
ssize_t spool_pread(struct spool *sp, size_t off, char *buf, size_t len);

/* spool_copy - append octets [off, off+len) to out (zero-copy from a file).
 * The spool stays as it is. Returns 0 or -1. */
int spool_copy(struct spool *sp, size_t off, size_t len, struct evbuffer *out);

/* spool_close - free memory, close (and so delete) the file. */
void spool_close(struct spool *sp);

#endif
