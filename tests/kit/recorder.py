"""recorder.py - a recording SMTP backend for integration tests.

A real TCP server on 127.0.0.1 (a free port) that speaks enough ESMTP to stand
behind portcullis, and remembers everything it was sent:

  * per connection: every raw byte received, every command line, the
    transactions, whether the peer closed, and an ordered event log:
    ("recv", command line) when a line is read, ("send", reply) when a reply
    actually leaves (after any hold), so a test can say "RCPT arrived before
    MAIL's reply went out";
  * per transaction: the MAIL line, the RCPT lines (and which were accepted),
    whether a DATA command came, the message bytes exactly as received between
    our 354 and the terminating CRLF.CRLF (still dot-stuffed; the CRLF that
    belongs to the last line is included, the ".\\r\\n" is not), and whether we
    acknowledged it.

BDAT (RFC 3030) is served when CHUNKING is among the capabilities
(configure(extra_caps=["CHUNKING"])): "BDAT n [LAST]" reads exactly n octets;
the transaction's data is the chunks as received, concatenated (never
stuffed: BDAT has no dot rules), with t.bdat True and t.chunks the chunk
sizes. Rules with when="BDAT" answer every chunk (match="LAST" picks the last
one); for the LAST chunk, when no BDAT rule applies, an "EOD" rule does, so a
rule about the message's fate works the same for DATA and BDAT. A refused
BDAT leaves the transaction open (RFC 3030 does not say the server forgets
MAIL and RCPT): the client must RSET, or its next MAIL gets 503. Without
CHUNKING, BDAT is an unknown command (502) as before.

Rules make it misbehave on purpose: reply with a given code/text to a command
(optionally only when the line contains a substring), to the end of data or as
the banner; answer late (delay); STALL (never answer, keep reading), HANGUP
(close the connection), GARBAGE (send bytes that are not a reply). "MIDDATA"
rules fire after a number of message bytes has arrived (DATA or BDAT).

HOLD makes pipelining provable by order instead of by time: hold(when,
lines=K) keeps the reply back until K more command lines have arrived on that
connection (lines=None: until release() is called from the test). Replies to
the commands read meanwhile queue behind it, so the peer still reads every
reply in order. A client that waits for each reply before sending the next
command never sends those K lines: the exchange stalls until its own deadline.

    rec = Recorder().start()
    rec.reply("RCPT", "550 5.1.1 No such user", match="bad@")
    rec.stall("EOD")
    rec.hangup("MIDDATA", after=1000)
    rec.hold("MAIL", lines=3)          # MAIL's reply waits for 3 more lines
    ...
    rec.events(0)                      # [("recv", "EHLO ..."), ("send", "250 ..."), ...]
    msgs = rec.wait_for_transactions(1, timeout=5)
    rec.stop()

One thread accepts, one thread serves each connection; all state is guarded by
one condition variable, so the accessors are safe from the test thread.
"""

import re
import socket
import threading
import time

STALL = "stall"
HANGUP = "hangup"
GARBAGE = "garbage"

DEFAULT_CAPS = [
    "PIPELINING",
    "SIZE 52428800",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "SMTPUTF8",
]

# Capabilities a test can add to check that the proxy hides them.
HIDDEN_CAPS = {
    "XCLIENT": "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT",
    "XFORWARD": "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT",
    "CHUNKING": "CHUNKING",
    "STARTTLS": "STARTTLS",
    "AUTH": "AUTH PLAIN LOGIN",
}

_ADDR_RE = re.compile(r"<([^>]*)>")
_BDAT_RE = re.compile(r"BDAT ([0-9]{1,18})( LAST)?$", re.I)


def _addr(line):
    """The address between the first angle brackets of a MAIL/RCPT line."""
    m = _ADDR_RE.search(line)
    return m.group(1) if m else None


_LENIENT_START = re.compile(rb"\.(\r\n|\n|\r)")
_LENIENT_END = re.compile(rb"(\r\n|\n|\r)\.(\r\n|\n|\r)")


def _lenient_end(data):
    """(end, message length) for a sloppy server's idea of the end of
    data, or (None, None). A CR at the very end of the buffer might be the
    start of a CRLF: wait for more before deciding."""
    m = _LENIENT_START.match(data)
    if m is None:
        m = _LENIENT_END.search(data)
        start = m.start() + len(m.group(1)) if m else None
    else:
        start = 0
    if m is None or (m.group(m.lastindex) == b"\r" and m.end() == len(data)):
        return None, None
    return m.end(), start


class Rule:
    """When `when` happens (a verb, BANNER, EOD or MIDDATA) and the line
    contains `match`, do `action`: a reply text (str, or list of lines for a
    multi-line reply), STALL, HANGUP, GARBAGE, or raw bytes to send as is."""

    def __init__(self, when, action, match=None, times=None, after=0, garbage=None, delay=0.0, hold=False):
        self.when = when.upper()
        self.action = action  # None: the normal reply (after delay)
        self.delay = delay
        # False: send at once; an int K: send after K more command lines;
        # None: send when the test calls release().
        self.hold = hold
        self.match = match
        self.times = times
        self.after = after
        self.garbage = garbage if garbage is not None else b"\x00\xffgarbage, not SMTP\r\n"
        self.fired = 0

    def applies(self, when, line):
        if self.when != when:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        if self.match is not None and self.match not in line:
            return False
        return True


class Transaction:
    """One MAIL ... (end of data | RSET | close) as the backend saw it."""

    def __init__(self, conn_index, mail):
        self.conn_index = conn_index
        self.mail = mail  # the MAIL command line, without CRLF
        self.mail_code = None  # what we answered
        self.rcpts = []  # RCPT lines, without CRLF, in order
        self.rcpt_codes = []
        self.accepted_rcpts = []  # addresses we answered 2xx
        self.data_cmd = False  # a DATA command arrived
        self.data_started = False  # we answered 354
        self.partial = bytearray()  # message bytes so far
        self.data = None  # complete message bytes (end of data seen and handled)
        self.eod_code = None
        self.completed = False  # end of data seen and we answered 2xx
        self.reset = False  # ended by RSET
        self.bdat = False  # the message came by BDAT (RFC 3030), not DATA
        self.chunks = []  # BDAT: the size of each chunk, in order

    @property
    def sender(self):
        return _addr(self.mail)

    @property
    def recipients(self):
        return [_addr(r) for r in self.rcpts]

    def __repr__(self):
        return (
            f"<Transaction conn={self.conn_index} mail={self.mail!r} rcpts={self.rcpts!r} "
            f"data_cmd={self.data_cmd} data={None if self.data is None else len(self.data)} "
            f"completed={self.completed}>"
        )


class Connection:
    """One connection from the proxy."""

    def __init__(self, index, peer):
        self.index = index
        self.peer = peer
        self.raw = bytearray()  # every byte received
        self.sent = 0  # octets we sent on it
        self.commands = []  # every command line (outside DATA), latin-1, no CRLF
        self.transactions = []
        self.closed = False
        self.sock = None
        # ("recv", line) and ("send", reply text) in the order they happened;
        # a multi-line reply's lines are joined with "\n". events_raw[i] is
        # how many octets had arrived when events[i] happened.
        self.events = []
        self.events_raw = []
        self.held = None  # while a reply is held: [(bytes, text)] waiting to go
        self.hold_left = None  # command lines still to come before it goes
        self.send_lock = threading.Lock()  # the serving thread and release()

    def verbs(self):
        return [c.split(" ", 1)[0].upper() for c in self.commands]

    def __repr__(self):
        return f"<Connection {self.index} commands={self.commands!r} closed={self.closed}>"


class _Hangup(Exception):
    pass


class Recorder:
    """The recording backend. start() binds and serves; stop() closes all."""

    def __init__(self, host="127.0.0.1", name="recorder.test"):
        self.host = host
        self.port = None
        self.name = name
        self._cv = threading.Condition()
        self._listen = None
        self._thread = None
        self._running = False
        self._configure_defaults()
        self.connections = []
        self._next_queue_id = 1

    # ---- set-up -------------------------------------------------------

    def _configure_defaults(self):
        self.banner = f"220 {self.name} ESMTP recorder"
        self.caps = list(DEFAULT_CAPS)
        self.rules = []
        self.lenient_end = False

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, 0))
        s.listen(128)
        self._listen = s
        self.port = s.getsockname()[1]
        self._running = True
        self._thread = threading.Thread(target=self._accept_loop, name="recorder-accept", daemon=True)
        self._thread.start()
        return self

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def stop(self):
        self._running = False
        if self._listen is not None:
            try:
                self._listen.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listen.close()
        self.drop_connections()
        if self._thread is not None:
            self._thread.join(2)

    def reset(self):
        """Forget everything: rules, capabilities, banner, recordings; close
        live connections. Used between tests sharing one recorder."""
        self.drop_connections()
        with self._cv:
            self._configure_defaults()
            self.connections = []
            self._cv.notify_all()

    def drop_connections(self):
        with self._cv:
            conns = list(self.connections)
        for c in conns:
            if c.sock is not None:
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def configure(self, banner=None, caps=None, extra_caps=(), lenient_end=None):
        """Set the banner line and the EHLO capabilities. extra_caps names
        (XCLIENT, XFORWARD, CHUNKING, STARTTLS, AUTH) or full lines to add.
        lenient_end=True makes the end of data as sloppy as the servers SMTP
        smuggling exploits: any of CR, LF or CRLF, then ".", then any of them
        ends the message (so anything the proxy lets through unframed shows
        up here as a second transaction)."""
        with self._cv:
            if banner is not None:
                self.banner = banner
            if lenient_end is not None:
                self.lenient_end = lenient_end
            if caps is not None:
                self.caps = list(caps)
            for c in extra_caps:
                self.caps.append(HIDDEN_CAPS.get(c.upper(), c))

    def rule(self, when, action, match=None, times=None, after=0, garbage=None, delay=0.0, hold=False):
        with self._cv:
            self.rules.append(Rule(when, action, match, times, after, garbage, delay, hold))

    def reply(self, when, text, match=None, times=None):
        """Answer `when` (a verb, BANNER or EOD) with text instead."""
        self.rule(when, text, match, times)

    def stall(self, when, match=None, after=0):
        self.rule(when, STALL, match, after=after)

    def hangup(self, when, match=None, after=0):
        self.rule(when, HANGUP, match, after=after)

    def garbage(self, when, match=None, data=None):
        self.rule(when, GARBAGE, match, garbage=data)

    def delay(self, when, seconds, match=None, text=None):
        """Answer `when` normally (or with text), but only after seconds."""
        self.rule(when, text, match, delay=seconds)

    def hold(self, when, lines=None, match=None, text=None, times=None):
        """Answer `when` normally (or with text), but hold the reply back
        until `lines` more command lines have arrived on that connection, or,
        with lines=None, until release(). What we answer meanwhile queues
        behind it, in order. A peer that waits for each reply never sends
        those lines: then the reply goes only on release() (or never)."""
        if lines is not None and lines < 1:
            raise ValueError("hold: lines must be at least 1 (or None)")
        self.rule(when, text, match, times, hold=lines)

    def release(self):
        """Send every held reply (and what queued behind it) now."""
        with self._cv:
            conns = list(self.connections)
        for c in conns:
            with c.send_lock:
                self._flush_held(c)

    def _flush_held(self, conn):
        """Send what conn holds back; the caller holds conn.send_lock."""
        held, conn.held, conn.hold_left = conn.held, None, None
        for data, text in held or ():
            try:
                conn.sock.sendall(data)
            except OSError:
                return
            self._record_send(conn, data, text)

    def _record_send(self, conn, data, text):
        with self._cv:
            conn.sent += len(data)
            conn.events.append(("send", text))
            conn.events_raw.append(len(conn.raw))
            self._cv.notify_all()

    # ---- accessors (thread-safe) -------------------------------------

    def wait_for(self, predicate, timeout=5.0):
        """Wait until predicate() (called under the lock) is true; returns its
        value, or the last (false) value after timeout."""
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

    def transactions(self):
        with self._cv:
            return [t for c in self.connections for t in c.transactions]

    def messages(self):
        """Transactions whose end of data was seen (whatever we answered)."""
        with self._cv:
            return [t for c in self.connections for t in c.transactions if t.data is not None]

    def delivered(self):
        """Transactions whose end of data was seen and acknowledged with 2xx."""
        with self._cv:
            return [t for c in self.connections for t in c.transactions if t.completed]

    def wait_for_transactions(self, n, timeout=5.0):
        """Wait for n messages (end of data seen); returns the list (maybe shorter)."""
        self.wait_for(lambda: len(self._messages_locked()) >= n, timeout)
        return self.messages()

    def wait_for_delivered(self, n, timeout=5.0):
        """Wait for n delivered messages (end of data answered 2xx); returns
        the list (maybe shorter)."""
        self.wait_for(
            lambda: sum(t.completed for c in self.connections for t in c.transactions) >= n, timeout
        )
        return self.delivered()

    def _messages_locked(self):
        return [t for c in self.connections for t in c.transactions if t.data is not None]

    def wait_for_connections(self, n, timeout=5.0):
        self.wait_for(lambda: len(self.connections) >= n, timeout)
        with self._cv:
            return list(self.connections)

    def wait_all_closed(self, timeout=5.0):
        """Wait until every connection so far was closed by the peer (or us).
        Returns True when they all are."""
        return bool(self.wait_for(lambda: all(c.closed for c in self.connections), timeout))

    def wait_command(self, verb, timeout=5.0):
        """Wait until some connection received a command with this verb."""
        verb = verb.upper()
        return bool(
            self.wait_for(lambda: any(v == verb for c in self.connections for v in c.verbs()), timeout)
        )

    def commands(self):
        """Every command line received, over all connections, in order."""
        with self._cv:
            return [cmd for c in self.connections for cmd in c.commands]

    def verbs(self):
        with self._cv:
            return [v for c in self.connections for v in c.verbs()]

    def raw(self):
        """Every byte received, over all connections, concatenated."""
        with self._cv:
            return b"".join(bytes(c.raw) for c in self.connections)

    def conns(self):
        with self._cv:
            return list(self.connections)

    def events(self, index=0):
        """Connection index's event log: [("recv", line) | ("send", reply)]."""
        with self._cv:
            if index >= len(self.connections):
                return []
            return list(self.connections[index].events)

    def events_raw(self, index=0):
        """Octets received on connection index when each event happened."""
        with self._cv:
            if index >= len(self.connections):
                return []
            return list(self.connections[index].events_raw)

    def wait_event(self, kind, prefix, index=0, timeout=5.0):
        """Wait for an event of kind ("recv"/"send") whose text starts with
        prefix (case-insensitive) on connection index; True when it came."""
        prefix = prefix.upper()

        def seen():
            if index >= len(self.connections):
                return False
            return any(k == kind and t.upper().startswith(prefix) for k, t in self.connections[index].events)

        return bool(self.wait_for(seen, timeout))

    # ---- server ------------------------------------------------------

    def _accept_loop(self):
        while self._running:
            try:
                sock, peer = self._listen.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cv:
                conn = Connection(len(self.connections), peer)
                conn.sock = sock
                self.connections.append(conn)
                self._cv.notify_all()
            threading.Thread(
                target=self._serve, args=(conn, sock), name=f"recorder-{conn.index}", daemon=True
            ).start()

    def _find_rule(self, when, line=""):
        with self._cv:
            for r in self.rules:
                if r.applies(when, line):
                    r.fired += 1
                    return r
        return None

    def _serve(self, conn, sock):
        session = _Session(self, conn, sock)
        try:
            session.run()
        except (_Hangup, OSError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
            with self._cv:
                conn.closed = True
                self._cv.notify_all()

    def _queue_id(self):
        with self._cv:
            q = self._next_queue_id
            self._next_queue_id += 1
            return q


class _Session:
    """The SMTP server side of one connection."""

    def __init__(self, rec, conn, sock):
        self.rec = rec
        self.conn = conn
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.txn = None  # the open transaction (after an accepted MAIL)
        self.helo = False
        self._mid = None  # the MIDDATA rule of the BDAT transaction

    # ---- I/O ----

    def _recv(self):
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            raise _Hangup()
        with self.rec._cv:
            self.conn.raw += data
            self.rec._cv.notify_all()
        self.buf += data

    def _send(self, data, text=None):
        """Send now, or queue behind a held reply. text is what the event
        log says (default: the bytes, without the final CRLF)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if text is None:
            text = data.decode("latin-1").rstrip("\r\n")
        with self.conn.send_lock:
            if self.conn.held is not None:
                self.conn.held.append((data, text))
                return
            self.sock.sendall(data)
            self.rec._record_send(self.conn, data, text)

    def _hold_starts(self, rule):
        """A HOLD rule fired: what we send from now on queues (a hold that
        is already on just goes on: its own count decides)."""
        with self.conn.send_lock:
            if self.conn.held is None:
                self.conn.held = []
                self.conn.hold_left = rule.hold

    def _line_arrived(self):
        """One more command line: a counted hold may be over."""
        with self.conn.send_lock:
            if self.conn.held is None or self.conn.hold_left is None:
                return
            self.conn.hold_left -= 1
            if self.conn.hold_left <= 0:
                self.rec._flush_held(self.conn)

    def _send_reply(self, text):
        if isinstance(text, (list, tuple)):
            lines = list(text)
        else:
            lines = text.replace("\r\n", "\n").split("\n")
        out = []
        for i, ln in enumerate(lines):
            code, rest = ln[:3], ln[4:]
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{code}{sep}{rest}\r\n")
        self._send("".join(out), "\n".join(o.rstrip("\r\n") for o in out))
        return int(lines[-1][:3])

    def _mid_fire(self, mid):
        """A MIDDATA rule whose point is reached: hang up (raises), stall
        (never returns), or send its garbage; True once it has fired."""
        if mid.action == HANGUP:
            raise _Hangup()
        if mid.action == STALL:
            self._stall()
        if mid.action == GARBAGE:
            self._send(mid.garbage)
            return True
        return False

    def _stall(self):
        """Never answer again; keep recording what arrives until EOF."""
        while True:
            self._recv()

    def _readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            self._recv()

    def _act(self, rule, default):
        """Carry out a rule's action (or send default); returns the reply code
        sent, or None when no reply was sent (garbage)."""
        if rule is not None and rule.delay:
            time.sleep(rule.delay)
        if rule is not None and rule.hold is not False:
            self._hold_starts(rule)
        if rule is None or rule.action is None:
            return self._send_reply(default)
        a = rule.action
        if a == STALL:
            self._stall()
        if a == HANGUP:
            raise _Hangup()
        if a == GARBAGE:
            self._send(rule.garbage)
            return None
        if isinstance(a, bytes):
            self._send(a)
            m = re.match(rb"(\d{3})", a)
            return int(m.group(1)) if m else None
        return self._send_reply(a)

    # ---- protocol ----

    def run(self):
        r = self.rec._find_rule("BANNER")
        with self.rec._cv:
            banner = self.rec.banner
        self._act(r, banner)
        while True:
            raw = self._readline()
            line = raw.rstrip(b"\r\n").decode("latin-1")
            with self.rec._cv:
                self.conn.commands.append(line)
                self.conn.events.append(("recv", line))
                self.conn.events_raw.append(len(self.conn.raw))
                self.rec._cv.notify_all()
            self._line_arrived()
            verb = line.split(" ", 1)[0].upper()
            handler = getattr(self, "_cmd_" + verb, None)
            if handler is None or not verb.isalpha():
                handler = self._cmd_unknown
            handler(verb, line)

    def _cmd_EHLO(self, verb, line):
        with self.rec._cv:
            caps = list(self.rec.caps)
        r = self.rec._find_rule(verb, line)
        lines = [f"250 {self.rec.name}"] + ["250 " + c for c in caps]
        code = self._act(r, lines)
        if code is not None and 200 <= code < 300:
            self.helo = True
            self._end_txn()

    def _cmd_HELO(self, verb, line):
        r = self.rec._find_rule(verb, line)
        code = self._act(r, f"250 {self.rec.name}")
        if code is not None and 200 <= code < 300:
            self.helo = True
            self._end_txn()

    def _cmd_XCLIENT(self, verb, line):
        # Postfix: a successful XCLIENT answers with a new greeting and the
        # client must say EHLO again.
        r = self.rec._find_rule(verb, line)
        with self.rec._cv:
            banner = self.rec.banner
        code = self._act(r, banner)
        if code is not None and 200 <= code < 300:
            self.helo = False
            self._end_txn()

    def _cmd_XFORWARD(self, verb, line):
        self._act(self.rec._find_rule(verb, line), "250 2.0.0 Ok")

    def _cmd_STARTTLS(self, verb, line):
        # The recorder speaks no TLS: told to answer 220, it then hangs up,
        # which the other side sees as a handshake that failed.
        if self._act(self.rec._find_rule(verb, line), "454 4.7.0 TLS not available") == 220:
            raise _Hangup()

    def _cmd_AUTH(self, verb, line):
        self._act(self.rec._find_rule(verb, line), "535 5.7.8 Authentication failed")

    def _cmd_BDAT(self, verb, line):
        with self.rec._cv:
            chunking = any(c.split()[0].upper() == "CHUNKING" for c in self.rec.caps if c.split())
        m = _BDAT_RE.match(line)
        if not chunking or m is None:
            default = "501 5.5.4 Syntax: BDAT count [LAST]" if chunking else "502 5.5.1 BDAT not implemented"
            self._act(self.rec._find_rule(verb, line), default)
            return
        size, last = int(m.group(1)), m.group(2) is not None
        txn = self.txn
        # RFC 3030 §2: the chunk is read whatever the answer will be.
        if txn is not None:
            with self.rec._cv:
                txn.bdat = True
                txn.chunks.append(size)
                first = len(txn.chunks) == 1
            if first:
                self._mid = self._take_middata()
        self._read_chunk(size, txn)
        r = self.rec._find_rule(verb, line)
        if r is None and last:
            r = self.rec._find_rule("EOD", "")
        if txn is None:
            default = "503 5.5.1 Error: need RCPT command"
        elif not txn.accepted_rcpts:
            default = "554 5.5.1 Error: no valid recipients"
        elif last:
            default = f"250 2.0.0 Ok: queued as R{self.rec._queue_id():06d}"
        else:
            default = f"250 2.0.0 Ok: {size} octets"
        if txn is not None and last and r is not None and r.action in (STALL, HANGUP):
            # Published before we go quiet: the message did arrive.
            with self.rec._cv:
                txn.data = bytes(txn.partial)
                self.rec._cv.notify_all()
        code = self._act(r, default)
        if txn is None or not last:
            return
        with self.rec._cv:
            txn.data = bytes(txn.partial)
            txn.eod_code = code
            txn.completed = code is not None and 200 <= code < 300
            self.rec._cv.notify_all()
        if txn.completed:
            self.txn = None

    def _take_middata(self):
        with self.rec._cv:
            for r in self.rec.rules:
                if r.when == "MIDDATA" and (r.times is None or r.fired < r.times):
                    r.fired += 1
                    return r
        return None

    def _read_chunk(self, size, txn):
        """Exactly size octets of BDAT chunk, into txn.partial (if any)."""
        left = size
        while True:
            take = bytes(self.buf[:left])
            del self.buf[: len(take)]
            left -= len(take)
            if txn is not None and take:
                with self.rec._cv:
                    txn.partial += take
                    self.rec._cv.notify_all()
            mid = self._mid if txn is not None else None
            if mid is not None and len(txn.partial) >= mid.after and self._mid_fire(mid):
                self._mid = None
            if left == 0:
                return
            self._recv()

    def _cmd_MAIL(self, verb, line):
        txn = Transaction(self.conn.index, line)
        with self.rec._cv:
            self.conn.transactions.append(txn)
        r = self.rec._find_rule(verb, line)
        if self.txn is not None:
            default = "503 5.5.1 Error: nested MAIL command"
        elif not self.helo:
            default = "503 5.5.1 Error: send HELO/EHLO first"
        else:
            default = "250 2.1.0 Ok"
        code = self._act(r, default)
        with self.rec._cv:
            txn.mail_code = code
        if self.txn is None and code is not None and 200 <= code < 300:
            self.txn = txn

    def _cmd_RCPT(self, verb, line):
        r = self.rec._find_rule(verb, line)
        txn = self.txn
        if txn is None:
            # Recorded in a transaction of its own so the test can see it.
            txn = Transaction(self.conn.index, None)
            with self.rec._cv:
                self.conn.transactions.append(txn)
            default = "503 5.5.1 Error: need MAIL command"
        else:
            default = "250 2.1.5 Ok"
        code = self._act(r, default)
        with self.rec._cv:
            txn.rcpts.append(line)
            txn.rcpt_codes.append(code)
            if self.txn is not None and code is not None and 200 <= code < 300:
                txn.accepted_rcpts.append(_addr(line))

    def _cmd_DATA(self, verb, line):
        r = self.rec._find_rule(verb, line)
        txn = self.txn
        if txn is None:
            default = "503 5.5.1 Error: need RCPT command"
        elif not txn.accepted_rcpts:
            default = "554 5.5.1 Error: no valid recipients"
        else:
            default = "354 End data with <CR><LF>.<CR><LF>"
        if txn is not None:
            with self.rec._cv:
                txn.data_cmd = True
        code = self._act(r, default)
        if txn is None or code != 354:
            return
        with self.rec._cv:
            txn.data_started = True
        msg = self._read_data(txn)
        r = self.rec._find_rule("EOD", "")
        if r is not None and r.action in (STALL, HANGUP):
            # Published before we go quiet: the message did arrive.
            with self.rec._cv:
                txn.data = msg
                self.rec._cv.notify_all()
        code = self._act(r, f"250 2.0.0 Ok: queued as R{self.rec._queue_id():06d}")
        # Published after the reply went out, so a test that saw the proxy's
        # answer finds the outcome recorded.
        with self.rec._cv:
            txn.data = msg
            txn.eod_code = code
            txn.completed = code is not None and 200 <= code < 300
            self.rec._cv.notify_all()
        self.txn = None

    def _read_data(self, txn):
        """Read the message up to CRLF.CRLF (the CRLF of the DATA line counts
        as the first one) and return it; leave any pipelined bytes after it
        in self.buf. txn.partial follows what has arrived so far."""
        mid = None
        with self.rec._cv:
            for r in self.rec.rules:
                if r.when == "MIDDATA" and (r.times is None or r.fired < r.times):
                    r.fired += 1
                    mid = r
                    break
        with self.rec._cv:
            lenient = self.rec.lenient_end
        scanned = 0
        while True:
            data = bytes(self.buf)
            if lenient:
                end, msg_len = _lenient_end(data)
            elif data.startswith(b".\r\n"):
                end, msg_len = 3, 0
            else:
                i = data.find(b"\r\n.\r\n", max(0, scanned - 4))
                end, msg_len = (i + 5, i + 2) if i >= 0 else (None, None)
            if end is not None and not (mid is not None and msg_len >= mid.after):
                with self.rec._cv:
                    txn.partial[:] = data[:msg_len]
                    self.rec._cv.notify_all()
                del self.buf[:end]
                return data[:msg_len]
            with self.rec._cv:
                txn.partial[:] = data if end is None else data[:msg_len]
                self.rec._cv.notify_all()
            if mid is not None and len(txn.partial) >= mid.after and self._mid_fire(mid):
                mid = None
                continue
            scanned = len(data)
            self._recv()

    def _end_txn(self):
        if self.txn is not None:
            self.txn = None

    def _cmd_RSET(self, verb, line):
        code = self._act(self.rec._find_rule(verb, line), "250 2.0.0 Ok")
        if self.txn is not None:
            with self.rec._cv:
                self.txn.reset = True
        if code is not None and 200 <= code < 300:
            self.txn = None

    def _cmd_NOOP(self, verb, line):
        self._act(self.rec._find_rule(verb, line), "250 2.0.0 Ok")

    def _cmd_VRFY(self, verb, line):
        self._act(self.rec._find_rule(verb, line), "252 2.0.0 Send some mail, I'll try my best")

    def _cmd_HELP(self, verb, line):
        self._act(self.rec._find_rule(verb, line), "214 2.0.0 recorder.test")

    def _cmd_QUIT(self, verb, line):
        self._act(self.rec._find_rule(verb, line), "221 2.0.0 Bye")
        raise _Hangup()

    def _cmd_unknown(self, verb, line):
        self._act(self.rec._find_rule(verb, line), "500 5.5.2 Error: command not recognized")
