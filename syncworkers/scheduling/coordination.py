"""Tick claims: each tick of each periodic job runs in one process among all those sharing a backend.

Processes running the same workers put every periodic job on a grid anchored
at the Unix epoch (:meth:`~syncworkers.scheduling.schedule.Schedule.on_epoch_grid`), so
they agree on what "tick n of job X" is without talking. Before running a
tick, each asks the backend to record the claim ``(X, n)``; the first one to
get it runs the tick, the others skip it. There is no leader: when a process
dies, the next tick is simply claimed by another one.

Backends are the databases apps already run:

* Redis (``redis://`` / ``rediss://``): ``SET key owner NX PX ttl``;
* PostgreSQL (``postgresql://``, ``postgres://``, ``postgresql+psycopg://``):
  ``INSERT ... ON CONFLICT DO NOTHING`` into a table created on first use, expired
  rows pruned now and then.

URLs are parsed by :mod:`syncworkers.config.connections`; a backend's error text is
masked with the URL's own :class:`~syncworkers.observability.redaction.Redactor`.

A claim is kept *ttl* seconds (the Runner asks for a few intervals): long
enough for every process, however late its timer or its clock, to have moved
past that tick.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Dict, Optional, Protocol, Union, runtime_checkable

from ..config.connections import POSTGRESQL, REDIS, ConnectionURL, parse_connection_url
from ..exceptions import ConfigError, SyncWorkersError
from ..message import owner_id
from ..observability.redaction import Redactor

logger = logging.getLogger(__name__)

#: Seconds a claim is kept when the caller does not say (the Runner always does).
DEFAULT_CLAIM_TTL = 60.0
#: The Runner keeps each claim this many intervals of its job...
CLAIM_TTL_INTERVALS = 3
#: ...and at least this many seconds, to cover clocks that disagree between machines.
MIN_CLAIM_TTL = 30.0
#: Seconds to connect to the backend and to wait for one answer: a claim never hangs a tick.
BACKEND_TIMEOUT = 5.0
#: Prefix of the Redis keys: ``syncworkers:tick:<job name>:<tick>``.
REDIS_KEY_PREFIX = "syncworkers:tick:"
#: Table of the PostgreSQL claims (created on first use).
POSTGRES_TABLE = "syncworkers_tick_claims"
#: Seconds between two prunings of expired PostgreSQL claims by one process.
PRUNE_INTERVAL = 60.0
#: The environment variable read when a Runner is given no coordination: a redis:// or postgresql:// URL.
COORDINATION_ENV = "SYNCWORKERS_COORDINATION_URL"
#: The URL schemes :func:`open_coordination` knows.
SCHEMES = ("redis", "rediss", "postgresql", "postgres", "postgresql+psycopg")


class CoordinationError(SyncWorkersError):
    """The coordination backend could not be asked (unreachable, timed out, refused)."""


@runtime_checkable
class TickClaims(Protocol):
    """Claims of ``(job name, tick number)``, each granted to one caller cluster-wide."""

    def claim(self, name: str, tick: int, ttl: float = DEFAULT_CLAIM_TTL) -> bool:
        """True if this caller got tick *tick* of job *name*; False if someone else has it.

        Raises :class:`CoordinationError` when the backend cannot be asked.
        """
        ...

    def close(self) -> None:
        """Release connections (safe to call twice)."""
        ...


def _parsed(url: Union[str, ConnectionURL], kind: str) -> ConnectionURL:
    if isinstance(url, ConnectionURL):
        return url
    try:
        return parse_connection_url(url, (kind,), paths=False)
    except ValueError as exc:
        raise ConfigError(f"coordination URL {exc}", {"coordination": str(exc)}) from None


class RedisTickClaims:
    """Tick claims in Redis: one key per claimed tick, ``SET NX PX`` so it expires by itself."""

    def __init__(self, client: Any, *, prefix: str = REDIS_KEY_PREFIX, label: str = "redis",
                 redactor: Optional[Redactor] = None) -> None:
        self.client = client
        self.prefix = prefix
        self._label = label
        self._redactor = redactor if redactor is not None else Redactor()  # masks the error texts
        self._owner = owner_id()

    @classmethod
    def from_url(cls, url: Union[str, ConnectionURL], **kwargs: Any) -> "RedisTickClaims":
        """Connect lazily to the server at *url* (``redis://`` or ``rediss://``)."""
        where = _parsed(url, REDIS)
        try:
            import redis
        except ImportError:
            raise ConfigError("coordination on Redis needs redis-py: pip install 'syncworkers[redis]'",
                              {"coordination": "needs the redis extra"}) from None
        redactor = where.redactor()
        try:
            client = redis.Redis.from_url(where.dsn, socket_timeout=BACKEND_TIMEOUT,
                                          socket_connect_timeout=BACKEND_TIMEOUT)
        except ValueError as exc:
            raise ConfigError(f"invalid coordination URL {where.shown!r}: {redactor.text(str(exc))}",
                              {"coordination": "invalid Redis URL"}) from None
        return cls(client, label=where.shown or "redis", redactor=redactor, **kwargs)

    def claim(self, name: str, tick: int, ttl: float = DEFAULT_CLAIM_TTL) -> bool:
        import redis

        try:
            got = self.client.set(f"{self.prefix}{name}:{tick}", self._owner, nx=True,
                                  px=max(1, int(ttl * 1000)))
        except redis.RedisError as exc:
            raise CoordinationError(self._redactor.text(f"Redis {self._label}: {type(exc).__name__}: {exc}")) from exc
        return bool(got)

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"<RedisTickClaims {self._label}>"


class PostgresTickClaims:
    """Tick claims in a PostgreSQL table: the primary key ``(name, tick)`` grants each tick once.

    One connection (autocommit), opened on first use and again after a
    failure; claims from several threads take turns on it.
    """

    def __init__(self, url: Union[str, ConnectionURL], *, table: str = POSTGRES_TABLE) -> None:
        where = _parsed(url, POSTGRESQL)
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError("coordination on PostgreSQL needs psycopg: pip install 'syncworkers[postgresql]'",
                              {"coordination": "needs the postgresql extra"}) from None
        self.url = where.dsn
        self.table = table
        self._label = where.shown or "postgresql"
        self._redactor = where.redactor()  # masks the error texts
        self._owner = owner_id()
        self._lock = threading.Lock()
        self._conn: Any = None
        self._ready = False  # the table exists
        self._last_prune = -PRUNE_INTERVAL
        self._closed = False

    def _connect(self) -> Any:
        import psycopg
        from psycopg import sql

        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=int(BACKEND_TIMEOUT))
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(int(BACKEND_TIMEOUT * 1000))))
        if not self._ready:
            with conn.transaction():
                # Processes starting together would race on CREATE TABLE IF NOT EXISTS
                # (a unique violation in pg_type): take turns on an advisory lock.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                conn.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " name text NOT NULL, tick bigint NOT NULL, owner text NOT NULL,"
                    " claimed_at timestamptz NOT NULL DEFAULT now(),"
                    " expires_at timestamptz NOT NULL,"
                    " PRIMARY KEY (name, tick))").format(sql.Identifier(self.table)))
            self._ready = True
        return conn

    def claim(self, name: str, tick: int, ttl: float = DEFAULT_CLAIM_TTL) -> bool:
        import psycopg
        from psycopg import sql

        with self._lock:
            if self._closed:
                raise CoordinationError(f"PostgreSQL {self._label}: the claims client is closed")
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                # Expiry on the database clock: machines whose clocks disagree still agree on it.
                cur = self._conn.execute(sql.SQL(
                    "INSERT INTO {} (name, tick, owner, expires_at)"
                    " VALUES (%s, %s, %s, now() + make_interval(secs => %s))"
                    " ON CONFLICT DO NOTHING").format(sql.Identifier(self.table)),
                    (name, tick, self._owner, float(ttl)))
                claimed = cur.rowcount == 1
                if time.monotonic() - self._last_prune >= PRUNE_INTERVAL:
                    self._conn.execute(sql.SQL("DELETE FROM {} WHERE expires_at < now()").format(
                        sql.Identifier(self.table)))
                    self._last_prune = time.monotonic()
            except psycopg.Error as exc:
                self._drop()
                raise CoordinationError(
                    self._redactor.text(f"PostgreSQL {self._label}: {type(exc).__name__}: {exc}")) from exc
            return bool(claimed)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing more to release
                pass

    def close(self) -> None:
        # Not under the lock: a claim stuck on a dead server must not hold up the shutdown.
        self._closed = True
        self._drop()

    def __repr__(self) -> str:
        return f"<PostgresTickClaims {self._label}>"


def claim_ttl(interval: float) -> float:
    """How long the claim of one tick of a job with *interval* is kept."""
    return max(MIN_CLAIM_TTL, CLAIM_TTL_INTERVALS * interval)


class TickGate:
    """The Runner's side of coordination: asks *claims* before each tick and counts the answers.

    ``admit()`` returns True (run it here), False (claimed elsewhere) or None
    (the backend could not be asked). During an outage the tick is skipped,
    not run: running anyway would make every process poll, multiplying the
    load the coordination exists to prevent and repeating the side effects of
    ``process_message``; skipping only loses the ticks of the outage, which
    ``health()`` shows. One WARNING when an outage starts, one when it ends.
    """

    def __init__(self, claims: TickClaims, *, owned: bool) -> None:
        self.claims = claims
        self.owned = owned  # opened from a URL by the Runner: closed with it
        self._lock = threading.Lock()
        self._down_since: Optional[float] = None
        self._lost_in_outage = 0
        self.here = self.elsewhere = self.unclaimed = 0

    def admit(self, name: str, tick: int, interval: float) -> Optional[bool]:
        try:
            claimed = bool(self.claims.claim(name, tick, claim_ttl(interval)))
        except Exception as exc:  # CoordinationError, or anything a custom TickClaims raises
            with self._lock:
                self.unclaimed += 1
                self._lost_in_outage += 1
                first = self._down_since is None
                if first:
                    self._down_since = time.monotonic()
            if first:
                logger.warning("coordination %r unreachable, skipping ticks until it answers: %s: %s",
                               self.claims, type(exc).__name__, exc)
            return None
        with self._lock:
            if claimed:
                self.here += 1
            else:
                self.elsewhere += 1
            down_since, lost = self._down_since, self._lost_in_outage
            self._down_since, self._lost_in_outage = None, 0
        if down_since is not None:
            logger.warning("coordination %r answers again after %.1fs; %d tick(s) were skipped",
                           self.claims, time.monotonic() - down_since, lost)
        return claimed

    def health(self) -> Dict[str, Any]:
        with self._lock:
            return {"backend": repr(self.claims), "reachable": self._down_since is None,
                    "ticks_here": self.here, "ticks_elsewhere": self.elsewhere,
                    "ticks_unclaimed": self.unclaimed}

    def close(self) -> None:
        if self.owned:
            self.claims.close()


def open_coordination(url: str) -> TickClaims:
    """Tick claims for *url*: a Redis or PostgreSQL URL (connects on first claim)."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"coordination URL must be a non-empty string, got {url!r}",
                          {"coordination": "must be a URL"})
    try:
        where = parse_connection_url(url, (REDIS, POSTGRESQL), paths=False)
    except ValueError as exc:
        raise ConfigError(f"coordination URL {exc}", {"coordination": "unknown scheme"}) from None
    if where.kind == REDIS:
        return RedisTickClaims.from_url(where)
    return PostgresTickClaims(where)


def open_gate(coordination: Union[str, TickClaims, None]) -> Optional[TickGate]:
    """The Runner's gate: from a URL, a TickClaims, else the environment; None for none of them."""
    if coordination is None:
        url = os.environ.get(COORDINATION_ENV, "").strip()
        if not url:
            return None
        try:
            return TickGate(open_coordination(url), owned=True)
        except ConfigError as exc:
            raise ConfigError(f"{COORDINATION_ENV}: {exc}", {COORDINATION_ENV: str(exc)}) from None
    if isinstance(coordination, str):
        return TickGate(open_coordination(coordination), owned=True)
    if not callable(getattr(coordination, "claim", None)) or not callable(getattr(coordination, "close", None)):
        raise ConfigError(f"coordination must be a URL or a TickClaims (claim() and close()), "
                          f"got {type(coordination).__name__}", {"coordination": "must be a URL or a TickClaims"})
    return TickGate(coordination, owned=False)


__all__ = [
    "BACKEND_TIMEOUT",
    "DEFAULT_CLAIM_TTL",
    "CLAIM_TTL_INTERVALS",
    "COORDINATION_ENV",
    "MIN_CLAIM_TTL",
    "CoordinationError",
    "PostgresTickClaims",
    "RedisTickClaims",
    "TickClaims",
    "TickGate",
    "claim_ttl",
    "open_coordination",
    "open_gate",
    "owner_id",
]
