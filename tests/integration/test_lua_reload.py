"""Reloading Lua scripts (SIGHUP) and scripts that do not load at start.

A reload builds a new state; new sessions use it, sessions already running
finish on the old one; a script that fails to load keeps the old one
serving; kv survives. At start (and with -t) a script that fails to load
stops the daemon with file:line: [lua NAME]: script.lua:LINE: message.
"""

import os
import re
import signal
import textwrap
import time

import pytest

from kit.messages import stuff
from test_lua import (
    BODY,
    BOUND,
    PRELUDE,
    config_line,
    lua_proxy,
    lua_section,
    refused,
    report,
    wait_reports,
    write_script,
)

V1 = """
VERSION = "v1"
function on_mail(tx, s)
  if s.user == "a" then return smtp.reject(550, "v1 says no to a") end
end
function on_disconnect(conn) T("disconnect", VERSION) end
"""

V2 = """
VERSION = "v2"
function on_mail(tx, s)
  if s.user == "b" then return smtp.reject(550, "v2 says no to b") end
end
function on_disconnect(conn) T("disconnect", VERSION) end
"""


def replace_script(path, text, prelude=True):
    """Replace the script the way an editor or a deploy would: a new file
    renamed over the old one."""
    tmp = str(path) + ".new"
    with open(tmp, "w") as f:
        f.write(text + (PRELUDE if prelude else ""))
    os.rename(tmp, path)


def reload(p, n=1):
    """SIGHUP and wait for the n-th "SIGHUP:" summary line."""
    p.signal(signal.SIGHUP)
    got = p.wait_log(r"SIGHUP:", count=n, timeout=BOUND)
    assert len(got) >= n, p.log()


def try_sender(c, user):
    """MAIL FROM:<user@x.test>; a 250 is reset right away. Returns the reply."""
    r = c.cmd(f"MAIL FROM:<{user}@x.test>")
    if r.code == 250:
        c.cmd("RSET").expect(250)
    return r


def test_reload_new_sessions_use_the_new_script(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, V1)
    path = tmp_path / "policy.lua"
    old = client(p)
    old.greet()
    assert try_sender(old, "a").first == "550 5.7.1 v1 says no to a"
    assert try_sender(old, "b").code == 250

    replace_script(path, V2)
    reload(p)
    assert re.search(r"SIGHUP: 1 filter\(s\) reloaded, 0 failed", p.log()), p.log()

    new = client(p)
    new.greet()
    assert try_sender(new, "a").code == 250
    assert try_sender(new, "b").first == "550 5.7.1 v2 says no to b"
    # The session opened before the reload keeps v1 for its next transaction.
    assert try_sender(old, "a").first == "550 5.7.1 v1 says no to a"
    assert try_sender(old, "b").code == 250
    # And a message still goes through it.
    old.envelope("c@x.test")
    assert old.message(stuff(BODY) + b".\r\n").code == 250
    assert recorder.wait_for_transactions(1)[0].sender == "c@x.test"
    # Each session's disconnect hook runs in its own state.
    new.cmd("QUIT").expect(221)
    assert wait_reports(p, "disconnect", 1) == ["v2"]
    old.cmd("QUIT").expect(221)
    assert wait_reports(p, "disconnect", 2) == ["v2", "v1"]


def test_reload_while_a_hook_waits(recorder, proxy, client, tmp_path):
    """A hook waiting in the old state finishes there, after the swap."""
    v1 = """
    function on_mail(tx, s)
      log.info("v1 waiting")
      smtp.sleep(0.6)
      return smtp.reject(550, "v1 after the wait")
    end
    """
    v2 = """
    function on_mail(tx, s) return smtp.reject(550, "v2 now") end
    """
    p = lua_proxy(proxy, tmp_path, v1)
    c = client(p)
    c.greet()
    c.send(b"MAIL FROM:<a@x.test>\r\n")
    assert p.wait_log(r"v1 waiting")
    replace_script(tmp_path / "policy.lua", v2)
    reload(p)
    assert c.reply(timeout=10).first == "550 5.7.1 v1 after the wait"
    c2 = client(p)
    c2.greet()
    assert c2.cmd("MAIL FROM:<a@x.test>").first == "550 5.7.1 v2 now"
    c.cmd("QUIT").expect(221)
    # The old state is gone once its last session ended; the daemon goes on.
    time.sleep(0.2)
    assert c2.cmd("MAIL FROM:<a@x.test>").first == "550 5.7.1 v2 now"


BROKEN = {
    "syntax": ("function on_mail(tx, s)\n  if then\nend\n", 2),
    "runtime": ('VERSION = "v2"\nlocal t = nil\nlocal x = t.field\n', 3),
    "error-call": ('error("refusing to load")\n', 1),
    "empty-name": ("function on_mail(tx, s\n", 2),
}


@pytest.mark.parametrize("how", list(BROKEN) + ["missing", "directory"])
def test_reload_failure_keeps_the_old_script(recorder, proxy, client, tmp_path, how):
    p = lua_proxy(proxy, tmp_path, V1)
    path = tmp_path / "policy.lua"
    if how == "missing":
        os.remove(path)
    elif how == "directory":
        os.remove(path)
        os.mkdir(path)
    else:
        replace_script(path, BROKEN[how][0], prelude=False)
    reload(p)
    assert re.search(r"SIGHUP: 0 filter\(s\) reloaded, 1 failed", p.log()), p.log()
    lines = [ln for ln in p.log().splitlines() if "reload of [lua policy] failed, keeping the old one" in ln]
    assert lines, p.log()
    if how in BROKEN:
        assert re.search(rf"policy\.lua:{BROKEN[how][1]}:", lines[0]), lines
    else:
        assert "policy.lua" in lines[0], lines
    # v1 still serves new sessions.
    c = client(p)
    c.greet()
    assert try_sender(c, "a").first == "550 5.7.1 v1 says no to a"
    assert try_sender(c, "b").code == 250
    c.cmd("QUIT").expect(221)
    assert report(p, "disconnect") == "v1"
    # Fixed: the next reload takes it.
    if how == "directory":
        os.rmdir(path)
    replace_script(path, V2)
    reload(p, 2)
    c2 = client(p)
    c2.greet()
    assert try_sender(c2, "b").first == "550 5.7.1 v2 says no to b"


def test_kv_survives_reload(recorder, proxy, client, tmp_path):
    script = """
    function on_mail(tx, s)
      T("count", {version = "VERSION", n = kv.incr("count"), kept = kv.get("kept")})
      kv.set("kept", "set by VERSION")
    end
    """
    p = lua_proxy(proxy, tmp_path, script.replace("VERSION", "v1"))
    c = client(p)
    c.greet()
    try_sender(c, "x")
    try_sender(c, "x")
    c.cmd("QUIT").expect(221)
    replace_script(tmp_path / "policy.lua", textwrap.dedent(script.replace("VERSION", "v2")))
    reload(p)
    c2 = client(p)
    c2.greet()
    try_sender(c2, "x")
    got = wait_reports(p, "count", 3)
    assert got[0] == {"version": "v1", "n": 1}, got
    assert got[1] == {"version": "v1", "n": 2, "kept": "set by v1"}, got
    assert got[2] == {"version": "v2", "n": 3, "kept": "set by v1"}, got


def test_kv_survives_a_new_chain(recorder, proxy, client, tmp_path):
    """A SIGHUP that changes the sections builds every instance anew; the
    store is lua.so's, not an instance's, and stays."""
    script = """
    function on_mail(tx, s)
      T("count", {n = kv.incr("count")})
    end
    """
    p = lua_proxy(proxy, tmp_path, script)
    c = client(p)
    c.greet()
    try_sender(c, "x")
    c.cmd("QUIT").expect(221)
    p.sections[0][1]["observe"] = "yes"  # a changed key: a new chain
    p.write_config()
    reload(p)
    assert "SIGHUP: 1 filter(s) loaded anew" in p.log(), p.log()
    c2 = client(p)
    c2.greet()
    try_sender(c2, "x")
    assert wait_reports(p, "count", 2) == [{"n": 1}, {"n": 2}]


def test_reload_two_sections_one_fails(recorder, proxy, client, tmp_path):
    good = lua_section(tmp_path, V1, name="good")
    bad = lua_section(tmp_path, 'function on_rcpt(tx, r) return smtp.reject(550, "bad v1") end\n', name="bad")
    p = proxy(sections=[good, bad])
    replace_script(tmp_path / "good.lua", V2)
    replace_script(tmp_path / "bad.lua", "this is not lua\n", prelude=False)
    reload(p)
    assert re.search(r"SIGHUP: 1 filter\(s\) reloaded, 1 failed", p.log()), p.log()
    assert "reload of [lua bad] failed, keeping the old one" in p.log()
    c = client(p)
    c.greet()
    assert try_sender(c, "b").first == "550 5.7.1 v2 says no to b"
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert c.cmd("RCPT TO:<r@y.test>").first == "550 5.7.1 bad v1"


def test_many_reloads_under_traffic(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, V1)
    path = tmp_path / "policy.lua"
    clients = []
    for i in range(6):
        c = client(p)
        c.greet()
        clients.append(c)
        replace_script(path, V2 if i % 2 == 0 else V1)
        reload(p, i + 1)
    for i, c in enumerate(clients):
        # Client i was opened after i reloads: v1 for even i (0 reloads, 2, ...), v2 for odd.
        want_v2 = i % 2 == 1
        r = try_sender(c, "b" if want_v2 else "a")
        assert r.code == 550, (i, r)
        c.cmd("QUIT").expect(221)
    assert len(wait_reports(p, "disconnect", 6)) == 6
    assert p.alive()


# ---- scripts that do not load at start ---------------------------------------------------


START_ERRORS = {
    "syntax": ("function on_mail(tx, s)\n  return smtp.reject(\nend\n", 3, r"unexpected symbol|expected"),
    "runtime": ("local ok = true\nlocal t = nil\nprint(t.field)\n", 3, r"attempt to index a nil value"),
    "error": ('local x = 1\nerror("cannot start: " .. x)\n', 2, r"cannot start: 1"),
}


@pytest.mark.parametrize("how", list(START_ERRORS))
def test_script_that_does_not_load_stops_the_daemon(recorder, tmp_path, how):
    text, line, msg = START_ERRORS[how]
    path = write_script(tmp_path, text, prelude=False)
    sec = ("lua policy", {"script": str(path)})
    cfg, log, out = refused(recorder, tmp_path, [sec])
    cline = config_line(cfg, "script =")
    hline = config_line(cfg, "[lua policy]")
    for text_ in (log, out):
        m = re.search(rf"{re.escape(cfg)}:(\d+): \[lua policy\]: (.*)$", text_, re.M)
        assert m, text_
        assert int(m.group(1)) in (cline, hline), (m.group(0), cline, hline)
        assert re.search(rf"policy\.lua:{line}: ", m.group(2)), m.group(0)
        assert re.search(msg, m.group(2)), m.group(0)


def test_missing_script_stops_the_daemon(recorder, tmp_path):
    path = tmp_path / "nowhere" / "policy.lua"
    cfg, log, out = refused(recorder, tmp_path, [("lua policy", {"script": str(path)})])
    cline = config_line(cfg, "script =")
    for text_ in (log, out):
        m = re.search(rf"{re.escape(cfg)}:(\d+): \[lua policy\]: (.*)$", text_, re.M)
        assert m, text_
        assert int(m.group(1)) in (cline, config_line(cfg, "[lua policy]")), m.group(0)
        assert "policy.lua" in m.group(2), m.group(0)


@pytest.mark.parametrize(
    "keys,key",
    [
        ({}, None),
        ({"script": "{script}", "memory_limit": "lots"}, "memory_limit"),
        ({"script": "{script}", "hook_timeout": "soon"}, "hook_timeout"),
    ],
    ids=["no-script", "bad-memory", "bad-timeout"],
)
def test_bad_section_keys_refused(recorder, tmp_path, keys, key):
    path = write_script(tmp_path, "function on_mail(tx, s) end\n", prelude=False)
    keys = {k: v.replace("{script}", str(path)) for k, v in keys.items()}
    cfg, log, out = refused(recorder, tmp_path, [("lua policy", keys)])
    if key is None:
        assert re.search(rf"{re.escape(cfg)}:\d+: \[lua policy\]: .*script", out), out
    else:
        assert re.search(rf"{re.escape(cfg)}:{config_line(cfg, key + ' =')}: .*{key}", out), out


def test_check_accepts_a_good_script_and_runs_no_hook(recorder, tmp_path):
    import kit.proxy as kp

    path = write_script(tmp_path, """
    log.info("top level ran")
    function on_connect(conn) log.info("HOOK RAN") end
    """, prelude=False)
    p = kp.Proxy(str(tmp_path / "ok"), recorder.address, sections=[("lua policy", {"script": str(path)})])
    p.write_config()
    rc, out = kp.run_check(p.config_path)
    assert rc == 0, out
    assert "HOOK RAN" not in out
