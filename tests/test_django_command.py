"""``manage.py syncworkers`` is a Django command like any other: --settings, --pythonpath, --verbosity and
--traceback work wherever they are on the line, ``call_command`` works, and the rest of the line is the
click commands' own, with their output and exit codes (0 done, 1 failed work, 2 bad usage)."""

import json
import os
import subprocess
import sys

import pytest

from .helpers import need_module

need_module("django", "Django")

pytestmark = pytest.mark.transport_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANAGE = os.path.join(ROOT, "tests", "apps", "djangoproject", "manage.py")


def manage_py(env, *args):
    return subprocess.run([sys.executable, MANAGE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def env(hooks, django_db):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCWORKERS_", "WEBHOOK_", "DJANGO_"))}
    return {**base, "PYTHONPATH": ROOT, "DJANGO_DB": django_db, "DJANGO_HOOKS_BASE_URL": hooks.base_url}


def test_settings_and_pythonpath_are_djangos_wherever_they_are_on_the_line(env, tmp_path):
    other_db = tmp_path / "other.sqlite3"
    (tmp_path / "other_settings.py").write_text(
        "from tests.apps.djangoproject.settings import *  # noqa: F401,F403\n"
        f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', 'NAME': {str(other_db)!r}}}}}\n")
    options = ["--settings", "other_settings", "--pythonpath", str(tmp_path)]
    assert manage_py(env, "migrate", "--verbosity", "0", *options).returncode == 0
    shell = manage_py(env, "shell", *options, "-c", "from syncworkers.contrib.django import enqueue;"
                                                    " enqueue('/hooks/orders', {'n': 1}); enqueue('/hooks/orders', {'n': 2})")
    assert shell.returncode == 0, shell.stderr
    after = manage_py(env, "syncworkers", "outbox", "stats", "--json", *options)
    before = manage_py(env, "syncworkers", "--settings=other_settings", f"--pythonpath={tmp_path}", "outbox", "stats",
                       "--json")
    default = manage_py(env, "syncworkers", "outbox", "stats", "--json")
    for done in (after, before, default):
        assert done.returncode == 0, done.stderr
    assert [json.loads(done.stdout)["pending"] for done in (after, before, default)] == [2, 2, 0]


def test_verbosity_sets_the_log_level_of_a_command_that_has_one_unless_it_is_given(env, hooks):
    env = {**env, "POLLER_URL": hooks.url("/api")}

    def run_once(*options):
        hooks.route("GET", "/api", status=[503, 200], json={})  # one retry: an INFO line
        done = manage_py(env, "syncworkers", *options)
        assert done.returncode == 0, done.stderr
        return done.stderr

    target = "tests.apps.cli_workers:GoodPoller"
    assert "failed: status 503 Service Unavailable; retry in" in run_once("run", "--once", target)
    assert run_once("run", "--once", target, "--verbosity", "0") == ""
    assert "; retry in" in run_once("-v", "0", "run", "--once", "--log-level", "INFO", target)
    assert len(hooks.calls("/api")) == 6


def test_traceback_shows_the_traceback_of_an_error_told_in_one_line(env):
    plain = manage_py(env, "syncworkers", "run", "--once", "tests.apps.nope:Worker")
    traced = manage_py(env, "syncworkers", "run", "--once", "tests.apps.nope:Worker", "--traceback")
    assert plain.returncode == traced.returncode == 2
    assert "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines()[-1].startswith("Error: cannot import module 'tests.apps.nope': ")
    assert traced.stderr.startswith("Traceback (most recent call last):")
    assert traced.stderr.strip().splitlines()[-1] == plain.stderr.strip().splitlines()[-1]


def test_help_is_the_click_commands_and_djangos_help_lists_djangos_options(env):
    click_help = manage_py(env, "syncworkers", "--help")
    assert click_help.returncode == 0
    assert "Commands:" in click_help.stdout and "outbox" in click_help.stdout and "run" in click_help.stdout
    run_help = manage_py(env, "syncworkers", "run", "--help")
    assert "--once" in run_help.stdout
    django_help = manage_py(env, "help", "syncworkers")
    assert django_help.returncode == 0
    for option in ("--settings", "--pythonpath", "--verbosity", "--traceback"):
        assert option in django_help.stdout


@pytest.mark.transport_dependent
def test_call_command_runs_the_commands_with_their_output_and_exit_codes(hooks, capsys):
    from django.core.management import call_command

    from syncworkers.contrib.django import enqueue, sender

    enqueue("/hooks/orders", {"order": 1})
    call_command("syncworkers", "outbox", "stats", "--json")
    assert json.loads(capsys.readouterr().out)["pending"] == 1
    call_command("syncworkers", "run", "--once", verbosity=0)
    assert [c.json() for c in hooks.calls("/hooks/orders")] == [{"order": 1}]
    assert sender().outbox.counts()["delivered"] == 1
    with pytest.raises(SystemExit) as usage:
        call_command("syncworkers", "outbox", "list", "--state", "lost")
    assert usage.value.code == 2
    assert "Invalid value for '--state'" in capsys.readouterr().err
