"""The pace of the outbox loop's claims: how many deliveries it claims now, and when it claims again.

Two things make a claim wasted work. A delivery claimed for a host already at its limit
comes back postponed (SATURATED) without a request: claiming for every free slot then
turns the backlog over in the store, one claim and one outcome at a time. And deliveries
enqueued one by one, each claimed alone, cost a write each (on SQLite, a write an
``enqueue()`` may wait for). :class:`ClaimPace` claims no more than the hosts on the wire
take once each is at its limit, with a look beyond them every SATURATED_POSTPONE (the
deliveries of other hosts, and the postponing of the full ones' backlog, go on as
before), and waits CLAIM_LINGER after claiming the last due deliveries.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from ..http.retry import SATURATED_POSTPONE

#: Seconds the loop waits, once it has claimed the last due deliveries, before its next claim: deliveries
#: enqueued meanwhile are claimed together, in one write, instead of one claim (and one write
#: transaction, which an enqueue() may wait for) each. Never while a backlog is due, nor after a
#: claim that found nothing (the next delivery enqueued into a quiet outbox is claimed at once).
CLAIM_LINGER = 0.01


class ClaimPace:
    """How many deliveries to claim now (see the module).

    *free_slots* says how many more attempts may start now; *room* how many more the hosts
    on the wire take (:meth:`~syncworkers.http.limits.HostLimiter.room`; None: no limit
    applies). Times are *clock*'s (monotonic seconds). Safe from many threads at once.
    """

    #: See :data:`CLAIM_LINGER`.
    linger: float = CLAIM_LINGER

    def __init__(self, free_slots: Callable[[], int], room: Callable[[], Optional[int]] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free_slots = free_slots
        self._room = room
        self._clock = clock
        self._lock = threading.Lock()
        self._starting = 0  # attempts handed to the pool that have not taken their host's slot yet
        self._next_look = 0.0  # the next claim beyond the room of the hosts on the wire
        self._gather_until = 0.0  # no claim before (see CLAIM_LINGER)

    def restart(self) -> None:
        """A loop starts: it claims at once."""
        self._gather_until = 0.0

    def claimable(self) -> int:
        """How many deliveries to claim now: the free slots, no more than the hosts on the wire take once
        each is at its limit, all of them on a look (once per SATURATED_POSTPONE); none while lingering."""
        free = self.free_slots()
        if free <= 0:
            return 0
        now = self._clock()
        if now < self._gather_until:
            return 0
        room = self.room()
        if room is None or room >= free:
            return free
        if room > 0:
            return room
        if now < self._next_look:
            return 0
        self._next_look = now + SATURATED_POSTPONE
        return free

    def claimed(self, asked: int, got: int) -> None:
        """A claim of *asked* deliveries got *got*: fewer, but some, were the last due ones (linger)."""
        if 0 < got < asked:
            self._gather_until = self._clock() + self.linger

    def room(self) -> Optional[int]:
        """*room*, less the attempts handed to the pool that have not started yet (they will take some)."""
        room = self._room()
        if room is None:
            return None
        with self._lock:
            return max(0, room - self._starting)

    def handed(self) -> None:
        """An attempt was handed to the pool."""
        with self._lock:
            self._starting += 1

    def started(self) -> None:
        """An attempt handed to the pool started (or never will)."""
        with self._lock:
            self._starting -= 1

    def until_next(self) -> Optional[float]:
        """Seconds until a claim may go while free slots wait (lingering, or every host on the wire full:
        an attempt's end comes first, and wakes the loop); None when nothing holds claims back."""
        now = self._clock()
        if now < self._gather_until:
            return self._gather_until - now
        if self.room() == 0:
            return max(0.0, self._next_look - now)
        return None


__all__ = ["CLAIM_LINGER", "ClaimPace"]
