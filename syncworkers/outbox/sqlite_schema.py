"""The SQLite outbox's schema: its migrations, the SQL text the store runs, and its row converters.

A file's schema version is its ``PRAGMA user_version``; :func:`migrate` brings an
open file up to :data:`SCHEMA_VERSION`, and :func:`schema_statements` gives the
same SQL to tools that create the tables themselves.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

from ..exceptions import ConfigError
from .health import endpoint_of
from .store import HELD, PENDING, STATES, Delivery

#: Ids per ``IN (...)`` clause, well under SQLite's host-parameter limit.
CHUNK = 500


def _fill_targets(conn: sqlite3.Connection) -> None:
    """Name the endpoint of every delivery stored before endpoints were tracked."""
    rows = conn.execute("SELECT rowid, url FROM deliveries WHERE target IS NULL").fetchall()
    conn.executemany("UPDATE deliveries SET target = ? WHERE rowid = ?",
                     [(endpoint_of(row[1]), row[0]) for row in rows])


#: Schema migrations: entry ``n`` takes ``PRAGMA user_version`` from ``n`` to ``n + 1``; an
#: entry is an SQL script or a tuple of scripts and functions of the connection.
_Migration = Union[str, Tuple[Union[str, Callable[[sqlite3.Connection], None]], ...]]
_MIGRATIONS: Tuple[_Migration, ...] = (
    """
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        endpoint TEXT NOT NULL,
        url TEXT NOT NULL,
        body BLOB NOT NULL,
        headers TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        owner TEXT,
        lease_until REAL,
        delivered_at REAL
    );
    CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
    CREATE INDEX deliveries_updated ON deliveries (state, updated_at);
    """,
    (
        # 2: the attempt log, endpoint health, and the endpoint (host + path) of each delivery.
        """
        ALTER TABLE deliveries ADD COLUMN target TEXT;
        CREATE INDEX deliveries_target ON deliveries (target, state);
        CREATE TABLE attempts (
            delivery_id TEXT NOT NULL,
            n INTEGER NOT NULL,
            at REAL NOT NULL,
            duration REAL NOT NULL,
            kind TEXT NOT NULL,
            status INTEGER,
            error TEXT,
            body BLOB NOT NULL,
            PRIMARY KEY (delivery_id, n)
        );
        CREATE TABLE endpoints (
            target TEXT PRIMARY KEY,
            disabled_at REAL,
            reason TEXT,
            failing_since REAL,
            last_failure_at REAL,
            last_status INTEGER
        );
        """,
        _fill_targets,
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


def schema_statements(from_version: int = 0) -> List[str]:
    """The SQL that takes an outbox file's schema from *from_version* (its ``PRAGMA user_version``) to
    :data:`SCHEMA_VERSION`, the version pragma last, for tools that create the tables themselves (the
    Django migration). A migration's Python steps fill in data for rows that existed before it; the
    store runs them on open, and a table created from nothing has no such rows."""
    if not 0 <= from_version <= SCHEMA_VERSION:
        raise ConfigError(f"outbox schema version {from_version}; this syncworkers knows up to {SCHEMA_VERSION}")
    return [statement for migration in _MIGRATIONS[from_version:] for step in _steps(migration)
            if isinstance(step, str) for statement in _split(step)] + [f"PRAGMA user_version={SCHEMA_VERSION}"]


def _steps(migration: "_Migration") -> Tuple[Union[str, Callable[[sqlite3.Connection], None]], ...]:
    return (migration,) if isinstance(migration, str) else migration


def _split(script: str) -> List[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]


def migrate(conn: sqlite3.Connection, path: Optional[str]) -> None:
    """Bring the schema of *conn*'s database (the outbox at *path*, for errors) up to SCHEMA_VERSION."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return  # current: no write lock needed (see SQLiteConnections)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"outbox {path!r} has schema version {version}; this syncworkers knows"
                f" up to {SCHEMA_VERSION}"
            )
        for migration in _MIGRATIONS[version:]:
            for step in _steps(migration):
                if callable(step):
                    step(conn)
                else:
                    for statement in _split(step):
                        conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


COLUMNS = (
    "id, endpoint, url, body, headers, state, attempts, next_attempt_at, created_at, updated_at,"
    " last_status, last_error, owner, lease_until, delivered_at"
)
CLAIM = (
    f"SELECT * FROM (SELECT rowid AS rid, {COLUMNS} FROM deliveries WHERE state = ?1"
    " AND next_attempt_at <= ?2 ORDER BY next_attempt_at, rowid LIMIT ?4)"
    f" UNION ALL SELECT * FROM (SELECT rowid AS rid, {COLUMNS} FROM deliveries WHERE state = ?3"
    " AND lease_until < ?2 ORDER BY next_attempt_at, rowid LIMIT ?4)"
    " ORDER BY next_attempt_at, rid LIMIT ?4"
)
#: The state of a delivery (re)entering the schedule: held while its endpoint is disabled.
HOLD_IF_DISABLED = (
    f"CASE WHEN EXISTS (SELECT 1 FROM endpoints e WHERE e.target = {{target}} AND e.disabled_at IS NOT NULL)"
    f" THEN '{HELD}' ELSE '{PENDING}' END"
)
INSERT = (
    "INSERT OR IGNORE INTO deliveries (id, endpoint, url, body, headers, state, attempts,"
    " next_attempt_at, created_at, updated_at, target) VALUES (%(id)s, %(endpoint)s, %(url)s, %(body)s,"
    f" %(headers)s, {HOLD_IF_DISABLED.format(target='%(target)s')}, 0, %(at)s, %(at)s, %(at)s, %(target)s)"
)
ENDPOINT_COLUMNS = "target, disabled_at, reason, failing_since, last_failure_at, last_status"
ATTEMPT_COLUMNS = "at, duration, kind, status, error, body"


def chunks(ids: Sequence[str]) -> Iterator[List[str]]:
    """*ids* in lists of at most CHUNK, one ``IN (...)`` clause each."""
    ids = list(ids)
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def marks(n: int) -> str:
    """The placeholders of an ``IN (...)`` clause of *n* values."""
    return ",".join("?" * n)


def filters(state: Optional[str], endpoint: Optional[str], since: Optional[float]) -> Tuple[str, List[Any]]:
    """The WHERE clause (and its parameters) of the deliveries in *state*, to *endpoint*, updated since *since*."""
    clauses: List[str] = ["1"]
    params: List[Any] = []
    if state is not None:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        clauses.append("state = ?")
        params.append(state)
    if endpoint is not None:
        clauses.append("endpoint = ?")
        params.append(endpoint)
    if since is not None:
        clauses.append("updated_at >= ?")
        params.append(float(since))
    return " AND ".join(clauses), params


def delivery_of(row: sqlite3.Row) -> Delivery:
    """A ``deliveries`` row (:data:`COLUMNS`, by name) as a Delivery."""
    return Delivery(
        id=row["id"], endpoint=row["endpoint"], url=row["url"], body=bytes(row["body"]),
        headers=json.loads(row["headers"]), state=row["state"], attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], created_at=row["created_at"],
        updated_at=row["updated_at"], last_status=row["last_status"], last_error=row["last_error"],
        owner=row["owner"], lease_until=row["lease_until"], delivered_at=row["delivered_at"],
    )


__all__ = ["SCHEMA_VERSION", "migrate", "schema_statements"]
