"""max_connections_per_ip counts IPv6 clients per network (issue 12 item 18).

One host given a /64 may connect from any address in it; counted per
address it would get around the limit. client_ipv6_prefix (default 64)
masks IPv6 addresses before counting; IPv4 stays per address, and an
IPv4-mapped IPv6 address (::ffff:a.b.c.d) counts as the IPv4 address.

Clients from many addresses of one /64 cannot be made on ::1 alone, so they
are presented through a proxy_protocol listener (trusted from 127.0.0.1):
the address in the PROXY header is the one counted. A plain listener on
[::1] checks the count on a real IPv6 socket too. Log lines keep the full
address, whatever the key.
"""

import socket
import time

import pytest

from kit.haproxy import proxy_v1, proxy_v2
from kit.proxy import Proxy, free_port, stop_all
from test_tls import BOUND, raw, tproxy  # noqa: F401


def pp_proxy(tproxy, **settings):
    return tproxy(listeners={"pp": "proxy_protocol"}, proxy_trusted="127.0.0.1/32",
                  max_connections=20, **settings)


def client_from(raw, p, ip, port, v2=False):
    """A connection on the proxy_protocol listener claiming to come from ip."""
    c = raw(p.ports["pp"])
    c.send((proxy_v2 if v2 else proxy_v1)(ip, port, "2001:db8:ffff::25" if ":" in ip else "127.0.0.1", 25))
    return c


def accepted(c):
    c.banner().expect(220)


def refused(c):
    r = c.banner()
    assert r.code == 421 and r.enhanced == "4.7.0", r
    assert c.closed(timeout=BOUND)


def test_one_64_shares_one_count(tproxy, raw, recorder):
    p = pp_proxy(tproxy, max_connections_per_ip=2)
    a = client_from(raw, p, "2001:db8::1", 40001)
    accepted(a)
    b = client_from(raw, p, "2001:db8::2", 40002, v2=True)
    accepted(b)
    c = client_from(raw, p, "2001:db8::3", 40003)
    refused(c)
    # Another /64 is another client.
    d = client_from(raw, p, "2001:db8:0:1::1", 40004)
    accepted(d)
    # The log names the address that was refused, not its network.
    assert p.wait_log(r"refused client=\[?2001:db8::3\]?:40003: max_connections_per_ip", timeout=BOUND), p.log()
    assert "2001:db8::/64" not in p.log()


def test_prefix_128_counts_per_address(tproxy, raw, recorder):
    p = pp_proxy(tproxy, max_connections_per_ip=2, client_ipv6_prefix=128)
    for i, ip in enumerate(["2001:db8::1", "2001:db8::2", "2001:db8::3"]):
        accepted(client_from(raw, p, ip, 40010 + i))
    # Per address, the limit still holds.
    accepted(client_from(raw, p, "2001:db8::1", 40020))
    refused(client_from(raw, p, "2001:db8::1", 40021))


def test_shorter_prefix_joins_networks(tproxy, raw, recorder):
    p = pp_proxy(tproxy, max_connections_per_ip=2, client_ipv6_prefix=48)
    accepted(client_from(raw, p, "2001:db8:0:1::1", 40030))
    accepted(client_from(raw, p, "2001:db8:0:2::1", 40031))
    refused(client_from(raw, p, "2001:db8:0:3::1", 40032))
    accepted(client_from(raw, p, "2001:db8:1::1", 40033))


def test_ipv4_stays_per_address(tproxy, raw, recorder):
    p = pp_proxy(tproxy, max_connections_per_ip=1)
    accepted(client_from(raw, p, "192.0.2.1", 40040))
    accepted(client_from(raw, p, "192.0.2.2", 40041))
    refused(client_from(raw, p, "192.0.2.1", 40042))


def test_ipv4_mapped_counts_as_ipv4(tproxy, raw, recorder):
    p = pp_proxy(tproxy, max_connections_per_ip=1)
    accepted(client_from(raw, p, "192.0.2.80", 40050))
    refused(client_from(raw, p, "::ffff:192.0.2.80", 40051, v2=True))
    # Another mapped address is another client, not part of ::/64.
    accepted(client_from(raw, p, "::ffff:192.0.2.81", 40052, v2=True))


def test_slot_released_under_its_key(tproxy, raw, recorder):
    """A session gives back the slot it took, under the same key: the /64
    gets in again after its sessions end, many times over."""
    p = pp_proxy(tproxy, max_connections_per_ip=1)
    for i in range(4):
        c = client_from(raw, p, f"2001:db8::{i + 1:x}", 40060 + i)
        accepted(c)
        c.cmd("QUIT").expect(221)
        assert c.closed(timeout=BOUND)
        c.close()
        time.sleep(0.05)  # let the proxy see the close before the next one
    held = client_from(raw, p, "2001:db8::aa", 40070)
    accepted(held)
    refused(client_from(raw, p, "2001:db8::bb", 40071))


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
        finally:
            s.close()
        return True
    except OSError:
        return False


def listening6(port):
    """A listening socket on [::1]:port (/proc/net/tcp6)."""
    want = f":{port:04X}"
    loop = "00000000000000000000000001000000"
    try:
        with open("/proc/net/tcp6") as f:
            next(f)
            return any(ln.split()[3] == "0A" and ln.split()[1] == loop + want for ln in f)
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_plain_ipv6_listener(recorder, tmp_path):
    p = Proxy(tmp_path / "v6", recorder.address, max_connections_per_ip=1)
    port6 = free_port()
    p.settings["listen"] = [f"127.0.0.1:{p.port}", f"[::1]:{port6}"]
    socks = []
    try:
        p.start()
        deadline = time.monotonic() + BOUND
        while not listening6(port6):
            assert time.monotonic() < deadline, p.log()
            time.sleep(0.01)
        a = socket.create_connection(("::1", port6), timeout=BOUND)
        socks.append(a)
        assert a.recv(512).startswith(b"220 ")
        b = socket.create_connection(("::1", port6), timeout=BOUND)
        socks.append(b)
        assert b.recv(512).startswith(b"421 4.7.0")
        # IPv4 loopback is another client.
        c = socket.create_connection(("127.0.0.1", p.port), timeout=BOUND)
        socks.append(c)
        assert c.recv(512).startswith(b"220 ")
        assert p.wait_log(r"refused client=\[?::1\]?:\d+: max_connections_per_ip", timeout=BOUND), p.log()
    finally:
        for s in socks:
            s.close()
        problems = stop_all([p], False)
    assert not problems, problems
