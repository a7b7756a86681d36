"""What an outbox attempt does to its delivery in the store: decided, recorded in batches, then reported.

An attempt that ends hands its outcome to :meth:`OutcomeRecorder.submit` and its thread goes
back to the pool. Outcomes are written as a group commit: the first thread to find no batch
being written writes what is queued, one statement (one transaction) per batch of up to
:data:`BATCH_SIZE`, until nothing is left; the others only queue theirs. A batch is thus
whatever ended while the previous one was being written: an outcome waits for one write at
most before its own, and nothing lingers when the outbox is quiet. Until its outcome is
written a delivery stays claimed (its lease renewed); a process killed meanwhile loses the
outcome, never the delivery: it is attempted again once the lease expires, with the same id,
and its attempt log misses that attempt.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional

from ..exceptions import safe_url
from ..http.outcome import Kind
from ..http.retry import RetryPolicy
from ..outbox import DELIVERED, PENDING, Delivery, OutboxStore
from ..outbox.health import ANSWER_BYTES, DEFAULT_DISABLE_AFTER
from ..outbox.store import Attempt, Settlement
from ..observability.metrics import Metrics
from .attempt import Sent
from .reporting import report
from .verdict import Verdict, decide

#: Outcomes that sent nothing (an open circuit, a saturated host): no entry in the attempt log,
#: no mark against the endpoint.
_NOT_SENT = (Kind.CIRCUIT_OPEN, Kind.SATURATED)

#: Most outcomes written in one statement (one transaction).
BATCH_SIZE = 100


@dataclass(frozen=True)
class _Decided:
    """One attempt's outcome, decided and waiting for the store."""

    delivery: Delivery
    kind: Kind
    verdict: Verdict
    error: Optional[str]  #: what the attempt came to (its outcome's text)
    now: float
    next_at: float
    settlement: Settlement
    abandoned: bool


class OutcomeRecorder:
    """Records each attempt's verdict (:func:`~syncworkers.delivery.verdict.decide` on *policy*) in *outbox*.

    Times are epoch seconds from *clock* (the outbox's). An endpoint that has only
    failed for *disable_after* seconds (None: never), or answered 410, is disabled
    by the store. *settled* ``(ids, failures)`` is called after each batch that
    :meth:`submit` queued is written, or could not be (*failures* counts those not
    :meth:`abandoned <record>`); *abandoned* says whether stop() has handed the
    claims back meanwhile.
    """

    def __init__(self, outbox: OutboxStore, policy: RetryPolicy, *, logger: Any, stats: Metrics,
                 disable_after: Optional[float] = DEFAULT_DISABLE_AFTER,
                 clock: Optional[Callable[[], float]] = None,
                 settled: Optional[Callable[[List[str], int], None]] = None,
                 abandoned: Callable[[], bool] = lambda: False, batch_size: int = BATCH_SIZE) -> None:
        self.outbox = outbox
        self.policy = policy
        self.disable_after = disable_after
        self.logger = logger
        self.batch_size = batch_size
        self._stats = stats
        self._clock = clock or outbox.clock
        self._settled = settled or (lambda ids, failures: None)
        self._abandoned = abandoned
        self._lock = threading.Lock()
        self._queue: Deque[_Decided] = deque()
        self._writing = False  # a thread is writing the queue

    def record(self, delivery: Delivery, sent: Sent, at: float, *, abandoned: bool = False) -> bool:
        """Record the attempt made at *at* now, alone, on this thread; False when the store could not take it
        (logged).

        *abandoned*: stop() handed the claim back already, so a store that refuses
        (closed since) is no error: the delivery is sent again, with the same id.
        """
        return self._write([self._decide(delivery, sent, at, abandoned)]) is None

    def submit(self, delivery: Delivery, sent: Sent, at: float, *, abandoned: bool = False) -> None:
        """Queue the outcome of the attempt made at *at*; written in the next batch, this thread writing it
        unless another is writing already (see the module). *settled* is called for it in every case."""
        try:
            decided = self._decide(delivery, sent, at, abandoned)
        except Exception:  # a bug: the outcome is lost like a failed write (the lease brings the delivery back)
            self.logger.exception("could not decide a webhook outcome", delivery_id=delivery.id)
            self._settled([delivery.id], 1)
            return
        with self._lock:
            self._queue.append(decided)
            if self._writing:
                return
            self._writing = True
        self._write_queued()

    def _write_queued(self) -> None:
        """Write the queue, batch after batch, until it is empty."""
        try:
            while True:
                with self._lock:
                    batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                    if not batch:
                        self._writing = False
                        return
                failures = len(batch)
                try:
                    failures = self._write(batch) or 0
                except Exception:  # a bug: this batch is lost like a failed write, the queue goes on
                    self.logger.exception("recording webhook outcomes raised", deliveries=len(batch))
                finally:
                    self._settled([d.delivery.id for d in batch], failures)
        except BaseException:
            with self._lock:
                self._writing = False
            raise

    def _decide(self, delivery: Delivery, sent: Sent, at: float, abandoned: bool) -> _Decided:
        now = self._clock()
        outcome = sent.outcome
        verdict = decide(delivery, outcome, now, self.policy)
        status = outcome.status_code
        log = None if outcome.kind in _NOT_SENT else Attempt(
            at=at, duration=sent.duration, kind=outcome.kind.value, status=status, error=outcome.error,
            body=sent.body[:ANSWER_BYTES])
        next_at = now if verdict.next_attempt_at is None else verdict.next_attempt_at
        if verdict.state == DELIVERED:
            settlement = Settlement(delivery.id, DELIVERED, status, attempt=log, now=now)
        elif verdict.state == PENDING:
            settlement = Settlement(delivery.id, PENDING, status, verdict.reason, next_at, verdict.spend, log, now)
        else:
            settlement = Settlement(delivery.id, verdict.state, status, verdict.reason or outcome.error or "dead",
                                    attempt=log, now=now)
        return _Decided(delivery, outcome.kind, verdict, outcome.error, now, next_at, settlement, abandoned)

    def _write(self, batch: List[_Decided]) -> Optional[int]:
        """Write *batch* in one go and report each outcome: None; or, when the store cannot take it (logged),
        how many of its outcomes count as failures (those after stop() do not)."""
        outbox = self.outbox
        try:
            unknown = set(outbox.settle([d.settlement for d in batch], disable_after=self.disable_after))
        except outbox.errors as exc:
            return self._failed(batch, exc)
        for d in batch:
            if d.delivery.id in unknown:
                self.logger.warning("webhook {delivery_id} to {url}: its outcome (status {status_code}) was not "
                                    "recorded: the delivery is no longer in the outbox", delivery_id=d.delivery.id,
                                    url=safe_url(d.delivery.url), status_code=d.settlement.status)
                continue
            report(d.delivery, d.kind, d.settlement.status, d.verdict, d.now, d.next_at, self.logger, self._stats,
                   error=d.error, max_attempts=self.policy.max_attempts)
        return None

    def _failed(self, batch: List[_Decided], exc: BaseException) -> int:
        """Log a batch the store could not take; how many of its outcomes count as failures."""
        stopped = self._abandoned()
        error = f"{type(exc).__name__}: {exc}"
        for d in batch:
            if d.abandoned or stopped:
                # stop() timed out and handed the claim back; close() may have closed the outbox since.
                self.logger.warning("webhook {delivery_id}: its outcome (status {status_code}) was not recorded "
                                    "after stop(): {error}; it stays pending and is sent again (same webhook-id)",
                                    delivery_id=d.delivery.id, status_code=d.settlement.status, error=str(exc))
        failed = [d for d in batch if not (d.abandoned or stopped)]
        where = self.outbox.path or "(in memory)"
        if len(failed) == 1:
            self.logger.exception("webhook {delivery_id}: its outcome (status {status_code}) could not be recorded "
                                  "in the outbox {outbox}: {error}; it is sent again when its lease expires",
                                  delivery_id=failed[0].delivery.id, status_code=failed[0].settlement.status,
                                  outbox=where, error=error, exc_info=exc)
        elif failed:
            self.logger.exception("the outcomes of {count} webhooks {delivery_ids} could not be recorded in the "
                                  "outbox {outbox}: {error}; each is sent again when its lease expires",
                                  count=len(failed), delivery_ids=[d.delivery.id for d in failed], outbox=where,
                                  error=error, exc_info=exc)
        return len(failed)


__all__ = ["BATCH_SIZE", "OutcomeRecorder"]
