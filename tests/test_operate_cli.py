"""A real ``syncworkers run --metrics-port`` process: metrics move, /readyz follows a partner's circuit.

A poller relays each polled event into a sender's outbox, delivered to a receiver
on 127.0.0.1 that the test turns from 200 to 500 and back.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import wait_for
from .server import Reply

pytestmark = pytest.mark.transport_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

APP = textwrap.dedent("""
    import os

    from syncworkers import (CircuitBreakerConfig, HTTPClientConfig, PollerWorker, WebhookConfig,
                             WebhookSenderWorker)

    breaker = CircuitBreakerConfig(failure_threshold=2, timeout_seconds=1.0)
    sender = WebhookSenderWorker(
        os.environ["TEST_HOOKS"],
        WebhookConfig(outbox_path=os.environ["TEST_OUTBOX"], retry_schedule=(0.2,) * 100),
        HTTPClientConfig(circuit_breaker_config=breaker), name="relay")


    class Events(PollerWorker):
        def process_message(self, message):
            sender.enqueue("/hook", message.body)
            sender.enqueue("/gone", message.body)


    poller = Events(os.environ["TEST_API"] + "/events", interval=0.2, name="events")
""")


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(base):
    """Every sample of /metrics as {(name, ((label, value), ...)): value}."""
    status, text = get(base + "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class Receiver:
    """The partner's webhook endpoint: answers ``status`` (changed by the test)."""

    def __init__(self):
        self.status = 200
        self.lock = threading.Lock()

    def __call__(self, request):
        with self.lock:
            return Reply(self.status, b"")


@pytest.fixture
def app(tmp_path, server, server2):
    """The running process and its ops URL; stopped with SIGTERM at the end (exit 0)."""
    (tmp_path / "relay_app.py").write_text(APP)
    server.route("GET", "/events", json=[{"event": 1}], delay=0.3)  # slower than the interval: ticks skip
    receiver = Receiver()
    server2.route("POST", "/hook", handler=receiver)
    server2.route("POST", "/gone", status=410)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTP_", "POLLER_", "WEBHOOK_"))}
    env.update(PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path)]), TEST_API=server.base_url,
               TEST_HOOKS=server2.base_url, TEST_OUTBOX=str(tmp_path / "outbox.db"))
    log = open(tmp_path / "stderr.log", "w+")
    proc = subprocess.Popen([sys.executable, "-c", "from syncworkers.cli import main; main()", "run",
                             "relay_app:poller", "relay_app:sender", "--metrics-port", "0"],
                            cwd=str(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        found = []

        def listening():
            log.seek(0)
            found[:] = re.findall(r"on (http://127\.0\.0\.1:\d+)", log.read())
            return bool(found) or proc.poll() is not None

        assert wait_for(listening, timeout=30) and found, (tmp_path / "stderr.log").read_text()
        yield found[0], receiver, server2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "stderr.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_metrics_move_and_readyz_follows_the_partners_circuit(app):
    base, receiver, hooks = app
    host = f"127.0.0.1:{hooks.port}"
    assert wait_for(lambda: get(base + "/livez") == (200, '{"alive": true}\n'), 30)  # once the runner started

    def moved(name, **labels):
        return scrape(base).get((name, tuple(sorted(labels.items()))), 0)

    first = moved("syncworkers_polls_total", worker="events", outcome="success")
    assert wait_for(lambda: moved("syncworkers_polls_total", worker="events", outcome="success") > first, 30)
    for name, labels in [
        ("syncworkers_poll_duration_seconds_count", {"worker": "events"}),
        ("syncworkers_skipped_ticks_total", {"worker": "events"}),
        ("syncworkers_deliveries_total", {"host": host, "outcome": "delivered"}),
        ("syncworkers_deliveries_total", {"host": host, "outcome": "dead"}),
        ("syncworkers_delivery_attempts_total", {"host": host, "result": "2xx"}),
        ("syncworkers_delivery_attempts_total", {"host": host, "result": "4xx"}),
        ("syncworkers_delivery_duration_seconds_count", {"host": host}),
        ("syncworkers_outbox_deliveries", {"state": "delivered"}),
        ("syncworkers_outbox_deliveries", {"state": "dead"}),
    ]:
        assert wait_for(lambda: moved(name, **labels) > 0, 30), (name, labels)
    samples = scrape(base)
    assert samples[("syncworkers_circuit_state", (("host", host),))] == 0
    assert ("syncworkers_outbox_oldest_pending_seconds", ()) in samples
    delivered = moved("syncworkers_deliveries_total", host=host, outcome="delivered")
    assert wait_for(lambda: moved("syncworkers_deliveries_total", host=host, outcome="delivered") > delivered, 30)
    assert get(base + "/readyz")[0] == 200

    with receiver.lock:
        receiver.status = 500  # the partner fails: its circuit opens
    assert wait_for(lambda: get(base + "/readyz")[0] == 503, 30)
    report = json.loads(get(base + "/readyz")[1])
    relay = next(w for w in report["workers"] if w["worker"] == "relay")
    assert relay["ready"] is False and f"circuit open for http://{host}" in relay["reasons"]
    assert moved("syncworkers_delivery_attempts_total", host=host, result="5xx") >= 2
    assert wait_for(lambda: moved("syncworkers_circuit_state", host=host) == 2, 30)

    with receiver.lock:
        receiver.status = 200  # back: a probe goes through and closes the circuit
    assert wait_for(lambda: get(base + "/readyz")[0] == 200 and moved("syncworkers_circuit_state", host=host) == 0,
                    30)
    assert get(base + "/livez")[0] == 200
