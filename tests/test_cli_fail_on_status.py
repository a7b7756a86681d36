"""``syncworkers run --once --fail-on-status``: chosen HTTP answers make a cron run exit 1."""

import pytest

from syncworkers.cli import parse_statuses

from .apps import cli_workers
from .test_cli import run_main

APP = "tests.apps.cli_workers"




@pytest.fixture(autouse=True)
def _results(monkeypatch):
    cli_workers.RESULTS.clear()
    monkeypatch.setenv("HTTP_MAX_RETRIES", "0")


@pytest.mark.transport_independent
def test_parse_statuses():
    assert parse_statuses("404") == {404}
    assert parse_statuses("429, 5xx") == {429} | set(range(500, 600))
    assert parse_statuses("4XX") == set(range(400, 500))
    for bad in ("", "5x", "600", "abc", "5xx,", "99", "40 4"):
        with pytest.raises(ValueError):
            parse_statuses(bad)


@pytest.mark.parametrize("status, spec, code", [
    (500, "5xx", 1),
    (503, "429,5xx", 1),
    (429, "429,5xx", 1),
    (404, "404", 1),
    (404, "5xx", 0),  # not listed: a response is data, as without the option
    (200, "4xx,5xx", 0),
])
def test_listed_statuses_exit_1(server, monkeypatch, capsys, status, spec, code):
    server.route("GET", "/events", status=status, json={"status": status})
    monkeypatch.setenv("POLLER_URL", server.url("/events"))
    exit_code, _, err = run_main(["run", "--once", "--fail-on-status", spec, f"{APP}:GoodPoller"], capsys)
    assert exit_code == code, err
    assert cli_workers.RESULTS == [{"status": status}]  # process_message saw it either way
    if code:
        assert f"HTTP {status}" in err and "1 of 1 worker(s) failed" in err


def test_without_the_option_a_500_still_exits_0(server, monkeypatch, capsys):
    server.route("GET", "/events", status=500, json={})
    monkeypatch.setenv("POLLER_URL", server.url("/events"))
    assert run_main(["run", "--once", f"{APP}:GoodPoller"], capsys)[0] == 0


@pytest.mark.transport_independent
@pytest.mark.parametrize("args", [
    ["run", "--once", "--fail-on-status", "5x", f"{APP}:GoodPoller"],
    ["run", "--once", "--fail-on-status", "700", f"{APP}:GoodPoller"],
    ["run", "--fail-on-status", "5xx", f"{APP}:GoodPoller"],  # only meaningful with --once
])
def test_bad_values_exit_2(server, monkeypatch, capsys, args):
    monkeypatch.setenv("POLLER_URL", server.url("/events"))
    code, _, err = run_main(args, capsys)
    assert code == 2 and "fail-on-status" in err
    assert server.requests == []
