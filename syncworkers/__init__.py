"""syncworkers: synchronous, thread-pool HTTP workers — pollers and webhook senders, zero asyncio.

``RedisListConsumer`` needs the optional ``redis`` extra: it is imported on first use
(``from syncworkers import RedisListConsumer``) and is not part of ``import *``, which
therefore works without it.
"""

from typing import Any, List

from .version import __version__  # noqa: E402

from .config.settings import (  # noqa: E402
    CircuitBreakerConfig,
    HTTPClientConfig,
    PollerConfig,
    RetryConfig,
    RetryStrategy,
    WebhookConfig,
)
from .exceptions import (  # noqa: E402
    BlockedAddressError,
    BodyDecodeError,
    CircuitOpenError,
    ConfigError,
    DeliveryError,
    OutboxError,
    PaginationError,
    RequestError,
    RequestTimeout,
    ResponseTooLarge,
    RetryInterrupted,
    SignatureError,
    StateStoreError,
    SyncWorkersError,
    TransportError,
    UnknownOptionError,
    WorkerError,
)
from .polling.cursor import IncrementalCursor  # noqa: E402
from .signals import StopSignal  # noqa: E402
from .polling.pagination import (  # noqa: E402
    CursorPaginator,
    LinkHeaderPaginator,
    OffsetPaginator,
    Page,
    PageNumberPaginator,
    PageRequest,
    Paginator,
)
from .polling.ratelimit import RateLimits  # noqa: E402
from .polling.state import MemoryStateStore, PostgresStateStore, SQLiteStateStore, StateStore  # noqa: E402
from .http.client import HTTPClient  # noqa: E402
from .observability.logging import configure_logging  # noqa: E402
from .message import Message  # noqa: E402
from .observability.metrics import Metrics  # noqa: E402
from .outbox import Outbox  # noqa: E402
from .scheduling.runner import LoopJob, PeriodicJob, Runner  # noqa: E402
from .signing import Signer, verify  # noqa: E402
from .sources import MemoryQueue, Source  # noqa: E402
from .workers import DeliveryResult, HTTPWorker, PollerWorker, PollOutcome, WebhookSenderWorker  # noqa: E402

# Importing changes nothing in the process: what syncworkers installs (urllib3's log filter,
# the Prometheus metrics) it installs when the first worker or Runner is built
# (syncworkers.observability.process_hooks).

#: Names importable from here that need an optional extra (imported on first use).
_OPTIONAL = ("RedisListConsumer",)


def __getattr__(name: str) -> Any:
    if name == "RedisListConsumer":
        from .sources.redis import RedisListConsumer

        return RedisListConsumer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_OPTIONAL))


__all__ = [
    "__version__",
    # configuration
    "CircuitBreakerConfig",
    "HTTPClientConfig",
    "PollerConfig",
    "RetryConfig",
    "RetryStrategy",
    "WebhookConfig",
    # workers and running them
    "HTTPWorker",
    "PollerWorker",
    "PollOutcome",
    "WebhookSenderWorker",
    "DeliveryResult",
    "Runner",
    "PeriodicJob",
    "LoopJob",
    "Message",
    "Source",
    "MemoryQueue",
    # pagination, incremental cursors, rate limits
    "Paginator",
    "Page",
    "PageRequest",
    "LinkHeaderPaginator",
    "CursorPaginator",
    "OffsetPaginator",
    "PageNumberPaginator",
    "IncrementalCursor",
    "StateStore",
    "MemoryStateStore",
    "SQLiteStateStore",
    "PostgresStateStore",
    "RateLimits",
    # building blocks
    "HTTPClient",
    "Metrics",
    "Outbox",
    "Signer",
    "verify",
    "configure_logging",
    # errors
    "CircuitOpenError",
    "ConfigError",
    "DeliveryError",
    "PaginationError",
    "RequestError",
    "RequestTimeout",
    "ResponseTooLarge",
    "RetryInterrupted",
    "SignatureError",
    "StateStoreError",
    "SyncWorkersError",
    "TransportError",
    "UnknownOptionError",
    "WorkerError",
    "BlockedAddressError",
    "BodyDecodeError",
    "OutboxError",
    "StopSignal",
]
