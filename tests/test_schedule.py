"""The pure schedule math: fixed-rate grid, coalescing, jitter, stagger, the epoch grid."""

import math
import os
import random
import subprocess
import sys

import pytest

from syncworkers.scheduling.schedule import Schedule, check_interval, check_jitter, name_offset, stagger_offsets

pytestmark = pytest.mark.transport_independent


def test_schedule_fires_on_a_fixed_rate_grid():
    s = Schedule(10.0, start=100.0)
    assert s.next_due == 100.0
    assert s.due(100.0) == (True, 0)
    assert s.next_due == 110.0
    assert s.due(109.999) == (False, 0)
    assert s.due(110.0) == (True, 0)
    assert s.due(123.0) == (True, 0)  # late by 3 s: fires, but the grid does not move
    assert s.next_due == 130.0


def test_schedule_does_not_drift_when_work_takes_most_of_an_interval():
    s = Schedule(10.0, start=0.0)
    now, fired_at = 0.0, []
    for _ in range(100):
        now = max(now, s.next_due) + 0.3  # the timer wakes a little late...
        fire, skipped = s.due(now)
        assert (fire, skipped) == (True, 0)
        fired_at.append(now)
        now += 7.0  # ...and the work takes 0.7 of an interval
    assert fired_at == [n * 10.0 + 0.3 for n in range(100)]
    assert s.next_due == 1000.0  # a fixed-delay loop would be at 100 * 17.3


def test_schedule_skips_and_counts_ticks_due_while_busy():
    s = Schedule(1.0, start=0.0)
    assert s.due(0.0) == (True, 0)
    assert s.due(1.0, busy=True) == (False, 1)
    assert s.due(2.0, busy=True) == (False, 1)
    assert s.due(4.5, busy=True) == (False, 2)  # grid points 3 and 4
    assert s.next_due == 5.0
    assert s.due(5.0) == (True, 0)


def test_schedule_coalesces_missed_ticks_after_a_long_gap():
    s = Schedule(10.0, start=0.0)
    assert s.due(0.0) == (True, 0)
    # Suspended from t=0 to t=55.5: ticks 10..50 were missed; one run, four skipped.
    assert s.due(55.5) == (True, 4)
    assert s.next_due == 60.0
    assert s.due(60.0) == (True, 0)


def test_stagger_offsets_spread_first_ticks_over_the_interval():
    assert stagger_offsets([8.0] * 4) == [0.0, 2.0, 4.0, 6.0]
    assert stagger_offsets([10.0, 60.0]) == [0.0, 30.0]
    assert stagger_offsets([]) == []
    schedules = [Schedule(8.0, start=100.0, offset=o) for o in stagger_offsets([8.0] * 4)]
    assert [s.next_due for s in schedules] == [100.0, 102.0, 104.0, 106.0]
    fired = [s.due(102.0)[0] for s in schedules]
    assert fired == [True, True, False, False]
    assert [s.next_due for s in schedules] == [108.0, 110.0, 104.0, 106.0]


def test_jitter_is_bounded_per_tick_and_does_not_accumulate():
    s = Schedule(10.0, start=0.0, jitter=2.0, rand=random.Random(42).random)
    expected = random.Random(42)
    delays = []
    for n in range(1000):
        due_at = s.next_due
        assert due_at == n * 10.0 + 2.0 * expected.random()
        assert n * 10.0 <= due_at < n * 10.0 + 2.0
        assert s.due(due_at - 1e-9) == (False, 0)
        assert s.due(due_at) == (True, 0)
        delays.append(due_at - n * 10.0)
    assert 10000.0 <= s.next_due < 10002.0  # still on the grid after 1000 jittered ticks
    assert len(set(delays)) > 900 and max(delays) > 1.5 and min(delays) < 0.5


def test_a_late_jittered_tick_still_coalesces():
    s = Schedule(10.0, start=0.0, jitter=5.0, rand=lambda: 0.5)
    assert s.due(2.4) == (False, 0)
    assert s.due(2.5) == (True, 0)
    assert s.due(25.0) == (True, 1)  # grid points 10 and 20 passed: one fires, one skipped
    assert s.next_due == 32.5




# -- the epoch-anchored grid --------------------------------------------------


def test_epoch_grid_puts_tick_n_at_n_intervals_of_unix_time():
    # Monotonic 500.0 is Unix time 1_700_000_003.25: the next 10 s grid point is 1_700_000_010.
    s = Schedule.on_epoch_grid(10.0, now=500.0, wall_now=1_700_000_003.25)
    assert s.index == 170_000_001
    assert s.next_due == pytest.approx(506.75)
    assert s.due(506.7) == (False, 0)
    assert s.due(506.75) == (True, 0)
    assert s.tick == 170_000_001
    assert s.due(529.0) == (True, 1)  # 170_000_002 skipped, 170_000_003 fired
    assert s.tick == 170_000_003


def test_processes_started_apart_agree_on_each_tick_number():
    """Two processes whose monotonic clocks differ compute the same tick for the same wall time."""
    a = Schedule.on_epoch_grid(1.0, now=10.0, wall_now=1_000.4)
    b = Schedule.on_epoch_grid(1.0, now=90_000.0, wall_now=1_002.9)  # started 2.5 s later
    fired_a, fired_b = {}, {}
    for step in range(1, 80):  # every 0.1 s of wall time, from 1_000.5 to 1_008.4
        wall = 1_000.4 + step * 0.1
        if a.due(10.0 + (wall - 1_000.4))[0]:
            fired_a[a.tick] = wall
        if wall >= 1_002.9 and b.due(90_000.0 + (wall - 1_002.9))[0]:
            fired_b[b.tick] = wall
    assert sorted(fired_a) == list(range(1_001, 1_009))
    assert sorted(fired_b) == list(range(1_003, 1_009))  # b's first tick is the next grid point
    for tick, wall in fired_b.items():
        assert fired_a[tick] == pytest.approx(wall)  # same tick, same moment
        assert tick <= wall < tick + 0.11


def test_epoch_grid_on_a_grid_point_fires_that_tick_first():
    s = Schedule.on_epoch_grid(5.0, now=0.0, wall_now=1_000.0)
    assert s.next_due == pytest.approx(0.0)
    assert s.due(0.0) == (True, 0) and s.tick == 200


def test_epoch_grid_with_an_offset_and_jitter_keeps_the_tick_numbers():
    s = Schedule.on_epoch_grid(10.0, now=0.0, wall_now=1_000.0, offset=3.0, jitter=2.0, rand=lambda: 0.5)
    assert s.index == 100  # 100 * 10 + 3 = 1003 is the first grid point at or after 1000
    assert s.next_due == pytest.approx(4.0)  # 3 s to the grid point, 1 s of jitter
    assert s.due(4.0) == (True, 0) and s.tick == 100
    assert s.next_due == pytest.approx(14.0)


#: name_offset("payments", 60.0): the first 8 bytes of SHA-256("payments") as a fraction of 60 s.
PAYMENTS_OFFSET = 52.31716243763736


def test_name_offsets_are_stable_spread_and_inside_the_interval():
    # A fixed value: the same in every process and every Python version (no salted hash()).
    assert name_offset("payments", 60.0) == pytest.approx(name_offset("payments", 1.0) * 60.0)
    assert name_offset("payments", 60.0) == pytest.approx(PAYMENTS_OFFSET)
    offsets = [name_offset(f"poller-{n}", 10.0) for n in range(200)]
    assert all(0.0 <= o < 10.0 for o in offsets)
    assert len({round(o, 6) for o in offsets}) == 200
    assert sum(o < 5.0 for o in offsets) in range(70, 131)  # spread, not bunched


def test_name_offset_is_the_same_in_another_process():
    code = "from syncworkers.scheduling.schedule import name_offset; print(repr(name_offset('orders GET', 30.0)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONHASHSEED": "123"}, check=True)
    assert float(out.stdout) == name_offset("orders GET", 30.0)


# -- the interval and jitter rules ---------------------------------------------


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, True, "5", None, 7 * 86400 + 1])
def test_check_interval_rejects_what_is_not_a_positive_number_up_to_a_week(value):
    with pytest.raises(ValueError, match="interval must be "):
        check_interval(value)


@pytest.mark.parametrize("value", [-0.1, 10.0, 11, math.nan, "1"])
def test_check_jitter_wants_a_delay_inside_the_interval(value):
    with pytest.raises(ValueError, match=r"jitter must be >= 0 and smaller than interval \(10.0\)"):
        check_jitter(value, 10.0)


def test_good_interval_and_jitter_pass():
    check_interval(0.001)
    check_jitter(0, 10.0)
    check_jitter(9.99, 10.0)
