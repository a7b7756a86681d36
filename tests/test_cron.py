"""Cron-style runs as real subprocesses: ``--lock``, ``--app-dir``, ``python -m syncworkers``, the log lines of ``run``."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from click.testing import CliRunner

from syncworkers import WebhookSenderWorker
from syncworkers.cli import cli

from .helpers import LogCapture, wait_for
from .server import Reply

pytestmark = pytest.mark.transport_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CRON_APP = textwrap.dedent("""
    import os
    from syncworkers import PollerWorker

    class Poller(PollerWorker):
        def __init__(self):
            super().__init__(url=os.environ["API_URL"], interval=60)

        def process_message(self, message):
            pass
""")


@pytest.fixture
def app_dir(tmp_path):
    folder = tmp_path / "cronapp"
    folder.mkdir()
    (folder / "jobs.py").write_text(CRON_APP)
    return folder


def stderr_until(proc, done):
    """*proc*'s stderr up to the line where ``done(lines so far)`` holds, then SIGTERM and the rest."""
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if done(lines):
                break
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=60)[1]
    return "".join(lines) + rest


def cron(args, env_extra, cwd="/"):
    """``python -m syncworkers ARGS`` started as cron does: from /, with a bare environment."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ROOT, **env_extra}
    return subprocess.Popen([sys.executable, "-m", "syncworkers", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_overlapping_run_with_the_same_lock_does_nothing_and_exits_0(server, app_dir, tmp_path):
    release = threading.Event()
    server.route("GET", "/api", handler=lambda req: (release.wait(60), Reply(200, b"{}"))[1])
    lock = str(tmp_path / "poll.lock")
    args = ["run", "--once", "--lock", lock, "--app-dir", str(app_dir), "jobs:Poller"]
    env = {"API_URL": server.url("/api")}
    first = cron(args, env)
    try:
        assert wait_for(lambda: len(server.calls("/api")) == 1, timeout=60), first.stderr
        second = cron(args, env)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0
        assert err.strip().splitlines() == [f"another run holds the lock {lock}; nothing to do"]
        assert len(server.calls("/api")) == 1  # the overlapping run did not poll
    finally:
        release.set()
        first.communicate(timeout=60)
    assert first.returncode == 0
    third = cron(args, env)  # the lock went with the first run: the next one works
    third.communicate(timeout=60)
    assert third.returncode == 0
    assert len(server.calls("/api")) == 2


def test_runs_with_different_locks_both_work(server, app_dir, tmp_path):
    server.route("GET", "/api", json={})
    env = {"API_URL": server.url("/api")}
    procs = [cron(["run", "--once", "--lock", str(tmp_path / f"{n}.lock"), "--app-dir", str(app_dir),
                   "jobs:Poller"], env) for n in range(2)]
    for proc in procs:
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    assert len(server.calls("/api")) == 2


def test_without_app_dir_cron_cannot_import_the_app_and_is_told_about_app_dir(server, app_dir):
    proc = cron(["run", "--once", "jobs:Poller"], {"API_URL": server.url("/api")})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().splitlines() == ["Error: cannot import module 'jobs': ModuleNotFoundError: No module named "
                                        "'jobs' (not found from /: is its folder on sys.path? syncworkers run/check "
                                        "--app-dir FOLDER puts it there)"]


def test_check_takes_app_dir(server, app_dir):
    proc = cron(["check", "--app-dir", str(app_dir), "jobs:Poller"], {"API_URL": server.url("/api")})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith("ok  jobs:Poller: Poller")
    assert server.requests == []


COORDINATED_APP = textwrap.dedent("""
    import os
    from syncworkers import PollerWorker

    class Poller(PollerWorker):
        def __init__(self):
            super().__init__(url=os.environ["API_URL"], interval=INTERVAL, name="cron-orders")

        def process_message(self, message):
            pass
""")
#: The coordinated cron poller's interval: one hour, so that runs started together fall on one tick.
HOURLY = 3600


def off_the_tick_edge(interval, margin=120.0):
    """Return once the wall clock is more than *margin* seconds from the point where the nearest tick
    changes (half an interval past a grid point), so that runs started together round to one tick
    whatever the machine's load; an Event wait, only when the clock is that close."""
    import time

    edge = interval / 2
    phase = time.time() % interval
    if abs(phase - edge) < margin:
        threading.Event().wait(edge + margin - phase)


@pytest.mark.parametrize("backend", ["redis", "postgresql+psycopg"])
def test_overlapping_once_runs_with_coordination_poll_once(server, app_dir, backend, request):
    server.route("GET", "/api", json={})
    (app_dir / "hourly.py").write_text(COORDINATED_APP.replace("INTERVAL", str(HOURLY)))
    if backend == "redis":
        from .redis_server import RedisServer, require_redis_package

        require_redis_package()
        redis_server = RedisServer().__enter__()
        request.addfinalizer(lambda: redis_server.__exit__(None, None, None))
        url = redis_server.url
    else:
        url = request.getfixturevalue("pg_db").replace("postgresql://", "postgresql+psycopg://", 1)
    off_the_tick_edge(HOURLY)
    args = ["run", "--once", "--coordination", url, "--app-dir", str(app_dir), "hourly:Poller"]
    procs = [cron(args, {"API_URL": server.url("/api")}) for _ in range(3)]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    assert len(server.calls("/api")) == 1
    skipped = [err for err in errors if "cron-orders: tick" in err and "runs in another process; nothing to do" in err]
    assert len(skipped) == 2, errors


@pytest.mark.parametrize("once", [True, False])
@pytest.mark.parametrize("where", ["option", "environment"])
def test_a_redis_coordination_url_without_redis_py_is_a_usage_error(server, app_dir, monkeypatch, once, where):
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    monkeypatch.setenv("API_URL", server.url("/api"))
    url = "redis://127.0.0.1:6379/0"
    args = ["run", *(["--once"] if once else []), "--app-dir", str(app_dir), "jobs:Poller"]
    if where == "option":
        args[1:1] = ["--coordination", url]
    else:
        monkeypatch.setenv("SYNCWORKERS_COORDINATION_URL", url)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "needs redis-py: pip install 'syncworkers[redis]'" in result.output
    assert server.requests == []


SQLITE_APP = textwrap.dedent("""
    import os
    from syncworkers import WebhookConfig, WebhookSenderWorker

    def sender():
        return WebhookSenderWorker(base_url="http://127.0.0.1:9/", name="partner",
                                   webhook_config=WebhookConfig(outbox_url=os.environ["OUTBOX_URL"]))
""")


def test_start_line_prints_a_sqlite_url_as_given(app_dir, tmp_path_factory):
    (app_dir / "boxapp.py").write_text(SQLITE_APP)
    url = f"sqlite:///{tmp_path_factory.mktemp('box')}/outbox.db"  # sqlite:////tmp/...: an absolute path
    proc = cron(["run", "--app-dir", str(app_dir), "boxapp:sender"], {"OUTBOX_URL": url})
    text = stderr_until(proc, lambda lines: "run started" in lines[-1])
    start = [x for x in text.splitlines() if "run started" in x]
    assert len(start) == 1 and f"outbox={url}" in start[0], text


def test_missing_app_dir_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--once", "--app-dir", str(tmp_path / "nope"), "jobs:Poller"])
    assert result.exit_code == 2
    assert "--app-dir" in result.output


def test_lock_in_a_missing_folder_is_a_usage_error(tmp_path, app_dir):
    result = CliRunner().invoke(cli, ["run", "--once", "--lock", str(tmp_path / "no" / "x.lock"),
                                      "--app-dir", str(app_dir), "jobs:Poller"])
    assert result.exit_code == 2
    assert "--lock" in result.output


def test_python_dash_m_syncworkers_is_the_command():
    proc = subprocess.run([sys.executable, "-m", "syncworkers", "--version"], cwd="/", capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0
    assert proc.stdout.startswith("syncworkers, version")


# -- what run says -----------------------------------------------------------------

SECRET_APP = textwrap.dedent("""
    import os
    from syncworkers import PollerWorker, WebhookConfig, WebhookSenderWorker

    class Poller(PollerWorker):
        def __init__(self):
            super().__init__(url=os.environ["API_URL"], interval=0.05, name="orders-api")

    def sender():
        return WebhookSenderWorker(base_url="http://127.0.0.1:9/", name="partner",
                                   signing_secret="whsec_c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1Ng==")
""")


def test_run_logs_one_start_line_and_one_line_per_poll_failure(tmp_path, app_dir):
    from .helpers import closed_port

    (app_dir / "secretapp.py").write_text(SECRET_APP)
    port = closed_port()
    env = {"API_URL": f"http://user:pw-in-url@127.0.0.1:{port}/x?token=abc", "HTTP_MAX_RETRIES": "0"}
    proc = cron(["run", "--app-dir", str(app_dir), "--max-workers", "3", "secretapp:Poller",
                 "secretapp:sender"], env)
    text = stderr_until(proc, lambda lines: sum("poll failed" in x for x in lines) >= 3)
    start = [x for x in text.splitlines() if "run started" in x]
    assert len(start) == 1, text
    assert "orders-api" in start[0] and "partner" in start[0] and "pool=3" in start[0]
    assert "outbox=memory" in start[0] and "coordination=None" in start[0]
    failures = [x for x in text.splitlines() if "orders-api" in x and "poll" in x and "fail" in x]
    assert all("poll failed" in x for x in failures), failures
    assert "pw-in-url" not in text and "abc" not in text and "c2VjcmV0" not in text
    assert proc.returncode == 0


def test_start_line_shows_the_coordination_backend_without_its_password(server, app_dir):
    from .redis_server import RedisServer, require_redis_package

    require_redis_package()
    server.route("GET", "/x", json={})
    with RedisServer(password="redis-pw-42") as redis_server:
        env = {"API_URL": server.url("/x"), "SYNCWORKERS_COORDINATION_URL": redis_server.url}
        proc = cron(["run", "--app-dir", str(app_dir), "jobs:Poller"], env)
        text = stderr_until(proc, lambda lines: "run started" in lines[-1])
    start = [x for x in text.splitlines() if "run started" in x]
    assert len(start) == 1, text
    assert f"coordination=redis://127.0.0.1:{redis_server.port}/0" in start[0], start[0]
    assert "redis-pw-42" not in text


@pytest.mark.transport_dependent
def test_stop_logs_pending_and_in_memory_outbox_warns_with_the_count(server):
    server.route("POST", "/hook", status=500)
    sender = WebhookSenderWorker(base_url=server.base_url, name="mem")
    with LogCapture() as logs:
        for n in range(3):
            sender.enqueue("/hook", {"n": n})
        sender.close()  # never started: the three are still pending
    warnings = [r for r in logs.text.splitlines() if "in-memory outbox" in r]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "stopped with 3 deliveries pending" in warnings[0], logs.text


@pytest.mark.transport_dependent
def test_stop_of_a_durable_outbox_says_how_many_it_left_pending(server, tmp_path):
    from syncworkers import WebhookConfig

    server.route("POST", "/hook", status=503)
    sender = WebhookSenderWorker(base_url=server.base_url, name="file",
                                 webhook_config=WebhookConfig(outbox_path=str(tmp_path / "o.db"),
                                                              retry_schedule=[3600], max_retries=0))
    sender.start()
    with LogCapture() as logs:
        for n in range(2):
            sender.enqueue("/hook", {"n": n})
        assert wait_for(lambda: len(server.calls("/hook")) == 2, timeout=30)
        assert sender.stop(timeout=30)
    sender.close()
    lines = [r for r in logs.text.splitlines() if "left pending" in r]
    assert len(lines) == 1 and "stopped with 2 deliveries left pending" in lines[0] and "INFO" in lines[0], logs.text


SLOW_START_APP = textwrap.dedent("""
    import os, sys, time
    from syncworkers import PollerWorker

    def poller():
        print("building", file=sys.stderr, flush=True)
        while not os.path.exists(os.environ["GO_FILE"]):  # the test sends SIGTERM meanwhile
            time.sleep(0.01)
        return PollerWorker(url=os.environ["API_URL"], interval=3600, name="slow-start")
""")


def test_a_sigterm_while_workers_are_built_stops_the_run_cleanly(server, tmp_path, app_dir):
    server.route("GET", "/x", json={})
    (app_dir / "slowstart.py").write_text(SLOW_START_APP)
    go = tmp_path / "go"
    proc = cron(["run", "--app-dir", str(app_dir), "slowstart:poller"],
                {"API_URL": server.url("/x"), "GO_FILE": str(go)})
    try:
        assert proc.stderr.readline().strip() == "building"
        proc.send_signal(signal.SIGTERM)  # before the Runner exists, let alone its handlers
        go.write_text("")
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "SIGTERM received, stopping" in err
