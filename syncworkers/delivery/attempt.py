"""One outbox delivery attempt on the wire: :func:`send_once` POSTs a delivery once and says how it went
(:func:`launch_once` does it without holding a thread, over libcurl's multi interface).

No retries and no redirects: the outbox's schedule (:mod:`syncworkers.delivery.verdict`)
decides what happens next. The request itself (body, headers, signature) is built
by :mod:`syncworkers.delivery.request`.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Mapping, Optional

from . import capture
from .request import delivery_headers
from ..exceptions import ConfigError, RequestError
from ..http.client import HTTPClient
from ..http.limits import HostLimiter, host_key
from ..http.messages import Response
from ..outbox import Delivery
from ..outbox.health import ANSWER_BYTES
from ..http.outcome import Kind, Outcome, classify_error
from ..signing import Signer


@dataclass(frozen=True)
class Sent:
    """One attempt as sent: its outcome, how long it took, and the first bytes of the answer."""

    outcome: Outcome
    duration: float = 0.0  #: seconds, from the request to the end of the answer (or the error)
    body: bytes = b""  #: the answer's first ANSWER_BYTES bytes; empty when no answer was read


def _headers(signer: Optional[Signer], delivery: Delivery, now: float) -> Mapping[str, str]:
    """An attempt's headers, signed at *now*; the trace context enqueue() kept goes as the call's
    ``traceparent`` (the delivery's own headers win), so that each attempt continues that trace."""
    extra = {**delivery.trace_context, **delivery.headers} if delivery.trace_context else delivery.headers
    return delivery_headers(delivery.id, delivery.body, signer, extra, int(now))


def send_once(client: HTTPClient, signer: Optional[Signer], delivery: Delivery, now: float,
              limiter: Optional[HostLimiter] = None) -> Sent:
    """POST *delivery* once: no retries, no redirects, signed with the timestamp *now*.

    A host that already has *limiter*'s limit of attempts on the wire is not waited
    for (that would hold a pool thread): the outcome is SATURATED, nothing sent.
    """
    headers = _headers(signer, delivery, now)
    captured = _captured(delivery, headers)
    if captured is not None:
        return captured
    host = host_key(delivery.url)
    if limiter is not None and not limiter.try_acquire(host):
        return Sent(Outcome(Kind.SATURATED, error=f"{limiter.limit} attempts already in flight to {host}"))
    started = time.monotonic()
    try:
        # The outbox's own limiter holds the slot: the client's (direct sends, broadcasts) is not asked.
        response = client.request("POST", delivery.url, data=delivery.body, headers=headers, retry=False,
                                  allow_redirects=False, limit_host=limiter is None)
    except (RequestError, ConfigError) as exc:
        return Sent(classify_error(exc), time.monotonic() - started)
    finally:
        if limiter is not None:
            limiter.release(host)
    outcome: Outcome = response.outcome
    return Sent(outcome, time.monotonic() - started, bytes(response.content[:ANSWER_BYTES]))


def launch_once(client: HTTPClient, signer: Optional[Signer], delivery: Delivery, now: float,
                limiter: Optional[HostLimiter] = None) -> "Future[Sent]":
    """:func:`send_once` without holding a thread (``client.can_submit``: libcurl's multi interface).

    The same request, outcome and limit; the future ends with the :class:`Sent` on the
    client's I/O thread.
    """
    result: "Future[Sent]" = Future()
    result.set_running_or_notify_cancel()
    headers = _headers(signer, delivery, now)
    captured = _captured(delivery, headers)
    if captured is not None:
        result.set_result(captured)
        return result
    host = host_key(delivery.url)
    if limiter is not None and not limiter.try_acquire(host):
        result.set_result(Sent(Outcome(Kind.SATURATED, error=f"{limiter.limit} attempts already in flight to {host}")))
        return result
    started = time.monotonic()
    try:
        request = client.build("POST", delivery.url, data=delivery.body, headers=headers)
        sending = client.submit(request, url=delivery.url, retry=False, limit_host=limiter is None)
    except (RequestError, ConfigError) as exc:
        if limiter is not None:
            limiter.release(host)
        result.set_result(Sent(classify_error(exc), time.monotonic() - started))
        return result

    def ended(done: "Future[Response]") -> None:
        if limiter is not None:
            limiter.release(host)
        exc = done.exception()
        if exc is None:
            response = done.result()
            result.set_result(Sent(response.outcome, time.monotonic() - started,
                                   bytes(response.content[:ANSWER_BYTES])))
        elif isinstance(exc, (RequestError, ConfigError)):
            result.set_result(Sent(classify_error(exc), time.monotonic() - started))
        else:
            result.set_exception(exc)

    sending.add_done_callback(ended)
    return result


def _captured(delivery: Delivery, headers: Mapping[str, str]) -> Optional[Sent]:
    """A test's capture took the attempt in place of a receiver: delivered. None when no capture is attached."""
    if capture.capturing() and capture.hand(capture.CapturedWebhook(
            delivery.id, delivery.endpoint, delivery.url, delivery.body, dict(headers), enqueued=True)):
        return Sent(Outcome(Kind.SUCCESS))
    return None


__all__ = ["Sent", "launch_once", "send_once"]
