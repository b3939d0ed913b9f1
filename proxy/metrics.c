/*
 * metrics.c - the counters, gauges and histograms of metrics.h, and their
 * Prometheus text rendering (text format 0.0.4).
 *
 * Counting is a plain increment in this process's block; rendering sums
 * the blocks it is given (one today, one per worker with several) and
 * writes each metric family once: HELP, TYPE, then its samples.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "metrics.h"
#include "verdict.h"

static struct metrics_shard metrics_own;
struct metrics_shard *metrics_cur = &metrics_own;

/* The upper bounds of the buckets, in seconds: 0.5 ms to 60 s, which covers
 * a local backend's reply as well as a slow scanner's verdict. */
static const double bucket_le[METRICS_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60};

/* The counter table: a family is the run of rows with the same name. */
static const struct counter_desc {
	const char *name, *help, *labels;
} counter_desc[M__N] = {
    [M_CONN_ACCEPTED] = {"portcullis_connections_accepted_total",
        "Client connections accepted: a session started (it may still be refused later, "
        "by a connect filter, an smtps handshake or the backend: those are in "
        "portcullis_connections_refused_total too).",
        ""},
    [M_CONN_REFUSED_LIMIT] = {"portcullis_connections_refused_total",
        "Client connections refused, by reason.", "reason=\"max_connections\""},
    [M_CONN_REFUSED_IP_LIMIT] = {"portcullis_connections_refused_total", NULL,
        "reason=\"max_connections_per_ip\""},
    [M_CONN_REFUSED_DRAINING] = {"portcullis_connections_refused_total", NULL,
        "reason=\"shutting_down\""},
    [M_CONN_REFUSED_PROXY] = {"portcullis_connections_refused_total", NULL, "reason=\"proxy\""},
    [M_CONN_REFUSED_TLS] = {"portcullis_connections_refused_total", NULL, "reason=\"tls\""},
    [M_CONN_REFUSED_FILTER] = {"portcullis_connections_refused_total", NULL, "reason=\"filter\""},
    [M_CONN_REFUSED_BACKEND] = {"portcullis_connections_refused_total", NULL, "reason=\"backend\""},
    [M_TX_SENT] = {"portcullis_transactions_total", "Transactions ended, by final status.",
        "status=\"sent\""},
    [M_TX_REJECTED] = {"portcullis_transactions_total", NULL, "status=\"rejected\""},
    [M_TX_TEMPFAILED] = {"portcullis_transactions_total", NULL, "status=\"tempfailed\""},
    [M_TX_DROPPED] = {"portcullis_transactions_total", NULL, "status=\"dropped\""},
    [M_TX_ABORTED] = {"portcullis_transactions_total", NULL, "status=\"aborted\""},
    [M_RCPT_ACCEPTED] = {"portcullis_recipients_accepted_total",
        "Recipients accepted (the backend's 2xx, or a filter's drop).", ""},
    [M_RCPT_REFUSED_PROXY] = {"portcullis_recipients_refused_total",
        "Recipients refused, by who refused them (a filter or a limit here, or the backend).",
        "by=\"proxy\""},
    [M_RCPT_REFUSED_BACKEND] = {"portcullis_recipients_refused_total", NULL, "by=\"backend\""},
    [M_BACKEND_CONNECT_FAILED] = {"portcullis_backend_connect_failures_total",
        "Connections to the backend that failed (refused, timed out, no greeting, TLS).", ""},
    [M_TLS_CLIENT_OK] = {"portcullis_tls_handshakes_total",
        "TLS handshakes completed, by side (client: STARTTLS or smtps; backend).",
        "side=\"client\""},
    [M_TLS_CLIENT_RESUMED] = {"portcullis_tls_resumed_total",
        "TLS handshakes with clients that resumed a session (a ticket or the cache).", ""},
    [M_TLS_CLIENT_FAILED] = {"portcullis_tls_handshake_failures_total",
        "TLS handshakes that failed, by side.", "side=\"client\""},
    [M_TLS_BACKEND_OK] = {"portcullis_tls_handshakes_total", NULL, "side=\"backend\""},
    [M_TLS_BACKEND_FAILED] = {"portcullis_tls_handshake_failures_total", NULL, "side=\"backend\""},
    [M_OCTETS_CLIENT_IN] = {"portcullis_octets_total",
        "Octets read and written, by peer and direction (TLS payload, not records).",
        "peer=\"client\",direction=\"in\""},
    [M_OCTETS_CLIENT_OUT] = {"portcullis_octets_total", NULL, "peer=\"client\",direction=\"out\""},
    [M_OCTETS_BACKEND_OUT] = {"portcullis_octets_total", NULL,
        "peer=\"backend\",direction=\"out\""},
    [M_OCTETS_BACKEND_IN] = {"portcullis_octets_total", NULL, "peer=\"backend\",direction=\"in\""},
    [M_SMUGGLE_BARE_LF] = {"portcullis_smuggling_refused_total",
        "Messages refused for bytes that smuggle commands or hide content, by kind.",
        "kind=\"bare_lf\""},
    [M_SMUGGLE_BARE_CR] = {"portcullis_smuggling_refused_total", NULL, "kind=\"bare_cr\""},
    [M_SMUGGLE_NUL] = {"portcullis_smuggling_refused_total", NULL, "kind=\"nul\""},
    [M_RELOAD_OK] = {"portcullis_reloads_total", "Configuration reloads (SIGHUP), by result.",
        "result=\"ok\""},
    [M_RELOAD_FAILED] = {"portcullis_reloads_total", NULL, "result=\"failed\""},
    [M_DNS_FAILED] = {"portcullis_dns_failures_total",
        "DNS lookups that failed for the resolver (server failure, timeout), not NXDOMAIN.", ""},
    [M_WORKER_DEATHS] = {"portcullis_worker_deaths_total",
        "Workers that ended without being asked to (crashed, killed); each is started again.", ""},
};

static const struct {
	const char *name, *help;
} gauge_desc[G__N] = {
    [G_SESSIONS] = {"portcullis_sessions", "Client sessions open now."},
    [G_PENDING] = {"portcullis_filter_calls_pending",
        "Filter hook calls waiting for an answer now."},
    [G_GENERATION] = {"portcullis_config_generation",
        "The configuration generation: 1 at start, one more per successful reload."},
    [G_WORKERS] = {"portcullis_workers",
        "Worker processes running now (0 for a single process, workers = 1)."},
};

static const struct {
	const char *name, *help;
} hist_desc[H__N] = {
    [H_TX_DURATION] = {"portcullis_transaction_duration_seconds",
        "Transactions from MAIL to their end."},
    [H_BACKEND_REPLY] = {"portcullis_backend_reply_seconds",
        "From a command written to the backend to its complete reply."},
};

/* What /metrics and the status line read: NULL is this process's block. */
static const struct metrics_shard *src_shards;
static size_t src_n;

void
metrics_use(struct metrics_shard *shard)
{
	metrics_cur = shard != NULL ? shard : &metrics_own;
}

void
metrics_set_source(const struct metrics_shard *shards, size_t n)
{
	src_shards = shards;
	src_n = n;
}

const struct metrics_shard *
metrics_source(size_t *n)
{
	if (src_shards == NULL) {
		*n = 1;
		return metrics_cur;
	}
	*n = src_n;
	return src_shards;
}

int64_t
metrics_gauge_total(enum metric_gauge g)
{
	size_t n;
	const struct metrics_shard *sh = metrics_source(&n);
	int64_t sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += sh[i].g[g];
	return sum;
}

double
metrics_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
hist_add(struct metrics_hist *h, double seconds)
{
	size_t i;

	if (!(seconds >= 0)) /* NaN, or a clock that went back */
		seconds = 0;
	for (i = 0; i < METRICS_BUCKETS && seconds > bucket_le[i]; i++)
		;
	h->bucket[i]++;
	h->count++;
	h->sum += seconds;
}

void
metrics_observe(enum metric_histogram h, double seconds)
{
	hist_add(&metrics_cur->h[h], seconds);
}

int
metrics_filter_slot(const char *name)
{
	struct metrics_filter *f = metrics_cur->f;
	size_t i, len = strlen(name);

	if (len == 0 || len >= METRICS_NAME_MAX)
		return -1;
	for (i = 0; i < METRICS_FILTERS && f[i].name[0] != '\0'; i++)
		if (strcmp(f[i].name, name) == 0)
			return (int)i;
	if (i == METRICS_FILTERS)
		return -1;
	memcpy(f[i].name, name, len + 1);
	return (int)i;
}

void
metrics_verdict(int slot, enum pc_stage stage, enum pc_action action)
{
	if (slot < 0 || slot >= METRICS_FILTERS || (unsigned)stage >= METRICS_STAGES ||
	    (unsigned)action >= METRICS_ACTIONS)
		return;
	metrics_cur->f[slot].verdict[stage][action]++;
}

void
metrics_filter_failed(int slot, int timeout)
{
	if (slot < 0 || slot >= METRICS_FILTERS)
		return;
	if (timeout)
		metrics_cur->f[slot].timeouts++;
	else
		metrics_cur->f[slot].errors++;
}

void
metrics_filter_time(int slot, double seconds)
{
	if (slot < 0 || slot >= METRICS_FILTERS)
		return;
	hist_add(&metrics_cur->f[slot].time, seconds);
}

/* Rendering. */

static void
hist_sum(struct metrics_hist *to, const struct metrics_hist *h)
{
	size_t i;

	for (i = 0; i <= METRICS_BUCKETS; i++)
		to->bucket[i] += h->bucket[i];
	to->count += h->count;
	to->sum += h->sum;
}

/* name_ok - a filter name from another process's block ends within its
 * field: a worker's block is read by the master, and a worker may be
 * broken */
static int
name_ok(const struct metrics_filter *f)
{
	return memchr(f->name, '\0', sizeof(f->name)) != NULL;
}

/* metrics_fold - see metrics.h */
void
metrics_fold(struct metrics_shard *dst, const struct metrics_shard *src)
{
	size_t i, j, st, a;

	for (i = 0; i < M__N; i++)
		dst->c[i] += src->c[i];
	for (i = 0; i < H__N; i++)
		hist_sum(&dst->h[i], &src->h[i]);
	for (i = 0; i < METRICS_FILTERS && src->f[i].name[0] != '\0'; i++) {
		const struct metrics_filter *f = &src->f[i];
		if (!name_ok(f))
			continue;
		for (j = 0; j < METRICS_FILTERS && dst->f[j].name[0] != '\0' &&
		     strcmp(dst->f[j].name, f->name) != 0;
		     j++)
			;
		if (j == METRICS_FILTERS)
			continue; /* as many names as render keeps */
		if (dst->f[j].name[0] == '\0')
			memcpy(dst->f[j].name, f->name, sizeof(f->name));
		for (st = 0; st < METRICS_STAGES; st++)
			for (a = 0; a < METRICS_ACTIONS; a++)
				dst->f[j].verdict[st][a] += f->verdict[st][a];
		dst->f[j].errors += f->errors;
		dst->f[j].timeouts += f->timeouts;
		hist_sum(&dst->f[j].time, &f->time);
	}
}

/* A float as Prometheus reads it: shortest round-trip form. */
static void
put_float(struct evbuffer *out, double v)
{
	if (isinf(v))
		evbuffer_add_printf(out, "%s", v > 0 ? "+Inf" : "-Inf");
	else {
		char buf[32];
		/* the shortest form that reads back the same number */
		snprintf(buf, sizeof(buf), "%.15g", v);
		if (strtod(buf, NULL) != v)
			snprintf(buf, sizeof(buf), "%.17g", v);
		evbuffer_add(out, buf, strlen(buf));
	}
}

/* hist_render - name_bucket{labels,le="..."} cumulatively, _sum, _count */
static void
hist_render(
    struct evbuffer *out, const char *name, const char *labels, const struct metrics_hist *h)
{
	const char *sep = labels[0] != '\0' ? "," : "";
	uint64_t cum = 0;
	size_t i;

	for (i = 0; i < METRICS_BUCKETS; i++) {
		cum += h->bucket[i];
		evbuffer_add_printf(out, "%s_bucket{%s%sle=\"", name, labels, sep);
		put_float(out, bucket_le[i]);
		evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)cum);
	}
	cum += h->bucket[METRICS_BUCKETS];
	evbuffer_add_printf(
	    out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
	evbuffer_add_printf(
	    out, "%s_sum%s%s%s ", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "");
	put_float(out, h->sum);
	evbuffer_add_printf(out, "\n%s_count%s%s%s %llu\n", name, labels[0] ? "{" : "", labels,
	    labels[0] ? "}" : "", (unsigned long long)h->count);
}

static void
family(struct evbuffer *out, const char *name, const char *help, const char *type)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The filters of all shards, merged by name (a worker's slots may differ). */
struct merged {
	size_t n;
	struct metrics_filter f[METRICS_FILTERS];
};

static void
merge_filters(struct merged *m, const struct metrics_shard *shards, size_t nshards)
{
	size_t s, i, j, st, a;

	m->n = 0;
	for (s = 0; s < nshards; s++)
		for (i = 0; i < METRICS_FILTERS && shards[s].f[i].name[0] != '\0'; i++) {
			const struct metrics_filter *f = &shards[s].f[i];
			if (!name_ok(f))
				continue;
			for (j = 0; j < m->n && strcmp(m->f[j].name, f->name) != 0; j++)
				;
			if (j == m->n) {
				if (m->n == METRICS_FILTERS)
					continue;
				memset(&m->f[j], 0, sizeof(m->f[j]));
				memcpy(m->f[j].name, f->name, sizeof(f->name));
				m->n++;
			}
			for (st = 0; st < METRICS_STAGES; st++)
				for (a = 0; a < METRICS_ACTIONS; a++)
					m->f[j].verdict[st][a] += f->verdict[st][a];
			m->f[j].errors += f->errors;
			m->f[j].timeouts += f->timeouts;
			hist_sum(&m->f[j].time, &f->time);
		}
}

/* A filter name is a section name (letters, digits, "_-."), but quote it
 * as the format says all the same. */
static const char *
label_value(char *buf, size_t size, const char *s)
{
	size_t n = 0;

	for (; *s != '\0' && n + 3 < size; s++) {
		if (*s == '\\' || *s == '"')
			buf[n++] = '\\';
		else if (*s == '\n') {
			buf[n++] = '\\';
			buf[n++] = 'n';
			continue;
		}
		buf[n++] = *s;
	}
	buf[n] = '\0';
	return buf;
}

int
metrics_render(struct evbuffer *out, const struct metrics_shard *shards, size_t nshards)
{
	static struct merged m; /* 64 filters of histograms: not on the stack */
	uint64_t c[M__N] = {0};
	int64_t g[G__N] = {0};
	struct metrics_hist h[H__N];
	char name[2 * METRICS_NAME_MAX + 1], labels[256];
	size_t s, i, st, a;

	memset(h, 0, sizeof(h));
	for (s = 0; s < nshards; s++) {
		for (i = 0; i < M__N; i++)
			c[i] += shards[s].c[i];
		for (i = 0; i < G__N; i++)
			g[i] += shards[s].g[i];
		for (i = 0; i < H__N; i++)
			hist_sum(&h[i], &shards[s].h[i]);
	}
	/* The generation is the daemon's, not a sum: the first block is the
	 * process's own (the master's, with workers). */
	if (nshards > 0)
		g[G_GENERATION] = shards[0].g[G_GENERATION];

	/* A family's samples go together, whatever the enum's order: each
	 * row with HELP opens a family, and takes every row of its name. */
	for (i = 0; i < M__N; i++) {
		if (counter_desc[i].help == NULL)
			continue;
		family(out, counter_desc[i].name, counter_desc[i].help, "counter");
		for (size_t j = i; j < M__N; j++) {
			const struct counter_desc *d = &counter_desc[j];
			if (strcmp(d->name, counter_desc[i].name) != 0)
				continue;
			if (d->labels[0] != '\0')
				evbuffer_add_printf(out, "%s{%s} %llu\n", d->name, d->labels,
				    (unsigned long long)c[j]);
			else
				evbuffer_add_printf(
				    out, "%s %llu\n", d->name, (unsigned long long)c[j]);
		}
	}
	for (i = 0; i < G__N; i++) {
		family(out, gauge_desc[i].name, gauge_desc[i].help, "gauge");
		evbuffer_add_printf(out, "%s %lld\n", gauge_desc[i].name, (long long)g[i]);
	}
	for (i = 0; i < H__N; i++) {
		family(out, hist_desc[i].name, hist_desc[i].help, "histogram");
		hist_render(out, hist_desc[i].name, "", &h[i]);
	}

	merge_filters(&m, shards, nshards);
	family(out, "portcullis_filter_verdicts_total",
	    "Verdicts given by each filter, by stage and action.", "counter");
	for (i = 0; i < m.n; i++)
		for (st = 0; st < METRICS_STAGES; st++)
			for (a = 0; a < METRICS_ACTIONS; a++)
				if (m.f[i].verdict[st][a] != 0)
					evbuffer_add_printf(out,
					    "portcullis_filter_verdicts_total{filter=\"%s\",stage=\"%s\","
					    "action=\"%s\"} %llu\n",
					    label_value(name, sizeof(name), m.f[i].name),
					    verdict_stage_name((int)st),
					    verdict_action_name((int)a),
					    (unsigned long long)m.f[i].verdict[st][a]);
	family(out, "portcullis_filter_failures_total",
	    "Filter calls that failed (kind=error: an error or an invalid answer; kind=timeout: no "
	    "answer within the filter's timeout); each is the filter's on_error.",
	    "counter");
	for (i = 0; i < m.n; i++) {
		label_value(name, sizeof(name), m.f[i].name);
		evbuffer_add_printf(out,
		    "portcullis_filter_failures_total{filter=\"%s\",kind=\"error\"} %llu\n"
		    "portcullis_filter_failures_total{filter=\"%s\",kind=\"timeout\"} %llu\n",
		    name, (unsigned long long)m.f[i].errors, name,
		    (unsigned long long)m.f[i].timeouts);
	}
	family(out, "portcullis_filter_duration_seconds",
	    "Time from a filter hook's call to its answer.", "histogram");
	for (i = 0; i < m.n; i++) {
		snprintf(labels, sizeof(labels), "filter=\"%s\"",
		    label_value(name, sizeof(name), m.f[i].name));
		hist_render(out, "portcullis_filter_duration_seconds", labels, &m.f[i].time);
	}
	return evbuffer_get_length(out) > 0 ? 0 : -1;
}
