"""``flask syncworkers ...`` and ``manage.py syncworkers ...``: the ``syncworkers`` commands with an app's settings."""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Dict, FrozenSet, Optional, Sequence

import click

from .. import cli as base_cli
from ..outbox.urls import sqlite_path
from .process import AppWorkers


def make_group(state: Callable[[], AppWorkers], around: Callable[[], ContextManager[Any]],
               outbox: Callable[[], Optional[str]], decorate: Callable[[Any], Any] = lambda f: f) -> click.Group:
    """A ``syncworkers`` group: ``run`` and ``check`` default to the app's workers (and its sender),
    ``outbox`` to its outbox; *around* wraps each job, *decorate* each command (Flask's app context)."""

    @click.group(name="syncworkers")
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
        """Build the app's workers (or TARGETS) and validate their configuration; nothing is sent."""
        workers = base_cli.build_workers(targets) if targets else state().build()
        for worker in workers:
            base_cli.echo(f"ok  {worker.name}: {base_cli._describe(worker)}")
            worker.close()

    group.add_command(outbox_group(outbox))
    return group


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


__all__ = ["make_group", "outbox_group"]
