"""One poll's pages: walking a paginator, the cursor and the rate-limit gate, decoding each answer.

:class:`PageWalker` is the part of a :class:`~syncworkers.workers.poller.PollerWorker`
that does a tick: fetch the first page (with conditional-request validators), hand
each page's messages to ``process_message``, follow the paginator, and advance the
cursor only after every item of the tick went through. It is built from what it
uses (a client, a state store, rate limits, the callbacks of its worker) and can
be driven alone.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple


from ..exceptions import BodyDecodeError, PaginationError, RequestError, RetryInterrupted, StateStoreError, safe_url
from ..http.client import HTTPClient, merge_headers
from ..http.messages import Response
from ..http.outcome import is_poll_success, status_class
from ..message import Message
from ..observability.logging import StructuredLogger
from ..observability.metrics import Metrics
from ..signals import StopSignal
from .bodies import as_items, decode_body, records
from .cursor import IncrementalCursor
from .pagination import DEFAULT_MAX_PAGES, Page, PageRequest, Paginator, first_request
from .ratelimit import RateLimits
from .state import MemoryStateStore, StateStore

#: Methods that send If-None-Match / If-Modified-Since (conditional requests are for safe methods).
CONDITIONAL_METHODS = ("GET", "HEAD")


@dataclass
class PollOutcome:
    """What one poll did.

    ``ok`` is False when the poll failed: a transport error, an open circuit, a
    body too large or one that cannot be decoded (a :class:`BodyDecodeError`; the
    body still reached ``process_message`` as text), a ``data_extractor`` or
    ``process_message`` exception, or a stop during a retry wait. A non-2xx
    response is data: ``ok`` stays True (unless its body cannot be decoded).
    ``results`` are the values ``process_message`` returned; ``messages`` how
    many messages were delivered to it.
    """

    ok: bool
    status_code: Optional[int] = None
    results: List[Any] = field(default_factory=list)
    error: Optional[BaseException] = None
    messages: int = 0


def _ignore(value: Any) -> None:
    """A callback with nothing to do (an error is in the outcome, a result in the stats already)."""


class PageWalker:
    """Walk one tick's pages of *url* through *client* and hand every message to *process_message*.

    The request (``url``, ``method``, ``headers``, ``params``, ``json``, ``data``),
    ``data_extractor``, ``paginator``, ``max_pages``, ``cursor`` with its ``state``
    store, ``rate_limits`` and ``interval`` (the longest wait for a rate-limit
    reset) are attributes, read at each tick. Counters go to *stats*; *clock*
    times each page. Errors without a response go to *on_poll_error*; *record*
    is told whether each tick that polled succeeded (not called for a tick
    skipped by the rate limit).
    """

    def __init__(self, client: HTTPClient, url: str, *, interval: float,
                 process_message: Callable[[Message], Any], method: str = "GET",
                 headers: Optional[Mapping[str, str]] = None, params: Any = None, json: Any = None,
                 data: Any = None, data_extractor: Optional[Callable[[Any], Any]] = None,
                 paginator: Optional[Paginator] = None, max_pages: int = DEFAULT_MAX_PAGES,
                 cursor: Optional[IncrementalCursor] = None, state: Optional[StateStore] = None,
                 rate_limits: Optional[RateLimits] = None, conditional: bool = True,
                 clock: Callable[[], float] = time.monotonic, stats: Optional[Metrics] = None,
                 on_poll_error: Callable[[RequestError], None] = _ignore,
                 record: Callable[[bool], None] = _ignore) -> None:
        self.client = client
        self.url = url
        self.interval = interval
        self.method = method
        self.headers: Dict[str, str] = dict(headers or {})
        self.params = params
        self.json = json
        self.data = data
        self.data_extractor = data_extractor
        self.paginator = paginator
        self.max_pages = max_pages
        self.cursor = cursor
        self.state: StateStore = MemoryStateStore() if state is None else state
        self.rate_limits = RateLimits() if rate_limits is None else rate_limits
        self.conditional = conditional
        self.stats = Metrics() if stats is None else stats
        self._clock = clock
        self._process_message = process_message
        self._on_poll_error = on_poll_error
        self._record = record
        self._validators: Dict[str, str] = {}

    @property
    def validators(self) -> Dict[str, str]:
        """The conditional-request headers the next first page sends (from the last 2xx first page)."""
        return dict(self._validators)

    def walk(self, stop: StopSignal, key: str, logger: StructuredLogger) -> PollOutcome:
        """One tick: the first page, then each next page the paginator names; the cursor advances last.

        *stop* cuts retry and rate-limit waits short; *key* names the cursor in
        the state store; *logger* is the worker's (both follow a renamed worker).
        """
        self.stats.incr("polls")
        outcome = PollOutcome(ok=True)
        try:
            since = self._load_cursor(key)
        except StateStoreError as exc:
            return self._tick_failed(outcome, exc, "cannot read the cursor", logger)
        plain = self.paginator is None and since is None
        extra = dict(self.paginator.first_params()) if self.paginator is not None else {}
        if since is not None and self.cursor is not None:
            extra[self.cursor.param] = since
        request: Optional[PageRequest] = PageRequest(self.url) if plain else first_request(self.url, self.params, extra)
        seen = set()
        highest, number, walked = since, 0, False
        while request is not None:
            if request in seen:
                error = PaginationError(f"page {number + 1} repeats an earlier request of this tick "
                                        "(a pagination loop); tick ended", url=request.url, method=self.method)
                self.stats.incr("pagination_errors")
                self._poll_failed(outcome, error, logger)
                break
            seen.add(request)
            if not self._rate_gate(request.url, outcome, stop, logger):
                walked = number > 0  # a budget spent mid-walk ends the walk like max_pages does
                break
            number += 1
            page = self._fetch_page(request, number, None if plain else list(request.params), outcome, stop, logger)
            if page is None:  # an error or a status that ends the walk
                break
            if self.cursor is not None:
                highest = self.cursor.highest(highest, records(page.items if self.data_extractor else [page.body]))
            request, walked = self._next_request(page, outcome, logger)
            if request is not None and number >= self.max_pages:
                logger.warning("poll of {url} stopped at max_pages ({max_pages} pages): the rest waits for the "
                               "next tick", url=safe_url(self.url), max_pages=self.max_pages)
                request, walked = None, True
        if walked and outcome.ok and self.cursor is not None and highest is not None and highest != since:
            try:  # only now: every item of the tick went through process_message (at-least-once)
                self.state.set(key, highest)
            except StateStoreError as exc:
                return self._tick_failed(outcome, exc, "cannot store the cursor", logger)
        if number or not outcome.ok:  # a tick skipped for the rate limit is neither success nor failure
            self._record(outcome.ok and is_poll_success(outcome.status_code))
        return outcome

    def _load_cursor(self, key: str) -> Any:
        if self.cursor is None:
            return None
        stored = self.state.get(key)
        return self.cursor.initial if stored is None else stored

    def _next_request(self, page: Page, outcome: PollOutcome,
                      logger: StructuredLogger) -> Tuple[Optional[PageRequest], bool]:
        """``(next request or None, walk complete)``; a paginator error ends the walk, incomplete."""
        if self.paginator is None:
            return None, True
        try:
            nxt = self.paginator.next_request(page)
        except PaginationError as exc:
            self.stats.incr("pagination_errors")
            self._poll_failed(outcome, exc, logger)
            return None, False
        except Exception as exc:
            logger.error("poll of {url}: the paginator raised after page {page}; the walk ends here, the next "
                         "tick starts over", url=safe_url(self.url), page=page.number, error=_describe(exc),
                         exc_info=True)
            self.stats.incr("pagination_errors")
            outcome.ok, outcome.error = False, outcome.error or exc
            return None, False
        return nxt, nxt is None

    def _rate_gate(self, url: str, outcome: PollOutcome, stop: StopSignal, logger: StructuredLogger) -> bool:
        """Wait for the host's rate-limit budget up to one interval; False: skip (spent) or stopped."""
        go, seconds = self.rate_limits.gate(url, self.interval, stop)
        if go:
            if seconds:
                logger.debug("waited for the rate limit to reset", url=safe_url(url), waited=round(seconds, 3))
            return True
        if seconds <= 0:  # stop() during the wait
            outcome.ok, outcome.error = False, RetryInterrupted("stopped while waiting for a rate limit reset",
                                                                url=url, method=self.method)
            return False
        self.stats.incr("rate_limited_ticks")
        log = logger.warning if self.rate_limits.first_warning(url) else logger.debug
        log("rate limit spent: ticks for this host are skipped until it resets", url=safe_url(url),
            reset_in=round(seconds, 1))
        return False

    def _fetch_page(self, request: PageRequest, number: int, params: Optional[List[Tuple[str, str]]],
                    outcome: PollOutcome, stop: StopSignal, logger: StructuredLogger) -> Optional[Page]:
        """Fetch one page and hand its messages to process_message; the Page if the walk may go on."""
        stats = self.stats
        stats.incr("pages")
        first = number == 1
        started = self._clock()
        try:
            response = self.client.request(self.method, request.url,
                                           headers=self._request_headers() if first else self.headers,
                                           params=self.params if params is None else params,
                                           json=self.json, data=self.data, cancel=stop)
        except RetryInterrupted as exc:  # stop() during a retry wait: shutting down, not a failure
            logger.info("poll of {url} interrupted by stop(): {error}", url=safe_url(request.url), error=str(exc))
            outcome.ok, outcome.error = False, exc
            return None
        except RequestError as exc:
            self._poll_failed(outcome, exc, logger)
            outcome.status_code = exc.status
            return None
        elapsed_ms = (self._clock() - started) * 1000.0
        stats.observe("poll_latency_ms", elapsed_ms)
        status = response.status_code
        outcome.status_code = status
        self.rate_limits.update(request.url, status, response.headers)
        stats.incr(f"responses_{status_class(status) or 'other'}")
        if status == 304:
            stats.incr("not_modified")
            return None
        success = 200 <= status < 300
        if success and first:
            self._remember_validators(response)
        body, decode_error = decode_body(response.content, response.headers.get("Content-Type", ""))
        if decode_error is not None:  # delivered as text, but the poll failed: counted, not clean
            stats.incr("decode_errors")
            logger.warning("poll of {url}: the body cannot be decoded (status {status_code}: {error}); "
                           "delivered as text, and the poll counts as failed",
                           url=safe_url(request.url), status_code=status, error=str(decode_error))
            outcome.ok = False
            outcome.error = outcome.error or BodyDecodeError(f"the body cannot be decoded: {decode_error}",
                                                             url=request.url, method=self.method, status=status)
        headers = {
            "status_code": status,
            "response_time": elapsed_ms,
            "url": request.url,
            "method": self.method,
            "content_type": response.headers.get("Content-Type"),
            "response_headers": response.headers.as_dict(),
            "attempts": getattr(response, "attempts", 1),
        }
        if self.paginator is not None:
            headers["page"] = number
        if decode_error is not None:
            headers["decode_error"] = str(decode_error)
        items = [body]
        if success and self.data_extractor is not None and decode_error is None:
            try:
                items = as_items(self.data_extractor(body))
            except Exception as exc:
                stats.incr("extractor_errors")
                logger.error("poll of {url}: data_extractor raised on the answer (status {status_code}): {error}; "
                             "its messages are skipped, the next tick polls again", url=safe_url(request.url),
                             status_code=status, error=_describe(exc), exc_info=True)
                outcome.ok, outcome.error = False, outcome.error or exc
                return None
        for item in items:
            message = Message(body=item, headers=dict(headers))
            stats.incr("messages")
            outcome.messages += 1
            try:
                outcome.results.append(self._process_message(message))
            except Exception as exc:  # one bad message must not drop the others nor stop the worker
                stats.incr("process_errors")
                logger.error("poll of {url}: process_message raised on message {message_id} (status "
                             "{status_code}): {error}; the poll goes on with the next message",
                             url=safe_url(request.url), status_code=status, message_id=message.id,
                             error=_describe(exc), exc_info=True)
                outcome.ok, outcome.error = False, outcome.error or exc
        if not success or decode_error is not None:  # a page not understood ends the walk; no cursor moves
            return None
        page_items = items if self.data_extractor is not None else (body if isinstance(body, list) else None)
        return Page(request=request, status=status, headers=response.headers, body=body, items=page_items,
                    url=response.url or request.url, number=number)

    def _poll_failed(self, outcome: PollOutcome, exc: RequestError, logger: StructuredLogger) -> None:
        """No usable page: count, log through on_poll_error; what was processed stays processed."""
        self.stats.incr("errors")
        outcome.ok, outcome.error = False, exc
        try:
            self._on_poll_error(exc)
        except Exception:
            logger.error("poll of {url} failed and on_poll_error raised: {error}", url=safe_url(self.url),
                         error=_describe(sys.exc_info()[1]), exc_info=True)

    def _tick_failed(self, outcome: PollOutcome, exc: StateStoreError, what: str,
                     logger: StructuredLogger) -> PollOutcome:
        self.stats.incr("errors")
        logger.error("poll of {url} failed: " + what + ": {reason}; the next tick tries again", url=safe_url(self.url),
                     error=type(exc).__name__, reason=str(exc))
        outcome.ok, outcome.error = False, exc
        self._record(False)
        return outcome

    def _request_headers(self) -> Mapping[str, str]:
        if not self._validators or self.method not in CONDITIONAL_METHODS:
            return self.headers
        return merge_headers(self._validators, self.headers)  # the caller's own headers win

    def _remember_validators(self, response: Response) -> None:
        if not self.conditional:
            return
        # Replaced, not merged: a validator the server stopped sending must not be sent back.
        validators = {}
        if response.headers.get("ETag"):
            validators["If-None-Match"] = response.headers["ETag"]
        if response.headers.get("Last-Modified"):
            validators["If-Modified-Since"] = response.headers["Last-Modified"]
        self._validators = validators


def _describe(exc: Optional[BaseException]) -> str:
    """An exception in a sentence: its type and message."""
    return f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"


__all__ = ["CONDITIONAL_METHODS", "PageWalker", "PollOutcome"]
