"""A sender's outbox: ``enqueue()`` stores a webhook durably; its dispatcher delivers it.

:class:`OutboxProducer` opens the configured store on first use (or uses the one
it is given), checks what is enqueued exactly as a direct send would, and runs a
:class:`~syncworkers.delivery.dispatch.Dispatcher` on its own pool: as the
worker's loop job, or from the calling thread in :meth:`OutboxProducer.flush`.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type

from ..config.settings import WebhookConfig
from ..exceptions import ConfigError, OutboxError, WorkerError
from ..http.client import HTTPClient
from ..http.limits import HostLimiter
from ..http.retry import RetryPolicy
from ..observability import tracing
from ..observability.logging import plural, redact_text
from ..observability.metrics import Metrics
from ..outbox import Delivery, OutboxStore, open_outbox
from ..scheduling.jobs import Job, LoopJob
from ..scheduling.runner import Runner
from ..signals import StopSignal
from ..signing import Signer
from . import capture
from .attempt import Sent, launch_once, send_once
from .checks import InputChecks
from .dispatch import Dispatcher
from .pool import DeliveryPool
from .request import delivery_headers, safe_endpoint


class OutboxProducer:
    """Enqueue, flush and deliver the outbox of *config* through *client*, on *pool*.

    *outbox* is a store to use instead of opening ``config.outbox_location`` (it
    stays the caller's to close). *run* gives the stop signal of a cycle asked
    for directly (``flush()``). Deliveries to one host are limited to
    ``config.per_host_limit`` at a time on this pool, apart from direct sends.
    """

    def __init__(self, client: HTTPClient, signer: Optional[Signer], checks: InputChecks, pool: DeliveryPool,
                 run: Callable[[], StopSignal], config: WebhookConfig, *, outbox: Optional[OutboxStore] = None,
                 logger: Any, stats: Metrics) -> None:
        self.client = client
        self.signer = signer
        self.checks = checks
        self.pool = pool
        self.config = config
        self.logger = logger
        self._run = run
        self._stats = stats
        self._outbox = outbox
        self._own_outbox = outbox is None
        self._dispatcher: Optional[Dispatcher] = None
        self._lock = threading.Lock()
        # The outbox pool's own per-host limit (direct sends and broadcasts have the client's):
        # a busy outbox never holds up a broadcast, and a slow partner never takes either pool.
        self._limiter = HostLimiter(config.per_host_limit)
        self._pending_reported: Optional[int] = None  # what the last stop said was left pending
        self._loop_runner: Any = None  # the Runner given the loop by loop_in()

    # -- the store and its dispatcher ------------------------------------------------

    @property
    def in_use(self) -> bool:
        """Whether there is an outbox to deliver: one is configured, given, or was opened."""
        return self.config.outbox_location is not None or self._outbox is not None

    @property
    def dispatcher(self) -> Dispatcher:
        """The outbox's dispatcher; the store is opened on first use (ConfigError when it cannot be)."""
        return self.open()

    def open(self) -> Dispatcher:
        """Open the store (unless it is open) and return its dispatcher; ConfigError when it cannot be opened."""
        with self._lock:
            if self._dispatcher is None:
                if self._outbox is None:
                    # One connection per delivering thread, plus the claiming loop and flush().
                    self._outbox = open_outbox(self.config.outbox_location, pool_size=self.pool.max_workers + 2)
                # Over libcurl an attempt holds no thread: the pool only records outcomes.
                lean = self.client.can_submit
                self._dispatcher = Dispatcher(
                    self._outbox, self._send, self.pool.submit, self._free_slots if lean else self.pool.free_slots,
                    RetryPolicy.from_schedule(self.config.retry_schedule,
                                              retry_after_max=self.client.retry_config.retry_after_max),
                    logger=self.logger, stats=self._stats, disable_after=self.config.disable_after,
                    launch=self._launch if lean else None)
            return self._dispatcher

    @property
    def outbox(self) -> OutboxStore:
        """The store, opened on first use."""
        return self.dispatcher.outbox

    @property
    def looping(self) -> bool:
        """True while the worker's loop job delivers the outbox."""
        dispatcher = self._dispatcher
        return dispatcher is not None and dispatcher.looping

    def _send(self, delivery: Delivery, now: float) -> Sent:
        return send_once(self.client, self.signer, delivery, now, self._limiter)

    def _launch(self, delivery: Delivery, now: float) -> "Future[Sent]":
        return launch_once(self.client, self.signer, delivery, now, self._limiter)

    def _free_slots(self) -> int:
        """Attempts that may start now when they hold no thread: as many as the host limit allows
        (at least a pool's worth) less those in flight."""
        dispatcher = self._dispatcher
        in_flight = 0 if dispatcher is None else dispatcher.in_flight
        return max(self.pool.max_workers, self.config.per_host_limit) - in_flight

    @property
    def in_flight(self) -> int:
        """Outbox deliveries this process is sending now."""
        dispatcher = self._dispatcher
        return 0 if dispatcher is None else dispatcher.in_flight

    def settle(self, timeout: Optional[float]) -> bool:
        """Wait until no attempt is in flight over libcurl's multi interface (and its outcome is recorded),
        or *timeout*; True when none is. (Pool attempts are the pool's to wait for.)"""
        dispatcher = self._dispatcher
        if dispatcher is None or not self.client.can_submit:
            return True
        return dispatcher.settle(timeout)

    # -- enqueue, flush, the loop ---------------------------------------------------------

    def enqueue(self, endpoint: str, data: Any, headers: Optional[Mapping[str, str]] = None, *,
                delivery_id: Optional[str] = None, connection: Any = None) -> str:
        """Store a webhook and return its id; see ``WebhookSenderWorker.enqueue``."""
        webhook = self.checks.one(endpoint, data, headers, delivery_id)
        dispatcher = self.dispatcher
        outbox = dispatcher.outbox
        # The caller's current span (a web request's): every attempt, wherever and whenever, is its child.
        trace_context = tracing.carrier() if tracing.enabled else None
        try:
            stored = outbox.add(safe_endpoint(webhook.endpoint), webhook.url, webhook.body, webhook.headers,
                                id=webhook.id, connection=connection, trace_context=trace_context)
        except outbox.errors as exc:
            if connection is not None:
                raise  # the caller's own connection and transaction: their error, as raised
            raise OutboxError(f"the webhook was not stored: the outbox {outbox.path or '(in memory)'} cannot "
                              f"take it ({type(exc).__name__}: {redact_text(str(exc))})") from exc
        if capture.capturing():  # a test's: it asks the outbox later whether the caller's transaction kept it
            first = delivery_headers(stored, webhook.body, self.signer, webhook.headers)  # what attempt 1 carries
            capture.hand(capture.CapturedWebhook(stored, safe_endpoint(webhook.endpoint), webhook.url, webhook.body,
                                                 dict(first), enqueued=True), outbox)
        dispatcher.wakeup()
        return stored

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Deliver until nothing is pending: True, or False at *timeout*; see ``WebhookSenderWorker.flush``."""
        try:
            dispatcher = self.dispatcher
        except ConfigError as exc:  # the outbox file cannot be opened (corrupted, removed)
            self.logger.error("flush: the outbox cannot be opened: {error}", error=str(exc))
            return False
        return dispatcher.flush(timeout, self._run())

    def flush_once(self, timeout: float) -> Optional[str]:
        """run_once()'s outbox part: deliver for up to *timeout* seconds; why the cycle failed, or None."""
        try:
            dead_before = self.outbox.counts()["dead"]
            if not self.flush(timeout=timeout):
                if self.outbox.counts().get("held"):
                    return "outbox deliveries held for disabled endpoints"
                return "outbox deliveries still pending"
            if self.outbox.counts()["dead"] > dead_before:
                return "outbox deliveries died"
        except (ConfigError, *self._errors()) as exc:  # type: ignore[misc]  # a tuple of classes
            self.logger.error("run_once: the outbox cannot be used: {error}", error=f"{type(exc).__name__}: {exc}")
            return "the outbox cannot be used"
        return None

    def _errors(self) -> Tuple[Type[BaseException], ...]:
        outbox = self._outbox
        return () if outbox is None else outbox.errors

    def run(self, stop: threading.Event) -> None:
        """The worker's loop job: deliver until *stop*, then drain what is in flight."""
        self.dispatcher.run(stop)

    def loop_in(self, runner: Runner, name: str) -> None:
        """Have a running *runner* run the loop job *name*, unless a loop delivers already (the outbox came
        into use after the worker started): once per Runner."""
        if self.looping:
            return
        with self._lock:
            if self._loop_runner is runner:
                return
            self._loop_runner = runner
        try:
            runner.add(_Loop(name, self.run))
        except WorkerError:
            pass  # stopping meanwhile: the next run or flush() delivers

    # -- stop and close -----------------------------------------------------------------------

    def hand_back(self) -> None:
        """At stop: give this process's claims still in flight back to the outbox, say what is left pending."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        released = dispatcher.abandon()
        if released:
            self.logger.warning("stop(): {released} outbox " + plural(released, "delivery", "deliveries")
                                + " in flight handed back: pending again, sent later with the same webhook-id",
                                released=released)
        self.report_pending("stopped")

    def report_pending(self, when: str) -> None:
        """Log how many deliveries the outbox still holds: WARNING when it is in memory (lost at exit)."""
        outbox = self._outbox
        try:
            left = 0 if outbox is None else outbox.counts()["pending"]
        except Exception:  # closed or unreachable: nothing to report
            return
        if not left or left == self._pending_reported:  # a second stop (close() after stop()) says it once
            return
        self._pending_reported = left
        if outbox is not None and outbox.durable:
            self.logger.info(f"{when} with {{pending}} {plural(left, 'delivery', 'deliveries')} left pending "
                             "in the outbox {outbox}: the next run delivers them", pending=left,
                             outbox=outbox.path or "(in memory)")
        else:
            self.logger.warning(f"{when} with {{pending}} {plural(left, 'delivery', 'deliveries')} pending "
                                "in an in-memory outbox: they are lost when "
                                "the process exits (set WEBHOOK_OUTBOX_URL or WEBHOOK_OUTBOX_PATH for a durable "
                                "outbox)", pending=left)

    def close(self) -> None:
        """Close the store if it was opened here. A file or database is opened again on next use
        (nothing is lost); an in-memory outbox is gone for good."""
        with self._lock:
            outbox = self._outbox
            if not self._own_outbox or outbox is None:
                return
            self._loop_runner = None
            if outbox.durable:
                self._outbox = self._dispatcher = None
        outbox.close()

    # -- health ---------------------------------------------------------------------------------

    @property
    def unreachable(self) -> bool:
        """True when the outbox is in use and cannot be read."""
        dispatcher = self._dispatcher
        return dispatcher is not None and dispatcher.health()["counts"] is None

    def health(self) -> Optional[Dict[str, Any]]:
        """None until the outbox is in use; then the dispatcher's health and ``oldest_pending_seconds``."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return None
        data = dispatcher.health()
        data["oldest_pending_seconds"] = _oldest_pending_seconds(dispatcher.outbox)
        return data


class _Loop:
    """The outbox loop as a worker of its own, for a Runner already running."""

    def __init__(self, name: str, run: Callable[[threading.Event], None]) -> None:
        self.name = name
        self._run = run

    def jobs(self) -> List[Job]:
        return [LoopJob(self.name, self._run)]

    def startup(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


def _oldest_pending_seconds(outbox: Any) -> Optional[float]:
    """Age of the oldest delivery not yet delivered nor dead; 0 when none; None if unreadable."""
    oldest = getattr(outbox, "oldest_pending", None)
    if oldest is None:  # a store without it
        return None
    try:
        created = oldest()
    except Exception:  # unreachable: readiness reports it
        return None
    return 0.0 if created is None else max(0.0, outbox.clock() - created)


__all__ = ["OutboxProducer"]
