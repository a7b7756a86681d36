"""The SQLite outbox store (stdlib ``sqlite3``): the default, embedded backend.

A delivery is written (and fsynced) before :meth:`Outbox.add` returns, and leaves
the queue only as ``delivered`` or ``dead``. Workers take deliveries with
:meth:`Outbox.claim_due`, which leases them to one owner at a time; the lease of a
process that died expires and another owner takes the delivery over, so a crash
loses nothing (at-least-once, same id). Several threads and several processes may
share one file. This module stores and schedules; it sends nothing.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

from ..exceptions import ConfigError
from ..message import new_id
from . import dbapi
from . import health
from .health import ATTEMPT_LOG_SIZE, EndpointHealth, endpoint_of
from .listen import Subscribers
from .store import DEAD, DELIVERED, HELD, IN_FLIGHT, PENDING, STATES, Attempt, Delivery

logger = logging.getLogger(__name__)


#: Seconds a claim stays valid unless renewed; a dead owner's claims are taken over after it.
DEFAULT_LEASE_SECONDS = 10.0
#: Seconds a connection waits for another writer's lock before giving up.
BUSY_TIMEOUT = 30.0
#: Idle connections kept for reuse; more concurrent callers open (and later close) extra ones.
MAX_IDLE_CONNECTIONS = 8
#: Ids per ``IN (...)`` clause, well under SQLite's host-parameter limit.
_CHUNK = 500

def _fill_targets(conn: sqlite3.Connection) -> None:
    """Name the endpoint of every delivery stored before endpoints were tracked."""
    rows = conn.execute("SELECT rowid, url FROM deliveries WHERE target IS NULL").fetchall()
    conn.executemany("UPDATE deliveries SET target = ? WHERE rowid = ?",
                     [(endpoint_of(row[1]), row[0]) for row in rows])


#: Schema migrations: entry ``n`` takes ``PRAGMA user_version`` from ``n`` to ``n + 1``; an
#: entry is an SQL script or a tuple of scripts and functions of the connection.
_Migration = Union[str, Tuple[Union[str, Callable[[sqlite3.Connection], None]], ...]]
_MIGRATIONS: Tuple[_Migration, ...] = (
    """
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        endpoint TEXT NOT NULL,
        url TEXT NOT NULL,
        body BLOB NOT NULL,
        headers TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        owner TEXT,
        lease_until REAL,
        delivered_at REAL
    );
    CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
    CREATE INDEX deliveries_updated ON deliveries (state, updated_at);
    """,
    (
        # 2: the attempt log, endpoint health, and the endpoint (host + path) of each delivery.
        """
        ALTER TABLE deliveries ADD COLUMN target TEXT;
        CREATE INDEX deliveries_target ON deliveries (target, state);
        CREATE TABLE attempts (
            delivery_id TEXT NOT NULL,
            n INTEGER NOT NULL,
            at REAL NOT NULL,
            duration REAL NOT NULL,
            kind TEXT NOT NULL,
            status INTEGER,
            error TEXT,
            body BLOB NOT NULL,
            PRIMARY KEY (delivery_id, n)
        );
        CREATE TABLE endpoints (
            target TEXT PRIMARY KEY,
            disabled_at REAL,
            reason TEXT,
            failing_since REAL,
            last_failure_at REAL,
            last_status INTEGER
        );
        """,
        _fill_targets,
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


def schema_statements(from_version: int = 0) -> List[str]:
    """The SQL that takes an outbox file's schema from *from_version* (its ``PRAGMA user_version``) to
    :data:`SCHEMA_VERSION`, the version pragma last, for tools that create the tables themselves (the
    Django migration). A migration's Python steps fill in data for rows that existed before it; the
    store runs them on open, and a table created from nothing has no such rows."""
    if not 0 <= from_version <= SCHEMA_VERSION:
        raise ConfigError(f"outbox schema version {from_version}; this syncworkers knows up to {SCHEMA_VERSION}")
    return [statement for migration in _MIGRATIONS[from_version:] for step in _steps(migration)
            if isinstance(step, str) for statement in _split(step)] + [f"PRAGMA user_version={SCHEMA_VERSION}"]


def _steps(migration: "_Migration") -> Tuple[Union[str, Callable[[sqlite3.Connection], None]], ...]:
    return (migration,) if isinstance(migration, str) else migration


def _split(script: str) -> List[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]


_COLUMNS = (
    "id, endpoint, url, body, headers, state, attempts, next_attempt_at, created_at, updated_at,"
    " last_status, last_error, owner, lease_until, delivered_at"
)
_CLAIM = (
    f"SELECT * FROM (SELECT rowid AS rid, {_COLUMNS} FROM deliveries WHERE state = ?1"
    " AND next_attempt_at <= ?2 ORDER BY next_attempt_at, rowid LIMIT ?4)"
    f" UNION ALL SELECT * FROM (SELECT rowid AS rid, {_COLUMNS} FROM deliveries WHERE state = ?3"
    " AND lease_until < ?2 ORDER BY next_attempt_at, rowid LIMIT ?4)"
    " ORDER BY next_attempt_at, rid LIMIT ?4"
)
#: The state of a delivery (re)entering the schedule: held while its endpoint is disabled.
_HOLD_IF_DISABLED = (
    f"CASE WHEN EXISTS (SELECT 1 FROM endpoints e WHERE e.target = {{target}} AND e.disabled_at IS NOT NULL)"
    f" THEN '{HELD}' ELSE '{PENDING}' END"
)
_INSERT = (
    "INSERT OR IGNORE INTO deliveries (id, endpoint, url, body, headers, state, attempts,"
    " next_attempt_at, created_at, updated_at, target) VALUES (%(id)s, %(endpoint)s, %(url)s, %(body)s,"
    f" %(headers)s, {_HOLD_IF_DISABLED.format(target='%(target)s')}, 0, %(at)s, %(at)s, %(at)s, %(target)s)"
)
_ENDPOINT_COLUMNS = "target, disabled_at, reason, failing_since, last_failure_at, last_status"
_ATTEMPT_COLUMNS = "at, duration, kind, status, error, body"


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def check_new_delivery(url: str, body: bytes, headers: Optional[Dict[str, str]]) -> Dict[str, str]:
    """Validate what ``add()`` is given (TypeError/ValueError); the headers as a new dict."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    if not url:
        raise ValueError("url is empty")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"body must be bytes, got {type(body).__name__}")
    headers = dict(headers or {})
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"header names and values must be str (header {key!r})")
    return headers


def _chunks(ids: Sequence[str]) -> Iterator[List[str]]:
    ids = list(ids)
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _row_to_attempt(row: Sequence[Any]) -> Attempt:
    return Attempt(at=row[0], duration=row[1], kind=row[2], status=row[3], error=row[4], body=bytes(row[5]))


def _row_to_health(row: Sequence[Any], held: int = 0) -> EndpointHealth:
    return EndpointHealth(endpoint=row[0], disabled_at=row[1], reason=row[2], failing_since=row[3],
                          last_failure_at=row[4], last_status=row[5], held=held)


def _row_to_delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=row["id"], endpoint=row["endpoint"], url=row["url"], body=bytes(row["body"]),
        headers=json.loads(row["headers"]), state=row["state"], attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], created_at=row["created_at"],
        updated_at=row["updated_at"], last_status=row["last_status"], last_error=row["last_error"],
        owner=row["owner"], lease_until=row["lease_until"], delivered_at=row["delivered_at"],
    )


class Outbox:
    """A delivery queue in a SQLite file (durable) or in memory (``path`` None; not durable).

    Every method is safe from many threads at once. A file is opened in WAL mode; adds
    commit with ``synchronous=FULL``, so a delivery survives a crash once :meth:`add`
    returns (claims and outcomes skip the fsync: see ``_write``). Each thread borrows
    a connection from a small pool. Times come from ``clock`` unless a method is given
    ``now``. ``owner`` names this process's claims.
    """

    #: What a store operation raises when the database cannot do it now (or the store is closed).
    errors: Tuple[Type[BaseException], ...] = (ValueError, sqlite3.Error)

    def __init__(
        self,
        path: Optional[str] = None,
        *,
        clock: Optional[Callable[[], float]] = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        owner: Optional[str] = None,
    ):
        if not lease_seconds > 0:
            raise ConfigError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        if path is not None:
            path = os.fspath(path)
        self.path: Optional[str] = None if path in (None, ":memory:") else path
        self.durable: bool = self.path is not None
        self.lease_seconds = float(lease_seconds)
        self.owner = owner or _default_owner()
        # Looked up at each call, not bound here, so that a patched time.time (freezegun) applies.
        self._clock = clock if clock is not None else (lambda: time.time())
        self._lock = threading.RLock()
        # One writer at a time within the process: SQLite's own busy handler sleeps for
        # milliseconds between lock attempts, which serialised many threads far too slowly.
        self._write_lock = threading.Lock()
        self._idle: List[sqlite3.Connection] = []
        self._closed = False
        self._shared: Optional[sqlite3.Connection] = None
        self._subscribers = Subscribers()
        if self.path is None:
            self._shared = self._connect(":memory:")
            self._migrate(self._shared)
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise ConfigError(f"outbox directory {directory!r} does not exist (outbox path {self.path!r})")
        conn = None
        try:
            conn = self._connect(self.path)
            # Checked first: switching takes the write lock, which an app's own connection to the
            # same file may hold in an open transaction (a Django view enqueueing in atomic()).
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            self._migrate(conn)
        except (sqlite3.Error, ConfigError) as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"cannot open outbox {self.path!r}: {exc}") from exc
        self._idle.append(conn)
        self._identity = self._file_identity()

    # -- connections ------------------------------------------------------

    def _connect(self, target: str) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; writes use BEGIN IMMEDIATE so they
        # take the write lock up front and wait up to `timeout` (busy_timeout) instead of failing.
        # check_same_thread=False: pooled connections move between threads, one at a time.
        conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return  # current: no write lock needed (see __init__)
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"outbox {self.path!r} has schema version {version}; this syncworkers knows"
                    f" up to {SCHEMA_VERSION}"
                )
            for migration in _MIGRATIONS[version:]:
                for step in _steps(migration):
                    if callable(step):
                        step(conn)
                    else:
                        for statement in _split(step):
                            conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        if self._shared is not None:
            with self._lock:
                self._check_open()
                yield self._shared
            return
        with self._lock:
            self._check_open()
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
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection inside BEGIN IMMEDIATE: committed on success, rolled back on error.

        ``durable=False`` (claims, leases, outcomes) commits without an fsync: it survives
        a process crash, and what a power loss takes back is only ever retried (an attempt
        repeated, at-least-once), never lost. The next durable commit syncs it too.
        """
        with self._write_lock, self._conn() as conn:
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

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the outbox is closed")

    def _now(self, now: Optional[float]) -> float:
        return float(self._clock() if now is None else now)

    @property
    def clock(self) -> Callable[[], float]:
        """The time source (epoch seconds) of the methods not given ``now``."""
        return self._clock

    # -- writing ----------------------------------------------------------

    def add(
        self,
        endpoint: str,
        url: str,
        body: bytes,
        headers: Optional[Dict[str, str]] = None,
        id: Optional[str] = None,
        now: Optional[float] = None,
        *,
        connection: Any = None,
    ) -> str:
        """Store a pending delivery due at once and return its id; committed before it returns.

        With ``connection`` (a ``sqlite3`` or other DB-API connection to this outbox's
        file), the delivery is written in that connection's current transaction and
        neither committed nor rolled back: it exists once the caller commits.
        Adding an id that is already stored changes nothing and returns that id.
        """
        headers = check_new_delivery(url, body, headers)
        id = new_id() if id is None else str(id)
        at = self._now(now)
        params = {"id": id, "endpoint": endpoint, "url": url, "body": bytes(body),
                  "headers": json.dumps(headers), "at": at, "target": endpoint_of(url)}
        if connection is not None:
            self._check_same_file(connection)
            dbapi.execute(connection, _INSERT, params)
        else:
            with self._write() as conn:
                conn.execute(*dbapi.convert(_INSERT, params, "qmark"))
        # Subscribers look at once; a delivery in a caller's transaction is found once committed,
        # by their next look (at most the dispatcher's poll interval later).
        self._subscribers.notify()
        return id

    def _check_same_file(self, connection: Any) -> None:
        """A caller's connection must be on this outbox's file: elsewhere, the delivery would never be sent."""
        if not isinstance(connection, sqlite3.Connection):
            return  # another driver: trust the caller
        row = connection.execute("PRAGMA database_list").fetchone()
        theirs = row[2] if row else ""
        if self.path is None or not theirs or not os.path.samefile(theirs, self.path):
            raise ConfigError(f"the connection is not on this outbox's file ({self.path!r}): "
                              "the delivery would never be sent")

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call *callback* after each delivery added through this store; returns the unsubscribe.

        Other processes' adds are not heard: their deliveries are found by the next look.
        """
        self._check_open()
        return self._subscribers.subscribe(callback)

    def claim_due(self, limit: int, now: Optional[float] = None) -> List[Delivery]:
        """Lease up to ``limit`` due deliveries to this owner, earliest due first.

        Due means pending with ``next_attempt_at <= now``, or in flight under an expired
        lease (its owner died or stalled: the claim is taken over). While a lease is
        valid no other owner gets the delivery.
        """
        if limit <= 0:
            return []
        at = self._now(now)
        lease_until = at + self.lease_seconds
        with self._write(durable=False) as conn:
            # Two bounded index searches merged: one OR query sorted every due row before
            # its LIMIT, which made each claim cost O(backlog).
            rows = conn.execute(_CLAIM, (PENDING, at, IN_FLIGHT, int(limit))).fetchall()
            claimed = [_row_to_delivery(row) for row in rows]
            conn.executemany(
                "UPDATE deliveries SET state = ?, owner = ?, lease_until = ?, updated_at = ? WHERE id = ?",
                [(IN_FLIGHT, self.owner, lease_until, at, d.id) for d in claimed],
            )
        taken = sorted({d.owner or "?" for d in claimed if d.state == IN_FLIGHT})
        if taken:
            logger.warning("outbox: took over deliveries whose lease expired (owners: %s)", ", ".join(taken))
        for d in claimed:
            d.state, d.owner, d.lease_until, d.updated_at = IN_FLIGHT, self.owner, lease_until, at
        return claimed

    def renew(self, ids: Sequence[str], now: Optional[float] = None) -> None:
        """Extend the leases this owner still holds on ``ids`` (others' claims are untouched)."""
        at = self._now(now)
        with self._write(durable=False) as conn:
            for chunk in _chunks(ids):
                conn.execute(
                    f"UPDATE deliveries SET lease_until = ? WHERE state = ? AND owner = ?"
                    f" AND id IN ({_marks(len(chunk))})",
                    (at + self.lease_seconds, IN_FLIGHT, self.owner, *chunk),
                )

    def mark_delivered(self, id: str, status: Optional[int], now: Optional[float] = None, *,
                       attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        """Record a successful attempt: the delivery is final.

        Applies even if this owner's lease was lost meanwhile: the receiver has it.
        ``attempt`` goes to the attempt log and the endpoint's health (see OutboxStore).
        """
        at = self._now(now)
        self._finish(
            id,
            "state = ?, attempts = attempts + 1, last_status = ?, delivered_at = ?",
            (DELIVERED, status, at),
            at,
            require_claim=False,
            attempt=attempt,
            disable_after=disable_after,
        )

    def mark_retry(
        self,
        id: str,
        next_attempt_at: float,
        error: Optional[str],
        status: Optional[int] = None,
        spend_attempt: bool = True,
        now: Optional[float] = None,
        *,
        attempt: Optional[Attempt] = None,
        disable_after: Optional[float] = None,
    ) -> None:
        """Put a claimed delivery back to pending, due at ``next_attempt_at`` (held if its endpoint is disabled).

        ``spend_attempt=False`` postpones without counting an attempt (Retry-After, an
        open circuit). Ignored, with a warning, if this owner no longer holds the claim.
        """
        at = self._now(now)
        self._finish(
            id,
            "state = ?, attempts = attempts + ?, next_attempt_at = ?, last_error = ?, last_status = ?",
            (PENDING, int(bool(spend_attempt)), float(next_attempt_at), error, status),
            at,
            attempt=attempt,
            disable_after=disable_after,
        )

    def mark_dead(
        self,
        id: str,
        reason: str,
        status: Optional[int] = None,
        spend_attempt: bool = True,
        now: Optional[float] = None,
        *,
        attempt: Optional[Attempt] = None,
        disable_after: Optional[float] = None,
    ) -> None:
        """Give up on a claimed delivery; ``reason`` is kept as its last error.

        Ignored, with a warning, if this owner no longer holds the claim.
        """
        at = self._now(now)
        self._finish(
            id,
            "state = ?, attempts = attempts + ?, last_error = ?, last_status = ?",
            (DEAD, int(bool(spend_attempt)), reason, status),
            at,
            attempt=attempt,
            disable_after=disable_after,
        )

    def _finish(
        self, id: str, assignments: str, params: Tuple[Any, ...], at: float, require_claim: bool = True,
        attempt: Optional[Attempt] = None, disable_after: Optional[float] = None,
    ) -> None:
        """Apply an attempt's outcome; the claim is cleared. KeyError for an unknown id."""
        with self._write(durable=False) as conn:
            row = conn.execute("SELECT state, owner, target, url FROM deliveries WHERE id = ?", (id,)).fetchone()
            if row is None:
                raise KeyError(id)
            held = row["state"] == IN_FLIGHT and row["owner"] == self.owner
            if require_claim and not held:
                # Our lease expired and another owner took the delivery over (or it was
                # already settled): its outcome is theirs to record, not ours to overwrite.
                logger.warning("outbox: delivery %s is no longer claimed by this owner; outcome ignored", id)
            elif row["state"] != DELIVERED:
                conn.execute(
                    f"UPDATE deliveries SET {assignments}, owner = NULL, lease_until = NULL, updated_at = ?"
                    " WHERE id = ?",
                    (*params, at, id),
                )
            if attempt is not None:  # the attempt was made, whoever records its outcome
                self._log_attempt(conn, id, attempt)
                self._observe(conn, id, row["target"] or endpoint_of(row["url"]), attempt, disable_after)

    @staticmethod
    def _log_attempt(conn: sqlite3.Connection, id: str, attempt: Attempt) -> None:
        n = conn.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM attempts WHERE delivery_id = ?", (id,)).fetchone()[0]
        conn.execute(
            f"INSERT INTO attempts (delivery_id, n, {_ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (id, n, attempt.at, attempt.duration, attempt.kind, attempt.status, attempt.error,
             bytes(attempt.body[:health.ANSWER_BYTES])),
        )
        conn.execute("DELETE FROM attempts WHERE delivery_id = ? AND n <= ?", (id, n - ATTEMPT_LOG_SIZE))

    @staticmethod
    def _observe(conn: sqlite3.Connection, id: str, target: str, attempt: Attempt,
                 disable_after: Optional[float]) -> None:
        """The endpoint's health after *attempt*; a disabled endpoint holds its pending deliveries."""
        row = conn.execute(f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints WHERE target = ?", (target,)).fetchone()
        before = EndpointHealth(target) if row is None else _row_to_health(row)
        after = health.observe(before, attempt.kind, attempt.status, attempt.at, disable_after)
        if after != before or row is None:
            conn.execute(
                f"INSERT OR REPLACE INTO endpoints ({_ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (target, after.disabled_at, after.reason, after.failing_since, after.last_failure_at,
                 after.last_status),
            )
        if before.enabled and not after.enabled:
            logger.warning("outbox: endpoint %s disabled (%s); its deliveries are held until"
                           " `syncworkers outbox enable`", health.shown(target), after.reason)
            conn.execute("UPDATE deliveries SET state = ? WHERE target = ? AND state = ?", (HELD, target, PENDING))
        elif not after.enabled:  # disabled while this attempt was on the wire
            conn.execute("UPDATE deliveries SET state = ? WHERE id = ? AND state = ?", (HELD, id, PENDING))

    def release(self, ids: Optional[Sequence[str]] = None) -> int:
        """Hand this owner's claims back (graceful stop): in flight -> pending, attempts unchanged.

        ``ids`` None releases all of this owner's claims (held if their endpoint is disabled).
        Returns how many were released.
        """
        at = self._now(None)
        query = f"UPDATE deliveries SET state = {_HOLD_IF_DISABLED.format(target='deliveries.target')}," \
                " owner = NULL, lease_until = NULL, updated_at = ? WHERE state = ? AND owner = ?"
        params = (at, IN_FLIGHT, self.owner)
        with self._write(durable=False) as conn:
            if ids is None:
                return conn.execute(query, params).rowcount
            return sum(
                conn.execute(f"{query} AND id IN ({_marks(len(chunk))})", (*params, *chunk)).rowcount
                for chunk in _chunks(ids)
            )

    def replay(
        self,
        ids: Optional[Sequence[str]] = None,
        endpoint: Optional[str] = None,
        since: Optional[float] = None,
        now: Optional[float] = None,
    ) -> int:
        """Send dead deliveries again: dead -> pending, due now, attempts reset to 0.

        Filters combine: ``ids``, ``endpoint``, and ``since`` (died at or after that
        time). At least one is required. ``last_error`` and ``last_status`` are kept.
        A delivery whose endpoint is disabled is held instead. Returns how many were replayed.
        """
        if ids is None and endpoint is None and since is None:
            raise ValueError("replay needs ids, an endpoint or a since time")
        at = self._now(now)
        where, params = self._filters(DEAD, endpoint, since)
        query = (
            f"UPDATE deliveries SET state = {_HOLD_IF_DISABLED.format(target='deliveries.target')},"
            " attempts = 0, next_attempt_at = ?, owner = NULL,"
            f" lease_until = NULL, updated_at = ? WHERE {where}"
        )
        head = (at, at, *params)
        with self._write() as conn:
            if ids is None:
                return conn.execute(query, head).rowcount
            return sum(
                conn.execute(f"{query} AND id IN ({_marks(len(chunk))})", (*head, *chunk)).rowcount
                for chunk in _chunks(ids)
            )

    def purge(self, older_than: float, state: str = DELIVERED, now: Optional[float] = None) -> int:
        """Delete ``state`` deliveries (delivered or dead) last updated more than ``older_than`` s ago."""
        if state not in (DELIVERED, DEAD):
            raise ValueError(f"purge removes delivered or dead deliveries only, not {state!r}")
        if older_than < 0:
            raise ValueError(f"older_than must be >= 0, got {older_than!r}")
        cutoff = self._now(now) - older_than
        with self._write() as conn:
            conn.execute("DELETE FROM attempts WHERE delivery_id IN"
                         " (SELECT id FROM deliveries WHERE state = ? AND updated_at < ?)", (state, cutoff))
            return conn.execute(
                "DELETE FROM deliveries WHERE state = ? AND updated_at < ?", (state, cutoff)
            ).rowcount

    def enable_endpoint(self, endpoint: str, now: Optional[float] = None) -> int:
        """Enable *endpoint* (``host[:port]/path``) again and release its held deliveries, due now.

        Its failing streak starts afresh. Returns how many were released; KeyError
        for an endpoint the outbox has never seen.
        """
        at = self._now(now)
        with self._write() as conn:
            found = conn.execute("UPDATE endpoints SET disabled_at = NULL, reason = NULL, failing_since = NULL"
                                 " WHERE target = ?", (endpoint,)).rowcount
            if not found:
                raise KeyError(endpoint)
            released = conn.execute(
                "UPDATE deliveries SET state = ?, next_attempt_at = ?, updated_at = ? WHERE target = ? AND state = ?",
                (PENDING, at, at, endpoint, HELD)).rowcount
        self._subscribers.notify()
        return int(released)

    # -- reading ----------------------------------------------------------

    @staticmethod
    def _filters(state: Optional[str], endpoint: Optional[str], since: Optional[float]) -> Tuple[str, List[Any]]:
        clauses: List[str] = ["1"]
        params: List[Any] = []
        if state is not None:
            if state not in STATES:
                raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
            clauses.append("state = ?")
            params.append(state)
        if endpoint is not None:
            clauses.append("endpoint = ?")
            params.append(endpoint)
        if since is not None:
            clauses.append("updated_at >= ?")
            params.append(float(since))
        return " AND ".join(clauses), params

    def get(self, id: str) -> Optional[Delivery]:
        """The delivery with this id, or None."""
        with self._conn() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE id = ?", (id,)).fetchone()
        return None if row is None else _row_to_delivery(row)

    def list(
        self,
        state: Optional[str] = None,
        endpoint: Optional[str] = None,
        since: Optional[float] = None,
        limit: int = 100,
    ) -> List[Delivery]:
        """Deliveries matching every filter given, most recently updated first.

        ``since`` keeps those updated (added, retried, delivered, died) at or after that time.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        where, params = self._filters(state, endpoint, since)
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM deliveries WHERE {where}"
                " ORDER BY updated_at DESC, rowid DESC LIMIT ?",
                (*params, int(limit)),
            ).fetchall()
        return [_row_to_delivery(row) for row in rows]

    def counts(self) -> Dict[str, int]:
        """``{"pending", "in_flight", "delivered", "dead", "held"}``; pending includes those in flight."""
        with self._conn() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()
        by_state = {state: 0 for state in STATES}
        by_state.update({row[0]: row[1] for row in rows})
        return {
            "pending": by_state[PENDING] + by_state[IN_FLIGHT],
            "in_flight": by_state[IN_FLIGHT],
            "delivered": by_state[DELIVERED],
            "dead": by_state[DEAD],
            "held": by_state[HELD],
        }

    def attempts(self, id: str) -> List[Attempt]:
        """The attempt log of delivery *id*, oldest first (the last ATTEMPT_LOG_SIZE attempts)."""
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ? ORDER BY n",
                                (id,)).fetchall()
        return [_row_to_attempt(row) for row in rows]

    def last_attempts(self, ids: Sequence[str]) -> Dict[str, Attempt]:
        """The last attempt of each delivery in *ids* that has one."""
        found: Dict[str, Attempt] = {}
        with self._conn() as conn:
            for chunk in _chunks(ids):
                rows = conn.execute(
                    f"SELECT a.delivery_id, {', '.join('a.' + c for c in _ATTEMPT_COLUMNS.split(', '))}"
                    " FROM attempts a JOIN (SELECT delivery_id, MAX(n) AS n FROM attempts"
                    f" WHERE delivery_id IN ({_marks(len(chunk))}) GROUP BY delivery_id) last"
                    " ON a.delivery_id = last.delivery_id AND a.n = last.n", chunk).fetchall()
                found.update({row[0]: _row_to_attempt(row[1:]) for row in rows})
        return found

    def endpoints(self) -> List[EndpointHealth]:
        """Every endpoint attempted so far, disabled ones first, with its held deliveries counted."""
        with self._conn() as conn:
            held = dict(conn.execute("SELECT target, COUNT(*) FROM deliveries WHERE state = ? GROUP BY target",
                                     (HELD,)).fetchall())
            rows = conn.execute(f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints"
                                " ORDER BY disabled_at IS NULL, target").fetchall()
        return [_row_to_health(row, held.get(row[0], 0)) for row in rows]

    def check(self) -> Optional[str]:
        """The first problem ``PRAGMA quick_check`` finds in the file (reads all of it); None when sound."""
        with self._conn() as conn:
            row = conn.execute("PRAGMA quick_check(1)").fetchone()
        return None if row is None or row[0] == "ok" else str(row[0])

    def oldest_pending(self) -> Optional[float]:
        """``created_at`` of the oldest delivery still pending or in flight; None when there is none."""
        with self._conn() as conn:
            row = conn.execute("SELECT MIN(created_at) FROM deliveries WHERE state IN (?, ?)",
                               (PENDING, IN_FLIGHT)).fetchone()
        return None if row[0] is None else float(row[0])

    def next_due(self) -> Optional[float]:
        """When something next becomes claimable: the earliest pending due time or lease expiry."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT (SELECT MIN(next_attempt_at) FROM deliveries WHERE state = ?),"
                " (SELECT MIN(lease_until) FROM deliveries WHERE state = ?)",
                (PENDING, IN_FLIGHT),
            ).fetchone()
        times = [t for t in row if t is not None]
        return min(times) if times else None

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Close every connection; idempotent. Later calls raise ValueError."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        self._subscribers.close()
        with self._lock:
            if self._shared is not None:
                self._shared.close()  # under the lock: no thread is using it
        for conn in idle:
            conn.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Outbox(path={self.path!r}, owner={self.owner!r})"


__all__ = ["Outbox", "DEFAULT_LEASE_SECONDS", "SCHEMA_VERSION", "schema_statements"]
