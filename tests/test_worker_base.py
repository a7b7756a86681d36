"""HTTPWorker lifecycle: start/stop, run_sync from another thread, shared Runners, reuse after stop."""

import threading

import pytest

from syncworkers import ConfigError, HTTPClientConfig, PollerWorker, Runner, WebhookSenderWorker, WorkerError

from .helpers import wait_for


def test_run_sync_in_a_thread_returns_when_stop_is_called(server):
    server.route("GET", "/x", json={})
    worker = PollerWorker(url=server.url("/x"), interval=3600)
    thread = threading.Thread(target=worker.run_sync, name="run-sync-test")
    thread.start()
    assert wait_for(lambda: worker.running and server.requests)
    assert worker.stop(timeout=5)
    thread.join(5)
    assert not thread.is_alive()
    worker.close()


def test_a_worker_polled_directly_after_a_run_still_retries(server):
    server.route("GET", "/flaky", status=[200, 503, 200])
    worker = PollerWorker(url=server.url("/flaky"), interval=3600,
                          http_config=HTTPClientConfig(retry_delay=0.01))
    worker.start()
    assert wait_for(lambda: len(server.requests) == 1)
    worker.stop(timeout=5)
    outcome = worker.poll()  # a stale stop event would cut the retry wait short
    assert outcome.ok and outcome.status_code == 200
    assert len(server.requests) == 3
    worker.close()


def test_stop_on_a_worker_of_a_shared_runner_says_to_stop_the_runner(server):
    server.route("GET", "/x", json={})
    worker = PollerWorker(url=server.url("/x"), interval=3600)
    with Runner([worker]):
        with pytest.raises(WorkerError, match="shared Runner"):
            worker.stop()
    worker.close()


def test_start_twice_is_refused(server):
    server.route("GET", "/x", json={})
    worker = PollerWorker(url=server.url("/x"), interval=3600)
    worker.start()
    try:
        with pytest.raises(WorkerError, match="already running"):
            worker.start()
    finally:
        worker.close()


def test_stop_before_run_sync_gets_going_is_not_lost(server):
    # Thread(target=worker.run_sync).start(); worker.stop(): stop() may win the race.
    server.route("GET", "/x", json={})
    worker = PollerWorker(url=server.url("/x"), interval=3600)
    assert worker.stop() is True
    thread = threading.Thread(target=worker.run_sync, name="run-sync-test")
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert server.requests == []
    worker.close()


def test_start_after_an_idle_stop_runs(server):
    server.route("GET", "/x", json={})
    worker = PollerWorker(url=server.url("/x"), interval=3600)
    worker.stop()
    worker.start()
    try:
        assert wait_for(lambda: server.requests)
    finally:
        worker.close()
    thread = threading.Thread(target=worker.run_sync, name="run-sync-test")  # the run after it blocks
    thread.start()
    try:
        assert wait_for(lambda: worker.running and len(server.requests) == 2)
    finally:
        worker.stop(timeout=5)
        thread.join(5)
    assert not thread.is_alive()


@pytest.mark.parametrize("build", [
    lambda: PollerWorker(url="http://127.0.0.1:9/x"),
    lambda: WebhookSenderWorker(base_url="http://127.0.0.1:9"),
])
def test_a_worker_reports_every_bad_variable_it_reads_at_once(monkeypatch, build):
    monkeypatch.setenv("POLLER_INTERVAL", "often")
    monkeypatch.setenv("HTTP_MAX_RETRIES", "many")
    monkeypatch.setenv("HTTP_CONNECTION_POOL_SIZE", "-1")
    monkeypatch.setenv("HTTP_SSL_VERIFY", "perhaps")
    with pytest.raises(ConfigError) as info:
        build()
    expected = {"HTTP_MAX_RETRIES", "HTTP_CONNECTION_POOL_SIZE", "HTTP_SSL_VERIFY"}
    assert expected <= set(info.value.errors)
    assert all(name in str(info.value) for name in expected)


def test_secret_poll_headers_never_reach_log_text(server, caplog):
    server.route("GET", "/x", json={})
    worker = PollerWorker(url=server.url("/x"), interval=60, headers={"Authorization": "Token tok-9f8e7d6c"})
    worker.logger.warning(f"about to poll with {worker.headers['Authorization']}")
    worker.close()
    assert "tok-9f8e7d6c" not in caplog.text
