"""What an outbox attempt does to its delivery in the store: decided, recorded, then reported."""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..http.outcome import Kind
from ..http.retry import RetryPolicy
from ..outbox import DELIVERED, PENDING, Delivery, OutboxStore
from ..outbox.health import ANSWER_BYTES, DEFAULT_DISABLE_AFTER
from ..outbox.store import Attempt
from ..observability.metrics import Metrics
from .attempt import Sent
from .reporting import report
from .verdict import decide

#: Outcomes that sent nothing (an open circuit, a saturated host): no entry in the attempt log,
#: no mark against the endpoint.
_NOT_SENT = (Kind.CIRCUIT_OPEN, Kind.SATURATED)


class OutcomeRecorder:
    """Records each attempt's verdict (:func:`~syncworkers.delivery.verdict.decide` on *policy*) in *outbox*.

    Times are epoch seconds from *clock* (the outbox's). An endpoint that has only
    failed for *disable_after* seconds (None: never), or answered 410, is disabled
    by the store.
    """

    def __init__(self, outbox: OutboxStore, policy: RetryPolicy, *, logger: Any, stats: Metrics,
                 disable_after: Optional[float] = DEFAULT_DISABLE_AFTER,
                 clock: Optional[Callable[[], float]] = None) -> None:
        self.outbox = outbox
        self.policy = policy
        self.disable_after = disable_after
        self.logger = logger
        self._stats = stats
        self._clock = clock or outbox.clock

    def record(self, delivery: Delivery, sent: Sent, at: float, *, abandoned: bool = False) -> bool:
        """Record the attempt made at *at*; False when the store could not take it (logged).

        *abandoned*: stop() handed the claim back already, so a store that refuses
        (closed since) is no error: the delivery is sent again, with the same id.
        """
        now = self._clock()
        attempt = sent.outcome
        verdict = decide(delivery, attempt, now, self.policy)
        outbox, id, status = self.outbox, delivery.id, attempt.status_code
        log = None if attempt.kind in _NOT_SENT else Attempt(
            at=at, duration=sent.duration, kind=attempt.kind.value, status=status, error=attempt.error,
            body=sent.body[:ANSWER_BYTES])
        disable_after = self.disable_after
        next_at = now if verdict.next_attempt_at is None else verdict.next_attempt_at
        try:
            if verdict.state == DELIVERED:
                outbox.mark_delivered(id, status, now=now, attempt=log, disable_after=disable_after)
            elif verdict.state == PENDING:
                outbox.mark_retry(id, next_at, verdict.reason, status,
                                  spend_attempt=verdict.spend, now=now, attempt=log, disable_after=disable_after)
            else:
                outbox.mark_dead(id, verdict.reason or attempt.error or "dead", status, now=now, attempt=log,
                                 disable_after=disable_after)
        except outbox.errors as exc:
            if abandoned:
                # stop() timed out and handed the claim back; close() may have closed the outbox since.
                self.logger.warning("webhook {delivery_id}: its outcome (status {status_code}) was not recorded "
                                    "after stop(): {error}; it stays pending and is sent again (same webhook-id)",
                                    delivery_id=id, status_code=status, error=str(exc))
            else:
                self.logger.exception("webhook {delivery_id}: its outcome (status {status_code}) could not be "
                                      "recorded in the outbox {outbox}: {error}; it is sent again when its lease "
                                      "expires", delivery_id=id, status_code=status, outbox=self.outbox.path or
                                      "(in memory)", error=f"{type(exc).__name__}: {exc}")
            return False
        report(delivery, attempt.kind, status, verdict, now, next_at, self.logger, self._stats, error=attempt.error,
               max_attempts=self.policy.max_attempts)
        return True


__all__ = ["OutcomeRecorder"]
