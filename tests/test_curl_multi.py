"""Many requests in flight from one thread: HTTPClient.submit over libcurl's multi interface."""

import threading

import pytest

from syncworkers import CircuitBreakerConfig, HTTPClientConfig, RetryConfig
from syncworkers.exceptions import CircuitOpenError, ConfigError, RequestTimeout, RetryInterrupted
from syncworkers.http.client import HTTPClient
from syncworkers.signals import StopSignal

from .helpers import wait_for
from .server import Reply

pytest.importorskip("pycurl")


def curl_client(**fields):
    fields.setdefault("max_retries", 0)
    return HTTPClient(HTTPClientConfig(transport="curl", **fields))


def multi_threads():
    return [t for t in threading.enumerate() if t.name.startswith("syncworkers-curl-multi")]


def test_many_requests_in_flight_on_one_thread(server):
    entered, release = threading.Event(), threading.Event()
    inside = []

    def hold(req):
        inside.append(req)
        if len(inside) == 40:
            entered.set()
        release.wait(10)
        return Reply(201, b'{"n": 1}', {"Content-Type": "application/json", "X-Seen": "yes"})

    server.route("POST", "/hold", handler=hold)
    with curl_client(max_connections=40) as client:
        request = client.build("POST", server.url("/hold"), json={"a": 1}, headers={"X-Call": "1"})
        futures = [client.submit(request) for _ in range(40)]
        # All 40 reach the receiver at once, through one I/O thread of the client.
        assert entered.wait(10)
        ours = [t.name for t in threading.enumerate() if t.name.startswith("syncworkers")]
        assert ours == ["syncworkers-curl-multi"]
        assert client.in_flight == 40
        release.set()
        answers = [f.result(10) for f in futures]
    assert {(r.status_code, r.json()["n"], r.headers["x-seen"], r.attempts) for r in answers} == {(201, 1, "yes", 1)}
    assert {req.header("X-Call") for req in inside} == {"1"} and {req.json()["a"] for req in inside} == {1}
    assert wait_for(lambda: not multi_threads())  # close() ended the thread


def test_submit_retries_with_the_policy_then_answers(server):
    server.route("POST", "/flaky", status=[503, 503, 200])
    with curl_client() as client:
        retry = RetryConfig(max_attempts=3, initial_delay=0.01, jitter=False)
        future = client.submit(client.build("POST", server.url("/flaky"), data=b"x"), retry=retry)
        response = future.result(10)
    assert (response.status_code, response.attempts, response.outcome.ok) == (200, 3, True)
    assert len(server.calls("/flaky")) == 3


def test_a_set_cancel_signal_ends_a_retry_wait_at_once(server):
    server.route("POST", "/down", status=503)
    cancel = StopSignal()
    with curl_client() as client:
        retry = RetryConfig(max_attempts=5, initial_delay=60.0, jitter=False)
        future = client.submit(client.build("POST", server.url("/down"), data=b"x"), retry=retry, cancel=cancel)
        assert wait_for(lambda: server.calls("/down"))
        cancel.set()
        with pytest.raises(RetryInterrupted) as caught:
            future.result(10)
    assert caught.value.attempts == 1 and len(server.calls("/down")) == 1


def test_submit_keeps_the_deadline_and_the_breaker(server):
    server.route("GET", "/trickle", handler=lambda req: Reply(200, b"x", delay=5.0))
    server.route("GET", "/fail", status=500)
    with curl_client(deadline=0.3, circuit_breaker_config=CircuitBreakerConfig(failure_threshold=2)) as client:
        with pytest.raises(RequestTimeout):
            client.submit(client.build("GET", server.url("/trickle"))).result(10)
        other = client.build("GET", server.url("/fail"))
        assert client.submit(other).result(10).status_code == 500
        # Two failures in a row (the overrun, the 500): the host's circuit is open, nothing is sent.
        with pytest.raises(CircuitOpenError):
            client.submit(other).result(10)
    assert len(server.calls("/fail")) == 1


def test_the_host_limit_queues_submitted_requests_without_threads(server):
    release = threading.Event()
    seen = []
    server.route("GET", "/slow", handler=lambda req: (seen.append(req), release.wait(10), Reply(200))[2])
    with curl_client(max_in_flight_per_host=2) as client:
        request = client.build("GET", server.url("/slow"))
        futures = [client.submit(request) for _ in range(5)]
        assert wait_for(lambda: len(seen) == 2)
        assert not wait_for(lambda: len(seen) > 2, timeout=0.3)  # the other three wait for a slot
        release.set()
        assert [f.result(10).status_code for f in futures] == [200] * 5
    assert len(seen) == 5


def test_requests_transport_cannot_submit():
    with HTTPClient(HTTPClientConfig(transport="requests")) as client:
        assert not client.can_submit
        with pytest.raises(ConfigError):
            client.submit(client.build("GET", "http://127.0.0.1:9/"))


def test_the_outbox_over_libcurl_has_more_on_the_wire_than_threads(server, tmp_path):
    from syncworkers import WebhookConfig, WebhookSenderWorker

    release = threading.Event()
    seen = []
    server.route("POST", "/hook", handler=lambda req: (seen.append(req), release.wait(10), Reply(200))[2])
    worker = WebhookSenderWorker(server.base_url, WebhookConfig(
        max_workers=2, max_in_flight_per_host=8, outbox_path=str(tmp_path / "outbox.db")),
        http_config=HTTPClientConfig(transport="curl"))
    try:
        for n in range(8):
            worker.enqueue("/hook", {"n": n})
        worker.start()
        # Eight deliveries on the wire with a pool of two threads: the attempts hold none.
        assert wait_for(lambda: len(seen) == 8)
        pool = [t.name for t in threading.enumerate() if t.name.startswith("syncworkers-outbox")]
        assert len(pool) <= 2
        release.set()
        assert worker.flush(10)
        assert worker.outbox.counts()["delivered"] == 8
        assert sorted(req.json()["n"] for req in seen) == list(range(8))
    finally:
        release.set()
        worker.stop(5)
        worker.close()


def test_the_io_thread_ends_when_idle_and_a_later_request_starts_another(server):
    from syncworkers.http.transport.curl import CurlTransport
    from syncworkers.http.transport.curl_multi import CurlMulti

    server.route("GET", "/x", status=200)
    with curl_client() as client:
        multi = CurlMulti(CurlTransport(client.config, client.session.cookies, 4), linger=0.05)
        request = client.build("GET", server.url("/x"))
        for _ in range(3):  # each time the thread has ended in between
            assert multi.submit(request, request.url).result(10).status_code == 200
            assert wait_for(lambda: not multi_threads())
        multi.close()
        with pytest.raises(Exception, match="closed"):
            multi.submit(request, request.url).result(10)
    assert len(server.calls("/x")) == 3
