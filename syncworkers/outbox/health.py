"""Endpoint health, as Svix and Convoy keep it: which endpoint a delivery goes to, and what
each attempt says about that endpoint. Pure: no I/O, times passed in.

An endpoint is the host (and port) plus path of a delivery's URL: the receiver, whatever
query string or credentials the URL carries. An endpoint that has only failed for
``disable_after`` seconds, or that answered 410 Gone, is disabled: the outbox holds its
deliveries (not attempted, not lost) until ``syncworkers outbox enable`` releases them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Iterable, Optional, Tuple
from urllib.parse import urlsplit

from ..config.defaults import DEFAULT_DISABLE_AFTER  # noqa: F401 - the default of WebhookConfig.disable_after
from ..exceptions import safe_url
from ..http.hosts import netloc
from ..http.outcome import Kind

#: Attempts kept in each delivery's attempt log (the oldest are dropped).
ATTEMPT_LOG_SIZE = 20
#: Bytes of each answer's body kept in the attempt log.
ANSWER_BYTES = 4096

#: What an attempt says about its endpoint: it answered well, it failed, it is gone.
OK, FAILED, GONE = "ok", "failed", "gone"

#: Kinds that say nothing about the endpoint: nothing was sent, or no answer was awaited.
_SILENT = frozenset({Kind.CIRCUIT_OPEN.value, Kind.INTERRUPTED.value, Kind.INVALID.value})


def endpoint_of(url: str) -> str:
    """The endpoint a delivery URL names: ``host[:port]/path`` (no scheme, credentials or query)."""
    try:
        parts = urlsplit(url)
        host = netloc(parts)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    return f"{host}{parts.path or '/'}"


def shown(endpoint: str) -> str:
    """*endpoint* as printed: secret path segments masked as :func:`~syncworkers.exceptions.safe_url` does
    (with its host: a known webhook URL shape is masked whole)."""
    masked = safe_url(f"http://{endpoint}") or ""
    if masked.startswith("http://"):
        return masked[len("http://"):]
    host, _, path = endpoint.partition("/")  # not a host safe_url can read: the path alone
    return host + (safe_url(f"http://host/{path}") or "")[len("http://host"):]


def effect(kind: str) -> Optional[str]:
    """:data:`OK`, :data:`FAILED` or :data:`GONE` for an attempt of this Kind; None when it says nothing."""
    if kind == Kind.SUCCESS.value:
        return OK
    if kind == Kind.GONE.value:
        return GONE
    if kind in _SILENT:
        return None
    return FAILED


@dataclass(frozen=True)
class EndpointHealth:
    """An endpoint's state; times are epoch seconds."""

    endpoint: str  #: host[:port]/path
    disabled_at: Optional[float] = None  #: when it was disabled; None while enabled
    reason: Optional[str] = None  #: why it was disabled
    failing_since: Optional[float] = None  #: first failure since the last success; None if not failing
    last_failure_at: Optional[float] = None
    last_status: Optional[int] = None  #: status of the last failure (None: no answer)
    held: int = 0  #: deliveries held while disabled

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


def observe(health: EndpointHealth, kind: str, status: Optional[int], at: float,
            disable_after: Optional[float]) -> EndpointHealth:
    """*health* after an attempt of Kind *kind* at *at*: a success ends a failing streak, a 410
    disables at once, a failure disables once the streak is *disable_after* seconds old (None: never)."""
    what = effect(kind)
    if what is None:
        return health
    if what == OK:
        return replace(health, failing_since=None)
    since = health.failing_since if health.failing_since is not None else at
    health = replace(health, failing_since=since, last_failure_at=at, last_status=status)
    if not health.enabled:
        return health
    if what == GONE:
        return replace(health, disabled_at=at, reason=f"status {status or 410} Gone")
    if disable_after is not None and at - since >= disable_after:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        return replace(health, disabled_at=at, reason=f"only failures since {started}"
                                                      f" ({_days(at - since)})")
    return health


#: An attempt as its endpoint's health sees it: ``(delivery id, kind, status, at)``.
Observation = Tuple[str, str, Optional[int], float]


@dataclass(frozen=True)
class Observed:
    """An endpoint's health before and after a batch of attempts, and what the store does about it."""

    before: EndpointHealth
    after: EndpointHealth
    disabled: bool = False  #: the batch disabled it: every pending delivery of the endpoint is held
    hold: Tuple[str, ...] = ()  #: deliveries attempted while it was disabled already: held if pending
    counted: int = 0  #: attempts that said something about the endpoint (see :func:`effect`)

    def quiet(self, stored: bool) -> bool:
        """True when the store has nothing to write: the health is unchanged, nothing is held, and the
        endpoint's row is *stored* already (or no attempt said anything about the endpoint)."""
        return self.after == self.before and not self.disabled and not self.hold and (stored or not self.counted)


def observe_all(health: EndpointHealth, attempts: Iterable[Observation],
                disable_after: Optional[float]) -> Observed:
    """:func:`observe` over *attempts* ``(delivery id, kind, status, at)`` to one endpoint, in the order
    they ended, as if each were recorded alone: the one that disables the endpoint holds its pending
    deliveries; one attempted while it was disabled already holds its own delivery."""
    before, disabled, hold, counted = health, False, [], 0
    for id, kind, status, at in attempts:
        if effect(kind) is None:
            continue
        counted += 1
        after = observe(health, kind, status, at, disable_after)
        if health.enabled and not after.enabled:
            disabled = True
        elif not after.enabled:
            hold.append(id)
        health = after
    return Observed(before, health, disabled, tuple(hold), counted)


def _days(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} s"


__all__ = ["ANSWER_BYTES", "ATTEMPT_LOG_SIZE", "DEFAULT_DISABLE_AFTER", "EndpointHealth", "FAILED", "GONE",
           "OK", "Observation", "Observed", "effect", "endpoint_of", "observe", "observe_all", "shown"]
