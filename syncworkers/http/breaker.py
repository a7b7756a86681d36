"""Per-host circuit breakers: the circuitbreaker package, made thread-safe and strict.

The package keeps the state (count, opened time, closed/open/half-open) but has no
lock, lets every caller through when half-open, reads ``time.monotonic`` directly
and its ``.call()`` never checks the open state. :class:`HostBreaker` guards the
state with a lock, hands out a single probe permit when half-open, reads the
injected clock, and routes ``with breaker:`` / ``.call()`` through the same checks.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, Dict, List, Literal, Optional

from circuitbreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN, CircuitBreaker  # type: ignore[import-untyped]

from ..config.settings import CircuitBreakerConfig
from ..exceptions import CircuitOpenError, ConfigError
from .hosts import DEFAULT_PORTS, Origin, origin
from .outcome import Kind, Outcome, is_host_failure


@functools.lru_cache(maxsize=1024)  # asked several times per request (breaker, limits, metric labels)
def breaker_key(url: str) -> str:
    """Return ``scheme://host:port`` of *url* (:attr:`~syncworkers.http.hosts.Origin.key`).

    Userinfo, path and query are dropped, so the key is safe to log.
    """
    try:
        found: Optional[Origin] = origin(url)
    except (AttributeError, ValueError):
        found = None
    if found is None or found.scheme not in DEFAULT_PORTS or not found.host:
        # The URL itself is not quoted: it may carry credentials.
        raise ConfigError("circuit breaker needs an http:// or https:// URL with a host and a valid port")
    return found.key


class HostBreaker(CircuitBreaker):  # type: ignore[misc]  # the package is untyped
    """The circuit of one host; every method is safe to call from many threads.

    ``before_request()`` before each call, then exactly one of ``record_success()``,
    ``record_failure()``, ``record_status()`` or ``release()``. A failure while the
    circuit is already open (a call that started before it opened) is counted but
    does not push the probe time back; any failure while half-open re-opens it.
    """

    def __init__(self, key: str, config: CircuitBreakerConfig,
                 clock: Callable[[], float] = time.monotonic):
        expected = config.expected_exception
        super().__init__(
            failure_threshold=config.failure_threshold,
            recovery_timeout=config.timeout_seconds,
            # A predicate, because the package rejects BaseException subclasses the config allows.
            expected_exception=lambda exc_type, _exc: issubclass(exc_type, expected),
            name=key,
        )
        # The package turns a falsy threshold or timeout into its own default; set them exactly.
        self._failure_threshold = config.failure_threshold
        self._recovery_timeout = config.timeout_seconds
        self.key = key
        self._enabled = config.enabled
        self._clock = clock
        self._lock = threading.Lock()
        self._probing = False
        self._opened = clock()

    @property
    def open_remaining(self) -> float:
        """Seconds until the open circuit allows a probe, by the injected clock (≤ 0 once due)."""
        return self._opened + self._recovery_timeout - self._clock()

    @property
    def state(self) -> str:
        with self._lock:
            state: str = super().state
            return state

    def remaining(self) -> float:
        """Seconds until a probe is allowed; 0 when the circuit is not open."""
        with self._lock:
            return self._remaining()

    def _remaining(self) -> float:
        return max(0.0, self.open_remaining) if self._state == STATE_OPEN else 0.0

    def before_request(self) -> None:
        """Return if a call may go ahead (taking the probe permit when half-open), else raise."""
        if self._state == STATE_CLOSED:  # one attribute read: a closed circuit needs no lock
            return
        with self._lock:
            state = super().state
            if state == STATE_CLOSED:
                return
            if state == STATE_HALF_OPEN and not self._probing:
                self._probing = True
                return
            remaining = self._remaining()
            detail = "a probe is in flight" if state == STATE_HALF_OPEN else f"retry in {remaining:.1f}s"
        raise CircuitOpenError(f"circuit open for {self.key}: {detail}", host=self.key, remaining=remaining)

    def record_success(self) -> None:
        """The host answered well: close the circuit, reset the count, free the probe permit."""
        if self._state == STATE_CLOSED and not self._failure_count and not self._probing:
            return  # nothing to reset (a failure counted meanwhile is as if it came after this success)
        with self._lock:
            self.reset()
            self._probing = False

    def record_failure(self, error: Optional[BaseException] = None) -> None:
        """Count a consecutive failure; an *error* that is not ``expected_exception`` is no verdict.

        A syncworkers RequestError matches through itself or its ``cause`` (the
        underlying requests/urllib3 error), so ``expected_exception=ConnectionError``
        works as users expect.
        """
        cause = getattr(error, "cause", None)
        if (error is not None and not self.is_failure(type(error), error)
                and not (cause is not None and self.is_failure(type(cause), cause))):
            self.release()
            return
        with self._lock:
            self._failure_count += 1
            state = super().state
            if not self._enabled or state == STATE_OPEN:
                return
            if state == STATE_HALF_OPEN or self._failure_count >= self._failure_threshold:
                self._state, self._opened, self._probing = STATE_OPEN, self._clock(), False

    def record_status(self, status: int) -> None:
        """Record an HTTP answer: 5xx and 429 are failures, anything else a success."""
        if is_host_failure(status):
            self.record_failure()
        else:
            self.record_success()

    def record_outcome(self, outcome: Outcome, error: Optional[BaseException] = None) -> None:
        """Record an attempt's outcome (see :mod:`syncworkers.http.outcome`); *error* is the exception
        behind a transport outcome, matched against ``expected_exception``."""
        if outcome.kind in (Kind.CIRCUIT_OPEN, Kind.INTERRUPTED, Kind.INVALID):
            self.release()
        elif outcome.host_failure:
            self.record_failure(error)
        else:
            self.record_success()

    def release(self) -> None:
        """The call ended without a verdict (e.g. interrupted): free the probe permit, nothing else."""
        with self._lock:
            self._probing = False

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {"key": self.key, "state": super().state,
                    "failure_count": self._failure_count, "remaining": self._remaining()}

    # The package's context manager (and so .call() and its decorator) skips the
    # open check and bypasses the lock; route it through ours.
    def __enter__(self) -> None:
        self.before_request()

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], _tb: Any) -> Literal[False]:
        if exc is None:
            self.record_success()
        else:
            self.record_failure(exc)
        return False


class BreakerRegistry:
    """One :class:`HostBreaker` per ``scheme://host:port``, created on first use."""

    def __init__(self, config: CircuitBreakerConfig, clock: Callable[[], float] = time.monotonic):
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: Dict[str, HostBreaker] = {}

    def for_url(self, url: str) -> HostBreaker:
        """The breaker of *url*'s host (raises ConfigError for a URL without one)."""
        key = breaker_key(url)
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = self._breakers[key] = HostBreaker(key, self._config, self._clock)
            return breaker

    def _all(self) -> List[HostBreaker]:
        with self._lock:
            return [self._breakers[key] for key in sorted(self._breakers)]

    def states(self) -> Dict[str, str]:
        """Map each known key to its state."""
        return {b.key: b.state for b in self._all()}

    def snapshot(self) -> List[Dict[str, Any]]:
        """One ``HostBreaker.snapshot()`` per known host, sorted by key."""
        return [b.snapshot() for b in self._all()]


__all__ = ["breaker_key", "HostBreaker", "BreakerRegistry"]
