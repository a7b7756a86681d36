"""WebhookSenderWorker: JSON webhooks with retries, per-host breakers, signing and broadcast.

A delivery is one JSON body (serialised once) POSTed with a stable ``webhook-id``
and ``webhook-timestamp`` (and ``webhook-signature`` with a secret) that stay the
same on every retry, so receivers can de-duplicate. Redirects are not followed.
Failures never raise: :meth:`WebhookSenderWorker.deliver` returns a
:class:`DeliveryResult` and logs why; only bad input (an unknown endpoint, an
invalid URL, data JSON cannot hold) raises, before anything is sent.
:meth:`WebhookSenderWorker.enqueue` stores a delivery in the outbox instead;
:mod:`syncworkers.dispatch` delivers it.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple, Type

from .. import events
from ..config import HTTPClientConfig, RetryConfig, WebhookConfig, with_other_errors
from ..delivery import (
    DeliveryResult,
    check_delivery_id,
    check_headers,
    delivery_headers,
    encode_body,
    safe_endpoint,
)
from ..dispatch import Dispatcher, send_once
from ..exceptions import ConfigError, DeliveryError, OutboxError, RequestError, WorkerError, safe_url
from ..logging import redact_text
from ..message import Message
from ..outbox import OutboxStore, open_outbox
from ..outcome import Kind, classify_error
from ..retry import RetryPolicy
from ..runner import LoopJob
from ..signals import StopSignal
from ..signing import Signer
from .base import HTTPWorker, Job
from .broadcast import CANCELLED, Broadcaster
from .endpoints import EndpointResolver

#: HTTPClientConfig fields that also set a webhook's delivery settings (below WebhookConfig's own).
_SHARED_FIELDS = ("base_url", "max_retries", "retry_delay", "retry_backoff")
_TIMEOUT_FIELDS = ("timeout", "connect_timeout", "read_timeout")
#: run_once(): seconds without a new message after which the source counts as drained.
ONCE_IDLE_SECONDS = 1.0
#: Names of the two pools (and of their threads: syncworkers-<pool>-<worker name>-N).
BROADCAST_POOL, OUTBOX_POOL = "webhook", "outbox"
#: The error of a send asked of a worker whose run was stopped.
STOPPED = "worker stopped"
#: Outcomes logged as warnings, not errors: nothing went wrong with the receiver's answer.
_QUIET_KINDS = (Kind.CIRCUIT_OPEN, Kind.INTERRUPTED)


@dataclass(frozen=True)
class CycleResult:
    """What one ``run_once()`` cycle of a sender did; ``ok`` drives ``syncworkers run --once``."""

    ok: bool  #: no message raised, no delivery died or stayed pending, the source was reachable
    results: List[Any] = field(default_factory=list)  #: what process_message returned, per message
    error: Optional[str] = None  #: why the cycle is not ok


def _split_secrets(secret: Any) -> Any:
    """A string may hold several secrets separated by spaces or commas (rotation from the env)."""
    if isinstance(secret, str):
        parts = secret.replace(",", " ").split()
        return parts if len(parts) > 1 else secret
    return secret


def _explicit(config: Any) -> Dict[str, Any]:
    if config is None:
        return {}
    return config.explicit_items() if hasattr(config, "explicit_items") else dict(config)


class WebhookSenderWorker(HTTPWorker):
    """Sends JSON webhooks: one at a time, from a message, or broadcast to many endpoints.

    An endpoint is a path joined to ``base_url`` (starts with ``/``), an absolute
    URL (has ``://``) or a name from ``WebhookConfig.endpoints``. ``base_url``
    comes from the argument, else ``webhook_config``, else ``http_config``, else
    HTTP_BASE_URL. Retries: ``http_config.retry_config`` when given, else the
    WebhookConfig retry fields (argument > HTTP_* environment > defaults).
    ``signing_secret`` (or ``WebhookConfig.signing_secret`` / WEBHOOK_SIGNING_SECRET)
    is one ``whsec_`` secret or several (a list, or space/comma separated) for rotation.

    Used directly (e.g. from a web view) it needs no thread; ``close()`` it when
    done. As a running worker, :meth:`process` is its main loop (see there).
    Once stopped, retry waits end at once and broadcasts send nothing.

    :meth:`enqueue` writes a delivery to :attr:`outbox` and returns at once; the
    running worker delivers it on its pool (or :meth:`flush` does), retrying on
    ``WebhookConfig.retry_schedule``. ``outbox`` gives a store (``Outbox``,
    ``PostgresOutbox``) to use instead of opening ``outbox_url`` / ``outbox_path``
    (the worker then does not close it).
    """

    #: A message source for :meth:`process` (MemoryQueue, RedisListConsumer, ...); read at start.
    source: Any = None

    def __init__(self, base_url: Optional[str] = None, webhook_config: Optional[WebhookConfig] = None,
                 http_config: Optional[HTTPClientConfig] = None, signing_secret: Any = None, *,
                 name: Optional[str] = None, max_workers: Optional[int] = None,
                 outbox: Optional[OutboxStore] = None) -> None:
        for arg, value, cls in (("webhook_config", webhook_config, WebhookConfig),
                                ("http_config", http_config, HTTPClientConfig)):
            if value is not None and not isinstance(value, cls):
                raise ConfigError(f"{arg} must be a {cls.__name__}, got {type(value).__name__}",
                                  {arg: f"must be a {cls.__name__}"})
        from_http = {k: v for k, v in _explicit(http_config).items() if k in _SHARED_FIELDS}
        try:
            webhook = WebhookConfig.resolve(webhook_config, from_http, base_url=base_url,
                                            max_workers=max_workers)
        except ConfigError as exc:  # name the bad HTTP_* variables too, all at once
            raise with_other_errors(exc, lambda: HTTPClientConfig.resolve(http_config)) from None
        http_retry = _explicit(http_config).get("retry_config")
        retry: RetryConfig = http_retry if http_retry is not None else webhook.retry
        client_fields: Dict[str, Any] = {"follow_redirects": False, "retry_config": retry,
                                         "base_url": webhook.base_url}
        if not any(k in _explicit(http_config) for k in _TIMEOUT_FIELDS):
            client_fields["timeout"] = webhook.timeout
        client_config = HTTPClientConfig.resolve(http_config, **client_fields)
        secret = signing_secret if signing_secret is not None else webhook.signing_secret
        self.signer: Optional[Signer] = Signer(_split_secrets(secret)) if secret is not None else None
        self.webhook_config = webhook
        self.base_url: Optional[str] = webhook.base_url
        # Every broadcast thread, every outbox thread and the process() loop may share one partner host.
        self.client_threads = 2 * webhook.max_workers + 1
        super().__init__(name=name, client_config=client_config)
        self.client.on_attempt = events.attempt  # each request is a delivery attempt
        # Broadcasts and outbox deliveries each have a pool of max_workers threads, so that a
        # busy outbox (a slow partner) never queues a broadcast behind its requests.
        self._pools: Dict[str, ThreadPoolExecutor] = {}
        self._pool_lock = threading.Lock()
        self._futures: Dict[Future, str] = {}  # in flight -> the pool it runs on
        self._outbox: Optional[OutboxStore] = outbox
        self._own_outbox = outbox is None
        self._dispatcher: Optional[Dispatcher] = None
        self._outbox_lock = threading.Lock()
        self._outbox_runner: Any = None  # the Runner given the outbox loop after it started
        self._endpoints = EndpointResolver(webhook.base_url, webhook.endpoints)
        self._broadcaster = Broadcaster(self._submit, self.logger, self._stats)
        self._pending_reported: Optional[int] = None  # what the last stop() said was left pending

    # -- sending ------------------------------------------------------------------

    def deliver(self, endpoint: str, data: Any, headers: Optional[Mapping[str, str]] = None, *,
                delivery_id: Optional[str] = None,
                cancel: Optional[threading.Event] = None) -> DeliveryResult:
        """POST *data* as JSON to *endpoint*; never raises for a failed delivery.

        *delivery_id* is the ``webhook-id`` (default: a new id); give the same
        one to re-send the same event. *cancel*, when set, cuts retry waits
        short (as the worker's stop does). Raises ConfigError for an unknown
        endpoint or invalid URL and TypeError/ValueError for bad data or headers.
        """
        url = self._endpoints.url_for(endpoint)
        body = encode_body(data)
        extra = check_headers(headers)
        delivery_id = check_delivery_id(delivery_id)
        run = self.stop_event
        if run.is_set():
            return self._record(DeliveryResult.failed(endpoint, url, STOPPED, delivery_id), "warning")
        if cancel is None:
            signal: threading.Event = run
        elif isinstance(cancel, StopSignal):
            signal = StopSignal.any(run, cancel)
        else:  # a plain Event can wake no one: its own waits watch it alone
            signal = cancel
        return self._deliver(endpoint, url, body, extra, delivery_id, signal)

    def send_webhook(self, endpoint: str, data: Any, headers: Optional[Mapping[str, str]] = None) -> bool:
        """POST *data* as JSON to *endpoint*: True on a 2xx answer (after retries), else False (logged)."""
        return self.deliver(endpoint, data, headers).ok

    def send_webhook_from_message(self, message: Message, endpoint: str,
                                  headers: Optional[Mapping[str, str]] = None) -> bool:
        """Send ``message.body`` with ``message.id`` as the webhook id.

        ``message.headers`` are never sent: they are internal (they may hold
        credentials of the system the message came from).
        """
        return self.deliver(endpoint, message.body, headers, delivery_id=message.id).ok

    def broadcast_webhook(self, endpoints: Iterable[str], data: Any,
                          headers: Optional[Mapping[str, str]] = None,
                          fail_fast: bool = False) -> Dict[str, bool]:
        """Send *data* to every endpoint at once (one thread each); return ``{endpoint: ok}``.

        :meth:`broadcast` gives each endpoint's :class:`DeliveryResult` (its cause) instead.
        """
        return {endpoint: result.ok
                for endpoint, result in self.broadcast(endpoints, data, headers, fail_fast).items()}

    def broadcast(self, endpoints: Iterable[str], data: Any, headers: Optional[Mapping[str, str]] = None,
                  fail_fast: bool = False) -> Dict[str, DeliveryResult]:
        """Send *data* to every endpoint at once (one thread each); return ``{endpoint: DeliveryResult}``.

        An endpoint listed twice is sent once; each gets its own webhook id. With
        *fail_fast*, the first failure cancels the deliveries not started yet,
        interrupts the retry waits of those in flight, and the call returns at
        once: every endpoint is in the result, not ok unless it was already
        delivered (a request on the wire may still complete in the background).
        """
        if isinstance(endpoints, (str, bytes)):
            raise TypeError("endpoints must be a list of endpoints, not a single string")
        targets = {endpoint: self._endpoints.url_for(endpoint) for endpoint in dict.fromkeys(endpoints)}
        body = encode_body(data)
        extra = check_headers(headers)
        run = self.stop_event
        if run.is_set():
            return {e: self._record(DeliveryResult.failed(e, url, STOPPED), "warning") for e, url in targets.items()}

        def deliver(endpoint: str, url: str, cancel: StopSignal) -> DeliveryResult:
            return self._deliver(endpoint, url, body, extra, check_delivery_id(None), cancel)

        return self._broadcaster.run(targets, deliver, run, fail_fast)

    # -- the outbox ---------------------------------------------------------------------

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
        body = encode_body(data)
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
                    self._outbox, lambda delivery, now: send_once(self.client, self.signer, delivery, now),
                    self._submit_outbox, self._free_slots,
                    RetryPolicy.from_schedule(self.webhook_config.retry_schedule,
                                              retry_after_max=self.client.retry_config.retry_after_max),
                    logger=self.logger, stats=self._stats, disable_after=self.webhook_config.disable_after)
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
        with self._pool_lock:
            busy = sum(1 for kind in self._futures.values() if kind == OUTBOX_POOL)
        return self.webhook_config.max_workers - busy

    # -- the main loop ------------------------------------------------------------

    def process(self) -> None:
        """The worker's main loop: consume ``self.source`` until stopped.

        Each message goes to :meth:`process_message`, then is ack'ed; if
        process_message raises, it is logged with its traceback and nack'ed
        (requeued) and the loop goes on. Override to run your own loop; if it
        returns before stop(), the worker idles until stopped.
        """
        source = self.source
        if source is None:
            return
        for message in source.consume():
            try:
                self.process_message(message)
            except Exception as exc:
                if isinstance(exc, DeliveryError) and self.stop_event.is_set():
                    # process_message's documented way to hand a message back on stop: not an error.
                    self.logger.info("delivery interrupted by stop; message requeued", message_id=message.id,
                                     error=str(exc))
                else:
                    self._stats.incr("messages_failed")
                    self.logger.exception("process_message raised; message requeued", message_id=message.id)
                self._settle(source, message, ok=False)
            else:
                self._stats.incr("messages_processed")
                self._settle(source, message, ok=True)

    def _settle(self, source: Any, message: Message, ok: bool) -> None:
        """ack() or nack() *message*; a source that cannot be reached (Redis restarting) is
        logged, not raised: the loop goes on, and the source redelivers what it did not settle."""
        try:
            if ok:
                source.ack(message)
            else:
                source.nack(message, requeue=True)
        except Exception as exc:
            self.logger.warning("could not settle message with its source; it may be delivered again",
                                message_id=message.id, error=f"{type(exc).__name__}: {exc}")

    def process_message(self, message: Message) -> Optional[bool]:
        """Handle one message of ``self.source`` (override to route messages your way).

        By default the message is sent to ``message.headers["endpoint"]`` (its
        body, its id as webhook id) and the result returned; a message without
        that header is logged and skipped (None). A delivery interrupted by
        stop() raises DeliveryError, so that the message is requeued, not lost.
        """
        endpoint = message.headers.get("endpoint")
        if not endpoint:
            self.logger.warning("message has no 'endpoint' header; skipped", message_id=message.id)
            return None
        result = self.deliver(endpoint, message.body, delivery_id=message.id)
        if not result.ok and self.stop_event.is_set():
            raise DeliveryError(f"delivery interrupted by stop: {result.error}", url=result.url,
                                attempts=result.attempts)
        return result.ok

    def run_once(self) -> CycleResult:
        """One cron-style cycle (``syncworkers run --once``).

        Runs :meth:`process` until the source has yielded nothing for
        ONCE_IDLE_SECONDS, then, when an outbox is configured or in use, delivers
        it until nothing is pending or the webhook timeout has passed (later
        retries stay pending for the next run). The result's ``ok`` is False when
        a message raised, the source was unreachable, or a delivery died or is
        still pending; ``results`` are what process_message returned.
        """
        self._direct_run()
        results: List[Any] = []
        error: Optional[str] = None
        if self.source is not None or type(self).process is not WebhookSenderWorker.process:
            results, error = self._drain_source()
        if self.webhook_config.outbox_location is not None or self._outbox is not None:
            error = error or self._flush_once()
        return CycleResult(ok=error is None, results=results, error=error)

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
        except (ConfigError, *self._outbox_errors()) as exc:
            self.logger.error("run_once: the outbox cannot be used", error=f"{type(exc).__name__}: {exc}")
            return "the outbox cannot be used"
        return None

    def _outbox_errors(self) -> Tuple[Type[BaseException], ...]:
        outbox = self._outbox
        return () if outbox is None else outbox.errors

    def _drain_source(self) -> Tuple[List[Any], Optional[str]]:
        """process() on a thread until the source goes quiet; (results, why the cycle failed or None)."""
        done = threading.Event()
        results: List[Any] = []
        state: Dict[str, Any] = {"busy": 0, "last": time.monotonic(), "failed": None}
        lock = threading.Lock()
        handle = self.process_message

        def tracked(message: Message) -> Any:  # shadows the method while the cycle runs
            with lock:
                state["busy"] += 1
            try:
                result = handle(message)
            except Exception:
                state["failed"] = state["failed"] or "process_message raised"
                raise
            finally:
                with lock:
                    state["busy"] -= 1
                    state["last"] = time.monotonic()
            results.append(result)
            return result

        def loop() -> None:
            try:
                self.process()
            except Exception:
                state["failed"] = state["failed"] or "process() raised"
                self.logger.exception("process() raised during run_once")

        if self.source is not None:
            self.source.bind(done)
        self.process_message = tracked  # type: ignore[method-assign]
        thread = threading.Thread(target=loop, name=f"syncworkers-once-{self.name}", daemon=True)
        try:
            thread.start()
            while thread.is_alive():
                with lock:
                    quiet = state["busy"] == 0 and time.monotonic() - state["last"] >= ONCE_IDLE_SECONDS
                if quiet:
                    break
                thread.join(0.05)
        finally:
            done.set()
            thread.join(self.webhook_config.timeout)
            del self.process_message
        if self.source is not None and not getattr(self.source, "available", True):
            self.logger.warning("the source was unreachable during run_once")
            state["failed"] = state["failed"] or "the source was unreachable"
        if thread.is_alive():  # a process() of its own that does not watch the source or stop event
            self.logger.warning("process() did not return after run_once; left running", thread=thread.name)
            state["failed"] = state["failed"] or "process() did not return"
        return results, state["failed"]

    def jobs(self) -> List[Job]:
        """A loop job running :meth:`process` when there is a source or process() is overridden,
        and one delivering the outbox when it is configured or in use (a sender used
        directly needs no thread). A configured outbox file is opened here, so that
        a bad path fails start() rather than the loop."""
        jobs: List[Job] = []
        if self.source is not None or type(self).process is not WebhookSenderWorker.process:
            jobs.append(LoopJob(f"{self.name}-process", self._run_process))
        if self.webhook_config.outbox_location is not None or self._outbox is not None:
            self._outbox_dispatcher()
            jobs.append(LoopJob(f"{self.name}-outbox", self._run_outbox))
        return jobs

    def _run_process(self, stop_event: threading.Event) -> None:
        source = self.source
        if source is not None:
            source.bind(stop_event)  # so that consume() ends when the worker stops
        self.process()
        # process() may return at once (the reference's `pass`): idle, rather than end or spin.
        stop_event.wait()

    # -- lifecycle ----------------------------------------------------------------

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Stop: interrupt broadcasts and the source, then let in-flight deliveries end up to *timeout*.

        Outbox deliveries still on the wire at the timeout are handed back to the
        outbox (pending), for the next run or another process: nothing is lost.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        # The run's stop signal reaches broadcasts and retry waits at once; the source is closed too.
        if self.source is not None:
            self.source.close()
        ended = super().stop(timeout)
        with self._pool_lock:
            pools, self._pools = list(self._pools.values()), {}
            futures = list(self._futures)
        pending: Set[Future] = set()
        for pool in pools:
            pool.shutdown(wait=False)
        if pools:
            _, pending = wait(futures, None if deadline is None else max(0.0, deadline - time.monotonic()))
        else:  # an earlier stop() took the pools and waited; some deliveries may still be running
            pending = {future for future in futures if not future.done()}
        if pending:
            self.logger.warning("stop() timed out with deliveries in flight", in_flight=len(pending))
        else:
            for pool in pools:
                pool.shutdown(wait=True)  # only joins idle threads now
        if self._dispatcher is not None:
            released = self._dispatcher.abandon()
            if released:
                self.logger.warning("outbox deliveries in flight at stop() handed back", released=released)
            self._report_pending("stopped")
        return ended and not pending

    def _report_pending(self, when: str) -> None:
        """Log how many deliveries the outbox still holds: WARNING when it is in memory (lost at exit)."""
        outbox = self._outbox
        try:
            left = 0 if outbox is None else outbox.counts()["pending"]
        except Exception:  # closed or unreachable: nothing to report
            return
        if not left or left == self._pending_reported:  # a second stop() (close() after stop()) says it once
            return
        self._pending_reported = left
        if outbox is not None and outbox.durable:
            self.logger.info(f"{when} with deliveries left pending in the outbox", pending=left)
        else:
            self.logger.warning(f"{when} with deliveries pending in an in-memory outbox: they are lost when "
                                "the process exits (set WEBHOOK_OUTBOX_URL or WEBHOOK_OUTBOX_PATH for a durable "
                                "outbox)", pending=left)

    def close(self) -> None:
        """Stop (unless a shared Runner drives the worker), release connections, close the outbox it opened.

        An outbox file is opened again by a later ``start()`` or ``enqueue()``; an
        in-memory outbox is gone for good.
        """
        shared = self._runner is not None and self._runner.running and self._own_runner is None
        super().close()
        if self._own_outbox and self._outbox is not None and not shared:
            with self._outbox_lock:
                outbox = self._outbox
                if outbox.durable:  # a later start() or enqueue() opens the file again, losing nothing
                    self._outbox = self._dispatcher = self._outbox_runner = None
            outbox.close()

    def not_ready_reasons(self) -> List[str]:
        """HTTPWorker's reasons (an open circuit), and an outbox in use that cannot be read."""
        reasons = super().not_ready_reasons()
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher.health()["counts"] is None:
            reasons.append("outbox unreachable")
        return reasons

    def health(self) -> Dict[str, Any]:
        """HTTPWorker.health() plus ``deliveries`` (direct sends and the outbox's together),
        the broadcast pool and, once in use, the outbox (``oldest_pending_seconds`` included)."""
        data = super().health()
        stats = self._stats
        counts = {name: stats.get(name) for name in (
            "delivered", "failed", "attempts", "retried", "circuit_open", "interrupted",
            "broadcasts", "broadcasts_cancelled", "outbox_delivered", "outbox_dead", "outbox_attempts",
            "outbox_retried", "outbox_postponed", "outbox_circuit_open")}
        # One count per fact, whichever way the webhook went: direct, broadcast or outbox.
        data["deliveries"] = {
            "delivered": counts["delivered"] + counts["outbox_delivered"],
            "failed": counts["failed"],
            "dead": counts["outbox_dead"],
            "attempts": counts["attempts"] + counts["outbox_attempts"],
            "retried": counts["retried"] + counts["outbox_retried"],
            "postponed": counts["outbox_postponed"],
            "circuit_open": counts["circuit_open"] + counts["outbox_circuit_open"],
            "interrupted": counts["interrupted"],
            "broadcasts": counts["broadcasts"],
            "broadcasts_cancelled": counts["broadcasts_cancelled"],
        }
        with self._pool_lock:
            data["broadcast_pool"] = {"max_workers": self.webhook_config.max_workers,
                                      "started": BROADCAST_POOL in self._pools,
                                      "in_flight": sum(1 for kind in self._futures.values()
                                                       if kind == BROADCAST_POOL)}
        dispatcher = self._dispatcher
        if dispatcher is not None:
            data["outbox"] = outbox = dispatcher.health()
            outbox["oldest_pending_seconds"] = _oldest_pending_seconds(dispatcher.outbox)
        return data

    def __repr__(self) -> str:
        signing = "off" if self.signer is None else repr(self.signer)
        return (f"<{type(self).__name__} {self.name!r} base_url={safe_url(self.base_url)!r} "
                f"endpoints={sorted(self.webhook_config.endpoints)} signing={signing} "
                f"running={self.running}>")

    # -- internals ----------------------------------------------------------------

    def _deliver(self, endpoint: str, url: str, body: bytes, extra: Dict[str, str], delivery_id: str,
                 cancel: threading.Event) -> DeliveryResult:
        # Built once: every attempt carries the same id, timestamp and signature.
        headers = delivery_headers(delivery_id, body, self.signer, extra)
        started = time.monotonic()
        try:
            response = self.client.request("POST", url, data=body, headers=headers, cancel=cancel,
                                           allow_redirects=False)
        except RequestError as exc:
            outcome, attempts = classify_error(exc), exc.attempts
        else:
            outcome, attempts = response.outcome, response.attempts
        if outcome.kind is Kind.CIRCUIT_OPEN:
            self._stats.incr("circuit_open")
        elif outcome.kind is Kind.INTERRUPTED:
            self._stats.incr("interrupted")
        result = DeliveryResult.from_outcome(endpoint, url, outcome, attempts, time.monotonic() - started,
                                             delivery_id)
        return self._record(result, "warning" if outcome.kind in _QUIET_KINDS else "error")

    def _record(self, result: DeliveryResult, level: str) -> DeliveryResult:
        events.delivery(result.url, "delivered" if result.ok else "failed")
        stats = self._stats
        stats.incr("attempts", result.attempts)
        stats.incr("retried", max(0, result.attempts - 1))
        stats.observe("delivery_seconds", result.duration)
        fields = dict(endpoint=result.endpoint, url=result.url, status=result.status_code,
                      attempts=result.attempts, delivery_id=result.delivery_id,
                      duration=round(result.duration, 3))
        if result.ok:
            stats.incr("delivered")
            self.logger.info("webhook delivered", **fields)
        else:
            stats.incr("failed")
            getattr(self.logger, level)("webhook not delivered", error=result.error, **fields)
        return result

    def _submit(self, func: Callable[..., Any], *args: Any, kind: str = BROADCAST_POOL) -> Future:
        with self._pool_lock:
            pool = self._pools.get(kind)
            if pool is None:
                pool = self._pools[kind] = ThreadPoolExecutor(
                    self.webhook_config.max_workers, thread_name_prefix=f"syncworkers-{kind}-{self.name}")
            future = pool.submit(func, *args)
            self._futures[future] = kind
        future.add_done_callback(self._forget)
        return future

    def _submit_outbox(self, func: Callable[..., Any], *args: Any) -> Future:
        return self._submit(func, *args, kind=OUTBOX_POOL)

    def _forget(self, future: Future) -> None:
        with self._pool_lock:
            self._futures.pop(future, None)
        if not future.cancelled() and future.exception() is not None:
            self.logger.error("webhook delivery raised", exc_info=future.exception())


class _OutboxLoop:
    """Carries a sender's outbox loop into a Runner that was already running when the outbox came into use."""

    def __init__(self, sender: WebhookSenderWorker) -> None:
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


__all__ = ["WebhookSenderWorker", "CycleResult", "DeliveryResult", "encode_body", "CANCELLED", "STOPPED"]
