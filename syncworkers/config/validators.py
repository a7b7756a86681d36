"""Validators for the config classes: each takes a value and returns it normalised or raises ValueError.

The message never names the field: the config class prefixes it, and the
environment loader the variable.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Type, Union

from .connections import POSTGRESQL, SQLITE, parse_connection_url
from .defaults import MAX_INTERVAL, MAX_SECONDS, MAX_THREADS  # noqa: F401 - MAX_INTERVAL: check_interval
from ..exceptions import ConfigError
from ..observability.redaction import redact_text, safe_url
from ..signing import load_secrets
from ..http.headers import header_problem, is_transport_header, name_problem, value_problem
from ..http.urls import normal_url, url_problem


#: A CIDR network (``allowed_networks``).
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def number(kind: type, *, minimum: Optional[float] = None, above: Optional[float] = None,
           maximum: Optional[float] = None, optional: bool = False, text: bool = True) -> Callable[[Any], Any]:
    """A finite int or float within the bounds given; a numeric string too with *text* (config fields
    take what environment variables hold), never with ``text=False`` (a constructor's argument).

    *maximum* is there because a huge value passes every type check and breaks
    later: an OverflowError deep inside a wait, a pool of millions of threads.
    """
    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str) and text:
                try:
                    value = kind(value)
                except ValueError:
                    raise ValueError(f"must be a number, got {value!r}") from None
            else:
                raise ValueError(f"must be a number, got {value!r}")
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"must be a whole number, got {value!r}")
            value = int(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"must be a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= {_bound(minimum)}, got {value!r}")
        if above is not None and value <= above:
            raise ValueError(f"must be > {_bound(above)}, got {value!r}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be <= {_bound(maximum)}, got {value!r}")
        return kind(value)

    return check


def _bound(maximum: float) -> str:
    """*maximum* as a message shows it: ``86400`` rather than ``86400.0``."""
    return str(int(maximum)) if float(maximum).is_integer() else str(maximum)


def seconds(*, minimum: Optional[float] = None, above: Optional[float] = None,
            maximum: float = MAX_SECONDS, optional: bool = False, text: bool = True) -> Callable[[Any], Any]:
    """A duration in seconds, at most *maximum* (one day unless said otherwise)."""
    return number(float, minimum=minimum, above=above, maximum=maximum, optional=optional, text=text)


def count(*, minimum: int = 1, maximum: int = MAX_THREADS, optional: bool = False,
          text: bool = True) -> Callable[[Any], Any]:
    """A whole number of things (threads, connections, attempts) from *minimum* to *maximum*."""
    return number(int, minimum=minimum, maximum=maximum, optional=optional, text=text)


def checked(name: str, value: Any, validator: Callable[[Any], Any], errors: Optional[Dict[str, str]] = None,
            default: Any = None) -> Any:
    """*value* as *validator* returns it, or ConfigError ``"<name> must be ..., got ..."`` naming *name*.

    How a constructor that is not a config class (a Runner, a job, a source) checks an argument.
    With *errors*, a bad value is recorded there instead (to report every one at once) and
    *default* returned.
    """
    try:
        return validator(value)
    except ValueError as exc:
        if errors is None:
            raise ConfigError(f"{name} {exc}", {name: str(exc)}) from None
        errors[name] = f"{name} {exc}"
        return default


def tick_interval(value: Any) -> float:
    """*value* as seconds between two ticks: a number (not text) > 0, at most :data:`MAX_INTERVAL`
    (one week); ValueError ``"must be ..."`` otherwise (the field validator of ``PollerConfig.interval``)."""
    result: float = seconds(above=0, maximum=MAX_INTERVAL, text=False)(value)
    return result


def check_interval(value: Any) -> float:
    """:func:`tick_interval`, its ValueError saying ``"interval must be ..."``. A poller's interval and
    a job's alike."""
    try:
        return tick_interval(value)
    except ValueError as exc:
        raise ValueError(f"interval {exc}") from None


def check_jitter(jitter: Any, interval: float) -> float:
    """*jitter* if ``0 <= jitter < interval`` (jitter moves a tick within its own interval), else ValueError."""
    try:
        value: float = seconds(minimum=0, maximum=MAX_INTERVAL, text=False)(jitter)
    except ValueError:
        value = -1.0
    if not 0 <= value < interval:
        raise ValueError(f"jitter must be >= 0 and smaller than interval ({interval!r}), got {jitter!r}")
    return value


def flag(value: Any) -> bool:
    """True or False itself: a constructor's switch (``"false"`` would be true as a truth value)."""
    if not isinstance(value, bool):
        raise ValueError(f"must be True or False, got {value!r}")
    return value


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ValueError(f"must be true or false, got {value!r}")


def http_url(optional: bool = True, relative_ok: bool = False, base: bool = False) -> Callable[[Any], Any]:
    """An absolute http(s) URL by :func:`syncworkers.http.urls.normal_url` (the one URL rule), returned
    with its host as the wire carries it (``http://bücher.example`` is ``http://xn--bcher-kva.example``).

    *base*: a base URL, which must have no query string or fragment; *relative_ok*:
    a path starting with ``/`` passes too, held to the same rule. Never quotes a
    password or a query string.
    """
    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"must be a URL, got {value!r}")
        if relative_ok and value.startswith("/"):
            # A path is checked as joined to a base URL, by the same rule as a whole URL.
            problem = url_problem("http://localhost" + value)
            if problem is not None:
                raise ValueError(f"{problem}: {_shown_url(value)!r}")
            return value
        try:
            return normal_url(value, base=base)
        except ValueError as exc:
            raise ValueError(f"{exc}: {_shown_url(value)!r}") from None

    return check


def _shown_url(url: str) -> str:
    """*url* fit for an error message: no password, query string or fragment.

    One that cannot be parsed (a bad port) is shown masked as text, so the
    message still points at what is wrong.
    """
    shown = safe_url(url) or ""
    if shown == "<invalid url>":
        shown = redact_text(url.split("?", 1)[0].split("#", 1)[0])
    return shown


def choice(options: Sequence[str], upper: bool = False) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        norm = value.upper() if upper else value.lower()
        # Unstripped: "GET\r\n" must not pass as GET (a method or header value would carry it).
        if norm not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return norm

    return check


def optional_str(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    return value


def header_value(value: Any) -> Optional[str]:
    """None, or text a header can carry (``user_agent``, ``bearer_token``, ``api_key``) by
    :func:`syncworkers.http.headers.value_problem`; never quoted back (it may be a secret)."""
    text = optional_str(value)
    if text is not None:
        problem = value_problem(text)
        if problem is not None:
            raise ValueError(f"cannot be sent in a header: it {problem}")
    return text


def outbox_url(value: Any) -> Optional[str]:
    """An outbox location by :func:`~syncworkers.config.connections.parse_connection_url`: a PostgreSQL
    URL, a ``sqlite:///`` URL or a file path (None passes); returned as given, stripped."""
    if value is None:
        return None
    return parse_connection_url(value, (SQLITE, POSTGRESQL)).text


def existing_file(value: Any) -> Optional[str]:
    path = optional_str(value)
    if path is not None and not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}")
    return path


def str_mapping(value: Any) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of strings, got {type(value).__name__}")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"keys and values must be strings, got {k!r}: {type(v).__name__}")
    return MappingProxyType(dict(value))


def enum_member(enum_cls: Type[enum.Enum]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        try:
            return enum_cls(value.lower() if isinstance(value, str) else value)
        except ValueError:
            raise ValueError(
                f"must be one of {', '.join(str(m.value) for m in enum_cls)}, got {value!r}"
            ) from None

    return check


def statuses(value: Any) -> Tuple[int, ...]:
    try:
        codes = tuple(sorted({int(v) for v in value}))
    except (TypeError, ValueError):
        raise ValueError(f"must be a collection of status codes, got {value!r}") from None
    if any(not 100 <= c <= 599 for c in codes):
        raise ValueError(f"status codes must be 100-599, got {value!r}")
    return codes


def delays(value: Any) -> Tuple[float, ...]:
    """A schedule: delays in seconds, in order (a sequence, or comma separated text).

    Text that holds no delay (``''``: an empty ``WEBHOOK_RETRY_SCHEDULE``) is refused: it is a
    variable left empty far more often than a wish. An empty sequence given in code, ``()``, is
    that wish: one attempt, no retry.
    """
    given = value
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
        if not value:
            raise ValueError(f"must hold at least one delay in seconds, got {given!r} (for no retry "
                             "at all, give an empty sequence in code)")
    if isinstance(value, (bytes, Mapping, set, frozenset, bool, int, float)):  # one number, or no order
        raise ValueError(f"must be a sequence of seconds, got {given!r}")
    try:
        delays = tuple(_delay(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a sequence of seconds, got {given!r}") from None
    if any(d < 0 or d != d for d in delays):
        raise ValueError(f"delays must be >= 0, got {given!r}")
    if any(d > MAX_INTERVAL for d in delays):
        raise ValueError(f"delays must be <= {_bound(MAX_INTERVAL)} (one week), got {given!r}")
    return delays


def _delay(value: Any) -> float:
    """One delay of a schedule: a number, or its text; never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(value)
    return float(value)


def exception_spec(value: Any) -> Any:
    def is_exc(v: Any) -> bool:
        return isinstance(v, type) and issubclass(v, BaseException)

    if is_exc(value) or (isinstance(value, tuple) and value and all(is_exc(v) for v in value)):
        return value
    raise ValueError(f"must be an exception class or a tuple of them, got {value!r}")


def verify_setting(value: Any) -> Any:
    """True, False, or the path of an existing CA bundle."""
    try:
        return boolean(value)
    except ValueError:
        pass
    if isinstance(value, str) and os.path.exists(value):
        return value
    raise ValueError(f"must be true, false or the path of a CA bundle, got {value!r}")


def header_name(value: Any) -> str:
    """An HTTP header name by :func:`syncworkers.http.headers.name_problem` (surrounding spaces dropped)."""
    if not isinstance(value, str) or name_problem(value.strip()) is not None:
        raise ValueError(f"must be an HTTP header name, got {value!r}")
    return value.strip()


def sent_header_name(value: Any) -> str:
    """A header name the client sends (``api_key_header``): :func:`header_name`, not one the transport sets."""
    name = header_name(value)
    if is_transport_header(name):
        raise ValueError(f"must not be a header the HTTP transport sets (framing, connection, Host, Proxy-*), "
                         f"got {value!r}")
    return name


def header_mapping(value: Any) -> Mapping[str, str]:
    """Headers the client sends (``default_headers``): :func:`str_mapping`, each by
    :func:`syncworkers.http.headers.header_problem` (no line break, none the transport sets)."""
    headers = str_mapping(value)
    for name, text in headers.items():
        problem = header_problem(name, text)
        if problem is not None:
            raise ValueError(f"has a header that cannot be sent: {problem}")
    return headers


def header_names(value: Any) -> Tuple[str, ...]:
    """A sequence of header names (one name alone is accepted too)."""
    items = [value] if isinstance(value, str) else value
    try:
        names = tuple(items)
    except TypeError:
        raise ValueError(f"must be a sequence of HTTP header names, got {value!r}") from None
    for name in names:
        try:
            header_name(name)
        except ValueError:
            raise ValueError(f"must be HTTP header names, got {name!r}") from None
    return tuple(str(n).strip() for n in names)


def signing_secret(value: Any) -> Any:
    """None, or secrets that :func:`syncworkers.signing.load_secrets` accepts (never quoted back)."""
    if value is None:
        return None
    try:
        load_secrets(value)
    except ValueError as exc:  # its message never quotes the secret
        raise ValueError(f"is invalid: {exc}") from None
    return value


def parse_networks(value: Union[str, Sequence[str], None]) -> Tuple[Network, ...]:
    """CIDRs (a list, or a comma/space separated string) as networks; ConfigError quoting a bad one."""
    if value is None:
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ConfigError(f"allowed_networks: {item!r} is not a CIDR network (e.g. 10.1.0.0/16)") from None
    return tuple(networks)


def networks(value: Any) -> Tuple[Any, ...]:
    """CIDR networks: a list, or one comma/space separated string (WEBHOOK_ALLOWED_NETWORKS)."""
    if value is not None and not isinstance(value, (str, list, tuple, set, frozenset)):
        raise ValueError(f"must be a list of CIDR networks, got {type(value).__name__}")
    try:
        return parse_networks(value if value is None or isinstance(value, str) else [str(n) for n in value])
    except ValueError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None


def instance_of(value: Any, cls: Type[Any]) -> Any:
    if value is not None and not isinstance(value, cls):
        raise ValueError(f"must be a {cls.__name__}, got {type(value).__name__}")
    return value
