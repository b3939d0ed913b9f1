"""Free TCP ports for the servers a test starts."""

import socket

_given = set()


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now (bound and released), and one
    this test run has not handed out before: the kernel may return a port
    it just released, and two listeners of one test must not share it."""
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _given:
            _given.add(port)
            return port
