"""Prometheus metrics, each in a private CollectorRegistry, moved by real polls and deliveries on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from syncworkers import CircuitBreakerConfig, HTTPClientConfig, PollerWorker, Runner, WebhookConfig, WebhookSenderWorker
from syncworkers.observability import events
from syncworkers.observability.prometheus import PrometheusMetrics, StateCollector, install

from .helpers import closed_port, wait_for
from .server import Reply

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_RETRY = HTTPClientConfig(max_retries=0)
FAST = (0.05, 0.05, 0.05)


@pytest.fixture
def metrics():
    """A private registry whose collector sees only the workers a test puts in ``metrics.workers``."""
    watched = []
    registry = CollectorRegistry()
    exporter = PrometheusMetrics(registry, workers=lambda: list(watched), cache_seconds=0)
    exporter.workers = watched
    exporter.value = lambda name, **labels: registry.get_sample_value(name, labels)
    yield exporter
    exporter.close()


def host(server):
    return f"127.0.0.1:{server.port}"


def test_polls_are_counted_by_worker_and_outcome_and_timed(metrics, server):
    server.route("GET", "/items", replies=[Reply(200, b"[]"), Reply(500, b"x"), Reply(200, b"[]")])
    worker = PollerWorker(server.url("/items"), interval=60, http_config=NO_RETRY, name="items")
    gone = PollerWorker(f"http://127.0.0.1:{closed_port()}/x", interval=60, http_config=NO_RETRY, name="gone")
    try:
        for _ in range(3):
            worker.poll()
        gone.poll()
    finally:
        worker.close()
        gone.close()
    value = metrics.value
    assert value("syncworkers_polls_total", worker="items", outcome="success") == 2
    assert value("syncworkers_polls_total", worker="items", outcome="http_error") == 1
    assert value("syncworkers_polls_total", worker="gone", outcome="request_error") == 1
    assert value("syncworkers_poll_duration_seconds_count", worker="items") == 3
    assert value("syncworkers_poll_duration_seconds_sum", worker="items") > 0


def test_a_process_message_error_is_its_own_outcome(metrics, server):
    server.route("GET", "/items", json=[1])

    class Broken(PollerWorker):
        def process_message(self, message):
            raise RuntimeError("bug")

    with Broken(server.url("/items"), interval=60, name="broken") as worker:
        worker.poll()
    assert metrics.value("syncworkers_polls_total", worker="broken", outcome="process_error") == 1


def test_skipped_ticks_are_counted(metrics, server):
    server.route("GET", "/slow", delay=0.5)
    worker = PollerWorker(server.url("/slow"), interval=0.05, name="slow")
    with Runner([worker], max_workers=2):
        assert wait_for(lambda: (metrics.value("syncworkers_skipped_ticks_total", worker="slow") or 0) >= 1)
    worker.close()
    assert worker.health()["counters"]["skipped_ticks"] >= metrics.value("syncworkers_skipped_ticks_total",
                                                                         worker="slow")


def test_direct_sends_count_deliveries_and_every_attempt_by_host_never_by_path(metrics, server):
    server.route("POST", "/ok/orders/42", status=200)
    server.route("POST", "/down", status=500)
    config = WebhookConfig(max_retries=2, retry_delay=0.01)
    with WebhookSenderWorker(server.base_url, config) as sender:
        assert sender.send_webhook("/ok/orders/42?token=s3cret", {"a": 1})
        assert not sender.send_webhook("/down", {"a": 1})
    value = metrics.value
    assert value("syncworkers_deliveries_total", host=host(server), outcome="delivered") == 1
    assert value("syncworkers_deliveries_total", host=host(server), outcome="failed") == 1
    assert value("syncworkers_delivery_attempts_total", host=host(server), result="2xx") == 1
    assert value("syncworkers_delivery_attempts_total", host=host(server), result="5xx") == 3
    assert value("syncworkers_delivery_duration_seconds_count", host=host(server)) == 4
    hosts = {s.labels.get("host") for family in metrics.registry.collect() for s in family.samples}
    assert hosts - {None} == {host(server)}  # no path, query string or id in any label


def test_a_refused_connection_is_an_error_attempt(metrics):
    port = closed_port()
    with WebhookSenderWorker(f"http://127.0.0.1:{port}", WebhookConfig(max_retries=0)) as sender:
        assert not sender.send_webhook("/hook", {})
    assert metrics.value("syncworkers_delivery_attempts_total", host=f"127.0.0.1:{port}", result="error") == 1
    assert metrics.value("syncworkers_deliveries_total", host=f"127.0.0.1:{port}", outcome="failed") == 1


def test_outbox_outcomes_and_state_read_at_scrape_time(metrics, server, tmp_path):
    server.route("POST", "/ok", status=200)
    server.route("POST", "/gone", status=410)
    server.route("POST", "/flaky", status=503)
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=str(tmp_path / "o.db"),
                                                                retry_schedule=(3600.0,)))
    metrics.workers.append(sender)
    try:
        sender.enqueue("/ok", {})
        sender.enqueue("/gone", {})
        sender.enqueue("/flaky", {})  # fails once, then waits an hour: pending
        sender.flush(timeout=0.5)
        value = metrics.value
        assert value("syncworkers_deliveries_total", host=host(server), outcome="delivered") == 1
        assert value("syncworkers_deliveries_total", host=host(server), outcome="dead") == 1
        assert value("syncworkers_delivery_attempts_total", host=host(server), result="4xx") == 1
        assert value("syncworkers_delivery_attempts_total", host=host(server), result="5xx") == 1
        assert {state: value("syncworkers_outbox_deliveries", state=state)
                for state in ("pending", "in_flight", "delivered", "dead")} == {
            "pending": 1, "in_flight": 0, "delivered": 1, "dead": 1}
        assert value("syncworkers_outbox_oldest_pending_seconds") > 0
        health = sender.health()
        assert health["deliveries"]["delivered"] == 1 and health["deliveries"]["dead"] == 1
    finally:
        sender.close()


def test_circuit_state_per_host(metrics, server, server2):
    server.route("POST", "/hook", status=500)
    server2.route("POST", "/hook", status=200)
    http = HTTPClientConfig(circuit_breaker_config=CircuitBreakerConfig(failure_threshold=2, timeout_seconds=60))
    sender = WebhookSenderWorker(webhook_config=WebhookConfig(max_retries=0), http_config=http)
    metrics.workers.append(sender)
    try:
        sender.send_webhook(server2.url("/hook"), {})
        sender.send_webhook(server.url("/hook"), {})
        assert metrics.value("syncworkers_circuit_state", host=host(server)) == 0
        sender.send_webhook(server.url("/hook"), {})
        assert metrics.value("syncworkers_circuit_state", host=host(server)) == 2
        assert metrics.value("syncworkers_circuit_state", host=host(server2)) == 0
    finally:
        sender.close()


@pytest.mark.transport_independent
def test_a_slow_store_never_hangs_a_scrape():
    release, answered = threading.Event(), threading.Event()

    class SlowSender:
        client = None

        def health(self):
            release.wait(60)
            answered.set()
            return {"outbox": {"path": "x", "counts": {"pending": 7, "in_flight": 0, "delivered": 0, "dead": 0},
                               "oldest_pending_seconds": 1.0}}

    registry = CollectorRegistry()
    registry.register(StateCollector(lambda: [SlowSender()], timeout=0.2, cache_seconds=60))
    try:
        assert registry.get_sample_value("syncworkers_outbox_deliveries", {"state": "pending"}) is None
        assert not answered.is_set()  # the scrape ended at its timeout, not when the store answered
    finally:
        release.set()
    # The read finished in the background: the next scrape serves it.
    assert wait_for(lambda: registry.get_sample_value("syncworkers_outbox_deliveries", {"state": "pending"}) == 7)


def test_an_observer_that_raises_never_breaks_a_poll(server):
    server.route("GET", "/x", status=200)

    class Broken:
        def on_poll(self, *args):
            raise RuntimeError("observer bug")

    broken = Broken()
    events.subscribe(broken)
    try:
        with PollerWorker(server.url("/x"), interval=60) as worker:
            assert worker.poll().ok
    finally:
        events.unsubscribe(broken)


def test_building_a_worker_registers_in_the_default_registry(server):
    assert install() is install()  # created once
    server.route("GET", "/x", status=200)
    before = REGISTRY.get_sample_value("syncworkers_polls_total", {"worker": "default-reg", "outcome": "success"})
    with PollerWorker(server.url("/x"), interval=60, name="default-reg") as worker:
        worker.poll()
    after = REGISTRY.get_sample_value("syncworkers_polls_total", {"worker": "default-reg", "outcome": "success"})
    assert (before or 0) + 1 == after


@pytest.mark.transport_independent
def test_without_prometheus_client_nothing_breaks(server):
    server.route("GET", "/x", status=200)
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import syncworkers, urllib.request\n"
        "from syncworkers.observability.ops_server import OpsServer\n"
        f"w = syncworkers.PollerWorker({server.url('/x')!r}, interval=60)\n"
        "assert w.poll().ok\n"
        "r = syncworkers.Runner([])\n"
        "with OpsServer(r, [w]) as ops:\n"
        "    try:\n"
        "        urllib.request.urlopen(ops.url + '/metrics', timeout=10)\n"
        "    except urllib.error.HTTPError as e:\n"
        "        print(e.code, e.read().decode().strip())\n"
        "w.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "503 prometheus_client is not installed: pip install 'syncworkers[prometheus]'"
