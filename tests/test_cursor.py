"""IncrementalCursor and its state stores: advance only after every item was processed, survive restarts."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from syncworkers import (
    ConfigError,
    IncrementalCursor,
    MemoryStateStore,
    OffsetPaginator,
    PollerWorker,
    RateLimits,
    SQLiteStateStore,
)
from syncworkers.polling.cursor import later
from syncworkers.polling.state import open_state_store

from .server import Reply

ROOT = Path(__file__).resolve().parent.parent

# Six events in cursor order; the API returns those updated at or after ?updated_since (>=).
EVENTS = [{"id": i, "updated_at": f"2024-05-0{i}T10:00:00Z"} for i in range(1, 7)]


def events_api(available):
    """A handler serving EVENTS[:available()] filtered by updated_since, paged by limit/offset."""
    def handler(req):
        q = {k: v[-1] for k, v in parse_qs(req.query).items()}
        rows = [e for e in EVENTS[:available()] if "updated_since" not in q
                or not later(q["updated_since"], e["updated_at"])]
        offset, limit = int(q.get("offset", 0)), int(q.get("limit", 100))
        return Reply(200, json.dumps(rows[offset:offset + limit]).encode(), {"Content-Type": "application/json"})
    return handler


def since_sent(server, path="/events"):
    return [parse_qs(r.query).get("updated_since", [None])[-1] for r in server.calls(path)]


class Sink(PollerWorker):
    def __init__(self, *args, fail_on=None, **kwargs):
        kwargs.setdefault("rate_limits", RateLimits())
        super().__init__(*args, **kwargs)
        self.seen = []
        self.fail_on = fail_on

    def process_message(self, message):
        if message.body["id"] == self.fail_on:
            raise RuntimeError("cannot store this one")
        self.seen.append(message.body["id"])


# -- pure ------------------------------------------------------------------------


@pytest.mark.transport_independent
def test_highest_compares_times_numbers_and_text():
    cursor = IncrementalCursor()
    items = [{"updated_at": "2024-05-01T12:00:00+02:00"}, {"updated_at": "2024-05-01T11:00:00Z"}, {"x": 1}]
    assert cursor.highest(None, items) == "2024-05-01T11:00:00Z"  # 11:00Z is after 10:00Z (12:00+02:00)
    assert cursor.highest("2024-06-01T00:00:00Z", items) == "2024-06-01T00:00:00Z"
    numeric = IncrementalCursor(field="meta.seq", param="since_seq")
    assert numeric.highest(9, [{"meta": {"seq": 10}}, {"meta": {"seq": 2}}, {"meta": {"seq": None}}]) == 10
    assert later(10, 9) and not later(9, 9) and later("b", "a")


@pytest.mark.transport_independent
@pytest.mark.parametrize("kwargs", [{"field": ""}, {"param": None}, {"initial": {"a": 1}}])
def test_bad_cursor_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        IncrementalCursor(**kwargs)


def test_state_urls(tmp_path, monkeypatch):
    assert isinstance(open_state_store(None), MemoryStateStore)
    assert open_state_store(str(tmp_path / "s.db")).path == str(tmp_path / "s.db")
    assert open_state_store(f"sqlite:///{tmp_path}/s.db").path == f"{tmp_path}/s.db"
    assert open_state_store("sqlite:///rel.db").path == "rel.db"
    with pytest.raises(ConfigError, match="unsupported scheme"):
        open_state_store("redis://127.0.0.1/0")
    monkeypatch.setenv("POLLER_STATE_URL", str(tmp_path / "env.db"))
    worker = PollerWorker("http://127.0.0.1:1/x", interval=1, cursor=IncrementalCursor())
    assert isinstance(worker.state, SQLiteStateStore) and worker.state.path == str(tmp_path / "env.db")
    worker.close()


@pytest.mark.transport_independent
def test_sqlite_store_round_trip(tmp_path):
    store = SQLiteStateStore(str(tmp_path / "state.db"))
    assert store.get("p") is None
    store.set("p", "2024-05-01T10:00:00Z")
    store.set("q", 42)
    assert SQLiteStateStore(str(tmp_path / "state.db")).get("p") == "2024-05-01T10:00:00Z"
    assert store.get("q") == 42


# -- in process --------------------------------------------------------------------


def test_the_cursor_is_sent_on_the_next_tick_and_survives_a_new_worker(server, tmp_path):
    available = [3]
    server.route("GET", "/events", handler=events_api(lambda: available[0]))
    state = str(tmp_path / "state.db")
    cursor = IncrementalCursor(field="updated_at", param="updated_since", initial="2024-01-01T00:00:00Z")
    worker = Sink(server.url("/events"), interval=60, name="events", cursor=cursor, state_url=state,
                  data_extractor=lambda body: body)
    worker.poll()
    assert worker.seen == [1, 2, 3]
    available[0] = 6
    worker.poll()
    assert worker.seen == [1, 2, 3, 3, 4, 5, 6]  # the boundary item comes again (>=): de-dup on ids
    worker.close()
    again = Sink(server.url("/events"), interval=60, name="events", cursor=cursor, state_url=state,
                 data_extractor=lambda body: body)
    again.poll()
    assert again.seen == [6]
    assert since_sent(server) == ["2024-01-01T00:00:00Z", EVENTS[2]["updated_at"], EVENTS[5]["updated_at"]]
    again.close()


def test_the_cursor_does_not_advance_when_process_message_raised(server):
    server.route("GET", "/events", handler=events_api(lambda: 6))
    worker = Sink(server.url("/events"), interval=60, cursor=IncrementalCursor(), fail_on=4,
                  paginator=OffsetPaginator(limit=2), data_extractor=lambda body: body)
    assert not worker.poll().ok
    assert worker.seen == [1, 2, 3, 5, 6]  # the others are still processed
    worker.fail_on = None
    worker.poll()
    assert since_sent(server)[-1] is None  # read again from the start: 4 is not skipped
    assert 4 in worker.seen
    worker.poll()
    assert since_sent(server)[-1] == EVENTS[5]["updated_at"]
    worker.close()


def test_with_pagination_every_page_of_a_tick_sends_the_same_cursor_value(server):
    server.route("GET", "/events", handler=events_api(lambda: 6))
    worker = Sink(server.url("/events"), interval=60, cursor=IncrementalCursor(initial="2024-05-03T10:00:00Z"),
                  paginator=OffsetPaginator(limit=2), data_extractor=lambda body: body)
    worker.poll()
    assert worker.seen == [3, 4, 5, 6]
    assert [r.query for r in server.calls("/events")][:2] == [
        "limit=2&offset=0&updated_since=2024-05-03T10%3A00%3A00Z",
        "limit=2&offset=2&updated_since=2024-05-03T10%3A00%3A00Z"]
    worker.close()


# -- a real crash --------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, sys, time
    from syncworkers import IncrementalCursor, OffsetPaginator, PollerWorker

    url, state, log, crash_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    class Relay(PollerWorker):
        def process_message(self, message):
            if message.body["id"] == crash_at:
                open(log + ".crashing", "w").close()
                time.sleep(120)  # killed here, in the middle of the tick
            with open(log, "a") as f:
                f.write(f"{message.body['id']}\\n")
                f.flush()
                os.fsync(f.fileno())

    worker = Relay(url, interval=60, name="events", cursor=IncrementalCursor(), state_url=state,
                   paginator=OffsetPaginator(limit=2), data_extractor=lambda body: body)
    for _ in range(int(sys.argv[5])):
        assert worker.poll().ok
    worker.close()
""")


def run_child(args, timeout=60):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.transport_independent
def test_the_cursor_survives_sigkill_mid_tick_without_skipping_an_item(server, tmp_path):
    # First tick (no cursor yet) sees events 1-3; later ticks see 1-6 from the cursor on.
    server.route("GET", "/events", handler=events_api(lambda: 3 if len(since_sent(server)) <= 2 else 6))
    state, log = tmp_path / "state.db", tmp_path / "processed.log"
    child = run_child([server.url("/events"), state, log, 5, 2])
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{log}.crashing").exists():
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.monotonic() < deadline, "the child never reached the item it crashes on"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=30)
    assert log.read_text().split() == ["1", "2", "3", "3", "4"]  # tick 2 died inside event 5
    assert SQLiteStateStore(str(state)).get("events") == EVENTS[2]["updated_at"]  # tick 2 never committed

    restarted = run_child([server.url("/events"), state, log, 0, 1])
    out, err = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, err.decode()
    assert log.read_text().split()[5:] == ["3", "4", "5", "6"]  # read again from event 3: nothing skipped
    assert set(log.read_text().split()) == {str(e["id"]) for e in EVENTS}
    assert SQLiteStateStore(str(state)).get("events") == EVENTS[5]["updated_at"]


# -- PostgreSQL ----------------------------------------------------------------------


def test_postgres_store_keeps_the_cursor_across_workers(server, pg_db):
    from syncworkers import PostgresStateStore

    server.route("GET", "/events", handler=events_api(lambda: 6))
    make = lambda: Sink(server.url("/events"), interval=60, name="pg-events",  # noqa: E731
                        cursor=IncrementalCursor(initial=EVENTS[3]["updated_at"]), state_url=pg_db,
                        data_extractor=lambda body: body)
    first = make()
    assert isinstance(first.state, PostgresStateStore)
    first.poll()
    assert first.seen == [4, 5, 6]
    first.close()
    second = make()
    second.poll()
    assert second.seen == [6]
    assert since_sent(server) == [EVENTS[3]["updated_at"], EVENTS[5]["updated_at"]]
    second.close()


@pytest.mark.transport_independent
def test_postgres_store_errors_name_no_password():
    from syncworkers import StateStoreError
    from syncworkers.polling.state import PostgresStateStore

    store = PostgresStateStore("postgresql://user:hunter2@127.0.0.1:1/db")
    with pytest.raises(StateStoreError) as info:
        store.get("x")
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(store)
