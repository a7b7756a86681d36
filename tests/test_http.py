"""HTTPClient against real loopback servers: every variable changes what goes over the wire."""

import base64
import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from syncworkers import (
    CircuitBreakerConfig,
    CircuitOpenError,
    ConfigError,
    HTTPClientConfig,
    RequestTimeout,
    ResponseTooLarge,
    RetryConfig,
    RetryInterrupted,
    TransportError,
)
from syncworkers.http.client import HTTPClient

from .helpers import LogCapture, closed_port
from .server import Reply


class RecordingEvent(threading.Event):
    """A stop event that records the retry waits instead of sleeping through them."""

    def __init__(self):
        super().__init__()
        self.waits = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return self.is_set()


def client_from_env(monkeypatch, env, **kw):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return HTTPClient(HTTPClientConfig.from_env(), **kw)


def test_base_url_from_env_joins_relative_paths(server, monkeypatch):
    server.route("GET", "/api/items", json=[1, 2])
    with client_from_env(monkeypatch, {"HTTP_BASE_URL": server.url("/api")}) as client:
        response = client.get("/items")
    assert response.json() == [1, 2]
    assert response.attempts == 1


def test_relative_url_without_base_url_is_a_config_error():
    with HTTPClient(HTTPClientConfig()) as client, pytest.raises(ConfigError, match="base_url"):
        client.get("/items")


def test_http_timeout_is_the_read_timeout(server, monkeypatch):
    server.route("GET", "/slow", delay=2.0)
    with client_from_env(monkeypatch, {"HTTP_TIMEOUT": "0.2", "HTTP_MAX_RETRIES": "0"}) as client:
        with pytest.raises(RequestTimeout, match="read timeout") as info:
            client.get(server.url("/slow"))
    assert info.value.attempts == 1


def test_max_retries_delay_and_backoff_from_env(server, monkeypatch):
    server.route("POST", "/flaky", status=[503, 503, 503, 200])
    stop = RecordingEvent()
    env = {"HTTP_MAX_RETRIES": "3", "HTTP_RETRY_DELAY": "0.5", "HTTP_RETRY_BACKOFF": "3"}
    with client_from_env(monkeypatch, env, stop_event=stop) as client:
        response = client.post(server.url("/flaky"), data=b"x")
    assert response.status_code == 200
    assert response.attempts == 4
    assert len(server.calls("/flaky")) == 4
    assert stop.waits == [0.5, 1.5, 4.5]


def test_retries_exhausted_return_the_last_response(server, monkeypatch):
    server.route("GET", "/down", status=503)
    stop = RecordingEvent()
    with client_from_env(monkeypatch, {"HTTP_MAX_RETRIES": "2"}, stop_event=stop) as client:
        response = client.get(server.url("/down"))
    assert response.status_code == 503
    assert response.attempts == 3
    assert len(server.calls("/down")) == 3


def test_four_hundreds_are_final(server):
    server.route("POST", "/bad", status=422)
    with HTTPClient(HTTPClientConfig(max_retries=5), stop_event=RecordingEvent()) as client:
        assert client.post(server.url("/bad")).status_code == 422
    assert len(server.calls("/bad")) == 1


def test_retry_after_is_honoured_and_beyond_its_cap_ends_the_call_at_once(server):
    server.route("GET", "/throttled", replies=[Reply(429, headers={"Retry-After": "7"}),
                                               Reply(503, headers={"Retry-After": "86400"}), Reply(200)])
    stop = RecordingEvent()
    config = HTTPClientConfig(retry_config=RetryConfig(max_attempts=3, initial_delay=1, retry_after_max=30))
    with HTTPClient(config, stop_event=stop) as client:
        response = client.get(server.url("/throttled"))
    # A day's Retry-After never holds the caller: the answer comes back at once, not retried.
    assert (response.status_code, response.attempts) == (503, 2)
    assert stop.waits == [7.0]
    assert len(server.calls("/throttled")) == 2


def test_send_webhook_returns_at_once_on_a_retry_after_of_hours(server):
    from syncworkers import WebhookConfig, WebhookSenderWorker

    server.route("POST", "/hook", replies=[Reply(503, headers={"Retry-After": "7200"}), Reply(200)])
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(max_retries=3, retry_delay=0.01))
    try:
        done = threading.Event()
        result = []
        t = threading.Thread(target=lambda: (result.append(sender.send_webhook("/hook", {"a": 1})), done.set()))
        t.start()
        assert done.wait(10)  # not two hours, nor the 60 s cap
        t.join()
        assert result == [False]
        assert len(server.calls("/hook")) == 1
    finally:
        sender.close()


def test_connection_errors_are_retried_then_mapped(monkeypatch):
    port = closed_port()
    stop = RecordingEvent()
    with HTTPClient(HTTPClientConfig(max_retries=2, retry_delay=0.1), stop_event=stop) as client:
        with pytest.raises(TransportError, match="connection failed") as info:
            client.get(f"http://127.0.0.1:{port}/x?token=s3cr3t-query")
    assert info.value.attempts == 3
    assert stop.waits == [0.1, 0.2]
    assert "s3cr3t-query" not in str(info.value)


@pytest.mark.parametrize("fault", ["close", "reset"])
def test_dropped_connections_are_transport_errors(server, fault):
    server.route("GET", "/drop", replies=[Reply(fault=fault)])
    with HTTPClient(HTTPClientConfig(max_retries=0)) as client, pytest.raises(TransportError):
        client.get(server.url("/drop"))


def test_retry_wait_is_interrupted_by_cancel(server):
    server.route("GET", "/down", status=503)
    cancel = threading.Event()
    cancel.set()
    with HTTPClient(HTTPClientConfig(max_retries=5, retry_delay=3600)) as client:
        with pytest.raises(RetryInterrupted):
            client.get(server.url("/down"), cancel=cancel)
    assert len(server.calls("/down")) == 1


def test_bearer_token_from_env_is_sent(server, monkeypatch):
    server.route("GET", "/me", status=200)
    env = {"HTTP_AUTH_TYPE": "bearer", "HTTP_BEARER_TOKEN": "tok-abc123"}
    with client_from_env(monkeypatch, env) as client:
        client.get(server.url("/me"))
    assert server.calls("/me")[0].header("Authorization") == "Bearer tok-abc123"


def test_api_key_and_header_name_from_env(server, monkeypatch):
    server.route("GET", "/me", status=200)
    env = {"HTTP_AUTH_TYPE": "api_key", "HTTP_API_KEY": "key-987", "HTTP_API_KEY_HEADER": "X-Partner-Key"}
    with client_from_env(monkeypatch, env) as client:
        client.get(server.url("/me"))
    request = server.calls("/me")[0]
    assert request.header("X-Partner-Key") == "key-987"
    assert request.header("Authorization") is None


def test_basic_auth_from_env(server, monkeypatch):
    server.route("GET", "/me", status=200)
    env = {"HTTP_AUTH_TYPE": "basic", "HTTP_BASIC_USER": "ann", "HTTP_BASIC_PASSWORD": "pw:1"}
    with client_from_env(monkeypatch, env) as client:
        client.get(server.url("/me"))
    expected = "Basic " + base64.b64encode(b"ann:pw:1").decode()
    assert server.calls("/me")[0].header("Authorization") == expected


def test_explicit_headers_beat_auth_from_env(server, monkeypatch):
    server.route("GET", "/me", status=200)
    monkeypatch.setenv("HTTP_AUTH_TYPE", "bearer")
    monkeypatch.setenv("HTTP_BEARER_TOKEN", "env-token")
    config = HTTPClientConfig.resolve(HTTPClientConfig(default_headers={"Authorization": "Token mine"}))
    with HTTPClient(config) as client:
        client.get(server.url("/me"))
        client.get(server.url("/me"), headers={"Authorization": "Token per-call"})
    assert [r.header("Authorization") for r in server.calls("/me")] == ["Token mine", "Token per-call"]


def test_default_headers_and_user_agent(server):
    server.route("GET", "/ua", status=200)
    config = HTTPClientConfig(default_headers={"X-Team": "payments"}, user_agent="MyApp/1.0")
    with HTTPClient(config) as client:
        client.get(server.url("/ua"))
    request = server.calls("/ua")[0]
    assert (request.header("User-Agent"), request.header("X-Team")) == ("MyApp/1.0", "payments")


def test_ssl_verify_on_by_default_and_off_from_env(tls_server, monkeypatch):
    tls_server.route("GET", "/secure", json={"ok": True})
    with HTTPClient(HTTPClientConfig(max_retries=0)) as client:
        with pytest.raises(TransportError, match="TLS"):
            client.get(tls_server.url("/secure"))
    env = {"HTTP_SSL_VERIFY": "false", "HTTP_MAX_RETRIES": "0"}
    with client_from_env(monkeypatch, env) as client:
        assert client.get(tls_server.url("/secure")).json() == {"ok": True}


def test_ssl_verify_accepts_a_ca_bundle_path(tls_server, tls_files, monkeypatch):
    tls_server.route("GET", "/secure", json={"ok": True})
    with HTTPClient(HTTPClientConfig(verify_ssl=str(tls_files / "server.pem"))) as client:
        assert client.get(tls_server.url("/secure")).json() == {"ok": True}
    with client_from_env(monkeypatch, {"HTTP_SSL_VERIFY": str(tls_files / "server.pem")}) as client:
        assert client.get(tls_server.url("/secure")).json() == {"ok": True}
    for word, verify in (("off", False), ("ON", True), ("0", False)):
        monkeypatch.setenv("HTTP_SSL_VERIFY", word)
        assert HTTPClientConfig.from_env().verify_ssl is verify


def test_client_certificate_from_env_is_presented(tls_server, tls_files, monkeypatch):
    tls_server.route("GET", "/mtls", status=200)
    env = {"HTTP_SSL_VERIFY": "false", "HTTP_SSL_CERT_FILE": str(tls_files / "client.pem"),
           "HTTP_SSL_KEY_FILE": str(tls_files / "client.key")}
    with client_from_env(monkeypatch, env) as client:
        client.get(tls_server.url("/mtls"))
    subjects = [dict(x[0] for x in cert["subject"]) for cert in tls_server.peer_certs if cert]
    assert {"commonName": "syncworkers-test-client"} in subjects


def _concurrent_batch(client, server, path, n):
    """n requests in flight at once (the server holds each until all n have arrived)."""
    barrier = threading.Barrier(n, timeout=10)

    def handler(req):
        barrier.wait()
        return Reply(200, b"ok")

    server.route("GET", path, handler=handler)
    with ThreadPoolExecutor(n) as pool:
        assert [r.status_code for r in pool.map(lambda _: client.get(server.url(path)), range(n))] == [200] * n


def test_pool_size_from_env_keeps_that_many_connections(server, monkeypatch):
    with client_from_env(monkeypatch, {"HTTP_CONNECTION_POOL_SIZE": "6"}) as client:
        _concurrent_batch(client, server, "/a", 6)
        _concurrent_batch(client, server, "/b", 6)
    assert server.connections == 6  # the second batch reused all six


def test_a_smaller_pool_keeps_fewer_connections(server, monkeypatch, caplog):
    with client_from_env(monkeypatch, {"HTTP_CONNECTION_POOL_SIZE": "2"}) as client:
        _concurrent_batch(client, server, "/a", 6)
        _concurrent_batch(client, server, "/b", 6)
    assert server.connections == 10  # only two of the first six were kept


def test_max_keepalive_connections_bounds_idle_connections(server, monkeypatch):
    env = {"HTTP_CONNECTION_POOL_SIZE": "6", "HTTP_MAX_KEEPALIVE_CONNECTIONS": "2"}
    with client_from_env(monkeypatch, env) as client, caplog_urllib3() as warnings:
        _concurrent_batch(client, server, "/a", 6)
        _concurrent_batch(client, server, "/b", 6)
    assert server.connections == 10
    assert not warnings


@pytest.mark.transport_independent
@pytest.mark.parametrize("idle, expected_connections", [(4.0, 1), (6.0, 2)])
def test_keepalive_expiry_closes_connections_idle_too_long(server, monkeypatch, idle, expected_connections):
    # The injected clock drives the requests transport's pools (curl keeps its own time: see below).
    server.route("GET", "/x", status=200)
    now = [1000.0]
    env = {"HTTP_KEEPALIVE_EXPIRY": "5", "HTTP_TRANSPORT": "requests"}
    with client_from_env(monkeypatch, env, clock=lambda: now[0]) as client:
        client.get(server.url("/x"))
        now[0] += idle
        client.get(server.url("/x"))
    assert server.connections == expected_connections


def test_keepalive_expiry_on_the_real_clock(server, monkeypatch):
    """Either transport: a connection idle past the expiry is not reused; a fresh one is."""
    server.route("GET", "/x", status=200)
    with client_from_env(monkeypatch, {"HTTP_KEEPALIVE_EXPIRY": "1"}) as client:
        client.get(server.url("/x"))
        client.get(server.url("/x"))
        assert server.connections == 1
        threading.Event().wait(2.5)  # idle for longer than the expiry
        client.get(server.url("/x"))
    assert server.connections == 2


class caplog_urllib3:
    """Collects urllib3's warnings (e.g. "Connection pool is full")."""

    def __enter__(self):
        self.records = []
        self.handler = logging.Handler(logging.WARNING)
        self.handler.emit = self.records.append
        logging.getLogger("urllib3").addHandler(self.handler)
        return self.records

    def __exit__(self, *exc):
        logging.getLogger("urllib3").removeHandler(self.handler)


def test_32_threads_by_100_requests_no_error_no_pool_warning(server):
    server.route("GET", "/load", json={"ok": True})
    with HTTPClient(HTTPClientConfig(), threads=32) as client, caplog_urllib3() as warnings:
        def work(_):
            return [client.get(server.url("/load")).status_code for _ in range(100)]

        with ThreadPoolExecutor(32) as pool:
            statuses = [s for batch in pool.map(work, range(32)) for s in batch]
    assert statuses == [200] * 3200
    assert not [r for r in warnings if "pool is full" in r.getMessage()]
    assert server.connections <= 32


def test_response_size_cap(server):
    server.route("GET", "/big", body=b"x" * 5000)
    with HTTPClient(HTTPClientConfig(max_response_size=4096, max_retries=0)) as client:
        with pytest.raises(ResponseTooLarge):
            client.get(server.url("/big"))
    with HTTPClient(HTTPClientConfig(max_response_size=6000)) as client:
        assert len(client.get(server.url("/big")).content) == 5000


def test_redirects_follow_config(server):
    server.route("GET", "/old", status=302, headers={"Location": "/new"})
    server.route("GET", "/new", json={"moved": True})
    with HTTPClient(HTTPClientConfig()) as client:
        assert client.get(server.url("/old")).json() == {"moved": True}
    with HTTPClient(HTTPClientConfig(follow_redirects=False)) as client:
        assert client.get(server.url("/old")).status_code == 302


def test_circuit_opens_after_threshold_and_fails_without_network(server):
    server.route("GET", "/down", status=500)
    config = HTTPClientConfig(max_retries=0, circuit_breaker_config=CircuitBreakerConfig(failure_threshold=3,
                                                                                          timeout_seconds=60))
    with HTTPClient(config) as client:
        for _ in range(3):
            assert client.get(server.url("/down")).status_code == 500
        with pytest.raises(CircuitOpenError) as info:
            client.get(server.url("/down"))
    assert len(server.calls("/down")) == 3
    assert info.value.remaining > 0


def test_secrets_never_in_repr_or_errors(server):
    config = HTTPClientConfig(auth_type="bearer", bearer_token="tok-secret-999", max_retries=0)
    server.route("GET", "/slow", delay=2.0)
    with HTTPClient(config) as client:
        assert "tok-secret-999" not in repr(client)
        with pytest.raises(RequestTimeout) as info:
            client.get(server.url("/slow"), timeout=(1, 0.1))
    assert "tok-secret-999" not in str(info.value)
    with HTTPClient(HTTPClientConfig(base_url="http://user:pw-in-url-888@127.0.0.1:9/api")) as client:
        assert "pw-in-url-888" not in repr(client) and "127.0.0.1:9/api" in repr(client)
    # A credential given as a default header is as secret as one from auth_type.
    key = "dflt-" + secrets.token_hex(8)
    config = HTTPClientConfig(default_headers={"X-API-Key": key, "Authorization": "Token t-" + key})
    with HTTPClient(config) as client, LogCapture() as logs:
        client.logger.info(f"session headers {dict(client.session.headers)}")
        client.logger.info(f"partner key {client.session.headers['X-API-Key']}")
        client.logger.info("partner auth", auth=client.session.headers["Authorization"].split()[1])
    assert key not in logs.text and "session headers" in logs.text


def test_trust_env_uses_proxy_variables(server, server2, monkeypatch):
    # server2 plays the proxy: with trust_env a request for server goes to it, absolute-form.
    server2.route("GET", "/via-proxy", json={"proxied": True})
    server.route("GET", "/via-proxy", json={"proxied": False})
    monkeypatch.setenv("HTTP_PROXY", server2.base_url)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    with HTTPClient(HTTPClientConfig(trust_env=True)) as client:
        assert client.get(server.url("/via-proxy")).json() == {"proxied": True}
    with HTTPClient(HTTPClientConfig()) as client:  # off by default: the variables are ignored
        assert client.get(server.url("/via-proxy")).json() == {"proxied": False}
