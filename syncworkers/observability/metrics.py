"""Thread-safe in-process metrics: counters and latency summaries.

Workers count into a :class:`Metrics`; ``snapshot()`` gives a plain dict for
health endpoints, logs, or an exporter of the application's choice.
"""

from __future__ import annotations

import threading
from array import array
from typing import Any, Dict, Iterable, Optional

#: Latencies kept per series for percentiles (a sliding window, bounded memory).
LATENCY_WINDOW = 1024


class _Summary:
    """Count, total, max, and the last LATENCY_WINDOW values in a ring of doubles.

    The ring is allocated whole at the first value (8 KB), not grown: a deque of
    float objects costs 4x that and fills over LATENCY_WINDOW observations, which at
    one poll a second is a quarter of an hour of steady RSS growth per poller.
    """

    __slots__ = ("count", "total", "max", "window")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.window = array("d", bytes(8 * LATENCY_WINDOW))

    def add(self, value: float) -> None:
        self.window[self.count % LATENCY_WINDOW] = value
        self.count += 1
        self.total += value
        self.max = max(self.max, value)

    def as_dict(self) -> Dict[str, float]:
        ordered = sorted(self.window[:min(self.count, LATENCY_WINDOW)])
        return {
            "count": self.count,
            "avg": self.total / self.count if self.count else 0.0,
            "max": self.max,
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


class Metrics:
    """Counters (``incr``) and latency summaries (``observe``), safe from any thread."""

    def __init__(self, **labels: str) -> None:
        self.labels = dict(labels)
        self._lock = threading.Lock()
        self._counters: Dict[str, float] = {}
        self._summaries: Dict[str, _Summary] = {}

    def incr(self, name: str, value: float = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + value

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            summary = self._summaries.get(name)
            if summary is None:
                summary = self._summaries[name] = _Summary()
            summary.add(value)

    def get(self, name: str, default: float = 0) -> float:
        with self._lock:
            return self._counters.get(name, default)

    def __getitem__(self, name: str) -> float:
        return self.get(name)

    def summary(self, name: str) -> Optional[Dict[str, float]]:
        with self._lock:
            summary = self._summaries.get(name)
            return summary.as_dict() if summary else None

    def counters(self) -> Dict[str, float]:
        """Every counter by name."""
        with self._lock:
            return dict(self._counters)

    def summaries(self) -> Dict[str, Dict[str, float]]:
        """Every latency summary by name (the name carries the unit: ``_ms``, ``_seconds``)."""
        with self._lock:
            return {name: s.as_dict() for name, s in self._summaries.items()}

    def snapshot(self) -> Dict[str, Any]:
        """Every counter, and every summary as {count, avg, max, p50, p99}."""
        with self._lock:
            data: Dict[str, Any] = dict(self._counters)
            data.update({name: s.as_dict() for name, s in self._summaries.items()})
        return data

    def __repr__(self) -> str:
        return f"Metrics({self.snapshot()!r})"


__all__ = ["Metrics", "percentile", "LATENCY_WINDOW"]
