"""Rate-limit budgets per host: headers read, ticks waiting for a near reset, skipped (one WARNING) when far."""

import logging
import threading
from email.utils import formatdate

import pytest
from requests.structures import CaseInsensitiveDict

from syncworkers import PollerWorker, RateLimits
from syncworkers.http.messages import Headers
from syncworkers.polling.ratelimit import _wait as default_wait
from syncworkers.polling.ratelimit import blocked_seconds, shared_rate_limits

from .server import Reply

WALL = 1_700_000_000.0  # the fake wall clock's epoch seconds at fake monotonic 0


class FakeTime:
    """A monotonic clock, a wall clock and a wait that advances them instead of sleeping."""

    def __init__(self):
        self.now = 0.0
        self.waits = []

    def clock(self):
        return self.now

    def wall(self):
        return WALL + self.now

    def wait(self, event, seconds):
        self.waits.append(seconds)
        self.now += seconds
        return event.is_set()

    def budget(self):
        return RateLimits(clock=self.clock, wall=self.wall, wait=self.wait)


@pytest.mark.transport_independent
@pytest.mark.parametrize("status, headers, expected", [
    (429, {"Retry-After": "30"}, 30.0),
    (503, {"retry-after": formatdate(WALL + 100, usegmt=True)}, 100.0),  # an HTTP date
    (200, {"Retry-After": "30"}, None),  # not a rate-limit answer
    (200, {"RateLimit-Remaining": "0", "RateLimit-Reset": "12"}, 12.0),  # delta seconds
    (200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(WALL) + 40)}, 40.0),  # epoch seconds
    (200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(WALL + 7) * 1000)}, 7.0),  # epoch ms
    (200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(WALL) - 5)}, 0.0),  # already past
    (200, {"RateLimit": "limit=100, remaining=0, reset=9"}, 9.0),
    (200, {"RateLimit": '"default";r=0;t=15'}, 15.0),
    (200, {"X-RateLimit-Remaining": "57", "X-RateLimit-Reset": "60"}, 0.0),  # budget left
    (200, {"X-RateLimit-Remaining": "0"}, None),  # spent, reset unknown: no guess
    (200, {}, None),
])
@pytest.mark.parametrize("kind", ["dict", "response", "requests"])
def test_blocked_seconds_reads_the_usual_headers(status, headers, expected, kind):
    # A response's own headers are read as they are (case-insensitive), a plain mapping lowercased first.
    if kind == "response":
        headers = Headers([(name.upper() if i % 2 else name.title(), value)
                           for i, (name, value) in enumerate(headers.items())])
    elif kind == "requests":
        headers = CaseInsensitiveDict({name.upper(): value for name, value in headers.items()})
    assert blocked_seconds(status, headers, WALL) == expected


@pytest.mark.transport_independent
def test_gate_waits_for_a_near_reset_and_skips_a_far_one_warning_once():
    t = FakeTime()
    budget = t.budget()
    url, other = "http://127.0.0.1:8000/a", "http://127.0.0.1:9000/b"
    stop = threading.Event()
    assert budget.gate(url, 10, stop) == (True, 0.0)
    budget.update(url, 200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "4"})
    assert budget.gate(other, 10, stop) == (True, 0.0)  # another host is not affected
    assert budget.gate(url, 10, stop) == (True, 4.0) and t.waits == [4.0]
    budget.update(url, 429, {"Retry-After": "3600"})
    assert budget.gate(url, 10, stop) == (False, 3600.0)
    assert [budget.first_warning(url), budget.first_warning(url)] == [True, False]
    assert budget.skipped(url) == 1 and t.waits == [4.0]  # nobody sleeps for an hour
    t.now += 3600
    assert budget.gate(url, 10, stop)[0] and budget.first_warning(url)  # a new spell warns again


@pytest.mark.transport_independent
def test_a_stop_during_the_wait_ends_it():
    t = FakeTime()
    budget = t.budget()
    budget.update("http://h:1/", 200, {"RateLimit-Remaining": "0", "RateLimit-Reset": "5"})
    stop = threading.Event()
    stop.set()
    assert budget.gate("http://h:1/", 10, stop) == (False, 0.0)


def spent(reset_in):
    return Reply(200, b"[]", {"Content-Type": "application/json", "X-RateLimit-Remaining": "0",
                              "X-RateLimit-Reset": str(int(WALL + reset_in))})


def test_poller_ticks_wait_for_a_reset_within_the_interval(server):
    t = FakeTime()
    server.route("GET", "/api", replies=[spent(reset_in=5), Reply(200, b"[]")])
    worker = PollerWorker(server.url("/api"), interval=10, rate_limits=t.budget())
    assert worker.poll().status_code == 200
    assert worker.poll().status_code == 200  # waited for the reset, then asked
    assert t.waits == [5.0] and len(server.calls("/api")) == 2
    assert worker.health()["metrics"]["rate_limited_ticks"] == 0
    worker.close()


def test_pollers_of_one_host_skip_ticks_while_the_reset_is_far_with_one_warning(server, caplog):
    t = FakeTime()
    budget = t.budget()
    server.route("GET", "/a", replies=[spent(reset_in=3600), Reply(200, b"[]")])
    server.route("GET", "/b", status=200, body=b"[]")
    first = PollerWorker(server.url("/a"), interval=10, rate_limits=budget, name="a")
    second = PollerWorker(server.url("/b"), interval=10, rate_limits=budget, name="b")
    first.poll()
    with caplog.at_level(logging.DEBUG, logger="syncworkers"):
        for _ in range(3):
            assert first.poll().ok and second.poll().ok  # skipped, not failed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "rate limit" in r.getMessage()]
    assert len(warnings) == 1
    assert len(server.calls("/a")) == 1 and server.calls("/b") == []
    assert first.health()["metrics"]["rate_limited_ticks"] == 3 == second.health()["metrics"]["rate_limited_ticks"]
    assert first.health()["consecutive_failures"] == 0 and t.waits == []
    t.now += 3600  # the reset came: polling resumes
    assert first.poll().status_code == 200 and second.poll().status_code == 200
    first.close()
    second.close()


def test_the_wait_is_interrupted_by_stop(server):
    entered = threading.Event()

    def wait(event, seconds):  # the default wait, with a signal that it began
        entered.set()
        return default_wait(event, seconds)

    budget = RateLimits(wait=wait)
    server.route("GET", "/slow", replies=[Reply(200, b"", {"RateLimit-Remaining": "0", "RateLimit-Reset": "50"})])
    worker = PollerWorker(server.url("/slow"), interval=60, rate_limits=budget)
    worker.poll()
    worker.start()  # the first tick finds the budget spent for 50 s (< 60): it waits on the stop event
    assert entered.wait(10)
    assert worker.stop(timeout=10) is True
    assert len(server.calls("/slow")) == 1
    worker.close()


def test_pollers_share_the_process_budget_by_default():
    worker = PollerWorker("http://127.0.0.1:1/x", interval=1)
    assert worker.rate_limits is shared_rate_limits
    worker.close()
