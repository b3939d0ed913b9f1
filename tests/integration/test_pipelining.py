"""The pipelined relay (RFC 2920): a MAIL or RCPT the proxy sends to a
backend that offers PIPELINING does not wait for its reply; the client's
pipelined MAIL and RCPTs go to the backend as one group, and every reply
reaches the client in order.

Pipelining is proven by order, never by time: the recording backend holds
MAIL's reply until more command lines have arrived (kit.recorder hold()). A
proxy that waited for each reply would never send them, and the test would
fail on its deadline (the proxy's backend_timeout, or the client's read).
"""

import re
import signal

import pytest

import kit.proxy as kp
from kit.messages import stuff
from kit.recorder import DEFAULT_CAPS
from kit.smtpclient import ConnectionClosed, ReplyTimeout

BOUND = 10.0
BODY = b"From: <a@x.test>\r\nSubject: pipelined\r\n\r\nHello.\r\n.a dot line\r\n"
NO_PIPELINING = [c for c in DEFAULT_CAPS if c != "PIPELINING"]


def vsec(name="v1", **keys):
    """A [plugin NAME] section running the verdict test plugin."""
    d = {"path": kp.test_plugin("verdict")}
    d.update(keys)
    return (f"plugin {name}", d)


def group(c, *lines):
    """Send the command lines in one write, as a pipelining client does."""
    c.send("".join(ln + "\r\n" for ln in lines))


def firsts(replies):
    return [r.first for r in replies]


def from_mail(events):
    """The events from the MAIL command on (the greeting left out)."""
    for i, (kind, text) in enumerate(events):
        if kind == "recv" and text.upper().startswith("MAIL"):
            return events[i:]
    return []


def index(events, kind, prefix):
    """Where the first event of kind whose text starts with prefix is."""
    for i, (k, t) in enumerate(events):
        if k == kind and t.upper().startswith(prefix.upper()):
            return i
    raise AssertionError(f"no {kind} {prefix!r} in {events!r}")


def send_body(c, body=BODY):
    c.send(stuff(body) + b".\r\n")
    return c.reply(timeout=BOUND)


def assert_next_client_served(recorder, p, client):
    """After a failed session the proxy serves the next client: a whole
    message, delivered."""
    recorder.reset()
    c2 = client(p)
    c2.greet()
    c2.envelope()
    assert c2.message(stuff(BODY) + b".\r\n").code == 250
    assert len(recorder.wait_for_delivered(1, BOUND)) == 1


def rcpt_lines(t):
    return [re.sub(r"^RCPT TO:", "", r, flags=re.I) for r in t.rcpts]


# ---- the group goes in one go ----------------------------------------------


def test_group_goes_without_waiting(recorder, proxy, client):
    """MAIL's reply is held until the three RCPTs arrive: only a proxy that
    sends them without waiting gets it; and they came in the same write."""
    recorder.hold("MAIL", lines=3)
    p = proxy()
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", "RCPT TO:<r2@y.test>", "RCPT TO:<r3@y.test>", "DATA")
    replies = c.replies(5, timeout=BOUND)
    assert [r.code for r in replies] == [250, 250, 250, 250, 354], replies
    assert send_body(c).code == 250
    c.cmd("QUIT").expect(221)
    t = recorder.wait_for_transactions(1)[0]
    assert t.completed and t.recipients == ["r1@y.test", "r2@y.test", "r3@y.test"]
    assert t.data == stuff(BODY)
    ev = from_mail(recorder.events(0))
    assert [k for k, _ in ev[:5]] == ["recv"] * 4 + ["send"], ev
    assert ev[4][1].startswith("250 2.1.0"), ev
    # One write: when the recorder read MAIL, the RCPTs had arrived with it.
    raw = recorder.conns()[0].raw
    at_mail = recorder.events_raw(0)[index(recorder.events(0), "recv", "MAIL")]
    assert raw[:at_mail].endswith(b"RCPT TO:<r3@y.test>\r\n"), raw[:at_mail]


@pytest.mark.parametrize("bad, want", [
    ("RCPT TO:<bad@y.test>", "550 5.7.1 Rejected by policy"),
    ("RCPT TO:<bad@y.test", "501 5.1.3"),
], ids=["hook-reject", "syntax"])
def test_own_reply_waits_behind_backend_replies(recorder, proxy, client, bad, want):
    """The 2nd of 3 RCPTs is answered by the proxy itself while MAIL's reply
    is still held at the backend: the client reads it in its place."""
    recorder.hold("MAIL", lines=2)
    p = proxy(sections=[vsec(stages="rcpt", action="reject", match="bad@")])
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", bad, "RCPT TO:<r3@y.test>", "DATA")
    replies = c.replies(5, timeout=BOUND)
    assert [r.code for r in replies] == [250, 250, int(want[:3]), 250, 354], replies
    assert replies[2].first.startswith(want), replies
    assert send_body(c).code == 250
    t = recorder.wait_for_transactions(1)[0]
    assert t.recipients == ["r1@y.test", "r3@y.test"]
    assert "bad@y.test" not in recorder.raw().decode("latin-1")


@pytest.mark.parametrize("then, want", [("continue", 250), ("reject", 550)])
def test_pending_hook_stops_the_group(recorder, proxy, client, then, want):
    """A RCPT whose hook goes pending: the RCPT after it is not sent before
    the hook answers (so never before it at the backend), and the group goes
    on after it without waiting for MAIL's reply, which is held until the
    later RCPTs arrive."""
    recorder.hold("MAIL", lines=3 if then == "continue" else 2)
    p = proxy(sections=[vsec(stages="rcpt", action=then, match="slow@", delay="300ms", log_calls="yes")])
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", "RCPT TO:<slow@y.test>", "RCPT TO:<r3@y.test>",
          "DATA")
    replies = c.replies(5, timeout=BOUND)
    assert [r.code for r in replies] == [250, 250, want, 250, 354], replies
    assert send_body(c).code == 250
    t = recorder.wait_for_transactions(1)[0]
    if then == "continue":
        assert t.recipients == ["r1@y.test", "slow@y.test", "r3@y.test"]
    else:
        assert t.recipients == ["r1@y.test", "r3@y.test"]
    # The hook of r3 ran only after slow@'s answered from its timer: the
    # commands behind a pending hook wait for it.
    calls = re.findall(r"verdict v1: (hook rcpt|resume rcpt)", p.log())
    assert calls == ["hook rcpt", "hook rcpt", "resume rcpt", "hook rcpt"], p.log()


def test_noop_waits_for_the_replies(recorder, proxy, client):
    """Only MAIL and RCPT fly: a NOOP in the group waits until every reply
    is in, so the RCPT after it reaches the backend after the replies went."""
    recorder.hold("MAIL", lines=1)
    p = proxy()
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", "NOOP", "RCPT TO:<r2@y.test>")
    assert [r.code for r in c.replies(4, timeout=BOUND)] == [250, 250, 250, 250]
    ev = from_mail(recorder.events(0))
    assert index(ev, "send", "250 2.1.5") < index(ev, "recv", "RCPT TO:<r2@"), ev
    assert "NOOP" not in [t.upper() for _, t in ev]


# ---- a backend without PIPELINING ---------------------------------------------


def test_no_pipelining_backend_gets_one_command_at_a_time(recorder, proxy, client):
    """Whatever the client pipelines, each command reaches the backend only
    after the reply to the one before went out: when the recorder read each
    line, nothing after it had arrived."""
    recorder.configure(caps=NO_PIPELINING)
    p = proxy()
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", "RCPT TO:<r2@y.test>", "DATA")
    assert [r.code for r in c.replies(4, timeout=BOUND)] == [250, 250, 250, 354]
    assert send_body(c).code == 250
    t = recorder.wait_for_transactions(1)[0]
    assert t.completed and t.recipients == ["r1@y.test", "r2@y.test"]
    ev, at = recorder.events(0), recorder.events_raw(0)
    raw = bytes(recorder.conns()[0].raw)
    for i in range(index(ev, "recv", "MAIL"), index(ev, "recv", "DATA") + 1):
        if ev[i][0] == "recv":
            assert raw[: at[i]].endswith(ev[i][1].encode() + b"\r\n"), (ev[i], raw[: at[i]])
            assert ev[i - 1][0] == "send", ev


def test_no_pipelining_backend_never_sees_rcpt_before_mail_reply(recorder, proxy, client):
    """MAIL's reply is held until one more line comes: a proxy that sent the
    RCPT early would get it; the right one waits, and times out."""
    recorder.configure(caps=NO_PIPELINING)
    recorder.hold("MAIL", lines=1)
    p = proxy(backend_timeout="1s")
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", "DATA")
    c.reply(timeout=BOUND).expect(451, "4.4.2")
    assert c.closed(BOUND)
    assert recorder.wait_all_closed(BOUND)
    assert [v for v in recorder.verbs() if v in ("MAIL", "RCPT", "DATA")] == ["MAIL"]
    assert not recorder.delivered()


# ---- the backend refuses MAIL ----------------------------------------------


def test_mail_refused_with_rcpts_pipelined(recorder, proxy, client):
    """The RCPTs went with the MAIL, so the backend answers them itself
    (503, as it would a client talking to it directly), and those replies
    are relayed; the client's DATA is refused by the proxy; the backend
    sees neither DATA nor BDAT, and the next transaction is fine."""
    recorder.hold("MAIL", lines=2, text="550 5.7.1 <a@x.test>: Sender refused", times=1)
    p = proxy()
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", "RCPT TO:<r2@y.test>", "DATA")
    replies = c.replies(4, timeout=BOUND)
    assert replies[0].first == "550 5.7.1 <a@x.test>: Sender refused", replies
    assert firsts(replies[1:3]) == ["503 5.5.1 Error: need MAIL command"] * 2, replies
    assert replies[3].code == 503, replies
    assert not any(v in ("DATA", "BDAT") for v in recorder.verbs())
    s = p.wait_summaries(1, timeout=BOUND)
    assert s and s[0]["status"] == "rejected", s
    # The session goes on.
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<r1@y.test>").expect(250)
    c.cmd("DATA").expect(354)
    assert send_body(c).code == 250
    assert len(recorder.wait_for_delivered(1, BOUND)) == 1


# ---- limits ----------------------------------------------------------------


def test_max_recipients_counts_rcpts_in_flight(recorder, proxy, client):
    """Two RCPTs are at the backend, unanswered (MAIL's reply is held until
    they arrive), when the third is checked: with max_recipients = 2 it is
    refused by the proxy and never sent."""
    recorder.hold("MAIL", lines=2)
    p = proxy(max_recipients=2)
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", "RCPT TO:<r2@y.test>", "RCPT TO:<r3@y.test>", "DATA")
    replies = c.replies(5, timeout=BOUND)
    assert [r.code for r in replies] == [250, 250, 250, 452, 354], replies
    assert replies[3].enhanced == "4.5.3", replies
    assert send_body(c).code == 250
    t = recorder.wait_for_transactions(1)[0]
    assert t.recipients == ["r1@y.test", "r2@y.test"]


def test_forty_recipients_answered_in_order(recorder, proxy, client):
    """More RCPTs than fit in flight (16): the first 16 commands go without
    waiting (MAIL's reply is held until 15 RCPTs arrive), the rest as room
    comes; each reply is the backend's own, in order."""
    n = 40
    refused = {i for i in range(n) if i % 7 == 3}
    for i in refused:
        recorder.reply("RCPT", f"550 5.1.1 <r{i}@y.test>: Recipient unknown", match=f"<r{i}@")
    recorder.hold("MAIL", lines=15)
    p = proxy()
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", *[f"RCPT TO:<r{i}@y.test>" for i in range(n)], "DATA")
    replies = c.replies(n + 2, timeout=BOUND)
    assert replies[0].code == 250
    for i, r in enumerate(replies[1:-1]):
        if i in refused:
            assert r.first == f"550 5.1.1 <r{i}@y.test>: Recipient unknown", (i, r)
        else:
            assert r.first == "250 2.1.5 Ok", (i, r)
    assert replies[-1].code == 354
    assert send_body(c).code == 250
    t = recorder.wait_for_transactions(1)[0]
    assert t.recipients == [f"r{i}@y.test" for i in range(n)]
    assert t.accepted_rcpts == [f"r{i}@y.test" for i in range(n) if i not in refused]
    s = p.wait_summaries(1, timeout=BOUND)
    assert s and s[0]["status"] == "sent" and s[0]["nrcpt"] == str(n - len(refused)), s


def test_quit_after_rcpt_gets_221_last(recorder, proxy, client):
    recorder.hold("MAIL", lines=1)
    p = proxy()
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", "QUIT")
    replies = c.replies(3, timeout=BOUND)
    assert [r.code for r in replies] == [250, 250, 221], replies
    assert c.closed(BOUND)
    assert not recorder.messages()


# ---- the backend fails mid-group ----------------------------------------------


@pytest.mark.parametrize("fault", ["hangup", "stall"])
def test_backend_fails_mid_group(recorder, proxy, client, fault):
    """The backend hangs up (or goes silent) at the 2nd of 3 pipelined
    RCPTs: the replies before it are relayed, the client gets the 451 the
    proxy gives for a lost (timed out) backend and then the connection
    closes; nothing is delivered and the proxy lives on."""
    getattr(recorder, fault)("RCPT", match="<r2@")
    p = proxy(backend_timeout="1s")
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", "RCPT TO:<r2@y.test>", "RCPT TO:<r3@y.test>", "DATA")
    got = []
    try:
        while True:
            got.append(c.reply(timeout=BOUND))
    except ConnectionClosed:
        pass
    except ReplyTimeout:
        raise AssertionError(f"the proxy neither answered nor closed: {got!r}") from None
    assert [r.code for r in got[:2]] == [250, 250], got
    assert got[2].code == 451 and got[2].enhanced == "4.4.2", got
    assert all(r.code == 421 for r in got[3:]) and len(got) <= 4, got
    assert not recorder.messages()
    assert not any(v in ("DATA", "BDAT") for v in recorder.verbs())
    s = p.wait_summaries(1, timeout=BOUND)
    assert s and s[0]["status"] == "tempfail", s
    # The proxy is still there for the next client.
    assert_next_client_served(recorder, p, client)


# ---- the summary ----------------------------------------------------------------


def test_summary_of_a_pipelined_transaction(recorder, proxy, client):
    recorder.reply("RCPT", "550 5.1.1 <r2@y.test>: Recipient unknown", match="<r2@")
    recorder.hold("MAIL", lines=3)
    p = proxy()
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", "RCPT TO:<r2@y.test>", "RCPT TO:<r3@y.test>", "DATA")
    assert [r.code for r in c.replies(5, timeout=BOUND)] == [250, 250, 550, 250, 354]
    assert send_body(c).code == 250
    c.cmd("QUIT").expect(221)
    s = p.wait_summaries(1, timeout=BOUND)
    assert len(s) == 1, s
    s = s[0]
    assert s["status"] == "sent" and s["nrcpt"] == "2", s
    assert s["from"] == "<a@x.test>", s
    assert re.findall(r"<([^>]*)>", s["to"]) == ["r1@y.test", "r3@y.test"], s
    assert s["size"] == str(len(BODY)), s
    # The backend's refusal of r2 is logged against the transaction.
    assert re.search(r"to=<r2@y\.test> rejected by the backend", p.log()), p.log()


# ---- the edges ------------------------------------------------------------------


def test_mail_refused_while_a_rcpt_is_in_its_hook(recorder, proxy, client):
    """The backend refuses MAIL while the pipelined RCPT after it is still
    in its (pending) hook: that RCPT, sent when the hook answers, gets the
    backend's own refusal; the RCPT after it finds no transaction and gets
    the proxy's; one summary line says the transaction was rejected."""
    recorder.reply("MAIL", "550 5.7.1 <a@x.test>: Sender refused", times=1)
    p = proxy(sections=[vsec(stages="rcpt", action="continue", match="slow@", delay="300ms")])
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<slow@y.test>", "RCPT TO:<r2@y.test>", "DATA")
    replies = c.replies(4, timeout=BOUND)
    assert replies[0].first == "550 5.7.1 <a@x.test>: Sender refused", replies
    assert [r.code for r in replies[1:]] == [503, 503, 503], replies
    s = p.wait_summaries(1, timeout=BOUND)
    assert [x["status"] for x in s] == ["rejected"], s
    assert not any(v in ("DATA", "BDAT") for v in recorder.verbs())
    # And the session is whole: a transaction after it goes through.
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<r2@y.test>").expect(250)
    c.cmd("DATA").expect(354)
    assert send_body(c).code == 250
    assert len(recorder.wait_for_delivered(1, BOUND)) == 1
    assert [x["status"] for x in p.wait_summaries(2, timeout=BOUND)] == ["rejected", "sent"]


def test_client_leaves_with_replies_in_flight(recorder, proxy, client):
    """The client sends its group and vanishes (a TCP reset) while MAIL's
    reply is held: the replies that come later have nobody to go to. No
    crash, nothing delivered, and the next client is served."""
    recorder.hold("MAIL", lines=None)
    p = proxy()
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>", "RCPT TO:<r2@y.test>")
    assert recorder.wait_event("recv", "RCPT TO:<r2@", timeout=BOUND)
    c.reset()
    assert p.wait_log(r"lost connection with client|disconnect", timeout=BOUND), p.log()
    recorder.release()
    assert recorder.wait_all_closed(BOUND)
    assert not recorder.messages()
    assert_next_client_served(recorder, p, client)


def test_sigterm_with_replies_in_flight(recorder, proxy, client):
    """SIGTERM while MAIL and RCPT are at the backend, unanswered: the
    transaction in progress may still finish (DESIGN: draining), so the
    replies are relayed when they come and the message is delivered; then
    the session ends."""
    recorder.hold("MAIL", lines=None)
    p = proxy()
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>")
    assert recorder.wait_event("recv", "RCPT TO:<r1@", timeout=BOUND)
    p.signal(signal.SIGTERM)
    assert p.wait_log(r"signal 15", timeout=BOUND), p.log()
    recorder.release()
    assert [r.code for r in c.replies(2, timeout=BOUND)] == [250, 250]
    c.cmd("DATA").expect(354)
    assert send_body(c).code == 250
    assert len(recorder.wait_for_delivered(1, BOUND)) == 1
    # After the transaction the draining session ends: QUIT gets its 221,
    # and the proxy exits by itself.
    c.cmd("QUIT", timeout=BOUND).expect(221)
    assert c.closed(BOUND)
    assert p.wait(BOUND) == 0


@pytest.mark.parametrize("part", [b"250-first line of the RCPT reply\r\n", b"25"], ids=["line", "octets"])
def test_reply_relayed_while_the_next_is_half_read(recorder, proxy, client, part):
    """MAIL's reply and the start of RCPT's (a first line of a multi-line
    reply, or a few octets) come in one segment, and the rest does not come:
    the client must still get MAIL's reply now, not when the backend times
    out (backend_timeout is far beyond the client's read bound here)."""
    recorder.rule("MAIL", b"250 2.1.0 Ok\r\n" + part)
    recorder.stall("RCPT")
    p = proxy(backend_timeout="60s")
    c = client(p)
    c.greet()
    group(c, "MAIL FROM:<a@x.test>", "RCPT TO:<r1@y.test>")
    assert c.reply(timeout=BOUND).first == "250 2.1.0 Ok"
