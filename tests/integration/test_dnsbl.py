"""The dnsbl plugin: the client's address against DNS blocklists (issue 15).

The section's resolver (dns_server =) is kit.dnsserver.DnsServer on
127.0.0.1, which answers from the records a test gives it and logs every
question: which names were asked, when, and when the answer went out. A
plain connection comes from 127.0.0.1 (listed as 1.0.0.127.ZONE); other
addresses, IPv6 among them, come through a PROXY protocol listener.
"""

import ipaddress
import time

import pytest

from kit.dnsserver import DnsServer, reverse_name
from kit.haproxy import proxy_v1
from kit.proxy import Proxy, run_check
from test_auth import plain
from test_tls import raw, starttls, tls, tls_keys, tproxy  # noqa: F401 (fixtures)

ZONE = "bl.test"
OTHER = "other.test"
BOUND = 10.0  # how long we wait for something that must happen
BODY = b"Subject: dnsbl test\r\n\r\nhello\r\n.\r\n"
REPLY = "Service unavailable; client [{ip}] blocked using {zone}"


def section(dns, *zones, **keys):
    d = {"zone": list(zones) or [f"{ZONE} weight=5"], "dns_server": dns.address, "timeout": "1s"}
    d.update(keys)
    return ("plugin dnsbl", {k: v for k, v in d.items() if v is not None})


def start(proxy, dns, *zones, **keys):
    return proxy(sections=[section(dns, *zones, **keys)])


def asked(dns, zone=ZONE):
    """The questions for names under zone."""
    z = zone.lower()
    return [q for q in dns.questions() if q.lname.endswith("." + z)]


def session(c, rcpts=("bob@rcpt.test",), sender="alice@sender.test"):
    """Greet, MAIL, RCPTs, the message if one RCPT passed: the RCPT replies."""
    c.greet()
    c.cmd(f"MAIL FROM:<{sender}>").expect(250)
    replies = [c.cmd(f"RCPT TO:<{r}>") for r in rcpts]
    if any(r.code == 250 for r in replies):
        c.message(BODY).expect(250)
    c.cmd("QUIT")
    return replies


def summary(p, n=1):
    s = p.wait_summaries(n, timeout=BOUND)
    assert len(s) >= n, p.log()
    return s[n - 1]


def log_has(p, pattern, count=1):
    found = p.wait_log(pattern, timeout=BOUND, count=count)
    assert len(found) >= count, f"{pattern!r} not in the log:\n{p.log()}"


def delivered(recorder, n=1):
    deadline = time.monotonic() + BOUND
    while len(recorder.delivered()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return [r for t in recorder.delivered() for r in t.recipients]


def refused(r, code=550, ip="127.0.0.1", zone=ZONE):
    assert r.code == code and r.enhanced == "5.7.1", r
    assert REPLY.format(ip=ip, zone=zone) in r.text, r


# ---- listed, not listed --------------------------------------------------


def test_listed_refuses_rcpt_but_postmaster(proxy, client, recorder, dns):
    dns.listing(ZONE, "127.0.0.1")
    p = start(proxy, dns)
    r = session(client(p), rcpts=("bob@rcpt.test", "postmaster@rcpt.test", "Postmaster"))
    refused(r[0])
    r[1].expect(250)
    r[2].expect(250)
    assert delivered(recorder) == ["postmaster@rcpt.test", "Postmaster"]
    # The listing's weight is on the summary line, under the zone's symbol.
    s = summary(p)
    assert float(s["score"]) == 5 and s["symbols"] == "RBL_BL_TEST(5)", s
    log_has(p, r"dnsbl: client 127\.0\.0\.1 listed in bl\.test \(127\.0\.0\.2\), weight 5, action rcpt")
    # One question, the RFC 5782 name.
    assert [q.lname for q in asked(dns)] == ["1.0.0.127.bl.test"]


def test_not_listed_passes(proxy, client, recorder, dns):
    p = start(proxy, dns)
    session(client(p))[0].expect(250)
    assert delivered(recorder) == ["bob@rcpt.test"]
    s = summary(p)
    assert s.get("symbols", "") in ("", "-") and float(s.get("score", "0") or 0) == 0, s
    assert len(asked(dns)) == 1
    assert dns.questions()[0].rcode == 3  # NXDOMAIN


def test_exempt_recipients_key(proxy, client, recorder, dns):
    dns.listing(ZONE, "127.0.0.1")
    p = start(proxy, dns, exempt_recipients="abuse hostmaster@rcpt.test")
    r = session(client(p), rcpts=("postmaster@rcpt.test", "abuse@x.test", "HostMaster@RCPT.test",
                                   "hostmaster@other.test"))
    refused(r[0])  # postmaster is not exempt any more: the key replaces the default
    r[1].expect(250)
    r[2].expect(250)
    refused(r[3])


def test_reject_at_connect(proxy, client, recorder, dns):
    dns.listing(ZONE, "127.0.0.1")
    p = start(proxy, dns, f"{ZONE} action=reject")
    c = client(p)
    r = c.banner()
    refused(r, code=554)
    log_has(p, r"action reject")


def test_score_only(proxy, client, recorder, dns):
    dns.listing(ZONE, "127.0.0.1")
    dns.listing(OTHER, "127.0.0.1", "127.0.0.3")
    p = start(proxy, dns, f"{ZONE} weight=2.5 action=score", f"{OTHER} weight=1 action=score symbol=OTHER_BL")
    session(client(p))[0].expect(250)
    assert delivered(recorder) == ["bob@rcpt.test"]
    s = summary(p)
    assert float(s["score"]) == 3.5, s
    assert sorted(s["symbols"].split(",")) == ["OTHER_BL(1)", "RBL_BL_TEST(2.5)"], s


def test_scores_per_transaction(proxy, client, recorder, dns):
    """Each transaction gets the weights once, from one lookup."""
    dns.listing(ZONE, "127.0.0.1")
    p = start(proxy, dns, f"{ZONE} weight=2 action=score")
    c = client(p)
    c.greet()
    for i in range(2):
        c.cmd("MAIL FROM:<alice@sender.test>").expect(250)
        c.cmd("RCPT TO:<bob@rcpt.test>").expect(250)
        c.message(BODY).expect(250)
    assert [float(s["score"]) for s in p.wait_summaries(2, timeout=BOUND)] == [2, 2]
    assert len(asked(dns)) == 1


# ---- answer codes --------------------------------------------------------


def test_codes_filter(proxy, client, recorder, dns):
    dns.listing(ZONE, "127.0.0.1", "127.0.0.20")  # not among ZONE's codes
    dns.listing(OTHER, "127.0.0.1", "127.0.0.4")
    p = start(proxy, dns, f"{ZONE} weight=5 codes=127.0.0.2-127.0.0.11",
              f"{OTHER} weight=1 action=score codes=127.0.0.2,127.0.0.4-127.0.0.7")
    session(client(p))[0].expect(250)
    s = summary(p)
    assert s["symbols"] == "RBL_OTHER_TEST(1)", s
    log_has(p, r"dnsbl: bl\.test answered 127\.0\.0\.20 for 1\.0\.0\.127\.bl\.test: not among its codes")


def test_codes_network(proxy, client, recorder, dns):
    dns.listing(ZONE, "127.0.0.1", "127.0.1.9")
    p = start(proxy, dns, f"{ZONE} codes=127.0.1.0/24")
    refused(session(client(p))[0])


@pytest.mark.parametrize("code", ["127.255.255.254", "127.255.255.255", "127.255.255.252"])
def test_refusal_answer_is_an_error(proxy, client, recorder, dns, code):
    dns.listing(ZONE, "127.0.0.1", code)
    p = start(proxy, dns)
    session(client(p))[0].expect(250)
    assert delivered(recorder) == ["bob@rcpt.test"]
    log_has(p, rf"dnsbl: bl\.test answered {code.replace('.', '[.]')} for 1\.0\.0\.127\.bl\.test: "
               r"the list refuses our queries")
    assert "listed in" not in p.log()
    # Not cached: the next client asks again.
    session(client(p))[0].expect(250)
    assert len(asked(dns)) == 2


def test_answer_outside_127_is_an_error(proxy, client, recorder, dns):
    dns.listing(ZONE, "127.0.0.1", "192.0.2.80")
    p = start(proxy, dns)
    session(client(p))[0].expect(250)
    log_has(p, r"lookup of 1\.0\.0\.127\.bl\.test failed \(answer 192\.0\.2\.80 is outside 127\.0\.0\.0/8")


# ---- failures ------------------------------------------------------------


def test_timeout_passes_and_logs_once_a_minute(proxy, client, recorder, dns):
    dns.never(ZONE)
    p = start(proxy, dns)
    session(client(p))[0].expect(250)
    log_has(p, r"dnsbl: lookup of 1\.0\.0\.127\.bl\.test failed \(no answer within 1000 ms\): "
               r"the client passes as not listed in bl\.test")
    # The second failure within the minute is counted, not logged.
    session(client(p))[0].expect(250)
    assert delivered(recorder, 2) == ["bob@rcpt.test", "bob@rcpt.test"]
    assert len(p.wait_log(r"dnsbl: lookup of", timeout=0.5, count=2)) == 1, p.log()
    assert len(asked(dns)) >= 2  # a failure is never cached


def test_servfail_passes(proxy, client, recorder, dns):
    dns.servfail(ZONE)
    p = start(proxy, dns)
    session(client(p))[0].expect(250)
    # evdns retries a SERVFAIL, then gives up (it reports a timeout or SERVFAIL).
    log_has(p, r"lookup of 1\.0\.0\.127\.bl\.test failed \((SERVFAIL|timeout)\)")


def test_one_zone_down_others_count(proxy, client, recorder, dns):
    dns.never(OTHER)
    dns.listing(ZONE, "127.0.0.1")
    p = start(proxy, dns, f"{ZONE} weight=5", f"{OTHER} weight=1")
    refused(session(client(p))[0])
    assert summary(p)["symbols"] == "RBL_BL_TEST(5)"


def test_zones_asked_in_parallel(proxy, client, recorder, dns):
    dns.delay(ZONE, 0.6)
    dns.delay(OTHER, 0.6)
    dns.listing(ZONE, "127.0.0.1")
    dns.listing(OTHER, "127.0.0.1")
    p = start(proxy, dns, f"{ZONE} weight=1", f"{OTHER} weight=2", timeout="5s")
    refused(session(client(p))[0])
    a, b = asked(dns, ZONE)[0], asked(dns, OTHER)[0]
    # Both questions were out before either answer came back.
    assert max(a.at, b.at) < min(a.answered_at, b.answered_at), (a, b)
    assert float(summary(p)["score"]) == 3


def test_host_gives_up_during_lookup(proxy, client, recorder, dns):
    """filter_timeout passes first: the host cancels the call, and the
    plugin cancels its queries (evdns calls back with DNS_ERR_CANCEL)."""
    dns.delay(ZONE, 2.0)
    dns.listing(ZONE, "127.0.0.1")
    p = start(proxy, dns, timeout="5s", filter_timeout="1s")
    c = client(p)
    c.greet()
    # on_error is accept for dnsbl: the MAIL passes.
    c.cmd("MAIL FROM:<alice@sender.test>", timeout=BOUND).expect(250)
    log_has(p, r"dnsbl: lookup for session \S+ cancelled \(the session ended, or filter_timeout passed\)")
    c.cmd("RCPT TO:<bob@rcpt.test>").expect(250)
    c.message(BODY).expect(250)
    time.sleep(1.5)  # the answer of the cancelled query is long due
    dns.clear_log()
    dns.reset()
    dns.listing(ZONE, "127.0.0.1")
    refused(session(client(p))[0])
    assert len(asked(dns)) == 1  # the cancelled answer was not cached


# ---- the cache -----------------------------------------------------------


def test_cache_hit_sends_no_query(proxy, client, recorder, dns):
    dns.listing(ZONE, "127.0.0.1")
    p = start(proxy, dns, f"{ZONE} weight=5", f"{OTHER} weight=1")  # OTHER: NXDOMAIN
    refused(session(client(p))[0])
    assert len(dns.questions()) == 2
    refused(session(client(p))[0])
    assert len(dns.questions()) == 2, dns.questions()
    log_has(p, r"listed in bl\.test \(127\.0\.0\.2, cached\)")
    assert summary(p, 2)["symbols"] == "RBL_BL_TEST(5)"


def test_cache_expires(proxy, client, recorder, dns):
    dns.listing(ZONE, "127.0.0.1")
    p = start(proxy, dns, f"{ZONE} weight=5", f"{OTHER} weight=1", max_ttl="1s", negative_ttl="1s")
    refused(session(client(p))[0])
    time.sleep(1.1)
    refused(session(client(p))[0])
    assert len(dns.questions()) == 4


def test_cache_size_zero(proxy, client, recorder, dns):
    p = start(proxy, dns, cache_size="0")
    session(client(p))
    session(client(p))
    assert len(asked(dns)) == 2


def test_cache_bounded_lru(tproxy, raw, recorder, dns):
    p = tproxy(listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32",
               sections=[section(dns, cache_size="2")])

    def from_ip(ip):
        c = raw(p.ports["pp"])
        c.send(proxy_v1(ip, 40000, "192.0.2.25", 25))
        session(c)

    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.3", "192.0.2.1", "192.0.2.2"):
        from_ip(ip)
    # .1 stays (recently used); .2 was the least recently used when .3 came.
    assert [q.lname.split(".")[0] for q in asked(dns)] == ["1", "2", "3", "2"]


# ---- addresses -----------------------------------------------------------


@pytest.mark.parametrize("ip,name", [
    ("2001:db8::7", "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"),
    ("2001:DB8:ab:cd::1:2", reverse_name("2001:db8:ab:cd::1:2")),
    ("192.0.2.7", "7.2.0.192"),
])
def test_client_address_reversed(tproxy, raw, recorder, dns, ip, name):
    dns.listing(ZONE, ip)
    p = tproxy(listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32",
               sections=[section(dns)])
    c = raw(p.ports["pp"])
    c.send(proxy_v1(ip, 40001, "2001:db8::25" if ":" in ip else "192.0.2.25", 25))
    shown = ipaddress.ip_address(ip).compressed  # as the daemon writes it
    r = session(c)[0]
    refused(r, ip=shown)
    assert [q.lname for q in asked(dns)] == [f"{name}.{ZONE}"]


# ---- who is not checked --------------------------------------------------


def test_trusted_client_not_looked_up(proxy, client, recorder, dns):
    dns.listing(ZONE, "127.0.0.1")
    p = proxy(trusted_networks="127.0.0.0/8", sections=[section(dns, f"{ZONE} action=reject")])
    session(client(p))[0].expect(250)
    assert delivered(recorder) == ["bob@rcpt.test"]
    assert dns.questions() == []


def test_authenticated_client_not_checked(tproxy, raw, recorder, tls, dns):
    dns.listing(ZONE, "127.0.0.1")
    recorder.configure(extra_caps=["AUTH PLAIN LOGIN"])
    recorder.reply("AUTH", "235 2.7.0 Authentication successful")
    p = tproxy(sections=[section(dns)], **tls_keys(tls))
    c = raw(p)
    c.greet()
    starttls(c, tls.client_context())
    c.ehlo()
    c.cmd("AUTH PLAIN " + plain("alice", "secret")).expect(235)
    c.cmd("MAIL FROM:<alice@sender.test>").expect(250)
    c.cmd("RCPT TO:<bob@rcpt.test>").expect(250)
    c.message(BODY).expect(250)
    log_has(p, r"dnsbl: authenticated client \(alice\): not checked")
    assert dns.questions() == []  # looked up at MAIL, so never for this client
    # Without AUTH the same client is refused.
    refused(session(raw(p))[0])


# ---- the resolver --------------------------------------------------------


def test_dns_server_key_or_the_daemons(proxy, client, recorder, dns):
    daemons = DnsServer().start()
    try:
        dns.listing(ZONE, "127.0.0.1")
        # The section's own resolver: the daemon's is never asked.
        p = proxy(dns_server=daemons.address, sections=[section(dns)])
        refused(session(client(p))[0])
        assert daemons.questions() == [] and len(asked(dns)) == 1
        # Without the key, the daemon's resolver (which lists nothing).
        q = proxy(dns_server=daemons.address, sections=[section(dns, dns_server=None)])
        session(client(q))[0].expect(250)
        assert [x.lname for x in asked(daemons)] == ["1.0.0.127.bl.test"]
    finally:
        daemons.stop()


# ---- configuration -------------------------------------------------------


def test_bad_config_refused(tmp_path, recorder, dns):
    cases = [
        ({"zone": None}, "no zone"),
        ({"zone": "bl..test"}, 'bad zone "bl..test"'),
        ({"zone": "bl.test weight=lots"}, 'weight: bad value "lots"'),
        ({"zone": "bl.test weight=5000"}, "weight: bad value"),
        ({"zone": "bl.test action=drop"}, 'action: bad value "drop": want reject, rcpt or score'),
        ({"zone": "bl.test action=score"}, "action=score needs a weight"),
        ({"zone": "bl.test codes=127.0.0.2-127.255.255.255"}, "127.255.255.0/24"),
        ({"zone": "bl.test codes=10.0.0.1"}, 'codes: bad value "10.0.0.1"'),
        ({"zone": "bl.test codes=127.0.0.5-127.0.0.2"}, "codes: bad value"),
        ({"zone": "bl.test codes=127.0.0.1/24"}, "codes: bad value"),
        ({"zone": "bl.test symbol=lower"}, 'symbol: bad value "lower"'),
        ({"zone": "bl.test colour=red"}, 'unknown attribute "colour"'),
        ({"zone": "bl.test weight"}, 'is not NAME=VALUE'),
        ({"zone": ["bl.test", "BL.test."]}, "named twice"),
        ({"dns_server": "resolver.example"}, 'dns_server: bad value "resolver.example"'),
        ({"timeout": "5m"}, 'timeout: bad value "5m"'),
        ({"cache_size": "-1"}, 'cache_size: bad value "-1"'),
        ({"negative_ttl": "soon"}, "negative_ttl: bad value"),
        ({"exempt_recipients": "<postmaster>"}, "exempt_recipients: bad value"),
        ({"colour": "grey"}, "colour"),
    ]
    for keys, want in cases:
        p = Proxy(tmp_path / "check", recorder.address, sections=[section(dns, **keys)])
        p.write_config()
        rc, out = run_check(p.config_path)
        assert rc != 0 and want in out, (keys, out)
    p = Proxy(tmp_path / "check", recorder.address, sections=[section(
        dns, "zen.spamhaus.org weight=5 action=rcpt codes=127.0.0.2-127.0.0.11 symbol=RBL_ZEN",
        "b.barracudacentral.org weight=-0.5 action=score", "x.test action=reject codes=127.0.0.2,127.0.1.0/24",
        dns_server="[::1]:5353", timeout="800ms", cache_size="100", negative_ttl="0", max_ttl="1h",
        exempt_recipients="postmaster, abuse@example.org")])
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc == 0, out
