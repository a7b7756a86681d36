"""Logs any formatter can read: the message alone says it all, and its values are attributes of the record.

Each test reads what a real formatter wrote: Python's ``basicConfig``, a ``%(delivery_id)s`` format,
python-json-logger, structlog's stdlib bridge, Django's ``LOGGING`` (and Django with none), gunicorn
with its own logger (plain, and with the README's ``logconfig_dict``) and Flask's recipe, against a
partner on 127.0.0.1 that fails. The README samples of "Logs and traces in web apps" run here.
"""

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from syncworkers import HTTPClientConfig, PollerWorker, WebhookConfig, WebhookSenderWorker

from .helpers import closed_port, wait_for
from .test_readme_samples import python_samples
from .test_tracing import client_spans

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SECTION = "Logs and traces in web apps"
TWO_ATTEMPTS = WebhookConfig(max_retries=1, retry_delay=0.01)


def sample(phrase):
    found = [s.code for s in python_samples() if s.heading == SECTION and phrase in s.code]
    assert len(found) == 1, f"one sample with {phrase!r} under {SECTION!r} expected, found {len(found)}"
    return found[0]


def test_each_sample_of_the_section_is_run_by_a_test_here():
    phrases = ['"loggers": {"syncworkers"', "logconfig_dict =", "wsgi_errors_stream", "start_as_current_span"]
    assert len([s for s in python_samples() if s.heading == SECTION]) == len(phrases)
    for phrase in phrases:
        sample(phrase)


def env(**extra):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCWORKERS_", "WEBHOOK_", "HTTP_"))}
    return {**base, "PYTHONPATH": ROOT, "PATH": f"{BIN}:{base.get('PATH', '/usr/bin:/bin')}", **extra}


def python(script, *args, **variables):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=120, env=env(**variables))
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def record_lines():
    """A handler on the ``syncworkers`` logger with the formatter a test gives; what it wrote."""
    logger = logging.getLogger("syncworkers")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    level = logger.level

    def use(formatter):
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return stream

    yield use
    logger.removeHandler(handler)
    logger.setLevel(level)


# -- stdlib ---------------------------------------------------------------------------------------------

BASIC_CONFIG = """
    import logging, sys
    logging.basicConfig(level="INFO")
    from syncworkers import WebhookConfig, WebhookSenderWorker

    base_url, outbox = sys.argv[1:3]
    sender = WebhookSenderWorker(base_url, WebhookConfig(outbox_url=outbox, retry_schedule=[30] * 7))
    delivery_id = sender.enqueue("/hooks/orders", {"order": 1})
    sender.outbox_producer.dispatcher.flush(30, sender.stop_event, due_only=True)  # what is due now: one attempt
    sender.close()
    print(delivery_id)
"""


def test_with_basic_config_a_failing_partner_says_which_delivery_where_why_and_what_next(server, tmp_path):
    server.route("POST", "/hooks/orders", status=503)
    done = python(BASIC_CONFIG, server.base_url, f"sqlite:///{tmp_path / 'o.db'}")
    delivery_id = done.stdout.strip()
    assert (f"WARNING:syncworkers.workers.webhook:webhook {delivery_id} to {server.url('/hooks/orders')} failed: "
            "status 503 Service Unavailable; retry in 30s (attempt 2 of 8)") in done.stderr.splitlines()


def test_a_percent_format_reads_the_fields_and_secrets_are_masked_in_them(server, record_lines):
    server.route("POST", "/hooks/T0AB12CDE/aB3dE5fG7hJ9kL1mN3pQ5rS7", status=410)
    stream = record_lines(logging.Formatter("%(levelname)s id=%(delivery_id)s status=%(status_code)s url=%(url)s "
                                            "attempts=%(attempts)s | %(message)s"))
    with WebhookSenderWorker(server.base_url, TWO_ATTEMPTS) as worker:
        result = worker.deliver("/hooks/T0AB12CDE/aB3dE5fG7hJ9kL1mN3pQ5rS7?token=tok-123456", {"a": 1})
    masked = server.url("/hooks/T0AB12CDE/***") + "?***"
    assert stream.getvalue().splitlines() == [
        f"ERROR id={result.delivery_id} status=410 url={masked} attempts=1 | webhook {result.delivery_id} to "
        f"{masked} not delivered: status 410 Gone; given up after 1 attempt"]


def test_python_json_logger_writes_the_fields_as_keys_without_the_redactor_or_a_copy(server, record_lines):
    jsonlogger = pytest.importorskip("pythonjsonlogger.json")
    server.route("GET", "/items", status=[503, 503])
    stream = record_lines(jsonlogger.JsonFormatter())
    poller = PollerWorker(server.url("/items"), interval=60, name="items",
                          headers={"Authorization": "Bearer sekrit-bearer-token"},
                          http_config=HTTPClientConfig(max_retries=1, retry_delay=0.01))
    try:
        poller.poll()
        refused = PollerWorker(f"http://127.0.0.1:{closed_port()}/x", interval=60, name="down",
                               http_config=HTTPClientConfig(max_retries=0))
        refused.poll()
        refused.close()
    finally:
        poller.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    retry = next(line for line in lines if "retry in" in line["message"])
    assert retry == {"message": f"GET {server.url('/items')} failed: status 503 Service Unavailable; retry in 0.01s "
                                "(attempt 2 of 2)", "worker": "items", "method": "GET", "url": server.url("/items"),
                     "error": "status 503 Service Unavailable", "retry_in": 0.01, "next_attempt": 2,
                     "max_attempts": 2}
    failed = next(line for line in lines if line["message"].startswith("poll failed"))
    assert failed["worker"] == "down" and failed["error"] == "TransportError" and "connection failed" in failed["reason"]
    assert "sekrit-bearer-token" not in stream.getvalue()


def test_structlogs_stdlib_bridge_adds_the_fields_to_its_event(server, record_lines):
    structlog = pytest.importorskip("structlog")
    server.route("POST", "/hooks/orders", status=400)
    stream = record_lines(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()],
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.ExtraAdder()]))
    with WebhookSenderWorker(server.base_url, TWO_ATTEMPTS) as worker:
        result = worker.deliver("/hooks/orders", {"a": 1})
    (event,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert event["event"].startswith(f"webhook {result.delivery_id} to {server.url('/hooks/orders')} not delivered")
    assert (event["level"], event["delivery_id"], event["status_code"], event["endpoint"]) == (
        "error", result.delivery_id, 400, "/hooks/orders")


# -- Django ---------------------------------------------------------------------------------------------

DJANGO = """
    import sys
    import django
    from django.conf import settings

    recipe, base_url = sys.argv[1:3]
    options = {"INSTALLED_APPS": []}
    if recipe:
        namespace = {}
        exec(recipe, namespace)                  # the README's settings.py lines
        options["LOGGING"] = namespace["LOGGING"]
    settings.configure(**options)
    django.setup()
    from syncworkers import WebhookConfig, WebhookSenderWorker

    with WebhookSenderWorker(base_url, WebhookConfig(max_retries=1, retry_delay=0.01)) as sender:
        result = sender.deliver("/hooks/orders", {"order": 1})
    print(result.delivery_id)
"""


@pytest.mark.parametrize("logging_setting", ["readme", "none"])
def test_django_logging_shows_each_line_whole(server, logging_setting):
    server.route("POST", "/hooks/orders", status=503)
    recipe = sample('"loggers": {"syncworkers"') if logging_setting == "readme" else ""
    done = python(DJANGO, recipe, server.base_url)
    delivery_id, url = done.stdout.strip(), server.url("/hooks/orders")
    lines = done.stderr.splitlines()
    given_up = (f"webhook {delivery_id} to {url} not delivered: status 503 Service Unavailable; "
                "given up after 2 attempts")
    if logging_setting == "none":  # Django's own LOGGING: WARNING and above still reach stderr
        assert lines == [given_up]
        return
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(stamp + re.escape(
        f" INFO syncworkers.workers.webhook: webhook {delivery_id} to {url} failed: status 503 Service Unavailable; "
        "retry in 0.01s (attempt 2 of 2)"), lines[0]), lines
    assert re.fullmatch(stamp + re.escape(f" ERROR syncworkers.workers.webhook: {given_up}"), lines[1]), lines
    assert len(lines) == 2


# -- gunicorn and Flask ------------------------------------------------------------------------------------

APP = """
import os

from flask import Flask
from syncworkers import WebhookConfig, WebhookSenderWorker

app = Flask(__name__)


@app.post("/orders/<int:n>")
def order(n):
    with WebhookSenderWorker(os.environ["PARTNER_URL"], WebhookConfig(max_retries=1, retry_delay=0.01)) as sender:
        result = sender.deliver("/hooks/orders", {"order": n})
    return {"id": result.delivery_id, "ok": result.ok}
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(port, path):
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST"),
                                    timeout=10) as answer:
            return json.loads(answer.read())
    except OSError:
        return None  # not up yet


@pytest.mark.parametrize("config", ["plain", "readme"])
def test_gunicorn_writes_the_lines_to_its_stderr(server, tmp_path, config):
    server.route("POST", "/hooks/orders", status=503)
    (tmp_path / "app.py").write_text(APP)
    if config == "readme":  # gunicorn reads ./gunicorn.conf.py by itself
        (tmp_path / "gunicorn.conf.py").write_text(sample("logconfig_dict ="))
    port = free_port()
    args = [os.path.join(BIN, "gunicorn"), "--workers", "1", "--bind", f"127.0.0.1:{port}", "app:app"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env(PARTNER_URL=server.base_url),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        answered = []
        assert wait_for(lambda: answered.append(post(port, "/orders/1")) or answered[-1] is not None, 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    delivery_id, url = answered[-1]["id"], server.url("/hooks/orders")
    given_up = (f"webhook {delivery_id} to {url} not delivered: status 503 Service Unavailable; "
                "given up after 2 attempts")
    if config == "plain":  # gunicorn's logger alone: Python's last resort prints the WARNING and above
        assert given_up in err.splitlines()
        return
    generic = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] "  # gunicorn's own format
    assert re.search(generic + re.escape(f"[INFO] webhook {delivery_id} to {url} failed: status 503 Service "
                                         "Unavailable; retry in 0.01s (attempt 2 of 2)"), err), err
    assert re.search(generic + re.escape(f"[ERROR] {given_up}"), err), err
    assert len(re.findall(r"\[INFO\] Booting worker", err)) == 1  # gunicorn's own lines once, as before


FLASK = """
    import sys
    exec(sys.argv[1])                            # the README's recipe, before the app is made
    from flask import Flask
    from syncworkers import WebhookConfig, WebhookSenderWorker

    app = Flask(__name__)

    @app.post("/orders")
    def order():
        with WebhookSenderWorker(sys.argv[2], WebhookConfig(max_retries=0)) as sender:
            return {"id": sender.deliver("/hooks/orders", {}).delivery_id}

    print(app.test_client().post("/orders").json["id"])
"""


def test_the_flask_recipe_sends_the_lines_where_flasks_own_go(server):
    server.route("POST", "/hooks/orders", status=422)
    done = python(FLASK, sample("wsgi_errors_stream"), server.base_url)
    delivery_id = done.stdout.strip()
    assert re.search(r"^\[[^\]]+\] ERROR in syncworkers\.workers\.webhook: " + re.escape(
        f"webhook {delivery_id} to {server.url('/hooks/orders')} not delivered: status 422 Unprocessable Entity; "
        "given up after 1 attempt") + "$", done.stderr, re.M), done.stderr


# -- the traces sample ------------------------------------------------------------------------------------

TRACES = """
    import json, sys
    code, base_url, outbox = sys.argv[1:4]
    namespace = {}
    exec(code.replace("https://partner.example", base_url).replace("sqlite:///outbox.db", outbox), namespace)
    (delivery,) = namespace["sender"].outbox.list()
    namespace["sender"].close()
    namespace["provider"].shutdown()             # the console exporter prints the span
    print(json.dumps(delivery.trace_context))
"""


def test_the_traces_sample_enqueues_in_its_span_and_a_worker_delivers_in_that_trace(server, tmp_path, spans):
    server.route("POST", "/hooks/orders", status=200)
    outbox = f"sqlite:///{tmp_path / 'outbox.db'}"
    done = python(TRACES, sample("start_as_current_span"), server.base_url, outbox)
    *span_lines, last = done.stdout.strip().splitlines()
    stored, printed = json.loads(last), json.loads("\n".join(span_lines))
    assert printed["name"] == "POST /orders"
    _, trace_id, span_id, _ = stored["traceparent"].split("-")
    assert printed["context"]["trace_id"] == "0x" + trace_id and printed["context"]["span_id"] == "0x" + span_id

    with WebhookSenderWorker(server.base_url, WebhookConfig(outbox_url=outbox)) as worker:
        assert worker.flush(timeout=30)
    (attempt,) = client_spans(spans)
    assert (f"{attempt.context.trace_id:032x}", f"{attempt.parent.span_id:016x}") == (trace_id, span_id)
