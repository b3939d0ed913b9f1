"""The Lua host's DNS helpers: dns.a/aaaa/ptr, dns.rbl, dns.rhsbl.

The daemon's resolver (dns_server, dns_timeout: 1s per attempt, 2 attempts)
points at kit.dnsserver.DnsServer, whose question log shows what was asked
(name as asked, type, arrival time) and when each answer went out.
"""

import socket
import time

import pytest

from kit.dnsserver import ptr_name, reverse_name
from kit.messages import stuff
from test_lua import (
    BODY,
    FILTER_FAILURE,
    assert_delivered,
    lua_proxy,
    report,
    run_session,
)

DNS_TIMEOUT = 1.0  # seconds per attempt, as lua_proxy configures it
ATTEMPTS = 2  # the daemon's evdns setting


def zone_questions(dns, zone):
    """The questions for names under zone (any case), in order."""
    z = zone.lower()
    return [q for q in dns.questions() if q.lname == z or q.lname.endswith("." + z)]


def mail_timed(c, sender="a@x.test"):
    """(reply to MAIL, seconds it took)."""
    t0 = time.monotonic()
    r = c.cmd(f"MAIL FROM:<{sender}>", timeout=30)
    return r, time.monotonic() - t0


# ---- dns.a / dns.aaaa / dns.ptr ---------------------------------------------------


def test_a_aaaa_ptr(recorder, proxy, client, tmp_path, dns):
    dns.a("host.test", "192.0.2.1", "192.0.2.2")
    dns.aaaa("host.test", "2001:db8::1")
    dns.a("v4only.test", "192.0.2.9")
    dns.ptr("192.0.2.1", "ptr.host.test")
    dns.ptr("2001:db8::1", "six.host.test")
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender)
      local r = {}
      r.a, r.a_err = dns.a("host.test")
      r.a_case = dns.a("HoSt.TeSt")
      r.aaaa, r.aaaa_err = dns.aaaa("host.test")
      r.ptr, r.ptr_err = dns.ptr("192.0.2.1")
      r.ptr6 = dns.ptr("2001:db8::1")
      r.nx, r.nx_err = dns.a("nope.test")
      r.nodata, r.nodata_err = dns.aaaa("v4only.test")
      r.noptr = dns.ptr("192.0.2.200")
      T("dns", r)
    end
    """, dns=dns)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    got = report(p, "dns")
    assert sorted(got["a"]) == ["192.0.2.1", "192.0.2.2"], got
    assert sorted(got["a_case"]) == ["192.0.2.1", "192.0.2.2"], got
    assert got["aaaa"] == ["2001:db8::1"], got
    assert got["ptr"] == ["ptr.host.test"], got
    assert got["ptr6"] == ["six.host.test"], got
    # NXDOMAIN and "no data" are empty answers, not errors.
    assert got["nx"] == [] and got["nodata"] == [] and got["noptr"] == [], got
    for k in ("a_err", "aaaa_err", "ptr_err", "nx_err", "nodata_err"):
        assert k not in got, got
    # The reversed names asked for PTR.
    asked = {q.lname for q in dns.questions(qtype="PTR")}
    assert ptr_name("192.0.2.1") in asked and ptr_name("2001:db8::1") in asked, asked
    assert [q.name for q in dns.questions(qtype="A") if q.lname == "host.test"][-1] in ("HoSt.TeSt", "host.test")


def test_lookup_errors(recorder, proxy, client, tmp_path, dns):
    dns.servfail("broken.test")
    dns.never("slow.test")
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender)
      local r = {}
      local t0 = smtp.now()
      r.sf, r.sf_err = dns.a("broken.test")
      r.to, r.to_err = dns.a("x.slow.test")
      r.took = smtp.now() - t0
      T("errors", r)
    end
    """, dns=dns, keys={"hook_timeout": "20s"})
    c = client(p)
    c.greet()
    r, took = mail_timed(c)
    r.expect(250)
    got = report(p, "errors")
    assert "sf" not in got and isinstance(got.get("sf_err"), str) and got["sf_err"], got
    assert "to" not in got and "timeout" in got.get("to_err", "").lower(), got
    assert took < 2 * DNS_TIMEOUT * ATTEMPTS + 3, took


def test_dns_in_every_hook(recorder, proxy, client, tmp_path, dns):
    dns.a("host.test", "192.0.2.1")
    hooks = ["on_connect(conn)", "on_helo(conn, name)", "on_mail(tx, s)", "on_rcpt(tx, r)", "on_data(tx, m)"]
    script = "".join(f'function {h} T("{h.split("(")[0]}", dns.a("host.test")) end\n' for h in hooks)
    p = lua_proxy(proxy, tmp_path, script, dns=dns)
    replies, _ = run_session(client(p))
    assert replies["data"].code == 250
    for h in hooks:
        assert report(p, h.split("(")[0]) == ["192.0.2.1"]
    assert_delivered(recorder)


def test_dns_inside_own_coroutine(recorder, proxy, client, tmp_path, dns):
    dns.a("host.test", "192.0.2.1")
    dns.listing("bl.test", "192.0.2.99")
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender)
      local lookup = coroutine.wrap(function(name)
        local first = dns.a(name)
        local again = coroutine.yield(first[1])
        return again .. "/" .. dns.a(name)[1]
      end)
      local one = lookup("host.test")
      local two = lookup("second")
      local co = coroutine.create(function() return dns.rbl("192.0.2.99", "bl.test") end)
      local ok, listed = coroutine.resume(co)
      T("co", {one = one, two = two, ok = ok, listed = listed, status = coroutine.status(co)})
    end
    """, dns=dns)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    got = report(p, "co")
    assert got == {"one": "192.0.2.1", "two": "second/192.0.2.1", "ok": True,
                   "listed": {"bl.test": "127.0.0.2"}, "status": "dead"}, got


# ---- dns.rbl ------------------------------------------------------------------------


RBL_SCRIPT = """
function on_mail(tx, sender)
  local t0 = smtp.now()
  local listed, errors = dns.rbl(IP, ZONES)
  T("rbl", {listed = listed, errors = errors, errors_nil = errors == nil, took = smtp.now() - t0})
end
"""


def rbl_proxy(proxy, tmp_path, dns, ip, zones, **kw):
    lua_zones = '"%s"' % zones if isinstance(zones, str) else "{%s}" % ", ".join(f'"{z}"' for z in zones)
    script = f'IP = "{ip}"\nZONES = {lua_zones}\n' + RBL_SCRIPT
    return lua_proxy(proxy, tmp_path, script, dns=dns, **kw)


def run_rbl(p, client):
    c = client(p)
    c.greet()
    r, took = mail_timed(c)
    r.expect(250)
    return report(p, "rbl"), took


def test_rbl_listed_and_not_listed(recorder, proxy, client, tmp_path, dns):
    dns.listing("bl.test", "192.0.2.99")
    dns.listing("other.test", "192.0.2.99", "127.0.0.10", "127.0.0.11")
    p = rbl_proxy(proxy, tmp_path, dns, "192.0.2.99", ["bl.test", "clean.test", "other.test"])
    got, _ = run_rbl(p, client)
    listed = got["listed"]
    assert listed["bl.test"] == "127.0.0.2", got
    assert listed["other.test"] in ("127.0.0.10", "127.0.0.11"), got
    assert "clean.test" not in listed, got
    assert got["errors_nil"] is True, got
    # RFC 5782: octets reversed, then the zone; an A question each.
    for z in ("bl.test", "clean.test", "other.test"):
        qs = zone_questions(dns, z)
        assert [(q.lname, q.qtype) for q in qs][:1] == [(f"99.2.0.192.{z}", "A")], qs


def test_rbl_zone_as_string_and_not_listed(recorder, proxy, client, tmp_path, dns):
    p = rbl_proxy(proxy, tmp_path, dns, "192.0.2.1", "clean.test")
    got, _ = run_rbl(p, client)
    assert got["listed"] == [] and got["errors_nil"] is True, got
    assert [q.lname for q in zone_questions(dns, "clean.test")][:1] == ["1.2.0.192.clean.test"]


def test_rbl_client_ip_at_connect(recorder, proxy, client, tmp_path, dns):
    """The usual use: reject a listed client at connect."""
    dns.listing("bl.test", "127.0.0.1")
    p = lua_proxy(proxy, tmp_path, """
    function on_connect(conn)
      local listed = dns.rbl(conn.client_ip, {"bl.test"})
      if listed["bl.test"] then
        return smtp.reject(554, "listed at bl.test: " .. listed["bl.test"])
      end
    end
    """, dns=dns)
    c = client(p)
    assert c.banner().first == "554 5.7.1 listed at bl.test: 127.0.0.2"
    time.sleep(0.2)
    assert recorder.conns() == []
    assert [q.lname for q in zone_questions(dns, "bl.test")] == ["1.0.0.127.bl.test"]


@pytest.mark.parametrize("answer", ["127.255.255.254", "127.255.255.252", "127.255.255.255"])
def test_rbl_error_codes_are_errors(recorder, proxy, client, tmp_path, dns, answer):
    dns.listing("bl.test", "192.0.2.99", answer)
    dns.listing("good.test", "192.0.2.99")
    p = rbl_proxy(proxy, tmp_path, dns, "192.0.2.99", ["bl.test", "good.test"])
    got, _ = run_rbl(p, client)
    assert got["listed"] == {"good.test": "127.0.0.2"}, got
    assert got["errors"] == {"bl.test": answer}, got


def test_rbl_timeout_is_an_error(recorder, proxy, client, tmp_path, dns):
    dns.never("dead.test")
    dns.listing("bl.test", "192.0.2.99")
    p = rbl_proxy(proxy, tmp_path, dns, "192.0.2.99", ["dead.test", "bl.test", "clean.test"])
    got, took = run_rbl(p, client)
    assert got["listed"] == {"bl.test": "127.0.0.2"}, got
    assert list(got["errors"]) == ["dead.test"], got
    assert "timeout" in got["errors"]["dead.test"].lower(), got
    # Within dns_timeout x attempts, bounded generously.
    assert DNS_TIMEOUT * 0.9 <= took < DNS_TIMEOUT * ATTEMPTS + 3, took
    assert len(zone_questions(dns, "dead.test")) >= 1


def test_rbl_servfail_is_an_error(recorder, proxy, client, tmp_path, dns):
    dns.servfail("broken.test")
    p = rbl_proxy(proxy, tmp_path, dns, "192.0.2.99", ["broken.test"])
    got, took = run_rbl(p, client)
    assert got["listed"] == [], got
    assert list(got["errors"]) == ["broken.test"] and got["errors"]["broken.test"], got
    assert took < DNS_TIMEOUT * ATTEMPTS + 3, took


@pytest.mark.parametrize("ip", ["2001:db8::1", "2001:DB8:0:0::1", "2001:db8:1234:5678:9abc:def0:1:2"])
def test_rbl_ipv6_nibbles(recorder, proxy, client, tmp_path, dns, ip):
    dns.listing("bl6.test", ip)
    p = rbl_proxy(proxy, tmp_path, dns, ip, ["bl6.test"])
    got, _ = run_rbl(p, client)
    assert got["listed"] == {"bl6.test": "127.0.0.2"}, got
    want = f"{reverse_name(ip)}.bl6.test"
    assert len(reverse_name(ip).split(".")) == 32
    assert [q.lname for q in zone_questions(dns, "bl6.test")][:1] == [want]


def _ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_rbl_ipv6_client_on_the_wire(recorder, tmp_path, dns):
    """A client connecting from ::1 is looked up by nibbles."""
    import kit.proxy as kp
    from kit.smtpclient import RawClient
    from test_lua import lua_section

    dns.listing("bl6.test", "::1")
    sec = lua_section(tmp_path, """
    function on_connect(conn)
      T("ip", conn.client_ip)
      local listed = dns.rbl(conn.client_ip, "bl6.test")
      if listed["bl6.test"] then return smtp.reject(554, "six listed") end
    end
    """)
    p = kp.Proxy(str(tmp_path / "six"), recorder.address, sections=[sec], dns_server=dns.address,
                 dns_timeout="1s")
    port6 = kp.free_port()
    p.settings["listen"] = [f"127.0.0.1:{p.port}", f"[::1]:{port6}"]
    p.start()
    try:
        with RawClient(port6, host="::1") as c6:
            assert c6.banner().first == "554 5.7.1 six listed"
        assert report(p, "ip") == "::1"
        assert [q.lname for q in zone_questions(dns, "bl6.test")][:1] == [f"{reverse_name('::1')}.bl6.test"]
    finally:
        p.stop()
    assert p.returncode == 0 and not p.sanitizer_reports(), p.log()


def test_rbl_mixed_case_zone(recorder, proxy, client, tmp_path, dns):
    dns.listing("bl.test", "192.0.2.99")
    dns.listing("other.test", "192.0.2.99", "127.0.0.4")
    p = rbl_proxy(proxy, tmp_path, dns, "192.0.2.99", ["Bl.TEST", "OTHER.test"])
    got, _ = run_rbl(p, client)
    listed = {k.lower(): v for k, v in got["listed"].items()}
    assert listed == {"bl.test": "127.0.0.2", "other.test": "127.0.0.4"}, got
    # Reported under the zone as the script named it (or its lower case).
    assert set(got["listed"]) in ({"Bl.TEST", "OTHER.test"}, {"bl.test", "other.test"}), got
    assert got["errors_nil"] is True


def test_rbl_zones_asked_in_parallel(recorder, proxy, client, tmp_path, dns):
    zones = ["slow1.test", "slow2.test", "slow3.test", "fast.test"]
    delay = 0.7
    for z in zones[:3]:
        dns.listing(z, "192.0.2.99")
        dns.delay(z, delay)
    dns.listing("fast.test", "192.0.2.99")
    # dns_timeout above the delay: no retransmissions muddle the log.
    p = rbl_proxy(proxy, tmp_path, dns, "192.0.2.99", zones, dns_timeout="3s")
    got, took = run_rbl(p, client)
    assert sorted(got["listed"]) == sorted(zones), got
    # One after the other would take 3 x 0.7 s.
    assert took < 2 * delay + 0.2, took
    assert got["took"] < 2 * delay, got
    qs = [q for z in zones for q in zone_questions(dns, z)]
    assert len(qs) == len(zones), qs
    # Every question arrived before the first slow answer went out.
    first_slow_answer = min(q.answered_at for q in qs if not q.lname.endswith("fast.test"))
    assert max(q.at for q in qs) < first_slow_answer, [(q.name, q.at, q.answered_at) for q in qs]


def test_rbl_many_zones(recorder, proxy, client, tmp_path, dns):
    zones = [f"z{i}.test" for i in range(20)]
    for z in zones[::2]:
        dns.listing(z, "192.0.2.5")
    p = rbl_proxy(proxy, tmp_path, dns, "192.0.2.5", zones)
    got, _ = run_rbl(p, client)
    assert sorted(got["listed"]) == sorted(zones[::2]), got
    assert got["errors_nil"] is True


@pytest.mark.parametrize("arg", ['"not an ip"', '"192.0.2"', '"192.0.2.1.5"', '""', "42"])
def test_rbl_bad_address(recorder, proxy, client, tmp_path, dns, arg):
    p = lua_proxy(proxy, tmp_path, f"""
    function on_mail(tx, sender)
      local ok, listed, errors = pcall(dns.rbl, {arg}, "bl.test")
      T("bad", {{ok = ok, listed = listed, errors = errors}})
    end
    """, dns=dns)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    got = report(p, "bad")
    # An error raised, or nothing listed: never a question built from garbage.
    assert got["ok"] is False or not got.get("listed"), got
    time.sleep(0.1)
    assert zone_questions(dns, "bl.test") == []


# ---- dns.rhsbl ------------------------------------------------------------------------


def test_rhsbl(recorder, proxy, client, tmp_path, dns):
    dns.listing("dbl.test", "bad.example", "127.0.1.2")
    dns.never("dead.test")
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender)
      local listed, errors = dns.rhsbl(sender.domain, {"dbl.test", "clean.test", "dead.test"})
      T("rhsbl", {listed = listed, errors = errors})
      if listed["dbl.test"] then return smtp.reject(554, "sender domain listed") end
    end
    """, dns=dns)
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<Someone@Bad.Example>", timeout=30).first == "554 5.7.1 sender domain listed"
    got = report(p, "rhsbl")
    assert got["listed"] == {"dbl.test": "127.0.1.2"}, got
    assert list(got["errors"]) == ["dead.test"], got
    assert [q.lname for q in zone_questions(dns, "dbl.test")][:1] == ["bad.example.dbl.test"]
    assert [q.lname for q in zone_questions(dns, "clean.test")][:1] == ["bad.example.clean.test"]
    # A clean domain goes through.
    c.cmd("MAIL FROM:<someone@good.example>", timeout=30).expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    assert_delivered(recorder)


# ---- pending lookups and the session going away ------------------------------------------


HANGUP_SCRIPT = """
function on_mail(tx, sender)
  log.info("asking %s", sender.domain)
  local listed, errors = dns.rbl("192.0.2.99", {sender.domain .. ".dead.test", "bl.test"})
  if listed["bl.test"] then return smtp.reject(554, "listed") end
end
"""


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_hangs_up_during_pending_rbl(recorder, proxy, client, tmp_path, dns, how):
    dns.never("dead.test")
    dns.listing("bl.test", "192.0.2.99")
    p = lua_proxy(proxy, tmp_path, HANGUP_SCRIPT, dns=dns)
    c = client(p)
    c.greet()
    c.send(b"MAIL FROM:<a@one.test>\r\n")
    assert dns.wait_questions(1, predicate=lambda q: q.lname.endswith("dead.test"))
    if how == "reset":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    # Past the lookup's own timeout: its late end must not touch the gone session.
    time.sleep(DNS_TIMEOUT * ATTEMPTS + 0.5)
    assert p.alive()
    c2 = client(p)
    c2.greet()
    t0 = time.monotonic()
    assert c2.cmd("MAIL FROM:<a@two.test>", timeout=30).first == "554 5.7.1 listed"
    assert time.monotonic() - t0 < DNS_TIMEOUT * ATTEMPTS + 3
    assert "MAIL" not in recorder.verbs()


def test_many_clients_hang_up_during_pending_rbl(recorder, proxy, client, tmp_path, dns):
    dns.never("dead.test")
    p = lua_proxy(proxy, tmp_path, HANGUP_SCRIPT, dns=dns)
    cs = []
    for i in range(10):
        c = client(p)
        c.greet()
        c.send(f"MAIL FROM:<a@c{i}.test>\r\n".encode())
        cs.append(c)
    assert len(dns.wait_questions(10, predicate=lambda q: q.lname.endswith("dead.test"))) >= 10
    for i, c in enumerate(cs):
        if i % 2:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
    time.sleep(DNS_TIMEOUT * ATTEMPTS + 0.5)
    assert p.alive()
    replies, _ = run_session(client(p), sender="a@fine.test")
    assert replies["data"].code == 250, replies
    assert_delivered(recorder)


@pytest.mark.parametrize("key,value", [("hook_timeout", "500ms"), ("filter_timeout", "500ms")])
def test_timeout_during_pending_rbl(recorder, proxy, client, tmp_path, dns, key, value):
    """The hook gives up (hook_timeout) or the host does (filter_timeout)
    while the lookup is still out; its late end is harmless."""
    dns.never("dead.test")
    p = lua_proxy(proxy, tmp_path, HANGUP_SCRIPT, dns=dns, keys={key: value})
    c = client(p)
    c.greet()
    r, took = mail_timed(c, "a@one.test")
    assert r.first == FILTER_FAILURE, r
    assert 0.4 <= took < 0.5 + 3, took
    time.sleep(DNS_TIMEOUT * ATTEMPTS + 0.5)
    assert p.alive()
    c.cmd("NOOP").expect(250)
    c.cmd("QUIT").expect(221)
    replies, _ = run_session(client(p), sender="a@fine.test")
    # fine.test.dead.test never answers either: the same failure, served in time.
    assert replies["mail"].first == FILTER_FAILURE, replies
