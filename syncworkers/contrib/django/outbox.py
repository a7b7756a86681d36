"""The outbox in a Django database (``SYNCWORKERS["OUTBOX"]`` names a DATABASES alias).

What the app does runs on Django's connections (:mod:`.connections`): enqueue, the
reads (``counts``, ``get``, ``list``, attempt logs, endpoints), ``replay``,
``enable_endpoint`` and ``purge`` happen in the calling thread's transaction, so a
view's ``atomic()`` decides whether a webhook exists, a ``TestCase`` reads back what
it enqueued, and Django's test database (in memory, or PostgreSQL's ``test_…``) holds
the outbox. What the deliverer does (claim, renew, record outcomes, release, listen)
runs on the store's own connections, with its pool and its write lock: opened on
first use, released by :meth:`DjangoOutbox.close`, opened again when next needed.
Both sides are the same store class, so every rule of the store holds on either.
A database in memory has no other connection to deliver from: there, Django's
connections do it all.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from django.db import Error as DjangoDatabaseError  # type: ignore[import-untyped]
from django.db import connections, transaction

from ...outbox import open_outbox
from ...outbox.health import EndpointHealth
from ...outbox.listen import Subscribers
from ...outbox.store import DEFAULT_LEASE_SECONDS, DELIVERED, Attempt, Delivery, OutboxStore, default_owner
from .connections import DjangoPostgresConnections, DjangoSQLiteConnections, is_in_memory


class DjangoOutbox:
    """The outbox store of the Django database *alias*; *location* says where the deliverer connects
    (``conf.database_location``: the file or URL of the same database). See the module docstring."""

    durable = True

    def __init__(self, alias: str, location: Callable[[], str], *, owner: Optional[str] = None,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.alias = alias
        self.owner = owner or default_owner()
        self.lease_seconds = float(lease_seconds)
        self._location = location
        self._app = self._app_store()
        self.path: Optional[str] = self._app.path
        self.errors: Tuple[Type[BaseException], ...] = (*self._app.errors, DjangoDatabaseError)
        self._lock = threading.Lock()
        self._deliverer: Optional[OutboxStore] = None
        self._subscribers = Subscribers()

    def _app_store(self) -> OutboxStore:
        options: Dict[str, Any] = {"owner": self.owner, "lease_seconds": self.lease_seconds}
        if connections[self.alias].vendor == "sqlite":
            from ...outbox.sqlite import Outbox

            return Outbox(connections=DjangoSQLiteConnections(self.alias), **options)
        from ...outbox.postgres import PostgresOutbox

        return PostgresOutbox(self._location(), connections=DjangoPostgresConnections(self.alias), **options)

    def _delivering(self) -> OutboxStore:
        """The deliverer's store: the store's own connections, opened now if need be."""
        with self._lock:
            if self._deliverer is None:
                if is_in_memory(self.alias):
                    self._deliverer = self._app
                else:
                    self._deliverer = open_outbox(self._location(), owner=self.owner,
                                                  lease_seconds=self.lease_seconds)
            return self._deliverer

    @property
    def clock(self) -> Callable[[], float]:
        """The deliverer's time source (the database server's, for PostgreSQL)."""
        return lambda: self._delivering().clock()

    # -- what the app does: Django's connection of the calling thread ---------------------------

    def add(self, endpoint: str, url: str, body: bytes, headers: Optional[Dict[str, str]] = None,
            id: Optional[str] = None, now: Optional[float] = None, *, connection: Any = None,
            trace_context: Optional[Mapping[str, str]] = None) -> str:
        """Store a delivery in the current transaction (or at once, outside one); see ``OutboxStore.add``.

        A deliverer in this process hears of it once the transaction commits.
        """
        added = self._app.add(endpoint, url, body, headers, id=id, now=now, connection=connection,
                              trace_context=trace_context)
        self._notify_on_commit()
        return added

    def get(self, id: str) -> Optional[Delivery]:
        return self._app.get(id)

    def list(self, state: Optional[str] = None, endpoint: Optional[str] = None,
             since: Optional[float] = None, limit: int = 100) -> List[Delivery]:
        return self._app.list(state, endpoint, since, limit)

    def counts(self) -> Dict[str, int]:
        return self._app.counts()

    def attempts(self, id: str) -> List[Attempt]:
        return self._app.attempts(id)

    def last_attempts(self, ids: Sequence[str]) -> Dict[str, Attempt]:
        return self._app.last_attempts(ids)

    def endpoints(self) -> List[EndpointHealth]:
        return self._app.endpoints()

    def oldest_pending(self) -> Optional[float]:
        return self._app.oldest_pending()

    def replay(self, ids: Optional[Sequence[str]] = None, endpoint: Optional[str] = None,
               since: Optional[float] = None, now: Optional[float] = None) -> int:
        replayed = self._app.replay(ids, endpoint, since, now)
        self._notify_on_commit()
        return replayed

    def enable_endpoint(self, endpoint: str, now: Optional[float] = None) -> int:
        released = self._app.enable_endpoint(endpoint, now)
        self._notify_on_commit()
        return released

    def purge(self, older_than: float, state: str = DELIVERED, now: Optional[float] = None) -> int:
        return self._app.purge(older_than, state, now)

    def _notify_on_commit(self) -> None:
        """Wake this process's deliverer once the calling thread's transaction commits (at once outside one)."""
        if connections[self.alias].in_atomic_block:
            transaction.on_commit(self._subscribers.notify, using=self.alias)
        else:
            self._subscribers.notify()

    # -- what the deliverer does: the store's own connections ----------------------------------

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call *callback* after each delivery this process commits and, on PostgreSQL, any process."""
        deliverer = self._delivering()
        mine = self._subscribers.subscribe(callback)
        theirs = deliverer.subscribe(callback) if deliverer is not self._app else None

        def unsubscribe() -> None:
            mine()
            if theirs is not None:
                theirs()

        return unsubscribe

    def claim_due(self, limit: int, now: Optional[float] = None) -> List[Delivery]:
        return self._delivering().claim_due(limit, now)

    def renew(self, ids: Sequence[str], now: Optional[float] = None) -> None:
        self._delivering().renew(ids, now)

    def mark_delivered(self, id: str, status: Optional[int], now: Optional[float] = None, *,
                       attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        self._delivering().mark_delivered(id, status, now, attempt=attempt, disable_after=disable_after)

    def mark_retry(self, id: str, next_attempt_at: float, error: Optional[str], status: Optional[int] = None,
                   spend_attempt: bool = True, now: Optional[float] = None, *,
                   attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        self._delivering().mark_retry(id, next_attempt_at, error, status, spend_attempt, now, attempt=attempt,
                                      disable_after=disable_after)

    def mark_dead(self, id: str, reason: str, status: Optional[int] = None, spend_attempt: bool = True,
                  now: Optional[float] = None, *,
                  attempt: Optional[Attempt] = None, disable_after: Optional[float] = None) -> None:
        self._delivering().mark_dead(id, reason, status, spend_attempt, now, attempt=attempt,
                                     disable_after=disable_after)

    def release(self, ids: Optional[Sequence[str]] = None) -> int:
        return self._delivering().release(ids)

    def next_due(self) -> Optional[float]:
        return self._delivering().next_due()

    def close(self) -> None:
        """Close the deliverer's own connections (opened again when next needed); Django's are Django's."""
        with self._lock:
            deliverer, self._deliverer = self._deliverer, None
        if deliverer is not None and deliverer is not self._app:
            deliverer.close()

    def __repr__(self) -> str:
        return f"DjangoOutbox(alias={self.alias!r}, owner={self.owner!r})"


__all__ = ["DjangoOutbox"]
