"""Total deadlines for the requests transport: one shared watchdog thread.

requests applies its read timeout to each socket read, so a receiver that
trickles a byte a second, or streams an endless body, holds the thread for
ever. Each attempt is armed with its deadline; when it passes, the watchdog
shuts down the attempt's socket (the blocked read returns at once) and marks
the attempt expired, so the transport reports a timeout whatever error, or
truncated body, the shutdown produced.

The pools tell the watchdog which connection the current thread's attempt
holds (:func:`bind_connection`, :func:`release_connection`); a connection back
in the pool is never touched. The thread starts on demand and ends after
``linger`` seconds with nothing armed, so an idle process has no such thread.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

#: Seconds between tries to interrupt an attempt whose socket is not connected yet.
_RETRY_INTERRUPT = 0.05
_local = threading.local()


class Attempt:
    """One armed attempt: its due time, the connection it holds, and whether it expired."""

    __slots__ = ("due", "conn", "expired", "done")

    def __init__(self, due: float) -> None:
        self.due = due
        self.conn: Any = None
        self.expired = False
        self.done = False

    def overdue(self, clock: Callable[[], float] = time.monotonic) -> bool:
        """Expired, or past due (the watchdog may not have woken yet)."""
        return self.expired or clock() >= self.due


class Watchdog:
    """Shuts down the sockets of attempts that overran their deadlines."""

    def __init__(self, *, linger: float = 1.0, name: str = "syncworkers-deadline",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.linger = linger
        self.name = name
        self.clock = clock
        self._lock = threading.Lock()
        self._heap: List[Tuple[float, int, Attempt]] = []
        self._seq = itertools.count()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._done_in_heap = 0
        self._live = 0
        self._stopping = False

    def arm(self, seconds: float) -> Attempt:
        """Arm an attempt of the current thread, due in *seconds*."""
        attempt = Attempt(self.clock() + seconds)
        with self._lock:
            heapq.heappush(self._heap, (attempt.due, next(self._seq), attempt))
            self._live += 1
            self._stopping = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is attempt:
                self._wake.set()  # due before whatever the thread waits for
        _local.attempt = attempt
        return attempt

    def disarm(self, attempt: Attempt) -> None:
        """The attempt is over: its connection may be reused, it is never interrupted now."""
        with self._lock:
            if attempt.done:
                return
            attempt.done = True
            attempt.conn = None
            self._live -= 1
            self._done_in_heap += 1
            if not self._live:
                # Nothing armed: forget the finished entries, let the thread start its linger.
                self._heap.clear()
                self._done_in_heap = 0
                self._wake.set()
            elif self._done_in_heap > 256 and self._done_in_heap > len(self._heap) // 2:
                # Long deadlines leave many finished entries behind: drop them.
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._done_in_heap = 0
            if getattr(_local, "attempt", None) is attempt:
                _local.attempt = None

    def expire_all(self) -> int:
        """Interrupt every armed attempt now (a stop that cannot wait); returns how many."""
        with self._lock:
            live = [entry[2] for entry in self._heap if not entry[2].done]
            for attempt in live:
                attempt.due = min(attempt.due, self.clock())
            self._heap = [(a.due, next(self._seq), a) for a in live]
            heapq.heapify(self._heap)
            self._done_in_heap = 0
            self._wake.set()
        return len(live)

    def stop_if_idle(self, timeout: float = 1.0) -> bool:
        """End the thread now if nothing is armed (a run that stopped); True if no thread is left.

        The next :meth:`arm` starts a new one.
        """
        with self._lock:
            thread = self._thread
            if thread is None:
                return True
            if self._live:
                return False
            self._stopping = True
            self._wake.set()
        thread.join(timeout)
        return not thread.is_alive()

    def bind(self, attempt: Attempt, conn: Any) -> None:
        with self._lock:
            if not attempt.done:
                attempt.conn = conn

    def release(self, attempt: Attempt, conn: Any) -> None:
        with self._lock:
            if attempt.conn is conn:
                attempt.conn = None

    def _run(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                heap = self._heap
                while heap and (heap[0][2].done or heap[0][0] <= now):
                    _, _, attempt = heapq.heappop(heap)
                    if attempt.done:
                        self._done_in_heap = max(0, self._done_in_heap - 1)
                        continue
                    attempt.expired = True
                    if not _interrupt(attempt.conn):
                        # Not connected yet (or between redirects): try again shortly.
                        heapq.heappush(heap, (now + _RETRY_INTERRUPT, next(self._seq), attempt))
                if self._stopping and not self._live:
                    self._heap.clear()
                    self._thread = None
                    return
                wait = heap[0][0] - now if heap else self.linger
                self._wake.clear()
            if not self._wake.wait(wait):
                with self._lock:
                    if not self._heap:
                        self._thread = None
                        return


def _interrupt(conn: Any) -> bool:
    """Shut the connection's socket down (both ways); False if it has none yet."""
    sock = getattr(conn, "sock", None)
    if sock is None:
        return False
    try:
        # The plain socket's shutdown, also under TLS: SSLSocket.shutdown would drop its SSL
        # object while the attempt's thread is inside a read on it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass  # already closed
    return True


#: The process's watchdog: one thread for every client, started only while attempts are armed.
WATCHDOG = Watchdog()


def current_attempt() -> Optional[Attempt]:
    """The attempt the current thread is making, if armed."""
    return getattr(_local, "attempt", None)


def bind_connection(conn: Any) -> None:
    """A pool handed *conn* to the current thread: its attempt's deadline covers it."""
    attempt = getattr(_local, "attempt", None)
    if attempt is not None:
        WATCHDOG.bind(attempt, conn)


def release_connection(conn: Any) -> None:
    """*conn* goes back to its pool: the watchdog must not touch it any more."""
    attempt = getattr(_local, "attempt", None)
    if attempt is not None:
        WATCHDOG.release(attempt, conn)


__all__ = ["Attempt", "Watchdog", "WATCHDOG", "bind_connection", "current_attempt", "release_connection"]
