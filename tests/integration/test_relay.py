"""The transparent relay: what the client sends is what the backend records,
and the backend's answers are what the client gets."""

import re
import smtplib
import subprocess

import pytest

from kit.messages import DOTS, make_message, smtp, stuff


@pytest.mark.parametrize("spool_memory", ["1M", "4k"], ids=["memory", "file"])
def test_byte_exact_relay_8bit(recorder, proxy, spool_memory):
    p = proxy(spool_memory=spool_memory)
    msg = make_message(lines=3000, width=200, eight_bit=True, seed=7)
    assert len(msg) > 200_000
    with smtp(p) as s:
        s.ehlo("client.test")
        refused = s.sendmail("a@sender.test", ["b@rcpt.test"], msg, mail_options=["BODY=8BITMIME"])
        assert refused == {}
    msgs = recorder.wait_for_transactions(1)
    assert len(msgs) == 1
    t = msgs[0]
    assert t.data == stuff(msg)
    assert t.completed
    assert t.sender == "a@sender.test"
    assert t.recipients == ["b@rcpt.test"]
    assert "BODY=8BITMIME" in t.mail.upper()


def test_dot_stuffing_round_trip(recorder, proxy):
    p = proxy()
    msg = DOTS
    with smtp(p) as s:
        s.sendmail("a@x.test", ["b@y.test"], msg)
    t = recorder.wait_for_transactions(1)[0]
    wire = stuff(msg)
    assert t.data == wire
    # Spot checks of the stuffed form, independent of stuff().
    assert b"\r\n..leading dot\r\n" in t.data
    assert b"\r\n...two leading dots\r\n" in t.data
    assert b"\r\n..\r\n...\r\n....\r\n" in t.data
    assert t.data.endswith(b"\r\n..\r\n")


def test_stuffed_lone_dot_line_raw(recorder, proxy, client):
    """A stuffed ".." line is one line holding "." and must not end the data."""
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    body = b"Subject: s\r\n\r\nbefore\r\n..\r\nafter\r\n"
    c.message(body + b".\r\n").expect(250)
    t = recorder.wait_for_transactions(1)[0]
    assert t.data == body


def test_several_recipients_one_rejected(recorder, proxy):
    recorder.reply("RCPT", "550 5.1.1 <bad@y.test>: No such user", match="bad@")
    p = proxy()
    msg = make_message(lines=20)
    rcpts = ["one@y.test", "bad@y.test", "two@y.test", "three@y.test"]
    with smtp(p) as s:
        refused = s.sendmail("a@x.test", rcpts, msg)
    assert refused == {"bad@y.test": (550, b"5.1.1 <bad@y.test>: No such user")}
    msgs = recorder.wait_for_transactions(1)
    assert len(msgs) == 1
    t = msgs[0]
    assert t.accepted_rcpts == ["one@y.test", "two@y.test", "three@y.test"]
    assert t.data == stuff(msg)
    s = p.wait_summaries(1)
    assert s and s[-1]["status"] == "sent"
    assert "bad@y.test" not in s[-1].get("to", "")
    for r in ("one@y.test", "two@y.test", "three@y.test"):
        assert f"<{r}>" in s[-1]["to"]


def test_backend_replies_relayed_verbatim(recorder, proxy, client):
    recorder.reply("MAIL", "250 2.1.0 Sender looks fine to me")
    recorder.reply("RCPT", "451 4.7.1 <later@y.test>: Greylisted, try in 5 minutes", match="later@")
    recorder.reply("RCPT", ["250-2.1.5 first line", "250 2.1.5 second line"], match="multi@")
    recorder.reply("EOD", "250 2.0.0 Ok: queued as ABC123XYZ")
    p = proxy()
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    assert r.first == "250 2.1.0 Sender looks fine to me"
    r = c.cmd("RCPT TO:<later@y.test>")
    assert r.first == "451 4.7.1 <later@y.test>: Greylisted, try in 5 minutes"
    r = c.cmd("RCPT TO:<multi@y.test>")
    assert r.code == 250 and r.lines == ["2.1.5 first line", "2.1.5 second line"]
    r = c.message(b"Subject: x\r\n\r\nhi\r\n.\r\n")
    assert r.first == "250 2.0.0 Ok: queued as ABC123XYZ"
    t = recorder.wait_for_transactions(1)[0]
    assert t.accepted_rcpts == ["multi@y.test"]


def test_backend_rejects_message_relayed(recorder, proxy, client):
    recorder.reply("EOD", "554 5.7.1 Message content rejected")
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    r = c.message(b"Subject: spam\r\n\r\nbuy\r\n.\r\n")
    assert r.first == "554 5.7.1 Message content rejected"
    # The session goes on.
    c.cmd("RSET").expect(250)
    s = p.wait_summaries(1)
    assert s and s[-1]["status"] == "rejected"
    assert s[-1]["reply"].startswith("554 5.7.1")


def test_whole_transaction_pipelined(recorder, proxy, client):
    recorder.reply("RCPT", "550 5.1.1 No such user", match="bad@")
    p = proxy()
    c = client(p)
    c.banner().expect(220)
    c.send(
        b"EHLO client.test\r\n"
        b"MAIL FROM:<a@x.test>\r\n"
        b"RCPT TO:<b@y.test>\r\n"
        b"RCPT TO:<bad@y.test>\r\n"
        b"RCPT TO:<c@y.test>\r\n"
        b"DATA\r\n"
    )
    ehlo, mail, r1, r2, r3, data = c.replies(6)
    assert ehlo.code == 250 and len(ehlo.lines) > 1
    assert mail.first == "250 2.1.0 Ok"
    assert r1.first == "250 2.1.5 Ok"
    assert r2.first == "550 5.1.1 No such user"
    assert r3.first == "250 2.1.5 Ok"
    assert data.code == 354
    body = b"Subject: pipelined\r\n\r\nline\r\n"
    c.send(body + b".\r\nQUIT\r\n")
    done, quit_ = c.replies(2)
    assert done.code == 250
    assert quit_.code == 221
    assert c.closed()
    t = recorder.wait_for_transactions(1)[0]
    assert t.data == body
    assert t.accepted_rcpts == ["b@y.test", "c@y.test"]


def test_everything_in_one_write(recorder, proxy, client):
    """Even message and QUIT in the same write as the commands (a client that
    does not wait for 354): replies still come one per command, in order."""
    p = proxy()
    c = client(p)
    c.banner().expect(220)
    body = b"Subject: one write\r\n\r\nx\r\n"
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n"
        b"DATA\r\n" + body + b".\r\nMAIL FROM:<d@x.test>\r\nRCPT TO:<e@y.test>\r\nDATA\r\n"
        + body + b".\r\nQUIT\r\n"
    )
    codes = [r.code for r in c.replies(10)]
    assert codes == [250, 250, 250, 250, 354, 250, 250, 250, 354, 250]
    assert c.reply().code == 221
    msgs = recorder.wait_for_transactions(2)
    assert [m.data for m in msgs] == [body, body]
    assert [m.sender for m in msgs] == ["a@x.test", "d@x.test"]


def test_rset_clears_transaction(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<first@x.test>").expect(250)
    c.cmd("RCPT TO:<old@y.test>").expect(250)
    c.cmd("RSET").expect(250)
    assert recorder.wait_command("RSET")
    # The transaction is gone: RCPT needs a new MAIL, DATA too.
    c.cmd("RCPT TO:<orphan@y.test>").expect(503, "5.5.1")
    c.cmd("DATA").expect(503, "5.5.1")
    c.cmd("MAIL FROM:<second@x.test>").expect(250)
    c.cmd("RCPT TO:<new@y.test>").expect(250)
    c.message(b"Subject: after rset\r\n\r\nx\r\n.\r\n").expect(250)
    msgs = recorder.wait_for_transactions(1)
    assert len(msgs) == 1
    assert msgs[0].sender == "second@x.test"
    assert msgs[0].accepted_rcpts == ["new@y.test"]
    assert "orphan@y.test" not in recorder.raw().decode("latin-1")
    verbs = recorder.verbs()
    assert verbs.count("MAIL") == 2 and "RSET" in verbs


def test_ten_transactions_one_connection(recorder, proxy):
    p = proxy()
    sent = []
    with smtp(p) as s:
        s.ehlo("client.test")
        for i in range(10):
            msg = make_message(subject=f"n{i}", lines=30 + i, seed=i)
            sent.append(msg)
            assert s.sendmail(f"s{i}@x.test", [f"r{i}@y.test"], msg) == {}
    msgs = recorder.wait_for_transactions(10)
    assert len(msgs) == 10
    assert [m.data for m in msgs] == [stuff(m) for m in sent]
    assert [m.sender for m in msgs] == [f"s{i}@x.test" for i in range(10)]
    # One backend session carried them all.
    assert len(recorder.conns()) == 1
    s = p.wait_summaries(10)
    assert [x["status"] for x in s] == ["sent"] * 10
    ids = [x["id"] for x in s]
    assert len(set(ids)) == 10
    assert len({i.split(".")[0] for i in ids}) == 1, ids


def test_helo_transaction(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.banner().expect(220)
    r = c.cmd("HELO client.test")
    assert r.code == 250 and len(r.lines) == 1
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    c.message(b"Subject: helo\r\n\r\nx\r\n.\r\n").expect(250)
    assert recorder.wait_for_transactions(1)[0].data == b"Subject: helo\r\n\r\nx\r\n"


def test_empty_message_and_null_sender(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<>").expect(250)
    c.cmd("RCPT TO:<postmaster>").expect(250)
    c.message(b".\r\n").expect(250)
    t = recorder.wait_for_transactions(1)[0]
    assert t.data == b""
    assert t.sender == ""
    assert t.recipients == ["postmaster"]


def test_swaks_end_to_end(recorder, proxy):
    p = proxy()
    r = subprocess.run(
        [
            "swaks", "--server", f"{p.host}:{p.port}", "--helo", "swaks.test",
            "--from", "sender@swaks.test", "--to", "rcpt1@dest.test,rcpt2@dest.test",
            "--header", "Subject: via swaks", "--body", "hello from swaks\n.starts with a dot\n",
            "--timeout", "15",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
    )
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    t = recorder.wait_for_transactions(1)[0]
    assert t.sender == "sender@swaks.test"
    assert t.accepted_rcpts == ["rcpt1@dest.test", "rcpt2@dest.test"]
    assert b"Subject: via swaks\r\n" in t.data
    assert b"\r\n..starts with a dot\r\n" in t.data
    s = p.wait_summaries(1)
    assert len(s) == 1, p.log()
    line = s[0]
    assert line["status"] == "sent"
    assert line["from"] == "<sender@swaks.test>"
    assert line["to"] == "<rcpt1@dest.test>,<rcpt2@dest.test>"
    assert line["helo"] == "swaks.test"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", line["client"])
    # RFC 1870 §4: the size is the message's, without the stuffing dots
    assert int(line["size"]) == len(t.data.replace(b"\r\n..", b"\r\n."))
    assert line["reply"].startswith("250 ")


def test_pipelined_replies_in_order_with_slow_backend(recorder, proxy, client):
    """The backend answers MAIL late; the pipelined RCPTs behind it must not
    overtake it, neither on the wire to the backend nor in the replies."""
    recorder.delay("MAIL", 0.4)
    recorder.delay("RCPT", 0.2, match="slow@")
    recorder.reply("RCPT", "550 5.1.1 No such user", match="bad@")
    p = proxy()
    c = client(p)
    c.greet()
    c.send(
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<slow@y.test>\r\nRCPT TO:<bad@y.test>\r\n"
        b"RCPT TO:<fast@y.test>\r\nNOOP\r\nDATA\r\n"
    )
    rs = c.replies(6)
    assert [r.first for r in rs[:4]] == [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "550 5.1.1 No such user",
        "250 2.1.5 Ok",
    ]
    assert rs[4].code == 250 and rs[5].code == 354
    c.send(b"Subject: slow\r\n\r\nx\r\n.\r\n")
    c.reply().expect(250)
    cmds = [x for x in recorder.commands() if x.split(" ")[0] in ("MAIL", "RCPT", "DATA")]
    assert cmds == [
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<slow@y.test>",
        "RCPT TO:<bad@y.test>",
        "RCPT TO:<fast@y.test>",
        "DATA",
    ]
    assert recorder.wait_for_transactions(1)[0].accepted_rcpts == ["slow@y.test", "fast@y.test"]


def test_concurrent_sessions_do_not_mix(recorder, proxy):
    import threading

    p = proxy()
    errors = []

    def worker(n):
        try:
            with smtp(p) as s:
                for i in range(5):
                    msg = make_message(subject=f"w{n}m{i}", lines=40, seed=100 * n + i,
                                       sender=f"w{n}@x.test")
                    s.sendmail(f"w{n}@x.test", [f"r{n}.{i}@y.test"], msg)
        except Exception as e:  # reported below
            errors.append(f"worker {n}: {e!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    msgs = recorder.wait_for_transactions(50)
    assert len(msgs) == 50
    for m in msgs:
        n = int(m.sender[1:].split("@")[0])
        i = int(m.accepted_rcpts[0].split(".")[1].split("@")[0])
        want = make_message(subject=f"w{n}m{i}", lines=40, seed=100 * n + i, sender=f"w{n}@x.test")
        assert m.data == stuff(want), (m.sender, m.accepted_rcpts)
        assert m.accepted_rcpts == [f"r{n}.{i}@y.test"]
    assert len(recorder.conns()) == 10


def test_utf8_addresses_relayed(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<jøran@bücher.test> SMTPUTF8").expect(250)
    c.cmd("RCPT TO:<用户@例子.test>").expect(250)
    body = "Subject: ünïcödé\r\n\r\nГлавная\r\n".encode()
    c.message(body + b".\r\n").expect(250)
    t = recorder.wait_for_transactions(1)[0]
    assert t.data == body
    assert "jøran@bücher.test".encode().decode("latin-1") in t.mail
    assert "SMTPUTF8" in t.mail.upper()
    assert t.rcpts == ["RCPT TO:<用户@例子.test>".encode().decode("latin-1")]


def test_long_data_line_never_silently_cut(recorder, proxy, client):
    """A line over max_data_line_length is refused with a 5xx, or relayed
    with every octet kept (split the way Postfix does); never truncated."""
    p = proxy(max_data_line_length=1000)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    long_line = bytes(ord("a") + i % 26 for i in range(5000))
    body = b"Subject: long\r\n\r\n" + long_line + b"\r\nafter\r\n"
    r = c.message(body + b".\r\n")
    if r.code == 250:
        t = recorder.wait_for_transactions(1)[0]
        assert t.data.replace(b"\r\n", b"") == body.replace(b"\r\n", b"")
        assert all(len(x) <= 1000 for x in t.data.split(b"\r\n"))
    else:
        assert 500 <= r.code < 600, r
        c.cmd("NOOP").expect(250)
        assert "DATA" not in recorder.verbs()
        assert long_line[:100] not in recorder.raw()
