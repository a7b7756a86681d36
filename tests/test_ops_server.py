"""/metrics, /livez and /readyz served for a Runner's workers, and the health() shape they share."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from syncworkers import (
    CircuitBreakerConfig,
    ConfigError,
    HTTPClientConfig,
    PollerWorker,
    Runner,
    WebhookConfig,
    WebhookSenderWorker,
)
from syncworkers.observability.ops_server import OpsServer
from syncworkers.observability.prometheus import PrometheusMetrics
from syncworkers.workers.poller import NOT_READY_AFTER

from .helpers import closed_port

NO_RETRY = HTTPClientConfig(max_retries=0)


def get(url):
    """(status, content type, body text) of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_livez_follows_the_runner_and_metrics_are_served(server):
    server.route("GET", "/x", status=200)
    registry = CollectorRegistry()
    exporter = PrometheusMetrics(registry)
    worker = PollerWorker(server.url("/x"), interval=60, name="x")
    runner = Runner([worker])
    try:
        with OpsServer(runner, [worker], registry=registry) as ops:
            assert ops.url.startswith("http://127.0.0.1:") and ops.port > 0
            assert get(ops.url + "/livez")[0] == 503  # not started yet
            runner.start()
            status, _, body = get(ops.url + "/livez")
            assert (status, json.loads(body)) == (200, {"alive": True})
            worker.poll()
            status, content_type, body = get(ops.url + "/metrics")
            assert status == 200 and content_type.startswith("text/plain")
            names = {s.name for family in text_string_to_metric_families(body) for s in family.samples}
            assert "syncworkers_polls_total" in names
            assert get(ops.url + "/nothing")[0] == 404
            runner.stop()
            assert get(ops.url + "/livez")[0] == 503
    finally:
        runner.stop()
        worker.close()
        exporter.close()


def test_readyz_names_each_worker_that_is_not_ready_and_why(server):
    server.route("POST", "/hook", status=500)
    server.route("GET", "/x", status=200)
    http = HTTPClientConfig(circuit_breaker_config=CircuitBreakerConfig(failure_threshold=1, timeout_seconds=60))
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(max_retries=0), http, name="hooks")
    poller = PollerWorker(f"http://127.0.0.1:{closed_port()}/x", interval=60, http_config=NO_RETRY, name="api")
    good = PollerWorker(server.url("/x"), interval=60, name="fine")
    runner = Runner([sender, poller, good])
    try:
        with runner, OpsServer(runner, [sender, poller, good]) as ops:
            status, _, body = get(ops.url + "/readyz")
            assert status == 200 and json.loads(body)["ready"] is True
            sender.send_webhook("/hook", {})
            for _ in range(NOT_READY_AFTER):
                poller.poll()
            status, content_type, body = get(ops.url + "/readyz")
            report = json.loads(body)
            assert (status, content_type, report["ready"]) == (503, "application/json", False)
            by_name = {w["worker"]: w for w in report["workers"]}
            assert by_name["hooks"]["reasons"] == [f"circuit open for {server.base_url}"]
            (reason,) = by_name["api"]["reasons"]  # the runner's own first poll may have failed too
            assert reason.endswith(" polls failed in a row") and int(reason.split()[0]) >= NOT_READY_AFTER
            assert by_name["fine"] == {"worker": "fine", "ready": True, "reasons": []}
    finally:
        for worker in (sender, poller, good):
            worker.close()


def test_readyz_reports_an_unreachable_outbox(server, tmp_path):
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=str(tmp_path / "o.db")), name="box")
    try:
        sender.outbox.counts()
        assert sender.ready()
        sender.outbox.close()  # as a store that went away
        assert sender.not_ready_reasons() == ["outbox unreachable"]
        assert sender.health()["status"] == "failing"
    finally:
        sender.close()


@pytest.mark.transport_independent
def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            OpsServer(Runner([]), [], port=port).start()
    with pytest.raises(ConfigError, match="metrics port"):
        OpsServer(Runner([]), [], port=70000)


def test_every_worker_has_the_same_health_shape(server, tmp_path):
    server.route("GET", "/x", status=200)
    server.route("POST", "/hook", status=200)
    poller = PollerWorker(server.url("/x"), interval=60)
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=str(tmp_path / "o.db"),
                                                                retry_schedule=(0.05,)))
    try:
        poller.poll()
        sender.send_webhook("/hook", {})
        sender.enqueue("/hook", {})
        assert sender.flush(5)
        shared = {"worker", "type", "running", "healthy", "ready", "reasons", "status", "circuits", "counters",
                  "latencies", "metrics"}
        for health in (poller.health(), sender.health()):
            assert shared <= set(health)
            assert (health["healthy"], health["ready"], health["status"], health["reasons"]) == (
                True, True, "ok", [])
            assert health["latencies"] and all(name.endswith(("_ms", "_seconds")) for name in health["latencies"])
        assert poller.health()["latencies"]["poll_latency_ms"]["count"] == 1
        assert poller.health()["interval_seconds"] == 60
        deliveries = sender.health()["deliveries"]
        # One count for direct sends and outbox deliveries alike.
        assert (deliveries["delivered"], deliveries["attempts"], deliveries["dead"]) == (2, 2, 0)
        assert sender.health()["outbox"]["oldest_pending_seconds"] == 0
    finally:
        poller.close()
        sender.close()


def test_a_poller_that_failed_once_is_degraded_but_ready(server):
    server.route("GET", "/x", status=[500, 200])
    with PollerWorker(server.url("/x"), interval=60, http_config=NO_RETRY) as worker:
        worker.poll()
        health = worker.health()
        assert (health["healthy"], health["ready"], health["status"]) == (False, True, "degraded")
        worker.poll()
        assert worker.health()["status"] == "ok"
