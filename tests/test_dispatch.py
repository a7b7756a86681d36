"""The outbox delivery engine: enqueue, the schedule and its outcomes, flush, stop, against loopback servers.

:func:`decide` is tested as the pure function it is; everything else through
``WebhookSenderWorker`` and a real receiver on 127.0.0.1. Where a test needs
requests in flight, the receiver's handler holds them on an Event the test
releases; no elapsed time is asserted.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time

import pytest

from syncworkers import (
    CircuitBreakerConfig,
    ConfigError,
    HTTPClientConfig,
    RetryConfig,
    WebhookConfig,
)
from syncworkers.delivery.dispatch import Dispatcher, decide
from syncworkers.exceptions import CircuitOpenError, RequestTimeout, ResponseTooLarge, TransportError
from syncworkers.http.outcome import classify_error, classify_status
from syncworkers.http.retry import RetryPolicy
from syncworkers.outbox import DEAD, DEFAULT_LEASE_SECONDS, DELIVERED, IN_FLIGHT, PENDING, Delivery, Outbox
from syncworkers.scheduling.runner import Runner
from syncworkers.signing import verify
from syncworkers.workers.webhook import WebhookSenderWorker

from .helpers import LogCapture, closed_port, new_secret, wait_for
from .server import Reply

T0 = 1_700_000_000.0
SCHEDULE = (5.0, 300.0)
FAST = (0.01, 0.01)


def delivery(attempts=0, created_at=T0):
    return Delivery(id="msg_1", endpoint="/hook", url="http://127.0.0.1:1/hook", body=b"{}", headers={},
                    state=IN_FLIGHT, attempts=attempts, next_attempt_at=created_at, created_at=created_at,
                    updated_at=created_at, last_status=None, last_error=None, owner="me", lease_until=None,
                    delivered_at=None)


def sender(server, tmp_path, schedule=FAST, http=None, **config):
    config.setdefault("outbox_path", str(tmp_path / "outbox.db"))
    return WebhookSenderWorker(server.base_url, WebhookConfig(retry_schedule=schedule, **config), http)


class Gate:
    """A route handler that holds every request until released (or 10 s) and counts arrivals."""

    def __init__(self, status=200):
        self.status = status
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.arrived = 0

    def __call__(self, req):
        with self.lock:
            self.arrived += 1
        self.release.wait(10)
        return Reply(self.status)


# -- decide(): the schedule and its outcomes -------------------------------------------


POLICY = RetryPolicy.from_schedule(SCHEDULE, retry_after_max=60.0)


def status(code, reason="", retry_after=None):
    return classify_status(code, reason, retry_after=retry_after)


@pytest.mark.parametrize("code", [200, 201, 204, 299])
def test_2xx_is_delivered(code):
    assert decide(delivery(), status(code), T0, POLICY).state == DELIVERED


def test_an_oversized_2xx_answer_is_delivered():
    outcome = classify_error(ResponseTooLarge("response body exceeds 10 bytes", status=200))
    assert decide(delivery(), outcome, T0, POLICY).state == DELIVERED


@pytest.mark.parametrize("code, kind", [(410, "gone"), (400, "refused"), (401, "refused"),
                                        (404, "refused"), (422, "refused")])
def test_gone_and_final_4xx_are_dead_at_once(code, kind):
    verdict = decide(delivery(), status(code, "X"), T0, POLICY)
    assert (verdict.state, verdict.reason) == (DEAD, f"{kind}: status {code} X")


@pytest.mark.parametrize("outcome", [
    status(500), status(503), status(408), status(425), status(429), status(302), status(501),
    classify_error(RequestTimeout("read timeout")), classify_error(TransportError("connection failed")),
    classify_error(ResponseTooLarge("response body exceeds 10 bytes", status=500)),
])
def test_other_failures_spend_attempts_along_the_schedule_then_die(outcome):
    first = decide(delivery(attempts=0), outcome, T0, POLICY)
    assert (first.state, first.next_attempt_at, first.spend, first.reason) == (PENDING, T0 + 5, True, outcome.error)
    assert decide(delivery(attempts=1), outcome, T0, POLICY).next_attempt_at == T0 + 300
    last = decide(delivery(attempts=2), outcome, T0, POLICY)
    assert (last.state, last.reason) == (DEAD, f"exhausted after 3 attempts: {outcome.error}")


def test_a_redirect_says_it_was_not_followed():
    assert status(302).error == "status 302: redirects are not followed"


def test_an_invalid_stored_request_is_dead_at_once():
    verdict = decide(delivery(), classify_error(ConfigError("bad URL")), T0, POLICY)
    assert (verdict.state, verdict.reason) == (DEAD, "final: invalid request: bad URL")


def test_retry_after_postpones_without_spending_capped_and_at_least_the_first_delay():
    for code, retry_after, expected in ((429, 30.0, 30.0), (503, 30.0, 30.0), (429, 7200.0, 60.0),
                                        (429, 0.0, 5.0)):
        verdict = decide(delivery(attempts=1), status(code, retry_after=retry_after), T0, POLICY)
        assert (verdict.state, verdict.next_attempt_at, verdict.spend) == (PENDING, T0 + expected, False)
    # Retry-After on another status is not a postponement.
    verdict = decide(delivery(attempts=1), status(500, retry_after=30.0), T0, POLICY)
    assert (verdict.next_attempt_at, verdict.spend) == (T0 + 300, True)


def test_an_open_circuit_postpones_without_spending():
    circuit = classify_error(CircuitOpenError("circuit open", remaining=42.0))
    verdict = decide(delivery(attempts=2), circuit, T0, POLICY)
    assert (verdict.state, verdict.next_attempt_at, verdict.spend) == (PENDING, T0 + 42, False)
    probe = classify_error(CircuitOpenError("circuit open", remaining=0.0))
    assert decide(delivery(), probe, T0, POLICY).next_attempt_at == T0 + 5  # never a busy loop


def test_postponing_ends_after_the_schedule_span_so_nothing_waits_forever():
    policy = RetryPolicy.from_schedule(SCHEDULE, postpone_slack=100.0)
    span = sum(SCHEDULE) + 100.0  # slack
    busy = status(429, "busy", retry_after=30.0)
    young = decide(delivery(attempts=1), busy, T0 + span - 1, policy)
    assert young.spend is False
    old = decide(delivery(attempts=1), busy, T0 + span, policy)
    assert (old.spend, old.next_attempt_at) == (True, T0 + span + 300)  # the schedule's delay, >= Retry-After
    assert decide(delivery(attempts=2), busy, T0 + span, policy).state == DEAD
    circuit = classify_error(CircuitOpenError("circuit open", remaining=600.0))
    old = decide(delivery(attempts=0), circuit, T0 + span, policy)
    assert (old.spend, old.next_attempt_at) == (True, T0 + span + 600)  # the circuit's wait, > the delay


# -- enqueue --------------------------------------------------------------------------------


def test_enqueue_stores_the_delivery_and_returns_before_any_network_work(server, tmp_path):
    server.route("POST", "/hook", status=200)
    worker = sender(server, tmp_path)
    try:
        id = worker.enqueue("/hook", {"order": 1, "name": "café"}, headers={"X-Source": "shop"})
        assert server.requests == []
        stored = worker.outbox.get(id)
        assert (stored.state, stored.attempts, stored.endpoint) == (PENDING, 0, "/hook")
        assert stored.url == server.url("/hook")
        assert json.loads(stored.body) == {"order": 1, "name": "café"}
        assert stored.headers == {"X-Source": "shop"}
        with Outbox(str(tmp_path / "outbox.db")) as other:  # durable: another connection sees it
            assert other.get(id).body == stored.body
        assert worker.enqueue("/hook", {"order": 1}, delivery_id="evt_7") == "evt_7"
        assert worker.enqueue("/hook", {"order": 2}, delivery_id="evt_7") == "evt_7"  # stored once
        assert json.loads(worker.outbox.get("evt_7").body) == {"order": 1}
    finally:
        worker.close()


@pytest.mark.parametrize("endpoint, data, headers, error", [
    ("orders", {}, None, ConfigError),
    ("ftp://files.example/x", {}, None, ConfigError),
    ("/hook", {"when": object()}, None, TypeError),
    ("/hook", {"amount": float("nan")}, None, ValueError),
    ("/hook", {}, {"X-Count": 3}, TypeError),
])
def test_bad_input_is_refused_before_anything_is_stored(server, tmp_path, endpoint, data, headers, error):
    worker = sender(server, tmp_path)
    try:
        with pytest.raises(error):
            worker.enqueue(endpoint, data, headers)
        assert worker.outbox.counts()["pending"] == 0
    finally:
        worker.close()


def test_a_sender_opens_its_outbox_only_when_used(server, tmp_path):
    server.route("POST", "/hook", status=200)
    path = tmp_path / "outbox.db"
    with WebhookSenderWorker(server.base_url) as plain:
        assert plain.send_webhook("/hook", {})
        assert plain.jobs() == [] and not plain.outbox_producer.in_use
    worker = sender(server, tmp_path)
    try:
        assert worker.send_webhook("/hook", {})
        assert not path.exists()
        worker.enqueue("/hook", {})
        assert path.exists() and worker.outbox.durable
    finally:
        worker.close()
    path.unlink()
    worker = sender(server, tmp_path)
    try:
        assert [job.name for job in worker.jobs()] == ["WebhookSenderWorker-outbox"]  # as start() asks
        assert path.exists()  # opened at start, to resume what it holds
    finally:
        worker.close()
    with WebhookSenderWorker(server.base_url) as memory:
        assert memory.outbox.durable is False and memory.outbox.path is None


# -- flush and the schedule against a real receiver ---------------------------------------------


def test_flush_delivers_from_the_calling_thread_when_the_worker_is_not_running(server, tmp_path):
    server.route("POST", "/hook", status=200)
    secret = new_secret()
    worker = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=str(tmp_path / "o.db")),
                                 signing_secret=secret)
    try:
        ids = [worker.enqueue("/hook", {"n": n}, headers={"X-N": str(n)}) for n in range(40)]
        assert worker.flush(timeout=10) is True
        assert worker.outbox.counts() == {"pending": 0, "in_flight": 0, "delivered": 40, "dead": 0, "held": 0}
    finally:
        worker.close()
    received = {r.header("webhook-id"): r for r in server.requests}
    assert sorted(received) == sorted(ids) and len(server.requests) == 40
    for n, id in enumerate(ids):
        req = received[id]
        assert req.json() == {"n": n} and req.header("X-N") == str(n)
        assert req.header("Content-Type") == "application/json"
        assert verify(req.body, req.headers, secret)


def test_each_attempt_has_the_same_id_and_a_fresh_signed_timestamp(server, tmp_path):
    """A retry hours later still passes the receiver's 5-minute tolerance."""
    secret = new_secret()
    offset = [0.0]

    def clock():
        return time.time() + offset[0]

    checked = []

    def receiver(req):
        checked.append((req.header("webhook-id"), int(req.header("webhook-timestamp")),
                        verify(req.body, req.headers, secret, now=clock())))
        offset[0] += 3 * 3600  # the next attempt comes three hours later
        return Reply(503 if len(checked) < 3 else 200)

    server.route("POST", "/hook", handler=receiver)
    outbox = Outbox(str(tmp_path / "o.db"), clock=clock)
    worker = WebhookSenderWorker(server.base_url, WebhookConfig(retry_schedule=FAST), signing_secret=secret,
                                 outbox=outbox)
    try:
        id = worker.enqueue("/hook", {"a": 1})
        assert worker.flush(10)
        assert outbox.get(id).attempts == 3
    finally:
        worker.close()
        outbox.close()
    assert [c[0] for c in checked] == [id] * 3
    assert all(ok for _, _, ok in checked)
    stamps = [c[1] for c in checked]
    assert stamps[1] - stamps[0] >= 3 * 3600 and stamps[2] - stamps[1] >= 3 * 3600


def test_outcomes_of_a_real_receiver(server, tmp_path):
    server.route("POST", "/gone", status=410)
    server.route("POST", "/bad", status=400)
    server.route("POST", "/moved", status=302, headers={"Location": "/elsewhere"})
    server.route("POST", "/flaky", status=[500, 408, 200])
    down = f"http://127.0.0.1:{closed_port()}/hook"
    worker = sender(server, tmp_path, schedule=FAST)
    try:
        ids = {name: worker.enqueue(name, {"to": name}) for name in ("/gone", "/bad", "/moved", "/flaky")}
        ids["down"] = worker.enqueue(down, {})
        with LogCapture() as logs:
            assert worker.flush(20)
        got = {name: worker.outbox.get(id) for name, id in ids.items()}
    finally:
        worker.close()
    calls = {path: len(server.calls(path)) for path in ("/gone", "/bad", "/moved", "/flaky")}
    assert calls == {"/gone": 1, "/bad": 1, "/moved": 3, "/flaky": 3}
    assert (got["/flaky"].state, got["/flaky"].attempts, got["/flaky"].last_status) == (DELIVERED, 3, 200)
    assert (got["/gone"].state, got["/gone"].attempts, got["/gone"].last_error) == (DEAD, 1, "gone: status 410 Gone")
    assert (got["/bad"].state, got["/bad"].last_error) == (DEAD, "refused: status 400 Bad Request")
    assert got["/moved"].state == DEAD and got["/moved"].last_status == 302
    assert got["/moved"].last_error == "exhausted after 3 attempts: status 302 Found: redirects are not followed"
    assert got["down"].state == DEAD and got["down"].attempts == 3
    assert got["down"].last_error.startswith("exhausted after 3 attempts: connection failed")
    dead_lines = [line for line in logs.text.splitlines() if "; dead after " in line]
    assert len(dead_lines) == 4 and all(line.startswith("ERROR") or " ERROR " in line for line in dead_lines)
    assert any(f"webhook {ids['/gone']} to " in line and "failed: status 410 Gone; dead after 1 attempt (gone: "
               in line for line in dead_lines)


def test_retry_after_postpones_without_spending_an_attempt(server, tmp_path):
    server.route("POST", "/busy", replies=[Reply(429, headers={"Retry-After": "0"}),
                                           Reply(503, headers={"Retry-After": "1"}), Reply(200)])
    server.route("POST", "/no-hint", status=[429, 200])
    http = HTTPClientConfig(retry_config=RetryConfig(retry_after_max=0.05))
    worker = sender(server, tmp_path, schedule=(), http=http)  # a single attempt allowed
    try:
        busy = worker.enqueue("/busy", {})
        no_hint = worker.enqueue("/no-hint", {})
        assert worker.flush(10)
        assert (worker.outbox.get(busy).state, worker.outbox.get(busy).attempts) == (DELIVERED, 1)
        assert worker.outbox.get(no_hint).state == DEAD  # a 429 without Retry-After spent the only attempt
    finally:
        worker.close()
    assert len(server.calls("/busy")) == 3 and len(server.calls("/no-hint")) == 1


def test_an_open_circuit_postpones_without_spending_an_attempt(server, tmp_path):
    server.route("POST", "/a", status=[500, 200])
    server.route("POST", "/b", status=200)
    http = HTTPClientConfig(circuit_breaker_config=CircuitBreakerConfig(failure_threshold=1, timeout_seconds=0.2))
    worker = sender(server, tmp_path, http=http, max_workers=1)  # one at a time: a is first, b second
    try:
        a = worker.enqueue("/a", {})
        b = worker.enqueue("/b", {})
        assert worker.flush(10)
        assert (worker.outbox.get(a).state, worker.outbox.get(a).attempts) == (DELIVERED, 2)
        assert (worker.outbox.get(b).state, worker.outbox.get(b).attempts) == (DELIVERED, 1)
        assert worker.health()["metrics"]["outbox_postponed"] >= 1
    finally:
        worker.close()
    assert [r.path for r in server.requests].count("/b") == 1  # the refusals never reached the host


def test_flush_returns_false_at_its_timeout_while_a_retry_is_scheduled(server, tmp_path):
    server.route("POST", "/hook", status=500)
    worker = sender(server, tmp_path, schedule=(3600.0,))
    try:
        id = worker.enqueue("/hook", {})
        assert worker.flush(timeout=0.5) is False
        stored = worker.outbox.get(id)
        assert (stored.state, stored.attempts, stored.last_status) == (PENDING, 1, 500)
        assert stored.next_attempt_at >= stored.updated_at + 3599
    finally:
        worker.close()


def test_secrets_stay_out_of_stored_errors_and_logs(server, tmp_path):
    server.route("POST", "/hook", status=500)
    secret, token = new_secret(), "tok-" + base64.b64encode(os.urandom(12)).decode()
    http = HTTPClientConfig(auth_type="bearer", bearer_token=token)
    worker = WebhookSenderWorker(server.base_url, WebhookConfig(retry_schedule=FAST, outbox_path=str(tmp_path / "o")),
                                 http, signing_secret=secret)
    try:
        with LogCapture() as logs:
            id = worker.enqueue(server.url("/hook?sig=query-secret"), {}, headers={"X-Api-Key": "key-secret"})
            assert worker.flush(10)
        stored = worker.outbox.get(id)
        text = json.dumps(stored.to_dict()) + repr(stored) + repr(worker.health()) + logs.text
    finally:
        worker.close()
    assert server.requests[0].header("X-Api-Key") == "key-secret"  # it was sent, though
    assert server.requests[0].header("Authorization") == f"Bearer {token}"
    assert stored.state == DEAD and "status 500" in stored.last_error
    for value in (secret, secret[len("whsec_"):], token, "key-secret", "query-secret"):
        assert value not in text


# -- the running worker ---------------------------------------------------------------------


def test_a_bad_outbox_path_fails_start(server, tmp_path):
    worker = sender(server, tmp_path, outbox_path=str(tmp_path / "missing" / "outbox.db"))
    with pytest.raises(ConfigError, match="does not exist"):
        worker.start()
    assert not worker.running
    worker.close()


def test_a_started_worker_resumes_pending_deliveries_from_its_file(server, tmp_path):
    server.route("POST", "/hook", status=200)
    first = sender(server, tmp_path)
    ids = [first.enqueue("/hook", {"n": n}) for n in range(5)]
    first.close()
    assert server.requests == []
    second = sender(server, tmp_path)  # enqueues nothing itself
    second.start()
    try:
        assert wait_for(lambda: len(server.requests) == 5)
        assert wait_for(lambda: second.outbox.counts()["delivered"] == 5)
    finally:
        assert second.stop(timeout=5)
        second.close()
    assert sorted(r.header("webhook-id") for r in server.requests) == sorted(ids)


def test_enqueue_wakes_the_running_loop(server, tmp_path, monkeypatch):
    monkeypatch.setattr(Dispatcher, "poll_interval", 60.0)  # without the wakeup, nothing for a minute
    server.route("POST", "/hook", status=200)
    worker = sender(server, tmp_path)
    worker.start()
    try:
        assert wait_for(lambda: worker.outbox_producer.looping)
        id = worker.enqueue("/hook", {})
        assert wait_for(lambda: len(server.requests) == 1, timeout=10)
        assert server.requests[0].header("webhook-id") == id
    finally:
        assert worker.stop(timeout=5)
        worker.close()


def test_enqueue_after_start_without_an_outbox_path_still_delivers(server, monkeypatch):
    monkeypatch.setattr(Dispatcher, "poll_interval", 60.0)
    server.route("POST", "/hook", status=200)
    worker = WebhookSenderWorker(server.base_url)
    worker.start()  # no job to run yet
    try:
        id = worker.enqueue("/hook", {})
        assert worker.outbox.durable is False
        assert wait_for(lambda: worker.outbox.counts()["delivered"] == 1, timeout=10)
        assert worker.flush(5)
    finally:
        assert worker.stop(timeout=5)
        worker.close()
    assert [r.header("webhook-id") for r in server.requests] == [id]


def test_stop_of_an_idle_worker_returns_promptly(server, tmp_path, monkeypatch):
    monkeypatch.setattr(Dispatcher, "poll_interval", 3600.0)  # the loop sleeps an hour: only stop() can cut it short
    worker = sender(server, tmp_path)
    worker.start()
    assert wait_for(lambda: worker.outbox_producer.looping)
    assert worker.stop(timeout=30)
    worker.close()


def test_stop_drains_deliveries_in_flight_and_leaves_the_rest_pending(server, tmp_path):
    gate = Gate()
    server.route("POST", "/hook", handler=gate)
    worker = sender(server, tmp_path, max_workers=2)
    ids = [worker.enqueue("/hook", {"n": n}) for n in range(6)]
    worker.start()
    result = []
    stopper = threading.Thread(target=lambda: result.append(worker.stop(timeout=10)), name="test-stopper")
    try:
        assert wait_for(lambda: gate.arrived == 2)
        stopper.start()
        assert wait_for(worker.stop_event.is_set)
        gate.release.set()  # the two in flight answer only now that stop() has begun
        stopper.join(10)
        assert result == [True]
        counts = worker.outbox.counts()
        assert counts == {"pending": 4, "in_flight": 0, "delivered": 2, "dead": 0, "held": 0}
        assert len(server.requests) == 2
        delivered = {d.id for d in worker.outbox.list(state=DELIVERED)}
        assert delivered == {r.header("webhook-id") for r in server.requests} and delivered <= set(ids)
    finally:
        gate.release.set()
        worker.close()


def test_a_shared_runner_drains_the_outbox_loop_when_it_stops(server, tmp_path):
    gate = Gate()
    server.route("POST", "/hook", handler=gate)
    worker = sender(server, tmp_path, max_workers=2)
    for n in range(4):
        worker.enqueue("/hook", {"n": n})
    runner = Runner([worker], name="shared").start()
    result = []
    stopper = threading.Thread(target=lambda: result.append(runner.stop(timeout=10)), name="test-stopper")
    try:
        assert wait_for(lambda: gate.arrived == 2)
        stopper.start()
        assert wait_for(runner.stop_event.is_set)
        gate.release.set()
        stopper.join(10)
        assert result == [True]
        assert worker.outbox.counts() == {"pending": 2, "in_flight": 0, "delivered": 2, "dead": 0, "held": 0}
    finally:
        gate.release.set()
        worker.close()


def test_stop_at_its_timeout_hands_unfinished_claims_back(server, tmp_path):
    gate = Gate()
    server.route("POST", "/hook", handler=gate)
    worker = sender(server, tmp_path, max_workers=2)
    for n in range(6):
        worker.enqueue("/hook", {"n": n})
    worker.start()
    try:
        assert wait_for(lambda: gate.arrived == 2)
        with LogCapture() as logs:
            assert worker.stop(timeout=0.3) is False
        counts = worker.outbox.counts()
        assert (counts["pending"], counts["in_flight"], counts["delivered"]) == (6, 0, 0)
        assert "handed back" in logs.text
        gate.release.set()  # the requests on the wire still end: a success is recorded all the same
        assert wait_for(lambda: worker.outbox.counts()["delivered"] == 2)
    finally:
        gate.release.set()
        worker.close()
    assert len(server.requests) == 2


def test_a_busy_outbox_never_holds_up_a_broadcast(server, tmp_path):
    gate = Gate()
    server.route("POST", "/slow", handler=gate)
    server.route("POST", "/alert", status=200)
    worker = sender(server, tmp_path, max_workers=2)
    for n in range(4):
        worker.enqueue("/slow", {"n": n})
    worker.start()
    result = []
    broadcaster = threading.Thread(target=lambda: result.append(worker.broadcast_webhook(["/alert"], {})),
                                   name="test-broadcaster")
    try:
        assert wait_for(lambda: gate.arrived == 2)  # the outbox holds as many requests as max_workers
        broadcaster.start()
        broadcaster.join(5)
        assert result == [{"/alert": True}]  # sent while the outbox's requests are still on the wire
        assert gate.arrived == 2
    finally:
        gate.release.set()
        broadcaster.join(10)
        worker.close()


def test_close_right_after_a_stop_timeout_warns_plainly_when_a_late_outcome_cannot_be_recorded(server, tmp_path):
    gate = Gate()
    server.route("POST", "/hook", handler=gate)
    worker = sender(server, tmp_path, max_workers=1)
    worker.enqueue("/hook", {})
    worker.start()
    try:
        assert wait_for(lambda: gate.arrived == 1)
        assert worker.stop(timeout=0.2) is False
        with LogCapture() as logs:
            worker.close()  # closes the outbox while the request is still on the wire
            gate.release.set()
            assert wait_for(lambda: "not recorded" in logs.text)
    finally:
        gate.release.set()
        worker.close()
    # An ordinary stop-then-close is no error: no traceback, and the log says what happens next.
    assert "ERROR" not in logs.text and "Traceback" not in logs.text
    assert "sent again" in logs.text
    with Outbox(str(tmp_path / "outbox.db")) as box:
        assert box.counts()["pending"] == 1  # handed back at stop(): the next run sends it again


def test_a_closed_worker_started_again_reopens_its_outbox_file(server, tmp_path):
    server.route("POST", "/hook", status=200)
    worker = sender(server, tmp_path)
    worker.start()
    worker.close()
    with LogCapture() as logs:
        worker.start()  # as PollerWorker allows: close() releases, a new run opens again
        try:
            worker.enqueue("/hook", {"n": 1})
            assert worker.flush(5)
        finally:
            worker.close()
    assert [r.json() for r in server.requests] == [{"n": 1}]
    assert "ERROR" not in logs.text and "closed" not in logs.text


def test_health_shows_the_outbox(server, tmp_path):
    server.route("POST", "/hook", status=200)
    worker = sender(server, tmp_path)
    try:
        assert "outbox" not in worker.health()
        worker.enqueue("/hook", {})
        assert worker.flush(5)
        outbox = worker.health()["outbox"]
        assert outbox["durable"] is True and outbox["path"] == str(tmp_path / "outbox.db")
        assert outbox["counts"]["delivered"] == 1 and outbox["in_flight_here"] == 0
    finally:
        worker.close()


def test_a_process_that_died_is_taken_over_within_15_seconds():
    assert DEFAULT_LEASE_SECONDS <= 10
    with WebhookSenderWorker("http://127.0.0.1:1") as worker:
        assert worker.outbox.lease_seconds <= 10


def test_a_claim_whose_lease_lapsed_is_not_sent_again_while_its_request_runs(tmp_path):
    now = [T0]
    outbox = Outbox(str(tmp_path / "o.db"), clock=lambda: now[0], lease_seconds=10)
    submitted = []

    def submit(func, *args):
        submitted.append(args[0].id)  # never run: the request is "still on the wire"
        from concurrent.futures import Future
        return Future()

    dispatcher = Dispatcher(outbox, send=None, submit=submit, free_slots=lambda: 10,
                            policy=RetryPolicy.from_schedule(FAST))
    id = outbox.add("e", "http://127.0.0.1:1/hook", b"{}")
    assert dispatcher.flush(0, threading.Event()) is False  # one round: claims and submits
    now[0] += 11  # its lease lapsed (this process was suspended, say)
    dispatcher.flush(0, threading.Event())  # claims it again ...
    assert submitted == [id]  # ... but does not send it a second time
    assert outbox.get(id).lease_until == now[0] + 10
    outbox.close()
