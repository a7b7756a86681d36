"""The outbox under load and under chaos, for the closing note (127.0.0.1 only).

    python scripts/chaos_run.py                    # 3,000 healthy + 5,000 chaos deliveries, ~1 min
    python scripts/chaos_run.py --quick            # small counts, a few seconds
    python scripts/chaos_run.py --json out.json    # the numbers as JSON too

1. Throughput to a healthy receiver (nginx answering 204 when installed, else
   scripts/receivers.py's Python server, in a process of its own), one worker
   configuration for all: plain ``send_webhook`` from ``max_workers`` threads,
   ``enqueue()`` x N then ``flush()`` on a running worker (the durable path end
   to end), and the delivery alone (N pre-enqueued, then ``start()`` + ``flush()``).
   The compared runs are interleaved, each repeated; medians with min-max.
2. A chaos run: N webhooks through the SQLite outbox into tests/chaos.py's
   ChaosReceiver (seeded faults: 5xx, 429 + Retry-After, 410, closed and reset
   connections, stalls past the read timeout, slow answers, redirects, huge
   bodies); counts of sent, received unique, duplicates and dead by reason, and
   whether received-unique + dead = sent held.

Every count and wait is bounded; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, "scripts")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import receivers  # noqa: E402
from syncworkers import (  # noqa: E402
    CircuitBreakerConfig,
    HTTPClientConfig,
    RetryConfig,
    WebhookConfig,
    WebhookSenderWorker,
)
from syncworkers.outbox import DEAD  # noqa: E402
from tests.chaos import ChaosReceiver  # noqa: E402

PAYLOAD = {"event": "order.paid", "order_id": 12345, "amount": "99.90", "currency": "EUR",
           "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}]}
#: Longest a flush or a batch of sends may take before the run is reported as failed.
PHASE_TIMEOUT = 300.0


def summary(values: List[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: Dict[str, float]) -> str:
    return f"{s['median']:8.0f}/s  ({s['min']:.0f}-{s['max']:.0f})"


# -- throughput ---------------------------------------------------------------------------


def run_direct(url: str, n: int, workers: int) -> float:
    with WebhookSenderWorker(url, WebhookConfig(max_workers=workers, max_retries=0)) as sender:
        sender.send_webhook("/warmup", PAYLOAD)
        with ThreadPoolExecutor(workers, thread_name_prefix="syncworkers-chaos-run") as pool:
            t0 = time.perf_counter()
            results = list(pool.map(lambda _: sender.send_webhook("/hook", PAYLOAD), range(n),
                                    timeout=PHASE_TIMEOUT))
            elapsed = time.perf_counter() - t0
    if not all(results):
        raise RuntimeError(f"direct: {results.count(False)} of {n} sends failed")
    return n / elapsed


def run_outbox(url: str, n: int, workers: int, path: str, preload: bool) -> Dict[str, float]:
    sender = WebhookSenderWorker(url, WebhookConfig(max_workers=workers, max_retries=0, outbox_path=path))
    try:
        sender.send_webhook("/warmup", PAYLOAD)
        if preload:
            for _ in range(n):
                sender.enqueue("/hook", PAYLOAD)
            t0 = time.perf_counter()
            sender.start()
            enqueue_s = 0.0
        else:
            sender.start()
            t0 = time.perf_counter()
            for _ in range(n):
                sender.enqueue("/hook", PAYLOAD)
            enqueue_s = time.perf_counter() - t0
        if not sender.flush(PHASE_TIMEOUT):
            raise RuntimeError(f"outbox: flush() timed out with {sender.outbox.counts()}")
        elapsed = time.perf_counter() - t0
        counts = sender.outbox.counts()
        if counts["delivered"] != n:
            raise RuntimeError(f"outbox: {counts}")
        sender.stop(10)
    finally:
        sender.close()
    return {"rate": n / elapsed, "enqueue_ms": enqueue_s / n * 1000}


def throughput(n: int, workers: int, runs: int, tmp: str) -> Dict[str, Any]:
    with receivers.fast_receiver() as rx:
        direct, outbox, deliver_only, enqueue_ms = [], [], [], []
        for run in range(runs):  # interleaved, so that a slow moment hits every variant alike
            direct.append(run_direct(rx.url, n, workers))
            full = run_outbox(rx.url, n, workers, os.path.join(tmp, f"full{run}.db"), preload=False)
            outbox.append(full["rate"])
            enqueue_ms.append(full["enqueue_ms"])
            deliver_only.append(run_outbox(rx.url, n, workers, os.path.join(tmp, f"pre{run}.db"),
                                           preload=True)["rate"])
        return {"receiver": rx.kind, "deliveries": n, "max_workers": workers, "runs": runs,
                "direct": summary(direct), "outbox": summary(outbox), "deliver_only": summary(deliver_only),
                "enqueue_ms": summary(enqueue_ms),
                "ratio": statistics.median(outbox) / statistics.median(direct)}


# -- chaos ------------------------------------------------------------------------------------


def reason_key(last_error: str) -> str:
    """'exhausted after 4 attempts: read timeout (POST ...)' -> 'exhausted: read timeout'."""
    kind, _, detail = last_error.partition(": ")
    detail = re.sub(r" \(.*$", "", detail)
    return f"{kind.split(' after')[0]}: {detail[:60]}"


def chaos(n: int, seed: int, tmp: str) -> Dict[str, Any]:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    http = HTTPClientConfig(timeout=2.0, max_response_size=64 * 1024,
                            retry_config=RetryConfig(retry_after_max=0.05),
                            circuit_breaker_config=CircuitBreakerConfig(failure_threshold=5, timeout_seconds=0.05))
    schedule = (0.01, 0.02, 0.05)
    config = WebhookConfig(outbox_path=os.path.join(tmp, "chaos.db"), retry_schedule=schedule, max_workers=64)
    with ChaosReceiver(seed=seed, secret=secret, slow_seconds=0.05, stall_seconds=2.5) as rx:
        sender = WebhookSenderWorker(rx.base_url, config, http, signing_secret=secret)
        sender.start()
        try:
            t0 = time.perf_counter()
            sent = [sender.enqueue("/hook", {"n": i, **PAYLOAD}) for i in range(n)]
            flushed = sender.flush(PHASE_TIMEOUT)
            elapsed = time.perf_counter() - t0
            sender.stop(10)
            rows = sender.outbox.list(limit=n + 1000)
            counts = sender.outbox.counts()
            metrics = sender.health()["metrics"]
        finally:
            sender.close()
    dead = {r.id: r.last_error for r in rows if r.state == DEAD}
    received = set(rx.accepted)
    return {
        "sent": len(sent),
        "flushed": flushed,
        "seconds": round(elapsed, 2),
        "schedule": list(schedule),
        "requests": sum(rx.seen.values()),
        "received_unique": len(received),
        "received_duplicates": sum(c - 1 for c in rx.accepted.values()),
        "requests_per_delivery": round(sum(rx.seen.values()) / n, 2),
        "dead": len(dead),
        "dead_by_reason": dict(Counter(reason_key(e or "") for e in dead.values()).most_common()),
        "pending": counts["pending"],
        "postponed_free": int(metrics.get("outbox_postponed", 0)),
        "invariant_holds": received | set(dead) == set(sent) and not received & set(dead),
        "bad_signatures": rx.bad_signatures,
        "faults_injected": dict(rx.faults.most_common()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: proves the harness works")
    parser.add_argument("--deliveries", type=int, default=None, help="per throughput run (default 3000)")
    parser.add_argument("--workers", type=int, default=32, help="max_workers of every sender")
    parser.add_argument("--runs", type=int, default=None, help="throughput repetitions (default 3)")
    parser.add_argument("--chaos", type=int, default=None, help="chaos deliveries (default 5000)")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    args = parser.parse_args()
    n = args.deliveries or (300 if args.quick else 3000)
    runs = args.runs or (1 if args.quick else 3)
    chaos_n = args.chaos or (300 if args.quick else 5000)
    for name, value in (("--deliveries", n), ("--runs", runs), ("--chaos", chaos_n), ("--workers", args.workers)):
        if not 1 <= value <= 100_000:
            parser.error(f"{name} must be between 1 and 100000")

    with tempfile.TemporaryDirectory(prefix="syncworkers-chaos-run-") as tmp:
        print(f"throughput: {n} deliveries x {runs} run(s), max_workers={args.workers} ...", file=sys.stderr)
        tp = throughput(n, args.workers, runs, tmp)
        print(f"chaos: {chaos_n} deliveries, seed {args.seed} ...", file=sys.stderr)
        ch = chaos(chaos_n, args.seed, tmp)

    print(f"Throughput to a healthy loopback receiver ({tp['receiver']}), {tp['deliveries']} webhooks, "
          f"max_workers={tp['max_workers']}, median of {tp['runs']} (min-max):")
    print(f"  send_webhook from {tp['max_workers']} threads       {fmt(tp['direct'])}")
    print(f"  outbox: enqueue() x N + flush()       {fmt(tp['outbox'])}   {tp['ratio']:.2f}x direct")
    print(f"  outbox: delivery alone (pre-enqueued) {fmt(tp['deliver_only'])}")
    print(f"  enqueue() alone (durable SQLite write, while delivering): {tp['enqueue_ms']['median']:.2f} ms/call")
    print()
    print(f"Chaos run: {ch['sent']} webhooks, schedule {ch['schedule']} s, seed {args.seed}, "
          f"{ch['seconds']} s, flushed={ch['flushed']}")
    for key in ("sent", "requests", "requests_per_delivery", "received_unique", "received_duplicates", "dead",
                "pending", "postponed_free", "bad_signatures", "invariant_holds"):
        print(f"  {key:24} {ch[key]}")
    print("  dead by reason:")
    for reason, count in ch["dead_by_reason"].items():
        print(f"    {count:6}  {reason}")
    print("  faults injected: " + ", ".join(f"{k} {v}" for k, v in ch["faults_injected"].items()))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"throughput": tp, "chaos": ch}, f, indent=2)
    if not (ch["invariant_holds"] and ch["flushed"] and ch["pending"] == 0):
        sys.exit(1)


if __name__ == "__main__":
    main()
