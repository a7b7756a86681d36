"""Bodies a poll cannot decode: too deep, not in their charset, not JSON — delivered as text, counted, never raised.

Each case is served by the real loopback server (over the suite's transport) and
goes through poll(), run_once() and a running tick; the data_extractor, paginator
and cursor paths see the same bodies. The webhook side keeps such an answer as bytes.
"""

import json
import logging
import threading
from urllib.parse import parse_qs

import pytest

from syncworkers import (
    BodyDecodeError,
    HTTPClientConfig,
    IncrementalCursor,
    LinkHeaderPaginator,
    OffsetPaginator,
    PollerWorker,
    RateLimits,
    WebhookConfig,
    WebhookSenderWorker,
)

from .server import Reply

DEEP = b"[" * 100_000 + b"]" * 100_000
JSON = {"Content-Type": "application/json"}

#: (name, body, content type, the text process_message gets, what the error says)
CASES = [
    ("too deep", DEEP, "application/json", DEEP.decode(), "JSON nested deeper than"),
    ("invalid UTF-8 in JSON", b'{"name": "caf\xe9"}', "application/json", '{"name": "caf\ufffd"}',
     "not valid utf-8"),
    ("invalid UTF-8 in text", b"caf\xe9 cr\xe8me", "text/plain; charset=utf-8", "caf\ufffd cr\ufffdme",
     "not valid utf-8"),
    ("invalid JSON", b'{"items": [1, 2', "application/problem+json", '{"items": [1, 2', "invalid JSON"),
]


class Recorder(PollerWorker):
    """Keeps every message and poll error; ``got`` is set at the first message."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("rate_limits", RateLimits())
        super().__init__(*args, **kwargs)
        self.messages = []
        self.errors = []
        self.got = threading.Event()

    def process_message(self, message):
        self.messages.append(message)
        self.got.set()
        return message.body

    def on_poll_error(self, exc):
        self.errors.append(exc)


def assert_failed_but_delivered(worker, outcome, text, reason, polls=1):
    """The text reached process_message with the reason; the poll failed and is counted as such."""
    assert [m.body for m in worker.messages] == [text] * polls
    assert all(reason in m.headers["decode_error"] for m in worker.messages)
    assert not outcome.ok and isinstance(outcome.error, BodyDecodeError) and isinstance(outcome.error, ValueError)
    assert reason in str(outcome.error) and f"status={outcome.status_code}" in str(outcome.error)
    assert outcome.results == [text] and outcome.messages == 1
    health = worker.health()
    assert (health["healthy"], health["consecutive_failures"]) == (False, polls)
    assert health["last_success"] is None
    metrics = health["metrics"]
    assert (metrics["decode_errors"], metrics["messages"], metrics["errors"]) == (polls, polls, 0)
    assert worker.errors == []  # the response arrived: on_poll_error is for polls without one


@pytest.mark.parametrize("name, body, content_type, text, reason", CASES, ids=[c[0] for c in CASES])
def test_poll_and_run_once_deliver_an_undecodable_body_as_text_and_count_a_failure(
        server, caplog, name, body, content_type, text, reason):
    server.route("GET", "/feed", body=body, headers={"Content-Type": content_type})
    worker = Recorder(server.url("/feed"), interval=60)
    with caplog.at_level(logging.WARNING, logger="syncworkers"):
        outcome = worker.poll()
    assert_failed_but_delivered(worker, outcome, text, reason)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "the body cannot be decoded (status 200: " in warning.getMessage() and reason in warning.getMessage()
    assert body.decode("utf-8", "replace")[:20] not in warning.getMessage()  # the reason, never the body
    second = worker.run_once()
    assert_failed_but_delivered(worker, second, text, reason, polls=2)


def test_a_running_tick_delivers_the_deep_body_and_lives_on(server, caplog):
    server.route("GET", "/feed", body=DEEP, headers=JSON)
    worker = Recorder(server.url("/feed"), interval=60)
    with caplog.at_level(logging.ERROR, logger="syncworkers"):
        worker.start()
        try:
            assert worker.got.wait(10)
        finally:
            assert worker.stop(5) is True
    assert worker.messages[0].body == DEEP.decode()
    assert not worker.last_outcome.ok and isinstance(worker.last_outcome.error, BodyDecodeError)
    assert worker.health()["metrics"]["decode_errors"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # nothing escaped into the tick driver


def test_observers_and_so_prometheus_count_the_poll_as_a_request_error(server):
    from syncworkers.observability import events

    class Polls:
        outcomes = []

        def on_poll(self, worker, outcome, seconds):
            self.outcomes.append(outcome)

    server.route("GET", "/feed", body=b'{"items": [', headers=JSON)
    worker = Recorder(server.url("/feed"), interval=60)
    observer = Polls()
    events.subscribe(observer)
    try:
        worker.poll()
    finally:
        events.unsubscribe(observer)
    assert observer.outcomes == ["request_error"]  # syncworkers_polls_total{outcome="request_error"}


def test_a_non_2xx_answer_that_cannot_be_decoded_is_still_counted(server):
    server.route("GET", "/feed", status=404, body=b'{"error": ', headers=JSON)
    worker = Recorder(server.url("/feed"), interval=60, http_config=HTTPClientConfig(max_retries=0))
    outcome = worker.poll()
    assert outcome.status_code == 404 and worker.messages[0].body == '{"error": '
    assert not outcome.ok and isinstance(outcome.error, BodyDecodeError)
    assert worker.health()["metrics"]["decode_errors"] == 1


def test_a_declared_charset_is_honoured_so_a_latin1_json_body_is_clean(server):
    server.route("GET", "/feed", body='{"name": "caf\u00e9"}'.encode("latin-1"),
                 headers={"Content-Type": "application/json; charset=ISO-8859-1"})
    worker = Recorder(server.url("/feed"), interval=60)
    outcome = worker.poll()
    assert outcome.ok and worker.messages[0].body == {"name": "caf\u00e9"}
    assert "decode_error" not in worker.messages[0].headers
    assert worker.health()["metrics"]["decode_errors"] == 0 and worker.health()["healthy"]


def test_a_binary_type_is_not_a_decode_error(server):
    server.route("GET", "/blob", body=b"\x89PNG\xff\x00", headers={"Content-Type": "application/octet-stream"})
    worker = Recorder(server.url("/blob"), interval=60)
    assert worker.poll().ok and worker.health()["metrics"]["decode_errors"] == 0


# -- data_extractor, paginator, cursor -----------------------------------------------------


@pytest.mark.parametrize("body", [DEEP, b'{"items": [1, '], ids=["too deep", "invalid JSON"])
def test_the_extractor_is_not_given_a_body_that_failed_the_text_reaches_process_message_whole(server, body):
    server.route("GET", "/feed", body=body, headers=JSON)
    extracted = []
    worker = Recorder(server.url("/feed"), interval=60,
                      data_extractor=lambda b: extracted.append(b) or b["items"])
    outcome = worker.poll()
    assert extracted == []
    assert [m.body for m in worker.messages] == [body.decode()]
    metrics = worker.health()["metrics"]
    assert (metrics["decode_errors"], metrics["extractor_errors"]) == (1, 0)
    assert isinstance(outcome.error, BodyDecodeError)


def test_a_page_that_cannot_be_decoded_ends_the_walk(server):
    next_link = {"Link": f'<{server.url("/feed2")}>; rel="next"'}
    server.route("GET", "/feed", body=b"[1, 2", headers={**JSON, **next_link})
    server.route("GET", "/feed2", json=[3])
    worker = Recorder(server.url("/feed"), interval=60, paginator=LinkHeaderPaginator())
    outcome = worker.poll()
    assert not outcome.ok and [m.body for m in worker.messages] == ["[1, 2"]
    assert server.calls("/feed2") == []  # what follows a page not understood is not trusted


def test_the_cursor_does_not_advance_past_a_page_that_cannot_be_decoded(server):
    events = [{"id": i, "updated_at": f"2024-05-0{i}T10:00:00Z"} for i in range(1, 5)]
    broken = [True]

    def api(req):
        q = {k: v[-1] for k, v in parse_qs(req.query).items()}
        offset = int(q.get("offset", 0))
        if offset and broken[0]:
            return Reply(200, b'[{"id": 3, "updated_at": ', JSON)
        rows = [e for e in events if e["updated_at"] >= q.get("updated_since", "")]
        return Reply(200, json.dumps(rows[offset:offset + 2]).encode(), JSON)

    server.route("GET", "/events", handler=api)
    # A tolerant extractor (a list, or nothing) must not turn a broken page into "no more items".
    worker = Recorder(server.url("/events"), interval=60, name="events", cursor=IncrementalCursor(),
                      paginator=OffsetPaginator(limit=2),
                      data_extractor=lambda body: body if isinstance(body, list) else [])
    outcome = worker.poll()
    assert not outcome.ok and isinstance(outcome.error, BodyDecodeError)
    assert worker.state.get("events") is None  # page 1's events are read again next tick
    broken[0] = False
    assert worker.poll().ok
    assert worker.state.get("events") == events[-1]["updated_at"]
    assert [parse_qs(r.query).get("updated_since") for r in server.calls("/events")][2] is None


# -- the webhook side: an answer is kept as bytes -----------------------------------------------


def test_an_undecodable_answer_is_kept_as_bytes_in_the_attempt_log(server, tmp_path):
    from click.testing import CliRunner

    from syncworkers.cli import cli
    from syncworkers.outbox.health import ANSWER_BYTES

    answer = b'{"caf\xe9": ' + DEEP
    server.route("POST", "/hook", replies=[Reply(503, answer, JSON), Reply(200, answer, JSON)])
    path = str(tmp_path / "outbox.db")
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=path, retry_schedule=(0.01,),
                                                                retry_delay=0.01))
    try:
        assert sender.send_webhook("/hook", {"n": 0}) is True  # a direct send: the 503 retried, then 200
        id = sender.enqueue("/hook", {"n": 1})
        assert sender.flush(timeout=20)
        log = sender.outbox.attempts(id)
    finally:
        sender.close()
    assert [a.status for a in log] == [200] and log[0].body == answer[:ANSWER_BYTES]
    shown = CliRunner().invoke(cli, ["outbox", "show", id, "--path", path, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["attempt_log"][0]["body"] == answer[:ANSWER_BYTES].decode("utf-8", "replace")


# -- hostile headers beside the body ----------------------------------------------------------


@pytest.mark.parametrize("retry_after, status, delivered", [
    ("9" * 5000, 429, False),  # longer than retry_after_max: the call ends at once with the answer
    ("Mon, 01 Jan 99999999 00:00:00 GMT", 200, True),  # no such date: ignored, the backoff retries
], ids=["digits", "year"])
def test_a_hostile_retry_after_escapes_neither_a_poll_nor_a_send(server, retry_after, status, delivered):
    server.route("GET", "/feed", status=[429, 200], body=b"[]", headers={**JSON, "Retry-After": retry_after})
    server.route("POST", "/hook", status=[503, 200], headers={"Retry-After": retry_after})
    worker = Recorder(server.url("/feed"), interval=60, http_config=HTTPClientConfig(retry_delay=0.01))
    assert worker.poll().ok and [m.headers["status_code"] for m in worker.messages] == [status]
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(retry_delay=0.01))
    try:
        assert sender.send_webhook("/hook", {"n": 1}) is delivered
    finally:
        sender.close()
