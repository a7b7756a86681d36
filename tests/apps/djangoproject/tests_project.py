"""The project's own tests, as a Django user writes them, run by ``manage.py test`` (see tests/test_django_tests.py)
on Django's test database: SQLite in memory by default, PostgreSQL with DJANGO_PG_URL."""

import json
import os

from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection, transaction
from django.test import TestCase, TransactionTestCase

from syncworkers.contrib.django import enqueue, sender
from syncworkers.contrib.django.models import Endpoint
from syncworkers.testing import capture_webhooks

from .models import Order


def empty_outbox():
    """TransactionTestCase empties the tables of Django's models; the outbox's are the store's."""
    with connection.cursor() as cursor:
        for table in ("syncworkers_outbox", "syncworkers_outbox_attempts", "syncworkers_outbox_endpoints"):
            cursor.execute(f"DELETE FROM {table}")


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


class CaptureTests(TestCase):
    """What a test would send, captured: none of it reaches the receiver (whose calls the runner checks)."""

    def test_the_view_webhook_is_captured_and_a_refused_payment_is_not(self):
        with capture_webhooks() as webhooks:
            paid = self.client.post("/orders/100").json()["id"]
            self.assertEqual(self.client.post("/orders/101?fail=1").status_code, 402)
        self.assertEqual(webhooks.ids, [paid])
        self.assertEqual(webhooks.payloads, [{"order": 100}])
        self.assertEqual(webhooks[0].url, os.environ["DJANGO_HOOKS_BASE_URL"] + "/hooks/orders")
        self.assertEqual(webhooks[0].headers["webhook-id"], paid)

    def test_an_inner_atomic_keeps_its_webhook_when_it_exits_and_not_when_it_raises(self):
        with capture_webhooks() as webhooks:
            with transaction.atomic():
                kept = enqueue("/hooks/orders", {"order": 102})
            try:
                with transaction.atomic():
                    taken_back = enqueue("/hooks/orders", {"order": 103})
                    self.assertEqual(webhooks.ids, [kept, taken_back])  # inside its own transaction
                    raise RuntimeError("refused")
            except RuntimeError:
                pass
            self.assertEqual(webhooks.ids, [kept])
        self.assertEqual(webhooks.payloads, [{"order": 102}])

    def test_direct_sends_and_broadcasts_are_captured_not_sent(self):
        with capture_webhooks() as webhooks:
            self.assertTrue(sender().send_webhook("/hooks/orders", {"order": 104}))
            self.assertEqual(sender().broadcast_webhook(["/hooks/orders", "/hooks/orders?copy=2"], {"order": 105}),
                             {"/hooks/orders": True, "/hooks/orders?copy=2": True})
        self.assertEqual(sorted(w.payload["order"] for w in webhooks), [104, 105, 105])


class CommittedCaptureTests(TransactionTestCase):
    def tearDown(self):
        empty_outbox()

    def test_a_run_inside_the_capture_delivers_what_was_committed_to_it(self):
        with capture_webhooks() as webhooks:
            ids = [self.client.post(f"/orders/{n}").json()["id"] for n in (106, 107)]
            call_command("syncworkers", "run", "--once")
        self.assertEqual(webhooks.ids, ids)  # each once: enqueued, then delivered to the capture
        self.assertEqual(sender().outbox.counts()["delivered"], 2)


class DeliveryTests(TransactionTestCase):
    def tearDown(self):
        empty_outbox()

    def test_manage_py_syncworkers_run_once_delivers_what_was_committed(self):
        for n in range(5, 25):
            self.assertEqual(self.client.post(f"/orders/{n}").status_code, 200)
        call_command("syncworkers", "run", "--once")
        counts = sender().outbox.counts()
        self.assertEqual((counts["delivered"], counts["pending"]), (20, 0), os.environ["DJANGO_HOOKS_BASE_URL"])


class AdminTests(TransactionTestCase):
    def tearDown(self):
        empty_outbox()

    def test_an_operator_replays_a_dead_delivery_and_enables_its_endpoint(self):
        self.client.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
        dead = enqueue("/hooks/gone", {"order": 6})
        with self.assertRaises(SystemExit):  # exit 1: it died (410 Gone), its endpoint disabled
            call_command("syncworkers", "run", "--once", verbosity=0)
        held = enqueue("/hooks/gone", {"order": 7})
        outbox = sender().outbox
        self.assertEqual((outbox.get(dead).state, outbox.get(held).state), ("dead", "held"))

        page = self.client.post("/admin/syncworkers/delivery/", {"action": "replay", "_selected_action": [dead]},
                                follow=True)
        self.assertContains(page, "1 dead deliveries replayed: due now.")
        self.assertEqual(outbox.get(dead).state, "held")  # the store's rule: its endpoint is disabled
        [target] = Endpoint.objects.filter(disabled_at__isnull=False).values_list("target", flat=True)
        page = self.client.post("/admin/syncworkers/endpoint/", {"action": "enable", "_selected_action": [target]},
                                follow=True)
        self.assertContains(page, "1 endpoints enabled; 2 held deliveries released.")
        self.assertEqual({outbox.get(dead).state, outbox.get(held).state}, {"pending"})
