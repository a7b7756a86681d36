"""The ``syncworkers`` command: run, check, demo, and outbox (inspect and repair a webhook outbox).

Exit codes: 0 success, 1 failed work (``run --once``), 2 bad usage or
configuration — reported as one line on stderr, with a traceback only at
``--log-level DEBUG``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import re
import sys
import threading
import time
import traceback
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import Any, Callable, ContextManager, Dict, FrozenSet, Iterator, List, Optional, Sequence, Set

import click

from . import __version__
from .coordination import COORDINATION_ENV
from .exceptions import SyncWorkersError, safe_url
from .logging import configure_logging, get_logger
from .redaction import redact_output, redact_text

EXIT_FAILED = 1
EXIT_USAGE = 2

_log = get_logger("syncworkers.cli")


def echo(message: str, err: bool = False) -> None:
    """Print CLI output, redacted: everything the command line prints goes through here."""
    click.echo(redact_output(message), err=err)


class CLIError(click.ClickException):
    """A usage or configuration problem: one line on stderr, exit code 2."""

    exit_code = EXIT_USAGE

    def format_message(self) -> str:
        # The message may quote a worker's own error: URLs with passwords, tokens in queries.
        return redact_output(super().format_message())


def load_target(spec: str) -> Any:
    """Import ``module:attr`` (attr may be dotted) and return the object."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CLIError(f"{spec!r} is not of the form module:Worker")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # `syncworkers run app:Worker` from the project folder
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or anything the module raises while importing
        raise CLIError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def build_worker(spec: str) -> Any:
    """A worker from a class (called with no arguments), an instance, or a factory function."""
    from .workers.base import HTTPWorker

    target = load_target(spec)
    if isinstance(target, HTTPWorker):
        return target
    if inspect.isclass(target) and not issubclass(target, HTTPWorker):
        raise CLIError(f"{spec} is a class but not an HTTPWorker subclass")
    if not callable(target):
        raise CLIError(f"{spec} is not a worker class, instance or factory ({type(target).__name__})")
    try:
        worker = target()
    except SyncWorkersError:
        raise
    except Exception as exc:
        raise CLIError(f"cannot create {spec}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(worker, HTTPWorker):
        raise CLIError(f"{spec}() returned {type(worker).__name__}, not an HTTPWorker")
    return worker


def build_workers(specs: Sequence[str]) -> List[Any]:
    return [build_worker(spec) for spec in specs]


def _load_env_file(path: Optional[str]) -> None:
    if not path:
        return
    from dotenv import load_dotenv  # python-dotenv, installed with environs

    if not os.path.isfile(path):
        raise CLIError(f"--env-file {path!r}: no such file")
    # Into os.environ: the config classes read the process environment.
    load_dotenv(path, override=True)


def _setup(log_level: str, log_format: str, env_file: Optional[str]) -> None:
    try:
        configure_logging(log_level, log_format)
    except SyncWorkersError as exc:
        raise CLIError(str(exc)) from exc
    _load_env_file(env_file)


def _describe(worker: Any) -> str:
    parts = [type(worker).__name__]
    for attr in ("url", "interval", "method", "base_url"):
        value = getattr(worker, attr, None)
        if value is not None:
            if attr.endswith("url"):  # userinfo and query strings hold credentials
                value = safe_url(value)
            parts.append(f"{attr}={value}")
    return " ".join(parts)


_LOG_OPTIONS = [
    click.option("--log-level", default="INFO", show_default=True,
                 type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False)),
    click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"])),
    click.option("--env-file", type=click.Path(dir_okay=False), default=None,
                 help="Read environment variables from this file first."),
]


def _log_options(func: Any) -> Any:
    for option in reversed(_LOG_OPTIONS):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syncworkers")
def cli() -> None:
    """Synchronous HTTP workers: pollers and webhook senders."""


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


_RUN_OPTIONS = [
    click.option("--once", is_flag=True, help="One cycle of each worker, then exit (cron style)."),
    click.option("--fail-on-status", "fail_on_status", default=None, metavar="CODES", callback=_status_option,
                 help="With --once: a poll answered with one of these statuses (after retries) fails "
                      "(exit 1). Codes or classes, comma separated: 5xx, 429,5xx, 404."),
    click.option("--max-workers", type=click.IntRange(min=1), default=None, help="Threads of the shared pool."),
    click.option("--stagger/--no-stagger", default=False, show_default=True,
                 help="Spread the pollers' first ticks across their interval (default: every first poll at once)."),
    click.option("--coordination", metavar="URL", default=None, envvar=COORDINATION_ENV,
                 show_envvar=True, help="redis://, rediss:// or postgresql:// URL: each tick of each poller "
                                        "runs in one process among all those running the same workers."),
    click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
                 help="Serve /metrics, /livez and /readyz on this port (0: any free port, logged)."),
    click.option("--metrics-host", default="127.0.0.1", show_default=True,
                 help="Address the metrics port listens on (0.0.0.0: every interface)."),
    click.option("--lock", "lock_path", type=click.Path(dir_okay=False), default=None,
                 help="Hold an exclusive lock on this file; if another run holds it, do nothing and exit 0."),
]


def run_options(func: Any) -> Any:
    """The options of ``run`` (also on ``flask syncworkers run`` and ``manage.py syncworkers run``)."""
    for option in reversed(_RUN_OPTIONS + _LOG_OPTIONS):
        func = option(func)
    return func


@cli.command()
@click.argument("targets", nargs=-1, required=True, metavar="MODULE:WORKER...")
@run_options
@click.option("--app-dir", type=click.Path(file_okay=False), default=None,
              help="Put this folder first on sys.path before importing (cron runs from /).")
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
    workers = build()
    if once:
        failed = 0
        for worker in workers:
            try:
                with around() if around is not None else nullcontext():
                    if not _run_once(worker, fail_on_status):
                        failed += 1
            finally:
                worker.close()
        if failed:
            echo(f"{failed} of {len(workers)} worker(s) failed", err=True)
            sys.exit(EXIT_FAILED)
        return
    from .runner import Runner

    runner = Runner([worker if around is None else AroundJobs(worker, around) for worker in workers],
                    max_workers=max_workers, stagger=stagger, name="cli", coordination=coordination)
    ops = None
    if metrics_port is not None:
        from .ops_server import OpsServer

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
        found.append((safe_url(where) or "") if where else "memory")
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
def check(targets: Sequence[str], log_level: str, log_format: str, env_file: Optional[str]) -> None:
    """Import workers and validate their configuration; nothing is sent."""
    _setup(log_level, log_format, env_file)
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
    from .demo import run_demo

    summary = run_demo(seconds=seconds, outbox_path=outbox_path, echo=echo)
    if not summary["all_delivered"] or summary["bad_signatures"]:
        sys.exit(EXIT_FAILED)


# -- outbox ------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.I)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a duration like ``90``, ``30m``, ``2h``, ``1d`` or ``1h30m``; ValueError otherwise."""
    compact = text.strip()
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", compact):
        raise ValueError(f"{text!r} is not a duration (examples: 90, 30m, 2h, 1d, 1h30m)")
    return sum(float(number) * _UNITS[unit.lower()] for number, unit in parts)


def parse_since(text: str, now: float) -> float:
    """Epoch seconds of an ISO time (local time unless it has an offset) or of *now* minus a duration."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO time (2024-05-01T12:00:00+00:00) "
                         "nor a duration (30m, 2h, 1d)") from None


def _open_outbox(path: Optional[str], url: Optional[str]) -> Any:
    """The outbox at ``--url`` (PostgreSQL or SQLite) or ``--path`` (an existing SQLite file).

    An outbox file is never created here (a typo would show an empty outbox);
    PostgreSQL tables are, as on any first use.
    """
    from .outbox.urls import sqlite_path
    from .validators import is_postgres_url

    location = _location(path, url)
    if not is_postgres_url(location):
        file = sqlite_path(location) if url is not None else location
        if "://" not in file and not os.path.isfile(file):
            option = "--url" if url is not None else "--path"
            raise CLIError(f"{option} {_shown(location)!r}: no such outbox file")
    return _opened(location, lambda box: box.counts())  # connect now: a refused connection is one line


def _shown(location: str) -> str:
    """An outbox location fit to print: a database URL without its password; a file path as is
    (its folder names are not secrets, whatever they look like)."""
    from .validators import is_postgres_url

    return (safe_url(location) or "") if is_postgres_url(location) else location


def _location(path: Optional[str], url: Optional[str]) -> str:
    if url is not None and path is None:
        return url
    if path is not None and url is None:
        return path
    raise CLIError("give --url (or WEBHOOK_OUTBOX_URL) or --path (or WEBHOOK_OUTBOX_PATH), one of them")


def _opened(location: str, check: Any) -> Any:
    """The store at *location*, on which *check(store)* ran; its failures as one CLIError line."""
    from .outbox import open_outbox

    box = None
    try:
        box = open_outbox(location)
        check(box)
    except Exception as exc:
        if box is not None:
            box.close()
        if isinstance(exc, SyncWorkersError):  # not a database, a newer schema, a bad URL
            raise CLIError(str(exc)) from exc
        # The database's own errors (psycopg): the reason, never the URL's password.
        raise CLIError(f"cannot open outbox {_shown(location)!r}: {type(exc).__name__}: "
                       f"{redact_text(str(exc))}") from exc
    return box


def _when(epoch: Optional[float]) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="seconds")


def _PATH_OPTION(command: Any) -> Any:
    """``--url`` / ``--path``: where the outbox is (one of them)."""
    command = click.option("--path", default=None, envvar="WEBHOOK_OUTBOX_PATH", show_envvar=True,
                           type=click.Path(dir_okay=False), help="The outbox's SQLite file.")(command)
    return click.option("--url", default=None, envvar="WEBHOOK_OUTBOX_URL", show_envvar=True,
                        help="The outbox: postgresql://user@host/db, sqlite:///relative/path, "
                             "sqlite:////absolute/path.")(command)


@cli.group()
def outbox() -> None:
    """A webhook outbox: stats, list, show; endpoints, enable; deliver what is due; replay dead deliveries;
    purge delivered ones; init."""


@outbox.command()
@_PATH_OPTION
def init(path: Optional[str], url: Optional[str]) -> None:
    """Create the outbox's tables (PostgreSQL) or file (SQLite) now; safe to run again."""

    location = _location(path, url)
    with _opened(location, lambda box: box.counts()):  # the first use creates the tables
        pass
    echo(f"outbox ready: {_shown(location)}")


@outbox.command()
@_PATH_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def stats(path: Optional[str], url: Optional[str], as_json: bool) -> None:
    """How many deliveries are pending (in flight included), delivered, dead and held (endpoint disabled)."""
    with _open_outbox(path, url) as box:
        counts = box.counts()
        check = getattr(box, "check", None)  # a file's own consistency check (SQLite)
        try:
            problem = None if check is None else check()
        except box.errors as exc:
            problem = str(exc)
        if problem is not None:
            raise CLIError(f"outbox {box.path!r} is damaged: {' '.join(problem.split())}")
    if as_json:
        echo(json.dumps(counts))
        return
    for state, count in counts.items():
        echo(f"{state:10} {count}")


@outbox.command(name="list")
@_PATH_OPTION
@click.option("--state", type=click.Choice(["pending", "in_flight", "delivered", "dead", "held"]), default=None)
@click.option("--endpoint", default=None, help="Only this endpoint (as it was given to enqueue()).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array with bodies and headers (secret values hidden).")
def list_deliveries(path: Optional[str], url: Optional[str], state: Optional[str], endpoint: Optional[str], limit: int, as_json: bool) -> None:
    """Deliveries, most recently updated first, each with its last attempt."""
    with _open_outbox(path, url) as box:
        deliveries = box.list(state=state, endpoint=endpoint, limit=limit)
        last = box.last_attempts([d.id for d in deliveries])
    if as_json:
        echo(json.dumps([{**d.to_dict(), "last_attempt": _attempt_dict(last.get(d.id))}
                               for d in deliveries], indent=2))
        return
    for d in deliveries:
        error = f"  {d.last_error}" if d.last_error else ""
        attempt = last.get(d.id)
        tried = "" if attempt is None else f"last attempt {_when(attempt.at)} {attempt.kind} {_seconds(attempt)}  "
        echo(f"{d.id}  {d.state:9}  attempts={d.attempts}  status={d.last_status or '-'}  "
                   f"updated={_when(d.updated_at)}  {tried}{d.endpoint}{error}")


def _seconds(attempt: Any) -> str:
    return f"{attempt.duration:.3f}s"


def _attempt_dict(attempt: Any) -> Optional[Dict[str, Any]]:
    """An attempt for JSON output: its answer's text redacted."""
    if attempt is None:
        return None
    data: Dict[str, Any] = attempt.to_dict()
    data["body"] = redact_text(data["body"])
    return data


@outbox.command()
@_PATH_OPTION
@click.argument("delivery_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (secret values hidden).")
def show(path: Optional[str], url: Optional[str], delivery_id: str, as_json: bool) -> None:
    """A delivery and its attempt log (time, status, duration, kind, the answer's first 4 KB)."""
    with _open_outbox(path, url) as box:
        delivery = box.get(delivery_id)
        attempts = box.attempts(delivery_id) if delivery is not None else []
    if delivery is None:
        raise CLIError(f"no delivery {delivery_id!r} in the outbox")
    data = delivery.to_dict()
    data["attempt_log"] = [_attempt_dict(a) for a in attempts]
    if as_json:
        echo(json.dumps(data, indent=2))
        return
    from .outbox.health import endpoint_of, shown

    lines = [
        ("id", data["id"]), ("endpoint", data["endpoint"]), ("url", data["url"]),
        ("receiver", shown(endpoint_of(delivery.url))), ("state", data["state"]),
        ("attempts", data["attempts"]), ("created", _when(delivery.created_at)),
        ("updated", _when(delivery.updated_at)),
        ("next attempt", _when(delivery.next_attempt_at) if delivery.state == "pending" else "-"),
        ("delivered", _when(delivery.delivered_at)), ("last status", data["last_status"] or "-"),
        ("last error", data["last_error"] or "-"),
    ]
    for name, value in lines:
        echo(f"{name + ':':14}{value}")
    echo(f"{'headers:':14}" + (", ".join(f"{k}: {v}" for k, v in data["headers"].items()) or "-"))
    echo(f"{'body:':14}{_clip(redact_text(data['body']) if data['body_encoding'] == 'utf-8' else '<binary>')}")
    echo(f"attempt log ({len(attempts)}, oldest first):" if attempts else "attempt log: no attempt yet")
    for n, entry in enumerate(data["attempt_log"], 1):
        status = entry["status"] if entry["status"] is not None else "-"
        error = f"  {entry['error']}" if entry["error"] else ""
        echo(f"  {n:2}. {_when(entry['at'])}  {entry['kind']:10}  status={status}  "
                   f"{entry['duration']:.3f}s{error}")
        if entry["body"]:
            echo(f"      answer: {_clip(entry['body'])}")


def _clip(text: str, width: int = 300) -> str:
    """*text* on one line, cut at *width* characters (``--json`` gives it whole)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width] + f"... ({len(text)} characters)"


@outbox.command()
@_PATH_OPTION
@click.option("--json", "as_json", is_flag=True, help="A JSON array.")
def endpoints(path: Optional[str], url: Optional[str], as_json: bool) -> None:
    """Each endpoint (host + path) with its state: enabled or disabled, since when, why, deliveries held."""
    from .outbox.health import shown

    with _open_outbox(path, url) as box:
        found = box.endpoints()
    rows = [{"endpoint": shown(e.endpoint), "state": "enabled" if e.enabled else "disabled",
             "disabled_at": e.disabled_at, "failing_since": e.failing_since, "reason": e.reason,
             "last_status": e.last_status, "held": e.held} for e in found]
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    if not rows:
        echo("no endpoint attempted yet")
        return
    for row in rows:
        if row["disabled_at"] is not None:
            since = f"since {_when(row['disabled_at'])}"
        elif row["failing_since"] is not None:
            since = f"failing since {_when(row['failing_since'])}"
        else:
            since = "-"
        reason = f"  {row['reason']}" if row["reason"] else ""
        echo(f"{row['endpoint']}  {row['state']:8}  {since}  held={row['held']}{reason}")


@outbox.command()
@_PATH_OPTION
@click.argument("endpoint", metavar="ENDPOINT")
def enable(path: Optional[str], url: Optional[str], endpoint: str) -> None:
    """Enable a disabled ENDPOINT again and release its held deliveries (due now).

    ENDPOINT is as `outbox endpoints` prints it (host[:port]/path), or a URL to it.
    """
    from .outbox.health import endpoint_of, shown

    wanted = {endpoint, endpoint_of(endpoint)} if "://" in endpoint else {endpoint}
    with _open_outbox(path, url) as box:
        found = [e for e in box.endpoints() if e.endpoint in wanted or shown(e.endpoint) in wanted]
        if not found:
            raise CLIError(f"no endpoint {endpoint!r} in the outbox (`syncworkers outbox endpoints` lists them)")
        if len(found) > 1:
            raise CLIError(f"{endpoint!r} names {len(found)} endpoints; give one as host[:port]/path in full")
        target = found[0]
        released = box.enable_endpoint(target.endpoint)
    if target.enabled:
        echo(f"{shown(target.endpoint)} was enabled already; released {released} held")
    else:
        echo(f"enabled {shown(target.endpoint)}; released {released} held deliver"
                   f"{'y' if released == 1 else 'ies'}, due now")


#: Ids replayed per transaction by ``outbox replay`` (the progress bar moves between them).
REPLAY_CHUNK = 500


class _Progress:
    """A progress bar on stderr when it is a terminal; silent when piped or redirected."""

    def __init__(self, length: int, label: str) -> None:
        self._bar: Any = None
        self._shown = 0
        if length > 0 and sys.stderr.isatty():
            self._bar = click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)
            self._bar.__enter__()

    def show(self, done: int) -> None:
        if self._bar is not None and done > self._shown:
            self._bar.update(done - self._shown)
            self._shown = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _read_ids(source: Optional[str]) -> List[str]:
    """Ids one per line from a file, or from stdin for ``-`` (blank lines skipped)."""
    if source is None:
        return []
    try:
        with click.open_file(source, "r", encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    except OSError as exc:
        raise CLIError(f"--ids-from {source!r}: {exc.strerror or exc}") from None


@outbox.command()
@_PATH_OPTION
@click.option("--id", "ids", multiple=True, help="A dead delivery's id (repeatable).")
@click.option("--ids-from", "ids_from", default=None, metavar="FILE",
              help="Dead deliveries' ids, one per line, from FILE ('-': stdin).")
@click.option("--endpoint", default=None, help="Dead deliveries of this endpoint.")
@click.option("--since", default=None, help="Dead deliveries that died since: an ISO time or a duration ago (2h).")
def replay(path: Optional[str], url: Optional[str], ids: Sequence[str], ids_from: Optional[str],
           endpoint: Optional[str], since: Optional[str]) -> None:
    """Send dead deliveries again (due now, attempts reset); filters combine, one at least.

    Thousands of ids are replayed in batches, with a progress bar on a terminal.
    """
    id_list = list(dict.fromkeys([*ids, *_read_ids(ids_from)]))
    if ids_from is not None and not id_list and endpoint is None and since is None:
        raise CLIError(f"--ids-from {ids_from!r}: no ids in it")
    if not id_list and endpoint is None and since is None:
        raise CLIError("replay needs --id, --endpoint or --since (they combine), or --ids-from FILE")
    try:
        since_at = None if since is None else parse_since(since, time.time())
    except ValueError as exc:
        raise CLIError(f"--since: {exc}") from None
    count = 0
    with _open_outbox(path, url) as box:
        if not id_list:
            count = box.replay(endpoint=endpoint, since=since_at)
        else:
            progress = _Progress(len(id_list), "replaying")
            try:
                for start in range(0, len(id_list), REPLAY_CHUNK):
                    count += box.replay(ids=id_list[start:start + REPLAY_CHUNK], endpoint=endpoint,
                                        since=since_at)
                    progress.show(min(start + REPLAY_CHUNK, len(id_list)))
            finally:
                progress.close()
    echo(f"replayed {count} dead deliver{'y' if count == 1 else 'ies'}")


class _Until(threading.Event):
    """An Event that counts as set once *done()* says so: the outbox loop's stop signal."""

    def __init__(self, done: Callable[[], bool]) -> None:
        super().__init__()
        self._done = done

    def is_set(self) -> bool:
        return super().is_set() or self._done()


@outbox.command()
@_PATH_OPTION
@click.option("--timeout", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Seconds at most; deliveries still on the wire then stay pending.")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]))
@click.option("--env-file", type=click.Path(dir_okay=False), default=None,
              help="Read environment variables from this file first.")
def deliver(path: Optional[str], url: Optional[str], timeout: float, log_level: str, log_format: str,
            env_file: Optional[str]) -> None:
    """Deliver what is due now, then exit with a summary line (cron).

    Signing, timeouts and the retry schedule come from the WEBHOOK_* and HTTP_*
    variables, as for a running sender. A failed attempt is scheduled again on
    the retry schedule, for a later run. Exit 1 when a delivery died, or the
    timeout came with deliveries still due.
    """
    _setup(log_level, log_format, env_file)
    from .workers.webhook import WebhookSenderWorker

    box = _open_outbox(path, url)
    try:
        sender = WebhookSenderWorker(outbox=box, name="outbox-deliver")
        try:
            summary = _deliver_due(sender, timeout)
        finally:
            sender.close()
        pending = box.counts()["pending"]
        next_due = box.next_due()
    finally:
        box.close()
    later = f" (next due {_when(next_due)})" if pending and next_due is not None else ""
    echo(f"delivered {summary['delivered']}, retry scheduled {summary['retried']}, "
         f"postponed {summary['postponed']}, dead {summary['dead']}; {pending} pending{later}")
    if summary["dead"] or summary["timed_out"]:
        sys.exit(EXIT_FAILED)


def _deliver_due(sender: Any, timeout: float) -> Dict[str, Any]:
    """Drive *sender*'s outbox loop until nothing is due now and nothing is on the wire, or *timeout*."""
    dispatcher = sender._outbox_dispatcher()
    box = dispatcher.outbox
    deadline = time.monotonic() + timeout
    progress = _Progress(box.counts()["pending"], "delivering")
    state = {"timed_out": False}

    def outcomes() -> Dict[str, Any]:
        counts = sender.health()["deliveries"]
        return {key: int(counts[key]) for key in ("delivered", "retried", "postponed", "dead")}

    def done() -> bool:  # read by the loop between claims, on this thread
        progress.show(sum(outcomes().values()))
        if time.monotonic() >= deadline:
            state["timed_out"] = box.next_due() is not None and box.next_due() <= box.clock()
            return True
        if dispatcher.in_flight:
            return False
        due = box.next_due()
        return due is None or due > box.clock()

    try:
        dispatcher.flush(None, _Until(done))
        summary = outcomes()
        progress.show(sum(summary.values()))  # the loop may end without asking done() again
    finally:
        progress.close()
    return {**summary, "timed_out": state["timed_out"] or dispatcher.in_flight > 0}


@outbox.command()
@_PATH_OPTION
@click.option("--older-than", "older_than", required=True, help="Age, e.g. 7d, 12h, 30m.")
def purge(path: Optional[str], url: Optional[str], older_than: str) -> None:
    """Delete delivered deliveries older than --older-than."""
    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise CLIError(f"--older-than: {exc}") from None
    with _open_outbox(path, url) as box:
        count = box.purge(older_than=seconds)
    echo(f"purged {count} delivered deliver{'y' if count == 1 else 'ies'} older than {older_than}")


def main(argv: Optional[Sequence[str]] = None, command: Optional[click.Command] = None,
         prog_name: str = "syncworkers") -> None:
    """Entry point: click with our error policy (one line, exit 2, traceback only at DEBUG).

    Every line printed, errors and tracebacks included, is redacted (:func:`echo`).
    *command* (default: the ``syncworkers`` group) lets ``manage.py syncworkers`` share the policy.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = any(a.upper() in ("DEBUG", "--LOG-LEVEL=DEBUG") for a in args)
    try:
        (command or cli).main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):  # Ctrl-C outside run()'s own signal handling
        echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        if debug and exc.__cause__ is not None:
            cause = exc.__cause__
            echo("".join(traceback.format_exception(type(cause), cause, cause.__traceback__)).rstrip("\n"),
                 err=True)
        echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except SyncWorkersError as exc:  # ConfigError and friends raised while building workers
        if debug:
            echo(traceback.format_exc().rstrip("\n"), err=True)
        echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception:  # a bug or an unexpected failure: its traceback, redacted like every other line
        echo(traceback.format_exc().rstrip("\n"), err=True)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
