"""The libcurl pass leaves out the tests marked transport_independent, and the mark cannot rot (tests/passes.py)."""

import os
import subprocess
import sys

from syncworkers import HTTPClientConfig, PollerWorker, WebhookSenderWorker
from syncworkers.config import settings
from syncworkers.http.client import HTTPClient

from .passes import default_transports_built

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_transport_built_from_the_default_is_seen_whoever_builds_it(server, monkeypatch):
    monkeypatch.setattr(settings, "DEFAULT_TRANSPORT", "requests")  # as in the requests pass
    with default_transports_built() as built:
        HTTPClient(HTTPClientConfig()).close()
        PollerWorker(server.url("/x"), interval=60).close()
        WebhookSenderWorker(server.base_url).close()
    assert len(built) == 3


def test_a_transport_named_explicitly_is_not(server, monkeypatch):
    monkeypatch.setattr(settings, "DEFAULT_TRANSPORT", "requests")
    monkeypatch.setenv("HTTP_TRANSPORT", "requests")
    with default_transports_built() as built:
        HTTPClient(HTTPClientConfig(transport="requests")).close()
        HTTPClient(HTTPClientConfig.from_env()).close()
        PollerWorker(server.url("/x"), interval=60, http_config=HTTPClientConfig(transport="requests")).close()
    assert built == []


def test_the_libcurl_pass_deselects_the_marked_tests_only():
    # test_signing.py is marked as a module; test_sources_redis.py too, but for the one test that takes it back.
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "--transport=curl", "tests/test_signing.py", "tests/test_sources_redis.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    collected = [line for line in out.stdout.splitlines() if "::" in line]
    assert collected == ["tests/test_sources_redis.py::test_run_once_of_a_relay_reports_an_unreachable_redis"]
    assert " deselected" in out.stdout
