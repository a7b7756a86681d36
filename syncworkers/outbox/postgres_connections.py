"""The connections of a PostgreSQL outbox: its tables created, its queries compiled, and a pool, on first use.

Nothing connects before first use. The first use opens one direct connection (a
refused or bad URL fails there, in one clear error), creates or updates the
tables, compiles the queries for the table's names, then opens the pool.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from .health import endpoint_of
from .postgres_sql import ADDED_COLUMNS, CLAIM_HELD, DDL, FINISH, NOT_DELIVERED, QUERIES, names

#: Connections kept by a store's pool: one per delivering thread plus the claiming loop.
DEFAULT_POOL_SIZE = 10
#: Seconds to open a connection, and to wait for a free one in the pool.
CONNECT_TIMEOUT = 10.0


class PostgresConnections:
    """The pool of one outbox table (``table``, in ``schema`` when given) at *url*.

    *opened* is called with the first, direct connection once the tables exist
    and the queries are compiled (the store measures the server's clock then).
    Safe from many threads at once; after :meth:`close`, ValueError.
    """

    def __init__(self, url: str, table: str, schema: Optional[str], pool_size: int,
                 opened: Callable[["psycopg.Connection[Any]"], None]) -> None:
        self._url = url
        self.table, self.schema, self.pool_size = table, schema, pool_size
        self.name = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        # The attempt log and the endpoints' health, beside the table.
        self._tables = {key: sql.Identifier(*([schema] if schema else []), f"{table}_{suffix}")
                        for key, suffix in (("a", "attempts"), ("e", "endpoints"))}
        self.channel = (f"{schema}.{table}" if schema else table)[:63]  #: the NOTIFY channel
        self._opened = opened
        self._lock = threading.Lock()
        self._pool: Optional[ConnectionPool] = None
        self._queries: Dict[str, str] = {}
        self._closed = False

    def ready(self) -> ConnectionPool:
        """The open pool, the table created and the queries compiled (once)."""
        with self._lock:
            self.check_open()
            if self._pool is not None:
                return self._pool
            # One direct connection first: a refused or bad URL fails now, in one clear error,
            # instead of as a pool timeout.
            with psycopg.connect(self._url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)) as conn:
                self._create_tables(conn)
                self._queries = {key: self._compose(q).as_string(conn) for key, q in QUERIES.items()}
                for state, assignments in FINISH.items():
                    for condition in (CLAIM_HELD, NOT_DELIVERED):
                        for key in ("finish", "finish_logged"):
                            self._queries[f"{key} {state} {condition}"] = self._compose(
                                QUERIES[key], assignments=assignments, condition=condition).as_string(conn)
                self._opened(conn)
            pool: ConnectionPool = ConnectionPool(
                self._url, min_size=1, max_size=self.pool_size, open=False, timeout=CONNECT_TIMEOUT,
                name=f"syncworkers-outbox-{self.table}",
                kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT)})
            pool.open(wait=False)
            self._pool = pool
            return pool

    @contextmanager
    def connection(self) -> Iterator["psycopg.Connection[Any]"]:
        """A connection borrowed from the pool (opened first if need be), back in it afterwards."""
        with self.ready().connection() as conn:
            yield conn

    def compiled(self, key: str) -> str:
        """A compiled query: :data:`~.postgres_sql.QUERIES` *key* for this table, or a ``finish`` variant
        (``"finish {state} {condition}"``, ``"finish_logged {state} {condition}"``). Raises KeyError
        before :meth:`ready`."""
        return self._queries[key]

    def query(self, key: str) -> str:
        """:meth:`compiled`, opening the pool first if need be."""
        self.ready()
        return self._queries[key]

    def format(self, key: str, conn: "psycopg.Connection[Any]", **parts: str) -> str:
        """Query *key* with its ``{where}`` (or other) placeholders filled in with the SQL text *parts*."""
        return self._compose(QUERIES[key], **parts).as_string(conn)

    def _compose(self, query: str, **parts: str) -> sql.Composed:
        return sql.SQL(query).format(t=self.name, **self._tables, **{k: sql.SQL(v) for k, v in parts.items()},
                                     **{k: sql.SQL("{}") for k in ("assignments", "condition", "where")
                                        if k not in parts})

    def _create_tables(self, conn: "psycopg.Connection[Any]") -> None:
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

    def _fill_targets(self, conn: "psycopg.Connection[Any]") -> None:
        """Name the endpoint of every delivery stored before endpoints were tracked."""
        rows = conn.execute(sql.SQL("SELECT id, url FROM {} WHERE target IS NULL").format(self.name)).fetchall()
        if rows:
            with conn.cursor() as cursor:
                cursor.executemany(sql.SQL("UPDATE {} SET target = %s WHERE id = %s").format(self.name),
                                   [(endpoint_of(url), id) for id, url in rows])

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


__all__ = ["CONNECT_TIMEOUT", "DEFAULT_POOL_SIZE", "PostgresConnections"]
