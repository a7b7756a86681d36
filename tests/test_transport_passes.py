"""The libcurl pass leaves out the tests marked transport_independent, and the mark cannot rot (tests/passes.py)."""

import os
import subprocess
import sys

import pytest

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


MARKED = """
import pytest

pytestmark = pytest.mark.transport_independent


def test_runs_once():
    pass


@pytest.mark.transport_dependent
def test_taken_back():
    pass
"""


@pytest.mark.transport_independent
def test_the_libcurl_pass_deselects_the_marked_tests_only(tmp_path):
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F401,F403\n")
    (tmp_path / "test_marked.py").write_text(MARKED)
    (tmp_path / "test_plain.py").write_text("def test_runs_in_both():\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    transport_independent\n    transport_dependent\n")

    def collected(*args):
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": ROOT})
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        return [line for line in out.stdout.splitlines() if "::" in line]

    assert collected() == ["test_marked.py::test_runs_once", "test_marked.py::test_taken_back",
                           "test_plain.py::test_runs_in_both"]
    assert collected("--transport=curl") == ["test_marked.py::test_taken_back", "test_plain.py::test_runs_in_both"]
