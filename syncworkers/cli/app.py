"""The ``syncworkers`` command group, its error policy and the helpers every command shares.

Exit codes: 0 success, 1 failed work (``run --once``), 2 bad usage or
configuration — reported as one line on stderr, with a traceback only at
``--log-level DEBUG``. Every line printed is redacted (:func:`echo`).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from typing import Any, List, Optional, Sequence

import click

from ..version import __version__
from ..exceptions import SyncWorkersError, safe_url
from ..observability.logging import configure_logging, get_logger
from ..observability.redaction import redact_output


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
        hint = ""
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            # The target itself is not on sys.path (not a module it imports): cron runs from /.
            hint = (f" (not found from {os.getcwd()}: is its folder on sys.path? "
                    "syncworkers run/check --app-dir FOLDER puts it there)")
        raise CLIError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}{hint}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def build_worker(spec: str) -> Any:
    """A worker from a class (called with no arguments), an instance, or a factory function."""
    from ..workers.base import HTTPWorker

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

