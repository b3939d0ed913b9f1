#!/usr/bin/python3
"""tls_load.py HOST PORT COUNT SESSIONS SIZE [starttls] - COUNT messages of
SIZE octets over SESSIONS parallel processes, a new connection for every
message (so a STARTTLS handshake counts for each), with STARTTLS or not.
Prints the rate in messages per second; exits 1 at the first failure.

smtp-source cannot do STARTTLS, so the TLS workload of make bench drives
the proxy with this instead, with and without STARTTLS, in the same run.
"""

import multiprocessing
import smtplib
import ssl
import sys
import time


def worker(args):
    host, port, n, size, tls = args
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    body = b"Subject: bench\r\n\r\n" + (b"x" * 78 + b"\r\n") * max(1, size // 80)
    for _ in range(n):
        with smtplib.SMTP(host, port, timeout=60) as s:
            s.ehlo("bench.test")
            if tls:
                s.starttls(context=ctx)
                s.ehlo("bench.test")
            s.sendmail("bench@bench.test", ["sink@sink.test"], body)
    return n


def main():
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
