"""DirectSender and Broadcaster built alone (a client, a signer, checks, a pool, a stop signal) against
a real receiver on 127.0.0.1: what is sent, what the caller gets back, what is counted and logged."""

import threading

import pytest

from syncworkers import ConfigError, HTTPClientConfig, RetryConfig
from syncworkers.delivery.broadcast import CANCELLED, NOT_WAITED_FOR, Broadcaster
from syncworkers.delivery.checks import InputChecks
from syncworkers.delivery.direct import STOPPED, DirectSender
from syncworkers.delivery.endpoints import EndpointResolver
from syncworkers.delivery.pool import DeliveryPool, stop_pools
from syncworkers.http.client import HTTPClient
from syncworkers.observability.logging import get_logger
from syncworkers.observability.metrics import Metrics
from syncworkers.signals import Deadline, StopSignal
from syncworkers.signing import Signer, verify

from .helpers import LogCapture, new_secret, wait_for
from .server import Reply

LOGGER = get_logger("syncworkers.tests.parts")


class Parts:
    """A DirectSender and a Broadcaster over one client, as a worker wires them."""

    def __init__(self, server, *, retry_delay=0.01, secret=None, pool_size=3):
        self.run = StopSignal()
        self.stats = Metrics()
        self.client = HTTPClient(HTTPClientConfig(follow_redirects=False, timeout=5, retry_config=RetryConfig(
            max_attempts=3, initial_delay=retry_delay)), threads=pool_size)
        checks = InputChecks(EndpointResolver(server.base_url, {"orders": "/orders"}), max_payload_bytes=1000)
        signer = Signer(secret) if secret else None
        self.sender = DirectSender(self.client, signer, checks, lambda: self.run, logger=LOGGER, stats=self.stats)
        self.pool = DeliveryPool("webhook", pool_size, "parts", LOGGER)
        self.broadcaster = Broadcaster(self.sender, self.pool, lambda: self.run, logger=LOGGER, stats=self.stats)

    def close(self):
        self.run.set()
        assert stop_pools([self.pool], Deadline(10)) == set()
        self.client.close()


@pytest.fixture
def parts(server):
    made = []

    def make(**kwargs):
        made.append(Parts(server, **kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


# -- DirectSender -----------------------------------------------------------------------


def test_a_delivery_is_retried_with_the_same_signed_headers_then_counted_and_logged(server, parts):
    secret = new_secret()
    server.route("POST", "/orders", status=[503, 502, 200])
    sender = parts(secret=secret)
    with LogCapture() as logs:
        result = sender.sender.deliver("orders", {"order": 1}, {"X-Source": "shop"}, delivery_id="evt_1")
    assert (result.ok, result.attempts, result.status_code, result.delivery_id) == (True, 3, 200, "evt_1")
    sent = {(r.header("webhook-id"), r.header("webhook-timestamp"), r.header("webhook-signature"), r.body)
            for r in server.requests}
    assert len(server.requests) == 3 and len(sent) == 1  # built once: every attempt carries the same headers
    assert all(verify(r.body, r.headers, secret) and r.header("X-Source") == "shop" for r in server.requests)
    assert (sender.stats["delivered"], sender.stats["attempts"], sender.stats["retried"]) == (1, 3, 2)
    assert f"webhook evt_1 to {server.url('/orders')} delivered: status 200 after 3 attempts" in logs.text


def test_a_failure_is_a_result_and_an_error_line_never_an_exception(server, parts):
    server.route("POST", "/gone", status=410)
    sender = parts()
    with LogCapture() as logs:
        result = sender.sender.deliver("/gone", {})
    assert (result.ok, result.status_code, result.attempts) == (False, 410, 1)
    assert sender.stats["failed"] == 1
    line = next(line for line in logs.text.splitlines() if " not delivered: " in line)
    assert " ERROR " in line and "not delivered: status 410 Gone; given up after 1 attempt" in line


def test_bad_input_raises_before_anything_is_sent(server, parts):
    sender = parts()
    with pytest.raises(ConfigError, match="unknown webhook endpoint"):
        sender.sender.deliver("users", {})
    with pytest.raises(ValueError, match="over the cap of 1000"):
        sender.sender.deliver("/orders", {"big": "x" * 1000})
    assert server.requests == [] and sender.stats["attempts"] == 0


def test_nothing_is_sent_once_the_run_is_stopped(server, parts):
    server.route("POST", "/orders", status=200)
    sender = parts()
    sender.run.set()
    with LogCapture() as logs:
        result = sender.sender.deliver("/orders", {})
    assert (result.ok, result.error, result.attempts) == (False, STOPPED, 0)
    assert server.requests == []
    line = next(line for line in logs.text.splitlines() if " not delivered: " in line)
    assert " WARNING " in line and "nothing was sent" in line


def test_the_callers_cancel_and_the_runs_stop_each_end_a_retry_wait(server, parts):
    sender = parts(retry_delay=30)
    for set_by_receiver in ("cancel", "run"):  # the caller's cancel is given both times
        cancel = StopSignal()
        stop = cancel if set_by_receiver == "cancel" else sender.run
        server.route("POST", "/orders", handler=lambda req, stop=stop: (stop.set(), Reply(503))[1])
        result = sender.sender.deliver("/orders", {}, cancel=cancel)
        assert not result.ok and result.attempts == 1 and result.error.startswith("interrupted")
    assert len(server.requests) == 2  # neither waited out its 30 s before a second attempt
    assert sender.stats["interrupted"] == 2


# -- Broadcaster ---------------------------------------------------------------------------


def test_a_broadcast_sends_to_every_endpoint_at_once_on_its_own_pool(server, parts):
    together = threading.Barrier(3, timeout=5)  # broken (500) unless the three requests overlap
    threads = []

    def meet(req):
        threads.append(threading.current_thread().name)
        together.wait()
        return Reply(200)

    for path in ("/a", "/b", "/c"):
        server.route("POST", path, handler=meet)
    sender = parts()
    results = sender.broadcaster.broadcast(["/a", "/b", "/c", "/a"], {"alert": 1})
    assert {endpoint: r.ok for endpoint, r in results.items()} == {"/a": True, "/b": True, "/c": True}
    assert len({r.delivery_id for r in results.values()}) == 3  # each its own webhook id
    assert len(server.requests) == 3  # /a listed twice, sent once
    names = [t.name for t in threading.enumerate() if t.name.startswith("syncworkers-webhook-parts")]
    if sender.sender.client.can_submit:  # over libcurl the client's I/O thread sends them: no pool thread
        assert sender.pool.health()["started"] is False and names == []
    else:
        assert sender.pool.health()["started"] is True
        assert 1 <= len(names) <= 3
    assert stop_pools([sender.pool], Deadline(5)) == set()
    assert not [t for t in threading.enumerate() if t.name.startswith("syncworkers-webhook-parts")]
    assert sender.stats["broadcasts"] == 1


def test_fail_fast_cancels_the_queued_interrupts_retry_waits_and_names_every_endpoint(server, parts):
    hold = threading.Event()  # /slow answers only at the end of the test
    slow_seen, retry_seen = threading.Event(), threading.Event()

    def slow(req):
        slow_seen.set()
        hold.wait(10)
        return Reply(200)

    def retry(req):
        retry_seen.set()
        return Reply(503)

    def bad(req):  # fails once the other two are in flight, so what is queued is certain
        slow_seen.wait(5)
        retry_seen.wait(5)
        return Reply(400)

    server.route("POST", "/slow", handler=slow)
    server.route("POST", "/retry", handler=retry)
    server.route("POST", "/bad", handler=bad)
    sender = parts(retry_delay=30)
    endpoints = ["/slow", "/retry", "/bad", "/queued1", "/queued2"]
    try:
        with LogCapture() as logs:
            results = sender.broadcaster.broadcast(endpoints, {}, fail_fast=True)
        assert not hold.is_set()  # returned while /slow is still held by the receiver
        assert list(results) == endpoints and not any(r.ok for r in results.values())
        assert results["/slow"].error == NOT_WAITED_FOR
        # Queued ones are cancelled (one a pool thread took just then may not be waited for): never sent.
        assert {results["/queued1"].error, results["/queued2"].error} <= {CANCELLED, NOT_WAITED_FOR}
        assert results["/bad"].status_code == 400
        # /retry's 30 s wait was cut short: only /slow is still on the pool.
        assert wait_for(lambda: sender.pool.in_flight == 1)
    finally:
        hold.set()
    assert sorted(r.path for r in server.requests) == ["/bad", "/retry", "/slow"]
    line = next(line for line in logs.text.splitlines() if "broadcast to 5 endpoints cut short by fail_fast: " in line)
    assert '"/bad"' in line.split(" failed ")[1].split("]")[0] and sender.stats["broadcasts_cancelled"] == 1


def test_a_broadcast_after_stop_sends_nothing_and_names_every_endpoint(server, parts):
    sender = parts()
    sender.run.set()
    results = sender.broadcaster.broadcast(["/a", "orders"], {})
    assert {e: (r.ok, r.error) for e, r in results.items()} == {"/a": (False, STOPPED), "orders": (False, STOPPED)}
    assert server.requests == [] and sender.pool.health()["started"] is False


def test_a_delivery_that_raises_is_logged_and_reported_not_raised(server, parts):
    class Broken:
        def headers(self, *args, **kwargs):
            raise RuntimeError("signer broke")

    server.route("POST", "/a", status=200)
    sender = parts()
    sender.sender.signer = Broken()
    with LogCapture() as logs:
        results = sender.broadcaster.broadcast(["/a"], {})
        # By the pool, with its traceback (from the pool's thread: maybe after the broadcast returned).
        assert wait_for(lambda: "webhook delivery raised" in logs.text)
    assert results["/a"].error == "unexpected error: RuntimeError"
    assert server.requests == [] and "RuntimeError: signer broke" in logs.text


def test_a_sender_renamed_after_construction_logs_and_names_its_threads_by_the_new_name(server):
    from syncworkers import WebhookSenderWorker

    server.route("POST", "/a", status=200)
    worker = WebhookSenderWorker(server.base_url, name="before")
    worker.name = "after"
    try:
        with LogCapture() as logs:
            assert worker.broadcast_webhook(["/a"], {}) == {"/a": True}
            threads = [t.name for t in threading.enumerate() if t.name.startswith("syncworkers-webhook-")]
    finally:
        worker.close()
    assert all(name.startswith("syncworkers-webhook-after") for name in threads)
    assert threads or worker.client.can_submit  # (over libcurl a broadcast takes no pool thread)
    line = next(line for line in logs.text.splitlines() if " delivered: status 200" in line)
    assert "worker=after" in line and "before" not in logs.text
