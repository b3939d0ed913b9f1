"""The tarpit plugin (plugins/tarpit.c): the worked example of an
asynchronous C hook in doc/plugins.md.

Its hook goes pending, arms a timer on the host's event base and answers
with resume when the timer fires; cancel stops the timer. These tests check
that the verdict arrives through that path, that a held session does not
hold anybody else (proved by the order of events, not by how long anything
took), that a client leaving while held cancels the hold without harm, and
that filter_timeout shorter than the delay gives the on_error reply.
"""

import re
import select
import time

import pytest

from kit.dialogue import (
    assert_backend_stopped_at,
    config_line,
    default_reply,
    enter_stage,
    refused,
    reply_at,
    with_body,
)
from kit.messages import stuff

BODY = b"From: <a@x.test>\r\nSubject: tarpit\r\n\r\nHello.\r\n"
FILTER_FAILURE = "451 4.3.0 Temporary filter failure, try again later"
FILTER_FAILURE_REJECT = "550 5.3.0 Refused after a filter failure"
BOUND = 10.0
# Longer than any test runs: a hold that only a cancel can end.
FOREVER = {"delay": "240s", "filter_timeout": "300s"}

run_session, assert_delivered = with_body(BODY)

# id= is the transaction id ("0A1B2C3D4E.1") once there is a transaction;
# the session id is the part before the dot.
_EVENT_RE = re.compile(r"id=(\w+)\S* .*?tarpit: (holding|released) (\w+)")
_CANCEL_RE = re.compile(r"tarpit: session (\S+) cancelled at (\w+)")


def tarpit(**keys):
    return ("plugin tarpit", keys)


def events(p):
    """The plugin's hold and release lines, in log order: [(session id, "holding"), ...]."""
    return [(m.group(1), m.group(2)) for m in _EVENT_RE.finditer(p.log())]


def held_session(p, n=1):
    """Wait for the n-th hold; returns that session's id (not the transaction's)."""
    found = p.wait_log(r"id=(\w+)\S* .*?tarpit: holding", count=n, timeout=BOUND)
    assert len(found) >= n, p.log()
    return found[n - 1].group(1)


def has_input(c):
    """Whether the proxy has sent client c anything not yet read (no waiting)."""
    if c.buf:
        return True
    readable, _, _ = select.select([c.sock], [], [], 0)
    return bool(readable)


# ---- the verdict comes through pending and resume -------------------------------


@pytest.mark.parametrize("then, want", [
    ("continue", "250 2.1.5"),
    ("tempfail", "451 4.7.1 Try again later"),
    ("reject", "550 5.7.1 Rejected by policy"),
])
def test_rcpt_reply_after_the_hold(recorder, proxy, client, then, want):
    p = proxy(sections=[tarpit(delay="200ms", then=then)])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    r = c.cmd("RCPT TO:<b@y.test>")
    assert r.first.startswith(want), r
    sid = held_session(p)
    # The reply was sent by resume: the release came before it, after the hold.
    assert events(p) == [(sid, "holding"), (sid, "released")], p.log()
    assert "holding rcpt for 200 ms" in p.log()
    if then == "continue":
        assert c.message(stuff(BODY) + b".\r\n").code == 250
        c.cmd("QUIT").expect(221)
        assert_delivered(recorder)
    else:
        c.cmd("QUIT").expect(221)
        assert_backend_stopped_at(recorder, "rcpt")


@pytest.mark.parametrize("stage", ["connect", "helo", "mail", "rcpt", "data"])
def test_reject_after_the_hold_at_every_stage(recorder, proxy, client, stage):
    p = proxy(sections=[tarpit(delay="100ms", stage=stage, then="reject")])
    replies, _ = run_session(client(p))
    assert reply_at(replies, stage).first == default_reply(stage, "reject"), replies
    assert [e for _, e in events(p)] == ["holding", "released"], p.log()
    if stage == "data":
        assert recorder.wait_command("RSET")
    assert_backend_stopped_at(recorder, stage)


def test_own_reply_text(recorder, proxy, client):
    p = proxy(sections=[tarpit(delay="100ms", then="tempfail", reply="450 4.7.1 Slow down")])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert c.cmd("RCPT TO:<b@y.test>").first == "450 4.7.1 Slow down"


def test_other_stages_pass_at_once(recorder, proxy, client):
    p = proxy(sections=[tarpit(delay="100ms", stage="data")])
    replies, _ = run_session(client(p))
    assert replies["data"].code == 250
    assert_delivered(recorder)
    # One hold in the whole session: at the end of data, nowhere else.
    assert [e for _, e in events(p)] == ["holding", "released"], p.log()
    assert "holding data" in p.log()



def test_held_banner_catches_a_client_that_talks_first(recorder, proxy, client):
    """stage = connect: a client that does not wait for the banner is
    disconnected when the hold ends, before any command of it runs."""
    p = proxy(sections=[tarpit(delay="300ms", stage="connect")])
    c = client(p)
    held_session(p)
    c.send(b"EHLO eager.test\r\nMAIL FROM:<a@x.test>\r\n")
    assert c.reply().first == "554 5.5.0 Error: SMTP protocol synchronization"
    assert c.closed()
    assert "MAIL" not in recorder.verbs()
    assert "before the greeting" in p.log(), p.log()


# ---- the event loop does not wait with the hook -------------------------------


def test_held_session_does_not_hold_another(recorder, proxy, client):
    """A is held at RCPT for longer than the test runs. Meanwhile B gets its
    banner and every reply, and is then held too: two holds at once. Only a
    cancel can end A's hold, so everything B got, it got while A waited."""
    p = proxy(sections=[tarpit(**FOREVER)])
    a = client(p)
    a.greet()
    a.cmd("MAIL FROM:<a@x.test>").expect(250)
    a.send(b"RCPT TO:<held@y.test>\r\n")
    sid_a = held_session(p)

    b = client(p)
    b.greet()
    b.cmd("MAIL FROM:<b@x.test>").expect(250)
    b.cmd("RSET").expect(250)
    b.cmd("NOOP").expect(250)
    b.cmd("MAIL FROM:<b@x.test>").expect(250)
    b.send(b"RCPT TO:<also-held@y.test>\r\n")
    sid_b = held_session(p, 2)
    assert sid_a != sid_b

    assert not has_input(a), a.buf
    assert not has_input(b), b.buf
    assert events(p) == [(sid_a, "holding"), (sid_b, "holding")], p.log()

    # Each hold ends on its own: A's cancel leaves B held.
    a.reset()
    assert p.wait_log(rf"tarpit: session {sid_a} cancelled at rcpt", timeout=BOUND), p.log()
    assert not has_input(b), b.buf
    assert not _CANCEL_RE.search(p.log().replace(f"session {sid_a} cancelled", "")), p.log()
    b.reset()
    assert p.wait_log(rf"tarpit: session {sid_b} cancelled at rcpt", timeout=BOUND), p.log()
    assert "released" not in p.log()
    assert p.alive()


# ---- cancel ------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["connect", "rcpt", "data"])
def test_client_leaves_while_held(recorder, proxy, client, stage):
    """The host cancels the hold; the plugin frees it and its timer never
    fires; the daemon goes on serving."""
    p = proxy(sections=[tarpit(delay="500ms", stage=stage)])
    c = client(p)
    enter_stage(c, stage, data=stuff(BODY) + b".\r\n")
    sid = held_session(p)
    c.reset()
    assert p.wait_log(rf"tarpit: session {sid} cancelled at {stage}", timeout=BOUND), p.log()
    # The host says so too, with the session id.
    assert re.search(rf"id={sid} .*filter tarpit cancelled at {stage}", p.log()), p.log()
    time.sleep(0.7)  # past the delay: the timer that cancel freed must not fire
    assert "released" not in p.log(), p.log()
    assert p.alive()
    assert recorder.delivered() == []
    if stage == "connect":
        return  # every new client would be held at connect too
    replies, _ = run_session(client(p))
    assert replies["data"].code == 250
    assert_delivered(recorder)


# ---- filter_timeout ---------------------------------------------------------------


@pytest.mark.parametrize("on_error, want", [("tempfail", FILTER_FAILURE), ("reject", FILTER_FAILURE_REJECT)])
def test_filter_timeout_shorter_than_the_delay(recorder, proxy, client, on_error, want):
    p = proxy(sections=[tarpit(delay="1s", filter_timeout="200ms", on_error=on_error)])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert c.cmd("RCPT TO:<b@y.test>").first == want
    sid = held_session(p)
    assert p.wait_log(rf"tarpit: session {sid} cancelled at rcpt", timeout=BOUND), p.log()
    assert re.search(r"tarpit.*filter_timeout|filter_timeout.*tarpit", p.log()), p.log()
    # The session goes on; the cancelled timer never fires.
    c.cmd("RSET").expect(250)
    time.sleep(1.2)
    assert "released" not in p.log(), p.log()
    c.cmd("QUIT").expect(221)
    assert_backend_stopped_at(recorder, "rcpt")


# ---- configuration ----------------------------------------------------------------


# The host's time syntax (host->opt_time), with the plugin's own bounds.
DELAY_BAD = 'delay: bad value "{}": expected a time from 1ms to 299s (e.g. 500ms, 2s, 1m)'


@pytest.mark.parametrize("keys, line_key, message", [
    ({"delay": "5m"}, "delay", DELAY_BAD.format("5m")),
    ({"delay": "300s"}, "delay", DELAY_BAD.format("300s")),
    ({"delay": "0s"}, "delay", DELAY_BAD.format("0s")),
    ({"delay": "2 s"}, "delay", DELAY_BAD.format("2 s")),
    ({"delay": "1.5s"}, "delay", DELAY_BAD.format("1.5s")),
    ({"stage": "quit"}, "stage", 'stage: bad value "quit": want connect, helo, mail, rcpt or data'),
    ({"then": "drop"}, "then", 'then: bad value "drop": want continue, tempfail or reject'),
    ({"reply": "Slow down"}, None, "reply needs then = tempfail or reject"),
])
def test_bad_configuration_refused(recorder, tmp_path, keys, line_key, message):
    path, log, out = refused(recorder, tmp_path, [tarpit(**keys)])
    line = config_line(path, f"{line_key} =") if line_key else config_line(path, "[plugin tarpit]")
    want = f"{path}:{line}: [plugin tarpit]: {message}"
    assert want in log, log
    assert want in out, out
