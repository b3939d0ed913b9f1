/*
 * test_chain.c - unit tests for proxy/chain.c: the chain's rules with fake
 * in-process plugins and a real event loop (DESIGN.md §3): order, the first
 * non-continue verdict decides, accept ends the stage, observe, on_error in
 * its three settings, invalid verdicts, pending hooks that resume, time out
 * or are cancelled, and the verdict trail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "chain.h"
#include "log.h"
#include "replies.h"

/* What a fake instance does when asked. */
struct fake {
	int action;
	const char *reply;
	int pending_ms; /* > 0: go pending and resume after this long */
	int never; /* go pending, never resume */
	int no_register; /* answer pending without host->pending */
	int inline_resume; /* pending, then resume inside the hook */
	int calls, cancels;
	struct event *timer;
	struct pc_call *call;
	const struct pc_host *host;
};

static struct event_base *base;
static struct chain_result last;
static int ndone;

static void
fake_cancel(void *arg)
{
	struct fake *f = arg;

	f->cancels++;
	if (f->timer != NULL)
		event_free(f->timer);
	f->timer = NULL;
}

static void
fake_fire(evutil_socket_t fd, short what, void *arg)
{
	struct fake *f = arg;
	struct pc_verdict v = {f->action, f->reply};

	event_free(f->timer);
	f->timer = NULL;
	f->host->resume(f->call, &v);
}

static int
fake_hook(void *inst, struct pc_call *call, struct pc_verdict *v)
{
	struct fake *f = inst;

	f->calls++;
	f->call = call;
	if (f->no_register)
		return PC_HOOK_PENDING;
	if (f->never || f->pending_ms > 0 || f->inline_resume) {
		assert_int_equal(f->host->pending(call, fake_cancel, f), 0);
		if (f->inline_resume) {
			struct pc_verdict r = {f->action, f->reply};
			f->host->resume(call, &r);
		} else if (!f->never) {
			struct timeval tv = {0, f->pending_ms * 1000};
			f->timer = evtimer_new(base, fake_fire, f);
			evtimer_add(f->timer, &tv);
		}
		return PC_HOOK_PENDING;
	}
	v->action = (enum pc_action)f->action;
	v->reply = f->reply;
	return PC_HOOK_DONE;
}

static const struct pc_plugin fake_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "fake",
    .mail = fake_hook,
    .rcpt = fake_hook,
};

/* The chain under test: instances named a, b, c over fakes[]. */
static struct fake fakes[3];
static struct chain chain;
static struct pc_instance inst[3];
static struct chain_view view;
static struct chain_session *cs;

static void
on_done(void *arg, const struct chain_result *r)
{
	last = *r;
	ndone++;
}

static int
setup(void **state)
{
	static const char *const names[] = {"a", "b", "c"};

	memset(fakes, 0, sizeof(fakes));
	memset(inst, 0, sizeof(inst));
	memset(&chain, 0, sizeof(chain));
	memset(&last, 0, sizeof(last));
	ndone = 0;
	base = event_base_new();
	memset(&view, 0, sizeof(view));
	view.id = "TESTSESS01";
	view.hostname = "mx.test";
	chain_host_init(&chain.host, base, NULL);
	chain.f = inst;
	chain.n = 3;
	chain.stages = 1u << PC_STAGE_MAIL | 1u << PC_STAGE_RCPT;
	for (int i = 0; i < 3; i++) {
		inst[i].name = (char *)names[i];
		inst[i].pl = &fake_plugin;
		inst[i].inst = &fakes[i];
		inst[i].index = (size_t)i;
		inst[i].timeout_ms = 200;
		fakes[i].host = &chain.host;
	}
	cs = calloc(1, sizeof(*cs));
	assert_int_equal(chain_session_init(&chain, cs, &view), 0);
	return 0;
}

static int
teardown(void **state)
{
	chain_session_end(cs);
	free(cs);
	event_base_free(base);
	return 0;
}

/* run - one MAIL stage to the end, the loop turning until done */
static void
run(void)
{
	chain_run(cs, PC_STAGE_MAIL, on_done, NULL);
	for (int i = 0; i < 100 && ndone == 0; i++)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(ndone, 1);
}

static void
test_all_continue(void **state)
{
	run();
	assert_int_equal(last.action, PC_CONTINUE);
	assert_null(last.by);
	for (int i = 0; i < 3; i++)
		assert_int_equal(fakes[i].calls, 1);
}

static void
test_first_decides(void **state)
{
	fakes[1].action = PC_REJECT;
	fakes[2].action = PC_TEMPFAIL;
	run();
	assert_int_equal(last.action, PC_REJECT);
	assert_string_equal(last.by, "b");
	assert_string_equal(last.reply, "550 5.7.1 Rejected by policy");
	assert_int_equal(fakes[0].calls, 1);
	assert_int_equal(fakes[2].calls, 0);
	assert_string_equal(cs->trail, "b:reject@mail");
}

static void
test_order_swapped(void **state)
{
	fakes[1].action = PC_TEMPFAIL;
	fakes[2].action = PC_REJECT;
	fakes[2].reply = "554 5.7.1 no";
	run();
	assert_int_equal(last.action, PC_TEMPFAIL);
	assert_string_equal(last.by, "b");
	assert_int_equal(fakes[2].calls, 0);
}

static void
test_accept_ends_stage(void **state)
{
	fakes[0].action = PC_ACCEPT;
	fakes[1].action = PC_REJECT;
	run();
	assert_int_equal(last.action, PC_ACCEPT);
	assert_string_equal(last.by, "a");
	assert_int_equal(fakes[1].calls, 0);
	/* ... for this stage only: the next stage asks everyone again. */
	ndone = 0;
	fakes[0].action = PC_CONTINUE;
	view.arg = "x@y";
	chain_run(cs, PC_STAGE_RCPT, on_done, NULL);
	assert_int_equal(ndone, 1);
	assert_int_equal(last.action, PC_REJECT);
	assert_int_equal(fakes[1].calls, 1);
}

static void
test_observe(void **state)
{
	inst[0].observe = 1;
	fakes[0].action = PC_REJECT;
	fakes[1].action = PC_DROP;
	run();
	assert_int_equal(last.action, PC_DROP);
	assert_string_equal(last.by, "b");
	assert_string_equal(cs->trail, "a:observe-reject@mail,b:drop@mail");
}

static void
test_on_error_tempfail(void **state)
{
	fakes[0].action = PC_REJECT;
	fakes[0].reply = "250 2.0.0 Ok";
	run();
	assert_int_equal(last.action, PC_TEMPFAIL);
	assert_true(last.failed);
	assert_string_equal(last.reply, "451 4.3.0 Temporary filter failure, try again later");
	assert_int_equal(fakes[1].calls, 0);
}

static void
test_on_error_reject(void **state)
{
	inst[0].on_error = CONFIG_ON_ERROR_REJECT;
	fakes[0].action = 99;
	run();
	assert_int_equal(last.action, PC_REJECT);
	assert_string_equal(last.reply, "550 5.3.0 Refused after a filter failure");
	assert_string_equal(last.by, "a");
}

static void
test_on_error_accept(void **state)
{
	/* Fail open: the failing instance is skipped, the rest are asked. */
	inst[0].on_error = CONFIG_ON_ERROR_ACCEPT;
	fakes[0].action = PC_FAIL;
	fakes[2].action = PC_REJECT;
	run();
	assert_int_equal(last.action, PC_REJECT);
	assert_string_equal(last.by, "c");
	assert_string_equal(cs->trail, "a:error@mail,c:reject@mail");
}

static void
test_pending_resumes(void **state)
{
	fakes[0].pending_ms = 20;
	fakes[0].action = PC_CONTINUE;
	fakes[1].pending_ms = 10;
	fakes[1].action = PC_REJECT;
	fakes[1].reply = "553 5.1.8 bad sender";
	chain_run(cs, PC_STAGE_MAIL, on_done, NULL);
	assert_int_equal(ndone, 0); /* waiting, and the loop is free */
	for (int i = 0; i < 100 && ndone == 0; i++)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(ndone, 1);
	assert_int_equal(last.action, PC_REJECT);
	assert_string_equal(last.reply, "553 5.1.8 bad sender");
	assert_int_equal(fakes[2].calls, 0);
	assert_int_equal(fakes[0].cancels + fakes[1].cancels, 0);
}

static void
test_inline_resume(void **state)
{
	fakes[0].inline_resume = 1;
	fakes[0].action = PC_TEMPFAIL;
	chain_run(cs, PC_STAGE_MAIL, on_done, NULL);
	assert_int_equal(ndone, 1);
	assert_int_equal(last.action, PC_TEMPFAIL);
}

static void
test_timeout(void **state)
{
	fakes[0].never = 1;
	inst[0].timeout_ms = 30;
	fakes[1].action = PC_REJECT;
	run();
	assert_int_equal(fakes[0].cancels, 1);
	assert_int_equal(last.action, PC_TEMPFAIL);
	assert_true(last.failed);
	assert_int_equal(fakes[1].calls, 0);
}

static void
test_timeout_then_accept(void **state)
{
	fakes[0].never = 1;
	inst[0].timeout_ms = 30;
	inst[0].on_error = CONFIG_ON_ERROR_ACCEPT;
	fakes[1].action = PC_REJECT;
	run();
	assert_int_equal(fakes[0].cancels, 1);
	assert_int_equal(last.action, PC_REJECT);
	assert_string_equal(last.by, "b");
}

static void
test_pending_without_register(void **state)
{
	fakes[0].no_register = 1;
	run();
	assert_int_equal(last.action, PC_TEMPFAIL);
	assert_true(last.failed);
}

static void
test_cancel(void **state)
{
	fakes[1].pending_ms = 50;
	fakes[1].action = PC_REJECT;
	chain_run(cs, PC_STAGE_MAIL, on_done, NULL);
	chain_cancel(cs);
	assert_int_equal(fakes[1].cancels, 1);
	/* The timer the plugin freed in cancel never fires; done never comes. */
	for (int i = 0; i < 5; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(ndone, 0);
}

static void
test_skips_missing_hooks(void **state)
{
	static const struct pc_plugin mail_only = {
	    PC_PLUGIN_ABI_INIT, .name = "mailonly", .mail = fake_hook};

	inst[1].pl = &mail_only;
	fakes[1].action = PC_REJECT;
	view.arg = "x@y";
	chain_run(cs, PC_STAGE_RCPT, on_done, NULL);
	assert_int_equal(ndone, 1);
	assert_int_equal(last.action, PC_CONTINUE);
	assert_int_equal(fakes[1].calls, 0);
	assert_int_equal(fakes[0].calls, 1);
	assert_int_equal(fakes[2].calls, 1);
}

/* ABI 2 fields: the address split, trusted, the client name, the cipher */
static void
test_split_fields(void **state)
{
	const struct pc_host *h = &chain.host;
	struct pc_call *call = &cs->call;
	const char *local;

	view.sender = "Joe.Bloggs@Example.COM";
	view.arg = "\"a@b\"@X.Org";
	view.client_name = "mail.example.com";
	view.tls_cipher = "TLS_AES_256_GCM_SHA384";
	chain_run(cs, PC_STAGE_RCPT, on_done, NULL);
	call->in_stage = 1; /* as while a hook runs */
	assert_string_equal(h->get(call, PC_SENDER_LOCAL), "Joe.Bloggs");
	assert_string_equal(h->get(call, PC_SENDER_DOMAIN), "example.com");
	local = h->get(call, PC_RCPT_LOCAL);
	assert_string_equal(local, "\"a@b\"");
	assert_string_equal(h->get(call, PC_RCPT_DOMAIN), "x.org");
	for (int i = 0; i < 100; i++)
		assert_ptr_equal(h->get(call, PC_RCPT_LOCAL), local);
	assert_string_equal(h->get(call, PC_CLIENT_NAME), "mail.example.com");
	assert_string_equal(h->get(call, PC_TLS_CIPHER), "TLS_AES_256_GCM_SHA384");
	assert_null(h->get(call, PC_CLIENT_TRUSTED));
	view.trusted = 1;
	assert_string_equal(h->get(call, PC_CLIENT_TRUSTED), "1");
	view.sender = "";
	assert_string_equal(h->get(call, PC_SENDER_LOCAL), "");
	assert_null(h->get(call, PC_SENDER_DOMAIN));
	call->stage = PC_STAGE_MAIL; /* the recipient is only there at RCPT */
	assert_null(h->get(call, PC_RCPT_DOMAIN));
	call->in_stage = 0;
}

/* Scores: the session's carry into each transaction; the transaction's go */
static void
test_scores_session_and_tx(void **state)
{
	const struct pc_host *h = &chain.host;
	struct pc_call *call = &cs->call;
	const char *sym;
	double pts;
	char buf[128];

	chain_run(cs, PC_STAGE_MAIL, on_done, NULL);
	call->stage = PC_STAGE_CONNECT;
	call->in_stage = 1;
	assert_int_equal(h->add_score(call, "NO_PTR", 1.5, "no PTR record"), 0);
	assert_true(h->score(call) == 1.5);
	chain_tx_begin(cs);
	call->stage = PC_STAGE_RCPT;
	assert_int_equal(h->add_score(call, "RBL", 3, NULL), 0);
	assert_int_equal(h->add_score(call, "bad symbol", 3, NULL), -1);
	assert_true(h->score(call) == 4.5);
	assert_int_equal(h->score_at(call, 1, &sym, &pts, NULL), 0);
	assert_string_equal(sym, "RBL");
	chain_score_summary(cs, buf, sizeof(buf));
	assert_string_equal(buf, "score=4.5 symbols=NO_PTR(1.5),RBL(3)");
	call->in_stage = 0;
	assert_int_equal(h->add_score(call, "LATE", 1, NULL), -1); /* not in a stage */
	chain_tx_end(cs);
	assert_true(h->score(call) == 1.5); /* the session's again */
	chain_tx_begin(cs);
	assert_true(h->score(call) == 1.5);
	assert_int_equal(h->score_at(call, 1, &sym, &pts, NULL), -1);
	chain_tx_end(cs);
}

/* Message and envelope changes: at DATA only */
static void
test_changes_only_at_data(void **state)
{
	const struct pc_host *h = &chain.host;
	struct pc_call *call = &cs->call;

	chain_run(cs, PC_STAGE_MAIL, on_done, NULL);
	call->in_stage = 1;
	assert_int_equal(h->add_rcpt(call, "x@example.com", NULL), -1);
	assert_int_equal(h->change_sender(call, "x@example.com", NULL), -1);
	assert_int_equal(h->insert_header(call, 0, "X-A", "1"), -1);
	assert_int_equal(h->body_replace_begin(call), -1);
	call->in_stage = 0;
	assert_null(chain_envelope(cs)->sender);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_all_continue, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_first_decides, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_order_swapped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_accept_ends_stage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_observe, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_on_error_tempfail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_on_error_reject, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_on_error_accept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pending_resumes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_inline_resume, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout_then_accept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pending_without_register, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_skips_missing_hooks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_split_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scores_session_and_tx, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_changes_only_at_data, setup, teardown),
	};
	log_init(CONFIG_LOG_STDERR, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
