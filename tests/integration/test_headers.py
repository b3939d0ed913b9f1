"""The headers plugin (plugins/headers.c): add header fields built from
templates, strip incoming ones; everything else reaches the backend
byte for byte."""

import re

import pytest

from kit.messages import make_message, stuff
from kit.proxy import Proxy, ProxyError, run_check

BODY = b"Subject: headers test\r\n\r\nhello\r\n"


def headers_proxy(proxy, add=(), remove=(), extra_sections=(), **settings):
    keys = {}
    if add:
        keys["add"] = list(add)
    if remove:
        keys["remove"] = list(remove)
    return proxy(sections=[*extra_sections, ("plugin headers", keys)], **settings)


def deliver(c, msg, sender="a@sender.test", rcpt="b@rcpt.test"):
    c.envelope(f"{sender}", f"{rcpt}")
    c.message(stuff(msg) + b".\r\n").expect(250)


def test_add_with_templates(recorder, proxy, client):
    p = headers_proxy(
        proxy,
        add=[
            "X-Portcullis-Id: %{tx_id}",
            "X-Portcullis-Session: %{session_id} on %{hostname}",
            "X-Portcullis-Client: %{client_ip} port %{client_port} helo %{helo}",
            "X-Portcullis-From: <%{sender}>",
            "X-Portcullis-Trail: %{trail}",
            "X-Percent: 100%% sure, %%{tx_id} is literal",
        ],
    )
    c = client(p)
    c.greet("client.example")
    port = c.sock.getsockname()[1]
    deliver(c, BODY)
    t = recorder.wait_for_transactions(1)[0]
    s = p.wait_summaries(1)[-1]
    tx_id = s["id"]
    session_id = tx_id.split(".")[0]
    expected = (
        f"X-Portcullis-Id: {tx_id}\r\n"
        f"X-Portcullis-Session: {session_id} on proxy.test\r\n"
        f"X-Portcullis-Client: 127.0.0.1 port {port} helo client.example\r\n"
        "X-Portcullis-From: <a@sender.test>\r\n"
        "X-Portcullis-Trail: none\r\n"
        "X-Percent: 100% sure, %{tx_id} is literal\r\n"
    ).encode()
    assert t.data == expected + BODY
    assert s["status"] == "sent"


def test_tx_id_changes_per_transaction_and_null_sender(recorder, proxy, client):
    p = headers_proxy(proxy, add=["X-Tx: %{tx_id}", "X-Sender: %{sender}"])
    c = client(p)
    c.greet()
    deliver(c, BODY)
    deliver(c, BODY, sender="")
    msgs = recorder.wait_for_transactions(2)
    ids = [x["id"] for x in p.wait_summaries(2)]
    assert len(ids) == 2 and ids[0] != ids[1]
    assert msgs[0].data == f"X-Tx: {ids[0]}\r\nX-Sender: a@sender.test\r\n".encode() + BODY
    assert msgs[1].data == f"X-Tx: {ids[1]}\r\nX-Sender: <>\r\n".encode() + BODY


def test_trail_shows_earlier_verdicts(recorder, proxy, client, tmp_path):
    senders = tmp_path / "senders"
    senders.write_text("friend@sender.test accept\n")
    p = headers_proxy(
        proxy,
        add=["X-Trail: %{trail}"],
        extra_sections=[("plugin access", {"sender_list": str(senders)})],
    )
    c = client(p)
    c.greet()
    deliver(c, BODY, sender="friend@sender.test")
    t = recorder.wait_for_transactions(1)[0]
    m = re.match(rb"X-Trail: ([^\r\n]*)\r\n", t.data)
    assert m, t.data[:200]
    assert b"access:accept@mail" in m.group(1)
    assert t.data[m.end():] == BODY


SPAMMY = (
    b"Received: from client.example by mx.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"X-Spam-Status: Yes, score=12.3 required=5.0\r\n"
    b"\ttests=BAYES_99,URIBL_BLACK,\r\n"
    b" RAZOR2_CHECK\r\n"
    b"Subject: buy now\r\n"
    b"x-spam-status: No (forged by the sender)\r\n"
    b"X-SPAM-STATUS:Yes\r\n"
    b"X-Spam-Statusbar: kept: a longer name\r\n"
    b"X-Spam-Level: ***\r\n"
    b"  folded level\r\n"
    b"From: <a@sender.test>\r\n"
    b"\r\n"
    b"X-Spam-Status: this is the body and stays\r\n"
    b".leading dot\r\n"
    b"end\r\n"
)

CLEAN = (
    b"Received: from client.example by mx.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Subject: buy now\r\n"
    b"X-Spam-Statusbar: kept: a longer name\r\n"
    b"X-Spam-Level: ***\r\n"
    b"  folded level\r\n"
    b"From: <a@sender.test>\r\n"
    b"\r\n"
    b"X-Spam-Status: this is the body and stays\r\n"
    b".leading dot\r\n"
    b"end\r\n"
)


def test_remove_case_insensitive_with_continuations(recorder, proxy, client):
    p = headers_proxy(proxy, remove=["x-SPAM-status"])
    c = client(p)
    c.greet()
    deliver(c, SPAMMY)
    t = recorder.wait_for_transactions(1)[0]
    assert t.data == stuff(CLEAN)


def test_remove_then_add_same_name_and_order(recorder, proxy, client):
    p = headers_proxy(
        proxy,
        remove=["X-Spam-Status", "X-Spam-Level"],
        add=["X-Spam-Status: checked by %{hostname}", "X-Second: 2", "X-Third: 3"],
    )
    c = client(p)
    c.greet()
    deliver(c, SPAMMY)
    t = recorder.wait_for_transactions(1)[0]
    clean = CLEAN.replace(b"X-Spam-Level: ***\r\n  folded level\r\n", b"")
    want = b"X-Spam-Status: checked by proxy.test\r\nX-Second: 2\r\nX-Third: 3\r\n" + clean
    assert t.data == stuff(want)


@pytest.mark.parametrize("remove", [True, False], ids=["remove", "add-only"])
@pytest.mark.parametrize("spool_memory", ["4k", "1M"], ids=["file", "memory"])
def test_big_message_byte_exact(recorder, proxy, client, spool_memory, remove):
    p = headers_proxy(proxy, add=["X-Big: %{tx_id}"], remove=["X-Spam-Status"] if remove else (),
                      spool_memory=spool_memory)
    body = make_message(lines=2000, width=120, eight_bit=True, seed=3)
    hdr, rest = body.split(b"\r\n\r\n", 1)
    spam = b"\r\nX-Spam-Status: Yes,\r\n\tscore=99" if remove else b""
    msg = hdr + spam + b"\r\n\r\n" + rest
    assert len(msg) > 100_000
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@sender.test> BODY=8BITMIME").expect(250)
    c.cmd("RCPT TO:<b@rcpt.test>").expect(250)
    c.message(stuff(msg) + b".\r\n").expect(250)
    t = recorder.wait_for_transactions(1, timeout=15)[0]
    tx_id = p.wait_summaries(1)[-1]["id"]
    want = f"X-Big: {tx_id}\r\n".encode() + stuff(hdr + b"\r\n\r\n" + rest)
    assert len(t.data) == len(want)
    assert t.data == want


def test_added_once_per_message(recorder, proxy, client):
    """Each message gets the headers once; an abandoned transaction in
    between leaves no trace."""
    p = headers_proxy(proxy, add=["X-Once: yes"])
    c = client(p)
    c.greet()
    deliver(c, BODY)
    c.cmd("MAIL FROM:<a@sender.test>").expect(250)
    c.cmd("RSET").expect(250)
    deliver(c, BODY)
    msgs = recorder.wait_for_transactions(2)
    assert [m.data for m in msgs] == [b"X-Once: yes\r\n" + BODY] * 2


# ---- configuration errors ---------------------------------------------------------

BAD_KEYS = [
    ({"add": "X-Foo: %{nope}"}, "add", "unknown field %{nope}"),
    ({"add": "X-Foo: 50% off"}, "add", 'stray "%"'),
    ({"add": "X-Foo: %{tx_id"}, "add", "unterminated"),
    ({"add": "X Foo: bar"}, "add", "blank in a header name"),
    ({"add": "X-Foo bar"}, "add", "Name: value"),
    ({"add": ": bar"}, "add", "empty header name"),
    ({"remove": "X-Spam-Status:"}, "remove", '":" in a header name'),
    ({"remove": "X Spam"}, "remove", "blank in a header name"),
    ({"add": "X-Ok: fine", "remove_header": "X-Spam"}, "remove_header", "unknown key"),
]


def _check(tmp_path, recorder, keys):
    p = Proxy(tmp_path / "check", recorder.address, sections=[("plugin headers", keys)])
    p.write_config()
    rc, out = run_check(p.config_path)
    return p, rc, out


def _line_of(path, prefix):
    for i, ln in enumerate(open(path).read().splitlines(), 1):
        if ln.startswith(prefix):
            return i
    raise AssertionError(f"{prefix!r} not in {path}")


@pytest.mark.parametrize("keys,bad_key,message", BAD_KEYS)
def test_bad_keys(recorder, tmp_path, keys, bad_key, message):
    p, rc, out = _check(tmp_path, recorder, keys)
    assert rc != 0, out
    line = _line_of(p.config_path, f"{bad_key} =")
    assert re.search(rf"^{re.escape(p.config_path)}:{line}: ", out, re.M), out
    assert message in out, out
    q = Proxy(tmp_path / "start", recorder.address, sections=[("plugin headers", keys)])
    with pytest.raises(ProxyError):
        q.start()
        q.stop()


def test_bad_second_add_names_its_line(recorder, tmp_path):
    p, rc, out = _check(tmp_path, recorder,
                        {"add": ["X-One: %{tx_id}", "X-Two: %{helo}", "X-Three: %{bogus}"]})
    assert rc != 0
    line = _line_of(p.config_path, "add = X-Three")
    assert re.search(rf"^{re.escape(p.config_path)}:{line}: .*%{{bogus}}", out, re.M), out


def test_empty_section(recorder, tmp_path):
    p, rc, out = _check(tmp_path, recorder, {})
    assert rc != 0
    line = _line_of(p.config_path, "[plugin headers]")
    assert re.search(rf"^{re.escape(p.config_path)}:{line}: .*nothing to do", out, re.M), out


def test_good_config_passes_check(recorder, tmp_path):
    keys = {
        "add": [
            "X-All: %{tx_id} %{session_id} %{client_ip} %{client_port} %{helo} %{sender} "
            "%{hostname} %{trail} %%",
            "X-Empty:",
        ],
        "remove": ["X-Spam-Status", "x-spam-flag"],
    }
    _, rc, out = _check(tmp_path, recorder, keys)
    assert rc == 0, out
