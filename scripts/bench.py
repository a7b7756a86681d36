"""Benchmarks: syncworkers side by side with the requests stack, raw urllib3 and async peers.

    python scripts/bench.py                   # the full run (a few minutes)
    python scripts/bench.py --quick           # tiny counts, ~30 s: proves the harness works
    python scripts/bench.py --out DIR --rst   # + results.json, bench.png, bench.rst/.md in DIR

Figures (each the median of several runs, with min–max; ratios against
baselines measured in the same run, runs of the compared clients interleaved):

1. webhook throughput, small JSON POST, 1/8/32 threads: ``send_webhook`` vs a bare
   ``requests.Session`` (pool of the same size) vs ``urllib3.PoolManager`` vs naive
   ``requests.post``; requests/s and process CPU µs per request;
2. the same load against ``httpx.AsyncClient`` and ``aiohttp`` with 32 tasks;
3. a latency-bound receiver (50 ms per answer) at concurrency 32 and 128, vs the ideal;
4. broadcast to 16 endpoints of 200 ms (ideal 200 ms), and the ``fail_fast`` reaction time;
5. 1,000 pollers at 1 s (scripts/bench_pollers.py): lateness, drift, threads, peak RSS;
6. the outbox (``enqueue`` + ``flush``) vs direct ``send_webhook``;
7. the libcurl transport (``HTTP_TRANSPORT=curl``): ``send_webhook`` vs aiohttp at 8 and 32
   concurrent senders, the latency-bound receiver at 256 in flight (256 threads against 256
   aiohttp tasks), and 1,000 pollers' CPU against the requests transport (skipped when pycurl
   is not installed);
8. CPU per webhook by stage (build, sign, send, record), one thread, both transports;
9. many in flight with few threads: broadcast to 1,024 endpoints and the outbox with 1,024 in
   flight against the 50 ms receiver, at most 64 threads (libcurl's multi interface), against
   the requests transport with its 64 threads.

Receivers run in processes of their own on 127.0.0.1 (scripts/receivers.py): nginx
answering 204 when installed, else a Python server; the script says which.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

import requests  # noqa: E402
import urllib3  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

import bench_async  # noqa: E402
import receivers  # noqa: E402
import syncworkers  # noqa: E402
from syncworkers import HTTPClientConfig, WebhookConfig, WebhookSenderWorker  # noqa: E402

#: The webhook every figure sends: a small JSON event (~170 bytes serialised).
PAYLOAD: Dict[str, Any] = {
    "type": "order.created",
    "timestamp": "2024-05-01T12:00:00Z",
    "data": {"id": 12345, "customer": "c_8f2a", "amount": 99.5, "currency": "EUR",
             "items": [{"sku": "sku-1", "qty": 2}, {"sku": "sku-2", "qty": 1}]},
}
TIMEOUT = (5.0, 30.0)
LATENCY = 0.050
BROADCAST_DELAY = 0.200
SLOW_ENDPOINT = 2.0
NOT_AVAILABLE = "not available"
HTTPX_CONTEXT_TASKS = 8


@dataclass
class Settings:
    runs: int
    duration: float  # seconds per throughput run
    latency_duration: float
    threads: Tuple[int, ...] = (1, 8, 32)
    latency_concurrency: Tuple[int, ...] = (32, 128)
    broadcast_runs: int = 5
    fail_fast_runs: int = 3
    pollers: int = 1000
    poller_ticks: int = 20
    outbox_deliveries: int = 2000
    outbox_workers: int = 32
    max_requests: int = 1_000_000
    latency_in_flight: int = 256  # figure 7's latency-bound row
    stage_requests: int = 3000  # figure 8, per transport and run
    many: int = 1024  # figure 9: deliveries in flight
    many_threads: int = 64  # figure 9: the pool (max_workers)


FULL = Settings(runs=5, duration=1.5, latency_duration=2.0, poller_ticks=20)
QUICK = Settings(runs=3, duration=0.15, latency_duration=0.3, broadcast_runs=3, fail_fast_runs=2,
                 pollers=50, poller_ticks=3, outbox_deliveries=100, outbox_workers=8,
                 latency_in_flight=32, stage_requests=100, many=64, many_threads=8)
#: The signing secret of figure 8's sender (a fixed test value: it signs nothing real).
BENCH_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


# -- measuring ------------------------------------------------------------------------


def summary(values: Sequence[float]) -> Dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": list(values)}


def run_threads(call: Callable[[], bool], threads: int, duration: float, max_requests: int,
                label: str) -> Dict[str, float]:
    """Drive *call* from *threads* threads for *duration* s (or *max_requests*): one timed run."""
    counter = itertools.count()
    go, stop = threading.Event(), threading.Event()
    deadline = [0.0]
    done = [0] * threads
    errors = [0] * threads

    def loop(i: int) -> None:
        if not go.wait(60):
            return
        end = deadline[0]
        n = e = 0
        while not stop.is_set() and next(counter) < max_requests and time.monotonic() < end:
            try:
                ok = call()
            except Exception:
                ok = False
            n += 1
            if not ok:
                e += 1
        done[i], errors[i] = n, e

    workers = [threading.Thread(target=loop, args=(i,), name=f"syncworkers-bench-{label}-{i}")
               for i in range(threads)]
    for t in workers:
        t.start()
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline[0] = time.monotonic() + duration
    go.set()
    try:
        for t in workers:
            t.join(duration + 60)
    finally:
        stop.set()
        go.set()
        for t in workers:
            t.join(30)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"requests": sum(done), "errors": sum(errors), "wall": wall, "cpu": cpu}


class Client:
    """A load-generating client: ``call()`` sends one webhook and says if it was accepted."""

    name = "?"
    threads = 1

    def call(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self, duration: float, max_requests: int) -> Dict[str, float]:
        return run_threads(self.call, self.threads, duration, max_requests, self.name.split()[0])

    def warm_up(self) -> None:
        self.run(0.05, self.threads * 5)

    def close(self) -> None:
        pass


class SyncworkersClient(Client):
    """``send_webhook`` through one WebhookSenderWorker shared by all threads."""

    name = "syncworkers send_webhook"

    def __init__(self, base_url: str, threads: int, endpoint: str = "/hook", transport: str = "requests") -> None:
        self.threads = threads
        self.endpoint = endpoint
        if transport != "requests":
            self.name = f"syncworkers send_webhook ({transport})"
        self.worker = WebhookSenderWorker(base_url=base_url, webhook_config=WebhookConfig(
            max_workers=threads, max_retries=0), http_config=HTTPClientConfig(transport=transport))

    def call(self) -> bool:
        return self.worker.send_webhook(self.endpoint, PAYLOAD)

    def close(self) -> None:
        self.worker.close()


class SessionClient(Client):
    """A bare ``requests.Session`` with an HTTPAdapter pool of *threads* connections."""

    name = "requests.Session"

    def __init__(self, url: str, threads: int) -> None:
        self.threads = threads
        self.url = url
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=threads)
        self.session.mount("http://", adapter)

    def call(self) -> bool:
        return self.session.post(self.url, json=PAYLOAD, timeout=TIMEOUT).status_code < 300

    def close(self) -> None:
        self.session.close()


class Urllib3Client(Client):
    """Raw ``urllib3.PoolManager``: the floor under the requests stack."""

    name = "urllib3.PoolManager"

    def __init__(self, url: str, threads: int) -> None:
        self.threads = threads
        self.url = url
        self.pool = urllib3.PoolManager(maxsize=threads)
        self.timeout = urllib3.Timeout(connect=TIMEOUT[0], read=TIMEOUT[1])

    def call(self) -> bool:
        response = self.pool.request("POST", self.url, body=json.dumps(PAYLOAD).encode(),
                                     headers={"Content-Type": "application/json"},
                                     timeout=self.timeout, retries=False)
        return response.status < 300

    def close(self) -> None:
        self.pool.clear()


class NaiveClient(Client):
    """``requests.post(url, json=...)`` as a script would write it: a new Session and connection each time."""

    name = "requests.post (naive)"

    def __init__(self, url: str, threads: int) -> None:
        self.threads = threads
        self.url = url

    def call(self) -> bool:
        return requests.post(self.url, json=PAYLOAD, timeout=TIMEOUT).status_code < 300


class AsyncClient(Client):
    def __init__(self, peer: str, url: str, concurrency: int) -> None:
        self.peer = bench_async.AsyncPeer(peer, url, PAYLOAD, concurrency)
        self.threads = concurrency
        self.name = {"httpx": "httpx.AsyncClient", "aiohttp": "aiohttp.ClientSession"}[peer]

    def run(self, duration: float, max_requests: int) -> Dict[str, float]:
        return self.peer.run(duration, max_requests)

    def close(self) -> None:
        self.peer.close()


def measure(clients: List[Client], s: Settings, duration: float) -> List[Dict[str, Any]]:
    """Warm each client up, then *s.runs* rounds, each client once per round (interleaved)."""
    for c in clients:
        c.warm_up()
    raw: List[List[Dict[str, float]]] = [[] for _ in clients]
    for _ in range(s.runs):
        for i, c in enumerate(clients):
            raw[i].append(c.run(duration, s.max_requests))
    rows = []
    for c, runs in zip(clients, raw):
        rows.append({
            "client": c.name, "concurrency": c.threads,
            "rps": summary([r["requests"] / r["wall"] for r in runs]),
            "cpu_us": summary([r["cpu"] / max(r["requests"], 1) * 1e6 for r in runs]),
            "requests": sum(r["requests"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
        })
    return rows


def ratio(a: Optional[Dict[str, Any]], b: Optional[Dict[str, Any]], key: str = "rps") -> Optional[float]:
    if not a or not b or not b[key]["median"]:
        return None
    return a[key]["median"] / b[key]["median"]


def closing(stack: contextlib.ExitStack, client: Client) -> Client:
    stack.callback(client.close)
    return client


# -- the figures ------------------------------------------------------------------------


def figure1(fast_url: str, s: Settings) -> Dict[str, Any]:
    rows: List[Dict[str, Any]] = []
    ratios: Dict[str, Dict[str, Optional[float]]] = {}
    for n in s.threads:
        with contextlib.ExitStack() as stack:
            clients = [closing(stack, SyncworkersClient(fast_url, n)),
                       closing(stack, SessionClient(fast_url + "/hook", n)),
                       closing(stack, Urllib3Client(fast_url + "/hook", n)),
                       closing(stack, NaiveClient(fast_url + "/hook", n))]
            got = measure(clients, s, s.duration)
        sw, session, raw, naive = got
        ratios[str(n)] = {"vs_session": ratio(sw, session), "vs_naive": ratio(sw, naive),
                          "vs_urllib3": ratio(sw, raw),
                          "cpu_vs_session": ratio(sw, session, "cpu_us")}
        rows += got
    return {"title": "Webhook throughput, small JSON POST (fast receiver)", "rows": rows, "ratios": ratios}


def figure2(fast_url: str, s: Settings, concurrency: int = 32) -> Dict[str, Any]:
    skipped = {p: "skipped: not installed" for p in bench_async.PEERS if not bench_async.available(p)}
    with contextlib.ExitStack() as stack:
        clients: List[Client] = [closing(stack, SyncworkersClient(fast_url, concurrency))]
        for peer in bench_async.PEERS:
            if peer not in skipped:
                clients.append(closing(stack, AsyncClient(peer, fast_url + "/hook", concurrency)))
        if "httpx" not in skipped:
            # httpx slows down sharply with many concurrent requests on one pool; show it at 8 too.
            context = closing(stack, AsyncClient("httpx", fast_url + "/hook", HTTPX_CONTEXT_TASKS))
            context.name += f" ({HTTPX_CONTEXT_TASKS} tasks)"
            clients.append(context)
        rows = measure(clients, s, s.duration)
    sw = rows[0]
    by = {r["client"]: r for r in rows}
    ratios = {"vs_httpx": ratio(sw, by.get("httpx.AsyncClient")),
              "aiohttp_vs_syncworkers": ratio(by.get("aiohttp.ClientSession"), sw)}
    return {"title": f"Against async peers, {concurrency} concurrent threads / tasks", "rows": rows,
            "ratios": ratios, "skipped": skipped}


def figure3(slow_url: str, s: Settings) -> Dict[str, Any]:
    rows = []
    delay_ms = int(LATENCY * 1000)
    path = f"/delay/{delay_ms}/hook"
    for c in s.latency_concurrency:
        with contextlib.ExitStack() as stack:
            # The baselines show how far this machine's Python can go at that many threads.
            clients = [closing(stack, SyncworkersClient(slow_url, c, endpoint=path)),
                       closing(stack, SessionClient(slow_url + path, c)),
                       closing(stack, Urllib3Client(slow_url + path, c))]
            got = measure(clients, s, s.latency_duration)
        for row in got:
            row["ideal_rps"] = c / LATENCY
            row["of_ideal"] = row["rps"]["median"] / row["ideal_rps"]
        rows += got
    return {"title": f"Latency-bound receiver ({delay_ms} ms per answer)", "rows": rows}


def figure4(slow_url: str, s: Settings, endpoints: int = 16) -> Dict[str, Any]:
    delay_ms = int(BROADCAST_DELAY * 1000)
    slow = [f"/delay/{delay_ms}/ep{i}" for i in range(endpoints)]
    failing = ["/status/400/ep0"] + [f"/delay/{int(SLOW_ENDPOINT * 1000)}/ep{i}" for i in range(1, endpoints)]
    worker = WebhookSenderWorker(base_url=slow_url, webhook_config=WebhookConfig(
        max_workers=endpoints, max_retries=0))
    try:
        worker.broadcast_webhook([f"/warm{i}" for i in range(endpoints)], PAYLOAD)  # open the connections
        walls, delivered = [], []
        for _ in range(s.broadcast_runs):
            t0 = time.perf_counter()
            result = worker.broadcast_webhook(slow, PAYLOAD)
            walls.append(time.perf_counter() - t0)
            delivered.append(sum(1 for ok in result.values() if ok))
        reactions, outcome = [], {}
        for _ in range(s.fail_fast_runs):
            t0 = time.perf_counter()
            result = worker.broadcast_webhook(failing, PAYLOAD, fail_fast=True)
            reactions.append(time.perf_counter() - t0)
            outcome = {"false": sum(1 for ok in result.values() if not ok), "endpoints": len(result)}
            # The slow deliveries still in flight finish before the next run starts.
            time.sleep(max(0.0, SLOW_ENDPOINT + 0.2 - reactions[-1]))
    finally:
        worker.close()
    return {"title": f"Broadcast to {endpoints} endpoints", "endpoints": endpoints,
            "wall_s": summary(walls), "ideal_s": BROADCAST_DELAY,
            "delivered": min(delivered), "fail_fast_s": summary(reactions),
            "slow_endpoint_s": SLOW_ENDPOINT, "fail_fast_result": outcome}


def figure5(s: Settings, quick: bool, transport: str = "requests") -> Dict[str, Any]:
    script = os.path.join(HERE, "bench_pollers.py")
    if not os.path.exists(script):
        return {"status": NOT_AVAILABLE, "reason": "scripts/bench_pollers.py is not in this tree"}
    if not bench_async.available("psutil"):
        return {"status": NOT_AVAILABLE, "reason": "psutil is not installed (bench extra)"}
    cmd = [sys.executable, script, "--pollers", str(s.pollers), "--interval", "1",
           "--ticks", str(s.poller_ticks)] + (["--quick"] if quick else [])
    env = dict(os.environ, HTTP_TRANSPORT=transport)  # the pollers' HTTPClientConfig reads it
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=s.poller_ticks * 5 + 120, cwd=ROOT,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"bench_pollers.py exited {out.returncode}: {out.stderr.strip()[-500:]}")
    result = _last_json(out.stdout)
    return {"title": f"{s.pollers:,} pollers at 1 s interval",
            "command": shlex.join([os.path.relpath(script, ROOT)] + cmd[2:]),
            "result": result, "stdout": None if result else out.stdout.strip()[-2000:]}


def figure7(fast_url: str, slow_url: str, s: Settings, quick: bool) -> Dict[str, Any]:
    """The libcurl transport against aiohttp and against the requests transport, in the same run."""
    if not bench_async.available("pycurl"):
        return {"status": NOT_AVAILABLE, "reason": "pycurl is not installed (pip install 'syncworkers[curl]')"}
    rows: List[Dict[str, Any]] = []
    ratios: Dict[str, Dict[str, Optional[float]]] = {}
    for n in (8, 32):
        with contextlib.ExitStack() as stack:
            clients: List[Client] = [closing(stack, SyncworkersClient(fast_url, n, transport="curl")),
                                     closing(stack, SyncworkersClient(fast_url, n))]
            if bench_async.available("aiohttp"):
                clients.append(closing(stack, AsyncClient("aiohttp", fast_url + "/hook", n)))
            got = measure(clients, s, s.duration)
        curl, req = got[0], got[1]
        aio = got[2] if len(got) > 2 else None
        ratios[str(n)] = {"vs_aiohttp": ratio(curl, aio), "vs_requests": ratio(curl, req),
                          "cpu_vs_aiohttp": ratio(curl, aio, "cpu_us")}
        rows += got
    c = s.latency_in_flight
    path = f"/delay/{int(LATENCY * 1000)}/hook"
    with contextlib.ExitStack() as stack:
        clients = [closing(stack, SyncworkersClient(slow_url, c, endpoint=path, transport="curl"))]
        if bench_async.available("aiohttp"):
            clients.append(closing(stack, AsyncClient("aiohttp", slow_url + path, c)))
        slow_rows = measure(clients, s, s.latency_duration)
    for row in slow_rows:
        row["ideal_rps"] = c / LATENCY
        row["of_ideal"] = row["rps"]["median"] / row["ideal_rps"]
    latency = slow_rows[0]
    latency["vs_aiohttp"] = ratio(latency, slow_rows[1]) if len(slow_rows) > 1 else None
    latency["aiohttp"] = slow_rows[1] if len(slow_rows) > 1 else None
    pollers = {t: figure5(s, quick, transport=t) for t in ("curl", "requests")}
    cpu = {t: (p.get("result") or {}).get("cpu_per_poll_ms") for t, p in pollers.items()}
    poll_ratio = cpu["curl"] / cpu["requests"] if cpu["curl"] and cpu["requests"] else None
    return {"title": "The libcurl transport (HTTP_TRANSPORT=curl)", "rows": rows, "ratios": ratios,
            "latency": latency, "pollers": s.pollers, "poller_cpu_ms": cpu, "poller_cpu_ratio": poll_ratio}


def figure8(fast_url: str, s: Settings) -> Dict[str, Any]:
    """CPU per webhook by stage, one thread (thread CPU time, so other processes do not count)."""
    from syncworkers.delivery.checks import Webhook
    from syncworkers.delivery.request import delivery_headers, encode_body
    from syncworkers.message import new_id

    transports = ["curl", "requests"] if bench_async.available("pycurl") else ["requests"]
    stages = ("build", "sign", "send", "record")
    runs: Dict[str, Dict[str, List[float]]] = {t: {k: [] for k in stages + ("total", "send_webhook")}
                                               for t in transports}
    workers = {t: WebhookSenderWorker(base_url=fast_url, webhook_config=WebhookConfig(max_workers=1, max_retries=0),
                                      http_config=HTTPClientConfig(transport=t), signing_secret=BENCH_SECRET)
               for t in transports}
    url = fast_url + "/hook"
    try:
        for _ in range(s.runs):
            for t, worker in workers.items():  # interleaved, as every figure
                client, signer, sender, n = worker.client, worker.signer, worker.direct_sender, s.stage_requests
                for _ in range(20):
                    worker.send_webhook("/hook", PAYLOAD)
                spent = dict.fromkeys(stages, 0)
                clock = time.thread_time_ns
                for _ in range(n):
                    t0 = clock()
                    body = encode_body(PAYLOAD)
                    delivery_id = new_id()
                    t1 = clock()
                    headers = delivery_headers(delivery_id, body, signer)
                    t2 = clock()
                    request = client.build("POST", url, data=body, headers=headers)
                    t3 = clock()
                    started = time.monotonic()
                    response = client.send(request, url=url, allow_redirects=False)
                    t4 = clock()
                    sender.finish(Webhook("/hook", url, body, {}, delivery_id), started, response, None)
                    t5 = clock()
                    spent["build"] += (t1 - t0) + (t3 - t2)
                    spent["sign"] += t2 - t1
                    spent["send"] += t4 - t3
                    spent["record"] += t5 - t4
                for k in stages:
                    runs[t][k].append(spent[k] / n / 1000)
                runs[t]["total"].append(sum(spent.values()) / n / 1000)
                t0 = clock()
                for _ in range(n):
                    worker.send_webhook("/hook", PAYLOAD)
                runs[t]["send_webhook"].append((clock() - t0) / n / 1000)
    finally:
        for worker in workers.values():
            worker.close()
    rows = [{"transport": t, **{k: summary(v) for k, v in by.items()}} for t, by in runs.items()]
    return {"title": "CPU per webhook by stage, one thread, signed (µs)", "rows": rows, "stages": list(stages),
            "requests": s.stage_requests}


class _ThreadPeak:
    """The most threads the process had while it ran (sampled every millisecond, itself not counted)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="syncworkers-bench-threads", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, threading.active_count() - 1)

    def __enter__(self) -> "_ThreadPeak":
        self.peak = threading.active_count() - 1
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)


def figure9(slow_url: str, s: Settings) -> Dict[str, Any]:
    """Many in flight with few threads: broadcast and outbox at s.many in flight, s.many_threads threads."""
    n, threads = s.many, s.many_threads
    # The pool leaves room under the bound for the threads every worker has besides it (the outbox
    # loop, the runner's timer, the I/O thread, the deadline watchdog) and the sampler.
    pool = threads * 7 // 8
    delay_ms = int(LATENCY * 1000)
    endpoints = [f"/delay/{delay_ms}/ep{i}" for i in range(n)]
    transports = ["curl", "requests"] if bench_async.available("pycurl") else ["requests"]
    rows: List[Dict[str, Any]] = []
    for t in transports:
        config = WebhookConfig(max_workers=pool, max_retries=0, max_in_flight_per_host=n)
        http = HTTPClientConfig(transport=t, max_connections=n)
        worker = WebhookSenderWorker(base_url=slow_url, webhook_config=config, http_config=http)
        try:
            worker.broadcast_webhook(endpoints, PAYLOAD)  # open the connections
            walls, delivered, peaks = [], [], []
            for _ in range(s.broadcast_runs):
                with _ThreadPeak() as peak:
                    t0 = time.perf_counter()
                    result = worker.broadcast_webhook(endpoints, PAYLOAD)
                    walls.append(time.perf_counter() - t0)
                delivered.append(sum(1 for ok in result.values() if ok))
                peaks.append(peak.peak)
        finally:
            worker.close()
        rows.append({"path": f"broadcast to {n:,} endpoints", "transport": t, "threads": max(peaks),
                     "wall_s": summary(walls), "ideal_s": LATENCY, "delivered": min(delivered), "of": n,
                     "of_ideal": LATENCY / statistics.median(walls)})
    deliveries = 4 * n
    for t in transports:
        rates, peaks, flushed = [], [], []
        for run in range(max(1, s.runs - 2)):
            config = WebhookConfig(max_workers=pool, max_retries=0, max_in_flight_per_host=n)
            http = HTTPClientConfig(transport=t, max_connections=n)
            worker = WebhookSenderWorker(base_url=slow_url, webhook_config=config, http_config=http)
            try:
                for i in range(deliveries):
                    worker.enqueue(f"/delay/{delay_ms}/hook", PAYLOAD)
                with _ThreadPeak() as peak:
                    t0 = time.perf_counter()
                    worker.start()
                    flushed.append(worker.flush(120.0))
                    rates.append(deliveries / (time.perf_counter() - t0))
                peaks.append(peak.peak)
            finally:
                worker.stop(10.0)
                worker.close()
        rate = summary(rates)
        rows.append({"path": f"outbox: {deliveries:,} deliveries, {n:,} in flight", "transport": t,
                     "threads": max(peaks), "rps": rate, "ideal_rps": n / LATENCY, "flushed": all(flushed),
                     "of_ideal": rate["median"] / (n / LATENCY)})
    return {"title": f"Many in flight with few threads ({n:,} in flight, max_workers={pool}, "
                     f"{delay_ms} ms receiver)", "rows": rows, "in_flight": n, "max_threads": threads}


def _last_json(text: str) -> Optional[Dict[str, Any]]:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def figure6(fast_url: str, s: Settings) -> Dict[str, Any]:
    if not hasattr(WebhookSenderWorker, "enqueue"):
        return {"status": NOT_AVAILABLE, "reason": "WebhookSenderWorker has no enqueue() (outbox API)"}
    n, w = s.outbox_deliveries, s.outbox_workers
    walls: List[float] = []
    enqueue_ms: List[float] = []
    pending: List[int] = []
    direct = SyncworkersClient(fast_url, w)
    with tempfile.TemporaryDirectory(prefix="syncworkers-bench-outbox-") as tmp:
        try:
            for run in range(s.runs):
                worker = WebhookSenderWorker(base_url=fast_url, webhook_config=WebhookConfig(
                    max_workers=w, max_retries=0, outbox_path=os.path.join(tmp, f"outbox{run}.db")))
                try:
                    worker.start()
                    t0 = time.perf_counter()
                    for _ in range(n):
                        worker.enqueue("/hook", PAYLOAD)
                    enqueue_ms.append((time.perf_counter() - t0) / n * 1000)
                    flushed = worker.flush(60.0)
                    walls.append(time.perf_counter() - t0)
                    pending.append(0 if flushed else -1)
                finally:
                    worker.stop(10.0)
                    worker.close()
            direct.warm_up()
            direct_rows = [direct.run(s.duration, n) for _ in range(s.runs)]
        finally:
            direct.close()
    outbox = summary([n / x for x in walls])
    rps = summary([r["requests"] / r["wall"] for r in direct_rows])
    return {"title": f"Outbox (SQLite, durable) vs direct send_webhook, max_workers={w}", "threads": w,
            "deliveries": n, "outbox_rps": outbox, "direct_rps": rps, "enqueue_ms": summary(enqueue_ms),
            "flushed_all": all(p == 0 for p in pending),
            "ratio": outbox["median"] / rps["median"] if rps["median"] else None}


# -- machine and report --------------------------------------------------------------


def machine() -> Dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT, timeout=10).stdout.strip() or None
    except OSError:
        commit = None
    versions = {"syncworkers": syncworkers.__version__, "requests": requests.__version__,
                "urllib3": urllib3.__version__}
    for peer in bench_async.PEERS:
        versions[peer] = bench_async.version(peer) or "not installed"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": model, "cores": os.cpu_count(), "os": platform.platform(), "load_at_start": load,
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "versions": versions, "commit": commit}


def fmt_range(m: Dict[str, Any], digits: int = 0) -> str:
    return f"{m['median']:,.{digits}f} ({m['min']:,.{digits}f}–{m['max']:,.{digits}f})"


def fmt_x(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}×"


@dataclass
class Table:
    title: str
    headers: List[str]
    rows: List[List[str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def text(self) -> str:
        widths = [max(len(r[i]) for r in [self.headers] + self.rows) for i in range(len(self.headers))]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        out = [self.title, line(self.headers), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in self.rows] + [f"  {n}" for n in self.notes]
        return "\n".join(out)

    def rst(self) -> str:
        widths = [max(len(r[i]) for r in [self.headers] + self.rows) for i in range(len(self.headers))]
        rule = " ".join("=" * w for w in widths)
        line = lambda r: " ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        out = [f"**{self.title}**", "", rule, line(self.headers), rule] + [line(r) for r in self.rows] + [rule]
        if self.notes:
            out += [""] + [f"| {n}" for n in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        out = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |",
               "|" + "|".join("---" for _ in self.headers) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in self.rows] + [""] + self.notes
        return "\n".join(out)


def tables(results: Dict[str, Any]) -> List[Table]:
    figs = results["figures"]
    out: List[Table] = []

    def unavailable(key: str, title: str) -> bool:
        if key not in figs:
            return True
        fig = figs[key]
        if fig.get("status") is None and "error" not in fig:
            return False
        status = fig.get("error") or f"{fig['status']}: {fig.get('reason', '')}"
        out.append(Table(f"{key}. {title}", ["status"], [[status]]))
        return True

    if not unavailable("1", "Webhook throughput"):
        f1 = figs["1"]
        t = Table(f"1. {f1['title']}", ["client", "threads", "requests/s", "CPU µs/request",
                                        "vs Session", "vs naive", "vs urllib3"])
        for n in sorted({r["concurrency"] for r in f1["rows"]}):
            group = [r for r in f1["rows"] if r["concurrency"] == n]
            by = {r["client"].split()[0]: r for r in group}
            for r in group:
                t.rows.append([r["client"], str(n), fmt_range(r["rps"]), fmt_range(r["cpu_us"]),
                               fmt_x(ratio(r, by.get("requests.Session"))),
                               fmt_x(ratio(r, by.get("requests.post"))),
                               fmt_x(ratio(r, by.get("urllib3.PoolManager")))])
        errs = sum(r["errors"] for r in f1["rows"])
        if errs:
            t.notes.append(f"{errs} requests failed (counted in the rates)")
        out.append(t)
    if not unavailable("2", "Against async peers"):
        f2 = figs["2"]
        t = Table(f"2. {f2['title']}", ["client", "concurrency", "requests/s", "CPU µs/request",
                                        "vs syncworkers"])
        sw = f2["rows"][0]
        for r in f2["rows"]:
            t.rows.append([r["client"], str(r["concurrency"]), fmt_range(r["rps"]), fmt_range(r["cpu_us"]),
                           fmt_x(ratio(r, sw))])
        for peer, why in f2.get("skipped", {}).items():
            t.rows.append([peer, "—", why, "—", "—"])
        out.append(t)
    if not unavailable("3", "Latency-bound receiver"):
        f3 = figs["3"]
        t = Table(f"3. {f3['title']}", ["client", "concurrency", "deliveries/s", "ideal", "of ideal",
                                        "CPU µs/request"])
        for r in f3["rows"]:
            t.rows.append([r["client"], str(r["concurrency"]), fmt_range(r["rps"]), f"{r['ideal_rps']:,.0f}",
                           f"{r['of_ideal']:.0%}", fmt_range(r["cpu_us"])])
        t.notes.append("ideal = concurrency / 50 ms; requests.Session and urllib3 at the same concurrency "
                       "show what the stack allows on this machine")
        out.append(t)
    if not unavailable("4", "Broadcast"):
        f4 = figs["4"]
        ms = lambda m: {k: (v * 1000 if k != "runs" else [x * 1000 for x in v]) for k, v in m.items()}  # noqa: E731
        t = Table(f"4. {f4['title']}", ["measure", "ms", "ideal ms", "note"])
        t.rows.append([f"broadcast wall time ({f4['endpoints']} × {f4['ideal_s'] * 1000:.0f} ms)",
                       fmt_range(ms(f4["wall_s"])), f"{f4['ideal_s'] * 1000:.0f}",
                       f"{f4['delivered']}/{f4['endpoints']} delivered"])
        ff = f4["fail_fast_result"]
        t.rows.append(["fail_fast: call to return (1 fails at once, 15 take "
                       f"{f4['slow_endpoint_s']:.0f} s)", fmt_range(ms(f4["fail_fast_s"])), "≈ 0",
                       f"{ff.get('false', '?')}/{ff.get('endpoints', '?')} reported False"])
        out.append(t)
    if not unavailable("5", "Pollers"):
        f5 = figs["5"]
        t = Table(f"5. {f5['title']}", ["measure", "value"])
        res = f5.get("result") or {}
        if res:
            late, drift = res["lateness_ms"], res["drift_ms"]
            t.rows += [
                ["lateness p50 / p99 / max", f"{late['p50']:.2f} / {late['p99']:.2f} / {late['max']:.2f} ms"],
                [f"drift after {res['ticks']} ticks p50 / p99 / max",
                 f"{drift['p50']:.2f} / {drift['p99']:.2f} / {drift['max']:.2f} ms"],
                ["threads, peak (OS / Python)", f"{res['max_threads']} / {res['max_python_threads']} "
                                                f"(pool ≤ {res['max_workers']})"],
                ["peak RSS", f"{res['peak_rss_mb']:.1f} MB ({res['rss_per_poller_kb']:.1f} KB per poller)"],
                ["ticks run / expected, skipped", f"{res['ticks_run']:,} / {res['ticks_expected']:,}, "
                                                  f"{res['skipped_ticks']}"],
                ["poll errors", str(res["errors"])],
                ["client CPU per poll", f"{res['cpu_per_poll_ms']:.2f} ms"],
            ]
        else:
            t.rows.append(["output", (f5.get("stdout") or "").replace("\n", " | ")[:300]])
        t.notes.append(f"one run; percentiles over every tick; command: python {f5['command']}")
        out.append(t)
    if not unavailable("6", "Outbox"):
        f6 = figs["6"]
        t = Table(f"6. {f6['title']}", ["path", "deliveries/s", "vs direct"])
        t.rows.append(["outbox: enqueue() ×{} then flush()".format(f6["deliveries"]),
                       fmt_range(f6["outbox_rps"]), fmt_x(f6["ratio"])])
        t.rows.append([f"direct send_webhook, {f6['threads']} threads", fmt_range(f6["direct_rps"]), "1.00×"])
        t.notes.append(f"enqueue() alone (one thread, durable write): {fmt_range(f6['enqueue_ms'], 2)} ms per call; "
                       "outbox rate = deliveries / (first enqueue → flush() returned)")
        if not f6["flushed_all"]:
            t.notes.append("flush() timed out in at least one run")
        out.append(t)
    if not unavailable("7", "The libcurl transport"):
        f7 = figs["7"]
        t = Table(f"7. {f7['title']}", ["client", "concurrency", "requests/s", "CPU µs/request", "vs aiohttp"])
        for n in (8, 32):
            group = [r for r in f7["rows"] if r["concurrency"] == n]
            aio = next((r for r in group if r["client"].startswith("aiohttp")), None)
            for r in group:
                t.rows.append([r["client"], str(n), fmt_range(r["rps"]), fmt_range(r["cpu_us"]), fmt_x(ratio(r, aio))])
        lat = f7["latency"]
        for row in (lat, lat.get("aiohttp")):
            if row:
                t.rows.append([f"{row['client']}, 50 ms receiver", str(row["concurrency"]), fmt_range(row["rps"]),
                               fmt_range(row["cpu_us"]), f"{row['of_ideal']:.0%} of ideal {row['ideal_rps']:,.0f}/s"])
        cpu = f7["poller_cpu_ms"]
        for transport in ("curl", "requests"):
            value = cpu.get(transport)
            t.rows.append([f"{f7['pollers']:,} pollers at 1 s, {transport}", str(f7["pollers"]), "—",
                           "—" if value is None else f"{value * 1000:,.0f}", "—"])
        t.notes.append("poller rows: client CPU µs per poll (scripts/bench_pollers.py, HTTP_TRANSPORT set)")
        out.append(t)
    if not unavailable("8", "CPU by stage"):
        f8 = figs["8"]
        stages = f8["stages"]
        t = Table(f"8. {f8['title']}", ["transport"] + stages + ["sum", "send_webhook"])
        for r in f8["rows"]:
            t.rows.append([r["transport"]] + [fmt_range(r[k], 1) for k in stages]
                          + [fmt_range(r["total"], 1), fmt_range(r["send_webhook"], 1)])
        t.notes.append("build: JSON body, id, the request (headers merged and checked); sign: the Standard "
                       "Webhooks headers with HMAC-SHA256; send: the attempt (breaker, host limit, transport); "
                       "record: result, metrics, events, log; send_webhook: the whole call, for comparison")
        out.append(t)
    if not unavailable("9", "Many in flight"):
        f9 = figs["9"]
        t = Table(f"9. {f9['title']}", ["path", "transport", "threads (peak)", "result", "ideal", "of ideal"])
        for r in f9["rows"]:
            if "wall_s" in r:
                ms = {k: (v * 1000 if k != "runs" else [x * 1000 for x in v]) for k, v in r["wall_s"].items()}
                t.rows.append([r["path"], r["transport"], str(r["threads"]),
                               f"{fmt_range(ms)} ms, {r['delivered']}/{r['of']} delivered",
                               f"{r['ideal_s'] * 1000:.0f} ms", f"{r['of_ideal']:.0%}"])
            else:
                t.rows.append([r["path"], r["transport"], str(r["threads"]), f"{fmt_range(r['rps'])}/s",
                               f"{r['ideal_rps']:,.0f}/s", f"{r['of_ideal']:.0%}"])
        t.notes.append("threads: the process's peak while the path ran (the receiver runs in its own process); "
                       "the outbox is SQLite in a temp file")
        out.append(t)
    return out


def targets(results: Dict[str, Any]) -> List[Tuple[str, Optional[bool], str]]:
    figs = results["figures"]
    got: List[Tuple[str, Optional[bool], str]] = []
    for n, r in (figs.get("1", {}).get("ratios") or {}).items():
        if r["vs_session"] is not None:
            got.append((f"N={n}: syncworkers ≥ 1.0× requests.Session", r["vs_session"] >= 1.0,
                        fmt_x(r["vs_session"])))
        if r["vs_naive"] is not None:
            got.append((f"N={n}: syncworkers ≥ 1.5× naive requests.post", r["vs_naive"] >= 1.5,
                        fmt_x(r["vs_naive"])))
        if r["vs_urllib3"] is not None:
            got.append((f"N={n}: syncworkers vs raw urllib3 (as close as the stack allows)", None,
                        fmt_x(r["vs_urllib3"])))
    r2 = figs.get("2", {}).get("ratios") or {}
    if r2.get("vs_httpx") is not None:
        got.append(("syncworkers well ahead of httpx.AsyncClient", r2["vs_httpx"] > 1.2, fmt_x(r2["vs_httpx"])))
    if r2.get("aiohttp_vs_syncworkers") is not None:
        got.append(("aiohttp above syncworkers by", None, fmt_x(r2["aiohttp_vs_syncworkers"])))
    f7 = figs.get("7", {})
    for n, r in (f7.get("ratios") or {}).items():
        if r["vs_aiohttp"] is not None:
            got.append((f"N={n}: curl send_webhook ≥ 1.0× aiohttp (moonshot 1.5×)", r["vs_aiohttp"] >= 1.0,
                        fmt_x(r["vs_aiohttp"])))
        row = next((x for x in f7["rows"] if x["concurrency"] == int(n) and x["client"].endswith("(curl)")), None)
        if row:
            cpu = row["cpu_us"]["median"]
            got.append((f"N={n}: curl send_webhook ≤ 100 µs CPU (moonshot 60 µs)", cpu <= 100, f"{cpu:.0f} µs"))
    if f7.get("latency"):
        lat = f7["latency"]
        got.append((f"curl send_webhook, 50 ms receiver, {lat['concurrency']} threads ≥ 90% of ideal",
                    lat["of_ideal"] >= 0.9, f"{lat['of_ideal']:.0%}"))
        if lat.get("vs_aiohttp") is not None:
            got.append(("  the same against aiohttp", None, fmt_x(lat["vs_aiohttp"])))
    if f7.get("poller_cpu_ratio") is not None:
        got.append(("curl pollers' CPU ≤ 1/2 of the requests transport's", f7["poller_cpu_ratio"] <= 0.5,
                    f"{f7['poller_cpu_ratio']:.2f}×"))
    for r in figs.get("9", {}).get("rows") or []:
        if r["transport"] != "curl":
            continue
        limit = figs["9"]["max_threads"]
        ok = r["of_ideal"] >= 0.8 and r["threads"] <= limit
        got.append((f"{r['path']} ≥ 80% of ideal with ≤ {limit} threads", ok,
                    f"{r['of_ideal']:.0%}, {r['threads']} threads"))
    return got


def render(results: Dict[str, Any], style: str = "text") -> str:
    m = results["machine"]
    head = [f"syncworkers benchmarks — {results['mode']} run",
            f"command:  {results['command']}",
            f"machine:  {m['cpu']}, {m['cores']} cores, {m['os']}"
            + (f"; load average at start {m['load_at_start'][0]:.2f}" if m.get("load_at_start") else ""),
            f"python:   {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
            f"receiver: {results['receiver']}; latency receiver: {results['latency_receiver']}",
            f"each figure: median (min–max) of {results['runs']} runs; commit {m['commit']}"]
    body = [getattr(t, style)() for t in tables(results)]
    tgt = targets(results)
    if tgt:
        width = max(len(name) for name, _, _ in tgt)
        lines = [f"{name.ljust(width)}  {value:>7}  "
                 f"{'' if ok is None else ('met' if ok else 'MISSED')}".rstrip() for name, ok, value in tgt]
        body.append("targets\n" + "\n".join(lines) if style == "text" else
                    "**Targets**\n\n::\n\n" + "\n".join("    " + x for x in lines))
    if style == "text":
        return "\n".join(head) + "\n\n" + "\n\n".join(body)
    if style == "rst":
        return "::\n\n" + "\n".join("    " + h for h in head) + "\n\n" + "\n\n".join(body)
    return "```\n" + "\n".join(head) + "\n```\n\n" + "\n\n".join(body)


def chart(results: Dict[str, Any], path: str) -> Optional[str]:
    """Bars of figures 1 and 2: requests/s and CPU µs per request (median, min–max whiskers).

    Returns None when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: List[Tuple[str, List[Dict[str, Any]]]] = []
    f1 = results["figures"].get("1", {})
    for n in sorted({r["concurrency"] for r in f1.get("rows", [])}):
        groups.append((f"{n} thread{'s' if n > 1 else ''}", [r for r in f1["rows"] if r["concurrency"] == n]))
    f2 = results["figures"].get("2", {})
    if f2.get("rows"):
        groups.append(("vs async peers", f2["rows"]))
    if not groups:
        return None
    clients = list(dict.fromkeys(r["client"] for _, rows in groups for r in rows))
    palette = ["#1f77b4", "#7f7f7f", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    colors = dict(zip(clients, palette))
    fig, axes = plt.subplots(2, 1, figsize=(11, 9), dpi=110, sharex=True)
    width = 0.8 / max(len(rows) for _, rows in groups)
    for ax, key, label in ((axes[0], "rps", "requests/s"), (axes[1], "cpu_us", "client CPU µs per request")):
        labelled = set()
        for g, (_, rows) in enumerate(groups):
            for i, r in enumerate(rows):
                x = g + (i - (len(rows) - 1) / 2) * width
                m = r[key]
                ax.bar(x, m["median"], width * 0.92, color=colors[r["client"]],
                       yerr=[[m["median"] - m["min"]], [m["max"] - m["median"]]], capsize=3,
                       label=None if r["client"] in labelled else r["client"])
                labelled.add(r["client"])
                ax.text(x, m["max"], f"{m['median']:,.0f}", ha="center", va="bottom", fontsize=7)
        ax.set_ylabel(f"{label}\n(median, min–max)")
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(range(len(groups)))
    axes[1].set_xticklabels([name for name, _ in groups])
    axes[0].legend(fontsize=8, loc="upper left")
    mach = results["machine"]
    axes[0].set_title(f"Webhook throughput, small JSON POST to {results['receiver'].split(' (')[0]} on 127.0.0.1 "
                      f"({results['runs']} runs each)\n{mach['cpu']}, {mach['cores']} cores, {mach['python']}",
                      fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -- main ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> Dict[str, Any]:
    s = QUICK if args.quick else FULL
    if args.runs:
        s = dataclasses.replace(s, runs=args.runs)
    results: Dict[str, Any] = {"command": "python scripts/bench.py" + (" " if sys.argv[1:] else "")
                                          + shlex.join(sys.argv[1:]),
                               "mode": "quick" if args.quick else "full", "runs": s.runs,
                               "machine": machine(), "figures": {}}
    wanted = set(args.figures.split(",")) if args.figures else {"1", "2", "3", "4", "5", "6", "7", "8", "9"}
    with contextlib.ExitStack() as stack:
        fast = receivers.fast_receiver(args.receiver)
        stack.callback(fast.stop)
        slow = receivers.latency_receiver(args.receiver)
        stack.callback(slow.stop)
        results["receiver"] = fast.kind
        results["latency_receiver"] = slow.kind
        print(f"receiver: {fast.kind} at {fast.url}; latency receiver: {slow.kind} at {slow.url}",
              file=sys.stderr)
        steps: List[Tuple[str, Callable[[], Dict[str, Any]]]] = [
            ("1", lambda: figure1(fast.url, s)),
            ("2", lambda: figure2(fast.url, s)),
            ("3", lambda: figure3(slow.url, s)),
            ("4", lambda: figure4(slow.url, s)),
            ("5", lambda: figure5(s, args.quick)),
            ("6", lambda: figure6(fast.url, s)),
            ("7", lambda: figure7(fast.url, slow.url, s, args.quick)),
            ("8", lambda: figure8(fast.url, s)),
            ("9", lambda: figure9(slow.url, s)),
        ]
        for key, step in steps:
            if key not in wanted:
                continue
            t0 = time.monotonic()
            print(f"figure {key}...", file=sys.stderr, flush=True)
            try:
                results["figures"][key] = step()
            except Exception as exc:  # one broken figure must not hide the others
                traceback.print_exc()
                results["figures"][key] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"figure {key} took {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    return results


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (~30 s): proves the harness works")
    parser.add_argument("--out", metavar="DIR", help="write results.json, bench.png, bench.rst, bench.md")
    parser.add_argument("--rst", action="store_true", help="also print an RST snippet for README.rst")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown snippet")
    parser.add_argument("--runs", type=int, help="runs per measurement (default 5; 3 with --quick)")
    parser.add_argument("--figures", help="comma-separated subset, e.g. 1,2 (default: all)")
    parser.add_argument("--receiver", choices=("auto", "nginx", "python"), default="auto",
                        help="fast receiver (default: nginx if installed, else python)")
    args = parser.parse_args(argv)
    results = run(args)
    print(render(results))
    if args.rst:
        print("\n" + render(results, "rst"))
    if args.markdown:
        print("\n" + render(results, "markdown"))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        png = chart(results, os.path.join(args.out, "bench.png"))
        results["chart"] = png
        if png is None:
            print("chart skipped: matplotlib is not installed", file=sys.stderr)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=2, ensure_ascii=False)
        for style, name in (("rst", "bench.rst"), ("markdown", "bench.md")):
            with open(os.path.join(args.out, name), "w") as f:
                f.write(render(results, style) + "\n")
    failed = [k for k, v in results["figures"].items() if "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
