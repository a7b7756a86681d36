"""Django with its outbox in a real PostgreSQL database: migrate makes the store's table, a view's
transaction.atomic() that rolls back never sends, one that commits is delivered by ``manage.py syncworkers run``.

Django is set up once per process (test_django.py has it on SQLite), so the Django side runs here
in subprocesses: manage.py and a script driving Django's test client.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from .helpers import need_module, wait_for

need_module("django", "Django")
psycopg = need_module("psycopg", "PostgreSQL")

pytestmark = pytest.mark.transport_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANAGE = os.path.join(ROOT, "tests", "apps", "djangoproject", "manage.py")

#: Posts a committed order and a rolled-back one through Django's test client; prints the answers.
CLIENT_SCRIPT = """
import json, django
django.setup()
from django.test import Client
client = Client()
kept = client.post("/orders/1")
refused = client.post("/orders/2?fail=1")
print(json.dumps({"kept": [kept.status_code, kept.content.decode()], "refused": refused.status_code}))
"""


def django_env(pg_db, server):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCWORKERS_", "WEBHOOK_", "DJANGO_"))}
    env.update({"PYTHONPATH": ROOT, "DJANGO_SETTINGS_MODULE": "tests.apps.djangoproject.settings",
                "DJANGO_PG_URL": pg_db, "DJANGO_HOOKS_BASE_URL": server.base_url})
    return env


def rows(pg_db, query):
    with psycopg.connect(pg_db, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def test_outbox_in_postgresql_rollback_never_sends_commit_delivers(pg_db, server):
    from syncworkers.outbox.postgres import PostgresOutbox

    server.route("POST", "/hooks/orders", status=200)
    env = django_env(pg_db, server)
    migrate = subprocess.run([sys.executable, MANAGE, "migrate", "--verbosity", "0"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    # migrate made the store's table (in the test's schema), before any store opened it
    assert rows(pg_db, "SELECT to_regclass('syncworkers_outbox') IS NOT NULL") == [(True,)]
    with PostgresOutbox(pg_db) as box:
        assert box.counts() == {"pending": 0, "in_flight": 0, "delivered": 0, "dead": 0, "held": 0}

    runner = subprocess.Popen([sys.executable, MANAGE, "syncworkers", "run", "--log-level", "INFO"], cwd=ROOT,
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        client = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120)
        assert client.returncode == 0, client.stderr
        answers = json.loads(client.stdout.strip().splitlines()[-1])
        assert answers["kept"][0] == 200 and answers["refused"] == 402, answers
        kept_id = json.loads(answers["kept"][1])["id"]
        assert wait_for(lambda: len(server.calls("/hooks/orders")) >= 1, timeout=60), "the commit was not delivered"
        with PostgresOutbox(pg_db) as box:
            assert wait_for(lambda: box.counts()["delivered"] == 1, timeout=30)
            assert [d.id for d in box.list()] == [kept_id]  # the rolled-back delivery was never stored
    finally:
        runner.send_signal(signal.SIGTERM)
        _, err = runner.communicate(timeout=60)
    assert runner.returncode == 0, err
    calls = server.calls("/hooks/orders")
    assert [c.json() for c in calls] == [{"order": 1}]
    assert calls[0].header("webhook-id") == kept_id
    assert rows(pg_db, "SELECT number FROM djangoproject_order") == [(1,)]
    start = [line for line in err.splitlines() if "run started" in line]
    assert len(start) == 1 and "syncworkers_outbox" not in start[0] and "postgresql://" in start[0], err
