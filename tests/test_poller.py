"""PollerWorker against the real loopback server: bodies, statuses, errors, config layering, lifecycle.

Time is driven by an injected clock or synchronised on Events; no duration is
asserted: a wait that stop() must cut short is an hour long, and a timeout
only turns a hang into a failure.
"""

import logging
import threading

import pytest

from syncworkers import (
    CircuitBreakerConfig,
    CircuitOpenError,
    ConfigError,
    HTTPClientConfig,
    PollerConfig,
    PollerWorker,
    PollOutcome,
    RequestTimeout,
    ResponseTooLarge,
    RetryInterrupted,
    TransportError,
)
from syncworkers.scheduling.runner import Runner

from .server import Reply
from .helpers import closed_port, wait_for

NO_RETRY = HTTPClientConfig(max_retries=0)
FAST_RETRY = HTTPClientConfig(retry_delay=0.01)


class Recorder(PollerWorker):
    """Records the messages and poll errors it is given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages = []
        self.errors = []

    def process_message(self, message):
        self.messages.append(message)
        return message.body

    def on_poll_error(self, exc):
        self.errors.append(exc)


class FakeClock:
    def __init__(self, now=0.0, step=0.0):
        self.now = now
        self.step = step

    def __call__(self):
        value = self.now
        self.now += self.step
        return value


# -- what a poll delivers ------------------------------------------------------------


def test_json_body_is_parsed_and_headers_describe_the_response(server):
    server.route("GET", "/items", json={"items": [1, 2]}, headers={"X-Total": "2"})
    worker = Recorder(server.url("/items"), interval=10)
    outcome = worker.poll()
    assert outcome == PollOutcome(ok=True, status_code=200, results=[{"items": [1, 2]}], messages=1)
    (message,) = worker.messages
    assert message.body == {"items": [1, 2]}
    headers = message.headers
    assert headers["status_code"] == 200 and isinstance(headers["status_code"], int)
    assert isinstance(headers["response_time"], float) and headers["response_time"] >= 0
    assert headers["url"] == server.url("/items")
    assert headers["method"] == "GET"
    assert headers["content_type"] == "application/json"
    assert headers["response_headers"]["X-Total"] == "2"
    assert headers["attempts"] == 1
    assert message.timestamp.utcoffset().total_seconds() == 0


def test_response_time_is_measured_on_the_injected_clock(server):
    server.route("GET", "/items", json=[])
    worker = Recorder(server.url("/items"), interval=10, clock=FakeClock(100.0, step=0.25))
    worker.poll()
    assert worker.messages[0].headers["response_time"] == 250.0
    assert worker.health()["metrics"]["poll_latency_ms"]["max"] == 250.0


@pytest.mark.parametrize("content_type", ["application/problem+json; charset=utf-8", "Application/JSON"])
def test_any_json_content_type_is_parsed(server, content_type):
    server.route("GET", "/p", body=b'{"title": "x"}', headers={"Content-Type": content_type})
    worker = Recorder(server.url("/p"), interval=10)
    worker.poll()
    assert worker.messages[0].body == {"title": "x"}


def test_text_body_is_delivered_as_text_in_its_charset(server):
    server.route("GET", "/t", body="h\u00e9llo".encode("latin-1"),
                 headers={"Content-Type": "text/plain; charset=ISO-8859-1"})
    server.route("GET", "/u", body="h\u00e9llo".encode(), headers={"Content-Type": "text/plain"})
    assert Recorder(server.url("/t"), interval=10).run_once().results == ["h\u00e9llo"]
    assert Recorder(server.url("/u"), interval=10).run_once().results == ["h\u00e9llo"]


def test_invalid_json_is_delivered_as_text_and_logged(server, caplog):
    server.route("GET", "/bad", body=b"{not json", headers={"Content-Type": "application/json"})
    worker = Recorder(server.url("/bad"), interval=10)
    with caplog.at_level(logging.WARNING):
        outcome = worker.poll()
    assert not outcome.ok and worker.messages[0].body == "{not json"  # delivered, but the poll failed
    assert any(r.levelno == logging.WARNING and "invalid JSON" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [204, 200])
def test_an_empty_body_is_none(server, status):
    server.route("GET", "/e", status=status, headers={"Content-Type": "application/json"})
    worker = Recorder(server.url("/e"), interval=10)
    assert worker.run_once().results == [None]
    assert worker.messages[0].headers["status_code"] == status


@pytest.mark.parametrize("status", [200, 302, 404, 500])
def test_every_status_reaches_process_message_and_is_data(server, status):
    server.route("GET", "/s", status=status, json={"status": status})
    worker = Recorder(server.url("/s"), interval=10, http_config=HTTPClientConfig(max_retries=0,
                                                                                  follow_redirects=False))
    outcome = worker.poll()
    assert outcome.ok and outcome.status_code == status
    assert [(m.headers["status_code"], m.body) for m in worker.messages] == [(status, {"status": status})]
    assert worker.errors == []


# -- data_extractor ------------------------------------------------------------------


def test_data_extractor_splits_a_2xx_body_into_one_message_per_item(server):
    server.route("GET", "/events", json={"events": [{"id": 1}, {"id": 2}, {"id": 3}]})
    worker = Recorder(server.url("/events"), interval=10, data_extractor=lambda body: body["events"])
    outcome = worker.poll()
    assert outcome.messages == 3 and outcome.results == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert len({m.id for m in worker.messages}) == 3
    assert all(m.headers["status_code"] == 200 for m in worker.messages)
    assert worker.health()["metrics"]["messages"] == 3


@pytest.mark.parametrize("extractor, expected", [
    (lambda body: body["one"], [{"x": 1}]),  # a dict is one item
    (lambda body: (item for item in body["many"]), [1, 2]),  # a generator is many
    (lambda body: [], []),  # nothing new: no message
])
def test_data_extractor_return_shapes(server, extractor, expected):
    server.route("GET", "/d", json={"one": {"x": 1}, "many": [1, 2]})
    worker = Recorder(server.url("/d"), interval=10, data_extractor=extractor)
    assert worker.poll().ok
    assert [m.body for m in worker.messages] == expected


def test_a_non_2xx_body_is_not_passed_to_the_extractor(server):
    server.route("GET", "/events", status=503, json={"error": "down"})
    seen = []
    worker = Recorder(server.url("/events"), interval=10, http_config=NO_RETRY,
                      data_extractor=lambda body: seen.append(body) or [body])
    worker.poll()
    assert seen == []
    assert [m.body for m in worker.messages] == [{"error": "down"}]


def test_an_extractor_exception_is_logged_counted_and_fails_only_that_poll(server, caplog):
    server.route("GET", "/events", replies=[Reply(200, b'{"wrong": 1}', {"Content-Type": "application/json"}),
                                            Reply(200, b'{"events": [7]}', {"Content-Type": "application/json"})])
    worker = Recorder(server.url("/events"), interval=10, data_extractor=lambda body: body["events"])
    with caplog.at_level(logging.ERROR):
        first = worker.poll()
    assert not first.ok and isinstance(first.error, KeyError) and first.messages == 0
    assert worker.messages == []
    assert any(r.exc_info and "data_extractor" in r.getMessage() for r in caplog.records)
    assert worker.health()["metrics"]["extractor_errors"] == 1
    assert worker.health()["consecutive_failures"] == 1
    assert worker.poll().ok and [m.body for m in worker.messages] == [7]


# -- failures --------------------------------------------------------------------------


def test_a_transport_error_goes_to_on_poll_error_and_the_worker_keeps_polling(server):
    server.route("GET", "/x", replies=[Reply(fault="close"), Reply(200, b"ok")])
    worker = Recorder(server.url("/x"), interval=10, http_config=NO_RETRY)
    first = worker.poll()
    assert not first.ok and first.status_code is None and isinstance(first.error, TransportError)
    assert worker.errors == [first.error] and worker.messages == []
    assert worker.poll().ok and [m.body for m in worker.messages] == ["ok"]


def test_the_default_on_poll_error_logs_the_reason_without_a_traceback(caplog):
    worker = PollerWorker(f"http://127.0.0.1:{closed_port()}/x", interval=10, http_config=NO_RETRY)
    with caplog.at_level(logging.WARNING):
        outcome = worker.poll()
    assert isinstance(outcome.error, TransportError)
    (record,) = [r for r in caplog.records if "poll failed" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.error == "TransportError"
    assert "connection failed" in record.reason and "connection failed" in record.getMessage()


def test_an_on_poll_error_that_raises_is_logged_and_does_not_escape(caplog):
    class Broken(PollerWorker):
        def on_poll_error(self, exc):
            raise RuntimeError("handler bug")

    worker = Broken(f"http://127.0.0.1:{closed_port()}/x", interval=10, http_config=NO_RETRY)
    assert isinstance(worker.poll().error, TransportError)
    assert any(r.exc_info and "on_poll_error" in r.getMessage() for r in caplog.records)


def test_a_process_message_exception_is_logged_with_traceback_counted_and_polling_goes_on(server, caplog):
    server.route("GET", "/x", json={"n": 1})

    class Flaky(PollerWorker):
        calls = 0

        def process_message(self, message):
            self.calls += 1
            if self.calls == 1:
                raise ValueError("bad record")
            return "done"

    worker = Flaky(server.url("/x"), interval=10)
    with caplog.at_level(logging.ERROR):
        first = worker.poll()
    assert not first.ok and isinstance(first.error, ValueError) and first.status_code == 200
    (record,) = [r for r in caplog.records if "process_message raised" in r.getMessage()]
    assert record.exc_info[0] is ValueError
    assert worker.health()["metrics"]["process_errors"] == 1
    assert worker.poll().results == ["done"]


def test_one_failing_message_does_not_drop_the_others(server):
    server.route("GET", "/x", json=[1, 2, 3])

    class PickyPoller(Recorder):
        def process_message(self, message):
            if message.body == 2:
                raise ValueError("two")
            return super().process_message(message)

    worker = PickyPoller(server.url("/x"), interval=10, data_extractor=lambda body: body)
    outcome = worker.poll()
    assert outcome.results == [1, 3] and outcome.messages == 3 and not outcome.ok


def test_retries_happen_inside_one_poll(server):
    server.route("GET", "/x", status=[503, 503, 200], json={"ok": True})
    worker = Recorder(server.url("/x"), interval=10, http_config=FAST_RETRY)
    outcome = worker.poll()
    assert outcome.ok and outcome.status_code == 200
    (message,) = worker.messages
    assert message.headers["attempts"] == 3 and message.body == {"ok": True}
    assert len(server.calls("/x")) == 3
    assert worker.health()["metrics"]["polls"] == 1


def test_an_open_circuit_goes_to_on_poll_error_without_touching_the_server(server):
    server.route("GET", "/x", status=500)
    breaker = CircuitBreakerConfig(failure_threshold=2, timeout_seconds=60)
    worker = Recorder(server.url("/x"), interval=10,
                      http_config=HTTPClientConfig(max_retries=0, circuit_breaker_config=breaker))
    worker.poll()
    worker.poll()
    assert worker.health()["circuit"] == "open"
    outcome = worker.poll()
    assert isinstance(outcome.error, CircuitOpenError) and worker.errors == [outcome.error]
    assert len(server.calls("/x")) == 2
    assert [m.headers["status_code"] for m in worker.messages] == [500, 500]
    assert worker.health()["healthy"] is False


def test_a_body_too_large_goes_to_on_poll_error(server):
    server.route("GET", "/big", body=b"x" * 1000)
    worker = Recorder(server.url("/big"), interval=10, http_config=HTTPClientConfig(max_response_size=100))
    outcome = worker.poll()
    assert isinstance(outcome.error, ResponseTooLarge) and outcome.status_code == 200
    assert worker.errors == [outcome.error] and worker.messages == []


def test_headers_with_secrets_stay_out_of_logs_and_repr(caplog):
    worker = PollerWorker(f"http://127.0.0.1:{closed_port()}/x?token=qs-s3cret", interval=10,
                          headers={"Authorization": "Bearer hdr-s3cret"}, http_config=NO_RETRY)
    with caplog.at_level(logging.DEBUG):
        worker.poll()
    text = caplog.text + repr(worker) + repr(worker.health())
    assert "s3cret" not in text


# -- conditional polling --------------------------------------------------------------


def _conditional_handler(validator_header, response_header, value):
    def handler(req):
        if req.header(validator_header) == value:
            return Reply(304, b"", {response_header: value})
        return Reply(200, b'{"v": 1}', {"Content-Type": "application/json", response_header: value})
    return handler


@pytest.mark.parametrize("validator, response_header, value", [
    ("If-None-Match", "ETag", '"v1"'),
    ("If-Modified-Since", "Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
])
def test_conditional_polling_sends_validators_and_a_304_makes_no_message(server, validator, response_header,
                                                                         value):
    server.route("GET", "/feed", handler=_conditional_handler(validator, response_header, value))
    worker = Recorder(server.url("/feed"), interval=10)
    assert worker.poll().messages == 1
    second = worker.poll()
    assert second == PollOutcome(ok=True, status_code=304, messages=0)
    assert len(worker.messages) == 1
    first_req, second_req = server.calls("/feed")
    assert first_req.header(validator) is None and second_req.header(validator) == value
    metrics = worker.health()["metrics"]
    assert metrics["not_modified"] == 1 and metrics["responses_3xx"] == 1
    assert worker.health()["consecutive_failures"] == 0


def test_conditional_polling_can_be_turned_off(server):
    server.route("GET", "/feed", handler=_conditional_handler("If-None-Match", "ETag", '"v1"'))
    worker = Recorder(poller_config=PollerConfig(url=server.url("/feed"), conditional=False))
    worker.poll()
    worker.poll()
    assert len(worker.messages) == 2
    assert all(r.header("If-None-Match") is None for r in server.calls("/feed"))


def test_only_the_last_2xx_responses_validators_are_sent_and_explicit_headers_win(server):
    server.route("GET", "/feed", replies=[Reply(200, b"a", {"ETag": '"v1"'}), Reply(200, b"b"),
                                          Reply(200, b"c", {"ETag": '"v3"'}), Reply(200, b"d")])
    server.route("GET", "/own", replies=[Reply(200, b"a", {"ETag": '"v1"'})])
    worker = Recorder(server.url("/feed"), interval=10)
    own = Recorder(server.url("/own"), interval=10, headers={"if-none-match": '"mine"'})
    for _ in range(4):
        worker.poll()
    own.poll()
    own.poll()
    assert [r.header("If-None-Match") for r in server.calls("/feed")] == [None, '"v1"', None, '"v3"']
    assert [r.header("If-None-Match") for r in server.calls("/own")] == ['"mine"', '"mine"']


def test_validators_are_not_sent_with_post(server):
    server.route("POST", "/feed", handler=_conditional_handler("If-None-Match", "ETag", '"v1"'))
    worker = Recorder(server.url("/feed"), interval=10, method="POST", json={"q": 1})
    worker.poll()
    worker.poll()
    assert len(worker.messages) == 2
    assert [r.json() for r in server.calls("/feed")] == [{"q": 1}, {"q": 1}]
    assert all(r.header("If-None-Match") is None for r in server.calls("/feed"))


# -- configuration: environment and precedence ------------------------------------------


def test_poller_url_from_env_is_the_url_polled(server, monkeypatch):
    server.route("GET", "/from-env", json=1)
    monkeypatch.setenv("POLLER_URL", server.url("/from-env"))
    worker = Recorder()
    assert worker.url == server.url("/from-env") and worker.run_once().results == [1]
    assert len(server.calls("/from-env")) == 1


def test_poller_interval_from_env_is_the_interval_scheduled(monkeypatch):
    monkeypatch.setenv("POLLER_INTERVAL", "7.5")
    worker = PollerWorker("http://127.0.0.1:1/x")
    (job,) = worker.jobs()
    assert worker.interval == job.interval == 7.5 and job.func == worker._tick


def test_poller_method_from_env_is_the_method_the_server_sees(server, monkeypatch):
    server.route("POST", "/m", json="posted")
    monkeypatch.setenv("POLLER_METHOD", "post")
    worker = Recorder(server.url("/m"), interval=10)
    assert worker.method == "POST" and worker.run_once().results == ["posted"]
    assert [r.method for r in server.requests] == ["POST"]


def test_poller_connect_timeout_from_env_is_the_clients_connect_timeout(monkeypatch):
    monkeypatch.setenv("POLLER_CONNECT_TIMEOUT", "1.5")
    worker = PollerWorker("http://127.0.0.1:1/x", interval=10)
    assert worker.client.timeout == (1.5, 30.0)


def test_poller_read_timeout_from_env_times_out_a_slow_response(server, monkeypatch):
    server.route("GET", "/slow", delay=5.0)
    monkeypatch.setenv("POLLER_READ_TIMEOUT", "0.2")
    monkeypatch.setenv("HTTP_MAX_RETRIES", "0")
    worker = Recorder(server.url("/slow"), interval=10)
    outcome = worker.poll()
    assert isinstance(outcome.error, RequestTimeout) and "read timeout" in str(outcome.error)
    assert worker.errors == [outcome.error]


@pytest.mark.parametrize("explicit, config_url, env_url, expected", [
    ("/explicit", "/config", "/env", "/explicit"),
    (None, "/config", "/env", "/config"),
    (None, None, "/env", "/env"),
])
def test_url_precedence_explicit_then_config_then_env(server, monkeypatch, explicit, config_url, env_url,
                                                      expected):
    monkeypatch.setenv("POLLER_URL", server.url(env_url))
    config = PollerConfig(url=server.url(config_url)) if config_url else None
    worker = PollerWorker(server.url(explicit) if explicit else None, poller_config=config)
    assert worker.url == server.url(expected)


def test_interval_and_method_precedence(monkeypatch):
    monkeypatch.setenv("POLLER_INTERVAL", "30")
    monkeypatch.setenv("POLLER_METHOD", "PUT")
    config = PollerConfig(url="http://127.0.0.1:1/x", interval=20)
    assert (PollerWorker(poller_config=config).interval, PollerWorker(poller_config=config).method) == (20, "PUT")
    assert PollerWorker(interval=5, method="DELETE", poller_config=config).jobs()[0].interval == 5
    assert PollerWorker(method="delete", poller_config=config).method == "DELETE"
    assert PollerWorker("http://127.0.0.1:1/x").interval == 30
    monkeypatch.delenv("POLLER_INTERVAL")
    monkeypatch.delenv("POLLER_METHOD")
    default = PollerWorker("http://127.0.0.1:1/x")
    assert (default.interval, default.method) == (60.0, "GET")


@pytest.mark.parametrize("poller_kw, http_kw, env, expected", [
    # poller_config object > http_config object > POLLER_* variable > HTTP_* variable > default
    ({"connect_timeout": 1.0}, {"connect_timeout": 2.0}, {"POLLER_CONNECT_TIMEOUT": "3"}, (1.0, 30.0)),
    ({}, {"connect_timeout": 2.0}, {"POLLER_CONNECT_TIMEOUT": "3"}, (2.0, 30.0)),
    ({}, {}, {"POLLER_CONNECT_TIMEOUT": "3", "HTTP_TIMEOUT": "4"}, (3.0, 4.0)),
    ({}, {}, {"POLLER_READ_TIMEOUT": "9", "HTTP_TIMEOUT": "4"}, (4.0, 9.0)),
    ({}, {"timeout": 2.0}, {"POLLER_READ_TIMEOUT": "9", "POLLER_CONNECT_TIMEOUT": "3"}, (2.0, 2.0)),
    ({"read_timeout": 7.0}, {"timeout": 2.0}, {"POLLER_READ_TIMEOUT": "9"}, (2.0, 7.0)),
    ({}, {}, {}, (5.0, 30.0)),
])
def test_client_timeout_precedence(monkeypatch, poller_kw, http_kw, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    worker = PollerWorker(poller_config=PollerConfig(url="http://127.0.0.1:1/x", **poller_kw),
                          http_config=HTTPClientConfig(**http_kw))
    assert worker.client.timeout == expected


def test_poller_config_client_fields_reach_the_wire(server):
    server.route("GET", "/ua", json=1)
    worker = Recorder(poller_config=PollerConfig(url=server.url("/ua"), user_agent="MyApp/1.0",
                                                 max_connections=3),
                      http_config=HTTPClientConfig(user_agent="Other/2.0",
                                                   default_headers={"X-Team": "payments"}))
    worker.poll()
    (req,) = server.calls("/ua")
    assert req.header("User-Agent") == "MyApp/1.0" and req.header("X-Team") == "payments"
    assert worker.client.pool_size == 3


def test_headers_and_params_are_sent(server):
    server.route("GET", "/q", json=1)
    worker = Recorder(server.url("/q"), interval=10, headers={"X-Key": "k"}, params={"status": "pending"})
    worker.poll()
    (req,) = server.calls("/q")
    assert req.header("X-Key") == "k" and req.query == "status=pending"


@pytest.mark.parametrize("source", ["poller_config", "env"])
def test_a_relative_url_joins_the_base_url(server, monkeypatch, source):
    server.route("GET", "/api/items", json=[1])
    if source == "env":
        monkeypatch.setenv("HTTP_BASE_URL", server.url("/api"))
        worker = Recorder("/items", interval=10)
    else:
        worker = Recorder("/items", interval=10, poller_config=PollerConfig(base_url=server.url("/api/")))
    assert worker.url == server.url("/api/items") and worker.run_once().results == [[1]]


@pytest.mark.parametrize("kwargs, env, match", [
    ({}, {}, "POLLER_URL"),
    ({"url": "/items"}, {}, "base_url"),
    ({"url": "not a url"}, {}, "url"),
    ({"url": "ftp://example.org/x"}, {}, "url"),
    ({"url": "http://127.0.0.1:1/x", "interval": 0}, {}, "interval"),
    ({"url": "http://127.0.0.1:1/x", "interval": -5}, {}, "interval"),
    ({"url": "http://127.0.0.1:1/x", "method": "FETCH"}, {}, "method"),
    ({"url": "http://127.0.0.1:1/x"}, {"POLLER_INTERVAL": "soon"}, "POLLER_INTERVAL"),
    ({}, {"POLLER_URL": "nowhere"}, "POLLER_URL"),
    ({"url": "http://127.0.0.1:1/x", "data_extractor": "events"}, {}, "data_extractor"),
    ({"url": "http://127.0.0.1:1/x", "http_config": {"timeout": 1}}, {}, "http_config"),
])
def test_bad_configuration_is_a_config_error_from_the_constructor(monkeypatch, kwargs, env, match):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=match):
        PollerWorker(**kwargs)


def test_an_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        PollerWorker("http://127.0.0.1:1/x", intervall=5)


# -- scheduling and lifecycle ----------------------------------------------------------


class Counting(PollerWorker):
    """Sets ``reached`` once ``target`` messages were processed."""

    def __init__(self, *args, target=3, **kwargs):
        super().__init__(*args, **kwargs)
        self.target = target
        self.count = 0
        self.reached = threading.Event()

    def process_message(self, message):
        self.count += 1
        if self.count >= self.target:
            self.reached.set()
        return self.count


def test_start_polls_at_a_fixed_rate_until_stopped(server):
    server.route("GET", "/x", json=1)
    worker = Counting(server.url("/x"), interval=0.05, target=4)
    worker.start()
    try:
        assert worker.reached.wait(5)
        assert worker.running
    finally:
        assert worker.stop(5) is True
    assert not worker.running
    polls = worker.health()["metrics"]["polls"]
    assert polls >= 4 and len(server.calls("/x")) == polls


def test_ticks_follow_the_runners_fixed_rate_grid_and_a_busy_poll_skips_ticks(server):
    clock = FakeClock()
    entered, release = threading.Event(), threading.Event()
    lock = threading.Lock()
    state = {"active": 0, "max": 0, "ticks": []}

    class Slow(PollerWorker):
        def process_message(self, message):
            with lock:
                state["active"] += 1
                state["max"] = max(state["max"], state["active"])
                state["ticks"].append(clock.now)
            entered.set()
            release.wait(5)
            with lock:
                state["active"] -= 1

    server.route("GET", "/x", json=1)
    worker = Slow(server.url("/x"), interval=1.0)
    with Runner([worker], max_workers=4, clock=clock, name="grid") as runner:
        assert entered.wait(5)  # the first poll at once
        for now in (1.0, 2.5, 3.0):  # busy: each due tick is skipped, never queued or run alongside
            clock.now = now
            runner.wakeup()
            assert wait_for(lambda: worker._stats["skipped_ticks"] == int(now))
        entered.clear()
        release.set()
        assert wait_for(lambda: not runner.stats["jobs"][worker.name]["busy"])
        clock.now = 4.0
        runner.wakeup()
        assert entered.wait(5)
    assert state["ticks"] == [0.0, 4.0] and state["max"] == 1
    assert worker.health()["metrics"]["polls"] == 2 and len(server.calls("/x")) == 2


def test_stop_returns_promptly_with_a_long_interval_while_idle(server):
    server.route("GET", "/x", json=1)
    worker = Counting(server.url("/x"), interval=3600, target=1)
    worker.start()
    assert worker.reached.wait(5)  # the first poll happens at once; then it sleeps for an hour
    assert wait_for(lambda: worker.last_outcome is not None)
    assert worker.stop(timeout=30) is True  # it did not wait out the hour
    assert len(server.calls("/x")) == 1


def test_stop_lets_the_poll_in_progress_finish(server):
    server.route("GET", "/x", json=1)
    entered, release = threading.Event(), threading.Event()
    order = []

    class Busy(PollerWorker):
        def process_message(self, message):
            entered.set()
            release.wait(5)
            order.append("processed")

    worker = Busy(server.url("/x"), interval=3600)
    worker.start()
    assert entered.wait(5)
    stopper = threading.Thread(target=lambda: order.append(("stopped", worker.stop(5))))
    stopper.start()
    assert wait_for(worker.stop_event.is_set)  # stop() is under way, waiting for the poll
    release.set()
    stopper.join(5)
    assert order == ["processed", ("stopped", True)]


def test_stop_interrupts_a_retry_wait(server):
    server.route("GET", "/x", status=503)
    worker = Recorder(server.url("/x"), interval=3600, http_config=HTTPClientConfig(retry_delay=3600))
    worker.start()
    assert wait_for(lambda: len(server.calls("/x")) == 1)
    assert worker.stop(30) is True  # only stop() can end an hour-long retry wait
    assert isinstance(worker.last_outcome.error, RetryInterrupted)
    assert len(server.calls("/x")) == 1
    assert worker.errors == [] and worker.health()["metrics"]["errors"] == 0


def test_run_sync_off_the_main_thread_ends_when_stop_is_called(server):
    server.route("GET", "/x", json=1)
    worker = Counting(server.url("/x"), interval=0.05, target=2)
    thread = threading.Thread(target=worker.run_sync, name="test-run-sync")
    thread.start()
    try:
        assert worker.reached.wait(5)
        assert wait_for(lambda: worker.running)
    finally:
        worker.stop()
        thread.join(5)
    assert not thread.is_alive()


def test_polls_keep_coming_after_errors(server):
    server.route("GET", "/x", replies=[Reply(fault="close"), Reply(500, b"oops"), Reply(200, b"fine")])

    class Survivor(Counting):
        def process_message(self, message):
            if message.body == "oops":
                raise RuntimeError("cannot handle")
            return super().process_message(message)

    worker = Survivor(server.url("/x"), interval=0.02, target=2, http_config=NO_RETRY)
    worker.start()
    try:
        assert worker.reached.wait(5)
    finally:
        worker.stop(5)
    metrics = worker.health()["metrics"]
    assert metrics["errors"] == 1 and metrics["process_errors"] == 1


def test_poll_from_two_threads_never_overlaps_and_a_tick_meanwhile_is_skipped(server):
    server.route("GET", "/x", json=1)
    entered, release = threading.Event(), threading.Event()
    lock = threading.Lock()
    state = {"active": 0, "max": 0}

    class Guarded(PollerWorker):
        def process_message(self, message):
            with lock:
                state["active"] += 1
                state["max"] = max(state["max"], state["active"])
            entered.set()
            release.wait(5)
            with lock:
                state["active"] -= 1

    worker = Guarded(server.url("/x"), interval=10)
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(worker.poll())) for _ in range(2)]
    threads[0].start()
    assert entered.wait(5)
    threads[1].start()
    worker._tick()  # what the Runner would call: it must not wait behind a direct poll()
    assert worker.health()["metrics"]["skipped_ticks"] == 1
    assert not wait_for(lambda: len(server.calls("/x")) > 1, timeout=0.3)
    release.set()
    for thread in threads:
        thread.join(5)
    assert [o.ok for o in outcomes] == [True, True] and state["max"] == 1
    assert len(server.calls("/x")) == 2


# -- health and metrics ----------------------------------------------------------------


def test_health_tracks_successes_and_consecutive_failures(server):
    # The 500 closes its connection, so the unanswered poll is on a fresh one: libcurl resends a
    # request that a reused connection dropped without a byte of answer (requests does not).
    server.route("GET", "/x", replies=[Reply(200, b"a"), Reply(500, b"b", headers={"Connection": "close"}),
                                       Reply(fault="close"), Reply(200, b"c")])
    worker = Recorder(server.url("/x"), interval=10, http_config=NO_RETRY)
    before = worker.health()
    assert (before["healthy"], before["last_success"], before["consecutive_failures"],
            before["circuit"]) == (True, None, 0, "closed")
    worker.poll()
    first_success = worker.health()["last_success"]
    assert first_success.tzinfo is not None
    worker.poll()
    worker.poll()
    failing = worker.health()
    assert (failing["healthy"], failing["consecutive_failures"]) == (False, 2)
    assert failing["last_success"] == first_success
    worker.poll()
    recovered = worker.health()
    assert (recovered["healthy"], recovered["consecutive_failures"]) == (True, 0)
    assert recovered["last_success"] >= first_success


def test_metrics_count_polls_responses_errors_messages_and_latency(server):
    server.route("GET", "/x", replies=[Reply(200, b"a"), Reply(404, b"b"), Reply(503, b"c"), Reply(fault="close")])
    worker = Recorder(server.url("/x"), interval=10, http_config=NO_RETRY)
    assert worker.health()["metrics"]["polls"] == 0
    for _ in range(4):
        worker.poll()
    metrics = worker.health()["metrics"]
    assert {k: metrics[k] for k in ("polls", "responses_2xx", "responses_4xx", "responses_5xx", "errors",
                                    "messages", "process_errors", "skipped_ticks")} == {
        "polls": 4, "responses_2xx": 1, "responses_4xx": 1, "responses_5xx": 1, "errors": 1,
        "messages": 3, "process_errors": 0, "skipped_ticks": 0}
    assert metrics["poll_latency_ms"]["count"] == 3


def test_a_subclass_may_replace_self_metrics(server):
    server.route("GET", "/x", json=1)

    class DictMetrics(PollerWorker):
        def __init__(self):
            super().__init__(server.url("/x"), interval=10)
            self.metrics = {"responses_received": 0}

        def process_message(self, message):
            self.metrics["responses_received"] += 1

    worker = DictMetrics()
    assert worker.poll().ok
    assert worker.metrics == {"responses_received": 1}
    assert worker.health()["metrics"]["polls"] == 1
