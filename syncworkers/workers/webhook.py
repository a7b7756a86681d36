"""WebhookSenderWorker: JSON webhooks with retries, per-host breakers, signing and broadcast.

A delivery is one JSON body (serialised once) POSTed with a stable ``webhook-id``
and ``webhook-timestamp`` (and ``webhook-signature`` with a secret) that stay the
same on every retry, so receivers can de-duplicate. Redirects are not followed.
Failures never raise: :meth:`WebhookSenderWorker.deliver` returns a
:class:`DeliveryResult` and logs why; only bad input (an unknown endpoint, an
invalid URL, data JSON cannot hold) raises, before anything is sent.
:meth:`WebhookSenderWorker.enqueue` stores a delivery in the outbox instead;
:mod:`syncworkers.delivery.dispatch` delivers it.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set

from ..observability import events
from ..observability.redaction import Redactor
from ..config.settings import HTTPClientConfig, RetryConfig, WebhookConfig
from ..config.base import with_other_errors
from ..delivery.request import (
    DeliveryResult,
    check_delivery_id,
    check_headers,
    delivery_headers,
    encode_body,
)
from ..delivery.dispatch import Dispatcher
from ..exceptions import ConfigError, RequestError, safe_url
from ..http.limits import HostLimiter
from ..message import Message
from ..outbox import OutboxStore
from ..http.outcome import Kind, classify_error
from ..scheduling.runner import LoopJob
from ..signals import Deadline, StopSignal
from ..signing import Signer, split_secrets
from .base import HTTPWorker, Job
from ..delivery.broadcast import CANCELLED, Broadcaster
from ..delivery.endpoints import EndpointResolver
from .outbox_sending import BROADCAST_POOL, OUTBOX_POOL, OutboxMixin, _oldest_pending_seconds
from .relay import CycleResult, RelayMixin

#: HTTPClientConfig fields that also set a webhook's delivery settings (below WebhookConfig's own).
_SHARED_FIELDS = ("base_url", "max_retries", "retry_delay", "retry_backoff")
_TIMEOUT_FIELDS = ("timeout", "connect_timeout", "read_timeout")
#: The error of a send asked of a worker whose run was stopped.
STOPPED = "worker stopped"
#: Outcomes logged as warnings, not errors: nothing went wrong with the receiver's answer.
_QUIET_KINDS = (Kind.CIRCUIT_OPEN, Kind.INTERRUPTED)


def _explicit(config: Any) -> Dict[str, Any]:
    if config is None:
        return {}
    return config.explicit_items() if hasattr(config, "explicit_items") else dict(config)


class WebhookSenderWorker(RelayMixin, OutboxMixin, HTTPWorker):
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
        client_fields["max_in_flight_per_host"] = webhook.per_host_limit
        if webhook.block_private_networks:  # the SSRF guard: the client's transports enforce it
            client_fields["block_private_networks"] = True
        if webhook.allowed_networks:
            client_fields["allowed_networks"] = webhook.allowed_networks
        if not any(k in _explicit(http_config) for k in _TIMEOUT_FIELDS):
            client_fields["timeout"] = webhook.timeout
        client_config = HTTPClientConfig.resolve(http_config, **client_fields)
        secret = signing_secret if signing_secret is not None else webhook.signing_secret
        self.signer: Optional[Signer] = Signer(secret) if secret is not None else None
        self.webhook_config = webhook
        self.base_url: Optional[str] = webhook.base_url
        # Every broadcast thread, every outbox thread and the process() loop may share one partner host.
        self.client_threads = 2 * webhook.max_workers + 1
        super().__init__(name=name, client_config=client_config,
                         redactor=Redactor(split_secrets(secret) if secret is not None else ()))
        self.client.on_attempt = events.attempt  # each request is a delivery attempt
        # Broadcasts and outbox deliveries each have a pool of max_workers threads, so that a
        # busy outbox (a slow partner) never queues a broadcast behind its requests.
        self._pools: Dict[str, ThreadPoolExecutor] = {}
        self._pool_lock = threading.Lock()
        self._futures: Dict[Future[Any], str] = {}  # in flight -> the pool it runs on
        self._outbox: Optional[OutboxStore] = outbox
        self._own_outbox = outbox is None
        self._dispatcher: Optional[Dispatcher] = None
        self._outbox_lock = threading.Lock()
        # The outbox pool's own per-host limit (direct sends and broadcasts have the client's):
        # a busy outbox never holds up a broadcast, and a slow partner never takes either pool.
        self._outbox_limiter = HostLimiter(webhook.per_host_limit)
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
        body = encode_body(data, self.webhook_config.max_payload_bytes)
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
        body = encode_body(data, self.webhook_config.max_payload_bytes)
        extra = check_headers(headers)
        run = self.stop_event
        if run.is_set():
            return {e: self._record(DeliveryResult.failed(e, url, STOPPED), "warning") for e, url in targets.items()}

        def deliver(endpoint: str, url: str, cancel: StopSignal) -> DeliveryResult:
            return self._deliver(endpoint, url, body, extra, check_delivery_id(None), cancel)

        return self._broadcaster.run(targets, deliver, run, fail_fast)











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
        if self._relays():
            results, error = self._drain_source()
        if self.webhook_config.outbox_location is not None or self._outbox is not None:
            error = error or self._flush_once()
        return CycleResult(ok=error is None, results=results, error=error)




    def jobs(self) -> List[Job]:
        """A loop job running :meth:`process` when there is a source or process() is overridden,
        and one delivering the outbox when it is configured or in use (a sender used
        directly needs no thread). A configured outbox file is opened here, so that
        a bad path fails start() rather than the loop."""
        jobs: List[Job] = []
        if self._relays():
            jobs.append(LoopJob(f"{self.name}-process", self._run_process))
        if self.webhook_config.outbox_location is not None or self._outbox is not None:
            self._outbox_dispatcher()
            jobs.append(LoopJob(f"{self.name}-outbox", self._run_outbox))
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
        with self._pool_lock:
            pools, self._pools = list(self._pools.values()), {}
            futures = list(self._futures)
        pending: Set[Future[Any]] = set()
        for pool in pools:
            pool.shutdown(wait=False)
        if pools:
            _, pending = wait(futures, deadline.remaining())
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
            outcome, attempts = getattr(response, "outcome"), getattr(response, "attempts")
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
        fields: Dict[str, Any] = dict(endpoint=result.endpoint, url=result.url, status=result.status_code,
                                      attempts=result.attempts, delivery_id=result.delivery_id,
                                      duration=round(result.duration, 3))
        if result.ok:
            stats.incr("delivered")
            self.logger.info("webhook delivered", **fields)
        else:
            stats.incr("failed")
            getattr(self.logger, level)("webhook not delivered", error=result.error, **fields)
        return result

    def _submit(self, func: Callable[..., Any], *args: Any, kind: str = BROADCAST_POOL) -> Future[Any]:
        with self._pool_lock:
            pool = self._pools.get(kind)
            if pool is None:
                pool = self._pools[kind] = ThreadPoolExecutor(
                    self.webhook_config.max_workers, thread_name_prefix=f"syncworkers-{kind}-{self.name}")
            future = pool.submit(func, *args)
            self._futures[future] = kind
        future.add_done_callback(self._forget)
        return future

    def _submit_outbox(self, func: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._submit(func, *args, kind=OUTBOX_POOL)

    def _forget(self, future: Future[Any]) -> None:
        with self._pool_lock:
            self._futures.pop(future, None)
        if not future.cancelled() and future.exception() is not None:
            self.logger.error("webhook delivery raised", exc_info=future.exception())


__all__ = ["WebhookSenderWorker", "CycleResult", "DeliveryResult", "encode_body", "CANCELLED", "STOPPED"]
