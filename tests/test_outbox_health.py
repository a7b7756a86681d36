"""Endpoint health, as Svix and Convoy keep it: the attempt log, auto-disable, held deliveries, enable.

Store tests run against both stores (a SQLite file, a fresh PostgreSQL namespace) with a
hand-driven clock; the rest sends through ``WebhookSenderWorker`` to real receivers on
127.0.0.1 and reads the outbox back through ``syncworkers outbox show|endpoints|enable``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from syncworkers import WebhookConfig
from syncworkers.cli import cli
from syncworkers.outbox import DEAD, DELIVERED, PENDING, Outbox, open_outbox
from syncworkers.outbox.health import ANSWER_BYTES, ATTEMPT_LOG_SIZE, EndpointHealth, endpoint_of, observe
from syncworkers.outbox.store import HELD, Attempt
from syncworkers.workers.webhook import WebhookSenderWorker

from .helpers import Clock, LogCapture, wait_for

pytestmark = pytest.mark.transport_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1_000_000.0
DAY = 86400.0
URL = "http://127.0.0.1:9/hooks/orders?token=query-secret"
ENDPOINT = "127.0.0.1:9/hooks/orders"


@pytest.fixture
def box(location, clock):
    with open_outbox(location, clock=clock, owner="A") as ob:
        yield ob


def fail(box, id, clock, status=500, kind="retryable", disable_after=5 * DAY, body=b"boom"):
    """Claim *id* and record a failed attempt at the clock's time (retried one hour later)."""
    claimed = [d.id for d in box.claim_due(100)]
    assert id in claimed
    box.release([other for other in claimed if other != id])
    attempt = Attempt(at=clock.now, duration=0.25, kind=kind, status=status, error=f"status {status}", body=body)
    if kind == "gone":
        box.mark_dead(id, "gone", status, attempt=attempt, disable_after=disable_after)
    else:
        box.mark_retry(id, clock.now + 3600, f"status {status}", status, attempt=attempt,
                       disable_after=disable_after)


# -- the pure rule -------------------------------------------------------------------


def test_the_endpoint_is_host_port_and_path_without_credentials_or_query():
    assert endpoint_of("https://user:pw@Hooks.Example.COM:8443/a/b?token=x#f") == "hooks.example.com:8443/a/b"
    assert endpoint_of("http://example.com") == "example.com/"
    assert endpoint_of("http://[::1]:80/x") == "[::1]:80/x"


def test_only_failures_for_the_period_disable_and_a_success_ends_the_streak():
    h = EndpointHealth("e")
    h = observe(h, "retryable", 500, T0, DAY)
    assert h.enabled and h.failing_since == T0
    h = observe(h, "refused", 400, T0 + DAY - 1, DAY)
    assert h.enabled and h.failing_since == T0
    assert observe(h, "circuit_open", None, T0 + 2 * DAY, DAY) == h  # nothing was sent
    assert observe(h, "success", 200, T0 + DAY - 1, DAY).failing_since is None
    off = observe(h, "retryable", 503, T0 + DAY, DAY)
    assert not off.enabled and off.disabled_at == T0 + DAY and "only failures since" in off.reason
    gone = observe(EndpointHealth("e"), "gone", 410, T0, DAY)
    assert not gone.enabled and gone.reason == "status 410 Gone"


# -- both stores ---------------------------------------------------------------------


def test_the_attempt_log_keeps_the_last_attempts_and_the_answers_first_4_kb(box, clock):
    id = box.add("orders", URL, b"{}")
    for n in range(ATTEMPT_LOG_SIZE + 5):
        clock.now = T0 + n
        box.claim_due(10, now=T0 + 10_000 * n)
        box.mark_retry(id, T0, "status 500", 500, attempt=Attempt(
            at=clock.now, duration=0.5 + n, kind="retryable", status=500 + n % 4, error="status 500",
            body=b"x" * (ANSWER_BYTES * 2)))
    log = box.attempts(id)
    assert len(log) == ATTEMPT_LOG_SIZE
    assert [a.at for a in log] == [T0 + n for n in range(5, ATTEMPT_LOG_SIZE + 5)]  # oldest first
    assert log[-1].duration == 0.5 + ATTEMPT_LOG_SIZE + 4 and log[-1].kind == "retryable"
    assert all(len(a.body) == ANSWER_BYTES for a in log)
    other = box.add("orders", URL, b"{}")
    assert box.attempts(other) == []
    assert box.last_attempts([id, other, "msg_missing"]) == {id: log[-1]}


def test_an_endpoint_that_only_failed_for_the_period_is_disabled_and_holds_its_deliveries(box, clock):
    first, second, other = (box.add("orders", URL, b"{}"), box.add("orders", URL + "&x=2", b"{}"),
                            box.add("users", "http://127.0.0.1:9/hooks/users", b"{}"))
    fail(box, first, clock)
    clock.now = T0 + 5 * DAY - 1
    fail(box, second, clock, status=503)
    assert {e.endpoint: e.enabled for e in box.endpoints()} == {ENDPOINT: True}
    clock.now = T0 + 5 * DAY
    fail(box, first, clock, status=502)

    [disabled] = box.endpoints()
    assert (disabled.endpoint, disabled.enabled, disabled.disabled_at, disabled.failing_since) == (
        ENDPOINT, False, T0 + 5 * DAY, T0)
    assert "only failures since" in disabled.reason and disabled.last_status == 502
    assert {box.get(i).state for i in (first, second)} == {HELD}
    assert disabled.held == 2
    assert box.get(first).attempts == 2 and box.get(second).attempts == 1  # holding spends nothing
    added = box.add("orders", URL, b"{}")
    assert box.get(added).state == HELD  # a new delivery for a disabled endpoint waits too
    assert box.get(other).state == PENDING  # another endpoint is not held
    assert [d.id for d in box.claim_due(100, now=T0 + 100 * DAY)] == [other]
    assert box.counts() == {"pending": 1, "in_flight": 1, "delivered": 0, "dead": 0, "held": 3}
    assert box.next_due() is not None  # the in-flight one; held ones are never due

    clock.now = T0 + 6 * DAY
    assert box.enable_endpoint(ENDPOINT) == 3
    assert {box.get(i).state for i in (first, second, added)} == {PENDING}
    assert {box.get(i).next_attempt_at for i in (first, second, added)} == {T0 + 6 * DAY}  # due now
    [enabled] = box.endpoints()
    assert enabled.enabled and enabled.failing_since is None and enabled.held == 0
    assert {d.id for d in box.claim_due(100)} == {first, second, added}
    with pytest.raises(KeyError):
        box.enable_endpoint("127.0.0.1:9/never-seen")


def test_a_410_disables_the_endpoint_at_once_and_only_the_gone_delivery_is_dead(box, clock):
    gone, waiting = box.add("orders", URL, b"{}"), box.add("orders", URL, b"{}")
    fail(box, gone, clock, status=410, kind="gone")
    assert box.get(gone).state == DEAD
    assert box.get(waiting).state == HELD
    [endpoint] = box.endpoints()
    assert not endpoint.enabled and endpoint.reason == "status 410 Gone" and endpoint.held == 1
    assert box.replay(ids=[gone]) == 1
    assert box.get(gone).state == HELD  # replayed into a disabled endpoint: held, not sent


def test_a_delivery_on_the_wire_when_its_endpoint_is_disabled_is_held_when_it_fails(box, clock):
    a, b = box.add("orders", URL, b"{}"), box.add("orders", URL, b"{}")
    assert len(box.claim_due(10)) == 2
    box.mark_dead(a, "gone", 410, attempt=Attempt(at=T0, duration=0.1, kind="gone", status=410))
    box.mark_retry(b, T0 + 5, "status 500", 500, attempt=Attempt(at=T0, duration=0.1, kind="retryable",
                                                                 status=500))
    assert box.get(b).state == HELD and box.get(b).attempts == 1


def test_deliveries_handed_back_at_stop_are_held_when_their_endpoint_is_disabled(box, clock):
    gone, other = box.add("orders", URL, b"{}"), box.add("orders", URL, b"{}")
    box.claim_due(10)
    box.mark_dead(gone, "gone", 410, attempt=Attempt(at=T0, duration=0.1, kind="gone", status=410))
    assert box.release() == 1
    assert box.get(other).state == HELD


def test_outcomes_and_their_attempts_keep_their_own_status_and_error(box, clock):
    """Recorded together (one statement on PostgreSQL when health does not change), never mixed up."""
    ok = box.add("orders", URL, b"{}")
    box.claim_due(1)
    box.mark_delivered(ok, 200, attempt=Attempt(at=T0, duration=0.1, kind="success", status=200, body=b"ok"))
    # A first success gave the endpoint its row; from now on outcomes to it change nothing there.
    again = box.add("orders", URL, b"{}")
    box.claim_due(1)
    box.mark_retry(again, T0 + 60, "retry in 60 s", 503, attempt=Attempt(
        at=T0 + 1, duration=0.2, kind="success", status=202, error="answer kept", body=b"queued"))
    stored = box.get(again)
    assert (stored.state, stored.last_status, stored.last_error, stored.attempts) == (PENDING, 503, "retry in 60 s", 1)
    [logged] = box.attempts(again)
    assert (logged.at, logged.kind, logged.status, logged.error, bytes(logged.body)) == (
        T0 + 1, "success", 202, "answer kept", b"queued")
    assert box.get(ok).state == DELIVERED and len(box.attempts(ok)) == 1


def test_purge_removes_the_attempt_logs_of_what_it_deletes(box, clock):
    id = box.add("orders", URL, b"{}")
    box.claim_due(1)
    box.mark_delivered(id, 200, attempt=Attempt(at=T0, duration=0.1, kind="success", status=200, body=b"ok"))
    assert len(box.attempts(id)) == 1
    assert box.purge(older_than=10, now=T0 + 3600) == 1
    assert box.attempts(id) == []


def test_a_postgresql_table_of_the_first_version_gains_the_endpoint_column(pg_db):
    import psycopg

    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("""CREATE TABLE syncworkers_outbox (
            seq bigserial NOT NULL, id text PRIMARY KEY, endpoint text NOT NULL, url text NOT NULL,
            body bytea NOT NULL, headers text NOT NULL, state text NOT NULL,
            attempts integer NOT NULL DEFAULT 0, next_attempt_at double precision NOT NULL,
            created_at double precision NOT NULL, updated_at double precision NOT NULL,
            last_status integer, last_error text, owner text, lease_until double precision,
            delivered_at double precision)""")
        conn.execute("INSERT INTO syncworkers_outbox (id, endpoint, url, body, headers, state,"
                     " next_attempt_at, created_at, updated_at) VALUES ('msg_old', 'orders', %s, '\\x7b7d',"
                     " '{}', 'pending', 0, 0, 0)", (URL,))
    with open_outbox(pg_db, clock=Clock(), owner="A") as box:
        [d] = box.claim_due(1)
        box.mark_dead(d.id, "gone", 410, attempt=Attempt(at=T0, duration=0.1, kind="gone", status=410))
        assert [(e.endpoint, e.enabled) for e in box.endpoints()] == [(ENDPOINT, False)]
        assert box.add("orders", URL, b"{}") and box.counts()["held"] == 1


# -- through a sender, a real receiver and the CLI ---------------------------------------


def outbox_cli(*args):
    return CliRunner().invoke(cli, ["outbox", *args])


@pytest.mark.transport_dependent
def test_the_attempt_log_after_retries_shows_statuses_durations_and_answers(server, tmp_path):
    server.route("POST", "/hooks/orders", replies=[
        _reply(500, b"E" * (ANSWER_BYTES + 1000)), _reply(503, b'{"error": "busy", "token": "t0ps3cret"}'),
        _reply(200, b"thanks")])
    path = str(tmp_path / "outbox.db")
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=path, retry_schedule=(0.01, 0.01)))
    try:
        id = sender.enqueue("/hooks/orders?token=query-secret", {"order": 1},
                            headers={"X-Partner-Token": "header-secret"})
        assert sender.flush(timeout=20)
        log = sender.outbox.attempts(id)
    finally:
        sender.close()
    assert [(a.status, a.kind) for a in log] == [(500, "retryable"), (503, "retryable"), (200, "success")]
    assert [len(a.body) for a in log] == [ANSWER_BYTES, 39, 6] and log[2].body == b"thanks"
    assert all(a.duration > 0 for a in log) and log[0].at <= log[1].at <= log[2].at
    assert log[0].error.startswith("status 500")

    shown = outbox_cli("show", id, "--path", path)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "state:        delivered" in lines and "attempts:     3" in lines
    assert "attempt log (3, oldest first):" in lines
    assert sum(" retryable " in line for line in lines) == 2 and any(" success " in line for line in lines)
    assert "answer: thanks" in shown.output and "busy" in shown.output
    for secret in ("header-secret", "query-secret", "t0ps3cret"):
        assert secret not in shown.output
    as_json = json.loads(outbox_cli("show", id, "--path", path, "--json").output)
    assert [a["status"] for a in as_json["attempt_log"]] == [500, 503, 200]
    assert len(as_json["attempt_log"][0]["body"]) == ANSWER_BYTES
    listed = outbox_cli("list", "--path", path)
    assert "last attempt" in listed.output and "success" in listed.output

    missing = outbox_cli("show", "msg_missing", "--path", path)
    assert missing.exit_code == 2 and "no delivery 'msg_missing'" in missing.output


def _reply(status, body):
    from .server import Reply

    return Reply(status, body)


@pytest.mark.transport_dependent
def test_a_410_disables_at_once_held_deliveries_wait_and_enable_delivers_them(server, tmp_path):
    server.route("POST", "/gone", status=[410, 200])
    server.route("POST", "/fine", status=200)
    path = str(tmp_path / "outbox.db")
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=path, max_workers=1))
    try:
        gone = sender.enqueue("/gone", {"n": 0})
        assert sender.flush(timeout=10)
        assert sender.outbox.get(gone).state == DEAD
        held = [sender.enqueue("/gone", {"n": n}) for n in (1, 2)]
        fine = sender.enqueue("/fine", {})
        with LogCapture() as logs:
            assert not sender.flush(timeout=10)  # what remains is held: False, at once
        assert "2 deliveries held for disabled endpoints: `syncworkers outbox endpoints` lists them" in logs.text
        assert len(server.calls("/gone")) == 1 and len(server.calls("/fine")) == 1
        assert {sender.outbox.get(i).state for i in held} == {HELD}
        assert sender.outbox.get(fine).state == DELIVERED
        assert all(sender.outbox.get(i).attempts == 0 for i in held)

        listing = outbox_cli("endpoints", "--path", path)
        assert listing.exit_code == 0, listing.output
        port = server.base_url.rsplit(":", 1)[1]
        [gone_line] = [line for line in listing.output.splitlines() if "/gone" in line]
        assert gone_line.startswith(f"127.0.0.1:{port}/gone  disabled  since ")
        assert "held=2" in gone_line and "status 410 Gone" in gone_line
        [fine_line] = [line for line in listing.output.splitlines() if "/fine" in line]
        assert "enabled" in fine_line and "held=0" in fine_line
        rows = json.loads(outbox_cli("endpoints", "--path", path, "--json").output)
        assert {r["endpoint"]: (r["state"], r["held"]) for r in rows} == {
            f"127.0.0.1:{port}/gone": ("disabled", 2), f"127.0.0.1:{port}/fine": ("enabled", 0)}

        enabled = outbox_cli("enable", server.url("/gone"), "--path", path)
        assert enabled.exit_code == 0, enabled.output
        assert f"enabled 127.0.0.1:{port}/gone; released 2 held deliveries, due now" in enabled.output
        assert sender.flush(timeout=10)
        assert {sender.outbox.get(i).state for i in held} == {DELIVERED}
        assert sorted(r.json()["n"] for r in server.calls("/gone")) == [0, 1, 2]
        unknown = outbox_cli("enable", "127.0.0.1:1/nowhere", "--path", path)
        assert unknown.exit_code == 2 and "no endpoint" in unknown.output
    finally:
        sender.close()


@pytest.mark.transport_dependent
def test_an_endpoint_failing_for_disable_after_is_disabled_and_nothing_is_lost(server, tmp_path):
    server.route("POST", "/down", status=500)
    shift = [0.0]
    box = Outbox(str(tmp_path / "outbox.db"), clock=lambda: time.time() + shift[0])
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(retry_schedule=(0.01, 0.01), max_workers=1,
                                                                disable_after=3600), outbox=box)
    try:
        first = sender.enqueue("/down", {"n": 1})
        assert sender.flush(timeout=10)  # three attempts, then dead: failing, not yet for an hour
        assert box.get(first).state == DEAD and len(server.calls("/down")) == 3
        assert [e.enabled for e in box.endpoints()] == [True]

        shift[0] = 3601.0  # an hour of nothing but failures
        later = [sender.enqueue("/down", {"n": n}) for n in (2, 3)]
        assert not sender.flush(timeout=10)
        assert len(server.calls("/down")) == 4  # one attempt disabled it; the other was never sent
        assert [box.get(i).state for i in later] == [HELD, HELD]
        [endpoint] = box.endpoints()
        assert not endpoint.enabled and "only failures since" in endpoint.reason and endpoint.held == 2

        server.route("POST", "/down", status=200)
        assert box.enable_endpoint(endpoint.endpoint) == 2
        assert sender.flush(timeout=10)
        assert [box.get(i).state for i in later] == [DELIVERED, DELIVERED]
        assert sorted(r.json()["n"] for r in server.calls("/down"))[-2:] == [2, 3]
    finally:
        sender.close()
        box.close()


@pytest.mark.transport_dependent
def test_a_running_worker_delivers_what_enable_releases_from_another_process(server, tmp_path):
    server.route("POST", "/hook", status=[410, 200])
    path = str(tmp_path / "outbox.db")
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=path, max_workers=2))
    sender.start()
    try:
        sender.enqueue("/hook", {"n": 0})
        assert wait_for(lambda: sender.outbox.counts()["dead"] == 1, 10)
        held = sender.enqueue("/hook", {"n": 1})
        assert sender.outbox.get(held).state == HELD
        port = server.base_url.rsplit(":", 1)[1]
        env = {**os.environ, "PYTHONPATH": ROOT}
        done = subprocess.run([sys.executable, "-m", "syncworkers.cli", "outbox", "enable",
                               f"127.0.0.1:{port}/hook", "--path", path],
                              capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert "released 1 held delivery" in done.stdout
        assert wait_for(lambda: sender.outbox.get(held).state == DELIVERED, 10)
        shown = subprocess.run([sys.executable, "-m", "syncworkers.cli", "outbox", "show", held, "--path", path],
                               capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
        assert shown.returncode == 0 and "state:        delivered" in shown.stdout
        assert " success " in shown.stdout
    finally:
        assert sender.stop(timeout=10)
        sender.close()


def test_an_endpoint_that_only_succeeded_is_listed_enabled(box, clock):
    id = box.add("/hooks/a", "http://127.0.0.1:9/hooks/a", b"{}")
    box.claim_due(1)
    box.mark_delivered(id, 200, attempt=Attempt(at=clock.now, duration=0.1, kind="success", status=200))
    second = box.add("/hooks/a", "http://127.0.0.1:9/hooks/a", b"{}")
    box.claim_due(1)
    box.mark_delivered(second, 200, attempt=Attempt(at=clock.now, duration=0.1, kind="success", status=200))
    (endpoint,) = box.endpoints()
    assert endpoint.endpoint == "127.0.0.1:9/hooks/a" and endpoint.enabled
    assert len(box.attempts(id)) == len(box.attempts(second)) == 1
