"""Per host, at most max_in_flight_per_host attempts at once: a slow partner never takes the whole pool."""

import threading

import pytest

from syncworkers import HTTPClientConfig, WebhookConfig, WebhookSenderWorker
from syncworkers.http import limits
from syncworkers.http.limits import HostLimiter
from syncworkers.http.outcome import Kind, Outcome
from syncworkers.http.retry import RetryPolicy
from syncworkers.signals import StopSignal

from .helpers import wait_for
from .server import Reply


class SlowPartner:
    """A handler that holds every request until released, counting how many it holds at once."""

    def __init__(self):
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.now = self.most = 0

    def __call__(self, request):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            self.release.wait(30)
        finally:
            with self.lock:
                self.now -= 1
        return Reply(200, b"ok")


@pytest.mark.transport_independent
@pytest.mark.parametrize("transport", ["requests", "curl"])
def test_a_slow_partner_does_not_stop_deliveries_to_a_healthy_one(transport, server, server2):
    slow = SlowPartner()
    server.route("POST", "/slow", handler=slow)
    server2.route("POST", "/ok", status=200)
    config = WebhookConfig(max_workers=4, retry_schedule=(0.05, 0.05))  # default per host: 3 of 4 threads
    worker = WebhookSenderWorker(webhook_config=config, http_config=HTTPClientConfig(transport=transport))
    try:
        worker.start()
        slow_ids = [worker.enqueue(server.url("/slow"), {"n": n}) for n in range(4)]
        assert wait_for(lambda: slow.now == 3, 10)
        ok_ids = [worker.enqueue(server2.url("/ok"), {"n": n}) for n in range(4)]
        # The healthy partner is served while the slow one still holds two threads.
        assert wait_for(lambda: len(server2.calls("/ok")) == 4, 10)
        assert slow.now == 3 and len(server.calls("/slow")) == 3
        slow.release.set()
        assert worker.flush(20)
        states = {worker.outbox.get(i).state for i in slow_ids + ok_ids}
        attempts = [worker.outbox.get(i).attempts for i in slow_ids]
    finally:
        slow.release.set()
        worker.stop(5)
        worker.close()
    assert states == {"delivered"} and attempts == [1, 1, 1, 1]  # postponed, never an attempt spent
    assert slow.most == 3 and len(server.calls("/slow")) == 4


def test_direct_sends_wait_for_a_slot_and_a_stop_ends_the_wait(server, monkeypatch):
    slow = SlowPartner()
    server.route("POST", "/slow", handler=slow)
    config = WebhookConfig(max_in_flight_per_host=2, max_retries=0)
    worker = WebhookSenderWorker(webhook_config=config)
    limiter, asked = worker.client.limiter, []
    acquire = limiter.acquire

    def counted_acquire(key, *args, **kw):  # the real wait, counted
        asked.append(key)
        return acquire(key, *args, **kw)

    monkeypatch.setattr(limiter, "acquire", counted_acquire)
    results = []
    threads = [threading.Thread(target=lambda: results.append(worker.deliver(server.url("/slow"), {})))
               for _ in range(3)]
    try:
        for t in threads:
            t.start()
        assert wait_for(lambda: slow.now == 2 and len(asked) == 3, 10)  # the third send waits for a slot
        assert limiter.in_flight("127.0.0.1:%d" % server.port) == 2
        worker.stop_event.set()  # the run's stop: the third send stops waiting for a slot
        assert wait_for(lambda: len(results) == 1, 10)
        assert not results[0].ok and results[0].attempts == 0 and "interrupted" in results[0].error
    finally:
        slow.release.set()
        for t in threads:
            t.join(10)
        worker.close()
    assert slow.most == 2 and len(server.calls("/slow")) == 2


@pytest.mark.transport_independent
def test_a_stop_signal_wakes_a_waiter_at_once(monkeypatch):
    monkeypatch.setattr(limits, "_EVENT_STEP", 3600.0)  # only the signal's callback can wake it
    limiter = HostLimiter(1)
    assert limiter.try_acquire("h:80") and not limiter.try_acquire("h:80")
    stop, got = StopSignal(), []
    waiter = threading.Thread(target=lambda: got.append(limiter.acquire("h:80", stop)))
    waiter.start()
    stop.set()
    waiter.join(10)
    assert got == [False]
    limiter.release("h:80")
    assert limiter.acquire("h:80", StopSignal(), timeout=1) and limiter.in_flight("h:80") == 1


@pytest.mark.transport_independent
def test_a_saturated_host_postpones_without_spending_however_old_the_delivery():
    policy = RetryPolicy.from_schedule((5.0, 300.0))
    decision = policy.next(Outcome(Kind.SATURATED, error="busy"), 3, age=10 ** 7)
    assert decision.wait is not None and decision.wait <= 1 and not decision.spend


def test_the_default_and_the_environment(monkeypatch):
    assert WebhookConfig(max_workers=4).per_host_limit == 3
    assert WebhookConfig(max_workers=32).per_host_limit == 24
    assert WebhookConfig(max_workers=3).per_host_limit == 2
    assert WebhookConfig(max_workers=2).per_host_limit == 2
    assert WebhookConfig(max_workers=1).per_host_limit == 1
    assert WebhookConfig(max_workers=4, max_in_flight_per_host=4).per_host_limit == 4
    monkeypatch.setenv("WEBHOOK_MAX_IN_FLIGHT_PER_HOST", "3")
    with WebhookSenderWorker() as worker:
        assert worker.client.limiter.limit == 3
    monkeypatch.setenv("WEBHOOK_MAX_IN_FLIGHT_PER_HOST", "0")
    with pytest.raises(Exception, match="WEBHOOK_MAX_IN_FLIGHT_PER_HOST"):
        WebhookSenderWorker()
