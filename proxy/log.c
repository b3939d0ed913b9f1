/*
 * log.c - log lines to stderr or syslog, as text or as JSON.
 *
 * Exports log_init, log_set_json, log_msg, log_kv, log_quote, log_clean,
 * log_json_escape and log_libevent. A text line on stderr reads
 * "2026-11-23T07:46:00.123Z portcullis[PID]: info: id=SID message"; syslog
 * gets the part after the level. With log_format = json a line is one
 * object, {"time":...,"level":...,"pid":...,"id":...,"msg":...} plus the
 * pairs of a log_kv line, on stderr and as the syslog message alike.
 * Untrusted text goes through log_quote first, so a peer cannot forge log
 * lines; the JSON encoder escapes whatever is left, so a line always parses.
 *
 * Exports log_attach, log_flush and log_flush_signal too (issue 19): while
 * a loop runs, the stderr lines of one loop pass go out in one write(2)
 * (see log_out). Syslog lines are not batched: syslog(3) sends one
 * datagram a line, and that is the message boundary rsyslog and journald
 * read.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"

/* What the end of a JSON line needs: ,"cut":N}\n and the NUL. */
#define LOG_JSON_TAIL 40

struct jbuf {
	char *p;
	size_t len, cap; /* cap leaves LOG_JSON_TAIL free */
	size_t cut; /* octets of values left out */
};

static enum config_log log_where = CONFIG_LOG_STDERR;
static int log_debug_on;
static int log_json;
static int log_pid;
static time_t log_last_sec = -1;
static char log_stamp[32];

/*
 * The batch: whole lines, in the order logged, written by on_flush at the
 * end of the loop pass that logged the first of them. log_ev is activated
 * (event_active), not a zero timer: an active event runs in the same pass,
 * after the callbacks already active (every I/O event of the pass is), so
 * the pass's lines leave before the loop next waits, with no extra
 * epoll_wait; a zero timer would wait for the next pass's epoll_wait.
 * libevent 2.1 has no hook "after the pass" of its own. A line logged by
 * a callback that runs after on_flush starts a second batch, which the
 * same pass writes too.
 *
 * Several processes (the workers) share stderr. Each writes whole lines,
 * a batch in one call, so lines interleave only line by line, never mid
 * line, where the write is atomic: a regular file (O_APPEND or the shared
 * offset: Linux writes either as a unit), a terminal, a Unix stream socket
 * (journald's) up to its skb size, about 32 KB on Linux. A pipe promises
 * it only up to PIPE_BUF, so with stderr a pipe a batch is cut at PIPE_BUF
 * (a longer single line is written alone, as it always was). That costs a
 * write per 4 KB of lines, which a pass rarely logs.
 */
static char log_buf[LOG_BATCH_MAX];
static size_t log_used; /* octets of log_buf in use */
static size_t log_cap = LOG_BATCH_MAX; /* the most one batch takes */
static struct event *log_ev; /* on_flush; NULL: every line at once */
static int log_pending; /* log_ev is active */
static _Thread_local int log_loop_thread; /* this thread runs the attached loop */
static unsigned long log_lost; /* lines the fd refused (EAGAIN, errors) */
static int log_hooked; /* the fork and exit hooks are in */

static const char *prio_name(int prio);
static void stamp(char *buf, size_t size);
static void vformat(char *msg, size_t size, const char *sid, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static void emit_text(int prio, const char *msg);
static void emit_json(
    int prio, const char *sid, const char *msg, const struct log_kv *kv, size_t n);
static void jb_raw(struct jbuf *j, const char *s);
static void jb_string(struct jbuf *j, const char *key, const char *s);
static void jb_number(struct jbuf *j, const char *key, const char *s);
static size_t utf8_len(const unsigned char *s, size_t len);
static char *kv_text(
    char *small, size_t smallsize, const char *head, const struct log_kv *kv, size_t n);
static void format(char *msg, size_t size, const char *sid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void log_out(const char *p, size_t len);
static void write_all(const char *p, size_t len);
static void on_flush(evutil_socket_t fd, short what, void *arg);
static void log_child(void);
static void say_lost(void);

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
	if (!log_hooked) {
		/* Lines that wait leave before a fork, or the child would
		 * write them again, and before exit(); _exit() paths detach
		 * first. */
		pthread_atfork(log_flush, NULL, log_child);
		atexit(log_flush);
		log_hooked = 1;
	}
}

/* log_attach - see log.h */
void
log_attach(struct event_base *base)
{
	struct stat st;

	if (log_ev != NULL) {
		log_flush();
		event_free(log_ev);
		log_ev = NULL;
	}
	log_pending = 0;
	log_loop_thread = 0;
	if (base == NULL)
		return;
	/* Without the event every line goes out at once, as before. */
	if ((log_ev = event_new(base, -1, 0, on_flush, NULL)) == NULL)
		return;
	log_loop_thread = 1;
	log_cap = LOG_BATCH_MAX;
	if (fstat(STDERR_FILENO, &st) == 0 && S_ISFIFO(st.st_mode))
		log_cap = PIPE_BUF;
}

/* log_flush - see log.h */
void
log_flush(void)
{
	size_t len = log_used;

	if (len == 0)
		return;
	log_used = 0;
	write_all(log_buf, len);
}

/* log_flush_signal - see log.h; a trap comes only at a system call, and
 * the log makes none while it changes log_buf, so what is there is whole */
void
log_flush_signal(void)
{
	if (log_used > 0 && write(STDERR_FILENO, log_buf, log_used) < 0) {
		/* The process is dying: nothing more to do. */
	}
}

/* on_flush - the end of the pass that logged: the batch goes */
static void
on_flush(evutil_socket_t fd, short what, void *arg)
{
	log_pending = 0;
	log_flush();
}

/* log_child - after fork, in the child: the parent's loop is not ours.
 * log_buf is empty (the fork flushed it). */
static void
log_child(void)
{
	if (log_ev != NULL)
		event_free(log_ev);
	log_ev = NULL;
	log_pending = 0;
	log_loop_thread = 0;
	log_used = 0;
	log_pid = 0;
}

/* say_lost - before the next line, how many stderr refused; called
 * before that line is formatted (emit_json's buffer is reused) */
static void
say_lost(void)
{
	unsigned long lost = log_lost;

	log_lost = 0;
	log_msg(LOG_WARNING, NULL, "%lu log line(s) lost: stderr refused them", lost);
}

/* log_out - one whole line for stderr: into the batch while a loop is
 * attached (and this is its thread), else written now */
static void
log_out(const char *p, size_t len)
{
	if (log_ev == NULL || !log_loop_thread) {
		write_all(p, len);
		return;
	}
	if (log_used + len > log_cap) {
		log_flush();
		if (len > log_cap) {
			write_all(p, len);
			return;
		}
	}
	memcpy(log_buf + log_used, p, len);
	log_used += len;
	if (!log_pending) {
		log_pending = 1;
		event_active(log_ev, EV_TIMEOUT, 1);
	}
}

/* write_all - p to stderr; a partial write goes on from where it stopped.
 * A full non-blocking pipe (EAGAIN) or an error drops the rest, as the
 * single write per line did, but the loss is counted and said on the next
 * line. A blocking stderr blocks, once a batch instead of once a line. */
static void
write_all(const char *p, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = write(STDERR_FILENO, p + off, len - off);
		if (n > 0)
			off += (size_t)n;
		else if (n < 0 && errno == EINTR)
			continue;
		else
			break;
	}
	/* Lines whose end did not go out. */
	for (size_t i = off; i < len; i++)
		if (p[i] == '\n')
			log_lost++;
}

/* log_set_json - choose the format */
void
log_set_json(int json)
{
	log_json = json;
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

/* stamp - now, RFC 3339 in UTC with milliseconds */
static void
stamp(char *buf, size_t size)
{
	struct timeval tv;
	struct tm tm;

	gettimeofday(&tv, NULL);
	if (tv.tv_sec != log_last_sec) {
		gmtime_r(&tv.tv_sec, &tm);
		strftime(log_stamp, sizeof(log_stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		log_last_sec = tv.tv_sec;
	}
	snprintf(buf, size, "%s.%03dZ", log_stamp, (int)(tv.tv_usec / 1000));
}

/* vformat - the message, after "id=SID " when sid is given; never cut
 * silently: a cut one ends in how much was lost */
static void
vformat(char *msg, size_t size, const char *sid, const char *fmt, va_list ap)
{
	int n = 0, m;

	msg[0] = '\0';
	if (sid != NULL)
		n = snprintf(msg, size, "id=%s ", sid);
	if (n < 0 || (size_t)n >= size)
		n = 0;
	m = vsnprintf(msg + n, size - (size_t)n, fmt, ap);
	if (m > 0 && (size_t)m >= size - (size_t)n) {
		/* Callers with long lists split them (tx_log) so this is a
		 * last resort. */
		char mark[48];
		int k = snprintf(
		    mark, sizeof(mark), " ...[cut %zu octets]", (size_t)m - (size - (size_t)n - 1));
		if (k > 0)
			memcpy(msg + size - 1 - (size_t)k, mark, (size_t)k + 1);
	}
}

/* log_msg - write one line */
void
log_msg(int prio, const char *sid, const char *fmt, ...)
{
	char msg[LOG_LINE_MAX];
	va_list ap;

	if (prio == LOG_DEBUG && !log_debug_on)
		return;
	if (log_lost > 0 && log_where != CONFIG_LOG_SYSLOG)
		say_lost();
	va_start(ap, fmt);
	/* In JSON the id is a member of its own, not part of msg. */
	vformat(msg, sizeof(msg), log_json ? NULL : sid, fmt, ap);
	va_end(ap);
	if (log_json)
		emit_json(prio, sid, msg, NULL, 0);
	else
		emit_text(prio, msg);
}

/* log_kv - a line of pairs: text, or msg and members */
void
log_kv(int prio, const char *sid, const char *head, const struct log_kv *kv, size_t n)
{
	char msg[LOG_LINE_MAX], small[LOG_LINE_MAX];
	char *text;

	if (prio == LOG_DEBUG && !log_debug_on)
		return;
	if (log_lost > 0 && log_where != CONFIG_LOG_SYSLOG)
		say_lost();
	if ((text = kv_text(small, sizeof(small), head, kv, n)) == NULL) {
		log_msg(LOG_ERR, sid, "out of memory writing a log line");
		return;
	}
	if (!log_json) {
		log_msg(prio, sid, "%s", text);
	} else {
		format(msg, sizeof(msg), NULL, "%s", text);
		emit_json(prio, sid, msg, kv, n);
	}
	if (text != small)
		free(text);
}

/* format - vformat with its arguments */
static void
format(char *msg, size_t size, const char *sid, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vformat(msg, size, sid, fmt, ap);
	va_end(ap);
}

/* kv_text - "head k=v k=\"v\"...": in small when it fits (a summary
 * line nearly always does: no allocation per transaction), else in memory
 * of its own (NULL: none left), so a longer one is still cut by vformat
 * with its true length */
static char *
kv_text(char *small, size_t smallsize, const char *head, const struct log_kv *kv, size_t n)
{
	size_t need = (head ? strlen(head) : 0) + 1, o = 0;
	char *text;

	for (size_t i = 0; i < n; i++)
		if (kv[i].value != NULL)
			need += strlen(kv[i].key) + strlen(kv[i].value) + 4;
	if (need <= smallsize)
		text = small;
	else if ((text = malloc(need)) == NULL)
		return NULL;
	text[0] = '\0';
	if (head != NULL)
		o = (size_t)snprintf(text, need, "%s", head);
	for (size_t i = 0; i < n; i++) {
		const char *q = kv[i].type == LOG_KV_QUOTED ? "\"" : "";
		if (kv[i].value == NULL)
			continue;
		o += (size_t)snprintf(
		    text + o, need - o, "%s%s=%s%s%s", o ? " " : "", kv[i].key, q, kv[i].value, q);
	}
	return text;
}

/* emit_text - a text line to syslog or stderr */
static void
emit_text(int prio, const char *msg)
{
	char now[40], line[LOG_LINE_MAX + 128];
	int len;

	if (log_where == CONFIG_LOG_SYSLOG) {
		syslog(prio, "%s", msg);
		return;
	}
	/* Whole lines to log_out: lines from several workers never
	 * interleave mid line. */
	if (log_pid == 0)
		log_pid = (int)getpid();
	stamp(now, sizeof(now));
	len = snprintf(
	    line, sizeof(line), "%s portcullis[%d]: %s: %s\n", now, log_pid, prio_name(prio), msg);
	if (len < 0)
		return;
	if ((size_t)len >= sizeof(line)) {
		len = (int)sizeof(line) - 1;
		line[len - 1] = '\n';
	}
	log_out(line, (size_t)len);
}

/* emit_json - one JSON object: the fixed members, msg, the pairs */
static void
emit_json(int prio, const char *sid, const char *msg, const struct log_kv *kv, size_t n)
{
	/* Per thread: a plugin's thread may log too. */
	static _Thread_local char buf[LOG_JSON_MAX];
	struct jbuf j = {buf, 0, sizeof(buf) - LOG_JSON_TAIL, 0};
	char now[40], num[32];

	if (log_pid == 0)
		log_pid = (int)getpid();
	stamp(now, sizeof(now));
	jb_raw(&j, "{");
	jb_string(&j, "time", now);
	jb_string(&j, "level", prio_name(prio));
	snprintf(num, sizeof(num), "%d", log_pid);
	jb_number(&j, "pid", num);
	if (sid != NULL)
		jb_string(&j, "id", sid);
	jb_string(&j, "msg", msg);
	for (size_t i = 0; i < n; i++) {
		if (kv[i].value == NULL)
			continue;
		if (kv[i].type == LOG_KV_NUMBER)
			jb_number(&j, kv[i].key, kv[i].value);
		else
			jb_string(&j, kv[i].key, kv[i].value);
	}
	/* The tail was kept free for this. */
	if (j.cut > 0)
		j.len += (size_t)snprintf(j.p + j.len, LOG_JSON_TAIL, ",\"cut\":%zu", j.cut);
	memcpy(j.p + j.len, "}\n", 3);
	j.len += 2;
	if (log_where == CONFIG_LOG_SYSLOG) {
		j.p[j.len - 1] = '\0';
		syslog(prio, "%s", j.p);
		return;
	}
	log_out(j.p, j.len);
}

/* jb_raw - our own text, when it fits (else it counts as cut) */
static void
jb_raw(struct jbuf *j, const char *s)
{
	size_t len = strlen(s);

	if (j->cut > 0 || j->len + len >= j->cap) {
		j->cut += len;
		return;
	}
	memcpy(j->p + j->len, s, len + 1);
	j->len += len;
}

/* jb_string - ,"key":"value"; a value that does not fit is cut (and
 * counted), the string closed, and every member after it left out */
static void
jb_string(struct jbuf *j, const char *key, const char *s)
{
	size_t len = strlen(s), used, room;

	/* Our keys need no escaping. */
	if (j->cut > 0 || j->len + strlen(key) + 8 >= j->cap) {
		j->cut += len;
		return;
	}
	j->len += (size_t)sprintf(j->p + j->len, "%s\"%s\":\"", j->len > 1 ? "," : "", key);
	room = j->cap - j->len - 1; /* the closing quote */
	j->len += log_json_escape(j->p + j->len, room, s, len, &used);
	memcpy(j->p + j->len, "\"", 2);
	j->len++;
	j->cut += len - used;
}

/* jb_number - ,"key":value; value is one of our numbers */
static void
jb_number(struct jbuf *j, const char *key, const char *s)
{
	char m[96];

	if (strlen(key) + strlen(s) + 8 > sizeof(m)) {
		jb_string(j, key, s);
		return;
	}
	snprintf(m, sizeof(m), "%s\"%s\":%s", j->len > 1 ? "," : "", key, s);
	jb_raw(j, m);
}

/* utf8_len - octets of the valid UTF-8 character s starts with (RFC 3629:
 * no overlong forms, no surrogates, nothing past U+10FFFF); 0 if none */
static size_t
utf8_len(const unsigned char *s, size_t len)
{
	size_t n;
	unsigned lo = 0x80, hi = 0xbf;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (n > len)
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

/* log_json_escape - see log.h */
size_t
log_json_escape(char *out, size_t size, const char *s, size_t len, size_t *used)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	size_t o = 0, i = 0;

	while (i < len) {
		char e[8];
		size_t elen, take = 1;
		unsigned char c = u[i];

		if (c == '"' || c == '\\') {
			e[0] = '\\', e[1] = (char)c, elen = 2;
		} else if (c == '\n') {
			memcpy(e, "\\n", 2), elen = 2;
		} else if (c == '\r') {
			memcpy(e, "\\r", 2), elen = 2;
		} else if (c == '\t') {
			memcpy(e, "\\t", 2), elen = 2;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(e, "\\u00", 4);
			e[4] = hex[c >> 4], e[5] = hex[c & 15], elen = 6;
		} else if (c < 0x80) {
			e[0] = (char)c, elen = 1;
		} else if ((take = utf8_len(u + i, len - i)) > 0) {
			memcpy(e, u + i, take), elen = take;
		} else {
			/* Not UTF-8: the text \xNN, as log_quote writes it. */
			take = 1;
			memcpy(e, "\\\\x", 3);
			e[3] = hex[c >> 4], e[4] = hex[c & 15], elen = 5;
		}
		if (o + elen >= size)
			break;
		memcpy(out + o, e, elen);
		o += elen;
		i += take;
	}
	if (size > 0)
		out[o] = '\0';
	if (used != NULL)
		*used = i;
	return o;
}

/* log_libevent - a line of libevent's (the resolver's, mostly). Debug
 * lines reach us only if libevent's debug logging is on; they stay behind
 * log_level = debug all the same. */
void
log_libevent(int severity, const char *msg)
{
	char clean[1024];

	log_clean(clean, sizeof(clean), msg);
	switch (severity) {
	case EVENT_LOG_DEBUG:
		log_debug(NULL, "libevent: %s", clean);
		break;
	case EVENT_LOG_MSG:
		log_info(NULL, "libevent: %s", clean);
		break;
	case EVENT_LOG_WARN:
		log_warn(NULL, "libevent: %s", clean);
		break;
	default:
		log_err(NULL, "libevent: %s", clean);
		break;
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
