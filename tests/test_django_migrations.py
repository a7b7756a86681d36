"""The app's migrations own the outbox tables: ``migrate`` makes them with the store's statements, ``migrate
syncworkers zero`` removes every one of them and ``migrate`` makes them again (SQLite and PostgreSQL), and a
database whose outbox was made before the SQLite tables carried the prefix is brought up to date by
``migrate``, every delivery found afterwards. Each runs manage.py of tests/apps/djangoproject."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from .helpers import need_module
from .legacy_outbox import DELIVERIES, fill_v2

need_module("django", "Django")

pytestmark = pytest.mark.transport_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANAGE = os.path.join(ROOT, "tests", "apps", "djangoproject", "manage.py")
OUTBOX_TABLES = ["syncworkers_outbox", "syncworkers_outbox_attempts", "syncworkers_outbox_endpoints"]


def manage(env, *args):
    done = subprocess.run([sys.executable, MANAGE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (args, done.stderr)
    return done


def project_env(**env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCWORKERS_", "WEBHOOK_", "DJANGO_"))}
    return {**base, "PYTHONPATH": ROOT, "DJANGO_SETTINGS_MODULE": "tests.apps.djangoproject.settings", **env}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """(env for manage.py, a function listing the outbox's tables there)."""
    if request.param == "sqlite":
        path = str(tmp_path / "app.sqlite3")

        def tables():
            with sqlite3.connect(path) as conn:
                return sorted(row[0] for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE name LIKE 'syncworkers%' OR name LIKE 'deliveries%'"))

        return project_env(DJANGO_DB=path), tables
    import psycopg

    url = request.getfixturevalue("pg_db")  # a schema of its own, as search_path

    def pg_tables():
        with psycopg.connect(url, autocommit=True) as conn:
            return sorted(row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename LIKE 'syncworkers%%'"))

    return project_env(DJANGO_PG_URL=url), pg_tables


def test_migrate_to_zero_removes_every_outbox_table_and_migrate_makes_them_again(database):
    env, tables = database
    manage(env, "migrate", "--verbosity", "0")
    assert [t for t in tables() if not t.startswith("syncworkers_outbox_") or t in OUTBOX_TABLES] == OUTBOX_TABLES
    manage(env, "migrate", "syncworkers", "zero", "--verbosity", "0")
    assert tables() == []
    manage(env, "migrate", "--verbosity", "0")
    assert [t for t in tables() if t in OUTBOX_TABLES] == OUTBOX_TABLES
    stats = manage(env, "syncworkers", "outbox", "stats", "--json")
    assert json.loads(stats.stdout)["pending"] == 0
    manage(env, "migrate", "syncworkers", "zero", "--verbosity", "0")
    assert tables() == []


def test_migrate_renames_an_outbox_made_with_the_bare_table_names_and_every_delivery_is_found(tmp_path):
    path = str(tmp_path / "app.sqlite3")
    env = project_env(DJANGO_DB=path)
    manage(env, "migrate", "--verbosity", "0")
    manage(env, "migrate", "syncworkers", "zero", "--verbosity", "0")
    # the database as the first release of the app left it: its migration applied, the outbox's tables bare
    conn = sqlite3.connect(path)
    fill_v2(conn)
    conn.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('syncworkers', '0001_outbox',"
                 " '2024-01-01 00:00:00')")
    conn.commit()
    conn.close()
    plan = manage(env, "migrate", "--plan")
    assert "syncworkers.0002_admin_models" in plan.stdout and "0001_outbox" not in plan.stdout
    manage(env, "migrate", "--verbosity", "0")
    with sqlite3.connect(path) as conn:
        assert sorted(row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN"
            " ('deliveries', 'attempts', 'endpoints', 'syncworkers_outbox', 'syncworkers_outbox_attempts',"
            " 'syncworkers_outbox_endpoints')")) == OUTBOX_TABLES
    conn.close()
    listed = manage(env, "syncworkers", "outbox", "list", "--json", "--limit", "100")
    assert {d["id"]: d["state"] for d in json.loads(listed.stdout)} == {
        id: state for id, (_, state, _, _) in DELIVERIES.items()}
    models = manage(env, "shell", "-c", "from syncworkers.contrib.django.models import Delivery, Endpoint;"
                                        " print(Delivery.objects.count(), Endpoint.objects.count())")
    assert models.stdout.strip().splitlines()[-1].split() == [str(len(DELIVERIES)), "1"]
