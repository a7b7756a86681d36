import threading
import time

import pytest

from .server import LoopbackServer

ENV_PREFIXES = ("HTTP_", "POLLER_", "WEBHOOK_", "SYNCWORKERS_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Tests start with none of the toolkit's variables set, whatever the shell has."""
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Every thread the toolkit starts during a test is stopped by the end of it."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        leaked = [t for t in threading.enumerate()
                  if t not in before and t.is_alive() and t.name.startswith("syncworkers")]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def server2():
    with LoopbackServer() as srv:
        yield srv
