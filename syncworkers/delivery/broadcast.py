"""Broadcast: one webhook body to many endpoints at once, each on a pool thread of its own (or, over
libcurl, on none: the client's I/O thread drives them all)."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from ..observability import tracing
from ..observability.metrics import Metrics
from ..signals import StopSignal
from .checks import Webhook
from .direct import STOPPED, DirectSender
from .pool import DeliveryPool
from .request import DeliveryResult, check_delivery_id, safe_endpoint

#: The error of a broadcast delivery that was never sent (fail_fast or stop() came first).
CANCELLED = "cancelled before sending"
#: The error of a broadcast delivery still on the wire when fail_fast returned.
NOT_WAITED_FOR = "still in flight when the broadcast was cut short"


class Broadcaster:
    """Sends one body to every endpoint at once: one delivery of *sender* per endpoint on *pool*.

    The broadcast's cancel signal is a child of the run's stop signal (*run*):
    stopping the worker reaches every delivery, and ``fail_fast`` cancels this
    broadcast alone — the deliveries not started yet are never sent, and the retry
    waits of those in flight end at once. When the sender's client can submit
    (libcurl's multi interface), no delivery takes a pool thread: up to
    ``max(pool size, the client's per-host limit)`` are on the wire at once, the
    others queued as on a pool of that many threads.
    """

    def __init__(self, sender: DirectSender, pool: DeliveryPool, run: Callable[[], StopSignal], *,
                 logger: Any, stats: Metrics) -> None:
        self.sender = sender
        self.pool = pool
        self.logger = logger
        self._run = run
        self._stats = stats

    def broadcast(self, endpoints: Iterable[str], data: Any, headers: Optional[Mapping[str, str]] = None,
                  fail_fast: bool = False) -> Dict[str, DeliveryResult]:
        """Send *data* to every endpoint at once; ``{endpoint: DeliveryResult}``, every endpoint included.

        Bad input raises before anything is sent (see :class:`~syncworkers.delivery.checks.InputChecks`).
        With *fail_fast* the call returns as soon as one delivery fails: the
        unfinished ones are not ok (a request already on the wire may still
        complete in the background).
        """
        targets, body, extra = self.sender.checks.many(endpoints, data, headers)
        extra = tracing.with_current(extra)  # the pool's threads do not see this thread's current span
        run = self._run()
        if run.is_set():
            return {endpoint: self.sender.refuse(endpoint, url, STOPPED) for endpoint, url in targets.items()}
        cancel = run.child()

        def one(endpoint: str, url: str) -> DeliveryResult:
            if cancel.is_set():  # fail_fast or stop() came first: send nothing
                return DeliveryResult.failed(endpoint, url, CANCELLED)
            result = self.sender.send(Webhook(endpoint, url, body, extra, check_delivery_id(None)), cancel)
            if fail_fast and not result.ok:
                cancel.set()  # before this pool thread takes the next queued delivery
            return result

        if self.sender.client.can_submit:
            limit = self.sender.client.limiter.limit or 0
            futures = self._started(targets, body, extra, cancel, fail_fast, max(self.pool.max_workers, limit))
        else:
            futures = {endpoint: self.pool.submit(one, endpoint, url) for endpoint, url in targets.items()}
        return self._gather(futures, targets, cancel, fail_fast)

    def _started(self, targets: Mapping[str, str], body: bytes, extra: Dict[str, str], cancel: StopSignal,
                 fail_fast: bool, in_flight: int) -> Dict[str, "Future[DeliveryResult]"]:
        """One future per endpoint; at most *in_flight* deliveries started at a time, the next one when
        one ends (on the thread that ended it), none once *cancel* is set. Each is tracked by the pool,
        so that stop() waits for it as for its own."""
        queue = deque(targets.items())
        futures: Dict[str, "Future[DeliveryResult]"] = {endpoint: Future() for endpoint in targets}
        for future in futures.values():
            self.pool.track(future)
        lock = threading.Lock()

        def next_one() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    endpoint, url = queue.popleft()
                outer = futures[endpoint]
                if not outer.set_running_or_notify_cancel():
                    continue  # cancelled by fail_fast: never sent
                if cancel.is_set():
                    outer.set_result(DeliveryResult.failed(endpoint, url, CANCELLED))
                    continue
                try:
                    inner = self.sender.start(Webhook(endpoint, url, body, extra, check_delivery_id(None)), cancel)
                except Exception as exc:  # a bug: reported as this delivery's error, never raised
                    outer.set_exception(exc)
                    continue
                if inner.done():  # ended at once (a test's capture took it): the next one from this loop, as a
                    settle(inner, outer)  # callback each would nest a frame deeper per delivery
                    continue
                inner.add_done_callback(lambda done, outer=outer: ended(done, outer))  # type: ignore[misc]
                return

        def settle(done: "Future[DeliveryResult]", outer: "Future[DeliveryResult]") -> None:
            exc = done.exception()
            if exc is not None:
                outer.set_exception(exc)
            else:
                outer.set_result(done.result())
                if fail_fast and not done.result().ok:
                    cancel.set()  # the others' retry waits and waits for a host slot end at once

        def ended(done: "Future[DeliveryResult]", outer: "Future[DeliveryResult]") -> None:
            settle(done, outer)
            next_one()

        for _ in range(min(in_flight, len(queue))):
            next_one()
        return futures

    def _gather(self, futures: Mapping[str, "Future[DeliveryResult]"], targets: Mapping[str, str],
                cancel: StopSignal, fail_fast: bool) -> Dict[str, DeliveryResult]:
        pending = set(futures.values())
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            if fail_fast and any(f.exception() is not None or not f.result().ok for f in finished):
                cancel.set()
                for future in pending:
                    future.cancel()
                break
        results = {endpoint: _result(future, endpoint, targets[endpoint]) for endpoint, future in futures.items()}
        self._stats.incr("broadcasts")
        unfinished = [safe_endpoint(e) for e, f in futures.items() if not f.done()]
        cancelled = [safe_endpoint(e) for e, r in results.items() if r.error == CANCELLED]
        if cancel.is_set() and (unfinished or cancelled):
            self._stats.incr("broadcasts_cancelled")
            failed = [safe_endpoint(e) for e, r in results.items() if not r.ok and r.error not in (CANCELLED, NOT_WAITED_FOR)]
            self.logger.warning("broadcast to {endpoints} endpoints cut short by {cause}: {failed_count} failed "
                                "{failed}, {cancelled_count} cancelled before sending {cancelled}, {in_flight} "
                                "still in flight and not waited for {not_waited_for}", endpoints=len(futures),
                                cause="fail_fast" if fail_fast else "stop()",
                                failed_count=len(failed), failed=failed, cancelled_count=len(cancelled),
                                cancelled=cancelled, in_flight=len(unfinished), not_waited_for=unfinished)
        return results


def _result(future: "Future[DeliveryResult]", endpoint: str, url: str) -> DeliveryResult:
    if future.cancelled():
        return DeliveryResult.failed(endpoint, url, CANCELLED)
    if not future.done():  # fail_fast returned first; the request may still end in the background
        return DeliveryResult.failed(endpoint, url, NOT_WAITED_FOR)
    exc = future.exception()
    if exc is not None:  # a bug in a delivery: reported, never raised out of a broadcast
        return DeliveryResult.failed(endpoint, url, f"unexpected error: {type(exc).__name__}")
    return future.result()


__all__ = ["Broadcaster", "CANCELLED", "NOT_WAITED_FOR"]
