"""One rule, one home: URL joining, the stop signal, input checks and results behave the same everywhere."""

import threading

import pytest

from syncworkers import ConfigError, HTTPClientConfig, PollerConfig, PollerWorker, WebhookConfig, WebhookSenderWorker
from syncworkers.delivery.request import check_delivery_id, check_headers
from syncworkers.http.client import HTTPClient
from syncworkers.signals import StopSignal
from syncworkers.http.urls import join_url

from .server import Reply


# -- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize("base, target, expected", [
    ("http://h/api", "/hook", "http://h/api/hook"),
    ("http://h/api/", "hook", "http://h/api/hook"),
    ("http://h", "/a/b?x=1", "http://h/a/b?x=1"),
    ("https://h/api", "//other:8443/x", "https://other:8443/x"),
    ("http://h/api", "http://elsewhere/y", "http://elsewhere/y"),
])
def test_join_url(base, target, expected):
    assert join_url(base, target) == expected


def test_the_client_the_poller_and_the_sender_resolve_a_path_alike(server):
    server.route("GET", "/api/items", json=[1])
    server.route("POST", "/api/items", status=204)
    base = server.url("/api")
    with HTTPClient(HTTPClientConfig(base_url=base)) as client:
        by_client = client.url_for("/items")
    poller = PollerWorker(url="/items", poller_config=PollerConfig(base_url=base), interval=60)
    with WebhookSenderWorker(base) as sender:
        result = sender.deliver("/items", {})
    poller.close()
    assert by_client == poller.url == server.url("/api/items") == result.url
    assert result.ok and server.calls("/api/items")


@pytest.mark.parametrize("base", ["http://h/api?x=1", "http://h/api#frag", "http://h/api?"])
def test_a_base_url_with_a_query_or_fragment_is_a_config_error(base):
    with pytest.raises(ConfigError, match="query string or fragment"):
        join_url(base, "/hook")
    # Refused when the worker or config is built, not at its first request.
    with pytest.raises(ConfigError, match="query string or fragment"):
        WebhookSenderWorker(base)
    with pytest.raises(ConfigError, match="query string or fragment"):
        HTTPClientConfig(base_url=base)


def test_scheme_relative_endpoints_take_the_base_urls_scheme_everywhere(server):
    server.route("POST", "/x", status=200)
    target = "//" + server.base_url.split("://", 1)[1] + "/x"
    with WebhookSenderWorker("http://127.0.0.1:9/unused") as sender:
        assert sender.deliver(target, {}).ok
    with HTTPClient(HTTPClientConfig(base_url="http://127.0.0.1:9")) as client:
        assert client.url_for(target) == server.url("/x")


@pytest.mark.parametrize("url", ["http://h/a b", "http://h/a\r\nX: y", "http://h/\x00"])
def test_urls_with_spaces_line_breaks_or_nul_are_refused(url):
    with pytest.raises(ConfigError):
        join_url(None, url)


def test_url_errors_never_quote_credentials():
    with pytest.raises(ConfigError) as info:
        join_url("http://user:hunter2@h/api?token=abc", "/x")
    assert "hunter2" not in str(info.value) and "abc" not in str(info.value)


# -- the stop signal -----------------------------------------------------------------------


def test_a_stop_signal_sets_its_children_but_not_the_other_way_round():
    run = StopSignal()
    broadcast = run.child()
    broadcast.set()
    assert not run.is_set()
    other = run.child()
    run.set()
    assert other.is_set()
    assert run.child().is_set()  # linked after the fact: set at once


def test_a_child_of_two_signals_is_set_by_either():
    a, b = StopSignal(), StopSignal()
    both = StopSignal.any(a, b)
    b.set()
    assert both.is_set() and not a.is_set()


def test_a_waiter_on_a_child_wakes_when_the_parent_is_set():
    run = StopSignal()
    child = run.child()
    woke = threading.Event()
    thread = threading.Thread(target=lambda: child.wait(30) and woke.set())
    thread.start()
    run.set()
    thread.join(5)
    assert woke.is_set()


def test_after_stop_a_direct_send_fails_without_sending(server):
    server.route("POST", "/hook", status=200)
    sender = WebhookSenderWorker(server.base_url)
    sender.start()
    assert sender.stop(timeout=5)
    result = sender.deliver("/hook", {"n": 1})
    assert (result.ok, result.error, result.attempts) == (False, "worker stopped", 0)
    assert sender.send_webhook("/hook", {}) is False
    assert sender.broadcast_webhook(["/hook", "/other"], {}) == {"/hook": False, "/other": False}
    sender.close()
    assert server.requests == []


def test_stop_interrupts_a_direct_send_waiting_to_retry(server):
    arrived = threading.Event()

    def busy(req):
        arrived.set()
        return Reply(503)

    server.route("POST", "/hook", handler=busy)
    sender = WebhookSenderWorker(server.base_url, WebhookConfig(retry_delay=3600))
    sender.start()
    results = []
    thread = threading.Thread(target=lambda: results.append(sender.deliver("/hook", {})))
    thread.start()
    assert arrived.wait(5)
    assert sender.stop(timeout=10)
    thread.join(10)
    assert not thread.is_alive()
    assert results[0].error.startswith("interrupted") and results[0].attempts == 1
    sender.close()


# -- results ---------------------------------------------------------------------------------


def test_broadcast_gives_each_endpoints_result_with_its_cause(server):
    server.route("POST", "/ok", status=200)
    server.route("POST", "/gone", status=410)
    with WebhookSenderWorker(server.base_url, WebhookConfig(max_retries=0)) as sender:
        results = sender.broadcast(["/ok", "/gone"], {"e": 1})
        assert sender.broadcast_webhook(["/ok", "/gone"], {"e": 1}) == {"/ok": True, "/gone": False}
    assert results["/ok"].ok and results["/ok"].status_code == 200
    assert not results["/gone"].ok and results["/gone"].status_code == 410
    assert "410" in results["/gone"].error


def test_run_once_results_say_ok(server):
    server.route("GET", "/x", status=500)
    poller = PollerWorker(url=server.url("/x"), interval=60, http_config=HTTPClientConfig(max_retries=0))
    outcome = poller.run_once()
    poller.close()
    assert outcome.ok and outcome.status_code == 500  # a non-2xx answer is data, not a failed cycle
    with WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=None)) as sender:
        cycle = sender.run_once()
    assert cycle.ok and cycle.results == []


# -- input checks: enqueue() refuses exactly what deliver() refuses ------------------------------


BAD_HEADERS = [{"X-Bad": "caf\u00e9\u2603"}, {"X-Nul": "a\x00b"}, {"Bad Name": "x"}, {"X-Line": "a\r\nb"},
               {"X-Num": 1}]
BAD_IDS = ["", "a\x00b", "with space", "x" * 1_000_000]


@pytest.mark.parametrize("headers", BAD_HEADERS)
def test_bad_headers_are_refused_alike_by_deliver_and_enqueue(server, tmp_path, headers):
    with pytest.raises((TypeError, ValueError)):
        check_headers(headers)
    with WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=str(tmp_path / "o.db"))) as sender:
        with pytest.raises((TypeError, ValueError)):
            sender.deliver("/hook", {}, headers=headers)
        with pytest.raises((TypeError, ValueError)):
            sender.enqueue("/hook", {}, headers=headers)
        assert sender.outbox.counts()["pending"] == 0
    assert server.requests == []


@pytest.mark.parametrize("delivery_id", BAD_IDS)
def test_bad_delivery_ids_are_refused_alike(server, tmp_path, delivery_id):
    with pytest.raises(ValueError):
        check_delivery_id(delivery_id)
    with WebhookSenderWorker(server.base_url, WebhookConfig(outbox_path=str(tmp_path / "o.db"))) as sender:
        with pytest.raises(ValueError):
            sender.enqueue("/hook", {}, delivery_id=delivery_id)
        assert sender.outbox.counts()["pending"] == 0


def test_data_nested_too_deep_is_a_clear_error(server):
    data: list = []
    for _ in range(100_000):
        data = [data]
    with WebhookSenderWorker(server.base_url) as sender, pytest.raises(ValueError, match="nested too deeply"):
        sender.deliver("/hook", data)
