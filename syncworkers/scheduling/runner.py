"""Runner: one thread pool and one timer thread drive the jobs of many workers.

Modelled on APScheduler 3's BlockingScheduler: the timer sleeps in
``Event.wait(seconds_to_next_due)`` and :meth:`Runner.wakeup` makes it read the
schedule again. Scheduling is fixed-rate on an injected monotonic clock; the
pure part (schedule.py) takes ``now`` as an argument and is tested without
threads. Threads do not grow with the number of periodic jobs: one timer, at
most ``max_workers`` pool threads, plus one thread per loop job. With
coordination (coordination.py), a pool thread claims each tick before running it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

from .coordination import COORDINATION_ENV, TickClaims, open_gate
from ..config.validators import checked, count, flag
from ..exceptions import ConfigError, WorkerError
from ..observability.process_hooks import install
from .jobs import Job, LoopJob, PeriodicJob, Worker
from .pool import TickPool
from .schedule import Schedule, stagger_offsets
from ..signals import Deadline, StopSignal
from .ticks import CLOCK_STEP, LOOP_RESTART_DELAY, MAX_TIMER_WAIT, TickDriver

logger = logging.getLogger(__name__)

#: Pool size when ``max_workers`` is None: the ThreadPoolExecutor default (the pool is a lighter one of ours).
DEFAULT_MAX_WORKERS = max(1, min(32, (os.cpu_count() or 1) + 4))
#: How often run() on the main thread looks for a received SIGINT/SIGTERM (see run()).
SIGNAL_POLL_INTERVAL = 0.2


_NEW, _STARTING, _RUNNING, _STOPPED = "new", "starting", "running", "stopped"


class Runner:
    """Drive the jobs of many workers with one thread pool and one timer thread.

    Periodic jobs run on the pool, never two ticks of one job at once and at
    most one queued per job; loop jobs run on their own threads. The runner
    is not restartable: start() once, stop() any number of times.

    *coordination* (a ``redis://``/``rediss://``/``postgresql://`` URL or a
    :class:`~syncworkers.scheduling.coordination.TickClaims`; None reads
    ``SYNCWORKERS_COORDINATION_URL``) makes each tick of each periodic job run
    in one process among all those running the same jobs: ticks sit on a grid
    anchored at the Unix epoch (*wall_clock*), shifted by an offset derived
    from the job's name with *stagger*, and each is claimed before it runs. A
    client opened from a URL is the Runner's and is closed by stop(); a
    TickClaims object passed in stays the caller's to close.

    The timing is the work of a :class:`~syncworkers.scheduling.ticks.TickDriver`
    that start() builds and hands the pool, the clocks, the stop signal and the
    gate; the Runner keeps the workers' lifecycle.
    """

    #: Seconds before a loop job whose function raised is called again.
    loop_restart_delay: float = LOOP_RESTART_DELAY

    def __init__(self, workers: Iterable[Any] = (), max_workers: Optional[int] = None, stagger: bool = False,
                 clock: Callable[[], float] = time.monotonic, name: str = "runner",
                 coordination: Union[str, TickClaims, None] = None,
                 wall_clock: Callable[[], float] = time.time):
        install()  # the process-wide hooks (idempotent): here, never at import
        if max_workers is None:
            max_workers = DEFAULT_MAX_WORKERS
        max_workers = checked("max_workers", max_workers, count(text=False))
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty string, got {name!r}",
                              {"name": "must be a non-empty string"})
        for arg, value in (("clock", clock), ("wall_clock", wall_clock)):
            if not callable(value):
                raise ConfigError(f"{arg} must be callable, got {value!r}", {arg: "must be callable"})
        self._gate = open_gate(coordination)
        self._wall_clock = wall_clock
        self.name = name
        self.max_workers = max_workers
        self.stagger = checked("stagger", stagger, flag)
        self.stop_event = StopSignal()  # the run's one stop signal, handed to every worker
        self._clock = clock
        # _lifecycle serialises start/add/stop (re-entrant: a startup() may add());
        # _lock guards the list of started workers and is never held while waiting.
        self._lifecycle = threading.RLock()
        self._lock = threading.Lock()
        self._state = _NEW
        self._workers: List[Any] = []
        self._started: List[Any] = []
        self._workers_shut = False
        self._pool: Optional[TickPool] = None
        self._ticks: Optional[TickDriver] = None  # built by start(), with the pool
        self._signalled: Optional[int] = None
        self._stopped_first = False  # stop() came before start(): run() then returns at once
        for worker in workers:
            self.add(worker)

    def __repr__(self) -> str:
        return f"<Runner {self.name!r} {self._state} workers={len(self._workers)}>"

    @property
    def running(self) -> bool:
        """True from start() until stop() is called."""
        return self._state == _RUNNING

    # -- lifecycle ----------------------------------------------------------

    def add(self, worker: Worker) -> None:
        """Add *worker*; once the runner runs, its startup() is called and its jobs scheduled now."""
        for method in ("jobs", "startup", "shutdown"):
            if not callable(getattr(worker, method, None)):
                raise ConfigError(f"{type(worker).__name__} is not a worker: it has no {method}() method")
        with self._lifecycle:
            if self._state == _STOPPED:
                raise WorkerError(f"runner {self.name!r} is stopped: cannot add a worker")
            if any(known is worker for known in self._workers):
                raise WorkerError(f"{type(worker).__name__} was already added to runner {self.name!r}")
            self._workers.append(worker)
            if self._ticks is not None and self._state == _RUNNING:
                self._ticks.schedule(self._start_worker(worker))
            # _NEW or _STARTING: start() picks it up.

    def start(self) -> "Runner":
        """Call each worker's startup() here, then start the pool, the timer and the loop threads.

        If a startup() raises, the workers already started are shut down, the
        runner is left stopped and the exception propagates.
        """
        with self._lifecycle:
            if self._state != _NEW:
                done = "was stopped" if self._stopped_first else "was already started"
                raise WorkerError(f"runner {self.name!r} {done}: a Runner runs once")
            self._state = _STARTING
            jobs: List[Job] = []
            try:
                index = 0
                while index < len(self._workers):  # a startup() may add() more workers
                    jobs += self._start_worker(self._workers[index])
                    index += 1
            except BaseException:
                self._state = _STOPPED
                self.stop_event.set()
                self._shutdown_workers()
                self._close_gate()
                raise
            self._pool = TickPool(self.max_workers, f"syncworkers-pool-{self.name}")
            self._ticks = TickDriver(self._pool, self.stop_event, name=self.name, clock=self._clock,
                                     wall_clock=self._wall_clock, gate=self._gate, stagger=self.stagger,
                                     loop_restart_delay=self.loop_restart_delay)
            self._state = _RUNNING
            self._ticks.schedule(jobs)
            self._ticks.start()
        if self._gate is not None:
            logger.info("runner %r: each tick claimed on %r", self.name, self._gate.claims)
        return self

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Stop scheduling, wait up to *timeout* for running jobs, then shut the workers down.

        Queued ticks are cancelled; running ticks and loop jobs are waited for
        (``None``: as long as they take). Each worker's shutdown() is called
        once, after the wait. Returns True if everything ended in time. Safe to
        call again (a later call waits for what is left) and from inside a job,
        which then does not wait for itself (its worker's shutdown() then runs
        before that job returns).
        """
        deadline = Deadline(timeout)
        with self._lifecycle:
            if self._state == _STARTING:
                raise WorkerError(f"runner {self.name!r}: stop() called from inside start()")
            first, never_started = self._state == _RUNNING, self._state == _NEW
            self._stopped_first = self._stopped_first or never_started
            self._state = _STOPPED
            self.stop_event.set()  # the tick driver's timer and loops wake on it
        ticks, pool = self._ticks, self._pool
        if never_started or ticks is None or pool is None:
            self._close_gate()
            return True
        current = threading.current_thread()
        timer = ticks.timer
        if timer is not None and timer is not current:
            timer.join(deadline.remaining())
        if first:
            pool.shutdown(cancel=True)  # ticks queued and not started never start
        inside_tick = ticks.in_tick()
        pending = ticks.wait_running(deadline.remaining())
        loops = ticks.loop_threads()
        for thread in loops:
            thread.join(deadline.remaining())
        alive = [t.name for t in loops if t.is_alive()]
        if timer is not None and timer is not current and timer.is_alive():
            alive.append(timer.name)
        ended = not pending and not alive
        if not ended:
            logger.warning("runner %r: stop() timed out; still running: %d tick(s), threads %s",
                           self.name, pending, alive)
        self._shutdown_workers()
        self._close_gate()
        if ended and not inside_tick:
            pool.join()  # every tick is over: this only joins the idle threads
        if ended:
            from ..http.transport.deadline import WATCHDOG

            WATCHDOG.stop_if_idle()  # no request of ours is in flight: its thread need not linger
        return ended

    def run(self) -> None:
        """start(), block until stop() is called or SIGINT/SIGTERM arrives, then stop().

        On the main thread, SIGINT and SIGTERM handlers are installed and the
        previous ones restored before the final stop(), so a second signal acts
        as it did before (e.g. Ctrl-C raises KeyboardInterrupt out of a slow
        stop). The handler only records the signal and run() polls for it:
        setting an Event from a handler can deadlock on the Event's own lock
        when the signal lands while the main thread holds it inside wait().
        If stop() came first (run() on a thread not yet going), run() returns at once.
        """
        with self._lifecycle:
            if self._stopped_first:
                return
        previous: Dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._on_signal)
        poll = SIGNAL_POLL_INTERVAL if previous else MAX_TIMER_WAIT
        try:
            self.start()
            while not self.stop_event.wait(poll) and self._signalled is None:
                pass
        finally:
            for signum, handler in previous.items():
                if handler is not None:  # None: a handler installed from C, which Python cannot restore
                    signal.signal(signum, handler)
        if self._signalled is not None:
            logger.info("runner %r: %s received, stopping", self.name, signal.Signals(self._signalled).name)
        self.stop()

    def wakeup(self) -> None:
        """Make the timer read the clock and the schedule now."""
        if self._ticks is not None:
            self._ticks.wakeup()

    def __enter__(self) -> "Runner":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def stats(self) -> Dict[str, Any]:
        """A snapshot: ticks fired, skipped and failed per job and in total, and live threads."""
        ticks, pool = self._ticks, self._pool
        jobs = ticks.report() if ticks is not None else {}
        pool_threads = pool.alive if pool is not None else 0
        timer = ticks.timer if ticks is not None else None
        periodic = [job for job in jobs.values() if job["kind"] == "periodic"]
        return {
            "name": self.name,
            "running": self.running,
            "max_workers": self.max_workers,
            "fired": sum(job["fired"] for job in periodic),
            "skipped": sum(job["skipped"] for job in periodic),
            "errors": sum(job["errors"] for job in jobs.values()),
            "threads": {"timer": int(timer is not None and timer.is_alive()),
                        "pool": pool_threads,
                        "loops": sum(job["alive"] for job in jobs.values() if job["kind"] == "loop")},
            "jobs": jobs,
        }

    def health(self) -> Dict[str, Any]:
        """:attr:`stats` plus ``coordination``: the backend, whether it answers, and the
        ticks run here, run elsewhere and skipped unclaimed (None without coordination)."""
        report = self.stats
        report["coordination"] = None if self._gate is None else self._gate.health()
        return report

    # -- internals ----------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signalled = signum

    def _start_worker(self, worker: Any) -> List[Job]:
        bind = getattr(worker, "_bind_runner", None)
        if bind is not None:
            bind(self)
        worker.startup()
        self._started.append(worker)
        jobs = list(worker.jobs())
        for job in jobs:
            if not isinstance(job, (PeriodicJob, LoopJob)):
                raise ConfigError(f"{type(worker).__name__}.jobs() must return PeriodicJob or LoopJob "
                                  f"objects, got {type(job).__name__}")
        return jobs

    def _shutdown_workers(self) -> None:
        with self._lock:
            if self._workers_shut:
                return
            self._workers_shut = True
            workers = list(reversed(self._started))
        for worker in workers:
            try:
                worker.shutdown()
            except Exception:
                logger.exception("runner %r: %s.shutdown() raised", self.name, type(worker).__name__)


    def _close_gate(self) -> None:
        if self._gate is not None:
            try:
                self._gate.close()
            except Exception:
                logger.exception("runner %r: closing the coordination client raised", self.name)


__all__ = [
    "DEFAULT_MAX_WORKERS",
    "CLOCK_STEP",
    "COORDINATION_ENV",
    "LOOP_RESTART_DELAY",
    "MAX_TIMER_WAIT",
    "SIGNAL_POLL_INTERVAL",
    "LoopJob",
    "PeriodicJob",
    "Runner",
    "Schedule",
    "Worker",
    "stagger_offsets",
]
