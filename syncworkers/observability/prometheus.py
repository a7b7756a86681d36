"""Prometheus metrics (``pip install 'syncworkers[prometheus]'``).

Importing ``syncworkers`` with prometheus_client installed calls :func:`install`:
the metrics below join prometheus_client's default ``REGISTRY``, so an app that
already serves ``/metrics`` shows them with no more code. ``install(registry)``
puts a second set in a registry of your own.

Counters and histograms move as workers report (:mod:`syncworkers.observability.events`);
circuit states and outbox counts are read at scrape time by a collector that
caches them briefly and never waits more than :data:`SCRAPE_TIMEOUT` for a
slow store (the last values read are served meanwhile).

=======================================================  ===================================
metric                                                   what
=======================================================  ===================================
``syncworkers_polls_total{worker,outcome}``              polls by outcome (events.POLL_OUTCOMES)
``syncworkers_poll_duration_seconds{worker}``            histogram: request, retries, processing
``syncworkers_skipped_ticks_total{worker}``              ticks skipped (the last poll still ran)
``syncworkers_deliveries_total{host,outcome}``           delivered, failed (direct send), dead
``syncworkers_delivery_attempts_total{host,result}``     requests by result (2xx..5xx, timeout, error)
``syncworkers_delivery_duration_seconds{host}``          histogram: one observation per attempt
``syncworkers_circuit_state{host}``                      0 closed, 1 half-open, 2 open
``syncworkers_outbox_deliveries{state}``                 pending, in_flight, delivered, dead
``syncworkers_outbox_oldest_pending_seconds``            age of the oldest undelivered webhook
=======================================================  ===================================
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from . import events

logger = logging.getLogger(__name__)

#: Longest a scrape waits for the outbox counts before serving the last ones read.
SCRAPE_TIMEOUT = 2.0
#: Seconds outbox counts read at a scrape are reused (scrapes from several Prometheus servers).
CACHE_SECONDS = 1.0
#: Labelled children the delivery metrics keep looked up (hosts x results; bounded like the label sets).
_CHILDREN_CACHED = 4096
#: The value of ``syncworkers_circuit_state`` for each state.
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
#: The states of ``syncworkers_outbox_deliveries`` (pending includes in_flight, as in ``counts()``).
OUTBOX_STATES = ("pending", "in_flight", "delivered", "dead", "held")

OutboxView = Dict[str, Any]


class _Bounded:
    """Calls *read* on a short-lived thread, waits at most *timeout*, reuses a result for *cache_seconds*.

    A read still running after the timeout finishes on its own and its result
    serves the next scrape; there is never more than one read at a time.
    """

    def __init__(self, read: Callable[[], List[OutboxView]], timeout: float, cache_seconds: float) -> None:
        self._read = read
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._value: List[OutboxView] = []
        self._read_at = -float("inf")
        self._thread: Optional[threading.Thread] = None

    def get(self) -> List[OutboxView]:
        with self._lock:
            if time.monotonic() - self._read_at < self._cache_seconds:
                return self._value
            thread = self._thread
            if thread is None or not thread.is_alive():
                thread = self._thread = threading.Thread(target=self._refresh, name="syncworkers-scrape",
                                                         daemon=True)
                thread.start()
        thread.join(self._timeout)
        with self._lock:
            if thread.is_alive():
                logger.warning("outbox counts took more than %.1fs; serving the last ones read", self._timeout)
            return self._value

    def _refresh(self) -> None:
        try:
            value = self._read()
        except Exception:
            logger.exception("reading outbox counts for a scrape failed")
            return
        with self._lock:
            self._value, self._read_at = value, time.monotonic()


def _outboxes(workers: Iterable[Any]) -> List[OutboxView]:
    """The outbox section of each sender's health(), one per outbox file (several senders may share one)."""
    seen: Dict[Any, OutboxView] = {}
    for worker in workers:
        view = worker.health().get("outbox")  # present once a sender's outbox is in use
        if view is not None and view.get("counts") is not None:
            seen[view.get("path") or id(worker)] = view
    return list(seen.values())


class StateCollector(Collector):
    """Circuit states (read live) and outbox counts (read bounded and cached) at scrape time."""

    def __init__(self, workers: Callable[[], List[Any]] = events.workers, *, timeout: float = SCRAPE_TIMEOUT,
                 cache_seconds: float = CACHE_SECONDS) -> None:
        self._workers = workers
        self._outboxes = _Bounded(lambda: _outboxes(self._workers()), timeout, cache_seconds)

    def describe(self) -> Iterable[Metric]:
        return []  # values exist only at collect(); nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        circuit = GaugeMetricFamily("syncworkers_circuit_state",
                                    "Circuit breaker state per host: 0 closed, 1 half-open, 2 open.",
                                    labels=["host"])
        states: Dict[str, int] = {}
        for worker in self._workers():
            client = getattr(worker, "client", None)
            if client is None:
                continue
            for key, state in client.breakers.states().items():
                host = key.split("://", 1)[-1]
                # Several workers may call one host: report the worst of their circuits.
                states[host] = max(states.get(host, 0), CIRCUIT_STATES.get(state, 0))
        for host, value in sorted(states.items()):
            circuit.add_metric([host], value)
        yield circuit
        views = self._outboxes.get()
        deliveries = GaugeMetricFamily("syncworkers_outbox_deliveries",
                                       "Webhooks in the outbox by state (pending includes in_flight).",
                                       labels=["state"])
        oldest = GaugeMetricFamily("syncworkers_outbox_oldest_pending_seconds",
                                   "Age of the oldest webhook not yet delivered nor dead (0 when none).")
        if views:
            for state in OUTBOX_STATES:
                deliveries.add_metric([state], sum(view["counts"].get(state, 0) for view in views))
            ages = [view["oldest_pending_seconds"] for view in views
                    if view.get("oldest_pending_seconds") is not None]
            if ages:
                oldest.add_metric([], max(ages))
        yield deliveries
        yield oldest


class PrometheusMetrics:
    """The syncworkers metrics in one registry, fed by :mod:`syncworkers.observability.events`; see the module doc."""

    def __init__(self, registry: CollectorRegistry = REGISTRY, *,
                 workers: Callable[[], List[Any]] = events.workers, timeout: float = SCRAPE_TIMEOUT,
                 cache_seconds: float = CACHE_SECONDS) -> None:
        self.registry = registry
        self.polls = Counter("syncworkers_polls_total", "Polls by worker and outcome.",
                             ["worker", "outcome"], registry=registry)
        self.poll_duration = Histogram("syncworkers_poll_duration_seconds",
                                       "Time of one poll: request, retries and processing.",
                                       ["worker"], registry=registry)
        self.skipped_ticks = Counter("syncworkers_skipped_ticks_total",
                                     "Poll ticks skipped because the previous poll was still running.",
                                     ["worker"], registry=registry)
        self.deliveries = Counter("syncworkers_deliveries_total",
                                  "Webhooks by outcome: delivered, failed (a direct send), dead (outbox).",
                                  ["host", "outcome"], registry=registry)
        self.attempts = Counter("syncworkers_delivery_attempts_total",
                                "Webhook requests by result: status class, timeout or error.",
                                ["host", "result"], registry=registry)
        self.attempt_duration = Histogram("syncworkers_delivery_duration_seconds",
                                          "Time of one webhook request (one observation per attempt).",
                                          ["host"], registry=registry)
        #: Labelled children of the delivery metrics, by (metric, labels): the hot path looks them up once.
        self._children: Dict[Tuple[Any, ...], Any] = {}
        self.state = StateCollector(workers, timeout=timeout, cache_seconds=cache_seconds)
        registry.register(self.state)
        events.subscribe(self)

    # -- events.Observer ----------------------------------------------------------

    def on_poll(self, worker: str, outcome: str, seconds: float) -> None:
        self._child(self.polls, worker, outcome).inc()
        self._child(self.poll_duration, worker).observe(seconds)

    def on_skipped_ticks(self, worker: str, count: int) -> None:
        self.skipped_ticks.labels(worker).inc(count)

    def on_delivery(self, host: str, outcome: str) -> None:
        self._child(self.deliveries, host, outcome).inc()

    def on_attempt(self, host: str, result: str, seconds: float) -> None:
        self._child(self.attempts, host, result).inc()
        self._child(self.attempt_duration, host).observe(seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        """*metric*'s child for *labels*, looked up once (``labels()`` costs more than the count itself)."""
        key = (id(metric),) + labels
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= _CHILDREN_CACHED:
                self._children.clear()
            child = self._children[key] = metric.labels(*labels)
        return child

    def close(self) -> None:
        """Stop counting and take every metric out of the registry."""
        events.unsubscribe(self)
        for collector in (self.polls, self.poll_duration, self.skipped_ticks, self.deliveries, self.attempts,
                          self.attempt_duration, self.state):
            self.registry.unregister(collector)


_lock = threading.Lock()
_default: Optional[PrometheusMetrics] = None


def install(registry: Optional[CollectorRegistry] = None) -> PrometheusMetrics:
    """The metrics in *registry*: the default registry's are created once (later calls return them);
    a registry of your own gets a new set each call (``close()`` it to take them out)."""
    global _default
    if registry is not None and registry is not REGISTRY:
        return PrometheusMetrics(registry)
    with _lock:
        if _default is None:
            _default = PrometheusMetrics(REGISTRY)
        return _default


def exposition(registry: Optional[CollectorRegistry] = None) -> Tuple[bytes, str]:
    """The text exposition of *registry* (default: the default registry) and its content type."""
    return generate_latest(registry or REGISTRY), CONTENT_TYPE_LATEST


__all__ = ["CACHE_SECONDS", "CIRCUIT_STATES", "OUTBOX_STATES", "PrometheusMetrics", "SCRAPE_TIMEOUT",
           "StateCollector", "exposition", "install"]
