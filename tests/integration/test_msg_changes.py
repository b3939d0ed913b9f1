"""Milter-parity message changes (plugin ABI 2) in front of a real Postfix:
each change a filter makes at the end of DATA reaches the backend exactly.

The filter is tests/plugins/edits.c, whose keys name the changes. What
Postfix delivered (its capture transport: envelope and message as stored)
is compared byte for byte, LF line ends as Postfix stores them. "Nothing
delivered" is checked without sleeping: one more, unfiltered message in the
same session must be Postfix's only delivery.
"""

import os

from kit.messages import smtp
from kit.postfix import DOMAIN, postfix_fixtures
from kit.proxy import test_plugin

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN
CAROL = "carol@" + DOMAIN

# Postfix takes these three local parts and refuses any other (550 5.1.1).
_postfix, postfix = postfix_fixtures(users=["alice", "bob", "carol", "control"])


def lf(msg):
    return msg.replace(b"\r\n", b"\n")


def edits(**keys):
    """The edits test plugin; a key given a list is repeated in that order."""
    return ("plugin edits", dict(path=test_plugin("edits"), **keys))


MSG = (b"Received: from elsewhere by relay.test\r\n"
       b"Subject: original\r\n"
       b"X-Trace: one\r\n"
       b"X-Trace: two\r\n"
       b"From: sender@client.test\r\n"
       b"\r\n"
       b"body line\r\n"
       b".a line that starts with a dot\r\n")


def send(p, msg=MSG, sender="s@client.test", rcpts=(ALICE,)):
    with smtp(p) as s:
        assert s.sendmail(sender, list(rcpts), msg) == {}


def test_change_header(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[edits(change_header="Subject:0:changed by a filter")])
    send(p)
    [m] = postfix.wait_messages(1)
    assert m.content() == lf(MSG.replace(b"Subject: original", b"Subject: changed by a filter"))


def test_delete_one_occurrence(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[edits(delete_header="X-Trace:0")])
    send(p)
    [m] = postfix.wait_messages(1)
    assert m.content() == lf(MSG.replace(b"X-Trace: one\r\n", b""))


def test_insert_header_at_position(postfix, proxy):
    # Before received field 2 (the first X-Trace), not at the top.
    p = proxy(backend=postfix.addr, sections=[edits(insert_header="2:X-Inserted:here")])
    send(p)
    [m] = postfix.wait_messages(1)
    assert m.content() == lf(MSG.replace(b"X-Trace: one", b"X-Inserted: here\r\nX-Trace: one"))


def test_add_recipient(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[edits(add_rcpt=BOB)])
    send(p)
    got = postfix.wait_messages(1)
    assert sorted(r for m in got for r in m.recipients) == [ALICE, BOB]
    assert all(m.content() == lf(MSG) for m in got)
    assert p.wait_log(r"filters changed the envelope: added=1 deleted=0")


def test_delete_recipient(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[edits(delete_rcpt=BOB)])
    with smtp(p) as s:
        assert s.sendmail("s@client.test", [ALICE, BOB, CAROL], MSG) == {}
        # A second message in the same session: the backend was reset and
        # is in step again.
        assert s.sendmail("control@client.test", [ALICE], b"Subject: next\r\n\r\nx\r\n") == {}
    got = postfix.wait_messages(2)
    first = [m for m in got if m.sender == "s@client.test"]
    assert sorted(r for m in first for r in m.recipients) == [ALICE, CAROL]


def test_change_sender(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[edits(change_sender="bounces@client.test")])
    send(p)
    [m] = postfix.wait_messages(1)
    assert m.sender == "bounces@client.test"
    assert m.recipients == [ALICE]
    assert m.content() == lf(MSG)


def test_change_sender_to_null(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[edits(change_sender="<>")])
    send(p)
    [m] = postfix.wait_messages(1)
    assert m.sender == ""


def test_replace_body(postfix, proxy):
    # Un-stuffed text in; a line starting with "." is stuffed on the way to
    # the backend, and bare LF becomes CR LF.
    p = proxy(backend=postfix.addr, sections=[edits(replace_body=r"new body\n.dot\nend\n")])
    send(p)
    [m] = postfix.wait_messages(1)
    head = lf(MSG).split(b"\n\n", 1)[0]
    assert m.content() == head + b"\n\nnew body\n.dot\nend\n"


def test_replace_body_streamed_large(postfix, proxy, tmp_path):
    # 400 KB through the streaming API (1000-octet writes), spooled: byte-exact.
    lines = [b"line %06d %s" % (i, b"x" * 60) for i in range(6000)]
    lines[10] = b".starts with a dot"
    body = b"\n".join(lines) + b"\n"
    f = tmp_path / "body.txt"
    f.write_bytes(body)
    p = proxy(backend=postfix.addr, spool_memory="64k",
              sections=[edits(replace_body_file=str(f))])
    send(p)
    [m] = postfix.wait_messages(1)
    head = lf(MSG).split(b"\n\n", 1)[0]
    assert m.content() == head + b"\n\n" + body


def test_every_change_at_once(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[edits(
        change_sender="new@client.test", add_rcpt=CAROL, delete_rcpt=BOB,
        change_header="Subject:0:all of it", add_header="X-Scanned: yes",
        replace_body=r"short\n")])
    send(p, rcpts=(ALICE, BOB))
    got = postfix.wait_messages(1)
    assert {m.sender for m in got} == {"new@client.test"}
    assert sorted(r for m in got for r in m.recipients) == [ALICE, CAROL]
    head = lf(MSG).split(b"\n\n", 1)[0].replace(b"Subject: original", b"Subject: all of it")
    assert all(m.content() == b"X-Scanned: yes\n" + head + b"\n\nshort\n" for m in got)


def test_every_recipient_deleted_delivers_nothing(postfix, proxy):
    p = proxy(backend=postfix.addr, sections=[edits(delete_rcpt=ALICE)])
    with smtp(p) as s:
        # The client is told 250; Postfix gets nothing of it.
        assert s.sendmail("s@client.test", [ALICE], MSG) == {}
        assert s.sendmail("control@client.test", [BOB], b"Subject: control\r\n\r\nx\r\n") == {}
    [m] = postfix.wait_messages(1)
    assert m.sender == "control@client.test"
    assert p.wait_log(r"filters left out every recipient: nothing is delivered")
    assert [x for x in p.summaries() if x.get("status") == "dropped"]


def test_added_recipient_refused_by_backend(postfix, proxy):
    # Postfix refuses nobody@ (550 5.1.1): the message still goes to alice,
    # and the log says which recipient the backend would not take.
    p = proxy(backend=postfix.addr, sections=[edits(add_rcpt="nobody@" + DOMAIN)])
    send(p)
    [m] = postfix.wait_messages(1)
    assert m.recipients == [ALICE]
    assert p.wait_log(r"backend refused a recipient of the filters' envelope: 550")


def test_only_added_recipient_refused_is_tempfail(postfix, proxy):
    # Alice deleted, nobody@ added and refused: nothing the backend takes,
    # so the client must retry (451), never a silent 250.
    p = proxy(backend=postfix.addr, sections=[edits(delete_rcpt=ALICE, add_rcpt="nobody@" + DOMAIN)])
    with smtp(p) as s:
        s.ehlo("client.test")
        assert s.mail("s@client.test")[0] == 250
        assert s.rcpt(ALICE)[0] == 250
        code, text = s.data(MSG)
        assert (code, text) == (451, b"4.3.0 Mail server error, try again later")
        assert s.sendmail("control@client.test", [BOB], b"Subject: control\r\n\r\nx\r\n") == {}
    [m] = postfix.wait_messages(1)
    assert m.sender == "control@client.test"


# What the backend hears, byte for byte (the recording backend): the replay
# of a changed envelope, and the parameters a new sender keeps.

def _envelope_bytes(recorder, proxy, client, change_sender, mail=b"MAIL FROM:<s@client.test> BODY=8BITMIME"):
    p = proxy(sections=[edits(change_sender=change_sender)])
    c = client(p)
    c.greet()
    c.cmd(mail.decode()).expect(250)
    c.cmd("RCPT TO:<a@example.test>").expect(250)
    c.cmd("RCPT TO:<b@example.test>").expect(250)
    assert c.message(b"Subject: x\r\n\r\nbody\r\n.\r\n").code == 250
    return recorder.raw()


def test_replay_keeps_received_parameters(recorder, proxy, client):
    raw = _envelope_bytes(recorder, proxy, client, "new@client.test")
    # The client's envelope, then RSET and the whole envelope again, with
    # the new sender and the received BODY=8BITMIME; then DATA, once.
    assert raw.count(b"DATA\r\n") == 1
    i = raw.index(b"RSET\r\n")
    assert raw[:i].endswith(b"RCPT TO:<b@example.test>\r\n")
    assert raw[i:].startswith(
        b"RSET\r\nMAIL FROM:<new@client.test> BODY=8BITMIME\r\n"
        b"RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")


def test_replay_with_parameters_given(recorder, proxy, client):
    raw = _envelope_bytes(recorder, proxy, client, "new@client.test SIZE=100")
    i = raw.index(b"RSET\r\n")
    assert raw[i:].startswith(b"RSET\r\nMAIL FROM:<new@client.test> SIZE=100\r\n")


def test_added_recipient_only_no_reset(recorder, proxy, client):
    p = proxy(sections=[edits(add_rcpt="c@example.test")])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<s@client.test>").expect(250)
    c.cmd("RCPT TO:<a@example.test>").expect(250)
    assert c.message(b"Subject: x\r\n\r\nbody\r\n.\r\n").code == 250
    raw = recorder.raw()
    assert b"RSET" not in raw
    assert b"RCPT TO:<a@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n" in raw


def test_replacement_over_max_message_size_is_refused(recorder, proxy, client, tmp_path):
    # A filter cannot make us send more than max_message_size: the
    # replacement fails, is logged, and the received body goes on.
    f = tmp_path / "big.txt"
    f.write_bytes((b"y" * 70 + b"\n") * 2000)  # 142 KB
    p = proxy(max_message_size="64k", sections=[edits(replace_body_file=str(f))])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<s@client.test>").expect(250)
    c.cmd("RCPT TO:<a@example.test>").expect(250)
    assert c.message(b"Subject: x\r\n\r\nthe received body\r\n.\r\n").code == 250
    [t] = recorder.messages()
    assert t.data == b"Subject: x\r\n\r\nthe received body\r\n"
    assert p.wait_log(r"body replacement refused .*over max_message_size")
