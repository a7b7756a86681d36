"""The reading half of the PostgreSQL outbox store: deliveries, counts, attempt logs, endpoints."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from .health import EndpointHealth
from .postgres_connections import Connections
from .postgres_sql import delivery_of, filters
from .server_clock import ServerClock
from .store import Attempt, Delivery, attempt_of, counts_of, health_of


class PostgresReads:
    """The read-only queries of :class:`~syncworkers.outbox.postgres.PostgresOutbox` (which mixes them in)."""

    _connections: Connections
    _server_clock: ServerClock

    def get(self, id: str) -> Optional[Delivery]:
        """The delivery with this id, or None."""
        query = self._connections.query("get")
        with self._connections.connection() as conn:
            row = conn.execute(query, {"id": id}).fetchone()
        return None if row is None else delivery_of(row)

    def list(self, state: Optional[str] = None, endpoint: Optional[str] = None,
             since: Optional[float] = None, limit: int = 100) -> List[Delivery]:
        """Deliveries matching every filter given, most recently updated first."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        where, params = filters(state, endpoint, since)
        with self._connections.connection() as conn:
            query = self._connections.format("list", conn, where=where)
            rows = conn.execute(query, {**params, "limit": int(limit)}).fetchall()
        return [delivery_of(row) for row in rows]

    def counts(self) -> Dict[str, int]:
        """``{"pending", "in_flight", "delivered", "dead", "held"}``; pending includes those in flight."""
        query = self._connections.query("counts")
        with self._connections.connection() as conn:
            rows = conn.execute(query).fetchall()
        return counts_of(rows)

    def oldest_pending(self) -> Optional[float]:
        """``created_at`` of the oldest delivery still pending or in flight; None when there is none."""
        query = self._connections.query("oldest_pending")
        with self._connections.connection() as conn:
            row = conn.execute(query).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def attempts(self, id: str) -> List[Attempt]:
        """The attempt log of delivery *id*, oldest first (the last ATTEMPT_LOG_SIZE attempts)."""
        query = self._connections.query("attempts")
        with self._connections.connection() as conn:
            rows = conn.execute(query, {"id": id}).fetchall()
        return [attempt_of(row) for row in rows]

    def last_attempts(self, ids: Sequence[str]) -> Dict[str, Attempt]:
        """The last attempt of each delivery in *ids* that has one."""
        query = self._connections.query("last_attempts")
        with self._connections.connection() as conn:
            rows = conn.execute(query, {"ids": list(ids)}).fetchall()
        return {row[0]: attempt_of(row[1:]) for row in rows}

    def endpoints(self) -> List[EndpointHealth]:
        """Every endpoint attempted so far, disabled ones first, with its held deliveries counted."""
        query = self._connections.query("endpoints")
        with self._connections.connection() as conn:
            rows = conn.execute(query).fetchall()
        return [health_of(row[:6], int(row[6])) for row in rows]

    def next_due(self) -> Optional[float]:
        """When something next becomes claimable: the earliest pending due time or lease expiry.

        Also refreshes the clock offset (the deliverer asks this at every turn).
        """
        query = self._connections.query("next_due")
        with self._connections.connection() as conn:
            before = self._server_clock.local()
            row = conn.execute(query).fetchone()
            self._server_clock.record(before, row[2] if row else None)
        times = [t for t in (row[:2] if row else ()) if t is not None]
        return min(times) if times else None


__all__ = ["PostgresReads"]
