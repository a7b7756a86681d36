"""A real PostgreSQL server on 127.0.0.1 for the tests: a temporary cluster, stopped afterwards.

::

    with PostgresServer() as srv:
        url = srv.url                      # postgresql://postgres@127.0.0.1:PORT/syncworkers
        other = srv.create_database()      # a fresh, empty database: its URL

initdb and pg_ctl refuse to run as root, so when the tests run as root the
server runs as the ``postgres`` OS user, in a temporary directory it owns.
Without the PostgreSQL binaries (or psycopg) the calling test is skipped,
except when the CI environment variable is set: there it fails.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from typing import Any, Dict, List, Optional

from . import helpers

#: Seconds pg_ctl waits for the server to accept connections (and to stop).
START_TIMEOUT = 30

#: The OS user the server runs as when the tests run as root.
SERVER_USER = "postgres"

#: Settings for a throwaway test cluster: durability off, small memory, enough connections
#: for several processes each with a pool.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "200",
}


def unavailable(reason: str) -> None:
    """Skip, or fail on CI (see helpers.unavailable)."""
    helpers.unavailable(reason, "PostgreSQL")


def find_bindir() -> Optional[str]:
    """The directory holding initdb and pg_ctl: ``pg_config --bindir``, else Debian's layout."""
    candidates: List[str] = []
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
            candidates.append(out)
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, b), os.X_OK) for b in ("initdb", "pg_ctl")):
            return bindir
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """Context manager running one PostgreSQL cluster; ``url`` and ``port`` while it runs."""

    def __init__(self, database: str = "syncworkers"):
        self.database = database
        self.port = 0
        self._bindir: Optional[str] = None
        self._dir: Optional[str] = None
        self._names = itertools.count(1)

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def _data(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "data")

    def _run_kwargs(self) -> Dict[str, Any]:
        """Run the server's tools as the postgres user when we are root (initdb refuses root)."""
        if os.geteuid() != 0:
            return {}
        entry = pwd.getpwnam(SERVER_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
                "env": {**os.environ, "HOME": self._dir or "/", "USER": SERVER_USER}}

    def _tool(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        assert self._bindir is not None
        return subprocess.run([os.path.join(self._bindir, name), *args], cwd=self._dir,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, **self._run_kwargs())

    def __enter__(self) -> "PostgresServer":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            unavailable("the psycopg package is not installed")
        self._bindir = find_bindir()
        if self._bindir is None:
            unavailable("PostgreSQL binaries (initdb, pg_ctl) not found")
        self._dir = tempfile.mkdtemp(prefix="syncworkers-pg-")
        try:
            if os.geteuid() == 0:
                entry = pwd.getpwnam(SERVER_USER)
                os.chown(self._dir, entry.pw_uid, entry.pw_gid)
            done = self._tool("initdb", "-D", self._data, "-U", "postgres", "-A", "trust",
                              "-E", "UTF8", "--no-sync")
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{done.stdout}{done.stderr}")
            # Another process may take the free port before the server binds it: try again.
            for _ in range(3):
                if self._start():
                    self.create_database(self.database)
                    return self
            raise RuntimeError(f"PostgreSQL did not start:\n{self._log()}")
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _start(self) -> bool:
        assert self._dir is not None
        self.port = free_port()
        options = " ".join(f"-c {k}={v}" for k, v in SERVER_SETTINGS.items())
        options += f" -p {self.port} -k {self._dir}"
        done = self._tool("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT), "-D", self._data,
                          "-l", os.path.join(self._dir, "server.log"), "-o", options,
                          timeout=START_TIMEOUT + 10)
        return done.returncode == 0

    def create_database(self, name: Optional[str] = None) -> str:
        """Create an empty database (a fresh name unless given) and return its URL."""
        import psycopg
        from psycopg import sql

        name = name or f"test_{next(self._names)}"
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def create_schema(self, name: Optional[str] = None) -> str:
        """Create an empty schema in the main database and return a URL whose search_path is it.

        Much cheaper than a database: what a test creates through that URL lands there.
        """
        import psycopg
        from psycopg import sql

        name = name or f"test_{next(self._names)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        return f"{self.url}?options=-csearch_path%3D{name}"

    def _log(self) -> str:
        try:
            with open(os.path.join(self._dir or "", "server.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

    def __exit__(self, *exc_info: object) -> None:
        if self._dir is None:
            return
        if os.path.exists(os.path.join(self._data, "postmaster.pid")):
            self._tool("pg_ctl", "stop", "-m", "immediate", "-w", "-D", self._data,
                       timeout=START_TIMEOUT)
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
