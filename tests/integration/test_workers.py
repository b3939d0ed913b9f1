"""workers = N (issue 18): a master that forks and supervises workers, limits
that hold across them, least privilege and the seccomp filter.

Which worker served a session is read from the log: every line carries the
pid of the process that wrote it (portcullis[PID]), and the session's
"connect from client=127.0.0.1:PORT" line names the client's own port. A
test that needs a given worker to take a connection stops the others
(SIGSTOP) until it has (only_worker): every worker waits on the same
listening socket and the kernel wakes them all, so whichever runs first
accepts. Left to chance, one CI run saw 40 connections in a row go to the
same worker.

Nothing here waits for wall time to pass except the greylist delay; every
other wait is a poll for a condition with a generous deadline.
"""

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

import kit.proxy as kp
from kit.messages import stuff
from kit.proxy import Proxy, free_port, test_plugin
from kit.smtpclient import ConnectionClosed, RawClient, ReplyTimeout
from kit.tlskit import shared as tls_shared

BOUND = 15.0  # how long we wait for what must happen
BODY = b"Subject: workers\r\n\r\nhello\r\n"
NOBODY = pwd.getpwnam("nobody")
STARTED = r"portcullis \S+ started, backend"


# ---- helpers ----------------------------------------------------------------


def wstart(proxy, workers=2, **kw):
    """A proxy with workers = N, once every first worker is ready."""
    p = proxy(workers=str(workers), **kw)
    assert p.wait_log(STARTED, timeout=BOUND), p.log()
    return p


def children(pid):
    """The pids of a process's children (/proc/PID/task/*/children)."""
    out = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def wait_children(p, n, other_than=()):
    """Poll until the master has n children, none of them in other_than."""
    deadline = time.monotonic() + BOUND
    while True:
        kids = children(p.pid)
        if len(kids) == n and not (kids & set(other_than)):
            return kids
        assert time.monotonic() < deadline, f"children {kids}, wanted {n} new ones:\n{p.log()}"
        time.sleep(0.02)


def started_pids(p):
    """Worker pids from the master's "worker N (pid P) started" lines."""
    return [int(m.group(1)) for m in re.finditer(r"worker \d+ \(pid (\d+)\) started", p.log())]


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(ln.split(":", 1) for ln in f.read().splitlines() if ":" in ln)


def ids(pid, key):
    return [int(x) for x in proc_status(pid)[key].split()]


def connect_pids(p):
    """{client port: pid of the worker that logged its connect line}."""
    rx = re.compile(r"portcullis\[(\d+)\]: \w+: .*connect from client=127\.0\.0\.1:(\d+)")
    return {int(m.group(2)): int(m.group(1)) for m in rx.finditer(p.log())}


def worker_of(p, c):
    """The pid of the worker serving client c, a client or a socket (from
    its connect line)."""
    port = getattr(c, "sock", c).getsockname()[1]
    deadline = time.monotonic() + BOUND
    while True:
        pid = connect_pids(p).get(port)
        if pid is not None:
            return pid
        assert time.monotonic() < deadline, f"no connect line for port {port}:\n{p.log()}"
        time.sleep(0.02)


# epoll_wait and epoll_pwait on x86-64: a worker stopped in one of them is
# between two turns of its event loop, and holds no lock another needs.
IDLE_SYSCALLS = {"232", "281"}


def stop_idle(pid):
    """SIGSTOP pid where it waits for events. A worker stopped anywhere else
    could hold the connection table's lock or LMDB's writer lock, and the
    worker left running would wait for it: continue it and try again."""
    deadline = time.monotonic() + BOUND
    while True:
        os.kill(pid, signal.SIGSTOP)
        while True:  # the signal is taken asynchronously
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            assert time.monotonic() < deadline, f"worker {pid} did not stop"
            time.sleep(0.001)
        with open(f"/proc/{pid}/syscall") as f:
            if f.read().split()[0] in IDLE_SYSCALLS:
                return
        os.kill(pid, signal.SIGCONT)
        assert time.monotonic() < deadline, f"worker {pid} never idle"
        time.sleep(0.005)


@contextlib.contextmanager
def only_worker(p, pid):
    """While the block runs, worker pid alone accepts: the master's other
    children are stopped (SIGSTOP) while they wait for events, and continued
    (SIGCONT) after. The master waits for its children without WUNTRACED,
    so it does not take a stopped worker for a dead one. The block must wait
    for what it connects to be served (a banner, a handshake) before it ends."""
    kids = children(p.pid)
    assert pid in kids, f"{pid} is not a worker of {p.pid}"
    stopped = []
    try:
        for k in kids - {pid}:
            stop_idle(k)
            stopped.append(k)
        yield
    finally:
        for k in stopped:
            os.kill(k, signal.SIGCONT)


def on_each(p, kids, fn):
    """fn(pid) once with each worker alone accepting, in pid order:
    {pid: what fn returned}."""
    out = {}
    for pid in sorted(kids):
        with only_worker(p, pid):
            out[pid] = fn(pid)
    return out


def held_on(p, pid):
    """A session on worker pid, its banner read."""
    with only_worker(p, pid):
        c = RawClient(p.port, timeout=BOUND)
        c.banner().expect(220)
    assert worker_of(p, c) == pid
    return c


def held_on_both(p, n_min=2):
    """n_min open sessions (banner read), taken by the workers in turn:
    [(client, pid)]."""
    kids = sorted(children(p.pid))
    assert len(kids) == 2, kids
    held = []
    try:
        for i in range(n_min):
            pid = kids[i % 2]
            held.append((held_on(p, pid), pid))
    except BaseException:
        for c, _ in held:
            c.close()
        raise
    return held


def deliver(c, sender, rcpt="b@y.test"):
    c.cmd(f"MAIL FROM:<{sender}>").expect(250)
    c.cmd(f"RCPT TO:<{rcpt}>").expect(250)
    return c.message(stuff(BODY) + b".\r\n")


def one_message(port, sender):
    """A whole session with one message; the DATA reply."""
    c = RawClient(port, timeout=BOUND)
    try:
        c.greet()
        r = deliver(c, sender)
        c.cmd("QUIT")
        return r
    finally:
        c.close()


def http_get(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    try:
        with urllib.request.urlopen(req, timeout=BOUND) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name):
    """The value of a sample line "name value" (name with its labels)."""
    for ln in text.splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[-1])
    return None


def gone(pid):
    """The process no longer exists (or is a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_gone(pids):
    deadline = time.monotonic() + BOUND
    while not all(gone(x) for x in pids):
        assert time.monotonic() < deadline, f"still running: {[x for x in pids if not gone(x)]}"
        time.sleep(0.02)


@pytest.fixture
def nobody_dir():
    """A directory nobody can write (spool_dir of a proxy that drops)."""
    d = tempfile.mkdtemp(prefix="pc-workers-")
    os.chown(d, NOBODY.pw_uid, NOBODY.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def solo(recorder, tmp_path):
    """Proxies a test expects to end on their own (not exit 0 at SIGTERM):
    solo(**config) -> Proxy, not started; ended by pid at the end."""
    made = []

    def make(name="solo", **settings):
        p = Proxy(tmp_path / name, recorder.address, **settings)
        made.append(p)
        return p

    yield make
    for p in made:
        if p.proc is not None:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)
            if not p._log.closed:
                p._log.close()


# ---- 1. two workers serve ------------------------------------------------------


def test_two_workers_are_children_and_both_serve(recorder, proxy):
    p = wstart(proxy)
    kids = wait_children(p, 2)
    assert set(started_pids(p)) == kids, p.log()
    assert p.pid not in kids
    # The master itself never accepts: every connect line is a worker's.
    held = held_on_both(p)
    try:
        served = set(connect_pids(p).values())
        assert served == kids, (served, kids)
    finally:
        for c, _ in held:
            c.close()


# ---- 2. SIGKILL under load ------------------------------------------------


class Sender(threading.Thread):
    """Sends messages in sessions of a few each, until told to stop; keeps
    what every DATA got and which sessions broke."""

    def __init__(self, port, n):
        super().__init__(daemon=True)
        self.port, self.n = port, n
        self.stop = threading.Event()
        self.acked = []  # senders whose DATA got 250
        self.sessions = []  # (client port, [senders tried], error or None)

    def run(self):
        i = 0
        while not self.stop.is_set():
            tried, err, cport = [], None, None
            try:
                c = RawClient(self.port, timeout=BOUND)
                try:
                    cport = c.sock.getsockname()[1]
                    c.greet()
                    for _ in range(3):
                        s = f"t{self.n}-{i}@x.test"
                        i += 1
                        tried.append(s)
                        r = deliver(c, s)
                        if r.code == 250:
                            self.acked.append(s)
                    c.cmd("QUIT").expect(221)
                finally:
                    c.close()
            except (ConnectionClosed, ReplyTimeout, OSError, AssertionError) as e:
                err = repr(e)
            self.sessions.append((cport, tried, err))


def test_sigkill_under_load_loses_no_acknowledged_message(recorder, proxy):
    recorder.delay("DATA", 0.02)  # messages in flight when the kill lands
    p = wstart(proxy)
    kids = wait_children(p, 2)
    senders = [Sender(p.port, n) for n in range(6)]
    for s in senders:
        s.start()
    try:
        # Load on both workers, then kill one of them.
        deadline = time.monotonic() + BOUND
        while set(connect_pids(p).values()) != kids or sum(len(s.acked) for s in senders) < 20:
            assert time.monotonic() < deadline, p.log()
            time.sleep(0.02)
        victim = sorted(kids)[0]
        survivor = sorted(kids)[1]
        os.kill(victim, signal.SIGKILL)
        assert p.wait_log(rf"worker \d+ \(pid {victim}\) was killed by signal 9 \(Killed\) after",
                          timeout=BOUND), p.log()
        new = wait_children(p, 2, other_than=(victim,)) - {survivor}
        assert len(new) == 1, p.log()
        [fresh] = new
    finally:
        for s in senders:
            s.stop.set()
        for s in senders:
            s.join(BOUND * 2)
    assert not any(s.is_alive() for s in senders)
    acked = [a for s in senders for a in s.acked]
    got = {t.sender for t in recorder.wait_for_transactions(len(acked), timeout=BOUND)}
    lost = [a for a in acked if a not in got]
    assert not lost, f"acknowledged but not at the backend: {lost}"
    # Sessions of the surviving (and the new) worker all ended well; the
    # broken ones were the victim's.
    who = connect_pids(p)
    broken = [(who.get(cp), err) for s in senders for cp, _, err in s.sessions if err]
    assert all(pid == victim for pid, _ in broken), (victim, broken)
    # The kill landed in sessions (six clients keep both workers busy):
    # theirs dropped, with no reply at all, rather than a refusal.
    assert broken and all(err.startswith(("ConnectionClosed", "ConnectionResetError"))
                          for _, err in broken), broken
    # The new worker serves too.
    c = held_on(p, fresh)
    try:
        c.ehlo()
        assert deliver(c, "fresh@x.test").code == 250
    finally:
        c.close()
    assert p.alive()


# ---- 3. SIGHUP ------------------------------------------------------------


def sighup_to_new_config(p, senders):
    """hostname new.test and a filter refusing bad@x.test; SIGHUP; wait
    until the new generation serves."""
    p.settings["hostname"] = "new.test"
    p.sections = [("plugin access", {"sender_list": str(senders)})]
    p.write_config()
    p.signal(signal.SIGHUP)
    assert p.wait_log(r"SIGHUP: \S+ checked; starting 2 worker\(s\) of generation 2",
                      timeout=BOUND), p.log()
    assert p.wait_log(r"SIGHUP: 2 worker\(s\) of generation 2 serving; 2 of the old one finishing their sessions",
                      timeout=BOUND), p.log()


def check_new_config(p, old):
    after = RawClient(p.port, timeout=BOUND)
    try:
        assert after.banner().expect(220).first.split()[1] == "new.test"
        after.ehlo()
        assert after.cmd("MAIL FROM:<bad@x.test>").code == 550
        assert worker_of(p, after) not in old
    finally:
        after.close()


def check_old_workers_went(p, master, old):
    for pid in old:
        assert p.wait_log(rf"worker \d+ \(pid {pid}\) exited with status 0 after \S+ s, as asked",
                          timeout=BOUND), p.log()
    wait_gone(old)
    kids = wait_children(p, 2, other_than=old)
    assert p.alive() and p.pid == master
    assert all(ids(k, "PPid") == [master] for k in kids)
    # The SIGHUP lines are the master's own.
    assert re.search(rf"portcullis\[{master}\]: \w+: SIGHUP: 2 worker", p.log()), p.log()


def test_sighup_transaction_in_progress_finishes_on_old_config(recorder, proxy, tmp_path):
    senders = tmp_path / "senders"
    senders.write_text("bad@x.test reject\n")
    p = wstart(proxy, hostname="old.test")
    master = p.pid
    old = wait_children(p, 2)
    before = RawClient(p.port, timeout=BOUND)
    try:
        assert before.banner().expect(220).first.split()[1] == "old.test"
        before.ehlo()
        before.cmd("MAIL FROM:<bad@x.test>").expect(250)  # no filter yet
        sighup_to_new_config(p, senders)
        check_new_config(p, old)
        before.cmd("RCPT TO:<b@y.test>").expect(250)
        assert before.message(stuff(BODY) + b".\r\n").code == 250
        before.cmd("QUIT")
    finally:
        before.close()
    assert [t.sender for t in recorder.wait_for_transactions(1, timeout=BOUND)] == ["bad@x.test"]
    check_old_workers_went(p, master, old)


def test_sighup_idle_session_goes_on_with_old_config(recorder, proxy, tmp_path):
    """As with workers = 1 (test_reload.py): a session connected before the
    SIGHUP, between transactions at the time, goes on as it started: its
    next transaction uses the old configuration."""
    senders = tmp_path / "senders"
    senders.write_text("bad@x.test reject\n")
    p = wstart(proxy, hostname="old.test")
    master = p.pid
    old = wait_children(p, 2)
    before = RawClient(p.port, timeout=BOUND)
    try:
        assert before.banner().expect(220).first.split()[1] == "old.test"
        before.ehlo()
        sighup_to_new_config(p, senders)
        check_new_config(p, old)
        # The session from before: the old configuration, no filter.
        assert deliver(before, "bad@x.test").code == 250
        before.cmd("QUIT").expect(221)
    finally:
        before.close()
    assert [t.sender for t in recorder.wait_for_transactions(1, timeout=BOUND)] == ["bad@x.test"]
    check_old_workers_went(p, master, old)


# ---- 4. SIGTERM drains ----------------------------------------------------


def test_sigterm_drains_a_transaction_then_everything_exits_0(recorder, proxy):
    p = wstart(proxy, shutdown_timeout="20s")
    kids = wait_children(p, 2)
    c = RawClient(p.port, timeout=BOUND)
    try:
        c.greet()
        c.cmd("MAIL FROM:<drain@x.test>").expect(250)
        c.cmd("RCPT TO:<b@y.test>").expect(250)
        c.cmd("DATA").expect(354)
        c.send(b"Subject: drain\r\n\r\nfirst half\r\n")
        p.signal(signal.SIGTERM)
        assert p.wait_log(r"signal 15: no new connections; 2 worker\(s\) finishing their sessions",
                          timeout=BOUND), p.log()
        assert p.wait_log(r"signal 15: no new connections; 1 session\(s\) finishing",
                          timeout=BOUND), p.log()
        assert p.alive()
        c.send(b"second half\r\n.\r\n")
        c.reply().expect(250)
        c.cmd("QUIT").expect(221)
    finally:
        c.close()
    [t] = recorder.wait_for_transactions(1, timeout=BOUND)
    assert t.sender == "drain@x.test" and b"second half" in t.data
    assert p.wait(BOUND) == 0, p.log()
    wait_gone(kids)
    assert p.wait_log(r"info: stopped", timeout=1), p.log()


# ---- 5. limits across workers ---------------------------------------------


def burst(port, n):
    """n connections at once, held; returns (clients, first replies)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=BOUND) for _ in range(n)]
    replies = []
    for s in socks:
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        replies.append(data.decode("utf-8", "replace"))
    return socks, replies


def served_by_pids(p, socks, replies):
    """{pid} of the workers that served (220) the given connections."""
    out = set()
    for sk, r in zip(socks, replies):
        if r.startswith("220 "):
            out.add(worker_of(p, sk))
    return out


def close_all(*groups):
    for g in groups:
        for sk in g:
            sk.close()


@pytest.mark.parametrize("settings, served", [
    ({"max_connections_per_ip": "10", "max_connections": "100"}, 10),
    ({"max_connections_per_ip": "100", "max_connections": "5"}, 5),
])
def test_limits_hold_across_workers(recorder, proxy, settings, served):
    """The sessions one worker holds count on the other: it serves only
    what is left of the limit and refuses the rest with 421 4.7.0. Per-worker
    counts would let it serve the whole limit again."""
    n = 30 if served == 10 else 12
    first = served // 2
    p = wstart(proxy, **settings)
    a, b = sorted(wait_children(p, 2))
    socks_a, socks_b = [], []
    try:
        with only_worker(p, a):
            socks_a, replies = burst(p.port, first)
        assert all(r.startswith("220 ") for r in replies), replies
        assert served_by_pids(p, socks_a, replies) == {a}
        with only_worker(p, b):
            socks_b, replies = burst(p.port, n - first)
        ok = [r for r in replies if r.startswith("220 ")]
        refused = [r for r in replies if r.startswith("421 4.7.0 ")]
        assert len(ok) == served - first and len(refused) == n - served, replies
        assert served_by_pids(p, socks_b, replies) == {b}
    finally:
        close_all(socks_a, socks_b)
    assert recorder.wait_all_closed(timeout=BOUND)
    # Every slot comes back once the sessions are gone: the whole limit
    # again, on either worker.
    deadline = time.monotonic() + BOUND
    while True:
        socks, replies = burst(p.port, served)
        close_all(socks)
        if all(r.startswith("220 ") for r in replies):
            break
        assert time.monotonic() < deadline, (replies, p.log())
        time.sleep(0.05)


def test_ratelimit_concurrency_holds_across_workers(recorder, proxy, tmp_path):
    """client_concurrency counts in the shared store (LMDB here): with 4
    allowed, 2 sessions on one worker and 10 more on the other, exactly 2 of
    the 10 are served; the refused ones hear the plugin's 421 4.7.0.
    Per-worker counts would serve 4 of them."""
    p = wstart(proxy, sections=[("plugin ratelimit", {
        "client_concurrency": "4", "store": f"lmdb:{tmp_path}/rl"})])
    a, b = sorted(wait_children(p, 2))
    socks_a, socks_b = [], []
    try:
        with only_worker(p, a):
            socks_a, replies = burst(p.port, 2)
        assert all(r.startswith("220 ") for r in replies), replies
        assert served_by_pids(p, socks_a, replies) == {a}
        with only_worker(p, b):
            socks_b, replies = burst(p.port, 10)
        ok = [r for r in replies if r.startswith("220 ")]
        refused = [r for r in replies if re.match(
            r"421 4\.7\.0 \S+ Too many concurrent connections from your network", r)]
        assert len(ok) == 2 and len(refused) == 8, replies
        assert served_by_pids(p, socks_b, replies) == {b}
    finally:
        close_all(socks_a, socks_b)


# ---- 6. privilege ---------------------------------------------------------


def own_key(tmp_path, tls):
    """A copy of the test key, mode 0600, owned by root."""
    key = tmp_path / "root-only.key"
    shutil.copy(tls.proxy.key, key)
    os.chown(key, 0, 0)
    os.chmod(key, 0o600)
    return str(key)


def assert_nobody(pid):
    assert ids(pid, "Uid") == [NOBODY.pw_uid] * 4, proc_status(pid)["Uid"]
    assert ids(pid, "Gid") == [NOBODY.pw_gid] * 4, proc_status(pid)["Gid"]
    # Root's groups went too: nobody belongs to none but its own.
    assert set(ids(pid, "Groups")) <= {NOBODY.pw_gid}, proc_status(pid)["Groups"]


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@ROOT_ONLY
def test_workers_drop_to_nobody_master_stays_root(recorder, proxy, tmp_path, nobody_dir):
    tls = tls_shared()
    p = wstart(proxy, user="nobody", spool_dir=nobody_dir, tls_cert=tls.proxy.cert,
               tls_key=own_key(tmp_path, tls))
    assert p.wait_log(r"2 workers, as nobody, seccomp on", timeout=1), p.log()
    kids = wait_children(p, 2)
    for k in kids:
        assert_nobody(k)
    assert ids(p.pid, "Uid") == [0, 0, 0, 0]
    # The root-only key was read by the master: STARTTLS works on both.
    for pid in kids:
        c = held_on(p, pid)
        try:
            r = c.cmd("EHLO client.test").expect(250)
            assert "STARTTLS" in r.text, r
            c.cmd("STARTTLS").expect(220)
            c.sock.settimeout(BOUND)
            c.sock = tls.client_context().wrap_socket(c.sock, server_hostname="proxy.test")
            c.ehlo()
            assert deliver(c, f"tls{pid}@x.test").code == 250
            c.cmd("QUIT")
        finally:
            c.close()
    got = recorder.wait_for_transactions(2, timeout=BOUND)
    assert sorted(t.sender for t in got) == sorted(f"tls{pid}@x.test" for pid in kids)


@ROOT_ONLY
def test_single_process_drops_to_nobody(recorder, proxy, nobody_dir):
    p = proxy(workers="1", user="nobody", spool_dir=nobody_dir)
    assert p.wait_log(STARTED, timeout=BOUND), p.log()
    assert children(p.pid) == set()
    assert_nobody(p.pid)
    assert one_message(p.port, "solo@x.test").code == 250
    assert [t.sender for t in recorder.wait_for_transactions(1, timeout=BOUND)] == ["solo@x.test"]


def test_unknown_user_fails_the_check(tmp_path, recorder):
    p = Proxy(tmp_path, recorder.address, workers="2", user="no-such-user-pc18")
    p.write_config()
    rc, out = kp.run_check(p.config_path)
    assert rc != 0, out
    assert "user no-such-user-pc18: no such user" in out, out


# ---- 7. seccomp -----------------------------------------------------------


def forbidden(**keys):
    d = {"path": test_plugin("forbidden"), "execve_helo": "boom.test"}
    d.update(keys)
    return ("plugin forbidden", d)


def test_seccomp_kills_a_worker_that_execs(recorder, proxy):
    p = wstart(proxy, sections=[forbidden()])
    kids = wait_children(p, 2)
    # A session on one worker, and the bad HELO on the other.
    held = held_on_both(p)
    try:
        keep, kpid = held[0]
        bad = next(c for c, pid in held if pid != kpid)
        victim = next(pid for c, pid in held if pid != kpid)
        keep.ehlo()
        with pytest.raises(ConnectionClosed):
            bad.cmd("EHLO boom.test")
        assert p.wait_log(
            rf"worker \d+ \(pid {victim}\) was killed by signal 31 \(Bad system call\) after \S+ s: "
            r"it made a system call outside the seccomp allowlist: seccomp: system call execve "
            r"\(59\) is not allowed", timeout=BOUND), p.log()
        wait_children(p, 2, other_than=(victim,))
        # The other worker's session carries on.
        assert deliver(keep, "kept@x.test").code == 250
        keep.cmd("QUIT").expect(221)
    finally:
        for c, _ in held:
            c.close()
    assert not re.search(r"execve failed", p.log())
    assert kids - {victim} <= children(p.pid)
    assert one_message(p.port, "after@x.test").code == 250


def test_seccomp_no_lets_execve_fail(recorder, proxy):
    p = wstart(proxy, seccomp="no", sections=[forbidden()])
    kids = wait_children(p, 2)
    assert "seccomp on" not in p.log()
    c = RawClient(p.port, timeout=BOUND)
    try:
        c.banner().expect(220)
        pid = worker_of(p, c)
        c.cmd("EHLO boom.test").expect(250)
        assert deliver(c, "lived@x.test").code == 250
    finally:
        c.close()
    assert p.wait_log(rf"portcullis\[{pid}\]: .*forbidden: execve failed: No such file or directory",
                      timeout=BOUND), p.log()
    assert children(p.pid) == kids and not gone(pid)
    assert "killed by signal" not in p.log()


def test_seccomp_single_process_dies_of_sigsys(recorder, solo):
    p = solo(workers="1", sections=[forbidden()]).start()
    c = RawClient(p.port, timeout=BOUND)
    try:
        c.banner().expect(220)
        with pytest.raises(ConnectionClosed):
            c.cmd("EHLO boom.test")
    finally:
        c.close()
    assert p.wait(BOUND) == -signal.SIGSYS, p.log()
    assert re.search(r"seccomp: system call execve \(59\) is not allowed", p.log()), p.log()


# ---- 8. a crash loop backs off --------------------------------------------


def test_crash_loop_backs_off(recorder, proxy):
    p = wstart(proxy)
    kids = wait_children(p, 2)
    keep = sorted(kids)[1]
    dead = set()
    target = sorted(kids)[0]
    for _ in range(3):
        os.kill(target, signal.SIGKILL)
        dead.add(target)
        [target] = wait_children(p, 2, other_than=dead) - {keep}
    found = p.wait_log(r"(\d+) workers died young in a row: the next starts in ([\d.]+) s",
                       timeout=BOUND, count=2)
    assert [(m.group(1), m.group(2)) for m in found[:2]] == [("2", "0.5"), ("3", "1.0")], p.log()
    # The one started after the backoff serves.
    deadline = time.monotonic() + BOUND
    while target not in connect_pids(p).values():
        assert time.monotonic() < deadline, p.log()
        c = RawClient(p.port, timeout=BOUND)
        c.banner().expect(220)
        c.close()
    assert p.alive()


# ---- 9. plugins holding an LMDB environment or a socket -------------------


def greylist_pids(p, what):
    rx = re.compile(rf"portcullis\[(\d+)\]: \w+: .*greylist: {what}")
    return {int(m.group(1)) for m in rx.finditer(p.log())}


def grey_attempt(port):
    c = RawClient(port, timeout=BOUND)
    try:
        c.greet()
        c.cmd("MAIL FROM:<alice@sender.test>").expect(250)
        r = c.cmd("RCPT TO:<bob@rcpt.test>")
        if r.code == 250:
            c.message(stuff(BODY) + b".\r\n").expect(250)
        c.cmd("QUIT")
        return r.code
    finally:
        c.close()


def test_greylist_lmdb_shared_by_workers(recorder, proxy, tmp_path):
    """The triplet one worker stored is known to the other: an early retry
    there, and after the delay each worker passes it (the second finds it
    already retried)."""
    delay = 2.0
    p = wstart(proxy, sections=[("plugin greylist", {
        "delay": "2s", "store": f"lmdb:{tmp_path}/store", "auto_whitelist": "0"})])
    a, b = sorted(wait_children(p, 2))
    t0 = time.monotonic()
    with only_worker(p, a):
        assert grey_attempt(p.port) == 451
    with only_worker(p, b):
        assert grey_attempt(p.port) == 451
    assert greylist_pids(p, "new triplet") == {a}, p.log()
    assert greylist_pids(p, "early retry") == {b}, p.log()
    left = t0 + delay + 0.3 - time.monotonic()
    if left > 0:
        time.sleep(left)
    with only_worker(p, b):
        assert grey_attempt(p.port) == 250
    with only_worker(p, a):
        assert grey_attempt(p.port) == 250
    assert greylist_pids(p, "retried triplet") == {b}, p.log()
    assert greylist_pids(p, "known triplet") == {a}, p.log()
    assert len(recorder.wait_for_transactions(2, timeout=BOUND)) == 2


def test_socket_opened_in_init_works_in_each_worker(recorder, proxy):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    u.settimeout(BOUND)
    try:
        p = wstart(proxy, sections=[forbidden(udp_port=str(u.getsockname()[1]))])
        kids = wait_children(p, 2)
        for pid in kids:
            c = held_on(p, pid)
            try:
                c.cmd(f"EHLO n{pid}.test").expect(250)
            finally:
                c.close()
            got, _ = u.recvfrom(512)
            assert got.decode() == f"{pid} n{pid}.test"
    finally:
        u.close()


# ---- 10. chroot -----------------------------------------------------------


@ROOT_ONLY
def test_chroot_workers(recorder, proxy, nobody_dir):
    jail = tempfile.mkdtemp(prefix="pc-jail-")
    try:
        os.chmod(jail, 0o755)
        p = wstart(proxy, user="nobody", chroot=jail, spool_dir=nobody_dir)
        kids = wait_children(p, 2)
        for k in kids:
            assert os.readlink(f"/proc/{k}/root") == jail
            assert_nobody(k)
        assert os.readlink(f"/proc/{p.pid}/root") == "/"
        for pid in kids:
            c = held_on(p, pid)
            try:
                c.ehlo()
                assert deliver(c, f"jail{pid}@x.test").code == 250
            finally:
                c.close()
        got = recorder.wait_for_transactions(2, timeout=BOUND)
        assert sorted(t.sender for t in got) == sorted(f"jail{pid}@x.test" for pid in kids)
    finally:
        shutil.rmtree(jail, ignore_errors=True)


@ROOT_ONLY
def test_chroot_workers_spool_a_big_message(recorder, proxy, nobody_dir):
    """A message over spool_memory goes to a file in spool_dir. The master
    checked spool_dir outside the jail; the worker must still find it (or
    the start must refuse a spool_dir the jail cannot see): a 451 for every
    big message, found only at run time, is neither."""
    jail = tempfile.mkdtemp(prefix="pc-jail-")
    try:
        os.chmod(jail, 0o755)
        p = wstart(proxy, user="nobody", chroot=jail, spool_dir=nobody_dir, spool_memory="1k")
        c = RawClient(p.port, timeout=BOUND)
        try:
            c.greet()
            c.cmd("MAIL FROM:<big@x.test>").expect(250)
            c.cmd("RCPT TO:<b@y.test>").expect(250)
            big = b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 200
            r = c.message(big + b".\r\n")
        finally:
            c.close()
        assert r.code == 250, (r, p.log())
        [t] = recorder.wait_for_transactions(1, timeout=BOUND)
        assert t.sender == "big@x.test" and len(t.data) > 14000
    finally:
        shutil.rmtree(jail, ignore_errors=True)


# ---- 11. /sessions, portcullis -s, /metrics -------------------------------


def test_sessions_and_metrics_sum_workers(recorder, proxy):
    mport = free_port()
    p = wstart(proxy, metrics_listen=f"127.0.0.1:{mport}")
    kids = wait_children(p, 2)
    held = held_on_both(p, n_min=3)
    try:
        status, body = http_get(mport, "/sessions")
        assert status == 200
        lines = body.splitlines()
        assert lines[0] == f"# {len(held)} session(s)", body
        assert lines[1].split()[0] == "ID" and sum(ln.startswith("#") for ln in lines) == 1, body
        ports = {int(ln.split()[1].rsplit(":", 1)[1]) for ln in lines[2:]}
        assert ports == {c.sock.getsockname()[1] for c, _ in held}, body
        r = subprocess.run([kp.binary_path(), "-s", "-c", p.config_path],
                           capture_output=True, text=True, timeout=BOUND)
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        assert out[0] == f"# {len(held)} session(s)" and len(out) == len(held) + 2, r.stdout
    finally:
        for c, _ in held:
            c.close()
    # A message on each worker, then one more on the first.
    n = 3
    on_each(p, kids, lambda pid: one_message(p.port, f"m{pid}@x.test").expect(250))
    with only_worker(p, min(kids)):
        one_message(p.port, "again@x.test").expect(250)
    sent_by = [int(m.group(1)) for m in
               re.finditer(r"portcullis\[(\d+)\]: \w+: .* status=sent", p.log())]
    assert sorted(sent_by) == sorted([*kids, min(kids)]), p.log()
    deadline = time.monotonic() + BOUND
    while True:
        text = http_get(mport, "/metrics")[1]
        if metric(text, 'portcullis_transactions_total{status="sent"}') == n:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    assert metric(text, "portcullis_workers") == 2, text
    assert metric(text, "portcullis_worker_deaths_total") == 0, text
    victim = sorted(kids)[0]
    os.kill(victim, signal.SIGKILL)
    wait_children(p, 2, other_than=(victim,))
    assert p.wait_log(rf"pid {victim}\) was killed by signal 9", timeout=BOUND)
    text = http_get(mport, "/metrics")[1]
    assert metric(text, 'portcullis_transactions_total{status="sent"}') == n, text
    assert metric(text, "portcullis_worker_deaths_total") == 1, text
    deadline = time.monotonic() + BOUND
    while metric(text, "portcullis_workers") != 2:
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
        text = http_get(mport, "/metrics")[1]


# ---- 12. a worker that cannot start ---------------------------------------


def test_worker_that_cannot_start_stops_the_master(recorder, solo):
    p = solo(workers="2", sections=[forbidden(fail_in_worker="yes")])
    p.write_config()
    rc, out = kp.run_check(p.config_path)
    assert rc == 0, out  # a check passes: only a worker's init refuses
    try:
        p.start()
    except kp.ProxyError:
        pass  # it may stop before it listens
    assert p.wait(BOUND) == 1, p.log()
    log = p.log()
    assert "this plugin refuses to start outside a check" in log, log
    assert "a worker could not start (see above): stopping" in log, log
    assert re.search(r"exited with status 3 \(it could not start\)", log), log


def test_worker_that_cannot_start_fails_a_reload(recorder, proxy):
    p = wstart(proxy, hostname="old.test")
    old = wait_children(p, 2)
    p.sections = [forbidden(fail_in_worker="yes")]
    p.settings["hostname"] = "new.test"
    p.write_config()
    p.signal(signal.SIGHUP)
    assert p.wait_log(r"SIGHUP: a worker of the new configuration could not start \(see above\); "
                      r"the running workers keep serving", timeout=BOUND), p.log()
    assert "this plugin refuses to start outside a check" in p.log()
    # The old workers were never asked to go, and serve on.
    assert children(p.pid) >= old
    for pid in old:
        assert not re.search(rf"\(pid {pid}\) .*as asked", p.log()), p.log()
    c = RawClient(p.port, timeout=BOUND)
    try:
        assert c.banner().expect(220).first.split()[1] == "old.test"
    finally:
        c.close()
    assert p.alive()


# ---- 13. store = memory is per process ------------------------------------


def test_memory_store_refused_with_workers(recorder, solo):
    p = solo(workers="2", store="memory",
             sections=[("plugin greylist", {"delay": "2s", "auto_whitelist": "0"})])
    p.write_config()
    rc, out = kp.run_check(p.config_path)
    assert rc != 0 and "memory" in out, out
    try:
        p.start()
    except kp.ProxyError:
        pass
    assert p.wait(BOUND) not in (0, None), p.log()
    assert "memory" in p.log(), p.log()
