"""Benchmark enqueue() latency on a SQLite outbox shared by several processes, as gunicorn workers share one.

    python scripts/bench_enqueue_sqlite.py                   # 50 callers in 3 processes, each delivering too
    python scripts/bench_enqueue_sqlite.py --no-deliver      # enqueue only: no deliverer holds the write lock

Each process runs a started ``WebhookSenderWorker`` on the same outbox file (its delivery
loop claims and records outcomes, as a web app's workers do, against a receiver on
127.0.0.1) and ``--callers`` threads spread over the processes call ``enqueue()``, each
call a request that stores a webhook before it returns, between them ``--think-ms`` on
average (uniformly 0 to twice that: the rest of the request; 0: back to back). Each of ``--runs``
runs prints the latency percentiles of every call of every process; the summary gives the
median and range of each percentile over the runs. Target: p99 < 25 ms at 50 callers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from receivers import fast_receiver  # noqa: E402

#: One process: opens the outbox, says "ready", and on "go" runs its callers; prints their latencies (seconds).
CHILD = """
import json, random, sys, threading, time
from syncworkers import WebhookConfig
from syncworkers.outbox import Outbox
from syncworkers.workers.webhook import WebhookSenderWorker
path, base, callers, calls, deliver = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
think, fsync = float(sys.argv[6]) / 1000, sys.argv[7] == "1"
outbox = Outbox(path, fsync=True) if fsync else Outbox(path)
sender = WebhookSenderWorker(base, WebhookConfig(max_workers=8), outbox=outbox)
if deliver:
    sender.start()
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
latencies = [[] for _ in range(callers)]
def call(mine):
    pause, rng = threading.Event(), random.Random()
    for n in range(calls):
        if think:
            pause.wait(rng.uniform(0, 2 * think))
        started = time.perf_counter()
        sender.enqueue("/hook", {"n": n, "order": {"id": n, "lines": ["a" * 40] * 5}})
        mine.append(time.perf_counter() - started)
threads = [threading.Thread(target=call, args=(latencies[i],), name=f"bench-caller-{i}") for i in range(callers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
sender.stop(timeout=10)
sender.close()
outbox.close()
print(json.dumps([x for mine in latencies for x in mine]), flush=True)
"""


def percentiles(values: Sequence[float]) -> Dict[str, float]:
    """p50, p90, p99 and the largest of *values* (seconds), in milliseconds."""
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.50) * 1000, "p90": pick(0.90) * 1000, "p99": pick(0.99) * 1000, "max": ordered[-1] * 1000}


def run_once(directory: str, base: str, processes: int, callers: int, calls: int, deliver: bool, think_ms: float,
             fsync: bool, run: int) -> List[float]:
    """Every call's latency (seconds) of one run: *callers* threads over *processes* processes."""
    path = os.path.join(directory, f"outbox{run}.db")
    shares = [callers // processes + (1 if i < callers % processes else 0) for i in range(processes)]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, path, base, str(share), str(calls), "1" if deliver else "0",
                               str(think_ms), "1" if fsync else "0"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for share in shares if share]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        latencies: List[float] = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            latencies.extend(json.loads(out.strip().splitlines()[-1]))
        return latencies
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=3, help="processes sharing the outbox file")
    parser.add_argument("--callers", type=int, default=50, help="threads calling enqueue(), over all processes")
    parser.add_argument("--calls", type=int, default=100, help="enqueue() calls per caller and run")
    parser.add_argument("--think-ms", type=float, default=50.0,
                        help="mean pause between a caller's calls (uniform, 0 to twice it); 0: back to back")
    parser.add_argument("--fsync", action="store_true",
                        help="Outbox(fsync=True): each enqueue() also waits for the disk (survives a power cut)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-deliver", dest="deliver", action="store_false",
                        help="do not start the senders (no delivery loop writes meanwhile)")
    args = parser.parse_args(argv)
    rows: List[Dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="syncworkers-bench-enqueue-") as directory, \
            fast_receiver() as receiver:
        print(f"{args.callers} callers in {args.processes} processes, {args.calls} enqueue() each per run, "
              f"{args.think_ms:g} ms apart on average; delivering: {'yes' if args.deliver else 'no'}; "
              f"fsync: {'yes' if args.fsync else 'no'}; "
              f"receiver {receiver.kind}; load average {os.getloadavg()[0]:.1f}")
        for run in range(args.runs):
            latencies = run_once(directory, receiver.url, args.processes, args.callers, args.calls, args.deliver,
                                 args.think_ms, args.fsync, run)
            rows.append(percentiles(latencies))
            print(f"  run {run + 1}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in rows[-1].items())
                  + f" (n={len(latencies)})", flush=True)
    summary = {key: [row[key] for row in rows] for key in rows[0]}
    print("enqueue() latency over runs, median (min-max): " + ", ".join(
        f"{key} {statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f}) ms"
        for key, values in summary.items()))
    print(f"target p99 < 25 ms: {'met' if statistics.median(summary['p99']) < 25 else 'not met'}")


if __name__ == "__main__":
    main()
