"""Runner: the pure Schedule on a fake clock, then the real timer thread and pool.

Threaded tests drive time with a fake clock plus ``wakeup()`` and synchronise
on Events the fake jobs set or wait on; none asserts a duration (a timeout only
turns a hang into a failure).
"""

import logging
import math
import os
import queue
import selectors
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from syncworkers.exceptions import ConfigError, WorkerError
from syncworkers.scheduling.runner import (
    DEFAULT_MAX_WORKERS,
    LoopJob,
    PeriodicJob,
    Runner,
)

from .helpers import wait_for

pytestmark = pytest.mark.transport_independent

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


class FakeWorker:
    """A worker that records its lifecycle calls in *log*."""

    def __init__(self, *jobs, label="w", log=None):
        self._jobs = list(jobs)
        self.label = label
        self.log = log if log is not None else []
        self.runner = None

    def _bind_runner(self, runner):
        self.runner = runner
        self.log.append(f"{self.label}.bind")

    def startup(self):
        self.log.append(f"{self.label}.startup")

    def jobs(self):
        self.log.append(f"{self.label}.jobs")
        return self._jobs

    def shutdown(self):
        self.log.append(f"{self.label}.shutdown")


def advance(runner, clock, now):
    clock.now = now
    runner.wakeup()


# -- job and runner arguments ---------------------------------------------


@pytest.mark.parametrize("kwargs, field", [
    ({"interval": 0}, "interval"),
    ({"interval": -1.0}, "interval"),
    ({"interval": math.nan}, "interval"),
    ({"interval": math.inf}, "interval"),
    ({"interval": True}, "interval"),
    ({"interval": "5"}, "interval"),
    ({"jitter": -0.1}, "jitter"),
    ({"jitter": 10.0}, "jitter"),
    ({"func": None}, "func"),
    ({"name": ""}, "name"),
    ({"on_skip": 3}, "on_skip"),
])
def test_periodic_job_rejects_bad_values_naming_them(kwargs, field):
    args = {"name": "p", "interval": 10.0, "func": lambda: None, **kwargs}
    with pytest.raises(ConfigError) as info:
        PeriodicJob(**args)
    assert field in info.value.errors
    assert field in str(info.value)


def test_loop_job_rejects_a_non_callable():
    with pytest.raises(ConfigError):
        LoopJob("relay", "not callable")


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "4"])
def test_runner_rejects_bad_max_workers(value):
    with pytest.raises(ConfigError) as info:
        Runner(max_workers=value)
    assert repr(value) in str(info.value)


def test_runner_defaults_max_workers_like_thread_pool_executor():
    assert Runner().max_workers == DEFAULT_MAX_WORKERS == min(32, (os.cpu_count() or 1) + 4)
    assert Runner(max_workers=1).max_workers == 1


def test_runner_rejects_an_object_that_is_not_a_worker():
    with pytest.raises(ConfigError, match="startup"):
        Runner([type("Half", (), {"jobs": lambda self: []})()])


# -- the real timer thread and pool -----------------------------------------


def test_a_blocked_tick_makes_later_ticks_skipped_and_counted_never_concurrent():
    clock = FakeClock()
    lock = threading.Lock()
    state = {"active": 0, "max": 0, "calls": 0}
    entered, release, skipped = threading.Event(), threading.Event(), threading.Event()
    skips = []

    def tick():
        with lock:
            state["active"] += 1
            state["max"] = max(state["max"], state["active"])
            state["calls"] += 1
        entered.set()
        release.wait(5)
        with lock:
            state["active"] -= 1

    def on_skip(count):
        skips.append(count)
        skipped.set()

    job = PeriodicJob("slow", 1.0, tick, on_skip=on_skip)
    with Runner([FakeWorker(job)], max_workers=4, clock=clock, name="slow") as runner:
        assert entered.wait(5)
        for now in (1.0, 2.0, 3.0, 5.5):  # 5.5: the timer also fell behind by two ticks
            skipped.clear()
            advance(runner, clock, now)
            assert skipped.wait(5)
        assert skips == [1, 1, 1, 2]
        assert state["calls"] == 1  # never queued up behind the running tick

        entered.clear()
        release.set()
        assert wait_for(lambda: not runner.stats["jobs"]["slow"]["busy"])
        advance(runner, clock, 6.0)
        assert entered.wait(5)
        stats = runner.stats["jobs"]["slow"]
    assert state == {"active": 0, "max": 1, "calls": 2}
    assert (stats["fired"], stats["skipped"]) == (2, 5)


def test_timer_coalesces_when_it_falls_behind():
    clock = FakeClock()
    ticks = queue.Queue()
    job = PeriodicJob("p", 10.0, lambda: ticks.put(clock.now))
    with Runner([FakeWorker(job)], clock=clock, name="coalesce") as runner:
        assert ticks.get(timeout=5) == 0.0
        assert wait_for(lambda: not runner.stats["jobs"]["p"]["busy"])
        advance(runner, clock, 55.5)  # as if the process had been suspended
        assert ticks.get(timeout=5) == 55.5
        stats = runner.stats["jobs"]["p"]
        assert (stats["fired"], stats["skipped"], stats["next_due"]) == (2, 4, 60.0)
        assert ticks.empty()


def test_stagger_spreads_the_first_ticks_of_the_periodic_jobs():
    clock = FakeClock(100.0)
    fired = queue.Queue()
    jobs = [PeriodicJob(f"j{i}", 4.0, lambda i=i: fired.put(f"j{i}")) for i in range(4)]
    with Runner([FakeWorker(*jobs)], stagger=True, clock=clock, name="stagger") as runner:
        assert fired.get(timeout=5) == "j0"
        stats = runner.stats["jobs"]
        assert [stats[f"j{i}"]["fired"] for i in range(4)] == [1, 0, 0, 0]
        assert [stats[f"j{i}"]["next_due"] for i in range(4)] == [104.0, 101.0, 102.0, 103.0]
        advance(runner, clock, 101.0)
        assert fired.get(timeout=5) == "j1"
        assert runner.stats["jobs"]["j2"]["fired"] == 0


def test_without_stagger_every_job_fires_at_once():
    clock = FakeClock()
    fired = queue.Queue()
    jobs = [PeriodicJob(f"j{i}", 4.0, lambda i=i: fired.put(i)) for i in range(3)]
    with Runner([FakeWorker(*jobs)], clock=clock, name="nostagger"):
        assert sorted(fired.get(timeout=5) for _ in range(3)) == [0, 1, 2]


def test_threads_do_not_grow_with_the_number_of_periodic_jobs():
    before = set(threading.enumerate())
    gate = threading.Event()
    lock = threading.Lock()
    started, finished = set(), [0]

    def make_tick(i):
        def tick():
            with lock:
                started.add(i)
            gate.wait(5)
            with lock:
                finished[0] += 1
        return tick

    jobs = [PeriodicJob(f"p{i}", 0.02, make_tick(i)) for i in range(200)]
    loop = LoopJob("relay", lambda stop: stop.wait(10))
    runner = Runner([FakeWorker(*jobs), FakeWorker(loop)], max_workers=4, name="many").start()
    try:
        # The pool is saturated and ticks keep coming due: they are skipped, not queued.
        assert wait_for(lambda: len(started) == 4 and runner.stats["skipped"] >= 400)
        new = [t for t in threading.enumerate() if t not in before]
        assert len(new) <= 1 + 4 + 1
        assert all(t.name.startswith("syncworkers-pool-many_") for t in new
                   if t.name not in ("syncworkers-timer-many", "syncworkers-loop-relay"))
        with lock:
            assert runner.stats["fired"] - finished[0] <= 200  # at most one pending tick per job

        gate.set()
        assert wait_for(lambda: len(started) == 200)
        assert len([t for t in threading.enumerate() if t not in before]) <= 1 + 4 + 1
        assert runner.stats["threads"] == {"timer": 1, "pool": 4, "loops": 1}
    finally:
        gate.set()
        assert runner.stop(timeout=5) is True
    assert not [t for t in threading.enumerate() if t not in before]


def test_stop_returns_promptly_whatever_the_interval():
    ticked = threading.Event()
    runner = Runner([FakeWorker(PeriodicJob("hourly", 3600.0, ticked.set))], name="hourly").start()
    assert ticked.wait(5)
    assert runner.stop(timeout=30) is True  # the timer was asleep for an hour: stop() woke it
    assert not runner.running and runner.stop_event.is_set()


def test_stop_timeout_reports_a_tick_that_refuses_to_finish():
    log = []
    entered, release = threading.Event(), threading.Event()

    def stuck():
        entered.set()
        release.wait(10)

    queued = []
    worker = FakeWorker(PeriodicJob("stuck", 3600.0, stuck),
                        PeriodicJob("queued", 3600.0, lambda: queued.append(1)), log=log)
    runner = Runner([worker], max_workers=1, name="stuck").start()
    assert entered.wait(5)
    assert runner.stop(timeout=0.1) is False
    assert log.count("w.shutdown") == 1  # shutdown still happens when the wait times out
    release.set()
    assert runner.stop(timeout=5) is True  # a second stop() waits for what is left
    assert queued == []  # the tick queued behind the stuck one was cancelled
    assert log.count("w.shutdown") == 1


def test_run_returns_at_once_when_stop_came_first():
    # run() on a thread that had not got going yet when stop() was called: it must not block
    # forever, nor raise, nor start anything.
    log = []
    runner = Runner([FakeWorker(PeriodicJob("never", 3600.0, lambda: log.append("tick")), log=log)],
                    name="stopped-first")
    assert runner.stop() is True
    run_thread = threading.Thread(target=runner.run, name="syncworkers-test-run")
    run_thread.start()
    run_thread.join(5)
    assert not run_thread.is_alive()
    assert log == []
    with pytest.raises(WorkerError, match="stopped"):
        runner.start()


def test_stop_from_inside_a_periodic_job_does_not_deadlock():
    results, done = [], threading.Event()

    def tick():
        results.append(runner.stop())
        done.set()

    runner = Runner([FakeWorker(PeriodicJob("self-stop", 3600.0, tick))], name="selfstop")
    run_thread = threading.Thread(target=runner.run, name="syncworkers-test-run")
    run_thread.start()
    assert done.wait(5)
    run_thread.join(5)
    assert not run_thread.is_alive()  # run() returned because a job called stop()
    assert results == [True]
    assert runner.stop(timeout=5) is True


def test_stop_from_inside_a_loop_job_does_not_deadlock():
    results, done = [], threading.Event()

    def loop(stop_event):
        results.append(runner.stop())
        done.set()

    runner = Runner([FakeWorker(LoopJob("self-stop", loop))], name="loopstop")
    runner.start()
    assert done.wait(5)
    assert results == [True]
    assert runner.stop(timeout=5) is True
    assert runner.stats["jobs"]["self-stop"] == {"kind": "loop", "alive": False, "errors": 0}


def test_loop_job_receives_the_stop_event_and_ends_on_stop():
    seen, started = [], threading.Event()

    def loop(stop_event):
        seen.append(stop_event)
        started.set()
        while not stop_event.wait(5):
            pass

    runner = Runner([FakeWorker(LoopJob("relay", loop))], max_workers=1, name="loops").start()
    assert started.wait(5)
    [thread] = [t for t in threading.enumerate() if t.name == "syncworkers-loop-relay"]
    assert thread.is_alive() and thread is not threading.current_thread()
    assert seen == [runner.stop_event]
    assert runner.stop(timeout=5) is True
    assert not thread.is_alive()


def test_a_loop_job_that_raises_is_logged_and_called_again(caplog):
    caplog.set_level(logging.ERROR, logger="syncworkers.scheduling.runner")
    calls, again = [], threading.Event()

    def loop(stop_event):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("source went away")
        again.set()
        stop_event.wait(5)

    runner = Runner([FakeWorker(LoopJob("relay", loop))], name="relay")
    runner.loop_restart_delay = 0.0
    runner.start()
    assert again.wait(5)
    assert runner.stats["jobs"]["relay"]["errors"] == 1
    assert runner.stop(timeout=5) is True
    [record] = [r for r in caplog.records if r.name == "syncworkers.scheduling.runner"]
    assert "relay" in record.getMessage() and record.exc_info[0] is RuntimeError


def test_startup_and_shutdown_are_called_once_each_in_order():
    log, shutdown_saw = [], []
    ticked, loop_started = threading.Event(), threading.Event()

    class Checking(FakeWorker):
        def startup(self):
            assert threading.current_thread() is threading.main_thread()
            super().startup()

        def shutdown(self):
            stats = self.runner.stats
            shutdown_saw.append((stats["jobs"]["tick"]["busy"], stats["threads"]["loops"]))
            super().shutdown()

    def loop(stop_event):
        loop_started.set()
        stop_event.wait(5)

    a = Checking(PeriodicJob("tick", 3600.0, ticked.set), label="a", log=log)
    b = FakeWorker(LoopJob("loop", loop), label="b", log=log)
    runner = Runner([a, b], name="order")
    assert log == []  # nothing happens before start()
    runner.start()
    assert ticked.wait(5) and loop_started.wait(5)
    assert log == ["a.bind", "a.startup", "a.jobs", "b.bind", "b.startup", "b.jobs"]
    assert a.runner is runner
    assert runner.stop(timeout=5) is True
    assert runner.stop(timeout=5) is True
    assert log[6:] == ["b.shutdown", "a.shutdown"]
    assert shutdown_saw == [(False, 0)]  # shutdown() came after every job had ended


def test_a_failing_startup_shuts_down_the_workers_already_started():
    class Broken(FakeWorker):
        def startup(self):
            raise RuntimeError("no database")

    log = []
    runner = Runner([FakeWorker(log=log, label="a"), Broken(log=log, label="b")], name="broken")
    with pytest.raises(RuntimeError, match="no database"):
        runner.start()
    assert log == ["a.bind", "a.startup", "a.jobs", "b.bind", "a.shutdown"]
    assert not runner.running
    assert runner.stop(timeout=5) is True
    assert log.count("a.shutdown") == 1


def test_start_twice_raises_worker_error():
    runner = Runner([FakeWorker()], name="twice").start()
    try:
        with pytest.raises(WorkerError):
            runner.start()
    finally:
        runner.stop(timeout=5)
    with pytest.raises(WorkerError):
        runner.start()
    with pytest.raises(WorkerError):
        runner.add(FakeWorker())


def test_a_raising_job_is_logged_and_keeps_being_scheduled(caplog):
    caplog.set_level(logging.ERROR, logger="syncworkers.scheduling.runner")
    clock = FakeClock()
    errors, handled, logged_tick = [], queue.Queue(), queue.Queue()

    def failing():
        raise ValueError(f"bad payload at {clock.now}")

    def failing_logged():
        logged_tick.put(clock.now)
        raise KeyError("missing")

    jobs = [PeriodicJob("handled", 1.0, failing, on_error=lambda exc: (errors.append(exc), handled.put(1))),
            PeriodicJob("logged", 1.0, failing_logged)]
    with Runner([FakeWorker(*jobs)], clock=clock, name="errors") as runner:
        for now in (0.0, 1.0, 2.0):
            if now:
                assert wait_for(lambda: not any(j["busy"] for j in runner.stats["jobs"].values()))
                advance(runner, clock, now)
            handled.get(timeout=5)
            assert logged_tick.get(timeout=5) == now
        assert wait_for(lambda: runner.stats["errors"] == 6)
    assert [str(e) for e in errors] == ["bad payload at 0.0", "bad payload at 1.0", "bad payload at 2.0"]
    records = [r for r in caplog.records if r.name == "syncworkers.scheduling.runner"]
    assert len(records) == 3  # on_error took the others
    assert all("logged" in r.getMessage() and r.exc_info[0] is KeyError for r in records)


def test_add_after_start_starts_the_worker_and_schedules_its_jobs():
    runner = Runner(name="late").start()
    try:
        ticked = threading.Event()
        log = []
        runner.add(FakeWorker(PeriodicJob("late", 3600.0, ticked.set), log=log))
        assert log == ["w.bind", "w.startup", "w.jobs"]
        assert ticked.wait(5)
        with pytest.raises(WorkerError):
            runner.add(runner._workers[0])
    finally:
        assert runner.stop(timeout=5) is True
    assert log[-1] == "w.shutdown"


def test_jobs_with_the_same_name_are_kept_apart():
    clock = FakeClock()
    fired = queue.Queue()
    workers = [FakeWorker(PeriodicJob("poll", 5.0, lambda i=i: fired.put(i))) for i in range(2)]
    with Runner(workers, clock=clock, name="dupes") as runner:
        assert sorted([fired.get(timeout=5), fired.get(timeout=5)]) == [0, 1]
        assert sorted(runner.stats["jobs"]) == ["poll", "poll-2"]


def test_run_off_the_main_thread_blocks_until_stop_and_installs_no_handler():
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ticked, failures = threading.Event(), []
    runner = Runner([FakeWorker(PeriodicJob("p", 3600.0, ticked.set))], name="offmain")

    def run():
        try:
            runner.run()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    run_thread = threading.Thread(target=run, name="syncworkers-test-run")
    run_thread.start()
    assert ticked.wait(5)
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    run_thread.join(0.2)
    assert run_thread.is_alive()  # still blocked: nobody called stop()
    assert runner.stop(timeout=5) is True
    run_thread.join(5)
    assert not run_thread.is_alive() and failures == []


SIGNAL_SCRIPT = textwrap.dedent("""
    import signal, threading
    from syncworkers.scheduling.runner import LoopJob, PeriodicJob, Runner

    class Worker:
        def startup(self):
            pass
        def jobs(self):
            return [PeriodicJob("tick", 3600, lambda: print("tick", flush=True)),
                    LoopJob("relay", lambda stop: stop.wait(30))]
        def shutdown(self):
            print("shutdown", flush=True)

    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    Runner([Worker()], name="sig").run()
    restored = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == previous
    alive = [t.name for t in threading.enumerate() if t.name.startswith("syncworkers")]
    print("run returned", restored, alive, flush=True)
""")


def _read_line(proc, timeout):
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return None
    return proc.stdout.readline()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_on_the_main_thread_stops_cleanly_on_a_signal(signum):
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.Popen([sys.executable, "-c", SIGNAL_SCRIPT], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _read_line(proc, timeout=10) == "tick\n"  # run() is past start(): handlers are in
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["shutdown", "run returned True []"]
