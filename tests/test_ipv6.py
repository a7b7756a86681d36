"""IPv6 literals keep their brackets everywhere: stored URL, errors, logs, keys, metrics, the CLI.

Printed bare, ``::1:8080`` is another IPv6 address (and ``http://::1:8080/b`` no URL at
all). The receiver listens on the IPv6 loopback ``::1``; the test is skipped only on a
machine that has none.
"""

import json
import socket

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from syncworkers import HTTPClientConfig, PollerWorker, WebhookConfig, WebhookSenderWorker
from syncworkers.cli import cli
from syncworkers.observability.prometheus import PrometheusMetrics

from .helpers import LogCapture, unavailable
from .hostile import RecordingReceiver

TRANSPORTS = ["requests", "curl"]


def free_ipv6_port():
    """A port on ::1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def ipv6_loopback():
    try:
        free_ipv6_port()
    except OSError as exc:
        unavailable(f"no IPv6 loopback on this machine ({exc})", "IPv6 loopback")


@pytest.fixture
def metrics():
    registry = CollectorRegistry()
    exporter = PrometheusMetrics(registry, workers=lambda: [], cache_seconds=0)
    yield registry
    exporter.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_webhooks_to_an_ipv6_receiver_keep_its_brackets_end_to_end(transport, tmp_path, metrics):
    path = str(tmp_path / "outbox.db")
    http = HTTPClientConfig(transport=transport, max_retries=0)
    with RecordingReceiver("::1") as receiver:
        url = receiver.url("/b")
        assert url == f"http://[::1]:{receiver.port}/b"
        with WebhookSenderWorker(webhook_config=WebhookConfig(outbox_path=path), http_config=http) as worker:
            queued = worker.enqueue(url, {"a": 1})
            stored = worker.outbox.get(queued)
            assert (stored.endpoint, stored.url) == (url, url)
            direct = worker.deliver(url, {"a": 1})
            assert worker.flush(20) and worker.outbox.get(queued).state == "delivered"
            assert worker.health()["circuits"] == {f"http://[::1]:{receiver.port}": "closed"}
        poller = PollerWorker(url, interval=5, http_config=http)
        assert poller.poll().ok and poller.url == url and f"[::1]:{receiver.port}/b" in poller.name
    assert (direct.ok, direct.url, direct.endpoint) == (True, url, url)
    assert [dict(line.split(": ", 1) for line in head[1:])["Host"] for head in receiver.heads()] == \
        [f"[::1]:{receiver.port}"] * 3
    labels = {s.labels.get("host") for family in metrics.collect() for s in family.samples} - {None}
    assert labels == {f"[::1]:{receiver.port}"}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_failed_ipv6_delivery_keeps_the_brackets_in_errors_logs_and_the_cli(transport, tmp_path):
    path = str(tmp_path / "outbox.db")
    port = free_ipv6_port()
    url = f"http://[::1]:{port}/b"
    bare = f"::1:{port}"
    config = WebhookConfig(outbox_path=path, retry_schedule=(0.01,))
    with LogCapture() as logs:
        with WebhookSenderWorker(webhook_config=config,
                                 http_config=HTTPClientConfig(transport=transport, max_retries=0)) as worker:
            result = worker.deliver(url, {"a": 1})
            queued = worker.enqueue(url, {"a": 1})
            assert worker.flush(20)
            dead = worker.outbox.get(queued)
            endpoints = worker.outbox.endpoints()
    assert not result.ok and result.url == url and url in result.error
    assert dead.state == "dead" and dead.url == url and url in dead.last_error
    assert [e.endpoint for e in endpoints] == [f"[::1]:{port}/b"]
    runner = CliRunner()
    listed = runner.invoke(cli, ["outbox", "list", "--path", path])
    as_json = runner.invoke(cli, ["outbox", "list", "--json", "--path", path])
    health = runner.invoke(cli, ["outbox", "endpoints", "--path", path])
    assert (listed.exit_code, as_json.exit_code, health.exit_code) == (0, 0, 0)
    assert url in listed.output and f"[::1]:{port}/b" in health.output
    assert [(d["endpoint"], d["url"]) for d in json.loads(as_json.output)] == [(url, url)]
    for text in (result.error, dead.last_error, logs.text, listed.output, as_json.output, health.output):
        assert f" {bare}" not in text and f"/{bare}" not in text and f"({bare}" not in text, text
