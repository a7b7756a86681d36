"""The settings every framework integration reads, and the workers and sender built from them.

Flask reads them from ``app.config["SYNCWORKERS_*"]``, Django from the
``SYNCWORKERS`` dict; both end up here, validated once, in :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import click

from ..config.validators import checked, count
from ..exceptions import ConfigError, safe_url

#: The keys of the settings, as Django's ``SYNCWORKERS`` dict spells them (Flask adds ``SYNCWORKERS_``).
KEYS = ("WORKERS", "MAX_WORKERS", "OUTBOX", "COORDINATION", "BASE_URL", "SIGNING_SECRET")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What an app configures: its workers, the sender's outbox, base URL and secret, coordination."""

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

    def __post_init__(self) -> None:
        workers = self.workers
        if isinstance(workers, (str, bytes)) or not isinstance(workers, Sequence):
            raise ConfigError(f"WORKERS must be a list of 'module:attr' strings or workers, got {workers!r}",
                              {"WORKERS": "must be a list"})
        object.__setattr__(self, "workers", tuple(workers))
        checked("MAX_WORKERS", self.max_workers, count(optional=True, text=False))
        for key in ("outbox", "coordination", "base_url"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{key.upper()} must be a non-empty string, got {safe_url(str(value))!r}",
                                  {key.upper(): "must be a non-empty string"})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], prefix: str = "") -> "Settings":
        """Settings from ``{prefix + KEY: value}``; keys not given take the defaults."""
        names = {key: key.lower() for key in KEYS}
        return cls(**{names[key]: values[prefix + key] for key in KEYS if values.get(prefix + key) is not None})

    def describe(self) -> Dict[str, Any]:
        """A log-safe summary (no secret, URLs without credentials)."""
        return {"workers": [w if isinstance(w, str) else getattr(w, "name", type(w).__name__)
                            for w in self.workers],
                "max_workers": self.max_workers, "outbox": safe_url(self.outbox) if self.outbox else "memory",
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
        elif isinstance(entry, str):
            try:
                workers.append(build_worker(entry))
            except click.ClickException as exc:  # the CLI's one-line reason, as a config error here
                raise ConfigError(f"WORKERS: {exc.format_message()}", {"WORKERS": exc.format_message()}) from exc
        else:
            raise ConfigError(f"WORKERS entries must be 'module:attr' strings or workers, got {entry!r}",
                              {"WORKERS": "must hold 'module:attr' strings or workers"})
    return workers


def make_runner(workers: Sequence[Any], settings: Settings, name: str) -> Any:
    """A Runner for *workers* with the app's pool size and coordination."""
    from ..scheduling.runner import Runner

    return Runner(list(workers), max_workers=settings.max_workers, name=name, coordination=settings.coordination)


__all__ = ["KEYS", "Settings", "make_runner", "make_sender", "make_workers", "outbox_options"]
