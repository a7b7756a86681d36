"""The reading half of the SQLite outbox store: deliveries, counts, attempt logs, endpoints."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from .health import EndpointHealth
from .sqlite_connections import Connections
from .sqlite_schema import ATTEMPT_COLUMNS, COLUMNS, ENDPOINT_COLUMNS, A, E, T, chunks, delivery_of, filters, marks
from .store import HELD, IN_FLIGHT, PENDING, Attempt, Delivery, attempt_of, counts_of, health_of


class SQLiteReads:
    """The read-only queries of :class:`~syncworkers.outbox.sqlite.Outbox` (which mixes them in)."""

    _connections: Connections

    def get(self, id: str) -> Optional[Delivery]:
        """The delivery with this id, or None."""
        with self._connections.borrow() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM {T} WHERE id = ?", (id,)).fetchone()
        return None if row is None else delivery_of(row)

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
        where, params = filters(state, endpoint, since)
        with self._connections.borrow() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM {T} WHERE {where}"
                " ORDER BY updated_at DESC, rowid DESC LIMIT ?",
                (*params, int(limit)),
            ).fetchall()
        return [delivery_of(row) for row in rows]

    def counts(self) -> Dict[str, int]:
        """``{"pending", "in_flight", "delivered", "dead", "held"}``; pending includes those in flight."""
        with self._connections.borrow() as conn:
            rows = conn.execute(f"SELECT state, COUNT(*) FROM {T} GROUP BY state").fetchall()
        return counts_of(rows)

    def attempts(self, id: str) -> List[Attempt]:
        """The attempt log of delivery *id*, oldest first (the last ATTEMPT_LOG_SIZE attempts)."""
        with self._connections.borrow() as conn:
            rows = conn.execute(f"SELECT {ATTEMPT_COLUMNS} FROM {A} WHERE delivery_id = ? ORDER BY n",
                                (id,)).fetchall()
        return [attempt_of(row) for row in rows]

    def last_attempts(self, ids: Sequence[str]) -> Dict[str, Attempt]:
        """The last attempt of each delivery in *ids* that has one."""
        found: Dict[str, Attempt] = {}
        with self._connections.borrow() as conn:
            for chunk in chunks(ids):
                rows = conn.execute(
                    f"SELECT a.delivery_id, {', '.join('a.' + c for c in ATTEMPT_COLUMNS.split(', '))}"
                    f" FROM {A} a JOIN (SELECT delivery_id, MAX(n) AS n FROM {A}"
                    f" WHERE delivery_id IN ({marks(len(chunk))}) GROUP BY delivery_id) last"
                    " ON a.delivery_id = last.delivery_id AND a.n = last.n", chunk).fetchall()
                found.update({row[0]: attempt_of(row[1:]) for row in rows})
        return found

    def endpoints(self) -> List[EndpointHealth]:
        """Every endpoint attempted so far, disabled ones first, with its held deliveries counted."""
        with self._connections.borrow() as conn:
            held = dict(conn.execute(f"SELECT target, COUNT(*) FROM {T} WHERE state = ? GROUP BY target",
                                     (HELD,)).fetchall())
            rows = conn.execute(f"SELECT {ENDPOINT_COLUMNS} FROM {E}"
                                " ORDER BY disabled_at IS NULL, target").fetchall()
        return [health_of(row, held.get(row[0], 0)) for row in rows]

    def check(self) -> Optional[str]:
        """The first problem ``PRAGMA quick_check`` finds in the file (reads all of it); None when sound."""
        with self._connections.borrow() as conn:
            row = conn.execute("PRAGMA quick_check(1)").fetchone()
        return None if row is None or row[0] == "ok" else str(row[0])

    def oldest_pending(self) -> Optional[float]:
        """``created_at`` of the oldest delivery still pending or in flight; None when there is none."""
        with self._connections.borrow() as conn:
            row = conn.execute(f"SELECT MIN(created_at) FROM {T} WHERE state IN (?, ?)",
                               (PENDING, IN_FLIGHT)).fetchone()
        return None if row[0] is None else float(row[0])

    def next_due(self) -> Optional[float]:
        """When something next becomes claimable: the earliest pending due time or lease expiry."""
        with self._connections.borrow() as conn:
            row = conn.execute(
                f"SELECT (SELECT MIN(next_attempt_at) FROM {T} WHERE state = ?),"
                f" (SELECT MIN(lease_until) FROM {T} WHERE state = ?)",
                (PENDING, IN_FLIGHT),
            ).fetchone()
        times = [t for t in row if t is not None]
        return min(times) if times else None


__all__ = ["SQLiteReads"]
