import os
import threading
import time

import pytest

from syncworkers.testing import captured_webhooks  # noqa: F401  (the fixture, as a project's conftest takes it)

from .passes import default_transports_built, runs_once
from .server import LoopbackServer


def pytest_addoption(parser):
    parser.addoption("--transport", choices=("requests", "curl"), default=None,
                     help="the HTTP transport every HTTPClientConfig of the tests defaults to "
                          "(also SYNCWORKERS_TEST_TRANSPORT; default: requests)")


def pytest_configure(config):
    """Run the whole suite over one transport: it becomes the default of every HTTPClientConfig."""
    from syncworkers.config import settings as config_module

    transport = config.getoption("--transport") or os.environ.get("SYNCWORKERS_TEST_TRANSPORT") or "requests"
    config_module.DEFAULT_TRANSPORT = transport


def pytest_report_header(config):
    from syncworkers.config import settings as config_module

    return f"syncworkers transport: {config_module.DEFAULT_TRANSPORT}"


def pytest_collection_modifyitems(config, items):
    """Over another transport than requests, deselect the tests that do not depend on it (tests/passes.py)."""
    from syncworkers.config import settings as config_module

    if config_module.DEFAULT_TRANSPORT == "requests":
        return
    once = [item for item in items if runs_once(item)]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if not runs_once(item)]


@pytest.fixture(autouse=True)
def transport_independence_is_checked(request):
    """A test marked transport_independent fails if it builds a transport from the default one.

    It would be left out of the libcurl pass while depending on the transport.
    """
    if not runs_once(request.node):
        yield
        return
    with default_transports_built() as built:
        yield
    if built:
        pytest.fail(f"{request.node.nodeid} is marked transport_independent but built {len(built)} HTTP "
                    "transport(s) from the default transport: name the transport in its HTTPClientConfig, "
                    "or mark the test transport_dependent", pytrace=False)


ENV_PREFIXES = ("HTTP_", "POLLER_", "WEBHOOK_", "SYNCWORKERS_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Tests start with none of the toolkit's variables set, whatever the shell has."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True, scope="session")
def short_watchdog_linger():
    """The deadline watchdog's thread ends soon after the last request, within each test."""
    from syncworkers.http.transport.deadline import WATCHDOG

    saved, WATCHDOG.linger = WATCHDOG.linger, 0.02
    yield
    WATCHDOG.linger = saved


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


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """The process-wide rate-limit budgets start empty: a port reused by another test's server is a new host."""
    from syncworkers.polling.ratelimit import shared_rate_limits

    shared_rate_limits.reset()
    yield
    shared_rate_limits.reset()


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def server2():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A self-signed server certificate for 127.0.0.1 and a self-signed client certificate."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("tls")

    def make(name, subject, san=None):
        cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
               "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"), "-subj", subject]
        if san:
            cmd += ["-addext", san]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    make("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    make("client", "/CN=syncworkers-test-client")
    return d


@pytest.fixture
def tls_server(tls_files):
    """An HTTPS loopback server that asks for (but does not require) a client certificate."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_files / "server.pem", tls_files / "server.key")
    ctx.load_verify_locations(tls_files / "client.pem")
    ctx.verify_mode = ssl.CERT_OPTIONAL
    with LoopbackServer(tls=ctx) as srv:
        yield srv


@pytest.fixture(autouse=True)
def restore_logging():
    """configure_logging() (the CLI calls it) changes process-wide state: undo it after each test."""
    import logging

    logger = logging.getLogger("syncworkers")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    yield
    for handler in logger.handlers:
        if handler not in saved[1]:
            handler.close()
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]


@pytest.fixture
def spans(monkeypatch):
    """The spans syncworkers finishes (an InMemorySpanExporter of the OpenTelemetry SDK), and ``.app``: a
    tracer for the application's own spans. syncworkers' tracer is pointed at a provider of the test's own."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from syncworkers.observability import tracing

    assert tracing.enable()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing._otel, "tracer", provider.get_tracer("syncworkers"))
    exporter.app = provider.get_tracer("app")
    yield exporter
    provider.shutdown()


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL cluster on 127.0.0.1 for the whole session (see tests/pg_server.py)."""
    from .pg_server import PostgresServer

    with PostgresServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def pg_url(pg_server):
    """URL of the session's PostgreSQL database: postgresql://postgres@127.0.0.1:PORT/DB."""
    return pg_server.url


@pytest.fixture
def pg_db(pg_server):
    """URL of a fresh, empty PostgreSQL namespace for this test alone (a schema as search_path)."""
    return pg_server.create_schema()


@pytest.fixture
def clock():
    """A settable clock for the outbox stores (starts at epoch second 1,000,000)."""
    from .helpers import Clock

    return Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """Where an outbox lives, for each store: a SQLite file, or a fresh PostgreSQL namespace."""
    if request.param == "sqlite":
        return str(tmp_path / "outbox.db")
    return request.getfixturevalue("pg_db")


DJANGO_SETTINGS = "tests.apps.djangoproject.settings"


@pytest.fixture(scope="session")
def django_db(tmp_path_factory):
    """Django set up once per test process (tests/apps/djangoproject) on a fresh SQLite file, migrated
    (the outbox tables included)."""
    db = str(tmp_path_factory.mktemp("django") / "app.sqlite3")
    os.environ["DJANGO_DB"] = db
    os.environ["DJANGO_SETTINGS_MODULE"] = DJANGO_SETTINGS
    import django
    from django.conf import settings

    if settings.configured:
        settings.DATABASES["default"]["NAME"] = db
    django.setup()
    from django.core.management import call_command
    from django.db import connections
    from django.test.utils import setup_test_environment, teardown_test_environment

    setup_test_environment()  # as Django's test runner does: the test client records templates' contexts
    connections["default"].close()
    connections["default"].settings_dict["NAME"] = db
    call_command("migrate", verbosity=0)
    yield db
    from syncworkers.contrib.django import app_workers

    app_workers().stop(timeout=10)
    connections.close_all()
    teardown_test_environment()


@pytest.fixture
def hooks(django_db, server):
    """SYNCWORKERS pointing its BASE_URL at the loopback server, the outbox in the app's database, emptied."""
    from django.db import connection
    from django.test import override_settings

    from syncworkers.contrib.django import app_workers

    from .apps.djangoproject.models import Order

    server.route("POST", "/hooks/orders", status=200)
    Order.objects.all().delete()
    with connection.cursor() as cursor:
        for table in ("syncworkers_outbox", "syncworkers_outbox_attempts", "syncworkers_outbox_endpoints"):
            cursor.execute(f"DELETE FROM {table}")
    with override_settings(SYNCWORKERS={"OUTBOX": "default", "BASE_URL": server.base_url}):
        yield server
        app_workers().stop(timeout=10)
