"""The outbox when its storage fails: a full disk, a damaged file, a database that goes away mid-run.

Nothing is lost and nothing raw escapes: enqueue() raises OutboxError (nothing was stored),
flush() returns False and logs the cause, ``outbox stats`` exits 2 with one line, and a
running delivery loop logs and keeps going until the database answers again.
"""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from syncworkers import WebhookConfig
from syncworkers.cli import cli
from syncworkers.exceptions import OutboxError
from syncworkers.outbox import DELIVERED, Outbox, open_outbox
from syncworkers.workers.webhook import WebhookSenderWorker

from .helpers import LogCapture, wait_for

#: Pages the full-disk outbox may use: room for a few deliveries beyond its empty schema.
MAX_PAGES = 40


@pytest.fixture
def small_disk(monkeypatch):
    """Every outbox connection limited to MAX_PAGES pages: SQLITE_FULL, as on a full disk."""
    connect = Outbox._connect

    def limited(self, target):
        conn = connect(self, target)
        conn.execute(f"PRAGMA max_page_count={MAX_PAGES}")
        return conn

    monkeypatch.setattr(Outbox, "_connect", limited)


def sender_for(server, path, **config):
    return WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=path, retry_schedule=(0.01,), **config))


def test_a_full_disk_refuses_enqueue_clearly_and_flush_says_false_losing_nothing(server, tmp_path, small_disk):
    server.route("POST", "/hook", status=500, body=b"E" * 4096)
    sender = sender_for(server, str(tmp_path / "outbox.db"))
    try:
        stored = []
        with pytest.raises(OutboxError, match="not stored.*database or disk is full") as raised:
            for n in range(1000):
                stored.append(sender.enqueue("/hook", {"n": n, "pad": "x" * 1000}))
        assert not isinstance(raised.value, sqlite3.Error) and isinstance(raised.value.__cause__, sqlite3.Error)
        assert 0 < len(stored) < 1000
        with LogCapture() as logs:
            assert sender.flush(timeout=30) is False
        assert "database or disk is full" in logs.text and "could not record" in logs.text
        assert sum(sender.outbox.counts()[state] for state in ("pending", "dead")) == len(stored)
        assert {d.id for d in sender.outbox.list(limit=2000)} == set(stored)  # nothing lost
    finally:
        sender.close()


def _outbox_with_deliveries(path, count=50):
    with Outbox(path) as box:
        return [box.add("/hook", "http://127.0.0.1:1/hook", b'{"pad": "%s"}' % (b"x" * 500)) for _ in range(count)]


def test_a_damaged_file_fails_stats_with_one_line_and_flush_and_enqueue_clearly(server, tmp_path):
    path = str(tmp_path / "outbox.db")
    _outbox_with_deliveries(path)
    with open(path, "r+b") as f:  # pages in the middle overwritten: the header still looks right
        f.seek(2 * 4096)
        f.write(b"\xde\xad\xbe\xef" * 2048)

    stats = CliRunner().invoke(cli, ["outbox", "stats", "--path", path])
    assert stats.exit_code == 2
    assert stats.output.count("\n") == 1 and stats.output.startswith(f"Error: outbox {path!r} is damaged: ")

    sender = sender_for(server, path)
    try:
        with pytest.raises(OutboxError, match="not stored.*malformed"):
            sender.enqueue("/hook", {})
        with LogCapture() as logs:
            assert sender.flush(timeout=10) is False
        assert "the outbox cannot be used" in logs.text and "malformed" in logs.text
    finally:
        sender.close()
    assert server.calls("/hook") == []


def test_a_file_that_is_no_database_any_more_fails_flush_and_stats_with_one_line(server, tmp_path):
    path = str(tmp_path / "outbox.db")
    _outbox_with_deliveries(path)
    with open(path, "r+b") as f:
        f.write(b"this is not SQLite")
    stats = CliRunner().invoke(cli, ["outbox", "stats", "--path", path])
    assert stats.exit_code == 2 and stats.output.count("\n") == 1 and "file is not a database" in stats.output
    sender = sender_for(server, path)
    try:
        with LogCapture() as logs:
            assert sender.flush(timeout=10) is False
        assert "the outbox cannot be opened" in logs.text and "file is not a database" in logs.text
    finally:
        sender.close()


def test_the_delivery_loop_logs_and_goes_on_when_postgresql_drops_its_connections(server, pg_db):
    import psycopg

    server.route("POST", "/hook", status=200)
    box = open_outbox(pg_db, pool_size=4)
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(max_workers=2), outbox=box)
    sender.start()
    try:
        first = sender.enqueue("/hook", {"n": 1})
        assert wait_for(lambda: box.get(first).state == DELIVERED, 15)
        with LogCapture() as logs:
            with psycopg.connect(pg_db, autocommit=True) as admin:  # every other backend: the loop's too
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE pid <> pg_backend_pid() AND datname = current_database()")
            assert wait_for(lambda: "the outbox cannot be used" in logs.text, 15)
            assert sender.running
            with open_outbox(pg_db) as other:  # another process adds one meanwhile, and watches it
                later = other.add("/hook", server.url("/hook"), b'{"n": 2}')
                assert wait_for(lambda: other.get(later).state == DELIVERED, 30)
        assert "terminat" in logs.text.lower() or "connection" in logs.text.lower()
        assert [r.json()["n"] for r in server.calls("/hook")] == [1, 2]
    finally:
        assert sender.stop(timeout=10)
        sender.close()
        box.close()
