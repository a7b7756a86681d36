"""OutboxProducer, Claims and OutcomeRecorder built alone: a SQLite outbox in tmp_path, a real receiver
on 127.0.0.1, a pool and a stop signal of the test's own."""

import threading

import pytest

from syncworkers import ConfigError, HTTPClientConfig, WebhookConfig
from syncworkers.delivery.attempt import Sent
from syncworkers.delivery.checks import InputChecks
from syncworkers.delivery.claims import Claims
from syncworkers.delivery.endpoints import EndpointResolver
from syncworkers.delivery.pool import DeliveryPool, stop_pools
from syncworkers.delivery.producer import OutboxProducer
from syncworkers.delivery.recorder import OutcomeRecorder
from syncworkers.http.client import HTTPClient
from syncworkers.http.outcome import classify_status
from syncworkers.http.retry import RetryPolicy
from syncworkers.observability.logging import get_logger
from syncworkers.observability.metrics import Metrics
from syncworkers.outbox import DEAD, DELIVERED, PENDING, Outbox
from syncworkers.signals import Deadline, StopSignal
from syncworkers.signing import Signer, verify

from .helpers import Clock, LogCapture, new_secret, wait_for
from .server import Reply

LOGGER = get_logger("syncworkers.tests.producer")
FAST = (0.01, 0.01)


class Gate:
    """A handler that holds every request until released, counting arrivals."""

    def __init__(self):
        self.release = threading.Event()
        self.arrived = 0
        self.lock = threading.Lock()

    def __call__(self, req):
        with self.lock:
            self.arrived += 1
        self.release.wait(10)
        return Reply(200)


class Parts:
    def __init__(self, server, tmp_path, *, outbox=None, secret=None, schedule=FAST, max_workers=2, path=None):
        self.run = StopSignal()
        self.stats = Metrics()
        self.client = HTTPClient(HTTPClientConfig(follow_redirects=False, timeout=5), threads=max_workers)
        self.path = path or tmp_path / "outbox.db"
        config = WebhookConfig(outbox_path=None if outbox else str(self.path), retry_schedule=schedule,
                               max_workers=max_workers)
        checks = InputChecks(EndpointResolver(server.base_url, {}))
        self.pool = DeliveryPool("outbox", max_workers, "producer", LOGGER)
        self.producer = OutboxProducer(self.client, Signer(secret) if secret else None, checks, self.pool,
                                       lambda: self.run, config, outbox=outbox, logger=LOGGER, stats=self.stats)

    def start_loop(self):
        self.loop = threading.Thread(target=self.producer.run, args=(self.run,), name="syncworkers-test-loop")
        self.loop.start()
        assert wait_for(lambda: self.producer.looping)

    def close(self):
        self.run.set()
        if hasattr(self, "loop"):
            self.loop.join(10)
            assert not self.loop.is_alive()
        stop_pools([self.pool], Deadline(10))
        self.producer.close()
        self.client.close()


@pytest.fixture
def parts(server, tmp_path):
    made = []

    def make(**kwargs):
        made.append(Parts(server, tmp_path, **kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_the_store_opens_on_first_use_and_flush_delivers_signed_from_the_calling_thread(server, parts):
    secret = new_secret()
    server.route("POST", "/hook", status=200)
    producer = parts(secret=secret)
    assert producer.producer.in_use and producer.producer.health() is None
    assert not producer.path.exists()  # configured, not opened yet
    ids = [producer.producer.enqueue("/hook", {"n": n}) for n in range(3)]
    assert producer.path.exists() and server.requests == []  # stored, nothing sent yet
    assert producer.producer.flush(10) is True
    assert sorted(r.header("webhook-id") for r in server.requests) == sorted(ids)
    assert all(verify(r.body, r.headers, secret) for r in server.requests)
    health = producer.producer.health()
    assert health["counts"]["delivered"] == 3 and health["oldest_pending_seconds"] == 0.0
    assert producer.stats["outbox_delivered"] == 3
    assert producer.pool.health()["started"]  # the deliveries ran on the producer's own pool


@pytest.mark.parametrize("endpoint, data, headers, error", [
    ("orders", {}, None, ConfigError),
    ("/hook", {"when": object()}, None, TypeError),
    ("/hook", {}, {"X-Count": 3}, TypeError),
])
def test_enqueue_refuses_what_a_direct_send_refuses_before_storing(server, parts, endpoint, data, headers, error):
    producer = parts()
    with pytest.raises(error):
        producer.producer.enqueue(endpoint, data, headers)
    assert producer.producer.outbox.counts()["pending"] == 0


def test_the_loop_delivers_what_is_enqueued_and_ends_with_its_stop_signal(server, parts):
    server.route("POST", "/hook", status=200)
    producer = parts()
    producer.start_loop()
    id = producer.producer.enqueue("/hook", {"a": 1})
    assert wait_for(lambda: producer.producer.outbox.counts()["delivered"] == 1)
    assert [r.header("webhook-id") for r in server.requests] == [id]
    producer.run.set()
    producer.loop.join(10)
    assert not producer.loop.is_alive() and not producer.producer.looping


def test_stop_hands_the_claims_in_flight_back_and_a_late_success_is_still_recorded(server, parts):
    gate = Gate()
    server.route("POST", "/hook", handler=gate)
    producer = parts(max_workers=2)
    for n in range(3):
        producer.producer.enqueue("/hook", {"n": n})
    producer.start_loop()
    try:
        assert wait_for(lambda: gate.arrived == 2)  # as many on the wire as the pool has threads
        producer.run.set()
        if producer.producer.client.can_submit:  # over libcurl the attempts hold no pool thread
            assert producer.producer.settle(0.1) is False and producer.producer.in_flight == 2
        else:
            assert len(stop_pools([producer.pool], Deadline(0.1))) == 2  # still on the wire
        with LogCapture() as logs:
            producer.producer.hand_back()
        counts = producer.producer.outbox.counts()
        assert (counts["pending"], counts["in_flight"]) == (3, 0)
        assert "stop(): 2 outbox deliveries in flight handed back" in logs.text
        assert "stopped with 3 deliveries left pending in the outbox" in logs.text
        gate.release.set()
        assert wait_for(lambda: producer.producer.outbox.counts()["delivered"] == 2)
    finally:
        gate.release.set()
        stop_pools([producer.pool], Deadline(5))  # (the threads that recorded the late outcomes)


def test_flush_once_says_why_a_cycle_failed(server, parts):
    server.route("POST", "/ok", status=200)
    server.route("POST", "/gone", status=410)
    server.route("POST", "/down", status=500)
    producer = parts(schedule=(3600.0,))
    producer.producer.enqueue("/ok", {})
    assert producer.producer.flush_once(5) is None
    producer.producer.enqueue("/gone", {})
    assert producer.producer.flush_once(5) == "outbox deliveries died"
    producer.producer.enqueue("/down", {})
    assert producer.producer.flush_once(0.5) == "outbox deliveries still pending"


def test_a_store_it_was_given_stays_open_and_one_it_opened_reopens_after_close(server, parts, tmp_path):
    server.route("POST", "/hook", status=200)
    given = Outbox(str(tmp_path / "given.db"))
    try:
        producer = parts(outbox=given)
        producer.producer.enqueue("/hook", {})
        producer.producer.close()
        assert given.counts()["pending"] == 1  # still open: the caller's to close
    finally:
        given.close()
    own = parts()
    id = own.producer.enqueue("/hook", {})
    own.producer.close()
    assert own.producer.flush(5) is True  # opened again: nothing lost
    assert own.producer.outbox.get(id).state == DELIVERED


def test_an_unopenable_outbox_fails_flush_with_a_logged_cause(server, parts, tmp_path):
    producer = parts(path=tmp_path / "missing" / "outbox.db")
    with LogCapture() as logs:
        assert producer.producer.flush(1) is False
    assert "flush: the outbox cannot be opened" in logs.text
    with pytest.raises(ConfigError, match="does not exist"):
        producer.producer.open()


# -- Claims and OutcomeRecorder -------------------------------------------------------------


def test_claims_renew_their_leases_every_third_of_a_lease_and_hand_them_back(tmp_path):
    store_clock, clock = Clock(), Clock(0.0)
    outbox = Outbox(str(tmp_path / "o.db"), clock=store_clock, lease_seconds=9)
    try:
        id = outbox.add("/hook", "http://127.0.0.1:1/hook", b"{}")
        (delivery,) = outbox.claim_due(1)
        claims = Claims(outbox, LOGGER, clock=clock)
        assert claims.take(delivery) and not claims.take(delivery)  # never held twice
        leased = outbox.get(id).lease_until
        store_clock.now += 2
        assert claims.keep_alive() == 3.0 and outbox.get(id).lease_until == leased  # not due yet
        clock.now = 3.0
        assert claims.keep_alive() == 3.0
        assert outbox.get(id).lease_until == store_clock.now + 9  # renewed
        assert claims.hand_back() == 1
        assert (outbox.get(id).state, outbox.get(id).attempts) == (PENDING, 0)
    finally:
        outbox.close()


def test_the_recorder_records_the_verdict_then_reports_it(tmp_path):
    clock = Clock()
    outbox = Outbox(str(tmp_path / "o.db"), clock=clock)
    stats = Metrics()
    recorder = OutcomeRecorder(outbox, RetryPolicy.from_schedule((60.0,)), logger=LOGGER, stats=stats)
    try:
        ids = [outbox.add(path, f"http://127.0.0.1:1{path}", b"{}") for path in ("/ok", "/retry", "/gone")]
        claimed = {d.id: d for d in outbox.claim_due(3)}
        with LogCapture() as logs:
            assert recorder.record(claimed[ids[0]], Sent(classify_status(200, "OK")), clock.now)
            assert recorder.record(claimed[ids[1]], Sent(classify_status(500, "boom")), clock.now)
            assert recorder.record(claimed[ids[2]], Sent(classify_status(410, "Gone")), clock.now)
        assert [outbox.get(id).state for id in ids] == [DELIVERED, PENDING, DEAD]
        assert outbox.get(ids[1]).next_attempt_at == clock.now + 60
        assert (stats["outbox_delivered"], stats["outbox_retried"], stats["outbox_dead"]) == (1, 1, 1)
        lines = [line for line in logs.text.splitlines() if "syncworkers.tests.producer" in line]
        assert f"webhook {ids[0]} to " in lines[0] and "delivered: status 200 on attempt 1 of" in lines[0]
        assert f"webhook {ids[1]} to " in lines[1] and "failed: status 500 boom; retry in 60s (attempt 2 of" in lines[1]
        assert f"webhook {ids[2]} to " in lines[2] and "failed: status 410 Gone; dead after 1 attempt (gone" in lines[2]
    finally:
        outbox.close()
    with LogCapture() as logs:  # a closed store takes nothing: False, and said plainly after a stop
        assert recorder.record(claimed[ids[1]], Sent(classify_status(200, "OK")), clock.now, abandoned=True) is False
    assert "not recorded after stop()" in logs.text and "Traceback" not in logs.text
