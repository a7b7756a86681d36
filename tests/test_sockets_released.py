"""close() releases every socket a worker opened, however many responses it kept."""

import os

from syncworkers import HTTPClientConfig, PollerWorker

from .helpers import wait_for


def open_sockets():
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def test_a_poller_closed_after_500_responses_leaves_no_socket_open(server):
    server.route("GET", "/x", status=404, json={"error": "no such thing"})
    before = open_sockets()
    poller = PollerWorker(url=server.url("/x"), interval=60, http_config=HTTPClientConfig(max_retries=0))
    outcomes = [poller.poll() for _ in range(500)]  # every outcome (and its messages) kept
    assert all(o.status_code == 404 for o in outcomes)
    assert open_sockets() > before  # the keep-alive connection is open while the poller lives
    poller.close()
    # The server's side closes when ours does: the process is back where it started.
    assert wait_for(lambda: open_sockets() <= before), (open_sockets(), before)
