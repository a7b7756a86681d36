"""The Runner's pool: up to ``max_workers`` threads that run ticks, the most recently idle one first.

Calls wait in one first-in, first-out backlog; an idle thread woken for them runs
them one after another, and goes back to sleep on a lock of its own when the
backlog is empty (no Future, no work item, no condition variable per call). The
thread woken is the one that went idle last: its caches are warm, and a light
load (a thousand polls a second that take a fraction of a millisecond each) stays
on one thread, so ticks do not pass the GIL to and fro and what is kept per thread
(metrics shards, thread-locals) stays small.

A call stuck behind a slow one is not left waiting: :meth:`TickPool.nudge`,
which the timer calls each time it wakes, wakes another thread (or starts one,
up to ``max_workers``) for calls that waited since the previous nudge.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import weakref
from typing import Any, Callable, Deque, Iterable, List, Optional, Tuple

from ..signals import Deadline

logger = logging.getLogger("syncworkers.scheduling.runner")

#: A call waiting in the backlog: the function, its arguments, and the nudge count when it was queued.
_Call = Tuple[Callable[..., Any], Tuple[Any, ...], int]


class _Thread:
    """One pool thread and the lock it sleeps on when idle (released to wake it)."""

    __slots__ = ("thread", "bell")

    def __init__(self) -> None:
        self.thread: Optional[threading.Thread] = None
        self.bell = threading.Lock()
        self.bell.acquire()


class TickPool:
    """Up to *max_workers* threads named ``<name>_<n>`` that run what :meth:`run` and :meth:`run_each` queue.

    :meth:`shutdown` refuses new calls and, with *cancel*, drops the ones still
    waiting; threads end once idle. Pools alive at interpreter exit are shut down
    and joined then, so a call in progress finishes (as a ``ThreadPoolExecutor``'s would).
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self.max_workers = max_workers
        self.name = name
        self._lock = threading.Lock()
        self._idle: List[_Thread] = []  # the most recently idle last
        self._backlog: Deque[_Call] = collections.deque()
        self._threads: List[_Thread] = []
        self._nudges = 0
        self._closed = False

    def run(self, func: Callable[..., Any], *args: Any) -> None:
        """Call ``func(*args)`` on a pool thread; RuntimeError once the pool is shut down."""
        self._queue(((func, args, self._nudges),))

    def run_each(self, func: Callable[[Any], Any], args: Iterable[Any]) -> None:
        """Call ``func(arg)`` for each of *args* in order, one after another on one thread unless one
        of them takes longer than the timer's next nudge; RuntimeError once the pool is shut down."""
        self._queue([(func, (arg,), self._nudges) for arg in args])

    def nudge(self) -> bool:
        """Wake a thread for the calls that waited since the last nudge; True while one may be held up.

        The timer calls it each time it wakes, and again within its window while
        this returns True: while a call waits behind another (one call alone is
        taken by the thread woken for it).
        """
        with self._lock:
            backlog, self._nudges = self._backlog, self._nudges + 1
            if not backlog:
                return False
            if backlog[0][2] >= self._nudges - 1:  # queued since the last nudge: its thread is on its way
                return len(backlog) > 1
            started = self._wake()  # queued before it: the thread that took the batch is held up
        if started is not None:
            self._start(started)
        return True

    def shutdown(self, cancel: bool = False) -> int:
        """Take no more calls; with *cancel*, drop those not started. Returns how many were dropped."""
        with self._lock:
            self._closed = True
            dropped = len(self._backlog) if cancel else 0
            if cancel:
                self._backlog.clear()
            idle, self._idle = self._idle, []
        for waiting in idle:
            waiting.bell.release()  # it finds the pool closed and ends
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

    def _queue(self, calls: Iterable[_Call]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"pool {self.name!r} is shut down")
            self._backlog.extend(calls)
            started = self._wake()
        if started is not None:
            self._start(started)

    def _wake(self) -> Optional[_Thread]:
        """Under the lock: wake the most recently idle thread, else make a new one (returned, to start)."""
        if self._idle:
            self._idle.pop().bell.release()
            return None
        if len(self._threads) >= self.max_workers:
            return None  # every thread is busy: the first to finish takes the next call
        made = _Thread()
        self._threads.append(made)
        made.thread = threading.Thread(target=self._work, args=(made,),
                                       name=f"{self.name}_{len(self._threads) - 1}", daemon=True)
        return made

    def _start(self, made: _Thread) -> None:
        _live.add(self)
        _exit_hook()
        assert made.thread is not None
        made.thread.start()

    def _work(self, me: _Thread) -> None:
        lock, backlog = self._lock, self._backlog
        while True:
            with lock:
                if backlog:
                    func, args, _ = backlog.popleft()
                elif self._closed:
                    return
                else:
                    self._idle.append(me)
                    func = None
            if func is None:
                me.bell.acquire()  # woken: the backlog has calls again, or the pool closed
                continue
            try:
                func(*args)
            except BaseException:  # the caller's function handles its own errors; this is the last net
                logger.exception("pool %r: a call raised", self.name)


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
