"""The transport seam: what HTTPClient needs from an HTTP library, and the rules both share.

A transport sends one :class:`~syncworkers.http.messages.Request` (one attempt:
retries, breakers, limits, redirects and waits belong to HTTPClient) and returns a
:class:`~syncworkers.http.messages.Response` with the whole body read, or raises an
error from :mod:`syncworkers.exceptions`:
RequestTimeout (connect, read or the total deadline), TransportError,
ResponseTooLarge, BlockedAddressError (the SSRF guard refused the address) or ConfigError (a URL it
cannot send to).
"""

from __future__ import annotations

from typing import Protocol, Tuple, Union

from ...exceptions import RequestTimeout, ResponseTooLarge
from ..messages import Request, Response

#: (connect, read) seconds, or one number for both.
Timeout = Union[float, Tuple[float, float]]
Timeouts = Tuple[float, float]


class Transport(Protocol):
    """One HTTP library behind HTTPClient; thread-safe: every pool thread sends through it."""

    #: "requests" or "curl".
    name: str

    def send(self, request: Request, *, url: str) -> Response:
        """Send *request*, connect to last byte within ``request.deadline`` seconds.

        Never follows a redirect: HTTPClient does (the same rules for every transport).
        *url* is what errors name (the caller's URL, before params).
        """

    def close(self) -> None:
        """Close pooled connections (the transport stays usable: it reconnects)."""


def as_timeouts(timeout: Timeout) -> Timeouts:
    """(connect, read) from one number or a pair."""
    if isinstance(timeout, tuple):
        return float(timeout[0]), float(timeout[1])
    return float(timeout), float(timeout)


def deadline_exceeded(deadline: float, url: str, method: str,
                      cause: BaseException | None = None) -> RequestTimeout:
    """The error of an attempt that ran past its total deadline."""
    return RequestTimeout(f"deadline of {deadline:g}s exceeded", url=url, method=method, cause=cause)


def too_large(cap: int, url: str, method: str, status: int, length: str | None = None) -> ResponseTooLarge:
    """The error of a body over ``max_response_size`` (*length*: a Content-Length that says so).

    A *length* within the cap is not quoted: the body grew past it as it was decoded (a
    gzip bomb), and the cap is what was exceeded.
    """
    if length is not None and length.isdigit() and int(length) > cap:
        return ResponseTooLarge(f"response body of {length} bytes exceeds {cap}", url=url, method=method,
                                status=status)
    return ResponseTooLarge(f"response body exceeds {cap} bytes", url=url, method=method, status=status)


__all__ = ["Timeout", "Timeouts", "Transport", "as_timeouts", "deadline_exceeded", "too_large"]
