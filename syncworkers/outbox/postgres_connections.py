"""The connections of a PostgreSQL outbox: its tables created, its queries compiled, and a pool, on first use.

Nothing connects before first use. The first use opens one direct connection (a
refused or bad URL fails there, in one clear error), creates or updates the
tables, compiles the queries for the table's names, then opens the pool. A store
may be given other connections instead (an app's: Django's), with the same
methods; :class:`PostgresQueries` compiles the queries for both.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Dict, Iterator, Optional, Protocol

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from .health import endpoint_of
from .postgres_sql import ADDED_COLUMNS, DDL, QUERIES, names
from .store import table_names

#: Connections kept by a store's pool: one per delivering thread plus the claiming loop.
DEFAULT_POOL_SIZE = 10
#: Seconds to open a connection, and to wait for a free one in the pool.
CONNECT_TIMEOUT = 10.0


class Connections(Protocol):
    """What a PostgreSQL store asks of its connections (:class:`PostgresConnections`, or an app's)."""

    channel: str  #: the NOTIFY channel of the table

    def ready(self) -> None:
        """Be ready to run the compiled queries (connect, create the tables, compile: whatever is missing)."""

    def connection(self) -> ContextManager["psycopg.Connection[Any]"]:
        """A connection for one operation."""

    def transaction(self, conn: "psycopg.Connection[Any]") -> ContextManager[Any]:
        """A transaction (or a savepoint inside one) on *conn*, for the block."""

    def compiled(self, key: str) -> str:
        """A compiled query (see :meth:`PostgresQueries.compiled`)."""

    def query(self, key: str) -> str:
        """:meth:`compiled`, after :meth:`ready`."""

    def format(self, key: str, conn: "psycopg.Connection[Any]", **parts: str) -> str:
        """A query with its ``{where}`` (or other) placeholders filled in."""

    def check_open(self) -> None:
        """ValueError once closed."""

    def close(self) -> None:
        """Release what these connections hold; idempotent."""


class PostgresQueries:
    """The queries of one outbox table (``table``, in ``schema`` when given), compiled for its names once.

    Composes what every source of connections shares: the store's own pool, or an app's
    connections (Django's). Safe from many threads at once.
    """

    def __init__(self, table: str, schema: Optional[str]) -> None:
        self.table, self.schema = table, schema
        self.name = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        # The attempt log and the endpoints' health, beside the table.
        self._tables = {key: sql.Identifier(*([schema] if schema else []), name)
                        for key, name in table_names(table).items() if key != "t"}
        self.channel = (f"{schema}.{table}" if schema else table)[:63]  #: the NOTIFY channel
        self._lock = threading.Lock()
        self._compiled: Dict[str, str] = {}

    @property
    def ready(self) -> bool:
        return bool(self._compiled)

    def compile(self, conn: "psycopg.Connection[Any]") -> None:
        """Compile every query for this table, with *conn*'s quoting (once)."""
        with self._lock:
            if self._compiled:
                return
            self._compiled = {key: self._compose(q).as_string(conn) for key, q in QUERIES.items()}

    def compiled(self, key: str) -> str:
        """:data:`~.postgres_sql.QUERIES` *key* for this table. Raises KeyError before :meth:`compile`."""
        return self._compiled[key]

    def format(self, key: str, conn: "psycopg.Connection[Any]", **parts: str) -> str:
        """Query *key* with its ``{where}`` (or other) placeholders filled in with the SQL text *parts*."""
        return self._compose(QUERIES[key], **parts).as_string(conn)

    def _compose(self, query: str, **parts: str) -> sql.Composed:
        return sql.SQL(query).format(t=self.name, **self._tables, **{k: sql.SQL(v) for k, v in parts.items()},
                                     **{k: sql.SQL("{}") for k in ("where",) if k not in parts})

    def create_tables(self, conn: "psycopg.Connection[Any]") -> None:
        """Create or update the tables and their indexes (one transaction on *conn*, in autocommit mode)."""
        if self._complete(conn):
            self._fill_targets(conn)
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"syncworkers-outbox:{self.channel}",))
            if self.schema:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute(sql.SQL(DDL[0]).format(t=self.name))
            for column, kind in ADDED_COLUMNS:
                if conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s"
                                " AND NOT attisdropped", (self.name.as_string(conn), column)).fetchone() is None:
                    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        self.name, sql.Identifier(column), sql.SQL(kind)))
            for statement in DDL[1:]:
                conn.execute(sql.SQL(statement).format(t=self.name, **names(self.table, self.schema)))
            self._fill_targets(conn)

    def _complete(self, conn: "psycopg.Connection[Any]") -> bool:
        """Whether every table, index and column exists already: read from the catalog, without a lock.

        CREATE INDEX IF NOT EXISTS takes its table's SHARE lock before it finds the index there: it
        would wait for every open transaction that wrote a delivery (an app's, a test's), and make
        every later writer wait behind it.
        """
        prefix = [self.schema] if self.schema else []
        relations = [self.name, *self._tables.values(),
                     *(sql.Identifier(*prefix, f"{self.table}_{key}") for key in ("due", "lease", "updated", "target"))]
        found = conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
            sql.SQL("to_regclass({}) IS NOT NULL").format(sql.Literal(name.as_string(conn))) for name in relations)
        )).fetchone()
        if found is None or not all(found):
            return False
        columns = {row[0] for row in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND NOT attisdropped",
            (self.name.as_string(conn),))}
        return all(column in columns for column, _ in ADDED_COLUMNS)

    def _fill_targets(self, conn: "psycopg.Connection[Any]") -> None:
        """Name the endpoint of every delivery stored before endpoints were tracked."""
        rows = conn.execute(sql.SQL("SELECT id, url FROM {} WHERE target IS NULL").format(self.name)).fetchall()
        if rows:
            with conn.cursor() as cursor:
                cursor.executemany(sql.SQL("UPDATE {} SET target = %s WHERE id = %s").format(self.name),
                                   [(endpoint_of(url), id) for id, url in rows])


def _generic_plans(conn: "psycopg.Connection[Any]") -> None:
    """Have *conn* plan each statement it prepares once (psycopg prepares those run often).

    Left to choose, PostgreSQL plans the store's statements anew at every run (their
    parameters are arrays and limits, whose custom plans look cheaper): for a batch of
    outcomes, planning cost more than running it. The generic plans use the same indexes.
    """
    conn.execute("SET plan_cache_mode = force_generic_plan")


class PostgresConnections:
    """The store's own pool for one outbox table (``table``, in ``schema`` when given) at *url*.

    *opened* is called with the first, direct connection once the tables exist
    and the queries are compiled (the store measures the server's clock then).
    Safe from many threads at once; after :meth:`close`, ValueError.
    """

    def __init__(self, url: str, table: str, schema: Optional[str], pool_size: int,
                 opened: Callable[["psycopg.Connection[Any]"], None]) -> None:
        self._url = url
        self.queries = PostgresQueries(table, schema)
        self.table, self.schema, self.pool_size = table, schema, pool_size
        self.channel = self.queries.channel  #: the NOTIFY channel
        self._opened = opened
        self._lock = threading.Lock()
        self._pool: Optional[ConnectionPool] = None
        self._closed = False

    def ready(self) -> None:
        """Open the pool, the tables created and the queries compiled (once)."""
        self._ready()

    def _ready(self) -> ConnectionPool:
        with self._lock:
            self.check_open()
            if self._pool is not None:
                return self._pool
            # One direct connection first: a refused or bad URL fails now, in one clear error,
            # instead of as a pool timeout.
            with psycopg.connect(self._url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)) as conn:
                self.queries.create_tables(conn)
                self.queries.compile(conn)
                self._opened(conn)
            pool: ConnectionPool = ConnectionPool(
                self._url, min_size=1, max_size=self.pool_size, open=False, timeout=CONNECT_TIMEOUT,
                name=f"syncworkers-outbox-{self.table}", configure=_generic_plans,
                kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT)})
            pool.open(wait=False)
            self._pool = pool
            return pool

    @contextmanager
    def connection(self) -> Iterator["psycopg.Connection[Any]"]:
        """A connection borrowed from the pool (opened first if need be), back in it afterwards."""
        with self._ready().connection() as conn:
            yield conn

    @staticmethod
    def transaction(conn: "psycopg.Connection[Any]") -> ContextManager[Any]:
        """A transaction on *conn* (one of this pool's, in autocommit mode): committed at the end of the block."""
        return conn.transaction()

    def compiled(self, key: str) -> str:
        """A compiled query (see :meth:`PostgresQueries.compiled`); KeyError before :meth:`ready`."""
        return self.queries.compiled(key)

    def query(self, key: str) -> str:
        """:meth:`compiled`, opening the pool first if need be."""
        self._ready()
        return self.queries.compiled(key)

    def format(self, key: str, conn: "psycopg.Connection[Any]", **parts: str) -> str:
        """Query *key* with its ``{where}`` (or other) placeholders filled in with the SQL text *parts*."""
        return self.queries.format(key, conn, **parts)

    def check_open(self) -> None:
        """ValueError once :meth:`close` was called."""
        if self._closed:
            raise ValueError("the outbox is closed")

    def close(self) -> None:
        """Close the pool; idempotent."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


__all__ = ["CONNECT_TIMEOUT", "DEFAULT_POOL_SIZE", "Connections", "PostgresConnections", "PostgresQueries"]
