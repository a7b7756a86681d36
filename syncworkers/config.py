"""Configuration: frozen dataclasses, validated in their constructors.

Every config class records which fields were given explicitly, so that values
can be layered field by field: explicit argument > config object > environment
> default (:meth:`_Config.resolve`). ``from_env()`` reads the variables the
reference document lists with environs and reports every invalid one at once.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Dict, FrozenSet, Iterable, Mapping, Optional, Tuple, Type, TypeVar

from environs import Env, EnvError

from . import validators as v
from .exceptions import ConfigError, UnknownOptionError
from .redaction import MASK, is_secret_key, redact, register_secret_names
from .schedule import check_jitter

# -- defaults ---------------------------------------------------------------

#: Seconds to wait for a TCP (and TLS) connection.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds to wait for the server between bytes of the response.
DEFAULT_READ_TIMEOUT = 30.0
#: Connections kept per host; raised to the number of threads that share a client.
DEFAULT_MAX_CONNECTIONS = 10
#: Seconds a pooled connection may sit idle before it is closed instead of reused.
DEFAULT_KEEPALIVE_EXPIRY = 30.0
#: Largest response body read, in bytes (10 MiB); larger bodies raise ResponseTooLarge.
DEFAULT_MAX_RESPONSE_SIZE = 10 * 1024 * 1024
#: Redirects a poller follows before giving up.
DEFAULT_MAX_REDIRECTS = 5
#: Longest an attempt may take, connect to last byte, in seconds (raised to connect + read
#: timeout when those add up to more and no deadline is given): no receiver holds a thread longer.
DEFAULT_DEADLINE = 60.0
#: The HTTP library under HTTPClient: "requests", or "curl" (``pip install 'syncworkers[curl]'``).
DEFAULT_TRANSPORT = "requests"
TRANSPORTS = ("requests", "curl")
#: Retries after the first attempt.
DEFAULT_MAX_RETRIES = 3
#: Seconds before the first retry.
DEFAULT_RETRY_DELAY = 1.0
#: Factor by which each further retry wait grows.
DEFAULT_RETRY_BACKOFF = 2.0
#: Longest wait between two retries, in seconds.
DEFAULT_MAX_DELAY = 60.0
#: Statuses that are retried: timeouts, throttling and transient server errors.
from .outcome import RETRY_STATUSES  # noqa: E402 - one home for the retry statuses
#: Longest ``Retry-After`` honoured, in seconds; a longer one is cut to this.
DEFAULT_RETRY_AFTER_MAX = 60.0
#: Consecutive failures that open a host's circuit.
DEFAULT_FAILURE_THRESHOLD = 5
#: Seconds an open circuit refuses calls before it lets one probe through.
DEFAULT_BREAKER_TIMEOUT = 60.0
#: The header that carries ``api_key`` when ``auth_type`` is ``api_key``.
DEFAULT_API_KEY_HEADER = "X-API-Key"
#: Seconds between two polls.
DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_POLL_METHOD = "GET"
#: Read timeout of each webhook attempt, in seconds.
DEFAULT_WEBHOOK_TIMEOUT = 30.0
#: Threads of a webhook worker's pool (broadcast fan-out, outbox delivery).
DEFAULT_WEBHOOK_WORKERS = 32
#: Outbox schedule in the spirit of Standard Webhooks: at once, then after each delay
#: (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about 28 hours in all).
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
#: Seconds an outbox endpoint may only fail before it is disabled (5 days, as Svix).
DEFAULT_DISABLE_AFTER = 5 * 86400.0
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
AUTH_TYPES = ("none", "bearer", "api_key", "basic")


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


#: Marks a field that was not given; replaced by the default in ``__post_init__``.
UNSET: Any = _Unset()

ConfigT = TypeVar("ConfigT", bound="_Config")
RetryT = TypeVar("RetryT", bound="RetryConfig")


class RetryStrategy(str, enum.Enum):
    """How the wait grows between retries (retry k = 1, 2, ...)."""

    FIXED = "fixed"  #: ``initial_delay``
    LINEAR = "linear"  #: ``initial_delay * k``
    EXPONENTIAL = "exponential"  #: ``initial_delay * exponential_base ** (k - 1)``


# -- the config base ---------------------------------------------------------


_FIELD_NAMES: Dict[type, FrozenSet[str]] = {}


def _field_names(cls: Type["_Config"]) -> FrozenSet[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


class _Config:
    """Shared machinery of the config dataclasses: validation, explicit fields, env, layering.

    Each subclass is a ``@dataclasses.dataclass(frozen=True, repr=False)`` whose fields
    are declared with :func:`_field`, so type checkers see the real constructor.
    """

    __dataclass_fields__: ClassVar[Dict[str, "dataclasses.Field[Any]"]]
    #: field name -> validator(value) -> normalised value (raises ValueError)
    _VALIDATORS: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}
    #: field name -> (ENV_VAR, environs parser name)
    _ENV: ClassVar[Mapping[str, Tuple[str, str]]] = {}
    #: fields whose values are secrets: masked in repr()
    _SECRETS: ClassVar[Tuple[str, ...]] = ()
    _explicit: FrozenSet[str]

    def __new__(cls: Type[ConfigT], *args: Any, **kwargs: Any) -> ConfigT:
        # Here rather than in __init__, so the dataclass keeps its generated, typed __init__.
        unknown = sorted(set(kwargs) - _field_names(cls))
        if unknown:
            raise UnknownOptionError(
                f"{cls.__name__} got unknown option(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(_field_names(cls)))})"
            )
        return super().__new__(cls)

    def __post_init__(self) -> None:
        explicit = set()
        errors: Dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is UNSET:
                factory = f.metadata.get("factory")
                object.__setattr__(self, f.name, factory() if factory else f.metadata.get("default"))
                continue
            explicit.add(f.name)
            check = self._VALIDATORS.get(f.name)
            if check is not None:
                try:
                    object.__setattr__(self, f.name, check(value))
                except ValueError as exc:
                    errors[f.name] = f"{f.name} {exc}"
        object.__setattr__(self, "_explicit", frozenset(explicit))
        if not errors:
            try:
                self._validate()
            except ValueError as exc:
                errors["__all__"] = str(exc)
        if errors:
            raise ConfigError(
                f"invalid {type(self).__name__}: " + "; ".join(errors.values()), errors
            )

    def _validate(self) -> None:
        """Cross-field checks; raise ValueError."""

    def is_set(self, name: str) -> bool:
        """True if *name* was given explicitly (as an argument or from the environment)."""
        return name in self._explicit

    @property
    def explicit_fields(self) -> FrozenSet[str]:
        return self._explicit

    def explicit_items(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self._explicit}

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self._SECRETS and value:
                value = MASK
            elif isinstance(value, (str, MappingProxyType)):
                # Secret headers (default_headers), credentials and secret segments of URLs are masked.
                value = redact(dict(value) if isinstance(value, MappingProxyType) else value)
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__

    @classmethod
    def _read_env(cls, names: Optional[Iterable[str]] = None) -> Tuple[Dict[str, Any], Dict[str, str]]:
        """Read this class's variables: (values by field, errors by variable)."""
        wanted = None if names is None else set(names)
        env = Env(eager=False)
        values: Dict[str, Any] = {}
        for field_name, (var, parser) in cls._ENV.items():
            if (wanted is not None and field_name not in wanted) or var not in os.environ:
                continue
            values[field_name] = getattr(env, parser)(var, None)
        errors: Dict[str, str] = {}
        try:
            env.seal()
        except EnvError as exc:
            for var, msgs in (getattr(exc, "error_messages", {}) or {}).items():
                errors[var] = f"{var}={_quoted(var)}: {'; '.join(map(str, msgs))}"
        by_var = {var: name for name, (var, _) in cls._ENV.items()}
        bad_fields = {by_var.get(var) for var in errors}
        return {k: v for k, v in values.items() if v is not None and k not in bad_fields}, errors

    @classmethod
    def _from_values(cls: Type[ConfigT], values: Dict[str, Any], env_errors: Optional[Dict[str, str]] = None,
                     env_fields: Iterable[str] = ()) -> ConfigT:
        """Build from *values*; errors in env-derived fields name their variable.

        Every problem (unparseable variables in *env_errors* and invalid values)
        is raised together in one ConfigError.
        """
        errors = dict(env_errors or {})
        from_env = set(env_fields)
        config: Optional[ConfigT] = None
        try:
            config = cls(**values)
        except UnknownOptionError:
            raise
        except ConfigError as exc:
            for key, message in exc.errors.items():
                if key in from_env:
                    var = cls._ENV[key][0]
                    errors[var] = f"{var}={_quoted(var)}: {message}"
                else:
                    errors[key] = message
        if errors or config is None:
            raise ConfigError(f"invalid {cls.__name__} settings: " + "; ".join(errors.values()),
                              errors)
        return config

    @classmethod
    def from_env(cls: Type[ConfigT], **overrides: Any) -> ConfigT:
        """Build from the environment; *overrides* win over the variables."""
        values, errors = cls._read_env()
        env_fields = set(values) - set(overrides)
        values.update(overrides)
        return cls._from_values(values, errors, env_fields)

    @classmethod
    def resolve(cls: Type[ConfigT], *layers: Any, env: bool = True, **explicit: Any) -> ConfigT:
        """Merge field by field: *explicit* (non-None) > each layer in order > environment > default.

        A layer is a config instance (only its explicit fields count), a dict, or None.
        """
        names = _field_names(cls)
        unknown = set(explicit) - names
        sources = [{k: v for k, v in explicit.items() if v is not None}]
        for layer in layers:
            if isinstance(layer, _Config):
                # Only the fields this class shares with the layer's class.
                sources.append({k: v for k, v in layer.explicit_items().items() if k in names})
            elif layer is not None:
                sources.append(dict(layer))
                unknown |= set(layer) - names
        if unknown:
            raise UnknownOptionError(f"{cls.__name__} got unknown option(s): {', '.join(sorted(unknown))} "
                                     f"(known: {', '.join(sorted(names))})")
        env_values: Dict[str, Any] = {}
        env_errors: Dict[str, str] = {}
        if env:
            env_values, env_errors = cls._read_env()
            overridden = {cls._ENV[k][0] for s in sources for k in s if k in cls._ENV}
            env_errors = {var: msg for var, msg in env_errors.items() if var not in overridden}
        merged = dict(env_values)
        for source in reversed(sources):
            merged.update(source)
        env_fields = {k for k in env_values if all(k not in s for s in sources)}
        return cls._from_values(merged, env_errors, env_fields)


def with_other_errors(exc: ConfigError, *builders: Callable[[], Any]) -> ConfigError:
    """*exc* together with the ConfigErrors of *builders*, so one error names every bad setting.

    A worker reads several config classes; without this the first bad class would hide the
    others' bad variables. Builders that succeed add nothing.
    """
    errors = dict(exc.errors)
    for build in builders:
        try:
            build()
        except ConfigError as other:
            errors.update(other.errors)
    if errors == exc.errors:
        return exc
    return ConfigError("invalid settings: " + "; ".join(dict.fromkeys(errors.values())), errors)


def _quoted(var: str) -> str:
    if is_secret_key(var):
        return repr(MASK)
    return repr(redact(os.environ.get(var, "")))


def _field(default: Any = None, factory: Optional[Callable[[], Any]] = None) -> Any:
    """A field that starts UNSET; *default* (or ``factory()``) fills it in."""
    return dataclasses.field(default=UNSET, metadata={"default": default, "factory": factory})


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
        "max_attempts": v.number(int, minimum=1),
        "initial_delay": v.number(float, minimum=0),
        "max_delay": v.number(float, minimum=0),
        "exponential_base": v.number(float, minimum=1),
        "jitter": v.boolean,
        "retry_after_max": v.number(float, minimum=0),
        "retry_on_status": v.statuses,
    }

    @classmethod
    def from_retries(cls: Type[RetryT], max_retries: int, retry_delay: float, retry_backoff: float) -> RetryT:
        """The WebhookConfig/env shape: *max_retries* after the first attempt,
        waits of ``retry_delay * retry_backoff ** (k - 1)`` (fixed when backoff is 1)."""
        errors: Dict[str, str] = {}
        for name, value, check in (("max_retries", max_retries, v.number(int, minimum=0)),
                                   ("retry_delay", retry_delay, v.number(float, minimum=0)),
                                   ("retry_backoff", retry_backoff, v.number(float, minimum=1))):
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
        "failure_threshold": v.number(int, minimum=1),
        "timeout_seconds": v.number(float, above=0),
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
    max_retries: int = _field(DEFAULT_MAX_RETRIES)
    retry_delay: float = _field(DEFAULT_RETRY_DELAY)
    retry_backoff: float = _field(DEFAULT_RETRY_BACKOFF)
    #: Wins over max_retries / retry_delay / retry_backoff when given.
    retry_config: Optional[RetryConfig] = _field(None)
    circuit_breaker_config: Optional[CircuitBreakerConfig] = _field(factory=CircuitBreakerConfig)

    _VALIDATORS = {
        "base_url": v.http_url(),
        "timeout": v.number(float, above=0, optional=True),
        "connect_timeout": v.number(float, above=0),
        "read_timeout": v.number(float, above=0),
        "max_connections": v.number(int, minimum=1),
        "max_keepalive_connections": v.number(int, minimum=0, optional=True),
        "keepalive_expiry": v.number(float, minimum=0),
        "verify_ssl": v.verify_setting,
        "ssl_cert_file": v.existing_file,
        "ssl_key_file": v.existing_file,
        "default_headers": v.str_mapping,
        "secret_headers": v.header_names,
        "user_agent": v.optional_str,
        "auth_type": v.choice(AUTH_TYPES),
        "bearer_token": v.optional_str,
        "api_key": v.optional_str,
        "api_key_header": v.header_name,
        "basic_user": v.optional_str,
        "basic_password": v.optional_str,
        "follow_redirects": v.boolean,
        "max_redirects": v.number(int, minimum=0),
        "max_response_size": v.number(int, minimum=1),
        "deadline": v.number(float, above=0, optional=True),
        "transport": v.choice(TRANSPORTS),
        "trust_env": v.boolean,
        "max_retries": v.number(int, minimum=0),
        "retry_delay": v.number(float, minimum=0),
        "retry_backoff": v.number(float, minimum=1),
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

    def __post_init__(self) -> None:
        super().__post_init__()
        # Process-wide, as registered secret values are: every log line and outbox listing masks them.
        register_secret_names(self.secret_headers)

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
        "base_url": v.http_url(),
        "url": v.http_url(relative_ok=True),
        "interval": v.number(float, above=0),
        "method": v.choice(HTTP_METHODS, upper=True),
        "connect_timeout": v.number(float, above=0),
        "read_timeout": v.number(float, above=0),
        "max_connections": v.number(int, minimum=1),
        "verify_ssl": v.verify_setting,
        "follow_redirects": v.boolean,
        "user_agent": v.optional_str,
        "jitter": v.number(float, minimum=0),
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
        check_jitter(self.jitter, self.interval)


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

    _VALIDATORS = {
        "base_url": v.http_url(),
        "timeout": v.number(float, above=0),
        "max_retries": v.number(int, minimum=0),
        "retry_delay": v.number(float, minimum=0),
        "retry_backoff": v.number(float, minimum=1),
        "endpoints": v.str_mapping,
        "max_workers": v.number(int, minimum=1),
        "outbox_path": v.optional_str,
        "outbox_url": v.outbox_url,
        "retry_schedule": v.delays,
        "signing_secret": v.signing_secret,
        "disable_after": v.number(float, above=0),
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
    }
    _SECRETS = ("signing_secret",)

    def _validate(self) -> None:
        if self.outbox_url is not None and self.outbox_path is not None:
            raise ValueError("give outbox_url (WEBHOOK_OUTBOX_URL) or outbox_path (WEBHOOK_OUTBOX_PATH),"
                             " not both")
        for name, target in self.endpoints.items():
            if not target.startswith("/"):
                v.http_url(optional=False)(target)

    @property
    def outbox_location(self) -> Optional[str]:
        """The outbox's URL or path (``outbox_url`` or ``outbox_path``); None = in memory."""
        return self.outbox_url if self.outbox_url is not None else self.outbox_path

    @property
    def retry(self) -> RetryConfig:
        return RetryConfig.from_retries(self.max_retries, self.retry_delay, self.retry_backoff)


__all__ = [
    "RetryStrategy",
    "RetryConfig",
    "CircuitBreakerConfig",
    "HTTPClientConfig",
    "PollerConfig",
    "WebhookConfig",
    "UNSET",
]
