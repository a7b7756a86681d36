"""Small helpers shared by the tests."""

import base64
import importlib
import io
import logging
import os
import shutil
import socket
import time

import pytest

from syncworkers.observability.logging import TextFormatter


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str, server: str) -> None:
    """Skip the test, or fail it on CI, where every test must really run (*server*: what is missing)."""
    if on_ci():
        pytest.fail(f"{reason} (CI is set: {server} tests must run, not skip)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def need_module(name: str, what: str):
    """Import *name*, or skip (fail on CI) the calling test or module: an importorskip CI cannot skip."""
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"the {name} package is not installed", what)


def need_program(name: str, what: str, path=None) -> str:
    """The path of the *name* command (on *path*, default $PATH), or skip (fail on CI)."""
    found = shutil.which(name, path=path)
    if found is None:
        unavailable(f"the {name} command is not installed", what)
    return found


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


def new_secret() -> str:
    """A fresh random Standard Webhooks secret."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


class PacketTrap(list):
    """Connection attempts seen; only 127.0.0.1 on the allowed ports may go out."""

    def __init__(self):
        super().__init__()
        self.ports = set()

    def check(self, address):
        if not (isinstance(address, tuple) and address[0] == "127.0.0.1" and address[1] in self.ports):
            self.append(address)
            raise AssertionError(f"a connection was attempted to {address!r}")


def trap_packets(monkeypatch) -> PacketTrap:
    """Make any connection attempt from Python's socket layer (but to the trap's loopback ports) fail loudly."""
    trap = PacketTrap()
    connect, connect_ex, create_connection = socket.socket.connect, socket.socket.connect_ex, socket.create_connection

    def guarded_connect(sock, address):
        trap.check(address)
        return connect(sock, address)

    def guarded_connect_ex(sock, address):
        trap.check(address)
        return connect_ex(sock, address)

    def guarded_create_connection(address, *args, **kwargs):
        trap.check(address)
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)
    return trap


class LogCapture:
    """Every record of the ``syncworkers`` loggers, formatted with TextFormatter (fields included)."""

    def __enter__(self):
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(TextFormatter())
        self.logger = logging.getLogger("syncworkers")
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        return self

    @property
    def text(self):
        return self.stream.getvalue()

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


class Clock:
    """A settable time source for the stores (epoch seconds)."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now
