"""The Lua host (lua.so): hooks and the objects they get, verdicts and
return values, script errors, transaction helpers (headers, scores, notes),
kv, smtp.net/now, logging, observe mode and the config table.

Every script is a small inline Lua text written into the test's tmp_path.
Scripts report what they saw with T(key, value) (the prelude appended to
each script): one log line "[SECTION] T key i/n HEX" per chunk of the value
as JSON, hex-encoded so that no quoting in the log can garble it;
reports(p, key) decodes them. What the client got is checked against what
the recording backend did (or did not) receive.

The other test_lua_*.py files import the helpers from here: test_lua_dns.py
(DNS helpers), test_lua_sandbox.py, test_lua_limits.py (instruction budget,
hook_timeout, memory_limit, coroutines) and test_lua_reload.py (SIGHUP,
start-up errors).
"""

import json
import re
import textwrap
import time

import pytest

from kit.messages import stuff
from kit.proxy import Proxy  # noqa: F401  (re-exported to the other test_lua*.py)

HOST = "proxy.test"  # the hostname kit.proxy.Proxy configures
FILTER_FAILURE = "451 4.3.0 Temporary filter failure, try again later"
FILTER_FAILURE_CONNECT = f"421 4.3.0 {HOST} Temporary filter failure, try again later"
FILTER_FAILURE_REJECT = "550 5.3.0 Refused after a filter failure"
BOUND = 10.0  # generous bound for things that should take milliseconds

from kit.dialogue import (  # noqa: E402  shared with the other filter tests
    STEP,
    assert_backend_stopped_at,
    assert_nothing_delivered,
    config_line,
    default_reply,
    refused,
    reply_at,
    start_txn,
    with_body,
)


BODY = (
    b"From: <a@x.test>\r\n"
    b"To: <b@y.test>\r\n"
    b"Subject: lua test\r\n"
    b"\r\n"
    b"Hello.\r\n"
    b".a line with a leading dot\r\n"
    b"last line\r\n"
)
# This file's BODY is the message by default.
run_session, assert_delivered = with_body(BODY)

# Appended (not prepended) to every script so that line numbers in the
# test's own text are the line numbers in the file.
PRELUDE = r"""
-- ---- test prelude: T(key, value) logs value as hex-encoded JSON ----
local function _t_json(v, seen)
  local t = type(v)
  if t == "nil" then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return '"' .. tostring(v) .. '"' end
    if math.type(v) == "integer" then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  if t == "string" then
    return '"' .. v:gsub('[%c"\\\128-\255]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  end
  if t == "table" then
    seen = seen or {}
    if seen[v] then return '"<cycle>"' end
    seen[v] = true
    local n, count, out = #v, 0, {}
    for _ in pairs(v) do count = count + 1 end
    if count == n then
      for i = 1, n do out[i] = _t_json(v[i], seen) end
      seen[v] = nil
      return "[" .. table.concat(out, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do out[#out + 1] = _t_json(tostring(k)) .. ":" .. _t_json(v[k], seen) end
    seen[v] = nil
    return "{" .. table.concat(out, ",") .. "}"
  end
  return '"<' .. t .. '>"'
end
function T(key, value)
  local h = (_t_json(value):gsub(".", function(c) return string.format("%02x", c:byte()) end))
  local n = math.max(1, (#h + 599) // 600)
  for i = 1, n do
    log.info("T %s %d/%d %s", key, i, n, h:sub((i - 1) * 600 + 1, i * 600))
  end
end
-- an address object as a plain table
function A(a)
  if a == nil then return nil end
  local params = {}
  for k, v in pairs(a.params or {}) do params[k] = v end
  return {addr = a.addr, user = a.user, domain = a.domain, params = params, raw = a.raw}
end
"""

_T_RE = re.compile(r"\[(?:lua )?(?P<sec>[^\]\s]+)\] T (?P<key>\S+) (?P<i>\d+)/(?P<n>\d+) (?P<hex>[0-9a-f]*)")


# ---- helpers (imported by the other test_lua_*.py) -------------------------------


def write_script(tmp_path, text, name="policy", prelude=True):
    """Write a script (dedented; the prelude appended) as tmp_path/NAME.lua."""
    path = tmp_path / f"{name}.lua"
    body = textwrap.dedent(text).lstrip("\n")
    path.write_text(body + (PRELUDE if prelude else ""))
    return path


def lua_section(tmp_path, text, name="policy", prelude=True, **keys):
    """A [lua NAME] section running an inline script."""
    path = write_script(tmp_path, text, name, prelude)
    d = {"script": str(path)}
    d.update(keys)
    return (f"lua {name}", d)


def lua_proxy(proxy, tmp_path, text, name="policy", dns=None, keys=None, extra=(), **settings):
    """Start a proxy with one Lua section (then the extra sections)."""
    if dns is not None:
        settings.setdefault("dns_server", dns.address)
        settings.setdefault("dns_timeout", "1s")
    sec = lua_section(tmp_path, text, name, **(keys or {}))
    return proxy(sections=[sec, *extra], **settings)


def reports(p, key, section="policy"):
    """The values a script reported with T(key, value), in order."""
    out, buf = [], []
    for m in _T_RE.finditer(p.log()):
        if m["sec"] != section or m["key"] != key:
            continue
        i, n = int(m["i"]), int(m["n"])
        if i == 1:
            buf = []
        buf.append(m["hex"])
        if i == n:
            out.append(json.loads(bytes.fromhex("".join(buf)).decode("utf-8")))
    return out


def wait_reports(p, key, n=1, section="policy", timeout=BOUND):
    """Wait for n reports of key; returns them all (fails the test if fewer)."""
    deadline = time.monotonic() + timeout
    while True:
        got = reports(p, key, section)
        if len(got) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(got) >= n, f"{n} report(s) of {key!r} expected, got {got!r}\n{p.log()[-6000:]}"
    return got


def report(p, key, section="policy"):
    """The one (last) value reported as key."""
    return wait_reports(p, key, 1, section)[-1]


def log_lines(p, *needles):
    """The log lines containing every needle."""
    return [ln for ln in p.log().splitlines() if all(n in ln for n in needles)]


HOOK_STAGE = {"on_connect": "connect", "on_helo": "helo", "on_mail": "mail", "on_rcpt": "rcpt", "on_data": "data"}
HOOK_ARGS = {"on_connect": "conn", "on_helo": "conn, name", "on_mail": "tx, sender", "on_rcpt": "tx, rcpt",
             "on_data": "tx, msg"}


def hook_script(hook, body):
    """A script whose only hook is `hook` with this body."""
    return f"function {hook}({HOOK_ARGS[hook]})\n{textwrap.indent(textwrap.dedent(body).strip(), '  ')}\nend\n"


def failure_for(stage):
    return FILTER_FAILURE_CONNECT if stage == "connect" else FILTER_FAILURE


# ---- hooks and their objects -------------------------------------------------------


EVERY_HOOK = """
function on_connect(conn)
  T("connect", {client_ip = conn.client_ip, client_port = conn.client_port, local_ip = conn.local_ip,
                helo = conn.helo, tls = conn.tls, auth_user = conn.auth_user, trusted = conn.trusted,
                id = conn.id, notes = type(conn.notes), port_type = math.type(conn.client_port)})
  conn:log("conn log %s %d", "works", 42)
end
function on_helo(conn, name)
  T("helo", {name = name, id = conn.id})
end
function on_mail(tx, sender)
  T("mail", {sender = A(sender), tx_sender = A(tx.sender), id = tx.id, conn_id = tx.conn.id,
             helo = tx.conn.helo, nrcpt = #tx.recipients, score = tx.score, symbols = tx.symbols,
             notes = type(tx.notes)})
end
function on_rcpt(tx, rcpt)
  local have = {}
  for i, r in ipairs(tx.recipients) do have[i] = r.addr end
  T("rcpt", {rcpt = A(rcpt), have = have, id = tx.id, sender = tx.sender.addr})
end
function on_data(tx, msg)
  local have = {}
  for i, r in ipairs(tx.recipients) do have[i] = A(r) end
  local body, truncated = msg:body()
  T("data", {size = msg.size, id = tx.id, have = have, body = body, truncated = truncated})
end
function on_disconnect(conn)
  T("disconnect", {id = conn.id, helo = conn.helo})
end
"""


def test_every_hook_called_with_its_objects(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, EVERY_HOOK)
    c = client(p)
    replies, closed = run_session(c, sender="Some.One@Sender.TEST", rcpts=("Rcpt@Y.Test", "two@y.test"),
                                  helo="Client.Example")
    assert replies["data"].code == 250, replies
    assert replies["quit"].code == 221
    t = assert_delivered(recorder, rcpts=("Rcpt@Y.Test", "two@y.test"))
    assert t.sender == "Some.One@Sender.TEST"  # the script's view changes nothing on the wire

    conn = report(p, "connect")
    cid = conn["id"]
    assert isinstance(cid, str) and re.fullmatch(r"[0-9A-Za-z]+", cid), conn
    assert conn["client_ip"] == "127.0.0.1"
    assert conn["client_port"] == c.sock.getsockname()[1]
    assert conn["port_type"] == "integer"
    assert conn["local_ip"] == "127.0.0.1"
    for absent in ("helo", "tls", "auth_user"):
        assert absent not in conn, conn
    assert conn["trusted"] is False
    assert conn["notes"] == "table"
    # The session id is the one on the daemon's own lines.
    assert any(f"id={cid}" in ln for ln in log_lines(p, "status=sent")), p.log()
    assert log_lines(p, "[policy]", "conn log works 42"), p.log()
    assert all(cid in ln for ln in log_lines(p, "[policy]", "conn log works 42"))

    assert report(p, "helo") == {"name": "Client.Example", "id": cid}

    mail = report(p, "mail")
    want_sender = {"addr": "Some.One@sender.test", "user": "Some.One", "domain": "sender.test", "params": [],
                   "raw": "<Some.One@Sender.TEST>"}
    assert mail["sender"] == want_sender, mail
    assert mail["tx_sender"] == want_sender, mail
    assert mail["id"] == f"{cid}.1", mail
    assert mail["conn_id"] == cid
    assert mail["helo"] == "Client.Example"
    assert mail["nrcpt"] == 0 and mail["score"] == 0 and mail["symbols"] == [] and mail["notes"] == "table"

    rc = wait_reports(p, "rcpt", 2)
    assert rc[0]["rcpt"] == {"addr": "Rcpt@y.test", "user": "Rcpt", "domain": "y.test", "params": [],
                             "raw": "<Rcpt@Y.Test>"}, rc
    assert rc[0]["have"] == [] and rc[0]["id"] == f"{cid}.1" and rc[0]["sender"] == "Some.One@sender.test"
    assert rc[1]["rcpt"]["addr"] == "two@y.test"
    assert rc[1]["have"] == ["Rcpt@y.test"], rc

    data = report(p, "data")
    assert data["id"] == f"{cid}.1"
    assert [r["addr"] for r in data["have"]] == ["Rcpt@y.test", "two@y.test"]
    assert data["body"] == "Hello.\r\n.a line with a leading dot\r\nlast line\r\n"
    assert data["truncated"] is False
    summary = p.wait_summaries(1)[-1]
    assert data["size"] == int(summary["size"]), (data, summary)
    assert data["size"] in (len(BODY), len(stuff(BODY))), data

    assert p.wait_log(r"\[policy\] T disconnect")
    assert report(p, "disconnect") == {"id": cid, "helo": "Client.Example"}


def test_hooks_in_order_and_second_transaction(recorder, proxy, client, tmp_path):
    script = """
    local function say(what) return function(a, b) log.info("CALL %s", what) end end
    on_connect, on_helo, on_mail, on_rcpt, on_data, on_disconnect =
      say("connect"), say("helo"), say("mail"), say("rcpt"), say("data"), say("disconnect")
    local m = on_mail
    function on_mail(tx, s) m() T("txid", tx.id) end
    """
    p = lua_proxy(proxy, tmp_path, script)
    c = client(p)
    start_txn(c)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    start_txn(c, greet=False)
    c.cmd("RSET").expect(250)
    c.cmd("QUIT").expect(221)
    assert p.wait_log(r"CALL disconnect")
    calls = re.findall(r"\[policy\] CALL (\w+)", p.log())
    assert calls == ["connect", "helo", "mail", "rcpt", "data", "mail", "rcpt", "disconnect"], calls
    ids = wait_reports(p, "txid", 2)
    assert ids[0].endswith(".1") and ids[1].endswith(".2") and ids[0][:-2] == ids[1][:-2], ids


@pytest.mark.parametrize(
    "line,want",
    [
        ("MAIL FROM:<User@Example.COM> SIZE=1234 BODY=8BITMIME",
         {"addr": "User@example.com", "user": "User", "domain": "example.com",
          "params": {"SIZE": "1234", "BODY": "8BITMIME"}, "raw": "<User@Example.COM> SIZE=1234 BODY=8BITMIME"}),
        ("MAIL FROM:<user@example.com> SIZE=99",
         {"addr": "user@example.com", "user": "user", "domain": "example.com",
          "params": {"SIZE": "99"}, "raw": "<user@example.com> SIZE=99"}),
        ("MAIL FROM:<>", {"addr": "", "user": "", "params": [], "raw": "<>"}),
        ("MAIL FROM:<> SIZE=10", {"addr": "", "user": "", "params": {"SIZE": "10"}, "raw": "<> SIZE=10"}),
    ],
    ids=["params", "size", "null", "null-size"],
)
def test_sender_address_object(recorder, proxy, client, tmp_path, line, want):
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender)
      T("sender", A(sender))
      T("null", {is_nil_domain = sender.domain == nil, addr_len = #sender.addr})
    end
    """)
    c = client(p)
    c.greet()
    c.cmd(line).expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    got = report(p, "sender")
    assert got == want, got
    if want["addr"] == "":
        assert report(p, "null") == {"is_nil_domain": True, "addr_len": 0}
    # The MAIL line reached the backend as the client wrote it.
    assert recorder.wait_for_transactions(1)[0].mail == line


def test_rcpt_address_object_and_recipients_accepted_by_backend(recorder, proxy, client, tmp_path):
    recorder.reply("RCPT", "550 5.1.1 no such user", match="nouser@")
    p = lua_proxy(proxy, tmp_path, """
    function on_rcpt(tx, rcpt)
      local have = {}
      for i, r in ipairs(tx.recipients) do have[i] = r.addr end
      T("rcpt", {rcpt = A(rcpt), have = have})
    end
    function on_data(tx, msg)
      local have = {}
      for i, r in ipairs(tx.recipients) do have[i] = A(r) end
      T("data", have)
    end
    """)
    c = client(p)
    c.greet()
    c.envelope("a@x.test", "One@Y.TEST")
    c.cmd("RCPT TO:<nouser@y.test>").expect(550)
    c.cmd("RCPT TO:<two@y.test>").expect(250)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    got = wait_reports(p, "rcpt", 3)
    assert [g["rcpt"]["addr"] for g in got] == ["One@y.test", "nouser@y.test", "two@y.test"]
    assert got[0]["rcpt"] == {"addr": "One@y.test", "user": "One", "domain": "y.test", "params": [],
                              "raw": "<One@Y.TEST>"}
    assert [g["have"] for g in got] == [[], ["One@y.test"], ["One@y.test"]]
    data = report(p, "data")
    assert [r["addr"] for r in data] == ["One@y.test", "two@y.test"], data
    assert data[0]["domain"] == "y.test" and data[0]["user"] == "One"
    assert_delivered(recorder, rcpts=("One@Y.TEST", "two@y.test"))


def test_helo_name_and_helo_again(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    function on_helo(conn, name) T("helo", name) end
    function on_mail(tx, s) T("conn_helo", tx.conn.helo) end
    """)
    c = client(p)
    c.banner().expect(220)
    c.cmd("HELO First.Example").expect(250)
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RSET").expect(250)
    c.cmd("EHLO second.example").expect(250)
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("QUIT").expect(221)
    assert wait_reports(p, "helo", 2) == ["First.Example", "second.example"]
    assert wait_reports(p, "conn_helo", 2) == ["First.Example", "second.example"]


def test_message_object(recorder, proxy, client, tmp_path):
    msg = (
        b"Received: from one by two\r\n"
        b"Subject: a long\r\n  folded subject\r\n"
        b"received: second one\r\n"
        b"X-Empty:\r\n"
        b"To: <b@y.test>\r\n"
        b"\r\n"
        b"first line\r\n"
        b".leading dot\r\n"
        b"..two dots\r\n"
        b"\r\n"
        b"last line\r\n"
    )
    p = lua_proxy(proxy, tmp_path, """
    function on_data(tx, msg)
      local body, truncated = msg:body()
      local none = msg:headers("X-Nope")
      T("msg", {
        size = msg.size,
        subject = msg:header("subject"), subject_upper = msg:header("SUBJECT"),
        received1 = msg:header("Received"), received2 = msg:header("Received", 2),
        received3 = msg:header("Received", 3), missing = msg:header("X-Nope"),
        received_all = msg:headers("RECEIVED"), none_type = type(none), none_n = #none,
        empty = msg:header("X-Empty"), to = msg:header("to", 1),
        body = body, truncated = truncated,
      })
    end
    """)
    c = client(p)
    start_txn(c)
    assert c.message(stuff(msg) + b".\r\n").code == 250
    got = report(p, "msg")
    assert got["subject"] == "a long  folded subject", got
    assert got["subject_upper"] == got["subject"]
    assert got["received1"] == "from one by two"
    assert got["received2"] == "second one"
    assert "received3" not in got and "missing" not in got
    assert got["received_all"] == ["from one by two", "second one"]
    assert got["none_type"] == "table" and got["none_n"] == 0
    assert got["empty"] == ""
    assert got["to"] == "<b@y.test>"
    body = msg.split(b"\r\n\r\n", 1)[1].decode()
    assert got["body"] == body
    assert got["truncated"] is False
    assert got["size"] == int(p.wait_summaries(1)[-1]["size"])
    t = assert_delivered(recorder, body=msg)
    assert t.data == stuff(msg)


@pytest.mark.parametrize("max_", [None, 2 * 1024 * 1024], ids=["default", "2M"])
def test_message_body_limit(recorder, proxy, client, tmp_path, max_):
    line = b"x" * 998 + b"\r\n"
    msg = b"Subject: big\r\n\r\n" + line * 1100  # a little over 1 MB of body
    p = lua_proxy(proxy, tmp_path, """
    function on_data(tx, msg)
      local body, truncated = msg:body(%s)
      T("big", {n = #body, truncated = truncated, ok = body:sub(1, 1000) == ("x"):rep(998) .. "\\r\\n"})
    end
    """ % ("" if max_ is None else max_))
    c = client(p)
    start_txn(c)
    assert c.message(stuff(msg) + b".\r\n").code == 250
    got = report(p, "big")
    if max_ is None:
        assert got == {"n": 1024 * 1024, "truncated": True, "ok": True}, got
    else:
        assert got == {"n": len(line) * 1100, "truncated": False, "ok": True}, got
    assert recorder.wait_for_transactions(1)[0].data == stuff(msg)


def test_message_body_read_twice(recorder, proxy, client, tmp_path):
    """msg:body() is the body each time it is called, whatever came before."""
    p = lua_proxy(proxy, tmp_path, """
    function on_data(tx, msg)
      local r = {}
      r.head, r.htrunc = msg:body(10)
      r.all, r.atrunc = msg:body()
      r.again = msg:body()
      r.zero, r.ztrunc = msg:body(0)
      T("twice", r)
    end
    """)
    c = client(p)
    start_txn(c)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    body = BODY.split(b"\r\n\r\n", 1)[1].decode()
    got = report(p, "twice")
    assert got["head"] == body[:10] and got["htrunc"] is True, got
    assert got["all"] == body and got["atrunc"] is False, got
    assert got["again"] == body, got
    assert got["zero"] == "" and got["ztrunc"] is True, got


@pytest.mark.parametrize("how", ["quit", "vanish", "rejected-at-connect"])
def test_on_disconnect_called(recorder, proxy, client, tmp_path, how):
    script = """
    function on_connect(conn)
      conn.notes.seen = "yes"
      if %s then return smtp.disconnect("bye") end
    end
    function on_disconnect(conn)
      T("disconnect", {id = conn.id, seen = conn.notes.seen})
      return smtp.reject("ignored")   -- the return value of on_disconnect is ignored
    end
    """ % ("true" if how == "rejected-at-connect" else "false")
    p = lua_proxy(proxy, tmp_path, script)
    c = client(p)
    if how == "rejected-at-connect":
        assert c.banner().first == f"421 4.7.0 {HOST} bye"
    else:
        start_txn(c)
        if how == "quit":
            c.cmd("QUIT").expect(221)
        else:
            c.close()
    got = report(p, "disconnect")
    assert got["seen"] == "yes" and got["id"], got
    time.sleep(0.2)
    assert len(reports(p, "disconnect")) == 1
    assert not log_lines(p, "filter policy failed"), p.log()
    assert_nothing_delivered(recorder)


# ---- verdicts ----------------------------------------------------------------------


VERDICTS = ["accept", "reject", "tempfail", "drop", "disconnect"]


@pytest.mark.parametrize("verdict", VERDICTS)
@pytest.mark.parametrize("hook", list(HOOK_STAGE))
def test_verdict_from_each_hook(recorder, proxy, client, tmp_path, hook, verdict):
    stage = HOOK_STAGE[hook]
    p = lua_proxy(proxy, tmp_path, hook_script(hook, f"return smtp.{verdict}()"))
    c = client(p)
    replies, closed = run_session(c)
    got = reply_at(replies, stage)
    assert got is not None, replies

    if verdict == "accept":
        assert replies["data"].code == 250, replies
        assert_delivered(recorder)
        assert p.wait_summaries(1)[-1]["status"] == "sent"
        return
    if verdict == "drop":
        assert replies["mail"].code == 250, replies
        assert [r.code for r in replies["rcpt"]] == [250]
        assert replies["data"].code == 250, replies
        assert replies["quit"].code == 221
        assert_backend_stopped_at(recorder, stage)
        s = p.wait_summaries(1)[-1]
        assert s["status"] == "dropped" and s.get("by") == "policy", s
        return
    assert got.first == default_reply(stage, verdict), replies
    order = ["banner", "helo", "mail", "rcpt", "data"]
    for later in order[order.index(STEP[stage]) + 1 :]:
        assert not replies.get(later), (later, replies)
    if verdict == "disconnect" or (verdict == "tempfail" and stage == "connect"):
        assert closed and "quit" not in replies
    else:
        assert replies["quit"].code == 221
    assert_backend_stopped_at(recorder, stage)


@pytest.mark.parametrize(
    "hook,call,want",
    [
        ("on_mail", 'smtp.reject(554, "x")', "554 5.7.1 x"),
        ("on_mail", 'smtp.reject("554 5.7.9", "x")', "554 5.7.9 x"),
        ("on_mail", 'smtp.reject("go away")', "550 5.7.1 go away"),
        ("on_mail", "smtp.reject(554)", "554 5.7.1 Rejected by policy"),
        ("on_mail", 'smtp.reject("553 5.1.8")', "553 5.1.8 Rejected by policy"),
        ("on_mail", 'smtp.reject(nil, "no code")', "550 5.7.1 no code"),
        ("on_mail", 'smtp.tempfail(452, "full")', "452 4.7.1 full"),
        ("on_mail", 'smtp.tempfail("450 4.2.0", "busy")', "450 4.2.0 busy"),
        ("on_mail", 'smtp.tempfail("later please")', "451 4.7.1 later please"),
        ("on_mail", 'smtp.disconnect("bye now")', f"421 4.7.0 {HOST} bye now"),
        ("on_rcpt", 'smtp.reject(553, "no such route")', "553 5.7.1 no such route"),
        ("on_rcpt", 'smtp.tempfail("452 4.2.2", "mailbox full")', "452 4.2.2 mailbox full"),
        ("on_data", 'smtp.reject("554 5.7.0", "spam")', "554 5.7.0 spam"),
        ("on_data", 'smtp.reject("content refused")', "550 5.7.1 content refused"),
        ("on_helo", 'smtp.reject(550, "not with that name")', "550 5.7.1 not with that name"),
        ("on_connect", 'smtp.reject(554, "not you")', "554 5.7.1 not you"),
    ],
)
def test_verdict_codes_and_texts(recorder, proxy, client, tmp_path, hook, call, want):
    stage = HOOK_STAGE[hook]
    p = lua_proxy(proxy, tmp_path, hook_script(hook, f"return {call}"))
    replies, _ = run_session(client(p))
    assert reply_at(replies, stage).first == want, replies
    assert_backend_stopped_at(recorder, stage)


@pytest.mark.parametrize(
    "call,why",
    [
        ("smtp.reject(450)", "5xx"),
        ('smtp.reject("451 4.7.1", "x")', "5xx"),
        ("smtp.reject(250)", "5xx"),
        ('smtp.reject("550 4.7.1", "mismatched enhanced class")', None),
        ("smtp.tempfail(550)", "4xx"),
        ('smtp.tempfail("554 5.7.1", "x")', "4xx"),
        ("smtp.tempfail(250)", "4xx"),
        ("smtp.reject(5500)", None),
        ("smtp.reject(-550)", None),
    ],
)
def test_wrong_code_is_a_script_error(recorder, proxy, client, tmp_path, call, why):
    p = lua_proxy(proxy, tmp_path, hook_script("on_mail", f"return {call}"))
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    assert r.first == FILTER_FAILURE, r
    assert "lines" not in r.text
    c.cmd("NOOP").expect(250)
    c.cmd("QUIT").expect(221)
    assert "MAIL" not in recorder.verbs()
    assert p.wait_log(r"filter policy failed at mail"), p.log()
    if why is not None:
        # Raised at the call (line 2): the reason and where are logged.
        assert re.search(rf"needs an? {why}|{why} code", p.log()), p.log()
        assert re.search(r"policy\.lua:2\b", p.log()), p.log()


@pytest.mark.parametrize("text", [r"two\r\n250 lines", r"bare\nLF", r"bare\rCR", r"bell\a", r"esc\027[31m"])
def test_reply_text_with_control_characters(recorder, proxy, client, tmp_path, text):
    p = lua_proxy(proxy, tmp_path, hook_script("on_mail", f'return smtp.reject(550, "{text}")'))
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    # Refused as a script error, or sent with the control characters gone:
    # never a second reply line or raw control bytes on the wire.
    assert r.code in (451, 550), r
    assert len(r.lines) == 1 and not re.search(rb"[\x00-\x1f\x7f]", r.raw[:-2]), r
    c.cmd("NOOP").expect(250)
    c.cmd("QUIT").expect(221)
    assert "MAIL" not in recorder.verbs()


@pytest.mark.parametrize(
    "ret,kind",
    [
        ("return nil", "nil"),
        ("return 42", "number"),
        ('return "x"', "string"),
        ("return {}", "table"),
        ("return true", "boolean"),
        ("return smtp.reject(), smtp.reject()", None),
        ("return smtp.accept(), nil", None),
        ("return nil, smtp.reject()", None),
        ("return print", "function"),
    ],
)
def test_bad_return_value_is_a_script_error(recorder, proxy, client, tmp_path, ret, kind):
    p = lua_proxy(proxy, tmp_path, hook_script("on_mail", ret))
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<a@x.test>")
    assert r.first == FILTER_FAILURE, r
    # The session goes on, in sync, and the backend never saw the MAIL.
    c.cmd("NOOP").expect(250)
    assert c.cmd("MAIL FROM:<b@x.test>").first == FILTER_FAILURE
    c.cmd("QUIT").expect(221)
    assert "MAIL" not in recorder.verbs()
    lines = log_lines(p, "bad return value")
    assert lines, p.log()
    assert any("on_mail" in ln and "policy" in ln for ln in lines), lines
    if kind is not None:
        assert any(f"({kind})" in ln for ln in lines), lines
    assert re.search(r"policy\.lua", p.log()), p.log()


@pytest.mark.parametrize("hook", list(HOOK_STAGE))
def test_bad_return_at_each_hook(recorder, proxy, client, tmp_path, hook):
    stage = HOOK_STAGE[hook]
    p = lua_proxy(proxy, tmp_path, hook_script(hook, "return 42"))
    replies, _ = run_session(client(p))
    assert reply_at(replies, stage).first == failure_for(stage), replies
    assert_backend_stopped_at(recorder, stage)
    assert any(hook in ln for ln in log_lines(p, "bad return value")), p.log()


def test_no_return_is_continue(recorder, proxy, client, tmp_path):
    script = "".join(hook_script(h, "local x = 1") for h in HOOK_STAGE)
    script += "function on_disconnect(conn) end\n"
    p = lua_proxy(proxy, tmp_path, script)
    replies, _ = run_session(client(p))
    assert replies["data"].code == 250
    assert_delivered(recorder)
    assert not log_lines(p, "filter policy failed")


@pytest.mark.parametrize(
    "body,line,text",
    [
        ("local t = nil\nreturn t.field", 3, "attempt to index a nil value"),
        ('error("boom")', 2, "boom"),
        ("local n = 1 + {}", 2, "attempt to perform arithmetic"),
        ("helper()", 2, "attempt to call a nil value"),
        ("error({code = 1})", None, None),
        ("error()", None, None),
        ('error(setmetatable({}, {__tostring = function() error("nested") end}))', None, None),
        ("local function f() return coroutine.wrap(f)() end\nf()", None, None),
        ("local function f() return 1 + f() end\nf()", None, None),  # stack overflow or memory
    ],
    ids=["index", "error", "arith", "call", "table-error", "nil-error", "evil-tostring", "wrap-recursion",
         "recursion"],
)
def test_runtime_error(recorder, proxy, client, tmp_path, body, line, text):
    script = "function on_mail(tx, sender)\n" + textwrap.indent(body, "  ") + "\nend\n"
    p = lua_proxy(proxy, tmp_path, script)
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == FILTER_FAILURE
    c.cmd("RSET").expect(250)
    c.cmd("QUIT").expect(221)
    assert "MAIL" not in recorder.verbs()
    assert p.wait_log(r"filter policy failed at mail"), p.log()
    if line is not None:
        assert re.search(rf"policy\.lua:{line}: .*{re.escape(text)}", p.log()), p.log()
        # The traceback (or the reason) names the hook.
        assert "on_mail" in p.log()
    # The next session is served normally.
    replies, _ = run_session(client(p), sender="a@x.test")
    assert replies["mail"].first == FILTER_FAILURE


def test_error_deep_in_the_stack_has_a_traceback(recorder, proxy, client, tmp_path):
    script = """
    local function inner(x)
      return x.missing.field
    end
    local function outer(x)
      return inner(x) + 1
    end
    function on_rcpt(tx, rcpt)
      outer({})
    end
    """
    p = lua_proxy(proxy, tmp_path, script)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert c.cmd("RCPT TO:<b@y.test>").first == FILTER_FAILURE
    log = p.log()
    assert re.search(r"policy\.lua:2: .*attempt to index a nil value", log), log
    # Every frame of the traceback: inner (2), outer (5), on_rcpt (8).
    for ln in (5, 8):
        assert re.search(rf"policy\.lua:{ln}\b", log), log


@pytest.mark.parametrize("on_error,want", [("reject", FILTER_FAILURE_REJECT), ("accept", None),
                                           ("tempfail", FILTER_FAILURE)])
def test_script_error_follows_on_error(recorder, proxy, client, tmp_path, on_error, want):
    p = lua_proxy(proxy, tmp_path, hook_script("on_rcpt", 'error("broken")'), keys={"on_error": on_error})
    replies, _ = run_session(client(p))
    if want is None:
        assert replies["data"].code == 250
        assert_delivered(recorder)
    else:
        assert replies["rcpt"][0].first == want
        assert_backend_stopped_at(recorder, "rcpt")


def test_pcall_catches_script_errors_but_not_verdicts(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender)
      local ok, err = pcall(error, "caught")
      local ok2, err2 = pcall(smtp.reject, 450)
      T("pcall", {ok = ok, err = tostring(err), ok2 = ok2, err2 = tostring(err2)})
      return smtp.reject(550, "after pcall")
    end
    """)
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == "550 5.7.1 after pcall"
    got = report(p, "pcall")
    assert got["ok"] is False and "caught" in got["err"]
    assert got["ok2"] is False and "5xx" in got["err2"], got


def test_two_sections_first_verdict_wins(recorder, proxy, client, tmp_path):
    one = lua_section(tmp_path, """
    function on_mail(tx, s) log.info("one asked") if s.user == "one" then return smtp.reject(550, "said by one") end end
    """, name="one")
    two = lua_section(tmp_path, """
    function on_mail(tx, s) log.info("two asked") return smtp.reject(550, "said by two") end
    """, name="two")
    p = proxy(sections=[one, two])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<one@x.test>").first == "550 5.7.1 said by one"
    assert c.cmd("MAIL FROM:<other@x.test>").first == "550 5.7.1 said by two"
    assert len(log_lines(p, "[one]", "one asked")) == 2
    assert len(log_lines(p, "[two]", "two asked")) == 1


# ---- transaction helpers ------------------------------------------------------------


def test_add_header_at_every_stage(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender) tx:add_header("X-Mail", "from " .. sender.addr) end
    function on_rcpt(tx, rcpt) tx:add_header("X-Rcpt", rcpt.addr) end
    function on_data(tx, msg)
      tx:add_header("X-Data", "size " .. msg.size)
      tx:add_header("X-Subject-Was", msg:header("Subject"))
    end
    """)
    c = client(p)
    c.greet()
    c.envelope("a@x.test", "b@y.test", "c@y.test")
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    t = recorder.wait_for_transactions(1)[0]
    size = int(p.wait_summaries(1)[-1]["size"])
    added = (b"X-Mail: from a@x.test\r\nX-Rcpt: b@y.test\r\nX-Rcpt: c@y.test\r\n"
             b"X-Data: size %d\r\nX-Subject-Was: lua test\r\n" % size)
    assert t.data == added + stuff(BODY), t.data[:300]
    # Not carried into the next transaction of the session.
    c.envelope("z@x.test", "d@y.test")
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    t2 = recorder.wait_for_transactions(2)[1]
    size2 = int(p.wait_summaries(2)[-1]["size"])
    assert t2.data == (b"X-Mail: from z@x.test\r\nX-Rcpt: d@y.test\r\n"
                       b"X-Data: size %d\r\nX-Subject-Was: lua test\r\n" % size2) + stuff(BODY), t2.data[:300]


def test_add_header_refuses_injection(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, r"""
    function on_data(tx, msg)
      local r = {}
      r.crlf = {pcall(tx.add_header, tx, "X-Bad", "a\r\nInjected: 1")}
      r.lf = {pcall(tx.add_header, tx, "X-Bad", "a\nInjected: 2")}
      r.colon = {pcall(tx.add_header, tx, "X-Bad: Injected", "3")}
      r.nul = {pcall(tx.add_header, tx, "X-Bad", "a\0Injected: 4")}
      for k, v in pairs(r) do r[k] = v[1] end
      T("inject", r)
      tx:add_header("X-Good", "ok")
    end
    """)
    c = client(p)
    start_txn(c)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    t = recorder.wait_for_transactions(1)[0]
    assert not re.search(rb"(?m)^Injected", t.data), t.data[:300]
    assert b"X-Bad" not in t.data
    assert t.data.startswith(b"X-Good: ok\r\n"), t.data[:300]
    report(p, "inject")  # raised or returned: either way nothing went out


def test_score_and_symbols(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender)
      T("mail", {score = tx.score, symbols = tx.symbols})
      tx:add_score(1.5, "SENDER_SYM")
    end
    function on_rcpt(tx, rcpt)
      tx:add_score(2, "RCPT_SYM")
      T("rcpt", {score = tx.score})
    end
    function on_data(tx, msg)
      tx:add_score(-0.25, "DATA_SYM")
      T("data", {score = tx.score, symbols = tx.symbols})
      if tx.score > 3 then return smtp.reject(554, "score " .. tx.score) end
    end
    """)
    c = client(p)
    start_txn(c)
    assert c.message(stuff(BODY) + b".\r\n").first == "554 5.7.1 score 3.25"
    assert report(p, "rcpt") == {"score": 3.5}
    got = report(p, "data")
    assert got == {"score": 3.25, "symbols": {"SENDER_SYM": 1.5, "RCPT_SYM": 2, "DATA_SYM": -0.25}}, got
    # A new transaction starts from 0.
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert wait_reports(p, "mail", 2)[1] == {"score": 0, "symbols": []}
    assert_nothing_delivered(recorder)


def test_notes_persist_across_hooks(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    function on_connect(conn) conn.notes.hooks = {"connect"} conn.notes.n = 0 end
    function on_helo(conn, name) table.insert(conn.notes.hooks, "helo") end
    function on_mail(tx, s)
      table.insert(tx.conn.notes.hooks, "mail")
      tx.conn.notes.n = tx.conn.notes.n + 1
      T("mail_tx_notes", {keys = next(tx.notes) or "none", n = tx.conn.notes.n})
      tx.notes.sender = s.addr
      tx.notes.list = {s.user}
    end
    function on_rcpt(tx, r)
      table.insert(tx.conn.notes.hooks, "rcpt")
      table.insert(tx.notes.list, r.user)
    end
    function on_data(tx, msg)
      T("data", {sender = tx.notes.sender, list = tx.notes.list, hooks = tx.conn.notes.hooks})
    end
    function on_disconnect(conn) T("disc", {hooks = conn.notes.hooks, n = conn.notes.n}) end
    """)
    c = client(p)
    start_txn(c, sender="first@x.test", rcpt="r1@y.test")
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    start_txn(c, sender="second@x.test", rcpt="r2@y.test", greet=False)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    c.cmd("QUIT").expect(221)
    data = wait_reports(p, "data", 2)
    assert data[0] == {"sender": "first@x.test", "list": ["first", "r1"],
                       "hooks": ["connect", "helo", "mail", "rcpt"]}, data
    # tx.notes is new for each transaction; conn.notes is kept.
    assert data[1]["sender"] == "second@x.test" and data[1]["list"] == ["second", "r2"], data
    assert data[1]["hooks"] == ["connect", "helo", "mail", "rcpt", "mail", "rcpt"]
    assert wait_reports(p, "mail_tx_notes", 2) == [{"keys": "none", "n": 1}, {"keys": "none", "n": 2}]
    assert report(p, "disc")["n"] == 2
    # A new session has new notes.
    c2 = client(p)
    start_txn(c2, sender="third@x.test")
    c2.cmd("QUIT").expect(221)
    assert wait_reports(p, "mail_tx_notes", 3)[2] == {"keys": "none", "n": 1}


STALE_TX = """
function on_mail(tx, sender)
  if saved ~= nil and sender.user == "probe" then
    local r = {}
    for name, f in pairs({
      sender = function() return saved.sender end,
      id = function() return saved.id end,
      notes = function() return saved.notes end,
      add_header = function() saved:add_header("X-Stale", "yes") end,
      add_score = function() saved:add_score(1, "STALE") end,
    }) do
      local ok, err = pcall(f)
      r[name] = {ok = ok, err = tostring(err)}
    end
    T("stale", r)
  elseif saved ~= nil and sender.user == "use" then
    saved:add_header("X-Stale", "yes")
  end
  saved = tx
end
"""


def test_stale_transaction_raises(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, STALE_TX)
    c = client(p)
    start_txn(c, sender="first@x.test")
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    c.cmd("MAIL FROM:<probe@x.test>").expect(250)
    got = report(p, "stale")
    for name, r in got.items():
        assert r["ok"] is False and "transaction is over" in r["err"], (name, got)
    # Unprotected use: a script error, the on_error reply.
    c.cmd("RSET").expect(250)
    assert c.cmd("MAIL FROM:<use@x.test>").first == FILTER_FAILURE
    assert "transaction is over" in p.log()
    c.cmd("QUIT").expect(221)
    # A tx of an ended session is just as dead in another session.
    c2 = client(p)
    c2.greet()
    c2.cmd("MAIL FROM:<probe@x.test>").expect(250)
    got = wait_reports(p, "stale", 2)[1]
    assert all(r["ok"] is False and "transaction is over" in r["err"] for r in got.values()), got
    c2.cmd("QUIT").expect(221)
    assert_delivered(recorder)
    assert b"X-Stale" not in recorder.messages()[0].data


def test_stale_transaction_after_rset_and_in_disconnect(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, s) saved = tx end
    function on_helo(conn, name)
      if saved then T("helo", {pcall(function() return saved.sender.addr end)}) end
    end
    function on_disconnect(conn)
      T("disc", {pcall(function() return saved.id end)})
      saved:add_header("X", "y")  -- an error here is only logged
    end
    """)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RSET").expect(250)
    c.cmd("EHLO again.test").expect(250)
    c.cmd("QUIT").expect(221)
    h = report(p, "helo")
    assert h[0] is False and "transaction is over" in h[1], h
    d = report(p, "disc")
    assert d[0] is False and "transaction is over" in d[1], d
    time.sleep(0.1)
    assert p.alive()


# ---- kv ------------------------------------------------------------------------------


KV_SCRIPT = """
function on_mail(tx, sender)
  local op, r = sender.user, {}
  if op == "basic" then
    kv.set("s", "str"); kv.set("n", 42); kv.set("b", false); kv.set("t", true); kv.set("f", 1.5)
    r.s, r.n, r.b, r.t, r.f = kv.get("s"), kv.get("n"), kv.get("b"), kv.get("t"), kv.get("f")
    r.missing_is_nil = kv.get("missing") == nil
    r.add1 = kv.add("a", "first"); r.add2 = kv.add("a", "second"); r.a = kv.get("a")
    r.i1 = kv.incr("c"); r.i2 = kv.incr("c"); r.i3 = kv.incr("c", 10); r.i4 = kv.incr("c", -2)
    r.c = kv.get("c")
    kv.del("s"); r.s_deleted = kv.get("s") == nil
    kv.del("never-set")
    kv.set("o", "x"); kv.set("o", "y"); r.o = kv.get("o")
    r.table_value_ok = pcall(kv.set, "bad", {})
    r.function_value_ok = pcall(kv.set, "bad", print)
    r.bad = kv.get("bad")
  elseif op == "ttlset" then
    kv.set("t1", "gone soon", 0.3); kv.add("t2", "also", 0.3); kv.incr("t3", 5, 0.3)
    kv.set("t4", "stays"); kv.set("t5", "long", 60)
    r.t1, r.t2, r.t3 = kv.get("t1"), kv.get("t2"), kv.get("t3")
  elseif op == "ttlget" then
    r.t1_gone, r.t2_gone, r.t3_gone = kv.get("t1") == nil, kv.get("t2") == nil, kv.get("t3") == nil
    r.t4, r.t5 = kv.get("t4"), kv.get("t5")
    r.readd = kv.add("t2", "again"); r.t2 = kv.get("t2")
    r.reincr = kv.incr("t3")
  elseif op == "get" then
    r.v = kv.get(tx.conn.helo)
  end
  T("kv_" .. op, r)
end
"""


def test_kv_basic(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, KV_SCRIPT)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<basic@x.test>").expect(250)
    got = report(p, "kv_basic")
    assert got == {
        "s": "str", "n": 42, "b": False, "t": True, "f": 1.5, "missing_is_nil": True,
        "add1": True, "add2": False, "a": "first",
        "i1": 1, "i2": 2, "i3": 12, "i4": 10, "c": 10,
        "s_deleted": True, "o": "y",
        "table_value_ok": False, "function_value_ok": False,
    }, got


def test_kv_ttl(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, KV_SCRIPT)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<ttlset@x.test>").expect(250)
    assert report(p, "kv_ttlset") == {"t1": "gone soon", "t2": "also", "t3": 5}
    c.cmd("RSET").expect(250)
    time.sleep(0.6)
    c.cmd("MAIL FROM:<ttlget@x.test>").expect(250)
    got = report(p, "kv_ttlget")
    assert got == {"t1_gone": True, "t2_gone": True, "t3_gone": True, "t4": "stays", "t5": "long",
                   "readd": True, "t2": "again", "reincr": 1}, got


def test_kv_shared_by_sections_and_sessions(recorder, proxy, client, tmp_path):
    writer = lua_section(tmp_path, """
    function on_helo(conn, name) kv.set(name, "set by writer for " .. name) end
    """, name="writer")
    reader = lua_section(tmp_path, KV_SCRIPT, name="reader")
    p = proxy(sections=[writer, reader])
    c = client(p)
    c.greet("k1.test")
    c.cmd("QUIT").expect(221)
    c2 = client(p)
    c2.greet("k1.test")
    c2.cmd("MAIL FROM:<get@x.test>").expect(250)
    assert report(p, "kv_get", section="reader") == {"v": "set by writer for k1.test"}


# ---- smtp.net, smtp.now, config ------------------------------------------------------


def test_smtp_net_and_now(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    function on_mail(tx, sender)
      local t1 = smtp.now()
      local t2 = smtp.now()
      local ok, bad = pcall(smtp.net, "not an address", 24, 64)
      T("net", {
        a = smtp.net("192.0.2.77", 24, 64), b = smtp.net("2001:db8::1", 24, 64),
        c = smtp.net("192.0.2.77", 32, 128), d = smtp.net("2001:db8:1:2:3:4:5:6", 16, 48),
        e = smtp.net("10.1.2.3", 8, 64), f = smtp.net("192.0.2.77", 0, 0),
        client = smtp.net(tx.conn.client_ip, 16, 64),
        bad_is_string = ok and type(bad) == "string",
        t1 = t1, t2 = t2, now_type = math.type(t1), ordered = t2 >= t1,
      })
    end
    """)
    c = client(p)
    c.greet()
    before = time.time()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    after = time.time()
    got = report(p, "net")
    assert got["a"] == "192.0.2.0/24", got
    assert got["b"] == "2001:db8::/64", got
    assert got["c"] == "192.0.2.77/32", got
    assert got["d"] == "2001:db8:1::/48", got
    assert got["e"] == "10.0.0.0/8", got
    assert got["f"] == "0.0.0.0/0", got
    assert got["client"] == "127.0.0.0/16", got
    assert got["bad_is_string"] is False, got
    assert got["now_type"] == "float" and got["ordered"] is True
    assert before - 1 <= got["t1"] <= after + 1, (before, got["t1"], after)


def test_config_table(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, """
    local at_load = config.greeting
    function on_mail(tx, s)
      T("config", {at_load = at_load, greeting = config.greeting, list = config.sender_domains,
                   script_type = type(config.script), memory_type = type(config.memory_limit)})
    end
    """, keys={"greeting": "hello there", "sender_domains": "/etc/portcullis/bad-senders"})
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    got = report(p, "config")
    assert got["at_load"] == "hello there" and got["greeting"] == "hello there", got
    assert got["list"] == "/etc/portcullis/bad-senders"


# ---- logging ------------------------------------------------------------------------


def test_log_functions_and_print(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, r"""
    log.info("loaded at top level")
    function on_mail(tx, sender)
      log.info("info %s %d", "line", 7)
      log.warn("warn %s", "line")
      log.err("err %s", "line")
      print("printed", 1, true, nil)
      log.info("forged\nFORGED status=sent line")
      tx.conn:log("from conn %s", tx.id)
    end
    """)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("QUIT").expect(221)
    assert p.wait_log(r"from conn")
    log = p.log()
    assert re.search(r"info: .*\[policy\] loaded at top level", log), log
    assert re.search(r"info: .*id=\S+ .*\[policy\] info line 7", log), log
    assert re.search(r"warning: .*id=\S+ .*\[policy\] warn line", log), log
    assert re.search(r"error: .*id=\S+ .*\[policy\] err line", log), log
    assert re.search(r"info: .*\[policy\] printed.*1.*true.*nil", log), log
    assert re.search(r"\[policy\] from conn \S+\.1", log), log
    # A script cannot start a log line of its own.
    assert not re.search(r"(?m)^FORGED", log), log
    assert re.search(r"\[policy\] forged.*FORGED status=sent line", log), log


def test_log_bad_format_is_a_script_error(recorder, proxy, client, tmp_path):
    p = lua_proxy(proxy, tmp_path, hook_script("on_mail", 'log.info("%d", "not a number")'))
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@x.test>").first == FILTER_FAILURE
    c.cmd("NOOP").expect(250)


# ---- observe ----------------------------------------------------------------------------


@pytest.mark.parametrize("hook,verdict", [("on_mail", "reject"), ("on_rcpt", "tempfail"), ("on_data", "drop"),
                                          ("on_connect", "disconnect")])
def test_observe_logs_but_does_not_enforce(recorder, proxy, client, tmp_path, hook, verdict):
    p = lua_proxy(proxy, tmp_path, hook_script(hook, f'return smtp.{verdict}()'), keys={"observe": "yes"})
    replies, _ = run_session(client(p))
    assert replies["data"].code == 250, replies
    assert_delivered(recorder)
    assert p.wait_log(rf"observe: policy would {verdict} at {HOOK_STAGE[hook]}"), p.log()
    assert p.wait_summaries(1)[-1]["status"] == "sent"


def test_failures_warned_once_a_minute(recorder, proxy, client, tmp_path):
    """A filter failing on every message (an outage) is warned about once,
    then counted: the log is not flooded; each failure still gets its reply."""
    p = lua_proxy(proxy, tmp_path, hook_script("on_mail", "error('boom')"))
    for _ in range(3):
        c = client(p)
        c.greet()
        assert c.cmd("MAIL FROM:<a@x.test>").first == FILTER_FAILURE
        c.cmd("QUIT").expect(221)
    assert p.wait_log(r"filter policy failed at mail"), p.log()
    warned = [ln for ln in p.log().splitlines() if "filter policy failed at mail" in ln]
    assert len(warned) == 1, warned
    assert "MAIL" not in recorder.verbs()


def test_summary_line_has_the_trail(recorder, proxy, client, tmp_path):
    """A failure that on_error = accept let through still shows on the
    message's summary line (trail=), with the message delivered; a message no
    filter decided on has no trail."""
    p = lua_proxy(proxy, tmp_path, hook_script("on_rcpt", 'if rcpt.addr == "b@y.test" then error("broken") end'),
                  keys={"on_error": "accept"})
    c = client(p)
    c.greet()
    for rcpt in ("b@y.test", "c@y.test"):
        c.cmd("MAIL FROM:<a@x.test>").expect(250)
        c.cmd(f"RCPT TO:<{rcpt}>").expect(250)
        assert c.message(stuff(b"Subject: t\r\n\r\nhi\r\n") + b".\r\n").code == 250
    c.cmd("QUIT").expect(221)
    assert p.wait_log(r"to=<c@y\.test>.*status=sent"), p.log()
    lines = {s["to"]: s for s in p.summaries()}
    assert lines["<b@y.test>"]["status"] == "sent"
    assert lines["<b@y.test>"]["trail"] == "policy:error@rcpt"
    assert "trail" not in lines["<c@y.test>"]
