"""``syncworkers outbox deliver`` (cron: what is due, then a summary) and progress on long outbox work."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from syncworkers import verify
from syncworkers.cli import cli
from syncworkers.outbox import DEAD, DELIVERED, PENDING, Outbox

from .helpers import new_secret

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def states(path):
    with Outbox(path) as box:
        return {d.endpoint: d.state for d in box.list(limit=1000)}


def deliver(path, env=None):
    return CliRunner().invoke(cli, ["outbox", "deliver", "--path", path], env=env or {})


def test_deliver_sends_what_is_due_signed_and_prints_a_summary(server, tmp_path):
    server.route("POST", "/ok", status=200)
    server.route("POST", "/gone", status=410)
    server.route("POST", "/flaky", status=503)
    path = str(tmp_path / "outbox.db")
    secret = new_secret()
    with Outbox(path) as box:
        for n in range(3):
            box.add(f"ok-{n}", server.url("/ok"), b'{"n":%d}' % n)
        box.add("gone", server.url("/gone"), b"{}")
        box.add("flaky", server.url("/flaky"), b"{}")
        box.add("later", server.url("/ok"), b"{}", now=time.time() + 3600)  # not due yet
    result = deliver(path, {"WEBHOOK_SIGNING_SECRET": secret, "WEBHOOK_RETRY_SCHEDULE": "3600"})
    assert result.exit_code == 1, result.output  # a delivery died
    summary = result.output.strip().splitlines()[-1]
    assert summary.startswith("delivered 3, retry scheduled 1, postponed 0, dead 1; 2 pending (next due ")
    assert states(path) == {"ok-0": DELIVERED, "ok-1": DELIVERED, "ok-2": DELIVERED, "gone": DEAD,
                            "flaky": PENDING, "later": PENDING}
    assert len(server.calls("/ok")) == 3  # "later" was not sent
    for request in server.calls("/ok"):
        verify(request.body, request.headers, secret)  # signed as a running sender signs


def test_deliver_exits_0_when_everything_due_went_through(server, tmp_path):
    server.route("POST", "/ok", status=200)
    path = str(tmp_path / "outbox.db")
    with Outbox(path) as box:
        box.add("ok", server.url("/ok"), b"{}")
    result = deliver(path)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "delivered 1, retry scheduled 0, postponed 0, dead 0; 0 pending"


@pytest.mark.transport_independent
def test_deliver_on_a_missing_file_exits_2(tmp_path):
    result = deliver(str(tmp_path / "nope.db"))
    assert result.exit_code == 2 and "no such outbox file" in result.output


def _dead_outbox(path, count):
    now = time.time()
    ids = []
    with Outbox(path, owner="t") as box:
        for n in range(count):
            ids.append(box.add("e", "http://127.0.0.1:1/e", b"{}", now=now - 10))
        box.claim_due(count, now=now)
        for id in ids:
            box.mark_dead(id, "gone", 410, now=now)
    return ids


def _run_with_stderr_on_a_terminal(args, input_text, env=None):
    """Run the CLI with stderr on a pseudo-terminal; (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", "from syncworkers.cli import main; main()", *args],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=slave,
                            env={**os.environ, **(env or {})})
    os.close(slave)
    stdout, _ = proc.communicate(input_text.encode(), timeout=60)
    shown = b""
    while select.select([master], [], [], 0.5)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.returncode, stdout.decode(), shown.decode(errors="replace")


@pytest.mark.transport_independent
def test_replay_of_thousands_of_ids_shows_progress_on_a_terminal_only(tmp_path):
    path = str(tmp_path / "outbox.db")
    ids = _dead_outbox(path, 1200)
    args = ["outbox", "replay", "--path", path, "--ids-from", "-"]
    code, stdout, shown = _run_with_stderr_on_a_terminal(args, "\n".join(ids[:1100]) + "\n")
    assert (code, stdout.strip()) == (0, "replayed 1100 dead deliveries")
    assert "replaying" in shown and "1100/1100" in shown
    piped = subprocess.run([sys.executable, "-c", "from syncworkers.cli import main; main()", *args],
                           cwd=ROOT, input="\n".join(ids[1100:]), capture_output=True, text=True, timeout=60)
    assert (piped.returncode, piped.stdout.strip(), piped.stderr) == (0, "replayed 100 dead deliveries", "")
    with Outbox(path) as box:
        assert box.counts()["dead"] == 0


@pytest.mark.transport_independent
def test_replay_ids_from_an_empty_file_is_a_usage_error(tmp_path):
    path = str(tmp_path / "outbox.db")
    _dead_outbox(path, 1)
    empty = tmp_path / "ids.txt"
    empty.write_text("\n")
    result = CliRunner().invoke(cli, ["outbox", "replay", "--path", path, "--ids-from", str(empty)])
    assert result.exit_code == 2 and "no ids in it" in result.output


@pytest.mark.transport_independent
def test_deliver_shows_progress_on_a_terminal_and_only_its_summary_when_piped(server, tmp_path):
    server.route("POST", "/ok", status=200)
    path = str(tmp_path / "outbox.db")
    with Outbox(path) as box:
        for n in range(40):
            box.add(f"ok-{n}", server.url("/ok"), b"{}")
    args = ["outbox", "deliver", "--path", path]
    # As many slots for the host as deliveries: none is postponed because the others are still on the wire.
    code, stdout, shown = _run_with_stderr_on_a_terminal(args, "", {"WEBHOOK_MAX_IN_FLIGHT_PER_HOST": "40"})
    assert (code, stdout.strip()) == (0, "delivered 40, retry scheduled 0, postponed 0, dead 0; 0 pending"), shown
    assert "delivering" in shown and "40/40" in shown
    with Outbox(path) as box:
        box.add("one-more", server.url("/ok"), b"{}")
    piped = subprocess.run([sys.executable, "-c", "from syncworkers.cli import main; main()", *args],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (piped.returncode, piped.stderr) == (0, "")
    assert piped.stdout == "delivered 1, retry scheduled 0, postponed 0, dead 0; 0 pending\n"


def test_deliver_that_times_out_with_deliveries_due_exits_1_and_leaves_them_pending(server, tmp_path):
    server.route("POST", "/ok", status=200)
    path = str(tmp_path / "outbox.db")
    with Outbox(path) as box:
        box.add("ok", server.url("/ok"), b"{}")
    result = CliRunner().invoke(cli, ["outbox", "deliver", "--path", path, "--timeout", "0"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("delivered 0, retry scheduled 0, postponed 0, dead 0; 1 pending")
    assert states(path) == {"ok": PENDING} and server.calls("/ok") == []
