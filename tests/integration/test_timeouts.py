"""Timeouts are deadlines, not idle timers: a peer that keeps trickling bytes
still runs out of time. Bounds here are generous; nothing asserts wall time
beyond "it did happen, well before the bound"."""

import threading
import time

import pytest

from kit.smtpclient import ConnectionClosed, ReplyTimeout

BOUND = 15.0  # seconds: far beyond every deadline configured here


class Trickler:
    """Send data one byte at a time, every `interval` seconds, until it is
    all sent, the socket fails or stop() is called."""

    def __init__(self, sock, data, interval=0.5):
        self.sock, self.data, self.interval = sock, data, interval
        self.sent = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        for i in range(len(self.data)):
            if self._stop.wait(self.interval):
                return
            try:
                self.sock.send(self.data[i : i + 1])
            except OSError:
                return
            self.sent += 1

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        self.thread.join(5)


def _read_until_421(c, bound=BOUND):
    """The next reply (there must be exactly one: the 421), within bound."""
    t0 = time.monotonic()
    r = c.reply(timeout=bound)
    return r, time.monotonic() - t0


def test_command_deadline_against_trickling_client(recorder, proxy, client):
    p = proxy(timeout="2s")
    c = client(p)
    c.greet()
    # A command that never ends, one byte every half second: an idle timer
    # would be reset forever; a deadline fires.
    tr = Trickler(c.sock, b"MAIL FROM:<slow@x.test>" + b"x" * 200, interval=0.5).start()
    try:
        r, took = _read_until_421(c)
    finally:
        tr.stop()
    r.expect(421, "4.4.2")
    assert c.closed(BOUND)
    assert took < BOUND
    # The trickler was still sending when the deadline hit.
    assert tr.sent < 200
    assert "slow@x.test" not in recorder.raw().decode("latin-1")


def test_command_deadline_idle_client(recorder, proxy, client):
    p = proxy(timeout="1s")
    c = client(p)
    c.greet()
    r, _ = _read_until_421(c)
    r.expect(421, "4.4.2")
    assert c.closed(BOUND)


def test_command_deadline_mid_transaction(recorder, proxy, client):
    """A session that times out with an open transaction leaves nothing
    behind at the backend."""
    p = proxy(timeout="1s")
    c = client(p)
    c.greet()
    c.envelope()
    r, _ = _read_until_421(c)
    r.expect(421, "4.4.2")
    assert c.closed(BOUND)
    assert recorder.wait_all_closed(BOUND)
    assert not any(t.data_cmd for t in recorder.transactions())


def test_data_deadline_against_trickling_client(recorder, proxy, client):
    p = proxy(timeout="10s", data_timeout="2s")
    c = client(p)
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    # Whole lines, steadily (20 bytes a second), never the end.
    tr = Trickler(c.sock, b"Subject: slow\r\n\r\n" + b"line\r\n" * 100, interval=0.05).start()
    try:
        r, took = _read_until_421(c)
    finally:
        tr.stop()
    r.expect(421, "4.4.2")
    assert c.closed(BOUND)
    assert tr.sent < len(b"line\r\n") * 100
    assert recorder.wait_all_closed(BOUND)
    assert "DATA" not in recorder.verbs()
    assert b"Subject: slow" not in recorder.raw()


def test_data_deadline_longer_than_command_timeout(recorder, proxy, client):
    """During DATA the data deadline applies, not the per-command one: a
    message sent over ~2 s with timeout=1s still passes when data_timeout is
    long enough."""
    p = proxy(timeout="1s", data_timeout="20s")
    c = client(p)
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    body = b"Subject: paced\r\n\r\n"
    c.send(body)
    for i in range(8):
        time.sleep(0.25)
        c.send(b"line %d\r\n" % i)
        body += b"line %d\r\n" % i
    c.send(b".\r\n")
    c.reply().expect(250)
    assert recorder.wait_for_transactions(1)[0].data == body


@pytest.mark.parametrize("at", ["MAIL", "RCPT"])
def test_backend_stalls_at_command(recorder, proxy, client, at):
    recorder.stall(at)
    p = proxy(backend_timeout="1s")
    c = client(p)
    c.greet()
    if at == "RCPT":
        c.cmd("MAIL FROM:<a@x.test>").expect(250)
        c.send(b"RCPT TO:<b@y.test>\r\n")
    else:
        c.send(b"MAIL FROM:<a@x.test>\r\n")
    r = c.reply(timeout=BOUND)
    r.expect(451, "4.4.2")
    # Whatever follows, nothing is ever acknowledged with 250 for this
    # transaction (the session may close, or refuse further commands).
    try:
        r2 = c.cmd("DATA", timeout=BOUND)
        assert r2.code != 354 and r2.code // 100 != 2, r2
    except (ConnectionClosed, ReplyTimeout, OSError):
        pass


@pytest.mark.parametrize("at", ["DATA", "EOD"])
def test_backend_stalls_at_data(recorder, proxy, client, at):
    recorder.stall(at)
    p = proxy(backend_timeout="1s", backend_data_timeout="1s")
    c = client(p)
    c.greet()
    c.envelope()
    c.cmd("DATA").expect(354)
    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    r = c.reply(timeout=BOUND)
    r.expect(451, "4.4.2")
    assert not recorder.delivered()
    s = p.wait_summaries(1)
    assert s and s[-1]["status"] == "tempfail", s


def test_backend_stalls_at_banner(recorder, proxy, client):
    recorder.stall("BANNER")
    p = proxy(backend_connect_timeout="1s")
    c = client(p)
    r = c.reply(timeout=BOUND)
    assert r.code == 421 and r.enhanced and r.enhanced.startswith("4.4."), r
    assert c.closed(BOUND)


def test_backend_stalls_at_ehlo(recorder, proxy, client):
    recorder.stall("EHLO")
    p = proxy(backend_timeout="1s", backend_connect_timeout="1s")
    c = client(p)
    r = c.reply(timeout=BOUND)
    if r.code == 220:
        c.send(b"EHLO client.test\r\n")
        r = c.reply(timeout=BOUND)
    # Never a 250 for an EHLO the backend did not answer.
    assert r.code in (421, 451) and r.enhanced and r.enhanced.startswith("4.4."), r
