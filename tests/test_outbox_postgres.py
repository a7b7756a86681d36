"""The PostgreSQL outbox as users run it: transactional enqueue, notifications, skewed clocks,
locations (URLs, config, CLI). Against a real PostgreSQL on 127.0.0.1 (tests/pg_server.py).

The store-level suite (tests/test_outbox.py) runs against both stores; the three-process
kill -9 test is in tests/test_chaos_postgres.py.
"""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest
from click.testing import CliRunner

from syncworkers import WebhookConfig
from syncworkers.cli import cli
from syncworkers.exceptions import ConfigError
from syncworkers.outbox import DELIVERED, IN_FLIGHT, PENDING, Outbox, open_outbox
from syncworkers.workers.webhook import WebhookSenderWorker

from .helpers import need_module, wait_for
from .server import Reply

pytestmark = pytest.mark.transport_independent

psycopg = need_module("psycopg", "PostgreSQL")

HOUR = 3600.0


def received_ids(server, path="/hook"):
    return [r.header("webhook-id") for r in server.calls(path, "POST")]


# -- transactional enqueue ---------------------------------------------------------------


@pytest.mark.transport_dependent
def test_enqueue_in_a_psycopg_transaction_rolled_back_is_never_sent_committed_is(server, pg_db):
    server.route("POST", "/hook", status=200)
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_url=pg_db))
    sender.start()
    try:
        with psycopg.connect(pg_db) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
            conn.commit()
            with conn.transaction():
                conn.execute("INSERT INTO orders VALUES (1)")
                lost = sender.enqueue("/hook", {"order": 1}, connection=conn)
                raise psycopg.Rollback()
            with conn.transaction():
                conn.execute("INSERT INTO orders VALUES (2)")
                kept = sender.enqueue("/hook", {"order": 2}, connection=conn)
                # Not committed yet: invisible to every other connection, so not sent.
                assert sender.outbox.get(kept) is None
        assert wait_for(lambda: kept in received_ids(server), timeout=30)
        assert sender.flush(timeout=30)
        assert sender.outbox.get(kept).state == DELIVERED
        assert sender.outbox.get(lost) is None
        assert received_ids(server) == [kept]  # the rolled-back delivery was never sent
    finally:
        sender.close()


@pytest.mark.transport_dependent
def test_enqueue_in_a_sqlite3_transaction_rolled_back_is_never_sent_committed_is(server, tmp_path):
    server.route("POST", "/hook", status=200)
    path = str(tmp_path / "app.db")
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_url=f"sqlite:///{path}"))
    sender.start()
    try:
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
            conn.commit()
            conn.execute("INSERT INTO orders VALUES (1)")
            lost = sender.enqueue("/hook", {"order": 1}, connection=conn)
            conn.rollback()
            conn.execute("INSERT INTO orders VALUES (2)")
            kept = sender.enqueue("/hook", {"order": 2}, connection=conn)
            conn.commit()
        finally:
            conn.close()
        assert sender.flush(timeout=30)
        assert received_ids(server) == [kept]
        assert sender.outbox.get(lost) is None
    finally:
        sender.close()


def test_a_sqlite3_connection_to_another_file_is_refused(tmp_path):
    with Outbox(str(tmp_path / "outbox.db")) as box:
        other = sqlite3.connect(str(tmp_path / "other.db"))
        try:
            with pytest.raises(ConfigError, match="not on this outbox's file"):
                box.add("e", "http://127.0.0.1:9/", b"{}", connection=other)
        finally:
            other.close()
        assert box.counts()["pending"] == 0


# -- notifications -------------------------------------------------------------------------


@pytest.mark.transport_dependent
def test_a_delivery_committed_elsewhere_is_attempted_without_waiting_for_a_poll(server, pg_db, monkeypatch):
    """With the safety-net poll pushed to a minute, only LISTEN/NOTIFY can start the attempt."""
    monkeypatch.setattr("syncworkers.delivery.dispatch.Dispatcher.poll_interval", 60.0)
    arrived = threading.Event()

    def handler(req):
        arrived.set()
        return Reply(200)

    server.route("POST", "/hook", handler=handler)
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(outbox_url=pg_db))
    sender.start()
    try:
        sender.outbox.counts()  # tables exist
        assert wait_for(lambda: any(t.name.startswith("syncworkers-outbox-listen")
                                    for t in threading.enumerate()), timeout=10)
        with open_outbox(pg_db) as other:  # another process's store, say
            assert wait_for(lambda: sender.outbox_producer.looping, 10)
            threading.Event().wait(0.5)  # let the loop settle into its one-minute sleep
            with psycopg.connect(pg_db) as conn:
                with conn.transaction():
                    other.add("/hook", server.url("/hook"), b"{}", connection=conn)
            assert arrived.wait(10), "the committed delivery was not attempted"
    finally:
        sender.close()


def test_the_listener_reconnects_after_its_connection_is_killed(pg_db):
    heard = threading.Event()
    with open_outbox(pg_db) as box:
        box.init()
        unsubscribe = box.subscribe(heard.set)
        try:
            assert wait_for(lambda: box._subscribers._listener.connected.is_set(), timeout=10)
            with psycopg.connect(pg_db, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()")
            assert wait_for(lambda: not box._subscribers._listener.connected.is_set(), timeout=10)
            assert wait_for(lambda: box._subscribers._listener.connected.is_set(), timeout=20)
            heard.clear()
            box.add("e", "http://127.0.0.1:9/", b"{}")
            assert heard.wait(10)
        finally:
            unsubscribe()
    assert not any(t.name.startswith("syncworkers-outbox-listen") for t in threading.enumerate())


# -- clocks ----------------------------------------------------------------------------------


def skewed(seconds):
    import time

    return lambda: time.time() + seconds


def test_stores_whose_clocks_disagree_neither_steal_nor_stall_each_others_claims(pg_db):
    behind = open_outbox(pg_db, owner="behind", lease_seconds=30, local_clock=skewed(-HOUR))
    ahead = open_outbox(pg_db, owner="ahead", lease_seconds=30, local_clock=skewed(+HOUR))
    try:
        with psycopg.connect(pg_db, autocommit=True) as conn:
            ahead.init()
            db_now = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
        # Both estimate the server's clock, whatever their own says.
        assert abs(behind.clock() - db_now) < 5 and abs(ahead.clock() - db_now) < 5

        id = behind.add("e", "http://127.0.0.1:9/", b"{}")
        [claimed] = behind.claim_due(10)
        assert claimed.id == id and claimed.lease_until == pytest.approx(db_now + 30, abs=5)
        assert ahead.claim_due(10) == []  # an hour ahead, yet the lease holds: no steal

        # A retry due in 0.2 s on the server's clock, computed the way the dispatcher does.
        behind.mark_retry(id, behind.clock() + 0.2, "status 503", 503)
        assert wait_for(lambda: [d.id for d in ahead.claim_due(10)] == [id], timeout=10)  # no stall
        assert ahead.get(id).state == IN_FLIGHT and ahead.get(id).owner == "ahead"
        assert behind.claim_due(10) == []
    finally:
        behind.close()
        ahead.close()


# -- locations: open_outbox, WebhookConfig, CLI -------------------------------------------------


def test_open_outbox_accepts_urls_and_paths(tmp_path, monkeypatch, pg_db):
    monkeypatch.chdir(tmp_path)
    with open_outbox("sqlite:///rel.db") as box:
        assert box.path == "rel.db" and box.durable
    with open_outbox(f"sqlite:///{tmp_path}/abs.db") as box:  # sqlite:////absolute/path
        assert box.path == f"{tmp_path}/abs.db"
    with open_outbox(str(tmp_path / "plain.db")) as box:
        assert box.durable
    with open_outbox(None) as box:
        assert not box.durable
    with open_outbox(pg_db.replace("postgresql://", "postgres://")) as box:
        box.add("e", "http://127.0.0.1:9/", b"{}")
        assert box.counts()["pending"] == 1 and type(box).__name__ == "PostgresOutbox"


@pytest.mark.parametrize("bad", ["mysql://user:hunter2@db/x", "redis://:hunter2@h/0", "sqlite://host/x.db",
                                 "sqlite:///", "postgresql:hunter2"])
def test_bad_outbox_locations_name_the_accepted_forms_without_the_password(bad):
    with pytest.raises(ConfigError) as info:
        open_outbox(bad)
    assert "sqlite:///relative/path" in str(info.value) and "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        WebhookConfig(outbox_url=bad)
    assert "hunter2" not in str(info.value)


def test_outbox_url_from_the_environment_and_its_password_masked(monkeypatch):
    monkeypatch.setenv("WEBHOOK_OUTBOX_URL", "postgresql://app:hunter2@127.0.0.1:5432/app")
    config = WebhookConfig.from_env()
    assert config.outbox_url == "postgresql://app:hunter2@127.0.0.1:5432/app"
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
    monkeypatch.setenv("WEBHOOK_OUTBOX_PATH", "outbox.db")
    with pytest.raises(ConfigError, match="not both"):
        WebhookConfig.from_env()


def test_cli_outbox_init_is_safe_twice_and_every_subcommand_takes_url(pg_db):
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(cli, ["outbox", "init", "--url", pg_db])
        assert result.exit_code == 0, result.output
    with open_outbox(pg_db) as box:
        id = box.add("orders", "http://127.0.0.1:9/orders", b"{}")
        box.claim_due(1)
        box.mark_dead(id, "gone: status 410")
    stats = runner.invoke(cli, ["outbox", "stats", "--url", pg_db, "--json"])
    assert stats.exit_code == 0 and '"dead": 1' in stats.output
    listed = runner.invoke(cli, ["outbox", "list", "--state", "dead"], env={"WEBHOOK_OUTBOX_URL": pg_db})
    assert listed.exit_code == 0 and id in listed.output
    replayed = runner.invoke(cli, ["outbox", "replay", "--url", pg_db, "--id", id])
    assert replayed.exit_code == 0 and "replayed 1" in replayed.output
    purged = runner.invoke(cli, ["outbox", "purge", "--url", pg_db, "--older-than", "1d"])
    assert purged.exit_code == 0


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "postgres"])
def test_cli_takes_the_sqlalchemy_and_short_postgresql_urls(pg_db, scheme):
    url = pg_db.replace("postgresql://", f"{scheme}://", 1)
    with open_outbox(url) as box:
        box.add("orders", "http://127.0.0.1:9/orders", b"{}")
    stats = CliRunner().invoke(cli, ["outbox", "stats", "--url", url, "--json"])
    assert stats.exit_code == 0, stats.output
    assert '"pending": 1' in stats.output


def test_cli_unreachable_database_is_one_line_exit_2_without_the_password():
    from .helpers import closed_port

    url = f"postgresql://app:hunter2@127.0.0.1:{closed_port()}/app"
    result = CliRunner().invoke(cli, ["outbox", "stats", "--url", url])
    assert result.exit_code == 2
    assert "cannot open outbox" in result.output and "hunter2" not in result.output
    both = CliRunner().invoke(cli, ["outbox", "stats", "--url", url, "--path", "x.db"])
    assert both.exit_code == 2 and "one of them" in both.output


def test_cli_sqlite_url_missing_file_is_not_created(tmp_path):
    path = tmp_path / "missing.db"
    result = CliRunner().invoke(cli, ["outbox", "stats", "--url", f"sqlite:///{path}"])
    assert result.exit_code == 2 and "no such outbox file" in result.output
    assert not os.path.exists(path)
    assert CliRunner().invoke(cli, ["outbox", "init", "--url", f"sqlite:///{path}"]).exit_code == 0
    assert os.path.exists(path)


def test_a_store_opening_the_outbox_waits_for_no_lock_an_open_transaction_holds(pg_db):
    """A process starting (a deliverer, a web worker) opens the tables while an app's transaction that
    enqueued is still open: it must not wait for it (nor make every later writer wait behind it)."""
    from syncworkers.outbox.postgres import PostgresOutbox

    with PostgresOutbox(pg_db) as first:
        first.init()
        with psycopg.connect(pg_db) as app:  # a transaction, as a request's or a test's
            pending = first.add("orders", "http://127.0.0.1:9/hooks", b"{}", connection=app)
            # lock_timeout: a lock wait fails at once instead of hanging (no timing involved when none happens)
            impatient = pg_db.replace("options=", "options=-clock_timeout%3D2000%20", 1)
            with PostgresOutbox(impatient) as second:
                assert second.counts()["pending"] == 0  # not committed yet: not seen, not waited for
            app.rollback()
        assert first.get(pending) is None


# -- held deliveries and a concurrent enable -----------------------------------------------


@pytest.mark.parametrize("operation", ["settle", "release", "replay"])
def test_a_delivery_held_on_a_snapshot_from_before_enable_endpoint_is_released(pg_db, operation):
    # settle(), release() and replay() decide "held" from their statement's snapshot. An operator's
    # enable_endpoint() committed while that statement waited on the delivery's row released what was
    # held then, not this one: it must not stay held behind an enabled endpoint (seen as a rare hang
    # of the kill -9 chaos test).
    from syncworkers.outbox.store import DEAD, HELD, Attempt, Settlement

    with open_outbox(pg_db, owner="A") as box:
        gone = box.add("/gone", "http://127.0.0.1:9/hook", b"{}")
        waiting = box.add("/hook", "http://127.0.0.1:9/hook", b"{}")
        assert {d.id for d in box.claim_due(10)} == {gone, waiting}
        at = box.clock()
        if operation == "replay":
            box.settle([Settlement(waiting, DEAD, 400, "refused: status 400", now=at)])
        box.settle([Settlement(gone, DEAD, 410, "gone: status 410", now=at,
                               attempt=Attempt(at=at, duration=0.1, kind="gone", status=410, error="gone", body=b""))])
        [endpoint] = [e for e in box.endpoints() if not e.enabled]  # a 410 disabled it
        call = {"settle": lambda: box.settle([Settlement(waiting, PENDING, 503, "status 503", at, True, None, at)]),
                "release": lambda: box.release([waiting]),
                "replay": lambda: box.replay(ids=[waiting])}[operation]
        with psycopg.connect(pg_db, autocommit=False) as blocker:
            blocker.execute(f"SELECT 1 FROM {box.table} WHERE id = %s FOR UPDATE", (waiting,))
            running = threading.Thread(target=call, name="syncworkers-test-hold")
            running.start()
            try:
                with psycopg.connect(pg_db, autocommit=True) as watcher:
                    assert wait_for(lambda: watcher.execute(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        f" AND query LIKE '%%UPDATE%%{box.table}%%'").fetchone()[0] == 1, timeout=30)
                assert box.enable_endpoint(endpoint.endpoint) == 0  # nothing was held yet
            finally:
                blocker.rollback()
                running.join(30)
        assert not running.is_alive()
        assert box.get(waiting).state == PENDING, "held behind an enabled endpoint"
        assert box.counts().get(HELD, 0) == 0
