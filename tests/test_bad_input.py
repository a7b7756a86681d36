"""Bad input is refused at the door with a clear error, never later as a traceback or a hang."""

import pytest

from syncworkers import (
    CircuitBreakerConfig,
    ConfigError,
    HTTPClient,
    HTTPClientConfig,
    LinkHeaderPaginator,
    MemoryQueue,
    PeriodicJob,
    PollerConfig,
    PollerWorker,
    RateLimits,
    RetryConfig,
    Runner,
    WebhookConfig,
    WebhookSenderWorker,
)
from syncworkers.config.defaults import DEFAULT_MAX_PAYLOAD_BYTES
from syncworkers.exceptions import SignatureError
from syncworkers.signing import sign, verify

from .helpers import new_secret

pytestmark = pytest.mark.transport_independent

# -- methods and URLs ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET\r\n", "GET\n", "GE T", "\tGET", "GET\x00", "GET\r\nX-Evil: 1"])
def test_a_method_with_whitespace_or_a_line_break_is_refused(method):
    with pytest.raises(ConfigError, match="method"):
        PollerConfig(method=method)


def test_a_valid_method_is_still_normalised():
    assert PollerConfig(method="post").method == "POST"


BAD_URLS = [
    "http://example.com/a\r\nX-Evil: 1",
    "http://example.com/a b",
    "http://example.com/a\x00b",
    "http://example.com/\n",
    "http://exa mple.com/",
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("config, field", [(PollerConfig, "base_url"), (PollerConfig, "url"),
                                           (HTTPClientConfig, "base_url"), (WebhookConfig, "base_url")])
def test_a_url_with_a_line_break_a_space_or_a_nul_is_refused(config, field, url):
    with pytest.raises(ConfigError, match=field):
        config(**{field: url})


@pytest.mark.parametrize("path", ["/a\r\nX-Evil: 1", "/a b", "/a\x00"])
def test_a_relative_poller_url_with_a_line_break_is_refused(path):
    with pytest.raises(ConfigError, match="url"):
        PollerConfig(url=path)
    assert PollerConfig(url="/items?page=1").url == "/items?page=1"


@pytest.mark.parametrize("path", ["/a\r\nX-Evil: 1", "http://h/a b"])
def test_a_webhook_endpoint_with_a_line_break_is_refused(path):
    with pytest.raises(ConfigError, match="endpoints|contains"):
        WebhookConfig(endpoints={"orders": path})


@pytest.mark.parametrize("config", [PollerConfig, HTTPClientConfig, WebhookConfig])
@pytest.mark.parametrize("base", ["https://api.example.com/v1?token=s3cr3t-t0ken",
                                  "https://api.example.com/v1#frag", "https://api.example.com/v1?"])
def test_a_base_url_with_a_query_string_or_fragment_is_refused_without_quoting_it(config, base):
    with pytest.raises(ConfigError, match="query string or fragment") as info:
        config(base_url=base)
    assert "s3cr3t" not in str(info.value)
    # A request URL may have a query string; only a base URL may not.
    assert PollerConfig(url="https://api.example.com/v1?page=2").url.endswith("?page=2")


def test_url_errors_never_quote_a_password_or_a_query_string():
    with pytest.raises(ConfigError) as info:
        HTTPClientConfig(base_url="https://user:hunter2-pass@api.example.com/a b?token=s3cr3t")
    assert "hunter2" not in str(info.value) and "s3cr3t" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        PollerConfig(url="https://user:hunter2-pass@api.example.com/x\r\n?token=s3cr3t")
    assert "hunter2" not in str(info.value) and "s3cr3t" not in str(info.value)


def test_urls_from_the_environment_are_checked_alike(monkeypatch):
    monkeypatch.setenv("HTTP_BASE_URL", "https://api.example.com/v1?key=abc")
    with pytest.raises(ConfigError, match="HTTP_BASE_URL"):
        HTTPClientConfig.from_env()


# -- numbers that pass validation but break later ------------------------------------------


@pytest.mark.parametrize("config, field, value", [
    (HTTPClientConfig, "timeout", 1e300),
    (HTTPClientConfig, "connect_timeout", 1e300),
    (HTTPClientConfig, "read_timeout", 10 ** 12),
    (HTTPClientConfig, "deadline", 1e300),
    (HTTPClientConfig, "keepalive_expiry", 1e300),
    (HTTPClientConfig, "max_connections", 10 ** 7),
    (HTTPClientConfig, "max_keepalive_connections", 10 ** 7),
    (HTTPClientConfig, "max_in_flight_per_host", 10 ** 7),
    (HTTPClientConfig, "max_redirects", 10 ** 7),
    (HTTPClientConfig, "max_response_size", 2 ** 40),
    (HTTPClientConfig, "max_retries", 10 ** 6),
    (HTTPClientConfig, "retry_delay", 1e300),
    (HTTPClientConfig, "retry_backoff", 1e300),
    (PollerConfig, "interval", 1e300),
    (PollerConfig, "connect_timeout", 1e300),
    (PollerConfig, "read_timeout", 1e300),
    (PollerConfig, "max_connections", 10 ** 7),
    (WebhookConfig, "timeout", 1e300),
    (WebhookConfig, "max_workers", 10 ** 7),
    (WebhookConfig, "max_retries", 10 ** 6),
    (WebhookConfig, "retry_delay", 1e300),
    (WebhookConfig, "retry_backoff", 1e300),
    (WebhookConfig, "disable_after", 1e300),
    (WebhookConfig, "max_in_flight_per_host", 10 ** 7),
    (WebhookConfig, "max_payload_bytes", 2 ** 40),
    (RetryConfig, "max_attempts", 10 ** 6),
    (RetryConfig, "initial_delay", 1e300),
    (RetryConfig, "max_delay", 1e300),
    (RetryConfig, "exponential_base", 1e300),
    (RetryConfig, "retry_after_max", 1e300),
    (CircuitBreakerConfig, "timeout_seconds", 1e300),
    (CircuitBreakerConfig, "failure_threshold", 10 ** 12),
])
def test_numbers_too_large_to_work_are_refused_quoting_the_value(config, field, value):
    with pytest.raises(ConfigError, match=field) as info:
        config(**{field: value})
    assert repr(value) in str(info.value) or f"{value:g}" in str(info.value)
    assert "must be <=" in str(info.value)


def test_the_examples_of_the_issue_are_config_errors():
    with pytest.raises(ConfigError, match=r"timeout must be <= 86400.*1e\+300"):
        HTTPClientConfig(timeout=1e300)
    with pytest.raises(ConfigError, match="max_workers must be <= 1024, got 10000000"):
        WebhookConfig(max_workers=10 ** 7)
    with pytest.raises(ConfigError, match="max_workers"):
        WebhookSenderWorker("http://127.0.0.1:9", max_workers=10 ** 7)


def test_the_largest_sane_values_are_accepted():
    HTTPClientConfig(timeout=86400, deadline=86400, max_connections=1024, max_response_size=2 ** 30)
    PollerConfig(interval=7 * 86400)
    WebhookConfig(max_workers=1024, max_retries=99, retry_schedule=[5, 7 * 86400])
    RetryConfig(max_attempts=100, exponential_base=10, max_delay=86400)


@pytest.mark.parametrize("schedule", ["5,1e300", [5, float("inf")], "5,inf"])
def test_a_retry_schedule_delay_too_long_is_refused(schedule):
    with pytest.raises(ConfigError, match="retry_schedule"):
        WebhookConfig(retry_schedule=schedule)


def test_bounds_apply_to_the_environment_too(monkeypatch):
    monkeypatch.setenv("HTTP_TIMEOUT", "1e300")
    monkeypatch.setenv("HTTP_CONNECTION_POOL_SIZE", "10000000")
    with pytest.raises(ConfigError) as info:
        HTTPClientConfig.from_env()
    assert "HTTP_TIMEOUT" in str(info.value) and "HTTP_CONNECTION_POOL_SIZE" in str(info.value)


# -- the payload-size cap -----------------------------------------------------------------


def test_the_payload_cap_defaults_to_one_mib_and_is_read_from_the_environment(monkeypatch):
    assert DEFAULT_MAX_PAYLOAD_BYTES == 1024 * 1024
    assert WebhookConfig().max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES
    monkeypatch.setenv("WEBHOOK_MAX_PAYLOAD_BYTES", "2048")
    assert WebhookConfig.from_env().max_payload_bytes == 2048
    monkeypatch.setenv("WEBHOOK_MAX_PAYLOAD_BYTES", "0")
    with pytest.raises(ConfigError, match="WEBHOOK_MAX_PAYLOAD_BYTES"):
        WebhookConfig.from_env()


@pytest.mark.transport_dependent
def test_a_payload_over_the_cap_is_refused_before_anything_is_sent_or_stored(server):
    server.route("POST", "/hook", status=200)
    big = {"blob": "x" * 2000}
    config = WebhookConfig(max_payload_bytes=1000, retry_delay=0.01)
    with WebhookSenderWorker(server.base_url, config) as worker:
        with pytest.raises(ValueError, match=r"2011 bytes.*1000"):
            worker.deliver("/hook", big)
        with pytest.raises(ValueError, match=r"2011 bytes.*1000"):
            worker.send_webhook("/hook", big)
        with pytest.raises(ValueError, match=r"2011 bytes.*1000"):
            worker.broadcast_webhook(["/hook", "/hook2"], big)
        with pytest.raises(ValueError, match=r"2011 bytes.*1000"):
            worker.enqueue("/hook", big)
        assert worker.outbox.counts()["pending"] == 0
        assert worker.send_webhook("/hook", {"blob": "x" * 900}) is True  # under the cap: sent
    assert len(server.requests) == 1


@pytest.mark.transport_dependent
def test_the_default_cap_refuses_a_two_mib_payload(server):
    server.route("POST", "/hook", status=200)
    with WebhookSenderWorker(server.base_url) as worker:
        with pytest.raises(ValueError, match="max_payload_bytes"):
            worker.enqueue("/hook", {"blob": "x" * (2 * 1024 * 1024)})
        assert worker.outbox.counts()["pending"] == 0
    assert server.requests == []


# -- verify() with the wrong types -----------------------------------------------------------


@pytest.fixture
def signed():
    secret = new_secret()
    body = b'{"a":1}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000",
               "webhook-signature": sign("msg_1", 1700000000, body, secret)}
    return secret, body, headers


@pytest.mark.parametrize("headers", [None, [("webhook-id", "msg_1")], "webhook-id: msg_1", 42])
def test_verify_with_headers_that_are_not_a_mapping_says_so(signed, headers):
    secret, body, _ = signed
    with pytest.raises((SignatureError, TypeError), match="headers") as info:
        verify(body, headers, secret, now=1700000000)
    assert not isinstance(info.value, AttributeError)


@pytest.mark.parametrize("body", [None, 5, 0, {"a": 1}, [1, 2]])
def test_verify_with_a_body_that_is_neither_bytes_nor_str_says_so(signed, body):
    secret, _, headers = signed
    with pytest.raises((SignatureError, TypeError), match="body"):
        verify(body, headers, secret, now=1700000000)


def test_verify_accepts_bytes_like_and_str_bodies(signed):
    secret, body, headers = signed
    for same in (body, body.decode(), bytearray(body), memoryview(body)):
        assert verify(same, headers, secret, now=1700000000) is True


def test_verify_with_header_values_that_are_not_text_raises_signature_error(signed):
    secret, body, headers = signed
    with pytest.raises(SignatureError, match="webhook-timestamp"):
        verify(body, {**headers, "webhook-timestamp": 1700000000}, secret, now=1700000000)


# -- issue 21: what used to pass the door and fail later -------------------------------------


def test_a_poller_interval_given_as_text_is_refused_with_one_clear_sentence():
    with pytest.raises(ConfigError) as info:
        PollerWorker("http://127.0.0.1:9/x", interval="5")
    assert "interval must be a number, got '5'" in str(info.value)
    assert "interval interval" not in str(info.value)


@pytest.mark.parametrize("schedule", ["", " , ", {5.0, 60.0}, {"5": 1}, 5, 5.0, b"5", [True], ["soon"], [None]])
def test_a_retry_schedule_that_is_empty_text_or_no_sequence_of_seconds_is_refused(schedule):
    with pytest.raises(ConfigError, match="retry_schedule must (hold at least one delay|be a sequence of seconds)"):
        WebhookConfig(retry_schedule=schedule)


def test_an_empty_sequence_is_the_schedule_of_a_single_attempt():
    """Given in code it is a choice (tests/test_dispatch.py relies on it); as text it is a variable left empty."""
    assert WebhookConfig(retry_schedule=()).retry_schedule == ()


def test_an_empty_retry_schedule_from_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "")
    with pytest.raises(ConfigError, match="WEBHOOK_RETRY_SCHEDULE.*at least one delay"):
        WebhookConfig.from_env()
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "5, 300")
    assert WebhookConfig.from_env().retry_schedule == (5.0, 300.0)


@pytest.mark.parametrize("tolerance", [-5, -0.5, float("nan"), float("inf")])
def test_verify_refuses_a_tolerance_that_is_no_time_window(signed, tolerance):
    secret, body, headers = signed
    with pytest.raises(ValueError, match="tolerance must be a finite number of seconds >= 0") as info:
        verify(body, headers, secret, tolerance=tolerance, now=1700000000)
    assert not isinstance(info.value, SignatureError)  # the caller's mistake, not a verdict on the webhook


@pytest.mark.parametrize("tolerance", ["300", None, True])
def test_verify_refuses_a_tolerance_that_is_no_number(signed, tolerance):
    secret, body, headers = signed
    with pytest.raises(TypeError, match="tolerance must be a number of seconds"):
        verify(body, headers, secret, tolerance=tolerance, now=1700000000)


def test_verify_refuses_a_nan_now_which_would_pass_any_timestamp(signed):
    secret, body, headers = signed
    with pytest.raises(ValueError, match="now must be a finite number"):
        verify(body, headers, secret, now=float("nan"))
    assert verify(body, headers, secret, tolerance=0, now=1700000000) is True  # the window's edges: inclusive
    with pytest.raises(SignatureError, match="too old"):
        verify(body, headers, secret, tolerance=0, now=1700000001)


def test_the_flask_receiver_refuses_a_bad_tolerance_when_it_decorates():
    pytest.importorskip("flask")
    from syncworkers.contrib.flask import webhook_receiver

    with pytest.raises(ValueError, match="tolerance"):
        webhook_receiver(new_secret(), tolerance=-5)


@pytest.mark.parametrize("field, value", [("user_agent", "agent\r\nX-Evil: 1"), ("user_agent", " agent"),
                                          ("bearer_token", "s3cr3t-t0ken\r\nX-Evil: 1"),
                                          ("api_key", "s3cr3t-k3y\n"), ("bearer_token", "s3cr3t-tök€n")])
def test_a_credential_or_agent_no_header_can_carry_is_refused_without_quoting_it(field, value):
    auth = {"bearer_token": {"auth_type": "bearer"}, "api_key": {"auth_type": "api_key"}}.get(field, {})
    with pytest.raises(ConfigError, match=f"{field} cannot be sent in a header") as info:
        HTTPClientConfig(**{field: value}, **auth)
    assert "s3cr3t" not in str(info.value) and "agent" not in str(info.value).split(field, 1)[1]


def _poller(**kw):
    return PollerWorker("http://127.0.0.1:9/x", interval=5, **kw)


CONSTRUCTOR_GAPS = {
    "WebhookSenderWorker(max_workers='5')": lambda: WebhookSenderWorker("http://127.0.0.1:9", max_workers="5"),
    "WebhookSenderWorker(outbox=<a path>)": lambda: WebhookSenderWorker("http://127.0.0.1:9", outbox="outbox.db"),
    "HTTPClient(threads=0)": lambda: HTTPClient(HTTPClientConfig(), threads=0),
    "HTTPClient(threads=2.5)": lambda: HTTPClient(HTTPClientConfig(), threads=2.5),
    "HTTPClient(threads='4')": lambda: HTTPClient(HTTPClientConfig(), threads="4"),
    "HTTPClient(threads=True)": lambda: HTTPClient(HTTPClientConfig(), threads=True),
    "HTTPClient(config=<a URL>)": lambda: HTTPClient(config="http://127.0.0.1:9"),
    "HTTPClient(clock=5)": lambda: HTTPClient(HTTPClientConfig(), clock=5),
    "HTTPClient(stop_event=True)": lambda: HTTPClient(HTTPClientConfig(), stop_event=True),
    "Runner(stagger='no')": lambda: Runner([], stagger="no"),
    "MemoryQueue(maxsize=-1)": lambda: MemoryQueue(-1),
    "MemoryQueue(maxsize='10')": lambda: MemoryQueue("10"),
    "PeriodicJob(coordinated='false')": lambda: PeriodicJob("job", 5, lambda: None, coordinated="false"),
    "LinkHeaderPaginator(same_origin='false')": lambda: LinkHeaderPaginator(same_origin="false"),
    "RateLimits(clock=5)": lambda: RateLimits(clock=5),
    "PollerWorker(params=5)": lambda: _poller(params=5),
    "PollerWorker(params=[1])": lambda: _poller(params=[1]),
    "PollerWorker(data=5)": lambda: _poller(method="POST", data=5),
    "PollerWorker(json=nan)": lambda: _poller(method="POST", json={"a": float("nan")}),
    "PollerWorker(json={1})": lambda: _poller(method="POST", json={1, 2}),
}


@pytest.mark.parametrize("case", list(CONSTRUCTOR_GAPS))
def test_a_constructor_argument_of_the_wrong_type_is_refused_at_construction(case):
    """Each was accepted and failed later (a TypeError inside a poll, a requests error, a truthy 'false')."""
    argument = case.split("(", 1)[1].split("=", 1)[0]
    with pytest.raises(ConfigError, match=argument):
        CONSTRUCTOR_GAPS[case]()
