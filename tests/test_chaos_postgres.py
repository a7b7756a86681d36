"""Three real processes share one PostgreSQL outbox through a misbehaving receiver; one is killed -9.

Every delivery ends received or dead, none is lost, and no delivery is ever on the
wire from two processes at once (the receiver counts overlapping requests per id).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter

import pytest

from syncworkers import WebhookConfig
from syncworkers.outbox import DEAD, DELIVERED, open_outbox
from syncworkers.workers.webhook import WebhookSenderWorker

from .chaos import ChaosReceiver
from .helpers import need_module, wait_for
from .test_chaos import ROOT

need_module("psycopg", "PostgreSQL")

SENDER = """
import sys
from syncworkers import CircuitBreakerConfig, HTTPClientConfig, RetryConfig, WebhookConfig
from syncworkers.outbox import open_outbox
from syncworkers.workers.webhook import WebhookSenderWorker
url, base, owner = sys.argv[1], sys.argv[2], sys.argv[3]
http = HTTPClientConfig(timeout=2.0, max_response_size=64 * 1024, retry_config=RetryConfig(retry_after_max=0.05),
                        circuit_breaker_config=CircuitBreakerConfig(failure_threshold=5, timeout_seconds=0.05))
outbox = open_outbox(url, owner=owner, lease_seconds=3, pool_size=10)
sender = WebhookSenderWorker(base, WebhookConfig(retry_schedule=(0.01, 0.02, 0.05), max_workers=8), http,
                             outbox=outbox, name=owner)
sender.start()
print("started", flush=True)
sys.stdin.read()  # until the test closes our stdin (or kills us)
ok = sender.stop(timeout=30)
sender.close()
outbox.close()
print("stopped", ok, flush=True)
"""


def enable_all(box):
    """Enable every disabled endpoint again (what an operator does with ``outbox enable``); None."""
    for endpoint in box.endpoints():
        if not endpoint.enabled:
            box.enable_endpoint(endpoint.endpoint)


def test_three_processes_one_killed_every_delivery_received_or_dead_none_concurrent(pg_db):
    count = 400
    with ChaosReceiver(seed=7, slow_seconds=0.05, stall_seconds=2.5) as rx:
        producer = WebhookSenderWorker(rx.base_url, WebhookConfig(outbox_url=pg_db))
        try:
            sent = [producer.enqueue("/hook", {"n": n}) for n in range(count)]
        finally:
            producer.close()
        procs = [subprocess.Popen([sys.executable, "-c", SENDER, pg_db, rx.base_url, f"p{i}"], cwd=ROOT,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(3)]
        try:
            for proc in procs:
                assert proc.stdout.readline().strip() == "started", proc.stderr.read()
            with open_outbox(pg_db) as box:
                # A 410 disables the endpoint and holds what is left; an operator enables it again.
                assert wait_for(lambda: enable_all(box) or sum(rx.seen.values()) >= count // 4, timeout=60)
                procs[0].kill()  # SIGKILL mid-run: its claims are taken over when their leases expire
                procs[0].wait(30)
                assert wait_for(lambda: enable_all(box) or box.counts()["pending"] + box.counts()["held"] == 0,
                                timeout=120), box.counts()
                rows = box.list(limit=10 * count)
                counts = box.counts()
            for proc in procs[1:]:
                out, err = proc.communicate("", timeout=60)
                assert proc.returncode == 0 and "stopped True" in out, err
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate(timeout=30)
    assert procs[0].returncode == -signal.SIGKILL
    assert counts["delivered"] + counts["dead"] == count
    by_state = {DELIVERED: set(), DEAD: set()}
    for row in rows:
        by_state[row.state].add(row.id)
    received = set(rx.accepted)
    assert by_state[DELIVERED] | by_state[DEAD] == set(sent)  # none lost
    assert by_state[DELIVERED] <= received  # delivered means the receiver said 200
    assert received | by_state[DEAD] == set(sent)
    assert all(row.last_error for row in rows if row.state == DEAD)
    assert rx.overlaps == 0  # never on the wire twice at once
    assert rx.conflicts == 0 and set(rx.seen) <= set(sent)
    owners = Counter(row.owner for row in rows)
    assert owners == Counter({None: count})  # every claim settled
