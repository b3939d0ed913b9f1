/*
 * metrics.h - the daemon's counters, gauges and histograms (metrics.c), and
 * the HTTP endpoint that serves them (metrics_http.c): /metrics in the
 * Prometheus text format, /healthz and /sessions.
 *
 * Every number lives in one plain block of memory without pointers (struct
 * metrics_shard), so a process with several workers can keep one block per
 * worker in shared memory and the endpoint sums them. Label sets are fixed
 * by the code (reasons, statuses, stages, actions) or by the configuration
 * (filter names, at most METRICS_FILTERS of them): never by a peer.
 */
#ifndef PORTCULLIS_METRICS_H
#define PORTCULLIS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "portcullis/plugin.h"

/* Counters without a filter label. The names and labels are metrics.c's
 * table, in this order. */
enum metric {
	M_CONN_ACCEPTED,
	/* connections refused, by reason */
	M_CONN_REFUSED_LIMIT, /* max_connections */
	M_CONN_REFUSED_IP_LIMIT, /* max_connections_per_ip */
	M_CONN_REFUSED_DRAINING, /* shutting down */
	M_CONN_REFUSED_PROXY, /* PROXY: untrusted sender or a bad header */
	M_CONN_REFUSED_TLS, /* smtps: the handshake failed */
	M_CONN_REFUSED_FILTER, /* a connect filter refused or dropped */
	M_CONN_REFUSED_BACKEND, /* the backend could not be reached for its banner */
	/* transactions, by final status */
	M_TX_SENT,
	M_TX_REJECTED,
	M_TX_TEMPFAILED,
	M_TX_DROPPED,
	M_TX_ABORTED,
	/* recipients */
	M_RCPT_ACCEPTED,
	M_RCPT_REFUSED_PROXY, /* by a filter or by us (limits, syntax) */
	M_RCPT_REFUSED_BACKEND,
	M_BACKEND_CONNECT_FAILED,
	/* TLS handshakes with clients (STARTTLS and smtps) and the backend */
	M_TLS_CLIENT_OK,
	M_TLS_CLIENT_RESUMED, /* of those, a session resumed (ticket or cache) */
	M_TLS_CLIENT_FAILED,
	M_TLS_BACKEND_OK,
	M_TLS_BACKEND_FAILED,
	/* octets: from and to clients, to and from the backend */
	M_OCTETS_CLIENT_IN,
	M_OCTETS_CLIENT_OUT,
	M_OCTETS_BACKEND_OUT,
	M_OCTETS_BACKEND_IN,
	/* smuggling attempts refused */
	M_SMUGGLE_BARE_LF,
	M_SMUGGLE_BARE_CR,
	M_SMUGGLE_NUL,
	M_RELOAD_OK,
	M_RELOAD_FAILED,
	M_DNS_FAILED, /* resolver errors and timeouts (not NXDOMAIN) */
	M_WORKER_DEATHS, /* workers that died unasked (the master's count) */
	M__N
};

enum metric_gauge {
	G_SESSIONS, /* open sessions */
	G_PENDING, /* filter calls waiting for an answer */
	G_GENERATION, /* the configuration generation (1, then +1 per reload) */
	G_WORKERS, /* worker processes running (the master's) */
	G__N
};

enum metric_histogram {
	H_TX_DURATION, /* MAIL to the transaction's end, in seconds */
	H_BACKEND_REPLY, /* a command sent to the backend to its reply */
	H__N
};

#define METRICS_BUCKETS 14 /* per histogram, +Inf not counted */
#define METRICS_FILTERS 64 /* distinct filter names */
#define METRICS_NAME_MAX 64
#define METRICS_STAGES 5 /* PC_STAGE_CONNECT .. PC_STAGE_DATA */
#define METRICS_ACTIONS 6 /* PC_CONTINUE .. PC_DISCONNECT */

struct metrics_hist {
	uint64_t bucket[METRICS_BUCKETS + 1]; /* not cumulative; the last is +Inf */
	uint64_t count;
	double sum;
};

struct metrics_filter {
	char name[METRICS_NAME_MAX]; /* "" while the slot is free */
	uint64_t verdict[METRICS_STAGES][METRICS_ACTIONS];
	uint64_t errors, timeouts;
	struct metrics_hist time;
};

struct metrics_shard {
	uint64_t c[M__N];
	int64_t g[G__N];
	struct metrics_hist h[H__N];
	struct metrics_filter f[METRICS_FILTERS];
};

/* This process's block (a static one until metrics_use points elsewhere). */
extern struct metrics_shard *metrics_cur;

static inline void
metrics_inc(enum metric m)
{
	metrics_cur->c[m]++;
}

static inline void
metrics_add(enum metric m, uint64_t n)
{
	metrics_cur->c[m] += n;
}

static inline void
metrics_gauge_add(enum metric_gauge g, int64_t delta)
{
	metrics_cur->g[g] += delta;
}

static inline void
metrics_gauge_set(enum metric_gauge g, int64_t v)
{
	metrics_cur->g[g] = v;
}

/* metrics_use - count into shard from now on (a worker's block). */
void metrics_use(struct metrics_shard *shard);
/* metrics_set_source - what the endpoint serves and the status line
 * counts: n blocks summed (the master: every worker's and its own); NULL
 * for this process's block alone (the default). */
void metrics_set_source(const struct metrics_shard *shards, size_t n);
/* metrics_source - those blocks, their count in *n. */
const struct metrics_shard *metrics_source(size_t *n);
/* metrics_gauge_total - gauge g summed over the source. */
int64_t metrics_gauge_total(enum metric_gauge g);
/* metrics_fold - add src's counters and histograms to dst, filters by
 * name; not its gauges (a dead worker's counts live on in the master's
 * block, its open sessions do not). */
void metrics_fold(struct metrics_shard *dst, const struct metrics_shard *src);
/* metrics_observe - one observation of seconds into histogram h. */
void metrics_observe(enum metric_histogram h, double seconds);
/* metrics_filter_slot - the slot of a filter name (kept across reloads,
 * so its counters go on); -1 when METRICS_FILTERS names are taken. */
int metrics_filter_slot(const char *name);
/* metrics_verdict - filter slot gave action at stage (slot -1: ignored). */
void metrics_verdict(int slot, enum pc_stage stage, enum pc_action action);
/* metrics_filter_failed - a failure (timeout: no answer in time). */
void metrics_filter_failed(int slot, int timeout);
/* metrics_filter_time - how long a hook call took, answer included. */
void metrics_filter_time(int slot, double seconds);

/* metrics_render - the Prometheus text format of nshards blocks summed,
 * appended to out (a struct evbuffer); 0 or -1 (out of memory). */
struct evbuffer;
int metrics_render(struct evbuffer *out, const struct metrics_shard *shards, size_t nshards);

/* metrics_now - a monotonic clock in seconds, for the histograms. */
double metrics_now(void);

#endif
