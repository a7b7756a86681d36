"""WebhookSenderWorker: JSON webhooks with retries, per-host breakers, signing and broadcast.

A delivery is one JSON body (serialised once) POSTed with a stable ``webhook-id``
and ``webhook-timestamp`` (and ``webhook-signature`` with a secret) that stay the
same on every retry, so receivers can de-duplicate. Redirects are not followed.
Failures never raise: :meth:`WebhookSenderWorker.deliver` returns a
:class:`DeliveryResult` and logs why; only bad input (an unknown endpoint, an
invalid URL, data JSON cannot hold) raises, before anything is sent.
:meth:`WebhookSenderWorker.enqueue` stores a delivery in the outbox instead.

The worker is the lifecycle and the wiring of four parts, each built with what it
uses: :class:`~syncworkers.delivery.direct.DirectSender` (one delivery),
:class:`~syncworkers.delivery.broadcast.Broadcaster` (many at once, on its pool),
:class:`~syncworkers.delivery.producer.OutboxProducer` (the outbox, delivered on
its pool) and :class:`~syncworkers.workers.relay.Relay` (``self.source``).
"""

from __future__ import annotations

import inspect
import threading
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ..config.base import with_other_errors
from ..config.settings import HTTPClientConfig, RetryConfig, WebhookConfig
from ..config.validators import checked, count
from ..delivery.broadcast import CANCELLED, Broadcaster
from ..delivery.checks import InputChecks
from ..delivery.direct import STOPPED, DirectSender
from ..delivery.endpoints import EndpointResolver
from ..delivery.pool import BROADCAST_POOL, OUTBOX_POOL, DeliveryPool, stop_pools
from ..delivery.producer import OutboxProducer
from ..delivery.reporting import delivery_counts
from ..delivery.request import DeliveryResult, encode_body
from ..exceptions import ConfigError, DeliveryError, safe_url
from ..message import Message
from ..observability import events
from ..observability.redaction import Redactor
from ..outbox import OutboxStore
from ..scheduling.runner import LoopJob
from ..signals import Deadline
from ..signing import Signer, split_secrets
from .base import HTTPWorker, Job
from .relay import CycleResult, Relay, counted, counted_method

#: HTTPClientConfig fields that also set a webhook's delivery settings (below WebhookConfig's own).
_SHARED_FIELDS = ("base_url", "max_retries", "retry_delay", "retry_backoff")
_TIMEOUT_FIELDS = ("timeout", "connect_timeout", "read_timeout")


def _explicit(config: Any) -> Dict[str, Any]:
    if config is None:
        return {}
    return config.explicit_items() if hasattr(config, "explicit_items") else dict(config)


def _webhook_config(base_url: Optional[str], webhook_config: Optional[WebhookConfig],
                    http_config: Optional[HTTPClientConfig], max_workers: Optional[int]) -> WebhookConfig:
    """The sender's WebhookConfig: argument > webhook_config > http_config's shared fields > environment."""
    for arg, value, cls in (("webhook_config", webhook_config, WebhookConfig),
                            ("http_config", http_config, HTTPClientConfig)):
        if value is not None and not isinstance(value, cls):
            raise ConfigError(f"{arg} must be a {cls.__name__}, got {type(value).__name__}",
                              {arg: f"must be a {cls.__name__}"})
    if max_workers is not None:  # an argument, not an environment variable: a number, never its text
        checked("max_workers", max_workers, count(text=False))
    from_http = {k: v for k, v in _explicit(http_config).items() if k in _SHARED_FIELDS}
    try:
        return WebhookConfig.resolve(webhook_config, from_http, base_url=base_url, max_workers=max_workers)
    except ConfigError as exc:  # name the bad HTTP_* variables too, all at once
        raise with_other_errors(exc, lambda: HTTPClientConfig.resolve(http_config)) from None


def _client_config(webhook: WebhookConfig, http_config: Optional[HTTPClientConfig]) -> HTTPClientConfig:
    """The client's config: no redirects, the webhook's retries, timeout, per-host limit and SSRF guard."""
    given = _explicit(http_config)
    retry: RetryConfig = given["retry_config"] if given.get("retry_config") is not None else webhook.retry
    fields: Dict[str, Any] = {"follow_redirects": False, "retry_config": retry, "base_url": webhook.base_url,
                              "max_in_flight_per_host": webhook.per_host_limit}
    if webhook.block_private_networks:  # the SSRF guard: the client's transports enforce it
        fields["block_private_networks"] = True
    if webhook.allowed_networks:
        fields["allowed_networks"] = webhook.allowed_networks
    if not any(k in given for k in _TIMEOUT_FIELDS):
        fields["timeout"] = webhook.timeout
    return HTTPClientConfig.resolve(http_config, **fields)


#: HTTPWorker's ``name`` property: its setter checks a name and rebinds the logger and metrics to it.
_WORKER_NAME: property = HTTPWorker.__dict__["name"]


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass's own process_message is seen by run_once() like the default one, whoever
        # calls it (the default process(), or a process() of the subclass's own): see relay.counted.
        handler = inspect.getattr_static(cls, "process_message")
        wrapped = counted_method(handler)
        if wrapped is not handler:  # a method of this class's own (inherited ones are counted already)
            setattr(cls, "process_message", wrapped)

    def __init__(self, base_url: Optional[str] = None, webhook_config: Optional[WebhookConfig] = None,
                 http_config: Optional[HTTPClientConfig] = None, signing_secret: Any = None, *,
                 name: Optional[str] = None, max_workers: Optional[int] = None,
                 outbox: Optional[OutboxStore] = None) -> None:
        if outbox is not None and not all(callable(getattr(outbox, op, None)) for op in ("add", "claim_due", "get")):
            raise ConfigError(f"outbox must be an outbox store (Outbox, PostgresOutbox), got {type(outbox).__name__}",
                              {"outbox": "must be an outbox store"})
        webhook = _webhook_config(base_url, webhook_config, http_config, max_workers)
        client_config = _client_config(webhook, http_config)
        secret = signing_secret if signing_secret is not None else webhook.signing_secret
        self.signer: Optional[Signer] = Signer(secret) if secret is not None else None
        self.webhook_config = webhook
        self.base_url: Optional[str] = webhook.base_url
        # Every broadcast thread, every outbox thread and the process() loop may share one partner host.
        self.client_threads = 2 * webhook.max_workers + 1
        super().__init__(name=name, client_config=client_config,
                         redactor=Redactor(split_secrets(secret) if secret is not None else ()))
        self.client.on_attempt = events.attempt  # each request is a delivery attempt
        self._build_parts(outbox)

    def _build_parts(self, outbox: Optional[OutboxStore]) -> None:
        webhook, logger, stats = self.webhook_config, self.logger, self._stats
        checks = InputChecks(EndpointResolver(webhook.base_url, webhook.endpoints), webhook.max_payload_bytes)
        # Broadcasts and outbox deliveries each have a pool of max_workers threads, so that a
        # busy outbox (a slow partner) never queues a broadcast behind its requests.
        self._pools = (DeliveryPool(BROADCAST_POOL, webhook.max_workers, self.name, logger),
                       DeliveryPool(OUTBOX_POOL, webhook.max_workers, self.name, logger))
        self._direct = DirectSender(self.client, self.signer, checks, lambda: self.stop_event,
                                    logger=logger, stats=stats)
        self._broadcaster = Broadcaster(self._direct, self._pools[0], lambda: self.stop_event,
                                        logger=logger, stats=stats)
        self._producer = OutboxProducer(self.client, self.signer, checks, self._pools[1], self._direct_run,
                                        webhook, outbox=outbox, logger=logger, stats=stats)
        self._relay = Relay(lambda message: self.process_message(message), lambda: self.stop_event,
                            logger=logger, stats=stats, join_timeout=webhook.timeout)

    @property
    def name(self) -> str:
        """The worker's identity: in logs and metrics, its jobs' and threads' names."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        _WORKER_NAME.__set__(self, value)
        if "_relay" in vars(self):  # renamed after construction: the parts log and name threads as it
            for part in (self._direct, self._broadcaster, self._producer, self._relay, *self._pools):
                part.logger = self.logger
            for pool in self._pools:
                pool.owner = value

    # -- the parts ------------------------------------------------------------------

    @property
    def direct_sender(self) -> DirectSender:
        """Sends one webhook now (:meth:`deliver`)."""
        return self._direct

    @property
    def broadcaster(self) -> Broadcaster:
        """Sends one webhook to many endpoints at once, on the broadcast pool (:meth:`broadcast`)."""
        return self._broadcaster

    @property
    def outbox_producer(self) -> OutboxProducer:
        """Stores webhooks in the outbox and delivers them on the outbox pool (:meth:`enqueue`, :meth:`flush`)."""
        return self._producer

    @property
    def relay(self) -> Relay:
        """Consumes :attr:`source` for :meth:`process` and :meth:`run_once`."""
        return self._relay

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
        return self._direct.deliver(endpoint, data, headers, delivery_id=delivery_id, cancel=cancel)

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
        return self._broadcaster.broadcast(endpoints, data, headers, fail_fast)

    # -- the outbox -----------------------------------------------------------------

    @property
    def outbox(self) -> OutboxStore:
        """The queue of :meth:`enqueue`, opened on first use.

        ``WebhookConfig.outbox_url`` (WEBHOOK_OUTBOX_URL: PostgreSQL or SQLite) or the
        SQLite file ``outbox_path`` (WEBHOOK_OUTBOX_PATH) when set; otherwise an
        in-memory outbox, which is NOT durable: what is pending dies with the process.
        ``outbox.counts()`` gives pending, delivered and dead.
        """
        return self._producer.outbox

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
        delivery_id = self._producer.enqueue(endpoint, data, headers, delivery_id=delivery_id,
                                             connection=connection)
        runner = self._runner
        if runner is not None and self.running:  # in use since start(): the running Runner delivers it
            self._producer.loop_in(runner, f"{self.name}-outbox")
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
        return self._producer.flush(timeout)

    # -- the main loop and its source ---------------------------------------------

    def process(self) -> None:
        """The worker's main loop: consume ``self.source`` until stopped.

        Each message goes to :meth:`process_message`, then is ack'ed; if
        process_message raises, it is logged with its traceback and nack'ed
        (requeued) and the loop goes on. Override to run your own loop; if it
        returns before stop(), the worker idles until stopped.
        """
        if self.source is not None:
            self._relay.consume(self.source)

    @counted
    def process_message(self, message: Message) -> Optional[bool]:
        """Handle one message of ``self.source`` (override to route messages your way).

        By default the message is sent to ``message.headers["endpoint"]`` (its
        body, its id as webhook id) and the result returned; a message without
        that header is logged and skipped (None). A delivery interrupted by
        stop() raises DeliveryError, so that the message is requeued, not lost.
        """
        endpoint = message.headers.get("endpoint")
        if not endpoint:
            self.logger.warning("message {message_id} has no 'endpoint' header: skipped, not sent",
                                message_id=message.id)
            return None
        result = self.deliver(endpoint, message.body, delivery_id=message.id)
        if not result.ok and self.stop_event.is_set():
            raise DeliveryError(f"delivery interrupted by stop: {result.error}", url=result.url,
                                attempts=result.attempts)
        return result.ok

    def _relays(self) -> bool:
        """Whether there is a main loop to run: a source, or a process() of the subclass's own."""
        return self.source is not None or type(self).process is not WebhookSenderWorker.process

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
        if self._relays():  # process() on a thread of its own, until the source goes quiet
            results, error = self._relay.drain(self.source, self.process, f"syncworkers-once-{self.name}")
        if self._producer.in_use:
            error = error or self._producer.flush_once(self.webhook_config.timeout)
        return CycleResult(ok=error is None, results=results, error=error)

    def jobs(self) -> List[Job]:
        """A loop job running :meth:`process` when there is a source or process() is overridden,
        and one delivering the outbox when it is configured or in use (a sender used
        directly needs no thread). A configured outbox file is opened here, so that
        a bad path fails start() rather than the loop."""
        jobs: List[Job] = []
        if self._relays():
            jobs.append(LoopJob(f"{self.name}-process",
                                lambda stop: self._relay.loop(self.source, self.process, stop)))
        if self._producer.in_use:
            self._producer.open()  # now, so that a bad location fails start()
            jobs.append(LoopJob(f"{self.name}-outbox", self._producer.run))
        return jobs

    # -- lifecycle ----------------------------------------------------------------

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Stop: interrupt broadcasts and the source, then let in-flight deliveries end up to *timeout*.

        Outbox deliveries still on the wire at the timeout are handed back to the
        outbox (pending), for the next run or another process: nothing is lost.
        """
        deadline = Deadline(timeout)
        # The run's stop signal reaches broadcasts and retry waits at once; the source is closed too.
        if self.source is not None:
            self.source.close()
        ended = super().stop(timeout)
        # Over libcurl the outbox's attempts hold no pool thread until they land: wait for them (and for
        # the records they hand the pool) as for pool work, before the pool goes.
        landed = (self._producer.settle(deadline.remaining())
                  if self._pools[1].started or deadline.at is not None else True)
        pending = stop_pools(self._pools, deadline)
        if pending or not landed:
            self.logger.warning("stop() timed out with {in_flight} deliveries still in flight: the outbox's are "
                                "handed back and sent again later (same webhook-id)",
                                in_flight=len(pending) + (0 if landed else self._producer.in_flight))
        self._producer.hand_back()
        return ended and not pending and landed

    def close(self) -> None:
        """Stop (unless a shared Runner drives the worker), release connections, close the outbox it opened.

        An outbox file is opened again by a later ``start()`` or ``enqueue()``; an
        in-memory outbox is gone for good.
        """
        shared = self._runner is not None and self._runner.running and self._own_runner is None
        super().close()
        if not shared:
            self._producer.close()

    def not_ready_reasons(self) -> List[str]:
        """HTTPWorker's reasons (an open circuit), and an outbox in use that cannot be read."""
        reasons = super().not_ready_reasons()
        if self._producer.unreachable:
            reasons.append("outbox unreachable")
        return reasons

    def health(self) -> Dict[str, Any]:
        """HTTPWorker.health() plus ``deliveries`` (direct sends and the outbox's together),
        the broadcast pool and, once in use, the outbox (``oldest_pending_seconds`` included)."""
        data = super().health()
        data["deliveries"] = delivery_counts(self._stats)
        data["broadcast_pool"] = self._broadcaster.pool.health()
        outbox = self._producer.health()
        if outbox is not None:
            data["outbox"] = outbox
        return data

    def __repr__(self) -> str:
        signing = "off" if self.signer is None else repr(self.signer)
        return (f"<{type(self).__name__} {self.name!r} base_url={safe_url(self.base_url)!r} "
                f"endpoints={sorted(self.webhook_config.endpoints)} signing={signing} "
                f"running={self.running}>")


__all__ = ["WebhookSenderWorker", "CycleResult", "DeliveryResult", "encode_body", "CANCELLED", "STOPPED"]
