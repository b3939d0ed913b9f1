"""Every limit is named, configurable, and enforced with the documented reply."""

import resource
import signal
import subprocess
import time

import pytest

from kit.ports import free_port
from kit.proxy import binary_path, config_text, listening
from kit.smtpclient import ConnectionClosed, RawClient


def test_max_message_size_after_end_of_data(recorder, proxy, client):
    p = proxy(max_message_size="10k")
    c = client(p)
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    line = b"x" * 70 + b"\r\n"
    big = b"Subject: big\r\n\r\n" + line * 300  # ~21 KB
    # The proxy reads to the end of data and only then answers.
    c.send(big)
    c.send(b".\r\n")
    c.reply().expect(552, "5.3.4")
    # The session goes on, and a small message still passes.
    c.cmd("NOOP").expect(250)
    c.envelope("a2@x.test")
    c.message(b"Subject: small\r\n\r\nok\r\n.\r\n").expect(250)
    msgs = recorder.wait_for_transactions(1)
    assert len(msgs) == 1 and msgs[0].sender == "a2@x.test"
    # The big one never reached the backend as a message.
    assert sum(1 for t in recorder.transactions() if t.data_cmd) == 1
    assert b"Subject: big" not in recorder.raw()
    s = p.wait_summaries(2)
    assert s[0]["status"] == "rejected" and s[0]["reply"].startswith("552 5.3.4"), s


def test_message_exactly_at_size_limit_passes(recorder, proxy, client):
    p = proxy(max_message_size="1k")
    c = client(p)
    c.greet()
    c.envelope()
    body = b"Subject: s\r\n\r\n" + b"y" * (1024 - 14 - 2) + b"\r\n"
    assert len(body) == 1024
    c.message(body + b".\r\n").expect(250)
    assert recorder.wait_for_transactions(1)[0].data == body


def test_mail_size_parameter_too_big(recorder, proxy, client):
    p = proxy(max_message_size="10k")
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test> SIZE=20000").expect(552, "5.3.4")
    c.cmd("MAIL FROM:<b@x.test> SIZE=100").expect(250)
    assert "SIZE=20000" not in recorder.raw().decode("latin-1")
    assert "a@x.test" not in recorder.raw().decode("latin-1")


def test_max_recipients(recorder, proxy, client):
    p = proxy(max_recipients=3)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    for i in range(3):
        c.cmd(f"RCPT TO:<r{i}@y.test>").expect(250)
    c.cmd("RCPT TO:<extra@y.test>").expect(452, "4.5.3")
    c.cmd("RCPT TO:<extra2@y.test>").expect(452, "4.5.3")
    c.message(b"Subject: r\r\n\r\nx\r\n.\r\n").expect(250)
    t = recorder.wait_for_transactions(1)[0]
    assert t.accepted_rcpts == ["r0@y.test", "r1@y.test", "r2@y.test"]
    assert "extra" not in recorder.raw().decode("latin-1")


def test_max_recipients_counts_per_transaction(recorder, proxy, client):
    p = proxy(max_recipients=2)
    c = client(p)
    c.greet()
    for n in range(2):
        c.envelope(f"a{n}@x.test", "r1@y.test", "r2@y.test")
        c.cmd("RCPT TO:<r3@y.test>").expect(452, "4.5.3")
        c.message(b"Subject: r\r\n\r\nx\r\n.\r\n").expect(250)
    msgs = recorder.wait_for_transactions(2)
    assert [m.accepted_rcpts for m in msgs] == [["r1@y.test", "r2@y.test"]] * 2


def test_command_line_too_long(recorder, proxy, client):
    p = proxy(max_line_length=512)
    c = client(p)
    c.greet()
    c.cmd("NOOP " + "x" * 600).expect(500, "5.5.2")
    c.cmd("NOOP").expect(250)
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    # A long RCPT line is refused and not forwarded.
    c.cmd("RCPT TO:<" + "r" * 590 + "@y.test>").expect(500, "5.5.2")
    c.cmd("RCPT TO:<ok@y.test>").expect(250)
    # A huge line (far beyond any buffer) too.
    c.send(b"NOOP " + b"z" * 200_000 + b"\r\n")
    c.reply().expect(500, "5.5.2")
    c.cmd("NOOP").expect(250)
    raw = recorder.raw().decode("latin-1")
    assert "rrrrrrrrrr" not in raw and "zzzzzzzzzz" not in raw


def test_line_at_limit_is_fine(recorder, proxy, client):
    p = proxy(max_line_length=512)
    c = client(p)
    c.greet()
    line = "NOOP " + "x" * (512 - 5)
    assert len(line) == 512
    c.cmd(line).expect(250)


def _errors_until_421(c, limit):
    """Send bad commands until a 421 (bounded); returns the codes seen."""
    codes = []
    for _ in range(limit + 3):
        try:
            r = c.cmd("BOGUS command")
        except ConnectionClosed:
            break
        codes.append(r.code)
        if r.code == 421:
            break
    return codes


def test_max_errors(recorder, proxy, client):
    p = proxy(max_errors=3)
    c = client(p)
    c.greet()
    codes = _errors_until_421(c, 3)
    assert codes and codes[-1] == 421, codes
    assert all(x == 500 for x in codes[:-1]), codes
    assert 2 <= len(codes) - 1 <= 3, codes
    assert c.closed()


def test_max_errors_421_text(recorder, proxy, client):
    p = proxy(max_errors=1)
    c = client(p)
    c.greet()
    r = None
    for _ in range(3):
        try:
            r = c.cmd("BOGUS")
        except ConnectionClosed:
            break
        if r.code == 421:
            break
    assert r is not None and r.code == 421 and r.enhanced == "4.7.0", r
    assert c.closed()


def _open(p, source=None):
    c = RawClient(p.port, timeout=10, source=source)
    return c, c.banner()


def _until_accepted(p, source=None, bound=5.0):
    """A slot freed by a closed session comes back (bounded)."""
    deadline = time.monotonic() + bound
    while True:
        c, r = _open(p, source)
        if r.code == 220 or time.monotonic() > deadline:
            return c, r
        c.close()
        time.sleep(0.05)


def test_max_connections(recorder, proxy):
    p = proxy(max_connections=2, max_connections_per_ip=2)
    a, ra = _open(p)
    b, rb = _open(p)
    try:
        assert ra.code == 220 and rb.code == 220
        c, rc = _open(p)
        rc.expect(421, "4.7.0")
        assert c.closed()
        c.close()
        # Another address is refused too: the limit is global.
        d, rd = _open(p, source=("127.0.0.2", 0))
        rd.expect(421, "4.7.0")
        d.close()
        # The refused connections never reached the backend.
        assert len(recorder.conns()) == 2
        a.cmd("QUIT").expect(221)
        a.close()
        e, re_ = _until_accepted(p)
        assert re_.code == 220
        e.close()
    finally:
        a.close()
        b.close()


def test_max_connections_per_ip(recorder, proxy):
    p = proxy(max_connections=10, max_connections_per_ip=2)
    a, ra = _open(p)
    b, rb = _open(p)
    others = []
    try:
        assert ra.code == 220 and rb.code == 220
        c, rc = _open(p)
        rc.expect(421, "4.7.0")
        assert c.closed()
        c.close()
        # Another client address still gets in.
        d, rd = _open(p, source=("127.0.0.2", 0))
        others.append(d)
        assert rd.code == 220
        d.ehlo()
        a.close()
        e, re_ = _until_accepted(p)
        others.append(e)
        assert re_.code == 220
    finally:
        for x in [a, b] + others:
            x.close()



def _nofile(pid):
    """(soft, hard) 'Max open files' of a process, from /proc."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def _start_limited(recorder, tmp_path, soft, hard, **settings):
    """The proxy started with RLIMIT_NOFILE (soft, hard), as a shell or a
    unit would give it; returns (process, log path, port) once it serves."""
    port = free_port()
    conf = tmp_path / "p.conf"
    conf.write_text(config_text({
        "listen": f"127.0.0.1:{port}", "backend": f"127.0.0.1:{recorder.port}",
        "hostname": "proxy.test", "client_rdns": "no", "spool_dir": str(tmp_path),
        "shutdown_timeout": "1s", **settings}))
    log_path = tmp_path / "p.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [binary_path(), "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    log.close()
    deadline = time.monotonic() + 15
    while not listening(port):
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.02)
    return proc, log_path, port


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_descriptor_limit_raised_to_hard(recorder, tmp_path):
    """A session needs two descriptors: started under a shell's soft limit
    of 1024, the proxy raises it to the hard limit, and says nothing when
    max_connections fits under it."""
    proc, log_path, _ = _start_limited(recorder, tmp_path, 1024, 4096, max_connections="100")
    try:
        assert _nofile(proc.pid) == (4096, 4096)
        assert "descriptors" not in log_path.read_text()
    finally:
        _stop(proc)


def test_descriptor_limit_too_low_for_max_connections(recorder, tmp_path):
    """max_connections that cannot fit under the hard limit is said at start,
    with what it needs and where sessions stop; the proxy still serves."""
    proc, log_path, port = _start_limited(recorder, tmp_path, 1024, 4096, max_connections="5000")
    try:
        log = log_path.read_text()
        assert "max_connections = 5000 needs some 10064 descriptors in one process" in log, log
        assert "over its limit of 4096: past some 2016 sessions in a process" in log, log
        c = RawClient(port)
        c.banner().expect(220)
        c.close()
    finally:
        _stop(proc)
