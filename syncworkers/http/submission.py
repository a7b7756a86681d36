"""One call driven by libcurl's multi interface (:meth:`HTTPClient.submit`): its attempts, retry
waits and waits for a host slot as callbacks on the driver's I/O thread, so that none holds a thread.

The bookkeeping is the thread path's own (:class:`~syncworkers.http.attempts.Attempts`); a
set *signal* ends a retry wait, or a wait for a slot, at once with RetryInterrupted.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, Optional

from ..exceptions import ResponseTooLarge, RetryInterrupted, TransportError
from ..observability import tracing
from ..signals import StopSignal
from .attempts import Attempts, with_headers
from .limits import HostLimiter
from .messages import Response

#: Logs a retry about to be waited for: ``(wait, reason, call)``.
LogRetry = Callable[[float, str, Attempts], None]


class Submission:
    """The state of one submitted call; :meth:`start` sends its first attempt (see the module)."""

    __slots__ = ("driver", "call", "signal", "limiter", "clock", "log_retry", "future", "waiting")

    def __init__(self, driver: Any, call: Attempts, signal: StopSignal, limiter: Optional[HostLimiter],
                 clock: Callable[[], float], log_retry: LogRetry) -> None:
        self.driver = driver
        self.call = call
        self.signal = signal
        self.limiter = limiter
        self.clock = clock
        self.log_retry = log_retry
        self.future: "Future[Response]" = Future()
        self.future.set_running_or_notify_cancel()
        self.waiting = False  # a retry wait is on

    def start(self) -> "Future[Response]":
        self.driver.call_soon(self._attempt)
        return self.future

    def _fail(self, exc: BaseException) -> None:
        self.call.end()
        if not self.future.done():
            self.future.set_exception(exc)

    def _interrupted(self, what: str) -> RetryInterrupted:
        call = self.call
        return RetryInterrupted(what, url=call.url, method=call.request.method, attempts=call.attempt)

    def _attempt(self) -> None:
        self.waiting = False
        if self.signal.is_set() and self.call.attempt:
            self._fail(self._interrupted("retry wait interrupted"))
        elif self.limiter is not None:
            self.limiter.when_free(self.call.target.host, self.signal, self._go)
        else:
            self._go(False)

    def _go(self, held: bool) -> None:
        if self.limiter is not None and not held:
            self._fail(self._interrupted("interrupted while waiting for a slot of the host"))
            return
        call = self.call
        call.attempt += 1
        sent_at = self.clock()
        span = call.trace.start(call.attempt) if call.trace is not None else None
        sent = with_headers(call.request, span.wire) if span is not None else call.request
        self.driver.submit(sent, call.url).add_done_callback(lambda done: self._ended(done, sent_at, held, span))

    def _ended(self, done: "Future[Response]", sent_at: float, held: bool,
               span: Optional[tracing.Attempt]) -> None:
        call = self.call
        if held:
            self.limiter.release(call.target.host)  # type: ignore[union-attr]
        if span is not None:
            span.ended(done.result() if done.exception() is None else None, done.exception())
        try:
            exc = done.exception()
            if exc is None:
                response = done.result()
                again = call.answered(response, sent_at)
                if again is None:
                    call.end()
                    self.future.set_result(response)
                    return
                wait, reason = again, response.outcome.error or ""
            elif isinstance(exc, (TransportError, ResponseTooLarge)):
                wait = call.failed(exc, sent_at)
                reason = str(exc)
            else:
                raise exc
        except BaseException as error:
            self._fail(error)
            return
        self.log_retry(wait, reason, call)
        self.waiting = True
        self.driver.call_later(wait, self._attempt)
        self.signal.on_set(lambda: self.driver.call_soon(self._interrupt))

    def _interrupt(self) -> None:
        if self.waiting:
            self.waiting = False
            self._fail(self._interrupted("retry wait interrupted"))


__all__ = ["LogRetry", "Submission"]
