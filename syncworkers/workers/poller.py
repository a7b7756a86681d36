"""PollerWorker: poll an HTTP API at a fixed rate and hand each response to ``process_message``.

One poll is one ``HTTPClient.request`` (retries happen inside it), turned into
one :class:`~syncworkers.message.Message` (or one per item of a
``data_extractor``). Every HTTP response reaches ``process_message`` whatever
its status; transport errors and open circuits go to ``on_poll_error``. The
Runner does the fixed-rate timing; this module only does one poll at a time.
"""

from __future__ import annotations

import hashlib
import json as jsonlib
import logging
import threading
import time
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, TypeVar, overload


from ..observability import events
from ..config.settings import HTTPClientConfig, PollerConfig
from ..config.base import with_other_errors
from ..config.defaults import MAX_COUNT
from ..config.validators import checked, count
from ..polling.cursor import IncrementalCursor
from ..observability.redaction import safe_url
from ..exceptions import (
    CircuitOpenError,
    ConfigError,
    RequestError,
    TransportError,
)
from ..message import Message
from ..polling.pagination import DEFAULT_MAX_PAGES, Paginator
from ..polling.ratelimit import RateLimits, shared_rate_limits
from ..polling.state import StateStore, open_state_store, resolve_state_url
from ..polling.health import PollHealth
from ..http.headers import header_problem
from ..polling.pages import CONDITIONAL_METHODS, PageWalker, PollOutcome
from ..scheduling.jobs import Job, PeriodicJob
from ..signals import StopSignal
from ..http.urls import join_url
from .base import HTTPWorker

DataExtractor = Callable[[Any], Any]

#: Counters every poller reports from the start (0 until something happens).
COUNTERS = ("polls", "responses_2xx", "responses_3xx", "responses_4xx", "responses_5xx",
            "not_modified", "errors", "decode_errors", "process_errors", "extractor_errors", "skipped_ticks",
            "messages", "ticks_here", "ticks_elsewhere", "ticks_unclaimed", "pages", "pagination_errors",
            "rate_limited_ticks")
#: Failed polls in a row after which a poller reports not ready (``/readyz``).
NOT_READY_AFTER = 3


T = TypeVar("T")


class _OnWalker(Generic[T]):
    """A PollerWorker attribute that lives on its page walker: one value, read or set through either."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    @overload
    def __get__(self, worker: None, owner: type) -> "_OnWalker[T]": ...

    @overload
    def __get__(self, worker: "PollerWorker", owner: type) -> T: ...

    def __get__(self, worker: Optional["PollerWorker"], owner: type) -> Any:
        return self if worker is None else getattr(worker.walker, self.attr)

    def __set__(self, worker: "PollerWorker", value: T) -> None:
        setattr(worker.walker, self.attr, value)


class PollerWorker(HTTPWorker):
    """Poll *url* every *interval* seconds and call ``process_message(message)`` per response.

    ``url``, ``interval`` and ``method`` come, field by field, from the argument,
    else ``poller_config``, else ``POLLER_URL`` / ``POLLER_INTERVAL`` /
    ``POLLER_METHOD`` (method defaults to GET). The HTTP client settings layer
    ``poller_config`` > ``http_config`` > ``POLLER_*`` > ``HTTP_*`` variables >
    defaults. A relative url joins ``PollerConfig.base_url`` or ``HTTP_BASE_URL``.

    ``message.headers`` holds ``status_code``, ``response_time`` (ms, retries
    included), ``url``, ``method``, ``content_type``, ``response_headers`` and
    ``attempts``. The body is parsed JSON for a JSON content type, text
    otherwise, None when empty. With *data_extractor*, a 2xx body becomes one
    message per item of the list it returns (any other value is one item).
    A body that cannot be decoded (invalid JSON or charset, nested too deep)
    arrives whole as text with ``headers["decode_error"]`` saying why; the poll
    is counted in ``decode_errors`` and fails (a BodyDecodeError).

    With ``PollerConfig.conditional`` (the default), GET and HEAD polls send
    the last 2xx response's ETag / Last-Modified back; a 304 produces no message.
    ``self.metrics`` may be replaced by a subclass; counting goes to ``self._stats``.

    With *paginator* (see :mod:`syncworkers.polling.pagination`) one tick walks the
    pages, at most *max_pages*; a request repeated within a tick ends it with a
    PaginationError (to ``on_poll_error``). With *cursor* (an
    :class:`~syncworkers.polling.cursor.IncrementalCursor`) the highest value seen is
    kept under ``self.name`` in the store of *state_url* (``POLLER_STATE_URL``;
    in memory when unset) and sent on the next tick. *rate_limits* is the
    per-host budget shared by every poller of the process unless given.

    A tick is the work of ``self.walker``, a :class:`~syncworkers.polling.pages.PageWalker`;
    the worker keeps the lifecycle, the timing and the health view.
    """

    url: _OnWalker[str] = _OnWalker()
    interval: _OnWalker[float] = _OnWalker()
    method: _OnWalker[str] = _OnWalker()
    headers: _OnWalker[Dict[str, str]] = _OnWalker()
    params: _OnWalker[Any] = _OnWalker()
    data_extractor: _OnWalker[Optional[DataExtractor]] = _OnWalker()
    paginator: _OnWalker[Optional[Paginator]] = _OnWalker()
    max_pages: _OnWalker[int] = _OnWalker()
    cursor: _OnWalker[Optional[IncrementalCursor]] = _OnWalker()
    state: _OnWalker[StateStore] = _OnWalker()
    rate_limits: _OnWalker[RateLimits] = _OnWalker()

    def __init__(self, url: Optional[str] = None, interval: Optional[float] = None,
                 method: Optional[str] = None, headers: Optional[Mapping[str, str]] = None,
                 params: Any = None, data_extractor: Optional[DataExtractor] = None,
                 poller_config: Optional[PollerConfig] = None,
                 http_config: Optional[HTTPClientConfig] = None, *, name: Optional[str] = None,
                 json: Any = None, data: Any = None,
                 clock: Callable[[], float] = time.monotonic, paginator: Optional[Paginator] = None,
                 max_pages: int = DEFAULT_MAX_PAGES, cursor: Optional[IncrementalCursor] = None,
                 state_url: Optional[str] = None, rate_limits: Optional[RateLimits] = None) -> None:
        for arg, value, cls in (("poller_config", poller_config, PollerConfig),
                                ("http_config", http_config, HTTPClientConfig)):
            if value is not None and not isinstance(value, cls):
                raise ConfigError(f"{arg} must be a {cls.__name__}, got {type(value).__name__}",
                                  {arg: f"must be a {cls.__name__}"})
        try:
            config = PollerConfig.resolve(poller_config, url=url, interval=interval, method=method)
        except ConfigError as exc:  # name the bad HTTP_* variables too, all at once
            raise with_other_errors(exc, lambda: HTTPClientConfig.resolve(http_config)) from None
        client_config = _client_config(poller_config, config, http_config)
        absolute_url = _absolute_url(config, client_config)
        if headers is not None and not isinstance(headers, Mapping):
            raise ConfigError(f"headers must be a mapping, got {type(headers).__name__}",
                              {"headers": "must be a mapping"})
        for header, header_value in (headers or {}).items():
            problem = header_problem(header, header_value)
            if problem is not None:
                raise ConfigError(f"headers: {problem}", {"headers": problem})
        if data_extractor is not None and not callable(data_extractor):
            raise ConfigError(f"data_extractor must be callable, got {data_extractor!r}",
                              {"data_extractor": "must be callable"})
        if json is not None and data is not None:
            raise ConfigError("give json or data, not both", {"json": "conflicts with data"})
        _check_payload(params, json, data)
        if not callable(clock):
            raise ConfigError(f"clock must be callable, got {clock!r}", {"clock": "must be callable"})
        _check_paging(paginator, max_pages, cursor, rate_limits)
        state = open_state_store(resolve_state_url(state_url))
        redactor = client_config.redactor()  # it knows secret_headers: which of these headers are secret
        redactor.add_headers(headers)  # e.g. the reference's Authorization: Bearer ...
        super().__init__(name=name or default_name(type(self).__name__, config.method, absolute_url),
                         client_config=client_config, redactor=redactor)
        self.poller_config = config
        self.last_outcome: Optional[PollOutcome] = None
        # Re-entrant: a process_message that calls poll() runs it nested instead of deadlocking.
        self._poll_lock = threading.RLock()
        self._health = PollHealth()
        self.walker = PageWalker(
            self.client, absolute_url, interval=config.interval, method=config.method, headers=headers,
            params=params, json=json, data=data, data_extractor=data_extractor, paginator=paginator,
            max_pages=max_pages, cursor=cursor, state=state,
            rate_limits=shared_rate_limits if rate_limits is None else rate_limits,
            conditional=config.conditional, clock=clock, stats=self._stats,
            process_message=self.process_message, on_poll_error=self.on_poll_error, record=self._health.record)
        for counter in COUNTERS:
            self._stats.incr(counter, 0)

    # -- for subclasses -----------------------------------------------------------

    def process_message(self, message: Message) -> Any:
        """Handle one polled message (override). The default logs it and returns its body."""
        self.logger.info("poll response from {url}: status {status_code}", url=safe_url(self.url),
                         status_code=message.headers.get("status_code"))
        return message.body

    def on_poll_error(self, exc: RequestError) -> None:
        """Called when a poll got no response: a transport error, an open circuit, a body too large.

        The default logs the reason (WARNING for connection trouble and open
        circuits, ERROR otherwise). The worker keeps polling either way.
        """
        level = logging.WARNING if isinstance(exc, (TransportError, CircuitOpenError)) else logging.ERROR
        self.logger.log(level, "poll failed: {url}: {reason}; polling again every {interval}s",
                        url=safe_url(self.url), error=type(exc).__name__, reason=str(exc), interval=self.interval)

    # -- polling ----------------------------------------------------------------------

    def poll(self) -> PollOutcome:
        """Do one full poll cycle now, in this thread (waits for a poll already in progress)."""
        stop = self._direct_run()
        with self._poll_lock:
            outcome = self._poll(stop)
            self.last_outcome = outcome
        return outcome

    def run_once(self) -> PollOutcome:
        """One poll cycle (``syncworkers run --once``): ``.ok``, and ``.results`` — what
        ``process_message`` returned for each message."""
        return self.poll()

    def jobs(self) -> List[Job]:
        """One periodic job: the Runner does the fixed-rate timing, skipping and stagger."""
        return [PeriodicJob(self.name, self.interval, self._tick, jitter=self.poller_config.jitter,
                            on_skip=self._on_skip, on_unclaimed=self._on_unclaimed)]

    def _tick(self) -> None:
        # A poll() called directly may hold the lock: this tick is then skipped, not queued.
        if not self._poll_lock.acquire(blocking=False):
            self._on_skip(1)
            return
        try:
            self._stats.incr("ticks_here")
            self.last_outcome = self._poll(self.stop_event)
        finally:
            self._poll_lock.release()

    def _on_unclaimed(self, elsewhere: bool) -> None:
        self._stats.incr("ticks_elsewhere" if elsewhere else "ticks_unclaimed")

    def _on_skip(self, count: int) -> None:
        self._stats.incr("skipped_ticks", count)
        events.skipped_ticks(self.name, count)
        self.logger.debug("tick skipped: the previous poll is still running", skipped=count)

    def _poll(self, stop: StopSignal) -> PollOutcome:
        started = time.monotonic()
        # The name and logger are read now: ``poller.name = ...`` renames the cursor's key and the logs.
        outcome = self.walker.walk(stop, self.name, self.logger)
        events.poll(self.name, outcome.ok, outcome.status_code, outcome.error, time.monotonic() - started)
        return outcome

    # -- observability ----------------------------------------------------------------

    def not_ready_reasons(self) -> List[str]:
        """HTTPWorker's reasons, and polls failing NOT_READY_AFTER times in a row."""
        reasons = super().not_ready_reasons()
        failures = self._health.consecutive_failures
        if failures >= NOT_READY_AFTER:
            reasons.append(f"{failures} polls failed in a row")
        return reasons

    def _healthy(self, reasons: List[str]) -> bool:
        return self._health.consecutive_failures == 0

    def health(self) -> Dict[str, Any]:
        """HTTPWorker.health() plus the poll view.

        A poll succeeds when it gets a 2xx (or 304) and every message is processed
        without error; anything else (an open circuit too) counts as a failure.
        ``healthy`` means no failure since the last success; ``ready`` allows up to
        NOT_READY_AFTER - 1 failures in a row (a blip is not an outage).
        """
        report = super().health()
        last_success, failures = self._health.snapshot()
        circuit = self.client.breakers.for_url(self.url).state
        report.update({
            "last_success": last_success,
            "consecutive_failures": failures,
            "circuit": circuit,
            "url": safe_url(self.url),
            "interval_seconds": self.interval,
            # With coordination: ticks polled here, polled by another process, lost to an outage.
            "ticks": {"here": self._stats["ticks_here"], "elsewhere": self._stats["ticks_elsewhere"],
                      "unclaimed": self._stats["ticks_unclaimed"]},
        })
        return report

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} {self.method} {safe_url(self.url)} "
                f"every {self.interval:g}s running={self.running}>")


def default_name(class_name: str, method: str, url: str) -> str:
    """A poller's name from its class, method and URL: the same in every process, no secrets.

    Shows the URL as :func:`~syncworkers.observability.redaction.safe_url` prints it, without
    its query string; a hash of the full URL (query and credentials included) tells apart
    pollers that differ only there.
    """
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:10]
    shown = (safe_url(url) or "").split("?", 1)[0]
    return f"{class_name} {method} {shown} ({digest})"


def _client_config(poller_config: Optional[PollerConfig], effective: PollerConfig,
                   http_config: Optional[HTTPClientConfig]) -> HTTPClientConfig:
    """The client settings: poller_config object > http_config object > POLLER_* > HTTP_* > default."""
    fields = PollerConfig.CLIENT_FIELDS
    given = {f: getattr(poller_config, f) for f in fields if poller_config is not None and poller_config.is_set(f)}
    # Set in the effective config but not in the object: they came from POLLER_* variables.
    from_env = {f: getattr(effective, f) for f in fields if effective.is_set(f) and f not in given}
    if http_config is not None:
        shadowed = set(http_config.explicit_fields)
        if http_config.is_set("timeout"):  # the shorthand stands for both timeouts
            shadowed |= {"connect_timeout", "read_timeout"}
        from_env = {f: v for f, v in from_env.items() if f not in shadowed}
    return HTTPClientConfig.resolve(given, http_config, from_env)


def _absolute_url(config: PollerConfig, client_config: HTTPClientConfig) -> str:
    url = config.url
    if url is None:
        message = "PollerWorker needs a url: pass url=..., PollerConfig(url=...) or set POLLER_URL"
        raise ConfigError(message, {"POLLER_URL": message})
    return join_url(config.base_url or client_config.base_url, url, what="poll url")


def _check_payload(params: Any, json: Any, data: Any) -> None:
    """What every poll sends, checked once here: each poll would fail the same way (and not as ours)."""
    for arg, value in (("params", params), ("data", data)):
        if value is None or isinstance(value, (str, bytes, Mapping)):
            continue
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in value):
            raise ConfigError(f"{arg} must be a mapping, a list of (name, value) pairs, text or bytes, "
                              f"got {type(value).__name__}", {arg: "must be a mapping, pairs, text or bytes"})
    if json is not None:
        try:
            jsonlib.dumps(json, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ConfigError(f"json cannot be sent as JSON: {reason}", {"json": "not JSON-serialisable"}) from None


def _check_paging(paginator: Any, max_pages: Any, cursor: Any, rate_limits: Any) -> None:
    if paginator is not None and not isinstance(paginator, Paginator):
        raise ConfigError(f"paginator must have first_params() and next_request(page), got {paginator!r}",
                          {"paginator": "must implement the Paginator protocol"})
    checked("max_pages", max_pages, count(maximum=MAX_COUNT, text=False))
    if cursor is not None and not isinstance(cursor, IncrementalCursor):
        raise ConfigError(f"cursor must be an IncrementalCursor, got {type(cursor).__name__}",
                          {"cursor": "must be an IncrementalCursor"})
    if rate_limits is not None and not isinstance(rate_limits, RateLimits):
        raise ConfigError(f"rate_limits must be a RateLimits, got {type(rate_limits).__name__}",
                          {"rate_limits": "must be a RateLimits"})


__all__ = ["PollerWorker", "PollOutcome", "DataExtractor", "COUNTERS", "CONDITIONAL_METHODS", "NOT_READY_AFTER",
           "default_name"]
