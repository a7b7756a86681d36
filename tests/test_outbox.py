"""The durable outbox: storage, claims and leases, crash recovery, replay and purge.

Every test taking ``location`` runs against both stores: a SQLite file and a
PostgreSQL database (a fresh one per test, on the session's real server).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest

from .helpers import Clock
from syncworkers.exceptions import ConfigError
from syncworkers.outbox import (
    DEAD,
    DELIVERED,
    IN_FLIGHT,
    PENDING,
    SCHEMA_VERSION,
    Outbox,
    next_delay,
    open_outbox,
)

pytestmark = pytest.mark.transport_independent

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1_000_000.0


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "outbox.db")


@pytest.fixture
def outbox(location, clock):
    with open_outbox(location, clock=clock, owner="A") as ob:
        yield ob


def run_threads(target, args_list):
    threads = [threading.Thread(target=target, args=args, name=f"syncworkers-test-{i}")
               for i, args in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)


def test_add_then_get_round_trips_bytes_and_headers(outbox, clock):
    body = b"\x00\xff binary \xe2\x82\xac"
    headers = {"Content-Type": "application/json", "X-Trace": "t-1"}
    id = outbox.add("orders", "https://example.test/hook", body, headers)

    d = outbox.get(id)
    assert (d.endpoint, d.url, d.body, d.headers) == ("orders", "https://example.test/hook", body, headers)
    assert d.id == id and id.startswith("msg_")
    assert (d.state, d.attempts, d.next_attempt_at, d.created_at) == (PENDING, 0, T0, T0)
    assert d.last_status is d.last_error is d.owner is d.lease_until is d.delivered_at is None
    assert outbox.get("msg_missing") is None


def test_add_with_existing_id_is_idempotent(outbox):
    assert outbox.add("e", "http://h/1", b"first", id="msg_1") == "msg_1"
    assert outbox.add("e", "http://h/2", b"second", id="msg_1") == "msg_1"
    assert outbox.get("msg_1").body == b"first"
    assert outbox.counts()["pending"] == 1


def test_add_rejects_bad_input(outbox):
    with pytest.raises(TypeError, match="body must be bytes"):
        outbox.add("e", "http://h/", "text")
    with pytest.raises(TypeError, match="header"):
        outbox.add("e", "http://h/", b"", {"X-N": 1})
    with pytest.raises(ValueError, match="url is empty"):
        outbox.add("e", "", b"")
    assert outbox.counts()["pending"] == 0


def test_added_delivery_is_visible_to_a_second_outbox_on_the_file(location, clock):
    first = open_outbox(location, clock=clock)
    id = first.add("e", "http://h/", b"payload")
    with open_outbox(location, clock=clock) as second:
        assert second.durable
        assert second.get(id).body == b"payload"
    first.close()


def test_claim_due_respects_next_attempt_at_and_limit(outbox, clock):
    ids = [outbox.add("e", "http://h/", b"%d" % i, now=T0 + i) for i in range(5)]
    outbox.add("e", "http://h/", b"later", now=T0 + 100)

    assert outbox.claim_due(10, now=T0 - 1) == []
    first = outbox.claim_due(2, now=T0 + 10)
    assert [d.id for d in first] == ids[:2]  # earliest due first
    assert all(d.state == IN_FLIGHT and d.owner == "A" and d.lease_until == T0 + 20 for d in first)
    assert outbox.get(ids[0]).state == IN_FLIGHT
    rest = outbox.claim_due(10, now=T0 + 10)
    assert [d.id for d in rest] == ids[2:]  # not the claimed ones, not the later one
    assert outbox.claim_due(0, now=T0 + 1000) == []


def test_two_owners_claiming_from_many_threads_never_share_a_delivery(location, clock):
    a, b = open_outbox(location, clock=clock, owner="A"), open_outbox(location, clock=clock, owner="B")
    added = {a.add("e", "http://h/", b"x") for _ in range(500)}
    barrier = threading.Barrier(8)
    got = [[] for _ in range(8)]

    def worker(ob, out):
        barrier.wait()
        while True:
            batch = ob.claim_due(7)
            if not batch:
                return
            out.extend(d.id for d in batch)
            for d in batch[::2]:
                ob.mark_delivered(d.id, 200)

    run_threads(worker, [((a, b)[i % 2], got[i]) for i in range(8)])
    claimed = [id for ids in got for id in ids]
    assert len(claimed) == len(set(claimed)) == 500
    assert set(claimed) == added
    a.close()
    b.close()


CLAIMER = """
import json, sys
from syncworkers.outbox import open_outbox
ob = open_outbox(sys.argv[1], clock=lambda: 1000.0, owner=sys.argv[2])
mine = []
while True:
    batch = ob.claim_due(5)
    if not batch:
        break
    for d in batch:
        mine.append(d.id)
        ob.mark_delivered(d.id, 200)
print(json.dumps(mine))
"""


def test_two_processes_on_one_file_never_share_a_delivery(location):
    with open_outbox(location, clock=lambda: 1000.0) as ob:
        added = {ob.add("e", "http://h/", b"x") for _ in range(300)}
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, location, owner], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for owner in ("P1", "P2")]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    claimed = results[0] + results[1]
    assert len(claimed) == len(set(claimed)) and set(claimed) == added
    with open_outbox(location) as ob:
        assert ob.counts()["delivered"] == 300


def test_expired_lease_is_taken_over_by_another_owner(location, clock):
    a = open_outbox(location, clock=clock, owner="A", lease_seconds=10)
    b = open_outbox(location, clock=clock, owner="B", lease_seconds=10)
    ids = {a.add("e", "http://h/", b"x") for _ in range(3)}
    assert {d.id for d in a.claim_due(10)} == ids

    clock.now = T0 + 10  # lease_until == now: still valid
    assert b.claim_due(10) == []
    clock.now = T0 + 10.5
    taken = b.claim_due(10)
    assert {d.id for d in taken} == ids and all(d.owner == "B" and d.attempts == 0 for d in taken)
    assert a.claim_due(10) == []  # B's fresh leases hold

    # A's stale outcomes do not clobber B's claims; a success is recorded all the same.
    first, second, third = sorted(ids)
    clock.now = T0 + 12
    a.mark_retry(first, next_attempt_at=T0, error="late")
    a.mark_dead(second, "late")
    a.renew([third])
    assert b.get(first).state == b.get(second).state == IN_FLIGHT
    assert b.get(third).lease_until == T0 + 20.5
    a.mark_delivered(third, 200)
    assert b.get(third).state == DELIVERED
    a.close()
    b.close()


def test_renew_extends_only_this_owners_leases(outbox, location, clock):
    id = outbox.add("e", "http://h/", b"x")
    outbox.claim_due(1)
    clock.now = T0 + 8
    outbox.renew([id])
    clock.now = T0 + 15
    with open_outbox(location, clock=clock, owner="B") as b:
        assert b.claim_due(10) == []  # renewed to T0 + 18
        clock.now = T0 + 18.1
        assert [d.id for d in b.claim_due(10)] == [id]


VICTIM = """
import os, signal, sys, threading
from syncworkers.outbox import open_outbox
ob = open_outbox(sys.argv[1], clock=lambda: 1000.0, owner="victim", lease_seconds=10)
for i in range(200):
    print("added", ob.add("e", "http://h/", b"body-%d" % i, {"X-I": str(i)}), flush=True)
for d in ob.claim_due(60):
    print("claimed", d.id, flush=True)
    if d.body.endswith(b"0"):
        ob.mark_delivered(d.id, 200)
        print("delivered", d.id, flush=True)
enough = threading.Event()
def keep_adding():
    for i in range(10**6):
        print("added", ob.add("late", "http://h/", b"late"), flush=True)
        for d in ob.claim_due(1):
            print("claimed", d.id, flush=True)
        if i == 20:
            enough.set()
threading.Thread(target=keep_adding, daemon=True).start()
enough.wait(30)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_loses_nothing_and_in_flight_deliveries_are_taken_over(location):
    proc = subprocess.run([sys.executable, "-c", VICTIM, location], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # The kill may land in the middle of a line: only whole lines were printed.
    whole = proc.stdout[:proc.stdout.rfind("\n") + 1]
    lines = [line.split() for line in whole.splitlines()]
    added = [id for verb, id in lines if verb == "added"]
    claimed = {id for verb, id in lines if verb == "claimed"}
    delivered = {id for verb, id in lines if verb == "delivered"}
    assert len(added) > 220 and len(claimed) > 80 and len(delivered) == 6

    if "://" not in location:
        with sqlite3.connect(location) as conn:  # the file is intact after the crash
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    clock = Clock(1000.0)
    with open_outbox(location, clock=clock, owner="heir", lease_seconds=10) as ob:
        unprinted = []  # claimed by the last claim_due(), committed as the kill landed, never printed
        for id in added[:200]:
            expected = DELIVERED if id in delivered else IN_FLIGHT if id in claimed else PENDING
            state = ob.get(id).state
            if expected == PENDING and state == IN_FLIGHT:
                unprinted.append(id)
            else:
                assert state == expected
        assert len(unprinted) <= 1
        for id in added[200:]:  # every add() that returned survived the kill
            assert ob.get(id).state in (PENDING, IN_FLIGHT)
        assert ob.get(added[7]).headers == {"X-I": "7"} and ob.get(added[7]).body == b"body-7"
        counts = ob.counts()
        assert len(added) <= sum(counts[k] for k in ("pending", "delivered", "dead")) <= len(added) + 1
        in_flight = {d.id for d in ob.list(state=IN_FLIGHT, limit=10_000)}
        assert claimed - delivered <= in_flight and len(in_flight) == counts["in_flight"]

        before = {d.id for d in ob.claim_due(10_000)}
        assert len(before) == counts["pending"] - counts["in_flight"]
        assert not before & in_flight  # the dead owner's leases are still valid
        for id in before:
            ob.mark_delivered(id, 200)
        clock.now = 1010.5
        after = ob.claim_due(10_000)
        assert {d.id for d in after} == in_flight  # taken over, same ids
        assert all(d.owner == "heir" for d in after)


def test_mark_retry_and_mark_dead_record_attempts_and_errors(outbox, clock):
    id = outbox.add("e", "http://h/", b"x")
    outbox.claim_due(1)
    outbox.mark_retry(id, next_attempt_at=T0 + 5, error="HTTP 503", status=503, now=T0 + 1)
    d = outbox.get(id)
    assert (d.state, d.attempts, d.next_attempt_at) == (PENDING, 1, T0 + 5)
    assert (d.last_error, d.last_status) == ("HTTP 503", 503)
    assert d.owner is None and d.lease_until is None and d.updated_at == T0 + 1
    assert outbox.claim_due(1, now=T0 + 4) == []

    outbox.claim_due(1, now=T0 + 5)
    outbox.mark_retry(id, next_attempt_at=T0 + 65, error="Retry-After", status=429, spend_attempt=False)
    assert outbox.get(id).attempts == 1

    outbox.claim_due(1, now=T0 + 65)
    outbox.mark_dead(id, "schedule exhausted", status=500)
    d = outbox.get(id)
    assert (d.state, d.attempts, d.last_error, d.last_status) == (DEAD, 2, "schedule exhausted", 500)
    assert outbox.claim_due(10, now=T0 + 10_000) == []

    other = outbox.add("e", "http://h/", b"y")
    outbox.claim_due(1)
    outbox.mark_delivered(other, 204, now=T0 + 2)
    d = outbox.get(other)
    assert (d.state, d.attempts, d.last_status, d.delivered_at) == (DELIVERED, 1, 204, T0 + 2)
    with pytest.raises(KeyError):
        outbox.mark_delivered("msg_unknown", 200)


def test_release_hands_claims_back_without_spending_attempts(outbox, location, clock):
    ids = [outbox.add("e", "http://h/", b"x") for _ in range(4)]
    outbox.claim_due(4)
    theirs = outbox.add("e", "http://h/", b"y")
    with open_outbox(location, clock=clock, owner="B") as b:
        assert [d.id for d in b.claim_due(10)] == [theirs]
    assert outbox.release(ids[:1]) == 1
    assert outbox.get(ids[0]).state == PENDING and outbox.get(ids[1]).state == IN_FLIGHT
    assert outbox.release() == 3  # not B's claim
    assert outbox.get(theirs).state == IN_FLIGHT
    assert all(outbox.get(id).state == PENDING and outbox.get(id).attempts == 0 for id in ids)
    assert [d.id for d in outbox.claim_due(10)] == ids


def test_next_delay_follows_the_schedule():
    schedule = (5.0, 300.0, 1800.0)
    assert [next_delay(schedule, n) for n in range(5)] == [0.0, 5.0, 300.0, 1800.0, None]
    assert next_delay((), 1) is None
    with pytest.raises(ValueError):
        next_delay(schedule, -1)


def test_oldest_pending_is_the_oldest_undelivered_creation_time(outbox):
    assert outbox.oldest_pending() is None
    first = outbox.add("e", "http://h/", b"x", now=T0)
    outbox.add("e", "http://h/", b"y", now=T0 + 5)
    assert outbox.oldest_pending() == T0
    outbox.claim_due(1, now=T0 + 6)  # in flight still counts
    assert outbox.oldest_pending() == T0
    outbox.mark_delivered(first, 200)
    assert outbox.oldest_pending() == T0 + 5


def test_counts_and_next_due(outbox, clock):
    assert outbox.counts() == {"pending": 0, "in_flight": 0, "delivered": 0, "dead": 0, "held": 0}
    assert outbox.next_due() is None
    ids = [outbox.add("e", "http://h/", b"x", now=T0 + i) for i in range(4)]
    claimed = outbox.claim_due(2, now=T0 + 1)
    assert [d.id for d in claimed] == ids[:2]
    outbox.mark_delivered(ids[0], 200)
    outbox.claim_due(1, now=T0 + 3)
    outbox.mark_dead(ids[2], "gone")
    assert outbox.counts() == {"pending": 2, "in_flight": 1, "delivered": 1, "dead": 1, "held": 0}
    assert outbox.next_due() == T0 + 3  # ids[3] is due before ids[1]'s lease (T0 + 11) ends
    outbox.claim_due(1, now=T0 + 3)
    assert outbox.next_due() == T0 + 11


def test_list_filters_and_orders_newest_first(outbox, clock):
    a1 = outbox.add("a", "http://h/a", b"1", now=T0 + 1)
    b1 = outbox.add("b", "http://h/b", b"2", now=T0 + 2)
    a2 = outbox.add("a", "http://h/a", b"3", now=T0 + 3)
    outbox.claim_due(1, now=T0 + 4)
    outbox.mark_dead(a1, "gone", now=T0 + 5)

    assert [d.id for d in outbox.list()] == [a1, a2, b1]
    assert [d.id for d in outbox.list(endpoint="a")] == [a1, a2]
    assert [d.id for d in outbox.list(state=PENDING)] == [a2, b1]
    assert [d.id for d in outbox.list(state=DEAD, endpoint="a")] == [a1]
    assert [d.id for d in outbox.list(since=T0 + 2)] == [a1, a2, b1]
    assert [d.id for d in outbox.list(since=T0 + 2.5)] == [a1, a2]
    assert [d.id for d in outbox.list(limit=1)] == [a1]
    with pytest.raises(ValueError, match="unknown state"):
        outbox.list(state="lost")


def _kill(outbox, id, at):
    outbox.claim_due(100, now=at)
    outbox.mark_dead(id, f"failed {id}", status=500, now=at)
    outbox.release()


def test_replay_by_ids_endpoint_and_since(outbox, clock):
    x1 = outbox.add("x", "http://h/x", b"1")
    x2 = outbox.add("x", "http://h/x", b"2")
    y1 = outbox.add("y", "http://h/y", b"3")
    live = outbox.add("y", "http://h/y", b"4")
    _kill(outbox, x1, T0 + 10)
    _kill(outbox, x2, T0 + 20)
    _kill(outbox, y1, T0 + 30)

    with pytest.raises(ValueError):
        outbox.replay()
    assert outbox.replay(ids=[x2, live], now=T0 + 40) == 1  # only dead ones are replayed
    d = outbox.get(x2)
    assert (d.state, d.attempts, d.next_attempt_at, d.last_error) == (PENDING, 0, T0 + 40, f"failed {x2}")
    assert outbox.replay(ids=[]) == 0

    _kill(outbox, x2, T0 + 50)
    assert outbox.replay(endpoint="x", now=T0 + 60) == 2
    assert {d.id for d in outbox.list(state=DEAD)} == {y1}

    _kill(outbox, x1, T0 + 70)
    assert outbox.replay(since=T0 + 35, now=T0 + 80) == 1  # x1 died at T0+70; y1 at T0+30
    assert {d.id for d in outbox.list(state=DEAD)} == {y1}
    assert outbox.replay(endpoint="y", since=T0, now=T0 + 90) == 1
    assert outbox.counts()["dead"] == 0
    assert {d.id for d in outbox.claim_due(10, now=T0 + 90)} == {x1, x2, y1, live}


def test_purge_deletes_only_old_deliveries_in_the_given_state(outbox, clock):
    old, new, dead, pending = (outbox.add("e", "http://h/", b"x") for _ in range(4))
    outbox.claim_due(3)
    outbox.mark_delivered(old, 200, now=T0 + 10)
    outbox.mark_delivered(new, 200, now=T0 + 500)
    outbox.mark_dead(dead, "gone", now=T0 + 10)

    assert outbox.purge(older_than=100, now=T0 + 200) == 1
    assert outbox.get(old) is None and outbox.get(new) and outbox.get(dead) and outbox.get(pending)
    assert outbox.purge(older_than=100, state=DEAD, now=T0 + 200) == 1
    assert outbox.get(dead) is None
    with pytest.raises(ValueError):
        outbox.purge(older_than=0, state=PENDING)


def test_in_memory_outbox_works_from_several_threads(clock):
    for path in (None, ":memory:"):
        with Outbox(path, clock=clock) as ob:
            assert ob.durable is False and ob.path is None
            got = [[] for _ in range(4)]
            run_threads(lambda i: [ob.add("e", "http://h/", b"%d" % i) for _ in range(50)],
                        [(i,) for i in range(4)])

            def claim(out):
                while batch := ob.claim_due(3):
                    out.extend(d.id for d in batch)
                    for d in batch:
                        ob.mark_delivered(d.id, 200)

            run_threads(claim, [(g,) for g in got])
            claimed = [id for g in got for id in g]
            assert len(claimed) == len(set(claimed)) == 200
            assert ob.counts() == {"pending": 0, "in_flight": 0, "delivered": 200, "dead": 0, "held": 0}


def test_each_connection_keeps_a_small_page_cache_however_large_the_file_grows(db):
    # Every delivered row stays in the file until purged: with SQLite's default cache (2 MB per
    # connection) the process's memory grew for as long as the pooled connections filled theirs.
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.skip("no shared libsqlite3 to ask how much memory SQLite holds")
    memory_used = ctypes.CDLL(name).sqlite3_memory_used
    memory_used.restype = ctypes.c_int64
    with Outbox(db) as ob:
        ids = [ob.add("e", "http://h/", os.urandom(20_000)) for _ in range(400)]  # 8 MB of bodies
        before = memory_used()
        start, read = threading.Barrier(4), []

        def read_everything():
            start.wait()  # all at once: four pooled connections, each reading every page
            read.append(sum(len(ob.get(id).body) for id in ids))

        run_threads(read_everything, [()] * 4)
        grown = memory_used() - before
    assert read == [8_000_000] * 4
    assert grown < 4 * 512 * 1024, f"SQLite holds {grown / 2**20:.1f} MB more after reading the file"


def test_missing_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Outbox(str(tmp_path / "nope" / "outbox.db"))


def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="cannot open outbox"):
        Outbox(str(path))


def test_schema_is_versioned_and_a_newer_one_is_refused(db):
    Outbox(db).close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"syncworkers_outbox", "syncworkers_outbox_attempts", "syncworkers_outbox_endpoints"}
        indexes = [row[1] for row in conn.execute("PRAGMA index_list(syncworkers_outbox)")]
        assert "syncworkers_outbox_due" in indexes
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(ConfigError, match="schema version 99"):
        Outbox(db)


def test_closed_outbox_refuses_work(outbox):
    outbox.close()
    outbox.close()
    with pytest.raises(ValueError, match="closed"):
        outbox.add("e", "http://h/", b"x")


def test_repr_and_to_dict_hide_secrets(outbox):
    id = outbox.add("e", "https://h.test/hook?token=s3cret", b"\xff\x00",
                    {"Authorization": "Bearer s3cret", "X-Api-Key": "s3cret", "X-Trace": "t"})
    d = outbox.get(id)
    assert "s3cret" not in repr(d)
    data = d.to_dict()
    assert "s3cret" not in json.dumps(data)
    assert data["headers"]["X-Trace"] == "t"
    assert (data["body"], data["body_encoding"]) == ("/wA=", "base64")
    text = outbox.get(outbox.add("e", "http://h/", "héllo".encode())).to_dict()
    assert (text["body"], text["body_encoding"]) == ("héllo", "utf-8")


@pytest.mark.parametrize("replaced", [False, True])
def test_add_after_the_file_was_deleted_raises_instead_of_storing_into_the_void(db, clock, replaced):
    box = Outbox(db, clock=clock)
    try:
        box.add("/a", "http://127.0.0.1:9/a", b"1")
        for name in os.listdir(os.path.dirname(db)):  # the file and its -wal / -shm
            os.remove(os.path.join(os.path.dirname(db), name))
        if replaced:
            Outbox(db).close()  # a fresh, empty outbox file now sits at the path
        with pytest.raises(sqlite3.OperationalError, match="deleted or replaced"):
            box.add("/a", "http://127.0.0.1:9/a", b"2")
    finally:
        box.close()
    assert Outbox(db).counts()["pending"] == 0  # nothing was silently written to the lost file
