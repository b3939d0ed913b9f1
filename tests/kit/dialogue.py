"""dialogue.py - one SMTP session driven step by step, and what to check
after it, shared by the filter tests (test_chain.py, test_lua*.py).

    run_session, assert_delivered = with_body(BODY)   # BODY by default
    replies, closed = run_session(client)
    reply_at(replies, "mail")        # the reply at a stage
    enter_stage(client, "rcpt")      # up to a stage's command, its reply not read
    assert_delivered(recorder, body=BODY)
    assert_backend_stopped_at(recorder, "rcpt")
"""

import time

import pytest

from kit.messages import stuff
from kit.proxy import Proxy, ProxyError, run_check
from kit.smtpclient import ConnectionClosed

HOST = "proxy.test"  # the hostname kit.proxy.Proxy configures
BOUND = 10.0  # generous bound for things that should take milliseconds
STEP = {"connect": "banner", "helo": "helo", "mail": "mail", "rcpt": "rcpt", "data": "data"}


def default_reply(stage, action):
    """The reply the host sends for a verdict without a text of its own."""
    if action == "reject":
        return "554 5.7.1 Rejected by policy" if stage == "connect" else "550 5.7.1 Rejected by policy"
    if action == "tempfail":
        return f"421 4.7.1 {HOST} Try again later" if stage == "connect" else "451 4.7.1 Try again later"
    if action == "disconnect":
        return f"421 4.7.0 {HOST} Closing connection"
    raise ValueError(action)


def run_session(c, body, sender="a@x.test", rcpts=("b@y.test",), helo="client.test"):
    """Banner, EHLO, MAIL, RCPT..., DATA, the message and QUIT, for as long
    as the proxy lets the session go on. Returns (replies, closed): replies
    maps banner, helo, mail, datacmd, data, quit to a Reply and rcpt to the
    list of RCPT replies; closed is whether the proxy closed the connection."""
    replies = {"rcpt": []}

    def go():
        b = replies["banner"] = c.banner()
        if b.code == 421:
            return
        if b.code == 220:
            r = replies["helo"] = c.cmd(f"EHLO {helo}")
            if r.code == 421:
                return
            if r.code == 250:
                dialogue()
                if replies.get("last421"):
                    return
        replies["quit"] = c.cmd("QUIT")

    def dialogue():
        r = replies["mail"] = c.cmd(f"MAIL FROM:<{sender}>")
        if r.code != 250:
            replies["last421"] = r.code == 421
            return
        for a in rcpts:
            r = c.cmd(f"RCPT TO:<{a}>")
            replies["rcpt"].append(r)
            if r.code == 421:
                replies["last421"] = True
                return
        if not any(r.code == 250 for r in replies["rcpt"]):
            return
        r = replies["datacmd"] = c.cmd("DATA")
        if r.code != 354:
            replies["last421"] = r.code == 421
            return
        c.send(stuff(body) + b".\r\n")
        r = replies["data"] = c.reply()
        replies["last421"] = r.code == 421

    try:
        go()
    except (ConnectionClosed, OSError):
        pass
    replies.pop("last421", None)
    return replies, c.closed(timeout=5)


def reply_at(replies, stage):
    r = replies.get(STEP[stage])
    if stage == "rcpt":
        return r[0] if r else None
    return r


def enter_stage(c, stage, helo="client.test", sender="a@x.test", rcpt="b@y.test", data=None):
    """Drive c up to a stage and send that stage's command without reading
    its reply, so that the stage's hooks run while the test looks on:
    nothing at connect (the banner is not read); EHLO at helo; MAIL; RCPT;
    at data, DATA (354) and then data, the message as it goes on the wire
    (dot-stuffed and ended by the caller)."""
    if stage == "connect":
        return
    c.banner().expect(220)
    if stage == "helo":
        c.send(f"EHLO {helo}\r\n")
        return
    c.ehlo(helo)
    if stage == "mail":
        c.send(f"MAIL FROM:<{sender}>\r\n")
        return
    c.cmd(f"MAIL FROM:<{sender}>").expect(250)
    if stage == "rcpt":
        c.send(f"RCPT TO:<{rcpt}>\r\n")
        return
    c.cmd(f"RCPT TO:<{rcpt}>").expect(250)
    c.cmd("DATA").expect(354)
    c.send(data)


def start_txn(c, sender="a@x.test", rcpt="b@y.test", greet=True):
    if greet:
        c.greet()
    c.envelope(sender, rcpt)


def assert_delivered(recorder, body, rcpts=("b@y.test",), n=1):
    msgs = recorder.wait_for_transactions(n, timeout=BOUND)
    assert len(msgs) == n, msgs
    t = msgs[-1]
    assert t.completed, t
    assert t.data == stuff(body)
    assert t.accepted_rcpts == list(rcpts)
    return t


def assert_nothing_delivered(recorder):
    assert recorder.messages() == [], recorder.messages()
    assert recorder.delivered() == []


def assert_backend_stopped_at(recorder, stage):
    """What the backend must not have seen when a stage's verdict ended it."""
    verbs = recorder.verbs()
    if stage == "connect":
        time.sleep(0.2)
        assert recorder.conns() == [], recorder.commands()
    elif stage in ("helo", "mail"):
        assert "MAIL" not in verbs, verbs
    elif stage == "rcpt":
        assert "MAIL" in verbs, verbs
        assert "RCPT" not in verbs and "DATA" not in verbs, verbs
    elif stage == "data":
        assert "RCPT" in verbs, verbs
        assert "DATA" not in verbs, verbs
    assert_nothing_delivered(recorder)


def refused(recorder, tmp_path, sections, **settings):
    """Start a proxy that must refuse its configuration, then run -t on the
    same file. Returns (config path, start log, -t output)."""
    p = Proxy(str(tmp_path / "refused"), recorder.address, sections=sections, **settings)
    with pytest.raises(ProxyError):
        p.start()
    p.stop()
    assert p.returncode != 0
    start_log = p.log()
    assert not p.sanitizer_reports(), start_log
    rc, out = run_check(p.config_path)
    assert rc != 0, out
    assert "AddressSanitizer" not in out and "runtime error:" not in out, out
    return p.config_path, start_log, out


def config_line(path, prefix):
    """The 1-based line number of the first line of a file starting with prefix."""
    with open(path) as f:
        for i, ln in enumerate(f, 1):
            if ln.startswith(prefix):
                return i
    raise AssertionError(f"no line starting with {prefix!r} in {path}")


def with_body(default_body):
    """run_session and assert_delivered with default_body as the message."""

    def run(c, body=None, **kw):
        return run_session(c, default_body if body is None else body, **kw)

    def delivered(recorder, body=None, **kw):
        return assert_delivered(recorder, default_body if body is None else body, **kw)

    return run, delivered
