"""The outbox half of a webhook sender: ``enqueue()`` durably, deliver in the background.

:class:`OutboxMixin` gives :class:`~syncworkers.workers.webhook.WebhookSenderWorker`
its ``outbox``, ``enqueue()`` and ``flush()``, and the loop job that runs its
:class:`~syncworkers.delivery.dispatch.Dispatcher`.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple, Type

from ..delivery.request import check_delivery_id, check_headers, encode_body, safe_endpoint
from ..delivery.attempt import launch_once
from ..delivery.dispatch import Dispatcher, send_once
from ..exceptions import ConfigError, OutboxError, WorkerError
from ..http.limits import HostLimiter
from ..observability.logging import redact_text
from ..outbox import OutboxStore, open_outbox
from ..http.retry import RetryPolicy
from ..scheduling.runner import LoopJob
from .base import Job

if TYPE_CHECKING:  # pragma: no cover
    from ..config.settings import WebhookConfig
    from ..observability.logging import StructuredLogger
    from ..http.client import HTTPClient
    from ..observability.metrics import Metrics
    from ..scheduling.runner import Runner
    from ..signals import StopSignal
    from ..signing import Signer
    from ..delivery.endpoints import EndpointResolver

#: Names of the two pools (and of their threads: syncworkers-<pool>-<worker name>-N).
BROADCAST_POOL: str = "webhook"
OUTBOX_POOL: str = "outbox"


class OutboxMixin:
    """The outbox of a webhook sender: opened on first use, delivered on the sender's outbox pool."""

    if TYPE_CHECKING:  # provided by the worker
        name: str
        logger: StructuredLogger
        client: HTTPClient
        signer: Optional[Signer]
        webhook_config: WebhookConfig
        running: bool
        _stats: Metrics
        _runner: Optional[Runner]
        _endpoints: EndpointResolver
        _outbox: Optional[OutboxStore]
        _dispatcher: Optional[Dispatcher]
        _outbox_lock: threading.Lock
        _outbox_limiter: HostLimiter
        _outbox_runner: Any
        _pool_lock: threading.Lock
        _futures: Dict[Future[Any], str]

        def _direct_run(self) -> StopSignal: ...

        def _submit_outbox(self, func: Callable[..., Any], *args: Any) -> Future[Any]: ...

    @property
    def outbox(self) -> OutboxStore:
        """The queue of :meth:`enqueue`, opened on first use.

        ``WebhookConfig.outbox_url`` (WEBHOOK_OUTBOX_URL: PostgreSQL or SQLite) or the
        SQLite file ``outbox_path`` (WEBHOOK_OUTBOX_PATH) when set; otherwise an
        in-memory outbox, which is NOT durable: what is pending dies with the process. ``outbox.counts()`` gives pending, delivered and dead.
        """
        return self._outbox_dispatcher().outbox

    def enqueue(self, endpoint: str, data: Any, headers: Optional[Mapping[str, str]] = None, *,
                delivery_id: Optional[str] = None, connection: Any = None) -> str:
        """Store a webhook in the outbox and return its id (its ``webhook-id``) before anything is sent.

        The running worker delivers it at once, else :meth:`flush` does: attempt 1
        at once, then one after each delay of ``retry_schedule``; a delivery ends
        delivered or dead, with its last error kept (``syncworkers outbox``).
        Delivery is at-least-once: a crash may repeat an attempt, with the same id.
        An id already in the outbox is not stored twice. Raises ConfigError for an
        unknown endpoint or invalid URL and TypeError/ValueError for bad data or
        headers, before anything is stored, and OutboxError when the outbox cannot
        store it (disk full, file corrupted, database down): then nothing was stored.
        For an endpoint that is disabled, the delivery is stored held.

        With ``connection`` (your open DB-API connection to the outbox's database:
        psycopg for a PostgreSQL outbox, sqlite3 for an outbox file), the delivery is
        written inside your transaction and this commits nothing: rolled back, it is
        never sent; committed, it is delivered (the transactional outbox).
        """
        url = self._endpoints.url_for(endpoint)
        body = encode_body(data, self.webhook_config.max_payload_bytes)
        extra = check_headers(headers)
        delivery_id = check_delivery_id(delivery_id)
        dispatcher = self._outbox_dispatcher()
        outbox = dispatcher.outbox
        try:
            delivery_id = outbox.add(safe_endpoint(endpoint), url, body, extra, id=delivery_id,
                                     connection=connection)
        except outbox.errors as exc:
            if connection is not None:
                raise  # the caller's own connection and transaction: their error, as raised
            raise OutboxError(f"the webhook was not stored: the outbox {outbox.path or '(in memory)'} cannot "
                              f"take it ({type(exc).__name__}: {redact_text(str(exc))})") from exc
        dispatcher.wakeup()
        self._ensure_outbox_loop(dispatcher)
        return delivery_id

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Block until the outbox has nothing pending (scheduled retries included): True, or False at *timeout*.

        While the worker runs, its loop delivers and this waits. Otherwise (a
        script: ``enqueue(...)`` then ``flush(30)``) this thread drives the
        deliveries on the worker's pool. Pending counts the whole outbox file,
        whichever process added it. False too, at once, when the outbox cannot be
        used (disk full, file corrupted, database down: the cause is logged) or when
        what remains is held for disabled endpoints.
        """
        try:
            dispatcher = self._outbox_dispatcher()
        except ConfigError as exc:  # the outbox file cannot be opened (corrupted, removed)
            self.logger.error("flush: the outbox cannot be opened", error=str(exc))
            return False
        return dispatcher.flush(timeout, self._direct_run())

    def _outbox_dispatcher(self) -> Dispatcher:
        with self._outbox_lock:
            if self._dispatcher is None:
                if self._outbox is None:
                    # One connection per delivering thread, plus the claiming loop and flush().
                    self._outbox = open_outbox(self.webhook_config.outbox_location,
                                               pool_size=self.webhook_config.max_workers + 2)
                self._dispatcher = Dispatcher(
                    self._outbox,
                    lambda delivery, now: send_once(self.client, self.signer, delivery, now, self._outbox_limiter),
                    self._submit_outbox, self._free_slots,
                    RetryPolicy.from_schedule(self.webhook_config.retry_schedule,
                                              retry_after_max=self.client.retry_config.retry_after_max),
                    logger=self.logger, stats=self._stats, disable_after=self.webhook_config.disable_after,
                    # Over libcurl, attempts hold no thread: the pool only records their outcomes.
                    launch=(lambda delivery, now: launch_once(self.client, self.signer, delivery, now,
                                                              self._outbox_limiter))
                    if self.client.can_submit else None)
            return self._dispatcher

    def _run_outbox(self, stop_event: threading.Event) -> None:
        self._outbox_dispatcher().run(stop_event)

    def _ensure_outbox_loop(self, dispatcher: Dispatcher) -> None:
        """Give the running Runner the outbox loop when the outbox came into use after start()."""
        runner = self._runner
        if runner is None or not self.running or dispatcher.looping:
            return
        with self._outbox_lock:
            if self._outbox_runner is runner:
                return
            self._outbox_runner = runner
        try:
            runner.add(_OutboxLoop(self))
        except WorkerError:
            pass  # stopping meanwhile: the next run or flush() delivers

    def _free_slots(self) -> int:
        dispatcher = self._dispatcher
        if self.client.can_submit and dispatcher is not None:
            # Attempts in flight hold no thread: as many as the host limit allows (at least a pool's worth).
            config = self.webhook_config
            return max(config.max_workers, config.per_host_limit) - dispatcher.in_flight
        with self._pool_lock:
            busy = sum(1 for kind in self._futures.values() if kind == OUTBOX_POOL)
        return self.webhook_config.max_workers - busy

    def _flush_once(self) -> Optional[str]:
        """run_once()'s outbox part: why it failed, or None."""
        try:
            dead_before = self.outbox.counts()["dead"]
            if not self.flush(timeout=self.webhook_config.timeout):
                if self.outbox.counts().get("held"):
                    return "outbox deliveries held for disabled endpoints"
                return "outbox deliveries still pending"
            if self.outbox.counts()["dead"] > dead_before:
                return "outbox deliveries died"
        except (ConfigError, *self._outbox_errors()) as exc:  # type: ignore[misc]  # a tuple of classes
            self.logger.error("run_once: the outbox cannot be used", error=f"{type(exc).__name__}: {exc}")
            return "the outbox cannot be used"
        return None

    def _outbox_errors(self) -> Tuple[Type[BaseException], ...]:
        outbox = self._outbox
        return () if outbox is None else outbox.errors


class _OutboxLoop:
    """Carries a sender's outbox loop into a Runner that was already running when the outbox came into use."""

    def __init__(self, sender: OutboxMixin) -> None:
        self.sender = sender

    def jobs(self) -> List[Job]:
        return [LoopJob(f"{self.sender.name}-outbox", self.sender._run_outbox)]

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


__all__ = ["BROADCAST_POOL", "OUTBOX_POOL", "OutboxMixin"]
