"""What a webhook's outcome says to the operator: the metrics, the event, the log line; the counts of health()."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..observability import events
from ..exceptions import safe_url
from ..observability.logging import plural
from ..observability.metrics import Metrics
from ..http.outcome import Kind
from ..outbox.store import DEAD, DELIVERED, Delivery
from .verdict import Verdict


def report(delivery: Delivery, kind: Kind, status: Optional[int], verdict: Verdict, now: float, next_at: float,
           logger: Any, stats: Metrics, *, error: Optional[str] = None, max_attempts: Optional[int] = None) -> None:
    """Count and log what *verdict* did to *delivery* after an attempt of *kind* (recorded already).

    *error* is what the attempt came to (its outcome's text), *max_attempts* the schedule's
    total: each line says what happened and what happens next, on its own.
    """
    events.delivery(delivery.url, verdict.state)  # delivered or dead; a retry is no outcome yet
    made = delivery.attempts + int(verdict.spend)
    fields: Dict[str, Any] = dict(delivery_id=delivery.id, endpoint=delivery.endpoint, url=safe_url(delivery.url),
                                  status_code=status)
    if kind is Kind.CIRCUIT_OPEN:
        stats.incr("outbox_circuit_open")
    elif kind is not Kind.SATURATED:
        stats.incr("outbox_attempts")
    if verdict.state == DELIVERED:
        stats.incr("outbox_delivered")
        logger.info("webhook {delivery_id} to {url} delivered: status {status_code} on attempt {attempts} of "
                    "{max_attempts}", attempts=made, max_attempts=max_attempts, **fields)
    elif verdict.state == DEAD:
        stats.incr("outbox_dead")
        why = _FINAL.get(kind, "")
        logger.error("webhook {delivery_id} to {url} failed: {error}; dead after {attempts} " + plural(made, "attempt")
                     + why, error=error or verdict.reason, attempts=made, **fields)
    elif verdict.spend:
        stats.incr("outbox_retried")
        logger.warning("webhook {delivery_id} to {url} failed: {error}; retry in {retry_in}s (attempt "
                       "{next_attempt} of {max_attempts})", error=verdict.reason, retry_in=round(next_at - now, 3),
                       next_attempt=made + 1, max_attempts=max_attempts, **fields)
    else:
        stats.incr("outbox_postponed")
        # A saturated host postpones every half second until a slot frees: not worth an INFO line each time.
        postponed = logger.debug if kind is Kind.SATURATED else logger.info
        verb = "not sent" if kind in (Kind.CIRCUIT_OPEN, Kind.SATURATED) else "failed"
        postponed("webhook {delivery_id} to {url} " + verb + ": {error}; retry in {retry_in}s (attempt "
                  "{next_attempt} of {max_attempts}: this one not counted)", error=verdict.reason,
                  retry_in=round(next_at - now, 3), next_attempt=made + 1, max_attempts=max_attempts, **fields)


#: Why a delivery died before its schedule ran out, by the kind of its last attempt.
_FINAL = {Kind.REFUSED: " (refused: not retried)", Kind.GONE: " (gone: the receiver asks never to be sent it again)",
          Kind.INVALID: " (it can never be sent)"}


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
