"""metrics_listen: /metrics (Prometheus text), /healthz, /sessions and
portcullis -s (issue 17, items 1 and 2).

Every scrape is parsed with python3-prometheus-client's own parser, so the
output is the text format a Prometheus server reads. The counts after a
scripted mix of traffic are asserted exactly: each counter the issue names,
every label, and the octets against what the clients and the recording
backend really sent and received.
"""

import os
import pathlib
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import kit.proxy as kp
from kit.proxy import free_port, listening
from kit.smtpclient import RawClient
from test_tls import tls, tls_keys, tproxy  # noqa: F401 (fixtures)

VERDICT = kp.test_plugin("verdict")
BOUND = 10.0

MSG = b"From: <ok@x.test>\r\nTo: <b@y.test>\r\nSubject: metrics\r\n\r\nHello.\r\n.\r\n"
BARE_LF = b"From: <ok@x.test>\r\nSubject: smuggle\r\n\r\nline\n.\nMAIL FROM:<x@evil>\r\n.\r\n"

# Every family the endpoint serves, and the labels it may carry: bounded
# sets, never an address.
FAMILIES = {
    "portcullis_connections_accepted": set(),
    "portcullis_connections_refused": {"reason"},
    "portcullis_transactions": {"status"},
    "portcullis_recipients_accepted": set(),
    "portcullis_recipients_refused": {"by"},
    "portcullis_backend_connect_failures": set(),
    "portcullis_tls_handshakes": {"side"},
    "portcullis_tls_handshake_failures": {"side"},
    "portcullis_tls_resumed": set(),
    "portcullis_octets": {"peer", "direction"},
    "portcullis_smuggling_refused": {"kind"},
    "portcullis_reloads": {"result"},
    "portcullis_dns_failures": set(),
    "portcullis_sessions": set(),
    "portcullis_filter_calls_pending": set(),
    "portcullis_config_generation": set(),
    "portcullis_worker_deaths": set(),
    "portcullis_workers": set(),
    "portcullis_transaction_duration_seconds": {"le"},
    "portcullis_backend_reply_seconds": {"le"},
    "portcullis_filter_verdicts": {"filter", "stage", "action"},
    "portcullis_filter_failures": {"filter", "kind"},
    "portcullis_filter_duration_seconds": {"filter", "le"},
}
LABEL_VALUES = {
    "reason": {"max_connections", "max_connections_per_ip", "shutting_down", "proxy", "tls", "filter", "backend"},
    "status": {"sent", "rejected", "tempfailed", "dropped", "aborted"},
    "by": {"proxy", "backend"},
    "side": {"client", "backend"},
    "peer": {"client", "backend"},
    "direction": {"in", "out"},
    "kind": {"bare_lf", "bare_cr", "nul", "error", "timeout"},
    "result": {"ok", "failed"},
    "stage": {"connect", "helo", "mail", "rcpt", "data"},
    "action": {"continue", "accept", "reject", "tempfail", "drop", "disconnect"},
}


class Counting(RawClient):
    """A raw client that counts the octets it sent and received."""

    def __init__(self, port, **kw):
        super().__init__(port, **kw)
        self.sent = 0
        self.got = 0

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sent += len(data)
        super().send(data)

    def _fill(self, deadline):
        before = len(self.buf)
        try:
            super()._fill(deadline)
        finally:
            self.got += max(0, len(self.buf) - before)

    def quit(self):
        self.cmd("QUIT").expect(221)
        assert self.closed(timeout=BOUND)


def vsec(name, **keys):
    d = {"path": VERDICT}
    d.update(keys)
    return (f"plugin {name}", d)


def http_get(port, path, method="GET"):
    """(status, body) of one request to the endpoint."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=BOUND) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def scrape(port):
    """{(sample name, frozenset(labels)): value} of one /metrics scrape,
    after checking every family and label against the bounded sets."""
    status, text = http_get(port, "/metrics")
    assert status == 200, text
    out = {}
    seen = set()
    for fam in text_string_to_metric_families(text):
        assert fam.name in FAMILIES, f"unexpected family {fam.name}"
        assert fam.documentation, f"{fam.name} has no HELP"
        seen.add(fam.name)
        for s in fam.samples:
            labels = dict(s.labels)
            assert set(labels) <= FAMILIES[fam.name], (s.name, labels)
            for k, v in labels.items():
                if k in LABEL_VALUES:
                    assert v in LABEL_VALUES[k], (s.name, k, v)
                assert not re.match(r"^\d+\.\d+\.\d+\.\d+", v), f"an address in a label: {s}"
            out[(s.name, frozenset(labels.items()))] = s.value
    assert seen == set(FAMILIES), set(FAMILIES) - seen
    return out


def val(m, name, **labels):
    return m[(name, frozenset(labels.items()))]


def wait_metric(port, name, want, timeout=BOUND, **labels):
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(port)
        if m.get((name, frozenset(labels.items()))) == want or time.monotonic() > deadline:
            return m
        time.sleep(0.02)


def mproxy(proxy, **kw):
    port = free_port()
    p = proxy(metrics_listen=f"127.0.0.1:{port}", **kw)
    deadline = time.monotonic() + BOUND
    while not listening(port):
        assert time.monotonic() < deadline, p.log()
        time.sleep(0.01)
    p.metrics_port = port
    return p


def closed_silently(s):
    """The peer closed (FIN or RST) without sending anything."""
    try:
        got = s.recv(100)
    except ConnectionResetError:
        got = b""
    s.close()
    return got == b""


def counters(m):
    """Only the counters and gauges, without histograms."""
    return {k: v for k, v in m.items() if not re.search(r"_(bucket|sum|count)$", k[0])}


# ---- the scripted mix -------------------------------------------------------


def test_mix_exact_counts(proxy, recorder):
    """Sent, refused by a filter, refused by the backend, a filter timeout,
    a smuggling attempt, a good and a failed reload: every counter exact."""
    recorder.reply("RCPT", "550 5.1.1 No such user", match="nouser@")
    p = mproxy(
        proxy,
        filter_timeout="300ms",
        sections=[
            vsec("gate", stages="mail", action="reject", match="spam@"),
            vsec("slow", stages="rcpt", never="yes", match="slow@"),
        ],
    )
    m0 = scrape(p.metrics_port)
    assert all(v == 0 for k, v in counters(m0).items() if k[0] != "portcullis_config_generation")
    assert val(m0, "portcullis_config_generation") == 1
    clients = []

    # A: one recipient refused by the backend, the message sent.
    a = Counting(p.port)
    clients.append(a)
    a.greet()
    a.cmd("MAIL FROM:<ok@x.test>").expect(250)
    a.cmd("RCPT TO:<b@y.test>").expect(250)
    a.cmd("RCPT TO:<nouser@y.test>").expect(550)
    a.cmd("DATA").expect(354)
    a.send(MSG)
    a.reply().expect(250)
    a.quit()

    # B: the sender refused by the filter "gate".
    b = Counting(p.port)
    clients.append(b)
    b.greet()
    b.cmd("MAIL FROM:<spam@x.test>").expect(550)
    b.quit()

    # C: a recipient whose filter never answers (timeout: on_error
    # tempfail), another accepted, then a message with bare LFs.
    c = Counting(p.port)
    clients.append(c)
    c.greet()
    c.cmd("MAIL FROM:<ok@x.test>").expect(250)
    c.cmd("RCPT TO:<slow@y.test>", timeout=BOUND).expect(451)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    c.cmd("DATA").expect(354)
    c.send(BARE_LF)
    c.reply().expect(550)
    c.quit()

    m = wait_metric(p.metrics_port, "portcullis_sessions", 0)
    assert val(m, "portcullis_sessions") == 0
    assert val(m, "portcullis_filter_calls_pending") == 0
    assert val(m, "portcullis_connections_accepted_total") == 3
    for reason in LABEL_VALUES["reason"]:
        assert val(m, "portcullis_connections_refused_total", reason=reason) == 0
    assert val(m, "portcullis_transactions_total", status="sent") == 1
    assert val(m, "portcullis_transactions_total", status="rejected") == 2
    for st in ("tempfailed", "dropped", "aborted"):
        assert val(m, "portcullis_transactions_total", status=st) == 0
    assert val(m, "portcullis_recipients_accepted_total") == 2
    assert val(m, "portcullis_recipients_refused_total", by="proxy") == 1
    assert val(m, "portcullis_recipients_refused_total", by="backend") == 1
    assert val(m, "portcullis_backend_connect_failures_total") == 0
    for side in ("client", "backend"):
        assert val(m, "portcullis_tls_handshakes_total", side=side) == 0
        assert val(m, "portcullis_tls_handshake_failures_total", side=side) == 0
    assert val(m, "portcullis_smuggling_refused_total", kind="bare_lf") == 1
    assert val(m, "portcullis_smuggling_refused_total", kind="bare_cr") == 0
    assert val(m, "portcullis_smuggling_refused_total", kind="nul") == 0
    assert val(m, "portcullis_dns_failures_total") == 0

    # Verdicts: the test plugin hooks every stage and answers continue
    # where it does not act. gate runs first; slow never sees B's MAIL
    # (gate refused it), nor C's message (refused before the hooks).
    v = {(dict(k[1])["filter"], dict(k[1])["stage"], dict(k[1])["action"]): x
         for k, x in m.items() if k[0] == "portcullis_filter_verdicts_total"}
    assert v == {
        ("gate", "connect", "continue"): 3, ("gate", "helo", "continue"): 3,
        ("gate", "mail", "continue"): 2, ("gate", "mail", "reject"): 1,
        ("gate", "rcpt", "continue"): 4, ("gate", "data", "continue"): 1,
        ("slow", "connect", "continue"): 3, ("slow", "helo", "continue"): 3,
        ("slow", "mail", "continue"): 2, ("slow", "rcpt", "continue"): 3,
        ("slow", "data", "continue"): 1,
    }
    assert val(m, "portcullis_filter_failures_total", filter="gate", kind="error") == 0
    assert val(m, "portcullis_filter_failures_total", filter="gate", kind="timeout") == 0
    assert val(m, "portcullis_filter_failures_total", filter="slow", kind="error") == 0
    assert val(m, "portcullis_filter_failures_total", filter="slow", kind="timeout") == 1
    assert val(m, "portcullis_filter_duration_seconds_count", filter="gate") == 14
    assert val(m, "portcullis_filter_duration_seconds_count", filter="slow") == 13
    # The timeout took filter_timeout: in the buckets above 0.25 s only.
    assert val(m, "portcullis_filter_duration_seconds_bucket", filter="slow", le="0.25") == 12
    assert val(m, "portcullis_filter_duration_seconds_bucket", filter="slow", le="+Inf") == 13
    assert val(m, "portcullis_filter_duration_seconds_sum", filter="slow") >= 0.3
    assert val(m, "portcullis_transaction_duration_seconds_count") == 3

    # Octets, against both ends' own counts.
    assert val(m, "portcullis_octets_total", peer="client", direction="in") == sum(x.sent for x in clients)
    assert val(m, "portcullis_octets_total", peer="client", direction="out") == sum(x.got for x in clients)
    conns = recorder.connections
    assert val(m, "portcullis_octets_total", peer="backend", direction="out") == sum(len(x.raw) for x in conns)
    # The backend's 221 to our QUIT is never read: the leg is closed at once.
    bye = len(b"221 2.0.0 Bye\r\n")
    quits = sum(1 for x in conns if x.commands and x.commands[-1].upper() == "QUIT")
    assert val(m, "portcullis_octets_total", peer="backend", direction="in") == sum(x.sent for x in conns) - bye * quits
    # Each backend reply to a command is one observation (banners are not).
    replies = sum(len(x.commands) - (1 if x.commands and x.commands[-1].upper() == "QUIT" else 0) for x in conns)
    replies += sum(1 for x in conns for t in x.transactions if t.eod_code is not None)
    assert val(m, "portcullis_backend_reply_seconds_count") == replies

    # Reloads: one good, one broken.
    p.signal(signal.SIGHUP)
    m = wait_metric(p.metrics_port, "portcullis_reloads_total", 1, result="ok")
    assert val(m, "portcullis_reloads_total", result="ok") == 1
    assert val(m, "portcullis_config_generation") == 2
    cfg = pathlib.Path(p.config_path)
    text = cfg.read_text()
    cfg.write_text(text + "\nmax_recipients = many\n")
    p.signal(signal.SIGHUP)
    m = wait_metric(p.metrics_port, "portcullis_reloads_total", 1, result="failed")
    assert val(m, "portcullis_reloads_total", result="failed") == 1
    assert val(m, "portcullis_reloads_total", result="ok") == 1
    assert val(m, "portcullis_config_generation") == 2
    cfg.write_text(text)


def test_filter_error_counted(proxy, recorder):
    """A filter that fails: counted as an error, never as a verdict."""
    p = mproxy(proxy, sections=[vsec("broken", stages="helo", action="fail")])
    c = RawClient(p.port)
    c.banner().expect(220)
    c.cmd("EHLO client.test").expect(451)
    c.cmd("HELO client.test").expect(451)
    c.close()
    m = wait_metric(p.metrics_port, "portcullis_sessions", 0)
    assert val(m, "portcullis_filter_failures_total", filter="broken", kind="error") == 2
    assert val(m, "portcullis_filter_failures_total", filter="broken", kind="timeout") == 0
    assert val(m, "portcullis_filter_duration_seconds_count", filter="broken") == 3
    # Its only verdict is connect's continue: a failure decides nothing.
    v = [(k, x) for k, x in m.items() if k[0] == "portcullis_filter_verdicts_total"]
    assert v == [(("portcullis_filter_verdicts_total",
                   frozenset({("filter", "broken"), ("stage", "connect"), ("action", "continue")})), 1)]


def test_disconnect_verdict_counted(proxy, recorder):
    p = mproxy(proxy, sections=[vsec("bouncer", stages="mail", action="disconnect")])
    c = RawClient(p.port)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(421)
    assert c.closed(timeout=BOUND)
    m = wait_metric(p.metrics_port, "portcullis_sessions", 0)
    assert val(m, "portcullis_filter_verdicts_total", filter="bouncer", stage="mail", action="disconnect") == 1
    assert val(m, "portcullis_transactions_total", status="aborted") == 1


# ---- refusals --------------------------------------------------------------


def test_refused_by_limits(proxy, recorder):
    p = mproxy(proxy, max_connections=2, max_connections_per_ip=1)
    a = RawClient(p.port)
    a.banner().expect(220)
    b = RawClient(p.port)
    b.banner().expect(421)
    b.close()
    m = wait_metric(p.metrics_port, "portcullis_connections_refused_total", 1, reason="max_connections_per_ip")
    assert val(m, "portcullis_connections_accepted_total") == 1
    assert val(m, "portcullis_connections_refused_total", reason="max_connections") == 0
    a.close()
    q = mproxy(proxy, max_connections=1)
    a = RawClient(q.port)
    a.banner().expect(220)
    b = RawClient(q.port)
    b.banner().expect(421)
    m = wait_metric(q.metrics_port, "portcullis_connections_refused_total", 1, reason="max_connections")
    assert val(m, "portcullis_connections_refused_total", reason="max_connections_per_ip") == 0
    a.close()
    b.close()


def test_refused_by_filter_and_backend(proxy, recorder):
    p = mproxy(proxy, sections=[vsec("door", stages="connect", action="reject")])
    c = RawClient(p.port)
    c.banner().expect(554)
    c.cmd("QUIT")
    m = wait_metric(p.metrics_port, "portcullis_connections_refused_total", 1, reason="filter")
    assert val(m, "portcullis_filter_verdicts_total", filter="door", stage="connect", action="reject") == 1
    c.close()

    q = mproxy(proxy, backend=f"127.0.0.1:{kp.closed_port()}")
    c = RawClient(q.port)
    c.banner().expect(421)
    m = wait_metric(q.metrics_port, "portcullis_connections_refused_total", 1, reason="backend")
    assert val(m, "portcullis_backend_connect_failures_total") == 1
    assert val(m, "portcullis_connections_accepted_total") == 1
    c.close()


def test_refused_proxy_protocol(tproxy, recorder):
    """An untrusted sender and a bad header on a PROXY listener."""
    mport = free_port()
    p = tproxy(listen_opts="proxy_protocol", proxy_trusted="10.0.0.0/8",
               metrics_listen=f"127.0.0.1:{mport}")
    s = socket.create_connection(("127.0.0.1", p.port), timeout=BOUND)
    assert closed_silently(s)
    m = wait_metric(mport, "portcullis_connections_refused_total", 1, reason="proxy")
    assert val(m, "portcullis_connections_accepted_total") == 0

    mport2 = free_port()
    q = tproxy(listen_opts="proxy_protocol", proxy_trusted="127.0.0.0/8",
               metrics_listen=f"127.0.0.1:{mport2}")
    s = socket.create_connection(("127.0.0.1", q.port), timeout=BOUND)
    s.sendall(b"PROXY TCP9 nonsense\r\n")
    assert closed_silently(s)
    m = wait_metric(mport2, "portcullis_connections_refused_total", 1, reason="proxy")
    assert val(m, "portcullis_connections_accepted_total") == 0


# ---- TLS -------------------------------------------------------------------


def test_tls_handshakes(proxy, recorder, tls):
    p = mproxy(proxy, tls_cert=tls.proxy.cert, tls_key=tls.proxy.key)
    ctx = tls.client_context()
    session = None
    for _ in range(2):  # the second resumes the first's session
        c = RawClient(p.port)
        c.greet()
        c.cmd("STARTTLS").expect(220)
        c.sock = ctx.wrap_socket(c.sock, server_hostname="proxy.test", session=session)
        c.ehlo()  # TLS 1.3: the ticket is read by now
        session = c.sock.session
        c.cmd("QUIT").expect(221)
        c.close()
    d = RawClient(p.port)
    d.greet()
    d.cmd("STARTTLS").expect(220)
    d.send(b"this is not a ClientHello\r\n" * 4)
    assert d.closed(timeout=BOUND)
    d.close()
    m = wait_metric(p.metrics_port, "portcullis_sessions", 0)
    assert val(m, "portcullis_tls_handshakes_total", side="client") == 2
    assert val(m, "portcullis_tls_resumed_total") == 1
    assert val(m, "portcullis_tls_handshake_failures_total", side="client") == 1
    # A STARTTLS that fails ends a session that was let in: not a refusal.
    assert val(m, "portcullis_connections_refused_total", reason="tls") == 0


def test_smtps_handshake_failure_is_a_refusal(tproxy, recorder, tls):
    mport = free_port()
    p = tproxy(listen_opts="tls", metrics_listen=f"127.0.0.1:{mport}", **tls_keys(tls))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=BOUND)
    s.sendall(b"EHLO plain.test\r\n" * 8)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    s.close()
    m = wait_metric(mport, "portcullis_connections_refused_total", 1, reason="tls")
    assert val(m, "portcullis_tls_handshake_failures_total", side="client") == 1
    assert val(m, "portcullis_tls_handshakes_total", side="client") == 0


# ---- the live view and the gauges -----------------------------------------


def test_live_view_and_pending_gauge(proxy, recorder):
    p = mproxy(proxy, filter_timeout="30s",
               sections=[vsec("scanner", stages="rcpt", never="yes")])
    c = RawClient(p.port)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.send("RCPT TO:<b@y.test>\r\n")
    m = wait_metric(p.metrics_port, "portcullis_filter_calls_pending", 1)
    assert val(m, "portcullis_filter_calls_pending") == 1
    assert val(m, "portcullis_sessions") == 1
    status, body = http_get(p.metrics_port, "/sessions")
    assert status == 200
    lines = body.splitlines()
    assert lines[0] == "# 1 session(s)"
    assert lines[1].split() == ["ID", "CLIENT", "STATE", "AGE", "TX", "TLS", "WAITING"]
    row = lines[2].split()
    assert len(lines) == 3
    assert re.fullmatch(r"[0-9A-F]{10}", row[0])
    assert row[1] == f"127.0.0.1:{c.sock.getsockname()[1]}"
    assert row[2] == "command"
    assert re.fullmatch(r"\d+\.\ds", row[3])
    assert row[4] == "1" and row[5] == "-" and row[6] == "filter:scanner"
    # portcullis -s asks the daemon this configuration describes.
    r = subprocess.run([kp.binary_path(), "-s", "-c", p.config_path],
                       capture_output=True, text=True, timeout=BOUND)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "# 1 session(s)" and out[2].split()[6] == "filter:scanner"
    # A reset ends the session at once, and the call with it (a FIN would
    # wait for the answer: a half-closed client may still read it).
    c.reset()
    m = wait_metric(p.metrics_port, "portcullis_sessions", 0)
    assert val(m, "portcullis_filter_calls_pending") == 0
    status, body = http_get(p.metrics_port, "/sessions")
    assert body.splitlines()[0] == "# 0 session(s)"


def test_live_view_waiting_for_backend(proxy, recorder):
    recorder.stall("MAIL")
    p = mproxy(proxy, backend_timeout="30s")
    c = RawClient(p.port)
    c.greet()
    c.send("MAIL FROM:<a@x.test>\r\n")
    deadline = time.monotonic() + BOUND
    while True:
        body = http_get(p.metrics_port, "/sessions")[1]
        rows = body.splitlines()[2:]
        if rows and rows[0].split()[6] == "backend":
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.02)
    c.close()


def test_minus_s_without_endpoint(proxy, recorder, tmp_path):
    cfg = tmp_path / "p.conf"
    cfg.write_text(f"listen = 127.0.0.1:{free_port()}\nbackend = {recorder.address}\n")
    r = subprocess.run([kp.binary_path(), "-s", "-c", str(cfg)], capture_output=True, text=True, timeout=BOUND)
    assert r.returncode == 1
    assert "no metrics_listen" in r.stderr
    port = free_port()
    cfg.write_text(cfg.read_text() + f"metrics_listen = 127.0.0.1:{port}\n")
    r = subprocess.run([kp.binary_path(), "-s", "-c", str(cfg)], capture_output=True, text=True, timeout=BOUND)
    assert r.returncode == 1
    assert "cannot connect to metrics_listen 127.0.0.1:%d" % port in r.stderr
    assert "Connection refused" in r.stderr
    # -s with -t or -T is a usage error.
    r = subprocess.run([kp.binary_path(), "-s", "-T", "-c", str(cfg)], capture_output=True, text=True, timeout=BOUND)
    assert r.returncode == 2


# ---- the endpoint itself ----------------------------------------------------


def test_off_by_default(proxy, recorder):
    p = proxy()
    assert "metrics_listen" not in p.log()
    rc, out, _ = kp.run("-T", "-c", p.config_path)
    assert rc == 0 and "#metrics_listen =" in out.splitlines()


def test_healthz_and_draining(proxy, recorder):
    p = mproxy(proxy, shutdown_timeout="30s")
    assert http_get(p.metrics_port, "/healthz") == (200, "ok\n")
    c = RawClient(p.port)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    p.signal(signal.SIGTERM)
    p.wait_log(r"no new connections", timeout=BOUND)
    assert http_get(p.metrics_port, "/healthz") == (503, "draining\n")
    c.cmd("RSET").expect(250)
    c.close()
    assert p.wait(BOUND) == 0


def test_endpoint_refuses_what_it_does_not_serve(proxy, recorder):
    p = mproxy(proxy)
    assert http_get(p.metrics_port, "/nothing")[0] == 404
    assert http_get(p.metrics_port, "/metrics", method="POST")[0] in (405, 501)
    assert http_get(p.metrics_port, "/metrics", method="HEAD")[0] == 200
    # Headers past the bound: refused, and the daemon goes on.
    s = socket.create_connection(("127.0.0.1", p.metrics_port), timeout=BOUND)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    head = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
            head += d
    except OSError:
        pass
    s.close()
    assert not head.startswith(b"HTTP/1.1 200"), head[:80]
    # A scraper that connects and says nothing does not stop the others.
    idle = socket.create_connection(("127.0.0.1", p.metrics_port), timeout=BOUND)
    idle.sendall(b"GET /metr")
    assert http_get(p.metrics_port, "/healthz") == (200, "ok\n")
    # Nor does it stop SMTP.
    c = RawClient(p.port)
    c.greet()
    c.close()
    idle.close()


def test_reload_moves_the_endpoint(proxy, recorder):
    p = mproxy(proxy)
    old = p.metrics_port
    cfg = pathlib.Path(p.config_path)
    new = free_port()
    cfg.write_text(cfg.read_text().replace(f"metrics_listen = 127.0.0.1:{old}", f"metrics_listen = 127.0.0.1:{new}"))
    p.signal(signal.SIGHUP)
    deadline = time.monotonic() + BOUND
    while not listening(new):
        assert time.monotonic() < deadline, p.log()
        time.sleep(0.02)
    assert val(scrape(new), "portcullis_reloads_total", result="ok") == 1
    assert not listening(old)
    # A port someone else holds: the reload fails, the endpoint stays.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    cfg.write_text(cfg.read_text().replace(f"metrics_listen = 127.0.0.1:{new}", f"metrics_listen = 127.0.0.1:{busy}"))
    p.signal(signal.SIGHUP)
    assert p.wait_log(r"SIGHUP: metrics_listen 127\.0\.0\.1:%d: .*; keeping the running configuration" % busy,
                      timeout=BOUND), p.log()
    m = scrape(new)
    assert val(m, "portcullis_reloads_total", result="failed") == 1
    assert val(m, "portcullis_config_generation") == 2
    holder.close()


def test_start_fails_on_a_taken_port(proxy, recorder, tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    cfg = tmp_path / "p.conf"
    cfg.write_text(f"listen = 127.0.0.1:{free_port()}\nbackend = {recorder.address}\n"
                   f"metrics_listen = 127.0.0.1:{busy}\n")
    r = subprocess.run([kp.binary_path(), "-c", str(cfg)], capture_output=True, text=True, timeout=BOUND)
    assert r.returncode == 1
    assert f"metrics_listen 127.0.0.1:{busy}: Address already in use" in r.stderr
    holder.close()


def test_bad_metrics_listen_values(tmp_path, recorder):
    for bad, why in (("nowhere", "expected host:port"), ("127.0.0.1:http", "expected host:port"),
                     ("127.0.0.1:70000", "expected host:port")):
        cfg = tmp_path / "p.conf"
        cfg.write_text(f"listen = 127.0.0.1:{free_port()}\nbackend = {recorder.address}\nmetrics_listen = {bad}\n")
        r = subprocess.run([kp.binary_path(), "-c", str(cfg)], capture_output=True, text=True, timeout=BOUND)
        assert r.returncode == 1, (bad, r.stderr)
        assert f"p.conf:3: metrics_listen: bad value \"{bad}\": {why}" in r.stderr, (bad, r.stderr)


# ---- the sample Grafana dashboard -------------------------------------------


def test_grafana_dashboard_matches_the_endpoint(proxy, recorder):
    """etc/grafana-portcullis.json: valid JSON, and every series its queries
    name is one the endpoint serves, with the labels they group by."""
    import json
    path = os.path.join(kp.REPO, "etc", "grafana-portcullis.json")
    with open(path) as f:
        dash = json.load(f)
    p = mproxy(proxy, sections=[vsec("gate", stages="mail", action="reject")])
    c = RawClient(p.port)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(550)
    c.close()
    m = wait_metric(p.metrics_port, "portcullis_sessions", 0)
    labels = {}
    for name, ls in m:
        labels.setdefault(name, set()).update(k for k, _ in ls)
    exprs = [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
    assert len(exprs) >= 14
    used = set()
    for e in exprs:
        for name in re.findall(r"\b(portcullis_[a-z_]+)\b", e):
            assert name in labels, f"{name} is not served ({e})"
            used.add(name)
            for by in re.findall(r"by \(([^)]*)\)", e):
                for lab in (x.strip() for x in by.split(",")):
                    assert lab in labels[name] | {"le"}, f"{name} has no label {lab} ({e})"
        for lab, value in re.findall(r'(\w+)!?=~?"([^"$]*)"', e):
            if lab in LABEL_VALUES:
                assert value in LABEL_VALUES[lab], e
    families = {n.rsplit("_bucket", 1)[0] for n in used}
    # every family the issue names has a panel
    for fam in ("portcullis_connections_refused_total", "portcullis_transactions_total",
                "portcullis_recipients_refused_total", "portcullis_filter_verdicts_total",
                "portcullis_filter_failures_total", "portcullis_backend_connect_failures_total",
                "portcullis_tls_handshake_failures_total", "portcullis_octets_total",
                "portcullis_smuggling_refused_total", "portcullis_reloads_total",
                "portcullis_sessions", "portcullis_filter_calls_pending", "portcullis_config_generation",
                "portcullis_transaction_duration_seconds", "portcullis_filter_duration_seconds",
                "portcullis_backend_reply_seconds", "portcullis_dns_failures_total"):
        assert fam in families, fam
