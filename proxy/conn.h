/*
 * conn.h - one non-blocking TCP connection with an input and an output
 * evbuffer: the transport under both legs of a session.
 *
 * Why not bufferevents: a relayed message costs a dozen small reads and
 * writes, and bufferevent_socket spends an ioctl(FIONREAD) on every read and
 * an epoll change around every write. conn reads into reserved buffer space
 * and writes at once, arming write interest only when the kernel does not
 * take everything: about a third fewer system calls per message.
 */
#ifndef PORTCULLIS_CONN_H
#define PORTCULLIS_CONN_H

#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "metrics.h"

/* What conn_event_fn is told. */
#define CONN_CONNECTED 0x01 /* an outgoing connect completed */
#define CONN_EOF 0x02 /* the peer closed its side */
#define CONN_ERROR 0x04 /* a socket error; errno-style code in conn->err */
#define CONN_TLS 0x08 /* a TLS handshake completed */

struct conn;
typedef void (*conn_fn)(struct conn *c, void *arg);
typedef void (*conn_event_fn)(struct conn *c, int what, void *arg);

struct conn {
	evutil_socket_t fd;
	struct event *rev, *wev;
	struct evbuffer *in, *out;
	conn_fn on_read; /* new bytes in in */
	conn_fn on_drain; /* out emptied after a write had to wait */
	conn_event_fn on_event; /* CONN_* */
	void *arg;
	size_t in_max; /* stop reading while in holds this much */
	int err;
	SSL *ssl; /* TLS once conn_tls_start was called */
	char tls_error[160]; /* why a handshake or TLS I/O failed */
	unsigned reading : 1, paused : 1, connecting : 1, handshaking : 1;
	/* The log lines that wait (log.c batches a loop pass's) are written
	 * before anything this conn writes: a client never reads a reply
	 * before the log says what it answered. */
	unsigned log_first : 1;
	/* The octet counters its reads and writes add to (M__N: none); the
	 * owner sets them (the client's, the backend's). */
	enum metric m_in, m_out;
};

/* conn_new - wrap a connected (or to-be-connected) non-blocking socket. The
 * conn owns fd from now on. NULL on allocation failure (fd is closed). */
struct conn *conn_new(struct event_base *base, evutil_socket_t fd, conn_fn on_read,
    conn_fn on_drain, conn_event_fn on_event, void *arg);

/* conn_connect - start connecting; CONN_CONNECTED or CONN_ERROR follows. */
int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len);

/* conn_read_start / conn_read_stop - want input, or not. */
void conn_read_start(struct conn *c);
void conn_read_stop(struct conn *c);

/* conn_consumed - the reader took bytes from in: resume reading if it had
 * paused at in_max. */
void conn_consumed(struct conn *c);

/* conn_flush - write what out holds now; wait for the rest in the loop. */
void conn_flush(struct conn *c);

/* conn_tls_start - a TLS handshake on the connection, as server or client
 * (name: the server name to send and, with verify, to check). Input
 * already buffered is dropped: it was sent before TLS (RFC 3207 §4.2).
 * CONN_TLS or CONN_ERROR (with tls_error) follows. 0 or -1. */
int conn_tls_start(struct conn *c, SSL_CTX *ctx, int server, const char *name, int verify);

/* conn_tls_version - "TLSv1.3", or NULL without TLS */
const char *conn_tls_version(const struct conn *c);
/* conn_tls_cipher - "TLS_AES_256_GCM_SHA384", or NULL without TLS */
const char *conn_tls_cipher(const struct conn *c);
/* conn_tls_resumed - 1 when the handshake resumed a session (ticket or
 * cache), 0 for a full one or without TLS */
int conn_tls_resumed(const struct conn *c);

/* conn_free - close and release; pending output is dropped. */
void conn_free(struct conn *c);

#endif
