"""Message sources for a webhook worker's ``process()`` loop.

:class:`RedisListConsumer` needs the optional ``redis`` package, so it is
imported on first use and left out of ``__all__``: ``import syncworkers.sources``
and ``from syncworkers.sources import *`` work without it.
"""

from typing import Any

from .base import Source
from .memory import MemoryQueue


def __getattr__(name: str) -> Any:
    if name == "RedisListConsumer":
        from .redis import RedisListConsumer

        return RedisListConsumer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Source", "MemoryQueue"]
