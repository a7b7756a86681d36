"""WebhookSenderWorker against real loopback servers: what the receiver gets, and what the caller sees.

Concurrency and cancellation are observed on the server side (requests
received, handlers in flight) and synchronised with Events the handlers set
or wait on; no test measures an elapsed time: a wait that must be cut short
is an hour long, and an answer that must not be waited for is still held
when the call returns.
"""

import base64
import logging
import os
import threading
import time

import pytest
from standardwebhooks.webhooks import Webhook

from syncworkers import (
    CircuitBreakerConfig,
    ConfigError,
    HTTPClientConfig,
    Message,
    RetryConfig,
    WebhookConfig,
)
from syncworkers.scheduling.runner import Runner
from syncworkers.signing import verify
from syncworkers.sources import MemoryQueue, memory
from syncworkers.workers.webhook import DeliveryResult, WebhookSenderWorker

from .server import LoopbackServer, Reply
from .helpers import LogCapture, new_secret, wait_for

FAST = WebhookConfig(retry_delay=0.01)


# -- what goes over the wire --------------------------------------------------------


def relay_one_message(worker, body):
    """Run *worker* on a MemoryQueue until one message with *body* is settled; return the logs."""
    worker.source = MemoryQueue()
    with LogCapture() as logs:
        worker.start()
        try:
            worker.source.put(body)
            assert worker.source.join(timeout=5)
        finally:
            worker.stop(timeout=5)
            worker.close()
    return logs


def test_body_and_headers_are_received_exactly(server):
    server.route("POST", "/hook", status=200)
    with WebhookSenderWorker(server.base_url) as worker:
        result = worker.deliver("/hook", {"order": 1, "name": "café", "items": [1, 2]},
                                headers={"X-Event-Source": "order-service"})
    (req,) = server.requests
    assert req.body == '{"order":1,"name":"café","items":[1,2]}'.encode("utf-8")
    assert req.header("Content-Type") == "application/json"
    assert req.header("X-Event-Source") == "order-service"
    assert req.header("User-Agent").startswith("syncworkers/")
    assert req.header("webhook-id") == result.delivery_id and result.delivery_id.startswith("msg_")
    assert abs(int(req.header("webhook-timestamp")) - time.time()) < 60
    assert req.header("webhook-signature") is None  # not signed without a secret
    assert result == DeliveryResult(ok=True, endpoint="/hook", url=server.url("/hook"), status_code=200,
                                    attempts=1, duration=result.duration, error=None,
                                    delivery_id=result.delivery_id)


def test_send_webhook_is_the_bool_of_deliver(server):
    server.route("POST", "/ok", status=204)
    server.route("POST", "/bad", status=400)
    with WebhookSenderWorker(server.base_url) as worker:
        assert worker.send_webhook("/ok", {"a": 1}) is True
        assert worker.send_webhook("/bad", {"a": 1}) is False


def test_webhook_headers_cannot_be_forged_by_the_caller(server):
    server.route("POST", "/hook", status=200)
    with WebhookSenderWorker(server.base_url) as worker:
        result = worker.deliver("/hook", {}, headers={"webhook-id": "forged", "Webhook-Timestamp": "1"},
                                delivery_id="evt_42")
    (req,) = server.requests
    assert result.delivery_id == "evt_42"
    assert req.header("webhook-id") == "evt_42"
    assert req.header("webhook-timestamp") != "1"


def test_endpoint_forms(server, server2):
    for path in ("/api/orders", "/orders/webhook", "/direct", "/named-abs"):
        server.route("POST", path, status=200)
    server2.route("POST", "/partner", status=200)
    config = WebhookConfig(endpoints={"orders": "/orders/webhook", "partner": server2.url("/partner")})
    with WebhookSenderWorker(server.url("/api"), config) as worker:
        assert worker.send_webhook("/orders", {"n": 1})  # path: joined to base_url, its path kept
        assert worker.send_webhook(server.url("/direct"), {"n": 2})  # absolute URL
        assert worker.send_webhook("partner", {"n": 3})  # a name for an absolute URL
    with WebhookSenderWorker(server.base_url, config) as worker:
        assert worker.send_webhook("orders", {"n": 4})  # a name for a path
    assert [r.path for r in server.requests] == ["/api/orders", "/direct", "/orders/webhook"]
    assert [r.path for r in server2.requests] == ["/partner"]


@pytest.mark.parametrize("endpoint, message", [
    ("orders", r"unknown webhook endpoint 'orders' \(known names: alerts, users\)"),
    ("ftp://files.example/x", "invalid webhook URL"),
    ("http://", "invalid webhook URL"),
    ("http://127.0.0.1:99999/x", "invalid webhook URL"),
    ("", "endpoint must be"),
])
def test_bad_endpoints_are_config_errors_before_sending(server, endpoint, message):
    config = WebhookConfig(endpoints={"users": "/u", "alerts": "/a"})
    with WebhookSenderWorker(server.base_url, config) as worker:
        with pytest.raises(ConfigError, match=message):
            worker.send_webhook(endpoint, {"a": 1})
        with pytest.raises(ConfigError, match=message):
            worker.broadcast_webhook(["/u", endpoint], {"a": 1})
    assert server.requests == []


def test_a_path_without_base_url_is_a_config_error():
    with WebhookSenderWorker() as worker, pytest.raises(ConfigError, match="no base_url"):
        worker.send_webhook("/orders", {"a": 1})


@pytest.mark.parametrize("data, error", [
    ({"when": object()}, TypeError),
    ({"amount": float("nan")}, ValueError),
    ({1, 2}, TypeError),
])
def test_data_json_cannot_hold_is_refused_before_sending(server, data, error):
    server.route("POST", "/hook", status=200)
    with WebhookSenderWorker(server.base_url) as worker:
        with pytest.raises(error, match="webhook data is not JSON-serialisable"):
            worker.send_webhook("/hook", data)
        with pytest.raises(error, match="not JSON-serialisable"):
            worker.broadcast_webhook(["/hook"], data)
    assert server.requests == []


def test_bad_headers_are_refused(server):
    with WebhookSenderWorker(server.base_url) as worker:
        with pytest.raises(TypeError, match="X-Count"):
            worker.send_webhook("/hook", {}, headers={"X-Count": 3})
        with pytest.raises(ValueError, match="line break"):
            worker.send_webhook("/hook", {}, headers={"X-Evil": "a\r\nInjected: 1"})
        with pytest.raises(TypeError, match="single string"):
            worker.broadcast_webhook("/hook", {})
    assert server.requests == []


def test_base_url_precedence(server, monkeypatch):
    for prefix in ("env", "http", "webhook", "arg"):
        server.route("POST", f"/{prefix}/hook", status=200)
    monkeypatch.setenv("HTTP_BASE_URL", server.url("/env"))
    http = HTTPClientConfig(base_url=server.url("/http"))
    webhook = WebhookConfig(base_url=server.url("/webhook"))
    for args in ((), (None, None, http), (None, webhook, http), (server.url("/arg"), webhook, http)):
        with WebhookSenderWorker(*args) as worker:
            assert worker.send_webhook("/hook", {})
    assert [r.path for r in server.requests] == ["/env/hook", "/http/hook", "/webhook/hook", "/arg/hook"]


def test_query_strings_stay_out_of_results_and_logs(server):
    server.route("POST", "/hook", status=500)
    with WebhookSenderWorker(webhook_config=WebhookConfig(max_retries=0)) as worker, LogCapture() as logs:
        results = [worker.deliver(server.url("/hook?sig=sekrit-query-value"), {}),
                   worker.deliver("http://user:sekrit-password@127.0.0.1:%d/hook" % server.port, {})]
    assert server.requests[0].query == "sig=sekrit-query-value"
    assert server.requests[1].header("Authorization").startswith("Basic ")  # the userinfo was used
    for secret in ("sekrit-query-value", "sekrit-password"):
        assert secret not in repr(results)
        assert secret not in logs.text


# -- retries, redirects, timeouts ----------------------------------------------------


def test_retried_until_2xx_with_the_same_id_timestamp_and_signature(server):
    server.route("POST", "/hook", status=[503, 503, 200])
    with WebhookSenderWorker(server.base_url, FAST, signing_secret=new_secret()) as worker:
        result = worker.deliver("/hook", {"a": 1})
    assert result.ok and result.attempts == 3 and result.status_code == 200
    sent = [(r.header("webhook-id"), r.header("webhook-timestamp"), r.header("webhook-signature"), r.body)
            for r in server.requests]
    assert len(sent) == 3 and len(set(sent)) == 1
    assert sent[0][0] == result.delivery_id
    assert worker.health()["deliveries"]["retried"] == 2


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_final_4xx_fails_at_once_and_says_why(server, status):
    server.route("POST", "/hook", status=status)
    with WebhookSenderWorker(server.base_url, FAST) as worker, LogCapture() as logs:
        result = worker.deliver("/hook", {"a": 1})
    assert not result.ok
    assert (result.status_code, result.attempts) == (status, 1)
    assert str(status) in result.error
    assert len(server.requests) == 1
    line = next(l for l in logs.text.splitlines() if " not delivered: " in l)
    assert " ERROR " in line and f"status {status}" in line and "given up after 1 attempt" in line
    assert f"webhook {result.delivery_id} to {server.url('/hook')} not delivered" in line


def test_5xx_after_every_retry_fails_with_the_count(server):
    server.route("POST", "/hook", status=502)
    with WebhookSenderWorker(server.base_url, WebhookConfig(max_retries=2, retry_delay=0.01)) as worker:
        result = worker.deliver("/hook", {})
    assert (result.ok, result.status_code, result.attempts) == (False, 502, 3)
    assert len(server.requests) == 3


def test_redirects_are_not_followed(server):
    server.route("POST", "/moved", status=302, headers={"Location": "/target"})
    server.route("POST", "/target", status=200)
    server.route("GET", "/target", status=200)
    # Even a client config that follows redirects does not, for webhooks.
    with WebhookSenderWorker(server.base_url, FAST, HTTPClientConfig(follow_redirects=True)) as worker:
        result = worker.deliver("/moved", {"a": 1})
    assert not result.ok and result.status_code == 302
    assert "redirect" in result.error
    assert [r.path for r in server.requests] == ["/moved"]


def test_webhook_timeout_applies(server):
    # The answer would come after 20 s: only the 0.2 s timeout, not the 30 s default, ends the call first.
    server.route("POST", "/slow", replies=[Reply(200, delay=20)])
    with WebhookSenderWorker(server.base_url, WebhookConfig(timeout=0.2, max_retries=0)) as worker:
        result = worker.deliver("/slow", {})
    assert not result.ok and result.status_code is None
    assert "timeout" in result.error


def test_timeouts_of_http_config_win_over_the_webhook_timeout(server):
    server.route("POST", "/slow", replies=[Reply(200, delay=20)])  # answered in time for the 30 s timeout
    for config in (HTTPClientConfig(timeout=0.2), HTTPClientConfig(read_timeout=0.2)):
        with WebhookSenderWorker(server.base_url, WebhookConfig(timeout=30, max_retries=0), config) as worker:
            result = worker.deliver("/slow", {})
        assert not result.ok and "read timeout" in result.error


def test_retry_after_is_honoured(server):
    server.route("POST", "/hook", replies=[Reply(429, headers={"Retry-After": "0"}), Reply(200)])
    # A 30 s backoff would hang the test: Retry-After: 0 must win over it.
    with WebhookSenderWorker(server.base_url, WebhookConfig(retry_delay=30, max_retries=1)) as worker, \
            LogCapture() as logs:
        result = worker.deliver("/hook", {})
    assert result.ok and result.attempts == 2
    retrying = next(line for line in logs.text.splitlines() if "; retry in " in line)
    assert "failed: status 429 Too Many Requests; retry in 0s (attempt 2 of 2)" in retrying  # the server's word


def test_connection_refused_is_a_logged_failure():
    with LoopbackServer() as gone:
        url = gone.url("/hook")
    with WebhookSenderWorker(webhook_config=WebhookConfig(max_retries=1, retry_delay=0.01)) as worker, \
            LogCapture() as logs:
        result = worker.deliver(url, {})
    assert not result.ok and result.status_code is None and result.attempts == 2
    assert "connection failed" in result.error
    assert " not delivered: " in logs.text and "given up after 2 attempts" in logs.text


def test_retry_config_of_http_config_wins_over_webhook_fields(server):
    server.route("POST", "/hook", status=503)
    http = HTTPClientConfig(retry_config=RetryConfig(max_attempts=2, initial_delay=0))
    with WebhookSenderWorker(server.base_url, WebhookConfig(max_retries=5, retry_delay=0), http) as worker:
        assert worker.deliver("/hook", {}).attempts == 2
    assert len(server.requests) == 2


def test_webhook_fields_win_over_http_config_fields_and_environment(server, monkeypatch):
    server.route("POST", "/hook", status=503)
    monkeypatch.setenv("HTTP_MAX_RETRIES", "4")
    http = HTTPClientConfig(max_retries=3, retry_delay=0)
    with WebhookSenderWorker(server.base_url, WebhookConfig(max_retries=1, retry_delay=0), http) as worker:
        assert worker.deliver("/hook", {}).attempts == 2
    with WebhookSenderWorker(server.base_url, None, http) as worker:  # http_config > environment
        assert worker.deliver("/hook", {}).attempts == 4
    assert len(server.requests) == 6


def test_environment_retries_when_nothing_else_is_given(server, monkeypatch):
    server.route("POST", "/hook", status=503)
    monkeypatch.setenv("HTTP_MAX_RETRIES", "2")
    monkeypatch.setenv("HTTP_RETRY_DELAY", "0")
    with WebhookSenderWorker(server.base_url) as worker:
        assert worker.deliver("/hook", {}).attempts == 3
    assert len(server.requests) == 3


def test_a_cancel_event_interrupts_the_retry_wait(server):
    cancel = threading.Event()

    def refuse_and_cancel(req):
        cancel.set()
        return Reply(503)

    server.route("POST", "/hook", handler=refuse_and_cancel)
    with WebhookSenderWorker(server.base_url, WebhookConfig(retry_delay=30)) as worker:
        result = worker.deliver("/hook", {}, cancel=cancel)
    assert not result.ok and result.attempts == 1
    assert result.error.startswith("interrupted")
    assert len(server.requests) == 1


# -- messages -------------------------------------------------------------------------


def test_from_message_uses_its_id_and_never_forwards_its_headers(server):
    server.route("POST", "/hook", status=200)
    message = Message(body={"order": 7},
                      headers={"Authorization": "Bearer internal-token", "X-Internal": "yes",
                               "endpoint": "/elsewhere"})
    with WebhookSenderWorker(server.base_url) as worker:
        assert worker.send_webhook_from_message(message, "/hook", headers={"X-Source": "relay"})
    (req,) = server.requests
    assert req.json() == {"order": 7}
    assert req.header("webhook-id") == message.id
    assert req.header("X-Source") == "relay"
    assert req.header("Authorization") is None and req.header("X-Internal") is None
    assert req.header("endpoint") is None


# -- broadcast ------------------------------------------------------------------------


def test_broadcast_runs_every_endpoint_at_once(server, caplog):
    lock = threading.Lock()
    arrived = []
    all_on_the_wire = threading.Event()

    def held(req):
        # No endpoint is answered before all 16 requests are in: a sequential broadcast never gets there.
        with lock:
            arrived.append(req.path)
            if len(arrived) == len(endpoints):
                all_on_the_wire.set()
        all_on_the_wire.wait(30)
        return Reply(200)

    endpoints = [f"/hook/{i}" for i in range(16)]
    for path in endpoints:
        server.route("POST", path, handler=held)
    caplog.set_level(logging.WARNING, logger="urllib3")
    with WebhookSenderWorker(server.base_url, http_config=HTTPClientConfig(max_connections=2)) as worker:
        results = worker.broadcast_webhook(endpoints, {"alert": "disk full"})
    assert all_on_the_wire.is_set()  # every request was in flight at once
    assert results == {path: True for path in endpoints}
    ids = {r.header("webhook-id") for r in server.requests}
    assert len(ids) == 16  # one delivery id per endpoint
    assert {r.body for r in server.requests} == {b'{"alert":"disk full"}'}
    # The pool is sized for the broadcast threads, whatever max_connections says.
    assert "pool is full" not in caplog.text


def test_broadcast_sends_a_listed_twice_endpoint_once(server):
    server.route("POST", "/a", status=200)
    server.route("POST", "/b", status=200)
    with WebhookSenderWorker(server.base_url) as worker:
        results = worker.broadcast_webhook(["/a", "/b", "/a"], {"x": 1})
    assert list(results) == ["/a", "/b"] and all(results.values())
    assert sorted(r.path for r in server.requests) == ["/a", "/b"]
    assert worker.broadcast_webhook([], {}) == {}


def test_broadcast_without_fail_fast_waits_for_all(server):
    server.route("POST", "/bad", status=400)
    server.route("POST", "/ok1", status=200, delay=0.1)
    server.route("POST", "/ok2", status=[503, 200])
    with WebhookSenderWorker(server.base_url, FAST) as worker:
        results = worker.broadcast_webhook(["/bad", "/ok1", "/ok2"], {}, fail_fast=False)
    assert results == {"/bad": False, "/ok1": True, "/ok2": True}
    assert sorted(r.path for r in server.requests) == ["/bad", "/ok1", "/ok2", "/ok2"]


def test_fail_fast_cancels_queued_interrupts_retries_and_returns_at_once(server):
    gate = threading.Event()  # holds /slow's answer until the end of the test
    slow_seen, retry_seen, slow_answered = threading.Event(), threading.Event(), threading.Event()

    def slow(req):
        slow_seen.set()
        gate.wait(60)
        slow_answered.set()
        return Reply(200)

    def retry(req):
        retry_seen.set()
        return Reply(503)

    def bad(req):
        # Fail only once the other two are in flight, so what is cancelled is certain.
        slow_seen.wait(30)
        retry_seen.wait(30)
        return Reply(400)

    server.route("POST", "/slow", handler=slow)
    server.route("POST", "/retry", handler=retry)
    server.route("POST", "/bad", handler=bad)
    endpoints = ["/slow", "/retry", "/bad", "/queued1", "/queued2", "/queued3"]
    try:
        # /retry's retry wait is an hour long: only fail_fast can end it.
        with WebhookSenderWorker(server.base_url, WebhookConfig(retry_delay=3600), max_workers=3) as worker, \
                LogCapture() as logs:
            results = worker.broadcast_webhook(endpoints, {"urgent": True}, fail_fast=True)
            returned_before_slow_answered = not slow_answered.is_set()
            assert wait_for(lambda: worker.health()["deliveries"]["interrupted"] == 1)  # the retry wait ended
            gate.set()
    finally:
        gate.set()
    assert results == {endpoint: False for endpoint in endpoints}
    assert returned_before_slow_answered  # the broadcast did not wait for the held answer
    assert [r.path for r in server.calls("/retry")] == ["/retry"]  # interrupted, never retried
    assert sorted(r.path for r in server.requests) == ["/bad", "/retry", "/slow"]  # nothing queued was sent
    assert "broadcast to 6 endpoints cut short by fail_fast" in logs.text
    assert worker.health()["deliveries"]["broadcasts_cancelled"] == 1


def test_stop_interrupts_a_broadcast_in_progress(server):
    server.route("POST", "/retry", status=503)
    worker = WebhookSenderWorker(server.base_url, WebhookConfig(retry_delay=30))
    results = {}
    thread = threading.Thread(target=lambda: results.update(worker.broadcast_webhook(["/retry"], {})))
    thread.start()
    try:
        assert wait_for(lambda: server.requests)
        assert worker.stop(timeout=5)
        thread.join(5)
        assert not thread.is_alive()
    finally:
        worker.close()
        thread.join(5)
    assert results == {"/retry": False}
    assert len(server.requests) == 1


def test_a_runner_stop_interrupts_a_broadcast_in_progress(server):
    # A Runner sets its own stop event; the broadcast must notice it too.
    server.route("POST", "/retry", status=503)
    worker = WebhookSenderWorker(server.base_url, WebhookConfig(retry_delay=30))
    runner = Runner([worker], name="bcast")
    runner.start()
    results = {}
    thread = threading.Thread(target=lambda: results.update(worker.broadcast_webhook(["/retry"], {})))
    thread.start()
    try:
        assert wait_for(lambda: server.requests)
        runner.stop(timeout=5)
        thread.join(5)
        assert not thread.is_alive() and results == {"/retry": False}
    finally:
        worker.close()
        thread.join(5)


def test_a_second_stop_while_a_delivery_is_still_on_the_wire_does_not_report_all_ended(server):
    release = threading.Event()
    server.route("POST", "/slow", handler=lambda req: (release.wait(10), Reply(200))[1])
    worker = WebhookSenderWorker(server.base_url, WebhookConfig(timeout=10))
    thread = threading.Thread(target=worker.broadcast_webhook, args=(["/slow"], {}))
    thread.start()
    try:
        assert wait_for(lambda: server.requests)
        assert worker.stop(timeout=0.1) is False
        assert worker.stop(timeout=0.1) is False  # still in flight: not "all ended"
        release.set()
        thread.join(5)
        assert worker.stop(timeout=5) is True
    finally:
        release.set()
        worker.close()
        thread.join(5)


def test_broadcast_pool_threads_are_named_and_stopped(server):
    server.route("POST", "/a", status=200)
    server.route("POST", "/b", status=200)
    worker = WebhookSenderWorker(server.base_url, name="alerts", max_workers=4,
                                 http_config=HTTPClientConfig(transport="requests"))
    worker.broadcast_webhook(["/a", "/b"], {})
    names = [t.name for t in threading.enumerate() if t.name.startswith("syncworkers-webhook-alerts")]
    assert 1 <= len(names) <= 4
    assert worker.stop(timeout=5)
    assert not [t for t in threading.enumerate() if t.name.startswith("syncworkers-webhook-alerts")]
    worker.close()


def test_a_broadcast_over_libcurl_takes_no_pool_thread(server):
    pytest.importorskip("pycurl")
    release = threading.Event()
    seen = []
    server.route("POST", "/slow", handler=lambda req: (seen.append(req.path), release.wait(10), Reply(200))[2])
    endpoints = [f"/slow?n={n}" for n in range(6)]
    worker = WebhookSenderWorker(server.base_url, name="alerts", max_workers=2,
                                 webhook_config=WebhookConfig(max_in_flight_per_host=6),
                                 http_config=HTTPClientConfig(transport="curl"))
    results = {}
    caller = threading.Thread(target=lambda: results.update(worker.broadcast_webhook(endpoints, {})))
    caller.start()
    try:
        # Six deliveries on the wire at once with max_workers=2: none holds a thread of its own.
        assert wait_for(lambda: len(seen) == 6)
        ours = sorted(t.name for t in threading.enumerate() if t.name.startswith("syncworkers"))
        assert ours == ["syncworkers-curl-multi"]
    finally:
        release.set()
        caller.join(10)
    assert results == {endpoint: True for endpoint in endpoints}
    assert worker.stop(timeout=5)
    worker.close()


# -- circuit breakers ---------------------------------------------------------------------


def test_a_failing_host_opens_only_its_own_circuit(server, server2):
    server.route("POST", "/hook", status=500)
    server2.route("POST", "/hook", status=200)
    http = HTTPClientConfig(circuit_breaker_config=CircuitBreakerConfig(failure_threshold=2, timeout_seconds=60))
    with WebhookSenderWorker(webhook_config=WebhookConfig(max_retries=0), http_config=http) as worker:
        assert not worker.send_webhook(server.url("/hook"), {})
        assert not worker.send_webhook(server.url("/hook"), {})
        refused = worker.deliver(server.url("/hook"), {})
        assert worker.send_webhook(server2.url("/hook"), {})
        results = worker.broadcast_webhook([server.url("/hook"), server2.url("/hook")], {})
        health = worker.health()
    assert not refused.ok and refused.attempts == 0 and "circuit open" in refused.error
    assert len(server.requests) == 2  # nothing reached the open host
    assert len(server2.requests) == 2
    assert results == {server.url("/hook"): False, server2.url("/hook"): True}
    assert health["circuits"] == {server.base_url: "open", server2.base_url: "closed"}
    assert health["deliveries"]["circuit_open"] == 2


# -- signing ---------------------------------------------------------------------------------


def test_real_deliveries_verify_with_the_standardwebhooks_package(server):
    secret = new_secret()
    server.route("POST", "/hook", status=200)
    with WebhookSenderWorker(server.base_url, signing_secret=secret) as worker:
        assert worker.send_webhook("/hook", {"order": 1, "note": "naïve ✓"})
    (req,) = server.requests
    assert Webhook(secret).verify(req.body, req.headers) == {"order": 1, "note": "naïve ✓"}
    assert verify(req.body, req.headers, secret)
    with pytest.raises(Exception):
        Webhook(new_secret()).verify(req.body, req.headers)


def test_rotation_signs_with_every_secret(server):
    old, new = new_secret(), new_secret()
    server.route("POST", "/hook", status=200)
    with WebhookSenderWorker(server.base_url, signing_secret=[old, new]) as worker:
        assert worker.send_webhook("/hook", {"a": 1})
    (req,) = server.requests
    assert len(req.header("webhook-signature").split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(req.body, req.headers) == {"a": 1}


def test_signing_secrets_from_webhook_config_and_environment(server, monkeypatch):
    first, second = new_secret(), new_secret()
    server.route("POST", "/hook", status=200)
    with WebhookSenderWorker(server.base_url, WebhookConfig(signing_secret=first)) as worker:
        assert worker.send_webhook("/hook", {})
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", f"{first} {second}")
    with WebhookSenderWorker(server.base_url) as worker:
        assert worker.send_webhook("/hook", {})
    signed_once, signed_twice = server.requests
    Webhook(first).verify(signed_once.body, signed_once.headers)
    Webhook(second).verify(signed_twice.body, signed_twice.headers)
    Webhook(first).verify(signed_twice.body, signed_twice.headers)


def test_an_invalid_secret_is_a_config_error():
    with pytest.raises(ConfigError, match="base64"):
        WebhookSenderWorker(signing_secret="whsec_not*base64!")


# -- the main loop and sources --------------------------------------------------------------


def test_relay_from_a_memory_queue_and_prompt_stop(server, monkeypatch):
    monkeypatch.setattr(memory, "STOP_CHECK_INTERVAL", 3600.0)  # a poll would hang stop(): the run's signal wakes it
    server.route("POST", "/hook", status=200)

    class Relay(WebhookSenderWorker):
        def __init__(self, base_url):
            super().__init__(base_url)
            self.source = MemoryQueue()

    worker = Relay(server.base_url)
    worker.start()
    try:
        messages = [worker.source.put(Message(body={"n": i}, headers={"endpoint": "/hook", "X-Secret": "s"}))
                    for i in range(3)]
        assert worker.source.join(timeout=5)  # each processed and ack'ed
    finally:
        assert worker.stop(timeout=30)
        worker.close()
    assert [r.json() for r in server.requests] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [r.header("webhook-id") for r in server.requests] == [m.id for m in messages]
    assert all(r.header("X-Secret") is None for r in server.requests)
    assert worker.health()["metrics"]["messages_processed"] == 3


def test_a_runner_stops_a_relay_promptly(server, monkeypatch):
    # Runner.stop() sets the runner's event, not the worker's: the source must be bound to it.
    monkeypatch.setattr(memory, "STOP_CHECK_INTERVAL", 3600.0)  # a poll would hang stop()
    server.route("POST", "/hook", status=200)
    worker = WebhookSenderWorker(server.base_url)
    worker.source = MemoryQueue()
    runner = Runner([worker], name="relay")
    runner.start()
    try:
        worker.source.put(Message(body={"n": 1}, headers={"endpoint": "/hook"}))
        assert worker.source.join(timeout=5)
    finally:
        assert runner.stop(timeout=30)
        worker.close()
    assert len(server.requests) == 1


def test_a_raising_process_message_is_nacked_and_the_loop_goes_on(server):
    server.route("POST", "/hook", status=200)
    calls = []

    class Flaky(WebhookSenderWorker):
        source = None

        def process_message(self, message):
            calls.append(message.body)
            if len(calls) == 1:
                raise RuntimeError("transient failure")
            return self.send_webhook_from_message(message, "/hook")

    logs = relay_one_message(Flaky(server.base_url), {"n": 1})
    assert calls == [{"n": 1}, {"n": 1}]  # requeued, then processed
    assert [r.json() for r in server.requests] == [{"n": 1}]
    assert "process_message raised" in logs.text and "RuntimeError: transient failure" in logs.text


def test_a_delivery_cut_short_by_stop_is_requeued_not_lost(server):
    server.route("POST", "/hook", status=503)
    worker = WebhookSenderWorker(server.base_url, WebhookConfig(retry_delay=30))
    worker.source = MemoryQueue()
    with LogCapture() as logs:
        worker.start()
        try:
            message = worker.source.put(Message(body={"n": 1}, headers={"endpoint": "/hook"}))
            assert wait_for(lambda: server.requests)  # now in its 30 s retry wait
        finally:
            assert worker.stop(timeout=5)
            worker.close()
    # A normal stop is not an error: no ERROR line, no traceback.
    assert "requeued" in logs.text and "ERROR" not in logs.text and "Traceback" not in logs.text
    assert len(server.requests) == 1
    assert worker.source.qsize() == 1
    worker.source.bind(threading.Event())  # as the next run would
    assert next(worker.source.consume()).id == message.id  # back in the queue, not lost


class _UnreachableAck(MemoryQueue):
    """A source whose store is unreachable when the first message is settled (Redis restarting)."""

    def __init__(self):
        super().__init__()
        self.failures = 0

    def ack(self, message):
        if not self.failures:
            self.failures += 1
            raise ConnectionError("store unreachable")
        super().ack(message)

    def nack(self, message, requeue=True):
        self.ack(message)


def test_a_source_that_cannot_settle_a_message_is_logged_and_the_loop_goes_on(server):
    server.route("POST", "/hook", status=200)
    worker = WebhookSenderWorker(server.base_url, FAST)
    worker.source = _UnreachableAck()
    with LogCapture() as logs:
        worker.start()
        try:
            worker.source.put(Message(body={"n": 1}, headers={"endpoint": "/hook"}))
            assert wait_for(lambda: worker.source.failures == 1)
            worker.source.put(Message(body={"n": 2}, headers={"endpoint": "/hook"}))
            assert wait_for(lambda: len(server.requests) == 2)
        finally:
            assert worker.stop(timeout=5)
            worker.close()
    assert "could not settle" in logs.text and "ConnectionError" in logs.text
    assert "loop job" not in logs.text and "Traceback" not in logs.text


def test_a_message_without_endpoint_is_skipped_with_a_warning(server):
    logs = relay_one_message(WebhookSenderWorker(server.base_url), {"n": 1})
    assert server.requests == []
    assert "no 'endpoint' header" in logs.text


def test_a_plain_sender_runs_no_thread_and_run_sync_blocks_until_stopped(server):
    worker = WebhookSenderWorker(server.base_url)
    assert worker.jobs() == []
    thread = threading.Thread(target=worker.run_sync, name="test-run-sync")
    thread.start()
    try:
        assert wait_for(lambda: worker.running)
        assert thread.is_alive()
        assert not [t for t in threading.enumerate() if t.name.startswith("syncworkers-loop")]
    finally:
        worker.stop(timeout=5)
        thread.join(5)
        worker.close()
    assert not thread.is_alive()


# -- secrets and health ------------------------------------------------------------------------


def test_secrets_stay_out_of_repr_results_and_logs(server):
    secret = new_secret()
    token = "tok-" + base64.b64encode(os.urandom(12)).decode()
    server.route("POST", "/fail", status=500)
    server.route("POST", "/denied", status=401)
    http = HTTPClientConfig(auth_type="bearer", bearer_token=token)
    with LogCapture() as logs:
        with WebhookSenderWorker(server.base_url, WebhookConfig(max_retries=1, retry_delay=0), http,
                                 signing_secret=secret) as worker:
            results = [worker.deliver("/fail", {"a": 1}), worker.deliver("/denied", {"a": 1})]
            text = repr(worker) + repr(worker.webhook_config) + repr(results) + repr(worker.health())
    assert server.requests[0].header("Authorization") == f"Bearer {token}"  # it was sent, though
    assert " not delivered: " in logs.text
    for value in (secret, secret[len("whsec_"):], token):
        assert value not in text
        assert value not in logs.text


def test_health_counts_deliveries(server):
    server.route("POST", "/ok", status=200)
    server.route("POST", "/bad", status=400)
    with WebhookSenderWorker(server.base_url) as worker:
        worker.send_webhook("/ok", {})
        worker.send_webhook("/bad", {})
        worker.broadcast_webhook(["/ok", "/bad"], {})
        health = worker.health()
    deliveries = health["deliveries"]
    assert (deliveries["delivered"], deliveries["failed"], deliveries["broadcasts"]) == (2, 2, 1)
    assert deliveries["attempts"] == 4
    assert health["circuits"] == {server.base_url: "closed"}
