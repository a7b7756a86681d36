"""syncworkers.contrib.flask against real Flask: the test client, the test CLI runner, a real `flask run --reload`."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from .helpers import need_module

need_module("flask", "Flask")

from syncworkers import WebhookSenderWorker  # noqa: E402
from syncworkers.contrib.flask import SyncWorkers  # noqa: E402
from syncworkers.exceptions import ConfigError  # noqa: E402
from syncworkers.signing import Signer, webhook_headers  # noqa: E402

from .apps import flask_app  # noqa: E402
from .helpers import new_secret, wait_for  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def toolkit_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("syncworkers")]


@pytest.fixture
def make_app():
    apps = []

    def make(**config):
        app = flask_app.create_app(TESTING=True, **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["syncworkers"].stop(timeout=10)


@pytest.mark.transport_independent
def test_init_app_keeps_state_on_the_app_sets_defaults_and_starts_nothing(make_app):
    before = toolkit_threads()
    app = make_app(SYNCWORKERS_AUTOSTART=True)
    assert app.config["SYNCWORKERS_MAX_WORKERS"] is None and app.config["SYNCWORKERS_WORKERS"] == ()
    assert app.extensions["syncworkers"].running is False
    assert toolkit_threads() == before


def test_constructor_with_app_is_init_app(tmp_path, server):
    from flask import Flask

    app = Flask("direct")
    app.config.update(SYNCWORKERS_BASE_URL=server.base_url, SYNCWORKERS_OUTBOX_URL=str(tmp_path / "o.db"))
    sw = SyncWorkers(app)
    assert "syncworkers" in app.cli.commands
    sender = sw.sender
    assert isinstance(sender, WebhookSenderWorker) and sender.base_url == server.base_url
    assert sender.outbox.durable and sender.outbox.path == str(tmp_path / "o.db")
    sw.stop()


@pytest.mark.transport_independent
def test_bad_setting_is_a_config_error():
    from flask import Flask

    app = Flask("bad")
    app.config["SYNCWORKERS_MAX_WORKERS"] = 0
    with pytest.raises(ConfigError, match="MAX_WORKERS"):
        SyncWorkers(app)


def test_view_enqueues_and_flask_syncworkers_run_once_delivers_signed(make_app, server, tmp_path):
    server.route("POST", "/hooks/orders", status=200)
    secret = new_secret()
    app = make_app(SYNCWORKERS_BASE_URL=server.base_url, SYNCWORKERS_OUTBOX_URL=f"sqlite:///{tmp_path}/o.db",
                   SYNCWORKERS_SIGNING_SECRET=secret)
    client = app.test_client()
    ids = [client.post(f"/orders/{n}").get_json()["id"] for n in range(3)]
    assert server.calls("/hooks/orders") == []  # enqueued, not sent: no worker runs in the web process
    assert wait_for(lambda: toolkit_threads() == []), toolkit_threads()  # the deadline watchdog lingers a moment
    result = app.test_cli_runner().invoke(args=["syncworkers", "run", "--once"])
    assert result.exit_code == 0, result.output
    calls = server.calls("/hooks/orders")
    assert sorted(c.header("webhook-id") for c in calls) == sorted(ids)
    from syncworkers import verify

    for call in calls:
        assert verify(call.body, call.headers, secret)
    stats = app.test_cli_runner().invoke(args=["syncworkers", "outbox", "stats", "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.output)["delivered"] == 3


def test_autostart_starts_on_the_first_request_once_and_delivers(make_app, server, tmp_path):
    server.route("POST", "/hooks/orders", status=200)
    server.route("GET", "/api", json={})
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    os.environ["API_URL"], os.environ["PID_DIR"] = server.url("/api"), str(pid_dir)
    try:
        app = make_app(SYNCWORKERS_AUTOSTART=True, SYNCWORKERS_BASE_URL=server.base_url,
                       SYNCWORKERS_WORKERS=["tests.apps.flask_app:PidPoller"],
                       SYNCWORKERS_OUTBOX_URL=str(tmp_path / "o.db"))
        assert wait_for(lambda: toolkit_threads() == []), toolkit_threads()  # the deadline watchdog lingers a moment
        client = app.test_client()
        assert client.get("/pid").get_json()["running"] is True
        for n in range(3):
            client.post(f"/orders/{n}")
        assert wait_for(lambda: len(server.calls("/hooks/orders")) == 3, timeout=30)
        assert wait_for(lambda: len(server.calls("/api")) == 1)
        assert os.listdir(pid_dir) == [f"{os.getpid()}.started"]  # started once, however many requests
        assert app.extensions["syncworkers"].stop(timeout=10)
    finally:
        del os.environ["API_URL"], os.environ["PID_DIR"]
    assert wait_for(lambda: toolkit_threads() == []), toolkit_threads()  # the deadline watchdog lingers a moment


def test_without_autostart_a_request_starts_no_thread(make_app, server, tmp_path):
    app = make_app(SYNCWORKERS_BASE_URL=server.base_url, SYNCWORKERS_OUTBOX_URL=str(tmp_path / "o.db"))
    assert app.test_client().post("/orders/1").status_code == 200
    assert wait_for(lambda: toolkit_threads() == []), toolkit_threads()  # the deadline watchdog lingers a moment


def test_jobs_run_inside_the_app_context(make_app, server, monkeypatch):
    from flask import current_app

    from syncworkers import PollerWorker

    seen = []

    class AppPoller(PollerWorker):
        def process_message(self, message):
            seen.append(current_app.name)

    server.route("GET", "/api", json={})
    app = make_app(SYNCWORKERS_AUTOSTART=True,
                   SYNCWORKERS_WORKERS=[AppPoller(url=server.url("/api"), interval=60)])
    app.test_client().get("/pid")
    assert wait_for(lambda: seen == [app.name])


def test_flask_syncworkers_check_lists_the_app_workers(make_app, server, monkeypatch):
    monkeypatch.setenv("API_URL", server.url("/api"))
    app = make_app(SYNCWORKERS_BASE_URL=server.base_url, SYNCWORKERS_WORKERS=["tests.apps.flask_app:PidPoller"])
    result = app.test_cli_runner().invoke(args=["syncworkers", "check"])
    assert result.exit_code == 0, result.output
    assert "ok  pid-poller: PidPoller" in result.output and "ok  syncworkers-sender" in result.output
    assert server.calls("/api") == []


@pytest.mark.transport_independent
def test_flask_syncworkers_run_once_lock_held_elsewhere_does_nothing(make_app, tmp_path):
    import fcntl

    app = make_app()
    lock = tmp_path / "x.lock"
    with open(lock, "w") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        result = app.test_cli_runner().invoke(args=["syncworkers", "run", "--once", "--lock", str(lock)])
    assert result.exit_code == 0
    assert "another run holds the lock" in result.output


# -- receiving -----------------------------------------------------------------------


def signed(body, secret, msg_id="msg_1", timestamp=None):
    headers = webhook_headers(msg_id, body, Signer(secret))
    if timestamp is not None:
        headers = webhook_headers(msg_id, body, Signer(secret), timestamp=timestamp)
    return {**headers, "Content-Type": "application/json"}


@pytest.fixture
def receiver_app(make_app):
    secret = new_secret()
    flask_app.RECEIVED.clear()
    return make_app(RECEIVER_SECRET=secret), secret


@pytest.mark.transport_independent
def test_receiver_calls_the_view_with_the_payload(receiver_app):
    app, secret = receiver_app
    body = b'{"order": 7}'
    reply = app.test_client().post("/hooks/in", data=body, headers=signed(body, secret))
    assert reply.status_code == 200
    assert flask_app.RECEIVED == [{"order": 7}]


@pytest.mark.transport_independent
@pytest.mark.parametrize("case", ["wrong secret", "altered body", "no signature", "stale"])
def test_receiver_answers_400_with_a_reason(receiver_app, case):
    app, secret = receiver_app
    body = b'{"order": 7}'
    headers = signed(body, new_secret() if case == "wrong secret" else secret,
                     timestamp=int(time.time()) - 600 if case == "stale" else None)
    if case == "altered body":
        body = b'{"order": 8}'
    if case == "no signature":
        del headers["webhook-signature"]
    reply = app.test_client().post("/hooks/in", data=body, headers=headers)
    assert reply.status_code == 400
    assert reply.get_data(as_text=True).startswith("invalid webhook signature: ")
    assert flask_app.RECEIVED == []


@pytest.mark.transport_independent
def test_receiver_rejects_a_signed_body_that_is_not_json(receiver_app):
    app, secret = receiver_app
    body = b"not json"
    reply = app.test_client().post("/hooks/in", data=body, headers=signed(body, secret))
    assert reply.status_code == 400 and "not JSON" in reply.get_data(as_text=True)


# -- the reloader ----------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.transport_independent
def test_flask_run_with_the_reloader_starts_workers_in_the_serving_process_only(server, tmp_path):
    import urllib.request

    server.route("GET", "/api", json={})
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ROOT, "API_URL": server.url("/api"), "PID_DIR": str(pid_dir),
           "APP_AUTOSTART": "1", "APP_WORKERS": "tests.apps.flask_app:PidPoller"}
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "tests.apps.flask_app:create_app()", "run",
                             "--reload", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        def answer():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/pid", timeout=5) as reply:
                    return json.loads(reply.read())
            except OSError:
                return None

        assert wait_for(lambda: answer() is not None, timeout=60)
        serving = answer()["pid"]
        assert serving != proc.pid  # the reloader's watcher is proc; a child serves
        assert wait_for(lambda: len(server.calls("/api")) >= 1, timeout=30)
        assert os.listdir(pid_dir) == [f"{serving}.started"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
