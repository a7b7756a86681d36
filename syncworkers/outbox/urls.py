"""Opening the outbox store a location names (parsed by :mod:`syncworkers.config.connections`)."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from ..config.connections import POSTGRESQL, SQLITE, ConnectionURL, parse_connection_url
from ..exceptions import ConfigError, safe_url
from .store import OutboxStore

#: Constructor options the SQLite store takes (the PostgreSQL-only ones are dropped for it).
_SQLITE_OPTIONS = ("lease_seconds", "owner", "clock")


def outbox_location(location: Union[str, "os.PathLike[str]"]) -> ConnectionURL:
    """*location* (a PostgreSQL URL, a ``sqlite:///`` URL or a file path) parsed; ConfigError saying why not."""
    try:
        return parse_connection_url(os.fspath(location), (SQLITE, POSTGRESQL))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid outbox location: {exc}") from None


def sqlite_path(location: str) -> str:
    """The file a ``sqlite:///relative`` / ``sqlite:////absolute`` URL or a plain path names."""
    return outbox_location(location).path or ""


def printable_location(location: str) -> str:
    """An outbox location fit to print (:attr:`~syncworkers.config.connections.ConnectionURL.shown`): a
    database URL without its password; a file path or ``sqlite:`` URL as given (its folder names are
    not secrets). One that does not parse is printed as a URL would be."""
    try:
        return outbox_location(location).shown
    except ConfigError:
        return safe_url(location) or ""


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
    where = outbox_location(location)
    if where.kind == POSTGRESQL:
        try:
            from .postgres import PostgresOutbox
        except ImportError as exc:
            raise ConfigError(f"{exc} (outbox {where.shown!r})") from None
        return PostgresOutbox(where.text, **options)
    from .sqlite import Outbox

    return Outbox(where.path, **{k: val for k, val in options.items() if k in _SQLITE_OPTIONS})


__all__ = ["open_outbox", "outbox_location", "printable_location", "sqlite_path"]
