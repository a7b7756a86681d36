"""Every ``code-block:: python`` sample of README.rst, run as written against servers on 127.0.0.1.

The samples of "In web apps, cron and gunicorn" are run by test_readme_frameworks.py; every other
one is run here. Only network destinations (and the ``/var/lib/app/`` folder, the placeholder
``"whsec_..."``, the durations of the deadline sample, scaled down) are substituted in the text
before it is executed; names a sample leaves to the reader (``customer_url``, ``payload``,
``upsert_order``) are given in its namespace. A block added to the README without a test here
fails ``test_every_python_sample_is_run_by_a_test``.
"""

import ast
import collections
import json
import os
import re
import socket
import textwrap
import threading
import time
import types
from typing import Dict, List, NamedTuple
from urllib.parse import parse_qs

import pytest

from .helpers import LogCapture, closed_port, need_module, new_secret, wait_for
from .server import Reply

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.rst")
#: Its samples are run by test_readme_frameworks.py.
FRAMEWORKS_SECTION = "In web apps, cron and gunicorn"
#: Its samples are run by test_log_formats.py.
LOGS_SECTION = "Logs and traces in web apps"


class Sample(NamedTuple):
    heading: str
    line: int  # where the code starts in README.rst (1-based)
    code: str


def python_samples() -> List[Sample]:
    """Every ``.. code-block:: python`` of the README with the section heading it sits under."""
    lines = open(README, encoding="utf-8").read().split("\n")
    found, heading, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and re.fullmatch(r"-{3,}", lines[i + 1]):
            heading = line.strip()
        if line.strip() == ".. code-block:: python":
            start = i + 1
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                i += 1
            found.append(Sample(heading, start + 2, textwrap.dedent("\n".join(lines[start:i])).strip() + "\n"))
            continue
        i += 1
    return found


#: (heading, a phrase only that sample has): the samples run here, one test each.
COVERED = [
    ("Polling an API", "class PaymentStatusPoller"),
    ("Pages, incremental cursors and rate limits", "orders = PollerWorker("),
    ("Pages, incremental cursors and rate limits", "class SinceIdPaginator"),
    ("Pages, incremental cursors and rate limits", "class OrderSync"),
    ("Sending webhooks", "sender.broadcast_webhook("),
    ("Durable delivery: the outbox", "sender.enqueue("),
    ("Several processes, several machines", "connection=conn"),
    ("Signing and verifying (Standard Webhooks)", "def webhook_view"),
    ("Running workers", "with Runner(["),
    ("One poll per tick, cluster-wide", 'coordination="redis://'),
    ("Resilience", "HTTPClientConfig(deadline="),
    ("Transports: requests or libcurl", 'transport="curl"'),
    ("Security", "block_private_networks=True"),
    ("Logging and secrets", "secret_headers="),
]


def sample(heading: str, phrase: str) -> Sample:
    found = [s for s in python_samples() if s.heading == heading and phrase in s.code]
    assert len(found) == 1, f"one sample with {phrase!r} under {heading!r} expected, found {len(found)}"
    return found[0]


@pytest.mark.transport_independent
def test_every_python_sample_is_run_by_a_test():
    samples = [s for s in python_samples() if s.heading not in (FRAMEWORKS_SECTION, LOGS_SECTION)]
    untested = collections.Counter(s.heading for s in samples)
    untested.subtract(heading for heading, _ in COVERED)
    assert not +untested and not -untested, (
        f"README python samples per section without a test here (+) or tests without a sample (-): "
        f"{dict(untested)}")
    for heading, phrase in COVERED:
        sample(heading, phrase)
    assert any(s.heading == FRAMEWORKS_SECTION for s in python_samples())  # test_readme_frameworks' part


HOST = re.compile(r"\b(?:https?|redis|rediss|postgresql)://(?:[^@/\s\"']*@)?([^/:\s\"']+)")


def run(found: Sample, substitutions: Dict[str, str], namespace=None) -> dict:
    """Execute *found* with each substitution made (each must apply), its URLs all on 127.0.0.1."""
    code = found.code
    for old, new in substitutions.items():
        assert old in code, f"{old!r} is no longer in the README sample at line {found.line}"
        code = code.replace(old, new)
    uncommented = "\n".join(re.sub(r"\s#.*$", "", line) for line in code.splitlines())
    hosts = set(HOST.findall(uncommented))
    assert hosts <= {"127.0.0.1"}, f"the sample at line {found.line} would reach {hosts - {'127.0.0.1'}}"
    ns = namespace if namespace is not None else {}  # the caller's dict: helpers it holds see the names
    ns.setdefault("__name__", "readme_sample")
    exec(compile(code, f"README.rst:{found.line}", "exec"), ns)
    return ns


def close_all(ns, *names):
    for name in names:
        if name in ns:
            ns[name].close()


# -- Polling an API ----------------------------------------------------------------------------


def test_the_poller_sample_polls_with_its_token_and_params_and_processes_the_response(server):
    server.route("GET", "/status", json=[{"id": 1}, {"id": 2}])
    found = sample("Polling an API", "class PaymentStatusPoller")
    assert 'if __name__ == "__main__":\n    PaymentStatusPoller().run_sync()' in found.code
    ns = run(found, {"https://api.payments.com": server.base_url})
    processed = []
    done = threading.Event()

    class Recorded(ns["PaymentStatusPoller"]):
        def process_message(self, message):
            result = super().process_message(message)
            processed.append((message.headers["status_code"], message.body, result))
            done.set()
            return result

    poller = Recorded()
    main = threading.Thread(target=poller.run_sync, name="readme-main")  # what __main__ runs
    main.start()
    try:
        assert done.wait(20), "no poll reached process_message"
    finally:
        assert poller.stop(timeout=10)
        main.join(10)
    assert not main.is_alive()
    assert processed == [(200, [{"id": 1}, {"id": 2}], {"processed": True})]
    call = server.calls("/status")[0]
    assert call.header("Authorization") == "Bearer your-token" and parse_qs(call.query) == {"status": ["pending"]}


# -- Pages, incremental cursors and rate limits ------------------------------------------------


def test_the_offset_pagination_sample_walks_every_page_in_one_tick(server):
    orders = [{"id": n} for n in range(130)]

    def page(req):
        query = parse_qs(req.query)
        offset, limit = int(query["offset"][0]), int(query["limit"][0])
        return Reply(200, json.dumps({"data": orders[offset:offset + limit]}),
                     {"Content-Type": "application/json"})

    server.route("GET", "/orders", handler=page)
    ns = run(sample("Pages, incremental cursors and rate limits", "orders = PollerWorker("),
             {"https://api.example.com": server.base_url})
    try:
        outcome = ns["orders"].run_once()
    finally:
        close_all(ns, "orders")
    assert outcome.ok and outcome.messages == 130 and outcome.results == orders  # one message per item
    assert [parse_qs(c.query) for c in server.calls("/orders")] == [
        {"limit": ["100"], "offset": ["0"]}, {"limit": ["100"], "offset": ["100"]}]  # 30 < 100: the last
    # The other paginators its comments show are built as written.
    code = sample("Pages, incremental cursors and rate limits", "orders = PollerWorker(").code
    exprs = re.findall(r"^# (\w+Paginator\(.*?\))(?=\s)", code, flags=re.M)
    assert len(exprs) == 4
    for expr in exprs:
        assert type(eval(expr, ns)).__name__ == expr.split("(")[0]


def test_the_since_id_paginator_sample_asks_for_what_follows_the_last_item(server):
    from syncworkers import PollerWorker

    events = [{"id": n} for n in range(1, 6)]

    def page(req):
        since = int(parse_qs(req.query).get("since_id", ["0"])[0])
        items = [e for e in events if e["id"] > since][:2]
        return Reply(200, json.dumps(items), {"Content-Type": "application/json"})

    server.route("GET", "/events", handler=page)
    ns = run(sample("Pages, incremental cursors and rate limits", "class SinceIdPaginator"), {})
    with PollerWorker(server.url("/events"), interval=60, paginator=ns["SinceIdPaginator"]()) as poller:
        outcome = poller.run_once()
    assert outcome.ok and outcome.results == [events[0:2], events[2:4], events[4:5], []]  # the empty page ends the walk
    assert [c.query for c in server.calls("/events")] == ["", "since_id=2", "since_id=4", "since_id=5"]


def test_the_incremental_cursor_sample_resumes_from_the_stored_cursor_after_a_restart(server, tmp_path):

    orders = [{"id": 1, "updated_at": "2024-01-02T00:00:00Z"}, {"id": 2, "updated_at": "2024-01-03T10:00:00Z"}]
    asked = []

    def page(req):
        since = parse_qs(req.query)["updated_since"][0]
        asked.append(since)
        items = [o for o in orders if o["updated_at"] >= since]  # the API filters with >=
        return Reply(200, json.dumps({"data": items}), {"Content-Type": "application/json"})

    server.route("GET", "/orders", handler=page)
    upserted = []
    found = sample("Pages, incremental cursors and rate limits", "class OrderSync")
    substitutions = {"https://api.example.com": server.base_url, "/var/lib/app/": f"{tmp_path}/"}
    ns = run(found, substitutions, {"upsert_order": upserted.append})
    with ns["OrderSync"]() as first:
        assert first.run_once().ok
    assert asked == ["2024-01-01T00:00:00Z"] and upserted == orders
    assert (tmp_path / "poller-state.db").exists()  # the state_url of the sample, moved to tmp_path
    with ns["OrderSync"]() as restarted:  # a new process: the cursor comes from the file
        assert restarted.run_once().ok
    assert asked[1] == "2024-01-03T10:00:00Z" and upserted[2:] == [orders[1]]


# -- Sending webhooks ----------------------------------------------------------------------------


def test_the_sending_sample_delivers_signed_webhooks_directly_by_name_and_by_broadcast(server):
    from syncworkers import verify

    for path in ("/orders/created", "/orders/webhook", "/a", "/b", "/c"):
        server.route("POST", path, status=200)
    found = sample("Sending webhooks", "sender.broadcast_webhook(")
    secret = re.search(r'"(whsec_\w+)"', found.code).group(1)
    ns = {}
    try:
        ns = run(found, {"https://webhooks.example.com": server.base_url})
    finally:
        close_all(ns, "sender")
    assert ns["ok"] is True
    result = ns["result"]
    assert result.ok and result.status_code == 200 and result.attempts == 1
    assert server.calls("/orders/webhook")[0].header("webhook-id") == result.delivery_id  # the name's path
    assert ns["results"] == {"/a": True, "/b": True, "/c": True}
    assert set(ns["causes"]) == {"/a", "/b"} and all(r.ok for r in ns["causes"].values())
    assert [len(server.calls(p)) for p in ("/orders/created", "/orders/webhook", "/a", "/b", "/c")] == [1, 1, 2, 2, 1]
    for call in server.requests:
        assert verify(call.body, call.headers, secret)
    assert server.calls("/orders/created")[0].json() == {"order_id": 42}


def test_the_outbox_sample_delivers_what_it_enqueued_in_the_background(server, tmp_path):
    from syncworkers import WebhookConfig, WebhookSenderWorker, verify

    server.route("POST", "/hooks/orders", status=200)
    secret = new_secret()
    found = sample("Durable delivery: the outbox", "sender.enqueue(")
    names = {"WebhookSenderWorker": WebhookSenderWorker, "WebhookConfig": WebhookConfig}  # the previous sample's
    ns = {}
    try:
        ns = run(found, {"https://partner.example": server.base_url, "/var/lib/app/": f"{tmp_path}/",
                         '"whsec_..."': repr(secret)}, names)
        assert wait_for(lambda: ns["sender"].outbox.counts()["delivered"] == 1, timeout=20)
    finally:
        if "sender" in ns:
            assert ns["sender"].stop(timeout=10)
        close_all(ns, "sender")
    [call] = server.calls("/hooks/orders")
    assert call.header("webhook-id") == ns["delivery_id"] and call.json() == {"order": 42}
    assert verify(call.body, call.headers, secret)
    assert (tmp_path / "outbox.db").exists()  # durable: the file of outbox_path


# -- Several processes, several machines -------------------------------------------------------------


def test_the_transactional_enqueue_sample_sends_the_committed_webhook_and_never_the_rolled_back_one(
        server, pg_db, monkeypatch):
    psycopg = need_module("psycopg", "PostgreSQL")
    from syncworkers import WebhookSenderWorker

    server.route("POST", "/hooks/orders", status=200)
    enqueued = []
    enqueue = WebhookSenderWorker.enqueue

    def recorded(self, *args, **kwargs):
        enqueued.append(enqueue(self, *args, **kwargs))
        return enqueued[-1]

    monkeypatch.setattr(WebhookSenderWorker, "enqueue", recorded)  # to learn the ids the sample drops
    with psycopg.connect(pg_db, autocommit=True) as conn:
        # The sample's orders table. Its foreign key is checked at COMMIT, after the enqueue: while
        # order 42 has no account, the sample's commit fails and the transaction rolls back whole.
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY REFERENCES accounts DEFERRABLE INITIALLY DEFERRED)")
    found = sample("Several processes, several machines", "connection=conn")
    substitutions = {"postgresql://app:secret@db.internal:5432/app": pg_db,
                     "https://partner.example": server.base_url}
    rolled_back, committed = {}, {}
    try:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            run(found, substitutions, rolled_back)
        with psycopg.connect(pg_db, autocommit=True) as conn:
            conn.execute("INSERT INTO accounts VALUES (42)")
        run(found, substitutions, committed)
        assert len(enqueued) == 2
        lost, kept = enqueued
        assert wait_for(lambda: server.calls("/hooks/orders"), timeout=30), "the committed webhook was not sent"
        assert committed["sender"].flush(timeout=30) and rolled_back["sender"].flush(timeout=30)
        outbox = committed["sender"].outbox
        assert outbox.get(lost) is None and outbox.get(kept).state == "delivered"
        assert {state: n for state, n in outbox.counts().items() if n} == {"delivered": 1}
    finally:
        for ns in (rolled_back, committed):
            if "sender" in ns:
                assert ns["sender"].stop(timeout=10)
            close_all(ns, "sender")
    [call] = server.calls("/hooks/orders")  # both senders ran: neither ever saw the rolled-back one
    assert call.header("webhook-id") == kept and call.json() == {"order": 42}
    with psycopg.connect(pg_db) as conn:
        assert conn.execute("SELECT id FROM orders").fetchall() == [(42,)]  # the order and its webhook


# -- Signing and verifying -------------------------------------------------------------------------


class HttpResponse:
    """What the view sample returns on a bad signature (Django's, as far as the sample uses it)."""

    def __init__(self, content, status=200):
        self.content, self.status_code = content, status


def test_the_verify_sample_accepts_a_real_signed_webhook_and_refuses_a_tampered_one(server):
    from syncworkers import WebhookSenderWorker

    server.route("POST", "/in", status=200)
    secret = new_secret()
    with WebhookSenderWorker(server.base_url, signing_secret=secret) as sender:
        assert sender.send_webhook("/in", {"event": "paid"})
        other = WebhookSenderWorker(server.base_url, signing_secret=new_secret())
        with other:
            assert other.send_webhook("/in", {"event": "paid"})
    real, forged = server.calls("/in")
    ns = run(sample("Signing and verifying (Standard Webhooks)", "def webhook_view"),
             {'"whsec_..."': repr(secret)}, {"HttpResponse": HttpResponse})
    view = ns["webhook_view"]
    assert view(real) is None  # verified: the view goes on past the check
    for bad in (forged, types.SimpleNamespace(body=real.body + b" ", headers=real.headers),
                types.SimpleNamespace(body=real.body, headers={})):
        answer = view(bad)
        assert isinstance(answer, HttpResponse) and answer.status_code == 400 and answer.content


# -- Running workers -----------------------------------------------------------------------------


def test_the_runner_sample_runs_pollers_and_a_relay_in_the_background_then_stops_them(server):
    from syncworkers import Message, MemoryQueue, PollerWorker, WebhookSenderWorker, verify

    server.route("GET", "/status", json=[])
    server.route("GET", "/events", json=[{"event": "shipped"}])
    server.route("POST", "/hooks/orders", status=200)
    polling = run(sample("Polling an API", "class PaymentStatusPoller"), {"https://api.payments.com": server.base_url})
    events = threading.Event()

    class EventPoller(PollerWorker):
        def __init__(self):
            super().__init__(server.url("/events"), interval=0.2, name="events")

        def process_message(self, message):
            events.set()

    secret = new_secret()
    relay = WebhookSenderWorker(server.base_url, signing_secret=secret, name="relay")
    relay.source = MemoryQueue()
    seen = {}
    payments = []

    class PaymentStatusPoller(polling["PaymentStatusPoller"]):
        def __init__(self):
            super().__init__()
            payments.append(self)

    def web_app_goes_on():
        seen["running"] = [w.health()["running"] for w in (payments[0], relay)]
        assert events.wait(20), "the EventPoller did not poll"
        message = relay.source.put(Message(body={"order": 7}, headers={"endpoint": "/hooks/orders"}))
        assert wait_for(lambda: server.calls("/hooks/orders"), timeout=20), "the relay did not deliver"
        seen["id"] = message.id

    found = sample("Running workers", "with Runner([")
    code = re.sub(r"^(\s+)\.\.\.(\s*#.*)?$", r"\1web_app_goes_on()", found.code, flags=re.M)
    assert code != found.code
    names = {"PaymentStatusPoller": PaymentStatusPoller, "EventPoller": EventPoller, "relay": relay,
             "web_app_goes_on": web_app_goes_on}
    try:
        run(found._replace(code=code), {}, names)
    finally:
        relay.close()
    assert seen["running"] == [True, True]
    assert not payments[0].health()["running"] and not relay.health()["running"]  # the with block stopped them
    [call] = server.calls("/hooks/orders")
    assert call.header("webhook-id") == seen["id"] and verify(call.body, call.headers, secret)


# -- One poll per tick, cluster-wide ---------------------------------------------------------------


def test_the_coordination_sample_polls_each_tick_in_one_process(server, monkeypatch, capsys):
    from .redis_server import RedisServer, require_redis_package

    require_redis_package()
    import syncworkers
    from syncworkers.scheduling.schedule import name_offset

    server.route("GET", "/orders", json=[{"id": 1}])
    lead = 1.5  # seconds from start() to the next grid point of the 30 s ticks
    clock = {}

    class ClockedRunner(syncworkers.Runner):
        """The sample's Runner on a wall clock that puts the next 30 s grid point *lead* seconds ahead."""

        def __init__(self, workers, **kwargs):
            [poller] = workers
            if not clock:
                offset = name_offset(poller.name, poller.interval)
                clock["base"] = 1_700_000_010 * poller.interval + offset - lead
                clock["t0"] = time.monotonic()
            kwargs["wall_clock"] = lambda: clock["base"] + time.monotonic() - clock["t0"]
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(syncworkers, "Runner", ClockedRunner)
    others = []

    def another_process_runs_the_same_poller():
        poller = ns_holder["OrderPoller"](server.url("/orders"), interval=30)
        runner = ClockedRunner([poller], coordination=redis.url, stagger=True)
        others.append((poller, runner))
        runner.start()
        mine = ns_holder["poller"]
        assert wait_for(lambda: all(sum(p.health()["ticks"].values()) == 1 for p in (mine, poller)), timeout=20)

    found = sample("One poll per tick, cluster-wide", 'coordination="redis://')
    code = re.sub(r"^\.\.\.$", "another_process_runs_the_same_poller()", found.code, flags=re.M)
    assert code != found.code
    ns_holder = {"another_process_runs_the_same_poller": another_process_runs_the_same_poller}
    with RedisServer() as redis:
        try:
            run(found._replace(code=code), {"https://api.example.com": server.base_url,
                                            "redis://127.0.0.1:6379/0": redis.url}, ns_holder)
        finally:
            for _, runner in others:
                runner.stop(timeout=10)
            if "runner" in ns_holder:
                ns_holder["runner"].stop(timeout=10)
    lines = capsys.readouterr().out.splitlines()  # the polled bodies, and the sample's last print
    [printed] = [ast.literal_eval(line) for line in lines if line.startswith("{'here'")]
    assert "[{'id': 1}]" in lines  # process_message printed the body of the one poll
    other_ticks = others[0][0].health()["ticks"]
    assert printed["here"] + printed["elsewhere"] == 1 and printed["unclaimed"] == 0
    assert printed["here"] + other_ticks["here"] == 1  # one process polled the tick, the other skipped it
    assert len(server.calls("/orders")) == 1


# -- Resilience: the deadline ----------------------------------------------------------------------


def trickling_body():
    """Complete headers, then a large body a byte at a time: always faster than the read timeout."""
    yield b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", 0
    while True:
        yield b".", 0.1


def test_the_deadline_sample_ends_a_trickling_receivers_attempt_so_stop_returns_true():
    from .hostile import HostileReceiver

    found = sample("Resilience", "HTTPClientConfig(deadline=")
    with HostileReceiver(trickling_body) as receiver, LogCapture() as logs:

        def the_app_goes_on():  # the sample's "...": it stops the poller while a poll trickles in
            assert receiver.requests.wait(20), "the poller did not poll"

        code = re.sub(r"^\.\.\.$", "the_app_goes_on()", found.code, flags=re.M)
        assert code != found.code
        ns = {"the_app_goes_on": the_app_goes_on}
        try:
            # The sample's 10 s deadline and 15 s stop timeout, scaled down to keep the test short;
            # the stop timeout stays longer than the deadline, as the sample's does.
            run(found._replace(code=code), {"https://api.example.com": receiver.url(""),
                                            "deadline=10.0": "deadline=2.0", "timeout=15": "timeout=3"}, ns)
            # The sample asserted that stop(timeout=3) returned True: no thread is left in a request.
            assert ns["poller"].client.in_flight == 0
        finally:
            if "poller" in ns:
                ns["poller"].stop(timeout=10)
            close_all(ns, "poller")
        assert receiver.closed_by_client.wait(20)  # the client hung up on the trickle
    # The deadline ended the attempt (the read timeout, 30 s, never fires on a trickle); stop() then
    # cut the retry wait short.
    assert "failed: deadline of 2s exceeded" in logs.text


# -- Transports: requests or libcurl ------------------------------------------------------------------


@pytest.mark.transport_independent
def test_the_curl_sample_sends_the_webhook_through_libcurl(server, monkeypatch):
    import pycurl
    import requests.adapters

    server.route("POST", "/orders", status=200)
    performed = []

    class RecordingCurl(pycurl.Curl):
        """Every handle the transport makes records the transfers it performs, then performs them."""

        def setopt(self, option, value):
            if option == pycurl.URL:
                self.url = value
            return super().setopt(option, value)

        def perform(self):
            performed.append(self.url)
            return super().perform()

    def not_through_requests(*args, **kwargs):
        raise AssertionError("the curl sample sent through requests")

    monkeypatch.setattr(pycurl, "Curl", RecordingCurl)
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", not_through_requests)
    ns = {}
    try:
        run(sample("Transports: requests or libcurl", 'transport="curl"'),
            {"https://hooks.partner.example": server.base_url}, ns)
    finally:
        close_all(ns, "sender")
    assert ns["sender"].client.config.transport == "curl"
    [call] = server.calls("/orders", "POST")
    assert call.json() == {"id": 1} and call.header("webhook-id")
    assert performed == [server.url("/orders")]


# -- Security: the SSRF guard ------------------------------------------------------------------------


@pytest.fixture
def connection_trap(monkeypatch):
    """Any connection attempt, from Python's sockets or from libcurl, fails loudly and is recorded."""
    attempts = []

    def trap(address):
        attempts.append(address)
        raise AssertionError(f"a connection was attempted to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", lambda sock, address: trap(address))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda sock, address: trap(address))
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **kw: trap(address))
    try:
        import pycurl
    except ImportError:  # no libcurl transport to trap
        return attempts

    class TrappedCurl(pycurl.Curl):
        """libcurl connects in C: its handles refuse to start a transfer at all."""

        url = None

        def setopt(self, option, value):
            if option == pycurl.URL:
                self.url = value
            return super().setopt(option, value)

        def perform(self):
            trap(self.url or "a libcurl transfer")

    monkeypatch.setattr(pycurl, "Curl", TrappedCurl)
    return attempts


@pytest.mark.parametrize("customer_url", ["http://169.254.169.254/latest/meta-data/", "loopback"])
def test_the_ssrf_sample_refuses_metadata_and_loopback_before_any_packet(customer_url, server, connection_trap):
    server.route("POST", "/hook", status=200)
    if customer_url == "loopback":  # the machine's own services: a real one listens here
        customer_url = server.url("/hook")
    found = sample("Security", "block_private_networks=True")
    ns = {}
    with LogCapture() as logs:
        try:
            ns = run(found, {}, {"customer_url": customer_url, "payload": {"alert": "disk"}})
            result = ns["sender"].deliver(customer_url, {"alert": "disk"})
        finally:
            close_all(ns, "sender")
    assert ns["ok"] is False
    assert not result.ok and result.attempts == 0 and "refused" in result.error
    assert "refused" in logs.text and " not delivered: " in logs.text
    assert connection_trap == [] and server.connections == 0


# -- Logging and secrets -------------------------------------------------------------------------------


def test_the_logging_sample_masks_the_secret_header_and_the_secret_path_segment(capsys):
    port = closed_port()
    found = sample("Logging and secrets", "secret_headers=")
    run(found, {"http://127.0.0.1:9": f"http://127.0.0.1:{port}"})
    out, err = capsys.readouterr()
    assert "default_headers={'X-Partner-Ident': '***'}" in out
    assert f"to http://127.0.0.1:{port}/services/T0AB12CDE/B0FG34HIJ/*** not delivered" in err
    assert "p-0451" not in out + err and "aB3dE5fG7hJ9kL1mN3pQ5rS7" not in out + err
