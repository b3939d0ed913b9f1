"""The test kit's fake milter (kit/fakemilter.py) on its own, driven by the
kit's minimal MTA end (MtaClient): framing, negotiation, the default and
scripted replies, the NR_* flags, special actions, records, a peer that
goes away, stop(). test_milter.py relies on all of this."""

import os
import struct
import subprocess
import sys
import time

from kit import fakemilter as fm
from kit.fakemilter import FakeMilter, MtaClient


def z(*s):
    return b"".join(x.encode() + b"\0" for x in s)


def test_import_starts_nothing():
    """Importing the kit starts no thread and opens no socket (checked in a
    fresh interpreter, so that no other test's servers count)."""
    kit_parent = os.path.dirname(os.path.dirname(os.path.abspath(fm.__file__)))
    code = ("import os, threading, kit.fakemilter; "
            "print(threading.active_count(), sorted(os.listdir('/proc/self/fd')) == sorted(fds))")
    code = "import os; fds = os.listdir('/proc/self/fd'); " + code
    out = subprocess.run([sys.executable, "-c", code], cwd=kit_parent, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True"], out.stdout


def test_negotiation_default_and_configured():
    with FakeMilter() as m:
        assert m.socket == f"inet:127.0.0.1:{m.port}"
        c = MtaClient(m)
        cmd, data = c.negotiate(protocol=0x1FFFFF)
        assert cmd == "O"
        assert struct.unpack(">III", data) == (6, 0x1FF, 0)
        c.close()
        [conn] = m.wait_conns(1)
        assert conn.offer == (6, 0x1FF, 0x1FFFFF)
    with FakeMilter(version=2, actions=fm.SMFIF_ADDHDRS, protocol=fm.SMFIP_NOHELO,
                    symlists={fm.SMFIM_CONNECT: "j {client_addr}", "mail": "{mail_addr}"}) as m:
        c = MtaClient(m)
        cmd, data = c.negotiate()
        assert cmd == "O"
        assert data == struct.pack(">IIII", 2, 1, 2, 0) + b"j {client_addr}\0" + struct.pack(">I", 2) + b"{mail_addr}\0"
        c.close()


def test_records_every_stage_and_default_replies():
    with FakeMilter() as m:
        c = MtaClient(m)
        c.negotiate()
        c.send("D", b"C" + z("j", "mx.test", "{client_addr}", "127.0.0.1"))
        c.send("C", z("[127.0.0.1]") + b"4" + struct.pack(">H", 4242) + z("127.0.0.1"))
        assert c.read() == ("c", b"")
        c.send("H", z("client.test"))
        assert c.read()[0] == "c"
        c.send("D", b"M" + z("i", "ABC.1", "{mail_addr}", "a@x.test"))
        c.send("M", z("<a@x.test>", "SIZE=100"))
        assert c.read()[0] == "c"
        c.send("R", z("<b@y.test>"))
        assert c.read()[0] == "c"
        c.send("T")
        assert c.read()[0] == "c"
        c.send("L", z("Subject", "a\n\tb"))
        assert c.read()[0] == "c"
        c.send("N")
        assert c.read()[0] == "c"
        c.send("B", b"x" * 65535)
        assert c.read()[0] == "c"
        c.send("B", b"yz")
        assert c.read()[0] == "c"
        c.send("E")
        assert c.read()[0] == "c"
        c.send("A")
        c.send("Q")
        assert c.raw_rest() == b""  # no reply to ABORT or QUIT; the fake closes after QUIT
        [conn] = m.wait_conns(1)
        assert m.wait_closed()
        assert conn.letters() == "OCHMRTLNBBEAQ"
        con = conn.first("C")
        assert con.fields == {"hostname": "[127.0.0.1]", "family": "4", "port": 4242, "address": "127.0.0.1"}
        assert con.macros == {"C": {"j": "mx.test", "{client_addr}": "127.0.0.1"}}
        assert con.macro("client_addr") == "127.0.0.1"
        assert conn.first("H").fields == {"helo": "client.test"}
        assert conn.first("H").macros == {}
        assert conn.first("M").fields["args"] == ["<a@x.test>", "SIZE=100"]
        assert conn.first("M").macros["M"]["i"] == "ABC.1"
        assert conn.first("R").fields["args"] == ["<b@y.test>"]
        assert conn.headers() == [("Subject", "a\n\tb")]
        assert [len(x) for x in conn.chunks()] == [65535, 2]
        assert conn.body() == b"x" * 65535 + b"yz"
        assert [t[0].cmd + t[-1].cmd for t in conn.transactions()] == ["ME"]
        assert conn.error is None


def test_nr_flags_silence_replies():
    with FakeMilter(protocol=fm.SMFIP_NR_CONN | fm.SMFIP_NR_HDR) as m:
        c = MtaClient(m)
        c.negotiate()
        c.send("C", z("h") + b"U")
        c.send("L", z("A", "1"))
        c.send("H", z("x"))
        assert c.read() == ("c", b"")  # the first reply is HELO's
        c.close()


def test_scripted_replies_and_callable():
    def rcpt(conn, cmd, fields):
        conn.state["n"] = conn.state.get("n", 0) + 1
        return [fm.reject()] if conn.state["n"] == 2 else None

    script = {"R": rcpt, "E": [fm.addheader("X-A", "1"), fm.insheader(0, "X-B", "2"), fm.chgheader(2, "X-C", ""),
                               fm.addrcpt("n@y"), fm.addrcpt_par("p@y", "NOTIFY=NEVER"), fm.delrcpt("<b@y>"),
                               fm.chgfrom("<s@x>"), fm.chgfrom("<s@x>", "SIZE=1"), fm.replbody(b"new\r\n"),
                               fm.quarantine("why"), fm.progress(), fm.replycode("550 5.7.1 no"),
                               fm.Raw(b"\0\0\0\0"), fm.CLOSE]}
    with FakeMilter(script=script) as m:
        c = MtaClient(m)
        c.negotiate()
        for _ in range(3):
            c.send("R", z("<r@y>"))
        assert [c.read()[0] for _ in range(3)] == ["c", "r", "c"]
        c.send("E")
        got = [c.read() for _ in range(12)]
        assert got == [
            ("h", z("X-A", "1")), ("i", b"\0\0\0\0" + z("X-B", "2")), ("m", b"\0\0\0\2" + z("X-C", "")),
            ("+", z("n@y")), ("2", z("p@y", "NOTIFY=NEVER")), ("-", z("<b@y>")), ("e", z("<s@x>")),
            ("e", z("<s@x>", "SIZE=1")), ("b", b"new\r\n"), ("q", z("why")), ("p", b""),
            ("y", z("550 5.7.1 no")),
        ]
        assert c.raw_rest() == b"\0\0\0\0"  # then the fake closed
        assert m.wait_closed()


def test_hang_records_on_and_sleep_delays():
    with FakeMilter(script={"E": [fm.HANG], "H": [fm.progress(), fm.Sleep(0.3), fm.cont()]}) as m:
        c = MtaClient(m)
        c.negotiate()
        c.send("H", z("x"))
        t0 = time.monotonic()
        assert c.read()[0] == "p"
        assert c.read()[0] == "c"
        assert time.monotonic() - t0 >= 0.25
        c.send("E")
        c.send("A")
        c.send("Q")
        [conn] = m.wait_conns(1)
        assert m.wait_cmd("Q")
        assert conn.letters() == "OHEAQ"
        assert c.raw_rest(0.3) == b""


def test_peer_closing_early_and_bad_length_end_only_that_connection():
    with FakeMilter(script={"E": [fm.Sleep(0.2), fm.cont()]}) as m:
        c = MtaClient(m)
        c.negotiate()
        c.send("E")
        c.close()  # gone before the reply
        c2 = MtaClient(m)
        c2.sock.sendall(struct.pack(">I", 0))
        assert m.wait_closed()
        conns = m.conns()
        assert len(conns) == 2
        assert "bad packet length 0" in conns[1].error
        c3 = MtaClient(m)
        assert c3.negotiate()[0] == "O"
        c3.close()


def test_unix_socket(tmp_path):
    path = str(tmp_path / "m.sock")
    m = FakeMilter(unix=path).start()
    try:
        assert m.socket == "unix:" + path
        c = MtaClient(m)
        assert c.negotiate()[0] == "O"
        c.close()
    finally:
        m.stop()

    assert not os.path.exists(path)


def test_stop_closes_live_connections():
    m = FakeMilter(script={"O": [fm.HANG]}).start()
    c = MtaClient(m)
    c.send("O", struct.pack(">III", 6, 0x1FF, 0))
    m.wait_cmd("O")
    m.stop()
    assert c.raw_rest(2) == b""
    assert all(not t.is_alive() for t in m._threads)
