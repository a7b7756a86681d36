"""What users import: ``import *`` without optional extras, typed configs under mypy --strict,
and urllib3's DEBUG lines that never show our URLs."""

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import syncworkers
from syncworkers import HTTPClient, HTTPClientConfig

from .helpers import need_module

pytestmark = pytest.mark.transport_independent

ROOT = Path(__file__).resolve().parent.parent

WITHOUT_REDIS = textwrap.dedent("""
    import sys
    # As if no optional extra were installed: importing any of these fails.
    for name in ("redis", "psycopg", "psycopg_pool", "prometheus_client", "pycurl", "flask", "django"):
        sys.modules[name] = None
    from syncworkers import *
    from syncworkers.sources import *
    assert PollerWorker and WebhookSenderWorker and MemoryQueue and HTTPClientConfig
    try:
        from syncworkers import RedisListConsumer
    except ImportError as exc:
        print("ImportError:", exc)
""")


def test_star_import_works_without_optional_extras():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", WITHOUT_REDIS], env=env, capture_output=True, text=True,
                          timeout=60)

    assert done.returncode == 0, done.stderr
    assert "ImportError: RedisListConsumer needs the redis package: pip install 'syncworkers[redis]'" in done.stdout


def test_redis_consumer_is_still_importable_by_name():
    from syncworkers import RedisListConsumer
    from syncworkers.sources.redis import RedisListConsumer as same

    assert RedisListConsumer is same and "RedisListConsumer" in dir(syncworkers)


def test_internals_stay_in_their_modules():
    from syncworkers.http.breaker import BreakerRegistry, HostBreaker  # noqa: F401
    from syncworkers.observability.logging import get_logger  # noqa: F401
    from syncworkers.outbox import Delivery  # noqa: F401

    for name in ("BreakerRegistry", "HostBreaker", "Delivery", "get_logger", "RedisListConsumer"):
        assert name not in syncworkers.__all__
    for name in syncworkers.__all__:
        assert getattr(syncworkers, name) is not None


# -- urllib3 logs ------------------------------------------------------------------------------

SLACK_TOKEN = "aB3dE5fG7hJ9kL1mN3pQ5rS7"


def test_urllib3_debug_lines_never_show_our_urls(server, caplog):
    server.route("GET", f"/services/T0AB12CDE/{SLACK_TOKEN}", status=200, body=b"ok")
    caplog.set_level(logging.DEBUG)  # the root logger, as an application turning DEBUG on would
    # urllib3 logs only under the requests transport (libcurl logs nothing through Python).
    with HTTPClient(HTTPClientConfig(max_retries=0, transport="requests")) as client:
        client.get(server.url(f"/services/T0AB12CDE/{SLACK_TOKEN}?access=q-s3cr3t-v4lue&page=2"))

    lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    request_lines = [line for line in lines if '"GET ' in line]
    assert request_lines, lines  # urllib3 did log the request ...
    assert "/services/T0AB12CDE/***?***" in request_lines[0]  # ... with its URL masked
    for text in lines + [caplog.text]:
        assert SLACK_TOKEN not in text and "q-s3cr3t-v4lue" not in text


def test_urllib3_redaction_is_installed_once():
    syncworkers.observability.logging.install_urllib3_redaction()
    syncworkers.observability.logging.install_urllib3_redaction()

    for name in syncworkers.observability.logging.URLLIB3_LOGGERS:
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, syncworkers.observability.logging.URLRedactingFilter) for f in filters) == 1


# -- typing ------------------------------------------------------------------------------------

USER_CODE = '''
from typing import Any, Dict, Optional

from syncworkers import (
    CircuitBreakerConfig, ConfigError, HTTPClientConfig, Message, PollerConfig, PollerWorker, RetryConfig,
    RetryStrategy, Runner, WebhookConfig, WebhookSenderWorker,
)

http = HTTPClientConfig(max_retries=3, default_headers={"X-App": "demo"}, secret_headers=("X-App",))
retries: int = http.max_retries
timeout: Optional[float] = http.timeout
retry = RetryConfig(strategy=RetryStrategy.LINEAR, max_attempts=4, initial_delay=0.5)
breaker = CircuitBreakerConfig(failure_threshold=3, timeout_seconds=30.0)
from_env: HTTPClientConfig = HTTPClientConfig.from_env(max_retries=1)
poller_env: PollerConfig = PollerConfig.from_env()
webhook_env: WebhookConfig = WebhookConfig.from_env(max_retries=2)
retry_env: RetryConfig = RetryConfig.from_env()
layered: HTTPClientConfig = HTTPClientConfig.resolve(http, env=False)


class Orders(PollerWorker):
    def process_message(self, message: Message) -> Any:
        status: Any = message.headers["status_code"]
        return message.body


def build() -> Runner:
    poller = Orders(url="http://127.0.0.1:9/orders", interval=30.0, http_config=http,
                    poller_config=PollerConfig(jitter=1.0))
    sender = WebhookSenderWorker(base_url="http://127.0.0.1:9",
                                 webhook_config=WebhookConfig(max_retries=2, endpoints={"a": "/a"}))
    sent: bool = sender.send_webhook("/hooks", {"id": 1})
    results: Dict[str, bool] = sender.broadcast_webhook(["/a", "/b"], {"id": 1})
    try:
        HTTPClientConfig(max_connections=0)
    except ConfigError as exc:
        errors: Dict[str, str] = exc.errors
    return Runner([poller, sender], max_workers=4)
'''

MISTAKES = '''
from syncworkers import HTTPClientConfig, WebhookConfig

HTTPClientConfig(max_retrys=3)
WebhookConfig(max_retries="3")
'''


@pytest.mark.slow
def test_user_code_type_checks_under_mypy_strict(tmp_path):
    need_module("mypy", "mypy")
    (tmp_path / "user_code.py").write_text(USER_CODE)
    (tmp_path / "mistakes.py").write_text(MISTAKES)
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    # follow-imports=silent: judge the user's files the way they see an installed package.
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-error-summary",
         "--cache-dir", str(ROOT / ".mypy_cache"), "user_code.py", "mistakes.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert [e for e in errors if e.startswith("user_code.py")] == [], done.stdout + done.stderr
    # The fields are really seen: a misspelt option and a wrong type are caught.
    assert any(e.startswith("mistakes.py:4:") and "max_retrys" in e for e in errors), done.stdout
    assert any(e.startswith("mistakes.py:5:") and "incompatible type \"str\"" in e for e in errors), done.stdout
