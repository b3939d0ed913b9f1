"""The ABI 2 host services (include/portcullis/plugin.h): the new fields and
the address split, the lifetime of host strings (the per-call arena), the
shared score store seen from C and Lua, and the message and envelope
changes, through the test plugins fields.c and edits.c and Lua scripts.

What the changes do to the message a backend receives is checked through a
real Postfix in test_msg_changes.py. Run this file against the ASan build (make asan, or
PORTCULLIS=build/asan/portcullis) to catch a host string freed too early:
the proxy fixture fails a test whose daemon reported a sanitizer error.
"""

import re

import kit.proxy as kp
from kit.dialogue import start_txn
from kit.messages import stuff
from test_lua import lua_section, report

BOUND = 10.0
FIELDS = kp.test_plugin("fields")
EDITS = kp.test_plugin("edits")
BODY = (
    b"From: <a@x.test>\r\n"
    b"Subject: original\r\n"
    b"Received: one\r\n"
    b"Received: two\r\n"
    b"\r\n"
    b"Hello.\r\n"
    b".dot line\r\n"
)


def fields_lines(p, stage, n=1):
    got = p.wait_log(rf"fields {stage}: ([^\n]*)", count=n, timeout=BOUND)
    assert len(got) >= n, p.log()
    return [dict(re.findall(r"(\w+)=(\[[^\]]*\]|\S*)", m.group(1))) for m in got]


def test_fields_and_split(recorder, proxy, client):
    p = proxy(sections=[("plugin f", {"path": FIELDS})])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<Joe.Bloggs@Example.COM>").expect(250)
    c.cmd('RCPT TO:<"a@b"@X.Org>').expect(250)
    c.cmd("RCPT TO:<postmaster>").expect(250)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    rcpt = fields_lines(p, "rcpt", 2)
    assert rcpt[0]["sender_local"] == "Joe.Bloggs" and rcpt[0]["sender_domain"] == "example.com"
    assert rcpt[0]["rcpt_local"] == '"a@b"' and rcpt[0]["rcpt_domain"] == "x.org"
    assert rcpt[1]["rcpt_local"] == "postmaster" and rcpt[1]["rcpt_domain"] == "-"
    data = fields_lines(p, "data")[0]
    assert data["rcpts"] == '["a@b"|x.org,postmaster|-]'
    assert data["rcpt_local"] == "-"  # only at the RCPT stage
    # No rDNS in the tests, no TLS, no trusted_networks: NULL.
    assert data["client_name"] == "-" and data["tls_cipher"] == "-" and data["trusted"] == "-"
    # The null sender: "" local part, no domain.
    c.cmd("MAIL FROM:<>").expect(250)
    assert fields_lines(p, "mail", 2)[1]["sender_local"] == ""
    assert fields_lines(p, "mail", 2)[1]["sender_domain"] == "-"


def test_host_strings_outlive_later_calls(recorder, proxy, client):
    """plugin.h LIFETIMES: strings the host handed out stay good until the
    hook returns, however many other strings it builds meanwhile."""
    p = proxy(sections=[("plugin f", {"path": FIELDS})])
    c = client(p)
    c.greet("twice.test")
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<Some.One@Y.TEST>").expect(250)  # (we take no RCPT parameters)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    assert p.wait_log(r'fields: stable helo "twice\.test"'), p.log()
    assert p.wait_log(r'fields: stable rcpt "Some\.One" "y\.test" ""'), p.log()
    assert p.wait_log(r'fields: stable rcpt "b" "y\.test" ""'), p.log()
    c.cmd("QUIT").expect(221)
    p.stop()
    assert "UNSTABLE" not in p.log(), p.log()
    assert not p.sanitizer_reports(), p.log()


def test_scores_session_carry_into_each_transaction(recorder, proxy, client):
    p = proxy(sections=[("plugin f", {"path": FIELDS, "score": [
        "connect:NO_PTR:1.5:no PTR record", "rcpt:RBL:2", "data:BAD_SUBJ:-0.25", "mail:bad symbol:1"]})])
    c = client(p)
    start_txn(c)
    c.cmd("RCPT TO:<c@y.test>").expect(250)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    data = fields_lines(p, "data")[0]
    assert data["score"] == "5.25", data
    assert data["symbols"] == "[NO_PTR:1.5:no PTR record,RBL:4:-,BAD_SUBJ:-0.25:-]", data
    assert p.wait_log(r"fields: add_score bad symbol refused")
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    mail = fields_lines(p, "mail", 2)[1]
    assert mail["score"] == "1.5" and mail["symbols"] == "[NO_PTR:1.5:no PTR record]", mail


def test_lua_and_c_share_scores_and_split(recorder, proxy, client, tmp_path):
    lua = lua_section(tmp_path, """
    function on_connect(conn)
      T("conn", {rdns = conn.rdns, tls_cipher = conn.tls_cipher, trusted = conn.trusted})
      conn:add_score(1, "LUA_CONNECT")
    end
    function on_rcpt(tx, rcpt)
      T("rcpt", A(rcpt))
    end
    function on_data(tx, msg)
      tx:add_score(2, "LUA_DATA", "from lua")
      T("data", {score = tx.score, symbols = tx.symbols, sender = A(tx.sender),
                 rcpts = {A(tx.recipients[1])}})
      local ok, err = pcall(function() tx:add_score(1, "lower case") end)
      T("bad", {ok = ok, err = tostring(err):match("refused") ~= nil})
    end
    """)
    p = proxy(sections=[("plugin f1", {"path": FIELDS, "score": "mail:C_MAIL:0.5"}), lua,
                        ("plugin f2", {"path": FIELDS})])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<Joe@Example.COM> BODY=8BITMIME").expect(250)
    c.cmd('RCPT TO:<"x@y"@Dom.Test>').expect(250)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    assert report(p, "conn") == {"trusted": False}
    r = report(p, "rcpt")
    assert r["user"] == '"x@y"' and r["domain"] == "dom.test" and r["addr"] == '"x@y"@dom.test', r
    d = report(p, "data")
    assert d["score"] == 3.5, d
    assert d["symbols"] == {"LUA_CONNECT": 1, "C_MAIL": 0.5, "LUA_DATA": 2}, d
    assert d["sender"]["addr"] == "Joe@example.com" and d["sender"]["params"] == {"BODY": "8BITMIME"}
    assert d["rcpts"][0]["domain"] == "dom.test"
    assert report(p, "bad") == {"ok": False, "err": True}
    # The C plugin after the script sees the script's scores in the same store.
    lines = p.wait_log(r"\[f2\] fields data: [^\n]*", timeout=BOUND)
    assert "symbols=[LUA_CONNECT:1:-,C_MAIL:0.5:-,LUA_DATA:2:from lua]" in lines[0].group(0), p.log()


def _edits(**keys):
    return ("plugin e", {"path": EDITS, **keys})


def test_edits_host_answers(recorder, proxy, client, tmp_path):
    body = tmp_path / "body.txt"
    body.write_bytes(b"from a file\n.dotted\n" * 100)
    p = proxy(sections=[_edits(
        change_header=["Subject:0:changed", "Received:5:no such"],
        delete_header="Received:1",
        insert_header="1:X-Inserted:yes",
        add_header="X-Added: 1",
        remove_header="From",
        add_rcpt=["new@example.com NOTIFY=NEVER", "bad<@x"],
        delete_rcpt=["b@Y.TEST", "nobody@y.test"],
        change_sender="<> ",
        replace_body=["line one\\n.two", "bare\\rcr"],
        replace_body_file=str(body),
    )])
    c = client(p)
    start_txn(c)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    want = {
        "change_header Subject:0:changed": 0, "change_header Received:5:no such": -1,
        "delete_header Received:1": 0, "insert_header 1:X-Inserted:yes": 0,
        "add_header X-Added: 1": 0, "remove_header From": 0,
        "add_rcpt new@example.com NOTIFY=NEVER": 0, "add_rcpt bad<@x": -1,
        "delete_rcpt b@Y.TEST": 0, "delete_rcpt nobody@y.test": -1,
        "replace_body line one\\n.two": 0, "replace_body bare\\rcr": -1,
        f"replace_body_file {body}": 0,
    }
    for what, r in want.items():
        assert p.wait_log(re.escape(f"edits: {what} -> {r}")), (what, p.log())
    assert p.wait_log(r"edits: change_sender <> -> 0")
    # add_header and remove_header reach the backend as they always did.
    t = recorder.wait_for_transactions(1, timeout=BOUND)[-1]
    assert t.data.startswith(b"X-Added: 1\r\n"), t.data
    assert b"From: <a@x.test>" not in t.data


def test_edits_refused_outside_data(recorder, proxy, client, tmp_path):
    lua = lua_section(tmp_path, """
    function on_rcpt(tx, rcpt)
      local ok, err = pcall(function() tx:add_rcpt("x@example.com") end)
      T("rcpt", {ok = ok, err = tostring(err):match("only in on_data") ~= nil})
    end
    function on_data(tx, msg)
      msg:change_header("Subject", 1, "new subject")
      msg:change_header("Received", 2, nil)
      msg:insert_header(1, "X-First", "1")
      msg:remove_header("From")
      tx:add_rcpt("added@example.com", "NOTIFY=NEVER")
      tx:del_rcpt("b@y.test")
      tx:change_sender("")
      msg:replace_body("new\\n.body\\n")
      local ok = pcall(function() msg:change_header("Received", 9, "x") end)
      local ok2 = pcall(function() msg:replace_body("bare\\rcr") end)
      T("data", {missing = ok, bare_cr = ok2, subject = msg:header("Subject")})
    end
    """)
    p = proxy(sections=[lua])
    c = client(p)
    start_txn(c)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    assert report(p, "rcpt") == {"ok": False, "err": True}
    # Filters read the message as received; the failures raised.
    assert report(p, "data") == {"missing": False, "bare_cr": False, "subject": "original"}
    t = recorder.wait_for_transactions(1, timeout=BOUND)[-1]
    assert b"From: <a@x.test>" not in t.data  # remove_header, as before


def test_trusted_networks_reach_c_and_lua(recorder, proxy, client, tmp_path):
    """trusted_networks (Postfix's mynetworks): PC_CLIENT_TRUSTED is "1" and
    conn.trusted true for a client inside, NULL and false outside."""
    lua = lua_section(tmp_path, """
    function on_connect(conn)
      T("conn", {trusted = conn.trusted})
    end
    """)
    for nets, c_says, lua_says in (("127.0.0.0/8, 2001:db8::/32", "1", True),
                                   ("192.0.2.0/24", "-", False)):
        p = proxy(trusted_networks=nets, sections=[("plugin f", {"path": FIELDS}), lua])
        c = client(p)
        c.greet()
        c.cmd("MAIL FROM:<a@x.test>").expect(250)
        c.cmd("RCPT TO:<b@y.test>").expect(250)
        assert c.message(stuff(BODY) + b".\r\n").code == 250
        assert fields_lines(p, "data")[0]["trusted"] == c_says
        assert report(p, "conn") == {"trusted": lua_says}
        assert bool(p.wait_log(r"connect from client=\S+ trusted", timeout=0.2)) == lua_says
        c.cmd("QUIT").expect(221)
        p.stop()


def test_summary_line_carries_the_score(recorder, proxy, client):
    p = proxy(sections=[("plugin f", {"path": FIELDS, "score": ["rcpt:RBL:2", "data:BAD_SUBJ:1.5"]})])
    c = client(p)
    start_txn(c)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    assert p.wait_log(r"score=3\.5 symbols=RBL\(2\),BAD_SUBJ\(1\.5\) status=sent"), p.log()


def test_client_name_known_from_the_connect_stage(recorder, proxy, client, dns, tmp_path):
    """With client_rdns and a filter configured, the forward-confirmed name
    is looked up before the connect hooks, whatever the backend offers (the
    recorder offers no XCLIENT): PC_CLIENT_NAME and conn.rdns see it at once."""
    dns.ptr("127.0.0.1", "client.rdns.test").a("client.rdns.test", "127.0.0.1")
    lua = lua_section(tmp_path, """
    function on_connect(conn)
      T("conn", {rdns = conn.rdns})
    end
    """)
    p = proxy(client_rdns="yes", dns_server=dns.address,
              sections=[("plugin f", {"path": FIELDS}), lua])
    c = client(p)
    c.greet()
    assert fields_lines(p, "connect")[0]["client_name"] == "client.rdns.test"
    assert report(p, "conn") == {"rdns": "client.rdns.test"}


def test_client_name_lookup_bounded_by_dns_timeout(recorder, proxy, client, dns):
    """A resolver that never answers holds the connect stage dns_timeout at
    most; the session then goes on with no name."""
    dns.never("in-addr.arpa")
    p = proxy(client_rdns="yes", dns_server=dns.address, dns_timeout="300ms",
              sections=[("plugin f", {"path": FIELDS})])
    c = client(p)
    c.greet()
    assert fields_lines(p, "connect")[0]["client_name"] == "-"
    assert p.wait_log(r"name=unknown \(temporary DNS failure\)", timeout=BOUND)
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
