"""Faults on either leg: nothing is acknowledged that the backend did not
accept, and nothing partial reaches the backend."""

import os
import time

import pytest

from kit.proxy import closed_port
from kit.smtpclient import ConnectionClosed, ReplyTimeout

BOUND = 15.0


def _start_txn(c, rcpts=("b@y.test",)):
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    for r in rcpts:
        c.cmd(f"RCPT TO:<{r}>").expect(250)


def _never_250_after(c):
    """After a failure the session may close or refuse more; it never says
    a message was accepted."""
    try:
        r = c.cmd("DATA", timeout=5)
        assert r.code // 100 != 2 and r.code != 354, r
    except (ConnectionClosed, ReplyTimeout, OSError):
        pass


def test_backend_down(proxy, client):
    p = proxy(backend=f"127.0.0.1:{closed_port()}")
    c = client(p)
    r = c.reply(timeout=BOUND)
    r.expect(421, "4.4.1")
    assert r.first.startswith("421 4.4.1 proxy.test ")
    assert c.closed(BOUND)
    # The proxy itself keeps serving: a second client gets the same answer.
    c2 = client(p)
    c2.reply(timeout=BOUND).expect(421, "4.4.1")


def test_backend_hangs_up_at_banner(recorder, proxy, client):
    recorder.hangup("BANNER")
    p = proxy()
    c = client(p)
    r = c.reply(timeout=BOUND)
    assert r.code == 421 and r.enhanced.startswith("4.4."), r
    assert c.closed(BOUND)


def test_backend_refuses_at_banner(recorder, proxy, client):
    recorder.reply("BANNER", "421 4.3.2 backend.test Service shutting down")
    p = proxy()
    c = client(p)
    r = c.reply(timeout=BOUND)
    assert r.code == 421, r
    assert c.closed(BOUND)


def test_backend_hangs_up_mid_data(recorder, proxy, client):
    recorder.hangup("MIDDATA", after=1000)
    p = proxy()
    c = client(p)
    _start_txn(c)
    body = b"Subject: big\r\n\r\n" + (b"z" * 76 + b"\r\n") * 3000
    r = c.message(body + b".\r\n")
    assert 400 <= r.code < 500, r
    assert r.code == 451 and r.enhanced.startswith("4.4."), r
    _never_250_after(c)
    assert not recorder.delivered()
    assert recorder.wait_all_closed(BOUND)
    s = p.wait_summaries(1)
    assert s and s[-1]["status"] == "tempfail", s


def test_backend_hangs_up_at_end_of_data(recorder, proxy, client):
    recorder.hangup("EOD")
    p = proxy()
    c = client(p)
    _start_txn(c)
    r = c.message(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert r.code == 451 and r.enhanced.startswith("4.4."), r
    _never_250_after(c)
    # It did get the whole message; it just never said yes.
    assert recorder.messages()[0].data == b"Subject: x\r\n\r\nbody\r\n"
    assert not recorder.delivered()


@pytest.mark.parametrize("at", ["MAIL", "RCPT"])
def test_backend_hangs_up_at_command(recorder, proxy, client, at):
    recorder.hangup(at)
    p = proxy()
    c = client(p)
    c.greet()
    if at == "RCPT":
        c.cmd("MAIL FROM:<a@x.test>").expect(250)
    r = c.cmd("MAIL FROM:<a@x.test>" if at == "MAIL" else "RCPT TO:<b@y.test>")
    assert r.code == 451 and r.enhanced.startswith("4.4."), r
    _never_250_after(c)


@pytest.mark.parametrize("at", ["MAIL", "RCPT", "EOD"])
def test_backend_garbage_reply(recorder, proxy, client, at):
    recorder.garbage(at, data=b"HELLO I AM NOT SMTP\r\n")
    p = proxy()
    c = client(p)
    c.greet()
    if at == "MAIL":
        r = c.cmd("MAIL FROM:<a@x.test>")
    else:
        c.cmd("MAIL FROM:<a@x.test>").expect(250)
        if at == "RCPT":
            r = c.cmd("RCPT TO:<b@y.test>")
        else:
            c.cmd("RCPT TO:<b@y.test>").expect(250)
            r = c.message(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert r.code == 451 and r.enhanced and r.enhanced.startswith("4."), r
    assert "NOT SMTP" not in r.text
    _never_250_after(c)


def test_backend_binary_garbage(recorder, proxy, client):
    recorder.garbage("MAIL", data=b"\x00\xff\xfe" * 100 + b"\r\n")
    p = proxy()
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    assert r.code == 451, r


def test_backend_unexpected_reply_class(recorder, proxy, client):
    recorder.reply("MAIL", "354 go ahead, whatever")
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(451, "4.3.0")


def test_backend_unexpected_class_at_end_of_data(recorder, proxy, client):
    recorder.reply("EOD", "354 more please")
    p = proxy()
    c = client(p)
    _start_txn(c)
    r = c.message(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    r.expect(451, "4.3.0")


def test_backend_tempfail_at_end_of_data_relayed(recorder, proxy, client):
    recorder.reply("EOD", "452 4.3.1 Insufficient system storage")
    p = proxy()
    c = client(p)
    _start_txn(c)
    r = c.message(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert r.first == "452 4.3.1 Insufficient system storage"
    s = p.wait_summaries(1)
    assert s and s[-1]["status"] == "tempfail", s


def _spool_leftovers(p):
    names = set(os.listdir(p.workdir)) - {"portcullis.conf", "portcullis.log"}
    fds = [t for t in p.open_fds() if t.startswith(p.workdir) and t != p.log_path]
    return names, fds


def test_client_hangs_up_mid_data(recorder, proxy, client):
    p = proxy(spool_memory="4k")
    # First a whole message on the same connection, then one cut short.
    c = client(p)
    _start_txn(c)
    c.message(b"Subject: first\r\n\r\nok\r\n.\r\n").expect(250)
    c.envelope("cut@x.test")
    c.cmd("DATA").expect(354)
    c.send(b"Subject: cut short\r\n\r\n" + (b"q" * 70 + b"\r\n") * 1000)  # > spool_memory
    # Over spool_memory: the message is in an unlinked file in spool_dir.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        names, fds = _spool_leftovers(p)
        if fds:
            break
        time.sleep(0.05)
    assert fds, "no spool file open in spool_dir for a message over spool_memory"
    assert not names, f"spool file visible in spool_dir: {names}"
    c.close()
    assert recorder.wait_all_closed(BOUND), "the proxy kept the backend session open"
    conns = recorder.conns()
    assert len(conns) == 1
    raw = bytes(conns[0].raw)
    # Exactly one DATA (the first message) and one end-of-data, both before
    # the cut transaction began.
    assert raw.count(b"DATA\r\n") == 1
    assert raw.count(b"\r\n.\r\n") == 1
    assert b"Subject: cut short" not in raw
    assert len(recorder.messages()) == 1
    assert recorder.messages()[0].data == b"Subject: first\r\n\r\nok\r\n"
    s = p.wait_summaries(2)
    assert [x["status"] for x in s] == ["sent", "aborted"], s
    # The spool file is gone (nothing left open or on disk).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        names, fds = _spool_leftovers(p)
        if not names and not fds:
            break
        time.sleep(0.05)
    assert not names and not fds, (names, fds)


def test_client_hangs_up_before_end_of_data_with_pending_end(recorder, proxy, client):
    """A client that sends a message without the final dot and vanishes:
    nothing at all reaches the backend for it, even with bytes that look
    like an end in other dialects (LF.LF)."""
    p = proxy()
    c = client(p)
    _start_txn(c)
    c.cmd("DATA").expect(354)
    c.send(b"Subject: no end\r\n\r\nbody\n.\n")
    time.sleep(0.2)
    c.close()
    assert recorder.wait_all_closed(BOUND)
    assert "DATA" not in recorder.verbs()
    assert b"no end" not in recorder.raw()
