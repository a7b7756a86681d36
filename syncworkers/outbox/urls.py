"""Which outbox store a URL or path names, and opening it."""

from __future__ import annotations

import os
from typing import Any, Optional, Union
from urllib.parse import urlsplit

from ..exceptions import ConfigError, safe_url
from .store import OutboxStore

#: The forms an outbox location may take, for error messages.
ACCEPTED = ("postgresql://user:password@host:port/database (also postgres://), sqlite:///relative/path,"
            " sqlite:////absolute/path, or a plain file path")

_POSTGRES = ("postgresql", "postgres")


def is_postgres(location: Optional[Union[str, "os.PathLike[str]"]]) -> bool:
    """True when *location* is a PostgreSQL URL."""
    return isinstance(location, str) and location.split(":", 1)[0].lower() in _POSTGRES and "://" in location


def sqlite_path(location: Union[str, "os.PathLike[str]"]) -> str:
    """The SQLite file a ``sqlite:///...`` URL or plain path names; ConfigError for other schemes."""
    text = os.fspath(location)
    if "://" not in text:
        if text.split(":", 1)[0].lower() in _POSTGRES:
            raise ConfigError(f"outbox location {safe_url(text)!r} is not valid; accepted: {ACCEPTED}")
        return text
    scheme = text.split("://", 1)[0].lower()
    if scheme != "sqlite":
        raise ConfigError(f"outbox URL scheme {scheme!r} is not supported; accepted: {ACCEPTED}")
    parts = urlsplit(text)
    if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
        raise ConfigError(f"outbox URL {safe_url(text)!r} is not valid; accepted: {ACCEPTED}")
    # sqlite:///relative/path -> "relative/path"; sqlite:////absolute/path -> "/absolute/path"
    return parts.path[1:]


def open_outbox(location: Optional[Union[str, "os.PathLike[str]"]] = None, **options: Any) -> OutboxStore:
    """The outbox store at *location*: a PostgreSQL URL, a ``sqlite:///`` URL or a file path.

    None opens an in-memory SQLite outbox (not durable). *options* go to the
    store's constructor (``lease_seconds``, ``owner``; ``pool_size`` and ``table``
    for PostgreSQL only, ignored by SQLite).
    """
    if is_postgres(location):
        try:
            from .postgres import PostgresOutbox
        except ImportError as exc:
            raise ConfigError(f"{exc} (for outbox {safe_url(str(location))!r})") from None
        return PostgresOutbox(str(location), **options)
    from .sqlite import Outbox

    sqlite_options = {k: v for k, v in options.items() if k in ("lease_seconds", "owner", "clock")}
    return Outbox(None if location is None else sqlite_path(location), **sqlite_options)


__all__ = ["ACCEPTED", "is_postgres", "open_outbox", "sqlite_path"]
