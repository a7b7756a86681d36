"""One poll per tick cluster-wide: three real ``syncworkers run --coordination`` processes, one API.

Each process runs the same poller every second against one LoopbackServer,
coordinated through a real redis-server or PostgreSQL. The API must see one
request per tick, also after one process is killed with SIGKILL. The tick of
a request is read from its arrival time on the epoch grid (``floor(t - offset)``
for a 1 s interval); nothing else about timing is asserted.
"""

import collections
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from syncworkers.scheduling.schedule import name_offset
from syncworkers.workers.poller import default_name

from .helpers import wait_for
from .redis_server import RedisServer, require_redis_package

pytestmark = pytest.mark.transport_independent

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESSES = 3
#: Ticks to watch with every process running, then after the kill.
TICKS_BEFORE_KILL = 4
TICKS_AFTER_KILL = 4


def start_process(url, poll_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCWORKERS_", "POLLER_", "HTTP_"))}
    env.update({"PYTHONPATH": REPO, "POLLER_URL": poll_url, "POLLER_INTERVAL": "1"})
    cmd = [sys.executable, "-m", "syncworkers.cli", "run", "--coordination", url, "--stagger",
           "--log-level", "WARNING", "tests.apps.cli_workers:GoodPoller"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def tick_of(request, offset, wall_minus_mono):
    """The epoch-grid tick a request belongs to: it is sent at or just after ``tick + offset``."""
    return math.floor(request.received_at + wall_minus_mono - offset)


def run_cluster(server, url):
    server.route("GET", "/tick", json={"ok": True})
    poll_url = server.url("/tick")
    # With --stagger the grid is shifted by an offset derived from the poller's name.
    offset = name_offset(default_name("GoodPoller", "GET", poll_url), 1.0)
    wall_minus_mono = time.time() - time.monotonic()
    procs = [start_process(url, poll_url) for _ in range(PROCESSES)]
    try:
        # Every process is up once the API has seen a few ticks after the last one started.
        assert wait_for(lambda: len(server.calls("/tick")) >= 2, timeout=60), "no process polled"
        seen = len(server.calls("/tick"))
        assert wait_for(lambda: len(server.calls("/tick")) >= seen + TICKS_BEFORE_KILL, timeout=60)
        assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.poll() is not None]
        victim = procs[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        killed_at = time.monotonic()
        assert wait_for(lambda: len([r for r in server.calls("/tick") if r.received_at > killed_at])
                        >= TICKS_AFTER_KILL, timeout=60), "the survivors stopped polling"
        for proc in procs[1:]:
            proc.send_signal(signal.SIGTERM)
        for proc in procs[1:]:
            proc.wait(30)
            assert proc.returncode == 0, proc.stderr.read().decode()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            proc.stderr.close()
    requests = server.calls("/tick")
    ticks = collections.Counter(tick_of(r, offset, wall_minus_mono) for r in requests)
    return ticks, tick_of_time(killed_at, offset, wall_minus_mono)


def tick_of_time(mono, offset, wall_minus_mono):
    return math.floor(mono + wall_minus_mono - offset)


def assert_one_request_per_tick(ticks, killed_tick):
    doubled = {tick: n for tick, n in ticks.items() if n > 1}
    assert not doubled, f"ticks polled more than once: {doubled}"
    first, last = min(ticks), max(ticks)
    missing = [t for t in range(first, last + 1) if t not in ticks]
    # At most the tick the killed process had claimed is lost.
    assert len(missing) <= 1, f"ticks never polled: {missing} (killed during tick {killed_tick})"
    assert all(killed_tick - 1 <= t <= killed_tick for t in missing), (missing, killed_tick)
    assert len([t for t in ticks if t > killed_tick]) >= TICKS_AFTER_KILL - 1


def test_three_processes_coordinated_by_redis_poll_once_per_tick(server):
    require_redis_package()
    with RedisServer() as redis_server:
        ticks, killed_tick = run_cluster(server, redis_server.url)
    assert_one_request_per_tick(ticks, killed_tick)


def test_three_processes_coordinated_by_postgresql_poll_once_per_tick(server, pg_db):
    ticks, killed_tick = run_cluster(server, pg_db)
    assert_one_request_per_tick(ticks, killed_tick)
