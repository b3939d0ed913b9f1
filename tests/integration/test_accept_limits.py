"""Out of descriptors, accept pauses instead of spinning (issue 12 item 6).

The daemon's RLIMIT_NOFILE is lowered (prlimit(2) on the running process) so
that exactly SESSIONS sessions fit: each holds the client's descriptor and
its backend's. More clients than that connect and hold their connections;
accept then fails with EMFILE while the listening socket stays readable.

What must hold: the daemon stays nearly idle (CPU time read from
/proc/PID/stat), its log grows by a line or so per second, not one per
failed accept, and once the clients are gone a new one is served again.
These are assertions about behaviour, not about how fast the proxy is.
"""

import datetime
import os
import resource
import socket
import time

from kit.smtpclient import RawClient

SESSIONS = 10  # sessions that fit under the lowered limit
CLIENTS = 100  # clients that connect and hold their connections
WINDOW = 1.5  # seconds over which CPU and log growth are measured
MAX_CPU = 0.3  # seconds of CPU in WINDOW: a spinning accept uses all of it
MAX_LOG_LINES = 4  # in WINDOW: at most one message per second, with slack
BOUND = 10.0  # how long we wait before calling the daemon broken
DRAIN = 60.0  # the same for the backlog: SESSIONS clients per pause at most


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; fields after it do not.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def open_fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_fd_count(p):
    """The descriptors of an idle daemon. Its first log line reads the time
    zone file (a descriptor for a moment), so wait for the start to be
    logged and for two readings to agree: one descriptor too many would let
    every client past accept only to find no descriptor for its backend."""
    assert p.wait_log(r"portcullis \S+ started", timeout=BOUND), p.log()
    n = open_fd_count(p.pid)
    while True:
        time.sleep(0.05)
        m = open_fd_count(p.pid)
        if m == n:
            return n
        n = m


def hold_clients(port, n):
    """n connections that say nothing and read nothing: each waits in the
    listen backlog or holds a session."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
        socks.append(s)
    return socks


def test_accept_pauses_when_out_of_descriptors(recorder, proxy):
    p = proxy(max_connections=1000, max_connections_per_ip=1000)
    base = idle_fd_count(p)
    # Room for SESSIONS sessions of two descriptors each, and not one more.
    limit = base + 2 * SESSIONS
    resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (limit, limit))
    socks = hold_clients(p.port, CLIENTS)
    try:
        assert len(recorder.wait_for_connections(SESSIONS, timeout=BOUND)) >= SESSIONS, p.log()
        assert p.wait_log(r"accept: Too many open files; pausing accepts for \d+ ms",
                          timeout=BOUND), p.log()
        time.sleep(0.2)  # let the first burst settle

        lines0, cpu0 = len(p.log().splitlines()), cpu_seconds(p.pid)
        time.sleep(WINDOW)
        lines1, cpu1 = len(p.log().splitlines()), cpu_seconds(p.pid)

        assert cpu1 - cpu0 < MAX_CPU, f"{cpu1 - cpu0:.2f}s of CPU in {WINDOW}s: accept spins"
        grown = p.log().splitlines()[lines0:lines1]
        assert lines1 - lines0 <= MAX_LOG_LINES, "log grew by %d lines in %.1fs:\n%s" % (
            lines1 - lines0, WINDOW, "\n".join(grown[:20]))
        assert p.alive()
    finally:
        for s in socks:
            s.close()

    # The held sessions end and give their descriptors back; accepts resume
    # and work through the backlog (clients that left meanwhile), a pause
    # whenever it fills the table again; then the daemon is idle.
    assert len(p.wait_log(r" connect from client=", timeout=DRAIN, count=CLIENTS)) == CLIENTS, p.log()
    assert recorder.wait_all_closed(timeout=BOUND), p.log()
    deadline = time.monotonic() + BOUND
    while open_fd_count(p.pid) > base and time.monotonic() < deadline:
        time.sleep(0.05)
    c = RawClient(p.port, timeout=BOUND)
    try:
        c.greet()
        c.envelope("after@x.test", "rcpt@y.test")
        c.message(b"Subject: after the pause\r\n\r\nstill here\r\n.\r\n").expect(250)
        c.cmd("QUIT").expect(221)
    finally:
        c.close()
    delivered = [t for t in recorder.wait_for_transactions(1, timeout=BOUND) if t.sender == "after@x.test"]
    assert len(delivered) == 1, recorder.transactions()
    assert b"still here" in delivered[0].data


def test_accept_message_counts_failures(recorder, proxy):
    """Repeated pauses under a lasting shortage: one message per interval,
    each saying how many accepts failed since the one before."""
    p = proxy(max_connections=1000, max_connections_per_ip=1000)
    base = idle_fd_count(p)
    limit = base + 2 * 2
    resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (limit, limit))
    socks = hold_clients(p.port, 10)
    try:
        found = p.wait_log(r"pausing accepts for \d+ ms \(failed accepts since the last message: (\d+)\)",
                           timeout=BOUND, count=2)
        assert len(found) == 2, p.log()
        # A pause is shorter than the interval between messages: the second
        # one also counts the failures it did not report one by one.
        assert int(found[1].group(1)) >= 2, p.log()
        lines = [ln for ln in p.log().splitlines() if "pausing accepts" in ln][:2]
        t = [datetime.datetime.strptime(ln.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ") for ln in lines]
        assert (t[1] - t[0]).total_seconds() >= 0.9, lines
    finally:
        for s in socks:
            s.close()
