"""SIGHUP reads the configuration again (DESIGN.md §4).

A new configuration is checked whole before it replaces the running one:
top-level keys, certificates, the backend address and (when the sections
changed) a new chain. New sessions get it; sessions already connected
finish on the configuration they started with; a broken file is logged and
the old configuration keeps serving. Lua-specific reloads (scripts edited,
sections unchanged) are in test_lua_reload.py.
"""

import signal

from kit.messages import stuff
from kit.proxy import closed_port, test_plugin
from kit.recorder import Recorder

BOUND = 10.0
BODY = b"Subject: reload\r\n\r\nhello\r\n"


def reload(p, n, settings=None, sections=None):
    """Rewrite the configuration (changes in settings / sections), SIGHUP,
    and wait for the n-th SIGHUP: line; returns that line."""
    if settings:
        p.settings.update(settings)
    if sections is not None:
        p.sections = list(sections)
    p.write_config()
    p.signal(signal.SIGHUP)
    got = p.wait_log(r"SIGHUP: [^\n]*", count=n, timeout=BOUND)
    assert len(got) >= n, p.log()
    return got[n - 1].group(0)


def banner_host(c):
    r = c.banner().expect(220)
    return r.first.split()[1]


def deliver(c, sender="a@x.test", rcpts=("b@y.test",)):
    c.cmd(f"MAIL FROM:<{sender}>").expect(250)
    for a in rcpts:
        c.cmd(f"RCPT TO:<{a}>").expect(250)
    assert c.message(stuff(BODY) + b".\r\n").code == 250


def sender_block(tmp_path, who):
    path = tmp_path / "senders"
    path.write_text(f"{who} reject\n")
    return ("plugin access", {"sender_list": str(path)})


def test_top_level_keys_apply_to_new_sessions(recorder, proxy, client):
    p = proxy(hostname="old.test", max_recipients="2")
    before = client(p)
    assert banner_host(before) == "old.test"
    line = reload(p, 1, {"hostname": "new.test", "max_recipients": "1"})
    assert "read again" in line, line
    after = client(p)
    assert banner_host(after) == "new.test"
    after.ehlo()
    after.envelope()
    assert after.cmd("RCPT TO:<c@y.test>").code == 452
    # The session from before keeps its limit of two.
    before.ehlo()
    deliver(before, rcpts=("b@y.test", "c@y.test"))
    assert recorder.wait_for_transactions(1, timeout=BOUND)[0].accepted_rcpts == ["b@y.test", "c@y.test"]


def test_override_survives_reload(recorder, proxy, client):
    p = proxy(args=("-o", "hostname=override.test"), hostname="file.test")
    reload(p, 1, {"hostname": "file2.test"})
    assert banner_host(client(p)) == "override.test"


def test_broken_file_keeps_running_configuration(recorder, proxy, client):
    p = proxy(hostname="old.test")
    p.settings["max_recipients"] = "lots"
    line = reload(p, 1)
    assert "keeping the running configuration" in line, line
    assert f"{p.config_path}:" in line and "max_recipients" in line, line
    assert p.alive()
    c = client(p)
    assert banner_host(c) == "old.test"
    c.ehlo()
    deliver(c)


def test_missing_file_keeps_running_configuration(recorder, proxy, client):
    import os

    p = proxy(hostname="old.test")
    os.rename(p.config_path, p.config_path + ".moved")
    p.signal(signal.SIGHUP)
    got = p.wait_log(r"SIGHUP: [^\n]*keeping the running configuration", timeout=BOUND)
    assert got, p.log()
    assert banner_host(client(p)) == "old.test"


def test_listen_change_takes_a_restart(recorder, proxy, client):
    p = proxy(hostname="old.test")
    line = reload(p, 1, {"listen": f"127.0.0.1:{closed_port()}", "hostname": "new.test"})
    assert "listen changed: that takes a restart" in line, line
    assert banner_host(client(p)) == "old.test"


def test_new_section_applies_to_new_sessions_only(recorder, proxy, client, tmp_path):
    p = proxy()
    before = client(p)
    before.greet()
    line = reload(p, 1, sections=[sender_block(tmp_path, "bad@x.test")])
    assert "1 filter(s) loaded anew" in line, line
    after = client(p)
    after.greet()
    assert after.cmd("MAIL FROM:<bad@x.test>").code == 550
    # Connected before: no filter in its chain.
    deliver(before, sender="bad@x.test")
    assert p.alive()


def test_section_removed(recorder, proxy, client, tmp_path):
    p = proxy(sections=[sender_block(tmp_path, "bad@x.test")])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<bad@x.test>").code == 550
    line = reload(p, 1, sections=[])
    assert "0 filter(s) loaded anew" in line, line
    d = client(p)
    d.greet()
    deliver(d, sender="bad@x.test")


def test_failing_new_section_keeps_old_chain(recorder, proxy, client, tmp_path):
    p = proxy(sections=[sender_block(tmp_path, "bad@x.test")])
    broken = ("plugin failinit", {"path": test_plugin("failinit")})
    line = reload(p, 1, sections=[sender_block(tmp_path, "bad@x.test"), broken])
    assert "keeping the running configuration" in line and "failinit" in line, line
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<bad@x.test>").code == 550  # the old chain, whole


def test_old_chain_freed_after_its_last_session(recorder, proxy, client, tmp_path):
    """A session outlives two chain changes; when it ends the generations it
    held go (ASan checks that nothing leaks or is used after)."""
    p = proxy(sections=[sender_block(tmp_path, "one@x.test")])
    c = client(p)
    c.greet()
    reload(p, 1, sections=[sender_block(tmp_path, "two@x.test")])
    reload(p, 2, sections=[])
    assert c.cmd("MAIL FROM:<one@x.test>").code == 550  # still its own chain
    c.cmd("RSET").expect(250)
    deliver(c, sender="two@x.test")
    c.cmd("QUIT").expect(221)
    assert c.closed(timeout=BOUND)
    d = client(p)
    d.greet()
    deliver(d, sender="one@x.test")
    assert p.alive()


def test_backend_change(recorder, proxy, client):
    other = Recorder().start()
    try:
        p = proxy()
        before = client(p)
        before.greet()
        reload(p, 1, {"backend": other.address})
        after = client(p)
        after.greet()
        deliver(after, sender="new@x.test")
        deliver(before, sender="old@x.test")
        [t] = other.wait_for_transactions(1, timeout=BOUND)
        assert t.sender == "new@x.test"
        assert [x.sender for x in recorder.wait_for_transactions(1, timeout=BOUND)] == ["old@x.test"]
    finally:
        other.stop()


def test_dns_server_change(recorder, proxy, client, dns):
    """The resolver plugins share takes the new dns_server: the client's
    name (XCLIENT NAME) is found once the SIGHUP points at the responder."""
    dns.ptr("127.0.0.1", "client.reload.test").a("client.reload.test", "127.0.0.1")
    recorder.configure(extra_caps=["XCLIENT"])
    p = proxy(client_rdns="yes", dns_server=f"127.0.0.1:{closed_port()}", dns_timeout="300ms")
    c = client(p)
    c.greet()
    reload(p, 1, {"dns_server": dns.address})
    d = client(p)
    d.greet()
    names = [x.split("NAME=")[1].split()[0] for x in recorder.commands() if "NAME=" in x]
    assert names == ["[TEMPUNAVAIL]", "client.reload.test"], names
