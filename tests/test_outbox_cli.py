"""``syncworkers outbox stats|list|replay|purge`` through click's CliRunner, and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from syncworkers.cli import cli, parse_duration, parse_since
from syncworkers.outbox import DEAD, DELIVERED, PENDING, Outbox

pytestmark = pytest.mark.transport_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOUR = 3600.0


@pytest.fixture
def db(tmp_path):
    """An outbox file: 2 dead 'orders' (1 h and 3 h ago), 1 dead 'users' (1 h ago),
    delivered ones 10 d and 1 d old, and 1 pending (its URL and headers hold secrets)."""
    path = str(tmp_path / "outbox.db")
    now = time.time()
    with Outbox(path, owner="test") as box:
        def finish(endpoint, age, state, reason=None):
            id = box.add(endpoint, f"http://127.0.0.1:1/{endpoint}", b'{"e":"%s"}' % endpoint.encode(),
                         now=now - age - 1)
            box.claim_due(1000, now=now - age)
            if state == DEAD:
                box.mark_dead(id, reason, 410, now=now - age)
            else:
                box.mark_delivered(id, 200, now=now - age)
            box.release()
            return id

        ids = {
            "orders_new": finish("orders", HOUR, DEAD, "gone: status 410 Gone"),
            "orders_old": finish("orders", 3 * HOUR, DEAD, "refused: status 400 Bad Request"),
            "users": finish("users", HOUR, DEAD, "exhausted after 8 attempts: read timeout"),
            "old_delivered": finish("orders", 10 * 24 * HOUR, DELIVERED),
            "new_delivered": finish("orders", 24 * HOUR, DELIVERED),
            "pending": box.add("orders", "http://127.0.0.1:1/orders?token=url-secret", b"{}",
                               {"Authorization": "Bearer header-secret", "X-Trace": "t-1"}),
        }
    return path, ids


def invoke(*args):
    return CliRunner().invoke(cli, ["outbox", *args])


def states(path):
    with Outbox(path) as box:
        return {d.id: d.state for d in box.list(limit=1000)}


def test_stats_prints_the_counts(db):
    path, _ = db
    result = invoke("stats", "--path", path)
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["pending", "1", "in_flight", "0", "delivered", "2", "dead", "3", "held", "0"]
    as_json = invoke("stats", "--path", path, "--json")
    assert json.loads(as_json.output) == {"pending": 1, "in_flight": 0, "delivered": 2, "dead": 3, "held": 0}


def test_stats_reads_the_path_from_the_environment(db, monkeypatch):
    path, _ = db
    monkeypatch.setenv("WEBHOOK_OUTBOX_PATH", path)
    assert json.loads(invoke("stats", "--json").output)["dead"] == 3


def test_list_filters_and_never_prints_secret_values(db):
    path, ids = db
    dead = invoke("list", "--path", path, "--state", "dead")
    assert dead.exit_code == 0, dead.output
    lines = dead.output.splitlines()
    assert [line.split()[0] for line in lines] == [ids["users"], ids["orders_new"], ids["orders_old"]]
    assert "gone: status 410 Gone" in lines[1] and "attempts=1" in lines[1] and "status=410" in lines[1]
    orders = json.loads(invoke("list", "--path", path, "--endpoint", "orders", "--state", "dead", "--json").output)
    assert [d["id"] for d in orders] == [ids["orders_new"], ids["orders_old"]]
    assert orders[0]["body"] == '{"e":"orders"}' and orders[0]["last_error"] == "gone: status 410 Gone"
    assert len(json.loads(invoke("list", "--path", path, "--limit", "2", "--json").output)) == 2
    everything = invoke("list", "--path", path, "--json", "--limit", "100").output
    (pending,) = [d for d in json.loads(everything) if d["state"] == PENDING]
    assert pending["headers"] == {"Authorization": "***", "X-Trace": "t-1"}
    for secret in ("header-secret", "url-secret"):
        assert secret not in everything
        assert secret not in invoke("list", "--path", path).output


def test_replay_by_id_endpoint_and_since(db):
    path, ids = db
    result = invoke("replay", "--path", path, "--id", ids["orders_old"], "--id", ids["new_delivered"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "replayed 1 dead delivery"  # only dead deliveries are replayed
    after = states(path)
    assert after[ids["orders_old"]] == PENDING and after[ids["new_delivered"]] == DELIVERED

    result = invoke("replay", "--path", path, "--since", "2h")  # died within the last 2 hours
    assert result.output.strip() == "replayed 2 dead deliveries"
    assert states(path)[ids["users"]] == states(path)[ids["orders_new"]] == PENDING
    with Outbox(path) as box:
        replayed = box.get(ids["users"])
        assert (replayed.attempts, replayed.last_error) == (0, "exhausted after 8 attempts: read timeout")


def test_replay_by_endpoint_and_iso_since(db):
    path, ids = db
    two_hours_ago = datetime.fromtimestamp(time.time() - 2 * HOUR, timezone.utc).isoformat()
    result = invoke("replay", "--path", path, "--endpoint", "orders", "--since", two_hours_ago)
    assert result.output.strip() == "replayed 1 dead delivery"
    after = states(path)
    assert after[ids["orders_new"]] == PENDING
    assert after[ids["orders_old"]] == after[ids["users"]] == DEAD
    assert invoke("replay", "--path", path, "--endpoint", "users").output.strip() == "replayed 1 dead delivery"


def test_purge_deletes_delivered_deliveries_older_than_the_age(db):
    path, ids = db
    result = invoke("purge", "--path", path, "--older-than", "7d")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "purged 1 delivered delivery older than 7d"
    after = states(path)
    assert ids["old_delivered"] not in after and after[ids["new_delivered"]] == DELIVERED
    assert len(after) == 5  # dead and pending ones are kept


@pytest.mark.parametrize("args, message", [
    (["replay"], "replay needs --id, --endpoint or --since"),
    (["replay", "--since", "yesterday"], "--since: 'yesterday' is neither an ISO time"),
    (["purge"], "Missing option '--older-than'"),
    (["purge", "--older-than", "7x"], "--older-than: '7x' is not a duration"),
    (["list", "--state", "lost"], "Invalid value for '--state'"),
])
def test_usage_errors_exit_2_and_change_nothing(db, args, message):
    path, _ = db
    before = states(path)
    result = invoke(*args, "--path", path)
    assert result.exit_code == 2
    assert message in result.output
    assert states(path) == before


def test_a_missing_file_is_one_line_exit_2_and_is_not_created(tmp_path):
    path = str(tmp_path / "missing.db")
    for command in (["stats"], ["list"], ["replay", "--endpoint", "x"], ["purge", "--older-than", "1d"]):
        result = invoke(*command, "--path", path)
        assert result.exit_code == 2
        assert result.output.strip() == f"Error: --path {path!r}: no such outbox file"
    assert not os.path.exists(path)
    assert "give --url (or WEBHOOK_OUTBOX_URL) or --path" in invoke("stats").output


def test_a_file_that_is_not_an_outbox_is_one_line_exit_2(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"not sqlite at all " * 100)
    result = invoke("stats", "--path", str(path))
    assert result.exit_code == 2
    assert result.output.startswith("Error: cannot open outbox") and len(result.output.splitlines()) == 1


def test_durations_and_since_times():
    assert [parse_duration(t) for t in ("90", "30m", "2h", "1d", "1w", "1h30m", "1.5h")] == \
        [90, 1800, 7200, 86400, 604800, 5400, 5400]
    for bad in ("", "h", "2x", "-1h", "soon"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    now = 1_700_000_000.0
    assert parse_since("2h", now) == now - 7200
    assert parse_since("2023-11-14T22:13:20+00:00", now) == now
    assert parse_since("2023-11-14T22:13:20Z", now) == now


def test_the_console_command_as_a_real_subprocess(db):
    path, ids = db
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_")}
    run = [sys.executable, "-c", "from syncworkers.cli import main; main()", "outbox"]
    stats = subprocess.run([*run, "stats", "--json", "--path", path], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["dead"] == 3
    replay = subprocess.run([*run, "replay", "--path", path, "--endpoint", "users"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert (replay.returncode, replay.stdout.strip()) == (0, "replayed 1 dead delivery")
    missing = subprocess.run([*run, "replay", "--path", path], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("Error: replay needs --id, --endpoint or --since (they combine), "
                                     "or --ids-from FILE")
