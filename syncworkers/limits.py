"""Per-host concurrency limits: one slow partner cannot take every thread of a pool."""

from __future__ import annotations

import threading
from typing import Dict, Optional

#: Attempts in flight to one host at once, by default.
DEFAULT_MAX_IN_FLIGHT_PER_HOST = 16


class HostLimiter:
    """At most ``limit`` holders per host key; ``try_acquire`` never blocks, ``acquire`` waits interruptibly."""

    def __init__(self, limit: Optional[int] = DEFAULT_MAX_IN_FLIGHT_PER_HOST) -> None:
        self.limit = limit
        self._lock = threading.Condition()
        self._held: Dict[str, int] = {}

    def try_acquire(self, key: str) -> bool:
        """Take a slot for *key* if one is free now."""
        if self.limit is None:
            return True
        with self._lock:
            if self._held.get(key, 0) >= self.limit:
                return False
            self._held[key] = self._held.get(key, 0) + 1
            return True

    def acquire(self, key: str, cancel: threading.Event, timeout: Optional[float] = None) -> bool:
        """Wait for a slot for *key*; False when *cancel* is set or *timeout* passes first.

        A release or a set *cancel* wakes the waiters (see :meth:`wake`); the short wait
        step only bounds the cost of a cancel set by someone who cannot wake us.
        """
        if self.limit is None:
            return True
        with self._lock:
            waited = 0.0
            while self._held.get(key, 0) >= self.limit:
                if cancel.is_set() or (timeout is not None and waited >= timeout):
                    return False
                step = 0.5 if timeout is None else min(0.5, timeout - waited)
                self._lock.wait(step)
                waited += step
            self._held[key] = self._held.get(key, 0) + 1
            return True

    def release(self, key: str) -> None:
        if self.limit is None:
            return
        with self._lock:
            count = self._held.get(key, 0) - 1
            if count <= 0:
                self._held.pop(key, None)
            else:
                self._held[key] = count
            self._lock.notify_all()

    def wake(self) -> None:
        """Wake every waiter (a stop signal was set)."""
        with self._lock:
            self._lock.notify_all()

    def in_flight(self, key: str) -> int:
        with self._lock:
            return self._held.get(key, 0)


__all__ = ["DEFAULT_MAX_IN_FLIGHT_PER_HOST", "HostLimiter"]
