"""Configuration: frozen dataclasses, validated in their constructors.

Every config class records which fields were given explicitly, so that values
can be layered field by field: explicit argument > config object > environment
> default (:meth:`_Config.resolve`). ``from_env()`` reads the variables the
reference document lists with environs and reports every invalid one at once.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
from types import MappingProxyType
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Type, TypeVar


from . import validators as v
from ..exceptions import ConfigError
from ..http.limits import default_per_host
from ..observability.redaction import Redactor
from ..http.outcome import RETRY_STATUSES
from .base import UNSET, _Config, _field, _quoted
from .defaults import (
    AUTH_TYPES,
    DEFAULT_API_KEY_HEADER,
    DEFAULT_BREAKER_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DEADLINE,
    DEFAULT_DISABLE_AFTER,
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_KEEPALIVE_EXPIRY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_DELAY,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_POLL_METHOD,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_AFTER_MAX,
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_RETRY_DELAY,
    DEFAULT_RETRY_SCHEDULE,
    DEFAULT_TRANSPORT,
    DEFAULT_WEBHOOK_TIMEOUT,
    DEFAULT_WEBHOOK_WORKERS,
    HTTP_METHODS,
    MAX_ATTEMPTS,
    MAX_BACKOFF,
    MAX_BYTES,
    MAX_DISABLE_AFTER,
    MAX_FAILURE_THRESHOLD,
    MAX_INTERVAL,
    MAX_REDIRECTS_LIMIT,
    TRANSPORTS,
)

RetryT = TypeVar("RetryT", bound="RetryConfig")

# The retry fields HTTPClientConfig, WebhookConfig and RetryConfig.from_retries share.
_MAX_RETRIES = v.count(minimum=0, maximum=MAX_ATTEMPTS - 1)
_RETRY_DELAY = v.seconds(minimum=0)
_RETRY_BACKOFF = v.number(float, minimum=1, maximum=MAX_BACKOFF)


class RetryStrategy(str, enum.Enum):
    """How the wait grows between retries (retry k = 1, 2, ...)."""

    FIXED = "fixed"  #: ``initial_delay``
    LINEAR = "linear"  #: ``initial_delay * k``
    EXPONENTIAL = "exponential"  #: ``initial_delay * exponential_base ** (k - 1)``


# -- the config classes --------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class RetryConfig(_Config):
    """How a failed request is retried. ``max_attempts`` counts the first attempt too."""

    strategy: RetryStrategy = _field(RetryStrategy.EXPONENTIAL)
    max_attempts: int = _field(DEFAULT_MAX_RETRIES + 1)
    initial_delay: float = _field(DEFAULT_RETRY_DELAY)
    max_delay: float = _field(DEFAULT_MAX_DELAY)
    exponential_base: float = _field(DEFAULT_RETRY_BACKOFF)
    jitter: bool = _field(False)
    #: Cap on a server's ``Retry-After``, in seconds.
    retry_after_max: float = _field(DEFAULT_RETRY_AFTER_MAX)
    retry_on_status: Tuple[int, ...] = _field(RETRY_STATUSES)

    _VALIDATORS = {
        "strategy": v.enum_member(RetryStrategy),
        "max_attempts": v.count(maximum=MAX_ATTEMPTS),
        "initial_delay": v.seconds(minimum=0),
        "max_delay": v.seconds(minimum=0),
        "exponential_base": v.number(float, minimum=1, maximum=MAX_BACKOFF),
        "jitter": v.boolean,
        "retry_after_max": v.seconds(minimum=0),
        "retry_on_status": v.statuses,
    }

    @classmethod
    def from_retries(cls: Type[RetryT], max_retries: int, retry_delay: float, retry_backoff: float) -> RetryT:
        """The WebhookConfig/env shape: *max_retries* after the first attempt,
        waits of ``retry_delay * retry_backoff ** (k - 1)`` (fixed when backoff is 1)."""
        errors: Dict[str, str] = {}
        for name, value, check in (("max_retries", max_retries, _MAX_RETRIES),
                                   ("retry_delay", retry_delay, _RETRY_DELAY),
                                   ("retry_backoff", retry_backoff, _RETRY_BACKOFF)):
            try:
                check(value)
            except ValueError as exc:
                errors[name] = f"{name} {exc}"
        if errors:
            raise ConfigError("invalid retry settings: " + "; ".join(errors.values()), errors)
        backoff = float(retry_backoff)
        return cls(
            strategy=RetryStrategy.FIXED if backoff == 1.0 else RetryStrategy.EXPONENTIAL,
            max_attempts=int(max_retries) + 1,
            initial_delay=float(retry_delay),
            exponential_base=backoff,
            max_delay=max(DEFAULT_MAX_DELAY, float(retry_delay)),
        )

    @classmethod
    def from_env(cls: Type[RetryT], **overrides: Any) -> RetryT:
        """Built from HTTP_MAX_RETRIES, HTTP_RETRY_DELAY and HTTP_RETRY_BACKOFF."""
        values, errors = HTTPClientConfig._read_env(("max_retries", "retry_delay", "retry_backoff"))
        for name, value in values.items():  # parsed, but maybe out of range: report with the rest
            try:
                HTTPClientConfig._VALIDATORS[name](value)
            except ValueError as exc:
                var = HTTPClientConfig._ENV[name][0]
                errors[var] = f"{var}={_quoted(var)}: {name} {exc}"
        if errors:
            raise ConfigError("invalid environment variables: " + "; ".join(errors.values()), errors)
        if not values:
            return cls(**overrides)
        base = cls.from_retries(values.get("max_retries", DEFAULT_MAX_RETRIES),
                                values.get("retry_delay", DEFAULT_RETRY_DELAY),
                                values.get("retry_backoff", DEFAULT_RETRY_BACKOFF))
        return cls(**{**base.explicit_items(), **overrides})


@dataclasses.dataclass(frozen=True, repr=False)
class CircuitBreakerConfig(_Config):
    """Per-host circuit breaker: open after ``failure_threshold`` consecutive failures
    (5xx, 429, transport errors), refuse calls for ``timeout_seconds``, then let one probe through."""

    failure_threshold: int = _field(DEFAULT_FAILURE_THRESHOLD)
    timeout_seconds: float = _field(DEFAULT_BREAKER_TIMEOUT)
    #: Which transport exceptions count as failures (statuses 5xx/429 always do).
    expected_exception: Any = _field(Exception)
    enabled: bool = _field(True)

    _VALIDATORS = {
        "failure_threshold": v.count(maximum=MAX_FAILURE_THRESHOLD),
        "timeout_seconds": v.seconds(above=0),
        "expected_exception": v.exception_spec,
        "enabled": v.boolean,
    }


@dataclasses.dataclass(frozen=True, repr=False)
class HTTPClientConfig(_Config):
    """Settings of one pooled HTTP client (see the README's table of variables)."""

    base_url: Optional[str] = _field(None)
    #: Shorthand: the read timeout, and the connect timeout when that is not set.
    timeout: Optional[float] = _field(None)
    connect_timeout: float = _field(DEFAULT_CONNECT_TIMEOUT)
    read_timeout: float = _field(DEFAULT_READ_TIMEOUT)
    max_connections: int = _field(DEFAULT_MAX_CONNECTIONS)
    #: Idle connections kept per host (default: max_connections).
    max_keepalive_connections: Optional[int] = _field(None)
    keepalive_expiry: float = _field(DEFAULT_KEEPALIVE_EXPIRY)
    #: True, False, or the path of a CA bundle.
    verify_ssl: Any = _field(True)
    ssl_cert_file: Optional[str] = _field(None)
    ssl_key_file: Optional[str] = _field(None)
    default_headers: Mapping[str, str] = _field(factory=lambda: MappingProxyType({}))
    #: Header names that are secret besides those whose name says so (auth, token, key, ...):
    #: their values are masked in logs, reprs and the outbox.
    secret_headers: Tuple[str, ...] = _field(())
    user_agent: Optional[str] = _field(None)
    auth_type: str = _field("none")
    bearer_token: Optional[str] = _field(None)
    api_key: Optional[str] = _field(None)
    api_key_header: str = _field(DEFAULT_API_KEY_HEADER)
    basic_user: Optional[str] = _field(None)
    basic_password: Optional[str] = _field(None)
    follow_redirects: bool = _field(True)
    max_redirects: int = _field(DEFAULT_MAX_REDIRECTS)
    max_response_size: int = _field(DEFAULT_MAX_RESPONSE_SIZE)
    #: Total seconds per attempt, connect to last byte (see :attr:`effective_deadline`).
    deadline: Optional[float] = _field(None)
    #: "requests" or "curl"; the default is read at construction (DEFAULT_TRANSPORT).
    transport: str = _field(factory=lambda: DEFAULT_TRANSPORT)
    #: Read proxy settings and .netrc from the environment (costly per request; off by default).
    trust_env: bool = _field(False)
    #: The SSRF guard: refuse to connect to loopback, private, link-local (cloud metadata),
    #: carrier-grade NAT, multicast and reserved addresses (turn on for URLs your users give).
    block_private_networks: bool = _field(False)
    #: CIDRs the guard lets through all the same (e.g. ``("10.20.0.0/16",)``).
    allowed_networks: Tuple[Any, ...] = _field(())
    #: Attempts on the wire to one host (host:port) at once; more wait for a slot (None: no limit).
    max_in_flight_per_host: Optional[int] = _field(None)
    max_retries: int = _field(DEFAULT_MAX_RETRIES)
    retry_delay: float = _field(DEFAULT_RETRY_DELAY)
    retry_backoff: float = _field(DEFAULT_RETRY_BACKOFF)
    #: Wins over max_retries / retry_delay / retry_backoff when given.
    retry_config: Optional[RetryConfig] = _field(None)
    circuit_breaker_config: Optional[CircuitBreakerConfig] = _field(factory=CircuitBreakerConfig)

    _VALIDATORS = {
        "base_url": v.http_url(base=True),
        "timeout": v.seconds(above=0, optional=True),
        "connect_timeout": v.seconds(above=0),
        "read_timeout": v.seconds(above=0),
        "max_connections": v.count(),
        "max_keepalive_connections": v.count(minimum=0, optional=True),
        "keepalive_expiry": v.seconds(minimum=0),
        "verify_ssl": v.verify_setting,
        "ssl_cert_file": v.existing_file,
        "ssl_key_file": v.existing_file,
        "default_headers": v.header_mapping,
        "secret_headers": v.header_names,
        "user_agent": v.header_value,
        "auth_type": v.choice(AUTH_TYPES),
        "bearer_token": v.header_value,
        "api_key": v.header_value,
        "api_key_header": v.sent_header_name,
        "basic_user": v.optional_str,
        "basic_password": v.optional_str,
        "follow_redirects": v.boolean,
        "max_redirects": v.count(minimum=0, maximum=MAX_REDIRECTS_LIMIT),
        "max_response_size": v.count(maximum=MAX_BYTES),
        "deadline": v.seconds(above=0, optional=True),
        "transport": v.choice(TRANSPORTS),
        "trust_env": v.boolean,
        "block_private_networks": v.boolean,
        "allowed_networks": v.networks,
        "max_in_flight_per_host": v.count(optional=True),
        "max_retries": _MAX_RETRIES,
        "retry_delay": _RETRY_DELAY,
        "retry_backoff": _RETRY_BACKOFF,
        "retry_config": lambda value: v.instance_of(value, RetryConfig),
        "circuit_breaker_config": lambda value: v.instance_of(value, CircuitBreakerConfig),
    }
    _ENV = {
        "base_url": ("HTTP_BASE_URL", "str"),
        "timeout": ("HTTP_TIMEOUT", "float"),
        "max_retries": ("HTTP_MAX_RETRIES", "int"),
        "retry_delay": ("HTTP_RETRY_DELAY", "float"),
        "retry_backoff": ("HTTP_RETRY_BACKOFF", "float"),
        "auth_type": ("HTTP_AUTH_TYPE", "str"),
        "bearer_token": ("HTTP_BEARER_TOKEN", "str"),
        "api_key": ("HTTP_API_KEY", "str"),
        "api_key_header": ("HTTP_API_KEY_HEADER", "str"),
        "basic_user": ("HTTP_BASIC_USER", "str"),
        "basic_password": ("HTTP_BASIC_PASSWORD", "str"),
        "verify_ssl": ("HTTP_SSL_VERIFY", "str"),  # true/false or a CA bundle path
        "ssl_cert_file": ("HTTP_SSL_CERT_FILE", "str"),
        "ssl_key_file": ("HTTP_SSL_KEY_FILE", "str"),
        "max_connections": ("HTTP_CONNECTION_POOL_SIZE", "int"),
        "max_keepalive_connections": ("HTTP_MAX_KEEPALIVE_CONNECTIONS", "int"),
        "keepalive_expiry": ("HTTP_KEEPALIVE_EXPIRY", "float"),
        "deadline": ("HTTP_DEADLINE", "float"),
        "transport": ("HTTP_TRANSPORT", "str"),
    }
    _SECRETS = ("bearer_token", "api_key", "basic_password")

    def redactor(self, into: Optional[Redactor] = None) -> Redactor:
        """*into* (a new :class:`~syncworkers.observability.redaction.Redactor` when None), told this
        config's secrets: the credentials, ``secret_headers`` (and ``api_key_header``: whatever its
        name, it carries the key) and the values of the secret ``default_headers``."""
        redactor = into if into is not None else Redactor()
        redactor.add_names(self.secret_headers)
        if self.auth_type == "api_key":
            redactor.add_names([self.api_key_header])
        for secret in (self.bearer_token, self.api_key, self.basic_password, self.basic_credentials):
            redactor.add_secret(secret)
        redactor.add_headers(self.default_headers)
        return redactor

    @property
    def basic_credentials(self) -> Optional[str]:
        """With ``auth_type`` basic, what ``Authorization: Basic`` carries: base64 of ``user:password``."""
        if self.auth_type != "basic":
            return None
        return base64.b64encode(f"{self.basic_user}:{self.basic_password}".encode()).decode()

    def _validate(self) -> None:
        if self.auth_type == "bearer" and not self.bearer_token:
            raise ValueError("auth_type 'bearer' needs bearer_token (HTTP_BEARER_TOKEN)")
        if self.auth_type == "api_key" and not self.api_key:
            raise ValueError("auth_type 'api_key' needs api_key (HTTP_API_KEY)")
        if self.auth_type == "basic" and (self.basic_user is None or self.basic_password is None):
            raise ValueError("auth_type 'basic' needs basic_user and basic_password "
                             "(HTTP_BASIC_USER, HTTP_BASIC_PASSWORD)")
        if self.ssl_key_file and not self.ssl_cert_file:
            raise ValueError("ssl_key_file needs ssl_cert_file")

    @property
    def timeouts(self) -> Tuple[float, float]:
        """The (connect, read) timeouts in effect."""
        connect, read = self.connect_timeout, self.read_timeout
        if self.timeout is not None:
            if not self.is_set("read_timeout"):
                read = self.timeout
            if not self.is_set("connect_timeout"):
                connect = min(self.timeout, DEFAULT_CONNECT_TIMEOUT)
        return connect, read

    @property
    def effective_deadline(self) -> float:
        """Seconds an attempt may take in all: ``deadline`` if given, else
        DEFAULT_DEADLINE or connect + read timeout, whichever is longer."""
        if self.deadline is not None:
            return self.deadline
        connect, read = self.timeouts
        return max(DEFAULT_DEADLINE, connect + read)

    @property
    def effective_retry(self) -> RetryConfig:
        """``retry_config`` if given, else one built from max_retries/retry_delay/retry_backoff."""
        if self.retry_config is not None:
            return self.retry_config
        return RetryConfig.from_retries(self.max_retries, self.retry_delay, self.retry_backoff)

    @property
    def effective_breaker(self) -> CircuitBreakerConfig:
        return self.circuit_breaker_config or CircuitBreakerConfig(enabled=False)


@dataclasses.dataclass(frozen=True, repr=False)
class PollerConfig(_Config):
    """What to poll and how often; its HTTP fields override the worker's HTTPClientConfig."""

    base_url: Optional[str] = _field(None)
    url: Optional[str] = _field(None)
    interval: float = _field(DEFAULT_POLL_INTERVAL)
    method: str = _field(DEFAULT_POLL_METHOD)
    connect_timeout: float = _field(DEFAULT_CONNECT_TIMEOUT)
    read_timeout: float = _field(DEFAULT_READ_TIMEOUT)
    max_connections: int = _field(DEFAULT_MAX_CONNECTIONS)
    verify_ssl: Any = _field(True)
    follow_redirects: bool = _field(True)
    user_agent: Optional[str] = _field(None)
    #: Up to this many seconds of random delay added to each tick (0 = none).
    jitter: float = _field(0.0)
    #: Send If-None-Match / If-Modified-Since from the last ETag / Last-Modified.
    conditional: bool = _field(True)

    #: Fields that are HTTP client settings, layered over HTTPClientConfig.
    CLIENT_FIELDS: ClassVar[Tuple[str, ...]] = (
        "connect_timeout", "read_timeout", "max_connections", "verify_ssl",
        "follow_redirects", "user_agent",
    )

    _VALIDATORS = {
        "base_url": v.http_url(base=True),
        "url": v.http_url(relative_ok=True),
        "interval": v.tick_interval,
        "method": v.choice(HTTP_METHODS, upper=True),
        "connect_timeout": v.seconds(above=0),
        "read_timeout": v.seconds(above=0),
        "max_connections": v.count(),
        "verify_ssl": v.verify_setting,
        "follow_redirects": v.boolean,
        "user_agent": v.header_value,
        "jitter": v.seconds(minimum=0, maximum=MAX_INTERVAL),
        "conditional": v.boolean,
    }
    _ENV = {
        "url": ("POLLER_URL", "str"),
        "interval": ("POLLER_INTERVAL", "float"),
        "method": ("POLLER_METHOD", "str"),
        "connect_timeout": ("POLLER_CONNECT_TIMEOUT", "float"),
        "read_timeout": ("POLLER_READ_TIMEOUT", "float"),
    }

    def _validate(self) -> None:
        v.check_jitter(self.jitter, self.interval)


@dataclasses.dataclass(frozen=True, repr=False)
class WebhookConfig(_Config):
    """Where and how webhooks are sent."""

    base_url: Optional[str] = _field(None)
    #: Read timeout of each attempt, in seconds (the connect timeout is at most 5 s of it).
    timeout: float = _field(DEFAULT_WEBHOOK_TIMEOUT)
    max_retries: int = _field(DEFAULT_MAX_RETRIES)
    retry_delay: float = _field(DEFAULT_RETRY_DELAY)
    retry_backoff: float = _field(DEFAULT_RETRY_BACKOFF)
    #: Names usable as ``send_webhook(endpoint=...)``: name -> path or absolute URL.
    endpoints: Mapping[str, str] = _field(factory=lambda: MappingProxyType({}))
    #: Threads for broadcast fan-out and outbox delivery.
    max_workers: int = _field(DEFAULT_WEBHOOK_WORKERS)
    #: SQLite file of the durable outbox; None = in memory (not durable).
    outbox_path: Optional[str] = _field(None)
    #: Where the outbox lives: postgresql://user:pass@host/db (shared by processes and machines),
    #: sqlite:///relative/path, sqlite:////absolute/path or a file path. Exclusive with outbox_path.
    outbox_url: Optional[str] = _field(None)
    #: Outbox schedule: attempt 1 at once, then one attempt after each delay.
    retry_schedule: Tuple[float, ...] = _field(DEFAULT_RETRY_SCHEDULE)
    #: One ``whsec_`` secret (at least 24 bytes), or several (a list, or space/comma separated).
    signing_secret: Any = _field(None)
    #: Seconds an outbox endpoint (host + path) may only fail before it is disabled: its
    #: deliveries are then held until ``syncworkers outbox enable``. A 410 disables at once.
    disable_after: float = _field(DEFAULT_DISABLE_AFTER)
    #: The SSRF guard, for endpoint URLs your users supply: refuse loopback, private, link-local
    #: (cloud metadata), carrier-grade NAT, multicast and reserved destinations. Off by default,
    #: so that internal services keep working.
    block_private_networks: bool = _field(False)
    #: CIDRs the guard lets through all the same (a list, or comma/space separated).
    allowed_networks: Tuple[Any, ...] = _field(())
    #: Attempts on the wire to one host (host:port) at once, direct sends, broadcasts and the
    #: outbox together; None = three quarters of max_workers (at least 2), so one slow partner
    #: never takes every thread. A saturated host's outbox deliveries are postponed, not attempted.
    max_in_flight_per_host: Optional[int] = _field(None)
    #: Largest JSON body, in bytes: a larger one is a ValueError before it is sent or stored.
    max_payload_bytes: int = _field(DEFAULT_MAX_PAYLOAD_BYTES)

    _VALIDATORS = {
        "base_url": v.http_url(base=True),
        "timeout": v.seconds(above=0),
        "max_retries": _MAX_RETRIES,
        "retry_delay": _RETRY_DELAY,
        "retry_backoff": _RETRY_BACKOFF,
        "endpoints": v.str_mapping,
        "max_workers": v.count(),
        "outbox_path": v.optional_str,
        "outbox_url": v.outbox_url,
        "retry_schedule": v.delays,
        "signing_secret": v.signing_secret,
        "disable_after": v.seconds(above=0, maximum=MAX_DISABLE_AFTER),
        "block_private_networks": v.boolean,
        "allowed_networks": v.networks,
        "max_in_flight_per_host": v.count(optional=True),
        "max_payload_bytes": v.count(maximum=MAX_BYTES),
    }
    _ENV = {
        "base_url": ("HTTP_BASE_URL", "str"),
        "timeout": ("HTTP_TIMEOUT", "float"),
        "max_retries": ("HTTP_MAX_RETRIES", "int"),
        "retry_delay": ("HTTP_RETRY_DELAY", "float"),
        "retry_backoff": ("HTTP_RETRY_BACKOFF", "float"),
        "outbox_path": ("WEBHOOK_OUTBOX_PATH", "str"),
        "outbox_url": ("WEBHOOK_OUTBOX_URL", "str"),
        "retry_schedule": ("WEBHOOK_RETRY_SCHEDULE", "str"),
        "signing_secret": ("WEBHOOK_SIGNING_SECRET", "str"),
        "disable_after": ("WEBHOOK_DISABLE_AFTER", "float"),
        "block_private_networks": ("WEBHOOK_BLOCK_PRIVATE_NETWORKS", "bool"),
        "allowed_networks": ("WEBHOOK_ALLOWED_NETWORKS", "str"),
        "max_in_flight_per_host": ("WEBHOOK_MAX_IN_FLIGHT_PER_HOST", "int"),
        "max_payload_bytes": ("WEBHOOK_MAX_PAYLOAD_BYTES", "int"),
    }
    _SECRETS = ("signing_secret",)

    def _validate(self) -> None:
        if self.outbox_url is not None and self.outbox_path is not None:
            raise ValueError("give outbox_url (WEBHOOK_OUTBOX_URL) or outbox_path (WEBHOOK_OUTBOX_PATH),"
                             " not both")
        for name, target in self.endpoints.items():
            try:
                v.http_url(optional=False, relative_ok=True)(target)
            except ValueError as exc:
                raise ValueError(f"endpoints[{name!r}] {exc}") from None

    @property
    def outbox_location(self) -> Optional[str]:
        """The outbox's URL or path (``outbox_url`` or ``outbox_path``); None = in memory."""
        return self.outbox_url if self.outbox_url is not None else self.outbox_path

    @property
    def retry(self) -> RetryConfig:
        return RetryConfig.from_retries(self.max_retries, self.retry_delay, self.retry_backoff)

    @property
    def per_host_limit(self) -> int:
        """``max_in_flight_per_host``, or its default for ``max_workers``."""
        if self.max_in_flight_per_host is not None:
            return self.max_in_flight_per_host
        return default_per_host(self.max_workers)


__all__ = [
    "RetryStrategy",
    "RetryConfig",
    "CircuitBreakerConfig",
    "HTTPClientConfig",
    "PollerConfig",
    "WebhookConfig",
    "UNSET",
]
