"""The Lua sandbox: what a script can and cannot reach.

Forbidden names are nil (lua_spec.md "Sandbox"); every way around that tried
here (globals, _G, _ENV, load, rawget, metatables, string methods, require)
must fail or return nothing, and the filesystem is checked afterwards: no
file created, none removed or renamed. Binary chunks are refused: the chunk
used is a real Lua 5.4 precompiled chunk for `return 'binary loaded'`.
"""

import os

import pytest

from test_lua import lua_proxy, lua_section, report, reports

# luac 5.4 output for "return 'binary loaded'" (made with lua_dump), as a Lua
# string literal.
BINARY_CHUNK = (
    r"\027LuaT\000\025\147\013\010\026\010\004\008\008xV\000\000\000\000\000\000\000\000\000\000\000(w@"
    r"\001\128\128\128\000\001\002\132Q\000\000\000\003\000\000\000F\000\002\001F\000\001\001\129\004\142"
    r"binary loaded\129\001\000\000\128\128\128\128\128"
)

FORBIDDEN = [
    "io", "os.execute", "os.exit", "os.remove", "os.rename", "os.getenv", "os.tmpname", "debug",
    "package", "require", "dofile", "loadfile", "string.dump", "collectgarbage",
]
AVAILABLE = [
    "os.time", "os.clock", "os.date", "os.difftime", "string.rep", "string.format", "string.gsub",
    "table.concat", "table.sort", "table.unpack", "math.floor", "math.type", "utf8.char", "coroutine.wrap",
    "coroutine.create", "pcall", "xpcall", "error", "select", "tostring", "tonumber", "pairs", "ipairs",
    "next", "type", "assert", "load", "print", "setmetatable", "getmetatable", "rawget", "rawset",
    "rawequal", "rawlen",
]

PROBES = r"""
local DIR = config.probe_dir .. "/"
PROBES = {
  io_open = function() return io.open(DIR .. "io_open", "w") end,
  io_lines = function() return io.lines("/etc/passwd") end,
  io_popen = function() return io.popen("touch " .. DIR .. "io_popen") end,
  os_execute = function() return os.execute("touch " .. DIR .. "os_execute") end,
  os_exit = function() return os.exit(3) end,
  os_remove = function() return os.remove(DIR .. "keep") end,
  os_rename = function() return os.rename(DIR .. "keep", DIR .. "renamed") end,
  os_getenv = function() return os.getenv("PATH") end,
  os_tmpname = function() return os.tmpname() end,
  debug_getinfo = function() return debug.getinfo(1) end,
  debug_getregistry = function() return debug.getregistry() end,
  debug_setmetatable = function() return debug.setmetatable("", {}) end,
  package_loadlib = function() return package.loadlib("libc.so.6", "system") end,
  package_loaded_io = function() return package.loaded.io.open(DIR .. "package_loaded", "w") end,
  require_io = function() return require("io").open(DIR .. "require_io", "w") end,
  require_os = function() return require("os").execute("touch " .. DIR .. "require_os") end,
  dofile = function() return dofile("/etc/passwd") end,
  loadfile = function() return loadfile("/etc/passwd") end,
  string_dump = function() return string.dump(function() end) end,
  string_method_dump = function() return ("").dump(function() end) end,
  collectgarbage = function() return collectgarbage("count") end,
  G_io = function() return _G.io.open(DIR .. "G_io", "w") end,
  ENV_io = function() return _ENV.io.open(DIR .. "ENV_io", "w") end,
  rawget_io = function() return rawget(_G, "io").open(DIR .. "rawget_io", "w") end,
  G_metatable = function() return getmetatable(_G).__index.io.open(DIR .. "G_metatable", "w") end,
  ENV_metatable = function() return getmetatable(_ENV).__index.os.execute("touch " .. DIR .. "ENV_mt") end,
  load_io = function() return load("return io")().open(DIR .. "load_io", "w") end,
  load_os = function() return load("return os.execute")()("touch " .. DIR .. "load_os") end,
  load_env_G = function() return load("return _G.io")().open(DIR .. "load_env_G", "w") end,
  coroutine_io = function()
    return coroutine.wrap(function() return io.open(DIR .. "coroutine_io", "w") end)()
  end,
  string_mt_index = function() return getmetatable("").__index.dump(print) end,
  os_date_bad = function() return os.date("%Ez") end,
}
function run_probes()
  local r = {}
  for name, f in pairs(PROBES) do
    local ok, res = pcall(f)
    r[name] = {ok = ok, type = type(res), res = type(res) == "string" and res:sub(1, 80) or nil}
  end
  return r
end
function types(names)
  local r = {}
  for _, name in ipairs(names) do
    local v = _ENV
    for part in name:gmatch("[^.]+") do
      if type(v) ~= "table" then v = nil break end
      v = v[part]
    end
    r[name] = type(v)
  end
  return r
end
FORBIDDEN = {%s}
AVAILABLE = {%s}
local at_load = {probes = run_probes(), forbidden = types(FORBIDDEN), available = types(AVAILABLE)}
function on_mail(tx, sender)
  T("load_probes", at_load.probes)
  T("load_forbidden", at_load.forbidden)
  T("load_available", at_load.available)
  T("probes", run_probes())
  T("forbidden", types(FORBIDDEN))
  T("available", types(AVAILABLE))
end
"""


def probe_script():
    q = lambda names: ", ".join(f'"{n}"' for n in names)  # noqa: E731
    return PROBES.replace("{%s}", "{" + q(FORBIDDEN) + "}", 1).replace("{%s}", "{" + q(AVAILABLE) + "}", 1)


def run_probe_session(p, client):
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("QUIT").expect(221)


def test_forbidden_names_are_nil(recorder, proxy, client, tmp_path):
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    p = lua_proxy(proxy, tmp_path, probe_script(), keys={"probe_dir": str(probe_dir)})
    run_probe_session(p, client)
    for key in ("forbidden", "load_forbidden"):
        got = report(p, key)
        assert {k: v for k, v in got.items() if v != "nil"} == {}, (key, got)
    for key in ("available", "load_available"):
        got = report(p, key)
        assert {k: v for k, v in got.items() if v != "function"} == {}, (key, got)


def test_forbidden_calls_fail_and_touch_nothing(recorder, proxy, client, tmp_path):
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    keep = probe_dir / "keep"
    keep.write_text("still here\n")
    p = lua_proxy(proxy, tmp_path, probe_script(), keys={"probe_dir": str(probe_dir)})
    run_probe_session(p, client)
    for key in ("load_probes", "probes"):
        got = report(p, key)
        # Either the call raised, or it gave nothing back.
        escaped = {k: v for k, v in got.items() if k != "os_date_bad" and v["ok"] and v["type"] != "nil"}
        assert escaped == {}, (key, escaped)
    assert sorted(os.listdir(probe_dir)) == ["keep"], os.listdir(probe_dir)
    assert keep.read_text() == "still here\n"
    assert p.alive()


def test_load_text_works_binary_fails(recorder, proxy, client, tmp_path):
    chunk = BINARY_CHUNK
    p = lua_proxy(proxy, tmp_path, f"""
    local BIN = "{chunk}"
    local function try(...)
      local ok, f, err = pcall(load, ...)
      if not ok then return "raised: " .. tostring(f) end
      if f == nil then return "refused: " .. tostring(err) end
      local ok2, v = pcall(f)
      return "LOADED: " .. tostring(v)
    end
    function on_mail(tx, sender)
      local function reader()
        local pieces, i = {{BIN:sub(1, 4), BIN:sub(5)}}, 0
        return function() i = i + 1 return pieces[i] end
      end
      T("load", {{
        text = load("return 1 + 2")(),
        text_t = load("local a = ... return a * 2", "chunk", "t")(21),
        text_env = load("return io == nil and os.execute == nil and string.dump == nil")(),
        syntax = select(2, load("return +")) ~= nil,
        binary = try(BIN),
        binary_b = try(BIN, "bin", "b"),
        binary_bt = try(BIN, "bin", "bt"),
        binary_env = try(BIN, "bin", "b", {{}}),
        binary_reader = try(reader()),
        binary_reader_b = try(reader(), "r", "b"),
      }})
    end
    """)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    got = report(p, "load")
    assert got["text"] == 3 and got["text_t"] == 42 and got["text_env"] is True, got
    assert got["syntax"] is True, got
    for k in ("binary", "binary_b", "binary_bt", "binary_env", "binary_reader", "binary_reader_b"):
        assert not got[k].startswith("LOADED"), (k, got[k])
    assert "binary" in got["binary"] or "mode" in got["binary"], got


def test_binary_chunk_check_is_not_fooled_by_the_reader(recorder, proxy, client, tmp_path):
    """A reader that hands the chunk over one byte at a time."""
    p = lua_proxy(proxy, tmp_path, f"""
    local BIN = "{BINARY_CHUNK}"
    function on_mail(tx, sender)
      local i = 0
      local f = load(function() i = i + 1 if i <= #BIN then return BIN:sub(i, i) end end)
      T("bytewise", f and tostring(f()) or "refused")
    end
    """)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert report(p, "bytewise") == "refused"


def test_string_metatable_is_protected(recorder, proxy, client, tmp_path):
    one = lua_section(tmp_path, """
    function on_mail(tx, sender)
      local r = {}
      r.mt = getmetatable("")
      r.mt_type = type(getmetatable(""))
      r.set = pcall(setmetatable, "", {})
      r.index = pcall(function() getmetatable("").__index = {upper = function() return "pwned" end} end)
      r.rawset = pcall(function() rawset(getmetatable(""), "__index", {}) end)
      r.upper = ("abc"):upper()
      r.len = ("abcd"):len()
      r.rep = ("ab"):rep(3)
      T("mt", r)
    end
    """, name="one")
    two = lua_section(tmp_path, """
    function on_mail(tx, sender) T("upper", ("xyz"):upper()) end
    """, name="two")
    p = proxy(sections=[one, two])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RSET").expect(250)
    c.cmd("MAIL FROM:<b@x.test>").expect(250)
    got = reports(p, "mt", section="one")
    assert len(got) == 2, p.log()
    for r in got:
        assert r["mt"] is False and r["mt_type"] == "boolean", r
        assert r["set"] is False and r["index"] is False and r["rawset"] is False, r
        assert r["upper"] == "ABC" and r["len"] == 4 and r["rep"] == "ababab", r
    # Nothing leaked into the other section's strings.
    assert reports(p, "upper", section="two") == ["XYZ", "XYZ"]


def test_sections_do_not_share_globals(recorder, proxy, client, tmp_path):
    one = lua_section(tmp_path, """
    SHARED = "from one"
    function on_mail(tx, s) T("one", {mine = SHARED}) end
    """, name="one")
    two = lua_section(tmp_path, """
    function on_mail(tx, s) T("two", {seen = SHARED, on_mail_is_mine = true}) end
    """, name="two")
    p = proxy(sections=[one, two])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert report(p, "one", section="one") == {"mine": "from one"}
    assert report(p, "two", section="two") == {"on_mail_is_mine": True}


def test_os_exit_does_not_stop_the_daemon(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, s)
      if os.exit then os.exit(7) end
      return smtp.reject(550, "still here")
    end
    """)
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == "550 5.7.1 still here"
    assert p.alive()


@pytest.mark.parametrize("where", ["top", "hook"])
def test_sandbox_same_at_top_level_and_in_hooks_for_coroutines(recorder, proxy, client, tmp_path, where):
    """A coroutine's function sees the sandbox too (no fresh global table)."""
    p = lua_proxy(proxy, tmp_path, """
    local function probe()
      return coroutine.wrap(function() return {io = type(io), debug = type(debug), dump = type(string.dump)} end)()
    end
    local at_top = probe()
    function on_mail(tx, s) T("co", WHERE == "top" and at_top or probe()) end
    """.replace("WHERE", f'"{where}"'))
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert report(p, "co") == {"io": "nil", "debug": "nil", "dump": "nil"}
