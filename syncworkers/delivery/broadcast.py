"""Broadcast: one webhook body to many endpoints at once, each on a pool thread."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Dict, Mapping

from .request import DeliveryResult, safe_endpoint
from ..signals import StopSignal

#: The error of a broadcast delivery that was never sent (fail_fast or stop() came first).
CANCELLED = "cancelled before sending"
#: The error of a broadcast delivery still on the wire when fail_fast returned.
NOT_WAITED_FOR = "still in flight when the broadcast was cut short"

#: ``deliver(endpoint, url, cancel) -> DeliveryResult``: one delivery, retries included.
Deliver = Callable[[str, str, StopSignal], DeliveryResult]


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
            fail_fast: bool = False) -> Dict[str, DeliveryResult]:
        """Deliver to every ``endpoint -> url`` of *targets*; return ``{endpoint: DeliveryResult}``.

        With *fail_fast* the call returns as soon as one delivery fails: every
        endpoint is in the result, the unfinished ones as not delivered (a request
        already on the wire may still complete in the background).
        """
        cancel = stop.child()

        def one(endpoint: str, url: str) -> DeliveryResult:
            if cancel.is_set():  # fail_fast or stop() came first: send nothing
                return DeliveryResult.failed(endpoint, url, CANCELLED)
            result = deliver(endpoint, url, cancel)
            if fail_fast and not result.ok:
                cancel.set()  # before this pool thread takes the next queued delivery
            return result

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
