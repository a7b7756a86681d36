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
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Set, Tuple

from ..signals import Deadline, StopSignal
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
#: Shortest sleep of the timer (unless woken): ticks falling due within it fire together, at most this late.
#: A thousand pollers at 1 s then cost ~200 wake-ups a second, not 1,000, and each batch of ticks runs on
#: one pool thread instead of passing the GIL between five.
FIRE_WINDOW = 0.005


class Pool(Protocol):
    """What runs the ticks: :class:`~syncworkers.scheduling.pool.TickPool`, or a test's own."""

    def run_each(self, func: Callable[[Any], Any], args: Iterable[Any]) -> None: ...

    def nudge(self) -> bool: ...


@dataclass(eq=False)
class _Entry:
    key: str
    job: PeriodicJob
    schedule: Schedule
    busy: bool = False  # a tick is queued or running: the next one due is skipped
    tick: int = 0  # the grid point of the tick queued or running (the schedule may be placed again meanwhile)
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

    The timer sleeps on a lock that :meth:`wakeup` releases (no Event, no
    condition variable), at least :data:`FIRE_WINDOW` unless woken, and hands the
    ticks due to the pool as one batch; the pool's ``nudge()`` at each wake-up
    brings in another thread for ticks held up behind a slow one. A tick's
    counters are written only by the thread running it (one tick of a job at a
    time), so only its start and end take the lock.
    """

    def __init__(self, pool: Pool, stop: StopSignal, *, name: str, clock: Callable[[], float] = time.monotonic,
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
        # Held while the timer sleeps; wakeup() releases it (two wake-ups before the timer reads one are one).
        self._bell = threading.Lock()
        self._bell.acquire()
        self._lock = threading.Lock()  # guards the heap, the entries, what runs; never held to wait
        self._idle = threading.Condition(self._lock)  # notified when a tick ends while a stop waits
        self._stopping = 0  # how many wait_running() calls wait now
        self._local = threading.local()
        self._keys: Set[str] = set()
        self._entries: List[_Entry] = []
        self._loops: List[_Loop] = []
        self._heap: List[Tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._running: Set[_Entry] = set()  # ticks whose func was started and has not returned
        self.timer: Optional[threading.Thread] = None
        stop.on_set(self.wakeup)  # the timer reads the stop as soon as it is given

    def start(self) -> None:
        """Start the timer thread (once)."""
        self.timer = threading.Thread(target=self._timer_loop, name=f"syncworkers-timer-{self.name}", daemon=True)
        self.timer.start()

    def wakeup(self) -> None:
        """Make the timer read the clock and the schedule now."""
        try:
            self._bell.release()
        except RuntimeError:  # released already: the timer has a wake-up waiting
            pass

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
        """Hand every tick due now to the pool; return the seconds until the next one is due."""
        now = self._clock()
        wall_now = self._wall_clock() if self._gate is not None else 0.0
        fires: List[_Entry] = []
        skips: List[Tuple[_Entry, int]] = []
        heap = self._heap
        with self._lock:
            while heap and heap[0][0] <= now:
                entry = heap[0][2]
                if entry.epoch is not None and abs(now - wall_now - entry.epoch) > CLOCK_STEP:
                    # The wall clock stepped (NTP, a resumed VM): follow it, or this process
                    # would number its ticks unlike the others.
                    logger.warning("job %r: the wall clock stepped by %.1fs; placing its grid again",
                                   entry.key, entry.epoch - (now - wall_now))
                    entry.schedule = self._epoch_schedule(entry.job, entry.offset, now, wall_now)
                    entry.epoch = now - wall_now
                    heapq.heapreplace(heap, (entry.schedule.next_due, next(self._seq), entry))
                    continue
                fire, skipped = entry.schedule.due(now, busy=entry.busy)
                if fire:
                    entry.tick = entry.schedule.tick
                    entry.busy = True  # from now until the tick ends, the job's next ticks are skipped
                    entry.fired += 1
                    fires.append(entry)
                if skipped:
                    entry.skipped += skipped
                    skips.append((entry, skipped))
                heapq.heapreplace(heap, (entry.schedule.next_due, next(self._seq), entry))
            next_due = heap[0][0] if heap else None
        if fires:  # after the lock: the thread woken takes it as each tick starts
            self._submit(fires)
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

    def running(self) -> List[str]:
        """The keys of the jobs whose tick is running now, but the calling thread's own (a stop from inside one).

        A tick queued and not started is not running: after the stop it never starts.
        """
        own = getattr(self._local, "entry", None)
        with self._lock:
            return sorted(e.key for e in self._running if e is not own)

    def wait_running(self, timeout: Optional[float] = None) -> int:
        """Wait up to *timeout* until no tick runs (but the calling thread's own); return how many still do."""
        own = getattr(self._local, "entry", None)
        deadline = Deadline(timeout)
        with self._lock:
            self._stopping += 1
            try:
                while True:
                    left = len(self._running) - (own in self._running)
                    remaining = deadline.remaining()
                    if not left or remaining == 0:
                        return left
                    self._idle.wait(remaining)
            finally:
                self._stopping -= 1

    def loop_threads(self) -> List[threading.Thread]:
        """The loop jobs' threads, but the calling one (a stop from inside a loop): what a stop joins."""
        current = threading.current_thread()
        with self._lock:
            return [loop.thread for loop in self._loops if loop.thread is not current]

    def report(self) -> Dict[str, Dict[str, Any]]:
        """Each job's counters by key."""
        with self._lock:
            jobs: Dict[str, Dict[str, Any]] = {
                e.key: {"kind": "periodic", "interval": e.job.interval, "fired": e.fired,
                        "skipped": e.skipped, "errors": e.errors, "busy": e.busy,
                        "next_due": e.schedule.next_due, "ticks_here": e.here,
                        "ticks_elsewhere": e.elsewhere, "ticks_unclaimed": e.unclaimed}
                for e in self._entries}
            for loop in self._loops:
                jobs[loop.key] = {"kind": "loop", "alive": loop.thread.is_alive(), "errors": loop.errors}
            return jobs

    # -- internals ----------------------------------------------------------

    def _unique_key(self, name: str) -> str:
        key, n = name, 2
        while key in self._keys:  # two workers may well name their jobs alike
            key, n = f"{name}-{n}", n + 1
        self._keys.add(key)
        return key

    def _timer_loop(self) -> None:
        bell, stop, pool = self._bell, self.stop, self._pool
        while not stop.is_set():  # setting the stop wakes us after setting it
            wait = self.fire_due()
            held_up = pool.nudge()
            bell.acquire(timeout=FIRE_WINDOW if held_up else max(wait, FIRE_WINDOW))

    def _epoch_schedule(self, job: PeriodicJob, offset: float, now: float, wall_now: float) -> Schedule:
        return Schedule.on_epoch_grid(job.interval, now, wall_now, offset=offset, jitter=job.jitter,
                                      rand=self._random.random)

    def _submit(self, entries: List[_Entry]) -> None:
        try:
            self._pool.run_each(self._run_tick, entries)
        except RuntimeError:  # the run's stop shut the pool while this timer was still firing
            with self._lock:
                for entry in entries:
                    entry.busy = False
                    entry.fired -= 1

    def _run_tick(self, entry: _Entry) -> None:
        # The entry's counters are written only here and one tick of a job runs at a time: no lock.
        local = self._local
        with self._lock:
            if self.stop.is_set():  # queued before the stop and not dropped in time: it does not start
                entry.busy = False
                return
            self._running.add(entry)
        local.entry = entry  # lets a stop called from this tick skip waiting for it
        try:
            if self._claimed(entry, entry.tick):
                entry.here += 1
                entry.job.func()
        except BaseException as exc:
            entry.errors += 1
            if entry.job.on_error is None:
                logger.error("job %r raised", entry.key, exc_info=exc)
            else:
                try:
                    entry.job.on_error(exc)
                except Exception:
                    logger.exception("job %r: on_error raised", entry.key)
        finally:
            local.entry = None
            with self._lock:
                self._running.discard(entry)
                entry.busy = False
                if self._stopping:
                    self._idle.notify_all()

    def _claimed(self, entry: _Entry, tick: int) -> bool:
        """True if this process is to run *tick*: always without coordination, else if it got the claim."""
        if self._gate is None or not entry.job.coordinated:
            return True
        verdict = self._gate.admit(entry.key, tick, entry.job.interval)
        if verdict:
            return True
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


__all__ = ["CLOCK_STEP", "FIRE_WINDOW", "LOOP_RESTART_DELAY", "MAX_TIMER_WAIT", "Pool", "TickDriver"]
