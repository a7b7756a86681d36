"""One poll's pages: walking a paginator, the cursor and the rate-limit gate, decoding each answer.

:class:`PageWalker` gives :class:`~syncworkers.workers.poller.PollerWorker` its poll
cycle: fetch the first page (with conditional-request validators), hand each page's
messages to ``process_message``, follow the paginator, and advance the cursor only
after every item of the tick went through.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import requests

from ..config.settings import PollerConfig
from .cursor import IncrementalCursor
from ..exceptions import (
    PaginationError,
    RequestError,
    RetryInterrupted,
    StateStoreError,
    safe_url,
)
from ..http.client import merge_headers
from ..http.outcome import is_poll_success, status_class
from ..message import Message
from .pagination import Page, PageRequest, Paginator, first_request
from .ratelimit import RateLimits
from .state import StateStore


if TYPE_CHECKING:  # pragma: no cover
    from ..http.client import HTTPClient
    from ..observability.logging import StructuredLogger
    from ..observability.metrics import Metrics
    from ..signals import StopSignal

#: Methods that send If-None-Match / If-Modified-Since (conditional requests are for safe methods).
CONDITIONAL_METHODS = ("GET", "HEAD")


@dataclass
class PollOutcome:
    """What one poll did.

    ``ok`` is False when the poll failed: a transport error, an open circuit, a
    body too large, a ``data_extractor`` or ``process_message`` exception, or a
    stop during a retry wait. A non-2xx response is data: ``ok`` stays True.
    ``results`` are the values ``process_message`` returned; ``messages`` how
    many messages were delivered to it.
    """

    ok: bool
    status_code: Optional[int] = None
    results: List[Any] = field(default_factory=list)
    error: Optional[BaseException] = None
    messages: int = 0


class PageWalker:
    """The page loop of a poller (mixed into PollerWorker, whose constructor sets the attributes)."""

    if TYPE_CHECKING:  # provided by the worker
        name: str
        url: str
        method: str
        interval: float
        headers: Dict[str, str]
        params: Any
        data_extractor: Optional[Callable[[Any], Any]]
        paginator: Optional[Paginator]
        max_pages: int
        cursor: Optional[IncrementalCursor]
        state: StateStore
        rate_limits: RateLimits
        poller_config: PollerConfig
        logger: StructuredLogger
        client: HTTPClient
        _stats: Metrics
        _json: Any
        _data: Any
        _clock: Callable[[], float]
        _validators: Dict[str, str]

        @property
        def stop_event(self) -> StopSignal: ...

        def process_message(self, message: Message) -> Any: ...

        def on_poll_error(self, exc: RequestError) -> None: ...

        def _record(self, success: bool) -> None: ...

    def _poll_cycle(self) -> PollOutcome:
        """One tick: the first page, then each next page the paginator names; the cursor advances last."""
        self._stats.incr("polls")
        outcome = PollOutcome(ok=True)
        try:
            since = self._load_cursor()
        except StateStoreError as exc:
            return self._tick_failed(outcome, exc, "cannot read the cursor")
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
                self._stats.incr("pagination_errors")
                self._poll_failed(outcome, error)
                break
            seen.add(request)
            if not self._rate_gate(request.url, outcome):
                walked = number > 0  # a budget spent mid-walk ends the walk like max_pages does
                break
            number += 1
            page = self._fetch_page(request, number, None if plain else list(request.params), outcome)
            if page is None:  # an error or a status that ends the walk
                break
            if self.cursor is not None:
                highest = self.cursor.highest(highest, _bodies(page.items if self.data_extractor else [page.body]))
            request, walked = self._next_request(page, outcome)
            if request is not None and number >= self.max_pages:
                self.logger.warning("max_pages reached: the rest waits for the next tick", url=safe_url(self.url),
                                    max_pages=self.max_pages)
                request, walked = None, True
        if walked and outcome.ok and self.cursor is not None and highest is not None and highest != since:
            try:  # only now: every item of the tick went through process_message (at-least-once)
                self.state.set(self.name, highest)
            except StateStoreError as exc:
                return self._tick_failed(outcome, exc, "cannot store the cursor")
        if number or not outcome.ok:  # a tick skipped for the rate limit is neither success nor failure
            self._record(success=outcome.ok and is_poll_success(outcome.status_code))
        return outcome

    def _load_cursor(self) -> Any:
        if self.cursor is None:
            return None
        stored = self.state.get(self.name)
        return self.cursor.initial if stored is None else stored

    def _next_request(self, page: Page, outcome: PollOutcome) -> Tuple[Optional[PageRequest], bool]:
        """``(next request or None, walk complete)``; a paginator error ends the walk, incomplete."""
        if self.paginator is None:
            return None, True
        try:
            nxt = self.paginator.next_request(page)
        except PaginationError as exc:
            self._stats.incr("pagination_errors")
            self._poll_failed(outcome, exc)
            return None, False
        except Exception as exc:
            self.logger.error("paginator raised", url=safe_url(self.url), exc_info=True)
            self._stats.incr("pagination_errors")
            outcome.ok, outcome.error = False, outcome.error or exc
            return None, False
        return nxt, nxt is None

    def _rate_gate(self, url: str, outcome: PollOutcome) -> bool:
        """Wait for the host's rate-limit budget up to one interval; False: skip (spent) or stopped."""
        go, seconds = self.rate_limits.gate(url, self.interval, self.stop_event)
        if go:
            if seconds:
                self.logger.debug("waited for the rate limit to reset", url=safe_url(url), waited=round(seconds, 3))
            return True
        if seconds <= 0:  # stop() during the wait
            outcome.ok, outcome.error = False, RetryInterrupted("stopped while waiting for a rate limit reset",
                                                                url=url, method=self.method)
            return False
        self._stats.incr("rate_limited_ticks")
        log = self.logger.warning if self.rate_limits.first_warning(url) else self.logger.debug
        log("rate limit spent: ticks for this host are skipped until it resets", url=safe_url(url),
            reset_in=round(seconds, 1))
        return False

    def _fetch_page(self, request: PageRequest, number: int, params: Optional[List[Tuple[str, str]]],
                    outcome: PollOutcome) -> Optional[Page]:
        """Fetch one page and hand its messages to process_message; the Page if the walk may go on."""
        stats = self._stats
        stats.incr("pages")
        first = number == 1
        started = self._clock()
        try:
            response = self.client.request(self.method, request.url,
                                           headers=self._request_headers() if first else self.headers,
                                           params=self.params if params is None else params,
                                           json=self._json, data=self._data, cancel=self.stop_event)
        except RetryInterrupted as exc:  # stop() during a retry wait: shutting down, not a failure
            self.logger.info("poll interrupted by stop", url=safe_url(request.url))
            outcome.ok, outcome.error = False, exc
            return None
        except RequestError as exc:
            self._poll_failed(outcome, exc)
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
        body = self._decode(response)
        headers = {
            "status_code": status,
            "response_time": elapsed_ms,
            "url": request.url,
            "method": self.method,
            "content_type": response.headers.get("Content-Type"),
            "response_headers": dict(response.headers),
            "attempts": getattr(response, "attempts", 1),
        }
        if self.paginator is not None:
            headers["page"] = number
        items = [body]
        if success and self.data_extractor is not None:
            try:
                items = _as_items(self.data_extractor(body))
            except Exception as exc:
                stats.incr("extractor_errors")
                self.logger.error("data_extractor raised", url=safe_url(request.url), status_code=status,
                                  exc_info=True)
                outcome.ok, outcome.error = False, outcome.error or exc
                return None
        for item in items:
            message = Message(body=item, headers=dict(headers))
            stats.incr("messages")
            outcome.messages += 1
            try:
                outcome.results.append(self.process_message(message))
            except Exception as exc:  # one bad message must not drop the others nor stop the worker
                stats.incr("process_errors")
                self.logger.error("process_message raised", url=safe_url(request.url), status_code=status,
                                  message_id=message.id, exc_info=True)
                outcome.ok, outcome.error = False, outcome.error or exc
        if not success:
            return None
        page_items = items if self.data_extractor is not None else (body if isinstance(body, list) else None)
        return Page(request=request, status=status, headers=response.headers, body=body, items=page_items,
                    url=response.url or request.url, number=number)

    def _poll_failed(self, outcome: PollOutcome, exc: RequestError) -> None:
        """No usable page: count, log through on_poll_error; what was processed stays processed."""
        self._stats.incr("errors")
        outcome.ok, outcome.error = False, exc
        try:
            self.on_poll_error(exc)
        except Exception:
            self.logger.error("on_poll_error raised", url=safe_url(self.url), exc_info=True)

    def _tick_failed(self, outcome: PollOutcome, exc: StateStoreError, what: str) -> PollOutcome:
        self._stats.incr("errors")
        self.logger.error(what, url=safe_url(self.url), error=type(exc).__name__, reason=str(exc))
        outcome.ok, outcome.error = False, exc
        self._record(success=False)
        return outcome

    def _request_headers(self) -> Mapping[str, str]:
        if not self._validators or self.method not in CONDITIONAL_METHODS:
            return self.headers
        return merge_headers(self._validators, self.headers)  # the caller's own headers win

    def _remember_validators(self, response: requests.Response) -> None:
        if not self.poller_config.conditional:
            return
        # Replaced, not merged: a validator the server stopped sending must not be sent back.
        validators = {}
        if response.headers.get("ETag"):
            validators["If-None-Match"] = response.headers["ETag"]
        if response.headers.get("Last-Modified"):
            validators["If-Modified-Since"] = response.headers["Last-Modified"]
        self._validators = validators

    def _decode(self, response: requests.Response) -> Any:
        """Parsed JSON for a JSON content type, else text; None when the body is empty."""
        content = response.content
        if not content:
            return None
        media_type, charset = _parse_content_type(response.headers.get("Content-Type", ""))
        if media_type == "application/json" or media_type.endswith("+json"):
            try:
                return jsonlib.loads(content)
            except ValueError as exc:  # delivered as text: the API answered, only its JSON is broken
                self.logger.warning("invalid JSON body, delivered as text", url=safe_url(self.url),
                                    status_code=response.status_code, reason=str(exc))
        try:
            return content.decode(charset or "utf-8", errors="replace")
        except LookupError:  # an unknown charset name
            return content.decode("utf-8", errors="replace")


def _bodies(items: Optional[Sequence[Any]]) -> List[Any]:
    """The records a cursor looks at: each item, or each element of an item that is a JSON array."""
    records: List[Any] = []
    for item in items or []:
        records += item if isinstance(item, list) else [item]
    return records


def _as_items(extracted: Any) -> List[Any]:
    """What a data_extractor returned, as messages: a list, tuple or iterator is many, anything else one."""
    if isinstance(extracted, (list, tuple, Iterator)):
        return list(extracted)
    return [extracted]


def _parse_content_type(value: str) -> Tuple[str, Optional[str]]:
    """``("application/json", "utf-8")`` from ``"application/json; charset=UTF-8"``."""
    media_type, *params = value.split(";")
    charset = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"') or None
    return media_type.strip().lower(), charset


__all__ = ["CONDITIONAL_METHODS", "PageWalker", "PollOutcome"]
