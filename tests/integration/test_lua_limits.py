"""Limits of the Lua host: the instruction budget with forced yields (a
spinning script does not starve other sessions; instruction_slice sets
how often), hook_timeout (waits
included; not catchable by pcall), memory_limit (the state recovers), and
waits (smtp.sleep) from every hook and from a script's own coroutines.

The spins include the ways around a yield-based budget: loops wrapped in
pcall/xpcall (the timeout must not be caught), loops inside script
coroutines, loops inside Lua functions that C called (metamethods, sort
comparators, gsub callbacks: no yield is possible there), and __gc
finalizers (Lua runs them with debug hooks off).

Timing checks are behaviour checks with generous bounds, not benchmarks.
"""

import socket
import threading
import time

import pytest

from kit.messages import stuff
from kit.proxy import Proxy, run_check
from test_lua import (
    BODY,
    FILTER_FAILURE,
    FILTER_FAILURE_CONNECT,
    HOOK_STAGE,
    assert_delivered,
    config_line,
    hook_script,
    lua_proxy,
    lua_section,
    refused,
    report,
    run_session,
    wait_reports,
    write_script,
)

SLEEPER = """
function on_mail(tx, s)
  if s.user == "sleep" then
    local t0 = smtp.now()
    local r = smtp.sleep(0.1)
    T("slept", {took = smtp.now() - t0, r = r})
  end
end
"""

SPINS = {
    "plain": "while true do end",
    "arith": "local n = 0 while true do n = n + 1 end",
    "pcall": "while true do pcall(function() while true do end end) end",
    "pcall-error": "repeat pcall(error, 'x') until false",
    "xpcall": "while true do xpcall(function() while true do end end, function(e) return e end) end",
    "coroutine": "coroutine.wrap(function() while true do end end)()",
    "coroutine-pcall": "while true do pcall(coroutine.wrap(function() while true do end end)) end",
    "resume-loop": "while true do local co = coroutine.create(function() while true do end end) "
                   "coroutine.resume(co) end",
    "strings": "local s = '' while true do s = ('x'):rep(100) .. tostring(#s) end",
    "gsub": "while true do string.gsub(('a'):rep(1000), 'a', function(c) return c end) end",
    "sort": "while true do local t = {} for i = 1, 1000 do t[i] = -i end "
            "table.sort(t, function(a, b) return a < b end) end",
    "close": "local x <close> = setmetatable({}, {__close = function() while true do end end})",
}

# Loops inside a Lua function that C code called (a metamethod, a sort
# comparator, a gsub callback): Lua cannot yield across that C call, so
# the host cannot preempt it with a yield; it stops such a call after
# 250 ms instead of waiting for hook_timeout, so others wait that long at
# the most.
NON_YIELDABLE = {
    "tostring": "tostring(setmetatable({}, {__tostring = function() while true do end end}))",
    "sort-comparator": "table.sort({3, 2, 1}, function(a, b) while true do end end)",
    "gsub-callback": "string.gsub('a', 'a', function() while true do end end)",
    "index-from-c": "table.concat(setmetatable({}, {__index = function() while true do end end}), ',', 1, 2)",
}


@pytest.mark.parametrize("spin", list(SPINS), ids=list(SPINS))
def test_busy_loop_hits_hook_timeout_without_starving_others(recorder, proxy, client, tmp_path, spin):
    _spin_while_another_sleeps(proxy, client, recorder, tmp_path, SPINS[spin])


@pytest.mark.parametrize("spin", list(NON_YIELDABLE), ids=list(NON_YIELDABLE))
def test_busy_loop_in_a_non_yieldable_call(recorder, proxy, client, tmp_path, spin):
    _spin_while_another_sleeps(proxy, client, recorder, tmp_path, NON_YIELDABLE[spin],
                               ends=r"without a chance to yield", min_spun=0.2)


def _spin_while_another_sleeps(proxy, client, recorder, tmp_path, spin_code,
                               ends=r"hook timeout", min_spun=0.9):
    spinner = lua_section(tmp_path, f"""
    function on_mail(tx, s)
      if s.user == "spin" then
        log.info("spinning")
        {spin_code}
      end
    end
    """, name="spinner", hook_timeout="1s")
    sleeper = lua_section(tmp_path, SLEEPER, name="sleeper")
    p = proxy(sections=[spinner, sleeper])
    other = client(p)
    other.greet()
    c = client(p)
    c.greet()
    t_spin = time.monotonic()
    c.send(b"MAIL FROM:<spin@x.test>\r\n")
    assert p.wait_log(r"\[spinner\] spinning"), p.log()
    time.sleep(0.1)
    # Another session's timer still fires on time while the script spins.
    t0 = time.monotonic()
    other.cmd("MAIL FROM:<sleep@x.test>").expect(250)
    took = time.monotonic() - t0
    assert took < 0.6, f"a 0.1 s sleep took {took:.2f} s while another script spun"
    slept = report(p, "slept", section="sleeper")
    assert 0.09 <= slept["took"] < 0.6 and slept["r"] is True, slept
    other.cmd("RCPT TO:<b@y.test>").expect(250)
    assert other.message(stuff(BODY) + b".\r\n").code == 250
    # The spinning hook ends at hook_timeout with the on_error reply.
    r = c.reply(timeout=10)
    spun = time.monotonic() - t_spin
    assert r.first == FILTER_FAILURE, r
    assert min_spun <= spun < 4, spun
    assert p.wait_log(ends), p.log()
    # The session and the state go on.
    c.envelope("fine@x.test")
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    assert len(recorder.wait_for_transactions(2)) == 2


def test_two_spinning_sessions_and_a_sleeper(recorder, proxy, client, tmp_path):
    spinner = lua_section(tmp_path, """
    function on_rcpt(tx, r) if r.user == "spin" then while true do end end end
    """, name="spinner", hook_timeout="1s")
    sleeper = lua_section(tmp_path, SLEEPER, name="sleeper")
    p = proxy(sections=[spinner, sleeper])
    other = client(p)
    other.greet()
    spinners = []
    for _ in range(2):
        c = client(p)
        start_txn_no_rcpt(c)
        c.send(b"RCPT TO:<spin@y.test>\r\n")
        spinners.append(c)
    time.sleep(0.2)
    t0 = time.monotonic()
    other.cmd("MAIL FROM:<sleep@x.test>").expect(250)
    assert time.monotonic() - t0 < 0.6
    for c in spinners:
        assert c.reply(timeout=10).first == FILTER_FAILURE


def start_txn_no_rcpt(c):
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)


def test_spinning_gc_finalizer_does_not_hang_the_daemon(recorder, proxy, client, tmp_path):
    """A __gc metamethod runs inside the collector, where Lua turns debug
    hooks off: a finalizer that never returns must still not freeze the
    event loop (the host may refuse __gc, or bound it some other way)."""
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, s)
      setmetatable({}, {__gc = function() while true do end end})
      if s.user == "churn" then
        local t
        for i = 1, 2e6 do t = {i} end   -- enough garbage for the collector to run
      end
    end
    """, keys={"hook_timeout": "1s"})
    c = client(p)
    c.greet()
    try:
        c.cmd("MAIL FROM:<a@x.test>", timeout=5)
        c.cmd("RSET", timeout=5)
        for _ in range(3):
            c.cmd("MAIL FROM:<churn@x.test>", timeout=5)
            c.cmd("RSET", timeout=5)
    finally:
        # Whatever that session got, the daemon must still serve others.
        t0 = time.monotonic()
        c2 = client(p, timeout=5)
        c2.banner(timeout=5).expect(220)
        assert time.monotonic() - t0 < 2


def test_spinning_gc_finalizer_at_top_level(recorder, tmp_path):
    """A finalizer on garbage made by the top level: the daemon starts (or
    refuses to) in bounded time, and stops on SIGTERM."""
    import kit.proxy as kp
    from kit.proxy import ProxyError

    sec = lua_section(tmp_path, """
    setmetatable({}, {__gc = function() while true do end end})
    function on_mail(tx, s) end
    """, hook_timeout="1s")
    p = kp.Proxy(str(tmp_path / "gc"), recorder.address, sections=[sec])
    try:
        p.start()
    except ProxyError as e:
        assert "did not listen" not in str(e), "the daemon hung at start"
        return
    finally:
        rc = p.stop()
    assert rc == 0 and not p.killed, p.log()


def test_sleep_longer_than_hook_timeout(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, hook_script("on_mail", "smtp.sleep(30) T('woke', true)"),
                  keys={"hook_timeout": "1s"})
    c = client(p)
    c.greet()
    t0 = time.monotonic()
    assert c.cmd("MAIL FROM:<a@x.test>", timeout=10).first == FILTER_FAILURE
    assert 0.9 <= time.monotonic() - t0 < 4
    assert p.wait_log(r"hook timeout"), p.log()
    c.cmd("NOOP").expect(250)
    time.sleep(0.3)
    assert "T woke" not in p.log()


def test_hook_timeout_counts_across_several_waits(recorder, proxy, client, tmp_path):
    """The deadline is for the whole hook call, not for each wait."""
    p = lua_proxy(proxy, tmp_path, hook_script("on_mail", "for i = 1, 20 do smtp.sleep(0.2) end"),
                  keys={"hook_timeout": "1s"})
    c = client(p)
    c.greet()
    t0 = time.monotonic()
    assert c.cmd("MAIL FROM:<a@x.test>", timeout=10).first == FILTER_FAILURE
    assert 0.9 <= time.monotonic() - t0 < 3


def test_busy_loop_in_on_disconnect(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    function on_disconnect(conn) log.info("spinning in disconnect") while true do end end
    """, keys={"hook_timeout": "1s"})
    c = client(p)
    c.greet()
    c.cmd("QUIT").expect(221)
    assert p.wait_log(r"spinning in disconnect")
    # Others are served meanwhile.
    t0 = time.monotonic()
    c2 = client(p)
    c2.greet()
    c2.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert time.monotonic() - t0 < 0.6
    c2.cmd("QUIT").expect(221)
    # Stopped at hook_timeout, or at once (the host may refuse to let
    # on_disconnect run past its first slice): either way bounded.
    assert len(p.wait_log(r"hook timeout|on_disconnect cannot wait", count=2, timeout=5)) == 2, p.log()
    assert p.alive()


@pytest.mark.parametrize(
    "bomb",
    [
        'local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 1000) end',
        'local x = string.rep("x", 1 << 30)',
        'local x = "xy" while true do x = x .. x end',
        "local t = {} for i = 1, 1e9 do t[i] = {i} end",
        'local t = {} for i = 1, 1e9 do t[#t + 1] = tostring(i) .. ("y"):rep(100) end',
        'local t = {} for i = 1, 1e9 do t[i] = string.format("%099d", i) end',
        'local parts = {} for i = 1, 1e6 do parts[i] = ("z"):rep(64) .. i end local s = table.concat(parts)',
    ],
    ids=["table-of-strings", "one-huge-string", "doubling", "tables", "append", "format", "concat"],
)
def test_memory_bomb(recorder, proxy, client, tmp_path, bomb):
    p = lua_proxy(proxy, tmp_path, f"""
    function on_mail(tx, s)
      if s.user == "bomb" then
        {bomb}
      end
      T("ok", s.user)
    end
    """, keys={"memory_limit": "16M", "hook_timeout": "20s"})
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<bomb@x.test>", timeout=30).first == FILTER_FAILURE
    assert p.wait_log(r"not enough memory"), p.log()
    # The same session and the state go on.
    c.envelope("fine@x.test")
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    # Again: the memory was given back.
    assert c.cmd("MAIL FROM:<bomb@x.test>", timeout=30).first == FILTER_FAILURE
    c.cmd("QUIT").expect(221)
    replies, _ = run_session(client(p), sender="next@x.test")
    assert replies["data"].code == 250, replies
    assert wait_reports(p, "ok", 2) == ["fine", "next"]
    assert len(recorder.wait_for_transactions(2)) == 2


def test_memory_bomb_in_one_section_spares_the_other(recorder, proxy, client, tmp_path):
    bomb = lua_section(tmp_path, """
    function on_mail(tx, s) if s.user == "bomb" then local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(1000) end end end
    """, name="bomb", memory_limit="16M")
    other = lua_section(tmp_path, """
    local big = {}
    for i = 1, 200 do big[i] = ("y"):rep(100000) end   -- 20 MB: over the other's limit, not its own
    function on_mail(tx, s) T("other", #big) end
    """, name="other", memory_limit="64M")
    p = proxy(sections=[bomb, other])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<bomb@x.test>", timeout=30).first == FILTER_FAILURE
    c.cmd("MAIL FROM:<fine@x.test>").expect(250)
    assert report(p, "other", section="other") == 200


def test_memory_bomb_during_a_wait(recorder, proxy, client, tmp_path):
    """Memory piled up around a wait is still bounded, and freed."""
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, s)
      local t = {}
      for i = 1, 1e9 do
        t[i] = ("x"):rep(4000)
        if i % 1000 == 0 then smtp.sleep(0.01) end
      end
    end
    """, keys={"memory_limit": "16M", "hook_timeout": "20s"})
    cs = [client(p) for _ in range(3)]
    for c in cs:
        c.greet()
        c.send(b"MAIL FROM:<a@x.test>\r\n")
    for c in cs:
        assert c.reply(timeout=30).first == FILTER_FAILURE
    assert p.wait_log(r"not enough memory"), p.log()


# ---- waits -------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", list(HOOK_STAGE))
def test_sleep_in_every_hook(recorder, proxy, client, tmp_path, hook):
    p = lua_proxy(proxy, tmp_path, hook_script(hook, "local t0 = smtp.now() local r = smtp.sleep(0.25) "
                                                     "T('slept', {r = r, took = smtp.now() - t0})"))
    c = client(p)
    t0 = time.monotonic()
    replies, _ = run_session(c)
    assert time.monotonic() - t0 >= 0.24
    assert replies["data"].code == 250, replies
    got = report(p, "slept")
    assert got["r"] is True and 0.24 <= got["took"] < 2, got
    assert_delivered(recorder)


def test_sleep_fractions_and_zero(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, s)
      local r = {}
      for _, d in ipairs({0, 0.001, 0.05}) do
        local t0 = smtp.now()
        local ok = smtp.sleep(d)
        r[#r + 1] = {d = d, ok = ok, took = smtp.now() - t0}
      end
      r.bad = {pcall(smtp.sleep, "soon")}
      r.neg = {pcall(smtp.sleep, -1)}
      T("sleeps", r)
    end
    """)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    got = report(p, "sleeps")
    for r in [got[k] for k in ("1", "2", "3")]:
        assert r["ok"] is True and r["d"] * 0.9 <= r["took"] < r["d"] + 0.5, got


def test_sessions_sleep_concurrently(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, hook_script("on_mail", "smtp.sleep(0.5)"))
    cs = [client(p) for _ in range(10)]
    for c in cs:
        c.greet()
    t0 = time.monotonic()
    for c in cs:
        c.send(b"MAIL FROM:<a@x.test>\r\n")
    for c in cs:
        c.reply(timeout=10).expect(250)
    took = time.monotonic() - t0
    # One after the other would be 5 s.
    assert 0.45 <= took < 2.0, took


def test_own_coroutines_with_waits(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender)
      local t0 = smtp.now()
      local gen = coroutine.wrap(function()
        for i = 1, 3 do
          smtp.sleep(0.05)
          coroutine.yield(i)
        end
        return "done"
      end)
      local got = {}
      for i = 1, 4 do got[i] = gen() end
      local co = coroutine.create(function(a)
        local slept = smtp.sleep(0.05)
        local b = coroutine.yield(a * 2, slept)
        return b + 1
      end)
      local ok1, v1, slept = coroutine.resume(co, 5)
      local st = coroutine.status(co)
      local ok2, v2 = coroutine.resume(co, 10)
      local okp, sleptp = pcall(smtp.sleep, 0.05)
      local nested = coroutine.wrap(function()
        return coroutine.wrap(function() smtp.sleep(0.05) return "inner" end)() .. "+outer"
      end)()
      local inwrap = {pcall(coroutine.wrap(function() smtp.sleep(0.01) error("in coroutine") end))}
      T("co", {got = got, ok1 = ok1, v1 = v1, slept = slept, status_between = st, ok2 = ok2, v2 = v2,
               status = coroutine.status(co), okp = okp, sleptp = sleptp, nested = nested,
               inwrap_ok = inwrap[1], inwrap_err = tostring(inwrap[2]),
               yieldable = coroutine.isyieldable(), took = smtp.now() - t0})
      return smtp.reject(550, "coroutines ok")
    end
    """)
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == "550 5.7.1 coroutines ok"
    got = report(p, "co")
    took = got.pop("took")
    inwrap_err = got.pop("inwrap_err")
    assert got == {"got": [1, 2, 3, "done"], "ok1": True, "v1": 10, "slept": True, "status_between": "suspended",
                   "ok2": True, "v2": 11, "status": "dead", "okp": True, "sleptp": True,
                   "nested": "inner+outer", "inwrap_ok": False, "yieldable": True}, got
    assert "in coroutine" in inwrap_err
    assert took >= 0.3, took


def test_coroutine_left_suspended_in_a_wait_is_harmless(recorder, proxy, client, tmp_path):
    """A script's coroutine whose wait is never resumed by the script."""
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender)
      KEEP = coroutine.create(function() smtp.sleep(0.05) coroutine.yield("first") smtp.sleep(5) end)
      local ok, v = coroutine.resume(KEEP)
      T("first", {ok, v})
    end
    """)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert report(p, "first") == [True, "first"]
    c.cmd("QUIT").expect(221)
    time.sleep(0.3)
    assert p.alive()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_hangs_up_during_sleep(recorder, proxy, client, tmp_path, how):
    p = lua_proxy(proxy, tmp_path, hook_script("on_mail", "log.info('sleeping') smtp.sleep(1) "
                                                          "return smtp.reject(550, 'woke up')"))
    c = client(p)
    c.greet()
    c.send(b"MAIL FROM:<a@x.test>\r\n")
    assert p.wait_log(r"\[policy\] sleeping")
    if how == "reset":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    time.sleep(1.3)  # past the timer
    assert p.alive()
    c2 = client(p)
    c2.greet()
    assert c2.cmd("MAIL FROM:<a@x.test>").first == "550 5.7.1 woke up"


def test_stop_while_hooks_wait(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, hook_script("on_mail", "smtp.sleep(30)"), keys={"hook_timeout": "60s"},
                  filter_timeout="60s")
    cs = [client(p) for _ in range(3)]
    for c in cs:
        c.greet()
        c.send(b"MAIL FROM:<a@x.test>\r\n")
    time.sleep(0.3)
    t0 = time.monotonic()
    rc = p.stop()
    # shutdown_timeout is 2s in the kit.
    assert time.monotonic() - t0 < 6
    assert rc == 0, p.log()
    assert not p.sanitizer_reports()


def test_busy_sessions_in_parallel_threads(recorder, proxy, client, tmp_path):
    """Several clients at once through a script that computes a little and
    waits a little: every one is answered, in order, within bounds."""
    p = lua_proxy(proxy, tmp_path, """
    function on_rcpt(tx, r)
      local n = 0
      for i = 1, 20000 do n = n + i % 7 end
      smtp.sleep(0.02)
      tx.notes.n = (tx.notes.n or 0) + 1
    end
    function on_data(tx, msg) tx:add_header("X-Rcpts", tostring(tx.notes.n)) end
    """)
    errors = []

    def one(i):
        try:
            c = client(p)
            replies, _ = run_session(c, sender=f"s{i}@x.test", rcpts=("a@y.test", "b@y.test"))
            if replies.get("data") is None or replies["data"].code != 250:
                errors.append((i, replies))
        except Exception as e:  # noqa: BLE001
            errors.append((i, e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    msgs = recorder.wait_for_transactions(8)
    assert len(msgs) == 8
    assert all(m.data.startswith(b"X-Rcpts: 2\r\n") for m in msgs), [m.data[:40] for m in msgs]


def test_hook_timeout_at_connect(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, hook_script("on_connect", "while true do end"), keys={"hook_timeout": "1s"})
    c = client(p)
    t0 = time.monotonic()
    r = c.banner(timeout=10)
    assert r.first == FILTER_FAILURE_CONNECT, r
    assert 0.9 <= time.monotonic() - t0 < 4


# ---- instruction_slice ---------------------------------------------------------------

# Two sessions' hooks in one Lua state run the same loop, each noting its
# name in a shared list at every step. Both first sleep, so that they
# wake together; then each loop runs some 2 million instructions (a few
# ms). With a slice of 1000 instructions each hook gives way every few
# steps and the list alternates; with one larger than the whole loop (and
# the loop well under the 250 ms stall limit) the first hook runs to its
# end before the second starts.
INTERLEAVE = """
order = {}
function on_mail(tx, s)
  smtp.sleep(0.3)
  for i = 1, 200 do
    local x = 0
    for j = 1, 2500 do x = x + j end
    order[#order + 1] = s.user
  end
  if #order == 400 then
    local switches = 0
    for i = 2, #order do
      if order[i] ~= order[i - 1] then switches = switches + 1 end
    end
    T("switches", switches)
  end
end
"""


def _switches(proxy, client, tmp_path, slice_):
    keys = {} if slice_ is None else {"instruction_slice": slice_}
    p = lua_proxy(proxy, tmp_path, INTERLEAVE, keys=keys)
    a, b = client(p), client(p)
    a.greet()
    b.greet()
    a.send(b"MAIL FROM:<a@x.test>\r\n")
    b.send(b"MAIL FROM:<b@x.test>\r\n")
    assert a.reply(timeout=10).code == 250 and b.reply(timeout=10).code == 250
    return report(p, "switches")


def test_instruction_slice_small_interleaves(recorder, proxy, client, tmp_path):
    assert _switches(proxy, client, tmp_path, "1000") >= 20


def test_instruction_slice_large_runs_through(recorder, proxy, client, tmp_path):
    """Ignored, the key would leave the default (200000), which splits each
    loop into some ten slices: many more switches than this."""
    assert _switches(proxy, client, tmp_path, "100000000") <= 3


@pytest.mark.parametrize("value", ["999", "0", "lots", "-1", "100000001", "1G", "2e5", "1.5k"])
def test_bad_instruction_slice_refused(recorder, tmp_path, value):
    path = write_script(tmp_path, "function on_mail(tx, s) end\n", prelude=False)
    cfg, log, out = refused(recorder, tmp_path,
                            [("lua policy", {"script": str(path), "instruction_slice": value})])
    line = config_line(cfg, "instruction_slice =")
    assert (f'{cfg}:{line}: [lua policy]: instruction_slice: bad value "{value}": expected '
            f"a number of instructions from 1000 to 100000000") in out, out


@pytest.mark.parametrize("value", ["1000", "200k", "100000000"])
def test_instruction_slice_accepted(recorder, tmp_path, value):
    path = write_script(tmp_path, "function on_mail(tx, s) end\n", prelude=False)
    p = Proxy(str(tmp_path / "ok"), recorder.address,
              sections=[("lua policy", {"script": str(path), "instruction_slice": value})])
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc == 0, out
