"""The retry policy: one immutable value that says whether to try again, and when.

The three ways users describe retries — :class:`~syncworkers.config.settings.RetryConfig`,
``WebhookConfig(max_retries, retry_delay, retry_backoff)`` and the outbox's
``retry_schedule`` — all compile to a :class:`RetryPolicy`. Its :meth:`RetryPolicy.next`
turns an :class:`~syncworkers.http.outcome.Outcome` and the number of attempts made into a
:class:`Decision`: wait this long, or stop. In-call retries (``HTTPClient``) and the
outbox schedule (``dispatch``) both ask it. Pure: no I/O, no sleeping — callers wait
on their stop signal, so shutdown and ``fail_fast`` interrupt every wait.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
import time
from dataclasses import dataclass, replace
from typing import Optional, Tuple

from ..config.settings import RetryConfig, RetryStrategy
from ..config.defaults import DEFAULT_RETRY_AFTER_MAX
from .outcome import RETRY_AFTER_STATUSES, RETRY_STATUSES, Kind, Outcome

#: Seconds past the outbox schedule's total span during which a ``Retry-After`` or an
#: open circuit postpones a delivery without spending an attempt; after it they spend.
POSTPONE_SLACK = 3600.0

_rng = random.Random()
#: Seconds the outbox postpones a delivery whose host has max_in_flight_per_host attempts on the wire.
SATURATED_POSTPONE = 0.5
#: How a final outcome's reason starts (kept as a dead delivery's last error).
_FINAL_PREFIX = {Kind.INVALID: "final", Kind.GONE: "gone", Kind.REFUSED: "refused"}


def apply_jitter(delay: float, rng: Optional[random.Random] = None) -> float:
    """A uniform pick in [delay/2, delay]: spreads retries out, never waits longer than the cap."""
    return (rng or _rng).uniform(delay / 2.0, delay)


_DELTA = re.compile(r"^\s*[0-9]+\s*$")


def parse_retry_after(value: Optional[str], cap: float = math.inf, now: Optional[float] = None) -> Optional[float]:
    """Seconds a ``Retry-After`` value asks for (delta-seconds or an HTTP date), capped at *cap*.

    Returns None for a missing or unparseable value; a date in the past gives 0.
    *now* is epoch seconds (default: the current time).
    """
    if value is None:
        return None
    if _DELTA.match(value):
        seconds = float(value)  # not int(): a hostile 5,000-digit value is inf, not a ValueError
    else:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        try:
            seconds = email.utils.mktime_tz(parsed) - (time.time() if now is None else now)
        except (ValueError, OverflowError):  # a date no calendar holds (year 99999999)
            return None
    return min(max(seconds, 0.0), cap)


@dataclass(frozen=True)
class Decision:
    """What to do after an attempt: wait ``wait`` seconds and try again, or stop (``wait`` None)."""

    wait: Optional[float]
    #: Whether the attempt counts against the budget (a postponement does not).
    spend: bool = True
    #: Why the policy stopped or waits (kept as a delivery's last error).
    reason: Optional[str] = None

    @property
    def stop(self) -> bool:
        return self.wait is None


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed attempt is tried again. ``max_attempts`` counts the first attempt too.

    Retry k (k = 1, 2, ...) waits ``delays[k-1]`` when a schedule is given, else
    ``initial_delay``, ``initial_delay·k`` or ``initial_delay·base^(k-1)`` (FIXED,
    LINEAR, EXPONENTIAL), capped at ``max_delay``; jittered into [d/2, d] when asked.

    In-call (``persistent`` False): retryable outcomes (the retry statuses, transport
    errors) are tried again; a ``Retry-After`` is honoured, and one longer than
    ``retry_after_max`` ends the call at once rather than hold the caller.
    Outbox (``persistent`` True): every outcome but success and the final ones is
    tried again on the schedule; an open circuit or a 429/503 ``Retry-After``
    postpones without spending an attempt while the delivery is younger than the
    schedule's span plus ``postpone_slack``.
    """

    max_attempts: int = 4
    strategy: RetryStrategy = RetryStrategy.EXPONENTIAL
    initial_delay: float = 1.0
    exponential_base: float = 2.0
    max_delay: float = 60.0
    delays: Optional[Tuple[float, ...]] = None
    jitter: bool = False
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    retry_statuses: Tuple[int, ...] = RETRY_STATUSES
    persistent: bool = False
    postpone_slack: float = POSTPONE_SLACK

    @classmethod
    def from_config(cls, config: RetryConfig) -> "RetryPolicy":
        """The in-call policy of a RetryConfig (WebhookConfig's retry fields compile to one)."""
        return cls(max_attempts=config.max_attempts, strategy=config.strategy,
                   initial_delay=config.initial_delay, exponential_base=config.exponential_base,
                   max_delay=config.max_delay, jitter=config.jitter, retry_after_max=config.retry_after_max,
                   retry_statuses=tuple(config.retry_on_status))

    @classmethod
    def from_schedule(cls, delays: Tuple[float, ...], *, retry_after_max: float = DEFAULT_RETRY_AFTER_MAX,
                      postpone_slack: float = POSTPONE_SLACK) -> "RetryPolicy":
        """The outbox policy: attempt 1 at once, then one attempt after each delay."""
        delays = tuple(float(d) for d in delays)
        return cls(max_attempts=len(delays) + 1, delays=delays, max_delay=math.inf,
                   retry_after_max=retry_after_max, persistent=True, postpone_slack=postpone_slack)

    def new(self, **changes: object) -> "RetryPolicy":
        """A copy with *changes* (the value itself never changes)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def span(self) -> float:
        """Seconds of waiting the whole budget takes, without jitter or postponements."""
        return sum(self.delay(k) for k in range(1, self.max_attempts))

    def delay(self, retry: int) -> float:
        """Seconds before retry *retry* (1, 2, ...), without jitter."""
        if retry < 1:
            raise ValueError(f"retry must be >= 1, got {retry!r}")
        if self.delays is not None:
            delay = self.delays[min(retry, len(self.delays)) - 1] if self.delays else 0.0
        elif self.strategy is RetryStrategy.FIXED:
            delay = self.initial_delay
        elif self.strategy is RetryStrategy.LINEAR:
            delay = self.initial_delay * retry
        else:
            try:
                delay = self.initial_delay * self.exponential_base ** (retry - 1)
            except OverflowError:
                delay = math.inf
        return min(delay, self.max_delay)

    def backoff(self, retry: int, rng: Optional[random.Random] = None) -> float:
        """The wait before retry *retry*, jittered when the policy asks for it."""
        delay = self.delay(retry)
        return apply_jitter(delay, rng) if self.jitter else delay

    def retries(self, outcome: Outcome) -> bool:
        """Whether *outcome* is worth another attempt at all (budget aside)."""
        if outcome.ok or outcome.kind is Kind.INVALID:
            return False
        if outcome.status_code is not None and outcome.status_code in self.retry_statuses:
            return True  # the user's list wins over the default classification
        if outcome.kind is Kind.RETRYABLE:
            return outcome.status_code is None or self.persistent  # transport errors always
        if outcome.kind in (Kind.GONE, Kind.REFUSED):
            return False
        return self.persistent

    def next(self, outcome: Outcome, attempts: int, *, age: float = 0.0,
             rng: Optional[random.Random] = None) -> Decision:
        """Decide after *attempts* attempts (this one included) ended in *outcome*.

        *age* is how long ago the work began (the outbox's delivery age), for the
        postponement window.
        """
        if outcome.ok:
            return Decision(None)
        error = outcome.error or f"status {outcome.status_code}"
        if not self.retries(outcome):
            prefix = _FINAL_PREFIX.get(outcome.kind)
            return Decision(None, reason=f"{prefix}: {error}" if prefix else error)
        postpone = self._postponement(outcome)
        # Nothing was sent to a saturated host: that never spends an attempt, however old the delivery.
        young = age < self.span + self.postpone_slack or outcome.kind is Kind.SATURATED
        if self.persistent and postpone is not None and young:
            return Decision(postpone, spend=False, reason=error)
        if not self.persistent and outcome.retry_after is not None and outcome.retry_after > self.retry_after_max:
            return Decision(None, reason=f"{error}: Retry-After {outcome.retry_after:.0f}s exceeds "
                                         f"retry_after_max {self.retry_after_max:.0f}s")
        if attempts >= self.max_attempts:
            s = "s" if attempts > 1 else ""
            return Decision(None, reason=f"exhausted after {attempts} attempt{s}: {error}")
        wait = self.backoff(attempts, rng)
        if not self.persistent and outcome.retry_after is not None:
            wait = outcome.retry_after  # the server's word wins over the backoff (within the cap)
        return Decision(max(wait, postpone or 0.0), reason=error)

    def _postponement(self, outcome: Outcome) -> Optional[float]:
        """The outbox's wait for an open circuit or a 429/503 Retry-After (None: not a postponement)."""
        if not self.persistent:
            return None
        floor = max(self.delay(1), 0.01) if self.max_attempts > 1 else 1.0
        if outcome.kind is Kind.SATURATED:
            return SATURATED_POSTPONE  # a slot frees as soon as one of the host's attempts ends
        if outcome.kind is Kind.CIRCUIT_OPEN and outcome.circuit_remaining is not None:
            return max(outcome.circuit_remaining, floor)
        if outcome.status_code in RETRY_AFTER_STATUSES and outcome.retry_after is not None:
            return min(max(outcome.retry_after, floor), self.retry_after_max)
        return None


__all__ = [
    "Decision",
    "POSTPONE_SLACK",
    "SATURATED_POSTPONE",
    "RetryPolicy",
    "apply_jitter",
    "parse_retry_after",
]
