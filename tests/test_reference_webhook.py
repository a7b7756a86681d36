"""The reference document's WebhookSenderWorker and resilience examples, run as written.

Each class is the document's code with ``async``/``await`` deleted, imports
from ``syncworkers`` and its example.com URLs pointed at loopback servers
(module globals the ``urls`` fixture sets). Deviations are marked ``# test:``.
"""

import sys
import threading

import pytest

from syncworkers import (
    CircuitBreakerConfig,
    HTTPClientConfig,
    RetryConfig,
    RetryStrategy,
    WebhookConfig,
)
from syncworkers.message import Message
from syncworkers.sources import MemoryQueue, memory
from syncworkers.scheduling.runner import Runner
from syncworkers.signals import StopSignal
from syncworkers.workers.webhook import WebhookSenderWorker

from .server import Reply
from .test_webhook import LogCapture, wait_for

# Set by the `urls` fixture: where the document says https://webhooks.example.com etc.
WEBHOOKS = PARTNER = ALERTS = None


@pytest.fixture
def urls(server, server2, monkeypatch):
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "WEBHOOKS", server.base_url)
    monkeypatch.setattr(module, "PARTNER", server2.base_url)
    monkeypatch.setattr(module, "ALERTS", server.base_url)
    return server, server2


# -- Basic Use Case ---------------------------------------------------------------------


class OrderNotificationSender(WebhookSenderWorker):
    def __init__(self):
        super().__init__(
            base_url=WEBHOOKS,
            webhook_config=WebhookConfig(
                base_url=WEBHOOKS,
                timeout=30,
                max_retries=3,
                retry_delay=2.0
            )
        )

    def process(self):
        """Main processing loop - override based on your needs"""
        # This is where you'd consume from another source
        # and send webhooks based on that data
        pass

    def send_order_created(self, order_data):
        """Send order created webhook"""
        success = self.send_webhook(
            endpoint="/orders/created",
            data={
                "event": "order_created",
                "order_id": order_data["id"],
                "customer_id": order_data["customer_id"],
                "amount": order_data["total"],
                "timestamp": order_data["created_at"]
            },
            headers={"X-Event-Source": "order-service"}
        )
        if success:
            self.logger.info(f"Order created webhook sent for order {order_data['id']}")
        else:
            self.logger.error(f"Failed to send order created webhook for order {order_data['id']}")
        return success


ORDER = {"id": 42, "customer_id": "cus_7", "total": 99.5, "created_at": "2024-05-01T12:00:00Z"}


def test_order_notification_sender_delivers_order_created(urls):
    server, _ = urls
    server.route("POST", "/orders/created", status=200)
    with OrderNotificationSender() as sender, LogCapture() as logs:
        assert sender.send_order_created(ORDER) is True
    (req,) = server.requests
    assert req.json() == {"event": "order_created", "order_id": 42, "customer_id": "cus_7",
                          "amount": 99.5, "timestamp": "2024-05-01T12:00:00Z"}
    assert req.header("X-Event-Source") == "order-service"
    assert req.header("Content-Type") == "application/json"
    assert "Order created webhook sent for order 42" in logs.text


def test_order_notification_sender_reports_a_refused_webhook(urls):
    server, _ = urls
    server.route("POST", "/orders/created", status=422)
    with OrderNotificationSender() as sender, LogCapture() as logs:
        assert sender.send_order_created(ORDER) is False
    assert len(server.requests) == 1  # a 422 is final: no retry
    lines = logs.text.splitlines()
    cause = next(line for line in lines if " not delivered: " in line)
    assert "status 422" in cause and "given up after 1 attempt" in cause
    assert any(" ERROR " in line and "Failed to send order created webhook for order 42" in line
               for line in lines)


class _IdleSpy(StopSignal):
    """A run's stop signal that says when someone waits on it with no timeout (an idle loop)."""

    def __init__(self):
        super().__init__()
        self.idling = threading.Event()

    def wait(self, timeout=None):
        if timeout is None:
            self.idling.set()
        return super().wait(timeout)


def test_order_notification_sender_runs_until_stopped_though_process_returns(urls):
    sender = OrderNotificationSender()
    runner = Runner([sender], name="idle-spy")
    runner.stop_event = spy = _IdleSpy()
    with LogCapture() as logs:
        runner.start()
        try:
            # process() returned at once; its loop now idles on the run's stop signal until stop().
            assert spy.idling.wait(5)
            assert sender.running
            assert any(t.name.startswith("syncworkers-loop") for t in threading.enumerate())
        finally:
            assert runner.stop(timeout=30)  # the loop's untimed wait on the stop signal ended with it
            sender.close()
    assert "returned before stop" not in logs.text


# -- Worker that Consumes and Sends Webhooks ----------------------------------------------


class OrderWebhookRelay(WebhookSenderWorker):
    def __init__(self):
        super().__init__(base_url=PARTNER)
        # Source to consume messages
        self.source = MemoryQueue()  # test: RedisListConsumer(queue="order_events") below

    def process(self):
        """Consume from Redis and send webhooks"""
        for message in self.source.consume():
            self.process_message(message)

    def process_message(self, message: Message):
        """Process message from Redis and send webhook"""
        order_data = message.body
        event_type = order_data.get("event_type")
        # Route to different webhook endpoints based on event type
        if event_type == "order_created":
            endpoint = "/webhooks/orders/created"
        elif event_type == "order_updated":
            endpoint = "/webhooks/orders/updated"
        elif event_type == "order_cancelled":
            endpoint = "/webhooks/orders/cancelled"
        else:
            self.logger.warning(f"Unknown event type: {event_type}")
            return {"error": "unknown_event_type"}
        # Send webhook
        success = self.send_webhook_from_message(
            message=message,
            endpoint=endpoint,
            headers={"X-Source": "order-service", "X-Event-Type": event_type}
        )
        return {"webhook_sent": success, "event_type": event_type}


class RecordingRelay(OrderWebhookRelay):
    """test: keeps what process_message returned."""

    def __init__(self):
        super().__init__()
        self.returned = []

    def process_message(self, message):
        result = super().process_message(message)
        self.returned.append(result)
        return result


EVENTS = [
    {"event_type": "order_created", "order_id": 1},
    {"event_type": "order_updated", "order_id": 1, "total": 12},
    {"event_type": "refunded", "order_id": 1},
    {"event_type": "order_cancelled", "order_id": 1},
]


def run_relay(relay, put, expected_requests, partner):
    """Start *relay*, queue EVENTS with *put*, wait for the partner's requests, stop; return the messages."""
    relay.start()
    try:
        messages = [put(Message(body=event, headers={"Authorization": "Bearer internal"}))
                    for event in EVENTS]
        assert wait_for(lambda: len(partner.requests) == expected_requests)
    finally:
        assert relay.stop(timeout=30)
        relay.close()
    return messages


def test_order_webhook_relay_routes_each_event(urls, monkeypatch):
    monkeypatch.setattr(memory, "STOP_CHECK_INTERVAL", 3600.0)  # a poll would hang stop(): the run's signal wakes it
    _, partner = urls
    for kind in ("created", "updated", "cancelled"):
        partner.route("POST", f"/webhooks/orders/{kind}", status=200)
    relay = RecordingRelay()
    with LogCapture() as logs:
        messages = run_relay(relay, relay.source.put, 3, partner)
    assert [r.path for r in partner.requests] == [
        "/webhooks/orders/created", "/webhooks/orders/updated", "/webhooks/orders/cancelled"]
    assert [r.json() for r in partner.requests] == [EVENTS[0], EVENTS[1], EVENTS[3]]
    assert [r.header("webhook-id") for r in partner.requests] == [messages[i].id for i in (0, 1, 3)]
    assert [r.header("X-Event-Type") for r in partner.requests] == [
        "order_created", "order_updated", "order_cancelled"]
    assert all(r.header("X-Source") == "order-service" for r in partner.requests)
    assert all(r.header("Authorization") is None for r in partner.requests)  # message headers stay home
    assert relay.returned == [
        {"webhook_sent": True, "event_type": "order_created"},
        {"webhook_sent": True, "event_type": "order_updated"},
        {"error": "unknown_event_type"},
        {"webhook_sent": True, "event_type": "order_cancelled"},
    ]
    assert "Unknown event type: refunded" in logs.text


def relay_on_redis(urls, monkeypatch):
    """Run the document's relay on a real Redis (stop ends its BLMOVE); return (partner, message ids, still held)."""
    from .redis_server import RedisServer, require_redis_package

    require_redis_package()
    from syncworkers.sources import RedisListConsumer

    class RedisOrderWebhookRelay(OrderWebhookRelay):
        def __init__(self):
            super().__init__()
            self.source = RedisListConsumer(queue="order_events")  # as the document has it

    _, partner = urls
    for kind in ("created", "updated", "cancelled"):
        partner.route("POST", f"/webhooks/orders/{kind}", status=200)
    with RedisServer() as redis_server:
        monkeypatch.setenv("REDIS_URL", redis_server.url)
        producer = RedisListConsumer(queue="order_events")
        relay = RedisOrderWebhookRelay()
        try:
            ids = run_relay(relay, producer.push, 3, partner)
            held = relay.source.processing()
        finally:
            producer.close()
    return partner, ids, held


def test_order_webhook_relay_on_redis(urls, monkeypatch):
    partner, ids, _ = relay_on_redis(urls, monkeypatch)
    assert [r.json() for r in partner.requests] == [EVENTS[0], EVENTS[1], EVENTS[3]]
    assert [r.header("webhook-id") for r in partner.requests] == [ids[i] for i in (0, 1, 3)]


def test_order_webhook_relay_on_redis_settles_what_it_processed(urls, monkeypatch):
    *_, held = relay_on_redis(urls, monkeypatch)
    assert held == 0


# -- Broadcast to Multiple Endpoints ------------------------------------------------------


class SystemAlertBroadcaster(WebhookSenderWorker):
    def __init__(self):
        super().__init__(base_url=ALERTS)

    def broadcast_system_alert(self, alert_data, urgent=False):
        """Broadcast system alert to multiple endpoints"""
        # Define endpoints based on urgency
        if urgent:
            endpoints = [
                "/critical/alerts",
                "/slack/alerts",
                "/email/alerts",
                "/sms/alerts"
            ]
            fail_fast = True  # Stop on first failure for urgent alerts
        else:
            endpoints = [
                "/general/alerts",
                "/slack/alerts"
            ]
            fail_fast = False  # Continue even if some fail
        # Broadcast to all endpoints
        results = self.broadcast_webhook(
            endpoints=endpoints,
            data={
                "alert_type": alert_data["type"],
                "severity": "urgent" if urgent else "normal",
                "message": alert_data["message"],
                "timestamp": alert_data["timestamp"],
                "source": alert_data.get("source", "system")
            },
            headers={"X-Alert-Priority": "high" if urgent else "normal"},
            fail_fast=fail_fast
        )
        # Log results
        successful = sum(results.values())
        total = len(results)
        self.logger.info(
            f"Alert broadcast completed: {successful}/{total} successful",
            results=results,
            alert_type=alert_data["type"]
        )
        return results


ALERT = {"type": "disk_full", "message": "disk 95% full", "timestamp": "2024-05-01T12:00:00Z"}
URGENT = ["/critical/alerts", "/slack/alerts", "/email/alerts", "/sms/alerts"]


def test_normal_alert_goes_to_general_and_slack(urls):
    server, _ = urls
    for path in ("/general/alerts", "/slack/alerts"):
        server.route("POST", path, status=200)
    with SystemAlertBroadcaster() as broadcaster, LogCapture() as logs:
        results = broadcaster.broadcast_system_alert(ALERT)
    assert results == {"/general/alerts": True, "/slack/alerts": True}
    assert sorted(r.path for r in server.requests) == ["/general/alerts", "/slack/alerts"]
    for req in server.requests:
        assert req.json() == {"alert_type": "disk_full", "severity": "normal", "message": "disk 95% full",
                              "timestamp": "2024-05-01T12:00:00Z", "source": "system"}
        assert req.header("X-Alert-Priority") == "normal"
    assert "Alert broadcast completed: 2/2 successful" in logs.text
    assert "alert_type=disk_full" in logs.text


def test_normal_alert_continues_past_a_failure(urls):
    server, _ = urls
    server.route("POST", "/general/alerts", status=400)
    server.route("POST", "/slack/alerts", status=200, delay=0.1)
    with SystemAlertBroadcaster() as broadcaster, LogCapture() as logs:
        results = broadcaster.broadcast_system_alert(ALERT)
    assert results == {"/general/alerts": False, "/slack/alerts": True}
    assert "Alert broadcast completed: 1/2 successful" in logs.text


def test_urgent_alert_goes_everywhere(urls):
    server, _ = urls
    for path in URGENT:
        server.route("POST", path, status=200)
    with SystemAlertBroadcaster() as broadcaster, LogCapture() as logs:
        results = broadcaster.broadcast_system_alert(dict(ALERT, source="monitor"), urgent=True)
    assert results == {path: True for path in URGENT}
    assert sorted(r.path for r in server.requests) == sorted(URGENT)
    assert {r.header("X-Alert-Priority") for r in server.requests} == {"high"}
    assert {r.json()["severity"] for r in server.requests} == {"urgent"}
    assert {r.json()["source"] for r in server.requests} == {"monitor"}
    assert "Alert broadcast completed: 4/4 successful" in logs.text


def test_urgent_alert_stops_at_the_first_failure(urls):
    server, _ = urls
    gate = threading.Event()
    seen, answered = [], []

    def held(req):
        seen.append(req.path)
        gate.wait(60)
        answered.append(req.path)
        return Reply(200)

    def sms_down(req):
        wait_for(lambda: len(seen) == 3)  # fail once the others are on the wire
        return Reply(400)

    for path in URGENT[:3]:
        server.route("POST", path, handler=held)
    server.route("POST", "/sms/alerts", handler=sms_down)
    try:
        with SystemAlertBroadcaster() as broadcaster, LogCapture() as logs:
            results = broadcaster.broadcast_system_alert(ALERT, urgent=True)
            answered_before_return = list(answered)
            gate.set()
    finally:
        gate.set()
    assert answered_before_return == []  # did not wait for the held answers
    assert results == {path: False for path in URGENT}
    assert "Alert broadcast completed: 0/4 successful" in logs.text


# -- Programmatic Configuration and Environment Variables ---------------------------------


def test_programmatic_configuration_with_named_endpoints(urls):
    server, _ = urls
    server.route("POST", "/orders/webhook", status=200)
    server.route("POST", "/system/alerts", status=200)
    http_config = HTTPClientConfig(
        max_connections=100,
        connect_timeout=5.0,
        read_timeout=30.0,
        verify_ssl=True,
        default_headers={"User-Agent": "MyApp/1.0"}
    )
    webhook_config = WebhookConfig(
        base_url=WEBHOOKS,
        timeout=30,
        max_retries=5,
        retry_delay=2.0,
        retry_backoff=2.0,
        endpoints={
            "orders": "/orders/webhook",
            "users": "/users/webhook",
            "alerts": "/system/alerts"
        }
    )
    with WebhookSenderWorker(webhook_config=webhook_config, http_config=http_config) as sender:
        assert sender.send_webhook("orders", {"order_id": 1})
        assert sender.broadcast_webhook(["orders", "alerts"], {"n": 2}) == {"orders": True, "alerts": True}
    assert sorted(r.path for r in server.requests) == ["/orders/webhook", "/orders/webhook", "/system/alerts"]
    assert {r.header("User-Agent") for r in server.requests} == {"MyApp/1.0"}


def test_environment_variables_configure_a_sender(urls, monkeypatch):
    server, _ = urls
    server.route("POST", "/payments/completed", status=200)
    server.route("POST", "/payments/failed", replies=[Reply(fault="stall")])
    for name, value in {"HTTP_BASE_URL": server.base_url, "HTTP_TIMEOUT": "0.3", "HTTP_MAX_RETRIES": "0",
                        "HTTP_AUTH_TYPE": "bearer", "HTTP_BEARER_TOKEN": "env-token-123"}.items():
        monkeypatch.setenv(name, value)
    with WebhookSenderWorker() as sender:
        assert sender.send_webhook("/payments/completed", {"id": 1})
        result = sender.deliver("/payments/failed", {"id": 2})
    assert server.requests[0].header("Authorization") == "Bearer env-token-123"
    assert not result.ok and "timeout" in result.error and result.attempts == 1


# -- Resilience Patterns ------------------------------------------------------------------


def test_circuit_breaker_config_protects_a_webhook_sender(urls):
    server, _ = urls
    server.route("POST", "/unreliable", status=503)
    # Configure circuit breaker
    circuit_config = CircuitBreakerConfig(
        failure_threshold=5,  # Open after 5 failures
        timeout_seconds=60,  # Stay open for 60 seconds
        expected_exception=Exception
    )
    http_config = HTTPClientConfig(
        circuit_breaker_config=circuit_config
    )
    webhook_config = WebhookConfig(max_retries=0)  # test: one request per send, to count them
    with WebhookSenderWorker(WEBHOOKS, webhook_config, http_config) as sender:
        assert [sender.send_webhook("/unreliable", {}) for _ in range(5)] == [False] * 5
        refused = sender.deliver("/unreliable", {})
        health = sender.health()
    assert len(server.requests) == 5  # the sixth never reached the host
    assert refused.attempts == 0 and "circuit open" in refused.error
    assert health["circuits"] == {server.base_url: "open"}


class RetryableWebhookSender(WebhookSenderWorker):
    def __init__(self):
        # Configure custom retry policy
        retry_config = RetryConfig(
            strategy=RetryStrategy.EXPONENTIAL,
            max_attempts=5,
            initial_delay=0.01,  # test: 1.0 in the document
            max_delay=60.0,
            exponential_base=2.0,
            jitter=True  # Add randomness to prevent thundering herd
        )
        http_config = HTTPClientConfig(
            retry_config=retry_config
        )
        super().__init__(
            base_url=WEBHOOKS,
            http_config=http_config
        )

    def send_critical_webhook(self, data):
        """Send webhook with custom retry logic"""
        success = self.send_webhook(
            endpoint="/critical/alerts",
            data=data,
            headers={"X-Priority": "critical"}
        )
        if not success:
            # Log failure after all retries exhausted
            self.logger.critical(
                "Critical webhook failed after all retries",
                data=data
            )
        return success


def test_retryable_sender_succeeds_on_the_fifth_attempt(urls):
    server, _ = urls
    server.route("POST", "/critical/alerts", status=[503, 500, 502, 429, 200])
    with RetryableWebhookSender() as sender:
        assert sender.send_critical_webhook({"alert": "db down"}) is True
    assert len(server.requests) == 5
    assert len({r.header("webhook-id") for r in server.requests}) == 1
    assert {r.header("X-Priority") for r in server.requests} == {"critical"}


def test_retryable_sender_logs_critical_after_all_retries(urls):
    server, _ = urls
    server.route("POST", "/critical/alerts", status=503)
    with RetryableWebhookSender() as sender, LogCapture() as logs:
        assert sender.send_critical_webhook({"alert": "db down"}) is False
    assert len(server.requests) == 5  # max_attempts counts the first attempt
    line = next(line for line in logs.text.splitlines() if "Critical webhook failed" in line)
    assert " CRITICAL " in line and '"alert":"db down"' in line
    cause = next(line for line in logs.text.splitlines() if " not delivered: " in line)
    assert "status 503" in cause and "given up after 5 attempts" in cause


# -- Common Use Cases: Payment API Integration --------------------------------------------


class PaymentWebhookProcessor(WebhookSenderWorker):
    def process_payment_event(self, payment_data):
        if payment_data["status"] == "completed":
            self.send_webhook("/payments/completed", payment_data)
        elif payment_data["status"] == "failed":
            self.send_webhook("/payments/failed", payment_data)


def test_payment_webhook_processor_routes_by_status(urls, monkeypatch):
    server, _ = urls
    server.route("POST", "/payments/completed", status=200)
    server.route("POST", "/payments/failed", status=200)
    monkeypatch.setenv("HTTP_BASE_URL", server.base_url)  # the class gives no base_url
    with PaymentWebhookProcessor() as processor:
        processor.process_payment_event({"id": "pay_1", "status": "completed", "amount": 10})
        processor.process_payment_event({"id": "pay_2", "status": "failed", "error": "card declined"})
        processor.process_payment_event({"id": "pay_3", "status": "pending"})
    assert [(r.path, r.json()["id"]) for r in server.requests] == [
        ("/payments/completed", "pay_1"), ("/payments/failed", "pay_2")]
