"""The ``syncworkers`` command: run, check, demo, and outbox (inspect and repair a webhook outbox).

``app`` holds the group, the error policy and the shared helpers; ``run_commands`` and
``outbox_commands`` register their commands on it when imported here.
"""

from .app import (
    EXIT_FAILED,
    EXIT_USAGE,
    CLIError,
    build_worker,
    build_workers,
    cli,
    echo,
    load_target,
    main,
)
from .formats import parse_duration, parse_since
from .outbox_commands import outbox
from .run_commands import AroundJobs, check_run_options, execute, exclusive_lock, parse_statuses, run_options
from .app import _describe as _describe, _setup as _setup  # used by the framework integrations' commands

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "AroundJobs",
    "CLIError",
    "build_worker",
    "build_workers",
    "check_run_options",
    "cli",
    "echo",
    "execute",
    "exclusive_lock",
    "load_target",
    "main",
    "outbox",
    "parse_duration",
    "parse_since",
    "parse_statuses",
    "run_options",
]
