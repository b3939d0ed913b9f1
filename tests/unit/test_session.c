/*
 * test_session.c - unit tests for a whole session (proxy/session.c and its
 * files, backend.c, conn.c) on a real event loop: the test plays the client
 * on one end of a socketpair and the backend with the scripted fake MTA of
 * fakemx.c, set up as tests/fuzz/fuzz_session.c does (a server, a
 * generation with an empty chain). Each case checks the exact replies the
 * client gets and the exact octets the backend gets. Every wait is bounded
 * by loop rounds and fails the case.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "fakemx.h"
#include "log.h"
#include "replies.h"
#include "session.h"

/* What the client must see, spelled out (replies.c has the table). */
#define DATA_GO "354 End data with <CR><LF>.<CR><LF>"
#define BAD_LINE_ENDS "550 5.5.2 Error: bare <CR> or <LF> in message, use <CR><LF> line endings"

/* Loop rounds any one wait may take before the case fails. */
#define ROUNDS 3000
/* Rounds run to see that nothing more happens. */
#define QUIET_ROUNDS 20

#define BACKEND_BANNER "220 backend.test ESMTP\r\n"
#define BANNER "220 mx.test ESMTP\r\n"
#define BACKEND_EHLO                                                                               \
	"250-backend.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"              \
	"250 ENHANCEDSTATUSCODES\r\n"
#define EHLO_REPLY                                                                                 \
	"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"                   \
	"250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n"

struct fixture {
	struct server srv;
	struct fakemx *mx;
	struct config_addr listener;
	int cfd; /* the client's end; -1 once closed */
	int sfd; /* the proxy's end (the session owns it) */
	char got[65536]; /* what the client received */
	size_t got_len;
	int eof; /* the proxy closed the client connection */
	const char *want; /* for the predicates */
	size_t mark; /* the backend's octets before this are checked */
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct server *srv;
	struct config *cfg = malloc(sizeof(*cfg));
	char err[CONFIG_ERR_MAX];

	assert_non_null(f);
	assert_non_null(cfg);
	srv = &f->srv;
	f->cfd = -1;
	TAILQ_INIT(&srv->sessions);
	srv->base = event_base_new();
	assert_non_null(srv->base);
	f->mx = fakemx_new(srv->base);
	assert_non_null(f->mx);
	f->mx->banner = BACKEND_BANNER;

	config_defaults(cfg);
	snprintf(cfg->hostname, sizeof(cfg->hostname), "mx.test");
	snprintf(cfg->backend.host, sizeof(cfg->backend.host), "127.0.0.1");
	snprintf(cfg->backend.port, sizeof(cfg->backend.port), "%u", ntohs(f->mx->addr.sin_port));
	cfg->have_backend = 1;
	cfg->nlisten = 0;
	cfg->client_rdns = 0; /* no DNS */
	/* Generous: a slow (sanitized) run must not time out by accident. */
	cfg->backend_connect_timeout_ms = 10000;
	cfg->backend_timeout_ms = 10000;
	cfg->backend_data_timeout_ms = 10000;
	cfg->timeout_ms = 10000;
	/* No sections: an empty chain. */
	if (chain_load(&srv->chain, cfg, srv->base, NULL, 0, err, sizeof(err)) != 0)
		fail_msg("chain_load: %s", err);
	srv->gen = generation_new(cfg, srv->chain);
	assert_non_null(srv->gen);
	srv->cfg = cfg;
	assert_int_equal(server_ip_init(srv), 0);
	memcpy(&srv->backend_addr, &f->mx->addr, f->mx->addrlen);
	srv->backend_addrlen = f->mx->addrlen;
	srv->backend_xclient_name = 1;
	snprintf(f->listener.host, sizeof(f->listener.host), "127.0.0.1");
	snprintf(f->listener.port, sizeof(f->listener.port), "25");
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	struct server *srv = &f->srv;

	if (f->cfd >= 0)
		close(f->cfd);
	/* As the fuzz harness ends what is left: shutdown, then free. */
	session_shutdown_all(srv);
	fakemx_run(srv->base, QUIET_ROUNDS);
	while (TAILQ_FIRST(&srv->sessions) != NULL)
		session_destroy(TAILQ_FIRST(&srv->sessions));
	fakemx_free(f->mx);
	server_free(srv);
	free(f);
	return 0;
}

/* start - a client connects: what the listener hands session_new */
static void
start(struct fixture *f)
{
	struct client_info ci;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	f->cfd = sv[1];
	memset(&ci, 0, sizeof(ci));
	ci.fd = sv[0];
	f->sfd = sv[0];
	ci.listener = &f->listener;
	snprintf(ci.ip, sizeof(ci.ip), "192.0.2.1");
	snprintf(ci.port, sizeof(ci.port), "40025");
	snprintf(ci.local_ip, sizeof(ci.local_ip), "127.0.0.1");
	snprintf(ci.local_port, sizeof(ci.local_port), "25");
	assert_int_equal(server_ip_acquire(&f->srv, ci.ip, ci.ip_key, sizeof(ci.ip_key)), 0);
	server_session_id(&f->srv, ci.id);
	session_new(&f->srv, &ci);
}

/* client_read - take what the proxy sent the client */
static void
client_read(struct fixture *f)
{
	ssize_t n;

	while (f->cfd >= 0 && !f->eof) {
		n = recv(f->cfd, f->got + f->got_len, sizeof(f->got) - 1 - f->got_len, 0);
		if (n > 0) {
			f->got_len += (size_t)n;
			f->got[f->got_len] = '\0';
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			f->eof = 1;
		return;
	}
}

static void
client_send(struct fixture *f, const char *s)
{
	size_t n = strlen(s);

	assert_int_equal(send(f->cfd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

static int
client_has(void *arg)
{
	struct fixture *f = arg;

	client_read(f);
	return strstr(f->got, f->want) != NULL;
}

static int
client_closed(void *arg)
{
	struct fixture *f = arg;

	client_read(f);
	return f->eof;
}

static int
mx_has(void *arg)
{
	struct fixture *f = arg;

	return fakemx_seen(f->mx, f->want);
}

static int
mx_accepted(void *arg)
{
	return ((struct fixture *)arg)->mx->accepts > 0;
}

static int
mx_eof(void *arg)
{
	return ((struct fixture *)arg)->mx->eof;
}

static int
no_session(void *arg)
{
	return ((struct fixture *)arg)->srv.nsessions == 0;
}

/* client_wait - until the client has received want */
static void
client_wait(struct fixture *f, const char *want)
{
	f->want = want;
	if (!fakemx_run_until(f->srv.base, client_has, f, ROUNDS))
		fail_msg("the client never got \"%s\"; it has \"%s\"", want, f->got);
}

static void
mx_wait(struct fixture *f, const char *want)
{
	f->want = want;
	if (!fakemx_run_until(f->srv.base, mx_has, f, ROUNDS))
		fail_msg("the backend never got \"%s\"; it has \"%s\"", want,
		    f->mx->got ? f->mx->got : "");
}

/* mx_since - what the backend got after the mark */
static const char *
mx_since(struct fixture *f)
{
	return f->mx->got != NULL ? f->mx->got + f->mark : "";
}

static void
script(struct fixture *f, const char *const *r, size_t n)
{
	fakemx_script(f->mx, r, n);
}

/* greeted - banner, EHLO client.test, our 250; the client transcript and
 * the backend's marks start after them */
static void
greeted(struct fixture *f)
{
	const char *r[] = {BACKEND_EHLO};

	script(f, r, 1);
	start(f);
	client_wait(f, BANNER);
	client_send(f, "EHLO client.test\r\n");
	client_wait(f, EHLO_REPLY);
	assert_string_equal(f->got, BANNER EHLO_REPLY);
	assert_string_equal(f->mx->got, "EHLO client.test\r\n");
	f->got_len = 0;
	f->got[0] = '\0';
	f->mark = f->mx->got_len;
}

static void
test_banner_after_backend(void **state)
{
	struct fixture *f = *state;

	f->mx->banner = NULL;
	start(f);
	assert_true(fakemx_run_until(f->srv.base, mx_accepted, f, ROUNDS));
	fakemx_run(f->srv.base, QUIET_ROUNDS);
	client_read(f);
	assert_int_equal(f->got_len, 0); /* nothing before the backend's 220 */
	fakemx_send(f->mx, BACKEND_BANNER);
	client_wait(f, BANNER);
	assert_string_equal(f->got, BANNER);
	assert_int_equal(f->mx->got_len, 0);
}

static void
test_backend_down(void **state)
{
	struct fixture *f = *state;

	/* Nothing listens on the backend's port any more. */
	event_free(f->mx->lev);
	f->mx->lev = NULL;
	close(f->mx->lfd);
	f->mx->lfd = -1;
	start(f);
	assert_true(fakemx_run_until(f->srv.base, client_closed, f, ROUNDS));
	assert_string_equal(f->got, "421 4.4.1 mx.test Service not available, try again later\r\n");
	assert_true(fakemx_run_until(f->srv.base, no_session, f, ROUNDS));
}

/* The backend refuses to greet: the same 421. */
static void
test_backend_banner_554(void **state)
{
	struct fixture *f = *state;

	f->mx->banner = "554 5.3.2 backend.test busy\r\n";
	start(f);
	assert_true(fakemx_run_until(f->srv.base, client_closed, f, ROUNDS));
	assert_string_equal(f->got, "421 4.4.1 mx.test Service not available, try again later\r\n");
	assert_true(fakemx_run_until(f->srv.base, no_session, f, ROUNDS));
}

static void
test_ehlo(void **state)
{
	struct fixture *f = *state;

	greeted(f);
	assert_null(strstr(EHLO_REPLY, "XCLIENT"));
	assert_true(f->srv.nsessions == 1);
}

/* What the backend offers and we do not honour stays between us and it;
 * XCLIENT is used, not passed on. */
static void
test_ehlo_hides_xclient_chunking(void **state)
{
	struct fixture *f = *state;
	const char *ehlo = "250-backend.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	                   "250-CHUNKING\r\n250-XCLIENT ADDR PORT NAME HELO PROTO\r\n"
	                   "250 8BITMIME\r\n";
	const char *r[] = {ehlo, "220 backend.test ESMTP\r\n", ehlo};

	script(f, r, 3);
	start(f);
	client_wait(f, BANNER);
	client_send(f, "EHLO client.test\r\n");
	client_wait(f, "250 HELP\r\n");
	assert_string_equal(f->got,
	    BANNER "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	           "250-8BITMIME\r\n250 HELP\r\n");
	assert_null(strstr(f->got, "XCLIENT"));
	assert_null(strstr(f->got, "CHUNKING"));
	assert_string_equal(f->mx->got,
	    "EHLO client.test\r\n"
	    "XCLIENT ADDR=192.0.2.1 PORT=40025 NAME=[UNAVAILABLE] HELO=client.test "
	    "PROTO=ESMTP\r\n"
	    "EHLO client.test\r\n");
}

static void
test_transaction_pipelined(void **state)
{
	struct fixture *f = *state;
	const char *r[] = {"250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n", "354 go ahead\r\n",
	    "250 2.0.0 Ok: queued as 42\r\n"};
	const char *msg = "Subject: t\r\n\r\n..leading dot\r\nbody\r\n.\r\n";

	greeted(f);
	script(f, r, 4);
	client_send(f, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n");
	client_wait(f, DATA_GO "\r\n");
	assert_string_equal(f->got, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n" DATA_GO "\r\n");
	client_send(f, msg);
	client_wait(f, "250 2.0.0 Ok: queued as 42\r\n");
	assert_string_equal(f->got,
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n" DATA_GO "\r\n250 2.0.0 Ok: queued as 42\r\n");
	/* The message as the client sent it, dot-stuffing and all. */
	assert_string_equal(mx_since(f),
	    "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
	    "Subject: t\r\n\r\n..leading dot\r\nbody\r\n.\r\n");
	assert_int_equal(f->srv.nsessions, 1);
}

static void
test_bare_lf_refused(void **state)
{
	struct fixture *f = *state;
	const char *r[] = {"250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n", "250 2.0.0 Ok\r\n"};

	greeted(f);
	script(f, r, 3);
	client_send(f, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n");
	client_wait(f, DATA_GO "\r\n");
	client_send(f, "Subject: t\r\n\r\nbare\nline\r\n.\r\n");
	client_wait(f, BAD_LINE_ENDS "\r\n");
	assert_string_equal(
	    f->got, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n" DATA_GO "\r\n" BAD_LINE_ENDS "\r\n");
	fakemx_run(f->srv.base, QUIET_ROUNDS);
	/* The backend forgets MAIL and RCPT; it never sees DATA. */
	assert_string_equal(mx_since(f), "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRSET\r\n");
	assert_int_equal(f->srv.nsessions, 1);
}

static void
test_backend_surplus(void **state)
{
	struct fixture *f = *state;
	const char *r[] = {"250 2.1.0 Ok\r\n250 2.1.0 Extra\r\n"};

	greeted(f);
	script(f, r, 1);
	client_send(f, "MAIL FROM:<a@x>\r\n");
	assert_true(fakemx_run_until(f->srv.base, client_closed, f, ROUNDS));
	assert_string_equal(f->got, "421 4.4.2 mx.test Mail server protocol error, closing\r\n");
	assert_true(fakemx_run_until(f->srv.base, mx_eof, f, ROUNDS));
	assert_true(fakemx_run_until(f->srv.base, no_session, f, ROUNDS));
	/* A leg out of step is cut: no QUIT it could take for anything. */
	assert_string_equal(mx_since(f), "MAIL FROM:<a@x>\r\n");
}

static void
test_client_gone_in_data(void **state)
{
	struct fixture *f = *state;
	const char *r[] = {
	    "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n", "250 2.0.0 Ok\r\n", "250 2.0.0 Ok\r\n"};

	greeted(f);
	script(f, r, 4);
	client_send(f, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n");
	client_wait(f, DATA_GO "\r\n");
	mx_wait(f, "RCPT TO:<b@y>\r\n");
	client_send(f, "Subject: t\r\n\r\na partial message\r\n");
	fakemx_run(f->srv.base, QUIET_ROUNDS);
	close(f->cfd);
	f->cfd = -1;
	assert_true(fakemx_run_until(f->srv.base, no_session, f, ROUNDS));
	assert_true(fakemx_run_until(f->srv.base, mx_eof, f, ROUNDS));
	/* Never DATA, never the message, never its end. */
	assert_null(strstr(mx_since(f), "DATA\r\n"));
	assert_null(strstr(mx_since(f), "partial"));
	assert_null(strstr(mx_since(f), "\r\n.\r\n"));
	assert_true(strncmp(mx_since(f), "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n", 32) == 0);
}

static void
test_quit(void **state)
{
	struct fixture *f = *state;
	const char *r[] = {"221 2.0.0 backend.test closing\r\n"};

	greeted(f);
	script(f, r, 1);
	client_send(f, "QUIT\r\n");
	assert_true(fakemx_run_until(f->srv.base, client_closed, f, ROUNDS));
	assert_string_equal(f->got, "221 2.0.0 Bye\r\n");
	assert_true(fakemx_run_until(f->srv.base, mx_eof, f, ROUNDS));
	assert_true(fakemx_run_until(f->srv.base, no_session, f, ROUNDS));
	assert_string_equal(mx_since(f), "QUIT\r\n");
}

/* max_client_buffer: while a command waits (the backend has not answered
 * MAIL), a client that pipelines 96 KB makes us hold no more than the key
 * says; the rest stays unread in the socket. With the key ignored (256k by
 * default) the proxy would read it all. */
static void
test_input_held_is_capped(void **state)
{
	struct fixture *f = *state;
	const char *r[] = {FAKEMX_SILENT};
	char chunk[6 * 1024];
	size_t sent = 0;
	int unread = 0;

	f->srv.cfg->max_client_buffer = 16 * 1024;
	greeted(f);
	script(f, r, 1);
	client_send(f, "MAIL FROM:<a@x.test>\r\n");
	mx_wait(f, "MAIL FROM:<a@x.test>\r\n");
	for (size_t i = 0; i + 6 <= sizeof(chunk); i += 6)
		memcpy(chunk + i, "NOOP\r\n", 6);
	while (sent < 96 * 1024) {
		ssize_t n = send(f->cfd, chunk, sizeof(chunk), MSG_NOSIGNAL);
		if (n <= 0)
			break;
		sent += (size_t)n;
		fakemx_run(f->srv.base, 2);
	}
	assert_true(sent >= 96 * 1024);
	fakemx_run(f->srv.base, QUIET_ROUNDS);
	assert_int_equal(ioctl(f->sfd, FIONREAD, &unread), 0);
	/* Held: at most the cap and one read's worth past it. */
	assert_true((size_t)unread >= sent - 2 * 16 * 1024);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_banner_after_backend, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backend_down, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backend_banner_554, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ehlo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ehlo_hides_xclient_chunking, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transaction_pipelined, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bare_lf_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backend_surplus, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_gone_in_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_input_held_is_capped, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	log_init(CONFIG_LOG_STDERR, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
