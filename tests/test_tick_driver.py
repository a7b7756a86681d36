"""The Runner's tick driver built alone: an injected clock, a pool the test runs by hand, a stop signal."""

import logging
import threading

import pytest

from syncworkers.scheduling.coordination import CoordinationError, TickGate
from syncworkers.scheduling.jobs import LoopJob, PeriodicJob
from syncworkers.scheduling.ticks import MAX_TIMER_WAIT, TickDriver
from syncworkers.signals import StopSignal

from .helpers import wait_for

pytestmark = pytest.mark.transport_independent


class ManualPool:
    """Ticks wait here until the test runs them: firing, skipping and claiming without pool threads."""

    def __init__(self):
        self.queued = []
        self.lock = threading.Lock()

    def run_each(self, fn, args):
        with self.lock:
            self.queued += [(fn, (arg,)) for arg in args]

    def nudge(self):
        return False

    def run_queued(self):
        with self.lock:
            queued, self.queued = self.queued, []
        for fn, args in queued:
            fn(*args)
        return len(queued)


class Clock:
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def driver(pool=None, clock=None, **kwargs):
    return TickDriver(pool or ManualPool(), kwargs.pop("stop", None) or StopSignal(), name="test",
                      clock=clock or Clock(), **kwargs)


def test_ticks_fire_on_the_fixed_rate_grid_however_late_or_long_a_tick_is():
    pool, clock, ran = ManualPool(), Clock(), []
    ticks = driver(pool, clock)
    ticks.schedule([PeriodicJob("poll", 10.0, lambda: ran.append(clock.now))])
    assert ticks.fire_due() == 10.0 and len(pool.queued) == 1  # the first tick is due at the start
    clock.now = 3.0  # the tick takes 3 s
    pool.run_queued()
    assert ticks.fire_due() == 7.0
    clock.now = 14.0  # the timer woke 4 s late
    assert ticks.fire_due() == 6.0  # the next tick stays at 20: neither the work nor the delay drifts
    pool.run_queued()
    assert ran == [3.0, 14.0]
    jobs = ticks.report()
    assert jobs["poll"]["fired"] == 2 and jobs["poll"]["skipped"] == 0 and jobs["poll"]["next_due"] == 20.0


def test_a_tick_due_while_the_last_is_still_queued_or_running_is_skipped_and_counted():
    pool, clock, skips = ManualPool(), Clock(), []
    ticks = driver(pool, clock)
    ticks.schedule([PeriodicJob("poll", 10.0, lambda: None, on_skip=skips.append)])
    for now in (0.0, 10.0, 20.0):
        clock.now = now
        ticks.fire_due()
    assert len(pool.queued) == 1 and skips == [1, 1]  # never two ticks of one job at once, nor two queued
    poll = ticks.report()["poll"]
    assert (poll["fired"], poll["skipped"], poll["busy"]) == (1, 2, True)
    pool.run_queued()
    assert ticks.report()["poll"]["busy"] is False
    clock.now = 65.0  # 30, 40, 50 and 60 went by: one tick runs, three are skipped
    ticks.fire_due()
    assert len(pool.queued) == 1 and skips == [1, 1, 3]
    poll = ticks.report()["poll"]
    assert (poll["fired"], poll["skipped"]) == (2, 5)


def test_an_empty_schedule_waits_the_longest_and_jobs_named_alike_get_keys_of_their_own():
    pool = ManualPool()
    ticks = driver(pool)
    assert ticks.fire_due() == MAX_TIMER_WAIT
    ticks.schedule([PeriodicJob("poll", 5.0, lambda: None), PeriodicJob("poll", 7.0, lambda: None)])
    assert sorted(ticks.report()) == ["poll", "poll-2"]
    assert ticks.fire_due() == 5.0 and len(pool.queued) == 2


def test_the_timer_thread_fires_when_woken_and_a_stop_ends_it_before_queued_ticks_run():
    pool, clock, stop, ran = ManualPool(), Clock(), StopSignal(), []
    ticks = driver(pool, clock, stop=stop)
    ticks.schedule([PeriodicJob("poll", 3600.0, lambda: ran.append(clock.now))])
    ticks.start()
    try:
        assert ticks.timer.name == "syncworkers-timer-test"
        assert wait_for(lambda: len(pool.queued) == 1)
        pool.run_queued()
        clock.now = 3600.0
        ticks.wakeup()  # the timer sleeps a minute of real time unless woken
        assert wait_for(lambda: len(pool.queued) == 1)
    finally:
        stop.set()  # wakes the timer: nothing polls for it
        ticks.timer.join(10)
    assert not ticks.timer.is_alive()
    assert pool.run_queued() == 1 and ran == [0.0]  # the tick queued before the stop does not run after it


def test_a_loop_job_runs_on_its_named_thread_with_the_stop_and_is_called_again_after_it_raises(caplog):
    caplog.set_level(logging.ERROR, logger="syncworkers.scheduling.runner")
    stop, calls, names, again = StopSignal(), [], [], threading.Event()

    def relay(stop_event):
        calls.append(stop_event)
        names.append(threading.current_thread().name)
        if len(calls) == 1:
            raise RuntimeError("source went away")
        again.set()
        stop_event.wait()

    ticks = driver(stop=stop, loop_restart_delay=0.0)
    ticks.schedule([LoopJob("relay", relay)])
    [thread] = ticks.loop_threads()
    try:
        assert again.wait(10)
        assert calls == [stop, stop] and names == ["syncworkers-loop-relay"] * 2
        assert ticks.report()["relay"] == {"kind": "loop", "alive": True, "errors": 1}
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert "loop job 'relay' raised" in caplog.text


def test_a_tick_knows_it_is_one_and_a_stop_from_inside_it_waits_only_for_the_others():
    pool, seen = ManualPool(), []
    ticks = driver(pool)
    b_running, release = threading.Event(), threading.Event()

    def a():
        seen.append((ticks.in_tick(), ticks.running(), ticks.wait_running(0)))

    def b():
        b_running.set()
        release.wait(10)

    ticks.schedule([PeriodicJob("a", 10.0, a), PeriodicJob("b", 10.0, b)])
    ticks.fire_due()
    [(run_a, args_a), (run_b, args_b)] = pool.queued
    assert ticks.running() == [] and not ticks.in_tick()  # queued is not running: a stop drops those
    other = threading.Thread(target=run_b, args=args_b, name="syncworkers-test-b")
    other.start()
    try:
        assert b_running.wait(10)
        run_a(*args_a)
    finally:
        release.set()
        other.join(10)
    assert seen == [(True, ["b"], 1)]  # b's tick, not its own
    assert ticks.wait_running(10) == 0 and ticks.running() == []


def test_a_tick_queued_before_the_stop_does_not_start_after_it():
    pool, ran, stop = ManualPool(), [], StopSignal()
    ticks = driver(pool, stop=stop)
    ticks.schedule([PeriodicJob("poll", 10.0, lambda: ran.append(1))])
    ticks.fire_due()
    stop.set()
    assert pool.run_queued() == 1 and ran == []
    assert ticks.report()["poll"]["busy"] is False and ticks.wait_running(0) == 0


class Claims:
    """Tick claims shared by two drivers as by two processes; ``down`` makes the backend unreachable."""

    def __init__(self):
        self.claimed, self.down = [], False

    def claim(self, name, tick, ttl):
        if self.down:
            raise CoordinationError("backend down")
        if (name, tick) in self.claimed:
            return False
        self.claimed.append((name, tick))
        return True

    def close(self):
        pass


def test_with_a_gate_each_tick_runs_in_one_driver_and_the_others_are_told_why_not():
    claims, clock = Claims(), Clock(100.0)
    wall = lambda: clock.now + 1_000_000.0  # noqa: E731
    ran, told = [], []
    pools = [ManualPool(), ManualPool()]
    drivers = [driver(pool, clock, wall_clock=wall, gate=TickGate(claims, owned=False)) for pool in pools]
    for n, ticks in enumerate(drivers):
        ticks.schedule([PeriodicJob("orders", 10.0, lambda n=n: ran.append(n), on_unclaimed=told.append)])
    for ticks, pool in zip(drivers, pools):
        assert ticks.fire_due() == 10.0
        pool.run_queued()
    # Tick n falls when the wall clock reads n * interval: the same number in every process.
    assert ran == [0] and told == [True] and claims.claimed == [("orders", 100_010)]
    assert drivers[1].report()["orders"]["ticks_elsewhere"] == 1
    claims.down = True
    clock.now = 110.0
    drivers[0].fire_due()
    pools[0].run_queued()
    assert ran == [0] and told == [True, False] and drivers[0].report()["orders"]["ticks_unclaimed"] == 1


def test_a_wall_clock_step_places_a_coordinated_grid_again_so_ticks_keep_the_clusters_numbers(caplog):
    claims, clock, step = Claims(), Clock(100.0), [0.0]
    wall = lambda: clock.now + 1_000_000.0 + step[0]  # noqa: E731
    pool = ManualPool()
    ticks = driver(pool, clock, wall_clock=wall, gate=TickGate(claims, owned=False))
    ticks.schedule([PeriodicJob("orders", 10.0, lambda: None)])
    ticks.fire_due()
    pool.run_queued()
    step[0] = 100.0  # NTP moved the wall clock ten intervals ahead
    clock.now = 110.0
    with caplog.at_level(logging.WARNING, logger="syncworkers.scheduling.runner"):
        ticks.fire_due()
    pool.run_queued()
    assert "wall clock stepped by" in caplog.text
    assert claims.claimed == [("orders", 100_010), ("orders", 100_021)]  # not 100_011: the wall clock's number


@pytest.mark.parametrize("stagger, firsts", [(False, [0.0, 0.0, 0.0]), (True, [0.0, 10 / 3, 20 / 3])])
def test_stagger_spreads_the_first_ticks_of_jobs_scheduled_together(stagger, firsts):
    ticks = driver(stagger=stagger)
    ticks.schedule([PeriodicJob(name, 10.0, lambda: None) for name in "abc"])
    jobs = ticks.report()
    assert [jobs[name]["next_due"] for name in "abc"] == pytest.approx(firsts)
