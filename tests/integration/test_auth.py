"""AUTH passthrough (issue 7) in front of a real Postfix with SASL through a
private Dovecot (kit.postfix: Postfix(sasl=True), users alice/secret and
bob/hunter2).

What Postfix says is the reference: its 235, 535 and 501 replies reach the
client word for word, its log and Received header show who logged in, and the
proxy's log names the user but never the password (in clear or base64).
The AUTH rules the proxy keeps itself (before TLS, in a transaction, twice,
with no AUTH at the backend) are checked against the recording backend too.
"""

import base64
import smtplib

import pytest

from kit.messages import stuff
from kit.postfix import DOMAIN, Postfix, postfix_fixtures
from kit.smtpclient import ConnectionClosed
from test_tls import (  # noqa: F401  (fixtures)
    BOUND,
    NEED_TLS,
    caps_of,
    raw,
    send_message,
    starttls,
    summary,
    swaks,
    tls,
    tls_keys,
    tproxy,
)

RCPT = "alice@" + DOMAIN
NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"
IN_TX = "503 5.5.1 Error: MAIL transaction in progress"
ALREADY = "503 5.5.1 Error: already authenticated"
# The spec's "auth: user=alice mechanism=PLAIN result=235"; the client's address may come first.
AUTH_LOG = r"auth: (?:client=\S+ )?"


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain(user, pw, authzid=""):
    return b64(f"{authzid}\0{user}\0{pw}")


def secrets(user, pw):
    """Every spelling of the credentials that must never be logged."""
    return [pw, b64(pw), plain(user, pw), b64(f"\0{user}\0{pw}")]

_postfix, postfix = postfix_fixtures(sasl=True)


def direct(postfix, *lines):
    """What Postfix itself answers to these lines after EHLO (plaintext,
    Postfix allows it): the last reply as (code, text)."""
    with smtplib.SMTP(postfix.host, postfix.port, timeout=BOUND) as s:
        s.ehlo("direct.test")
        r = None
        for ln in lines:
            r = s.docmd(ln)
        return r


def auth_proxy(tproxy, postfix, tls, **more):
    return tproxy(backend=postfix.addr, **tls_keys(tls, **more))


def no_secrets(p, user, pw):
    log = p.log()
    for s in secrets(user, pw):
        assert s not in log, f"{s!r} in the proxy's log:\n{log}"


def tls_session(raw, p, tls, helo="client.test"):
    c = raw(p)
    c.greet(helo)
    starttls(c, tls.client_context())
    caps = caps_of(c.ehlo(helo))
    return c, caps


# ---- through to Postfix ------------------------------------------------------------


def test_auth_offered_only_after_tls(tproxy, raw, postfix, tls):
    p = auth_proxy(tproxy, postfix, tls)
    c = raw(p)
    caps = caps_of(c.greet())
    assert "AUTH" not in caps and "STARTTLS" in caps
    assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).first == NEED_TLS
    assert c.cmd("AUTH LOGIN").first == NEED_TLS
    starttls(c, tls.client_context())
    caps = caps_of(c.ehlo())
    # Exactly as Postfix offered it.
    assert caps["AUTH"] == "PLAIN LOGIN", caps
    assert "sasl_username" not in postfix.since()
    no_secrets(p, "alice", "secret")


def test_swaks_auth_plain_over_starttls(tproxy, postfix, tls):
    p = auth_proxy(tproxy, postfix, tls)
    rc, out = swaks("-s", p.host, "-p", str(p.port), "--tls", "--tls-verify", "--tls-ca-path", tls.ca,
                    "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "secret",
                    "--helo", "swaks-auth.test", "-f", "alice@client.test", "-t", RCPT, "--body", "authed")
    assert rc == 0, out
    assert "235 2.7.0 Authentication successful" in out
    [m] = postfix.wait_messages(1)
    assert "(Authenticated sender: alice)" in m.received(), m.received()
    assert "sasl_method=PLAIN, sasl_username=alice" in postfix.since()
    s = summary(p)
    assert s["user"] == "alice" and s["tls"] == "TLSv1.3" and s["status"] == "sent"
    assert p.wait_log(AUTH_LOG + r"user=alice mechanism=PLAIN result=235", timeout=BOUND)
    no_secrets(p, "alice", "secret")


def test_swaks_auth_login_over_starttls(tproxy, postfix, tls):
    p = auth_proxy(tproxy, postfix, tls)
    rc, out = swaks("-s", p.host, "-p", str(p.port), "--tls", "--tls-ca-path", tls.ca,
                    "--auth", "LOGIN", "--auth-user", "bob", "--auth-password", "hunter2",
                    "-f", "bob@client.test", "-t", RCPT, "--body", "login")
    assert rc == 0, out
    assert "235 2.7.0 Authentication successful" in out
    [m] = postfix.wait_messages(1)
    assert "(Authenticated sender: bob)" in m.received()
    assert "sasl_method=LOGIN, sasl_username=bob" in postfix.since()
    assert summary(p)["user"] == "bob"
    assert p.wait_log(AUTH_LOG + r"user=bob mechanism=LOGIN result=235", timeout=BOUND)
    no_secrets(p, "bob", "hunter2")


def test_smtplib_login_implicit_tls(tproxy, postfix, tls):
    p = tproxy(backend=postfix.addr, listen_opts="tls", **tls_keys(tls))
    msg = b"Subject: smtplib auth\r\n\r\nhi\r\n"
    with smtplib.SMTP_SSL(p.host, p.port, timeout=BOUND, context=tls.client_context()) as s:
        s.ehlo("smtplib.test")
        assert "PLAIN" in s.esmtp_features["auth"]
        assert s.login("alice", "secret")[0] == 235
        assert s.sendmail("alice@client.test", [RCPT], msg) == {}
    [m] = postfix.wait_messages(1)
    assert m.content() == msg.replace(b"\r\n", b"\n")
    assert "(Authenticated sender: alice)" in m.received()
    assert summary(p)["user"] == "alice"
    no_secrets(p, "alice", "secret")


def test_wrong_password_gets_postfixs_535(tproxy, raw, postfix, tls):
    want = direct(postfix, "AUTH PLAIN " + plain("alice", "wrong"))
    assert want[0] == 535, want
    p = auth_proxy(tproxy, postfix, tls)
    c, _ = tls_session(raw, p, tls)
    r = c.cmd("AUTH PLAIN " + plain("alice", "wrong"))
    assert (r.code, "\n".join(r.lines).encode()) == want
    # Not logged in: the summary has no user; a right password still works.
    c.cmd("AUTH PLAIN " + plain("alice", "secret")).expect(235)
    send_message(c, rcpt=RCPT).expect(250)
    assert summary(p)["user"] == "alice"
    assert p.wait_log(AUTH_LOG + r"user=alice mechanism=PLAIN result=535", timeout=BOUND)
    no_secrets(p, "alice", "wrong")
    no_secrets(p, "alice", "secret")


def test_wrong_password_smtplib(tproxy, postfix, tls):
    p = auth_proxy(tproxy, postfix, tls)
    with smtplib.SMTP(p.host, p.port, timeout=BOUND) as s:
        s.starttls(context=tls.client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("bob", "not-hunter2")
        assert e.value.smtp_code == 535
        assert s.mail("bob@client.test")[0] == 250
        assert s.rcpt(RCPT)[0] == 250
        assert s.data(b"Subject: x\r\n\r\nx\r\n")[0] == 250
    [m] = postfix.wait_messages(1)
    assert "Authenticated sender" not in m.received()
    assert "user" not in summary(p)
    no_secrets(p, "bob", "not-hunter2")


def test_plain_without_initial_response(tproxy, raw, postfix, tls):
    p = auth_proxy(tproxy, postfix, tls)
    c, _ = tls_session(raw, p, tls)
    r = c.cmd("AUTH PLAIN")
    assert r.code == 334, r
    c.cmd(plain("alice", "secret")).expect(235)
    assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).first == ALREADY
    send_message(c, rcpt=RCPT).expect(250)
    assert summary(p)["user"] == "alice"
    no_secrets(p, "alice", "secret")


def test_login_dialogue_relayed(tproxy, raw, postfix, tls):
    p = auth_proxy(tproxy, postfix, tls)
    c, _ = tls_session(raw, p, tls)
    r = c.cmd("AUTH LOGIN")
    assert r.first == "334 VXNlcm5hbWU6", r  # "Username:", Postfix's challenge as is
    r = c.cmd(b64("bob"))
    assert r.first == "334 UGFzc3dvcmQ6", r  # "Password:"
    c.cmd(b64("hunter2")).expect(235)
    send_message(c, rcpt=RCPT).expect(250)
    assert summary(p)["user"] == "bob"
    assert p.wait_log(AUTH_LOG + r"user=bob mechanism=LOGIN result=235", timeout=BOUND)
    no_secrets(p, "bob", "hunter2")


def test_login_with_initial_response(tproxy, raw, postfix, tls):
    p = auth_proxy(tproxy, postfix, tls)
    c, _ = tls_session(raw, p, tls)
    r = c.cmd("AUTH LOGIN " + b64("alice"))
    assert r.first == "334 UGFzc3dvcmQ6", r
    c.cmd(b64("secret")).expect(235)
    send_message(c, rcpt=RCPT).expect(250)
    assert summary(p)["user"] == "alice"


def test_cancel_with_star(tproxy, raw, postfix, tls):
    with smtplib.SMTP(postfix.host, postfix.port, timeout=BOUND) as s:
        s.ehlo("direct.test")
        s.docmd("AUTH LOGIN")
        want = s.docmd("*")
    assert want[0] == 501, want
    p = auth_proxy(tproxy, postfix, tls)
    c, _ = tls_session(raw, p, tls)
    c.cmd("AUTH LOGIN").expect(334)
    r = c.cmd("*")
    assert (r.code, "\n".join(r.lines).encode()) == want
    # Not authenticated; the session goes on.
    c.cmd("NOOP").expect(250)
    send_message(c, rcpt=RCPT).expect(250)
    assert "user" not in summary(p)


def test_auth_in_transaction_refused(tproxy, raw, postfix, tls):
    p = auth_proxy(tproxy, postfix, tls)
    c, _ = tls_session(raw, p, tls)
    c.cmd("MAIL FROM:<a@client.test>").expect(250)
    assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).first == IN_TX
    c.cmd("RCPT TO:<%s>" % RCPT).expect(250)
    c.message(stuff(b"Subject: x\r\n\r\nx\r\n") + b".\r\n").expect(250)
    assert "sasl_username" not in postfix.since()


def test_authzid_in_plain(tproxy, raw, postfix, tls):
    """PLAIN with an authorization identity: the user recorded is the authcid
    or the authzid (both are alice here, which Postfix/Dovecot accept)."""
    p = auth_proxy(tproxy, postfix, tls)
    c, _ = tls_session(raw, p, tls)
    c.cmd("AUTH PLAIN " + plain("alice", "secret", authzid="alice")).expect(235)
    send_message(c, rcpt=RCPT).expect(250)
    assert summary(p)["user"] == "alice"
    no_secrets(p, "alice", "secret")


def test_auth_plaintext_yes(tproxy, raw, postfix, tls):
    p = tproxy(backend=postfix.addr, auth_plaintext="yes")  # and no certificate at all
    c = raw(p)
    caps = caps_of(c.greet())
    assert caps.get("AUTH") == "PLAIN LOGIN", caps
    c.cmd("AUTH PLAIN " + plain("alice", "secret")).expect(235)
    send_message(c, rcpt=RCPT).expect(250)
    s = summary(p)
    assert s["user"] == "alice" and s["tls"] == "no"
    [m] = postfix.wait_messages(1)
    assert "(Authenticated sender: alice)" in m.received()
    no_secrets(p, "alice", "secret")


def test_swaks_auth_plaintext_yes(tproxy, postfix, tls):
    p = tproxy(backend=postfix.addr, auth_plaintext="yes", **tls_keys(tls))
    rc, out = swaks("-s", p.host, "-p", str(p.port), "--auth", "LOGIN", "--auth-user", "bob",
                    "--auth-password", "hunter2", "-f", "bob@client.test", "-t", RCPT)
    assert rc == 0, out
    assert summary(p)["user"] == "bob"
    no_secrets(p, "bob", "hunter2")


def test_swaks_auth_refused_before_tls(tproxy, postfix, tls):
    p = auth_proxy(tproxy, postfix, tls)
    rc, out = swaks("-s", p.host, "-p", str(p.port), "--auth", "PLAIN", "--auth-user", "alice",
                    "--auth-password", "secret", "-f", "a@client.test", "-t", RCPT)
    # AUTH is not advertised in plaintext: swaks gives up, nothing is sent.
    assert rc != 0, out
    assert "sasl_username" not in postfix.since()
    # (an earlier test's delivery may still arrive: look for this one's sender)
    assert not any(m.sender == "a@client.test" for m in postfix.new_messages())


def test_lua_sees_auth_user(tproxy, raw, postfix, tls, tmp_path):
    from test_lua import lua_section, wait_reports

    script = """
    function on_mail(tx, sender)
      T("mail", {user = tx.conn.auth_user, tls = tx.conn.tls})
    end
    """
    p = tproxy(backend=postfix.addr, sections=[lua_section(tmp_path, script, name="x")], **tls_keys(tls))
    c, _ = tls_session(raw, p, tls)
    send_message(c, rcpt=RCPT).expect(250)
    c.cmd("AUTH PLAIN " + plain("bob", "hunter2")).expect(235)
    send_message(c, rcpt=RCPT).expect(250)
    got = wait_reports(p, "mail", 2, section="x")
    assert got[0] == {"tls": "TLSv1.3"}
    assert got[1] == {"user": "bob", "tls": "TLSv1.3"}


def test_auth_line_too_long(tproxy, raw, postfix, tls):
    """An AUTH response over 12288 octets: refused, never logged, and the
    session stays in step with the backend (the next MAIL is a MAIL there,
    not the rest of an AUTH exchange)."""
    p = auth_proxy(tproxy, postfix, tls)
    c, _ = tls_session(raw, p, tls)
    c.cmd("AUTH PLAIN").expect(334)
    try:
        r = c.cmd(plain("alice", "secret") + "A" * 13000)
        assert r.code >= 500, r
    except ConnectionClosed:
        return
    finally:
        assert "sasl_username" not in postfix.since()
        assert "user" not in {k for s in p.summaries() for k in s}
        no_secrets(p, "alice", "secret")
    if c.closed(timeout=0.2):
        return
    send_message(c, rcpt=RCPT).expect(250)
    [m] = postfix.wait_messages(1)
    assert "Authenticated sender" not in m.received()


def test_auth_timeout(tproxy, raw, postfix, tls):
    p = auth_proxy(tproxy, postfix, tls, timeout="2s")
    c, _ = tls_session(raw, p, tls)
    c.cmd("AUTH LOGIN").expect(334)
    r = c.reply(timeout=BOUND)  # nothing sent: the command timeout applies
    assert r.code == 421, r
    assert c.closed(timeout=BOUND)


def test_auth_then_ehlo_again_stays_authenticated(tproxy, raw, postfix, tls):
    """After AUTH a new EHLO makes the proxy send XCLIENT again (with LOGIN,
    Postfix offers it): Postfix still knows the user."""
    p = auth_proxy(tproxy, postfix, tls)
    c, _ = tls_session(raw, p, tls)
    c.cmd("AUTH PLAIN " + plain("alice", "secret")).expect(235)
    c.ehlo("again.test")
    send_message(c, rcpt=RCPT).expect(250)
    [m] = postfix.wait_messages(1)
    assert m.received().startswith("from again.test ")
    assert "(Authenticated sender: alice)" in m.received(), m.received()
    assert summary(p)["user"] == "alice"


def test_no_secrets_at_debug_level(tproxy, raw, postfix, tls):
    p = auth_proxy(tproxy, postfix, tls, log_level="debug")
    c, _ = tls_session(raw, p, tls)
    c.cmd("AUTH LOGIN").expect(334)
    c.cmd(b64("bob")).expect(334)
    c.cmd(b64("wrong-pw")).expect(535)
    c.cmd("AUTH PLAIN").expect(334)
    c.cmd(plain("bob", "hunter2")).expect(235)
    send_message(c, rcpt=RCPT).expect(250)
    c.cmd("QUIT").expect(221)
    assert summary(p)["user"] == "bob"
    no_secrets(p, "bob", "hunter2")
    no_secrets(p, "bob", "wrong-pw")


def test_submission_front_everything_together(tproxy, tls, tmp_path):
    """Implicit TLS from the client (from 127.0.0.2), STARTTLS to a Postfix
    with TLS and SASL, XCLIENT, AUTH relayed: Postfix's Received header has
    it all."""
    with Postfix(sasl=True, tls=tls.backend) as pf:
        p = tproxy(backend=pf.addr, listen_opts="tls", backend_tls="required", backend_tls_ca=tls.ca,
                   backend_tls_name="mx.postfix.test", **tls_keys(tls))
        with smtplib.SMTP_SSL(p.host, p.port, timeout=BOUND, context=tls.client_context(),
                              source_address=("127.0.0.2", 0)) as s:
            s.ehlo("submitter.test")
            assert s.login("alice", "secret")[0] == 235
            assert s.sendmail("alice@client.test", [RCPT], b"Subject: all\r\n\r\nall\r\n") == {}
        [m] = pf.wait_messages(1)
        rcv = m.received()
        assert rcv.startswith("from submitter.test (unknown [127.0.0.2])"), rcv
        assert "(using TLSv1.3" in rcv and "(Authenticated sender: alice)" in rcv, rcv
        assert "sasl_username=alice" in pf.log()
        s = summary(p)
        assert s["user"] == "alice" and s["tls"] == "TLSv1.3" and s["client"].startswith("127.0.0.2:")
        no_secrets(p, "alice", "secret")


def test_auth_line_within_limit_is_relayed(tproxy, raw, postfix, tls):
    """A long (but < 12288 octet) AUTH response is relayed: Postfix decides."""
    p = auth_proxy(tproxy, postfix, tls)
    c, _ = tls_session(raw, p, tls)
    c.cmd("AUTH PLAIN").expect(334)
    r = c.cmd(b64("\0alice\0" + "x" * 6000))
    assert r.code in (501, 535), r  # Postfix's refusal, not the proxy's line limit (500)


# ---- the proxy's own AUTH rules (recording backend) --------------------------------


def test_no_auth_at_backend_before_and_after_tls(tproxy, raw, recorder, tls):
    p = tproxy(**tls_keys(tls))
    c = raw(p)
    c.greet()
    assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).first == NOT_ENABLED
    starttls(c, tls.client_context())
    caps = caps_of(c.ehlo())
    assert "AUTH" not in caps
    assert c.cmd("AUTH PLAIN " + plain("alice", "secret")).first == NOT_ENABLED
    assert "AUTH" not in recorder.verbs()


def test_backend_auth_offer_relayed_exactly(tproxy, raw, recorder, tls):
    recorder.configure(extra_caps=["AUTH SCRAM-SHA-256 PLAIN LOGIN CRAM-MD5"])
    p = tproxy(**tls_keys(tls))
    c = raw(p)
    assert "AUTH" not in caps_of(c.greet())
    starttls(c, tls.client_context())
    assert caps_of(c.ehlo())["AUTH"] == "SCRAM-SHA-256 PLAIN LOGIN CRAM-MD5"


def test_other_mechanism_user_unknown(tproxy, raw, recorder, tls):
    recorder.configure(extra_caps=["AUTH CRAM-MD5 PLAIN"])
    answer = b64("carol 0123456789abcdef0123456789abcdef")
    recorder.reply("AUTH", "334 PDEyMzQ1QHJlY29yZGVyLnRlc3Q+", match="CRAM-MD5")
    recorder.reply(answer, "235 2.7.0 Authentication successful")  # the client's answer line
    p = tproxy(**tls_keys(tls))
    c = raw(p)
    c.greet()
    starttls(c, tls.client_context())
    c.ehlo()
    assert c.cmd("AUTH CRAM-MD5").first == "334 PDEyMzQ1QHJlY29yZGVyLnRlc3Q+"
    c.cmd(answer).expect(235)
    send_message(c).expect(250)
    assert summary(p)["user"] == "unknown"
