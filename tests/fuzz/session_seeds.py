#!/usr/bin/env python3
"""session_seeds.py - write the seed corpus of fuzz_session (tests/fuzz/seeds/session/).

Each seed is a script in fuzz_session.c's input format: a configuration
byte (CFG_*), then records: an op byte (low nibble OP_*, high nibble a
parameter) and, for ops that carry bytes, a 16-bit little-endian length and
the bytes. Run it again after changing the format: python3 tests/fuzz/session_seeds.py
"""
import os
import struct

# Configuration byte (fuzz_session.c CFG_*).
CFG_LINE_510, CFG_LINE_1000, CFG_LINE_4096 = 0x01, 0x02, 0x03
CFG_NO_XCLIENT = 0x04
CFG_NORMALIZE = 0x08
CFG_AUTH_PLAIN = 0x10
CFG_FEW_ERRORS = 0x20
CFG_WAIT = 0x40
CFG_SMALL = 0x80

# Ops (fuzz_session.c OP_*), and the parameter bit that keeps the loop from
# running after a record (OP_PARAM_NOLOOP), so the next one's bytes arrive
# together with this one's.
(OP_CLIENT, OP_CLIENT_FILL, OP_REPLY, OP_BACKEND, OP_BACKEND_FILL, OP_LOOP,
 OP_CLIENT_CLOSE, OP_BACKEND_CLOSE, OP_TIMEOUT, OP_ANSWER) = range(10)
NOLOOP = 0x80


def _bytes(op, data):
    if isinstance(data, str):
        data = data.encode()
    return bytes([op]) + struct.pack("<H", len(data)) + data


def client(data, nowait=False):
    return _bytes(OP_CLIENT | (NOLOOP if nowait else 0), data)


def client_fill(n, byte):
    return bytes([OP_CLIENT_FILL]) + struct.pack("<H", n) + byte.encode()


def reply(data):
    return _bytes(OP_REPLY, data)


def backend(data, nowait=False):
    return _bytes(OP_BACKEND | (NOLOOP if nowait else 0), data)


def backend_fill(n, byte):
    return bytes([OP_BACKEND_FILL]) + struct.pack("<H", n) + byte.encode()


def loop():
    return bytes([OP_LOOP])


def client_close(full=False):
    return bytes([OP_CLIENT_CLOSE | (0x10 if full else 0)])


def backend_close(reset=False):
    return bytes([OP_BACKEND_CLOSE | (0x10 if reset else 0)])


def timeout(backend_side=False):
    return bytes([OP_TIMEOUT | (0x10 if backend_side else 0)])


def answer():
    return bytes([OP_ANSWER])


BANNER = "220 mx.backend.test ESMTP Postfix\r\n"
EHLO_CAPS = ("250-mx.backend.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
             "250-VRFY\r\n250-ETRN\r\n250-AUTH PLAIN LOGIN\r\n"
             "250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN\r\n"
             "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250 SMTPUTF8\r\n")
XCLIENT_OK = "220 mx.backend.test ESMTP Postfix\r\n"
MESSAGE = ("From: Alice <alice@client.example>\r\nTo: Bob <bob@backend.test>\r\n"
           "Subject: a test\r\nMessage-ID: <1@client.example>\r\n\r\n"
           "Hello Bob,\r\n..a line that starts with a dot\r\nBye.\r\n.\r\n")


def full_session():
    """Banner, EHLO (with XCLIENT and the second EHLO), MAIL, RCPT, DATA,
    the message, its 250, QUIT: every reply given by the script."""
    return (bytes([0]) + reply(BANNER) + loop() +
            reply(EHLO_CAPS) + reply(XCLIENT_OK) + reply(EHLO_CAPS) +
            client("EHLO client.example\r\n") +
            reply("250 2.1.0 Ok\r\n") + client("MAIL FROM:<alice@client.example> SIZE=200 BODY=8BITMIME\r\n") +
            reply("250 2.1.5 Ok\r\n") + client("RCPT TO:<bob@backend.test>\r\n") +
            client("DATA\r\n") +
            reply("354 End data with <CR><LF>.<CR><LF>\r\n") +
            reply("250 2.0.0 Ok: queued as 4ABCDEF\r\n") + client(MESSAGE) +
            reply("221 2.0.0 Bye\r\n") + client("QUIT\r\n"))


def long_ehlo():
    """Issue 12 (1): a 1500-octet EHLO name."""
    return (bytes([0]) + loop() + client("EHLO ") + client_fill(1500, "a") +
            client("\r\n") + client("MAIL FROM:<a@b.example>\r\n") + client("QUIT\r\n"))


def long_ehlo_4096():
    return (bytes([CFG_LINE_4096 | CFG_NO_XCLIENT]) + loop() + client("EHLO ") +
            client_fill(4000, "b") + client("\r\nQUIT\r\n"))


def two_replies():
    """Issue 12 (2): the backend answers MAIL with two replies in one segment."""
    return (bytes([CFG_NO_XCLIENT]) + loop() + client("EHLO client.example\r\n") +
            reply("250 Ok\r\n250 Extra\r\n") + client("MAIL FROM:<a@client.example>\r\n") +
            reply("550 5.1.1 No such user\r\n") + client("RCPT TO:<nobody@backend.test>\r\n") +
            client("QUIT\r\n"))


def pipelined():
    """RFC 2920: the client sends its commands in groups; the backend's
    replies are the defaults."""
    return (bytes([0]) + loop() +
            client("EHLO client.example\r\n") +
            client("MAIL FROM:<alice@client.example>\r\nRCPT TO:<bob@backend.test>\r\n"
                   "RCPT TO:<carol@backend.test>\r\nDATA\r\n") +
            client(MESSAGE + "RSET\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\n") +
            client("Subject: bounce\r\n\r\nbody\r\n.\r\nQUIT\r\n"))


def auth_login():
    """AUTH LOGIN relayed step by step (auth_plaintext = yes), then a mail."""
    return (bytes([CFG_AUTH_PLAIN]) + loop() + client("EHLO client.example\r\n") +
            reply("334 VXNlcm5hbWU6\r\n") + client("AUTH LOGIN\r\n") +
            reply("334 UGFzc3dvcmQ6\r\n") + client("YWxpY2U=\r\n") +
            reply("235 2.7.0 Authentication successful\r\n") + client("c2VjcmV0\r\n") +
            client("MAIL FROM:<alice@client.example>\r\nRCPT TO:<bob@backend.test>\r\n") +
            client("DATA\r\n") + client(MESSAGE) + client("QUIT\r\n"))


def auth_plain():
    """AUTH PLAIN with an initial response, a refused one, and a cancel."""
    return (bytes([CFG_AUTH_PLAIN | CFG_NO_XCLIENT]) + loop() + client("EHLO c.example\r\n") +
            reply("535 5.7.8 Error: authentication failed\r\n") +
            client("AUTH PLAIN AGFsaWNlAHdyb25n\r\n") +
            reply("334 \r\n") + client("AUTH PLAIN\r\n") + client("*\r\n") +
            reply("235 2.7.0 Authentication successful\r\n") +
            client("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nQUIT\r\n"))


def waiting():
    """CFG_WAIT: the backend answers only when told; replies split anywhere."""
    return (bytes([CFG_WAIT]) + backend("220 mx.backend.test") + loop() +
            backend(" ESMTP\r\n") + client("EHLO client.example\r\n") +
            backend("250-mx.backend.test\r\n250-PIPE") + loop() +
            backend("LINING\r\n250 8BITMIME\r\n") + client("MAIL FROM:<a@b.example>\r\n") +
            answer() + client("NOOP\r\nHELP\r\nVRFY bob\r\nRCPT TO:<b@c.example>\r\n") +
            loop() + answer() + client("QUIT\r\n"))


def garbage():
    """Backend garbage, a long reply line, a reply out of turn."""
    return (bytes([CFG_NO_XCLIENT]) + loop() + client("EHLO client.example\r\n") +
            backend("250 spoken out of turn\r\n") + loop() +
            reply("25O not a reply\r\n") + client("MAIL FROM:<a@b.example>\r\n") +
            client("RCPT TO:<b@c.example>\r\nQUIT\r\n"))


def crossing():
    """A reply out of turn and a command cross: they arrive together, and the
    proxy may take the one for the answer to the other, as on any network."""
    return (bytes([CFG_NO_XCLIENT]) + loop() + client("EHLO client.example\r\n") +
            backend("421 4.3.2 going down\r\n", nowait=True) +
            client("MAIL FROM:<a@b.example>\r\n") + client("QUIT\r\n"))


def long_reply():
    return (bytes([CFG_NO_XCLIENT]) + loop() + client("EHLO client.example\r\n") +
            reply("") + backend("250 ") + backend_fill(2000, "x") + backend("\r\n") +
            client("MAIL FROM:<a@b.example>\r\nQUIT\r\n"))


def bare_lf_message():
    """bare_lf = normalize: bare LF, bare CR and NUL in the message."""
    return (bytes([CFG_NORMALIZE | CFG_NO_XCLIENT]) + loop() +
            client("HELO client.example\r\nMAIL FROM:<a@b.example>\r\n"
                   "RCPT TO:<b@c.example>\r\nDATA\r\n") +
            client("Subject: x\n\nline one\nline\rtwo\x00\r\n.\nstill message\r\n"
                   ".dot\r\n.\r\nQUIT\r\n"))


def closes():
    """The backend goes away between commands; the client half-closes
    mid-line; deadlines pass."""
    return (bytes([CFG_FEW_ERRORS]) + loop() + client("EHLO client.example\r\n") +
            timeout(True) + client("MAIL FROM:<a@b.example>\r\n") + backend_close() +
            client("RCPT TO:<b@c.example>\r\nFOO\r\nBAR\r\nNOOP") + timeout() +
            client_close())


def errors():
    """Commands out of order, bad syntax, too long, too many recipients."""
    return (bytes([CFG_SMALL | CFG_LINE_510 | CFG_NO_XCLIENT]) + loop() +
            client("MAIL FROM:<a@b.example>\r\nEHLO\r\nHELO x\r\nRCPT TO:<b@c.example>\r\n"
                   "DATA\r\nMAIL FROM:a@b.example SIZE=99999999\r\n"
                   "MAIL FROM:<a@b.example> FOO=bar\r\nMAIL FROM:<a@b.example>\r\n") +
            client("RCPT TO:<") + client_fill(600, "c") + client(">\r\n") +
            client("RCPT TO:<1@x.example>\r\nRCPT TO:<2@x.example>\r\n"
                   "RCPT TO:<3@x.example>\r\nXCLIENT ADDR=1.2.3.4\r\nSTARTTLS\r\n"
                   "GET / HTTP/1.0\r\n"))


def auth_smuggle():
    """An answer to a 334 that hides a NUL, a bare CR and a command: none of
    it may reach the backend as it is."""
    return (bytes([CFG_AUTH_PLAIN | CFG_NO_XCLIENT]) + loop() + client("EHLO c.example\r\n") +
            reply("334 VXNlcm5hbWU6\r\n") + client("AUTH LOGIN\r\n") +
            client("YWxpY2U=\rRSET\x00\r\n") + client("AUTH LOGIN\r\n") +
            client("*\r\n") + client("QUIT\r\n"))


def long_lines():
    """Lines over the limits: a command, a path, an AUTH answer, a message
    line (max_line_length 4096)."""
    return (bytes([CFG_LINE_4096 | CFG_AUTH_PLAIN | CFG_SMALL]) + loop() +
            client("NOOP ") + client_fill(5000, "n") + client("\r\n") +
            client("HELO c.example\r\nMAIL FROM:<") + client_fill(300, "m") +
            client("@c.example>\r\n") +
            reply("334 \r\n") + client("AUTH PLAIN\r\n") + client_fill(13000, "A") +
            client("\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<b@c.example>\r\nDATA\r\n") +
            client("Subject: x\r\n\r\n") + client_fill(3000, "d") + client("\r\n.\r\nQUIT\r\n"))


SEEDS = {
    "full_session": full_session,
    "long_ehlo": long_ehlo,
    "long_ehlo_4096": long_ehlo_4096,
    "two_replies": two_replies,
    "pipelined": pipelined,
    "auth_login": auth_login,
    "auth_plain": auth_plain,
    "waiting": waiting,
    "garbage": garbage,
    "long_reply": long_reply,
    "bare_lf_message": bare_lf_message,
    "closes": closes,
    "errors": errors,
    "auth_smuggle": auth_smuggle,
    "long_lines": long_lines,
    "crossing": crossing,
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "session")
    os.makedirs(out, exist_ok=True)
    for name, make in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(make())


if __name__ == "__main__":
    main()
