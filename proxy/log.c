/*
 * log.c - log lines to stderr or syslog.
 *
 * Exports log_init, log_msg and log_quote. A line on stderr reads
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
	char msg[2048];
	va_list ap;
	int n = 0;

	if (prio == LOG_DEBUG && !log_debug_on)
		return;
	if (sid != NULL)
		n = snprintf(msg, sizeof(msg), "id=%s ", sid);
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);

	if (log_where == CONFIG_LOG_SYSLOG) {
		syslog(prio, "%s", msg);
		return;
	}
	struct timeval tv;
	struct tm tm;
	char ts[32];
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03dZ portcullis[%d]: %s: %s\n", ts, (int)(tv.tv_usec / 1000),
	    (int)getpid(), prio_name(prio), msg);
}

/* log_quote - make untrusted bytes safe for one log line */
const char *
log_quote(char *buf, size_t size, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < len && o + 5 < size; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
			buf[o++] = (char)c;
		} else {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		}
	}
	if (size > 0)
		buf[o < size ? o : size - 1] = '\0';
	return buf;
}
