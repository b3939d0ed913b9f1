/*
 * test_metrics.c - unit tests for proxy/metrics.c: the counting block and
 * its Prometheus text rendering.
 *
 * Histogram buckets at and around their bounds (cumulative, +Inf last);
 * filter slots (the same name the same slot, the table full, names too
 * long); invalid stages and actions ignored; every family's samples
 * together after its HELP and TYPE, whatever the enum order; several blocks
 * (workers) summed, filters merged by name, the generation not summed;
 * label values quoted.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "metrics.h"

static struct metrics_shard shards[3];

static int
setup(void **state)
{
	(void)state;
	memset(shards, 0, sizeof(shards));
	metrics_use(&shards[0]);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	metrics_use(NULL);
	return 0;
}

/* render - the text of n blocks, NUL-terminated (freed by the caller) */
static char *
render(size_t n)
{
	struct evbuffer *b = evbuffer_new();
	size_t len;
	char *s;

	assert_non_null(b);
	assert_int_equal(metrics_render(b, shards, n), 0);
	len = evbuffer_get_length(b);
	s = malloc(len + 1);
	assert_non_null(s);
	evbuffer_remove(b, s, len);
	s[len] = '\0';
	evbuffer_free(b);
	return s;
}

/* has_line - the text holds this exact line */
static int
has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	const char *p = text;

	while ((p = strstr(p, line)) != NULL) {
		if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
			return 1;
		p++;
	}
	return 0;
}

static void
test_counters_and_gauges(void **state)
{
	char *t;

	(void)state;
	metrics_inc(M_CONN_ACCEPTED);
	metrics_inc(M_CONN_ACCEPTED);
	metrics_add(M_OCTETS_CLIENT_IN, 1234);
	metrics_gauge_add(G_SESSIONS, 3);
	metrics_gauge_add(G_SESSIONS, -1);
	metrics_gauge_set(G_GENERATION, 7);
	t = render(1);
	assert_true(has_line(t, "portcullis_connections_accepted_total 2"));
	assert_true(has_line(t, "portcullis_octets_total{peer=\"client\",direction=\"in\"} 1234"));
	assert_true(has_line(t, "portcullis_octets_total{peer=\"client\",direction=\"out\"} 0"));
	assert_true(has_line(t, "portcullis_sessions 2"));
	assert_true(has_line(t, "portcullis_config_generation 7"));
	assert_true(has_line(t, "# TYPE portcullis_sessions gauge"));
	assert_true(has_line(t, "# TYPE portcullis_connections_refused_total counter"));
	free(t);
}

/* Each family once, its samples straight after its TYPE line: the TLS
 * counters interleave in the enum (client ok, failed, backend ok...). */
static void
test_families_contiguous(void **state)
{
	char *t, *line, *save = NULL;
	char current[128] = "", seen[4096] = " ";

	(void)state;
	metrics_inc(M_TLS_BACKEND_OK);
	t = render(1);
	for (line = strtok_r(t, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		char name[128], key[140];
		if (strncmp(line, "# HELP ", 7) == 0)
			continue;
		if (strncmp(line, "# TYPE ", 7) == 0) {
			assert_int_equal(sscanf(line + 7, "%127s", current), 1);
			snprintf(key, sizeof(key), " %s ", current);
			assert_null(strstr(seen, key)); /* a family opens once */
			strncat(seen, key + 1, sizeof(seen) - strlen(seen) - 1);
			continue;
		}
		assert_int_equal(sscanf(line, "%127[^{ ]", name), 1);
		/* a sample belongs to the family last opened */
		assert_int_equal(strncmp(name, current, strlen(current)), 0);
	}
	free(t);
	t = render(1);
	assert_true(has_line(t, "portcullis_tls_handshakes_total{side=\"backend\"} 1"));
	free(t);
}

static void
test_histogram_buckets(void **state)
{
	char *t;

	(void)state;
	metrics_observe(H_BACKEND_REPLY, 0.0005); /* on a bound: that bucket */
	metrics_observe(H_BACKEND_REPLY, 0.00051); /* just over: the next */
	metrics_observe(H_BACKEND_REPLY, 60); /* the last bound */
	metrics_observe(H_BACKEND_REPLY, 61); /* +Inf only */
	metrics_observe(H_BACKEND_REPLY, -1); /* a clock that went back: 0 */
	t = render(1);
	assert_true(has_line(t, "portcullis_backend_reply_seconds_bucket{le=\"0.0005\"} 2"));
	assert_true(has_line(t, "portcullis_backend_reply_seconds_bucket{le=\"0.001\"} 3"));
	assert_true(has_line(t, "portcullis_backend_reply_seconds_bucket{le=\"10\"} 3"));
	assert_true(has_line(t, "portcullis_backend_reply_seconds_bucket{le=\"60\"} 4"));
	assert_true(has_line(t, "portcullis_backend_reply_seconds_bucket{le=\"+Inf\"} 5"));
	assert_true(has_line(t, "portcullis_backend_reply_seconds_count 5"));
	/* the sum is read back as the same double (shortest round trip) */
	{
		const char *p = strstr(t, "\nportcullis_backend_reply_seconds_sum ");
		assert_non_null(p);
		assert_true(strtod(p + 38, NULL) == 0.0005 + 0.00051 + 60 + 61 + 0);
	}
	assert_true(has_line(t, "portcullis_transaction_duration_seconds_count 0"));
	free(t);
}

static void
test_filter_slots(void **state)
{
	char name[METRICS_NAME_MAX + 8];
	int a, b, i;

	(void)state;
	a = metrics_filter_slot("spam");
	b = metrics_filter_slot("grey");
	assert_int_equal(a, 0);
	assert_int_equal(b, 1);
	assert_int_equal(metrics_filter_slot("spam"), a);
	assert_int_equal(metrics_filter_slot(""), -1);
	memset(name, 'x', METRICS_NAME_MAX);
	name[METRICS_NAME_MAX] = '\0';
	assert_int_equal(metrics_filter_slot(name), -1); /* too long */
	for (i = 2; i < METRICS_FILTERS; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		assert_int_equal(metrics_filter_slot(name), i);
	}
	assert_int_equal(metrics_filter_slot("one-too-many"), -1);
	assert_int_equal(metrics_filter_slot("grey"), b);
	/* -1 and out-of-range values are ignored, not written anywhere */
	metrics_verdict(-1, PC_STAGE_MAIL, PC_REJECT);
	metrics_verdict(a, (enum pc_stage)99, PC_REJECT);
	metrics_verdict(a, PC_STAGE_MAIL, (enum pc_action)99);
	metrics_filter_failed(METRICS_FILTERS, 1);
	metrics_filter_time(-5, 1.0);
	for (i = 0; i < METRICS_STAGES; i++)
		for (int j = 0; j < METRICS_ACTIONS; j++)
			assert_int_equal(shards[0].f[a].verdict[i][j], 0);
}

static void
test_filter_samples(void **state)
{
	int a = metrics_filter_slot("spam\"x");
	char *t;

	(void)state;
	metrics_verdict(a, PC_STAGE_DATA, PC_REJECT);
	metrics_verdict(a, PC_STAGE_DATA, PC_REJECT);
	metrics_verdict(a, PC_STAGE_CONNECT, PC_DISCONNECT);
	metrics_filter_failed(a, 1);
	metrics_filter_failed(a, 0);
	metrics_filter_failed(a, 1);
	metrics_filter_time(a, 0.02);
	t = render(1);
	assert_true(has_line(t,
	    "portcullis_filter_verdicts_total{filter=\"spam\\\"x\",stage=\"data\","
	    "action=\"reject\"} 2"));
	assert_true(has_line(t,
	    "portcullis_filter_verdicts_total{filter=\"spam\\\"x\",stage="
	    "\"connect\",action=\"disconnect\"} 1"));
	/* verdicts never given have no sample */
	assert_null(strstr(t, "action=\"continue\""));
	assert_true(has_line(t,
	    "portcullis_filter_failures_total{filter=\"spam\\\"x\","
	    "kind=\"timeout\"} 2"));
	assert_true(
	    has_line(t, "portcullis_filter_failures_total{filter=\"spam\\\"x\",kind=\"error\"} 1"));
	assert_true(has_line(t,
	    "portcullis_filter_duration_seconds_bucket{filter=\"spam\\\"x\","
	    "le=\"0.01\"} 0"));
	assert_true(has_line(t,
	    "portcullis_filter_duration_seconds_bucket{filter=\"spam\\\"x\","
	    "le=\"0.025\"} 1"));
	assert_true(
	    has_line(t, "portcullis_filter_duration_seconds_count{filter=\"spam\\\"x\"} 1"));
	free(t);
}

/* Two workers' blocks: sums, filters by name (their slots differ), and
 * the generation taken from the first. */
static void
test_shards_summed(void **state)
{
	char *t;
	int s0, s1;

	(void)state;
	metrics_inc(M_TX_SENT);
	metrics_gauge_add(G_SESSIONS, 2);
	metrics_gauge_set(G_GENERATION, 3);
	metrics_observe(H_TX_DURATION, 0.1);
	s0 = metrics_filter_slot("dkim");
	metrics_verdict(s0, PC_STAGE_RCPT, PC_CONTINUE);

	metrics_use(&shards[1]);
	metrics_inc(M_TX_SENT);
	metrics_inc(M_TX_SENT);
	metrics_gauge_add(G_SESSIONS, 5);
	metrics_gauge_set(G_GENERATION, 3);
	metrics_observe(H_TX_DURATION, 5);
	metrics_filter_slot("other");
	s1 = metrics_filter_slot("dkim");
	assert_int_not_equal(s0, s1);
	metrics_verdict(s1, PC_STAGE_RCPT, PC_CONTINUE);
	metrics_use(&shards[0]);

	t = render(2);
	assert_true(has_line(t, "portcullis_transactions_total{status=\"sent\"} 3"));
	assert_true(has_line(t, "portcullis_sessions 7"));
	assert_true(has_line(t, "portcullis_config_generation 3"));
	assert_true(has_line(t, "portcullis_transaction_duration_seconds_count 2"));
	assert_true(has_line(t, "portcullis_transaction_duration_seconds_bucket{le=\"0.1\"} 1"));
	assert_true(has_line(t, "portcullis_transaction_duration_seconds_bucket{le=\"10\"} 2"));
	assert_true(has_line(t,
	    "portcullis_filter_verdicts_total{filter=\"dkim\",stage=\"rcpt\","
	    "action=\"continue\"} 2"));
	assert_true(
	    has_line(t, "portcullis_filter_failures_total{filter=\"other\",kind=\"error\"} 0"));
	free(t);
}

/* A dead worker's block folded into the master's: its counters,
 * histograms and filters (by name) stay in the sums, its gauges do not;
 * the source is what the endpoint and the status line read. */
static void
test_fold_and_source(void **state)
{
	char *t;
	int s;

	(void)state;
	metrics_gauge_set(G_GENERATION, 2); /* shards[0]: the master's */
	metrics_use(&shards[1]); /* a worker */
	metrics_inc(M_TX_SENT);
	metrics_gauge_add(G_SESSIONS, 4);
	metrics_observe(H_TX_DURATION, 0.1);
	metrics_filter_slot("a");
	s = metrics_filter_slot("dkim");
	metrics_verdict(s, PC_STAGE_DATA, PC_REJECT);
	metrics_use(&shards[2]); /* another, still alive */
	metrics_gauge_add(G_SESSIONS, 1);
	metrics_use(&shards[0]);
	metrics_set_source(shards, 3);
	assert_int_equal(metrics_gauge_total(G_SESSIONS), 5);

	metrics_fold(&shards[0], &shards[1]);
	memset(&shards[1], 0, sizeof(shards[1]));
	assert_int_equal(metrics_gauge_total(G_SESSIONS), 1);
	t = render(3);
	assert_true(has_line(t, "portcullis_transactions_total{status=\"sent\"} 1"));
	assert_true(has_line(t, "portcullis_sessions 1"));
	assert_true(has_line(t, "portcullis_config_generation 2"));
	assert_true(has_line(t, "portcullis_transaction_duration_seconds_count 1"));
	assert_true(has_line(t,
	    "portcullis_filter_verdicts_total{filter=\"dkim\",stage=\"data\","
	    "action=\"reject\"} 1"));
	free(t);
	/* Folded twice (a second death), the counts add up. */
	shards[1].c[M_TX_SENT] = 2;
	metrics_fold(&shards[0], &shards[1]);
	assert_int_equal(shards[0].c[M_TX_SENT], 3);
	metrics_set_source(NULL, 0);
	assert_int_equal(metrics_gauge_total(G_SESSIONS), 0); /* shards[0] alone */
	/* A broken worker's name without its NUL is passed over, not read
	 * past its field. */
	memset(shards[2].f[0].name, 'x', sizeof(shards[2].f[0].name));
	shards[2].f[0].errors = 7;
	metrics_fold(&shards[0], &shards[2]);
	t = render(3);
	assert_null(strstr(t, "xxxxxxxx"));
	free(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_counters_and_gauges, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_families_contiguous, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_histogram_buckets, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_filter_slots, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_filter_samples, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_shards_summed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fold_and_source, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
