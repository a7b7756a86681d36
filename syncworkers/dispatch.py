"""The outbox delivery engine: due deliveries are claimed and sent on a worker's pool.

An attempt is one request (no in-call retries: the outbox's schedule replaces
them), signed with a fresh timestamp and the delivery's id as ``webhook-id``.
:func:`decide` turns an attempt into the delivery's next state, a pure function
of the delivery, the attempt and ``now``. :class:`Dispatcher` is the loop:
claim up to the pool's free slots, send them concurrently, record each outcome,
renew the leases of requests still on the wire, and sleep until the next
delivery is due or :meth:`Dispatcher.wakeup` is called.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

from .config import DEFAULT_RETRY_AFTER_MAX
from .exceptions import CircuitOpenError, ConfigError, RequestError, ResponseTooLarge, safe_url
from .http import HTTPClient, merge_headers
from .logging import get_logger
from .metrics import Metrics
from .outbox import DEAD, DELIVERED, PENDING, Delivery, Outbox, next_delay
from .retry import parse_retry_after
from .signing import Signer, webhook_headers

#: Longest sleep of an idle loop before it looks at the outbox again: the wait for a
#: delivery added by another process on the same file (this process's wakes it at once).
POLL_INTERVAL = 1.0
#: Seconds between looks at the stop event while the loop sleeps.
STOP_POLL_INTERVAL = 0.1
#: Seconds past the schedule's total span during which Retry-After and an open circuit
#: postpone a delivery without spending an attempt (see :func:`decide`).
POSTPONE_SLACK = 3600.0
#: 4xx statuses worth another attempt (timeout, too early, throttled); any other 4xx is final.
RETRYABLE_4XX = (408, 425, 429)
#: Statuses whose ``Retry-After`` postpones the next attempt instead of spending one.
RETRY_AFTER_STATUSES = (429, 503)


@dataclass(frozen=True)
class Attempt:
    """What one request of a delivery came to (texts carry no header values)."""

    status: Optional[int] = None  #: the answer's status; None when no answer came
    error: Optional[str] = None  #: why it failed; None for a 2xx
    retry_after: Optional[float] = None  #: seconds the answer's Retry-After asked for, uncapped
    circuit_remaining: Optional[float] = None  #: set when the open circuit refused it (nothing sent)
    final: bool = False  #: never worth another attempt (e.g. a stored URL that is invalid)

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class Verdict:
    """What an attempt does to its delivery."""

    state: str  #: DELIVERED, PENDING (tried again at ``next_attempt_at``) or DEAD
    next_attempt_at: Optional[float] = None
    spend: bool = True  #: whether the attempt counts against the schedule
    reason: Optional[str] = None  #: kept as the delivery's last error


def decide(delivery: Delivery, attempt: Attempt, now: float, schedule: Sequence[float], *,
           retry_after_max: float = DEFAULT_RETRY_AFTER_MAX, slack: float = POSTPONE_SLACK) -> Verdict:
    """The next state of *delivery* after *attempt*, at *now* (epoch seconds).

    * 2xx: delivered.
    * 410 Gone, any other 4xx but 408/425/429, or a ``final`` attempt: dead at once.
    * Anything else (3xx, 408/425/429, 5xx, transport errors, timeouts, a body too
      large) spends an attempt: the next one comes after the schedule's next delay,
      and once the schedule is exhausted the delivery is dead.
    * An open circuit (nothing was sent) and a 429/503 ``Retry-After`` postpone the
      next attempt instead, without spending one: by the circuit's remaining time or
      the Retry-After (capped at *retry_after_max*), and at least the schedule's first
      delay. Only while the delivery is younger than the schedule's total span plus
      *slack*: after that they spend attempts too, so nothing is postponed forever.
    """
    if attempt.ok:
        return Verdict(DELIVERED)
    status = attempt.status
    error = attempt.error or f"status {status}"
    if attempt.final:
        return Verdict(DEAD, reason=f"final: {error}")
    if status == 410:
        return Verdict(DEAD, reason=f"gone: {error}")
    if status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX:
        return Verdict(DEAD, reason=f"refused: {error}")
    floor = max(float(schedule[0]), 0.01) if schedule else 1.0
    wait: Optional[float] = None
    if attempt.circuit_remaining is not None:
        wait = max(attempt.circuit_remaining, floor)
    elif status in RETRY_AFTER_STATUSES and attempt.retry_after is not None:
        wait = min(max(attempt.retry_after, floor), retry_after_max)
    if wait is not None and now < delivery.created_at + sum(schedule) + slack:
        return Verdict(PENDING, now + wait, spend=False, reason=error)
    made = delivery.attempts + 1
    delay = next_delay(schedule, made)
    if delay is None:
        return Verdict(DEAD, reason=f"exhausted after {made} attempt{'s' if made > 1 else ''}: {error}")
    return Verdict(PENDING, now + max(delay, wait or 0.0), reason=error)


def send_once(client: HTTPClient, signer: Optional[Signer], delivery: Delivery, now: float) -> Attempt:
    """POST *delivery* once: no retries, no redirects, signed with the timestamp *now*."""
    headers = merge_headers({"Content-Type": "application/json"}, delivery.headers,
                            webhook_headers(delivery.id, delivery.body, signer, int(now)))
    try:
        response = client.request("POST", delivery.url, data=delivery.body, headers=headers, retry=False,
                                  allow_redirects=False)
    except CircuitOpenError as exc:
        return Attempt(error=str(exc), circuit_remaining=exc.remaining)
    except ResponseTooLarge as exc:
        if exc.status is not None and 200 <= exc.status < 300:
            return Attempt(status=exc.status)  # accepted; only the answer was oversized
        return Attempt(status=exc.status, error=str(exc))
    except RequestError as exc:
        return Attempt(status=exc.status, error=str(exc))
    except ConfigError as exc:
        return Attempt(error=f"invalid delivery: {exc}", final=True)
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(status=status)
    error = f"status {status} {response.reason}"
    if 300 <= status < 400:
        error += ": redirects are not followed"
    retry_after = parse_retry_after(response.headers.get("Retry-After"), cap=math.inf)
    return Attempt(status=status, error=error, retry_after=retry_after)


def _remaining(deadline: Optional[float]) -> float:
    return math.inf if deadline is None else max(0.0, deadline - time.monotonic())


class Dispatcher:
    """Delivers an outbox's due deliveries concurrently, each on its schedule.

    *send* ``(delivery, now) -> Attempt`` makes one attempt (:func:`send_once`);
    *submit* runs a call on the worker's pool and returns its Future; *free_slots*
    says how many more calls the pool can take now. One loop drives at a time:
    the worker's (:meth:`run`) or a caller's (:meth:`flush`). Times are epoch
    seconds from the outbox's clock.
    """

    #: See :data:`POLL_INTERVAL`.
    poll_interval: float = POLL_INTERVAL

    def __init__(self, outbox: Outbox, send: Callable[[Delivery, float], Attempt],
                 submit: Callable[..., Future], free_slots: Callable[[], int], schedule: Sequence[float], *,
                 retry_after_max: float = DEFAULT_RETRY_AFTER_MAX, slack: float = POSTPONE_SLACK,
                 logger: Any = None, stats: Optional[Metrics] = None) -> None:
        self.outbox = outbox
        self.schedule = tuple(float(d) for d in schedule)
        self.retry_after_max = retry_after_max
        self.slack = slack
        self.logger = logger or get_logger(__name__)
        self._send = send
        self._submit = submit
        self._free_slots = free_slots
        self._clock = outbox.clock
        self._stats = stats or Metrics()
        self._lock = threading.Lock()
        self._in_flight: Dict[str, Delivery] = {}  # claimed here, request not yet recorded
        self._wake = threading.Event()
        self._driver = threading.Lock()  # held by the one loop that claims
        self._progress = threading.Condition()
        self._outcomes = 0  # moves at every recorded outcome; flush() waits on it
        self._abandoned = threading.Event()
        self._loops = 0

    # -- public --------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Deliveries this process is sending now."""
        with self._lock:
            return len(self._in_flight)

    @property
    def looping(self) -> bool:
        """True while a worker loop (:meth:`run`) is alive."""
        with self._lock:
            return self._loops > 0

    def wakeup(self) -> None:
        """Make the loop look at the outbox now (something was added)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """The worker's loop: deliver until *stop* is set, then drain what is in flight.

        Draining keeps renewing the leases of the requests still on the wire and
        ends when each has recorded its outcome, or at :meth:`abandon`.
        """
        with self._lock:
            self._loops += 1
        try:
            while not self._driver.acquire(timeout=STOP_POLL_INTERVAL):
                if stop.is_set():
                    return
            try:
                self._abandoned.clear()
                self._loop(stop, None, until_idle=False)
                self._drain()
            finally:
                self._driver.release()
        finally:
            with self._lock:
                self._loops -= 1

    def flush(self, timeout: Optional[float], stop: threading.Event) -> bool:
        """Block until the outbox has nothing pending: True, or False at *timeout* or *stop*.

        While a worker loop drives, this waits for it; otherwise it drives the
        deliveries itself from this thread on the pool.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if self._driver.acquire(blocking=False):
                try:
                    return self._loop(stop, deadline, until_idle=True)
                finally:
                    self._driver.release()
            with self._progress:
                seen = self._outcomes
            if self.outbox.next_due() is None:
                return True
            left = _remaining(deadline)
            if left == 0 or stop.is_set():
                return False
            with self._progress:
                self._progress.wait_for(lambda: self._outcomes != seen, min(left, self.poll_interval))

    def abandon(self) -> int:
        """Hand this process's unfinished claims back (pending, attempts unchanged); end the drain.

        A request still on the wire records its outcome when it ends all the same
        if it was delivered; anything else is the next claimant's to retry.
        """
        self._abandoned.set()
        self._wake.set()
        with self._lock:
            ids = list(self._in_flight)
        if not ids:
            return 0
        try:
            return self.outbox.release(ids)
        except (ValueError, sqlite3.Error):  # closed or locked: their leases expire instead
            self.logger.exception("could not hand back in-flight deliveries; their leases will expire",
                                  in_flight=len(ids))
            return 0

    def health(self) -> Dict[str, Any]:
        """Path, durability, deliveries in flight here, and the outbox's counts when readable."""
        data: Dict[str, Any] = {"path": self.outbox.path, "durable": self.outbox.durable,
                                "in_flight_here": self.in_flight}
        try:
            data["counts"] = self.outbox.counts()
        except (ValueError, sqlite3.Error):
            data["counts"] = None
        return data

    # -- the loop ------------------------------------------------------------------

    def _loop(self, stop: threading.Event, deadline: Optional[float], until_idle: bool) -> bool:
        """Claim and send until *stop* or *deadline*; with *until_idle*, return True once nothing is pending."""
        renew_every = self.outbox.lease_seconds / 3
        next_renew = time.monotonic() + renew_every
        while not stop.is_set():
            self._wake.clear()  # before looking: a wakeup from now on is not lost
            claimed = self._dispatch_due()
            now = time.monotonic()
            if now >= next_renew:
                self._renew()
                next_renew = now + renew_every
            if until_idle and not claimed and not self.in_flight and self.outbox.next_due() is None:
                return True
            left = _remaining(deadline)
            if left == 0:
                return False
            renew_in = next_renew - now if self.in_flight else math.inf
            self._sleep(stop, min(self._until_due(), renew_in, left))
        return False

    def _dispatch_due(self) -> int:
        free = self._free_slots()
        if free <= 0:
            return 0
        started = 0
        for delivery in self.outbox.claim_due(free):
            with self._lock:
                if delivery.id in self._in_flight:
                    continue  # its lease lapsed while its request is still on the wire here: not twice
                self._in_flight[delivery.id] = delivery
            try:
                future = self._submit(self._attempt, delivery)
            except RuntimeError:  # the pool is shut down: hand the claim back
                with self._lock:
                    self._in_flight.pop(delivery.id, None)
                self.outbox.release([delivery.id])
                continue
            # Added after the worker's own callback, which frees the pool slot first.
            future.add_done_callback(self._done)
            started += 1
        return started

    def _until_due(self) -> float:
        if self._free_slots() <= 0:
            return self.poll_interval  # a finished delivery wakes the loop
        due = self.outbox.next_due()
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, due - self._clock()))

    def _sleep(self, stop: threading.Event, seconds: float) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while not stop.is_set():
            left = end - time.monotonic()
            if left <= 0 or self._wake.wait(min(left, STOP_POLL_INTERVAL)):
                return

    def _drain(self) -> None:
        renew_every = self.outbox.lease_seconds / 3
        next_renew = time.monotonic() + renew_every
        while not self._abandoned.is_set():
            self._wake.clear()
            if not self.in_flight:
                return
            now = time.monotonic()
            if now >= next_renew:
                self._renew()
                next_renew = now + renew_every
            self._wake.wait(max(0.0, next_renew - now))

    def _renew(self) -> None:
        with self._lock:
            ids = list(self._in_flight)
        if not ids:
            return
        try:
            self.outbox.renew(ids)
        except (ValueError, sqlite3.Error):
            self.logger.exception("could not renew the leases of in-flight deliveries", in_flight=len(ids))

    def _done(self, future: Future) -> None:
        with self._progress:
            self._outcomes += 1
            self._progress.notify_all()
        self._wake.set()

    # -- one attempt (on the pool) -------------------------------------------------------

    def _attempt(self, delivery: Delivery) -> None:
        try:
            try:
                attempt = self._send(delivery, self._clock())
            except Exception as exc:  # a bug, not the receiver: spend an attempt, keep the delivery
                self.logger.exception("webhook attempt raised", delivery_id=delivery.id)
                attempt = Attempt(error=f"unexpected error: {type(exc).__name__}")
            self._record(delivery, attempt)
        finally:
            with self._lock:
                self._in_flight.pop(delivery.id, None)

    def _record(self, delivery: Delivery, attempt: Attempt) -> None:
        now = self._clock()
        verdict = decide(delivery, attempt, now, self.schedule, retry_after_max=self.retry_after_max,
                         slack=self.slack)
        outbox, id, status = self.outbox, delivery.id, attempt.status
        try:
            if verdict.state == DELIVERED:
                outbox.mark_delivered(id, status, now=now)
            elif verdict.state == PENDING:
                outbox.mark_retry(id, verdict.next_attempt_at, verdict.reason, status,
                                  spend_attempt=verdict.spend, now=now)
            else:
                outbox.mark_dead(id, verdict.reason, status, now=now)
        except (ValueError, sqlite3.Error) as exc:
            if self._abandoned.is_set():
                # stop() timed out and handed the claim back; close() may have closed the outbox since.
                self.logger.warning("webhook outcome not recorded after stop(): the delivery stays pending "
                                    "and will be sent again (same webhook-id)", delivery_id=id, status=status,
                                    error=str(exc))
            else:
                self.logger.exception("could not record a webhook outcome; it will be retried when its lease "
                                      "expires", delivery_id=id)
            return
        attempts = delivery.attempts + int(verdict.spend)
        fields = dict(delivery_id=id, endpoint=delivery.endpoint, url=safe_url(delivery.url), status=status,
                      attempts=attempts)
        stats = self._stats
        if attempt.circuit_remaining is None:
            stats.incr("outbox_attempts")
        else:
            stats.incr("outbox_circuit_open")
        if verdict.state == DELIVERED:
            stats.incr("outbox_delivered")
            self.logger.info("webhook delivered", **fields)
        elif verdict.state == DEAD:
            stats.incr("outbox_dead")
            self.logger.error("webhook dead", reason=verdict.reason, **fields)
        elif verdict.spend:
            stats.incr("outbox_retried")
            self.logger.warning("webhook attempt failed; retry scheduled", error=verdict.reason,
                                retry_in=round(verdict.next_attempt_at - now, 3), **fields)
        else:
            stats.incr("outbox_postponed")
            self.logger.info("webhook postponed", error=verdict.reason,
                             retry_in=round(verdict.next_attempt_at - now, 3), **fields)


__all__ = [
    "Attempt",
    "Dispatcher",
    "POLL_INTERVAL",
    "POSTPONE_SLACK",
    "RETRYABLE_4XX",
    "RETRY_AFTER_STATUSES",
    "Verdict",
    "decide",
    "send_once",
]
