"""The outbox delivery loop: due deliveries are claimed and sent on a worker's pool.

An attempt is one request (no in-call retries: the outbox's schedule replaces
them), signed with a fresh timestamp and the delivery's id as ``webhook-id``.
:class:`Dispatcher` is the loop: claim up to the pool's free slots, send them
concurrently, keep the leases of requests still on the wire (:class:`~syncworkers.delivery.claims.Claims`),
and sleep until the next delivery is due or :meth:`Dispatcher.wakeup` is called.
Each outcome is decided and recorded by :class:`~syncworkers.delivery.recorder.OutcomeRecorder`
(the delivery's attempt log and its endpoint's health: see :mod:`syncworkers.outbox.health`).
A store that fails (a database restarting, a full disk) is logged and looked at
again by the loop; :meth:`Dispatcher.flush` returns False.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Union

from .attempt import Sent, send_once
from ..exceptions import safe_url
from ..observability.logging import get_logger, plural
from ..observability.metrics import Metrics
from ..outbox import Delivery, OutboxStore
from ..outbox.health import DEFAULT_DISABLE_AFTER
from .claims import Claims
from .recorder import OutcomeRecorder
from .verdict import Verdict, decide
from ..http.outcome import Outcome, classify_error
from ..http.retry import RetryPolicy
from ..signals import Deadline, StopSignal

#: Longest sleep of an idle loop before it looks at the outbox again: the safety net behind
#: the store's notifications (``subscribe``), which wake it at once for a new delivery.
POLL_INTERVAL = 1.0


class Dispatcher:
    """Delivers an outbox's due deliveries concurrently, each on its schedule.

    *send* ``(delivery, now) -> Sent`` (or a bare Outcome) makes one attempt
    (:func:`send_once`); *submit* runs a call on the worker's pool and returns its
    Future; *free_slots* says how many more calls the pool can take now. One loop
    drives at a time: the worker's (:meth:`run`) or a caller's (:meth:`flush`).
    Times are epoch seconds from the outbox's clock. An endpoint that has only
    failed for *disable_after* seconds (None: never), or answered 410, is disabled.
    """

    #: See :data:`POLL_INTERVAL`.
    poll_interval: float = POLL_INTERVAL

    def __init__(self, outbox: OutboxStore, send: Callable[[Delivery, float], Union[Sent, Outcome]],
                 submit: Callable[..., "Future[None]"], free_slots: Callable[[], int], policy: RetryPolicy, *,
                 logger: Any = None, stats: Optional[Metrics] = None,
                 disable_after: Optional[float] = DEFAULT_DISABLE_AFTER,
                 launch: Optional[Callable[[Delivery, float], "Future[Sent]"]] = None) -> None:
        self.outbox = outbox
        #: ``(delivery, now) -> Future[Sent]``: an attempt that holds no thread (libcurl's multi interface);
        #: then only recording its outcome takes a pool thread, and *free_slots* counts attempts in flight.
        self._launch = launch
        self.logger = logger or get_logger(__name__)
        self.claims = Claims(outbox, self.logger)
        self.recorder = OutcomeRecorder(outbox, policy, logger=self.logger, stats=stats or Metrics(),
                                        disable_after=disable_after)
        self._send = send
        self._submit = submit
        self._free_slots = free_slots
        self._clock = outbox.clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._driving = threading.Condition()
        self._driver_busy = False  # one loop claims at a time: the worker's or a flush()
        self._watched: "weakref.WeakSet[StopSignal]" = weakref.WeakSet()
        self._progress = threading.Condition()
        self._outcomes = 0  # moves at every recorded outcome; flush() waits on it
        self._abandoned = threading.Event()
        self._loops = 0
        self._store_failing = False  # the store's last operation in the loop failed (logged once)
        self._record_failures = 0  # outcomes the store could not record; a flush() ends at one

    # -- public --------------------------------------------------------------------

    @property
    def policy(self) -> RetryPolicy:
        """The outbox's retry schedule."""
        return self.recorder.policy

    @property
    def in_flight(self) -> int:
        """Deliveries this process is sending now."""
        return len(self.claims)

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
        self._watch(stop)
        with self._lock:
            self._loops += 1
        try:
            if not self._take_driver(stop, blocking=True):
                return
            try:
                self._abandoned.clear()
                self._loop(stop, Deadline(None), None)
                self._drain()
            finally:
                self._give_driver()
        finally:
            with self._lock:
                self._loops -= 1

    def flush(self, timeout: Optional[float], stop: threading.Event, *, due_only: bool = False,
              on_turn: Optional[Callable[[], None]] = None) -> bool:
        """Block until the outbox has nothing pending: True, or False at *timeout* or *stop*.

        While a worker loop drives, this waits for it; otherwise it drives the
        deliveries itself from this thread on the pool. With *due_only* (a cron run)
        it ends, True, once nothing is due now and nothing is in flight: what is
        scheduled later stays for a later run. *on_turn* is called on this thread
        each time the loop it drives wakes (an outcome was recorded): progress for a
        person watching.
        """
        self._watch(stop)
        deadline = Deadline(timeout)
        try:
            return self._flush(stop, deadline, _Goal(due_only, on_turn))
        except self.outbox.errors as exc:
            self.logger.error("flush: the outbox cannot be used ({outbox}): {error}; what is pending stays pending",
                              outbox=_where(self.outbox), error=_describe(exc))
            return False

    def _flush(self, stop: threading.Event, deadline: Deadline, goal: "_Goal") -> bool:
        while True:
            if self._take_driver(stop, blocking=False):
                try:
                    return self._loop(stop, deadline, goal)
                finally:
                    self._give_driver()
            with self._progress:
                seen = self._outcomes
            reached = self._reached(goal)
            if reached is not None:
                return reached
            if deadline.expired or stop.is_set():
                return False
            with self._progress:
                self._progress.wait_for(lambda: self._outcomes != seen or stop.is_set(),
                                        deadline.cap(self.poll_interval))

    def _reached(self, goal: "_Goal") -> Optional[bool]:
        """Whether a flush with *goal* is over, in flight aside: what it returns then, or None to go on."""
        due = self.outbox.next_due()
        if due is None:
            return self._none_held()
        if goal.due_only and due > self._clock():
            return True
        return None

    def settle(self, timeout: Optional[float]) -> bool:
        """Wait until no delivery of this process is in flight (sent and recorded) or *timeout* passes;
        True when none is."""
        with self._progress:
            return self._progress.wait_for(lambda: not self.in_flight, timeout)

    def abandon(self) -> int:
        """Hand this process's unfinished claims back (pending, attempts unchanged); end the drain.

        A request still on the wire records its outcome when it ends all the same
        if it was delivered; anything else is the next claimant's to retry.
        """
        self._abandoned.set()
        self._wake.set()
        return self.claims.hand_back()

    def health(self) -> Dict[str, Any]:
        """Path, durability, deliveries in flight here, and the outbox's counts when readable."""
        data: Dict[str, Any] = {"path": self.outbox.path, "durable": self.outbox.durable,
                                "in_flight_here": self.in_flight}
        try:
            data["counts"] = self.outbox.counts()
        except self.outbox.errors:
            data["counts"] = None
        return data

    # -- the loop ------------------------------------------------------------------

    def _loop(self, stop: threading.Event, deadline: Deadline, goal: Optional["_Goal"]) -> bool:
        """Claim and send until *stop* or *deadline*; with a flush's *goal*, return once it is reached."""
        # New deliveries (from any process, for PostgreSQL) wake the loop while it runs.
        unsubscribe = self.outbox.subscribe(self.wakeup)
        try:
            return self._claim_loop(stop, deadline, goal)
        finally:
            unsubscribe()

    def _claim_loop(self, stop: threading.Event, deadline: Deadline, goal: Optional["_Goal"]) -> bool:
        record_failures = self._record_failures
        while not stop.is_set():
            self._wake.clear()  # before looking: a wakeup from now on is not lost
            if goal is not None and goal.on_turn is not None:
                goal.on_turn()
            if goal is not None and self._record_failures != record_failures:
                # The store takes no outcome (full disk, damaged file): what is claimed stays so until
                # its lease expires; waiting for that would only repeat the attempts.
                self.logger.error("flush: the outbox could not record an outcome ({outbox}); giving up (what is "
                                  "claimed is sent again when its lease expires)", outbox=_where(self.outbox))
                return False
            try:
                claimed = self._dispatch_due()
                renew_in = self.claims.keep_alive()
                if goal is not None and not claimed and not self.in_flight:
                    reached = self._reached(goal)
                    if reached is not None:
                        return reached
                until_due = self._until_due()
            except self.outbox.errors as exc:
                if goal is not None:
                    raise  # flush() says False
                self._store_failed(exc)
                renew_in, until_due = self.claims.until_renewal(), self.poll_interval
            else:
                self._store_answered()
            if deadline.expired:
                return False
            self._sleep(stop, deadline.cap(min(until_due, renew_in if self.in_flight else math.inf)))
        return False

    def _store_failed(self, exc: BaseException) -> None:
        """The loop goes on when the store fails (a database restarting): say so once, not every turn."""
        if not self._store_failing:
            self._store_failing = True
            self.logger.error("the outbox cannot be used ({outbox}): {error}; looking again every {poll_interval}s",
                              outbox=_where(self.outbox), error=_describe(exc), poll_interval=self.poll_interval)

    def _store_answered(self) -> None:
        if self._store_failing:
            self._store_failing = False
            self.logger.info("the outbox answers again ({outbox})", outbox=_where(self.outbox))

    def _none_held(self) -> bool:
        """True unless deliveries wait for a disabled endpoint (nothing is pending otherwise)."""
        held = self.outbox.counts().get("held", 0)
        if held:
            self.logger.warning("{held} " + plural(held, "delivery", "deliveries")
                                + " held for disabled endpoints: `syncworkers outbox endpoints` lists them, "
                                "`syncworkers outbox enable` releases them", held=held)
        return not held

    def _dispatch_due(self) -> int:
        free = self._free_slots()
        if free <= 0:
            return 0
        started = 0
        for delivery in self.outbox.claim_due(free):
            if not self.claims.take(delivery):
                continue  # its lease lapsed while its request is still on the wire here: not twice
            if self._launch is not None:
                self._start(delivery)
                started += 1
                continue
            try:
                future = self._submit(self._attempt, delivery)
            except RuntimeError:  # the pool is shut down: hand the claim back
                self.claims.give_back(delivery.id)
                continue
            # Added after the pool's own callback, which frees the pool slot first.
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
        if not stop.is_set():
            self._wake.wait(max(0.0, seconds))  # a stop sets _wake too (see _watch)

    # -- the driver and the stop signal -------------------------------------------------

    def _watch(self, stop: threading.Event) -> None:
        """Have *stop* wake every wait of this dispatcher when it is set (once per signal)."""
        if isinstance(stop, StopSignal) and stop not in self._watched:
            self._watched.add(stop)
            stop.on_set(self._on_stop)

    def _on_stop(self) -> None:
        self._wake.set()
        for condition in (self._driving, self._progress):
            with condition:
                condition.notify_all()

    def _take_driver(self, stop: threading.Event, blocking: bool) -> bool:
        with self._driving:
            while self._driver_busy:
                if not blocking or stop.is_set():
                    return False
                self._driving.wait()
            self._driver_busy = True
            return True

    def _give_driver(self) -> None:
        with self._driving:
            self._driver_busy = False
            self._driving.notify_all()

    def _drain(self) -> None:
        """After stop: keep the leases of what is in flight until each outcome is recorded, or abandon()."""
        while not self._abandoned.is_set():
            self._wake.clear()
            if not self.in_flight:
                return
            self._wake.wait(self.claims.keep_alive())

    def _done(self, future: "Optional[Future[None]]") -> None:
        with self._progress:
            self._outcomes += 1
            self._progress.notify_all()
        self._wake.set()

    # -- one attempt (on the pool) -------------------------------------------------------

    def _attempt(self, delivery: Delivery) -> None:
        try:
            at, started = self._clock(), time.monotonic()
            try:
                sent = self._send(delivery, at)
            except Exception as exc:  # a bug, not the receiver: spend an attempt, keep the delivery
                self.logger.exception("webhook {delivery_id} to {url}: the attempt raised {error}; it counts as a "
                                      "failed attempt", delivery_id=delivery.id, url=safe_url(delivery.url),
                                      error=_describe(exc))
                sent = classify_error(exc)
            if isinstance(sent, Outcome):
                sent = Sent(sent, time.monotonic() - started)
            self._record(delivery, sent, at)
        finally:
            self.claims.drop(delivery.id)

    def _record(self, delivery: Delivery, sent: Sent, at: float) -> None:
        abandoned = self._abandoned.is_set()
        if not self.recorder.record(delivery, sent, at, abandoned=abandoned) and not abandoned:
            self._record_failures += 1
            self._wake.set()

    # -- one attempt without a thread (launch), recorded on the pool ------------------------

    def _start(self, delivery: Delivery) -> None:
        at = self._clock()
        try:
            launched = self._launch(delivery, at)  # type: ignore[misc]
        except Exception as exc:  # a bug, not the receiver: recorded as an attempt that raised
            launched = Future()
            launched.set_exception(exc)
        launched.add_done_callback(lambda done: self._landed(delivery, done, at))

    def _landed(self, delivery: Delivery, done: "Future[Sent]", at: float) -> None:
        """An attempt ended (on the I/O thread): record it on the pool, which may block on the store."""
        try:
            future = self._submit(self._record_landed, delivery, done, at)
        except RuntimeError:  # the pool is shut down (stop() gave up waiting): record it here, as a pool
            self._record_landed(delivery, done, at)  # thread still on the wire at stop() would
            self._done(None)
            return
        future.add_done_callback(self._done)

    def _record_landed(self, delivery: Delivery, done: "Future[Sent]", at: float) -> None:
        try:
            try:
                sent = done.result()
            except Exception as exc:
                self.logger.exception("webhook attempt raised", delivery_id=delivery.id, exc_info=exc)
                sent = Sent(classify_error(exc))
            self._record(delivery, sent, at)
        finally:
            self.claims.drop(delivery.id)


@dataclass(frozen=True)
class _Goal:
    """When a :meth:`Dispatcher.flush` is over (see there), and what it calls as it goes."""

    due_only: bool = False
    on_turn: Optional[Callable[[], None]] = None


def _where(outbox: OutboxStore) -> str:
    """The outbox in a sentence: its path, never with a password."""
    return outbox.path or "(in memory)"


def _describe(exc: BaseException) -> str:
    """A store error in one line: its type and message (the logger redacts it)."""
    return f"{type(exc).__name__}: {exc}"


__all__ = ["Dispatcher", "POLL_INTERVAL", "Sent", "Verdict", "decide", "send_once"]
