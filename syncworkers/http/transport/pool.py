"""urllib3 connection pools that bound idle keep-alive connections and expire old ones.

urllib3 keeps up to ``maxsize`` connections per host and reuses them however
long they sat idle. Servers close idle connections on their own schedule, and
a pool that outlives that reuses dead sockets. These pools add the two knobs
HTTP_MAX_KEEPALIVE_CONNECTIONS and HTTP_KEEPALIVE_EXPIRY describe: at most
``max_idle`` connections are kept open while idle, and a connection idle for
longer than ``keepalive_expiry`` seconds is closed instead of reused.

They also tell the deadline watchdog which connection an attempt holds.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Type

from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ..netguard import AddressPolicy
from .deadline import bind_connection, release_connection
from .pinned import pinned_connection_classes

_IDLE_SINCE = "_syncworkers_idle_since"


class _KeepAliveMixin:
    """Tracks when each pooled connection went idle; the class attributes are set per client."""

    keepalive_expiry: Optional[float] = None
    max_idle: Optional[int] = None
    _next_sweep: float
    clock: Callable[[], float] = staticmethod(time.monotonic)
    pool: Any

    def _is_open(self, conn: Any) -> bool:
        return conn is not None and getattr(conn, "sock", None) is not None

    def _get_conn(self, timeout: Optional[float] = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        idle_since = getattr(conn, _IDLE_SINCE, None)
        if (idle_since is not None and self.keepalive_expiry is not None
                and self.clock() - idle_since > self.keepalive_expiry and self._is_open(conn)):
            conn.close()  # urllib3 reconnects a closed connection on its next request
        bind_connection(conn)
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            release_connection(conn)
            now = self.clock()
            setattr(conn, _IDLE_SINCE, now)
            pool = self.pool
            # The scan is O(pool size) under the queue's lock, so it runs only when it can
            # change something: a bound below the pool size needs the count on every return;
            # expired connections are looked for at most every half expiry (reuse of an
            # expired one is prevented in _get_conn regardless).
            bounded = self.max_idle is not None and pool is not None and self.max_idle < pool.maxsize
            expiry = self.keepalive_expiry
            if bounded or (expiry is not None and now >= getattr(self, "_next_sweep", now)):
                if expiry is not None:
                    self._next_sweep = now + expiry / 2
                self._sweep(now, conn)
        super()._put_conn(conn)  # type: ignore[misc]

    def _sweep(self, now: float, returning: Any) -> None:
        """Close expired idle connections, and the returning one if too many are open."""
        pool = self.pool
        if pool is None:
            return
        with pool.mutex:  # the LifoQueue's own lock: the deque is only touched under it
            idle = [c for c in pool.queue if c is not None and getattr(c, "sock", None) is not None]
        open_idle = 0
        expiry = self.keepalive_expiry
        for conn in idle:
            if expiry is not None and now - getattr(conn, _IDLE_SINCE, now) > expiry:
                conn.close()
            else:
                open_idle += 1
        if self.max_idle is not None and open_idle >= self.max_idle and self._is_open(returning):
            returning.close()


class KeepAliveHTTPConnectionPool(_KeepAliveMixin, HTTPConnectionPool):
    pass


class KeepAliveHTTPSConnectionPool(_KeepAliveMixin, HTTPSConnectionPool):
    pass


def pool_classes(keepalive_expiry: Optional[float], max_idle: Optional[int],
                 clock: Callable[[], float] = time.monotonic,
                 policy: Optional[AddressPolicy] = None) -> Dict[str, Type[HTTPConnectionPool]]:
    """Pool classes for a PoolManager's ``pool_classes_by_scheme``, bound to these settings.

    (PoolManager rejects unknown pool keywords, so the settings travel as class attributes.)
    With a *policy* that blocks addresses, connections go only to addresses it checked.
    """
    attrs: Dict[str, Any] = {"keepalive_expiry": keepalive_expiry, "max_idle": max_idle,
                             "clock": staticmethod(clock)}
    connections = pinned_connection_classes(policy) if policy is not None and policy.block_private else {}
    classes: Dict[str, Type[HTTPConnectionPool]] = {}
    for scheme, base in (("http", KeepAliveHTTPConnectionPool), ("https", KeepAliveHTTPSConnectionPool)):
        extra = {"ConnectionCls": connections[scheme]} if scheme in connections else {}
        classes[scheme] = type(f"{scheme.upper()}Pool", (base,), {**attrs, **extra})
    return classes
