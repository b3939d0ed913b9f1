/*
 * fields.c - a test plugin that echoes what the host tells it (ABI 2
 * fields, address splits, scores) and checks that host strings stay put.
 *
 * Exports portcullis_plugin. At every stage it logs one line
 *
 *	fields STAGE: client_name=... tls_cipher=... trusted=... sender_local=...
 *	    sender_domain=... rcpt_local=... rcpt_domain=... rcpts=[l|d,...]
 *	    score=N symbols=[SYM:points:detail,...]
 *
 * ("-" for NULL). The lifetime check (plugin.h LIFETIMES): at HELO it keeps
 * get(PC_HELO), at RCPT get(PC_RCPT_PARAMS), get(PC_RCPT_DOMAIN) and
 * get(PC_RCPT_LOCAL) -- the pointers, copying nothing -- then asks the host
 * for hundreds of other strings (new address splits that grow the arena
 * into new blocks) and the same fields again, and compares: "fields:
 * stable helo" / "fields: stable rcpt", or "fields: UNSTABLE ...". Under
 * ASan a string freed in between is a use after free. Keys:
 *
 *	score = STAGE:SYMBOL:POINTS[:DETAIL]   add_score at that stage (repeatable)
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <portcullis/plugin.h>

#define FL_NSCORES 16

struct fl_score {
	enum pc_stage stage;
	char symbol[80];
	double points;
	char detail[128];
	int has_detail;
};

struct fl {
	const struct pc_host *host;
	struct pc_instance *self;
	struct fl_score scores[FL_NSCORES];
	size_t nscores;
};

static const char *const fl_stage_names[] = {"connect", "helo", "mail", "rcpt", "data"};
static const char *const fl_keys[] = {"score", NULL};

static int fl_init(struct pc_init *, void **);
static void fl_fini(void *);
static int fl_connect(void *, struct pc_call *, struct pc_verdict *);
static int fl_helo(void *, struct pc_call *, struct pc_verdict *);
static int fl_mail(void *, struct pc_call *, struct pc_verdict *);
static int fl_rcpt(void *, struct pc_call *, struct pc_verdict *);
static int fl_data(void *, struct pc_call *, struct pc_verdict *);

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "fields",
    .version = "1.0",
    .keys = fl_keys,
    .init = fl_init,
    .fini = fl_fini,
    .connect = fl_connect,
    .helo = fl_helo,
    .mail = fl_mail,
    .rcpt = fl_rcpt,
    .data = fl_data,
};

/* fl_score_opt - "STAGE:SYMBOL:POINTS[:DETAIL]" */
static int
fl_score_opt(struct fl *fl, const char *v)
{
	struct fl_score *s;
	char stage[16];
	size_t i;
	int n = 0;

	if (fl->nscores == FL_NSCORES)
		return -1;
	s = &fl->scores[fl->nscores];
	if (sscanf(v, "%15[^:]:%79[^:]:%lf%n", stage, s->symbol, &s->points, &n) != 3)
		return -1;
	if (v[n] == ':') {
		snprintf(s->detail, sizeof(s->detail), "%s", v + n + 1);
		s->has_detail = 1;
	} else if (v[n] != '\0') {
		return -1;
	}
	for (i = 0; i < 5 && strcmp(stage, fl_stage_names[i]) != 0; i++)
		continue;
	if (i == 5)
		return -1;
	s->stage = (enum pc_stage)i;
	fl->nscores++;
	return 0;
}

static int
fl_init(struct pc_init *in, void **instance)
{
	struct fl *fl = calloc(1, sizeof(*fl));

	if (fl == NULL)
		return -1;
	fl->host = in->host;
	fl->self = in->self;
	for (const struct pc_option *o = in->options; o != NULL; o = o->next) {
		if (fl_score_opt(fl, o->value) != 0) {
			snprintf(in->err, in->errlen, "bad score \"%s\"", o->value);
			in->err_line = o->line;
			free(fl);
			return -1;
		}
	}
	*instance = fl;
	return 0;
}

static void
fl_fini(void *instance)
{
	free(instance);
}

/* fl_s - a string for a log line: "-" for NULL */
static const char *
fl_s(const char *s)
{
	return s != NULL ? s : "-";
}

/* fl_put - append to a line, cut at its end */
static void __attribute__((format(printf, 3, 4)))
fl_put(char *buf, size_t size, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf + len, size - len, fmt, ap);
	va_end(ap);
}

/* fl_echo - the fields line */
static void
fl_echo(struct fl *fl, struct pc_call *call, enum pc_stage stage)
{
	const struct pc_host *h = fl->host;
	char line[4096] = "";
	const char *sym, *detail, *local, *domain;
	double points;

	fl_put(line, sizeof(line), "client_name=%s tls_cipher=%s trusted=%s ",
	    fl_s(h->get(call, PC_CLIENT_NAME)), fl_s(h->get(call, PC_TLS_CIPHER)),
	    fl_s(h->get(call, PC_CLIENT_TRUSTED)));
	fl_put(line, sizeof(line), "sender_local=%s sender_domain=%s ",
	    fl_s(h->get(call, PC_SENDER_LOCAL)), fl_s(h->get(call, PC_SENDER_DOMAIN)));
	fl_put(line, sizeof(line), "rcpt_local=%s rcpt_domain=%s rcpts=[",
	    fl_s(h->get(call, PC_RCPT_LOCAL)), fl_s(h->get(call, PC_RCPT_DOMAIN)));
	for (size_t i = 0; i < h->rcpt_count(call); i++) {
		if (h->split_address(call, h->rcpt(call, i), &local, &domain) != 0)
			local = domain = "ERROR";
		fl_put(line, sizeof(line), "%s%s|%s", i ? "," : "", fl_s(local), fl_s(domain));
	}
	fl_put(line, sizeof(line), "] score=%g symbols=[", h->score(call));
	for (size_t i = 0; h->score_at(call, i, &sym, &points, &detail) == 0; i++)
		fl_put(line, sizeof(line), "%s%s:%g:%s", i ? "," : "", sym, points, fl_s(detail));
	fl_put(line, sizeof(line), "]");
	h->log(fl->self, call, PC_LOG_INFO, "fields %s: %s", fl_stage_names[stage], line);
}

/* fl_churn - many new strings from the host: address splits that fill the
 * arena's first block and more */
static void
fl_churn(struct fl *fl, struct pc_call *call)
{
	char addr[200];
	const char *local, *domain;

	for (int i = 0; i < 300; i++) {
		snprintf(addr, sizeof(addr), "churn%d.%0100d@Example%d.TEST", i, i, i);
		fl->host->split_address(call, addr, &local, &domain);
		fl->host->get(call, PC_SENDER_DOMAIN);
	}
}

/* fl_same - the kept pointer still reads what the host says now, and is
 * the host's same string */
static int
fl_same(const char *kept, const char *now)
{
	if (kept == NULL || now == NULL)
		return kept == now;
	return strcmp(kept, now) == 0;
}

static void
fl_lifetimes(struct fl *fl, struct pc_call *call, enum pc_stage stage)
{
	const struct pc_host *h = fl->host;

	if (stage == PC_STAGE_HELO) {
		const char *helo = h->get(call, PC_HELO);
		const char *again = h->get(call, PC_HELO);
		fl_churn(fl, call);
		h->log(fl->self, call, PC_LOG_INFO, "fields: %s helo \"%s\"",
		    fl_same(helo, again) && fl_same(helo, h->get(call, PC_HELO)) ? "stable"
		                                                                 : "UNSTABLE",
		    helo ? helo : "-");
	} else if (stage == PC_STAGE_RCPT) {
		const char *params = h->get(call, PC_RCPT_PARAMS);
		const char *params2 = h->get(call, PC_RCPT_PARAMS);
		const char *domain = h->get(call, PC_RCPT_DOMAIN);
		const char *local = h->get(call, PC_RCPT_LOCAL);
		int ok = fl_same(params, params2);
		for (int i = 0; i < 50; i++)
			ok = ok && h->get(call, PC_RCPT_DOMAIN) == domain;
		fl_churn(fl, call);
		ok = ok && fl_same(params, h->get(call, PC_RCPT_PARAMS)) &&
		    fl_same(domain, h->get(call, PC_RCPT_DOMAIN)) &&
		    fl_same(local, h->get(call, PC_RCPT_LOCAL)) && fl_same(params2, params);
		h->log(fl->self, call, PC_LOG_INFO, "fields: %s rcpt \"%s\" \"%s\" \"%s\"",
		    ok ? "stable" : "UNSTABLE", local ? local : "-", domain ? domain : "-",
		    params ? params : "-");
	}
}

static int
fl_hook(struct fl *fl, struct pc_call *call, struct pc_verdict *v, enum pc_stage stage)
{
	for (size_t i = 0; i < fl->nscores; i++) {
		const struct fl_score *s = &fl->scores[i];
		if (s->stage == stage &&
		    fl->host->add_score(
		        call, s->symbol, s->points, s->has_detail ? s->detail : NULL) != 0)
			fl->host->log(
			    fl->self, call, PC_LOG_INFO, "fields: add_score %s refused", s->symbol);
	}
	fl_lifetimes(fl, call, stage);
	fl_echo(fl, call, stage);
	return PC_HOOK_DONE;
}

static int
fl_connect(void *inst, struct pc_call *call, struct pc_verdict *v)
{
	return fl_hook(inst, call, v, PC_STAGE_CONNECT);
}

static int
fl_helo(void *inst, struct pc_call *call, struct pc_verdict *v)
{
	return fl_hook(inst, call, v, PC_STAGE_HELO);
}

static int
fl_mail(void *inst, struct pc_call *call, struct pc_verdict *v)
{
	return fl_hook(inst, call, v, PC_STAGE_MAIL);
}

static int
fl_rcpt(void *inst, struct pc_call *call, struct pc_verdict *v)
{
	return fl_hook(inst, call, v, PC_STAGE_RCPT);
}

static int
fl_data(void *inst, struct pc_call *call, struct pc_verdict *v)
{
	return fl_hook(inst, call, v, PC_STAGE_DATA);
}
