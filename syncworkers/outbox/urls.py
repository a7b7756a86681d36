"""Opening the outbox store a URL or path names."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from ..config import validators as v
from ..exceptions import ConfigError, safe_url
from .store import OutboxStore

#: Constructor options the SQLite store takes (the PostgreSQL-only ones are dropped for it).
_SQLITE_OPTIONS = ("lease_seconds", "owner", "clock")


def sqlite_path(location: str) -> str:
    """The file a ``sqlite:///relative`` / ``sqlite:////absolute`` URL or a plain path names."""
    if "://" not in location:
        return location
    return location.split("://", 1)[1][1:]


def printable_location(location: str) -> str:
    """An outbox location fit to print: a database URL without its password; a file path or ``sqlite:``
    URL as given (its folder names are not secrets, and a URL parser would turn ``sqlite:////x`` into
    ``sqlite://x``)."""
    return (safe_url(location) or "") if v.is_postgres_url(location) else location


def open_outbox(location: Optional[Union[str, "os.PathLike[str]"]] = None, **options: Any) -> OutboxStore:
    """The outbox store at *location*: a PostgreSQL URL, a ``sqlite:///`` URL or a file path.

    None opens an in-memory SQLite outbox (not durable). *options* go to the
    store's constructor (``lease_seconds``, ``owner``; ``pool_size``, ``table`` and
    ``schema`` for PostgreSQL only, ignored for SQLite). ConfigError names the
    accepted forms for anything else.
    """
    if location is None:
        from .sqlite import Outbox

        return Outbox(None, **{k: val for k, val in options.items() if k in _SQLITE_OPTIONS})
    try:
        text = v.outbox_url(os.fspath(location))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid outbox location: {exc}") from None
    assert text is not None
    if v.is_postgres_url(text):
        try:
            from .postgres import PostgresOutbox
        except ImportError as exc:
            raise ConfigError(f"{exc} (outbox {safe_url(text)!r})") from None
        return PostgresOutbox(v.libpq_url(text), **options)
    from .sqlite import Outbox

    return Outbox(sqlite_path(text), **{k: val for k, val in options.items() if k in _SQLITE_OPTIONS})


__all__ = ["open_outbox", "printable_location", "sqlite_path"]
