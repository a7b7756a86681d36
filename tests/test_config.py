import dataclasses

import pytest

from syncworkers import (
    CircuitBreakerConfig,
    ConfigError,
    HTTPClientConfig,
    PollerConfig,
    RetryConfig,
    RetryStrategy,
    UnknownOptionError,
    WebhookConfig,
)

pytestmark = pytest.mark.transport_independent


def test_reference_keywords_are_accepted():
    HTTPClientConfig(max_connections=100, connect_timeout=5.0, read_timeout=30.0, verify_ssl=True,
                     default_headers={"User-Agent": "MyApp/1.0"},
                     circuit_breaker_config=CircuitBreakerConfig(failure_threshold=5, timeout_seconds=60,
                                                                 expected_exception=Exception),
                     retry_config=RetryConfig(strategy=RetryStrategy.EXPONENTIAL, max_attempts=5,
                                              initial_delay=1.0, max_delay=60.0, exponential_base=2.0,
                                              jitter=True))
    PollerConfig(base_url="https://api.example.com", url="https://api.example.com/events", interval=60,
                 method="POST", connect_timeout=10.0, read_timeout=30.0, max_connections=50,
                 verify_ssl=True, follow_redirects=True, user_agent="MyApp/1.0")
    config = WebhookConfig(base_url="https://webhooks.example.com", timeout=30, max_retries=5,
                           retry_delay=2.0, retry_backoff=2.0,
                           endpoints={"orders": "/orders/webhook", "alerts": "/system/alerts"})
    assert config.endpoints["orders"] == "/orders/webhook"


def test_configs_are_frozen_and_interval_accepts_floats():
    config = PollerConfig(interval=0.25)
    assert config.interval == 0.25
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.interval = 3  # type: ignore[misc]
    hooks = WebhookConfig(endpoints={"a": "/a"})
    with pytest.raises(TypeError):  # mappings inside are read-only views too
        hooks.endpoints["b"] = "/b"  # type: ignore[index]


def test_unknown_keyword_is_an_error_naming_it():
    with pytest.raises(UnknownOptionError, match="intervall"):
        PollerConfig(intervall=5)
    with pytest.raises(TypeError):  # also a TypeError, as Python users expect
        WebhookConfig(retries=3)


@pytest.mark.parametrize("cls, kwargs, fragment", [
    (PollerConfig, {"interval": 0}, "interval must be > 0, got 0"),
    (PollerConfig, {"interval": -1.5}, "-1.5"),
    (PollerConfig, {"method": "FETCH"}, "'FETCH'"),
    (PollerConfig, {"url": "ftp://x/y"}, "'ftp://x/y'"),
    (HTTPClientConfig, {"max_connections": 0}, "max_connections must be >= 1, got 0"),
    (HTTPClientConfig, {"read_timeout": "soon"}, "'soon'"),
    (HTTPClientConfig, {"auth_type": "oauth"}, "'oauth'"),
    (CircuitBreakerConfig, {"failure_threshold": 0}, "failure_threshold must be >= 1, got 0"),
    (WebhookConfig, {"endpoints": {"x": "not a url"}}, "'not a url'"),
    (WebhookConfig, {"retry_schedule": [1, -2]}, "retry_schedule"),
])
def test_bad_values_raise_config_error_quoting_field_and_value(cls, kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_all_bad_fields_are_reported_together():
    with pytest.raises(ConfigError) as info:
        PollerConfig(interval=0, method="NOPE", read_timeout=-1)
    assert set(info.value.errors) == {"interval", "method", "read_timeout"}


def test_auth_needs_its_credentials():
    with pytest.raises(ConfigError, match="bearer_token"):
        HTTPClientConfig(auth_type="bearer")
    with pytest.raises(ConfigError, match="basic_password"):
        HTTPClientConfig(auth_type="basic", basic_user="u")


def test_repr_masks_secrets():
    config = HTTPClientConfig(auth_type="bearer", bearer_token="tok-123456", api_key="key-abcdef",
                              basic_password="pw-xyz123")
    text = repr(config) + str(config)
    for secret in ("tok-123456", "key-abcdef", "pw-xyz123"):
        assert secret not in text
    assert "bearer_token='***'" in text
    assert "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0" not in repr(
        WebhookConfig(signing_secret="whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"))


def test_every_documented_variable_is_read(monkeypatch, tmp_path):
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("y")
    env = {
        "HTTP_BASE_URL": "http://127.0.0.1:9/api", "HTTP_TIMEOUT": "12.5", "HTTP_MAX_RETRIES": "4",
        "HTTP_RETRY_DELAY": "0.5", "HTTP_RETRY_BACKOFF": "3", "HTTP_AUTH_TYPE": "api_key",
        "HTTP_BEARER_TOKEN": "b-token", "HTTP_API_KEY": "k-123", "HTTP_API_KEY_HEADER": "X-Key",
        "HTTP_SSL_VERIFY": "false", "HTTP_SSL_CERT_FILE": str(cert), "HTTP_SSL_KEY_FILE": str(key),
        "HTTP_CONNECTION_POOL_SIZE": "64", "HTTP_MAX_KEEPALIVE_CONNECTIONS": "8",
        "HTTP_KEEPALIVE_EXPIRY": "45", "POLLER_URL": "http://127.0.0.1:9/events",
        "POLLER_INTERVAL": "2.5", "POLLER_METHOD": "post", "POLLER_CONNECT_TIMEOUT": "1.5",
        "POLLER_READ_TIMEOUT": "7",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    http = HTTPClientConfig.from_env()
    assert (http.base_url, http.timeout, http.max_retries, http.retry_delay, http.retry_backoff) == (
        "http://127.0.0.1:9/api", 12.5, 4, 0.5, 3.0)
    assert (http.auth_type, http.bearer_token, http.api_key, http.api_key_header) == (
        "api_key", "b-token", "k-123", "X-Key")
    assert (http.verify_ssl, http.ssl_cert_file, http.ssl_key_file) == (False, str(cert), str(key))
    assert (http.max_connections, http.max_keepalive_connections, http.keepalive_expiry) == (64, 8, 45.0)
    assert http.timeouts == (5.0, 12.5)
    assert http.effective_retry.max_attempts == 5
    poller = PollerConfig.from_env()
    assert (poller.url, poller.interval, poller.method, poller.connect_timeout, poller.read_timeout) == (
        "http://127.0.0.1:9/events", 2.5, "POST", 1.5, 7.0)
    hook = WebhookConfig.from_env()
    assert (hook.base_url, hook.timeout, hook.max_retries, hook.retry_delay, hook.retry_backoff) == (
        "http://127.0.0.1:9/api", 12.5, 4, 0.5, 3.0)
    retry = RetryConfig.from_env()
    assert (retry.max_attempts, retry.initial_delay, retry.exponential_base) == (5, 0.5, 3.0)


def test_every_invalid_variable_is_reported_at_once_by_name(monkeypatch):
    monkeypatch.setenv("HTTP_TIMEOUT", "fast")
    monkeypatch.setenv("HTTP_CONNECTION_POOL_SIZE", "-4")
    monkeypatch.setenv("HTTP_SSL_VERIFY", "maybe")
    monkeypatch.setenv("HTTP_AUTH_TYPE", "kerberos")
    with pytest.raises(ConfigError) as info:
        HTTPClientConfig.from_env()
    assert set(info.value.errors) == {"HTTP_TIMEOUT", "HTTP_CONNECTION_POOL_SIZE", "HTTP_SSL_VERIFY",
                                      "HTTP_AUTH_TYPE"}
    text = str(info.value)
    assert "'fast'" in text and "'-4'" in text and "'kerberos'" in text


def test_secret_variables_are_not_quoted_in_errors(monkeypatch):
    monkeypatch.setenv("HTTP_AUTH_TYPE", "bearer")
    monkeypatch.setenv("HTTP_BEARER_TOKEN", "")
    with pytest.raises(ConfigError) as info:
        HTTPClientConfig.from_env(bearer_token=None)
    assert "bearer_token" in str(info.value)


def test_precedence_explicit_then_config_object_then_env_then_default(monkeypatch):
    assert PollerConfig.resolve().interval == 60.0  # default
    monkeypatch.setenv("POLLER_INTERVAL", "9")
    assert PollerConfig.resolve().interval == 9.0  # env
    assert PollerConfig.resolve(PollerConfig(interval=5)).interval == 5.0  # config object beats env
    assert PollerConfig.resolve(PollerConfig(interval=5), interval=2).interval == 2.0  # explicit wins
    # a config object only overrides the fields it was given
    monkeypatch.setenv("POLLER_METHOD", "POST")
    merged = PollerConfig.resolve(PollerConfig(interval=5))
    assert (merged.interval, merged.method) == (5.0, "POST")
    # explicitly giving the default value still beats the environment
    assert PollerConfig.resolve(PollerConfig(method="GET")).method == "GET"


def test_a_bad_variable_overridden_explicitly_is_not_an_error(monkeypatch):
    monkeypatch.setenv("POLLER_INTERVAL", "often")
    assert PollerConfig.resolve(interval=3).interval == 3.0
    with pytest.raises(ConfigError, match="POLLER_INTERVAL"):
        PollerConfig.resolve()


def test_timeout_shorthand_and_retry_precedence():
    assert HTTPClientConfig(timeout=2).timeouts == (2.0, 2.0)
    assert HTTPClientConfig(timeout=20, read_timeout=3).timeouts == (5.0, 3.0)
    retry = RetryConfig(max_attempts=2)
    assert HTTPClientConfig(max_retries=9, retry_config=retry).effective_retry is retry
    assert HTTPClientConfig(max_retries=9).effective_retry.max_attempts == 10
    assert HTTPClientConfig(retry_backoff=1).effective_retry.strategy is RetryStrategy.FIXED


def test_repr_masks_secret_headers_and_url_credentials():
    config = HTTPClientConfig(base_url="http://user:pw-base-111@127.0.0.1:9/",
                              default_headers={"Authorization": "Bearer tok-hdr-222",
                                               "X-Api-Key": "key-hdr-333", "X-Trace": "visible"})
    poller = PollerConfig(url="http://user:pw-url-444@127.0.0.1:9/x?api_key=key-query-555&page=2")
    text = repr(config) + str(config) + repr(poller)
    for secret in ("pw-base-111", "tok-hdr-222", "key-hdr-333", "pw-url-444", "key-query-555"):
        assert secret not in text
    assert "'X-Trace': 'visible'" in text and "page=2" in text


def test_url_errors_do_not_quote_credentials(monkeypatch):
    with pytest.raises(ConfigError) as info:
        PollerConfig(url="http://user:pw-bad-666@127.0.0.1:port/x")
    assert "pw-bad-666" not in str(info.value) and "127.0.0.1:port" in str(info.value)
    monkeypatch.setenv("HTTP_BASE_URL", "ftp://user:pw-env-777@127.0.0.1/")
    with pytest.raises(ConfigError) as info:
        HTTPClientConfig.from_env()
    assert "pw-env-777" not in str(info.value) and "HTTP_BASE_URL" in str(info.value)


def test_retry_config_from_env_reports_every_invalid_variable(monkeypatch):
    monkeypatch.setenv("HTTP_MAX_RETRIES", "-1")
    monkeypatch.setenv("HTTP_RETRY_DELAY", "soon")
    monkeypatch.setenv("HTTP_RETRY_BACKOFF", "0.5")
    with pytest.raises(ConfigError) as info:
        RetryConfig.from_env()
    assert set(info.value.errors) == {"HTTP_MAX_RETRIES", "HTTP_RETRY_DELAY", "HTTP_RETRY_BACKOFF"}


def test_resolve_rejects_unknown_keywords():
    with pytest.raises(UnknownOptionError, match="intervall"):
        PollerConfig.resolve(intervall=5)
    with pytest.raises(UnknownOptionError, match="max_connection"):
        HTTPClientConfig.resolve({"max_connection": 3})
