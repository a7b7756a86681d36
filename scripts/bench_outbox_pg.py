"""Benchmark the outbox: throughput with 1, 2, 4 sender processes vs direct sending, each run measured
against direct sends in the same run; on PostgreSQL also enqueue latency inside a transaction from 50
threads and commit-to-first-attempt latency.

    python scripts/bench_outbox_pg.py                 # starts a throwaway PostgreSQL (tests/pg_server.py)
    python scripts/bench_outbox_pg.py --url postgresql://...   # or uses yours (a table of its own)
    python scripts/bench_outbox_pg.py --sqlite        # the same throughput figure on a SQLite file

The receiver for throughput is nginx (or scripts/receivers.py's Python server) answering
after ``--delay-ms``, as a partner would; every sender (direct, or each outbox process)
has ``--workers`` threads. Each of ``--runs`` runs measures direct sending, then the outbox
with each number of processes, from the moment the senders are told to start (the
deliveries are stored first) until the last is recorded delivered; the ratios are per run,
printed as median (min-max). Targets: 1 process >= 0.8x direct, 2 processes >= 0.9x;
commit-to-attempt p50 < 50 ms.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from receivers import NGINX_DELAYS_MS, fast_receiver, latency_receiver  # noqa: E402

from syncworkers import WebhookConfig  # noqa: E402
from syncworkers.outbox import open_outbox  # noqa: E402
from syncworkers.workers.webhook import WebhookSenderWorker  # noqa: E402

#: One sender process: opens the outbox, says "ready", starts delivering on "go", stops when stdin closes.
CHILD = """
import sys
from syncworkers import WebhookConfig
from syncworkers.outbox import open_outbox
from syncworkers.workers.webhook import WebhookSenderWorker
url, base, workers, table = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
options = {} if table == "-" else {"table": table, "pool_size": workers + 2}
outbox = open_outbox(url, **options)
sender = WebhookSenderWorker(base, WebhookConfig(max_workers=workers, retry_schedule=(1.0,)), outbox=outbox)
outbox.counts()
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
sender.start()
sys.stdin.read()
sender.stop(timeout=10)
sender.close()
outbox.close()
"""


def percentiles(values: Sequence[float]) -> Dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(pick(0.50) * 1000, 2), "p99_ms": round(pick(0.99) * 1000, 2)}


def direct(base: str, path: str, workers: int, count: int) -> float:
    """Deliveries/s with send_webhook from *workers* threads."""
    sender = WebhookSenderWorker(base, WebhookConfig(max_workers=workers))
    left = iter(range(count))
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            sender.send_webhook(path, {"n": 1})

    threads = [threading.Thread(target=run, name=f"bench-direct-{i}") for i in range(workers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    sender.close()
    return count / elapsed


def through_outbox(url: str, base: str, path: str, workers: int, processes: int, count: int, run: int) -> float:
    """Deliveries/s through the outbox at *url* (a PostgreSQL URL, or a SQLite file's path) with *processes*
    sender processes, from the moment they are told to start until the last delivery is recorded."""
    sqlite = not url.startswith("postgres")
    table = "-" if sqlite else f"bench_outbox_{os.getpid()}_{run}_{processes}"
    if sqlite:
        url = os.path.join(url, f"outbox_{run}_{processes}.db")
    store = open_outbox(url) if sqlite else open_outbox(url, table=table)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, url, base, str(workers), table], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    try:
        store_all(store, url, base + path, path, count)
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        while store.counts()["delivered"] < count:
            time.sleep(0.02)
        return count / (time.perf_counter() - start)
    finally:
        for proc in procs:
            proc.communicate("", timeout=60)
        store.close()
        if not sqlite:
            drop_tables(url, table)


def store_all(store: Any, url: str, target: str, path: str, count: int) -> None:
    """Store *count* deliveries to *target* in one transaction."""
    if url.startswith("postgres"):
        import psycopg

        with psycopg.connect(url) as conn:
            with conn.transaction():
                for _ in range(count):
                    store.add(path, target, b'{"n": 1}', connection=conn)
        return
    conn = sqlite3.connect(url, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(count):
            store.add(path, target, b'{"n": 1}', connection=conn)
        conn.execute("COMMIT")
    finally:
        conn.close()


def drop_tables(url: str, table: str) -> None:
    """Remove the benchmark's own outbox tables (the deliveries, their attempts, their endpoints)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for name in (table, f"{table}_attempts", f"{table}_endpoints"):
            conn.execute(f'DROP TABLE IF EXISTS "{name}"')


def enqueue_latency(url: str, threads: int, per_thread: int) -> Dict[str, Any]:
    """enqueue(connection=...) inside a transaction, from many threads: the call, and call + commit."""
    import psycopg

    table = f"bench_enqueue_{os.getpid()}"
    store = open_outbox(url, table=table, pool_size=4)
    sender = WebhookSenderWorker("http://127.0.0.1:9", WebhookConfig(max_workers=4), outbox=store)
    store.init()
    calls: List[float] = []
    commits: List[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def run() -> None:
        mine, mine_commit = [], []
        with psycopg.connect(url) as conn:
            barrier.wait()
            for _ in range(per_thread):
                t0 = time.perf_counter()
                with conn.transaction():
                    t1 = time.perf_counter()
                    sender.enqueue("/hook", {"n": 1}, connection=conn)
                    mine.append(time.perf_counter() - t1)
                mine_commit.append(time.perf_counter() - t0)
        with lock:
            calls.extend(mine)
            commits.extend(mine_commit)

    workers = [threading.Thread(target=run, name=f"bench-enqueue-{i}") for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    sender.close()
    store.close()
    drop_tables(url, table)
    return {"enqueue": percentiles(calls), "enqueue_and_commit": percentiles(commits), "n": len(calls)}


def commit_to_attempt(url: str, samples: int) -> Dict[str, Any]:
    """Latency from a transaction's commit to its webhook's arrival, with a sender running."""
    import psycopg

    from tests.server import LoopbackServer, Reply

    arrived: Dict[str, float] = {}
    got = threading.Condition()

    def handler(req: Any) -> Reply:
        with got:
            arrived[req.header("webhook-id")] = time.perf_counter()
            got.notify_all()
        return Reply(204)

    table = f"bench_latency_{os.getpid()}"
    latencies: List[float] = []
    with LoopbackServer() as server:
        server.route("POST", "/hook", handler=handler)
        store = open_outbox(url, table=table)
        sender = WebhookSenderWorker(server.base_url, WebhookConfig(max_workers=8), outbox=store)
        sender.start()
        store.counts()
        time.sleep(0.5)  # the listener connects
        try:
            with psycopg.connect(url) as conn:
                for _ in range(samples):
                    with conn.transaction():
                        id = sender.enqueue("/hook", {"n": 1}, connection=conn)
                    committed = time.perf_counter()
                    with got:
                        got.wait_for(lambda: id in arrived, timeout=10)
                    latencies.append(arrived[id] - committed)
                    time.sleep(0.02)  # the loop goes back to sleep between deliveries
        finally:
            sender.close()
            store.close()
            drop_tables(url, table)
    return {**percentiles(latencies), "n": len(latencies)}


def spread(values: Sequence[float], digits: int = 2) -> str:
    """*values* as ``median (min-max)``."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="PostgreSQL URL (default: start a throwaway server)")
    parser.add_argument("--sqlite", action="store_true", help="measure a SQLite outbox file instead (throughput)")
    parser.add_argument("--runs", type=int, default=3, help="runs; each measures direct and every outbox row")
    parser.add_argument("--processes", default="1,2,4", help="outbox sender processes per row, comma separated")
    parser.add_argument("--count", type=int, default=2000, help="deliveries per throughput row")
    parser.add_argument("--workers", type=int, default=16, help="threads per sender")
    parser.add_argument("--delay-ms", type=int, default=10, help="receiver latency (0: nginx, at once)")
    parser.add_argument("--samples", type=int, default=200, help="commit-to-attempt samples (0: skip latencies)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.processes.split(",")]

    import contextlib

    with contextlib.ExitStack() as stack:
        if args.sqlite:
            url = stack.enter_context(tempfile.TemporaryDirectory(prefix="syncworkers-bench-outbox-"))
        else:
            url = args.url
            if url is None:
                from tests.pg_server import PostgresServer

                url = stack.enter_context(PostgresServer()).url
        # nginx answers at once whatever the path: the Python receiver plays a partner with latency.
        if args.delay_ms in NGINX_DELAYS_MS:
            receiver = latency_receiver()  # nginx with its echo module when installed
        else:
            receiver = fast_receiver("python" if args.delay_ms > 0 else "auto")
        stack.callback(receiver.stop)
        path = f"/delay/{args.delay_ms}/hook"
        store = "SQLite" if args.sqlite else "PostgreSQL"
        print(f"receiver {receiver.kind}, {args.delay_ms} ms; {args.workers} threads per sender; "
              f"{args.count} deliveries per row; {args.runs} runs")
        direct_rps: List[float] = []
        outbox_rps: Dict[int, List[float]] = {n: [] for n in counts}
        for run in range(args.runs):
            direct_rps.append(direct(receiver.url, path, args.workers, args.count))
            line = [f"run {run + 1}: direct {direct_rps[-1]:.0f}/s"]
            for processes in counts:
                outbox_rps[processes].append(
                    through_outbox(url, receiver.url, path, args.workers, processes, args.count, run))
                line.append(f"{processes}p {outbox_rps[processes][-1]:.0f}/s "
                            f"({outbox_rps[processes][-1] / direct_rps[-1]:.2f}x)")
            print("  " + ", ".join(line), flush=True)
        print(f"direct send_webhook              {spread(direct_rps, 0)} deliveries/s")
        for processes in counts:
            ratios = [o / d for o, d in zip(outbox_rps[processes], direct_rps)]
            print(f"{store} outbox, {processes} process{'es' if processes > 1 else '  '} "
                  f"{spread(outbox_rps[processes], 0)} deliveries/s  ({spread(ratios)}x direct)")
        if args.sqlite or not args.samples:
            return
        lat = enqueue_latency(url, threads=50, per_thread=40)
        print(f"enqueue in a transaction, 50 threads: call p50 {lat['enqueue']['p50_ms']} ms, "
              f"p99 {lat['enqueue']['p99_ms']} ms; with commit p50 {lat['enqueue_and_commit']['p50_ms']} ms, "
              f"p99 {lat['enqueue_and_commit']['p99_ms']} ms (n={lat['n']})")
        c2a = commit_to_attempt(url, args.samples)
        print(f"commit to first attempt: p50 {c2a['p50_ms']} ms, p99 {c2a['p99_ms']} ms (n={c2a['n']}; "
              f"goal p50 < 50 ms)")


if __name__ == "__main__":
    main()
