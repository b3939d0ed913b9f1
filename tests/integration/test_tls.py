"""TLS on both legs (issue 7): STARTTLS towards the client, implicit TLS
listeners, TLS to the backend, the configuration checks.

Certificates come from kit.tlskit (a test CA, "proxy.test" for the proxy,
"mx.postfix.test" for Postfix, an expired one and a wrong-name one), made
once per test run with the openssl CLI. Clients: the raw client with the
socket wrapped by Python's ssl after "220 2.0.0 Ready to start TLS",
smtplib (starttls, SMTP_SSL), swaks and `openssl s_client`.

The other issue-7 test files (test_auth.py, test_xclient.py,
test_proxyproto.py) import the helpers and fixtures from here: tproxy (a
proxy with extra listeners), starttls(), s_client(), swaks().
"""

import os
import signal
import shutil
import smtplib
import ssl
import subprocess
import time

import pytest

import kit.proxy as kp
from kit import tlskit
from kit.messages import stuff
from kit.postfix import DOMAIN, Postfix, postfix_fixtures, settle  # noqa: F401  (settle: imported from here)
from kit.proxy import Proxy, ProxyError, listening, free_port, run_check, stop_all
from kit.smtpclient import RawClient, ReplyTimeout, reply_lines_caps

HOST = "proxy.test"
READY = "220 2.0.0 Ready to start TLS"
NEED_TLS = "530 5.7.0 Must issue a STARTTLS command first"
NEED_HELO = "503 5.5.1 Error: send HELO/EHLO first"
TLS_ACTIVE = "503 5.5.1 Error: TLS already active"
NO_ARGS = "501 5.5.4 Syntax error: no arguments allowed"
NOT_IMPL = "502 5.5.1 Error: command not implemented"
BOUND = 10.0

BODY = b"From: <a@client.test>\r\nTo: <b@rcpt.test>\r\nSubject: tls test\r\n\r\nHello over TLS.\r\n.dot\r\n"


# ---- fixtures and helpers (imported by the other issue-7 test files) ------------------


@pytest.fixture(scope="session")
def tls():
    return tlskit.shared()


def tls_keys(kit, **more):
    d = {"tls_cert": kit.proxy.cert, "tls_key": kit.proxy.key}
    d.update(more)
    return d


@pytest.fixture
def tproxy(request, recorder, tmp_path):
    """Like conftest's proxy, with listener options: tproxy(listen_opts="tls",
    listeners={"pp": "proxy_protocol"}, **config). p.port is the first
    listener (with listen_opts), p.ports[name] the others."""
    started = []

    def start(backend=None, sections=None, listen_opts="", listeners=None, **settings):
        n = len(started)
        p = Proxy(tmp_path / (f"tproxy{n}" if n else "tproxy"), backend or recorder.address,
                  sections=sections, **settings)
        listen = [f"{p.host}:{p.port} {listen_opts}".rstrip()]
        p.ports = {"main": p.port}
        for name, opts in (listeners or {}).items():
            port = free_port()
            p.ports[name] = port
            listen.append(f"{p.host}:{port} {opts}".rstrip())
        p.settings["listen"] = listen
        p.start()  # on failure it raises, and there is nothing left to stop
        started.append(p)
        deadline = time.monotonic() + 10
        for port in p.ports.values():
            while not listening(port):
                assert time.monotonic() < deadline, f"port {port} never listened:\n{p.log()}"
                time.sleep(0.01)
        return p

    yield start

    failed = getattr(request.node, "rep_call", None)
    problems = stop_all(started, failed is not None and failed.failed)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def raw(tproxy):
    """raw(port, **kw) -> RawClient, closed at the end of the test."""
    made = []

    def connect(port, **kw):
        c = RawClient(port.port if hasattr(port, "port") else port, **kw)
        made.append(c)
        return c

    yield connect
    for c in made:
        c.close()


def wrap(c, ctx, hostname=HOST):
    """Do the TLS handshake on the raw client's socket (it keeps working
    as before, encrypted). Returns the protocol ("TLSv1.3")."""
    c.sock.settimeout(c.timeout)
    c.sock = ctx.wrap_socket(c.sock, server_hostname=hostname)
    return c.sock.version()


def starttls(c, ctx, hostname=HOST):
    """STARTTLS (must get exactly READY, nothing more), then the handshake."""
    r = c.cmd("STARTTLS")
    assert r.first == READY, r
    assert not c.buf, f"bytes after the 220 before the handshake: {bytes(c.buf)!r}"
    return wrap(c, ctx, hostname)


def caps_of(reply):
    return reply_lines_caps(reply)


def s_client(*args, input="QUIT\n", timeout=30):
    """openssl s_client ARGS -crlf -brief -ign_eof with input on stdin: (rc, stdout, stderr)."""
    r = subprocess.run(["openssl", "s_client", *args, "-crlf", "-brief", "-ign_eof"], input=input,
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def swaks(*args, timeout=60):
    """swaks ARGS: (rc, everything it printed)."""
    r = subprocess.run(["swaks", "--timeout", "20", *args], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def send_message(c, sender="a@client.test", rcpt="b@rcpt.test", body=BODY):
    c.envelope(f"{sender}", f"{rcpt}")
    return c.message(stuff(body) + b".\r\n")


def summary(p, n=1):
    s = p.wait_summaries(n, timeout=BOUND)
    assert len(s) >= n, p.log()
    return s[n - 1]


def config_line(p, key, startswith=None):
    """The line number of `key = ...` in p's configuration file."""
    with open(p.config_path) as f:
        for i, ln in enumerate(f, 1):
            if ln.startswith(key + " =") and (startswith is None or ln.split("=", 1)[1].strip().startswith(startswith)):
                return i
    raise AssertionError(f"{key} not in {p.config_path}")


# ---- STARTTLS ----------------------------------------------------------------------


def test_no_starttls_without_certificate(tproxy, raw, recorder):
    recorder.configure(extra_caps=["STARTTLS"])  # the backend's own offer is never passed on
    p = tproxy()
    c = raw(p)
    caps = caps_of(c.greet())
    assert "STARTTLS" not in caps
    assert c.cmd("STARTTLS").first == NOT_IMPL
    c.cmd("NOOP").expect(250)  # still plaintext, still talking
    assert "STARTTLS" not in recorder.verbs()


def test_starttls_advertised_then_session_reset(tproxy, raw, recorder, tls):
    p = tproxy(**tls_keys(tls))
    c = raw(p)
    caps = caps_of(c.greet("before.test"))
    assert "STARTTLS" in caps and caps["STARTTLS"] == ""
    assert starttls(c, tls.client_context()) == "TLSv1.3"
    # The session was reset: EHLO again first.
    assert c.cmd("MAIL FROM:<a@client.test>").first == NEED_HELO
    caps = caps_of(c.ehlo("after.test"))
    assert "STARTTLS" not in caps  # never once TLS is up
    assert c.cmd("STARTTLS").first == TLS_ACTIVE
    send_message(c).expect(250)
    c.cmd("QUIT").expect(221)
    [t] = recorder.wait_for_transactions(1)
    assert t.data == stuff(BODY)
    assert "STARTTLS" not in recorder.verbs()  # the backend leg stays as configured (plain)
    s = summary(p)
    assert s["tls"] == "TLSv1.3" and s["status"] == "sent"
    assert s["helo"] == "after.test"
    assert "user" not in s


def test_plaintext_summary_has_no_tls(tproxy, raw, recorder, tls):
    p = tproxy(**tls_keys(tls))
    c = raw(p)
    c.greet()
    send_message(c).expect(250)
    assert summary(p)["tls"] == "no"


def test_starttls_with_argument(tproxy, raw, tls):
    p = tproxy(**tls_keys(tls))
    c = raw(p)
    c.greet()
    assert c.cmd("STARTTLS now").first == NO_ARGS
    # Still plaintext and usable, and a proper STARTTLS still works.
    c.cmd("NOOP").expect(250)
    starttls(c, tls.client_context())
    c.ehlo()


def test_starttls_injection_rset_never_answered(tproxy, raw, recorder, tls):
    """CVE-2011-0411: what follows STARTTLS in the same write is dropped."""
    p = tproxy(**tls_keys(tls))
    c = raw(p)
    c.greet()
    c.send(b"STARTTLS\r\nRSET\r\n")
    assert c.reply().first == READY
    # Nothing else in plaintext: not the RSET's 250.
    with pytest.raises(ReplyTimeout):
        c.reply(timeout=0.5)
    assert not c.buf
    wrap(c, tls.client_context())
    # The first reply after the handshake is the one to our EHLO (multi-line,
    # our name first), not "250 2.0.0 Ok" for the RSET.
    r = c.cmd("EHLO inject.test")
    assert r.code == 250 and r.lines[0] == HOST, r
    assert len(r.lines) > 1, r
    c.cmd("NOOP").expect(250)
    assert c.cmd("QUIT").code == 221


def test_starttls_injection_mail_discarded(tproxy, raw, recorder, tls):
    p = tproxy(**tls_keys(tls))
    c = raw(p)
    c.greet()
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@inject.test>\r\n")
    assert c.reply().first == READY
    wrap(c, tls.client_context())
    c.ehlo("after.test")
    # No transaction came from the injected MAIL.
    assert c.cmd("RCPT TO:<b@rcpt.test>").code == 503
    send_message(c, sender="good@client.test").expect(250)
    c.cmd("QUIT").expect(221)
    assert not any("evil@inject.test" in x for x in recorder.commands())
    assert b"inject.test" not in recorder.raw()


def test_ehlo_and_starttls_pipelined(tproxy, raw, recorder, tls):
    """RFC 3207: STARTTLS may end a pipelined group; both are answered."""
    p = tproxy(**tls_keys(tls))
    c = raw(p)
    c.banner().expect(220)
    c.send(b"EHLO piped.test\r\nSTARTTLS\r\n")
    assert "STARTTLS" in caps_of(c.reply().expect(250))
    assert c.reply().first == READY
    assert not c.buf
    wrap(c, tls.client_context())
    c.ehlo()
    send_message(c).expect(250)


def test_tls_required(tproxy, raw, recorder, tls):
    p = tproxy(**tls_keys(tls, tls_required="yes"))
    c = raw(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@client.test>").first == NEED_TLS
    starttls(c, tls.client_context())
    c.ehlo()
    send_message(c).expect(250)
    assert len(recorder.wait_for_transactions(1)) == 1
    # The refused MAIL never reached the backend.
    assert [v for v in recorder.verbs() if v == "MAIL"] == ["MAIL"]
    assert summary(p)["tls"] == "TLSv1.3"


def test_smtplib_starttls(tproxy, recorder, tls):
    p = tproxy(**tls_keys(tls))
    with smtplib.SMTP(p.host, p.port, timeout=BOUND) as s:
        s.ehlo("smtplib.test")
        assert s.has_extn("starttls")
        code, _ = s.starttls(context=tls.client_context())
        assert code == 220
        s.ehlo("smtplib.test")
        assert not s.has_extn("starttls")
        assert s.sendmail("a@client.test", ["b@rcpt.test"], BODY) == {}
    [t] = recorder.wait_for_transactions(1)
    assert t.data == stuff(BODY)
    assert summary(p)["tls"] == "TLSv1.3"


def test_tls12_client_and_ciphers(tproxy, raw, recorder, tls):
    p = tproxy(**tls_keys(tls, tls_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
    c = raw(p)
    c.greet()
    ctx = tls.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    assert starttls(c, ctx) == "TLSv1.2"
    assert c.sock.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    c.ehlo()
    send_message(c).expect(250)
    assert summary(p)["tls"] == "TLSv1.2"


def test_swaks_starttls(tproxy, recorder, tls):
    p = tproxy(**tls_keys(tls))
    rc, out = swaks("-s", p.host, "-p", str(p.port), "--tls", "--tls-verify", "--tls-ca-path", tls.ca,
                    "--helo", "swaks.test", "-f", "a@client.test", "-t", "b@rcpt.test", "--body", "over tls")
    assert rc == 0, out
    assert "<-  220 2.0.0 Ready to start TLS" in out
    assert "=== TLS started with cipher TLSv1.3" in out, out
    assert len(recorder.wait_for_transactions(1)) == 1
    assert summary(p)["tls"] == "TLSv1.3"


def test_openssl_s_client_starttls(tproxy, recorder, tls):
    p = tproxy(**tls_keys(tls))
    rc, out, err = s_client("-starttls", "smtp", "-connect", f"{p.host}:{p.port}", "-name", "sclient.test",
                            "-CAfile", tls.ca, "-verify_return_error", "-verify_hostname", HOST,
                            input="EHLO again.test\nQUIT\n")
    assert rc == 0, (out, err)
    assert "Protocol version: TLSv1.3" in err
    assert "Verification: OK" in err
    assert f"250-{HOST}" in out and "STARTTLS" not in out
    assert "221 2.0.0 Bye" in out


def test_failed_handshake_closes(tproxy, raw, recorder, tls):
    p = tproxy(**tls_keys(tls))
    c = raw(p)
    c.greet()
    c.cmd("STARTTLS").expect(220)
    c.send(b"this is not a ClientHello\r\n" * 4)
    assert c.closed(timeout=BOUND)
    assert b"250" not in bytes(c.buf)
    # Logged, and the proxy goes on serving others.
    assert p.wait_log(r"(?i)(handshake|tls).*(fail|error)|(fail|error).*(handshake|tls)", timeout=BOUND), p.log()
    d = raw(p)
    d.greet()
    starttls(d, tls.client_context())
    d.ehlo()


def test_client_refusing_our_certificate(tproxy, raw, recorder, tls):
    """A client that does not trust us aborts the handshake; nothing is relayed."""
    p = tproxy(**tls_keys(tls))
    c = raw(p)
    c.greet()
    with pytest.raises(ssl.SSLCertVerificationError):
        starttls(c, ssl.create_default_context(), hostname=HOST)  # the system store only
    d = raw(p)
    d.greet()
    with pytest.raises(ssl.SSLCertVerificationError):
        starttls(d, tls.client_context(), hostname="other.test")  # wrong name
    assert recorder.transactions() == []


def test_min_protocol_default_refuses_tls11(tproxy, recorder, tls):
    p = tproxy(**tls_keys(tls))
    base = ["-starttls", "smtp", "-connect", f"{p.host}:{p.port}", "-CAfile", tls.ca, "-verify_return_error"]
    # SECLEVEL=0: this client could do TLS 1.1 (OpenSSL 3 allows it only there);
    # the proxy must not.
    rc, out, err = s_client(*base, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0, (out, err)
    assert "Protocol version: TLSv1.1" not in err
    rc, out, err = s_client(*base, "-tls1_2")
    assert rc == 0 and "Protocol version: TLSv1.2" in err, (out, err)


def test_min_protocol_tls13(tproxy, raw, recorder, tls):
    p = tproxy(**tls_keys(tls, tls_min_protocol="TLSv1.3"))
    c = raw(p)
    c.greet()
    with pytest.raises(ssl.SSLError):
        starttls(c, tls.client_context(maximum=ssl.TLSVersion.TLSv1_2))
    base = ["-starttls", "smtp", "-connect", f"{p.host}:{p.port}", "-CAfile", tls.ca, "-verify_return_error"]
    rc, out, err = s_client(*base, "-tls1_2")
    assert rc != 0, (out, err)
    rc, out, err = s_client(*base, "-tls1_3")
    assert rc == 0 and "Protocol version: TLSv1.3" in err, (out, err)


# ---- default suites: Mozilla "intermediate" (issue 17) ------------------------------
# The RSA certificate, so that the RSA suites (ECDHE-RSA, DHE-RSA, static
# RSA) are ones the server could pick: only the suite list refuses them.


def _rsa_keys(tls, **more):
    d = {"tls_cert": tls.proxy_rsa.cert, "tls_key": tls.proxy_rsa.key}
    d.update(more)
    return d


def _s_client_suite(p, tls, suite, proto="-tls1_2"):
    """A STARTTLS handshake offering one TLS 1.2 suite: (ok, what was negotiated)."""
    rc, out, err = s_client("-starttls", "smtp", "-connect", f"{p.host}:{p.port}", "-CAfile", tls.ca,
                            "-verify_return_error", proto, "-cipher", suite)
    ok = rc == 0 and "Protocol version: TLSv1.2" in err
    assert ok or "Ciphersuite" not in err, (out, err)
    return ok, err


@pytest.mark.parametrize("suite,ok", [
    ("ECDHE-RSA-AES128-GCM-SHA256", True),
    ("ECDHE-RSA-AES256-GCM-SHA384", True),
    ("ECDHE-RSA-CHACHA20-POLY1305", True),
    ("DHE-RSA-AES128-GCM-SHA256", True),
    ("AES128-SHA", False),                # static RSA and CBC
    ("ECDHE-RSA-AES128-SHA", False),      # CBC (LUCKY13)
    ("ECDHE-RSA-AES128-SHA256", False),   # CBC
    ("AES128-GCM-SHA256", False),         # static RSA: no forward secrecy
    ("DHE-RSA-AES128-SHA256", False),     # CBC
])
def test_default_suites_intermediate(tproxy, tls, suite, ok):
    p = tproxy(**_rsa_keys(tls))
    got, err = _s_client_suite(p, tls, suite)
    assert got == ok, err
    if ok:
        assert f"Ciphersuite: {suite}" in err, err


def test_default_suites_ecdsa_and_tls13(tproxy, raw, recorder, tls):
    """With the EC certificate: ECDHE-ECDSA AEAD yes, ECDHE-ECDSA CBC no;
    TLS 1.3 with OpenSSL's suites; TLS 1.1 refused."""
    p = tproxy(**tls_keys(tls))
    assert _s_client_suite(p, tls, "ECDHE-ECDSA-AES256-GCM-SHA384")[0]
    assert not _s_client_suite(p, tls, "ECDHE-ECDSA-AES128-SHA")[0]
    base = ["-starttls", "smtp", "-connect", f"{p.host}:{p.port}", "-CAfile", tls.ca, "-verify_return_error"]
    for suite in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"):
        rc, out, err = s_client(*base, "-tls1_3", "-ciphersuites", suite)
        assert rc == 0 and "Protocol version: TLSv1.3" in err and f"Ciphersuite: {suite}" in err, (out, err)
    rc, out, err = s_client(*base, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0 and "Protocol version: TLSv1.1" not in err, (out, err)
    # A whole transaction over the default TLS 1.2 list.
    c = raw(p)
    c.greet()
    ctx = tls.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    assert starttls(c, ctx) == "TLSv1.2"
    name = c.sock.cipher()[0]
    assert name.startswith("ECDHE-ECDSA-") and ("GCM" in name or "CHACHA20" in name), name
    c.ehlo()
    send_message(c).expect(250)
    assert len(recorder.wait_for_transactions(1)) == 1


def test_tls_ciphers_brings_cbc_back(tproxy, tls):
    """tls_ciphers replaces the TLS 1.2 list: a CBC suite named there works
    again; TLS 1.3 keeps its own suites."""
    p = tproxy(**_rsa_keys(tls, tls_ciphers="ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA:AES128-SHA"))
    for suite in ("ECDHE-RSA-AES128-SHA", "AES128-SHA", "ECDHE-RSA-AES128-GCM-SHA256"):
        ok, err = _s_client_suite(p, tls, suite)
        assert ok and f"Ciphersuite: {suite}" in err, err
    assert not _s_client_suite(p, tls, "ECDHE-RSA-AES256-SHA")[0]  # not in the list
    rc, out, err = s_client("-starttls", "smtp", "-connect", f"{p.host}:{p.port}", "-CAfile", tls.ca,
                            "-verify_return_error", "-tls1_3")
    assert rc == 0 and "Protocol version: TLSv1.3" in err, (out, err)


def test_tls_ciphers_unusable_is_a_config_error(tmp_path, tls):
    rc, out, where = _check(tmp_path, tls, "tls_ciphers", "nociph", **tls_keys(tls, tls_ciphers="NOSUCHSUITE"))
    assert rc != 0 and where in out and "tls_ciphers: no usable cipher" in out, out


def _served_chain_length(p, tls):
    """How many certificates the proxy sends (openssl s_client -showcerts,
    without -brief, which would hide them)."""
    r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect", f"{p.host}:{p.port}",
                        "-CAfile", tls.ca, "-verify_return_error", "-showcerts"],
                       input="QUIT\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "Verify return code: 0 (ok)" in r.stdout, r.stdout
    return r.stdout.count("-----BEGIN CERTIFICATE-----")


def test_chain_in_cert_file_and_chain_file(tproxy, tls):
    a = tproxy(tls_cert=tls.proxy.fullchain, tls_key=tls.proxy.key)
    b = tproxy(**tls_keys(tls, tls_chain=tls.ca))
    c = tproxy(**tls_keys(tls))
    # -showcerts prints what the server sent: the CA too when it was given.
    assert _served_chain_length(a, tls) == 2
    assert _served_chain_length(b, tls) == 2
    assert _served_chain_length(c, tls) == 1


def test_lua_sees_tls(tproxy, raw, recorder, tls, tmp_path):
    from test_lua import lua_section, wait_reports

    script = """
    function on_helo(conn, name)
      T("helo", {name = name, tls = conn.tls, user = conn.auth_user})
    end
    function on_mail(tx, sender)
      T("mail", {tls = tx.conn.tls})
    end
    """
    p = tproxy(sections=[lua_section(tmp_path, script, name="x")], **tls_keys(tls))
    c = raw(p)
    c.greet("plain.test")
    starttls(c, tls.client_context())
    c.ehlo("secure.test")
    send_message(c).expect(250)
    helos = wait_reports(p, "helo", 2, section="x")
    assert helos[0] == {"name": "plain.test"}  # tls and auth_user nil
    assert helos[1] == {"name": "secure.test", "tls": "TLSv1.3"}
    assert wait_reports(p, "mail", 1, section="x")[0] == {"tls": "TLSv1.3"}


# ---- implicit TLS ------------------------------------------------------------------


def test_implicit_tls_smtplib(tproxy, recorder, tls):
    p = tproxy(listen_opts="tls", **tls_keys(tls))
    with smtplib.SMTP_SSL(p.host, p.port, timeout=BOUND, context=tls.client_context()) as s:
        code, _ = s.ehlo("ssl.test")
        assert code == 250
        assert not s.has_extn("starttls")
        assert s.sock.version() == "TLSv1.3"
        assert s.sendmail("a@client.test", ["b@rcpt.test"], BODY) == {}
    [t] = recorder.wait_for_transactions(1)
    assert t.data == stuff(BODY)
    s = summary(p)
    assert s["tls"] == "TLSv1.3" and s["status"] == "sent"


def test_implicit_tls_raw_starttls_refused(tproxy, raw, tls):
    p = tproxy(listen_opts="tls", **tls_keys(tls))
    c = raw(p)
    wrap(c, tls.client_context())
    assert c.banner().code == 220
    caps = caps_of(c.ehlo())
    assert "STARTTLS" not in caps
    assert c.cmd("STARTTLS").first == TLS_ACTIVE


def test_implicit_tls_openssl_s_client(tproxy, recorder, tls):
    """s_client as an SMTP client that waits for the banner before QUIT."""
    p = tproxy(listen_opts="tls", **tls_keys(tls))
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"{p.host}:{p.port}", "-CAfile", tls.ca,
                             "-verify_return_error", "-verify_hostname", HOST, "-servername", HOST,
                             "-crlf", "-brief", "-ign_eof"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        proc.stdin.write("QUIT\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (banner, out, err)
    assert "Verification: OK" in err and "Protocol version: TLSv1.3" in err
    assert banner.startswith(f"220 {HOST}"), banner
    assert "221 2.0.0 Bye" in out


def test_implicit_tls_openssl_s_client_pregreet(tproxy, recorder, tls):
    """A TLS client that talks before the banner is cut off like any other."""
    recorder.rule("BANNER", "220 slow.test ESMTP", delay=1.0)  # the client speaks first
    p = tproxy(listen_opts="tls", **tls_keys(tls))
    rc, out, err = s_client("-connect", f"{p.host}:{p.port}", "-CAfile", tls.ca, "-verify_return_error",
                            "-verify_hostname", HOST, "-servername", HOST,
                            input="MAIL FROM:<early@x.test>\n")
    assert "Verification: OK" in err
    assert out.startswith("554 5.5.0"), out
    assert p.wait_log(r"sent \d+ octets before the greeting")
    assert not any("early@" in x for x in recorder.commands())


def test_implicit_tls_swaks(tproxy, recorder, tls):
    p = tproxy(listen_opts="tls", **tls_keys(tls))
    rc, out = swaks("-s", p.host, "-p", str(p.port), "--tlsc", "--tls-verify", "--tls-ca-path", tls.ca,
                    "-f", "a@client.test", "-t", "b@rcpt.test", "--body", "implicit")
    assert rc == 0, out
    assert len(recorder.wait_for_transactions(1)) == 1


def test_implicit_tls_plaintext_client_gets_no_banner(tproxy, raw, recorder, tls):
    p = tproxy(listen_opts="tls", listeners={"plain": ""}, **tls_keys(tls))
    c = raw(p)
    with pytest.raises(ReplyTimeout):
        c.banner(timeout=1.0)  # the server waits for a ClientHello
    assert not c.buf
    c.send(b"EHLO plain.test\r\n")
    assert c.closed(timeout=BOUND)
    assert b"220" not in bytes(c.buf)
    # The plain listener of the same proxy offers STARTTLS as usual.
    d = raw(p.ports["plain"])
    assert "STARTTLS" in caps_of(d.greet())


# ---- configuration -----------------------------------------------------------------


def _check(tmp_path, tls, key, name, **settings):
    """Write a configuration, run -t: (rc, output, expected 'file:line:')."""
    p = Proxy(tmp_path / name, "127.0.0.1:25", **settings)
    p.write_config()
    rc, out = run_check(p.config_path)
    return rc, out, f"{p.config_path}:{config_line(p, key)}:"


def test_config_valid(tmp_path, tls):
    p = Proxy(tmp_path / "ok", "127.0.0.1:25", tls_chain=tls.ca, tls_min_protocol="TLSv1.3",
              tls_ciphers="HIGH", tls_required="yes", auth_plaintext="no", proxy_trusted="127.0.0.1/32 ::1/128",
              backend_tls="opportunistic", backend_tls_ca=tls.ca, backend_tls_verify="yes",
              backend_tls_name="mx.postfix.test", backend_xclient="yes", **tls_keys(tls))
    p.settings["listen"] = [f"127.0.0.1:{p.port}", f"127.0.0.1:{free_port()} tls",
                            f"127.0.0.1:{free_port()} proxy_protocol",
                            f"127.0.0.1:{free_port()} tls proxy_protocol"]
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc == 0, out


@pytest.mark.parametrize("case", [
    "missing_cert", "missing_key", "key_mismatch", "cert_not_pem", "unreadable_key", "bad_min_protocol",
    "bad_required", "bad_backend_tls", "bad_trusted", "missing_chain",
])
def test_config_errors_name_file_and_line(tmp_path, tls, case):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    ro = tmp_path / "key-unreadable.pem"
    shutil.copy(tls.proxy.key, ro)
    os.chmod(ro, 0)
    key, settings = {
        "missing_cert": ("tls_cert", tls_keys(tls, tls_cert=str(tmp_path / "nope.pem"))),
        "missing_key": ("tls_key", tls_keys(tls, tls_key=str(tmp_path / "nope.key"))),
        "key_mismatch": ("tls_key", tls_keys(tls, tls_key=tls.other_key)),
        "cert_not_pem": ("tls_cert", tls_keys(tls, tls_cert=str(junk))),
        "unreadable_key": ("tls_key", tls_keys(tls, tls_key=str(ro))),
        "bad_min_protocol": ("tls_min_protocol", tls_keys(tls, tls_min_protocol="TLSv1.1")),
        "bad_required": ("tls_required", tls_keys(tls, tls_required="maybe")),
        "bad_backend_tls": ("backend_tls", {"backend_tls": "sometimes"}),
        "bad_trusted": ("proxy_trusted", {"proxy_trusted": "10.0.0.0/33"}),
        "missing_chain": ("tls_chain", tls_keys(tls, tls_chain=str(tmp_path / "nochain.pem"))),
    }[case]
    if case == "unreadable_key" and os.geteuid() == 0:
        # root reads a mode-0 file anyway: use a directory instead, unreadable as a file
        os.unlink(ro)
        os.mkdir(ro)
    rc, out, where = _check(tmp_path, tls, key, case, **settings)
    assert rc != 0, out
    if case == "key_mismatch":
        # the key's line or the certificate's: either names the pair
        p = Proxy(tmp_path / case, "127.0.0.1:25", **settings)
        alt = f"{p.config_path}:{config_line(p, 'tls_cert')}:"
        assert where in out or alt in out, out
    else:
        assert where in out, out


def test_config_tls_listener_needs_cert(tmp_path):
    p = Proxy(tmp_path / "l", "127.0.0.1:25")
    p.settings["listen"] = f"127.0.0.1:{p.port} tls"
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc != 0
    assert f"{p.config_path}:{config_line(p, 'listen')}:" in out, out


def test_config_bad_listener_option(tmp_path):
    p = Proxy(tmp_path / "l", "127.0.0.1:25")
    p.settings["listen"] = f"127.0.0.1:{p.port} starttls"
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc != 0
    assert f"{p.config_path}:{config_line(p, 'listen')}:" in out, out


def test_daemon_refuses_to_start_with_mismatched_key(tmp_path, tls):
    p = Proxy(tmp_path / "d", "127.0.0.1:25", **tls_keys(tls, tls_key=tls.other_key))
    with pytest.raises(ProxyError) as e:
        p.start()
    p.stop()
    assert p.config_path + ":" in str(e.value)


def test_certificate_reload_on_sighup(tproxy, raw, tls, tmp_path):
    cert = tmp_path / "live.pem"
    key = tmp_path / "live.key"
    shutil.copy(tls.proxy.cert, cert)
    shutil.copy(tls.proxy.key, key)
    p = tproxy(tls_cert=str(cert), tls_key=str(key))
    c = raw(p)
    c.greet()
    starttls(c, tls.client_context(), hostname=HOST)
    c.close()
    shutil.copy(tls.wrong_name.cert, cert)
    shutil.copy(tls.wrong_name.key, key)
    p.signal(signal.SIGHUP)
    deadline = time.monotonic() + BOUND
    while True:
        d = raw(p)
        d.greet()
        try:
            starttls(d, tls.client_context(), hostname="wrong.test")
            break
        except ssl.SSLCertVerificationError:
            assert time.monotonic() < deadline, "still the old certificate after SIGHUP:\n" + p.log()
            d.close()
            time.sleep(0.1)
    d.ehlo()


def test_sighup_with_broken_certificate_keeps_the_old_one(tproxy, raw, tls, tmp_path):
    cert = tmp_path / "live.pem"
    key = tmp_path / "live.key"
    shutil.copy(tls.proxy.cert, cert)
    shutil.copy(tls.proxy.key, key)
    p = tproxy(tls_cert=str(cert), tls_key=str(key))
    cert.write_text("garbage\n")
    p.signal(signal.SIGHUP)
    p.wait_log(r"(?i)reload|sighup|signal 1", timeout=BOUND)
    time.sleep(0.3)
    assert p.alive(), p.log()
    c = raw(p)
    c.greet()
    starttls(c, tls.client_context(), hostname=HOST)  # still the good certificate
    c.ehlo()


def test_implicit_tls_with_tls_required(tproxy, raw, recorder, tls):
    p = tproxy(listen_opts="tls", **tls_keys(tls, tls_required="yes"))
    c = raw(p)
    wrap(c, tls.client_context())
    c.greet()
    send_message(c).expect(250)


# ---- TLS to the backend ------------------------------------------------------------

_tls_postfix, tls_postfix = postfix_fixtures("tls_postfix", tls=tlskit.shared().backend)


def _tls_lines_since(pf, n):
    return [ln for ln in pf.log()[n:].splitlines() if "TLS connection established" in ln]


def test_backend_tls_required_verified(tproxy, tls_postfix, tls):
    n = len(tls_postfix.log())
    p = tproxy(backend=tls_postfix.addr, backend_tls="required", backend_tls_ca=tls.ca,
               backend_tls_verify="yes", backend_tls_name="mx.postfix.test")
    msg = b"Subject: to postfix over tls\r\n\r\nhello\r\n"
    with smtplib.SMTP(p.host, p.port, timeout=BOUND) as s:
        s.ehlo("client.test")
        assert not s.has_extn("starttls")  # the proxy has no certificate of its own
        assert s.sendmail("a@client.test", ["alice@" + DOMAIN], msg) == {}
    [m] = tls_postfix.wait_messages(1)
    assert m.content() == msg.replace(b"\r\n", b"\n")
    rcv = m.received()
    assert "(using TLSv1.3" in rcv and "with ESMTPS" in rcv, rcv
    assert _tls_lines_since(tls_postfix, n), tls_postfix.log()[n:]
    assert summary(p)["tls"] == "no"  # the summary's tls= is the client's leg


def test_backend_tls_default_name_is_backend_host(tproxy, tls_postfix, tls):
    """backend = 127.0.0.1:port: the name checked is 127.0.0.1, which the
    certificate has as an IP subjectAltName."""
    p = tproxy(backend=tls_postfix.addr, backend_tls="required", backend_tls_ca=tls.ca,
               backend_tls_verify="yes")
    with smtplib.SMTP(p.host, p.port, timeout=BOUND) as s:
        assert s.sendmail("a@client.test", ["alice@" + DOMAIN], b"Subject: x\r\n\r\nx\r\n") == {}
    [m] = tls_postfix.wait_messages(1)
    assert "(using TLS" in m.received()


def test_backend_tls_required_wrong_name_421(tproxy, raw, tls_postfix, tls):
    n = len(tls_postfix.log())
    p = tproxy(backend=tls_postfix.addr, backend_tls="required", backend_tls_ca=tls.ca,
               backend_tls_verify="yes", backend_tls_name="wrong.test")
    c = raw(p)
    c.banner()
    r = c.cmd("EHLO client.test")
    assert r.code == 421 and r.enhanced is not None and r.enhanced.startswith("4."), r
    assert c.closed(timeout=BOUND)
    assert p.wait_log(r"(?i)verif|certificate", timeout=BOUND), p.log()
    assert not tls_postfix.new_messages()
    assert "TLS connection established" not in tls_postfix.log()[n:]


def test_backend_tls_required_untrusted_ca_421(tproxy, raw, tls_postfix, tls):
    p = tproxy(backend=tls_postfix.addr, backend_tls="required", backend_tls_verify="yes",
               backend_tls_name="mx.postfix.test")  # system store: our test CA is not in it
    c = raw(p)
    c.banner()
    assert c.cmd("EHLO client.test").code == 421
    assert c.closed(timeout=BOUND)


def test_backend_tls_verify_no_accepts_wrong_name(tproxy, tls_postfix, tls):
    p = tproxy(backend=tls_postfix.addr, backend_tls="required", backend_tls_verify="no",
               backend_tls_name="wrong.test")
    with smtplib.SMTP(p.host, p.port, timeout=BOUND) as s:
        assert s.sendmail("a@client.test", ["alice@" + DOMAIN], b"Subject: x\r\n\r\nx\r\n") == {}
    [m] = tls_postfix.wait_messages(1)
    assert "(using TLS" in m.received()


def test_backend_tls_opportunistic_uses_tls_when_offered(tproxy, tls_postfix, tls):
    n = len(tls_postfix.log())
    p = tproxy(backend=tls_postfix.addr, backend_tls="opportunistic", backend_tls_ca=tls.ca,
               backend_tls_name="mx.postfix.test")
    with smtplib.SMTP(p.host, p.port, timeout=BOUND) as s:
        assert s.sendmail("a@client.test", ["alice@" + DOMAIN], b"Subject: x\r\n\r\nx\r\n") == {}
    [m] = tls_postfix.wait_messages(1)
    assert "(using TLS" in m.received()
    assert _tls_lines_since(tls_postfix, n)


def test_backend_tls_opportunistic_plaintext_without_starttls(tproxy, raw, recorder, tls):
    p = tproxy(backend_tls="opportunistic", backend_tls_ca=tls.ca)
    c = raw(p)
    c.greet()
    send_message(c).expect(250)
    assert len(recorder.wait_for_transactions(1)) == 1
    assert "STARTTLS" not in recorder.verbs()


def test_backend_tls_opportunistic_failed_handshake_falls_back(tproxy, raw, recorder, tls):
    """The backend offers STARTTLS, says 220, and the handshake fails: with
    opportunistic TLS the proxy opens a new plaintext leg (Postfix's "may")
    and the client never notices. STARTTLS is not tried a second time."""
    recorder.configure(extra_caps=["STARTTLS"])
    recorder.reply("STARTTLS", "220 2.0.0 Ready to start TLS")
    p = tproxy(backend_tls="opportunistic", backend_tls_ca=tls.ca)
    c = raw(p)
    c.greet()
    send_message(c).expect(250)
    [t] = recorder.wait_for_transactions(1)
    assert t.data == stuff(BODY)
    assert recorder.verbs().count("STARTTLS") == 1
    assert len(recorder.conns()) == 2
    assert recorder.conns()[1].commands[0].startswith("EHLO ")
    assert p.wait_log(r"backend TLS: .*reconnecting without TLS", timeout=BOUND)


def test_backend_tls_required_failed_handshake_421(tproxy, raw, recorder, tls):
    recorder.configure(extra_caps=["STARTTLS"])
    recorder.reply("STARTTLS", "220 2.0.0 Ready to start TLS")
    p = tproxy(backend_tls="required", backend_tls_ca=tls.ca)
    c = raw(p)
    c.banner().expect(220)
    assert c.cmd("EHLO client.test").code == 421
    assert c.closed(timeout=BOUND)
    assert len(recorder.conns()) == 1
    assert "MAIL" not in recorder.verbs()


def test_backend_tls_required_without_starttls_421(tproxy, raw, recorder, tls):
    p = tproxy(backend_tls="required", backend_tls_ca=tls.ca)
    c = raw(p)
    c.banner().expect(220)
    r = c.cmd("EHLO client.test")
    assert r.code == 421, r
    assert c.closed(timeout=BOUND)
    assert "MAIL" not in recorder.verbs()
    assert p.wait_log(r"(?i)starttls", timeout=BOUND)


def test_backend_tls_required_expired_certificate_421(tproxy, raw, tls):
    with Postfix(tls=tls.expired) as pf:
        p = tproxy(backend=pf.addr, backend_tls="required", backend_tls_ca=tls.ca,
                   backend_tls_name=HOST)  # the expired certificate is for proxy.test
        c = raw(p)
        c.banner()
        assert c.cmd("EHLO client.test").code == 421
        assert c.closed(timeout=BOUND)
        assert pf.count() == 0


def test_filters_see_tls_protocol_and_cipher(tproxy, recorder, tls):
    """PC_TLS and PC_TLS_CIPHER (plugin ABI 2): after STARTTLS a filter reads
    the protocol and the cipher suite the client negotiated."""
    p = tproxy(**tls_keys(tls), sections=[("plugin f", {"path": kp.test_plugin("fields")})])
    with smtplib.SMTP(p.host, p.port, timeout=BOUND) as s:
        s.ehlo("smtplib.test")
        s.starttls(context=tls.client_context())
        cipher = s.sock.cipher()[0]
        s.ehlo("smtplib.test")
        assert s.sendmail("a@client.test", ["b@rcpt.test"], BODY) == {}
    [m] = p.wait_log(r"fields data: [^\n]*tls_cipher=(\S+)", timeout=BOUND)
    assert m.group(1) == cipher, p.log()
