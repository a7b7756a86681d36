"""Django's database connections as an outbox store's: the app's transaction, the test database.

A store given these runs each operation on Django's connection to the database of
DATABASES[alias] of the calling thread, inside the transaction that thread is in (a
view's ``atomic()``, a ``TestCase``'s): what a test wrote, it reads back, in memory or
not. A connection Django had not opened yet in that thread (a worker's thread) is
closed again after the operation, so nothing of the outbox's outlives it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager, Iterable, Iterator, Optional, Sequence, cast

from django.db import connections, transaction  # type: ignore[import-untyped]

from ...exceptions import ConfigError
from ...outbox.store import DEFAULT_TABLE


@contextmanager
def borrowed(alias: str) -> Iterator[Any]:
    """Django's connection (its ``DatabaseWrapper``) to *alias* in this thread, open for the block; closed
    after it when it was not open before (and no transaction holds it)."""
    wrapper = connections[alias]
    opened = wrapper.connection is None
    wrapper.ensure_connection()
    try:
        yield wrapper
    finally:
        if opened and not wrapper.in_atomic_block:
            wrapper.close()


def is_in_memory(alias: str) -> bool:
    """Whether the database of *alias* is an in-memory SQLite one (Django's default test database)."""
    wrapper = connections[alias]
    return wrapper.vendor == "sqlite" and bool(wrapper.is_in_memory_db())


class _Rows:
    """Django's ``sqlite3`` connection, giving the store rows by column name on the store's own cursors
    (Django's cursors keep their tuples)."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw

    def execute(self, query: str, params: Any = ()) -> sqlite3.Cursor:
        cursor = self._raw.cursor()
        cursor.row_factory = sqlite3.Row
        return cursor.execute(query, params)

    def executemany(self, query: str, params: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        cursor = self._raw.cursor()
        return cursor.executemany(query, params)


class DjangoSQLiteConnections:
    """Django's connections to the SQLite database *alias*, for the SQLite store (see the module)."""

    durable = True

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.path: Optional[str] = str(connections[alias].settings_dict["NAME"])
        # In memory (Django's test database), threads' connections share one cache, which answers "table
        # is locked" at once where a file would wait: the outbox's operations there take turns. A file's
        # are left to SQLite's locks, as Django's are (a view may hold the write lock in its atomic()).
        self._turns: ContextManager[Any] = threading.RLock() if is_in_memory(alias) else nullcontext()

    @contextmanager
    def borrow(self) -> Iterator[sqlite3.Connection]:
        with self._turns, borrowed(self.alias) as wrapper:
            yield cast(sqlite3.Connection, _Rows(wrapper.connection))

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        # atomic(): a transaction of its own, or a savepoint inside the caller's.
        with self._turns, borrowed(self.alias) as wrapper, transaction.atomic(using=self.alias):
            yield cast(sqlite3.Connection, _Rows(wrapper.connection))

    def commit(self, query: str, params: Any) -> None:
        """One write in the calling thread's transaction (committed at once outside one)."""
        with self.write() as conn:
            conn.execute(query, params)

    def check_same_file(self, connection: Any) -> None:
        """A caller's own ``sqlite3`` connection must be Django's, or on the same file."""
        if not isinstance(connection, sqlite3.Connection):
            return  # another driver: trust the caller
        with borrowed(self.alias) as wrapper:
            if connection is wrapper.connection:
                return
        row = connection.execute("PRAGMA database_list").fetchone()
        theirs = row[2] if row else ""
        if not theirs or self.path is None or not os.path.exists(self.path) or not os.path.samefile(theirs, self.path):
            raise ConfigError(f"the connection is not on the outbox's database {self.alias!r}: "
                              "the delivery would never be sent")

    def check_open(self) -> None:
        """Always open: the connections are Django's."""

    def close(self) -> None:
        """Nothing to close: the connections are Django's."""


class DjangoPostgresConnections:
    """Django's connections to the PostgreSQL database *alias*, for the PostgreSQL store (see the module).

    Django's migrations create the tables (``manage.py migrate``); these only compile the store's
    queries for them, on the first connection. Needs Django's psycopg 3 backend.
    """

    def __init__(self, alias: str, table: str = DEFAULT_TABLE, schema: Optional[str] = None) -> None:
        from ...outbox.postgres_connections import PostgresQueries

        self.alias = alias
        self.queries = PostgresQueries(table, schema)
        self.channel = self.queries.channel

    @contextmanager
    def connection(self) -> Iterator[Any]:
        import psycopg

        with borrowed(self.alias) as wrapper:
            raw = wrapper.connection
            if not isinstance(raw, psycopg.Connection):
                raise ConfigError(f"SYNCWORKERS OUTBOX {self.alias!r}: the outbox needs Django's psycopg 3 "
                                  f"backend, not {type(raw).__module__}")
            self.queries.compile(raw)
            yield raw

    def ready(self) -> None:
        if not self.queries.ready:
            with self.connection():
                pass

    def transaction(self, conn: Any) -> ContextManager[Any]:
        # Django's atomic(), not psycopg's: Django keeps track of its transaction and its savepoints.
        return cast(ContextManager[Any], transaction.atomic(using=self.alias))

    def compiled(self, key: str) -> str:
        return self.queries.compiled(key)

    def query(self, key: str) -> str:
        self.ready()
        return self.queries.compiled(key)

    def format(self, key: str, conn: Any, **parts: str) -> str:
        return self.queries.format(key, conn, **parts)

    def check_open(self) -> None:
        """Always open: the connections are Django's."""

    def close(self) -> None:
        """Nothing to close: the connections are Django's."""


__all__ = ["DjangoPostgresConnections", "DjangoSQLiteConnections", "borrowed", "is_in_memory"]
