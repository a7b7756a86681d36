"""What a webhook's outcome says to the operator: the metrics, the event, the log line; the counts of health()."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..observability import events
from ..exceptions import safe_url
from ..observability.metrics import Metrics
from ..http.outcome import Kind
from ..outbox.store import DEAD, DELIVERED, Delivery
from .verdict import Verdict


def report(delivery: Delivery, kind: Kind, status: Optional[int], verdict: Verdict, now: float, next_at: float,
           logger: Any, stats: Metrics) -> None:
    """Count and log what *verdict* did to *delivery* after an attempt of *kind* (recorded already)."""
    events.delivery(delivery.url, verdict.state)  # delivered or dead; a retry is no outcome yet
    fields: Dict[str, Any] = dict(delivery_id=delivery.id, endpoint=delivery.endpoint, url=safe_url(delivery.url),
                                  status=status, attempts=delivery.attempts + int(verdict.spend))
    if kind is Kind.CIRCUIT_OPEN:
        stats.incr("outbox_circuit_open")
    elif kind is not Kind.SATURATED:
        stats.incr("outbox_attempts")
    if verdict.state == DELIVERED:
        stats.incr("outbox_delivered")
        logger.info("webhook delivered", **fields)
    elif verdict.state == DEAD:
        stats.incr("outbox_dead")
        logger.error("webhook dead", reason=verdict.reason, **fields)
    elif verdict.spend:
        stats.incr("outbox_retried")
        logger.warning("webhook attempt failed; retry scheduled", error=verdict.reason,
                       retry_in=round(next_at - now, 3), **fields)
    else:
        stats.incr("outbox_postponed")
        # A saturated host postpones every half second until a slot frees: not worth an INFO line each time.
        postponed = logger.debug if kind is Kind.SATURATED else logger.info
        postponed("webhook postponed", error=verdict.reason, retry_in=round(next_at - now, 3), **fields)


def delivery_counts(stats: Metrics) -> Dict[str, float]:
    """A sender's ``health()["deliveries"]``: one count per fact, whichever way the webhook went
    (direct, broadcast or outbox)."""
    count = stats.get
    return {
        "delivered": count("delivered") + count("outbox_delivered"),
        "failed": count("failed"),
        "dead": count("outbox_dead"),
        "attempts": count("attempts") + count("outbox_attempts"),
        "retried": count("retried") + count("outbox_retried"),
        "postponed": count("outbox_postponed"),
        "circuit_open": count("circuit_open") + count("outbox_circuit_open"),
        "interrupted": count("interrupted"),
        "broadcasts": count("broadcasts"),
        "broadcasts_cancelled": count("broadcasts_cancelled"),
    }


__all__ = ["delivery_counts", "report"]
