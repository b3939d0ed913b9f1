"""The filter chain: verdicts at every stage, chain order, observe mode,
on_error, asynchronous hooks, filter timeouts, invalid verdicts, loading
plugins, the message reader and header edits.

Every filter here is the test plugin tests/plugins/verdict.c, configured per
section; see its header for the keys. What the client sees is checked against
what the recording backend did (or did not) receive.
"""

import os
import re
import time

import pytest

import kit.proxy as kp
from kit.messages import make_message, stuff
from kit.proxy import Proxy, run_check

VERDICT = kp.test_plugin("verdict")
TEST_PLUGIN_DIR = os.path.dirname(VERDICT)
HOST = "proxy.test"  # the hostname kit.proxy.Proxy configures

STAGES = ["connect", "helo", "mail", "rcpt", "data"]
ACTIONS = ["continue", "accept", "reject", "tempfail", "drop", "disconnect"]
# Which reply of run_session() answers each stage.

BODY = (
    b"From: <a@x.test>\r\n"
    b"To: <b@y.test>\r\n"
    b"Subject: chain test\r\n"
    b"\r\n"
    b"Hello.\r\n"
    b".a line with a leading dot\r\n"
    b"last line\r\n"
)

FILTER_FAILURE = "451 4.3.0 Temporary filter failure, try again later"
FILTER_FAILURE_REJECT = "550 5.3.0 Refused after a filter failure"
BOUND = 10.0

from kit.dialogue import (  # noqa: E402  shared with the other filter tests
    STEP,
    assert_backend_stopped_at,
    assert_nothing_delivered,
    config_line,
    default_reply,
    enter_stage,
    refused,
    reply_at,
    start_txn,
    with_body,
)

# This file's BODY is the message by default.
run_session, assert_delivered = with_body(BODY)


# ---- helpers -------------------------------------------------------------


def vsec(name="v1", **keys):
    """A [plugin NAME] section running the verdict test plugin."""
    d = {"path": VERDICT}
    d.update(keys)
    return (f"plugin {name}", d)


_CALL_RE = re.compile(r"verdict (\w+): (hook \w+|reset|close|resume \w+)")


def calls(p, name=None):
    """The verdict plugin's log_calls lines, in order: ["v1 hook mail", ...]."""
    out = []
    for m in _CALL_RE.finditer(p.log()):
        if name is None or m.group(1) == name:
            out.append(m.group(2) if name else f"{m.group(1)} {m.group(2)}")
    return out


def last_summary(p, n=1):
    s = p.wait_summaries(n, timeout=BOUND)
    assert len(s) >= n, p.log()
    return s[-1]


# ---- each verdict at each stage --------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("stage", STAGES)
def test_verdict_at_stage(recorder, proxy, client, stage, action):
    p = proxy(sections=[vsec(stages=stage, action=action)])
    c = client(p)
    replies, closed = run_session(c)
    got = reply_at(replies, stage)
    assert got is not None, replies

    if action in ("continue", "accept"):
        for step in ("banner", "helo", "mail", "datacmd", "data", "quit"):
            assert step in replies, (step, replies)
        assert replies["data"].code == 250, replies["data"]
        assert_delivered(recorder)
        assert last_summary(p)["status"] == "sent"
        return

    if action == "drop":
        # Pretend success all the way; deliver nothing.
        assert replies["banner"].code == 220
        assert replies["helo"].code == 250
        assert replies["mail"].code == 250, replies["mail"]
        assert [r.code for r in replies["rcpt"]] == [250]
        assert replies["datacmd"].code == 354
        assert replies["data"].code == 250, replies["data"]
        assert replies["quit"].code == 221
        if stage == "rcpt":
            assert got.first == "250 2.1.5 Ok"
        if stage == "data":
            assert got.first == "250 2.0.0 Ok"
            assert recorder.wait_command("RSET")
        assert_backend_stopped_at(recorder, stage)
        s = last_summary(p)
        assert s["status"] == "dropped", s
        assert s.get("stage") == stage and s.get("by") == "v1", s
        return

    assert got.first == default_reply(stage, action), replies
    # Nothing after the refused step but QUIT.
    order = ["banner", "helo", "mail", "rcpt", "data"]
    for later in order[order.index(STEP[stage]) + 1 :]:
        assert not replies.get(later), (later, replies)
    if action == "disconnect" or (action == "tempfail" and stage == "connect"):
        assert closed
        assert "quit" not in replies
    else:
        assert replies["quit"].code == 221
    if stage == "data" and action != "disconnect":
        assert recorder.wait_command("RSET")
    assert_backend_stopped_at(recorder, stage)
    if stage == "data" and action in ("reject", "tempfail"):
        s = last_summary(p)
        assert s["status"] == {"reject": "rejected", "tempfail": "tempfail"}[action], s
        assert s.get("stage") == "data" and s.get("by") == "v1", s


@pytest.mark.parametrize("reply", [None, "554 5.7.1 go away"])
def test_connect_reject_repeats_for_every_command(recorder, proxy, client, reply):
    p = proxy(sections=[vsec(stages="connect", action="reject", reply=reply)])
    c = client(p)
    want = reply or "554 5.7.1 Rejected by policy"
    assert c.banner().first == want
    for cmd in ("EHLO client.test", "HELO client.test", "MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>",
                "DATA", "RSET", "VRFY b", "HELP"):
        assert c.cmd(cmd).first == want, cmd
    c.cmd("NOOP").expect(250)
    c.cmd("QUIT").expect(221)
    assert c.closed()
    assert recorder.conns() == []


@pytest.mark.parametrize("stage", ["connect", "helo"])
def test_drop_session_is_a_black_hole(recorder, proxy, client, stage):
    p = proxy(sections=[vsec(stages=stage, action="drop")])
    c = client(p)
    c.greet()
    for i in range(2):
        c.envelope(f"a{i}@x.test", "b@y.test", "c@y.test")
        assert c.message(stuff(BODY) + b".\r\n").code == 250
    c.cmd("RSET").expect(250)
    c.cmd("NOOP").expect(250)
    c.cmd("QUIT").expect(221)
    time.sleep(0.2)
    if stage == "connect":
        assert recorder.conns() == []
    assert "MAIL" not in recorder.verbs()
    assert_nothing_delivered(recorder)
    s = p.wait_summaries(2)
    assert [x["status"] for x in s] == ["dropped", "dropped"], s


def test_drop_at_mail_drops_the_transaction_only(recorder, proxy, client):
    p = proxy(sections=[vsec(stages="mail", action="drop", match="drop@")])
    c = client(p)
    c.greet()
    c.envelope("drop@x.test")
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    # The next transaction of the same session goes through.
    c.envelope("keep@x.test")
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    c.cmd("QUIT").expect(221)
    t = assert_delivered(recorder)
    assert t.sender == "keep@x.test"
    assert not any("drop@" in cmd for cmd in recorder.commands())
    s = p.wait_summaries(2)
    assert [x["status"] for x in s] == ["dropped", "sent"], s
    assert s[0].get("stage") == "mail" and s[0].get("by") == "v1"


def test_dropped_rcpt_among_several(recorder, proxy, client):
    p = proxy(sections=[vsec(stages="rcpt", action="drop", match="drop")])
    c = client(p)
    replies, _ = run_session(c, rcpts=("one@y.test", "drop1@y.test", "two@y.test", "drop2@y.test"))
    assert [r.first for r in replies["rcpt"]][1::2] == ["250 2.1.5 Ok", "250 2.1.5 Ok"]
    assert all(r.code == 250 for r in replies["rcpt"])
    assert replies["data"].code == 250
    t = assert_delivered(recorder, rcpts=("one@y.test", "two@y.test"))
    assert not any("drop" in r for r in t.rcpts), t.rcpts
    assert last_summary(p)["status"] == "sent"


def test_all_rcpts_dropped_no_data_to_backend(recorder, proxy, client):
    p = proxy(sections=[vsec(stages="rcpt", action="drop")])
    c = client(p)
    replies, _ = run_session(c, rcpts=("one@y.test", "two@y.test"))
    assert [r.first for r in replies["rcpt"]] == ["250 2.1.5 Ok", "250 2.1.5 Ok"]
    assert replies["datacmd"].code == 354
    assert replies["data"].code == 250
    assert "DATA" not in recorder.verbs()
    assert_nothing_delivered(recorder)
    assert last_summary(p)["status"] == "dropped"


def test_rejected_rcpt_among_several(recorder, proxy, client):
    p = proxy(sections=[vsec(stages="rcpt", action="reject", match="bad@")])
    c = client(p)
    replies, _ = run_session(c, rcpts=("one@y.test", "bad@y.test", "two@y.test"))
    assert [r.code for r in replies["rcpt"]] == [250, 550, 250]
    assert replies["rcpt"][1].first == "550 5.7.1 Rejected by policy"
    t = assert_delivered(recorder, rcpts=("one@y.test", "two@y.test"))
    assert not any("bad@" in r for r in t.rcpts)


@pytest.mark.parametrize(
    "stage,match,hit,miss",
    [
        ("connect", "127.0.0.1", {}, None),
        ("helo", "bad.example", {"helo": "host.bad.example"}, {"helo": "good.example"}),
        ("mail", "spammer@", {"sender": "spammer@x.test"}, {"sender": "friend@x.test"}),
        ("rcpt", "victim@", {"rcpts": ("victim@y.test",)}, {"rcpts": ("b@y.test",)}),
        ("data", "SPAM", {"body": BODY.replace(b"chain test", b"SPAM offer")}, {}),
    ],
)
def test_match_subject_per_stage(recorder, proxy, client, stage, match, hit, miss):
    p = proxy(sections=[vsec(stages=stage, action="reject", match=match)])
    replies, _ = run_session(client(p), **hit)
    assert reply_at(replies, stage).first == default_reply(stage, "reject")
    assert_nothing_delivered(recorder)
    p2 = proxy(sections=[vsec(stages=stage, action="reject", match="192.0.2." if miss is None else match)])
    replies, _ = run_session(client(p2), **(miss or {}))
    assert replies["data"].code == 250
    assert len(recorder.wait_for_transactions(1)) == 1


# ---- reply texts -----------------------------------------------------------


@pytest.mark.parametrize(
    "stage,action,reply,want",
    [
        ("mail", "reject", "554 5.7.1 go away", "554 5.7.1 go away"),
        ("mail", "reject", "5.7.1 go away", "550 5.7.1 go away"),
        ("mail", "reject", "go away", "550 5.7.1 go away"),
        ("connect", "reject", "go away", "554 5.7.1 go away"),
        ("connect", "reject", "5.7.0 not you", "554 5.7.0 not you"),
        ("rcpt", "reject", "553 5.1.3 no such route", "553 5.1.3 no such route"),
        ("rcpt", "tempfail", "452 4.2.2 mailbox full", "452 4.2.2 mailbox full"),
        ("rcpt", "tempfail", "4.2.2 mailbox full", "451 4.2.2 mailbox full"),
        ("mail", "tempfail", "later please", "451 4.7.1 later please"),
        ("data", "reject", "5.7.0 spam", "550 5.7.0 spam"),
        ("data", "tempfail", "450 4.7.1 busy", "450 4.7.1 busy"),
        ("helo", "reject", "550 5.7.1 not with that name", "550 5.7.1 not with that name"),
        ("mail", "reject", "550 5.7.1 " + "x" * (512 - 10), "550 5.7.1 " + "x" * (512 - 10)),
    ],
)
def test_filter_reply_text(recorder, proxy, client, stage, action, reply, want):
    p = proxy(sections=[vsec(stages=stage, action=action, reply=reply)])
    replies, _ = run_session(client(p))
    assert reply_at(replies, stage).first == want
    assert_backend_stopped_at(recorder, stage)


def test_disconnect_reply_text(recorder, proxy, client):
    p = proxy(sections=[vsec(stages="mail", action="disconnect", reply="bye now")])
    replies, closed = run_session(client(p))
    assert replies["mail"].code == 421
    assert "bye now" in replies["mail"].first
    assert closed
    assert_backend_stopped_at(recorder, "mail")


# ---- invalid verdicts --------------------------------------------------------


BAD_REPLIES = [
    ("reject", "250 2.0.0 ok"),
    ("reject", "450 4.7.1 wrong class"),
    ("reject", "550 4.7.1 mismatched enhanced class"),
    ("reject", "4.7.1 enhanced code of the wrong class"),
    ("tempfail", "550 5.7.1 wrong class"),
    ("tempfail", "451 5.7.1 mismatched enhanced class"),
    ("tempfail", "250 ok"),
    ("reject", r"550 5.7.1 first\r\n250 2.0.0 smuggled"),
    ("reject", r"550 5.7.1 bare\nLF"),
    ("reject", r"550 5.7.1 bare\rCR"),
    ("reject", r"550 5.7.1 bell\x07"),
    ("reject", r"550 5.7.1 escape\x1b[31m"),
    ("reject", "550 5.7.1 " + "x" * 503),
    ("tempfail", "451 4.7.1 " + "y" * 2000),
]


@pytest.mark.parametrize("action,reply", BAD_REPLIES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD_REPLIES)])
def test_invalid_reply_is_a_filter_failure(recorder, proxy, client, action, reply):
    p = proxy(sections=[vsec(stages="mail", action=action, reply=reply)])
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    assert r.first == FILTER_FAILURE, r
    assert "smuggled" not in r.text and "x" * 40 not in r.text
    # The session goes on, in sync.
    c.cmd("NOOP").expect(250)
    c.cmd("QUIT").expect(221)
    assert "MAIL" not in recorder.verbs()
    assert p.wait_log(r"v1.*invalid reply|invalid reply.*v1"), p.log()


@pytest.mark.parametrize(
    "keys",
    [
        {"action": "fail"},
        {"raw_action": "99"},
        {"raw_action": "-1"},
        {"raw_action": "7"},
        {"action": "reject", "pending_without_register": "yes"},
        {"action": "continue", "pending_without_register": "yes"},
    ],
    ids=["fail", "raw99", "raw-1", "raw7", "pending-reject", "pending-continue"],
)
@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
def test_invalid_verdict_is_a_filter_failure(recorder, proxy, client, stage, keys):
    p = proxy(sections=[vsec(stages=stage, **keys)])
    c = client(p)
    replies, closed = run_session(c)
    assert reply_at(replies, stage).first == FILTER_FAILURE, replies
    assert not closed or "quit" in replies
    if stage == "data":
        assert recorder.wait_command("RSET")
    assert_backend_stopped_at(recorder, stage)
    assert "v1" in p.log()


# ---- two filters -------------------------------------------------------------


@pytest.mark.parametrize("first", ["v1", "v2"])
def test_first_non_continue_wins(recorder, proxy, client, first):
    secs = {
        "v1": vsec("v1", stages="mail", action="reject", reply="550 5.7.1 said by v1"),
        "v2": vsec("v2", stages="mail", action="tempfail", reply="451 4.7.1 said by v2"),
    }
    other = "v2" if first == "v1" else "v1"
    p = proxy(sections=[secs[first], secs[other]])
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    assert r.first.endswith(f"said by {first}"), r
    assert "MAIL" not in recorder.verbs()


@pytest.mark.parametrize("order", ["continue-first", "continue-second"])
def test_continue_passes_to_the_next(recorder, proxy, client, order):
    a = vsec("v1", stages="rcpt", action="continue", log_calls="yes")
    b = vsec("v2", stages="rcpt", action="reject", reply="550 5.7.1 said by v2", log_calls="yes")
    p = proxy(sections=[a, b] if order == "continue-first" else [b, a])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    r = c.cmd("RCPT TO:<b@y.test>")
    assert r.first == "550 5.7.1 said by v2"
    c.cmd("QUIT").expect(221)
    log_calls = calls(p)
    if order == "continue-first":
        assert "v1 hook rcpt" in log_calls and "v2 hook rcpt" in log_calls
        assert log_calls.index("v1 hook rcpt") < log_calls.index("v2 hook rcpt")
    else:
        # v2 decided: v1 was not asked at rcpt.
        assert "v2 hook rcpt" in log_calls and "v1 hook rcpt" not in log_calls


def test_filters_asked_in_section_order(recorder, proxy, client):
    names = ["v3", "v1", "v2"]
    p = proxy(sections=[vsec(n, log_calls="yes") for n in names])
    replies, _ = run_session(client(p))
    assert replies["data"].code == 250
    assert p.wait_log(r"verdict v2: close")
    hooks = [x for x in calls(p) if " hook " in x]
    want = [f"{n} hook {st}" for st in STAGES for n in names]
    assert hooks == want


@pytest.mark.parametrize("order", ["accept-first", "reject-first"])
def test_accept_short_circuits_the_stage(recorder, proxy, client, order):
    acc = vsec("acc", stages="mail", action="accept", log_calls="yes")
    rej = vsec("rej", stages="mail", action="reject", log_calls="yes")
    p = proxy(sections=[acc, rej] if order == "accept-first" else [rej, acc])
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    if order == "accept-first":
        assert r.code == 250, r
        c.cmd("RCPT TO:<b@y.test>").expect(250)
        assert c.message(stuff(BODY) + b".\r\n").code == 250
        assert_delivered(recorder)
    else:
        assert r.first == "550 5.7.1 Rejected by policy"
    c.cmd("QUIT").expect(221)
    assert p.wait_log(r"verdict acc: close") and p.wait_log(r"verdict rej: close")
    got = calls(p)
    if order == "accept-first":
        assert "acc hook mail" in got
        assert "rej hook mail" not in got, got
        # Accept ends the chain for that stage only: later stages ask rej again.
        assert "rej hook rcpt" in got and "rej hook data" in got
    else:
        assert "rej hook mail" in got
        assert "acc hook mail" not in got, got


def test_accept_does_not_cover_later_stages(recorder, proxy, client):
    p = proxy(sections=[vsec("v1", stages="mail", action="accept"), vsec("v2", stages="rcpt", action="reject")])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert c.cmd("RCPT TO:<b@y.test>").first == "550 5.7.1 Rejected by policy"
    assert "RCPT" not in recorder.verbs()


@pytest.mark.parametrize("action", ["continue", "accept"])
def test_backend_has_the_last_word(recorder, proxy, client, action):
    recorder.reply("MAIL", "550 5.1.8 backend says no", times=1)
    recorder.reply("EOD", "554 5.7.1 backend content filter")
    p = proxy(sections=[vsec(action=action)])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == "550 5.1.8 backend says no"
    c.envelope()
    assert c.message(stuff(BODY) + b".\r\n").first == "554 5.7.1 backend content filter"
    assert not recorder.delivered()


def test_summary_names_the_deciding_filter(recorder, proxy, client):
    p = proxy(sections=[vsec("v1", action="continue"), vsec("v2", stages="data", action="reject")])
    replies, _ = run_session(client(p))
    assert replies["data"].first == "550 5.7.1 Rejected by policy"
    s = last_summary(p)
    assert s["status"] == "rejected" and s.get("stage") == "data" and s.get("by") == "v2", s


# ---- observe mode ------------------------------------------------------------


@pytest.mark.parametrize("stage,action", [("mail", "reject"), ("rcpt", "tempfail"), ("data", "drop"),
                                          ("helo", "disconnect"), ("connect", "reject")])
def test_observe_logs_but_does_not_enforce(recorder, proxy, client, stage, action):
    p = proxy(sections=[vsec(stages=stage, action=action, observe="yes")])
    replies, closed = run_session(client(p))
    assert replies["data"].code == 250, replies
    assert_delivered(recorder)
    assert p.wait_log(rf"observe: v1 would {action} at {stage}"), p.log()
    assert last_summary(p)["status"] == "sent"


def test_observe_filter_does_not_stop_the_chain(recorder, proxy, client):
    p = proxy(sections=[
        vsec("v1", stages="mail", action="reject", observe="yes"),
        vsec("v2", stages="mail", action="tempfail", reply="451 4.7.1 said by v2"),
    ])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == "451 4.7.1 said by v2"
    assert p.wait_log(r"observe: v1 would reject at mail")
    assert "MAIL" not in recorder.verbs()


def test_observe_accept_does_not_short_circuit(recorder, proxy, client):
    p = proxy(sections=[
        vsec("v1", stages="mail", action="accept", observe="yes"),
        vsec("v2", stages="mail", action="reject"),
    ])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == "550 5.7.1 Rejected by policy"


# ---- on_error ----------------------------------------------------------------


@pytest.mark.parametrize(
    "top,section,want",
    [
        (None, None, "tempfail"),
        ("tempfail", None, "tempfail"),
        ("reject", None, "reject"),
        ("accept", None, "accept"),
        ("tempfail", "reject", "reject"),
        ("reject", "accept", "accept"),
        ("accept", "tempfail", "tempfail"),
        (None, "reject", "reject"),
    ],
)
@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
def test_on_error(recorder, proxy, client, stage, top, section, want):
    p = proxy(on_error=top, sections=[vsec(stages=stage, action="fail", on_error=section)])
    replies, _ = run_session(client(p))
    got = reply_at(replies, stage)
    if want == "accept":
        assert replies["data"].code == 250, replies
        assert_delivered(recorder)
        return
    assert got.first == (FILTER_FAILURE if want == "tempfail" else FILTER_FAILURE_REJECT), replies
    if stage == "data":
        assert recorder.wait_command("RSET")
    assert_backend_stopped_at(recorder, stage)


def test_on_error_accept_skips_only_the_failing_filter(recorder, proxy, client):
    p = proxy(sections=[
        vsec("v1", stages="mail", action="fail", on_error="accept"),
        vsec("v2", stages="mail", action="reject", reply="550 5.7.1 said by v2"),
    ])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == "550 5.7.1 said by v2"


def test_on_error_per_section(recorder, proxy, client):
    p = proxy(on_error="tempfail", sections=[
        vsec("v1", stages="mail", raw_action="99", on_error="accept"),
        vsec("v2", stages="rcpt", action="fail", on_error="reject"),
        vsec("v3", stages="data", action="fail"),
    ])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert c.cmd("RCPT TO:<b@y.test>").first == FILTER_FAILURE_REJECT
    assert "RCPT" not in recorder.verbs()


def test_on_error_at_connect(recorder, proxy, client):
    p = proxy(sections=[vsec(stages="connect", action="fail")])
    c = client(p)
    r = c.banner()
    assert r.code // 100 == 4, r
    assert recorder.conns() == []


# ---- asynchronous hooks --------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_delayed_verdict(recorder, proxy, client, stage):
    p = proxy(sections=[vsec(stages=stage, action="reject", delay="300ms")])
    t0 = time.monotonic()
    c = client(p)
    replies, _ = run_session(c)
    assert time.monotonic() - t0 >= 0.29
    assert reply_at(replies, stage).first == default_reply(stage, "reject")
    assert_backend_stopped_at(recorder, stage)


def test_delayed_continue_everywhere_then_next_filter(recorder, proxy, client):
    p = proxy(sections=[
        vsec("v1", action="continue", delay="100ms", log_calls="yes"),
        vsec("v2", action="continue", delay="50ms", log_calls="yes"),
    ])
    c = client(p)
    t0 = time.monotonic()
    replies, _ = run_session(c, rcpts=("b@y.test", "c@y.test"))
    # Six hook calls of each, one after the other.
    assert time.monotonic() - t0 >= 6 * 0.15 - 0.05
    assert replies["data"].code == 250
    assert_delivered(recorder, rcpts=("b@y.test", "c@y.test"))
    assert p.wait_log(r"verdict v2: close")
    got = [x for x in calls(p) if " hook " in x or " resume " in x]
    want = []
    for st in ["connect", "helo", "mail", "rcpt", "rcpt", "data"]:
        want += [f"v1 hook {st}", f"v1 resume {st}", f"v2 hook {st}", f"v2 resume {st}"]
    assert got == want


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("action", ["continue", "reject", "drop"])
def test_resume_inline(recorder, proxy, client, stage, action):
    p = proxy(sections=[vsec(stages=stage, action=action, resume_inline="yes")])
    replies, _ = run_session(client(p))
    if action == "continue":
        assert replies["data"].code == 250
        assert_delivered(recorder)
    elif action == "reject":
        assert reply_at(replies, stage).first == default_reply(stage, "reject")
        assert_backend_stopped_at(recorder, stage)
    else:
        assert replies["data"].code == 250
        assert_backend_stopped_at(recorder, stage)


def test_resume_inline_then_async_filter(recorder, proxy, client):
    p = proxy(sections=[
        vsec("v1", resume_inline="yes"),
        vsec("v2", stages="rcpt", action="reject", delay="50ms", match="bad@"),
    ])
    replies, _ = run_session(client(p), rcpts=("a@y.test", "bad@y.test"))
    assert [r.code for r in replies["rcpt"]] == [250, 550]
    assert_delivered(recorder, rcpts=("a@y.test",))


@pytest.mark.parametrize("where", ["top", "section"])
@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
def test_filter_timeout(recorder, proxy, client, stage, where):
    if where == "top":
        p = proxy(filter_timeout="500ms", sections=[vsec(stages=stage, never="yes")])
    else:
        p = proxy(sections=[vsec(stages=stage, never="yes", filter_timeout="500ms")])
    c = client(p)
    t0 = time.monotonic()
    replies, _ = run_session(c)
    took = time.monotonic() - t0
    assert 0.45 <= took < 5, took
    assert reply_at(replies, stage).first == FILTER_FAILURE, replies
    if stage == "data":
        assert recorder.wait_command("RSET")
    assert_backend_stopped_at(recorder, stage)
    assert p.wait_log(r"verdict: cancelled v1"), p.log()
    assert re.search(r"v1.*timeout|timeout.*v1", p.log()), p.log()


def test_filter_timeout_on_error_accept(recorder, proxy, client):
    p = proxy(filter_timeout="300ms", sections=[
        vsec("v1", stages="mail", never="yes", on_error="accept"),
        vsec("v2", stages="rcpt", never="yes", on_error="reject"),
    ])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert c.cmd("RCPT TO:<b@y.test>").first == FILTER_FAILURE_REJECT
    assert len(p.wait_log(r"verdict: cancelled", count=2)) == 2


def test_filter_timeout_section_overrides_top(recorder, proxy, client):
    p = proxy(filter_timeout="10s", sections=[vsec(stages="mail", never="yes", filter_timeout="300ms")])
    c = client(p)
    c.greet()
    t0 = time.monotonic()
    assert c.cmd("MAIL FROM:<a@x.test>").first == FILTER_FAILURE
    assert time.monotonic() - t0 < 5


def test_filter_timeout_cancels_a_running_timer(recorder, proxy, client):
    """The verdict's own timer (2s) outlives filter_timeout (300ms): cancel
    must disarm it, or it fires into a freed call later."""
    p = proxy(filter_timeout="300ms", sections=[vsec(stages="mail", action="reject", delay="2s")])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == FILTER_FAILURE
    c.cmd("QUIT").expect(221)
    time.sleep(2.2)
    assert p.alive()
    assert "verdict: cancelled v1 at mail" in p.log()
    # Still serving.
    c2 = client(p)
    c2.greet()
    c2.cmd("QUIT").expect(221)


def test_filter_timeout_at_connect(recorder, proxy, client):
    p = proxy(filter_timeout="300ms", sections=[vsec(stages="connect", never="yes")])
    c = client(p)
    r = c.banner()
    assert r.code // 100 == 4, r
    assert p.wait_log(r"verdict: cancelled v1 at connect")


# ---- clients that leave while a hook is pending ------------------------------


def _hang_in_hook(p, c, stage):
    """Drive client c until the verdict plugin's hook for stage is running
    (the plugin matches only this client's "slow" subject)."""
    enter_stage(c, stage, **{
        "helo": {"helo": "slow.example"},
        "mail": {"sender": "slow@x.test"},
        "rcpt": {"rcpt": "slow@y.test"},
        "data": {"data": stuff(BODY.replace(b"chain test", b"slow one")) + b".\r\n"},
    }.get(stage, {}))
    assert p.wait_log(rf"verdict v1: hook {stage}")
    time.sleep(0.1)


SLOW_MATCH = {"connect": None, "helo": "slow.example", "mail": "slow@", "rcpt": "slow@", "data": "slow"}


def _served_after(p, recorder, client, stage):
    assert p.alive()
    assert_nothing_delivered(recorder)
    if stage == "data":
        assert "DATA" not in recorder.verbs()
    if stage == "connect":
        return  # every client would hang; the plugin matches every address
    # A new client is served normally.
    replies, _ = run_session(client(p))
    assert replies["data"].code == 250, replies
    assert_delivered(recorder)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("how", ["never", "delay"])
def test_client_resets_while_pending(recorder, proxy, client, stage, how):
    """The client's connection is reset (RST) while a hook waits: the host
    cancels the hook at once and closes the session."""
    keys = {"never": "yes"} if how == "never" else {"delay": "1s"}
    p = proxy(sections=[vsec(stages=stage, action="reject", match=SLOW_MATCH[stage], log_calls="yes", **keys)])
    c = client(p)
    _hang_in_hook(p, c, stage)
    t0 = time.monotonic()
    c.reset()
    assert p.wait_log(rf"verdict: cancelled v1 at {stage}"), p.log()
    assert p.wait_log(r"verdict v1: close"), p.log()
    assert time.monotonic() - t0 < 0.9, "cancel waited for the hook"
    if how == "delay":
        time.sleep(1.1)  # past the timer that cancel disarmed
    _served_after(p, recorder, client, stage)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("how", ["never", "delay"])
def test_client_closes_while_pending(recorder, proxy, client, stage, how):
    """The client closes (FIN, having read every reply) while a hook waits.
    A half-closed client may still want its replies, so the host may finish
    the hook first; either way the session ends no later than filter_timeout,
    the hook is cancelled or resumed, close is called, nothing leaks."""
    keys = {"never": "yes"} if how == "never" else {"delay": "500ms"}
    p = proxy(sections=[vsec(stages=stage, action="reject", match=SLOW_MATCH[stage], log_calls="yes",
                             filter_timeout="1s", **keys)])
    c = client(p)
    _hang_in_hook(p, c, stage)
    c.close()
    assert p.wait_log(r"verdict v1: close", timeout=BOUND), p.log()
    log = p.log()
    if how == "never":
        assert f"verdict: cancelled v1 at {stage}" in log, log
    else:
        assert f"verdict: cancelled v1 at {stage}" in log or f"verdict v1: resume {stage}" in log, log
    time.sleep(0.6)
    _served_after(p, recorder, client, stage)


def test_client_hangs_up_mid_pipeline_while_pending(recorder, proxy, client):
    p = proxy(sections=[vsec(stages="rcpt", action="continue", delay="300ms", log_calls="yes")])
    c = client(p)
    c.banner().expect(220)
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n")
    assert p.wait_log(r"verdict v1: hook rcpt")
    c.close()
    assert p.wait_log(r"verdict: cancelled v1 at rcpt")
    assert p.wait_log(r"verdict v1: close")
    time.sleep(0.4)
    assert p.alive()
    assert_nothing_delivered(recorder)


def test_many_sessions_hang_up_while_pending(recorder, proxy, client):
    p = proxy(sections=[vsec(stages="mail", never="yes")])
    socks = []
    for _ in range(20):
        c = client(p)
        c.greet()
        c.send(b"MAIL FROM:<a@x.test>\r\n")
        socks.append(c)
    time.sleep(0.3)
    for c in socks:
        c.reset()
    assert len(p.wait_log(r"verdict: cancelled v1 at mail", count=20, timeout=BOUND)) == 20
    assert p.alive()


# ---- pipelining ------------------------------------------------------------------


def test_pipelined_transaction_with_pending_mail_hook(recorder, proxy, client):
    p = proxy(sections=[vsec(stages="mail", action="continue", delay="200ms")])
    c = client(p)
    c.banner().expect(220)
    c.send(
        b"EHLO client.test\r\n"
        b"MAIL FROM:<a@x.test>\r\n"
        b"RCPT TO:<b@y.test>\r\n"
        b"RCPT TO:<c@y.test>\r\n"
        b"DATA\r\n"
    )
    ehlo, mail, r1, r2, data = c.replies(5)
    assert ehlo.code == 250
    assert mail.code == 250 and mail.enhanced == "2.1.0", mail
    assert r1.code == 250 and r2.code == 250
    assert data.code == 354
    c.send(stuff(BODY) + b".\r\n")
    assert c.reply().code == 250
    assert_delivered(recorder, rcpts=("b@y.test", "c@y.test"))


def test_pipelined_rejected_mail_then_good_one(recorder, proxy, client):
    """Commands pipelined behind a DATA that is refused (its MAIL was) are not
    run: the client did not wait for DATA's reply, so what follows would be its
    message (Postfix's smtpd_forbid_unauth_pipelining): 554 5.5.0, closed."""
    p = proxy(sections=[vsec(stages="mail", action="reject", delay="200ms", match="bad@")])
    c = client(p)
    c.greet()
    c.send(
        b"MAIL FROM:<bad@x.test>\r\n"
        b"RCPT TO:<b@y.test>\r\n"
        b"DATA\r\n"
        b"RSET\r\n"
        b"MAIL FROM:<good@x.test>\r\n"
        b"RCPT TO:<b@y.test>\r\n"
        b"DATA\r\n"
    )
    mail, rcpt, data = c.replies(3)
    assert mail.first == "550 5.7.1 Rejected by policy"
    assert rcpt.code == 503
    assert data.first == "554 5.5.0 Error: SMTP protocol synchronization"
    assert c.closed()
    assert p.wait_log(r"improper command pipelining after DATA")
    assert not any("good@" in x for x in recorder.commands())
    assert_nothing_delivered(recorder)


def test_pipelined_rcpts_with_pending_rcpt_hook(recorder, proxy, client):
    p = proxy(sections=[vsec(stages="rcpt", action="reject", delay="100ms", match="bad")])
    c = client(p)
    c.greet()
    c.send(
        b"MAIL FROM:<a@x.test>\r\n"
        b"RCPT TO:<one@y.test>\r\n"
        b"RCPT TO:<bad@y.test>\r\n"
        b"RCPT TO:<two@y.test>\r\n"
        b"RCPT TO:<bad2@y.test>\r\n"
        b"DATA\r\n"
    )
    mail, r1, r2, r3, r4, data = c.replies(6)
    assert [mail.code, r1.code, r2.code, r3.code, r4.code, data.code] == [250, 250, 550, 250, 550, 354]
    c.send(stuff(BODY) + b".\r\n")
    assert c.reply().code == 250
    assert_delivered(recorder, rcpts=("one@y.test", "two@y.test"))


# ---- reset and close ----------------------------------------------------------


def test_reset_and_close_are_called(recorder, proxy, client):
    p = proxy(sections=[vsec("v1", log_calls="yes"), vsec("v2", log_calls="yes")])
    c = client(p)
    start_txn(c)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    c.envelope()
    c.cmd("RSET").expect(250)
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("QUIT").expect(221)
    assert p.wait_log(r"verdict v2: close")
    time.sleep(0.1)
    for name in ("v1", "v2"):
        got = calls(p, name)
        assert got[-1] == "close" and got.count("close") == 1, got
        hooks = [x for x in got if x.startswith("hook ")]
        assert hooks == ["hook connect", "hook helo", "hook mail", "hook rcpt", "hook data",
                         "hook mail", "hook rcpt", "hook mail"], got
        # A reset after each transaction: delivered, RSET, QUIT.
        mails = [i for i, x in enumerate(got) if x == "hook mail"]
        assert "reset" in got[mails[0]:mails[1]], got
        assert "reset" in got[mails[1]:mails[2]], got
        assert "reset" in got[mails[2]:], got


def test_close_when_client_vanishes(recorder, proxy, client):
    p = proxy(sections=[vsec(log_calls="yes")])
    c = client(p)
    start_txn(c)
    c.close()
    assert p.wait_log(r"verdict v1: close")
    got = calls(p, "v1")
    assert "reset" in got[got.index("hook rcpt"):], got
    assert got[-1] == "close"


def test_close_after_connect_reject(recorder, proxy, client):
    p = proxy(sections=[vsec(stages="connect", action="disconnect", log_calls="yes")])
    c = client(p)
    assert c.banner().code == 421
    assert c.closed()
    assert p.wait_log(r"verdict v1: close")
    got = calls(p, "v1")
    assert [x for x in got if x != "reset"] == ["hook connect", "close"], got


# ---- the message reader and header edits ------------------------------------------


def _record_expected(msg):
    head, body = msg.split(b"\r\n\r\n", 1)
    out = b""
    for ln in head.split(b"\r\n"):
        name, value = ln.split(b":", 1)
        out += name + b": " + value.lstrip(b" \t") + b"\n"
    return out + b"--\n" + body


def _wait_file(path, timeout=BOUND):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("spool_memory", [None, "4k"], ids=["memory", "file"])
def test_message_reader(recorder, proxy, client, tmp_path, spool_memory):
    rec = str(tmp_path / "record")
    msg = make_message(lines=400 if spool_memory else 20, seed=3)
    msg += b".\r\n..\r\n.leading\r\n...three\r\nend.\r\n"
    if spool_memory:
        assert len(msg) > 8192
    p = proxy(spool_memory=spool_memory, sections=[vsec(record_message=rec)])
    c = client(p)
    start_txn(c)
    assert c.message(stuff(msg) + b".\r\n").code == 250
    assert _wait_file(rec) == _record_expected(msg)
    assert_delivered(recorder, body=msg)


def test_message_reader_folded_header(recorder, proxy, client, tmp_path):
    rec = str(tmp_path / "record")
    msg = b"Subject: a long\r\n  folded subject\r\nX-Empty:\r\nTo: <b@y.test>\r\n\r\nbody\r\n"
    p = proxy(sections=[vsec(record_message=rec)])
    c = client(p)
    start_txn(c)
    assert c.message(stuff(msg) + b".\r\n").code == 250
    got = _wait_file(rec)
    assert got == b"Subject: a long  folded subject\nX-Empty: \nTo: <b@y.test>\n--\nbody\r\n", got
    assert_delivered(recorder, body=msg)


def test_message_reader_empty_body(recorder, proxy, client, tmp_path):
    rec = str(tmp_path / "record")
    msg = b"Subject: nothing\r\n\r\n"
    p = proxy(sections=[vsec(record_message=rec)])
    c = client(p)
    start_txn(c)
    assert c.message(msg + b".\r\n").code == 250
    assert _wait_file(rec) == b"Subject: nothing\n--\n"


@pytest.mark.parametrize("spool_memory", [None, "4k"], ids=["memory", "file"])
def test_add_header(recorder, proxy, client, spool_memory):
    msg = make_message(lines=400 if spool_memory else 20, seed=5) + b".dot\r\n"
    p = proxy(spool_memory=spool_memory, sections=[
        vsec("v1", add_header=["X-Test-One: one", "X-Test-Two: two words"]),
        vsec("v2", add_header="X-Test-Three: 3"),
    ])
    c = client(p)
    start_txn(c)
    assert c.message(stuff(msg) + b".\r\n").code == 250
    t = recorder.wait_for_transactions(1)[0]
    added = b"X-Test-One: one\r\nX-Test-Two: two words\r\nX-Test-Three: 3\r\n"
    assert t.data == added + stuff(msg)
    assert t.completed


def test_add_header_then_reject_sends_nothing(recorder, proxy, client):
    p = proxy(sections=[vsec("v1", add_header="X-Test: one"), vsec("v2", stages="data", action="reject")])
    replies, _ = run_session(client(p))
    assert replies["data"].first == "550 5.7.1 Rejected by policy"
    assert "DATA" not in recorder.verbs()


def test_add_header_not_carried_to_next_message(recorder, proxy, client):
    p = proxy(sections=[vsec("v1", add_header="X-Test: one", stages="data", action="continue")])
    c = client(p)
    start_txn(c)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    c.envelope()
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    msgs = recorder.wait_for_transactions(2)
    assert [m.data for m in msgs] == [b"X-Test: one\r\n" + stuff(BODY)] * 2


# ---- loading plugins and their configuration ----------------------------------------


def test_check_accepts_good_plugin_config(recorder, tmp_path):
    p = Proxy(str(tmp_path / "ok"), recorder.address, filter_timeout="2s", on_error="reject", sections=[
        vsec("v1", stages="mail,rcpt", action="reject", reply="550 5.7.1 no", observe="yes",
             on_error="accept", filter_timeout="500ms"),
        ("verdict v2", {"action": "continue"}),
    ], plugin_dir=TEST_PLUGIN_DIR)
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc == 0, out
    assert "AddressSanitizer" not in out and "runtime error" not in out


def test_type_section_loads_plugin_dir_type(recorder, proxy, client):
    p = proxy(plugin_dir=TEST_PLUGIN_DIR, sections=[
        ("verdict first", {"stages": "rcpt", "action": "continue", "log_calls": "yes"}),
        ("plugin verdict", {"stages": "rcpt", "action": "reject", "log_calls": "yes"}),
    ])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert c.cmd("RCPT TO:<b@y.test>").first == "550 5.7.1 Rejected by policy"
    assert p.wait_log(r"verdict first: hook rcpt")
    assert p.wait_log(r"verdict verdict: hook rcpt")


def test_abi_mismatch_refused(recorder, tmp_path):
    """badabi.c is built for the next major ABI: refused, both versions named
    (the other ABI cases are in test_abi.py)."""
    so = kp.test_plugin("badabi")
    _, log, out = refused(recorder, tmp_path, [("plugin bad", {"path": so})])
    for text in (log, out):
        lines = [ln for ln in text.splitlines() if so in ln and "ABI 3.0" in ln and f"ABI {kp.abi_version()}" in ln]
        assert lines, text


def test_missing_descriptor_refused(recorder, tmp_path):
    so = kp.test_plugin("nodesc")
    _, log, out = refused(recorder, tmp_path, [("plugin nodesc", {"path": so})])
    for text in (log, out):
        assert any(so in ln and "portcullis_plugin" in ln for ln in text.splitlines()), text


@pytest.mark.parametrize("with_path", [True, False], ids=["path", "plugin_dir"])
def test_failing_init_refused(recorder, tmp_path, with_path):
    keys = {"path": kp.test_plugin("failinit")} if with_path else {}
    keys.update({"frob": "/dev/frobnicator"})
    path, log, out = refused(recorder, tmp_path, [vsec("v1"), ("plugin failinit", keys)],
                             plugin_dir=TEST_PLUGIN_DIR)
    line = config_line(path, "frob =")
    want = f"{path}:{line}: [plugin failinit]: cannot open the frobnicator"
    assert want in log, log
    assert want in out, out


@pytest.mark.parametrize("how", ["path", "plugin_dir"])
def test_missing_shared_object_refused(recorder, tmp_path, how):
    if how == "path":
        so = str(tmp_path / "nowhere" / "nosuch.so")
        sections = [("plugin nosuch", {"path": so})]
    else:
        so = os.path.join(TEST_PLUGIN_DIR, "nosuch.so")
        sections = [("plugin nosuch", {})]
    _, log, out = refused(recorder, tmp_path, sections, plugin_dir=TEST_PLUGIN_DIR)
    assert so in log, log
    assert so in out, out


def test_unknown_key_refused(recorder, tmp_path):
    path, log, out = refused(recorder, tmp_path, [vsec("v1", action="reject", bogus="1")])
    line = config_line(path, "bogus =")
    want = f'{path}:{line}: [plugin v1]: unknown key "bogus"'
    assert want in log, log
    assert want in out, out


def test_bad_plugin_value_refused_with_its_line(recorder, tmp_path):
    path, log, out = refused(recorder, tmp_path, [vsec("v1", stages="mail", action="maybe")])
    line = config_line(path, "action =")
    want = f'{path}:{line}: [plugin v1]: bad value for action: "maybe"'
    assert want in log, log
    assert want in out, out


def test_duplicate_section_name_refused(recorder, tmp_path):
    path, log, out = refused(recorder, tmp_path, [vsec("v1"), vsec("v1")])
    with open(path) as f:
        second = [i for i, ln in enumerate(f, 1) if ln.startswith("[plugin v1]")][1]
    assert re.search(rf"^{re.escape(path)}:{second}: .*v1", out, re.M), out


@pytest.mark.parametrize("key,value", [("on_error", "sometimes"), ("observe", "perhaps"),
                                       ("filter_timeout", "soon")])
def test_bad_host_key_in_section_refused(recorder, tmp_path, key, value):
    path, log, out = refused(recorder, tmp_path, [vsec("v1", **{key: value})])
    line = config_line(path, f"{key} =")
    assert re.search(rf"^{re.escape(path)}:{line}: ", out, re.M), out


def test_get_twice_keeps_the_first_string(recorder, proxy, client):
    """plugin.h: a string get() returns stays valid until the hook returns;
    a second get(PC_HELO) used to free the first answer (ASan: use after
    free). Both answers read the same now, in one hook call."""
    p = proxy(sections=[vsec(stages="helo,rcpt", action="continue", log_calls="yes")])
    c = client(p)
    c.greet("twice.test")
    c.envelope()
    assert p.wait_log(r'verdict v1: get twice "twice\.test" "twice\.test"'), p.log()
    assert p.wait_log(r'verdict v1: get twice "" ""'), p.log()
