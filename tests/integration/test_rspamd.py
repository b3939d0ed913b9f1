"""The rspamd plugin (plugins/rspamd.c) through real SMTP to the recording
backend.

The real rspamd from Debian (kit.rspamd.Rspamd, started once for the
module, offline) decides GTUBE and ham, and is stopped under a running
proxy. A fake /checkv2 server (kit.rspamd.FakeRspamd) gives what the real
one cannot be made to give on demand: each action, header changes, and
hostile replies (garbage, huge, slow, HTTP errors); it also records the
request headers the plugin sent.
"""

import base64
import re
import time

import pytest

from kit.proxy import run_check
from kit.rspamd import GTUBE, FakeRspamd, Rspamd

BOUND = 10.0
HAM = (b"From: Alice <alice@sender.test>\r\nTo: Bob <bob@rcpt.test>\r\n"
       b"Subject: lunch\r\nMessage-ID: <1@sender.test>\r\n"
       b"Date: Mon, 1 Jan 2024 12:00:00 +0000\r\n\r\n"
       b"Shall we have lunch on Tuesday?\r\n.\r\n")
SPAM = ("From: <spammer@sender.test>\r\nTo: <bob@rcpt.test>\r\nSubject: offer\r\n\r\n"
        + GTUBE + "\r\n.\r\n").encode()


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory):
    r = Rspamd(tmp_path_factory.mktemp("rspamd")).start()
    yield r
    r.close()


@pytest.fixture
def fake():
    f = FakeRspamd().start()
    yield f
    f.stop()


def section(url, **keys):
    d = {"url": url, "timeout": "3s"}
    d.update(keys)
    return ("plugin rspamd", {k: v for k, v in d.items() if v is not None})


def send(client, p, body, sender="alice@sender.test", rcpts=("bob@rcpt.test",), helo="client.test"):
    c = client(p)
    c.greet(helo)
    c.envelope(sender, *rcpts)
    r = c.message(body)
    c.cmd("QUIT")
    return r


def delivered(recorder, n=1):
    recorder.wait_for(lambda: len(recorder.delivered()) >= n, BOUND)
    got = recorder.delivered()
    assert len(got) >= n, got
    return bytes(got[n - 1].data)


def header_fields(data):
    """[(name, value)] of a message's header section, unfolded."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    head = re.sub(r"\r\n[ \t]", " ", head)
    return [tuple(x.strip() for x in ln.split(":", 1)) for ln in head.split("\r\n")]


def values(data, name):
    return [v for n, v in header_fields(data) if n.lower() == name.lower()]


def summary(p):
    s = p.wait_summaries(1, BOUND)
    assert s, p.log()
    return s[-1]


def symbols(s):
    """symbols=A(1),B(2.5) as a dict."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"(\w+)\(([-0-9.e]+)\)", s.get("symbols", ""))}


# ---- the real rspamd ----


def test_gtube_rejected_with_the_configured_text(proxy, client, recorder, rspamd):
    p = proxy(sections=[section(rspamd.url, reject_reply="554 5.7.1 Spam not welcome here")])
    r = send(client, p, SPAM)
    assert (r.code, r.enhanced) == (554, "5.7.1") and "Spam not welcome here" in r.text, r
    assert recorder.delivered() == []
    s = summary(p)
    assert float(s["score"]) >= 15, s
    assert symbols(s).get("RSPAMD", 0) >= 15, s
    assert p.wait_log(r'rspamd: action="reject" score=15\.00/15\.00 .*time=\d+ms: rejected', BOUND)


def test_ham_passes_with_the_result_headers(proxy, client, recorder, rspamd):
    p = proxy(sections=[section(rspamd.url)])
    r = send(client, p, HAM)
    assert r.code == 250, r
    data = delivered(recorder)
    assert values(data, "X-Rspamd-Action") == ["no action"]
    assert re.fullmatch(r"-?\d+\.\d\d / 15\.00", values(data, "X-Rspamd-Score")[0])
    assert values(data, "X-Spamd-Result")[0].startswith("default: False [")
    assert values(data, "X-Spam") == [] and values(data, "X-Rspamd-Unscanned") == []
    assert data.endswith(b"Shall we have lunch on Tuesday?\r\n")
    assert p.wait_log(r'rspamd: action="no action" score=\S+ symbols=\d+ size=\d+ time=\d+ms: passed', BOUND)


def test_forged_spam_headers_are_stripped(proxy, client, recorder, rspamd):
    forged = (b"X-Spam: No\r\nX-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100\r\n"
              b"X-Rspamd-Action: no action\r\nX-Spamd-Result: default: False [-100 / 15]\r\n"
              b"X-Spamd-Bar: /\r\nX-Other: kept\r\n")
    p = proxy(sections=[section(rspamd.url)])
    assert send(client, p, forged + HAM).code == 250
    data = delivered(recorder)
    names = [n.lower() for n, _ in header_fields(data)]
    assert "x-spam" not in names and "x-spam-flag" not in names and "x-spam-status" not in names
    assert "x-spamd-bar" not in names
    assert values(data, "X-Rspamd-Action") == ["no action"]  # ours, once
    assert values(data, "X-Spamd-Result")[0] != "default: False [-100 / 15]"
    assert values(data, "X-Other") == ["kept"]


def test_rspamd_stopped_mid_test_passes_unscanned(proxy, client, recorder, rspamd):
    p = proxy(sections=[section(rspamd.url)])
    assert send(client, p, HAM).code == 250
    assert values(delivered(recorder, 1), "X-Rspamd-Action") == ["no action"]
    rspamd.stop()
    try:
        assert send(client, p, HAM).code == 250
        data = delivered(recorder, 2)
        assert values(data, "X-Rspamd-Unscanned") == ["scan failed"]
        assert values(data, "X-Rspamd-Action") == []
        assert p.wait_log(r"rspamd: scan failed after \d+ms: connection failed: passed unscanned", BOUND)
        # only one warning a minute; the next failure is counted, not logged
        assert send(client, p, HAM).code == 250
        delivered(recorder, 3)
        assert len(p.wait_log(r"rspamd: scan failed", 0.5, count=2)) == 1
    finally:
        rspamd.start()
    assert send(client, p, HAM).code == 250
    assert values(delivered(recorder, 4), "X-Rspamd-Action") == ["no action"]


def test_rspamd_down_with_on_error_tempfail(proxy, client, recorder, rspamd):
    from kit.proxy import closed_port

    p = proxy(sections=[section("http://127.0.0.1:%d" % closed_port(), scan_failure="on_error",
                                on_error="tempfail")])
    r = send(client, p, HAM)
    assert r.code == 451, r
    assert recorder.delivered() == []


# ---- actions, through the fake ----

ACTIONS = [
    ("reject", 550, "5.7.1", "Spam message rejected"),
    ("soft reject", 451, "4.7.1", "Try again later"),
    ("greylist", 451, "4.7.1", "Greylisted, please try again later"),
]


@pytest.mark.parametrize("action,code,enhanced,text", ACTIONS)
def test_refusing_actions(proxy, client, recorder, fake, action, code, enhanced, text):
    fake.answer({"action": action, "score": 9.5, "required_score": 15, "symbols": {}})
    p = proxy(sections=[section(fake.url)])
    r = send(client, p, HAM)
    assert (r.code, r.enhanced) == (code, enhanced) and text in r.text, r
    assert recorder.delivered() == []


def test_configured_reply_texts(proxy, client, recorder, fake):
    p = proxy(sections=[section(fake.url, soft_reject_reply="452 4.3.1 Scanner busy",
                                greylist_reply="Come back later")])
    fake.answer({"action": "soft reject", "score": 1})
    r = send(client, p, HAM)
    assert (r.code, r.enhanced) == (452, "4.3.1") and r.text.strip().endswith("Scanner busy"), r
    fake.answer({"action": "greylist", "score": 1})
    r = send(client, p, HAM)
    assert r.code == 451 and "Come back later" in r.text, r


def test_add_header_marks_the_message(proxy, client, recorder, fake):
    fake.answer({"action": "add header", "score": 7.25, "required_score": 15,
                 "symbols": {"BAYES_SPAM": {"name": "BAYES_SPAM", "score": 5.0},
                             "R_BAD": {"name": "R_BAD", "score": 2.25}}})
    p = proxy(sections=[section(fake.url)])
    assert send(client, p, HAM).code == 250
    data = delivered(recorder)
    assert values(data, "X-Spam") == ["Yes"]
    assert values(data, "X-Rspamd-Action") == ["add header"]
    assert values(data, "X-Rspamd-Score") == ["7.25 / 15.00"]
    assert values(data, "X-Spamd-Result") == ["default: True [7.25 / 15.00]; BAYES_SPAM(5.00); R_BAD(2.25)"]


def test_headers_spam_and_never(proxy, client, recorder, fake):
    fake.answer({"action": "no action", "score": 1})
    p = proxy(sections=[section(fake.url, headers="spam")])
    assert send(client, p, HAM).code == 250
    assert values(delivered(recorder, 1), "X-Rspamd-Action") == []
    fake.answer({"action": "add header", "score": 8})
    assert send(client, p, HAM).code == 250
    assert values(delivered(recorder, 2), "X-Rspamd-Action") == ["add header"]
    q = proxy(sections=[section(fake.url, headers="never")])
    assert send(client, q, HAM).code == 250
    data = delivered(recorder, 3)
    assert values(data, "X-Spam") == ["Yes"] and values(data, "X-Rspamd-Action") == []


def test_rewrite_subject(proxy, client, recorder, fake):
    fake.answer({"action": "rewrite subject", "score": 9, "subject": "[SPAM] lunch"})
    p = proxy(sections=[section(fake.url)])
    assert send(client, p, HAM).code == 250
    data = delivered(recorder, 1)
    assert values(data, "Subject") == ["[SPAM] lunch"] and values(data, "X-Spam") == ["Yes"]
    # without a subject in the reply: our pattern
    fake.answer({"action": "rewrite subject", "score": 9})
    q = proxy(sections=[section(fake.url, subject="{spam?} %s !")])
    assert send(client, q, HAM).code == 250
    assert values(delivered(recorder, 2), "Subject") == ["{spam?} lunch !"]
    # the default pattern, and a message without a Subject gets one
    assert send(client, p, HAM.replace(b"Subject: lunch\r\n", b"")).code == 250
    assert values(delivered(recorder, 3), "Subject") == ["*** SPAM ***"]


def test_discard_drops_the_message(proxy, client, recorder, fake):
    fake.answer({"action": "discard", "score": 30})
    p = proxy(sections=[section(fake.url)])
    assert send(client, p, HAM).code == 250
    s = summary(p)
    assert recorder.delivered() == [], s


def test_milter_header_changes_applied(proxy, client, recorder, fake):
    fake.answer({"action": "no action", "score": 0.5, "milter": {
        "add_headers": {
            "X-First": {"value": "top", "order": 0},
            "X-Plain": "plain value",
            "X-Multi": [{"value": "one", "order": -1}, {"value": "two"}],
            "X-Folded": {"value": "a long\r\n\tfolded value", "order": -1},
            "Bad Name": "refused",
        },
        "remove_headers": {"X-Remove-All": 0, "X-Second": 2, "X-Last": -1},
    }})
    body = (b"X-Remove-All: 1\r\nX-Remove-All: 2\r\nX-Second: a\r\nX-Second: b\r\n"
            b"X-Last: a\r\nX-Last: b\r\n" + HAM)
    p = proxy(sections=[section(fake.url, headers="never")])
    assert send(client, p, body).code == 250
    data = delivered(recorder)
    fields = header_fields(data)
    names = [n for n, _ in fields]
    assert values(data, "X-Remove-All") == []
    assert values(data, "X-Second") == ["a"]
    assert values(data, "X-Last") == ["a"]
    assert values(data, "X-Plain") == ["plain value"]
    assert values(data, "X-Multi") == ["one", "two"]
    assert values(data, "X-Folded") == ["a long folded value"]
    assert "Bad Name" not in names
    # order 0: before every received field; the others at the end
    assert names.index("X-First") < names.index("X-Second") < names.index("X-Plain")


def test_milter_headers_off(proxy, client, recorder, fake):
    fake.answer({"action": "no action", "score": 0, "milter": {"add_headers": {"X-Plain": "v"}}})
    p = proxy(sections=[section(fake.url, milter_headers="no")])
    assert send(client, p, HAM).code == 250
    assert values(delivered(recorder), "X-Plain") == []


# ---- what rspamd is told ----


def test_request_headers(proxy, client, recorder, fake):
    recorder.configure(extra_caps=["AUTH"])
    recorder.reply("AUTH", "235 2.7.0 Authentication successful")
    p = proxy(auth_plaintext="yes", sections=[section(fake.url, password="s3cret")])
    c = client(p)
    c.greet("helo.client.test")
    cred = base64.b64encode(b"\0alice\0pw").decode()
    c.cmd("AUTH PLAIN " + cred).expect(235)
    c.envelope("alice@sender.test", "bob@rcpt.test", "carol@rcpt.test", "dave@rcpt.test")
    assert c.message(HAM).code == 250
    c.cmd("QUIT")
    hdrs, body, path = fake.requests[-1]
    got = {}
    for k, v in hdrs:
        got.setdefault(k.lower(), []).append(v)
    assert path == "/checkv2"
    assert got["ip"] == ["127.0.0.1"]
    assert got["helo"] == ["helo.client.test"]
    assert got["from"] == ["alice@sender.test"]
    assert got["rcpt"] == ["bob@rcpt.test", "carol@rcpt.test", "dave@rcpt.test"]
    assert got["user"] == ["alice"]
    assert got["hostname"] == ["unknown"]
    assert got["password"] == ["s3cret"]
    s = summary(p)
    assert got["queue-id"] == [s["id"]] or got["queue-id"][0].startswith(s["id"].split(".")[0])
    # the message as received, dot-stuffing undone
    assert body == HAM[: -len(b".\r\n")]


def test_null_sender_and_no_user(proxy, client, recorder, fake):
    p = proxy(sections=[section(fake.url)])
    assert send(client, p, HAM, sender="").code == 250
    got = {k.lower(): v for k, v in fake.headers()}
    assert got["from"] == "<>" and "user" not in got and "password" not in got


def test_dot_stuffed_body_sent_unstuffed(proxy, client, recorder, fake):
    p = proxy(sections=[section(fake.url)])
    assert send(client, p, HAM[:-3] + b"..leading dot\r\n.\r\n").code == 250
    assert fake.requests[-1][1].endswith(b"\r\n.leading dot\r\n")


def test_message_sent_as_received(proxy, client, recorder, fake):
    """Folded fields stay folded, odd spacing stays: what rspamd checks
    (DKIM over the raw header section) is what was signed."""
    raw = (b"Subject:  two  spaces\r\nDKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc;\r\n"
           b"From: <a@x.test>\r\n\r\nbody\r\n")
    p = proxy(sections=[section(fake.url)])
    assert send(client, p, raw + b".\r\n").code == 250
    assert fake.requests[-1][1] == raw


# ---- scores ----


def test_scores_per_symbol_on_the_summary(proxy, client, recorder, fake):
    fake.answer({"action": "no action", "score": 4.0, "required_score": 15, "symbols": {
        "MISSING_DATE": {"score": 1.0},
        "weird-name.x": {"score": 2.5},
        "ZERO": {"score": 0},
        "NEG": {"score": -0.5},
    }})
    p = proxy(sections=[section(fake.url)])
    assert send(client, p, HAM).code == 250
    s = summary(p)
    sy = symbols(s)
    assert sy == {"WEIRD_NAME_X": 2.5, "MISSING_DATE": 1.0, "NEG": -0.5, "RSPAMD": 1.0}, s
    assert float(s["score"]) == 4.0


def test_scores_total_with_prefix(proxy, client, recorder, fake):
    fake.answer({"action": "no action", "score": 4.0, "symbols": {"A": {"score": 4.0}}})
    p = proxy(sections=[section(fake.url, scores="total", symbol_prefix="RS_")])
    assert send(client, p, HAM).code == 250
    s = summary(p)
    assert symbols(s) == {"RS_RSPAMD": 4.0}, s


def test_at_most_the_hosts_symbols_highest_kept(proxy, client, recorder, fake):
    syms = {"S%03d" % i: {"score": i / 100} for i in range(1, 301)}
    total = sum(v["score"] for v in syms.values())
    fake.answer({"action": "no action", "score": total, "symbols": syms})
    p = proxy(sections=[section(fake.url, headers="never")])
    assert send(client, p, HAM).code == 250
    s = summary(p)
    # highest first: the summary line shows the top of the list, then cuts
    assert s["symbols"].startswith("S300(3),S299(2.99),S298(2.98)"), s
    assert s["symbols"].endswith("..."), s
    assert "S001(" not in s["symbols"], s
    # 255 symbols and RSPAMD for the 45 lowest left out: the total is rspamd's
    assert abs(float(s["score"]) - total) < 0.01, s


# ---- failures ----

HOSTILE = [
    ("garbage", dict(raw=b"this is not json")),
    ("trailing", dict(raw=b'{"action":"no action","score":1} x')),
    ("deep", dict(raw=b"[" * 5000 + b"]" * 5000)),
    ("huge", dict(raw=b'{"action":"no action","score":1,"pad":"' + b"x" * (2 * 1024 * 1024) + b'"}')),
    ("status500", dict(raw=b'{"error":"oops"}', status=500)),
    ("unknown_action", dict(raw=b'{"action":"explode","score":1}')),
    ("no_score", dict(raw=b'{"action":"reject"}')),
    ("not_object", dict(raw=b'["reject"]')),
    ("bad_escape", dict(raw=b'{"action":"no \\x action","score":1}')),
    ("lone_surrogate", dict(raw=b'{"action":"\\ud800","score":1}')),
    ("nul", dict(raw=b'{"action":"reject\\u0000","score":1}')),
    ("empty", dict(raw=b"")),
]


@pytest.mark.parametrize("name,reply", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_replies_pass_unscanned(proxy, client, recorder, fake, name, reply):
    fake.answer(**reply)
    p = proxy(sections=[section(fake.url)])
    r = send(client, p, HAM)
    assert r.code == 250, r
    data = delivered(recorder)
    assert values(data, "X-Rspamd-Unscanned") == ["scan failed"]
    assert values(data, "X-Rspamd-Action") == []
    assert p.wait_log(r"rspamd: scan failed after \d+ms: .*: passed unscanned", BOUND)


def test_slow_rspamd_times_out(proxy, client, recorder, fake):
    fake.answer({"action": "reject", "score": 20}, delay=3.0)
    p = proxy(sections=[section(fake.url, timeout="500ms")])
    r = send(client, p, HAM)
    assert r.code == 250, r
    assert values(delivered(recorder), "X-Rspamd-Unscanned") == ["scan failed"]
    assert p.wait_log(r"rspamd: scan failed after \d+ms: timeout after 500ms: passed unscanned", BOUND)


def test_failure_with_on_error(proxy, client, recorder, fake):
    fake.answer(raw=b"garbage")
    p = proxy(sections=[section(fake.url, scan_failure="on_error", on_error="tempfail")])
    r = send(client, p, HAM)
    assert r.code == 451, r
    assert recorder.delivered() == []
    assert p.wait_log(r"rspamd: scan failed .*: on_error decides", BOUND)
    q = proxy(sections=[section(fake.url, scan_failure="on_error")])  # the plugin's default: accept
    r = send(client, q, HAM)
    assert r.code == 250, r
    assert values(delivered(recorder), "X-Rspamd-Unscanned") == []


def test_client_gone_mid_scan(proxy, client, recorder, fake):
    """The client leaves while rspamd thinks: the scan's answer lands on a
    finished session without harm (ASan checks when the proxy stops)."""
    fake.answer({"action": "no action", "score": 0}, delay=1.0)
    p = proxy(sections=[section(fake.url)])
    c = client(p)
    c.greet()
    c.envelope("alice@sender.test", "bob@rcpt.test")
    c.cmd("DATA").expect(354)
    c.send(HAM)
    deadline = time.monotonic() + BOUND
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.requests
    c.close()
    assert p.wait_log(r"disconnect from client", BOUND)
    fake.answer({"action": "no action", "score": 0})
    assert send(client, p, HAM).code == 250


def test_filter_timeout_cancels_the_request(proxy, client, recorder, fake):
    """The host gives up first (filter_timeout below timeout): the plugin's
    cancel cancels the HTTP request and frees its connection; on_error
    (accept, the plugin's default) lets the message through."""
    fake.answer({"action": "reject", "score": 20}, delay=2.0)
    p = proxy(sections=[section(fake.url, timeout="10s", filter_timeout="300ms")])
    r = send(client, p, HAM)
    assert r.code == 250, r
    assert p.wait_log(r"filter rspamd failed at data: .*on_error=accept", BOUND)
    assert not p.wait_log(r'rspamd: action="reject"', 2.5)
    delivered(recorder)


def test_oversized_message_skipped(proxy, client, recorder, fake):
    p = proxy(sections=[section(fake.url, max_scan_size="2k")])
    big = HAM[:-3] + (b"x" * 70 + b"\r\n") * 60 + b".\r\n"
    assert send(client, p, big).code == 250
    data = delivered(recorder)
    assert values(data, "X-Rspamd-Unscanned")[0].startswith("message too large (")
    assert fake.requests == []
    assert p.wait_log(r"rspamd: not scanned: message too large \(\d+ > max_scan_size 2048\): passed", BOUND)
    # a small one is scanned
    assert send(client, p, HAM).code == 250
    assert len(fake.requests) == 1


# ---- configuration ----

BAD_KEYS = [
    ("url", "https://127.0.0.1:11333"),
    ("url", "http://127.0.0.1:99999"),
    ("url", "http://127.0.0.1:11333/other"),
    ("url", "http://host name/"),
    ("timeout", "0"),
    ("max_scan_size", "lots"),
    ("reject_reply", "451 4.7.1 not a reject"),
    ("soft_reject_reply", "550 5.7.1 not a tempfail"),
    ("subject", "no placeholder"),
    ("subject", "%s and %d"),
    ("scores", "some"),
    ("headers", "sometimes"),
    ("scan_failure", "ignore"),
    ("strip_headers", "perhaps"),
    ("symbol_prefix", "lower-case"),
    ("password", "two words"),
]


@pytest.mark.parametrize("key,value", BAD_KEYS)
def test_bad_keys_refused(tmp_path, key, value):
    from kit.proxy import Proxy

    keys = {"url": "http://127.0.0.1:11333", key: value}
    p = Proxy(tmp_path, "127.0.0.1:1", sections=[("plugin rspamd", keys)])
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc != 0 and key in out, out
    assert re.search(r":\d+:", out), out


# ---- with the global thresholds ----


def test_rspamd_scores_cross_the_thresholds(proxy, client, recorder, fake):
    """rspamd says "no action" (its own thresholds are higher), but our
    reject_score and header_score count its symbols too."""
    fake.answer({"action": "no action", "score": 16.0, "required_score": 20,
                 "symbols": {"BAYES_SPAM": {"score": 9.0}, "R_SUSPICIOUS": {"score": 7.0}}})
    p = proxy(reject_score="15", sections=[section(fake.url)])
    r = send(client, p, HAM)
    assert (r.code, r.enhanced) == (550, "5.7.1"), r
    assert recorder.delivered() == []
    fake.answer({"action": "no action", "score": 6.0, "required_score": 20,
                 "symbols": {"BAYES_SPAM": {"score": 6.0}}})
    q = proxy(reject_score="15", header_score="5", sections=[section(fake.url)])
    assert send(client, q, HAM).code == 250
    data = delivered(recorder)
    assert values(data, "X-Spam-Flag") == ["YES"]
    assert values(data, "X-Spam-Symbols")[0].startswith("BAYES_SPAM(6)")
