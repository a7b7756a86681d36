"""Direct sends: one webhook POSTed now, retried by the client, its result counted and logged.

:class:`DirectSender` is what ``WebhookSenderWorker.deliver()`` and ``send_webhook()``
do, and what a broadcast does once per endpoint. Failures never raise: a
:class:`~syncworkers.delivery.request.DeliveryResult` says why, and a log line too.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, Mapping, Optional

from ..exceptions import RequestError
from ..http.client import HTTPClient
from ..http.messages import Response
from ..http.outcome import Kind, Outcome, classify_error
from ..observability import events
from ..observability.logging import plural
from ..observability.metrics import Metrics
from ..signals import StopSignal
from ..signing import Signer
from . import capture
from .checks import InputChecks, Webhook
from .request import DeliveryResult, delivery_headers, safe_endpoint

#: The error of a send asked of a worker whose run was stopped.
STOPPED = "worker stopped"
#: Outcomes logged as warnings, not errors: nothing went wrong with the receiver's answer.
_QUIET_KINDS = (Kind.CIRCUIT_OPEN, Kind.INTERRUPTED)


class DirectSender:
    """Sends one webhook at a time through *client*, signed by *signer* (None: unsigned).

    *run* gives the current run's stop signal: once it is set, nothing is sent
    (the result says ``worker stopped``) and retry waits in progress end at once.
    """

    def __init__(self, client: HTTPClient, signer: Optional[Signer], checks: InputChecks,
                 run: Callable[[], StopSignal], *, logger: Any, stats: Metrics) -> None:
        self.client = client
        self.signer = signer
        self.checks = checks
        self.logger = logger
        self._run = run
        self._stats = stats

    def deliver(self, endpoint: str, data: Any, headers: Optional[Mapping[str, str]] = None, *,
                delivery_id: Optional[str] = None, cancel: Optional[threading.Event] = None) -> DeliveryResult:
        """POST *data* as JSON to *endpoint* (retries included); see ``WebhookSenderWorker.deliver``."""
        webhook = self.checks.one(endpoint, data, headers, delivery_id)
        run = self._run()
        if run.is_set():
            return self.refuse(webhook.endpoint, webhook.url, STOPPED, webhook.id)
        if cancel is None:
            signal: threading.Event = run
        elif isinstance(cancel, StopSignal):
            signal = StopSignal.any(run, cancel)
        else:  # a plain Event can wake no one: its own waits watch it alone
            signal = cancel
        return self.send(webhook, signal)

    def send(self, webhook: Webhook, cancel: threading.Event) -> DeliveryResult:
        """POST a checked *webhook*; *cancel* cuts its retry waits short."""
        # Built once: every attempt carries the same id, timestamp and signature.
        headers = delivery_headers(webhook.id, webhook.body, self.signer, webhook.headers)
        captured = self._captured(webhook, headers)
        if captured is not None:
            return captured
        request = self.client.build("POST", webhook.url, data=webhook.body, headers=headers)
        started = time.monotonic()
        try:
            response = self.client.send(request, url=webhook.url, cancel=cancel, allow_redirects=False)
        except RequestError as exc:
            return self.finish(webhook, started, None, exc)
        return self.finish(webhook, started, response, None)

    def start(self, webhook: Webhook, cancel: StopSignal) -> "Future[DeliveryResult]":
        """:meth:`send` without holding a thread (``client.can_submit``: libcurl's multi interface); the
        future ends with the result on the client's I/O thread."""
        headers = delivery_headers(webhook.id, webhook.body, self.signer, webhook.headers)
        result: "Future[DeliveryResult]" = Future()
        result.set_running_or_notify_cancel()
        captured = self._captured(webhook, headers)
        if captured is not None:
            result.set_result(captured)
            return result
        request = self.client.build("POST", webhook.url, data=webhook.body, headers=headers)
        started = time.monotonic()

        def ended(done: "Future[Response]") -> None:
            exc = done.exception()
            try:
                if exc is None or isinstance(exc, RequestError):
                    result.set_result(self.finish(webhook, started, None if exc is not None else done.result(),
                                                  exc))
                else:
                    result.set_exception(exc)
            except BaseException as error:  # a bug in the bookkeeping: the delivery's error, never lost
                if not result.done():
                    result.set_exception(error)

        self.client.submit(request, url=webhook.url, cancel=cancel).add_done_callback(ended)
        return result

    @staticmethod
    def _captured(webhook: Webhook, headers: Mapping[str, str]) -> Optional[DeliveryResult]:
        """The result of a webhook a test's capture took instead of the wire (nothing sent, nothing counted:
        the caller sees it accepted), or None when no capture is attached."""
        if capture.capturing() and capture.hand(capture.CapturedWebhook(
                webhook.id, safe_endpoint(webhook.endpoint), webhook.url, webhook.body, dict(headers))):
            return DeliveryResult.from_outcome(webhook.endpoint, webhook.url, Outcome(Kind.SUCCESS), 0, 0.0,
                                               webhook.id)
        return None

    def finish(self, webhook: Webhook, started: float, response: Optional[Response],
               error: Optional[RequestError]) -> DeliveryResult:
        """Count, log and return the result of *webhook* sent since *started*: *response*, or *error*."""
        if error is not None:
            outcome, attempts = classify_error(error), error.attempts
        elif response is not None:
            outcome, attempts = response.outcome, response.attempts
        else:
            raise TypeError("finish() needs the response or the error")
        if outcome.kind is Kind.CIRCUIT_OPEN:
            self._stats.incr("circuit_open")
        elif outcome.kind is Kind.INTERRUPTED:
            self._stats.incr("interrupted")
        result = DeliveryResult.from_outcome(webhook.endpoint, webhook.url, outcome, attempts,
                                             time.monotonic() - started, webhook.id)
        return self._record(result, "warning" if outcome.kind in _QUIET_KINDS else "error")

    def refuse(self, endpoint: str, url: str, error: str, delivery_id: Optional[str] = None) -> DeliveryResult:
        """A delivery not sent at all (the worker stopped), counted and logged as one that failed."""
        return self._record(DeliveryResult.failed(endpoint, url, error, delivery_id), "warning")

    def _record(self, result: DeliveryResult, level: str) -> DeliveryResult:
        events.delivery(result.url, "delivered" if result.ok else "failed")
        stats = self._stats
        stats.incr("attempts", result.attempts)
        stats.incr("retried", max(0, result.attempts - 1))
        stats.observe("delivery_seconds", result.duration)
        fields: Dict[str, Any] = dict(delivery_id=result.delivery_id, url=result.url, endpoint=result.endpoint,
                                      status_code=result.status_code, attempts=result.attempts,
                                      duration=round(result.duration, 3))
        if result.ok:
            stats.incr("delivered")
            self.logger.info("webhook {delivery_id} to {url} delivered: status {status_code} after {attempts} "
                             + plural(result.attempts, "attempt"), **fields)
        else:
            stats.incr("failed")
            log = getattr(self.logger, level)
            if result.attempts:
                log("webhook {delivery_id} to {url} not delivered: {error}; given up after {attempts} "
                    + plural(result.attempts, "attempt"), error=result.error, **fields)
            else:
                log("webhook {delivery_id} to {url} not delivered: {error}; nothing was sent", error=result.error,
                    **fields)
        return result


__all__ = ["DirectSender", "STOPPED"]
