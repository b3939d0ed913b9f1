/*
 * log.c - log lines to stderr or syslog.
 *
 * Exports log_init, log_msg, log_quote and log_clean. A line on stderr reads
 * "2026-11-23T07:46:00.123Z portcullis[PID]: info: id=SID message"; syslog
 * gets the part after the level. Untrusted text goes through log_quote first,
 * so a peer cannot forge log lines.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static enum config_log log_where = CONFIG_LOG_STDERR;
static int log_debug_on;
static int log_pid;
static time_t log_last_sec = -1;
static char log_stamp[32];

/* log_init - choose where lines go */
void
log_init(enum config_log where, int debug)
{
	if (log_where == CONFIG_LOG_SYSLOG && where != CONFIG_LOG_SYSLOG)
		closelog();
	if (where == CONFIG_LOG_SYSLOG && log_where != CONFIG_LOG_SYSLOG)
		openlog("portcullis", LOG_PID | LOG_NDELAY, LOG_MAIL);
	log_where = where;
	log_debug_on = debug;
	log_pid = (int)getpid();
}

static const char *
prio_name(int prio)
{
	switch (prio) {
	case LOG_ERR:
		return "error";
	case LOG_WARNING:
		return "warning";
	case LOG_DEBUG:
		return "debug";
	default:
		return "info";
	}
}

/* log_msg - write one line */
void
log_msg(int prio, const char *sid, const char *fmt, ...)
{
	char msg[LOG_LINE_MAX];
	va_list ap;
	int n = 0, m;

	if (prio == LOG_DEBUG && !log_debug_on)
		return;
	if (sid != NULL)
		n = snprintf(msg, sizeof(msg), "id=%s ", sid);
	if (n < 0 || (size_t)n >= sizeof(msg))
		n = 0;
	va_start(ap, fmt);
	m = vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	if (m > 0 && (size_t)m >= sizeof(msg) - (size_t)n) {
		/* Never cut silently: say so, and how much was lost. Callers
		 * with long lists split them (tx_log) so this is a last resort. */
		char mark[48];
		int k = snprintf(mark, sizeof(mark), " ...[cut %zu octets]",
		    (size_t)m - (sizeof(msg) - (size_t)n - 1));
		if (k > 0)
			memcpy(msg + sizeof(msg) - 1 - (size_t)k, mark, (size_t)k + 1);
	}

	if (log_where == CONFIG_LOG_SYSLOG) {
		syslog(prio, "%s", msg);
		return;
	}
	/* One write(2) a line: lines from several workers never interleave,
	 * and stderr stays unbuffered without costing a call per fragment. */
	struct timeval tv;
	struct tm tm;
	char line[LOG_LINE_MAX + 128];
	int len;
	if (log_pid == 0)
		log_pid = (int)getpid();
	gettimeofday(&tv, NULL);
	if (tv.tv_sec != log_last_sec) {
		gmtime_r(&tv.tv_sec, &tm);
		strftime(log_stamp, sizeof(log_stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		log_last_sec = tv.tv_sec;
	}
	len = snprintf(line, sizeof(line), "%s.%03dZ portcullis[%d]: %s: %s\n", log_stamp,
	    (int)(tv.tv_usec / 1000), log_pid, prio_name(prio), msg);
	if (len < 0)
		return;
	if ((size_t)len >= sizeof(line)) {
		len = (int)sizeof(line) - 1;
		line[len - 1] = '\n';
	}
	if (write(STDERR_FILENO, line, (size_t)len) < 0) {
		/* Nowhere left to report it. */
	}
}

/* escape - copy s for a log line, \xNN for bytes that keep() refuses */
static const char *
escape(char *buf, size_t size, const char *s, size_t len, int strict)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;

	if (size == 0)
		return buf;
	/* Room is kept for "..." so a cut copy says it is one. */
	for (i = 0; i < len && o + 5 + 3 < size; i++) {
		unsigned char c = (unsigned char)s[i];
		int keep = strict ? c >= 0x20 && c < 0x7f && c != '\\' && c != '"'
		                  : c >= 0x20 && c != 0x7f;
		if (keep) {
			buf[o++] = (char)c;
		} else {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		}
	}
	if (i < len && o + 3 < size) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o < size ? o : size - 1] = '\0';
	return buf;
}

/* log_quote - make untrusted bytes safe for one log line, inside quotes */
const char *
log_quote(char *buf, size_t size, const char *s, size_t len)
{
	return escape(buf, size, s, len, 1);
}

/* log_clean - text for one log line: control bytes escaped, the rest kept */
const char *
log_clean(char *buf, size_t size, const char *s)
{
	return escape(buf, size, s, strlen(s), 0);
}
