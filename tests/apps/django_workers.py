"""A worker that uses the Django ORM (run by manage.py syncworkers)."""

from syncworkers import PollerWorker

from . import cli_workers


class OrderCountingPoller(PollerWorker):
    def process_message(self, message):
        from tests.apps.djangoproject.models import Order

        cli_workers.RESULTS.append(Order.objects.count())
