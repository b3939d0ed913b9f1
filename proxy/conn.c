/*
 * conn.c - the transport under both legs (see conn.h).
 *
 * Exports conn_new, conn_connect, conn_read_start, conn_read_stop,
 * conn_consumed, conn_flush, conn_tls_start, conn_tls_version, conn_tls_cipher,
 * conn_tls_resumed and conn_free. Callbacks are the last thing a
 * handler does, so a callback may free the conn.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "conn.h"
#include "log.h"

/* One read takes at most this much; level-triggered epoll brings us back
 * for more, so a fast sender cannot starve the other sessions. */
#define CONN_READ_CHUNK (16 * 1024)

static void conn_read_ev(evutil_socket_t fd, short what, void *arg);
static void conn_write_ev(evutil_socket_t fd, short what, void *arg);
static int conn_write_some(struct conn *c);
static int conn_tls_write(struct conn *c);
static void conn_handshake(struct conn *c);
static void conn_tls_read(struct conn *c);
static void tls_error(struct conn *c, const char *what);

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
	c->m_in = c->m_out = M__N;
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	/* A spool file added to out goes by sendfile(2), not mapped into
	 * memory: a 50 MB message costs no 50 MB (not under TLS, below). */
	if (c->out != NULL)
		evbuffer_set_flags(c->out, EVBUFFER_FLAG_DRAINS_TO_FD);
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
		if (c->reading) {
			event_add(c->rev, NULL);
			/* OpenSSL may hold decrypted bytes the socket no longer
			 * signals: go and get them. */
			if (c->ssl != NULL && SSL_pending(c->ssl) > 0)
				event_active(c->rev, EV_READ, 0);
		}
	}
}

/* count - octets moved, into the owner's counter */
static void
count(enum metric m, size_t n)
{
	if (m != M__N)
		metrics_add(m, n);
}

/* conn_read_ev - the socket is readable */
static void
conn_read_ev(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct evbuffer_iovec vec[2];
	int nvec;
	ssize_t n;

	if (c->ssl != NULL) {
		if (c->handshaking)
			conn_handshake(c);
		else
			conn_tls_read(c);
		return;
	}
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
	count(c->m_in, (size_t)n);
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

/* tls_error - remember why TLS failed, for the log */
static void
tls_error(struct conn *c, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[120];

	if (e != 0)
		ERR_error_string_n(e, buf, sizeof(buf));
	else
		snprintf(buf, sizeof(buf), "%s", c->err ? strerror(c->err) : "connection closed");
	snprintf(c->tls_error, sizeof(c->tls_error), "%s: %s", what, buf);
	ERR_clear_error();
}

/* conn_tls_read - read and decrypt what is there (and what OpenSSL holds) */
static void
conn_tls_read(struct conn *c)
{
	size_t got = 0;

	for (;;) {
		struct evbuffer_iovec vec[1];
		int n, e;

		if (c->in_max != 0 && evbuffer_get_length(c->in) >= c->in_max) {
			c->paused = 1;
			event_del(c->rev);
			break;
		}
		if (evbuffer_reserve_space(c->in, CONN_READ_CHUNK, vec, 1) < 1) {
			c->err = ENOMEM;
			goto error;
		}
		ERR_clear_error();
		n = SSL_read(c->ssl, vec[0].iov_base, (int)vec[0].iov_len);
		if (n > 0) {
			vec[0].iov_len = (size_t)n;
			evbuffer_commit_space(c->in, vec, 1);
			count(c->m_in, (size_t)n);
			got += (size_t)n;
			continue;
		}
		evbuffer_commit_space(c->in, vec, 0);
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) {
			if (got > 0)
				c->on_read(c, c->arg);
			conn_read_stop(c);
			c->on_event(c, CONN_EOF, c->arg);
			return;
		}
		/* WANT_WRITE would be a renegotiation: not ours to do. */
		c->err = e == SSL_ERROR_SYSCALL ? errno : EPROTO;
		tls_error(c, "TLS read");
		goto error;
	}
	if (got > 0)
		c->on_read(c, c->arg);
	return;
error:
	conn_read_stop(c);
	c->on_event(c, CONN_ERROR, c->arg);
}

/* conn_handshake - one step of the handshake */
static void
conn_handshake(struct conn *c)
{
	int r, e;

	ERR_clear_error();
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->handshaking = 0;
		event_del(c->wev);
		if (!c->reading)
			event_del(c->rev);
		c->on_event(c, CONN_TLS, c->arg);
		return;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		event_add(c->rev, NULL);
		return;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		event_add(c->wev, NULL);
		return;
	}
	c->err = e == SSL_ERROR_SYSCALL && errno != 0 ? errno : EPROTO;
	tls_error(c, "TLS handshake");
	if (SSL_get_verify_result(c->ssl) != X509_V_OK)
		snprintf(c->tls_error, sizeof(c->tls_error), "TLS handshake: certificate: %s",
		    X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
	c->handshaking = 0;
	event_del(c->rev);
	event_del(c->wev);
	c->on_event(c, CONN_ERROR, c->arg);
}

/* conn_tls_start - begin TLS on the socket */
int
conn_tls_start(struct conn *c, SSL_CTX *ctx, int server, const char *name, int verify)
{
	if ((c->ssl = SSL_new(ctx)) == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
		tls_error(c, "TLS setup");
		return -1;
	}
	/* SSL_write needs the octets in memory: no sendfile chains. */
	evbuffer_clear_flags(c->out, EVBUFFER_FLAG_DRAINS_TO_FD);
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (server) {
		SSL_set_accept_state(c->ssl);
	} else {
		SSL_set_connect_state(c->ssl);
		if (name != NULL && name[0] != '\0') {
			SSL_set_tlsext_host_name(c->ssl, name);
			if (verify)
				SSL_set1_host(c->ssl, name);
		}
	}
	/* What arrived before the handshake is not to be trusted. */
	evbuffer_drain(c->in, evbuffer_get_length(c->in));
	c->handshaking = 1;
	conn_handshake(c);
	return 0;
}

/* conn_tls_cipher - the cipher suite in use */
const char *
conn_tls_cipher(const struct conn *c)
{
	return c->ssl != NULL ? SSL_get_cipher_name(c->ssl) : NULL;
}

/* conn_tls_resumed - the handshake resumed an earlier session */
int
conn_tls_resumed(const struct conn *c)
{
	return c->ssl != NULL && !c->handshaking && SSL_session_reused(c->ssl) == 1;
}

/* conn_tls_version - the protocol in use */
const char *
conn_tls_version(const struct conn *c)
{
	return c->ssl != NULL && !c->handshaking ? SSL_get_version(c->ssl) : NULL;
}

/* conn_tls_write - encrypt and send what out holds; -1 on a hard error */
static int
conn_tls_write(struct conn *c)
{
	while (evbuffer_get_length(c->out) > 0) {
		struct evbuffer_iovec v;
		int n, e;

		if (evbuffer_peek(c->out, -1, NULL, &v, 1) < 1)
			break;
		ERR_clear_error();
		n = SSL_write(c->ssl, v.iov_base, (int)(v.iov_len > 16384 ? 16384 : v.iov_len));
		if (n > 0) {
			evbuffer_drain(c->out, (size_t)n);
			count(c->m_out, (size_t)n);
			continue;
		}
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
			return 0;
		c->err = e == SSL_ERROR_SYSCALL && errno != 0 ? errno : EPROTO;
		tls_error(c, "TLS write");
		return -1;
	}
	return 0;
}

/* conn_write_some - one write; -1 on a hard error (in c->err) */
static int
conn_write_some(struct conn *c)
{
	int n;

	if (c->log_first)
		log_flush();
	if (c->ssl != NULL)
		return conn_tls_write(c);
	if ((n = evbuffer_write(c->out, c->fd)) < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
	    errno != EINTR) {
		c->err = errno;
		return -1;
	}
	if (n > 0)
		count(c->m_out, (size_t)n);
	return 0;
}

/* conn_flush - write now; only what the kernel refuses waits for the loop */
void
conn_flush(struct conn *c)
{
	if (c->connecting || c->handshaking || evbuffer_get_length(c->out) == 0 ||
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
	if (c->handshaking) {
		conn_handshake(c);
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
	if (c->ssl != NULL) {
		if (!c->handshaking)
			SSL_shutdown(c->ssl); /* close_notify, best effort */
		SSL_free(c->ssl);
	}
	close(c->fd);
	free(c);
}
