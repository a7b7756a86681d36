"""A real redis-server on 127.0.0.1 for the tests: a free port, no persistence, stopped afterwards.

::

    with RedisServer() as srv:            # or RedisServer(password="s3cret")
        client = redis.Redis.from_url(srv.url)

Without a redis-server binary (or the redis package) the calling test is
skipped, except when the CI environment variable is set: there it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Optional

from . import helpers

#: Seconds to wait for a started server to answer PING.
START_TIMEOUT = 10.0


def unavailable(reason: str) -> None:
    """Skip, or fail on CI (see helpers.unavailable)."""
    helpers.unavailable(reason, "Redis")


def require_redis_package() -> None:
    """Skip (or on CI fail) the calling module when redis-py is not installed."""
    try:
        import redis  # noqa: F401
    except ImportError:
        unavailable("the redis package (redis-py) is not installed")


def find_binary() -> Optional[str]:
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    # With requirepass an unauthenticated PING is refused, which still means "up".
    return reply.startswith((b"+PONG", b"-NOAUTH"))


class RedisServer:
    """Context manager running one redis-server process; ``url`` and ``port`` while it runs."""

    def __init__(self, password: Optional[str] = None):
        self.password = password
        self.port = 0
        self._proc: Optional[subprocess.Popen] = None
        self._dir: Optional[tempfile.TemporaryDirectory] = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def __enter__(self) -> "RedisServer":
        binary = find_binary()
        if binary is None:
            unavailable("redis-server binary not found")
        self._dir = tempfile.TemporaryDirectory(prefix="syncworkers-redis-")
        try:
            # Another process may take the free port before redis binds it: try again.
            for _ in range(3):
                if self._start(binary):
                    return self
            raise RuntimeError(f"redis-server did not start:\n{self._log()}")
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _start(self, binary: str) -> bool:
        self.port = free_port()
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", self._dir.name,
                "--logfile", os.path.join(self._dir.name, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if _answers(self.port):
                return True
            time.sleep(0.02)
        self._stop()
        return False

    def _log(self) -> str:
        try:
            with open(os.path.join(self._dir.name, "redis.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

    def _stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __exit__(self, *exc_info) -> None:
        self._stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
