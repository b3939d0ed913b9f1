"""Score thresholds at the end of DATA (issue 15): reject_score,
tempfail_score and header_score act on the total that every filter added,
after the chain let the message through; senders cannot bring their own
X-Spam-Flag, X-Spam-Score or X-Spam-Symbols."""

import re

import pytest

import kit.proxy as kp
from kit.messages import stuff
from test_lua import lua_section

FIELDS = kp.test_plugin("fields")
BOUND = 10.0

FORGED = (b"Subject: t\r\nX-Spam-Flag: NO\r\nX-Spam-Score: -100\r\nX-Spam-Symbols: TRUST_ME(-100)\r\n"
          b"X-Spam-Status: kept\r\n\r\nhello\r\n")


def scorer(tmp_path, name, points, symbol):
    """A Lua section adding points under symbol at the end of DATA."""
    return lua_section(tmp_path, f"""
    function on_data(tx, msg)
      tx:add_score({points}, "{symbol}", "from {name}")
    end
    """, name=name)


def send(p, client, body=FORGED):
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    r = c.message(stuff(body) + b".\r\n")
    c.cmd("QUIT").expect(221)
    return r


def headers(msg):
    head = msg.split(b"\r\n\r\n", 1)[0].decode()
    return [ln for ln in head.split("\r\n")]


def test_two_filters_add_up_to_reject(recorder, proxy, client, tmp_path):
    """Neither filter alone reaches reject_score; together they do. The
    backend gets no message, and the summary line says why."""
    p = proxy(sections=[scorer(tmp_path, "one", 3, "ONE"), scorer(tmp_path, "two", 3.5, "TWO")],
              reject_score="6", header_score="2")
    r = send(p, client)
    assert r.first == "550 5.7.1 Message refused as spam (score 6.5, limit 6)", r
    assert not any(t.completed for t in recorder.messages())
    (line,) = [s for s in p.summaries() if s.get("status") == "rejected"]
    assert line["by"] == "score" and line["stage"] == "data", line
    assert line["score"] == "6.5", line


def test_one_filter_below_reject_is_marked(recorder, proxy, client, tmp_path):
    p = proxy(sections=[scorer(tmp_path, "one", 3, "ONE"), scorer(tmp_path, "two", 2.5, "TWO")],
              reject_score="10", header_score="5")
    assert send(p, client).code == 250
    assert recorder.wait_for_transactions(1, timeout=BOUND)
    (t,) = recorder.messages()
    h = headers(bytes(t.data))
    assert "X-Spam-Flag: YES" in h, h
    assert "X-Spam-Score: 5.5" in h, h
    assert "X-Spam-Symbols: ONE(3),TWO(2.5)" in h, h
    # The forged ones are gone; other X-Spam-* fields are not ours to touch.
    assert "X-Spam-Flag: NO" not in h and "X-Spam-Score: -100" not in h, h
    assert not any("TRUST_ME" in x for x in h), h
    assert "X-Spam-Status: kept" in h, h


def test_below_header_score_no_mark_and_forgeries_stripped(recorder, proxy, client, tmp_path):
    p = proxy(sections=[scorer(tmp_path, "one", 1, "ONE")], header_score="5")
    assert send(p, client).code == 250
    assert recorder.wait_for_transactions(1, timeout=BOUND)
    (t,) = recorder.messages()
    h = headers(bytes(t.data))
    assert not any(x.startswith(("X-Spam-Flag", "X-Spam-Score", "X-Spam-Symbols")) for x in h), h
    assert "Subject: t" in h


def test_tempfail_score(recorder, proxy, client, tmp_path):
    p = proxy(sections=[scorer(tmp_path, "one", 8, "EIGHT")], reject_score="15",
              tempfail_score="7")
    r = send(p, client)
    assert r.first == ("451 4.7.1 Message deferred as likely spam (score 8.0, limit 7), "
                       "try again later"), r
    assert not any(t.completed for t in recorder.messages())


def test_connect_scores_count(recorder, proxy, client, tmp_path):
    """Points given at connect (the session's) are part of every
    transaction's total, with C and Lua filters adding to one store."""
    lua = lua_section(tmp_path, """
    function on_connect(conn)
      conn:add_score(4, "CONNECT_SCORE")
    end
    """, name="conn")
    p = proxy(sections=[lua, ("plugin f", {"path": FIELDS, "score": "mail:C_MAIL:2"})],
              reject_score="5.5")
    assert send(p, client).first.startswith("550 5.7.1 Message refused as spam (score 6.0"), p.log()


def test_no_thresholds_no_change(recorder, proxy, client, tmp_path):
    """Without thresholds the message goes as it came, forged fields and all:
    the daemon does not judge scores nobody asked it to."""
    p = proxy(sections=[scorer(tmp_path, "one", 100, "HUGE")])
    assert send(p, client).code == 250
    assert recorder.wait_for_transactions(1, timeout=BOUND)
    (t,) = recorder.messages()
    assert bytes(t.data).startswith(b"Subject: t\r\nX-Spam-Flag: NO\r\n"), bytes(t.data)


def test_negative_scores_pull_back(recorder, proxy, client, tmp_path):
    p = proxy(sections=[scorer(tmp_path, "one", 9, "BAD"), scorer(tmp_path, "two", -5, "GOOD")],
              reject_score="6")
    assert send(p, client).code == 250


@pytest.mark.parametrize("line,ok", [
    ("reject_score = 15", True),
    ("header_score = -2.5", True),
    ("tempfail_score = 1e3", True),
    ("reject_score = lots", False),
    ("reject_score = 5 points", False),
    ("reject_score = nan", False),
    ("reject_score = inf", False),
    ("reject_score = 1e9", False),
    ("reject_score =  ", False),
])
def test_check_threshold_values(tmp_path, line, ok):
    path = str(tmp_path / "p.conf")
    with open(path, "w") as f:
        f.write(kp.config_text({"listen": "127.0.0.1:2525", "backend": "127.0.0.1:10025"}) + line + "\n")
    rc, out = kp.run_check(path)
    if ok:
        assert rc == 0, out
    else:
        assert rc != 0, out
        assert re.search(rf"^{re.escape(path)}:3: \S+_score", out, re.M), out
