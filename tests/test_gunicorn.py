"""The gunicorn recipe with a real gunicorn (3 workers) on 127.0.0.1 serving the Flask app with AUTOSTART."""

import collections
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .helpers import need_module, need_program, wait_for
from .redis_server import RedisServer, require_redis_package

need_module("flask", "Flask")

pytestmark = pytest.mark.transport_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn():
    return need_program("gunicorn", "gunicorn", path=os.path.dirname(sys.executable))


def get(url):
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def post(url):
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


@pytest.mark.parametrize("preload", [False, True])
def test_webhooks_enqueued_in_any_gunicorn_worker_are_all_delivered(server, tmp_path, preload):
    need_program("gunicorn", "gunicorn", path=os.path.dirname(sys.executable))
    server.route("POST", "/hooks/orders", status=200)
    server.route("GET", "/api", json={})
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ROOT, "APP_AUTOSTART": "1", "APP_BASE_URL": server.base_url,
           "APP_OUTBOX_URL": f"sqlite:///{tmp_path}/outbox.db", "APP_WORKERS": "tests.apps.flask_app:PidPoller",
           "API_URL": server.url("/api"), "PID_DIR": str(pid_dir)}
    args = [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "-w", "3", "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "20", *(["--preload"] if preload else []), "tests.apps.flask_app:create_app()"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def up():
            try:
                post(f"http://127.0.0.1:{port}/orders/0")
                return True
            except OSError:
                return False

        assert wait_for(up, timeout=60)
        answers = [post(f"http://127.0.0.1:{port}/orders/{n}") for n in range(1, 40)]
        ids = {a["id"] for a in answers}
        assert wait_for(lambda: len({c.header("webhook-id") for c in server.calls("/hooks/orders")}) == 40,
                        timeout=60)
        assert ids <= {c.header("webhook-id") for c in server.calls("/hooks/orders")}
        serving = {a["pid"] for a in answers}
        # Workers start in the processes that serve, after the fork, once each; never in the master.
        started = {int(name.split(".")[0]) for name in os.listdir(pid_dir)}
        assert proc.pid not in started
        assert serving <= started
        assert len(started) == len(os.listdir(pid_dir))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


#: Ticks watched once the three workers all run the poller.
TICKS = 5


def test_pollers_in_three_gunicorn_workers_poll_once_per_tick_with_coordination(server, tmp_path):
    """Each worker process starts the poller (AUTOSTART); coordination on Redis lets one of them run each tick."""
    require_redis_package()
    server.route("GET", "/api", json={})
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    port = free_port()
    with RedisServer() as redis_server:
        env = {**os.environ, "PYTHONPATH": ROOT, "APP_AUTOSTART": "1", "APP_BASE_URL": server.base_url,
               "APP_WORKERS": "tests.apps.flask_app:PidPoller", "APP_COORDINATION_URL": redis_server.url,
               "API_URL": server.url("/api"), "API_INTERVAL": "1", "PID_DIR": str(pid_dir)}
        args = [gunicorn(), "-w", "3", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "20",
                "tests.apps.flask_app:create_app()"]
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        try:
            def all_three_started():
                try:
                    get(f"http://127.0.0.1:{port}/pid")  # a new connection each time: any worker may take it
                except OSError:
                    return False
                return len(os.listdir(pid_dir)) >= 3

            assert wait_for(all_three_started, timeout=90), os.listdir(pid_dir)
            since = time.monotonic()
            assert wait_for(lambda: len([c for c in server.calls("/api") if c.received_at > since]) >= TICKS,
                            timeout=60)
            wall_minus_mono = time.time() - time.monotonic()
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # The poller's ticks sit on the epoch grid (interval 1 s, no stagger): tick n is polled at or just after n.
    polls = [c for c in server.calls("/api") if c.received_at > since]
    ticks = collections.Counter(math.floor(c.received_at + wall_minus_mono) for c in polls)
    doubled = {tick: n for tick, n in ticks.items() if n > 1}
    assert not doubled, f"ticks polled by more than one worker: {doubled}"
    assert len(ticks) >= TICKS
