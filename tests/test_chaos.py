"""Fault injection: thousands of webhooks through a misbehaving receiver, kill -9, SIGTERM, two owners.

Receivers run in this process on 127.0.0.1; senders run here or in real
subprocesses. Where a process must be stopped mid-delivery, the receiver holds
requests on an Event and the test acts once they are provably in flight.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter

import pytest

from syncworkers import CircuitBreakerConfig, HTTPClientConfig, RetryConfig, WebhookConfig
from syncworkers.outbox import DEAD, DELIVERED, Outbox
from syncworkers.workers.webhook import WebhookSenderWorker

from .chaos import DEFAULT_WEIGHTS, FAULTS, ChaosReceiver, quiet
from .helpers import wait_for
from .server import LoopbackServer, Reply

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HoldAfter:
    """Answers the first *free* requests at once, then holds each until ``release`` is set.

    Records every request's webhook-id and body, and how many are held now.
    """

    def __init__(self, free: int):
        self.free = free
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.requests = []  # (webhook-id, body), in arrival order
        self.held = 0
        self.answered = Counter()  # webhook-id -> 200s written

    def __call__(self, req):
        with self.lock:
            self.requests.append((req.header("webhook-id"), req.body))
            hold = len(self.requests) > self.free
            self.held += hold
        if hold:
            self.release.wait(30)
            with self.lock:
                self.held -= 1
        with self.lock:
            self.answered[req.header("webhook-id")] += 1
        return Reply(200)


def test_thousands_of_webhooks_through_chaos_end_received_or_dead_with_a_reason(tmp_path):
    sent_count = 2000
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    # Short timeouts and a compressed schedule; a read timeout 40x the slow answer, so that an
    # answer the receiver counts as accepted is never one the sender gave up on.
    http = HTTPClientConfig(timeout=2.0, max_response_size=64 * 1024,
                            retry_config=RetryConfig(retry_after_max=0.05),
                            circuit_breaker_config=CircuitBreakerConfig(failure_threshold=5, timeout_seconds=0.05))
    config = WebhookConfig(outbox_path=str(tmp_path / "outbox.db"), retry_schedule=(0.01, 0.02, 0.05),
                           max_workers=64)
    # Each 410 costs a round (the operator waits for the requests in flight, a stalled one until its
    # timeout, then enables the endpoint): an eighth of the default share keeps a handful of rounds.
    weights = dict(DEFAULT_WEIGHTS, **{"410": 0.25})
    with ChaosReceiver(seed=20240501, weights=weights, secret=secret, slow_seconds=0.05, stall_seconds=2.5) as rx:
        sender = WebhookSenderWorker(rx.base_url, config, http, signing_secret=secret)
        sender.start()
        try:
            sent = [sender.enqueue("/hook", {"n": n}) for n in range(sent_count)]
            # Each 410 disables the endpoint and holds what is left: an operator enables it
            # again, and again, until nothing is held (nothing is lost meanwhile).
            enabled = 0
            while not sender.flush(timeout=120):
                assert sender.outbox.counts()["held"] > 0 and enabled < sent_count
                [endpoint] = sender.outbox.endpoints()
                assert endpoint.reason == "status 410 Gone"
                sender.outbox.enable_endpoint(endpoint.endpoint)
                enabled += 1
            assert sender.stop(timeout=10)
            rows = sender.outbox.list(limit=10 * sent_count)
            counts = sender.outbox.counts()
            metrics = sender.health()["metrics"]
        finally:
            sender.close()
    assert counts["pending"] == counts["held"] == 0 and counts["delivered"] + counts["dead"] == sent_count
    assert enabled > 0
    by_state = {DELIVERED: set(), DEAD: set()}
    for row in rows:
        by_state[row.state].add(row.id)
    received, dead = set(rx.accepted), by_state[DEAD]
    assert len(set(sent)) == sent_count
    assert received | dead == set(sent) and not received & dead  # received-unique + dead = sent
    assert received == by_state[DELIVERED]
    assert set(rx.seen) <= set(sent)
    reasons = Counter(row.last_error.split(":")[0] for row in rows if row.state == DEAD)
    assert set(reasons) <= {"gone", "exhausted after 4 attempts"} and reasons["gone"] > 0
    assert rx.bad_signatures == 0 and rx.conflicts == 0
    assert set(rx.faults) == set(FAULTS)  # every fault happened
    assert sum(rx.seen.values()) > sent_count  # and was retried
    assert metrics["outbox_postponed"] > metrics.get("outbox_circuit_open", 0)  # Retry-After postponed too


CHILD = """
import json, sys, threading
from syncworkers import WebhookConfig
from syncworkers.outbox import Outbox
from syncworkers.workers.webhook import WebhookSenderWorker
path, base, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
outbox = Outbox(path, lease_seconds=2)
sender = WebhookSenderWorker(base, WebhookConfig(retry_schedule=(0.05, 0.1, 0.2), max_workers=4,
                                                 max_in_flight_per_host=4), outbox=outbox)
if mode == "first":
    ids = [sender.enqueue("/hook", {"n": n}) for n in range(count)]
    print(json.dumps(ids), flush=True)
    sender.start()
    threading.Event().wait(60)  # killed long before
else:
    flushed = sender.flush(30)
    print(json.dumps({"flushed": flushed, **outbox.counts()}), flush=True)
    sender.close()
"""


@pytest.mark.transport_independent
def test_a_process_killed_mid_delivery_loses_nothing(tmp_path):
    path, count = str(tmp_path / "outbox.db"), 120
    gate = HoldAfter(free=40)
    with quiet(LoopbackServer()) as server:
        server.route("POST", "/hook", handler=gate)
        first = subprocess.Popen([sys.executable, "-c", CHILD, path, server.base_url, str(count), "first"],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            enqueued = json.loads(first.stdout.readline())
            assert wait_for(lambda: gate.held == 4, timeout=30)  # 40 answered, 4 on the wire
        finally:
            first.kill()  # SIGKILL
            first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL
        gate.release.set()  # the held requests are answered to a dead process
        second = subprocess.run([sys.executable, "-c", CHILD, path, server.base_url, str(count), "second"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {"flushed": True, "pending": 0, "in_flight": 0, "delivered": count,
                                         "dead": 0, "held": 0}
    assert len(enqueued) == count
    received = Counter(id for id, _ in gate.requests)
    assert set(received) == set(enqueued)  # nothing missing, and no id the sender did not enqueue
    duplicates = {id for id, n in received.items() if n > 1}
    assert len(duplicates) >= 4  # those on the wire at the kill were sent again, under the same id
    for id in duplicates:
        assert len({body for rid, body in gate.requests if rid == id}) == 1


#: A sender whose first outcome never reaches the store: its write blocks (and says so) until the test
#: kills the process. Everything else is the real store and sender, in a real process.
UNRECORDED = """
import json, sys, threading
from syncworkers import HTTPClientConfig, WebhookConfig
from syncworkers.outbox import open_outbox
from syncworkers.workers.webhook import WebhookSenderWorker
location, base, transport = sys.argv[1], sys.argv[2], sys.argv[3]
outbox = open_outbox(location, lease_seconds=2)

def settle(settlements, **options):  # the outcome is decided; the process dies before it is written
    print("recording " + " ".join(s.id for s in settlements), flush=True)
    threading.Event().wait()

outbox.settle = settle
sender = WebhookSenderWorker(base, WebhookConfig(max_workers=1, retry_schedule=(0.05,)),
                             HTTPClientConfig(transport=transport), outbox=outbox)
print(json.dumps([sender.enqueue("/hook", {"n": n}) for n in range(3)]), flush=True)
sender.start()
threading.Event().wait(60)  # killed long before
"""


def test_a_process_killed_between_an_attempt_and_its_record_sends_it_again_and_loses_nothing(location):
    from syncworkers.config import settings
    from syncworkers.outbox import open_outbox

    received = []
    with quiet(LoopbackServer()) as server:
        server.route("POST", "/hook", handler=lambda req: received.append(req.header("webhook-id")) or Reply(200))
        first = subprocess.Popen([sys.executable, "-c", UNRECORDED, location, server.base_url,
                                  settings.DEFAULT_TRANSPORT], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            enqueued = json.loads(first.stdout.readline())
            recording = first.stdout.readline().split()
            assert recording[:1] == ["recording"], first.stderr.read()
        finally:
            first.kill()  # SIGKILL between the attempt (answered 200) and its record
            first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL
        [unrecorded] = recording[1:]  # one thread: one attempt made, and it is the one left unrecorded
        assert received == [unrecorded]
        with open_outbox(location, lease_seconds=2) as box:
            assert (box.get(unrecorded).state, box.get(unrecorded).attempts) == ("in_flight", 0)
            assert box.attempts(unrecorded) == []
            sender = WebhookSenderWorker(server.base_url, WebhookConfig(retry_schedule=(0.05,)), outbox=box)
            try:
                assert sender.flush(timeout=30)  # takes the claim over once its lease expires
            finally:
                sender.close()
            assert box.counts() == {"pending": 0, "in_flight": 0, "delivered": 3, "dead": 0, "held": 0}
            log = box.attempts(unrecorded)
    assert Counter(received) == Counter({unrecorded: 2, **{id: 1 for id in enqueued if id != unrecorded}})
    assert [attempt.status for attempt in log] == [200]  # the attempt log misses the one the kill took


def test_sigterm_drains_deliveries_in_flight_and_exits_0(tmp_path):
    path, count = str(tmp_path / "outbox.db"), 100
    gate = HoldAfter(free=20)
    with quiet(LoopbackServer()) as server:
        server.route("POST", "/hook", handler=gate)
        producer = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=path))
        enqueued = [producer.enqueue("/hook", {"n": n}) for n in range(count)]
        producer.close()
        env = {**os.environ, "HTTP_BASE_URL": server.base_url, "WEBHOOK_OUTBOX_PATH": path,
               "WEBHOOK_RETRY_SCHEDULE": "0.05,0.1", "WEBHOOK_MAX_IN_FLIGHT_PER_HOST": "32"}  # the whole pool on one host
        proc = subprocess.Popen([sys.executable, "-c", "from syncworkers.cli import main; main()", "run",
                                 "tests.chaos:EnvSender", "--log-level", "INFO"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stopping = threading.Event()
        log = []

        def read_stderr():
            for line in proc.stderr:
                log.append(line)
                if "STOP EVENT SET" in line:  # from here on no new delivery starts
                    stopping.set()

        reader = threading.Thread(target=read_stderr, name="test-stderr-reader")
        reader.start()
        try:
            assert wait_for(lambda: gate.held == 32, timeout=30)  # 20 answered, a full pool on the wire
            proc.send_signal(signal.SIGTERM)
            assert stopping.wait(30), "".join(log)
            gate.release.set()  # the requests in flight end only now, during the drain
            assert proc.wait(timeout=60) == 0, "".join(log)
        finally:
            gate.release.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            reader.join(30)
        assert "SHUTDOWN in_flight=0\n" in log  # the Runner waited for the drain before shutdown()
        with Outbox(path) as box:
            assert box.counts() == {"pending": count - 52, "in_flight": 0, "delivered": 52, "dead": 0, "held": 0}
            delivered = {d.id for d in box.list(state=DELIVERED, limit=1000)}
        assert delivered == set(gate.answered) and len(gate.requests) == 52

        restarted = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=path))
        try:
            assert restarted.flush(timeout=30)
        finally:
            restarted.close()
    assert sorted(id for id, _ in gate.requests) == sorted(enqueued)  # each exactly once


def test_two_owners_on_one_file_never_send_a_delivery_concurrently(tmp_path):
    """Requests outlive the lease (3 s > 2 s): renewal keeps the other owner off them."""
    path = str(tmp_path / "outbox.db")
    lock = threading.Lock()
    active, overlaps, received = Counter(), [0], Counter()

    def handler(req):
        id = req.header("webhook-id")
        with lock:
            active[id] += 1
            overlaps[0] += active[id] > 1
            received[id] += 1
        try:
            if req.path == "/slow":
                threading.Event().wait(3.0)
            return Reply(200)
        finally:
            with lock:
                active[id] -= 1

    with LoopbackServer() as server:
        server.route("POST", "/slow", handler=handler)
        server.route("POST", "/fast", handler=handler)
        boxes = [Outbox(path, owner=owner, lease_seconds=2) for owner in ("A", "B")]
        senders = [WebhookSenderWorker(server.base_url, WebhookConfig(max_workers=8), outbox=box,
                                       name=f"sender-{box.owner}") for box in boxes]
        try:
            ids = [senders[0].enqueue("/slow", {"n": n}) for n in range(16)]
            ids += [senders[n % 2].enqueue("/fast", {"n": n}) for n in range(300)]
            for sender in senders:
                sender.start()
            assert senders[1].flush(timeout=60)
            for sender in senders:
                assert sender.stop(timeout=10)
        finally:
            for sender in senders:
                sender.close()
            for box in boxes:
                box.close()
    assert overlaps[0] == 0
    assert set(received) == set(ids) and set(received.values()) == {1}  # each sent exactly once


@pytest.mark.transport_independent
def test_the_chaos_receiver_serves_each_fault_as_scripted():
    # One request per scripted fault: over requests, which never resends on its own (libcurl resends a
    # request that a reused connection dropped unanswered, which would shift the script).
    http = HTTPClientConfig(timeout=0.5, max_response_size=64 * 1024, max_retries=0, circuit_breaker_config=None,
                            transport="requests")
    expected = {
        "ok": (True, 200, None), "slow": (True, 200, None),
        "500": (False, 500, "status 500"), "503": (False, 503, "status 503"), "410": (False, 410, "status 410"),
        "429": (False, 429, "status 429"), "redirect": (False, 302, "redirects are not followed"),
        "close": (False, None, "connection failed"), "reset": (False, None, "connection failed"),
        "stall": (False, None, "read timeout"), "huge": (True, 200, None),
    }
    with ChaosReceiver(script=list(expected), stall_seconds=1.0) as rx:
        with WebhookSenderWorker(rx.base_url, http_config=http) as sender:
            results = {fault: sender.deliver("/hook", {"fault": fault}) for fault in expected}
        assert rx.faults == Counter(list(expected))
        assert set(rx.accepted) == {results[f].delivery_id for f in ("ok", "slow", "huge")}
    for fault, (ok, status, error) in expected.items():
        result = results[fault]
        assert (result.ok, result.status_code) == (ok, status), fault
        if error is None:
            assert result.error is None, fault
        else:
            assert error in result.error, (fault, result.error)
    assert rx.seen[results["429"].delivery_id] == 1
