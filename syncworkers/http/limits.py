"""Per-host concurrency limits: one slow partner cannot take every thread of a pool."""

from __future__ import annotations

import threading
import weakref
from typing import Dict, Optional

from ..signals import Deadline, StopSignal
from .hosts import origin

#: Seconds a waiter looks at a plain ``threading.Event`` again (a StopSignal wakes it at once).
_EVENT_STEP = 0.5


def default_per_host(max_workers: int) -> int:
    """The default of ``max_in_flight_per_host``: three quarters of the pool, at least two.

    So a slow partner leaves a quarter of the threads to every other one, while a
    sender with one partner (the common case: every endpoint under one
    ``base_url``) keeps most of its parallelism. (Pools of one or two threads are
    not limited: there is nothing to leave.)
    """
    return min(max_workers, max(2, (3 * max_workers) // 4))


def host_key(url: str) -> str:
    """``host:port`` of *url* (:attr:`~syncworkers.http.hosts.Origin.authority`): what a limit counts per."""
    return origin(url).authority


class HostLimiter:
    """At most ``limit`` holders per host key (None: no limit).

    ``try_acquire`` never blocks; ``acquire`` waits until a slot frees or its
    cancel signal is set: a :class:`~syncworkers.signals.StopSignal` wakes the
    waiters the moment it is set (plain Events are looked at every half second).
    """

    def __init__(self, limit: Optional[int]) -> None:
        self.limit = limit
        self._lock = threading.Condition()
        self._held: Dict[str, int] = {}
        self._watched: "weakref.WeakSet[StopSignal]" = weakref.WeakSet()

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
        """Wait for a slot for *key*; False when *cancel* is set or *timeout* passes first."""
        if self.limit is None:
            return True
        stepped = not isinstance(cancel, StopSignal)
        if not stepped:
            self._watch(cancel)  # type: ignore[arg-type]
        deadline = Deadline(timeout)
        with self._lock:
            while self._held.get(key, 0) >= self.limit:
                if cancel.is_set() or deadline.expired:
                    return False
                self._lock.wait(deadline.cap(_EVENT_STEP) if stepped else deadline.remaining())
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

    def _watch(self, signal: StopSignal) -> None:
        with self._lock:
            if signal in self._watched:
                return
            self._watched.add(signal)
        signal.on_set(self.wake)


__all__ = ["HostLimiter", "default_per_host", "host_key"]
