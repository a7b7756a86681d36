"""The libcurl transport's pool of easy handles: shared safely between threads, reused, closed."""

import os
import subprocess
import sys
import threading

import pytest

from syncworkers import HTTPClientConfig
from syncworkers.http.client import HTTPClient

from .helpers import wait_for
from .server import Reply

pytestmark = pytest.mark.transport_independent  # each test names its transport

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Thread churn against a fast receiver: 40 rounds of 128 new threads, 3 requests each, all through one
# client. libcurl's shared connection cache crashed this (SIGSEGV) in about one run out of three.
STRESS = """
import sys, threading
from syncworkers import HTTPClientConfig
from syncworkers.http.client import HTTPClient

url = sys.argv[1]
done = []
with HTTPClient(HTTPClientConfig(transport="curl", max_retries=0)) as client:
    def send():
        for _ in range(3):
            done.append(client.post(url, json={"n": 1}).status_code)
    for _ in range(40):
        threads = [threading.Thread(target=send) for _ in range(128)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
print(len(done), sorted(set(done)))
"""


def fast_receiver():
    """nginx when installed (it answers fast enough to overlap many transfers), else the Python one."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import receivers
    finally:
        sys.path.remove(os.path.join(ROOT, "scripts"))
    binary = receivers.find_nginx()
    return receivers.NginxReceiver(binary) if binary else receivers.PythonReceiver()


@pytest.mark.slow
def test_many_short_lived_threads_share_one_client_without_crashing():
    # The receiver lives here, so that a crash of the client's process leaves nothing running.
    with fast_receiver() as rx:
        out = subprocess.run([sys.executable, "-c", STRESS, rx.url + "/hook"], capture_output=True, text=True,
                             timeout=110, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.split() == ["15360", "[204]"]


@pytest.mark.parametrize("transport", ["requests", "curl"])
def test_a_connection_left_idle_by_one_thread_serves_the_next(server, transport):
    server.route("GET", "/x", status=200)
    with HTTPClient(HTTPClientConfig(transport=transport)) as client:
        for _ in range(3):  # each request from a thread that did not exist before
            t = threading.Thread(target=client.get, args=(server.url("/x"),))
            t.start()
            t.join()
    assert len(server.calls("/x")) == 3
    assert server.connections == 1


def test_close_waits_for_a_transfer_in_flight_then_closes_its_connection(server):
    release = threading.Event()
    server.route("GET", "/slow", handler=lambda req: (release.wait(10), Reply(200, b"late"))[1])
    server.route("GET", "/fast", status=200)
    client = HTTPClient(HTTPClientConfig(transport="curl"))
    answers = []
    t = threading.Thread(target=lambda: answers.append(client.get(server.url("/slow")).text))
    t.start()
    assert wait_for(lambda: server.calls("/slow"))
    client.get(server.url("/fast"))  # on a second handle and connection, idle from now on
    assert len(server._open_sockets) == 2
    client.close()
    # The idle connection closed at once; the busy one finishes its answer, then closes too.
    assert wait_for(lambda: len(server._open_sockets) == 1)
    release.set()
    t.join(10)
    assert answers == ["late"]
    assert wait_for(lambda: len(server._open_sockets) == 0)
