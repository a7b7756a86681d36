"""Configuration: the frozen config classes (:mod:`.settings`), the machinery they share
(:mod:`.base`), the defaults of every setting (:mod:`.defaults`) and the validators (:mod:`.validators`)."""

from .settings import (
    UNSET,
    CircuitBreakerConfig,
    HTTPClientConfig,
    PollerConfig,
    RetryConfig,
    RetryStrategy,
    WebhookConfig,
)

__all__ = ["RetryStrategy", "RetryConfig", "CircuitBreakerConfig", "HTTPClientConfig", "PollerConfig",
           "WebhookConfig", "UNSET"]
