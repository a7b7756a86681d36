"""What one HTTP attempt came to: the one classifier of responses and errors.

Every caller that needs to know whether an answer was a success, worth
retrying, final, or a mark against the host asks this module: the in-call
retries (:mod:`syncworkers.http.client`), the outbox schedule (:mod:`syncworkers.delivery.dispatch`),
the circuit breakers (:mod:`syncworkers.http.breaker`) and the webhook results.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Tuple

from ..exceptions import (
    BlockedAddressError,
    CircuitOpenError,
    ConfigError,
    RequestError,
    ResponseTooLarge,
    RetryInterrupted,
    TransportError,
)

#: Statuses worth another attempt: timeout, too early, throttled, transient server errors.
RETRY_STATUSES = (408, 425, 429, 500, 502, 503, 504)
#: Statuses whose ``Retry-After`` postpones the next outbox attempt without spending one.
RETRY_AFTER_STATUSES = (429, 503)


class Kind(str, enum.Enum):
    """The class of an attempt's result."""

    SUCCESS = "success"  #: a 2xx answer (also one whose body was too large to read)
    RETRYABLE = "retryable"  #: a status in the retry set, or a transport error or timeout
    UNEXPECTED = "unexpected"  #: 3xx (never followed), other 5xx, an oversized non-2xx answer
    REFUSED = "refused"  #: a 4xx outside the retry set: the receiver will not take it
    GONE = "gone"  #: 410: the receiver asks never to be sent this again
    CIRCUIT_OPEN = "circuit_open"  #: refused by the host's open circuit; nothing was sent
    SATURATED = "saturated"  #: the host had max_in_flight_per_host attempts on the wire; nothing was sent
    INTERRUPTED = "interrupted"  #: stopped (shutdown, fail_fast) before an answer
    INVALID = "invalid"  #: the request can never be sent (an invalid stored URL, an address the SSRF guard refuses)


#: Kinds no later attempt can change.
FINAL_KINDS = frozenset({Kind.REFUSED, Kind.GONE, Kind.INVALID})


def is_host_failure(status: int) -> bool:
    """True for statuses that count against a host's circuit: 5xx and 429 (other 4xx are the caller's)."""
    return status == 429 or 500 <= status <= 599


def is_poll_success(status: Optional[int]) -> bool:
    """True for the answer of a successful poll: a 2xx (:data:`Kind.SUCCESS`), or 304 Not Modified
    (a conditional poll: nothing new, nothing wrong)."""
    return status is not None and (200 <= status < 300 or status == 304)


def status_class(status: int) -> Optional[str]:
    """``"2xx"`` … ``"5xx"`` for an HTTP status, None outside 100-599.

    A lone 1xx never ends a request (it is interim): it counts with 2xx.
    """
    if not 100 <= status < 600:
        return None
    return f"{max(2, status // 100)}xx"


@dataclass(frozen=True)
class Outcome:
    """One attempt's result; texts carry no header values, bodies or URL secrets."""

    kind: Kind
    status_code: Optional[int] = None  #: the answer's status; None when no answer came
    error: Optional[str] = None  #: why it failed; None on success
    retry_after: Optional[float] = None  #: seconds the answer's Retry-After asked for, uncapped
    circuit_remaining: Optional[float] = None  #: with CIRCUIT_OPEN: seconds until a probe
    host_failure: bool = False  #: counts against the host's circuit breaker

    @property
    def ok(self) -> bool:
        return self.kind is Kind.SUCCESS

    @property
    def final(self) -> bool:
        """No later attempt can succeed (a refusing 4xx, 410, an invalid request)."""
        return self.kind in FINAL_KINDS

    @property
    def sent(self) -> bool:
        """Whether the request may have reached the receiver."""
        return self.kind not in (Kind.CIRCUIT_OPEN, Kind.SATURATED, Kind.INVALID)


def classify_status(status: int, reason: str = "", *, retry_after: Optional[float] = None,
                    retry_statuses: Tuple[int, ...] = RETRY_STATUSES) -> Outcome:
    """The outcome of an answer with *status* (redirects are never followed here)."""
    reason = f" {reason}" if reason else ""
    host_failure = is_host_failure(status)
    if 200 <= status < 300:
        return Outcome(Kind.SUCCESS, status)
    error = f"status {status}{reason}"
    if status in retry_statuses:
        kind = Kind.RETRYABLE
    elif 300 <= status < 400:
        kind, error = Kind.UNEXPECTED, f"{error}: redirects are not followed"
    elif status == 410:
        kind = Kind.GONE
    elif 400 <= status < 500:
        kind = Kind.REFUSED
    else:
        kind = Kind.UNEXPECTED
    return Outcome(kind, status, error, retry_after=retry_after, host_failure=host_failure)


def classify_error(exc: BaseException) -> Outcome:
    """The outcome of an exception raised by an attempt (ours, from syncworkers.exceptions)."""
    if isinstance(exc, CircuitOpenError):
        return Outcome(Kind.CIRCUIT_OPEN, error=str(exc), circuit_remaining=exc.remaining)
    if isinstance(exc, RetryInterrupted):
        return Outcome(Kind.INTERRUPTED, error=f"interrupted: {exc}")
    if isinstance(exc, ResponseTooLarge):
        status = exc.status
        if status is not None and 200 <= status < 300:
            # The receiver accepted the request; only its answer was too large to read.
            return Outcome(Kind.SUCCESS, status)
        return Outcome(Kind.UNEXPECTED, status, str(exc), host_failure=True)
    if isinstance(exc, BlockedAddressError):
        # The SSRF guard refused the destination before anything was sent: no later attempt can pass.
        return Outcome(Kind.INVALID, error=str(exc))
    if isinstance(exc, TransportError):
        return Outcome(Kind.RETRYABLE, exc.status, str(exc), host_failure=True)
    if isinstance(exc, ConfigError):
        return Outcome(Kind.INVALID, error=f"invalid request: {exc}")
    if isinstance(exc, RequestError):  # e.g. too many redirects: the host answered
        return Outcome(Kind.UNEXPECTED, exc.status, str(exc))
    return Outcome(Kind.UNEXPECTED, error=f"unexpected error: {type(exc).__name__}")


__all__ = [
    "FINAL_KINDS",
    "Kind",
    "Outcome",
    "RETRY_AFTER_STATUSES",
    "RETRY_STATUSES",
    "classify_error",
    "classify_status",
    "is_host_failure",
    "is_poll_success",
    "status_class",
]
