"""What workers report as they run, for observers such as the Prometheus exporter.

Workers call the module functions (:func:`poll`, :func:`skipped_ticks`,
:func:`delivery`, :func:`attempt`); each is a no-op until an :class:`Observer`
is :func:`subscribe`\\ d. The labels observers get are bounded: a worker's name,
a ``host:port`` (never a path, a query string or an id) and an outcome from the
fixed sets below. :func:`track` keeps a weak list of live workers, so that
values read at scrape time (circuits, outbox counts) can be found.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, List, Optional, Protocol, Tuple

from ..http.breaker import breaker_key
from ..exceptions import ConfigError, RequestError, RequestTimeout, RetryInterrupted
from ..http.outcome import is_poll_success, status_class

logger = logging.getLogger(__name__)

#: Poll outcomes: a 2xx (or 304) handled without error; another status (data, but an error);
#: no usable response (transport error, open circuit, body too large or not decodable);
#: data_extractor or process_message raised; stop() cut a retry wait short.
POLL_OUTCOMES = ("success", "http_error", "request_error", "process_error", "interrupted")
#: Delivery outcomes: a 2xx; a direct send that did not get one; an outbox delivery given up.
DELIVERY_OUTCOMES = ("delivered", "failed", "dead")
#: Attempt results: the status class of the answer, or why there was none.
ATTEMPT_RESULTS = ("2xx", "3xx", "4xx", "5xx", "timeout", "error")


class Observer(Protocol):
    """Receives what workers report; called on the worker's own thread, so keep it quick."""

    def on_poll(self, worker: str, outcome: str, seconds: float) -> None: ...

    def on_skipped_ticks(self, worker: str, count: int) -> None: ...

    def on_delivery(self, host: str, outcome: str) -> None: ...

    def on_attempt(self, host: str, result: str, seconds: float) -> None: ...


_lock = threading.Lock()
_observers: Tuple[Observer, ...] = ()  # replaced, never mutated: emitters read it without the lock
_workers: "weakref.WeakSet[Any]" = weakref.WeakSet()


def subscribe(observer: Observer) -> None:
    """Send every later report to *observer* too (once, however often it subscribes)."""
    global _observers
    with _lock:
        if observer not in _observers:
            _observers = _observers + (observer,)


def unsubscribe(observer: Observer) -> None:
    """Stop sending reports to *observer*."""
    global _observers
    with _lock:
        _observers = tuple(o for o in _observers if o is not observer)


def track(worker: Any) -> None:
    """Remember *worker* (weakly) for :func:`workers`; HTTPWorker does it for every worker."""
    with _lock:
        _workers.add(worker)


def workers() -> List[Any]:
    """The live workers, in no particular order."""
    with _lock:
        return list(_workers)


def host_of(url: Optional[str]) -> str:
    """``host:port`` of *url*, the only part of a URL that goes into a label ("unknown" without one)."""
    try:
        return breaker_key(url or "").split("://", 1)[1]
    except ConfigError:
        return "unknown"


def poll_outcome(ok: bool, status: Optional[int], error: Optional[BaseException]) -> str:
    """One of :data:`POLL_OUTCOMES` for a finished poll."""
    if isinstance(error, RetryInterrupted):
        return "interrupted"
    if isinstance(error, RequestError):
        return "request_error"
    if error is not None or not ok:
        return "process_error"
    if is_poll_success(status):
        return "success"
    return "http_error"


def attempt_result(status: Optional[int], error: Optional[BaseException] = None) -> str:
    """One of :data:`ATTEMPT_RESULTS` for one request: its status class, else timeout or error."""
    found = None if status is None else status_class(status)
    if found is not None:
        return found
    return "timeout" if isinstance(error, RequestTimeout) else "error"


def _emit(method: str, *args: Any) -> None:
    for observer in _observers:
        try:
            getattr(observer, method)(*args)
        except Exception:  # an observer's bug must never fail a poll or a delivery
            logger.exception("observer %r raised in %s", observer, method)


def poll(worker: str, ok: bool, status: Optional[int], error: Optional[BaseException], seconds: float) -> None:
    """A poll of *worker* ended after *seconds* (request, retries and processing)."""
    if _observers:
        _emit("on_poll", worker, poll_outcome(ok, status, error), seconds)


def skipped_ticks(worker: str, count: int) -> None:
    """*count* ticks of *worker* were skipped: the previous poll was still running."""
    if _observers:
        _emit("on_skipped_ticks", worker, count)


def delivery(url: Optional[str], outcome: str) -> None:
    """A webhook to *url* ended as *outcome* (delivered, failed, dead); other states are ignored."""
    if _observers and outcome in DELIVERY_OUTCOMES:
        _emit("on_delivery", host_of(url), outcome)


def attempt(url: Optional[str], status: Optional[int], error: Optional[BaseException], seconds: float) -> None:
    """One delivery request to *url* took *seconds* and got *status* (None: *error* instead)."""
    if _observers:
        _emit("on_attempt", host_of(url), attempt_result(status, error), seconds)


__all__ = [
    "ATTEMPT_RESULTS",
    "DELIVERY_OUTCOMES",
    "Observer",
    "POLL_OUTCOMES",
    "attempt",
    "attempt_result",
    "delivery",
    "host_of",
    "poll",
    "poll_outcome",
    "skipped_ticks",
    "subscribe",
    "track",
    "unsubscribe",
    "workers",
]
