"""The Django app ``syncworkers.contrib.django``."""

from django.apps import AppConfig  # type: ignore[import-untyped]


class SyncWorkersConfig(AppConfig):  # type: ignore[misc]
    """Starts nothing in ready(): ``migrate``, ``check`` and ``shell`` never poll or send.

    Workers run under ``python manage.py syncworkers run``.
    """

    name = "syncworkers.contrib.django"
    label = "syncworkers"
    verbose_name = "syncworkers"
    default_auto_field = "django.db.models.AutoField"
