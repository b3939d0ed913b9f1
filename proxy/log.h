/*
 * log.h - the daemon's log: stderr (default) or syslog, one session id on
 * every line that concerns a session (STYLE.md, 8).
 */
#ifndef PORTCULLIS_LOG_H
#define PORTCULLIS_LOG_H

#include <syslog.h>

#include "config.h"

/* The longest log line, without the time stamp and program prefix; a
 * longer message is cut, and says so (" ...[cut N octets]"). */
#define LOG_LINE_MAX 8192

void log_init(enum config_log where, int debug);

/* log_msg - one line; sid may be NULL for lines about the daemon itself. */
void log_msg(int prio, const char *sid, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_info(sid, ...) log_msg(LOG_INFO, sid, __VA_ARGS__)
#define log_warn(sid, ...) log_msg(LOG_WARNING, sid, __VA_ARGS__)
#define log_err(sid, ...) log_msg(LOG_ERR, sid, __VA_ARGS__)
#define log_debug(sid, ...) log_msg(LOG_DEBUG, sid, __VA_ARGS__)

/* log_quote - printable copy of untrusted bytes for a log line ("\xNN" escapes);
 * a copy cut to fit buf ends in "...". */
const char *log_quote(char *buf, size_t size, const char *s, size_t len);

/* log_clean - a copy for one log line: control bytes (CR, LF...) escaped. */
const char *log_clean(char *buf, size_t size, const char *s);

#endif
