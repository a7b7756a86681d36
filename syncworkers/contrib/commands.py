"""``flask syncworkers ...`` and ``manage.py syncworkers ...``: the ``syncworkers`` commands with an app's settings."""

from __future__ import annotations

import sys
from typing import Any, Callable, ContextManager, Dict, FrozenSet, List, Optional, Sequence

import click

from .. import cli as base_cli
from ..exceptions import SyncWorkersError
from ..outbox.urls import sqlite_path
from .process import AppWorkers
from .settings import SettingsError, make_sender


class _Group(click.Group):
    """Our errors as one line and exit 2 under any click main (``flask`` has no such policy of its own)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SyncWorkersError as exc:
            if isinstance(exc, click.ClickException):
                raise
            raise base_cli.CLIError(str(exc)) from exc


def make_group(state: Callable[[], AppWorkers], around: Callable[[], ContextManager[Any]],
               outbox: Callable[[], Optional[str]], decorate: Callable[[Any], Any] = lambda f: f) -> click.Group:
    """A ``syncworkers`` group: ``run`` and ``check`` default to the app's workers (and its sender),
    ``outbox`` to its outbox; *around* wraps each job, *decorate* each command (Flask's app context)."""

    @click.group(name="syncworkers", cls=_Group)
    def group() -> None:
        """Run and inspect this app's workers (pollers, webhook sender, outbox)."""

    @group.command()
    @click.argument("targets", nargs=-1, metavar="[MODULE:WORKER]...")
    @base_cli.run_options
    @decorate
    def run(targets: Sequence[str], once: bool, fail_on_status: FrozenSet[int], max_workers: Optional[int],
            stagger: bool, coordination: Optional[str], metrics_port: Optional[int], metrics_host: str,
            lock_path: Optional[str], log_level: str, log_format: str, env_file: Optional[str]) -> None:
        """Run the app's workers (its WORKERS setting and its webhook sender), or TARGETS.

        Pool size and coordination default to the app's settings.
        """
        base_cli._setup(log_level, log_format, env_file)
        current = state()
        with base_cli.exclusive_lock(lock_path) as held:
            if not held:
                return
            build = (lambda: base_cli.build_workers(targets)) if targets else current.build
            base_cli.execute(build, once=once, fail_on_status=fail_on_status,
                             max_workers=max_workers or current.settings.max_workers, stagger=stagger,
                             coordination=coordination or current.settings.coordination,
                             metrics_port=metrics_port, metrics_host=metrics_host, around=around)

    @group.command()
    @click.argument("targets", nargs=-1, metavar="[MODULE:WORKER]...")
    @decorate
    def check(targets: Sequence[str]) -> None:
        """Check the settings and try what a running process does: build the app's workers (or TARGETS)
        and its sender, open the outbox, ask the coordination backend. Nothing is sent.

        One line per problem on stderr, exit 2.
        """
        try:
            failures = probe(state(), targets)
        except SettingsError as exc:
            failures = [str(p) for p in exc.problems]
        except SyncWorkersError as exc:
            failures = [str(exc)]
        for line in failures:
            base_cli.echo(f"error  {' '.join(line.split())}", err=True)  # a database's error spans lines
        if failures:
            sys.exit(base_cli.EXIT_USAGE)

    group.add_command(outbox_group(outbox))
    return group


def probe(state: AppWorkers, targets: Sequence[str] = ()) -> List[str]:
    """What is wrong when the app's workers start, one line each: workers that do not build, a sender
    that does not, an outbox that does not open, a coordination backend that does not answer."""
    from ..outbox import open_outbox
    from ..outbox.urls import printable_location
    from ..scheduling.coordination import MIN_CLAIM_TTL, open_coordination

    settings = state.settings
    failures: List[str] = []
    entries: Sequence[Any] = targets or settings.workers
    for entry in entries:
        try:
            worker = base_cli.build_worker(entry) if isinstance(entry, str) else entry
        except (click.ClickException, SyncWorkersError) as exc:
            failures.append(exc.format_message() if isinstance(exc, click.ClickException) else f"{entry}: {exc}")
            continue
        base_cli.echo(f"ok  {worker.name}: {base_cli._describe(worker)}")
        if isinstance(entry, str):
            worker.close()
    if not targets:
        try:
            sender = make_sender(settings)
        except SyncWorkersError as exc:
            failures.append(f"sender: {exc}")
        else:
            base_cli.echo(f"ok  {sender.name}: {base_cli._describe(sender)}")
            sender.close()
    if settings.outbox is not None:
        shown = printable_location(settings.outbox)
        try:
            box = open_outbox(settings.outbox)
            try:
                box.counts()
            finally:
                box.close()
        except Exception as exc:  # the database's own errors too: the reason, never a password
            failures.append(f"outbox {shown}: {type(exc).__name__}: {exc}")
        else:
            base_cli.echo(f"ok  outbox {shown}")
    if settings.coordination is not None:
        claims = open_coordination(settings.coordination)
        try:
            claims.claim("syncworkers check", 0, MIN_CLAIM_TTL)  # what each tick asks, on a name of its own
        except Exception as exc:
            failures.append(f"coordination: {exc}")
        else:
            base_cli.echo(f"ok  coordination {claims!r}")
        finally:
            claims.close()
    return failures


def outbox_group(configured: Callable[[], Optional[str]]) -> click.Group:
    """The ``syncworkers outbox`` commands, on the app's outbox unless --path/--url is given."""
    commands = base_cli.outbox.commands

    @click.group(name="outbox", commands=commands)
    @click.pass_context
    def group(ctx: click.Context) -> None:
        """Inspect the app's webhook outbox: stats, list; replay dead deliveries; purge delivered ones."""
        where = configured()
        if where is None:
            return
        defaults: Dict[str, Dict[str, str]] = {}
        for name, command in commands.items():
            params = {p.name for p in command.params}
            if "url" in params:
                defaults[name] = {"url": where}
            elif "path" in params:
                defaults[name] = {"path": sqlite_path(where)}
        ctx.default_map = {**defaults, **(ctx.default_map or {})}

    return group


__all__ = ["make_group", "outbox_group", "probe"]
