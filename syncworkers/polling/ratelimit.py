"""Rate-limit budgets per host, shared by every poller of a process.

Every response updates its host's budget from ``Retry-After`` (on 429 and
503), ``RateLimit-Remaining``/``RateLimit-Reset``, ``X-RateLimit-Remaining``/
``X-RateLimit-Reset`` or the structured ``RateLimit: remaining=0, reset=30``
/ ``RateLimit: "default";r=0;t=30`` forms. A reset is delta seconds, or an
epoch timestamp when it is that large (seconds, or milliseconds). When the
remaining count reaches 0 the host is blocked until the reset.

Pollers ask :meth:`RateLimits.gate` before each request: it waits for the
reset when that is no further than the caller allows (on the caller's stop
event, so ``stop()`` is prompt), and otherwise tells the caller to skip — no
thread ever sleeps for hours. Deadlines are kept on a monotonic clock; the
wall clock only converts epoch resets. Both are injected for tests.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple

from ..exceptions import ConfigError
from ..http.breaker import breaker_key
from ..http.retry import parse_retry_after

#: A reset above this is an epoch timestamp in seconds (2001-09-09), else delta seconds.
EPOCH_SECONDS_FROM = 1_000_000_000
#: A reset above this is an epoch timestamp in milliseconds.
EPOCH_MILLISECONDS_FROM = 1_000_000_000_000
#: Statuses whose Retry-After blocks the host (on a 3xx it means something else).
RETRY_AFTER_STATUSES = frozenset({429, 503})

Waiter = Callable[[threading.Event, float], bool]

_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_STRUCTURED = {
    "remaining": re.compile(rf"(?:^|[;,\s])(?:remaining|r)\s*=\s*({_NUMBER})", re.I),
    "reset": re.compile(rf"(?:^|[;,\s])(?:reset|t)\s*=\s*({_NUMBER})", re.I),
}


def _wait(event: threading.Event, seconds: float) -> bool:
    return event.wait(seconds)


def _header(lowered: Mapping[str, str], *names: str) -> Optional[str]:
    """The first of *names* (lowercase) present and not blank in *lowered* (lowercase keys)."""
    for name in names:
        value = lowered.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


def _number(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    try:
        return float(text.split(",")[0].strip())  # "0, 0;w=60": the first (tightest) policy
    except ValueError:
        return None


def reset_seconds(value: str, wall_now: float) -> Optional[float]:
    """Seconds until a ``*-Reset`` value: delta seconds, an epoch timestamp (s or ms), or an HTTP date."""
    number = _number(value)
    if number is None:
        return parse_retry_after(value, float("inf"), now=wall_now)
    if number >= EPOCH_MILLISECONDS_FROM:
        return max(0.0, number / 1000.0 - wall_now)
    if number >= EPOCH_SECONDS_FROM:
        return max(0.0, number - wall_now)
    return max(0.0, number)


def blocked_seconds(status: int, headers: Mapping[str, str], wall_now: float) -> Optional[float]:
    """How long a response says its host must not be called (0: the budget is fine; None: it does not say)."""
    lowered: Mapping[str, str]
    if callable(getattr(headers, "lower_items", None)):
        lowered = headers  # case-insensitive already (a response's Headers, requests' CaseInsensitiveDict)
    else:
        lowered = {k.lower(): v for k, v in headers.items()}  # once per response: it is read up to four times
    if status in RETRY_AFTER_STATUSES:
        retry_after = _header(lowered, "retry-after")
        seconds = parse_retry_after(retry_after, float("inf"), now=wall_now) if retry_after else None
        if seconds is not None:
            return seconds
    remaining = _number(_header(lowered, "ratelimit-remaining", "x-ratelimit-remaining"))
    reset = _header(lowered, "ratelimit-reset", "x-ratelimit-reset")
    structured = _header(lowered, "ratelimit")
    if remaining is None and structured is not None:
        found = _STRUCTURED["remaining"].search(structured)
        remaining = float(found.group(1)) if found else None
        found = _STRUCTURED["reset"].search(structured)
        reset = reset or (found.group(1) if found else None)
    if remaining is None:
        return None
    if remaining > 0:
        return 0.0
    if reset is None:
        return None  # spent, but no word on when it comes back: let the server's 429s speak
    return reset_seconds(reset, wall_now)


@dataclass
class _Host:
    blocked_until: float = 0.0
    warned: bool = False
    skipped: int = 0


class RateLimits:
    """The budgets of every host a process polls (thread-safe); see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 wait: Waiter = _wait) -> None:
        for arg, value in (("clock", clock), ("wall", wall), ("wait", wait)):
            if not callable(value):
                raise ConfigError(f"{arg} must be callable, got {value!r}", {arg: "must be callable"})
        self._clock = clock
        self._wall = wall
        self._wait = wait
        self._hosts: Dict[str, _Host] = {}
        self._lock = threading.Lock()

    def update(self, url: str, status: int, headers: Mapping[str, str]) -> None:
        """Read a response's rate-limit headers into its host's budget."""
        seconds = blocked_seconds(status, headers, self._wall())
        if seconds is None:
            return
        key = breaker_key(url)
        with self._lock:
            host = self._hosts.setdefault(key, _Host())
            # The latest answer wins: it knows best when the window resets.
            host.blocked_until = self._clock() + seconds if seconds > 0 else 0.0

    def blocked_for(self, url: str) -> float:
        """Seconds before *url*'s host may be called again (0 when it may now)."""
        with self._lock:
            host = self._hosts.get(breaker_key(url))
            return 0.0 if host is None else max(0.0, host.blocked_until - self._clock())

    def gate(self, url: str, max_wait: float, stop: threading.Event) -> Tuple[bool, float]:
        """Before a request to *url*: ``(True, waited)`` when it may go, ``(False, remaining)`` to skip.

        Waits (on *stop*) when the host is blocked for at most *max_wait*
        seconds; a stop during that wait returns ``(False, 0.0)``.
        """
        if not self._hosts:  # no answer ever spoke of a budget: nothing to look up or wait for
            return True, 0.0
        remaining = self.blocked_for(url)
        if remaining <= 0:
            self._recovered(url)
            return True, 0.0
        if remaining > max_wait:
            with self._lock:
                self._hosts[breaker_key(url)].skipped += 1
            return False, remaining
        if self._wait(stop, remaining):
            return False, 0.0
        self._recovered(url)
        return True, remaining

    def first_warning(self, url: str) -> bool:
        """True once per blocked spell of *url*'s host: whoever gets it logs the one WARNING."""
        with self._lock:
            host = self._hosts.setdefault(breaker_key(url), _Host())
            first, host.warned = not host.warned, True
            return first

    def skipped(self, url: str) -> int:
        """Requests to *url*'s host skipped because its budget was spent (all pollers together)."""
        with self._lock:
            host = self._hosts.get(breaker_key(url))
            return 0 if host is None else host.skipped

    def reset(self) -> None:
        """Forget every budget."""
        with self._lock:
            self._hosts.clear()

    def _recovered(self, url: str) -> None:
        with self._lock:
            host = self._hosts.get(breaker_key(url))
            if host is not None:
                host.warned = False


#: The budgets shared by every poller of this process that is not given its own.
shared_rate_limits = RateLimits()


__all__ = [
    "EPOCH_MILLISECONDS_FROM",
    "EPOCH_SECONDS_FROM",
    "RateLimits",
    "blocked_seconds",
    "reset_seconds",
    "shared_rate_limits",
]
