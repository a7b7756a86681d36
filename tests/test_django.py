"""syncworkers.contrib.django against real Django: migrate, the test client (CSRF enforced), call_command, manage.py."""

import json
import os
import subprocess
import sys
import threading

import pytest

from .helpers import need_module, new_secret, wait_for

need_module("django", "Django")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = "tests.apps.djangoproject.settings"


def toolkit_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("syncworkers")]


@pytest.mark.transport_independent
def test_migrate_creates_the_outbox_tables_and_ready_starts_nothing(hooks, django_db):
    from django.db import connection

    from syncworkers.contrib.django.models import Delivery
    from syncworkers.outbox import SCHEMA_VERSION, Outbox

    assert wait_for(lambda: toolkit_threads() == []), toolkit_threads()  # the deadline watchdog lingers a moment
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'syncworkers%'")
        assert sorted(row[0] for row in cursor.fetchall()) == [
            "syncworkers_outbox", "syncworkers_outbox_attempts", "syncworkers_outbox_endpoints"]
        cursor.execute("PRAGMA user_version")
        assert cursor.fetchone()[0] == SCHEMA_VERSION
    with Outbox(django_db) as box:  # the store opens the tables migrate made; the admin's model reads them
        id = box.add("/hooks/orders", hooks.url("/hooks/orders"), b"{}")
    assert list(Delivery.objects.values_list("id", "state")) == [(id, "pending")]


def test_enqueue_in_a_rolled_back_transaction_is_never_sent_a_committed_one_is(hooks):
    from django.core.management import call_command
    from django.test import Client

    from .apps.djangoproject.models import Order

    client = Client()
    kept = client.post("/orders/1")
    assert kept.status_code == 200
    refused = client.post("/orders/2?fail=1")
    assert refused.status_code == 402
    assert list(Order.objects.values_list("number", flat=True)) == [1]
    assert hooks.calls("/hooks/orders") == []  # the web process only wrote
    call_command("syncworkers", "run", "--once")
    calls = hooks.calls("/hooks/orders")
    assert [c.json() for c in calls] == [{"order": 1}]
    assert calls[0].header("webhook-id") == kept.json()["id"]


def test_enqueue_outside_a_transaction_is_stored_at_once(hooks):
    from syncworkers.contrib.django import enqueue, sender

    delivery_id = enqueue("/hooks/orders", {"order": 3})
    assert sender().outbox.get(delivery_id).state == "pending"


def test_orm_works_in_jobs_under_manage_py_syncworkers_run(hooks, monkeypatch):
    from django.core.management import call_command

    from .apps import cli_workers
    from .apps.djangoproject.models import Order

    Order.objects.create(number=5)
    hooks.route("GET", "/api", json={})
    monkeypatch.setenv("POLLER_URL", hooks.url("/api"))
    cli_workers.RESULTS.clear()
    call_command("syncworkers", "run", "--once", "tests.apps.django_workers:OrderCountingPoller")
    assert cli_workers.RESULTS == [1]


@pytest.mark.transport_independent
def test_receiver_is_csrf_exempt_verifies_and_passes_the_payload(django_db):
    from django.conf import settings
    from django.test import Client

    from syncworkers.signing import Signer

    from .apps.djangoproject import views

    views.RECEIVED.clear()
    client = Client(enforce_csrf_checks=True)
    body = b'{"event": "paid"}'
    headers = Signer(settings.RECEIVER_SECRET).headers("msg_1", body)
    ok = client.post("/hooks/in", data=body, content_type="application/json",
                     headers={k: v for k, v in headers.items()})
    assert ok.status_code == 200, ok.content
    assert views.RECEIVED == [{"event": "paid"}]
    wrong = Signer(new_secret()).headers("msg_2", body)
    bad = client.post("/hooks/in", data=body, content_type="application/json", headers=wrong)
    assert bad.status_code == 400
    assert bad.content.decode().startswith("invalid webhook signature: ")
    assert views.RECEIVED == [{"event": "paid"}]


@pytest.mark.transport_independent
def test_a_bad_setting_is_a_config_error(django_db):
    from django.test import override_settings

    from syncworkers.contrib.django import sender
    from syncworkers.exceptions import ConfigError

    with override_settings(SYNCWORKERS={"OUTBOX": "default", "MAX_WORKER": 3}):
        with pytest.raises(ConfigError, match="MAX_WORKER"):
            sender()


def test_manage_py_syncworkers_outbox_uses_the_app_database(hooks, django_db):
    from syncworkers.contrib.django import enqueue

    enqueue("/hooks/orders", {"order": 9})
    env = {**os.environ, "PYTHONPATH": ROOT, "DJANGO_DB": django_db, "DJANGO_SETTINGS_MODULE": SETTINGS}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests/apps/djangoproject/manage.py"),
                           "syncworkers", "outbox", "stats", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pending"] == 1
    check = subprocess.run([sys.executable, os.path.join(ROOT, "tests/apps/djangoproject/manage.py"),
                            "syncworkers", "run", "--once", "tests.apps.nope:Worker"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and "cannot import module 'tests.apps.nope'" in check.stderr


def test_a_deliverer_in_this_process_is_woken_when_the_enqueuing_transaction_commits(hooks):
    from django.db import transaction

    from syncworkers.contrib.django import enqueue, sender

    woken = []
    unsubscribe = sender().outbox.subscribe(lambda: woken.append(sender().outbox.counts()["pending"]))
    try:
        with transaction.atomic():
            enqueue("/hooks/orders", {"order": 1})
            assert woken == []  # not yet: uncommitted, no deliverer could see it
        assert woken == [1]  # committed, and told
        enqueue("/hooks/orders", {"order": 2})  # outside a transaction: at once
        assert woken == [1, 2]
    finally:
        unsubscribe()
