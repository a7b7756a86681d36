"""What an outbox delivery attempt does to its delivery: a pure function of the delivery, the outcome and ``now``.

:func:`decide` is the outbox's schedule: delivered, tried again later (spending an
attempt or not), or dead. It does no I/O; the dispatcher (:mod:`syncworkers.delivery.dispatch`)
records the :class:`Verdict` in the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..http.outcome import Outcome
from ..http.retry import RetryPolicy
from ..outbox.store import DEAD, DELIVERED, PENDING, Delivery


@dataclass(frozen=True)
class Verdict:
    """What an attempt does to its delivery."""

    state: str  #: DELIVERED, PENDING (tried again at ``next_attempt_at``) or DEAD
    next_attempt_at: Optional[float] = None
    spend: bool = True  #: whether the attempt counts against the schedule
    reason: Optional[str] = None  #: kept as the delivery's last error


def decide(delivery: Delivery, outcome: Outcome, now: float, policy: RetryPolicy) -> Verdict:
    """The next state of *delivery* after an attempt ended in *outcome*, at *now* (epoch seconds).

    The outbox's :class:`~syncworkers.http.retry.RetryPolicy` (``persistent``) decides:
    2xx delivered; 410 and refusing 4xx dead at once; anything else spends an attempt
    on the schedule until it is exhausted; an open circuit or a 429/503 Retry-After
    postpones without spending while the delivery is young.
    """
    if outcome.ok:
        return Verdict(DELIVERED)
    decision = policy.next(outcome, delivery.attempts + 1, age=now - delivery.created_at)
    if decision.wait is None:
        return Verdict(DEAD, reason=decision.reason)
    return Verdict(PENDING, now + decision.wait, spend=decision.spend, reason=decision.reason)


__all__ = ["Verdict", "decide"]
