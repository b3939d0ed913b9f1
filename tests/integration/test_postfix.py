"""portcullis in front of a real Postfix (tests/kit/postfix.py): what Postfix
actually received - envelope sender, recipients and the message - is checked
against what the client sent.

What is comparable, and how: Postfix stores lines, not CRLF; its pipe(8)
delivery writes them with LF, and its smtpd prepends one Received: header. So
the delivered message minus that header (Message.content()) must equal the sent
message with every CRLF turned into LF, byte for byte - 8-bit octets, dots and
all. The DATA reply the client gets must be Postfix's own "queued as <id>" for
that very delivery, and a recipient Postfix refuses must get Postfix's own reply,
word for word.
"""

import os
import shutil
import smtplib
import subprocess

import pytest

from kit.messages import DOTS, make_message, smtp
from kit.postfix import DOMAIN, UNKNOWN, postfix_fixtures

# Postfix's SIZE in these tests: below the proxy's max_message_size, so the
# proxy must advertise Postfix's figure (or less), never its own.
POSTFIX_SIZE = 20 * 1024 * 1024

_postfix, postfix = postfix_fixtures(main_cf={"message_size_limit": str(POSTFIX_SIZE)})


def lf(msg):
    return msg.replace(b"\r\n", b"\n")


def queued_id(reply_text):
    """The queue id in Postfix's '250 2.0.0 Ok: queued as 4Xyz...'."""
    text = reply_text.decode() if isinstance(reply_text, bytes) else reply_text
    assert "queued as " in text, text
    return text.rsplit("queued as ", 1)[1].split()[0]


def send(s, sender, rcpts, msg, mail_options=()):
    """One transaction with smtplib's primitives, so that the DATA reply (which
    sendmail() throws away) is kept. Returns (rcpt replies, data reply)."""
    code, resp = s.mail(sender, list(mail_options))
    assert code == 250, (code, resp)
    replies = {r: s.rcpt(r) for r in rcpts}
    if not any(c == 250 for c, _ in replies.values()):
        s.rset()
        return replies, None
    return replies, s.data(msg)


def test_byte_exact_delivery_8bit(postfix, proxy):
    p = proxy(backend=postfix.addr)
    msg = make_message(subject="to postfix", lines=2000, width=120, eight_bit=True, seed=11,
                       to="alice@" + DOMAIN)
    rcpts = ["alice@" + DOMAIN, "bob@" + DOMAIN]
    with smtp(p) as s:
        s.ehlo("client.test")
        replies, (code, text) = send(s, "sender@client.test", rcpts, msg, ["BODY=8BITMIME"])
        assert all(c == 250 for c, _ in replies.values()), replies
        assert code == 250, text
    [m] = postfix.wait_messages(1)
    assert m.sender == "sender@client.test"
    assert sorted(m.recipients) == sorted(rcpts)
    assert m.content() == lf(msg)
    # The reply the client got is Postfix's own, for this very message.
    assert queued_id(text) == m.queue_id
    assert "by mx.postfix.test (Postfix)" in m.received()


def test_dot_stuffing_survives(postfix, proxy):
    p = proxy(backend=postfix.addr)
    msg = DOTS
    with smtp(p) as s:
        assert s.sendmail("dots@client.test", ["carol@" + DOMAIN], msg) == {}
    [m] = postfix.wait_messages(1)
    assert m.content() == lf(msg)
    assert m.recipients == ["carol@" + DOMAIN]


def test_unknown_recipient_gets_postfixs_550(postfix, proxy):
    # What Postfix itself answers to that RCPT, asked directly.
    with smtplib.SMTP(postfix.host, postfix.port, timeout=10) as d:
        d.ehlo("client.test")
        d.mail("sender@client.test")
        direct = d.rcpt(UNKNOWN)
        d.rset()
    assert direct[0] == 550 and direct[1].startswith(b"5.1.1 "), direct

    p = proxy(backend=postfix.addr)
    msg = b"Subject: one good one bad\r\n\r\nhello\r\n"
    with smtp(p) as s:
        s.ehlo("client.test")
        replies, (code, text) = send(s, "sender@client.test",
                                     ["dave@" + DOMAIN, UNKNOWN], msg)
        assert replies["dave@" + DOMAIN][0] == 250
        assert replies[UNKNOWN] == direct  # relayed word for word
        assert code == 250, text
    [m] = postfix.wait_messages(1)
    assert m.recipients == ["dave@" + DOMAIN]
    assert m.content() == lf(msg)
    assert queued_id(text) == m.queue_id


def test_only_unknown_recipients_then_data_refused(postfix, proxy):
    p = proxy(backend=postfix.addr)
    with smtp(p) as s:
        s.ehlo("client.test")
        assert s.mail("sender@client.test")[0] == 250
        code, text = s.rcpt(UNKNOWN)
        assert code == 550 and b"5.1.1" in text
        code, _ = s.docmd("DATA")
        assert code == 503 or code == 554, code  # no valid recipient: no 354
        s.rset()
        # The session is still usable.
        assert s.sendmail("sender@client.test", ["erin@" + DOMAIN],
                          b"Subject: after\r\n\r\nok\r\n") == {}
    [m] = postfix.wait_messages(1)
    assert m.recipients == ["erin@" + DOMAIN]


def test_null_sender(postfix, proxy):
    p = proxy(backend=postfix.addr)
    msg = b"Subject: a bounce\r\n\r\nnull sender\r\n"
    with smtp(p) as s:
        assert s.sendmail("<>", ["frank@" + DOMAIN], msg) == {}
    [m] = postfix.wait_messages(1)
    assert m.sender == ""
    assert m.content() == lf(msg)


def test_several_transactions_and_rset(postfix, proxy):
    p = proxy(backend=postfix.addr)
    sent = {}
    ids = set()
    with smtp(p) as s:
        s.ehlo("client.test")
        # A transaction abandoned with RSET delivers nothing.
        assert s.mail("abandoned@client.test")[0] == 250
        assert s.rcpt("ghost@" + DOMAIN)[0] == 250
        assert s.rset()[0] == 250
        for i in range(5):
            rcpt = "user%d@%s" % (i, DOMAIN)
            msg = b"Subject: n%d\r\n\r\nmessage %d\r\n" % (i, i)
            _, (code, text) = send(s, "seq@client.test", [rcpt], msg)
            assert code == 250, text
            ids.add(queued_id(text))
            sent[rcpt] = msg
    got = postfix.wait_messages(5)
    assert len(got) == 5
    assert {m.queue_id for m in got} == ids
    for m in got:
        [r] = m.recipients
        assert m.sender == "seq@client.test"
        assert m.content() == lf(sent[r])
    assert all("ghost@" + DOMAIN not in m.recipients for m in got)


def test_large_message_spooled_to_file(postfix, proxy):
    p = proxy(backend=postfix.addr, spool_memory="64k")
    msg = make_message(subject="big", lines=40000, width=150, eight_bit=True, seed=3)
    assert len(msg) > 2_000_000
    with smtp(p, timeout=30) as s:
        s.ehlo("client.test")
        _, (code, text) = send(s, "big@client.test", ["gina@" + DOMAIN], msg, ["BODY=8BITMIME"])
        assert code == 250, text
    [m] = postfix.wait_messages(1, timeout=30)
    assert m.content() == lf(msg)


def test_capabilities_filtered(postfix, proxy):
    # Postfix offers XCLIENT and CHUNKING and a SIZE below the proxy's own limit.
    with smtplib.SMTP(postfix.host, postfix.port, timeout=10) as d:
        d.ehlo("client.test")
        assert "xclient" in d.esmtp_features and "chunking" in d.esmtp_features
        assert int(d.esmtp_features["size"]) == POSTFIX_SIZE
    p = proxy(backend=postfix.addr, max_message_size="50M")
    with smtp(p) as s:
        code, _ = s.ehlo("client.test")
        assert code == 250
        feats = s.esmtp_features
    for never in ("xclient", "xforward", "chunking", "starttls"):
        assert never not in feats, feats
    assert "pipelining" in feats
    assert "size" in feats and 0 < int(feats["size"]) <= POSTFIX_SIZE, feats
    assert "8bitmime" in feats and "enhancedstatuscodes" in feats


def test_smtputf8(postfix, proxy):
    p = proxy(backend=postfix.addr)
    rcpt = "j\u00f6rg@" + DOMAIN
    msg = "Subject: utf-8\r\nFrom: <s\u00e9nder@client.test>\r\n\r\nGr\u00fc\u00dfe\r\n".encode()
    with smtp(p) as s:
        s.ehlo("client.test")
        if "smtputf8" not in s.esmtp_features:
            pytest.fail("the proxy does not offer SMTPUTF8 although Postfix does")
        assert s.sendmail("s\u00e9nder@client.test", [rcpt], msg,
                          mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    [m] = postfix.wait_messages(1)
    assert m.sender == "s\u00e9nder@client.test"
    assert m.recipients == [rcpt]
    assert m.content() == lf(msg)


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks is not installed")
@pytest.mark.parametrize("pipeline", [False, True], ids=["plain", "pipelined"])
def test_swaks_through_proxy(postfix, proxy, pipeline):
    p = proxy(backend=postfix.addr)
    body = "hello from swaks\n.dotted line\nlast"
    cmd = ["swaks", "--server", "%s:%d" % (p.host, p.port), "--ehlo", "client.test",
           "--from", "swaks@client.test", "--to", "henry@" + DOMAIN,
           "--header", "Subject: swaks test", "--body", body, "--timeout", "20"]
    if pipeline:
        cmd.append("--pipeline")
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, LC_ALL="C"))
    assert r.returncode == 0, r.stdout + r.stderr
    [m] = postfix.wait_messages(1)
    assert m.sender == "swaks@client.test"
    assert m.recipients == ["henry@" + DOMAIN]
    content = m.content()
    assert b"\nSubject: swaks test\n" in b"\n" + content
    # swaks ends the body with an empty line or two of its own.
    assert b"\n\nhello from swaks\n.dotted line\nlast\n" in content
    assert content.rstrip(b"\n").endswith(b"\nlast")
    # swaks printed Postfix's reply, relayed by the proxy.
    assert "queued as " + m.queue_id in r.stdout
