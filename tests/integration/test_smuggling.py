"""SMTP smuggling (CVE-2023-51764 and friends): only CRLF.CRLF ends DATA, and
bare LF, bare CR and NUL never reach the backend.

Each pattern is sent over a raw socket inside a message that later ends
properly, followed by a smuggled transaction. With bare_lf=reject the client
gets 550 5.5.2 and the backend records no message and never sees the
smuggled sender; with bare_lf=normalize the backend records exactly one
transaction and the smuggled MAIL FROM only inside its body. The recorder
plays a vulnerable backend (lenient_end): it takes any of these patterns as
the end, so whatever the proxy let through unframed would show up there as a
second transaction."""

import pytest

PATTERNS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CR": b"\r.\r",
    "CRLF.CRCRLF": b"\r\n.\r\r\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
}

PREFIX = b"From: <a@x.test>\r\nTo: <b@y.test>\r\nSubject: smuggle\r\n\r\nhello"
SMUGGLED = b"MAIL FROM:<smuggled@evil>\r\nRCPT TO:<victim@x>\r\nDATA\r\nSmuggled body\r\n"


def _smuggle(c, pattern):
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    c.send(PREFIX + pattern + SMUGGLED + b".\r\n")
    return c.reply()


def _clean_transaction(c):
    c.envelope("clean@x.test")
    c.message(b"Subject: clean\r\n\r\nclean\r\n.\r\n").expect(250)


def _assert_canonical(data):
    """Every line ends in CRLF; no bare CR or LF, no NUL."""
    assert b"\x00" not in data
    assert data.endswith(b"\r\n")
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"), data


@pytest.mark.parametrize("pattern", PATTERNS.values(), ids=PATTERNS.keys())
def test_smuggling_rejected(recorder, proxy, client, pattern):
    recorder.configure(lenient_end=True)
    p = proxy(bare_lf="reject")
    c = client(p)
    r = _smuggle(c, pattern)
    r.expect(550, "5.5.2")
    # The whole thing was read to its real end: the session goes on.
    c.cmd("NOOP").expect(250)
    _clean_transaction(c)
    c.cmd("QUIT").expect(221)
    assert recorder.wait_all_closed(10)
    msgs = recorder.messages()
    assert len(msgs) == 1 and msgs[0].sender == "clean@x.test", msgs
    assert recorder.verbs().count("DATA") == 1
    raw = recorder.raw()
    assert b"smuggled@evil" not in raw and b"victim@x" not in raw
    assert b"Subject: smuggle" not in raw
    s = p.wait_summaries(2)
    assert s[0]["status"] == "rejected", s


@pytest.mark.parametrize("pattern", PATTERNS.values(), ids=PATTERNS.keys())
def test_smuggling_normalized(recorder, proxy, client, pattern):
    recorder.configure(lenient_end=True)
    p = proxy(bare_lf="normalize")
    c = client(p)
    r = _smuggle(c, pattern)
    r.expect(250)
    c.cmd("QUIT").expect(221)
    assert recorder.wait_all_closed(10)
    msgs = recorder.messages()
    assert len(msgs) == 1, msgs
    t = msgs[0]
    assert t.sender == "a@x.test" and t.accepted_rcpts == ["b@y.test"]
    # Exactly one transaction, and the smuggled one never became commands.
    assert len(recorder.transactions()) == 1
    assert recorder.verbs().count("MAIL") == 1
    assert recorder.verbs().count("DATA") == 1
    assert not any("smuggled@evil" in cmd or "victim@x" in cmd for cmd in recorder.commands())
    # ... but is there, as text of the one message.
    assert b"MAIL FROM:<smuggled@evil>" in t.data
    assert t.data.startswith(b"From: <a@x.test>\r\nTo: <b@y.test>\r\nSubject: smuggle\r\n\r\nhello")
    assert t.data.endswith(b"DATA\r\nSmuggled body\r\n")
    _assert_canonical(t.data)


def test_normalize_exact_output(recorder, proxy, client):
    """LF becomes CRLF, a stray CR a space, a dot-led line is stuffed."""
    p = proxy(bare_lf="normalize")
    c = client(p)
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    c.send(b"Subject: n\n\none\ntwo\rthree\r\n..four\r\n\r\n.\r\n")
    c.reply().expect(250)
    t = recorder.wait_for_transactions(1)[0]
    assert t.data == b"Subject: n\r\n\r\none\r\ntwo three\r\n..four\r\n\r\n"


def test_lf_only_message_rejected(recorder, proxy, client):
    p = proxy(bare_lf="reject")
    c = client(p)
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    c.send(b"Subject: lf\nFrom: <a@x.test>\n\nline one\nline two\n\r\n.\r\n")
    c.reply().expect(550, "5.5.2")
    c.cmd("NOOP").expect(250)
    assert "DATA" not in recorder.verbs()


def test_lf_only_message_normalized(recorder, proxy, client):
    p = proxy(bare_lf="normalize")
    c = client(p)
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    c.send(b"Subject: lf\nFrom: <a@x.test>\n\nline one\nline two\n\r\n.\r\n")
    c.reply().expect(250)
    t = recorder.wait_for_transactions(1)[0]
    assert t.data == b"Subject: lf\r\nFrom: <a@x.test>\r\n\r\nline one\r\nline two\r\n\r\n"


def test_lf_dot_lf_does_not_end_data(recorder, proxy, client):
    """A client that ends with LF.LF has not ended the message: no reply
    comes, and the backend sees nothing, until the real end."""
    p = proxy(bare_lf="normalize")
    c = client(p)
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    c.send(b"Subject: x\r\n\r\nbody\n.\n")
    from kit.smtpclient import ReplyTimeout

    with pytest.raises(ReplyTimeout):
        c.reply(timeout=0.7)
    assert "DATA" not in recorder.verbs()
    c.send(b"\r\n.\r\n")
    c.reply().expect(250)
    assert len(recorder.wait_for_transactions(1)) == 1


def test_nul_rejected(recorder, proxy, client):
    p = proxy(bare_lf="reject")
    c = client(p)
    c.greet()
    c.envelope()
    r = c.message(b"Subject: nul\r\n\r\nbefore\x00after\r\n.\r\n")
    r.expect(550)
    assert r.enhanced in ("5.6.0", "5.5.2"), r
    c.cmd("NOOP").expect(250)
    assert "DATA" not in recorder.verbs()
    assert b"before" not in recorder.raw()


def test_nul_normalized(recorder, proxy, client):
    p = proxy(bare_lf="normalize")
    c = client(p)
    c.greet()
    c.envelope()
    c.message(b"Subject: nul\r\n\r\nbefore\x00after\r\n\x00.\r\n.\r\n").expect(250)
    t = recorder.wait_for_transactions(1)[0]
    assert b"\x00" not in t.data
    assert t.data.startswith(b"Subject: nul\r\n\r\nbeforeafter\r\n")
    # "\0." + CRLF is not a lone dot: it must not end the message, and the
    # dot that is left leads the line, so it is stuffed.
    assert t.data == b"Subject: nul\r\n\r\nbeforeafter\r\n..\r\n"


def test_nul_dot_line_not_end_reject(recorder, proxy, client):
    p = proxy(bare_lf="reject")
    c = client(p)
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    c.send(b"Subject: x\r\n\r\nbody\r\n\x00.\r\n" + SMUGGLED + b".\r\n")
    r = c.reply()
    r.expect(550)
    c.cmd("NOOP").expect(250)
    assert b"smuggled@evil" not in recorder.raw()
