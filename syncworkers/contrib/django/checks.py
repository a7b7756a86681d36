"""The SYNCWORKERS setting in Django's system checks: ``manage.py check`` lists each problem with its id.

The problems are those :func:`syncworkers.contrib.settings.problems` finds for
Flask too (``syncworkers.E001`` unknown key, ``E002`` bad value, ``E003`` bad
signing secret, ``E004`` bad URL, ``E005`` missing extra), plus an OUTBOX naming
a database that cannot hold the outbox (``E002``).
"""

from __future__ import annotations

from typing import Any, List

from django.conf import settings as django_settings  # type: ignore[import-untyped]
from django.core import checks  # type: ignore[import-untyped]

from ...exceptions import ConfigError
from ..settings import BAD_VALUE, Problem, problems


def settings_problems() -> List[Problem]:
    """Every problem of ``settings.SYNCWORKERS``; none when it is not set."""
    given = getattr(django_settings, "SYNCWORKERS", None)
    if given is None:
        return []
    if not isinstance(given, dict):
        return [Problem(BAD_VALUE, "SYNCWORKERS", f"must be a dict, got {type(given).__name__}")]
    values = dict(given)
    found: List[Problem] = []
    outbox = values.get("OUTBOX")
    if isinstance(outbox, str) and outbox in django_settings.DATABASES:
        from .conf import database_location

        try:
            values["OUTBOX"] = database_location(outbox)
        except ConfigError as exc:
            found.append(Problem(BAD_VALUE, "OUTBOX", str(exc)))
            values["OUTBOX"] = None
    return found + problems(values)


def check_settings(app_configs: Any = None, **kwargs: Any) -> List[Any]:
    """The system check: one Error per problem, its fix as the hint."""
    return [checks.Error(f"SYNCWORKERS[{p.key!r}] {p.message}" if p.key != "SYNCWORKERS" else f"SYNCWORKERS {p.message}",
                         hint=p.fix or None, obj="settings.SYNCWORKERS", id=p.id)
            for p in settings_problems()]


def register() -> None:
    """Add :func:`check_settings` to Django's checks (``manage.py check``, ``check --deploy``, runserver)."""
    checks.register(check_settings)


__all__ = ["check_settings", "register", "settings_problems"]
