"""The total deadline per attempt, against hostile receivers (raw sockets on 127.0.0.1).

Each receiver keeps a connection busy for ever in its own way — headers one
byte at a time, a body one byte at a time, an endless chunked body — always
faster than the read timeout. Whatever it does, the attempt ends in a
RequestTimeout once its deadline passes, for both transports, and a stopped
worker leaves no thread inside a request.
"""

import threading

import pytest

from syncworkers import HTTPClientConfig, PollerWorker, RequestTimeout, Runner
from syncworkers.http.client import HTTPClient

from .helpers import wait_for
from .hostile import HostileReceiver

pytestmark = pytest.mark.transport_independent  # each test names its transport

TRANSPORTS = ["requests", "curl"]
#: Seconds an attempt may take here; the read timeout is far longer, so only the deadline can end it.
DEADLINE = 1.0


def trickling_headers():
    """A status line, then header bytes one at a time, never the blank line."""
    yield b"HTTP/1.1 200 OK\r\n", 0
    while True:
        yield b"X", 0.1


def trickling_body():
    """Complete headers, then a 1 MB body one byte at a time."""
    yield b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", 0
    while True:
        yield b".", 0.1


def endless_chunked():
    """A chunked body whose chunks never stop coming (and never stall)."""
    yield b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0
    while True:
        yield b"400\r\n" + b"x" * 1024 + b"\r\n", 0.001


def hostile_config(transport, **kw):
    return HTTPClientConfig(transport=transport, deadline=DEADLINE, read_timeout=30.0, max_retries=0,
                            max_response_size=1 << 30, **kw)  # the largest allowed: the deadline ends it


@pytest.mark.parametrize("behaviour", [trickling_headers, trickling_body, endless_chunked])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_hostile_receiver_ends_in_a_timeout_at_the_deadline(transport, behaviour):
    with HostileReceiver(behaviour) as receiver, HTTPClient(hostile_config(transport)) as client:
        with pytest.raises(RequestTimeout, match="deadline") as info:
            client.get(receiver.url("/feed"))
        assert client.in_flight == 0
    assert info.value.attempts == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_deadline_comes_from_the_environment(transport, monkeypatch):
    monkeypatch.setenv("HTTP_DEADLINE", "0.5")
    monkeypatch.setenv("HTTP_TRANSPORT", transport)
    config = HTTPClientConfig.from_env()
    assert (config.deadline, config.transport) == (0.5, transport)
    with HostileReceiver(trickling_body) as receiver, HTTPClient(config) as client:
        with pytest.raises(RequestTimeout, match="deadline of 0.5s exceeded"):
            client.get(receiver.url("/feed"), retry=False)


def test_the_default_deadline_is_never_shorter_than_connect_plus_read():
    assert HTTPClientConfig().effective_deadline == 60.0
    assert HTTPClientConfig(read_timeout=120.0).effective_deadline == 125.0
    assert HTTPClientConfig(read_timeout=120.0, deadline=10.0).effective_deadline == 10.0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_many_hostile_receivers_do_not_hold_healthy_requests(transport, server):
    """Four trickling receivers at once: each ends at its deadline; a healthy host answers meanwhile."""
    server.route("GET", "/ok", json={"ok": True})
    with HostileReceiver(trickling_headers) as receiver, HTTPClient(hostile_config(transport),
                                                                    threads=8) as client:
        errors = []

        def hostile():
            try:
                client.get(receiver.url("/feed"))
            except RequestTimeout as exc:
                errors.append(exc)

        threads = [threading.Thread(target=hostile) for _ in range(4)]
        for t in threads:
            t.start()
        assert client.get(server.url("/ok")).json() == {"ok": True}
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert len(errors) == 4


class RecordingPoller(PollerWorker):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.errors = []
        self.failed = threading.Event()

    def process_message(self, message):
        pass

    def on_poll_error(self, exc):
        self.errors.append(exc)
        self.failed.set()


@pytest.mark.parametrize("behaviour", [trickling_headers, endless_chunked])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stop_returns_true_with_no_thread_inside_a_request(transport, behaviour):
    with HostileReceiver(behaviour) as receiver:
        poller = RecordingPoller(receiver.url("/feed"), interval=3600, http_config=hostile_config(transport))
        poller.start()
        try:
            assert receiver.requests.wait(10)  # the poll is on the wire, held by the receiver
            assert poller.client.in_flight == 1
            assert poller.stop(timeout=30) is True
            assert poller.client.in_flight == 0
            assert poller.failed.is_set()
            assert isinstance(poller.errors[0], RequestTimeout)
        finally:
            poller.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_shared_runner_stop_leaves_no_thread_inside_a_request(transport):
    with HostileReceiver(trickling_body) as receiver:
        pollers = [RecordingPoller(receiver.url(f"/feed{i}"), interval=3600, name=f"p{i}",
                                   http_config=hostile_config(transport)) for i in range(3)]
        runner = Runner(pollers, max_workers=3).start()
        try:
            assert wait_for(lambda: receiver.count == 3, 10)  # every poll is held on the wire
            assert runner.stop(timeout=30) is True
            assert [p.client.in_flight for p in pollers] == [0, 0, 0]
            assert all(isinstance(p.errors[0], RequestTimeout) for p in pollers)
        finally:
            for p in pollers:
                p.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_watchdog_thread_is_left_once_stop_returned(transport, server, monkeypatch):
    from syncworkers.http.transport.deadline import WATCHDOG

    monkeypatch.setattr(WATCHDOG, "linger", 60.0)  # only stop() can end it in time
    server.route("GET", "/ok", json={})
    poller = RecordingPoller(server.url("/ok"), interval=3600, http_config=hostile_config(transport))
    poller.start()
    try:
        assert wait_for(lambda: len(server.calls("/ok")) == 1, 10)
        assert poller.stop(timeout=10) is True
        assert [t.name for t in threading.enumerate() if t.name == "syncworkers-deadline"] == []
    finally:
        poller.close()
