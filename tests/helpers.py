"""Small helpers shared by the tests."""

import socket
import time


def wait_for(predicate, timeout=5.0):
    """Poll *predicate* until true; the deadline only turns a hang into a failure, never a timing check."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def closed_port():
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
