/*
 * log.h - the daemon's log: stderr (default) or syslog, as text or as one
 * JSON object a line (log_format), one session id on every line that
 * concerns a session (STYLE.md, 8).
 */
#ifndef PORTCULLIS_LOG_H
#define PORTCULLIS_LOG_H

#include <stddef.h>
#include <syslog.h>

#include "config.h"

/* The longest log line, without the time stamp and program prefix; a
 * longer message is cut, and says so (" ...[cut N octets]"). */
#define LOG_LINE_MAX 8192

/* The longest JSON line: room for a LOG_LINE_MAX message and the members
 * of a summary line, escaped. A longer one is cut and carries "cut": N,
 * the octets left out, so it is still one valid JSON object. */
#define LOG_JSON_MAX (8 * LOG_LINE_MAX)

/* The most a batch of lines holds before it is written at once. */
#define LOG_BATCH_MAX 65536

struct event_base;

void log_init(enum config_log where, int debug);
/* log_set_json - log_format: 1 json, 0 text (the default). */
void log_set_json(int json);

/* log_attach - from now on the stderr lines this thread logs while base
 * runs are collected, and written in one write(2) once the callbacks of
 * the loop pass are done (or at once when LOG_BATCH_MAX would be passed).
 * NULL: write what waits, and every line at once again, as before any
 * loop exists (start-up, -t). Attach just before the loop runs, detach
 * just after it returns and before base is freed. A fork writes what waits
 * first, and the child starts unattached; exit() writes it too. */
void log_attach(struct event_base *base);
/* log_flush - write the lines that wait, now. */
void log_flush(void);
/* log_flush_signal - the same from a handler of a fatal signal: one
 * write(2), nothing else touched (async-signal-safe). */
void log_flush_signal(void);

/* log_msg - one line; sid may be NULL for lines about the daemon itself. */
void log_msg(int prio, const char *sid, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_info(sid, ...) log_msg(LOG_INFO, sid, __VA_ARGS__)
#define log_warn(sid, ...) log_msg(LOG_WARNING, sid, __VA_ARGS__)
#define log_err(sid, ...) log_msg(LOG_ERR, sid, __VA_ARGS__)
#define log_debug(sid, ...) log_msg(LOG_DEBUG, sid, __VA_ARGS__)

/* One key=value of a structured line (log_kv). */
enum log_kv_type {
	LOG_KV_TEXT, /* key=value */
	LOG_KV_QUOTED, /* key="value" (the value has no '"') */
	LOG_KV_NUMBER, /* key=value in text, a JSON number (the value must be one) */
};

struct log_kv {
	const char *key;
	const char *value; /* NULL: the pair is left out */
	enum log_kv_type type;
};

/* log_kv - one line of pairs, after head (NULL: none): as text "head
 * k=v k=\"v\"..."; as JSON that text is msg, and each pair is a member of
 * its own (the value as the text shows it, without quotes), so a pipeline
 * need not parse msg. Values must already be safe for a line (log_quote,
 * log_clean); keys must not be time, level, pid, id, msg or cut. */
void log_kv(int prio, const char *sid, const char *head, const struct log_kv *kv, size_t n);

/* log_quote - printable copy of untrusted bytes for a log line ("\xNN" escapes);
 * a copy cut to fit buf ends in "...". */
const char *log_quote(char *buf, size_t size, const char *s, size_t len);

/* log_clean - a copy for one log line: control bytes escaped. */
const char *log_clean(char *buf, size_t size, const char *s);

/* log_json_escape - s (len octets) escaped for the inside of a JSON
 * string, NUL-terminated in out: '"', '\' and control characters as JSON
 * escapes, valid UTF-8 kept, any other octet as "\\xNN" in the JSON (the
 * text \xNN once decoded, as log_quote shows it). Stops before
 * an escape that does not fit. Returns the length written; *used (may be
 * NULL) is how many octets of s it covers. */
size_t log_json_escape(char *out, size_t size, const char *s, size_t len, size_t *used);

/* log_libevent - libevent's own lines (event_set_log_callback): the
 * resolver's above all, at our level for theirs, debug only under
 * log_level = debug. */
void log_libevent(int severity, const char *msg);

#endif
