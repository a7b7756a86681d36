"""``syncworkers run``, ``check`` and ``demo``: running workers, once (cron) or until stopped."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
import threading
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, ContextManager, Dict, FrozenSet, Iterator, List, Optional, Sequence, Set

import click

from ..outbox.urls import printable_location
from ..scheduling.coordination import COORDINATION_ENV
from ..exceptions import SyncWorkersError, safe_url

from .app import _LOG_OPTIONS, EXIT_FAILED, CLIError, _describe, _log, _log_options, _setup, build_worker, build_workers, cli, echo


_STATUS = re.compile(r"^([1-5])(?:([0-9]{2})|xx)$", re.I)


def parse_statuses(text: str) -> FrozenSet[int]:
    """The statuses of ``"5xx"``, ``"429,5xx"`` or ``"404"``; ValueError for anything else."""
    statuses: Set[int] = set()
    for token in text.split(","):
        match = _STATUS.match(token.strip())
        if match is None:
            raise ValueError(f"{token.strip()!r} is not a status: give codes or classes like 404, 429,5xx")
        first, rest = match.groups()
        base = int(first) * 100
        statuses |= {base + int(rest)} if rest is not None else set(range(base, base + 100))
    return frozenset(statuses)


def _status_option(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> FrozenSet[int]:
    if value is None:
        return frozenset()
    try:
        return parse_statuses(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _coordination_option(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """A coordination URL whose scheme and extra are checked now: a usage error, before anything runs."""
    if value is None:
        return None
    from ..scheduling.coordination import open_coordination

    try:
        open_coordination(value).close()  # connects on first claim: nothing is asked here
    except SyncWorkersError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


_RUN_OPTIONS = [
    click.option("--once", is_flag=True, help="One cycle of each worker, then exit (cron style)."),
    click.option("--fail-on-status", "fail_on_status", default=None, metavar="CODES", callback=_status_option,
                 help="With --once: a poll answered with one of these statuses (after retries) fails "
                      "(exit 1). Codes or classes, comma separated: 5xx, 429,5xx, 404."),
    click.option("--max-workers", type=click.IntRange(min=1), default=None, help="Threads of the shared pool."),
    click.option("--stagger/--no-stagger", default=False, show_default=True,
                 help="Spread the pollers' first ticks across their interval (default: every first poll at once)."),
    click.option("--coordination", metavar="URL", default=None, envvar=COORDINATION_ENV, callback=_coordination_option,
                 show_envvar=True, help="redis://, rediss:// or postgresql:// URL: each tick of each poller "
                                        "runs in one process among all those running the same workers "
                                        "(with --once: the tick nearest the start)."),
    click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
                 help="Serve /metrics, /livez and /readyz on this port (0: any free port, logged)."),
    click.option("--metrics-host", default="127.0.0.1", show_default=True,
                 help="Address the metrics port listens on (0.0.0.0: every interface)."),
    click.option("--lock", "lock_path", type=click.Path(dir_okay=False), default=None,
                 help="Hold an exclusive lock on this file; if another run holds it, do nothing and exit 0."),
]


_APP_DIR_OPTION = click.option("--app-dir", type=click.Path(file_okay=False), default=None,
                               help="Put this folder first on sys.path before importing (cron runs from /).")


def run_options(func: Any) -> Any:
    """The options of ``run`` (also on ``flask syncworkers run`` and ``manage.py syncworkers run``)."""
    for option in reversed(_RUN_OPTIONS + _LOG_OPTIONS):
        func = option(func)
    return func


@cli.command()
@click.argument("targets", nargs=-1, required=True, metavar="MODULE:WORKER...")
@run_options
@_APP_DIR_OPTION
def run(targets: Sequence[str], once: bool, fail_on_status: FrozenSet[int], max_workers: Optional[int],
        stagger: bool, coordination: Optional[str], metrics_port: Optional[int], metrics_host: str,
        lock_path: Optional[str], log_level: str, log_format: str, env_file: Optional[str],
        app_dir: Optional[str]) -> None:
    """Run workers until SIGINT/SIGTERM (exit 0), or one cycle each with --once."""
    check_run_options(once, fail_on_status, metrics_port)
    _setup(log_level, log_format, env_file)
    if app_dir is not None:
        _add_app_dir(app_dir)
    with exclusive_lock(lock_path) as held:
        if not held:
            return
        execute(lambda: build_workers(targets), once=once, fail_on_status=fail_on_status, max_workers=max_workers,
                stagger=stagger, coordination=coordination, metrics_port=metrics_port, metrics_host=metrics_host)


def _add_app_dir(app_dir: str) -> None:
    path = os.path.abspath(app_dir)
    if not os.path.isdir(path):
        raise CLIError(f"--app-dir {app_dir!r}: no such folder")
    sys.path.insert(0, path)


@contextmanager
def exclusive_lock(path: Optional[str]) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on *path* (created if missing) for the block; no path: no lock.

    Yields False, after saying so in one line on stderr, when another process
    holds the lock: an overlapping cron run then does nothing and exits 0. The
    kernel drops the lock when the process dies, so a crash never leaves it stuck.
    """
    if path is None:
        yield True
        return
    import fcntl

    try:
        handle = open(path, "a")
    except OSError as exc:
        raise CLIError(f"--lock {path!r}: {exc.strerror}") from exc
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: held by another process
            echo(f"another run holds the lock {path}; nothing to do", err=True)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def check_run_options(once: bool, fail_on_status: FrozenSet[int], metrics_port: Optional[int]) -> None:
    """The ``run`` options that do not go together: a usage error (exit 2) before anything is built."""
    if fail_on_status and not once:
        raise click.UsageError("--fail-on-status only applies with --once")
    if once and metrics_port is not None:
        raise CLIError("--metrics-port serves a running worker; it does not go with --once")


def execute(build: Callable[[], List[Any]], *, once: bool = False, fail_on_status: FrozenSet[int] = frozenset(),
            max_workers: Optional[int] = None, stagger: bool = False, coordination: Optional[str] = None,
            metrics_port: Optional[int] = None, metrics_host: str = "127.0.0.1",
            around: Optional[Callable[[], ContextManager[Any]]] = None) -> None:
    """The body of every ``run`` command: build the workers, then run them (or one cycle each).

    *coordination* is the Runner's (None: ``SYNCWORKERS_COORDINATION_URL``, if set).
    *around*, when given, is entered around each job and each ``--once`` cycle
    (an app context, Django's connection handling).
    """
    check_run_options(once, fail_on_status, metrics_port)
    with _EarlySignals() as early:
        _execute(build, early, once=once, fail_on_status=fail_on_status, max_workers=max_workers, stagger=stagger,
                 coordination=coordination, metrics_port=metrics_port, metrics_host=metrics_host, around=around)


class _EarlySignals:
    """SIGINT/SIGTERM from the start of a run: a signal that arrives while workers are being built,
    before the Runner installs its own handlers, stops the run cleanly (exit 0) instead of killing
    the process. Handlers only record the signal (see Runner.run()); the main thread only."""

    def __init__(self) -> None:
        self.signalled: Optional[int] = None
        self._runner: Any = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "_EarlySignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def _record(self, signum: int, frame: Any) -> None:
        self.signalled = signum
        if self._runner is not None:
            self._runner._on_signal(signum, frame)

    def forward_to(self, runner: Any) -> None:
        """From now on (and for a signal already received) *runner* is told."""
        self._runner = runner
        if self.signalled is not None:
            runner._on_signal(self.signalled, None)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def _execute(build: Callable[[], List[Any]], early: _EarlySignals, *, once: bool, fail_on_status: FrozenSet[int],
             max_workers: Optional[int], stagger: bool, coordination: Optional[str], metrics_port: Optional[int],
             metrics_host: str, around: Optional[Callable[[], ContextManager[Any]]]) -> None:
    workers = build()
    if once:
        from ..scheduling.coordination import open_gate

        failed = 0
        gate = open_gate(coordination)  # None: SYNCWORKERS_COORDINATION_URL, if set
        try:
            for worker in workers:
                try:
                    with around() if around is not None else nullcontext():
                        claimed = _claim_tick(worker, gate, stagger)
                        if claimed is None or (claimed and not _run_once(worker, fail_on_status)):
                            failed += 1
                finally:
                    worker.close()
        finally:
            if gate is not None:
                gate.close()
        if failed:
            echo(f"{failed} of {len(workers)} worker(s) failed", err=True)
            sys.exit(EXIT_FAILED)
        return
    from ..scheduling.runner import Runner

    runner = Runner([worker if around is None else AroundJobs(worker, around) for worker in workers],
                    max_workers=max_workers, stagger=stagger, name="cli", coordination=coordination)
    early.forward_to(runner)
    ops = None
    if metrics_port is not None:
        from ..observability.ops_server import OpsServer

        try:
            ops = OpsServer(runner, workers, host=metrics_host, port=metrics_port).start()
        except SyncWorkersError as exc:
            raise CLIError(str(exc)) from exc
    _log.info("run started", workers=[getattr(w, "name", type(w).__name__) for w in workers],
              pool=runner.max_workers, outbox=_outboxes(workers), coordination=safe_url(coordination))
    try:
        runner.run()
    finally:
        if ops is not None:
            ops.stop()
        for worker in workers:
            worker.close()


def _outboxes(workers: Sequence[Any]) -> Optional[str]:
    """Where the senders' outboxes live, for the start line (no credentials)."""
    found: List[str] = []
    for worker in workers:
        config = getattr(worker, "webhook_config", None)
        if config is None:
            continue
        where = config.outbox_location
        found.append(printable_location(where) if where else "memory")
    return ", ".join(dict.fromkeys(found)) or None


class AroundJobs:
    """A worker whose every job runs inside ``around()`` (the Runner sees this instead of the worker)."""

    def __init__(self, worker: Any, around: Callable[[], ContextManager[Any]]) -> None:
        self.worker = worker
        self.around = around

    def _bind_runner(self, runner: Any) -> None:
        bind = getattr(self.worker, "_bind_runner", None)
        if bind is not None:
            bind(runner)

    def startup(self) -> None:
        with self.around():
            self.worker.startup()

    def shutdown(self) -> None:
        with self.around():
            self.worker.shutdown()

    def jobs(self) -> List[Any]:
        return [dataclasses.replace(job, func=self._wrap(job.func)) for job in self.worker.jobs()]

    def _wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            with self.around():
                return func(*args)

        return call


def _claim_tick(worker: Any, gate: Any, stagger: bool) -> Optional[bool]:
    """With coordination, claim the tick of each of *worker*'s coordinated periodic jobs as ``run`` does:
    True to run it here, False when another process has it, None when the backend cannot be asked."""
    if gate is None:
        return True
    import time

    from ..scheduling.jobs import PeriodicJob
    from ..scheduling.schedule import name_offset, nearest_tick

    for job in worker.jobs():
        if not isinstance(job, PeriodicJob) or not job.coordinated:
            continue
        offset = name_offset(job.name, job.interval) if stagger else 0.0
        tick = nearest_tick(job.interval, time.time(), offset)
        verdict = gate.admit(job.name, tick, job.interval)
        if verdict is None:
            echo(f"{job.name}: coordination {gate.claims!r} did not answer; tick {tick} not run", err=True)
            return None
        if not verdict:
            echo(f"{job.name}: tick {tick} runs in another process; nothing to do", err=True)
            return False
    return True


def _run_once(worker: Any, fail_on_status: FrozenSet[int] = frozenset()) -> bool:
    """One cycle; False if it failed (transport error, open circuit, exception in process_message),
    or if a poll's final status is in *fail_on_status*."""
    run_once = getattr(worker, "run_once", None)
    if run_once is None:
        raise CLIError(f"{type(worker).__name__} has no single cycle to run (--once)")
    result = run_once()
    status = getattr(result, "status_code", None)
    if status is not None and status in fail_on_status:
        echo(f"{worker.name}: HTTP {status} from {safe_url(getattr(worker, 'url', None))}", err=True)
        return False
    return bool(getattr(result, "ok", True))


@cli.command()
@click.argument("targets", nargs=-1, required=True, metavar="MODULE:WORKER...")
@_log_options
@_APP_DIR_OPTION
def check(targets: Sequence[str], log_level: str, log_format: str, env_file: Optional[str],
          app_dir: Optional[str]) -> None:
    """Import workers and validate their configuration; nothing is sent."""
    _setup(log_level, log_format, env_file)
    if app_dir is not None:
        _add_app_dir(app_dir)
    for spec in targets:
        worker = build_worker(spec)
        echo(f"ok  {spec}: {_describe(worker)}")
        worker.client.close()


@cli.command()
@click.option("--seconds", type=click.FloatRange(min=0.5, max=600), default=3.0, show_default=True,
              help="How long the poller runs before the outbox is flushed.")
@click.option("--outbox", "outbox_path", type=click.Path(dir_okay=False), default=None,
              help="SQLite outbox file (default: a new file in a temporary folder).")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]))
def demo(seconds: float, outbox_path: Optional[str], log_level: str, log_format: str) -> None:
    """Poll an embedded API and relay its events as signed webhooks through the outbox (127.0.0.1 only)."""
    _setup(log_level, log_format, None)
    from ..demo import run_demo

    summary = run_demo(seconds=seconds, outbox_path=outbox_path, echo=echo)
    if not summary["all_delivered"] or summary["bad_signatures"]:
        sys.exit(EXIT_FAILED)


