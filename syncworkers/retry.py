"""Retry policy: RetryConfig as a urllib3 ``Retry``, and the pure backoff math.

urllib3's own backoff waits 0 s before the first retry and sleeps in the
calling thread with ``time.sleep``. :class:`SyncRetry` keeps urllib3's
immutable bookkeeping (``increment()`` returns a new object, ``history``
records every failed attempt) but computes waits from the configured strategy
and leaves the waiting to the caller, who waits on a ``threading.Event`` so
that shutdown and ``fail_fast`` can interrupt it.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from typing import Any, Optional

from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from .config import RetryConfig, RetryStrategy

_rng = random.Random()


def backoff_delay(config: RetryConfig, retry_number: int) -> float:
    """Seconds to wait before retry *retry_number* (1, 2, ...), without jitter, capped at max_delay."""
    if retry_number < 1:
        raise ValueError(f"retry_number must be >= 1, got {retry_number!r}")
    if config.strategy is RetryStrategy.FIXED:
        delay = config.initial_delay
    elif config.strategy is RetryStrategy.LINEAR:
        delay = config.initial_delay * retry_number
    else:
        try:
            delay = config.initial_delay * config.exponential_base ** (retry_number - 1)
        except OverflowError:
            delay = float("inf")
    return min(delay, config.max_delay)


def apply_jitter(delay: float, rng: Optional[random.Random] = None) -> float:
    """A uniform pick in [delay/2, delay]: spreads retries out, never waits longer than the cap."""
    return (rng or _rng).uniform(delay / 2.0, delay)


def retry_delay(config: RetryConfig, retry_number: int, rng: Optional[random.Random] = None) -> float:
    """The wait before retry *retry_number*, jittered when the config asks for it."""
    delay = backoff_delay(config, retry_number)
    return apply_jitter(delay, rng) if config.jitter else delay


_DELTA = re.compile(r"^\s*[0-9]+\s*$")


def parse_retry_after(value: Optional[str], cap: float, now: Optional[float] = None) -> Optional[float]:
    """Seconds a ``Retry-After`` value asks for (delta-seconds or an HTTP date), capped at *cap*.

    Returns None for a missing or unparseable value; a date in the past gives 0.
    *now* is epoch seconds (default: the current time).
    """
    if value is None:
        return None
    if _DELTA.match(value):
        seconds = float(int(value))
    else:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        seconds = email.utils.mktime_tz(parsed) - (time.time() if now is None else now)
    return min(max(seconds, 0.0), cap)


class SyncRetry(Retry):
    """urllib3 ``Retry`` that knows its :class:`RetryConfig`.

    ``len(history)`` is the number of failed attempts so far, so after the
    k-th failure :meth:`get_backoff_time` is the wait before retry k.
    """

    def __init__(self, *args: Any, retry_config: Optional[RetryConfig] = None,
                 rng: Optional[random.Random] = None, **kwargs: Any) -> None:
        self.retry_config = retry_config or RetryConfig()
        self.rng = rng
        super().__init__(*args, **kwargs)

    def new(self, **kw: Any) -> "SyncRetry":
        kw.setdefault("retry_config", self.retry_config)
        kw.setdefault("rng", self.rng)
        return super().new(**kw)

    @property
    def attempts(self) -> int:
        """Attempts made so far, counting the first (after the latest increment)."""
        return len(self.history) + 1

    def get_backoff_time(self) -> float:
        if not self.history:
            return 0.0
        return retry_delay(self.retry_config, len(self.history), self.rng)

    def parse_retry_after(self, retry_after: str) -> float:
        seconds = parse_retry_after(retry_after, self.retry_config.retry_after_max)
        if seconds is None:
            raise InvalidHeader(f"Invalid Retry-After header: {retry_after}")
        return seconds

    def next_wait(self, retry_after: Optional[str] = None) -> float:
        """The wait before the next attempt: a server's Retry-After (capped) wins over the backoff."""
        if retry_after is not None and self.respect_retry_after_header:
            seconds = parse_retry_after(retry_after, self.retry_config.retry_after_max)
            if seconds is not None:
                return seconds
        return self.get_backoff_time()

    def sleep(self, response: Any = None) -> None:  # pragma: no cover - waits belong to the caller
        raise NotImplementedError("SyncRetry does not sleep; wait on an Event for next_wait()")


def build_retry(config: RetryConfig, rng: Optional[random.Random] = None) -> SyncRetry:
    """The urllib3 Retry for *config*: ``max_attempts - 1`` retries of any method on
    connection errors and the configured statuses; redirects are not its business."""
    return SyncRetry(
        total=config.max_attempts - 1,
        connect=None,
        read=None,
        redirect=False,
        status=None,
        other=None,
        allowed_methods=None,  # callers opt in per request; webhooks carry an idempotency id
        status_forcelist=frozenset(config.retry_on_status),
        raise_on_status=False,
        raise_on_redirect=False,
        respect_retry_after_header=True,
        retry_config=config,
        rng=rng,
    )


__all__ = [
    "SyncRetry",
    "apply_jitter",
    "backoff_delay",
    "build_retry",
    "parse_retry_after",
    "retry_delay",
]
