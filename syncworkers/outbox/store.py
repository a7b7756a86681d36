"""The outbox store interface: what every outbox backend (SQLite, PostgreSQL) provides.

A store keeps deliveries and their state; it sends nothing. The dispatcher
(:mod:`syncworkers.delivery.dispatch`) claims due deliveries, sends them and settles each
claim with an outcome. Every store gives the same guarantees: ``add`` is durable
before it returns (for a durable store), a claim is a lease held by one owner at
a time, an expired lease is taken over, and a delivery leaves the store's
schedule only as delivered or dead.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple, Type

from ..message import owner_id
from ..observability.redaction import redact_headers, safe_url
from .health import EndpointHealth

PENDING, IN_FLIGHT, DELIVERED, DEAD = "pending", "in_flight", "delivered", "dead"
#: Waiting for its endpoint to be enabled again: never claimed, no attempt spent (see outbox.health).
HELD = "held"
STATES = (PENDING, IN_FLIGHT, DELIVERED, DEAD, HELD)

#: Seconds a claim stays valid unless renewed; a dead owner's claims are taken over after it.
DEFAULT_LEASE_SECONDS = 10.0

#: The outbox's table, in SQLite as in PostgreSQL; its attempt log and its endpoints' health are
#: ``<table>_attempts`` and ``<table>_endpoints``. One prefix, in a database the outbox shares with an app.
DEFAULT_TABLE = "syncworkers_outbox"


def table_names(table: str = DEFAULT_TABLE) -> Dict[str, str]:
    """The outbox's tables: ``t`` the deliveries, ``a`` their attempt log, ``e`` the endpoints' health."""
    return {"t": table, "a": f"{table}_attempts", "e": f"{table}_endpoints"}


@dataclass
class Delivery:
    """One webhook delivery as stored in the outbox (timestamps are epoch seconds).

    ``repr()`` shows neither body nor headers, and the URL without its query string.
    """

    id: str
    endpoint: str
    url: str
    body: bytes = field(repr=False)
    headers: Dict[str, str] = field(repr=False)
    state: str
    attempts: int
    next_attempt_at: float
    created_at: float
    updated_at: float
    last_status: Optional[int]
    last_error: Optional[str]
    owner: Optional[str]
    lease_until: Optional[float]
    delivered_at: Optional[float]
    #: The trace context ``enqueue()`` kept (W3C ``traceparent``/``tracestate``): its attempts continue it.
    trace_context: Optional[Dict[str, str]] = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (
            f"Delivery(id={self.id!r}, endpoint={self.endpoint!r}, url={safe_url(self.url)!r},"
            f" state={self.state!r}, attempts={self.attempts}, next_attempt_at={self.next_attempt_at},"
            f" last_status={self.last_status!r})"
        )

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly form for the CLI.

        The body is text when it is UTF-8, else base64 (``body_encoding`` says which).
        Secret-looking header values and the URL's query string are redacted.
        """
        try:
            body, encoding = self.body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(self.body).decode("ascii"), "base64"
        headers = redact_headers(self.headers)
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "url": safe_url(self.url),
            "body": body,
            "body_encoding": encoding,
            "headers": headers,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "owner": self.owner,
            "lease_until": self.lease_until,
            "delivered_at": self.delivered_at,
            "trace_context": self.trace_context,
        }


@dataclass(frozen=True)
class Attempt:
    """One attempt of a delivery, as its attempt log keeps it (times in epoch seconds)."""

    at: float  #: when the attempt started
    duration: float  #: seconds it took
    kind: str  #: the outcome's :class:`~syncworkers.http.outcome.Kind` value
    status: Optional[int] = None  #: the answer's status; None when no answer came
    error: Optional[str] = None  #: why it failed (no secrets: an Outcome's error text)
    body: bytes = field(default=b"", repr=False)  #: the answer's first bytes (ANSWER_BYTES at most)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly form for the CLI: the body as text (undecodable bytes replaced)."""
        return {"at": self.at, "duration": self.duration, "kind": self.kind, "status": self.status,
                "error": self.error, "body": self.body.decode("utf-8", "replace")}


def default_owner() -> str:
    """A name for this process's claims, unique across machines and restarts (:func:`~syncworkers.message.owner_id`)."""
    return owner_id()


def check_new_delivery(url: str, body: bytes, headers: Optional[Dict[str, str]]) -> Dict[str, str]:
    """Validate what ``add()`` is given (TypeError/ValueError); the headers as a new dict."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    if not url:
        raise ValueError("url is empty")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"body must be bytes, got {type(body).__name__}")
    headers = dict(headers or {})
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"header names and values must be str (header {key!r})")
    return headers


def trace_text(trace_context: Optional[Mapping[str, str]]) -> Optional[str]:
    """A delivery's trace context as its column holds it: JSON of its ``traceparent``/``tracestate``, or NULL."""
    if not trace_context:
        return None
    kept = {name: value for name, value in trace_context.items()
            if name in ("traceparent", "tracestate") and isinstance(value, str)}
    return json.dumps(kept) if kept else None


def trace_of(text: Optional[str]) -> Optional[Dict[str, str]]:
    """The trace context a column holds (:func:`trace_text`); None for NULL or a value that is not one."""
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) and found else None


def attempt_of(row: Sequence[Any]) -> Attempt:
    """An attempt log row (``at, duration, kind, status, error, body``) as an Attempt."""
    return Attempt(at=row[0], duration=row[1], kind=row[2], status=row[3], error=row[4], body=bytes(row[5]))


def health_of(row: Sequence[Any], held: int = 0) -> EndpointHealth:
    """An endpoints row (``target, disabled_at, reason, failing_since, last_failure_at, last_status``)."""
    return EndpointHealth(endpoint=row[0], disabled_at=row[1], reason=row[2], failing_since=row[3],
                          last_failure_at=row[4], last_status=row[5], held=held)


def counts_of(rows: Iterable[Sequence[Any]]) -> Dict[str, int]:
    """``counts()`` from ``(state, count)`` rows: pending includes those in flight."""
    by_state = {state: 0 for state in STATES}
    by_state.update({row[0]: int(row[1]) for row in rows})
    return {
        "pending": by_state[PENDING] + by_state[IN_FLIGHT],
        "in_flight": by_state[IN_FLIGHT],
        "delivered": by_state[DELIVERED],
        "dead": by_state[DEAD],
        "held": by_state[HELD],
    }


def next_delay(schedule: Sequence[float], attempts_made: int) -> Optional[float]:
    """Seconds to wait before the next attempt, or None when the schedule is exhausted.

    Attempt 1 is at once; after attempt ``n`` the next waits ``schedule[n-1]``, so a
    schedule of k delays allows k + 1 attempts in all.
    """
    if attempts_made < 0:
        raise ValueError(f"attempts_made must be >= 0, got {attempts_made!r}")
    if attempts_made == 0:
        return 0.0
    if attempts_made > len(schedule):
        return None
    return float(schedule[attempts_made - 1])


class OutboxStore(Protocol):
    """The operations the dispatcher, the worker and the CLI use; times are epoch seconds.

    ``now`` arguments exist for tests; without them a store takes times from its
    clock (the database server's, for PostgreSQL). ``errors`` are the exceptions
    its operations raise when the store cannot do them now (database unreachable
    or locked, store closed): callers that must survive those catch exactly these.

    Given an ``attempt``, the ``mark_*`` methods also append it to the delivery's
    attempt log (the last ATTEMPT_LOG_SIZE kept) and update its endpoint's health
    in the same transaction: an endpoint disabled then (410, or only failures for
    ``disable_after`` seconds) has its pending deliveries held, and deliveries
    added, replayed or released for a disabled endpoint are held too.
    ``counts()`` gives pending (in flight included), in_flight, delivered, dead and held.
    ``add``'s ``trace_context`` (``traceparent``/``tracestate``) is kept with the delivery and
    given back on it (``Delivery.trace_context``).
    """

    owner: str
    durable: bool
    lease_seconds: float
    path: Optional[str]  #: where the store lives, for display (never with a password)
    errors: Tuple[Type[BaseException], ...]

    @property
    def clock(self) -> Callable[[], float]: ...

    def add(self, endpoint: str, url: str, body: bytes, headers: Optional[Dict[str, str]] = None,
            id: Optional[str] = None, now: Optional[float] = None, *, connection: Any = None,
            trace_context: Optional[Mapping[str, str]] = None) -> str: ...

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]: ...

    def claim_due(self, limit: int, now: Optional[float] = None) -> List[Delivery]: ...

    def renew(self, ids: Sequence[str], now: Optional[float] = None) -> None: ...

    def mark_delivered(self, id: str, status: Optional[int], now: Optional[float] = None, *,
                       attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None: ...

    def mark_retry(self, id: str, next_attempt_at: float, error: Optional[str], status: Optional[int] = None,
                   spend_attempt: bool = True, now: Optional[float] = None, *,
                   attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None: ...

    def mark_dead(self, id: str, reason: str, status: Optional[int] = None, spend_attempt: bool = True,
                  now: Optional[float] = None, *,
                  attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None: ...

    def release(self, ids: Optional[Sequence[str]] = None) -> int: ...

    def replay(self, ids: Optional[Sequence[str]] = None, endpoint: Optional[str] = None,
               since: Optional[float] = None, now: Optional[float] = None) -> int: ...

    def purge(self, older_than: float, state: str = DELIVERED, now: Optional[float] = None) -> int: ...

    def get(self, id: str) -> Optional[Delivery]: ...

    def list(self, state: Optional[str] = None, endpoint: Optional[str] = None,
             since: Optional[float] = None, limit: int = 100) -> List[Delivery]: ...

    def counts(self) -> Dict[str, int]: ...

    def attempts(self, id: str) -> List[Attempt]: ...

    def last_attempts(self, ids: Sequence[str]) -> Dict[str, Attempt]: ...

    def endpoints(self) -> List[EndpointHealth]: ...

    def enable_endpoint(self, endpoint: str, now: Optional[float] = None) -> int: ...

    def oldest_pending(self) -> Optional[float]: ...

    def next_due(self) -> Optional[float]: ...

    def close(self) -> None: ...


__all__ = ["PENDING", "IN_FLIGHT", "DELIVERED", "DEAD", "HELD", "STATES", "DEFAULT_LEASE_SECONDS", "DEFAULT_TABLE",
           "Attempt", "Delivery", "OutboxStore", "next_delay", "table_names"]
