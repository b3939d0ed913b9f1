#!/usr/bin/python3
"""conns.py PATH-TO-PORTCULLIS - 10,000 idle sessions and one 50 MB message
(make bench-conns, issue 19 item 5). See bench/README.md.

For workers = 1 and then workers = 2, each against its own sink and its
own portcullis on fresh loopback ports:

1. the proxy's RSS at rest (VmRSS summed over the master and its workers);
2. client processes (this script again, with --client) open idle sessions
   from 127.0.0.2 and up (bind before connect): connect, read the 220
   banner, EHLO, read the 250, then nothing. A process stops opening after
   a few failures, so a proxy that runs out of descriptors ends the ramp
   instead of hanging it; what failed, and after how many sessions, is
   reported;
3. the RSS with the sessions open, and where it went (/proc/PID/smaps);
4. one 50 MB message (smtplib) while they stay open, with the proxy's RSS
   sampled every 10 ms and its VmHWM before and after; the sink must have
   taken it whole (its size, found by its Message-ID);
5. the sessions still open afterwards, then everything stopped by PID.

The sink is this script again (--sink): smtp-sink costs too much per idle
session to hold 10,000 (see below). A table closes the run, then the
layout of struct session (gdb, when installed). The exit status is 1 only
when the harness itself fails (a sink or proxy that does not start, a
client process that dies or does not answer in time, the run past its
bound); a proxy that refuses sessions or loses the message is a result,
printed as such.

Environment: CONNS_SESSIONS (default 10000), CONNS_WORKERS (default "1 2"),
CONNS_CLIENTS (client processes, default 2), BENCH_KEEP=1 keeps the work
dir (configs, the proxy's logs, the sink's list of messages).
"""

import errno
import json
import os
import re
import select
import selectors
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

PYTHON = "/usr/bin/python3"

SESSIONS = int(os.environ.get("CONNS_SESSIONS", "10000"))
WORKER_COUNTS = [int(w) for w in os.environ.get("CONNS_WORKERS", "1 2").split()]
CLIENTS = int(os.environ.get("CONNS_CLIENTS", "2"))
PER_ADDRESS = 1000  # sessions per client source address (127.0.0.x)
WINDOW = 100  # handshakes in flight per client process (listen backlog: 511)
HANDSHAKE_S = 10  # connect + banner + EHLO, per session
MAX_FAIL = 10  # failed sessions after which a client process stops opening
OPEN_PHASE_S = 90  # a client process reports within this, or the harness fails
HOLD_S = 240  # a client process left alone exits after this
RUN_BOUND_S = 290  # the whole bench (the brief: < 5 minutes)
MESSAGE = 50 * 1024 * 1024  # body octets of the big message
SPOOL_MEMORY = 1024 * 1024  # spool_memory in the bench config (its default)
GROWTH_ALLOWANCE = 2 * 1024 * 1024  # issue 19: growth <= spool_memory + 2 MB
RSS_GOAL = 200 * 1024 * 1024  # issue 19: 10,000 sessions under 200 MB
MAX_CONNECTIONS = SESSIONS + 100

# IP_BIND_ADDRESS_NO_PORT (Linux 4.2): bind() picks no port, connect() does,
# by the whole 4-tuple; Python 3.11's socket module does not name it.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class HarnessError(Exception):
    pass


# ---------------------------------------------------------------- client


class Session:
    __slots__ = ("sock", "state", "buf", "deadline")

    def __init__(self, sock, deadline):
        self.sock = sock
        self.state = "connect"
        self.buf = b""
        self.deadline = deadline


def reply_done(buf):
    """The last complete line of a reply in buf, once its final line
    ("250 ..." rather than "250-...") is there; else None."""
    if not buf.endswith(b"\n"):
        return None
    last = buf.rstrip(b"\r\n").split(b"\n")[-1].rstrip(b"\r")
    if len(last) >= 4 and last[3:4] == b"-":
        return None
    return last


def client_open(port, addrs, count):
    """Open up to count idle sessions; returns (open sockets, report)."""
    sel = selectors.DefaultSelector()
    opened = []
    inflight = {}
    failures = {}
    first_fail_at = None
    banners = 0
    launched = 0
    t0 = time.monotonic()

    def fail(s, why):
        nonlocal first_fail_at
        if first_fail_at is None:
            first_fail_at = len(opened)
        failures[why] = failures.get(why, 0) + 1
        if s is not None:
            sel.unregister(s.sock)
            del inflight[s.sock.fileno()]
            s.sock.close()

    def nfail():
        return sum(failures.values())

    while (launched < count and nfail() < MAX_FAIL) or inflight:
        while launched < count and nfail() < MAX_FAIL and len(inflight) < WINDOW:
            addr = addrs[(launched // PER_ADDRESS) % len(addrs)]
            launched += 1
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as e:
                fail(None, "client socket(): %s" % os.strerror(e.errno))
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((addr, 0))
                rc = sock.connect_ex(("127.0.0.1", port))
            except OSError as e:
                sock.close()
                fail(None, "client bind/connect: %s" % os.strerror(e.errno))
                continue
            if rc not in (0, errno.EINPROGRESS):
                sock.close()
                fail(None, "connect: %s" % os.strerror(rc))
                continue
            s = Session(sock, time.monotonic() + HANDSHAKE_S)
            inflight[sock.fileno()] = s
            sel.register(sock, selectors.EVENT_WRITE, s)
        for key, _ in sel.select(0.05):
            s = key.data
            if s.state == "connect":
                err = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(s, "connect: %s" % os.strerror(err))
                    continue
                s.state = "banner"
                sel.modify(s.sock, selectors.EVENT_READ, s)
                continue
            try:
                data = s.sock.recv(4096)
            except OSError as e:
                fail(s, "%s: %s" % (s.state, os.strerror(e.errno)))
                continue
            if not data:
                fail(s, "closed before the %s" % ("banner" if s.state == "banner" else "EHLO reply"))
                continue
            s.buf += data
            last = reply_done(s.buf)
            if last is None:
                continue
            text = last.decode("ascii", "replace")[:70]
            if s.state == "banner":
                if not last.startswith(b"220"):
                    fail(s, "banner: " + text)
                    continue
                banners += 1
                s.state = "ehlo"
                s.buf = b""
                s.sock.send(b"EHLO conns.bench.test\r\n")  # tiny: fits the empty socket buffer
            else:
                if not last.startswith(b"250"):
                    fail(s, "EHLO: " + text)
                    continue
                sel.unregister(s.sock)
                del inflight[s.sock.fileno()]
                s.buf = b""
                opened.append(s.sock)
        now = time.monotonic()
        for s in [s for s in inflight.values() if s.deadline < now]:
            fail(s, "no %s within %d s" % ("connection" if s.state == "connect" else
                                           "banner" if s.state == "banner" else "EHLO reply",
                                           HANDSHAKE_S))
    sel.close()
    report = {
        "opened": len(opened),
        "banners": banners,
        "launched": launched,
        "failures": failures,
        "first_fail_at": first_fail_at,
        "seconds": round(time.monotonic() - t0, 2),
    }
    return opened, report


def client_closed(socks):
    """How many of the idle sessions the proxy has closed (or written to)."""
    p = select.poll()
    for s in socks:
        p.register(s.fileno(), select.POLLIN | select.POLLRDHUP)
    return len(p.poll(0))


def client_main(port, addrs, count):
    """A client process: open, report one JSON line, then obey stdin."""
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.alarm(HOLD_S)
    socks, report = client_open(port, addrs, count)
    print(json.dumps(report), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "check":
            print(json.dumps({"closed": client_closed(socks)}), flush=True)
        elif cmd[0] == "shed":  # close a few, to make room in the proxy
            n = min(int(cmd[1]), len(socks))
            for s in socks[len(socks) - n:]:
                s.close()
            del socks[len(socks) - n:]
            print(json.dumps({"shed": n}), flush=True)
        elif cmd[0] == "close":
            break
    for s in socks:
        s.close()
    return 0


# ---------------------------------------------------------------- sink

# smtp-sink cannot be the backend here: it costs about 260 KB and a scan of
# all its sessions per session (5,000 idle sessions straight into it took
# 25 s and 1.3 GB). This one holds an idle session for a few KB.
SINK_EHLO = (b"250-sink.bench.test\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n"
             b"250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
SINK_REPLIES = {b"HELO": b"250 sink.bench.test\r\n", b"MAIL": b"250 2.1.0 Ok\r\n",
                b"RCPT": b"250 2.1.5 Ok\r\n", b"RSET": b"250 2.0.0 Ok\r\n",
                b"NOOP": b"250 2.0.0 Ok\r\n", b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
                b"QUIT": b"221 2.0.0 Bye\r\n", b"EHLO": SINK_EHLO}


class SinkConn:
    __slots__ = ("sock", "inb", "out", "data", "size", "head", "tail")

    def __init__(self, sock):
        self.sock = sock
        self.inb = b""
        self.out = b"220 sink.bench.test ESMTP\r\n"
        self.data = False
        self.size = 0
        self.head = b""  # the first 64 KB of a message, for its Message-ID
        self.tail = b""  # the last 4 octets, for an end of data split by reads


def sink_feed(c, chunk, results):
    """Commands and message bytes from one read; False once QUIT is answered."""
    while chunk:
        if c.data:
            both = c.tail + chunk
            end = both.find(b"\r\n.\r\n")
            if end < 0:
                c.size += len(chunk)
                if len(c.head) < 65536:
                    c.head += chunk[:65536 - len(c.head)]
                c.tail = both[-4:]
                return True
            # The message ends at "\r\n" before the dot: its CR LF is its own.
            used = end + 5 - len(c.tail)
            c.size += end + 2 - len(c.tail)
            if len(c.head) < 65536:
                c.head += chunk[:max(0, min(used, 65536 - len(c.head)))]
            i = c.head.find(b"Message-ID: <")
            token = c.head[i + 13:c.head.find(b">", i)].decode("ascii", "replace") if i >= 0 else "-"
            results.write("%d %s\n" % (c.size, token))
            results.flush()
            c.out += b"250 2.0.0 Ok: queued\r\n"
            c.data, chunk = False, chunk[used:]
            continue
        c.inb += chunk
        chunk = b""
        while b"\n" in c.inb:
            line, c.inb = c.inb.split(b"\n", 1)
            verb = line[:4].upper()
            c.out += SINK_REPLIES.get(verb, b"502 5.5.2 Error: command not recognized\r\n")
            if verb == b"QUIT":
                return False
            if verb == b"DATA":
                c.data, c.size, c.head, c.tail = True, 0, b"", b"\r\n"
                chunk, c.inb = c.inb, b""
                break
    return True


def sink_flush(sel, c):
    try:
        n = c.sock.send(c.out)
    except BlockingIOError:
        n = 0
    c.out = c.out[n:]
    sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), c)


def sink_main(port, results_path):
    """A backend for the proxy: every command accepted, every message's size
    and Message-ID appended to results_path. Runs until SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.alarm(RUN_BOUND_S)
    results = open(results_path, "a")
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4096)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    while True:
        for key, ev in sel.select():
            c = key.data
            if c is None:
                try:
                    sock, _ = ls.accept()
                except OSError:  # out of descriptors: the proxy sees a timeout
                    continue
                sock.setblocking(False)
                c = SinkConn(sock)
                sel.register(sock, selectors.EVENT_READ, c)
                try:
                    sink_flush(sel, c)
                except OSError:
                    sel.unregister(sock)
                    sock.close()
                continue
            go = True
            if ev & selectors.EVENT_READ:
                try:
                    chunk = c.sock.recv(262144)
                except OSError:
                    chunk = b""
                go = bool(chunk) and sink_feed(c, chunk, results)
            if c.out:
                try:
                    sink_flush(sel, c)
                except OSError:
                    go = False
            if not go:
                sel.unregister(c.sock)
                c.sock.close()


# ---------------------------------------------------------------- harness


def free_port(taken):
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in taken:
            taken.add(port)
            return port


def listening(port):
    """Is something listening on 127.0.0.1:port? (/proc/net/tcp, state 0A)"""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 3 and fields[1] == want and fields[3] == "0A":
                return True
    return False


def wait_listen(port, proc, what, bound=10):
    end = time.monotonic() + bound
    while time.monotonic() < end:
        if listening(port):
            return
        if proc.poll() is not None:
            raise HarnessError("%s exited at start (status %s)" % (what, proc.returncode))
        time.sleep(0.05)
    raise HarnessError("%s does not listen on 127.0.0.1:%d after %d s" % (what, port, bound))


def stop(proc, bound=10):
    """SIGTERM, then SIGKILL after bound seconds; by PID only."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(bound)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return None


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def statuses(pid, keys):
    """kB fields of /proc/PID/status, in bytes; 0 if the process is gone."""
    out = dict.fromkeys(keys, 0)
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k = line.split(":", 1)[0]
                if k in out:
                    out[k] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def status(pid, key):
    return statuses(pid, (key,))[key]


def proxy_pids(master):
    return [master] + children(master)


def rss(pids):
    return sum(status(p, "VmRSS") for p in pids)


def fds(pids):
    n = 0
    for p in pids:
        try:
            n += len(os.listdir("/proc/%d/fd" % p))
        except OSError:
            pass
    return n


def smaps(pids):
    """Rss of the proxy's mappings by kind: heap, anonymous, files, stack."""
    out = {"heap": 0, "anon": 0, "files": 0, "other": 0}
    for p in pids:
        try:
            f = open("/proc/%d/smaps" % p)
        except OSError:
            continue
        with f:
            kind = None
            for line in f:
                fields = line.split()
                if not fields[0].endswith(":"):
                    name = fields[5] if len(fields) > 5 else ""
                    kind = ("heap" if name == "[heap]" else "anon" if name == "" else
                            "files" if name.startswith("/") else "other")
                elif fields[0] == "Rss:":
                    out[kind] += int(fields[1]) * 1024
    return out


def layout(binary, struct):
    """sizeof(struct) and its members of 1 KB or more, from the binary's debug
    information (gdb's ptype /o): [(path, size)], total; None without gdb."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return None
    try:
        out = subprocess.run([gdb, "-batch", "-nx", "-ex", "ptype /o struct " + struct, binary],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    member = re.compile(r"^/\*\s+\d+(?::\s*\d+)?\s+\|\s+(\d+)\s+\*/\s+(.*)$")
    close = re.compile(r"^\s*}\s*(\w+)(\[\d+\])*;")
    # A struct's members come before its name (at its closing brace): each
    # open struct remembers where its members start in big, to prefix them.
    stack, big, total = [], [], None
    for line in out.splitlines():
        m = member.match(line)
        c = close.match(line)
        if m and m.group(2).rstrip().endswith("{"):
            stack.append((int(m.group(1)), len(big)))
        elif m:
            name = re.search(r"(\w+)(\[\d+\])*;\s*$", m.group(2))
            if name and int(m.group(1)) >= 1024:
                big.append((name.group(1), int(m.group(1)), True))
        elif c and stack:
            size, start = stack.pop()
            big[start:] = [(c.group(1) + "." + n, z, leaf) for n, z, leaf in big[start:]]
            if size >= 1024:
                big.append((c.group(1), size, False))
        t = re.search(r"total size \(bytes\):\s*(\d+)", line)
        if t and not stack:
            total = int(t.group(1))
    return None if total is None else (total, big)


def mb(n):
    return "%.1f MB" % (n / 1048576.0)


SAMPLED = ("VmRSS", "RssAnon", "RssFile")


def sample(pids):
    """VmRSS, RssAnon (heap, stacks, anonymous maps) and RssFile (mapped
    files: the spool file, when libevent maps it to send it), summed."""
    out = dict.fromkeys(SAMPLED, 0)
    for p in pids:
        for k, v in statuses(p, SAMPLED).items():
            out[k] += v
    return out


class Sampler(threading.Thread):
    """The proxy's summed VmRSS, RssAnon and RssFile every 10 ms, until
    stopped: the peak of each."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = dict.fromkeys(SAMPLED, 0)
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            for k, v in sample(self.pids).items():
                self.peak[k] = max(self.peak[k], v)
            self.halt.wait(0.01)


class Client:
    def __init__(self, script, port, addrs, count, work, n):
        self.log = open(os.path.join(work, "client%d.err" % n), "w")
        self.proc = subprocess.Popen(
            [PYTHON, script, "--client", str(port), str(count)] + addrs,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def read(self, bound):
        """One JSON line from the client, within bound seconds."""
        end = time.monotonic() + bound
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise HarnessError("client process %d did not answer in %d s" % (self.proc.pid, bound))
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                line = self.proc.stdout.readline()
                if not line:
                    raise HarnessError("client process %d died (status %s; see client*.err)" %
                                       (self.proc.pid, self.proc.poll()))
                return json.loads(line)

    def ask(self, cmd, bound=30):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.read(bound)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("close\n")
                self.proc.stdin.close()
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def big_message(token):
    head = ("From: <bench@bench.test>\r\nTo: <sink@sink.test>\r\n"
            "Subject: conns 50 MB\r\nMessage-ID: <%s>\r\n\r\n" % token).encode()
    line = b"y" * 78 + b"\r\n"
    return head + line * (MESSAGE // len(line))


def push_message(port, msg):
    """Send msg through the proxy; None, or why it failed."""
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="big.bench.test", timeout=60) as s:
            s.sendmail("bench@bench.test", ["sink@sink.test"], msg)
        return None
    except (smtplib.SMTPException, OSError) as e:
        return "%s: %s" % (type(e).__name__, e)


def sink_got(path, token):
    """The size of the message with this Message-ID the sink took, or 0.
    The proxy answers the client only after the sink's 250, so the line
    is there by then."""
    try:
        with open(path) as f:
            for line in f:
                size, _, tok = line.strip().partition(" ")
                if tok == token:
                    return int(size)
    except OSError:
        pass
    return 0


def log_lines(path, *needles):
    """The proxy log's lines holding any of needles: (count, first)."""
    n, first = 0, None
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if any(s in line for s in needles):
                    n += 1
                    first = first or line.strip()
    except OSError:
        pass
    return n, first


def log_tail(path, n=3):
    """The last n lines of the proxy's log that are not a session's."""
    try:
        with open(path, errors="replace") as f:
            lines = [x.rstrip() for x in f if " connect from " not in x and "disconnect from" not in x]
    except OSError:
        return []
    return lines[-n:]


def run(binary, workers, work, script, base_addr, taken):
    """One leg: a sink, a proxy with this many workers, the sessions, the message."""
    r = {"workers": workers}
    d = os.path.join(work, "w%d" % workers)
    os.mkdir(d)
    sink_port, proxy_port = free_port(taken), free_port(taken)
    received = os.path.join(d, "sink.messages")
    sink = proxy = None
    clients = []
    try:
        with open(os.path.join(d, "sink.err"), "w") as err:
            sink = subprocess.Popen([PYTHON, script, "--sink", str(sink_port), received],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        wait_listen(sink_port, sink, "the sink")
        conf = os.path.join(d, "conns.conf")
        with open(conf, "w") as f:
            f.write("""# make bench-conns: idle sessions, no filters
listen = 127.0.0.1:%d
backend = 127.0.0.1:%d
hostname = bench.test
workers = %d
max_connections = %d
max_connections_per_ip = %d
max_message_size = 64M
spool_memory = %d
spool_dir = %s
shutdown_timeout = 2s
backend_xclient = no
client_rdns = no
""" % (proxy_port, sink_port, workers, MAX_CONNECTIONS, MAX_CONNECTIONS, SPOOL_MEMORY, d))
        chk = subprocess.run([binary, "-t", "-c", conf], capture_output=True, text=True, timeout=30)
        if chk.returncode != 0:
            raise HarnessError("portcullis -t rejects the config: " + (chk.stderr or chk.stdout).strip())
        plog = os.path.join(d, "proxy.log")
        r["log"] = plog
        with open(plog, "w") as err:
            proxy = subprocess.Popen([binary, "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=err)
        wait_listen(proxy_port, proxy, "portcullis")
        end = time.monotonic() + 10
        while workers > 1 and len(children(proxy.pid)) < workers:
            if time.monotonic() > end or proxy.poll() is not None:
                raise HarnessError("portcullis did not start %d workers" % workers)
            time.sleep(0.05)
        time.sleep(0.5)
        pids = proxy_pids(proxy.pid)
        r["rss_before"] = rss(pids)
        r["smaps_before"] = smaps(pids)
        r["fds_before"] = fds(pids)

        # The sessions: CLIENTS processes, PER_ADDRESS sessions a source address.
        share = [SESSIONS // CLIENTS + (1 if i < SESSIONS % CLIENTS else 0) for i in range(CLIENTS)]
        nextaddr = base_addr
        for i, n in enumerate(share):
            naddr = max(1, -(-n // PER_ADDRESS))
            addrs = ["127.0.0.%d" % (nextaddr + k) for k in range(naddr)]
            nextaddr += naddr
            clients.append(Client(script, proxy_port, addrs, n, d, i))
        reports = [c.read(OPEN_PHASE_S) for c in clients]
        r["opened"] = sum(x["opened"] for x in reports)
        r["banners"] = sum(x["banners"] for x in reports)
        r["open_s"] = max(x["seconds"] for x in reports)
        fails = {}
        for x in reports:
            for k, v in x["failures"].items():
                fails[k] = fails.get(k, 0) + v
        r["failures"] = fails
        # Sessions open in all processes when the first one failed (a bound).
        firsts = [x["first_fail_at"] for x in reports if x["first_fail_at"] is not None]
        r["first_fail_at"] = sum(x["first_fail_at"] if x["first_fail_at"] is not None else x["opened"]
                                 for x in reports) if firsts else None
        time.sleep(1)
        pids = proxy_pids(proxy.pid)
        r["alive"] = proxy.poll() is None
        r["rss_sessions"] = rss(pids)
        r["smaps_sessions"] = smaps(pids)
        r["fds_sessions"] = fds(pids)
        r["per_process"] = [(p, status(p, "VmRSS")) for p in pids]
        r["emfile"] = log_lines(plog, "Too many open files")
        r["backend_fail"] = log_lines(plog, "cannot connect to the backend",
                                      "cannot create the backend", "backend connection error")

        # Room for the message: a proxy out of descriptors takes no connection.
        r["shed"] = 0
        if fails and r["alive"]:
            r["shed"] = clients[0].ask("shed 20")["shed"]
            time.sleep(1)  # the proxy sees the closes; a paused accept resumes

        # The 50 MB message, with the RSS sampled throughout.
        token = "conns-%d-%d@bench.test" % (workers, os.getpid())
        msg = big_message(token)
        pids = proxy_pids(proxy.pid)
        base = sample(pids)
        hwm0 = {p: status(p, "VmHWM") for p in pids}
        sampler = Sampler(pids)
        sampler.start()
        t0 = time.monotonic()
        r["msg_error"] = push_message(proxy_port, msg) if r["alive"] else "the proxy is gone"
        r["msg_s"] = time.monotonic() - t0
        sampler.halt.set()
        sampler.join(5)
        hwm_rise = sum(max(0, status(p, "VmHWM") - hwm0[p]) for p in pids)
        r["msg_growth"] = max(sampler.peak["VmRSS"] - base["VmRSS"], hwm_rise, 0)
        r["msg_anon"] = max(sampler.peak["RssAnon"] - base["RssAnon"], 0)
        r["msg_file"] = max(sampler.peak["RssFile"] - base["RssFile"], 0)
        r["msg_size"] = len(msg)
        del msg
        r["sink_size"] = sink_got(received, token)

        r["closed_meanwhile"] = sum(c.ask("check")["closed"] for c in clients)
        r["alive_after"] = proxy.poll() is None
    finally:
        for c in clients:
            c.close()
        r["proxy_status"] = stop(proxy, 15)
        stop(sink)
    return r


def delivered(r):
    # The proxy may add a header or two, no more.
    return r["msg_error"] is None and r["msg_size"] <= r["sink_size"] <= r["msg_size"] + 65536


def report(r):
    w = r["workers"]
    n = r.get("opened", 0)
    print("workers = %d: %d of %d sessions opened in %.1f s (%d banners)%s" % (
        w, n, SESSIONS, r.get("open_s", 0), r.get("banners", 0),
        "" if r.get("alive", True) else "; THE PROXY DIED"))
    if r.get("failures"):
        print("  failed: " + "; ".join("%d x %s" % (v, k) for k, v in sorted(r["failures"].items())))
        print("  the proxy refused/ran out of descriptors at about %d sessions "
              "(its descriptors then: %d)" % (r["first_fail_at"], r["fds_sessions"]))
    for what, key in (("accept", "emfile"), ("backend", "backend_fail")):
        cnt, first = r.get(key, (0, None))
        if cnt:
            print("  proxy log, %s: %d line(s), first: %s" % (what, cnt, first[:160]))
    b, s = r["smaps_before"], r["smaps_sessions"]
    if n:
        print("  where the RSS went: heap %+.1f MB, anonymous mappings %+.1f MB, files %+.1f MB; "
              "%.1f KB a session on the heap and anonymous maps" % (
                  (s["heap"] - b["heap"]) / 1048576.0, (s["anon"] - b["anon"]) / 1048576.0,
                  (s["files"] - b["files"]) / 1048576.0,
                  (s["heap"] + s["anon"] - b["heap"] - b["anon"]) / 1024.0 / n))
        print("  descriptors: %d at rest, %d with the sessions; RSS per process: %s" % (
            r["fds_before"], r["fds_sessions"],
            ", ".join("%d %s" % (p, mb(v)) for p, v in r["per_process"])))
    if r["shed"]:
        print("  %d sessions closed before the message, to give the proxy descriptors" % r["shed"])
    if r["msg_error"]:
        print("  50 MB message FAILED: %s" % r["msg_error"])
    else:
        print("  50 MB message: %d octets in %.1f s; the sink took %d octets%s" % (
            r["msg_size"], r["msg_s"], r["sink_size"],
            "" if delivered(r) else ": NOT DELIVERED WHOLE (none, short, or too long)"))
        print("  RSS growth during it: %s (peak of VmRSS summed, or the rise of VmHWM); "
              "anonymous %s, mapped files %s" % (mb(r["msg_growth"]), mb(r["msg_anon"]),
                                                 mb(r["msg_file"])))
    if r["alive"] and not r["alive_after"]:
        print("  THE PROXY DIED during the message; the last lines of its log:")
        for line in log_tail(r["log"]):
            print("    " + line[:200])
    print("  sessions closed by the proxy meanwhile: %d; the proxy exited with %s at SIGTERM" % (
        r["closed_meanwhile"], r["proxy_status"]))


def layouts(binary):
    """What a session holds by itself, from the binary's debug information."""
    sess, conn = layout(binary, "session"), layout(binary, "conn")
    if sess is None:
        print("struct session: no layout (needs gdb and a binary built with -g)")
        return
    top = []
    for name, size, leaf in sess[1]:
        if "." in name:
            continue
        arrays = ["%s %d" % (n, z) for n, z, lf in sess[1] if lf and n.startswith(name + ".")]
        top.append("%s %d%s" % (name, size, " (%s)" % ", ".join(arrays) if arrays else ""))
    print("struct session: %d bytes a session; members of 1 KB or more: %s" % (
        sess[0], "; ".join(top) or "none"))
    if conn is not None:
        print("struct conn: %d bytes, two a session (client and backend legs), each with two "
              "evbuffers and two events of libevent's" % conn[0])


def table(results):
    cols = ("workers", "sessions opened", "RSS before", "RSS with sessions", "KB/session",
            "goal (< 200 MB)", "50 MB msg RSS growth", "goal (<= %s)" % mb(SPOOL_MEMORY + GROWTH_ALLOWANCE))
    rows = []
    for r in results:
        n = r.get("opened", 0)
        per = (r["rss_sessions"] - r["rss_before"]) / 1024.0 / n if n else 0
        if n >= SESSIONS:
            goal = "met" if r["rss_sessions"] < RSS_GOAL else "missed"
        else:
            goal = "missed (%d opened)" % n
        if not delivered(r):
            growth, ggoal = mb(r["msg_growth"]), "missed (not delivered)"
        else:
            growth = mb(r["msg_growth"])
            ggoal = "met" if r["msg_growth"] <= SPOOL_MEMORY + GROWTH_ALLOWANCE else "missed"
        rows.append(("%d" % r["workers"], "%d / %d" % (n, SESSIONS), mb(r["rss_before"]),
                     mb(r["rss_sessions"]), "%.1f" % per, goal, growth, ggoal))
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = " | ".join("%-*s" % (widths[i], c) for i, c in enumerate(cols))
    print(line)
    print("-" * len(line))
    for row in rows:
        print(" | ".join("%-*s" % (widths[i], c) for i, c in enumerate(row)))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--sink":
        return sink_main(int(sys.argv[2]), sys.argv[3])
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        return client_main(int(sys.argv[2]), sys.argv[4:], int(sys.argv[3]))
    if len(sys.argv) != 2:
        print("usage: bench/conns.py PATH-TO-PORTCULLIS", file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    if not os.access(binary, os.X_OK):
        print("bench-conns: %s is not an executable" % binary, file=sys.stderr)
        return 2
    script = os.path.abspath(__file__)
    work = tempfile.mkdtemp(prefix="portcullis-conns.")
    os.chmod(work, 0o755)

    def bound(*_):
        raise HarnessError("the run took more than %d s" % RUN_BOUND_S)

    signal.signal(signal.SIGALRM, bound)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    signal.alarm(RUN_BOUND_S)
    results = []
    taken = set()
    rc = 0
    try:
        for i, w in enumerate(WORKER_COUNTS):
            # Fresh source addresses each leg: no TIME_WAIT left from the last.
            base = 2 + i * (-(-SESSIONS // PER_ADDRESS) + CLIENTS)
            r = run(binary, w, work, script, base, taken)
            report(r)
            results.append(r)
        print()
        table(results)
        layouts(binary)
    except HarnessError as e:
        print("bench-conns: FAILED: %s" % e, file=sys.stderr)
        rc = 1
    except KeyboardInterrupt:
        print("bench-conns: interrupted", file=sys.stderr)
        rc = 130
    finally:
        signal.alarm(0)
        if os.environ.get("BENCH_KEEP"):
            print("bench-conns: work dir kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
