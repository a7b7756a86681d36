"""Thread-safe in-process metrics: counters and latency summaries, counted without locks.

Workers count into a :class:`Metrics`; ``snapshot()`` gives a plain dict for
health endpoints, logs, or an exporter of the application's choice.
"""

from __future__ import annotations

import threading
from array import array
from typing import Any, Dict, Iterable, List, Optional

#: Latencies kept per series for percentiles (a sliding window, bounded memory).
LATENCY_WINDOW = 1024


class _Window:
    """The last LATENCY_WINDOW values of a series, in a ring of doubles shared by its threads.

    The ring is allocated whole at the first value (8 KB), not grown: a deque of float
    objects costs 4x that and fills over LATENCY_WINDOW observations, which at one poll a
    second is a quarter of an hour of steady RSS growth per poller. Writers take no lock:
    two threads that meet may write one slot, which costs the percentiles one sample of a
    window, never a count.
    """

    __slots__ = ("values", "written")

    def __init__(self) -> None:
        self.values = array("d", bytes(8 * LATENCY_WINDOW))
        self.written = 0

    def add(self, value: float) -> None:
        written = self.written
        self.written = written + 1
        self.values[written % LATENCY_WINDOW] = value

    def ordered(self) -> List[float]:
        return sorted(self.values[:min(self.written, LATENCY_WINDOW)])


class _Summary:
    """One thread's share of a latency series; the window of recent values is shared by all."""

    __slots__ = ("count", "total", "max", "window")

    def __init__(self, window: _Window) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.window = window

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value
        self.window.add(value)


def _summary(parts: List[_Summary]) -> Dict[str, float]:
    count = sum(p.count for p in parts)
    total = sum(p.total for p in parts)
    ordered = parts[0].window.ordered() if parts else []
    return {
        "count": count,
        "avg": total / count if count else 0.0,
        "max": max((p.max for p in parts), default=0.0),
        "p50": percentile(ordered, 50),
        "p99": percentile(ordered, 99),
    }


def percentile(ordered: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when empty)."""
    values = list(ordered)
    if not values:
        return 0.0
    rank = max(1, int(round(pct / 100.0 * len(values) + 0.4999)))
    return values[min(rank, len(values)) - 1]


class _Shard:
    """The counts and summaries of one thread: only that thread writes them."""

    __slots__ = ("thread", "counters", "summaries")

    def __init__(self) -> None:
        self.thread = threading.current_thread()
        self.counters: Dict[str, float] = {}
        self.summaries: Dict[str, _Summary] = {}


class Metrics:
    """Counters (``incr``) and latency summaries (``observe``), safe from any thread.

    Counting takes no lock: each thread counts into a shard of its own, and readers
    add the shards up (the shards of threads that ended are folded in once).
    """

    def __init__(self, **labels: str) -> None:
        self.labels = dict(labels)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._shards: List[_Shard] = []
        self._ended = _Shard()  # what threads that ended counted
        self._windows: Dict[str, _Window] = {}

    def _shard(self) -> _Shard:
        try:
            shard: _Shard = self._local.shard
            return shard
        except AttributeError:
            shard = _Shard()
            with self._lock:
                self._fold_ended()
                self._shards.append(shard)
            self._local.shard = shard
            return shard

    def _fold_ended(self) -> None:
        """Fold the shards of threads that ended into a new ``_ended`` (under the lock; a reader holding
        the old ones still adds up right)."""
        ended = [shard for shard in self._shards if not shard.thread.is_alive()]
        if not ended:
            return
        folded = _Shard()
        folded.counters = dict(self._ended.counters)
        for name, part in self._ended.summaries.items():
            copy = folded.summaries[name] = _Summary(part.window)
            copy.count, copy.total, copy.max = part.count, part.total, part.max
        for shard in ended:
            for name, value in shard.counters.items():
                folded.counters[name] = folded.counters.get(name, 0) + value
            for name, part in shard.summaries.items():
                into = folded.summaries.get(name)
                if into is None:
                    into = folded.summaries[name] = _Summary(part.window)
                into.count += part.count
                into.total += part.total
                into.max = max(into.max, part.max)
        self._ended = folded
        self._shards = [shard for shard in self._shards if shard not in ended]

    def incr(self, name: str, value: float = 1) -> None:
        counters = self._shard().counters
        counters[name] = counters.get(name, 0) + value

    def observe(self, name: str, value: float) -> None:
        summaries = self._shard().summaries
        part = summaries.get(name)
        if part is None:
            with self._lock:
                window = self._windows.get(name)
                if window is None:
                    window = self._windows[name] = _Window()
            part = summaries[name] = _Summary(window)
        part.add(value)

    def _all(self) -> List[_Shard]:
        with self._lock:
            return [self._ended] + list(self._shards)

    def get(self, name: str, default: float = 0) -> float:
        found = [shard.counters[name] for shard in self._all() if name in shard.counters]
        return sum(found) if found else default

    def __getitem__(self, name: str) -> float:
        return self.get(name)

    def summary(self, name: str) -> Optional[Dict[str, float]]:
        parts = [shard.summaries[name] for shard in self._all() if name in shard.summaries]
        return _summary(parts) if parts else None

    def counters(self) -> Dict[str, float]:
        """Every counter by name."""
        total: Dict[str, float] = {}
        for shard in self._all():
            for name, value in dict(shard.counters).items():  # a copy: the owner may add a name meanwhile
                total[name] = total.get(name, 0) + value
        return total

    def summaries(self) -> Dict[str, Dict[str, float]]:
        """Every latency summary by name (the name carries the unit: ``_ms``, ``_seconds``)."""
        parts: Dict[str, List[_Summary]] = {}
        for shard in self._all():
            for name, part in dict(shard.summaries).items():
                parts.setdefault(name, []).append(part)
        return {name: _summary(found) for name, found in parts.items()}

    def snapshot(self) -> Dict[str, Any]:
        """Every counter, and every summary as {count, avg, max, p50, p99}."""
        data: Dict[str, Any] = self.counters()
        data.update(self.summaries())
        return data

    def __repr__(self) -> str:
        return f"Metrics({self.snapshot()!r})"


__all__ = ["Metrics", "percentile", "LATENCY_WINDOW"]
