"""The connections of a SQLite outbox: opened, migrated, pooled per thread, and written one at a time.

A file is opened in WAL mode and kept at the current schema (:func:`~.sqlite_schema.migrate`).
Each thread borrows a connection from a small pool; an in-memory database is one
connection shared under a lock. Writes run in ``BEGIN IMMEDIATE`` transactions,
one writer at a time within the process; what must be durable is synced once the
write lock is released, and writes of many threads go together (a group commit).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator, List, Optional, Protocol, Tuple

from ..exceptions import ConfigError
from ..signals import Deadline
from .sqlite_schema import migrate

#: Seconds a connection waits for another writer's lock before giving up.
BUSY_TIMEOUT = 30.0
#: Seconds between looks at another process's write lock: the first, and the longest (see ``_begin``).
BUSY_STEP = (0.0002, 0.002)
#: Idle connections kept for reuse; more concurrent callers open (and later close) extra ones.
MAX_IDLE_CONNECTIONS = 8
#: Most writes committed together (:meth:`SQLiteConnections.commit`).
GROUP_COMMIT_SIZE = 256
#: Write transactions of a process between two checkpoints (see ``SQLiteConnections._checkpoint_if_due``).
CHECKPOINT_EVERY = 100
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
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the store checkpoints outside its write lock
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

    def commit(self, query: str, params: Any) -> None:
        """Run one write (``?`` placeholders and their values), committed durably before it returns."""

    def check_same_file(self, connection: Any) -> None:
        """ConfigError when a caller's *connection* is not on this database."""

    def check_open(self) -> None:
        """ValueError once closed."""

    def close(self) -> None:
        """Release what these connections hold; idempotent."""


class SQLiteConnections:
    """The connections to one outbox file (``path`` None: one in-memory database).

    Opening checks the directory, switches the file to WAL and migrates it
    (ConfigError when it cannot). *connect* opens each connection. With *fsync*, a
    durable write is synced to disk before it returns (see :meth:`write`). Every
    method is safe from many threads at once; after :meth:`close` they raise ValueError.
    """

    def __init__(self, path: Optional[str], connect: Callable[[str], sqlite3.Connection] = connect, *,
                 fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.durable: bool = path is not None
        self._connect = connect
        self._lock = threading.RLock()
        # One writer at a time within the process: SQLite's own busy handler sleeps for
        # milliseconds between lock attempts, which serialised many threads far too slowly.
        self._turns = _Turns()
        self._idle: List[sqlite3.Connection] = []
        self._closed = False
        self._closing = threading.Event()  # set by close(): ends the waits for another process's lock
        self._grouped = threading.Condition()
        self._waiting: List[_Write] = []  # commit()s waiting for the next group
        self._committing = False
        self._commits = 0  # write transactions since the last checkpoint
        self._checkpointing = False
        self._shared: Optional[sqlite3.Connection] = None
        self._wal = False  # the file is in WAL mode: a durable commit is synced outside the write lock
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
            self._wal = conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
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

        Every commit survives a crash of the process. A *durable* write (what a caller
        asked to store: an add, a replay) also goes first (see ``_Turns``) and, with
        ``fsync``, is on disk when the block ends (see :meth:`_sync`): a power cut keeps it.
        ``durable=False`` (the delivery loop's claims, leases and outcomes) is never synced
        by itself: what a power cut takes back of it is only ever retried (an attempt
        repeated, at-least-once), never lost; the next sync or checkpoint puts it on disk.
        """
        with self._transaction(durable) as conn:
            yield conn
        if durable:
            self._sync()
        self._checkpoint_if_due(background=not durable)

    @contextmanager
    def _transaction(self, durable: bool) -> Iterator[sqlite3.Connection]:
        with self._turns.take(first=durable) as turn, self.borrow() as conn:
            if self.durable and durable:
                self._check_file()
            if self.durable:
                # In WAL mode a commit only writes the log, and _sync() makes it durable once the write
                # lock is released; synchronous=FULL would sync it under the lock, every process's
                # writers waiting for each sync.
                conn.execute(f"PRAGMA synchronous={'FULL' if durable and not self._wal else 'NORMAL'}")
            self._begin(conn, turn)
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _sync(self) -> None:
        """With ``fsync``, put what this process committed on disk: sync the write-ahead log (WAL mode;
        without it synchronous=FULL did).

        What was committed is in the log, or copied by a checkpoint into the database
        file, which the checkpoint synced before the log could be started afresh.
        """
        if not self.fsync or not self._wal:
            return
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed and removed as the last connection closed: the database file was synced
        try:
            os.fsync(fd)
        except OSError as exc:  # what the caller committed may not survive a power loss: say it was not stored
            raise sqlite3.OperationalError(f"cannot sync the outbox to disk: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _checkpoint_if_due(self, background: bool) -> None:
        """Copy the WAL into the database file (a passive checkpoint) every CHECKPOINT_EVERY write transactions.

        The store's connections never checkpoint as they commit (SQLite's default): a
        checkpoint in a COMMIT ran under the process's write lock, and every writer of
        the process (a whole group of enqueue() calls) waited the tens of milliseconds
        it takes. Here it runs after the write lock is released, on the thread of a
        *background* write (the delivery loop's claims and outcomes), or of any write
        once four times as many are due (no delivery loop writes in this process).
        """
        with self._lock:
            self._commits += 1
            if self._checkpointing or self._commits < CHECKPOINT_EVERY * (1 if background else 4):
                return
            self._checkpointing, self._commits = True, 0
        try:
            with self.borrow() as conn:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # another connection's read or checkpoint keeps it from finishing: the next one goes further
        finally:
            with self._lock:
                self._checkpointing = False

    def _begin(self, conn: sqlite3.Connection, turn: "_Turn") -> None:
        """BEGIN IMMEDIATE, looking again every few milliseconds while another process writes (up to BUSY_TIMEOUT).

        SQLite's own wait for the lock sleeps 1, 2, 5, 10, 15, 20, 25 ms and on up to 100 ms
        between looks, while another process's write transaction holds it a millisecond or
        less: with three processes writing, a caller waited 100 ms and more for a free lock.
        Between looks, a writer that does not go first lets one that does have the turn.
        """
        if self._shared is not None:
            conn.execute("BEGIN IMMEDIATE")
            return
        deadline, step = Deadline(BUSY_TIMEOUT), BUSY_STEP[0]
        conn.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY or deadline.expired:
                        raise
                self._closing.wait(deadline.cap(step))  # close() ends the wait
                self.check_open()
                turn.give_way()
                step = min(2 * step, BUSY_STEP[1])
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")

    def commit(self, query: str, params: Any) -> None:
        """Run one write (``?`` placeholders), committed and synced before it returns.

        A group commit: the writes other threads ask for while a commit is under way
        wait for it, then go together in the next transaction and the next sync;
        each caller returns once the transaction holding its write is committed, or
        raises what made it fail (then none of the group's writes was stored).
        """
        mine = _Write(query, params)
        with self._grouped:
            self._waiting.append(mine)
            while not mine.done:
                if not mine.taken and not self._committing:
                    self._committing = True
                    group, self._waiting = self._waiting[:GROUP_COMMIT_SIZE], self._waiting[GROUP_COMMIT_SIZE:]
                    for write in group:
                        write.taken = True
                    break
                self._grouped.wait()
            else:
                mine.check()
                return
        error: Optional[BaseException] = None
        try:
            with self._transaction(durable=True) as conn:
                for write in group:
                    conn.execute(write.query, write.params)
        except BaseException as exc:
            error = exc
        finally:
            with self._grouped:  # the next group may go while this one is synced
                self._committing = False
                self._grouped.notify_all()
        try:
            if error is None:
                self._sync()
        except BaseException as exc:
            error = exc
        finally:
            with self._grouped:
                for write in group:
                    write.done, write.error = True, error
                self._grouped.notify_all()
        mine.check()
        self._checkpoint_if_due(background=False)  # the group is on its way already

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
        self._closing.set()
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        with self._lock:
            if self._shared is not None:
                self._shared.close()  # under the lock: no thread is using it
        for conn in idle:
            conn.close()


class _Turns:
    """The process's write turns: one writer at a time, and a writer that asks to go *first* (a caller
    waiting for its webhook to be stored) before those that do not (the delivery loop's writes)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._first = 0  # writers waiting that go first

    @contextmanager
    def take(self, first: bool) -> Iterator["_Turn"]:
        """Hold the turn for the block."""
        self.acquire(first)
        try:
            yield _Turn(self, first)
        finally:
            self.release()

    def acquire(self, first: bool) -> None:
        """Wait for the turn and take it."""
        with self._cond:
            self._first += first
            try:
                while self._busy or (not first and self._first):
                    self._cond.wait()
            finally:
                self._first -= first
            self._busy = True

    def release(self) -> None:
        """Hand the turn on."""
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def wanted(self) -> bool:
        """Whether a writer that goes first waits for the turn."""
        with self._cond:
            return self._first > 0


class _Turn:
    """A turn held (see :meth:`_Turns.take`)."""

    def __init__(self, turns: _Turns, first: bool) -> None:
        self._turns, self._first = turns, first

    def give_way(self) -> None:
        """Before its transaction began, a turn that does not go first lets those waiting that do go."""
        if not self._first and self._turns.wanted():
            self._turns.release()
            self._turns.acquire(False)


class _Write:
    """One write waiting for a group commit, and how it ended."""

    __slots__ = ("query", "params", "taken", "done", "error")

    def __init__(self, query: str, params: Any) -> None:
        self.query, self.params = query, params
        self.taken = False  # in a group being committed
        self.done = False
        self.error: Optional[BaseException] = None

    def check(self) -> None:
        """Raise what made the write's group fail, if anything did."""
        if self.error is not None:
            raise self.error


__all__ = ["BUSY_TIMEOUT", "MAX_IDLE_CONNECTIONS", "PAGE_CACHE_KIB", "Connections", "SQLiteConnections",
           "connect"]
