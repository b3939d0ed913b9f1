"""The spamd plugin (plugins/spamd.c) against the real SpamAssassin spamd
from Debian, and against fake ones that misbehave.

One private spamd (kit.spamd: its own site config, no network rules, TCP
and a UNIX socket) serves the whole module: it takes seconds to start. The
outage test starts its own, to stop it under a running proxy. Fake servers
(kit.spamd.FakeSpamd) stand for a spamd that never answers, answers
garbage or a line without end, and record exactly what the plugin sent.
Every test checks what the recording backend received (the headers),
the reply the client got, the summary line's score, and the plugin's log
lines.
"""

import re
import socket
import threading
import time

import pytest

from kit.proxy import closed_port, run_check
from kit.spamd import GTUBE, FakeSpamd, Spamd, available

pytestmark = pytest.mark.skipif(not available(), reason="spamd is not installed (make deps)")

BOUND = 30.0  # how long we wait for what must happen (a scan takes < 1 s)

GTUBE_MSG = (
    "Subject: Test spam mail (GTUBE)\r\n"
    "Message-ID: <GTUBE1.1010101@example.net>\r\n"
    "From: Sender <sender@example.net>\r\n"
    "To: Recipient <recipient@example.net>\r\n"
    "\r\n"
    "This is the GTUBE.\r\n"
    f"{GTUBE}\r\n"
).encode()

HAM_MSG = (
    "From: Alice <alice@example.com>\r\n"
    "To: Bob <bob@example.org>\r\n"
    "Subject: lunch tomorrow\r\n"
    "Message-ID: <lunch.42@example.com>\r\n"
    "\r\n"
    "Shall we meet at noon at the usual place?\r\n"
).encode()

# A real answer of spamd 4.0, for the fake servers that answer well.
HAM_ANSWER = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 33\r\nSpam: False ; 1.5 / 5.0\r\n\r\n"
    b"MSGID_SHORT,NO_RECEIVED,NO_RELAYS"
)


@pytest.fixture(scope="module")
def spamd():
    # Its own directory under /tmp: pytest's are private to root, and the
    # children run as nobody.
    s = Spamd().start()
    yield s
    s.close()


@pytest.fixture
def fake():
    made = []

    def start(**kw):
        f = FakeSpamd(**kw).start()
        made.append(f)
        return f

    yield start
    for f in made:
        f.stop()


def section(socket_, **keys):
    d = {"socket": socket_}
    d.update(keys)
    return ("plugin spamd", d)


def start(proxy, socket_, **keys):
    return proxy(sections=[section(socket_, **keys)])


def send(client, p, msg, sender="alice@example.com", rcpt="bob@example.org"):
    """One session, one message (msg: bytes with CRLF lines, unstuffed):
    the reply to the end of data."""
    c = client(p)
    c.greet()
    c.envelope(sender, rcpt)
    stuffed = re.sub(rb"(?m)^\.", b"..", msg)
    r = c.message(stuffed + b".\r\n")
    c.cmd("QUIT")
    return r


def delivered(recorder, n=1):
    """The n-th delivered message's bytes (waiting for it)."""
    deadline = time.monotonic() + BOUND
    while len(recorder.delivered()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    got = recorder.delivered()
    assert len(got) >= n, f"{len(got)} messages delivered, want {n}"
    return bytes(got[n - 1].data)


def headers(data):
    """(name, value) pairs of a message's header section (unfolded)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    out = []
    for ln in head.split("\r\n"):
        if ln[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + ln.strip())
        elif ":" in ln:
            k, v = ln.split(":", 1)
            out.append((k, v.strip()))
    return out


def spam_headers(data):
    return [(k, v) for k, v in headers(data) if k.lower().startswith("x-spam-")]


def log_has(p, pattern, count=1, timeout=BOUND):
    found = p.wait_log(pattern, timeout=timeout, count=count)
    assert len(found) >= count, f"{pattern!r} not in the log:\n{p.log()}"
    return found


def summary(p, n=1):
    s = p.wait_summaries(n, timeout=BOUND)
    assert len(s) >= n, p.log()
    return s[n - 1]


def gtube_summary(p, score=None):
    """The summary line of a GTUBE message: one symbol, SPAMD, with
    spamd's total (1000 for GTUBE, plus a few points for what the test
    message lacks)."""
    s = summary(p)
    m = re.fullmatch(r"SPAMD\((10\d\d(?:\.\d+)?)\)", s.get("symbols", ""))
    assert m, s
    assert float(s["score"]) == float(m.group(1))
    if score is not None:
        assert float(m.group(1)) == pytest.approx(score)


# ---- the real spamd ----------------------------------------------------------


def test_gtube_scored_and_marked(proxy, client, recorder, spamd):
    p = start(proxy, f"127.0.0.1:{spamd.port}")
    send(client, p, GTUBE_MSG).expect(250)
    data = delivered(recorder)
    (status,) = spam_headers(data)
    assert status[0] == "X-Spam-Status"
    m = re.fullmatch(r"Yes, score=(10\d\d\.\d) required=5\.0 tests=(\w+,)*GTUBE(,\w+)*", status[1])
    assert m, status
    # The message itself arrives as sent, after our header.
    assert data.endswith(GTUBE_MSG)
    gtube_summary(p, float(m.group(1)))
    log_has(p, r"\[spamd\] spamd: Yes score=10\d\d\.\d required=5\.0 tests=\S*GTUBE\S* \(\d+ octets in \d+ ms\)")


def test_gtube_rejected_by_spamd_threshold(proxy, client, recorder, spamd):
    p = start(proxy, f"127.0.0.1:{spamd.port}", use_spamd_threshold="yes")
    r = send(client, p, GTUBE_MSG)
    r.expect(550, "5.7.1")
    assert "rejected as spam" in r.text
    assert recorder.delivered() == []
    gtube_summary(p)
    # ham passes the same section
    send(client, p, HAM_MSG).expect(250)
    (status,) = spam_headers(delivered(recorder))
    assert status[1].startswith("No, score="), status


@pytest.mark.parametrize(
    "action,code,flag",
    [("tempfail", 451, None), ("header", 250, "YES")],
)
def test_spam_action(proxy, client, recorder, spamd, action, code, flag):
    p = start(proxy, f"127.0.0.1:{spamd.port}", use_spamd_threshold="yes", spam_action=action)
    send(client, p, GTUBE_MSG).expect(code)
    if flag:
        h = dict(spam_headers(delivered(recorder)))
        assert h["X-Spam-Flag"] == flag and h["X-Spam-Status"].startswith("Yes, "), h


def test_reply_text(proxy, client, recorder, spamd):
    p = start(proxy, f"127.0.0.1:{spamd.port}", use_spamd_threshold="yes",
              reply="554 5.7.1 No spam here")
    r = send(client, p, GTUBE_MSG)
    r.expect(554, "5.7.1")
    assert r.text.endswith("No spam here")


def test_ham_marked(proxy, client, recorder, spamd):
    p = start(proxy, f"127.0.0.1:{spamd.port}")
    send(client, p, HAM_MSG).expect(250)
    data = delivered(recorder)
    (status,) = spam_headers(data)
    m = re.fullmatch(r"No, score=(-?[\d.]+) required=5\.0 tests=([\w,]+|none)", status[1])
    assert m, status
    assert data.endswith(HAM_MSG)
    s = summary(p)
    assert "SPAMD(" in s["symbols"], s
    assert float(s["score"]) == pytest.approx(float(m.group(1)))


def test_no_header(proxy, client, recorder, spamd):
    p = start(proxy, f"127.0.0.1:{spamd.port}", add_header="no")
    send(client, p, HAM_MSG).expect(250)
    assert spam_headers(delivered(recorder)) == []
    assert "SPAMD(" in summary(p)["symbols"]


def test_forged_headers_stripped(proxy, client, recorder, spamd):
    forged = (
        b"X-Spam-Status: No, score=-100.0 required=5.0 tests=FORGED\r\n"
        b"X-Spam-Flag: NO\r\n"
        b"x-spam-score: -100\r\n"
        b"X-Spam-Level: \r\n"
        b"X-Spammy-Not-Ours: kept\r\n"
    )
    p = start(proxy, f"127.0.0.1:{spamd.port}")
    send(client, p, forged + GTUBE_MSG).expect(250)
    data = delivered(recorder)
    h = spam_headers(data)
    assert len(h) == 1 and h[0][0] == "X-Spam-Status" and h[0][1].startswith("Yes, "), h
    assert b"FORGED" not in data and b"-100" not in data
    assert ("X-Spammy-Not-Ours", "kept") in headers(data)


def test_forged_headers_stripped_when_unscanned(proxy, client, recorder):
    p = start(proxy, f"127.0.0.1:{closed_port()}")
    send(client, p, b"X-Spam-Flag: NO\r\nX-Spam-Status: No\r\n" + HAM_MSG).expect(250)
    assert spam_headers(delivered(recorder)) == [("X-Spam-Status", "unscanned (spamd unavailable)")]


def test_unix_socket(proxy, client, recorder, spamd):
    p = start(proxy, spamd.socket)
    send(client, p, GTUBE_MSG).expect(250)
    (status,) = spam_headers(delivered(recorder))
    assert status[1].startswith("Yes, score=10"), status
    gtube_summary(p)


def test_oversized_skipped(proxy, client, recorder, spamd, fake):
    f = fake(mode="answer", answer=HAM_ANSWER)
    big = GTUBE_MSG + b"x" * 70 + b"\r\n"
    big = big + (b"filler line of text to make the message large enough\r\n" * 40)
    p = start(proxy, f"127.0.0.1:{f.port}", max_scan_size="1k")
    send(client, p, big).expect(250)
    assert spam_headers(delivered(recorder)) == [("X-Spam-Status", "unscanned (too large)")]
    log_has(p, r"spamd: not scanned: \d+ octets, more than max_scan_size 1024: passed")
    assert f.connections == 0
    assert "symbols" not in summary(p)
    # at the limit, it is scanned
    send(client, p, HAM_MSG).expect(250)
    assert spam_headers(delivered(recorder, 2))[0][1].startswith("No, score=1.5 ")


def test_concurrent_scans(proxy, client, recorder, spamd):
    p = start(proxy, f"127.0.0.1:{spamd.port}", use_spamd_threshold="yes")
    codes = {}

    def one(i):
        codes[i] = send(client, p, GTUBE_MSG if i % 2 else HAM_MSG).code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert codes == {i: 550 if i % 2 else 250 for i in range(6)}
    deadline = time.monotonic() + BOUND
    while len(recorder.delivered()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    for t in recorder.delivered():
        assert spam_headers(bytes(t.data))[0][1].startswith("No, ")


# ---- outages ---------------------------------------------------------------------


def test_spamd_stopped_mid_test(proxy, client, recorder):
    own = Spamd().start()
    try:
        p = start(proxy, f"127.0.0.1:{own.port}")
        send(client, p, GTUBE_MSG).expect(250)
        assert spam_headers(delivered(recorder, 1))[0][1].startswith("Yes, ")
        own.stop()
        for n in (2, 3):
            send(client, p, GTUBE_MSG).expect(250)
            assert spam_headers(delivered(recorder, n)) == [("X-Spam-Status", "unscanned (spamd unavailable)")]
        # logged once; the second failure is counted for the next report
        log_has(p, rf"spamd: scan failed at 127\.0\.0\.1:{own.port}: connect: .*: passed unscanned")
        assert len(re.findall(r"spamd: scan failed", p.log())) == 1, p.log()
        assert "symbols" not in summary(p, 3)
        own.start()
        send(client, p, GTUBE_MSG).expect(250)
        assert spam_headers(delivered(recorder, 4))[0][1].startswith("Yes, ")
    finally:
        own.close()


def test_on_failure_on_error(proxy, client, recorder):
    p = proxy(sections=[section(f"127.0.0.1:{closed_port()}", on_failure="on_error", on_error="tempfail")])
    send(client, p, GTUBE_MSG).expect(451)
    assert recorder.delivered() == []
    log_has(p, r"spamd: scan failed at .*: on_error decides")
    log_has(p, r"filter spamd failed at data: .*connect.*\(on_error=tempfail\)")


def test_on_failure_on_error_default_accepts(proxy, client, recorder):
    # the plugin's own on_error is accept: mail passes, unmarked
    p = start(proxy, f"127.0.0.1:{closed_port()}", on_failure="on_error")
    send(client, p, HAM_MSG).expect(250)
    assert spam_headers(delivered(recorder)) == []


def test_missing_unix_socket(proxy, client, recorder, tmp_path):
    p = start(proxy, str(tmp_path / "nothing.sock"))
    send(client, p, HAM_MSG).expect(250)
    assert spam_headers(delivered(recorder)) == [("X-Spam-Status", "unscanned (spamd unavailable)")]
    log_has(p, r"spamd: scan failed at /\S+nothing\.sock: connect: No such file or directory")


def test_timeout(proxy, client, recorder, fake):
    f = fake(mode="silent")
    p = start(proxy, f"127.0.0.1:{f.port}", timeout="1s")
    t0 = time.monotonic()
    send(client, p, HAM_MSG).expect(250)
    assert time.monotonic() - t0 >= 1.0
    assert spam_headers(delivered(recorder)) == [("X-Spam-Status", "unscanned (spamd unavailable)")]
    log_has(p, r"spamd: scan failed at .*: no answer within timeout \(1000 ms\) \(after \d+ ms\): passed unscanned")
    # it read the whole request before we gave up
    assert len(f.requests) == 1 and f.requests[0].startswith(b"SYMBOLS SPAMC/1.5\r\n")


@pytest.mark.parametrize(
    "answer,why",
    [
        (b"HTTP/1.1 200 OK\r\n\r\n", "does not start with SPAMD/"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 3\r\nSpam: Maybe ; 1 / 5\r\n\r\nA_B", "bad Spam header"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 30\r\nSpam: False ; 1 / 5\r\n\r\nSHORT", "cut short"),
        (b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1 / 5\r\n\r\n", "no Content-length"),
        (b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n", "spamd answered 76 Bad header line"),
        (b"", "closed without an answer"),
        (b"SPAMD/1.1 0 " + b"A" * 100000, "too long"),
        (b"SPAMD/1.1 0 EX_OK\r\n" + b"X-A: b\r\n" * 20000, "too long"),
    ],
    ids=["http", "bad-spam", "cut-short", "no-length", "error-status", "empty", "huge-line", "endless-headers"],
)
def test_garbage(proxy, client, recorder, fake, answer, why):
    f = fake(mode="answer", answer=answer)
    p = start(proxy, f"127.0.0.1:{f.port}")
    send(client, p, GTUBE_MSG).expect(250)
    assert spam_headers(delivered(recorder)) == [("X-Spam-Status", "unscanned (spamd unavailable)")]
    log_has(p, r"spamd: scan failed at .*" + re.escape(why) + r".*passed unscanned")
    assert "symbols" not in summary(p)


def test_failures_logged_once_a_minute(proxy, client, recorder):
    p = start(proxy, f"127.0.0.1:{closed_port()}")
    for n in range(1, 4):
        send(client, p, HAM_MSG).expect(250)
        delivered(recorder, n)
    summary(p, 3)
    warns = [ln for ln in p.log().splitlines() if "spamd: scan failed" in ln and "WARN" in ln.upper()]
    assert len(re.findall(r"spamd: scan failed", "\n".join(warns))) <= 1, p.log()


def test_cancelled_by_filter_timeout(proxy, client, recorder, fake):
    # The host gives up first (filter_timeout below timeout): it cancels
    # the scan, and the section's on_error (accept) lets the mail through.
    f = fake(mode="silent")
    p = start(proxy, f"127.0.0.1:{f.port}", timeout="10s", filter_timeout="1s")
    c = client(p)
    c.greet()
    c.envelope("alice@example.com", "bob@example.org")
    c.cmd("DATA").expect(354)
    c.send(HAM_MSG + b".\r\n")
    c.reply().expect(250)
    log_has(p, r"spamd: scan at 127\.0\.0\.1:\d+ cancelled after \d+ ms")
    log_has(p, r"filter spamd failed at data: no verdict within filter_timeout")
    assert spam_headers(delivered(recorder)) == []


# ---- what goes to spamd ----------------------------------------------------------


def test_request_as_received(proxy, client, recorder, fake):
    f = fake(mode="answer", answer=HAM_ANSWER)
    msg = (
        b"From: Alice <alice@example.com>\r\n"
        b"Subject: a folded\r\n subject\r\n"
        b"X-Spam-Flag: forged\r\n"
        b"\r\n"
        b".a line that starts with a dot\r\n"
        b"..two dots\r\n"
        b"\r\n"
        b"last line\r\n"
    )
    p = start(proxy, f"127.0.0.1:{f.port}", user="mailfilter")
    send(client, p, msg).expect(250)
    assert spam_headers(delivered(recorder)) == [
        ("X-Spam-Status", "No, score=1.5 required=5.0 tests=MSGID_SHORT,NO_RECEIVED,NO_RELAYS")
    ]
    (req,) = f.requests
    head, payload = req.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [
        b"SYMBOLS SPAMC/1.5",
        b"Content-length: %d" % len(payload),
        b"User: mailfilter",
    ]
    # the message exactly as received (folded fields stay folded; no
    # dot-stuffing); spamd sees the forged field too (it is ours to drop
    # from what is delivered, not to hide from the scanner)
    assert payload == msg
    s = summary(p)
    assert s["symbols"] == "SPAMD(1.5)", s


def test_large_message_streamed(proxy, client, recorder, fake):
    f = fake(mode="answer", answer=HAM_ANSWER)
    body = b"".join(b"line %06d of a long message, streamed to spamd in pieces\r\n" % i for i in range(8000))
    msg = b"Subject: big\r\n\r\n" + body
    p = start(proxy, f"127.0.0.1:{f.port}", max_scan_size="1M")
    send(client, p, msg).expect(250)
    (req,) = f.requests
    head, payload = req.split(b"\r\n\r\n", 1)
    assert payload == msg
    assert b"Content-length: %d" % len(msg) in head
    assert delivered(recorder).endswith(body)


# ---- configuration ----------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("socket", "spamd.example:783", "expected an address and port"),
        ("socket", "/" + "x" * 200, "too long"),
        ("timeout", "0", "expected a time from 1ms to 10m"),
        ("timeout", "11m", "expected a time from 1ms to 10m"),
        ("max_scan_size", "0", "expected a size from 1 to 64M"),
        ("max_scan_size", "65M", "expected a size from 1 to 64M"),
        ("add_header", "maybe", "want yes or no"),
        ("use_spamd_threshold", "2", "want yes or no"),
        ("spam_action", "drop", "want reject, tempfail or header"),
        ("on_failure", "tempfail", "want pass or on_error"),
        ("user", "two words", "expected a user name"),
        ("symbol", "spamd", "expected 1 to 64 characters of [A-Z0-9_]"),
        ("colour", "blue", "unknown key"),
    ],
)
def test_bad_config(tmp_path, recorder, key, value, message):
    conf = tmp_path / "p.conf"
    from kit.proxy import plugin_dir

    conf.write_text(
        f"listen = 127.0.0.1:{closed_port()}\nbackend = {recorder.address}\n"
        f"plugin_dir = {plugin_dir()}\nspool_dir = {tmp_path}\n\n"
        f"[plugin spamd]\nsocket = 127.0.0.1:783\n{key} = {value}\n"
    )
    rc, out = run_check(str(conf))
    assert rc != 0, out
    assert message in out, out
    assert ":8:" in out or "line 8" in out, out


def test_good_config(tmp_path, recorder):
    conf = tmp_path / "p.conf"
    from kit.proxy import plugin_dir

    conf.write_text(
        f"listen = 127.0.0.1:{closed_port()}\nbackend = {recorder.address}\n"
        f"plugin_dir = {plugin_dir()}\nspool_dir = {tmp_path}\n\n"
        "[plugin spamd]\nsocket = [::1]:7830\ntimeout = 500ms\nmax_scan_size = 2M\n"
        "add_header = no\nuse_spamd_threshold = yes\nspam_action = tempfail\n"
        "reply = 451 4.7.1 Later\non_failure = on_error\nuser = filter\nsymbol = SA_TOTAL\n"
        "\n[spamd second]\nsocket = 127.0.0.1\n"
    )
    rc, out = run_check(str(conf))
    assert rc == 0, out


# ---- with the global thresholds (reject_score, header_score) ------------------


def test_gtube_rejected_by_reject_score(proxy, client, recorder, spamd):
    p = proxy(sections=[section(f"127.0.0.1:{spamd.port}")], reject_score="10")
    r = send(client, p, GTUBE_MSG)
    r.expect(550, "5.7.1")
    assert "refused as spam" in r.text
    assert recorder.delivered() == []
    s = summary(p)
    assert s["by"] == "score", s
    # ham under the limit passes, marked by the plugin only
    send(client, p, HAM_MSG).expect(250)
    h = spam_headers(delivered(recorder))
    assert [k for k, _ in h] == ["X-Spam-Status"] and h[0][1].startswith("No, "), h


def test_header_score_marks_what_spamd_calls_ham(proxy, client, recorder, fake):
    # spamd says No (4.5 < its 5.0); our header_score of 4 marks it anyway:
    # the global thresholds decide, spamd's only with use_spamd_threshold.
    answer = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 9\r\nSpam: False ; 4.5 / 5.0\r\n\r\nSOME_RULE"
    f = fake(mode="answer", answer=answer)
    p = proxy(sections=[section(f"127.0.0.1:{f.port}")], header_score="4", reject_score="20")
    send(client, p, b"X-Spam-Flag: NO\r\n" + HAM_MSG).expect(250)
    h = dict(spam_headers(delivered(recorder)))
    assert h == {
        "X-Spam-Status": "No, score=4.5 required=5.0 tests=SOME_RULE",
        "X-Spam-Flag": "YES",
        "X-Spam-Score": "4.5",
        "X-Spam-Symbols": "SPAMD(4.5)",
    }, h
