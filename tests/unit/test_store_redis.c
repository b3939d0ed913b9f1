/*
 * test_store_redis.c - the Redis store (store_redis.c) through store.h,
 * against a real redis-server the test starts on a free loopback port
 * (forked, stopped by PID), and against fake servers (forked too) that
 * never answer or answer with garbage: round trips, incr's ttl only on
 * creation, command replies, AUTH and SELECT, a unix socket, an outage and
 * the reconnect after it, timeouts, cancels, a store closed from a done
 * callback, a hostile server, scan. The log is captured (--wrap=log_msg)
 * to check that an outage is logged once and the reconnect once.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "log.h"
#include "store.h"

#define REDIS_SERVER "/usr/bin/redis-server"
/* store_timeout in these tests: short, so that timeouts are quick. */
#define TIMEOUT_MS 300
/* The longest any one wait may take before the case fails. */
#define WAIT_MS 15000

/* ---- the log, captured ---- */

static char logbuf[1 << 16];
static size_t loglen;

void __wrap_log_msg(int prio, const char *sid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void
__wrap_log_msg(int prio, const char *sid, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (getenv("TEST_VERBOSE") != NULL)
		fprintf(stderr, "log: %s\n", line);
	if (loglen + strlen(line) + 2 < sizeof(logbuf)) {
		memcpy(logbuf + loglen, line, strlen(line));
		loglen += strlen(line);
		logbuf[loglen++] = '\n';
		logbuf[loglen] = '\0';
	}
}

static size_t
log_count(const char *needle)
{
	size_t n = 0;
	const char *p = logbuf;

	while ((p = strstr(p, needle)) != NULL) {
		n++;
		p += strlen(needle);
	}
	return n;
}

/* ---- servers ---- */

static struct event_base *base;
static char tmpdir[64];
static int main_port;
static pid_t main_pid;

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* listen_any - a listening socket on 127.0.0.1, port 0 unless port */
static int
listen_on(int port, int *bound)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 16), 0);
	getsockname(fd, (struct sockaddr *)&sin, &len);
	*bound = ntohs(sin.sin_port);
	return fd;
}

static int
free_port(void)
{
	int port, fd = listen_on(0, &port);

	close(fd);
	return port;
}

static int
port_open(int port)
{
	struct sockaddr_in sin;
	int fd, ok;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	close(fd);
	return ok;
}

/* redis_start - redis-server on port (with requirepass pass, a unix socket
 * sock, if not NULL), ready when this returns */
static pid_t
redis_start(int port, const char *pass, const char *sock)
{
	char p[16];
	const char *argv[24];
	int argc = 0, fd;
	uint64_t until;
	pid_t pid;

	snprintf(p, sizeof(p), "%d", port);
	argv[argc++] = REDIS_SERVER;
	argv[argc++] = "--bind";
	argv[argc++] = "127.0.0.1";
	argv[argc++] = "--port";
	argv[argc++] = p;
	argv[argc++] = "--save";
	argv[argc++] = "";
	argv[argc++] = "--appendonly";
	argv[argc++] = "no";
	argv[argc++] = "--dir";
	argv[argc++] = tmpdir;
	argv[argc++] = "--daemonize";
	argv[argc++] = "no";
	argv[argc++] = "--loglevel";
	argv[argc++] = "warning";
	if (pass != NULL) {
		argv[argc++] = "--requirepass";
		argv[argc++] = pass;
	}
	if (sock != NULL) {
		argv[argc++] = "--unixsocket";
		argv[argc++] = sock;
	}
	argv[argc] = NULL;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if ((fd = open("/dev/null", O_WRONLY)) >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(REDIS_SERVER, (char *const *)argv);
		_exit(127);
	}
	until = now_ms() + 10000;
	while (!port_open(port)) {
		if (now_ms() > until)
			fail_msg("redis-server did not start on port %d", port);
		sleep_ms(10);
	}
	return pid;
}

static void
stop_pid(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

/* fake_server - a server forked on a free port: it accepts one connection,
 * reads once, writes reply (if not NULL, len octets), then waits to be
 * killed. Connections after the first wait in the backlog, unanswered. */
static pid_t
fake_server(int *port, const char *reply, size_t len)
{
	int lfd = listen_on(0, port), fd;
	char buf[4096];
	size_t off = 0;
	ssize_t n;
	pid_t pid;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGPIPE, SIG_IGN);
		if ((fd = accept(lfd, NULL, NULL)) >= 0) {
			if (reply != NULL && read(fd, buf, sizeof(buf)) > 0)
				while (off < len && (n = write(fd, reply + off, len - off)) > 0)
					off += (size_t)n;
		}
		for (;;)
			pause();
	}
	close(lfd);
	return pid;
}

/* ---- the loop ---- */

/* What done() saw. */
struct seen {
	int calls;
	enum pc_store_status status;
	char value[256];
	size_t len;
	long long number;
	char error[512];
	char reply[1024]; /* store_command: the reply, written out */
};

static void
reply_text(const struct pc_store_reply *r, char *buf, size_t size)
{
	size_t n = strlen(buf);

	switch (r->type) {
	case PC_REPLY_NIL:
		snprintf(buf + n, size - n, "nil");
		break;
	case PC_REPLY_INTEGER:
		snprintf(buf + n, size - n, "%lld", r->integer);
		break;
	case PC_REPLY_STRING:
		snprintf(buf + n, size - n, "\"%.*s\"", (int)r->len, r->str);
		break;
	case PC_REPLY_STATUS:
		snprintf(buf + n, size - n, "+%.*s", (int)r->len, r->str);
		break;
	case PC_REPLY_ERROR:
		snprintf(buf + n, size - n, "-%.*s", (int)r->len, r->str);
		break;
	case PC_REPLY_ARRAY:
		snprintf(buf + n, size - n, "[");
		for (size_t i = 0; i < r->elements; i++) {
			if (i > 0)
				snprintf(buf + strlen(buf), size - strlen(buf), ",");
			reply_text(r->element[i], buf, size);
		}
		snprintf(buf + strlen(buf), size - strlen(buf), "]");
		break;
	}
}

static void
record(void *arg, const struct pc_store_result *r)
{
	struct seen *s = arg;

	s->calls++;
	s->status = r->status;
	s->len = r->len;
	s->number = r->number;
	s->value[0] = s->error[0] = s->reply[0] = '\0';
	if (r->value != NULL)
		snprintf(s->value, sizeof(s->value), "%.*s", (int)r->len, r->value);
	if (r->error != NULL)
		snprintf(s->error, sizeof(s->error), "%s", r->error);
	if (r->reply != NULL)
		reply_text(r->reply, s->reply, sizeof(s->reply));
}

static void
tick(evutil_socket_t fd, short what, void *arg)
{
}

/* run_until - turn the loop until *calls reaches n (or fail after WAIT_MS) */
static void
run_until(int *calls, int n)
{
	uint64_t until = now_ms() + WAIT_MS;

	while (*calls < n) {
		if (now_ms() > until)
			fail_msg("waited %d ms for a callback", WAIT_MS);
		event_base_loop(base, EVLOOP_ONCE);
	}
}

/* run_for - turn the loop for ms */
static void
run_for(long ms)
{
	uint64_t until = now_ms() + (uint64_t)ms;

	while (now_ms() < until)
		event_base_loop(base, EVLOOP_ONCE);
}

#define K(s) (s), strlen(s)

static struct pc_store *
open_spec(const char *spec)
{
	char err[256];
	struct pc_store *st = store_open(spec, err, sizeof(err));

	if (st == NULL)
		fail_msg("open %s: %s", spec, err);
	return st;
}

static struct pc_store *
open_db(int port, int db)
{
	char spec[128];

	snprintf(spec, sizeof(spec), "redis://127.0.0.1:%d/%d", port, db);
	return open_spec(spec);
}

/* cmd - store_command with the loop run until its done */
static void
cmd(struct pc_store *st, struct seen *s, int argc, ...)
{
	const char *argv[16];
	size_t lens[16];
	va_list ap;
	int calls = s->calls;

	va_start(ap, argc);
	for (int i = 0; i < argc; i++) {
		argv[i] = va_arg(ap, const char *);
		lens[i] = strlen(argv[i]);
	}
	va_end(ap);
	store_command(st, (size_t)argc, argv, lens, record, s);
	run_until(&s->calls, calls + 1);
}

static int
group_setup(void **state)
{
	struct store_settings set = {.timeout_ms = TIMEOUT_MS, .max_size = 1 << 20};
	struct event *t;
	struct timeval tv = {0, 20000};

	signal(SIGPIPE, SIG_IGN);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_store_redis.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	base = event_base_new();
	/* A tick, so EVLOOP_ONCE returns now and then. */
	t = event_new(base, -1, EV_PERSIST, tick, NULL);
	event_add(t, &tv);
	*state = t;
	store_configure(base, &set);
	main_port = free_port();
	main_pid = redis_start(main_port, NULL, NULL);
	return 0;
}

static int
group_teardown(void **state)
{
	char rm[128];

	store_close_all();
	stop_pid(main_pid);
	event_free(*state);
	event_base_free(base);
	snprintf(rm, sizeof(rm), "rm -rf %s", tmpdir);
	if (system(rm) != 0)
		return -1;
	return 0;
}

/* ---- cases ---- */

static void
test_bad_specs(void **state)
{
	static const char *const bad[] = {
	    "redis:",
	    "redis:/127.0.0.1",
	    "redis://",
	    "redis://127.0.0.1:0",
	    "redis://127.0.0.1:65536",
	    "redis://127.0.0.1:",
	    "redis://127.0.0.1:12x",
	    "redis://127.0.0.1:6379/x",
	    "redis://127.0.0.1:6379/-1",
	    "redis://127.0.0.1:6379/99999999999",
	    "redis://127.0.0.1:6379/0?db=1",
	    "redis://127.0.0.1:6379/0/1",
	    "redis://password@127.0.0.1",
	    "redis://:@127.0.0.1",
	    "redis://:p@ss@127.0.0.1",
	    "redis://:pa/ss@127.0.0.1",
	    "redis://:%zz@127.0.0.1",
	    "redis://:%0a@127.0.0.1",
	    "redis://[::1",
	    "redis://[zz]:6379",
	    "redis://[]:6379",
	    "redis://bad host",
	    "unix:",
	    "unix:relative/path",
	    "unix:/tmp/x?db=a",
	    "unix:/tmp/x?db=",
	    "unix:/tmp/x?foo=1",
	};
	char err[256], spec[300];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (store_open(bad[i], err, sizeof(err)) != NULL)
			fail_msg("%s opened", bad[i]);
		assert_true(err[0] != '\0');
	}
	memset(spec, 0, sizeof(spec));
	snprintf(spec, sizeof(spec), "unix:/%0200d", 0);
	assert_null(store_open(spec, err, sizeof(err)));
	assert_non_null(strstr(err, "longer"));
}

static void
test_good_specs(void **state)
{
	static const char *const good[] = {
	    "redis://127.0.0.1",
	    "redis://127.0.0.1:1/",
	    "redis://127.0.0.1:2/15",
	    "redis://[::1]:3/2",
	    "redis://localhost:4",
	    "redis://:secret@127.0.0.1:5/0",
	    "redis://me:se%2Fc%40ret@127.0.0.1:6/0",
	    "unix:/nonexistent/redis.sock",
	    "unix:/nonexistent/redis.sock?db=3",
	};
	struct pc_store *st;
	char err[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if ((st = store_open(good[i], err, sizeof(err))) == NULL)
			fail_msg("%s: %s", good[i], err);
		assert_null(strstr(store_name(st), "secret"));
		assert_null(strstr(store_name(st), "ret"));
		store_release(st);
	}
}

static void
test_round_trips(void **state)
{
	struct pc_store *st = open_db(main_port, 0);
	struct seen s = {0};

	store_get(st, K("rt:a"), record, &s);
	run_until(&s.calls, 1);
	assert_int_equal(s.status, PC_STORE_MISSING);
	store_set(st, K("rt:a"), "hello", 5, 0, 0, record, &s);
	run_until(&s.calls, 2);
	assert_int_equal(s.status, PC_STORE_OK);
	store_get(st, K("rt:a"), record, &s);
	run_until(&s.calls, 3);
	assert_int_equal(s.status, PC_STORE_OK);
	assert_string_equal(s.value, "hello");
	assert_int_equal(s.len, 5);
	/* NX on an existing key, then on a new one */
	store_set(st, K("rt:a"), "other", 5, 0, PC_STORE_NX, record, &s);
	run_until(&s.calls, 4);
	assert_int_equal(s.status, PC_STORE_EXISTS);
	store_get(st, K("rt:a"), record, &s);
	run_until(&s.calls, 5);
	assert_string_equal(s.value, "hello");
	store_set(st, K("rt:b"), "new", 3, 60000, PC_STORE_NX, record, &s);
	run_until(&s.calls, 6);
	assert_int_equal(s.status, PC_STORE_OK);
	cmd(st, &s, 2, "PTTL", "rt:b");
	assert_true(atoll(s.reply) > 0 && atoll(s.reply) <= 60000);
	/* binary keys and values */
	store_set(st, "rt:\0bin", 7, "v\0\r\n", 4, 0, 0, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_OK);
	store_get(st, "rt:\0bin", 7, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_OK);
	assert_int_equal(s.len, 4);
	/* del */
	store_del(st, K("rt:a"), record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_OK);
	store_del(st, K("rt:a"), record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_MISSING);
	store_get(st, K("rt:a"), record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_MISSING);
	/* a ttl expires */
	store_set(st, K("rt:short"), "x", 1, 50, 0, record, &s);
	run_until(&s.calls, s.calls + 1);
	sleep_ms(80);
	store_get(st, K("rt:short"), record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_MISSING);
	store_release(st);
}

static void
test_incr(void **state)
{
	struct pc_store *st = open_db(main_port, 0);
	struct seen s = {0};
	long long ttl;

	store_incr(st, K("in:plain"), 1, 0, record, &s);
	run_until(&s.calls, 1);
	assert_int_equal(s.status, PC_STORE_OK);
	assert_int_equal(s.number, 1);
	store_incr(st, K("in:plain"), -5, 0, record, &s);
	run_until(&s.calls, 2);
	assert_int_equal(s.number, -4);
	cmd(st, &s, 2, "PTTL", "in:plain");
	assert_string_equal(s.reply, "-1");
	/* with a ttl: set on creation only */
	store_incr(st, K("in:ttl"), 3, 60000, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_OK);
	assert_int_equal(s.number, 3);
	cmd(st, &s, 2, "PTTL", "in:ttl");
	ttl = atoll(s.reply);
	assert_true(ttl > 0 && ttl <= 60000);
	cmd(st, &s, 3, "PEXPIRE", "in:ttl", "30000");
	store_incr(st, K("in:ttl"), 3, 60000, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.number, 6);
	cmd(st, &s, 2, "PTTL", "in:ttl");
	assert_true(atoll(s.reply) <= 30000);
	/* by 0 on a missing key creates it, with the ttl */
	store_incr(st, K("in:zero"), 0, 60000, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_OK);
	assert_int_equal(s.number, 0);
	cmd(st, &s, 2, "PTTL", "in:zero");
	assert_true(atoll(s.reply) > 0);
	/* a key that exists with 0 and no ttl gets none: it was not created */
	store_set(st, K("in:was0"), "0", 1, 0, 0, record, &s);
	run_until(&s.calls, s.calls + 1);
	store_incr(st, K("in:was0"), 0, 60000, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.number, 0);
	store_incr(st, K("in:was0"), 2, 60000, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.number, 2);
	cmd(st, &s, 2, "PTTL", "in:was0");
	assert_string_equal(s.reply, "-1");
	/* negative on a new key, with a ttl */
	store_incr(st, K("in:neg"), -7, 60000, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.number, -7);
	/* not an integer, with and without a ttl; a list */
	store_set(st, K("in:text"), "abc", 3, 0, 0, record, &s);
	run_until(&s.calls, s.calls + 1);
	store_incr(st, K("in:text"), 1, 0, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "not an integer"));
	store_incr(st, K("in:text"), 1, 1000, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "not an integer"));
	cmd(st, &s, 3, "RPUSH", "in:list", "x");
	store_incr(st, K("in:list"), 1, 0, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "WRONGTYPE"));
	store_get(st, K("in:list"), record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "WRONGTYPE"));
	/* the store still works after errors */
	store_get(st, K("in:plain"), record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_string_equal(s.value, "-4");
	store_release(st);
}

static void
test_command(void **state)
{
	struct pc_store *st = open_db(main_port, 0);
	struct seen s = {0};

	cmd(st, &s, 1, "PING");
	assert_int_equal(s.status, PC_STORE_OK);
	assert_string_equal(s.reply, "+PONG");
	cmd(st, &s, 2, "GET", "cmd:none");
	assert_string_equal(s.reply, "nil");
	cmd(st, &s, 4, "RPUSH", "cmd:l", "a", "b");
	assert_string_equal(s.reply, "2");
	cmd(st, &s, 4, "LRANGE", "cmd:l", "0", "-1");
	assert_string_equal(s.reply, "[\"a\",\"b\"]");
	cmd(st, &s, 3, "EVAL", "return {1, {'a', {2, 'b', {}}}, 'x'}", "0");
	assert_int_equal(s.status, PC_STORE_OK);
	assert_string_equal(s.reply, "[1,[\"a\",[2,\"b\",[]]],\"x\"]");
	cmd(st, &s, 3, "EVAL",
	    "return {1, redis.status_reply('FINE'), redis.error_reply('ERR boom')}", "0");
	assert_string_equal(s.reply, "[1,+FINE,-ERR boom]");
	/* a command error: the store is fine */
	cmd(st, &s, 1, "NOSUCHCOMMAND");
	assert_int_equal(s.status, PC_STORE_OK);
	assert_true(s.reply[0] == '-');
	assert_non_null(strstr(s.reply, "unknown command"));
	/* commands that would break the shared connection */
	cmd(st, &s, 2, "SUBSCRIBE", "x");
	assert_int_equal(s.status, PC_STORE_FAILED);
	cmd(st, &s, 1, "multi");
	assert_int_equal(s.status, PC_STORE_FAILED);
	cmd(st, &s, 2, "select", "1");
	assert_int_equal(s.status, PC_STORE_FAILED);
	cmd(st, &s, 3, "CLIENT", "REPLY", "OFF");
	assert_int_equal(s.status, PC_STORE_FAILED);
	cmd(st, &s, 6, "XREAD", "BLOCK", "0", "STREAMS", "s", "$");
	assert_int_equal(s.status, PC_STORE_FAILED);
	cmd(st, &s, 1, "PING");
	assert_string_equal(s.reply, "+PONG");
	store_release(st);
}

static void
test_auth(void **state)
{
	int port = free_port();
	pid_t pid = redis_start(port, "s3cret", NULL);
	char spec[128];
	struct pc_store *st;
	struct seen s = {0};

	snprintf(spec, sizeof(spec), "redis://:s3cret@127.0.0.1:%d/0", port);
	st = open_spec(spec);
	assert_null(strstr(store_name(st), "s3cret"));
	store_set(st, K("auth:k"), "v", 1, 0, 0, record, &s);
	run_until(&s.calls, 1);
	assert_int_equal(s.status, PC_STORE_OK);
	store_release(st);
	/* ACL form: the default user */
	snprintf(spec, sizeof(spec), "redis://default:s3cret@127.0.0.1:%d/0", port);
	st = open_spec(spec);
	store_get(st, K("auth:k"), record, &s);
	run_until(&s.calls, 2);
	assert_int_equal(s.status, PC_STORE_OK);
	assert_string_equal(s.value, "v");
	store_release(st);
	/* wrong password */
	snprintf(spec, sizeof(spec), "redis://:wrong@127.0.0.1:%d/0", port);
	st = open_spec(spec);
	store_get(st, K("auth:k"), record, &s);
	run_until(&s.calls, 3);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "AUTH failed"));
	assert_null(strstr(s.error, "wrong"));
	store_release(st);
	/* none */
	snprintf(spec, sizeof(spec), "redis://127.0.0.1:%d/0", port);
	st = open_spec(spec);
	store_get(st, K("auth:k"), record, &s);
	run_until(&s.calls, 4);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "NOAUTH"));
	store_release(st);
	assert_null(strstr(logbuf, "s3cret"));
	stop_pid(pid);
}

static void
test_select_and_unix(void **state)
{
	int port = free_port();
	char sock[128], spec[200];
	pid_t pid;
	struct pc_store *db3, *db0, *ux;
	struct seen s = {0};

	snprintf(sock, sizeof(sock), "%s/redis.sock", tmpdir);
	pid = redis_start(port, NULL, sock);
	db3 = open_db(port, 3);
	db0 = open_db(port, 0);
	store_set(db3, K("sel:k"), "three", 5, 0, 0, record, &s);
	run_until(&s.calls, 1);
	assert_int_equal(s.status, PC_STORE_OK);
	store_get(db0, K("sel:k"), record, &s);
	run_until(&s.calls, 2);
	assert_int_equal(s.status, PC_STORE_MISSING);
	snprintf(spec, sizeof(spec), "unix:%s?db=3", sock);
	ux = open_spec(spec);
	store_get(ux, K("sel:k"), record, &s);
	run_until(&s.calls, 3);
	assert_int_equal(s.status, PC_STORE_OK);
	assert_string_equal(s.value, "three");
	store_release(ux);
	snprintf(spec, sizeof(spec), "unix:%s", sock);
	ux = open_spec(spec);
	store_get(ux, K("sel:k"), record, &s);
	run_until(&s.calls, 4);
	assert_int_equal(s.status, PC_STORE_MISSING);
	store_release(ux);
	store_release(db3);
	store_release(db0);
	stop_pid(pid);
}

static void
test_outage_and_reconnect(void **state)
{
	int port = free_port();
	pid_t pid = redis_start(port, NULL, NULL);
	struct pc_store *st = open_db(port, 0);
	char lost[128], up[128];
	struct seen s = {0};
	uint64_t t0, until;
	int calls;

	snprintf(lost, sizeof(lost), "redis://127.0.0.1:%d/0: connection lost", port);
	snprintf(up, sizeof(up), "redis://127.0.0.1:%d/0: connected", port);
	store_set(st, K("out:k"), "v", 1, 0, 0, record, &s);
	run_until(&s.calls, 1);
	assert_int_equal(s.status, PC_STORE_OK);
	assert_int_equal(log_count(up), 1);
	stop_pid(pid);
	/* The first request after the stop fails, promptly. */
	t0 = now_ms();
	store_get(st, K("out:k"), record, &s);
	run_until(&s.calls, 2);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_true(now_ms() - t0 < TIMEOUT_MS * 2);
	/* While down a request fails before store_get returns. */
	run_for(20);
	calls = s.calls;
	assert_null(store_get(st, K("out:k"), record, &s));
	assert_int_equal(s.calls, calls + 1);
	assert_int_equal(s.status, PC_STORE_FAILED);
	assert_non_null(strstr(s.error, "not connected"));
	/* Several failed attempts (100, 200, 400 ms...): logged once. */
	run_for(800);
	assert_int_equal(log_count(lost), 1);
	/* Back on the same port: requests succeed without reopening. */
	pid = redis_start(port, NULL, NULL);
	until = now_ms() + WAIT_MS;
	do {
		calls = s.calls;
		store_get(st, K("out:k"), record, &s);
		run_until(&s.calls, calls + 1);
		if (s.status != PC_STORE_FAILED)
			break;
		run_for(50);
	} while (now_ms() < until);
	assert_int_equal(s.status, PC_STORE_MISSING); /* a fresh server: no data */
	assert_int_equal(log_count(up), 2);
	assert_int_equal(log_count(lost), 1);
	store_set(st, K("out:k"), "again", 5, 0, 0, record, &s);
	run_until(&s.calls, s.calls + 1);
	assert_int_equal(s.status, PC_STORE_OK);
	store_release(st);
	stop_pid(pid);
}

static void
test_timeout(void **state)
{
	int port;
	pid_t pid = fake_server(&port, NULL, 0);
	struct pc_store *st = open_db(port, 0);
	struct seen s = {0};
	char want[64];

	store_get(st, K("to:k"), record, &s);
	run_until(&s.calls, 1);
	assert_int_equal(s.status, PC_STORE_FAILED);
	snprintf(want, sizeof(want), "timed out after %dms", TIMEOUT_MS);
	assert_string_equal(s.error, want);
	/* right after, the store is down: at once */
	store_get(st, K("to:k"), record, &s);
	assert_int_equal(s.calls, 2);
	assert_int_equal(s.status, PC_STORE_FAILED);
	store_release(st);
	stop_pid(pid);
}

static void
test_cancel(void **state)
{
	int port;
	pid_t pid = fake_server(&port, NULL, 0);
	struct pc_store *st = open_db(port, 0), *real = open_db(main_port, 0);
	struct seen a = {0}, b = {0};
	struct pc_store_req *req;

	/* A silent server: cancelled, then the connection times out. */
	req = store_get(st, K("ca:k"), record, &a);
	assert_non_null(req);
	store_get(st, K("ca:k2"), record, &b);
	store_cancel(req);
	run_until(&b.calls, 1);
	assert_int_equal(b.status, PC_STORE_FAILED);
	assert_int_equal(a.calls, 0);
	/* A real server: the reply comes, and goes nowhere. */
	req = store_set(real, K("ca:k"), "v", 1, 0, 0, record, &a);
	assert_non_null(req);
	store_cancel(req);
	req =
	    store_command(real, 1, (const char *const[]){"PING"}, (const size_t[]){4}, record, &a);
	store_cancel(req);
	store_get(real, K("ca:k"), record, &b);
	run_until(&b.calls, 2);
	assert_int_equal(b.status, PC_STORE_OK); /* the cancelled set did run */
	assert_int_equal(a.calls, 0);
	store_release(st);
	store_release(real);
	stop_pid(pid);
}

/* A done callback that closes its store, from inside hiredis's callback. */
struct closer {
	struct pc_store *st;
	int calls;
	int resubmit;
	struct seen s;
};

static void
close_in_done(void *arg, const struct pc_store_result *r)
{
	struct closer *c = arg;

	c->calls++;
	if (c->resubmit)
		store_get(c->st, K("x"), record, &c->s);
	store_release(c->st);
}

static void
test_close_in_done(void **state)
{
	int port;
	pid_t pid;
	struct closer c = {0}, d = {0};

	/* on a reply */
	c.st = open_db(main_port, 7);
	c.resubmit = 1;
	store_get(c.st, K("cl:k"), close_in_done, &c);
	store_get(c.st, K("cl:k2"), record, &c.s); /* failed by the close */
	run_until(&c.calls, 1);
	assert_int_equal(c.s.calls, 2);
	/* on a timeout */
	pid = fake_server(&port, NULL, 0);
	d.st = open_db(port, 0);
	store_get(d.st, K("cl:k"), close_in_done, &d);
	store_get(d.st, K("cl:k2"), record, &d.s);
	run_until(&d.calls, 1);
	run_for(20);
	assert_int_equal(d.s.calls, 1);
	stop_pid(pid);
}

/* hostile - a server answering reply: the request fails (or, if
 * !must_fail, completes somehow), once, and nothing crashes */
static void
hostile(const char *what, const char *reply, size_t len, int must_fail)
{
	int port;
	pid_t pid = fake_server(&port, reply, len);
	struct pc_store *st = open_db(port, 0);
	struct seen s = {0};

	store_get(st, K("ho:k"), record, &s);
	run_until(&s.calls, 1);
	if (must_fail && s.status != PC_STORE_FAILED)
		fail_msg("%s: status %d", what, s.status);
	/* and nothing more comes of it */
	run_for(50);
	assert_int_equal(s.calls, 1);
	store_release(st);
	stop_pid(pid);
}

static void
test_hostile_server(void **state)
{
	char buf[512];
	char *big;
	size_t n = 0;

	hostile("garbage", "!!garbage\r\n", 11, 1);
	hostile("binary", "\x00\x01\x02\xff\r\n", 6, 1);
	hostile("an unsolicited reply", "+OK\r\n+OK\r\n+OK\r\n+OK\r\n", 20, 1);
	hostile("an unsolicited error", "+OK\r\n-ERR x\r\n-ERR y\r\n", 20, 1);
	hostile("a long array", "+OK\r\n*2000000\r\n", 15, 1);
	hostile("a negative array", "+OK\r\n*-7\r\n:1\r\n", 14, 1);
	hostile("a negative bulk", "+OK\r\n$-7\r\n", 10, 1);
	hostile("a bulk with no end", "+OK\r\n$9223372036854775807\r\nabc", 30, 1);
	hostile("a bulk past LLONG_MAX", "+OK\r\n$99999999999999999999999\r\nabc", 35, 1);
	for (int i = 0; i < 20; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "*1\r\n");
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, ":1\r\n");
	hostile("deeply nested arrays", buf, n, 1);
	/* a bulk past REDIS_READ_MAX, sent whole */
	n = 17 * 1024 * 1024;
	big = malloc(n + 64);
	assert_non_null(big);
	memset(big, 'x', n + 64);
	memcpy(big, "+OK\r\n$20000000\r\n", 16);
	hostile("a huge bulk", big, n + 64, 1);
	free(big);
}

/* scan */
struct scanned {
	char keys[1024];
	int n, stop_after, done_calls;
	char error[256];
};

static int
scan_each(void *arg, const char *key, size_t klen, const char *value, size_t vlen, int64_t ttl_ms)
{
	struct scanned *sc = arg;
	size_t l = strlen(sc->keys);

	snprintf(sc->keys + l, sizeof(sc->keys) - l, "%.*s=%.*s/%s;", (int)klen, key, (int)vlen,
	    value, ttl_ms == -1 ? "none" : (ttl_ms > 0 ? "ttl" : "?"));
	return ++sc->n == sc->stop_after;
}

static void
scan_done(void *arg, const char *error)
{
	struct scanned *sc = arg;

	sc->done_calls++;
	snprintf(sc->error, sizeof(sc->error), "%s", error != NULL ? error : "");
}

static void
test_scan(void **state)
{
	struct pc_store *st = open_db(main_port, 9);
	struct scanned sc = {0};
	struct seen s = {0};
	char key[32];

	store_set(st, K("sc:a*1"), "one", 3, 0, 0, record, &s);
	store_set(st, K("sc:a*2"), "two", 3, 60000, 0, record, &s);
	store_set(st, K("sc:ab"), "no", 2, 0, 0, record, &s);
	store_set(st, K("sc:a?"), "no", 2, 0, 0, record, &s);
	cmd(st, &s, 3, "RPUSH", "sc:a*list", "x"); /* not a string: left out */
	run_until(&s.calls, 5);
	store_scan(st, K("sc:a*"), scan_each, scan_done, &sc);
	run_until(&sc.done_calls, 1);
	assert_string_equal(sc.error, "");
	assert_int_equal(sc.n, 2);
	assert_non_null(strstr(sc.keys, "sc:a*1=one/none;"));
	assert_non_null(strstr(sc.keys, "sc:a*2=two/ttl;"));
	/* many keys, several SCAN steps; stop early */
	for (int i = 0; i < 2500; i++) {
		snprintf(key, sizeof(key), "sc:many:%d", i);
		store_set(st, key, strlen(key), "v", 1, 0, 0, record, &s);
	}
	run_until(&s.calls, 5 + 2500);
	memset(&sc, 0, sizeof(sc));
	store_scan(st, K("sc:many:"), scan_each, scan_done, &sc);
	run_until(&sc.done_calls, 1);
	assert_int_equal(sc.n, 2500);
	assert_string_equal(sc.error, "");
	memset(&sc, 0, sizeof(sc));
	sc.stop_after = 3;
	store_scan(st, K("sc:many:"), scan_each, scan_done, &sc);
	run_until(&sc.done_calls, 1);
	run_for(20);
	assert_int_equal(sc.n, 3);
	assert_int_equal(sc.done_calls, 1);
	store_release(st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_specs),
	    cmocka_unit_test(test_good_specs),
	    cmocka_unit_test(test_round_trips),
	    cmocka_unit_test(test_incr),
	    cmocka_unit_test(test_command),
	    cmocka_unit_test(test_auth),
	    cmocka_unit_test(test_select_and_unix),
	    cmocka_unit_test(test_outage_and_reconnect),
	    cmocka_unit_test(test_timeout),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_close_in_done),
	    cmocka_unit_test(test_hostile_server),
	    cmocka_unit_test(test_scan),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
