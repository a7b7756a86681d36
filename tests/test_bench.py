"""The benchmark harness still works (``--quick``)."""

import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest
import requests

from syncworkers.config import settings as config_module

from .helpers import unavailable

pytestmark = pytest.mark.transport_independent


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
FIGURES = ("1", "2", "3", "4", "5", "6", "7", "8", "9")


def has(module):
    return importlib.util.find_spec(module) is not None


@pytest.mark.slow
def test_quick_run_writes_every_figure_and_the_chart(tmp_path):
    # One run per measurement: the harness is under test here, not the figures.
    out = subprocess.run([sys.executable, os.path.join(SCRIPTS, "bench.py"), "--quick", "--runs", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(FIGURES) <= set(results["figures"])
    for key, figure in results["figures"].items():
        assert "error" not in figure, f"figure {key}: {figure['error']}"
    # The table says which receiver served and on what machine, and shows every figure.
    assert "receiver: " in out.stdout and results["receiver"] in out.stdout
    assert results["machine"]["cores"] and results["command"].startswith("python scripts/bench.py --quick")
    for key in FIGURES:
        assert f"\n{key}. " in out.stdout
    fig1 = results["figures"]["1"]
    assert {r["concurrency"] for r in fig1["rows"]} == {1, 8, 32}
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in fig1["rows"])
    peers = {r["client"] for r in results["figures"]["2"]["rows"]}
    for module, name in (("httpx", "httpx.AsyncClient"), ("aiohttp", "aiohttp.ClientSession")):
        assert (name in peers) == has(module)
        if not has(module):
            assert results["figures"]["2"]["skipped"][module] == "skipped: not installed"
    assert (tmp_path / "bench.rst").read_text().count("=====") >= 2
    if has("matplotlib"):
        assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not (tmp_path / "bench.png").exists()


def test_python_receiver_scripts_answers_by_path():
    sys.path.insert(0, SCRIPTS)
    try:
        import receivers
    finally:
        sys.path.remove(SCRIPTS)
    with receivers.PythonReceiver() as rx, requests.Session() as s:
        assert s.post(rx.url + "/hook", json={"a": 1}, timeout=5).status_code == 204
        assert s.post(rx.url + "/status/400/x", data=b"x" * 70000, timeout=5).status_code == 400
        assert s.get(rx.url + "/delay/10/status/503/y", timeout=5).status_code == 503
        proc = rx.proc
    assert proc.poll() is not None  # stopped with the context
    started = receivers.fast_receiver("python")
    first = started.proc
    with started as rx:
        assert rx.proc is first  # a started receiver is not started twice
    assert first.poll() is not None


def test_nginx_with_the_echo_module_plays_the_scripted_paths_of_the_latency_receiver():
    sys.path.insert(0, SCRIPTS)
    try:
        import receivers
    finally:
        sys.path.remove(SCRIPTS)
    if receivers.find_nginx() is None or receivers.find_echo_module() is None:
        unavailable("nginx or its echo module (libnginx-mod-http-echo) is not installed", "nginx")
    with receivers.latency_receiver("nginx") as rx, requests.Session() as s:
        assert "echo_sleep" in rx.kind
        started = time.monotonic()
        assert s.post(rx.url + "/delay/50/hook", json={"a": 1}, timeout=5).status_code == 204
        assert time.monotonic() - started >= 0.05  # a lower bound: the answer waited for its delay
        assert s.post(rx.url + "/status/400/x", data=b"x" * 70000, timeout=5).status_code == 400
        assert s.get(rx.url + "/delay/50/status/503/y", timeout=5).status_code == 503
        assert s.post(rx.url + "/anything", data=b"{}", timeout=5).status_code == 204
        proc = rx.proc
    assert proc.poll() is not None


@pytest.mark.slow
def test_the_postgresql_outbox_benchmark_runs_and_reports_its_ratios(pg_url):
    out = subprocess.run([sys.executable, os.path.join(SCRIPTS, "bench_outbox_pg.py"), "--url", pg_url,
                          "--count", "40", "--samples", "5", "--workers", "4", "--delay-ms", "1"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "x direct" in out.stdout and "commit to first attempt: p50" in out.stdout


@pytest.mark.slow
@pytest.mark.transport_dependent
def test_the_soak_quick_run_prints_each_period_and_the_slope_over_the_suites_transport():
    transport = config_module.DEFAULT_TRANSPORT
    out = subprocess.run([sys.executable, os.path.join(SCRIPTS, "soak.py"), "--quick", "--transport", transport],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["transport"] == transport and result["stopped_cleanly"]
    assert [s["period"] for s in result["samples"]] == [1, 2, 3, 4, 5]
    for sample in result["samples"]:
        assert sample["rss_mb"] > 0 and sample["threads"] > 1 and sample["fds"] > 0
        assert f"\n{sample['period']:>6} {sample['rss_mb']:>8.1f} {sample['threads']:>7} {sample['fds']:>5} " \
            in out.stdout
    # Every kind of work was done, without an error, and stop() left nothing behind.
    assert result["polls"] > 0 and result["direct_sent"] > 0 and result["outbox_delivered"] > 0
    assert (result["poll_errors"], result["direct_failed"], result["enqueue_failed"]) == (0, 0, 0)
    assert result["outbox_delivered"] == result["enqueued"]
    assert result["threads_after_stop"] == 1
    assert isinstance(result["slope_mb_per_5_periods"], float)
    assert "RSS slope after period 2: " in out.stdout and "MB per 5 periods of 1 s" in out.stdout
