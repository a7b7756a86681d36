"""Schedule math of periodic jobs: the fixed-rate grid and stagger offsets.

Pure: no threads, no clock of its own; time comes in as ``now``. The Runner
(runner.py) drives these on its timer thread.

Two anchors for the grid of a job with interval I:

* **start-anchored** (the default): tick n is due at ``start + offset + n*I``
  on the monotonic clock; the first tick is due at once (plus the offset);
* **epoch-anchored** (:meth:`Schedule.on_epoch_grid`, used with
  coordination): tick n is due when the wall clock reads ``n*I + offset``, so
  processes that never talk agree on what "tick n" is and can claim it.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Callable, List, Sequence, Tuple

from ..config.validators import check_interval, check_jitter  # noqa: F401 - their home; re-exported


class Schedule:
    """The fixed-rate grid of one periodic job; time only comes in as ``now``.

    Tick n is due at ``anchor + n*interval`` plus a jitter delay drawn once
    per tick from ``[0, jitter)``: jitter moves a tick, never the grid, so
    neither jitter nor the time a tick takes accumulates. :meth:`due`
    coalesces: however many grid points went by, the job fires at most once,
    and :attr:`tick` then says which grid point it fired for.

    The caller validates *interval* and *jitter* (:func:`~syncworkers.config.validators.check_interval`,
    :func:`~syncworkers.config.validators.check_jitter`; :class:`~syncworkers.scheduling.runner.PeriodicJob` does).
    """

    def __init__(self, interval: float, start: float, *, offset: float = 0.0, jitter: float = 0.0,
                 rand: Callable[[], float] = random.random, first: int = 0):
        self.interval = interval
        self.anchor = start + offset
        self.jitter = jitter
        self._rand = rand
        self.index = first  # grid point of the next tick
        self.tick = first - 1  # grid point of the last tick fired
        self.delay = self._draw()

    @classmethod
    def on_epoch_grid(cls, interval: float, now: float, wall_now: float, *, offset: float = 0.0,
                      jitter: float = 0.0, rand: Callable[[], float] = random.random) -> "Schedule":
        """A schedule whose tick n is due when the wall clock reads ``n*interval + offset``.

        *now* is the caller's (monotonic) clock and *wall_now* the Unix time at
        the same instant: the grid is placed on the wall clock once and then
        followed on the monotonic one (NTP slews both alike). The first tick is
        the next grid point at or after *wall_now*, so it is not immediate.
        """
        first = math.ceil((wall_now - offset) / interval)
        return cls(interval, now - wall_now, offset=offset, jitter=jitter, rand=rand, first=first)

    def _draw(self) -> float:
        return self.jitter * self._rand() if self.jitter else 0.0

    def grid(self, n: int) -> float:
        """When grid point *n* falls, before jitter."""
        return self.anchor + n * self.interval

    @property
    def next_due(self) -> float:
        """When the next tick is due, jitter included."""
        return self.grid(self.index) + self.delay

    def due(self, now: float, busy: bool = False) -> Tuple[bool, int]:
        """Move past every tick due by *now*; return ``(fire, skipped)``.

        ``fire`` is True when a tick is due and the job is not *busy* (its last
        tick still running or queued); :attr:`tick` is then the grid point
        fired: the latest one due. ``skipped`` counts the due ticks that will
        never run: all of them when busy, all but the one fired otherwise.
        """
        if now < self.next_due:
            return False, 0
        passed = max(1, math.floor((now - self.grid(self.index)) / self.interval) + 1)
        while self.grid(self.index + passed) <= now:  # the division may round down
            passed += 1
        self.index += passed
        self.delay = self._draw()
        if busy:
            return False, passed
        self.tick = self.index - 1
        return True, passed - 1


def stagger_offsets(intervals: Sequence[float]) -> List[float]:
    """First-tick offsets spreading N jobs: job i of N starts i/N of its own interval late."""
    count = len(intervals)
    return [interval * i / count for i, interval in enumerate(intervals)]


def name_offset(name: str, interval: float) -> float:
    """A stagger offset in ``[0, interval)`` derived from *name* alone.

    A stable hash (SHA-256, not ``hash()``, which is salted per process), so
    every process puts a job of that name on the same shifted grid.
    """
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    return fraction * interval


def nearest_tick(interval: float, wall_now: float, offset: float = 0.0) -> int:
    """The epoch-grid tick nearest *wall_now*: the one a single run (``run --once``) claims.

    Cron starts runs on the grid, give or take the machines' clock skew and start-up
    time; rounding (not flooring) puts runs a little early or late on the same tick,
    and on the tick a long-running process due then claims.
    """
    return math.floor((wall_now - offset) / interval + 0.5)


__all__ = [
    "Schedule",
    "check_interval",
    "check_jitter",
    "name_offset",
    "nearest_tick",
    "stagger_offsets",
]
