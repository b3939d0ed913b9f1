"""PROXY protocol v1 and v2 on a `proxy_protocol` listener (issue 7).

With HAProxy from Debian in front (kit.haproxy, send-proxy / send-proxy-v2),
the client connecting to HAProxy from 127.0.0.2 so that its address differs
from the socket peer the proxy sees (127.0.0.1); and with hand-made headers
claiming documentation addresses (192.0.2.0/24, 2001:db8::/32).

The real client address must be what the filters (a C plugin matching the
client IP at connect, a Lua script reporting conn.client_ip), the per-IP
limit and the log (client=) use. A header from an untrusted source, a
malformed header, no header at all: closed without a banner, and the backend
never hears of it.
"""

import socket
import ssl
import time

import pytest

from kit.haproxy import HAProxy, V2_SIG, proxy_v1, proxy_v2, proxy_v2_local
from kit.proxy import Proxy, free_port, run_check, test_plugin
from kit.smtpclient import RawClient, ReplyTimeout
from test_tls import BOUND, config_line, raw, send_message, starttls, summary, tls, tls_keys, tproxy, wrap  # noqa: F401

OTHER = "127.0.0.2"


def pp_proxy(tproxy, trusted="127.0.0.1/32", **settings):
    return tproxy(listeners={"pp": "proxy_protocol"}, proxy_trusted=trusted, **settings)


def lua_client(tmp_path):
    from test_lua import lua_section

    script = """
    function on_connect(conn)
      T("connect", {ip = conn.client_ip, port = conn.client_port})
    end
    function on_mail(tx, sender)
      T("mail", {ip = tx.conn.client_ip})
    end
    """
    return lua_section(tmp_path, script, name="x")


def lua_reports(p, key, n=1):
    from test_lua import wait_reports

    return wait_reports(p, key, n, section="x")


def closed_without_banner(c, timeout=BOUND):
    """The proxy closed the connection and sent nothing at all."""
    assert c.closed(timeout=timeout), f"still open; got {bytes(c.buf)!r}"
    assert bytes(c.buf) == b"", bytes(c.buf)


def session(c, helo="client.test"):
    c.banner().expect(220)
    c.ehlo(helo)
    send_message(c).expect(250)
    c.cmd("QUIT").expect(221)


# ---- through HAProxy ---------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_haproxy_client_address_seen(tproxy, recorder, tmp_path, version):
    p = pp_proxy(tproxy, sections=[lua_client(tmp_path)])
    with HAProxy(("127.0.0.1", p.ports["pp"]), version=version, workdir=tmp_path / "haproxy") as hp:
        c = RawClient(hp.port, source=(OTHER, 0))
        try:
            port = c.sock.getsockname()[1]
            session(c)
        finally:
            c.close()
    assert len(recorder.wait_for_transactions(1)) == 1
    assert summary(p)["client"] == f"{OTHER}:{port}"
    assert p.wait_log(rf"connect from client={OTHER}:{port}\b", timeout=BOUND), p.log()
    assert lua_reports(p, "connect")[0] == {"ip": OTHER, "port": port}
    assert lua_reports(p, "mail")[0] == {"ip": OTHER}


@pytest.mark.parametrize("version", [1, 2])
def test_haproxy_c_filter_sees_client_address(tproxy, recorder, tmp_path, version):
    p = pp_proxy(tproxy, sections=[("plugin v", dict(path=test_plugin("verdict"), stages="connect",
                                                      action="reject", match=OTHER))])
    with HAProxy(("127.0.0.1", p.ports["pp"]), version=version, workdir=tmp_path / "haproxy") as hp:
        c = RawClient(hp.port, source=(OTHER, 0))
        d = RawClient(hp.port)  # from 127.0.0.1: not matched
        try:
            assert c.banner().code == 554
            d.banner().expect(220)
            d.cmd("QUIT").expect(221)
        finally:
            c.close()
            d.close()


def test_haproxy_from_untrusted_source_refused(tproxy, recorder, tmp_path):
    p = pp_proxy(tproxy)  # trusts 127.0.0.1 only
    with HAProxy(("127.0.0.1", p.ports["pp"]), version=2, source="127.0.0.3",
                 workdir=tmp_path / "haproxy") as hp:
        c = RawClient(hp.port)
        try:
            closed_without_banner(c)
        finally:
            c.close()
    assert recorder.conns() == []
    assert p.wait_log(r"127\.0\.0\.3", timeout=BOUND), p.log()


def test_haproxy_without_header_closed(tproxy, recorder, tmp_path):
    """HAProxy forwarding plain SMTP (no send-proxy) to a proxy_protocol port."""
    p = pp_proxy(tproxy)
    with HAProxy(("127.0.0.1", p.ports["pp"]), version=None, workdir=tmp_path / "haproxy") as hp:
        c = RawClient(hp.port)
        try:
            c.send(b"EHLO plain.test\r\n")
            closed_without_banner(c)
        finally:
            c.close()
    assert recorder.conns() == []


# ---- hand-made headers -------------------------------------------------------------


@pytest.mark.parametrize("header,ip,port", [
    (proxy_v1("192.0.2.55", 40000, "127.0.0.1", 25), "192.0.2.55", 40000),
    (proxy_v2("192.0.2.56", 40001, "127.0.0.1", 25), "192.0.2.56", 40001),
    (proxy_v1("2001:db8::57", 40002, "2001:db8::1", 25), "2001:db8::57", 40002),
    (proxy_v2("2001:db8::58", 40003, "2001:db8::1", 25), "2001:db8::58", 40003),
    (proxy_v2("192.0.2.59", 40004, "127.0.0.1", 25, tlvs=b"\x04\x00\x03abc"), "192.0.2.59", 40004),
], ids=["v1", "v2", "v1-ipv6", "v2-ipv6", "v2-tlv"])
def test_header_address_used(tproxy, raw, recorder, tmp_path, header, ip, port):
    p = pp_proxy(tproxy, sections=[lua_client(tmp_path)])
    c = raw(p.ports["pp"])
    c.send(header)
    session(c)
    assert len(recorder.wait_for_transactions(1)) == 1
    assert lua_reports(p, "connect")[0] == {"ip": ip, "port": port}
    s = summary(p)
    assert s["client"] in (f"{ip}:{port}", f"[{ip}]:{port}"), s
    # The header never reaches the backend.
    assert b"PROXY" not in recorder.raw() and V2_SIG not in recorder.raw()


@pytest.mark.parametrize("version", [1, 2])
def test_headers_plugin_stamps_real_address(tproxy, raw, recorder, version):
    """The C headers plugin's %{client_ip}/%{client_port} are the header's."""
    p = pp_proxy(tproxy, sections=[("plugin headers", {"add": "X-Client: %{client_ip} port %{client_port}"})])
    make = proxy_v1 if version == 1 else proxy_v2
    c = raw(p.ports["pp"])
    c.send(make("192.0.2.63", 40020, "127.0.0.1", 25))
    session(c)
    [t] = recorder.wait_for_transactions(1)
    assert t.data.startswith(b"X-Client: 192.0.2.63 port 40020\r\n"), t.data[:200]


def test_header_and_first_command_in_one_write(tproxy, raw, recorder):
    """The header and what follows in the same segment: the rest is SMTP, read
    as the client's (it talked before the greeting, so it is cut off)."""
    recorder.delay("BANNER", 0.5)
    p = pp_proxy(tproxy)
    c = raw(p.ports["pp"])
    c.send(proxy_v1("192.0.2.60", 40005, "127.0.0.1", 25) + b"EHLO early.test\r\n")
    assert c.reply().first == "554 5.5.0 Error: SMTP protocol synchronization"
    assert c.closed()
    assert p.wait_log(r"client=192\.0\.2\.60:40005 sent 17 octets before the greeting: \"EHLO early\.test")


def test_header_in_pieces(tproxy, raw, recorder):
    p = pp_proxy(tproxy)
    c = raw(p.ports["pp"])
    h = proxy_v2("192.0.2.61", 40006, "127.0.0.1", 25)
    for i in range(0, len(h), 5):
        c.send(h[i:i + 5])
        time.sleep(0.02)
    c.banner().expect(220)
    c.ehlo()
    c.cmd("QUIT").expect(221)
    assert summary_or_log(p, "192.0.2.61")


def summary_or_log(p, ip):
    return p.wait_log(rf"client={ip}:", timeout=BOUND)


@pytest.mark.parametrize("header", [proxy_v2_local(), b"PROXY UNKNOWN\r\n",
                                    b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n"],
                         ids=["v2-local", "v1-unknown", "v1-unknown-with-addresses"])
def test_local_and_unknown_use_socket_address(tproxy, raw, recorder, tmp_path, header):
    p = pp_proxy(tproxy, sections=[lua_client(tmp_path)])
    c = raw(p.ports["pp"])
    port = c.sock.getsockname()[1]
    c.send(header)
    session(c)
    assert lua_reports(p, "connect")[0] == {"ip": "127.0.0.1", "port": port}
    assert summary(p)["client"] == f"127.0.0.1:{port}"


def test_untrusted_source_refused(tproxy, raw, recorder):
    p = pp_proxy(tproxy, trusted="10.0.0.0/8")
    c = raw(p.ports["pp"])
    c.send(proxy_v1("192.0.2.55", 40000, "127.0.0.1", 25))
    closed_without_banner(c)
    d = raw(p.ports["pp"])
    d.send(proxy_v2("192.0.2.55", 40000, "127.0.0.1", 25))
    closed_without_banner(d)
    assert recorder.conns() == []
    # The plain listener of the same proxy is unaffected.
    e = raw(p)
    e.banner().expect(220)


def test_proxy_protocol_listener_needs_trusted_networks(tmp_path):
    """proxy_trusted has no default: a proxy_protocol listener without it
    could never accept anybody, so the configuration is refused, with the
    listen line."""
    p = Proxy(tmp_path / "c", "127.0.0.1:25")
    pp = free_port()
    p.settings["listen"] = [f"127.0.0.1:{p.port}", f"127.0.0.1:{pp} proxy_protocol"]
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc != 0, out
    assert f"{p.config_path}:{config_line(p, 'listen', startswith=f'127.0.0.1:{pp} ')}:" in out, out


def test_trusted_by_second_cidr(tproxy, raw, recorder):
    p = pp_proxy(tproxy, trusted="10.0.0.0/8 127.0.0.0/24 ::1/128")
    c = raw(p.ports["pp"])
    c.send(proxy_v1("192.0.2.62", 40000, "127.0.0.1", 25))
    c.banner().expect(220)


@pytest.mark.parametrize("bad", [
    b"PROXY TCP4 999.1.1.1 127.0.0.1 40000 25\r\n",
    b"PROXY TCP4 192.0.2.1 127.0.0.1 40000\r\n",
    b"PROXY TCP4 192.0.2.1 127.0.0.1 70000 25\r\n",
    b"PROXY TCP4 2001:db8::1 127.0.0.1 40000 25\r\n",
    b"PROXY TCP5 192.0.2.1 127.0.0.1 40000 25\r\n",
    b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 25\n",
    b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
    b"proxy TCP4 192.0.2.1 127.0.0.1 40000 25\r\n",
    V2_SIG + b"\x11\x11\x00\x0c" + b"\x00" * 12,  # version 1 in a v2 header
    V2_SIG + b"\x21\x11\x00\x04" + b"\x00" * 4,  # INET but too short for the addresses
    V2_SIG[:11] + b"X" + b"\x21\x11\x00\x0c" + b"\x00" * 12,  # broken signature
    V2_SIG + b"\x2f\x11\x00\x0c" + b"\x00" * 12,  # unknown command
    b"EHLO plain.test\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
], ids=["v1-bad-ip", "v1-missing-port", "v1-port-range", "v1-family-mismatch", "v1-bad-proto",
        "v1-bare-lf", "v1-too-long", "v1-lowercase", "v2-bad-version", "v2-short", "v2-bad-signature",
        "v2-bad-command", "plain-smtp", "tls-hello"])
def test_malformed_header_closed(tproxy, raw, recorder, bad):
    p = pp_proxy(tproxy)
    c = raw(p.ports["pp"])
    c.send(bad)
    closed_without_banner(c)
    assert recorder.conns() == []
    assert p.wait_log(r"(?i)(bad|malformed|invalid) PROXY", timeout=BOUND), p.log()


def test_plain_client_waiting_for_banner_closed_after_timeout(tproxy, raw, recorder):
    p = pp_proxy(tproxy, timeout="2s")
    c = raw(p.ports["pp"])
    t0 = time.monotonic()
    with pytest.raises(ReplyTimeout):
        c.banner(timeout=1.0)  # no banner before a header
    closed_without_banner(c, timeout=BOUND)
    assert time.monotonic() - t0 < 2 + BOUND
    assert recorder.conns() == []
    assert p.wait_log(r"(?i)PROXY.*(timeout|timed out|no header)|(timeout|timed out).*PROXY",
                      timeout=BOUND), p.log()


def test_per_ip_limit_counts_real_address(tproxy, raw, recorder):
    p = pp_proxy(tproxy, max_connections=10, max_connections_per_ip=1)
    a = raw(p.ports["pp"])
    a.send(proxy_v1("192.0.2.70", 40000, "127.0.0.1", 25))
    a.banner().expect(220)
    # Same real client again: refused, though a second one from 127.0.0.1 would not be.
    b = raw(p.ports["pp"])
    b.send(proxy_v1("192.0.2.70", 40001, "127.0.0.1", 25))
    r = b.banner()
    assert r.code == 421 and r.enhanced == "4.7.0", r
    assert b.closed(timeout=BOUND)
    # Another real client over the same (127.0.0.1) socket peer: accepted.
    c = raw(p.ports["pp"])
    c.send(proxy_v1("192.0.2.71", 40002, "127.0.0.1", 25))
    c.banner().expect(220)
    assert p.wait_log(r"max_connections_per_ip.*192\.0\.2\.70|192\.0\.2\.70.*max_connections_per_ip",
                      timeout=BOUND), p.log()
    # The plain listener: 127.0.0.1 itself has no connection counted yet.
    d = raw(p)
    d.banner().expect(220)


def test_per_ip_slot_released_with_real_address(tproxy, raw, recorder):
    """The slot taken for the header's address is given back at the end of
    the session: the same real client gets in again, many times over."""
    p = pp_proxy(tproxy, max_connections=10, max_connections_per_ip=1)
    for i in range(5):
        c = raw(p.ports["pp"])
        c.send(proxy_v1("192.0.2.72", 41000 + i, "127.0.0.1", 25))
        c.banner().expect(220)
        c.cmd("QUIT").expect(221)
        assert c.closed(timeout=BOUND)
        c.close()
        time.sleep(0.05)  # let the proxy see the close before the next one
    # Connections that never sent a header count against nobody either.
    for _ in range(3):
        d = raw(p.ports["pp"])
        d.send(b"garbage\r\n")
        assert d.closed(timeout=BOUND)
        d.close()
    e = raw(p)
    e.banner().expect(220)
    f = raw(p.ports["pp"])
    f.send(proxy_v1("192.0.2.72", 42000, "127.0.0.1", 25))
    f.banner().expect(220)


def _handshake_with_prefix(sock, ctx, prefix, hostname="proxy.test"):
    """A TLS handshake whose ClientHello goes out in the same write as
    prefix (a PROXY header). Returns the SSLObject and a function that
    reads decrypted bytes."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=hostname)
    sock.settimeout(BOUND)
    pending = prefix
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            data = out.read()
            if pending or data:
                sock.sendall(pending + data)
                pending = b""
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            inc.write(chunk)
    if out.pending:
        sock.sendall(out.read())

    def read_line():
        buf = b""
        while not buf.endswith(b"\r\n"):
            try:
                buf += obj.read(1)
            except ssl.SSLWantReadError:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                inc.write(chunk)
        return buf

    def write(data):
        obj.write(data)
        sock.sendall(out.read())

    return obj, read_line, write


def test_header_and_client_hello_in_one_write(tproxy, raw, recorder, tls):
    p = tproxy(listeners={"pptls": "tls proxy_protocol"}, proxy_trusted="127.0.0.1/32", **tls_keys(tls))
    s = socket.create_connection(("127.0.0.1", p.ports["pptls"]), timeout=BOUND)
    try:
        obj, read_line, write = _handshake_with_prefix(
            s, tls.client_context(), proxy_v2("192.0.2.79", 40012, "127.0.0.1", 465))
        assert obj.version() == "TLSv1.3"
        assert read_line().startswith(b"220 proxy.test")
        write(b"QUIT\r\n")
        assert read_line().startswith(b"221")
    finally:
        s.close()
    assert p.wait_log(r"connect from client=192\.0\.2\.79:40012", timeout=BOUND), p.log()


def test_tls_and_proxy_protocol_listener(tproxy, raw, recorder, tls):
    p = tproxy(listeners={"pptls": "tls proxy_protocol"}, proxy_trusted="127.0.0.1/32", **tls_keys(tls))
    c = raw(p.ports["pptls"])
    c.send(proxy_v2("192.0.2.77", 40010, "127.0.0.1", 465))
    assert wrap(c, tls.client_context()) == "TLSv1.3"
    session(c)
    s = summary(p)
    assert s["client"] == "192.0.2.77:40010" and s["tls"] == "TLSv1.3"


def test_starttls_on_proxy_protocol_listener(tproxy, raw, recorder, tls):
    p = tproxy(listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32", **tls_keys(tls))
    c = raw(p.ports["pp"])
    c.send(proxy_v1("192.0.2.78", 40011, "127.0.0.1", 25))
    c.banner().expect(220)
    c.ehlo()
    starttls(c, tls.client_context())
    c.ehlo()
    send_message(c).expect(250)
    s = summary(p)
    assert s["client"] == "192.0.2.78:40011" and s["tls"] == "TLSv1.3"


def test_plain_listener_takes_no_header(tproxy, raw, recorder):
    """On a listener without proxy_protocol a PROXY line is just a bad command."""
    p = pp_proxy(tproxy)
    c = raw(p)
    c.banner().expect(220)
    r = c.cmd("PROXY TCP4 192.0.2.55 127.0.0.1 40000 25")
    assert r.code >= 500, r
    assert not p.wait_log(r"client=192\.0\.2\.55", timeout=0.3)


def test_client_ip_helper_socket():
    """The kit's own check: 127.0.0.2 is usable as a source address here."""
    s = socket.socket()
    s.bind((OTHER, 0))
    s.close()
