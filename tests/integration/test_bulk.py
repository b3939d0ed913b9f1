"""Bulk: Postfix's smtp-source through portcullis into smtp-sink (and into a real
Postfix): the far end counts exactly as many messages as were sent, and the
proxy logs one "sent" summary for each.

Counting: smtp-sink -c keeps running counters ("sess=N quit=N mesg=N", each
update ended by CR) on its stdout, flushed on every update; "mesg" counts each
message whose final "." it received. smtp-source exits non-zero on the first
unexpected reply (no -A), so rc 0 means every one of its transactions got 250.

Every run is bounded: smtp-source gets a hard timeout, the counts are waited for
with a deadline, and every process started here is stopped by its own PID.
"""

import os
import re
import socket
import subprocess
import time

import pytest

from kit.postfix import DOMAIN, Postfix
from kit.proxy import free_port

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
RUN_BOUND = 120  # seconds for one smtp-source run; a healthy one takes a few

pytestmark = pytest.mark.skipif(not (os.path.exists(SMTP_SOURCE) and os.path.exists(SMTP_SINK)),
                                reason="smtp-source/smtp-sink (package postfix) not installed")


class Sink:
    """smtp-sink on 127.0.0.1:<free port>, counting with -c."""

    def __init__(self, workdir):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.out_path = os.path.join(str(workdir), "smtp-sink.out")
        self.proc = None

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        self._out = open(self.out_path, "wb")
        # As root smtp-sink wants -u: it drops to that user after binding.
        self.proc = subprocess.Popen([SMTP_SINK, "-c", "-u", "nobody", self.addr, "256"],
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as s:
                    if s.makefile("rb").readline().startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("smtp-sink did not start: " + self.output())
            time.sleep(0.05)
        return self

    def output(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("ascii", "replace")

    def count(self):
        found = re.findall(r"mesg=(\d+)", self.output())
        return int(found[-1]) if found else 0

    def wait_count(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.count()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._out.closed:
            self._out.close()


@pytest.fixture
def sink(tmp_path):
    s = Sink(tmp_path).start()
    yield s
    s.stop()


def smtp_source(target, *args):
    """Run smtp-source against host:port; returns (rc, output, seconds)."""
    cmd = [SMTP_SOURCE, "-M", "client.test", "-f", "bulk@client.test", *args, target]
    t = time.monotonic()
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=RUN_BOUND)
    except subprocess.TimeoutExpired as e:
        pytest.fail("smtp-source %s did not finish within %ds: %s" % (args, RUN_BOUND, e.stdout))
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t


def sent_summaries(p, n, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        sent = [s for s in p.summaries() if s.get("status") == "sent"]
        if len(sent) >= n or time.monotonic() > deadline:
            return sent
        time.sleep(0.1)


@pytest.mark.parametrize("reuse", [False, True], ids=["new-connection-per-message", "reuse-connections"])
def test_2000_messages_20_sessions_into_sink(sink, proxy, reuse):
    n, sessions = 2000, 20
    p = proxy(backend=sink.addr, max_connections_per_ip=50, max_connections=1000)
    args = ["-s", str(sessions), "-m", str(n), "-l", "1024", "-t", "rcpt@sink.test"]
    if reuse:
        args.insert(0, "-d")  # -d: don't disconnect after a message, send the next one
    rc, out, secs = smtp_source("%s:%d" % (p.host, p.port), *args)
    assert rc == 0, out
    assert sink.wait_count(n) == n
    time.sleep(0.2)
    assert sink.count() == n  # not one more either
    assert len(sent_summaries(p, n)) == n


def test_100k_messages_spooled_to_file_into_sink(sink, proxy):
    n = 200
    p = proxy(backend=sink.addr, spool_memory="64k", max_connections_per_ip=50)
    rc, out, _ = smtp_source("%s:%d" % (p.host, p.port), "-d", "-s", "10", "-m", str(n),
                             "-l", str(100 * 1024), "-t", "rcpt@sink.test")
    assert rc == 0, out
    assert sink.wait_count(n) == n
    assert len(sent_summaries(p, n)) == n


def test_several_recipients_per_message_into_sink(sink, proxy):
    n = 500
    p = proxy(backend=sink.addr)
    rc, out, _ = smtp_source("%s:%d" % (p.host, p.port), "-d", "-s", "5", "-m", str(n),
                             "-r", "5", "-t", "rcpt@sink.test")
    assert rc == 0, out
    assert sink.wait_count(n) == n


def test_bulk_into_real_postfix(proxy):
    n, sessions = 200, 10
    with Postfix() as pf:
        p = proxy(backend=pf.addr, max_connections_per_ip=50)
        rc, out, _ = smtp_source("%s:%d" % (p.host, p.port), "-d", "-s", str(sessions),
                                 "-m", str(n), "-l", "2048", "-t", "bulk@" + DOMAIN)
        assert rc == 0, out
        deadline = time.monotonic() + 60
        while pf.count() < n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pf.count() == n, "postfix delivered %d of %d\n%s" % (pf.count(), n, pf.log()[-3000:])
        time.sleep(0.3)
        assert pf.count() == n
        assert pf.queue_empty()
        msgs = pf.messages()
        assert all(m.sender == "bulk@client.test" and m.recipients == ["bulk@" + DOMAIN]
                   for m in msgs)
        assert len({m.queue_id for m in msgs}) == n
