"""The rhsbl plugin: the sender's domain, the HELO name and the From:
domain against domain blocklists (issue 15).

The section's resolver is kit.dnsserver.DnsServer (dns_server =); a
domain is listed as DOMAIN.ZONE with an A record (dns.listing(zone, domain)).
"""

import time

import pytest

from kit.proxy import Proxy, run_check
from test_auth import plain
from test_tls import raw, starttls, tls, tls_keys, tproxy  # noqa: F401 (fixtures)

ZONE = "dbl.test"
OTHER = "other.test"
BOUND = 10.0
SPAM = "spam.example"


def body(sender="alice@sender.test"):
    return f"From: Alice <{sender}>\r\nSubject: rhsbl test\r\n\r\nhello\r\n.\r\n".encode()


def section(dns, *zones, **keys):
    d = {"zone": list(zones) or [f"{ZONE} weight=4"], "dns_server": dns.address, "timeout": "1s"}
    d.update(keys)
    return ("plugin rhsbl", {k: v for k, v in d.items() if v is not None})


def start(proxy, dns, *zones, **keys):
    return proxy(sections=[section(dns, *zones, **keys)])


def asked(dns, zone=ZONE):
    z = zone.lower()
    return sorted(q.lname for q in dns.questions() if q.lname.endswith("." + z))


def log_has(p, pattern, count=1):
    found = p.wait_log(pattern, timeout=BOUND, count=count)
    assert len(found) >= count, f"{pattern!r} not in the log:\n{p.log()}"


def summary(p, n=1):
    s = p.wait_summaries(n, timeout=BOUND)
    assert len(s) >= n, p.log()
    return s[n - 1]


def delivered(recorder, n=1):
    deadline = time.monotonic() + BOUND
    while len(recorder.delivered()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return [r for t in recorder.delivered() for r in t.recipients]


def refused(r, what, name, zone=ZONE):
    assert r.code == 550 and r.enhanced == "5.7.1", r
    assert f"Service unavailable; {what} {name} blocked using {zone}" in r.text, r


def run(c, sender="alice@sender.test", helo="client.test", rcpts=("bob@rcpt.test",), msg=None):
    """(MAIL reply, RCPT replies, DATA reply or None)."""
    c.greet(helo)
    m = c.cmd(f"MAIL FROM:<{sender}>")
    if m.code != 250:
        return m, [], None
    rs = [c.cmd(f"RCPT TO:<{r}>") for r in rcpts]
    d = None
    if any(r.code == 250 for r in rs):
        d = c.message(msg or body(sender))
    c.cmd("QUIT")
    return m, rs, d


# ---- the sender's domain ---------------------------------------------------


def test_sender_listed_refuses_rcpt_but_postmaster(proxy, client, recorder, dns):
    dns.listing(ZONE, SPAM)
    p = start(proxy, dns)
    m, rs, d = run(client(p), sender=f"bob@{SPAM}", rcpts=("bob@rcpt.test", "postmaster@rcpt.test"))
    m.expect(250)
    refused(rs[0], "sender domain", SPAM)
    rs[1].expect(250)
    d.expect(250)
    assert delivered(recorder) == ["postmaster@rcpt.test"]
    s = summary(p)
    assert float(s["score"]) == 4 and s["symbols"] == "RHSBL_DBL_TEST(4)", s
    log_has(p, r"rhsbl: sender domain spam\.example listed in dbl\.test \(127\.0\.0\.2\), weight 4, action rcpt")
    assert "spam.example.dbl.test" in asked(dns)


def test_sender_reject_at_mail(proxy, client, recorder, dns):
    dns.listing(ZONE, SPAM)
    p = start(proxy, dns, f"{ZONE} action=reject")
    m, _, _ = run(client(p), sender=f"Bob@Spam.Example")
    refused(m, "sender domain", SPAM)


def test_not_listed_and_null_sender(proxy, client, recorder, dns):
    p = start(proxy, dns)
    m, rs, d = run(client(p))
    rs[0].expect(250)
    d.expect(250)
    # sender.test and client.test at MAIL, sender.test (From:) at DATA (cached).
    assert asked(dns) == ["client.test.dbl.test", "sender.test.dbl.test"], dns.questions()
    dns.clear_log()
    m, rs, d = run(client(p), sender="", msg=b"Subject: bounce\r\n\r\nx\r\n.\r\n")
    rs[0].expect(250)
    assert asked(dns) == []  # <> has no domain; HELO cached; no From:


def test_score_only_once_per_zone(proxy, client, recorder, dns):
    """Listed as sender, HELO and From: the zone's weight counts once."""
    dns.listing(ZONE, SPAM)
    p = start(proxy, dns, f"{ZONE} weight=3 action=score")
    m, rs, d = run(client(p), sender=f"x@{SPAM}", helo=SPAM)
    d.expect(250)
    s = summary(p)
    assert float(s["score"]) == 3 and s["symbols"] == "RHSBL_DBL_TEST(3)", s
    assert asked(dns) == [f"{SPAM}.{ZONE}"]  # one name, asked once


# ---- HELO --------------------------------------------------------------------


def test_helo_listed(proxy, client, recorder, dns):
    dns.listing(ZONE, "bad-helo.example")
    p = start(proxy, dns, f"{ZONE} weight=1 action=reject check=helo")
    m, _, _ = run(client(p), helo="Bad-Helo.Example.")
    refused(m, "HELO name", "bad-helo.example")
    assert asked(dns) == ["bad-helo.example.dbl.test"]


@pytest.mark.parametrize("helo", ["[192.0.2.1]", "localhost", "bad_char$.example"])
def test_helo_not_a_domain_not_asked(proxy, client, recorder, dns, helo):
    p = start(proxy, dns, f"{ZONE} check=helo")
    m, rs, _ = run(client(p), helo=helo)
    rs[0].expect(250)
    assert asked(dns) == []


# ---- From: -------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    "From: Spammer <x@spam.example>",
    "From: x@SPAM.example (The \"Spammer\" <y@ok.test>)",
    "From: \"a <b@ok.test>\" <x@spam.example>",
    "From: x@spam.example, y@ok.test",
])
def test_from_listed_rejects_at_data(proxy, client, recorder, dns, header):
    dns.listing(ZONE, SPAM)
    p = start(proxy, dns, f"{ZONE} weight=2 check=from")
    msg = f"{header}\r\nSubject: x\r\n\r\nhi\r\n.\r\n".encode()
    m, rs, d = run(client(p), msg=msg)
    rs[0].expect(250)
    refused(d, "From: domain", SPAM)
    assert recorder.delivered() == []
    s = summary(p)
    assert s["symbols"] == "RHSBL_DBL_TEST(2)", s


def test_from_listed_rcpt_action_spares_postmaster_only(proxy, client, recorder, dns):
    dns.listing(ZONE, SPAM)
    p = start(proxy, dns, f"{ZONE} check=from")
    msg = f"From: <x@{SPAM}>\r\n\r\nhi\r\n.\r\n".encode()
    _, _, d = run(client(p), rcpts=("postmaster@rcpt.test",), msg=msg)
    d.expect(250)
    log_has(p, r"rhsbl: every recipient is exempt: the message passes")
    _, _, d = run(client(p), rcpts=("postmaster@rcpt.test", "bob@rcpt.test"), msg=msg)
    refused(d, "From: domain", SPAM)


# ---- failures, codes, cache ----------------------------------------------------


def test_timeout_and_refusal_pass(proxy, client, recorder, dns):
    dns.never(ZONE)
    dns.listing(OTHER, SPAM, "127.255.255.254")
    p = start(proxy, dns, f"{ZONE} weight=1", f"{OTHER} weight=1")
    m, rs, d = run(client(p), sender=f"x@{SPAM}")
    rs[0].expect(250)
    d.expect(250)
    log_has(p, r"rhsbl: lookup of \S+\.dbl\.test failed \(no answer within 1000 ms\)")
    log_has(p, r"rhsbl: other\.test answered 127\.255\.255\.254 for spam\.example\.other\.test: "
               r"the list refuses our queries")


def test_codes_filter(proxy, client, recorder, dns):
    dns.listing(ZONE, SPAM, "127.0.1.255")
    dns.listing(OTHER, SPAM, "127.0.1.2")
    p = start(proxy, dns, f"{ZONE} weight=1 codes=127.0.1.2-127.0.1.99",
              f"{OTHER} weight=1 codes=127.0.1.2-127.0.1.99 check=sender")
    m, rs, _ = run(client(p), sender=f"x@{SPAM}")
    refused(rs[0], "sender domain", SPAM, zone=OTHER)


def test_cache_hit_sends_no_query(proxy, client, recorder, dns):
    dns.listing(ZONE, SPAM)
    p = start(proxy, dns, f"{ZONE} weight=1 action=score")
    run(client(p), sender=f"x@{SPAM}")
    n = len(dns.questions())
    assert n == 2  # spam.example and client.test
    run(client(p), sender=f"x@{SPAM}")
    assert len(dns.questions()) == n
    log_has(p, r"listed in dbl\.test \(127\.0\.0\.2, cached\)")


def test_trusted_and_authenticated_not_checked(tproxy, raw, recorder, tls, dns):
    dns.listing(ZONE, SPAM)
    recorder.configure(extra_caps=["AUTH PLAIN LOGIN"])
    recorder.reply("AUTH", "235 2.7.0 Authentication successful")
    p = tproxy(sections=[section(dns, f"{ZONE} action=reject")], **tls_keys(tls))
    c = raw(p)
    c.greet()
    starttls(c, tls.client_context())
    c.ehlo()
    c.cmd("AUTH PLAIN " + plain("alice", "secret")).expect(235)
    c.cmd(f"MAIL FROM:<x@{SPAM}>").expect(250)
    c.cmd("RCPT TO:<bob@rcpt.test>").expect(250)
    c.message(body(f"x@{SPAM}")).expect(250)
    assert dns.questions() == []
    m, _, _ = run(raw(p), sender=f"x@{SPAM}")
    refused(m, "sender domain", SPAM)


def test_trusted_not_checked(proxy, client, recorder, dns):
    dns.listing(ZONE, SPAM)
    p = proxy(trusted_networks="127.0.0.1/32", sections=[section(dns, f"{ZONE} action=reject")])
    m, rs, d = run(client(p), sender=f"x@{SPAM}")
    d.expect(250)
    assert dns.questions() == []


def test_bad_config_refused(tmp_path, recorder, dns):
    cases = [
        ({"zone": None}, "no zone"),
        ({"zone": "dbl.test check=body"}, 'check: bad value "body"'),
        ({"zone": "dbl.test check="}, "check= names nothing"),
        ({"zone": "dbl.test action=maybe"}, "action: bad value"),
        ({"zone": "dbl.test codes=127.255.255.254"}, "127.255.255.0/24"),
        ({"dns_server": "127.0.0.1:99999"}, "dns_server: bad value"),
        ({"max_ttl": "8d"}, "max_ttl: bad value"),
    ]
    for keys, want in cases:
        p = Proxy(tmp_path / "check", recorder.address, sections=[section(dns, **keys)])
        p.write_config()
        rc, out = run_check(p.config_path)
        assert rc != 0 and want in out, (keys, out)
    p = Proxy(tmp_path / "check", recorder.address, sections=[section(
        dns, "dbl.spamhaus.org weight=4 action=rcpt codes=127.0.1.2-127.0.1.99 check=sender,helo,from",
        "rhsbl.example.net weight=1 action=score check=from symbol=RHS_FROM")])
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc == 0, out


# ---- with the thresholds -----------------------------------------------------


def test_dnsbl_and_rhsbl_add_up_to_reject_score(proxy, client, recorder, dns):
    """Neither list alone reaches reject_score; together they do."""
    from test_dnsbl import section as dnsbl_section

    dns.listing("bl.test", "127.0.0.1")
    dns.listing(ZONE, SPAM)
    p = proxy(reject_score="6", header_score="2", sections=[
        dnsbl_section(dns, "bl.test weight=3 action=score"),
        section(dns, f"{ZONE} weight=3.5 action=score")])
    _, rs, d = run(client(p), sender=f"x@{SPAM}")
    rs[0].expect(250)
    assert d.first == "550 5.7.1 Message refused as spam (score 6.5, limit 6)", d
    assert recorder.delivered() == []
    s = summary(p)
    assert s["by"] == "score" and sorted(s["symbols"].split(",")) == ["RBL_BL_TEST(3)", "RHSBL_DBL_TEST(3.5)"], s


def test_one_list_marks_the_message(proxy, client, recorder, dns):
    dns.listing("bl.test", "127.0.0.1")
    from test_dnsbl import section as dnsbl_section

    p = proxy(reject_score="6", header_score="2", sections=[
        dnsbl_section(dns, "bl.test weight=3 action=score"), section(dns)])
    _, rs, d = run(client(p))
    d.expect(250)
    assert recorder.wait_for_transactions(1, timeout=BOUND)
    head = bytes(recorder.messages()[0].data).split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    assert "X-Spam-Flag: YES" in head and "X-Spam-Symbols: RBL_BL_TEST(3)" in head, head
