"""The syncworkers exception tree.

Every error the toolkit raises derives from :class:`SyncWorkersError`. Errors
that concern a request carry context (``url``, ``method``, ``status``,
``attempts``, ``cause``) but never headers or bodies, so their text is safe to
log: secrets travel in headers and never reach an exception message.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .observability.redaction import safe_url


class SyncWorkersError(Exception):
    """Root of every error raised by syncworkers."""


class ConfigError(SyncWorkersError, ValueError):
    """A configuration value (argument, config field or environment variable) is invalid.

    ``errors`` maps each offending name to its message, so that every bad
    environment variable is reported at once.
    """

    def __init__(self, message: str, errors: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.errors = dict(errors or {})


class UnknownOptionError(ConfigError, TypeError):
    """A config object or worker was given a keyword it does not know."""


class RequestError(SyncWorkersError):
    """An HTTP request did not produce a usable response."""

    def __init__(
        self,
        message: str,
        *,
        url: Optional[str] = None,
        method: Optional[str] = None,
        status: Optional[int] = None,
        attempts: int = 0,
        cause: Optional[BaseException] = None,
    ) -> None:
        self.url = safe_url(url)
        self.method = method
        self.status = status
        self.attempts = attempts
        self.cause = cause
        super().__init__(message)

    def __str__(self) -> str:
        text = super().__str__()
        context = []
        if self.method or self.url:
            context.append(f"{self.method or ''} {self.url or ''}".strip())
        if self.status is not None:
            context.append(f"status={self.status}")
        if self.attempts:
            context.append(f"attempts={self.attempts}")
        if self.cause is not None:
            # Only the type: a cause's own text may quote a full URL with its query string.
            context.append(f"cause={type(self.cause).__name__}")
        return f"{text} ({', '.join(context)})" if context else text


class TransportError(RequestError):
    """The connection failed: refused, reset, closed early, or a protocol error."""


class RequestTimeout(TransportError):
    """The connect or read timeout expired."""


class BlockedAddressError(TransportError):
    """The destination resolved to an address the SSRF guard refuses; nothing was sent."""


class ResponseTooLarge(RequestError):
    """The response body exceeded the configured size cap."""


class BodyDecodeError(RequestError, ValueError):
    """A response's body could not be decoded as its content type says (invalid JSON or charset, too deep).

    A poll delivers such a body as text all the same; this error marks the poll failed.
    """


class CircuitOpenError(RequestError):
    """The host's circuit is open: the request was refused without touching the network."""

    def __init__(self, message: str, *, host: Optional[str] = None, remaining: float = 0.0,
                 **kw: Any) -> None:
        self.host = host
        self.remaining = remaining
        super().__init__(message, **kw)


class RetryInterrupted(RequestError):
    """A retry wait was cut short because the caller asked to stop (shutdown or fail_fast)."""


class DeliveryError(RequestError):
    """A webhook was not delivered: a non-2xx answer after every allowed attempt."""


class PaginationError(RequestError):
    """A paginated poll went wrong: a page seen twice in one tick (a loop), or a next link refused."""


class StateStoreError(SyncWorkersError):
    """The poller state store (incremental cursors) could not be read or written."""


class SignatureError(SyncWorkersError, ValueError):
    """A webhook signature, id or timestamp did not verify."""


class WorkerError(SyncWorkersError):
    """A worker was used in a way its lifecycle does not allow (e.g. started twice)."""


class OutboxError(SyncWorkersError):
    """The outbox could not store a delivery (disk full, file corrupted or gone, database down).

    Nothing was stored: the caller still has the webhook and may try again.
    """


__all__ = [
    "SyncWorkersError",
    "ConfigError",
    "UnknownOptionError",
    "RequestError",
    "TransportError",
    "RequestTimeout",
    "BlockedAddressError",
    "ResponseTooLarge",
    "BodyDecodeError",
    "CircuitOpenError",
    "RetryInterrupted",
    "DeliveryError",
    "PaginationError",
    "StateStoreError",
    "SignatureError",
    "WorkerError",
    "OutboxError",
    "safe_url",
]
