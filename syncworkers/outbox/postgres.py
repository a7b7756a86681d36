"""The PostgreSQL outbox store (psycopg 3): one outbox shared by processes on several machines.

Claims use ``FOR UPDATE SKIP LOCKED`` plus a lease, so a delivery is sent by one
owner at a time and a dead owner's claims are taken over when their lease
expires. Lease and due times are on the database server's clock (never this
machine's), so machines whose clocks disagree neither steal nor stall each
other's claims; :attr:`PostgresOutbox.clock` estimates that clock here. Every
operation is one short transaction: the HTTP request happens between two of
them, never inside one. :meth:`PostgresOutbox.add` notifies the table's channel
in its transaction, and :meth:`PostgresOutbox.subscribe` listens to it, so a
running deliverer hears of a committed delivery at once.

Requires the ``postgresql`` extra: ``pip install 'syncworkers[postgresql]'``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, Type

from ..exceptions import ConfigError, safe_url
from ..message import new_id
from . import dbapi
from . import health
from .health import ATTEMPT_LOG_SIZE, EndpointHealth, endpoint_of
from .listen import Listener, Subscribers
from .sqlite import DEFAULT_LEASE_SECONDS, _default_owner, check_new_delivery
from .store import DEAD, DELIVERED, HELD, IN_FLIGHT, PENDING, STATES, Attempt, Delivery

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "the PostgreSQL outbox needs psycopg 3: pip install 'syncworkers[postgresql]'") from exc

logger = logging.getLogger(__name__)

#: The outbox table's default name.
DEFAULT_TABLE = "syncworkers_outbox"
#: Connections kept by a store's pool: one per delivering thread plus the claiming loop.
DEFAULT_POOL_SIZE = 10
#: Seconds to open a connection, and to wait for a free one in the pool.
CONNECT_TIMEOUT = 10.0
#: Clock samples kept; the one with the shortest round trip gives the offset.
CLOCK_SAMPLES = 16

_DB_NOW = "extract(epoch FROM clock_timestamp())::float8"
_NOW = f"COALESCE(%(now)s::float8, {_DB_NOW})"
_COLUMNS = ("id, endpoint, url, body, headers, state, attempts, next_attempt_at, created_at, updated_at,"
            " last_status, last_error, owner, lease_until, delivered_at")

_DDL = (
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
    # The attempt log and endpoint health (added later: existing tables gain the column, see _ALTER).
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
#: Columns added since the table's first version: added when missing, by _create_tables. (ALTER TABLE
#: takes an exclusive lock even when IF NOT EXISTS finds the column: never run it needlessly.)
_ADDED_COLUMNS = (("target", "text"),)
#: The state of a delivery (re)entering the schedule: held while its endpoint is disabled.
_HOLD_IF_DISABLED = (f"CASE WHEN EXISTS (SELECT 1 FROM {{e}} e WHERE e.target = {{target}} AND e.disabled_at"
                     f" IS NOT NULL) THEN '{HELD}' ELSE '{PENDING}' END")
_ENDPOINT_COLUMNS = "target, disabled_at, reason, failing_since, last_failure_at, last_status"
_ATTEMPT_COLUMNS = "at, duration, kind, status, error, body"

_QUERIES = {
    # One statement: the notification goes out with the row, when the caller's transaction commits.
    "add": (
        "WITH ins AS (INSERT INTO {t} (id, endpoint, url, body, headers, state, attempts, next_attempt_at,"
        " created_at, updated_at, target) SELECT %(id)s, %(endpoint)s, %(url)s, %(body)s, %(headers)s,"
        f" {_HOLD_IF_DISABLED.format(e='{e}', target='%(target)s')}, 0, c.now, c.now, c.now, %(target)s"
        f" FROM (SELECT {_NOW} AS now) c"
        " ON CONFLICT (id) DO NOTHING RETURNING id)"
        " SELECT pg_notify(%(channel)s, '') FROM ins"
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
        " d.delivered_at, due.state, due.owner, d.seq"
    ),
    "renew": (
        f"UPDATE {{t}} SET lease_until = {_NOW} + %(lease)s"
        f" WHERE state = '{IN_FLIGHT}' AND owner = %(owner)s AND id = ANY(%(ids)s)"
    ),
    "finish": (
        f"UPDATE {{t}} SET {{assignments}}, owner = NULL, lease_until = NULL, updated_at = {_NOW}"
        " WHERE id = %(id)s AND {condition} RETURNING id"
    ),
    "release": (
        f"UPDATE {{t}} AS d SET state = {_HOLD_IF_DISABLED.format(e='{e}', target='d.target')}, owner = NULL,"
        f" lease_until = NULL, updated_at = {_DB_NOW} WHERE state = '{IN_FLIGHT}' AND owner = %(owner)s"
    ),
    "release_ids": (
        f"UPDATE {{t}} AS d SET state = {_HOLD_IF_DISABLED.format(e='{e}', target='d.target')}, owner = NULL,"
        f" lease_until = NULL, updated_at = {_DB_NOW}"
        f" WHERE state = '{IN_FLIGHT}' AND owner = %(owner)s AND id = ANY(%(ids)s)"
    ),
    "replay": (
        f"UPDATE {{t}} AS d SET state = {_HOLD_IF_DISABLED.format(e='{e}', target='d.target')}, attempts = 0,"
        " next_attempt_at = c.now, owner = NULL,"
        f" lease_until = NULL, updated_at = c.now FROM (SELECT {_NOW} AS now) c WHERE {{where}}"
    ),
    "purge": (
        f"WITH gone AS (DELETE FROM {{t}} WHERE state = %(state)s AND updated_at < {_NOW} - %(older_than)s"
        " RETURNING id), logs AS (DELETE FROM {a} WHERE delivery_id IN (SELECT id FROM gone))"
        " SELECT COUNT(*) FROM gone"
    ),
    "finish_info": "SELECT target, url FROM {t} WHERE id = %(id)s",
    "log_attempt": (
        f"WITH n AS (SELECT COALESCE(MAX(n), 0) + 1 AS n FROM {{a}} WHERE delivery_id = %(id)s),"
        f" ins AS (INSERT INTO {{a}} (delivery_id, n, {_ATTEMPT_COLUMNS}) SELECT %(id)s, n.n, %(at)s,"
        " %(duration)s, %(kind)s, %(status)s, %(error)s, %(body)s FROM n)"
        " DELETE FROM {a} WHERE delivery_id = %(id)s AND n <= (SELECT n FROM n) - %(keep)s"
    ),
    "endpoint": f"SELECT {_ENDPOINT_COLUMNS} FROM {{e}} WHERE target = %(target)s FOR UPDATE",
    "endpoint_new": "INSERT INTO {e} (target) VALUES (%(target)s) ON CONFLICT (target) DO NOTHING",
    "endpoint_set": (
        "UPDATE {e} SET disabled_at = %(disabled_at)s, reason = %(reason)s, failing_since = %(failing_since)s,"
        " last_failure_at = %(last_failure_at)s, last_status = %(last_status)s WHERE target = %(target)s"
    ),
    "hold_endpoint": f"UPDATE {{t}} SET state = '{HELD}' WHERE target = %(target)s AND state = '{PENDING}'",
    "hold_one": f"UPDATE {{t}} SET state = '{HELD}' WHERE id = %(id)s AND state = '{PENDING}'",
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

_FINISH = {
    DELIVERED: (f"state = '{DELIVERED}', attempts = attempts + 1, last_status = %(status)s,"
                f" delivered_at = {_NOW}"),
    PENDING: (f"state = '{PENDING}', attempts = attempts + %(spend)s, next_attempt_at = %(next)s,"
              " last_error = %(error)s, last_status = %(status)s"),
    DEAD: f"state = '{DEAD}', attempts = attempts + %(spend)s, last_error = %(error)s, last_status = %(status)s",
}
_HELD = f"state = '{IN_FLIGHT}' AND owner = %(owner)s"
_NOT_DELIVERED = f"state <> '{DELIVERED}'"


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
    statements.append(sql.SQL(_DDL[0]).format(t=name))
    statements += [sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
        name, sql.Identifier(column), sql.SQL(kind)) for column, kind in _ADDED_COLUMNS]
    statements += [sql.SQL(statement).format(t=name, **_names(table, schema)) for statement in _DDL[1:]]
    return [statement.as_string(None) for statement in statements]


def _names(table: str, schema: Optional[str]) -> Dict[str, sql.Identifier]:
    """The identifiers of the outbox's other tables and indexes, for the DDL's placeholders."""
    prefix = [schema] if schema else []
    names = {k: sql.Identifier(f"{table}_{k}") for k in ("due", "lease", "updated", "target")}
    names.update({key: sql.Identifier(*prefix, f"{table}_{suffix}")
                  for key, suffix in (("a", "attempts"), ("e", "endpoints"))})
    return names


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        id=row[0], endpoint=row[1], url=row[2], body=bytes(row[3]), headers=json.loads(row[4]),
        state=row[5], attempts=row[6], next_attempt_at=row[7], created_at=row[8], updated_at=row[9],
        last_status=row[10], last_error=row[11], owner=row[12], lease_until=row[13], delivered_at=row[14],
    )


def _attempt(row: Sequence[Any]) -> Attempt:
    return Attempt(at=row[0], duration=row[1], kind=row[2], status=row[3], error=row[4], body=bytes(row[5]))


def _health(row: Sequence[Any], held: int = 0) -> EndpointHealth:
    return EndpointHealth(endpoint=row[0], disabled_at=row[1], reason=row[2], failing_since=row[3],
                          last_failure_at=row[4], last_status=row[5], held=held)


def _filters(state: Optional[str], endpoint: Optional[str], since: Optional[float]) -> Tuple[str, Dict[str, Any]]:
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


class PostgresOutbox:
    """A delivery queue in a PostgreSQL table, shared by every process that opens the same URL.

    The table (``table``, in ``schema`` when given) is created on first use, or by
    :meth:`init`. Nothing connects before first use. Each thread borrows a
    connection from a pool of ``pool_size``. Times come from the database server's
    clock unless a method is given ``now``, or unless ``clock`` is given: then,
    as in the SQLite store, that function is the time source (tests).
    ``local_clock`` is this machine's clock, which :attr:`clock` corrects by the
    measured offset to the server's.
    """

    durable = True
    #: What a store operation raises when the database cannot do it now (or the store is closed).
    errors: Tuple[Type[BaseException], ...] = (ValueError, psycopg.Error)

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        owner: Optional[str] = None,
        table: str = DEFAULT_TABLE,
        schema: Optional[str] = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        clock: Optional[Callable[[], float]] = None,
        local_clock: Optional[Callable[[], float]] = None,
    ) -> None:
        if not lease_seconds > 0:
            raise ConfigError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError(f"pool_size must be an int >= 1, got {pool_size!r}")
        if not table or (schema is not None and not schema):
            raise ConfigError("table and schema must be non-empty names")
        self._url = url
        self.path = safe_url(url)  #: where the store lives, for display (no password)
        self.lease_seconds = float(lease_seconds)
        self.owner = owner or _default_owner()
        self.table, self.schema, self.pool_size = table, schema, pool_size
        self._name = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        # The attempt log and the endpoints' health, beside the table.
        self._tables = {key: sql.Identifier(*([schema] if schema else []), f"{table}_{suffix}")
                        for key, suffix in (("a", "attempts"), ("e", "endpoints"))}
        self.channel = (f"{schema}.{table}" if schema else table)[:63]  #: the NOTIFY channel
        self._fixed_clock = clock
        self._local_clock = local_clock or (lambda: time.time())
        self._samples: Deque[Tuple[float, float]] = deque(maxlen=CLOCK_SAMPLES)  # (round trip, offset)
        self._offset = 0.0
        self._lock = threading.Lock()
        self._pool: Optional[ConnectionPool] = None
        self._queries: Dict[str, str] = {}
        self._closed = False
        self._subscribers = Subscribers(self._listener)

    # -- connections --------------------------------------------------------

    def _ready(self) -> ConnectionPool:
        """The open pool, the table created and the clock measured (once)."""
        with self._lock:
            if self._closed:
                raise ValueError("the outbox is closed")
            if self._pool is not None:
                return self._pool
            # One direct connection first: a refused or bad URL fails now, in one clear error,
            # instead of as a pool timeout.
            with psycopg.connect(self._url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)) as conn:
                self._create_tables(conn)
                self._queries = {key: self._compose(q).as_string(conn) for key, q in _QUERIES.items()}
                for state, assignments in _FINISH.items():
                    for condition in (_HELD, _NOT_DELIVERED):
                        self._queries[f"finish {state} {condition}"] = self._compose(
                            _QUERIES["finish"], assignments=assignments, condition=condition).as_string(conn)
                self._sample_clock(conn)
            pool: ConnectionPool = ConnectionPool(
                self._url, min_size=1, max_size=self.pool_size, open=False, timeout=CONNECT_TIMEOUT,
                name=f"syncworkers-outbox-{self.table}",
                kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT)})
            pool.open(wait=False)
            self._pool = pool
            return pool

    def _compose(self, query: str, **parts: str) -> sql.Composed:
        return sql.SQL(query).format(t=self._name, **self._tables, **{k: sql.SQL(v) for k, v in parts.items()},
                                     **{k: sql.SQL("{}") for k in ("assignments", "condition", "where")
                                        if k not in parts})

    def _create_tables(self, conn: "psycopg.Connection[Any]") -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"syncworkers-outbox:{self.channel}",))
            if self.schema:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute(sql.SQL(_DDL[0]).format(t=self._name))
            for column, kind in _ADDED_COLUMNS:
                if conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s"
                                " AND NOT attisdropped", (self._name.as_string(conn), column)).fetchone() is None:
                    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        self._name, sql.Identifier(column), sql.SQL(kind)))
            for statement in _DDL[1:]:
                conn.execute(sql.SQL(statement).format(t=self._name, **_names(self.table, self.schema)))
            self._fill_targets(conn)

    def _fill_targets(self, conn: "psycopg.Connection[Any]") -> None:
        """Name the endpoint of every delivery stored before endpoints were tracked."""
        rows = conn.execute(sql.SQL("SELECT id, url FROM {} WHERE target IS NULL").format(self._name)).fetchall()
        if rows:
            with conn.cursor() as cursor:
                cursor.executemany(sql.SQL("UPDATE {} SET target = %s WHERE id = %s").format(self._name),
                                   [(endpoint_of(url), id) for id, url in rows])

    def _query(self, key: str) -> str:
        self._ready()
        return self._queries[key]

    def _format(self, key: str, conn: "psycopg.Connection[Any]", **parts: str) -> str:
        return self._compose(_QUERIES[key], **parts).as_string(conn)

    def _now_param(self, now: Optional[float]) -> Optional[float]:
        if now is not None:
            return float(now)
        return None if self._fixed_clock is None else float(self._fixed_clock())

    # -- the clock ------------------------------------------------------------------

    def _sample_clock(self, conn: "psycopg.Connection[Any]") -> None:
        before = self._local_clock()
        row = conn.execute(self._queries["db_now"]).fetchone()
        self._record_sample(before, row[0] if row else None)

    def _record_sample(self, before: float, db_now: Optional[float]) -> None:
        if db_now is None:
            return
        after = self._local_clock()
        self._samples.append((after - before, float(db_now) - (before + after) / 2))
        # The sample with the shortest round trip says the most about the offset.
        self._offset = min(self._samples)[1]

    @property
    def clock(self) -> Callable[[], float]:
        """Estimated time on the database server's clock (epoch seconds), or the ``clock`` given."""
        if self._fixed_clock is not None:
            return self._fixed_clock
        return self._db_clock

    def _db_clock(self) -> float:
        if not self._samples:  # not measured yet: connect (and measure) now, if the server answers
            try:
                self._ready()
            except self.errors:
                pass
        return self._local_clock() + self._offset

    # -- writing --------------------------------------------------------------------

    def init(self) -> None:
        """Create the table and its indexes now (they are otherwise created on first use)."""
        self._ready()

    def add(
        self,
        endpoint: str,
        url: str,
        body: bytes,
        headers: Optional[Dict[str, str]] = None,
        id: Optional[str] = None,
        now: Optional[float] = None,
        *,
        connection: Any = None,
    ) -> str:
        """Store a pending delivery due at once and return its id; committed before it returns.

        With ``connection`` (a psycopg or other DB-API connection to the same
        database), the delivery is written in that connection's current
        transaction and neither committed nor rolled back: it exists, and
        deliverers hear of it, when the caller commits. An id already stored
        changes nothing and returns that id.
        """
        headers = check_new_delivery(url, body, headers)
        id = new_id() if id is None else str(id)
        params = {"id": id, "endpoint": endpoint, "url": url, "body": bytes(body), "target": endpoint_of(url),
                  "headers": json.dumps(headers), "now": self._now_param(now), "channel": self.channel}
        query = self._query("add")
        if connection is not None:
            dbapi.execute(connection, query, params)
            return id
        with self._ready().connection() as conn:
            conn.execute(query, params)
        return id

    def claim_due(self, limit: int, now: Optional[float] = None) -> List[Delivery]:
        """Lease up to ``limit`` due deliveries to this owner, earliest due first.

        Due means pending with ``next_attempt_at`` reached, or in flight under an
        expired lease (taken over), on the database's clock unless ``now`` is given.
        """
        if limit <= 0:
            return []
        params = {"now": self._now_param(now), "limit": int(limit), "owner": self.owner,
                  "lease": self.lease_seconds}
        query = self._query("claim")
        with self._ready().connection() as conn:
            rows = conn.execute(query, params).fetchall()
        rows.sort(key=lambda row: (row[7], row[17]))
        taken = sorted({row[16] or "?" for row in rows if row[15] == IN_FLIGHT})
        if taken:
            logger.warning("outbox: took over deliveries whose lease expired (owners: %s)", ", ".join(taken))
        return [_delivery(row) for row in rows]

    def renew(self, ids: Sequence[str], now: Optional[float] = None) -> None:
        """Extend the leases this owner still holds on ``ids`` (others' claims are untouched)."""
        if not ids:
            return
        self._run("renew", {"now": self._now_param(now), "lease": self.lease_seconds, "owner": self.owner,
                            "ids": list(ids)})

    def mark_delivered(self, id: str, status: Optional[int], now: Optional[float] = None, *,
                       attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        """Record a successful attempt: final, even if this owner's lease was lost meanwhile.

        ``attempt`` goes to the attempt log and the endpoint's health (see OutboxStore).
        """
        self._finish(id, DELIVERED, {"status": status}, now, require_claim=False, attempt=attempt,
                     disable_after=disable_after)

    def mark_retry(self, id: str, next_attempt_at: float, error: Optional[str], status: Optional[int] = None,
                   spend_attempt: bool = True, now: Optional[float] = None, *,
                   attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        """Put a claimed delivery back to pending, due at ``next_attempt_at`` (on the database's clock);
        held if its endpoint is disabled."""
        self._finish(id, PENDING, {"spend": int(bool(spend_attempt)), "next": float(next_attempt_at),
                                   "error": error, "status": status}, now, attempt=attempt,
                     disable_after=disable_after)

    def mark_dead(self, id: str, reason: str, status: Optional[int] = None, spend_attempt: bool = True,
                  now: Optional[float] = None, *,
                  attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        """Give up on a claimed delivery; ``reason`` is kept as its last error."""
        self._finish(id, DEAD, {"spend": int(bool(spend_attempt)), "error": reason, "status": status}, now,
                     attempt=attempt, disable_after=disable_after)

    def _finish(self, id: str, state: str, params: Dict[str, Any], now: Optional[float],
                require_claim: bool = True, attempt: Optional[Attempt] = None,
                disable_after: Optional[float] = None) -> None:
        """Apply an attempt's outcome (and log the attempt, in the same transaction); the claim is
        cleared. KeyError for an unknown id."""
        pool = self._ready()
        params = {**params, "id": id, "owner": self.owner, "now": self._now_param(now)}
        condition = _HELD if require_claim else _NOT_DELIVERED
        with pool.connection() as conn, conn.transaction():
            applied = conn.execute(self._queries[f"finish {state} {condition}"], params).fetchone() is not None
            if not applied or attempt is not None:
                info = conn.execute(self._queries["finish_info"], {"id": id}).fetchone()
                if info is None:
                    raise KeyError(id)
                if attempt is not None:  # the attempt was made, whoever records its outcome
                    self._log_attempt(conn, id, attempt)
                    self._observe(conn, id, info[0] or endpoint_of(info[1]), attempt, disable_after)
        if not applied and require_claim:
            # Our lease expired and another owner took the delivery over (or it was already
            # settled): its outcome is theirs to record, not ours to overwrite.
            logger.warning("outbox: delivery %s is no longer claimed by this owner; outcome ignored", id)

    def _log_attempt(self, conn: "psycopg.Connection[Any]", id: str, attempt: Attempt) -> None:
        conn.execute(self._queries["log_attempt"], {
            "id": id, "at": attempt.at, "duration": attempt.duration, "kind": attempt.kind,
            "status": attempt.status, "error": attempt.error, "body": bytes(attempt.body[:health.ANSWER_BYTES]),
            "keep": ATTEMPT_LOG_SIZE})

    def _observe(self, conn: "psycopg.Connection[Any]", id: str, target: str, attempt: Attempt,
                 disable_after: Optional[float]) -> None:
        """The endpoint's health after *attempt*; a disabled endpoint holds its pending deliveries."""
        if health.effect(attempt.kind) is None:
            return
        conn.execute(self._queries["endpoint_new"], {"target": target})
        row = conn.execute(self._queries["endpoint"], {"target": target}).fetchone()  # locked till commit
        before = EndpointHealth(target) if row is None else _health(row)
        after = health.observe(before, attempt.kind, attempt.status, attempt.at, disable_after)
        if after != before:
            conn.execute(self._queries["endpoint_set"], {
                "target": target, "disabled_at": after.disabled_at, "reason": after.reason,
                "failing_since": after.failing_since, "last_failure_at": after.last_failure_at,
                "last_status": after.last_status})
        if before.enabled and not after.enabled:
            logger.warning("outbox: endpoint %s disabled (%s); its deliveries are held until"
                           " `syncworkers outbox enable`", health.shown(target), after.reason)
            conn.execute(self._queries["hold_endpoint"], {"target": target})
        elif not after.enabled:  # disabled while this attempt was on the wire
            conn.execute(self._queries["hold_one"], {"id": id})

    def _run(self, key: str, params: Dict[str, Any], **parts: str) -> int:
        pool = self._ready()
        with pool.connection() as conn:
            query = self._format(key, conn, **parts) if parts else self._queries[key]
            return conn.execute(query, params).rowcount

    def release(self, ids: Optional[Sequence[str]] = None) -> int:
        """Hand this owner's claims back (graceful stop): in flight -> pending, attempts unchanged."""
        if ids is None:
            return self._run("release", {"owner": self.owner})
        ids = list(ids)
        return self._run("release_ids", {"owner": self.owner, "ids": ids}) if ids else 0

    def replay(self, ids: Optional[Sequence[str]] = None, endpoint: Optional[str] = None,
               since: Optional[float] = None, now: Optional[float] = None) -> int:
        """Send dead deliveries again: dead -> pending, due now, attempts reset to 0.

        Filters combine: ``ids``, ``endpoint``, ``since`` (died at or after); one at least.
        """
        if ids is None and endpoint is None and since is None:
            raise ValueError("replay needs ids, an endpoint or a since time")
        where, params = _filters(DEAD, endpoint, since)
        if ids is not None:
            where += " AND id = ANY(%(ids)s)"
            params["ids"] = list(ids)
        return self._run("replay", {**params, "now": self._now_param(now)}, where=where)

    def purge(self, older_than: float, state: str = DELIVERED, now: Optional[float] = None) -> int:
        """Delete ``state`` deliveries (delivered or dead) last updated more than ``older_than`` s ago."""
        if state not in (DELIVERED, DEAD):
            raise ValueError(f"purge removes delivered or dead deliveries only, not {state!r}")
        if older_than < 0:
            raise ValueError(f"older_than must be >= 0, got {older_than!r}")
        query = self._query("purge")
        with self._ready().connection() as conn:
            row = conn.execute(query, {"state": state, "older_than": float(older_than),
                                       "now": self._now_param(now)}).fetchone()
        return int(row[0]) if row else 0

    def enable_endpoint(self, endpoint: str, now: Optional[float] = None) -> int:
        """Enable *endpoint* (``host[:port]/path``) again and release its held deliveries, due now.

        Its failing streak starts afresh. Returns how many were released; KeyError
        for an endpoint the outbox has never seen.
        """
        pool = self._ready()
        with pool.connection() as conn, conn.transaction():
            if conn.execute(self._queries["enable"], {"target": endpoint}).fetchone() is None:
                raise KeyError(endpoint)
            row = conn.execute(self._queries["release_held"], {"target": endpoint, "channel": self.channel,
                                                               "now": self._now_param(now)}).fetchone()
        return int(row[0]) if row else 0

    # -- reading --------------------------------------------------------------------

    def get(self, id: str) -> Optional[Delivery]:
        """The delivery with this id, or None."""
        query = self._query("get")
        with self._ready().connection() as conn:
            row = conn.execute(query, {"id": id}).fetchone()
        return None if row is None else _delivery(row)

    def list(self, state: Optional[str] = None, endpoint: Optional[str] = None,
             since: Optional[float] = None, limit: int = 100) -> List[Delivery]:
        """Deliveries matching every filter given, most recently updated first."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        where, params = _filters(state, endpoint, since)
        pool = self._ready()
        with pool.connection() as conn:
            rows = conn.execute(self._format("list", conn, where=where), {**params, "limit": int(limit)}).fetchall()
        return [_delivery(row) for row in rows]

    def counts(self) -> Dict[str, int]:
        """``{"pending", "in_flight", "delivered", "dead", "held"}``; pending includes those in flight."""
        query = self._query("counts")
        with self._ready().connection() as conn:
            rows = conn.execute(query).fetchall()
        by_state = {state: 0 for state in STATES}
        by_state.update({row[0]: int(row[1]) for row in rows})
        return {
            "pending": by_state[PENDING] + by_state[IN_FLIGHT],
            "in_flight": by_state[IN_FLIGHT],
            "delivered": by_state[DELIVERED],
            "dead": by_state[DEAD],
            "held": by_state[HELD],
        }

    def oldest_pending(self) -> Optional[float]:
        """``created_at`` of the oldest delivery still pending or in flight; None when there is none."""
        query = self._query("oldest_pending")
        with self._ready().connection() as conn:
            row = conn.execute(query).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def attempts(self, id: str) -> List[Attempt]:
        """The attempt log of delivery *id*, oldest first (the last ATTEMPT_LOG_SIZE attempts)."""
        query = self._query("attempts")
        with self._ready().connection() as conn:
            rows = conn.execute(query, {"id": id}).fetchall()
        return [_attempt(row) for row in rows]

    def last_attempts(self, ids: Sequence[str]) -> Dict[str, Attempt]:
        """The last attempt of each delivery in *ids* that has one."""
        query = self._query("last_attempts")
        with self._ready().connection() as conn:
            rows = conn.execute(query, {"ids": list(ids)}).fetchall()
        return {row[0]: _attempt(row[1:]) for row in rows}

    def endpoints(self) -> List[EndpointHealth]:
        """Every endpoint attempted so far, disabled ones first, with its held deliveries counted."""
        query = self._query("endpoints")
        with self._ready().connection() as conn:
            rows = conn.execute(query).fetchall()
        return [_health(row[:6], int(row[6])) for row in rows]

    def next_due(self) -> Optional[float]:
        """When something next becomes claimable: the earliest pending due time or lease expiry.

        Also refreshes the clock offset (the deliverer asks this at every turn).
        """
        query = self._query("next_due")
        with self._ready().connection() as conn:
            before = self._local_clock()
            row = conn.execute(query).fetchone()
            self._record_sample(before, row[2] if row else None)
        times = [t for t in (row[:2] if row else ()) if t is not None]
        return min(times) if times else None

    # -- notifications and lifecycle --------------------------------------------------

    def _listener(self, callback: Callable[[], None]) -> Listener:
        return Listener(self._url, self.channel, callback, name=f"syncworkers-outbox-listen-{self.table}")

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call *callback* whenever a delivery is committed, by any process; returns the unsubscribe.

        One listener thread (one idle connection) serves every subscriber until the
        last unsubscribes or :meth:`close`.
        """
        with self._lock:
            if self._closed:
                raise ValueError("the outbox is closed")
        return self._subscribers.subscribe(callback)

    def close(self) -> None:
        """Stop the listener and close every connection; idempotent. Later calls raise ValueError."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        self._subscribers.close()
        if pool is not None:
            pool.close()

    def __enter__(self) -> "PostgresOutbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresOutbox(url={self.path!r}, table={self.table!r}, owner={self.owner!r})"


__all__ = ["CONNECT_TIMEOUT", "DEFAULT_POOL_SIZE", "DEFAULT_TABLE", "PostgresOutbox", "schema_statements"]
