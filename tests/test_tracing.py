"""OpenTelemetry: each attempt a CLIENT span, its traceparent on the wire, outbox deliveries in the enqueuer's trace.

The spans are the SDK's own (the ``spans`` fixture: a TracerProvider with the InMemorySpanExporter)
against the loopback servers, over the transport the suite runs with. In this process the syncworkers
tracer is pointed at a provider of the test's own (a process can set its global provider once); the
tests across processes set the global provider as an application does.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from syncworkers import HTTPClientConfig, PollerWorker, WebhookConfig, WebhookSenderWorker
from syncworkers.config import settings as config_module
from syncworkers.observability import tracing

from .helpers import closed_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = WebhookConfig(max_retries=2, retry_delay=0.01)


def client_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]


def traceparent(span):
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def test_each_attempt_of_a_direct_send_is_a_client_span_child_of_the_callers_span(server, spans):
    server.route("POST", "/hooks/orders", status=[503, 200])
    with WebhookSenderWorker(server.base_url, FAST) as worker:
        with spans.app.start_as_current_span("checkout") as checkout:
            assert worker.send_webhook("/hooks/orders", {"order": 1})

    first, second = client_spans(spans)
    for span in (first, second):
        assert span.name == "POST" and span.parent.span_id == checkout.get_span_context().span_id
        assert span.context.trace_id == checkout.get_span_context().trace_id
        assert span.attributes["http.request.method"] == "POST"
        assert span.attributes["url.full"] == server.url("/hooks/orders")
        assert span.attributes["server.address"] == "127.0.0.1" and span.attributes["server.port"] == server.port
    assert first.attributes["http.response.status_code"] == 503 and first.attributes["error.type"] == "503"
    assert first.status.status_code is StatusCode.ERROR and "http.request.resend_count" not in first.attributes
    assert second.attributes["http.response.status_code"] == 200 and "error.type" not in second.attributes
    assert second.status.status_code is StatusCode.UNSET and second.attributes["http.request.resend_count"] == 1
    # Each attempt carries its own span's context on the wire (W3C), the same webhook-id on both.
    assert [r.header("traceparent") for r in server.requests] == [traceparent(first), traceparent(second)]
    assert len({r.header("webhook-id") for r in server.requests}) == 1


def test_a_broadcast_on_pool_threads_is_the_callers_child(server, spans):
    for path in ("/a", "/b", "/c"):
        server.route("POST", path, status=200)
    with WebhookSenderWorker(server.base_url, FAST) as worker:
        with spans.app.start_as_current_span("alert") as alert:
            assert worker.broadcast_webhook(["/a", "/b", "/c"], {"x": 1}) == {"/a": True, "/b": True, "/c": True}

    found = client_spans(spans)
    assert len(found) == 3
    assert {s.parent.span_id for s in found} == {alert.get_span_context().span_id}
    assert sorted(r.header("traceparent") for r in server.requests) == sorted(traceparent(s) for s in found)


def test_a_poll_request_is_a_span_with_the_url_masked_and_a_failure_says_its_error_type(server, spans):
    server.route("GET", "/items", json=[])
    poller = PollerWorker(server.url("/items"), interval=60, params={"api_key": "k-123456789", "page": "1"})
    refused = None
    try:
        assert poller.poll().ok
        refused = PollerWorker(f"http://127.0.0.1:{closed_port()}/down", interval=60,
                               http_config=HTTPClientConfig(max_retries=0))
        assert not refused.poll().ok
    finally:
        poller.close()
        if refused is not None:
            refused.close()

    ok, failed = client_spans(spans)
    assert ok.parent is None and ok.name == "GET"  # a poll on the runner's pool starts its own trace
    assert ok.attributes["url.full"] == server.url("/items") + "?***"  # no query value, no key
    assert ok.attributes["http.response.status_code"] == 200
    assert failed.attributes["error.type"] == "TransportError" and failed.status.status_code is StatusCode.ERROR
    assert "http.response.status_code" not in failed.attributes
    assert "k-123456789" not in json.dumps([dict(s.attributes) for s in (ok, failed)])


def test_an_outbox_delivery_continues_the_trace_that_enqueued_it_attempt_after_attempt(server, spans, tmp_path):
    server.route("POST", "/hooks/orders", status=[500, 200])
    config = WebhookConfig(outbox_path=str(tmp_path / "o.db"), retry_schedule=[0.05])
    with WebhookSenderWorker(server.base_url, config) as worker:
        with spans.app.start_as_current_span("checkout") as checkout:
            delivery_id = worker.enqueue("/hooks/orders", {"order": 1})
        stored = worker.outbox.get(delivery_id).trace_context
        assert stored == {"traceparent": traceparent(checkout)}  # kept with the delivery
        assert worker.flush(timeout=20)

    attempts = client_spans(spans)
    assert len(attempts) == 2
    assert all(s.parent.span_id == checkout.get_span_context().span_id for s in attempts)
    assert [s.attributes["http.response.status_code"] for s in attempts] == [500, 200]
    assert [r.header("traceparent") for r in server.requests] == [traceparent(s) for s in attempts]


def test_without_a_current_span_nothing_is_stored_and_no_traceparent_is_sent(server, spans, tmp_path):
    server.route("POST", "/hook", status=200)
    config = WebhookConfig(outbox_path=str(tmp_path / "o.db"))
    with WebhookSenderWorker(server.base_url, config) as worker:
        delivery_id = worker.enqueue("/hook", {})
        assert worker.outbox.get(delivery_id).trace_context is None
        assert worker.flush(timeout=20)
    (attempt,) = client_spans(spans)
    assert attempt.parent is None  # a root span of its own
    assert server.requests[0].header("traceparent") == traceparent(attempt)


# -- across processes -----------------------------------------------------------------------------

ENQUEUE = textwrap.dedent("""
    import json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from syncworkers import WebhookConfig, WebhookSenderWorker

    trace.set_tracer_provider(TracerProvider())          # the application's SDK
    outbox, base_url = sys.argv[1:3]
    with WebhookSenderWorker(base_url, WebhookConfig(outbox_url=outbox)) as sender:
        with trace.get_tracer("shop").start_as_current_span("POST /orders") as span:
            delivery_id = sender.enqueue("/hooks/orders", {"order": 7})
        context = span.get_span_context()
    print(json.dumps({"id": delivery_id, "trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}",
                      "flags": f"{int(context.trace_flags):02x}"}))
""")


def enqueue_in_another_process(outbox_url, base_url):
    done = subprocess.run([sys.executable, "-c", ENQUEUE, outbox_url, base_url], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_delivery_enqueued_in_one_process_is_delivered_in_another_in_the_same_trace(server, spans, tmp_path,
                                                                                      store, request):
    outbox_url = f"sqlite:///{tmp_path / 'o.db'}" if store == "sqlite" else request.getfixturevalue("pg_db")
    server.route("POST", "/hooks/orders", status=200)
    enqueued = enqueue_in_another_process(outbox_url, server.base_url)

    with WebhookSenderWorker(server.base_url, WebhookConfig(outbox_url=outbox_url)) as deliverer:
        assert deliverer.flush(timeout=30)

    (attempt,) = client_spans(spans)
    assert f"{attempt.context.trace_id:032x}" == enqueued["trace_id"]
    assert f"{attempt.parent.span_id:016x}" == enqueued["span_id"]  # a child of the web request's span
    (received,) = server.requests
    assert received.header("webhook-id") == enqueued["id"]
    assert received.header("traceparent") == traceparent(attempt)


def test_a_process_without_tracing_sends_the_stored_traceparent_as_it_is(server, tmp_path, monkeypatch):
    outbox_url = f"sqlite:///{tmp_path / 'o.db'}"
    server.route("POST", "/hooks/orders", status=200)
    enqueued = enqueue_in_another_process(outbox_url, server.base_url)
    monkeypatch.setattr(tracing, "enabled", False)  # a deliverer without opentelemetry

    with WebhookSenderWorker(server.base_url, WebhookConfig(outbox_url=outbox_url)) as deliverer:
        assert deliverer.flush(timeout=30)

    assert server.requests[0].header("traceparent") == f"00-{enqueued['trace_id']}-{enqueued['span_id']}-{enqueued['flags']}"


# -- without opentelemetry --------------------------------------------------------------------------

WITHOUT_OTEL = textwrap.dedent("""
    import json, sys

    class HideOpenTelemetry:                 # as if opentelemetry were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, HideOpenTelemetry())
    from syncworkers import WebhookConfig, WebhookSenderWorker
    from syncworkers.observability import tracing

    outbox, base_url = sys.argv[1:3]
    with WebhookSenderWorker(base_url, WebhookConfig(outbox_url=outbox)) as sender:
        sent = sender.send_webhook("/hook", {"direct": True})
        delivery_id = sender.enqueue("/hook", {"outbox": True})
        flushed = sender.flush(timeout=30)
        stored = sender.outbox.get(delivery_id).trace_context
    print(json.dumps({"sent": sent, "flushed": flushed, "stored": stored, "enabled": tracing.enabled,
                      "imported": sorted(m for m in sys.modules if m.startswith("opentelemetry"))}))
""")


def test_without_opentelemetry_nothing_is_imported_and_webhooks_go_as_before(server, tmp_path):
    server.route("POST", "/hook", status=200)
    done = subprocess.run([sys.executable, "-c", WITHOUT_OTEL, f"sqlite:///{tmp_path / 'o.db'}", server.base_url],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT, "HTTP_TRANSPORT": config_module.DEFAULT_TRANSPORT})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"sent": True, "flushed": True, "stored": None, "enabled": False,
                                       "imported": []}
    assert len(server.requests) == 2 and all(r.header("traceparent") is None for r in server.requests)
