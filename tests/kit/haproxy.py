"""haproxy.py - HAProxy (Debian's /usr/sbin/haproxy) in front of the proxy.

    with HAProxy(target=("127.0.0.1", p.port), version=2, workdir=tmp) as hp:
        c = RawClient(hp.port)       # arrives at the target with a PROXY v2 header
        hp.log()                     # HAProxy's own log (one tcplog line per session)

A TCP frontend on 127.0.0.1:<free port> forwards every connection to one
server, `target`, with `send-proxy` (version=1) or `send-proxy-v2`
(version=2), or without a header (version=None). `source` sets the address
HAProxy connects to the target from (e.g. "127.0.0.2" to look untrusted).

HAProxy runs in the foreground (-db) as a child of the test, stopped by its
PID (SIGUSR1: soft stop, then SIGTERM, then SIGKILL, each after a bound); its
log goes to stdout (`log stdout format raw`), which is a file in workdir.
No health checks (they would be connections the target counts), no stats
socket, no user switch, no pid file, nothing outside workdir (a temp dir
when none is given, removed at stop unless PORTCULLIS_KEEP_HAPROXY is set).

Pure helpers for hand-made headers (no HAProxy involved):

    proxy_v1("192.0.2.55", 40000, "127.0.0.1", 2526)   # b"PROXY TCP4 ...\\r\\n"
    proxy_v2("192.0.2.55", 40000, "127.0.0.1", 2526)   # binary v2 PROXY header
    proxy_v2_local()                                    # v2 LOCAL command
    parse_proxy_header(data) -> (dict, rest)            # what a listener got
"""

import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

from kit.ports import free_port
from kit.proxy import listening

HAPROXY = "/usr/sbin/haproxy"

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


# ---- hand-made PROXY headers ------------------------------------------------------


def proxy_v1(src, sport, dst, dport, proto=None):
    """A PROXY protocol v1 line. proto: TCP4/TCP6 (from src) or UNKNOWN."""
    if proto is None:
        proto = "TCP6" if ":" in src else "TCP4"
    if proto == "UNKNOWN":
        return b"PROXY UNKNOWN\r\n"
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src, dst, sport, dport)).encode()


def proxy_v2(src, sport, dst, dport, command=1, tlvs=b""):
    """A PROXY protocol v2 header (PROXY command, TCP over IPv4/IPv6)."""
    a = ipaddress.ip_address(src)
    b = ipaddress.ip_address(dst)
    if a.version == 4:
        fam = 0x11
        body = a.packed + b.packed + struct.pack("!HH", sport, dport)
    else:
        fam = 0x21
        body = a.packed + b.packed + struct.pack("!HH", sport, dport)
    body += tlvs
    return V2_SIG + bytes([0x20 | command, fam]) + struct.pack("!H", len(body)) + body


def proxy_v2_local():
    """A v2 LOCAL header (health check: use the socket's own address)."""
    return V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)


def parse_proxy_header(data):
    """(fields, rest) for a PROXY v1 or v2 header at the start of data;
    (None, data) when there is none (or it is incomplete)."""
    if data.startswith(b"PROXY "):
        i = data.find(b"\r\n")
        if i < 0:
            return None, data
        parts = data[:i].decode("ascii").split(" ")
        f = {"version": 1, "proto": parts[1]}
        if parts[1] != "UNKNOWN":
            f.update(src=parts[2], dst=parts[3], sport=int(parts[4]), dport=int(parts[5]))
        return f, data[i + 2:]
    if data.startswith(V2_SIG) and len(data) >= 16:
        ver_cmd, fam = data[12], data[13]
        (n,) = struct.unpack("!H", data[14:16])
        if len(data) < 16 + n:
            return None, data
        body = data[16:16 + n]
        f = {"version": 2, "command": "PROXY" if ver_cmd & 0xF == 1 else "LOCAL", "family": fam}
        if fam >> 4 == 1 and n >= 12:
            f.update(src=str(ipaddress.IPv4Address(body[0:4])), dst=str(ipaddress.IPv4Address(body[4:8])),
                     sport=struct.unpack("!H", body[8:10])[0], dport=struct.unpack("!H", body[10:12])[0])
            f["tlvs"] = body[12:]
        elif fam >> 4 == 2 and n >= 36:
            f.update(src=str(ipaddress.IPv6Address(body[0:16])), dst=str(ipaddress.IPv6Address(body[16:32])),
                     sport=struct.unpack("!H", body[32:34])[0], dport=struct.unpack("!H", body[34:36])[0])
            f["tlvs"] = body[36:]
        return f, data[16 + n:]
    return None, data


# ---- HAProxy ----------------------------------------------------------------------


class HAProxyError(Exception):
    pass


class HAProxy:
    def __init__(self, target, version=1, workdir=None, source=None, timeout="30s", port=None):
        self.target = target if isinstance(target, tuple) else _split(target)
        self.version = version
        self.source = source
        self.timeout = timeout
        self.host = "127.0.0.1"
        self.port = port
        self.own_dir = workdir is None
        self.workdir = str(workdir) if workdir is not None else None
        self.proc = None
        self._log = None

    @property
    def address(self):
        return (self.host, self.port)

    @property
    def config_path(self):
        return os.path.join(self.workdir, "haproxy.cfg")

    @property
    def log_path(self):
        return os.path.join(self.workdir, "haproxy.log")

    def config(self):
        send = {None: "", 1: " send-proxy", 2: " send-proxy-v2"}[self.version]
        src = " source %s" % self.source if self.source else ""
        return "\n".join([
            "global",
            "    maxconn 200",
            "    log stdout format raw local0 info",
            "",
            "defaults",
            "    mode tcp",
            "    log global",
            "    option tcplog",
            "    option dontlognull",
            "    timeout connect 5s",
            "    timeout client %s" % self.timeout,
            "    timeout server %s" % self.timeout,
            "",
            "frontend fe",
            "    bind %s:%d" % (self.host, self.port),
            "    default_backend be",
            "",
            "backend be",
            "    server target %s:%d%s%s" % (self.target[0], self.target[1], send, src),
            "",
        ])

    def start(self):
        if not os.path.exists(HAPROXY):
            raise HAProxyError("haproxy is not installed (tools/deps.sh installs it)")
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="portcullis-haproxy-")
        os.makedirs(self.workdir, exist_ok=True)
        fixed = self.port is not None
        for _ in range(4):
            if not fixed:
                self.port = free_port(self.host)
            with open(self.config_path, "w") as f:
                f.write(self.config())
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.config_path],
                                         stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir)
            deadline = time.monotonic() + START_TIMEOUT
            while not listening(self.port):
                if self.proc.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    self.stop()
                    raise HAProxyError("haproxy did not listen on %d within %ss:\n%s"
                                       % (self.port, START_TIMEOUT, self.log()))
                time.sleep(0.01)
            if self.proc.poll() is None:
                return self
            self._log.close()
            err = self.log()
            if "address already in use" in err.lower() and not fixed:
                continue
            raise HAProxyError("haproxy exited with %s at start:\n%s" % (self.proc.returncode, err))
        raise HAProxyError("haproxy could not bind a port:\n" + self.log())

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Stop our haproxy (by its PID only): SIGUSR1 (soft stop), SIGTERM,
        SIGKILL, each with a bound. Returns the exit status."""
        if self.proc is None:
            return None
        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(STOP_TIMEOUT if sig != signal.SIGKILL else 10)
            except subprocess.TimeoutExpired:
                continue
        if self._log is not None and not self._log.closed:
            self._log.close()
        if self.own_dir and not os.environ.get("PORTCULLIS_KEEP_HAPROXY"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.proc.returncode

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, needle, timeout=5.0):
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _split(hostport):
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


if __name__ == "__main__":
    # Manual check: a listener that prints the PROXY header HAProxy sends.
    import sys
    ver = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(5)
    with HAProxy(ls.getsockname(), version=ver) as hp:
        print("haproxy pid %d on %d -> %d (v%s)" % (hp.pid, hp.port, ls.getsockname()[1], ver))
        c = socket.create_connection(hp.address)
        s, _ = ls.accept()
        c.sendall(b"hello\r\n")
        data = b""
        s.settimeout(5)
        while b"hello" not in data:
            data += s.recv(4096)
        print("client", c.getsockname(), "->", parse_proxy_header(data))
        c.close()
        s.close()
        time.sleep(0.2)
        print(hp.log())
