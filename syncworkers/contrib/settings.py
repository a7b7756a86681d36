"""The settings every framework integration reads, their one validation, and the workers and sender built from them.

Flask reads them from ``app.config["SYNCWORKERS_*"]``, Django from the
``SYNCWORKERS`` dict; both end up here. :func:`problems` is the one check of
their values: Flask's ``init_app`` raises :class:`SettingsError` with what it
finds, Django's system checks list it (``syncworkers.E0NN``), and the
``check`` commands print it, one line per problem.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import click

from ..config import validators as v
from ..config.connections import POSTGRESQL, SQLITE, parse_connection_url
from ..exceptions import ConfigError, safe_url

#: The keys of the settings, as Django's ``SYNCWORKERS`` dict spells them (Flask adds ``SYNCWORKERS_``).
KEYS = ("WORKERS", "MAX_WORKERS", "OUTBOX", "COORDINATION", "BASE_URL", "SIGNING_SECRET", "AUTOSTART")

#: The ids of the problems :func:`problems` reports (Django's system checks show them).
UNKNOWN_KEY = "syncworkers.E001"
BAD_VALUE = "syncworkers.E002"
BAD_SECRET = "syncworkers.E003"
BAD_URL = "syncworkers.E004"
MISSING_EXTRA = "syncworkers.E005"

#: The fix of a short or unreadable signing secret.
SECRET_FIX = "use 'whsec_' + the base64 of 24 to 64 random bytes"


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings: which key (as the app spells it), what, and how to fix it."""

    id: str
    key: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" + (f" ({self.fix})" if self.fix else "")


class SettingsError(ConfigError, click.ClickException):
    """The settings are wrong: one line naming each key and its fix.

    A ConfigError where the app is built; under a click command (``flask
    syncworkers check``, ``flask shell``) click prints it as one line per
    problem and exits 2 instead of showing a traceback.
    """

    exit_code = 2

    def __init__(self, found: Sequence[Problem]) -> None:
        self.problems = list(found)
        message = "; ".join(map(str, self.problems))
        ConfigError.__init__(self, message, {p.key: p.message for p in self.problems})
        click.ClickException.__init__(self, message)

    def format_message(self) -> str:
        return "\n".join(map(str, self.problems))


def problems(values: Mapping[str, Any], prefix: str = "", names: Optional[Mapping[str, str]] = None) -> List[Problem]:
    """Every problem of the settings in *values*; keys not given take the defaults.

    *names* maps each of :data:`KEYS` to the key the app spells it with in
    *values* (default: *prefix* + KEY). With a *prefix* (Flask's
    ``SYNCWORKERS_``) only the keys that start with it are the settings' own;
    without one (Django's dict) every key is. Nothing connects: whether the
    servers answer is for the ``check`` commands to find out.
    """
    spelt = {key: (names or {}).get(key, prefix + key) for key in KEYS}
    found: List[Problem] = []
    known = list(spelt.values())
    for key in values:
        if isinstance(key, str) and key.startswith(prefix) and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            fix = f"did you mean {close[0]}?" if close else f"the settings are {', '.join(known)}"
            found.append(Problem(UNKNOWN_KEY, key, "is not a setting", fix))
    for key, name in spelt.items():
        value = values.get(name)
        if value is not None:
            problem = _CHECKS[key](value)
            if problem is not None:
                found.append(dataclasses.replace(problem, key=name))
    return found


def check(values: Mapping[str, Any], prefix: str = "", names: Optional[Mapping[str, str]] = None) -> None:
    """Raise :class:`SettingsError` naming every problem of *values* (see :func:`problems`)."""
    found = problems(values, prefix, names)
    if found:
        raise SettingsError(found)


def _workers(value: Any) -> Optional[Problem]:
    from ..workers.base import HTTPWorker

    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return Problem(BAD_VALUE, "", f"must be a list, got {type(value).__name__}",
                       "give ['module:attr', ...] import strings or worker objects")
    for entry in value:
        if isinstance(entry, HTTPWorker):
            continue
        if not isinstance(entry, str) or entry.count(":") != 1 or "" in entry.split(":"):
            return Problem(BAD_VALUE, "", f"{entry!r} is neither a 'module:attr' string nor a worker",
                           "give ['module:attr', ...] import strings or worker objects")
    return None


def _max_workers(value: Any) -> Optional[Problem]:
    try:
        v.count()(value)
    except ValueError as exc:
        return Problem(BAD_VALUE, "", str(exc), "give the number of threads of the shared pool, or leave it unset")
    return None


def _autostart(value: Any) -> Optional[Problem]:
    try:
        v.boolean(value)
    except ValueError as exc:
        return Problem(BAD_VALUE, "", str(exc), "give True or False")
    return None


def _secret(value: Any) -> Optional[Problem]:
    try:
        v.signing_secret(value)
    except (ConfigError, ValueError) as exc:  # never quotes the secret
        message = str(exc).removeprefix("is invalid: ")
        return Problem(BAD_SECRET, "", message, "" if "whsec_" in message else SECRET_FIX)
    return None


def _base_url(value: Any) -> Optional[Problem]:
    try:
        v.http_url(base=True)(value)
    except ValueError as exc:
        return Problem(BAD_URL, "", str(exc), "give the http(s) URL the endpoints' paths are joined to")
    return None


def _outbox(value: Any) -> Optional[Problem]:
    if value is None:
        return None
    try:
        location = parse_connection_url(value, (SQLITE, POSTGRESQL))
    except ValueError as exc:
        return Problem(BAD_URL, "", str(exc))  # which names the forms accepted
    if location.kind == POSTGRESQL:
        try:
            from ..outbox import postgres  # noqa: F401  (its ImportError names the extra)
        except ImportError as exc:
            return _missing_extra(str(exc)) or Problem(MISSING_EXTRA, "", str(exc),
                                                       "pip install 'syncworkers[postgresql]'")
    return None


def _coordination(value: Any) -> Optional[Problem]:
    from ..scheduling.coordination import open_coordination

    try:
        open_coordination(value).close()  # connects on first claim: nothing is asked here
    except ConfigError as exc:
        return _missing_extra(str(exc)) or Problem(BAD_URL, "", str(exc),
                                                   "give a redis://, rediss:// or postgresql:// URL")
    return None


def _missing_extra(text: str) -> Optional[Problem]:
    """The problem of an error that says which extra to install (``...: pip install 'syncworkers[x]'``)."""
    what, _, extra = text.partition(": pip install ")
    return Problem(MISSING_EXTRA, "", what, "pip install " + extra) if extra else None


_CHECKS = {"WORKERS": _workers, "MAX_WORKERS": _max_workers, "OUTBOX": _outbox, "COORDINATION": _coordination,
           "BASE_URL": _base_url, "SIGNING_SECRET": _secret, "AUTOSTART": _autostart}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What an app configures: its workers, the sender's outbox, base URL and secret, coordination, autostart."""

    #: ``"module:attr"`` import strings (a worker class, instance or factory) or worker objects.
    workers: Tuple[Any, ...] = ()
    #: Threads of the shared pool (None: the Runner's default).
    max_workers: Optional[int] = None
    #: The sender's outbox: a path, ``sqlite:///...`` or ``postgresql://...`` URL; None: in memory.
    outbox: Optional[str] = None
    #: ``postgresql://...`` or ``redis://...``: each poller tick runs once across processes.
    coordination: Optional[str] = None
    base_url: Optional[str] = None
    signing_secret: Any = dataclasses.field(default=None, repr=False)
    #: Start the workers with each process a web server runs to serve requests.
    autostart: bool = False

    def __post_init__(self) -> None:
        check({key: getattr(self, key.lower()) for key in KEYS})
        object.__setattr__(self, "workers", tuple(self.workers))
        object.__setattr__(self, "max_workers", v.count(optional=True)(self.max_workers))
        object.__setattr__(self, "autostart", v.boolean(self.autostart))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], prefix: str = "",
                     names: Optional[Mapping[str, str]] = None) -> "Settings":
        """Settings from *values*, checked (unknown keys included): see :func:`problems` for *prefix* and *names*."""
        check(values, prefix, names)
        spelt = {key: (names or {}).get(key, prefix + key) for key in KEYS}
        return cls(**{key.lower(): values[name] for key, name in spelt.items() if values.get(name) is not None})

    def describe(self) -> Dict[str, Any]:
        """A log-safe summary (no secret, URLs without credentials)."""
        from ..outbox.urls import printable_location

        return {"workers": [w if isinstance(w, str) else getattr(w, "name", type(w).__name__)
                            for w in self.workers],
                "max_workers": self.max_workers, "outbox": printable_location(self.outbox) if self.outbox else "memory",
                "coordination": safe_url(self.coordination) if self.coordination else None}


def outbox_options(outbox: Optional[str]) -> Dict[str, Any]:
    """WebhookConfig fields for an outbox given as a path or a URL."""
    if outbox is None:
        return {}
    return {"outbox_url": outbox} if "://" in outbox else {"outbox_path": outbox}


def make_sender(settings: Settings, **overrides: Any) -> Any:
    """The app's WebhookSenderWorker: base URL, signing secret and outbox from *settings*."""
    from ..config.settings import WebhookConfig
    from ..workers.webhook import WebhookSenderWorker

    config = WebhookConfig(**outbox_options(settings.outbox)) if settings.outbox else None
    options: Dict[str, Any] = {"name": "syncworkers-sender", **overrides}
    return WebhookSenderWorker(base_url=settings.base_url, webhook_config=config,
                               signing_secret=settings.signing_secret, **options)


def make_workers(settings: Settings) -> List[Any]:
    """The workers of ``WORKERS``: import strings built as ``syncworkers run`` builds them, objects as they are."""
    from ..cli import build_worker
    from ..workers.base import HTTPWorker

    workers: List[Any] = []
    for entry in settings.workers:
        if isinstance(entry, HTTPWorker):
            workers.append(entry)
        else:
            try:
                workers.append(build_worker(entry))
            except click.ClickException as exc:  # the CLI's one-line reason, as a config error here
                raise ConfigError(f"WORKERS: {exc.format_message()}", {"WORKERS": exc.format_message()}) from exc
    return workers


def make_runner(workers: Sequence[Any], settings: Settings, name: str) -> Any:
    """A Runner for *workers* with the app's pool size and coordination."""
    from ..scheduling.runner import Runner

    return Runner(list(workers), max_workers=settings.max_workers, name=name, coordination=settings.coordination)


__all__ = ["BAD_SECRET", "BAD_URL", "BAD_VALUE", "KEYS", "MISSING_EXTRA", "Problem", "Settings", "SettingsError",
           "UNKNOWN_KEY", "check", "make_runner", "make_sender", "make_workers", "outbox_options", "problems"]
