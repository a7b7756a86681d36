"""The outbox deliveries this process has claimed and not recorded yet, and their leases.

A claim is a lease on a delivery: while its request is on the wire here, the
lease is renewed every third of its length, so no other process takes it; on
stop, what is still held is handed back (pending, attempts unchanged).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List

from ..outbox import Delivery, OutboxStore


class Claims:
    """Deliveries claimed from *outbox* by this process whose outcome is not recorded yet."""

    def __init__(self, outbox: OutboxStore, logger: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.outbox = outbox
        self.logger = logger
        #: Seconds between renewals: a third of the lease, so two may fail before it lapses.
        self.renew_every = outbox.lease_seconds / 3
        self._clock = clock
        self._lock = threading.Lock()
        self._held: Dict[str, Delivery] = {}
        self._next_renewal = clock() + self.renew_every

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def ids(self) -> List[str]:
        with self._lock:
            return list(self._held)

    def take(self, delivery: Delivery) -> bool:
        """Hold *delivery*; False when it is held already (its lease lapsed while its request is
        still on the wire here, and this process claimed it again): it must not be sent twice."""
        with self._lock:
            if delivery.id in self._held:
                return False
            self._held[delivery.id] = delivery
            return True

    def drop(self, id: str) -> None:
        """*id*'s outcome is recorded (or given up on): no longer held."""
        with self._lock:
            self._held.pop(id, None)

    def give_back(self, id: str) -> None:
        """Hand one claim back to the outbox at once (it could not be started)."""
        self.drop(id)
        self.outbox.release([id])

    def until_renewal(self) -> float:
        """Seconds until the leases are due for renewal."""
        return max(0.0, self._next_renewal - self._clock())

    def keep_alive(self) -> float:
        """Renew the leases if due; the seconds until the next renewal."""
        now = self._clock()
        if now >= self._next_renewal:
            self.renew()
            self._next_renewal = now + self.renew_every
        return self._next_renewal - now

    def renew(self) -> None:
        """Extend the lease of every delivery held (a failure is logged: the leases may lapse)."""
        ids = self.ids()
        if not ids:
            return
        try:
            self.outbox.renew(ids)
        except self.outbox.errors as exc:
            self.logger.exception("could not renew the leases of {in_flight} deliveries in flight: {error}; "
                                  "trying again at the next renewal", in_flight=len(ids),
                                  error=f"{type(exc).__name__}: {exc}")

    def hand_back(self) -> int:
        """Release every claim held (pending again, attempts unchanged); how many the outbox released."""
        ids = self.ids()
        if not ids:
            return 0
        try:
            return self.outbox.release(ids)
        except self.outbox.errors as exc:  # closed or locked: their leases expire instead
            self.logger.exception("could not hand back {in_flight} deliveries in flight: {error}; they are sent "
                                  "again when their leases expire", in_flight=len(ids),
                                  error=f"{type(exc).__name__}: {exc}")
            return 0


__all__ = ["Claims"]
