/*
 * notify.c - telling the service manager how the daemon is, and learning
 * how a reload went.
 *
 * Exports notify_ready, notify_reloading, notify_reloaded, notify_stopping,
 * notify_end and notify_reload_client (notify.h).
 *
 * Under systemd (Type=notify, $NOTIFY_SOCKET set) the daemon sends, with
 * libsystemd's sd_notify(3): READY=1 and MAINPID once the listeners are
 * bound; RELOADING=1 (with MONOTONIC_USEC=) when a SIGHUP is handled and
 * READY=1 after it, whatever its outcome; STOPPING=1 at SIGTERM/SIGINT; and
 * STATUS=, the open sessions (looked at every NOTIFY_STATUS_INTERVAL_S and
 * sent only when the count changed: nothing per connection), or "reload
 * failed: <why>" until a reload succeeds. Without $NOTIFY_SOCKET none of it
 * is sent.
 *
 * systemd 252 (Debian 12) has no Type=notify-reload, and with Type=notify
 * a reload is done when ExecReload= exits: its exit status is what
 * `systemctl reload` reports. So ExecReload= runs portcullis -R
 * (notify_reload_client), which sends SIGHUP and waits for the outcome. The
 * daemon tells it through a small state file in $RUNTIME_DIRECTORY
 * (RuntimeDirectory=portcullis): pid, a count of the reloads handled, the
 * last outcome and its reason, written whole to a temporary name and
 * renamed, so a reader sees the old file or the new one, never half of one.
 * -R reads the count, signals, and waits until the count grows (bounded by
 * NOTIFY_RELOAD_WAIT_MS, and by the daemon's life). A file, not a socket:
 * nothing to accept in the daemon, it outlives a crashed client, and an
 * admin can read it. Two reloads at once may each report the other's
 * outcome; both read the same file.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "server.h"

/* How often STATUS= is brought up to date (only if the count changed). */
#define NOTIFY_STATUS_INTERVAL_S 5
/* The reason of a failed reload kept for STATUS= and the state file: one
 * line of the log's error, cut. */
#define NOTIFY_ERROR_MAX 512
/* How often portcullis -R looks at the state file while it waits. */
#define NOTIFY_POLL_MS 20

struct notify_state {
	long pid;
	unsigned long reloads;
	char result[16];
	char error[NOTIFY_ERROR_MAX];
};

static struct server *notify_srv;
static struct event *status_timer;
static char rundir[PATH_MAX]; /* "": no state file */
static unsigned long reloads;
static char last_error[NOTIFY_ERROR_MAX]; /* "": the last reload was good */
static unsigned long status_sessions;
static int stopping;

static void notify_status_text(char *buf, size_t size);
static void notify_on_timer(evutil_socket_t fd, short what, void *arg);
static void notify_state_write(const char *result);
static void notify_one_line(char *dst, size_t size, const char *src);
static const char *notify_state_dir(void);
static int notify_state_read(const char *dir, struct notify_state *st);
static int notify_wait(const char *dir, pid_t pid, unsigned long before);
static void notify_sleep_ms(long ms);
static long notify_now_ms(void);

/* notify_one_line - src as one printable ASCII line: STATUS= must be UTF-8
 * and a newline would start another assignment */
static void
notify_one_line(char *dst, size_t size, const char *src)
{
	size_t i;

	for (i = 0; i + 1 < size && src[i] != '\0'; i++)
		dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
	dst[i] = '\0';
}

static void
notify_status_text(char *buf, size_t size)
{
	/* The open sessions of this process, or of every worker. */
	int64_t g = metrics_gauge_total(G_SESSIONS);
	unsigned long n = g > 0 ? (unsigned long)g : 0;

	status_sessions = n;
	if (stopping)
		snprintf(buf, size, "stopping: %lu session(s) finishing", n);
	else if (last_error[0] != '\0')
		snprintf(buf, size, "reload failed: %s; %lu session(s) open", last_error, n);
	else
		snprintf(buf, size, "serving: %lu session(s) open", n);
}

/* notify_on_timer - STATUS= again, if the session count changed */
static void
notify_on_timer(evutil_socket_t fd, short what, void *arg)
{
	char text[NOTIFY_ERROR_MAX + 64];

	if ((unsigned long)metrics_gauge_total(G_SESSIONS) == status_sessions)
		return;
	notify_status_text(text, sizeof(text));
	sd_notifyf(0, "STATUS=%s", text);
}

void
notify_ready(struct server *srv)
{
	const char *dir = getenv("RUNTIME_DIRECTORY");
	struct timeval tv = {NOTIFY_STATUS_INTERVAL_S, 0};
	char text[NOTIFY_ERROR_MAX + 64];

	notify_srv = srv;
	/* RuntimeDirectory= may name several, separated by colons: the
	 * first is ours. */
	if (dir != NULL && dir[0] == '/')
		snprintf(rundir, sizeof(rundir), "%.*s", (int)strcspn(dir, ":"), dir);
	/* The file first: once systemd hears READY, ExecReload= may run. */
	notify_state_write("started");
	notify_status_text(text, sizeof(text));
	sd_notifyf(0, "READY=1\nMAINPID=%lu\nSTATUS=%s", (unsigned long)getpid(), text);
	if (getenv("NOTIFY_SOCKET") == NULL)
		return;
	status_timer = event_new(srv->base, -1, EV_PERSIST, notify_on_timer, NULL);
	if (status_timer != NULL)
		evtimer_add(status_timer, &tv);
}

void
notify_reloading(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
	    (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

void
notify_reloaded(const char *error)
{
	char text[NOTIFY_ERROR_MAX + 64];

	reloads++;
	if (error != NULL)
		notify_one_line(
		    last_error, sizeof(last_error), error[0] ? error : "no reason given");
	else
		last_error[0] = '\0';
	notify_status_text(text, sizeof(text));
	/* READY=1 first: when -R sees the file and exits, systemd already
	 * has (or is about to read) the end of the reload. */
	sd_notifyf(0, "READY=1\nSTATUS=%s", text);
	notify_state_write(error != NULL ? "failed" : "ok");
}

void
notify_stopping(void)
{
	char text[NOTIFY_ERROR_MAX + 64];

	stopping = 1;
	notify_status_text(text, sizeof(text));
	sd_notifyf(0, "STOPPING=1\nSTATUS=%s", text);
}

void
notify_end(void)
{
	char path[PATH_MAX + 16];

	if (status_timer != NULL)
		event_free(status_timer);
	status_timer = NULL;
	if (rundir[0] != '\0') {
		snprintf(path, sizeof(path), "%s/" NOTIFY_STATE_FILE, rundir);
		unlink(path);
	}
	notify_srv = NULL;
}

/* notify_state_write - the state file, replaced whole */
static void
notify_state_write(const char *result)
{
	char path[PATH_MAX + 16], tmp[PATH_MAX + 16];
	FILE *f;
	int bad;

	if (rundir[0] == '\0')
		return;
	snprintf(path, sizeof(path), "%s/" NOTIFY_STATE_FILE, rundir);
	snprintf(tmp, sizeof(tmp), "%s/" NOTIFY_STATE_FILE ".tmp", rundir);
	if ((f = fopen(tmp, "w")) == NULL) {
		log_warn(NULL, "%s: %s: portcullis -R cannot learn how reloads go", tmp,
		    strerror(errno));
		return;
	}
	fprintf(f, "pid=%ld\nreloads=%lu\nresult=%s\nerror=%s\n", (long)getpid(), reloads, result,
	    last_error);
	bad = ferror(f);
	if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
		log_warn(
		    NULL, "%s: cannot write it: portcullis -R cannot learn how reloads go", path);
		unlink(tmp);
	}
}

/* notify_state_dir - where -R looks: $RUNTIME_DIRECTORY, else NOTIFY_RUNDIR */
static const char *
notify_state_dir(void)
{
	static char dir[PATH_MAX];
	const char *env = getenv("RUNTIME_DIRECTORY");

	if (env == NULL || env[0] != '/')
		return NOTIFY_RUNDIR;
	snprintf(dir, sizeof(dir), "%.*s", (int)strcspn(env, ":"), env);
	return dir;
}

/* notify_state_read - 0 with st filled, -1 (errno) if the file is not there
 * or says nothing we know */
static int
notify_state_read(const char *dir, struct notify_state *st)
{
	char path[PATH_MAX + 16], line[NOTIFY_ERROR_MAX + 16];
	FILE *f;
	int have_pid = 0, have_reloads = 0;

	memset(st, 0, sizeof(*st));
	snprintf(path, sizeof(path), "%s/" NOTIFY_STATE_FILE, dir);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "pid=", 4) == 0)
			have_pid = sscanf(line + 4, "%ld", &st->pid) == 1 && st->pid > 0;
		else if (strncmp(line, "reloads=", 8) == 0)
			have_reloads = sscanf(line + 8, "%lu", &st->reloads) == 1;
		else if (strncmp(line, "result=", 7) == 0)
			snprintf(st->result, sizeof(st->result), "%.15s", line + 7);
		else if (strncmp(line, "error=", 6) == 0)
			snprintf(st->error, sizeof(st->error), "%.511s", line + 6);
	}
	fclose(f);
	if (!have_pid || !have_reloads) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

int
notify_reload_client(void)
{
	const char *dir = notify_state_dir(), *mainpid = getenv("MAINPID");
	struct notify_state st;
	char *end;
	long pid;

	if (notify_state_read(dir, &st) != 0) {
		fprintf(stderr,
		    "portcullis -R: %s/" NOTIFY_STATE_FILE ": %s (is portcullis running, with "
		    "RuntimeDirectory= or $RUNTIME_DIRECTORY?)\n",
		    dir, errno == EINVAL ? "not a state file" : strerror(errno));
		return 1;
	}
	pid = st.pid;
	if (mainpid != NULL && mainpid[0] != '\0') {
		errno = 0;
		pid = strtol(mainpid, &end, 10);
		if (errno != 0 || *end != '\0' || pid <= 0) {
			fprintf(stderr, "portcullis -R: MAINPID=%s: not a process id\n", mainpid);
			return 1;
		}
		if (pid != st.pid) {
			fprintf(stderr,
			    "portcullis -R: %s/" NOTIFY_STATE_FILE
			    " is pid %ld's, not MAINPID %ld's\n",
			    dir, st.pid, pid);
			return 1;
		}
	}
	if (kill((pid_t)pid, SIGHUP) != 0) {
		fprintf(stderr, "portcullis -R: SIGHUP to pid %ld: %s\n", pid, strerror(errno));
		return 1;
	}
	return notify_wait(dir, (pid_t)pid, st.reloads);
}

/* notify_wait - until the daemon has handled one more reload than before */
static int
notify_wait(const char *dir, pid_t pid, unsigned long before)
{
	long deadline = notify_now_ms() + NOTIFY_RELOAD_WAIT_MS;
	struct notify_state st;

	for (;;) {
		if (notify_state_read(dir, &st) == 0 && st.pid == pid && st.reloads > before) {
			if (strcmp(st.result, "ok") == 0)
				return 0;
			fprintf(stderr, "portcullis -R: reload failed: %s\n",
			    st.error[0] ? st.error : "no reason given");
			return 1;
		}
		if (kill(pid, 0) != 0 && errno == ESRCH) {
			fprintf(
			    stderr, "portcullis -R: pid %ld ended during the reload\n", (long)pid);
			return 1;
		}
		if (notify_now_ms() >= deadline) {
			fprintf(stderr,
			    "portcullis -R: pid %ld did not finish the reload within %ds "
			    "(the log may say why)\n",
			    (long)pid, NOTIFY_RELOAD_WAIT_MS / 1000);
			return 1;
		}
		notify_sleep_ms(NOTIFY_POLL_MS);
	}
}

static void
notify_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static long
notify_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
