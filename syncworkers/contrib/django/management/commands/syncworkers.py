"""``python manage.py syncworkers run|check|outbox ...``: the syncworkers commands with Django set up."""

from __future__ import annotations

import argparse
from typing import Any, List, Optional

from django.core.management.base import BaseCommand  # type: ignore[import-untyped]

from ..... import cli as base_cli
from ... import app_workers, connections_closed
from ....commands import make_group


def _outbox() -> Optional[str]:
    return app_workers().settings.outbox  # type: ignore[no-any-return]


def group() -> Any:
    return make_group(app_workers, around=connections_closed, outbox=_outbox)


class Command(BaseCommand):  # type: ignore[misc]
    help = "Run and inspect the SYNCWORKERS workers: run, check, outbox (stats, list, replay, purge, ...)."

    def run_from_argv(self, argv: List[str]) -> None:
        # manage.py has set Django up; the rest of the line is click's (its own --help too).
        base_cli.main(argv[2:], command=group(), prog_name=f"{argv[0]} {argv[1]}")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER)

    def handle(self, *args: str, **options: Any) -> None:
        """call_command("syncworkers", "run", "--once"): the same, for code and tests."""
        try:
            base_cli.main(list(args), command=group(), prog_name="manage.py syncworkers")
        except SystemExit as exc:
            if exc.code:
                raise
