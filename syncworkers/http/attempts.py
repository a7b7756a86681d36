"""One call's attempts: the breaker's verdict before the first, the outcome of each, and whether
the retry policy wants another (shared by a thread's loop and libcurl's callbacks)."""

from __future__ import annotations

import threading
from typing import Callable, Mapping, Optional

from ..exceptions import CircuitOpenError, RequestError
from ..observability import tracing
from ..observability.redaction import Redactor
from .building import Target
from .messages import Request, Response
from .outcome import classify_error, classify_status
from .retry import RetryPolicy, parse_retry_after

#: Called after every attempt as ``(url, status, error, sent_at)`` (*sent_at*: the clock's time it was sent).
Attempted = Callable[[str, Optional[int], Optional[BaseException], float], None]


class Attempts:
    """The bookkeeping of one call's attempts, shared by :meth:`HTTPClient.send` (a thread) and
    :meth:`HTTPClient.submit` (callbacks): the breaker's verdict, the attempt hook, the outcome and
    whether the retry policy wants another attempt.

    *target* is the URL's (its breaker); *attempted* is called as ``(url, status, error, sent_at)``
    after each attempt; *redactor* masks the spans' attributes."""

    __slots__ = ("attempted", "request", "url", "policy", "cancel", "target", "attempt", "settled", "trace")

    def __init__(self, request: Request, url: str, policy: Optional[RetryPolicy], cancel: threading.Event,
                 target: Target, attempted: Attempted, redactor: Redactor) -> None:
        self.attempted = attempted
        self.request = request
        self.url = url
        self.policy = policy
        self.cancel = cancel
        self.target = target
        self.attempt = 0
        self.settled = False
        #: Each attempt's span, when tracing is on (its parent: the request's traceparent, else the current span).
        self.trace = (tracing.begin(request.method, request.url, request.headers, redactor)
                      if tracing.enabled else None)

    def begin(self) -> None:
        """Ask the host's breaker; CircuitOpenError (nothing sent) when its circuit is open."""
        try:
            self.target.breaker.before_request()
        except CircuitOpenError as exc:
            raise CircuitOpenError(str(exc), host=exc.host, remaining=exc.remaining, url=self.url,
                                   method=self.request.method) from None

    def answered(self, response: Response, sent_at: float) -> Optional[float]:
        """Seconds to wait before another attempt, or None: *response* is final (annotated)."""
        status = response.status_code
        self.attempted(self.url, status, None, sent_at)
        if 200 <= status < 300:
            outcome = classify_status(status)
        else:
            outcome = classify_status(status, response.reason,
                                      retry_after=parse_retry_after(response.headers.get("Retry-After")))
        response.outcome = outcome
        if self.policy is not None and not outcome.ok:
            decision = self.policy.next(outcome, self.attempt)
            if decision.wait is not None:
                return decision.wait
        self.target.breaker.record_outcome(outcome)
        self.settled = True
        response.attempts = self.attempt
        return None

    def failed(self, exc: RequestError, sent_at: float) -> float:
        """Seconds to wait before another attempt; re-raises *exc* when it is final."""
        self.attempted(self.url, exc.status, exc, sent_at)
        outcome = classify_error(exc)
        # Requests that may have reached the receiver (a refused address sent nothing).
        exc.attempts = self.attempt if outcome.sent else self.attempt - 1
        decision = None if self.policy is None else self.policy.next(outcome, self.attempt)
        if decision is None or decision.wait is None:
            self.target.breaker.record_outcome(outcome, exc)
            self.settled = True
            raise exc
        return decision.wait

    def end(self) -> None:
        """The call is over: an unsettled one frees the breaker's probe permit."""
        if not self.settled:
            self.settled = True
            self.target.breaker.release()


def with_headers(request: Request, headers: Mapping[str, str]) -> Request:
    """*request* with *headers* set (an attempt's ``traceparent``)."""
    for name, value in headers.items():
        request = request.with_header(name, value)
    return request


__all__ = ["Attempted", "Attempts", "with_headers"]
