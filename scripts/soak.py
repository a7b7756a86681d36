"""Soak: 200 pollers at 0.5 s plus ~500 webhooks/s (direct and outbox) for minutes; RSS, threads and fds each minute.

    python scripts/soak.py                        # 10 minutes over requests
    python scripts/soak.py --transport curl       # the same over libcurl
    python scripts/soak.py --trace                # + what was allocated after minute 2 and is still held
    python scripts/soak.py --pollers 0 --outbox-share 1   # one part alone (here: the outbox)
    python scripts/soak.py --quick                # 20 pollers, 50 webhooks/s, 5 periods of 1 s: the harness works

One Runner drives the pollers (staggered) and a WebhookSenderWorker's outbox loop
(a SQLite outbox in a temporary directory); pacing threads send part of the webhooks
directly (``send_webhook``, 8 threads) and enqueue the rest (``--outbox-share``,
half by default; 4 threads), each on a fixed-rate schedule. The receiver runs in a
process of its own (scripts/receivers.py: nginx when installed, else its
``selectors`` server), so only the client is measured.

Each period (a minute unless ``--period``) prints RSS, OS threads, open fds and the
work done in it, then where the memory is: glibc malloc's bytes in use and free (over
every arena) and SQLite's own heap; the rest of RSS is Python's object arenas, thread
stacks and code. The end prints the RSS slope after period 2 (least squares, MB per 5
periods, i.e. 5 minutes; target under 1) and, last, one JSON line with every figure.
With ``--trace``, tracemalloc starts at period 2 (slowing the load several times) and
the end lists the allocations made since then that are still held, by line and by
call path, and the object types whose count grew. SIGTERM ends a run like Ctrl-C.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import receivers  # noqa: E402
from bench_pollers import os_threads, rss_bytes  # noqa: E402
from syncworkers import (HTTPClientConfig, PollerWorker, Runner, WebhookConfig,  # noqa: E402
                         WebhookSenderWorker)

TARGET_SLOPE_MB = 1.0  # per 5 periods (5 minutes), after period 2
SETTLE_PERIODS = 2  # the first minutes fill pools, caches and the allocator: not counted in the slope
MAX_POOL = 64
SENDER_THREADS = 8  # direct send_webhook callers (an app's request threads)
ENQUEUE_THREADS = 4  # enqueue() callers
OUTBOX_WORKERS = 16
TOP = 15
TRACE_FRAMES = 10
DEFAULTS = {"minutes": 10, "period": 60.0, "pollers": 200, "interval": 0.5, "rate": 500.0}
QUICK = {"minutes": 5, "period": 1.0, "pollers": 20, "interval": 0.5, "rate": 50.0}


def open_fds() -> int:
    """File descriptors this process holds (Linux /proc)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _library(name: str, symbol: str, restype: Any) -> Optional[Callable[[], Any]]:
    try:
        function = getattr(ctypes.CDLL(name), symbol)
    except (OSError, AttributeError):
        return None
    function.restype = restype
    return function  # type: ignore[no-any-return]


_mallinfo2 = _library("libc.so.6", "mallinfo2", _MallInfo2)
_sqlite_memory_used = _library("libsqlite3.so.0", "sqlite3_memory_used", ctypes.c_int64)


def heap_mb() -> Tuple[float, float]:
    """glibc malloc's (in use, free) MB over every arena: what RSS holds beyond Python's own objects."""
    if _mallinfo2 is None:
        return float("nan"), float("nan")
    info = _mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


def sqlite_mb() -> float:
    """The SQLite library's heap (page caches, statements) for the whole process."""
    return float("nan") if _sqlite_memory_used is None else _sqlite_memory_used() / 2**20


class SoakPoller(PollerWorker):
    def process_message(self, message: Any) -> None:
        return None


class Pacer:
    """Call *action* *rate* times a second on a fixed-rate schedule from *threads* threads until *stop*.

    A caller that falls more than a second behind skips ahead (counted in ``missed``)
    rather than bursting to catch up.
    """

    def __init__(self, name: str, action: Callable[[int], bool], rate: float, threads: int,
                 stop: threading.Event) -> None:
        self.action = action
        self.stop = stop
        threads = threads if rate > 0 else 0
        self.step = threads / rate if rate > 0 else 0.0
        self.ok = self.failed = self.missed = 0
        self._lock = threading.Lock()
        self._seq = 0
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"syncworkers-soak-{name}-{i}")
                         for i in range(threads)]

    def start(self) -> "Pacer":
        for thread in self._threads:
            thread.start()
        return self

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def counts(self) -> Tuple[int, int, int]:
        with self._lock:
            return self.ok, self.failed, self.missed

    def _run(self, index: int) -> None:
        due = time.monotonic() + index * self.step / len(self._threads)
        while not self.stop.wait(max(0.0, due - time.monotonic())):
            with self._lock:
                self._seq += 1
                seq = self._seq
            try:
                ok = self.action(seq)
            except Exception:
                ok = False
            due += self.step
            now = time.monotonic()
            behind = int((now - due) / self.step) if now - due > 1.0 else 0
            due += behind * self.step
            with self._lock:
                self.ok += ok
                self.failed += not ok
                self.missed += behind


def payload(seq: int) -> Dict[str, Any]:
    """A small order event, different every time (as real ones are)."""
    return {"type": "order.created", "seq": seq, "at": time.time(),
            "data": {"id": seq, "customer": f"c_{seq % 977:04x}", "amount": seq % 1000 / 10.0,
                     "items": [{"sku": f"sku-{seq % 31}", "qty": 1 + seq % 3}]}}


def slope_per_5_periods(samples: List[Dict[str, Any]]) -> Optional[float]:
    """Least-squares RSS slope (MB per 5 periods: per 5 minutes by default) after the settling periods."""
    points = [(float(s["period"]), float(s["rss_mb"])) for s in samples if s["period"] >= SETTLE_PERIODS]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 5.0 if sxx else None


def type_counts() -> "Counter[str]":
    gc.collect()
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def run(minutes: int, period: float, pollers: int, interval: float, rate: float, outbox_share: float,
        transport: str, receiver_kind: str, trace: bool, echo: Callable[[str], None]) -> Dict[str, Any]:
    rss_start = rss_bytes()
    stop = threading.Event()
    samples: List[Dict[str, Any]] = []
    traced: Dict[str, Any] = {}
    http = HTTPClientConfig(transport=transport, max_connections=SENDER_THREADS + OUTBOX_WORKERS)
    with tempfile.TemporaryDirectory(prefix="syncworkers-soak-") as tmp, \
            receivers.fast_receiver(receiver_kind) as receiver:
        workers = [SoakPoller(f"{receiver.url}/poll/{i}", interval=interval, name=f"soak-poller-{i:04d}",
                              http_config=HTTPClientConfig(transport=transport)) for i in range(pollers)]
        sender = WebhookSenderWorker(receiver.url, WebhookConfig(
            outbox_path=os.path.join(tmp, "outbox.db"), max_workers=OUTBOX_WORKERS, max_retries=0,
            retry_schedule=(1.0, 5.0, 30.0)), http_config=http, name="soak-sender")
        runner = Runner([*workers, sender], max_workers=MAX_POOL, stagger=True, name="soak")
        direct = Pacer("direct", lambda seq: sender.send_webhook("/hooks/direct", payload(seq)),
                       rate * (1 - outbox_share), SENDER_THREADS, stop)
        queued = Pacer("enqueue", lambda seq: bool(sender.enqueue("/hooks/outbox", payload(seq))),
                       rate * outbox_share, ENQUEUE_THREADS, stop)
        echo(f"soak: {pollers} pollers every {interval:g} s + {rate:g} webhooks/s ({100 * outbox_share:.0f}% "
             f"through the outbox), "
             f"{minutes} x {period:g} s, transport {transport}\nreceiver (own process): {receiver.kind}\n")
        echo(f"{'period':>6} {'RSS MB':>8} {'threads':>7} {'fds':>5} {'polls/s':>8} {'direct/s':>8} "
             f"{'outbox/s':>8} {'pending':>7} {'errors':>6} | {'heap MB':>8} {'free MB':>8} {'sqlite MB':>9}")
        started = time.monotonic()
        runner.start()
        direct.start()
        queued.start()
        last = _totals(workers, sender, direct, queued)
        try:
            for n in range(1, minutes + 1):
                stop.wait(max(0.0, started + n * period - time.monotonic()))
                now = _totals(workers, sender, direct, queued)
                used, free = heap_mb()
                sample = {"period": n, "rss_mb": rss_bytes() / 2**20, "threads": os_threads(), "fds": open_fds(),
                          **{f"{k}_per_s": (now[k] - last[k]) / period for k in ("polls", "direct", "delivered")},
                          "pending": now["pending"], "errors": now["errors"] - last["errors"],
                          "heap_mb": used, "heap_free_mb": free, "sqlite_mb": sqlite_mb()}
                last = now
                samples.append(sample)
                echo(f"{n:>6} {sample['rss_mb']:>8.1f} {sample['threads']:>7} {sample['fds']:>5} "
                     f"{sample['polls_per_s']:>8.0f} {sample['direct_per_s']:>8.0f} "
                     f"{sample['delivered_per_s']:>8.0f} {sample['pending']:>7} {sample['errors']:>6} | "
                     f"{used:>8.1f} {free:>8.1f} {sample['sqlite_mb']:>9.1f}")
                if trace and n == SETTLE_PERIODS:  # from here on, what is allocated and kept is growth
                    traced["types"] = type_counts()
                    tracemalloc.start(TRACE_FRAMES)
        finally:
            stop.set()
            direct.join(30)
            queued.join(30)
            ended = runner.stop(timeout=30)
            if trace and "types" in traced:
                traced["growth"] = _growth(tracemalloc.take_snapshot())
                tracemalloc.stop()
                traced["type_growth"] = (type_counts() - traced["types"]).most_common(TOP)
            totals = _totals(workers, sender, direct, queued)
            for worker in [*workers, sender]:
                worker.close()
        server = receiver.kind
    slope = slope_per_5_periods(samples)
    result = {
        "transport": transport, "pollers": pollers, "interval_s": interval, "webhooks_per_s": rate,
        "outbox_share": outbox_share,
        "minutes": minutes, "period_s": period, "receiver": server, "traced": trace, "stopped_cleanly": ended,
        "rss_start_mb": rss_start / 2**20, "samples": samples,
        "slope_mb_per_5_periods": slope, "target_slope_mb": TARGET_SLOPE_MB,
        "polls": totals["polls"], "direct_sent": totals["direct"], "direct_failed": direct.failed,
        "enqueued": queued.ok, "enqueue_failed": queued.failed, "outbox_delivered": totals["delivered"],
        "outbox_dead": totals["dead"], "missed_sends": direct.missed + queued.missed,
        "poll_errors": totals["errors"], "threads_after_stop": os_threads(), "fds_after_stop": open_fds(),
    }
    if trace:
        result["tracemalloc_growth"] = traced.get("growth", [])
        result["type_growth"] = traced.get("type_growth", [])
    return result


def _totals(workers: List[SoakPoller], sender: WebhookSenderWorker, direct: Pacer,
            queued: Pacer) -> Dict[str, int]:
    polls = errors = 0
    for worker in workers:
        metrics = worker.health()["metrics"]
        polls += metrics["polls"]
        errors += metrics["errors"] + metrics["decode_errors"] + metrics["process_errors"]
    counts = sender.outbox.counts()
    ok, failed, _missed = direct.counts()
    return {"polls": polls, "errors": errors + failed, "direct": ok, "delivered": counts["delivered"],
            "dead": counts["dead"], "pending": counts["pending"]}


def _growth(kept: "tracemalloc.Snapshot") -> List[Dict[str, Any]]:
    """What was allocated after tracing started and is still held: by line, then by call path."""
    kept = kept.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    rows = []
    for group in ("lineno", "traceback"):
        for stat in kept.statistics(group)[:TOP]:
            frames = [f"{frame.filename.replace(ROOT + os.sep, '')}:{frame.lineno}"
                      for frame in reversed(stat.traceback[-8:])]  # oldest frame first in a Traceback
            rows.append({"by": group, "kb": stat.size / 1024.0, "blocks": stat.count, "where": frames})
    return rows


def report(r: Dict[str, Any]) -> str:
    slope = r["slope_mb_per_5_periods"]
    verdict = "n/a" if slope is None else ("PASS" if slope < r["target_slope_mb"] else "MISS")
    unit = "5 minutes" if r["period_s"] == 60.0 else f"5 periods of {r['period_s']:g} s"
    lines = [
        "",
        f"RSS slope after period {SETTLE_PERIODS}: "
        + ("n/a (too few periods)" if slope is None else f"{slope:+.2f} MB per {unit}")
        + f" (target under {r['target_slope_mb']:g}) {verdict}",
        f"polls {r['polls']}, direct webhooks {r['direct_sent']} (failed {r['direct_failed']}), "
        f"enqueued {r['enqueued']}, outbox delivered {r['outbox_delivered']} (dead {r['outbox_dead']}), "
        f"sends skipped for falling behind {r['missed_sends']}, poll errors {r['poll_errors']}",
        f"after stop: {r['threads_after_stop']} threads, {r['fds_after_stop']} fds"
        + ("" if r["stopped_cleanly"] else " (the Runner did not stop within 30 s)"),
    ]
    if r.get("tracemalloc_growth"):
        lines.append(f"\ntracemalloc: allocated after period {SETTLE_PERIODS} and still held at the end "
                     "(KB, blocks, where):")
        for row in r["tracemalloc_growth"]:
            lines.append(f"  {row['by']:>9} {row['kb']:>9.1f} KB {row['blocks']:>8} blocks  "
                         + " < ".join(row["where"]))
    if r.get("type_growth"):
        lines.append("gc: object types whose count grew: "
                     + ", ".join(f"{name} +{count}" for name, count in r["type_growth"]))
    return "\n".join(lines)


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the run like Ctrl-C: workers, receiver and files cleaned up


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=int, help=f"periods to run (default {DEFAULTS['minutes']})")
    parser.add_argument("--period", type=float, help="seconds per period (default 60)")
    parser.add_argument("--pollers", type=int, help=f"pollers (default {DEFAULTS['pollers']})")
    parser.add_argument("--interval", type=float, help=f"poll interval, s (default {DEFAULTS['interval']:g})")
    parser.add_argument("--rate", type=float, help=f"webhooks per second (default {DEFAULTS['rate']:g})")
    parser.add_argument("--outbox-share", type=float, default=0.5,
                        help="the part of --rate enqueued, the rest sent directly (default 0.5)")
    parser.add_argument("--transport", choices=("requests", "curl"), default="requests")
    parser.add_argument("--receiver", choices=("auto", "nginx", "python"), default="auto")
    parser.add_argument("--trace", action="store_true", help="tracemalloc and gc type counts, period 2 vs the end")
    parser.add_argument("--quick", action="store_true", help="20 pollers, 50 webhooks/s, 5 periods of 1 s")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    pick = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}
    if (pick["minutes"] < 1 or pick["period"] <= 0 or pick["pollers"] < 0 or pick["interval"] <= 0
            or pick["rate"] < 0 or not (pick["pollers"] or pick["rate"]) or not 0 <= args.outbox_share <= 1):
        parser.error("need --minutes >= 1, --period > 0, --interval > 0, 0 <= --outbox-share <= 1, "
                     "and --pollers or --rate above 0")
    signal.signal(signal.SIGTERM, _interrupted)
    result = run(int(pick["minutes"]), float(pick["period"]), int(pick["pollers"]), float(pick["interval"]),
                 float(pick["rate"]), args.outbox_share, args.transport, args.receiver, args.trace,
                 lambda line: print(line, flush=True))
    print(report(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
