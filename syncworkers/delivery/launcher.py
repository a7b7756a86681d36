"""One attempt per claimed outbox delivery, and its outcome handed to the recorder.

:class:`Launcher` runs each attempt on the worker's pool (:func:`~syncworkers.delivery.attempt.send_once`),
or, with libcurl's multi interface, starts it without a thread
(:func:`~syncworkers.delivery.attempt.launch_once`) and records its outcome on the pool, which
may block on the store. Either way the outcome goes to the
:class:`~syncworkers.delivery.recorder.OutcomeRecorder`, which drops the claim once it is written.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, List, Optional, Union

from ..exceptions import safe_url
from ..http.outcome import Outcome, classify_error
from ..outbox import Delivery
from .attempt import Sent
from .pacing import ClaimPace
from .recorder import OutcomeRecorder


class Launcher:
    """Starts the attempts of claimed deliveries (see the module).

    *send* ``(delivery, now) -> Sent`` (or a bare Outcome) makes one attempt on a pool thread;
    *launch* ``(delivery, now) -> Future[Sent]`` one that holds no thread (None: none);
    *submit* runs a call on the pool and returns its Future. *settled* ``(ids, failures)``
    is told of a delivery whose outcome will not be recorded (its claim is free);
    *slot_free* that a pool slot is free. *abandoned* is set once the claims are handed back.
    """

    def __init__(self, send: Callable[[Delivery, float], Union[Sent, Outcome]],
                 launch: Optional[Callable[[Delivery, float], "Future[Sent]"]],
                 submit: Callable[..., "Future[None]"], pace: ClaimPace, recorder: OutcomeRecorder,
                 clock: Callable[[], float], logger: Any, settled: Callable[[List[str], int], None],
                 slot_free: Callable[[], None], abandoned: threading.Event) -> None:
        self._send = send
        self._launch = launch
        self._submit = submit
        self.pace = pace
        self.recorder = recorder
        self._clock = clock
        self.logger = logger
        self._settled = settled
        self._slot_free = slot_free
        self._abandoned = abandoned

    def start(self, delivery: Delivery) -> bool:
        """Start *delivery*'s attempt; False when the pool is shut down (nothing started: hand its claim back)."""
        if self._launch is not None:
            self._start_launched(delivery)  # takes its host's slot at once: no pool thread to wait for
            return True
        self.pace.handed()
        try:
            future = self._submit(self._attempt, delivery)
        except RuntimeError:
            self.pace.started()
            return False
        # Added after the pool's own callback, which frees the pool slot first.
        future.add_done_callback(lambda _: self._slot_free())
        return True

    # -- on a pool thread ---------------------------------------------------------------

    def _attempt(self, delivery: Delivery) -> None:
        """Send *delivery* once and hand its outcome to the recorder."""
        self.pace.started()
        recording = False
        try:
            at, started = self._clock(), time.monotonic()
            try:
                sent = self._send(delivery, at)
            except Exception as exc:  # a bug, not the receiver: spend an attempt, keep the delivery
                self.logger.exception("webhook {delivery_id} to {url}: the attempt raised {error}; it counts as a "
                                      "failed attempt", delivery_id=delivery.id, url=safe_url(delivery.url),
                                      error=f"{type(exc).__name__}: {exc}")
                sent = classify_error(exc)
            if isinstance(sent, Outcome):
                sent = Sent(sent, time.monotonic() - started)
            recording = True
            self._record(delivery, sent, at)
        finally:
            if not recording:
                self._settled([delivery.id], 0)

    def _record(self, delivery: Delivery, sent: Sent, at: float) -> None:
        self.recorder.submit(delivery, sent, at, abandoned=self._abandoned.is_set())

    # -- without a thread (launch), recorded on the pool ----------------------------------

    def _start_launched(self, delivery: Delivery) -> None:
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
            self._slot_free()
            return
        future.add_done_callback(lambda _: self._slot_free())

    def _record_landed(self, delivery: Delivery, done: "Future[Sent]", at: float) -> None:
        recording = False
        try:
            try:
                sent = done.result()
            except Exception as exc:
                self.logger.exception("webhook {delivery_id} to {url}: the attempt raised {error}; it counts as a "
                                      "failed attempt", delivery_id=delivery.id, url=safe_url(delivery.url),
                                      error=f"{type(exc).__name__}: {exc}", exc_info=exc)
                sent = Sent(classify_error(exc))
            recording = True
            self._record(delivery, sent, at)
        finally:
            if not recording:
                self._settled([delivery.id], 0)


__all__ = ["Launcher"]
