"""The command line: click's CliRunner for the commands, main() and real subprocesses for exit codes."""

import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from syncworkers.cli import cli, main

from .apps import cli_workers
from .helpers import closed_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = "tests.apps.cli_workers"


def run_main(args, capsys):
    """main() as the console script runs it: returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.fixture(autouse=True)
def _results():
    cli_workers.RESULTS.clear()


def test_run_once_polls_each_worker_and_exits_0(server, monkeypatch):
    server.route("GET", "/events", json={"events": [1, 2]})
    monkeypatch.setenv("POLLER_URL", server.url("/events"))
    result = CliRunner().invoke(cli, ["run", "--once", f"{APP}:GoodPoller", f"{APP}:make_poller"])
    assert result.exit_code == 0, result.output
    assert cli_workers.RESULTS == [{"events": [1, 2]}, {"events": [1, 2]}]
    assert len(server.calls("/events")) == 2


def test_run_once_non_2xx_is_data_not_failure(server, monkeypatch):
    server.route("GET", "/events", status=503, json={"down": True})
    monkeypatch.setenv("POLLER_URL", server.url("/events"))
    monkeypatch.setenv("HTTP_MAX_RETRIES", "0")
    result = CliRunner().invoke(cli, ["run", "--once", f"{APP}:GoodPoller"])
    assert result.exit_code == 0
    assert cli_workers.RESULTS == [{"down": True}]


def test_run_once_exits_1_when_process_message_raises(server, monkeypatch, capsys):
    server.route("GET", "/events", json=[])
    monkeypatch.setenv("POLLER_URL", server.url("/events"))
    code, _, err = run_main(["run", "--once", f"{APP}:GoodPoller", f"{APP}:BrokenPoller"], capsys)
    assert code == 1
    assert "1 of 2 worker(s) failed" in err


def test_run_once_exits_1_on_transport_error(monkeypatch, capsys):
    port = closed_port()
    monkeypatch.setenv("POLLER_URL", f"http://127.0.0.1:{port}/gone")
    monkeypatch.setenv("HTTP_MAX_RETRIES", "0")
    code, _, _ = run_main(["run", "--once", f"{APP}:GoodPoller"], capsys)
    assert code == 1


def test_check_validates_without_sending(server, monkeypatch):
    server.route("GET", "/events", json=[])
    monkeypatch.setenv("POLLER_URL", server.url("/events"))
    monkeypatch.setenv("POLLER_INTERVAL", "2.5")
    result = CliRunner().invoke(cli, ["check", f"{APP}:GoodPoller"])
    assert result.exit_code == 0
    assert "interval=2.5" in result.output and server.url("/events") in result.output
    assert server.requests == []


def test_check_does_not_print_url_credentials_or_query(monkeypatch):
    monkeypatch.setenv("POLLER_URL", "http://user:s3cret-pw@127.0.0.1:9/events?api_key=s3cret-key")
    result = CliRunner().invoke(cli, ["check", f"{APP}:GoodPoller"])
    assert result.exit_code == 0, result.output
    assert "127.0.0.1:9/events" in result.output
    assert "s3cret" not in result.output


@pytest.mark.transport_independent
@pytest.mark.parametrize("target, fragment", [
    ("tests.apps.nope:Worker", "cannot import module 'tests.apps.nope'"),
    (f"{APP}:Missing", "has no attribute 'Missing'"),
    (f"{APP}:NotAWorker", "not an HTTPWorker subclass"),
    (f"{APP}:make_nothing", "returned int, not an HTTPWorker"),
    (f"{APP}:explode", "cannot create"),
    (f"{APP}:not_callable", "is not a worker class, instance or factory"),
    ("no_colon_here", "is not of the form module:Worker"),
])
def test_bad_targets_one_line_exit_2_no_traceback(target, fragment, capsys):
    code, out, err = run_main(["check", target], capsys)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


@pytest.mark.transport_independent
def test_bad_environment_reports_every_variable_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("POLLER_URL", "http://127.0.0.1:9/x")
    monkeypatch.setenv("POLLER_INTERVAL", "often")
    monkeypatch.setenv("POLLER_METHOD", "FETCH")
    code, _, err = run_main(["run", "--once", f"{APP}:GoodPoller"], capsys)
    assert code == 2
    assert "POLLER_INTERVAL" in err and "POLLER_METHOD" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.transport_independent
def test_missing_url_is_a_config_error(capsys):
    code, _, err = run_main(["check", f"{APP}:GoodPoller"], capsys)
    assert code == 2 and "POLLER_URL" in err


@pytest.mark.transport_independent
@pytest.mark.parametrize("args", [
    ["run", "--log-format", "xml", f"{APP}:GoodPoller"],
    ["run", "--max-workers", "0", f"{APP}:GoodPoller"],
    ["run"],
    ["frobnicate"],
])
def test_bad_options_exit_2_one_line(args, capsys):
    code, _, err = run_main(args, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1


@pytest.mark.transport_independent
def test_debug_log_level_shows_the_traceback(capsys):
    code, _, err = run_main(["check", "--log-level", "DEBUG", f"{APP}:explode"], capsys)
    assert code == 2
    assert "Traceback" in err and "KeyError" in err


@pytest.mark.transport_independent
@pytest.mark.parametrize("target", [f"{APP}:leaky_factory", f"{APP}:leaky_config"])
@pytest.mark.parametrize("command", [["check"], ["run", "--once"], ["check", "--log-level", "DEBUG"]])
def test_construction_errors_are_printed_redacted(target, command, capsys):
    code, out, err = run_main([*command, target], capsys)

    assert code == 2
    assert "Error: " in err and "127.0.0.1:9/api" in err  # still says what failed, and where
    for leak in ("hunter2-pw", "s3cr3t-sig-value", "page=1"):
        assert leak not in out + err
    result = CliRunner().invoke(cli, [*command, target])  # click's own printing of the error
    assert result.exit_code != 0 and "hunter2-pw" not in result.output and "s3cr3t" not in result.output


def test_env_file_is_read_before_workers_are_built(server, tmp_path):
    server.route("GET", "/from-file", json={"ok": 1})
    env_file = tmp_path / "worker.env"
    env_file.write_text(f"POLLER_URL={server.url('/from-file')}\n")
    try:
        result = CliRunner().invoke(cli, ["run", "--once", "--env-file", str(env_file), f"{APP}:GoodPoller"])
    finally:
        os.environ.pop("POLLER_URL", None)
    assert result.exit_code == 0, result.output
    assert len(server.calls("/from-file")) == 1


@pytest.mark.transport_independent
def test_missing_env_file_exit_2(capsys):
    code, _, err = run_main(["check", "--env-file", "/nonexistent/x.env", f"{APP}:GoodPoller"], capsys)
    assert code == 2 and "no such file" in err


def _cli_process(args, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTP_", "POLLER_", "WEBHOOK_"))}
    env.update(env_extra)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "syncworkers.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.transport_independent
def test_real_subprocess_bad_target_exit_2():
    proc = _cli_process(["run", "tests.apps.nope:Worker"], {})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().splitlines() == ["Error: cannot import module 'tests.apps.nope': "
                                        "ModuleNotFoundError: No module named 'tests.apps.nope' "
                                        f"(not found from {ROOT}: is its folder on sys.path? "
                                        "syncworkers run/check --app-dir FOLDER puts it there)"]


@pytest.mark.transport_independent
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_real_subprocess_run_stops_on_signal_with_exit_0(server, signum):
    server.route("GET", "/tick", json={"n": 1})
    proc = _cli_process(["run", f"{APP}:GoodPoller"], {"POLLER_URL": server.url("/tick"),
                                                        "POLLER_INTERVAL": "0.05"})
    try:
        deadline = time.monotonic() + 60
        while len(server.calls("/tick")) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(server.calls("/tick")) >= 3, proc.stderr.read() if proc.poll() is not None else ""
        proc.send_signal(signum)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0


def test_run_once_drains_a_relay_source_then_exits_0(server, monkeypatch):
    server.route("POST", "/events", status=200)
    monkeypatch.setenv("RELAY_URL", server.base_url)
    result = CliRunner().invoke(cli, ["run", "--once", f"{APP}:Relay"])
    assert result.exit_code == 0, result.output
    assert sorted(r.json()["n"] for r in server.calls("/events")) == [0, 1, 2]


def test_run_once_relay_whose_messages_fail_exits_1(server, monkeypatch, capsys):
    monkeypatch.setenv("RELAY_URL", server.base_url)
    code, _, err = run_main(["run", "--once", f"{APP}:BrokenRelay"], capsys)
    assert code == 1 and "1 of 1 worker(s) failed" in err


@pytest.mark.parametrize("status, code", [(200, 0), (500, 1)])
def test_run_once_delivers_an_outbox_file(server, monkeypatch, tmp_path, capsys, status, code):
    from syncworkers import WebhookConfig, WebhookSenderWorker

    server.route("POST", "/hooks", status=status)
    path = str(tmp_path / "outbox.sqlite3")
    enqueuer = WebhookSenderWorker(base_url=server.base_url, webhook_config=WebhookConfig(outbox_path=path))
    ids = [enqueuer.enqueue("/hooks", {"n": n}) for n in range(3)]  # a web view's part
    enqueuer.close()
    assert server.requests == []
    monkeypatch.setenv("RELAY_URL", server.base_url)
    monkeypatch.setenv("WEBHOOK_OUTBOX_PATH", path)
    monkeypatch.setenv("HTTP_TIMEOUT", "2")
    assert run_main(["run", "--once", f"{APP}:outbox_sender"], capsys)[0] == code
    assert {r.header("webhook-id") for r in server.calls("/hooks")} == set(ids)
