/*
 * verdict.c - a test plugin whose verdict the configuration chooses.
 *
 * Exports portcullis_plugin. Each instance answers its configured stages with
 * one configured verdict, at once or later (a timer, never, or a resume from
 * inside the hook), and can misbehave on purpose (an out-of-range action, a
 * pending answer without registering it) so the integration tests can drive
 * every path of the host's filter chain. Keys:
 *
 *	stages = connect,helo,mail,rcpt,data   where it acts (default all)
 *	action = continue|accept|reject|tempfail|drop|disconnect|fail
 *	reply = TEXT                           v->reply; \r \n \t \\ \xHH escapes
 *	match = TEXT                           act only when the stage's subject
 *	                                       (client ip, helo, sender, rcpt,
 *	                                       Subject header) contains TEXT
 *	delay = 100ms                          answer later from a timer
 *	never = yes                            go pending, never answer
 *	raw_action = N                         v->action = N, unchecked
 *	pending_without_register = yes         PC_HOOK_PENDING, no host->pending
 *	resume_inline = yes                    pending and resume inside the hook
 *	add_header = Name: value               at data (repeatable)
 *	log_calls = yes                        log every hook call
 *	record_message = PATH                  at data, write headers, "--", body
 *
 * add_header and record_message apply at every data hook call, whatever
 * stages and match say. Everything allocated per call lives in one struct
 * vd_wait, freed on resume or in the cancel function.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

#include <portcullis/plugin.h>

#define VD_STAGES 5

struct vd_header {
	char *name;
	char *value;
};

/* One configured instance. */
struct vd {
	const struct pc_host *host;
	struct pc_instance *self;
	char *name;
	unsigned stages; /* bit (1 << enum pc_stage) */
	int action; /* an enum pc_action, or raw_action unchecked */
	char *reply;
	char *match;
	long delay_ms;
	int never;
	int pending_no_reg;
	int resume_inline;
	int log_calls;
	char *record;
	struct vd_header *hdrs;
	size_t nhdrs;
};

/* One hook call that went pending. */
struct vd_wait {
	struct vd *vd;
	struct pc_call *call;
	struct event *timer; /* NULL for never */
	enum pc_stage stage;
};

static const char *const vd_stage_names[VD_STAGES] = {
    "connect",
    "helo",
    "mail",
    "rcpt",
    "data",
};

static const char *const vd_action_names[] = {
    "continue",
    "accept",
    "reject",
    "tempfail",
    "drop",
    "disconnect",
    "fail",
};

#define VD_NACTIONS (sizeof(vd_action_names) / sizeof(vd_action_names[0]))

static const char *const vd_keys[] = {
    "stages",
    "action",
    "reply",
    "match",
    "delay",
    "never",
    "raw_action",
    "pending_without_register",
    "resume_inline",
    "add_header",
    "log_calls",
    "record_message",
    NULL,
};

static int vd_init(struct pc_init *, void **);
static void vd_fini(void *);
static int vd_connect(void *, struct pc_call *, struct pc_verdict *);
static int vd_helo(void *, struct pc_call *, struct pc_verdict *);
static int vd_mail(void *, struct pc_call *, struct pc_verdict *);
static int vd_rcpt(void *, struct pc_call *, struct pc_verdict *);
static int vd_data(void *, struct pc_call *, struct pc_verdict *);
static void vd_reset(void *, struct pc_call *);
static void vd_close(void *, struct pc_call *);

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "verdict",
    .version = "1.0",
    .keys = vd_keys,
    .init = vd_init,
    .fini = vd_fini,
    .connect = vd_connect,
    .helo = vd_helo,
    .mail = vd_mail,
    .rcpt = vd_rcpt,
    .data = vd_data,
    .reset = vd_reset,
    .close = vd_close,
};

/* ---- configuration ---- */

/* vd_yesno - parse a boolean value */
static int
vd_yesno(const char *s, int *out)
{
	if (strcmp(s, "yes") == 0 || strcmp(s, "true") == 0 || strcmp(s, "1") == 0) {
		*out = 1;
		return 0;
	}
	if (strcmp(s, "no") == 0 || strcmp(s, "false") == 0 || strcmp(s, "0") == 0) {
		*out = 0;
		return 0;
	}
	return -1;
}

/* vd_parse_stages - a comma list of stage names into a bit set */
static int
vd_parse_stages(const char *s, unsigned *out)
{
	unsigned set = 0;

	while (*s != '\0') {
		size_t len, i;

		while (*s == ' ' || *s == '\t' || *s == ',')
			s++;
		len = strcspn(s, ", \t");
		if (len == 0)
			break;
		for (i = 0; i < VD_STAGES; i++)
			if (strlen(vd_stage_names[i]) == len &&
			    strncmp(s, vd_stage_names[i], len) == 0)
				break;
		if (i == VD_STAGES)
			return -1;
		set |= 1u << i;
		s += len;
	}
	if (set == 0)
		return -1;
	*out = set;
	return 0;
}

/* vd_parse_action - an action name */
static int
vd_parse_action(const char *s, int *out)
{
	for (size_t i = 0; i < VD_NACTIONS; i++) {
		if (strcmp(s, vd_action_names[i]) == 0) {
			*out = (int)i;
			return 0;
		}
	}
	return -1;
}

/* vd_parse_delay - "100ms", "2s", "1m" or plain milliseconds */
static int
vd_parse_delay(const char *s, long *out)
{
	char *end;
	long n, mul;

	errno = 0;
	n = strtol(s, &end, 10);
	if (end == s || errno != 0 || n < 0)
		return -1;
	if (*end == '\0' || strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "s") == 0)
		mul = 1000;
	else if (strcmp(end, "m") == 0)
		mul = 60000;
	else
		return -1;
	if (n > LONG_MAX / mul)
		return -1;
	*out = n * mul;
	return 0;
}

/* vd_parse_int - a whole decimal number, sign allowed */
static int
vd_parse_int(const char *s, int *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(s, &end, 10);
	if (end == s || *end != '\0' || errno != 0 || n < INT_MIN || n > INT_MAX)
		return -1;
	*out = (int)n;
	return 0;
}

/* vd_hex - the value of one hex digit, or -1 */
static int
vd_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* vd_unescape - a copy of s with \r, \n, \t, \\ and \xHH decoded, so a
 * test can hand the host a reply with control characters in it */
static char *
vd_unescape(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;

	if (out == NULL)
		return NULL;
	while (*s != '\0') {
		if (*s != '\\' || s[1] == '\0') {
			*o++ = *s++;
			continue;
		}
		s++;
		switch (*s) {
		case 'r':
			*o++ = '\r';
			break;
		case 'n':
			*o++ = '\n';
			break;
		case 't':
			*o++ = '\t';
			break;
		case 'x':
			if (vd_hex(s[1]) < 0 || vd_hex(s[2]) < 0) {
				free(out);
				return NULL;
			}
			*o++ = (char)(vd_hex(s[1]) << 4 | vd_hex(s[2]));
			s += 2;
			break;
		default:
			*o++ = *s;
			break;
		}
		s++;
	}
	*o = '\0';
	return out;
}

/* vd_add_header_opt - remember one "Name: value" of add_header */
static int
vd_add_header_opt(struct vd *vd, const char *s)
{
	const char *colon = strchr(s, ':');
	struct vd_header *h;
	const char *v;

	if (colon == NULL || colon == s)
		return -1;
	h = realloc(vd->hdrs, (vd->nhdrs + 1) * sizeof(*h));
	if (h == NULL)
		return -1;
	vd->hdrs = h;
	h = &vd->hdrs[vd->nhdrs];
	for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
		continue;
	h->name = strndup(s, (size_t)(colon - s));
	h->value = strdup(v);
	if (h->name == NULL || h->value == NULL) {
		free(h->name);
		free(h->value);
		return -1;
	}
	vd->nhdrs++;
	return 0;
}

/* vd_set - apply one option; -1 when its value is bad */
static int
vd_set(struct vd *vd, const struct pc_option *o)
{
	const char *k = o->key, *v = o->value;
	char **str = NULL;

	if (strcmp(k, "stages") == 0)
		return vd_parse_stages(v, &vd->stages);
	if (strcmp(k, "action") == 0)
		return vd_parse_action(v, &vd->action);
	if (strcmp(k, "raw_action") == 0)
		return vd_parse_int(v, &vd->action);
	if (strcmp(k, "delay") == 0)
		return vd_parse_delay(v, &vd->delay_ms);
	if (strcmp(k, "never") == 0)
		return vd_yesno(v, &vd->never);
	if (strcmp(k, "pending_without_register") == 0)
		return vd_yesno(v, &vd->pending_no_reg);
	if (strcmp(k, "resume_inline") == 0)
		return vd_yesno(v, &vd->resume_inline);
	if (strcmp(k, "log_calls") == 0)
		return vd_yesno(v, &vd->log_calls);
	if (strcmp(k, "add_header") == 0)
		return vd_add_header_opt(vd, v);
	if (strcmp(k, "reply") == 0)
		str = &vd->reply;
	else if (strcmp(k, "match") == 0)
		str = &vd->match;
	else if (strcmp(k, "record_message") == 0)
		str = &vd->record;
	else
		return -1;
	free(*str);
	*str = str == &vd->reply ? vd_unescape(v) : strdup(v);
	return *str == NULL ? -1 : 0;
}

/* vd_init - make an instance from the section's keys */
static int
vd_init(struct pc_init *in, void **instance)
{
	const struct pc_option *o;
	struct vd *vd;

	vd = calloc(1, sizeof(*vd));
	if (vd == NULL || (vd->name = strdup(in->name)) == NULL) {
		free(vd);
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	vd->host = in->host;
	vd->self = in->self;
	vd->stages = (1u << VD_STAGES) - 1;
	vd->action = PC_CONTINUE;
	for (o = in->options; o != NULL; o = o->next) {
		if (vd_set(vd, o) == -1) {
			snprintf(in->err, in->errlen, "bad value for %s: \"%s\"", o->key, o->value);
			in->err_line = o->line;
			vd_fini(vd);
			return -1;
		}
	}
	*instance = vd;
	return 0;
}

/* vd_fini - free an instance */
static void
vd_fini(void *instance)
{
	struct vd *vd = instance;

	for (size_t i = 0; i < vd->nhdrs; i++) {
		free(vd->hdrs[i].name);
		free(vd->hdrs[i].value);
	}
	free(vd->hdrs);
	free(vd->record);
	free(vd->match);
	free(vd->reply);
	free(vd->name);
	free(vd);
}

/* ---- the data stage extras ---- */

/* vd_write_message - headers as "name: value", "--", then the body */
static int
vd_write_message(struct vd *vd, struct pc_call *call, FILE *f)
{
	const char *name, *value;
	char buf[4096];
	ssize_t n;

	for (size_t i = 0; vd->host->header_at(call, i, &name, &value) == 0; i++)
		fprintf(f, "%s: %s\n", name, value);
	fputs("--\n", f);
	while ((n = vd->host->body_read(call, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, (size_t)n, f);
	return n < 0 ? -1 : 0;
}

/* vd_record - write the message to record_message, atomically (rename) */
static void
vd_record(struct vd *vd, struct pc_call *call)
{
	char tmp[4096];
	FILE *f;
	int bad;

	snprintf(tmp, sizeof(tmp), "%s.tmp", vd->record);
	if ((f = fopen(tmp, "w")) == NULL) {
		vd->host->log(vd->self, call, PC_LOG_WARN, "verdict %s: %s: %s", vd->name, tmp,
		    strerror(errno));
		return;
	}
	bad = vd_write_message(vd, call, f);
	if (fclose(f) != 0)
		bad = -1;
	if (bad) {
		vd->host->log(vd->self, call, PC_LOG_WARN, "verdict %s: reading the message failed",
		    vd->name);
		remove(tmp);
		return;
	}
	if (rename(tmp, vd->record) != 0)
		vd->host->log(vd->self, call, PC_LOG_WARN, "verdict %s: %s: %s", vd->name,
		    vd->record, strerror(errno));
}

/* vd_add_headers - ask the host to prepend the configured headers */
static void
vd_add_headers(struct vd *vd, struct pc_call *call)
{
	for (size_t i = 0; i < vd->nhdrs; i++)
		if (vd->host->add_header(call, vd->hdrs[i].name, vd->hdrs[i].value) != 0)
			vd->host->log(vd->self, call, PC_LOG_WARN,
			    "verdict %s: add_header %s refused", vd->name, vd->hdrs[i].name);
}

/* ---- verdicts ---- */

/* vd_subject - what match looks at for this stage; NULL if nothing */
static const char *
vd_subject(struct vd *vd, struct pc_call *call, enum pc_stage stage)
{
	switch (stage) {
	case PC_STAGE_CONNECT:
		return vd->host->get(call, PC_CLIENT_IP);
	case PC_STAGE_HELO:
		return vd->host->get(call, PC_HELO);
	case PC_STAGE_MAIL:
		return vd->host->get(call, PC_SENDER);
	case PC_STAGE_RCPT:
		return vd->host->get(call, PC_RCPT);
	case PC_STAGE_DATA:
		return vd->host->header(call, "Subject", 0);
	}
	return NULL;
}

/* vd_applies - whether this instance acts at this call */
static int
vd_applies(struct vd *vd, struct pc_call *call, enum pc_stage stage)
{
	const char *subject;

	if ((vd->stages & (1u << stage)) == 0)
		return 0;
	if (vd->match == NULL)
		return 1;
	subject = vd_subject(vd, call, stage);
	return subject != NULL && strstr(subject, vd->match) != NULL;
}

/* vd_fill - the configured verdict */
static void
vd_fill(const struct vd *vd, struct pc_verdict *v)
{
	v->action = (enum pc_action)vd->action;
	v->reply = vd->reply;
}

/* vd_fire - the delay is over: answer */
static void
vd_fire(evutil_socket_t fd, short what, void *arg)
{
	struct vd_wait *w = arg;
	struct vd *vd = w->vd;
	struct pc_call *call = w->call;
	struct pc_verdict v;

	(void)fd;
	(void)what;
	if (vd->log_calls)
		vd->host->log(vd->self, call, PC_LOG_INFO, "verdict %s: resume %s", vd->name,
		    vd_stage_names[w->stage]);
	event_free(w->timer);
	free(w);
	vd_fill(vd, &v);
	vd->host->resume(call, &v);
}

/* vd_cancel - the host gave up on a pending call: free it */
static void
vd_cancel(void *arg)
{
	struct vd_wait *w = arg;

	w->vd->host->log(w->vd->self, NULL, PC_LOG_INFO, "verdict: cancelled %s at %s", w->vd->name,
	    vd_stage_names[w->stage]);
	if (w->timer != NULL)
		event_free(w->timer);
	free(w);
}

/* vd_go_pending - answer later (delay, never) or at once via resume */
static int
vd_go_pending(struct vd *vd, struct pc_call *call, enum pc_stage stage, struct pc_verdict *v)
{
	struct vd_wait *w;
	struct timeval tv;

	if ((w = calloc(1, sizeof(*w))) == NULL) {
		v->action = PC_FAIL;
		return PC_HOOK_DONE;
	}
	w->vd = vd;
	w->call = call;
	w->stage = stage;
	if (!vd->never && !vd->resume_inline) {
		if ((w->timer = evtimer_new(vd->host->base, vd_fire, w)) == NULL) {
			free(w);
			v->action = PC_FAIL;
			return PC_HOOK_DONE;
		}
	}
	if (vd->host->pending(call, vd_cancel, w) != 0) {
		/* The call cannot wait: answer now. */
		vd->host->log(vd->self, call, PC_LOG_INFO, "verdict %s: pending refused", vd->name);
		if (w->timer != NULL)
			event_free(w->timer);
		free(w);
		return PC_HOOK_DONE;
	}
	if (vd->resume_inline) {
		vd->host->resume(call, v);
		free(w);
		return PC_HOOK_PENDING;
	}
	if (w->timer != NULL) {
		tv.tv_sec = vd->delay_ms / 1000;
		tv.tv_usec = (vd->delay_ms % 1000) * 1000;
		evtimer_add(w->timer, &tv);
	}
	return PC_HOOK_PENDING;
}

/* vd_hook - every stage's hook */
static int
vd_hook(struct vd *vd, struct pc_call *call, struct pc_verdict *v, enum pc_stage stage)
{
	v->action = PC_CONTINUE;
	v->reply = NULL;
	if (vd->log_calls)
		vd->host->log(vd->self, call, PC_LOG_INFO, "verdict %s: hook %s", vd->name,
		    vd_stage_names[stage]);
	if (vd->log_calls && (stage == PC_STAGE_HELO || stage == PC_STAGE_RCPT)) {
		/* plugin.h: a string from get() stays valid until the hook
		 * returns, however often get() is called meanwhile. */
		enum pc_field f = stage == PC_STAGE_HELO ? PC_HELO : PC_RCPT_PARAMS;
		const char *first = vd->host->get(call, f), *second = vd->host->get(call, f);
		vd->host->log(vd->self, call, PC_LOG_INFO, "verdict %s: get twice \"%s\" \"%s\"",
		    vd->name, first ? first : "(null)", second ? second : "(null)");
	}
	if (stage == PC_STAGE_DATA) {
		vd_add_headers(vd, call);
		if (vd->record != NULL)
			vd_record(vd, call);
	}
	if (!vd_applies(vd, call, stage))
		return PC_HOOK_DONE;
	vd_fill(vd, v);
	if (vd->pending_no_reg)
		return PC_HOOK_PENDING;
	if (vd->never || vd->delay_ms > 0 || vd->resume_inline)
		return vd_go_pending(vd, call, stage, v);
	return PC_HOOK_DONE;
}

/* vd_connect - the connect hook */
static int
vd_connect(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return vd_hook(instance, call, v, PC_STAGE_CONNECT);
}

/* vd_helo - the HELO hook */
static int
vd_helo(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return vd_hook(instance, call, v, PC_STAGE_HELO);
}

/* vd_mail - the MAIL hook */
static int
vd_mail(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return vd_hook(instance, call, v, PC_STAGE_MAIL);
}

/* vd_rcpt - the RCPT hook */
static int
vd_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return vd_hook(instance, call, v, PC_STAGE_RCPT);
}

/* vd_data - the end-of-data hook */
static int
vd_data(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return vd_hook(instance, call, v, PC_STAGE_DATA);
}

/* vd_reset - the transaction ended */
static void
vd_reset(void *instance, struct pc_call *call)
{
	struct vd *vd = instance;

	if (vd->log_calls)
		vd->host->log(vd->self, call, PC_LOG_INFO, "verdict %s: reset", vd->name);
}

/* vd_close - the session ended */
static void
vd_close(void *instance, struct pc_call *call)
{
	struct vd *vd = instance;

	if (vd->log_calls)
		vd->host->log(vd->self, call, PC_LOG_INFO, "verdict %s: close", vd->name);
}
