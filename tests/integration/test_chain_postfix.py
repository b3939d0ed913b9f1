"""Filter verdicts in front of a real Postfix (tests/kit/postfix.py): what
Postfix actually received when a filter rejects, drops or adds a header.

"Never received" is checked without sleeping: after the filtered transaction
the same client sends one more, unfiltered message, and that must be the
only delivery Postfix made.
"""

from kit.messages import smtp
from kit.postfix import DOMAIN, postfix_fixtures
from kit.proxy import test_plugin

GOOD = "alice@" + DOMAIN
OTHER = "bob@" + DOMAIN

_postfix, postfix = postfix_fixtures()


def lf(msg):
    return msg.replace(b"\r\n", b"\n")


def verdict(name, **keys):
    return ("plugin " + name, dict(path=test_plugin("verdict"), **keys))


def only_delivery(postfix, s, marker):
    """Send one more message in session s; it must be Postfix's only one."""
    msg = b"Subject: " + marker + b"\r\n\r\ncontrol\r\n"
    assert s.sendmail("control@client.test", [GOOD], msg) == {}
    [m] = postfix.wait_messages(1)
    assert m.content() == lf(msg), m.content()
    return m


def test_rejected_rcpt_never_reaches_postfix(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[
        verdict("v", stages="rcpt", action="reject", match="bob@", reply="554 5.7.1 not bob")])
    msg = b"Subject: for alice only\r\n\r\nhello\r\n"
    with smtp(p) as s:
        s.ehlo("client.test")
        assert s.mail("s@client.test")[0] == 250
        assert s.rcpt(GOOD)[0] == 250
        assert s.rcpt(OTHER) == (554, b"5.7.1 not bob")
        assert s.data(msg)[0] == 250
    [m] = postfix.wait_messages(1)
    assert m.recipients == [GOOD]
    assert m.content() == lf(msg)


def test_drop_at_mail_delivers_nothing(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[
        verdict("v", stages="mail", action="drop", match="spam@")])
    with smtp(p) as s:
        s.ehlo("client.test")
        # The client is told success at every step...
        assert s.mail("spam@client.test")[0] == 250
        assert s.rcpt(GOOD)[0] == 250
        code, _ = s.data(b"Subject: dropped\r\n\r\nnever delivered\r\n")
        assert code == 250
        # ... and Postfix got nothing of it.
        m = only_delivery(postfix, s, b"after the drop")
    assert m.sender == "control@client.test"
    [line] = [x for x in p.summaries() if x.get("status") == "dropped"]
    assert line["by"] == "v" and line["stage"] == "mail"


def test_reject_at_data_then_next_message_delivered(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[
        verdict("v", stages="data", action="reject", match="viagra")])
    with smtp(p) as s:
        s.ehlo("client.test")
        assert s.mail("s@client.test")[0] == 250
        assert s.rcpt(OTHER)[0] == 250
        code, text = s.data(b"Subject: cheap viagra\r\n\r\nbuy\r\n")
        assert (code, text) == (550, b"5.7.1 Rejected by policy")
        # Postfix was told RSET: the session goes on cleanly.
        m = only_delivery(postfix, s, b"clean")
    assert m.recipients == [GOOD]


def test_drop_one_recipient(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[
        verdict("v", stages="rcpt", action="drop", match="bob@")])
    msg = b"Subject: two\r\n\r\nhi\r\n"
    with smtp(p) as s:
        assert s.sendmail("s@client.test", [GOOD, OTHER], msg) == {}
    [m] = postfix.wait_messages(1)
    assert m.recipients == [GOOD]


def test_added_header_reaches_postfix_first(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[
        verdict("v", stages="data", action="continue", add_header="X-Filtered: yes")])
    msg = b"Subject: stamped\r\nFrom: a@client.test\r\n\r\nbody\r\n.dot line\r\n"
    with smtp(p) as s:
        assert s.sendmail("s@client.test", [GOOD], msg) == {}
    [m] = postfix.wait_messages(1)
    assert m.content() == b"X-Filtered: yes\n" + lf(msg)


def test_tempfail_at_mail(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[
        verdict("v", stages="mail", action="tempfail", match="later@", delay="50ms")])
    with smtp(p) as s:
        s.ehlo("client.test")
        assert s.mail("later@client.test") == (451, b"4.7.1 Try again later")
        only_delivery(postfix, s, b"after the tempfail")
