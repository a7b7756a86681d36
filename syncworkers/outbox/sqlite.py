"""The SQLite outbox store (stdlib ``sqlite3``): the default, embedded backend.

A delivery is written (and fsynced) before :meth:`Outbox.add` returns, and leaves
the queue only as ``delivered`` or ``dead``. Workers take deliveries with
:meth:`Outbox.claim_due`, which leases them to one owner at a time; the lease of a
process that died expires and another owner takes the delivery over, so a crash
loses nothing (at-least-once, same id). Several threads and several processes may
share one file. This module stores and schedules; it sends nothing. The schema and
its SQL are in :mod:`.sqlite_schema`, the connections in :mod:`.sqlite_connections`,
the read-only queries in :mod:`.sqlite_reads`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from ..config.validators import checked, seconds
from ..message import new_id
from . import dbapi
from . import health
from .health import ATTEMPT_LOG_SIZE, EndpointHealth, Observation, endpoint_of
from .listen import Subscribers
from .sqlite_connections import Connections, SQLiteConnections, connect
from .sqlite_reads import SQLiteReads
from .sqlite_schema import (CLAIM, ENDPOINT_COLUMNS, HOLD_IF_DISABLED, INSERT, LOG_ATTEMPT,
                            SCHEMA_VERSION, SETTLE, TRIM_LOG, A, E, T, chunks, delivery_of, drop_statements, filters,
                            marks, schema_statements)
from .store import (DEAD, DEFAULT_LEASE_SECONDS, DELIVERED, HELD, IN_FLIGHT, PENDING, Attempt, Delivery, Settlement,
                    check_new_delivery, default_owner, health_of, trace_text)

logger = logging.getLogger(__name__)


class Outbox(SQLiteReads):
    """A delivery queue in a SQLite file (durable) or in memory (``path`` None; not durable).

    Every method is safe from many threads at once. A file is opened in WAL mode; a
    delivery is committed when :meth:`add` returns, so a crash of any process (kill -9)
    loses nothing. With ``fsync`` the add also waits until the file's log is on disk, so
    a power cut or an OS crash loses nothing either; without it (the default: a sync
    costs each call milliseconds, more on a busy disk) those can take back what was added
    in the moments before them, until the next checkpoint or the operating system's
    write-back put it on disk (see ``SQLiteConnections``). Each
    thread borrows a connection from a small pool. Times come from ``clock`` unless a
    method is given ``now``. ``owner`` names this process's claims. ``connections`` replaces
    the store's own with an app's connections to its database (Django's: see
    ``sqlite_connections.Connections``); the tables are then the app's to create.
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
        connections: Optional[Connections] = None,
        fsync: bool = False,
    ):
        lease_seconds = checked("lease_seconds", lease_seconds, seconds(above=0, text=False))
        if path is not None:
            path = os.fspath(path)
        self.lease_seconds = float(lease_seconds)
        self.owner = owner or default_owner()
        # Looked up at each call, not bound here, so that a patched time.time (freezegun) applies.
        self._clock = clock if clock is not None else (lambda: time.time())
        self._subscribers = Subscribers()
        if connections is None:
            connections = SQLiteConnections(None if path in (None, ":memory:") else path,
                                            lambda target: self._connect(target), fsync=fsync)
        self._connections: Connections = connections
        self.path: Optional[str] = connections.path
        self.durable: bool = connections.durable

    def _connect(self, target: str) -> sqlite3.Connection:
        """Every connection the store opens comes from here (a test limits them to fake a full disk)."""
        return connect(target)

    def _now(self, now: Optional[float]) -> float:
        return float(self._clock() if now is None else now)

    @property
    def clock(self) -> Callable[[], float]:
        """The time source (epoch seconds) of the methods not given ``now``."""
        return self._clock

    # -- writing ----------------------------------------------------------

    def add(self, endpoint: str, url: str, body: bytes, headers: Optional[Dict[str, str]] = None,
            id: Optional[str] = None, now: Optional[float] = None, *, connection: Any = None,
            trace_context: Optional[Mapping[str, str]] = None) -> str:
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
                  "headers": json.dumps(headers), "at": at, "target": endpoint_of(url),
                  "trace_context": trace_text(trace_context)}
        if connection is not None:
            self._connections.check_same_file(connection)
            dbapi.execute(connection, INSERT, params)
        else:
            self._connections.commit(*dbapi.convert(INSERT, params, "qmark"))
        # Subscribers look at once; a delivery in a caller's transaction is found once committed,
        # by their next look (at most the dispatcher's poll interval later).
        self._subscribers.notify()
        return id

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call *callback* after each delivery added through this store; returns the unsubscribe.

        Other processes' adds are not heard: their deliveries are found by the next look.
        """
        self._connections.check_open()
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
        with self._connections.write(durable=False) as conn:
            # Two bounded index searches merged: one OR query sorted every due row before
            # its LIMIT, which made each claim cost O(backlog).
            rows = conn.execute(CLAIM, (PENDING, at, IN_FLIGHT, int(limit))).fetchall()
            claimed = [delivery_of(row) for row in rows]
            conn.executemany(
                f"UPDATE {T} SET state = ?, owner = ?, lease_until = ?, updated_at = ? WHERE id = ?",
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
        with self._connections.write(durable=False) as conn:
            for chunk in chunks(ids):
                conn.execute(
                    f"UPDATE {T} SET lease_until = ? WHERE state = ? AND owner = ?"
                    f" AND id IN ({marks(len(chunk))})",
                    (at + self.lease_seconds, IN_FLIGHT, self.owner, *chunk),
                )

    def settle(self, settlements: Sequence[Settlement], *, disable_after: Optional[float] = None) -> List[str]:
        """Record attempts' outcomes, their attempt logs and their endpoints' health in one transaction.

        Returns the ids the outbox does not hold (nothing is recorded for them). An
        outcome this owner may no longer record (see :class:`Settlement`) is ignored
        with a warning; its attempt is logged all the same.
        """
        if not settlements:
            return []
        with self._connections.write(durable=False) as conn:
            rows: Dict[str, sqlite3.Row] = {}
            for chunk in chunks([s.id for s in settlements]):
                rows.update((row["id"], row) for row in conn.execute(
                    f"SELECT id, state, owner, target, url FROM {T} WHERE id IN ({marks(len(chunk))})", chunk))
            updates: Dict[str, List[Dict[str, Any]]] = {state: [] for state in SETTLE}
            logged: List[Dict[str, Any]] = []
            attempts: Dict[str, List[Observation]] = {}
            for s in settlements:
                row = rows.get(s.id)
                if row is None:
                    continue
                if s.state == DELIVERED or (row["state"] == IN_FLIGHT and row["owner"] == self.owner):
                    if row["state"] != DELIVERED:
                        updates[s.state].append({"id": s.id, "spend": int(bool(s.spend)), "status": s.status,
                                                 "error": s.error, "next": s.next_attempt_at, "now": self._now(s.now)})
                else:
                    # Our lease expired and another owner took the delivery over (or it was already
                    # settled): its outcome is theirs to record, not ours to overwrite.
                    logger.warning("outbox: delivery %s is no longer claimed by this owner; outcome ignored", s.id)
                if s.attempt is not None:  # the attempt was made, whoever records its outcome
                    a = s.attempt
                    logged.append({"id": s.id, "at": a.at, "duration": a.duration, "kind": a.kind, "status": a.status,
                                   "error": a.error, "body": bytes(a.body[:health.ANSWER_BYTES]),
                                   "keep": ATTEMPT_LOG_SIZE})
                    target = row["target"] or endpoint_of(row["url"])
                    attempts.setdefault(target, []).append((s.id, a.kind, a.status, a.at))
            for state, params in updates.items():
                if params:
                    conn.executemany(SETTLE[state], params)
            if logged:
                conn.executemany(LOG_ATTEMPT, logged)
                conn.executemany(TRIM_LOG, logged)
            self._observe(conn, attempts, disable_after)
        return [s.id for s in settlements if s.id not in rows]

    @staticmethod
    def _observe(conn: sqlite3.Connection, attempts: Dict[str, List[Observation]],
                 disable_after: Optional[float]) -> None:
        """The endpoints' health after *attempts* (by endpoint, in the order they ended)."""
        found: Dict[str, sqlite3.Row] = {}
        for chunk in chunks(list(attempts)):
            found.update((row["target"], row) for row in conn.execute(
                f"SELECT {ENDPOINT_COLUMNS} FROM {E} WHERE target IN ({marks(len(chunk))})", chunk))
        for target, made in attempts.items():
            row = found.get(target)
            seen = health.observe_all(EndpointHealth(target) if row is None else health_of(row), made, disable_after)
            after = seen.after
            if after != seen.before or (row is None and seen.counted):  # a new endpoint gets its row once
                conn.execute(
                    f"INSERT OR REPLACE INTO {E} ({ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (target, after.disabled_at, after.reason, after.failing_since, after.last_failure_at,
                     after.last_status),
                )
            if seen.disabled:
                logger.warning("outbox: endpoint %s disabled (%s); its deliveries are held until"
                               " `syncworkers outbox enable`", health.shown(target), after.reason)
                conn.execute(f"UPDATE {T} SET state = ? WHERE target = ? AND state = ?", (HELD, target, PENDING))
            for chunk in chunks(seen.hold):  # disabled while these attempts were on the wire
                conn.execute(f"UPDATE {T} SET state = ? WHERE state = ? AND id IN ({marks(len(chunk))})",
                             (HELD, PENDING, *chunk))

    def mark_delivered(self, id: str, status: Optional[int], now: Optional[float] = None, *,
                       attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        """Record a successful attempt: the delivery is final (see :meth:`settle`). KeyError for an unknown id."""
        self._settle_one(Settlement(id, DELIVERED, status, attempt=attempt, now=now), disable_after)

    def mark_retry(self, id: str, next_attempt_at: float, error: Optional[str], status: Optional[int] = None,
                   spend_attempt: bool = True, now: Optional[float] = None, *,
                   attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        """Put a claimed delivery back to pending, due at ``next_attempt_at`` (held if its endpoint is disabled).

        ``spend_attempt=False`` postpones without counting an attempt (Retry-After, an
        open circuit). Ignored, with a warning, if this owner no longer holds the claim.
        """
        self._settle_one(Settlement(id, PENDING, status, error, float(next_attempt_at), spend_attempt, attempt, now),
                         disable_after)

    def mark_dead(self, id: str, reason: str, status: Optional[int] = None, spend_attempt: bool = True,
                  now: Optional[float] = None, *,
                  attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        """Give up on a claimed delivery; ``reason`` is kept as its last error.

        Ignored, with a warning, if this owner no longer holds the claim.
        """
        self._settle_one(Settlement(id, DEAD, status, reason, None, spend_attempt, attempt, now), disable_after)

    def _settle_one(self, settlement: Settlement, disable_after: Optional[float]) -> None:
        if self.settle([settlement], disable_after=disable_after):
            raise KeyError(settlement.id)

    def release(self, ids: Optional[Sequence[str]] = None) -> int:
        """Hand this owner's claims back (graceful stop): in flight -> pending, attempts unchanged.

        ``ids`` None releases all of this owner's claims (held if their endpoint is disabled).
        Returns how many were released.
        """
        at = self._now(None)
        query = f"UPDATE {T} SET state = {HOLD_IF_DISABLED.format(target=f'{T}.target')}," \
                " owner = NULL, lease_until = NULL, updated_at = ? WHERE state = ? AND owner = ?"
        params = (at, IN_FLIGHT, self.owner)
        with self._connections.write(durable=False) as conn:
            if ids is None:
                return conn.execute(query, params).rowcount
            return sum(
                conn.execute(f"{query} AND id IN ({marks(len(chunk))})", (*params, *chunk)).rowcount
                for chunk in chunks(ids)
            )

    def replay(self, ids: Optional[Sequence[str]] = None, endpoint: Optional[str] = None,
               since: Optional[float] = None, now: Optional[float] = None) -> int:
        """Send dead deliveries again: dead -> pending, due now, attempts reset to 0.

        Filters combine: ``ids``, ``endpoint``, and ``since`` (died at or after that
        time). At least one is required. ``last_error`` and ``last_status`` are kept.
        A delivery whose endpoint is disabled is held instead. Returns how many were replayed.
        """
        if ids is None and endpoint is None and since is None:
            raise ValueError("replay needs ids, an endpoint or a since time")
        at = self._now(now)
        where, params = filters(DEAD, endpoint, since)
        query = (
            f"UPDATE {T} SET state = {HOLD_IF_DISABLED.format(target=f'{T}.target')},"
            " attempts = 0, next_attempt_at = ?, owner = NULL,"
            f" lease_until = NULL, updated_at = ? WHERE {where}"
        )
        head = (at, at, *params)
        with self._connections.write() as conn:
            if ids is None:
                return conn.execute(query, head).rowcount
            return sum(
                conn.execute(f"{query} AND id IN ({marks(len(chunk))})", (*head, *chunk)).rowcount
                for chunk in chunks(ids)
            )

    def purge(self, older_than: float, state: str = DELIVERED, now: Optional[float] = None) -> int:
        """Delete ``state`` deliveries (delivered or dead) last updated more than ``older_than`` s ago."""
        if state not in (DELIVERED, DEAD):
            raise ValueError(f"purge removes delivered or dead deliveries only, not {state!r}")
        if older_than < 0:
            raise ValueError(f"older_than must be >= 0, got {older_than!r}")
        cutoff = self._now(now) - older_than
        with self._connections.write() as conn:
            conn.execute(f"DELETE FROM {A} WHERE delivery_id IN"
                         f" (SELECT id FROM {T} WHERE state = ? AND updated_at < ?)", (state, cutoff))
            return conn.execute(
                f"DELETE FROM {T} WHERE state = ? AND updated_at < ?", (state, cutoff)
            ).rowcount

    def enable_endpoint(self, endpoint: str, now: Optional[float] = None) -> int:
        """Enable *endpoint* (``host[:port]/path``) again and release its held deliveries, due now.

        Its failing streak starts afresh. Returns how many were released; KeyError
        for an endpoint the outbox has never seen.
        """
        at = self._now(now)
        with self._connections.write() as conn:
            found = conn.execute(f"UPDATE {E} SET disabled_at = NULL, reason = NULL, failing_since = NULL"
                                 " WHERE target = ?", (endpoint,)).rowcount
            if not found:
                raise KeyError(endpoint)
            released = conn.execute(
                f"UPDATE {T} SET state = ?, next_attempt_at = ?, updated_at = ? WHERE target = ? AND state = ?",
                (PENDING, at, at, endpoint, HELD)).rowcount
        self._subscribers.notify()
        return int(released)

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Close every connection; idempotent. Later calls raise ValueError."""
        self._connections.close()
        self._subscribers.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Outbox(path={self.path!r}, owner={self.owner!r})"


__all__ = ["Outbox", "DEFAULT_LEASE_SECONDS", "SCHEMA_VERSION", "check_new_delivery", "drop_statements",
           "schema_statements"]
