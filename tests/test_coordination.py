"""Tick claims on real Redis and PostgreSQL, and the Runner driving them (fake clocks, real threads).

The three-process tests are in test_coordination_cluster.py.
"""

import logging
import math
import subprocess
import sys
import threading

import pytest

from syncworkers import PollerWorker
from syncworkers.cli import main
from syncworkers.scheduling.coordination import (
    CoordinationError,
    PostgresTickClaims,
    RedisTickClaims,
    claim_ttl,
    open_coordination,
)
from syncworkers.exceptions import ConfigError
from syncworkers.scheduling.runner import COORDINATION_ENV, PeriodicJob, Runner
from syncworkers.scheduling.schedule import name_offset
from syncworkers.workers.poller import default_name

from .helpers import closed_port, wait_for
from .redis_server import RedisServer, require_redis_package

pytestmark = pytest.mark.transport_independent

SECRET = "hunter2-very-secret"


class MemoryClaims:
    """TickClaims in a dict, shared by several Runners of one test as by processes of a cluster."""

    def __init__(self):
        self.claims = {}
        self.lock = threading.Lock()
        self.down = False
        self.closed = 0

    def claim(self, name, tick, ttl=60.0):
        if self.down:
            raise CoordinationError("backend down")
        with self.lock:
            if (name, tick) in self.claims:
                return False
            self.claims[(name, tick)] = ttl
            return True

    def close(self):
        self.closed += 1

    def __repr__(self):
        return "<MemoryClaims>"


class FakeTime:
    """One fake instant read through a monotonic and a wall clock (Unix time = monotonic + 1e6)."""

    EPOCH_GAP = 1_000_000.0

    def __init__(self, now=0.0):
        self.now = now

    def mono(self):
        return self.now

    def wall(self):
        return self.now + self.EPOCH_GAP


class Worker:
    def __init__(self, *jobs):
        self._jobs = list(jobs)

    def startup(self):
        pass

    def shutdown(self):
        pass

    def jobs(self):
        return self._jobs


def settle(runner, key, fired):
    """Wait until *key* has fired *fired* ticks and none is still running."""
    assert wait_for(lambda: runner.stats["jobs"][key]["fired"] == fired
                    and not runner.stats["jobs"][key]["busy"], timeout=10)


# -- open_coordination -------------------------------------------------------


@pytest.mark.parametrize("url", ["", "   ", "ftp://user:" + SECRET + "@host/x", "127.0.0.1:6379", None, 5])
def test_open_coordination_rejects_what_is_not_a_redis_or_postgresql_url(url):
    with pytest.raises(ConfigError) as info:
        open_coordination(url)
    assert "coordination" in info.value.errors
    assert SECRET not in str(info.value)


def test_open_coordination_picks_the_backend_by_scheme_and_keeps_the_password_out_of_reprs():
    for url, cls in ((f"redis://:{SECRET}@127.0.0.1:1/0", RedisTickClaims),
                     (f"rediss://:{SECRET}@127.0.0.1:1/0", RedisTickClaims),
                     (f"postgresql://app:{SECRET}@127.0.0.1:1/db", PostgresTickClaims),
                     (f"postgres://app:{SECRET}@127.0.0.1:1/db", PostgresTickClaims)):
        claims = open_coordination(url)  # connects on first claim, not here
        try:
            assert isinstance(claims, cls)
            assert SECRET not in repr(claims) and "127.0.0.1:1" in repr(claims)
        finally:
            claims.close()


def test_claims_are_kept_a_few_intervals_and_never_under_half_a_minute():
    assert claim_ttl(1.0) == 30.0
    assert claim_ttl(60.0) == 180.0


# -- Redis -------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url():
    require_redis_package()
    with RedisServer(password=SECRET) as srv:
        yield srv.url


def test_redis_grants_each_tick_once_and_lets_it_expire(redis_url):
    import redis

    a, b = open_coordination(redis_url), open_coordination(redis_url)
    try:
        assert a.claim("orders", 7, ttl=30.0) is True
        assert b.claim("orders", 7, ttl=30.0) is False
        assert a.claim("orders", 7, ttl=30.0) is False  # the claimer itself does not get it twice
        assert b.claim("orders", 8, ttl=30.0) is True
        assert b.claim("refunds", 7, ttl=30.0) is True
        client = redis.Redis.from_url(redis_url)
        try:
            assert 0 < client.pttl("syncworkers:tick:orders:7") <= 30_000
            assert client.get("syncworkers:tick:orders:7").decode().split(":")[1] == str(__import__("os").getpid())
        finally:
            client.close()
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("scheme, credentials", [("redis", ":{}@"), ("postgresql", "app:{}@")])
def test_an_unreachable_backend_raises_coordination_error_without_the_password(scheme, credentials):
    path = "/0" if scheme == "redis" else "/db"
    claims = open_coordination(f"{scheme}://{credentials.format(SECRET)}127.0.0.1:{closed_port()}{path}")
    try:
        with pytest.raises(CoordinationError) as info:
            claims.claim("orders", 1)
        assert SECRET not in str(info.value)
    finally:
        claims.close()


# -- PostgreSQL --------------------------------------------------------------


def test_postgresql_grants_each_tick_once_and_creates_its_table(pg_db):
    import psycopg

    a, b = open_coordination(pg_db), open_coordination(pg_db)
    try:
        assert a.claim("orders", 7, ttl=30.0) is True
        assert b.claim("orders", 7, ttl=30.0) is False
        assert b.claim("orders", 8, ttl=30.0) is True
        assert a.claim("refunds", 7, ttl=30.0) is True
        with psycopg.connect(pg_db) as conn:
            rows = conn.execute("SELECT name, tick, expires_at > now() FROM syncworkers_tick_claims"
                                " ORDER BY name, tick").fetchall()
        assert rows == [("orders", 7, True), ("orders", 8, True), ("refunds", 7, True)]
    finally:
        a.close()
        b.close()


def test_postgresql_processes_starting_together_create_the_table_once(pg_db):
    clients = [open_coordination(pg_db) for _ in range(6)]
    results, errors = [], []
    barrier = threading.Barrier(len(clients))

    def claim(client):
        barrier.wait()
        try:
            results.append(client.claim("orders", 1))
        except Exception as exc:  # a race on CREATE TABLE would land here
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for c in clients:
        c.close()
    assert errors == []
    assert sorted(results) == [False] * 5 + [True]


def test_postgresql_prunes_expired_claims(pg_db):
    import psycopg

    claims = open_coordination(pg_db)
    try:
        assert claims.claim("orders", 1, ttl=0.0) is True  # expires at once
        assert claims.claim("orders", 2, ttl=300.0) is True
        claims._last_prune = float("-inf")  # due for pruning at the next claim
        assert claims.claim("orders", 3, ttl=300.0) is True
        with psycopg.connect(pg_db) as conn:
            ticks = [t for (t,) in conn.execute("SELECT tick FROM syncworkers_tick_claims ORDER BY tick")]
        assert ticks == [2, 3]
    finally:
        claims.close()


# -- the Runner --------------------------------------------------------------


def test_two_runners_sharing_claims_run_each_tick_once_on_the_epoch_grid():
    claims, t = MemoryClaims(), FakeTime(now=3.0)  # Unix time 1_000_003: the next 10 s grid point is 7 s away
    ran = []
    runners = [Runner([Worker(PeriodicJob("sync", 10.0, lambda n=n: ran.append(n)))], clock=t.mono,
                      wall_clock=t.wall, coordination=claims, name=f"r{n}") for n in range(2)]
    for runner in runners:
        runner.start()
    try:
        for runner in runners:  # with coordination the first tick waits for the grid: not immediate
            assert runner.stats["jobs"]["sync"]["fired"] == 0
        for tick, now in enumerate((10.0, 20.0, 30.0), start=1):
            t.now = now
            for runner in runners:
                runner.wakeup()
            for runner in runners:
                settle(runner, "sync", tick)
        assert len(ran) == 3
        assert sorted(claims.claims) == [("sync", 100_001), ("sync", 100_002), ("sync", 100_003)]
        assert set(claims.claims.values()) == {30.0}
        health = [runner.health() for runner in runners]
        assert sum(h["jobs"]["sync"]["ticks_here"] for h in health) == 3
        assert sum(h["jobs"]["sync"]["ticks_elsewhere"] for h in health) == 3
        for n, h in enumerate(health):
            assert h["coordination"]["ticks_here"] == ran.count(n)
            assert h["coordination"]["ticks_elsewhere"] == 3 - ran.count(n)
            assert h["coordination"]["reachable"] is True
    finally:
        for runner in runners:
            runner.stop(5)
    assert claims.closed == 0  # a TickClaims passed in stays the caller's


def test_stagger_with_coordination_shifts_the_grid_by_the_name_offset():
    claims, t = MemoryClaims(), FakeTime(now=3.0)  # Unix time 1_000_003
    offset = name_offset("orders", 10.0)
    job = PeriodicJob("orders", 10.0, lambda: None)
    with Runner([Worker(job)], clock=t.mono, wall_clock=t.wall, coordination=claims, stagger=True) as runner:
        # The first grid point n*10 + offset at or after Unix time 1_000_003, in monotonic time.
        expected = math.ceil((3.0 - offset) / 10.0) * 10.0 + offset
        assert runner.stats["jobs"]["orders"]["next_due"] == pytest.approx(expected)
    with Runner([Worker(job)], clock=t.mono, wall_clock=t.wall, coordination=claims) as runner:
        assert runner.stats["jobs"]["orders"]["next_due"] == pytest.approx(10.0)


def test_an_unreachable_backend_skips_ticks_with_one_warning_per_outage(caplog):
    claims, t = MemoryClaims(), FakeTime(now=0.0)
    ran, unclaimed = [], []
    job = PeriodicJob("sync", 1.0, lambda: ran.append(t.now), on_unclaimed=unclaimed.append)
    caplog.set_level(logging.WARNING, logger="syncworkers.scheduling.coordination")
    with Runner([Worker(job)], clock=t.mono, wall_clock=t.wall, coordination=claims) as runner:
        settle(runner, "sync", 1)
        claims.down = True
        for tick in (2, 3, 4):
            t.now += 1.0
            runner.wakeup()
            settle(runner, "sync", tick)
        assert runner.health()["coordination"]["reachable"] is False
        claims.down = False
        t.now += 1.0
        runner.wakeup()
        settle(runner, "sync", 5)
        health = runner.health()
    assert ran == [0.0, 4.0]  # the outage's three ticks were skipped, not run by every process
    assert unclaimed == [False, False, False]
    assert health["jobs"]["sync"]["ticks_unclaimed"] == 3 and health["coordination"]["ticks_unclaimed"] == 3
    assert health["coordination"]["reachable"] is True
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "unreachable" in messages[0] and "backend down" in messages[0]
    assert "answers again" in messages[1] and "3 tick(s)" in messages[1]


def test_the_runner_opens_the_client_of_a_url_and_closes_it_on_stop(monkeypatch):
    closed = []
    monkeypatch.setattr(RedisTickClaims, "close", lambda self: closed.append(self))
    runner = Runner([], coordination="redis://127.0.0.1:1/0")
    runner.start()
    assert closed == []
    runner.stop(5)
    assert len(closed) == 1
    Runner([], coordination="redis://127.0.0.1:1/0").stop()  # never started: closed too
    assert len(closed) == 2


def test_the_runner_reads_the_coordination_url_from_the_environment(monkeypatch):
    monkeypatch.setenv(COORDINATION_ENV, f"postgresql://app:{SECRET}@127.0.0.1:1/db")
    runner = Runner([])
    assert "PostgresTickClaims" in runner.health()["coordination"]["backend"]
    runner.stop()
    monkeypatch.setenv(COORDINATION_ENV, f"mysql://app:{SECRET}@127.0.0.1:1/db")
    with pytest.raises(ConfigError) as info:
        Runner([])
    assert COORDINATION_ENV in str(info.value) and SECRET not in str(info.value)


def test_without_coordination_nothing_changes_the_first_tick_is_immediate():
    t = FakeTime(now=3.0)
    ran = []
    with Runner([Worker(PeriodicJob("sync", 10.0, lambda: ran.append(1)))], clock=t.mono, wall_clock=t.wall) as r:
        settle(r, "sync", 1)
        assert r.health()["coordination"] is None
        assert r.health()["jobs"]["sync"]["ticks_here"] == 1
    assert ran == [1]


def test_a_wall_clock_step_moves_the_grid_so_tick_numbers_follow_unix_time(caplog):
    claims, t = MemoryClaims(), FakeTime(now=5.0)  # Unix time 1_000_005
    with Runner([Worker(PeriodicJob("sync", 10.0, lambda: None))], clock=t.mono, wall_clock=t.wall,
                coordination=claims) as runner:
        t.now = 10.0
        runner.wakeup()
        settle(runner, "sync", 1)
        assert list(claims.claims) == [("sync", 100_001)]
        t.EPOCH_GAP += 95.0  # NTP steps the wall clock: Unix time is now 1_000_105 at monotonic 10
        t.now = 20.0  # the old grid's next point: Unix time 1_000_115 on the stepped clock
        runner.wakeup()
        assert wait_for(lambda: runner.stats["jobs"]["sync"]["next_due"] == pytest.approx(25.0))
        t.now = 25.0  # Unix time 1_000_120: tick 100_012
        runner.wakeup()
        settle(runner, "sync", 2)
    assert list(claims.claims) == [("sync", 100_001), ("sync", 100_012)]
    assert any("stepped" in r.getMessage() for r in caplog.records)


def test_a_job_kept_out_of_coordination_runs_in_every_process_at_once():
    claims, t = MemoryClaims(), FakeTime(now=3.0)
    ran = []
    runners = [Runner([Worker(PeriodicJob("local", 10.0, lambda: ran.append(1), coordinated=False))],
                      clock=t.mono, wall_clock=t.wall, coordination=claims, name=f"r{n}") for n in range(2)]
    for runner in runners:
        runner.start()
    try:
        for runner in runners:
            settle(runner, "local", 1)  # immediate, as without coordination
    finally:
        for runner in runners:
            runner.stop(5)
    assert ran == [1, 1] and claims.claims == {}


def test_coordination_must_be_a_url_or_tick_claims():
    with pytest.raises(ConfigError, match="TickClaims"):
        Runner([], coordination=object())


@pytest.mark.transport_dependent
def test_cli_rejects_a_bad_coordination_url_with_exit_2(capsys, monkeypatch, server):
    monkeypatch.setenv("POLLER_URL", server.url("/x"))
    with pytest.raises(SystemExit) as info:
        main(["run", "--coordination", f"ftp://u:{SECRET}@h/x", "tests.apps.cli_workers:GoodPoller"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "redis://" in err and SECRET not in err


# -- the poller's identity ---------------------------------------------------


@pytest.mark.transport_dependent
def test_a_pollers_default_name_shows_class_method_and_url_without_secrets():
    url = f"https://user:{SECRET}@api.example.com:8443/v1/orders?token={SECRET}"
    poller = PollerWorker(url, interval=5)
    assert poller.name.startswith("PollerWorker GET https://api.example.com:8443/v1/orders (")
    assert SECRET not in poller.name and "token" not in poller.name
    other = PollerWorker(url.replace("token=", "t="), interval=5)
    assert other.name != poller.name  # same path, another query: another poller
    assert PollerWorker(url, interval=60).name == poller.name  # the interval is not the identity
    assert [job.name for job in poller.jobs()] == [poller.name]


@pytest.mark.transport_dependent
def test_a_pollers_default_name_is_the_same_in_another_process():
    url = "http://127.0.0.1:9/items?page=1"
    code = ("from syncworkers import PollerWorker; "
            f"print(PollerWorker({url!r}, interval=1, method='POST').name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == PollerWorker(url, interval=1, method="POST").name
    assert out.stdout.strip() == default_name("PollerWorker", "POST", url)


@pytest.mark.transport_dependent
def test_a_pollers_name_is_settable_and_names_its_job_and_its_logs():
    poller = PollerWorker("http://127.0.0.1:9/items", interval=5, name="orders")
    assert poller.name == "orders"
    poller.name = "orders-eu"
    assert [job.name for job in poller.jobs()] == ["orders-eu"]
    assert poller.logger.context["worker"] == "orders-eu"
    assert poller.health()["worker"] == "orders-eu"
    with pytest.raises(ConfigError):
        poller.name = ""


@pytest.mark.transport_dependent
def test_a_coordinated_pollers_health_tells_ticks_run_here_and_elsewhere(server):
    server.route("GET", "/items", json=[])
    claims, t = MemoryClaims(), FakeTime(now=0.0)
    here, there = PollerWorker(server.url("/items"), interval=1), PollerWorker(server.url("/items"), interval=1)
    runners = [Runner([w], clock=t.mono, wall_clock=t.wall, coordination=claims, name=f"r{n}")
               for n, w in enumerate((here, there))]
    for runner in runners:
        runner.start()
    try:
        for tick in (1, 2, 3):
            for runner in runners:
                runner.wakeup()
            for runner in runners:
                settle(runner, here.name, tick)
            t.now += 1.0
    finally:
        for runner in runners:
            runner.stop(5)
        here.close()
        there.close()
    assert len(server.calls("/items")) == 3
    ticks = [w.health()["ticks"] for w in (here, there)]
    assert sum(t["here"] for t in ticks) == 3 and sum(t["elsewhere"] for t in ticks) == 3
    assert all(t["unclaimed"] == 0 for t in ticks)
    assert ticks[0]["here"] == here.metrics["polls"]
