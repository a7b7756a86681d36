"""Every PollerWorker example of the reference document, run against the loopback server.

The class bodies are the reference's with ``async``/``await`` deleted, imports
from ``syncworkers`` and each https URL replaced by ``api(path)`` (the loopback
server of the running test). The helpers the examples call but do not define
(``handle_payment_completed``, ...) are defined in ``Recording*`` subclasses
that record their calls.
"""

import logging
import threading

import pytest

from syncworkers import CircuitBreakerConfig, CircuitOpenError, HTTPClientConfig, PollerConfig, PollerWorker

from .server import Reply

_current = {}


@pytest.fixture(autouse=True)
def api_server(server):
    _current["server"] = server
    yield server
    _current.clear()


def api(path):
    """The loopback URL standing in for the reference's https://api.... URLs."""
    return _current["server"].url(path)


# -- the reference's classes (async/await deleted) ------------------------------------


class PaymentStatusPoller(PollerWorker):
    def __init__(self):
        super().__init__(
            url=api("/status"),
            interval=30,  # Poll every 30 seconds
            method="GET",
            headers={"Authorization": "Bearer your-token"},
            params={"status": "pending"}
        )

    def process_message(self, message):
        """Process HTTP response from polling"""
        data = message.body
        # Handle different response types
        if isinstance(data, list):
            for item in data:
                self.process_payment_update(item)
        else:
            self.process_payment_update(data)
        return {"processed": True, "count": len(data) if isinstance(data, list) else 1}

    def process_payment_update(self, payment_data):
        """Process individual payment update"""
        payment_id = payment_data.get("id")
        status = payment_data.get("status")
        if status == "completed":
            self.handle_payment_completed(payment_id)
        elif status == "failed":
            self.handle_payment_failed(payment_id, payment_data.get("error"))
        self.logger.info(f"Processed payment {payment_id} with status {status}")


class AdvancedAPIPoller(PollerWorker):
    def __init__(self):
        # Advanced poller configuration
        poller_config = PollerConfig(
            base_url=api(""),
            url=api("/events"),
            interval=60,
            method="POST",
            connect_timeout=10.0,
            read_timeout=30.0,
            max_connections=50,
            verify_ssl=True,
            follow_redirects=True,
            user_agent="MyApp/1.0"
        )
        super().__init__(
            url=api("/events"),
            interval=60,
            method="POST",
            headers={
                "Authorization": "Bearer your-token",
                "Content-Type": "application/json"
            },
            poller_config=poller_config
        )

    def process_message(self, message):
        # Process response with metadata
        response_data = message.body
        status_code = message.headers.get("status_code")
        timestamp = message.timestamp
        self.logger.info(
            f"Received response with status {status_code} at {timestamp}",
            response_size=len(str(response_data))
        )
        return {"status": "processed", "response_code": status_code}


def extract_events(response_data):
    """Custom data extractor function"""
    if "events" in response_data:
        return response_data["events"]  # Return list of events
    return [response_data]  # Single event


class EventPoller(PollerWorker):
    def __init__(self):
        super().__init__(
            url=api("/feed"),
            interval=120,
            data_extractor=extract_events  # Custom data extraction
        )

    def process_message(self, message):
        """Each message contains a single extracted event"""
        event = message.body
        event_type = event.get("type")
        if event_type == "user_signup":
            self.handle_user_signup(event)
        elif event_type == "purchase":
            self.handle_purchase(event)
        return {"event_type": event_type, "processed": True}


class ResilientAPIPoller(PollerWorker):
    def __init__(self):
        # Configure circuit breaker
        circuit_config = CircuitBreakerConfig(
            failure_threshold=5,  # Open after 5 failures
            timeout_seconds=60,  # Stay open for 60 seconds
            expected_exception=Exception
        )
        http_config = HTTPClientConfig(
            circuit_breaker_config=circuit_config
        )
        super().__init__(
            url=api("/data"),
            interval=30,
            http_config=http_config
        )

    def process_message(self, message):
        try:
            # Process normally
            return self.handle_api_response(message.body)
        except Exception as e:
            # Circuit breaker will handle failures
            self.logger.error(f"API processing failed: {e}")
            return {"error": str(e), "processed": False}


class MonitoredPoller(PollerWorker):
    def __init__(self):
        super().__init__(
            url=api("/metrics"),
            interval=60
        )
        self.metrics = {
            "requests_sent": 0,
            "responses_received": 0,
            "errors_count": 0
        }

    def process_message(self, message):
        self.metrics["responses_received"] += 1
        # Log with context
        self.logger.info(
            "Processing API response",
            url=self.url,
            status_code=message.headers.get("status_code"),
            response_size=len(str(message.body)),
            metrics=self.metrics
        )
        try:
            result = self.handle_response(message.body)
            return result
        except Exception as e:
            self.metrics["errors_count"] += 1
            self.logger.error(
                "Error processing API response",
                error=str(e),
                metrics=self.metrics,
                exc_info=True
            )
            raise


class HealthCheckPoller(PollerWorker):
    def __init__(self):
        super().__init__(
            url=api("/health"),
            interval=30
        )
        self.last_successful_poll = None
        self.consecutive_failures = 0

    def process_message(self, message):
        """Monitor API health"""
        from datetime import datetime
        status_code = message.headers.get("status_code", 0)
        if 200 <= status_code < 300:
            self.last_successful_poll = datetime.now()
            self.consecutive_failures = 0
            self.logger.info(
                "API health check successful",
                status_code=status_code,
                response_time_ms=message.headers.get("response_time", 0)
            )
        else:
            self.consecutive_failures += 1
            self.logger.warning(
                "API health check failed",
                status_code=status_code,
                consecutive_failures=self.consecutive_failures
            )
            # Alert on multiple failures
            if self.consecutive_failures >= 3:
                self.send_health_alert()
        return {
            "healthy": 200 <= status_code < 300,
            "status_code": status_code,
            "consecutive_failures": self.consecutive_failures
        }

    def send_health_alert(self):
        """Send alert when API is unhealthy"""
        self.logger.critical(
            f"API health check failed {self.consecutive_failures} times consecutively",
            url=self.url
        )


class APIMonitor(PollerWorker):
    def __init__(self):
        super().__init__(url=api("/api"), interval=60)

    def process_message(self, message):
        if message.body.get("status") != "operational":
            self.alert_ops_team(message.body)


class DataSyncPoller(PollerWorker):
    def process_message(self, message):
        # Sync external data to local database
        self.sync_data_to_database(message.body)


# -- the helpers the examples leave to the user, recording their calls ---------------------


class RecordingPaymentStatusPoller(PaymentStatusPoller):
    def __init__(self):
        super().__init__()
        self.calls = []
        self.completed = threading.Event()

    def handle_payment_completed(self, payment_id):
        self.calls.append(("completed", payment_id))
        self.completed.set()

    def handle_payment_failed(self, payment_id, error):
        self.calls.append(("failed", payment_id, error))


class RecordingEventPoller(EventPoller):
    def __init__(self):
        super().__init__()
        self.calls = []

    def handle_user_signup(self, event):
        self.calls.append(("signup", event["user"]))

    def handle_purchase(self, event):
        self.calls.append(("purchase", event["amount"]))


class RecordingResilientAPIPoller(ResilientAPIPoller):
    def handle_api_response(self, body):
        if "value" not in body:
            raise ValueError("no value in response")
        return {"value": body["value"], "processed": True}


class RecordingMonitoredPoller(MonitoredPoller):
    def handle_response(self, body):
        if body.get("broken"):
            raise RuntimeError("cannot store metrics")
        return {"stored": body["cpu"]}


class RecordingAPIMonitor(APIMonitor):
    def __init__(self):
        super().__init__()
        self.alerts = []

    def alert_ops_team(self, body):
        self.alerts.append(body)


class RecordingDataSyncPoller(DataSyncPoller):
    def __init__(self, target=2):
        super().__init__()
        self.synced = []
        self.target = target
        self.done = threading.Event()

    def sync_data_to_database(self, data):
        self.synced.append(data)
        if len(self.synced) >= self.target:
            self.done.set()


# -- the tests ------------------------------------------------------------------------


def test_payment_status_poller_processes_each_payment(api_server, caplog):
    api_server.route("GET", "/status", json=[
        {"id": "p1", "status": "completed"},
        {"id": "p2", "status": "failed", "error": "card declined"},
        {"id": "p3", "status": "pending"},
    ])
    poller = RecordingPaymentStatusPoller()
    with caplog.at_level(logging.INFO):
        assert poller.run_once().results == [{"processed": True, "count": 3}]
    assert poller.calls == [("completed", "p1"), ("failed", "p2", "card declined")]
    (request,) = api_server.calls("/status")
    assert request.header("Authorization") == "Bearer your-token" and request.query == "status=pending"
    assert "Processed payment p3 with status pending" in caplog.text
    assert "your-token" not in caplog.text


def test_payment_status_poller_single_object_response(api_server):
    api_server.route("GET", "/status", json={"id": "p9", "status": "completed"})
    poller = RecordingPaymentStatusPoller()
    assert poller.run_once().results == [{"processed": True, "count": 1}]
    assert poller.calls == [("completed", "p9")]


def test_payment_status_poller_run_sync_polls_and_stops(api_server):
    """The reference's ``poller.run_sync()``, off the main thread and stopped from another one."""
    api_server.route("GET", "/status", json=[{"id": "p1", "status": "completed"}])
    poller = RecordingPaymentStatusPoller()
    thread = threading.Thread(target=poller.run_sync, name="test-payment-run-sync")
    thread.start()
    try:
        assert poller.completed.wait(5)  # the first poll is at once, not after 30 s
    finally:
        poller.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert poller.calls[0] == ("completed", "p1")


def test_advanced_api_poller_posts_with_its_configuration(api_server, caplog):
    api_server.route("POST", "/events", json={"events": []})
    poller = AdvancedAPIPoller()
    with caplog.at_level(logging.INFO):
        assert poller.run_once().results == [{"status": "processed", "response_code": 200}]
    (request,) = api_server.calls("/events")
    assert request.method == "POST"
    assert request.header("User-Agent") == "MyApp/1.0"
    assert request.header("Authorization") == "Bearer your-token"
    assert request.header("Content-Type") == "application/json"
    assert (poller.interval, poller.client.timeout, poller.client.pool_size) == (60, (10.0, 30.0), 50)
    (record,) = [r for r in caplog.records if r.getMessage().startswith("Received response with status 200")]
    assert record.response_size == len(str({"events": []}))


def test_event_poller_gets_one_message_per_event(api_server):
    api_server.route("GET", "/feed", replies=[
        Reply(200, b'{"events": [{"type": "user_signup", "user": "ann"}, {"type": "purchase", "amount": 12},'
                   b' {"type": "refund"}]}', {"Content-Type": "application/json"}),
        Reply(200, b'{"type": "purchase", "amount": 5}', {"Content-Type": "application/json"}),
    ])
    poller = RecordingEventPoller()
    assert poller.run_once().results == [{"event_type": "user_signup", "processed": True},
                                 {"event_type": "purchase", "processed": True},
                                 {"event_type": "refund", "processed": True}]
    assert poller.run_once().results == [{"event_type": "purchase", "processed": True}]  # a single event
    assert poller.calls == [("signup", "ann"), ("purchase", 12), ("purchase", 5)]


def test_resilient_api_poller_handles_errors_and_its_circuit_opens_after_five_failures(api_server,
                                                                                      monkeypatch):
    monkeypatch.setenv("HTTP_MAX_RETRIES", "0")  # one attempt per poll, so five polls are five failures
    api_server.route("GET", "/data", replies=[Reply(200, b'{"value": 1}', {"Content-Type": "application/json"}),
                                              Reply(200, b'{"other": 1}', {"Content-Type": "application/json"}),
                                              Reply(500, b"down")])
    poller = RecordingResilientAPIPoller()
    assert poller.run_once().results == [{"value": 1, "processed": True}]
    assert poller.run_once().results == [{"error": "no value in response", "processed": False}]
    for _ in range(5):
        poller.poll()
    assert poller.health()["circuit"] == "open"
    outcome = poller.poll()
    assert isinstance(outcome.error, CircuitOpenError)
    assert len(api_server.calls("/data")) == 7  # the open circuit kept the last poll off the network
    assert poller.health()["metrics"]["errors"] == 1


def test_monitored_poller_dict_metrics_and_error_path(api_server, caplog):
    api_server.route("GET", "/metrics", replies=[
        Reply(200, b'{"cpu": 0.5}', {"Content-Type": "application/json"}),
        Reply(200, b'{"broken": true}', {"Content-Type": "application/json"}),
        Reply(200, b'{"cpu": 0.7}', {"Content-Type": "application/json"}),
    ])
    poller = RecordingMonitoredPoller()
    assert poller.run_once().results == [{"stored": 0.5}]
    with caplog.at_level(logging.INFO):
        outcome = poller.poll()
    assert isinstance(outcome.error, RuntimeError) and not outcome.ok
    assert poller.run_once().results == [{"stored": 0.7}]  # the worker lives on
    assert poller.metrics == {"requests_sent": 0, "responses_received": 3, "errors_count": 1}
    assert poller.health()["metrics"]["process_errors"] == 1
    own = [r for r in caplog.records if r.getMessage() == "Error processing API response"]
    assert own and own[0].exc_info and own[0].metrics["errors_count"] == 1
    assert any(r.exc_info and "process_message raised" in r.getMessage() for r in caplog.records)
    info = [r for r in caplog.records if r.getMessage() == "Processing API response"]
    assert info[0].url == api("/metrics") and info[0].status_code == 200


def test_health_check_poller_alerts_after_three_failing_statuses(api_server, monkeypatch, caplog):
    monkeypatch.setenv("HTTP_MAX_RETRIES", "0")
    api_server.route("GET", "/health", status=[200, 503, 500, 404, 200])
    poller = HealthCheckPoller()
    with caplog.at_level(logging.INFO):
        results = [poller.run_once().results[0] for _ in range(5)]
    assert [(r["healthy"], r["status_code"], r["consecutive_failures"]) for r in results] == [
        (True, 200, 0), (False, 503, 1), (False, 500, 2), (False, 404, 3), (True, 200, 0)]
    alerts = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert [r.getMessage() for r in alerts] == ["API health check failed 3 times consecutively"]
    assert alerts[0].url == api("/health")
    assert poller.last_successful_poll is not None and poller.consecutive_failures == 0
    ok = [r for r in caplog.records if r.getMessage() == "API health check successful"]
    assert isinstance(ok[0].response_time_ms, float)


def test_api_monitor_alerts_the_ops_team_unless_operational(api_server):
    api_server.route("GET", "/api", replies=[
        Reply(200, b'{"status": "operational"}', {"Content-Type": "application/json"}),
        Reply(200, b'{"status": "degraded", "component": "db"}', {"Content-Type": "application/json"}),
    ])
    monitor = RecordingAPIMonitor()
    assert monitor.run_once().results == [None]
    assert monitor.alerts == []
    monitor.run_once()
    assert monitor.alerts == [{"status": "degraded", "component": "db"}]


def test_data_sync_poller_is_configured_by_the_documented_environment(api_server, monkeypatch):
    """DataSyncPoller has no __init__: the reference's POLLER_* / HTTP_* variables configure it."""
    api_server.route("GET", "/events", json={"rows": [1, 2]})
    for name, value in {
        "POLLER_URL": api("/events"), "POLLER_INTERVAL": "0.05", "POLLER_METHOD": "GET",
        "POLLER_CONNECT_TIMEOUT": "10.0", "POLLER_READ_TIMEOUT": "30.0",
        "HTTP_AUTH_TYPE": "bearer", "HTTP_BEARER_TOKEN": "your-bearer-token",
    }.items():
        monkeypatch.setenv(name, value)
    poller = RecordingDataSyncPoller(target=2)
    assert (poller.interval, poller.client.timeout) == (0.05, (10.0, 30.0))
    poller.start()
    try:
        assert poller.done.wait(5)
    finally:
        assert poller.stop(5) is True
    assert poller.synced[:2] == [{"rows": [1, 2]}] * 2
    assert api_server.calls("/events")[0].header("Authorization") == "Bearer your-bearer-token"


def test_programmatic_configuration_section(api_server):
    """The reference's HTTPClientConfig + PollerConfig pair, given to a poller."""
    api_server.route("GET", "/events", json=[])
    http_config = HTTPClientConfig(
        max_connections=100,
        connect_timeout=5.0,
        read_timeout=30.0,
        verify_ssl=True,
        default_headers={"User-Agent": "MyApp/1.0"}
    )
    poller_config = PollerConfig(
        base_url=api(""),
        url=api("/events"),
        interval=60,
        method="GET",
        connect_timeout=10.0,
        max_connections=50
    )
    poller = PollerWorker(poller_config=poller_config, http_config=http_config)
    assert poller.run_once().results == [[]]
    assert (poller.client.timeout, poller.client.pool_size) == ((10.0, 30.0), 50)
    assert api_server.calls("/events")[0].header("User-Agent") == "MyApp/1.0"
