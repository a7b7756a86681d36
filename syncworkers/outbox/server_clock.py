"""An estimate of the database server's clock on this machine, from the times its queries return.

Each sample is a query's round trip and the server's time it returned; the offset
comes from the sample with the shortest round trip, which says the most about it.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Optional, Tuple

#: Clock samples kept; the one with the shortest round trip gives the offset.
CLOCK_SAMPLES = 16


class ServerClock:
    """The server's time estimated as *local* (this machine's clock) plus the measured offset."""

    def __init__(self, local: Callable[[], float], samples: int = CLOCK_SAMPLES) -> None:
        self.local = local
        self._samples: Deque[Tuple[float, float]] = deque(maxlen=samples)  # (round trip, offset)
        self._offset = 0.0

    @property
    def measured(self) -> bool:
        """Whether any sample was recorded yet (until then the offset is 0)."""
        return bool(self._samples)

    def record(self, before: float, server_now: Optional[float]) -> None:
        """A query sent at local time *before* returned the server's time *server_now* (None: ignored)."""
        if server_now is None:
            return
        after = self.local()
        self._samples.append((after - before, float(server_now) - (before + after) / 2))
        # The sample with the shortest round trip says the most about the offset.
        self._offset = min(self._samples)[1]

    def now(self) -> float:
        """The estimated time on the server's clock (epoch seconds)."""
        return self.local() + self._offset


__all__ = ["CLOCK_SAMPLES", "ServerClock"]
