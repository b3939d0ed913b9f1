"""messages.py - messages for tests and what they look like on the wire.

stuff(msg)          the bytes an SMTP client sends after 354 for msg (CRLF
                    lines), without the final ".\\r\\n": a "." is doubled at
                    the start of every line (RFC 5321 §4.5.2) and a missing
                    final CRLF is added - exactly what smtplib does, and what
                    the backend must record.
make_message(...)   headers + a body of many lines, optionally with 8-bit
                    octets (never CR, LF or NUL inside a line).
smtp(proxy)         an smtplib.SMTP connected to the proxy.
"""

import random
import re
import smtplib


# A message whose lines begin with dots in every way that matters to
# dot-stuffing (RFC 5321 §4.5.2), ending in a line that is a lone dot.
DOTS = b"\r\n".join([
    b"Subject: dots",
    b"",
    b".leading dot",
    b"..two leading dots",
    b".",
    b"..",
    b"...",
    b" . not at the start",
    b"middle.dot.",
    b".\t",
    b"a lone dot follows",
    b".",
]) + b"\r\n"

def stuff(msg):
    q = re.sub(rb"(?m)^\.", b"..", msg)
    if q[-2:] != b"\r\n":
        q += b"\r\n"
    return q


def make_message(subject="test", lines=200, width=76, eight_bit=False, seed=1, sender="a@sender.test",
                 to="b@rcpt.test"):
    rnd = random.Random(seed)
    hdr = [
        f"From: <{sender}>",
        f"To: <{to}>",
        f"Subject: {subject}",
        "Message-ID: <%d.%d@client.test>" % (seed, lines),
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=%s" % ("iso-8859-1" if eight_bit else "us-ascii"),
        "Content-Transfer-Encoding: %s" % ("8bit" if eight_bit else "7bit"),
    ]
    out = [h.encode() for h in hdr] + [b""]
    alphabet = bytes(range(0x20, 0x7F))
    if eight_bit:
        alphabet += bytes(range(0x80, 0x100))
    for i in range(lines):
        n = rnd.randint(0, width)
        line = bytes(rnd.choice(alphabet) for _ in range(n))
        out.append(line)
    return b"\r\n".join(out) + b"\r\n"


def smtp(proxy, timeout=10):
    s = smtplib.SMTP(timeout=timeout)
    s.connect(proxy.host, proxy.port)
    return s
