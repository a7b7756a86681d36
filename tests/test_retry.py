import random

import pytest

from syncworkers import ConfigError, RetryConfig, RetryStrategy
from syncworkers.exceptions import CircuitOpenError, RequestTimeout, TransportError
from syncworkers.http.outcome import classify_error, classify_status
from syncworkers.http.retry import RetryPolicy, apply_jitter, parse_retry_after

pytestmark = pytest.mark.transport_independent


def cfg(**kw):
    return RetryConfig(**kw)


def policy_of(**kw):
    return RetryPolicy.from_config(RetryConfig(**kw))


def backoff_delay(config, k):
    return RetryPolicy.from_config(config).delay(k)


def retry_delay(config, k, rng=None):
    return RetryPolicy.from_config(config).backoff(k, rng)


REFUSED = classify_error(TransportError("connection refused"))
TIMEOUT = classify_error(RequestTimeout("read timeout"))


@pytest.mark.parametrize("strategy, expected", [
    (RetryStrategy.FIXED, [2.0, 2.0, 2.0, 2.0]),
    (RetryStrategy.LINEAR, [2.0, 4.0, 6.0, 8.0]),
    (RetryStrategy.EXPONENTIAL, [2.0, 6.0, 18.0, 54.0]),
])
def test_each_strategy_delay_per_retry(strategy, expected):
    config = cfg(strategy=strategy, initial_delay=2.0, exponential_base=3.0, max_delay=100.0)
    assert [backoff_delay(config, k) for k in range(1, 5)] == expected


def test_delays_are_capped_at_max_delay():
    config = cfg(strategy="exponential", initial_delay=1.0, exponential_base=2.0, max_delay=5.0)
    assert [backoff_delay(config, k) for k in range(1, 7)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    # huge exponents do not overflow
    assert backoff_delay(config, 5000) == 5.0


def test_strategy_accepts_strings_and_rejects_unknown():
    assert cfg(strategy="linear").strategy is RetryStrategy.LINEAR
    with pytest.raises(ConfigError, match="strategy"):
        cfg(strategy="fibonacci")


def test_jitter_stays_within_half_to_full_delay_and_varies():
    rng = random.Random(7)
    picks = [apply_jitter(8.0, rng) for _ in range(200)]
    assert all(4.0 <= p <= 8.0 for p in picks)
    assert len({round(p, 6) for p in picks}) > 100
    jittered = cfg(initial_delay=8.0, jitter=True, strategy="fixed")
    assert 4.0 <= retry_delay(jittered, 1, random.Random(1)) <= 8.0
    assert retry_delay(cfg(initial_delay=8.0, strategy="fixed"), 1) == 8.0


def test_retry_after_seconds_date_cap_and_garbage():
    assert parse_retry_after("7", cap=60) == 7.0
    assert parse_retry_after(" 120 ", cap=60) == 60.0
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", cap=60, now=now) == 20.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", cap=60, now=now) == 0.0
    assert parse_retry_after("soon", cap=60) is None
    assert parse_retry_after(None, cap=60) is None


@pytest.mark.parametrize("value, expected", [
    ("9" * 5000, 60.0),  # more digits than int() converts: as long as asked, capped
    ("9" * 400, 60.0),  # an int too large for a float
    ("Mon, 01 Jan 99999999 00:00:00 GMT", None),  # a date no calendar holds
])
def test_a_hostile_retry_after_is_capped_or_ignored_never_raised(value, expected):
    assert parse_retry_after(value, cap=60) == expected


def test_max_attempts_counts_the_first_attempt():
    policy = policy_of(max_attempts=3, initial_delay=0.5, strategy="fixed")
    assert policy.next(REFUSED, 1).wait == 0.5
    assert policy.next(REFUSED, 2).wait == 0.5
    last = policy.next(REFUSED, 3)
    assert last.stop and last.reason == "exhausted after 3 attempts: connection refused"


def test_first_retry_waits_initial_delay_not_zero():
    policy = policy_of(max_attempts=5, initial_delay=1.5, exponential_base=2.0)
    assert [policy.next(TIMEOUT, k).wait for k in (1, 2, 3)] == [1.5, 3.0, 6.0]


def test_retry_after_wins_over_backoff_and_beyond_its_cap_ends_the_call():
    policy = policy_of(max_attempts=5, initial_delay=1.0, retry_after_max=10.0)
    assert policy.next(classify_status(503, retry_after=3.0), 1).wait == 3.0
    # An hour's Retry-After never holds the caller: the call fails at once instead.
    decision = policy.next(classify_status(429, retry_after=3600.0), 1)
    assert decision.stop and "Retry-After" in decision.reason
    assert policy.next(classify_status(503), 1).wait == 1.0


def test_post_is_retried_on_the_configured_statuses_only():
    policy = policy_of()
    for code in (408, 425, 429, 500, 502, 503, 504):
        assert not policy.next(classify_status(code), 1).stop
    for code in (200, 301, 400, 401, 404, 410, 422, 501):
        assert policy.next(classify_status(code), 1).stop
    assert not policy_of(retry_on_status=[501]).next(classify_status(501), 1).stop  # the user's list wins


def test_an_open_circuit_is_not_retried_in_call():
    assert policy_of().next(classify_error(CircuitOpenError("open", remaining=5.0)), 1).stop


def test_the_policy_is_an_immutable_value():
    policy = policy_of(max_attempts=3)
    other = policy.new(max_attempts=5)
    assert (policy.max_attempts, other.max_attempts) == (3, 5)
    with pytest.raises(Exception):
        policy.max_attempts = 9


@pytest.mark.parametrize("bad", [
    {"max_attempts": 0}, {"initial_delay": -1}, {"exponential_base": 0.5}, {"retry_on_status": [700]},
])
def test_invalid_retry_config_quotes_field_and_value(bad):
    (name, value), = bad.items()
    with pytest.raises(ConfigError) as info:
        cfg(**bad)
    assert name in str(info.value) and repr(value).strip("[]") in str(info.value)
