"""How a SQLite outbox writes when many threads and processes enqueue at once.

Another process's writer is played by a plain ``sqlite3`` connection holding the file's
write lock (BEGIN IMMEDIATE), as a second process would. Enqueues that arrive while one
commits go together in the next transaction; a writer waiting for the lock sees it free
within milliseconds, and close() ends its wait; ``fsync=True`` syncs the log before an add
returns; checkpoints run on the delivery loop's writes, never in an enqueue's commit.
"""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from syncworkers.outbox import Outbox
from syncworkers.outbox import sqlite_connections
from syncworkers.outbox.sqlite_connections import SQLiteConnections

from .helpers import wait_for

pytestmark = pytest.mark.transport_independent

URL = "http://127.0.0.1:9/hook"


def holder(path):
    """A connection of 'another process' holding the write lock until its COMMIT."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def stored(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM syncworkers_outbox").fetchone()[0]


def test_enqueues_that_arrive_while_one_commits_are_committed_together_once_it_is_done(tmp_path, monkeypatch):
    path = str(tmp_path / "outbox.db")
    transactions = []
    transaction = SQLiteConnections._transaction

    def counted(self, durable):  # the real transaction, counted
        transactions.append(durable)
        return transaction(self, durable)

    monkeypatch.setattr(SQLiteConnections, "_transaction", counted)
    with Outbox(path) as box:
        other = holder(path)
        added = []
        threads = [threading.Thread(target=lambda: added.append(box.add("e", URL, b"{}")), name=f"test-add-{n}")
                   for n in range(10)]
        threads[0].start()
        assert wait_for(lambda: transactions == [True])  # the first waits for the lock ...
        for thread in threads[1:]:
            thread.start()
        assert wait_for(lambda: len(box._connections._waiting) == 9)  # ... the others for its commit
        assert added == [] and stored(path) == 0  # none returns before its webhook is committed
        other.execute("COMMIT")
        for thread in threads:
            thread.join(10)
        other.close()
        assert len(added) == 10 and stored(path) == 10
        assert transactions == [True, True]  # two transactions for ten enqueues


def test_a_writer_waiting_for_another_process_goes_when_the_lock_frees_and_close_ends_the_wait(tmp_path):
    path = str(tmp_path / "outbox.db")
    box = Outbox(path)
    other = holder(path)
    done = []
    adder = threading.Thread(target=lambda: done.append(box.add("e", URL, b"{}")), name="test-add")
    adder.start()
    other.execute("COMMIT")
    adder.join(10)
    assert len(done) == 1 and stored(path) == 1
    other.execute("BEGIN IMMEDIATE")
    errors = []

    def add():
        try:
            box.add("e", URL, b"{}")
        except ValueError as exc:
            errors.append(exc)

    adder = threading.Thread(target=add, name="test-add-closed")
    adder.start()
    assert wait_for(lambda: box._connections._committing)  # waiting for the lock
    box.close()
    adder.join(10)
    other.execute("ROLLBACK")
    other.close()
    assert not adder.is_alive() and [str(e) for e in errors] == ["the outbox is closed"]


def test_a_writer_gives_up_after_the_busy_timeout_as_sqlite_would(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_connections, "BUSY_TIMEOUT", 0.2)
    path = str(tmp_path / "outbox.db")
    with Outbox(path) as box:
        other = holder(path)
        try:
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                box.add("e", URL, b"{}")
        finally:
            other.execute("ROLLBACK")
            other.close()
        box.add("e", URL, b"{}")  # the connection waits as long as before for the next write


@pytest.mark.parametrize("fsync", [False, True])
def test_fsync_true_syncs_the_log_before_an_add_returns(tmp_path, monkeypatch, fsync):
    path = str(tmp_path / "outbox.db")
    synced = []
    real = os.fsync

    def recorded(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    with Outbox(path, fsync=fsync) as box:
        monkeypatch.setattr(os, "fsync", recorded)
        box.add("e", URL, b"{}")
        box.renew([])  # the delivery loop's writes are never synced by themselves
        [d] = box.claim_due(1)
        box.renew([d.id])
    assert synced == ([os.path.realpath(path) + "-wal"] if fsync else [])


def test_checkpoints_run_on_the_delivery_loops_writes_not_in_enqueues(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_connections, "CHECKPOINT_EVERY", 5)
    path = str(tmp_path / "outbox.db")

    def in_database_file():
        """Deliveries a checkpoint has copied into the database file (an immutable reader skips the log)."""
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM syncworkers_outbox").fetchone()[0]

    with Outbox(path) as box:
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the schema into the file
        ids = [box.add("e", URL, b"{}") for _ in range(12)]
        assert in_database_file() == 0  # 12 enqueues, fewer than 4 x 5: none checkpointed as it committed
        box.renew(ids)  # a write of the delivery loop: due (five and more since the last), it checkpoints
        assert in_database_file() == 12
