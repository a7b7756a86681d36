"""The SQLite outbox's schema: its migrations, the SQL text the store runs, and its row converters.

A file's schema version is its ``PRAGMA user_version``; :func:`migrate` brings an
open file up to :data:`SCHEMA_VERSION`, and :func:`schema_statements` gives the
same SQL to tools that create the tables themselves. The tables carry PostgreSQL's
names (``syncworkers_outbox``, ``..._attempts``, ``..._endpoints``: :data:`T`,
:data:`A`, :data:`E`); files made before version 3 had bare ones (``deliveries``,
``attempts``, ``endpoints``), renamed when such a file is migrated.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ..exceptions import ConfigError
from .health import endpoint_of
from .store import HELD, PENDING, STATES, Delivery, table_names, trace_of

#: Ids per ``IN (...)`` clause, well under SQLite's host-parameter limit.
CHUNK = 500

#: The tables: the deliveries, their attempt log, the endpoints' health.
NAMES = table_names()
T, A, E = NAMES["t"], NAMES["a"], NAMES["e"]
#: What the tables of a file made before version 3 are called.
LEGACY_NAMES = {"t": "deliveries", "a": "attempts", "e": "endpoints"}
#: The first version whose tables carry the prefix.
PREFIXED_SINCE = 3
#: The indexes of the deliveries table (named ``<table>_<key>``) and their columns.
INDEXES = {"due": "(state, next_attempt_at)", "updated": "(state, updated_at)", "target": "(target, state)"}


def _fill_targets(conn: sqlite3.Connection, t: str) -> None:
    """Name the endpoint of every delivery (in table *t*) stored before endpoints were tracked."""
    rows = conn.execute(f"SELECT rowid, url FROM {t} WHERE target IS NULL").fetchall()
    conn.executemany(f"UPDATE {t} SET target = ? WHERE rowid = ?", [(endpoint_of(row[1]), row[0]) for row in rows])


def _index(key: str) -> str:
    """The statement creating index *key* of :data:`INDEXES` on the deliveries table ``{t}``."""
    return f"CREATE INDEX {{t}}_{key} ON {{t}} {INDEXES[key]}"


def _prefix_tables(names: Dict[str, str]) -> List[str]:
    """3: the tables, named *names* so far, take the prefix (and their indexes its names)."""
    if names == NAMES:
        return []  # made at version 3 or later: named so from the start
    statements = [f"DROP INDEX IF EXISTS {names['t']}_{key}" for key in INDEXES]
    statements += [f"ALTER TABLE {names[k]} RENAME TO {NAMES[k]}" for k in ("t", "a", "e")]
    return statements + [_index(key).format(t=T) for key in INDEXES]


#: A step of a migration: SQL with ``{t}``, ``{a}``, ``{e}`` for the tables' current names, or a
#: function of the connection and the deliveries table's name.
_Step = Union[str, Callable[[sqlite3.Connection, str], None]]
#: Schema migrations: entry ``n`` takes ``PRAGMA user_version`` from ``n`` to ``n + 1``.
_MIGRATIONS: Tuple[Tuple[_Step, ...], ...] = (
    (
        """
        CREATE TABLE {t} (
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
        )
        """,
        _index("due"),
        _index("updated"),
    ),
    (
        # 2: the attempt log, endpoint health, and the endpoint (host + path) of each delivery.
        "ALTER TABLE {t} ADD COLUMN target TEXT",
        _index("target"),
        """
        CREATE TABLE {a} (
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
        CREATE TABLE {e} (
            target TEXT PRIMARY KEY,
            disabled_at REAL,
            reason TEXT,
            failing_since REAL,
            last_failure_at REAL,
            last_status INTEGER
        )
        """,
        _fill_targets,
    ),
    # 3: the tables take the prefix (see _prefix_tables; nothing to do for a file made at 3).
    (),
    # 4: the trace context enqueue() kept (W3C traceparent/tracestate as JSON; NULL without one).
    ("ALTER TABLE {t} ADD COLUMN trace_context TEXT",),
)
SCHEMA_VERSION = len(_MIGRATIONS)


def names_at(version: int) -> Dict[str, str]:
    """What the tables of a file at schema *version* are called (0: none yet, made with the prefix)."""
    return LEGACY_NAMES if 0 < version < PREFIXED_SINCE else NAMES


def _plan(from_version: int) -> Iterator[Union[str, Callable[[sqlite3.Connection], None]]]:
    """The statements and Python steps that take a file from *from_version* to SCHEMA_VERSION, in order."""
    names = names_at(from_version)
    for version, migration in enumerate(_MIGRATIONS[from_version:], start=from_version + 1):
        for step in migration:
            if callable(step):
                yield _on_table(step, names["t"])
            else:
                yield from _split(step.format(**names))
        if version == PREFIXED_SINCE:
            yield from _prefix_tables(names)
            names = NAMES


def _on_table(step: Callable[[sqlite3.Connection, str], None], t: str) -> Callable[[sqlite3.Connection], None]:
    return lambda conn: step(conn, t)


def schema_statements(from_version: int = 0) -> List[str]:
    """The SQL that takes an outbox file's schema from *from_version* (its ``PRAGMA user_version``) to
    :data:`SCHEMA_VERSION`, the version pragma last, for tools that create the tables themselves (the
    Django migration). A migration's Python steps fill in data for rows that existed before it; the
    store runs them on open, and a table created from nothing has no such rows."""
    _check_version(from_version, None)
    return [step for step in _plan(from_version) if isinstance(step, str)] + [f"PRAGMA user_version={SCHEMA_VERSION}"]


def drop_statements(version: int) -> List[str]:
    """The SQL that removes an outbox at schema *version* (its tables, their indexes, its version)."""
    _check_version(version, None)
    if version == 0:
        return []
    names = names_at(version)
    return [f"DROP TABLE IF EXISTS {names[k]}" for k in ("a", "e", "t")] + ["PRAGMA user_version=0"]


def _check_version(version: int, path: Optional[str]) -> None:
    if not 0 <= version <= SCHEMA_VERSION:
        where = f"outbox {path!r}" if path is not None else "outbox"
        raise ConfigError(f"{where} has schema version {version}; this syncworkers knows up to {SCHEMA_VERSION}")


def _split(script: str) -> List[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]


def migrate(conn: sqlite3.Connection, path: Optional[str]) -> None:
    """Bring the schema of *conn*'s database (the outbox at *path*, for errors) up to SCHEMA_VERSION."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return  # current: no write lock needed (see SQLiteConnections)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        _check_version(version, path)
        for step in _plan(version):
            if callable(step):
                step(conn)
            else:
                conn.execute(step)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


COLUMNS = (
    "id, endpoint, url, body, headers, state, attempts, next_attempt_at, created_at, updated_at,"
    " last_status, last_error, owner, lease_until, delivered_at, trace_context"
)
CLAIM = (
    f"SELECT * FROM (SELECT rowid AS rid, {COLUMNS} FROM {T} WHERE state = ?1"
    " AND next_attempt_at <= ?2 ORDER BY next_attempt_at, rowid LIMIT ?4)"
    f" UNION ALL SELECT * FROM (SELECT rowid AS rid, {COLUMNS} FROM {T} WHERE state = ?3"
    " AND lease_until < ?2 ORDER BY next_attempt_at, rowid LIMIT ?4)"
    " ORDER BY next_attempt_at, rid LIMIT ?4"
)
#: The state of a delivery (re)entering the schedule: held while its endpoint is disabled.
HOLD_IF_DISABLED = (
    f"CASE WHEN EXISTS (SELECT 1 FROM {E} e WHERE e.target = {{target}} AND e.disabled_at IS NOT NULL)"
    f" THEN '{HELD}' ELSE '{PENDING}' END"
)
INSERT = (
    f"INSERT OR IGNORE INTO {T} (id, endpoint, url, body, headers, state, attempts,"
    " next_attempt_at, created_at, updated_at, target, trace_context) VALUES (%(id)s, %(endpoint)s, %(url)s,"
    f" %(body)s, %(headers)s, {HOLD_IF_DISABLED.format(target='%(target)s')}, 0, %(at)s, %(at)s, %(at)s,"
    " %(target)s, %(trace_context)s)"
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
        trace_context=trace_of(row["trace_context"]),
    )


__all__ = ["A", "E", "NAMES", "SCHEMA_VERSION", "T", "drop_statements", "migrate", "names_at", "schema_statements"]
