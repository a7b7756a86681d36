"""One outbox delivery attempt on the wire: :func:`send_once` POSTs a delivery once and says how it went.

No retries and no redirects: the outbox's schedule (:mod:`syncworkers.outbox.verdict`)
decides what happens next. The request itself (body, headers, signature) is built
by :mod:`syncworkers.delivery`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from .delivery import delivery_headers
from .exceptions import ConfigError, RequestError
from .http import HTTPClient
from .outbox import Delivery
from .outbox.health import ANSWER_BYTES
from .outcome import Outcome, classify_error
from .signing import Signer


@dataclass(frozen=True)
class Sent:
    """One attempt as sent: its outcome, how long it took, and the first bytes of the answer."""

    outcome: Outcome
    duration: float = 0.0  #: seconds, from the request to the end of the answer (or the error)
    body: bytes = b""  #: the answer's first ANSWER_BYTES bytes; empty when no answer was read


def send_once(client: HTTPClient, signer: Optional[Signer], delivery: Delivery, now: float) -> Sent:
    """POST *delivery* once: no retries, no redirects, signed with the timestamp *now*."""
    headers = delivery_headers(delivery.id, delivery.body, signer, delivery.headers, int(now))
    started = time.monotonic()
    try:
        response = client.request("POST", delivery.url, data=delivery.body, headers=headers, retry=False,
                                  allow_redirects=False)
    except (RequestError, ConfigError) as exc:
        return Sent(classify_error(exc), time.monotonic() - started)
    outcome: Outcome = response.outcome  # type: ignore[attr-defined]
    return Sent(outcome, time.monotonic() - started, bytes(response.content[:ANSWER_BYTES]))


__all__ = ["Sent", "send_once"]
