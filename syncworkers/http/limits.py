"""Per-host concurrency limits: one slow partner cannot take every thread of a pool."""

from __future__ import annotations

import threading
import weakref
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple

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
    A freed slot wakes one waiter of its own host, not every waiter.
    """

    def __init__(self, limit: Optional[int]) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held: Dict[str, int] = {}
        self._waiting: Dict[str, threading.Condition] = {}  # host -> its waiters (on the one lock)
        # host -> callbacks waiting for a slot without a thread (when_free), first come first served
        self._queued: Dict[str, Deque[Tuple[StopSignal, Callable[[bool], None]]]] = {}
        self._cancelled: List[Callable[[bool], None]] = []
        self._watched: "weakref.WeakSet[StopSignal]" = weakref.WeakSet()

    def try_acquire(self, key: str) -> bool:
        """Take a slot for *key* if one is free now."""
        if self.limit is None:
            return True
        with self._lock:
            held = self._held.get(key, 0)
            if held >= self.limit:
                return False
            self._held[key] = held + 1
            return True

    def acquire(self, key: str, cancel: threading.Event, timeout: Optional[float] = None) -> bool:
        """Wait for a slot for *key*; False when *cancel* is set or *timeout* passes first."""
        limit = self.limit
        if limit is None:
            return True
        with self._lock:
            held = self._held.get(key, 0)
            if held < limit:  # the common case: a slot is free
                self._held[key] = held + 1
                return True
        stepped = not isinstance(cancel, StopSignal)
        if not stepped:
            self._watch(cancel)  # type: ignore[arg-type]
        deadline = Deadline(timeout)
        with self._lock:
            waiters = self._waiting.get(key)
            if waiters is None:
                waiters = self._waiting[key] = threading.Condition(self._lock)
            while self._held.get(key, 0) >= limit:
                if cancel.is_set() or deadline.expired:
                    if self._held.get(key, 0) < limit:
                        waiters.notify()  # a wake-up this waiter will not use: pass it on
                    return False
                waiters.wait(deadline.cap(_EVENT_STEP) if stepped else deadline.remaining())
            self._held[key] = self._held.get(key, 0) + 1
            return True

    def when_free(self, key: str, cancel: StopSignal, then: Callable[[bool], None]) -> None:
        """Call ``then(True)`` holding a slot for *key* as soon as one is free (at once if one is), or
        ``then(False)`` once *cancel* is set first: a wait that holds no thread. *then* must not block;
        it runs on the thread that freed the slot (or set *cancel*)."""
        if self.limit is None:
            then(True)
            return
        with self._lock:
            held = self._held.get(key, 0)
            if held < self.limit:
                self._held[key] = held + 1
                queued = False
            else:
                self._queued.setdefault(key, deque()).append((cancel, then))
                queued = True
        if not queued:
            then(True)
        else:
            self._watch(cancel)

    def release(self, key: str) -> None:
        if self.limit is None:
            return
        handed: Optional[Callable[[bool], None]] = None
        with self._lock:
            queue = self._queued.get(key)
            while queue:
                cancel, then = queue.popleft()
                if not cancel.is_set():
                    handed = then  # the slot goes to the first waiter that holds no thread
                    break
                self._cancelled.append(then)
            if handed is None:
                count = self._held.get(key, 0) - 1
                if count <= 0:
                    self._held.pop(key, None)
                else:
                    self._held[key] = count
                waiters = self._waiting.get(key)
                if waiters is not None:
                    waiters.notify()
            cancelled, self._cancelled = self._cancelled, []
        for then in cancelled:
            then(False)
        if handed is not None:
            handed(True)

    def wake(self) -> None:
        """Wake every waiter (a stop signal was set); callbacks of a set signal get False."""
        with self._lock:
            for waiters in self._waiting.values():
                waiters.notify_all()
            cancelled: List[Callable[[bool], None]] = []
            for queue in self._queued.values():
                kept = [(c, t) for c, t in queue if not c.is_set()]
                cancelled += [t for c, t in queue if c.is_set()]
                queue.clear()
                queue.extend(kept)
        for then in cancelled:
            then(False)

    def in_flight(self, key: str) -> int:
        with self._lock:
            return self._held.get(key, 0)

    def room(self) -> Optional[int]:
        """How many more holders the hosts held now would take, in all; None without a limit or while
        nothing is held. (A host not held has the whole limit: 0 only says every host held is full.)"""
        with self._lock:
            if self.limit is None or not self._held:
                return None
            return sum(self.limit - held for held in self._held.values())

    def _watch(self, signal: StopSignal) -> None:
        with self._lock:
            if signal in self._watched:
                return
            self._watched.add(signal)
        signal.on_set(self.wake)


__all__ = ["HostLimiter", "default_per_host", "host_key"]
