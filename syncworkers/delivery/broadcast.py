"""Broadcast: one webhook body to many endpoints at once, each on a pool thread (or, over libcurl, none)."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Dict, Mapping, Optional

from .request import DeliveryResult, safe_endpoint
from ..signals import StopSignal

#: The error of a broadcast delivery that was never sent (fail_fast or stop() came first).
CANCELLED = "cancelled before sending"
#: The error of a broadcast delivery still on the wire when fail_fast returned.
NOT_WAITED_FOR = "still in flight when the broadcast was cut short"

#: ``deliver(endpoint, url, cancel) -> DeliveryResult``: one delivery, retries included.
Deliver = Callable[[str, str, StopSignal], DeliveryResult]
#: ``start(endpoint, url, cancel) -> Future[DeliveryResult]``: the same without holding a thread.
Start = Callable[[str, str, StopSignal], "Future[DeliveryResult]"]


class Broadcaster:
    """Submits one delivery per endpoint to a pool and gathers every result.

    The broadcast's cancel signal is a child of the run's stop signal: stopping the
    worker reaches every delivery, and ``fail_fast`` cancels this broadcast alone —
    the deliveries not started yet are never sent, and the retry waits of those in
    flight end at once.
    """

    def __init__(self, submit: Callable[..., "Future[DeliveryResult]"], logger: Any, stats: Any) -> None:
        self._submit = submit
        self.logger = logger
        self._stats = stats

    def run(self, targets: Mapping[str, str], deliver: Deliver, stop: StopSignal,
            fail_fast: bool = False, start: Optional[Start] = None,
            in_flight: Optional[int] = None) -> Dict[str, DeliveryResult]:
        """Deliver to every ``endpoint -> url`` of *targets*; return ``{endpoint: DeliveryResult}``.

        With *fail_fast* the call returns as soon as one delivery fails: every
        endpoint is in the result, the unfinished ones as not delivered (a request
        already on the wire may still complete in the background). *start*, when
        given, starts a delivery without a pool thread (libcurl's multi interface):
        *in_flight* deliveries are then on the wire at once (the others queued, as on
        a pool of that many threads), with no thread each.
        """
        cancel = stop.child()

        def one(endpoint: str, url: str) -> DeliveryResult:
            if cancel.is_set():  # fail_fast or stop() came first: send nothing
                return DeliveryResult.failed(endpoint, url, CANCELLED)
            result = deliver(endpoint, url, cancel)
            if fail_fast and not result.ok:
                cancel.set()  # before this pool thread takes the next queued delivery
            return result

        if start is not None:
            futures = self._started(targets, start, cancel, fail_fast, in_flight or len(targets))
        else:
            futures = {endpoint: self._submit(one, endpoint, url) for endpoint, url in targets.items()}
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
            self.logger.warning("broadcast cut short", fail_fast=fail_fast,
                                failed=[safe_endpoint(e) for e, r in results.items() if not r.ok],
                                cancelled=cancelled, not_waited_for=unfinished)
        return results


    @staticmethod
    def _started(targets: Mapping[str, str], start: Start, cancel: StopSignal, fail_fast: bool,
                 in_flight: int) -> Dict[str, "Future[DeliveryResult]"]:
        """One future per endpoint; at most *in_flight* deliveries started at a time, the next one when
        one ends (on the thread that ended it), none once *cancel* is set."""
        queue = deque(targets.items())
        futures: Dict[str, "Future[DeliveryResult]"] = {endpoint: Future() for endpoint in targets}
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
                    inner = start(endpoint, url, cancel)
                except Exception as exc:  # a bug: reported as this delivery's error, never raised
                    outer.set_exception(exc)
                    continue
                inner.add_done_callback(lambda done, outer=outer: ended(done, outer))  # type: ignore[misc]
                return

        def ended(done: "Future[DeliveryResult]", outer: "Future[DeliveryResult]") -> None:
            exc = done.exception()
            if exc is not None:
                outer.set_exception(exc)
            else:
                outer.set_result(done.result())
                if fail_fast and not done.result().ok:
                    cancel.set()  # the others' retry waits and waits for a host slot end at once
            next_one()

        for _ in range(min(in_flight, len(queue))):
            next_one()
        return futures


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
