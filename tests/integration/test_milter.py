"""The milter client (plugins/milter.c, [milter NAME] sections) against the
kit's scripted fake milter (kit/fakemilter.py) and the recording backend.

What is checked each time: the reply codes the client gets, what the
backend received byte for byte, what the milter was sent (commands,
fields, macros, body chunks), and the log lines the contract names:

  * negotiation and every stage: the offer, connect fields, HELO, MAIL
    and RCPT with their arguments, headers (folding, the leading space
    with and without SMFIP_HDR_LEADSPC), EOH, body chunks, EOM, QUIT;
    macros (the defaults, `macros =`, the milter's own symlists); the
    SMFIP_NO* and SMFIP_NR_* flags; SKIP; unix sockets and inet:PORT@HOST;
  * every reply at its stages: reject, tempfail, replycode (valid and
    not), discard, accept, shutdown;
  * every modification at end of message, quarantine, progress; a
    modification before end of message or not negotiated;
  * faults through on_error (accept, tempfail, reject): down, hung,
    closed mid-body, garbage, a bad version; the next session reconnects;
  * ABORT and QUIT; two milters and a Lua filter in one chain.
"""

import re
import struct

import pytest

from kit import fakemilter as fm
from kit.fakemilter import FakeMilter
from kit.messages import make_message, stuff
from kit.ports import free_port
from test_tls import raw, tls, tproxy  # noqa: F401 (fixtures for the PROXY and STARTTLS tests)

HOST = "proxy.test"  # the hostname kit.proxy.Proxy configures
BOUND = 10.0  # a generous bound for what should take milliseconds

REJECT = "550 5.7.1 Command rejected"
TEMPFAIL = "451 4.7.1 Service unavailable - try again later"
FILTER_FAILURE = "451 4.3.0 Temporary filter failure, try again later"
FILTER_FAILURE_CONNECT = f"421 4.3.0 {HOST} Temporary filter failure, try again later"
FILTER_FAILURE_REJECT = "550 5.3.0 Refused after a filter failure"
FILTER_FAILURE_REJECT_CONNECT = "554 5.3.0 Refused after a filter failure"

# What we offer (the contract): version 6, all nine actions, every NO*,
# every NR_*, SKIP and HDR_LEADSPC; not RCPT_REJ, not MDS_256K/1M.
OFFER = (6, fm.ALL_ACTIONS, fm.ALL_NO | fm.ALL_NR | fm.SMFIP_SKIP | fm.SMFIP_HDR_LEADSPC)

HEAD = (
    b"From: <a@x.test>\r\n"
    b"To: <b@y.test>\r\n"
    b"Subject: milter test\r\n"
    b"X-Folded: first\r\n"
    b"\tsecond\r\n"
    b"  third\r\n"
    b"X-NoSpace:tight\r\n"
    b"X-Two:  two spaces\r\n"
)
TEXT = b"Hello.\r\n.a line with a leading dot\r\n..two dots\r\nlast line\r\n"
BODY = HEAD + b"\r\n" + TEXT
# The header fields as the milter must get them without SMFIP_HDR_LEADSPC
# (one space after the colon removed) and with it (the value as written).
FIELDS = [
    ("From", "<a@x.test>"),
    ("To", "<b@y.test>"),
    ("Subject", "milter test"),
    ("X-Folded", "first\n\tsecond\n  third"),
    ("X-NoSpace", "tight"),
    ("X-Two", " two spaces"),
]
FIELDS_LEADSPC = [
    ("From", " <a@x.test>"),
    ("To", " <b@y.test>"),
    ("Subject", " milter test"),
    ("X-Folded", " first\n\tsecond\n  third"),
    ("X-NoSpace", "tight"),
    ("X-Two", "  two spaces"),
]


# ---- helpers ---------------------------------------------------------------------


@pytest.fixture
def milter():
    """A factory: milter(**FakeMilter kwargs) -> a started fake, stopped at
    the end of the test. Ask for this fixture before proxy, so that the
    proxies stop first."""
    started = []

    def make(**kw):
        m = FakeMilter(**kw).start()
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()


def section(m, name="fm", **keys):
    """A [milter NAME] section for a fake (or a socket string), with short
    timeouts."""
    d = {
        "socket": m if isinstance(m, str) else m.socket,
        "timeout_connect": "2s",
        "timeout_command": "2s",
        "timeout_eom": "2s",
    }
    d.update(keys)
    return (f"milter {name}", d)


def start(proxy, *items, **settings):
    """A proxy with these sections: fakes (as [milter fm], or fm1, fm2...
    when several) or (header, keys) pairs."""
    fakes = [x for x in items if isinstance(x, FakeMilter)]
    secs = []
    for x in items:
        if isinstance(x, FakeMilter):
            secs.append(section(x, "fm" if len(fakes) == 1 else f"fm{fakes.index(x) + 1}"))
        else:
            secs.append(x)
    return proxy(sections=secs, **settings)


def deliver(c, body=BODY, sender="a@x.test", rcpts=("b@y.test",), mail_args=""):
    """One transaction on a greeted client; returns the end-of-data reply."""
    c.cmd(f"MAIL FROM:<{sender}>{mail_args}").expect(250)
    for r in rcpts:
        c.cmd(f"RCPT TO:<{r}>").expect(250)
    return c.message(stuff(body) + b".\r\n")


def delivered(recorder, n=1):
    """The n-th delivered transaction (the last of n), waited for."""
    msgs = recorder.wait_for(lambda: len(recorder._messages_locked()) >= n, BOUND)
    assert msgs, recorder.commands()
    got = recorder.delivered()
    assert len(got) == n, got
    return got[-1]


def settle(p, n=1):
    """Wait for n summary lines: the transactions are over."""
    s = p.wait_summaries(n, timeout=BOUND)
    assert len(s) >= n, p.log()[-4000:]
    return s


def text_of(body):
    """The body of a message (after the empty line)."""
    return body.split(b"\r\n\r\n", 1)[1]


def one_conn(m, n=1):
    conns = m.wait_conns(n, timeout=BOUND)
    assert len(conns) == n, conns
    return conns[n - 1]


def quit_seen(m, conn):
    assert m.wait_cmd("Q", conn=conn, timeout=BOUND), conn.letters()
    assert m.wait_for(lambda: conn.closed, BOUND)
    assert conn.letters().endswith("Q"), conn.letters()


def log_has(p, pattern, count=1):
    found = p.wait_log(pattern, timeout=BOUND, count=count)
    assert len(found) >= count, f"{pattern!r} not in the log:\n{p.log()[-5000:]}"
    return found


# How the reasons read: the host's "filter fm failed at STAGE: REASON" line
# carries the milter's reason; timeouts also get the plugin's own line.
PROTOCOL_ERROR = r"protocol error"
TIMED_OUT = r"(?:.*timed out|no answer to .+ within \d+ ms)"


def failure_logged(p, stage, why):
    """The host's failure line for the stage, and the reason (on that line
    or on a "milter fm:" line of the plugin's own)."""
    log_has(p, rf"filter fm failed at {stage}\b")
    log_has(p, rf"(?:milter fm|filter fm failed at \w+): {why}")


def mail_letters(letters):
    """The letters from the first MAIL on (the transaction's commands)."""
    return letters[letters.index("M"):] if "M" in letters else ""


# ---- negotiation and stages ------------------------------------------------------


def test_offer_and_every_stage_as_sent(milter, recorder, proxy, client):
    m = milter()
    p = start(proxy, m)
    c = client(p)
    c.greet("client.test")
    port = c.sock.getsockname()[1]
    r = deliver(c, mail_args=" SIZE=300 BODY=8BITMIME")
    assert r.code == 250, r
    c.cmd("QUIT").expect(221)

    t = delivered(recorder)
    assert t.data == stuff(BODY)  # no modification: byte for byte
    conn = one_conn(m)
    quit_seen(m, conn)
    assert conn.offer == OFFER
    assert conn.letters() == "OCHMRT" + "L" * len(FIELDS) + "NBEQ"
    assert conn.first("C").fields == {"hostname": "[127.0.0.1]", "family": "4", "port": port,
                                      "address": "127.0.0.1"}
    assert conn.first("H").fields == {"helo": "client.test"}
    assert conn.first("M").fields["args"] == ["<a@x.test>", "SIZE=300", "BODY=8BITMIME"]
    assert conn.first("R").fields["args"] == ["<b@y.test>"]
    assert conn.headers() == FIELDS
    assert conn.body() == TEXT  # CR LF, dots un-stuffed
    assert conn.first("E").fields["body"] == b""
    assert conn.error is None


def test_helo_sent_again_for_each_ehlo(milter, recorder, proxy, client):
    m = milter()
    p = start(proxy, m)
    c = client(p)
    c.greet("one.test")
    c.ehlo("two.test")
    assert deliver(c).code == 250
    c.cmd("QUIT").expect(221)
    conn = one_conn(m)
    quit_seen(m, conn)
    assert [x.fields["helo"] for x in conn.commands("H")] == ["one.test", "two.test"]


def test_leading_space_kept_with_hdr_leadspc(milter, recorder, proxy, client):
    m = milter(protocol=fm.SMFIP_HDR_LEADSPC)
    p = start(proxy, m)
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    conn = one_conn(m)
    assert m.wait_cmd("E", conn=conn)
    assert conn.headers() == FIELDS_LEADSPC
    assert delivered(recorder).data == stuff(BODY)


def test_large_body_in_chunks_of_at_most_65535(milter, recorder, proxy, client):
    msg = make_message(lines=5000, seed=16)
    text = text_of(msg)
    assert len(text) > 150 * 1024
    assert b"\r\n." in text  # some lines start with a dot: stuffed on the wire
    m = milter()
    p = start(proxy, m)
    c = client(p)
    c.greet()
    assert deliver(c, body=msg).code == 250
    assert delivered(recorder).data == stuff(msg)
    conn = one_conn(m)
    assert m.wait_cmd("E", conn=conn)
    chunks = conn.chunks()
    assert len(chunks) >= 3, [len(x) for x in chunks]
    assert all(0 < len(x) <= 65535 for x in chunks), [len(x) for x in chunks]
    assert b"".join(chunks) == text


def test_default_macros_at_each_stage(milter, recorder, proxy, client):
    m = milter()
    p = start(proxy, m)
    c = client(p)
    c.greet()
    cport = c.sock.getsockname()[1]
    assert deliver(c, sender="s@x.test", rcpts=("r1@y.test", "r2@y.test")).code == 250
    tx_id = settle(p)[-1]["id"]
    assert re.fullmatch(r"[0-9A-Za-z]+\.\d+", tx_id), tx_id
    conn = one_conn(m)
    assert m.wait_cmd("E", conn=conn)

    cm = conn.first("C").macros
    assert list(cm) == ["C"], cm
    cm = cm["C"]
    assert cm["j"] == HOST
    assert cm["{daemon_name}"] == HOST
    assert cm["{client_addr}"] == "127.0.0.1"
    assert cm["{client_port}"] == str(cport)
    assert cm["{client_name}"] == "unknown"
    assert cm["_"].endswith("[127.0.0.1]"), cm
    assert cm["{daemon_addr}"] == "127.0.0.1"
    assert cm["{daemon_port}"] == str(p.port)
    assert cm["v"], cm
    assert set(cm) <= {"j", "_", "{daemon_name}", "{daemon_addr}", "{daemon_port}", "{client_addr}",
                       "{client_port}", "{client_name}", "v"}, cm
    # No TLS: no {tls_version} or {cipher} at HELO.
    hm = conn.first("H").macros.get("H", {})
    assert "{tls_version}" not in hm and "{cipher}" not in hm, hm
    # No AUTH: no {auth_authen}.
    assert conn.first("M").macros == {"M": {"i": tx_id, "{mail_addr}": "s@x.test"}}
    assert [x.macros for x in conn.commands("R")] == [
        {"R": {"i": tx_id, "{rcpt_addr}": "r1@y.test"}},
        {"R": {"i": tx_id, "{rcpt_addr}": "r2@y.test"}},
    ]
    assert conn.first("T").macros == {"T": {"i": tx_id}}
    assert conn.first("N").macros == {"N": {"i": tx_id}}
    assert conn.first("E").macros == {"E": {"i": tx_id}}


def test_daemon_name_key(milter, recorder, proxy, client):
    m = milter()
    p = proxy(sections=[section(m, daemon_name="mx1")])
    c = client(p)
    c.banner().expect(220)
    conn = one_conn(m)
    assert m.wait_cmd("C", conn=conn)
    assert conn.first("C").macros["C"]["{daemon_name}"] == "mx1"
    assert conn.first("C").macros["C"]["j"] == HOST


def bare(macros):
    return {k.strip("{}"): v for k, v in macros.items()}


def test_macros_key_per_stage(milter, recorder, proxy, client):
    m = milter()
    p = proxy(sections=[section(m, macros="connect: j client_addr; mail: {mail_addr}; eom: i {client_port}")])
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    tx_id = settle(p)[-1]["id"]
    conn = one_conn(m)
    assert m.wait_cmd("E", conn=conn)
    assert bare(conn.first("C").macros["C"]) == {"j": HOST, "client_addr": "127.0.0.1"}
    assert bare(conn.first("M").macros["M"]) == {"mail_addr": "a@x.test"}
    assert bare(conn.first("E").macros["E"]) == {"i": tx_id, "client_port": str(c.sock.getsockname()[1])}
    # Stages the key leaves out keep their defaults.
    assert bare(conn.first("R").macros["R"]) == {"i": tx_id, "rcpt_addr": "b@y.test"}


def test_milter_symlist_wins(milter, recorder, proxy, client):
    m = milter(symlists={fm.SMFIM_CONNECT: "{client_port}", fm.SMFIM_ENVFROM: "{mail_addr} j"})
    p = proxy(sections=[section(m, macros="connect: j; rcpt: {rcpt_addr}")])
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    tx_id = settle(p)[-1]["id"]
    conn = one_conn(m)
    assert m.wait_cmd("E", conn=conn)
    assert bare(conn.first("C").macros["C"]) == {"client_port": str(c.sock.getsockname()[1])}
    assert bare(conn.first("M").macros["M"]) == {"mail_addr": "a@x.test", "j": HOST}
    assert bare(conn.first("R").macros["R"]) == {"rcpt_addr": "b@y.test"}  # `macros =`
    assert bare(conn.first("T").macros["T"]) == {"i": tx_id}  # the default


@pytest.mark.parametrize("flag,letter", [
    (fm.SMFIP_NOCONNECT, "C"), (fm.SMFIP_NOHELO, "H"), (fm.SMFIP_NOMAIL, "M"), (fm.SMFIP_NORCPT, "R"),
    (fm.SMFIP_NODATA, "T"), (fm.SMFIP_NOHDRS, "L"), (fm.SMFIP_NOEOH, "N"), (fm.SMFIP_NOBODY, "B"),
])
def test_no_flags_leave_out_their_command(milter, recorder, proxy, client, flag, letter):
    m = milter(protocol=flag)
    p = start(proxy, m)
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    c.cmd("QUIT").expect(221)
    assert delivered(recorder).data == stuff(BODY)
    conn = one_conn(m)
    quit_seen(m, conn)
    full = "OCHMRT" + "L" * len(FIELDS) + "NBEQ"
    assert conn.letters() == full.replace(letter, ""), conn.letters()


def test_nr_flags_no_reply_awaited(milter, recorder, proxy, client):
    m = milter(protocol=fm.ALL_NR)
    p = start(proxy, m)
    c = client(p)
    c.greet()
    assert deliver(c, rcpts=("b@y.test", "c@y.test")).code == 250
    c.cmd("QUIT").expect(221)
    assert delivered(recorder).data == stuff(BODY)
    conn = one_conn(m)
    quit_seen(m, conn)
    assert conn.letters() == "OCHMRRT" + "L" * len(FIELDS) + "NBEQ"
    # The fake answered only the negotiation and the end of message.
    assert [x.cmd for x in conn.sent] == ["O", "c"], conn.sent


def test_skip_after_the_first_chunk(milter, recorder, proxy, client):
    msg = make_message(lines=5000, seed=3)
    m = milter(protocol=fm.SMFIP_SKIP, script={"B": [fm.skip()]})
    p = start(proxy, m)
    c = client(p)
    c.greet()
    assert deliver(c, body=msg).code == 250
    assert delivered(recorder).data == stuff(msg)
    conn = one_conn(m)
    assert m.wait_cmd("E", conn=conn)
    assert mail_letters(conn.letters()).endswith("NBE"), conn.letters()
    assert len(conn.chunks()) == 1
    assert conn.chunks()[0] == text_of(msg)[:len(conn.chunks()[0])]


def test_unix_socket(milter, recorder, proxy, client, tmp_path):
    m = milter(unix=str(tmp_path / "milter.sock"))
    p = start(proxy, m)
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    assert delivered(recorder).data == stuff(BODY)
    conn = one_conn(m)
    assert m.wait_cmd("E", conn=conn)
    assert conn.first("C").fields["address"] == "127.0.0.1"


def test_inet_port_at_host_form(milter, recorder, proxy, client):
    m = milter(script={"M": [fm.reject()]})
    p = proxy(sections=[section(f"inet:{m.port}@127.0.0.1")])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == REJECT
    assert one_conn(m).first("M").fields["args"] == ["<a@x.test>"]


@pytest.mark.parametrize("form", ["inet:{port}@localhost", "inet:localhost:{port}"])
def test_socket_by_name(milter, recorder, proxy, client, form):
    # Postfix and Sendmail write inet:PORT@localhost: the name is looked up
    # once at start (localhost is 127.0.0.1 in /etc/hosts).
    m = milter(script={"M": [fm.reject()]})
    p = proxy(sections=[section(form.format(port=m.port))])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == REJECT


def test_macros_key_plain_list(milter, recorder, proxy, client):
    # Without STAGE: the macros go at every stage where they have a value.
    m = milter()
    p = proxy(sections=[section(m, macros="j {rcpt_addr} i")])
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    tx_id = settle(p)[-1]["id"]
    conn = one_conn(m)
    assert m.wait_cmd("E", conn=conn)
    assert bare(conn.first("C").macros["C"]) == {"j": HOST}
    assert bare(conn.first("M").macros["M"]) == {"j": HOST, "i": tx_id}
    assert bare(conn.first("R").macros["R"]) == {"j": HOST, "rcpt_addr": "b@y.test", "i": tx_id}
    assert bare(conn.first("E").macros["E"]) == {"j": HOST, "i": tx_id}


# ---- replies at their stages -----------------------------------------------------


REFUSALS = [
    ("reject", lambda: fm.reject(), REJECT),
    ("tempfail", lambda: fm.tempfail(), TEMPFAIL),
    ("replycode5", lambda: fm.replycode("554 5.7.0 go away"), "554 5.7.0 go away"),
    ("replycode4", lambda: fm.replycode("452 4.3.1 later please"), "452 4.3.1 later please"),
]
LETTER = {"connect": "C", "helo": "H", "mail": "M", "rcpt": "R", "eom": "E"}


@pytest.mark.parametrize("stage", ["connect", "helo", "mail", "rcpt", "eom"])
@pytest.mark.parametrize("kind,make,expected", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusal_at_stage(milter, recorder, proxy, client, stage, kind, make, expected):
    if stage == "rcpt":
        # Only the recipient the milter refuses is refused.
        script = {"R": lambda conn, cmd, f: [make()] if f["args"][0] == "<bad@y.test>" else None}
    else:
        script = {LETTER[stage]: [make()]}
    m = milter(script=script)
    p = start(proxy, m)
    c = client(p)
    if stage == "connect":
        r = c.banner()
        assert r.first == expected, r
        return _after_connect_refusal(m, c, recorder)
    c.banner().expect(220)
    r = c.cmd("EHLO client.test")
    if stage == "helo":
        assert r.first == expected, r
        assert "MAIL" not in recorder.verbs()
        return
    assert r.code == 250
    r = c.cmd("MAIL FROM:<a@x.test>")
    if stage == "mail":
        assert r.first == expected, r
        assert "MAIL" not in recorder.verbs()
        c.cmd("QUIT")
        quit_seen(m, one_conn(m))
        return
    assert r.code == 250
    if stage == "rcpt":
        c.cmd("RCPT TO:<b@y.test>").expect(250)
        r = c.cmd("RCPT TO:<bad@y.test>")
        assert r.first == expected, r
        c.cmd("RCPT TO:<c@y.test>").expect(250)
        assert c.message(stuff(BODY) + b".\r\n").code == 250
        t = delivered(recorder)
        assert t.accepted_rcpts == ["b@y.test", "c@y.test"]
        assert t.data == stuff(BODY)
        assert [x.fields["args"][0] for x in one_conn(m).commands("R")] == ["<b@y.test>", "<bad@y.test>",
                                                                             "<c@y.test>"]
        return
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    r = c.message(stuff(BODY) + b".\r\n")
    assert r.first == expected, r
    settle(p)
    assert recorder.messages() == []
    assert "DATA" not in recorder.verbs()
    assert recorder.wait_command("RSET"), recorder.commands()
    c.cmd("QUIT").expect(221)
    conn = one_conn(m)
    quit_seen(m, conn)
    # The end-of-message reply came: no ABORT.
    assert "A" not in conn.letters()


def _after_connect_refusal(m, c, recorder):
    # Nothing more goes to the milter but QUIT; the backend hears nothing.
    if c.closed(timeout=0.5) is False:
        c.cmd("QUIT")
    conn = one_conn(m)
    quit_seen(m, conn)
    assert conn.letters() == "OCQ", conn.letters()
    assert recorder.conns() == [] or "MAIL" not in recorder.verbs()


@pytest.mark.parametrize("text", [
    "250 2.0.0 ok",
    "550 4.7.1 class mismatch",
    "55 5.7.1 short code",
    "550 5.7.1 " + "x" * 520,
], ids=["2xx", "class_mismatch", "short_code", "too_long"])
def test_invalid_replycode_goes_to_on_error(milter, recorder, proxy, client, text):
    m = milter(script={"M": [fm.replycode(text)]})
    p = proxy(sections=[section(m, on_error="reject")])
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    assert r.first == FILTER_FAILURE_REJECT, r
    failure_logged(p, "mail", r"(?:protocol error|invalid reply)")
    assert "MAIL" not in recorder.verbs()


def test_multiline_replycode_gives_its_first_line(milter, recorder, proxy, client):
    # smfi_setmlreply: lines joined by CR LF. One line reaches the client.
    m = milter(script={"M": [fm.replycode("550-5.7.1 first\r\n550 5.7.1 second")]})
    p = start(proxy, m)
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    assert r.raw == b"550 5.7.1 first\r\n", r
    c.cmd("NOOP").expect(250)  # nothing else was queued behind it


@pytest.mark.parametrize("text", ["550 5.7.1 a\rInjected: b", "550 5.7.1 a\n250 b"])
def test_replycode_with_a_bare_line_end_is_a_failure(milter, recorder, proxy, client, text):
    # No milter library writes a bare CR or LF in a reply (a multi-line one
    # has CR LF between its lines): on_error, one line, nothing injected.
    m = milter(script={"M": [fm.replycode(text)]})
    p = proxy(sections=[section(m, on_error="reject")])
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    assert r.first == FILTER_FAILURE_REJECT, r
    assert r.raw.count(b"\r") == 1 and r.raw.count(b"\n") == 1, r
    c.cmd("NOOP").expect(250)
    assert "MAIL" not in recorder.verbs()


def test_discard_at_rcpt_drops_the_whole_message(milter, recorder, proxy, client):
    m = milter(script={"R": lambda conn, cmd, f: [fm.discard()] if "drop" in f["args"][0] else None})
    p = start(proxy, m)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    c.cmd("RCPT TO:<drop@y.test>").expect(250)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    settle(p)
    assert recorder.messages() == []
    assert "DATA" not in recorder.verbs()


def test_discard_at_eom(milter, recorder, proxy, client):
    m = milter(script={"E": [fm.discard()]})
    p = start(proxy, m)
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    settle(p)
    assert recorder.messages() == []
    assert "DATA" not in recorder.verbs()


def test_accept_at_mail_ends_the_transaction_for_that_milter(milter, recorder, proxy, client):
    m = milter(script={"M": [fm.accept()]})
    p = start(proxy, m)
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    assert delivered(recorder, 1).data == stuff(BODY)
    assert deliver(c, sender="second@x.test").code == 250
    assert delivered(recorder, 2).sender == "second@x.test"
    c.cmd("QUIT").expect(221)
    conn = one_conn(m)
    quit_seen(m, conn)
    # MAIL, then nothing of that transaction; the next MAIL is asked again.
    # (ABORT ends each transaction, as Postfix's milter8 does after an
    # accept: the milter's per-message state is reset.)
    assert mail_letters(conn.letters()) == "MAMAQ", conn.letters()
    assert [x.fields["args"][0] for x in conn.commands("M")] == ["<a@x.test>", "<second@x.test>"]


def test_accept_at_connect_ends_the_session_for_that_milter(milter, recorder, proxy, client):
    m = milter(script={"C": [fm.accept()]})
    p = start(proxy, m)
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    assert deliver(c).code == 250
    assert delivered(recorder, 2).data == stuff(BODY)
    c.cmd("QUIT").expect(221)
    conn = one_conn(m)
    quit_seen(m, conn)
    assert conn.letters() == "OCQ", conn.letters()


@pytest.mark.parametrize("reply", [fm.shutdown, fm.conn_fail], ids=["shutdown", "conn_fail"])
def test_shutdown_disconnects_with_421(milter, recorder, proxy, client, reply):
    m = milter(script={"R": [reply()]})
    p = start(proxy, m)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    r = c.cmd("RCPT TO:<b@y.test>")
    assert r.code == 421, r
    assert r.enhanced.startswith("4.")
    assert c.closed(timeout=BOUND)
    settle(p)
    assert recorder.messages() == []


# ---- modifications at end of message ---------------------------------------------


def eom_edit(milter, recorder, proxy, client, replies, body=BODY, rcpts=("b@y.test",), mail_args="",
             **fake):
    """Deliver body through a fake answering replies + continue at EOM;
    returns the transaction the backend got."""
    m = milter(script={"E": list(replies) + [fm.cont()]}, **fake)
    p = start(proxy, m)
    c = client(p)
    c.greet()
    r = deliver(c, body=body, rcpts=rcpts, mail_args=mail_args)
    assert r.code == 250, r
    return delivered(recorder), p, m


def test_add_header_appended(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client, [fm.addheader("X-Added", "yes")])
    assert t.data == stuff(HEAD + b"X-Added: yes\r\n\r\n" + TEXT)


def test_added_folded_value_arrives_with_crlf_folding(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client, [fm.addheader("X-Fold", "a\n\tb")])
    assert t.data == stuff(HEAD + b"X-Fold: a\r\n\tb\r\n\r\n" + TEXT)


def test_insert_header_at_0(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client, [fm.insheader(0, "X-First", "1")])
    assert t.data == stuff(b"X-First: 1\r\n" + BODY)


def test_insert_header_at_2(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client, [fm.insheader(2, "X-Third", "3")])
    i = BODY.index(b"Subject:")
    assert t.data == stuff(BODY[:i] + b"X-Third: 3\r\n" + BODY[i:])


REP = b"Subject: rep\r\nX-Rep: one\r\nX-Other: o\r\nX-Rep: two\r\nX-Rep: three\r\n\r\nbody\r\n"


def test_change_header_by_index(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client,
                       [fm.chgheader(2, "X-Rep", "zwei"), fm.chgheader(1, "X-Rep", "eins")], body=REP)
    assert t.data == REP.replace(b"X-Rep: one", b"X-Rep: eins").replace(b"X-Rep: two", b"X-Rep: zwei")


def test_delete_header_with_empty_value(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client, [fm.chgheader(2, "X-Rep", "")], body=REP)
    assert t.data == REP.replace(b"X-Rep: two\r\n", b"")


def test_change_header_past_the_last_appends(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client, [fm.chgheader(9, "X-Rep", "new")], body=REP)
    assert t.data == REP.replace(b"\r\n\r\n", b"\r\nX-Rep: new\r\n\r\n")


def test_add_recipient(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client, [fm.addrcpt("<c@y.test>")])
    assert t.rcpts == ["RCPT TO:<b@y.test>", "RCPT TO:<c@y.test>"]
    assert t.data == stuff(BODY)


def test_add_recipient_with_args(milter, recorder, proxy, client):
    recorder.configure(extra_caps=["DSN"])
    t, _, _ = eom_edit(milter, recorder, proxy, client, [fm.addrcpt_par("<c@y.test>", "NOTIFY=NEVER")])
    assert t.rcpts == ["RCPT TO:<b@y.test>", "RCPT TO:<c@y.test> NOTIFY=NEVER"]
    assert b"RCPT TO:<c@y.test> NOTIFY=NEVER\r\n" in recorder.raw()


def test_delete_recipient(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client, [fm.delrcpt("<b@y.test>")],
                       rcpts=("b@y.test", "c@y.test"))
    assert t.rcpts == ["RCPT TO:<c@y.test>"]
    assert t.data == stuff(BODY)


def test_change_sender(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client, [fm.chgfrom("<new@x.test>")])
    assert t.mail == "MAIL FROM:<new@x.test>"
    assert t.rcpts == ["RCPT TO:<b@y.test>"]
    assert t.data == stuff(BODY)


def test_change_sender_with_args(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client, [fm.chgfrom("<new@x.test>", "SIZE=100")],
                       mail_args=" BODY=8BITMIME")
    assert t.mail == "MAIL FROM:<new@x.test> SIZE=100"


def test_replace_body_in_chunks(milter, recorder, proxy, client):
    t, _, _ = eom_edit(milter, recorder, proxy, client,
                       [fm.replbody(b"new first line\r\n.dot"), fm.replbody(b" line\r\nlast\r\n")])
    assert t.data == stuff(HEAD + b"\r\nnew first line\r\n.dot line\r\nlast\r\n")


@pytest.mark.parametrize("header", [None, "X-Held"])
def test_quarantine_delivers_marked_and_logs(milter, recorder, proxy, client, header):
    m = milter(script={"E": [fm.quarantine("looks odd"), fm.cont()]})
    keys = {} if header is None else {"quarantine_header": header}
    p = proxy(sections=[section(m, **keys)])
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    t = delivered(recorder)
    name = (header or "X-Quarantine").encode()
    line = name + b": looks odd\r\n"
    assert t.data.count(line) == 1, t.data[:400]
    head = t.data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert line in head
    assert t.data.replace(line, b"") == stuff(BODY)
    log_has(p, r"milter fm: quarantined: looks odd")


def test_progress_keeps_the_milter_alive(milter, recorder, proxy, client):
    steps = []
    for _ in range(5):
        steps += [fm.Sleep(0.4), fm.progress()]
    m = milter(script={"E": steps + [fm.addheader("X-Late", "yes"), fm.cont()]})
    p = proxy(sections=[section(m, timeout_eom="1s", on_error="reject")])
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    assert delivered(recorder).data == stuff(HEAD + b"X-Late: yes\r\n\r\n" + TEXT)
    assert "timed out" not in p.log()
    assert "failed at" not in p.log()


@pytest.mark.parametrize("letter", ["M", "R", "L", "B"])
def test_modification_before_eom_is_a_protocol_error(milter, recorder, proxy, client, letter):
    m = milter(script={letter: [fm.addheader("X-Early", "1"), fm.cont()]})
    p = proxy(sections=[section(m, on_error="reject")])
    c = client(p)
    c.greet()
    stage = "data" if letter in "LB" else {"M": "mail", "R": "rcpt"}[letter]
    if stage == "mail":
        assert c.cmd("MAIL FROM:<a@x.test>").first == FILTER_FAILURE_REJECT
    elif stage == "rcpt":
        c.cmd("MAIL FROM:<a@x.test>").expect(250)
        assert c.cmd("RCPT TO:<b@y.test>").first == FILTER_FAILURE_REJECT
    else:
        c.cmd("MAIL FROM:<a@x.test>").expect(250)
        c.cmd("RCPT TO:<b@y.test>").expect(250)
        assert c.message(stuff(BODY) + b".\r\n").first == FILTER_FAILURE_REJECT
    failure_logged(p, stage, PROTOCOL_ERROR + r": a change \('h'\) in answer to")
    assert recorder.messages() == []


@pytest.mark.parametrize("actions,reply", [
    (fm.ALL_ACTIONS & ~fm.SMFIF_CHGFROM, lambda: fm.chgfrom("<x@x.test>")),
    (fm.ALL_ACTIONS & ~fm.SMFIF_ADDHDRS, lambda: fm.addheader("X-A", "1")),
    (fm.ALL_ACTIONS & ~fm.SMFIF_CHGBODY, lambda: fm.replbody(b"x\r\n")),
    (fm.ALL_ACTIONS & ~fm.SMFIF_ADDRCPT_PAR, lambda: fm.addrcpt_par("<c@y.test>", "NOTIFY=NEVER")),
    (fm.ALL_ACTIONS & ~fm.SMFIF_QUARANTINE, lambda: fm.quarantine("x")),
], ids=["chgfrom", "addheader", "replbody", "addrcpt_par", "quarantine"])
def test_modification_not_negotiated_is_a_protocol_error(milter, recorder, proxy, client, actions, reply):
    m = milter(actions=actions, script={"E": [reply(), fm.cont()]})
    p = proxy(sections=[section(m, on_error="reject")])
    c = client(p)
    c.greet()
    assert deliver(c).first == FILTER_FAILURE_REJECT
    failure_logged(p, "data", PROTOCOL_ERROR)
    settle(p)
    assert recorder.messages() == []


# ---- faults through on_error -----------------------------------------------------


ON_ERROR = ["accept", "tempfail", "reject"]


def expect_fault_outcome(p, c, recorder, on_error, stage_reply, body=BODY):
    """After a fault at end of message: accept delivers unchanged, tempfail
    and reject refuse."""
    if on_error == "accept":
        assert stage_reply.code == 250, stage_reply
        assert delivered(recorder).data == stuff(body)
    else:
        want = FILTER_FAILURE if on_error == "tempfail" else FILTER_FAILURE_REJECT
        assert stage_reply.first == want, stage_reply
        settle(p)
        assert recorder.messages() == []


def next_session_works(m, p, c_factory, recorder, n_before):
    """A new session connects to the milter afresh and mail flows."""
    c2 = c_factory(p)
    c2.greet()
    assert deliver(c2).code == 250
    assert len(recorder.wait_for_transactions(n_before + 1, timeout=BOUND)) == n_before + 1
    assert recorder.messages()[-1].data == stuff(BODY)
    conns = m.wait_conns(2, timeout=BOUND)
    assert m.wait_cmd("E", conn=conns[-1])
    assert mail_letters(conns[-1].letters()).startswith("MRT")


def first_conn_only(items):
    """A script entry that answers items on the first connection only."""
    return lambda conn, cmd, f: list(items) if conn.index == 0 else None


@pytest.mark.parametrize("on_error", ON_ERROR)
def test_milter_down_at_connect(milter, recorder, proxy, client, on_error):
    port = free_port()
    p = proxy(sections=[section(f"inet:127.0.0.1:{port}", on_error=on_error)])
    c = client(p)
    if on_error == "tempfail":
        assert c.banner().first == FILTER_FAILURE_CONNECT
        assert c.closed(timeout=BOUND)
    elif on_error == "reject":
        assert c.banner().first == FILTER_FAILURE_REJECT_CONNECT
        assert c.cmd("MAIL FROM:<a@x.test>").code // 100 == 5  # later stages refused too
    else:
        c.greet()
        assert deliver(c).code == 250
        assert delivered(recorder).data == stuff(BODY)
    failure_logged(p, "connect", rf"cannot connect to inet:127\.0\.0\.1:{port}")
    c.close()
    # The milter is back: the next session uses it.
    m = FakeMilter(port=port).start()
    try:
        c2 = client(p)
        c2.greet()
        assert deliver(c2).code == 250
        conn = one_conn(m)
        assert m.wait_cmd("E", conn=conn)
        assert recorder.wait_for_transactions(1 + (on_error == "accept"), timeout=BOUND)
        assert recorder.messages()[-1].data == stuff(BODY)
    finally:
        m.stop()


@pytest.mark.parametrize("on_error", ON_ERROR)
def test_hang_at_eom_times_out(milter, recorder, proxy, client, on_error):
    m = milter(script={"E": first_conn_only([fm.HANG])})
    p = proxy(sections=[section(m, on_error=on_error, timeout_eom="1s")])
    c = client(p)
    c.greet()
    r = deliver(c)
    expect_fault_outcome(p, c, recorder, on_error, r)
    failure_logged(p, "data", TIMED_OUT)
    # The connection is closed and the milter failed for the session:
    # the next transaction goes to on_error at once, the milter hears nothing.
    assert m.wait_for(lambda: m.conns()[0].closed, BOUND)
    before = len(recorder.messages())
    c.cmd("RSET").expect(250)
    c.cmd("MAIL FROM:<a@x.test>").expect(250 if on_error == "accept" else (451 if on_error == "tempfail"
                                                                            else 550))
    assert "M" not in m.conns()[0].letters()[m.conns()[0].letters().index("E"):]
    c.close()
    next_session_works(m, p, client, recorder, before)


@pytest.mark.parametrize("on_error", ON_ERROR)
def test_closes_mid_body(milter, recorder, proxy, client, on_error):
    msg = make_message(lines=5000, seed=5)
    m = milter(script={"B": first_conn_only([fm.CLOSE])})
    p = proxy(sections=[section(m, on_error=on_error)])
    c = client(p)
    c.greet()
    r = deliver(c, body=msg)
    expect_fault_outcome(p, c, recorder, on_error, r, body=msg)
    failure_logged(p, "data", r"")
    assert m.conns()[0].letters().endswith("B")
    before = len(recorder.messages())
    c.close()
    next_session_works(m, p, client, recorder, before)


@pytest.mark.parametrize("on_error", ON_ERROR)
def test_hang_at_rcpt_times_out(milter, recorder, proxy, client, on_error):
    m = milter(script={"R": first_conn_only([fm.HANG])})
    p = proxy(sections=[section(m, on_error=on_error, timeout_command="1s")])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    r = c.cmd("RCPT TO:<b@y.test>")
    want = {"accept": "250", "tempfail": FILTER_FAILURE, "reject": FILTER_FAILURE_REJECT}[on_error]
    assert r.first.startswith(want), r
    failure_logged(p, "rcpt", TIMED_OUT)
    c.close()
    next_session_works(m, p, client, recorder, 0)


def test_host_filter_timeout_does_not_apply(milter, recorder, proxy, client):
    # A milter slower than filter_timeout but within its own timeout_eom.
    m = milter(script={"E": [fm.Sleep(1.5), fm.addheader("X-Slow", "ok"), fm.cont()]})
    p = proxy(sections=[section(m, on_error="reject", timeout_eom="5s")], filter_timeout="1s")
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    assert delivered(recorder).data == stuff(HEAD + b"X-Slow: ok\r\n\r\n" + TEXT)
    assert "failed at" not in p.log()


GARBAGE = [
    ("length0", fm.Raw(b"\0\0\0\0")),
    ("length2G", fm.Raw(struct.pack(">I", 0x80000000) + b"c")),
    ("unknown_letter", fm.Raw(fm.packet("Z"))),
    ("over_1MB", fm.Raw(struct.pack(">I", 2 * 1024 * 1024) + b"b" + b"x" * 1024)),
]


@pytest.mark.parametrize("on_error", ON_ERROR)
@pytest.mark.parametrize("garbage", [g[1] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_garbage_at_eom(milter, recorder, proxy, client, on_error, garbage):
    m = milter(script={"E": first_conn_only([garbage])})
    p = proxy(sections=[section(m, on_error=on_error)])
    c = client(p)
    c.greet()
    r = deliver(c)
    expect_fault_outcome(p, c, recorder, on_error, r)
    failure_logged(p, "data", PROTOCOL_ERROR)
    assert m.wait_for(lambda: m.conns()[0].closed, BOUND)
    before = len(recorder.messages())
    c.close()
    next_session_works(m, p, client, recorder, before)


@pytest.mark.parametrize("on_error", ON_ERROR)
def test_garbage_at_rcpt(milter, recorder, proxy, client, on_error):
    m = milter(script={"R": [fm.Raw(fm.packet("Z"))]})
    p = proxy(sections=[section(m, on_error=on_error)])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    r = c.cmd("RCPT TO:<b@y.test>")
    want = {"accept": "250", "tempfail": FILTER_FAILURE, "reject": FILTER_FAILURE_REJECT}[on_error]
    assert r.first.startswith(want), r
    failure_logged(p, "rcpt", PROTOCOL_ERROR)


@pytest.mark.parametrize("on_error", ON_ERROR)
@pytest.mark.parametrize("version", [1, 7])
def test_bad_version(milter, recorder, proxy, client, on_error, version):
    good = fm.optneg()
    m = milter(script={"O": lambda conn, cmd, f: [fm.optneg(version=version)] if conn.index == 0 else [good]})
    p = proxy(sections=[section(m, on_error=on_error)])
    c = client(p)
    b = c.banner()
    if on_error == "tempfail":
        assert b.first == FILTER_FAILURE_CONNECT
        assert c.closed(timeout=BOUND)
    elif on_error == "reject":
        assert b.first == FILTER_FAILURE_REJECT_CONNECT
    else:
        assert b.code == 220
        c.ehlo()
        assert deliver(c).code == 250
        assert delivered(recorder).data == stuff(BODY)
    failure_logged(p, "connect", PROTOCOL_ERROR + rf".*version {version}")
    assert m.conns()[0].letters() in ("O", "OQ")  # no CONNECT after a bad negotiation
    c.close()
    next_session_works(m, p, client, recorder, len(recorder.messages()))


@pytest.mark.parametrize("on_error", ON_ERROR)
def test_hang_at_negotiation_times_out_at_connect(milter, recorder, proxy, client, on_error):
    m = milter(script={"O": first_conn_only([fm.HANG])})
    p = proxy(sections=[section(m, on_error=on_error, timeout_connect="1s")])
    c = client(p)
    b = c.banner()
    want = {"accept": "220", "tempfail": FILTER_FAILURE_CONNECT,
            "reject": FILTER_FAILURE_REJECT_CONNECT}[on_error]
    assert b.first.startswith(want), b
    failure_logged(p, "connect", TIMED_OUT)
    c.close()
    next_session_works(m, p, client, recorder, 0)


# ---- ABORT, transactions, QUIT ---------------------------------------------------


def test_abort_after_rset(milter, recorder, proxy, client):
    m = milter()
    p = start(proxy, m)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    c.cmd("RSET").expect(250)
    assert deliver(c).code == 250
    c.cmd("QUIT").expect(221)
    delivered(recorder)
    conn = one_conn(m)
    quit_seen(m, conn)
    assert mail_letters(conn.letters()) == "MRAMRT" + "L" * len(FIELDS) + "NBEQ"


def test_abort_after_a_refused_transaction(milter, recorder, proxy, client):
    def mail(conn, cmd, f):
        conn.state["n"] = conn.state.get("n", 0) + 1
        return [fm.reject()] if conn.state["n"] == 1 else None

    m = milter(script={"M": mail})
    p = start(proxy, m)
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == REJECT
    assert deliver(c).code == 250
    c.cmd("QUIT").expect(221)
    delivered(recorder)
    conn = one_conn(m)
    quit_seen(m, conn)
    assert mail_letters(conn.letters()) == "MAMRT" + "L" * len(FIELDS) + "NBEQ"


def test_refused_rcpt_then_rset_aborts(milter, recorder, proxy, client):
    m = milter(script={"R": [fm.reject()]})
    p = start(proxy, m)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert c.cmd("RCPT TO:<b@y.test>").first == REJECT
    c.cmd("RSET").expect(250)
    c.cmd("QUIT").expect(221)
    conn = one_conn(m)
    quit_seen(m, conn)
    assert mail_letters(conn.letters()) == "MRAQ"
    assert recorder.messages() == []


def test_two_transactions_no_abort_after_delivery(milter, recorder, proxy, client):
    m = milter()
    p = start(proxy, m)
    c = client(p)
    c.greet()
    assert deliver(c, sender="one@x.test").code == 250
    assert deliver(c, sender="two@x.test", body=REP).code == 250
    c.cmd("QUIT").expect(221)
    assert delivered(recorder, 2).data == REP
    conn = one_conn(m)
    quit_seen(m, conn)
    one = "MRT" + "L" * len(FIELDS) + "NBE"
    two = "MRT" + "L" * 5 + "NBE"
    assert conn.letters() == "OCH" + one + two + "Q"
    ids = [x.macros["M"]["i"] for x in conn.commands("M")]
    assert ids == [s["id"] for s in settle(p, 2)]
    assert ids[0] != ids[1]
    assert conn.headers(0) == FIELDS
    assert conn.body(1) == b"body\r\n"


def test_client_gone_mid_session_sends_quit(milter, recorder, proxy, client):
    m = milter()
    p = start(proxy, m)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.close()
    conn = one_conn(m)
    quit_seen(m, conn)
    assert "Q" in conn.letters()
    assert p.alive()


# ---- a chain: Lua, then two milters ----------------------------------------------


LUA_ADD = """
function on_data(tx, msg)
  tx:add_header("X-Lua", "first")
end
"""


def lua_section(tmp_path, text, name="early"):
    path = tmp_path / f"{name}.lua"
    path.write_text(text)
    return (f"lua {name}", {"script": str(path)})


def test_chain_lua_then_two_milters(milter, recorder, proxy, client, tmp_path):
    a = milter(name="a", script={"E": [fm.addheader("X-A", "from a"), fm.chgfrom("<a-changed@x.test>"),
                                       fm.replbody(b"new body\r\n.from a\r\n"), fm.cont()]})
    b = milter(name="b", script={"E": [fm.addheader("X-B", "from b"), fm.addrcpt("<c@y.test>"), fm.cont()]})
    p = proxy(sections=[lua_section(tmp_path, LUA_ADD), section(a, "ma"), section(b, "mb")])
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    t = delivered(recorder)
    ca, cb = one_conn(a), one_conn(b)
    assert a.wait_cmd("E", conn=ca) and b.wait_cmd("E", conn=cb)
    # Each milter sees the message as changed by the filters before it.
    assert ca.headers() == [("X-Lua", "first")] + FIELDS
    assert cb.headers() == [("X-Lua", "first")] + FIELDS + [("X-A", "from a")]
    assert ca.body() == TEXT
    assert cb.body() == b"new body\r\n.from a\r\n"
    # In chain order at every stage.
    for letter in "CHMRTE":
        assert ca.first(letter).at <= cb.first(letter).at, letter
    # Every change reaches the backend.
    assert t.mail == "MAIL FROM:<a-changed@x.test>"
    assert t.rcpts == ["RCPT TO:<b@y.test>", "RCPT TO:<c@y.test>"]
    assert t.data == stuff(b"X-Lua: first\r\n" + HEAD + b"X-A: from a\r\nX-B: from b\r\n\r\n"
                           b"new body\r\n.from a\r\n")


@pytest.mark.parametrize("index,expected", [
    (0, b"X-Ins: i\r\nX-Lua: first\r\n" + HEAD),
    (1, b"X-Lua: first\r\nX-Ins: i\r\n" + HEAD),
    (3, b"X-Lua: first\r\n" + HEAD.replace(b"Subject:", b"X-Ins: i\r\nSubject:")),
])
def test_insert_index_counts_the_fields_the_milter_saw(milter, recorder, proxy, client, tmp_path, index,
                                                        expected):
    # The milter saw the Lua header first: its index counts it.
    m = milter(script={"E": [fm.insheader(index, "X-Ins", "i"), fm.cont()]})
    p = proxy(sections=[lua_section(tmp_path, LUA_ADD), section(m)])
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    assert one_conn(m).headers()[0] == ("X-Lua", "first")
    assert delivered(recorder).data == stuff(expected + b"\r\n" + TEXT)


def test_change_header_counts_a_field_an_earlier_filter_added(milter, recorder, proxy, client, tmp_path):
    lua = "function on_data(tx, msg) tx:add_header(\"Subject\", \"from lua\") end\n"
    m = milter(script={"E": [fm.chgheader(2, "Subject", "changed"), fm.cont()]})
    p = proxy(sections=[lua_section(tmp_path, lua), section(m)])
    c = client(p)
    c.greet()
    assert deliver(c).code == 250
    assert [v for k, v in one_conn(m).headers() if k == "Subject"] == ["from lua", "milter test"]
    want = b"Subject: from lua\r\n" + HEAD.replace(b"Subject: milter test", b"Subject: changed")
    assert delivered(recorder).data == stuff(want + b"\r\n" + TEXT)


@pytest.mark.parametrize("stage", ["mail", "rcpt", "eom"])
def test_chain_reject_by_first_stops_the_second(milter, recorder, proxy, client, stage):
    letter = LETTER[stage]
    a = milter(name="a", script={letter: [fm.replycode("550 5.7.1 a says no")]})
    b = milter(name="b")
    p = start(proxy, a, b)
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    if stage != "mail":
        r.expect(250)
        r = c.cmd("RCPT TO:<b@y.test>")
        if stage != "rcpt":
            r.expect(250)
            r = c.message(stuff(BODY) + b".\r\n")
    assert r.first == "550 5.7.1 a says no", r
    c.cmd("QUIT")
    ca, cb = one_conn(a), one_conn(b)
    quit_seen(a, ca)
    quit_seen(b, cb)
    assert letter in ca.letters()
    assert letter not in cb.letters()[2:], cb.letters()
    assert recorder.messages() == []


LUA_ACCEPT = """
function on_connect(conn) return smtp.accept() end
function on_helo(conn, name) return smtp.accept() end
function on_mail(tx, sender) return smtp.accept() end
function on_rcpt(tx, rcpt) return smtp.accept() end
"""


def test_commands_in_order_when_an_earlier_accept_skips_the_milter(milter, recorder, proxy, client,
                                                                    tmp_path):
    # A filter before the milter accepts every stage up to RCPT, so the
    # milter's hooks run first at DATA: it still gets connect, HELO, MAIL
    # and the recipients, in order, before the message.
    m = milter()
    p = proxy(sections=[lua_section(tmp_path, LUA_ACCEPT, "acceptor"), section(m)])
    c = client(p)
    c.greet("client.test")
    assert deliver(c, rcpts=("b@y.test", "c@y.test")).code == 250
    c.cmd("QUIT").expect(221)
    delivered(recorder)
    conn = one_conn(m)
    quit_seen(m, conn)
    assert conn.letters() == "OCHMRRT" + "L" * len(FIELDS) + "NBEQ", conn.letters()
    assert conn.first("H").fields == {"helo": "client.test"}
    assert [x.fields["args"][0] for x in conn.commands("R")] == ["<b@y.test>", "<c@y.test>"]


# ---- configuration errors -------------------------------------------------------


@pytest.mark.parametrize("keys,line_key,says", [
    ({}, None, "socket is required"),
    ({"socket": "tcp:127.0.0.1:8891"}, "socket", "expected inet:HOST:PORT"),
    ({"socket": "inet:127.0.0.1:0"}, "socket", "bad value"),
    ({"socket": "inet:127.0.0.1:99999"}, "socket", "bad value"),
    ({"socket": "unix:relative.sock"}, "socket", "absolute path"),
    ({"socket": "inet:8891@no-such-host.invalid"}, "socket", "no IPv4 address"),
    ({"socket": "inet:127.0.0.1:1", "timeout_eom": "0s"}, "timeout_eom", "expected 1ms to 1h"),
    ({"socket": "inet:127.0.0.1:1", "timeout_command": "soon"}, "timeout_command", "soon"),
    ({"socket": "inet:127.0.0.1:1", "macros": "connect: j; later: i"}, "macros", "STAGE one of"),
    ({"socket": "inet:127.0.0.1:1", "macros": "connect: {a b}"}, "macros", "bad macro name"),
    ({"socket": "inet:127.0.0.1:1", "quarantine_header": "X Bad"}, "quarantine_header",
     "a header field name"),
    ({"socket": "inet:127.0.0.1:1", "socket_typo": "x"}, "socket_typo", "unknown key"),
])
def test_bad_configuration_refused(recorder, tmp_path, keys, line_key, says):
    from kit.dialogue import config_line, refused

    path, log, out = refused(recorder, tmp_path, [("milter m", keys)])
    for text in (log, out):
        assert "[milter m]" in text and says in text, text
        if line_key is not None:
            assert f"{path}:{config_line(path, line_key)}:" in text, text


# ---- the real client: PROXY, STARTTLS ----------------------------------------------


@pytest.mark.parametrize("ip,port,family", [("2001:db8::7", 40001, "6"), ("192.0.2.7", 40002, "4")])
def test_connect_has_the_client_after_proxy(milter, tproxy, raw, recorder, ip, port, family):
    # A client behind HAProxy: the milter gets the address of the PROXY
    # header, not the load balancer's.
    from kit.haproxy import proxy_v1

    m = milter()
    p = tproxy(listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32",
               sections=[section(m)])
    c = raw(p.ports["pp"])
    c.send(proxy_v1(ip, port, "2001:db8::25" if ":" in ip else "127.0.0.1", 25))
    c.greet()
    assert deliver(c).code == 250
    conn = one_conn(m)
    assert m.wait_cmd("E", conn=conn)
    assert conn.first("C").fields == {"hostname": f"[{ip}]", "family": family, "port": port,
                                      "address": ip}
    assert bare(conn.first("C").macros["C"])["client_addr"] == ip
    assert bare(conn.first("C").macros["C"])["_"] == f"unknown [{ip}]"


def test_helo_again_after_starttls_with_the_tls_macros(milter, tproxy, raw, recorder, tls):
    from test_tls import starttls, tls_keys

    m = milter()
    p = tproxy(sections=[section(m)], **tls_keys(tls))
    c = raw(p)
    c.greet("before.test")
    assert starttls(c, tls.client_context()) == "TLSv1.3"
    c.ehlo("after.test")
    assert deliver(c).code == 250
    conn = one_conn(m)
    assert m.wait_cmd("E", conn=conn)
    helos = conn.commands("H")
    assert [h.fields["helo"] for h in helos] == ["before.test", "after.test"]
    assert "tls_version" not in bare(helos[0].macros.get("H", {}))
    after = bare(helos[1].macros["H"])
    assert after["tls_version"] == "TLSv1.3" and after["cipher"] == c.sock.cipher()[0], after
