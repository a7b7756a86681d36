"""A sender's delivery pools: threads started on first use, each call tracked until it ends.

A webhook sender has two (broadcasts, outbox deliveries), so that a slow partner
filling one never queues the other's requests behind it. :func:`stop_pools` ends
both with one deadline.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from ..signals import Deadline

#: Names of a sender's two pools (and of their threads: syncworkers-<pool>-<worker name>-N).
BROADCAST_POOL: str = "webhook"
OUTBOX_POOL: str = "outbox"


class DeliveryPool:
    """Up to *max_workers* threads named ``syncworkers-<kind>-<owner>-N``, started on first use.

    After :func:`stop_pools` a later :meth:`submit` starts new threads (a worker
    may run again). A call that raised is logged, never lost silently.
    """

    def __init__(self, kind: str, max_workers: int, owner: str, logger: Any) -> None:
        self.kind = kind
        self.max_workers = max_workers
        self.owner = owner  #: the worker's name, in the threads' names
        self.logger = logger
        self._lock = threading.Lock()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._futures: Set["Future[Any]"] = set()

    @property
    def started(self) -> bool:
        """Whether its threads are started (until the next stop)."""
        with self._lock:
            return self._executor is not None

    @property
    def in_flight(self) -> int:
        """Calls submitted and not ended."""
        with self._lock:
            return len(self._futures)

    def health(self) -> Dict[str, Any]:
        """``max_workers``, ``started`` and ``in_flight``."""
        return {"max_workers": self.max_workers, "started": self.started, "in_flight": self.in_flight}

    def free_slots(self) -> int:
        """How many more calls would start at once."""
        return self.max_workers - self.in_flight

    def submit(self, func: Callable[..., Any], *args: Any) -> "Future[Any]":
        """Run ``func(*args)`` on the pool; RuntimeError once the pool is being shut down."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_workers,
                                                    thread_name_prefix=f"syncworkers-{self.kind}-{self.owner}")
            future = self._executor.submit(func, *args)
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def track(self, future: "Future[Any]") -> None:
        """Count a call that runs elsewhere (libcurl's I/O thread) as this pool's own: stop waits for it."""
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: "Future[Any]") -> None:
        with self._lock:
            self._futures.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self.logger.error("webhook delivery raised", exc_info=future.exception())

    def shutdown(self) -> Tuple[Optional[ThreadPoolExecutor], List["Future[Any]"]]:
        """Take no more calls on these threads (a later submit() starts new ones): the executor shut
        down (None if none was started) and the calls still running, for the caller to wait on."""
        with self._lock:
            executor, self._executor = self._executor, None
            futures = list(self._futures)
        if executor is not None:
            executor.shutdown(wait=False)
        return executor, futures


def stop_pools(pools: Sequence[DeliveryPool], deadline: Deadline) -> Set["Future[Any]"]:
    """Shut *pools* down and wait until *deadline* for their calls; return those still running.

    A second call (after a first that timed out) waits no more: it says what is
    still running. Idle threads are joined once nothing runs.
    """
    shut = [pool.shutdown() for pool in pools]
    executors = [executor for executor, _ in shut if executor is not None]
    futures = [future for _, running in shut for future in running]
    # (Calls tracked from libcurl's I/O thread start no executor: a stop with a timeout waits for them too.)
    if executors or (futures and deadline.at is not None):
        _, pending = wait(futures, deadline.remaining())
    else:
        pending = {future for future in futures if not future.done()}
    if not pending:
        for executor in executors:
            executor.shutdown(wait=True)  # only joins idle threads now
    return pending


__all__ = ["BROADCAST_POOL", "DeliveryPool", "OUTBOX_POOL", "stop_pools"]
