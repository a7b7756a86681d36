"""Structured logging: ``logger.info("msg", key=value)`` on top of stdlib logging, secrets redacted.

:class:`StructuredLogger` wraps a stdlib :class:`logging.Logger`. Keyword fields
(merged with the bound context) become attributes of the ``LogRecord``, as
``extra=`` makes them, so ``%(delivery_id)s`` formats, python-json-logger and
structlog's stdlib bridge read them; a field whose name the record already has
(``name``, ``msg``, ``args``, ``levelname``, ... ``message``, ``asctime``) is set as
``field_<name>``. A ``{name}`` in the message that names a field is replaced by its
value, so the message says what happened on its own, whatever the formatter: the
record keeps the sentence as a ``%(name)s`` template in ``record.msg`` with those
fields in ``record.args`` (``getMessage()`` gives the sentence).

Before a record is created the message, the fields and the formatted traceback are
redacted with the :class:`~syncworkers.observability.redaction.Redactor` the logger is
given (the secret values and names its owner configured), and a field holding any
other object than text, a number, a date or a container of those is kept as its
masked text: any handler (a Django ``LOGGING`` config, gunicorn's, pytest's caplog)
sees only masked values. :class:`TextFormatter` and :class:`JSONFormatter` redact
their output once more. Nothing is computed for a disabled level.

``import logging`` here is the stdlib module: imports are absolute.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Mapping
from datetime import date, datetime
from types import FrameType, TracebackType
from typing import Any, Dict, FrozenSet, Optional, Tuple, Type, Union

from ..exceptions import ConfigError
from .redaction import (  # re-exported: this was their home before redaction.py
    MASK,
    MIN_SECRET_LENGTH,
    Redactor,
    is_secret_key,
    redact,
    redact_headers,
    redact_text,
    safe_url,
)

#: The stdlib logger that :func:`configure_logging` configures; every syncworkers logger is below it.
ROOT_LOGGER = "syncworkers"

ExcInfo = Union[None, bool, BaseException,
                Tuple[Optional[Type[BaseException]], Optional[BaseException], Optional[TracebackType]]]

# -- the logger -----------------------------------------------------------------

_PLAIN_FORMATTER = logging.Formatter()
#: The redactor of loggers given none: the rule alone, nothing registered.
_RULE_ONLY = Redactor()


def _safe_str(value: Any) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unprintable {type(value).__name__}>"


def _find_caller(depth: int, stack_info: bool) -> Tuple[str, int, str, Optional[str]]:
    """Like ``Logger.findCaller``, *depth* frames above the function that calls this one."""
    frame: FrameType = sys._getframe(1)
    for _ in range(depth):
        if frame.f_back is None:
            break
        frame = frame.f_back
    sinfo = None
    if stack_info:
        sinfo = "Stack (most recent call last):\n" + "".join(traceback.format_stack(frame)).rstrip("\n")
    code = frame.f_code
    return code.co_filename, frame.f_lineno, code.co_name, sinfo


def _exc_tuple(exc_info: ExcInfo) -> Optional[Tuple[Any, Any, Any]]:
    if not exc_info:
        return None
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    # exc_info=True outside an except block: there is nothing to show.
    return exc_info if exc_info[0] is not None else None


class StructuredLogger:
    """A stdlib logger that takes keyword fields: ``log.info("sent {url}", url=url, status_code=200)``.

    The fields become record attributes; ``{name}`` placeholders in the message are
    filled from them. ``%``-style ``args`` work as in stdlib logging. The message and
    the fields are redacted by *redactor* (the rule alone when None) before the
    record is created.
    """

    def __init__(self, logger: logging.Logger, context: Optional[Dict[str, Any]] = None,
                 redactor: Optional[Redactor] = None):
        self.logger = logger
        self.context: Dict[str, Any] = dict(context or {})
        self.redactor = redactor if redactor is not None else _RULE_ONLY

    @property
    def name(self) -> str:
        return self.logger.name

    def __repr__(self) -> str:
        return f"<StructuredLogger {self.logger.name}>"

    def bind(self, **fields: Any) -> "StructuredLogger":
        """Return a logger that adds *fields* to every record (call fields win on a clash)."""
        return StructuredLogger(self.logger, {**self.context, **fields}, self.redactor)

    def isEnabledFor(self, level: int) -> bool:
        return self.logger.isEnabledFor(level)

    def debug(self, msg: Any, /, *args: Any, exc_info: ExcInfo = None, stack_info: bool = False,
              stacklevel: int = 1, **fields: Any) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            self._log(logging.DEBUG, msg, args, exc_info, stack_info, stacklevel, fields)

    def info(self, msg: Any, /, *args: Any, exc_info: ExcInfo = None, stack_info: bool = False,
             stacklevel: int = 1, **fields: Any) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            self._log(logging.INFO, msg, args, exc_info, stack_info, stacklevel, fields)

    def warning(self, msg: Any, /, *args: Any, exc_info: ExcInfo = None, stack_info: bool = False,
                stacklevel: int = 1, **fields: Any) -> None:
        if self.logger.isEnabledFor(logging.WARNING):
            self._log(logging.WARNING, msg, args, exc_info, stack_info, stacklevel, fields)

    def error(self, msg: Any, /, *args: Any, exc_info: ExcInfo = None, stack_info: bool = False,
              stacklevel: int = 1, **fields: Any) -> None:
        if self.logger.isEnabledFor(logging.ERROR):
            self._log(logging.ERROR, msg, args, exc_info, stack_info, stacklevel, fields)

    def exception(self, msg: Any, /, *args: Any, exc_info: ExcInfo = True, stack_info: bool = False,
                  stacklevel: int = 1, **fields: Any) -> None:
        """Log at ERROR with the current exception's traceback."""
        if self.logger.isEnabledFor(logging.ERROR):
            self._log(logging.ERROR, msg, args, exc_info, stack_info, stacklevel, fields)

    def critical(self, msg: Any, /, *args: Any, exc_info: ExcInfo = None, stack_info: bool = False,
                 stacklevel: int = 1, **fields: Any) -> None:
        if self.logger.isEnabledFor(logging.CRITICAL):
            self._log(logging.CRITICAL, msg, args, exc_info, stack_info, stacklevel, fields)

    def log(self, level: int, msg: Any, /, *args: Any, exc_info: ExcInfo = None,
            stack_info: bool = False, stacklevel: int = 1, **fields: Any) -> None:
        if not isinstance(level, int):
            raise TypeError(f"level must be an int, not {level!r}")
        if self.logger.isEnabledFor(level):
            self._log(level, msg, args, exc_info, stack_info, stacklevel, fields)

    def _log(self, level: int, msg: Any, args: Tuple[Any, ...], exc_info: ExcInfo, stack_info: bool,
             stacklevel: int, fields: Dict[str, Any]) -> None:
        # Every public method calls this directly: one frame up is it, two is its caller.
        filename, lineno, func, sinfo = _find_caller(stacklevel + 1, stack_info)
        exc = _exc_tuple(exc_info)
        record = self.logger.makeRecord(self.logger.name, level, filename, lineno, msg, args,
                                        exc, func, None, sinfo)
        redactor = self.redactor
        values = _loggable(redactor.redact({**self.context, **fields}) if (self.context or fields) else {}, redactor)
        template = _template(msg, values, redactor) if not args and values and isinstance(msg, str) else None
        if template is not None:
            record.msg, record.args = template
        else:
            try:
                text = record.getMessage()
            except Exception:  # bad %-args: keep what we have rather than lose the line
                text = f"{_safe_str(msg)} {_safe_str(args)}"
            if values and "{" in text:
                text = _PLACEHOLDER.sub(lambda m: _shown(values[m.group(1)]) if m.group(1) in values
                                        else m.group(0), text)
            record.msg, record.args = redactor.text(text), ()
        taken = record.__dict__
        for key, value in values.items():
            taken[f"field_{key}" if key in taken or key in _FORMATTER_ATTRS else key] = value
        if exc is not None:
            # Stdlib formatters reuse a cached exc_text, so plain handlers get the masked traceback.
            record.exc_text = redactor.text(_PLAIN_FORMATTER.formatException(exc))
        if sinfo:
            record.stack_info = redactor.text(sinfo)
        self.logger.handle(record)

#: ``{name}`` in a message: replaced by the field *name* when the call has one.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Attributes a Formatter adds to a record as it formats it (never set by a field).
_FORMATTER_ATTRS = frozenset({"message", "asctime"})


def _template(msg: str, values: Dict[str, Any], redactor: Redactor) -> Optional[Tuple[str, Dict[str, str]]]:
    """``(%-template, its fields shown)`` for a message whose ``{name}`` placeholders name fields, or None.

    None too when the sentence they make would be masked (a credential split between the
    message and a field): the caller then keeps the masked sentence itself.
    """
    if "{" not in msg:
        return None
    shown: Dict[str, str] = {}

    def placeholder(match: "re.Match[str]") -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0).replace("%", "%%")
        shown[name] = _shown(values[name])
        return f"%({name})s"

    pieces = []
    last = 0
    for match in _PLACEHOLDER.finditer(msg):
        pieces.append(msg[last:match.start()].replace("%", "%%"))
        pieces.append(placeholder(match))
        last = match.end()
    if not shown:
        return None
    pieces.append(msg[last:].replace("%", "%%"))
    template = "".join(pieces)
    text = template % shown
    return None if redactor.text(text) != text else (template, shown)


def _shown(value: Any) -> str:
    """A field's value as a sentence shows it: ``30`` for 30.0, ``0.25`` for 0.25, text as it is."""
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        text = f"{value:.3f}".rstrip("0").rstrip(".")
        return text if text not in ("", "-0") else "0"
    if isinstance(value, str):
        return value
    return _text_value(value)


_PLAIN_TYPES = (str, int, float, bool, type(None), datetime, date)


def _loggable(value: Any, redactor: Redactor) -> Any:
    """*value* (redacted) as a record attribute any formatter may print: an object that is not text, a
    number, a date or a container of those becomes its masked text (its ``str()`` may hold a secret)."""
    if isinstance(value, _PLAIN_TYPES):
        return value
    if isinstance(value, dict):
        return {k: _loggable(v, redactor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_loggable(v, redactor) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return redactor.text(_safe_str(value))


def plural(count: int, noun: str, nouns: Optional[str] = None) -> str:
    """*noun* for *count* of it, in a sentence after the number: ``attempt`` for 1, else *nouns* (``attempts``)."""
    return noun if count == 1 else nouns or noun + "s"


def get_logger(name: str = ROOT_LOGGER, *, redactor: Optional[Redactor] = None, **context: Any) -> StructuredLogger:
    """Return a :class:`StructuredLogger` on the stdlib logger *name*, bound to *context*, masking with *redactor*."""
    return StructuredLogger(logging.getLogger(name), context, redactor)


# -- formatters -----------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record is a field (ours, or stdlib ``extra=``).
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | _FORMATTER_ATTRS | {"taskName"}


def _record_fields(record: logging.LogRecord) -> Dict[str, Any]:
    """The record's fields: its attributes beyond those every LogRecord has."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}


def _said(record: logging.LogRecord) -> FrozenSet[str]:
    """The fields the record's message already shows (its ``%(name)s`` template's arguments)."""
    args = record.args
    if not isinstance(args, Mapping):
        return frozenset()
    return frozenset(args) | {f"field_{name}" for name in args}


def _timestamp(record: logging.LogRecord) -> str:
    """ISO-8601 UTC with milliseconds: ``2026-01-01T00:00:00.123Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:
        return f"{_safe_str(record.msg)} {_safe_str(record.args)}"


def _traceback(formatter: logging.Formatter, record: logging.LogRecord, redactor: Redactor) -> Optional[str]:
    if record.exc_info and not record.exc_text:
        record.exc_text = redactor.text(formatter.formatException(record.exc_info))
    return record.exc_text or None


class TextFormatter(logging.Formatter):
    """One line ``2026-01-01T00:00:00.123Z INFO syncworkers.poller: msg key=value key2='a b'``.

    The fields follow the message, but for those it already shows (its ``{name}``
    placeholders). Containers render as compact JSON; a value with spaces, quotes
    or ``=`` is quoted. The traceback and stack, if any, follow on their own lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        redactor = _RULE_ONLY
        parts = [f"{_timestamp(record)} {record.levelname} {record.name}: {_message(record)}"]
        said = _said(record)
        for key, value in redactor.redact(_record_fields(record)).items():
            if key not in said:
                parts.append(f"{key}={_text_value(value)}")
        text = " ".join(parts)
        exc_text = _traceback(self, record, redactor)
        if exc_text:
            text += "\n" + exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        return redactor.text(text)


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        needs_quotes = not value or any(c.isspace() or c in "\"'=" for c in value)
        return repr(value) if needs_quotes else value
    if isinstance(value, (dict, list, tuple)):
        try:
            text = json.dumps(value, separators=(",", ":"), default=_safe_str, allow_nan=False)
        except (TypeError, ValueError):  # cycles, non-string keys
            text = _safe_str(value)
    else:
        text = _safe_str(value)
    return repr(text) if not text or any(c.isspace() for c in text) else text


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, each field, ``exc``, ``stack``.

    A field whose name is one of those keys is written as ``field_<name>``.
    Values JSON cannot hold are written as their ``str()``. Never raises.
    """

    _CORE = ("ts", "level", "logger", "msg", "exc", "stack")

    def format(self, record: logging.LogRecord) -> str:
        redactor = _RULE_ONLY
        try:
            payload: Dict[str, Any] = {
                "ts": _timestamp(record),
                "level": record.levelname,
                "logger": record.name,
                "msg": _message(record),
            }
            for key, value in _record_fields(record).items():
                payload[f"field_{key}" if key in self._CORE else str(key)] = value
            exc_text = _traceback(self, record, redactor)
            if exc_text:
                payload["exc"] = exc_text
            if record.stack_info:
                payload["stack"] = record.stack_info
            return redactor.text(_dumps(redactor.redact(payload), redactor))
        except Exception as exc:  # a log line must never take the program down
            return json.dumps({"ts": _timestamp(record), "level": record.levelname,
                               "logger": record.name, "msg": redactor.text(_safe_str(record.msg)),
                               "format_error": redactor.text(_safe_str(exc))})


def _dumps(payload: Dict[str, Any], redactor: Redactor) -> str:
    def default(value: Any) -> str:
        return redactor.text(_safe_str(value))

    try:
        return json.dumps(payload, default=default, allow_nan=False)
    except (TypeError, ValueError):  # a cycle, a non-string key or NaN somewhere: fall back per field
        safe = {}
        for key, value in payload.items():
            try:
                json.dumps(value, default=default, allow_nan=False)
                safe[key] = value
            except (TypeError, ValueError):
                safe[key] = default(value)
        return json.dumps(safe, default=default)


# -- urllib3's own log lines ---------------------------------------------------------

#: The loggers urllib3 writes URLs to (at DEBUG, and in connection warnings).
URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager",
                   "urllib3.util.retry", "urllib3.response")


class URLRedactingFilter(logging.Filter):
    """Masks what urllib3 would print of a URL: userinfo, query string, secret path segments.

    urllib3 logs every request line (``"GET /path?token=x HTTP/1.1" 200``) at DEBUG; an
    application that turns DEBUG on for its root logger would otherwise write our
    credentials to its logs. Besides the rule, the secrets of every live
    :class:`~syncworkers.observability.redaction.Redactor` handed to :meth:`watch` are
    masked (each client hands its own). The filter runs only for records urllib3
    actually creates, so a disabled DEBUG level costs nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._redactors: "weakref.WeakSet[Redactor]" = weakref.WeakSet()
        self._lock = threading.Lock()

    def watch(self, redactor: Redactor) -> None:
        """Mask *redactor*'s secrets too, for as long as it lives."""
        with self._lock:
            self._redactors.add(redactor)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_safe_arg(a) for a in args)
        text = redact_text(_message(record))
        with self._lock:
            redactors = list(self._redactors)
        for redactor in redactors:
            text = redactor.text(text)
        record.msg, record.args = text, ()
        return True


def _safe_arg(value: Any) -> Any:
    if isinstance(value, str) and (value.startswith("/") or "://" in value):
        return safe_url(value)
    return value


_install_lock = threading.Lock()


def install_urllib3_redaction(redactor: Optional[Redactor] = None) -> None:
    """Put one :class:`URLRedactingFilter` on each of urllib3's loggers (idempotent), masking *redactor*'s
    secrets too. Every HTTPClient calls it with its own when it is built; importing changes nothing."""
    with _install_lock:
        for name in URLLIB3_LOGGERS:
            logger = logging.getLogger(name)
            installed = [f for f in logger.filters if isinstance(f, URLRedactingFilter)]
            if installed:
                found = installed[0]
            else:
                found = URLRedactingFilter()
                logger.addFilter(found)
            if redactor is not None:
                found.watch(redactor)


# -- configuration ----------------------------------------------------------------

_FORMATTERS = {"text": TextFormatter, "json": JSONFormatter}
_configure_lock = threading.Lock()


def _level_number(level: Union[str, int]) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    text = str(level).strip().upper()
    if text.isdigit():
        return int(text)
    number = logging.getLevelName(text)
    if not isinstance(number, int):
        message = f"unknown log level {level!r} (use DEBUG, INFO, WARNING, ERROR or CRITICAL)"
        raise ConfigError(message, {"level": message})
    return number


def configure_logging(level: Union[str, int] = "INFO", fmt: str = "text",
                      stream: Any = None) -> logging.Handler:
    """Send syncworkers' logs to *stream* (default stderr) as ``text`` or ``json`` lines.

    Installs one handler on the ``syncworkers`` logger, replacing the one a
    previous call installed, and sets that logger's level. Returns the handler.
    """
    formatter_class = _FORMATTERS.get(str(fmt).lower())
    if formatter_class is None:
        message = f"unknown log format {fmt!r} (use 'text' or 'json')"
        raise ConfigError(message, {"fmt": message})
    number = _level_number(level)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_class())
    handler._syncworkers_installed = True  # type: ignore[attr-defined]
    logger = logging.getLogger(ROOT_LOGGER)
    with _configure_lock:
        for old in [h for h in logger.handlers if getattr(h, "_syncworkers_installed", False)]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)
        logger.setLevel(number)
    return handler


__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "ROOT_LOGGER",
    "Redactor",
    "StructuredLogger",
    "get_logger",
    "plural",
    "configure_logging",
    "TextFormatter",
    "JSONFormatter",
    "is_secret_key",
    "redact",
    "redact_text",
    "redact_headers",
    "URLRedactingFilter",
    "install_urllib3_redaction",
]
