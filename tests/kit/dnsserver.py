"""dnsserver.py - a scripted DNS responder for integration tests.

A real name server on 127.0.0.1, UDP and TCP on the same free port, that
answers from records the test configures and remembers every question:

  * records: A, AAAA, PTR, TXT (several values per name and type allowed);
    names are case-insensitive; a name with records of other types only gets
    NOERROR and no answer (NODATA); any other name gets NXDOMAIN;
  * behaviours for a name and every name below it (a zone): never answer
    (the resolver times out), answer SERVFAIL, or answer late (delay);
  * the question section is echoed exactly as asked, case included, and the
    answers point back at it, so a resolver using DNS 0x20 (random case)
    finds its own spelling in the answer;
  * a log of questions: the name as asked (with its case), the type, the
    transport and the time it arrived.

    dns = DnsServer().start()
    dns.a("host.test", "192.0.2.1", "192.0.2.2")
    dns.aaaa("host.test", "2001:db8::1")
    dns.ptr("192.0.2.1", "host.test")           # 1.2.0.192.in-addr.arpa
    dns.txt("host.test", "v=spf1 -all")
    dns.listing("bl.test", "192.0.2.99")         # 99.2.0.192.bl.test A 127.0.0.2
    dns.never("slow.test")                       # no answer, ever
    dns.servfail("broken.test")
    dns.delay("late.test", 0.5)                  # answers 0.5 s later
    ...  # point the daemon at f"127.0.0.1:{dns.port}"
    dns.questions()                              # [Question(name, qtype, ...), ...]
    dns.wait_questions(3, timeout=5)
    dns.stop()

reverse_name(ip) is the RFC 5782 / in-addr.arpa reversal of an address
without its suffix: "4.3.2.1" for 1.2.3.4, 32 nibbles for IPv6.

One thread serves UDP, one accepts TCP and one serves each TCP connection;
late answers go out from timers. State is guarded by one condition variable,
so every method is safe from the test thread.
"""

import ipaddress
import socket
import struct
import threading
import time

TYPES = {"A": 1, "PTR": 12, "TXT": 16, "AAAA": 28}
TYPE_NAMES = {v: k for k, v in TYPES.items()}

NOERROR = 0
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
FORMERR = 1

NEVER = "never"
SERVFAIL_RULE = "servfail"
DELAY = "delay"


def reverse_name(ip):
    """The reversed form of an address for PTR and DNSBL names, no suffix:
    "4.3.2.1" for 1.2.3.4; "1.0.0.0...8.b.d.0.1.0.0.2" for 2001:db8::1."""
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return ".".join(reversed(str(a).split(".")))
    return ".".join(reversed(a.exploded.replace(":", "")))


def ptr_name(ip):
    """The full PTR name of an address."""
    a = ipaddress.ip_address(ip)
    return reverse_name(ip) + (".in-addr.arpa" if a.version == 4 else ".ip6.arpa")


def _norm(name):
    return name.rstrip(".").lower()


def _under(name, zone):
    return name == zone or name.endswith("." + zone)


class Question:
    """One question as it arrived."""

    def __init__(self, name, qtype, proto, at, qid):
        self.name = name  # as asked: case kept, no trailing dot
        self.qtype = qtype  # "A", "AAAA", "PTR", "TXT" or the number as a string
        self.proto = proto  # "udp" or "tcp"
        self.at = at  # time.monotonic() when it arrived
        self.id = qid
        self.answered_at = None  # time.monotonic() when the answer went out (None: never)
        self.rcode = None  # what we answered

    @property
    def lname(self):
        return self.name.lower()

    def __repr__(self):
        return f"<Question {self.name} {self.qtype} {self.proto} rcode={self.rcode}>"


class _Rule:
    def __init__(self, zone, action, seconds=0.0):
        self.zone = zone
        self.action = action
        self.seconds = seconds


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if not label:
            continue
        b = label.encode("ascii")
        if len(b) > 63:
            raise ValueError(f"label too long: {label!r}")
        out += bytes([len(b)]) + b
    return out + b"\x00"


def _parse_name(msg, off):
    """(name, offset after the name in the question) with compression."""
    labels = []
    end = None
    jumps = 0
    while True:
        if off >= len(msg):
            raise ValueError("name runs past the message")
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise ValueError("truncated pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            if jumps > 20:
                raise ValueError("pointer loop")
            continue
        if n & 0xC0:
            raise ValueError("bad label type")
        labels.append(msg[off + 1 : off + 1 + n].decode("latin-1"))
        off += 1 + n
    return ".".join(labels), (end if end is not None else off)


def _rdata(qtype, value):
    if qtype == TYPES["A"]:
        return ipaddress.IPv4Address(value).packed
    if qtype == TYPES["AAAA"]:
        return ipaddress.IPv6Address(value).packed
    if qtype == TYPES["PTR"]:
        return _encode_name(value)
    if qtype == TYPES["TXT"]:
        b = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        out = b""
        for i in range(0, max(len(b), 1), 255):
            chunk = b[i : i + 255]
            out += bytes([len(chunk)]) + chunk
        return out
    raise ValueError(qtype)


class DnsServer:
    """The responder. start() binds and serves; stop() closes all."""

    def __init__(self, host="127.0.0.1", ttl=60):
        self.host = host
        self.port = None
        self.ttl = ttl
        self._cv = threading.Condition()
        self._records = {}  # lower-case name -> {qtype: [values]}
        self._rules = []
        self._log = []
        self._udp = None
        self._tcp = None
        self._threads = []
        self._timers = []
        self._tcp_conns = []
        self._running = False
        self._send_lock = threading.Lock()

    # ---- set-up -------------------------------------------------------

    def start(self):
        for _ in range(50):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind((self.host, 0))
            port = u.getsockname()[1]
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                t.bind((self.host, port))
            except OSError:
                u.close()
                t.close()
                continue
            break
        else:
            raise OSError("no port free for both UDP and TCP")
        t.listen(64)
        self._udp, self._tcp, self.port = u, t, port
        self._running = True
        for target, name in ((self._udp_loop, "dns-udp"), (self._accept_loop, "dns-tcp")):
            th = threading.Thread(target=target, name=name, daemon=True)
            th.start()
            self._threads.append(th)
        return self

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def stop(self):
        self._running = False
        with self._cv:
            timers = list(self._timers)
            conns = list(self._tcp_conns)
        for tm in timers:
            tm.cancel()
        for s in [self._udp, self._tcp] + conns:
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for th in self._threads:
            th.join(2)

    def reset(self):
        """Forget records, rules and the log."""
        with self._cv:
            self._records = {}
            self._rules = []
            self._log = []

    def add(self, name, qtype, *values):
        """Add records: add("host.test", "A", "192.0.2.1", ...)."""
        t = TYPES[qtype.upper()] if isinstance(qtype, str) else int(qtype)
        for v in values:
            _rdata(t, v)  # validate now, not in the server thread
        with self._cv:
            self._records.setdefault(_norm(name), {}).setdefault(t, []).extend(values)
        return self

    def a(self, name, *ips):
        return self.add(name, "A", *ips)

    def aaaa(self, name, *ips):
        return self.add(name, "AAAA", *ips)

    def txt(self, name, *texts):
        return self.add(name, "TXT", *texts)

    def ptr(self, ip, *names):
        """PTR records for an address (the reversed name is made here)."""
        return self.add(ptr_name(ip), "PTR", *names)

    def listing(self, zone, ip_or_domain, *answers):
        """List an address (reversed) or a domain (as is) in a DNSBL zone:
        an A record (127.0.0.2 unless answers are given)."""
        try:
            left = reverse_name(ip_or_domain)
        except ValueError:
            left = ip_or_domain
        return self.a(f"{left}.{zone}", *(answers or ("127.0.0.2",)))

    def never(self, zone):
        """Never answer questions for zone or any name below it."""
        return self._rule(zone, NEVER)

    def servfail(self, zone):
        """Answer SERVFAIL for zone and any name below it."""
        return self._rule(zone, SERVFAIL_RULE)

    def delay(self, zone, seconds):
        """Answer normally, but only after seconds, for zone and below."""
        return self._rule(zone, DELAY, seconds)

    def _rule(self, zone, action, seconds=0.0):
        with self._cv:
            self._rules.append(_Rule(_norm(zone), action, seconds))
        return self

    # ---- the log ------------------------------------------------------

    def questions(self, name=None, qtype=None):
        """The questions so far, in arrival order; name (any case) and qtype
        filter them (name: that exact name)."""
        with self._cv:
            out = list(self._log)
        if name is not None:
            out = [q for q in out if q.lname == _norm(name)]
        if qtype is not None:
            out = [q for q in out if q.qtype == qtype.upper()]
        return out

    def names(self):
        """The names asked, as asked, in order."""
        return [q.name for q in self.questions()]

    def clear_log(self):
        with self._cv:
            self._log = []

    def wait_questions(self, n, timeout=5.0, predicate=None):
        """Wait until n questions (matching predicate, if given) arrived;
        returns them (maybe fewer after timeout)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                got = [q for q in self._log if predicate is None or predicate(q)]
                left = deadline - time.monotonic()
                if len(got) >= n or left <= 0:
                    return got
                self._cv.wait(min(left, 0.1))

    # ---- the server ---------------------------------------------------

    def _udp_loop(self):
        while self._running:
            try:
                data, peer = self._udp.recvfrom(4096)
            except OSError:
                return

            def send(resp, short, peer=peer):
                # 512 octets without EDNS: the question only, with TC set.
                if len(resp) > 512:
                    resp = short
                try:
                    self._udp.sendto(resp, peer)
                except OSError:
                    pass

            self._handle(data, "udp", send)

    def _accept_loop(self):
        while self._running:
            try:
                s, _ = self._tcp.accept()
            except OSError:
                return
            with self._cv:
                self._tcp_conns.append(s)
            th = threading.Thread(target=self._tcp_serve, args=(s,), name="dns-tcp-conn", daemon=True)
            th.start()

    def _tcp_serve(self, s):
        buf = b""
        try:
            while self._running:
                while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                n = struct.unpack("!H", buf[:2])[0]
                msg, buf = buf[2 : 2 + n], buf[2 + n :]

                def send(resp, short, s=s):
                    with self._send_lock:
                        try:
                            s.sendall(struct.pack("!H", len(resp)) + resp)
                        except OSError:
                            pass

                self._handle(msg, "tcp", send)
        except OSError:
            pass
        finally:
            with self._cv:
                if s in self._tcp_conns:
                    self._tcp_conns.remove(s)
            try:
                s.close()
            except OSError:
                pass

    def _handle(self, msg, proto, send):
        now = time.monotonic()
        if len(msg) < 12:
            return
        qid, flags, qd, _an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
        if flags & 0x8000:
            return  # a response: not for us
        opcode = (flags >> 11) & 0xF
        try:
            if qd != 1:
                raise ValueError("one question per message")
            name, off = _parse_name(msg, 12)
            if off + 4 > len(msg):
                raise ValueError("truncated question")
            qtype, qclass = struct.unpack("!HH", msg[off : off + 4])
        except ValueError:
            h = self._header(qid, flags, FORMERR, 0, 0)
            send(h, h)
            return
        question_raw = msg[12 : off + 4]
        q = Question(name, TYPE_NAMES.get(qtype, str(qtype)), proto, now, qid)
        lname = _norm(name)
        with self._cv:
            self._log.append(q)
            rule = None
            for r in self._rules:
                if _under(lname, r.zone):
                    rule = r
                    break
            recs = self._records.get(lname)
            values = list(recs.get(qtype, [])) if recs else []
            self._cv.notify_all()
        if rule is not None and rule.action == NEVER:
            return
        if opcode != 0 or qclass != 1:
            rcode, values = NOTIMP, []
        elif rule is not None and rule.action == SERVFAIL_RULE:
            rcode, values = SERVFAIL, []
        elif recs is None:
            rcode, values = NXDOMAIN, []
        else:
            rcode = NOERROR
        resp = self._header(qid, flags & ~0x0200, rcode, 1, len(values)) + question_raw
        short = self._header(qid, flags | 0x0200, rcode, 1, 0) + question_raw
        for v in values:
            rd = _rdata(qtype, v)
            # The owner is a pointer to the question's name: its case exactly.
            resp += struct.pack("!HHHIH", 0xC00C, qtype, 1, self.ttl, len(rd)) + rd

        def answer():
            with self._cv:
                q.answered_at = time.monotonic()
                q.rcode = rcode
                self._cv.notify_all()
            send(resp, short)

        if rule is not None and rule.action == DELAY and rule.seconds > 0:
            tm = threading.Timer(rule.seconds, answer)
            tm.daemon = True
            with self._cv:
                self._timers = [t for t in self._timers if t.is_alive()] + [tm]
            tm.start()
        else:
            answer()

    @staticmethod
    def _header(qid, qflags, rcode, qd, an):
        rd = qflags & 0x0100
        opcode = qflags & 0x7800
        tc = qflags & 0x0200  # set by the caller for a truncated answer
        flags = 0x8000 | opcode | 0x0400 | tc | rd | 0x0080 | rcode  # QR AA TC RD RA
        return struct.pack("!HHHHHH", qid, flags, qd, an, 0, 0)
