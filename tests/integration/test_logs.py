"""The log (issue 17, item 4): log_format = json, libevent's own lines in
our format, and a resolver that is down.

With log_format = json every line on stderr is one JSON object (time,
level, pid, id, msg); the summary line of a transaction carries each of
its key=value pairs as a member too, with the value the text line shows.
Hostile bytes a client can put in HELO, MAIL FROM and Message-ID leave
every line valid JSON.

libevent's lines (the resolver's "Nameserver ... has failed") come out in
our format, JSON too, never raw ("[msg] ..."). A resolver that does not
answer is skipped for dns_retry_interval: the sessions after the first do
not ask it (the kit's DNS server counts the questions), one line says it
went down and one that it is back.
"""

import json
import re
import signal
import time

import pytest

from kit.dnsserver import ptr_name
from kit.proxy import free_port
from kit.messages import stuff
from test_lua import lua_section
from test_metrics import scrape, val
from test_xclient import xclient_attrs, xclient_lines

BOUND = 10.0
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def json_lines(p):
    """Every line of the proxy's stderr, parsed (a line that is not JSON fails)."""
    out = []
    p.settle()
    with open(p.log_path, "rb") as f:
        for ln in f.read().splitlines():
            try:
                out.append(json.loads(ln))
            except ValueError as e:
                raise AssertionError(f"not JSON ({e}): {ln!r}")
    return out


def wait_json(p, pred, n=1, timeout=BOUND):
    """The JSON lines matching pred, once there are n of them (or the bound passed)."""
    deadline = time.monotonic() + timeout
    while True:
        got = [j for j in json_lines(p) if pred(j)]
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def is_summary(j):
    return "status" in j and "reply" in j


# ---- log_format = json ---------------------------------------------------------------


def test_json_summary_members(proxy, client, recorder, tmp_path):
    """Every pair of the summary line is a member with exactly its value;
    the fixed members are there; the text form is msg."""
    sections = [
        lua_section(tmp_path, 'function on_data(tx, msg) tx:add_score(3, "ONE", "one") end', name="one"),
        lua_section(tmp_path, 'function on_data(tx, msg) tx:add_score(3.5, "TWO", "two") end', name="two"),
    ]
    p = proxy(log_format="json", sections=sections, reject_score="6")
    body = b"Message-ID: <m1@client.test>\r\nSubject: json\r\n\r\nhello\r\n"
    c = client(p)
    port = c.sock.getsockname()[1]
    c.greet("helo.client.test")
    c.envelope("a@client.test", "b@rcpt.test", "c@rcpt.test")
    r = c.message(stuff(body) + b".\r\n")
    assert r.code == 550, r
    c.cmd("QUIT").expect(221)
    (s,) = wait_json(p, is_summary)
    assert RFC3339_MS.match(s["time"]), s
    assert s["level"] == "info" and s["pid"] == p.pid, s
    assert re.match(r"^[0-9A-F]+\.1$", s["id"]), s
    assert isinstance(s["delay"], float) and s["delay"] >= 0, s
    fields = {k: v for k, v in s.items() if k not in ("time", "level", "pid", "id", "msg", "delay")}
    assert fields == {
        "client": f"127.0.0.1:{port}",
        "helo": "helo.client.test",
        "tls": "no",
        "from": "<a@client.test>",
        "nrcpt": 2,
        "to": "<b@rcpt.test>,<c@rcpt.test>",
        "size": len(body),
        "message-id": "<m1@client.test>",
        "score": 6.5,
        "symbols": "ONE(3),TWO(3.5)",
        "status": "rejected",
        "stage": "data",
        "by": "score",
        "reply": r.first,
    }, s
    # msg is the text line, and its pairs say the same.
    assert s["msg"].startswith(f"client=127.0.0.1:{port} helo=helo.client.test tls=no "), s
    text = dict(re.findall(r'(\w[\w-]*)=("[^"]*"|\S*)', s["msg"]))
    assert text.pop("reply") == '"' + r.first + '"'
    assert text.pop("delay") == f"{s['delay']:.3f}"
    assert text == {k: str(v) if not isinstance(v, float) else f"{v:g}" for k, v in fields.items()
                    if k != "reply"}, (text, s)
    # The session's other lines: the id alone, no id= in msg.
    connect = [j for j in json_lines(p) if j["msg"].startswith("connect from")]
    assert connect and connect[0]["id"] == s["id"].split(".")[0], connect
    assert not any(j["msg"].startswith("id=") for j in json_lines(p))
    # Lines about the daemon itself have no id.
    started = [j for j in json_lines(p) if "started" in j["msg"]]
    assert started and "id" not in started[0], started


def test_text_stays_the_default(proxy, client, recorder):
    p = proxy()
    c = client(p)
    c.greet()
    c.envelope("a@client.test", "b@rcpt.test")
    c.message(b"Subject: t\r\n\r\nx\r\n.\r\n").expect(250)
    assert p.wait_summaries(1, timeout=BOUND)
    assert re.search(r"^\S+Z portcullis\[\d+\]: info: id=\S+ client=\S+ helo=", p.log(), re.M), p.log()
    assert "{" not in p.log()


HOSTILE_HELO = b'h"\\.test'  # quote and backslash: EHLO takes them
HOSTILE_FROM = b'"q\\"b\\\\s"@x.test'  # a quoted local part with both escaped
HOSTILE_MID = b"<\x01\x1b\x7f\"\\\xff\xfe\xc3\xa9\xed\xa0\x80\xf4\x90\x80\x80\xc0\xaf@x>"


def test_hostile_bytes_stay_valid_json(proxy, client, recorder):
    """Control bytes, quotes, backslashes and invalid UTF-8 from a peer:
    every line parses, and the summary's members carry the escaped text."""
    p = proxy(log_format="json")
    c = client(p)
    c.banner().expect(220)
    c.cmd(b"EHLO " + HOSTILE_HELO).expect(250)
    # Refused ones are logged too (quoted): still JSON.
    c.cmd(b"MAIL FROM:<a\x01\xff@x.test>")
    c.cmd(b"MAIL FROM:<" + HOSTILE_FROM + b">").expect(250)
    c.cmd(b"RCPT TO:<b@rcpt.test>").expect(250)
    c.cmd(b"DATA").expect(354)
    c.send(b"Message-ID: " + HOSTILE_MID + b"\r\nSubject: x\r\n\r\nhi\r\n.\r\n")
    c.reply().expect(250)
    c.cmd("QUIT").expect(221)
    (s,) = wait_json(p, is_summary)
    assert s["helo"] == 'h\\x22\\x5c.test', s
    assert s["from"] == '<\\x22q\\x5c\\x22b\\x5c\\x5cs\\x22@x.test>', s
    assert s["message-id"] == ("<\\x01\\x1b\\x7f\\x22\\x5c\\xff\\xfe\\xc3\\xa9\\xed\\xa0\\x80"
                               "\\xf4\\x90\\x80\\x80\\xc0\\xaf@x>"), s
    lines = json_lines(p)  # each one parsed
    assert any("a\\x01\\xff@x.test" in j["msg"] for j in lines), lines


def test_json_line_too_long_is_cut_and_says_so(proxy, client, recorder):
    """A Message-ID far longer than a line: the text (msg) says how much was
    cut, the JSON object still parses and counts what it left out."""
    p = proxy(log_format="json", max_data_line_length="200k")
    mid = b"<" + b"\x01" * 60000 + b"@x>"
    c = client(p)
    c.greet()
    c.envelope("a@client.test", "b@rcpt.test")
    c.message(b"Message-ID: " + mid + b"\r\n\r\nx\r\n.\r\n").expect(250)
    c.cmd("QUIT").expect(221)
    # status= and reply= come after message-id: they are in what was cut.
    (s,) = wait_json(p, lambda j: "nrcpt" in j)
    assert re.search(r"\.\.\.\[cut \d+ octets\]$", s["msg"]), s["msg"][-100:]
    assert s["cut"] > 0, {k: v for k, v in s.items() if k != "msg"}
    kept = len(s.get("message-id", ""))
    assert "status" not in s and "reply" not in s, {k: v for k, v in s.items() if k != "msg"}
    # Nothing vanished silently: what the member kept plus what it counts
    # covers it all (4 characters of text a control byte), and the members
    # left out after it.
    assert kept + s["cut"] > 4 * 60000 + len("sent"), (kept, s["cut"])


# ---- libevent's lines and the resolver -------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_libevent_lines_in_our_format(proxy, client, recorder, tmp_path, dns, fmt):
    """evdns gives up on a server that never answers and says so: through
    our log, at our level, in our format; nothing raw on stderr."""
    dns.never("never.test")
    sec = lua_section(tmp_path, """
    function on_mail(tx, sender)
      local a, err = dns.a("x.never.test")
      T("dns", {err = err})
    end
    """)
    p = proxy(log_format=fmt, dns_server=dns.address, dns_timeout="200ms", sections=[sec])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>", timeout=BOUND)
    assert p.wait_log(r"Nameserver 127\.0\.0\.1:\d+ has failed", timeout=BOUND), p.log()
    log = p.log()
    assert not re.search(r"^\[(msg|warn|err|debug)\]", log, re.M), log
    if fmt == "json":
        (j,) = [j for j in json_lines(p) if "has failed" in j["msg"]]
        assert re.match(rf"^libevent: Nameserver 127\.0\.0\.1:{dns.port} has failed: ", j["msg"]), j
        assert j["level"] == "info" and "id" not in j, j
    else:
        assert re.search(rf"^\S+Z portcullis\[\d+\]: info: libevent: Nameserver 127\.0\.0\.1:{dns.port} has failed",
                         log, re.M), log


def rdns_session(p, client, source, body=b"Subject: r\r\n\r\nx\r\n.\r\n"):
    """One message from source; the session id."""
    c = client(p, source=(source, 0))
    c.greet("client.example")
    c.envelope("a@client.test", "b@rcpt.test")
    c.message(body).expect(250)
    c.cmd("QUIT").expect(221)


def names_sent(recorder):
    return [xclient_attrs([ln])["NAME"] for ln in xclient_lines(recorder) if "NAME=" in ln]


def test_resolver_down_is_skipped(proxy, client, recorder, dns):
    """The first session waits dns_timeout and finds the resolver down; the
    next ones do not ask it at all, and get [TEMPUNAVAIL] at once."""
    dns.never("in-addr.arpa")
    recorder.configure(extra_caps=["XCLIENT"])
    mport = free_port()
    p = proxy(client_rdns="yes", dns_server=dns.address, dns_timeout="300ms",
              dns_retry_interval="1h", log_format="json", metrics_listen=f"127.0.0.1:{mport}")
    assert val(scrape(mport), "portcullis_dns_failures_total") == 0
    rdns_session(p, client, "127.0.0.1")
    assert dns.questions(name=ptr_name("127.0.0.1")), dns.questions()
    for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        rdns_session(p, client, ip)
    assert names_sent(recorder) == ["[TEMPUNAVAIL]"] * 4
    for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        assert dns.questions(name=ptr_name(ip)) == [], dns.questions()
    # The sessions after the first were skipped while the resolver was
    # being checked (127.0.0.1's PTR, under the same dead tree), then down.
    assert p.wait_log(r'"msg":"resolver down \(', timeout=BOUND), p.log()
    lines = json_lines(p)
    down = [j for j in lines if j["msg"].startswith("resolver down")]
    assert len(down) == 1 and down[0]["level"] == "warning", down
    assert "no answer within dns_timeout" in down[0]["msg"], down
    skipped = [j for j in lines if "name=unknown (resolver down: not asked)" in j["msg"]]
    assert len(skipped) == 3 and all("id" in j for j in skipped), skipped
    assert not any("resolver is back" in j["msg"] for j in lines)
    # One lookup failed for the resolver's sake; the skipped ones are not failures.
    assert val(scrape(mport), "portcullis_dns_failures_total") == 1


@pytest.mark.parametrize("answer", ["nxdomain", "servfail"])
def test_dns_failures_counted(proxy, client, recorder, dns, answer):
    """M_DNS_FAILED counts SERVFAIL, not NXDOMAIN (an answer: no name)."""
    if answer == "servfail":
        dns.servfail("in-addr.arpa")
    recorder.configure(extra_caps=["XCLIENT"])
    mport = free_port()
    p = proxy(client_rdns="yes", dns_server=dns.address, metrics_listen=f"127.0.0.1:{mport}")
    rdns_session(p, client, "127.0.0.1")
    assert names_sent(recorder) == ["[TEMPUNAVAIL]" if answer == "servfail" else "[UNAVAILABLE]"]
    assert val(scrape(mport), "portcullis_dns_failures_total") == (1 if answer == "servfail" else 0)
    # (evdns reports a SERVFAIL it gave up retrying as "request timed out".)
    # The check of 127.0.0.1's PTR gets the same SERVFAIL: the resolver is down.
    if answer == "servfail":
        assert p.wait_log(r"warning: resolver down \(.*; a check of 127\.0\.0\.1's PTR: ", timeout=BOUND), p.log()
    else:
        assert "resolver down" not in p.log() and "check of" not in p.log(), p.log()


def test_a_clients_broken_zone_does_not_switch_lookups_off(proxy, client, recorder, dns):
    """A client controls its own reverse zone, and can make it time out: the
    resolver is checked (127.0.0.1's PTR), answers, and the next client is
    looked up as usual. Otherwise one client every dns_retry_interval would
    take every other client's name away."""
    dns.never(ptr_name("127.0.0.2"))
    dns.ptr("127.0.0.3", "good.rdns.test").a("good.rdns.test", "127.0.0.3")
    recorder.configure(extra_caps=["XCLIENT"])
    mport = free_port()
    p = proxy(client_rdns="yes", dns_server=dns.address, dns_timeout="300ms",
              dns_retry_interval="1h", metrics_listen=f"127.0.0.1:{mport}")
    rdns_session(p, client, "127.0.0.2")
    assert p.wait_log(r"a client name lookup failed \(no answer within dns_timeout\) but the resolver "
                      r"answers: the client's zone is at fault", timeout=BOUND), p.log()
    assert dns.questions(name=ptr_name("127.0.0.1")), dns.questions()
    rdns_session(p, client, "127.0.0.3")
    assert names_sent(recorder) == ["[TEMPUNAVAIL]", "good.rdns.test"], p.log()
    assert len(dns.questions(name=ptr_name("127.0.0.3"))) == 1, dns.questions()
    assert "resolver down" not in p.log()
    # The failed lookup is counted all the same.
    assert val(scrape(mport), "portcullis_dns_failures_total") == 1


def test_resolver_back_is_noticed(proxy, client, recorder, dns):
    """After dns_retry_interval one lookup asks again; an answer brings the
    names back, and one line says so."""
    dns.never("in-addr.arpa")
    recorder.configure(extra_caps=["XCLIENT"])
    p = proxy(client_rdns="yes", dns_server=dns.address, dns_timeout="300ms", dns_retry_interval="1s")
    rdns_session(p, client, "127.0.0.1")
    assert p.wait_log(r"resolver down", timeout=BOUND)
    dns.reset()
    dns.ptr("127.0.0.2", "back.rdns.test").a("back.rdns.test", "127.0.0.2")
    deadline = time.monotonic() + BOUND
    while "back.rdns.test" not in names_sent(recorder) and time.monotonic() < deadline:
        rdns_session(p, client, "127.0.0.2")
        time.sleep(0.1)
    names = names_sent(recorder)
    assert names[-1] == "back.rdns.test", (names, p.log())
    # Until the interval passed, the resolver was not asked: every session
    # before the last one got [TEMPUNAVAIL], and it got one question (and
    # the forward one), not one per session.
    assert set(names[:-1]) == {"[TEMPUNAVAIL]"}, names
    assert len(dns.questions(name=ptr_name("127.0.0.2"))) == 1, dns.questions()
    assert len(re.findall(r"warning: resolver down \(", p.log())) == 1, p.log()
    assert len(re.findall(r"resolver is back: client names are looked up again", p.log())) == 1, p.log()


def test_reload_switches_the_format(proxy, client, recorder):
    """SIGHUP applies log_format: text before, JSON after, each line whole."""
    p = proxy()
    p.settings["log_format"] = "json"
    p.write_config()
    p.signal(signal.SIGHUP)
    assert p.wait_log(r'"msg":"SIGHUP: ', timeout=BOUND), p.log()
    c = client(p)
    c.greet()
    c.envelope("a@client.test", "b@rcpt.test")
    c.message(b"Subject: t\r\n\r\nx\r\n.\r\n").expect(250)
    c.cmd("QUIT").expect(221)
    assert p.wait_log(r'"status":"sent"', timeout=BOUND), p.log()
    lines = p.log().splitlines()
    first_json = next(i for i, ln in enumerate(lines) if ln.startswith("{"))
    assert first_json > 0 and "started" in lines[first_json - 1], lines
    for ln in lines[first_json:]:
        json.loads(ln)
