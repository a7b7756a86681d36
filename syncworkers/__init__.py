"""syncworkers: synchronous, thread-pool HTTP workers — pollers and webhook senders, zero asyncio."""

import logging as _logging

__version__ = "0.1.0"

from .config import (  # noqa: E402
    CircuitBreakerConfig,
    HTTPClientConfig,
    PollerConfig,
    RetryConfig,
    RetryStrategy,
    WebhookConfig,
)
from .exceptions import (  # noqa: E402
    CircuitOpenError,
    ConfigError,
    DeliveryError,
    RequestError,
    RequestTimeout,
    ResponseTooLarge,
    RetryInterrupted,
    SignatureError,
    SyncWorkersError,
    TransportError,
    UnknownOptionError,
    WorkerError,
)
from .message import Message  # noqa: E402

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "__version__",
    "CircuitBreakerConfig",
    "HTTPClientConfig",
    "PollerConfig",
    "RetryConfig",
    "RetryStrategy",
    "WebhookConfig",
    "CircuitOpenError",
    "ConfigError",
    "DeliveryError",
    "RequestError",
    "RequestTimeout",
    "ResponseTooLarge",
    "RetryInterrupted",
    "SignatureError",
    "SyncWorkersError",
    "TransportError",
    "UnknownOptionError",
    "WorkerError",
    "Message",
]
