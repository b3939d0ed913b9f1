"""proxy.py - run build/portcullis for a test.

    p = Proxy(workdir, backend="127.0.0.1:2600", max_recipients=3).start()
    p.port            # where it listens (127.0.0.1)
    p.log()           # everything it wrote to stderr so far (after settle)
    p.settle()        # wait until its loop waits: the lines of a pass are out
    p.wait_log(r"status=sent", timeout=5)
    p.summaries()     # the per-transaction summary lines, parsed
    rc = p.stop()     # SIGTERM, wait, SIGKILL after a bound
    p.sanitizer_reports()   # ASan/UBSan/LSan lines in the log

The binary is $PORTCULLIS (default build/portcullis, relative to the current
directory or else to the repository root). Config keys are passed as keyword
arguments and written as "key = value" lines; a value of None leaves the key
out; a list repeats the key (listen). The test defaults keep every timeout
short so a broken daemon fails fast instead of hanging the suite.

Filter sections come after the top-level keys, in chain order:

    Proxy(workdir, backend, sections=[
        ("plugin access", {"sender_list": "/tmp/x/senders"}),
        ("plugin verdict", {"path": test_plugin("verdict"), "stage": "mail"}),
    ])

plugin_dir defaults to $PLUGIN_DIR (build/plugins); test_plugin(name) is the
path of a test plugin built from tests/plugins/NAME.c ($TEST_PLUGIN_DIR).
"""

import os
import re
import signal
import subprocess
import time

from kit.ports import free_port  # noqa: F401 (tests import it from here)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

# Bounds, not expectations: how long we wait before calling the daemon broken.
START_TIMEOUT = 10.0
STOP_GRACE = 10.0  # beyond shutdown_timeout
SETTLE_BOUND = 2.0  # for the loop to finish a pass (Proxy.settle)


def binary_path():
    b = os.environ.get("PORTCULLIS", "build/portcullis")
    if os.path.isabs(b):
        return b
    if os.path.exists(b):
        return os.path.abspath(b)
    return os.path.join(REPO, b)


def plugin_dir():
    d = os.environ.get("PLUGIN_DIR", "build/plugins")
    return d if os.path.isabs(d) else os.path.join(REPO, d)


def test_plugin(name):
    """The path of tests/plugins/NAME.c built as a shared object."""
    d = os.environ.get("TEST_PLUGIN_DIR", "build/tests/plugins")
    d = d if os.path.isabs(d) else os.path.join(REPO, d)
    return os.path.join(d, name + ".so")


test_plugin.__test__ = False  # a helper, not a test, wherever it is imported


def abi_version():
    """The host's plugin ABI, "MAJOR.MINOR", as include/portcullis/plugin.h says."""
    with open(os.path.join(REPO, "include", "portcullis", "plugin.h")) as f:
        text = f.read()
    major = re.search(r"^#define PC_ABI_MAJOR (\d+)$", text, re.M).group(1)
    minor = re.search(r"^#define PC_ABI_MINOR (\d+)$", text, re.M).group(1)
    return major + "." + minor


def sections_text(sections):
    """[header] blocks from (header, {key: value}) pairs, in order."""
    out = []
    for header, keys in sections or ():
        out.append(f"\n[{header}]")
        out.append(config_text(keys).rstrip("\n"))
    return "\n".join(out) + "\n" if out else ""


def closed_port(host="127.0.0.1"):
    """A port that refuses connections (nothing listens there)."""
    return free_port(host)


def run_check(config_path, *extra, timeout=20):
    """portcullis -t -c FILE [extra...]: (returncode, stdout + stderr)."""
    p = subprocess.run(
        [binary_path(), "-t", "-c", config_path, *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
    )
    return p.returncode, p.stdout.decode("utf-8", "replace")


def run(*args, timeout=20):
    """portcullis ARGS...: (returncode, stdout, stderr)."""
    p = subprocess.run(
        [binary_path(), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=timeout,
    )
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def config_text(settings):
    """key = value lines from a dict (None: left out; list: repeated)."""
    out = []
    for k, v in settings.items():
        if v is None:
            continue
        for item in v if isinstance(v, (list, tuple)) else [v]:
            out.append(f"{k} = {item}")
    return "\n".join(out) + "\n"


_SUMMARY_KV = re.compile(r'(\w[\w-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_summary(line):
    """A summary line as a dict (quotes removed from quoted values)."""
    d = {}
    for k, v in _SUMMARY_KV.findall(line):
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = v[1:-1]
        d[k] = v
    return d


def listening(port):
    """True when some socket listens on 127.0.0.1:port (or the wildcard).

    Readiness is read from /proc/net/tcp instead of by connecting: a probe
    connection would make the proxy open a backend session that the test's
    recorder would then count."""
    want = f":{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for ln in f:
                parts = ln.split()
                local, state = parts[1], parts[3]
                if state == "0A" and local.endswith(want) and local[:8] in ("0100007F", "00000000"):
                    return True
    except OSError:
        return False
    return False


def process_tree(pid):
    """pid and its descendants (the workers), from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def waiting_in_loop(pid):
    """Whether pid sleeps in epoll_wait, or is gone (its main thread's wchan)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X") or (state == "S" and "epoll" in wchan)


class ProxyError(Exception):
    pass


class Proxy:
    def __init__(self, workdir, backend, args=(), sections=None, **settings):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.args = list(args)
        self.settings = {
            "listen": f"{self.host}:{self.port}",
            "backend": backend,
            "hostname": "proxy.test",
            "timeout": "10s",
            "data_timeout": "20s",
            "backend_connect_timeout": "5s",
            "backend_timeout": "5s",
            "backend_data_timeout": "10s",
            "shutdown_timeout": "2s",
            "spool_dir": self.workdir,
            "plugin_dir": plugin_dir(),
            # The machine's resolver must not decide what XCLIENT NAME says;
            # the rDNS tests turn it on against the kit's DNS responder.
            "client_rdns": "no",
        }
        self.sections = list(sections or [])
        self.settings.update(settings)
        self.config_path = os.path.join(self.workdir, "portcullis.conf")
        self.log_path = os.path.join(self.workdir, "portcullis.log")
        self.proc = None
        self.returncode = None
        self.killed = False

    @property
    def hostname(self):
        return self.settings.get("hostname")

    @property
    def address(self):
        return (self.host, self.port)

    def write_config(self):
        with open(self.config_path, "w") as f:
            f.write(config_text(self.settings))
            f.write(sections_text(self.sections))

    def start(self):
        self.write_config()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary_path(), "-c", self.config_path, *self.args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not listening(self.port):
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise ProxyError(f"portcullis exited with {self.proc.returncode} at start:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ProxyError(f"portcullis did not listen on {self.port} within {START_TIMEOUT}s:\n{self.log()}")
            time.sleep(0.01)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        """Wait for the process to exit; returns its code or None."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace=None):
        """SIGTERM, wait (shutdown_timeout + a bound), then SIGKILL. Returns
        the exit code (negative: killed by that signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if grace is None:
                grace = STOP_GRACE
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(10)
        self.returncode = self.proc.returncode
        if not self._log.closed:
            self._log.close()
        return self.returncode

    def settle(self, timeout=SETTLE_BOUND):
        """Wait until every process of the daemon waits in epoll_wait (or
        is gone). The log lines of a loop pass are written when the pass
        ends, which can be just after the reply a client got in that pass
        (issue 19): once the loop waits again, they are all in the log.
        Not a time: a state, bounded (then the log is read as it is)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(waiting_in_loop(pid) for pid in process_tree(self.proc.pid)):
                return
            time.sleep(0.001)

    def log(self):
        self.settle()
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=5.0, count=1):
        """Wait until the log matches pattern (a regex) count times; returns
        the list of matches (maybe shorter after timeout)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = list(rx.finditer(self.log()))
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def summaries(self):
        """The summary lines (those with status=) parsed into dicts."""
        return [parse_summary(ln) for ln in self.log().splitlines() if " status=" in ln]

    def wait_summaries(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            s = self.summaries()
            if len(s) >= n or time.monotonic() > deadline:
                return s
            time.sleep(0.02)

    def sanitizer_reports(self):
        return [ln for ln in self.log().splitlines() if any(m in ln for m in SANITIZER_MARKERS)]

    def open_fds(self):
        """Targets of the daemon's open file descriptors (Linux /proc)."""
        out = []
        d = f"/proc/{self.proc.pid}/fd"
        try:
            for fd in os.listdir(d):
                try:
                    out.append(os.readlink(os.path.join(d, fd)))
                except OSError:
                    pass
        except OSError:
            pass
        return out


def stopped_problems(p):
    """What is wrong with a stopped proxy, as a list of strings."""
    problems = []
    reports = p.sanitizer_reports()
    if reports:
        problems.append("sanitizer report in the proxy's stderr:\n  " + "\n  ".join(reports[:20]))
    if p.killed:
        problems.append("the proxy did not exit after SIGTERM and was killed")
    elif p.returncode != 0:
        problems.append(f"the proxy exited with status {p.returncode} after SIGTERM (expected 0)")
    return problems


def stop_all(started, failed):
    """Stop the proxies a test started; if anything is wrong with them (or
    the test failed), print their logs; return the problems found."""
    import sys

    problems = []
    for p in started:
        if p.proc is None:
            continue
        p.stop()
        problems += stopped_problems(p)
    if problems or failed:
        for p in started:
            sys.stderr.write(f"\n----- portcullis log ({p.log_path}) -----\n{p.log()[-20000:]}\n")
    return problems
