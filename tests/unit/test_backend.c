/*
 * test_backend.c - unit tests for proxy/backend.c on its own: struct backend
 * on a real event loop against a scripted fake MTA on 127.0.0.1 (fakemx.c).
 * Each case checks the exact octets the backend received and what the
 * callback got: the result, the code, and that arg is the one given to
 * backend_init. Linked without the session: the leg stands alone.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "backend.h"
#include "fakemx.h"
#include "log.h"

/* Loop rounds any one wait may take before the case fails. */
#define ROUNDS 3000
/* Rounds run to see that nothing more happens. */
#define QUIET_ROUNDS 20

#define BANNER "220 fake.test ESMTP\r\n"
#define EHLO_PLAIN "250-fake.test\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
#define EHLO_XCLIENT                                                                               \
	"250-fake.test\r\n250-PIPELINING\r\n250-XCLIENT ADDR PORT NAME HELO PROTO LOGIN\r\n"       \
	"250 8BITMIME\r\n"

/* What the callbacks saw. */
struct seen {
	int calls;
	void *arg;
	enum backend_result res;
	int code; /* 0: no reply */
	size_t nlines;
	char text[1024]; /* the reply's lines, each ended by '\n' */
	int gone_calls;
	void *gone_arg;
	enum backend_result gone_res;
};

struct fixture {
	struct event_base *base;
	struct fakemx *mx;
	struct config cfg;
	struct backend b;
	struct backend_client client;
	struct seen seen;
};

static void
on_reply(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct fixture *f = arg;
	struct seen *s = &f->seen;
	const char *t;
	size_t len, o = 0;

	s->calls++;
	s->arg = arg;
	s->res = res;
	s->code = r != NULL ? r->code : 0;
	s->nlines = r != NULL ? r->nlines : 0;
	s->text[0] = '\0';
	for (size_t n = 0; r != NULL && (t = smtp_reply_line(r, n, &len)) != NULL; n++) {
		if (o + len + 2 > sizeof(s->text))
			break;
		memcpy(s->text + o, t, len);
		o += len;
		s->text[o++] = '\n';
		s->text[o] = '\0';
	}
}

static void
on_gone(void *arg, enum backend_result res)
{
	struct fixture *f = arg;

	f->seen.gone_calls++;
	f->seen.gone_arg = arg;
	f->seen.gone_res = res;
}

static int
called(void *arg)
{
	return ((struct fixture *)arg)->seen.calls > 0;
}

static int
gone_called(void *arg)
{
	return ((struct fixture *)arg)->seen.gone_calls > 0;
}

static int
mx_eof(void *arg)
{
	return ((struct fixture *)arg)->mx->eof;
}

static int
mx_got_line(void *arg)
{
	return ((struct fixture *)arg)->mx->lines > 0;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->base = event_base_new();
	assert_non_null(f->base);
	f->mx = fakemx_new(f->base);
	assert_non_null(f->mx);
	f->mx->banner = BANNER;
	config_defaults(&f->cfg);
	f->cfg.client_rdns = 0;
	/* Generous: a slow (sanitized) run must not time out by accident. */
	f->cfg.backend_connect_timeout_ms = 10000;
	f->cfg.backend_timeout_ms = 10000;
	f->cfg.backend_data_timeout_ms = 10000;
	backend_init(&f->b,
	    &(struct backend_conf){.cfg = &f->cfg,
	        .base = f->base,
	        .addr = (const struct sockaddr *)&f->mx->addr,
	        .addrlen = f->mx->addrlen,
	        .tls = NULL},
	    "test", f, on_gone);
	f->client = (struct backend_client){
	    .ip = "192.0.2.1",
	    .port = "40025",
	    .rdns = NULL,
	    .helo = "client.example",
	    .helo_len = strlen("client.example"),
	    .esmtp = 1,
	    .login = NULL,
	};
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	backend_close(&f->b);
	fakemx_free(f->mx);
	config_free(&f->cfg);
	event_base_free(f->base);
	free(f);
	return 0;
}

/* connected - connect and take the banner; the callback count starts afresh */
static void
connected(struct fixture *f)
{
	memset(&f->seen, 0, sizeof(f->seen));
	assert_int_equal(backend_connect(&f->b, on_reply), 0);
	assert_true(fakemx_run_until(f->base, called, f, ROUNDS));
	assert_int_equal(f->seen.res, BACKEND_REPLY);
	assert_int_equal(f->seen.code, 220);
	memset(&f->seen, 0, sizeof(f->seen));
}

/* greeted - connect, then backend_greet until its callback */
static void
greeted(struct fixture *f)
{
	connected(f);
	backend_greet(&f->b, &f->client, on_reply);
	assert_true(fakemx_run_until(f->base, called, f, ROUNDS));
	assert_int_equal(f->seen.calls, 1);
	assert_ptr_equal(f->seen.arg, f);
}

static void
script(struct fixture *f, const char *r1, const char *r2, const char *r3, const char *r4)
{
	const char *r[] = {r1, r2, r3, r4};
	size_t n = 0;

	while (n < 4 && r[n] != NULL)
		n++;
	fakemx_script(f->mx, r, n);
}

static void
test_connect_banner(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(backend_connect(&f->b, on_reply), 0);
	assert_true(fakemx_run_until(f->base, called, f, ROUNDS));
	assert_int_equal(f->seen.calls, 1);
	assert_ptr_equal(f->seen.arg, f);
	assert_int_equal(f->seen.res, BACKEND_REPLY);
	assert_int_equal(f->seen.code, 220);
	assert_string_equal(f->seen.text, "fake.test ESMTP\n");
	assert_true(backend_usable(&f->b));
	assert_int_equal(f->mx->got_len, 0);
}

static void
test_greet_plain(void **state)
{
	struct fixture *f = *state;

	script(f, EHLO_PLAIN, NULL, NULL, NULL);
	greeted(f);
	assert_int_equal(f->seen.res, BACKEND_REPLY);
	assert_int_equal(f->seen.code, 250);
	assert_int_equal(f->seen.nlines, 4);
	assert_true(f->b.caps.size);
	assert_true(f->b.caps.size_limit == 1000);
	assert_true(f->b.caps.pipelining);
	assert_true(f->b.caps.eightbitmime);
	assert_false(f->b.caps.xclient);
	assert_false(f->b.caps.starttls);
	fakemx_run(f->base, QUIET_ROUNDS);
	assert_string_equal(f->mx->got, "EHLO client.example\r\n");
	assert_int_equal(f->seen.calls, 1);
	assert_true(backend_usable(&f->b));
}

static void
test_greet_xclient(void **state)
{
	struct fixture *f = *state;

	script(f, EHLO_XCLIENT, "220 fake.test ESMTP\r\n", EHLO_XCLIENT, NULL);
	greeted(f);
	assert_int_equal(f->seen.res, BACKEND_REPLY);
	assert_int_equal(f->seen.code, 250);
	assert_true(f->b.caps.xclient);
	fakemx_run(f->base, QUIET_ROUNDS);
	/* No LOGIN: the client has not authenticated. */
	assert_string_equal(f->mx->got,
	    "EHLO client.example\r\n"
	    "XCLIENT ADDR=192.0.2.1 PORT=40025 NAME=[UNAVAILABLE] HELO=client.example "
	    "PROTO=ESMTP\r\n"
	    "EHLO client.example\r\n");
	assert_int_equal(f->seen.calls, 1);
	assert_true(backend_usable(&f->b));
}

/* Only the attributes the backend names go, in our order. */
static void
test_greet_xclient_some_attrs(void **state)
{
	struct fixture *f = *state;
	const char *ehlo = "250-fake.test\r\n250 XCLIENT PROTO ADDR\r\n";

	f->client.esmtp = 0;
	script(f, ehlo, "250 ok\r\n", ehlo, NULL);
	greeted(f);
	assert_int_equal(f->seen.code, 250);
	assert_string_equal(f->mx->got,
	    "EHLO client.example\r\n"
	    "XCLIENT ADDR=192.0.2.1 PROTO=SMTP\r\n"
	    "EHLO client.example\r\n");
}

/* backend_xclient = no: XCLIENT offered, never sent. */
static void
test_greet_xclient_off(void **state)
{
	struct fixture *f = *state;

	f->cfg.backend_xclient = 0;
	script(f, EHLO_XCLIENT, NULL, NULL, NULL);
	greeted(f);
	assert_int_equal(f->seen.code, 250);
	fakemx_run(f->base, QUIET_ROUNDS);
	assert_string_equal(f->mx->got, "EHLO client.example\r\n");
}

/* A HELO name Postfix would refuse (over 255 octets) goes as unknown, never
 * cut; 255 octets go as they are. */
static void
test_greet_xclient_helo_length(void **state)
{
	struct fixture *f = *state;
	char helo[300], want[1200];

	memset(helo, 'h', 255);
	helo[255] = '\0';
	f->client.helo = helo;
	f->client.helo_len = 255;
	script(f, EHLO_XCLIENT, "220 ok\r\n", EHLO_XCLIENT, NULL);
	greeted(f);
	assert_int_equal(f->seen.code, 250);
	snprintf(want, sizeof(want),
	    "EHLO %s\r\nXCLIENT ADDR=192.0.2.1 PORT=40025 NAME=[UNAVAILABLE] HELO=%s "
	    "PROTO=ESMTP\r\nEHLO %s\r\n",
	    helo, helo, helo);
	assert_string_equal(f->mx->got, want);

	/* One octet more, on a new leg. */
	backend_close(&f->b);
	assert_true(fakemx_run_until(f->base, mx_eof, f, ROUNDS));
	assert_true(strlen(f->mx->got) > strlen(want));
	assert_string_equal(f->mx->got + strlen(want), "QUIT\r\n");
	free(f->mx->got);
	f->mx->got = NULL;
	f->mx->got_len = f->mx->got_cap = f->mx->scanned = 0;
	memset(helo, 'h', 256);
	helo[256] = '\0';
	f->client.helo_len = 256;
	script(f, EHLO_XCLIENT, "220 ok\r\n", EHLO_XCLIENT, NULL);
	greeted(f);
	assert_int_equal(f->seen.code, 250);
	snprintf(want, sizeof(want),
	    "EHLO %s\r\nXCLIENT ADDR=192.0.2.1 PORT=40025 NAME=[UNAVAILABLE] HELO=[UNAVAILABLE] "
	    "PROTO=ESMTP\r\nEHLO %s\r\n",
	    helo, helo);
	assert_string_equal(f->mx->got, want);
}

/* Attributes that do not fit one 512-octet line go in a second XCLIENT. */
static void
test_greet_xclient_split(void **state)
{
	struct fixture *f = *state;
	char login[256], xlogin[800], want[2048];
	const char *p, *eol;
	size_t o = 0;

	/* 255 octets, a third of them '=' (xtext "+3D"): 425 octets encoded. */
	for (size_t i = 0; i < 255; i++) {
		login[i] = i % 3 == 0 ? '=' : 'u';
		if (login[i] == '=') {
			memcpy(xlogin + o, "+3D", 3);
			o += 3;
		} else {
			xlogin[o++] = 'u';
		}
	}
	login[255] = '\0';
	xlogin[o] = '\0';
	f->client.login = login;
	script(f, EHLO_XCLIENT, "220 ok\r\n", "220 ok\r\n", EHLO_XCLIENT);
	greeted(f);
	assert_int_equal(f->seen.res, BACKEND_REPLY);
	assert_int_equal(f->seen.code, 250);
	snprintf(want, sizeof(want),
	    "EHLO client.example\r\n"
	    "XCLIENT ADDR=192.0.2.1 PORT=40025 NAME=[UNAVAILABLE] HELO=client.example "
	    "PROTO=ESMTP\r\n"
	    "XCLIENT LOGIN=%s\r\n"
	    "EHLO client.example\r\n",
	    xlogin);
	assert_string_equal(f->mx->got, want);
	/* Postfix's XCLIENT_README: at most 512 octets with CR LF. */
	for (p = f->mx->got; (eol = strstr(p, "\r\n")) != NULL; p = eol + 2)
		if (strncmp(p, "XCLIENT", 7) == 0)
			assert_in_range(eol + 2 - p, 1, 512);
}

static void
test_xclient_refused(void **state)
{
	struct fixture *f = *state;

	script(
	    f, EHLO_XCLIENT, "550 5.7.0 Error: insufficient authorization\r\n", EHLO_XCLIENT, NULL);
	greeted(f);
	assert_int_equal(f->seen.res, BACKEND_XCLIENT_REFUSED);
	assert_int_equal(f->seen.code, 550);
	assert_false(backend_usable(&f->b));
	fakemx_run(f->base, QUIET_ROUNDS);
	assert_string_equal(f->mx->got,
	    "EHLO client.example\r\n"
	    "XCLIENT ADDR=192.0.2.1 PORT=40025 NAME=[UNAVAILABLE] HELO=client.example "
	    "PROTO=ESMTP\r\n");
	assert_int_equal(f->seen.calls, 1);
	assert_int_equal(f->seen.gone_calls, 0);
}

static void
test_tls_required_not_offered(void **state)
{
	struct fixture *f = *state;

	f->cfg.backend_tls = CONFIG_BACKEND_TLS_REQUIRED;
	script(f, EHLO_XCLIENT, NULL, NULL, NULL);
	greeted(f);
	assert_int_equal(f->seen.res, BACKEND_TLS_FAILED);
	assert_int_equal(f->seen.code, 0);
	assert_false(backend_usable(&f->b));
	fakemx_run(f->base, QUIET_ROUNDS);
	/* Neither STARTTLS nor XCLIENT: a leg without TLS is not used. */
	assert_string_equal(f->mx->got, "EHLO client.example\r\n");
	assert_int_equal(f->seen.calls, 1);
}

static void
test_ehlo_refused(void **state)
{
	struct fixture *f = *state;

	script(f, "554 5.7.1 go away\r\n", NULL, NULL, NULL);
	greeted(f);
	assert_int_equal(f->seen.res, BACKEND_REPLY);
	assert_int_equal(f->seen.code, 554);
	assert_string_equal(f->seen.text, "5.7.1 go away\n");
	fakemx_run(f->base, QUIET_ROUNDS);
	assert_string_equal(f->mx->got, "EHLO client.example\r\n");
	assert_int_equal(f->seen.calls, 1);
}

/* command - backend_command NOOP after the banner, until the callback */
static void
noop(struct fixture *f, uint64_t timeout_ms)
{
	connected(f);
	backend_command(&f->b, "NOOP", 4, timeout_ms, on_reply);
	assert_true(fakemx_run_until(f->base, called, f, ROUNDS));
	assert_int_equal(f->seen.calls, 1);
	assert_ptr_equal(f->seen.arg, f);
}

static void
test_command_reply(void **state)
{
	struct fixture *f = *state;

	script(f, "250 2.0.0 Ok\r\n", NULL, NULL, NULL);
	noop(f, 10000);
	assert_int_equal(f->seen.res, BACKEND_REPLY);
	assert_int_equal(f->seen.code, 250);
	assert_string_equal(f->mx->got, "NOOP\r\n");
	assert_true(backend_usable(&f->b));
}

static void
test_surplus(void **state)
{
	struct fixture *f = *state;

	script(f, "250 2.0.0 Ok\r\n250 2.0.0 Extra\r\n", NULL, NULL, NULL);
	noop(f, 10000);
	assert_int_equal(f->seen.res, BACKEND_SURPLUS);
	assert_int_equal(f->seen.code, 0);
	assert_false(backend_usable(&f->b));
	assert_int_equal(f->seen.gone_calls, 0);
}

static void
test_garbled(void **state)
{
	struct fixture *f = *state;

	script(f, "hello\r\n", NULL, NULL, NULL);
	noop(f, 10000);
	assert_int_equal(f->seen.res, BACKEND_GARBLED);
	assert_false(backend_usable(&f->b));
}

static void
test_lost(void **state)
{
	struct fixture *f = *state;

	script(f, FAKEMX_CLOSE, NULL, NULL, NULL);
	noop(f, 10000);
	assert_int_equal(f->seen.res, BACKEND_LOST);
	assert_false(backend_usable(&f->b));
	assert_int_equal(f->seen.gone_calls, 0);
}

static void
test_timeout(void **state)
{
	struct fixture *f = *state;

	f->cfg.backend_timeout_ms = 50;
	script(f, FAKEMX_SILENT, NULL, NULL, NULL);
	greeted(f);
	assert_int_equal(f->seen.res, BACKEND_TIMEOUT);
	assert_int_equal(f->seen.code, 0);
	assert_false(backend_usable(&f->b));
	assert_string_equal(f->mx->got, "EHLO client.example\r\n");
}

/* A backend that connects nowhere: the banner callback gets BACKEND_LOST. */
static void
test_connect_refused(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_in nowhere = f->mx->addr;

	/* The fake's port, once it no longer listens. */
	event_free(f->mx->lev);
	f->mx->lev = NULL;
	close(f->mx->lfd);
	f->mx->lfd = -1;
	f->b.conf.addr = (const struct sockaddr *)&nowhere;
	assert_int_equal(backend_connect(&f->b, on_reply), 0);
	assert_true(fakemx_run_until(f->base, called, f, ROUNDS));
	assert_int_equal(f->seen.calls, 1);
	assert_ptr_equal(f->seen.arg, f);
	assert_int_equal(f->seen.res, BACKEND_LOST);
	assert_false(backend_usable(&f->b));
	fakemx_run(f->base, QUIET_ROUNDS);
	assert_int_equal(f->seen.calls, 1);
	assert_int_equal(f->seen.gone_calls, 0);
}

/* A reply nobody asked for: the leg is out of step, the owner told. */
static void
test_unasked_reply(void **state)
{
	struct fixture *f = *state;

	connected(f);
	fakemx_send(f->mx, "421 4.3.2 fake.test shutting down\r\n");
	assert_true(fakemx_run_until(f->base, gone_called, f, ROUNDS));
	assert_int_equal(f->seen.gone_calls, 1);
	assert_ptr_equal(f->seen.gone_arg, f);
	assert_int_equal(f->seen.gone_res, BACKEND_REPLY);
	assert_int_equal(f->seen.calls, 0);
	assert_false(backend_usable(&f->b));
}

/* The backend going away between commands: the owner told too. */
static void
test_idle_lost(void **state)
{
	struct fixture *f = *state;

	connected(f);
	fakemx_close(f->mx);
	assert_true(fakemx_run_until(f->base, gone_called, f, ROUNDS));
	assert_int_equal(f->seen.gone_calls, 1);
	assert_ptr_equal(f->seen.gone_arg, f);
	assert_int_equal(f->seen.gone_res, BACKEND_LOST);
	assert_int_equal(f->seen.calls, 0);
}

/* Where the segments end must not matter: one octet a read. */
static void
test_trickled_reply(void **state)
{
	struct fixture *f = *state;

	connected(f);
	f->mx->trickle = 1;
	f->mx->peer_fd = f->b.conn->fd;
	script(f, "250-first line\r\n250-second\r\n250 2.0.0 third\r\n", NULL, NULL, NULL);
	backend_command(&f->b, "NOOP", 4, 10000, on_reply);
	assert_true(fakemx_run_until(f->base, called, f, ROUNDS));
	fakemx_run(f->base, QUIET_ROUNDS);
	assert_int_equal(f->seen.calls, 1);
	assert_int_equal(f->seen.res, BACKEND_REPLY);
	assert_int_equal(f->seen.code, 250);
	assert_int_equal(f->seen.nlines, 3);
	assert_string_equal(f->seen.text, "first line\nsecond\n2.0.0 third\n");
	assert_int_equal(evbuffer_get_length(f->mx->out), 0);
	assert_true(backend_usable(&f->b));
	assert_int_equal(f->seen.gone_calls, 0);
}

static void
test_close_idle_quits(void **state)
{
	struct fixture *f = *state;

	connected(f);
	backend_close(&f->b);
	assert_true(fakemx_run_until(f->base, mx_eof, f, ROUNDS));
	assert_string_equal(f->mx->got, "QUIT\r\n");
	assert_int_equal(f->seen.calls, 0);
	assert_int_equal(f->seen.gone_calls, 0);
}

/* DATA sent, its 354 not in: the leg is cut, no QUIT (which would be
 * taken for message text). */
static void
test_close_busy_cuts(void **state)
{
	struct fixture *f = *state;

	connected(f);
	script(f, FAKEMX_SILENT, NULL, NULL, NULL);
	backend_command(&f->b, "DATA", 4, 10000, on_reply);
	assert_true(fakemx_run_until(f->base, mx_got_line, f, ROUNDS));
	backend_close(&f->b);
	assert_true(fakemx_run_until(f->base, mx_eof, f, ROUNDS));
	assert_string_equal(f->mx->got, "DATA\r\n");
	assert_int_equal(f->seen.calls, 0);
	assert_int_equal(f->seen.gone_calls, 0);
}

static void
test_data(void **state)
{
	struct fixture *f = *state;
	const char *msg = "Subject: x\r\n\r\n..a stuffed dot\r\nbody\r\n";
	char want[256];

	connected(f);
	script(f, "354 go ahead\r\n", "250 2.0.0 Ok: queued as 42\r\n", NULL, NULL);
	backend_command(&f->b, "DATA", 4, 10000, on_reply);
	assert_true(fakemx_run_until(f->base, called, f, ROUNDS));
	assert_int_equal(f->seen.code, 354);
	memset(&f->seen, 0, sizeof(f->seen));
	assert_non_null(backend_output(&f->b));
	evbuffer_add(backend_output(&f->b), msg, strlen(msg));
	backend_data_end(&f->b, on_reply);
	assert_true(fakemx_run_until(f->base, called, f, ROUNDS));
	assert_int_equal(f->seen.calls, 1);
	assert_ptr_equal(f->seen.arg, f);
	assert_int_equal(f->seen.res, BACKEND_REPLY);
	assert_int_equal(f->seen.code, 250);
	assert_string_equal(f->seen.text, "2.0.0 Ok: queued as 42\n");
	snprintf(want, sizeof(want), "DATA\r\n%s.\r\n", msg);
	assert_string_equal(f->mx->got, want);
	assert_true(backend_usable(&f->b));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_connect_banner, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_greet_plain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_greet_xclient, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_greet_xclient_some_attrs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_greet_xclient_off, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_greet_xclient_helo_length, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_greet_xclient_split, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_xclient_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tls_required_not_offered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ehlo_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_command_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_surplus, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_garbled, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lost, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unasked_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idle_lost, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_trickled_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_idle_quits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_busy_cuts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_data, setup, teardown),
	};

	log_init(CONFIG_LOG_STDERR, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
