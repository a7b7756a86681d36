"""The connections of a SQLite outbox: opened, migrated, pooled per thread, and written one at a time.

A file is opened in WAL mode and kept at the current schema (:func:`~.sqlite_schema.migrate`).
Each thread borrows a connection from a small pool; an in-memory database is one
connection shared under a lock. Writes run in ``BEGIN IMMEDIATE`` transactions,
one writer at a time within the process.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator, List, Optional, Protocol, Tuple

from ..exceptions import ConfigError
from .sqlite_schema import migrate

#: Seconds a connection waits for another writer's lock before giving up.
BUSY_TIMEOUT = 30.0
#: Idle connections kept for reuse; more concurrent callers open (and later close) extra ones.
MAX_IDLE_CONNECTIONS = 8
#: Page cache of each connection, KiB. SQLite's default (2,000) fills as the file grows (every
#: delivered row stays until purged), so RSS crept up for as long as the pooled connections
#: took to fill theirs; the outbox's hot pages (due deliveries, the upper levels of its
#: indexes) fit in this, and the OS page cache keeps the rest of the file.
PAGE_CACHE_KIB = 256


def connect(target: str) -> sqlite3.Connection:
    """A new connection to the database at *target* (a path, ``:memory:`` or a ``file:`` URI)."""
    # isolation_level=None: no implicit transactions; writes use BEGIN IMMEDIATE so they
    # take the write lock up front and wait up to `timeout` (busy_timeout) instead of failing.
    # check_same_thread=False: pooled connections move between threads, one at a time.
    # A "file:" target is an SQLite URI (Django names its in-memory test database so), never a file of that name.
    conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False,
                           uri=target.startswith("file:"))
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
    return conn


class Connections(Protocol):
    """What the SQLite store asks of its connections (:class:`SQLiteConnections`, or an app's)."""

    path: Optional[str]  #: the database's file, for display; None in memory
    durable: bool

    def borrow(self) -> ContextManager[sqlite3.Connection]:
        """A connection for one read (rows by column name)."""

    def write(self, durable: bool = True) -> ContextManager[sqlite3.Connection]:
        """A connection inside a transaction (or a savepoint inside one) for the block."""

    def check_same_file(self, connection: Any) -> None:
        """ConfigError when a caller's *connection* is not on this database."""

    def check_open(self) -> None:
        """ValueError once closed."""

    def close(self) -> None:
        """Release what these connections hold; idempotent."""


class SQLiteConnections:
    """The connections to one outbox file (``path`` None: one in-memory database).

    Opening checks the directory, switches the file to WAL and migrates it
    (ConfigError when it cannot). *connect* opens each connection. Every method is
    safe from many threads at once; after :meth:`close` they raise ValueError.
    """

    def __init__(self, path: Optional[str], connect: Callable[[str], sqlite3.Connection] = connect) -> None:
        self.path = path
        self.durable: bool = path is not None
        self._connect = connect
        self._lock = threading.RLock()
        # One writer at a time within the process: SQLite's own busy handler sleeps for
        # milliseconds between lock attempts, which serialised many threads far too slowly.
        self._write_lock = threading.Lock()
        self._idle: List[sqlite3.Connection] = []
        self._closed = False
        self._shared: Optional[sqlite3.Connection] = None
        if path is None:
            self._shared = connect(":memory:")
            migrate(self._shared, path)
            return
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ConfigError(f"outbox directory {directory!r} does not exist (outbox path {path!r})")
        conn = None
        try:
            conn = connect(path)
            # Checked first: switching takes the write lock, which an app's own connection to the
            # same file may hold in an open transaction (a Django view enqueueing in atomic()).
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            migrate(conn, path)
        except (sqlite3.Error, ConfigError) as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"cannot open outbox {path!r}: {exc}") from exc
        self._idle.append(conn)
        self._identity = self._file_identity()

    @contextmanager
    def borrow(self) -> Iterator[sqlite3.Connection]:
        """A connection for this thread, back in the pool afterwards."""
        if self._shared is not None:
            with self._lock:
                self.check_open()
                yield self._shared
            return
        with self._lock:
            self.check_open()
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect(self.path)  # type: ignore[arg-type]
        try:
            yield conn
        finally:
            with self._lock:
                keep = not self._closed and not conn.in_transaction and len(self._idle) < MAX_IDLE_CONNECTIONS
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection inside BEGIN IMMEDIATE: committed on success, rolled back on error.

        ``durable=False`` (claims, leases, outcomes) commits without an fsync: it survives
        a process crash, and what a power loss takes back is only ever retried (an attempt
        repeated, at-least-once), never lost. The next durable commit syncs it too.
        """
        with self._write_lock, self.borrow() as conn:
            if self.durable and durable:
                self._check_file()
            if self.durable:
                conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _file_identity(self) -> Optional[Tuple[int, int]]:
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    def _check_file(self) -> None:
        # Open connections keep writing to a deleted file's inode: every add() would "succeed"
        # into a file no restart will ever read again.
        if self._file_identity() != self._identity:
            raise sqlite3.OperationalError(
                f"outbox file {self.path!r} was deleted or replaced while open; "
                "restart the worker to open it again")

    def check_same_file(self, connection: Any) -> None:
        """A caller's connection must be on this outbox's file: elsewhere, the delivery would never be sent."""
        if not isinstance(connection, sqlite3.Connection):
            return  # another driver: trust the caller
        row = connection.execute("PRAGMA database_list").fetchone()
        theirs = row[2] if row else ""
        if self.path is None or not theirs or not os.path.samefile(theirs, self.path):
            raise ConfigError(f"the connection is not on this outbox's file ({self.path!r}): "
                              "the delivery would never be sent")

    def check_open(self) -> None:
        """ValueError once :meth:`close` was called."""
        if self._closed:
            raise ValueError("the outbox is closed")

    def close(self) -> None:
        """Close every connection; idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        with self._lock:
            if self._shared is not None:
                self._shared.close()  # under the lock: no thread is using it
        for conn in idle:
            conn.close()


__all__ = ["BUSY_TIMEOUT", "MAX_IDLE_CONNECTIONS", "PAGE_CACHE_KIB", "Connections", "SQLiteConnections",
           "connect"]
