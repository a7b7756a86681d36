"""Where a capture of webhooks (:func:`syncworkers.testing.capture_webhooks`) takes the place of the wire.

Every way a webhook leaves a sender passes here: a direct send or a broadcast
(:class:`~syncworkers.delivery.direct.DirectSender`), an outbox attempt
(:func:`~syncworkers.delivery.attempt.send_once`), and ``enqueue()``
(:class:`~syncworkers.delivery.producer.OutboxProducer`), which also says in which
outbox the delivery was stored. While a capture is attached, :func:`hand` gives it
the webhook and the sender sends nothing; with none attached, it returns False and
the sender goes on as ever. Captures are process-wide: a webhook sent from any
thread reaches every capture attached at that moment.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional, Protocol, Tuple

from ..observability.redaction import safe_url

if TYPE_CHECKING:
    from ..outbox.store import OutboxStore


@dataclass(frozen=True)
class CapturedWebhook:
    """One webhook as it would have gone on the wire. ``repr()`` shows neither payload nor headers."""

    id: str  #: its ``webhook-id``
    endpoint: str  #: as the sender was given it (credentials and query string masked)
    url: str  #: where it would have gone
    body: bytes = field(repr=False)  #: the JSON body
    headers: Dict[str, str] = field(repr=False)  #: every header of the request, signature included
    enqueued: bool = False  #: True for a delivery of the outbox (enqueued, or claimed from it)

    @property
    def payload(self) -> Any:
        """The body decoded: the data given to ``send_webhook``, ``broadcast_webhook`` or ``enqueue``."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        return (f"CapturedWebhook(id={self.id!r}, endpoint={self.endpoint!r}, url={safe_url(self.url)!r}, "
                f"enqueued={self.enqueued})")


class Capture(Protocol):
    """What :func:`attach` takes: called on the sending thread, so keep it quick."""

    def take(self, webhook: CapturedWebhook, outbox: Optional["OutboxStore"]) -> None:
        """Record *webhook*; *outbox* is the store ``enqueue()`` wrote it to (None: sent, or claimed)."""


_lock = threading.Lock()
_captures: Tuple[Capture, ...] = ()  # replaced, never mutated: senders read it without the lock


def attach(capture: Capture) -> None:
    """Hand every later webhook to *capture* instead of the wire, until :func:`detach`."""
    global _captures
    with _lock:
        if capture not in _captures:
            _captures = _captures + (capture,)


def detach(capture: Capture) -> None:
    """Stop handing webhooks to *capture*; once no capture is attached, webhooks are sent again."""
    global _captures
    with _lock:
        _captures = tuple(c for c in _captures if c is not capture)


def capturing() -> bool:
    """Whether a capture is attached: when not, a sender builds nothing for :func:`hand`."""
    return bool(_captures)


def hand(webhook: CapturedWebhook, outbox: Optional["OutboxStore"] = None) -> bool:
    """Give *webhook* to every attached capture: True when one took it (then send nothing), else False."""
    captures = _captures
    for capture in captures:
        capture.take(webhook, outbox)
    return bool(captures)


__all__ = ["Capture", "CapturedWebhook", "attach", "capturing", "detach", "hand"]
