"""Bad settings fail at boot, in one line per problem: Flask's init_app, Django's system checks, the check commands.

One validation (``contrib.settings.problems``) serves both frameworks: ``SyncWorkers(app)``
raises a ConfigError naming each key and its fix; ``manage.py check`` lists each problem with
its id (``syncworkers.E0NN``); ``flask syncworkers check`` and ``manage.py syncworkers check``
also try the outbox, the coordination backend and the workers, one line each, exit 2.
"""

import json
import os
import subprocess
import sys

import pytest

from syncworkers.exceptions import ConfigError

from .helpers import closed_port, need_module, new_secret

need_module("flask", "Flask")

pytestmark = pytest.mark.transport_independent
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANAGE = os.path.join(ROOT, "tests", "apps", "djangoproject", "manage.py")
#: 15 bytes once decoded ("short-secret-12"): fewer than the 24 Standard Webhooks asks for.
SHORT_SECRET = "whsec_c2hvcnQtc2VjcmV0LTEy"


def flask_app(**config):
    from flask import Flask

    from syncworkers.contrib.flask import SyncWorkers

    app = Flask("checked")
    app.config.update(config)
    return app, SyncWorkers


@pytest.mark.parametrize("config, key, words", [
    ({"SYNCWORKERS_SIGNING_SECERT": new_secret()}, "SYNCWORKERS_SIGNING_SECERT",
     "did you mean SYNCWORKERS_SIGNING_SECRET?"),
    ({"SYNCWORKERS_SIGNING_SECRET": SHORT_SECRET}, "SYNCWORKERS_SIGNING_SECRET", "at least 24 are needed"),
    ({"SYNCWORKERS_SIGNING_SECRET": ""}, "SYNCWORKERS_SIGNING_SECRET", "signing secret is empty"),
    ({"SYNCWORKERS_BASE_URL": "ftp://127.0.0.1/hooks"}, "SYNCWORKERS_BASE_URL", "http:// or https://"),
    ({"SYNCWORKERS_OUTBOX_URL": "mysql://127.0.0.1/app"}, "SYNCWORKERS_OUTBOX_URL", "scheme 'mysql'"),
    ({"SYNCWORKERS_COORDINATION_URL": "memcached://127.0.0.1"}, "SYNCWORKERS_COORDINATION_URL",
     "redis://, rediss:// or postgresql://"),
    ({"SYNCWORKERS_MAX_WORKERS": 0}, "SYNCWORKERS_MAX_WORKERS", "must be >= 1"),
    ({"SYNCWORKERS_WORKERS": "app:Poller"}, "SYNCWORKERS_WORKERS", "must be a list"),
    ({"SYNCWORKERS_AUTOSTART": "sometimes"}, "SYNCWORKERS_AUTOSTART", "true or false"),
])
def test_init_app_raises_one_line_naming_the_key_and_the_fix(config, key, words):
    app, SyncWorkers = flask_app(**config)
    with pytest.raises(ConfigError) as info:
        SyncWorkers(app)
    message = str(info.value)
    assert message.startswith(f"{key}: ") and words in message
    assert "\n" not in message
    assert "syncworkers" not in app.extensions  # nothing half set up
    for value in config.values():
        if isinstance(value, str) and value.startswith("whsec_"):
            assert value[6:] not in message


def test_init_app_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    app, SyncWorkers = flask_app(SYNCWORKERS_COORDINATION_URL="redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match=r"SYNCWORKERS_COORDINATION_URL: .*pip install 'syncworkers\[redis\]'"):
        SyncWorkers(app)


def test_init_app_lists_every_problem_on_one_line():
    app, SyncWorkers = flask_app(SYNCWORKERS_SIGNING_SECRET=SHORT_SECRET, SYNCWORKERS_MAX_WORKER=4)
    with pytest.raises(ConfigError) as info:
        SyncWorkers(app)
    assert set(info.value.errors) == {"SYNCWORKERS_SIGNING_SECRET", "SYNCWORKERS_MAX_WORKER"}
    assert "did you mean SYNCWORKERS_MAX_WORKERS?" in str(info.value) and "\n" not in str(info.value)


def test_good_settings_pass_and_accept_the_sqlalchemy_postgresql_url():
    app, SyncWorkers = flask_app(SYNCWORKERS_SIGNING_SECRET=new_secret(), SYNCWORKERS_BASE_URL="http://127.0.0.1:9",
                                 SYNCWORKERS_OUTBOX_URL="postgresql+psycopg://app@127.0.0.1:9/app",
                                 SYNCWORKERS_COORDINATION_URL="postgres://app@127.0.0.1:9/app",
                                 SYNCWORKERS_MAX_WORKERS="4", SYNCWORKERS_AUTOSTART=False)
    SyncWorkers(app)
    assert app.extensions["syncworkers"].settings.max_workers == 4


# -- flask syncworkers check ------------------------------------------------------------


def flask_check(env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "SYNCWORKERS_"))}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "tests.apps.flask_app:create_app()",
                           "syncworkers", "check"], cwd=ROOT, env={**base, "PYTHONPATH": ROOT, **env},
                          capture_output=True, text=True, timeout=120)


def test_flask_syncworkers_check_reports_bad_settings_in_one_line_each_exit_2():
    done = flask_check({"APP_SIGNING_SECRET": SHORT_SECRET, "APP_BASE_URL": "ftp://127.0.0.1/x"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, lines  # one per problem, the first after click's "Error: "
    assert lines[0].startswith("Error: SYNCWORKERS_BASE_URL: needs http:// or https://")
    assert lines[1].startswith("SYNCWORKERS_SIGNING_SECRET: signing secret is 15 bytes long")
    assert SHORT_SECRET[6:] not in done.stderr + done.stdout


def test_flask_syncworkers_check_tries_the_outbox_coordination_and_workers(server):
    server.route("GET", "/api", json={})
    port = closed_port()
    done = flask_check({"APP_SIGNING_SECRET": new_secret(), "APP_BASE_URL": server.base_url,
                        "APP_OUTBOX_URL": f"postgresql+psycopg://app:hunter2-pw@127.0.0.1:{port}/app",
                        "APP_COORDINATION_URL": f"postgresql://app:hunter2-pw@127.0.0.1:{port}/app",
                        "APP_WORKERS": "tests.apps.flask_app:PidPoller,tests.apps.nope:Poller",
                        "API_URL": server.url("/api")})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr + done.stdout
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 3, errors
    assert errors[0].startswith("error  cannot import module 'tests.apps.nope'")
    assert errors[1].startswith(f"error  outbox postgresql+psycopg://127.0.0.1:{port}/app: ")
    assert errors[2].startswith(f"error  coordination: PostgreSQL postgresql://127.0.0.1:{port}/app")
    assert "ok  pid-poller: PidPoller" in done.stdout and "ok  syncworkers-sender" in done.stdout
    assert server.requests == []  # nothing polled, nothing sent


def test_flask_syncworkers_check_passes_when_everything_answers(server, tmp_path_factory, pg_db):
    tmp_path = tmp_path_factory.mktemp("box")  # a short name: a long one with digits reads as a secret
    done = flask_check({"APP_SIGNING_SECRET": new_secret(), "APP_BASE_URL": server.base_url,
                        "APP_OUTBOX_URL": f"sqlite:///{tmp_path}/outbox.db",
                        "APP_COORDINATION_URL": pg_db.replace("postgresql://", "postgresql+psycopg://", 1)})
    assert done.returncode == 0, done.stderr
    assert f"ok  outbox sqlite:///{tmp_path}/outbox.db" in done.stdout
    assert "ok  coordination" in done.stdout


# -- Django: manage.py check -------------------------------------------------------------


def django_env(tmp_path, **setting):
    base = {k: v for k, v in os.environ.items() if not k.startswith("SYNCWORKERS_")}
    return {**base, "PYTHONPATH": ROOT, "DJANGO_DB": str(tmp_path / "db.sqlite3"),
            "DJANGO_SYNCWORKERS": json.dumps(setting)}


@pytest.mark.parametrize("deploy", [False, True], ids=["check", "check --deploy"])
def test_manage_py_check_lists_each_problem_with_its_id_and_exits_non_zero(tmp_path, deploy):
    need_module("django", "Django")
    env = django_env(tmp_path, SIGNING_SECERT=new_secret(), SIGNING_SECRET=SHORT_SECRET, BASE_URL="ftp://x/")
    done = subprocess.run([sys.executable, MANAGE, "check", *(["--deploy"] if deploy else [])], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr  # ready() raises nothing: the checks report
    lines = {line.split(") ", 1)[0].rsplit("(", 1)[-1]: line for line in done.stderr.splitlines()
             if "(syncworkers." in line}
    assert set(lines) == {"syncworkers.E001", "syncworkers.E003", "syncworkers.E004"}, done.stderr
    assert "SYNCWORKERS['SIGNING_SECERT'] is not a setting" in lines["syncworkers.E001"]
    assert "HINT: did you mean SIGNING_SECRET?" in done.stderr
    assert "at least 24 are needed" in lines["syncworkers.E003"]
    assert SHORT_SECRET[6:] not in done.stderr


def test_manage_py_check_names_a_missing_extra(tmp_path):
    need_module("django", "Django")
    env = django_env(tmp_path, COORDINATION="redis://127.0.0.1:6379/0")
    # redis-py made unimportable in that process only, as if it were not installed.
    code = ("import runpy, sys; sys.modules['redis'] = None; sys.argv = [sys.argv[1], 'check'];"
            " runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, MANAGE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "(syncworkers.E005) SYNCWORKERS['COORDINATION'] coordination on Redis needs redis-py" in done.stderr
    assert "HINT: pip install 'syncworkers[redis]'" in done.stderr


def test_manage_py_syncworkers_check_tries_the_outbox_and_coordination(tmp_path):
    need_module("django", "Django")
    port = closed_port()
    env = django_env(tmp_path, OUTBOX=f"postgres://app:hunter2-pw@127.0.0.1:{port}/app",
                     COORDINATION=f"redis://:hunter2-pw@127.0.0.1:{port}/0")
    done = subprocess.run([sys.executable, MANAGE, "syncworkers", "check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr + done.stdout
    errors = done.stderr.strip().splitlines()
    assert [e.split(":", 1)[0] for e in errors] == ["error  outbox postgres", "error  coordination"], errors
