"""systemd integration without systemd (issue 17, item 3).

The daemon's sd_notify(3) messages are caught on a unix datagram socket the
test binds and names in $NOTIFY_SOCKET, as systemd would: READY=1 (with
MAINPID) once the listeners are bound, RELOADING=1 (with MONOTONIC_USEC)
and READY=1 around each SIGHUP, STATUS= with the open sessions or the
reason of a failed reload, STOPPING=1 at SIGTERM. portcullis -R, the unit's
ExecReload=, is run as systemd runs it ($MAINPID, $RUNTIME_DIRECTORY) and
must exit 0 on a good reload and 1 with the reason on a bad one. A TLS key
named through ${CREDENTIALS_DIRECTORY} (LoadCredential=) is read from
there. make run stops with status 0 on Ctrl-C, typed on a terminal (a pty).
"""

import os
import pty
import re
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

from kit.ports import free_port
from kit.proxy import REPO, binary_path, config_text, listening, run_check
from kit import tlskit

BOUND = 10.0
# STATUS= is brought up to date every 5 seconds (notify.c).
STATUS_PERIOD = 5.0


class Notifications:
    """The service manager's end of $NOTIFY_SOCKET: each datagram is one
    message, "KEY=VALUE" lines, read into a dict."""

    def __init__(self):
        # sun_path is short (108): a directory of its own under /tmp.
        self.dir = tempfile.mkdtemp(prefix="pcn", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.seen = []

    def next(self, timeout=BOUND):
        """The next message, or None after timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        msg = dict(ln.split("=", 1) for ln in data.decode().split("\n") if ln)
        self.seen.append(msg)
        return msg

    def until(self, pred, timeout=BOUND):
        """Messages up to and including the first that pred accepts; fails
        the test if none does within timeout."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            m = self.next(max(left, 0.01)) if left > 0 else None
            if m is None:
                pytest.fail(f"no such notification within {timeout}s; got {got}")
            got.append(m)
            if pred(m):
                return got

    def pending(self):
        """What is queued now, without waiting."""
        out = []
        while True:
            self.sock.setblocking(False)
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return out
            out.append(dict(ln.split("=", 1) for ln in data.decode().split("\n") if ln))

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify(monkeypatch):
    n = Notifications()
    monkeypatch.setenv("NOTIFY_SOCKET", n.path)
    yield n
    n.close()


@pytest.fixture
def rundir(tmp_path, monkeypatch):
    """$RUNTIME_DIRECTORY, as RuntimeDirectory= gives it."""
    d = tmp_path / "run"
    d.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(d))
    return d


def ready(notify, p):
    [m] = notify.until(lambda m: "READY" in m)
    assert m["READY"] == "1" and m["MAINPID"] == str(p.pid), m
    return m


def hup(p, n):
    """SIGHUP and wait for the n-th "SIGHUP:" line of the log."""
    p.signal(signal.SIGHUP)
    got = p.wait_log(r"SIGHUP: [^\n]*", count=n, timeout=BOUND)
    assert len(got) >= n, p.log()
    return got[n - 1].group(0)


def reload_client(env_extra, drop=()):
    env = {k: v for k, v in os.environ.items() if k not in ("MAINPID", "NOTIFY_SOCKET", *drop)}
    env.update(env_extra)
    p = subprocess.run([binary_path(), "-R"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def state(d):
    with open(os.path.join(d, "state")) as f:
        return dict(ln.rstrip("\n").split("=", 1) for ln in f)


def started(d):
    """The state file once the daemon has written it (it listens a moment
    before: the file goes with READY=1)."""
    deadline = time.monotonic() + BOUND
    while not os.path.exists(os.path.join(d, "state")):
        assert time.monotonic() < deadline, f"no {d}/state"
        time.sleep(0.01)
    return state(d)


# ---- sd_notify ------------------------------------------------------------------


def test_ready_once_listening(notify, proxy):
    p = proxy()
    m = ready(notify, p)
    # The first word the manager hears is READY, and the port then accepts.
    assert notify.seen[0] is m
    assert m["STATUS"] == "serving: 0 session(s) open", m
    assert listening(p.port)


def test_no_ready_when_a_listener_cannot_be_bound(notify, tmp_path):
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        conf = tmp_path / "p.conf"
        conf.write_text(config_text({"listen": f"127.0.0.1:{busy.getsockname()[1]}",
                                     "backend": "127.0.0.1:10025", "hostname": "mx.test"}))
        p = subprocess.run([binary_path(), "-c", str(conf)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        assert p.returncode == 1, p.stdout.decode()
    finally:
        busy.close()
    # It has exited: everything it sent is queued.
    assert [m for m in notify.pending() if "READY" in m] == []


def test_reload_good_then_failed_then_good(notify, proxy):
    p = proxy()
    ready(notify, p)

    before = time.monotonic_ns() // 1000
    assert "read again" in hup(p, 1)
    got = notify.until(lambda m: "READY" in m)
    after = time.monotonic_ns() // 1000
    assert got[0]["RELOADING"] == "1", got
    assert before <= int(got[0]["MONOTONIC_USEC"]) <= after, (before, got[0], after)
    assert got[-1]["READY"] == "1" and got[-1]["STATUS"] == "serving: 0 session(s) open", got

    p.settings["max_recipient"] = "5"  # a typo: the reload fails
    p.write_config()
    line = hup(p, 2)
    why = re.match(r"SIGHUP: (.*); keeping the running configuration", line).group(1)
    assert 'unknown key "max_recipient"' in why, line
    got = notify.until(lambda m: "READY" in m)
    assert got[0]["RELOADING"] == "1", got
    assert got[-1]["STATUS"] == f"reload failed: {why}; 0 session(s) open", got

    del p.settings["max_recipient"]
    p.write_config()
    hup(p, 3)
    got = notify.until(lambda m: "READY" in m)
    assert got[-1]["STATUS"] == "serving: 0 session(s) open", got


def test_status_follows_the_sessions_not_each_connection(notify, proxy, client):
    p = proxy()
    ready(notify, p)
    clients = []
    for _ in range(6):
        c = client(p)
        c.greet()
        clients.append(c)
    got = notify.until(lambda m: m.get("STATUS") == "serving: 6 session(s) open",
                       timeout=2 * STATUS_PERIOD + BOUND)
    # Looked at on a timer, not sent per connection.
    assert len([m for m in got if "STATUS" in m]) <= 2, got
    for c in clients:
        c.cmd("QUIT").expect(221)
    notify.until(lambda m: m.get("STATUS") == "serving: 0 session(s) open",
                 timeout=2 * STATUS_PERIOD + BOUND)


def test_stopping_at_sigterm(notify, proxy, client):
    p = proxy()
    ready(notify, p)
    assert p.stop() == 0
    [m] = [m for m in notify.pending() if "STOPPING" in m]
    assert m["STOPPING"] == "1" and m["STATUS"] == "stopping: 0 session(s) finishing", m


def test_without_a_manager_listening(monkeypatch, proxy, client, recorder, tmp_path):
    """A NOTIFY_SOCKET nobody binds changes nothing: mail flows, a reload
    works, SIGTERM stops with 0 (the proxy fixture checks that)."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    p = proxy()
    c = client(p)
    c.greet()
    c.envelope()
    c.message(b"Subject: x\r\n\r\nx\r\n.\r\n").expect(250)
    c.cmd("QUIT").expect(221)
    assert "read again" in hup(p, 1)


# ---- portcullis -R: ExecReload= ---------------------------------------------------


def test_reload_client_exit_codes(rundir, proxy):
    p = proxy()
    assert started(rundir) == {"pid": str(p.pid), "reloads": "0", "result": "started", "error": ""}

    rc, out, err = reload_client({"MAINPID": str(p.pid)})
    assert (rc, out, err) == (0, "", "")
    assert state(rundir)["reloads"] == "1" and state(rundir)["result"] == "ok"
    assert "read again" in p.wait_log(r"SIGHUP: [^\n]*")[0].group(0)

    p.settings["max_recipient"] = "5"
    p.write_config()
    rc, out, err = reload_client({"MAINPID": str(p.pid)})
    line = p.wait_log(r"SIGHUP: [^\n]*", count=2)[1].group(0)
    why = re.match(r"SIGHUP: (.*); keeping the running configuration", line).group(1)
    assert rc == 1 and err == f"portcullis -R: reload failed: {why}\n", (rc, err)
    assert state(rundir)["result"] == "failed" and state(rundir)["error"] == why

    # By hand, without $MAINPID: the pid the state file names.
    del p.settings["max_recipient"]
    p.write_config()
    rc, out, err = reload_client({})
    assert (rc, err) == (0, "")
    assert state(rundir) == {"pid": str(p.pid), "reloads": "3", "result": "ok", "error": ""}

    assert p.stop() == 0
    assert not os.path.exists(rundir / "state")


def test_reload_client_reports_a_filter_that_failed(rundir, proxy, tmp_path):
    script = tmp_path / "policy.lua"
    script.write_text("function on_mail(tx, s) end\n")
    p = proxy(sections=[("lua policy", {"script": str(script)})])
    started(rundir)
    script.write_text("function on_mail(tx, s\n")  # sections as they were
    rc, out, err = reload_client({"MAINPID": str(p.pid)})
    assert rc == 1, err
    assert err.startswith("portcullis -R: reload failed: [lua policy]: "), err
    assert "policy.lua" in err, err
    assert "1 failed" in p.wait_log(r"SIGHUP: [^\n]*")[0].group(0)


def test_reload_client_refuses_what_it_cannot_trust(rundir, proxy, tmp_path):
    p = proxy()
    started(rundir)
    # A $MAINPID the state file does not name: no signal is sent.
    rc, _, err = reload_client({"MAINPID": str(os.getpid())})
    assert rc == 1 and "not MAINPID" in err, err
    rc, _, err = reload_client({"MAINPID": "12x"})
    assert rc == 1 and "not a process id" in err, err
    # No daemon there (no state file).
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = reload_client({"RUNTIME_DIRECTORY": str(empty)})
    assert rc == 1 and f"{empty}/state: No such file or directory" in err, err
    assert state(rundir)["reloads"] == "0"
    assert p.wait_log(r"SIGHUP:", timeout=0.5) == [], p.log()


def test_reload_client_without_a_daemon_uses_run_dir(tmp_path):
    """Without $RUNTIME_DIRECTORY, -R looks in the run_dir -V names."""
    v = subprocess.run([binary_path(), "-V"], stdout=subprocess.PIPE, timeout=20).stdout.decode()
    run_dir = dict(ln.split(" ", 1) for ln in v.splitlines()[1:])["run_dir"]
    if os.path.exists(os.path.join(run_dir, "state")):
        pytest.skip(f"a portcullis runs here ({run_dir}/state)")
    rc, _, err = reload_client({}, drop=("RUNTIME_DIRECTORY",))
    assert rc == 1 and f"{run_dir}/state: No such file or directory" in err, err


# ---- LoadCredential= --------------------------------------------------------------


def test_tls_key_from_the_credentials_directory(monkeypatch, proxy, recorder, tmp_path):
    kit = tlskit.shared()
    creds = tmp_path / "credentials"
    creds.mkdir()
    shutil.copy(kit.proxy.cert, creds / "tls_cert")
    shutil.copy(kit.proxy.key, creds / "tls_key")
    keys = {"tls_cert": "${CREDENTIALS_DIRECTORY}/tls_cert",
            "tls_key": "${CREDENTIALS_DIRECTORY}/tls_key"}

    # Not under systemd: the variable is not set, and the check says so.
    conf = tmp_path / "p.conf"
    conf.write_text(config_text({"listen": f"127.0.0.1:{free_port()}", "backend": "127.0.0.1:10025",
                                 "hostname": "mx.test", **keys}))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    rc, out = run_check(str(conf))
    assert rc == 1, out
    assert re.search(r"p\.conf:\d+: tls_cert \$\{CREDENTIALS_DIRECTORY\}/tls_cert: "
                     r"\$CREDENTIALS_DIRECTORY is not set", out), out

    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    rc, out = run_check(str(conf))
    assert rc == 0, out
    p = proxy(**keys)
    with smtplib.SMTP(p.host, p.port, timeout=BOUND) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        assert s.starttls(context=kit.client_context())[0] == 220
        s.ehlo("client.test")
        assert s.sendmail("a@client.test", ["b@rcpt.test"], b"Subject: x\r\n\r\nx\r\n") == {}
    assert p.wait_summaries(1)[0]["tls"].startswith("TLSv1."), p.log()


# ---- make run -----------------------------------------------------------------------


def test_deps_run_mode_is_only_what_running_takes():
    def listed(*args):
        p = subprocess.run(["sh", os.path.join(REPO, "tools", "deps.sh"), *args], stdout=subprocess.PIPE,
                           env=dict(os.environ, DEPS_LIST="1"), timeout=20)
        assert p.returncode == 0
        return set(p.stdout.decode().split())

    run, full = listed("--run"), listed()
    assert {"libevent-dev", "libssl-dev", "liblua5.4-dev", "libsystemd-dev", "python3-aiosmtpd"} <= run
    assert run <= full, run - full
    for peer in ("postfix", "haproxy", "redis-server", "rspamd", "clamav-daemon", "python3-pytest",
                 "libcmocka-dev", "clang-format"):
        assert peer in full and peer not in run, peer


def test_make_run_exits_0_on_ctrl_c(recorder):
    """make run on a terminal (a pty), Ctrl-C typed once the proxy listens:
    the proxy drains, and make exits 0."""
    build = os.path.dirname(binary_path())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(LISTEN=f"127.0.0.1:{port}", BACKEND=recorder.address)
    pid, fd = pty.fork()
    if pid == 0:  # the child: make, on the pty
        try:
            os.chdir(REPO)
            os.execvpe("make", ["make", "--no-print-directory", "run", f"BUILD={build}"], env)
        finally:
            os._exit(127)
    out = b""
    typed = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    break  # the pty closed: make is done
                if not data:
                    break
                out += data
            if not typed and b" started, backend " in out and listening(port):
                os.write(fd, b"\x03")
                typed = True
    finally:
        # The pty closes as make ends; its exit comes a moment later.
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if done == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("make run did not end:\n" + out.decode("utf-8", "replace"))
        os.close(fd)
    text = out.decode("utf-8", "replace")
    assert typed, text
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "signal 2: no new connections" in text and "info: stopped" in text, text
    assert not listening(port)


# ---- with workers (issue 18) -------------------------------------------------------


def test_workers_notify_ready_reload_and_stopping(notify, rundir, proxy, client):
    """workers = 2: READY (MAINPID the master) once the first workers are
    ready; STATUS counts every worker's sessions; portcullis -R waits for
    the new generation (0), or says why a reload failed (1); STOPPING at
    SIGTERM."""
    p = proxy(workers="2")
    m = ready(notify, p)
    assert m["STATUS"] == "serving: 0 session(s) open", m
    assert re.search(r"worker 1 \(pid \d+\) started", p.log()), p.log()
    clients = []
    for _ in range(6):
        c = client(p)
        c.greet()
        clients.append(c)
    notify.until(lambda m: m.get("STATUS") == "serving: 6 session(s) open",
                 timeout=2 * STATUS_PERIOD + BOUND)
    for c in clients:
        c.cmd("QUIT").expect(221)

    rc, out, err = reload_client({"MAINPID": str(p.pid)})
    assert (rc, err) == (0, ""), (rc, err, p.log())
    assert re.search(r"SIGHUP: 2 worker\(s\) of generation 2 serving", p.log()), p.log()
    assert state(rundir)["result"] == "ok"
    got = notify.until(lambda m: "READY" in m)
    assert any(m.get("RELOADING") == "1" for m in got), got

    p.settings["max_recipient"] = "5"  # a typo: the master's check fails
    p.write_config()
    rc, out, err = reload_client({"MAINPID": str(p.pid)})
    assert rc == 1 and 'unknown key "max_recipient"' in err, (rc, err)
    assert state(rundir)["result"] == "failed"

    assert p.stop() == 0
    stopping = [m for m in notify.pending() if "STOPPING" in m]
    assert stopping and stopping[0]["STOPPING"] == "1", notify.seen
