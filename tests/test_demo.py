from click.testing import CliRunner

from syncworkers.cli import cli
from syncworkers.outbox import Outbox


def test_demo_relays_every_polled_event_as_a_verified_webhook(tmp_path):
    path = tmp_path / "demo.sqlite3"
    result = CliRunner().invoke(cli, ["demo", "--seconds", "1", "--outbox", str(path)])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.output.splitlines() if line.strip())
    assert lines["all_delivered"].strip() == "True"
    assert lines["bad_signatures"].strip() == "0"
    enqueued = int(lines["events_enqueued"])
    assert enqueued >= 2 and int(lines["received_unique"]) == enqueued
    with Outbox(str(path)) as outbox:  # the durable file holds the record of each delivery
        assert outbox.counts()["delivered"] == enqueued
        assert outbox.counts()["pending"] == 0
