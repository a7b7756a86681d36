"""One outbox delivery attempt on the wire: :func:`send_once` POSTs a delivery once and says how it went.

No retries and no redirects: the outbox's schedule (:mod:`syncworkers.delivery.verdict`)
decides what happens next. The request itself (body, headers, signature) is built
by :mod:`syncworkers.delivery.request`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from .request import delivery_headers
from ..exceptions import ConfigError, RequestError
from ..http.client import HTTPClient
from ..http.limits import HostLimiter, host_key
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


def send_once(client: HTTPClient, signer: Optional[Signer], delivery: Delivery, now: float,
              limiter: Optional[HostLimiter] = None) -> Sent:
    """POST *delivery* once: no retries, no redirects, signed with the timestamp *now*.

    A host that already has *limiter*'s limit of attempts on the wire is not waited
    for (that would hold a pool thread): the outcome is SATURATED, nothing sent.
    """
    host = host_key(delivery.url)
    if limiter is not None and not limiter.try_acquire(host):
        return Sent(Outcome(Kind.SATURATED, error=f"{limiter.limit} attempts already in flight to {host}"))
    # The trace context enqueue() kept goes as the call's traceparent: each attempt continues that trace.
    extra = {**delivery.trace_context, **delivery.headers} if delivery.trace_context else delivery.headers
    headers = delivery_headers(delivery.id, delivery.body, signer, extra, int(now))
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
    outcome: Outcome = response.outcome  # type: ignore[attr-defined]
    return Sent(outcome, time.monotonic() - started, bytes(response.content[:ANSWER_BYTES]))


__all__ = ["Sent", "send_once"]
