"""Per-host circuit breakers, driven by a fake clock (nothing sleeps)."""

import threading

import pytest

from syncworkers.http.breaker import BreakerRegistry, HostBreaker, breaker_key
from syncworkers.http.outcome import is_host_failure
from syncworkers.config.settings import CircuitBreakerConfig
from syncworkers.exceptions import CircuitOpenError, ConfigError

pytestmark = pytest.mark.transport_independent

KEY = "http://api.test:80"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


def make(clock, **kw) -> HostBreaker:
    kw.setdefault("failure_threshold", 3)
    kw.setdefault("timeout_seconds", 60.0)
    return HostBreaker(KEY, CircuitBreakerConfig(**kw), clock=clock)


def open_breaker(clock, **kw) -> HostBreaker:
    breaker = make(clock, failure_threshold=1, **kw)
    breaker.record_failure()
    assert breaker.state == "open"
    return breaker


def test_zero_threshold_is_rejected_by_the_config():
    # The package would silently turn 0 into 5.
    with pytest.raises(ConfigError, match="failure_threshold"):
        CircuitBreakerConfig(failure_threshold=0)


def test_opens_exactly_at_threshold(clock):
    breaker = make(clock, failure_threshold=3)
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.before_request()  # still allowed
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.failure_count == 3
    with pytest.raises(CircuitOpenError):
        breaker.before_request()


def test_success_resets_the_count(clock):
    breaker = make(clock, failure_threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    assert breaker.failure_count == 0
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.failure_count == 2


@pytest.mark.parametrize("status,fails", [
    (200, False), (204, False), (304, False), (400, False), (404, False), (422, False),
    (429, True), (500, True), (503, True), (599, True),
])
def test_failure_statuses(clock, status, fails):
    assert is_host_failure(status) is fails
    breaker = make(clock, failure_threshold=2)
    breaker.record_failure()
    breaker.record_status(status)
    assert breaker.state == ("open" if fails else "closed")
    assert breaker.failure_count == (2 if fails else 0)


def test_open_refuses_with_host_and_remaining(clock):
    breaker = open_breaker(clock, timeout_seconds=60.0)
    clock.advance(15)
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_request()
    assert info.value.host == KEY
    assert info.value.remaining == pytest.approx(45.0)
    assert KEY in str(info.value)
    assert breaker.remaining() == pytest.approx(45.0)
    assert breaker.snapshot() == {"key": KEY, "state": "open", "failure_count": 1,
                                  "remaining": pytest.approx(45.0)}


def test_remaining_is_zero_unless_open(clock):
    breaker = make(clock)
    assert breaker.remaining() == 0.0
    breaker = open_breaker(clock)
    clock.advance(61)
    assert breaker.state == "half_open"
    assert breaker.remaining() == 0.0


def test_still_open_until_the_timeout_by_the_injected_clock(clock):
    breaker = open_breaker(clock, timeout_seconds=60.0)
    clock.advance(59.9)
    with pytest.raises(CircuitOpenError):
        breaker.before_request()
    clock.advance(0.1)
    assert breaker.state == "half_open"
    breaker.before_request()


def test_exactly_one_probe_among_many_concurrent_callers(clock):
    breaker = open_breaker(clock)
    clock.advance(60)
    n = 50
    barrier = threading.Barrier(n)
    allowed, refused = [], []

    def caller() -> None:
        barrier.wait(timeout=5)
        try:
            breaker.before_request()
        except CircuitOpenError:
            refused.append(1)
        else:
            allowed.append(1)

    threads = [threading.Thread(target=caller, name=f"syncworkers-test-probe-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert (len(allowed), len(refused)) == (1, n - 1)


def test_probe_success_closes(clock):
    breaker = open_breaker(clock)
    clock.advance(60)
    breaker.before_request()
    breaker.record_success()
    assert breaker.snapshot() == {"key": KEY, "state": "closed", "failure_count": 0, "remaining": 0.0}
    for _ in range(3):
        breaker.before_request()  # no permit needed any more


def test_probe_failure_reopens_for_a_full_timeout(clock):
    breaker = make(clock, failure_threshold=3, timeout_seconds=60.0)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(60)
    breaker.before_request()  # the probe
    clock.advance(30)  # a slow probe
    breaker.record_failure()  # one failed probe is enough, whatever the threshold
    assert breaker.state == "open"
    assert breaker.remaining() == pytest.approx(60.0)  # counted from the probe's failure
    clock.advance(59.9)
    with pytest.raises(CircuitOpenError):
        breaker.before_request()
    clock.advance(0.1)
    breaker.before_request()  # the next probe


def test_failure_while_open_does_not_push_the_probe_back(clock):
    breaker = open_breaker(clock, timeout_seconds=60.0)
    clock.advance(30)
    breaker.record_failure()  # a call that started before the circuit opened
    assert breaker.remaining() == pytest.approx(30.0)


def test_release_frees_the_probe_permit_and_nothing_else(clock):
    breaker = open_breaker(clock)
    clock.advance(60)
    breaker.before_request()
    with pytest.raises(CircuitOpenError, match="probe"):
        breaker.before_request()
    breaker.release()
    assert breaker.state == "half_open"
    assert breaker.failure_count == 1
    breaker.before_request()  # a new probe
    with pytest.raises(CircuitOpenError):
        breaker.before_request()


def test_expected_exception_filters_what_counts(clock):
    breaker = make(clock, failure_threshold=1, expected_exception=ConnectionError)
    breaker.record_failure(ValueError("a bug of ours, not the host's"))
    assert breaker.state == "closed"
    assert breaker.failure_count == 0
    breaker.record_failure(ConnectionRefusedError())  # a subclass counts
    assert breaker.state == "open"


def test_unexpected_exception_during_probe_frees_the_permit(clock):
    breaker = open_breaker(clock, expected_exception=ConnectionError)
    clock.advance(60)
    breaker.before_request()
    breaker.record_failure(KeyError("x"))
    assert breaker.state == "half_open"
    breaker.before_request()


def test_package_call_checks_the_open_state(clock):
    breaker = open_breaker(clock)
    calls = []
    with pytest.raises(CircuitOpenError):
        breaker.call(calls.append, 1)
    assert calls == []
    clock.advance(60)
    with pytest.raises(ConnectionError):
        breaker.call(lambda: (_ for _ in ()).throw(ConnectionError("down")))
    assert breaker.state == "open"  # the probe failed
    clock.advance(60)
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state == "closed"


def test_registry_isolates_hosts(clock):
    registry = BreakerRegistry(CircuitBreakerConfig(failure_threshold=2), clock=clock)
    bad = registry.for_url("http://bad.test/hook")
    bad.record_failure()
    bad.record_failure()
    registry.for_url("http://good.test/hook").before_request()
    with pytest.raises(CircuitOpenError):
        registry.for_url("http://bad.test/other").before_request()
    assert registry.states() == {"http://bad.test:80": "open", "http://good.test:80": "closed"}
    assert [s["key"] for s in registry.snapshot()] == ["http://bad.test:80", "http://good.test:80"]


def test_registry_key_normalisation():
    registry = BreakerRegistry(CircuitBreakerConfig())
    same = registry.for_url("http://LOCALHOST/x")
    assert registry.for_url("http://localhost:80/y") is same
    assert registry.for_url("http://user:pw@localhost/z?q=1") is same
    assert registry.for_url("http://localhost:8080/x") is not same
    assert registry.for_url("https://localhost/x") is not same
    assert registry.for_url("https://localhost:443/") is registry.for_url("https://LocalHost/")
    assert same.key == "http://localhost:80"


@pytest.mark.parametrize("url,key", [
    ("http://Example.COM/a/b?c=d", "http://example.com:80"),
    ("HTTPS://example.com", "https://example.com:443"),
    ("https://example.com:8443/", "https://example.com:8443"),
    ("http://[::1]:9000/", "http://[::1]:9000"),
])
def test_breaker_key(url, key):
    assert breaker_key(url) == key


@pytest.mark.parametrize("url", ["", "not a url", "/relative", "ftp://example.com/",
                                 "http://", "http://host:99999/", "http://u:s3cret@host:bad/"])
def test_breaker_key_rejects_bad_urls_without_quoting_them(url):
    with pytest.raises(ConfigError) as info:
        breaker_key(url)
    assert "s3cret" not in str(info.value)


def test_registry_creates_one_breaker_per_host_under_contention():
    registry = BreakerRegistry(CircuitBreakerConfig())
    n = 20
    barrier = threading.Barrier(n)
    got = []

    def lookup() -> None:
        barrier.wait(timeout=5)
        got.append(registry.for_url("http://race.test/"))

    threads = [threading.Thread(target=lookup, name=f"syncworkers-test-lookup-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert len(got) == n
    assert len({id(b) for b in got}) == 1


def test_disabled_never_opens(clock):
    registry = BreakerRegistry(CircuitBreakerConfig(failure_threshold=1, enabled=False), clock=clock)
    breaker = registry.for_url("http://down.test/")
    for _ in range(20):
        breaker.before_request()
        breaker.record_status(503)
    clock.advance(3600)
    breaker.before_request()
    assert breaker.state == "closed"
    assert breaker.remaining() == 0.0


def test_open_error_text_has_no_userinfo_or_query(clock):
    registry = BreakerRegistry(CircuitBreakerConfig(failure_threshold=1), clock=clock)
    url = "https://alice:s3cret@api.example.com:8443/hook?token=tok123&sig=sigvalue9"
    breaker = registry.for_url(url)
    breaker.record_failure()
    with pytest.raises(CircuitOpenError) as info:
        registry.for_url(url).before_request()
    shown = " ".join([str(info.value), repr(info.value), repr(breaker), str(breaker),
                      repr(registry.snapshot())])
    for secret in ("alice", "s3cret", "tok123", "token", "sigvalue9"):
        assert secret not in shown
    assert "api.example.com:8443" in str(info.value)
