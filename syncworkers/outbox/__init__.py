"""The durable webhook outbox: a store interface and its backends.

:class:`Outbox` is the SQLite store (a file, or in memory when no path is given);
``PostgresOutbox`` (:mod:`syncworkers.outbox.postgres`, the ``postgresql`` extra)
is one outbox shared by many processes and machines. :func:`open_outbox` opens
either from a URL or a path.
"""

from .sqlite import DEFAULT_LEASE_SECONDS, SCHEMA_VERSION, Outbox
from .store import DEAD, DELIVERED, IN_FLIGHT, PENDING, STATES, Delivery, OutboxStore, next_delay
from .urls import open_outbox

__all__ = [
    "DEAD",
    "DEFAULT_LEASE_SECONDS",
    "DELIVERED",
    "IN_FLIGHT",
    "PENDING",
    "SCHEMA_VERSION",
    "STATES",
    "Delivery",
    "Outbox",
    "OutboxStore",
    "next_delay",
    "open_outbox",
]
