"""The command table: order, local commands, refused commands, EHLO."""

import pytest

from kit.recorder import DEFAULT_CAPS
from kit.smtpclient import reply_lines_caps


def test_banner_is_ours(recorder, proxy, client):
    recorder.configure(banner="220 backend.internal ESMTP Postfix (secret version)")
    p = proxy()
    c = client(p)
    r = c.banner()
    assert r.first == "220 proxy.test ESMTP"
    assert "backend.internal" not in r.text and "Postfix" not in r.text


def test_rcpt_before_mail(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("RCPT TO:<b@y.test>").expect(503, "5.5.1")
    c.cmd("NOOP").expect(250)
    assert "RCPT" not in recorder.verbs()


def test_data_before_rcpt(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("DATA").expect(503, "5.5.1")  # no MAIL either
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("DATA").expect(503, "5.5.1")
    # The session is still in a sane state: finish a transaction.
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    c.message(b"Subject: ok\r\n\r\nx\r\n.\r\n").expect(250)
    msgs = recorder.wait_for_transactions(1)
    assert len(msgs) == 1
    assert recorder.verbs().count("DATA") == 1


def test_mail_before_ehlo(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.banner().expect(220)
    c.cmd("MAIL FROM:<a@x.test>").expect(503, "5.5.1")
    assert "a@x.test" not in recorder.raw().decode("latin-1")
    c.ehlo()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)


def test_nested_mail(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<first@x.test>").expect(250)
    c.cmd("MAIL FROM:<second@x.test>").expect(503, "5.5.1")
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    c.message(b"Subject: n\r\n\r\nx\r\n.\r\n").expect(250)
    t = recorder.wait_for_transactions(1)[0]
    assert t.sender == "first@x.test"
    assert "second@x.test" not in recorder.raw().decode("latin-1")


def test_data_with_all_rcpts_rejected(recorder, proxy, client):
    recorder.reply("RCPT", "550 5.1.1 No such user")
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(550, "5.1.1")
    c.cmd("RCPT TO:<c@y.test>").expect(550, "5.1.1")
    c.cmd("DATA").expect(554, "5.5.1")
    c.cmd("NOOP").expect(250)
    assert recorder.verbs().count("RCPT") == 2
    assert "DATA" not in recorder.verbs()
    assert not any(t.data_cmd for t in recorder.transactions())


def test_noop_help_vrfy_quit(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("NOOP").expect(250, "2.0.0")
    r = c.cmd("HELP")
    assert r.code == 214 and r.enhanced == "2.0.0"
    c.cmd("VRFY postmaster").expect(252, "2.0.0")
    c.cmd("QUIT").expect(221, "2.0.0")
    assert c.closed()


def test_noop_with_lowercase_and_args(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("noop").expect(250)
    c.cmd("NoOp some argument").expect(250)
    c.cmd("rset").expect(250)


def test_quit_before_ehlo(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.banner().expect(220)
    c.cmd("QUIT").expect(221)
    assert c.closed()


def test_unknown_verb(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("FOOBAR whatever").expect(500, "5.5.2")
    r = c.cmd("EXPN staff")
    assert r.code in (252, 500, 502), r
    c.cmd("NOOP").expect(250)
    assert "FOOBAR" not in recorder.verbs() and "EXPN" not in recorder.verbs()
    assert "whatever" not in recorder.raw().decode("latin-1")


@pytest.mark.parametrize(
    "line",
    [
        "XCLIENT ADDR=6.6.6.6 NAME=evil.example",
        "XFORWARD ADDR=6.6.6.6 NAME=evil.example",
    ],
    ids=["XCLIENT", "XFORWARD"],
)
def test_client_xclient_xforward_refused(recorder, proxy, client, line):
    # Even when the backend would honour them.
    recorder.configure(extra_caps=["XCLIENT", "XFORWARD"])
    p = proxy()
    c = client(p)
    c.greet()
    r = c.cmd(line)
    assert 500 <= r.code < 600, r
    # Pipelined after a transaction start too.
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert 500 <= c.cmd(line).code < 600
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    c.message(b"Subject: x\r\n\r\nx\r\n.\r\n").expect(250)
    recorder.wait_for_transactions(1)
    raw = recorder.raw().decode("latin-1")
    assert "6.6.6.6" not in raw and "evil.example" not in raw
    assert "XFORWARD" not in recorder.verbs()


def test_bdat_closes(recorder, proxy, client):
    """CHUNKING is never offered, and BDAT's chunk follows whatever we answer:
    it must not run as commands, so BDAT ends the session."""
    recorder.configure(extra_caps=["CHUNKING"])
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    c.send(b"BDAT 34 LAST\r\nMAIL FROM:<evil@x.test>\r\nRSET\r\n")
    assert c.reply().code == 502
    assert c.closed()
    assert "BDAT" not in recorder.verbs()
    assert not any("evil@" in x for x in recorder.commands())


@pytest.mark.parametrize("line", ["STARTTLS", "AUTH PLAIN AGFAYg=="])
def test_unadvertised_extensions_refused(recorder, proxy, client, line):
    recorder.configure(extra_caps=["STARTTLS", "CHUNKING", "AUTH"])
    p = proxy()
    c = client(p)
    c.greet()
    r = c.cmd(line)
    assert 500 <= r.code < 600, r
    c.cmd("NOOP").expect(250)
    verb = line.split()[0]
    assert verb not in recorder.verbs()


def _ehlo_caps(c):
    r = c.greet()
    return r, reply_lines_caps(r)


def test_ehlo_default_capabilities(recorder, proxy, client):
    p = proxy()
    c = client(p)
    r, caps = _ehlo_caps(c)
    assert r.lines[0].split()[0] == "proxy.test"
    assert "PIPELINING" in caps
    assert caps.get("SIZE") == str(50 * 1024 * 1024)
    for k in ("8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"):
        assert k in caps


def test_ehlo_hides_backend_extensions(recorder, proxy, client):
    recorder.configure(extra_caps=["XCLIENT", "XFORWARD", "CHUNKING", "STARTTLS", "AUTH", "ETRN", "DSN"])
    p = proxy()
    c = client(p)
    r, caps = _ehlo_caps(c)
    for k in ("XCLIENT", "XFORWARD", "CHUNKING", "STARTTLS", "AUTH", "ETRN"):
        assert k not in caps, r
    assert "PIPELINING" in caps and "SIZE" in caps


@pytest.mark.parametrize(
    "ours,backend,expect",
    [
        ("10M", 52428800, 10 * 1024 * 1024),
        ("50M", 1000000, 1000000),
        ("1k", 1000000, 1024),
    ],
)
def test_ehlo_size_is_min(recorder, proxy, client, ours, backend, expect):
    caps = [c for c in DEFAULT_CAPS if not c.startswith("SIZE")] + [f"SIZE {backend}"]
    recorder.configure(caps=caps)
    p = proxy(max_message_size=ours)
    c = client(p)
    _, got = _ehlo_caps(c)
    assert got.get("SIZE") == str(expect)


def test_ehlo_size_without_backend_size(recorder, proxy, client):
    recorder.configure(caps=["PIPELINING", "8BITMIME"])
    p = proxy(max_message_size="2M")
    c = client(p)
    _, caps = _ehlo_caps(c)
    assert caps.get("SIZE") == str(2 * 1024 * 1024)


def test_ehlo_only_what_backend_offers(recorder, proxy, client):
    recorder.configure(caps=["SIZE 52428800"])
    p = proxy()
    c = client(p)
    r, caps = _ehlo_caps(c)
    assert "PIPELINING" in caps  # ours, whatever the backend does
    for k in ("8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"):
        assert k not in caps, r


@pytest.mark.parametrize("offered", ["8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"])
def test_ehlo_passes_each_offered_extension(recorder, proxy, client, offered):
    recorder.configure(caps=["SIZE 52428800", offered])
    p = proxy()
    c = client(p)
    r, caps = _ehlo_caps(c)
    assert offered in caps
    for k in {"8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"} - {offered}:
        assert k not in caps, r


def test_second_ehlo_resets_transaction(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    c.ehlo("again.test")
    # RFC 5321 §4.1.4: EHLO clears the transaction like RSET.
    c.cmd("DATA").expect(503, "5.5.1")
    c.cmd("MAIL FROM:<c@x.test>").expect(250)
    c.cmd("RCPT TO:<d@y.test>").expect(250)
    c.message(b"Subject: x\r\n\r\nx\r\n.\r\n").expect(250)
    t = recorder.wait_for_transactions(1)
    assert len(t) == 1 and t[0].sender == "c@x.test" and t[0].accepted_rcpts == ["d@y.test"]


@pytest.mark.parametrize(
    "line,code",
    [
        ("MAIL FROM:a@x.test>", 501),
        ("MAIL FROM:<a@x.test", 501),
        ("MAIL TO:<a@x.test>", 501),
        ("MAIL", 501),
    ],
)
def test_bad_mail_syntax(recorder, proxy, client, line, code):
    p = proxy()
    c = client(p)
    c.greet()
    r = c.cmd(line)
    assert r.code == code, r
    assert "MAIL" not in recorder.verbs()


def test_bad_rcpt_syntax(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    r = c.cmd("RCPT TO:<b@y.test")
    assert r.code == 501, r
    assert "RCPT" not in recorder.verbs()


@pytest.mark.parametrize("verb", ["EHLO", "HELO"])
def test_helo_without_name(recorder, proxy, client, verb):
    p = proxy()
    c = client(p)
    c.banner().expect(220)
    c.cmd(verb).expect(501, "5.5.4")
    c.cmd("MAIL FROM:<a@x.test>").expect(503, "5.5.1")
    assert "MAIL" not in recorder.verbs()


@pytest.mark.parametrize(
    "line",
    [b"NOOP\x00\r\n", b"MAIL FROM:<a\x00b@x.test>\r\n", b"MAIL FROM:<a\x01b@x.test>\r\n"],
    ids=["noop", "mail-nul", "mail-ctrl"],
)
def test_control_characters_in_command(recorder, proxy, client, line):
    p = proxy()
    c = client(p)
    c.greet()
    c.send(line)
    r = c.reply()
    assert 500 <= r.code < 600, r
    c.cmd("NOOP").expect(250)
    assert b"\x00" not in recorder.raw() and b"\x01" not in recorder.raw()
    assert "MAIL" not in recorder.verbs()


def test_backend_rejects_sender(recorder, proxy, client):
    recorder.reply("MAIL", "550 5.7.1 <spammer@x.test>: Sender address rejected", times=1)
    p = proxy()
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<spammer@x.test>")
    assert r.first == "550 5.7.1 <spammer@x.test>: Sender address rejected"
    # No transaction is open: RCPT is refused by the proxy, not forwarded.
    c.cmd("RCPT TO:<b@y.test>").expect(503, "5.5.1")
    assert "RCPT" not in recorder.verbs()
    # And a new MAIL is not "nested".
    c.cmd("MAIL FROM:<good@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    c.message(b"Subject: x\r\n\r\nx\r\n.\r\n").expect(250)
    assert recorder.wait_for_transactions(1)[0].sender == "good@x.test"
