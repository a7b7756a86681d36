"""The project's own tests, as a Django user writes them, run by ``manage.py test`` (see tests/test_django_tests.py)
on Django's test database: SQLite in memory by default, PostgreSQL with DJANGO_PG_URL."""

import json
import os

from django.core.management import call_command
from django.db import transaction
from django.test import TestCase, TransactionTestCase

from syncworkers.contrib.django import enqueue, sender

from .models import Order


class EnqueueTests(TestCase):
    def test_the_view_enqueues_the_order_webhook(self):
        response = self.client.post("/orders/1")
        self.assertEqual(response.status_code, 200)
        outbox = sender().outbox
        self.assertEqual(outbox.counts()["pending"], 1)  # read in the test's own transaction
        delivery = outbox.get(response.json()["id"])
        self.assertEqual((delivery.endpoint, json.loads(delivery.body)), ("/hooks/orders", {"order": 1}))

    def test_a_refused_payment_enqueues_nothing(self):
        self.assertEqual(self.client.post("/orders/2?fail=1").status_code, 402)
        self.assertEqual(sender().outbox.counts()["pending"], 0)
        self.assertFalse(Order.objects.exists())

    def test_an_inner_atomic_that_raises_takes_its_webhook_back(self):
        kept = enqueue("/hooks/orders", {"order": 3})
        try:
            with transaction.atomic():
                enqueue("/hooks/orders", {"order": 4})
                raise RuntimeError("refused")
        except RuntimeError:
            pass
        self.assertEqual([d.id for d in sender().outbox.list(state="pending")], [kept])


class DeliveryTests(TransactionTestCase):
    def test_manage_py_syncworkers_run_once_delivers_what_was_committed(self):
        self.assertEqual(self.client.post("/orders/5").status_code, 200)
        call_command("syncworkers", "run", "--once")
        counts = sender().outbox.counts()
        self.assertEqual((counts["delivered"], counts["pending"]), (1, 0), os.environ["DJANGO_HOOKS_BASE_URL"])
