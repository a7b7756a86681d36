"""The timer and the ticks of a Runner: the schedule heap, firing due ticks on the pool, loop threads.

:class:`TickDriver` is mixed into :class:`~syncworkers.scheduling.runner.Runner`, which owns the
lifecycle (start, stop, signals) and the state these methods read.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, List, Optional, Set, Tuple

from .jobs import Job, LoopJob, PeriodicJob
from .schedule import Schedule, name_offset, stagger_offsets
from ..signals import StopSignal


if TYPE_CHECKING:  # pragma: no cover
    from .coordination import TickGate

logger = logging.getLogger("syncworkers.scheduling.runner")

#: Longest the timer sleeps without reading the clock again (bounds the cost of a lost wakeup).
MAX_TIMER_WAIT = 60.0
#: Seconds the wall clock may step (against the monotonic one) before coordinated grids are placed again.
CLOCK_STEP = 1.0


@dataclass(eq=False)
class _Entry:
    key: str
    job: PeriodicJob
    schedule: Schedule
    busy: bool = False  # a tick is queued or running: the next one due is skipped
    future: Optional["Future[None]"] = None
    fired: int = 0
    skipped: int = 0
    errors: int = 0
    here: int = 0  # ticks whose func ran in this process
    elsewhere: int = 0  # coordinated ticks another process claimed
    unclaimed: int = 0  # coordinated ticks skipped: the backend could not be asked
    offset: float = 0.0  # of the grid, in seconds
    epoch: Optional[float] = None  # coordinated: monotonic minus Unix time when the grid was placed


@dataclass(eq=False)
class _Loop:
    key: str
    job: LoopJob
    thread: threading.Thread = field(init=False)
    errors: int = 0


class TickDriver:
    """Scheduling and running the jobs of a Runner (see there for the attributes)."""

    if TYPE_CHECKING:  # provided by the Runner
        name: str
        stagger: bool
        stop_event: StopSignal
        loop_restart_delay: float
        _clock: Callable[[], float]
        _wall_clock: Callable[[], float]
        _wake: threading.Event
        _lock: threading.Lock
        _local: threading.local
        _random: random.Random
        _gate: Optional[TickGate]
        _keys: Set[str]
        _entries: List[_Entry]
        _loops: List[_Loop]
        _heap: List[Tuple[float, int, _Entry]]
        _seq: "itertools.count[int]"
        _pool: Optional[ThreadPoolExecutor]
        _pool_threads: Set[threading.Thread]

    def _unique_key(self, name: str) -> str:
        key, n = name, 2
        while key in self._keys:  # two workers may well name their jobs alike
            key, n = f"{name}-{n}", n + 1
        self._keys.add(key)
        return key

    def _schedule(self, jobs: List[Job]) -> None:
        now = self._clock()
        periodic = [job for job in jobs if isinstance(job, PeriodicJob)]
        offsets = [0.0] * len(periodic)
        if self.stagger:  # spread among the jobs scheduled together: all at start(), a worker's on add()
            offsets = stagger_offsets([job.interval for job in periodic])
        wall_now = self._wall_clock()
        loops: List[_Loop] = []
        with self._lock:
            for job, offset in zip(periodic, offsets):
                key = self._unique_key(job.name)
                if self._gate is None or not job.coordinated:
                    schedule = Schedule(job.interval, now, offset=offset, jitter=job.jitter,
                                        rand=self._random.random)
                else:  # every process must agree on tick n: the grid and offset come from time and name
                    offset = name_offset(key, job.interval) if self.stagger else 0.0
                    schedule = self._epoch_schedule(job, offset, now, wall_now)
                entry = _Entry(key, job, schedule, offset=offset)
                if self._gate is not None and job.coordinated:
                    entry.epoch = now - wall_now
                self._entries.append(entry)
                heapq.heappush(self._heap, (schedule.next_due, next(self._seq), entry))
            for loop_job in jobs:
                if isinstance(loop_job, LoopJob):
                    loop = _Loop(self._unique_key(loop_job.name), loop_job)
                    loop.thread = threading.Thread(target=self._run_loop, args=(loop,),
                                                   name=f"syncworkers-loop-{loop.key}", daemon=True)
                    loops.append(loop)
            self._loops += loops
        for loop in loops:
            loop.thread.start()
        self._wake.set()

    def _timer_loop(self) -> None:
        while True:
            self._wake.clear()
            if self.stop_event.is_set():  # checked after clear(): stop() sets it before waking us
                return
            self._wake.wait(self._fire_due())

    def _epoch_schedule(self, job: PeriodicJob, offset: float, now: float, wall_now: float) -> Schedule:
        return Schedule.on_epoch_grid(job.interval, now, wall_now, offset=offset, jitter=job.jitter,
                                      rand=self._random.random)

    def _fire_due(self) -> float:
        """Submit every tick due now; return the seconds until the next one is due."""
        now = self._clock()
        wall_now = self._wall_clock() if self._gate is not None else 0.0
        skips = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                _, _, entry = heapq.heappop(self._heap)
                if entry.epoch is not None and abs(now - wall_now - entry.epoch) > CLOCK_STEP:
                    # The wall clock stepped (NTP, a resumed VM): follow it, or this process
                    # would number its ticks unlike the others.
                    logger.warning("job %r: the wall clock stepped by %.1fs; placing its grid again",
                                   entry.key, entry.epoch - (now - wall_now))
                    entry.schedule = self._epoch_schedule(entry.job, entry.offset, now, wall_now)
                    entry.epoch = now - wall_now
                    heapq.heappush(self._heap, (entry.schedule.next_due, next(self._seq), entry))
                    continue
                fire, skipped = entry.schedule.due(now, busy=entry.busy)
                if fire:
                    self._submit(entry)
                if skipped:
                    entry.skipped += skipped
                    skips.append((entry, skipped))
                heapq.heappush(self._heap, (entry.schedule.next_due, next(self._seq), entry))
            next_due = self._heap[0][0] if self._heap else None
        for entry, skipped in skips:
            logger.debug("job %r: skipped %d tick(s), the previous one was still running", entry.key, skipped)
            if entry.job.on_skip is not None:
                try:
                    entry.job.on_skip(skipped)
                except Exception:
                    logger.exception("job %r: on_skip raised", entry.key)
        if next_due is None:
            return MAX_TIMER_WAIT
        return min(MAX_TIMER_WAIT, max(0.0, next_due - self._clock()))

    def _submit(self, entry: _Entry) -> None:
        assert self._pool is not None  # created by start() before the timer runs
        try:
            entry.future = self._pool.submit(self._run_tick, entry, entry.schedule.tick)
        except RuntimeError:  # stop() shut the pool while this timer was still firing
            return
        entry.busy = True
        entry.fired += 1

    def _run_tick(self, entry: _Entry, tick: int) -> None:
        self._local.entry = entry  # lets stop() called from this tick skip waiting for it
        try:
            with self._lock:
                self._pool_threads.add(threading.current_thread())
            # Not after stop(): queued before it and not cancelled in time.
            if not self.stop_event.is_set() and self._claimed(entry, tick):
                with self._lock:
                    entry.here += 1
                entry.job.func()
        except BaseException as exc:
            with self._lock:
                entry.errors += 1
            if entry.job.on_error is None:
                logger.error("job %r raised", entry.key, exc_info=exc)
            else:
                try:
                    entry.job.on_error(exc)
                except Exception:
                    logger.exception("job %r: on_error raised", entry.key)
        finally:
            self._local.entry = None
            with self._lock:
                entry.busy = False

    def _claimed(self, entry: _Entry, tick: int) -> bool:
        """True if this process is to run *tick*: always without coordination, else if it got the claim."""
        if self._gate is None or not entry.job.coordinated:
            return True
        verdict = self._gate.admit(entry.key, tick, entry.job.interval)
        if verdict:
            return True
        with self._lock:
            if verdict is None:
                entry.unclaimed += 1
            else:
                entry.elsewhere += 1
        if entry.job.on_unclaimed is not None:
            try:
                entry.job.on_unclaimed(verdict is False)
            except Exception:
                logger.exception("job %r: on_unclaimed raised", entry.key)
        return False

    def _run_loop(self, loop: _Loop) -> None:
        while not self.stop_event.is_set():
            try:
                loop.job.func(self.stop_event)
            except BaseException:
                with self._lock:
                    loop.errors += 1
                logger.error("loop job %r raised; calling it again in %ss", loop.key,
                             self.loop_restart_delay, exc_info=True)
                self.stop_event.wait(self.loop_restart_delay)
                continue
            if not self.stop_event.is_set():
                logger.warning("loop job %r returned before stop()", loop.key)
            return


__all__ = ["CLOCK_STEP", "MAX_TIMER_WAIT", "TickDriver"]
