"""Poller state stores: a small JSON value per poller name (the incremental cursor), kept across restarts.

``open_state_store(url)`` picks the backend:

* None (and no ``POLLER_STATE_URL``): in memory — the cursor restarts from its
  ``initial`` value with the process;
* a file path or ``sqlite:///path``: an SQLite file (stdlib ``sqlite3``);
* ``postgresql://...`` (or ``postgres://``, ``postgresql+psycopg://``): a PostgreSQL table
  (psycopg 3, the ``postgresql`` extra).

The location is parsed by :mod:`syncworkers.config.connections`, as every other one.

The table is created on first use. Each call opens and closes its own
connection: a cursor is read and written once per tick, so this costs little
and survives a database restart without any reconnect logic.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any, Dict, Optional, Protocol, Tuple, runtime_checkable

from ..config.connections import POSTGRESQL, SQLITE, parse_connection_url
from ..exceptions import ConfigError, StateStoreError

#: Environment variable naming the state store when ``PollerWorker(state_url=...)`` is not given.
STATE_URL_ENV = "POLLER_STATE_URL"
#: Table (SQLite and PostgreSQL) holding one row per poller name.
STATE_TABLE = "syncworkers_poller_state"
#: Seconds an SQLite connection waits for another writer's lock.
SQLITE_BUSY_TIMEOUT = 30.0
#: Seconds a PostgreSQL connection attempt may take.
PG_CONNECT_TIMEOUT = 10

_CREATE = (f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} "
           "(name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)")
_UPSERT = (f"INSERT INTO {STATE_TABLE} (name, value, updated_at) VALUES ({{p}}, {{p}}, {{p}}) "
           "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at")
_SELECT = f"SELECT value FROM {STATE_TABLE} WHERE name = {{p}}"


@runtime_checkable
class StateStore(Protocol):
    """Where a poller keeps its cursor: JSON-serialisable values by name."""

    def get(self, name: str) -> Any:
        """The value stored under *name*, or None."""
        ...

    def set(self, name: str, value: Any) -> None:
        """Store *value* under *name* durably before returning."""
        ...


class MemoryStateStore:
    """In-process store: lost when the process ends (the default)."""

    def __init__(self) -> None:
        self._values: Dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        with self._lock:
            text = self._values.get(name)
        return None if text is None else json.loads(text)

    def set(self, name: str, value: Any) -> None:
        text = _dumps(value)
        with self._lock:
            self._values[name] = text

    def __repr__(self) -> str:
        return "<MemoryStateStore>"


class SQLiteStateStore:
    """An SQLite file; several threads and processes may share it."""

    def __init__(self, path: str) -> None:
        if not path:
            raise ConfigError("the SQLite state store needs a file path", {"state_url": "empty path"})
        self.path = path
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot open the state file {self.path!r}: {exc}") from exc
        if not self._ready:
            conn.execute(_CREATE)
            self._ready = True
        return conn

    def get(self, name: str) -> Any:
        try:
            conn = self._connect()
            try:
                row = conn.execute(_SELECT.format(p="?"), (name,)).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot read state {name!r} from {self.path!r}: {exc}") from exc
        return None if row is None else json.loads(row[0])

    def set(self, name: str, value: Any) -> None:
        text = _dumps(value)
        try:
            conn = self._connect()
            try:  # autocommit mode: the statement is committed (and synced) when execute returns
                conn.execute(_UPSERT.format(p="?"), (name, text, time.time()))
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot write state {name!r} to {self.path!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"<SQLiteStateStore {self.path!r}>"


class PostgresStateStore:
    """A PostgreSQL table (psycopg 3); the URL's password never appears in errors or reprs."""

    def __init__(self, url: str) -> None:
        try:
            where = parse_connection_url(url, (POSTGRESQL,), paths=False)
        except ValueError as exc:
            raise ConfigError(f"state_url {exc}", {"state_url": str(exc)}) from None
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ConfigError("a postgresql:// state_url needs psycopg 3: pip install 'syncworkers[postgresql]'",
                              {"state_url": "psycopg is not installed"}) from exc
        self.url = where.dsn
        self._shown = where.shown
        self._ready = False

    def _run(self, sql: str, params: Tuple[Any, ...], fetch: bool = False) -> Any:
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT) as conn:
                if not self._ready:
                    conn.execute(_CREATE)
                    self._ready = True
                cursor = conn.execute(sql, params)
                return cursor.fetchone() if fetch else None
        except psycopg.Error as exc:
            # psycopg's text may quote the connection string: only the class and SQLSTATE go out.
            raise StateStoreError(f"PostgreSQL state store {self._shown} failed: {type(exc).__name__} "
                                  f"(sqlstate {getattr(exc, 'sqlstate', None)})") from None

    def get(self, name: str) -> Any:
        row = self._run(_SELECT.format(p="%s"), (name,), fetch=True)
        return None if row is None else json.loads(row[0])

    def set(self, name: str, value: Any) -> None:
        self._run(_UPSERT.format(p="%s"), (name, _dumps(value), time.time()))

    def __repr__(self) -> str:
        return f"<PostgresStateStore {self._shown}>"


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise StateStoreError(f"state values must be JSON-serialisable, got {type(value).__name__}") from exc


def resolve_state_url(state_url: Optional[str]) -> Optional[str]:
    """The argument, else ``POLLER_STATE_URL``, else None (in memory)."""
    if state_url is not None:
        return state_url
    return os.environ.get(STATE_URL_ENV) or None


def open_state_store(url: Optional[str]) -> StateStore:
    """The store for *url*: None → memory, a PostgreSQL URL → PostgreSQL, a path or ``sqlite:///`` → SQLite."""
    if url is None:
        return MemoryStateStore()
    try:
        where = parse_connection_url(url, (SQLITE, POSTGRESQL))
    except ValueError as exc:
        raise ConfigError(f"state_url {exc}", {"state_url": str(exc)}) from None
    if where.kind == POSTGRESQL:
        return PostgresStateStore(where.text)
    return SQLiteStateStore(where.path or "")


__all__ = [
    "STATE_TABLE",
    "STATE_URL_ENV",
    "MemoryStateStore",
    "PostgresStateStore",
    "SQLiteStateStore",
    "StateStore",
    "open_state_store",
    "resolve_state_url",
]
