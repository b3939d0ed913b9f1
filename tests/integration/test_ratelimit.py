"""The ratelimit plugin (issue 14, section 3; doc/ratelimit.md): real SMTP
through the proxy to the recording backend.

Each limit kind is hit (the right code and enhanced status, and the backend
never sees the refused connection, command or message) and then recovers
when its window ends. Windows are fixed and aligned to multiples of the
window since the epoch, so a test first makes sure enough of the current
window is left for what it does (align), and later sleeps exactly until the
next boundary (until_next), never longer.

Concurrency: N sessions open, the N+1th is refused, a refused attempt holds
no slot, and a slot comes back when a session ends, by QUIT or by a client
that vanishes (TCP RST). Per-user limits use AUTH PLAIN in plaintext
(auth_plaintext = yes) against the recorder answering 235. Clients on other
networks are 127.0.0.x addresses (ipv4_prefix = 32); IPv6 networks come
through a PROXY protocol listener. LMDB: the counts outlive a restart.
Redis: a redis-server of the test's own, shared by two portcullis
instances; stopped, mail flows and the outage is logged once; slow (CLIENT
PAUSE), a client that leaves while its concurrency slot is being taken
still gives it back.
"""

import base64
import math
import re
import time

import pytest

from kit.dialogue import BOUND, config_line, refused
from kit.haproxy import proxy_v2
from kit.redis import Redis
from kit.smtpclient import ConnectionClosed, RawClient
from test_tls import raw, tproxy  # noqa: F401  (fixtures)

BODY = b"Subject: rate\r\n\r\nhello\r\n"
HOST = "proxy.test"

CONN_REFUSED = f"421 4.7.0 {HOST} Too many connections from your network, try again later"
CONC_REFUSED = f"421 4.7.0 {HOST} Too many concurrent connections from your network, try again later"
MSG_NET = "451 4.7.1 Too many messages from your network, try again later"
MSG_USER = "451 4.7.1 Too many messages from your account, try again later"
MSG_DOMAIN = "451 4.7.1 Too many messages from your sender domain, try again later"
RCPT_NET = "452 4.7.1 Too many recipients from your network, try again later"
RCPT_USER = "452 4.7.1 Too many recipients from your account, try again later"


def rl(**keys):
    """A [plugin ratelimit] section on the memory store unless told."""
    keys.setdefault("store", "memory")
    return ("plugin ratelimit", keys)


# ---- windows ---------------------------------------------------------------------


def align(window, need=1.2):
    """Make sure at least `need` seconds of the current window are left;
    returns when the window ends (epoch seconds)."""
    now = time.time()
    end = (math.floor(now / window) + 1) * window
    if end - now < need:
        time.sleep(end - now + 0.02)
        end += window
    return end


def until_next(end):
    """Sleep until the window that ends at `end` is over."""
    left = end - time.time()
    if left > 0:
        time.sleep(left + 0.02)


# ---- clients ---------------------------------------------------------------------


def connect(p, source="127.0.0.1"):
    return RawClient(p.port, source=(source, 0))


def accepted(c):
    c.banner().expect(220)
    return c


def refused_at_connect(c, text):
    r = c.banner()
    assert r.first == text, r
    assert c.closed(timeout=BOUND)


def send(c, sender="a@x.test", rcpts=("b@y.test",), mail_reply=250):
    """One message in an open session; returns the MAIL reply when it is not
    250, else the reply to the end of data."""
    r = c.cmd(f"MAIL FROM:<{sender}>")
    if r.code != 250:
        return r
    for a in rcpts:
        c.cmd(f"RCPT TO:<{a}>").expect(250)
    c.cmd("DATA").expect(354)
    c.send(BODY + b".\r\n")
    return c.reply()


def mails(recorder):
    return [t.sender for t in recorder.transactions() if t.sender is not None]


def refusal_logged(p, limit, what, count, limit_n, window=None):
    pat = rf"ratelimit: refused: {limit} {re.escape(what)} count={count} limit={limit_n}"
    if window:
        pat += rf" window={window}"
    assert p.wait_log(pat, timeout=BOUND), p.log()


# ---- connection rate -------------------------------------------------------------


def test_connection_rate_hit_then_recovers(proxy, recorder):
    p = proxy(sections=[rl(client_connection_rate="3/2s")])
    end = align(2)
    for _ in range(3):
        with connect(p) as c:
            accepted(c)
            c.cmd("QUIT").expect(221)
    recorder.wait_for_connections(3, timeout=BOUND)
    with connect(p) as c:
        refused_at_connect(c, CONN_REFUSED)
    # A refused attempt counts too (as anvil counts it): still refused.
    with connect(p) as c:
        refused_at_connect(c, CONN_REFUSED)
    time.sleep(0.2)
    assert len(recorder.conns()) == 3, recorder.conns()
    refusal_logged(p, "client_connection_rate", "network=127.0.0.0/24", 4, 3, "2s")
    until_next(end)
    with connect(p) as c:
        accepted(c).ehlo()
        assert send(c).code == 250
    assert len(recorder.conns()) == 4


# ---- concurrency -----------------------------------------------------------------


def accepted_soon(p, source="127.0.0.1"):
    """A slot given back at close: connect until accepted (a refused attempt
    holds no slot, so trying again is harmless)."""
    deadline = time.monotonic() + BOUND
    while True:
        c = connect(p, source)
        r = c.banner()
        if r.code == 220:
            return c
        c.close()
        assert time.monotonic() < deadline, f"no slot came back: {r!r}\n{p.log()}"
        time.sleep(0.05)


def test_concurrency_slots_taken_and_given_back(proxy, recorder):
    p = proxy(sections=[rl(client_concurrency="2")])
    a = accepted(connect(p))
    b = accepted(connect(p))
    # Refused attempts hold no slot, however many.
    for _ in range(3):
        with connect(p) as c:
            refused_at_connect(c, CONC_REFUSED)
    refusal_logged(p, "client_concurrency", "network=127.0.0.0/24", 3, 2)
    # A QUIT gives a slot back: exactly one.
    a.ehlo()
    a.cmd("QUIT").expect(221)
    a.closed(timeout=BOUND)
    a.close()
    d = accepted_soon(p)
    with connect(p) as c:
        refused_at_connect(c, CONC_REFUSED)
    # A client that vanishes mid-transaction (RST) gives its slot back too.
    b.ehlo()
    b.cmd("MAIL FROM:<a@x.test>").expect(250)
    b.reset()
    e = accepted_soon(p)
    with connect(p) as c:
        refused_at_connect(c, CONC_REFUSED)
    # The sessions that got a slot work as usual.
    d.ehlo()
    assert send(d).code == 250
    e.ehlo()
    assert send(e).code == 250
    d.close()
    e.close()
    # Every session gone: both slots free again, nothing left over.
    f = accepted_soon(p)
    g = accepted_soon(p)
    f.close()
    g.close()


def test_concurrency_refused_session_never_reaches_backend(proxy, recorder):
    p = proxy(sections=[rl(client_concurrency="1")])
    a = accepted(connect(p))
    recorder.wait_for_connections(1, timeout=BOUND)
    with connect(p) as c:
        refused_at_connect(c, CONC_REFUSED)
    time.sleep(0.2)
    assert len(recorder.conns()) == 1
    a.close()


def test_concurrency_per_network(proxy, recorder):
    p = proxy(sections=[rl(client_concurrency="1", ipv4_prefix="32")])
    a = accepted(connect(p, "127.0.0.1"))
    with connect(p, "127.0.0.1") as c:
        refused_at_connect(c, CONC_REFUSED)
    b = accepted(connect(p, "127.0.0.2"))
    a.close()
    b.close()


# ---- message and recipient rates -------------------------------------------------


def test_message_rate_hit_then_recovers(proxy, recorder):
    p = proxy(sections=[rl(client_message_rate="2/2s")])
    end = align(2)
    with connect(p) as c:
        accepted(c).ehlo()
        assert send(c, "m1@x.test").code == 250
        assert send(c, "m2@x.test").code == 250
        r = c.cmd("MAIL FROM:<m3@x.test>")
        assert r.first == MSG_NET and r.enhanced == "4.7.1", r
        # The session goes on; the next MAIL is still over the limit.
        assert c.cmd("MAIL FROM:<m4@x.test>").first == MSG_NET
        assert mails(recorder) == ["m1@x.test", "m2@x.test"]
        refusal_logged(p, "client_message_rate", "network=127.0.0.0/24", 3, 2, "2s")
        until_next(end)
        assert send(c, "m5@x.test").code == 250
    assert mails(recorder) == ["m1@x.test", "m2@x.test", "m5@x.test"]


def test_message_rate_counts_across_sessions(proxy, recorder):
    p = proxy(sections=[rl(client_message_rate="2/2s")])
    align(2)
    for s in ("a1@x.test", "a2@x.test"):
        with connect(p) as c:
            accepted(c).ehlo()
            assert send(c, s).code == 250
    with connect(p) as c:
        accepted(c).ehlo()
        assert c.cmd("MAIL FROM:<a3@x.test>").first == MSG_NET
    assert mails(recorder) == ["a1@x.test", "a2@x.test"]


def test_recipient_rate_hit_then_recovers(proxy, recorder):
    p = proxy(sections=[rl(client_recipient_rate="3/2s")])
    end = align(2)
    with connect(p) as c:
        accepted(c).ehlo()
        c.cmd("MAIL FROM:<a@x.test>").expect(250)
        for i in range(3):
            c.cmd(f"RCPT TO:<r{i}@y.test>").expect(250)
        r = c.cmd("RCPT TO:<r3@y.test>")
        assert r.first == RCPT_NET and r.enhanced == "4.7.1", r
        c.cmd("DATA").expect(354)
        c.send(BODY + b".\r\n")
        c.reply().expect(250)
        [t] = recorder.wait_for_transactions(1, timeout=BOUND)
        assert t.accepted_rcpts == ["r0@y.test", "r1@y.test", "r2@y.test"]
        assert "r3@y.test" not in " ".join(recorder.commands())
        refusal_logged(p, "client_recipient_rate", "network=127.0.0.0/24", 4, 3, "2s")
        until_next(end)
        c.cmd("MAIL FROM:<a@x.test>").expect(250)
        c.cmd("RCPT TO:<r4@y.test>").expect(250)


# ---- per authenticated user ------------------------------------------------------


def plain(user, pw):
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


def auth_backend(recorder):
    recorder.configure(extra_caps=["AUTH PLAIN LOGIN"])
    recorder.reply("AUTH", "235 2.7.0 Authentication successful")


def login(p, user, source="127.0.0.1"):
    c = accepted(connect(p, source))
    c.ehlo()
    c.cmd("AUTH PLAIN " + plain(user, "secret")).expect(235)
    return c


def test_user_message_rate(proxy, recorder):
    auth_backend(recorder)
    p = proxy(auth_plaintext="yes", sections=[rl(user_message_rate="2/2s", ipv4_prefix="32")])
    end = align(2)
    with login(p, "Alice") as c:
        assert send(c, "u1@x.test").code == 250
    # Another client, the same user in another case: the same count.
    with login(p, "alice", "127.0.0.2") as c:
        assert send(c, "u2@x.test").code == 250
        r = c.cmd("MAIL FROM:<u3@x.test>")
        assert r.first == MSG_USER and r.enhanced == "4.7.1", r
    refusal_logged(p, "user_message_rate", "user=alice", 3, 2, "2s")
    # Another user, and a client that did not authenticate, are not limited.
    with login(p, "bob") as c:
        assert send(c, "b1@x.test").code == 250
    with connect(p) as c:
        accepted(c).ehlo()
        assert send(c, "n1@x.test").code == 250
        assert send(c, "n2@x.test").code == 250
        assert send(c, "n3@x.test").code == 250
    assert "u3@x.test" not in mails(recorder)
    until_next(end)
    with login(p, "ALICE") as c:
        assert send(c, "u4@x.test").code == 250


def test_user_recipient_rate(proxy, recorder):
    auth_backend(recorder)
    p = proxy(auth_plaintext="yes", sections=[rl(user_recipient_rate="2/2s")])
    end = align(2)
    with login(p, "carol") as c:
        c.cmd("MAIL FROM:<c@x.test>").expect(250)
        c.cmd("RCPT TO:<r1@y.test>").expect(250)
        c.cmd("RCPT TO:<r2@y.test>").expect(250)
        r = c.cmd("RCPT TO:<r3@y.test>")
        assert r.first == RCPT_USER and r.enhanced == "4.7.1", r
        refusal_logged(p, "user_recipient_rate", "user=carol", 3, 2, "2s")
        until_next(end)
        c.cmd("RCPT TO:<r4@y.test>").expect(250)
    assert "r3@y.test" not in " ".join(recorder.commands())


# ---- per sender domain -----------------------------------------------------------


def test_sender_domain_across_clients(proxy, recorder):
    p = proxy(sections=[rl(sender_domain_message_rate="2/2s", ipv4_prefix="32")])
    end = align(2)
    with connect(p, "127.0.0.1") as c:
        accepted(c).ehlo()
        assert send(c, "a@Example.COM").code == 250
    with connect(p, "127.0.0.2") as c:
        accepted(c).ehlo()
        assert send(c, "b@example.com").code == 250
    with connect(p, "127.0.0.3") as c:
        accepted(c).ehlo()
        r = c.cmd("MAIL FROM:<c@example.com>")
        assert r.first == MSG_DOMAIN and r.enhanced == "4.7.1", r
        # Another domain, and the null sender (no domain), go through.
        assert send(c, "d@other.test").code == 250
        for _ in range(3):
            assert send(c, "").code == 250
    refusal_logged(p, "sender_domain_message_rate", "domain=example.com", 3, 2, "2s")
    assert "c@example.com" not in mails(recorder)
    until_next(end)
    with connect(p, "127.0.0.4") as c:
        accepted(c).ehlo()
        assert send(c, "e@example.com").code == 250


# ---- several limits at one stage -------------------------------------------------


def test_limits_of_one_stage_chained(proxy, recorder):
    """Message limits for network, user and domain at MAIL: the first one
    over decides, whichever it is."""
    auth_backend(recorder)
    p = proxy(auth_plaintext="yes",
              sections=[rl(client_message_rate="5/2s", user_message_rate="3/2s",
                           sender_domain_message_rate="2/2s")])
    align(2, need=1.5)
    with login(p, "dave") as c:
        assert send(c, "a@one.test").code == 250
        assert send(c, "b@one.test").code == 250
        assert c.cmd("MAIL FROM:<c@one.test>").first == MSG_DOMAIN
        # The user's count went on with the refused attempt: 3 of 3.
        assert c.cmd("MAIL FROM:<d@two.test>").first == MSG_USER
    with connect(p) as c:
        accepted(c).ehlo()
        # The network's count is 4 (the domain and user refusals counted).
        assert send(c, "e@three.test").code == 250
        assert c.cmd("MAIL FROM:<f@three.test>").first == MSG_NET


# ---- exemptions ------------------------------------------------------------------


def test_trusted_networks_exempt(proxy, recorder):
    p = proxy(trusted_networks="127.0.0.0/8",
              sections=[rl(client_connection_rate="1/1m", client_concurrency="1",
                           client_message_rate="1/1m")])
    held = [accepted(connect(p)) for _ in range(3)]
    for c in held:
        c.ehlo()
        assert send(c).code == 250
        assert send(c).code == 250
        c.close()
    assert "ratelimit: refused" not in p.log()


def test_exempt_networks(proxy, recorder):
    p = proxy(sections=[rl(client_connection_rate="1/1m", client_message_rate="1/1m",
                           ipv4_prefix="32", exempt_networks="127.0.0.2/32, 10.0.0.0/8")])
    for _ in range(3):
        with connect(p, "127.0.0.2") as c:
            accepted(c).ehlo()
            assert send(c).code == 250
            assert send(c).code == 250
    with connect(p, "127.0.0.1") as c:
        accepted(c).ehlo()
        assert send(c).code == 250
        assert c.cmd("MAIL FROM:<x@x.test>").first == MSG_NET
    with connect(p, "127.0.0.1") as c:
        refused_at_connect(c, CONN_REFUSED)


# ---- IPv6 ------------------------------------------------------------------------


def pp_client(raw, p, ip, port):
    c = raw(p.ports["pp"])
    c.send(proxy_v2(ip, port, "2001:db8:ffff::25" if ":" in ip else "127.0.0.1", 25))
    return c


def test_ipv6_grouped_per_64(tproxy, raw, recorder):
    p = tproxy(listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32",
               sections=[rl(client_connection_rate="2/1m")])
    accepted(pp_client(raw, p, "2001:db8::1", 40001))
    accepted(pp_client(raw, p, "2001:db8::2:3", 40002))
    refused_at_connect(pp_client(raw, p, "2001:db8::ffff", 40003), CONN_REFUSED)
    refusal_logged(p, "client_connection_rate", "network=2001:db8::/64", 3, 2, "1m")
    # Another /64 is another network; an IPv4-mapped address is IPv4.
    accepted(pp_client(raw, p, "2001:db8:0:1::1", 40004))
    accepted(pp_client(raw, p, "::ffff:192.0.2.7", 40005))
    accepted(pp_client(raw, p, "192.0.2.8", 40006))
    refused_at_connect(pp_client(raw, p, "192.0.2.9", 40007), CONN_REFUSED)


def test_ipv6_prefix_128_per_address(tproxy, raw, recorder):
    p = tproxy(listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32",
               sections=[rl(client_connection_rate="1/1m", ipv6_prefix="128")])
    accepted(pp_client(raw, p, "2001:db8::1", 40011))
    accepted(pp_client(raw, p, "2001:db8::2", 40012))
    refused_at_connect(pp_client(raw, p, "2001:db8::1", 40013), CONN_REFUSED)
    refusal_logged(p, "client_connection_rate", "network=2001:db8::1/128", 2, 1, "1m")


# ---- configuration ---------------------------------------------------------------


@pytest.mark.parametrize("key,value,why", [
    ("client_connection_rate", "0/1m", "expected COUNT/WINDOW"),
    ("client_message_rate", "5/0s", "expected COUNT/WINDOW"),
    ("client_recipient_rate", "garbage", "expected COUNT/WINDOW"),
    ("user_message_rate", "10", "expected COUNT/WINDOW"),
    ("user_recipient_rate", "10/", "expected COUNT/WINDOW"),
    ("sender_domain_message_rate", "-1/1m", "expected COUNT/WINDOW"),
    ("client_message_rate", "1/31d", "expected COUNT/WINDOW"),
    ("client_message_rate", "1/500ms", "expected COUNT/WINDOW"),
    ("client_message_rate", "99999999999/1m", "expected COUNT/WINDOW"),
    ("client_concurrency", "0", "expected a number of sessions from 1"),
    ("client_concurrency", "ten", "expected a number of sessions from 1"),
    ("ipv4_prefix", "33", "expected a prefix length from 0 to 32"),
    ("ipv6_prefix", "/64", "expected a prefix length from 0 to 128"),
    ("concurrency_ttl", "5s", "expected a time from 1m to 1d"),
    ("exempt_networks", "10.0.0.1/8", "has bits set past its /8 prefix"),
])
def test_bad_values_refused_at_start(recorder, tmp_path, key, value, why):
    keys = {"client_connection_rate": "10/1m"} if key != "client_connection_rate" else {}
    keys[key] = value
    path, log, out = refused(recorder, tmp_path, [rl(**keys)])
    line = config_line(path, f"{key} =")
    want = f"{path}:{line}: [plugin ratelimit]: {key}: bad value \"{value}\": "
    assert want in out, out
    assert why in out, out
    assert want in log, log


def test_no_limit_refused(recorder, tmp_path):
    path, log, out = refused(recorder, tmp_path, [rl(ipv4_prefix="32")])
    assert "no limit given" in out, out


def test_key_twice_refused(recorder, tmp_path):
    path, log, out = refused(recorder, tmp_path, [rl(client_message_rate=["1/1m", "2/1m"])])
    assert "client_message_rate given twice" in out, out


def test_unknown_key_refused(recorder, tmp_path):
    path, log, out = refused(recorder, tmp_path, [rl(client_message_rate="1/1m", client_rate="1/1m")])
    assert "unknown key" in out, out


# ---- LMDB: the counts outlive the proxy -----------------------------------------


def test_lmdb_counts_survive_a_restart(proxy, recorder, tmp_path):
    store = f"lmdb:{tmp_path / 'store'}"
    section = rl(store=store, client_message_rate="2/10s")
    align(10, need=4)
    p = proxy(sections=[section])
    with connect(p) as c:
        accepted(c).ehlo()
        assert send(c, "l1@x.test").code == 250
        assert send(c, "l2@x.test").code == 250
        c.cmd("QUIT").expect(221)
    assert p.stop() == 0
    p2 = proxy(sections=[section])
    with connect(p2) as c:
        accepted(c).ehlo()
        assert c.cmd("MAIL FROM:<l3@x.test>").first == MSG_NET
    assert "l3@x.test" not in mails(recorder)


# ---- Redis: two proxies, one count ------------------------------------------------


@pytest.fixture
def redis(tmp_path):
    r = Redis(workdir=tmp_path / "redis").start()
    yield r
    r.close()


def test_redis_counts_across_two_proxies(proxy, recorder, redis):
    section = rl(store=redis.url, client_message_rate="3/2s", client_concurrency="2")
    p1 = proxy(sections=[section])
    p2 = proxy(sections=[section])
    end = align(2)
    with connect(p1) as c:
        accepted(c).ehlo()
        assert send(c, "r1@x.test").code == 250
        assert send(c, "r2@x.test").code == 250
    with connect(p2) as c:
        accepted(c).ehlo()
        assert send(c, "r3@x.test").code == 250
        assert c.cmd("MAIL FROM:<r4@x.test>").first == MSG_NET
    refusal_logged(p2, "client_message_rate", "network=127.0.0.0/24", 4, 3, "2s")
    assert any(k.startswith("ratelimit:ratelimit:cmsg:2000:") for k in redis.keys("ratelimit:*"))
    # Concurrency across both: one session on each, a third is refused on either.
    a = accepted(connect(p1))
    b = accepted(connect(p2))
    with connect(p1) as c:
        refused_at_connect(c, CONC_REFUSED)
    with connect(p2) as c:
        refused_at_connect(c, CONC_REFUSED)
    a.close()
    c = accepted_soon(p2)
    c.close()
    b.close()
    until_next(end)
    with connect(p1) as c:
        accepted(c).ehlo()
        assert send(c, "r5@x.test").code == 250


def test_redis_down_mail_flows_logged_once(proxy, recorder, redis):
    p = proxy(sections=[rl(store=redis.url, client_message_rate="2/1m", client_connection_rate="100/1m",
                           client_recipient_rate="100/1m")])
    with connect(p) as c:
        accepted(c).ehlo()
        assert send(c, "up1@x.test").code == 250
    redis.stop()
    for i in range(3):
        with connect(p) as c:
            accepted(c).ehlo()
            assert send(c, f"down{i}@x.test").code == 250
            assert send(c, f"down{i}b@x.test").code == 250
    assert [m for m in mails(recorder) if m.startswith("down")] == [
        "down0@x.test", "down0b@x.test", "down1@x.test", "down1b@x.test", "down2@x.test",
        "down2b@x.test"]
    warnings = re.findall(r"ratelimit: store \S+ failed: .*", p.log())
    assert len(warnings) == 1, p.log()
    assert "limits are not enforced" in warnings[0]
    # Back up: the limits hold again without a restart of the proxy.
    redis.start()
    deadline = time.monotonic() + BOUND
    while True:
        with connect(p) as c:
            accepted(c).ehlo()
            r1 = send(c, "back1@x.test")
            r2 = send(c, "back2@x.test")
            r3 = c.cmd("MAIL FROM:<back3@x.test>")
        if r1.code == 250 and r2.code == 250 and r3.first == MSG_NET:
            break
        assert time.monotonic() < deadline, (r1, r2, r3, p.log())
        time.sleep(0.2)
        redis.cmd("FLUSHALL")


def conc_total(redis):
    return sum(int(redis.cmd("GET", k) or 0) for k in redis.keys("ratelimit:*:conc:*"))


def test_redis_client_gone_while_slot_taken(proxy, recorder, redis):
    """Redis answers late (CLIENT PAUSE): a client that leaves while its
    concurrency increment is in flight still gets the slot given back."""
    p = proxy(store_timeout="5s", sections=[rl(store=redis.url, client_concurrency="1")])
    redis.cmd("CLIENT", "PAUSE", "1000", "ALL")
    c = connect(p)
    time.sleep(0.2)
    c.reset()
    assert p.wait_log(r"filter ratelimit cancelled at connect", timeout=BOUND), p.log()
    a = accepted_soon(p)
    with connect(p) as c:
        refused_at_connect(c, CONC_REFUSED)
    assert conc_total(redis) == 1
    a.cmd("QUIT").expect(221)
    a.closed(timeout=BOUND)
    a.close()
    deadline = time.monotonic() + BOUND
    while conc_total(redis) != 0:
        assert time.monotonic() < deadline, redis.keys("ratelimit:*")
        time.sleep(0.05)
