"""syncworkers.testing.capture_webhooks: what a test would send is recorded, and nothing reaches the receiver.

Every test has a real receiver on 127.0.0.1 that must see no request while a capture is active (on
both transports: the suite runs once per transport). Enqueued deliveries are stored in real outboxes
(SQLite files, PostgreSQL) on the caller's own connections, committed or rolled back for real.
Django's TestCase cases run under ``manage.py test`` (tests_project.py, test_django_project_tests.py).
"""

import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from syncworkers import ConfigError, Message, WebhookConfig, WebhookSenderWorker, verify
from syncworkers.outbox import DELIVERED, PENDING
from syncworkers.sources import MemoryQueue
from syncworkers.testing import CapturedWebhook, capture_webhooks

from .helpers import new_secret

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def receiver(server):
    server.route("POST", "/hooks/orders", status=200)
    server.route("POST", "/hooks/a", status=200)
    server.route("POST", "/hooks/b", status=200)
    return server


@pytest.fixture
def outbox_file(tmp_path):
    return str(tmp_path / "outbox.db")


def sender_for(server, outbox=None, secret=None):
    config = WebhookConfig(outbox_url=outbox) if outbox else None
    return WebhookSenderWorker(server.base_url, config, signing_secret=secret)


# -- direct sends and broadcasts --------------------------------------------------------------------


def test_send_webhook_is_recorded_signed_and_not_sent_then_sent_again_once_the_capture_ends(receiver):
    secret = new_secret()
    sender = sender_for(receiver, secret=secret)
    try:
        with capture_webhooks() as webhooks:
            assert sender.send_webhook("/hooks/orders", {"order": 1}, headers={"X-Shop": "s1"}) is True
        [webhook] = webhooks
        assert (webhook.endpoint, webhook.url, webhook.payload) == (
            "/hooks/orders", receiver.url("/hooks/orders"), {"order": 1})
        assert webhook.headers["X-Shop"] == "s1" and webhook.headers["webhook-id"] == webhook.id
        assert verify(webhook.body, webhook.headers, secret)  # the request as a receiver would get it
        assert not webhook.enqueued and webhooks.ids == [webhook.id] and webhooks.payloads == [{"order": 1}]
        assert receiver.requests == []

        assert sender.send_webhook("/hooks/orders", {"order": 2})  # the capture is over: sent
        assert [r.json() for r in receiver.requests] == [{"order": 2}]
        assert webhooks.payloads == [{"order": 1}]  # and not recorded
    finally:
        sender.close()


def test_deliver_reports_a_captured_delivery_as_accepted_with_nothing_sent(receiver):
    sender = sender_for(receiver)
    try:
        with capture_webhooks() as webhooks:
            result = sender.deliver("/hooks/orders", {"order": 1}, delivery_id="evt_1")
            from_message = sender.send_webhook_from_message(Message(body={"order": 2}, id="evt_2"), "/hooks/orders")
        assert result.ok and result.attempts == 0 and result.status_code is None and result.delivery_id == "evt_1"
        assert from_message is True
        assert webhooks.ids == ["evt_1", "evt_2"]
        assert sender.health()["deliveries"]["delivered"] == 0  # nothing was delivered
    finally:
        sender.close()
    assert receiver.requests == []


def test_a_broadcast_records_each_endpoint_with_its_own_id_and_sends_nothing(receiver):
    sender = sender_for(receiver)
    try:
        with capture_webhooks() as webhooks:
            result = sender.broadcast_webhook(["/hooks/a", "/hooks/b", "/hooks/a"], {"event": "x"}, fail_fast=True)
        assert result == {"/hooks/a": True, "/hooks/b": True}
        assert sorted(w.url for w in webhooks) == [receiver.url("/hooks/a"), receiver.url("/hooks/b")]
        assert webhooks.payloads == [{"event": "x"}] * 2 and len(set(webhooks.ids)) == 2
    finally:
        sender.close()
    assert receiver.requests == []


def test_a_broadcast_to_many_endpoints_one_at_a_time_records_every_one(receiver):
    # Captured deliveries end at once: over libcurl each would start the next from its callback, one frame
    # deeper each time, unless the broadcast starts them from its loop.
    sender = WebhookSenderWorker(receiver.base_url, WebhookConfig(max_workers=1, max_in_flight_per_host=1))
    endpoints = [f"/hooks/a?n={n}" for n in range(2000)]
    try:
        with capture_webhooks() as webhooks:
            result = sender.broadcast_webhook(endpoints, {"event": "x"})
        assert list(result.values()) == [True] * len(endpoints) and len(webhooks) == len(endpoints)
    finally:
        sender.close()
    assert receiver.requests == []


def test_bad_input_still_raises_and_records_nothing(receiver):
    sender = sender_for(receiver)
    try:
        with capture_webhooks() as webhooks:
            with pytest.raises(TypeError, match="not JSON-serialisable"):
                sender.send_webhook("/hooks/orders", {"at": object()})
            with pytest.raises(ConfigError):
                sender.enqueue("unknown-endpoint-name", {})
        assert webhooks == [] and not webhooks
    finally:
        sender.close()


def test_a_delivery_made_on_a_worker_thread_is_recorded(receiver):
    sender = sender_for(receiver)
    sender.source = MemoryQueue()
    with capture_webhooks() as webhooks:
        sender.start()
        try:
            sender.source.put(Message(body={"order": 3}, headers={"endpoint": "/hooks/orders"}))
            assert sender.source.join(timeout=30)  # processed: process_message returned
        finally:
            assert sender.stop(timeout=10)
            sender.close()
    assert webhooks.payloads == [{"order": 3}]
    assert receiver.requests == []


def test_captures_nest_and_each_records_what_was_sent_while_it_was_active(receiver):
    sender = sender_for(receiver)
    try:
        with capture_webhooks() as outer:
            sender.send_webhook("/hooks/a", {"n": 1})
            with capture_webhooks() as inner:
                sender.send_webhook("/hooks/a", {"n": 2})
            sender.send_webhook("/hooks/a", {"n": 3})  # the outer capture still holds the wire
        sender.send_webhook("/hooks/a", {"n": 4})
        assert outer.payloads == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert inner.payloads == [{"n": 2}]
        assert [r.json() for r in receiver.requests] == [{"n": 4}]
    finally:
        sender.close()


def test_clear_forgets_what_was_recorded(receiver):
    sender = sender_for(receiver)
    try:
        with capture_webhooks() as webhooks:
            sender.send_webhook("/hooks/a", {"n": 1})
            webhooks.clear()
            sender.send_webhook("/hooks/a", {"n": 2})
        assert webhooks.payloads == [{"n": 2}]
    finally:
        sender.close()


def test_reprs_show_neither_payload_headers_nor_url_secrets(receiver):
    sender = WebhookSenderWorker(signing_secret=new_secret())
    token = "aB3dE5fG7hJ9kL1mN3pQ5rS7"
    try:
        with capture_webhooks() as webhooks:
            sender.send_webhook(receiver.url(f"/hooks/a?token={token}"), {"card": "4111"},
                                headers={"Authorization": f"Bearer {token}"})
        text = repr(webhooks) + repr(webhooks[0])
        assert webhooks[0].id in text
        for secret in (token, "4111", "Bearer", "webhook-signature"):
            assert secret not in text
        assert isinstance(webhooks[0], CapturedWebhook) and webhooks[:1] == [webhooks[0]]
    finally:
        sender.close()


# -- enqueue: stored in the outbox, listed while the outbox holds it --------------------------------


def test_enqueue_without_a_connection_is_recorded_and_stays_pending_in_the_outbox(receiver, outbox_file):
    sender = sender_for(receiver, f"sqlite:///{outbox_file}")
    try:
        with capture_webhooks() as webhooks:
            delivery_id = sender.enqueue("/hooks/orders", {"order": 1}, headers={"X-Shop": "s1"})
        [webhook] = webhooks
        assert (webhook.id, webhook.enqueued, webhook.payload) == (delivery_id, True, {"order": 1})
        assert webhook.headers["webhook-id"] == delivery_id and webhook.headers["X-Shop"] == "s1"
        assert sender.outbox.get(delivery_id).state == PENDING  # the outbox is the app's, as ever
    finally:
        sender.close()
    assert receiver.requests == []


def test_a_flush_inside_the_capture_delivers_to_it_once_and_the_outbox_says_delivered(receiver, outbox_file):
    sender = sender_for(receiver, f"sqlite:///{outbox_file}")
    try:
        before = sender.enqueue("/hooks/orders", {"order": 0})  # enqueued before the capture began
        with capture_webhooks() as webhooks:
            during = sender.enqueue("/hooks/orders", {"order": 1})
            assert sender.flush(timeout=30)
        assert webhooks.ids == [during, before]  # each once: enqueued, then claimed from the outbox
        assert {sender.outbox.get(i).state for i in (before, during)} == {DELIVERED}
    finally:
        sender.close()
    assert receiver.requests == []


def test_a_running_sender_hands_its_outbox_attempts_to_the_capture(receiver, outbox_file):
    sender = sender_for(receiver, f"sqlite:///{outbox_file}")
    with capture_webhooks() as webhooks:
        sender.start()
        try:
            delivery_id = sender.enqueue("/hooks/orders", {"order": 1})
            assert sender.flush(timeout=30)  # the worker's loop delivered it
            assert sender.outbox.get(delivery_id).state == DELIVERED
        finally:
            assert sender.stop(timeout=10)
            sender.close()
    assert webhooks.ids == [delivery_id]
    assert receiver.requests == []


def test_enqueue_on_a_sqlite3_connection_is_listed_once_committed_never_when_rolled_back(receiver, outbox_file):
    sender = sender_for(receiver, f"sqlite:///{outbox_file}")
    sender.outbox  # the tables exist before the app writes
    conn = sqlite3.connect(outbox_file, timeout=30)
    try:
        with capture_webhooks() as webhooks:
            conn.execute("BEGIN")
            lost = sender.enqueue("/hooks/orders", {"order": 1}, connection=conn)
            conn.rollback()
            conn.execute("BEGIN")
            kept = sender.enqueue("/hooks/orders", {"order": 2}, connection=conn)
            assert webhooks.ids == []  # the outbox does not hold it until the caller commits
            conn.commit()
            assert webhooks.ids == [kept]
        assert lost != kept and webhooks.payloads == [{"order": 2}]
    finally:
        conn.close()
        sender.close()
    assert receiver.requests == []


def test_enqueue_on_a_psycopg_connection_is_listed_once_committed_never_when_rolled_back(receiver, pg_db):
    psycopg = pytest.importorskip("psycopg")
    sender = sender_for(receiver, pg_db)
    try:
        with capture_webhooks() as webhooks, psycopg.connect(pg_db) as conn:
            with conn.transaction():
                sender.enqueue("/hooks/orders", {"order": 1}, connection=conn)
                raise psycopg.Rollback()
            with conn.transaction():
                kept = sender.enqueue("/hooks/orders", {"order": 2}, connection=conn)
                assert webhooks.ids == []
            assert webhooks.ids == [kept]
            assert sender.flush(timeout=30)  # delivered to the capture, which lists it once
        assert webhooks.payloads == [{"order": 2}]
        assert sender.outbox.get(kept).state == DELIVERED
    finally:
        sender.close()
    assert receiver.requests == []


def test_what_the_outbox_said_is_kept_once_it_is_closed(receiver, outbox_file):
    sender = sender_for(receiver, f"sqlite:///{outbox_file}")
    conn = sqlite3.connect(outbox_file, timeout=30)
    try:
        sender.outbox
        with capture_webhooks() as webhooks:
            kept = sender.enqueue("/hooks/orders", {"order": 1})
            conn.execute("BEGIN")
            sender.enqueue("/hooks/orders", {"order": 2}, connection=conn)
            conn.rollback()
    finally:
        conn.close()
        sender.close()  # the outbox the capture asks is closed: it can no longer answer
    assert webhooks.ids == [kept]


@pytest.mark.transport_independent
def test_the_module_needs_pytest_only_for_the_fixture(tmp_path):
    script = ("import sys\n"
              "sys.modules['pytest'] = None\n"
              "from syncworkers.testing import capture_webhooks\n"
              "with capture_webhooks() as webhooks:\n"
              "    pass\n"
              "print(len(webhooks))\n"
              "try:\n"
              "    from syncworkers.testing import captured_webhooks\n"
              "except ImportError as exc:\n"
              "    print('ImportError')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "ImportError"]


# -- Flask: an app whose views write orders and enqueue on one connection per request --------------


@pytest.fixture(params=["sqlite", "postgresql"])
def shop(request, receiver, tmp_path):
    """The Flask shop (tests/apps/flask_shop.py) on a SQLite file or a PostgreSQL namespace, and its test client."""
    pytest.importorskip("flask")
    from .apps.flask_shop import create_app, sw

    receiver.route("POST", "/hooks/shipped", status=200)
    url = f"sqlite:///{tmp_path}/shop.db" if request.param == "sqlite" else request.getfixturevalue("pg_db")
    app = create_app(url, receiver.base_url)
    yield app.test_client()
    sw.stop(app=app)


def test_a_flask_view_is_tested_with_the_fixture_and_a_refused_payment_records_nothing(shop, receiver,
                                                                                         captured_webhooks):
    paid = shop.post("/orders/1")
    assert paid.status_code == 200
    assert captured_webhooks.ids == [paid.get_json()["id"]]
    assert shop.post("/orders/2?fail=1").status_code == 402  # the order and its webhook rolled back together
    assert shop.get("/orders").get_json() == {"orders": [1]}
    assert shop.post("/orders/1/shipped").get_json() == {"sent": True}
    assert captured_webhooks.payloads == [{"order": 1}, {"order": 1}]
    assert [w.url for w in captured_webhooks] == [receiver.url("/hooks/orders"), receiver.url("/hooks/shipped")]
    assert receiver.requests == []


# -- Django, in this process: the reading thread's connection decides --------------------------------


def test_a_django_enqueue_on_another_thread_is_listed_once_its_transaction_commits(hooks):
    from django.db import connection, transaction

    from syncworkers.contrib.django import enqueue

    enqueued, release, ids = threading.Event(), threading.Event(), []

    def view():
        try:
            with transaction.atomic():
                ids.append(enqueue("/hooks/orders", {"order": 1}))
                enqueued.set()
                assert release.wait(30)
        finally:
            connection.close()

    with capture_webhooks() as webhooks:
        thread = threading.Thread(target=view)
        thread.start()
        try:
            assert enqueued.wait(30)
            assert webhooks == []  # still inside the other thread's transaction: not in the outbox for this one
        finally:
            release.set()
            thread.join(30)
        assert webhooks.ids == ids and len(ids) == 1
    assert hooks.requests == []
