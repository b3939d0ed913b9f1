"""The greylist plugin (plugins/greylist.c) and its admin tool
(portcullis-store), through real SMTP to the recording backend.

Every section uses delay = 2s: a test sleeps only until the first attempt
plus the delay has passed (computed from DELAY, never a fixed wait), and
asserts on replies, on what the backend received and on the log lines the
plugin writes for each decision. The memory store serves the tests that
need one proxy; LMDB survives a restart; one real redis-server
(kit.redis) is shared by two proxies, stopped and started under them.
"""

import os
import signal
import subprocess
import time

import pytest

from kit.haproxy import proxy_v1
from kit.proxy import Proxy, binary_path, run_check
from kit.redis import Redis
from test_auth import plain
from test_tls import raw, starttls, tls, tls_keys, tproxy  # noqa: F401 (fixtures)

DELAY = 2.0  # the sections' delay, in seconds
MARGIN = 0.3  # past the delay, for the clock's granularity
BOUND = 10.0  # how long we wait for something that must happen
BODY = b"Subject: greylist test\r\n\r\nhello\r\n.\r\n"
NET = "127.0.0.0/24"


def section(**keys):
    d = {"delay": f"{int(DELAY)}s", "store": "memory", "auto_whitelist": "0"}
    d.update(keys)
    return ("plugin greylist", {k: v for k, v in d.items() if v is not None})


def start(proxy, **keys):
    return proxy(sections=[section(**keys)])


def attempt(client, p, sender="alice@sender.test", rcpt="bob@rcpt.test", port=None, preamble=None):
    """One session: MAIL and RCPT, the message if RCPT was accepted. The
    RCPT reply."""
    c = client(port if port is not None else p)
    if preamble:
        c.send(preamble)
    c.greet()
    c.cmd(f"MAIL FROM:<{sender}>").expect(250)
    r = c.cmd(f"RCPT TO:<{rcpt}>")
    if r.code == 250:
        c.message(BODY).expect(250)
    c.cmd("QUIT")
    return r


def deferred(r):
    assert r.code == 451 and r.enhanced == "4.7.1", r
    assert "Greylisted, please retry in" in r.text, r


def wait_past(t0, delay=DELAY):
    """Sleep until delay has passed since t0 (time.monotonic())."""
    left = t0 + delay + MARGIN - time.monotonic()
    if left > 0:
        time.sleep(left)


def delivered_to(recorder, n=0):
    """The recipients of the delivered messages, once there are n (the
    recorder books a message just after its 250 is on the wire)."""
    deadline = time.monotonic() + BOUND
    while len(recorder.delivered()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return [r for t in recorder.delivered() for r in t.recipients]


def log_has(p, pattern, count=1):
    found = p.wait_log(pattern, timeout=BOUND, count=count)
    assert len(found) >= count, f"{pattern!r} not in the log:\n{p.log()}"


# ---- the basic cycle ------------------------------------------------------


def test_first_early_retry_pass(proxy, client, recorder):
    p = start(proxy)
    t0 = time.monotonic()
    r = attempt(client, p)
    deferred(r)
    assert r.text.endswith("retry in 2 seconds"), r
    log_has(p, rf"greylist: new triplet {NET} <alice@sender\.test> <bob@rcpt\.test>: deferred for 2s")
    # An early retry: deferred again, with what is left.
    deferred(attempt(client, p))
    log_has(p, r"greylist: early retry 127\.0\.0\.0/24 <alice@sender\.test> <bob@rcpt\.test>: deferred for [12]s more")
    assert recorder.delivered() == []
    assert not any(c.upper().startswith("RCPT") for c in recorder.commands())
    wait_past(t0)
    attempt(client, p).expect(250)
    log_has(p, r"greylist: retried triplet 127\.0\.0\.0/24 <alice@sender\.test> <bob@rcpt\.test>: passed after [23]s")
    assert delivered_to(recorder, 1) == ["bob@rcpt.test"]
    # Another triplet is a first sight of its own.
    deferred(attempt(client, p, rcpt="carol@rcpt.test"))
    deferred(attempt(client, p, sender="eve@sender.test"))
    # The passed one goes on passing at once.
    attempt(client, p).expect(250)
    log_has(p, r"greylist: known triplet 127\.0\.0\.0/24 <alice@sender\.test> <bob@rcpt\.test>: passed \(2 passes\)")
    assert delivered_to(recorder, 2) == ["bob@rcpt.test", "bob@rcpt.test"]


def test_retry_after_retry_window_is_new(proxy, client, recorder):
    p = start(proxy, delay="1s", retry_window="2s")
    t0 = time.monotonic()
    deferred(attempt(client, p))
    # Past the retry window: the triplet is forgotten (ttl), a new first sight.
    wait_past(t0, 2.0)
    deferred(attempt(client, p))
    log_has(p, r"greylist: (new|expired) triplet 127\.0\.0\.0/24 <alice@sender\.test> <bob@rcpt\.test>", count=2)
    assert recorder.delivered() == []


def test_several_recipients_each_their_triplet(proxy, client, recorder):
    p = start(proxy)
    t0 = time.monotonic()
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<alice@sender.test>").expect(250)
    deferred(c.cmd("RCPT TO:<one@rcpt.test>"))
    deferred(c.cmd("RCPT TO:<two@rcpt.test>"))
    c.cmd("QUIT")
    wait_past(t0)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<alice@sender.test>").expect(250)
    c.cmd("RCPT TO:<one@rcpt.test>").expect(250)
    c.cmd("RCPT TO:<two@rcpt.test>").expect(250)
    deferred(c.cmd("RCPT TO:<three@rcpt.test>"))
    c.message(BODY).expect(250)
    assert delivered_to(recorder, 1) == ["one@rcpt.test", "two@rcpt.test"]


# ---- auto-whitelisting ---------------------------------------------------


def test_auto_whitelist_after_n_passes(proxy, client, recorder):
    p = start(proxy, auto_whitelist="2")
    t0 = time.monotonic()
    deferred(attempt(client, p))
    wait_past(t0)
    attempt(client, p).expect(250)  # pass 1
    deferred(attempt(client, p, rcpt="other@rcpt.test"))  # not yet
    attempt(client, p).expect(250)  # pass 2
    log_has(p, r"greylist: network 127\.0\.0\.0/24 auto-whitelisted after 2 passes")
    # Now any triplet of the network passes at once.
    attempt(client, p, sender="new@elsewhere.test", rcpt="fresh@rcpt.test").expect(250)
    log_has(p, r"greylist: auto-whitelisted network 127\.0\.0\.0/24 <new@elsewhere\.test> <fresh@rcpt\.test>: passed")
    assert "fresh@rcpt.test" in delivered_to(recorder, 3)


# ---- never greylisted ----------------------------------------------------


def test_trusted_client_untouched(proxy, client, recorder):
    p = proxy(trusted_networks="127.0.0.0/8", sections=[section()])
    attempt(client, p).expect(250)
    log_has(p, r"greylist: trusted client 127\.0\.0\.0/24 <alice@sender\.test> <bob@rcpt\.test>: passed")
    assert delivered_to(recorder, 1) == ["bob@rcpt.test"]


def test_authenticated_client_untouched(tproxy, raw, recorder, tls):
    recorder.configure(extra_caps=["AUTH PLAIN LOGIN"])
    recorder.reply("AUTH", "235 2.7.0 Authentication successful")
    p = tproxy(sections=[section()], **tls_keys(tls))
    c = raw(p)
    c.greet()
    starttls(c, tls.client_context())
    c.ehlo()
    c.cmd("AUTH PLAIN " + plain("alice", "secret")).expect(235)
    c.cmd("MAIL FROM:<alice@sender.test>").expect(250)
    c.cmd("RCPT TO:<bob@rcpt.test>").expect(250)
    c.message(BODY).expect(250)
    assert p.wait_log(r"greylist: authenticated client 127\.0\.0\.0/24", timeout=BOUND), p.log()
    # Without AUTH, the same triplet is greylisted.
    c = raw(p)
    c.greet()
    c.cmd("MAIL FROM:<alice@sender.test>").expect(250)
    deferred(c.cmd("RCPT TO:<bob@rcpt.test>"))


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_whitelist_client_networks(proxy, client, recorder, tmp_path):
    f = write(tmp_path, "clients", "# our partners\n192.0.2.0/24\n\n127.0.0.0/8  # loopback\n")
    p = start(proxy, whitelist_clients=f)
    attempt(client, p).expect(250)
    log_has(p, r"greylist: whitelisted client network 127\.0\.0\.0/24")
    assert delivered_to(recorder, 1) == ["bob@rcpt.test"]


def test_whitelist_client_networks_other_network(proxy, client, recorder, tmp_path):
    f = write(tmp_path, "clients", "192.0.2.0/24, 2001:db8::/32\n")
    p = start(proxy, whitelist_clients=f)
    deferred(attempt(client, p))


@pytest.mark.parametrize("pattern,listed", [
    ("mx1.friendly.test", True),
    ("MX1.Friendly.TEST", True),
    (".friendly.test", True),
    ("*.friendly.test", True),
    ("friendly.test", False),  # the domain, not its hosts
    ("mx2.friendly.test", False),
])
def test_whitelist_client_names(proxy, client, recorder, tmp_path, dns, pattern, listed):
    dns.ptr("127.0.0.1", "mx1.friendly.test").a("mx1.friendly.test", "127.0.0.1")
    f = write(tmp_path, "names", f"# friends\n{pattern}\n")
    p = proxy(client_rdns="yes", dns_server=dns.address, sections=[section(whitelist_client_names=f)])
    r = attempt(client, p)
    if listed:
        r.expect(250)
        log_has(p, r"greylist: whitelisted client name 127\.0\.0\.0/24")
    else:
        deferred(r)


def test_whitelist_client_name_needs_forward_confirmation(proxy, client, recorder, tmp_path, dns):
    # The PTR says friendly, the name does not point back: no name, no whitelist.
    dns.ptr("127.0.0.1", "mx1.friendly.test").a("mx1.friendly.test", "192.0.2.99")
    f = write(tmp_path, "names", ".friendly.test\n")
    p = proxy(client_rdns="yes", dns_server=dns.address, sections=[section(whitelist_client_names=f)])
    deferred(attempt(client, p))


@pytest.mark.parametrize("entry,sender,listed", [
    ("sender.test", "alice@sender.test", True),
    ("sender.test", "alice@Sender.TEST", True),
    ("sender.test", "alice@sub.sender.test", False),
    (".sender.test", "alice@sub.sender.test", True),
    ("alice@sender.test", "alice@sender.test", True),
    ("alice@sender.test", "alice+list@sender.test", True),  # normalised
    ("alice@sender.test", "bob@sender.test", False),
])
def test_whitelist_senders(proxy, client, recorder, tmp_path, entry, sender, listed):
    f = write(tmp_path, "senders", f"{entry}\n")
    p = start(proxy, whitelist_senders=f)
    r = attempt(client, p, sender=sender)
    if listed:
        r.expect(250)
        log_has(p, r"greylist: whitelisted sender (domain|address) ")
    else:
        deferred(r)


def test_whitelist_recipients(proxy, client, recorder, tmp_path):
    f = write(tmp_path, "rcpts", "postmaster@\nabuse@\nopen@rcpt.test\n.lists.test\n")
    p = start(proxy, whitelist_recipients=f)
    attempt(client, p, rcpt="postmaster@rcpt.test").expect(250)
    attempt(client, p, rcpt="Abuse@Other.test").expect(250)
    attempt(client, p, rcpt="open@rcpt.test").expect(250)
    attempt(client, p, rcpt="x@a.lists.test").expect(250)
    deferred(attempt(client, p, rcpt="bob@rcpt.test"))
    log_has(p, r"greylist: whitelisted recipient local part 127\.0\.0\.0/24 <alice@sender\.test> <postmaster@rcpt\.test>: passed")
    log_has(p, r"whitelisted recipient address .*<open@rcpt\.test>: passed")
    log_has(p, r"whitelisted recipient domain .*<x@a\.lists\.test>: passed")


def test_whitelists_inline(proxy, client, recorder):
    p = start(proxy, whitelist_recipients_inline="postmaster@, abuse@",
              whitelist_senders_inline="friendly.test")
    attempt(client, p, rcpt="postmaster@rcpt.test").expect(250)
    attempt(client, p, sender="x@friendly.test").expect(250)
    deferred(attempt(client, p))


def test_whitelist_reload_keeps_old_lists_on_error(proxy, client, recorder, tmp_path):
    f = write(tmp_path, "rcpts", "first@rcpt.test\n")
    p = start(proxy, whitelist_recipients=f)
    attempt(client, p, rcpt="first@rcpt.test").expect(250)
    write(tmp_path, "rcpts", "second@rcpt.test\n")
    p.signal(1)  # SIGHUP
    assert p.wait_log(r"SIGHUP: \d+ filter", timeout=BOUND), p.log()
    deadline = time.monotonic() + BOUND
    while attempt(client, p, rcpt="second@rcpt.test").code != 250:
        assert time.monotonic() < deadline, p.log()
        time.sleep(0.1)
    deferred(attempt(client, p, rcpt="first@rcpt.test"))
    # A list that does not load: the old one stays.
    write(tmp_path, "rcpts", "*\n")
    before = len(p.wait_log(r"SIGHUP: \d+ filter", timeout=0))
    p.signal(1)
    assert len(p.wait_log(r"reload of \[plugin greylist\] failed", timeout=BOUND)) == 1, p.log()
    time.sleep(0.2)
    attempt(client, p, rcpt="second@rcpt.test").expect(250)


def test_bad_config_refused(tmp_path, recorder):
    cases = [
        ({"delay": "soon"}, "delay: bad value"),
        ({"retry_window": "1s"}, "retry_window"),
        ({"auto_whitelist": "-1"}, "auto_whitelist: bad value"),
        ({"ipv4_prefix": "33"}, "ipv4_prefix: bad value"),
        ({"whitelist_clients": str(tmp_path / "missing")}, "whitelist_clients"),
        ({"whitelist_senders_inline": "*"}, "would match everyone"),
        ({"store": "nosuch:thing"}, "store"),
        ({"colour": "grey"}, "colour"),
    ]
    for keys, want in cases:
        p = Proxy(tmp_path / "check", recorder.address, sections=[section(**keys)])
        p.write_config()
        rc, out = run_check(p.config_path)
        assert rc != 0 and want in out, (keys, out)
    p = Proxy(tmp_path / "check", recorder.address, sections=[section(retry_window="2d", max_age="35d")])
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc == 0, out


# ---- sender normalisation on the wire -------------------------------------


@pytest.mark.parametrize("first,retry", [
    ("alice+one@sender.test", "alice+two@sender.test"),
    ("prvs=1234abcdef=alice@sender.test", "prvs=5678fedcba=alice@sender.test"),
    ("SRS0=HHH=TT=orig.test=alice@fwd.test", "SRS0=KKK=UU=orig.test=alice@fwd2.test"),
    ("Alice@Sender.TEST", "alice@sender.test"),
])
def test_normalised_sender_retries_pass(proxy, client, recorder, first, retry):
    p = start(proxy)
    t0 = time.monotonic()
    deferred(attempt(client, p, sender=first))
    wait_past(t0)
    attempt(client, p, sender=retry).expect(250)
    # The backend gets the sender as sent.
    delivered_to(recorder, 1)
    assert recorder.delivered()[0].sender == retry


# ---- IPv6 ----------------------------------------------------------------


def test_ipv6_grouped_per_64(tproxy, raw, recorder):
    p = tproxy(listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32", sections=[section()])

    def from_ip(ip, port):
        c = raw(p.ports["pp"])
        c.send(proxy_v1(ip, port, "2001:db8:ffff::25", 25))
        c.greet()
        c.cmd("MAIL FROM:<alice@sender.test>").expect(250)
        r = c.cmd("RCPT TO:<bob@rcpt.test>")
        if r.code == 250:
            c.message(BODY).expect(250)
        return r

    t0 = time.monotonic()
    deferred(from_ip("2001:db8::1", 40001))
    assert p.wait_log(r"greylist: new triplet 2001:db8::/64 <alice@sender\.test>", timeout=BOUND), p.log()
    wait_past(t0)
    # Another address of the same /64 is the same client network.
    from_ip("2001:db8::2", 40002).expect(250)
    # The next /64 is not.
    deferred(from_ip("2001:db8:0:1::1", 40003))
    assert p.wait_log(r"greylist: new triplet 2001:db8:0:1::/64 ", timeout=BOUND), p.log()


# ---- the null sender ------------------------------------------------------


def test_null_sender_deferred_at_data(proxy, client, recorder):
    p = start(proxy)

    def bounce():
        c = client(p)
        c.greet()
        c.cmd("MAIL FROM:<>").expect(250)
        # RCPT is never greylisted for a bounce ...
        c.cmd("RCPT TO:<one@rcpt.test>").expect(250)
        c.cmd("RCPT TO:<two@rcpt.test>").expect(250)
        c.cmd("DATA").expect(354)
        c.send(BODY)
        # ... the message is, against all its recipients.
        return c.reply()

    t0 = time.monotonic()
    deferred(bounce())
    log_has(p, r"greylist: new triplet 127\.0\.0\.0/24 <> <one@rcpt\.test>: deferred")
    log_has(p, r"greylist: new triplet 127\.0\.0\.0/24 <> <two@rcpt\.test>: deferred")
    assert recorder.delivered() == []
    deferred(bounce())  # early
    wait_past(t0)
    bounce().expect(250)
    assert sorted(delivered_to(recorder, 1)) == ["one@rcpt.test", "two@rcpt.test"]


def test_null_sender_one_new_recipient_defers_all(proxy, client, recorder):
    p = start(proxy)
    t0 = time.monotonic()
    c = client(p)
    c.greet()
    c.envelope("", "one@rcpt.test")
    deferred(c.message(BODY))
    wait_past(t0)
    c = client(p)
    c.greet()
    c.envelope("", "one@rcpt.test", "new@rcpt.test")
    deferred(c.message(BODY))
    assert recorder.delivered() == []


# ---- observe mode ----------------------------------------------------------


def test_observe_logs_without_deferring(proxy, client, recorder):
    keys = section()[1]
    keys["observe"] = "yes"
    p = proxy(sections=[("plugin greylist", keys)])
    attempt(client, p).expect(250)
    log_has(p, r"greylist: new triplet 127\.0\.0\.0/24 <alice@sender\.test> <bob@rcpt\.test>: deferred for 2s")
    log_has(p, r"observe: greylist would tempfail at rcpt")
    assert delivered_to(recorder, 1) == ["bob@rcpt.test"]


# ---- the admin tool ---------------------------------------------------------


def tool_path():
    return os.path.join(os.path.dirname(binary_path()), "portcullis-store")


def tool(*args, config=None):
    cmd = [tool_path()]
    if config:
        cmd += ["-c", config]
    p = subprocess.run(cmd + list(args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def lmdb_spec(tmp_path):
    return f"lmdb:{tmp_path}/store"


def test_lmdb_state_survives_restart(proxy, client, recorder, lmdb_spec):
    p = start(proxy, store=lmdb_spec)
    t0 = time.monotonic()
    deferred(attempt(client, p))
    assert p.stop() == 0
    wait_past(t0)
    p2 = start(proxy, store=lmdb_spec)
    attempt(client, p2).expect(250)
    log_has(p2, r"greylist: retried triplet 127\.0\.0\.0/24 <alice@sender\.test> <bob@rcpt\.test>: passed")


def test_tool_lookup_delete_whitelist(proxy, client, recorder, lmdb_spec):
    p = start(proxy, store=lmdb_spec, auto_whitelist="1")
    cfg = p.config_path
    rc, out, err = tool("greylist", "lookup", "127.0.0.9", "alice@sender.test", "bob@rcpt.test", config=cfg)
    assert rc == 1 and "unknown" in out, (rc, out, err)
    t0 = time.monotonic()
    deferred(attempt(client, p))
    rc, out, err = tool("greylist", "lookup", "127.0.0.9", "Alice+x@sender.test", "<bob@rcpt.test>", config=cfg)
    assert rc == 0, (out, err)
    assert "key: greylist:t:127.0.0.0/24,alice@sender.test,bob@rcpt.test" in out
    assert "state: greylisted" in out and "passes: 0" in out and "time to live: 1d 23h" in out, out
    wait_past(t0)
    attempt(client, p).expect(250)
    rc, out, err = tool("greylist", "lookup", "127.0.0.1", "alice@sender.test", "bob@rcpt.test", config=cfg)
    assert rc == 0 and "state: passed" in out and "passes: 1" in out and "time to live: 34d 23h" in out, out
    assert "network 127.0.0.0/24: 1 passes, auto-whitelisted" in out, out
    rc, out, err = tool("greylist", "whitelist", config=cfg)
    assert rc == 0 and "127.0.0.0/24" in out and "auto-whitelisted" in out, (out, err)
    # Generic commands see the same keys.
    rc, out, err = tool("list", "greylist:t:", config=cfg)
    assert rc == 0 and out.startswith("greylist:t:127.0.0.0/24,alice@sender.test,bob@rcpt.test\t"), out
    rc, out, err = tool("get", "greylist:a:127.0.0.0/24", config=cfg)
    assert rc == 0 and out.startswith("1\n"), out
    rc, out, err = tool("get", "greylist:nothing", config=cfg)
    assert rc == 1
    # Delete the whitelist entry and the triplet: greylisted again.
    rc, out, err = tool("del", "greylist:a:127.0.0.0/24", config=cfg)
    assert rc == 0, err
    rc, out, err = tool("del", "greylist:a:127.0.0.0/24", config=cfg)
    assert rc == 1
    rc, out, err = tool("greylist", "delete", "127.0.0.1", "alice@sender.test", "bob@rcpt.test", config=cfg)
    assert rc == 0 and "deleted" in out, (out, err)
    rc, out, err = tool("greylist", "delete", "127.0.0.1", "alice@sender.test", "bob@rcpt.test", config=cfg)
    assert rc == 1
    deferred(attempt(client, p))
    rc, out, err = tool("greylist", "whitelist", config=cfg)
    assert rc == 1, out


def test_tool_purge_network(proxy, client, recorder, lmdb_spec):
    p = start(proxy, store=lmdb_spec)
    deferred(attempt(client, p))
    deferred(attempt(client, p, rcpt="two@rcpt.test"))
    rc, out, err = tool("greylist", "purge-network", "127.0.0.1", config=p.config_path)
    assert rc == 0 and "127.0.0.0/24: 2 keys deleted" in out, (out, err)
    rc, out, err = tool("list", "greylist:", config=p.config_path)
    assert rc == 1 and out == "", out
    rc, out, err = tool("greylist", "purge-network", "10.0.0.0/8", config=p.config_path)
    assert rc == 1


def test_tool_usage_and_errors(tmp_path, recorder):
    rc, out, err = tool()
    assert rc == 2 and "usage" in err
    rc, out, err = tool("-s", "memory", "greylist", "lookup", "1.2.3.4")
    assert rc == 2 and "usage" in err
    rc, out, err = tool("-s", "memory", "frobnicate")
    assert rc == 2
    rc, out, err = tool("-s", "memory", "greylist", "lookup", "not-an-ip", "a@b", "c@d")
    assert rc == 2 and "not an IP address" in err
    rc, out, err = tool("-s", "nosuch:x", "get", "k")
    assert rc == 2 and "store" in err
    rc, out, err = tool("-s", "memory", "get", "k")
    assert rc == 1
    rc, out, err = tool("-c", str(tmp_path / "missing.conf"), "get", "k")
    assert rc == 2 and "missing.conf" in err
    bad = tmp_path / "bad.conf"
    bad.write_text("store = \n")
    rc, out, err = tool("-c", str(bad), "get", "k")
    assert rc == 2


# ---- Redis: two proxies, one store ----------------------------------------


@pytest.fixture
def redis(tmp_path):
    r = Redis(workdir=tmp_path / "redis")
    r.start()
    yield r
    r.close()


def test_redis_two_proxies_share_triplets(proxy, client, recorder, redis, tmp_path):
    a = start(proxy, store=redis.url)
    b = start(proxy, store=redis.url)
    t0 = time.monotonic()
    deferred(attempt(client, a))
    assert redis.keys("greylist:t:*") == ["greylist:t:127.0.0.0/24,alice@sender.test,bob@rcpt.test"]
    deferred(attempt(client, b))  # early, on the other proxy
    wait_past(t0)
    attempt(client, b).expect(250)
    log_has(b, r"greylist: retried triplet .* passed after")
    # The admin tool reads the same state.
    rc, out, err = tool("-s", redis.url, "greylist", "lookup", "127.0.0.1", "alice@sender.test", "bob@rcpt.test")
    assert rc == 0 and "state: passed" in out and "time to live: 34d 23h" in out, (out, err)

    # Redis goes away: mail flows (on_error = accept), and the log says why.
    redis.stop()
    attempt(client, a, rcpt="during@rcpt.test").expect(250)
    attempt(client, b, rcpt="during2@rcpt.test").expect(250)
    log_has(a, r"greylist: store failed for 127\.0\.0\.0/24 <alice@sender\.test> <during@rcpt\.test>")
    log_has(a, r"filter greylist failed at rcpt")
    assert "during@rcpt.test" in delivered_to(recorder, 3)
    rc, out, err = tool("-s", redis.url, "get", "greylist:x")
    assert rc == 2 and err, (out, err)

    # Redis is back (empty): greylisting resumes without a restart.
    redis.start()
    deadline = time.monotonic() + BOUND
    while True:
        r = attempt(client, a, rcpt="after@rcpt.test")
        if r.code == 451:
            break
        assert time.monotonic() < deadline, a.log()
        time.sleep(0.2)
    # The other proxy sees the same triplet, early.
    deadline = time.monotonic() + BOUND
    while attempt(client, b, rcpt="after@rcpt.test").code != 451:
        assert time.monotonic() < deadline, b.log()
        time.sleep(0.2)
    assert "greylist:t:127.0.0.0/24,alice@sender.test,after@rcpt.test" in redis.keys("greylist:t:*")


def test_redis_stalled_request_cancelled(proxy, client, recorder, redis, tmp_path):
    """A Redis that stops answering: filter_timeout ends the call first (the
    plugin cancels its request in flight), mail flows, and the late answer
    (or the store's own timeout) finds nothing to call back."""
    keys = section(store=redis.url)[1]
    keys["filter_timeout"] = "500ms"
    p = proxy(store_timeout="3s", sections=[("plugin greylist", keys)])
    deferred(attempt(client, p))  # the connection is up
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        attempt(client, p, rcpt="stalled@rcpt.test").expect(250)
        log_has(p, r"filter greylist failed at rcpt: no verdict within filter_timeout")
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + BOUND
    while attempt(client, p, rcpt="later@rcpt.test").code != 451:
        assert time.monotonic() < deadline, p.log()
        time.sleep(0.2)
