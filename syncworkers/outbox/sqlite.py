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
from .health import ATTEMPT_LOG_SIZE, EndpointHealth, endpoint_of
from .listen import Subscribers
from .sqlite_connections import Connections, SQLiteConnections, connect
from .sqlite_reads import SQLiteReads
from .sqlite_schema import (ATTEMPT_COLUMNS, CLAIM, ENDPOINT_COLUMNS, HOLD_IF_DISABLED, INSERT, SCHEMA_VERSION, A, E,
                            T, chunks, delivery_of, drop_statements, filters, marks, schema_statements)
from .store import (DEAD, DEFAULT_LEASE_SECONDS, DELIVERED, HELD, IN_FLIGHT, PENDING, Attempt, Delivery,
                    check_new_delivery, default_owner, health_of, trace_text)

logger = logging.getLogger(__name__)


class Outbox(SQLiteReads):
    """A delivery queue in a SQLite file (durable) or in memory (``path`` None; not durable).

    Every method is safe from many threads at once. A file is opened in WAL mode; adds
    commit with ``synchronous=FULL``, so a delivery survives a crash once :meth:`add`
    returns (claims and outcomes skip the fsync: see ``SQLiteConnections.write``). Each
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
                                            lambda target: self._connect(target))
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
            with self._connections.write() as conn:
                conn.execute(*dbapi.convert(INSERT, params, "qmark"))
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

    def mark_retry(self, id: str, next_attempt_at: float, error: Optional[str], status: Optional[int] = None,
                   spend_attempt: bool = True, now: Optional[float] = None, *,
                   attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
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

    def mark_dead(self, id: str, reason: str, status: Optional[int] = None, spend_attempt: bool = True,
                  now: Optional[float] = None, *,
                  attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
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
        with self._connections.write(durable=False) as conn:
            row = conn.execute(f"SELECT state, owner, target, url FROM {T} WHERE id = ?", (id,)).fetchone()
            if row is None:
                raise KeyError(id)
            held = row["state"] == IN_FLIGHT and row["owner"] == self.owner
            if require_claim and not held:
                # Our lease expired and another owner took the delivery over (or it was
                # already settled): its outcome is theirs to record, not ours to overwrite.
                logger.warning("outbox: delivery %s is no longer claimed by this owner; outcome ignored", id)
            elif row["state"] != DELIVERED:
                conn.execute(
                    f"UPDATE {T} SET {assignments}, owner = NULL, lease_until = NULL, updated_at = ?"
                    " WHERE id = ?",
                    (*params, at, id),
                )
            if attempt is not None:  # the attempt was made, whoever records its outcome
                self._log_attempt(conn, id, attempt)
                self._observe(conn, id, row["target"] or endpoint_of(row["url"]), attempt, disable_after)

    @staticmethod
    def _log_attempt(conn: sqlite3.Connection, id: str, attempt: Attempt) -> None:
        n = conn.execute(f"SELECT COALESCE(MAX(n), 0) + 1 FROM {A} WHERE delivery_id = ?", (id,)).fetchone()[0]
        conn.execute(
            f"INSERT INTO {A} (delivery_id, n, {ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (id, n, attempt.at, attempt.duration, attempt.kind, attempt.status, attempt.error,
             bytes(attempt.body[:health.ANSWER_BYTES])),
        )
        conn.execute(f"DELETE FROM {A} WHERE delivery_id = ? AND n <= ?", (id, n - ATTEMPT_LOG_SIZE))

    @staticmethod
    def _observe(conn: sqlite3.Connection, id: str, target: str, attempt: Attempt,
                 disable_after: Optional[float]) -> None:
        """The endpoint's health after *attempt*; a disabled endpoint holds its pending deliveries."""
        row = conn.execute(f"SELECT {ENDPOINT_COLUMNS} FROM {E} WHERE target = ?", (target,)).fetchone()
        before = EndpointHealth(target) if row is None else health_of(row)
        after = health.observe(before, attempt.kind, attempt.status, attempt.at, disable_after)
        if after != before or row is None:
            conn.execute(
                f"INSERT OR REPLACE INTO {E} ({ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (target, after.disabled_at, after.reason, after.failing_since, after.last_failure_at,
                 after.last_status),
            )
        if before.enabled and not after.enabled:
            logger.warning("outbox: endpoint %s disabled (%s); its deliveries are held until"
                           " `syncworkers outbox enable`", health.shown(target), after.reason)
            conn.execute(f"UPDATE {T} SET state = ? WHERE target = ? AND state = ?", (HELD, target, PENDING))
        elif not after.enabled:  # disabled while this attempt was on the wire
            conn.execute(f"UPDATE {T} SET state = ? WHERE id = ? AND state = ?", (HELD, id, PENDING))

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
