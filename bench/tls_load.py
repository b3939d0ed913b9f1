#!/usr/bin/python3
"""tls_load.py HOST PORT COUNT SESSIONS SIZE [starttls] - COUNT messages of
SIZE octets over SESSIONS parallel processes, a new connection for every
message (so a STARTTLS handshake counts for each), with STARTTLS or not.
Prints the rate in messages per second; exits 1 at the first failure.

tls_load.py --handshakes HOST PORT SECONDS PROCESSES new|reuse - TLS
handshakes against an implicit-TLS listener for SECONDS, over PROCESSES
parallel processes, each connecting in a loop: handshake, read the 220
greeting, QUIT, read the 221, close_notify, close. With "new" every
handshake is a full one (no session is offered); with "reuse" each process
first makes one full handshake outside the timed part, then offers the
last session it got (a TLS 1.3 ticket arrives after the handshake, so it
is read with the greeting) on every connection, as a real client with a
session cache does. Prints "RATE REUSED TOTAL": handshakes per second
over the timed part, how many of them the server resumed (what the client
saw: SSLSocket.session_reused) and how many there were. Each process stops
at the deadline or after MAX_PER_PROCESS handshakes, whichever comes first.

smtp-source cannot do STARTTLS, so the TLS workload of make bench drives
the proxy with this instead, with and without STARTTLS, in the same run.
"""

import multiprocessing
import smtplib
import socket
import ssl
import sys
import time

MAX_PER_PROCESS = 200000  # a bound on the loop whatever the clock says
START_SLACK = 1.0  # seconds for the processes to start and prime a session


def client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def worker(args):
    host, port, n, size, tls = args
    ctx = client_context()
    body = b"Subject: bench\r\n\r\n" + (b"x" * 78 + b"\r\n") * max(1, size // 80)
    for _ in range(n):
        with smtplib.SMTP(host, port, timeout=60) as s:
            s.ehlo("bench.test")
            if tls:
                s.starttls(context=ctx)
                s.ehlo("bench.test")
            s.sendmail("bench@bench.test", ["sink@sink.test"], body)
    return n


def read_reply(f, code):
    """Read one SMTP reply (all its lines) from the file f; fail unless it
    has the expected code."""
    while True:
        line = f.readline(1024)
        if not line.startswith(code):
            raise RuntimeError("expected %s, got %r" % (code, line))
        if line[3:4] != b"-":
            return


def handshake(ctx, host, port, session):
    """One implicit-TLS session: returns (whether it was resumed, the
    session to offer next)."""
    raw = socket.create_connection((host, port), timeout=30)
    try:
        tls = ctx.wrap_socket(raw, server_hostname="bench.test", session=session)
    except BaseException:
        raw.close()
        raise
    with tls:
        f = tls.makefile("rb")
        read_reply(f, b"220")
        tls.sendall(b"QUIT\r\n")
        read_reply(f, b"221")
        reused = tls.session_reused
        got = tls.session
        f.close()
        try:
            tls.unwrap()  # close_notify: a clean end keeps the session resumable
        except (ssl.SSLError, OSError):
            pass
    return reused, got


def hs_worker(args):
    host, port, start, deadline, reuse = args
    ctx = client_context()
    session = None
    if reuse:
        _, session = handshake(ctx, host, port, None)
    while time.monotonic() < start:
        time.sleep(0.01)
    n = reused = 0
    while n < MAX_PER_PROCESS and time.monotonic() < deadline:
        was, got = handshake(ctx, host, port, session if reuse else None)
        n += 1
        reused += 1 if was else 0
        if reuse and got is not None:
            session = got
    return n, reused, time.monotonic()


def handshakes(argv):
    host, port, seconds, procs, mode = argv[0], int(argv[1]), float(argv[2]), int(argv[3]), argv[4]
    if mode not in ("new", "reuse"):
        sys.exit("tls_load: mode is new or reuse, not %r" % mode)
    # CLOCK_MONOTONIC is one clock for every process on the machine.
    start = time.monotonic() + START_SLACK
    deadline = start + seconds
    with multiprocessing.Pool(procs) as pool:
        res = pool.map(hs_worker, [(host, port, start, deadline, mode == "reuse")] * procs)
    total = sum(r[0] for r in res)
    reused = sum(r[1] for r in res)
    took = max(r[2] for r in res) - start
    if total == 0 or took <= 0:
        sys.exit("tls_load: no handshake in the timed part")
    print("%.1f %d %d" % (total / took, reused, total))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--handshakes":
        if len(sys.argv) != 7:
            sys.exit("usage: tls_load.py --handshakes HOST PORT SECONDS PROCESSES new|reuse")
        handshakes(sys.argv[2:])
        return
    host, port, count, sessions, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        int(sys.argv[4]), int(sys.argv[5])
    tls = len(sys.argv) > 6 and sys.argv[6] == "starttls"
    share = [count // sessions + (1 if i < count % sessions else 0) for i in range(sessions)]
    t0 = time.monotonic()
    with multiprocessing.Pool(sessions) as pool:
        done = sum(pool.map(worker, [(host, port, n, size, tls) for n in share if n > 0]))
    took = time.monotonic() - t0
    if done != count:
        sys.exit(1)
    print("%.1f" % (count / took))


if __name__ == "__main__":
    main()
