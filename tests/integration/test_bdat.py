"""BDAT to the backend (RFC 3030): to a backend that offers CHUNKING the
message goes as one "BDAT n LAST" and exactly n octets of message, not
dot-stuffed, in one write; the reply to it is the message's fate. The client
side keeps DATA: it is never offered CHUNKING.

The recording backend (kit.recorder) serves BDAT when CHUNKING is among its
capabilities: t.data is the chunks as received, t.bdat and t.chunks say how
they came. At the end, the same against a real Postfix.
"""

import re

import pytest

import kit.proxy as kp
from kit.messages import DOTS, stuff
from kit.postfix import DOMAIN, postfix_fixtures
from kit.smtpclient import ConnectionClosed, ReplyTimeout, reply_lines_caps

BOUND = 15.0

_postfix, postfix = postfix_fixtures()


MESSAGES = {
    "plain": b"From: <a@x.test>\r\nSubject: plain\r\n\r\nHello.\r\nNo dots here.\r\n",
    "dots": DOTS,
    "dot-first-line": b".starts with a dot\r\n\r\nbody\r\n",
    "empty-body": b"Subject: nothing below\r\n\r\n",
    "empty": b"",
}


@pytest.fixture
def chunking(recorder):
    recorder.configure(extra_caps=["CHUNKING"])
    return recorder


def vsec(name="v1", **keys):
    d = {"path": kp.test_plugin("verdict")}
    d.update(keys)
    return (f"plugin {name}", d)


def one_message(c, msg, sender="a@x.test", rcpts=("b@y.test",)):
    """MAIL, RCPT..., DATA and msg (as a client sends it); the final reply."""
    c.envelope(sender, *rcpts)
    c.cmd("DATA").expect(354)
    c.send((stuff(msg) if msg else b"") + b".\r\n")
    return c.reply(timeout=BOUND)


def big_message(size, dots):
    """About size octets of lines; with dots, every 500th line begins with
    "." or ".." (so the spool holds stuffing dots)."""
    lines, n, i = [b"Subject: big", b""], 0, 0
    while n < size:
        line = b"line %08d " % i + b"abcdefghij" * 6
        if dots and i % 500 == 0:
            line = (b".." if i % 1000 else b".") + line
        lines.append(line)
        n += len(line) + 2
        i += 1
    return b"\r\n".join(lines) + b"\r\n"


def assert_by_bdat(recorder, t, msg):
    """t came as one BDAT LAST holding exactly msg, and no DATA came."""
    assert t.bdat and not t.data_cmd, t
    assert t.chunks == [len(msg)], t.chunks
    assert t.data == msg
    assert b"BDAT %d LAST\r\n" % len(msg) + msg in recorder.raw()
    assert "DATA" not in recorder.verbs()


# ---- exact bytes ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(MESSAGES))
@pytest.mark.parametrize("spool_memory", [None, "16"], ids=["memory", "file"])
def test_exact_bytes(chunking, proxy, client, name, spool_memory):
    msg = MESSAGES[name]
    p = proxy(spool_memory=spool_memory)
    c = client(p)
    c.greet()
    r = one_message(c, msg)
    assert r.code == 250, r
    # The reply is the backend's own: the message's fate.
    assert r.first.startswith("250 2.0.0 Ok: queued as R"), r
    c.cmd("QUIT").expect(221)
    [t] = chunking.wait_for_transactions(1)
    assert t.completed
    assert_by_bdat(chunking, t, msg)
    # BDAT and its chunk in one write: when the recorder read the BDAT line
    # the chunk had come with it. A spool in a file goes by sendfile(2),
    # after the write that holds the command: not the same segment.
    if spool_memory is None:
        ev = chunking.events(0)
        at = chunking.events_raw(0)[ev.index(("recv", f"BDAT {len(msg)} LAST"))]
        assert chunking.conns()[0].raw[:at].endswith(b"BDAT %d LAST\r\n" % len(msg) + msg)
    s = p.wait_summaries(1, timeout=BOUND)
    assert s and s[0]["status"] == "sent" and s[0]["size"] == str(len(msg)), s


@pytest.mark.parametrize("size, spool_memory", [(0, None), (300_000, "4k")], ids=["small", "file"])
def test_header_added_by_a_filter_with_dot_lines(chunking, proxy, client, size, spool_memory):
    """A filter changed the message (a header added): what goes by BDAT is
    the new message, un-stuffed, its dot lines intact."""
    msg = DOTS + (big_message(size, True) if size else b"")
    p = proxy(spool_memory=spool_memory, sections=[vsec(add_header=["X-Test-One: one", "X-Test-Two: .two"])])
    c = client(p)
    c.greet()
    assert one_message(c, msg).code == 250
    [t] = chunking.wait_for_transactions(1)
    assert_by_bdat(chunking, t, b"X-Test-One: one\r\nX-Test-Two: .two\r\n" + msg)


def dot_line_at(offset, total=40_000):
    """A message whose first line beginning with "." starts at this octet
    of the message (and so of the spool, which holds it stuffed: no dot
    comes before), followed by more dot lines."""
    head = b"Subject: boundary\r\n\r\n"
    fill = offset - len(head)
    lines = []
    while fill > 0:
        n = min(fill, 78)
        if fill - n == 1 or n < 2:  # every line needs its CR LF
            n = fill - 2 if fill > 2 else fill
        lines.append(b"x" * (n - 2) + b"\r\n")
        fill -= n
    msg = head + b"".join(lines)
    assert len(msg) == offset
    msg += b".dot at the boundary\r\n..two\r\n.\r\n"
    while len(msg) < total:
        msg += b"y" * 70 + b"\r\n.z\r\n"
    return msg


@pytest.mark.parametrize("offset", [16382, 16383, 16384, 32767, 32768])
@pytest.mark.parametrize("spool_memory", [None, "4k"], ids=["memory", "file"])
def test_unstuffing_across_read_boundaries(chunking, proxy, client, offset, spool_memory):
    """The spool is read back in pieces to take the stuffing dots out: a dot
    line (or its stuffing dot) right at a piece's edge comes out right."""
    msg = dot_line_at(offset)
    p = proxy(spool_memory=spool_memory)
    c = client(p)
    c.greet()
    assert one_message(c, msg).code == 250
    [t] = chunking.wait_for_transactions(1)
    assert_by_bdat(chunking, t, msg)


@pytest.mark.parametrize("dots", [False, True], ids=["no-dots", "dots"])
def test_eight_megabytes_spilled_to_a_file(chunking, proxy, client, dots):
    """8 MB: beyond spool_memory (1 MB by default), so the spool is a file;
    moved as it is (no dots) or read back and un-stuffed (dots)."""
    msg = big_message(8 * 1024 * 1024, dots)
    assert (b"\r\n." in msg) == dots
    p = proxy()
    c = client(p)
    c.greet()
    assert one_message(c, msg).code == 250
    [t] = chunking.wait_for_transactions(1, timeout=BOUND)
    assert t.completed
    assert t.bdat and t.chunks == [len(msg)], t.chunks
    assert t.data == msg
    assert "DATA" not in chunking.verbs()


def test_several_messages_in_one_session(chunking, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    msgs = [MESSAGES["plain"], DOTS, MESSAGES["empty"]]
    for m in msgs:
        assert one_message(c, m).code == 250
    ts = chunking.wait_for_transactions(3)
    assert [t.data for t in ts] == msgs
    assert all(t.bdat and t.completed for t in ts)


# ---- when DATA is used -----------------------------------------------------------


def test_backend_chunking_no_gives_data(chunking, proxy, client):
    p = proxy(backend_chunking="no")
    c = client(p)
    c.greet()
    assert one_message(c, DOTS).code == 250
    [t] = chunking.wait_for_transactions(1)
    assert t.data_cmd and not t.bdat, t
    assert t.data == stuff(DOTS)
    assert "BDAT" not in chunking.verbs()


def test_no_chunking_at_the_backend_gives_data(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    assert one_message(c, DOTS).code == 250
    [t] = recorder.wait_for_transactions(1)
    assert t.data_cmd and not t.bdat and t.data == stuff(DOTS)


def test_client_never_offered_chunking(chunking, proxy, client):
    """The backend offers CHUNKING; the client is not told, and a client
    BDAT ends its session without reaching the backend."""
    p = proxy()
    c = client(p)
    caps = reply_lines_caps(c.greet())
    assert "CHUNKING" not in caps and "BINARYMIME" not in caps, caps
    assert "PIPELINING" in caps
    c.envelope()
    c.send(b"BDAT 5 LAST\r\nhello")
    r = c.reply(timeout=BOUND)
    assert r.code // 100 == 5, r
    assert c.closed(BOUND)
    assert "BDAT" not in chunking.verbs()
    assert not chunking.messages()


def test_data_stage_reject_sends_no_bdat(chunking, proxy, client):
    p = proxy(sections=[vsec(stages="data", action="reject")])
    c = client(p)
    c.greet()
    assert one_message(c, DOTS).first == "550 5.7.1 Rejected by policy"
    assert chunking.wait_command("RSET")
    assert "BDAT" not in chunking.verbs() and "DATA" not in chunking.verbs()


# ---- refusals and faults -------------------------------------------------------------


@pytest.mark.parametrize("reply, status", [
    ("552 5.3.4 Message too big for system", "rejected"),
    ("452 4.3.1 Insufficient system storage", "tempfail"),
])
def test_bdat_refused_then_rset_then_next_delivered(chunking, proxy, client, reply, status):
    """The refusal goes to the client as the backend said it; the backend
    then gets RSET (the recorder keeps a refused BDAT's transaction open, so
    without it the next MAIL would be a nested MAIL), and the next message
    in the same session is delivered."""
    chunking.reply("BDAT", reply, times=1)
    p = proxy()
    c = client(p)
    c.greet()
    assert one_message(c, DOTS).first == reply
    assert one_message(c, MESSAGES["plain"]).code == 250
    c.cmd("QUIT").expect(221)
    chunking.wait_for_transactions(2)
    ts = chunking.transactions()
    assert len(ts) == 2, ts
    assert ts[0].eod_code == int(reply[:3]) and not ts[0].completed and ts[0].reset
    assert ts[1].completed and ts[1].data == MESSAGES["plain"]
    assert [v for v in chunking.verbs() if v in ("MAIL", "RCPT", "BDAT", "RSET")] == [
        "MAIL", "RCPT", "BDAT", "RSET", "MAIL", "RCPT", "BDAT"]
    s = p.wait_summaries(2, timeout=BOUND)
    assert [x["status"] for x in s] == [status, "sent"], s


def test_bdat_refused_with_a_pipelined_next_transaction(chunking, proxy, client):
    """The client pipelines its next MAIL and RCPT right after the end of a
    message whose BDAT is refused: they wait for the RSET's reply."""
    chunking.reply("BDAT", "554 5.7.1 Message content rejected", times=1)
    p = proxy()
    c = client(p)
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    c.send(stuff(DOTS) + b".\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n")
    replies = c.replies(4, timeout=BOUND)
    assert [r.code for r in replies] == [554, 250, 250, 354], replies
    c.send(b"second\r\n.\r\n")
    c.reply(timeout=BOUND).expect(250)
    ts = chunking.wait_for_transactions(2)
    assert ts[1].completed and ts[1].data == b"second\r\n" and ts[1].recipients == ["c@y.test"]
    ev = [e for e in chunking.events(0) if e[0] == "recv"]
    i = ev.index(("recv", "RSET"))
    assert ev[i + 1] == ("recv", "MAIL FROM:<a@x.test>"), ev


@pytest.mark.parametrize("when", ["BDAT", "EOD"])
def test_bdat_stalled_times_out(chunking, proxy, client, when):
    """No reply to BDAT: the client gets the proxy's backend timeout reply
    (backend_data_timeout), nothing is acknowledged, and a retry in a new
    session is delivered once."""
    chunking.rule(when, "stall", times=1)
    p = proxy(backend_data_timeout="1s")
    c = client(p)
    c.greet()
    r = one_message(c, DOTS)
    r.expect(451, "4.4.2")
    assert not chunking.delivered()
    s = p.wait_summaries(1, timeout=BOUND)
    assert s and s[0]["status"] == "tempfail", s
    try:
        r2 = c.cmd("NOOP", timeout=BOUND)
        assert r2.code == 421, r2
    except (ConnectionClosed, ReplyTimeout, OSError):
        pass
    # The retry.
    c2 = client(p)
    c2.greet()
    assert one_message(c2, DOTS).code == 250
    delivered = chunking.wait_for_delivered(1, BOUND)
    assert len(delivered) == 1 and delivered[0].data == DOTS, delivered
    # The stalled one did arrive whole, and was never acknowledged.
    assert [t.data for t in chunking.messages()] == [DOTS, DOTS]


def test_backend_hangs_up_mid_chunk(chunking, proxy, client):
    chunking.hangup("MIDDATA", after=1000)
    p = proxy()
    c = client(p)
    c.greet()
    r = one_message(c, big_message(50_000, True))
    assert r.code == 451 and r.enhanced.startswith("4.4."), r
    assert not chunking.delivered()


# ---- against a real Postfix --------------------------------------------------------------


def test_postfix_gets_dot_lines_byte_exact_by_bdat(postfix, proxy):
    """Postfix offers CHUNKING: the message (dot lines and all) arrives as
    sent, and Postfix's own summary of the session counts a BDAT and no
    DATA."""
    import smtplib

    p = proxy(backend=postfix.addr)
    msg = DOTS + b"".join(b"." * (i % 3) + b"line %d\r\n" % i for i in range(300))
    with smtplib.SMTP(p.host, p.port, timeout=BOUND) as s:
        s.ehlo("client.test")
        assert "chunking" not in s.esmtp_features
        assert s.sendmail("dots@client.test", ["carol@" + DOMAIN], msg) == {}
    [m] = postfix.wait_messages(1)
    assert m.content() == msg.replace(b"\r\n", b"\n")
    assert m.recipients == ["carol@" + DOMAIN]
    lines = postfix.wait_log("bdat=1")
    assert lines, postfix.since()[-3000:]
    summary = [ln for ln in postfix.since().splitlines() if "disconnect from" in ln and "bdat=" in ln]
    assert summary and not re.search(r"\bdata=", summary[-1]), summary


def test_bdat_answered_with_an_unexpected_class(chunking, proxy, client):
    """354 to BDAT makes no sense: the proxy's generic backend error, never a
    250, and the session ends."""
    chunking.reply("BDAT", "354 go ahead")
    p = proxy()
    c = client(p)
    c.greet()
    r = one_message(c, DOTS)
    assert r.code == 451 and r.enhanced.startswith("4."), r
    assert c.closed(BOUND)
    assert not chunking.delivered()


def test_rset_refused_after_a_refused_bdat(chunking, proxy, client):
    """The backend will not take the RSET after a refused BDAT: it is out of
    step, so the next transaction is never started on it - the client gets
    a 4xx, and nothing is delivered."""
    chunking.reply("BDAT", "552 5.3.4 Message too big for system", times=1)
    chunking.reply("RSET", "500 5.5.1 no")
    p = proxy()
    c = client(p)
    c.greet()
    assert one_message(c, DOTS).code == 552
    try:
        r = c.cmd("MAIL FROM:<a@x.test>", timeout=BOUND)
        assert r.code // 100 == 4, r
    except (ConnectionClosed, OSError):
        pass
    assert not chunking.delivered()
    assert [v for v in chunking.verbs() if v == "MAIL"] == ["MAIL"]
