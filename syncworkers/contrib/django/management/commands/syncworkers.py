"""``python manage.py syncworkers run|check|outbox ...``: the syncworkers commands with Django set up.

A Django command like any other: ``--settings``, ``--pythonpath``, ``--verbosity``,
``--traceback`` (anywhere on the line) and ``call_command("syncworkers", "run", "--once")``
work; the rest of the line is the click commands' (``--help`` shows theirs), with the
same output and exit codes as ``syncworkers``: 0 done, 1 failed work, 2 bad usage or
configuration.
"""

from __future__ import annotations

import argparse
import functools
import traceback as tracebacks
from typing import Any, List, Optional, Sequence

import click
from django.core.management.base import BaseCommand, CommandParser  # type: ignore[import-untyped]

from ..... import cli as base_cli
from .....exceptions import SyncWorkersError
from ... import app_workers, connections_closed, release_outbox
from ....commands import make_group

#: The log level each ``--verbosity`` gives a command that has ``--log-level`` (1, the default, gives none).
VERBOSITY_LEVELS = {0: "WARNING", 2: "INFO", 3: "DEBUG"}


def _outbox() -> Optional[str]:
    return app_workers().settings.outbox  # type: ignore[no-any-return]


def group() -> click.Group:
    return make_group(app_workers, around=connections_closed, outbox=_outbox)


def _parse_known(parser: CommandParser, args: Optional[Sequence[str]] = None,
                  namespace: Any = None) -> argparse.Namespace:
    """Django's options wherever they are on the line; everything else, in order, is the click command's."""
    known: argparse.Namespace
    known, rest = parser.parse_known_args(args, namespace)
    known.args = rest
    return known


class _TracebackFirst(click.Command):
    """--traceback: an error the command line reports in one line shows its traceback first (redacted,
    as every line it prints)."""

    def __init__(self, command: click.Command) -> None:
        super().__init__(command.name)
        self.command = command

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.command.main(*args, **kwargs)
        except click.UsageError:
            raise
        except (click.ClickException, SyncWorkersError):
            base_cli.echo(tracebacks.format_exc().rstrip("\n"), err=True)
            raise


class Command(BaseCommand):  # type: ignore[misc]
    help = ("Run and inspect the SYNCWORKERS workers: run, check, outbox (stats, list, replay, purge, ...). "
            "`manage.py syncworkers --help` shows them.")
    # `syncworkers check` is the check: Django's system checks do not stand in front of it.
    requires_system_checks: List[str] = []
    _prog = "manage.py syncworkers"

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        if prog_name:
            self._prog = f"{prog_name} {subcommand}"
        # No -h of Django's: `--help` anywhere goes to the click command it follows.
        parser = super().create_parser(prog_name, subcommand, add_help=False, allow_abbrev=False, **kwargs)
        # Both manage.py and call_command() parse with parse_args(): Django's options are taken from
        # anywhere on the line, the rest is left, in order, to the click commands.
        parser.parse_args = functools.partial(_parse_known, parser)
        return parser

    def handle(self, *args: str, **options: Any) -> None:
        line = self._with_verbosity(list(args), options["verbosity"])
        command: click.Command = group()
        if options["traceback"]:
            command = _TracebackFirst(command)
        try:
            base_cli.main(line, command=command, prog_name=self._prog)
        except SystemExit as exc:
            if exc.code:
                raise  # its exit code: 1 failed work, 2 bad usage or configuration
        finally:
            release_outbox()

    @staticmethod
    def _with_verbosity(line: List[str], verbosity: int) -> List[str]:
        """*line* with the --log-level --verbosity gives, when its command has one and none is given."""
        level = VERBOSITY_LEVELS.get(verbosity)
        if level is None or any(arg == "--log-level" or arg.startswith("--log-level=") for arg in line):
            return line
        command: click.Command = group()
        depth = 0
        while isinstance(command, click.Group) and depth < len(line) and line[depth] in command.commands:
            command = command.commands[line[depth]]
            depth += 1
        if not any(param.name == "log_level" for param in command.params):
            return line
        return [*line[:depth], "--log-level", level, *line[depth:]]
