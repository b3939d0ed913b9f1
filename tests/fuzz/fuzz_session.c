/*
 * fuzz_session.c - libFuzzer harness for the session state machine: the client
 * leg (session.c), the backend leg (backend.c) and their transport (conn.c) on
 * the real libevent loop, between a fake client on a socketpair and a fake
 * backend on a loopback TCP listener this process owns (make fuzz).
 *
 * The input is a script. Byte 0 picks a configuration variant (CFG_*); then
 * come records: an op byte (low nibble OP_*, high nibble a parameter whose
 * bit 8 means "do not run the loop after this record", so that bytes from
 * both peers can arrive together) and, for ops that carry bytes, a 16-bit
 * little-endian length and the bytes. Running the loop means
 * event_base_loop(EVLOOP_NONBLOCK), which goes on until nothing is ready;
 * the fakes read and answer in their own callbacks on the same loop. The fake
 * backend answers each command line with the next queued OP_REPLY or, unless
 * CFG_WAIT, a plausible default, so client bytes alone reach deep states,
 * and any command can still get any reply: two replies in one segment,
 * garbage, long lines, a reply split anywhere. tests/fuzz/session_seeds.py
 * writes scripts; FUZZ_SESSION_TRACE=1 prints one as it runs, with both
 * directions and the proxy's log.
 *
 * Invariants, checked as bytes move (abort on violation):
 *  - the backend gets lines ending in CR LF, with no bare CR or LF and no
 *    NUL; a command line is one the proxy composes, within its bound (the
 *    client's max_line_length, 510 for XCLIENT, the AUTH line limit for an
 *    answer to a 334), and an EHLO is "EHLO " and exactly the argument of
 *    one of the client's HELO/EHLO lines;
 *  - one command at a time: none before the reply to the one before (the
 *    banner, for the first), but a pipelined group: a MAIL or RCPT may go
 *    before the replies to the MAILs and RCPTs before it (never before the
 *    reply to anything else), at most 16 unanswered, when the backend's last
 *    EHLO offered PIPELINING;
 *  - "BDAT n LAST" is followed by exactly n octets of message, whole CR LF
 *    lines, only when the backend's last EHLO offered CHUNKING;
 *  - once the backend has sent a reply nobody asked for, in bytes the proxy
 *    read together with the reply it waited for, the leg is out of step: no
 *    line may follow but QUIT (issue 12: "250 Ok\r\n250 Extra\r\n");
 *  - the client gets CR LF lines "ddd " or "ddd-", a multi-line reply keeps
 *    its code, and no more final reply lines than the lines it sent, plus
 *    the banner, plus a closing 421;
 *  - once both peers have closed, the session is gone without waiting for a
 *    deadline, and everything it allocated is freed (LeakSanitizer).
 *
 * Every proxy source is linked; main.c is built with -Dmain=portcullis_main
 * (libFuzzer brings its own main). log_msg is wrapped (-Wl,--wrap=log_msg): lines
 * are formatted, so their arguments are checked, but not written.
 */
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "listener.h"
#include "log.h"
#include "session.h"

/* The harness is not what is fuzzed: no coverage feedback from its own
 * branches, and no cost for its checks of every octet. */
#pragma clang attribute push(__attribute__((no_sanitize("coverage"))), apply_to = function)

/* Records. */
enum op {
	OP_CLIENT = 0, /* len, bytes: the client sends them */
	OP_CLIENT_FILL, /* len, byte: the client sends the byte len times */
	OP_REPLY, /* len, bytes: the answer to the next command line */
	OP_BACKEND, /* len, bytes: the backend sends them now, asked or not */
	OP_BACKEND_FILL, /* len, byte: the same, the byte len times */
	OP_LOOP, /* run the loop (after records that did not) */
	OP_CLIENT_CLOSE, /* param & 1: close, else shutdown(SHUT_WR) */
	OP_BACKEND_CLOSE, /* param & 1: close with a reset, else shutdown(SHUT_WR) */
	OP_TIMEOUT, /* param & 1: the backend's deadline, else the client's, if armed */
	OP_ANSWER, /* answer what the backend owes with defaults (for CFG_WAIT) */
	OP_COUNT
};
#define OP_PARAM_NOLOOP 0x8

/* Configuration variants, byte 0. */
#define CFG_LINE_MASK 0x03 /* max_line_length: line_lengths[] */
#define CFG_NO_XCLIENT 0x04
#define CFG_NORMALIZE 0x08 /* bare_lf = normalize */
#define CFG_AUTH_PLAIN 0x10 /* auth_plaintext = yes */
#define CFG_FEW_ERRORS 0x20 /* max_errors = 3 */
#define CFG_WAIT 0x40 /* the backend answers from OP_REPLY and OP_ANSWER only */
#define CFG_SMALL 0x80 /* max_recipients = 2, max_message_size = 4k */

/* Bounds that keep one input fast. */
#define FZ_CLIENT_MAX (256 * 1024) /* octets the client sends */
#define FZ_BACKEND_MAX (256 * 1024) /* octets the backend sends */
#define FZ_SETTLE_MAX 8 /* loop runs per record at most */
#define FZ_STALL 8 /* loop runs a blocked write waits for room */
#define FZ_REPLIES_MAX 512 /* queued OP_REPLY records */
#define FZ_CMDS_MAX 4096 /* commands tracked on one backend leg */
#define FZ_HELO_MAX 64 /* client HELO/EHLO arguments remembered */

/* What the proxy reads from its backend at once (CONN_READ_CHUNK, conn.c):
 * bytes sent together within this are seen together. */
#define FZ_READ_CHUNK (16 * 1024)
/* RFC 4954 §4, SESSION_AUTH_LINE_MAX in session.c. */
#define FZ_AUTH_LINE_MAX 12288
/* Postfix's XCLIENT_README: an XCLIENT line is at most 512 octets. */
#define FZ_XCLIENT_MAX 510
/* Longest line the client may get: a relayed line (SMTP_REPLY_LINE_MAX and
 * "ddd-") or one of ours (session_reply's 1024-octet buffer). */
#define FC_REPLY_LINE_MAX 1100
/* Longest client line kept to compare with the backend's EHLO. */
#define FC_LINE_CAP 8192
/* Longest line the fake backend keeps: beyond every bound it checks. */
#define FB_LINE_CAP (70 * 1024)
/* A reply line the proxy surely takes as one (SMTP_REPLY_* are larger). */
#define FB_CLEAR_LINE_MAX 512
#define FB_CLEAR_LINES_MAX 32
#define FB_CLEAR_TEXT_MAX 4096

/* What a command line the backend received is: its default answer, its
 * bound. */
enum kind {
	K_BANNER = 0, /* the connection */
	K_EHLO,
	K_HELO,
	K_XCLIENT,
	K_MAIL,
	K_RCPT,
	K_DATA,
	K_DOT, /* the end of a message */
	K_BDAT, /* "BDAT n LAST" and its n octets */
	K_RSET,
	K_NOOP,
	K_QUIT,
	K_AUTH, /* without an initial response */
	K_AUTH_IR, /* with one */
	K_AUTH_ANSWER, /* a line after a 334 */
	K_AUTH_CANCEL, /* "*" after a 334 */
	K_STARTTLS,
	K_OTHER, /* a verb the proxy may send that needs no special answer */
};

/* The fake client: what it sent (lines, HELO arguments) and what it got. */
struct fake_client {
	int fd; /* -1 once closed */
	struct event *ev; /* readable */
	int shut; /* shutdown(SHUT_WR) done */
	int eof; /* the proxy closed */
	size_t sent;
	unsigned long lines; /* LF-terminated lines sent */
	size_t partial; /* octets after the last LF */
	size_t line_len; /* of the line being sent, in fc_line */
	int line_over;
	char *helo[FZ_HELO_MAX]; /* arguments of its HELO/EHLO lines */
	size_t nhelo;
	int helo_lost; /* more than FZ_HELO_MAX */
	/* replies received */
	char rline[FC_REPLY_LINE_MAX + 2];
	size_t rlen;
	int rprev_cr;
	int rmulti; /* inside a multi-line reply */
	int rcode; /* its code */
	unsigned long finals; /* final reply lines */
	int last_final; /* the last one's code */
};

/* The fake backend: one leg at a time. */
struct fake_backend {
	int fd; /* -1: none, or closed */
	struct event *ev; /* readable */
	int shut;
	int eof;
	size_t sent;
	/* received */
	size_t line_len; /* of the line being read, in fb_line */
	int prev_cr;
	unsigned cmds; /* command lines received, "." ends included */
	unsigned char kind[FZ_CMDS_MAX + 1]; /* [i]: command i; [0] the connection */
	unsigned char vkind[FZ_CMDS_MAX + 1]; /* the same by its verb alone (no 334 state) */
	int in_data; /* message lines follow a 354 to DATA */
	size_t bdat_left; /* octets of a BDAT chunk still to come */
	int pipelining, chunking; /* the last 2xx EHLO reply offered them */
	int ehlo_pipelining, ehlo_chunking; /* the EHLO reply being sent does */
	/* sent, as replies */
	unsigned replies; /* complete replies sent; the banner is reply 0 */
	unsigned next_answer; /* the next command the responder answers */
	char rline[FB_CLEAR_LINE_MAX + 2];
	size_t rlen;
	int rbad; /* this line is not clearly a reply line */
	int rmulti, rcode;
	unsigned rlines;
	size_t rtotal;
	int last_code; /* of the last complete reply */
	int lost; /* its output is not clearly replies: counting stops */
	int surplus; /* it sent a reply nobody asked for, and the proxy saw it */
	int unasked; /* it sent one out of turn: seen if the loop runs next */
};

/* One queued OP_REPLY, pointing into the input. */
struct queued {
	const uint8_t *p;
	size_t n;
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void __wrap_log_msg(int prio, const char *sid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fz_trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fz_trace_bytes(const char *who, const void *p, size_t n);
static void fz_listen(void);
static void fz_listen_cb(evutil_socket_t fd, short what, void *arg);
static void fz_configure(uint8_t variant);
static void fz_begin(uint8_t variant);
static void fz_end(void);
static size_t fz_record(const uint8_t *p, size_t n);
static size_t fz_length(const uint8_t *p, size_t n, size_t *used);
static void fz_fill(void (*send)(const void *, size_t), uint8_t byte, size_t len);
static int fz_run(void);
static void fz_settle(void);
static void fz_timeout(int backend);
static void fz_inject(void);
static struct session *fz_session(void);
static void fc_send(const void *p, size_t n);
static void fc_track_sent(const char *p, size_t n);
static void fc_line_sent(void);
static void fc_read_cb(evutil_socket_t fd, short what, void *arg);
static void fc_read(void);
static void fc_received(const char *p, size_t n);
static void fc_reply_line(void);
static void fc_close(int full);
static void fc_check_count(int end);
static void fb_accept(void);
static void fb_reset(void);
static void fb_close(int reset);
static void fb_read_cb(evutil_socket_t fd, short what, void *arg);
static void fb_read(void);
static void fb_received(const char *p, size_t n);
static size_t fb_bound(void);
static void fb_line(void);
static void fb_command(const char *l, size_t len);
static enum kind fb_classify(const char *l, size_t len, int verb_only);
static void fb_ehlo_keyword(const char *t, size_t len);
static int fb_may_pipeline(enum kind k);
static void fb_check_ehlo(const char *arg, size_t len);
static int fb_visible(size_t n, int owed);
static void fb_send(const void *p, size_t n);
static void fb_track_sent(const char *p, size_t n);
static void fb_reply_line(void);
static void fb_answer(int force);
static const char *fb_default(enum kind k);

static struct server srv;
static struct config base_cfg; /* the variants start from it */
static struct config_addr fz_listener; /* the listen entry sessions come in on */
static int lfd = -1; /* the fake backend's listening socket */
static struct event *listen_ev;
static int tracing; /* FUZZ_SESSION_TRACE */
static int in_loop; /* inside event_base_loop: no loop may run */
static int injected; /* the client sent or closed, a deadline passed, since
                      * the loop last ran */
static unsigned long moves; /* octets and connections the fakes saw */

static struct fake_client fc;
static struct fake_backend fb;
static char fc_line[FC_LINE_CAP]; /* the line the client is sending */
static char fb_line_buf[FB_LINE_CAP]; /* the line the backend is reading */
static struct queued queue[FZ_REPLIES_MAX];
static size_t queue_head, queue_tail;
static int wait_mode; /* CFG_WAIT */

static const uint64_t line_lengths[4] = {2048, 510, 1000, 4096};

/* fz_fail - an invariant does not hold */
static void
fz_fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz_session: invariant violated: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr,
	    "\n(client sent %zu octets in %lu lines, got %lu final replies; "
	    "backend got %u commands, sent %u replies)\n",
	    fc.sent, fc.lines, fc.finals, fb.cmds, fb.replies);
	abort();
}

static void
fz_trace(const char *fmt, ...)
{
	va_list ap;

	if (!tracing)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* fz_trace_bytes - who, then the bytes with CR, LF and the rest escaped */
static void
fz_trace_bytes(const char *who, const void *p, size_t n)
{
	const unsigned char *u = p;

	if (!tracing)
		return;
	fprintf(stderr, "%s %zu \"", who, n);
	for (size_t i = 0; i < n && i < 600; i++) {
		if (u[i] == '\r')
			fputs("\\r", stderr);
		else if (u[i] == '\n')
			fputs("\\n", stderr);
		else if (u[i] < 0x20 || u[i] >= 0x7f || u[i] == '"' || u[i] == '\\')
			fprintf(stderr, "\\x%02x", u[i]);
		else
			fputc(u[i], stderr);
	}
	fprintf(stderr, "%s\"\n", n > 600 ? "..." : "");
}

/* __wrap_log_msg - the proxy's log: formatted (its arguments go through the
 * sanitizers' printf checks), written only when tracing */
void
__wrap_log_msg(int prio, const char *sid, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (tracing)
		fprintf(stderr, "  log %d %s%s%s\n", prio, sid ? "id=" : "", sid ? sid : "", msg);
}

/* ---- set-up, once ---- */

/* fz_listen - the fake backend's listener on an ephemeral loopback port */
static void
fz_listen(void)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&srv.backend_addr;
	socklen_t len = sizeof(*sin);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		fz_fail("socket: %s", strerror(errno));
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)sin, sizeof(*sin)) != 0 || listen(lfd, 64) != 0 ||
	    getsockname(lfd, (struct sockaddr *)sin, &len) != 0)
		fz_fail("backend listener: %s", strerror(errno));
	srv.backend_addrlen = len;
}

/* LLVMFuzzerInitialize - what main() sets up: a server, its configuration
 * generation, an empty chain, the per-client table, the loop */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[CONFIG_ERR_MAX];
	struct event_config *ecfg;
	struct generation *g;
	struct config *cfg;

	signal(SIGPIPE, SIG_IGN);
	tracing = getenv("FUZZ_SESSION_TRACE") != NULL;
	log_init(CONFIG_LOG_STDERR, 1);
	TAILQ_INIT(&srv.sessions);
	fz_listen();

	config_defaults(&base_cfg);
	snprintf(base_cfg.hostname, sizeof(base_cfg.hostname), "proxy.test");
	snprintf(base_cfg.backend.host, sizeof(base_cfg.backend.host), "127.0.0.1");
	snprintf(base_cfg.backend.port, sizeof(base_cfg.backend.port), "%u",
	    ntohs(((struct sockaddr_in *)&srv.backend_addr)->sin_port));
	base_cfg.have_backend = 1;
	base_cfg.nlisten = 0; /* listener_start accepts on nothing */
	base_cfg.client_rdns = 0; /* no DNS */
	snprintf(fz_listener.host, sizeof(fz_listener.host), "127.0.0.1");
	snprintf(fz_listener.port, sizeof(fz_listener.port), "25");

	if ((cfg = malloc(sizeof(*cfg))) == NULL || (g = calloc(1, sizeof(*g))) == NULL)
		fz_fail("out of memory");
	*cfg = base_cfg;
	/* As main() builds it: the loop with the epoll changelist. */
	ecfg = event_config_new();
	if (ecfg != NULL)
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	srv.base = ecfg != NULL ? event_base_new_with_config(ecfg) : event_base_new();
	if (ecfg != NULL)
		event_config_free(ecfg);
	if (srv.base == NULL)
		fz_fail("event_base_new failed");
	if (chain_load(&srv.chain, cfg, srv.base, NULL, 0, err, sizeof(err)) != 0)
		fz_fail("chain_load: %s", err);
	/* generation_new (main.c): the server holds one reference. */
	g->refs = 1;
	g->cfg = cfg;
	g->chain = srv.chain;
	srv.chain->gens++;
	srv.gen = g;
	srv.cfg = cfg;
	srv.backend_xclient_name = 1;
	if (listener_start(&srv, NULL, 0) != 0)
		fz_fail("listener_start failed");
	listen_ev = event_new(srv.base, lfd, EV_READ | EV_PERSIST, fz_listen_cb, NULL);
	if (listen_ev == NULL || event_add(listen_ev, NULL) != 0)
		fz_fail("event_new failed");
	return 0;
}

/* ---- one input ---- */

/* fz_configure - the variant byte over the base configuration */
static void
fz_configure(uint8_t variant)
{
	struct config *cfg = srv.cfg;

	*cfg = base_cfg;
	cfg->max_line_length = line_lengths[variant & CFG_LINE_MASK];
	cfg->backend_xclient = !(variant & CFG_NO_XCLIENT);
	cfg->bare_lf = variant & CFG_NORMALIZE ? CONFIG_BARE_LF_NORMALIZE : CONFIG_BARE_LF_REJECT;
	cfg->auth_plaintext = !!(variant & CFG_AUTH_PLAIN);
	if (variant & CFG_FEW_ERRORS)
		cfg->max_errors = 3;
	if (variant & CFG_SMALL) {
		cfg->max_recipients = 2;
		cfg->max_message_size = 4096;
	}
	wait_mode = !!(variant & CFG_WAIT);
}

/* fz_begin - a client connects */
static void
fz_begin(uint8_t variant)
{
	struct client_info ci;
	int sv[2];

	fz_configure(variant);
	memset(&fc, 0, sizeof(fc));
	fb_reset();
	queue_head = queue_tail = 0;
	/* What a session may leave to the next: not across inputs. */
	srv.sid_base = 0;
	srv.sid_next = 0;
	srv.draining = 0;
	srv.backend_xclient_name = 1;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
		fz_fail("socketpair: %s", strerror(errno));
	fc.fd = sv[1];
	fc.ev = event_new(srv.base, fc.fd, EV_READ | EV_PERSIST, fc_read_cb, NULL);
	if (fc.ev == NULL || event_add(fc.ev, NULL) != 0)
		fz_fail("event_new failed");
	/* What the listener hands over for an accepted client. */
	memset(&ci, 0, sizeof(ci));
	ci.fd = sv[0];
	ci.listener = &fz_listener;
	snprintf(ci.ip, sizeof(ci.ip), "192.0.2.1");
	snprintf(ci.port, sizeof(ci.port), "40025");
	snprintf(ci.local_ip, sizeof(ci.local_ip), "127.0.0.1");
	snprintf(ci.local_port, sizeof(ci.local_port), "25");
	if (server_ip_acquire(&srv, ci.ip, ci.ip_key, sizeof(ci.ip_key)) != 0)
		fz_fail("server_ip_acquire failed");
	server_session_id(&srv, ci.id);
	fz_trace("== variant 0x%02x", variant);
	session_new(&srv, &ci);
}

/* fz_session - the session, while it exists */
static struct session *
fz_session(void)
{
	return TAILQ_FIRST(&srv.sessions);
}

/* fz_run - run the loop until nothing is ready; 1 if anything moved */
static int
fz_run(void)
{
	unsigned long m = moves, n = srv.nsessions;

	if (in_loop)
		return 0; /* a callback of this loop: it goes on after us */
	if (fb.unasked) {
		fz_trace("-- surplus: a reply out of turn, and the proxy reads it first");
		fb.surplus = 1;
		fb.unasked = 0;
	}
	injected = 0;
	in_loop = 1;
	event_base_loop(srv.base, EVLOOP_NONBLOCK);
	in_loop = 0;
	return m != moves || n != srv.nsessions;
}

/* fz_settle - run the loop until a run moves nothing */
static void
fz_settle(void)
{
	for (int i = 0; i < FZ_SETTLE_MAX && fz_run(); i++)
		;
}

/* fz_inject - something reaches the proxy besides the backend's bytes: an
 * out-of-turn reply sent before may now be read after it */
static void
fz_inject(void)
{
	injected = 1;
	if (fb.unasked) {
		fb.unasked = 0;
		fb.lost = 1;
	}
}

/* fz_timeout - a deadline passes, if it is armed: the loop runs its
 * callback as if the time had come */
static void
fz_timeout(int backend)
{
	struct session *s = fz_session();
	struct event *ev;

	if (s == NULL)
		return;
	ev = backend ? s->be.deadline : s->timer;
	if (ev != NULL && evtimer_pending(ev, NULL)) {
		fz_trace("-- %s deadline passes", backend ? "backend" : "client");
		fz_inject();
		event_active(ev, EV_TIMEOUT, 1);
	}
}

/* fz_length - a record's 16-bit length */
static size_t
fz_length(const uint8_t *p, size_t n, size_t *used)
{
	if (n < 2) {
		*used = n;
		return 0;
	}
	*used = 2;
	return (size_t)p[0] | (size_t)p[1] << 8;
}

/* fz_fill - one byte, len times, through send */
static void
fz_fill(void (*send)(const void *, size_t), uint8_t byte, size_t len)
{
	char buf[4096];

	memset(buf, byte, sizeof(buf));
	while (len > 0) {
		size_t n = len < sizeof(buf) ? len : sizeof(buf);
		send(buf, n);
		len -= n;
	}
}

/* fz_record - run the record at p; how many octets it took */
static size_t
fz_record(const uint8_t *p, size_t n)
{
	enum op op = (enum op)((p[0] & 0x0f) % OP_COUNT);
	unsigned param = p[0] >> 4;
	size_t used = 1, hdr, len = 0;

	if (op <= OP_BACKEND_FILL) {
		len = fz_length(p + 1, n - 1, &hdr);
		used += hdr;
	}
	switch (op) {
	case OP_CLIENT:
	case OP_REPLY:
	case OP_BACKEND:
		if (len > n - used)
			len = n - used;
		if (op == OP_CLIENT) {
			fc_send(p + used, len);
		} else if (op == OP_BACKEND) {
			fz_trace_bytes("B>", p + used, len);
			fb_send(p + used, len);
		} else if (queue_tail < FZ_REPLIES_MAX) {
			fz_trace_bytes("-- queue reply", p + used, len);
			queue[queue_tail].p = p + used;
			queue[queue_tail++].n = len;
		}
		used += len;
		break;
	case OP_CLIENT_FILL:
	case OP_BACKEND_FILL:
		if (used < n) {
			fz_trace("-- %s sends 0x%02x %zu times",
			    op == OP_CLIENT_FILL ? "client" : "backend", p[used], len);
			fz_fill(op == OP_CLIENT_FILL ? fc_send : fb_send, p[used], len);
			used++;
		}
		break;
	case OP_CLIENT_CLOSE:
		fc_close(param & 1);
		break;
	case OP_BACKEND_CLOSE:
		fb_close(param & 1);
		break;
	case OP_TIMEOUT:
		fz_timeout(param & 1);
		break;
	case OP_ANSWER:
		fb_answer(1);
		break;
	case OP_LOOP:
	case OP_COUNT:
		param = 0;
		break;
	}
	fb_answer(0); /* with what the record queued */
	if (!(param & OP_PARAM_NOLOOP))
		fz_settle();
	return used;
}

/* fz_end - tear down as peers do, then check the session is gone */
static void
fz_end(void)
{
	int lingered, fd;

	fz_trace("== teardown");
	wait_mode = 0; /* what the backend owes, it answers now */
	fb_answer(0);
	fz_settle();
	fc_close(0); /* a half-close: replies still come */
	fz_settle();
	fc_close(1);
	fz_settle();
	if (srv.nsessions > 0) {
		fb_close(1);
		fz_settle();
	}
	lingered = srv.nsessions > 0;
	if (lingered) { /* it would end at a deadline; we cannot wait */
		session_shutdown_all(&srv);
		fz_settle();
		while (fz_session() != NULL)
			session_destroy(fz_session());
		fz_settle();
	}
	fb_close(1);
	while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
		close(fd); /* legs nobody took */
	fc_check_count(1);
	for (size_t i = 0; i < fc.nhelo; i++)
		free(fc.helo[i]);
	fc.nhelo = 0;
	if (lingered)
		fz_fail("the session outlived both its peers");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 1;

	if (size < 1)
		return 0;
	fz_begin(data[0]);
	while (off < size)
		off += fz_record(data + off, size - off);
	fz_end();
	return 0;
}

/* ---- the fake client ---- */

/* fc_send - the client sends bytes; a full socket makes it wait a little */
static void
fc_send(const void *p, size_t n)
{
	const char *c = p;
	int stall = 0;

	if (fc.fd < 0 || fc.shut)
		return;
	if (n > FZ_CLIENT_MAX - fc.sent)
		n = FZ_CLIENT_MAX - fc.sent;
	fz_trace_bytes("C>", p, n);
	while (n > 0 && stall < FZ_STALL) {
		ssize_t w = send(fc.fd, c, n, MSG_NOSIGNAL);
		if (w > 0) {
			fz_inject();
			fc_track_sent(c, (size_t)w);
			c += w;
			n -= (size_t)w;
			stall = 0;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return; /* the proxy closed */
		if (!fz_run())
			stall++;
	}
}

/* fc_track_sent - count lines, remember HELO/EHLO arguments */
static void
fc_track_sent(const char *p, size_t n)
{
	fc.sent += n;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n') {
			fc.lines++;
			fc.partial = 0;
			fc_line_sent();
			continue;
		}
		fc.partial++;
		if (fc.line_len < sizeof(fc_line))
			fc_line[fc.line_len++] = p[i];
		else
			fc.line_over = 1;
	}
}

/* fc_line_sent - a whole line went: keep the argument of a HELO or EHLO,
 * as smtp_parse_command splits it (one CR before the LF is not the line's) */
static void
fc_line_sent(void)
{
	size_t len = fc.line_len, i = 4;
	char *arg;

	if (len > 0 && fc_line[len - 1] == '\r')
		len--;
	while (len > 0 && (fc_line[len - 1] == ' ' || fc_line[len - 1] == '\t'))
		len--;
	if (!fc.line_over && len > 5 && fc_line[4] == ' ' &&
	    (strncasecmp(fc_line, "EHLO", 4) == 0 || strncasecmp(fc_line, "HELO", 4) == 0)) {
		while (i < len && fc_line[i] == ' ')
			i++;
		if (fc.nhelo == FZ_HELO_MAX) {
			fc.helo_lost = 1;
		} else if ((arg = malloc(len - i + 1)) != NULL) {
			memcpy(arg, fc_line + i, len - i);
			arg[len - i] = '\0';
			fc.helo[fc.nhelo++] = arg;
		}
	}
	fc.line_len = 0;
	fc.line_over = 0;
}

static void
fc_read_cb(evutil_socket_t fd, short what, void *arg)
{
	fc_read();
}

/* fc_read - what the proxy sent the client */
static void
fc_read(void)
{
	char buf[16384];
	ssize_t n;

	if (fc.fd < 0 || fc.eof)
		return;
	n = recv(fc.fd, buf, sizeof(buf), 0);
	if (n > 0) {
		fz_trace_bytes("C<", buf, (size_t)n);
		moves++;
		fc_received(buf, (size_t)n);
		return; /* any rest: the next round */
	}
	if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		fz_trace("-- the proxy closed the client connection");
		moves++;
		fc.eof = 1;
		event_del(fc.ev);
	}
}

/* fc_received - check the reply stream octet by octet */
static void
fc_received(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		if (c == '\0')
			fz_fail("the client got a NUL");
		if (fc.rprev_cr && c != '\n')
			fz_fail("the client got a bare CR");
		if (c == '\n' && !fc.rprev_cr)
			fz_fail("the client got a bare LF");
		fc.rprev_cr = c == '\r';
		if (c == '\n') {
			fc_reply_line();
			continue;
		}
		if (fc.rlen >= FC_REPLY_LINE_MAX)
			fz_fail("the client got a reply line over %d octets", FC_REPLY_LINE_MAX);
		fc.rline[fc.rlen++] = c;
	}
}

/* fc_reply_line - "ddd-" or "ddd " and text; a final line counts */
static void
fc_reply_line(void)
{
	const char *l = fc.rline;
	size_t len = fc.rlen - 1; /* less the CR */
	int code;

	fc.rlen = 0;
	if (len < 4 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' ||
	    l[2] > '9' || (l[3] != ' ' && l[3] != '-'))
		fz_fail("the client got a line that is no reply: \"%.*s\"", (int)len, l);
	code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	if (fc.rmulti && code != fc.rcode)
		fz_fail("the client got a multi-line reply whose code changes: %d, then %d",
		    fc.rcode, code);
	fc.rmulti = l[3] == '-';
	fc.rcode = code;
	if (fc.rmulti)
		return;
	fc.finals++;
	fc.last_final = code;
	fc_check_count(0);
}

/*
 * fc_check_count - one reply per line the client sent, and the banner; a
 * 421 may close the session on top (after the reply to a command, or with
 * none: a deadline). At the end the closing 421 must be the last reply.
 */
static void
fc_check_count(int end)
{
	unsigned long lines = fc.lines + (fc.partial > 0);
	unsigned long allowed = lines + 1 + (!end || fc.last_final == 421);

	if (fc.finals > allowed)
		fz_fail("the client got %lu replies for %lu lines (and the banner%s)", fc.finals,
		    lines, end && fc.last_final == 421 ? " and a closing 421" : "");
}

/* fc_close - the client half-closes (full = 0) or closes */
static void
fc_close(int full)
{
	if (fc.fd < 0)
		return;
	fz_inject();
	if (!full) {
		if (!fc.shut) {
			fz_trace("-- client shutdown");
			shutdown(fc.fd, SHUT_WR);
			fc.shut = 1;
		}
		return;
	}
	fz_trace("-- client close");
	fc_read(); /* what it got last */
	event_free(fc.ev);
	fc.ev = NULL;
	close(fc.fd);
	fc.fd = -1;
}

/* ---- the fake backend ---- */

/* fb_reset - no leg */
static void
fb_reset(void)
{
	memset(&fb, 0, sizeof(fb));
	fb.kind[0] = K_BANNER;
	fb.fd = -1;
}

static void
fz_listen_cb(evutil_socket_t fd, short what, void *arg)
{
	fb_accept();
}

/* fb_accept - a leg the proxy opened */
static void
fb_accept(void)
{
	struct linger lg = {1, 0};
	int one = 1, fd;

	if ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0)
		return;
	moves++;
	/* Closing with a reset leaves no TIME_WAIT on either side: thousands
	 * of connections a second would otherwise use up the ports. */
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	/* What we send arrives before the next round of the loop: Nagle
	 * would hold a small write until the proxy's delayed ACK. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (fb.fd >= 0) {
		fb_read(); /* what the old leg said last */
		fb_close(1);
	}
	fb_reset();
	fb.fd = fd;
	fb.ev = event_new(srv.base, fd, EV_READ | EV_PERSIST, fb_read_cb, NULL);
	if (fb.ev == NULL || event_add(fb.ev, NULL) != 0)
		fz_fail("event_new failed");
	fz_trace("-- backend accepts a connection");
	fb_answer(0);
}

/* fb_close - the backend closes: with a reset, or shutdown(SHUT_WR) */
static void
fb_close(int reset)
{
	if (fb.fd < 0)
		return;
	if (!reset) {
		if (!fb.shut) {
			fz_trace("-- backend shutdown");
			shutdown(fb.fd, SHUT_WR);
			fb.shut = 1;
		}
		return;
	}
	fz_trace("-- backend close (reset)");
	event_free(fb.ev);
	fb.ev = NULL;
	close(fb.fd);
	fb.fd = -1;
}

static void
fb_read_cb(evutil_socket_t fd, short what, void *arg)
{
	fb_read();
	fb_answer(0);
}

/* fb_read - what the proxy sent the backend */
static void
fb_read(void)
{
	char buf[16384];
	ssize_t n;

	if (fb.fd < 0 || fb.eof)
		return;
	n = recv(fb.fd, buf, sizeof(buf), 0);
	if (n > 0) {
		fz_trace_bytes("B<", buf, (size_t)n);
		moves++;
		fb_received(buf, (size_t)n);
		return;
	}
	if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		fz_trace("-- the proxy closed the backend connection");
		moves++;
		fb.eof = 1;
		event_del(fb.ev);
	}
}

/* fb_bound - the longest line the backend may get, of any kind */
static size_t
fb_bound(void)
{
	const struct config *cfg = srv.cfg;
	size_t b = cfg->max_line_length + 2;

	if (b < FZ_AUTH_LINE_MAX)
		b = FZ_AUTH_LINE_MAX;
	if (b < cfg->max_data_line_length + 1)
		b = cfg->max_data_line_length + 1;
	return b;
}

/* fb_received - lines of CR LF, no bare CR or LF, no NUL (DESIGN §2) */
static void
fb_received(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		if (c == '\0')
			fz_fail("the backend got a NUL");
		if (fb.prev_cr && c != '\n')
			fz_fail("the backend got a bare CR");
		if (c == '\n' && !fb.prev_cr)
			fz_fail("the backend got a bare LF");
		fb.prev_cr = c == '\r';
		if (c == '\n') {
			fb_line();
			continue;
		}
		if (fb.line_len > fb_bound() || fb.line_len >= sizeof(fb_line_buf))
			fz_fail("the backend got a line over %zu octets", fb_bound());
		fb_line_buf[fb.line_len++] = c;
	}
}

/* fb_line - a whole line (the CR still counted in line_len) */
static void
fb_line(void)
{
	const char *l = fb_line_buf;
	size_t len = fb.line_len - 1;

	fb.line_len = 0;
	if (fb.bdat_left > 0) {
		/* The chunk is message, not commands: whole lines of it. */
		if (len + 2 > fb.bdat_left)
			fz_fail("a BDAT chunk of %zu octets ends inside a line", fb.bdat_left);
		if (len > srv.cfg->max_data_line_length + 1)
			fz_fail("the backend got a message line of %zu octets", len);
		fb.bdat_left -= len + 2;
		return;
	}
	if (fb.surplus && !(len == 4 && memcmp(l, "QUIT", 4) == 0))
		fz_fail("the backend got \"%.*s\" after a reply nobody asked for: the proxy is "
		        "out of step with it",
		    (int)(len < 80 ? len : 80), l);
	if (fb.in_data) {
		/* A line that begins with "." once normalized is stuffed. */
		if (len > srv.cfg->max_data_line_length + 1)
			fz_fail("the backend got a message line of %zu octets", len);
		if (len == 1 && l[0] == '.') {
			fb.in_data = 0;
			fb_command(l, len);
		}
		return;
	}
	fb_command(l, len);
}

/* fb_command - a command line: in turn, one the proxy composes, in bounds */
static void
fb_command(const char *l, size_t len)
{
	const struct config *cfg = srv.cfg;
	enum kind k = fb_classify(l, len, 0);
	size_t max = 512;

	/* A backend that answers a cancel ("*") with 334 leaves the proxy
	 * and us unsure whether an AUTH exchange goes on; a MAIL line is a
	 * MAIL for the pipelining rule, whatever 334 came before. */
	enum kind vk = fb_classify(l, len, 1);
	if (!fb.lost && fb.replies < 1 + fb.cmds && !fb_may_pipeline(vk))
		fz_fail("the backend got \"%.*s\" before its reply to the command before: one "
		        "command at a time, or a group of MAIL and RCPT to a backend that offers "
		        "PIPELINING",
		    (int)(len < 80 ? len : 80), l);
	if (k == K_BDAT && !fb.lost) {
		char *end;
		unsigned long long n = strtoull(l + 5, &end, 10);
		if (!fb.chunking)
			fz_fail("the backend got BDAT without offering CHUNKING");
		if (end == l + 5 || strcmp(end, " LAST") != 0 || (size_t)(end - l) + 5 != len)
			fz_fail("the backend got a BDAT the proxy does not compose: \"%.*s\"",
			    (int)(len < 80 ? len : 80), l);
		fb.bdat_left = (size_t)n;
	}
	if (fb.cmds == FZ_CMDS_MAX) {
		fb.lost = 1;
		return;
	}
	fb.kind[++fb.cmds] = (unsigned char)k;
	fb.vkind[fb.cmds] = (unsigned char)vk;
	if (fb.lost)
		return; /* a message line may pass for a command */
	switch (k) {
	case K_EHLO:
		fb_check_ehlo(l + 5, len - 5);
		/* FALLTHROUGH */
	case K_AUTH:
	case K_AUTH_IR:
	case K_MAIL:
	case K_RCPT:
		/* A client line of max_line_length, made canonical ("<>"
		 * around a path). */
		max = cfg->max_line_length + 2;
		break;
	case K_XCLIENT:
		max = FZ_XCLIENT_MAX;
		break;
	case K_AUTH_ANSWER:
		max = cfg->max_line_length > FZ_AUTH_LINE_MAX ? cfg->max_line_length
		                                              : FZ_AUTH_LINE_MAX;
		break;
	default:
		break;
	}
	if (len > max)
		fz_fail("the backend got a command line of %zu octets (at most %zu): \"%.60s...\"",
		    len, max, l);
}

/* fb_classify - what kind of command the line is; while counting holds, a
 * line that is none the proxy composes is a violation */
static enum kind
fb_classify(const char *l, size_t len, int verb_only)
{
	static const struct {
		const char *prefix;
		enum kind k;
		int whole; /* the line is just the verb */
	} verbs[] = {
	    {"EHLO ", K_EHLO, 0},
	    {"HELO ", K_HELO, 0},
	    {"XCLIENT", K_XCLIENT, 0},
	    {"XFORWARD", K_OTHER, 0},
	    {"MAIL FROM:", K_MAIL, 0},
	    {"RCPT TO:", K_RCPT, 0},
	    {"DATA", K_DATA, 1},
	    {"BDAT ", K_BDAT, 0},
	    {"RSET", K_RSET, 1},
	    {"NOOP", K_NOOP, 1},
	    {"QUIT", K_QUIT, 1},
	    {"STARTTLS", K_STARTTLS, 1},
	    {"AUTH ", K_AUTH, 0},
	    {"VRFY", K_OTHER, 0},
	    {"EXPN", K_OTHER, 0},
	    {"HELP", K_OTHER, 0},
	    {"ETRN", K_OTHER, 0},
	};

	if (len == 1 && l[0] == '.')
		return K_DOT;
	if (!fb.lost && fb.last_code == 334 && !verb_only)
		return len == 1 && l[0] == '*' ? K_AUTH_CANCEL : K_AUTH_ANSWER;
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		size_t n = strlen(verbs[i].prefix);
		if (len < n || memcmp(l, verbs[i].prefix, n) != 0 || (verbs[i].whole && len != n))
			continue;
		if (verbs[i].k == K_AUTH && memchr(l + n, ' ', len - n) != NULL)
			return K_AUTH_IR;
		return verbs[i].k;
	}
	if (!fb.lost && !verb_only)
		fz_fail("the backend got a line the proxy does not compose: \"%.*s\"",
		    (int)(len < 80 ? len : 80), l);
	return K_OTHER;
}

/* fb_check_ehlo - "EHLO " and exactly one of the client's arguments */
static void
fb_check_ehlo(const char *arg, size_t len)
{
	if (fc.helo_lost)
		return;
	for (size_t i = 0; i < fc.nhelo; i++) {
		if (strlen(fc.helo[i]) == len && memcmp(fc.helo[i], arg, len) == 0)
			return;
	}
	fz_fail("the backend got an EHLO whose %zu-octet argument is no client's HELO/EHLO "
	        "argument: \"%.*s\"",
	    len, (int)(len < 100 ? len : 100), arg);
}

/*
 * fb_visible - can the proxy tell a reply nobody asked for in these n
 * octets? It reads them at once, so an extra reply comes with the one it
 * waits for. One out of turn (owed: nothing was) it can tell only if it has
 * no client input to act on first (the loop must also run before more
 * comes: fz_inject). Otherwise the two cross, as on any network.
 */
static int
fb_visible(size_t n, int owed)
{
	struct session *s = fz_session();
	int pending = 0;

	if (fb.lost || fb.in_data || fb.line_len > 0 || s == NULL || s->be.conn == NULL ||
	    s->be.conn->fd < 0 || evbuffer_get_length(s->be.conn->out) > 0)
		return 0;
	if (ioctl(s->be.conn->fd, FIONREAD, &pending) != 0 || (size_t)pending + n > FZ_READ_CHUNK)
		return 0;
	if (owed)
		return 1;
	if (in_loop || injected || s->client == NULL || evbuffer_get_length(s->client->in) > 0 ||
	    ioctl(s->client->fd, FIONREAD, &pending) != 0 || pending > 0)
		return 0;
	return 1;
}

/* fb_send - the backend sends bytes, an answer or out of turn; counts the
 * replies in them */
static void
fb_send(const void *p, size_t n)
{
	const char *c = p;
	int visible, stall = 0, unsent = 0;
	unsigned before = fb.replies;
	int owed = fb.replies < 1 + fb.cmds;

	if (fb.fd < 0 || fb.shut)
		return;
	if (n > FZ_BACKEND_MAX - fb.sent)
		n = FZ_BACKEND_MAX - fb.sent;
	visible = fb_visible(n, owed);
	while (n > 0 && stall < FZ_STALL) {
		ssize_t w = send(fb.fd, c, n, MSG_NOSIGNAL);
		if (w > 0) {
			fb_track_sent(c, (size_t)w);
			fb.sent += (size_t)w;
			c += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return;
		visible = 0;
		if (!fz_run())
			stall++;
	}
	if (n > 0)
		fb.lost = 1; /* a reply cut short */
	/* Anything still in our socket did not reach the proxy with the rest. */
	if (ioctl(fb.fd, SIOCOUTQNSD, &unsent) != 0 || unsent > 0)
		visible = 0;
	if (fb.replies > 1 + fb.cmds && fb.replies > before && !fb.lost) {
		if (!visible) {
			fb.lost = 1; /* the proxy may take it for the next reply */
		} else if (owed) {
			fz_trace("-- surplus: %u replies for %u commands and the banner",
			    fb.replies, fb.cmds);
			fb.surplus = 1;
		} else {
			fb.unasked = 1;
		}
	}
}

/* fb_track_sent - follow what the backend sends as replies, while it
 * clearly is: the proxy takes every such line as we do */
static void
fb_track_sent(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		if (c == '\n') {
			fb_reply_line();
			continue;
		}
		if (fb.rlen < sizeof(fb.rline))
			fb.rline[fb.rlen++] = c;
		else
			fb.rbad = 1;
	}
	if (fb.rlen > FB_CLEAR_LINE_MAX)
		fb.lost = 1;
}

/* fb_reply_line - one line sent: count a complete reply, or lose count */
static void
fb_reply_line(void)
{
	const char *l = fb.rline;
	size_t len = fb.rlen;
	int code;

	fb.rlen = 0;
	if (len > 0 && l[len - 1] == '\r')
		len--;
	for (size_t i = 0; i < len; i++) {
		unsigned char u = (unsigned char)l[i];
		if ((u < 0x20 && u != '\t') || u == 0x7f)
			fb.rbad = 1;
	}
	if (fb.rbad || len < 3 || len > FB_CLEAR_LINE_MAX || l[0] < '2' || l[0] > '5' ||
	    l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' ||
	    (len > 3 && l[3] != ' ' && l[3] != '-')) {
		fb.rbad = 0;
		fb.lost = 1;
		return;
	}
	code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	fb.rtotal += len;
	if (fb.rlines > 0 && len > 4) /* the first line is the greeting */
		fb_ehlo_keyword(l + 4, len - 4);
	if ((fb.rmulti && code != fb.rcode) || ++fb.rlines > FB_CLEAR_LINES_MAX ||
	    fb.rtotal > FB_CLEAR_TEXT_MAX) {
		fb.lost = 1;
		return;
	}
	if (len > 3 && l[3] == '-') {
		fb.rmulti = 1;
		fb.rcode = code;
		return;
	}
	/* Reply n answers command n; a 354 to DATA opens the message; a 2xx
	 * to EHLO says what the proxy may use from now on. */
	if (fb.replies >= 1 && fb.replies <= fb.cmds && fb.kind[fb.replies] == K_DATA &&
	    code == 354)
		fb.in_data = 1;
	if (fb.replies >= 1 && fb.replies <= fb.cmds && fb.kind[fb.replies] == K_EHLO &&
	    code / 100 == 2) {
		fb.pipelining = fb.ehlo_pipelining;
		fb.chunking = fb.ehlo_chunking;
	}
	fb.ehlo_pipelining = fb.ehlo_chunking = 0;
	fb.replies++;
	fb.last_code = code;
	fb.rmulti = 0;
	fb.rlines = 0;
	fb.rtotal = 0;
}

/* fb_ehlo_keyword - a reply line's text: PIPELINING or CHUNKING, as the
 * proxy reads an EHLO keyword (any case, maybe with arguments) */
static void
fb_ehlo_keyword(const char *t, size_t len)
{
	if (len >= 10 && strncasecmp(t, "PIPELINING", 10) == 0 && (len == 10 || t[10] == ' '))
		fb.ehlo_pipelining = 1;
	if (len >= 8 && strncasecmp(t, "CHUNKING", 8) == 0 && (len == 8 || t[8] == ' '))
		fb.ehlo_chunking = 1;
}

/* fb_may_pipeline - may a command of kind k go before the replies still
 * due? A MAIL or RCPT behind MAILs and RCPTs, to a backend that offered
 * PIPELINING, at most 16 unanswered (BACKEND_PIPELINE_MAX) */
static int
fb_may_pipeline(enum kind k)
{
	if ((k != K_MAIL && k != K_RCPT) || !fb.pipelining || 1 + fb.cmds - fb.replies >= 16)
		return 0;
	for (unsigned i = fb.replies; i <= fb.cmds; i++) {
		if (fb.vkind[i] != K_MAIL && fb.vkind[i] != K_RCPT)
			return 0;
	}
	return 1;
}

/* fb_answer - answer the commands not answered yet, each with the next
 * queued reply, else (unless waiting, or forced) a default */
static void
fb_answer(int force)
{
	static int answering; /* fb_send may run the loop, which answers */

	if (answering)
		return;
	answering = 1;
	while (fb.fd >= 0 && !fb.shut && fb.next_answer < 1 + fb.cmds) {
		const char *d;
		if (fb.replies > fb.next_answer && !fb.lost) {
			fb.next_answer++; /* sent out of turn already */
			continue;
		}
		if (queue_head < queue_tail) {
			fz_trace_bytes("B> answer", queue[queue_head].p, queue[queue_head].n);
			fb_send(queue[queue_head].p, queue[queue_head].n);
			queue_head++;
		} else if (!wait_mode || force) {
			d = fb_default((enum kind)fb.kind[fb.next_answer]);
			fz_trace_bytes("B> default", d, strlen(d));
			fb_send(d, strlen(d));
		} else {
			break;
		}
		fb.next_answer++;
	}
	answering = 0;
}

/* fb_default - a plausible answer: what Postfix would say */
static const char *
fb_default(enum kind k)
{
	switch (k) {
	case K_BANNER:
		return "220 backend.test ESMTP Postfix\r\n";
	case K_EHLO:
		return "250-backend.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
		       "250-ETRN\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n"
		       "250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN\r\n"
		       "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
		       "250 SMTPUTF8\r\n";
	case K_HELO:
		return "250 backend.test\r\n";
	case K_XCLIENT:
		return "220 backend.test ESMTP Postfix\r\n";
	case K_DATA:
		return "354 End data with <CR><LF>.<CR><LF>\r\n";
	case K_DOT:
	case K_BDAT:
		return "250 2.0.0 Ok: queued as 4FUZZ\r\n";
	case K_QUIT:
		return "221 2.0.0 Bye\r\n";
	case K_AUTH:
		return "334 \r\n";
	case K_AUTH_IR:
	case K_AUTH_ANSWER:
		return "235 2.7.0 Authentication successful\r\n";
	case K_AUTH_CANCEL:
		return "501 5.7.0 Authentication aborted\r\n";
	case K_STARTTLS:
		return "454 4.7.0 TLS not available due to local problem\r\n";
	case K_OTHER:
		return "502 5.5.2 Error: command not recognized\r\n";
	default:
		return "250 2.1.0 Ok\r\n";
	}
}

#pragma clang attribute pop
