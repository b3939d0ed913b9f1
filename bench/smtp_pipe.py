#!/usr/bin/python3
"""bench/smtp_pipe.py PORT COUNT SIZE - a pipelining SMTP client for bench/cost.sh.

smtp-source says HELO and waits for the reply to each command; this client
says EHLO and, for each of COUNT messages of about SIZE bytes on one
connection to 127.0.0.1:PORT, sends MAIL, RCPT and DATA in one write
(RFC 2920: DATA ends the group), then the message and its dot in one
write. It prints how many messages got their 250 and exits 1 at the first
unexpected reply (or a server without PIPELINING), like smtp-source.
"""
import socket
import sys


def reply(f):
    """One reply, its lines joined; (code, text)."""
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line.decode("ascii", "replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            break
    return int(lines[-1][:3]), "\n".join(lines)


def expect(f, code, what):
    got, text = reply(f)
    if got != code:
        raise RuntimeError(f"{what}: expected {code}, got: {text}")
    return text


def main():
    port, count, size = (int(a) for a in sys.argv[1:4])
    head = b"From: <bench@bench.test>\r\nTo: <sink@sink.test>\r\nSubject: bench\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    message = head + body + b".\r\n"
    group = b"MAIL FROM:<bench@bench.test>\r\nRCPT TO:<sink@sink.test>\r\nDATA\r\n"
    sent = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            f = s.makefile("rb")
            expect(f, 220, "greeting")
            s.sendall(b"EHLO bench.test\r\n")
            ehlo = expect(f, 250, "EHLO")
            if "PIPELINING" not in ehlo.upper():
                raise RuntimeError("the server does not offer PIPELINING")
            for _ in range(count):
                s.sendall(group)
                expect(f, 250, "MAIL")
                expect(f, 250, "RCPT")
                expect(f, 354, "DATA")
                s.sendall(message)
                expect(f, 250, "end of data")
                sent += 1
            s.sendall(b"QUIT\r\n")
            expect(f, 221, "QUIT")
    except (OSError, ValueError, RuntimeError) as e:
        print(sent)
        print(f"smtp_pipe: {e}", file=sys.stderr)
        return 1
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
