"""Which part a process plays under a web server: it serves requests, it forks those that do, or neither.

Asked when an app is built, so that workers start with the processes that serve
and never anywhere else. Each server is recognised by what it does itself:

* gunicorn: a worker runs from the arbiter's ``spawn_worker`` (it loads the app
  there, or was forked there from a master holding the app with ``--preload``);
  a master that loaded the app (``--preload``) forks the workers.
* ``flask run``: the command is ``run``; with the reloader only the child that
  werkzeug started with ``WERKZEUG_RUN_MAIN=true`` serves, not the watcher.
* Django's ``runserver``: likewise, the autoreloader's child (``RUN_MAIN=true``),
  or the only process with ``--noreload``.

``flask shell``, ``flask routes``, ``manage.py migrate`` and every other command
are neither.
"""

from __future__ import annotations

import enum
import os
import sys
from types import FrameType
from typing import Optional


class Role(enum.Enum):
    #: Serves requests: workers start now.
    SERVES = "serves"
    #: A server's master that forks the processes that serve (gunicorn ``--preload``): they start in each child.
    FORKS = "forks"


def role() -> Optional[Role]:
    """This process's part under a web server, or None (a command, a shell, a test, an unknown server)."""
    return gunicorn_role() or flask_run_role() or runserver_role()


def gunicorn_role(frame: Optional[FrameType] = None) -> Optional[Role]:
    """SERVES in a gunicorn worker (as it loads the app or is forked), FORKS in its master, else None."""
    arbiter = sys.modules.get("gunicorn.arbiter")
    if arbiter is None:
        return None
    spawn = arbiter.Arbiter.spawn_worker.__code__
    frame = frame or sys._getframe(1)
    while frame is not None:
        if frame.f_code is spawn:
            return Role.SERVES
        frame = frame.f_back
    return Role.FORKS if _is_gunicorn_master() else None


def _is_gunicorn_master() -> bool:
    # The master runs gunicorn's own entry point: a program that merely imported gunicorn.arbiter is not one.
    main = sys.modules.get("__main__")
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    return program.startswith("gunicorn") or getattr(main, "__package__", None) == "gunicorn"


def flask_run_role() -> Optional[Role]:
    """SERVES in the process ``flask run`` serves from (the reloader's child, or the only one), else None."""
    if "flask.cli" not in sys.modules:
        return None
    import click
    from flask.cli import run_command
    from flask.helpers import get_debug_flag

    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command is not run_command:
        return None
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return Role.SERVES
    reload = ctx.params.get("reload")
    if reload is None:  # as flask run decides
        reload = get_debug_flag()
    return None if reload else Role.SERVES


def runserver_role() -> Optional[Role]:
    """SERVES in the process Django's ``runserver`` serves from (the autoreloader's child, or the only one)."""
    if "django" not in sys.modules or len(sys.argv) < 2 or sys.argv[1] != "runserver":
        return None  # Django takes argv[1] as the command, whatever follows
    if os.environ.get("RUN_MAIN") == "true" or "--noreload" in sys.argv[2:]:
        return Role.SERVES
    return None


__all__ = ["Role", "flask_run_role", "gunicorn_role", "role", "runserver_role"]
