import threading
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest

from syncworkers import Message, Metrics
from syncworkers.observability.metrics import LATENCY_WINDOW, percentile

pytestmark = pytest.mark.transport_independent


def test_message_defaults_are_a_fresh_id_and_an_aware_utc_timestamp():
    a, b = Message(body={"x": 1}), Message(body={"x": 1})
    assert a.id != b.id and a.id.startswith("msg_")
    assert a.timestamp.tzinfo is not None and a.timestamp.utcoffset() == timedelta(0)
    assert a.headers == {}


def test_message_timestamps_are_normalised_to_utc():
    naive = Message(timestamp=datetime(2026, 1, 2, 3, 4, 5))
    assert naive.timestamp == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    plus_two = Message(timestamp=datetime(2026, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2))))
    assert plus_two.timestamp == datetime(2026, 1, 2, 3, 0, tzinfo=timezone.utc)


def test_message_round_trips_through_dict():
    m = Message(body=[1, "two"], headers={"status_code": 200}, id="msg_fixed")
    again = Message.from_dict(m.to_dict())
    assert (again.id, again.body, again.headers, again.timestamp) == (m.id, m.body, m.headers, m.timestamp)


def test_metrics_counters_are_exact_under_threads():
    metrics = Metrics(worker="w")

    def bump():
        for _ in range(10_000):
            metrics.incr("polls")

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert metrics["polls"] == 80_000
    assert metrics.get("never") == 0


def test_metrics_summaries_and_percentiles():
    metrics = Metrics()
    for value in range(1, 101):
        metrics.observe("latency", float(value))
    summary = metrics.summary("latency")
    assert summary == {"count": 100, "avg": 50.5, "max": 100.0, "p50": 50.0, "p99": 99.0}
    assert metrics.snapshot()["latency"]["count"] == 100
    assert metrics.summary("other") is None
    assert percentile([], 99) == 0.0
    assert percentile([3.0], 50) == 3.0


def test_metrics_keep_what_threads_that_ended_counted():
    metrics = Metrics()

    def count(n):
        for _ in range(n):
            metrics.incr("sent")
            metrics.observe("latency_ms", float(n))

    for n in (3, 5):  # each thread ends before the next starts: its shard is folded in
        t = threading.Thread(target=count, args=(n,))
        t.start()
        t.join()
    count(2)  # and this thread's own
    assert metrics["sent"] == 10
    assert metrics.counters() == {"sent": 10}
    summary = metrics.summary("latency_ms")
    assert (summary["count"], summary["max"], summary["avg"]) == (10, 5.0, (9 + 25 + 4) / 10)


def test_a_latency_summary_holds_its_memory_from_the_first_value_and_percentiles_cover_the_last_window():
    # A poller observes one latency per poll: memory that grew with each one until the window
    # was full was a quarter of an hour of steady RSS growth per poller at one poll a second.
    metrics = Metrics()
    tracemalloc.start()
    try:
        metrics.observe("latency_ms", 0.0)
        first = tracemalloc.get_traced_memory()[0]
        for value in range(1, 3 * LATENCY_WINDOW):
            metrics.observe("latency_ms", float(value))
        grown = tracemalloc.get_traced_memory()[0] - first
    finally:
        tracemalloc.stop()
    assert grown < 1024, f"{grown} bytes more after {3 * LATENCY_WINDOW} values"
    summary = metrics.summary("latency_ms")
    last = [float(v) for v in range(2 * LATENCY_WINDOW, 3 * LATENCY_WINDOW)]
    assert summary == {"count": 3 * LATENCY_WINDOW, "avg": (3 * LATENCY_WINDOW - 1) / 2,
                       "max": 3 * LATENCY_WINDOW - 1.0, "p50": percentile(last, 50), "p99": percentile(last, 99)}
