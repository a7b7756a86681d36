"""The PostgreSQL outbox's SQL: the tables' DDL, the queries the store runs, and its row converters.

Queries are templates: ``{t}`` is the outbox table, ``{a}`` its attempt log and
``{e}`` its endpoints, filled in with :mod:`psycopg.sql` identifiers by the store.
Times default to the database server's clock (``clock_timestamp()``) unless a
``now`` parameter is given.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from psycopg import sql

from .store import DEFAULT_TABLE, DELIVERED, HELD, IN_FLIGHT, PENDING, STATES, Delivery, table_names, trace_of

_DB_NOW = "extract(epoch FROM clock_timestamp())::float8"
_NOW = f"COALESCE(%(now)s::float8, {_DB_NOW})"
_COLUMNS = ("id, endpoint, url, body, headers, state, attempts, next_attempt_at, created_at, updated_at,"
            " last_status, last_error, owner, lease_until, delivered_at, trace_context")

DDL = (
    """CREATE TABLE IF NOT EXISTS {t} (
        seq bigserial NOT NULL,
        id text PRIMARY KEY,
        endpoint text NOT NULL,
        url text NOT NULL,
        body bytea NOT NULL,
        headers text NOT NULL,
        state text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at double precision NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        last_status integer,
        last_error text,
        owner text,
        lease_until double precision,
        delivered_at double precision)""",
    f"CREATE INDEX IF NOT EXISTS {{due}} ON {{t}} (next_attempt_at, seq) WHERE state = '{PENDING}'",
    f"CREATE INDEX IF NOT EXISTS {{lease}} ON {{t}} (lease_until) WHERE state = '{IN_FLIGHT}'",
    "CREATE INDEX IF NOT EXISTS {updated} ON {t} (state, updated_at)",
    # The attempt log and endpoint health (added later: existing tables gain the column, see ADDED_COLUMNS).
    "CREATE INDEX IF NOT EXISTS {target} ON {t} (target, state)",
    """CREATE TABLE IF NOT EXISTS {a} (
        delivery_id text NOT NULL,
        n integer NOT NULL,
        at double precision NOT NULL,
        duration double precision NOT NULL,
        kind text NOT NULL,
        status integer,
        error text,
        body bytea NOT NULL,
        PRIMARY KEY (delivery_id, n))""",
    """CREATE TABLE IF NOT EXISTS {e} (
        target text PRIMARY KEY,
        disabled_at double precision,
        reason text,
        failing_since double precision,
        last_failure_at double precision,
        last_status integer)""",
)
#: Columns added since the table's first version: added when missing, by the store. (ALTER TABLE
#: takes an exclusive lock even when IF NOT EXISTS finds the column: never run it needlessly.)
ADDED_COLUMNS = (("target", "text"), ("trace_context", "text"))
#: The state of a delivery (re)entering the schedule: held while its endpoint is disabled.
_HOLD_IF_DISABLED = (f"CASE WHEN EXISTS (SELECT 1 FROM {{e}} e WHERE e.target = {{target}} AND e.disabled_at"
                     f" IS NOT NULL) THEN '{HELD}' ELSE '{PENDING}' END")
_ENDPOINT_COLUMNS = "target, disabled_at, reason, failing_since, last_failure_at, last_status"
_ATTEMPT_COLUMNS = "at, duration, kind, status, error, body"
#: The columns of a batch of outcomes (``settle``), each passed as an array and read with ``unnest``.
SETTLE_COLUMNS = (("id", "text"), ("state", "text"), ("spend", "int"), ("next", "float8"), ("error", "text"),
                  ("status", "int"), ("now", "float8"), ("logged", "bool"), ("at", "float8"), ("duration", "float8"),
                  ("kind", "text"), ("attempt_status", "int"), ("attempt_error", "text"), ("body", "bytea"))
_SETTLE_ROWS = (
    "SELECT * FROM unnest(" + ", ".join(f"%({name})s::{kind}[]" for name, kind in SETTLE_COLUMNS) + ")"
    " AS v(" + ", ".join(name for name, _ in SETTLE_COLUMNS) + ")"
)
#: Which outcomes apply: a delivery is delivered whoever holds it (unless it was already); any other
#: outcome only while this owner holds the claim (else another owner took the delivery over).
_SETTLE_APPLIES = (f"CASE WHEN v.state = '{DELIVERED}' THEN d.state <> '{DELIVERED}'"
                   f" ELSE d.state = '{IN_FLIGHT}' AND d.owner = %(owner)s END")

QUERIES = {
    # One statement: the notification goes out with the row, when the caller's transaction commits.
    "add": (
        "WITH ins AS (INSERT INTO {t} (id, endpoint, url, body, headers, state, attempts, next_attempt_at,"
        " created_at, updated_at, target, trace_context) SELECT %(id)s, %(endpoint)s, %(url)s, %(body)s,"
        f" %(headers)s, {_HOLD_IF_DISABLED.format(e='{e}', target='%(target)s')}, 0, c.now, c.now, c.now,"
        " %(target)s, %(trace_context)s"
        f" FROM (SELECT {_NOW} AS now) c"
        " ON CONFLICT (id) DO NOTHING RETURNING id, state)"
        " SELECT pg_notify(%(channel)s, ''), ins.state FROM ins"
    ),
    # Pending rows due and in-flight rows whose lease expired, each search bounded by the index;
    # SKIP LOCKED: rows another owner is claiming right now are left to it, not waited for.
    "claim": (
        f"WITH clk AS (SELECT {_NOW} AS now),"
        " p AS (SELECT id, seq, next_attempt_at, state, owner FROM {t}"
        f" WHERE state = '{PENDING}' AND next_attempt_at <= (SELECT now FROM clk)"
        " ORDER BY next_attempt_at, seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
        " x AS (SELECT id, seq, next_attempt_at, state, owner FROM {t}"
        f" WHERE state = '{IN_FLIGHT}' AND lease_until < (SELECT now FROM clk)"
        " ORDER BY lease_until LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
        " due AS (SELECT * FROM p UNION ALL SELECT * FROM x ORDER BY next_attempt_at, seq LIMIT %(limit)s)"
        f" UPDATE {{t}} AS d SET state = '{IN_FLIGHT}', owner = %(owner)s,"
        " lease_until = clk.now + %(lease)s, updated_at = clk.now FROM due, clk WHERE d.id = due.id"
        " RETURNING d.id, d.endpoint, d.url, d.body, d.headers, d.state, d.attempts, d.next_attempt_at,"
        " d.created_at, d.updated_at, d.last_status, d.last_error, d.owner, d.lease_until,"
        " d.delivered_at, d.trace_context, due.state, due.owner, d.seq"
    ),
    "renew": (
        f"UPDATE {{t}} SET lease_until = {_NOW} + %(lease)s"
        f" WHERE state = '{IN_FLIGHT}' AND owner = %(owner)s AND id = ANY(%(ids)s)"
    ),
    "release": (
        f"UPDATE {{t}} AS d SET state = {_HOLD_IF_DISABLED.format(e='{e}', target='d.target')}, owner = NULL,"
        f" lease_until = NULL, updated_at = {_DB_NOW} WHERE state = '{IN_FLIGHT}' AND owner = %(owner)s"
        " RETURNING d.id, d.state"
    ),
    "release_ids": (
        f"UPDATE {{t}} AS d SET state = {_HOLD_IF_DISABLED.format(e='{e}', target='d.target')}, owner = NULL,"
        f" lease_until = NULL, updated_at = {_DB_NOW}"
        f" WHERE state = '{IN_FLIGHT}' AND owner = %(owner)s AND id = ANY(%(ids)s) RETURNING d.id, d.state"
    ),
    "replay": (
        f"UPDATE {{t}} AS d SET state = {_HOLD_IF_DISABLED.format(e='{e}', target='d.target')}, attempts = 0,"
        " next_attempt_at = c.now, owner = NULL,"
        f" lease_until = NULL, updated_at = c.now FROM (SELECT {_NOW} AS now) c WHERE {{where}}"
        " RETURNING d.id, d.state"
    ),
    "purge": (
        f"WITH gone AS (DELETE FROM {{t}} WHERE state = %(state)s AND updated_at < {_NOW} - %(older_than)s"
        " RETURNING id), logs AS (DELETE FROM {a} WHERE delivery_id IN (SELECT id FROM gone))"
        " SELECT COUNT(*) FROM gone"
    ),
    # A batch of outcomes in one statement (no transaction of its own): each delivery settled if its
    # outcome applies, each attempt appended to its log (an attempt another process logs under the same
    # number at the same moment is dropped: the log may miss an attempt, never an outcome), and per
    # outcome whether it applied, the delivery's endpoint and that endpoint's health row as it was.
    "settle": (
        f"WITH v AS ({_SETTLE_ROWS}), c AS (SELECT {_DB_NOW} AS db_now),"
        " known AS (SELECT d.id, d.target, d.url FROM {t} AS d JOIN v ON d.id = v.id),"
        " u AS (UPDATE {t} AS d SET"
        f" state = CASE WHEN v.state = '{PENDING}' THEN {_HOLD_IF_DISABLED.format(e='{e}', target='d.target')}"
        " ELSE v.state END,"
        " attempts = d.attempts + v.spend,"
        f" next_attempt_at = CASE WHEN v.state = '{PENDING}' THEN v.next ELSE d.next_attempt_at END,"
        f" last_error = CASE WHEN v.state = '{DELIVERED}' THEN d.last_error ELSE v.error END,"
        " last_status = v.status,"
        f" delivered_at = CASE WHEN v.state = '{DELIVERED}' THEN COALESCE(v.now, c.db_now) ELSE d.delivered_at END,"
        " owner = NULL, lease_until = NULL, updated_at = COALESCE(v.now, c.db_now)"
        f" FROM v, c WHERE d.id = v.id AND {_SETTLE_APPLIES} RETURNING d.id, d.state),"
        " n AS (SELECT v.id, COALESCE(MAX(a.n), 0) + 1 AS n FROM v JOIN known ON known.id = v.id"
        " LEFT JOIN {a} AS a ON a.delivery_id = v.id WHERE v.logged GROUP BY v.id),"
        f" ins AS (INSERT INTO {{a}} (delivery_id, n, {_ATTEMPT_COLUMNS}) SELECT v.id, n.n, v.at, v.duration,"
        " v.kind, v.attempt_status, v.attempt_error, v.body FROM v JOIN n ON n.id = v.id"
        " ON CONFLICT (delivery_id, n) DO NOTHING),"
        " trim AS (DELETE FROM {a} AS a USING n WHERE a.delivery_id = n.id AND a.n <= n.n - %(keep)s)"
        " SELECT v.id, known.id IS NOT NULL, u.id IS NOT NULL, known.target, known.url, u.state, "
        + ", ".join(f"e.{c}" for c in _ENDPOINT_COLUMNS.split(", "))
        + " FROM v LEFT JOIN known ON known.id = v.id LEFT JOIN u ON u.id = v.id"
        " LEFT JOIN {e} AS e ON e.target = known.target"
    ),
    # The endpoints a batch changes, created if missing and locked in one order (enable_endpoint()
    # locks an endpoint's row before its deliveries' too), until the transaction ends.
    "endpoints_new": ("INSERT INTO {e} (target) SELECT t FROM unnest(%(targets)s::text[]) AS t ORDER BY t"
                      " ON CONFLICT (target) DO NOTHING"),
    "endpoints_lock": (f"SELECT {_ENDPOINT_COLUMNS} FROM {{e}} WHERE target = ANY(%(targets)s)"
                       " ORDER BY target FOR UPDATE"),
    "endpoint_set": (
        "UPDATE {e} SET disabled_at = %(disabled_at)s, reason = %(reason)s, failing_since = %(failing_since)s,"
        " last_failure_at = %(last_failure_at)s, last_status = %(last_status)s WHERE target = %(target)s"
    ),
    # A statement that held deliveries decided on its snapshot: an enable_endpoint() committed meanwhile
    # released what was held then, not these. Under its endpoints' locks (the order enable_endpoint()
    # takes them in), those whose endpoint is enabled now are released.
    "lock_endpoints_of": ("SELECT 1 FROM {e} WHERE target IN (SELECT target FROM {t} WHERE id = ANY(%(ids)s))"
                          " ORDER BY target FOR SHARE"),
    "release_if_enabled": (
        f"WITH r AS (UPDATE {{t}} AS d SET state = '{PENDING}' WHERE id = ANY(%(ids)s) AND state = '{HELD}'"
        " AND NOT EXISTS (SELECT 1 FROM {e} e WHERE e.target = d.target AND e.disabled_at IS NOT NULL)"
        " RETURNING id) SELECT COUNT(*), pg_notify(%(channel)s, '') FROM r"
    ),
    "hold_endpoint": f"UPDATE {{t}} SET state = '{HELD}' WHERE target = %(target)s AND state = '{PENDING}'",
    "hold_ids": f"UPDATE {{t}} SET state = '{HELD}' WHERE id = ANY(%(ids)s) AND state = '{PENDING}'",
    "enable": (
        "UPDATE {e} SET disabled_at = NULL, reason = NULL, failing_since = NULL WHERE target = %(target)s"
        " RETURNING target"
    ),
    "release_held": (
        f"WITH r AS (UPDATE {{t}} SET state = '{PENDING}', next_attempt_at = c.now, updated_at = c.now"
        f" FROM (SELECT {_NOW} AS now) c WHERE target = %(target)s AND state = '{HELD}' RETURNING id)"
        " SELECT COUNT(*), pg_notify(%(channel)s, '') FROM r"
    ),
    "attempts": f"SELECT {_ATTEMPT_COLUMNS} FROM {{a}} WHERE delivery_id = %(id)s ORDER BY n",
    "last_attempts": (
        f"SELECT DISTINCT ON (delivery_id) delivery_id, {_ATTEMPT_COLUMNS} FROM {{a}}"
        " WHERE delivery_id = ANY(%(ids)s) ORDER BY delivery_id, n DESC"
    ),
    "endpoints": (
        f"SELECT {', '.join('e.' + c for c in _ENDPOINT_COLUMNS.split(', '))},"
        f" (SELECT COUNT(*) FROM {{t}} d WHERE d.target = e.target AND d.state = '{HELD}')"
        " FROM {e} e ORDER BY e.disabled_at IS NULL, e.target"
    ),
    "get": f"SELECT {_COLUMNS} FROM {{t}} WHERE id = %(id)s",
    "list": (
        f"SELECT {_COLUMNS} FROM {{t}} WHERE {{where}} ORDER BY updated_at DESC, seq DESC LIMIT %(limit)s"
    ),
    "counts": "SELECT state, COUNT(*) FROM {t} GROUP BY state",
    "oldest_pending": f"SELECT MIN(created_at) FROM {{t}} WHERE state IN ('{PENDING}', '{IN_FLIGHT}')",
    "next_due": (
        f"SELECT (SELECT MIN(next_attempt_at) FROM {{t}} WHERE state = '{PENDING}'),"
        f" (SELECT MIN(lease_until) FROM {{t}} WHERE state = '{IN_FLIGHT}'), {_DB_NOW}"
    ),
    "db_now": f"SELECT {_DB_NOW}",
}

def schema_statements(table: str = DEFAULT_TABLE, schema: Optional[str] = None) -> List[str]:
    """The SQL that creates the outbox tables of *table* (in *schema*) and their indexes when missing, to
    run in one transaction, for tools that create the tables themselves (the Django migration). Safe to
    run again, and beside a store doing the same. (The store itself adds missing columns only after
    looking: ALTER TABLE locks the table even when there is nothing to add.)"""
    name = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    channel = (f"{schema}.{table}" if schema else table)[:63]
    # CREATE ... IF NOT EXISTS is not safe against itself run concurrently: serialise it.
    statements = [sql.SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(
        sql.Literal(f"syncworkers-outbox:{channel}"))]
    if schema:
        statements.append(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    statements.append(sql.SQL(DDL[0]).format(t=name))
    statements += [sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
        name, sql.Identifier(column), sql.SQL(kind)) for column, kind in ADDED_COLUMNS]
    statements += [sql.SQL(statement).format(t=name, **names(table, schema)) for statement in DDL[1:]]
    return [statement.as_string(None) for statement in statements]


def drop_statements(table: str = DEFAULT_TABLE, schema: Optional[str] = None) -> List[str]:
    """The SQL that removes the outbox tables of *table* (in *schema*), their indexes with them, for tools
    that created them (the Django migration, reversed)."""
    prefix = [schema] if schema else []
    return [sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(*prefix, name)).as_string(None)
            for name in table_names(table).values()]


def names(table: str, schema: Optional[str]) -> Dict[str, sql.Identifier]:
    """The identifiers of the outbox's other tables and indexes, for the DDL's placeholders."""
    prefix = [schema] if schema else []
    identifiers = {k: sql.Identifier(f"{table}_{k}") for k in ("due", "lease", "updated", "target")}
    identifiers.update({key: sql.Identifier(*prefix, name) for key, name in table_names(table).items() if key != "t"})
    return identifiers


def delivery_of(row: Sequence[Any]) -> Delivery:
    """A row of the outbox table (its columns in the order of :data:`_COLUMNS`) as a Delivery."""
    return Delivery(
        id=row[0], endpoint=row[1], url=row[2], body=bytes(row[3]), headers=json.loads(row[4]),
        state=row[5], attempts=row[6], next_attempt_at=row[7], created_at=row[8], updated_at=row[9],
        last_status=row[10], last_error=row[11], owner=row[12], lease_until=row[13], delivered_at=row[14],
        trace_context=trace_of(row[15]),
    )


def filters(state: Optional[str], endpoint: Optional[str], since: Optional[float]) -> Tuple[str, Dict[str, Any]]:
    """The WHERE clause (and its parameters) of the deliveries in *state*, to *endpoint*, updated since *since*."""
    clauses, params = ["TRUE"], {}  # type: Tuple[List[str], Dict[str, Any]]
    if state is not None:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        clauses.append("state = %(state)s")
        params["state"] = state
    if endpoint is not None:
        clauses.append("endpoint = %(endpoint)s")
        params["endpoint"] = endpoint
    if since is not None:
        clauses.append("updated_at >= %(since)s")
        params["since"] = float(since)
    return " AND ".join(clauses), params


__all__ = ["DEFAULT_TABLE", "drop_statements", "schema_statements"]
