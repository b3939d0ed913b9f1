"""spamd.py - a private SpamAssassin spamd (Debian's /usr/sbin/spamd) on loopback.

    with Spamd(workdir=tmp) as s:
        s.port                     # TCP, 127.0.0.1
        s.socket                   # a UNIX socket it listens on too
        s.check(b"...message...")  # ("True", 1000.0, 5.0, ["GTUBE", ...])
        s.stop(); s.start()        # the same port and socket: an outage
        s.pids()                   # the parent and its children (for CPU shares)
        s.log()                    # what it wrote to stderr

workdir must be reachable by nobody (the children run as nobody and read
the site configuration): by default a new directory under /tmp.

Started as /work/shared/PEERS.md says: its own site configuration
directory (a local.cf that turns off Bayes, DNS, RBLs, Razor and Pyzor, and
a copy of /etc/spamassassin/*.pre so the usual plugins load), the rules
Debian ships in /usr/share/spamassassin (no sa-update), -u nobody, logs to
stderr. The port opens before the children can scan, so start() polls with
"PING SPAMC/1.5" until the answer is PONG. It takes a few seconds: start one
per test module, not per test. Stopped by its PID (SIGTERM, then SIGKILL
after a bound).
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

from kit.ports import free_port
from kit.server import PrivateServer

SPAMD = "/usr/sbin/spamd"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

LOCAL_CF = """\
# Written by tests/kit/spamd.py: no network, no learning.
use_bayes 0
bayes_auto_learn 0
dns_available no
skip_rbl_checks 1
use_razor2 0
use_pyzor 0
use_auto_whitelist 0
"""


def available():
    return os.access(SPAMD, os.X_OK)


class Spamd(PrivateServer):
    stop_timeout = STOP_TIMEOUT

    def __init__(self, workdir=None, port=None, children=2):
        self._own_dir = workdir is None
        self.dir = str(workdir) if workdir else tempfile.mkdtemp(prefix="pc-spamd-")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.socket = os.path.join(self.dir, "spamd.sock")
        self.children = children
        self.proc = None
        self._log = os.path.join(self.dir, "spamd-%d.log" % self.port)
        self._pidfile = os.path.join(self.dir, "spamd.pid")
        self._setup()

    def _setup(self):
        etc = os.path.join(self.dir, "etc")
        home = os.path.join(self.dir, "home")
        os.makedirs(etc, exist_ok=True)
        os.makedirs(home, exist_ok=True)
        for pre in glob.glob("/etc/spamassassin/*.pre"):
            shutil.copy(pre, etc)
        with open(os.path.join(etc, "local.cf"), "w") as f:
            f.write(LOCAL_CF)
        # The children run as nobody: they must reach the socket's directory
        # and their home.
        os.chmod(self.dir, 0o755)
        os.chmod(home, 0o777)

    def start(self):
        if self.proc is not None:
            return self
        home = os.path.join(self.dir, "home")
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass
        args = [SPAMD, "-L", "-x", "-i", "127.0.0.1", "-p", str(self.port),
                "--listen=" + self.socket, "-A", "127.0.0.1", "-u", "nobody",
                "-H", home, "--siteconfigpath=" + os.path.join(self.dir, "etc"),
                "-r", self._pidfile, "-s", "stderr", "-m", str(self.children),
                "--min-children=%d" % self.children]
        logf = open(self._log, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        logf.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError("spamd exited at start:\n" + self.log())
            if self.ping():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("spamd did not answer PING:\n" + self.log())

    def ping(self):
        try:
            return b"PONG" in self.request(b"PING SPAMC/1.5\r\n\r\n", timeout=2)
        except OSError:
            return False

    def request(self, data, timeout=30):
        """Send data over TCP, read to EOF: the raw reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                d = s.recv(65536)
                if not d:
                    return out
                out += d

    def check(self, message):
        """SYMBOLS for message (bytes, CRLF lines): (verdict, score,
        threshold, symbols)."""
        head = b"SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(message)
        reply = self.request(head + message).decode("latin-1")
        lines = reply.split("\r\n")
        spam = next(ln for ln in lines if ln.startswith("Spam:"))
        verdict, rest = spam[len("Spam:"):].split(";")
        score, thr = rest.split("/")
        return verdict.strip(), float(score), float(thr), lines[-1].split(",")

    def pids(self):
        """The parent's PID and its children's (from /proc)."""
        if self.proc is None:
            return []
        out = [self.proc.pid]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                out.append(int(stat.split("/")[2]))
        return out


    def log(self):
        try:
            with open(self._log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class FakeSpamd:
    """A spamd stand-in on 127.0.0.1 that misbehaves on purpose, and
    records each request it read (bytes up to EOF, Content-length or a
    bound, whichever comes first).

        f = FakeSpamd(mode="silent").start()   # reads, never answers
        FakeSpamd(mode="answer", answer=b"garbage\\r\\n")  # this, then close
        FakeSpamd(mode="answer", answer=REAL_HAM)          # a good answer
        f.port; f.requests; f.connections; f.stop()

    One thread accepts, one per connection; stop() closes every socket.
    """

    def __init__(self, mode="silent", answer=b""):
        import threading
        self.mode = mode
        self.answer = answer
        self.port = free_port()
        self.requests = []
        self.connections = 0
        self._lock = threading.Lock()
        self._socks = []
        self._stop = False
        self._srv = None

    def start(self):
        import threading
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", self.port))
        self._srv.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        import threading
        while not self._stop:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._socks.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _read_request(self, c):
        data = b""
        want = None
        while True:
            if want is None and b"\r\n\r\n" in data:
                head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
                for ln in head.split("\r\n")[1:]:
                    if ln.lower().startswith("content-length:"):
                        want = len(data.split(b"\r\n\r\n", 1)[0]) + 4 + int(ln.split(":")[1])
            if want is not None and len(data) >= want:
                return data
            try:
                d = c.recv(65536)
            except OSError:
                return data
            if not d:
                return data
            data += d

    def _serve(self, c):
        req = self._read_request(c)
        with self._lock:
            self.requests.append(req)
        if self.mode == "silent":
            try:
                while c.recv(65536):
                    pass
            except OSError:
                pass
            return
        try:
            c.sendall(self.answer)
            c.close()
        except OSError:
            pass

    def stop(self):
        self._stop = True
        try:
            self._srv.close()
        except OSError:
            pass
        with self._lock:
            for c in self._socks:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    c.close()
                except OSError:
                    pass
