"""Benchmark: many PollerWorkers on one Runner, measured against their own fixed-rate schedules.

    python scripts/bench_pollers.py                    # 1,000 pollers, 5 s, 10 ticks (~1 minute)
    python scripts/bench_pollers.py --interval 1       # the same load at 1,000 requests/s
    python scripts/bench_pollers.py --quick            # 50 pollers, 0.5 s, 3 ticks: the harness works
    python scripts/bench_pollers.py --profile          # + a cProfile of the pool and timer threads
    python scripts/bench_pollers.py --gc-freeze        # gc.freeze() once the pollers are built
    python scripts/bench_pollers.py --interval 1 --runs 5 --baseline /path/to/other/checkout
                                                       # 5 runs each, interleaved, and the CPU ratio

The pollers are staggered (``Runner(stagger=True)``) on one Runner with at most
64 pool threads. Tick n of poller i is due at ``A + i/N*interval + n*interval``,
where A is the Runner's start on the monotonic clock (read back from
``runner.stats``); each tick's start is recorded when the pool thread enters it,
so lateness covers the timer's wake-up, the hand-over to the pool and waiting
for a free thread. Drift after K ticks is the lateness of tick K against that
same grid: a fixed-delay loop (sleep after each poll) would be K poll times
late, a fixed-rate one no later than any single tick. The receiver runs in a
process of its own (scripts/receivers.py: nginx when installed, else its
single-threaded ``selectors`` server), so its CPU does not count against the pollers.

Client CPU is counted twice: over the whole run (start, every tick, stop) and
over the steady ticks alone (from tick 1 of the first poller to the end: no
connection set-up, no first use of anything), which is what a long-running
process pays per poll.

Prints a table with the targets (p99 lateness < 20 ms, drift < 20 ms, RSS < 100 MB)
and, last, one JSON line with every figure (scripts/bench.py reads it).

With ``--runs N`` or ``--baseline TREE`` each run is a process of its own, and with a
baseline (another checkout of syncworkers, e.g. ``git worktree add /tmp/base <commit>``)
the runs of the two trees alternate, so that both see the same machine: it prints each
tree's median CPU per poll with its range and the ratio of the medians (and the range
of the ratios of runs side by side). The machine's other load moves both alike.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: The checkout whose syncworkers a run measures (set for the runs of a --baseline tree).
TREE_ENV = "BENCH_POLLERS_TREE"
TREE = os.path.abspath(os.environ.get(TREE_ENV) or ROOT)
for _path in (HERE, TREE):
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)

import receivers  # noqa: E402
from syncworkers import PollerWorker, Runner  # noqa: E402
from syncworkers.observability.metrics import percentile  # noqa: E402
from syncworkers.scheduling.runner import stagger_offsets  # noqa: E402

TARGET_LATENESS_MS = 20.0
TARGET_DRIFT_MS = 20.0
TARGET_RSS_MB = 100.0
MAX_POOL = 64
SAMPLE_EVERY = 0.1
DEFAULTS = {"pollers": 1000, "interval": 5.0, "ticks": 10}
QUICK = {"pollers": 50, "interval": 0.5, "ticks": 3}


class _Profiles:
    """One cProfile.Profile per thread (cProfile only sees the thread that enabled it)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: List[cProfile.Profile] = []
        self._lock = threading.Lock()

    def get(self) -> cProfile.Profile:
        profile = getattr(self._local, "profile", None)
        if profile is None:
            profile = self._local.profile = cProfile.Profile()
            with self._lock:
                self._all.append(profile)
        return profile

    def report(self, limit: int = 30) -> str:
        out = io.StringIO()
        with self._lock:
            profiles = list(self._all)
        if not profiles:
            return "(no profile)"
        stats = pstats.Stats(profiles[0], stream=out)
        for profile in profiles[1:]:
            stats.add(profile)
        stats.sort_stats("tottime").print_stats(limit)
        return out.getvalue()


class BenchPoller(PollerWorker):
    """A poller that records when each of its ticks starts."""

    profiles: Optional[_Profiles] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.starts: List[float] = []

    def process_message(self, message: Any) -> None:
        return None

    def _tick(self) -> None:
        self.starts.append(time.monotonic())
        if self.profiles is None:
            super()._tick()
            return
        profile = self.profiles.get()
        profile.enable()
        try:
            super()._tick()
        finally:
            profile.disable()


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def os_threads() -> int:
    """Threads of this process as the OS counts them (Linux /proc; elsewhere Python's)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return threading.active_count()


class Sampler:
    """Peak thread count of this process, sampled on a thread of its own."""

    def __init__(self) -> None:
        self.max_threads = 0
        self.max_py_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="syncworkers-bench-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.sample()

    def sample(self) -> None:
        self.max_threads = max(self.max_threads, os_threads())
        self.max_py_threads = max(self.max_py_threads, threading.active_count())

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


def _anchor(runner: Runner, names: List[str], offsets: List[float]) -> float:
    """The Runner's grid origin A, from a job that has not fired yet: next_due = A + offset."""
    jobs = runner.stats["jobs"]
    for name, offset in sorted(zip(names, offsets), key=lambda item: -item[1]):
        job = jobs[name]
        if job["fired"] == 0:
            return job["next_due"] - offset
    raise RuntimeError("every job fired before the schedule could be read; use more pollers")


class GCWatch:
    """Pauses of the garbage collector, per generation, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.pauses: Dict[int, List[float]] = {0: [], 1: [], 2: []}
        self._began = 0.0

    def _callback(self, phase: str, info: Dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses[info["generation"]].append((time.perf_counter() - self._began) * 1000.0)

    def __enter__(self) -> "GCWatch":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: Any) -> None:
        gc.callbacks.remove(self._callback)


def run(pollers: int, interval: float, ticks: int, max_workers: int, profile: bool,
        gc_freeze: bool) -> Dict[str, Any]:
    rss_before = rss_bytes()
    profiles = _Profiles() if profile else None
    with receivers.fast_receiver() as receiver, Sampler() as sampler:
        workers = [BenchPoller(f"{receiver.url}/poll/{i}", interval=interval, name=f"poller-{i:05d}")
                   for i in range(pollers)]
        for worker in workers:
            worker.profiles = profiles
        rss_built = rss_bytes()
        offsets = stagger_offsets([interval] * pollers)
        runner = Runner(workers, max_workers=max_workers, stagger=True, name="bench")
        if profiles is not None:
            _profile_timer(runner, profiles)
        if gc_freeze:
            gc.freeze()  # the long-lived workers leave the collector's generations
        cpu_before = os.times()
        with GCWatch() as gc_watch:
            runner.start()
            try:
                anchor = _anchor(runner, [w.name for w in workers], offsets)
                # Tick `ticks` of the last poller is due at A + offset + ticks*interval; one interval of grace.
                deadline = anchor + offsets[-1] + (ticks + 1) * interval
                # The steady ticks: from tick 1 of the first poller, once every first tick went by.
                steady_from = anchor + interval
                time.sleep(max(0.0, steady_from - time.monotonic()))
                cpu_steady, steady_from = os.times(), time.monotonic()
                while time.monotonic() < deadline and not all(len(w.starts) > ticks for w in workers):
                    time.sleep(0.05)
                cpu_end, steady_to = os.times(), time.monotonic()
            finally:
                ended = runner.stop(timeout=30)
        wall = time.monotonic() - anchor
        cpu = os.times()
        skipped = runner.stats["skipped"]
        server = receiver.kind
        for worker in workers:
            worker.client.close()
    if gc_freeze:
        gc.unfreeze()
    cpu_s = (cpu.user - cpu_before.user) + (cpu.system - cpu_before.system)
    steady_cpu_s = (cpu_end.user - cpu_steady.user) + (cpu_end.system - cpu_steady.system)
    steady_polls = sum(steady_from <= start <= steady_to for w in workers for start in w.starts)

    by_tick: Dict[int, List[float]] = {}
    for worker, offset in zip(workers, offsets):
        origin = anchor + offset
        for start in worker.starts[:ticks + 1]:  # the first pollers may have started one more
            n = math.floor((start - origin) / interval + 1e-9)
            by_tick.setdefault(n, []).append((start - (origin + n * interval)) * 1000.0)
    everything = sorted(v for values in by_tick.values() for v in values)
    steady = sorted(v for n, values in by_tick.items() if n > 0 for v in values)
    metrics = [w._stats.snapshot() for w in workers]
    latencies = sorted(m["poll_latency_ms"]["p50"] for m in metrics if "poll_latency_ms" in m)
    result = {
        "pollers": pollers, "interval_s": interval, "ticks": ticks, "max_workers": max_workers,
        "server": server, "gc_freeze": gc_freeze, "stopped_cleanly": ended,
        "ticks_run": len(everything), "ticks_expected": pollers * (ticks + 1), "skipped_ticks": skipped,
        "lateness_ms": _summary(everything),
        "first_tick_lateness_ms": _summary(sorted(by_tick.get(0, []))),
        "steady_lateness_ms": _summary(steady),
        "drift_ms": _summary(sorted(by_tick.get(ticks, []))),
        "gc_gen2_collections": len(gc_watch.pauses[2]),
        "gc_max_pause_ms": max((p for ps in gc_watch.pauses.values() for p in ps), default=0.0),
        "poll_latency_ms_p50": percentile(latencies, 50),
        "errors": sum(m["errors"] for m in metrics),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_before_mb": rss_before / 2**20,
        "rss_per_poller_kb": (rss_built - rss_before) / 1024.0 / pollers,
        "max_threads": sampler.max_threads,
        "max_python_threads": sampler.max_py_threads,
        "cpu_s": cpu_s,
        "cpu_per_poll_ms": cpu_s * 1000.0 / max(1, len(everything)),
        "cpu_share": cpu_s / wall,
        "steady_polls": steady_polls,
        "steady_cpu_per_poll_ms": steady_cpu_s * 1000.0 / max(1, steady_polls),
        "steady_cpu_share": steady_cpu_s / max(1e-9, steady_to - steady_from),
    }
    if profiles is not None:
        result["profile"] = profiles.report()
    return result


def _profile_timer(runner: Runner, profiles: _Profiles) -> None:
    """Profile the Runner's timer thread too: start() builds its tick driver, so wrap the driver's loop."""
    from syncworkers.scheduling.ticks import TickDriver

    loop = TickDriver._timer_loop

    def profiled(driver: TickDriver) -> None:
        profile = profiles.get()
        profile.enable()
        try:
            loop(driver)
        finally:
            profile.disable()

    TickDriver._timer_loop = profiled  # type: ignore[method-assign]


def _summary(values: List[float]) -> Dict[str, float]:
    if not values:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99), "max": values[-1]}


def report(r: Dict[str, Any]) -> str:
    def verdict(value: float, target: float) -> str:
        return "PASS" if value < target else "MISS"

    def spread(summary: Dict[str, float]) -> str:
        return f"{summary['p50']:.2f} / {summary['p99']:.2f} / {summary['max']:.2f} ms"

    late, drift = r["lateness_ms"], r["drift_ms"]
    rows = [
        ("lateness p50 / p99 / max", spread(late), f"p99 < {TARGET_LATENESS_MS:g} ms",
         verdict(late["p99"], TARGET_LATENESS_MS)),
        ("  first tick (startup)", spread(r["first_tick_lateness_ms"]), "", ""),
        ("  later ticks", spread(r["steady_lateness_ms"]), "", ""),
        (f"drift: tick {r['ticks']} vs its grid point", spread(drift), f"p99 < {TARGET_DRIFT_MS:g} ms",
         verdict(drift["p99"], TARGET_DRIFT_MS)),
        ("peak RSS", f"{r['peak_rss_mb']:.1f} MB", f"< {TARGET_RSS_MB:g} MB",
         verdict(r["peak_rss_mb"], TARGET_RSS_MB)),
        ("  before the pollers / per poller", f"{r['rss_before_mb']:.1f} MB / {r['rss_per_poller_kb']:.1f} KB",
         "", ""),
        ("max threads (OS / Python)", f"{r['max_threads']} / {r['max_python_threads']}",
         f"pool <= {r['max_workers']}", ""),
        ("ticks run / expected", f"{r['ticks_run']} / {r['ticks_expected']}", "", ""),
        ("ticks skipped (still busy)", str(r["skipped_ticks"]), "", ""),
        ("poll errors", str(r["errors"]), "", ""),
        ("poll latency p50", f"{r['poll_latency_ms_p50']:.2f} ms", "", ""),
        ("client CPU", f"{r['cpu_per_poll_ms']:.3f} ms per poll, {100 * r['cpu_share']:.0f}% of a core", "", ""),
        ("  steady ticks (after the first)", f"{r['steady_cpu_per_poll_ms']:.3f} ms per poll, "
         f"{100 * r['steady_cpu_share']:.0f}% of a core", "", ""),
        ("GC: gen-2 runs / longest pause", f"{r['gc_gen2_collections']} / {r['gc_max_pause_ms']:.1f} ms"
         + (" (gc.freeze)" if r["gc_freeze"] else ""), "", ""),
    ]
    width = max(len(row[0]) for row in rows)
    head = (f"{r['pollers']} pollers, interval {r['interval_s']:g} s, {r['ticks']} ticks after the first, "
            f"max_workers {r['max_workers']}, staggered\nreceiver (own process): {r['server']}")
    lines = [head, ""] + [f"{a:<{width}}  {b:<30} {c:<16} {d}".rstrip() for a, b, c, d in rows]
    return "\n".join(lines)


def commit_of(tree: str) -> str:
    """The short commit a checkout is at (with ``+`` when it has changes), or its path if git cannot say."""
    try:
        head = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return tree
    return head + ("+" if dirty else "")


def run_in_process(tree: str, flags: List[str], timeout: float) -> Dict[str, Any]:
    """One run of this script on *tree*'s syncworkers, in a process of its own; its JSON line."""
    env = dict(os.environ, **{TREE_ENV: tree})
    out = subprocess.run([sys.executable, os.path.abspath(__file__)] + flags, capture_output=True, text=True,
                         env=env, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"a run on {tree} exited {out.returncode}: {out.stderr.strip()[-2000:]}")
    result: Dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def spread_of(values: List[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def compare(flags: List[str], runs: int, baseline: Optional[str], timeout: float) -> Dict[str, Any]:
    """*runs* runs of this tree (and of *baseline*, alternating); medians, ranges and ratios of CPU per poll."""
    trees = {"this": TREE} if baseline is None else {"this": TREE, "baseline": os.path.abspath(baseline)}
    got: Dict[str, List[Dict[str, Any]]] = {name: [] for name in trees}
    for n in range(runs):
        order = list(trees) if n % 2 == 0 else list(reversed(trees))  # neither always goes first
        for name in order:
            got[name].append(run_in_process(trees[name], flags, timeout))
    summary: Dict[str, Any] = {"runs": runs, "transport": os.environ.get("HTTP_TRANSPORT") or "requests"}
    for name, tree in trees.items():
        summary[name] = {"tree": tree, "commit": commit_of(tree), "results": got[name]}
        for key in ("cpu_per_poll_ms", "steady_cpu_per_poll_ms"):
            summary[name][key] = spread_of([r[key] for r in got[name]])
    if baseline is not None:
        for key in ("cpu_per_poll_ms", "steady_cpu_per_poll_ms"):
            pairs = [a[key] / b[key] for a, b in zip(got["this"], got["baseline"])]
            summary[f"ratio_{key}"] = {"of_medians": summary["this"][key]["median"] / summary["baseline"][key]["median"],
                                       "paired_min": min(pairs), "paired_max": max(pairs)}
    return summary


def compare_report(c: Dict[str, Any], head: str) -> str:
    def cell(s: Dict[str, float]) -> str:
        return f"{s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}]"

    lines = [head, f"transport {c['transport']}, {c['runs']} run(s) per tree, each in a process of its own"
             + (", alternating" if "baseline" in c else ""), "",
             f"{'':<28} {'CPU ms per poll, median [range]':<34} {'steady ticks only':<30}"]
    for name in ("this", "baseline"):
        if name in c:
            label = f"{name} ({c[name]['commit']})"
            lines.append(f"{label:<28} {cell(c[name]['cpu_per_poll_ms']):<34} "
                         f"{cell(c[name]['steady_cpu_per_poll_ms']):<30}")
    if "baseline" in c:
        whole, steady = c["ratio_cpu_per_poll_ms"], c["ratio_steady_cpu_per_poll_ms"]
        lines.append(f"{'this / baseline':<28} {whole['of_medians']:.2f}x (runs side by side "
                     f"{whole['paired_min']:.2f}-{whole['paired_max']:.2f})"
                     f"{'':<3} {steady['of_medians']:.2f}x ({steady['paired_min']:.2f}-{steady['paired_max']:.2f})")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pollers", type=int, help=f"number of pollers (default {DEFAULTS['pollers']})")
    parser.add_argument("--interval", type=float, help=f"seconds between polls (default {DEFAULTS['interval']:g})")
    parser.add_argument("--ticks", type=int, help=f"ticks after the first (default {DEFAULTS['ticks']})")
    parser.add_argument("--max-workers", type=int, default=MAX_POOL, help=f"pool threads (default {MAX_POOL})")
    parser.add_argument("--quick", action="store_true", help="50 pollers, 0.5 s, 3 ticks (explicit flags win)")
    parser.add_argument("--profile", action="store_true", help="cProfile the pool and timer threads")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() once the pollers are built (keeps full collections short)")
    parser.add_argument("--runs", type=int, default=1, help="runs per tree, each in a process of its own")
    parser.add_argument("--baseline", metavar="TREE",
                        help="another checkout of syncworkers measured in the same session, runs alternating")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    pollers = args.pollers if args.pollers is not None else base["pollers"]
    interval = args.interval if args.interval is not None else base["interval"]
    ticks = args.ticks if args.ticks is not None else base["ticks"]
    if pollers < 2 or interval <= 0 or ticks < 1 or not 1 <= args.max_workers <= MAX_POOL:
        parser.error(f"need --pollers >= 2, --interval > 0, --ticks >= 1, 1 <= --max-workers <= {MAX_POOL}")
    if args.runs < 1:
        parser.error("need --runs >= 1")
    if args.baseline is not None and not os.path.isdir(os.path.join(args.baseline, "syncworkers")):
        parser.error(f"--baseline {args.baseline}: no syncworkers package there")
    if args.runs > 1 or args.baseline is not None:
        if args.profile:
            parser.error("--profile measures one run of this tree: leave out --runs and --baseline")
        flags = ["--pollers", str(pollers), "--interval", str(interval), "--ticks", str(ticks),
                 "--max-workers", str(args.max_workers)] + (["--gc-freeze"] if args.gc_freeze else [])
        summary = compare(flags, args.runs, args.baseline, timeout=(ticks + 2) * interval * 3 + 120)
        head = (f"{pollers} pollers, interval {interval:g} s, {ticks} ticks after the first, "
                f"max_workers {args.max_workers}, staggered")
        print(compare_report(summary, head))
        print(json.dumps(summary))
        return 0
    result = run(pollers, interval, ticks, args.max_workers, args.profile, args.gc_freeze)
    profile = result.pop("profile", None)
    print(report(result))
    if profile:
        print("\ncProfile of the pool and timer threads (by own time):\n" + profile)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
