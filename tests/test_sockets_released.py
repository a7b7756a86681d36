"""close() releases every socket a worker opened, however many responses it kept."""

import os

from syncworkers import HTTPClientConfig, PollerWorker

from .helpers import wait_for


def open_sockets(port):
    """This process's TCP sockets from or to 127.0.0.1:*port* (other tests' sockets may still be closing)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                ports = {int(address.rsplit(":", 1)[1], 16) for address in fields[1:3]}
                count += port in ports and fields[9] in inodes
    return count


def test_a_poller_closed_after_500_responses_leaves_no_socket_open(server):
    server.route("GET", "/x", status=404, json={"error": "no such thing"})
    before = open_sockets(server.port)  # the server's listening socket
    poller = PollerWorker(url=server.url("/x"), interval=60, http_config=HTTPClientConfig(max_retries=0))
    outcomes = [poller.poll() for _ in range(500)]  # every outcome (and its messages) kept
    assert all(o.status_code == 404 for o in outcomes)
    assert open_sockets(server.port) > before  # the keep-alive connection is open while the poller lives
    poller.close()
    # The server's side closes when ours does: the process is back where it started.
    assert wait_for(lambda: open_sockets(server.port) <= before), (open_sockets(server.port), before)
