"""smtpclient.py - a tiny raw-socket SMTP client for hostile input.

It sends exactly the bytes it is given (no dot-stuffing, no line-ending
fixes) and parses replies strictly: every line must be "NNN-text" or
"NNN text" ended by CRLF, with one code throughout. Every read has a timeout.

    c = RawClient(port)
    c.banner().expect(220)
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<a@x>").expect(250)
    c.send(b"RCPT TO:<b@x>\\r\\nDATA\\r\\n")
    c.replies(2)
    c.envelope("a@x", "b@x", "c@x")   # MAIL, then RCPT for each, each one 250
    c.closed(timeout=5)          # True when the server hung up
    c.reset()                    # or: close with a TCP RST
"""

import re
import socket
import time

_LINE_RE = re.compile(rb"^(\d{3})([ -])(.*)$", re.S)
_ENH_RE = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?: |$)")


class ConnectionClosed(Exception):
    """The server closed the connection before a complete reply."""


class ReplyTimeout(Exception):
    """No complete reply within the timeout."""


class ProtocolError(Exception):
    """The server sent something that is not an SMTP reply."""


class Reply:
    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines  # the text of each line, after "NNN-" / "NNN "
        self.raw = raw  # the bytes as received

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def first(self):
        """The first line as it was sent, e.g. '250 2.1.0 Ok'."""
        return f"{self.code} {self.lines[0]}" if self.lines else str(self.code)

    @property
    def enhanced(self):
        """The enhanced status code of the first line (RFC 3463), or None."""
        m = _ENH_RE.match(self.lines[0]) if self.lines else None
        return m.group(1) if m else None

    def expect(self, code, enhanced=None):
        assert self.code == code, f"expected {code}, got {self!r}"
        if enhanced is not None:
            assert self.enhanced == enhanced, f"expected {code} {enhanced}, got {self!r}"
        return self

    def __repr__(self):
        return f"<Reply {self.raw.decode('latin-1')!r}>"


class RawClient:
    def __init__(self, port, host="127.0.0.1", timeout=10.0, source=None):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=source)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self):
        """Close with a TCP RST (SO_LINGER 0) instead of a FIN: the server
        sees the client gone at once, as when a client crashes."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise ReplyTimeout(f"no complete reply; buffered {bytes(self.buf)!r}")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise ReplyTimeout(f"no complete reply; buffered {bytes(self.buf)!r}") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise ConnectionClosed(f"closed; buffered {bytes(self.buf)!r}")
        self.buf += data

    def _line(self, deadline):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            if self.eof:
                raise ConnectionClosed(f"closed; buffered {bytes(self.buf)!r}")
            self._fill(deadline)

    def reply(self, timeout=None):
        """Read one (possibly multi-line) reply."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        lines, raw, code = [], b"", None
        while True:
            line = self._line(deadline)
            raw += line + b"\r\n"
            m = _LINE_RE.match(line)
            if not m:
                raise ProtocolError(f"not a reply line: {line!r} (after {raw!r})")
            c = int(m.group(1))
            if code is not None and c != code:
                raise ProtocolError(f"code changed inside a reply: {raw!r}")
            code = c
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) == b" ":
                return Reply(code, lines, raw)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        """Send one command line (CRLF added) and read its reply."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply(timeout)

    def banner(self, timeout=None):
        return self.reply(timeout)

    def ehlo(self, name="client.test"):
        return self.cmd(f"EHLO {name}").expect(250)

    def greet(self, name="client.test"):
        """Banner (220) then EHLO (250); returns the EHLO reply."""
        self.banner().expect(220)
        return self.ehlo(name)

    def envelope(self, sender="a@x.test", *rcpts):
        """MAIL FROM:<sender>, then RCPT TO:<r> for each recipient (default
        b@y.test), one command at a time, each answered 250. The addresses
        go on the wire as given; "" is the null sender."""
        self.cmd(f"MAIL FROM:<{sender}>").expect(250)
        for r in rcpts or ("b@y.test",):
            self.cmd(f"RCPT TO:<{r}>").expect(250)

    def message(self, body):
        """DATA (354), the body bytes as given (must end the data itself),
        then the final reply."""
        self.cmd("DATA").expect(354)
        self.send(body)
        return self.reply()

    def closed(self, timeout=5.0):
        """Wait for the server to close; True when it did within timeout.
        Anything it sent meanwhile is left in self.buf."""
        deadline = time.monotonic() + timeout
        if self.eof:
            return True
        try:
            while True:
                self._fill(deadline)
        except ConnectionClosed:
            return True
        except ReplyTimeout:
            return False
        except OSError:
            return True


def reply_lines_caps(reply):
    """The capability keywords (upper case) of an EHLO reply, and a dict of
    keyword -> rest of line."""
    caps = {}
    for ln in reply.lines[1:]:
        parts = ln.split(None, 1)
        if parts:
            caps[parts[0].upper()] = parts[1] if len(parts) > 1 else ""
    return caps
