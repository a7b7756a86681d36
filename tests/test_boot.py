"""Workers start with the process that serves, at its boot, with no request: each server run for real.

Every test starts a server as a subprocess on 127.0.0.1 (gunicorn with and without ``--preload``,
``flask run`` with and without the reloader, Django's ``runserver``, gunicorn serving Django over
WSGI and ASGI), with webhooks already pending in the outbox and a poller pointed at a loopback
API, and sends the app no request: the pending webhooks arrive and the API is polled. PidPoller's
``startup()`` records each process that started the workers, so the tests also see that the
master, the reloader's watcher, ``flask shell``, ``flask routes``, ``manage.py migrate`` and
``manage.py check`` start nothing.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from syncworkers import WebhookConfig, WebhookSenderWorker

from .helpers import closed_port, need_module, need_program, wait_for

need_module("flask", "Flask")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
MANAGE = os.path.join(ROOT, "tests", "apps", "djangoproject", "manage.py")
FLASK_APP = "tests.apps.flask_app:create_app()"
PENDING = 3


def gunicorn():
    return need_program("gunicorn", "gunicorn", path=BIN)


class Boot:
    """A loopback partner and API, an outbox with PENDING webhooks waiting, and the folder of started pids."""

    def __init__(self, server, tmp_path):
        self.server = server
        self.tmp_path = tmp_path
        self.pid_dir = tmp_path / "pids"
        self.pid_dir.mkdir()
        self.outbox = str(tmp_path / "outbox.db")
        server.route("POST", "/hooks/orders", status=200)
        server.route("GET", "/api", json={})
        self.ids = set()

    def enqueue(self, outbox):
        """PENDING webhooks written to *outbox* by a sender that never runs: they wait there."""
        sender = WebhookSenderWorker(base_url=self.server.base_url, webhook_config=WebhookConfig(outbox_path=outbox))
        try:
            self.ids = {sender.enqueue("/hooks/orders", {"order": n}) for n in range(PENDING)}
        finally:
            sender.close()

    def env(self, **extra):
        return {**os.environ, "PYTHONPATH": ROOT, "API_URL": self.server.url("/api"), "PID_DIR": str(self.pid_dir),
                **extra}

    def started(self):
        return {int(name.split(".")[0]) for name in os.listdir(self.pid_dir)}

    def delivered(self):
        return {c.header("webhook-id") for c in self.server.calls("/hooks/orders")}

    def serve(self, args, env):
        """Start a server; its stderr goes to a file (a pipe nobody reads could fill and block it)."""
        log = open(self.tmp_path / f"server-{len(os.listdir(self.tmp_path))}.log", "w+")
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
                                start_new_session=True)
        proc.log = log
        return proc

    def assert_booted(self, proc, processes=1):
        """The pending webhooks arrive and the API is polled, by *processes* serving processes, without a request."""
        try:
            assert wait_for(lambda: self.ids <= self.delivered(), timeout=90), self.log(proc)
            assert wait_for(lambda: len(self.server.calls("/api")) >= processes, timeout=60), self.log(proc)
            assert wait_for(lambda: len(self.started()) >= processes, timeout=60), self.log(proc)
        except BaseException:
            stop(proc)
            raise
        assert [r for r in self.server.requests if r.path not in ("/hooks/orders", "/api")] == []

    def log(self, proc):
        proc.log.seek(0)
        return proc.log.read()[-3000:]


def stop(proc):
    """SIGTERM to the server's process group; SIGKILL if it does not end. Returns its exit code."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(timeout=30)
    except ProcessLookupError:
        return proc.wait(timeout=30)
    finally:
        proc.log.close()


@pytest.fixture
def boot(server, tmp_path):
    return Boot(server, tmp_path)


def flask_env(boot):
    return boot.env(APP_AUTOSTART="1", APP_BASE_URL=boot.server.base_url, APP_OUTBOX_URL=f"sqlite:///{boot.outbox}",
                    APP_WORKERS="tests.apps.flask_app:PidPoller")


# -- Flask ---------------------------------------------------------------------------


@pytest.mark.parametrize("preload", [False, True], ids=["gunicorn", "gunicorn --preload"])
def test_gunicorn_workers_deliver_and_poll_at_boot_and_the_master_never_does(boot, preload):
    boot.enqueue(boot.outbox)
    args = [gunicorn(), "-w", "2", "-b", f"127.0.0.1:{closed_port()}", *(["--preload"] if preload else []), FLASK_APP]
    proc = boot.serve(args, flask_env(boot))
    boot.assert_booted(proc, processes=2)
    assert stop(proc) == 0, boot.log(proc)
    started = boot.started()
    assert proc.pid not in started and len(started) == 2


@pytest.mark.parametrize("reload", [True, False], ids=["flask run --reload", "flask run --no-reload"])
def test_flask_run_delivers_and_polls_at_boot_never_in_the_reloader_watcher(boot, reload):
    boot.enqueue(boot.outbox)
    args = [sys.executable, "-m", "flask", "--app", FLASK_APP, "run", "--reload" if reload else "--no-reload",
            "--host", "127.0.0.1", "--port", str(closed_port())]
    proc = boot.serve(args, flask_env(boot))
    boot.assert_booted(proc)
    stop(proc)
    started = boot.started()
    assert len(started) == 1
    if reload:
        assert proc.pid not in started  # the watcher is proc; its child serves
    else:
        assert started == {proc.pid}


@pytest.mark.parametrize("command, stdin", [(["shell"], "print('shell ran:', app.name)\n"), (["routes"], "")],
                         ids=["flask shell", "flask routes"])
def test_other_flask_commands_start_nothing(boot, command, stdin):
    boot.enqueue(boot.outbox)
    done = subprocess.run([sys.executable, "-m", "flask", "--app", FLASK_APP, *command], cwd=ROOT,
                          env=flask_env(boot), input=stdin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "shell ran: tests.apps.flask_app" in done.stdout or "/orders/<int:n>" in done.stdout
    assert boot.started() == set()  # startup() runs inside start(): a start would have left its file
    assert boot.server.requests == []


# -- Django --------------------------------------------------------------------------


def django_env(boot, **syncworkers):
    setting = {"AUTOSTART": True, "WORKERS": ["tests.apps.boot_workers:PidPoller"], **syncworkers}
    return boot.env(DJANGO_SETTINGS_MODULE="tests.apps.djangoproject.settings", DJANGO_DB=boot.outbox,
                    DJANGO_HOOKS_BASE_URL=boot.server.base_url, DJANGO_SYNCWORKERS=json.dumps(setting))


def manage(env, *args):
    return subprocess.run([sys.executable, MANAGE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def django_boot(boot):
    """The project's database migrated (by a migrate that starts nothing), PENDING webhooks in its outbox."""
    need_module("django", "Django")
    env = django_env(boot)
    for command in (["migrate"], ["check"], ["check", "--deploy"]):
        done = manage(env, *command, "-v", "0")
        assert done.returncode == 0 or command[-1] == "--deploy", done.stderr  # --deploy warns about DEBUG etc.
        assert "syncworkers." not in done.stderr, done.stderr  # the settings are fine
    assert boot.started() == set() and boot.server.requests == []
    boot.enqueue(boot.outbox)
    return boot, env


DJANGO_SERVERS = {
    "runserver": ([sys.executable, MANAGE, "runserver"], 1),
    "runserver --noreload": ([sys.executable, MANAGE, "runserver", "--noreload"], 1),
    "gunicorn wsgi": (["gunicorn", "-w", "2", "tests.apps.djangoproject.wsgi"], 2),
    "gunicorn wsgi --preload": (["gunicorn", "-w", "2", "--preload", "tests.apps.djangoproject.wsgi"], 2),
    "gunicorn asgi": (["gunicorn", "-w", "2", "-k", "asgi", "tests.apps.djangoproject.asgi:application"], 2),
}


@pytest.mark.parametrize("name", list(DJANGO_SERVERS))
def test_django_servers_deliver_and_poll_at_boot(django_boot, name):
    boot, env = django_boot
    args, processes = DJANGO_SERVERS[name]
    port = closed_port()
    if args[0] == "gunicorn":
        args = [gunicorn(), "-b", f"127.0.0.1:{port}", *args[1:]]
    else:
        args = [*args, f"127.0.0.1:{port}"]
    proc = boot.serve(args, env)
    boot.assert_booted(proc, processes=processes)
    stop(proc)
    started = boot.started()
    assert proc.pid not in started or name == "runserver --noreload"
    assert len(started) == processes
