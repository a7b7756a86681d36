"""A Django project's own tests pass under ``manage.py test``: on Django's default test database (SQLite in
memory) and on PostgreSQL, where the test database is dropped at the end (no connection of the outbox's
left open: "database test_… is being accessed by other users" would fail the run).

The project is tests/apps/djangoproject; its tests (``tests_project.py``) enqueue from a view, read the
outbox back inside ``TestCase``, deliver with ``call_command("syncworkers", "run", "--once")``, replay
and enable in the admin (through Django's connection to either database), and capture what they would
send with ``syncworkers.testing.capture_webhooks`` (nothing of it reaches the receiver: its calls are
exactly the delivered orders').
"""

import os
import subprocess
import sys

import pytest

from .helpers import need_module

need_module("django", "Django")

pytestmark = pytest.mark.transport_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANAGE = os.path.join(ROOT, "tests", "apps", "djangoproject", "manage.py")
TESTS = ("test_the_view_enqueues_the_order_webhook", "test_a_refused_payment_enqueues_nothing",
         "test_an_inner_atomic_that_raises_takes_its_webhook_back",
         "test_manage_py_syncworkers_run_once_delivers_what_was_committed",
         "test_an_operator_replays_a_dead_delivery_and_enables_its_endpoint",
         "test_the_view_webhook_is_captured_and_a_refused_payment_is_not",
         "test_an_inner_atomic_keeps_its_webhook_when_it_exits_and_not_when_it_raises",
         "test_direct_sends_and_broadcasts_are_captured_not_sent",
         "test_a_run_inside_the_capture_delivers_what_was_committed_to_it")


def manage_py_test(server, **env):
    server.route("POST", "/hooks/orders", status=200)
    server.route("POST", "/hooks/gone", status=410)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCWORKERS_", "WEBHOOK_", "DJANGO_"))}
    base.update({"PYTHONPATH": ROOT, "DJANGO_SETTINGS_MODULE": "tests.apps.djangoproject.settings",
                 "DJANGO_HOOKS_BASE_URL": server.base_url, **env})
    return subprocess.run([sys.executable, MANAGE, "test", "tests.apps.djangoproject", "--verbosity", "2",
                           "--noinput"], cwd=ROOT, env=base, capture_output=True, text=True, timeout=300)


def assert_passed(done, server):
    assert done.returncode == 0, done.stderr
    for name in TESTS:
        assert f"{name} " in done.stderr and f"{name} (" in done.stderr, done.stderr
    assert f"Ran {len(TESTS)} tests" in done.stderr and "\nOK" in done.stderr, done.stderr
    # the committed orders' webhooks, and only they, reached the receiver (once each)
    assert sorted(call.json()["order"] for call in server.calls("/hooks/orders")) == list(range(5, 25))


def test_manage_py_test_passes_on_the_default_in_memory_sqlite_test_database(server, tmp_path):
    done = manage_py_test(server, DJANGO_DB=str(tmp_path / "app.sqlite3"))
    assert "Creating test database for alias 'default' ('file:memorydb_default?mode=memory" in done.stderr, done.stderr
    assert_passed(done, server)
    assert not (tmp_path / "app.sqlite3").exists()  # the tests never touched the project's own database


def test_manage_py_test_passes_on_postgresql_and_drops_its_test_database(pg_server, server):
    import psycopg

    url = pg_server.create_database()
    done = manage_py_test(server, DJANGO_PG_URL=url)
    assert "Destroying test database for alias 'default'" in done.stderr, done.stderr
    assert "being accessed by other users" not in done.stderr
    assert_passed(done, server)
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (f"test_{name}",)).fetchone() is None


def test_syncworkers_check_in_a_test_opens_the_in_memory_test_database_itself(tmp_path):
    """``call_command("syncworkers", "check")`` on the in-memory test database finds the outbox's tables there
    (the name Django gives it is an SQLite URI, not a file to create in the current folder)."""
    script = ("import django; django.setup()\n"
              "from django.test.utils import setup_test_environment, get_runner\n"
              "from django.conf import settings\n"
              "from django.core.management import call_command\n"
              "runner = get_runner(settings)(verbosity=0)\n"
              "old = runner.setup_databases()\n"
              "call_command('syncworkers', 'check')\n"
              "runner.teardown_databases(old)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCWORKERS_", "WEBHOOK_", "DJANGO_"))}
    env.update({"PYTHONPATH": ROOT, "DJANGO_SETTINGS_MODULE": "tests.apps.djangoproject.settings",
                "DJANGO_DB": str(tmp_path / "app.sqlite3")})
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ok  outbox file:memorydb_default" in done.stdout, done.stdout
    assert sorted(os.listdir(tmp_path)) == []  # no file named after the URI, not even the project's database
