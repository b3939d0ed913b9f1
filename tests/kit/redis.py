"""redis.py - a private redis-server (Debian's /usr/bin/redis-server) on loopback.

    with Redis(workdir=tmp) as r:
        r.url                      # "redis://127.0.0.1:PORT/0" for store =
        r.cmd("GET", "k")          # one command over RESP: str, int, list, None
        r.keys("greylist:*")       # sorted list of keys
        r.stop(); r.start()        # same port, same (empty) data: an outage
        r.log()                    # its log file

No persistence (--save '' --appendonly no), bound to 127.0.0.1 on a free
port, run in the foreground as a child of the test and stopped by its PID
(SIGTERM, then SIGKILL after a bound). Nothing outside workdir (a temp dir
when none is given, removed at close).
"""

import os
import socket
import subprocess
import tempfile
import time

from kit.ports import free_port
from kit.server import PrivateServer

REDIS = "/usr/bin/redis-server"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = str(a)
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("redis closed the connection")
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("redis closed the connection")
            self.buf += d
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RedisError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode("latin-1")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ConnectionError("bad RESP line %r" % line)


class RedisError(Exception):
    pass


class Redis(PrivateServer):
    stop_timeout = STOP_TIMEOUT

    def __init__(self, workdir=None, port=None):
        self._own_dir = workdir is None
        self.dir = str(workdir) if workdir else tempfile.mkdtemp(prefix="pc-redis-")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.proc = None
        self._log = os.path.join(self.dir, "redis-%d.log" % self.port)

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        if self.proc is not None:
            return self
        args = [REDIS, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
                "--logfile", self._log, "--protected-mode", "no"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited at start:\n" + self.log())
            try:
                if self.cmd("PING") == "PONG":
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING:\n" + self.log())


    def cmd(self, *args):
        """One command on a fresh connection; its reply (RedisError on -ERR)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(_encode(args))
            return _Reader(s).reply()

    def keys(self, pattern="*"):
        return sorted(self.cmd("KEYS", pattern))

    def log(self):
        try:
            with open(self._log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
