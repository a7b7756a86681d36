"""The Django app ``syncworkers.contrib.django``."""

from django.apps import AppConfig  # type: ignore[import-untyped]


class SyncWorkersConfig(AppConfig):  # type: ignore[misc]
    """Registers the system checks; with ``AUTOSTART``, starts the workers in a serving process only.

    ``ready()`` raises nothing (``manage.py check`` reports bad settings) and
    starts nothing in ``migrate``, ``check``, ``shell`` or any other command: only
    in the process that ``runserver`` or gunicorn (WSGI or ASGI) serves from, or
    in each worker a preloading gunicorn master forks. Elsewhere, run the workers
    with ``python manage.py syncworkers run``.
    """

    name = "syncworkers.contrib.django"
    label = "syncworkers"
    verbose_name = "syncworkers"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks

        checks.register()
        boot()


def boot() -> None:
    """Start the SYNCWORKERS workers if AUTOSTART is set and this process serves (see ``contrib.serving``)."""
    from ..serving import role

    serving = role()
    if serving is None:
        return
    from ...exceptions import SyncWorkersError
    from ...observability.logging import get_logger
    from . import app_workers
    from .checks import settings_problems

    log = get_logger("syncworkers.contrib")
    if settings_problems():  # the system checks run next in this process and say what is wrong
        log.error("workers not started: SYNCWORKERS has problems (manage.py check lists them)")
        return
    try:
        state = app_workers()
        if state.settings.autostart:
            state.boot(serving)
    except SyncWorkersError as exc:  # ready() raises nothing: the server still serves, and says why
        log.error(f"workers not started: {exc}")
