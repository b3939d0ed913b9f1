"""milters.py - the real milters from Debian, each private on loopback, for
the tests of plugins/milter.c (and the benchmark).

    key = DkimKey(workdir)                         # opendkim-genkey, once
    with OpenDKIM(key, mode="s", canon="simple/simple") as d:
        d.port; d.socket                           # "inet:PORT@127.0.0.1"
    dkim_verify(raw_bytes, key)                    # dkimpy: True/False

    with Clamd() as c, ClamavMilter(c) as m:       # EICAR by a private .ndb
        c.scan(b"...")                             # INSTREAM: "stream: OK"
        c.stop(); c.start()                        # the same port: an outage

    with Spamd() as s, SpamassMilter(s, reject=15) as m: ...
    with RspamdMilter(workdir) as r: r.milter_port; r.milter_socket

    probe(port, message)                           # our own small milter
                                                   # client: what the milter
                                                   # answers, without the proxy

Every server listens on 127.0.0.1 on a free port (kit.ports), lives in its
own directory (a new one under /tmp unless workdir is given), runs in the
foreground as a child of the test and is stopped by its PID (kit.server).
Readiness is polled with what a client really does: a milter is ready when
it answers option negotiation (SMFIC_OPTNEG), clamd when it answers PING.
Nothing here uses the network: OpenDKIM takes its keys from a
TestPublicKeys file and dkimpy from a dnsfunc, clamd's only signature is
the kit's own EICAR body signature (no freshclam), spamd and rspamd are the
kit's offline ones (kit.spamd, kit.rspamd). Facts and pitfalls:
/work/shared/PEERS.md.
"""

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

from kit.ports import free_port
from kit.rspamd import Rspamd
from kit.server import PrivateServer

OPENDKIM = "/usr/sbin/opendkim"
OPENDKIM_GENKEY = "/usr/sbin/opendkim-genkey"
CLAMD = "/usr/sbin/clamd"
CLAMAV_MILTER = "/usr/sbin/clamav-milter"
SPAMASS_MILTER = "/usr/sbin/spamass-milter"

START_TIMEOUT = 30.0

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_NAME = "Test.EICAR.Body"  # clamd reports it with ".UNOFFICIAL" appended


def available(*progs):
    """True when every program is installed (make deps / tools/deps.sh)."""
    return all(os.access(p, os.X_OK) for p in progs)


def _private_dir(workdir, prefix):
    if workdir is None:
        return tempfile.mkdtemp(prefix=prefix), True
    os.makedirs(str(workdir), exist_ok=True)
    return str(workdir), False


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-20000:]
    except OSError:
        return ""


# ---- a small milter client: readiness, and proof without the proxy ---------

SMFIP_ALL = 0x1FFFFF & ~0x800  # every NO*, NR_*, SKIP, HDR_LEADSPC; not RCPT_REJ
SMFIF_ALL = 0x1FF
# The command each SMFIP_NO* bit turns off, and the one each SMFIP_NR_* bit
# makes reply-less (libmilter's mfdef.h).
_NO = {b"C": 0x1, b"H": 0x2, b"M": 0x4, b"R": 0x8, b"B": 0x10, b"L": 0x20, b"N": 0x40,
       b"T": 0x200}
_NR = {b"L": 0x80, b"C": 0x1000, b"H": 0x2000, b"M": 0x4000, b"R": 0x8000, b"T": 0x10000,
       b"N": 0x40000, b"B": 0x80000}
_MODS = b"hibm+-2eqp"  # replies that come before the final one at end of message


def _packet(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd + data


def _recv_exact(s, n):
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            raise EOFError("milter closed the connection")
        out += d
    return out


def _recv_packet(s):
    n = struct.unpack(">I", _recv_exact(s, 4))[0]
    if not 1 <= n <= 1 << 20:
        raise ValueError("bad milter packet length %d" % n)
    body = _recv_exact(s, n)
    return body[:1], body[1:]


class MilterResult:
    """What a milter answered to one message: verdict is the final reply's
    command letter ("c" continue, "a" accept, "r" reject, "t" tempfail,
    "d" discard, "y" replycode) and the stage ("C", "H", "M", "R", "T",
    "L", "N", "B", "E") it came at; text is a replycode's text; mods the
    modification replies at end of message as (letter, data)."""

    def __init__(self):
        self.verdict = "c"
        self.stage = None
        self.text = ""
        self.mods = []

    def headers_added(self):
        """(name, value) of SMFIR_ADDHEADER and SMFIR_INSHEADER."""
        out = []
        for c, d in self.mods:
            if c == b"i":
                d = d[4:]
            if c in (b"h", b"i"):
                name, value = d.split(b"\0")[:2]
                out.append((name.decode(), value.decode("latin-1")))
        return out

    def __repr__(self):
        return "MilterResult(%s at %s %r mods=%r)" % (self.verdict, self.stage, self.text, self.mods)


def probe(port, message, client=("localhost", "127.0.0.1"), helo="client.test",
          sender="<alice@example.org>", rcpts=("<bob@example.net>",), timeout=30):
    """Send one message (bytes, CRLF lines) through the milter on
    127.0.0.1:port (or the UNIX socket port, a path) as an MTA would, without the proxy: a MilterResult."""
    res = MilterResult()
    with _connect(port, timeout) as s:
        s.sendall(_packet(b"O", struct.pack(">III", 6, SMFIF_ALL, SMFIP_ALL)))
        c, d = _recv_packet(s)
        if c != b"O":
            raise ValueError("no option negotiation reply: %r" % c)
        proto = struct.unpack(">III", d[:12])[2]
        macros = {b"C": [(b"j", b"mx.test"), (b"{daemon_name}", b"mx.test"),
                         (b"{client_addr}", client[1].encode())],
                  b"M": [(b"i", b"PROBE1"), (b"{mail_addr}", sender.strip("<>").encode())]}

        def step(cmd, data):
            if proto & _NO.get(cmd, 0):
                return True
            if cmd in macros:
                s.sendall(_packet(b"D", cmd + b"".join(k + b"\0" + v + b"\0"
                                                       for k, v in macros[cmd])))
            s.sendall(_packet(cmd, data))
            if proto & _NR.get(cmd, 0):
                return True
            while True:
                r, d = _recv_packet(s)
                if r == b"p":
                    continue
                if r in _MODS and cmd == b"E":
                    res.mods.append((r, d))
                    continue
                if r == b"s" and cmd == b"B":
                    return True
                if r == b"c":
                    return True
                res.verdict, res.stage = r.decode(), cmd.decode()
                res.text = d.rstrip(b"\0").decode("latin-1")
                return False

        fam = b"6" if ":" in client[1] else b"4"
        head, _, body = message.partition(b"\r\n\r\n")
        steps = [(b"C", client[0].encode() + b"\0" + fam + struct.pack(">H", 40000)
                  + client[1].encode() + b"\0"),
                 (b"H", helo.encode() + b"\0"),
                 (b"M", sender.encode() + b"\0")]
        steps += [(b"R", r.encode() + b"\0") for r in rcpts]
        steps.append((b"T", b""))
        fields = []
        for line in head.split(b"\r\n"):
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1] += b"\n" + line
            else:
                fields.append(line)
        for f in fields:
            name, _, value = f.partition(b":")
            if value.startswith(b" ") and not proto & 0x100000:
                value = value[1:]
            steps.append((b"L", name + b"\0" + value + b"\0"))
        steps.append((b"N", b""))
        if body:
            steps.append((b"B", body))
        for cmd, data in steps + [(b"E", b"")]:
            if not step(cmd, data):
                break
        s.sendall(_packet(b"Q"))
    return res


def _connect(where, timeout):
    """A socket to 127.0.0.1:where (an int) or the UNIX socket where."""
    if isinstance(where, int):
        s = socket.create_connection(("127.0.0.1", where), timeout)
        # Small packets, each waiting for an answer: no Nagle on our side.
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(where)
    except OSError:
        s.close()
        raise
    return s


def negotiates(where, timeout=2.0):
    """True when the milter at where (a loopback port, or a UNIX socket's
    path) answers SMFIC_OPTNEG."""
    try:
        with _connect(where, timeout) as s:
            s.settimeout(timeout)
            s.sendall(_packet(b"O", struct.pack(">III", 6, SMFIF_ALL, SMFIP_ALL)))
            ok = _recv_packet(s)[0] == b"O"
            s.sendall(_packet(b"Q"))
            return ok
    except (OSError, EOFError, ValueError):
        return False


def close_all(*servers):
    """Close several servers at once: each libmilter daemon takes about 5 s
    to exit on SIGTERM (its listener polls that long), so signal them all
    first, then wait for each."""
    for s in servers:
        if s is not None and s.proc is not None:
            s.proc.send_signal(signal.SIGTERM)
    for s in servers:
        if s is not None:
            s.close()


class _Daemon(PrivateServer):
    """A foreground daemon of this kit: start() runs self.args() with its
    output in self.logfile, then polls self.ready() until START_TIMEOUT.
    A libmilter daemon exits about 5 s after SIGTERM: stop_timeout is
    above that, so it is not killed in the middle of its shutdown."""

    name = "daemon"
    stop_timeout = 15.0

    def start(self):
        if self.proc is not None:
            return self
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=out, cwd=self.dir)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError("%s exited at start:\n%s" % (self.name, self.log()))
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("%s was not ready within %ss:\n%s" % (self.name, START_TIMEOUT, self.log()))

    path = None  # a UNIX socket instead of the port

    def ready(self):
        return negotiates(self.path or self.port)

    @property
    def socket(self):
        """The milter's address in the milter section's syntax."""
        return "unix:" + self.path if self.path else "inet:%d@127.0.0.1" % self.port

    def log(self):
        return _read(self.logfile)


# ---- OpenDKIM ---------------------------------------------------------------


class DkimKey:
    """An RSA key pair for selector test, domain example.org, made by
    opendkim-genkey into dir: private (the key file), public (the base64
    p= value), record (the TXT record), testkeys (a TestPublicKeys file).
    close() removes dir if it made it."""

    def __init__(self, workdir=None, domain="example.org", selector="test"):
        self.dir, self._own_dir = _private_dir(workdir, "pc-dkimkey-")
        self.domain, self.selector = domain, selector
        subprocess.run([OPENDKIM_GENKEY, "-D", self.dir, "-d", domain, "-s", selector],
                       check=True, timeout=60)
        self.private = os.path.join(self.dir, selector + ".private")
        with open(os.path.join(self.dir, selector + ".txt")) as f:
            txt = "".join(re.findall(r'"([^"]*)"', f.read()))
        self.public = re.search(r"p=([A-Za-z0-9+/=]+)", txt).group(1)
        self.record = "v=DKIM1; k=rsa; p=" + self.public
        self.name = "%s._domainkey.%s" % (selector, domain)
        self.testkeys = os.path.join(self.dir, "testkeys")
        with open(self.testkeys, "w") as f:
            f.write("%s %s\n" % (self.name, self.record))

    def close(self):
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def dnsfunc(self, name, timeout=5):
        """For dkimpy: the TXT record of our selector, nothing else."""
        if isinstance(name, bytes):
            name = name.decode()
        return self.record.encode() if name.rstrip(".") == self.name else None


def dkim_verify(message, key):
    """dkimpy's verdict on the first DKIM-Signature of message (bytes as
    the backend got them): True when it verifies with key's public key."""
    import dkim

    return bool(dkim.verify(message, dnsfunc=key.dnsfunc))


class OpenDKIM(_Daemon):
    """opendkim -f -x CONF. mode "s" signs mail from InternalHosts (the
    loopback addresses, where the proxy's clients come from), "v" verifies
    (nothing is internal then, and AlwaysAddARHeader puts an
    Authentication-Results on every message), "sv" both. unix=True: it
    listens on a UNIX socket in its directory (self.path) instead."""

    name = "opendkim"

    def __init__(self, key, mode="s", canon="relaxed/relaxed", workdir=None, port=None,
                 authserv_id="verifier.test", extra=None, unix=False):
        self.dir, self._own_dir = _private_dir(workdir, "pc-opendkim-")
        self.key, self.mode, self.canon = key, mode, canon
        self.port = port or free_port()
        if unix:
            self.path = os.path.join(self.dir, "opendkim-%d.sock" % self.port)
        self.proc = None
        self.logfile = os.path.join(self.dir, "opendkim-%d.log" % self.port)
        self.conf = os.path.join(self.dir, "opendkim-%d.conf" % self.port)
        internal = "127.0.0.1,::1" if "s" in mode else "192.0.2.255"
        lines = [
            "Mode %s" % mode,
            "Socket " + ("local:" + self.path if self.path else "inet:%d@127.0.0.1" % self.port),
            "Domain %s" % key.domain,
            "Selector %s" % key.selector,
            "KeyFile %s" % key.private,
            "InternalHosts %s" % internal,
            "Canonicalization %s" % canon,
            "TestPublicKeys %s" % key.testkeys,
            "AuthservID %s" % authserv_id,
            "AlwaysAddARHeader yes",
            "PidFile %s" % os.path.join(self.dir, "opendkim-%d.pid" % self.port),
            # Our files live under /tmp, which others can write to.
            "RequireSafeKeys no",
            "Syslog no",
            "LogResults yes",
        ]
        lines += list(extra or ())
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def args(self):
        return [OPENDKIM, "-f", "-x", self.conf]


# ---- clamd and clamav-milter --------------------------------------------------


class Clamd(_Daemon):
    """clamd with a database of one body signature, the EICAR string
    (matched anywhere, so inside an attachment too), on a free TCP port."""

    name = "clamd"

    def __init__(self, workdir=None, port=None):
        self.dir, self._own_dir = _private_dir(workdir, "pc-clamd-")
        self.port = port or free_port()
        self.proc = None
        self.logfile = os.path.join(self.dir, "clamd-%d.log" % self.port)
        db = os.path.join(self.dir, "db")
        os.makedirs(db, exist_ok=True)
        with open(os.path.join(db, "portcullis-test.ndb"), "w") as f:
            f.write("%s:0:*:%s\n" % (EICAR_NAME, EICAR.hex()))
        self.conf = os.path.join(self.dir, "clamd-%d.conf" % self.port)
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "Foreground yes",
                "TCPSocket %d" % self.port,
                "TCPAddr 127.0.0.1",
                "DatabaseDirectory %s" % db,
                "TemporaryDirectory %s" % self.dir,
                "PidFile %s" % os.path.join(self.dir, "clamd-%d.pid" % self.port),
                "SelfCheck 0",
                "User root",
                "LogTime yes",
            ]) + "\n")

    def args(self):
        return [CLAMD, "--config-file=" + self.conf]

    def command(self, cmd, data=None, timeout=10):
        """A z-command (b"PING"); with data, INSTREAM it: the reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout) as s:
            s.sendall(b"z" + cmd + b"\0")
            if data is not None:
                for i in range(0, len(data), 65536):
                    chunk = data[i:i + 65536]
                    s.sendall(struct.pack(">I", len(chunk)) + chunk)
                s.sendall(struct.pack(">I", 0))
            out = b""
            while not out.endswith(b"\0"):
                d = s.recv(4096)
                if not d:
                    break
                out += d
            return out.rstrip(b"\0").decode("latin-1")

    def scan(self, data):
        return self.command(b"INSTREAM", data)

    def ready(self):
        try:
            return self.command(b"PING", timeout=2) == "PONG"
        except OSError:
            return False


class ClamavMilter(_Daemon):
    """clamav-milter asking clamd over TCP: OnInfected Reject, OnFail Defer
    (clamd down -> tempfail), AddHeader Replace (X-Virus-Status on clean
    mail). Start it after clamd answers."""

    name = "clamav-milter"

    def __init__(self, clamd, workdir=None, port=None, on_infected="Reject", on_fail="Defer",
                 add_header="Replace"):
        self.dir, self._own_dir = _private_dir(workdir, "pc-clamav-milter-")
        self.clamd = clamd
        self.port = port or free_port()
        self.proc = None
        self.logfile = os.path.join(self.dir, "clamav-milter-%d.log" % self.port)
        self.conf = os.path.join(self.dir, "clamav-milter-%d.conf" % self.port)
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "MilterSocket inet:%d@127.0.0.1" % self.port,
                "Foreground yes",
                "ClamdSocket tcp:127.0.0.1:%d" % clamd.port,
                "OnInfected %s" % on_infected,
                "OnFail %s" % on_fail,
                "AddHeader %s" % add_header,
                "PidFile %s" % os.path.join(self.dir, "clamav-milter-%d.pid" % self.port),
                "User root",
                "LogVerbose yes",
                "LogInfected Full",
                "LogClean Basic",
            ]) + "\n")

    def args(self):
        return [CLAMAV_MILTER, "--config-file=" + self.conf]


# ---- spamass-milter -----------------------------------------------------------


class SpamassMilter(_Daemon):
    """spamass-milter in front of a kit.spamd.Spamd (it runs spamc for each
    message). reject=N rejects a score >= N ("550 5.7.1 Blocked by
    SpamAssassin"); reject=None only marks (X-Spam-* headers). -m: it
    never rewrites the body, Content-Type or Subject."""

    name = "spamass-milter"

    def __init__(self, spamd, reject=15, workdir=None, port=None):
        self.dir, self._own_dir = _private_dir(workdir, "pc-spamass-milter-")
        self.spamd = spamd
        self.reject = reject
        self.port = port or free_port()
        self.proc = None
        self.logfile = os.path.join(self.dir, "spamass-milter-%d.log" % self.port)
        self.pidfile = os.path.join(self.dir, "spamass-milter-%d.pid" % self.port)

    def args(self):
        a = [SPAMASS_MILTER, "-p", "inet:%d@127.0.0.1" % self.port, "-P", self.pidfile, "-m"]
        if self.reject is not None:
            a += ["-r", str(self.reject)]
        return a + ["--", "-d", "127.0.0.1", "-p", str(self.spamd.port)]


# ---- rspamd in milter mode -----------------------------------------------------

MILTER_HEADERS = """\
# Written by tests/kit/milters.py: headers a test can look for, on mail from
# loopback too (skip_local), without authentication (skip_authenticated).
use = ["x-spamd-result", "x-rspamd-server", "x-spam-status", "authentication-results"];
skip_local = false;
skip_authenticated = false;
"""


class RspamdMilter(Rspamd):
    """kit.rspamd's offline rspamd plus its proxy worker in milter mode,
    scanning itself (self_scan), on milter_port. milter_headers adds
    X-Spamd-Result, X-Rspamd-Server and X-Spam-Status to every message."""

    name = "rspamd"

    def __init__(self, workdir=None, port=None, milter_port=None, extra_local=None):
        self.milter_port = milter_port or free_port()
        extra = {"milter_headers.conf": MILTER_HEADERS}
        extra.update(extra_local or {})
        super().__init__(workdir, port=port, extra_local=extra)

    def _write_config(self):
        super()._write_config()
        path = os.path.join(self.local, "override.d", "worker-proxy.inc")
        with open(path, "w") as f:
            f.write('bind_socket = "127.0.0.1:%d";\nmilter = yes;\ntimeout = 30s;\n'
                    'count = 1;\nupstream "local" {\n  default = yes;\n  self_scan = yes;\n}\n'
                    % self.milter_port)
        import pwd

        pw = pwd.getpwnam("_rspamd")
        os.chown(path, pw.pw_uid, pw.pw_gid)

    def start(self):
        if self.proc is not None:
            return self
        super().start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if negotiates(self.milter_port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("rspamd's milter worker did not answer:\n" + self.log())

    @property
    def socket(self):
        return "inet:%d@127.0.0.1" % self.milter_port
