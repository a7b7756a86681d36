"""Outbox files made before the tables carried the ``syncworkers_outbox`` prefix keep working: opening one
renames its tables, and every delivery, attempt log and endpoint is found where it was."""

import json
import sqlite3

from click.testing import CliRunner

from syncworkers.cli import cli
from syncworkers.outbox import Outbox
from syncworkers.outbox.store import Attempt

from .helpers import Clock
from .legacy_outbox import DELIVERIES, GONE, SCHEMA_V1, T0, fill_v2

PREFIXED = {"syncworkers_outbox", "syncworkers_outbox_attempts", "syncworkers_outbox_endpoints"}


def tables(path):
    with sqlite3.connect(path) as conn:
        found = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    return found, version


def version_2_file(tmp_path):
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    fill_v2(conn)
    conn.close()
    return path


def test_a_version_2_file_is_renamed_on_open_and_every_delivery_is_found(tmp_path):
    path = version_2_file(tmp_path)
    with Outbox(path, clock=Clock(T0 + 100), owner="new") as box:
        assert {d.id: (d.url, d.state, d.attempts, d.last_status) for d in box.list(limit=100)} == DELIVERIES
        assert box.counts() == {"pending": 3, "in_flight": 1, "delivered": 1, "dead": 2, "held": 1}
        assert json.loads(box.get("msg_retrying").body) == {"n": 1}
        assert [a.status for a in box.attempts("msg_dead")] == [500] * 8
        [gone] = [e for e in box.endpoints() if not e.enabled]
        assert (gone.endpoint, gone.reason, gone.held) == ("127.0.0.1:9/hooks/gone", "status 410 Gone", 1)
        # the schedule goes on where it was: due ones and the expired lease are claimed, the held one is not
        assert sorted(d.id for d in box.claim_due(10)) == ["msg_in_flight", "msg_pending", "msg_retrying"]
        box.mark_delivered("msg_pending", 200, attempt=Attempt(at=T0 + 100, duration=0.1, kind="success", status=200))
        assert box.get("msg_pending").state == "delivered"
        assert box.enable_endpoint(GONE.split("://", 1)[1]) == 1
        assert box.get("msg_held").state == "pending"
        assert box.replay(ids=["msg_dead"]) == 1
    assert tables(path) == (PREFIXED, 4)
    with Outbox(path) as box:  # opened again: nothing left to migrate
        assert len(box.list(limit=100)) == len(DELIVERIES)


def test_the_command_line_lists_every_delivery_of_a_version_2_file(tmp_path):
    path = version_2_file(tmp_path)
    result = CliRunner().invoke(cli, ["outbox", "list", "--path", path, "--json", "--limit", "100"])
    assert result.exit_code == 0, result.output
    assert {d["id"] for d in json.loads(result.output)} == set(DELIVERIES)
    assert tables(path) == (PREFIXED, 4)


def test_a_version_1_sqlite_file_is_migrated_and_its_deliveries_get_their_endpoint(tmp_path):
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_V1)
        conn.execute("PRAGMA user_version=1")
        conn.execute("INSERT INTO deliveries (id, endpoint, url, body, headers, state, attempts,"
                     " next_attempt_at, created_at, updated_at) VALUES ('msg_old', 'orders', ?, x'7b7d',"
                     " '{}', 'pending', 2, 0, 0, 0)", ("http://127.0.0.1:9/hooks/orders?token=query-secret",))
    conn.close()
    with Outbox(path, clock=Clock(T0), owner="A") as box:
        [d] = box.claim_due(1)
        box.mark_dead(d.id, "gone", 410, attempt=Attempt(at=T0, duration=0.1, kind="gone", status=410))
        assert [e.endpoint for e in box.endpoints()] == ["127.0.0.1:9/hooks/orders"]
        assert box.get("msg_old").attempts == 3
    assert tables(path) == (PREFIXED, 4)


def test_a_file_made_now_has_the_prefixed_tables_only(tmp_path):
    path = str(tmp_path / "new.db")
    Outbox(path).close()
    assert tables(path) == (PREFIXED, 4)


# -- the trace context (schema 4; PostgreSQL's added column) ---------------------------------------------

TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "shop=1"}


def test_a_version_3_file_gains_the_trace_context_and_its_deliveries_go_on_without_one(tmp_path):
    path = version_2_file(tmp_path)
    Outbox(path).close()
    with sqlite3.connect(path) as conn:  # as syncworkers before trace contexts left it: schema 3
        conn.execute("ALTER TABLE syncworkers_outbox DROP COLUMN trace_context")
        conn.execute("PRAGMA user_version=3")
    conn.close()
    with Outbox(path, clock=Clock(T0 + 100), owner="A") as box:
        assert box.get("msg_pending").trace_context is None
        new = box.add("/hooks/orders", "http://127.0.0.1:9/hooks/orders", b"{}", trace_context=TRACE)
        assert box.get(new).trace_context == TRACE
        assert {d.id: d.trace_context for d in box.claim_due(100)}[new] == TRACE
    assert tables(path) == (PREFIXED, 4)


def test_a_postgresql_table_without_the_trace_context_gains_it_and_keeps_its_deliveries(pg_db):
    import psycopg

    from syncworkers.outbox import open_outbox

    with open_outbox(pg_db) as box:
        old = box.add("/hooks/orders", "http://127.0.0.1:9/hooks/orders", b"{}")
    with psycopg.connect(pg_db, autocommit=True) as conn:  # the table as an earlier version made it
        conn.execute("ALTER TABLE syncworkers_outbox DROP COLUMN trace_context")
    with open_outbox(pg_db) as box:
        assert box.get(old).trace_context is None
        new = box.add("/hooks/orders", "http://127.0.0.1:9/hooks/orders", b"{}", trace_context=TRACE)
        assert box.get(new).trace_context == TRACE
        assert {d.id: d.trace_context for d in box.claim_due(10)} == {old: None, new: TRACE}
