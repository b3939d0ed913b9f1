"""fakemilter.py - a scripted milter (the filter's side of the milter
protocol, version 6) for integration tests.

It speaks the protocol as libmilter does, from the other side of the MTA:
every packet is a 4-octet big-endian length (which counts the command
octet), the command octet, then the data. It listens on 127.0.0.1 (a free
port) or on a unix socket, serves each connection in a thread of its own,
and RECORDS everything each connection sent, in order, decoded:

    m = FakeMilter(script={"R": [reject()]}).start()
    m.socket                     # "inet:127.0.0.1:PORT" or "unix:/path", for the config
    ...                          # the proxy talks to it
    [conn] = m.wait_conns(1)
    conn.letters()               # "OCHMRTLLNBEQ": the commands, in order (macros aside)
    conn.first("C").fields       # {"hostname": "[127.0.0.1]", "family": "4", "port": ..., "address": ...}
    conn.first("M").macros       # {"M": {"i": "...", "{mail_addr}": "a@x.test"}}
    conn.headers()               # [("Subject", "x"), ...] as the milter got them
    conn.body()                  # the SMFIC_BODY chunks, joined
    m.wait_for(lambda: ..., timeout=5)
    m.stop()

Negotiation: the reply to SMFIC_OPTNEG says version (default 6), actions
(default all nine, 0x1ff), protocol flags (default 0: every step, every
reply) and, optionally, macro lists per stage (symlists={CONNECT: "j
{client_addr}", "mail": "{mail_addr}"}). What the MTA offered is recorded
(conn.offer).

Script: for each command letter (see CMD_NAMES), what to answer - a list of
items, each a reply packet made by the helpers below (cont(), reject(),
replycode("550 5.7.1 no"), addheader("X-A", "1"), ...) or a special action:
HANG (never answer again; keep reading and recording until the peer
closes), CLOSE (close the connection), Raw(b"...") (send these bytes as
they are), Sleep(0.4) (wait before the next item). A script entry may also
be a callable (conn, cmd, fields) -> list or None (None: the default), so a
test can answer the n-th RCPT differently or look at the content.
'O' in the script replaces the negotiation reply.

Default: SMFIR_CONTINUE to every command that takes a reply, except those
whose SMFIP_NR_* flag this milter negotiated; SMFIR_CONTINUE at end of
message too. ABORT, MACRO and QUIT get no reply, as in the protocol.

One condition variable guards every record, so the accessors are safe
from the test thread. A peer that closes at any moment only ends its own
thread. Importing this module starts nothing.
"""

import os
import socket
import struct
import threading
import time

from kit.ports import free_port

# ---- the protocol's numbers (libmilter's mfdef.h names) -----------------------

VERSION = 6

# Commands the MTA sends.
SMFIC_ABORT = "A"
SMFIC_BODY = "B"
SMFIC_CONNECT = "C"
SMFIC_MACRO = "D"
SMFIC_BODYEOB = "E"
SMFIC_HELO = "H"
SMFIC_QUIT_NC = "K"
SMFIC_HEADER = "L"
SMFIC_MAIL = "M"
SMFIC_EOH = "N"
SMFIC_OPTNEG = "O"
SMFIC_QUIT = "Q"
SMFIC_RCPT = "R"
SMFIC_DATA = "T"
SMFIC_UNKNOWN = "U"

CMD_NAMES = {
    "A": "abort", "B": "body", "C": "connect", "D": "macro", "E": "eom", "H": "helo",
    "K": "quit_nc", "L": "header", "M": "mail", "N": "eoh", "O": "optneg", "Q": "quit",
    "R": "rcpt", "T": "data", "U": "unknown",
}

# Actions (SMFIF_*).
SMFIF_ADDHDRS = 0x01
SMFIF_CHGBODY = 0x02
SMFIF_ADDRCPT = 0x04
SMFIF_DELRCPT = 0x08
SMFIF_CHGHDRS = 0x10
SMFIF_QUARANTINE = 0x20
SMFIF_CHGFROM = 0x40
SMFIF_ADDRCPT_PAR = 0x80
SMFIF_SETSYMLIST = 0x100
ALL_ACTIONS = 0x1FF

# Protocol flags (SMFIP_*).
SMFIP_NOCONNECT = 0x1
SMFIP_NOHELO = 0x2
SMFIP_NOMAIL = 0x4
SMFIP_NORCPT = 0x8
SMFIP_NOBODY = 0x10
SMFIP_NOHDRS = 0x20
SMFIP_NOEOH = 0x40
SMFIP_NR_HDR = 0x80
SMFIP_NOUNKNOWN = 0x100
SMFIP_NODATA = 0x200
SMFIP_SKIP = 0x400
SMFIP_RCPT_REJ = 0x800
SMFIP_NR_CONN = 0x1000
SMFIP_NR_HELO = 0x2000
SMFIP_NR_MAIL = 0x4000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_DATA = 0x10000
SMFIP_NR_UNKN = 0x20000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000
SMFIP_HDR_LEADSPC = 0x100000
SMFIP_MDS_256K = 0x10000000
SMFIP_MDS_1M = 0x20000000

ALL_NO = (SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT | SMFIP_NOBODY | SMFIP_NOHDRS
          | SMFIP_NOEOH | SMFIP_NOUNKNOWN | SMFIP_NODATA)
ALL_NR = (SMFIP_NR_HDR | SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_RCPT | SMFIP_NR_DATA
          | SMFIP_NR_UNKN | SMFIP_NR_EOH | SMFIP_NR_BODY)

# The command a NR_* flag silences.
NR_FLAG = {
    "C": SMFIP_NR_CONN, "H": SMFIP_NR_HELO, "M": SMFIP_NR_MAIL, "R": SMFIP_NR_RCPT,
    "T": SMFIP_NR_DATA, "L": SMFIP_NR_HDR, "N": SMFIP_NR_EOH, "B": SMFIP_NR_BODY,
    "U": SMFIP_NR_UNKN,
}
# Commands that never get a reply.
NO_REPLY = {"A", "D", "Q", "K"}

# Macro stages (SMFIM_*), as the index in a symlist and by name.
SMFIM_CONNECT = 0
SMFIM_HELO = 1
SMFIM_ENVFROM = 2
SMFIM_ENVRCPT = 3
SMFIM_DATA = 4
SMFIM_EOM = 5
SMFIM_EOH = 6
STAGE_INDEX = {"connect": 0, "helo": 1, "mail": 2, "envfrom": 2, "rcpt": 3, "envrcpt": 3, "data": 4,
               "eom": 5, "eoh": 6}

# A bound on what we accept from the proxy in one packet: a broken length
# must not make the fake allocate gigabytes.
MAX_PACKET = 64 * 1024 * 1024


# ---- replies ---------------------------------------------------------------------


def packet(cmd, data=b""):
    """One packet: length (command octet included), command, data."""
    if isinstance(cmd, str):
        cmd = cmd.encode("ascii")
    if isinstance(data, str):
        data = data.encode("utf-8")
    return struct.pack(">I", len(data) + 1) + cmd + data


def _z(*strings):
    """NUL-terminated strings, concatenated."""
    out = b""
    for s in strings:
        out += (s.encode("utf-8") if isinstance(s, str) else bytes(s)) + b"\0"
    return out


class Reply:
    """A reply packet to send: its letter and data."""

    def __init__(self, cmd, data=b""):
        self.cmd = cmd
        self.data = data if isinstance(data, bytes) else data.encode("utf-8")

    def wire(self):
        return packet(self.cmd, self.data)

    def __repr__(self):
        return f"<Reply {self.cmd} {self.data!r}>"


def cont():
    return Reply("c")


def accept():
    return Reply("a")


def reject():
    return Reply("r")


def tempfail():
    return Reply("t")


def discard():
    return Reply("d")


def replycode(text):
    """SMFIR_REPLYCODE: "550 5.7.1 text" (sent as given)."""
    return Reply("y", _z(text))


def addheader(name, value):
    return Reply("h", _z(name, value))


def insheader(index, name, value):
    return Reply("i", struct.pack(">I", index) + _z(name, value))


def chgheader(index, name, value):
    """SMFIR_CHGHEADER: index is 1-based among the fields called name; an
    empty value deletes the field."""
    return Reply("m", struct.pack(">I", index) + _z(name, value))


def addrcpt(rcpt):
    return Reply("+", _z(rcpt))


def addrcpt_par(rcpt, args):
    return Reply("2", _z(rcpt, args))


def delrcpt(rcpt):
    return Reply("-", _z(rcpt))


def chgfrom(sender, args=None):
    return Reply("e", _z(sender) if args is None else _z(sender, args))


def replbody(chunk):
    return Reply("b", chunk)


def quarantine(reason):
    return Reply("q", _z(reason))


def progress():
    return Reply("p")


def skip():
    return Reply("s")


def shutdown():
    return Reply("4")


def conn_fail():
    return Reply("f")


def optneg(version=VERSION, actions=ALL_ACTIONS, protocol=0, symlists=None):
    """The negotiation reply: version, actions, protocol flags, then for
    each stage (index or name) its macro list."""
    data = struct.pack(">III", version, actions, protocol)
    for stage, names in (symlists or {}).items():
        idx = STAGE_INDEX[stage] if isinstance(stage, str) else int(stage)
        data += struct.pack(">I", idx) + _z(names)
    return Reply("O", data)


# ---- special actions -------------------------------------------------------------


class _Special:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


HANG = _Special("HANG")  # answer nothing more on this connection
CLOSE = _Special("CLOSE")  # close the connection now


class Raw:
    """Bytes sent exactly as given (garbage, a bad length...)."""

    def __init__(self, data):
        self.data = bytes(data)

    def __repr__(self):
        return f"<Raw {self.data[:40]!r}>"


class Sleep:
    """Wait this many seconds before the next item."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __repr__(self):
        return f"<Sleep {self.seconds}>"


# ---- records ---------------------------------------------------------------------


class Cmd:
    """One command as the fake received it (SMFIC_MACRO packets are not
    commands: their contents are in .macros of the command they precede)."""

    def __init__(self, cmd, data, fields, macros, at):
        self.cmd = cmd  # the letter
        self.data = data  # the raw packet data
        self.fields = fields  # decoded (see _decode)
        self.macros = macros  # {stage letter: {name: value}}
        self.at = at  # time.monotonic() when it arrived

    @property
    def name(self):
        return CMD_NAMES.get(self.cmd, repr(self.cmd))

    def macro(self, name):
        """A macro sent with this command, by name with or without {}."""
        bare = name.strip("{}")
        for d in self.macros.values():
            for k, v in d.items():
                if k.strip("{}") == bare:
                    return v
        return None

    def __repr__(self):
        f = dict(self.fields)
        if "body" in f:
            f["body"] = f"<{len(f['body'])} octets>"
        return f"<Cmd {self.cmd} {f!r}{' macros=%r' % self.macros if self.macros else ''}>"


class MilterConn:
    """One connection from the MTA (the proxy). Read it through the
    methods, which take the milter's lock."""

    def __init__(self, milter, index, sock):
        self._m = milter
        self.index = index
        self.sock = sock
        self.cmds = []
        self.offer = None  # (version, actions, protocol) the MTA offered
        self.negotiated = None  # (version, actions, protocol) we answered
        self.sent = []  # every reply item sent, in order (Reply / Raw)
        self.closed = False  # the connection is over (either side)
        self.peer_closed = False  # the MTA closed it
        self.hung = False
        self.error = None  # what broke the conversation, if anything
        self.state = {}  # free for scripts

    def _lock(self):
        return self._m._cv

    def commands(self, letter=None):
        with self._lock():
            return [c for c in self.cmds if letter is None or c.cmd == letter]

    def letters(self):
        """The command letters in order, e.g. "OCHMRTLNBEQ"."""
        with self._lock():
            return "".join(c.cmd for c in self.cmds)

    def first(self, letter):
        got = self.commands(letter)
        return got[0] if got else None

    def last(self, letter):
        got = self.commands(letter)
        return got[-1] if got else None

    def headers(self, txn=-1):
        """(name, value) of every SMFIC_HEADER of a transaction (default the
        last one to reach DATA)."""
        return [(c.fields["name"], c.fields["value"]) for c in self._txn_cmds(txn) if c.cmd == "L"]

    def chunks(self, txn=-1):
        """The SMFIC_BODY chunks of a transaction, in order."""
        return [c.fields["body"] for c in self._txn_cmds(txn) if c.cmd == "B"]

    def body(self, txn=-1):
        return b"".join(self.chunks(txn))

    def transactions(self):
        """The commands split into transactions: each list starts at MAIL
        and runs up to (including) the end of message or ABORT."""
        with self._lock():
            out, cur = [], None
            for c in self.cmds:
                if c.cmd == "M":
                    cur = [c]
                    out.append(cur)
                elif cur is not None:
                    cur.append(c)
                    if c.cmd in ("E", "A"):
                        cur = None
            return out

    def _txn_cmds(self, txn):
        txns = [t for t in self.transactions() if any(c.cmd == "T" or c.cmd == "L" for c in t)]
        if not txns:
            # No MAIL seen (NOMAIL): everything since the start.
            return self.commands()
        return txns[txn]

    def __repr__(self):
        return f"<MilterConn {self.index} {self.letters()!r} closed={self.closed} error={self.error!r}>"


class _Gone(Exception):
    """The peer closed, or we closed on purpose."""


# ---- the server ------------------------------------------------------------------


def _split_z(data):
    """NUL-terminated strings -> list of str (a trailing piece without a
    NUL is kept too)."""
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", "surrogateescape") for p in parts]


def _decode(cmd, data):
    if cmd == "O":
        if len(data) < 12:
            return {"short": data}
        v, a, p = struct.unpack(">III", data[:12])
        return {"version": v, "actions": a, "protocol": p}
    if cmd == "C":
        i = data.find(b"\0")
        host = data[:i].decode("utf-8", "surrogateescape")
        rest = data[i + 1:]
        f = {"hostname": host, "family": rest[:1].decode("latin-1")}
        if f["family"] != "U" and len(rest) >= 3:
            f["port"] = struct.unpack(">H", rest[1:3])[0]
            f["address"] = rest[3:].rstrip(b"\0").decode("utf-8", "surrogateescape")
        return f
    if cmd == "H":
        return {"helo": data.rstrip(b"\0").decode("utf-8", "surrogateescape")}
    if cmd in ("M", "R"):
        return {"args": _split_z(data)}
    if cmd == "L":
        parts = data.split(b"\0")
        name = parts[0].decode("utf-8", "surrogateescape")
        value = parts[1].decode("utf-8", "surrogateescape") if len(parts) > 1 else None
        return {"name": name, "value": value}
    if cmd in ("B", "E"):
        return {"body": bytes(data)}
    if cmd == "U":
        return {"line": data.rstrip(b"\0").decode("utf-8", "surrogateescape")}
    return {}


def _decode_macros(data):
    stage = data[:1].decode("latin-1")
    vals = _split_z(data[1:])
    d = {}
    for i in range(0, len(vals) - 1, 2):
        d[vals[i]] = vals[i + 1]
    return stage, d


class FakeMilter:
    """The fake. start() listens and serves; stop() closes everything."""

    def __init__(self, script=None, version=VERSION, actions=ALL_ACTIONS, protocol=0, symlists=None,
                 unix=None, host="127.0.0.1", name="fake", port=None):
        self.script = dict(script or {})
        self.version = version
        self.actions = actions
        self.protocol = protocol
        self.symlists = symlists
        self.unix = unix
        self.host = host
        self.port = port  # None: a free one
        self.name = name
        self._cv = threading.Condition()
        self._listen = None
        self._threads = []
        self._conns = []
        self._running = False

    # ---- life cycle ----

    def start(self):
        if self.unix:
            try:
                os.unlink(self.unix)
            except FileNotFoundError:
                pass
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(self.unix)
        else:
            for _ in range(20):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                port = self.port or free_port(self.host)
                try:
                    s.bind((self.host, port))
                except OSError:
                    s.close()
                    continue
                self.port = port
                break
            else:
                raise OSError("no free port for the fake milter")
        s.listen(64)
        self._listen = s
        self._running = True
        t = threading.Thread(target=self._accept_loop, name=f"fakemilter-{self.name}", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    @property
    def socket(self):
        """The socket spec for a [milter] section."""
        if self.unix:
            return f"unix:{self.unix}"
        return f"inet:{self.host}:{self.port}"

    def stop(self):
        self._running = False
        if self._listen is not None:
            try:
                self._listen.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listen.close()
            self._listen = None
        with self._cv:
            conns = list(self._conns)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(5)
        if self.unix:
            try:
                os.unlink(self.unix)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- accessors (thread-safe) ----

    def conns(self):
        with self._cv:
            return list(self._conns)

    def wait_for(self, predicate, timeout=5.0):
        """Wait until predicate() (called under the lock) is true; returns
        its value, or the last (false) value after timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                v = predicate()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return v
                self._cv.wait(min(left, 0.1))

    def wait_conns(self, n, timeout=5.0):
        """Wait for n connections; returns them all (maybe fewer)."""
        self.wait_for(lambda: len(self._conns) >= n, timeout)
        return self.conns()

    def wait_cmd(self, letter, n=1, timeout=5.0, conn=None):
        """Wait until n commands with this letter arrived (on one
        connection, or all); True when they did."""
        def count():
            cs = self._conns if conn is None else [conn]
            return sum(1 for c in cs for x in c.cmds if x.cmd == letter) >= n
        return bool(self.wait_for(count, timeout))

    def wait_closed(self, timeout=5.0):
        """Wait until every connection so far is over; True when so."""
        return bool(self.wait_for(lambda: all(c.closed for c in self._conns), timeout))

    def commands(self, letter=None):
        """Every command over all connections, in connection order."""
        with self._cv:
            return [x for c in self._conns for x in c.cmds if letter is None or x.cmd == letter]

    # ---- serving ----

    def _accept_loop(self):
        while self._running:
            try:
                sock, _ = self._listen.accept()
            except (OSError, AttributeError):
                return
            with self._cv:
                if not self._running:
                    sock.close()
                    return
                conn = MilterConn(self, len(self._conns), sock)
                self._conns.append(conn)
                t = threading.Thread(target=self._serve, args=(conn,), name=f"fakemilter-{self.name}-{conn.index}",
                                     daemon=True)
                self._threads.append(t)
                self._cv.notify_all()
            t.start()

    def _serve(self, conn):
        buf = bytearray()
        try:
            self._converse(conn, buf)
        except _Gone:
            pass
        except OSError as e:
            with self._cv:
                conn.error = conn.error or f"{type(e).__name__}: {e}"
        except Exception as e:  # a broken script must not kill the thread silently
            with self._cv:
                conn.error = f"{type(e).__name__}: {e}"
        finally:
            try:
                conn.sock.close()
            except OSError:
                pass
            with self._cv:
                conn.closed = True
                self._cv.notify_all()

    def _recv_exact(self, conn, buf, n):
        while len(buf) < n:
            data = conn.sock.recv(max(65536, n - len(buf)))
            if not data:
                with self._cv:
                    conn.peer_closed = True
                raise _Gone()
            buf += data
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def _read_packet(self, conn, buf):
        (length,) = struct.unpack(">I", self._recv_exact(conn, buf, 4))
        if length < 1 or length > MAX_PACKET:
            with self._cv:
                conn.error = f"bad packet length {length} from the MTA"
            raise _Gone()
        body = self._recv_exact(conn, buf, length)
        return chr(body[0]), body[1:]

    def _converse(self, conn, buf):
        macros = {}
        while True:
            cmd, data = self._read_packet(conn, buf)
            if cmd == "D":
                stage, d = _decode_macros(data)
                macros[stage] = d
                continue
            rec = Cmd(cmd, data, _decode(cmd, data), macros, time.monotonic())
            macros = {}
            with self._cv:
                conn.cmds.append(rec)
                if cmd == "O" and "version" in rec.fields:
                    conn.offer = (rec.fields["version"], rec.fields["actions"], rec.fields["protocol"])
                hung = conn.hung
                self._cv.notify_all()
            if hung:
                continue
            items = self._plan(conn, rec)
            self._carry_out(conn, items)
            if cmd in ("Q",):
                raise _Gone()

    def _plan(self, conn, rec):
        """What to send for this command: the script's items or the default."""
        entry = self.script.get(rec.cmd)
        items = None
        if callable(entry):
            items = entry(conn, rec.cmd, rec.fields)
        elif entry is not None:
            items = list(entry)
        if items is not None:
            return list(items)
        if rec.cmd == "O":
            return [optneg(self.version, self.actions, self.protocol, self.symlists)]
        if rec.cmd in NO_REPLY:
            return []
        nr = NR_FLAG.get(rec.cmd)
        if nr is not None and self.protocol & nr:
            return []
        return [cont()]

    def _carry_out(self, conn, items):
        for it in items:
            if it is HANG:
                with self._cv:
                    conn.hung = True
                return
            if it is CLOSE:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise _Gone()
            if isinstance(it, Sleep):
                time.sleep(it.seconds)
                continue
            if isinstance(it, Reply):
                wire = it.wire()
                if it.cmd == "O":
                    with self._cv:
                        conn.negotiated = struct.unpack(">III", it.data[:12]) if len(it.data) >= 12 else None
            elif isinstance(it, Raw):
                wire = it.data
            elif isinstance(it, (bytes, bytearray)):
                wire = bytes(it)
            else:
                raise TypeError(f"not a script item: {it!r}")
            try:
                conn.sock.sendall(wire)
            except OSError:
                with self._cv:
                    conn.peer_closed = True
                raise _Gone() from None
            with self._cv:
                conn.sent.append(it)
                self._cv.notify_all()


# ---- the MTA's side, for the kit's own tests -------------------------------------


class MtaClient:
    """A minimal MTA end of the protocol: send commands, read replies.
    For testing the fake itself (tests/integration/test_fakemilter.py)."""

    def __init__(self, milter, timeout=5.0):
        if milter.unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(milter.unix)
        else:
            self.sock = socket.create_connection((milter.host, milter.port), timeout=timeout)
        self.buf = bytearray()

    def send(self, cmd, data=b""):
        self.sock.sendall(packet(cmd, data))

    def read(self):
        """One reply: (letter, data); raises EOFError at close."""
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    body = bytes(self.buf[4:4 + n])
                    del self.buf[:4 + n]
                    return chr(body[0]), body[1:]
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(bytes(self.buf))
            self.buf += data

    def raw_rest(self, timeout=1.0):
        """Whatever bytes arrive until close or timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.buf += data
        except socket.timeout:
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def negotiate(self, version=6, actions=ALL_ACTIONS, protocol=ALL_NO | ALL_NR | SMFIP_SKIP | SMFIP_HDR_LEADSPC):
        self.send("O", struct.pack(">III", version, actions, protocol))
        return self.read()

    def close(self):
        self.sock.close()
