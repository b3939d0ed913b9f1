"""XCLIENT to the backend (issue 7).

Against a real Postfix (smtpd_authorized_xclient_hosts = 127.0.0.1, client
ports logged): Postfix's own Received header and log must show the real
client - its address, port and HELO - not the proxy's 127.0.0.1. To make
"the real client" distinguishable on one machine, the client connects from
127.0.0.2 (all of 127/8 is local on Linux), or comes through a PROXY header
claiming 192.0.2.55 / 198.51.100.7, or through HAProxy from 127.0.0.2.

Against the recording backend: the exact XCLIENT commands (attributes the
backend listed only, xtext, at most 512 octets a line, EHLO after), what
happens when the backend refuses it, and backend_xclient = no.
"""

import re
import smtplib

import pytest

from kit.haproxy import HAProxy, proxy_v1, proxy_v2
from kit.postfix import DOMAIN, postfix_fixtures
from kit.smtpclient import RawClient
from test_tls import BOUND, raw, send_message, summary, swaks, tproxy  # noqa: F401

RCPT = "alice@" + DOMAIN
HELO = "unique-helo.test"
OTHER = "127.0.0.2"

# inet_protocols = all: Postfix takes XCLIENT ADDR=IPV6:... only then.
_postfix, postfix = postfix_fixtures(
    xclient_hosts="127.0.0.1", main_cf={"smtpd_client_port_logging": "yes", "inet_protocols": "all"})


def received_from(m):
    """'from HELO (NAME [ADDR])' of Postfix's Received header."""
    rcv = m.received()
    mt = re.match(r"from (\S+) \((\S+) \[([^\]]+)\]\)", rcv)
    assert mt, rcv
    return mt.group(1), mt.group(2), mt.group(3)


def session(c, helo=HELO, rcpt=RCPT, subject=b"xclient"):
    c.banner().expect(220)
    c.ehlo(helo)
    send_message(c, rcpt=rcpt, body=b"Subject: " + subject + b"\r\n\r\nhello\r\n").expect(250)
    c.cmd("QUIT").expect(221)


# ---- real Postfix ------------------------------------------------------------------


def test_postfix_sees_client_address_port_and_helo(tproxy, raw, postfix):
    p = tproxy(backend=postfix.addr)
    c = raw(p, source=(OTHER, 0))
    port = c.sock.getsockname()[1]
    session(c)
    [m] = postfix.wait_messages(1)
    assert received_from(m) == (HELO, "unknown", OTHER)
    assert m.received().startswith(f"from {HELO} (unknown [{OTHER}])")
    assert f"client=unknown[{OTHER}]:{port}" in postfix.since()
    assert summary(p)["client"] == f"{OTHER}:{port}"


def test_swaks_helo_in_received(tproxy, postfix):
    p = tproxy(backend=postfix.addr)
    rc, out = swaks("-s", p.host, "-p", str(p.port), "--local-interface", OTHER, "--helo", HELO,
                    "-f", "s@client.test", "-t", RCPT, "--body", "via swaks")
    assert rc == 0, out
    [m] = postfix.wait_messages(1)
    assert m.received().startswith(f"from {HELO} (unknown [{OTHER}])"), m.received()
    assert f"client=unknown[{OTHER}]" in postfix.since()


def test_without_xclient_postfix_sees_the_proxy(tproxy, raw, postfix):
    """The control: backend_xclient = no, Postfix sees 127.0.0.1."""
    p = tproxy(backend=postfix.addr, backend_xclient="no")
    c = raw(p, source=(OTHER, 0))
    session(c)
    [m] = postfix.wait_messages(1)
    assert received_from(m)[2] == "127.0.0.1"
    assert f"[{OTHER}]" not in postfix.since()


@pytest.mark.parametrize("version", [1, 2])
def test_proxy_header_address_reaches_postfix(tproxy, raw, postfix, version):
    p = tproxy(backend=postfix.addr, listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32")
    src, sport = ("192.0.2.55", 40000) if version == 1 else ("198.51.100.7", 40001)
    make = proxy_v1 if version == 1 else proxy_v2
    c = raw(p.ports["pp"])
    c.send(make(src, sport, "127.0.0.1", p.ports["pp"]))
    session(c)
    [m] = postfix.wait_messages(1)
    assert m.received().startswith(f"from {HELO} (unknown [{src}])"), m.received()
    assert f"client=unknown[{src}]:{sport}" in postfix.since()
    assert summary(p)["client"] == f"{src}:{sport}"


def test_ipv6_proxy_header_address_reaches_postfix(tproxy, raw, postfix):
    p = tproxy(backend=postfix.addr, listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32")
    c = raw(p.ports["pp"])
    c.send(proxy_v2("2001:db8::55", 40002, "2001:db8::1", 25))
    session(c)
    [m] = postfix.wait_messages(1)
    assert m.received().startswith(f"from {HELO} (unknown [IPv6:2001:db8::55])"), m.received()
    assert "client=unknown[2001:db8::55]:40002" in postfix.since()


def test_haproxy_client_address_reaches_postfix(tproxy, postfix, tmp_path):
    p = tproxy(backend=postfix.addr, listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32")
    with HAProxy(("127.0.0.1", p.ports["pp"]), version=2, workdir=tmp_path / "haproxy") as hp:
        c = RawClient(hp.port, source=(OTHER, 0))
        try:
            port = c.sock.getsockname()[1]
            session(c)
        finally:
            c.close()
    [m] = postfix.wait_messages(1)
    assert m.received().startswith(f"from {HELO} (unknown [{OTHER}])"), m.received()
    assert f"client=unknown[{OTHER}]:{port}" in postfix.since()


def test_smtplib_helo_and_second_ehlo(tproxy, postfix):
    """HELO instead of EHLO, and a second EHLO with another name: Postfix
    sees the name the client gave last."""
    p = tproxy(backend=postfix.addr)
    with smtplib.SMTP(p.host, p.port, timeout=BOUND, source_address=(OTHER, 0)) as s:
        assert s.helo("first-helo.test")[0] == 250
        assert s.sendmail("s@client.test", [RCPT], b"Subject: one\r\n\r\n1\r\n") == {}
        assert s.ehlo("second-helo.test")[0] == 250
        assert s.sendmail("s@client.test", [RCPT], b"Subject: two\r\n\r\n2\r\n") == {}
    ms = postfix.wait_messages(2)
    got = sorted(received_from(m)[0] for m in ms)
    assert got == ["first-helo.test", "second-helo.test"]
    assert all(received_from(m)[2] == OTHER for m in ms)


# ---- the XCLIENT commands (recording backend) --------------------------------------


def xclient_lines(recorder):
    return [c for c in recorder.commands() if c.upper().startswith("XCLIENT")]


def xclient_attrs(lines):
    out = {}
    for ln in lines:
        for kv in ln.split()[1:]:
            k, _, v = kv.partition("=")
            assert k not in out, f"{k} sent twice: {lines}"
            out[k] = v
    return out


def test_xclient_command_and_ehlo_again(tproxy, raw, recorder):
    recorder.configure(extra_caps=["XCLIENT"])
    p = tproxy()
    c = raw(p)
    port = c.sock.getsockname()[1]
    c.greet("client.example")
    send_message(c).expect(250)
    cmds = recorder.commands()
    verbs = [x.split()[0].upper() for x in cmds]
    assert verbs[:3] == ["EHLO", "XCLIENT", "EHLO"], cmds
    assert cmds[0] == "EHLO client.example"
    assert xclient_attrs(xclient_lines(recorder)) == {
        "ADDR": "127.0.0.1", "PORT": str(port), "NAME": "[UNAVAILABLE]", "HELO": "client.example",
        "PROTO": "ESMTP"}
    assert len(recorder.wait_for_transactions(1)) == 1


def test_xclient_helo_proto_smtp(tproxy, raw, recorder):
    recorder.configure(extra_caps=["XCLIENT"])
    p = tproxy()
    c = raw(p)
    c.banner().expect(220)
    c.cmd("HELO old.example").expect(250)
    assert xclient_attrs(xclient_lines(recorder))["PROTO"] == "SMTP"


def test_xclient_only_listed_attributes(tproxy, raw, recorder):
    recorder.configure(extra_caps=["XCLIENT ADDR HELO"])
    p = tproxy()
    c = raw(p)
    c.greet("client.example")
    assert xclient_attrs(xclient_lines(recorder)) == {"ADDR": "127.0.0.1", "HELO": "client.example"}


def test_xclient_xtext(tproxy, raw, recorder):
    recorder.configure(extra_caps=["XCLIENT"])
    p = tproxy()
    c = raw(p)
    c.greet("we+ird=name")
    assert xclient_attrs(xclient_lines(recorder))["HELO"] == "we+2Bird+3Dname"


def test_xclient_split_at_512(tproxy, raw, recorder):
    """A HELO that xtext makes long (each "=" is "+3D"): the attributes do
    not fit one 512-octet line, so they go in several XCLIENT commands."""
    recorder.configure(extra_caps=["XCLIENT"])
    p = tproxy()
    c = raw(p)
    port = c.sock.getsockname()[1]
    helo = "x" + "=" * 149
    c.greet(helo)
    lines = xclient_lines(recorder)
    assert len(lines) >= 2, lines
    assert all(len(ln) + 2 <= 512 for ln in lines), [len(x) for x in lines]
    attrs = xclient_attrs(lines)
    assert attrs["HELO"] == "x" + "+3D" * 149
    assert attrs["ADDR"] == "127.0.0.1" and attrs["PORT"] == str(port) and attrs["PROTO"] == "ESMTP"
    # Each XCLIENT got its 220; then EHLO.
    verbs = [x.split()[0].upper() for x in recorder.commands()]
    assert verbs[-1] == "EHLO" and verbs.count("XCLIENT") == len(lines)


def test_xclient_long_hostname_kept(tproxy, raw, recorder):
    """A 253-octet host name (the most DNS allows) reaches the backend whole."""
    recorder.configure(extra_caps=["XCLIENT"])
    p = tproxy()
    c = raw(p)
    helo = ".".join(["a" * 60] * 4) + ".host.test"
    assert len(helo) == 253
    c.greet(helo)
    lines = xclient_lines(recorder)
    assert all(len(ln) + 2 <= 512 for ln in lines)
    assert xclient_attrs(lines)["HELO"] == helo, (len(helo), lines)


def test_xclient_after_each_ehlo(tproxy, raw, recorder):
    recorder.configure(extra_caps=["XCLIENT"])
    p = tproxy()
    c = raw(p)
    c.greet("one.example")
    c.ehlo("two.example")
    helos = [xclient_attrs([ln])["HELO"] for ln in xclient_lines(recorder) if "HELO=" in ln]
    assert helos == ["one.example", "two.example"]


def test_xclient_refused_is_a_backend_failure(tproxy, raw, recorder):
    """A refused XCLIENT never fails open (the backend would take every client
    for the proxy itself): 421 to the EHLO, both legs closed, logged."""
    recorder.configure(extra_caps=["XCLIENT"])
    recorder.reply("XCLIENT", "550 5.7.0 Error: insufficient authorization")
    p = tproxy()
    c = raw(p)
    c.banner().expect(220)
    r = c.cmd("EHLO client.test")
    assert r.code == 421 and r.first.startswith("421 4.4.1 "), r
    assert c.closed()
    assert p.wait_log(r"backend refused XCLIENT: 550 5\.7\.0", timeout=BOUND), p.log()
    assert not any(x.startswith("MAIL") for x in recorder.commands())
    assert recorder.messages() == []


def test_backend_xclient_no(tproxy, raw, recorder):
    recorder.configure(extra_caps=["XCLIENT"])
    p = tproxy(backend_xclient="no")
    c = raw(p)
    c.greet()
    send_message(c).expect(250)
    assert xclient_lines(recorder) == []


def test_no_xclient_when_not_offered(tproxy, raw, recorder):
    p = tproxy()
    c = raw(p)
    c.greet()
    send_message(c).expect(250)
    assert xclient_lines(recorder) == []
    assert [x.split()[0].upper() for x in recorder.commands()][:2] == ["EHLO", "MAIL"]


def test_client_xclient_and_xforward_refused(tproxy, raw, recorder):
    recorder.configure(extra_caps=["XCLIENT", "XFORWARD"])
    p = tproxy()
    c = raw(p)
    caps = c.greet()
    assert "XCLIENT" not in caps.text and "XFORWARD" not in caps.text
    assert c.cmd("XCLIENT ADDR=10.9.9.9").code == 550
    assert c.cmd("XFORWARD ADDR=10.9.9.9").code == 550
    assert not any("10.9.9.9" in x for x in recorder.commands())


def test_xclient_uses_proxy_header_address(tproxy, raw, recorder):
    recorder.configure(extra_caps=["XCLIENT"])
    p = tproxy(listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32")
    c = raw(p.ports["pp"])
    c.send(proxy_v2("2001:db8::55", 40000, "::1", 25))
    c.greet("v6.example")
    attrs = xclient_attrs(xclient_lines(recorder))
    # XCLIENT's IPv6 form: with the IPV6: prefix (Postfix answers "501 5.5.4
    # Bad ADDR syntax" to a bare IPv6 address)
    assert attrs["ADDR"] == "IPV6:2001:db8::55", attrs
    assert attrs["PORT"] == "40000"


# ---- the client's name (client_rdns) --------------------------------------------------


def rdns_proxy(tproxy, dns, **settings):
    return tproxy(client_rdns="yes", dns_server=dns.address, **settings)


def xclient_name(recorder):
    return xclient_attrs(xclient_lines(recorder))["NAME"]


def name_sent(tproxy, raw, recorder, dns, preamble=b"", **settings):
    """One message through a proxy with client_rdns against the kit's DNS;
    returns (proxy, the NAME its XCLIENT carried)."""
    recorder.configure(extra_caps=["XCLIENT"])
    p = rdns_proxy(tproxy, dns, **settings)
    c = raw(p)
    if preamble:
        c.send(preamble)
    c.greet("client.example")
    send_message(c).expect(250)
    return p, xclient_name(recorder)


def test_xclient_name_forward_confirmed(tproxy, raw, recorder, dns):
    dns.ptr("127.0.0.1", "client.rdns.test").a("client.rdns.test", "192.0.2.1", "127.0.0.1")
    p, name = name_sent(tproxy, raw, recorder, dns)
    assert name == "client.rdns.test"
    assert p.wait_log(r"client=127\.0\.0\.1:\d+ name=client\.rdns\.test", timeout=BOUND)


@pytest.mark.parametrize("case", ["no_ptr", "not_confirmed", "no_address", "not_a_hostname"])
def test_xclient_name_unavailable(tproxy, raw, recorder, dns, case):
    if case == "not_confirmed":  # the PTR names a host that is somewhere else
        dns.ptr("127.0.0.1", "forged.rdns.test").a("forged.rdns.test", "192.0.2.9")
    elif case == "no_address":
        dns.ptr("127.0.0.1", "gone.rdns.test")
    elif case == "not_a_hostname":  # would go into XCLIENT and logs as is
        dns.ptr("127.0.0.1", "bad[name].rdns.test").a("bad[name].rdns.test", "127.0.0.1")
    p, name = name_sent(tproxy, raw, recorder, dns)
    assert name == "[UNAVAILABLE]"
    assert p.wait_log(r"client=127\.0\.0\.1:\d+ name=unknown(?! \()", timeout=BOUND)


def test_xclient_name_dns_timeout(tproxy, raw, recorder, dns):
    """No answer: EHLO waits dns_timeout at most, then NAME=[TEMPUNAVAIL]."""
    dns.never("in-addr.arpa")
    p, name = name_sent(tproxy, raw, recorder, dns, dns_timeout="300ms")
    assert name == "[TEMPUNAVAIL]"
    assert p.wait_log(r"name=unknown \(temporary DNS failure\)", timeout=BOUND)


def test_xclient_name_ipv6(tproxy, raw, recorder, dns):
    dns.ptr("2001:db8::25", "v6.rdns.test").aaaa("v6.rdns.test", "2001:db8::25")
    _, name = name_sent(tproxy, raw, recorder, dns, preamble=proxy_v1("2001:db8::25", 40000, "2001:db8::1", 25),
                        proxy_trusted="127.0.0.1/32", listen_opts="proxy_protocol")
    assert name == "v6.rdns.test"
    assert dns.questions(qtype="PTR")[0].lname.endswith(".ip6.arpa")


def test_client_hangs_up_while_name_pending(tproxy, raw, recorder, dns):
    """EHLO waits on the lookup; the client leaves: no crash, no leak (ASan),
    and the proxy serves the next client."""
    dns.delay("in-addr.arpa", 1.0)
    recorder.configure(extra_caps=["XCLIENT"])
    p = rdns_proxy(tproxy, dns, dns_timeout="3s")
    c = raw(p)
    c.banner().expect(220)
    c.send(b"EHLO client.example\r\n")
    # The EHLO is in and the lookup still waits on the slow answer.
    assert recorder.wait_command("EHLO", timeout=BOUND)
    assert dns.wait_questions(1, timeout=BOUND)
    assert not xclient_lines(recorder)
    c.close()
    c2 = raw(p)
    c2.greet("client.example")
    send_message(c2).expect(250)
    assert p.alive()


def test_no_lookup_once_backend_lacks_xclient_name(tproxy, raw, recorder, dns):
    """The first session learns that the backend takes no XCLIENT NAME; the
    next ones do not ask DNS at all."""
    dns.ptr("127.0.0.1", "client.rdns.test").a("client.rdns.test", "127.0.0.1")
    recorder.configure(extra_caps=["XCLIENT ADDR HELO"])
    p = rdns_proxy(tproxy, dns)
    for _ in range(3):
        c = raw(p)
        c.greet("client.example")
        send_message(c).expect(250)
        c.cmd("QUIT").expect(221)
    # Asked once, by the first session, before the backend's EHLO said no.
    assert len(dns.questions(qtype="PTR")) == 1
    assert "NAME" not in xclient_attrs(xclient_lines(recorder)[:1])


def test_client_rdns_no_asks_nothing(tproxy, raw, recorder, dns):
    dns.ptr("127.0.0.1", "client.rdns.test").a("client.rdns.test", "127.0.0.1")
    recorder.configure(extra_caps=["XCLIENT"])
    p = tproxy(client_rdns="no", dns_server=dns.address)
    c = raw(p)
    c.greet("client.example")
    send_message(c).expect(250)
    assert xclient_name(recorder) == "[UNAVAILABLE]"
    assert dns.questions() == []


def test_postfix_sees_client_name(tproxy, raw, postfix, dns):
    """Postfix's Received header and log carry the name, not "unknown"."""
    dns.ptr(OTHER, "client.rdns.test").a("client.rdns.test", OTHER)
    p = rdns_proxy(tproxy, dns, backend=postfix.addr)
    c = raw(p, source=(OTHER, 0))
    session(c)
    [m] = postfix.wait_messages(1)
    assert received_from(m) == (HELO, "client.rdns.test", OTHER)
    assert f"client=client.rdns.test[{OTHER}]" in postfix.since()
