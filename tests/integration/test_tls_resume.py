"""TLS session resumption towards clients (issue 19, item 6): tickets (RFC
5077 in TLS 1.2, PSK tickets in TLS 1.3) and the TLS 1.2 session-ID cache,
on by default; tls_session_cache = no turns all of it off.

The client is Python's ssl: a first connection takes the session
(SSLSocket.session, read after the EHLO reply, by when the TLS 1.3 tickets
have arrived), a second one offers it (wrap_socket(session=...)) and
SSLSocket.session_reused says whether the server took it. Both STARTTLS and
an implicit-TLS listener, TLS 1.2 and 1.3.

With workers = 2 the ticket keys must be the same in every worker (the
master makes the TLS context before it forks): a ticket one worker issued
is taken by the other. Which worker served a connection is read from the
log (its pid on the "connect from client=...:PORT" line), and the test
chooses it by stopping the other while it connects (only_worker). The
session-ID cache is each process's own, and the test says so too.
"""

import signal
import ssl
import time

import pytest

from kit.messages import stuff
from kit.smtpclient import RawClient
from test_tls import BODY, HOST, READY, raw, send_message, tls, tls_keys, tproxy  # noqa: F401 (fixtures)
from test_workers import STARTED, children, only_worker, worker_of

BOUND = 15.0
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
VNAME = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}


def context(kit, version, tickets=True):
    """A client context for exactly one protocol version; tickets=False
    (TLS 1.2) makes the client ask for resumption by session ID only."""
    ctx = kit.client_context(minimum=version, maximum=version)
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    return ctx


class Conn:
    """One TLS session with the proxy, opened, greeted after TLS, left open
    so the caller can look at it: c.session, c.reused, c.raw."""

    def __init__(self, port, ctx, session=None, implicit=False):
        self.raw = RawClient(port, timeout=BOUND)
        try:
            if implicit:
                self._wrap(ctx, session)
                self.raw.banner().expect(220)
            else:
                self.raw.greet()
                assert self.raw.cmd("STARTTLS").first == READY
                self._wrap(ctx, session)
            self.raw.ehlo().expect(250)  # TLS 1.3: the tickets are read by now
        except BaseException:
            self.raw.close()
            raise
        self.version = self.raw.sock.version()
        self.reused = self.raw.sock.session_reused
        self.session = self.raw.sock.session

    def _wrap(self, ctx, session):
        self.raw.sock.settimeout(self.raw.timeout)
        self.raw.sock = ctx.wrap_socket(self.raw.sock, server_hostname=HOST, session=session)

    def close(self):
        try:
            self.raw.cmd("QUIT")
        finally:
            self.raw.close()


def once(port, ctx, session=None, implicit=False):
    """A whole connection: (version, reused, session)."""
    c = Conn(port, ctx, session, implicit)
    c.close()
    return c.version, c.reused, c.session


# ---- one process ---------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=VNAME.get)
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_resumed_by_default(tproxy, recorder, tls, version, implicit):
    p = tproxy(listen_opts="tls" if implicit else "", **tls_keys(tls))
    ctx = context(tls, version)
    v, reused, session = once(p.port, ctx, implicit=implicit)
    assert v == VNAME[version] and not reused
    assert session is not None and session.has_ticket
    # The second connection offers the session and the server takes it; it
    # is a working session: a message goes through.
    c = Conn(p.port, ctx, session, implicit)
    try:
        assert c.version == VNAME[version] and c.reused, p.log()
        send_message(c.raw).expect(250)
    finally:
        c.close()
    [t] = recorder.wait_for_transactions(1)
    assert t.data == stuff(BODY)
    # The log says which handshake resumed: the second, not the first.
    tls_lines = [ln for ln in p.log().splitlines() if f"TLS {VNAME[version]} with client=" in ln]
    assert len(tls_lines) == 2, p.log()
    assert not tls_lines[0].endswith(" resumed") and tls_lines[1].endswith(" resumed"), tls_lines


def test_tls12_session_id_cache(tproxy, tls):
    """A TLS 1.2 client that takes no tickets resumes from the server's
    cache, by session ID."""
    p = tproxy(**tls_keys(tls))
    ctx = context(tls, ssl.TLSVersion.TLSv1_2, tickets=False)
    _, reused, session = once(p.port, ctx)
    assert not reused and not session.has_ticket and session.id
    _, reused, again = once(p.port, ctx, session)
    assert reused, p.log()
    assert again.id == session.id


def test_starttls_session_resumed_on_implicit_listener(tproxy, tls):
    p = tproxy(listeners={"smtps": "tls"}, **tls_keys(tls))
    ctx = context(tls, ssl.TLSVersion.TLSv1_3)
    _, _, session = once(p.port, ctx)
    _, reused, _ = once(p.ports["smtps"], ctx, session, implicit=True)
    assert reused


@pytest.mark.parametrize("version", VERSIONS, ids=VNAME.get)
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_session_cache_no(tproxy, tls, version, implicit):
    p = tproxy(listen_opts="tls" if implicit else "", tls_session_cache="no", **tls_keys(tls))
    for tickets in ([True, False] if version == ssl.TLSVersion.TLSv1_2 else [True]):
        ctx = context(tls, version, tickets)
        _, reused, session = once(p.port, ctx, implicit=implicit)
        assert not reused and not session.has_ticket
        _, reused, _ = once(p.port, ctx, session, implicit=implicit)
        assert not reused, p.log()


@pytest.mark.parametrize("version", VERSIONS, ids=VNAME.get)
@pytest.mark.parametrize("timeout, seconds", [(None, 3600), ("10m", 600)])
def test_session_timeout_is_the_ticket_lifetime(tproxy, tls, version, timeout, seconds):
    """tls_session_timeout (default an hour) is what the tickets say they
    are good for, and the session's own lifetime."""
    p = tproxy(tls_session_timeout=timeout, **tls_keys(tls))
    _, _, session = once(p.port, context(tls, version))
    assert session.ticket_lifetime_hint == seconds


@pytest.mark.parametrize("version", VERSIONS, ids=VNAME.get)
def test_session_timeout_expires(tproxy, tls, version):
    """A session older than tls_session_timeout is not resumed. OpenSSL
    counts whole seconds: with 2 s, a session is still good 2 s after the
    second it was made in, and gone once 4 s have passed since."""
    p = tproxy(tls_session_timeout="2s", **tls_keys(tls))
    ctx = context(tls, version)
    made = time.monotonic()
    _, _, session = once(p.port, ctx)
    _, reused, _ = once(p.port, ctx, session)
    assert reused  # else the wait below proves nothing
    time.sleep(max(0.0, made + 4.2 - time.monotonic()))
    _, reused, _ = once(p.port, ctx, session)
    assert not reused, p.log()


def test_reload_makes_new_ticket_keys(tproxy, tls):
    """A reload (SIGHUP) may change the certificate: a session from before
    is not resumed after it, and new ones are."""
    p = tproxy(**tls_keys(tls))
    ctx = context(tls, ssl.TLSVersion.TLSv1_3)
    _, _, before = once(p.port, ctx)
    p.signal(signal.SIGHUP)
    assert p.wait_log(r"SIGHUP: .*read again", timeout=BOUND), p.log()
    _, reused, after = once(p.port, ctx, before)
    assert not reused
    _, reused, _ = once(p.port, ctx, after)
    assert reused


# ---- workers = 2 -----------------------------------------------------------------------


def wproxy(tproxy, tls, **kw):
    p = tproxy(workers="2", **tls_keys(tls), **kw)
    assert p.wait_log(STARTED, timeout=BOUND), p.log()
    return p


def served_by(p, pid, ctx, session, implicit=False):
    """A connection to worker pid alone, offering session: reused?"""
    with only_worker(p, pid):
        c = Conn(p.port, ctx, session, implicit)
    try:
        assert worker_of(p, c.raw) == pid
        return c.reused
    finally:
        c.close()


def issued(p, ctx, implicit=False):
    """A first connection: (the worker that served it, its session, the other worker)."""
    first = Conn(p.port, ctx, implicit=implicit)
    try:
        issuer = worker_of(p, first.raw)
        session = first.session
    finally:
        first.close()
    [other] = children(p.pid) - {issuer}
    return issuer, session, other


@pytest.mark.parametrize("version", VERSIONS, ids=VNAME.get)
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_workers_take_each_others_tickets(tproxy, tls, version, implicit):
    p = wproxy(tproxy, tls, listen_opts="tls" if implicit else "")
    ctx = context(tls, version)
    issuer, session, other = issued(p, ctx, implicit)
    assert session.has_ticket
    assert served_by(p, other, ctx, session, implicit), \
        f"worker {other} did not take the ticket of {issuer}:\n{p.log()}"
    assert served_by(p, issuer, ctx, session, implicit), p.log()


def test_workers_session_id_cache_is_per_process(tproxy, tls):
    """Without tickets (a TLS 1.2 client that refuses them) a session is
    resumed only by the worker that made it: the cache is per process, as
    portcullis.conf(5) says."""
    p = wproxy(tproxy, tls)
    ctx = context(tls, ssl.TLSVersion.TLSv1_2, tickets=False)
    issuer, session, other = issued(p, ctx)
    assert not session.has_ticket
    assert not served_by(p, other, ctx, session), p.log()
    assert served_by(p, issuer, ctx, session), p.log()


def test_workers_cache_no(tproxy, tls):
    p = wproxy(tproxy, tls, tls_session_cache="no")
    ctx = context(tls, ssl.TLSVersion.TLSv1_3)
    issuer, session, other = issued(p, ctx)
    assert not served_by(p, other, ctx, session)
    assert not served_by(p, issuer, ctx, session)
