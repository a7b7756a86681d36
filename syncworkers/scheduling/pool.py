"""The Runner's pool: up to ``max_workers`` threads that run ticks, the most recently idle one first.

A tick is handed straight to an idle thread (no Future, no work item, no
condition variable per tick): each thread waits on a lock of its own, and the
one that went idle last is woken first. Its caches are warm, and a light load
(a thousand polls a second that take a fraction of a millisecond each) stays on
one or two threads instead of visiting every thread in turn, so what is kept
per thread (metrics shards, thread-locals) stays small. Threads start as ticks
need them, never more than ``max_workers``; a tick that finds every thread busy
waits in a first-in, first-out backlog.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import weakref
from typing import Any, Callable, Deque, List, Optional, Tuple

from ..signals import Deadline

logger = logging.getLogger("syncworkers.scheduling.runner")

_Call = Tuple[Callable[..., Any], Tuple[Any, ...]]


class _Thread:
    """One pool thread, its wake-up lock (held while it sleeps) and the call it was handed."""

    __slots__ = ("thread", "bell", "call")

    def __init__(self) -> None:
        self.thread: Optional[threading.Thread] = None
        self.bell = threading.Lock()
        self.bell.acquire()  # released by whoever hands this thread a call (or its end)
        self.call: Optional[_Call] = None


class TickPool:
    """Up to *max_workers* threads named ``<name>_<n>`` that run what :meth:`run` hands them.

    :meth:`shutdown` refuses new calls and, with *cancel*, drops the ones still
    waiting in the backlog; threads end once idle. Pools alive at interpreter
    exit are shut down and joined then, so a call in progress finishes (as a
    ``ThreadPoolExecutor``'s would).
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self.max_workers = max_workers
        self.name = name
        self._lock = threading.Lock()
        self._idle: List[_Thread] = []  # the most recently idle last
        self._backlog: Deque[_Call] = collections.deque()
        self._threads: List[_Thread] = []
        self._closed = False

    def run(self, func: Callable[..., Any], *args: Any) -> None:
        """Call ``func(*args)`` on a pool thread; RuntimeError once the pool is shut down."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"pool {self.name!r} is shut down")
            if self._idle:
                waiting = self._idle.pop()
                waiting.call = (func, args)
                waiting.bell.release()
                return
            if len(self._threads) >= self.max_workers:
                self._backlog.append((func, args))
                return
            started = _Thread()
            started.call = (func, args)
            self._threads.append(started)
            started.thread = threading.Thread(target=self._work, args=(started,),
                                              name=f"{self.name}_{len(self._threads) - 1}", daemon=True)
        _live.add(self)
        _exit_hook()
        started.thread.start()

    def shutdown(self, cancel: bool = False) -> int:
        """Take no more calls; with *cancel*, drop those not started. Returns how many were dropped."""
        with self._lock:
            self._closed = True
            dropped = len(self._backlog) if cancel else 0
            if cancel:
                self._backlog.clear()
            idle, self._idle = self._idle, []
        for waiting in idle:
            waiting.call = None  # wakes it to end
            waiting.bell.release()
        return dropped

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait for the threads to end (after :meth:`shutdown`), except the calling one."""
        deadline = Deadline(timeout)
        current = threading.current_thread()
        for thread in self.threads():
            if thread is not current:
                thread.join(deadline.remaining())

    def threads(self) -> List[threading.Thread]:
        """The pool's threads started so far (alive or not)."""
        with self._lock:
            return [t.thread for t in self._threads if t.thread is not None]

    @property
    def alive(self) -> int:
        """How many pool threads are alive."""
        return sum(thread.is_alive() for thread in self.threads())

    def _work(self, me: _Thread) -> None:
        call = me.call
        while call is not None:
            func, args = call
            try:
                func(*args)
            except BaseException:  # the caller's function handles its own errors; this is the last net
                logger.exception("pool %r: a call raised", self.name)
            call = self._next(me)

    def _next(self, me: _Thread) -> Optional[_Call]:
        """The next call for *me*: from the backlog, else handed over after a sleep; None to end."""
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            if self._closed:
                return None
            me.call = None
            self._idle.append(me)
        me.bell.acquire()
        return me.call


_live: "weakref.WeakSet[TickPool]" = weakref.WeakSet()
_hooked = False
_hook_lock = threading.Lock()


def _exit_hook() -> None:
    """Register, once and only when a pool first starts a thread, the interpreter-exit join."""
    global _hooked
    if _hooked:
        return
    with _hook_lock:
        if not _hooked:
            atexit.register(_at_exit)
            _hooked = True


def _at_exit() -> None:
    for pool in list(_live):
        pool.shutdown()
    for pool in list(_live):
        pool.join()


__all__ = ["TickPool"]
