"""What a Runner runs: periodic jobs (a tick on the pool every interval) and loop jobs (a thread each).

Workers hand these to a :class:`~syncworkers.scheduling.runner.Runner` from ``jobs()``;
each validates its values once, here, where they enter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Protocol, Union

from ..config.validators import check_interval, check_jitter, flag
from ..exceptions import ConfigError


def _check_job(job: Union["PeriodicJob", "LoopJob"]) -> None:
    if not isinstance(job.name, str) or not job.name:
        raise ConfigError(f"job name must be a non-empty string, got {job.name!r}",
                          {"name": "must be a non-empty string"})
    if not callable(job.func):
        raise ConfigError(f"job {job.name!r}: func must be callable, got {job.func!r}",
                          {"func": "must be callable"})


@dataclass
class PeriodicJob:
    """A tick of work run on the pool every ``interval`` seconds, fixed-rate.

    A tick due while the previous one is still running or queued is skipped
    and reported to ``on_skip(count)``; an exception escaping ``func`` goes to
    ``on_error(exc)`` (or is logged when it is None) and the job lives on.
    ``jitter`` delays each tick by up to that many seconds without moving the grid.
    With a coordinated Runner, ``name`` is the job's identity cluster-wide and a
    tick not run here is reported to ``on_unclaimed(elsewhere)``: True when
    another process claimed it, False when the coordination backend could not be asked.
    ``coordinated=False`` keeps a job out of coordination (work every process
    must do for itself, on its own start-anchored grid).
    """

    name: str
    interval: float
    func: Callable[[], Any]
    jitter: float = 0.0
    on_skip: Optional[Callable[[int], None]] = None
    on_error: Optional[Callable[[BaseException], None]] = None
    on_unclaimed: Optional[Callable[[bool], None]] = None
    coordinated: bool = True

    def __post_init__(self) -> None:
        _check_job(self)
        try:
            check_interval(self.interval)
        except ValueError as exc:
            raise ConfigError(f"job {self.name!r}: {exc}", {"interval": str(exc)}) from None
        try:
            check_jitter(self.jitter, self.interval)
        except ValueError as exc:
            raise ConfigError(f"job {self.name!r}: {exc}", {"jitter": str(exc)}) from None
        try:
            flag(self.coordinated)
        except ValueError as exc:
            raise ConfigError(f"job {self.name!r}: coordinated {exc}", {"coordinated": str(exc)}) from None
        for hook in ("on_skip", "on_error", "on_unclaimed"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise ConfigError(f"job {self.name!r}: {hook} must be callable or None, "
                                  f"got {getattr(self, hook)!r}", {hook: "must be callable or None"})


@dataclass
class LoopJob:
    """A long-running loop on its own thread ``syncworkers-loop-<name>``.

    ``func(stop_event)`` must return once the event is set. If it raises, the
    exception is logged and ``func`` is called again after
    :data:`LOOP_RESTART_DELAY` seconds; if it returns, the job is over.
    """

    name: str
    func: Callable[[threading.Event], Any]

    def __post_init__(self) -> None:
        _check_job(self)


class Worker(Protocol):
    """What :class:`Runner` accepts; a ``_bind_runner(runner)`` method is optional."""

    def jobs(self) -> List[Union[PeriodicJob, LoopJob]]: ...

    def startup(self) -> None: ...

    def shutdown(self) -> None: ...


Job = Union[PeriodicJob, LoopJob]

__all__ = ["Job", "LoopJob", "PeriodicJob", "Worker"]
