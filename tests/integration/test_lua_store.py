"""Lua's kv on the host's store (kv_store =) and redis.call.

kv_store = memory (the default) keeps kv.c's typed in-process table; any
other store (lmdb:PATH, redis://..., default) is typeless: numbers go in
as their text, kv.get gives strings. With Redis, kv and redis.call yield
the hook's coroutine and the store's callback resumes it; a Redis that is
down answers nil, err. The Redis servers are private ones
(tests/kit/redis.py), stopped by PID.

Scripts report with T(key, value) (test_lua.py's prelude); the hooks run
at EHLO (on_helo), with the EHLO name telling the script what to do.
"""

import os
import signal
import time

import pytest

import kit.proxy as kp
from kit.dialogue import config_line, refused
from kit.redis import Redis
from test_lua import (
    FILTER_FAILURE,
    log_lines,
    lua_proxy,
    lua_section,
    report,
    run_session,
    assert_delivered,
    wait_reports,
)


@pytest.fixture
def redis(tmp_path):
    r = Redis(workdir=tmp_path / "redis")
    r.start()
    yield r
    r.close()


def helo(p, client, name):
    """One session that says EHLO name and quits."""
    c = client(p)
    c.greet(name)
    c.cmd("QUIT").expect(221)


# ---- kv_store = memory: kv as before ----------------------------------------------


MEMORY_SCRIPT = """
function on_helo(conn, name)
  local r = {}
  kv.set("n", 42); kv.set("b", false); kv.set("f", 1.5)
  r.n, r.b, r.f = kv.get("n"), kv.get("b"), kv.get("f")
  r.i = kv.incr("c", 2.5)
  local v, err = redis.call("PING")
  r.call_v, r.call_err = v == nil, err
  T("mem", r)
end
"""


@pytest.mark.parametrize("keys", [{}, {"kv_store": "memory"}], ids=["default", "memory"])
def test_kv_memory_keeps_types(recorder, proxy, client, tmp_path, keys):
    p = lua_proxy(proxy, tmp_path, MEMORY_SCRIPT, keys=keys)
    helo(p, client, "one.test")
    assert report(p, "mem") == {
        "n": 42, "b": False, "f": 1.5, "i": 2.5,
        "call_v": True, "call_err": "redis.call needs kv_store = redis://... (or unix:...)",
    }


def test_kv_default_store_memory_is_kv_table(recorder, proxy, client, tmp_path):
    """kv_store = default with a top-level store = memory is kv's own table."""
    p = lua_proxy(proxy, tmp_path, MEMORY_SCRIPT, keys={"kv_store": "default"}, store="memory")
    helo(p, client, "one.test")
    assert report(p, "mem")["b"] is False


# ---- kv on LMDB ---------------------------------------------------------------------


LMDB_SCRIPT = """
kv.incr("loads")  -- LMDB answers at once: kv works at the top level too
function on_helo(conn, name)
  local r = {}
  if name == "count.test" then
    r.n = kv.incr("count")
    r.loads = kv.get("loads")
  elseif name == "types.test" then
    r.set_n = kv.set("n", 5); r.n = kv.get("n"); r.ntype = type(kv.get("n"))
    kv.set("f", 1.5); r.f = kv.get("f")
    kv.set("big", 2^53); r.big = kv.get("big")
    kv.set("s", "text"); r.s = kv.get("s")
    r.bool_ok, r.bool_err = pcall(kv.set, "b", true)
    r.table_ok = pcall(kv.set, "t", {})
    r.missing = kv.get("missing") == nil
    r.add1 = kv.add("a", "first"); r.add2 = kv.add("a", "second"); r.a = kv.get("a")
    r.del1 = kv.del("a"); r.del2 = kv.del("a")
    r.incr_str, r.incr_err = kv.incr("s")
    r.incr_frac = pcall(kv.incr, "c", 1.5)
    local long = string.rep("k", 512)
    r.long_v, r.long_err = kv.set(long, "x")
    r.max_ok = kv.set(string.rep("k", 511), "x")
    r.empty_v, r.empty_err = kv.get("")
    r.cfg_hidden = config.kv_store == nil
    local v, err = redis.call("GET", "n")
    r.call_v, r.call_err = v == nil, err
  end
  T(name, r)
end
"""


def test_kv_lmdb_persists_across_restart(recorder, proxy, client, tmp_path):
    keys = {"kv_store": f"lmdb:{tmp_path / 'kvdb'}"}
    p = lua_proxy(proxy, tmp_path, LMDB_SCRIPT, keys=keys)
    helo(p, client, "count.test")
    helo(p, client, "count.test")
    assert [r["n"] for r in wait_reports(p, "count.test", 2)] == [1, 2]
    assert report(p, "count.test")["loads"] == "1"
    # A reload runs the top level again, in a new state, on the same store.
    p.signal(signal.SIGHUP)
    assert p.wait_log(r"SIGHUP: 1 filter\(s\) reloaded, 0 failed")
    helo(p, client, "count.test")
    assert wait_reports(p, "count.test", 3)[-1] == {"n": 3, "loads": "2"}
    p.stop()
    p2 = lua_proxy(proxy, tmp_path, LMDB_SCRIPT, keys=keys)
    helo(p2, client, "count.test")
    got = report(p2, "count.test")
    assert got == {"n": 4, "loads": "3"}, got


def test_kv_lmdb_values_are_strings(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, LMDB_SCRIPT, keys={"kv_store": f"lmdb:{tmp_path / 'kvdb'}"})
    helo(p, client, "types.test")
    got = report(p, "types.test")
    assert got.pop("bool_err").endswith("not booleans (store 1 or 0))"), got
    assert got.pop("incr_err").startswith("store failed: "), got
    assert got.pop("long_err") == "kv.set: a key is 1 to 511 octets, not 512", got
    assert got.pop("empty_err") == "kv.get: a key is 1 to 511 octets, not 0", got
    assert got == {
        "set_n": True, "n": "5", "ntype": "string", "f": "1.5", "big": "9007199254740992", "s": "text",
        "bool_ok": False, "table_ok": False, "missing": True,
        "add1": True, "add2": False, "a": "first", "del1": True, "del2": False,
        "incr_frac": False, "max_ok": True, "cfg_hidden": True,
        "call_v": True, "call_err": "redis.call needs kv_store = redis://... (or unix:...)",
    }, got


def test_kv_store_bad_spec_stops_start(recorder, tmp_path):
    sec = lua_section(tmp_path, LMDB_SCRIPT, kv_store="nosuch:thing")
    cfg, log, out = refused(recorder, tmp_path, [sec])
    line = config_line(cfg, "kv_store =")
    assert f'{cfg}:{line}: [lua policy]: unknown store "nosuch:thing"' in out, out


# ---- kv on Redis --------------------------------------------------------------------


REDIS_KV = """
function on_helo(conn, name)
  local r = {}
  if name == "count.test" then
    r.n = kv.incr("shared")
  elseif name == "ops.test" then
    r.set = kv.set("s", "v"); r.s = kv.get("s")
    kv.set("n", 7); r.n = kv.get("n")
    r.add1 = kv.add("a", "first", 60); r.add2 = kv.add("a", "second"); r.a = kv.get("a")
    r.i1 = kv.incr("c", 5, 30); r.i2 = kv.incr("c", -2, 1); r.itype = math.type(r.i2)
    r.missing = kv.get("missing") == nil
    r.del1 = kv.del("s"); r.del2 = kv.del("s")
    r.bool_ok = pcall(kv.set, "b", false)
  elseif name == "fail.test" then
    local v, err = kv.incr("down")
    r.v, r.err = v == nil, err
    v, err = kv.get("down")
    r.gv, r.gerr = v == nil, err
  elseif name == "raise.test" then
    assert(kv.incr("down"))
  end
  T(name, r)
end
"""


def test_kv_redis_shared_by_two_proxies(recorder, proxy, client, tmp_path, redis):
    keys = {"kv_store": redis.url}
    p1 = lua_proxy(proxy, tmp_path, REDIS_KV, keys=keys)
    p2 = lua_proxy(proxy, tmp_path, REDIS_KV, keys=keys)
    helo(p1, client, "count.test")
    helo(p2, client, "count.test")
    helo(p1, client, "count.test")
    assert [r["n"] for r in wait_reports(p1, "count.test", 2)] == [1, 3]
    assert report(p2, "count.test") == {"n": 2}
    assert redis.cmd("GET", "shared") == "3"  # no prefix: the key as the script named it


def test_kv_redis_operations(recorder, proxy, client, tmp_path, redis):
    p = lua_proxy(proxy, tmp_path, REDIS_KV, keys={"kv_store": redis.url})
    helo(p, client, "ops.test")
    got = report(p, "ops.test")
    assert got == {
        "set": True, "s": "v", "n": "7", "add1": True, "add2": False, "a": "first",
        "i1": 5, "i2": 3, "itype": "integer", "missing": True, "del1": True, "del2": False,
        "bool_ok": False,
    }, got
    assert redis.cmd("GET", "n") == "7"
    assert 0 < redis.cmd("PTTL", "a") <= 60000
    # The ttl comes from the increment that made the key, not the later one.
    assert 1000 < redis.cmd("PTTL", "c") <= 30000
    assert redis.cmd("GET", "c") == "3"


def test_kv_redis_down_is_nil_err(recorder, proxy, client, tmp_path, redis):
    p = lua_proxy(proxy, tmp_path, REDIS_KV, keys={"kv_store": redis.url})
    redis.stop()
    helo(p, client, "fail.test")
    got = report(p, "fail.test")
    assert got["v"] is True and got["gv"] is True, got
    assert got["err"].startswith("store failed: "), got
    assert got["gerr"].startswith("store failed: "), got
    # A script that raises on the failure is the section's on_error.
    c = client(p)
    c.banner()
    assert c.cmd("EHLO raise.test").first == FILTER_FAILURE
    # Redis back: the store reconnects, kv works again without a restart.
    redis.start()
    deadline = time.monotonic() + 10
    n = 0
    while True:
        helo(p, client, "count.test")
        n += 1
        got = wait_reports(p, "count.test", n)[-1]
        if got == {"n": 1} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got == {"n": 1}, got


def test_kv_redis_down_on_error_accept(recorder, proxy, client, tmp_path, redis):
    p = lua_proxy(proxy, tmp_path, REDIS_KV, keys={"kv_store": redis.url, "on_error": "accept"})
    redis.stop()
    c = client(p)
    c.banner()
    c.cmd("EHLO raise.test").expect(250)
    assert log_lines(p, "store failed"), p.log()


def test_kv_redis_at_top_level_refused(recorder, tmp_path, redis):
    sec = lua_section(tmp_path, 'kv.get("x")\n', kv_store=redis.url)
    cfg, log, out = refused(recorder, tmp_path, [sec])
    assert f"kv.get: kv_store {redis.url} waits for its answers, which the script's top level cannot: " \
        "use it in hooks" in out, out


def test_kv_redis_in_on_disconnect(recorder, proxy, client, tmp_path, redis):
    p = lua_proxy(proxy, tmp_path, """
    function on_disconnect(conn)
      local v, err = kv.incr("bye")
      T("bye", {v = v, err = err})
    end
    """, keys={"kv_store": redis.url})
    helo(p, client, "one.test")
    assert report(p, "bye") == {"err": "kv.incr cannot wait in on_disconnect"}


def test_kv_redis_in_script_coroutines_and_many_sessions(recorder, proxy, client, tmp_path, redis):
    """kv waits inside a coroutine the script made, and many sessions wait at once."""
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender)
      local got = {}
      local co = coroutine.wrap(function(k)
        got[1] = kv.incr(k)
        got[2] = coroutine.yield("mine")
        got[3] = kv.incr(k, 10)
        return "done"
      end)
      local a = co("co:" .. sender.user)
      local b = co("resumed")
      T("co_" .. sender.user, {a = a, b = b, got = got, total = kv.incr("all")})
    end
    """, keys={"kv_store": redis.url})
    cs = []
    for i in range(10):
        c = client(p)
        c.greet()
        c.send(f"MAIL FROM:<s{i}@x.test>\r\n".encode())
        cs.append(c)
    for c in cs:
        assert c.reply().code == 250
    totals = []
    for i in range(10):
        got = report(p, f"co_s{i}")
        totals.append(got.pop("total"))
        assert got == {"a": "mine", "b": "done", "got": [1, "resumed", 11]}, got
    assert sorted(totals) == list(range(1, 11))
    assert redis.cmd("GET", "all") == "10"


# ---- redis.call ---------------------------------------------------------------------


CALL_SCRIPT = """
local function pack(v, err) return {v = v, err = err} end
function on_helo(conn, name)
  local r = {}
  if name == "call.test" then
    r.set = redis.call("SET", "k", "v")
    r.get = redis.call("GET", "k")
    r.incr = redis.call("INCR", "ctr"); r.incr2 = redis.call("INCRBY", "ctr", 41)
    r.itype = math.type(r.incr2)
    r.hset = redis.call("HSET", "h", "f1", "one", "f2", 2)
    local all = redis.call("HGETALL", "h")
    local h = {}
    for i = 1, #all, 2 do h[all[i]] = all[i + 1] end
    r.hgetall, r.hlen = h, #all
    r.nilreply = redis.call("GET", "missing")
    r.mget = redis.call("MGET", "k", "missing", "ctr")
    r.err = pack(redis.call("INCR", "k"))
    r.unknown = pack(redis.call("NOSUCHCOMMAND"))
    redis.call("SET", "num", 3.0); r.num = redis.call("GET", "num")
    redis.call("SET", "frac", 0.25); r.frac = redis.call("GET", "frac")
    r.kv_sees = kv.get("ctr")
    r.table_arg = pcall(redis.call, "SET", "x", {})
    r.no_cmd = pcall(redis.call)
  elseif name == "huge.test" then
    local args = {}
    for i = 1, 1000 do args[i] = "a" end
    r.many = pack(redis.call("DEL", table.unpack(args)))
    args[1000] = nil
    r.fewer = redis.call("DEL", table.unpack(args))
    r.long = pack(redis.call("SET", "big", string.rep("x", 2 * 1024 * 1024 + 1)))
  end
  T(name, r)
end
"""


def test_redis_call(recorder, proxy, client, tmp_path, redis):
    p = lua_proxy(proxy, tmp_path, CALL_SCRIPT, keys={"kv_store": redis.url})
    helo(p, client, "call.test")
    got = report(p, "call.test")
    assert got == {
        "set": {"ok": "OK"}, "get": "v", "incr": 1, "incr2": 42, "itype": "integer",
        "hset": 2, "hgetall": {"f1": "one", "f2": "2"}, "hlen": 4,
        "nilreply": False, "mget": ["v", False, "42"],
        "err": {"err": "ERR value is not an integer or out of range"},
        "unknown": {"err": got["unknown"]["err"]},
        "num": "3", "frac": "0.25", "kv_sees": "42",
        "table_arg": False, "no_cmd": False,
    }, got
    assert got["unknown"]["err"].startswith("ERR unknown command"), got


def test_redis_call_huge_arguments_refused(recorder, proxy, client, tmp_path, redis):
    p = lua_proxy(proxy, tmp_path, CALL_SCRIPT, keys={"kv_store": redis.url})
    helo(p, client, "huge.test")
    got = report(p, "huge.test")
    assert got == {
        "many": {"err": "redis.call: 1001 arguments, more than 1000"},
        "fewer": 0,
        "long": {"err": "redis.call: arguments longer than 2097152 octets in all"},
    }, got
    assert redis.keys() == []


WAIT_SCRIPT = """
function on_mail(tx, sender)
  log.info("waiting on %s", sender.user)
  local v, err = redis.call("INCR", sender.user)
  if v then return smtp.reject(550, "got " .. v) end
  return smtp.reject(550, "nothing: " .. tostring(err))
end
"""


@pytest.fixture
def frozen(redis):
    """freeze() stops the redis-server (SIGSTOP): commands are taken by the
    kernel and not answered until thaw() (SIGCONT)."""
    state = {"stopped": False}

    def freeze():
        redis.proc.send_signal(signal.SIGSTOP)
        state["stopped"] = True

    def thaw():
        redis.proc.send_signal(signal.SIGCONT)
        state["stopped"] = False

    yield freeze, thaw
    if state["stopped"]:
        thaw()


def test_redis_call_client_disconnects_while_waiting(recorder, proxy, client, tmp_path, redis, frozen):
    freeze, thaw = frozen
    p = lua_proxy(proxy, tmp_path, WAIT_SCRIPT, keys={"kv_store": redis.url}, store_timeout="10s")
    helo(p, client, "warm.test")  # the store is connected
    freeze()
    for i in range(5):
        c = client(p)
        c.greet()
        c.send(f"MAIL FROM:<q{i}@x.test>\r\n".encode())
        assert p.wait_log(rf"waiting on q{i}\b")
        c.close()
    time.sleep(0.2)  # the sessions are gone
    thaw()  # the answers to the cancelled requests come in: nobody is resumed
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<live@x.test>").first == "550 5.7.1 got 1"
    assert [redis.cmd("GET", f"q{i}") for i in range(5)] == ["1"] * 5
    assert p.alive()


def test_redis_call_hook_timeout_while_waiting(recorder, proxy, client, tmp_path, redis, frozen):
    freeze, thaw = frozen
    p = lua_proxy(proxy, tmp_path, WAIT_SCRIPT, keys={"kv_store": redis.url, "hook_timeout": "500ms"},
                  store_timeout="10s")
    helo(p, client, "warm.test")
    c = client(p)
    c.greet()
    freeze()
    assert c.cmd("MAIL FROM:<slow@x.test>").first == FILTER_FAILURE
    assert log_lines(p, "hook timeout (500 ms)"), p.log()
    thaw()
    c.cmd("RSET").expect(250)
    assert c.cmd("MAIL FROM:<slow@x.test>").first == "550 5.7.1 got 2"


def test_redis_call_store_timeout(recorder, proxy, client, tmp_path, redis, frozen):
    freeze, thaw = frozen
    p = lua_proxy(proxy, tmp_path, WAIT_SCRIPT, keys={"kv_store": redis.url}, store_timeout="300ms")
    helo(p, client, "warm.test")
    c = client(p)
    c.greet()
    freeze()
    got = c.cmd("MAIL FROM:<t@x.test>").first
    assert got.startswith("550 5.7.1 nothing: store failed: "), got


def test_redis_call_refuses_connection_commands(recorder, proxy, client, tmp_path, redis):
    p = lua_proxy(proxy, tmp_path, """
    function on_helo(conn, name)
      local r = {}
      for _, cmd in ipairs({{"BLPOP", "l", 1}, {"select", 1}, {"MULTI"}, {"Client", "REPLY", "OFF"},
                           {"SUBSCRIBE", "ch"}, {"XREAD", "block", 0, "STREAMS", "s", "$"}}) do
        local v, err = redis.call(table.unpack(cmd))
        r[#r + 1] = err
      end
      r[#r + 1] = redis.call("XREAD", "COUNT", 1, "STREAMS", "s", "0")
      r[#r + 1] = redis.call("PING").ok
      T("refused", r)
    end
    """, keys={"kv_store": redis.url})
    helo(p, client, "one.test")
    got = report(p, "refused")
    tail = " is not allowed (it blocks or changes the connection every user of the store shares)"
    assert got == [f"redis.call: {c}{tail}" for c in ("BLPOP", "select", "MULTI", "Client", "SUBSCRIBE", "XREAD")] \
        + [False, "PONG"], got


def test_redis_on_default_store(recorder, proxy, client, tmp_path, redis):
    p = lua_proxy(proxy, tmp_path, CALL_SCRIPT, keys={"kv_store": "default"}, store=redis.url)
    helo(p, client, "call.test")
    assert report(p, "call.test")["incr2"] == 42
    replies, _ = run_session(client(p))
    assert replies["data"].code == 250
    assert_delivered(recorder)


def test_redis_call_reply_counts_against_memory_limit(recorder, proxy, client, tmp_path, redis):
    """A reply is built in the script's state: one over memory_limit is nil, err,
    and the state goes on serving."""
    for i in range(8):
        redis.cmd("RPUSH", "big", "x" * (256 * 1024))
    p = lua_proxy(proxy, tmp_path, """
    function on_helo(conn, name)
      local v, err
      if name == "big.test" then v, err = redis.call("LRANGE", "big", 0, -1) else v, err = redis.call("LLEN", "big") end
      T(name, {v = type(v) == "table" and #v or v, err = err})
    end
    """, keys={"kv_store": redis.url, "memory_limit": "1M"})
    helo(p, client, "big.test")
    got = report(p, "big.test")
    assert got == {"err": "the answer does not fit in memory_limit"}, got
    helo(p, client, "small.test")
    assert report(p, "small.test") == {"v": 8}


# ---- the shipped example: examples/ratecount.lua ------------------------------------


RATECOUNT = os.path.join(kp.REPO, "lua", "examples", "ratecount.lua")


def test_example_ratecount_shared_by_two_proxies(recorder, proxy, client, redis):
    sec = ("lua ratecount", {"script": RATECOUNT, "kv_store": redis.url, "limit": "2", "window": "60",
                             "trusted": "none"})
    p1, p2 = proxy(sections=[sec]), proxy(sections=[sec])
    got = []
    for p in (p1, p2, p1, p2):
        c = client(p)
        c.greet()
        got.append(c.cmd("MAIL FROM:<a@x.test>").first)
        c.cmd("QUIT")
    assert all(g.startswith("250 ") for g in got[:2]), got
    assert got[2:] == ["451 4.7.1 Too much mail from your network, try again later"] * 2, got
    assert redis.cmd("GET", "ratecount:127.0.0.0/24") == "4"
    assert 0 < redis.cmd("PTTL", "ratecount:127.0.0.0/24") <= 60000
    # The store down: mail goes on, the log says why.
    redis.stop()
    c = client(p1)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").code == 250
    assert log_lines(p1, "ratecount: cannot count 127.0.0.0/24: store failed"), p1.log()


def test_example_ratecount_trusted_and_memory(recorder, proxy, client):
    sec = ("lua ratecount", {"script": RATECOUNT, "limit": "1"})  # 127.0.0.0/8 is trusted by default
    p = proxy(sections=[sec])
    c = client(p)
    c.greet()
    for _ in range(3):
        c.cmd("MAIL FROM:<a@x.test>").expect(250)
        c.cmd("RSET").expect(250)
