"""The command line (-t, -o, -V) and signals."""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from kit.proxy import Proxy, binary_path, config_text, run, run_check
from kit.smtpclient import ConnectionClosed, RawClient, ReplyTimeout

BOUND = 15.0


def _write(tmp_path, text, name="p.conf"):
    path = str(tmp_path / name)
    with open(path, "w") as f:
        f.write(text)
    return path


GOOD = {"listen": "127.0.0.1:2525", "backend": "127.0.0.1:10025", "hostname": "mx.test"}


def test_check_good_config(tmp_path):
    path = _write(tmp_path, config_text(GOOD) + "# comment\nmax_message_size = 10M\ntimeout = 250ms\n")
    rc, out = run_check(path)
    assert rc == 0, out
    assert "AddressSanitizer" not in out and "runtime error" not in out


@pytest.mark.parametrize(
    "line",
    [
        "max_recipients = lots",
        "no_such_key = 1",
        "this line has no equals sign",
        "timeout = 5 minutes",
        "bare_lf = sometimes",
        "max_message_size = 10Q",
        "backend = nowhere",
        "max_line_length = 100",
        "[broken section",
    ],
)
def test_check_broken_config(tmp_path, line):
    text = "# a config with one bad line\n" + config_text(GOOD) + line + "\nhostname2 = x\n"
    bad_line = 1 + len(GOOD) + 1
    path = _write(tmp_path, text)
    rc, out = run_check(path)
    assert rc != 0, out
    assert re.search(rf"^{re.escape(path)}:{bad_line}: \S", out, re.M), out


def test_check_key_given_twice(tmp_path):
    path = _write(tmp_path, config_text(GOOD) + "timeout = 5s\ntimeout = 6s\n")
    rc, out = run_check(path)
    assert rc != 0
    assert re.search(rf"^{re.escape(path)}:5: \S", out, re.M), out


def test_check_missing_backend(tmp_path):
    path = _write(tmp_path, "listen = 127.0.0.1:2525\n")
    rc, out = run_check(path)
    assert rc != 0
    assert path in out and "backend" in out, out


def test_check_missing_file(tmp_path):
    path = str(tmp_path / "nope.conf")
    rc, out = run_check(path)
    assert rc != 0
    assert path in out, out


def test_check_override(tmp_path):
    path = _write(tmp_path, config_text(GOOD))
    rc, out = run_check(path, "-o", "max_recipients=abc")
    assert rc != 0
    assert "max_recipients" in out, out
    rc, out = run_check(path, "-o", "max_recipients=5")
    assert rc == 0, out


@pytest.mark.parametrize("value,ok", [
    ("256k", True), ("16k", True), ("16M", True), ("1M", True),
    ("16383", False), ("17M", False), ("1G", False), ("0", False), ("lots", False), ("-1", False),
    ("99999999999999G", False), ("1.5M", False),
])
def test_check_max_client_buffer(tmp_path, value, ok):
    """max_client_buffer: a size from 16k to 16M; the message says so."""
    path = _write(tmp_path, config_text(GOOD))
    rc, out = run_check(path, "-o", f"max_client_buffer={value}")
    if ok:
        assert rc == 0, out
        return
    assert rc != 0, out
    assert (f'command line: max_client_buffer: bad value "{value}": expected a size '
            f"(e.g. 10, 64k, 50M, 1G), from 16384 to 16777216") in out, out


def test_check_max_client_buffer_holds_a_line(tmp_path):
    """The buffer must hold a whole command line, or a long line would wait
    for the timeout instead of getting 500: the file's line is named."""
    path = _write(tmp_path, config_text(GOOD) + "max_line_length = 64k\nmax_client_buffer = 64k\n")
    rc, out = run_check(path)
    assert rc != 0, out
    assert (f"{path}:5: max_client_buffer (65536) must be larger than max_line_length (65536) + 2"
            in out), out
    rc, out = run_check(path, "-o", "max_client_buffer=65539")
    assert rc == 0, out


@pytest.mark.parametrize("value,why", [
    ("127.0.0.0/8 ::1 192.0.2.0/24, 2001:db8::/32", None),
    ("0.0.0.0/0 ::/0", None),
    ("10.0.0.1/8", "10.0.0.1/8 has bits set past its /8 prefix (the network is 10.0.0.0/8)"),
    ("10.0.0.0/33", "expected addresses or networks"),
    ("mynetworks", "expected addresses or networks"),
])
def test_check_trusted_networks(tmp_path, value, why):
    path = _write(tmp_path, config_text(GOOD) + f"trusted_networks = {value}\n")
    rc, out = run_check(path)
    if why is None:
        assert rc == 0, out
    else:
        assert rc != 0, out
        assert f'{path}:4: trusted_networks: bad value "{value}": {why}' in out, out


def test_override_applies(recorder, proxy, client):
    p = proxy(args=("-o", "hostname=override.test"))
    c = client(p)
    assert c.banner().first == "220 override.test ESMTP"


def test_version():
    rc, out, err = run("-V")
    assert rc == 0
    assert re.search(r"portcullis\S*\s+v?\d+\.\d+", out + err), out + err


def test_log_lines_carry_session_id(recorder, proxy, client):
    p = proxy()
    c = client(p)
    c.greet()
    c.envelope()
    c.message(b"Subject: x\r\n\r\nx\r\n.\r\n").expect(250)
    c.cmd("QUIT").expect(221)
    s = p.wait_summaries(1)
    assert s
    sid = s[0]["id"].split(".")[0]
    session_lines = [ln for ln in p.log().splitlines() if sid in ln]
    assert len(session_lines) >= 2
    line_re = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z portcullis\[\d+\]: \w+: ")
    for ln in p.log().splitlines():
        assert line_re.match(ln), ln
    for ln in session_lines:
        assert re.search(rf"\bid={re.escape(sid)}(\.\d+)?\b", ln), ln


def test_sigterm_lets_transaction_finish(recorder, proxy, client):
    p = proxy(shutdown_timeout="5s")
    c = client(p)
    c.greet()
    c.envelope()
    p.signal(signal.SIGTERM)
    time.sleep(0.3)
    assert p.alive(), "exited with a transaction in progress"
    # No new sessions once draining.
    try:
        n = RawClient(p.port, timeout=3)
        try:
            r = n.banner(timeout=3)
            assert r.code != 220, r
        except (ConnectionClosed, ReplyTimeout, OSError):
            pass
        finally:
            n.close()
    except OSError:
        pass
    r = c.message(b"Subject: late\r\n\r\nstill delivered\r\n.\r\n")
    r.expect(250)
    assert recorder.wait_for_transactions(1)[0].data == b"Subject: late\r\n\r\nstill delivered\r\n"
    # After its transaction the session may still say QUIT, and gets 221
    # (RFC 5321 §4.1.1.10), not the shutdown 421.
    c.cmd("QUIT", timeout=BOUND).expect(221)
    rc = p.wait(BOUND)
    assert rc == 0, p.log()


def test_sigterm_idle_session_gets_421(recorder, proxy, client):
    p = proxy(shutdown_timeout="1s")
    c = client(p)
    c.greet()
    p.signal(signal.SIGTERM)
    r = c.reply(timeout=BOUND)
    assert r.code == 421, r
    assert c.closed(BOUND)
    assert p.wait(BOUND) == 0, p.log()


def test_sigterm_mid_data_past_grace(recorder, proxy, client):
    """A transaction that does not finish within the grace period is cut:
    the client gets 421 and the backend gets no partial message."""
    p = proxy(shutdown_timeout="1s")
    c = client(p)
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    c.send(b"Subject: never finished\r\n\r\npart\r\n")
    p.signal(signal.SIGTERM)
    r = c.reply(timeout=BOUND)
    assert r.code == 421, r
    assert p.wait(BOUND) == 0, p.log()
    assert recorder.wait_all_closed(BOUND)
    assert "DATA" not in recorder.verbs()


def test_sigterm_no_sessions_exits_promptly(recorder, proxy):
    p = proxy(shutdown_timeout="30s")
    p.signal(signal.SIGTERM)
    # Nothing to drain: it does not wait out the grace period.
    assert p.wait(10) == 0, p.log()


def test_sigint_stops(recorder, proxy):
    p = proxy()
    p.signal(signal.SIGINT)
    assert p.wait(BOUND) == 0, p.log()


def test_sighup_as_soon_as_port_opens(recorder, tmp_path):
    """An init script may signal the daemon the moment its port is open.

    SIGHUP's default action ends a process, so the handlers must be in place
    before the first socket listens. Sixteen listen addresses widen the window
    between the first listen() and the rest of start-up; the first port is
    probed by connecting in a tight loop and the signal sent on first success,
    a few times over."""
    for n in range(5):
        p = Proxy(tmp_path / f"p{n}", recorder.address)
        p.write_config()
        # Fifteen distinct ports: held bound while chosen, so that none
        # comes back twice, and released just before the start.
        held = [socket.socket() for _ in range(15)]
        with open(p.config_path, "a") as f:
            for h in held:
                h.bind(("127.0.0.1", 0))
                f.write(f"listen = 127.0.0.1:{h.getsockname()[1]}\n")
        for h in held:
            h.close()
        with open(p.log_path, "wb") as log:
            proc = subprocess.Popen(
                [binary_path(), "-c", p.config_path], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            deadline = time.monotonic() + BOUND
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    socket.create_connection(p.address, timeout=BOUND).close()
                    break
                except ConnectionRefusedError:
                    pass
            os.kill(proc.pid, signal.SIGHUP)
            time.sleep(0.2)
            assert proc.poll() is None, f"SIGHUP at start ended the daemon ({proc.returncode}):\n{p.log()}"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(BOUND) == 0, p.log()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("line,why", [
    ("store = mysql://db/1", 'store: unknown store "mysql://db/1": expected memory, lmdb:PATH, '
                             'redis://HOST:PORT/DB or unix:PATH'),
    ("store = memory:x", 'store: bad store "memory:x": memory takes nothing after it'),
    ("store =", "store: empty value"),
    ("store_max_size = 1k", "store_max_size"),
    ("store_timeout = soon", "store_timeout"),
])
def test_check_store_keys(tmp_path, line, why):
    """The top-level store is checked at start, even when no section uses
    it, with the key's line."""
    path = _write(tmp_path, config_text(GOOD) + line + "\n")
    rc, out = run_check(path)
    assert rc != 0, out
    assert re.search(rf"^{re.escape(path)}:4: {re.escape(why)}", out, re.M), out


def test_check_store_good(tmp_path):
    path = _write(tmp_path, config_text(GOOD) + "store = redis://:secret@127.0.0.1:1/3\n"
                  "store_timeout = 250ms\nstore_max_size = 1G\nstore_purge_interval = 5m\n")
    rc, out = run_check(path)
    assert rc == 0, out
