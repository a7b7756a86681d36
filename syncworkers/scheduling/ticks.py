"""The tick driver of a Runner: the schedule heap, firing due ticks on a pool, loop-job threads.

:class:`TickDriver` is a part the :class:`~syncworkers.scheduling.runner.Runner`
builds when it starts, from what it uses: the pool, the run's stop signal, the
clocks and the coordination gate. The Runner keeps the lifecycle (workers'
startup and shutdown, stop with a timeout, signals); the driver keeps the time.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..signals import StopSignal
from .coordination import TickGate
from .jobs import Job, LoopJob, PeriodicJob
from .schedule import Schedule, name_offset, stagger_offsets

logger = logging.getLogger("syncworkers.scheduling.runner")

#: Longest the timer sleeps without reading the clock again (bounds the cost of a lost wakeup).
MAX_TIMER_WAIT = 60.0
#: Seconds the wall clock may step (against the monotonic one) before coordinated grids are placed again.
CLOCK_STEP = 1.0
#: Seconds before a loop job whose function raised is called again.
LOOP_RESTART_DELAY = 1.0


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
    """Fire each periodic job's due ticks on *pool*, fixed-rate, and run each loop job on a thread.

    A tick due while the job's previous one is queued or running is skipped and
    counted. With a *gate* (coordination), coordinated jobs sit on an epoch-anchored
    grid read from *wall_clock* and each tick is claimed on a pool thread before
    it runs. *stop* ends the timer and the loops and keeps queued ticks from
    running. ``start()`` runs the timer thread ``syncworkers-timer-<name>``; tests
    may call :meth:`fire_due` themselves with an injected *clock* instead.
    """

    def __init__(self, pool: Executor, stop: StopSignal, *, name: str, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, gate: Optional[TickGate] = None,
                 stagger: bool = False, loop_restart_delay: float = LOOP_RESTART_DELAY,
                 rand: Optional[random.Random] = None) -> None:
        self.name = name
        self.stop = stop
        self.stagger = stagger
        self.loop_restart_delay = loop_restart_delay
        self._pool = pool
        self._clock = clock
        self._wall_clock = wall_clock
        self._gate = gate
        self._random = rand or random.Random()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards the heap, the entries and their counters; never held to wait
        self._local = threading.local()
        self._keys: Set[str] = set()
        self._entries: List[_Entry] = []
        self._loops: List[_Loop] = []
        self._heap: List[Tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._pool_threads: Set[threading.Thread] = set()
        self.timer: Optional[threading.Thread] = None
        stop.on_set(self.wakeup)  # the timer reads the stop as soon as it is given

    def start(self) -> None:
        """Start the timer thread (once)."""
        self.timer = threading.Thread(target=self._timer_loop, name=f"syncworkers-timer-{self.name}", daemon=True)
        self.timer.start()

    def wakeup(self) -> None:
        """Make the timer read the clock and the schedule now."""
        self._wake.set()

    def schedule(self, jobs: List[Job]) -> None:
        """Put periodic *jobs* on the heap (first tick one interval from now) and start the loop jobs' threads."""
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
        self.wakeup()

    def fire_due(self) -> float:
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

    def in_tick(self) -> bool:
        """True when the calling thread is running one of this driver's ticks."""
        return getattr(self._local, "entry", None) is not None

    def outstanding(self) -> Tuple[List["Future[None]"], List[threading.Thread]]:
        """The ticks submitted and not cancelled, and the loop threads: what a stop waits for.

        Leaves out the calling thread's own tick or loop (a stop from inside one).
        """
        own, current = getattr(self._local, "entry", None), threading.current_thread()
        with self._lock:
            # A future cancelled by the pool's shutdown never counts as done for wait(): leave it out.
            futures = [e.future for e in self._entries
                       if e.future is not None and not e.future.cancelled() and e is not own]
            loops = [loop.thread for loop in self._loops if loop.thread is not current]
        return futures, loops

    def report(self) -> Tuple[Dict[str, Dict[str, Any]], int]:
        """``(jobs, pool threads alive)``: each job's counters by key, and how many pool threads ran ticks."""
        with self._lock:
            jobs: Dict[str, Dict[str, Any]] = {
                e.key: {"kind": "periodic", "interval": e.job.interval, "fired": e.fired,
                        "skipped": e.skipped, "errors": e.errors, "busy": e.busy,
                        "next_due": e.schedule.next_due, "ticks_here": e.here,
                        "ticks_elsewhere": e.elsewhere, "ticks_unclaimed": e.unclaimed}
                for e in self._entries}
            for loop in self._loops:
                jobs[loop.key] = {"kind": "loop", "alive": loop.thread.is_alive(), "errors": loop.errors}
            return jobs, sum(t.is_alive() for t in self._pool_threads)

    # -- internals ----------------------------------------------------------

    def _unique_key(self, name: str) -> str:
        key, n = name, 2
        while key in self._keys:  # two workers may well name their jobs alike
            key, n = f"{name}-{n}", n + 1
        self._keys.add(key)
        return key

    def _timer_loop(self) -> None:
        while True:
            self._wake.clear()
            if self.stop.is_set():  # checked after clear(): setting the stop wakes us after setting it
                return
            self._wake.wait(self.fire_due())

    def _epoch_schedule(self, job: PeriodicJob, offset: float, now: float, wall_now: float) -> Schedule:
        return Schedule.on_epoch_grid(job.interval, now, wall_now, offset=offset, jitter=job.jitter,
                                      rand=self._random.random)

    def _submit(self, entry: _Entry) -> None:
        try:
            entry.future = self._pool.submit(self._run_tick, entry, entry.schedule.tick)
        except RuntimeError:  # the run's stop shut the pool while this timer was still firing
            return
        entry.busy = True
        entry.fired += 1

    def _run_tick(self, entry: _Entry, tick: int) -> None:
        self._local.entry = entry  # lets a stop called from this tick skip waiting for it
        try:
            with self._lock:
                self._pool_threads.add(threading.current_thread())
            # Not after the stop: queued before it and not cancelled in time.
            if not self.stop.is_set() and self._claimed(entry, tick):
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
        while not self.stop.is_set():
            try:
                loop.job.func(self.stop)
            except BaseException:
                with self._lock:
                    loop.errors += 1
                logger.error("loop job %r raised; calling it again in %ss", loop.key,
                             self.loop_restart_delay, exc_info=True)
                self.stop.wait(self.loop_restart_delay)
                continue
            if not self.stop.is_set():
                logger.warning("loop job %r returned before stop()", loop.key)
            return


__all__ = ["CLOCK_STEP", "LOOP_RESTART_DELAY", "MAX_TIMER_WAIT", "TickDriver"]
