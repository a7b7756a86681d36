"""The PostgreSQL outbox store (psycopg 3): one outbox shared by processes on several machines.

Claims use ``FOR UPDATE SKIP LOCKED`` plus a lease, so a delivery is sent by one
owner at a time and a dead owner's claims are taken over when their lease
expires. Lease and due times are on the database server's clock (never this
machine's), so machines whose clocks disagree neither steal nor stall each
other's claims; :attr:`PostgresOutbox.clock` estimates that clock here. Every
operation is one short transaction: the HTTP request happens between two of
them, never inside one. :meth:`PostgresOutbox.add` notifies the table's channel
in its transaction, and :meth:`PostgresOutbox.subscribe` listens to it, so a
running deliverer hears of a committed delivery at once.

The SQL is in :mod:`.postgres_sql`, the pool in :mod:`.postgres_connections`, the
read-only queries in :mod:`.postgres_reads`, the estimate of the server's clock in
:mod:`.server_clock`. Requires the ``postgresql``
extra: ``pip install 'syncworkers[postgresql]'``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from ..config.connections import POSTGRESQL, parse_connection_url
from ..config.validators import checked, count, seconds
from ..exceptions import ConfigError
from ..message import new_id
from . import dbapi
from . import health
from .health import ATTEMPT_LOG_SIZE, EndpointHealth, Observation, endpoint_of
from .listen import Listener, Subscribers
from .store import (DEAD, DEFAULT_LEASE_SECONDS, DELIVERED, HELD, IN_FLIGHT, PENDING, Attempt, Delivery, Settlement,
                    check_new_delivery, default_owner, health_of, trace_text)

try:
    import psycopg
    import psycopg_pool  # noqa: F401 - checked here for the message; .postgres_connections uses it
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "the PostgreSQL outbox needs psycopg 3: pip install 'syncworkers[postgresql]'") from exc

from .postgres_connections import CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, Connections, PostgresConnections
from .postgres_reads import PostgresReads
from .postgres_sql import SETTLE_COLUMNS, DEFAULT_TABLE, delivery_of, drop_statements, filters, schema_statements
from .server_clock import ServerClock

logger = logging.getLogger(__name__)


class PostgresOutbox(PostgresReads):
    """A delivery queue in a PostgreSQL table, shared by every process that opens the same URL.

    The table (``table``, in ``schema`` when given) is created on first use, or by
    :meth:`init`. Nothing connects before first use. Each thread borrows a
    connection from a pool of ``pool_size``. Times come from the database server's
    clock unless a method is given ``now``, or unless ``clock`` is given: then,
    as in the SQLite store, that function is the time source (tests).
    ``local_clock`` is this machine's clock, which :attr:`clock` corrects by the
    measured offset to the server's. ``connections`` replaces the store's own pool with an
    app's connections to the database at *url* (Django's: see ``postgres_connections.Connections``);
    the tables are then the app's to create.
    """

    durable = True
    #: What a store operation raises when the database cannot do it now (or the store is closed).
    errors: Tuple[Type[BaseException], ...] = (ValueError, psycopg.Error)

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        owner: Optional[str] = None,
        table: str = DEFAULT_TABLE,
        schema: Optional[str] = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        clock: Optional[Callable[[], float]] = None,
        local_clock: Optional[Callable[[], float]] = None,
        connections: Optional[Connections] = None,
    ) -> None:
        lease_seconds = checked("lease_seconds", lease_seconds, seconds(above=0, text=False))
        pool_size = checked("pool_size", pool_size, count(text=False))
        if not table or (schema is not None and not schema):
            raise ConfigError("table and schema must be non-empty names")
        try:
            where = parse_connection_url(url, (POSTGRESQL,), paths=False)
        except ValueError as exc:
            raise ConfigError(f"invalid PostgreSQL outbox URL: {exc}") from None
        url = self._url = where.dsn
        self.path: Optional[str] = where.shown  #: where the store lives, for display (no password)
        self.lease_seconds = float(lease_seconds)
        self.owner = owner or default_owner()
        self.table, self.schema, self.pool_size = table, schema, pool_size
        self._connections: Connections = connections or PostgresConnections(url, table, schema, pool_size,
                                                                             self._sample_clock)
        self.channel = self._connections.channel  #: the NOTIFY channel
        self._fixed_clock = clock
        self._server_clock = ServerClock(local_clock or (lambda: time.time()))
        self._subscribers = Subscribers(self._listener)

    def _now_param(self, now: Optional[float]) -> Optional[float]:
        if now is not None:
            return float(now)
        return None if self._fixed_clock is None else float(self._fixed_clock())

    def _sample_clock(self, conn: "psycopg.Connection[Any]") -> None:
        before = self._server_clock.local()
        row = conn.execute(self._connections.compiled("db_now")).fetchone()
        self._server_clock.record(before, row[0] if row else None)

    @property
    def clock(self) -> Callable[[], float]:
        """Estimated time on the database server's clock (epoch seconds), or the ``clock`` given."""
        if self._fixed_clock is not None:
            return self._fixed_clock
        return self._db_clock

    def _db_clock(self) -> float:
        if not self._server_clock.measured:  # not measured yet: connect (and measure) now, if the server answers
            try:
                self._connections.ready()
            except self.errors:
                pass
        return self._server_clock.now()

    # -- writing --------------------------------------------------------------------

    def init(self) -> None:
        """Create the table and its indexes now (they are otherwise created on first use)."""
        self._connections.ready()

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
        trace_context: Optional[Mapping[str, str]] = None,
    ) -> str:
        """Store a pending delivery due at once and return its id; committed before it returns.

        With ``connection`` (a psycopg or other DB-API connection to the same
        database), the delivery is written in that connection's current
        transaction and neither committed nor rolled back: it exists, and
        deliverers hear of it, when the caller commits. An id already stored
        changes nothing and returns that id.
        """
        headers = check_new_delivery(url, body, headers)
        id = new_id() if id is None else str(id)
        params = {"id": id, "endpoint": endpoint, "url": url, "body": bytes(body), "target": endpoint_of(url),
                  "headers": json.dumps(headers), "now": self._now_param(now), "channel": self.channel,
                  "trace_context": trace_text(trace_context)}
        query = self._connections.query("add")
        if connection is not None:
            dbapi.execute(connection, query, params)
            return id
        with self._connections.connection() as conn:
            row = conn.execute(query, params).fetchone()
            if row is not None and row[1] == HELD:
                self._release_if_enabled(conn, [id])
        return id

    def claim_due(self, limit: int, now: Optional[float] = None) -> List[Delivery]:
        """Lease up to ``limit`` due deliveries to this owner, earliest due first.

        Due means pending with ``next_attempt_at`` reached, or in flight under an
        expired lease (taken over), on the database's clock unless ``now`` is given.
        """
        if limit <= 0:
            return []
        params = {"now": self._now_param(now), "limit": int(limit), "owner": self.owner,
                  "lease": self.lease_seconds}
        query = self._connections.query("claim")
        with self._connections.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        rows.sort(key=lambda row: (row[7], row[18]))
        taken = sorted({row[17] or "?" for row in rows if row[16] == IN_FLIGHT})
        if taken:
            logger.warning("outbox: took over deliveries whose lease expired (owners: %s)", ", ".join(taken))
        return [delivery_of(row) for row in rows]

    def renew(self, ids: Sequence[str], now: Optional[float] = None) -> None:
        """Extend the leases this owner still holds on ``ids`` (others' claims are untouched)."""
        if not ids:
            return
        self._run("renew", {"now": self._now_param(now), "lease": self.lease_seconds, "owner": self.owner,
                            "ids": list(ids)})

    def settle(self, settlements: Sequence[Settlement], *, disable_after: Optional[float] = None) -> List[str]:
        """Record attempts' outcomes and their attempt logs in one statement; their endpoints' health after.

        Returns the ids the outbox does not hold (nothing is recorded for them). An
        outcome this owner may no longer record (see :class:`Settlement`) is ignored
        with a warning; its attempt is logged all the same. Most batches leave every
        endpoint's health as it was (successes to healthy endpoints): then the one
        statement is all, and no endpoint row is locked, so deliveries to one endpoint
        from many processes do not queue on its row.
        """
        if not settlements:
            return []
        params = _settle_params(settlements, self._now_param(None))
        params.update(owner=self.owner, keep=ATTEMPT_LOG_SIZE)
        query = self._connections.query("settle")
        with self._connections.connection() as conn:
            rows = conn.execute(query, params).fetchall()
            known = {row[0]: row for row in rows if row[1]}
            attempts: Dict[str, List[Observation]] = {}
            stored: Dict[str, Any] = {}
            for s in settlements:
                row = known.get(s.id)
                if row is None:
                    continue
                if not row[2] and s.state != DELIVERED:
                    # Our lease expired and another owner took the delivery over (or it was already
                    # settled): its outcome is theirs to record, not ours to overwrite.
                    logger.warning("outbox: delivery %s is no longer claimed by this owner; outcome ignored", s.id)
                if s.attempt is not None:
                    target = row[3] or endpoint_of(row[4])
                    attempts.setdefault(target, []).append((s.id, s.attempt.kind, s.attempt.status, s.attempt.at))
                    stored[target] = row[6:] if row[6] is not None else None
            changing = [target for target, made in attempts.items() if not health.observe_all(
                EndpointHealth(target) if stored[target] is None else health_of(stored[target]), made,
                disable_after).quiet(stored[target] is not None)]
            if changing:
                self._observe(conn, {target: attempts[target] for target in changing}, disable_after)
            held = [row[0] for row in rows if row[5] == HELD]
            if held:
                self._release_if_enabled(conn, held)
        return [s.id for s in settlements if s.id not in known]

    def _release_if_enabled(self, conn: "psycopg.Connection[Any]", ids: List[str]) -> None:
        """Release the deliveries among *ids* a statement held whose endpoint is enabled by now (see the
        ``release_if_enabled`` query): an enable_endpoint() that ran beside that statement missed them."""
        with self._connections.transaction(conn):
            conn.execute(self._connections.compiled("lock_endpoints_of"), {"ids": ids})
            conn.execute(self._connections.compiled("release_if_enabled"), {"ids": ids, "channel": self.channel})

    def _observe(self, conn: "psycopg.Connection[Any]", attempts: Dict[str, List[Observation]],
                 disable_after: Optional[float]) -> None:
        """The health of the endpoints of *attempts* (by endpoint, in the order they ended), their rows locked;
        a disabled endpoint holds its pending deliveries."""
        targets = sorted(attempts)
        with self._connections.transaction(conn):
            conn.execute(self._connections.compiled("endpoints_new"), {"targets": targets})
            for row in conn.execute(self._connections.compiled("endpoints_lock"), {"targets": targets}).fetchall():
                target = row[0]
                seen = health.observe_all(health_of(row), attempts[target], disable_after)
                after = seen.after
                if after != seen.before:
                    conn.execute(self._connections.compiled("endpoint_set"), {
                        "target": target, "disabled_at": after.disabled_at, "reason": after.reason,
                        "failing_since": after.failing_since, "last_failure_at": after.last_failure_at,
                        "last_status": after.last_status})
                if seen.disabled:
                    logger.warning("outbox: endpoint %s disabled (%s); its deliveries are held until"
                                   " `syncworkers outbox enable`", health.shown(target), after.reason)
                    conn.execute(self._connections.compiled("hold_endpoint"), {"target": target})
                if seen.hold:  # disabled while these attempts were on the wire
                    conn.execute(self._connections.compiled("hold_ids"), {"ids": list(seen.hold)})

    def mark_delivered(self, id: str, status: Optional[int], now: Optional[float] = None, *,
                       attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        """Record a successful attempt: final, even if this owner's lease was lost meanwhile (see :meth:`settle`).
        KeyError for an unknown id."""
        self._settle_one(Settlement(id, DELIVERED, status, attempt=attempt, now=now), disable_after)

    def mark_retry(self, id: str, next_attempt_at: float, error: Optional[str], status: Optional[int] = None,
                   spend_attempt: bool = True, now: Optional[float] = None, *,
                   attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        """Put a claimed delivery back to pending, due at ``next_attempt_at`` (on the database's clock);
        held if its endpoint is disabled."""
        self._settle_one(Settlement(id, PENDING, status, error, float(next_attempt_at), spend_attempt, attempt, now),
                         disable_after)

    def mark_dead(self, id: str, reason: str, status: Optional[int] = None, spend_attempt: bool = True,
                  now: Optional[float] = None, *,
                  attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        """Give up on a claimed delivery; ``reason`` is kept as its last error."""
        self._settle_one(Settlement(id, DEAD, status, reason, None, spend_attempt, attempt, now), disable_after)

    def _settle_one(self, settlement: Settlement, disable_after: Optional[float]) -> None:
        if self.settle([settlement], disable_after=disable_after):
            raise KeyError(settlement.id)

    def _run(self, key: str, params: Dict[str, Any], **parts: str) -> int:
        with self._connections.connection() as conn:
            query = self._connections.format(key, conn, **parts) if parts else self._connections.compiled(key)
            return conn.execute(query, params).rowcount

    def _run_holding(self, key: str, params: Dict[str, Any], **parts: str) -> int:
        """:meth:`_run` for a statement that may hold what it changes (it returns ``id, state``): what it
        held behind an endpoint enabled meanwhile is released (see :meth:`_release_if_enabled`)."""
        with self._connections.connection() as conn:
            query = self._connections.format(key, conn, **parts) if parts else self._connections.compiled(key)
            rows = conn.execute(query, params).fetchall()
            held = [row[0] for row in rows if row[1] == HELD]
            if held:
                self._release_if_enabled(conn, held)
        return len(rows)

    def release(self, ids: Optional[Sequence[str]] = None) -> int:
        """Hand this owner's claims back (graceful stop): in flight -> pending, attempts unchanged."""
        if ids is None:
            return self._run_holding("release", {"owner": self.owner})
        ids = list(ids)
        return self._run_holding("release_ids", {"owner": self.owner, "ids": ids}) if ids else 0

    def replay(self, ids: Optional[Sequence[str]] = None, endpoint: Optional[str] = None,
               since: Optional[float] = None, now: Optional[float] = None) -> int:
        """Send dead deliveries again: dead -> pending, due now, attempts reset to 0.

        Filters combine: ``ids``, ``endpoint``, ``since`` (died at or after); one at least.
        """
        if ids is None and endpoint is None and since is None:
            raise ValueError("replay needs ids, an endpoint or a since time")
        where, params = filters(DEAD, endpoint, since)
        if ids is not None:
            where += " AND id = ANY(%(ids)s)"
            params["ids"] = list(ids)
        return self._run_holding("replay", {**params, "now": self._now_param(now)}, where=where)

    def purge(self, older_than: float, state: str = DELIVERED, now: Optional[float] = None) -> int:
        """Delete ``state`` deliveries (delivered or dead) last updated more than ``older_than`` s ago."""
        if state not in (DELIVERED, DEAD):
            raise ValueError(f"purge removes delivered or dead deliveries only, not {state!r}")
        if older_than < 0:
            raise ValueError(f"older_than must be >= 0, got {older_than!r}")
        query = self._connections.query("purge")
        with self._connections.connection() as conn:
            row = conn.execute(query, {"state": state, "older_than": float(older_than),
                                       "now": self._now_param(now)}).fetchone()
        return int(row[0]) if row else 0

    def enable_endpoint(self, endpoint: str, now: Optional[float] = None) -> int:
        """Enable *endpoint* (``host[:port]/path``) again and release its held deliveries, due now.

        Its failing streak starts afresh. Returns how many were released; KeyError
        for an endpoint the outbox has never seen.
        """
        with self._connections.connection() as conn, self._connections.transaction(conn):
            if conn.execute(self._connections.compiled("enable"), {"target": endpoint}).fetchone() is None:
                raise KeyError(endpoint)
            row = conn.execute(self._connections.compiled("release_held"), {"target": endpoint, "channel": self.channel,
                                                               "now": self._now_param(now)}).fetchone()
        return int(row[0]) if row else 0

    # -- notifications and lifecycle --------------------------------------------------

    def _listener(self, callback: Callable[[], None]) -> Listener:
        return Listener(self._url, self.channel, callback, name=f"syncworkers-outbox-listen-{self.table}")

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call *callback* whenever a delivery is committed, by any process; returns the unsubscribe.

        One listener thread (one idle connection) serves every subscriber until the
        last unsubscribes or :meth:`close`.
        """
        self._connections.check_open()
        return self._subscribers.subscribe(callback)

    def close(self) -> None:
        """Stop the listener and close every connection; idempotent. Later calls raise ValueError."""
        self._connections.close()
        self._subscribers.close()

    def __enter__(self) -> "PostgresOutbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresOutbox(url={self.path!r}, table={self.table!r}, owner={self.owner!r})"


def _settle_params(settlements: Sequence[Settlement], now: Optional[float]) -> Dict[str, Any]:
    """The arrays of the ``settle`` statement (one per :data:`~.postgres_sql.SETTLE_COLUMNS`), one entry an outcome.
    *now* stands in for an outcome's own time when it has none (None: the database's clock).

    Numbers go as text (the statement casts each array): psycopg types a list by its
    values (smallint or integer, unknown when all are None), and prepares a statement
    once it has run with the same types five times; one type per array keeps it prepared.
    """
    columns: Dict[str, List[Any]] = {name: [] for name, _ in SETTLE_COLUMNS}
    no_attempt = (None, None, None, None, None, b"")
    for s in settlements:
        a = s.attempt
        logged = no_attempt if a is None else (_text(a.at), _text(a.duration), a.kind, _text(a.status), a.error,
                                               bytes(a.body[:health.ANSWER_BYTES]))
        values = (s.id, s.state, _text(int(bool(s.spend))), _text(s.next_attempt_at), s.error, _text(s.status),
                  _text(now if s.now is None else float(s.now)), a is not None, *logged)
        for (name, _), value in zip(SETTLE_COLUMNS, values):
            columns[name].append(value)
    return columns


def _text(value: Optional[float]) -> Optional[str]:
    """A number as the text PostgreSQL reads back exactly (``repr`` of a float round-trips); None stays NULL."""
    return None if value is None else repr(value)


__all__ = ["CONNECT_TIMEOUT", "DEFAULT_POOL_SIZE", "DEFAULT_TABLE", "PostgresOutbox", "drop_statements",
           "schema_statements"]
